"""Scripted runs, retry's cost and a fixed secret (issue 9, bullets 8, 4 and 2).

The stories an operator lived: a cron'd ``bash import.sh --yes`` left the service running after
every job; Ctrl-C at a terminal left it running without a word; ``console.sh retry`` moved tasks
back without saying what it would send again, and printed nothing without a job; a fixed
``destSecretKey`` could reach a failed job only by cleaning it and scanning the source again.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import subprocess
import termios
import time
from pathlib import Path

import psutil

from conftest import (CONSOLE, ROOT, assert_migrated, checked_stat, crc64_of, dest_objects, process_cmdlines,
                      wait_for, write_tree)
from ossimport_dist.cli.console import SERVICE_MARK
from ossimport_dist.layout import parse_finished_name
from ossimport_dist.status import human_bytes

KEEPS_RUNNING = ("the service keeps copying job local_test in the background: 'console.sh stat' shows its "
                 "progress, 'bash import.sh' comes back to it, 'console.sh stop' stops it")
QUESTION = "Stop the service (s), or keep it copying in the background (k)? "


def import_sh(migration, *args, timeout=120) -> subprocess.CompletedProcess:
    """``bash import.sh`` as a script runs it: no terminal."""
    return subprocess.run(["bash", str(ROOT / "import.sh"), "--sys", str(migration.sys_file), "--interval", "0.3",
                           *args, str(migration.job_file)],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout)


def console_with_input(migration, *args, text: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(CONSOLE), "--sys", str(migration.sys_file), *args],
                          capture_output=True, text=True, input=text, timeout=60)


def is_service(pid: int) -> bool:
    try:
        return SERVICE_MARK in " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return False


def started_pid(out: str) -> int:
    [line] = [line for line in out.splitlines() if line.startswith("service started (pid ")]
    return int(line.split("(pid ")[1].split(")")[0])


def no_traceback(r: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr


# ------------------------------------------------------------------- scripted runs (bullet 8)

def test_a_scripted_import_stops_the_service_it_started(migration):
    files = {f"docs/f{i}.txt": b"line %d\n" % i * (i + 1) for i in range(14)}
    write_tree(migration.src, files)
    migration.write_conf()
    r = import_sh(migration, "--yes")
    no_traceback(r)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines()[0] == "submit job:local_test success!"
    pid = started_pid(r.stdout)
    assert r.stdout.strip().splitlines()[-1] == f"service stopped (pid {pid})"
    assert "Stop the service?" not in r.stdout  # a script is not asked
    assert not is_service(pid) and migration.service_pid() == 0
    assert_migrated(migration.bucket, files)
    # The service it stopped wrote the job's report first.
    summary = json.loads((migration.job_dir / "report" / "summary.json").read_text())
    assert summary["complete"] and summary["by_outcome"] == {"copied": {"objects": len(files), "bytes": sum(
        len(d) for d in files.values())}}
    assert (migration.job_dir / "report" / "report.html").is_file()
    assert f"report: {migration.job_dir / 'report' / 'report.html'}; 'console.sh verify-report local_test' " \
           "checks the destination against it later" in r.stdout.splitlines()


def test_keep_running_leaves_the_service_copying(migration):
    files = {"a.txt": b"a" * 300, "b/c.txt": b"c" * 70}
    write_tree(migration.src, files)
    migration.write_conf()
    r = import_sh(migration, "--no", "--keep-running")
    no_traceback(r)
    assert r.returncode == 0, r.stdout + r.stderr
    pid = started_pid(r.stdout)
    assert r.stdout.strip().splitlines()[-1] == "the service keeps running (--keep-running); 'console.sh stop' ends it"
    assert is_service(pid) and migration.service_pid() == pid
    assert_migrated(migration.bucket, files)
    assert migration.ok("stop").strip() == f"service stopped (pid {pid})"
    assert not is_service(pid)


def test_a_service_running_before_import_sh_is_left_running(migration):
    files = {"one.txt": b"1", "two/three.txt": b"3" * 1000}
    write_tree(migration.src, files)
    migration.write_conf()
    assert migration.ok("start").startswith("service started (pid ")
    before = migration.service_pid()
    r = import_sh(migration, "--yes")
    no_traceback(r)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"service is already running (pid {before})" in r.stdout
    assert r.stdout.strip().splitlines()[-1] == (
        "the service was running before import.sh started, so it keeps running ('console.sh stop' ends it)")
    assert is_service(before) and migration.service_pid() == before
    assert_migrated(migration.bucket, files)


def test_a_scripted_import_ended_by_sigterm_stops_the_service_it_started(migration):
    slow_job(migration, 10, 40 * 1024, 20)
    proc = subprocess.Popen(["bash", str(ROOT / "import.sh"), "--sys", str(migration.sys_file), "--interval", "0.3",
                             "--yes", str(migration.job_file)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
    seen = []
    for line in proc.stdout:  # a script's 'timeout' once the job copies
        seen.append(line)
        if "Running: files " in line:
            proc.terminate()
            break
    out = "".join(seen) + proc.communicate(timeout=60)[0]
    assert proc.returncode == 130 and "Traceback" not in out, out
    pid = started_pid(out)
    assert out.strip().splitlines()[-2:] == [
        f"service stopped (pid {pid})",
        "job local_test stopped where it was: 'bash import.sh' or 'console.sh start' resumes it, 'console.sh stat' "
        "shows where it is"], out
    assert not is_service(pid) and migration.stat()["JobState"] == "Abort"


def test_a_scripted_import_leaves_the_service_to_another_job_still_copying(migration, emulator):
    """The service serves every job of the workingDir: stopping it for one would abort another."""
    big = {"big/video.bin": os.urandom(300 * 1024)}
    write_tree(migration.src, big)
    other = migration.dir / "conf" / "other_job.cfg"
    migration.write_conf(job_props={"jobName": "other_job", "srcPrefix": f"{migration.src}/big/",
                                    "destPrefix": "other/", "multipartUploadThreshold": "100k",
                                    "multipartUploadPartSize": "100k"})
    other.write_text(migration.job_file.read_text())
    small_src = migration.dir / "small"
    small = {"s1.txt": b"small one", "s2/s3.txt": b"small two"}
    write_tree(small_src, small)
    migration.write_conf(job_props={"srcPrefix": f"{small_src}/"})
    emulator.set_faults("slow:1.0@3:UploadPart")  # only the other job's parts are slow
    migration.ok("submit", str(other))
    r = import_sh(migration, "--yes")
    no_traceback(r)
    assert r.returncode == 0, r.stdout + r.stderr
    pid = started_pid(r.stdout)
    assert r.stdout.strip().splitlines()[-1] == (
        "the service keeps running: it still copies job(s) other_job ('console.sh stop' ends it)")
    assert is_service(pid)
    wait_for(lambda: "JobState:Succeed" in migration.console("stat", "other_job").stdout, "other_job Succeed", 90)
    emulator.set_faults(None)
    got = dest_objects(migration.bucket)
    want = {**small, **{"other/video.bin": big["big/video.bin"]}}
    assert got == {k: (len(v), crc64_of(v)) for k, v in want.items()}
    migration.ok("stop")


class Terminal:
    """``bash import.sh`` with a pseudo-terminal as its controlling terminal, as at a shell: what
    it shows is read, and Ctrl-C is the terminal's own (byte 0x03 turned into SIGINT by the tty)."""

    def __init__(self, args: list):
        self.leader, follower = pty.openpty()

        def take_terminal():  # the new session's controlling terminal is the pty
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(args, stdin=follower, stdout=follower, stderr=follower, close_fds=True,
                                     start_new_session=True, preexec_fn=take_terminal)
        os.close(follower)
        self.shown = b""

    @property
    def text(self) -> str:
        return self.shown.decode("utf-8", "replace").replace("\r\n", "\n")

    def _read(self, wait: float) -> bool:
        ready, _, _ = select.select([self.leader], [], [], wait)
        if not ready:
            return True
        try:
            chunk = os.read(self.leader, 65536)
        except OSError:  # the terminal closed: the program ended
            return False
        self.shown += chunk
        return bool(chunk)

    def expect(self, words: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while words not in self.text:
            assert time.monotonic() < deadline, f"{words!r} not shown within {timeout} s: {self.text}"
            if not self._read(0.2) and words not in self.text:
                raise AssertionError(f"import.sh ended before showing {words!r}: {self.text}")

    def type(self, text: bytes) -> None:
        os.write(self.leader, text)

    def wait_reading(self, timeout: float = 10) -> None:
        """Until import.sh blocks reading the terminal: a Ctrl-C between a prompt's write and
        that read is noted by Python but the read is not interrupted (a person is never that fast)."""
        syscall = Path(f"/proc/{self.proc.pid}/syscall")
        wait_for(lambda: syscall.read_text().startswith("0 0x0 "), "a read of the terminal", timeout)

    def wait(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            assert time.monotonic() < deadline, f"import.sh did not end within {timeout} s: {self.text}"
            self._read(0.1)
        while self._read(0.1) and select.select([self.leader], [], [], 0)[0]:
            pass  # what it printed last
        return self.proc.wait(5)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        os.close(self.leader)


def slow_job(migration, n: int, size: int, kbs: int) -> dict:
    """A job that takes a few seconds: the throughput cap of sys.properties holds it back."""
    files = {f"slow/f{i:02d}.bin": bytes([i]) * size for i in range(n)}
    write_tree(migration.src, files)
    migration.write_conf(sys_props={"workerMaxThroughput(KB/s)": str(kbs)})
    return files


def interrupted_on_a_terminal(migration) -> tuple:
    """import.sh on a terminal, Ctrl-C once the job copies: (terminal at the question, service pid)."""
    term = Terminal(["bash", str(ROOT / "import.sh"), "--sys", str(migration.sys_file), "--interval", "0.3",
                     str(migration.job_file)])
    term.expect("Running: files ")
    pid = started_pid(term.text)
    term.type(b"\x03")
    term.expect(QUESTION)
    return term, pid


def test_ctrl_c_on_a_terminal_keep_lets_the_job_finish_in_the_background(migration):
    files = slow_job(migration, 12, 20 * 1024, 60)
    term, pid = interrupted_on_a_terminal(migration)
    try:
        term.type(b"k\n")
        assert term.wait() == 130, term.text
    finally:
        term.close()
    assert term.text.strip().splitlines()[-1] == KEEPS_RUNNING
    assert "Traceback" not in term.text and "JobState:Succeed" not in term.text
    assert is_service(pid)
    assert migration.wait_state(timeout=90)["JobState"] == "Succeed"
    assert_migrated(migration.bucket, files)
    migration.ok("stop")


def test_ctrl_c_on_a_terminal_stop_ends_the_service_and_says_how_to_resume(migration):
    files = slow_job(migration, 12, 40 * 1024, 20)
    term, pid = interrupted_on_a_terminal(migration)
    try:
        term.type(b"s\n")
        assert term.wait() == 130, term.text
    finally:
        term.close()
    lines = term.text.strip().splitlines()
    assert lines[-2:] == [f"service stopped (pid {pid})",
                          "job local_test stopped where it was: 'bash import.sh' or 'console.sh start' resumes "
                          "it, 'console.sh stat' shows where it is"], term.text
    assert "Traceback" not in term.text
    assert not is_service(pid) and migration.service_pid() == 0
    s = migration.stat()
    assert s["JobState"] == "Abort", s
    assert "'console.sh start' or 'bash import.sh' resumes job local_test where it stopped" in migration.stat_text()
    # And it does: the job resumes and every file arrives once.
    migration.sys_file.write_text(migration.sys_file.read_text().replace("(KB/s)=20", "(KB/s)=0"))
    r = import_sh(migration, "--no")
    assert r.returncode == 0 and "JobState:Succeed" in r.stdout, r.stdout + r.stderr
    assert_migrated(migration.bucket, files)


def test_a_second_ctrl_c_at_the_question_stops_nothing(migration):
    slow_job(migration, 10, 40 * 1024, 20)
    term, pid = interrupted_on_a_terminal(migration)
    try:
        term.wait_reading()
        term.type(b"\x03")
        assert term.wait() == 130, term.text
    finally:
        term.close()
    assert term.text.strip().splitlines()[-1] == KEEPS_RUNNING, term.text
    assert "Traceback" not in term.text
    assert is_service(pid) and migration.service_pid() == pid
    migration.ok("stop")


# ---------------------------------------------------------------------- retry's cost (bullet 4)

def list_job(migration, tmp_path, present: dict, missing: list) -> None:
    write_tree(migration.src, present)
    manifest = tmp_path / "keys.txt"
    manifest.write_text("".join(k + "\n" for k in [*present, *missing]))
    migration.write_conf(job_props={"srcType": "list", "listFilePath": str(manifest), "listSrcType": "local"})


def test_retry_says_how_many_files_and_bytes_it_sends_again(migration, tmp_path, emulator):
    present = {"a.txt": b"a" * 1000, "b.txt": b"b" * 2500, "c/d.txt": b"d" * 4000}
    missing = ["gone-1.txt", "gone/2.txt"]
    list_job(migration, tmp_path, present, missing)
    emulator.set_faults("500:1.0:PutObject")  # every upload fails, for a cause a retry can fix
    migration.ok("submit", str(migration.job_file))
    migration.ok("start")
    assert migration.wait_state()["JobState"] == "Failed"
    tasks = len(migration.task_dirs("failed_tasks"))
    emulator.set_faults(None)
    r = migration.console("retry", "local_test")
    no_traceback(r)
    assert r.returncode == 0
    assert r.stdout.splitlines() == [
        f"retry job:local_test: {tasks} failed task(s) back to pending: 5 file(s), {human_bytes(7500)} to send again",
        "retry job:local_test: 2 of them fail again until the source or the destination changes (missing at "
        "the source, or a name that cannot be a key); 'console.sh errors local_test' lists them"]
    assert migration.wait_state()["JobState"] == "Failed"
    assert_migrated(migration.bucket, present)
    tasks = len(migration.task_dirs("failed_tasks"))
    r = migration.console("retry")
    assert r.returncode == 0 and r.stdout.splitlines()[0] == (
        f"retry job:local_test: {tasks} failed task(s) back to pending: 2 file(s), 0 B to send again"), r.stdout


def test_retry_with_nothing_to_retry_says_so_and_exits_0(migration):
    migration.write_conf()
    r = migration.console("retry")
    no_traceback(r)
    assert (r.returncode, r.stdout.strip(), r.stderr) == (0, "no job submitted; nothing to retry", "")
    write_tree(migration.src, {"x.txt": b"x"})
    migration.ok("submit", str(migration.job_file))
    migration.ok("start")
    assert migration.wait_state()["JobState"] == "Succeed"
    r = migration.console("retry", "local_test")
    assert (r.returncode, r.stdout.strip()) == (0, "nothing to retry: job local_test has no failed task")


def test_import_sh_offers_no_retry_when_only_the_source_can_fix_the_failures(migration, tmp_path):
    present = {"here.txt": b"h" * 123}
    list_job(migration, tmp_path, present, ["not-there.txt", "nor/this.txt"])
    r = import_sh(migration, "--yes")
    no_traceback(r)
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stdout.splitlines()[0] == "submit job:local_test success!"
    assert "Retry them?" not in r.stdout and "back to pending" not in r.stdout
    assert ("Job local_test failed: 2 file(s), 0 B, cannot be copied until the source or the destination changes "
            "(missing at the source, or a name that cannot be a key), so no retry is offered: 'console.sh errors "
            "local_test' lists them. JobState:Failed") in r.stdout.splitlines()
    assert_migrated(migration.bucket, present)
    assert migration.service_pid() == 0  # and the scripted run left nothing running


def test_import_sh_offers_no_retry_for_a_name_the_destination_refuses(migration):
    long_key = "/".join(["n" * 200] * 5) + "/too-long-for-oss.txt"  # 1026 bytes: OSS takes 1023
    files = {"fine.txt": b"fine", long_key: b"refused by name"}
    write_tree(migration.src, files)
    migration.write_conf()
    r = import_sh(migration, "--yes")
    no_traceback(r)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Retry them?" not in r.stdout
    assert ("Job local_test failed: 1 file(s), 15 B, cannot be copied until the source or the destination changes "
            "(missing at the source, or a name that cannot be a key), so no retry is offered: 'console.sh errors "
            "local_test' lists them. JobState:Failed") in r.stdout.splitlines()
    assert "InvalidObjectName" in r.stdout  # the reason, shown with its file
    assert_migrated(migration.bucket, {"fine.txt": b"fine"})


# ------------------------------------------------------------------ a fixed secret (bullet 2)

def state_snapshot(job_dir: Path) -> dict:
    """The scan's checkpoints, byte for byte with their mtimes: a rescan would rewrite them."""
    return {p.relative_to(job_dir): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted((job_dir / "checkpoints").rglob("*")) if p.is_file()}


def task_ids(dirs: list) -> set:
    return {parse_finished_name(d.name)[0] for d in dirs}


def failed_with_a_wrong_secret(migration) -> dict:
    files = {f"photos/{i:03d}.jpg": os.urandom(200 + 37 * i) for i in range(14)}
    write_tree(migration.src, files)
    migration.write_conf(job_props={"destSecretKey": "wrong-" + migration.secret})
    # Past the preflight, which would refuse the wrong secret at once: the story is a job that failed.
    migration.ok("submit", "--no-preflight", str(migration.job_file))
    migration.ok("start", "--no-preflight")
    assert migration.wait_state(timeout=90)["JobState"] == "Failed"
    return files


def test_a_fixed_secret_is_taken_by_the_failed_job_without_a_rescan(migration):
    files = failed_with_a_wrong_secret(migration)
    failed = task_ids(migration.task_dirs("failed_tasks"))
    checkpoints = state_snapshot(migration.job_dir)
    assert failed and checkpoints
    r = console_with_input(migration, "set", "destSecretKey", "local_test", text=migration.secret + "\n")
    no_traceback(r)
    assert (r.returncode, r.stdout.strip()) == (0, "job:local_test destSecretKey=****** (takes effect within seconds)")
    frozen = migration.job_dir / "job.cfg"
    assert oct(frozen.stat().st_mode & 0o777) == "0o600"
    assert frozen.read_text().startswith(f"#submitted from {migration.job_file.resolve()}; settings sha256:")
    migration.write_conf()  # the operator fixes the file too: start and retry see no edit
    r = migration.console("retry")
    # The wrong secret stopped the job (fatal): retry says so, then what it sends again.
    stopped, moved = r.stdout.splitlines()
    assert r.returncode == 0 and stopped.startswith("retry job:local_test: the job had stopped (5 files in a row"), r.stdout
    assert moved.startswith(f"retry job:local_test: {len(failed)} failed task(s) back to pending: 14 file(s)"), r.stdout
    assert migration.secret not in process_cmdlines()
    assert migration.wait_state(timeout=90)["JobState"] == "Succeed"
    assert_migrated(migration.bucket, files)
    assert task_ids(migration.task_dirs("succeed_tasks")) == failed  # the same tasks, no new ones
    assert not migration.task_dirs("pending_tasks") and state_snapshot(migration.job_dir) == checkpoints
    for log in (migration.work / "logs").iterdir():
        assert migration.secret not in log.read_text(errors="replace"), log
    assert "set job:local_test destSecretKey=******" in (migration.work / "logs" / "submit.log").read_text()
    # The service that ran all along took it: no restart; the job it had stopped got drivers
    # made from the fixed job.cfg once retried.
    service_log = (migration.work / "logs" / "ossimport2.log").read_text()
    assert service_log.count("service started (pid") == 1
    assert "job local_test: retried after it stopped; running again" in service_log


def test_set_never_takes_a_secret_on_the_command_line(migration, tmp_path):
    write_tree(migration.src, {"a.txt": b"a"})
    migration.write_conf()
    migration.ok("submit", str(migration.job_file))
    before = (migration.job_dir / "job.cfg").read_bytes()
    r = migration.console("set", "destSecretKey=hunter2-typed", "local_test")
    assert r.returncode == 2 and "hunter2-typed" not in r.stdout + r.stderr
    assert r.stderr.strip() == (
        "error: destSecretKey is never given on the command line (it would show in 'ps' and the shell history): "
        "run 'console.sh set destSecretKey <job>' and type it, or 'console.sh set destSecretKey --from <job file> "
        "<job>'")
    r = console_with_input(migration, "set", "destSecretKey", "local_test", text="\n")
    assert r.returncode == 2 and r.stderr.strip() == (
        "error: the first line of standard input (the destSecretKey) is empty; nothing changed: give the new "
        "value (a terminal asks for it, a script pipes it as one line, or --from a job file that has it)")
    for piped, problem in ((b"k" * 5000 + b"\n", "is longer than 4096 bytes, more than any key; nothing changed: "
                                                 "pipe the key alone, on one line"),
                           (b"\xff\xfesecret\n", "is not UTF-8 text; nothing changed: pipe the key as text, on one "
                                                 "line")):
        r = subprocess.run(["bash", str(CONSOLE), "--sys", str(migration.sys_file), "set", "destSecretKey",
                            "local_test"], capture_output=True, input=piped, timeout=60)
        assert r.returncode == 2 and b"Traceback" not in r.stderr, r.stderr
        assert r.stderr.decode().strip() == f"error: the first line of standard input (the destSecretKey) {problem}"
    lacking = tmp_path / "no_secret.cfg"
    lacking.write_text(f"jobName=local_test\nsrcPrefix={migration.src}/\ndestDomain={migration.bucket.endpoint}\n"
                       f"destBucket={migration.bucket.bucket_name}\n")
    r = migration.console("set", "srcSecretKey", "--from", str(lacking), "local_test")
    assert r.returncode == 2 and r.stderr.strip().startswith(f"error: srcSecretKey in {lacking} is empty; ")
    assert (migration.job_dir / "job.cfg").read_bytes() == before  # nothing written by a refusal
    r = migration.console("set", "destSecretKey", "--from", str(migration.job_file), "local_test")
    assert (r.returncode, r.stdout.strip()) == (0, "job:local_test destSecretKey=****** (takes effect within seconds)")


def test_an_edited_secret_is_taken_with_take_secrets_and_never_silently(migration):
    files = failed_with_a_wrong_secret(migration)
    failed = task_ids(migration.task_dirs("failed_tasks"))
    migration.ok("stop")
    migration.write_conf()  # only destSecretKey differs from the job as submitted
    for command in (("start",), ("retry", "local_test")):
        r = migration.console(*command)
        no_traceback(r)
        assert r.returncode == 2 and migration.secret not in r.stderr, r.stdout + r.stderr
        assert r.stderr.strip() == (
            f"error: job local_test was submitted from {migration.job_file.resolve()}, which has changed since "
            f"(destSecretKey ***changed***); the job would run as submitted: only credentials changed: "
            f"'--take-secrets' takes them into the job without a rescan; or "
            + ("'console.sh start --resume' runs it so, or 'console.sh clean local_test' and submit it again"
               if command == ("start",) else
               "'console.sh retry --resume local_test' retries it so, or 'console.sh clean local_test' and "
               "submit it again"))
    r = import_sh(migration)
    assert r.returncode == 2 and r.stderr.strip() == (
        f"error: job local_test was submitted from {migration.job_file.resolve()}, where only credentials changed "
        f"since (destSecretKey): 'bash import.sh --take-secrets' takes them into the job without a rescan, "
        f"'bash import.sh --restart' cleans it and submits the file again"), r.stdout + r.stderr
    assert migration.service_pid() == 0
    r = import_sh(migration, "--take-secrets", "--yes")
    no_traceback(r)
    assert r.returncode == 0 and "JobState:Succeed" in r.stdout, r.stdout + r.stderr
    assert (f"job:local_test: took the new destSecretKey from {migration.job_file.resolve()} into the job, "
            f"without a rescan") in r.stdout.splitlines()
    assert "clean job:local_test" not in r.stdout and "submit job:local_test" not in r.stdout
    assert task_ids(migration.task_dirs("succeed_tasks")) == failed
    assert_migrated(migration.bucket, files)
    assert migration.secret not in r.stdout + r.stderr
    checked_stat(migration.console("stat"))


def test_set_on_a_terminal_asks_for_the_secret_without_echo(migration):
    write_tree(migration.src, {"a.txt": b"a"})
    migration.write_conf(job_props={"destSecretKey": "old-and-wrong"})
    migration.ok("submit", "--no-preflight", str(migration.job_file))
    term = Terminal(["bash", str(CONSOLE), "--sys", str(migration.sys_file), "set", "destSecretKey", "local_test"])
    try:
        term.expect("destSecretKey for job local_test (not shown): ")
        term.type(migration.secret.encode() + b"\n")
        assert term.wait() == 0, term.text
    finally:
        term.close()
    assert migration.secret not in term.text and "Traceback" not in term.text
    assert term.text.strip().splitlines()[-1] == "job:local_test destSecretKey=****** (takes effect within seconds)"
    assert f"destSecretKey={migration.secret}\n" in (migration.job_dir / "job.cfg").read_text()
    migration.write_conf()  # the file fixed too, so start sees no edit
    migration.ok("start")
    assert migration.wait_state(timeout=60)["JobState"] == "Succeed"
    assert_migrated(migration.bucket, {"a.txt": b"a"})


def test_on_a_terminal_an_edited_secret_is_offered_to_the_failed_job(migration):
    files = failed_with_a_wrong_secret(migration)
    failed = task_ids(migration.task_dirs("failed_tasks"))
    migration.ok("stop")
    migration.write_conf()  # the key fixed in the job file
    term = Terminal(["bash", str(ROOT / "import.sh"), "--sys", str(migration.sys_file), "--interval", "0.3",
                     str(migration.job_file)])
    try:
        term.expect("Take the new destSecretKey into job local_test and resume it without a rescan (y), or clean "
                    "it and submit the file again (n)? (y/n) ")
        term.type(b"y\n")
        term.expect("task(s) failed. Retry them? (y/n) ")
        term.type(b"y\n")
        term.expect("Stop the service? (y/n) ")
        term.type(b"y\n")
        assert term.wait() == 0, term.text
    finally:
        term.close()
    assert "Traceback" not in term.text and migration.secret not in term.text
    assert "JobState:Succeed" in term.text and "submit job:local_test" not in term.text
    assert task_ids(migration.task_dirs("succeed_tasks")) == failed
    assert_migrated(migration.bucket, files)
    assert migration.service_pid() == 0
