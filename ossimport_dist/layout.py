"""The on-disk state tree, exactly as OssImport lays it out, and the only code that moves tasks.

    <workingDir>/
      logs/                                   ossimport2.log, job_stat.log, submit.log, ...
      master/jobqueue/<job>                   jobs whose source is not fully split yet
      master/jobs/<job>/job.cfg               the submitted (frozen) job configuration, mode 0600
      master/jobs/<job>/checkpoints/0/<hex>.cpt   how far each scan unit has listed
      master/jobs/<job>/pending_tasks/<taskid>/TASK
      master/jobs/<job>/dispatched/<host>/<taskid>/TASK
      master/jobs/<job>/succeed_tasks/<taskid>_<epochms>@<host>/{TASK,audit.log,error.list,STATUS,DONE,COUNTS}
                                              (+ skipped.list when entries were not regular files)
      master/jobs/<job>/failed_tasks/<taskid>_<epochms>@<host>/{TASK,audit.log,error.list,STATUS,COUNTS}
                                              (+ multipart/<sha1 of key>.json per open upload)
      master/jobs/<job>/abandoned_uploads/*.json   checkpoints of dropped late results (clean aborts them)
      worker/jobs/<job>/tasks/<taskid>/       a task a worker runs (TASK, then its results)

A task's life: pending -> dispatched/<host> -> succeed | failed -> pending (retry). Every move is
one ``os.rename`` of a directory (atomic on one filesystem), so a crash leaves each task in
exactly one state, or (between two renames of a finish) in two places that ``reconcile`` mends.

A task folder carries its history wherever it goes (``TASK_INPUTS``): the audit.log says which
files are done, the multipart checkpoints which parts are uploaded. A retry keeps both and drops
only the results of the run that ended (``RUN_RESULTS``), so it re-runs only the files that
failed and resumes their uploads, on whichever host runs it.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from .errors import StateError
from .models import ObjectEntry, Task

TASK_FILE = "TASK"
AUDIT_LOG = "audit.log"
ERROR_LIST = "error.list"
SKIPPED_LIST = "skipped.list"  # entries listed but not copied: not regular files, with why
STATUS_FILE = "STATUS"
DONE_FILE = "DONE"
COUNTS_FILE = "COUNTS"
RETRIES_FILE = "RETRIES"  # how many times the task was retried; a retried task re-reads its sources
MULTIPART_DIR = "multipart"  # one checkpoint (small JSON) per multipart upload the task has open
# Checkpoints of a late result that was dropped: nothing will complete their uploads; clean aborts them.
ABANDONED_UPLOADS = "abandoned_uploads"
# What a run writes at its end; a retried task drops them and keeps the rest (its history).
RUN_RESULTS = (STATUS_FILE, DONE_FILE, COUNTS_FILE, ERROR_LIST, SKIPPED_LIST)
# What a worker needs to run (or resume) a task: handed over on dispatch, pulled back on finish.
TASK_INPUTS = (TASK_FILE, RETRIES_FILE, AUDIT_LOG)
TASK_RESULTS = TASK_INPUTS + RUN_RESULTS
STATUS_COMPLETED = "Completed"
STATUS_FAILED = "Failed"

STANDALONE_HOST = "localhost"

log = logging.getLogger("ossimport.layout")


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write a file so readers see the old content or the new, never half of it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_task_file(path: Path, task: Task) -> None:
    """TASK: one JSON header line, then one JSON line per object. It never holds secrets."""
    header = '{"taskId":"%s","jobName":"%s","objects":%d,"bytes":%d}\n' % (
        task.task_id, task.job_name, len(task.objects), task.total_bytes)
    body = "".join(o.to_json() + "\n" for o in task.objects)
    write_atomic(path, (header + body).encode("ascii"))


def read_task_file(path: Path) -> Task:
    import json

    with open(path, "r", encoding="ascii") as f:
        header = json.loads(f.readline())
        objects = [ObjectEntry.from_json(line) for line in f if line.strip()]
    return Task(task_id=header["taskId"], job_name=header["jobName"], objects=objects)


def finished_name(task_id: str, host: str, epoch_ms: Optional[int] = None) -> str:
    return f"{task_id}_{epoch_ms if epoch_ms is not None else int(time.time() * 1000)}@{host}"


def parse_finished_name(name: str) -> tuple:
    """'<taskid>_<epochms>@<host>' -> (taskid, epochms, host)."""
    head, _, host = name.rpartition("@")
    task_id, _, ms = head.rpartition("_")
    return task_id, int(ms) if ms.isdigit() else 0, host


@dataclass(frozen=True)
class Home:
    """The working directory of one machine (``workingDir``)."""

    root: Path

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def jobqueue(self) -> Path:
        return self.root / "master" / "jobqueue"

    @property
    def master_jobs(self) -> Path:
        return self.root / "master" / "jobs"

    @property
    def worker_jobs(self) -> Path:
        return self.root / "worker" / "jobs"

    @property
    def pid_file(self) -> Path:
        return self.root / "master" / "ossimport.pid"

    def job(self, name: str) -> "JobLayout":
        return JobLayout(self, name)

    def job_names(self) -> list:
        if not self.master_jobs.is_dir():
            return []
        return sorted(p.name for p in self.master_jobs.iterdir() if (p / "job.cfg").is_file())

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
        return self.root / "job.cfg"

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
        """{'round': n, 'next_at': Unix time of the next rescan or None}."""
        try:
            import json

            doc = json.loads(self.round_file.read_text())
            return {"round": int(doc.get("round", 0)), "next_at": doc.get("next_at")}
        except (OSError, ValueError):
            return {"round": 0, "next_at": None}

    def set_round_state(self, round_no: int, next_at: Optional[float]) -> None:
        import json

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
        """Nothing pending or dispatched: the current round is complete once the scan is."""
        return not self.pending_ids() and not any(self.dispatched_ids(h) for h in self.dispatched_hosts())

    @property
    def pending(self) -> Path:
        return self.root / "pending_tasks"

    @property
    def dispatched_root(self) -> Path:
        return self.root / "dispatched"

    def dispatched(self, host: str) -> Path:
        return self.dispatched_root / host

    @property
    def succeed(self) -> Path:
        return self.root / "succeed_tasks"

    @property
    def failed(self) -> Path:
        return self.root / "failed_tasks"

    @property
    def queue_marker(self) -> Path:
        return self.home.jobqueue / self.name

    @property
    def worker_tasks(self) -> Path:
        return self.home.worker_jobs / self.name / "tasks"

    @property
    def stats_file(self) -> Path:
        """Live counters of the running worker(s), for ``stat``."""
        return self.root / "progress.json"

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
        if self.queue_marker.exists():
            self.queue_marker.unlink()
        shutil.rmtree(self.home.worker_jobs / self.name, ignore_errors=True)
        shutil.rmtree(self.root, ignore_errors=True)

    # -- scanning -------------------------------------------------------------------------
    @property
    def scan_finished(self) -> bool:
        return self.exists() and not self.queue_marker.exists()

    def mark_scan_finished(self) -> None:
        if self.queue_marker.exists():
            self.queue_marker.unlink()

    def task_known(self, task_id: str) -> bool:
        """True when a task with this id is anywhere in the tree (the scanner must not add it twice)."""
        if (self.pending / task_id).exists():
            return True
        if self.dispatched_root.is_dir():
            for host_dir in self.dispatched_root.iterdir():
                if (host_dir / task_id).exists():
                    return True
        prefix = task_id + "_"
        for d in (self.succeed, self.failed):
            if d.is_dir() and any(n.startswith(prefix) for n in os.listdir(d)):
                return True
        return False

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
        failed = self.failed_dirs()
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
        parents = [self.pending, self.failed, self.succeed, self.worker_tasks, self.root / ".incoming"]
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


def copy_task_inputs(src: Path, dst: Path) -> None:
    """Hand a task to a worker on this filesystem (``dst`` is a fresh folder)."""
    for rel in task_inputs(src):
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rel, dst / rel)


def retry_count(task_dir: Path) -> int:
    try:
        return int((task_dir / RETRIES_FILE).read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def _task_dirs(folder: Path) -> list:
    if not folder.is_dir():
        return []
    return sorted(n for n in os.listdir(folder) if not n.startswith("."))


def iter_lines(path: Path) -> Iterator[str]:
    if path.is_file():
        with open(path, "r", encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                yield line.rstrip("\n")
