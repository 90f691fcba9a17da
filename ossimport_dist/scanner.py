"""The master's scan: list the source as a stream and cut it into tasks, resumably.

The source is split into *scan units* (a directory listed alone, or a subtree listed whole)
down to ``maxMultiThreadScanDepth``, and ``scanThreadCount`` threads list units side by side.
Each unit lists in key order and keeps a checkpoint (``checkpoints/0/<hex>.cpt``): the number of
tasks it has cut and the last key it put in one. A task's id is derived from (job, unit, number),
so a master killed between writing a task and its checkpoint finds the task already in the tree
on restart, takes its last key as the checkpoint, and neither duplicates nor drops a file.

A listing request that fails transiently is retried with backoff (``ListingRetry``), the unit
resuming from its checkpoint; one that keeps failing, or fails for good (a bad list file, access
denied), raises ``ScanFailed`` and the master ends the job Failed with the reason. A damaged
checkpoint is moved aside and its unit scanned again from its start: ``_catch_up`` finds the
unit's tasks in the tree by their ids, so none is cut twice.

Memory: at most one task's worth of entries per thread (taskObjectCountLimit), plus what the
driver holds to list one directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

from .errors import OperatorError, SourceError
from .filters import Selection
from .layout import (DamagedStateFile, JobLayout, TaskFolder, decode_state_json, move_aside, read_task_file,
                     record_damage, write_atomic)
from .listformat import list_line
from .models import ObjectEntry, Task
from .storage.base import Source
from .storage.errors import RequestFailed

log = logging.getLogger("ossimport.scanner")

BY_SINCE = "importSince"  # left out: not modified since importSince


@dataclass(frozen=True)
class ScanUnit:
    subtree: str  # relative key prefix ending in '/', or '' for the root
    recursive: bool

    @property
    def unit_id(self) -> str:
        return ("R:" if self.recursive else "D:") + self.subtree

    @property
    def hex(self) -> str:
        return unit_hex(self.unit_id)


def unit_hex(unit_id: str) -> str:
    """The name of a unit's checkpoint file (and of its manifests), from its id."""
    return hashlib.md5(unit_id.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass
class UnitCheckpoint:
    unit: str
    tasks: int = 0
    last_key: Optional[str] = None
    objects: int = 0
    bytes: int = 0
    done: bool = False


def read_checkpoint(data: bytes, unit_id: Optional[str] = None) -> UnitCheckpoint:
    """A checkpoint file's content; ValueError saying what is wrong when it is not one that
    ``Scanner._save`` wrote (for ``unit_id``, when given)."""
    doc = decode_state_json(data)
    if not isinstance(doc, dict) or set(doc) - set(UnitCheckpoint.__dataclass_fields__) or "unit" not in doc:
        raise ValueError("JSON of the wrong shape (not a scan checkpoint)")
    cpt = UnitCheckpoint(**doc)
    counts_ok = all(type(v) is int and v >= 0 for v in (cpt.tasks, cpt.objects, cpt.bytes))
    if not (counts_ok and isinstance(cpt.unit, str) and type(cpt.done) is bool
            and (cpt.last_key is None if cpt.tasks == 0 else isinstance(cpt.last_key, str))):
        raise ValueError("JSON of the wrong shape (a field has a value no scan writes)")
    if unit_id is not None and cpt.unit != unit_id:
        raise ValueError(f"holds the checkpoint of unit '{cpt.unit}', not of '{unit_id}'")
    return cpt


SCAN_RETRY_ENV = "OSSIMPORT_SCAN_RETRY"


@dataclass(frozen=True)
class ListingRetry:
    """How a listing that failed transiently (HTTP 5xx, throttled, connection refused or reset)
    is retried: the unit resumes from its checkpoint after waits doubling from ``first_wait_s``
    up to ``max_wait_s``. After ``attempts`` failures in a row without a task cut, or
    ``give_up_after_s`` seconds of them, the scan gives up (``ScanFailed``).

    ``OSSIMPORT_SCAN_RETRY`` in the service's environment changes the schedule, e.g.
    ``attempts=3,first_wait_s=0.05,max_wait_s=0.1``: the tests shorten it so, an operator with a
    flaky source may lengthen it."""

    attempts: int = 8
    first_wait_s: float = 1.0
    max_wait_s: float = 30.0
    give_up_after_s: float = 600.0

    @classmethod
    def from_env(cls, environ=os.environ) -> "ListingRetry":
        spec = environ.get(SCAN_RETRY_ENV, "").strip()
        values = {}
        try:
            for item in filter(None, (i.strip() for i in spec.split(","))):
                name, _, value = item.partition("=")
                if name.strip() not in cls.__dataclass_fields__:
                    raise ValueError(f"unknown setting '{name.strip()}'")
                number = int(value) if name.strip() == "attempts" else float(value)
                if not number > 0:
                    raise ValueError(f"{name.strip()} must be more than 0")
                values[name.strip()] = number
        except ValueError as exc:
            log.error("%s='%s' ignored (%s); the default listing retry schedule applies", SCAN_RETRY_ENV,
                      spec, exc)
            return cls()
        return cls(**values)

    def wait_s(self, failures: int) -> float:
        return min(self.max_wait_s, self.first_wait_s * 2 ** (failures - 1))


class ScanFailed(SourceError):
    """The source kept failing in a way that may pass until the retry schedule ran out (a source
    that refuses for good raises its own error at once)."""


def transient_failure(exc: BaseException) -> Optional[RequestFailed]:
    """The retryable request failure behind ``exc`` (some drivers wrap it in a SourceError)."""
    while exc is not None:
        if isinstance(exc, RequestFailed):
            return exc if exc.retryable else None
        exc = exc.__cause__
    return None


@dataclass(frozen=True)
class SplitLimits:
    max_objects: int
    max_bytes: int
    import_since: float = 0  # only files modified after this Unix time (0 = all)
    selection: Selection = Selection()  # srcIncludePattern, srcExcludePattern, minSize, maxSize

    @classmethod
    def for_job(cls, job_cfg, first_round: bool = True) -> "SplitLimits":
        # importSince applies to the first pass only; later rounds take whatever changed.
        return cls(job_cfg.task_object_count_limit, job_cfg.task_object_size_limit,
                   job_cfg.import_since if first_round else 0, Selection.from_job(job_cfg))

    def left_out(self, entry: ObjectEntry) -> Optional[str]:
        """Why the job does not take a listed entry (BY_SINCE, or the selection's reason)."""
        # mtime 0 is "not known when listed" (an http list, a manifest line with a size, an entry
        # refused by the listing): such entries are never dropped unseen by importSince.
        if self.import_since and entry.mtime and entry.mtime <= self.import_since:
            return BY_SINCE
        return self.selection.left_out(entry)


def plan_units(source: Source, threads: int, depth: int) -> list:
    """The scan units: one subtree when listing is single-threaded or the source is one list
    file, else every directory above ``depth`` listed alone and every directory at ``depth``
    listed whole."""
    if threads <= 1 or not source.features.lists_by_folder:
        return [ScanUnit("", True)]
    units = []

    def expand(subtree: str, level: int) -> None:
        if level >= depth:
            units.append(ScanUnit(subtree, True))
            return
        units.append(ScanUnit(subtree, False))
        for child in source.subtrees(subtree):
            expand(child, level + 1)

    expand("", 0)
    return units


def task_id_for(job_name: str, unit: ScanUnit, number: int, round_no: int = 0) -> str:
    # Round 0 keeps the plain form, so ids of a job submitted before rounds existed still match.
    unit_part = unit.unit_id if round_no == 0 else f"{round_no}\0{unit.unit_id}"
    raw = f"{job_name}\0{unit_part}\0{number}".encode("utf-8", "surrogateescape")
    return hashlib.md5(raw).hexdigest()


def changed(entry: ObjectEntry, before: ObjectEntry) -> bool:
    """Whether an object differs from the round before: size and mtime, and every fingerprint
    both listings give (CRC64, MD5, and the ETag or change token), so a copy that kept the old
    mtime is still seen (a local file's token holds its inode and ctime, which a copy cannot keep)."""
    if entry.size != before.size or abs(entry.mtime - before.mtime) > 1e-3:
        return True
    for a, b in ((entry.crc64, before.crc64), (entry.md5, before.md5), (entry.etag, before.etag)):
        if a is not None and b is not None and a != b:
            return True
    return False


class RoundDiff:
    """Merge one unit's new listing with its manifest from the round before (both in key order):
    writes the new manifest, yields new and changed entries, records keys gone from the source."""

    def __init__(self, previous: Optional[Path], manifest: Path, deleted: Path):
        self.previous, self.manifest, self.deleted = previous, manifest, deleted
        self.gone = 0

    def _before(self) -> Iterator[ObjectEntry]:
        if self.previous is None or not self.previous.is_file():
            return
        with open(self.previous, "r", encoding="ascii") as f:
            for line in f:
                if line.strip():
                    yield ObjectEntry.from_json(line)

    def filter(self, entries: Iterator[ObjectEntry]) -> Iterator[ObjectEntry]:
        tmp = self.manifest.with_name(self.manifest.name + ".tmp")
        before = self._before()
        old = next(before, None)
        with open(tmp, "w", encoding="ascii") as out, open(self.deleted, "w", encoding="utf-8",
                                                            errors="surrogateescape") as gone:
            for entry in entries:
                out.write(entry.to_json() + "\n")
                while old is not None and old.key < entry.key:
                    gone.write(list_line(old.key))
                    self.gone += 1
                    old = next(before, None)
                if old is not None and old.key == entry.key:
                    same = not changed(entry, old)
                    old = next(before, None)
                    if same:
                        continue
                yield entry
            while old is not None:
                gone.write(list_line(old.key))
                self.gone += 1
                old = next(before, None)
        os.replace(tmp, self.manifest)


def cut_tasks(entries: Iterator[ObjectEntry], limits: SplitLimits,
              boundary: Optional[Callable[[ObjectEntry, ObjectEntry], bool]] = None,
              on_left_out: Optional[Callable[[ObjectEntry, str], None]] = None) -> Iterator[list]:
    """Group a listing into task-sized lists of the entries the job takes (``limits.left_out``
    says of the others, and ``on_left_out`` hears them); a file is never split across tasks.
    ``boundary`` (a source's ``task_boundary``) may cut more: an http list is cut where the host
    changes."""
    batch, batch_bytes = [], 0
    for entry in entries:
        why = limits.left_out(entry)
        if why is not None:
            if on_left_out is not None:
                on_left_out(entry, why)
            continue
        if batch and (len(batch) >= limits.max_objects or batch_bytes + entry.size > limits.max_bytes
                      or (boundary is not None and boundary(batch[-1], entry))):
            yield batch
            batch, batch_bytes = [], 0
        batch.append(entry)
        batch_bytes += entry.size
    if batch:
        yield batch


class Scanner:
    """Scans one job's source into ``pending_tasks/``."""

    def __init__(self, job: JobLayout, source: Source, limits: SplitLimits, threads: int = 1,
                 depth: int = 1, stop: Optional[threading.Event] = None,
                 on_task: Optional[Callable[[Task], None]] = None, round_no: int = 0,
                 incremental: bool = False, retry: Optional[ListingRetry] = None,
                 source_label: str = "the source", on_retry: Optional[Callable[[str], None]] = None):
        self.job, self.source, self.limits = job, source, limits
        self.retry = retry or ListingRetry()
        self.source_label = source_label  # how messages name the source: "srcBucket 'b' at <url>"
        self.on_retry = on_retry  # told each transient failure, with when the next try is
        self.threads, self.depth = max(1, threads), max(1, depth)
        self.stop = stop or threading.Event()
        self.on_task = on_task
        # Incremental jobs keep a manifest of every round, to find what changed in the next one.
        self.round_no, self.incremental = round_no, incremental
        self.checkpoints = job.round_checkpoints(round_no)

    def run(self) -> bool:
        """Scan until done (True) or stopped (False). Errors of the source propagate."""
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        if self.incremental:
            self.job.round_dir(self.round_no).mkdir(parents=True, exist_ok=True)
        units = self._retrying("listing its folders", lambda: plan_units(self.source, self.threads, self.depth))
        if units is None:
            return False
        log.info("job %s: scanning %d unit(s) with %d thread(s)", self.job.name, len(units), self.threads)
        if self.threads == 1:
            for unit in units:
                self.scan_unit(unit)
        else:
            with ThreadPoolExecutor(self.threads, thread_name_prefix="scan") as pool:
                for f in [pool.submit(self.scan_unit, u) for u in units]:
                    f.result()
        if self.stop.is_set():
            return False
        if self.incremental and self.round_no > 0:
            self._report_vanished_units(units)
        self.job.mark_scan_finished()
        log.info("job %s: scan finished", self.job.name)
        return True

    def _report_vanished_units(self, units: list) -> None:
        """A unit of the round before that is no longer planned (its whole folder is gone): all of
        its keys are gone from the source. Units follow the job's frozen scanThreadCount and
        maxMultiThreadScanDepth, so a key that still exists is always in the same unit as before."""
        planned = {u.hex for u in units}
        for manifest in sorted(self.job.round_dir(self.round_no - 1).glob("*.manifest")):
            unit_hex = manifest.name[:-len(".manifest")]
            report = self.job.round_dir(self.round_no) / f"{unit_hex}.deleted"
            if unit_hex in planned or report.exists():
                continue
            tmp = report.with_name(report.name + ".tmp")
            with open(manifest, "r", encoding="ascii") as f, \
                    open(tmp, "w", encoding="utf-8", errors="surrogateescape") as gone:
                for line in f:
                    if line.strip():
                        gone.write(list_line(ObjectEntry.from_json(line).key))
            os.replace(tmp, report)
            log.info("job %s: folder of scan unit %s is gone; its keys are listed in %s",
                     self.job.name, unit_hex, report)

    # -- one unit ---------------------------------------------------------------------------
    def _cpt_path(self, unit: ScanUnit):
        return self.checkpoints / f"{unit.hex}.cpt"

    def load_checkpoint(self, unit: ScanUnit) -> UnitCheckpoint:
        """The unit's checkpoint; a damaged one is moved aside, recorded in damaged.list, and the
        unit starts over (``_catch_up`` then walks the tasks it had already cut)."""
        path = self._cpt_path(unit)
        try:
            return read_checkpoint(path.read_bytes(), unit.unit_id)
        except FileNotFoundError:
            return UnitCheckpoint(unit=unit.unit_id)
        except ValueError as exc:
            aside = move_aside(path)
            line = record_damage(self.job.root, path, str(exc),
                                 f"moved aside to {aside.name}; unit '{unit.unit_id}' scanned again from its start")
            log.error("job %s: damaged checkpoint %s", self.job.name, line)
            return UnitCheckpoint(unit=unit.unit_id)

    def _retrying(self, what: str, attempt: Callable[[], object], progress: Callable[[], int] = lambda: 0):
        """``attempt()``, tried again on transient failures per ``self.retry`` (a try that made
        progress starts the count again); None when stopped while waiting."""
        failures, first_failed_at, seen = 0, 0.0, progress()
        while True:
            try:
                return attempt()
            except (RequestFailed, OperatorError) as exc:
                failure = transient_failure(exc)
                if failure is None:
                    raise
                cause = exc
            if progress() != seen:
                failures, seen = 0, progress()
            failures += 1
            now = time.monotonic()
            first_failed_at = now if failures == 1 else first_failed_at
            if failures >= self.retry.attempts or now - first_failed_at >= self.retry.give_up_after_s:
                raise ScanFailed(f"{self.source_label}: {what} failed {failures} time(s) in a row over "
                                 f"{now - first_failed_at:.1f} s, last: {failure.describe()}") from cause
            wait = self.retry.wait_s(failures)
            note = (f"{self.source_label}: {what}: {failure.describe()}; try {failures + 1} of "
                    f"{self.retry.attempts} in {wait:.1f} s")
            log.warning("job %s: %s", self.job.name, note)
            if self.on_retry:
                self.on_retry(note)
            if self.stop.wait(wait):
                return None

    def _save(self, unit: ScanUnit, cpt: UnitCheckpoint) -> None:
        write_atomic(self._cpt_path(unit), json.dumps(asdict(cpt)).encode("utf-8"))

    def _catch_up(self, unit: ScanUnit, cpt: UnitCheckpoint) -> None:
        """Tasks written after the last checkpoint (a crash between the two writes) count."""
        while True:
            task_id = task_id_for(self.job.name, unit, cpt.tasks + 1, self.round_no)
            task_file = self._find_task_file(task_id)
            if task_file is None:
                return
            try:
                task = read_task_file(task_file)
            except DamagedStateFile as damage:
                # Without the task's last key the unit cannot resume exactly: an intact copy, or
                # the scan stops naming the file.
                if not self.job.repair_task_file(task_id, task_file, damage.problem):
                    raise
                task = read_task_file(task_file)
            cpt.tasks += 1
            cpt.objects += len(task.objects)
            cpt.bytes += task.total_bytes
            if task.objects:
                cpt.last_key = task.objects[-1].key
            self._save(unit, cpt)

    def _find_task_file(self, task_id: str):
        for folder in self.job.locations(task_id):
            if TaskFolder(folder).task_file.is_file():
                return TaskFolder(folder).task_file
        return None

    def scan_unit(self, unit: ScanUnit) -> None:
        cpt = self.load_checkpoint(unit)
        if cpt.done:
            return
        self._catch_up(unit, cpt)
        where = f"listing '{unit.subtree}'" if unit.subtree else "listing"
        self._retrying(where, lambda: self._list_unit(unit, cpt), lambda: cpt.tasks)

    def _list_unit(self, unit: ScanUnit, cpt: UnitCheckpoint) -> None:
        """List the unit past its checkpoint into tasks; called again after a failed listing."""
        if self.incremental:
            # The manifest must hold the whole unit, so a resumed unit lists from its start and
            # only tasks what lies past its checkpoint.
            diff = RoundDiff(self.job.round_manifest(self.round_no - 1, unit.hex) if self.round_no else None,
                             self.job.round_manifest(self.round_no, unit.hex),
                             self.job.round_dir(self.round_no) / f"{unit.hex}.deleted")
            listed = self.source.list(unit.subtree, recursive=unit.recursive)
            resume_after = cpt.last_key
            entries = (e for e in diff.filter(listed) if resume_after is None or e.key > resume_after)
        else:
            entries = self.source.list(unit.subtree, recursive=unit.recursive, start_after=cpt.last_key)
        for batch in cut_tasks(entries, self.limits, self.source.task_boundary):
            if self.stop.is_set():
                return
            cpt.tasks += 1
            task = Task(task_id=task_id_for(self.job.name, unit, cpt.tasks, self.round_no),
                        job_name=self.job.name, objects=batch)
            self.job.add_pending(task)
            cpt.last_key = batch[-1].key
            cpt.objects += len(batch)
            cpt.bytes += task.total_bytes
            self._save(unit, cpt)
            if self.on_task:
                self.on_task(task)
        if not self.stop.is_set():
            cpt.done = True
            self._save(unit, cpt)


def damaged_checkpoints(job: JobLayout, round_no: int) -> list:
    """Checkpoint files of a round that do not read back (a finished scan must rebuild them, or
    its totals would lose their units)."""
    bad = []
    for p in sorted(job.round_checkpoints(round_no).glob("*.cpt")):
        try:
            if unit_hex(read_checkpoint(p.read_bytes()).unit) != p.stem:
                bad.append(p)  # another unit's checkpoint under this unit's name
        except (OSError, ValueError):
            bad.append(p)
    return bad


def scanned_totals(job: JobLayout) -> tuple:
    """(objects, bytes, tasks) put in tasks so far, summed over the checkpoints of every round."""
    objects = size = tasks = 0
    if job.checkpoints.parent.is_dir():
        for p in job.checkpoints.parent.glob("*/*.cpt"):
            try:
                cpt = read_checkpoint(p.read_bytes())
            except (OSError, ValueError):
                continue  # damaged: the scan rebuilds it (damaged_checkpoints)
            objects += cpt.objects
            size += cpt.bytes
            tasks += cpt.tasks
    return objects, size, tasks
