"""A job file edited after its submit is never resumed silently (issue 9, first slice).

The story an operator lived: a finished job, then srcPrefix edited in conf/local_job.cfg, then
``bash import.sh`` from a script: it resumed the old frozen job and said the job succeeded,
while the new folder was never copied.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

from conftest import ROOT, assert_migrated, dest_objects, wait_for, write_tree


def import_sh(migration, *args) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "import.sh"), "--sys", str(migration.sys_file), "--interval", "0.3",
                           *args, str(migration.job_file)],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)


def finished_job_then_edited(migration, tmp_path) -> tuple:
    old = {"old/a.txt": b"first folder"}
    write_tree(migration.src, old)
    migration.write_conf()
    r = import_sh(migration, "--yes")
    assert r.returncode == 0 and "JobState:Succeed" in r.stdout, r.stdout + r.stderr
    new_src = tmp_path / "second"
    new = {"new/b.txt": b"second folder", "new/c.txt": b"more"}
    write_tree(new_src, new)
    migration.write_conf(job_props={"srcPrefix": f"{new_src}/", "destSecretKey": migration.secret + "x"})
    return old, new, new_src


def test_import_without_a_terminal_refuses_an_edited_job_then_restart_copies_the_new_folder(migration, tmp_path):
    old, new, new_src = finished_job_then_edited(migration, tmp_path)
    r = import_sh(migration)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr and "succeeded" not in r.stdout
    changes = (f"destSecretKey ***changed***, srcPrefix '{migration.src}/' -> '{new_src}/'")
    assert f"{migration.job_file.resolve()} has changed since job local_test was submitted: {changes}" in r.stdout
    assert r.stderr.strip().splitlines() == [
        f"error: job local_test was submitted from {migration.job_file.resolve()}, which has changed since; "
        f"resuming would run the job as submitted: 'bash import.sh --restart' cleans it and submits the file "
        f"again, 'bash import.sh --resume' runs it as submitted"]
    assert migration.secret not in r.stdout + r.stderr
    assert dest_objects(migration.bucket).keys() == old.keys()  # nothing ran

    # The wrong secret of the edit: --restart submits the file as it is now, and says so.
    migration.write_conf(job_props={"srcPrefix": f"{new_src}/"})
    r = import_sh(migration, "--restart")
    assert r.returncode == 0 and "JobState:Succeed" in r.stdout, r.stdout + r.stderr
    assert "clean job:local_test success!" in r.stdout and "submit job:local_test success!" in r.stdout
    assert_migrated(migration.bucket, {**old, **new})


def test_resume_runs_the_edited_job_as_submitted_and_says_so(migration, tmp_path):
    old, new, _ = finished_job_then_edited(migration, tmp_path)
    r = import_sh(migration, "--resume")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "has changed since job local_test was submitted" in r.stdout
    assert "resuming job:local_test as submitted" in r.stdout and "JobState:Succeed" in r.stdout
    assert dest_objects(migration.bucket).keys() == old.keys()
    # --yes answers "clean it and start over?": the edited file would be submitted, but its
    # wrong secret fails the check before copying, and the old job is left as it was.
    r = import_sh(migration, "--yes", "--max-retries", "0")
    assert "has changed since job local_test was submitted" in r.stdout
    assert r.returncode == 2 and "clean job" not in r.stdout, r.stdout + r.stderr
    [line] = r.stderr.strip().splitlines()
    assert line.startswith(f"error: preflight: destBucket '{migration.bucket.bucket_name}' at ") and \
        "fix destSecretKey" in line and migration.secret not in line, line
    assert "Traceback" not in r.stdout + r.stderr
    assert migration.job_dir.is_dir() and migration.task_dirs("succeed_tasks")
    assert dest_objects(migration.bucket).keys() == old.keys()


def test_start_and_retry_refuse_an_edited_job_until_told(migration, tmp_path):
    finished_job_then_edited(migration, tmp_path)
    migration.ok("stop")
    for command in (("start",), ("retry", "local_test")):
        r = migration.console(*command)
        assert r.returncode == 2 and "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
        [line] = r.stderr.strip().splitlines()
        assert line.startswith(f"error: job local_test was submitted from {migration.job_file.resolve()}, which "
                               f"has changed since (destSecretKey ***changed***, srcPrefix "), line
        assert migration.secret not in line
    assert migration.service_pid() == 0
    assert "service started" in migration.ok("start", "--resume")
    assert "nothing to retry: job local_test has no failed task" in migration.ok("retry", "--resume", "local_test")


def test_set_is_not_an_edit_of_the_job_file(migration):
    write_tree(migration.src, {"a.txt": b"a"})
    migration.write_conf()
    migration.ok("submit", str(migration.job_file))
    migration.ok("set", "jobMaxThroughput(KB/s)=4096", "local_test")
    frozen = (migration.job_dir / "job.cfg").read_text()
    assert frozen.startswith(f"#submitted from {migration.job_file.resolve()}; settings sha256:")
    assert "#changed by console.sh set" in frozen and "jobMaxThroughput(KB/s)=4096" in frozen
    assert "service started" in migration.ok("start")
    assert migration.wait_state(timeout=60)["JobState"] == "Succeed"


def test_job_max_throughput_caps_a_standalone_job_and_set_lifts_it_while_it_runs(migration):
    """jobMaxThroughput(KB/s) holds in standalone mode too, and 'set' changes it live, as it says."""
    files = {f"big/{i:02d}.bin": os.urandom(256 * 1024) for i in range(16)}  # 4 MiB
    write_tree(migration.src, files)
    migration.write_conf(job_props={"jobMaxThroughput(KB/s)": "128"})
    migration.ok("submit", str(migration.job_file))
    began = time.monotonic()
    migration.ok("start")
    log = migration.work / "logs" / "ossimport2.log"
    wait_for(lambda: log.is_file() and "throughput cap now 128 KB/s (jobMaxThroughput(KB/s))" in log.read_text(),
             "the job's cap applied", 30)
    time.sleep(3)
    done = json.loads(migration.console("stat", "--json").stdout)["jobs"][0]["totals"]["succeed_bytes"]
    # At most the cap over the time it ran, plus a burst and the files that were under way.
    assert done <= 128 * 1024 * (time.monotonic() - began) + 8 * 256 * 1024, done
    assert done < sum(map(len, files.values()))
    out = migration.ok("set", "jobMaxThroughput(KB/s)=0", "local_test")
    assert "takes effect within seconds" in out
    assert migration.wait_state(timeout=60)["JobState"] == "Succeed"
    assert "throughput cap now 100000000 KB/s (workerMaxThroughput(KB/s))" in log.read_text()
    assert_migrated(migration.bucket, files)


def run_on_a_terminal(args: list, answers: dict, timeout: float = 120) -> tuple:
    """Run ``args`` with a pseudo-terminal as its stdin and stdout, as an operator at a shell
    does; each question (a line ending in '(y/n) ') found in ``answers`` gets its reply.
    Returns (exit code, everything the terminal showed)."""
    import os
    import pty
    import select
    import time

    leader, follower = pty.openpty()
    proc = subprocess.Popen(args, stdin=follower, stdout=follower, stderr=follower, close_fds=True)
    os.close(follower)
    shown, answered = b"", set()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # the terminal closed: the program ended
                    break
                if not chunk:
                    break
                shown += chunk
            text = shown.decode("utf-8", "replace")
            for question, reply in answers.items():
                if question not in answered and question in text:
                    answered.add(question)
                    os.write(leader, reply.encode() + b"\n")
            if proc.poll() is not None and not ready:
                break
        else:
            raise AssertionError(f"{args} did not end within {timeout} s: {shown!r}")
        return proc.wait(10), shown.decode("utf-8", "replace").replace("\r\n", "\n")
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(leader)


def test_on_a_terminal_the_changed_keys_are_shown_and_the_operator_chooses(migration, tmp_path):
    old, new, new_src = finished_job_then_edited(migration, tmp_path)
    migration.write_conf(job_props={"srcPrefix": f"{new_src}/"})
    command = ["bash", str(ROOT / "import.sh"), "--sys", str(migration.sys_file), "--interval", "0.3",
               str(migration.job_file)]
    question = "Clean the job and submit the edited file (y), or resume it as submitted (n)? (y/n)"
    # 'n': resumed as submitted (the old folder, already done), and said so.
    code, shown = run_on_a_terminal(command, {question: "n", "Stop the service?": "y"})
    assert code == 0, shown
    assert (f"{migration.job_file.resolve()} has changed since job local_test was submitted: "
            f"srcPrefix '{migration.src}/' -> '{new_src}/'") in shown
    assert "resuming job:local_test as submitted" in shown and "Traceback" not in shown
    assert dest_objects(migration.bucket).keys() == old.keys()
    # 'y': the job is cleaned and the edited file submitted; the new folder is copied.
    code, shown = run_on_a_terminal(command, {question: "y", "Stop the service?": "y"})
    assert code == 0 and "JobState:Succeed" in shown, shown
    assert "clean job:local_test success!" in shown and "submit job:local_test success!" in shown
    assert_migrated(migration.bucket, {**old, **new})
