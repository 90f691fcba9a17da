"""State files that heal: a damaged TASK, checkpoint or COUNTS is named (log and stat), moved
aside as <name>.corrupt, and rebuilt when that can be done exactly, else its task fails with
what to do. The service keeps running, and nothing is copied twice or dropped silently."""

from __future__ import annotations

import json
import re

import psutil
import pytest

from conftest import assert_migrated, checked_stat, dest_objects, task_keys, wait_for, write_tree


def files_of(n: int, size: int = 2048) -> dict:
    return {f"dir{i % 3}/file{i:03d}.bin": bytes([i % 251]) * size for i in range(n)}


def stat_lines(migration, *args) -> list:
    r = migration.console("stat", *args)
    assert "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
    return checked_stat(r, args).splitlines()


def lines_of(migration, label: str) -> list:
    return [line[len(label) + 1:] for line in stat_lines(migration) if line.startswith(label + ":")]


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


HELD = 64 * 1024  # bytes per file: past the throttle's burst, so a held transfer really waits


def scan_with_transfers_held(migration, files: dict, **job_props) -> None:
    """Submit and scan the whole job while the transfer crawls at 1 KB/s, then stop: every task
    but the one dispatched first is still pending."""
    write_tree(migration.src, files)
    migration.write_conf(sys_props={"workerTaskThreadNum": "1", "workerMaxThroughput(KB/s)": "1"},
                         job_props=job_props)
    migration.ok("submit", str(migration.job_file))
    migration.ok("start")
    wait_for(lambda: migration.stat()["Is Scan Finished"] == "true", "the scan to finish")
    # Killed, not stopped: a stop waits for the transfer threads the throttle holds.
    service = psutil.Process(migration.service_pid())
    service.kill()
    service.wait(10)
    migration.write_conf(job_props=job_props)


def damage_truncated_mid_line(data: bytes) -> bytes:
    return data[:len(data) // 2 + 7]


def damage_last_line_lost(data: bytes) -> bytes:
    return b"".join(data.splitlines(keepends=True)[:-1])


def damage_garbage(data: bytes) -> bytes:
    return b"\xff\xfe\x00garbage\x9c" * 40


def damage_empty(data: bytes) -> bytes:
    return b""


@pytest.mark.parametrize("damage, problem", [
    (damage_truncated_mid_line, "not valid JSON ("),
    (damage_last_line_lost, f"truncated: its header names 10 object(s) of {10 * HELD} bytes, it holds 9 of {9 * HELD}"),
    (damage_garbage, "not ASCII text (the file is garbage)"),
    (damage_empty, "empty"),
])
def test_damaged_pending_task_fails_alone_and_the_service_runs_the_rest(migration, damage, problem):
    files = files_of(40, HELD)
    scan_with_transfers_held(migration, files)
    pending = migration.task_dirs("pending_tasks")
    assert len(pending) >= 2
    victim = pending[-1]
    lost = task_keys(victim / "TASK")
    original = (victim / "TASK").read_bytes()
    (victim / "TASK").write_bytes(damage(original))

    migration.ok("start")
    pid = migration.service_pid()
    s = migration.wait_state(timeout=60)
    assert s["JobState"] == "Failed" and s["Failed Task Count"] == "1", s
    assert alive(pid), "one damaged TASK must not stop the service"

    task_id = victim.name
    (failed,) = migration.task_dirs("failed_tasks")
    assert failed.name.startswith(task_id + "_")
    assert (failed / "TASK.corrupt").read_bytes() == damage(original)
    assert not (failed / "TASK").exists()
    (reason,) = lines_of(migration, "Reason")
    assert reason.startswith(f"DAMAGED_TASK: the TASK file of task {task_id} is {problem}"), reason
    assert reason.endswith(" and no intact copy is left; its files are unknown, so this task copied none: "
                           "run 'console.sh clean local_test' and submit the job again with "
                           "isSkipExistFile=true (it copies only what is missing)"), reason
    (damaged,) = lines_of(migration, "Damaged")
    worker_copy = migration.work / "worker" / "jobs" / "local_test" / "tasks" / task_id / "TASK"
    assert damaged.startswith(f"{worker_copy}: {problem}") and damaged.endswith(
        f"; moved aside to TASK.corrupt; task {task_id} failed"), damaged
    log = (migration.work / "logs" / "ossimport2.log").read_text()
    assert log.count(f"task {task_id}: TASK {worker_copy} is {problem}") == 1 and "Traceback" not in log
    # Every other file arrived; the damaged task's files did not (and stat says which task).
    assert_migrated(migration.bucket, {k: v for k, v in files.items() if k not in lost})
    assert not set(lost) & set(dest_objects(migration.bucket))
    # The lost files stay in the total (it comes from the checkpoints): the job never looks complete.
    files_line = lines_of(migration, "Files")[0]
    assert files_line.startswith(f"{len(files) - len(lost)}/{len(files)} done"), files_line
    # 'retry' from cron stays harmless: the damaged task cannot run again, it is not moved.
    r = migration.console("retry", "local_test")
    assert r.returncode == 0 and "Traceback" not in r.stdout + r.stderr
    assert r.stdout.strip() == ("retry job:local_test: 1 failed task(s) whose TASK file was damaged cannot run "
                                "again; 'console.sh stat local_test' says what to do")
    assert migration.task_dirs("failed_tasks") == [failed]


def test_damaged_worker_copy_of_a_dispatched_task_is_rebuilt_from_the_tree(migration):
    files = files_of(30, HELD)
    scan_with_transfers_held(migration, files)
    (dispatched,) = migration.task_dirs("dispatched/localhost")
    worker_copy = migration.work / "worker" / "jobs" / "local_test" / "tasks" / dispatched.name / "TASK"
    worker_copy.write_bytes(b'{"taskId":')

    migration.ok("start")
    s = migration.wait_state(timeout=60)
    assert s["JobState"] == "Succeed", s
    assert_migrated(migration.bucket, files)
    (damaged,) = lines_of(migration, "Damaged")
    assert damaged.startswith(f"{worker_copy}: not valid JSON (") and damaged.endswith(
        f"; moved aside to TASK.corrupt; rebuilt from {dispatched / 'TASK'}"), damaged
    (done,) = [t for t in migration.task_dirs("succeed_tasks") if t.name.startswith(dispatched.name + "_")]
    assert (done / "TASK.corrupt").read_bytes() == b'{"taskId":'
    keys = [k for t in migration.task_dirs("succeed_tasks") for k in task_keys(t / "TASK")]
    assert sorted(keys) == sorted(files)


def run_to_success(migration, files: dict, **job_props) -> dict:
    write_tree(migration.src, files)
    migration.write_conf(job_props=job_props)
    migration.ok("submit", str(migration.job_file))
    migration.ok("start")
    s = migration.wait_state(timeout=60)
    assert s["JobState"] == "Succeed", s
    return s


@pytest.mark.parametrize("content, problem", [
    (b"\x00\x01garbage\xff", "not UTF-8 text"),
    (b"", "empty"),
    (b'{"unit": "R:dir1/", "tasks": 2', "not valid JSON"),
    (b"[1, 2, 3]", "JSON of the wrong shape (not a scan checkpoint)"),
    (b'{"unit": "R:dir1/", "tasks": -4, "last_key": null, "objects": 0, "bytes": 0, "done": true}',
     "JSON of the wrong shape (a field has a value no scan writes)"),
    ("other unit", "holds the checkpoint of unit"),
])
def test_damaged_checkpoint_is_rebuilt_from_its_tasks_without_new_tasks(migration, content, problem):
    files = files_of(45, size=100)
    before = run_to_success(migration, files, scanThreadCount="2", taskObjectCountLimit="4")
    migration.ok("stop")
    cpts = sorted((migration.job_dir / "checkpoints" / "0").glob("*.cpt"))
    docs = {p: json.loads(p.read_text()) for p in cpts}
    victim = next(p for p in cpts if docs[p]["tasks"] >= 2)
    other = next(p for p in cpts if p != victim)
    tasks_before = [t.name for t in migration.task_dirs("succeed_tasks")]
    victim.write_bytes(other.read_bytes() if content == "other unit" else content)

    migration.ok("start")
    pid = migration.service_pid()
    wait_for(lambda: lines_of(migration, "Damaged"), "the damaged checkpoint to be named")
    (damaged,) = lines_of(migration, "Damaged")
    assert damaged.startswith(f"{victim}: {problem}") and damaged.endswith(
        f"; moved aside to {victim.name}.corrupt; unit '{docs[victim]['unit']}' scanned again from its start"), damaged
    s = migration.wait_state(timeout=30)
    assert s["JobState"] == "Succeed" and s["Files"] == before["Files"], s
    assert alive(pid)
    # Rebuilt exactly from the unit's tasks, found again by their ids: no task was cut twice.
    assert json.loads(victim.read_text()) == docs[victim]
    assert (victim.parent / (victim.name + ".corrupt")).exists()
    assert [t.name for t in migration.task_dirs("succeed_tasks")] == tasks_before
    assert migration.task_dirs("pending_tasks") == []
    keys = [k for t in migration.task_dirs("succeed_tasks") for k in task_keys(t / "TASK")]
    assert sorted(keys) == sorted(files)
    log = (migration.work / "logs" / "ossimport2.log").read_text()
    assert log.count(f"damaged checkpoint {victim}: {problem}") == 1 and "Traceback" not in log


@pytest.mark.parametrize("content, problem", [
    (b"", "empty"),
    (b'{"files": 4, "succeed": -4}', "'succeed' is -4, not a count"),
    (b'{"files": "four"}', "'files' is 'four', not a count"),
    (b"\xff\xfe\x00", "not UTF-8 text"),
    (b'{"files": 4, "succeed"', "not valid JSON"),
    (b"[4]", "JSON of the wrong shape (a list, not an object)"),
])
def test_damaged_counts_are_recounted_from_the_audit_log(migration, content, problem):
    files = files_of(12, size=300)
    before = run_to_success(migration, files, taskObjectCountLimit="5")
    task = migration.task_dirs("succeed_tasks")[0]
    original = json.loads((task / "COUNTS").read_text())
    (task / "COUNTS").write_bytes(content)

    s = migration.stat()
    assert s["Files"] == before["Files"] and s["Bytes"] == before["Bytes"], s
    assert s["JobState"] == "Succeed"
    assert lines_of(migration, "Damaged") == [f"{task / 'COUNTS'}: {problem}; moved aside to COUNTS.corrupt; "
                                              f"recounted from audit.log"]
    assert (task / "COUNTS.corrupt").read_bytes() == content
    rebuilt = json.loads((task / "COUNTS").read_text())
    assert rebuilt == original
    # Healed once: the next stat reads the rebuilt file and names nothing new.
    assert len(lines_of(migration, "Damaged")) == 1


def test_missing_counts_is_recounted_too(migration):
    files = files_of(6, size=10)
    before = run_to_success(migration, files, taskObjectCountLimit="3")
    task = migration.task_dirs("succeed_tasks")[-1]
    (task / "COUNTS").unlink()
    s = migration.stat()
    assert s["Files"] == before["Files"], s
    assert lines_of(migration, "Damaged") == [f"{task / 'COUNTS'}: missing; recounted from audit.log"]


def test_damaged_round_file_of_an_incremental_job_is_rebuilt_not_reset_to_round_zero(migration, monkeypatch):
    monkeypatch.setenv("OSSIMPORT_TEST_MIN_INTERVAL", "1")
    files = {"a.txt": b"a", "b/c.txt": b"c"}
    write_tree(migration.src, files)
    migration.write_conf(job_props={"isIncremental": "true", "incrementalModeInterval": "1"})
    migration.ok("submit", str(migration.job_file))
    migration.ok("start")
    wait_for(lambda: migration.stat().get("Incremental", "").startswith("round 1,")
             and migration.stat()["JobState"] == "Succeed", "round 1 to finish")
    migration.ok("stop")
    round_file = migration.job_dir / "ROUND"
    # A one-second interval may have started round 2 before the stop: the newest folder says.
    newest = json.loads(round_file.read_text())["round"]
    round_file.write_bytes(b'{"round": ')

    (migration.src / "new.txt").write_bytes(b"new")
    files["new.txt"] = b"new"
    migration.ok("start")
    (damaged,) = lines_of(migration, "Damaged")
    assert damaged == (f"{round_file}: not valid JSON; moved aside to ROUND.corrupt; round {newest} taken from the "
                       f"newest round folder, next rescan scheduled anew")
    assert (migration.job_dir / "ROUND.corrupt").read_bytes() == b'{"round": '
    # The next round copies the new file; round 0's full pass is not run again. With a
    # one-second interval a slow stat may see a later round already: any round past the newest.
    def a_later_round_done():
        s = migration.stat()
        now = re.match(r"round (\d+),", s.get("Incremental", ""))
        return now is not None and int(now.group(1)) > newest and s["JobState"] == "Succeed"

    wait_for(a_later_round_done, "the next round to finish")
    assert_migrated(migration.bucket, files)
    keys = [k for t in migration.task_dirs("succeed_tasks") for k in task_keys(t / "TASK")]
    assert sorted(keys) == sorted(files)
    assert len(lines_of(migration, "Damaged")) == 1
