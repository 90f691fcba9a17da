"""The distributed tracker: follows every worker host over SSH, one thread per host.

Each host's thread polls it every second with one remote command that returns the agent's
heartbeat and the state of every task folder there (``sshlink.SshLink``), and hands that to the
one ``tracker.Tracker`` that standalone mode uses too: finished tasks come home, lost ones go back
to pending, pending ones are dispatched by the host's free capacity. What only a fleet has is here:

- when the host has been unreachable, or its agent's heartbeat has not moved, for longer than
  ``workerHeartbeatTimeout`` seconds, every task dispatched to it goes back to pending;
- the agent is started when the host has none running (so a host added to workers.txt and
  deployed while a job runs starts taking tasks), and ``sys.properties`` (without secrets) and
  the host's share of the job-wide bandwidth budget are pushed, so both change while the job runs;
- a job is marked stopped (``JobLayout.fail_job``) when an agent reports that its files proved
  the job cannot work (keys refused, bucket gone, endpoint dead): no host gets its tasks until
  'console.sh retry', whose first dispatch pushes the job's configuration again.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import javaproperties

from .. import config as config_mod
from ..errors import OperatorError
from ..failurelog import FailureLog
from ..fatal import stopped_job_reason
from ..layout import JobLayout, TaskFolder, iter_lines, remote_worker_tree, write_atomic
from ..listformat import KeyFormatError, read_key
from ..models import failure_code
from ..tracker import JobCaps, Tracker, job_caps
from .hosts import Host
from .sshlink import SshLink, agent_start_command

log = logging.getLogger("ossimport.dispatcher")

POLL_S = 1.0
AGENT_RESTART_EVERY_S = 20.0


@dataclass
class HostState:
    """What the tracker knows of one host; written to master/hosts/<host>.json for stat."""

    host: str
    reachable: bool = False
    agent_alive: bool = False
    last_ok: float = 0.0  # monotonic time of the last successful poll
    beat_seq: object = None
    beat_changed_at: float = 0.0
    beat: dict = field(default_factory=dict)
    running_tasks: int = 0
    error: str = ""
    draining: bool = False
    agent_started_at: float = -1e9
    pushed_configs: dict = field(default_factory=dict)  # job -> (config mtime, push id) last pushed
    pushed_sys: object = None
    pushed_budget: object = None

    def public(self) -> dict:
        beat = self.beat or {}
        jobs = beat.get("jobs", {})
        return {"host": self.host, "reachable": self.reachable, "agent_alive": self.agent_alive,
                "running_tasks": self.running_tasks, "draining": self.draining, "error": self.error,
                "threads": beat.get("threads"), "throughput_bps": beat.get("throughput_bps"),
                "starts_per_s": beat.get("starts_per_s"),
                "bytes_per_s": sum(j.get("bytes_per_s", 0.0) for j in jobs.values()),
                "files_per_s": sum(j.get("files_per_s", 0.0) for j in jobs.values()),
                "time": time.time()}


class RemoteTracker:
    """Drives every host of the workers file; ``jobs()`` gives the master's current jobs."""

    def __init__(self, home, sys_watcher, jobs, connect, stop_event: threading.Event):
        self.home = home
        self.sys = sys_watcher
        self.jobs = jobs  # () -> list[JobLayout]
        self.connect = connect  # Host -> Connection
        self.stop_event = stop_event
        self.links: dict = {}  # host name -> (Host, HostState, Thread)
        self._lock = threading.Lock()
        self._budget = None  # (monotonic time, bytes/s per host) of the last computation
        self.failure_log = FailureLog(log)  # the failures of tasks brought home, in master.log

    # -- the host list --------------------------------------------------------------------
    def set_hosts(self, hosts: list) -> None:
        """Start polling new hosts; drain hosts no longer listed."""
        names = {h.name for h in hosts}
        with self._lock:
            for host in hosts:
                if host.name in self.links:
                    self.links[host.name][1].draining = False
                    continue
                state = HostState(host.name, beat_changed_at=time.monotonic(), last_ok=time.monotonic())
                t = threading.Thread(target=self._host_loop, args=(host, state), name=f"host-{host.name}",
                                     daemon=True)
                self.links[host.name] = (host, state, t)
                log.info("host %s: added", host)
                t.start()
            for name, (host, state, _) in self.links.items():
                if name not in names and not state.draining:
                    log.info("host %s: removed from the workers file; draining", host)
                    state.draining = True

    def live_hosts(self) -> list:
        with self._lock:
            return [s for (_, s, _) in self.links.values() if s.agent_alive and not s.draining]

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for _, _, t in list(self.links.values()):
            t.join(max(0.0, deadline - time.monotonic()))

    # -- one host -------------------------------------------------------------------------
    @property
    def timeout(self) -> float:
        return float(self.sys.current.worker_heartbeat_timeout)

    @property
    def working_dir(self) -> str:
        return self.sys.current.working_dir

    def _host_loop(self, host: Host, state: HostState) -> None:
        conn = None
        while not self.stop_event.is_set():
            now = time.monotonic()
            try:
                if conn is None:
                    conn = self.connect(host)
                self._poll(host, state, conn, now)
                state.reachable, state.last_ok = True, now
                if state.error.startswith("unreachable"):
                    state.error = ""
            except (OperatorError, OSError, EOFError, Exception) as exc:  # noqa: BLE001 - a host is a row
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:  # noqa: BLE001
                        pass
                    conn = None
                error = f"unreachable: {exc}"
                if error != state.error:  # once per distinct problem, not once a second
                    log.warning("host %s: %s", host, exc)
                state.reachable = False
                state.agent_alive = False
                state.error = error
                if now - state.last_ok > self.timeout:
                    self._requeue_all(host, state, "unreachable for more than "
                                      f"{self.timeout:.0f} s")
            self._write_status(state)
            self.stop_event.wait(POLL_S)
        if conn is not None:
            conn.close()

    def _poll(self, host: Host, state: HostState, conn, now: float) -> None:
        link = SshLink(host, conn, self.working_dir, state)
        beat, remote = link.snapshot()
        self._follow_heartbeat(host, state, conn, beat, now)
        jobs = {j.name: j for j in self.jobs()}
        self._take_stops(host, state, jobs)
        tracker = Tracker(link, on_home=self._task_home)
        tracker.reconcile(jobs, remote)
        state.running_tasks = sum(1 for (j, t), done in remote.items() if not done and j in jobs)
        if not state.agent_alive:
            return
        self._push_settings(host, state, conn)
        if not state.draining:
            tracker.dispatch([jobs[n] for n in sorted(jobs)], remote, stop=self.stop_event.is_set)

    def _follow_heartbeat(self, host: Host, state: HostState, conn, beat: Optional[dict], now: float) -> None:
        seq = (beat or {}).get("seq")
        if beat and seq != state.beat_seq:
            state.beat_seq, state.beat_changed_at = seq, now
            state.beat = beat
            if not state.agent_alive:
                log.info("host %s: agent alive (pid %s)", host, beat.get("pid"))
            state.agent_alive = True
            for job, error in (beat.get("errors") or {}).items():
                state.error = f"job {job}: {error}"
            if not beat.get("errors") and not state.error.startswith("unreachable"):
                state.error = ""
            return
        if now - state.beat_changed_at > self.timeout:
            if state.agent_alive or state.running_tasks:
                self._requeue_all(host, state, f"agent heartbeat stopped for more than {self.timeout:.0f} s")
            state.agent_alive = False
        if not state.agent_alive and not state.draining and now - state.agent_started_at > AGENT_RESTART_EVERY_S:
            state.agent_started_at = now
            try:
                self._push_settings(host, state, conn)  # so the agent starts with this job's threads
            except OperatorError:
                pass  # not deployed yet: the start command below says so
            r = conn.run(agent_start_command(self.working_dir, host.name), check=False)
            if r.rc == 0:
                log.info("host %s: agent started", host)
                state.beat_changed_at = now  # a grace period to come up
            else:
                state.error = (r.stderr or r.stdout).strip().splitlines()[-1] if (r.stderr or r.stdout).strip() \
                    else f"agent did not start (exit {r.rc})"
                log.warning("host %s: %s", host, state.error)

    def _requeue_all(self, host: Host, state: HostState, why: str) -> None:
        moved = 0
        for job in self.jobs():
            for task_id in job.dispatched_ids(host.name):
                try:
                    job.undispatch(task_id, host.name)
                    moved += 1
                except OSError:
                    continue
        if moved:
            log.warning("host %s: %s; %d task(s) back to pending", host, why, moved)
        state.running_tasks = 0

    def _take_stops(self, host: Host, state: HostState, jobs: dict) -> None:
        """Mark the jobs the agent stopped. A report counts only while it names the job.cfg push
        now on the host: marking the job forgets every push, and a retry's first dispatch pushes
        again, so neither a report taken once nor one written before the retry (a heartbeat read
        late) stops the job again."""
        reports = (state.beat or {}).get("stopped")
        for name, report in (reports.items() if isinstance(reports, dict) else ()):
            job = jobs.get(name)
            pushed = state.pushed_configs.get(name)
            if job is None or not isinstance(report, dict) or pushed is None or report.get("config") != pushed[1]:
                continue
            reason = stopped_job_reason(name, str(report.get("reason") or "stopped by its worker"))
            with self._lock:  # two hosts stopping it at once: marked and logged once
                if job.job_failure() is not None:
                    continue  # another host stopped it first
                job.fail_job(reason)
                states = [s for (_, s, _) in self.links.values()]
            log.error("job %s stopped on %s: %s", name, host, reason)
            for other in states:
                # The retry's first dispatch then pushes job.cfg again: the agent makes a fresh
                # runtime from it, with the fix if job.cfg carries it.
                other.pushed_configs.pop(name, None)

    # -- results --------------------------------------------------------------------------
    def _task_home(self, job: JobLayout, task_id: str, folder: Path) -> None:
        if folder.parent == job.failed:
            self._log_failures(job, task_id, folder)

    def _log_failures(self, job: JobLayout, task_id: str, folder: Path) -> None:
        """The master learns of a task's failures when it comes home: one line each in
        master.log, rate-limited (the agent's worker.log had them as they happened)."""
        for line in iter_lines(TaskFolder(folder).error_list):
            try:
                key, detail = read_key(line)
            except KeyFormatError:
                continue  # not a line this version writes: error.list still holds it
            self.failure_log.failed(job.name, task_id, key, failure_code(detail or ""), detail or "")

    # -- settings pushed to the host ------------------------------------------------------
    def _push_settings(self, host: Host, state: HostState, conn) -> None:
        tree = remote_worker_tree(self.working_dir)
        sys_props = config_mod.redact_for_worker(self.sys.current)
        if sys_props != state.pushed_sys:
            conn.makedirs(str(tree.root))
            text = javaproperties.dumps(sys_props, timestamp=False, ensure_ascii=False)
            conn.put_bytes(text.encode("utf-8"), str(tree.sys_file), mode=0o600)
            state.pushed_sys = sys_props
        budget = self.budget_share()
        if budget != state.pushed_budget:
            conn.put_bytes(f"{budget.bytes_per_s}\n".encode(), str(tree.budget_file), mode=0o644)
            conn.put_bytes(f"{budget.files_per_s}\n".encode(), str(tree.qps_budget_file), mode=0o644)
            state.pushed_budget = budget

    def budget_share(self) -> JobCaps:
        """This host's share of the job-wide budgets (bytes/s, files started/s): the tightest
        job's caps over the live hosts. Worked out at most once a second for all hosts (it reads
        every job's configuration)."""
        now = time.monotonic()
        with self._lock:
            cached = self._budget
        if cached is not None and now - cached[0] < POLL_S:
            return cached[1]
        share = self._compute_budget_share()
        with self._lock:
            self._budget = (now, share)
        return share

    def _compute_budget_share(self) -> JobCaps:
        caps = job_caps(self.jobs())
        live = max(1, len(self.live_hosts()))
        # Never 0 for a capped job: 0 would be no cap at all on the host.
        return JobCaps(*(max(1, cap // live) if cap else 0 for cap in (caps.bytes_per_s, caps.files_per_s)))

    # -- for stat ---------------------------------------------------------------------------
    def _write_status(self, state: HostState) -> None:
        try:
            path = self.home.host_status_file(state.host)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, json.dumps(state.public()).encode())
        except OSError:
            pass
