"""The worker: runs task folders with one pool of transfer threads shared by all their files.

A task folder holds ``TASK`` (what to copy). The worker appends one ``audit.log`` line per file as
it goes, and at the end writes ``error.list``, ``COUNTS``, ``STATUS`` and (on success) ``DONE``.
The same class runs a standalone job and, inside the agent, a task pushed to a remote host.

Threads are shared across tasks (``workerTaskThreadNum``), so a job of three tasks still uses
every thread; bandwidth is one ``Throttle`` for the whole worker. A task folder interrupted by a
crash, or failed and retried, resumes: files already logged as done in ``audit.log`` are not
copied again, and large files resume their multipart upload from the checkpoint kept in the
task folder.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from .accounting import JobAccount
from .audit import ListingAudit
from .errors import OperatorError
from .failurelog import FailureLog
from .fatal import FatalDetector
from .layout import STATUS_COMPLETED, STATUS_FAILED, TaskFolder, retry_count
from .listformat import DETAIL_SEPARATOR, audit_records, list_line, one_line, write_key
from .models import (JOB_STOPPED, NOT_REGULAR_FILE, OTHER_FAILURE, SOURCE_NOT_EXIST, SOURCE_NOT_READABLE,
                     SOURCE_REFUSALS, FileResult, ObjectEntry, Outcome, Task, TaskCounts, refused_result)
from .records import AUDIT_MATCH, audit_line as audit_record_line, audit_verdict, result_line
from .retrying import failure_reason_code
from .storage.errors import RequestFailed
from .throttle import Throttle

log = logging.getLogger("ossimport.worker")

_OK_OUTCOMES = (Outcome.SUCCEED, Outcome.SKIPPED)


def audit_line(result: FileResult) -> str:
    """``<stamp> <outcome> <key>[ Detail:<detail>]``: the key as every list file writes it
    (``listformat``), the detail kept on its line."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    line = f"{stamp} {result.outcome} {write_key(result.key)}"
    if result.detail:
        line += DETAIL_SEPARATOR + one_line(result.detail)
    return line + "\n"


def append_on_a_fresh_line(path: Path):
    """The audit.log opened for appending. A run that died mid-line left no line break: the
    next record starts on its own line, or it would be lost in the broken one."""
    try:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            broken = f.read(1) != b"\n"
    except OSError:  # no audit.log yet, or an empty one
        broken = False
    # Buffered, and flushed by the service's every tick (Worker.flush_audit_logs) and when the
    # task ends, never fsync'ed: a stat after the service was killed counts the files done up to
    # a fraction of a second before it died (one done and not flushed yet is copied again, never
    # counted done without its line), and stat detail and errors read a running task's failures.
    # A write per line, under the task's lock, held 16 threads in a convoy on a one-task job.
    out = open(path, "a", encoding="utf-8", errors="surrogateescape")
    if broken:
        out.write("\n")
    return out


def _not_a_file(result: FileResult) -> bool:
    """Skipped because what is there is no regular file (listed in skipped.list)."""
    return result.outcome == Outcome.SKIPPED and result.detail.startswith(NOT_REGULAR_FILE)


def finished_results(audit_log: Path, keys: set) -> dict:
    """Files of ``keys`` that an earlier run of this task (interrupted, or failed and retried)
    already finished well: key -> FileResult with its outcome and detail. A failure is tried
    again; the last line of a key wins (a copy the task's audit then failed is a failure).

    A written key never holds " Detail:" unquoted, so the key ends at the first one. An audit.log
    written before that rule (a raw key holding " Detail:" or starting with '"') does not match
    here: that file is copied again, never taken for done by mistake."""
    done = {}
    for outcome, key, detail in audit_records(audit_log):
        if key not in keys:
            continue
        if outcome in _OK_OUTCOMES:
            done[key] = FileResult(key, outcome, detail=detail)
        else:
            done.pop(key, None)
    return done


def finished_keys(audit_log: Path, keys: set) -> dict:
    """key -> outcome of the files an earlier run of this task finished well."""
    return {key: r.outcome for key, r in finished_results(audit_log, keys).items()}


@dataclass
class JobRuntime:
    """What a worker needs to run one job's tasks: drivers, transfer engine, counters."""

    name: str
    transferer: object  # transfer.Transferer
    account: JobAccount
    audit_only: bool = False
    audit_mode: str = "general"
    audit_after_import: bool = True
    abort_on_unexpected: bool = False
    health: FatalDetector = field(default_factory=FatalDetector)
    # The audit (of an audit job, or after an import) a task at a time from the destination's
    # listing, when it can be done so (simple/general, a destination that lists); None: a
    # HEAD per file.
    listing_audit: Optional[ListingAudit] = field(default=None, init=False)

    def __post_init__(self):
        if (self.audit_only or self.audit_after_import) and \
                ListingAudit.applies(self.transferer.destination, self.audit_mode):
            self.listing_audit = ListingAudit(self.transferer, self.audit_mode)

    @property
    def stopped(self) -> Optional[str]:
        """Why the job stopped on a fatal error, or None while it runs."""
        return self.health.stopped

    def judge(self, result: FileResult, began: float) -> Optional[str]:
        """The reason the job must stop, once, when ``result`` proves it (see ``fatal``)."""
        reason = self.health.observe(result, began)
        if reason is not None:
            self.transferer.halted.set()
        return reason

    def stop(self, reason: str) -> None:
        self.health.stop(reason)
        self.transferer.halted.set()

    def close(self) -> None:
        """Release the drivers' connections, once no file of this runtime is in flight."""
        self.transferer.source.close()
        self.transferer.destination.close()

    def run_one(self, entry: ObjectEntry, task_dir: Path, relist: bool = False,
                sending: Optional[Callable[[int], None]] = None) -> FileResult:
        if entry.refused:
            # Refused by the listing. Only a key the source lacked or could not read (SOURCE_*)
            # may be there now; a FIFO or a key out of bounds stays what it was.
            if not (relist and entry.refused.startswith(SOURCE_REFUSALS)):
                return refused_result(entry)
            entry = dataclasses.replace(entry, refused=None)
        if relist:
            # A retried task copies the file as it is now: the listing that made the task may
            # be days old, and the retry is what an operator runs once the file is stable.
            try:
                now = self.transferer.stat_source(entry)
            except OSError as exc:  # e.g. its folder lost its permissions since the listing
                return FileResult(entry.key, Outcome.FAILED,
                                  detail=f"{SOURCE_NOT_READABLE}: cannot look at the source file: "
                                         f"{exc.strerror or exc}", code=SOURCE_NOT_READABLE)
            except RequestFailed as exc:  # the source's store did not answer: judged as a copy's
                return FileResult(entry.key, Outcome.FAILED, detail=exc.describe(), code=exc.reason_code,
                                  cause=exc)
            if now is None:
                self.transferer.abandon_upload(entry, task_dir)  # it can never be completed now
                return FileResult(entry.key, Outcome.FAILED, detail=f"{SOURCE_NOT_EXIST}: source file does not exist",
                                  code=SOURCE_NOT_EXIST)
            if now.refused:  # a FIFO now, or unreadable: said as the listing would say it
                self.transferer.abandon_upload(entry, task_dir)
                return refused_result(now)
            # replace(), not a new entry: an http list's entry carries its URL in ``src``.
            entry = dataclasses.replace(entry, size=now.size, mtime=now.mtime, crc64=now.crc64, md5=now.md5,
                                        etag=now.etag, headers=now.headers)
        if self.audit_only:
            if self.listing_audit is not None:  # checked with the task's other files when it ends
                return FileResult(entry.key, Outcome.SUCCEED, size=entry.size, copied=entry)
            return self.transferer.audit(entry, self.audit_mode)
        result = self.transferer.copy(entry, task_dir, sending)
        if self.audit_after_import and result.outcome == Outcome.SUCCEED:
            if result.size != entry.size:  # a listing without sizes (http): the copy learnt it
                entry = dataclasses.replace(entry, size=result.size)
            if self.listing_audit is not None:
                result.copied = entry  # checked with the task's other copies when it ends
                return result
            check = self.transferer.audit(entry, self.audit_mode)
            if not check.ok:
                check.audit = audit_verdict(check)
                return check
            result.audit = AUDIT_MATCH
        return result


@dataclass
class TaskRun:
    runtime: JobRuntime
    task: Task
    folder: Path
    counts: TaskCounts
    remaining: int
    errors: list = field(default_factory=list)  # (key, detail)
    skips: list = field(default_factory=list)  # (key, detail) of entries that are not files
    aborted: bool = False
    relist: bool = False  # a retried task: stat each source file again before copying
    lock: threading.Lock = field(default_factory=threading.Lock)
    audit_file: object = None
    records_file: object = None  # objects.jsonl (records), written beside audit.log
    # Entries whose copy succeeded (an audit job: every file) and awaits the task's listing
    # audit (JobRuntime.listing_audit), those of earlier runs of the task included.
    copied: list = field(default_factory=list)
    flush_failed: bool = False  # its audit.log could not be written at a tick (said once)


class Worker:
    """A pool of ``threads`` transfer threads running the files of every submitted task."""

    def __init__(self, threads: int, on_task_finished: Callable[[str, str, Path, bool], None],
                 host: str = "localhost", on_job_stopped: Optional[Callable[[JobRuntime, str], None]] = None):
        self.threads = max(1, threads)
        self.host = host
        self.on_task_finished = on_task_finished
        # (runtime, reason) once a job's files prove it cannot work: the service or agent records it.
        self.on_job_stopped = on_job_stopped
        # (run, iterator of its files to copy), in the order the tasks came: the transfer threads
        # take the next file from the first. The entries are the tasks' own (already in memory).
        self._work: deque = deque()
        self._stop = threading.Event()
        self._transfer_threads: dict = {}  # index -> Thread; thread i runs while i < self.threads
        self._lock = threading.Lock()
        self._work_ready = threading.Condition(self._lock)
        self._runs: dict = {}  # (job, task_id) -> TaskRun
        self.failure_log = FailureLog(log)
        # File starts per second (workerMaxQps, the share of jobMaxQps): stores throttle by
        # requests as well as bytes. The service or agent sets its rate; 0 = no cap.
        self.starts = Throttle(0, min_burst=1)

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        self.resize(self.threads)

    def resize(self, threads: int) -> None:
        """Change the pool live (workerTaskThreadNum edited in sys.properties): new threads
        start at once; surplus ones end after the file they are copying."""
        with self._lock:
            self.threads = max(1, threads)
            for i in range(self.threads):
                if i not in self._transfer_threads:
                    t = threading.Thread(target=self._transfer_loop, args=(i,), name=f"transfer-{i}", daemon=True)
                    self._transfer_threads[i] = t
                    t.start()

    def stop(self, wait: float = 5.0) -> None:
        self._stop.set()
        deadline = time.monotonic() + wait
        with self._work_ready:
            self._work_ready.notify_all()
        for t in list(self._transfer_threads.values()):
            if t is not None:
                t.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            runs = list(self._runs.values())
        for run in runs:
            self._close_audit(run)
        self.failure_log.flush(every_job=True)

    # -- work intake ----------------------------------------------------------------------
    def running(self, job_name: str) -> list:
        with self._lock:
            return [tid for (job, tid) in self._runs if job == job_name]

    def backlog(self) -> int:
        """Files accepted but not finished: the tracker keeps this near a few per thread."""
        with self._lock:
            return sum(r.remaining for r in self._runs.values())

    def submit(self, runtime: JobRuntime, folder: Path) -> None:
        task = TaskFolder(folder).read_task()
        key = (runtime.name, task.task_id)
        with self._lock:
            if key in self._runs:
                return
        done = finished_results(TaskFolder(folder).audit_log, {o.key for o in task.objects})
        counts = TaskCounts(files=len(task.objects), bytes=task.total_bytes)
        todo, skips, copied = [], [], []
        for entry in task.objects:
            result = done.get(entry.key)
            if result is None:
                todo.append(entry)
                continue
            if result.outcome == Outcome.SUCCEED and runtime.listing_audit is not None:
                # Copied by a run that may have ended before its task's audit: audited again.
                copied.append(entry)
            # Done in an earlier run of this task (interrupted, or failed and retried): counted
            # again, and an entry that is not a file listed again, since this run writes the
            # task's results. (The listing refused it, or a retry found it a FIFO by then.)
            if _not_a_file(result):
                skips.append((entry.key, result.detail))
            counts.add(entry.size, result)
        run = TaskRun(runtime=runtime, task=task, folder=folder, counts=counts, remaining=len(todo),
                      skips=skips, relist=retry_count(folder) > 0, copied=copied)
        run.audit_file = append_on_a_fresh_line(TaskFolder(folder).audit_log)
        run.records_file = append_on_a_fresh_line(TaskFolder(folder).objects_log)
        with self._lock:
            self._runs[key] = run
        runtime.account.task_started(task.task_id, counts)
        if done:
            log.info("task %s: resuming, %d of %d files already done", task.task_id, len(done), len(task.objects))
        if not todo:
            self._finish(run)
            return
        with self._work_ready:
            self._work.append((run, iter(todo)))
            self._work_ready.notify(len(todo))

    def _next_file(self) -> Optional[tuple]:
        """(run, entry) of the next file to copy, None after a while without one. A queue fed by
        a thread of its own cost a fifth of a small-file job's CPU in its condition waits."""
        with self._work_ready:
            while True:
                while self._work:
                    run, files = self._work[0]
                    entry = next(files, None)
                    if entry is not None:
                        return run, entry
                    self._work.popleft()
                if self._stop.is_set() or not self._work_ready.wait(0.2):
                    return None

    # -- transfer threads -----------------------------------------------------------------
    def _transfer_loop(self, index: int) -> None:
        while not self._stop.is_set():
            with self._lock:
                if index >= self.threads:  # the pool shrank: this slot ends, resize may refill it
                    self._transfer_threads.pop(index, None)
                    return
            item = self._next_file()
            if item is None:
                continue
            run, entry = item
            self.starts.consume(1)
            if self._stop.is_set():
                return  # never started: the task runs this file on restart
            began = time.monotonic()
            result = self._run_file(run, entry)
            if self._stop.is_set():
                return  # interrupted mid-file: the task resumes this file on restart
            try:
                self._judge(run, result, began)
            except Exception:  # noqa: BLE001 - e.g. the job was cleaned meanwhile; the file still counts
                log.exception("job %s: could not record that it stopped", run.runtime.name)
            try:
                self._record(run, entry, result, time.monotonic() - began)
            except Exception:  # noqa: BLE001 - e.g. the task folder vanished; keep the thread
                log.exception("task %s: could not record %s", run.task.task_id, entry.key)

    def _run_file(self, run: TaskRun, entry: ObjectEntry) -> FileResult:
        stopped = run.runtime.stopped
        if stopped is not None:
            # Every queued file would fail the same way, slowly: each ends now, without a
            # request, in error.list, so that a retry once it is fixed sends it.
            return FileResult(entry.key, Outcome.FAILED,
                              detail=f"{JOB_STOPPED}: not tried: the job stopped: {stopped}", code=JOB_STOPPED)
        if run.aborted:
            return FileResult(entry.key, Outcome.FAILED, detail="task aborted after an unexpected error "
                              "(workerAbortWhenUncatchedException=true)", code=OTHER_FAILURE)
        sending = run.runtime.account.file_sending(run.task.task_id)
        try:
            return run.runtime.run_one(entry, run.folder, run.relist, sending.add)
        except OperatorError as exc:
            # A destination or source that refuses the whole job: the file fails with the
            # reason (logged by _record, rate-limited); the operator fixes the config and retries.
            return FileResult(entry.key, Outcome.FAILED, detail=str(exc), code=failure_reason_code(exc),
                              cause=exc)
        except Exception as exc:  # noqa: BLE001 - a bug must fail the file, not the worker
            log.exception("task %s: unexpected error on %s", run.task.task_id, entry.key)
            if run.runtime.abort_on_unexpected:
                run.aborted = True
            return FileResult(entry.key, Outcome.FAILED, detail=f"unexpected error: {type(exc).__name__}: {exc}",
                              code=failure_reason_code(exc))
        finally:
            run.runtime.account.file_sent(sending)

    def _judge(self, run: TaskRun, result: FileResult, began: float) -> None:
        """Stop the job when this result proves it cannot work. Called before the file is
        recorded, so its task is still running while the stop is recorded: nothing sees the
        job stopped and not yet marked with nothing running."""
        reason = run.runtime.judge(result, began)
        if reason is None:
            return
        log.error("job %s stopped: %s", run.runtime.name, reason)
        if self.on_job_stopped is not None:
            self.on_job_stopped(run.runtime, reason)

    def _record(self, run: TaskRun, entry: ObjectEntry, result: FileResult, seconds: float = 0.0) -> None:
        line = audit_line(result)
        audit_only = run.runtime.audit_only
        # An audit job's file is its audit, unless the listing audit checks it when the task ends.
        verdict = result.audit or (audit_verdict(result) if audit_only and result.copied is None else "")
        record = result_line(entry, result, verdict, copy=not audit_only, seconds=seconds)
        with run.lock:
            run.audit_file.write(line)  # flushed within a tick: stat and errors see it then
            run.records_file.write(record)
            run.counts.add(result.size or entry.size, result)
            if result.copied is not None:
                run.copied.append(result.copied)
            if not result.ok:
                run.errors.append((entry.key, result.detail))
            elif _not_a_file(result):
                run.skips.append((entry.key, result.detail))
            run.remaining -= 1
            last = run.remaining == 0
        run.runtime.account.file_done()
        if not result.ok:
            self.failure_log.failed(run.runtime.name, run.task.task_id, entry.key, result.code, result.detail)
        if last:
            self._finish(run)

    def flush_audit_logs(self) -> None:
        """What the running tasks logged reaches their audit.log (see append_on_a_fresh_line)."""
        with self._lock:
            runs = list(self._runs.values())
        for run in runs:
            with run.lock:
                if run.audit_file is not None and not run.audit_file.closed:
                    try:
                        run.audit_file.flush()
                        run.records_file.flush()
                    except OSError as exc:  # e.g. the disk is full: said once; the task's end tries again
                        if not run.flush_failed:
                            log.error("task %s: cannot write its audit.log: %s", run.task.task_id, exc)
                        run.flush_failed = True

    def _close_audit(self, run: TaskRun) -> None:
        with run.lock:
            if run.audit_file is not None and not run.audit_file.closed:
                run.audit_file.close()
                run.records_file.close()

    def _audit_copies(self, run: TaskRun) -> None:
        """The task's copies (an audit job's files) checked against the destination's listing
        (audit.ListingAudit). A file whose check fails is recorded again, as the failed check:
        its last line in audit.log is its result. An import stopped on a fatal error is not
        listed: its copies stay proven by their writes' answers, and the retry's run of the task
        audits them; an audit job's files have no other proof."""
        runtime = run.runtime
        if runtime.listing_audit is None or not run.copied:
            return
        if runtime.stopped is not None and not runtime.audit_only:
            return
        try:
            failed = [r for r in runtime.listing_audit.check(run.copied) if not r.ok]
        except OperatorError as exc:  # e.g. the keys were revoked since the copies
            failed = [FileResult(e.key, Outcome.FAILED, detail=str(exc), code=failure_reason_code(exc))
                      for e in run.copied]
        entries = {e.key: e for e in run.copied}
        failed_keys = set()
        for check in failed:
            failed_keys.add(check.key)
            entry = entries[check.key]
            with run.lock:
                run.audit_file.write(audit_line(check))
                run.records_file.write(result_line(entry, check, audit_verdict(check), copy=not runtime.audit_only))
                run.counts.recount(entry.size, check)
                run.errors.append((check.key, check.detail))
            self.failure_log.failed(runtime.name, run.task.task_id, check.key, check.code, check.detail)
        with run.lock:
            run.records_file.writelines(audit_record_line(e.key, AUDIT_MATCH) for e in run.copied
                                        if e.key not in failed_keys)

    def _finish(self, run: TaskRun) -> None:
        self._audit_copies(run)
        self._close_audit(run)
        folder = run.folder
        ok = run.counts.failed == 0
        TaskFolder(folder).write_results(ok, vars(run.counts), "".join(list_line(k, d) for k, d in run.errors),
                                         "".join(list_line(k, d) for k, d in run.skips))
        with self._lock:
            self._runs.pop((run.runtime.name, run.task.task_id), None)
            job_idle = not any(job == run.runtime.name for job, _ in self._runs)
        if job_idle:  # the job's failures folded so far are said now, not at the window's end
            self.failure_log.flush(run.runtime.name)
        run.runtime.account.task_finished(run.task.task_id)
        log.info("task %s of job %s: %s (%d ok, %d skipped, %d failed)", run.task.task_id, run.runtime.name,
                 STATUS_COMPLETED if ok else STATUS_FAILED, run.counts.succeed, run.counts.skipped, run.counts.failed)
        self.on_task_finished(run.runtime.name, run.task.task_id, folder, ok)

