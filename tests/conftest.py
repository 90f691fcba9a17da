"""Shared set-up for migration stories: a real OSS emulator, a job in a temporary folder driven
through the real ``console.sh``, and checks of the destination object by object."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import http.server
import os
import re
import secrets
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import oss2
import pytest

from ossimport_dist.worker import finished_keys

ROOT = Path(__file__).resolve().parents[1]
CONSOLE = ROOT / "console.sh"
# The workers' bundle (tests/fleet.py's bundle fixture): built wheels survive between test runs
# (gitignored); the first build needs the package index.
BUNDLE_CACHE = ROOT / ".cache" / "bundle"

collect_ignore_glob = ["oss2_compat/*"]


@pytest.fixture(scope="session")
def emulator(tmp_path_factory):
    """One emulator process for the session; every test makes its own bucket."""
    from oss_emulator import start_process

    data = tmp_path_factory.mktemp("oss-data")
    key_id, secret = "test-key-id", "emu-" + secrets.token_hex(12)
    handle = start_process(str(data), key_id, secret)
    handle.key_id, handle.secret = key_id, secret
    yield handle
    handle.stop()


@pytest.fixture
def bucket(emulator):
    name = "b-" + uuid.uuid4().hex[:20]
    b = oss2.Bucket(oss2.Auth(emulator.key_id, emulator.secret), emulator.endpoint, name)
    b.create_bucket()
    yield b
    emulator.set_faults(None)


def crc64_of(data: bytes) -> int:
    c = oss2.utils.Crc64(0)
    c.update(data)
    return c.crc


def write_tree(root: Path, files: dict) -> None:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def awkward_names() -> dict:
    """Names operators really have: unicode, spaces, #, %, +, an empty file."""
    return {
        "readme.txt": b"hello\n",
        "empty.dat": b"",
        "with space/file name.txt": b"space" * 10,
        "hash#dir/a#b.txt": b"hash",
        "percent%25/100%.txt": b"percent",
        "plus+dir/a+b=c.txt": b"plus",
        "中文目录/文件.txt": "内容".encode(),
        "emoji/😀.bin": os.urandom(300),
    }


def awkward_tree(n_bulk: int = 30) -> dict:
    """The awkward names, a deep folder, query characters and ``n_bulk`` files of growing size."""
    files = awkward_names()
    files["/".join(f"d{i}" for i in range(25)) + "/deep.txt"] = b"deep"
    files["q?uestion&amp.txt"] = b"query chars"
    for i in range(n_bulk):
        files[f"bulk/{i % 3}/file-{i:04d}.bin"] = os.urandom(97 * i)
    return files


STAT_EXIT = {"Succeed": 0, "Failed": 1, "Abort": 1, "Running": 3, "Submitted": 3}


def checked_stat(r: subprocess.CompletedProcess, args=()) -> str:
    """stat's output, asserting its documented exit code: 0 all Succeed, 1 any Failed/Abort,
    3 any still Submitted/Running (README, "Exit codes")."""
    states = [line.split(":", 1)[1] for line in r.stdout.splitlines() if line.startswith("JobState:")]
    assert states, f"stat {args} showed no job (exit {r.returncode}): {r.stdout}{r.stderr}"
    codes = {STAT_EXIT[s] for s in states}
    want = 1 if 1 in codes else 3 if 3 in codes else 0
    assert r.returncode == want, f"stat {args} exited {r.returncode}, not {want} for {states}: {r.stdout}{r.stderr}"
    return r.stdout


@dataclass
class Migration:
    """A job in its own folder: conf/sys.properties, conf/local_job.cfg and a working dir."""

    dir: Path
    src: Path
    bucket: oss2.Bucket
    key_id: str
    secret: str

    @property
    def sys_file(self) -> Path:
        return self.dir / "conf" / "sys.properties"

    @property
    def job_file(self) -> Path:
        return self.dir / "conf" / "local_job.cfg"

    @property
    def work(self) -> Path:
        return self.dir / "work"

    @property
    def job_dir(self) -> Path:
        return self.work / "master" / "jobs" / "local_test"

    def write_conf(self, sys_props: dict = None, job_props: dict = None) -> None:
        (self.dir / "conf").mkdir(parents=True, exist_ok=True)
        sys_p = {"workingDir": str(self.work), "workerTaskThreadNum": "8"}
        sys_p.update(sys_props or {})
        job_p = {"jobName": "local_test", "srcType": "local", "srcPrefix": str(self.src) + "/",
                 "destDomain": self.bucket.endpoint, "destBucket": self.bucket.bucket_name,
                 "destAccessKey": self.key_id, "destSecretKey": self.secret,
                 "taskObjectCountLimit": "10"}
        job_p.update(job_props or {})
        self.sys_file.write_text("".join(f"{k}={v}\n" for k, v in sys_p.items()))
        self.job_file.write_text("".join(f"{k}={v}\n" for k, v in job_p.items()))
        os.chmod(self.job_file, 0o600)

    def console(self, *args, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(CONSOLE), "--sys", str(self.sys_file), *args],
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def ok(self, *args) -> str:
        r = self.console(*args)
        assert r.returncode == 0, f"console {args} failed: {r.stdout}{r.stderr}"
        return r.stdout

    def stat_text(self, *args) -> str:
        """``console.sh stat`` output, its exit code checked against the JobState it shows."""
        return checked_stat(self.console("stat", *args), args)

    def stat(self) -> dict:
        out = self.stat_text()
        return dict(line.split(":", 1) for line in out.splitlines() if ":" in line)

    def wait_state(self, want=("Succeed", "Failed"), timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            s = self.stat()
            if s.get("JobState") in want:
                return s
            assert time.monotonic() < deadline, f"job did not reach {want} in {timeout}s: {s}"
            time.sleep(0.3)

    def service_pid(self) -> int:
        try:
            return int((self.work / "master" / "ossimport.pid").read_text().split()[0])
        except (OSError, ValueError):
            return 0

    def task_dirs(self, state: str) -> list:
        d = self.job_dir / state
        return sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")) if d.is_dir() else []


@pytest.fixture
def migration(tmp_path, bucket, emulator):
    m = Migration(dir=tmp_path, src=tmp_path / "src", bucket=bucket, key_id=emulator.key_id, secret=emulator.secret)
    m.src.mkdir()
    yield m
    m.console("stop")


def dest_objects(bucket: oss2.Bucket, prefix: str = "") -> dict:
    """key -> (size, crc64) of every object under prefix, as OSS reports them."""
    out = {}
    for obj in oss2.ObjectIteratorV2(bucket, prefix=prefix):
        head = bucket.head_object(obj.key)
        out[obj.key] = (head.content_length, int(head.headers["x-oss-hash-crc64ecma"]))
    return out


def assert_migrated(bucket: oss2.Bucket, files: dict, dest_prefix: str = "") -> None:
    got = dest_objects(bucket, dest_prefix)
    want = {dest_prefix + k: (len(v), crc64_of(v)) for k, v in files.items()}
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    assert not missing, f"missing at destination: {missing[:10]}"
    assert not extra, f"unexpected at destination: {extra[:10]}"
    for key, (size, crc) in want.items():
        assert got[key] == (size, crc), f"{key}: destination has {got[key]}, source {size, crc}"


def task_keys(task_file: Path) -> list:
    import json

    lines = task_file.read_text().splitlines()[1:]
    return [json.loads(line)["k"] for line in lines if line.strip()]


def process_cmdlines() -> str:
    import psutil

    out = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            out.append(" ".join(p.info["cmdline"] or []))
        except (psutil.Error, TypeError):
            continue
    return "\n".join(out)


AUDIT_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (Succeed|Skipped|Failed|CheckFailed) .+$")


# ----------------------------------------------------------------- audit jobs on any destination

def audit_after_damage(migration, job_props: dict, dest, keys, damaged: list, timeout=180) -> None:
    """Damage three objects at the destination (same size other bytes, another size, deleted),
    run the same job again as ``jobType=audit`` and check what it says, object by object: the
    three named with how they differ in error.list, every other one a match in audit.log, and
    nothing written."""
    same_size, resized, deleted = damaged
    original = dest.read(same_size)
    dest.write(same_size, bytes(b ^ 0xFF for b in original))
    dest.write(resized, dest.read(resized) + b"+more")
    dest.delete(deleted)
    migration.ok("stop")
    migration.ok("clean", "local_test")
    migration.write_conf(job_props={**job_props, "jobType": "audit", "auditMode": "detailed"})
    migration.ok("submit", str(migration.job_file))
    migration.ok("start")
    s = migration.wait_state(timeout=timeout)
    assert s["JobState"] == "Failed", migration.stat_text("detail")
    reasons, matched = {}, {}
    for state in ("failed_tasks", "succeed_tasks"):
        for task in migration.task_dirs(state):
            errors = task / "error.list"
            for line in (errors.read_text().splitlines() if errors.is_file() else []):
                key, reason = line.split("\t", 1)
                reasons[key] = reason
            matched.update(finished_keys(task / "audit.log", set(keys)))
    assert dest.read(same_size) == bytes(b ^ 0xFF for b in original), "an audit must not write"
    assert dest.read(deleted) is None, "an audit must not write"
    assert set(reasons) == set(damaged), reasons
    assert re.match(r"(CRC64|MD5)_NOT_MATCH", reasons[same_size]), reasons[same_size]
    assert reasons[resized].startswith("SIZE_NOT_MATCH"), reasons[resized]
    assert "does not exist" in reasons[deleted], reasons[deleted]
    assert set(matched) == set(keys) - set(damaged)
    assert s["Audit"].startswith(f"{len(keys) - 3} match, 2 differ, 1 missing at the destination;"), s


class OssDest:
    """A destination as the audit stories touch it: read (None when absent), write, delete."""

    def __init__(self, bucket, prefix=""):
        self.bucket, self.prefix = bucket, prefix

    def read(self, key):
        try:
            return self.bucket.get_object(self.prefix + key).read()
        except oss2.exceptions.NoSuchKey:
            return None

    def write(self, key, data):
        self.bucket.put_object(self.prefix + key, data)

    def delete(self, key):
        self.bucket.delete_object(self.prefix + key)


class FolderDest:
    def __init__(self, root):
        self.root = root

    def read(self, key):
        p = self.root / key
        return p.read_bytes() if p.is_file() else None

    def write(self, key, data):
        (self.root / key).write_bytes(data)

    def delete(self, key):
        (self.root / key).unlink()


class S3Dest:
    def __init__(self, client, bucket, prefix=""):
        self.client, self.bucket, self.prefix = client, bucket, prefix

    def read(self, key):
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None

    def write(self, key, data):
        self.client.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=data)

    def delete(self, key):
        self.client.delete_object(Bucket=self.bucket, Key=self.prefix + key)


@pytest.fixture
def web_root(tmp_path):
    """A plain HTTP file server on loopback serving ``tmp_path/www``."""
    root = tmp_path / "www"
    root.mkdir()
    handler = type("QuietHandler", (http.server.SimpleHTTPRequestHandler,), {"log_message": lambda *a, **k: None})
    handler = functools.partial(handler, directory=str(root))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    srv.root, srv.base = root, f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()


@contextlib.contextmanager
def npm_install_lock(prefix: Path):
    """One npm install into ``prefix`` at a time: the suite's parallel workers share .cache/."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    with open(prefix.parent / f".{prefix.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def wait_for(condition, what: str, timeout: float = 60, every: float = 0.1):
    """``condition()``'s first true value, asserting it came within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(every)


def one_error_line(r) -> str:
    """The single line a refused command printed on stderr, after checking it is one line and
    that nothing printed a traceback."""
    out = r.stdout + r.stderr
    assert "Traceback" not in out, out
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]
