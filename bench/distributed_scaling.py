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


def console(conf: Path, workers: Path, *args, timeout=900) -> str:
    r = subprocess.run(["bash", str(ROOT / "console.sh"), "--sys", str(conf / "sys.properties"),
                        "--workers", str(workers), *args], capture_output=True, text=True, timeout=timeout)
    if r.returncode:
        raise SystemExit(f"console {args} failed: {r.stdout}{r.stderr}")
    return r.stdout


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=400)
    ap.add_argument("--size", default="256k")
    ap.add_argument("--cap", type=int, default=4096, help="workerMaxThroughput(KB/s) of each worker")
    ap.add_argument("--threads", type=int, default=8)
    args = ap.parse_args()
    size = parse_size(args.size)
    fleet = start_fleet()
    work = Path(tempfile.mkdtemp(prefix="ossimport-bench-"))
    nas = Path(tempfile.mkdtemp(prefix="ossimport-nas-", dir="/srv"))
    secret = secrets.token_hex(16)
    emu = start_process(str(work / "oss"), "bench", secret)
    try:
        os.chmod(nas, 0o755)
        for i in range(args.files):
            p = nas / f"d{i % 20:02d}" / f"f{i:05d}.bin"
            p.parent.mkdir(exist_ok=True, mode=0o755)
            p.write_bytes(os.urandom(size))
            p.chmod(0o644)
        conf = work / "conf"
        conf.mkdir()
        (conf / "sys.properties").write_text(
            f"workingDir={fleet.working_dir}\nworkerUserName={fleet.user}\nprivateKeyFile={fleet.key_file}\n"
            f"sshKnownHostsFile={fleet.known_hosts}\nworkerTaskThreadNum={args.threads}\n"
            f"workerMaxThroughput(KB/s)={args.cap}\n")
        workers = work / "workers.txt"
        fleet.write_workers_file(workers, fleet.hosts)
        print("deploying ...", flush=True)
        console(conf, workers, "deploy")
        rows = []
        for n in (1, 2, 3):
            bucket_name = f"bench-{n}"
            bucket = oss2.Bucket(oss2.Auth("bench", secret), emu.endpoint, bucket_name)
            bucket.create_bucket()
            job = f"scale_{n}"
            (conf / "job.cfg").write_text(
                f"jobName={job}\nsrcPrefix={nas}/\ndestDomain={emu.endpoint}\ndestBucket={bucket_name}\n"
                f"destAccessKey=bench\ndestSecretKey={secret}\ntaskObjectCountLimit=10\n")
            (conf / "job.cfg").chmod(0o600)
            fleet.write_workers_file(workers, fleet.hosts[:n])
            console(conf, workers, "submit", str(conf / "job.cfg"))
            t0 = time.time()
            console(conf, workers, "start")
            while True:
                out = console(conf, workers, "stat", job)
                if "JobState:Succeed" in out or "JobState:Failed" in out:
                    break
                time.sleep(0.5)
            done = Path(fleet.working_dir) / "master" / "jobs" / job / "succeed_tasks"
            finish_ms = sorted(int(d.split("_")[1].split("@")[0]) for d in os.listdir(done))
            t1 = finish_ms[-1] / 1000
            # Steady state: the tasks that finished after the first one, over the time they took.
            steady = (len(finish_ms) - 1) * 10 * size / ((finish_ms[-1] - finish_ms[0]) / 1000) / (1 << 20)
            console(conf, workers, "stop")
            listed = sum(1 for _ in oss2.ObjectIteratorV2(bucket))
            assert "JobState:Succeed" in out and listed == args.files, (out, listed)
            mib_s = args.files * size / (t1 - t0) / (1 << 20)
            rows.append((n, t1 - t0, mib_s))
            print(f"{n} worker(s), each capped at {args.cap} KB/s: {args.files} x {args.size} in {t1 - t0:.1f} s, "
                  f"{mib_s:.2f} MiB/s aggregate ({mib_s / (args.cap / 1024):.2f} x one worker's cap); "
                  f"steady state {steady:.2f} MiB/s ({steady / (args.cap / 1024):.2f} x)", flush=True)
            console(conf, workers, "clean", job)
    finally:
        emu.stop()
        fleet.close()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(nas, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
