"""The agent: the small long-running process on each worker host of a distributed job.

The master's tracker pushes task folders into ``worker/jobs/<job>/tasks/`` over SFTP (and, once
per job, the job's configuration as ``worker/jobs/<job>/job.cfg``, mode 0600, the only place a
worker holds credentials). The agent runs them with the same ``Worker`` as standalone mode,
which writes ``audit.log``, ``error.list``, ``COUNTS``, ``STATUS`` and ``DONE`` into each task
folder; the tracker pulls finished folders back. The agent keeps ``worker/heartbeat.json`` fresh
so the tracker knows it is alive and how much room it has.

Settings the tracker may change while the agent runs (re-read every few seconds):
``worker/sys.properties`` (workerTaskThreadNum, workerMaxThroughput(KB/s), ... without any
password), ``worker/throughput`` (this host's share of a job-wide bandwidth budget, bytes/s) and
``worker/qps`` (its share of jobMaxQps, files started per second).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Optional

from .. import config as config_mod
from ..errors import OperatorError
from ..layout import (DamagedStateFile, Home, TaskFolder, damaged_task_reason, mark_task_damaged, push_id_of,
                      write_atomic)
from ..service import ServiceLoop, build_runtime, effective_qps, effective_rate, log_to
from ..throttle import Throttle
from ..transfer import Backpressure
from ..worker import Worker

log = logging.getLogger("ossimport.agent")

TICK_S = 0.5
HEARTBEAT_EVERY_S = 1.0
SETTINGS_EVERY_S = 2.0


def read_budget(path: Path) -> Optional[int]:
    try:
        return int(path.read_text().strip()) or None
    except (OSError, ValueError):
        return None


class Agent(ServiceLoop):
    """Runs the tasks the master pushed to this host, on the service's tick loop."""

    name = "agent"
    tick_s = TICK_S

    def __init__(self, home: Home, host: str):
        super().__init__()
        self.home = home
        self.paths = home.worker
        self.host = host
        self._last_beat = self._last_settings = 0.0
        self.sys_cfg = self._load_sys()
        self._settings_seen = None
        self._budget = read_budget(self.paths.budget_file)
        self.throttle = Throttle(effective_rate(self.sys_cfg, self._budget))
        self.backpressure = Backpressure()
        self.worker = Worker(self.sys_cfg.worker_task_thread_num, self._task_finished, host=host,
                             on_job_stopped=self._job_stopped)
        self.runtimes: dict = {}  # job -> (config mtime, JobRuntime, the push of job.cfg it was made from)
        self._bad_jobs: dict = {}  # job -> error text, reported in the heartbeat
        self._stops: dict = {}  # job -> the JobRuntime that stopped
        self._finished = 0

    def _load_sys(self):
        if self.paths.sys_file.is_file():
            try:
                return config_mod.load_sys(self.paths.sys_file)
            except OperatorError as exc:
                log.error("%s", exc)
        return config_mod.parse_sys_text("", "<defaults>")

    # -- jobs and tasks ---------------------------------------------------------------------
    def _runtime(self, job: str):
        cfg_path = self.paths.job_config(job)
        mtime = cfg_path.stat().st_mtime_ns
        cached = self.runtimes.get(job)
        if cached and cached[0] == mtime:
            return cached[1]
        # Read after the stat: a push landing in between leaves the old mtime cached, so the next
        # task rebuilds the runtime from the new file.
        push_id = push_id_of(cfg_path)
        job_cfg = config_mod.load_job(cfg_path)
        runtime = build_runtime(job_cfg, self.sys_cfg, self.throttle, self.backpressure, self.host)
        self.runtimes[job] = (mtime, runtime, push_id)
        return runtime

    def _pick_up_tasks(self) -> None:
        jobs_dir = self.paths.jobs
        if not jobs_dir.is_dir():
            return
        for job_dir in sorted(p for p in jobs_dir.iterdir() if p.is_dir()):
            job = job_dir.name
            tasks = self.paths.tasks(job)
            if not tasks.is_dir() or not self.paths.job_config(job).is_file():
                continue
            running = set(self.worker.running(job))
            for task_dir in sorted(tasks.iterdir()):
                if task_dir.name.startswith(".") or task_dir.name in running or TaskFolder(task_dir).status():
                    continue
                try:
                    runtime = self._runtime(job)
                    self._bad_jobs.pop(job, None)
                except OperatorError as exc:
                    if self._bad_jobs.get(job) != str(exc):
                        log.error("job %s: cannot run its tasks: %s", job, exc)
                    self._bad_jobs[job] = str(exc)
                    break
                try:
                    self.worker.submit(runtime, task_dir)
                except DamagedStateFile as damage:
                    # The master pushed bytes it never parsed: the task fails here, with why,
                    # and goes home failed; the agent keeps running the others.
                    reason = damaged_task_reason(job, task_dir.name, damage.problem)
                    mark_task_damaged(task_dir, reason)
                    log.error("job %s: %s", job, reason)

    def _job_stopped(self, runtime, reason: str) -> None:
        # Reported in the heartbeat for as long as this runtime serves the job, naming the push
        # of job.cfg it was made from: the master takes a report only for the push it made last.
        # The master's next job.cfg (pushed after a retry) makes a fresh runtime, which ends it.
        self._stops[runtime.name] = runtime

    def _stop_reports(self) -> dict:
        reports = {}
        for job, runtime in list(self._stops.items()):
            current = self.runtimes.get(job)
            if current is not None and current[1] is runtime:
                reports[job] = {"reason": runtime.stopped, "config": current[2]}
        return reports

    def _task_finished(self, job: str, task_id: str, folder: Path, ok: bool) -> None:
        # STATUS in the folder is the signal; the tracker pulls the folder back.
        self._finished += 1

    # -- live settings --------------------------------------------------------------------
    def _reload_settings(self) -> None:
        seen = []
        for p in (self.paths.sys_file, self.paths.budget_file, self.paths.qps_budget_file):
            try:
                seen.append(p.stat().st_mtime_ns)
            except OSError:
                seen.append(None)
        if seen != self._settings_seen:
            self._settings_seen = seen
            self.sys_cfg = self._load_sys()
            if self.sys_cfg.worker_task_thread_num != self.worker.threads:
                self.worker.resize(self.sys_cfg.worker_task_thread_num)
            self._budget = read_budget(self.paths.budget_file)
            qps = effective_qps(self.sys_cfg, read_budget(self.paths.qps_budget_file))
            if qps != self.worker.starts.rate:
                log.info("file starts now %s", f"at most {qps} per second" if qps else "not capped")
                self.worker.starts.set_rate(qps)
        # At every look, changed files or not: a schedule's slot moves with the clock.
        rate = effective_rate(self.sys_cfg, self._budget)
        if rate != self.throttle.rate:
            log.info("throughput now %s", f"{rate // 1024} KB/s" if rate else "unlimited")
            self.throttle.set_rate(rate)

    # -- heartbeat ------------------------------------------------------------------------
    def heartbeat(self) -> dict:
        jobs = {}
        for job, (_, runtime, _) in list(self.runtimes.items()):
            jobs[job] = runtime.account.snapshot()
        return {"host": self.host, "pid": os.getpid(), "time": time.time(), "seq": time.monotonic_ns(),
                "threads": self.worker.threads, "backlog": self.worker.backlog(),
                "throughput_bps": self.throttle.rate, "starts_per_s": self.worker.starts.rate,
                "finished_tasks": self._finished,
                "jobs": jobs, "errors": dict(self._bad_jobs), "stopped": self._stop_reports()}

    # -- the service loop ----------------------------------------------------------------
    def started(self) -> None:
        self.home.ensure()
        self.paths.root.mkdir(parents=True, exist_ok=True)
        write_atomic(self.paths.pid_file, f"{os.getpid()}\n".encode())
        log.info("agent started on %s (pid %d, %d threads)", self.host, os.getpid(), self.worker.threads)
        self.worker.start()

    def tick(self, now: float) -> None:
        self.worker.flush_audit_logs()
        if now - self._last_settings >= SETTINGS_EVERY_S:
            self._last_settings = now
            self._reload_settings()
        self._pick_up_tasks()
        if now - self._last_beat >= HEARTBEAT_EVERY_S:
            self._last_beat = now
            write_atomic(self.paths.heartbeat, json.dumps(self.heartbeat()).encode())
            self.worker.failure_log.flush()

    def stopping(self) -> None:
        self.worker.stop()
        try:
            if self.paths.pid_file.read_text().strip() == str(os.getpid()):
                self.paths.pid_file.unlink()
                self.paths.heartbeat.unlink()
        except OSError:
            pass


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ossimport_dist.fleet.agent")
    p.add_argument("--home", required=True, help="workingDir on this host")
    p.add_argument("--host", default=None, help="this host's name in workers.txt")
    args = p.parse_args(argv)
    home = Home(Path(args.home))
    home.ensure()
    log_to(home.logs / "worker.log")
    return Agent(home, args.host or socket.gethostname()).run()


if __name__ == "__main__":
    sys.exit(main())
