"""report/report.html: the job report for a person who did not run the job, as one self-contained
file (no script, no font, no stylesheet or image from elsewhere), drawn from summary.json alone:
totals, throughput over time (whole job and per host) as an SVG chart, failures by reason with
their first keys and what to do, the largest and slowest objects, and the manifest digest."""

from __future__ import annotations

import html
from typing import Iterable

from .status import human_bytes as _size

CHART_W, CHART_H, MARGIN = 720, 240, 48
COLOURS = ("#1f6feb", "#d73a49", "#2da44e", "#bf8700", "#8250df", "#0598bc", "#cf222e", "#57606a")


def _t(value) -> str:
    """Text for the page: escaped, and an undecodable byte of a name shown as its escape."""
    text = str(value).encode("utf-8", "backslashreplace").decode("utf-8")
    return html.escape(text, quote=True)


def _table(head: Iterable[str], rows: Iterable[Iterable], cls: str) -> str:
    out = [f'<table class="{cls}"><thead><tr>' + "".join(f"<th>{_t(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _chart(throughput: dict) -> str:
    """Bytes per second over time: the whole job, and one line per host when there are several."""
    series = [("whole job", throughput.get("points") or [])]
    hosts = throughput.get("by_host") or {}
    if len(hosts) > 1:
        series += [(host, s.get("points") or []) for host, s in sorted(hosts.items())]
    points = series[0][1]
    if not points:
        return '<p class="empty">No copied object has a recorded finish time: nothing to draw.</p>'
    t0 = min(p[0] for _, pts in series for p in pts)
    t1 = max(p[0] for _, pts in series for p in pts) + float(throughput.get("bucket_s") or 1)
    top = max(p[1] for _, pts in series for p in pts) or 1.0
    w, h = CHART_W - 2 * MARGIN, CHART_H - 2 * MARGIN

    def xy(p):
        return MARGIN + (p[0] - t0) / max(t1 - t0, 1e-9) * w, MARGIN + h - p[1] / top * h

    parts = [f'<svg class="throughput" width="{CHART_W}" height="{CHART_H}" '
             f'viewBox="0 0 {CHART_W} {CHART_H}" role="img" aria-label="throughput over time">',
             f'<line x1="{MARGIN}" y1="{MARGIN + h}" x2="{MARGIN + w}" y2="{MARGIN + h}" stroke="#888"/>',
             f'<line x1="{MARGIN}" y1="{MARGIN}" x2="{MARGIN}" y2="{MARGIN + h}" stroke="#888"/>',
             f'<text x="{MARGIN}" y="{MARGIN - 8}" font-size="11">{_t(_size(top))}/s</text>',
             f'<text x="{MARGIN}" y="{MARGIN + h + 16}" font-size="11">0 s</text>',
             f'<text x="{MARGIN + w}" y="{MARGIN + h + 16}" font-size="11" text-anchor="end">'
             f'{t1 - t0:,.0f} s</text>']
    for i, (name, pts) in enumerate(series):
        colour = COLOURS[i % len(COLOURS)]
        coords = [xy(p) for p in pts]
        parts.append(f'<polyline class="series" data-series="{_t(name)}" data-points="{len(pts)}" fill="none" '
                     f'stroke="{colour}" stroke-width="1.5" points="'
                     + " ".join(f"{x:.1f},{y:.1f}" for x, y in coords) + '"/>')
        if i == 0:
            parts += [f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="2" fill="{colour}">'
                      f'<title>{p[0] - t0:,.0f} s: {_t(_size(p[1]))}/s</title></circle>'
                      for (x, y), p in zip(coords, pts)]
        parts.append(f'<text x="{MARGIN + w - 4}" y="{MARGIN + 14 * (i + 1)}" font-size="11" text-anchor="end" '
                     f'fill="{colour}">{_t(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


STYLE = """body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:60em;color:#1f2328}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #d0d7de}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #d0d7de;padding:.25em .6em;text-align:left;
vertical-align:top}th{background:#f6f8fa}td.n{text-align:right}code{font-size:.92em;word-break:break-all}
.verdict{font-size:1.1em;padding:.5em .8em;border-radius:6px}.ok{background:#dafbe1}.bad{background:#ffebe9}"""


def render(summary: dict) -> str:
    """The page for a summary.json document (report.write_report)."""
    outcomes = summary.get("by_outcome") or {}
    failures = summary.get("failures") or {}
    failed = sum(f.get("objects", 0) for f in failures.values())
    complete = summary.get("complete")
    verdict_cls = "ok" if complete and not failed else "bad"
    verdict = ("Every listed object is at the destination, verified, or was skipped with its reason."
               if complete and not failed else
               f"{failed:,} object(s) not at the destination as they should be" if failed else
               f"The job has {summary.get('tasks', {}).get('not_finished', 0)} task(s) not finished: "
               f"they are not in this report yet")
    if complete is False and failed:
        verdict += f"; {summary.get('tasks', {}).get('not_finished', 0)} task(s) not finished yet"
    manifest = summary.get("manifest") or {}
    body = [f"<h1>Migration report: job {_t(summary.get('job', ''))}</h1>",
            f'<p class="verdict {verdict_cls}">{_t(verdict)}</p>',
            f"<p>Written {_t(summary.get('written_at', ''))}; copying from {_t(summary.get('started_at', ''))} "
            f"to {_t(summary.get('ended_at', ''))} ({summary.get('duration_s', 0):,.1f} s).</p>",
            "<h2>Totals</h2>",
            _table(("", "objects", "bytes"),
                   [["<b>listed</b>", f'<span id="total-objects">{summary.get("objects", 0):,}</span>',
                     _t(_size(summary.get("bytes", 0)))]]
                   + [[_t(name), f'<span class="outcome" data-outcome="{_t(name)}">{v["objects"]:,}</span>',
                       _t(_size(v["bytes"]))] for name, v in sorted(outcomes.items())], "totals"),
            f"<p>Copied {_t(_size(summary.get('copied_bytes', 0)))}: on average "
            f"{_t(_size(summary.get('average_bytes_per_s', 0)))}/s, at peak "
            f"{_t(_size(summary.get('peak_bytes_per_s', 0)))}/s.</p>",
            "<h2>Throughput over time</h2>", _chart(summary.get("throughput") or {}),
            "<h2>Per host</h2>",
            _table(("host", "objects", "bytes copied", "failed"),
                   [[_t(host), f"{v['objects']:,}", _t(_size(v["bytes"])), f"{v['failed']:,}"]
                    for host, v in sorted((summary.get("by_host") or {}).items())], "hosts"),
            "<h2>Failures by reason</h2>"]
    if failures:
        body.append(_table(("reason", "objects", "what to do", "first keys"),
                           [[f"<code>{_t(reason)}</code>", f"{f['objects']:,}", _t(f.get("advice", "")),
                             "<br>".join(f"<code>{_t(e['key'])}</code>: {_t(e['detail'])}"
                                         for e in f.get("examples", []))]
                            for reason, f in failures.items()], "failures"))
    else:
        body.append("<p>None.</p>")
    body += ["<h2>Largest objects</h2>",
             _table(("key", "size"), [[f"<code>{_t(o['key'])}</code>", _t(_size(o["size"]))]
                                      for o in summary.get("largest") or []], "largest"),
             "<h2>Slowest objects</h2>",
             _table(("key", "size", "seconds"), [[f"<code>{_t(o['key'])}</code>", _t(_size(o["size"])),
                                                  f"{o['seconds']:,.3f}"] for o in summary.get("slowest") or []],
                    "slowest"),
             "<h2>Manifest</h2>",
             f"<p>{manifest.get('objects', 0):,} object(s) at the destination; SHA-256 of their lines "
             f"({_t(manifest.get('lines', ''))}):</p>",
             f'<p><code id="digest">{_t(manifest.get("sha256", ""))}</code></p>',
             "<p>Recompute it at any time with <code>console.sh verify-report "
             f"{_t(summary.get('job', ''))}</code>, which also names every object that differs.</p>",
             "<h2>Settings</h2>",
             _table(("key", "value"), [[f"<code>{_t(k)}</code>", _t(v)]
                                       for k, v in sorted((summary.get("settings") or {}).items())], "settings"),
             f"<p>Versions: {_t(', '.join(f'{k} {v}' for k, v in (summary.get('versions') or {}).items()))}</p>"]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>Migration report: {_t(summary.get('job', ''))}</title><style>{STYLE}</style></head><body>"
            + "\n".join(body) + "</body></html>\n")
