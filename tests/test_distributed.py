"""Distributed migrations over a real fleet: sshd "hosts" on 127.0.0.11-13, each in its own mount
namespace, driven through the real console.sh (deploy, submit, start, stat, stop)."""

from __future__ import annotations

import csv
import gzip
import json
import os
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import jsonschema
import psutil
import pytest

from conftest import CONSOLE, ROOT, assert_migrated, awkward_tree, checked_stat, task_keys, wait_for, write_tree
from ossimport_dist.layout import Home

pytest_plugins = ["fleet"]  # the session-wide fleet of sshd hosts; its deployed fixture installs the agent
# One worker of a parallel run holds the fleet (sshd on 127.0.0.11-13): its tests run there.
pytestmark = pytest.mark.xdist_group("fleet")


class Cluster:
    """The master side of a distributed job: conf/, workers.txt, the shared workingDir."""

    def __init__(self, fleet, root: Path, bucket, key_id: str, secret: str, hosts=None, password_login=False):
        self.fleet, self.root, self.bucket = fleet, root, bucket
        self.key_id, self.secret = key_id, secret
        self.job_name = "job_" + uuid.uuid4().hex[:8]
        self.hosts = hosts or fleet.hosts
        (root / "conf").mkdir(parents=True, exist_ok=True)
        self.sys_file = root / "conf" / "sys.properties"
        self.job_file = root / "conf" / "job.cfg"
        self.workers_file = root / "workers.txt"
        fleet.write_workers_file(self.workers_file, self.hosts)
        self.sys_props = {
            "workingDir": fleet.working_dir, "workerUserName": fleet.user,
            "workerTaskThreadNum": "4", "workerHeartbeatTimeout": "6",
            "sshKnownHostsFile": fleet.known_hosts,
        }
        if password_login:
            self.sys_props["workerPassword"] = fleet.password
        else:
            self.sys_props["privateKeyFile"] = fleet.key_file
        self.write_sys()
        # The source is a "NAS": a folder every host sees at the same path, readable by the worker user.
        self.src = Path(tempfile.mkdtemp(prefix="ossimport-nas-", dir="/srv"))
        os.chmod(self.src, 0o755)

    def write_sys(self, **changes) -> None:
        self.sys_props.update(changes)
        self.sys_file.write_text("".join(f"{k}={v}\n" for k, v in self.sys_props.items()))
        os.chmod(self.sys_file, 0o600)

    def write_job(self, **props) -> None:
        p = {"jobName": self.job_name, "srcType": "local", "srcPrefix": str(self.src) + "/",
             "destDomain": self.bucket.endpoint, "destBucket": self.bucket.bucket_name,
             "destAccessKey": self.key_id, "destSecretKey": self.secret, "taskObjectCountLimit": "5"}
        p.update(props)
        self.job_file.write_text("".join(f"{k}={v}\n" for k, v in p.items()))
        os.chmod(self.job_file, 0o600)

    def put_files(self, files: dict) -> None:
        write_tree(self.src, files)
        for p in self.src.rglob("*"):
            os.chmod(p, 0o755 if p.is_dir() else 0o644)

    def console(self, *args, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(CONSOLE), "--sys", str(self.sys_file), "--workers", str(self.workers_file),
                               *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def ok(self, *args, timeout: float = 300) -> str:
        r = self.console(*args, timeout=timeout)
        assert r.returncode == 0, f"console {args} failed: {r.stdout}{r.stderr}"
        return r.stdout

    def stat_text(self, *args) -> str:
        return checked_stat(self.console("stat", *args), args)

    def stat(self) -> dict:
        out = self.stat_text(self.job_name)
        return dict(line.split(":", 1) for line in out.splitlines() if ":" in line and not line.startswith(" "))

    def wait_state(self, want=("Succeed", "Failed"), timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            s = self.stat()
            if s.get("JobState") in want:
                return s
            assert time.monotonic() < deadline, f"job did not reach {want} in {timeout}s: {s}"
            time.sleep(0.5)

    @property
    def job_dir(self) -> Path:
        return Path(self.fleet.working_dir) / "master" / "jobs" / self.job_name

    def finished(self, state: str) -> list:
        d = self.job_dir / state
        return sorted(p for p in d.iterdir() if p.is_dir()) if d.is_dir() else []

    def master_pid(self) -> int:
        try:
            return int((Path(self.fleet.working_dir) / "master" / "ossimport.pid").read_text().split()[0])
        except (OSError, ValueError):
            return 0


@pytest.fixture
def cluster(fleet, deployed, tmp_path, bucket, emulator):
    fleet.ensure_up()
    made = []

    def make(**kw):
        c = Cluster(fleet, tmp_path / f"c{len(made)}", bucket, emulator.key_id, emulator.secret, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.console("stop")
        c.console("clean", c.job_name)
        subprocess.run(["rm", "-rf", str(c.src)])


def _assert_counted_once(c: Cluster, files: dict) -> None:
    keys, ids = [], []
    for d in c.finished("succeed_tasks"):
        ids.append(d.name.split("_")[0])
        keys += task_keys(d / "TASK")
        counts = json.loads((d / "COUNTS").read_text())
        assert counts["failed"] == 0
    assert len(ids) == len(set(ids)), "a task was recorded twice"
    assert sorted(keys) == sorted(files)


def test_full_job_over_three_workers_with_password_login(cluster, fleet):
    c = cluster(password_login=True)
    files = awkward_tree(120)
    c.put_files(files)
    c.write_job()
    c.ok("submit", str(c.job_file))
    out = c.ok("start")
    assert "master started" in out
    s = c.wait_state()
    assert s["JobState"] == "Succeed", s
    assert_migrated(c.bucket, files)
    _assert_counted_once(c, files)
    hosts_used = {d.name.rsplit("@", 1)[1] for d in c.finished("succeed_tasks")}
    assert hosts_used == {h.name for h in fleet.hosts}, f"tasks ran only on {hosts_used}"
    stat = c.stat_text(c.job_name)
    for host in fleet.hosts:
        assert str(host) in stat
    # The per-host view as a script reads it: one row per host, its finished tasks and bytes
    # adding up to the job's.
    r = c.console("stat", "--json", c.job_name)
    doc = json.loads(r.stdout)
    jsonschema.validate(doc, json.loads((ROOT / "docs" / "stat.schema.json").read_text()))
    assert r.returncode == doc["exit_code"] == 0
    [job] = doc["jobs"]
    rows = {row["host"]: row for row in doc["hosts"]}
    assert set(rows) == {str(h) for h in fleet.hosts}
    assert all(row["fresh"] and row["reachable"] and row["agent_alive"] for row in rows.values()), rows
    assert sum(row["done_tasks"] for row in rows.values()) == job["succeed_tasks"]
    assert sum(row["bytes"] for row in rows.values()) == job["totals"]["succeed_bytes"] == job["bytes"]
    # Credentials reached the hosts only in a 0600 file, never the master's password.
    for host in fleet.hosts:
        cfg = Path(fleet.host_dir(host)) / "worker" / "jobs" / c.job_name / "job.cfg"
        assert cfg.is_file() and (cfg.stat().st_mode & 0o077) == 0
        pushed_sys = (Path(fleet.host_dir(host)) / "worker" / "sys.properties").read_text()
        assert fleet.password not in pushed_sys
        for p in Path(fleet.host_dir(host)).rglob("TASK"):
            assert c.secret not in p.read_text()
    assert fleet.password not in (Path(fleet.working_dir) / "logs" / "master.log").read_text()
    out = c.ok("stop")
    assert out.count("agent stopped") == 3
    # The report names, for each object, the host whose task copied it, and adds up per host.
    c.ok("report", c.job_name)
    host_of = {key: d.name.rsplit("@", 1)[1] for d in c.finished("succeed_tasks") for key in task_keys(d / "TASK")}
    with gzip.open(c.job_dir / "report" / "objects.csv.gz", "rt", encoding="utf-8", newline="") as f:
        report_rows = list(csv.DictReader(f))
    assert len(report_rows) == len(files)
    for row in report_rows:
        key = json.loads(row["key"]) if row["key"].startswith('"') else row["key"]
        assert row["outcome"] == "copied" and row["host"] == host_of[key], row
    summary = json.loads((c.job_dir / "report" / "summary.json").read_text())
    assert {h: v["objects"] for h, v in summary["by_host"].items()} == \
        {h.name: list(host_of.values()).count(h.name) for h in fleet.hosts}
    assert summary["manifest"]["sha256"] and summary["complete"] is True


def test_agent_killed_and_host_gone_mid_job_still_finishes_everything_once(cluster, fleet):
    c = cluster()
    files = {f"p/{i:04d}.bin": os.urandom(16 * 1024 + i) for i in range(240)}
    c.put_files(files)
    c.write_sys(**{"workerMaxThroughput(KB/s)": "64"})
    c.write_job()
    c.ok("submit", str(c.job_file))
    c.ok("start")
    victim = fleet.hosts[1]
    dispatched = c.job_dir / "dispatched" / victim.name
    victim_tasks = Path(fleet.host_dir(victim)) / "worker" / "jobs" / c.job_name / "tasks"
    deadline = time.monotonic() + 60
    while not any((t / "audit.log").is_file() and not (t / "STATUS").exists()
                  for t in (victim_tasks.iterdir() if victim_tasks.is_dir() else [])):
        assert time.monotonic() < deadline, "the victim host never started a task"
        time.sleep(0.1)
    pid = int((Path(fleet.host_dir(victim)) / "worker" / "agent.pid").read_text())
    os.kill(pid, signal.SIGKILL)  # the agent dies mid-task ...
    fleet.stop_sshd(victim)  # ... and the host drops off the network
    try:
        c.write_sys(**{"workerMaxThroughput(KB/s)": "0"})
        s = c.wait_state(timeout=240)
        assert s["JobState"] == "Succeed", s
        assert_migrated(c.bucket, files)
        _assert_counted_once(c, files)
        assert not (dispatched.is_dir() and os.listdir(dispatched))
        log = (Path(fleet.working_dir) / "logs" / "master.log").read_text()
        assert "back to pending" in log
    finally:
        fleet.start_sshd(victim)


def test_master_killed_and_restarted_mid_job(cluster, fleet):
    c = cluster()
    files = {f"m/{i:04d}.txt": f"file {i}\n".encode() * (i + 1) for i in range(200)}
    c.put_files(files)
    c.write_sys(**{"workerMaxThroughput(KB/s)": "64"})
    c.write_job()
    c.ok("submit", str(c.job_file))
    c.ok("start")
    wait_for(lambda: len(c.finished("succeed_tasks")) >= 3, "3 tasks never finished")
    master = c.master_pid()
    os.kill(master, signal.SIGKILL)
    wait_for(lambda: not psutil.pid_exists(master) or psutil.Process(master).status() == psutil.STATUS_ZOMBIE,
             "the killed master is still running")
    c.write_sys(**{"workerMaxThroughput(KB/s)": "0"})
    c.ok("start")
    s = c.wait_state(timeout=180)
    assert s["JobState"] == "Succeed", s
    assert_migrated(c.bucket, files)
    _assert_counted_once(c, files)


def test_bad_credentials_and_unreachable_hosts_are_one_line_each(cluster, fleet):
    c = cluster(password_login=True)
    c.write_sys(workerPassword="not-the-password")
    r = c.console("deploy", timeout=300)
    assert r.returncode == 1
    for host in fleet.hosts:
        line = [l for l in r.stdout.splitlines() if l.startswith(f"{host}:")]
        assert len(line) == 1 and "FAILED" in line[0] and "authentication failed" in line[0], r.stdout
    assert "not-the-password" not in r.stdout + r.stderr

    c2 = cluster()
    c2.write_sys(privateKeyFile=str(Path(fleet.key_file).with_name("wrong_key")))
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", c2.sys_props["privateKeyFile"]],
                   check=True)
    r = c2.console("deploy", timeout=300)
    assert r.returncode == 1 and r.stdout.count("authentication failed") == len(fleet.hosts), r.stdout

    c3 = cluster(hosts=fleet.hosts[:1])
    c3.workers_file.write_text(f"{fleet.hosts[0]}\n127.0.0.19:22\n")
    r = c3.console("deploy", timeout=300)
    assert r.returncode == 1
    assert f"{fleet.hosts[0]}: deployed" in r.stdout
    bad = [l for l in r.stdout.splitlines() if l.startswith("127.0.0.19")]
    assert len(bad) == 1 and "cannot connect" in bad[0]


def test_hosts_join_and_leave_while_the_job_runs_and_budget_changes_live(cluster, fleet):
    first, second, third = fleet.hosts
    c = cluster(hosts=[first, second])
    files = {f"j/{i:04d}.bin": os.urandom(32 * 1024) for i in range(300)}
    c.put_files(files)
    c.write_sys(**{"workerMaxThroughput(KB/s)": "64"})
    c.write_job(**{"jobMaxThroughput(KB/s)": "96", "jobMaxQps": "60"})
    c.ok("submit", str(c.job_file))
    c.ok("start")
    budget = {h: Path(fleet.host_dir(h)) / "worker" / "throughput" for h in fleet.hosts}
    qps = {h: Path(fleet.host_dir(h)) / "worker" / "qps" for h in fleet.hosts}

    def wait_for(cond, what, timeout=60):
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                log = (Path(fleet.working_dir) / "logs" / "master.log").read_text()
                raise AssertionError(f"{what}; stat:\n{c.ok('stat', c.job_name)}\nmaster.log:\n{log[-3000:]}")
            time.sleep(0.2)

    # The job-wide 96 KB/s is split between the two live hosts.
    wait_for(lambda: all(_read_int(budget[h]) == 48 * 1024 for h in (first, second)), "budget never split in two")
    wait_for(lambda: all(_read_int(qps[h]) == 30 for h in (first, second)), "jobMaxQps never split in two")
    # A third host joins: it gets tasks, and the budget is split three ways.
    fleet.write_workers_file(c.workers_file, [first, second, third])
    wait_for(lambda: (c.job_dir / "dispatched" / third.name).is_dir()
             and os.listdir(c.job_dir / "dispatched" / third.name), "the new host never got a task")
    wait_for(lambda: all(_read_int(budget[h]) == 32 * 1024 for h in fleet.hosts), "budget never split in three")
    wait_for(lambda: all(_read_int(qps[h]) == 20 for h in fleet.hosts), "jobMaxQps never split in three")
    # Each agent took its share: its heartbeat, as the master last read it, says so.
    home = Home(Path(fleet.working_dir))
    wait_for(lambda: all(json.loads(home.host_status_file(h.name).read_text()).get("starts_per_s") == 20
                         for h in fleet.hosts), "an agent never applied its share of jobMaxQps")
    # The operator raises the job-wide cap while it runs.
    out = c.ok("set", "jobMaxThroughput(KB/s)=3000", c.job_name)
    assert "jobMaxThroughput(KB/s)=3000" in out
    wait_for(lambda: all(_read_int(budget[h]) == 1000 * 1024 for h in fleet.hosts), "new cap never reached the hosts")
    # The first host leaves the list: it is drained, it gets nothing new.
    master_log = Path(fleet.working_dir) / "logs" / "master.log"
    drains = master_log.read_text().count(f"host {first}: removed from the workers file")
    fleet.write_workers_file(c.workers_file, [second, third])
    wait_for(lambda: master_log.read_text().count(f"host {first}: removed from the workers file") > drains,
             "the master never re-read the workers file")  # it does every 5 s
    drained_at_ms = time.time() * 1000
    first_dir = c.job_dir / "dispatched" / first.name
    holding = set(os.listdir(first_dir)) if first_dir.is_dir() else set()
    c.write_sys(**{"workerMaxThroughput(KB/s)": "0"})
    s = c.wait_state(timeout=180)
    assert s["JobState"] == "Succeed", s
    for d in c.finished("succeed_tasks"):
        task_id, rest = d.name.split("_", 1)
        ms, host_name = rest.split("@")
        if host_name == first.name and int(ms) > drained_at_ms:
            assert task_id in holding, f"drained host got new task {task_id}"
    assert_migrated(c.bucket, files)
    _assert_counted_once(c, files)
    r = c.console("set", "jobName=other", c.job_name)
    assert r.returncode == 2 and "jobMaxThroughput(KB/s)" in r.stderr


def _read_int(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return -1


def test_a_throughput_schedule_reaches_every_host_and_its_edge_lifts_the_cap_within_seconds(cluster, fleet):
    c = cluster()
    files = {f"s/{i:03d}.bin": os.urandom(64 * 1024) for i in range(30)}
    c.put_files(files)

    def clock_in(seconds):
        t = time.localtime(time.time() + seconds)
        return f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"

    edge = time.time() + 20  # room for the agents to start on a loaded machine
    c.write_sys(workerMaxThroughputSchedule=f"{clock_in(-1)},32 {clock_in(20)},off")
    c.write_job()
    c.ok("submit", str(c.job_file))
    c.ok("start")
    home = Home(Path(fleet.working_dir))

    def caps():
        """Each host's cap as its agent's heartbeat says it (the master's poll of the host)."""
        out = {}
        for h in fleet.hosts:
            try:
                out[h.name] = json.loads(home.host_status_file(h.name).read_text())["throughput_bps"]
            except (OSError, ValueError, KeyError):
                out[h.name] = None
        return out

    wait_for(lambda: set(caps().values()) == {32 * 1024}, "every host's agent at the slot's 32 KB/s", 30)
    assert time.time() < edge, "the hosts took the slot too late for the test to see its edge"
    wait_for(lambda: set(caps().values()) == {0}, "the cap lifted on every host after the edge", edge - time.time() + 10)
    assert time.time() < edge + 8
    assert c.wait_state(timeout=120)["JobState"] == "Succeed"
    assert_migrated(c.bucket, files)


def scrape(port: int, host: str = "127.0.0.1") -> dict:
    """The master's metrics, read as Prometheus would: {(name, labels...): value}."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {(sample.name, *sorted(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_metrics_scraped_during_a_fleet_job_agree_with_stat(cluster, fleet):
    import socket

    c = cluster()
    files = {f"m/{i:03d}.bin": os.urandom(32 * 1024) for i in range(90)}
    c.put_files(files)
    port = free_port()
    c.write_sys(metricsAddress=f":{port}", **{"workerMaxThroughput(KB/s)": "48"})
    c.write_job()
    c.ok("submit", str(c.job_file))
    c.ok("start")
    name = c.job_name

    def stat():
        return json.loads(c.console("stat", "--json").stdout)

    wait_for(lambda: stat()["jobs"][0]["scan_finished"] and stat()["jobs"][0]["totals"]["succeed"] > 0,
             "the job under way", 60)
    before, metrics, after = stat(), scrape(port), stat()
    job_a, job_b = before["jobs"][0], after["jobs"][0]
    assert job_b["state"] == "Running" and metrics[("ossimport_job_state", ("job", name), ("state", "Running"))] == 1
    assert metrics[("ossimport_job_listed_files", ("job", name))] == job_a["objects"] == len(files)
    assert metrics[("ossimport_job_listed_bytes", ("job", name))] == job_a["bytes"]
    assert metrics[("ossimport_job_scan_finished", ("job", name))] == 1
    # Taken between two stat --json, each figure lies between theirs.
    for outcome in ("succeed", "skipped", "failed"):
        got = metrics[("ossimport_job_files", ("job", name), ("outcome", outcome))]
        assert job_a["totals"][outcome] <= got <= job_b["totals"][outcome], outcome
        got = metrics[("ossimport_job_bytes", ("job", name), ("outcome", outcome))]
        assert job_a["totals"][outcome + "_bytes"] <= got <= job_b["totals"][outcome + "_bytes"], outcome
    tasks = {state: metrics[("ossimport_job_tasks", ("job", name), ("state", state))]
             for state in ("pending", "dispatched", "succeed", "failed")}
    assert sum(tasks.values()) == sum(job_a[f"{s}_tasks"] for s in tasks)
    assert job_a["succeed_tasks"] <= tasks["succeed"] <= job_b["succeed_tasks"]
    rows_a = {r["host"]: r for r in before["hosts"]}
    rows_b = {r["host"]: r for r in after["hosts"]}
    for host in fleet.hosts:
        label = ("host", str(host))
        assert metrics[("ossimport_host_reachable", label)] == 1 and metrics[("ossimport_host_agent_alive", label)] == 1
        assert rows_a[str(host)]["done_tasks"] <= metrics[("ossimport_host_done_tasks", label)] \
            <= rows_b[str(host)]["done_tasks"]
    # ':PORT' listens on loopback's 127.0.0.1 only.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.2", port), timeout=2).close()

    assert c.wait_state(timeout=180)["JobState"] == "Succeed"
    final, metrics = stat(), scrape(port)
    job = final["jobs"][0]
    assert metrics[("ossimport_job_state", ("job", name), ("state", "Succeed"))] == 1
    assert metrics[("ossimport_job_files", ("job", name), ("outcome", "succeed"))] == job["totals"]["succeed"] == len(files)
    assert metrics[("ossimport_job_bytes", ("job", name), ("outcome", "succeed"))] == job["totals"]["succeed_bytes"]
    for row in final["hosts"]:
        assert metrics[("ossimport_host_done_tasks", ("host", row["host"]))] == row["done_tasks"]
        assert metrics[("ossimport_host_bytes", ("host", row["host"]))] == row["bytes"]
    assert c.secret not in str(metrics)
    c.ok("stop")
    with pytest.raises(OSError):
        scrape(port)  # the endpoint lives with the master


def test_fabric_tasks_drive_the_same_operations(cluster, fleet):
    import sys

    c = cluster()
    host = fleet.hosts[0]
    env = dict(os.environ, OSSIMPORT_SYS=str(c.sys_file))

    def fab(task):
        return subprocess.run([sys.executable, "-m", "fabric", "-r", str(Path(CONSOLE).parent / "deploy"),
                               "-H", f"{host.address}:{host.port}", task],
                              capture_output=True, text=True, timeout=300, env=env)

    r = fab("deploy")
    assert r.returncode == 0 and f"{host}: deployed ossimport-dist" in r.stdout, r.stdout + r.stderr
    r = fab("start")
    assert r.returncode == 0 and "agent started" in r.stdout, r.stdout + r.stderr
    deadline = time.monotonic() + 20
    while "agent alive" not in (r := fab("status")).stdout:
        assert time.monotonic() < deadline, r.stdout + r.stderr
        time.sleep(0.5)
    r = fab("stop")
    assert r.returncode == 0 and f"{host}: agent stopped" in r.stdout
    assert "agent not running" in fab("status").stdout


def test_clean_removes_the_job_and_its_keys_from_every_host(cluster, fleet):
    c = cluster()
    c.put_files({"a.txt": b"a", "b.txt": b"b"})
    c.write_job()
    c.ok("submit", str(c.job_file))
    c.ok("start")
    assert c.wait_state()["JobState"] == "Succeed"
    c.ok("stop")
    held = [h for h in fleet.hosts if (Path(fleet.host_dir(h)) / "worker" / "jobs" / c.job_name / "job.cfg").exists()]
    assert held, "no host received the job"
    assert c.ok("clean", c.job_name).strip() == f"clean job:{c.job_name} success!"
    for h in fleet.hosts:
        assert not (Path(fleet.host_dir(h)) / "worker" / "jobs" / c.job_name).exists()


def test_a_late_result_from_a_host_presumed_dead_is_accepted_once(cluster, fleet):
    c = cluster()
    files = {f"l/{i:03d}.bin": os.urandom(16 * 1024) for i in range(60)}
    c.put_files(files)
    c.write_sys(**{"workerMaxThroughput(KB/s)": "48"})
    c.write_job()
    c.ok("submit", str(c.job_file))
    c.ok("start")
    victim = fleet.hosts[2]
    victim_tasks = Path(fleet.host_dir(victim)) / "worker" / "jobs" / c.job_name / "tasks"
    deadline = time.monotonic() + 60
    while not any((t / "audit.log").is_file() and not (t / "STATUS").exists()
                  for t in (victim_tasks.iterdir() if victim_tasks.is_dir() else [])):
        assert time.monotonic() < deadline, "the victim host never started a task"
        time.sleep(0.1)
    # The host drops off the network (its sshd and every SSH session end), but its agent goes on
    # and finishes what it holds.
    agent_pid = int((Path(fleet.host_dir(victim)) / "worker" / "agent.pid").read_text())
    try:
        fleet.stop_sshd(victim, kill_sessions=False)
        for pid in fleet.host_pids(victim):
            try:
                if pid != agent_pid and "sshd" in " ".join(psutil.Process(pid).cmdline()):
                    os.kill(pid, signal.SIGKILL)
            except (psutil.Error, ProcessLookupError):
                continue  # already gone (or a zombie): not on the network either way
        c.write_sys(**{"workerMaxThroughput(KB/s)": "0"})
        s = c.wait_state(timeout=180)
        assert s["JobState"] == "Succeed", s
        late = [t.name for t in victim_tasks.iterdir() if (t / "STATUS").exists()]
        wlog = (Path(fleet.host_dir(victim)) / "logs" / "worker.log").read_text()[-3000:]
        assert late, f"the victim finished nothing while it was away: {sorted(os.listdir(victim_tasks))} {fleet.host_pids(victim)}\n{wlog}"
    finally:
        fleet.start_sshd(victim)
    # Back on the network: its results arrive late and are dropped, never counted twice.
    deadline = time.monotonic() + 30
    while any(victim_tasks.iterdir()):
        assert time.monotonic() < deadline, "the late results were never collected: " + \
            (Path(fleet.working_dir) / "logs" / "master.log").read_text()[-2500:]
        time.sleep(0.3)
    assert c.stat()["JobState"] == "Succeed"
    _assert_counted_once(c, files)
    assert_migrated(c.bucket, files)
