"""The job report: what a migration did, object by object, and a manifest digest that lets
anyone prove later that the destination still holds what the job put there.

Written into the job's ``report/`` folder (``JobLayout.report_dir``) from its finished task
folders, one task at a time, never all objects in memory:

- ``objects.csv.gz``: one row per listed object (``COLUMNS``; the key as every list file writes
  it, a JSON string when it holds characters a line cannot), from the task's ``TASK`` (what was
  to be copied), its ``objects.jsonl`` (``records``: what was proven) and, for a task run before
  records existed, its ``audit.log``.
- ``summary.json``: totals by outcome and reason, bytes, duration, rates, per-host totals, the
  job's settings (secrets redacted), versions, and the manifest digest.
- ``report.html``: the same for a person (``reporthtml``), one self-contained file.

The manifest digest is the SHA-256 of the lines ``json.dumps([key, size, crc64])`` (compact,
ASCII, the CRC64 as a decimal string, then a line feed), one per object the job left at the
destination (copied, skipped because the destination had it, audited and matching), sorted by
key. ``verify`` recomputes it from the destination as it is now.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import heapq
import json
import logging
import os
import platform
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

from . import __version__
from . import config as config_mod
from .errors import StateError
from .layout import JobLayout, TaskFolder, parse_finished_name, write_atomic
from .listformat import audit_records, read_key, write_key
from .models import NOT_REGULAR_FILE, TARGET_NOT_EXIST, Outcome, failure_code
from .records import AUDIT_DIFFER, AUDIT_MATCH, AUDIT_MISSING, read_records
from .reporthtml import render as render_html
from .storage.base import sorted_bounded

log = logging.getLogger("ossimport.report")

OBJECTS_CSV = "objects.csv.gz"
SUMMARY_JSON = "summary.json"
REPORT_HTML = "report.html"

# The outcomes of a report row.
COPIED = "copied"
SKIPPED_EXISTING = "skipped-existing"
SKIPPED_NOT_A_FILE = "skipped-not-a-file"
FAILED = "failed"
AUDITED_MATCH = "audited-match"
AUDITED_DIFFER = "audited-differ"
AUDITED_MISSING = "audited-missing"
NOT_RECORDED = "not-recorded"  # its task finished, yet no line says how the file ended

COLUMNS = ("key", "size", "source_mtime", "source_crc64", "dest_crc64", "md5", "outcome", "reason", "audit",
           "attempts", "host", "task", "finished_at", "seconds", "detail")

# What to do about a failure, by reason code; the rest: see the detail, then retry.
ADVICE = {
    "SOURCE_NOT_EXIST": "the file was deleted or renamed after the listing: nothing to copy; restore it "
                        "and retry, or accept its absence",
    "SOURCE_NOT_READABLE": "give the service's user read permission on the file, then 'console.sh retry'",
    "SIZE_NOT_MATCH": "the file changed while it was copied: retry once it is stable",
    "CRC64_NOT_MATCH": "the bytes stored differ from those read: retry; if it persists, check the network "
                       "path and the destination",
    "MD5_NOT_MATCH": "the bytes stored differ from those read: retry",
    "TARGET_NOT_EXIST": "the object is not at the destination: retry to copy it again",
    "INVALID_KEY": "the name cannot be an object key: rename the file (or fix the list line) and retry",
    "JOB_STOPPED": "not tried: the job stopped on a fatal error; fix its Reason, then 'console.sh retry'",
    "SignatureDoesNotMatch": "wrong secret key: fix it with 'console.sh set destSecretKey', then retry",
    "InvalidAccessKeyId": "wrong access key: fix it with 'console.sh set destAccessKey', then retry",
    "AccessDenied": "the keys may not write there: grant them PutObject on the bucket, then retry",
    "NoSuchBucket": "the destination bucket does not exist: create it, then retry",
}
DEFAULT_ADVICE = "see the detail; 'console.sh retry' sends it again"
EXAMPLES_PER_REASON = 5
TOP_N = 10
SERIES_POINTS = 4096  # the most buckets a rate series keeps; wider buckets beyond
HEAD_THREADS = 16
KEPT_DIFFERENCES = 1000


@dataclass
class ObjectRow:
    key: str
    size: int
    source_mtime: float
    source_crc64: Optional[int]
    dest_crc64: Optional[int]
    md5: Optional[str]
    outcome: str
    reason: str
    audit: str
    attempts: int
    host: str
    task: str
    finished_at: Optional[float]
    seconds: Optional[float]
    detail: str

    @property
    def at_destination(self) -> bool:
        """The job left this object at the destination, proven."""
        return self.outcome in (COPIED, SKIPPED_EXISTING, AUDITED_MATCH) and \
            self.audit not in (AUDIT_DIFFER, AUDIT_MISSING)

    @property
    def manifest_crc64(self) -> Optional[int]:
        """The CRC64 the destination holds: as it reported it, else as read (a store without
        CRC64, S3, confirmed the bytes by their MD5)."""
        return self.dest_crc64 if self.dest_crc64 is not None else self.source_crc64

    def csv_values(self) -> list:
        def text(v):
            return "" if v is None else v
        return [write_key(self.key), self.size, _time_text(self.source_mtime), text(self.source_crc64),
                text(self.dest_crc64), text(self.md5), self.outcome, self.reason, self.audit,
                self.attempts, self.host, self.task, _time_text(self.finished_at),
                "" if self.seconds is None else f"{self.seconds:.3f}", self.detail]


def manifest_line(key: str, size: int, crc64: Optional[int]) -> bytes:
    return (json.dumps([key, size, None if crc64 is None else str(crc64)], ensure_ascii=True,
                       separators=(",", ":")) + "\n").encode("ascii")


def manifest_digest(items: Iterable[tuple]) -> tuple:
    """(SHA-256 hex, count) of (key, size, crc64) tuples, in key order whatever their order."""
    digest = hashlib.sha256()
    count = 0
    for key, size, crc in sorted_bounded((k, s, None if c is None else str(c)) for k, s, c in items):
        digest.update(manifest_line(key, size, None if crc is None else int(crc)))
        count += 1
    return digest.hexdigest(), count


# ------------------------------------------------------------------- rows of a task folder

def task_rows(folder: Path, audit_job: bool) -> Iterator[ObjectRow]:
    """One row per object of a finished task folder (``<taskid>_<epochms>@<host>``), in its TASK's
    order."""
    task_id, _, host = parse_finished_name(folder.name)
    task = TaskFolder(folder).read_task()
    last, audits, attempts = {}, {}, {}
    for rec in read_records(TaskFolder(folder).objects_log):
        if rec.is_audit_line:
            audits[rec.key] = rec.audit
            continue
        last[rec.key] = rec
        attempts[rec.key] = attempts.get(rec.key, 0) + 1
        audits.pop(rec.key, None)  # a later result supersedes an earlier audit of it
    older = {}  # a run before objects.jsonl existed: its audit.log alone
    if len(last) < len(task.objects):
        for outcome, key, detail in audit_records(TaskFolder(folder).audit_log):
            if key not in last:
                older[key] = (outcome, detail)
    for entry in task.objects:
        rec = last.get(entry.key)
        if rec is not None:
            audit = audits.get(entry.key, rec.audit)
            yield ObjectRow(entry.key, rec.size or entry.size, rec.mtime or entry.mtime, rec.read_crc64,
                            rec.stored_crc64, rec.md5, _outcome(rec.outcome, rec.detail, audit, audit_job),
                            rec.code or _code(rec.outcome, rec.detail), audit, attempts[entry.key], host,
                            task_id, rec.at or None, rec.seconds, rec.detail)
            continue
        outcome, detail = older.get(entry.key, ("", ""))
        row_outcome = _outcome(outcome, detail, "", audit_job) if outcome else NOT_RECORDED
        yield ObjectRow(entry.key, entry.size, entry.mtime, entry.crc64, None, entry.md5, row_outcome,
                        _code(outcome, detail), "", 1 if outcome else 0, host, task_id, None, None, detail)


def _outcome(outcome: str, detail: str, audit: str, audit_job: bool) -> str:
    if outcome == Outcome.SKIPPED:
        return SKIPPED_NOT_A_FILE if detail.startswith(NOT_REGULAR_FILE) else SKIPPED_EXISTING
    if audit_job and outcome in (Outcome.SUCCEED, Outcome.CHECK_FAILED):
        if audit == AUDIT_MATCH or (outcome == Outcome.SUCCEED and not audit):
            return AUDITED_MATCH
        return AUDITED_MISSING if audit == AUDIT_MISSING or detail.startswith(TARGET_NOT_EXIST) else AUDITED_DIFFER
    if outcome == Outcome.SUCCEED:
        return COPIED
    return FAILED


def _code(outcome: str, detail: str) -> str:
    if outcome in (Outcome.FAILED, Outcome.CHECK_FAILED):
        return failure_code(detail)
    return ""


def _time_text(t: Optional[float]) -> str:
    return "" if not t else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


# ------------------------------------------------------------------- the summary

class RateSeries:
    """Bytes ended per time bucket, in bounded memory: the buckets widen (doubling) when there
    would be more than ``limit`` of them."""

    def __init__(self, limit: int = SERIES_POINTS):
        self.width = 1.0
        self.limit = limit
        self.buckets: dict = {}

    def add(self, at: float, nbytes: int) -> None:
        b = int(at // self.width)
        self.buckets[b] = self.buckets.get(b, 0) + nbytes
        if len(self.buckets) > self.limit:
            self.width *= 2
            merged = {}
            for k, v in self.buckets.items():
                merged[k // 2] = merged.get(k // 2, 0) + v
            self.buckets = merged

    def points(self) -> list:
        """[(bucket start, bytes per second)] in time order, empty buckets between included."""
        if not self.buckets:
            return []
        lo, hi = min(self.buckets), max(self.buckets)
        return [(round(b * self.width, 3), self.buckets.get(b, 0) / self.width) for b in range(lo, hi + 1)]

    def peak(self) -> float:
        return max(self.buckets.values()) / self.width if self.buckets else 0.0


@dataclass
class Summary:
    """What summary.json says, gathered row by row."""

    objects: int = 0
    bytes: int = 0
    by_outcome: dict = field(default_factory=dict)  # outcome -> {"objects", "bytes"}
    failures: dict = field(default_factory=dict)  # reason -> {"objects", "examples", "advice"}
    by_host: dict = field(default_factory=dict)  # host -> {"objects", "bytes", "failed"}
    first_start: Optional[float] = None
    last_end: Optional[float] = None
    moved_bytes: int = 0  # of copied objects
    largest: list = field(default_factory=list)  # heap of (size, key)
    slowest: list = field(default_factory=list)  # heap of (seconds, key, size)
    series: RateSeries = field(default_factory=RateSeries)
    host_series: dict = field(default_factory=dict)

    def add(self, row: ObjectRow) -> None:
        self.objects += 1
        self.bytes += row.size
        bucket = self.by_outcome.setdefault(row.outcome, {"objects": 0, "bytes": 0})
        bucket["objects"] += 1
        bucket["bytes"] += row.size
        host = self.by_host.setdefault(row.host, {"objects": 0, "bytes": 0, "failed": 0})
        host["objects"] += 1
        if row.outcome in (FAILED, AUDITED_DIFFER, AUDITED_MISSING, NOT_RECORDED) or \
                row.audit in (AUDIT_DIFFER, AUDIT_MISSING):
            host["failed"] += 1
            reason = row.reason or (TARGET_NOT_EXIST if row.audit == AUDIT_MISSING else row.outcome)
            f = self.failures.setdefault(reason, {"objects": 0, "examples": [],
                                                  "advice": ADVICE.get(reason, DEFAULT_ADVICE)})
            f["objects"] += 1
            if len(f["examples"]) < EXAMPLES_PER_REASON:
                f["examples"].append({"key": row.key, "detail": row.detail})
        if row.outcome == COPIED:
            host["bytes"] += row.size
            self.moved_bytes += row.size
            _keep_top(self.largest, (row.size, row.key))
            if row.finished_at:
                self.series.add(row.finished_at, row.size)
                self.host_series.setdefault(row.host, RateSeries()).add(row.finished_at, row.size)
                if row.seconds is not None:
                    _keep_top(self.slowest, (row.seconds, row.key, row.size))
        if row.finished_at:
            start = row.finished_at - (row.seconds or 0.0)
            self.first_start = start if self.first_start is None else min(self.first_start, start)
            self.last_end = row.finished_at if self.last_end is None else max(self.last_end, row.finished_at)

    def document(self) -> dict:
        duration = (self.last_end - self.first_start) if self.first_start is not None else 0.0
        average = self.moved_bytes / duration if duration > 0 else 0.0
        return {
            "objects": self.objects, "bytes": self.bytes, "by_outcome": self.by_outcome,
            "failures": dict(sorted(self.failures.items(), key=lambda kv: -kv[1]["objects"])),
            "copied_bytes": self.moved_bytes,
            "started_at": _time_text(self.first_start), "ended_at": _time_text(self.last_end),
            "duration_s": round(duration, 3),
            "average_bytes_per_s": round(average, 1),
            # A job of a few seconds lands in partly used edge buckets, whose rates under-count:
            # its rate over its whole run is a rate it reached all the same.
            "peak_bytes_per_s": round(max(self.series.peak(), average), 1),
            "by_host": self.by_host,
            "largest": [{"key": k, "size": s} for s, k in sorted(self.largest, reverse=True)],
            "slowest": [{"key": k, "size": s, "seconds": round(sec, 3)}
                        for sec, k, s in sorted(self.slowest, reverse=True)],
            "throughput": {"bucket_s": self.series.width, "points": self.series.points(),
                           "by_host": {h: {"bucket_s": s.width, "points": s.points()}
                                       for h, s in sorted(self.host_series.items())}},
        }


def _keep_top(heap: list, item: tuple) -> None:
    if len(heap) < TOP_N:
        heapq.heappush(heap, item)
    elif item > heap[0]:
        heapq.heapreplace(heap, item)


# ------------------------------------------------------------------- writing the report

@dataclass
class Report:
    folder: Path
    summary: dict

    @property
    def digest(self) -> str:
        return self.summary["manifest"]["sha256"]


def write_report(job: JobLayout, settings: dict) -> Report:
    """Write the report of ``job`` from its finished tasks (``settings``: the job's keys, secrets
    redacted). A task still pending or running is not in it; summary.json says how many."""
    if not job.exists():
        raise StateError(f"no job {job.name} in {job.home.root}: 'console.sh stat' lists the jobs")
    audit_job = settings.get("jobType") == "audit"
    folder = job.make_report_dir()
    summary = Summary()
    without_crc = 0  # manifest lines whose CRC64 the job never learnt
    damaged = []  # finished task folders whose TASK cannot be read: their objects are not rows
    finished = job.succeed_dirs() + job.failed_dirs()
    csv_tmp = folder / f".{OBJECTS_CSV}.{os.getpid()}.tmp"
    with tempfile.TemporaryFile("w+", encoding="ascii", dir=folder) as manifest:
        # UTF-8 throughout: keys as every list file writes them (a JSON string when unsafe), and
        # an undecodable byte in a detail as its escape.
        with gzip.open(csv_tmp, "wt", encoding="utf-8", errors="backslashreplace", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(COLUMNS)
            for task_dir in sorted(finished, key=lambda d: d.name):
                try:
                    rows = list(task_rows(task_dir, audit_job))
                except StateError:  # a TASK damaged past repair: stat names it and what to do
                    damaged.append(task_dir.name)
                    continue
                for row in rows:
                    writer.writerow(row.csv_values())
                    summary.add(row)
                    if row.at_destination:
                        manifest.write(json.dumps([row.key, row.size, row.manifest_crc64]) + "\n")
                        without_crc += row.manifest_crc64 is None
        manifest.seek(0)
        digest, count = manifest_digest(tuple(json.loads(line)) for line in manifest)
    os.replace(csv_tmp, folder / OBJECTS_CSV)
    doc = summary.document()
    unfinished = len(job.pending_ids()) + sum(len(job.dispatched_ids(h)) for h in job.dispatched_hosts())
    doc = {"job": job.name, "written_at": _time_text(time.time()),
           "complete": unfinished == 0 and job.scan_finished and not damaged,
           "tasks": {"finished": len(finished), "failed": len(job.failed_dirs()), "not_finished": unfinished,
                     "damaged": damaged},
           **doc,
           "manifest": {"sha256": digest, "objects": count, "without_crc64": without_crc,
                        "lines": "json.dumps([key, size, crc64 as a decimal string]) + LF, compact, ASCII, "
                                 "sorted by key, one per object the job left at the destination; crc64 null "
                                 "where the job did not learn it (an audit in simple or general auditMode "
                                 "checks sizes from a listing: auditMode=detailed records every CRC64)"},
           "settings": settings,
           "versions": {"ossimport-dist": __version__, "python": platform.python_version()}}
    write_atomic(folder / SUMMARY_JSON, (json.dumps(doc, indent=1) + "\n").encode("ascii"))
    write_atomic(folder / REPORT_HTML, render_html(doc).encode("utf-8"))
    return Report(folder, doc)


def job_settings(job: JobLayout) -> dict:
    """The job's keys as submitted, secrets redacted, passwords in domains scrubbed."""
    frozen = config_mod.load_job(job.config_file)
    return {k: config_mod.scrub_passwords(v) for k, v in config_mod.redact(frozen.properties()).items()}


def report_is_stale(job: JobLayout) -> bool:
    """No report, or a task finished after it was written (a task finishing renames its folder
    into succeed_tasks/ or failed_tasks/, which changes that folder's mtime)."""
    try:
        written = (job.report_dir / SUMMARY_JSON).stat().st_mtime
    except OSError:
        return True
    for folder in (job.succeed, job.failed):
        try:
            if folder.stat().st_mtime > written:
                return True
        except OSError:
            continue
    return False


class ReportKeeper:
    """Writes a job's report when the job ends (no task left to run: Succeed or Failed), and
    again when it ends again after a retry or an incremental round. In a thread of its own, so
    that a large job's report never holds the service's tick; one job at a time."""

    def __init__(self):
        self._queue: list = []
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()
        self._failed: dict = {}  # job name -> the stale report's stamp a write failed for (said once)

    def observe(self, jobs: Iterable[JobLayout]) -> None:
        with self._lock:
            queued = {j.name for j in self._queue}
            busy = self._thread is not None and self._thread.is_alive()
            for job in jobs:
                if job.name in queued or not job.settled() or not report_is_stale(job):
                    continue
                if self._failed.get(job.name) == _stamp(job):
                    continue
                self._queue.append(job)
            if self._queue and not busy:
                self._thread = threading.Thread(target=self._write_queued, name="report", daemon=True)
                self._thread.start()

    def _write_queued(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    return
                job = self._queue.pop(0)
            try:
                if job.exists():
                    report = write_report(job, job_settings(job))
                    log.info("job %s: report written in %s/%s (%d objects, manifest sha256 %s)", job.name,
                             job.shown_root, job.report_dir.name, report.summary["objects"], report.digest)
                self._failed.pop(job.name, None)
            except Exception as exc:  # noqa: BLE001 - a report must never stop the service
                log.error("job %s: cannot write its report: %s; 'console.sh report %s' tries again",
                          job.name, exc, job.name)
                self._failed[job.name] = _stamp(job)

    def join(self, timeout: float) -> None:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)


def _stamp(job: JobLayout) -> tuple:
    stamps = []
    for folder in (job.succeed, job.failed):
        try:
            stamps.append(folder.stat().st_mtime_ns)
        except OSError:
            stamps.append(0)
    return tuple(stamps)


def read_rows(path: Path) -> Iterator[ObjectRow]:
    """The rows of an objects.csv.gz."""
    try:
        f = gzip.open(path, "rt", encoding="utf-8", errors="replace", newline="")
        with f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None or tuple(header) != COLUMNS:
                raise StateError(f"{path} is not an objects.csv.gz of this version: write it again with "
                                 f"'console.sh report'")
            for values in reader:
                v = dict(zip(COLUMNS, values))
                yield ObjectRow(read_key(v["key"])[0], int(v["size"]), 0.0, _int(v["source_crc64"]), _int(v["dest_crc64"]),
                                v["md5"] or None, v["outcome"], v["reason"], v["audit"], int(v["attempts"]),
                                v["host"], v["task"], None, None, v["detail"])
    except (OSError, EOFError, ValueError, csv.Error) as exc:  # KeyFormatError too
        raise StateError(f"cannot read {path}: {exc}; write it again with 'console.sh report'") from None


def _int(text: str) -> Optional[int]:
    return int(text) if text else None


# ------------------------------------------------------------------- verifying it later

@dataclass
class Difference:
    key: str
    problem: str


@dataclass
class Verification:
    checked: int
    differing: int
    differences: list  # the first KEPT_DIFFERENCES Differences, in key order
    digest: str
    report_digest: str
    by_crc64: bool  # the destination reported CRC64s; else sizes and MD5s were compared

    @property
    def ok(self) -> bool:
        return not self.differing and self.digest == self.report_digest


def verify(report_dir: Path, destination, on_difference: Optional[Callable[[Difference], None]] = None) -> Verification:
    """Compare every object the report says the job left at the destination with what
    ``destination`` holds now: a HEAD each (``HEAD_THREADS`` at a time), size and CRC64 (MD5 on
    a store without CRC64), and the manifest digest recomputed from what was found."""
    try:
        summary = json.loads((report_dir / SUMMARY_JSON).read_text("ascii"))
        report_digest = summary["manifest"]["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StateError(f"cannot read the report in {report_dir}: {exc}; write it with 'console.sh report'") from None
    by_crc = destination.features.has_crc64
    wanted = ((r.key, r.size, r.manifest_crc64, r.md5) for r in read_rows(report_dir / OBJECTS_CSV)
              if r.at_destination)
    digest, differences, checked, differing = hashlib.sha256(), [], 0, 0

    def look(item):
        return item, destination.head(item[0])

    # In key order (keys are unique), as the manifest digest takes its lines: hashed as they come.
    with ThreadPoolExecutor(HEAD_THREADS) as pool:
        for chunk in _chunks(sorted_bounded((k, s, None if c is None else str(c), m or "")
                                            for k, s, c, m in wanted), 1000):
            for (key, size, crc, md5), now in pool.map(look, chunk):
                checked += 1
                crc = None if crc is None else int(crc)
                problem = _difference(size, crc, md5, now, by_crc)
                if problem:
                    differing += 1
                    d = Difference(key, problem)
                    if len(differences) < KEPT_DIFFERENCES:
                        differences.append(d)
                    if on_difference is not None:
                        on_difference(d)
                if now is not None:
                    # A line the report wrote without a CRC64 (the job never learnt it) is
                    # recomputed without one: the digest proves what the report proved.
                    seen_crc = (now.crc64 if crc is not None else None) if by_crc else (crc if not problem else None)
                    digest.update(manifest_line(key, now.size, seen_crc))
    return Verification(checked, differing, differences, digest.hexdigest(), report_digest, by_crc)


def _difference(size: int, crc: Optional[int], md5: str, now, by_crc: bool) -> str:
    if now is None:
        return "missing: the destination has no such object now"
    if now.size != size:
        return f"size {now.size} bytes now, {size} in the report"
    if by_crc:
        if now.crc64 is None:
            return "the destination reports no CRC64 for it now"
        if crc is not None and now.crc64 != crc:
            return f"CRC64 {now.crc64} now, {crc} in the report"
    elif md5 and now.md5 and now.md5.lower() != md5.lower():
        return f"MD5 {now.md5} now, {md5} in the report"
    return ""


def _chunks(items: Iterable, n: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
