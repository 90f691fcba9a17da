"""Throughput of a standalone job into the bundled OSS emulator, through the real console.sh.

    .venv/bin/python bench/standalone_emulator.py --files 2000 --size 4k
    .venv/bin/python bench/standalone_emulator.py --files 4 --size 64m

Times the job from `console.sh start` to the moment its last task finished (the epoch-ms in
the succeed_tasks folder names), and reports objects/s, MiB/s and the CPU seconds spent by the
service and by the emulator (both on this machine's cores). Every object is verified by the
job itself (CRC64), and the script checks the destination's object count.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import oss2
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ossimport_dist.config import parse_size  # noqa: E402
from oss_emulator import start_process  # noqa: E402


def console(sys_file: Path, *args, exits=(0,)) -> str:
    """``exits``: the exit codes that are no failure (stat exits 3 while the job runs)."""
    r = subprocess.run(["bash", str(ROOT / "console.sh"), "--sys", str(sys_file), *args],
                       capture_output=True, text=True, timeout=600)
    if r.returncode not in exits:
        raise SystemExit(f"console {args} failed: {r.stdout}{r.stderr}")
    return r.stdout


def cpu_seconds(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def make_source(src: Path, files: int, size: int) -> None:
    """``files`` files of ``size`` random bytes, spread over 50 folders."""
    for i in range(files):
        p = src / f"d{i % 50:02d}" / f"file-{i:06d}.bin"
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "wb") as f:
            remaining = size
            while remaining:
                n = min(remaining, 8 << 20)
                f.write(os.urandom(n))
                remaining -= n


def run(files: int, size: int, threads: int, audit: bool, part: str, threshold: str, workdir: Path) -> dict:
    src = workdir / "src"
    make_source(src, files, size)
    secret = secrets.token_hex(16)
    emu = start_process(str(workdir / "oss"), "bench", secret)
    try:
        bucket = oss2.Bucket(oss2.Auth("bench", secret), emu.endpoint, "bench")
        bucket.create_bucket()
        conf = workdir / "conf"
        conf.mkdir()
        sys_file = conf / "sys.properties"
        sys_file.write_text(f"workingDir={workdir / 'work'}\nworkerTaskThreadNum={threads}\n"
                            "workerMaxThroughput(KB/s)=0\n")
        job_file = conf / "local_job.cfg"
        job_file.write_text(f"jobName=local_test\nsrcPrefix={src}/\ndestDomain={emu.endpoint}\n"
                            f"destBucket=bench\ndestAccessKey=bench\ndestSecretKey={secret}\n"
                            f"isAuditAfterImport={'true' if audit else 'false'}\n"
                            f"multipartUploadPartSize={part}\nmultipartUploadThreshold={threshold}\n")
        os.chmod(job_file, 0o600)
        console(sys_file, "submit", str(job_file))
        emu_cpu0 = cpu_seconds(emu.proc.pid)
        t0 = time.time()
        console(sys_file, "start")
        pid = int((workdir / "work" / "master" / "ossimport.pid").read_text())
        while True:
            out = console(sys_file, "stat", exits=(0, 3))
            if "JobState:Succeed" in out or "JobState:Failed" in out:
                break
            time.sleep(0.2)
        svc_cpu = cpu_seconds(pid)
        emu_cpu = cpu_seconds(emu.proc.pid) - emu_cpu0
        done = workdir / "work" / "master" / "jobs" / "local_test" / "succeed_tasks"
        t1 = max(int(n.split("_")[1].split("@")[0]) for n in os.listdir(done)) / 1000.0
        console(sys_file, "stop")
        listed = sum(1 for _ in oss2.ObjectIteratorV2(bucket))
        assert "JobState:Succeed" in out and listed == files, (out, listed)
    finally:
        emu.stop()
    elapsed = t1 - t0
    return {"files": files, "size": size, "threads": threads, "audit": audit, "seconds": elapsed,
            "objects_per_s": files / elapsed, "mib_per_s": files * size / elapsed / (1 << 20),
            "service_cpu_s": svc_cpu, "emulator_cpu_s": emu_cpu}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--size", default="4k")
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--part", default="50m", help="multipartUploadPartSize")
    ap.add_argument("--threshold", default="150m", help="multipartUploadThreshold")
    ap.add_argument("--no-audit", action="store_true", help="isAuditAfterImport=false")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="ossimport-bench-") as d:
            r = run(args.files, parse_size(args.size), args.threads, not args.no_audit, args.part, args.threshold, Path(d))
        print(f"{r['files']} x {args.size}: {r['seconds']:.2f} s, {r['objects_per_s']:.0f} objects/s, "
              f"{r['mib_per_s']:.1f} MiB/s, threads {r['threads']}, audit {'on' if r['audit'] else 'off'}, "
              f"CPU: service {r['service_cpu_s']:.1f} s, emulator {r['emulator_cpu_s']:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
