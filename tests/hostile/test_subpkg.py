"""The agent moved to ``ossimport_dist.fleet.agent``; a host upgraded while its agent ran still
runs one started as ``ossimport_dist.agent``. The master's alive check (the snapshot) and the stop
command must know both names: an agent missed by the first gets a twin started beside it, one
missed by the second can never be stopped. Told with real processes whose /proc cmdline carries
each name, and the real shell commands run by ``sh``."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from ossimport_dist.fleet.sshlink import (AGENT_CMDLINE, AGENT_MODULE, agent_start_command, agent_stop_command,
                                          parse_snapshot, snapshot_command)
from ossimport_dist.layout import remote_worker_tree

OLD_AGENT_MODULE = "ossimport_dist.agent"
pytestmark = pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs Linux /proc")


def cmdline_matches(tmp_path: Path, argv: list) -> bool:
    """grep -E of the pattern on a file laid out as /proc/<pid>/cmdline is (NUL-separated)."""
    sample = tmp_path / "cmdline"
    sample.write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    r = subprocess.run(["sh", "-c", f"grep -qE {shlex.quote(AGENT_CMDLINE)} {shlex.quote(str(sample))}"])
    assert r.returncode in (0, 1), "grep itself failed: the pattern is not a valid ERE"
    return r.returncode == 0


@pytest.mark.parametrize("module", [AGENT_MODULE, OLD_AGENT_MODULE])
def test_the_pattern_matches_an_agent_under_either_name(tmp_path, module):
    assert cmdline_matches(tmp_path, ["/opt/ossimport/.venv/bin/python", "-m", module, "--home", "/w", "--host", "h1"])


@pytest.mark.parametrize("argv", [
    ["/opt/ossimport/.venv/bin/python", "-c", "import sys; from ossimport_dist.service import run"],
    ["/opt/ossimport/.venv/bin/python", "-m", "ossimport_dist", "stat"],
    ["sshd: ossimport@notty"],
])
def test_the_pattern_does_not_take_another_process_for_the_agent(tmp_path, argv):
    assert not cmdline_matches(tmp_path, argv)


def test_the_start_command_runs_the_module_that_exists(tmp_path):
    assert f" -m {AGENT_MODULE} " in agent_start_command(str(tmp_path), "h1")
    r = subprocess.run([sys.executable, "-m", AGENT_MODULE, "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith(f"usage: python -m {AGENT_MODULE} ")
    assert "Traceback" not in r.stderr


@pytest.fixture
def agent_like():
    """Start a sleeping process whose cmdline names an agent module (or not), as the agent's pid
    file would name it; ended at the end whatever the command under test did."""
    started = []

    def start(working_dir: Path, *marker: str) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", *marker])
        started.append(proc)
        tree = remote_worker_tree(str(working_dir))
        Path(str(tree.root)).mkdir(parents=True, exist_ok=True)
        Path(str(tree.pid_file)).write_text(f"{proc.pid}\n")
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def run_sh(command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("module", [AGENT_MODULE, OLD_AGENT_MODULE])
def test_the_snapshot_sees_an_agent_under_either_name_alive(tmp_path, agent_like, module):
    agent_like(tmp_path, "-m", module, "--home", str(tmp_path))
    tree = remote_worker_tree(str(tmp_path))
    Path(str(tree.heartbeat)).write_text('{"host": "h1"}')
    r = run_sh(snapshot_command(str(tmp_path)))
    assert r.returncode == 0 and r.stderr == ""
    assert parse_snapshot(r.stdout) == ({"host": "h1"}, {})


def test_the_snapshot_does_not_count_another_process_behind_a_stale_pid_file(tmp_path, agent_like):
    agent_like(tmp_path, "not-our-agent")
    tree = remote_worker_tree(str(tmp_path))
    Path(str(tree.heartbeat)).write_text('{"host": "h1"}')
    r = run_sh(snapshot_command(str(tmp_path)))
    assert r.returncode == 0 and parse_snapshot(r.stdout) == (None, {})


@pytest.mark.parametrize("module", [AGENT_MODULE, OLD_AGENT_MODULE])
def test_the_stop_command_ends_an_agent_under_either_name(tmp_path, agent_like, module):
    proc = agent_like(tmp_path, "-m", module, "--home", str(tmp_path))
    stop = subprocess.Popen(["sh", "-c", agent_stop_command(str(tmp_path))])
    # reaped here, so the command's kill -0 loop sees it gone rather than a zombie
    assert proc.wait(timeout=10) != 0
    assert stop.wait(timeout=10) == 0


def test_the_stop_command_leaves_another_process_behind_a_stale_pid_file(tmp_path, agent_like):
    proc = agent_like(tmp_path, "not-our-agent")
    r = run_sh(agent_stop_command(str(tmp_path)))
    assert r.returncode == 0 and proc.poll() is None
