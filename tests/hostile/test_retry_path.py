"""Retries that converge and leave nothing behind (issue 8).

A retried task keeps its audit.log and its multipart checkpoints: it copies only the files that
failed, resumes their uploads, and aborts an upload it will not complete. ``clean`` aborts the
uploads a job leaves open. Every story counts requests at the emulator and checks the
destination object by object, the state on disk, and that the source was left as it was.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import oss2
import pytest

from conftest import assert_migrated, write_tree

pytest_plugins = ["fleet"]  # the session-wide fleet of sshd hosts, started only when asked for

KIB = 1024
# 100k is the smallest part OSS takes: every file from 100k up goes multipart.
MULTIPART = {"multipartUploadThreshold": "100k", "multipartUploadPartSize": "100k"}
BIG_PARTS = 6
BIG_SIZE = BIG_PARTS * 100 * KIB - 7  # six parts, the last one short


# ----------------------------------------------------------------- helpers

def snapshot(root) -> dict:
    """relative path -> bytes of every file under root: the source must stay as it was."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def requests_since(emulator, before: dict) -> dict:
    after = emulator.stats()
    ops = {op: n - before["by_operation"].get(op, 0) for op, n in after["by_operation"].items()}
    ops["faults"] = sum(after["faults_injected"].values()) - sum(before["faults_injected"].values())
    return {op: n for op, n in ops.items() if n}


def open_uploads(bucket) -> list:
    """(key, upload id) of every multipart upload open in the bucket (ListMultipartUploads)."""
    return sorted((u.key, u.upload_id) for u in oss2.MultipartUploadIterator(bucket))


def run(migration, *args):
    """A console command whose output must never be a traceback; (exit code, stdout, stderr)."""
    r = migration.console(*args)
    assert "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
    return r.returncode, r.stdout, r.stderr


def start_and_wait(migration) -> dict:
    code, _, _ = run(migration, "start")
    assert code == 0
    return migration.wait_state()


def retry_and_wait(migration) -> dict:
    """``console.sh retry`` while the service runs, as an operator (or cron) does."""
    code, out, _ = run(migration, "retry")
    assert code == 0 and out.strip().startswith("retry job:local_test: 1 failed task(s) back to pending: "), out
    return migration.wait_state()


def error_list(migration) -> dict:
    """key -> reason of every failed file, from failed_tasks/*/error.list."""
    reasons = {}
    for task in migration.task_dirs("failed_tasks"):
        for line in (task / "error.list").read_text().splitlines():
            key, reason = line.split("\t", 1)
            reasons[key] = reason
    return reasons


def checkpoints(migration) -> list:
    return sorted(migration.work.rglob("multipart/*.json"))


def service_log_has_no_traceback(migration) -> None:
    log = (migration.work / "logs" / "ossimport2.log").read_text("utf-8", "replace")
    assert "Traceback" not in log, log[-3000:]


def only_state_beside_source(migration) -> None:
    """The job wrote nothing next to its source and configuration but its working dir."""
    assert sorted(p.name for p in migration.dir.iterdir()) == ["conf", "src", "work"]


@pytest.fixture
def complete_fails(migration, emulator):
    """A job of one large file and one small one whose CompleteMultipartUpload always fails:
    all six parts are uploaded, the upload stays open, the task fails."""
    files = {"video/big.bin": os.urandom(BIG_SIZE), "notes.txt": b"small"}
    write_tree(migration.src, files)
    migration.write_conf(job_props=MULTIPART)
    run(migration, "submit", str(migration.job_file))
    emulator.set_faults("500:1.0:CompleteMultipartUpload")
    before = emulator.stats()
    s = start_and_wait(migration)
    emulator.set_faults(None)
    assert s["JobState"] == "Failed", s
    assert s["Files"].startswith("1/2 done, succeed 1, skipped 0, failed 1"), s["Files"]
    reasons = error_list(migration)
    assert list(reasons) == ["video/big.bin"] and "InternalError" in reasons["video/big.bin"], reasons
    first = requests_since(emulator, before)
    assert first.get("UploadPart") == BIG_PARTS and first.get("InitiateMultipartUpload") == 1, first
    # The failed task holds the checkpoint of the upload left open at the destination.
    (checkpoint,) = checkpoints(migration)
    assert checkpoint.parent.parent.parent.name == "failed_tasks"
    upload_id = json.loads(checkpoint.read_text())["upload_id"]
    assert open_uploads(migration.bucket) == [("video/big.bin", upload_id)]
    return files, upload_id


# ----------------------------------------------------------------- only the failed files again

def test_retry_sends_only_the_three_files_that_failed(migration, emulator):
    # Seven files go multipart and arrive; the three small ones are refused at every PUT.
    files = {f"big/{i}.bin": os.urandom(150 * KIB + i) for i in range(7)}
    files.update({f"small/{i}.txt": os.urandom(200 + i) for i in range(3)})
    write_tree(migration.src, files)
    source = snapshot(migration.src)
    migration.write_conf(job_props=MULTIPART)
    run(migration, "submit", str(migration.job_file))
    emulator.set_faults("500:1.0:PutObject")
    s = start_and_wait(migration)
    emulator.set_faults(None)
    assert s["JobState"] == "Failed" and s["Failed Task Count"] == "1", s
    assert s["Files"].startswith("7/10 done, succeed 7, skipped 0, failed 3"), s["Files"]
    assert sorted(error_list(migration)) == ["small/0.txt", "small/1.txt", "small/2.txt"]
    # A crash mid-line and stray bytes in the history cost nothing but being ignored.
    (failed,) = migration.task_dirs("failed_tasks")
    with open(failed / "audit.log", "ab") as f:
        f.write(b"\xff\xfe not a line of ours\n2026-12-01 00:00:00 Succeed small/0.t")

    before = emulator.stats()
    s = retry_and_wait(migration)
    sent = requests_since(emulator, before)
    assert s["JobState"] == "Succeed", migration.stat_text("detail")
    # Exactly the three failed files went again; the seven that arrived were not touched.
    assert sent.get("PutObject") == 3, sent
    assert "UploadPart" not in sent and "InitiateMultipartUpload" not in sent, sent
    assert s["Files"].startswith("10/10 done, succeed 10, skipped 0, failed 0"), s["Files"]
    assert_migrated(migration.bucket, files)

    # The task kept its history: the first run's failures, then the retry's three successes.
    (task,) = migration.task_dirs("succeed_tasks")
    audit = (task / "audit.log").read_text("utf-8", "surrogateescape").splitlines()
    assert sum(" Failed small/" in line for line in audit) == 3
    assert sum(re.fullmatch(r"\S+ \S+ Succeed (big/\d\.bin|small/\d\.txt)", line) is not None
               for line in audit) == 10, audit
    assert (task / "RETRIES").read_text().strip() == "1"
    assert (task / "error.list").read_text() == ""
    assert json.loads((task / "COUNTS").read_text())["succeed"] == 10
    assert not checkpoints(migration) and not migration.task_dirs("pending_tasks")
    assert snapshot(migration.src) == source
    only_state_beside_source(migration)


def test_retries_converge_under_sixty_percent_put_failures(migration, emulator):
    files = {f"f/{i:02d}.dat": os.urandom(64 + i) for i in range(50)}
    write_tree(migration.src, files)
    source = snapshot(migration.src)
    migration.write_conf(sys_props={"workerTaskThreadNum": "25"}, job_props={"taskObjectCountLimit": "50"})
    run(migration, "submit", str(migration.job_file))
    before = emulator.stats()
    emulator.set_faults("500:0.6:PutObject")
    s = start_and_wait(migration)
    failed_by_round = [set(error_list(migration))]
    while s["JobState"] == "Failed" and len(failed_by_round) <= 6:
        s = retry_and_wait(migration)
        failed_by_round.append(set(error_list(migration)))
    emulator.set_faults(None)
    sent = requests_since(emulator, before)

    assert s["JobState"] == "Succeed", (failed_by_round, migration.stat_text("detail"))
    # Each round re-runs only what the round before left failed: the failures shrink to nothing.
    for earlier, later in zip(failed_by_round, failed_by_round[1:]):
        assert later <= earlier, failed_by_round
    # Every file was accepted by exactly one PUT: the rest of the PUTs are the injected faults.
    assert sent["PutObject"] == len(files) + sent["faults"], sent
    assert s["Files"].startswith("50/50 done, succeed 50, skipped 0, failed 0"), s["Files"]
    assert_migrated(migration.bucket, files)
    assert snapshot(migration.src) == source


# ----------------------------------------------------------------- multipart uploads resume

def test_retry_resumes_the_upload_whose_complete_failed(migration, emulator, complete_fails):
    files, upload_id = complete_fails
    before = emulator.stats()
    s = retry_and_wait(migration)
    sent = requests_since(emulator, before)
    assert s["JobState"] == "Succeed", migration.stat_text("detail")
    # No part went twice, no new upload began, the small file that arrived was not sent again.
    assert sent.get("CompleteMultipartUpload") == 1 and sent.get("ListParts") == 1, sent
    for op in ("UploadPart", "InitiateMultipartUpload", "PutObject", "AbortMultipartUpload"):
        assert op not in sent, sent
    assert open_uploads(migration.bucket) == []
    assert_migrated(migration.bucket, files)
    assert s["Files"].startswith("2/2 done, succeed 2, skipped 0, failed 0"), s["Files"]
    assert not checkpoints(migration)
    assert snapshot(migration.src) == files
    service_log_has_no_traceback(migration)


def test_retry_sends_only_the_parts_that_are_missing(migration, emulator):
    files = {"video/big.bin": os.urandom(BIG_SIZE)}
    write_tree(migration.src, files)
    # One part at a time, about two a second, so the parts fail from some point on.
    migration.write_conf(sys_props={"workerMaxThroughput(KB/s)": "200"},
                         job_props={**MULTIPART, "uploadThreadNumPerLargeFile": "1"})
    run(migration, "submit", str(migration.job_file))
    assert run(migration, "start")[0] == 0
    deadline = time.monotonic() + 30
    while not any(len(json.loads(p.read_text()).get("parts", {})) >= 2 for p in checkpoints(migration)):
        assert time.monotonic() < deadline, "the upload never got going"
        time.sleep(0.05)
    emulator.set_faults("500:1.0:UploadPart")
    s = migration.wait_state()
    emulator.set_faults(None)
    assert s["JobState"] == "Failed", s
    assert "UploadPart video/big.bin: HTTP 500 InternalError" in error_list(migration)["video/big.bin"]
    (checkpoint,) = checkpoints(migration)
    uploaded = len(json.loads(checkpoint.read_text())["parts"])
    assert 2 <= uploaded < BIG_PARTS

    before = emulator.stats()
    s = retry_and_wait(migration)
    sent = requests_since(emulator, before)
    assert s["JobState"] == "Succeed", migration.stat_text("detail")
    assert sent.get("UploadPart") == BIG_PARTS - uploaded, (uploaded, sent)
    assert "InitiateMultipartUpload" not in sent and sent.get("CompleteMultipartUpload") == 1, sent
    assert open_uploads(migration.bucket) == []
    assert_migrated(migration.bucket, files)
    assert snapshot(migration.src) == files


@pytest.mark.parametrize("new_size, parts", [(4 * 100 * KIB + 1, 5), (50 * KIB, 0)],
                         ids=["still-multipart", "now-below-threshold"])
def test_source_changed_before_retry_aborts_the_old_upload(migration, emulator, complete_fails,
                                                           new_size, parts):
    files, upload_id = complete_fails
    files["video/big.bin"] = os.urandom(new_size)
    write_tree(migration.src, files)
    before = emulator.stats()
    s = retry_and_wait(migration)
    sent = requests_since(emulator, before)
    assert s["JobState"] == "Succeed", migration.stat_text("detail")
    # The upload of the old version is aborted; the file as it is now arrives whole.
    assert sent.get("AbortMultipartUpload") == 1, sent
    assert sent.get("UploadPart", 0) == parts and sent.get("PutObject", 0) == (0 if parts else 1), sent
    assert open_uploads(migration.bucket) == []
    assert_migrated(migration.bucket, files)
    assert not checkpoints(migration)
    assert snapshot(migration.src) == files
    service_log_has_no_traceback(migration)


def test_source_gone_before_retry_fails_it_and_aborts_the_upload(migration, emulator, complete_fails):
    files, upload_id = complete_fails
    source = snapshot(migration.src)
    (migration.src / "video" / "big.bin").unlink()
    del source["video/big.bin"]
    s = retry_and_wait(migration)
    assert s["JobState"] == "Failed"
    assert error_list(migration) == {"video/big.bin": "SOURCE_NOT_EXIST: source file does not exist"}
    assert open_uploads(migration.bucket) == [] and not checkpoints(migration)
    assert s["Files"].startswith("1/2 done, succeed 1, skipped 0, failed 1"), s["Files"]
    assert snapshot(migration.src) == source


def test_upload_gone_at_the_destination_starts_over(migration, emulator, complete_fails):
    files, upload_id = complete_fails
    migration.bucket.abort_multipart_upload("video/big.bin", upload_id)  # expired by a lifecycle rule
    before = emulator.stats()
    s = retry_and_wait(migration)
    sent = requests_since(emulator, before)
    assert s["JobState"] == "Succeed", migration.stat_text("detail")
    assert sent.get("InitiateMultipartUpload") == 1 and sent.get("UploadPart") == BIG_PARTS, sent
    assert open_uploads(migration.bucket) == []
    assert_migrated(migration.bucket, files)
    assert snapshot(migration.src) == files
    service_log_has_no_traceback(migration)


# ----------------------------------------------------------------- clean leaves no open upload

@pytest.mark.parametrize("retried", [False, True], ids=["failed", "retried-not-run-yet"])
def test_clean_aborts_the_upload_of_a_failed_task(migration, emulator, complete_fails, retried):
    files, upload_id = complete_fails
    run(migration, "stop")
    if retried:  # the checkpoint now waits in pending_tasks
        assert run(migration, "retry")[0] == 0
        (checkpoint,) = checkpoints(migration)
        assert checkpoint.parent.parent.parent.name == "pending_tasks"
    before = emulator.stats()
    code, out, err = run(migration, "clean", "local_test")
    assert (code, out.strip(), err) == (0, "clean job:local_test success!", "")
    assert requests_since(emulator, before).get("AbortMultipartUpload") == 1
    assert open_uploads(migration.bucket) == []
    assert not migration.job_dir.exists()
    assert not (migration.work / "worker" / "jobs" / "local_test").exists()
    # What arrived stays: clean removes the job's state, never an object.
    assert [o.key for o in oss2.ObjectIteratorV2(migration.bucket)] == ["notes.txt"]
    assert snapshot(migration.src) == files
    only_state_beside_source(migration)


def test_clean_names_an_upload_it_could_not_abort_and_still_cleans(migration, emulator, complete_fails):
    files, upload_id = complete_fails
    run(migration, "stop")
    emulator.set_faults("500:1.0:AbortMultipartUpload")
    code, out, err = run(migration, "clean", "local_test")
    emulator.set_faults(None)
    assert code == 0 and out.strip() == "clean job:local_test success!", out + err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert re.fullmatch(rf'warning: could not abort multipart upload {upload_id} of "video/big\.bin": '
                        r'.*InternalError.*; abort it at the destination, or let a lifecycle rule '
                        r'expire it', lines[0]), lines[0]
    assert not migration.job_dir.exists()
    assert open_uploads(migration.bucket) == [("video/big.bin", upload_id)]
    assert snapshot(migration.src) == files
    migration.bucket.abort_multipart_upload("video/big.bin", upload_id)


def test_clean_aborts_the_upload_of_a_late_result_that_was_dropped(migration, emulator):
    """A host presumed dead reports late, holding an upload it began: its result is dropped
    (the task finished elsewhere, counted once), the upload record is kept, and clean aborts it."""
    from ossimport_dist.layout import TASK_FILE, Home

    files = {"late.bin": os.urandom(BIG_SIZE)}
    write_tree(migration.src, files)
    migration.write_conf(job_props=MULTIPART)
    run(migration, "submit", str(migration.job_file))
    assert start_and_wait(migration)["JobState"] == "Succeed"
    run(migration, "stop")
    (done,) = migration.task_dirs("succeed_tasks")
    upload_id = migration.bucket.init_multipart_upload("late.bin").upload_id  # the late host's upload
    late = migration.work / "worker" / "jobs" / "local_test" / "tasks" / "late-result"
    (late / "multipart").mkdir(parents=True)
    (late / TASK_FILE).write_bytes((done / TASK_FILE).read_bytes())
    (late / "multipart" / "x.json").write_text(json.dumps({"key": "late.bin", "upload_id": upload_id}))
    job = Home(migration.work).job("local_test")
    assert job.finish(done.name.split("_")[0], "host-presumed-dead", late, ok=False) == done
    assert not late.exists()
    s = migration.stat()
    assert s["JobState"] == "Succeed" and s["Files"].startswith("1/1 done, succeed 1"), s

    code, out, err = run(migration, "clean", "local_test")
    assert (code, out.strip(), err) == (0, "clean job:local_test success!", "")
    assert open_uploads(migration.bucket) == []
    assert_migrated(migration.bucket, files)


# ----------------------------------------------------------------- distributed: history travels

def cluster_on_fleet(request, emulator):
    """A master with the sshd fleet deployed and up, stopped and cleaned after the test."""
    from test_distributed import Cluster

    fleet = request.getfixturevalue("fleet")
    request.getfixturevalue("deployed")
    fleet.ensure_up()
    bucket = request.getfixturevalue("bucket")
    c = Cluster(fleet, request.getfixturevalue("tmp_path") / "cluster", bucket, emulator.key_id, emulator.secret)
    request.addfinalizer(lambda: (c.console("stop"), c.console("clean", c.job_name)))
    return c


@pytest.mark.xdist_group("fleet")
def test_retried_task_resumes_on_a_worker_host(request, emulator):
    """The failed task's audit.log and checkpoint came home from its host; the retry, on
    whichever host, sends neither the files done nor the parts uploaded."""
    c = cluster_on_fleet(request, emulator)
    fleet, bucket = c.fleet, c.bucket
    files = {"video/big.bin": os.urandom(BIG_SIZE), **{f"small/{i}.txt": os.urandom(100 + i) for i in range(4)}}
    c.put_files(files)
    source = snapshot(c.src)
    c.write_job(taskObjectCountLimit="10", **MULTIPART)
    c.ok("submit", str(c.job_file))
    emulator.set_faults("500:1.0:CompleteMultipartUpload")
    c.ok("start")
    s = c.wait_state()
    emulator.set_faults(None)
    assert s["JobState"] == "Failed", s
    (failed,) = c.finished("failed_tasks")
    assert (failed / "error.list").read_text().startswith("video/big.bin\t")
    (checkpoint,) = (failed / "multipart").glob("*.json")
    upload_id = json.loads(checkpoint.read_text())["upload_id"]
    assert open_uploads(bucket) == [("video/big.bin", upload_id)]

    before = emulator.stats()
    r = c.console("retry", c.job_name)
    assert r.returncode == 0 and "1 failed task(s) back to pending" in r.stdout, r.stdout + r.stderr
    s = c.wait_state()
    sent = requests_since(emulator, before)
    assert s["JobState"] == "Succeed", c.stat_text("detail", c.job_name)
    assert sent.get("CompleteMultipartUpload") == 1 and sent.get("ListParts") == 1, sent
    for op in ("UploadPart", "InitiateMultipartUpload", "PutObject"):
        assert op not in sent, sent
    assert open_uploads(bucket) == []
    assert_migrated(bucket, files)
    assert s["Files"].startswith("5/5 done, succeed 5, skipped 0, failed 0"), s["Files"]
    assert snapshot(c.src) == source
    for host in fleet.hosts:  # nothing left on the hosts but the job's configuration
        tasks = Path(fleet.host_dir(host)) / "worker" / "jobs" / c.job_name / "tasks"
        assert not (tasks.is_dir() and any(tasks.iterdir())), sorted(tasks.rglob("*"))


def test_retry_names_a_failed_task_without_its_task_file_and_moves_nothing(migration, emulator):
    files = {f"d/{i}.txt": b"x" * i for i in range(12)}  # two tasks of ten and two files
    write_tree(migration.src, files)
    migration.write_conf()
    run(migration, "submit", str(migration.job_file))
    emulator.set_faults("500:1.0:PutObject")
    s = start_and_wait(migration)
    emulator.set_faults(None)
    assert s["JobState"] == "Failed" and s["Failed Task Count"] == "2", s
    damaged, intact = migration.task_dirs("failed_tasks")
    (damaged / "TASK").unlink()
    code, out, err = run(migration, "retry")
    assert code == 2 and out == "", out
    assert err.splitlines() == [f"error: {damaged} has no TASK file, so it cannot be retried, and nothing "
                                f"was retried; move that folder out of failed_tasks (its audit.log names its "
                                f"files) and run retry again"], err
    assert migration.task_dirs("failed_tasks") == [damaged, intact]
    assert not migration.task_dirs("pending_tasks")


def test_clean_with_the_destination_unreachable_names_the_upload_and_does_not_hang(migration, complete_fails):
    files, upload_id = complete_fails
    run(migration, "stop")
    # The endpoint went away since the job ran (nothing listens on port 9).
    frozen = migration.job_dir / "job.cfg"
    text = frozen.read_text()
    frozen.write_text(re.sub(r"(?m)^destDomain=.*$", "destDomain=http://127.0.0.1:9", text))
    code, out, err = run(migration, "clean", "local_test")
    assert code == 0 and out.strip() == "clean job:local_test success!", out + err
    (line,) = err.splitlines()
    assert line.startswith(f'warning: could not abort multipart upload {upload_id} of "video/big.bin": '), line
    assert "network error" in line and line.endswith("abort it at the destination, or let a lifecycle rule "
                                                      "expire it"), line
    assert not migration.job_dir.exists()
    migration.bucket.abort_multipart_upload("video/big.bin", upload_id)


@pytest.mark.xdist_group("fleet")
def test_clean_aborts_an_upload_a_stopped_host_holds(request, emulator):
    """An agent stopped mid-upload holds the only checkpoint of its upload: clean fetches it
    from the host and aborts the upload there is no other record of."""
    c = cluster_on_fleet(request, emulator)
    fleet, bucket = c.fleet, c.bucket
    # Twenty parts at about a part a second: the agent is stopped with most of them to go.
    c.put_files({"video/big.bin": os.urandom(20 * 100 * KIB)})
    c.write_sys(**{"workerMaxThroughput(KB/s)": "100"})
    c.write_job(**MULTIPART)
    c.ok("submit", str(c.job_file))
    c.ok("start")
    deadline = time.monotonic() + 60
    held = []
    while not held:
        held = [p for h in fleet.hosts for p in (Path(fleet.host_dir(h)) / "worker" / "jobs" / c.job_name
                                                 / "tasks").glob("*/multipart/*.json")]
        assert time.monotonic() < deadline, "no host began the upload"
        time.sleep(0.1)
    upload_id = json.loads(held[0].read_text())["upload_id"]
    c.ok("stop")
    assert open_uploads(bucket) == [("video/big.bin", upload_id)]
    assert not list(c.job_dir.rglob("multipart/*.json")), "the master has no record of it"
    r = c.console("clean", c.job_name)
    assert "Traceback" not in r.stdout + r.stderr
    assert (r.returncode, r.stdout.strip(), r.stderr) == (0, f"clean job:{c.job_name} success!", "")
    assert open_uploads(bucket) == []
    for h in fleet.hosts:
        assert not (Path(fleet.host_dir(h)) / "worker" / "jobs" / c.job_name).exists()
