"""The master's Prometheus endpoint in standalone mode: served while the service runs, off when
metricsAddress is empty, a bad address refused in one line, a taken port said in the log."""

from __future__ import annotations

import socket
import urllib.request

import pytest

from conftest import wait_for, write_tree


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metrics_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def test_a_standalone_service_serves_its_jobs_metrics_while_it_runs(migration):
    write_tree(migration.src, {f"a/{i}.txt": b"x" * (i + 1) for i in range(12)})
    port = free_port()
    migration.write_conf(sys_props={"metricsAddress": f"127.0.0.1:{port}"})
    migration.ok("submit", str(migration.job_file))
    migration.ok("start")
    assert migration.wait_state()["JobState"] == "Succeed"
    text = metrics_text(port)
    assert 'ossimport_job_files{job="local_test",outcome="succeed"} 12.0' in text
    assert 'ossimport_job_bytes{job="local_test",outcome="succeed"} 78.0' in text
    assert 'ossimport_job_state{job="local_test",state="Succeed"} 1.0' in text
    assert 'ossimport_job_tasks{job="local_test",state="succeed"} 2.0' in text
    assert "ossimport_host_" not in text  # no fleet
    assert migration.secret not in text
    migration.ok("stop")
    with pytest.raises(OSError):
        metrics_text(port)


def test_a_bad_metrics_address_is_refused_and_a_taken_port_is_said_in_the_log(migration):
    write_tree(migration.src, {"a.txt": b"a"})
    migration.write_conf(sys_props={"metricsAddress": "localhost:http"})
    r = migration.console("submit")
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
    assert "metricsAddress: 'localhost:http' is not HOST:PORT, :PORT or PORT" in r.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        migration.write_conf(sys_props={"metricsAddress": str(taken.getsockname()[1])})
        migration.ok("submit", str(migration.job_file))
        migration.ok("start")
        assert migration.wait_state()["JobState"] == "Succeed"  # the migration goes on without them
        log = (migration.work / "logs" / "ossimport2.log").read_text()
        wait_for(lambda: "metrics: cannot listen on 127.0.0.1:" in log, "the log line", 1)
        assert "no metrics served: fix metricsAddress in sys.properties" in log
