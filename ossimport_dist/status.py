"""A job's status, computed in one place: ``stat``, ``stat --json``, ``import.sh`` and the
per-host view all read the ``JobStatus`` made here.

The status is read from the state tree (finished task folders' COUNTS, the scan's checkpoints,
the live ``progress.json`` the service writes once a second, ``master/hosts/<host>.json``), never
from the service's memory, so it is the same whoever asks and survives the service. Once the
service is gone (stopped, or killed), running tasks are counted from their audit.log, the
durable record written line by line; a task whose folder is on another host (distributed, the
master gone) from the last progress.json, said with its time.
``docs/stat-json.md`` documents the JSON form and ``docs/stat.schema.json`` is its schema.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from typing import Optional

from . import config as config_mod
from .accounting import SENDING_KEY, read_counts, read_progress, recount
from .errors import OperatorError
from .layout import (AUDIT_LOG, DAMAGED_FILE, DAMAGED_LIST, ERROR_LIST, FAILED_DIR, Home, JobLayout, damaged_reason,
                     job_shown_root, parse_finished_name)
from .models import reasons_text
from .scanner import scanned_totals
from .schedule import Timetable

# JobState words, as OssImport's stat writes them.
SUBMITTED, RUNNING, SUCCEED, FAILED, ABORT = "Submitted", "Running", "Succeed", "Failed", "Abort"
STATES = (SUBMITTED, RUNNING, SUCCEED, FAILED, ABORT)

# console.sh stat's exit codes (README, "Exit codes"): a script tells the outcome without parsing.
EXIT_SUCCEED, EXIT_FAILED, EXIT_USAGE, EXIT_RUNNING = 0, 1, 2, 3
STATE_EXIT = {SUCCEED: EXIT_SUCCEED, FAILED: EXIT_FAILED, ABORT: EXIT_FAILED,
              RUNNING: EXIT_RUNNING, SUBMITTED: EXIT_RUNNING}

SCHEMA_ID = "ossimport-dist/stat/1"
STAT_SHOWN = 5  # Reason: and Damaged: lines stat prints before pointing at the files
HOST_FRESH_S = 30.0  # a host's status file older than this (or no master running) is not news


@dataclass
class Totals:
    """Files and bytes by outcome, finished tasks and running ones together."""

    succeed: int = 0
    succeed_bytes: int = 0
    skipped: int = 0
    skipped_bytes: int = 0
    failed: int = 0
    failed_bytes: int = 0
    differ: int = 0
    missing: int = 0
    not_regular: int = 0

    def add(self, counts: dict) -> None:
        """Add one task's counts: a COUNTS file's (checked when read) or progress.json's, another
        process's file, where a figure that is not a count (a hand edit) is left out."""
        for name in vars(self):
            value = counts.get(name, 0)
            if type(value) is int and value > 0:
                setattr(self, name, getattr(self, name) + value)

    @property
    def done_files(self) -> int:
        return self.succeed + self.skipped

    @property
    def done_bytes(self) -> int:
        return self.succeed_bytes + self.skipped_bytes


@dataclass
class HostTotals:
    """One host's finished tasks of a job (from the finished folders' names and COUNTS)."""

    done_tasks: int = 0
    failed_tasks: int = 0
    bytes: int = 0


@dataclass
class Incremental:
    round: int
    next_at: Optional[float]
    gone: int
    gone_files: str


@dataclass
class JobStatus:
    name: str
    job_type: str
    state: str
    pending_tasks: int
    dispatched_tasks: int
    succeed_tasks: int
    failed_tasks: int
    damaged_tasks: int
    scan_finished: bool
    objects: int  # listed so far (all of them once scan_finished)
    bytes: int
    totals: Totals
    sending_bytes: int  # of files being copied now, not yet done: bytes read for their upload
    running_as_of: Optional[float]  # running tasks counted from a progress.json this old (master gone)
    bytes_per_s: float
    files_per_s: float
    eta_s: Optional[float]  # while Running with a finished scan and a rate; else None
    reasons: list  # one line each: why the job cannot go on (scan gave up, damaged TASKs)
    scan_error: str  # the last listing error being retried, "" when none
    scan_failed: bool
    job_stopped: bool  # stopped on a fatal error (bucket gone, keys refused...): reasons[0] says which
    damaged: list  # state files found damaged and what was done about them
    hint: str  # what the operator does next, "" when nothing
    by_host: dict = field(default_factory=dict)  # host -> HostTotals
    incremental: Optional[Incremental] = None
    # Failed files by reason code (FileResult.code), finished and running tasks, largest first.
    failed_by_reason: dict = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return STATE_EXIT[self.state]

    def to_json(self) -> dict:
        doc = dataclasses.asdict(self)
        doc["totals"].update(done_files=self.totals.done_files, done_bytes=self.totals.done_bytes)
        return doc


@dataclass
class HostRow:
    """One worker host as the master last saw it, with its finished work over the jobs shown."""

    host: str
    fresh: bool  # the master is running and polled the host within HOST_FRESH_S
    reachable: Optional[bool]
    agent_alive: Optional[bool]
    running_tasks: int
    done_tasks: int
    failed_tasks: int
    bytes: int
    bytes_per_s: Optional[float]
    draining: bool
    error: str


def job_status(home: Home, job: JobLayout, service_running: bool) -> JobStatus:
    pending = len(job.pending_ids())
    dispatched = sum(len(job.dispatched_ids(h)) for h in job.dispatched_hosts())
    succeed_dirs, failed_dirs = job.succeed_dirs(), job.failed_dirs()
    totals, by_host, finished_ids, reasons = Totals(), {}, set(), {}
    for d in succeed_dirs + failed_dirs:
        task_id, _, host = parse_finished_name(d.name)
        finished_ids.add(task_id)
        counts = read_counts(d)
        totals.add(vars(counts))
        _add_reasons(reasons, counts.reasons)
        row = by_host.setdefault(host, HostTotals())
        if d.parent == job.succeed:
            row.done_tasks += 1
        else:
            row.failed_tasks += 1
        row.bytes += counts.succeed_bytes
    objects, size, _ = scanned_totals(job)
    progress = read_progress(job.stats_file)
    running, as_of = _running_counts(job, progress, service_running, finished_ids)
    for counts in running:
        totals.add(counts)
        _add_reasons(reasons, counts.get("reasons"))
    # Never above what is left: a file that finished between two reads is not shown twice.
    sending = min(sum(c[SENDING_KEY] for c in running if type(c.get(SENDING_KEY)) is int),
                  max(0, size - totals.done_bytes - totals.failed_bytes))
    if not service_running:
        progress = {}  # a dead service's rate is not a rate, nor is anything being sent
    scan_done = job.scan_finished
    scan_failure, job_failure = job.scan_failure(), job.job_failure()
    state = _state(job, service_running, scan_done, scan_failure or job_failure, pending, dispatched,
                   bool(succeed_dirs), bool(failed_dirs))
    damaged_tasks = [r for r in map(damaged_reason, failed_dirs) if r]
    bytes_per_s = float(progress.get("bytes_per_s", 0.0) or 0.0)
    eta = None
    if state == RUNNING and scan_done and bytes_per_s > 0:
        eta = max(0.0, size - totals.done_bytes - totals.failed_bytes - sending) / bytes_per_s
    return JobStatus(
        name=job.name, job_type=_job_type(job), state=state, pending_tasks=pending, dispatched_tasks=dispatched,
        succeed_tasks=len(succeed_dirs), failed_tasks=len(failed_dirs), damaged_tasks=len(damaged_tasks),
        scan_finished=scan_done, objects=objects, bytes=size, totals=totals,
        sending_bytes=sending if service_running else 0, running_as_of=as_of, bytes_per_s=bytes_per_s,
        files_per_s=float(progress.get("files_per_s", 0.0) or 0.0), eta_s=eta,
        reasons=[r for r in (job_failure, scan_failure) if r is not None] + damaged_tasks,
        scan_error=job.scan_error(), scan_failed=scan_failure is not None, job_stopped=job_failure is not None,
        damaged=job.damaged_files(),
        hint=_hint(job.name, state, len(failed_dirs) - len(damaged_tasks), scan_failure is not None,
                   job_failure is not None),
        by_host=by_host, failed_by_reason=_largest_first(reasons),
        incremental=_incremental(job) if job.round_file.exists() or job.round_dir(0).is_dir() else None)


def _add_reasons(into: dict, reasons) -> None:
    """Add one task's failures by code; progress.json is another process's file, read as such."""
    if not isinstance(reasons, dict):
        return
    for code, n in reasons.items():
        if isinstance(code, str) and type(n) is int and n > 0:
            into[code] = into.get(code, 0) + n


def _largest_first(reasons: dict) -> dict:
    return dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])))


def _running_counts(job: JobLayout, progress: dict, service_running: bool, finished_ids: set) -> tuple:
    """(counts of each running task, the time of the progress.json they came from or None).

    While the service runs, its progress.json (files and the bytes being sent, once a second).
    Once it is gone, the dispatched tasks' audit.logs: written line by line, they hold every
    file done up to the moment it died. A task whose folder is not on this machine (a worker
    host, the master gone) keeps the last progress.json's counts, said as of its time."""
    live = progress.get("running", {}) if isinstance(progress.get("running"), dict) else {}
    # Files of a task now failed and retried were counted in its failed folder, which retry
    # removed, so adding running counts never counts a file twice.
    if service_running:
        return [c for tid, c in live.items() if tid not in finished_ids and isinstance(c, dict)], None
    counts, stale = [], False
    for host in job.dispatched_hosts():
        for task_id in job.dispatched_ids(host):
            folder = job.worker_tasks / task_id
            if task_id in finished_ids:
                continue
            if (folder / AUDIT_LOG).is_file():
                counts.append(vars(recount(folder)))
            elif isinstance(live.get(task_id), dict):
                counts.append(live[task_id])
                stale = True
    as_of = progress.get("time") if stale and isinstance(progress.get("time"), (int, float)) else None
    return counts, as_of


def _state(job: JobLayout, service_running: bool, scan_done: bool, stopped_by: Optional[str],
           pending: int, dispatched: int, any_succeed: bool, any_failed: bool) -> str:
    if stopped_by is not None and dispatched == 0:
        # A scan that gave up leaves part of the source unlisted: never Succeed. Pending tasks
        # of a job that could not even load, or that stopped on a fatal error, wait for a retry.
        return FAILED
    if scan_done and pending == 0 and dispatched == 0:
        return FAILED if any_failed else SUCCEED
    if service_running:
        return RUNNING
    if not any(job.checkpoints.glob("*.cpt")) and not any_succeed and not any_failed:
        return SUBMITTED
    return ABORT


def _hint(name: str, state: str, retryable_tasks: int, scan_failed: bool, job_stopped: bool) -> str:
    if state == ABORT:
        return (f"the service is not running (stopped, or killed); 'console.sh start' or 'bash import.sh' "
                f"resumes job {name} where it stopped")
    if state == SUBMITTED:
        return f"'console.sh start' runs job {name}"
    if state == FAILED and job_stopped:
        return (f"fix what the Reason says, then 'console.sh retry {name}' sends the files not copied "
                f"(the job's other tasks wait in pending_tasks/)")
    if state == FAILED and (retryable_tasks or scan_failed):
        return (f"once the cause is fixed, 'console.sh retry {name}' runs the failed tasks again "
                f"(only their failed files are sent)" if retryable_tasks else
                f"once the source answers, 'console.sh retry {name}' resumes the scan")
    return ""


def _job_type(job: JobLayout) -> str:
    try:
        return config_mod.load_job(job.config_file).job_type
    except OperatorError:
        return "import"


def _incremental(job: JobLayout) -> Incremental:
    state = job.round_state()
    gone = 0
    round_dir = job.round_dir(state["round"])
    if state["round"] > 0 and round_dir.is_dir():
        for p in round_dir.glob("*.deleted"):
            with open(p, "rb") as f:
                gone += sum(1 for _ in f)
    return Incremental(round=state["round"], next_at=state["next_at"], gone=gone,
                       gone_files=str(round_dir.relative_to(job.home.root)) + "/*.deleted")


def host_rows(home: Home, hosts: list, statuses: list, master_running: bool) -> list:
    """One HostRow per worker host: the master's last poll of it, and its finished work in
    ``statuses`` (the jobs being shown)."""
    rows = []
    now = time.time()
    for host in hosts:
        doc = _read_host_file(home, host.name)
        fresh = bool(master_running and doc and now - doc.get("time", 0) < HOST_FRESH_S)
        finished = HostTotals()
        for s in statuses:
            mine = s.by_host.get(host.name)
            if mine is not None:
                finished.done_tasks += mine.done_tasks
                finished.failed_tasks += mine.failed_tasks
                finished.bytes += mine.bytes
        rows.append(HostRow(
            host=str(host), fresh=fresh,
            reachable=bool(doc.get("reachable")) if fresh else None,
            agent_alive=bool(doc.get("agent_alive")) if fresh else None,
            running_tasks=int(doc.get("running_tasks", 0) or 0) if fresh else 0,
            done_tasks=finished.done_tasks, failed_tasks=finished.failed_tasks, bytes=finished.bytes,
            bytes_per_s=float(doc.get("bytes_per_s", 0.0) or 0.0) if fresh else None,
            draining=bool(doc.get("draining")), error=str(doc.get("error") or "")))
    return rows


def _read_host_file(home: Home, host_name: str) -> dict:
    try:
        doc = json.loads(home.host_status_file(host_name).read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def overall_exit_code(statuses: list) -> int:
    """Failed or Abort anywhere wins, then anything unfinished, else Succeed."""
    codes = {s.exit_code for s in statuses}
    for code in (EXIT_FAILED, EXIT_RUNNING):
        if code in codes:
            return code
    return EXIT_SUCCEED if statuses else EXIT_USAGE


def stat_document(statuses: list, rows: Optional[list], service_running: bool,
                  timetable: Optional[Timetable] = None) -> dict:
    """``console.sh stat --json``: the whole status as one object (docs/stat-json.md)."""
    now = time.time()
    return {"schema": SCHEMA_ID, "time": now, "service_running": service_running,
            "exit_code": overall_exit_code(statuses),
            "jobs": [s.to_json() for s in statuses],
            "hosts": [dataclasses.asdict(r) for r in rows] if rows is not None else None,
            "throughput_schedule": schedule_document(timetable, now) if timetable is not None else None}


def schedule_document(timetable: Timetable, now: float) -> dict:
    current, following, wait = timetable.slot_at(now)
    return {"slots": [[slot.clock, slot.kbs] for slot in timetable.slots], "now_kbs": current.kbs,
            "since": current.clock, "next_kbs": following.kbs, "next_at": following.clock, "seconds_to_next": wait}


# -- the words of 'console.sh stat' -------------------------------------------------------------
def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def human_duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def format_stat(s: JobStatus) -> str:
    t = s.totals
    lines = [
        f"JobName:{s.name}",
        f"Pending Task Count:{s.pending_tasks}",
        f"Dispatched Task Count:{s.dispatched_tasks}",
        f"Succeed Task Count:{s.succeed_tasks}",
        f"Failed Task Count:{s.failed_tasks}",
        f"Is Scan Finished:{'true' if s.scan_finished else 'false'}",
        f"JobState:{s.state}",
    ]
    scanned = "" if s.scan_finished else " (scan in progress)"
    not_regular = (f" ({t.not_regular} not a regular file: 'console.sh errors {s.name}' lists them)"
                   if t.not_regular else "")
    lines.append(f"Files:{t.done_files}/{s.objects}{scanned} done, succeed {t.succeed}, "
                 f"skipped {t.skipped}{not_regular}, failed {t.failed}")
    # Done means copied or skipped: bytes that failed are not done, they are said apart.
    pct = f" ({100.0 * t.done_bytes / s.bytes:.1f}%)" if s.bytes else ""
    # Sending: read for uploads not finished yet; it becomes done (or failed) with its file.
    sending = f"sending {human_bytes(s.sending_bytes)}, " if s.state == RUNNING else ""
    lines.append(f"Bytes:{human_bytes(t.done_bytes)}/{human_bytes(s.bytes)}{pct} done, {sending}"
                 f"failed {human_bytes(t.failed_bytes)}")
    if s.failed_by_reason:
        lines.append(f"Failed by reason: {reasons_text(s.failed_by_reason)}")
    if s.running_as_of is not None:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s.running_as_of))
        lines.append(f"Running Tasks:counted as of {when}, the last report of their hosts before the "
                     f"master stopped (their audit.log on each host has the rest)")
    if s.state == RUNNING:
        eta = human_duration(s.eta_s) if s.eta_s is not None else "unknown"
        lines.append(f"Rate:{human_bytes(s.bytes_per_s)}/s, {s.files_per_s:.0f} files/s, ETA:{eta}")
    inc = s.incremental
    if inc is not None:
        when = (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(inc.next_at)) if inc.next_at
                else "after this round")
        lines.append(f"Incremental:round {inc.round}, next rescan {when}; {inc.gone} object(s) gone from "
                     f"the source since the round before (listed in {inc.gone_files}, never deleted "
                     f"at the destination)")
    if s.job_type == "audit":
        unread = t.failed - t.differ - t.missing
        lines.append(f"Audit:{t.succeed} match, {t.differ} differ, {t.missing} missing at the destination"
                     + (f", {unread} could not be read" if unread else "")
                     + (f"; which and how: {FAILED_DIR}/*/{ERROR_LIST}" if t.failed else ""))
    if s.scan_error:
        lines.append(f"Scan Error:{s.scan_error}")
    lines.extend(f"Reason:{reason}" for reason in s.reasons[:STAT_SHOWN])
    lines.extend(f"Damaged:{damaged}" for damaged in s.damaged[:STAT_SHOWN])
    more = max(0, len(s.reasons) - STAT_SHOWN) + max(0, len(s.damaged) - STAT_SHOWN)
    if more:
        lines.append(f"More:{more} more not shown: {job_shown_root(s.name)}/{DAMAGED_LIST} and "
                     f"{FAILED_DIR}/*/{DAMAGED_FILE}")
    if s.failed_tasks:
        lines.append(f"Errors:see {job_shown_root(s.name)}/{FAILED_DIR}/*/{ERROR_LIST}; "
                     f"'console.sh errors {s.name}' gathers them")
    if s.hint:
        lines.append(f"Next:{s.hint}")
    return "\n".join(lines)


HOST_HEADER = "Host                     Reachable Agent Running Done Failed      Bytes       Rate  Note"


def format_hosts(rows: list) -> str:
    def word(flag: Optional[bool], yes: str, no: str) -> str:
        return "?" if flag is None else yes if flag else no

    lines = [HOST_HEADER]
    for r in rows:
        rate = human_bytes(r.bytes_per_s) + "/s" if r.bytes_per_s is not None else "-"
        note = "draining" if r.draining else r.error
        lines.append(f"{r.host:<24} {word(r.reachable, 'yes', 'no'):>9} {word(r.agent_alive, 'alive', 'dead'):>5} "
                     f"{r.running_tasks:>7} {r.done_tasks:>4} {r.failed_tasks:>6} "
                     f"{human_bytes(r.bytes):>10} {rate:>10}  {note}".rstrip())
    return "\n".join(lines)
