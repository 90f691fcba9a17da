"""Hostile stories for the console: a job argument that is not a job name never reaches outside
workingDir, a job file passed for a name is pointed at its job, and one working directory runs
one service however many starts race, with clean refused beside it."""

from __future__ import annotations

import os
import stat
import subprocess

import psutil
import pytest

from conftest import CONSOLE, one_error_line, write_tree
from ossimport_dist import servicelock

RULE = "4 to 128 letters, digits, '_' or '-'"
NON_UTF8 = os.fsdecode(b"caf\xe9_job")


def submitted(migration):
    """A submitted job local_test and, beside the working directory, a victim folder that no
    command may touch: victim/dir/keep.txt."""
    write_tree(migration.src, {"a.txt": b"a"})
    migration.write_conf()
    migration.ok("submit", str(migration.job_file))
    victim = migration.dir / "victim" / "dir"
    write_tree(victim, {"keep.txt": b"keep"})
    return victim


def assert_untouched(migration, victim):
    assert (victim / "keep.txt").read_bytes() == b"keep"
    assert migration.job_file.is_file()
    assert (migration.job_dir / "job.cfg").is_file()


# The arguments an operator (or a script with an empty variable) can pass for a job, and how the
# error quotes each one.
def bad_names(migration, victim):
    traversal = "local_test/../../../../victim/dir"
    assert (migration.work / "master" / "jobs" / traversal).resolve() == victim  # it does lead there
    fifo = victim.parent / "pipe"
    if not fifo.exists():
        os.mkfifo(fifo)  # looked at as a possible job file, never opened (that would hang)
    return [
        (traversal, f"'{traversal}'"),
        (".", "'.'"),
        ("..", "'..'"),
        ("", "''"),
        (str(victim), f"'{victim}'"),
        ("local_test/x", "'local_test/x'"),
        ("j" * 200, f"'{'j' * 60}...' (200 characters)"),
        (NON_UTF8, "'caf\\xe9_job'"),
        ("two\nlines", "'two\\nlines'"),
        (str(fifo), f"'{fifo}'"),
    ]


def test_clean_refuses_every_argument_that_is_not_a_job_name(migration):
    victim = submitted(migration)
    jobs = migration.work / "master" / "jobs"
    for arg, shown in bad_names(migration, victim):
        r = migration.console("clean", arg)
        assert r.returncode == 2, (arg, r.stdout, r.stderr)
        assert one_error_line(r) == (f"error: clean takes a job name ({RULE}), not {shown}; "
                                     f"jobs in {jobs}: local_test")
        assert r.stdout == ""
        assert_untouched(migration, victim)


@pytest.mark.parametrize("command", [["stat"], ["stat", "detail"], ["retry"], ["errors"],
                                     ["set", "jobMaxThroughput(KB/s)=100"]])
def test_every_command_taking_a_job_refuses_a_path_for_one(migration, command):
    victim = submitted(migration)
    jobs = migration.work / "master" / "jobs"
    for arg, shown in bad_names(migration, victim)[:5]:
        r = migration.console(*command, arg)
        assert r.returncode == 2, (command, arg, r.stdout, r.stderr)
        assert one_error_line(r) == (f"error: {command[0]} takes a job name ({RULE}), not {shown}; "
                                     f"jobs in {jobs}: local_test")
        assert_untouched(migration, victim)
    assert (migration.job_dir / "job.cfg").read_text().count("jobMaxThroughput(KB/s)=0") == 1


def test_the_job_file_passed_for_a_name_is_pointed_at_its_job(migration):
    victim = submitted(migration)
    out_file = migration.dir / "failed.list"
    cases = [
        (["clean"], "clean", "clean local_test"),
        (["stat", "detail"], "stat", "stat detail local_test"),
        (["retry"], "retry", "retry local_test"),
        (["set", "jobMaxThroughput(KB/s)=9"], "set", "set jobMaxThroughput(KB/s)=9 local_test"),
    ]
    for words, command, retyped in cases:
        r = migration.console(*words, str(migration.job_file))
        assert r.returncode == 2, r.stderr
        assert one_error_line(r) == (f"error: {command} takes a job name; {migration.job_file} holds job "
                                     f"'local_test': run 'console.sh {retyped}'")
        assert_untouched(migration, victim)
    r = migration.console("errors", str(migration.job_file), "-o", str(out_file))
    assert one_error_line(r) == (f"error: errors takes a job name; {migration.job_file} holds job "
                                 f"'local_test': run 'console.sh errors local_test -o {out_file}'")
    assert not out_file.exists()
    # The name itself still works.
    assert migration.ok("clean", "local_test").strip() == "clean job:local_test success!"
    assert not migration.job_dir.exists() and migration.job_file.is_file()


def test_clean_without_a_name_and_no_readable_job_file_cleans_nothing(migration):
    victim = submitted(migration)
    migration.job_file.write_text("jobName=../../victim\n")
    r = migration.console("clean")
    assert r.returncode == 2
    assert one_error_line(r) == (
        f"error: clean without a job name cleans the job of {migration.job_file}, which cannot be read "
        f"(must be {RULE} (got '../../victim')); name the job: console.sh clean <job> (jobs: local_test)")
    migration.job_file.unlink()
    r = migration.console("clean")
    assert one_error_line(r) == (
        f"error: clean without a job name cleans the job of {migration.job_file}, which cannot be read "
        f"(file not found); name the job: console.sh clean <job> (jobs: local_test)")
    assert (victim / "keep.txt").read_bytes() == b"keep"
    assert (migration.job_dir / "job.cfg").is_file()


def test_set_without_a_job_names_the_choice_instead_of_guessing(migration):
    migration.write_conf()
    r = migration.console("set", "jobMaxThroughput(KB/s)=5")
    assert r.returncode == 2
    assert one_error_line(r) == ("error: name the job: console.sh set jobMaxThroughput(KB/s)=5 <job> "
                                 "(jobs: none submitted)")
    submitted(migration)
    r = migration.console("set", "jobMaxThroughput(KB/s)=5")
    assert r.returncode == 0
    assert r.stdout.strip() == "job:local_test jobMaxThroughput(KB/s)=5 (takes effect within seconds)"
    assert "jobMaxThroughput(KB/s)=5" in (migration.job_dir / "job.cfg").read_text()


def test_clean_removes_a_symlink_in_a_jobs_place_not_what_it_points_to(migration):
    victim = submitted(migration)
    (victim / "job.cfg").write_text("jobName=evil_job\n")  # so the folder passes for a job
    link = migration.work / "master" / "jobs" / "evil_job"
    link.symlink_to(victim)
    r = migration.console("clean", "evil_job")
    assert r.returncode == 0 and r.stdout.strip() == "clean job:evil_job success!", r.stderr
    assert not link.is_symlink() and not link.exists()
    assert sorted(p.name for p in victim.iterdir()) == ["job.cfg", "keep.txt"]
    assert_untouched(migration, victim)


def test_retry_and_set_never_write_through_a_symlinked_job_folder(migration):
    victim = submitted(migration)
    (victim / "job.cfg").write_text("jobName=evil_job\n")
    link = migration.work / "master" / "jobs" / "evil_job"
    link.symlink_to(victim)
    for args in (["retry", "evil_job"], ["set", "jobMaxThroughput(KB/s)=7", "evil_job"]):
        r = migration.console(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert one_error_line(r) == (f"error: {link} is a symlink; a job's state is written only inside "
                                     f"workingDir: remove it")
    assert sorted(p.name for p in victim.iterdir()) == ["job.cfg", "keep.txt"]
    assert (victim / "job.cfg").read_text() == "jobName=evil_job\n"
    assert_untouched(migration, victim)


def test_clean_refuses_a_state_folder_that_leads_outside_working_dir(migration):
    victim = submitted(migration)
    # worker/jobs replaced by a symlink to a folder outside workingDir that has a local_test.
    outside = migration.dir / "victim" / "worker-jobs"
    write_tree(outside / "local_test", {"keep.txt": b"keep"})
    worker_jobs = migration.work / "worker" / "jobs"
    os.rename(worker_jobs, migration.dir / "moved-away")
    worker_jobs.symlink_to(outside)
    r = migration.console("clean", "local_test")
    assert r.returncode == 2
    assert one_error_line(r) == (f"error: {worker_jobs} leads outside workingDir ({migration.work}) to "
                                 f"{outside}; nothing touched: make it a folder inside workingDir (and remove "
                                 f"{worker_jobs / 'local_test'} by hand if it is this job's)")
    assert (outside / "local_test" / "keep.txt").read_bytes() == b"keep"
    assert (migration.work / "master" / "jobqueue" / "local_test").exists()  # untouched as well
    assert_untouched(migration, victim)


@pytest.mark.parametrize("planted", ["logs/ossimport2.log", "logs/submit.log", "master/service.lock",
                                     "master/jobs/local_test", "worker/jobs"])
def test_a_symlink_planted_in_the_state_tree_leads_nowhere_outside(migration, planted):
    write_tree(migration.src, {"a.txt": b"a"})
    migration.write_conf()
    outside = migration.dir / "victim" / "target"
    to_folder = planted in ("master/jobs/local_test", "worker/jobs")
    write_tree(outside.parent, {"target/keep.txt" if to_folder else "target": b"keep"})
    os.chmod(outside, 0o644 if outside.is_file() else 0o755)
    before = sorted(str(p) for p in outside.parent.rglob("*"))
    link = migration.work / planted
    link.parent.mkdir(parents=True)
    link.symlink_to(outside)
    expected = {
        "logs/ossimport2.log": f"error: {link} is a symlink; logs are written only inside workingDir: remove it",
        "logs/submit.log": f"error: {link} is a symlink; logs are written only inside workingDir: remove it",
        "master/service.lock": f"error: {link} is not a regular file; remove it ('console.sh start' makes it again)",
        "master/jobs/local_test": f"error: {link} is a symlink; a job's state is written only inside "
                                  f"workingDir: remove it",
        "worker/jobs": f"error: {link} leads outside workingDir ({migration.work}) to {outside}; nothing touched: "
                       f"make it a folder inside workingDir (and remove {link / 'local_test'} by hand if it is "
                       f"this job's)",
    }[planted]
    starts = planted in ("logs/ossimport2.log", "master/service.lock")
    command = ["start"] if starts else ["submit", str(migration.job_file)]
    r = migration.console(*command)
    assert r.returncode == 2, r.stdout + r.stderr
    assert one_error_line(r) == expected
    assert service_processes(migration) == []
    assert sorted(str(p) for p in outside.parent.rglob("*")) == before
    assert not migration.job_dir.is_dir() or planted == "master/jobs/local_test"
    if not to_folder:
        assert outside.read_bytes() == b"keep" and stat.S_IMODE(outside.stat().st_mode) == 0o644
    else:
        assert (outside / "keep.txt").read_bytes() == b"keep"
    assert link.is_symlink()


# -- one service per working directory ----------------------------------------------------------
def service_processes(migration) -> list:
    """The service processes running on this migration's working directory."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmdline = p.info["cmdline"] or []
        if any("ossimport_dist.service_main" in c for c in cmdline) and str(migration.work) in cmdline:
            found.append(p.pid)
    return found


def console_popen(migration, *args) -> subprocess.Popen:
    return subprocess.Popen(["bash", str(CONSOLE), "--sys", str(migration.sys_file), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)


def finish(proc) -> tuple:
    out, err = proc.communicate(timeout=60)
    assert "Traceback" not in out + err, out + err
    return proc.returncode, out.strip(), err.strip()


def test_four_simultaneous_starts_run_one_service_and_stop_ends_it(migration):
    submitted(migration)
    log = migration.work / "logs" / "ossimport2.log"
    for _ in range(2):
        starts = [console_popen(migration, "start") for _ in range(4)]
        results = [finish(p) for p in starts]
        assert [code for code, _, _ in results] == [0, 0, 0, 0], results
        running = service_processes(migration)
        assert len(running) == 1, results
        pid = running[0]
        outs = sorted(out for _, out, _ in results)
        assert outs.count(f"service started (pid {pid}); logs in {log}") == 1, outs
        assert outs.count(f"service is already running (pid {pid}); logs in {log}") == 3, outs
        assert migration.service_pid() == pid

        r = migration.console("clean", "local_test")
        assert r.returncode == 2
        assert one_error_line(r) == f"error: the service is running (pid {pid}); run 'console.sh stop' before 'clean'"
        assert (migration.job_dir / "job.cfg").is_file()

        assert migration.ok("stop").strip() == f"service stopped (pid {pid})"
        assert service_processes(migration) == []
        assert servicelock.holder(migration.work / "master" / "service.lock") is None
        assert not (migration.work / "master" / "ossimport.pid").exists()


def test_a_stale_pid_file_is_not_a_running_service(migration):
    submitted(migration)
    # The pid of a live process that is not a service (this test): the lock says nobody runs.
    (migration.work / "master" / "ossimport.pid").write_text(f"{os.getpid()}\n")
    assert migration.stat()["JobState"] == "Submitted"
    assert migration.ok("stop").strip() == "service is not running"
    assert migration.ok("clean", "local_test").strip() == "clean job:local_test success!"
    assert psutil.pid_exists(os.getpid())


def test_start_during_a_clean_starts_nothing_and_says_why(migration):
    submitted(migration)
    lock = migration.work / "master" / "service.lock"
    held = servicelock.acquire(lock, servicelock.ROLE_CLEAN)  # a clean in progress, as clean holds it
    try:
        r = migration.console("start")
        assert r.returncode == 2
        assert one_error_line(r) == (f"error: service not started: 'console.sh clean' (pid {os.getpid()}) is "
                                     f"removing a job; run 'console.sh start' again when it is done")
        assert service_processes(migration) == []
        r = migration.console("clean", "local_test")
        assert one_error_line(r) == (f"error: another 'console.sh clean' (pid {os.getpid()}) is running; "
                                     f"wait for it to end")
        assert (migration.job_dir / "job.cfg").is_file()
    finally:
        held.release()
    assert migration.ok("start").startswith("service started")


def test_start_racing_clean_leaves_one_consistent_outcome(migration):
    for _ in range(3):
        submitted(migration)
        clean, start = console_popen(migration, "clean", "local_test"), console_popen(migration, "start")
        (clean_code, clean_out, clean_err), (start_code, start_out, start_err) = finish(clean), finish(start)
        running = service_processes(migration)
        if clean_code == 0:
            # Clean held the lock first: the job is gone, whatever the start then did.
            assert clean_out == "clean job:local_test success!"
            assert not migration.job_dir.exists()
        else:
            # The service held it first: clean refused and touched nothing.
            assert clean_err.startswith("error: the service is running (pid "), clean_err
            assert (migration.job_dir / "job.cfg").is_file()
        if start_code == 0:
            assert len(running) == 1 and start_out.startswith("service started"), (start_out, start_err)
        else:
            # Clean held the lock longer than a start waits for it (or let go just as it gave up).
            assert running == [] and start_err.startswith("error: service not started: "), start_err
        assert clean_code == 0 or start_code == 0
        migration.ok("stop")
        migration.console("clean", "local_test")
        assert service_processes(migration) == []


def test_the_state_tree_itself_refuses_a_name_that_is_a_path(tmp_path):
    """Defense in depth under the console: whoever asks, a job's folder is a name under workingDir."""
    from ossimport_dist.errors import StateError
    from ossimport_dist.layout import Home

    home = Home(tmp_path / "work")
    for name in ("..", ".", "", "a/b", "/etc", "x" * 129, NON_UTF8):
        with pytest.raises(StateError, match="is not a job name"):
            home.job(name)
    assert home.job("local_test").root == tmp_path / "work" / "master" / "jobs" / "local_test"
    assert not (tmp_path / "work").exists()


def test_stop_never_signals_a_process_that_is_not_a_service(migration):
    submitted(migration)
    lock = migration.work / "master" / "service.lock"
    held = servicelock.acquire(lock, servicelock.ROLE_SERVICE)  # this test process, posing as one
    try:
        r = migration.console("stop")
        assert r.returncode == 2
        assert one_error_line(r) == (f"error: {lock} names pid {os.getpid()}, which is not an ossimport service "
                                     f"now; run 'console.sh stop' again")
    finally:
        held.release()
    assert lock.read_bytes() == b""  # a released lock names nobody
    assert migration.ok("stop").strip() == "service is not running"


def test_a_probe_beside_a_dead_services_name_is_never_taken_for_a_running_service(tmp_path):
    # The service was killed -9: the file still names it. Another 'stat' probing the lock at
    # the same instant holds it for a moment; that must not read as "running (pid <dead>)".
    import fcntl
    import threading

    lock = tmp_path / "service.lock"
    dead = subprocess.Popen(["true"])
    dead.wait()
    lock.write_text(f"service {dead.pid}\n")
    probe = os.open(lock, os.O_RDONLY)
    fcntl.flock(probe, fcntl.LOCK_EX)
    threading.Timer(0.2, os.close, (probe,)).start()  # the other probe lets go
    assert servicelock.holder(lock) is None
    # A live holder is named at once, with its pid.
    held = servicelock.acquire(lock, servicelock.ROLE_SERVICE)
    try:
        assert servicelock.holder(lock) == servicelock.Holder(servicelock.ROLE_SERVICE, os.getpid())
    finally:
        held.release()
    assert servicelock.holder(lock) is None
