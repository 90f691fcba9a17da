"""The failures of a job's running tasks, for ``stat detail`` and ``console.sh errors``.

A finished task's failures are in its ``error.list``; a running task has none yet, only the
``audit.log`` its worker appends to as each file ends (``JobLayout.running_audit_log``): on this
machine standalone, on the task's host in distributed mode (read over SSH, by ``errors`` only:
``stat detail`` stays fast and shows the counts by reason the agents' heartbeats carry).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from .accounting import audit_failures, read_progress
from .layout import STANDALONE_HOST, JobLayout
from .listformat import audit_line_records, audit_records


@dataclass
class RunningFailure:
    task_id: str
    host: str
    key: str
    detail: str


@dataclass
class RunningCounts:
    """A running task's failures by reason, as its host's heartbeat last said."""

    task_id: str
    host: str
    reasons: dict


def running_tasks(job: JobLayout) -> dict:
    """host -> ids of the tasks dispatched to it and not finished (finished ones are read from
    their error.list: a task that finished while we looked is not read twice)."""
    return {host: [t for t in job.dispatched_ids(host) if job.finished_dir(t) is None]
            for host in job.dispatched_hosts()}


def local_running_failures(job: JobLayout, task_ids: list) -> list:
    failures = []
    for task_id in task_ids:
        for key, detail in audit_failures(audit_records(job.running_audit_log(task_id))):
            failures.append(RunningFailure(task_id, STANDALONE_HOST, key, detail))
    return failures


def remote_running_failures(job: JobLayout, by_host: dict, hosts: list, settings, working_dir: str) -> tuple:
    """(failures, one warning line per host that could not be read) of the tasks ``by_host``
    (host name -> task ids) lists, read from the hosts' audit.logs at once. ``working_dir`` is
    workingDir as sys.properties writes it, the path the hosts know."""
    from .fleet.ssh import run_on_hosts

    wanted = [h for h in hosts if by_host.get(h.name)]

    def remote_path(task_id: str) -> str:
        return f"{working_dir.rstrip('/')}/{job.running_audit_log(task_id).relative_to(job.home.root)}"

    def read(conn):
        texts = {}
        for task_id in by_host[conn.host.name]:
            try:
                texts[task_id] = conn.get_bytes(remote_path(task_id))
            except OSError:
                continue  # finished and pulled home since, or not started: nothing failed there yet
        return texts

    failures, warnings = [], []
    for host, result in run_on_hosts(wanted, read, settings).items():
        if not result.ok:
            warnings.append(f"{result.error}; the failures of its {len(by_host[host.name])} running "
                            f"task(s) are not listed")
            continue
        for task_id, data in result.value.items():
            # Split at line feeds only, as the file is read on its own host.
            lines = io.StringIO(data.decode("utf-8", "surrogateescape"), newline="\n")
            for key, detail in audit_failures(audit_line_records(lines)):
                failures.append(RunningFailure(task_id, host.name, key, detail))
    return failures, warnings


def running_counts(job: JobLayout, task_ids: set) -> list:
    """Failures by reason of the running tasks, from the live progress.json (the master merges
    the agents' heartbeats into it)."""
    progress = read_progress(job.stats_file)
    hosts = progress.get("task_hosts")
    hosts = hosts if isinstance(hosts, dict) else {}
    rows = []
    running = progress.get("running")
    for task_id, counts in sorted(running.items() if isinstance(running, dict) else ()):
        reasons = counts.get("reasons") if isinstance(counts, dict) else None
        if task_id in task_ids and isinstance(reasons, dict) and reasons:
            rows.append(RunningCounts(task_id, str(hosts.get(task_id, "?")), reasons))
    return rows
