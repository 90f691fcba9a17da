"""The proof of a migration: the job report, object by object, its manifest digest, and the
check weeks later that the destination still holds what the report says."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess

import oss2
import pytest

from conftest import crc64_of, wait_for, write_tree


def read_report(job_dir):
    with gzip.open(job_dir / "report" / "objects.csv.gz", "rt", encoding="utf-8", newline="") as f:
        # A key a line cannot hold is written as a JSON string, as in every list file.
        rows = {json.loads(row["key"]) if row["key"].startswith('"') else row["key"]: row
                for row in csv.DictReader(f)}
    summary = json.loads((job_dir / "report" / "summary.json").read_text())
    return rows, summary


def digest_of_listing(bucket: oss2.Bucket, prefix: str) -> str:
    """The manifest digest as the report documents it, recomputed from a fresh listing by an
    independent client (oss2)."""
    lines = []
    for obj in oss2.ObjectIteratorV2(bucket, prefix=prefix):
        head = bucket.head_object(obj.key)
        key = obj.key[len(prefix):]
        lines.append((key, json.dumps([key, head.content_length, head.headers["x-oss-hash-crc64ecma"]],
                                      separators=(",", ":")) + "\n"))
    return hashlib.sha256("".join(line for _, line in sorted(lines)).encode("ascii")).hexdigest()


def test_a_job_with_copied_skipped_and_failed_objects_is_proven_and_a_later_damage_is_named(migration):
    files = {f"photos/2024/img{i:02d}.jpg": os.urandom(1000 + 97 * i) for i in range(12)}
    files["docs/readme.txt"] = b"hello"
    files["empty.bin"] = b""
    write_tree(migration.src, files)
    os.mkfifo(migration.src / "docs" / "a-fifo")
    bad_name = os.fsencode(str(migration.src / "docs")) + b"/caf\xe9.txt"  # not UTF-8: no OSS key
    with open(bad_name, "wb") as f:
        f.write(b"latin-1 name")
    # Two objects are at the destination already, the same bytes: the job skips them.
    for key in ("photos/2024/img00.jpg", "photos/2024/img01.jpg"):
        migration.bucket.put_object("mig/" + key, files[key])
    migration.write_conf(job_props={"destPrefix": "mig/", "isSkipExistFile": "true",
                                    "taskObjectCountLimit": "5"})
    migration.ok("submit", str(migration.job_file))
    migration.ok("start")
    assert migration.wait_state()["JobState"] == "Failed"  # the file with no OSS name

    # The service wrote the report when the job ended; 'report' writes it again on demand.
    wait_for(lambda: (migration.job_dir / "report" / "summary.json").is_file(), "the report at the job's end", 20)
    written = json.loads((migration.job_dir / "report" / "summary.json").read_text())
    out = migration.ok("report")
    assert "report of job:local_test in master/jobs/local_test/report/" in out
    rows, summary = read_report(migration.job_dir)

    # One row per listed object, each as the destination has it (checked with oss2).
    assert set(rows) == set(files) | {"docs/a-fifo", "docs/caf\udce9.txt"}
    for key, data in files.items():
        row = rows[key]
        head = migration.bucket.head_object("mig/" + key)
        assert int(row["size"]) == len(data) == head.content_length
        assert int(row["dest_crc64"]) == int(head.headers["x-oss-hash-crc64ecma"]) == crc64_of(data)
        assert row["host"] == "localhost" and row["attempts"] == "1" and row["finished_at"]
        if key in ("photos/2024/img00.jpg", "photos/2024/img01.jpg"):
            assert row["outcome"] == "skipped-existing", row
        else:
            assert row["outcome"] == "copied" and row["audit"] == "match", row
            assert int(row["source_crc64"]) == crc64_of(data)
    assert rows["docs/a-fifo"]["outcome"] == "skipped-not-a-file"
    bad = rows["docs/caf\udce9.txt"]
    assert bad["outcome"] == "failed" and bad["reason"] == "INVALID_KEY" and "rename it" in bad["detail"]

    assert summary["complete"] is True and summary["objects"] == len(files) + 2
    assert summary["by_outcome"]["copied"]["objects"] == len(files) - 2
    assert summary["by_outcome"]["skipped-existing"] == {"objects": 2, "bytes": len(files["photos/2024/img00.jpg"])
                                                         + len(files["photos/2024/img01.jpg"])}
    assert summary["failures"]["INVALID_KEY"]["objects"] == 1
    assert summary["failures"]["INVALID_KEY"]["examples"][0]["key"] == "docs/caf\udce9.txt"
    assert summary["by_host"]["localhost"]["objects"] == len(files) + 2
    assert summary["settings"]["destSecretKey"] == "******" and migration.secret not in json.dumps(summary)
    assert summary["throughput"]["points"] and summary["copied_bytes"] == sum(
        len(files[k]) for k in files if rows[k]["outcome"] == "copied")
    # The digest is what anyone recomputes from the destination's listing.
    assert summary["manifest"]["objects"] == len(files)
    assert summary["manifest"]["sha256"] == digest_of_listing(migration.bucket, "mig/")
    assert written["manifest"] == summary["manifest"] and written["by_outcome"] == summary["by_outcome"]

    r = migration.console("verify-report")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"match: the {len(files)} object(s)" in r.stdout and summary["manifest"]["sha256"] in r.stdout

    # Weeks later one object is damaged (same size, other bytes) and one is deleted.
    damaged = "photos/2024/img05.jpg"
    migration.bucket.put_object("mig/" + damaged, os.urandom(len(files[damaged])))
    migration.bucket.delete_object("mig/docs/readme.txt")
    r = migration.console("verify-report")
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert [line for line in lines if line.startswith("differs:")] == [
        "differs: 'docs/readme.txt': missing: the destination has no such object now",
        f"differs: '{damaged}': CRC64 {crc64_of(migration.bucket.get_object('mig/' + damaged).read())} now, "
        f"{crc64_of(files[damaged])} in the report"]
    assert lines[-1].startswith(f"differ: 2 of the {len(files)} object(s)")


def test_verify_before_any_report_and_a_damaged_report_say_what_to_run(migration):
    write_tree(migration.src, {"a.txt": b"a"})
    migration.write_conf()
    r = migration.console("report")
    assert r.returncode == 2 and r.stderr.strip() == "error: name the job: no job submitted"
    migration.ok("submit", str(migration.job_file))
    r = migration.console("verify-report")
    assert r.returncode == 2 and "has no report yet: write it with 'console.sh report local_test'" in r.stderr
    migration.ok("start")
    assert migration.wait_state()["JobState"] == "Succeed"
    migration.ok("report", "local_test")
    # A report folder that leads out of workingDir is refused; nothing is written there.
    elsewhere = migration.dir / "elsewhere"
    elsewhere.mkdir()
    saved = migration.job_dir / "report.saved"
    (migration.job_dir / "report").rename(saved)
    (migration.job_dir / "report").symlink_to(elsewhere)
    r = migration.console("report")
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and "leads outside workingDir" in r.stderr, r.stderr
    assert list(elsewhere.iterdir()) == []
    (migration.job_dir / "report").unlink()
    saved.rename(migration.job_dir / "report")
    (migration.job_dir / "report" / "objects.csv.gz").write_bytes(b"\x1f\x8b not gzip")
    r = migration.console("verify-report", "local_test")
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
    assert "objects.csv.gz" in r.stderr and "write it again with 'console.sh report'" in r.stderr


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("chromium is not installed (tests/setup_system.sh installs Debian's as root)")


def test_the_html_report_renders_in_chromium_with_its_totals_and_every_point_of_its_chart(migration, tmp_path):
    files = {f"set{i % 3}/part{i:03d}.dat": os.urandom(20_000 + 31 * i) for i in range(60)}
    write_tree(migration.src, files)
    migration.write_conf(job_props={"taskObjectCountLimit": "6"}, sys_props={"workerMaxThroughput(KB/s)": "400"})
    migration.ok("submit", str(migration.job_file))
    migration.ok("start")
    assert migration.wait_state()["JobState"] == "Succeed"
    migration.ok("report")
    page = migration.job_dir / "report" / "report.html"
    summary = json.loads((migration.job_dir / "report" / "summary.json").read_text())
    text = page.read_text("utf-8")
    # Self-contained: nothing is fetched from anywhere.
    assert not re.search(r"""(src|href)\s*=|url\(|@import|<script|<link""", text, re.I)

    browser = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               f"--user-data-dir={tmp_path / 'chromium'}", "--enable-logging=stderr", "--v=0"]
    shot = tmp_path / "report.png"
    dom = subprocess.run(browser + ["--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=90)
    assert dom.returncode == 0, dom.stderr[-2000:]
    shown = subprocess.run(browser + [f"--screenshot={shot}", "--window-size=1100,1800", page.as_uri()],
                           capture_output=True, text=True, timeout=90)
    assert shown.returncode == 0 and shot.stat().st_size > 10_000, shown.stderr[-2000:]
    assert not [line for line in dom.stderr.splitlines() + shown.stderr.splitlines() if "CONSOLE" in line]
    if os.environ.get("OSSIMPORT_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["OSSIMPORT_KEEP_SCREENSHOT"])

    html = dom.stdout  # the page as the browser built it
    assert f'<span id="total-objects">{len(files):,}</span>' in html
    assert f'data-outcome="copied">{len(files):,}</span>' in html
    assert f'<code id="digest">{summary["manifest"]["sha256"]}</code>' in html
    assert summary["peak_bytes_per_s"] >= summary["average_bytes_per_s"] > 0
    points = summary["throughput"]["points"]
    assert len(points) >= 2  # the throttle spreads 1.2 MB over seconds
    assert html.count('<circle class="point"') == len(points)
    assert f'data-points="{len(points)}"' in html
    assert sum(p[1] for p in points) * summary["throughput"]["bucket_s"] == sum(len(d) for d in files.values())


def test_an_audit_job_reports_each_object_matched_differing_or_missing(migration):
    """jobType=audit copies nothing: its report says of each object whether the destination has
    it as the source does, and its manifest holds only those that match."""
    files = {f"ledger/{i:02d}.csv": os.urandom(3000 + i) for i in range(8)}
    write_tree(migration.src, files)
    for key, data in files.items():
        migration.bucket.put_object("mig/" + key, data)
    migration.bucket.put_object("mig/ledger/03.csv", b"truncated")  # another size
    migration.bucket.delete_object("mig/ledger/05.csv")
    migration.write_conf(job_props={"jobType": "audit", "destPrefix": "mig/", "taskObjectCountLimit": "3"})
    migration.ok("submit", str(migration.job_file))
    migration.ok("start")
    assert migration.wait_state()["JobState"] == "Failed"
    # general auditMode checks sizes from the listing: the report says its lines have no CRC64.
    assert "manifest 6 object(s) (6 without a CRC64, sizes only: auditMode=detailed records them)" in \
        migration.ok("report")
    rows, summary = read_report(migration.job_dir)
    assert set(rows) == set(files)
    want = {key: "audited-match" for key in files}
    want["ledger/03.csv"], want["ledger/05.csv"] = "audited-differ", "audited-missing"
    assert {key: row["outcome"] for key, row in rows.items()} == want
    assert rows["ledger/03.csv"]["reason"] == "SIZE_NOT_MATCH" and rows["ledger/05.csv"]["reason"] == "TARGET_NOT_EXIST"
    assert summary["by_outcome"] == {"audited-match": {"objects": 6, "bytes": sum(
        len(d) for k, d in files.items() if want[k] == "audited-match")},
        "audited-differ": {"objects": 1, "bytes": len(files["ledger/03.csv"])},
        "audited-missing": {"objects": 1, "bytes": len(files["ledger/05.csv"])}}
    assert set(summary["failures"]) == {"SIZE_NOT_MATCH", "TARGET_NOT_EXIST"}
    assert summary["copied_bytes"] == 0  # an audit moves nothing
    assert summary["manifest"]["objects"] == 6
    r = migration.console("verify-report")
    assert r.returncode == 0 and "match: the 6 object(s)" in r.stdout, r.stdout + r.stderr
    # A summary.json edited since (its digest) no longer matches its own rows: said, exit 1.
    doc = json.loads((migration.job_dir / "report" / "summary.json").read_text())
    doc["manifest"]["sha256"] = "0" * 64
    (migration.job_dir / "report" / "summary.json").write_text(json.dumps(doc))
    r = migration.console("verify-report")
    assert r.returncode == 1 and "the report was changed since it was written" in r.stdout, r.stdout

    # auditMode=detailed reads the source and the destination's CRC64 of every object: the proof
    # holds the bytes, and its digest is the one recomputed from the destination.
    migration.ok("stop")
    migration.ok("clean", "local_test")
    migration.write_conf(job_props={"jobType": "audit", "destPrefix": "mig/", "auditMode": "detailed"})
    migration.ok("submit", str(migration.job_file))
    migration.ok("start")
    assert migration.wait_state()["JobState"] == "Failed"
    migration.ok("report")
    rows, summary = read_report(migration.job_dir)
    assert summary["manifest"]["without_crc64"] == 0
    matched = {k: d for k, d in files.items() if want[k] == "audited-match"}
    for key, data in matched.items():
        assert rows[key]["outcome"] == "audited-match" and int(rows[key]["dest_crc64"]) == crc64_of(data)
    lines = sorted((k, json.dumps([k, len(d), str(crc64_of(d))], separators=(",", ":")) + "\n")
                   for k, d in matched.items())
    assert summary["manifest"]["sha256"] == hashlib.sha256("".join(l for _, l in lines).encode()).hexdigest()
    assert migration.console("verify-report").returncode == 0
