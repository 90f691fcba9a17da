"""The request-rate cap: workerMaxQps and a job's jobMaxQps bound the files a worker starts per
second (object stores throttle requests as well as bytes); the tightest holds, 'set' moves it
while the job runs, and a fleet's hosts each get their share."""

from __future__ import annotations

import json
import os
import time

from conftest import assert_migrated, wait_for, write_tree


def file_starts(job_dir) -> list:
    """When each file's copy began (wall clock), from the task folders' objects.jsonl."""
    starts = []
    for records in job_dir.glob("*_tasks/*/objects.jsonl"):
        for line in records.read_text().splitlines():
            rec = json.loads(line)
            if "t" in rec and "z" in rec:
                starts.append(rec["t"] - rec["z"])
    return sorted(starts)


def most_in_a_second(starts: list) -> int:
    return max((sum(1 for t in starts if s <= t < s + 1.0) for s in starts), default=0)


def test_the_tightest_request_cap_holds_and_set_lifts_it_while_the_job_runs(migration):
    files = {f"q/{i:03d}.txt": os.urandom(500 + i) for i in range(40)}
    write_tree(migration.src, files)
    migration.write_conf(sys_props={"workerMaxQps": "20"}, job_props={"jobMaxQps": "3"})
    migration.ok("submit", str(migration.job_file))
    migration.ok("start")
    log = migration.work / "logs" / "ossimport2.log"
    wait_for(lambda: log.is_file() and "file starts now at most 3 per second (jobMaxQps)" in log.read_text(),
             "the job's request cap applied", 20)
    time.sleep(4)
    lifted_at = time.time()
    assert "takes effect within seconds" in migration.ok("set", "jobMaxQps=0", "local_test")
    assert migration.wait_state(timeout=60)["JobState"] == "Succeed"
    assert "file starts now at most 20 per second (workerMaxQps)" in log.read_text()
    assert_migrated(migration.bucket, files)

    starts = file_starts(migration.job_dir)
    assert len(starts) == len(files)
    capped = [t for t in starts if t < lifted_at]
    # A bucket of one start: 3 a second, and a fourth only at the edge of a window.
    assert 3 <= len(capped) < len(files) and most_in_a_second(capped) <= 4, capped
    assert (capped[-1] - capped[0]) >= (len(capped) - 2) / 3  # no burst beyond the rate
    # After the lift: the worker's own 20 a second, and its bucket of a quarter second's (5).
    assert most_in_a_second([t for t in starts if t >= lifted_at]) <= 20 + 5 + 1


def test_plan_prices_a_job_at_its_request_cap(migration):
    write_tree(migration.src, {f"p/{i}.txt": b"x" for i in range(30)})
    migration.write_conf(sys_props={"workerMaxQps": "10"}, job_props={"jobMaxQps": "5"})
    plan = json.loads(migration.ok("plan", "--json"))
    assert plan["time"]["files_cap_per_s"] == 5 and plan["time"]["seconds_at_cap"] == 6.0
    assert "00:00:06 at the request cap (jobMaxQps=5: 5 files/s)" in migration.ok("plan")
