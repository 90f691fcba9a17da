"""The distributed tracker: hands tasks to worker hosts over SSH and follows them home.

One thread per host polls it every second with one remote command that returns the agent's
heartbeat and the state of every task folder there. From that it

- pulls finished task folders back into ``succeed_tasks/`` / ``failed_tasks/`` as
  ``<taskid>_<epochms>@<host>`` (a late result for a task already finished elsewhere is dropped,
  so nothing is counted twice);
- compares ``dispatched/<host>/`` with what the host really holds: a task the host lost goes back
  to pending; a task the host holds that now belongs elsewhere is removed there;
- when the host has been unreachable, or its agent's heartbeat has not moved, for longer than
  ``workerHeartbeatTimeout`` seconds, puts every task dispatched to it back to pending;
- starts the agent when the host has none running (so a host added to workers.txt and deployed
  while a job runs starts taking tasks), and pushes ``sys.properties`` (without secrets) and its
  share of the job-wide bandwidth budget, so both change while the job runs;
- dispatches pending tasks by the host's free capacity: files accepted but not finished, against
  its thread count, not round-robin;
- marks a job stopped (``JobLayout.fail_job``) when an agent reports that its files proved the
  job cannot work (keys refused, bucket gone, endpoint dead): no host gets its tasks until
  'console.sh retry', whose first dispatch pushes the job's configuration again.

The job's configuration reaches a host once per job, as ``worker/jobs/<job>/job.cfg`` with mode
0600 (it holds the keys), never on a command line and never in a ``TASK`` file.
"""

from __future__ import annotations

import json
import logging
import shlex
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import javaproperties

from . import config as config_mod
from .errors import OperatorError
from .failurelog import FailureLog
from .fatal import stopped_job_reason
from .hosts import Host
from .layout import (DAMAGED_RESULTS, ERROR_LIST, MULTIPART_DIR, TASK_FILE, TASK_RESULTS, JobLayout, iter_lines,
                     pushed_config, task_inputs, write_atomic)
from .listformat import KeyFormatError, read_key
from .models import failure_code

log = logging.getLogger("ossimport.dispatcher")

POLL_S = 1.0
FILES_PER_THREAD = 4
AGENT_RESTART_EVERY_S = 20.0
AGENT_MODULE = "ossimport_dist.agent"


def remote_paths(working_dir: str) -> dict:
    w = working_dir.rstrip("/")
    return {"root": w, "worker": f"{w}/worker", "jobs": f"{w}/worker/jobs", "logs": f"{w}/logs",
            "heartbeat": f"{w}/worker/heartbeat.json", "pid": f"{w}/worker/agent.pid",
            "sys": f"{w}/worker/sys.properties", "budget": f"{w}/worker/throughput",
            "python": f"{w}/ossimport/venv/bin/python"}


def snapshot_command(working_dir: str) -> str:
    """One round trip: whether the agent's process lives, its heartbeat, then one line per task
    folder ('F' finished, 'R' not). It also removes half-pushed task folders ('.<id>.tmp', left
    when a link broke mid-push): only this host's tracker thread pushes, and not during a poll."""
    p = remote_paths(working_dir)
    return (f"cd {shlex.quote(p['worker'])} 2>/dev/null || exit 0; "
            "rm -rf jobs/*/tasks/.*.tmp; "
            f"pid=$(cat agent.pid 2>/dev/null) && grep -q {AGENT_MODULE} /proc/$pid/cmdline 2>/dev/null "
            "&& echo '--ALIVE--'; "
            "cat heartbeat.json 2>/dev/null; echo; echo '--TASKS--'; "
            "for d in jobs/*/tasks/*/; do [ -d \"$d\" ] || continue; "
            "if [ -f \"$d/STATUS\" ]; then echo \"F $d\"; else echo \"R $d\"; fi; done")


def parse_snapshot(text: str) -> tuple:
    """(heartbeat dict or None, {(job, task_id): finished?}); the heartbeat only when the agent's
    process is alive, so one left behind by a dead agent does not count."""
    head, _, tail = text.partition("--TASKS--")
    beat = None
    if "--ALIVE--" in head:
        try:
            beat = json.loads(head.split("--ALIVE--", 1)[1].strip() or "null")
        except ValueError:
            beat = None
    tasks = {}
    for line in tail.splitlines():
        state, _, path = line.strip().partition(" ")
        parts = path.strip("/").split("/")
        if len(parts) == 4 and parts[0] == "jobs" and parts[2] == "tasks":
            tasks[(parts[1], parts[3])] = state == "F"
    return beat, tasks


def agent_start_command(working_dir: str, host_name: str) -> str:
    p = remote_paths(working_dir)
    q = shlex.quote
    return (f"mkdir -p {q(p['logs'])} {q(p['worker'])} && cd {q(p['root'])} && "
            f"[ -x {q(p['python'])} ] || {{ echo 'not deployed: run console.sh deploy' >&2; exit 3; }}; "
            f"nohup setsid {q(p['python'])} -m {AGENT_MODULE} --home {q(p['root'])} --host {q(host_name)} "
            f">> {q(p['logs'])}/worker.log 2>&1 < /dev/null & echo started")


def agent_stop_command(working_dir: str) -> str:
    p = remote_paths(working_dir)
    q = shlex.quote
    # Only the process the pid file names, and only if it is our agent.
    return (f"pid=$(cat {q(p['pid'])} 2>/dev/null) || exit 0; "
            f"grep -q {AGENT_MODULE} /proc/$pid/cmdline 2>/dev/null || exit 0; "
            "kill $pid; for i in $(seq 1 100); do kill -0 $pid 2>/dev/null || exit 0; sleep 0.1; done; "
            "kill -9 $pid; exit 0")


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
        wd = self.working_dir
        result = conn.run(snapshot_command(wd), check=False)
        beat, remote = parse_snapshot(result.stdout)
        self._follow_heartbeat(host, state, conn, beat, now)
        jobs = {j.name: j for j in self.jobs()}
        self._take_stops(host, state, jobs)
        self._collect(host, state, conn, jobs, remote)
        if not state.agent_alive:
            return
        self._push_settings(host, state, conn)
        if not state.draining:
            self._dispatch(host, state, conn, jobs, remote)

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
    def _collect(self, host: Host, state: HostState, conn, jobs: dict, remote: dict) -> None:
        jobs_dir = remote_paths(self.working_dir)["jobs"]
        ours = {name: set(job.dispatched_ids(host.name)) for name, job in jobs.items()}
        for (job_name, task_id), finished in sorted(remote.items()):
            job = jobs.get(job_name)
            folder = f"{jobs_dir}/{job_name}/tasks/{task_id}"
            if job is None:  # cleaned on the master
                conn.remove_tree(folder)
                continue
            if finished:
                self._pull(host, conn, job, task_id, folder)
            elif task_id not in ours[job_name]:
                # Put back to pending when the host looked dead, and maybe running elsewhere now.
                if job.finished_dir(task_id) is not None or (job.pending / task_id).exists() or \
                        any((job.dispatched(h) / task_id).exists() for h in job.dispatched_hosts()):
                    log.info("host %s: task %s belongs elsewhere now; removing it there", host, task_id)
                    conn.remove_tree(folder)
        for job in jobs.values():
            for task_id in ours[job.name]:
                if (job.name, task_id) not in remote and job.finished_dir(task_id) is None:
                    log.warning("host %s: lost task %s; back to pending", host, task_id)
                    job.undispatch(task_id, host.name)
        state.running_tasks = sum(1 for (j, t), done in remote.items() if not done and j in jobs)

    def _pull(self, host: Host, conn, job: JobLayout, task_id: str, folder: str) -> None:
        incoming = job.root / ".incoming" / f"{task_id}@{host.name}"
        shutil.rmtree(incoming, ignore_errors=True)
        incoming.mkdir(parents=True)
        present = set(conn.listdir(folder))
        # A task the agent found damaged comes home with why (DAMAGED) and the damaged file.
        names = [name for name in TASK_RESULTS + DAMAGED_RESULTS if name in present]
        # The upload ids of a failed task's open uploads come home, so its retry resumes them
        # on whichever host runs it.
        if MULTIPART_DIR in present:  # most tasks have none: no extra round trip for them
            names += [f"{MULTIPART_DIR}/{n}" for n in conn.listdir(f"{folder}/{MULTIPART_DIR}")
                      if n.endswith(".json")]
        for name in names:
            (incoming / name).parent.mkdir(exist_ok=True)
            (incoming / name).write_bytes(conn.get_bytes(f"{folder}/{name}"))
        ok = (incoming / "STATUS").read_text().strip() == "Completed" if (incoming / "STATUS").is_file() else False
        dst = job.finish(task_id, host.name, incoming, ok)
        conn.remove_tree(folder)
        log.info("job %s: task %s from %s -> %s", job.name, task_id, host, dst.parent.name + "/" + dst.name)
        if dst.parent == job.failed:
            self._log_failures(job, task_id, dst)

    def _log_failures(self, job: JobLayout, task_id: str, folder: Path) -> None:
        """The master learns of a task's failures when it comes home: one line each in
        master.log, rate-limited (the agent's worker.log had them as they happened)."""
        for line in iter_lines(folder / ERROR_LIST):
            try:
                key, detail = read_key(line)
            except KeyFormatError:
                continue  # not a line this version writes: error.list still holds it
            self.failure_log.failed(job.name, task_id, key, failure_code(detail or ""), detail or "")

    # -- settings pushed to the host ------------------------------------------------------
    def _push_settings(self, host: Host, state: HostState, conn) -> None:
        p = remote_paths(self.working_dir)
        sys_props = config_mod.redact_for_worker(self.sys.current)
        if sys_props != state.pushed_sys:
            conn.makedirs(p["worker"])
            text = javaproperties.dumps(sys_props, timestamp=False, ensure_ascii=False)
            conn.put_bytes(text.encode("utf-8"), p["sys"], mode=0o600)
            state.pushed_sys = sys_props
        budget = self.budget_share()
        if budget != state.pushed_budget:
            conn.put_bytes(f"{budget or 0}\n".encode(), p["budget"], mode=0o644)
            state.pushed_budget = budget

    def budget_share(self) -> Optional[int]:
        """This host's bytes/s of the job-wide budget: the tightest job's cap over live hosts.
        Worked out at most once a second for all hosts (it reads every job's configuration)."""
        now = time.monotonic()
        with self._lock:
            cached = self._budget
        if cached is not None and now - cached[0] < POLL_S:
            return cached[1]
        share = self._compute_budget_share()
        with self._lock:
            self._budget = (now, share)
        return share

    def _compute_budget_share(self) -> Optional[int]:
        caps = []
        for job in self.jobs():
            try:
                cap = config_mod.load_job(job.config_file).job_max_throughput_kbs
            except OperatorError:
                continue
            if cap and not (job.scan_finished and not job.pending_ids() and not any(
                    job.dispatched_ids(h) for h in job.dispatched_hosts())):
                caps.append(cap)
        if not caps:
            return None
        live = max(1, len(self.live_hosts()))
        return max(1, min(caps) * 1024 // live)

    # -- dispatch -------------------------------------------------------------------------
    def _free_files(self, state: HostState, jobs: dict, remote: dict) -> int:
        beat = state.beat or {}
        threads = int(beat.get("threads") or 1)
        backlog = int(beat.get("backlog") or 0)
        running_ids = set()
        for snap in (beat.get("jobs") or {}).values():
            running_ids.update(snap.get("running", {}).keys())
        waiting = 0  # files in task folders the agent has not picked up yet
        for (job_name, task_id), done in remote.items():
            if not done and task_id not in running_ids and job_name in jobs:
                waiting += _task_file_count(jobs[job_name].dispatched(state.host) / task_id / TASK_FILE)
        return threads * FILES_PER_THREAD - backlog - waiting

    def _dispatch(self, host: Host, state: HostState, conn, jobs: dict, remote: dict) -> None:
        free = self._free_files(state, jobs, remote)
        for job in [jobs[n] for n in sorted(jobs)]:
            if free <= 0:
                return
            if job.job_failure() is not None:
                continue  # stopped on a fatal error until 'console.sh retry'
            for task_id in job.pending_ids():
                if free <= 0 or self.stop_event.is_set():
                    return
                try:
                    dispatched = job.dispatch(task_id, host.name)
                except FileNotFoundError:
                    continue  # another host's thread took it
                try:
                    self._push_task(host, state, conn, job, task_id, dispatched)
                except Exception:
                    job.undispatch(task_id, host.name)
                    raise
                state.running_tasks += 1
                free -= _task_file_count(dispatched / TASK_FILE)

    def _push_task(self, host: Host, state: HostState, conn, job: JobLayout, task_id: str, dispatched: Path) -> None:
        jobs_dir = remote_paths(self.working_dir)["jobs"]
        mtime = job.config_file.stat().st_mtime_ns
        if state.pushed_configs.get(job.name, (None,))[0] != mtime:
            push_id = uuid.uuid4().hex
            conn.makedirs(f"{jobs_dir}/{job.name}/tasks")
            conn.put_bytes(pushed_config(job.config_file.read_bytes(), push_id), f"{jobs_dir}/{job.name}/job.cfg",
                           mode=0o600)
            state.pushed_configs[job.name] = (mtime, push_id)
        tmp = f"{jobs_dir}/{job.name}/tasks/.{task_id}.tmp"
        conn.remove_tree(tmp)
        conn.makedirs(tmp)
        inputs = task_inputs(dispatched)
        if any(rel.startswith(MULTIPART_DIR + "/") for rel in inputs):
            conn.makedirs(f"{tmp}/{MULTIPART_DIR}")
        for rel in inputs:
            conn.put_bytes((dispatched / rel).read_bytes(), f"{tmp}/{rel}", mode=0o644)
        final = f"{jobs_dir}/{job.name}/tasks/{task_id}"
        conn.remove_tree(final)
        conn.rename(tmp, final)

    # -- for stat ---------------------------------------------------------------------------
    def _write_status(self, state: HostState) -> None:
        try:
            path = self.home.host_status_file(state.host)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, json.dumps(state.public()).encode())
        except OSError:
            pass


def _task_file_count(task_file: Path) -> int:
    try:
        with open(task_file, "r", encoding="ascii") as f:
            return int(json.loads(f.readline()).get("objects", 1))
    except (OSError, ValueError):
        return 1


def stop_agents(hosts: list, settings, working_dir: str) -> dict:
    """Stop the agent on every host at once; {host name: 'stopped' | one-line error}."""
    from .ssh import run_on_hosts

    results = run_on_hosts(hosts, lambda conn: conn.run(agent_stop_command(working_dir), check=False), settings)
    return {host.name: ("stopped" if r.ok else r.error) for host, r in results.items()}


def remote_checkpoints_command(working_dir: str, job_name: str) -> str:
    """Print every multipart checkpoint of a job's task folders on a host, one JSON per line
    (a checkpoint is one line of JSON)."""
    folder = shlex.quote(f"{remote_paths(working_dir)['jobs']}/{job_name}/tasks")
    return (f"for f in {folder}/*/{MULTIPART_DIR}/*.json; do "
            "[ -f \"$f\" ] && { cat \"$f\"; echo; }; done; exit 0")


def abort_open_uploads(job: JobLayout, hosts: list, settings, working_dir: str) -> list:
    """Before ``clean`` removes a job: abort the multipart uploads its checkpoints record, on
    the master and on every worker host (a task stopped mid-upload holds the newest there).
    One warning line per upload left open or host not asked."""
    from .multipart import abort_job_uploads

    remote, warnings = [], []
    if hosts:
        from .ssh import run_on_hosts

        command = remote_checkpoints_command(working_dir, job.name)
        results = run_on_hosts(hosts, lambda conn: conn.run(command, check=False).stdout, settings)
        for r in results.values():
            if r.ok:
                remote.extend(line for line in r.value.splitlines() if line.strip())
            else:
                warnings.append(f"{r.error}; uploads its tasks began are not aborted (a lifecycle rule on "
                                f"uploads at the destination expires them)")
    return warnings + abort_job_uploads(job, tuple(remote))
