"""Scan and split of a large key manifest by the real master process: entries/s, peak RSS.

    .venv/bin/python bench/scan_split.py --entries 1000000

A manifest (srcType=list, ``key<TAB>size`` per line, 1,000 folders) is submitted through
``console.sh`` as a distributed job whose only worker host answers nothing (a closed port on
loopback): the master lists the manifest and cuts its tasks exactly as it does for a real fleet,
and no transfer runs beside it to share the cores or the process. The time runs from
``console.sh start`` to the moment the job's scan is finished (its queue marker gone, polled
every 20 ms); the master's peak resident memory is its VmHWM from /proc, read before it stops,
and its CPU the process's own. Each run checks that the tasks cut hold every entry once.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from ossimport_dist.config import write_properties  # noqa: E402
from ossimport_dist.layout import TASK_FILE, Home, read_task_file  # noqa: E402

JOB = "scan_bench"
SCAN_TIMEOUT_S = 600


def write_manifest(path: Path, entries: int) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for start in range(0, entries, 10_000):
            end = min(entries, start + 10_000)
            f.write("".join(f"d{i % 1000:03d}/f{i:07d}.bin\t4096\n" for i in range(start, end)))


def closed_port() -> int:
    with socket.socket() as s:  # free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


def console(conf: Path, *args, timeout: float = 300) -> str:
    r = subprocess.run(["bash", str(ROOT / "console.sh"), "--sys", str(conf / "sys.properties"), "--workers",
                        str(conf / "workers.txt"), *args], capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    if r.returncode:
        raise SystemExit(f"console {' '.join(args)} failed ({r.returncode}): {(r.stdout + r.stderr)[-2000:]}")
    return r.stdout


def one_run(workdir: Path, manifest: Path, entries: int) -> dict:
    conf = workdir / "conf"
    conf.mkdir(parents=True)
    (workdir / "source").mkdir()  # empty: the entries are never read, only listed and cut
    home_dir = workdir / "work"
    write_properties(conf / "sys.properties", {"workingDir": str(home_dir), "workerUserName": "nobody",
                                               "privateKeyFile": str(conf / "no-key")}, mode=0o644)
    (conf / "workers.txt").write_text(f"127.0.0.1:{closed_port()}\n")
    write_properties(conf / "job.cfg", {
        "jobName": JOB, "srcType": "list", "listFilePath": str(manifest), "listSrcType": "local",
        "srcPrefix": str(workdir / "source") + "/", "destDomain": f"http://127.0.0.1:{closed_port()}",
        "destBucket": "bench", "destAccessKey": "bench", "destSecretKey": "bench"}, mode=0o600)
    console(conf, "submit", "--no-preflight", str(conf / "job.cfg"))
    job = Home(home_dir).job(JOB)
    began = time.monotonic()
    console(conf, "start", "--no-preflight")
    pid = int((home_dir / "master" / "ossimport.pid").read_text().split()[0])
    try:
        while not job.scan_finished:
            if time.monotonic() - began > SCAN_TIMEOUT_S:
                raise SystemExit(f"the scan of {entries} entries did not finish in {SCAN_TIMEOUT_S} s")
            if not psutil.pid_exists(pid):
                raise SystemExit(f"the master (pid {pid}) died while scanning; see {home_dir / 'logs'}")
            time.sleep(0.02)
        seconds = time.monotonic() - began
        rss = peak_rss_mb(pid)
        cpu = psutil.Process(pid).cpu_times()
    finally:
        console(conf, "stop", timeout=120)
    tasks, listed = count_tasks(job)
    if listed != entries:
        raise SystemExit(f"the tasks cut hold {listed} entries, the manifest {entries}")
    return {"seconds": seconds, "entries": entries, "entries_per_s": entries / seconds, "peak_rss_mb": rss,
            "master_cpu_s": cpu.user + cpu.system, "tasks": tasks}


def count_tasks(job) -> tuple:
    """(tasks, entries in them): every task the scan cut, wherever it is now, read as the
    worker reads it (read_task_file checks each against its header)."""
    tasks = entries = 0
    for task_file in job.root.rglob(TASK_FILE):
        tasks += 1
        entries += len(read_task_file(task_file).objects)
    return tasks, entries


def runs(workdir: Path, entries: int, repeat: int) -> list:
    """suite.py's rows of this case."""
    from suite import Run

    workdir.mkdir(parents=True)
    manifest = workdir / "keys.list"
    write_manifest(manifest, entries)
    out = []
    for round_no in range(repeat):
        r = one_run(workdir / f"run-{round_no}", manifest, entries)
        out.append(Run("scan", "ours-scan", round_no, entries, 0, r["seconds"], r["master_cpu_s"],
                       extra={k: r[k] for k in ("entries", "entries_per_s", "peak_rss_mb", "tasks")},
                       command=f"console.sh submit + start (distributed, srcType=list, {entries:,} entries)"))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--entries", type=int, default=1_000_000)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ossimport-scan-") as d:
        manifest = Path(d) / "keys.list"
        write_manifest(manifest, a.entries)
        r = one_run(Path(d) / "run", manifest, a.entries)
    print(f"{r['entries']:,} entries in {r['seconds']:.2f} s: {r['entries_per_s']:,.0f} entries/s, "
          f"{r['tasks']} tasks, master peak RSS {r['peak_rss_mb']:.0f} MB, CPU {r['master_cpu_s']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
