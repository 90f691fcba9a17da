"""Fabric tasks for operators who drive their fleets with fabric (the ``deploy`` extra:
``.venv/bin/pip install -e '.[deploy]'``; ``console.sh deploy`` itself needs no fabric).

    .venv/bin/fab -r deploy -H 10.0.0.11,10.0.0.12 deploy     install or upgrade the agent, offline
    .venv/bin/fab -r deploy -H 10.0.0.11 start                  start the agent on the hosts
    .venv/bin/fab -r deploy -H 10.0.0.11 stop                   stop it
    .venv/bin/fab -r deploy -H 10.0.0.11 status                 reachable? agent alive? tasks?

Each task calls the same functions as ``console.sh`` with the settings of ``conf/sys.properties``
(workerUserName, privateKeyFile or workerPassword, workingDir); set OSSIMPORT_SYS to use another
file. Fabric only names the hosts (-H host or host:port): the SSH session itself is opened by
``ossimport_dist.fleet.ssh``, the one module that speaks SSH, so host-key checks and error messages are
the console's.
"""

import os
import sys
from pathlib import Path

from fabric import task

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ossimport_dist.cli.console import Paths  # noqa: E402
from ossimport_dist.fleet import sshlink  # noqa: E402
from ossimport_dist.fleet.hosts import parse_host  # noqa: E402
from ossimport_dist.fleet.ssh import Connection, run_on_hosts  # noqa: E402


def _paths() -> Paths:
    sys_file = os.environ.get("OSSIMPORT_SYS")
    return Paths(ROOT, Path(sys_file) if sys_file else None)


def _host(c, paths: Paths):
    port = c.port or paths.sys_cfg.ssh_port
    return parse_host(f"{c.host}:{port}", paths.sys_cfg.ssh_port, "fab -H", 0)


def _report(results, describe=str) -> None:
    """One line per host, as console.sh prints them; exit 1 when a host failed."""
    for host, r in results.items():
        print(f"{host}: {describe(r.value) if r.ok else 'FAILED: ' + r.error}")
    if not all(r.ok for r in results.values()):
        raise SystemExit(1)


@task
def deploy(c):
    """Install (or upgrade in place) the agent on the host, from wheels the master carries."""
    from ossimport_dist.fleet.deploy import build_bundle, deploy_all

    paths = _paths()
    paths.require_distributed_settings()
    cache = paths.home.root / "master" / "bundle"
    bundle = build_bundle(paths.install_dir, cache)
    results = deploy_all([_host(c, paths)], paths.ssh_settings(), paths.install_dir,
                         paths.sys_cfg.working_dir, cache, bundle=bundle)
    _report(results, lambda version: f"deployed ossimport-dist {version}")


@task
def start(c):
    """Start the agent on the host (the master also does this by itself while it runs)."""
    paths = _paths()
    paths.require_distributed_settings()
    host = _host(c, paths)
    cmd = sshlink.agent_start_command(paths.sys_cfg.working_dir, host.name)
    _report(run_on_hosts([host], lambda conn: conn.run(cmd).stdout.strip(), paths.ssh_settings()),
            lambda out: f"agent {out}")


@task
def stop(c):
    """Stop the agent on the host (only the process its pid file names, if it is the agent)."""
    paths = _paths()
    paths.require_distributed_settings()
    host = _host(c, paths)
    cmd = sshlink.agent_stop_command(paths.sys_cfg.working_dir)
    _report(run_on_hosts([host], lambda conn: conn.run(cmd, check=False).rc, paths.ssh_settings()),
            lambda rc: "agent stopped")


@task
def status(c):
    """Reachable, agent alive (heartbeat), task folders running and finished on the host."""
    paths = _paths()
    paths.require_distributed_settings()
    host = _host(c, paths)

    def look(conn: Connection) -> str:
        beat, tasks = sshlink.parse_snapshot(conn.run(sshlink.snapshot_command(paths.sys_cfg.working_dir),
                                                         check=False).stdout)
        running = sum(1 for done in tasks.values() if not done)
        finished = sum(1 for done in tasks.values() if done)
        agent = f"agent alive (pid {beat.get('pid')})" if beat else "agent not running"
        return f"reachable, {agent}, {running} task(s) running, {finished} finished awaiting the master"

    _report(run_on_hosts([host], look, paths.ssh_settings()))
