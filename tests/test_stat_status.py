"""What ``console.sh stat`` tells a script: a job through Submitted, Running, Abort (service
killed), Running again and Succeed, and a job that fails, each state with its documented exit code
and its ``--json`` document validated against docs/stat.schema.json."""

from __future__ import annotations

import json
import os
import signal
import time

import jsonschema

from conftest import ROOT, assert_migrated, checked_stat, dest_objects, write_tree

SCHEMA = json.loads((ROOT / "docs" / "stat.schema.json").read_text())


def stat_json(migration, *args) -> dict:
    r = migration.console("stat", "--json", *args)
    assert "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    jsonschema.validate(doc, SCHEMA)
    assert r.returncode == doc["exit_code"], (r.returncode, doc)
    return doc


def only_job(doc: dict) -> dict:
    [job] = doc["jobs"]
    return job


def wait_json(migration, test, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        doc = stat_json(migration)
        if test(only_job(doc)):
            return doc
        assert time.monotonic() < deadline, f"no such status within {timeout} s: {doc}"
        time.sleep(0.3)


def test_no_job_and_bad_words_exit_2(migration):
    migration.write_conf()
    r = migration.console("stat")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip() == "no job submitted; run 'console.sh submit' first"
    doc = stat_json(migration)
    assert doc["jobs"] == [] and doc["exit_code"] == 2 and doc["service_running"] is False
    r = migration.console("stat", "detail", "a", "b")
    assert r.returncode == 2 and "stat takes at most: detail, then a job name" in r.stderr
    r = migration.console("stat", "no_such_job")
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error: job 'no_such_job' does not exist in ")


def test_a_job_through_each_state_tells_scripts_by_exit_code_and_json(migration):
    files = {f"part{i % 2}/file-{i:02d}.bin": os.urandom(64 * 1024) for i in range(24)}
    write_tree(migration.src, files)
    total = sum(map(len, files.values()))
    # 256 KB/s: the 1.5 MiB job runs for about 6 s, long enough to be seen Running.
    migration.write_conf(sys_props={"workerMaxThroughput(KB/s)": "256", "workerTaskThreadNum": "2"},
                         job_props={"taskObjectCountLimit": "4"})
    migration.ok("submit", str(migration.job_file))

    r = migration.console("stat")
    assert r.returncode == 3, r.stdout + r.stderr
    assert "JobState:Submitted" in r.stdout and "Next:'console.sh start' runs job local_test" in r.stdout
    job = only_job(stat_json(migration))
    assert (job["state"], job["objects"], job["eta_s"], job["totals"]["done_files"]) == ("Submitted", 0, None, 0)

    migration.ok("start")
    doc = wait_json(migration, lambda j: j["state"] == "Running" and j["scan_finished"]
                    and j["eta_s"] is not None and j["totals"]["done_files"] > 0)
    job = only_job(doc)
    assert doc["exit_code"] == 3 and doc["service_running"] is True
    assert (job["objects"], job["bytes"]) == (len(files), total)
    assert job["bytes_per_s"] > 0 and job["eta_s"] > 0
    assert job["totals"]["done_bytes"] == 64 * 1024 * job["totals"]["done_files"]
    words = checked_stat(migration.console("stat"))
    assert "JobState:Running" in words and "ETA:" in words

    # kill -9: nothing stops cleanly, yet stat says what happened and how to go on.
    os.kill(migration.service_pid(), signal.SIGKILL)
    doc = wait_json(migration, lambda j: j["state"] == "Abort", timeout=10)
    assert doc["exit_code"] == 1 and doc["service_running"] is False
    hint = only_job(doc)["hint"]
    assert hint == ("the service is not running (stopped, or killed); 'console.sh start' or 'bash import.sh' "
                    "resumes job local_test where it stopped")
    words = checked_stat(migration.console("stat"))
    assert f"Next:{hint}" in words.splitlines()

    migration.ok("start")
    doc = wait_json(migration, lambda j: j["state"] == "Succeed", timeout=90)
    job = only_job(doc)
    assert doc["exit_code"] == 0
    assert job["totals"]["succeed"] == len(files) and job["totals"]["done_bytes"] == total
    assert job["totals"]["failed"] == 0 and job["reasons"] == [] and job["hint"] == ""
    assert job["by_host"]["localhost"]["bytes"] == total
    assert job["succeed_tasks"] == job["by_host"]["localhost"]["done_tasks"] == len(files) // 4
    assert checked_stat(migration.console("stat", "local_test")).count("JobState:Succeed") == 1
    assert_migrated(migration.bucket, files)


def test_a_failed_job_exits_1_and_its_bytes_are_not_called_done(migration, tmp_path):
    write_tree(migration.src, {"here.txt": b"x" * 1000})
    manifest = tmp_path / "keys.txt"
    manifest.write_text("here.txt\ngone.txt\n")
    migration.write_conf(job_props={"srcType": "list", "listFilePath": str(manifest), "listSrcType": "local"})
    migration.ok("submit", str(migration.job_file))
    migration.ok("start")
    doc = wait_json(migration, lambda j: j["state"] in ("Succeed", "Failed"))
    job = only_job(doc)
    assert (job["state"], doc["exit_code"]) == ("Failed", 1)
    assert (job["totals"]["succeed"], job["totals"]["failed"]) == (1, 1)
    assert job["hint"].startswith("once the cause is fixed, 'console.sh retry local_test' runs the failed tasks")
    r = migration.console("stat")
    assert r.returncode == 1 and "JobState:Failed" in r.stdout
    [bytes_line] = [line for line in r.stdout.splitlines() if line.startswith("Bytes:")]
    done_pct = 100.0 * job["totals"]["done_bytes"] / job["bytes"]
    assert f"({done_pct:.1f}%) done" in bytes_line
    assert set(dest_objects(migration.bucket)) == {"here.txt"}


def test_counts_from_another_process_file_that_are_not_counts_are_left_out():
    # progress.json is the service's file, read by stat: a hand edit must not make stat crash.
    from ossimport_dist.status import Totals

    totals = Totals()
    totals.add({"succeed": "12", "failed": 2, "skipped": -1, "succeed_bytes": 3.5, "missing": None, "differ": True})
    assert (totals.succeed, totals.failed, totals.skipped, totals.succeed_bytes, totals.missing,
            totals.differ) == (0, 2, 0, 0, 0, 0)
