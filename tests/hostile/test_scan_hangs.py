"""Scans that end: a source whose listings fail ends the job Failed with one Reason line, the
service keeps running its other jobs, and 'console.sh retry' resumes the scan from its
checkpoints. The listing retry schedule is shortened through OSSIMPORT_SCAN_RETRY (the service
inherits the console's environment)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import oss2
import psutil
import pytest

from conftest import ROOT, assert_migrated, checked_stat, dest_objects, task_keys, write_tree

FAST_RETRY = "attempts=3,first_wait_s=0.05,max_wait_s=0.2"
RETRY_HINT = "'console.sh retry local_test' resumes the scan from its checkpoints"


@pytest.fixture(autouse=True)
def fast_listing_retry(monkeypatch):
    monkeypatch.setenv("OSSIMPORT_SCAN_RETRY", FAST_RETRY)


@pytest.fixture
def src_bucket(emulator):
    name = "src-" + uuid.uuid4().hex[:20]
    b = oss2.Bucket(oss2.Auth(emulator.key_id, emulator.secret), emulator.endpoint, name)
    b.create_bucket()
    return b


def fill(bucket, files: dict) -> None:
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda kv: bucket.put_object(*kv), files.items()))


def oss_source(migration, src_bucket, src_type="oss", **extra) -> dict:
    props = {"srcType": src_type, "srcDomain": src_bucket.endpoint, "srcBucket": src_bucket.bucket_name,
             "srcAccessKey": migration.key_id, "srcSecretKey": migration.secret, "srcPrefix": ""}
    props.update(extra)
    return props


def stat_lines(migration) -> list:
    r = migration.console("stat")
    assert "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
    return checked_stat(r).splitlines()


def reason_of(migration) -> str:
    reasons = [line[len("Reason:"):] for line in stat_lines(migration) if line.startswith("Reason:")]
    assert len(reasons) == 1, reasons
    return reasons[0]


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Stories of a listing that fails after the job started pass --no-preflight: the check before
# copying would refuse most of them at submit (tests/test_preflight.py tells those stories).
def import_sh(migration, *args, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "import.sh"), "--sys", str(migration.sys_file), "--interval", "0.2",
                           *args, str(migration.job_file)], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def all_task_keys(migration) -> list:
    keys = []
    for state in ("succeed_tasks", "failed_tasks"):
        for task in migration.task_dirs(state):
            keys += task_keys(task / "TASK")
    return keys


# Requests per listing try: oss2's iterator repeats a failed page request itself; botocore's
# retries are off in the S3 driver.
@pytest.mark.parametrize("src_type, requests_per_try", [("oss", oss2.defaults.request_retries), ("s3", 1)])
def test_listing_answering_500_ends_failed_and_retry_resumes_the_scan(migration, src_bucket, emulator, src_type,
                                                                      requests_per_try):
    files = {f"photos/{i:03d}.jpg": os.urandom(100 + i) for i in range(40)}
    fill(src_bucket, files)
    migration.write_conf(job_props=oss_source(migration, src_bucket, src_type))
    emulator.set_faults("500:1.0:ListObjectsV2")
    before = emulator.stats()["by_operation"].get("ListObjectsV2", 0)
    migration.ok("submit", "--no-preflight", str(migration.job_file))
    migration.ok("start", "--no-preflight")
    pid = migration.service_pid()
    s = migration.wait_state(timeout=30)

    assert s["JobState"] == "Failed" and s["Is Scan Finished"] == "false", s
    reason = reason_of(migration)
    assert reason.startswith(f"srcType={src_type} srcBucket '{src_bucket.bucket_name}' at {src_bucket.endpoint}: "
                             f"listing failed 3 time(s) in a row over "), reason
    assert "HTTP 500 InternalError" in reason and reason.endswith(f"; once it answers, {RETRY_HINT}"), reason
    # Three tries, no more.
    assert emulator.stats()["by_operation"]["ListObjectsV2"] - before == 3 * requests_per_try
    assert alive(pid), "the service must keep running"
    emulator.set_faults(None)
    assert dest_objects(migration.bucket) == {}

    out = migration.ok("retry", "local_test")
    assert out.strip() == "retry job:local_test: the scan resumes from its checkpoints"
    s = migration.wait_state(timeout=60)
    assert s["JobState"] == "Succeed" and "Reason" not in s, s
    assert migration.service_pid() == pid and alive(pid)
    assert sorted(all_task_keys(migration)) == sorted(files)
    assert_migrated(migration.bucket, files)
    # Safe from cron: a retry of a job that has nothing failed does nothing.
    assert migration.ok("retry", "local_test").strip() == "nothing to retry: job local_test has no failed task"


def test_flaky_listing_resumes_each_unit_from_its_checkpoint_without_duplicates(migration, src_bucket, emulator,
                                                                                monkeypatch):
    # More than one page of 1000 keys, so a failure lands after tasks were cut.
    files = {f"logs/{i:05d}.log": b"%d\n" % i for i in range(1100)}
    fill(src_bucket, files)
    migration.write_conf(job_props=oss_source(migration, src_bucket, taskObjectCountLimit="100"))
    monkeypatch.setenv("OSSIMPORT_SCAN_RETRY", "attempts=30,first_wait_s=0.01,max_wait_s=0.02")
    emulator.set_faults("500:0.5:ListObjectsV2")
    # Not preflight's single read of the destination, which these faults would fail now and then.
    migration.ok("submit", "--no-preflight", str(migration.job_file))
    migration.ok("start", "--no-preflight")
    s = migration.wait_state(timeout=120)
    emulator.set_faults(None)

    assert s["JobState"] == "Succeed", s
    assert emulator.stats()["faults_injected"], "the fault switch never fired"
    keys = all_task_keys(migration)
    assert len(keys) == len(set(keys)), "a key was put in two tasks"
    assert sorted(keys) == sorted(files)
    assert_migrated(migration.bucket, files)


def test_refused_connection_fails_one_job_while_the_service_runs_the_other(migration, src_bucket):
    write_tree(migration.src, {"a.txt": b"a", "b/c.txt": b"c"})
    good = migration.dir / "conf" / "good_job.cfg"
    migration.write_conf(job_props={"jobName": "good_job", "destPrefix": "good/"})
    good.write_text(migration.job_file.read_text())
    port = closed_port()
    migration.write_conf(job_props=oss_source(migration, src_bucket, srcDomain=f"http://127.0.0.1:{port}"))
    migration.ok("submit", str(good))

    started = time.monotonic()
    r = import_sh(migration, "--yes", "--no-preflight")
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "Traceback" not in out
    assert time.monotonic() - started < 30
    reason = reason_of(migration)
    assert reason.startswith(f"srcType=oss srcBucket '{src_bucket.bucket_name}' at http://127.0.0.1:{port}: "
                             f"listing failed 3 time(s) in a row over "), reason
    assert "network error" in reason and reason.endswith(f"; once it answers, {RETRY_HINT}"), reason
    assert f"Job local_test failed: {reason}. JobState:Failed" in r.stdout
    assert "Retry them?" not in out, "a scan that already retried is not offered another retry"
    # The other job of the same service runs to the end: a scripted import.sh stops the service
    # it started only once no other job needs it.
    deadline = time.monotonic() + 60
    while "JobState:Succeed" not in (good_stat := migration.console("stat", "good_job").stdout):
        assert alive(migration.service_pid()) and time.monotonic() < deadline, good_stat
        time.sleep(0.2)
    assert sorted(dest_objects(migration.bucket)) == ["good/a.txt", "good/b/c.txt"]


def test_http_list_with_an_ftp_line_fails_at_once_naming_the_line(migration):
    url_list = migration.dir / "urls.txt"
    url_list.write_text("ftp://files.example.com/pub/ a.txt\n")
    migration.write_conf(job_props={"srcType": "http", "httpListFilePath": str(url_list), "srcPrefix": ""})
    r = import_sh(migration, "--yes", "--no-preflight")
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "Traceback" not in out
    assert out.count("scan error") <= 1
    want = (f"Unknown http list file format: {url_list}:1: scheme 'ftp' in 'ftp://files.example.com/pub/' "
            f"is not supported: only http:// and https:// URLs; once fixed, {RETRY_HINT}")
    assert reason_of(migration) == want
    assert f"Job local_test failed: {want}. JobState:Failed" in r.stdout
    assert dest_objects(migration.bucket) == {}


def test_source_folder_vanished_before_the_scan_fails_and_retry_resumes(migration):
    files = {f"d{i % 3}/f{i}.txt": b"x" * i for i in range(12)}
    write_tree(migration.src, files)
    migration.write_conf(job_props={"scanThreadCount": "2", "taskObjectCountLimit": "2"})
    migration.ok("submit", str(migration.job_file))
    away = migration.dir / "src-unmounted"
    migration.src.rename(away)
    migration.ok("start", "--no-preflight")
    s = migration.wait_state(timeout=30)
    assert s["JobState"] == "Failed" and s["Is Scan Finished"] == "false", s
    assert reason_of(migration) == (f"cannot start the job: srcPrefix '{migration.src}/' is not a directory: "
                                    f"create it or fix srcPrefix; once fixed, 'console.sh retry local_test' "
                                    f"starts it again")
    assert migration.stat_text().count("Reason:") == 1
    assert sorted(str(p.relative_to(away)) for p in away.rglob("*") if p.is_file()) == sorted(files)

    away.rename(migration.src)
    migration.ok("retry", "local_test")
    s = migration.wait_state(timeout=60)
    assert s["JobState"] == "Succeed", s
    assert sorted(all_task_keys(migration)) == sorted(files)
    assert_migrated(migration.bucket, files)


def test_list_file_deleted_after_submit_fails_naming_it(migration):
    write_tree(migration.src, {"a.txt": b"a", "b.txt": b"b"})
    manifest = migration.dir / "wanted.list"
    manifest.write_text("a.txt\nb.txt\n")
    migration.write_conf(job_props={"srcType": "list", "listSrcType": "local", "listFilePath": str(manifest)})
    migration.ok("submit", str(migration.job_file))
    manifest.unlink()
    migration.ok("start", "--no-preflight")
    s = migration.wait_state(timeout=30)
    assert s["JobState"] == "Failed", s
    assert reason_of(migration) == (f"listFilePath {manifest} does not exist: create it or fix listFilePath; "
                                    f"once fixed, {RETRY_HINT}")
    assert dest_objects(migration.bucket) == {}

    manifest.write_text("a.txt\nb.txt\n")
    migration.ok("retry", "local_test")
    s = migration.wait_state(timeout=60)
    assert s["JobState"] == "Succeed", s
    assert_migrated(migration.bucket, {"a.txt": b"a", "b.txt": b"b"})


def test_bad_retry_schedule_in_the_environment_is_named_and_the_default_applies(migration, monkeypatch):
    write_tree(migration.src, {"a.txt": b"a"})
    migration.write_conf()
    monkeypatch.setenv("OSSIMPORT_SCAN_RETRY", "attempts=-1")
    migration.ok("submit", str(migration.job_file))
    migration.ok("start")
    assert migration.wait_state(timeout=30)["JobState"] == "Succeed"
    log = (migration.work / "logs" / "ossimport2.log").read_text()
    assert re.search(r"OSSIMPORT_SCAN_RETRY='attempts=-1' ignored \(attempts must be more than 0\); "
                     r"the default listing retry schedule applies", log), log
    assert "Traceback" not in log


def test_manifest_with_an_unreadable_line_fails_at_once_and_copies_nothing(migration):
    write_tree(migration.src, {"a.txt": b"a"})
    manifest = migration.dir / "wanted.list"
    # A key out of bounds is refused on its own line (tests/hostile/test_list_keys.py); a line
    # that cannot be read as a record at all stops the whole list.
    manifest.write_text("a.txt\nb.txt\t\n")
    migration.write_conf(job_props={"srcType": "list", "listSrcType": "local", "listFilePath": str(manifest)})
    r = import_sh(migration, "--yes", "--no-preflight")
    out = r.stdout + r.stderr
    assert r.returncode == 1 and "Traceback" not in out, out
    want = (f"Unknown list file format: {manifest}:2: TAB with nothing after it; write 'key' or "
            f"'key<TAB>size'; once fixed, {RETRY_HINT}")
    assert reason_of(migration) == want
    assert f"Job local_test failed: {want}. JobState:Failed" in r.stdout
    # The whole list is checked before a task is cut: not even a.txt was copied.
    assert dest_objects(migration.bucket) == {}
    assert migration.task_dirs("pending_tasks") == [] and migration.task_dirs("succeed_tasks") == []


def test_listing_refused_for_good_fails_at_the_first_try(migration, src_bucket, emulator):
    fill(src_bucket, {"a.txt": b"a"})
    migration.write_conf(job_props=oss_source(migration, src_bucket, srcSecretKey="not-the-secret"))
    before = emulator.stats()["by_operation"].get("ListObjectsV2", 0)
    migration.ok("submit", "--no-preflight", str(migration.job_file))
    migration.ok("start", "--no-preflight")
    s = migration.wait_state(timeout=30)
    assert s["JobState"] == "Failed", s
    reason = reason_of(migration)
    assert reason.startswith(f"srcBucket '{src_bucket.bucket_name}' at {src_bucket.endpoint} rejected the signature "
                             f"(SignatureDoesNotMatch): srcSecretKey does not belong to srcAccessKey "
                             f"'{migration.key_id}'; fix srcSecretKey"), reason
    assert reason.endswith(f"; once fixed, {RETRY_HINT}") and "not-the-secret" not in reason
    # No retry can cure a wrong key: one request, no backoff.
    assert emulator.stats()["by_operation"]["ListObjectsV2"] - before == 1
    assert alive(migration.service_pid())
