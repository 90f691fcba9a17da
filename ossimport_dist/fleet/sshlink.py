"""A fleet host as the tracker reaches it: over one SSH connection (paramiko, SFTP for files).

``SshLink`` is the ``tracker.WorkerLink`` of a worker host: its task folders listed in one
round trip (with the agent's heartbeat), a task pushed by SFTP into a staging folder and
renamed, a finished task's results copied home. The shell commands that control the agent
(start, stop, the snapshot, the checkpoints clean aborts) live here too, for the master and
``deploy/fabfile.py``.

The job's configuration reaches a host once per job (and again after a change or a retry), as
``worker/jobs/<job>/job.cfg`` with mode 0600 (it holds the keys), never on a command line and
never in a ``TASK`` file; its first line names the push (``layout.pushed_config``).
"""

from __future__ import annotations

import json
import shlex
import shutil
import uuid
from pathlib import Path
from typing import Optional

from ..layout import (DAMAGED_RESULTS, JOBS_DIR, MULTIPART_DIR, STATUS_FILE, TASK_FILE, TASK_RESULTS, TASKS_DIR,
                     JobLayout, pushed_config, remote_worker_tree)
from ..tracker import FILES_PER_THREAD, WorkerLink, task_file_count
from .hosts import Host

AGENT_MODULE = "ossimport_dist.fleet.agent"
# What marks our agent in /proc/<pid>/cmdline. A host upgraded while its agent ran still runs one
# started as 'ossimport_dist.agent' (before fleet/): it must count as alive, or a second agent
# would start beside it, and be stopped by the same command.
AGENT_CMDLINE = r"ossimport_dist(\.fleet)?\.agent"


class SshLink(WorkerLink):
    """One worker host over ``conn`` (an ``ssh.Connection``), for one poll of its tracker thread;
    ``state`` (the dispatcher's ``HostState``) carries what outlives a poll: the heartbeat, the
    job.cfg pushes, the running task count."""

    def __init__(self, host: Host, conn, working_dir: str, state):
        self.host = host.name
        self.files = conn
        self.tree = remote_worker_tree(working_dir)
        self.working_dir = working_dir
        self.state = state

    def snapshot(self) -> tuple:
        """(heartbeat or None, {(job, task id): finished?}) in one round trip."""
        return parse_snapshot(self.files.run(snapshot_command(self.working_dir), check=False).stdout)

    def tasks(self, jobs: dict) -> dict:
        return self.snapshot()[1]

    def free_files(self, jobs: dict, tasks: Optional[dict]) -> int:
        beat = self.state.beat or {}
        threads = int(beat.get("threads") or 1)
        backlog = int(beat.get("backlog") or 0)
        running_ids = set()
        for snap in (beat.get("jobs") or {}).values():
            running_ids.update(snap.get("running", {}).keys())
        waiting = 0  # files in task folders the agent has not picked up yet
        for (job_name, task_id), done in (tasks or {}).items():
            if not done and task_id not in running_ids and job_name in jobs:
                waiting += task_file_count(jobs[job_name].dispatched(self.host) / task_id / TASK_FILE)
        return threads * FILES_PER_THREAD - backlog - waiting

    def before_push(self, job: JobLayout) -> None:
        mtime = job.config_file.stat().st_mtime_ns
        if self.state.pushed_configs.get(job.name, (None,))[0] != mtime:
            push_id = uuid.uuid4().hex
            self.files.makedirs(str(self.tree.tasks(job.name)))
            self.files.put_bytes(pushed_config(job.config_file.read_bytes(), push_id),
                                 str(self.tree.job_config(job.name)), mode=0o600)
            self.state.pushed_configs[job.name] = (mtime, push_id)

    def pushed(self, job: JobLayout, task_id: str) -> None:
        self.state.running_tasks += 1

    def fetch(self, job: JobLayout, task_id: str) -> Path:
        folder = str(self.tree.task(job.name, task_id))
        incoming = job.incoming_from(task_id, self.host)
        shutil.rmtree(incoming, ignore_errors=True)
        incoming.mkdir(parents=True)
        present = set(self.files.listdir(folder))
        # A task the agent found damaged comes home with why (DAMAGED) and the damaged file.
        names = [name for name in TASK_RESULTS + DAMAGED_RESULTS if name in present]
        # The upload ids of a failed task's open uploads come home, so its retry resumes them
        # on whichever host runs it.
        if MULTIPART_DIR in present:  # most tasks have none: no extra round trip for them
            names += [f"{MULTIPART_DIR}/{n}" for n in self.files.listdir(f"{folder}/{MULTIPART_DIR}")
                      if n.endswith(".json")]
        for name in names:
            (incoming / name).parent.mkdir(exist_ok=True)
            (incoming / name).write_bytes(self.files.get_bytes(f"{folder}/{name}"))
        return incoming


def snapshot_command(working_dir: str) -> str:
    """One round trip: whether the agent's process lives, its heartbeat, then one line per task
    folder ('F' finished, 'R' not). It also removes half-pushed task folders ('.<id>.tmp', left
    when a link broke mid-push): only this host's tracker thread pushes, and not during a poll."""
    tree = remote_worker_tree(working_dir)
    tasks = f"{JOBS_DIR}/*/{TASKS_DIR}"  # relative to the worker folder, as parse_snapshot reads them
    return (f"cd {shlex.quote(str(tree.root))} 2>/dev/null || exit 0; "
            f"rm -rf {tasks}/.*.tmp; "
            f"pid=$(cat {tree.pid_file.name} 2>/dev/null) "
            f"&& grep -qE {shlex.quote(AGENT_CMDLINE)} /proc/$pid/cmdline 2>/dev/null && echo '--ALIVE--'; "
            f"cat {tree.heartbeat.name} 2>/dev/null; echo; echo '--TASKS--'; "
            f"for d in {tasks}/*/; do [ -d \"$d\" ] || continue; "
            f"if [ -f \"$d/{STATUS_FILE}\" ]; then echo \"F $d\"; else echo \"R $d\"; fi; done")


def parse_snapshot(text: str) -> tuple:
    """(heartbeat dict or None, {(job, task_id): finished?}); the heartbeat only when the agent's
    process is alive, so one left behind by a dead agent does not count, and only when it is a
    JSON object (a torn or damaged file reads as no heartbeat this poll)."""
    head, _, tail = text.partition("--TASKS--")
    beat = None
    if "--ALIVE--" in head:
        try:
            beat = json.loads(head.split("--ALIVE--", 1)[1].strip() or "null")
        except ValueError:
            beat = None
        beat = beat if isinstance(beat, dict) else None
    tasks = {}
    tree = remote_worker_tree("/")  # the lines name folders relative to it: only their shape counts
    for line in tail.splitlines():
        state, _, path = line.strip().partition(" ")
        task = tree.task_of(path)
        if task is not None:
            tasks[task] = state == "F"
    return beat, tasks


def agent_start_command(working_dir: str, host_name: str) -> str:
    from .deploy import remote_python

    tree = remote_worker_tree(working_dir)
    root, logs, python = str(tree.working_dir), str(tree.logs), remote_python(str(tree.working_dir))
    q = shlex.quote
    return (f"mkdir -p {q(logs)} {q(str(tree.root))} && cd {q(root)} && "
            f"[ -x {q(python)} ] || {{ echo 'not deployed: run console.sh deploy' >&2; exit 3; }}; "
            f"nohup setsid {q(python)} -m {AGENT_MODULE} --home {q(root)} --host {q(host_name)} "
            f">> {q(logs)}/worker.log 2>&1 < /dev/null & echo started")


def agent_stop_command(working_dir: str) -> str:
    q = shlex.quote
    # Only the process the pid file names, and only if it is our agent.
    return (f"pid=$(cat {q(str(remote_worker_tree(working_dir).pid_file))} 2>/dev/null) || exit 0; "
            f"grep -qE {shlex.quote(AGENT_CMDLINE)} /proc/$pid/cmdline 2>/dev/null || exit 0; "
            "kill $pid; for i in $(seq 1 100); do kill -0 $pid 2>/dev/null || exit 0; sleep 0.1; done; "
            "kill -9 $pid; exit 0")




def stop_agents(hosts: list, settings, working_dir: str) -> dict:
    """Stop the agent on every host at once; {host name: 'stopped' | one-line error}."""
    from .ssh import run_on_hosts

    results = run_on_hosts(hosts, lambda conn: conn.run(agent_stop_command(working_dir), check=False), settings)
    return {host.name: ("stopped" if r.ok else r.error) for host, r in results.items()}


def remote_checkpoints_command(working_dir: str, job_name: str) -> str:
    """Print every multipart checkpoint of a job's task folders on a host, one JSON per line
    (a checkpoint is one line of JSON)."""
    folder = shlex.quote(str(remote_worker_tree(working_dir).tasks(job_name)))
    return (f"for f in {folder}/*/{MULTIPART_DIR}/*.json; do "
            "[ -f \"$f\" ] && { cat \"$f\"; echo; }; done; exit 0")


def abort_open_uploads(job: JobLayout, hosts: list, settings, working_dir: str) -> list:
    """Before ``clean`` removes a job: abort the multipart uploads its checkpoints record, on
    the master and on every worker host (a task stopped mid-upload holds the newest there).
    One warning line per upload left open or host not asked."""
    from ..multipart import abort_job_uploads

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
