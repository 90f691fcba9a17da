"""The on-disk state tree, exactly as OssImport lays it out, and the only code that moves tasks.

    <workingDir>/
      logs/                                   ossimport2.log, job_stat.log, submit.log, ... (0600)
      master/service.lock                     held by the one service of this workingDir (servicelock)
      master/ossimport.pid                    that service's pid
      master/jobqueue/<job>                   jobs whose source is not fully split yet
      master/jobs/<job>/job.cfg               the submitted (frozen) job configuration, mode 0600
      master/jobs/<job>/checkpoints/0/<hex>.cpt   how far each scan unit has listed
      master/jobs/<job>/pending_tasks/<taskid>/TASK
      master/jobs/<job>/dispatched/<host>/<taskid>/TASK
      master/jobs/<job>/succeed_tasks/<taskid>_<epochms>@<host>/{TASK,audit.log,error.list,STATUS,DONE,COUNTS}
                                              (+ skipped.list when entries were not regular files)
      master/jobs/<job>/failed_tasks/<taskid>_<epochms>@<host>/{TASK,audit.log,error.list,STATUS,COUNTS}
                                              (TASK.corrupt + DAMAGED when its TASK could not be read)
                                              (+ multipart/<sha1 of key>.json per open upload)
      master/jobs/<job>/scan.error            the last transient scan problem (the scan retries)
      master/jobs/<job>/scan.failed           why the scan or the job's load gave up: Failed until retry
      master/jobs/<job>/job.failed            why the job stopped on a fatal error (keys refused, bucket
                                              gone, endpoint dead): nothing dispatched until retry
      master/jobs/<job>/damaged.list          state files found damaged, and what was done about each
      master/jobs/<job>/abandoned_uploads/*.json   checkpoints of dropped late results (clean aborts them)
      worker/jobs/<job>/tasks/<taskid>/       a task a worker runs (TASK, then its results; its audit.log
                                              has a line per file as it finishes: failures show at once)

A damaged state file (empty, truncated, not text, JSON of the wrong shape) is renamed
``<name>.corrupt`` beside where it was, never deleted and never read again.

A task's life: pending -> dispatched/<host> -> succeed | failed -> pending (retry). Every move is
one ``os.rename`` of a directory (atomic on one filesystem), so a crash leaves each task in
exactly one state, or (between two renames of a finish) in two places that ``reconcile`` mends.

A task folder carries its history wherever it goes (``TASK_INPUTS``): the audit.log says which
files are done, the multipart checkpoints which parts are uploaded. A retry keeps both and drops
only the results of the run that ended (``RUN_RESULTS``), so it re-runs only the files that
failed and resumes their uploads, on whichever host runs it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path, PurePath, PurePosixPath
from typing import Iterator, Optional

from .config import JOB_NAME_RULE, is_job_name
from .errors import StateError
from .models import ObjectEntry, Task

# The folders of the tree, named once: every module spells a path through these.
MASTER_DIR = "master"
WORKER_DIR = "worker"
LOGS_DIR = "logs"
JOBS_DIR = "jobs"  # master/jobs/<job>/ and worker/jobs/<job>/
TASKS_DIR = "tasks"  # worker/jobs/<job>/tasks/<taskid>/
PENDING_DIR = "pending_tasks"
DISPATCHED_DIR = "dispatched"
SUCCEED_DIR = "succeed_tasks"
FAILED_DIR = "failed_tasks"
INCOMING_DIR = ".incoming"  # a task folder being pulled home from a worker host
# The configuration files: conf/ of the install folder holds the operator's; a job's frozen copy
# and a worker host's pushed copies carry the same names.
CONF_DIR = "conf"
SYS_PROPERTIES = "sys.properties"
JOB_CONFIG = "job.cfg"
LOCAL_JOB_CONFIG = "local_job.cfg"

TASK_FILE = "TASK"
AUDIT_LOG = "audit.log"
OBJECTS_LOG = "objects.jsonl"  # what was proven of each file (records), for the job report
REPORT_DIR = "report"
ERROR_LIST = "error.list"
SKIPPED_LIST = "skipped.list"  # entries listed but not copied: not regular files, with why
STATUS_FILE = "STATUS"
DONE_FILE = "DONE"
COUNTS_FILE = "COUNTS"
RETRIES_FILE = "RETRIES"  # how many times the task was retried; a retried task re-reads its sources
# In a failed task whose TASK could not be read nor rebuilt from another copy: why, and what to do.
DAMAGED_FILE = "DAMAGED"
CORRUPT_SUFFIX = ".corrupt"  # a damaged state file is renamed <name>.corrupt, kept but never read
# Per job: the last transient scan (or load) problem, cleared by the next good scan; the reason
# the scan gave up (the job is Failed until 'console.sh retry' removes it); damaged state files.
SCAN_ERROR_FILE = "scan.error"
SCAN_FAILED_FILE = "scan.failed"
# Why the job stopped on an error no retry of another file can fix: no task is dispatched, and
# the job ends Failed, until 'console.sh retry' removes it.
JOB_FAILED_FILE = "job.failed"
# The first line of a job.cfg the master pushes to a worker host: which push it is. An agent's
# report that a job stopped names the push its runtime was made from, so a report written before
# a retry's push can never stop the retried job again.
PUSHED_CONFIG_MARK = b"#pushed "
DAMAGED_LIST = "damaged.list"
MULTIPART_DIR = "multipart"  # one checkpoint (small JSON) per multipart upload the task has open
# Checkpoints of a late result that was dropped: nothing will complete their uploads; clean aborts them.
ABANDONED_UPLOADS = "abandoned_uploads"
# What a run writes at its end; a retried task drops them and keeps the rest (its history).
RUN_RESULTS = (STATUS_FILE, DONE_FILE, COUNTS_FILE, ERROR_LIST, SKIPPED_LIST)
# What a worker needs to run (or resume) a task: handed over on dispatch, pulled back on finish.
TASK_INPUTS = (TASK_FILE, RETRIES_FILE, AUDIT_LOG, OBJECTS_LOG)
TASK_RESULTS = TASK_INPUTS + RUN_RESULTS
# What a task whose TASK could not be read holds instead: why, and the damaged file kept aside.
DAMAGED_RESULTS = (DAMAGED_FILE, TASK_FILE + CORRUPT_SUFFIX)
STATUS_COMPLETED = "Completed"
STATUS_FAILED = "Failed"

STANDALONE_HOST = "localhost"

log = logging.getLogger("ossimport.layout")


def _reason_in(path: Path, what: str) -> Optional[str]:
    """The first line of a one-line record of why something gave up (``what``), or None when
    there is none; a record that cannot be read, or an empty one, says so."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"{what}, and its reason in {path} cannot be read: {exc}"
    return (data.decode("utf-8", "replace").strip().splitlines() or [""])[0] or f"{what} ({path} is empty)"


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write a file so readers see the old content or the new, never half of it."""
    # Per process and thread: two scan threads may note the same file at once.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    os.replace(tmp, path)


def private_file(path: Path) -> Path:
    """Create ``path`` (and its folder) readable by its owner only, or tighten it to 0600.
    A symlink in its place is refused (ELOOP), not followed to a file outside workingDir."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    return path


def write_task_file(path: Path, task: Task) -> None:
    """TASK: one JSON header line, then one JSON line per object. It never holds secrets."""
    header = '{"taskId":"%s","jobName":"%s","objects":%d,"bytes":%d}\n' % (
        task.task_id, task.job_name, len(task.objects), task.total_bytes)
    body = "".join(o.to_json() + "\n" for o in task.objects)
    write_atomic(path, (header + body).encode("ascii"))


class DamagedStateFile(StateError):
    """A state file that cannot be read: empty, truncated, not text, or JSON of the wrong shape."""

    def __init__(self, path: Path, problem: str):
        self.path, self.problem = Path(path), problem
        super().__init__(f"{path}: {problem}")


def read_task_file(path: Path) -> Task:
    """The task in a TASK file; DamagedStateFile when it is not exactly what write_task_file
    wrote (the header's object count and bytes catch a file cut at a line boundary)."""
    try:
        with open(path, "r", encoding="ascii") as f:
            header = json.loads(f.readline())
            objects = [ObjectEntry.from_json(line) for line in f if line.strip()]
        task = Task(task_id=header["taskId"], job_name=header["jobName"], objects=objects)
        if header["objects"] != len(objects) or header["bytes"] != task.total_bytes:
            raise DamagedStateFile(path, f"truncated: its header names {header['objects']} object(s) "
                                         f"of {header['bytes']} bytes, it holds {len(objects)} of "
                                         f"{task.total_bytes}")
        return task
    except UnicodeDecodeError:
        raise DamagedStateFile(path, "not ASCII text (the file is garbage)") from None
    except ValueError as exc:  # JSONDecodeError included
        problem = "empty" if _is_empty(path) else f"not valid JSON ({exc})"
        raise DamagedStateFile(path, problem) from None
    except (KeyError, TypeError, AttributeError) as exc:
        raise DamagedStateFile(path, f"JSON of the wrong shape ({type(exc).__name__}: {exc})") from None


def task_size(path: Path) -> Optional[tuple]:
    """(objects, bytes) as a TASK's header line names them, or None when that line does not read:
    enough to weigh a task without reading its objects."""
    try:
        with open(path, "r", encoding="ascii") as f:
            header = json.loads(f.readline())
        return max(0, int(header["objects"])), max(0, int(header["bytes"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def decode_state_json(data: bytes):
    """The JSON document of a small state file the tool wrote (COUNTS, a checkpoint, ROUND);
    ValueError saying what is wrong with it, in the words stat's Damaged: line shows."""
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    except ValueError:
        raise ValueError("empty" if not data.strip() else "not valid JSON") from None


def _is_empty(path: Path) -> bool:
    try:
        return os.path.getsize(path) == 0
    except OSError:
        return False


def move_aside(path: Path) -> Path:
    """Rename a damaged state file to <name>.corrupt (numbered when that name is taken), so it is
    kept for a look and never read again. Returns the new path."""
    target = path.with_name(path.name + CORRUPT_SUFFIX)
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}{CORRUPT_SUFFIX}.{n}")
    os.rename(path, target)
    return target


def record_damage(job_root: Path, path: Path, problem: str, action: str) -> str:
    """Note a damaged state file in the job's damaged.list (what stat shows); returns the line."""
    line = f"{path}: {problem}; {action}"
    with open(job_root / DAMAGED_LIST, "a", encoding="utf-8", errors="surrogateescape") as f:
        f.write(line.replace("\n", " ") + "\n")
    return line


def job_root_of(task_dir: Path) -> Path:
    """The job folder of a finished task folder (<job>/succeed_tasks|failed_tasks/<name>)."""
    return task_dir.parent.parent


def pushed_config(content: bytes, push_id: str) -> bytes:
    """The job.cfg ``content`` as pushed to a host, first line naming the push."""
    return PUSHED_CONFIG_MARK + push_id.encode("ascii") + b"\n" + content


def push_id_of(path: Path) -> Optional[str]:
    """Which push a host's job.cfg came from (None for a file the master did not mark)."""
    try:
        with open(path, "rb") as f:
            first = f.readline(200)
    except OSError:
        return None
    if not first.startswith(PUSHED_CONFIG_MARK):
        return None
    return first[len(PUSHED_CONFIG_MARK):].strip().decode("ascii", "replace") or None


def damaged_task_reason(job_name: str, task_id: str, problem: str) -> str:
    return (f"DAMAGED_TASK: the TASK file of task {task_id} is {problem} and no intact copy is left; "
            f"its files are unknown, so this task copied none: run 'console.sh clean {job_name}' "
            f"and submit the job again with isSkipExistFile=true (it copies only what is missing)")


def mark_task_damaged(folder: Path, reason: str) -> Path:
    """Make ``folder`` a failed task whose TASK could not be read: the TASK moved aside, an empty
    error.list (its keys are unknown), COUNTS with the files its header names when that line
    still reads, and DAMAGED with ``reason``. The tracker then records it like any failed task."""
    files, size = task_size(folder / TASK_FILE) or (0, 0)
    aside = move_aside(folder / TASK_FILE) if (folder / TASK_FILE).exists() else folder / TASK_FILE
    write_atomic(folder / DAMAGED_FILE, (reason + "\n").encode("utf-8", "surrogateescape"))
    write_atomic(folder / ERROR_LIST, b"")
    counts = {"files": files, "bytes": size, "failed": files, "failed_bytes": size}
    write_atomic(folder / COUNTS_FILE, json.dumps(counts).encode("utf-8"))
    write_atomic(folder / STATUS_FILE, (STATUS_FAILED + "\n").encode())
    return aside


def damaged_reason(task_dir: Path) -> Optional[str]:
    try:
        return (task_dir / DAMAGED_FILE).read_text("utf-8", "replace").strip() or None
    except OSError:
        return None


def finished_name(task_id: str, host: str, epoch_ms: Optional[int] = None) -> str:
    return f"{task_id}_{epoch_ms if epoch_ms is not None else int(time.time() * 1000)}@{host}"


def parse_finished_name(name: str) -> tuple:
    """'<taskid>_<epochms>@<host>' -> (taskid, epochms, host)."""
    head, _, host = name.rpartition("@")
    task_id, _, ms = head.rpartition("_")
    return task_id, int(ms) if ms.isdigit() else 0, host


def job_shown_root(job_name: str) -> str:
    """``master/jobs/<job>``: a job's folder as messages name it, relative to workingDir."""
    return f"{MASTER_DIR}/{JOBS_DIR}/{job_name}"


@dataclass(frozen=True)
class TaskFolder:
    """One task's folder, wherever in the tree it is (pending, dispatched, a worker's, finished):
    its TASK, and the results a run writes into it."""

    path: Path

    @property
    def task_file(self) -> Path:
        return self.path / TASK_FILE

    @property
    def audit_log(self) -> Path:
        return self.path / AUDIT_LOG

    @property
    def objects_log(self) -> Path:
        return self.path / OBJECTS_LOG

    @property
    def error_list(self) -> Path:
        return self.path / ERROR_LIST

    @property
    def counts_file(self) -> Path:
        return self.path / COUNTS_FILE

    def read_task(self) -> Task:
        return read_task_file(self.task_file)

    def status(self) -> Optional[str]:
        """STATUS_COMPLETED, STATUS_FAILED, or None while the task has not finished. A STATUS
        that is not text still says the run ended, and never that it completed."""
        try:
            return (self.path / STATUS_FILE).read_text("utf-8", "replace").strip() or None
        except OSError:
            return None

    def completed(self) -> bool:
        return self.status() == STATUS_COMPLETED

    def write_results(self, ok: bool, counts: dict, errors: str, skips: str) -> None:
        """What a run writes at its end: error.list, skipped.list (only when something was
        skipped), COUNTS, then STATUS, the signal that the task finished, and DONE when it
        succeeded."""
        write_atomic(self.error_list, errors.encode("utf-8", "surrogateescape"))
        if skips:
            write_atomic(self.path / SKIPPED_LIST, skips.encode("utf-8", "surrogateescape"))
        write_atomic(self.counts_file, json.dumps(counts).encode("utf-8"))
        write_atomic(self.path / STATUS_FILE, ((STATUS_COMPLETED if ok else STATUS_FAILED) + "\n").encode())
        if ok:
            write_atomic(self.path / DONE_FILE, b"")


@dataclass(frozen=True)
class WorkerTree:
    """A worker's part of a workingDir: over a local ``Path`` for the agent and standalone mode,
    over a ``PurePosixPath`` when the master names a worker host's paths (every host has the same
    workingDir)."""

    working_dir: PurePath

    @property
    def root(self):
        return self.working_dir / WORKER_DIR

    @property
    def logs(self):
        return self.working_dir / LOGS_DIR

    @property
    def jobs(self):
        return self.root / JOBS_DIR

    @property
    def pid_file(self):
        return self.root / "agent.pid"

    @property
    def heartbeat(self):
        return self.root / "heartbeat.json"

    @property
    def sys_file(self):
        """The master's sys.properties, pushed without its secrets."""
        return self.root / SYS_PROPERTIES

    @property
    def budget_file(self):
        """This host's share of a job-wide bandwidth budget, bytes/s."""
        return self.root / "throughput"

    @property
    def qps_budget_file(self):
        """This host's share of a job-wide request budget (jobMaxQps), files started per second."""
        return self.root / "qps"

    def job(self, job_name: str):
        return self.jobs / job_name

    def job_config(self, job_name: str):
        return self.job(job_name) / JOB_CONFIG

    def tasks(self, job_name: str):
        return self.job(job_name) / TASKS_DIR

    def task(self, job_name: str, task_id: str):
        return self.tasks(job_name) / task_id

    def staging(self, job_name: str, task_id: str):
        """Where a task is put together before one rename makes it the worker's."""
        return self.tasks(job_name) / f".{task_id}.tmp"

    def task_of(self, relative: str) -> Optional[tuple]:
        """(job, task id) of a task folder named relative to ``root`` (``jobs/<job>/tasks/<id>/``,
        as a host's snapshot lists it), or None for any other path: a name that is empty or
        starts with a dot ('..', a half-pushed '.<id>.tmp') is never a job's or a task's."""
        parts = relative.strip("/").split("/")
        named = all(p and not p.startswith(".") for p in parts)
        if len(parts) == 4 and parts[0] == JOBS_DIR and parts[2] == TASKS_DIR and named:
            return parts[1], parts[3]
        return None


def remote_worker_tree(working_dir: str) -> WorkerTree:
    """A worker host's tree, its paths as the strings SSH commands take (``str()`` of each)."""
    return WorkerTree(PurePosixPath(working_dir))


@dataclass(frozen=True)
class Home:
    """The working directory of one machine (``workingDir``)."""

    root: Path

    @property
    def logs(self) -> Path:
        return self.root / LOGS_DIR

    @property
    def jobqueue(self) -> Path:
        return self.master / "jobqueue"

    @property
    def master_jobs(self) -> Path:
        return self.master / JOBS_DIR

    @property
    def master(self) -> Path:
        return self.root / MASTER_DIR

    @property
    def worker(self) -> "WorkerTree":
        """This machine's worker folders (the agent's, or standalone mode's one worker)."""
        return WorkerTree(self.root)

    @property
    def worker_jobs(self) -> Path:
        return self.worker.jobs

    @property
    def bundle_cache(self) -> Path:
        """Where deploy builds the bundle of wheels it carries to the worker hosts."""
        return self.master / "bundle"

    @property
    def retry_lock(self) -> Path:
        """Held by one 'console.sh retry' at a time."""
        return self.master / "retry.lock"

    @property
    def pid_file(self) -> Path:
        return self.master / "ossimport.pid"

    @property
    def service_lock(self) -> Path:
        """Held by the one service of this working directory for its whole life (servicelock)."""
        return self.master / "service.lock"

    def host_status_file(self, host_name: str) -> Path:
        """``master/hosts/<host>.json``: the master's last poll of a worker host, for stat."""
        return self.master / "hosts" / f"{host_name}.json"

    def job(self, name: str) -> "JobLayout":
        """The job's folders. The name becomes a path under workingDir, so anything but a job
        name ('..', '/abs', 'a/b', a file name) is refused here, for every caller."""
        if not isinstance(name, str) or not is_job_name(name):
            raise StateError(f"{quote_arg(name)} is not a job name ({JOB_NAME_RULE})")
        return JobLayout(self, name)

    def job_names(self) -> list:
        if not self.master_jobs.is_dir():
            return []
        return sorted(p.name for p in self.master_jobs.iterdir()
                      if is_job_name(p.name) and (p / JOB_CONFIG).is_file())

    def private_log(self, name: str) -> Path:
        """``logs/<name>``, created 0600 (tightened if it exists): logs name hosts, buckets and
        paths, which are nobody else's business."""
        path = self.logs / name
        try:
            private_file(path)
        except OSError as exc:
            if path.is_symlink():
                raise StateError(f"{path} is a symlink; logs are written only inside workingDir: "
                                 f"remove it") from None
            raise StateError(f"cannot write the log {path}: {exc.strerror or exc}; "
                             f"make workingDir ({self.root}) a directory this user can write") from None
        return path

    def ensure(self) -> None:
        for d in (self.logs, self.jobqueue, self.master_jobs, self.worker_jobs):
            d.mkdir(parents=True, exist_ok=True)


@dataclass(frozen=True)
class JobLayout:
    """One job's folders on the master and on this machine's worker."""

    home: Home
    name: str

    @property
    def root(self) -> Path:
        return self.home.master_jobs / self.name

    @property
    def config_file(self) -> Path:
        return self.root / JOB_CONFIG

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints" / "0"

    # -- incremental rounds: round 0 is the full pass, each rescan the next number ------------
    def round_checkpoints(self, round_no: int) -> Path:
        return self.root / "checkpoints" / str(round_no)

    def round_dir(self, round_no: int) -> Path:
        return self.root / "rounds" / str(round_no)

    def round_manifest(self, round_no: int, unit_hex: str) -> Path:
        return self.round_dir(round_no) / f"{unit_hex}.manifest"

    @property
    def round_file(self) -> Path:
        return self.root / "ROUND"

    def round_state(self) -> dict:
        """{'round': n, 'next_at': Unix time of the next rescan or None}. A damaged ROUND would
        send the job back to round 0: it is moved aside and rebuilt from the newest round folder,
        the next rescan scheduled anew."""
        try:
            data = self.round_file.read_bytes()
        except OSError:
            return {"round": 0, "next_at": None}
        try:
            doc = decode_state_json(data)
            round_no, next_at = doc["round"], doc.get("next_at")
            if type(round_no) is int and round_no >= 0 and (next_at is None or type(next_at) in (int, float)):
                return {"round": round_no, "next_at": next_at}
            problem = "JSON of the wrong shape (a field has a value no job writes)"
        except ValueError as exc:
            problem = str(exc)
        except (KeyError, TypeError, AttributeError):
            problem = "JSON of the wrong shape (no round number)"
        rebuilt = max([int(d.name) for parent in (self.root / "checkpoints", self.root / "rounds")
                       if parent.is_dir() for d in parent.iterdir() if d.name.isdigit()] or [0])
        try:
            aside = move_aside(self.round_file)
            self.set_round_state(rebuilt, None)
            record_damage(self.root, self.round_file, problem, f"moved aside to {aside.name}; round {rebuilt} "
                                                               f"taken from the newest round folder, next rescan "
                                                               f"scheduled anew")
        except OSError:
            pass  # another reader healed it first, or the tree is read-only: the answer stands
        return {"round": rebuilt, "next_at": None}

    def set_round_state(self, round_no: int, next_at: Optional[float]) -> None:
        write_atomic(self.round_file, json.dumps({"round": round_no, "next_at": next_at}).encode())

    def start_round(self, round_no: int) -> int:
        """Begin an incremental rescan: the failed tasks of the round before run again (their
        files re-read), and the scan starts over. Returns how many failed tasks were retried."""
        try:
            retried = self.retry_failed()
        except StateError as exc:  # a damaged failed folder must not stop the rescan
            log.error("job %s: round %d: %s", self.name, round_no, exc)
            retried = 0
        self.set_round_state(round_no, None)
        write_atomic(self.queue_marker, b"")
        return retried

    def idle(self) -> bool:
        """Nothing pending or dispatched: the current round is complete once the scan is. Reads
        no more than the first entry of each folder, so it can be asked often."""
        return not _holds_a_task(self.pending) and \
            not any(_holds_a_task(self.dispatched(h)) for h in self.dispatched_hosts())

    def settled(self) -> bool:
        """No task left to run (the job ended, well or not, unless a retry or an incremental
        round adds some): what import.sh waits for between its progress lines."""
        return self.scan_finished and self.idle()

    @property
    def pending(self) -> Path:
        return self.root / PENDING_DIR

    @property
    def dispatched_root(self) -> Path:
        return self.root / DISPATCHED_DIR

    def dispatched(self, host: str) -> Path:
        return self.dispatched_root / host

    @property
    def succeed(self) -> Path:
        return self.root / SUCCEED_DIR

    @property
    def failed(self) -> Path:
        return self.root / FAILED_DIR

    @property
    def queue_marker(self) -> Path:
        return self.home.jobqueue / self.name

    @property
    def worker_tasks(self) -> Path:
        return self.home.worker.tasks(self.name)

    def running_audit_log(self, task_id: str) -> Path:
        """The audit.log a worker appends to while it runs the task: on this machine
        standalone; in distributed mode the same path on the host it was dispatched to
        (every host has the same workingDir)."""
        return self.worker_tasks / task_id / AUDIT_LOG

    @property
    def incoming(self) -> Path:
        """Task folders being pulled home from worker hosts, before ``finish`` files them."""
        return self.root / INCOMING_DIR

    def incoming_from(self, task_id: str, host: str) -> Path:
        return self.incoming / f"{task_id}@{host}"

    @property
    def shown_root(self) -> str:
        """The job's folder as messages show it, relative to workingDir."""
        return job_shown_root(self.name)

    @property
    def stats_file(self) -> Path:
        """Live counters of the running worker(s), for ``stat``."""
        return self.root / "progress.json"

    @property
    def report_dir(self) -> Path:
        """The job report (``report``): objects.csv.gz, summary.json, report.html."""
        return self.root / REPORT_DIR

    def make_report_dir(self) -> Path:
        """report/, made when missing. StateError when it leads outside workingDir (a symlink):
        nothing is written there."""
        self.report_dir.mkdir(exist_ok=True)
        _check_inside(self.home.root, self.report_dir / "summary")
        return self.report_dir

    def exists(self) -> bool:
        return self.config_file.is_file()

    # -- creating and removing a job -----------------------------------------------------
    def create(self, write_config) -> None:
        """Make the job's folders; ``write_config(path)`` writes the frozen job file (0600)."""
        if self.exists():
            raise StateError(f"job '{self.name}' already exists in {self.root}; "
                             f"run 'console.sh clean {self.name}' first, or 'console.sh start' to resume it")
        for d in (self.checkpoints, self.pending, self.dispatched_root, self.succeed, self.failed,
                  self.worker_tasks, self.home.jobqueue):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        write_config(self.config_file)
        write_atomic(self.queue_marker, b"")

    def remove(self) -> None:
        """Remove the job's state: its queue marker, worker folder and master folder, and never
        anything outside workingDir (a folder on the way that is a symlink out is refused; a
        symlink in the job's place is removed, not followed)."""
        self.check_inside()  # all of them first: refused means untouched
        for path in self._own_paths():
            _remove(path)

    def check_inside(self) -> None:
        """StateError unless every folder holding this job's state is inside workingDir (no
        symlink on the way out of it)."""
        for path in self._own_paths():
            _check_inside(self.home.root, path)

    def _own_paths(self) -> tuple:
        return (self.queue_marker, self.home.worker.job(self.name), self.root)

    # -- scanning -------------------------------------------------------------------------
    @property
    def scan_finished(self) -> bool:
        return self.exists() and not self.queue_marker.exists()

    def mark_scan_finished(self) -> None:
        if self.queue_marker.exists():
            self.queue_marker.unlink()

    def reopen_scan(self) -> None:
        """The scan runs again (from its checkpoints): a damaged one must be rebuilt."""
        write_atomic(self.queue_marker, b"")

    # -- how the scan is going, and state files found damaged ---------------------------------
    @property
    def scan_error_file(self) -> Path:
        return self.root / SCAN_ERROR_FILE

    def note_scan_error(self, text: str) -> None:
        write_atomic(self.scan_error_file, (text + "\n").encode("utf-8", "replace"))

    def clear_scan_error(self) -> None:
        if self.scan_error_file.exists():
            self.scan_error_file.unlink()

    def scan_error(self) -> str:
        try:
            return self.scan_error_file.read_text("utf-8", "replace").strip()
        except OSError:
            return ""

    @property
    def scan_failed_file(self) -> Path:
        return self.root / SCAN_FAILED_FILE

    def fail_scan(self, reason: str) -> None:
        """The scan gave up: the job ends Failed with ``reason`` once nothing else runs."""
        write_atomic(self.scan_failed_file, (reason.replace("\n", " ") + "\n").encode("utf-8", "replace"))
        self.clear_scan_error()

    def scan_failure(self) -> Optional[str]:
        """Why the scan gave up, or None. An unreadable record still fails the job, saying so."""
        return _reason_in(self.scan_failed_file, "the scan gave up")

    def clear_scan_failure(self) -> Optional[str]:
        """Let the scan run again (it resumes from its checkpoints); returns the reason cleared."""
        reason = self.scan_failure()
        if reason is not None:
            self.scan_failed_file.unlink()
        return reason

    @property
    def job_failed_file(self) -> Path:
        return self.root / JOB_FAILED_FILE

    def fail_job(self, reason: str) -> None:
        """Stop the job: nothing more is dispatched and it ends Failed with ``reason``."""
        write_atomic(self.job_failed_file, (reason.replace("\n", " ") + "\n").encode("utf-8", "replace"))

    def job_failure(self) -> Optional[str]:
        """Why the job stopped, or None. An unreadable record still stops it, saying so."""
        return _reason_in(self.job_failed_file, "the job stopped")

    def fixed_since_stop(self) -> bool:
        """The frozen job.cfg changed after the job stopped on a fatal error (a key fixed with
        'console.sh set', or taken from the edited job file): a retry may now work."""
        try:
            return self.config_file.stat().st_mtime_ns > self.job_failed_file.stat().st_mtime_ns
        except OSError:
            return False

    def clear_job_failure(self) -> Optional[str]:
        """Let the job run again; returns the reason cleared."""
        reason = self.job_failure()
        if reason is not None:
            self.job_failed_file.unlink()
        return reason

    def damaged_files(self) -> list:
        return [line for line in iter_lines(self.root / DAMAGED_LIST) if line.strip()]

    def intact_task_copy(self, task_id: str) -> Optional[Path]:
        """A TASK of ``task_id`` that reads back whole, among the copies the tree keeps of a task
        (pending, dispatched to a host, the worker's folder): the exact content of a damaged one."""
        candidates = [self.pending / task_id, self.worker_tasks / task_id]
        candidates += [self.dispatched(h) / task_id for h in self.dispatched_hosts()]
        for folder in candidates:
            try:
                read_task_file(folder / TASK_FILE)
            except (OSError, DamagedStateFile):
                continue
            return folder / TASK_FILE
        return None

    def repair_task_file(self, task_id: str, damaged: Path, problem: str) -> bool:
        """Put an intact copy of a damaged TASK in its place, the damaged one moved aside and
        recorded in damaged.list; False (nothing changed) when the tree holds no intact copy."""
        twin = self.intact_task_copy(task_id)
        if twin is None:
            return False
        aside = move_aside(damaged) if damaged.exists() else damaged
        shutil.copyfile(twin, damaged)
        record_damage(self.root, damaged, problem, f"moved aside to {aside.name}; rebuilt from {twin}")
        return True

    def locations(self, task_id: str) -> list:
        """Every folder of the master's tree holding the task: pending, dispatched to a host,
        finished (more than one only between the renames of a move, or for a late result)."""
        return list(self._holders(task_id))

    def locate(self, task_id: str) -> Optional[Path]:
        """Where the task is in the master's tree, or None when the tree does not hold it."""
        return next(self._holders(task_id), None)

    def _holders(self, task_id: str) -> Iterator[Path]:
        # Lazily, cheapest first: a task found pending never lists the finished folders.
        if (self.pending / task_id).exists():
            yield self.pending / task_id
        for host in self.dispatched_hosts():
            if (self.dispatched(host) / task_id).exists():
                yield self.dispatched(host) / task_id
        finished = self.finished_dir(task_id)
        if finished is not None:
            yield finished

    def task_known(self, task_id: str) -> bool:
        """True when a task with this id is anywhere in the tree (the scanner must not add it twice)."""
        return self.locate(task_id) is not None

    def add_pending(self, task: Task) -> None:
        tmp = self.pending / f".{task.task_id}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        write_task_file(tmp / TASK_FILE, task)
        os.rename(tmp, self.pending / task.task_id)

    # -- the task state machine -----------------------------------------------------------
    def pending_ids(self) -> list:
        return _task_dirs(self.pending)

    def dispatched_ids(self, host: str) -> list:
        return _task_dirs(self.dispatched(host))

    def dispatched_hosts(self) -> list:
        if not self.dispatched_root.is_dir():
            return []
        return sorted(p.name for p in self.dispatched_root.iterdir() if p.is_dir())

    def dispatch(self, task_id: str, host: str) -> Path:
        """pending -> dispatched/<host>. Returns the dispatched folder."""
        target = self.dispatched(host)
        target.mkdir(parents=True, exist_ok=True)
        dst = target / task_id
        os.rename(self.pending / task_id, dst)
        return dst

    def undispatch(self, task_id: str, host: str) -> None:
        """dispatched/<host> -> pending: the host lost the task or died."""
        src = self.dispatched(host) / task_id
        if (self.pending / task_id).exists():
            shutil.rmtree(src, ignore_errors=True)
            return
        os.rename(src, self.pending / task_id)

    def finish(self, task_id: str, host: str, result_dir: Path, ok: bool) -> Path:
        """Record a finished task: ``result_dir`` (the worker's task folder, on this filesystem)
        becomes succeed_tasks/ or failed_tasks/<taskid>_<epochms>@<host>, and the dispatched
        entry goes away. A result for a task already finished is dropped, so a late result
        from a host presumed dead is never counted twice."""
        if self.finished_dir(task_id) is not None:
            self._keep_upload_records(result_dir, finished_name(task_id, host))
            shutil.rmtree(result_dir, ignore_errors=True)
            shutil.rmtree(self.dispatched(host) / task_id, ignore_errors=True)
            return self.finished_dir(task_id)
        dst = (self.succeed if ok else self.failed) / finished_name(task_id, host)
        os.rename(result_dir, dst)
        shutil.rmtree(self.dispatched(host) / task_id, ignore_errors=True)
        # The task may also have gone back to pending (host presumed dead); it is done now.
        shutil.rmtree(self.pending / task_id, ignore_errors=True)
        return dst

    def forget_dispatched(self, task_id: str, host: str) -> None:
        """Drop the dispatched entry of a task already finished (a crash came between the two)."""
        shutil.rmtree(self.dispatched(host) / task_id, ignore_errors=True)

    def _keep_upload_records(self, result_dir: Path, name: str) -> None:
        """A dropped result may hold uploads its host began and nothing will complete: their
        checkpoints are kept, so that clean aborts them."""
        records = sorted((result_dir / MULTIPART_DIR).glob("*.json"))
        if records:
            (self.root / ABANDONED_UPLOADS).mkdir(exist_ok=True)
        for record in records:
            os.replace(record, self.root / ABANDONED_UPLOADS / f"{name}-{record.name}")

    def finished_dir(self, task_id: str) -> Optional[Path]:
        prefix = task_id + "_"
        for d in (self.succeed, self.failed):
            if d.is_dir():
                for n in os.listdir(d):
                    if n.startswith(prefix) and parse_finished_name(n)[0] == task_id:
                        return d / n
        return None

    def copying_started(self) -> bool:
        """A task was dispatched or has finished: the job has begun to copy."""
        return bool(any(self.dispatched_ids(h) for h in self.dispatched_hosts())
                    or self.succeed_dirs() or self.failed_dirs())

    def failed_dirs(self) -> list:
        return sorted(p for p in self.failed.iterdir() if p.is_dir()) if self.failed.is_dir() else []

    def succeed_dirs(self) -> list:
        return sorted(p for p in self.succeed.iterdir() if p.is_dir()) if self.succeed.is_dir() else []

    def retry_failed(self) -> int:
        """failed -> pending for every failed task; returns how many moved.

        The folder moves whole (one rename, so the task is always in exactly one state) with
        its audit.log and multipart checkpoints: the retry copies only the files that did not
        end well and resumes their uploads. RETRIES is written before the move, so a retried
        task always re-reads its sources; the results of the run that ended go after it (a
        crash in between leaves them in pending, where nothing reads them: dispatch hands over
        only ``TASK_INPUTS``)."""
        # A task whose TASK was damaged past repair cannot run again: its DAMAGED file (shown by
        # stat) says what to do, and it stays where it is.
        failed = [d for d in self.failed_dirs() if damaged_reason(d) is None]
        for d in failed:
            if not (d / TASK_FILE).is_file():
                raise StateError(f"{d} has no {TASK_FILE} file, so it cannot be retried, and nothing was "
                                 f"retried; move that folder out of {self.failed.name} (its {AUDIT_LOG} names "
                                 f"its files) and run retry again")
        moved = 0
        for d in failed:
            task_id = parse_finished_name(d.name)[0]
            write_atomic(d / RETRIES_FILE, b"%d\n" % (retry_count(d) + 1))
            target = self.pending / task_id
            # Only a crash mid-way through an older retry leaves a copy here; this folder is newer.
            shutil.rmtree(target, ignore_errors=True)
            os.rename(d, target)
            for name in RUN_RESULTS:
                (target / name).unlink(missing_ok=True)
            moved += 1
        return moved

    def multipart_checkpoints(self) -> list:
        """Every multipart checkpoint in the job's task folders, wherever the task is, and those
        of dropped late results: the uploads this job may have left open at the destination."""
        parents = [self.pending, self.failed, self.succeed, self.worker_tasks, self.incoming]
        parents += [self.dispatched(host) for host in self.dispatched_hosts()]
        found = list((self.root / ABANDONED_UPLOADS).glob("*.json"))
        for parent in parents:
            if parent.is_dir():
                for folder in parent.iterdir():
                    found.extend((folder / MULTIPART_DIR).glob("*.json"))
        return sorted(found)


def task_inputs(folder: Path) -> list:
    """What a worker needs of a task folder to run or resume it, as paths relative to it: TASK,
    RETRIES and audit.log when present, and the multipart checkpoints."""
    names = [name for name in TASK_INPUTS if (folder / name).is_file()]
    return names + sorted(f"{MULTIPART_DIR}/{p.name}" for p in (folder / MULTIPART_DIR).glob("*.json"))


def _check_inside(root: Path, path: Path) -> None:
    top = os.path.realpath(root)
    parent = os.path.realpath(path.parent)
    if parent != top and not parent.startswith(top.rstrip("/") + "/"):
        raise StateError(f"{path.parent} leads outside workingDir ({top}) to {parent}; nothing touched: "
                         f"make it a folder inside workingDir (and remove {path} by hand if it is this job's)")


def _remove(path: Path) -> None:
    try:
        if path.is_symlink() or not path.is_dir():
            path.unlink()
        else:
            shutil.rmtree(path, onerror=_unless_vanished)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise StateError(f"cannot remove {exc.filename or path}: {exc.strerror or exc}; "
                         f"fix its permissions and clean again") from None


def _unless_vanished(func, path, exc_info) -> None:
    """rmtree's error hook: an entry that vanished meanwhile (a worker finishing its task) is
    gone as wanted, and the rest of the tree is still removed; any other error stops."""
    if not issubclass(exc_info[0], FileNotFoundError):
        raise exc_info[1]


def quote_arg(text) -> str:
    """A command-line argument quoted for a message: undecodable bytes escaped, length capped."""
    if not isinstance(text, str):
        return repr(text)
    shown = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    shown = shown.encode("unicode_escape").decode("ascii") if not shown.isprintable() else shown
    return f"'{shown[:60]}...' ({len(text)} characters)" if len(shown) > 128 else f"'{shown}'"


def retry_count(task_dir: Path) -> int:
    try:
        return int((task_dir / RETRIES_FILE).read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def _holds_a_task(folder: Path) -> bool:
    try:
        with os.scandir(folder) as entries:
            return any(not e.name.startswith(".") for e in entries)
    except (FileNotFoundError, NotADirectoryError):
        return False


def _task_dirs(folder: Path) -> list:
    if not folder.is_dir():
        return []
    return sorted(n for n in os.listdir(folder) if not n.startswith("."))


def iter_lines(path: Path) -> Iterator[str]:
    if path.is_file():
        with open(path, "r", encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                yield line.rstrip("\n")
