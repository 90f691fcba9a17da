"""A plan before the migration: 'console.sh plan' lists what the job will list, counts what it
will skip, copy and ask, copies nothing, and the job then does what it said."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

from conftest import CONSOLE, dest_objects, wait_for, write_tree

KIB, MIB = 1024, 1024 * 1024
DAY = 86400


def ops_since(emulator, before: dict) -> dict:
    after = emulator.stats()["by_operation"]
    return {op: n - before.get(op, 0) for op, n in after.items() if n - before.get(op, 0)}


def plan_json(migration, *args) -> dict:
    r = migration.console("plan", *args, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


def test_the_plan_counts_what_the_job_then_does_object_by_object_and_request_by_request(migration, emulator):
    files = {f"photos/img{i:02d}.jpg": os.urandom(2000 + 50 * i) for i in range(9)}  # <64 KiB
    files["docs/manual.pdf"] = os.urandom(200 * KIB)  # <1 MiB
    files["docs/readme.txt"] = b"hello"
    files["videos/clip.mp4"] = os.urandom(3 * MIB + 5)  # <100 MiB, multipart: 4 parts of 1 MiB
    old = {"archive/2019.tar": os.urandom(700), "archive/2020.tar": os.urandom(900)}
    write_tree(migration.src, {**files, **old})
    a_week_ago = time.time() - 7 * DAY
    for key in old:  # not modified since importSince: the job leaves them out
        os.utime(migration.src / key, (a_week_ago, a_week_ago))
    os.mkfifo(migration.src / "docs" / "a-fifo")
    with open(os.fsencode(str(migration.src / "docs")) + b"/caf\xe9.txt", "wb") as f:
        f.write(b"a name that is not UTF-8")
    # Already at the destination: two the same (skipped), one of another size (copied again).
    for key in ("photos/img00.jpg", "photos/img01.jpg"):
        migration.bucket.put_object("mig/" + key, files[key])
    migration.bucket.put_object("mig/photos/img02.jpg", b"an older, shorter version")
    migration.write_conf(job_props={"destPrefix": "mig/", "isSkipExistFile": "true", "taskObjectCountLimit": "4",
                                    "importSince": str(int(time.time() - DAY)),
                                    "multipartUploadThreshold": "1m", "multipartUploadPartSize": "1m"})
    before_plan = dest_objects(migration.bucket, "mig/")

    ops = emulator.stats()["by_operation"]
    r = migration.console("plan", str(migration.job_file))
    plan_ops = ops_since(emulator, ops)
    assert r.returncode == 0, r.stdout + r.stderr
    # The plan wrote nothing, anywhere: not at the destination, not a job in workingDir.
    assert dest_objects(migration.bucket, "mig/") == before_plan
    assert set(plan_ops) <= {"ListObjects", "ListObjectsV2", "HeadObject"}, plan_ops
    assert not (migration.work / "master" / "jobs" / "local_test").exists()
    text = r.stdout
    assert "plan of job:local_test, a dry run: nothing was copied" in text, text
    assert "listed         16 entries, 3.2 MiB (left out: 2 by importSince (not modified since))" in text
    assert "in the job     14 objects" in text and "in 4 tasks" in text
    assert "2 already at the destination" in text and "1 is not a regular file" in text
    assert "will fail    1 INVALID_KEY" in text
    assert "to copy        10 objects" in text

    plan = plan_json(migration, str(migration.job_file))
    assert plan["listed"]["objects"] == 16 and plan["left_out"] == {"importSince": 2}
    assert plan["objects"] == 14 and plan["tasks"] == 4
    assert plan["bytes"] == sum(map(len, files.values())) + len(b"a name that is not UTF-8")
    assert plan["skipped"] == {"existing": 2, "existing_bytes": len(files["photos/img00.jpg"]) +
                               len(files["photos/img01.jpg"]), "not_regular_files": 1}
    assert plan["will_fail"] == {"INVALID_KEY": 1}
    copied = {k: v for k, v in files.items() if k not in ("photos/img00.jpg", "photos/img01.jpg")}
    assert plan["to_copy"] == {"objects": len(copied), "bytes": sum(map(len, copied.values())), "size_unknown": 0}
    assert [(b["label"], b["objects"]) for b in plan["sizes"]] == [
        ("<64 KiB", 8), ("<1 MiB", 1), ("<100 MiB", 1), (">=100 MiB", 0)]
    req = plan["requests"]
    assert (req["puts"], req["multipart_uploads"], req["parts"], req["multipart_requests"]) == (9, 1, 4, 6)
    assert req["skip_heads"] == 12  # every file the worker may copy is looked up first
    assert plan["time"]["reached"] is None and plan["time"]["seconds_at_cap"] is not None

    # The job does what the plan said, request by request.
    ops = emulator.stats()["by_operation"]
    migration.ok("submit", "--no-preflight", str(migration.job_file))
    migration.ok("start", "--no-preflight")
    assert migration.wait_state()["JobState"] == "Failed"  # the name OSS cannot take
    job_ops = ops_since(emulator, ops)
    assert job_ops.get("PutObject", 0) == req["puts"]
    assert job_ops.get("InitiateMultipartUpload", 0) == req["multipart_uploads"]
    assert job_ops.get("UploadPart", 0) == req["parts"]
    assert job_ops.get("CompleteMultipartUpload", 0) == req["multipart_uploads"]
    assert job_ops.get("HeadObject", 0) >= req["skip_heads"]

    stat = json.loads(migration.console("stat", "--json").stdout)["jobs"][0]
    tasks = stat["pending_tasks"] + stat["dispatched_tasks"] + stat["succeed_tasks"] + stat["failed_tasks"]
    assert (stat["objects"], stat["bytes"], tasks) == (plan["objects"], plan["bytes"], plan["tasks"])
    assert stat["totals"]["skipped"] == plan["skipped"]["existing"] + plan["skipped"]["not_regular_files"]
    migration.ok("report")
    summary = json.loads((migration.job_dir / "report" / "summary.json").read_text())
    outcomes = {name: v["objects"] for name, v in summary["by_outcome"].items()}
    assert outcomes == {"copied": plan["to_copy"]["objects"], "skipped-existing": plan["skipped"]["existing"],
                        "skipped-not-a-file": plan["skipped"]["not_regular_files"], "failed": 1}
    assert summary["copied_bytes"] == plan["to_copy"]["bytes"]
    for key, data in copied.items():  # and each object the plan counted is there, as the source has it
        assert migration.bucket.get_object("mig/" + key).read() == data

    # Planned again, the job has run: nothing left to copy but the name OSS refuses, and the
    # time at the rate the job reached.
    again = plan_json(migration, "local_test")  # a submitted job by its name
    assert again["skipped"]["existing"] == len(files) and again["to_copy"]["objects"] == 0
    assert again["time"]["reached"]["bytes_per_s"] > 0
    assert "at the rate job:local_test reached" in migration.ok("plan", "local_test")


def closed_port() -> int:
    with socket.socket() as s:  # free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_plan_of_a_million_entries_stays_small_and_counts_what_the_masters_scan_cuts(tmp_path):
    """A list of 1,000,000 keys: the plan's peak memory stays under 150 MB, and its objects, bytes
    and tasks are the job's own once the master has scanned it (a fleet whose one host answers
    nothing, so the scan runs alone and nothing is copied)."""
    entries = 1_000_000
    manifest = tmp_path / "keys.list"
    with open(manifest, "w", encoding="utf-8") as f:
        for start in range(0, entries, 10_000):
            f.write("".join(f"d{i % 1000:03d}/f{i:07d}.bin\t{i % 300_000}\n" for i in range(start, start + 10_000)))
    conf, work = tmp_path / "conf", tmp_path / "work"
    conf.mkdir()
    (tmp_path / "source").mkdir()  # the keys are listed, never read
    (conf / "sys.properties").write_text(f"workingDir={work}\nworkerUserName=nobody\nprivateKeyFile={conf}/no-key\n")
    (conf / "workers.txt").write_text(f"127.0.0.1:{closed_port()}\n")
    (conf / "job.cfg").write_text(
        f"jobName=million_keys\nsrcType=list\nlistFilePath={manifest}\nlistSrcType=local\n"
        f"srcPrefix={tmp_path / 'source'}/\ndestDomain=http://127.0.0.1:{closed_port()}\ndestBucket=never-written\n"
        "destAccessKey=k\ndestSecretKey=s\ntaskObjectCountLimit=5000\n")
    os.chmod(conf / "job.cfg", 0o600)
    console = ["bash", str(CONSOLE), "--sys", str(conf / "sys.properties"), "--workers", str(conf / "workers.txt")]

    # The peak resident memory of the plan's process alone, as its own parent measures it.
    measure = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
               "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); print(r.stdout + r.stderr)")
    r = subprocess.run([sys.executable, "-c", measure, *console, "plan", str(conf / "job.cfg"), "--json"],
                       capture_output=True, text=True, timeout=300)
    status, _, out = r.stdout.partition("\n")
    code, peak_kib = map(int, status.split())
    assert code == 0, out + r.stderr
    plan = json.loads(out)
    assert peak_kib < 150 * 1024, f"plan of {entries:,} entries peaked at {peak_kib / 1024:.0f} MB"
    assert plan["objects"] == entries and plan["tasks"] >= entries // 5000
    assert plan["bytes"] == sum(i % 300_000 for i in range(entries))
    assert sum(b["objects"] for b in plan["sizes"]) == entries

    def run(*args, timeout=120):
        done = subprocess.run([*console, *args], capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        assert done.returncode in (0, 1, 3), f"console {args}: {done.stdout}{done.stderr}"  # 1: Abort once stopped
        return done.stdout

    run("submit", "--no-preflight", str(conf / "job.cfg"))
    run("start", "--no-preflight")
    try:
        wait_for(lambda: json.loads(run("stat", "--json"))["jobs"][0]["scan_finished"], "the master's scan", 240)
    finally:
        run("stop")
    job = json.loads(run("stat", "--json"))["jobs"][0]
    tasks = job["pending_tasks"] + job["dispatched_tasks"] + job["succeed_tasks"] + job["failed_tasks"]
    assert (job["objects"], job["bytes"], tasks) == (plan["objects"], plan["bytes"], plan["tasks"])


def test_a_plan_that_cannot_be_made_says_why_in_one_line(migration):
    write_tree(migration.src, {"a.txt": b"a"})
    dead = f"http://127.0.0.1:{closed_port()}"
    cases = [
        ({"srcPrefix": str(migration.dir / "gone") + "/"}, 2, "srcPrefix: directory"),
        ({"destDomain": dead, "isSkipExistFile": "true"}, 1, f"cannot connect to {dead}"),
        ({"srcType": "list", "listFilePath": str(migration.dir / "empty.list")}, 1, "names no key"),
        ({"taskObjectCountLimit": "-1"}, 2, "taskObjectCountLimit"),
    ]
    (migration.dir / "empty.list").write_text("\n\n")
    for props, code, words in cases:
        migration.write_conf(job_props=props)
        r = migration.console("plan")
        assert r.returncode == code, (props, r.stdout, r.stderr)
        assert r.stdout == "" and len(r.stderr.splitlines()) == 1 and words in r.stderr, (props, r.stderr)
        assert "Traceback" not in r.stderr and migration.secret not in r.stderr
    r = migration.console("plan", str(migration.dir / "no-such.cfg"))
    assert r.returncode == 2 and "no-such.cfg: file not found" in r.stderr
    # With a dead destination and no lookup of existing objects, the plan needs only the source.
    migration.write_conf(job_props={"destDomain": dead})
    assert "to copy        1 object," in migration.ok("plan")


def test_the_plan_of_an_audit_job_counts_the_checks_it_will_make_and_no_write(migration, emulator):
    files = {f"a/{i:03d}.txt": os.urandom(100 + i) for i in range(25)}
    write_tree(migration.src, files)
    for key, data in files.items():
        migration.bucket.put_object(key, data)
    migration.write_conf(job_props={"jobType": "audit", "taskObjectCountLimit": "10"})
    plan = plan_json(migration)
    assert plan["job_type"] == "audit" and plan["tasks"] == 3 and plan["to_copy"]["objects"] == len(files)
    req = plan["requests"]
    assert (req["puts"], req["multipart_requests"], req["skip_heads"]) == (0, 0, 0)
    assert req["audit_lists"] == 3 and req["audit_heads"] == 0  # one listing per task of under 1,000
    assert "to audit       25 objects" in migration.ok("plan")

    ops = emulator.stats()["by_operation"]
    migration.ok("submit", "--no-preflight", str(migration.job_file))
    migration.ok("start", "--no-preflight")
    assert migration.wait_state()["JobState"] == "Succeed"
    job_ops = ops_since(emulator, ops)
    assert not {"PutObject", "UploadPart", "InitiateMultipartUpload"} & set(job_ops), job_ops
    assert job_ops.get("ListObjects", 0) + job_ops.get("ListObjectsV2", 0) == req["audit_lists"], job_ops
