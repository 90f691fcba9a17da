"""Failures visible while a job runs (issue 9, bullet 5): every failed file reaches the log
(rate-limited, folded lines counted), ``stat`` groups failures by reason over finished and
running tasks, ``stat detail`` and ``console.sh errors`` list the running tasks' failures."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import jsonschema
import pytest

from conftest import ROOT, assert_migrated, checked_stat, dest_objects, wait_for, write_tree
from ossimport_dist.listformat import one_line, write_key
from test_distributed import cluster  # noqa: F401 - the fleet story's fixture

pytest_plugins = ["fleet"]  # the session-wide fleet of sshd hosts, for the fleet story only

# The keys of these stories have no spaces: a line's key ends at its first space.
FAILURE_LINE = re.compile(r"ERROR .*: job local_test task ([0-9a-f]+): failed (\S+): (.+)$")
FOLD_LINE = re.compile(r"job local_test: \.\.\. and (\d+) more failures? in the last (\d+) s \((.+)\); "
                       r"all of them: console\.sh errors local_test$")


def list_job(migration, tmp_path, present: dict, missing: list, task_size: int = 10, sys_props=None):
    """A srcType=list job naming ``present`` files and ``missing`` keys, spread over its tasks
    of ``task_size``, each task's missing keys first (they fail at once, the present ones take
    their time)."""
    write_tree(migration.src, present)
    keys, names = [], sorted(present)
    tasks = -(-(len(names) + len(missing)) // task_size)
    # each task takes a present file while any is left
    per_task = min(task_size - 1, -(-len(missing) // tasks))
    while names or missing:
        keys += missing[:per_task] + names[:task_size - per_task]
        missing, names = missing[per_task:], names[task_size - per_task:]
    manifest = tmp_path / "keys.txt"
    manifest.write_text("".join(k + "\n" for k in keys))
    migration.write_conf(sys_props=sys_props, job_props={"srcType": "list", "listSrcType": "local",
                                                         "listFilePath": str(manifest),
                                                         "taskObjectCountLimit": str(task_size)})
    migration.ok("submit", str(migration.job_file))
    migration.ok("start")


def stat_lines(migration, *args) -> dict:
    out = migration.stat_text(*args)
    assert "Traceback" not in out
    return dict(line.split(":", 1) for line in out.splitlines() if ":" in line)


def log_failures(migration) -> tuple:
    """(keys of the per-file failure lines, code -> failures folded) in logs/ossimport2.log."""
    text = (migration.work / "logs" / "ossimport2.log").read_text()
    assert "Traceback" not in text, text[-2000:]
    keys, folded = [], {}
    for line in text.splitlines():
        m = FAILURE_LINE.search(line)
        if m:
            keys.append(m.group(2))
            continue
        m = re.search(r"job local_test: \.\.\. .*", line)
        if m:
            fold = FOLD_LINE.fullmatch(m.group(0))
            assert fold, f"a fold line not as documented: {line}"
            by_code = dict(part.rsplit(" ", 1) for part in fold.group(3).split(", "))
            assert sum(int(n) for n in by_code.values()) == int(fold.group(1)), line
            for code, n in by_code.items():
                folded[code] = folded.get(code, 0) + int(n)
    return keys, folded


def errors_file(migration, path) -> tuple:
    r = migration.console("errors", "local_test", "-o", str(path))
    assert r.returncode == 0 and "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
    lines = path.read_text().splitlines()
    return [line.split("\t", 1)[0] for line in lines], lines, r.stderr.splitlines()


def test_failures_show_in_stat_detail_errors_and_log_while_the_job_runs(migration, tmp_path):
    present = {f"keep/{i:03d}.bin": os.urandom(2000 + i) for i in range(60)}
    missing = [f"gone/{i:03d}.txt" for i in range(30)]
    # Two tasks of 45, one after the other (the worker takes 32 files at a time): each fails its
    # 15 missing keys at once, then copies its 30 files at 15 KB/s for some 4 s.
    list_job(migration, tmp_path, present, list(missing), task_size=45,
             sys_props={"workerMaxThroughput(KB/s)": "15"})

    def running_with_failures():
        s = stat_lines(migration)
        by_reason = s.get("Failed by reason", "")
        return s if s["JobState"] == "Running" and by_reason.startswith(" SOURCE_NOT_EXIST ") else None

    s = wait_for(running_with_failures, "stat shows failures by reason while Running")
    n = int(s["Failed by reason"].split()[-1])
    assert 0 < n <= 30 and int(s["Files"].rsplit("failed ", 1)[1]) == n, s
    # stat detail: the running tasks' failures, with their keys and reasons, as error.list writes them
    detail = migration.stat_text("detail", "local_test").splitlines()
    running = [line for line in detail if re.match(r"Failed:[0-9a-f]+\(running\): ", line)]
    assert running, "\n".join(detail)
    for line in running:
        key, reason = line.split("(running): ", 1)[1].split("\t", 1)
        assert key in missing and reason.startswith("SOURCE_NOT_EXIST: "), line
    # errors -o: a manifest of what failed so far, and a word that some tasks still run
    keys, _, err = errors_file(migration, tmp_path / "so-far.list")
    assert keys and set(keys) <= set(missing) and len(keys) == len(set(keys)), keys
    assert err[0].startswith(f"{len(keys)} failed object(s) of job:local_test written to {tmp_path / 'so-far.list'}")
    assert any(re.match(r"\d+ of them from \d+ task\(s\) still running", line) for line in err), err
    logged, folded = log_failures(migration)
    assert logged and set(logged) <= set(missing)

    s = migration.wait_state()
    assert s["JobState"] == "Failed", s
    assert s["Failed by reason"] == " SOURCE_NOT_EXIST 30", s
    keys, lines, err = errors_file(migration, tmp_path / "all.list")
    assert sorted(keys) == sorted(missing)
    assert all(line.split("\t", 1)[1].startswith("SOURCE_NOT_EXIST: ") for line in lines)
    assert err[0].startswith("30 failed object(s) of job:local_test written to")
    assert not any("still running" in line for line in err), err
    logged, folded = wait_for(lambda: (lambda k, f: (k, f) if len(k) + sum(f.values()) == 30 else None)(
                                  *log_failures(migration)), "every failure logged or counted in a fold line",
                              timeout=15)
    assert len(logged) <= 20 and set(logged) <= set(missing) and len(set(logged)) == len(logged)
    assert set(folded) <= {"SOURCE_NOT_EXIST"}
    assert_migrated(migration.bucket, present)


def test_a_flood_of_failures_is_rate_limited_in_the_log_and_every_one_is_counted(migration, tmp_path):
    present = {f"ok/{i}.txt": b"ok %d" % i for i in range(5)}
    missing = [f"absent/{i:04d}.dat" for i in range(300)]
    list_job(migration, tmp_path, present, list(missing), task_size=50)
    s = migration.wait_state()
    assert s["JobState"] == "Failed" and s["Failed by reason"] == " SOURCE_NOT_EXIST 300", s
    def every_failure_in_the_log():
        # Each window's fold line comes when the window closes: slow runs have more than one.
        keys, folded = log_failures(migration)
        return (keys, folded) if folded and len(keys) + folded.get("SOURCE_NOT_EXIST", 0) >= 300 else None

    logged, folded = wait_for(every_failure_in_the_log, "the fold line after the last failure", timeout=30)
    windows = sum(1 for line in (migration.work / "logs" / "ossimport2.log").read_text().splitlines()
                  if FOLD_LINE.search(line))
    assert len(logged) <= 20 * windows, f"{len(logged)} lines for {windows} window(s)"
    assert len(logged) + folded["SOURCE_NOT_EXIST"] == 300, (len(logged), folded)
    assert set(logged) <= set(missing) and len(set(logged)) == len(logged)
    assert_migrated(migration.bucket, present)


def test_a_destination_that_answers_500_every_time_is_counted_as_internal_error(migration, emulator):
    # A name with a line break: its failure stays on one line of the log.
    files = {"a.txt": b"alpha", "b/c.txt": b"charlie", "new\nline.bin": os.urandom(500)}
    write_tree(migration.src, files)
    emulator.set_faults("500:1.0:PutObject")
    migration.write_conf()
    migration.ok("submit", str(migration.job_file))
    migration.ok("start")
    s = migration.wait_state(timeout=90)
    assert s["JobState"] == "Failed" and s["Failed by reason"] == " InternalError 3", s
    r = migration.console("stat", "--json", "local_test")
    doc = json.loads(r.stdout)
    jsonschema.validate(doc, json.loads((ROOT / "docs" / "stat.schema.json").read_text()))
    [job] = doc["jobs"]
    assert r.returncode == 1 and job["failed_by_reason"] == {"InternalError": 3}, job
    assert dest_objects(migration.bucket) == {}
    logged, _ = log_failures(migration)
    assert sorted(logged) == sorted(write_key(k) for k in files)
    log = (migration.work / "logs" / "ossimport2.log").read_text()
    assert all(re.match(r"\d{4}-\d\d-\d\d ", line) for line in log.splitlines()), "a log line was broken"
    for k in files:
        assert f"failed {write_key(k)}: PUT {one_line(k)}: HTTP 500 InternalError" in log, log[-3000:]


def test_counts_of_an_old_format_still_read_and_a_damaged_reasons_field_is_recounted(migration, tmp_path):
    present = {"here.txt": b"here"}
    missing = ["not/1", "not/2"]
    list_job(migration, tmp_path, present, list(missing))
    s = migration.wait_state()
    assert s["Failed by reason"] == " SOURCE_NOT_EXIST 2", s
    migration.ok("stop")
    [task] = migration.task_dirs("failed_tasks")
    counts_file = task / "COUNTS"
    counts = json.loads(counts_file.read_text())
    assert counts["reasons"] == {"SOURCE_NOT_EXIST": 2} and counts["failed"] == 2
    # Written by the version before reason codes: no 'reasons' at all. Read as it is.
    old = {k: v for k, v in counts.items() if k != "reasons"}
    counts_file.write_text(json.dumps(old))
    s = stat_lines(migration)
    assert (s["JobState"], s["Failed by reason"]) == ("Failed", " SOURCE_NOT_EXIST 2"), s
    assert json.loads(counts_file.read_text()) == old, "an old COUNTS is not damaged: left as it is"
    assert not (migration.job_dir / "damaged.list").exists()
    # Damaged: reasons that do not add up to the failed count, or are no counts at all.
    for damaged in ({**counts, "reasons": {"SignatureDoesNotMatch": 999}},
                    {**counts, "reasons": ["SOURCE_NOT_EXIST"]},
                    {**counts, "reasons": {"SOURCE_NOT_EXIST": -2}}):
        counts_file.write_text(json.dumps(damaged))
        out = checked_stat(migration.console("stat"))
        assert "Failed by reason: SOURCE_NOT_EXIST 2\n" in out and "Traceback" not in out, out
        assert json.loads(counts_file.read_text()) == counts, "recounted from audit.log"
        damage = (migration.job_dir / "damaged.list").read_text()
        assert "reasons" in damage.splitlines()[-1] and "recounted from audit.log" in damage, damage
    assert_migrated(migration.bucket, present)


# -- distributed: the running tasks are on the hosts ------------------------------------------
@pytest.mark.xdist_group("fleet")
def test_running_failures_on_two_hosts_show_in_stat_and_errors(cluster, fleet, emulator, tmp_path):
    c = cluster(hosts=fleet.hosts[:2])
    present = {f"keep/{i:03d}.bin": os.urandom(2000 + i) for i in range(60)}
    missing = [f"gone/{i:03d}.txt" for i in range(20)]
    c.put_files(present)
    # Four tasks of 20 (5 missing keys first, then 15 files): a host takes one at a time (16
    # files of room), and its 4 threads copy the 15 files in some 6 s (each PUT answers in 1.5 s).
    keys, names, gone = [], sorted(present), list(missing)
    while names:
        keys += gone[:5] + names[:15]
        gone, names = gone[5:], names[15:]
    manifest = tmp_path / "keys.txt"
    manifest.write_text("".join(k + "\n" for k in keys))
    emulator.set_faults("slow:1.0@1.5:PutObject")
    c.write_job(srcType="list", listSrcType="local", listFilePath=str(manifest), taskObjectCountLimit="20")
    c.ok("submit", str(c.job_file))
    c.ok("start")
    host_names = {h.name for h in fleet.hosts[:2]}
    seen = []

    def running_on_both_hosts():
        r = c.console("stat", "detail", c.job_name)
        out = checked_stat(r, ("detail",))
        seen[:] = [out]
        rows = re.findall(r"^Failed:[0-9a-f]+@(\S+)\(running\): SOURCE_NOT_EXIST (\d+); the keys: "
                          rf"'console.sh errors {c.job_name}'$", out, re.M)
        by_reason = re.search(r"^Failed by reason: SOURCE_NOT_EXIST (\d+)$", out, re.M)
        return out if "JobState:Running" in out and by_reason and {h for h, _ in rows} == host_names else None

    try:
        out = wait_for(running_on_both_hosts, "failures of running tasks on both hosts in stat detail", timeout=90)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; stat detail said:\n{seen[0] if seen else ''}") from None
    assert "Traceback" not in out
    r = c.console("errors", c.job_name, "-o", str(tmp_path / "so-far.list"))
    assert r.returncode == 0 and "Traceback" not in r.stdout + r.stderr, r.stderr
    so_far = [line.split("\t", 1)[0] for line in (tmp_path / "so-far.list").read_text().splitlines()]
    assert so_far and set(so_far) <= set(missing) and len(so_far) == len(set(so_far)), so_far
    err = r.stderr.splitlines()
    assert err[0].startswith(f"{len(so_far)} failed object(s) of job:{c.job_name} written to"), err
    assert any(re.match(r"\d+ of them from \d+ task\(s\) still running", line) for line in err), err

    s = c.wait_state(timeout=120)
    assert s["JobState"] == "Failed" and s["Failed by reason"] == " SOURCE_NOT_EXIST 20", s
    r = c.console("errors", c.job_name, "-o", str(tmp_path / "all.list"))
    assert r.returncode == 0, r.stderr
    assert sorted(line.split("\t", 1)[0] for line in (tmp_path / "all.list").read_text().splitlines()) == missing
    master_log = (Path(fleet.working_dir) / "logs" / "master.log").read_text()
    logged = set(re.findall(rf"job {c.job_name} task [0-9a-f]+: failed (\S+): SOURCE_NOT_EXIST: ", master_log))
    assert logged == set(missing), sorted(set(missing) - logged)
    for host in fleet.hosts[:2]:
        worker_log = (Path(fleet.host_dir(host)) / "logs" / "worker.log").read_text()
        assert re.search(rf"job {c.job_name} task [0-9a-f]+: failed gone/\d+\.txt: SOURCE_NOT_EXIST: ", worker_log)
    assert_migrated(c.bucket, present)
