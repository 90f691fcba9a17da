"""The benchmark an operator can rerun: every case, every tool, in rotation, medians and ratios.

    bash bench/run.sh [--quick] [--repeat N] [--cases small-s3rver,large-emulator,...]

(run.sh installs what is needed, then runs this file with the project's venv.) The data sets
are generated once; each server starts once for its cases; in round r the tools run in the
order of the list rotated by r, so none always runs first on a cold server or last on a warm
one. Every run's objects are checked at the destination (sizes, and a sample by content).
The results go to docs/benchmarks.csv (one row per run), docs/benchmarks.md (the generated
section) and docs/benchmarks.png (report.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

import report  # noqa: E402
import versus  # noqa: E402
from ossimport_dist.config import parse_size  # noqa: E402
from standalone_emulator import make_source  # noqa: E402

MIB = 1 << 20
S3_TOOLS = ["ours-s3", "s5cmd", "rclone", "aws"]
EMULATOR_TOOLS = ["ours-oss", "ours-s3", "s5cmd", "rclone", "aws", "raw-ceiling"]


@dataclass(frozen=True)
class DataSet:
    name: str  # "small" or "large"
    files: int
    size: int

    @property
    def label(self) -> str:
        size = f"{self.size >> 20} MiB" if self.size >= MIB else f"{self.size >> 10} KiB"
        return f"{self.files:,} x {size}"


@dataclass(frozen=True)
class Case:
    name: str
    server: str  # "s3rver", "emulator", or "" for a case that starts what it needs itself
    data: str = ""
    tools: tuple = ()


CASES = [Case("small-s3rver", "s3rver", "small", tuple(S3_TOOLS)),
         Case("large-s3rver", "s3rver", "large", tuple(S3_TOOLS)),
         Case("small-emulator", "emulator", "small", tuple(EMULATOR_TOOLS)),
         Case("large-emulator", "emulator", "large", tuple(EMULATOR_TOOLS)),
         Case("scan", ""), Case("fleet", "")]


@dataclass
class Run:
    """One tool's run on one case: one row of docs/benchmarks.csv."""

    case: str
    tool: str
    round: int
    files: int
    size: int
    seconds: float
    tool_cpu_s: float
    server_cpu_s: float = 0.0
    job_s: float = 0.0  # ours: command start to the job's last task (the rest is polling and stop)
    extra: dict = field(default_factory=dict)  # per case: entries/s, peak RSS, share of ideal, ...
    command: str = ""

    @property
    def objects_per_s(self) -> float:
        return self.files / self.seconds if self.seconds else 0.0

    @property
    def mib_per_s(self) -> float:
        return self.files * self.size / self.seconds / MIB if self.seconds else 0.0


def data_sets(quick: bool) -> dict:
    if quick:
        return {"small": DataSet("small", 1000, 4 << 10), "large": DataSet("large", 4, 16 << 20)}
    return {"small": DataSet("small", 10000, 4 << 10), "large": DataSet("large", 8, 128 << 20)}


def raw_ceiling(server: versus.Server, bucket: str, data: DataSet) -> Run:
    """The emulator's own ceiling: bench/raw_ceiling.py's tight loop of raw PUTs (16 threads),
    CPU per object of its client and of the server, from its --json line."""
    cmd = [sys.executable, str(ROOT / "bench" / "raw_ceiling.py"), "--endpoint", server.endpoint,
           "--bucket", bucket, "--key-id", server.access_key, "--secret", server.secret_key,
           "--files", str(data.files), "--size", str(data.size), "--threads", "16",
           "--server-pid", str(server.pid), "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, stdin=subprocess.DEVNULL)
    if out.returncode:
        raise SystemExit(f"raw_ceiling.py failed ({out.returncode}): {(out.stdout + out.stderr)[-2000:]}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return Run("", "raw-ceiling", 0, data.files, data.size, data.files / r["objects_per_s"],
               r["client_cpu_ms"] * data.files / 1000, (r["server_cpu_ms"] or 0.0) * data.files / 1000,
               command=shown(cmd[1:], {server.secret_key: "SECRET", server.endpoint: "ENDPOINT",
                                       bucket: "BUCKET", f"--server-pid {server.pid}": "--server-pid PID"}))


def run_tool(tool: str, server: versus.Server, data: DataSet, src: Path, workdir: Path) -> Run:
    workdir.mkdir(parents=True)
    bucket = "bench-" + uuid.uuid4().hex[:12]
    server.client().create_bucket(Bucket=bucket)
    prefix = tool
    server_cpu0 = versus.process_cpu(server.pid)
    if tool == "raw-ceiling":
        run = raw_ceiling(server, bucket, data)
    else:
        cmd, env = versus.operator_command(tool, server, bucket, prefix, src, workdir)
        began = time.time()
        seconds, cpu = versus.run_tool(cmd, env, log=workdir / "output.log")
        run = Run("", tool, 0, data.files, data.size, seconds, cpu,
                  command=shown(cmd, {str(workdir): "RUN", str(src): "DATA", server.endpoint: "ENDPOINT",
                                      bucket: "BUCKET"}))
        if tool.startswith("ours"):
            run.command += f" (destType={'oss' if tool == 'ours-oss' else 's3'})"
            run.job_s = versus.last_task_finish(workdir) - began
        run.server_cpu_s = versus.process_cpu(server.pid) - server_cpu0
        versus.check_prefix(server, bucket, prefix, src, data.files)
    if data.size >= MIB and tool != "raw-ceiling":
        versus.empty_bucket(server, bucket, prefix, src)
    return run


def shown(cmd: list, names: dict) -> str:
    """A command as the tables print it: this run's paths, endpoint and bucket by name."""
    text = " ".join(str(c) for c in cmd).replace(str(ROOT) + "/", "")
    for value, name in names.items():
        text = text.replace(value, name)
    return text


def copy_cases(cases: list, sets: dict, srcs: dict, repeat: int, workdir: Path, sink) -> None:
    """The copy cases of one server: it starts once, each case's tools run in rotation."""
    (workdir / "server").mkdir(parents=True)
    server = versus.start_server(cases[0].server, workdir / "server")
    try:
        for case in cases:
            data, tools = sets[case.data], list(case.tools)
            if "raw-ceiling" in tools and not (ROOT / "bench" / "raw_ceiling.py").exists():
                print(f"# {case.name}: no bench/raw_ceiling.py, no raw ceiling", flush=True)
                tools.remove("raw-ceiling")
            print(f"# {case.name}: {data.label} on {server.name}", flush=True)
            for round_no in range(repeat):
                shift = round_no % len(tools)
                for tool in tools[shift:] + tools[:shift]:
                    run = run_tool(tool, server, data, srcs[case.data],
                                   workdir / f"{case.name}-{tool}-{round_no}")
                    run.case, run.round = case.name, round_no
                    sink(run)
    finally:
        server.stop()


def print_run(run: Run) -> None:
    line = (f"{run.case:15s} {run.tool:12s} r{run.round} {run.seconds:7.2f} s "
            f"{run.objects_per_s:8.0f} obj/s {run.mib_per_s:7.1f} MiB/s  tool CPU {run.tool_cpu_s:6.2f} s  "
            f"server CPU {run.server_cpu_s:6.2f} s")
    if run.job_s:
        line += f"  (job's last task at {run.job_s:.2f} s)"
    for k, v in run.extra.items():
        line += f"  {k} {v:.4g}" if isinstance(v, float) else f"  {k} {v}"
    print(line, flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="1,000 x 4 KiB and 4 x 16 MiB, 100,000 entries, one round unless --repeat")
    ap.add_argument("--repeat", type=int, default=None, help="rounds per case (default 3, --quick 1)")
    ap.add_argument("--cases", default="",
                    help=f"comma-separated, of {', '.join(c.name for c in CASES)} (default: all; with "
                         f"--quick all but fleet, whose deploy alone takes a minute or two)")
    ap.add_argument("--tools", default="",
                    help="comma-separated, of the copy cases' tools (default: all); a run of some tools "
                         "replaces only their rows, so compare tools run together")
    ap.add_argument("--docs", default=None,
                    help="where benchmarks.md/.csv/.png are written (default docs/; with --quick "
                         ".cache/bench-quick/, so that a smoke test never replaces the record)")
    ap.add_argument("--keep", metavar="DIR",
                    help="work in DIR (new) and keep it: each run's output.log and job state")
    a = ap.parse_args()
    # The fleet's workers are throttled, so one round of it says what three would, in a third of
    # the run's 15 minutes: it repeats only when --repeat asks.
    fleet_rounds = a.repeat or 1
    a.repeat = a.repeat or (1 if a.quick else 3)
    a.docs = a.docs or str(ROOT / (".cache/bench-quick" if a.quick else "docs"))
    everything = [c.name for c in CASES if not (a.quick and c.name == "fleet")]
    wanted = a.cases.split(",") if a.cases else everything
    unknown = set(wanted) - {c.name for c in CASES}
    if unknown:
        raise SystemExit(f"unknown case(s) {', '.join(sorted(unknown))}: {', '.join(c.name for c in CASES)}")
    # A plain `kill` ends the run as Ctrl-C does: servers stopped, nothing left behind.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    versus.adopt_orphans()
    cases = [c for c in CASES if c.name in wanted]
    if a.tools:
        chosen = a.tools.split(",")
        unknown = set(chosen) - set(EMULATOR_TOOLS)
        if unknown:
            raise SystemExit(f"unknown tool(s) {', '.join(sorted(unknown))}: {', '.join(EMULATOR_TOOLS)}")
        cases = [dataclasses.replace(c, tools=tuple(t for t in c.tools if t in chosen)) if c.tools else c
                 for c in cases]
    sets = data_sets(a.quick)
    runs: list = []
    began = time.time()

    def sink(run: Run) -> None:
        runs.append(run)
        print_run(run)

    with tempfile.TemporaryDirectory(prefix="ossimport-bench-") as d:
        workdir = Path(a.keep or d)
        try:
            srcs = {}
            for name in sorted({c.data for c in cases if c.data}):
                srcs[name] = workdir / f"data-{name}"
                make_source(srcs[name], sets[name].files, sets[name].size)
            for server in ("s3rver", "emulator"):
                group = [c for c in cases if c.server == server]
                if group:
                    copy_cases(group, sets, srcs, a.repeat, workdir / server, sink)
            if any(c.name == "scan" for c in cases):
                import scan_split

                for run in scan_split.runs(workdir / "scan", 100_000 if a.quick else 1_000_000, a.repeat):
                    sink(run)
            if any(c.name == "fleet" for c in cases):
                import distributed_scaling

                for run in distributed_scaling.runs(a.quick, fleet_rounds):
                    sink(run)
        finally:
            stop_leftovers()
    report.write(Path(a.docs), runs, sets, a, time.time() - began)
    print(f"\n{len(runs)} runs in {time.time() - began:.0f} s; tables in {a.docs}/benchmarks.md", flush=True)
    return 0


def stop_leftovers() -> None:
    """Whatever is still running that a run started (adopted here): terminated, then killed."""
    import psutil

    left = psutil.Process().children(recursive=True)
    for p in left:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(left, timeout=10)
    for p in alive:
        p.kill()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        # Everything this run started is stopped by now (main's finally): say so, no traceback.
        print("\ninterrupted; every server and tool process started here is stopped; the docs are "
              "left as they were", file=sys.stderr)
        sys.exit(130)
