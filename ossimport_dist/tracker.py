"""The tracker: hands pending tasks to a worker and follows them to succeed or failed.

One ``Tracker`` serves both modes, over a ``WorkerLink`` that reaches one worker's task folders:
``LocalLink`` for the standalone worker (``localhost``, in the same process, on the same
filesystem: pushing a task is a copy, bringing a result home a rename) and
``sshlink.SshLink`` for a fleet host (SFTP). What is written once, here:

- reconcile: ``dispatched/<host>/`` against the folders the worker really holds. A finished
  task comes home (a late result for a task already finished elsewhere is dropped, so nothing
  is counted twice); one the worker holds but does not run resumes; one it never received, or
  lost, goes back to pending; one that now belongs elsewhere is removed there;
- capacity: each worker is fed by its free room (files accepted but not finished, against its
  threads), not by blind round-robin;
- dispatch and push: a task is put together in a staging folder and one rename makes it the
  worker's, so a worker never sees half a task.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from . import config as config_mod
from .errors import OperatorError
from .layout import (MULTIPART_DIR, STANDALONE_HOST, TASK_FILE, DamagedStateFile, JobLayout, TaskFolder, WorkerTree,
                     damaged_task_reason, mark_task_damaged, record_damage, task_inputs, task_size)

log = logging.getLogger("ossimport.tracker")

# A worker is given files up to this many per transfer thread (accepted but not finished), so
# no thread waits for the next task and no worker hoards what another could run.
FILES_PER_THREAD = 4


def task_file_count(task_file: Path) -> int:
    """Files a dispatched task weighs (1 when its header does not read: it still takes room)."""
    size = task_size(task_file)
    return size[0] if size is not None else 1


@dataclass(frozen=True)
class JobCaps:
    """The tightest job-wide caps of the jobs with work left: jobMaxThroughput(KB/s) in
    bytes/s and jobMaxQps in files started per second (0: none caps). One cap for the whole
    worker, standalone as on the agents: the capped job's files share the worker's threads
    with the other jobs'."""

    bytes_per_s: int = 0
    files_per_s: int = 0


def job_caps(jobs) -> JobCaps:
    rates, starts = [], []
    for job in jobs:
        try:
            cfg = config_mod.load_job(job.config_file)
        except OperatorError:
            continue
        if not (cfg.job_max_throughput_kbs or cfg.job_max_qps) or (
                job.scan_finished and not job.pending_ids()
                and not any(job.dispatched_ids(h) for h in job.dispatched_hosts())):
            continue
        if cfg.job_max_throughput_kbs:
            rates.append(cfg.job_max_throughput_kbs * 1024)
        if cfg.job_max_qps:
            starts.append(cfg.job_max_qps)
    return JobCaps(min(rates, default=0), min(starts, default=0))

class WorkerLink:
    """What the tracker needs of one worker. ``host`` names it in the state tree; ``files`` has
    the four file operations of a push (``ssh.Connection``'s, or ``LocalFiles``) on paths of
    ``tree`` spelled as strings."""

    host: str
    tree: WorkerTree
    files: object

    def tasks(self, jobs: dict) -> dict:
        """{(job, task id): finished?} for every task folder the worker holds."""
        raise NotImplementedError

    def free_files(self, jobs: dict, tasks: Optional[dict]) -> int:
        """Files the worker can take now."""
        raise NotImplementedError

    def accepts(self, job: JobLayout) -> bool:
        """False while the job must get no task here (besides a job-wide stop mark)."""
        return True

    def before_push(self, job: JobLayout) -> None:
        """Called before a task of ``job`` is pushed (a fleet host gets the job's job.cfg)."""

    def pushed(self, job: JobLayout, task_id: str) -> None:
        """The task's folder is the worker's now."""

    def resume(self, job: JobLayout, task_id: str) -> None:
        """The worker holds the task unfinished: make sure it runs (an agent picks its folders up)."""

    def fetch(self, job: JobLayout, task_id: str) -> Path:
        """A finished task's results in a folder on this filesystem, for ``JobLayout.finish``."""
        raise NotImplementedError

    def remove(self, job_name: str, task_id: str) -> None:
        """The worker's folder of the task goes (brought home, or no longer its task)."""
        self.files.remove_tree(str(self.tree.task(job_name, task_id)))


class Tracker:
    """Reconcile, capacity and dispatch for one worker, over its link."""

    def __init__(self, link: WorkerLink, on_home: Optional[Callable[[JobLayout, str, Path], None]] = None):
        self.link = link
        self.on_home = on_home  # (job, task id, its finished folder) after a task came home

    # -- reconcile --------------------------------------------------------------------------
    def reconcile(self, jobs: dict, tasks: dict) -> None:
        """Bring ``dispatched/<host>/`` and the worker's task folders back into agreement."""
        host = self.link.host
        ours = {name: set(job.dispatched_ids(host)) for name, job in jobs.items()}
        for (job_name, task_id), finished in sorted(tasks.items()):
            job = jobs.get(job_name)
            if job is None:  # cleaned on the master
                self.link.remove(job_name, task_id)
            elif finished:
                self.bring_home(job, task_id)
            elif task_id in ours[job_name]:
                self.link.resume(job, task_id)
            elif job.locate(task_id) is not None:
                # Put back to pending when the worker looked dead, and maybe running elsewhere now.
                log.info("host %s: task %s belongs elsewhere now; removing it there", host, task_id)
                self.link.remove(job_name, task_id)
        for name, job in jobs.items():
            for task_id in ours[name]:
                if (name, task_id) in tasks:
                    continue
                if job.finished_dir(task_id) is not None:
                    job.forget_dispatched(task_id, host)  # finished, then a crash before this went
                else:
                    log.warning("host %s: lost task %s of job %s; back to pending", host, task_id, name)
                    job.undispatch(task_id, host)

    def bring_home(self, job: JobLayout, task_id: str, ok: Optional[bool] = None) -> Path:
        """Record a finished task: its results become succeed_tasks/ or failed_tasks/."""
        folder = self.link.fetch(job, task_id)
        dst = job.finish(task_id, self.link.host, folder, TaskFolder(folder).completed() if ok is None else ok)
        self.link.remove(job.name, task_id)
        log.info("job %s: task %s from %s -> %s", job.name, task_id, self.link.host,
                 dst.parent.name + "/" + dst.name)
        if self.on_home is not None:
            self.on_home(job, task_id, dst)
        return dst

    # -- dispatch ---------------------------------------------------------------------------
    def dispatch(self, jobs: list, tasks: Optional[dict] = None, stop: Callable[[], bool] = lambda: False) -> int:
        """Dispatch pending tasks, in ``jobs`` order, while the worker has room. A job stopped on
        a fatal error gets none until 'console.sh retry' clears its mark."""
        free = self.link.free_files({j.name: j for j in jobs}, tasks)
        sent = 0
        for job in jobs:
            if free <= 0:
                break
            if job.job_failure() is not None or not self.link.accepts(job):
                continue
            for task_id in job.pending_ids():
                if free <= 0 or stop():
                    return sent
                try:
                    dispatched = job.dispatch(task_id, self.link.host)
                except FileNotFoundError:
                    continue  # another host's thread took it
                try:
                    self.push(job, task_id, dispatched)
                except Exception:
                    job.undispatch(task_id, self.link.host)
                    raise
                sent += 1
                free -= task_file_count(dispatched / TASK_FILE)
                self.link.pushed(job, task_id)
        return sent

    def push(self, job: JobLayout, task_id: str, dispatched: Path) -> None:
        """The task's inputs (TASK, and a retried task's RETRIES, history and upload checkpoints)
        into a staging folder, then one rename makes it the worker's."""
        self.link.before_push(job)
        files, tree = self.link.files, self.link.tree
        staging = str(tree.staging(job.name, task_id))
        files.remove_tree(staging)
        files.makedirs(staging)
        inputs = task_inputs(dispatched)
        if any(rel.startswith(MULTIPART_DIR + "/") for rel in inputs):
            files.makedirs(f"{staging}/{MULTIPART_DIR}")
        for rel in inputs:
            files.put_file(dispatched / rel, f"{staging}/{rel}", mode=0o644)
        final = str(tree.task(job.name, task_id))
        files.remove_tree(final)
        files.rename(staging, final)


class LocalFiles:
    """The file operations of a push on this filesystem, as ``ssh.Connection`` spells them."""

    def makedirs(self, path: str, mode: int = 0o755) -> None:
        os.makedirs(path, mode, exist_ok=True)

    def put_file(self, local: Path, path: str, mode: int = 0o644) -> None:
        shutil.copyfile(local, path)
        os.chmod(path, mode)

    def remove_tree(self, path: str) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def rename(self, src: str, dst: str) -> None:
        os.rename(src, dst)


class LocalLink(WorkerLink):
    """The standalone worker: in this process, its folders under this workingDir's worker/."""

    def __init__(self, worker, runtime_for: Callable[[str], object], tree: WorkerTree,
                 host: str = STANDALONE_HOST):
        self.worker = worker
        self.runtime_for = runtime_for  # job name -> the JobRuntime its tasks run on
        self.tree = tree
        self.host = host
        self.files = LocalFiles()
        self.tracker: Optional[Tracker] = None  # set by the tracker that drives it

    def tasks(self, jobs: dict) -> dict:
        found = {}
        for name in jobs:
            folder = Path(self.tree.tasks(name))
            folder.mkdir(parents=True, exist_ok=True)
            for entry in os.listdir(folder):
                task = folder / entry
                if entry.startswith("."):  # half-copied: a crash between the copy and the rename
                    shutil.rmtree(task, ignore_errors=True)
                elif TaskFolder(task).status():
                    found[(name, entry)] = True
                elif (task / TASK_FILE).is_file():
                    found[(name, entry)] = False
                else:  # never received whole (no TASK): not a task
                    shutil.rmtree(task, ignore_errors=True)
        return found

    def free_files(self, jobs: dict, tasks: Optional[dict]) -> int:
        # Everything pushed was handed to the worker at once: its backlog counts it all.
        return self.worker.threads * FILES_PER_THREAD - self.worker.backlog()

    def accepts(self, job: JobLayout) -> bool:
        # Its stopped runtime would fail the tasks unsent until the service gives it a fresh one.
        return self.runtime_for(job.name).stopped is None

    def pushed(self, job: JobLayout, task_id: str) -> None:
        self._submit(job, task_id)

    def resume(self, job: JobLayout, task_id: str) -> None:
        if job.finished_dir(task_id) is not None:  # finished, then a crash before its copy went
            job.forget_dispatched(task_id, self.host)
            self.remove(job.name, task_id)
        elif task_id not in self.worker.running(job.name):
            log.info("job %s: task %s resumes on %s", job.name, task_id, self.host)
            self._submit(job, task_id)

    def fetch(self, job: JobLayout, task_id: str) -> Path:
        return Path(self.tree.task(job.name, task_id))  # JobLayout.finish renames it

    def _submit(self, job: JobLayout, task_id: str) -> None:
        """Hand a task folder to the worker. A TASK that cannot be read is rebuilt from an intact
        copy when the tree keeps one, else the task fails with why and what to do: one damaged
        file never stops the service or the job's other tasks."""
        folder = Path(self.tree.task(job.name, task_id))
        for attempt in (1, 2):
            try:
                self.worker.submit(self.runtime_for(job.name), folder)
                return
            except DamagedStateFile as damage:
                problem = damage.problem
            if attempt == 2 or not job.repair_task_file(task_id, folder / TASK_FILE, problem):
                break
            log.warning("job %s: task %s: TASK %s is %s; rebuilt from an intact copy", job.name, task_id,
                        folder / TASK_FILE, problem)
        aside = mark_task_damaged(folder, damaged_task_reason(job.name, task_id, problem))
        record_damage(job.root, folder / TASK_FILE, problem, f"moved aside to {aside.name}; task {task_id} failed")
        log.error("job %s: task %s: TASK %s is %s; moved aside to %s, task failed", job.name, task_id,
                  folder / TASK_FILE, problem, aside.name)
        self.tracker.bring_home(job, task_id, ok=False)


class LocalTracker(Tracker):
    """The standalone service's tracker: reconcile once per job at start, then dispatch every
    tick and record each task as the worker finishes it."""

    def __init__(self, worker, runtime_for: Callable[[str], object], tree: WorkerTree):
        link = LocalLink(worker, runtime_for, tree)
        super().__init__(link)
        link.tracker = self

    def reconcile_job(self, job: JobLayout) -> None:
        jobs = {job.name: job}
        self.reconcile(jobs, self.link.tasks(jobs))

    def task_finished(self, job: JobLayout, task_id: str, ok: bool) -> None:
        self.bring_home(job, task_id, ok)
