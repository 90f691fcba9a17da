"""``import.sh --demo`` (``python -m oss_emulator.demo``): the one-click flow on a sample folder
into the bundled OSS emulator.

Everything lives under ``demo/`` in the install directory: ``sample/`` (the source, made here:
nested folders, awkward names, an empty file and one file large enough for a multipart upload),
``oss-data/`` (the emulator's disk), ``conf/`` (the demo's sys.properties and local_job.cfg) and
``work/`` (the job's state tree). Each run starts the demo job afresh and leaves nothing running.
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import signal
import sys
from pathlib import Path

import oss2

from ossimport_dist import config as config_mod
from ossimport_dist.cli import console
from ossimport_dist.cli.oneclick import Asker, run_flow
from ossimport_dist.errors import OperatorError
from ossimport_dist.layout import LOCAL_JOB_CONFIG, SYS_PROPERTIES, Home
from ossimport_dist.status import human_bytes

from . import start_process

DEMO_BUCKET = "ossimport-demo"
DEMO_JOB = "local_test"
DEMO_KEY_ID = "demo-access-key-id"

SAMPLE_NAMES = [
    "readme.txt",
    "empty-file",
    "docs/report 2024.pdf",
    "docs/notes#1.md",
    "docs/100% done.txt",
    "docs/a+b=c.txt",
    "图片/猫.jpg",
    "图片/日本語のファイル.txt",
    "deep/" + "/".join(f"level{i}" for i in range(12)) + "/bottom.txt",
]


def make_sample(folder: Path, small_files: int = 200, large_bytes: int = 20 * 1024 * 1024) -> tuple:
    """A deterministic sample tree; returns (files, bytes)."""
    if folder.exists():
        shutil.rmtree(folder)
    files = total = 0

    def write(rel: str, data: bytes) -> None:
        nonlocal files, total
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        files += 1
        total += len(data)

    for i, name in enumerate(SAMPLE_NAMES):
        write(name, b"" if name == "empty-file" else (f"sample file {i}: {name}\n" * (i * 37 + 1)).encode())
    for i in range(small_files):
        write(f"logs/2024-{i % 12 + 1:02d}/app-{i:04d}.log", (f"line {i}\n" * (50 + i * 13)).encode())
    block = bytes(range(256)) * 4096  # 1 MiB
    write("video/big-movie.bin", (block * (large_bytes // len(block) + 1))[:large_bytes])
    return files, total


def run(install_dir: Path, interval: float = 1.0) -> int:
    root = install_dir / "demo"
    sample, oss_data, conf_dir, work = root / "sample", root / "oss-data", root / "conf", root / "work"
    for d in (oss_data, work):
        shutil.rmtree(d, ignore_errors=True)
    conf_dir.mkdir(parents=True, exist_ok=True)
    files, size = make_sample(sample)
    print(f"demo: sample folder {sample}: {files} files, {human_bytes(size)}")

    secret = secrets.token_hex(16)  # a fresh secret each run; it only ever sits in 0600 files
    emulator = start_process(data_dir=str(oss_data), access_key_id=DEMO_KEY_ID, secret=secret)
    try:
        print(f"demo: OSS emulator at {emulator.endpoint}, bucket {DEMO_BUCKET}")
        oss2.Bucket(oss2.Auth(DEMO_KEY_ID, secret), emulator.endpoint, DEMO_BUCKET).create_bucket()
        sys_file = conf_dir / SYS_PROPERTIES
        config_mod.write_properties(sys_file, {
            "workingDir": str(work), "workerTaskThreadNum": "16", "workerMaxThroughput(KB/s)": "0",
        }, comment="ossimport-dist demo (made by import.sh --demo)")
        job_file = conf_dir / LOCAL_JOB_CONFIG
        config_mod.write_properties(job_file, {
            "jobName": DEMO_JOB, "srcType": "local", "srcPrefix": sample.resolve().as_posix() + "/",
            "destDomain": emulator.endpoint, "destBucket": DEMO_BUCKET, "destPrefix": "demo/",
            "destAccessKey": DEMO_KEY_ID, "destSecretKey": secret,
            "taskObjectCountLimit": "50", "multipartUploadThreshold": "8m", "multipartUploadPartSize": "2m",
            "scanThreadCount": "2", "maxMultiThreadScanDepth": "1",
        }, comment="ossimport-dist demo job (made by import.sh --demo)")
        paths = console.Paths(install_dir, sys_file)
        code, stat = run_flow(paths, job_file, Asker(True), interval, max_retries=1)
        if code == 0:
            listed = sum(1 for _ in oss2.ObjectIteratorV2(
                oss2.Bucket(oss2.Auth(DEMO_KEY_ID, secret), emulator.endpoint, DEMO_BUCKET), prefix="demo/"))
            print(f"demo: the bucket now lists {listed} objects under demo/ (sample had {files} files); "
                  f"state tree in {Home(work).job(DEMO_JOB).root}")
            if listed != files:
                print("demo: object count differs from the sample folder", flush=True)
                code = 1
        else:
            console.stop_service(paths)
        return code
    finally:
        emulator.stop()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="import.sh --demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--install-dir", default=".")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between progress lines")
    # import.sh's own answer flag, accepted as before: the demo answers every question yes anyway.
    p.add_argument("--yes", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    # A script's 'timeout' or 'kill' ends the demo as Ctrl-C would: the emulator it started stops.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return run(Path(args.install_dir).resolve(), interval=args.interval)
    except OperatorError as exc:
        print(f"error: {config_mod.scrub_passwords(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("\ninterrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
