"""Honest progress (issue 9, bullet 6): a large file moves stat's bytes while it is sent, a file
that fails takes its sent bytes out of ``sending``, a resumed upload counts its parts once, and the
files done before a ``kill -9`` of the service are still counted by stat and by import.sh."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

from conftest import ROOT, assert_migrated, checked_stat, dest_objects, write_tree
from test_stat_status import only_job, stat_json

MiB = 1 << 20


def write_big(path: Path, size: int) -> bytes:
    """``size`` bytes of random 1 MiB blocks, written fast (a repeated block is still data)."""
    block = os.urandom(MiB)
    data = (block * (size // MiB + 1))[:size]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def sample_until_finished(migration, timeout: float = 60) -> tuple:
    """(the JSON job of each stat taken while Running, the first one that is not Running)."""
    running = []
    deadline = time.monotonic() + timeout
    while True:
        job = only_job(stat_json(migration))
        if job["state"] not in ("Running", "Submitted"):
            return running, job
        if job["state"] == "Running":
            running.append(job)
        assert time.monotonic() < deadline, f"not finished within {timeout} s: {job}"
        time.sleep(0.2)


def moved(job: dict) -> int:
    return job["totals"]["done_bytes"] + job["sending_bytes"]


def worker_tasks(migration) -> Path:
    return migration.work / "worker" / "jobs" / "local_test" / "tasks"


def operations(emulator, name: str) -> int:
    return emulator.stats()["by_operation"].get(name, 0)


def test_a_large_multipart_upload_moves_stat_bytes_part_by_part(migration, emulator):
    size = 200 * MiB
    big = write_big(migration.src / "video" / "big.bin", size)
    # 16 MiB/s: about 12 s for the file, parts of 8 MiB, so stat sees it move many times.
    migration.write_conf(sys_props={"workerMaxThroughput(KB/s)": "16384"},
                         job_props={"multipartUploadThreshold": "8m", "multipartUploadPartSize": "8m",
                                    "uploadThreadNumPerLargeFile": "2"})
    migration.ok("submit", str(migration.job_file))
    parts_before = operations(emulator, "UploadPart")
    migration.ok("start")

    running, end = sample_until_finished(migration)
    in_flight = [j["sending_bytes"] for j in running if 0 < j["sending_bytes"] < size]
    assert len(set(in_flight)) >= 4, f"stat's bytes did not move while the file was sent: {in_flight}"
    assert all(moved(j) <= size and j["totals"]["done_bytes"] in (0, size) for j in running), running
    assert (end["state"], end["totals"]["done_bytes"], end["sending_bytes"]) == ("Succeed", size, 0)
    assert end["totals"]["succeed"] == 1 and end["totals"]["failed_bytes"] == 0
    assert operations(emulator, "UploadPart") - parts_before == size // (8 * MiB)
    words = checked_stat(migration.console("stat"))
    assert words.splitlines()[0] == "JobName:local_test" and "Traceback" not in words
    assert "Bytes:200.0 MiB/200.0 MiB (100.0%) done, failed 0 B" in words.splitlines()
    assert_migrated(migration.bucket, {"video/big.bin": big})


def test_a_large_single_put_moves_import_sh_progress_line_and_stat(migration):
    size = 200 * MiB
    big = write_big(migration.src / "big.bin", size)
    # Threshold above the size: one PUT, its bytes counted per chunk read for it (~12 s).
    migration.write_conf(sys_props={"workerMaxThroughput(KB/s)": "16384"},
                         job_props={"multipartUploadThreshold": "1g"})
    proc = subprocess.Popen(["bash", str(ROOT / "import.sh"), "--sys", str(migration.sys_file), "--interval", "0.3",
                             "--yes", str(migration.job_file)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
    texts = []
    try:
        while proc.poll() is None and len(texts) < 200:
            r = migration.console("stat")
            if "JobState:Running" in r.stdout:
                texts.append(checked_stat(r))
            time.sleep(0.3)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    assert out.splitlines()[0] == "submit job:local_test success!" and "Traceback" not in out
    figures = [m.group(1) for m in re.finditer(r"Running: files 0/1 \(failed 0\), ([\d.]+) MiB/200\.0 MiB,", out)]
    assert len(set(figures)) >= 3, f"the progress line did not move during the PUT:\n{out}"
    assert all(0 < float(f) <= 200.0 for f in figures), figures
    assert [float(f) for f in figures] == sorted(float(f) for f in figures), figures
    sending = [re.search(r"^Bytes:0 B/200\.0 MiB \(0\.0%\) done, sending ([\d.]+) MiB, failed 0 B$", t, re.M)
               for t in texts]
    assert sum(1 for m in sending if m and 0 < float(m.group(1)) < 200.0) >= 2, texts
    assert "Job local_test succeeded: 1 files copied and verified, 0 skipped, 200.0 MiB in" in out
    assert_migrated(migration.bucket, {"big.bin": big})


def test_a_file_that_fails_mid_upload_takes_its_bytes_out_of_sending(migration):
    doomed = migration.src / "doomed.bin"
    write_big(doomed, 32 * MiB)
    steady = write_big(migration.src / "steady.bin", 32 * MiB)
    # Both files at once, one part at a time each, 1 MiB parts: ~4 MiB/s each.
    migration.write_conf(sys_props={"workerMaxThroughput(KB/s)": "8192", "workerTaskThreadNum": "2"},
                         job_props={"multipartUploadThreshold": "1m", "multipartUploadPartSize": "1m",
                                    "uploadThreadNumPerLargeFile": "1"})
    migration.ok("submit", str(migration.job_file))
    migration.ok("start")
    deadline = time.monotonic() + 30
    while only_job(stat_json(migration))["sending_bytes"] < 8 * MiB:
        assert time.monotonic() < deadline, "the two uploads never got going"
        time.sleep(0.1)
    os.truncate(doomed, 0)  # changed while read: the upload is aborted, the file fails

    def steady_parts() -> int:
        found = [p for p in worker_tasks(migration).glob("*/multipart/*.json")
                 if json.loads(p.read_text())["key"] == "steady.bin"]
        return len(json.loads(found[0].read_text())["parts"]) if found else 0

    deadline = time.monotonic() + 30
    while True:
        before = steady_parts()
        job = only_job(stat_json(migration))
        after = steady_parts()
        if job["totals"]["failed"] == 1:
            break
        assert job["state"] == "Running" and time.monotonic() < deadline, job
    # Still Running (steady.bin goes on): only steady.bin's parts are being sent now.
    assert job["state"] == "Running" and after < 32, "steady.bin finished first; slow it down"
    assert job["totals"]["failed_bytes"] == 32 * MiB and job["totals"]["done_bytes"] == 0
    # progress.json is up to a second old (~4 MiB of steady.bin); doomed.bin's >= 4 MiB are gone.
    assert (before - 5) * MiB <= job["sending_bytes"] <= (after + 1) * MiB, (before, job["sending_bytes"], after)

    _, end = sample_until_finished(migration)
    assert (end["state"], end["sending_bytes"]) == ("Failed", 0)
    assert (end["totals"]["done_bytes"], end["totals"]["failed_bytes"]) == (32 * MiB, 32 * MiB)
    words = checked_stat(migration.console("stat"))
    assert words.splitlines()[0] == "JobName:local_test" and "Traceback" not in words
    assert "Bytes:32.0 MiB/64.0 MiB (50.0%) done, failed 32.0 MiB" in words.splitlines()
    assert set(dest_objects(migration.bucket)) == {"steady.bin"}
    assert_migrated(migration.bucket, {"steady.bin": steady})


def test_a_resumed_multipart_upload_counts_its_uploaded_parts_once(migration, emulator):
    size = 32 * MiB
    big = write_big(migration.src / "big.bin", size)
    migration.write_conf(sys_props={"workerMaxThroughput(KB/s)": "4096"},
                         job_props={"multipartUploadThreshold": "1m", "multipartUploadPartSize": "1m",
                                    "uploadThreadNumPerLargeFile": "2"})
    migration.ok("submit", str(migration.job_file))
    migration.ok("start")
    deadline = time.monotonic() + 30
    while True:
        found = list(worker_tasks(migration).glob("*/multipart/*.json"))
        if found and len(json.loads(found[0].read_text())["parts"]) >= 8:
            break
        assert time.monotonic() < deadline, "the multipart upload never got going"
        time.sleep(0.05)
    os.kill(migration.service_pid(), signal.SIGKILL)
    adopted = len(json.loads(found[0].read_text())["parts"])  # what the checkpoint holds at the kill
    job = only_job(stat_json(migration))
    assert (job["state"], job["sending_bytes"], job["totals"]["done_bytes"]) == ("Abort", 0, 0)

    parts_before = operations(emulator, "UploadPart")
    migration.ok("start")
    running, end = sample_until_finished(migration)
    # The parts adopted from the checkpoint are at the destination: counted at once, never again.
    shown = [j["sending_bytes"] for j in running if j["sending_bytes"]]
    assert shown and all(adopted * MiB <= s <= size for s in shown), (adopted, shown)
    assert (end["state"], end["totals"]["done_bytes"], end["sending_bytes"]) == ("Succeed", size, 0)
    assert operations(emulator, "UploadPart") - parts_before == size // MiB - adopted
    assert_migrated(migration.bucket, {"big.bin": big})


def succeed_lines(audit_log: Path) -> list:
    """Keys an audit.log records as copied (``<date> <time> Succeed <key>``), one per line. A
    task dispatched and not started yet has none (no audit.log)."""
    if not audit_log.exists():
        return []
    fields = [line.split(" ") for line in audit_log.read_text().splitlines()]
    return [f[3] for f in fields if len(f) >= 4 and f[2] == "Succeed"]


def test_stat_after_kill_9_counts_the_files_done_and_import_sh_resumes_from_there(migration, emulator):
    files = {f"d{i % 3}/f{i:03d}.bin": os.urandom(64 * 1024) for i in range(300)}
    write_tree(migration.src, files)
    # 2 MiB/s: the 18.8 MiB job takes ~9 s; it is killed about a third of the way.
    migration.write_conf(sys_props={"workerMaxThroughput(KB/s)": "2048"})
    migration.ok("submit", str(migration.job_file))
    migration.ok("start")
    def running_task_logged_a_file() -> bool:
        # The kill must find a running task with files done, or the audit.log path goes untested.
        return any(succeed_lines(p) for p in worker_tasks(migration).glob("*/audit.log"))

    deadline = time.monotonic() + 30
    while only_job(stat_json(migration))["totals"]["done_files"] < 100 or not running_task_logged_a_file():
        assert time.monotonic() < deadline, "the job never got a third of the way"
        time.sleep(0.05)
    os.kill(migration.service_pid(), signal.SIGKILL)
    # The emulator may still be finishing a PUT the dead service had sent: count once it is still.
    puts_at_kill = operations(emulator, "PutObject")
    while True:
        time.sleep(0.5)
        now = operations(emulator, "PutObject")
        if now == puts_at_kill:
            break
        puts_at_kill = now

    r = migration.console("stat")
    out = checked_stat(r)
    assert r.returncode == 1 and out.splitlines()[0] == "JobName:local_test" and "Traceback" not in out + r.stderr
    assert "JobState:Abort" in out.splitlines()
    finished = sum(json.loads((d / "COUNTS").read_text())["succeed"] for d in migration.task_dirs("succeed_tasks"))
    dispatched = [p.name for p in (migration.job_dir / "dispatched" / "localhost").iterdir()]
    logged = sum(len(set(succeed_lines(worker_tasks(migration) / t / "audit.log"))) for t in dispatched)
    done = finished + logged
    assert dispatched and logged > 0 and 100 <= done < 300, (finished, logged)
    assert f"Files:{done}/300 done, succeed {done}, skipped 0, failed 0" in out.splitlines()
    assert (f"Bytes:{done * 64 / 1024:.1f} MiB/18.8 MiB ({100 * done / 300:.1f}%) done, failed 0 B"
            in out.splitlines()), out
    job = only_job(stat_json(migration))
    assert (job["totals"]["done_files"], job["totals"]["done_bytes"]) == (done, done * 64 * 1024)

    proc = subprocess.run(["bash", str(ROOT / "import.sh"), "--sys", str(migration.sys_file), "--interval", "0.3",
                           "--no", str(migration.job_file)], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=120)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "Traceback" not in out + proc.stderr
    assert out.splitlines()[:2] == [
        "Job local_test already exists. Clean it and start over (y), or resume it (n)? [n]",
        f"resuming job:local_test as submitted; done so far: {done}/300 files "
        f"({done * 64 / 1024:.1f} MiB/18.8 MiB), failed 0, JobState:Abort"], out
    assert "Job local_test succeeded: 300 files copied and verified" in out
    # A file logged done before the kill is not sent again; the ones in flight then are, once.
    assert operations(emulator, "PutObject") - puts_at_kill == 300 - done
    keys = [k for d in migration.task_dirs("succeed_tasks") for k in succeed_lines(d / "audit.log")]
    assert sorted(keys) == sorted(files), "a file copied twice, or not at all"
    assert_migrated(migration.bucket, files)


def test_a_part_sent_again_after_a_failure_is_counted_once(migration, emulator):
    size = 32 * MiB
    big = write_big(migration.src / "big.bin", size)
    migration.write_conf(sys_props={"workerMaxThroughput(KB/s)": "6144"},
                         job_props={"multipartUploadThreshold": "1m", "multipartUploadPartSize": "1m",
                                    "uploadThreadNumPerLargeFile": "2"})
    migration.ok("submit", str(migration.job_file))
    migration.ok("start")

    def checkpointed_parts() -> int:
        found = list(worker_tasks(migration).glob("*/multipart/*.json"))
        return len(json.loads(found[0].read_text())["parts"]) if found else 0

    deadline = time.monotonic() + 30
    while checkpointed_parts() < 4:
        assert time.monotonic() < deadline, "the multipart upload never got going"
        time.sleep(0.05)
    # Every part refused for 2.5 s: each one in flight is read and sent again, a few times (its
    # five attempts span more than 5 s, so none gives up).
    faults_before = emulator.stats()["faults_injected"].get("500", 0)
    emulator.set_faults("500:1.0:UploadPart")
    time.sleep(2.5)
    emulator.set_faults(None)
    assert emulator.stats()["faults_injected"].get("500", 0) - faults_before >= 4
    for _ in range(4):
        job = only_job(stat_json(migration))
        after = checkpointed_parts()
        if job["state"] != "Running" or after >= size // MiB:
            break
        # Two parts in flight at most, each counted once however often it was sent.
        assert 0 < job["sending_bytes"] <= (after + 2) * MiB, (job["sending_bytes"], after)
    _, end = sample_until_finished(migration)
    assert (end["state"], end["totals"]["done_bytes"], end["sending_bytes"]) == ("Succeed", size, 0)
    assert_migrated(migration.bucket, {"big.bin": big})


def test_after_ctrl_c_import_sh_says_what_was_done_before_resuming(migration):
    files = {f"f{i:03d}.bin": os.urandom(64 * 1024) for i in range(120)}
    write_tree(migration.src, files)
    migration.write_conf(sys_props={"workerMaxThroughput(KB/s)": "1024"})  # ~7.5 s for 7.5 MiB
    cmd = ["bash", str(ROOT / "import.sh"), "--sys", str(migration.sys_file), "--interval", "0.3", "--no",
           str(migration.job_file)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            m = re.search(r"Running: files (\d+)/120 ", line)
            if m and int(m.group(1)) >= 20:
                os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends a terminal's foreground group
                break
        out = "".join(seen) + proc.communicate(timeout=30)[0]
    finally:
        proc.kill()
    assert proc.returncode == 130 and "Traceback" not in out, out
    # Without a terminal, Ctrl-C stops the service this import.sh started, and says how to go on.
    assert out.strip().splitlines()[-1].startswith("job local_test stopped where it was: 'bash import.sh'"), out
    shown = int(re.findall(r"Running: files (\d+)/120 ", out)[-1])

    r = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
    assert r.returncode == 0 and "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
    first, resumed = r.stdout.splitlines()[:2]
    assert first == "Job local_test already exists. Clean it and start over (y), or resume it (n)? [n]"
    m = re.fullmatch(r"resuming job:local_test as submitted; done so far: (\d+)/120 files "
                     r"\(([\d.]+) MiB/7\.5 MiB\), failed 0, JobState:Abort", resumed)
    assert m and shown <= int(m.group(1)) < 120, resumed
    assert f"{int(m.group(1)) * 64 / 1024:.1f}" == m.group(2)
    assert "Job local_test succeeded: 120 files copied and verified" in r.stdout
    assert_migrated(migration.bucket, files)
