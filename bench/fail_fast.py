"""How fast and how briefly a job that cannot work says so, through the real import.sh.

    .venv/bin/python bench/fail_fast.py --files 3000

For a wrong secret, a missing bucket and a dead port (into the bundled OSS emulator), runs
``bash import.sh --yes`` on a tree of ``--files`` small files, once as is (preflight) and once
with ``--no-preflight`` (the job meets the failure while copying), and prints the exit code, the
seconds from start to exit, the lines printed, and the last line, which names the fix.
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import oss2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ossimport_dist.config import write_properties  # noqa: E402
from oss_emulator import start_process  # noqa: E402

KEY_ID = "bench-key"


def dead_endpoint() -> str:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def run_case(workdir: Path, job: dict, extra: list) -> tuple:
    conf = workdir / "conf"
    conf.mkdir(exist_ok=True)
    subprocess.run(["rm", "-rf", str(workdir / "work")], check=True)
    write_properties(conf / "sys.properties", {"workingDir": str(workdir / "work"), "workerTaskThreadNum": "8"})
    write_properties(conf / "local_job.cfg", job, mode=0o600)
    began = time.monotonic()
    r = subprocess.run(["bash", str(ROOT / "import.sh"), "--sys", str(conf / "sys.properties"), "--interval", "1",
                        "--yes", *extra, str(conf / "local_job.cfg")], capture_output=True, text=True, timeout=300)
    lines = (r.stdout + r.stderr).strip().splitlines()
    failure = [line for line in lines if line.startswith(("error:", "Job "))]
    return r.returncode, time.monotonic() - began, len(lines), (failure or lines or [""])[-1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=3000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="fail-fast-") as tmp:
        workdir = Path(tmp)
        for i in range(args.files):
            p = workdir / "src" / f"d{i % 30:02d}" / f"f{i:05d}.bin"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(os.urandom(2000))
        secret = secrets.token_hex(16)
        emulator = start_process(data_dir=str(workdir / "oss"), access_key_id=KEY_ID, secret=secret)
        try:
            oss2.Bucket(oss2.Auth(KEY_ID, secret), emulator.endpoint, "bench").create_bucket()
            good = {"jobName": "fail_fast", "srcType": "local", "srcPrefix": f"{workdir / 'src'}/",
                    "destDomain": emulator.endpoint, "destBucket": "bench", "destAccessKey": KEY_ID,
                    "destSecretKey": secret, "taskObjectCountLimit": "100"}
            cases = {"wrong secret": {"destSecretKey": "wrong-" + secret}, "missing bucket": {"destBucket": "absent"},
                     "dead port": {"destDomain": dead_endpoint()}}
            print(f"{args.files} files; import.sh --yes; exit code, seconds, lines printed, the line that says why")
            for name, change in cases.items():
                for extra in ([], ["--no-preflight"]):
                    code, seconds, lines, last = run_case(workdir, {**good, **change}, extra)
                    label = f"{name}{' --no-preflight' if extra else ''}"
                    print(f"{label:<30} exit {code}  {seconds:5.1f} s  {lines:4d} lines  {last[:160]}")
        finally:
            emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
