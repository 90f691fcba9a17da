"""``console.sh plan``: what a job would do, found by doing all of it but the copy.

The plan lists the source as the job's scan lists it (the same scan units, ``importSince``, the
same cut into tasks: ``scanner.cut_tasks``), and with ``isSkipExistFile=true`` asks the
destination which objects it already holds, with the same rule the transfer applies
(``transfer.same_object``). It keeps counts and a size histogram, never the listing: memory is
one task's worth of entries per scan thread, as in the scan itself, plus one destination
listing page per thread.

Existing objects are found from the destination's listing, merged with the source's in key
order (one LIST per 1,000 objects, jumping over keys the source does not have), or with a HEAD
per object where the destination cannot list (a local folder). A source listed out of order (a
list file) costs more LISTs, never a wrong answer.

The requests and the time are estimates from the same counts: one PUT per small file, a
multipart upload per large one (initiate, parts, complete), the audit's LISTs or HEADs; the time
at the throughput caps, and at the rate the job reached when it ran before (its report).
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Iterator, Optional

from .audit import LIST_PAGE
from .models import NOT_REGULAR_FILE, INVALID_KEY, ObjectEntry, failure_code
from .filters import BY_PATTERN, BY_SIZE
from .scanner import BY_SINCE, SplitLimits, cut_tasks, plan_units
from .status import human_bytes, human_duration
from .storage.base import Destination, Source
from .transfer import part_size_for, same_object

KIB, MIB = 1024, 1024 * 1024
# The histogram's buckets: (upper bound, exclusive, or None for the last; label).
SIZE_BUCKETS = ((64 * KIB, "<64 KiB"), (MIB, "<1 MiB"), (100 * MIB, "<100 MiB"), (None, ">=100 MiB"))
HEAD_THREADS = 16
# Sources whose listing is a request to a store, LIST_PAGE keys a page (a local folder, a list
# file or a URL list is read, not requested).
LISTED_BY_REQUESTS = ("oss", "s3", "qiniu", "bos", "ks3", "cos", "azure", "youpai")


@dataclass
class Bucket:
    label: str
    objects: int = 0
    bytes: int = 0


@dataclass
class Tally:
    """One scan unit's counts (and, merged, the job's)."""

    listed: int = 0  # entries the listing gave
    listed_bytes: int = 0
    left_out: dict = field(default_factory=dict)  # why (importSince, pattern, size) -> entries the job does not take
    objects: int = 0  # in the job's tasks: what 'stat' will count
    bytes: int = 0
    tasks: int = 0
    not_files: int = 0  # FIFOs, sockets, unfollowed symlinks: skipped-not-a-file
    failing: dict = field(default_factory=dict)  # reason code -> objects that cannot be copied as listed
    existing: int = 0  # at the destination already (isSkipExistFile): skipped-existing
    existing_bytes: int = 0
    size_unknown: int = 0  # an http list: sizes learned when copied
    to_copy: int = 0
    to_copy_bytes: int = 0
    histogram: list = field(default_factory=lambda: [Bucket(label) for _, label in SIZE_BUCKETS])
    small_files: int = 0  # one PUT each
    multipart_files: int = 0
    parts: int = 0
    audit_lists: int = 0
    # Requests the plan itself made to find existing objects.
    lookup_lists: int = 0
    lookup_heads: int = 0
    source_lists: int = 0  # estimated: one per LIST_PAGE entries of a unit listed from a store

    def add(self, other: "Tally") -> None:
        for name in self.__dataclass_fields__:
            mine, theirs = getattr(self, name), getattr(other, name)
            if name == "histogram":
                for a, b in zip(mine, theirs):
                    a.objects += b.objects
                    a.bytes += b.bytes
            elif name in ("failing", "left_out"):
                for code, n in theirs.items():
                    mine[code] = mine.get(code, 0) + n
            else:
                setattr(self, name, mine + theirs)

    def count_size(self, size: int) -> None:
        for (bound, _), bucket in zip(SIZE_BUCKETS, self.histogram):
            if bound is None or size < bound:
                bucket.objects += 1
                bucket.bytes += size
                return


@dataclass(frozen=True)
class PlanSettings:
    """What of the job and the machine the plan needs."""

    limits: SplitLimits
    scan_threads: int = 1
    scan_depth: int = 1
    skip_existing: bool = False
    audit_job: bool = False
    audit_after_import: bool = True
    audit_mode: str = "general"
    multipart_threshold: int = 150 * MIB
    part_size: int = 50 * MIB
    listed_by_requests: bool = False


class ExistingObjects:
    """The destination's objects under one prefix, looked up key by key.

    A page of the listing covers the keys after ``after`` up to ``last`` (to the end when there
    is no more): a key in that range is there or not by the page alone. A key past it lists
    from just before the key, so the keys in between (another folder's, say) are never listed."""

    def __init__(self, destination: Destination, prefix: str, tally: Tally, page: int = LIST_PAGE):
        self.destination, self.prefix, self.tally, self.page = destination, prefix, tally, page
        self.after: Optional[str] = None
        self.last = ""
        self.more = True
        self.objects: dict = {}

    def find(self, key: str) -> Optional[ObjectEntry]:
        while not self._covers(key):
            if self.after is None or key <= self.after:  # the first key, or the source went back
                after = key[:-1]
            else:
                after = max(self.last, key[:-1])
            entries, more = self.destination.list_page(self.prefix, after, self.page)
            self.tally.lookup_lists += 1
            self.after, self.objects = after, {e.key: e for e in entries}
            self.last = entries[-1].key if entries else after
            # An empty page that says there is more: a server ignoring start-after.
            self.more = bool(more and entries)
        return self.objects.get(key)

    def _covers(self, key: str) -> bool:
        return self.after is not None and self.after < key and (key <= self.last or not self.more)


class Planner:
    """Counts what one job would do. ``run`` lists the whole source; ``tally`` is the result."""

    def __init__(self, source: Source, destination: Destination, settings: PlanSettings):
        self.source, self.destination, self.settings = source, destination, settings
        self.tally = Tally()
        self._lock = threading.Lock()
        self.units = 0

    def run(self) -> Tally:
        s = self.settings
        units = plan_units(self.source, s.scan_threads, s.scan_depth)
        self.units = len(units)
        if len(units) == 1 or s.scan_threads <= 1:
            for unit in units:
                self._merge(self.count_unit(unit.subtree, unit.recursive))
        else:
            with ThreadPoolExecutor(s.scan_threads, thread_name_prefix="plan") as pool:
                for done in [pool.submit(self.count_unit, u.subtree, u.recursive) for u in units]:
                    self._merge(done.result())
        return self.tally

    def _merge(self, tally: Tally) -> None:
        with self._lock:
            self.tally.add(tally)

    def count_unit(self, subtree: str, recursive: bool) -> Tally:
        s, tally = self.settings, Tally()
        lookup = None
        if s.skip_existing and not s.audit_job and self.destination.features.lists_objects:
            lookup = ExistingObjects(self.destination, subtree, tally)
        def left_out(entry: ObjectEntry, why: str) -> None:
            tally.left_out[why] = tally.left_out.get(why, 0) + 1

        for batch in cut_tasks(self._listed(subtree, recursive, tally), s.limits, self.source.task_boundary,
                               left_out):
            tally.tasks += 1
            copies = 0
            existing = self._existing(batch, lookup, tally) if s.skip_existing and not s.audit_job else {}
            for entry in batch:
                tally.objects += 1
                tally.bytes += entry.size
                if entry.refused:
                    if entry.refused.startswith(NOT_REGULAR_FILE):
                        tally.not_files += 1
                    else:
                        code = failure_code(entry.refused)
                        tally.failing[code] = tally.failing.get(code, 0) + 1
                    continue
                if not _valid_key(entry.key):
                    tally.failing[INVALID_KEY] = tally.failing.get(INVALID_KEY, 0) + 1
                    continue
                if entry.key in existing:
                    tally.existing += 1
                    tally.existing_bytes += entry.size
                    continue
                copies += 1
                self._count_copy(entry, tally)
            if copies and (s.audit_job or s.audit_after_import):
                tally.audit_lists += -(-copies // LIST_PAGE)
        if s.listed_by_requests:
            tally.source_lists += max(1, -(-tally.listed // LIST_PAGE))
        return tally

    def _listed(self, subtree: str, recursive: bool, tally: Tally) -> Iterator[ObjectEntry]:
        for entry in self.source.list(subtree, recursive=recursive):
            tally.listed += 1
            tally.listed_bytes += entry.size
            yield entry

    def _count_copy(self, entry: ObjectEntry, tally: Tally) -> None:
        s = self.settings
        tally.to_copy += 1
        tally.to_copy_bytes += entry.size
        if not self.source.features.sizes_known and not entry.size:
            tally.size_unknown += 1
            tally.small_files += 1  # counted as one PUT: the size decides only when it is known
            return
        tally.count_size(entry.size)
        if s.audit_job:
            return
        if entry.size < s.multipart_threshold:
            tally.small_files += 1
        else:
            tally.multipart_files += 1
            part = part_size_for(entry.size, s.part_size, self.destination.features.min_part_size)
            tally.parts += -(-entry.size // part)

    def _existing(self, batch: list, lookup: Optional[ExistingObjects], tally: Tally) -> set:
        """Keys of ``batch`` the destination holds as the transfer would skip them."""
        wanted = [e for e in batch if not e.refused and _valid_key(e.key)
                  and (self.source.features.sizes_known or e.size)]
        if lookup is not None:
            found = set()
            for entry in wanted:
                there = lookup.find(entry.key)
                if there is not None and there.size == entry.size and entry.crc64 is not None \
                        and there.crc64 is None:
                    there = self.destination.head(entry.key)  # a listing has no CRC64; the HEAD has
                    tally.lookup_heads += 1
                if there is not None and same_object(entry, there):
                    found.add(entry.key)
            return found
        with ThreadPoolExecutor(HEAD_THREADS, thread_name_prefix="plan-head") as pool:
            heads = list(pool.map(lambda e: (e, self.destination.head(e.key)), wanted))
        tally.lookup_heads += len(wanted)
        return {e.key for e, there in heads if there is not None and same_object(e, there)}


def _valid_key(key: str) -> bool:
    try:
        key.encode("utf-8")
        return True
    except UnicodeEncodeError:  # a file name that is not UTF-8: the transfer fails it (INVALID_KEY)
        return False


# -- the requests and the time ------------------------------------------------------------------
@dataclass
class Requests:
    puts: int = 0  # single PUTs of small files
    multipart_uploads: int = 0
    parts: int = 0
    multipart_requests: int = 0  # initiate + parts + complete
    skip_heads: int = 0  # a HEAD per object with isSkipExistFile
    audit_lists: int = 0
    audit_heads: int = 0
    audit_source_reads: int = 0  # detailed audits read every object back from the source
    source_lists: int = 0  # estimated
    total: int = 0


def requests_of(tally: Tally, settings: PlanSettings, listing_audit: bool) -> Requests:
    """``listing_audit``: the audit reads the destination's listing (``ListingAudit.applies``)."""
    r = Requests()
    audited = settings.audit_job or settings.audit_after_import
    if not settings.audit_job:
        r.puts = tally.small_files
        r.multipart_uploads = tally.multipart_files
        r.parts = tally.parts
        r.multipart_requests = tally.parts + 2 * tally.multipart_files
        if settings.skip_existing:
            # Every file the worker may copy is looked up first, skipped or not.
            r.skip_heads = tally.to_copy + tally.existing
    if audited:
        if listing_audit:
            r.audit_lists = tally.audit_lists
        else:
            r.audit_heads = tally.to_copy
        if settings.audit_mode == "detailed":
            r.audit_source_reads = tally.to_copy
    r.source_lists = tally.source_lists
    r.total = (r.puts + r.multipart_requests + r.skip_heads + r.audit_lists + r.audit_heads
               + r.audit_source_reads + r.source_lists)
    return r


@dataclass
class Rate:
    """The rate the job reached in a run before, from its report."""

    bytes_per_s: float
    objects_per_s: float
    written_at: str


def reached_rate(summary: dict) -> Optional[Rate]:
    """The job's average rate, from its report's summary.json; None when it copied nothing."""
    duration = summary.get("duration_s") or 0
    copied = summary.get("by_outcome", {}).get("copied", {}).get("objects", 0)
    if duration <= 0 or not copied:
        return None
    return Rate(summary.get("copied_bytes", 0) / duration, copied / duration, summary.get("written_at", ""))


def seconds_at(rate: Rate, objects: int, size: int) -> float:
    """The time of ``objects`` files of ``size`` bytes in all at ``rate``: whichever of bytes
    and files per second takes longer (small files go by files, large ones by bytes)."""
    by_bytes = size / rate.bytes_per_s if rate.bytes_per_s > 0 else 0.0
    return max(by_bytes, objects / rate.objects_per_s)


@dataclass(frozen=True)
class Caps:
    """The tightest caps on the job: bytes/s and files started per second (0: none), and the
    keys that set them, as the text names them."""

    bytes_per_s: int = 0
    bytes_words: str = ""
    files_per_s: int = 0
    files_words: str = ""

    def seconds(self, objects: int, size: int, audit: bool) -> tuple:
        """(seconds, 'throughput' or 'request') at the cap that binds; (None, '') with none.
        An audit moves no bytes: only its file starts are capped."""
        by_bytes = size / self.bytes_per_s if self.bytes_per_s and not audit else None
        by_files = objects / self.files_per_s if self.files_per_s else None
        if by_bytes is None and by_files is None:
            return None, ""
        if by_files is None or (by_bytes is not None and by_bytes >= by_files):
            return by_bytes, "throughput"
        return by_files, "request"


def document(tally: Tally, settings: PlanSettings, requests: Requests, *, job: str, source: str,
             destination: str, threads: int, hosts: int, caps: Caps, rate: Optional[Rate], units: int) -> dict:
    """What ``plan --json`` prints (and the text is made from)."""
    at_cap, bound_by = caps.seconds(tally.to_copy, tally.to_copy_bytes, settings.audit_job)
    doc = {
        "job": job, "source": source, "destination": destination,
        "job_type": "audit" if settings.audit_job else "import",
        "listed": {"objects": tally.listed, "bytes": tally.listed_bytes},
        "left_out": dict(sorted(tally.left_out.items())),
        "objects": tally.objects, "bytes": tally.bytes, "tasks": tally.tasks, "scan_units": units,
        "skipped": {"existing": tally.existing, "existing_bytes": tally.existing_bytes,
                    "not_regular_files": tally.not_files},
        "will_fail": dict(sorted(tally.failing.items())),
        "to_copy": {"objects": tally.to_copy, "bytes": tally.to_copy_bytes, "size_unknown": tally.size_unknown},
        "sizes": [asdict(b) for b in tally.histogram],
        "requests": asdict(requests),
        "lookups_made": {"lists": tally.lookup_lists, "heads": tally.lookup_heads},
        "threads": {"per_worker": threads, "workers": hosts, "files_at_once": min(threads * hosts, tally.to_copy)},
        "time": {"throughput_cap_bytes_per_s": caps.bytes_per_s or None, "cap": caps.bytes_words,
                 "files_cap_per_s": caps.files_per_s or None, "files_cap": caps.files_words,
                 "seconds_at_cap": round(at_cap, 1) if at_cap is not None else None, "bound_by": bound_by or None,
                 "reached": None},
    }
    if rate is not None:
        doc["time"]["reached"] = {"bytes_per_s": round(rate.bytes_per_s, 1),
                                  "objects_per_s": round(rate.objects_per_s, 2), "report_written_at": rate.written_at,
                                  "seconds": round(seconds_at(rate, tally.to_copy, tally.to_copy_bytes), 1)}
    return doc


def to_json(doc: dict) -> str:
    return json.dumps(doc, indent=1)


LEFT_OUT_WORDS = {BY_SINCE: "by importSince (not modified since)",
                  BY_PATTERN: "by srcIncludePattern/srcExcludePattern", BY_SIZE: "by minSize/maxSize"}


def _duration(seconds: float) -> str:
    return human_duration(seconds) if seconds >= 1 else "under a second"


def _count(n: int, one: str, many: str) -> str:
    return f"{n:,} {one if n == 1 else many}"


def format_text(doc: dict) -> str:
    """The plan for a person: what the job holds, what it skips, copies, asks and takes."""
    audit = doc["job_type"] == "audit"
    doing = "audit" if audit else "copy"
    lines = [f"plan of job:{doc['job']}, a dry run: nothing was {'checked' if audit else 'copied'}",
             f"  source       {doc['source']}", f"  destination  {doc['destination']}"]
    listed = f"{_count(doc['listed']['objects'], 'entry', 'entries')}, {human_bytes(doc['listed']['bytes'])}"
    if doc["left_out"]:
        listed += " (left out: " + "; ".join(f"{n:,} {LEFT_OUT_WORDS.get(why, why)}"
                                            for why, n in doc["left_out"].items()) + ")"
    lines.append(f"listed         {listed}")
    lines.append(f"in the job     {_count(doc['objects'], 'object', 'objects')}, {human_bytes(doc['bytes'])} in "
                 f"{_count(doc['tasks'], 'task', 'tasks')}: the totals 'console.sh stat' will show")
    skipped = doc["skipped"]
    said = []
    if skipped["existing"]:
        said.append(f"{skipped['existing']:,} already at the destination ({human_bytes(skipped['existing_bytes'])}, "
                    f"isSkipExistFile=true)")
    if skipped["not_regular_files"]:
        said.append(f"{_count(skipped['not_regular_files'], 'is not a regular file', 'are not regular files')} "
                    f"(FIFOs, sockets, unfollowed symlinks)")
    if said:
        lines.append(f"  skipped      {'; '.join(said)}")
    if doc["will_fail"]:
        failing = ", ".join(f"{n:,} {code}" for code, n in doc["will_fail"].items())
        lines.append(f"  will fail    {failing}: as listed they cannot be copied ('console.sh errors' will "
                     f"list them; fix the names or the list)")
    to_copy = doc["to_copy"]
    unknown = f" ({to_copy['size_unknown']:,} of unknown size until copied: an http list gives none)" \
        if to_copy["size_unknown"] else ""
    lines.append(f"to {doing:<11} {_count(to_copy['objects'], 'object', 'objects')}, "
                 f"{human_bytes(to_copy['bytes'])}{unknown}")
    lines.append("  sizes        " + " | ".join(f"{b['label']} {b['objects']:,} ({human_bytes(b['bytes'])})"
                                                for b in doc["sizes"]))
    r = doc["requests"]
    asked = []
    if r["puts"]:
        asked.append(f"{r['puts']:,} PUT")
    if r["multipart_uploads"]:
        asked.append(f"{_count(r['multipart_uploads'], 'multipart upload', 'multipart uploads')} in "
                     f"{_count(r['parts'], 'part', 'parts')} "
                     f"({r['multipart_requests']:,} requests)")
    if r["skip_heads"]:
        asked.append(f"{r['skip_heads']:,} HEAD (isSkipExistFile)")
    if r["audit_lists"]:
        asked.append(f"~{r['audit_lists']:,} LIST (audit)")
    if r["audit_heads"]:
        asked.append(f"{r['audit_heads']:,} HEAD (audit)")
    if r["audit_source_reads"]:
        asked.append(f"{r['audit_source_reads']:,} source reads (auditMode=detailed)")
    if r["source_lists"]:
        asked.append(f"~{r['source_lists']:,} LIST (source)")
    lines.append(f"requests       ~{r['total']:,}: {', '.join(asked) or 'none'}")
    t = doc["threads"]
    lines.append(f"threads        {t['per_worker']} per worker x {_count(t['workers'], 'worker', 'workers')}: up to "
                 f"{_count(t['files_at_once'], 'file', 'files')} at once")
    time_doc = doc["time"]
    if time_doc["bound_by"] == "throughput":
        lines.append(f"time           {_duration(time_doc['seconds_at_cap'])} at the throughput cap "
                     f"({time_doc['cap']}, {human_bytes(time_doc['throughput_cap_bytes_per_s'])}/s); "
                     f"the network or the stores may be slower")
    elif time_doc["bound_by"] == "request":
        lines.append(f"time           {_duration(time_doc['seconds_at_cap'])} at the request cap "
                     f"({time_doc['files_cap']}: {time_doc['files_cap_per_s']:,} files/s)")
    else:
        lines.append(f"time           no {'request' if audit else 'throughput'} cap is set: the network and "
                     f"the stores decide")
    reached = time_doc["reached"]
    if reached is not None:
        lines.append(f"               {_duration(reached['seconds'])} at the rate job:{doc['job']} reached "
                     f"before ({human_bytes(reached['bytes_per_s'])}/s, {reached['objects_per_s']:,.1f} "
                     f"files/s; report of {reached['report_written_at']})")
    elif time_doc.get("reached_note"):
        lines.append(f"               {time_doc['reached_note']}")
    return "\n".join(lines)
