"""The tracker: hands pending tasks to workers and follows them to succeed or failed.

It keeps each worker fed by its free capacity (files accepted but not finished), not by blind
round-robin, and on start reconciles ``dispatched/<host>/`` with what the worker really holds:
a task the worker has finished is recorded, one it is still running resumes, one it never
received goes back to pending.

Standalone mode has one worker, ``localhost``, in the same process; its task folders live under
``worker/jobs/<job>/tasks/`` on the same filesystem, so pushing a task is a copy of ``TASK`` and
collecting a result is a rename.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Callable

from .layout import (STANDALONE_HOST, TASK_FILE, DamagedStateFile, JobLayout, TaskFolder, copy_task_inputs,
                     damaged_task_reason, mark_task_damaged, record_damage)
from .worker import Worker

log = logging.getLogger("ossimport.tracker")


class LocalTracker:
    def __init__(self, worker: Worker, runtime_for: Callable[[str], object],
                 host: str = STANDALONE_HOST, files_per_thread: int = 4):
        self.worker = worker
        self.runtime_for = runtime_for
        self.host = host
        self.files_per_thread = files_per_thread

    # -- start-up ---------------------------------------------------------------------------
    def reconcile(self, job: JobLayout) -> None:
        """Bring dispatched/<host>/ and the worker's task folders back into agreement."""
        job.worker_tasks.mkdir(parents=True, exist_ok=True)
        dispatched = set(job.dispatched_ids(self.host))
        for task_id in sorted(dispatched):
            folder = job.worker_tasks / task_id
            if job.finished_dir(task_id) is not None:
                shutil.rmtree(job.dispatched(self.host) / task_id, ignore_errors=True)
                shutil.rmtree(folder, ignore_errors=True)
            elif TaskFolder(folder).status():
                job.finish(task_id, self.host, folder, TaskFolder(folder).completed())
            elif (folder / TASK_FILE).is_file():
                log.info("job %s: task %s resumes on %s", job.name, task_id, self.host)
                self.submit(job, task_id, folder)
            else:
                log.info("job %s: task %s was never received by %s; back to pending", job.name, task_id, self.host)
                shutil.rmtree(folder, ignore_errors=True)
                job.undispatch(task_id, self.host)
        # Worker folders nobody dispatched (a crash between the two steps of dispatch_one).
        for name in os.listdir(job.worker_tasks):
            half_copied = name.startswith(".")
            stale = name not in dispatched and (job.finished_dir(name) is not None or (job.pending / name).exists())
            if half_copied or stale:
                shutil.rmtree(job.worker_tasks / name, ignore_errors=True)

    # -- steady state -----------------------------------------------------------------------
    def has_capacity(self) -> bool:
        return self.worker.backlog() < self.worker.threads * self.files_per_thread

    def dispatch_round(self, jobs: list) -> int:
        """Dispatch pending tasks, oldest job first, while the worker has room. A job stopped on
        a fatal error gets none until 'console.sh retry' clears its mark and the service has
        given it a fresh runtime (its stopped one would fail them unsent)."""
        sent = 0
        for job in jobs:
            if not self.has_capacity():
                return sent
            if job.job_failure() is not None or self.runtime_for(job.name).stopped is not None:
                continue
            for task_id in job.pending_ids():
                if not self.has_capacity():
                    return sent
                self.dispatch_one(job, task_id)
                sent += 1
        return sent

    def dispatch_one(self, job: JobLayout, task_id: str) -> None:
        dispatched = job.dispatch(task_id, self.host)
        tmp = job.worker_tasks / f".{task_id}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        copy_task_inputs(dispatched, tmp)  # TASK, and a retried task's RETRIES and history
        folder = job.worker_tasks / task_id
        shutil.rmtree(folder, ignore_errors=True)
        os.rename(tmp, folder)
        self.submit(job, task_id, folder)

    def submit(self, job: JobLayout, task_id: str, folder: Path) -> None:
        """Hand a dispatched task folder to the worker. A TASK that cannot be read is rebuilt
        from an intact copy when the tree keeps one, else the task fails with why and what to do:
        one damaged file never stops the service or the job's other tasks."""
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
        self.task_finished(job, task_id, folder, False)

    def task_finished(self, job: JobLayout, task_id: str, folder: Path, ok: bool) -> None:
        result = job.finish(task_id, self.host, folder, ok)
        log.info("job %s: task %s -> %s", job.name, task_id, result.parent.name + "/" + result.name)
