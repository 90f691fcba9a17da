"""Aggregate throughput of one distributed job over 1, 2 and 3 workers, each capped.

    .venv/bin/python bench/distributed_scaling.py                  # 400 files of 256 KiB, 4096 KB/s per worker
    .venv/bin/python bench/distributed_scaling.py --files 400 --size 256k --cap 4096

Needs root and sshd (tests/setup_system.sh installs it): it starts the test fleet of sshd hosts
(127.0.0.11-13, each in its own mount namespace, see tests/fleet.py) and the OSS emulator, deploys
the agent once, then runs the same job with the first 1, 2 and 3 hosts in workers.txt through the
real console.sh. The time runs from `console.sh start` to the finish of the last task (epoch-ms
in the succeed_tasks folder names); every object is verified by the job and counted at the end.
The per-worker cap (workerMaxThroughput(KB/s)) makes the scaling visible on a small machine.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import oss2  # noqa: E402

from fleet import start_fleet  # noqa: E402
from ossimport_dist.config import parse_size  # noqa: E402
from oss_emulator import start_process  # noqa: E402


JOB_TIMEOUT_S = 900


def console(conf: Path, workers: Path, *args, timeout=900, ok=(0,)) -> str:
    r = subprocess.run(["bash", str(ROOT / "console.sh"), "--sys", str(conf / "sys.properties"),
                        "--workers", str(workers), *args], capture_output=True, text=True, timeout=timeout)
    if r.returncode not in ok:
        raise SystemExit(f"console {args} failed: {r.stdout}{r.stderr}")
    return r.stdout


def measure(files: int, size: int, cap_kb: int, threads: int, rounds: int = 1, log=print) -> list:
    """One dict per run (workers, seconds, MiB/s, ideal, shares), ``rounds`` times 1, 2, 3 workers."""
    fleet = start_fleet()
    work = Path(tempfile.mkdtemp(prefix="ossimport-bench-"))
    nas = Path(tempfile.mkdtemp(prefix="ossimport-nas-", dir="/srv"))
    secret = secrets.token_hex(16)
    emu = start_process(str(work / "oss"), "bench", secret)
    rows = []
    try:
        os.chmod(nas, 0o755)
        for i in range(files):
            p = nas / f"d{i % 20:02d}" / f"f{i:05d}.bin"
            p.parent.mkdir(exist_ok=True, mode=0o755)
            p.write_bytes(os.urandom(size))
            p.chmod(0o644)
        conf = work / "conf"
        conf.mkdir()
        (conf / "sys.properties").write_text(
            f"workingDir={fleet.working_dir}\nworkerUserName={fleet.user}\nprivateKeyFile={fleet.key_file}\n"
            f"sshKnownHostsFile={fleet.known_hosts}\nworkerTaskThreadNum={threads}\n"
            f"workerMaxThroughput(KB/s)={cap_kb}\n")
        workers = work / "workers.txt"
        fleet.write_workers_file(workers, fleet.hosts)
        log("deploying ...")
        console(conf, workers, "deploy")
        for round_no in range(rounds):
            for n in (1, 2, 3):
                row = one_job(fleet, emu.endpoint, secret, conf, workers, nas, n, files, size,
                              f"{n}_{round_no}")
                row.update(workers=n, round=round_no, ideal_mib_per_s=n * cap_kb / 1024)
                row["share_of_ideal"] = row["mib_per_s"] / row["ideal_mib_per_s"]
                row["steady_share"] = row["steady_mib_per_s"] / row["ideal_mib_per_s"]
                rows.append(row)
                log(f"{n} worker(s), each capped at {cap_kb} KB/s: {files} x {size} B in "
                    f"{row['seconds']:.1f} s, "
                    f"{row['mib_per_s']:.2f} MiB/s aggregate ({row['share_of_ideal']:.0%} of {n} x the cap); "
                    f"steady state {row['steady_mib_per_s']:.2f} MiB/s ({row['steady_share']:.0%})")
    finally:
        emu.stop()
        fleet.close()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(nas, ignore_errors=True)
    return rows


def one_job(fleet, endpoint: str, secret: str, conf: Path, workers: Path, nas: Path, n: int, files: int,
            size: int, tag: str) -> dict:
    bucket_name = f"bench-{tag.replace('_', '-')}"
    bucket = oss2.Bucket(oss2.Auth("bench", secret), endpoint, bucket_name)
    bucket.create_bucket()
    job = f"scale_{tag}"
    (conf / "job.cfg").write_text(
        f"jobName={job}\nsrcPrefix={nas}/\ndestDomain={endpoint}\ndestBucket={bucket_name}\n"
        f"destAccessKey=bench\ndestSecretKey={secret}\ntaskObjectCountLimit=10\n")
    (conf / "job.cfg").chmod(0o600)
    fleet.write_workers_file(workers, fleet.hosts[:n])
    console(conf, workers, "submit", str(conf / "job.cfg"))
    t0 = time.time()
    console(conf, workers, "start")
    while True:
        # stat's exit code: 0 Succeed, 1 Failed, 3 still running
        out = console(conf, workers, "stat", job, ok=(0, 1, 3))
        if "JobState:Succeed" in out or "JobState:Failed" in out:
            break
        if time.time() - t0 > JOB_TIMEOUT_S:
            raise SystemExit(f"job {job} not finished after {JOB_TIMEOUT_S} s:\n{out}")
        time.sleep(0.5)
    done = Path(fleet.working_dir) / "master" / "jobs" / job / "succeed_tasks"
    finish_ms = sorted(int(d.split("_")[1].split("@")[0]) for d in os.listdir(done))
    t1 = finish_ms[-1] / 1000
    # Steady state: the tasks that finished after the first one, over the time they took.
    steady = (len(finish_ms) - 1) * 10 * size / ((finish_ms[-1] - finish_ms[0]) / 1000) / (1 << 20)
    console(conf, workers, "stop")
    listed = sum(1 for _ in oss2.ObjectIteratorV2(bucket))
    assert "JobState:Succeed" in out and listed == files, (out, listed)
    console(conf, workers, "clean", job)
    return {"seconds": t1 - t0, "mib_per_s": files * size / (t1 - t0) / (1 << 20), "steady_mib_per_s": steady}


def runs(quick: bool, rounds: int) -> list:
    """suite.py's rows of this case (bench/run.sh --cases fleet)."""
    from suite import Run

    files, size, cap, threads = (120 if quick else 400), 256 << 10, 4096, 8
    out = []
    for r in measure(files, size, cap, threads, rounds=rounds,
                     log=lambda line: print(line, flush=True)):
        name = f"{r['workers']} worker" + ("s" if r["workers"] > 1 else "")
        out.append(Run("fleet", name, r["round"], files, size, r["seconds"], 0.0,
                       extra={k: r[k] for k in ("workers", "ideal_mib_per_s", "share_of_ideal",
                                                "steady_share", "steady_mib_per_s")},
                       command=f"bench/distributed_scaling.py --files {files} --size 256k --cap {cap} "
                               f"--threads {threads}"))
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=400)
    ap.add_argument("--size", default="256k")
    ap.add_argument("--cap", type=int, default=4096, help="workerMaxThroughput(KB/s) of each worker")
    ap.add_argument("--threads", type=int, default=8)
    args = ap.parse_args()
    measure(args.files, parse_size(args.size), args.cap, args.threads,
            log=lambda line: print(line, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
