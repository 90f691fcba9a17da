"""All counting in one place: transfers report files and bytes here, ``stat`` reads it back.

A worker keeps one ``JobAccount`` per job. It counts finished files per running task, the bytes
of files being sent (read for an upload that has not finished: a large file moves ``stat`` before
it ends), and moved bytes in a sliding window (for the rate), and is written to ``progress.json``
once a second so ``stat`` (another process) can show live figures without touching the transfer
path.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from .layout import (AUDIT_LOG, COUNTS_FILE, ERROR_LIST, TASK_FILE, DamagedStateFile, damaged_reason,
                     decode_state_json, iter_lines, job_root_of, move_aside, read_task_file, record_damage,
                     write_atomic)
from .listformat import audit_records, one_line, written_columns
from .models import MAX_CODE_LENGTH, OTHER_FAILURE, FileResult, TaskCounts, needs_a_change

RATE_WINDOW_S = 10.0


SENDING_KEY = "sending_bytes"  # in a running task's entry of progress.json, beside its counts


class SendingFile:
    """The bytes of one file sent so far in this run, until the file finishes (whatever its
    outcome, they then leave ``sending``: done bytes count the file once it succeeded)."""

    def __init__(self, account: "JobAccount", task_id: str):
        self._account, self.task_id, self.bytes = account, task_id, 0

    def add(self, n: int) -> None:
        """``n`` more bytes sent; a negative ``n`` takes back an attempt that will be sent again."""
        with self._account._lock:
            self.bytes = max(0, self.bytes + n)


class JobAccount:
    def __init__(self, job_name: str, host: str):
        self.job_name, self.host = job_name, host
        self._lock = threading.Lock()
        self._running: dict = {}  # task_id -> TaskCounts of files finished so far
        self._sending: set = set()  # SendingFile of every file being copied now
        self._window: deque = deque()  # (time, bytes, files) samples, one per second at most
        self._bytes_total = 0
        self._files_total = 0
        self._sample_t = time.monotonic()
        self._sample_bytes = 0
        self._sample_files = 0

    def task_started(self, task_id: str, counts: TaskCounts) -> None:
        with self._lock:
            self._running[task_id] = counts

    def task_finished(self, task_id: str) -> None:
        with self._lock:
            self._running.pop(task_id, None)

    def file_sending(self, task_id: str) -> SendingFile:
        file = SendingFile(self, task_id)
        with self._lock:
            self._sending.add(file)
        return file

    def file_sent(self, file: SendingFile) -> None:
        """The file finished (or its run stopped): its bytes are no longer being sent. Called
        before its outcome is counted, so stat never shows its bytes twice, only briefly not."""
        with self._lock:
            self._sending.discard(file)

    def file_done(self) -> None:
        # The task's TaskCounts (shared with the worker's TaskRun) already holds the outcome.
        with self._lock:
            self._files_total += 1

    def add_bytes(self, n: int) -> None:
        # Called per chunk from transfer threads; a lock-free += would lose counts.
        with self._lock:
            self._bytes_total += n

    def rate(self) -> tuple:
        """(bytes/s, files/s) over the last RATE_WINDOW_S seconds."""
        now = time.monotonic()
        with self._lock:
            self._window.append((now, self._bytes_total, self._files_total))
            while len(self._window) > 1 and now - self._window[0][0] > RATE_WINDOW_S:
                self._window.popleft()
            t0, b0, f0 = self._window[0]
        span = now - t0
        if span <= 0.5:
            return 0.0, 0.0
        return (self._bytes_total - b0) / span, (self._files_total - f0) / span

    def snapshot(self) -> dict:
        bps, fps = self.rate()
        with self._lock:
            running = {tid: vars(c).copy() for tid, c in self._running.items()}
            for file in self._sending:
                if file.task_id in running:
                    entry = running[file.task_id]
                    entry[SENDING_KEY] = entry.get(SENDING_KEY, 0) + file.bytes
        return {"host": self.host, "time": time.time(), "bytes_per_s": bps, "files_per_s": fps,
                "running": running}

    def write(self, path: Path) -> None:
        write_atomic(path, json.dumps(self.snapshot()).encode("utf-8"))


def read_progress(path: Path) -> dict:
    """The last progress.json; {} when there is none or it is not an object (edited by hand):
    stat then counts without it."""
    try:
        doc = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def read_counts(task_dir: Path) -> TaskCounts:
    """A finished task's COUNTS. A damaged one (empty, not JSON, wrong shape, a negative or
    non-integer number) would drop the task's files from the totals: it is moved aside, noted in
    the job's damaged.list, and the counts are rebuilt from the task's audit.log and TASK."""
    path = task_dir / COUNTS_FILE
    try:
        counts, coded = _parse_counts(path.read_bytes())
        if counts.failed and not coded:
            # Written before failures had reason codes: the codes are read from its audit.log
            # (the file itself is fine, and stays as it is); failures it lacks are said unknown.
            counts.reasons = recount(task_dir).reasons
            unknown = counts.failed - sum(counts.reasons.values())
            if unknown > 0:
                counts.reasons[OTHER_FAILURE] = counts.reasons.get(OTHER_FAILURE, 0) + unknown
        return counts
    except FileNotFoundError:
        if damaged_reason(task_dir) is not None:
            return TaskCounts()
        problem = "missing"
    except OSError as exc:
        problem = f"unreadable ({exc.strerror or exc})"
    except ValueError as exc:
        problem = str(exc)
    counts = recount(task_dir)
    try:
        aside = move_aside(path) if path.exists() else None
        write_atomic(path, json.dumps(vars(counts)).encode("utf-8"))
        record_damage(job_root_of(task_dir), path, problem,
                      (f"moved aside to {aside.name}; " if aside else "") + "recounted from audit.log")
    except OSError:
        pass  # a read-only tree: the recount still serves this reader
    return counts


def _parse_counts(data: bytes) -> tuple:
    """(TaskCounts, whether it has its failures' reason codes); ValueError saying what is wrong."""
    doc = decode_state_json(data)
    if not isinstance(doc, dict):
        raise ValueError(f"JSON of the wrong shape (a {type(doc).__name__}, not an object)")
    fields = set(vars(TaskCounts()))
    for name, value in doc.items():
        if name not in fields:
            raise ValueError(f"JSON of the wrong shape (unknown field '{name}')")
        if name == REASONS_FIELD:
            _check_reasons(value)
        elif type(value) is not int or value < 0:
            raise ValueError(f"'{name}' is {value!r}, not a count")
    counts = TaskCounts(**doc)
    if REASONS_FIELD in doc and sum(counts.reasons.values()) != counts.failed:
        raise ValueError(f"'{REASONS_FIELD}' adds up to {sum(counts.reasons.values())}, "
                         f"not the {counts.failed} failed")
    return counts, REASONS_FIELD in doc


REASONS_FIELD = "reasons"


def _check_reasons(value) -> None:
    if not isinstance(value, dict):
        raise ValueError(f"'{REASONS_FIELD}' is {value!r}, not counts by reason code")
    for code, n in value.items():
        if not code or len(code) > MAX_CODE_LENGTH or one_line(code) != code:
            raise ValueError(f"'{REASONS_FIELD}' has {one_line(code[:MAX_CODE_LENGTH])!r}, not a reason code")
        if type(n) is not int or n <= 0:
            raise ValueError(f"'{REASONS_FIELD}' counts {n!r} for {code}, not a count")


def recount(task_dir: Path) -> TaskCounts:
    """A task's counts from its audit.log (the last line of a key wins: an interrupted run's
    failure retried on resume), with sizes and the file total from its TASK when it reads."""
    try:
        objects = read_task_file(task_dir / TASK_FILE).objects
    except (OSError, DamagedStateFile):
        objects = []
    sizes = {o.key: o.size for o in objects}
    outcomes = audit_outcomes(task_dir / AUDIT_LOG)
    counts = TaskCounts(files=len(objects) or len(outcomes), bytes=sum(sizes.values()))
    for key, (outcome, detail) in outcomes.items():
        counts.add(sizes.get(key, 0), FileResult.from_record(key, outcome, detail))
    return counts


def audit_failures(records) -> list:
    """(key, detail) of the files failed so far by an audit.log's records (audit_records), the
    last line of a key winning: a failure retried since and copied is no longer one."""
    last = {key: (outcome, detail) for outcome, key, detail in records}
    return [(key, detail) for key, (outcome, detail) in last.items()
            if not FileResult.from_record(key, outcome, detail).ok]


def audit_outcomes(audit_log: Path) -> dict:
    """key -> (outcome, detail) of an audit.log, the last line of a key winning."""
    return {key: (outcome, detail) for outcome, key, detail in audit_records(audit_log)}


@dataclass
class RetryCost:
    """What 'console.sh retry' of a job sends again: the failed files of its failed tasks whose
    TASK is intact (a damaged one cannot run again), and of them those no retry alone fixes."""

    tasks: int = 0
    files: int = 0
    bytes: int = 0
    needing_a_change: int = 0

    @property
    def only_needs_a_change(self) -> bool:
        return self.files > 0 and self.needing_a_change >= self.files


def retry_cost(failed_dirs: list) -> RetryCost:
    cost = RetryCost()
    for task_dir in failed_dirs:
        if damaged_reason(task_dir) is not None:
            continue
        counts = read_counts(task_dir)
        cost.tasks += 1
        cost.files += counts.failed
        cost.bytes += counts.failed_bytes
        for line in iter_lines(task_dir / ERROR_LIST):
            if line.strip() and needs_a_change(written_columns(line)[1]):
                cost.needing_a_change += 1
    return cost
