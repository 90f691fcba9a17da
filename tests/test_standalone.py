"""Standalone migrations told end to end through the real console.sh and the real emulator."""

from __future__ import annotations

import json
import os
import signal
import stat as stat_mod
import time

import oss2

from conftest import (AUDIT_LINE, OssDest, assert_migrated, audit_after_damage, awkward_tree,
                      process_cmdlines, task_keys, wait_for, write_tree)


def test_local_folder_arrives_verified_with_ossimport_state_tree(migration):
    files = awkward_tree(40)
    write_tree(migration.src, files)
    migration.write_conf(job_props={"destPrefix": "migrated/", "taskObjectCountLimit": "7"})

    assert migration.ok("submit", str(migration.job_file)).strip() == "submit job:local_test success!"
    s = migration.stat()
    assert s["JobState"] == "Submitted" and s["Is Scan Finished"] == "false"
    migration.ok("start")
    s = migration.wait_state()

    assert s["JobState"] == "Succeed"
    assert s["Pending Task Count"] == "0" and s["Dispatched Task Count"] == "0"
    assert s["Failed Task Count"] == "0" and s["Is Scan Finished"] == "true"
    assert int(s["Succeed Task Count"]) == -(-len(files) // 7)
    assert s["Files"].startswith(f"{len(files)}/{len(files)} done, succeed {len(files)}, skipped 0, failed 0")
    assert_migrated(migration.bucket, files, "migrated/")

    # The state tree, as OssImport lays it out.
    for name in ("checkpoints", "pending_tasks", "dispatched", "succeed_tasks", "failed_tasks"):
        assert (migration.job_dir / name).is_dir()
    assert list((migration.job_dir / "checkpoints" / "0").glob("*.cpt"))
    seen = []
    for task in migration.task_dirs("succeed_tasks"):
        task_id, _, rest = task.name.partition("_")
        ms, _, host = rest.partition("@")
        assert len(task_id) == 32 and ms.isdigit() and host == "localhost"
        assert sorted(p.name for p in task.iterdir()) == ["COUNTS", "DONE", "STATUS", "TASK", "audit.log",
                                                          "error.list", "objects.jsonl"]
        assert (task / "STATUS").read_text().strip() == "Completed"
        assert (task / "error.list").read_text() == ""
        keys = task_keys(task / "TASK")
        audit = (task / "audit.log").read_text("utf-8").splitlines()
        assert len(audit) == len(keys)
        assert all(AUDIT_LINE.match(line) and " Succeed " in line for line in audit)
        seen += keys
    assert sorted(seen) == sorted(files)
    assert not (migration.work / "master" / "jobqueue" / "local_test").exists()


def test_submit_refuses_an_existing_job_and_clean_resets_it(migration):
    write_tree(migration.src, {"a.txt": b"a"})
    migration.write_conf()
    migration.ok("submit", str(migration.job_file))
    r = migration.console("submit", str(migration.job_file))
    assert r.returncode == 2
    assert "already exists" in r.stderr and "clean" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert migration.ok("clean", "local_test").strip() == "clean job:local_test success!"
    assert not migration.job_dir.exists()
    migration.ok("submit", str(migration.job_file))


def test_malformed_config_is_one_line_and_exit_2(migration):
    write_tree(migration.src, {"a.txt": b"a"})
    migration.write_conf(job_props={"srcPrefix": str(migration.src)})
    r = migration.console("submit", str(migration.job_file))
    assert r.returncode == 2
    line = r.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line
    assert str(migration.job_file) in line and "srcPrefix" in line and "/" in line
    assert migration.secret not in line

    migration.write_conf(job_props={"srcType": "Local"})
    r = migration.console("submit", str(migration.job_file))
    assert r.returncode == 2 and "srcType" in r.stderr and "local" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1

    migration.write_conf(job_props={"taskObjectCountLimit": "lots"})
    r = migration.console("submit", str(migration.job_file))
    assert r.returncode == 2 and "taskObjectCountLimit" in r.stderr and ":" in r.stderr.split()[1]

    # A missing key takes its default; an unknown key is a warning.
    migration.write_conf(job_props={"srcprefix": "x", "isSkipExistFile": "true"})
    r = migration.console("submit", str(migration.job_file))
    assert r.returncode == 0, r.stderr
    assert "srcprefix" in r.stderr and "srcPrefix" in r.stderr


def test_killed_master_resumes_its_scan_without_duplicate_or_missing_tasks(migration):
    files = {f"d{i % 20:02d}/f{i:05d}.txt": f"{i}\n".encode() for i in range(3000)}
    write_tree(migration.src, files)
    migration.write_conf(sys_props={"workerTaskThreadNum": "2", "workerMaxThroughput(KB/s)": "1"},
                         job_props={"taskObjectCountLimit": "1", "scanThreadCount": "4"})
    migration.ok("submit", str(migration.job_file))
    migration.ok("start")
    pid = migration.service_pid()
    # One file per task: the scan writes 3,000 tasks, long enough to be killed in the middle
    # of it however busy the machine (with 3 per task it sometimes ended before the kill).
    deadline = time.monotonic() + 30
    while len(os.listdir(migration.job_dir / "pending_tasks")) < 50:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    s = migration.stat()
    assert s["JobState"] == "Abort" and s["Is Scan Finished"] == "false", s

    # Restart without the bandwidth cap so the job finishes quickly.
    migration.sys_file.write_text(migration.sys_file.read_text().replace("(KB/s)=1", "(KB/s)=0")
                                  .replace("workerTaskThreadNum=2", "workerTaskThreadNum=16"))
    migration.ok("start")
    s = migration.wait_state(timeout=180)
    assert s["JobState"] == "Succeed"

    keys = []
    for task in migration.task_dirs("succeed_tasks"):
        keys += task_keys(task / "TASK")
    assert len(keys) == len(set(keys)), "a file was put in two tasks"
    assert sorted(keys) == sorted(files)
    assert len(migration.task_dirs("succeed_tasks")) == len({t.name.split("_")[0] for t in
                                                              migration.task_dirs("succeed_tasks")})
    assert_migrated(migration.bucket, files)


def test_worker_killed_mid_upload_resumes_its_multipart_upload(migration, emulator):
    big = os.urandom(24 * 1024 * 1024)
    files = {"video/big.bin": big, "small.txt": b"small"}
    write_tree(migration.src, files)
    migration.write_conf(sys_props={"workerMaxThroughput(KB/s)": "4096"},
                         job_props={"multipartUploadThreshold": "2m", "multipartUploadPartSize": "1m",
                                    "uploadThreadNumPerLargeFile": "2"})
    migration.ok("submit", str(migration.job_file))
    before = emulator.stats()
    migration.ok("start")
    deadline = time.monotonic() + 60
    checkpoint = None
    while True:
        found = list((migration.work / "worker" / "jobs" / "local_test" / "tasks").glob("*/multipart/*.json"))
        if found:
            doc = json.loads(found[0].read_text())
            if len(doc.get("parts", {})) >= 6:
                checkpoint = doc
                break
        assert time.monotonic() < deadline, "the multipart upload never got going"
        time.sleep(0.05)
    os.kill(migration.service_pid(), signal.SIGKILL)
    at_kill = emulator.stats()
    migration.sys_file.write_text(migration.sys_file.read_text().replace("(KB/s)=4096", "(KB/s)=0"))
    migration.ok("start")
    assert migration.wait_state()["JobState"] == "Succeed"
    after = emulator.stats()

    def uploads(st):
        return st["by_operation"].get("UploadPart", 0)

    parts_total = 24
    resumed = uploads(after) - uploads(at_kill)
    assert uploads(at_kill) - uploads(before) >= len(checkpoint["parts"])
    assert resumed <= parts_total - len(checkpoint["parts"]) + 2, \
        f"resume re-sent {resumed} parts; {len(checkpoint['parts'])} were already uploaded"
    assert after["by_operation"].get("InitiateMultipartUpload", 0) - before["by_operation"].get(
        "InitiateMultipartUpload", 0) == 1
    assert_migrated(migration.bucket, files)


def test_file_changed_mid_upload_is_size_not_match_then_retry_succeeds(migration):
    files = {"growing.log": os.urandom(6 * 1024 * 1024), "stable.txt": b"stable"}
    write_tree(migration.src, files)
    migration.write_conf(sys_props={"workerMaxThroughput(KB/s)": "2048"},
                         job_props={"multipartUploadThreshold": "1m", "multipartUploadPartSize": "512k"})
    migration.ok("submit", str(migration.job_file))
    migration.ok("start")
    deadline = time.monotonic() + 30
    while not list((migration.work / "worker" / "jobs" / "local_test" / "tasks").glob("*/multipart/*.json")):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    with open(migration.src / "growing.log", "ab") as f:
        f.write(b"appended while uploading\n")
    s = migration.wait_state()
    assert s["JobState"] == "Failed" and s["Failed Task Count"] == "1"

    failed = migration.task_dirs("failed_tasks")[0]
    assert (failed / "STATUS").read_text().strip() == "Failed"
    assert not (failed / "DONE").exists()
    errors = (failed / "error.list").read_text().splitlines()
    assert len(errors) == 1 and errors[0].startswith("growing.log\t") and "SIZE_NOT_MATCH" in errors[0]
    assert any("CheckFailed growing.log Detail:SIZE_NOT_MATCH" in line
               for line in (failed / "audit.log").read_text().splitlines())
    detail = migration.stat_text("detail")
    assert "SIZE_NOT_MATCH" in detail and "error.list" in detail

    # The file is stable now: retry copies it as it is now, verified.
    files["growing.log"] = (migration.src / "growing.log").read_bytes()
    migration.sys_file.write_text(migration.sys_file.read_text().replace("(KB/s)=2048", "(KB/s)=0"))
    r = migration.console("retry")
    assert r.returncode == 0 and "1 failed task(s) back to pending" in r.stdout
    s = migration.wait_state()
    assert s["JobState"] == "Succeed", s
    assert_migrated(migration.bucket, files)
    r = migration.console("retry")
    assert r.returncode == 0 and r.stdout.strip() == "nothing to retry: job local_test has no failed task"


def test_secrets_never_appear_in_logs_stat_task_files_or_process_list(migration):
    write_tree(migration.src, {f"f{i}.txt": b"x" * i for i in range(30)})
    migration.write_conf(sys_props={"workerMaxThroughput(KB/s)": "1"})
    migration.ok("submit", str(migration.job_file))
    migration.ok("start")
    wait_for(lambda: any(migration.work.rglob("audit.log")), "no task started copying")
    assert migration.secret not in process_cmdlines()
    frozen = migration.job_dir / "job.cfg"
    assert stat_mod.S_IMODE(frozen.stat().st_mode) == 0o600
    assert migration.secret in frozen.read_text()  # the worker needs it; only its owner can read it
    migration.sys_file.write_text(migration.sys_file.read_text().replace("(KB/s)=1", "(KB/s)=0"))
    assert migration.wait_state()["JobState"] == "Succeed"
    out = migration.stat_text("detail")
    assert migration.secret not in out
    for path in migration.work.rglob("*"):
        if path.is_file() and path != frozen:
            assert migration.secret.encode() not in path.read_bytes(), f"secret found in {path}"


def test_wrong_secret_fails_files_with_a_clear_reason_and_no_secret(migration, emulator):
    write_tree(migration.src, {"a.txt": b"a", "b.txt": b"b"})
    migration.secret = "wrong-" + emulator.secret[::-1]
    migration.write_conf()
    # The copy's own account of a wrong key: preflight would refuse it at submit (test_preflight).
    migration.ok("submit", "--no-preflight", str(migration.job_file))
    migration.ok("start", "--no-preflight")
    s = migration.wait_state()
    assert s["JobState"] == "Failed"
    errors = (migration.task_dirs("failed_tasks")[0] / "error.list").read_text()
    assert "a.txt" in errors and ("SignatureDoesNotMatch" in errors or "secret" in errors.lower())
    log = (migration.work / "logs" / "ossimport2.log").read_text()
    for text in (errors, log, migration.stat_text("detail")):
        assert migration.secret not in text


def test_injected_server_errors_are_retried_and_every_object_verified(migration, emulator):
    files = awkward_tree(60)
    write_tree(migration.src, files)
    migration.write_conf()
    emulator.set_faults("500:0.10,503:0.04,reset:0.04")
    # Faults on every request would fail preflight's one read and its one second try now and then.
    migration.ok("submit", "--no-preflight", str(migration.job_file))
    migration.ok("start", "--no-preflight")
    s = migration.wait_state(timeout=180)
    # Each request is retried with backoff, so a file fails only when every attempt drew a fault
    # (rare, but random). Nothing is lost then: it is in error.list, and retry converges.
    retries = 0
    while s["JobState"] == "Failed" and retries < 3:
        assert "error.list" in migration.stat_text("detail")
        migration.ok("retry")
        retries += 1
        s = migration.wait_state(timeout=180)
    emulator.set_faults(None)
    assert s["JobState"] == "Succeed", migration.stat_text("detail")
    assert_migrated(migration.bucket, files)


def test_skip_existing_files_and_audit_job(migration):
    files = {f"x/{i}.bin": os.urandom(100 + i) for i in range(12)}
    write_tree(migration.src, files)
    migration.write_conf()
    migration.ok("submit", str(migration.job_file))
    migration.ok("start")
    assert migration.wait_state()["JobState"] == "Succeed"

    # The same folder again with isSkipExistFile: nothing is copied twice.
    migration.ok("stop")
    migration.ok("clean", "local_test")
    migration.write_conf(job_props={"isSkipExistFile": "true"})
    migration.ok("submit", str(migration.job_file))
    migration.ok("start")
    s = migration.wait_state()
    assert s["JobState"] == "Succeed"
    assert s["Files"].startswith(f"{len(files)}/{len(files)} done, succeed 0, skipped {len(files)}")

    # An audit job finds the one object that differs.
    migration.bucket.put_object("x/3.bin", b"tampered")
    migration.ok("stop")
    migration.ok("clean", "local_test")
    migration.write_conf(job_props={"jobType": "audit", "auditMode": "detailed"})
    migration.ok("submit", str(migration.job_file))
    migration.ok("start")
    s = migration.wait_state()
    assert s["JobState"] == "Failed"
    failed = migration.task_dirs("failed_tasks")
    errors = "".join((t / "error.list").read_text() for t in failed)
    assert errors.startswith("x/3.bin\t") and errors.count("\n") == 1
    assert migration.bucket.get_object("x/3.bin").read() == b"tampered", "an audit must not write"


def test_bucket_to_bucket_copy_through_oss_source(migration, emulator):
    src_bucket = oss2.Bucket(migration.bucket.auth, emulator.endpoint, migration.bucket.bucket_name + "-src")
    src_bucket.create_bucket()
    files = {f"photos/{i:03d} é+#.jpg": os.urandom(50 * i) for i in range(25)}
    files["photos/large.bin"] = os.urandom(3 * 1024 * 1024 + 5)
    for k, v in files.items():
        src_bucket.put_object(k, v, headers={"Content-Type": "image/jpeg"})
    job = {"srcType": "oss", "srcDomain": emulator.endpoint, "srcBucket": src_bucket.bucket_name,
           "srcPrefix": "photos/", "srcAccessKey": emulator.key_id, "srcSecretKey": emulator.secret,
           "destPrefix": "copied/", "multipartUploadThreshold": "1m", "multipartUploadPartSize": "1m"}
    migration.write_conf(job_props=job)
    migration.ok("submit", str(migration.job_file))
    before = emulator.stats()["by_operation"]
    migration.ok("start")
    assert migration.wait_state()["JobState"] == "Succeed"
    assert_migrated(migration.bucket, {k[len("photos/"):]: v for k, v in files.items()}, "copied/")
    assert migration.bucket.head_object("copied/000 é+#.jpg").content_type == "image/jpeg"
    assert migration.bucket.head_object("copied/large.bin").content_type == "image/jpeg"
    # Same endpoint: the bytes stayed inside OSS (CopyObject / UploadPartCopy), none went through us.
    after = emulator.stats()["by_operation"]
    ops = {op: after.get(op, 0) - before.get(op, 0) for op in after}
    assert ops.get("CopyObject", 0) == len(files) - 1 and ops.get("UploadPartCopy", 0) == 4, ops
    assert ops.get("PutObject", 0) == 0 and ops.get("UploadPart", 0) == 0, ops
    audit = "".join((t / "audit.log").read_text() for t in migration.task_dirs("succeed_tasks"))
    assert audit.count("Detail:server-side copy") == len(files)
    audit_after_damage(migration, job, OssDest(migration.bucket, "copied/"),
                       [k[len("photos/"):] for k in files], ["001 é+#.jpg", "large.bin", "024 é+#.jpg"])


def test_retry_is_safe_from_cron(migration):
    write_tree(migration.src, {"a.txt": b"a"})
    migration.write_conf()
    migration.ok("submit", str(migration.job_file))
    r = migration.console("retry")
    assert r.returncode == 0 and r.stdout.strip() == "nothing to retry: job local_test has no failed task"
    import fcntl

    with open(migration.work / "master" / "retry.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        r = migration.console("retry")
    assert r.returncode == 0 and "another retry is running" in r.stdout


def test_stop_ends_only_what_start_began(migration):
    write_tree(migration.src, {"a.txt": b"a"})
    migration.write_conf()
    migration.ok("submit", str(migration.job_file))
    assert migration.ok("stop").strip() == "service is not running"
    # A stale pid file naming another process must not make stop kill it.
    (migration.work / "master").mkdir(parents=True, exist_ok=True)
    (migration.work / "master" / "ossimport.pid").write_text(f"{os.getpid()}\n")
    assert migration.ok("stop").strip() == "service is not running"
    migration.ok("start")
    pid = migration.service_pid()
    assert "already running" in migration.ok("start")
    assert migration.ok("stop").strip() == f"service stopped (pid {pid})"
    assert migration.stat()["JobState"] in ("Succeed", "Abort")


def test_import_since_symlinks_encryption_and_md5_options(migration):
    import hashlib

    old = {"old/a.txt": b"old a", "old/b.txt": b"old b"}
    new = {"new/c.txt": b"new c", "new/d.bin": os.urandom(5000)}
    write_tree(migration.src, {**old, **new})
    for k in old:
        os.utime(migration.src / k, (1_000_000_000, 1_000_000_000))
    os.symlink(migration.src / "new" / "c.txt", migration.src / "new" / "link.txt")
    # isAllowSymbolicLink follows links only to files under srcPrefix.
    outside = migration.dir / "outside.txt"
    outside.write_bytes(b"outside srcPrefix")
    os.symlink(outside, migration.src / "new" / "out.txt")
    migration.write_conf(sys_props={"workerRecordMd5": "true"},
                         job_props={"importSince": "1500000000", "isAllowSymbolicLink": "true",
                                    "isServerSideEncryption": "true"})
    migration.ok("submit", str(migration.job_file))
    migration.ok("start")
    assert migration.wait_state()["JobState"] == "Succeed"
    assert_migrated(migration.bucket, {**new, "new/link.txt": b"new c"})
    [task] = migration.task_dirs("succeed_tasks")
    assert (task / "skipped.list").read_text() == (
        f"new/out.txt\tNOT_REGULAR_FILE: symbolic link to outside srcPrefix ({outside})\n")
    for key, data in new.items():
        head = migration.bucket.head_object(key)
        assert head.headers["x-oss-server-side-encryption"] == "AES256"
        assert head.headers["x-oss-meta-md5"] == hashlib.md5(data).hexdigest()


def test_symlinked_files_are_skipped_by_default_and_said_so(migration):
    write_tree(migration.src, {"real.txt": b"real"})
    os.symlink(migration.src / "real.txt", migration.src / "alias.txt")
    migration.write_conf()
    migration.ok("submit", str(migration.job_file))
    migration.ok("start")
    s = migration.wait_state()
    assert s["JobState"] == "Succeed"
    assert s["Files"].startswith("2/2 done, succeed 1, skipped 1 (1 not a regular file"), s
    assert_migrated(migration.bucket, {"real.txt": b"real"})
    r = migration.console("errors", "local_test")
    assert "skipped: alias.txt: NOT_REGULAR_FILE: symbolic link (isAllowSymbolicLink=false)" in r.stderr


def test_submit_names_a_source_folder_that_does_not_exist(migration):
    migration.write_conf(job_props={"srcPrefix": str(migration.dir / "not-mounted") + "/"})
    r = migration.console("submit", str(migration.job_file))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "srcPrefix" in r.stderr and "not-mounted" in r.stderr and "does not exist" in r.stderr
    assert f"{migration.job_file}:3:" in r.stderr
