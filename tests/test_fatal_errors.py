"""Fatal errors end the job (issue 9, bullet 3): keys refused file after file, a bucket that is
gone, an endpoint that takes no connection, a source folder that vanished. Each story runs the
real console.sh: the job ends JobState:Failed within seconds with one Reason: line that says
what and what to fix, every file is accounted for (failed in an error.list, or still pending),
and after the fix a retry converges. Transient failures (5xx, resets) stay retried."""

from __future__ import annotations

import base64
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import oss2
import pytest

from conftest import ROOT, assert_migrated, dest_objects, task_keys, write_tree
from ossimport_dist.errors import DestinationError
from ossimport_dist.fatal import FatalDetector
from ossimport_dist.listformat import read_key
from ossimport_dist.models import FileResult, Outcome
from ossimport_dist.status import human_bytes
from ossimport_dist.storage.errors import RequestFailed, fatal_error

pytest_plugins = ["fleet"]  # the session-wide fleet of sshd hosts, started only when asked for

JOB = "local_test"
RETRY_HINT = f"; once fixed, 'console.sh retry {JOB}' sends the files not copied"
# console.sh stat exits 0 for every state until the lead's status slice gives Failed its 1.
STAT_EXITS = (1, 3)  # Failed, or still Running: never Succeed


def small_files(n: int) -> dict:
    return {f"d{i % 7}/f{i:04d}.txt": f"file {i}\n".encode() * (1 + i % 5) for i in range(n)}


def submit(migration) -> None:
    """Submit without the preflight check: these stories are about what happens when the job
    runs into the failure."""
    migration.ok("submit", "--no-preflight", str(migration.job_file))


def started(migration) -> float:
    assert "service started" in migration.ok("start", "--no-preflight")
    return time.monotonic()


def failed_stat(migration, began: float, within: float = 30) -> str:
    """The output of stat once the job is Failed, asserting it got there within ``within``
    seconds of ``began`` and that no stat printed a traceback."""
    deadline = began + within
    while True:
        r = migration.console("stat")
        out = r.stdout + r.stderr
        assert r.returncode in STAT_EXITS and "Traceback" not in out, out
        if "JobState:Failed" in r.stdout:
            return r.stdout
        assert "JobState:Succeed" not in r.stdout, r.stdout
        assert time.monotonic() < deadline, f"not Failed within {within} s:\n{r.stdout}"
        time.sleep(0.3)


def reason_lines(stat_out: str) -> list:
    return [line for line in stat_out.splitlines() if line.startswith("Reason:")]


def error_lines(migration) -> dict:
    """key -> detail of every failed file, over the failed tasks' error.list files."""
    failed = {}
    for task in migration.task_dirs("failed_tasks"):
        for line in (task / "error.list").read_text("utf-8", "surrogateescape").splitlines():
            key, detail = read_key(line)
            assert key not in failed, f"{key} failed twice"
            failed[key] = detail
    return failed


def accounted(migration, files: dict) -> tuple:
    """(copied keys, failed key -> detail): every file is exactly one of copied (in a finished
    task, not in its error.list), failed (in an error.list) or still pending; nothing is lost,
    nothing counted twice, and no task is left dispatched."""
    failed = error_lines(migration)
    finished = [k for state in ("succeed_tasks", "failed_tasks") for t in migration.task_dirs(state)
                for k in task_keys(t / "TASK")]
    pending = [k for t in migration.task_dirs("pending_tasks") for k in task_keys(t / "TASK")]
    assert migration.task_dirs("dispatched/localhost") == []
    assert sorted(finished + pending) == sorted(files), "a file is lost or counted twice"
    assert set(failed) <= set(finished)
    return set(finished) - set(failed), failed


def log_text(migration) -> str:
    return (migration.work / "logs" / "ossimport2.log").read_text()


def puts(emulator) -> int:
    return emulator.stats()["by_operation"].get("PutObject", 0)


def fix_frozen_secret(frozen: Path, secret: str) -> None:
    """The operator's fix of the secret, in the submitted job (its record of where it came from
    stays, so retry sees no edit of the job file)."""
    text = frozen.read_text()
    lines = [f"destSecretKey={secret}" if line.startswith("destSecretKey=") else line for line in text.splitlines()]
    frozen.write_text("\n".join(lines) + "\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- keys refused ---------------------------------------------------------------------------------
def test_wrong_secret_stops_the_job_in_seconds_and_a_retry_after_the_fix_copies_everything(migration, emulator):
    files = small_files(320)
    write_tree(migration.src, files)
    real_secret = migration.secret
    migration.secret = "wrong-" + emulator.secret[::-1]
    migration.write_conf()
    submit(migration)
    before = puts(emulator)
    began = started(migration)
    out = failed_stat(migration, began)

    [reason] = reason_lines(out)
    where = f"destBucket '{migration.bucket.bucket_name}' at {migration.bucket.endpoint}"
    assert re.fullmatch(
        re.escape(f"Reason:5 files in a row refused: {where} rejected the signature (SignatureDoesNotMatch): "
                  f"destSecretKey does not belong to destAccessKey '{migration.key_id}'; fix destSecretKey")
        + r"( \[RequestId=[^\]]+\])?" + re.escape(RETRY_HINT), reason), reason
    assert migration.secret not in out
    copied, failed = accounted(migration, files)
    assert failed and not copied
    not_tried = [k for k, d in failed.items() if d.startswith("JOB_STOPPED: not tried: the job stopped: ")]
    refused = [k for k, d in failed.items() if k not in not_tried and "SignatureDoesNotMatch" in d]
    assert len(refused) >= 5 and len(refused) + len(not_tried) == len(failed)
    assert puts(emulator) - before < len(files) // 10, "the files were tried one by one"
    assert dest_objects(migration.bucket) == {}
    log = log_text(migration)
    assert len(re.findall(r" ERROR .*job local_test stopped: 5 files in a row refused", log)) == 1, log
    assert migration.secret not in log

    fix_frozen_secret(migration.job_dir / "job.cfg", real_secret)
    failed_tasks = len(migration.task_dirs("failed_tasks"))
    r = migration.console("retry", JOB)
    assert r.returncode == 0 and "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
    first = r.stdout.splitlines()[0]
    assert first.startswith(f"retry job:{JOB}: the job had stopped (5 files in a row refused: {where}"), first
    assert first.endswith("); dispatching its tasks again"), first
    resend = sum(len(files[k]) for k in failed)
    assert r.stdout.splitlines()[1:] == [f"retry job:{JOB}: {failed_tasks} failed task(s) back to pending: "
                                         f"{len(failed)} file(s), {human_bytes(resend)} to send again"]
    assert migration.wait_state(timeout=60)["JobState"] == "Succeed"
    assert_migrated(migration.bucket, files)
    assert not (migration.job_dir / "job.failed").exists()


def test_a_few_refused_files_fail_alone_and_the_job_goes_on(migration, emulator):
    # Fewer refusals than the run that stops a job (one object's ACL): the files fail, each
    # with its reason, and the job ends as its files say, never stopped.
    files = {"a.txt": b"a", "b.txt": b"b", "c.txt": b"c"}
    write_tree(migration.src, files)
    migration.secret = "wrong-" + emulator.secret[::-1]
    migration.write_conf()
    submit(migration)
    out = failed_stat(migration, started(migration), within=60)
    assert reason_lines(out) == []
    copied, failed = accounted(migration, files)
    assert not copied and sorted(failed) == sorted(files) and all("SignatureDoesNotMatch" in d for d in failed.values())
    assert not (migration.job_dir / "job.failed").exists()


# -- the bucket is gone ---------------------------------------------------------------------------
def delete_bucket_under_the_job(bucket: oss2.Bucket, timeout: float = 20) -> None:
    """Delete the bucket while the job writes to it: empty it, delete it, again until it goes."""
    deadline = time.monotonic() + timeout
    while True:
        keys = [o.key for o in oss2.ObjectIterator(bucket)]
        for i in range(0, len(keys), 500):
            bucket.batch_delete_objects(keys[i:i + 500])
        try:
            bucket.delete_bucket()
            return
        except oss2.exceptions.BucketNotEmpty:
            assert time.monotonic() < deadline, "the bucket could not be deleted"


def test_bucket_deleted_mid_job_stops_it_with_one_reason(migration, emulator):
    files = small_files(300)
    write_tree(migration.src, files)
    # Slow enough that most tasks are still to copy when the bucket goes.
    migration.write_conf(sys_props={"workerMaxThroughput(KB/s)": "8", "workerTaskThreadNum": "4"})
    submit(migration)
    started(migration)
    deadline = time.monotonic() + 30
    while not migration.task_dirs("succeed_tasks"):
        assert time.monotonic() < deadline, "no task finished"
        time.sleep(0.1)
    delete_bucket_under_the_job(migration.bucket)
    gone = time.monotonic()
    out = failed_stat(migration, gone)

    where = f"destBucket '{migration.bucket.bucket_name}' at {migration.bucket.endpoint}"
    [reason] = reason_lines(out)
    assert re.fullmatch(re.escape(f"Reason:{where} does not exist: create it or fix destBucket/destDomain")
                        + r"( \[RequestId=[^\]]+\])?" + re.escape(RETRY_HINT), reason), reason
    copied, failed = accounted(migration, files)
    assert any("NoSuchBucket" in d or "does not exist" in d for d in failed.values())
    assert len(copied) < len(files) // 2, "the job ended before the bucket went: nothing proven"
    migration.bucket.create_bucket()  # for the fixture's teardown


def test_source_bucket_deleted_mid_job_stops_it_naming_the_source(migration, emulator):
    source = oss2.Bucket(migration.bucket.auth, emulator.endpoint, migration.bucket.bucket_name + "-src")
    source.create_bucket()
    files = small_files(200)
    for key, data in files.items():
        source.put_object(key, data)
    migration.write_conf(job_props={"srcType": "oss", "srcDomain": emulator.endpoint, "srcBucket": source.bucket_name,
                                    "srcPrefix": "", "srcAccessKey": emulator.key_id, "srcSecretKey": emulator.secret})
    submit(migration)
    emulator.set_faults("slow:1.0@0.3:CopyObject")  # the copies stay inside the store: slow them there
    started(migration)
    deadline = time.monotonic() + 30
    while not migration.task_dirs("succeed_tasks"):
        assert time.monotonic() < deadline, "no task finished"
        time.sleep(0.1)
    delete_bucket_under_the_job(source)
    out = failed_stat(migration, time.monotonic())
    [reason] = reason_lines(out)
    assert re.fullmatch(re.escape(f"Reason:srcBucket '{source.bucket_name}' at {emulator.endpoint} does not exist: "
                                  f"create it or fix srcBucket/srcDomain") + r"( \[RequestId=[^\]]+\])?"
                        + re.escape(RETRY_HINT), reason), reason
    copied, failed = accounted(migration, files)
    assert_migrated(migration.bucket, {k: files[k] for k in copied})
    assert len(copied) < len(files) // 2, "the job ended before the bucket went: nothing proven"


# -- the endpoint takes no connection -------------------------------------------------------------
def test_dead_endpoint_stops_the_job_after_the_bound(migration):
    files = small_files(150)
    write_tree(migration.src, files)
    port = free_port()
    # workerEndpointDownTimeout shortened from its 20 s so the story takes seconds.
    migration.write_conf(sys_props={"workerEndpointDownTimeout": "3"},
                         job_props={"destDomain": f"http://127.0.0.1:{port}"})
    submit(migration)
    began = started(migration)
    out = failed_stat(migration, began, within=20)
    assert time.monotonic() - began >= 3, "stopped before the bound"

    [reason] = reason_lines(out)
    assert re.fullmatch(
        r"Reason:the destination took no connection for \d+ s \(ConnectionRefusedError: cannot connect to "
        + re.escape(f"http://127.0.0.1:{port}: [Errno 111] Connection refused): check destDomain and that "
                    f"this host can reach it{RETRY_HINT}"), reason), reason
    copied, failed = accounted(migration, files)
    assert not copied and all(d.startswith(("JOB_STOPPED: ", "network error ConnectionRefusedError")) or
               "ConnectionRefusedError" in d for d in failed.values()), set(failed.values())


def test_import_sh_reports_the_stopped_job_and_does_not_retry_it(migration):
    files = small_files(40)
    write_tree(migration.src, files)
    port = free_port()
    migration.write_conf(sys_props={"workerEndpointDownTimeout": "2"},
                         job_props={"destDomain": f"http://127.0.0.1:{port}"})
    r = subprocess.run(["bash", str(ROOT / "import.sh"), "--sys", str(migration.sys_file), "--interval", "0.3",
                        "--yes", "--no-preflight", str(migration.job_file)], capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, timeout=60)
    out = r.stdout + r.stderr
    assert r.returncode == 1 and "Traceback" not in out, out
    assert "Retry them?" not in out and "back to pending" not in out
    # The first failures (not every one of them), the failure line, then the scripted run stops
    # the service it started.
    failed = sum(len((d / "error.list").read_text().splitlines()) for d in migration.task_dirs("failed_tasks"))
    shown = [line for line in r.stdout.splitlines() if line.startswith("Failed:")]
    assert len(shown) == min(20, failed), (failed, shown)
    more = f"... {failed - 20} more: 'console.sh errors local_test' lists every failed file"
    assert (more in r.stdout.splitlines()) == (failed > 20), r.stdout
    *_, last, stopped = r.stdout.strip().splitlines()
    assert re.fullmatch(r"service stopped \(pid \d+\)", stopped), stopped
    assert re.fullmatch(r"Job local_test failed: the destination took no connection for \d+ s \(.*\): check "
                        r"destDomain and that this host can reach it" + re.escape(RETRY_HINT)
                        + r"\. JobState:Failed", last), last


# -- the local source vanished --------------------------------------------------------------------
def test_source_folder_removed_mid_job_stops_it(migration, tmp_path):
    files = small_files(200)
    write_tree(migration.src, files)
    migration.write_conf(sys_props={"workerMaxThroughput(KB/s)": "8", "workerTaskThreadNum": "4"})
    submit(migration)
    started(migration)
    deadline = time.monotonic() + 30
    while not migration.task_dirs("succeed_tasks"):
        assert time.monotonic() < deadline, "no task finished"
        time.sleep(0.1)
    nas = tmp_path / "nas"
    shutil.copytree(migration.src, nas)  # the files as listed (copy2 keeps their times)
    shutil.rmtree(migration.src)  # the NAS went away under the job
    out = failed_stat(migration, time.monotonic())
    [reason] = reason_lines(out)
    assert reason == (f"Reason:srcPrefix '{migration.src}/' is gone (an unmounted NAS or a removed folder?): mount "
                      f"it again or fix srcPrefix{RETRY_HINT}")
    copied, failed = accounted(migration, files)
    assert_migrated(migration.bucket, {k: files[k] for k in copied})
    # Missing, or stopped before its turn (a file read while it was deleted reads as changed).
    assert failed and all(d.startswith(("SOURCE_NOT_EXIST: ", "JOB_STOPPED: ", "SIZE_NOT_MATCH: "))
                          for d in failed.values()), set(failed.values())

    os.rename(nas, migration.src)  # mounted again
    r = migration.console("retry", JOB)
    assert r.returncode == 0 and r.stdout.startswith(f"retry job:{JOB}: the job had stopped (srcPrefix "), r.stdout
    assert migration.wait_state(timeout=90)["JobState"] == "Succeed"
    assert_migrated(migration.bucket, files)


# -- the mark itself -------------------------------------------------------------------------------
def test_an_empty_or_unreadable_stop_mark_still_stops_the_job_until_retry(migration):
    files = small_files(12)
    write_tree(migration.src, files)
    migration.write_conf()
    submit(migration)
    mark = migration.job_dir / "job.failed"
    mark.write_bytes(b"")  # a disk that filled up as it was written
    r = migration.console("stat")
    assert r.returncode in STAT_EXITS and "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
    assert "JobState:Failed" in r.stdout
    assert reason_lines(r.stdout) == [f"Reason:the job stopped ({mark} is empty)"]
    mark.write_bytes(b"\xff\xfe not UTF-8\nsecond line\n")
    assert reason_lines(migration.stat_text()) == ["Reason:\ufffd\ufffd not UTF-8"]
    assert "service started" in migration.ok("start")
    time.sleep(1.5)  # a few ticks of the service: a stopped job gets no task
    assert migration.task_dirs("succeed_tasks") == [] and migration.task_dirs("failed_tasks") == []
    r = migration.console("retry", JOB)
    assert r.returncode == 0 and r.stdout.splitlines() == [
        f"retry job:{JOB}: the job had stopped (\ufffd\ufffd not UTF-8); dispatching its tasks again"], r.stdout
    assert migration.wait_state(timeout=60)["JobState"] == "Succeed"
    assert_migrated(migration.bucket, files)


# -- transient failures stay retried --------------------------------------------------------------
def first_fault(emulator, kind: str, before: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while emulator.stats()["faults_injected"].get(kind, 0) <= before:
        assert time.monotonic() < deadline, f"no {kind} fault was injected"
        time.sleep(0.05)


def test_server_errors_and_resets_for_a_while_are_retried_and_the_job_succeeds(migration, emulator):
    files = small_files(60)
    write_tree(migration.src, files)
    migration.write_conf(sys_props={"workerEndpointDownTimeout": "1"})
    submit(migration)
    unavailable = emulator.stats()["faults_injected"].get("500", 0)
    emulator.set_faults("500:1.0:PutObject")
    started(migration)
    # Each window lasts a while (longer than the endpoint bound), and both together less than a
    # file's retries, so every file gets through once they end.
    first_fault(emulator, "500", before=unavailable)
    time.sleep(1.0)
    resets = emulator.stats()["faults_injected"].get("reset", 0)
    emulator.set_faults("reset:1.0:PutObject")
    first_fault(emulator, "reset", before=resets)
    time.sleep(0.5)
    emulator.set_faults("")
    s = migration.wait_state(timeout=60)
    assert s["JobState"] == "Succeed", s
    assert_migrated(migration.bucket, files)
    assert not (migration.job_dir / "job.failed").exists()
    assert "stopped:" not in log_text(migration)


# -- the judge itself, on the errors the drivers raise --------------------------------------------
def _refused(code="AccessDenied") -> FileResult:
    error = fatal_error(RequestFailed(403, code), role="dest", bucket="b", endpoint="http://e", access_key="k")
    assert isinstance(error, DestinationError)
    return FileResult("k", Outcome.FAILED, detail=str(error), cause=error)


def _ok() -> FileResult:
    return FileResult("k", Outcome.SUCCEED)


def test_refusals_must_come_in_a_row_and_a_success_resets_the_run():
    judge = FatalDetector(in_a_row=5)
    for _ in range(3):
        assert [judge.observe(_refused(), 0) for _ in range(4)] == [None] * 4
        assert judge.observe(_ok(), 0) is None  # one object's ACL, not the keys
    # An entry skipped without a request (a FIFO) proves nothing either way: the run goes on.
    fifo = FileResult("fifo", Outcome.SKIPPED, detail="NOT_REGULAR_FILE: a FIFO")
    wrong_key = _refused("InvalidAccessKeyId")
    assert [judge.observe(r, 0) for r in (wrong_key, wrong_key, fifo, wrong_key, wrong_key)] == [None] * 5
    reason = judge.observe(wrong_key, 0)
    assert reason.startswith("5 files in a row refused: destBucket 'b' at http://e rejected destAccessKey 'k'")
    assert judge.stopped == reason
    assert judge.observe(wrong_key, 0) is None  # said once


@pytest.mark.parametrize("code", ["NoSuchBucket", "RequestTimeTooSkewed"])
def test_a_bucket_gone_or_a_clock_off_stops_at_the_first_file(code):
    error = fatal_error(RequestFailed(404 if code == "NoSuchBucket" else 403, code), role="src", bucket="b",
                        endpoint="http://e")
    reason = FatalDetector().observe(FileResult("k", Outcome.FAILED, cause=error), 0)
    assert reason == str(error) and reason.startswith("srcBucket 'b' at http://e")


def test_unreachable_only_counts_while_nothing_is_copied():
    now = [100.0]
    judge = FatalDetector(unreachable_for=20, clock=lambda: now[0])
    refused = RequestFailed(0, "ConnectionRefusedError", "cannot connect to http://e: refused", retryable=True,
                            unreachable=True, role="src")
    down = FileResult("k", Outcome.FAILED, cause=refused)
    assert judge.observe(down, began=90.0) is None  # down for 10 s
    now[0] = 109.0
    assert judge.observe(_ok(), 0) is None  # it answered: the count starts again
    now[0] = 125.0
    assert judge.observe(down, began=110.0) is None
    # Timeouts and broken connections are no proof: only connections never opened count.
    flaky = RequestFailed(0, "Timeout", "timed out", retryable=True)
    now[0] = 200.0
    assert judge.observe(FileResult("k", Outcome.FAILED, cause=flaky), 0) is None
    reason = judge.observe(down, began=190.0)
    assert reason == ("the source took no connection for 90 s (ConnectionRefusedError: cannot connect to "
                      "http://e: refused): check srcDomain and that this host can reach it")


def test_a_missing_file_is_its_own_problem_while_the_source_is_there(tmp_path):
    from ossimport_dist.storage.local import LocalSource

    root = tmp_path / "nas"
    root.mkdir()
    source = LocalSource(str(root))
    judge = FatalDetector(source_problem=source.root_problem)
    missing = FileResult("k", Outcome.FAILED, detail="SOURCE_NOT_EXIST: source file does not exist",
                         cause=FileNotFoundError("k"))
    assert [judge.observe(missing, 0) for _ in range(5)] == [None] * 5
    os.rmdir(root)
    reasons = [judge.observe(missing, 0) for _ in range(5)]  # asked once per 5 in a row
    assert reasons[:4] == [None] * 4
    assert reasons[4] == f"srcPrefix '{root}/' is gone (an unmounted NAS or a removed folder?): mount it again or fix srcPrefix"
    source.close()


# -- distributed: the agents tell the master ------------------------------------------------------
def test_a_stop_report_read_after_the_retry_never_stops_the_retried_job(tmp_path):
    """Two hosts stop on the same wrong key; the second host's heartbeat is read only after the
    operator's retry: the report names the job.cfg push from before the retry and is not taken."""
    import threading
    from ossimport_dist.fleet.dispatcher import HostState, RemoteTracker
    from ossimport_dist.fleet.hosts import Host
    from ossimport_dist.layout import Home, JobLayout

    job = JobLayout(Home(tmp_path), "nightly")
    job.root.mkdir(parents=True)
    job.config_file.write_text("jobName=nightly\n")
    tracker = RemoteTracker(Home(tmp_path), None, lambda: [job], None, threading.Event())
    a, b = (Host(f"127.0.0.{n}", f"127.0.0.{n}", 22) for n in (11, 12))
    mtime = job.config_file.stat().st_mtime_ns
    state_a = HostState(a.name, pushed_configs={"nightly": (mtime, "push-a1")})
    state_b = HostState(b.name, pushed_configs={"nightly": (mtime, "push-b1")})
    tracker.links = {a.name: (a, state_a, None), b.name: (b, state_b, None)}

    def report(push_id):
        return {"stopped": {"nightly": {"reason": "5 files in a row refused: fix destSecretKey", "config": push_id}}}

    state_a.beat = report("push-a1")
    tracker._take_stops(a, state_a, {"nightly": job})
    assert job.job_failure().startswith("5 files in a row refused")
    assert state_a.pushed_configs == state_b.pushed_configs == {}, "the retry pushes job.cfg again"

    state_a.beat = report("push-a1")  # the same report in the next heartbeat: taken once
    job.clear_job_failure()  # console.sh retry
    tracker._take_stops(a, state_a, {"nightly": job})
    state_b.beat = report("push-b1")  # B stopped before the retry; its heartbeat is read after it
    tracker._take_stops(b, state_b, {"nightly": job})
    assert job.job_failure() is None

    state_b.pushed_configs["nightly"] = (mtime, "push-b2")  # the retry's first dispatch to B
    tracker._take_stops(b, state_b, {"nightly": job})  # a heartbeat written before B read the push
    assert job.job_failure() is None
    state_b.beat = report("push-b2")  # the key is still wrong: the new runtime stops too
    tracker._take_stops(b, state_b, {"nightly": job})
    assert job.job_failure().startswith("5 files in a row refused")


@pytest.mark.xdist_group("fleet")
def test_fleet_wrong_secret_stops_the_job_on_every_host(request, emulator):
    from test_distributed import Cluster

    fleet = request.getfixturevalue("fleet")
    request.getfixturevalue("deployed")
    fleet.ensure_up()
    bucket = request.getfixturevalue("bucket")
    c = Cluster(fleet, request.getfixturevalue("tmp_path") / "cluster", bucket, emulator.key_id,
                "wrong-" + emulator.secret[::-1], hosts=fleet.hosts[:2])
    request.addfinalizer(lambda: (c.console("stop"), c.console("clean", c.job_name)))
    files = small_files(240)
    c.put_files(files)
    c.write_job(taskObjectCountLimit="10")
    c.ok("submit", "--no-preflight", str(c.job_file))
    before = puts(emulator)
    c.ok("start", "--no-preflight")
    began = time.monotonic()
    while True:
        r = c.console("stat", c.job_name)
        assert r.returncode in STAT_EXITS and "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
        if "JobState:Failed" in r.stdout:
            break
        assert time.monotonic() - began < 30, f"not Failed within 30 s:\n{r.stdout}"
        time.sleep(0.5)

    [reason] = reason_lines(r.stdout)
    assert reason.startswith(f"Reason:5 files in a row refused: destBucket '{bucket.bucket_name}' at "
                             f"{bucket.endpoint} rejected the signature (SignatureDoesNotMatch): destSecretKey "
                             f"does not belong to destAccessKey '{emulator.key_id}'; fix destSecretKey"), reason
    assert reason.endswith(f"; once fixed, 'console.sh retry {c.job_name}' sends the files not copied"), reason
    assert not any(c.job_dir.glob("dispatched/*/*"))
    finished = [k for d in c.finished("failed_tasks") for k in task_keys(d / "TASK")]
    pending = [k for d in c.finished("pending_tasks") for k in task_keys(d / "TASK")]
    assert sorted(finished + pending) == sorted(files)
    assert puts(emulator) - before < len(files) // 4, "the files were tried one by one"
    assert dest_objects(bucket) == {}
    master_log = (Path(fleet.working_dir) / "logs" / "master.log").read_text()
    assert len(re.findall(rf" ERROR .*job {c.job_name} stopped on ", master_log)) == 1, master_log

    # The fix, in the submitted job: the retry's tasks reach the hosts with the new job.cfg.
    fix_frozen_secret(c.job_dir / "job.cfg", emulator.secret)
    r = c.console("retry", c.job_name)
    assert r.returncode == 0 and r.stdout.startswith(f"retry job:{c.job_name}: the job had stopped ("), r.stdout
    state = c.wait_state(timeout=120)
    assert state["JobState"] == "Succeed", (state, (Path(fleet.working_dir) / "logs" / "master.log").read_text()[-6000:])
    assert_migrated(bucket, files)


# -- the drivers tell a dead endpoint from a flaky one --------------------------------------------
def test_oss_drivers_say_a_refused_connection_never_connected_and_whose_it_is():
    from ossimport_dist.models import ObjectEntry
    from ossimport_dist.storage.azure import AzureSource
    from ossimport_dist.storage.oss import OssDestination, OssSource

    dead = f"http://127.0.0.1:{free_port()}"
    dest = OssDestination(domain=dead, bucket="no-one-here", access_key="k", secret_key="s")
    with pytest.raises(RequestFailed) as put:  # the lean request path
        dest.put("a.txt", b"a")
    source = OssSource(domain=dead, bucket="no-one-here", access_key="k", secret_key="s")
    with pytest.raises(RequestFailed) as get:  # oss2's path
        source.open(ObjectEntry(key="a.txt", size=1, mtime=0.0))
    blobs = AzureSource(account="devstoreaccount1", key=base64.b64encode(b"k" * 64).decode(), container="c",
                        domain=f"{dead}/devstoreaccount1")
    with pytest.raises(RequestFailed) as stat:  # azure-core's path
        blobs.stat("a.txt")
    for failure, role in ((put.value, "dest"), (get.value, "src"), (stat.value, "src")):
        assert (failure.status, failure.unreachable, failure.role, failure.retryable) == (0, True, role, True)
    for driver in (dest, source, blobs):
        driver.close()
