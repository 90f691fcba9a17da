"""import.sh, OssImport's one-click flow: submit, start, progress, retry on failure, success."""

from __future__ import annotations

import subprocess
import threading

from conftest import ROOT, assert_migrated, awkward_tree, write_tree


def import_sh(migration, *args, timeout=120) -> subprocess.Popen:
    return subprocess.Popen(["bash", str(ROOT / "import.sh"), "--sys", str(migration.sys_file), "--interval", "0.3",
                             *args, str(migration.job_file)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)


def test_one_click_import_reports_success_and_progress(migration):
    files = awkward_tree(20)
    write_tree(migration.src, files)
    migration.write_conf()
    proc = import_sh(migration, "--yes")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert "submit job:local_test success!" in out
    assert "JobState:Succeed" in out and f"{len(files)} files copied and verified" in out
    # A scripted run stops the service it started, without asking (test_scripted_runs.py).
    assert "Stop the service?" not in out and "service stopped" in out
    stat_log = (migration.work / "logs" / "job_stat.log").read_text()
    assert "JobName:local_test" in stat_log and "JobState:Succeed" in stat_log
    assert_migrated(migration.bucket, files)

    # Run again: the job exists; --no resumes it (nothing left to do) instead of cleaning it.
    proc = import_sh(migration, "--no")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert "Clean it and start over (y), or resume it (n)? [n]" in out and "resuming job:local_test" in out
    assert "service stopped" in out and migration.service_pid() == 0


def test_one_click_import_offers_retry_and_converges(migration, emulator):
    files = {f"f{i}.txt": b"data %d" % i for i in range(6)}
    write_tree(migration.src, files)
    migration.write_conf()
    emulator.set_faults("500:1.0:PutObject")
    proc = import_sh(migration, "--yes")
    # Read every line through one reader: communicate() after a partial read of proc.stdout
    # reads the pipe itself and loses what the line reader had buffered already.
    watchdog = threading.Timer(120, proc.kill)
    watchdog.start()
    seen = []
    try:
        for line in proc.stdout:  # the first failure: the retry it offers must then converge
            seen.append(line)
            if "Retry them?" in line:
                emulator.set_faults(None)
        proc.wait(timeout=10)
    finally:
        watchdog.cancel()
    out = "".join(seen)
    assert proc.returncode == 0, out
    assert "task(s) failed. Retry them? [y]" in out and "back to pending" in out
    assert "JobState:Succeed" in out
    assert_migrated(migration.bucket, files)


def test_one_click_import_without_retry_ends_failed_with_where_to_look(migration, emulator):
    write_tree(migration.src, {"a.txt": b"a"})
    migration.write_conf()
    emulator.set_faults("500:1.0:PutObject")
    proc = import_sh(migration, "--no")
    out, _ = proc.communicate(timeout=120)
    emulator.set_faults(None)
    assert proc.returncode == 1, out
    assert "Retry them? [n]" in out and "JobState:Failed" in out and "error.list" in out
    assert "a.txt\t" in out and "InternalError" in out


def test_demo_runs_end_to_end():
    r = subprocess.run(["bash", str(ROOT / "import.sh"), "--demo"], capture_output=True, text=True, timeout=300,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "JobState:Succeed" in r.stdout
    assert "demo: the bucket now lists 210 objects under demo/ (sample had 210 files)" in r.stdout
