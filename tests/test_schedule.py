"""The bandwidth timetable (workerMaxThroughputSchedule): the cap by time of day, read with a
clock the test sets, then a job whose worker slows and speeds up at the slots' edges."""

from __future__ import annotations

import json
import os
import time

import pytest

from conftest import assert_migrated, wait_for, write_tree
from ossimport_dist.schedule import ScheduleError, Timetable, describe


def at(hh: int, mm: int, ss: int = 0) -> float:
    """Today's hh:mm:ss, local time, as the epoch seconds a clock would give."""
    t = time.localtime()
    return time.mktime((t.tm_year, t.tm_mon, t.tm_mday, hh, mm, ss, 0, 0, -1))


def test_each_slot_holds_from_its_time_to_the_next_and_the_last_wraps_to_the_morning():
    table = Timetable.parse("08:00,10240  19:00,off 12:30:15,512")
    assert [s.clock for s in table.slots] == ["08:00", "12:30:15", "19:00"]
    assert table.bytes_per_s(at(7, 59, 59)) == 0  # still the evening's 'off'
    assert table.bytes_per_s(at(8, 0)) == 10240 * 1024
    assert table.bytes_per_s(at(12, 30, 14)) == 10240 * 1024
    assert table.bytes_per_s(at(12, 30, 15)) == 512 * 1024
    assert table.bytes_per_s(at(23, 59, 59)) == 0
    current, following, wait = table.slot_at(at(18, 59, 50))
    assert (current.kbs, following.clock, wait) == (512, "19:00", 10)
    assert table.slot_at(at(20, 0))[2] == 12 * 3600  # to 08:00 tomorrow
    assert describe(table, at(9, 0)) == "10240 KB/s now (since 08:00), 512 KB/s from 12:30:15 (workerMaxThroughputSchedule)"
    assert describe(Timetable.parse("00:00,64"), at(9, 0)) == "64 KB/s all day (workerMaxThroughputSchedule)"
    assert Timetable.parse("  ") is None


@pytest.mark.parametrize("text, words", [
    ("8,100", "'8,100' is not a slot"), ("08:00,fast", "not a slot"), ("24:00,1", "not a time of day"),
    ("08:00,1 08:00,off", "two slots start at 08:00"), ("08:61,1", "not a time of day"),
])
def test_a_timetable_that_does_not_read_is_refused_naming_the_slot(text, words):
    with pytest.raises(ScheduleError, match=words):
        Timetable.parse(text)


def clock_in(seconds: float) -> str:
    t = time.localtime(time.time() + seconds)
    return f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"


def test_a_slot_edge_changes_the_rate_of_a_running_job_within_seconds(migration):
    files = {f"v/{i:02d}.bin": os.urandom(128 * 1024) for i in range(24)}  # 3 MiB
    write_tree(migration.src, files)
    # 64 KB/s from a second ago, no cap from 8 s on: the job crawls, then runs.
    edge = time.time() + 8
    schedule = f"{clock_in(-1)},64 {clock_in(8)},off"
    migration.write_conf(sys_props={"workerMaxThroughputSchedule": schedule})
    migration.ok("submit", str(migration.job_file))
    began = time.monotonic()
    migration.ok("start")
    log = migration.work / "logs" / "ossimport2.log"
    wait_for(lambda: log.is_file() and "throughput cap 64 KB/s)" in log.read_text(), "the slot applied", 20)
    shown = migration.console("stat").stdout
    assert "Throughput schedule: 64 KB/s now (since" in shown and f"off from {schedule.split()[1][:-4]}" in shown
    doc = json.loads(migration.console("stat", "--json").stdout)
    assert doc["throughput_schedule"]["now_kbs"] == 64 and doc["throughput_schedule"]["next_kbs"] == 0
    while time.time() < edge - 1:
        time.sleep(0.2)
    done = json.loads(migration.console("stat", "--json").stdout)["jobs"][0]["totals"]["succeed_bytes"]
    # Before the edge: no more than the slot's rate allows, plus a burst and the files under way.
    assert done <= 64 * 1024 * (time.monotonic() - began) + 8 * 128 * 1024, done
    assert done < sum(map(len, files.values())) // 2
    # After it: the cap is lifted within seconds, and the rest goes at once.
    state = migration.wait_state(timeout=edge - time.time() + 20)
    assert state["JobState"] == "Succeed"
    assert time.time() < edge + 15
    assert "throughput cap now none (workerMaxThroughputSchedule)" in log.read_text()
    assert_migrated(migration.bucket, files)
