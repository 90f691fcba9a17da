"""Incremental mode: after the full pass the source is rescanned every incrementalModeInterval
seconds; new and changed files are copied (even a copy that kept the old mtime), failures of a round
are retried in the next one, and files gone from the source are reported, never deleted."""

from __future__ import annotations

import os
import shutil
import time

from conftest import assert_migrated, write_tree


def _wait_round(migration, round_no: int, states=("Succeed",), timeout=120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        s = migration.stat()
        inc = s.get("Incremental", "")
        if inc.startswith(f"round {round_no},") and "after this round" not in inc and s.get("JobState") in states:
            return s
        assert time.monotonic() < deadline, f"round {round_no} never ended in {states}: {s}"
        time.sleep(0.3)


def test_rounds_copy_new_and_changed_files_report_gone_ones_and_retry_failures(migration, emulator, monkeypatch):
    monkeypatch.setenv("OSSIMPORT_TEST_MIN_INTERVAL", "1")
    files = {"keep.txt": b"unchanged", "grow.txt": b"v1", "same-size.bin": b"AAAAAAAA", "gone.txt": b"bye",
             "old-site/index.html": b"<html>", "old-site/img/logo.png": b"png", "photos/a.jpg": b"jpg"}
    write_tree(migration.src, files)
    # Two scan threads: each top-level folder is a scan unit of its own, so a folder that
    # vanishes whole takes its unit with it.
    migration.write_conf(job_props={"isIncremental": "true", "incrementalModeInterval": "2",
                                    "scanThreadCount": "2", "maxMultiThreadScanDepth": "1"})
    migration.ok("submit", str(migration.job_file))
    migration.ok("start")
    s = _wait_round(migration, 0)
    assert_migrated(migration.bucket, files)

    # Between rounds: a new file, a changed one, one replaced by a same-size copy that kept the old
    # mtime (cp -p), and one deleted. The next round is held back by failing every upload.
    emulator.set_faults("500:1.0:PutObject")
    old = os.stat(migration.src / "same-size.bin")
    (migration.src / "new.txt").write_bytes(b"new file")
    (migration.src / "grow.txt").write_bytes(b"version two")
    replacement = migration.dir / "replacement.bin"
    replacement.write_bytes(b"BBBBBBBB")
    os.utime(replacement, ns=(old.st_atime_ns, old.st_mtime_ns))
    os.replace(replacement, migration.src / "same-size.bin")
    (migration.src / "gone.txt").unlink()
    shutil.rmtree(migration.src / "old-site")
    s = _wait_round(migration, 1, states=("Failed",), timeout=180)
    assert "3 object(s) gone" in s["Incremental"]
    gone = "".join(p.read_text() for p in (migration.job_dir / "rounds" / "1").glob("*.deleted"))
    assert sorted(gone.splitlines()) == ["gone.txt", "old-site/img/logo.png", "old-site/index.html"]
    failed_keys = set()
    for t in migration.task_dirs("failed_tasks"):
        failed_keys |= {line.split("\t")[0] for line in (t / "error.list").read_text().splitlines()}
    assert failed_keys == {"new.txt", "grow.txt", "same-size.bin"}, "round 1 must take exactly what changed"

    # The destination recovers; round 2 retries round 1's failures without being asked.
    emulator.set_faults(None)
    _wait_round(migration, 2, timeout=180)
    expected = {"keep.txt": b"unchanged", "grow.txt": b"version two", "same-size.bin": b"BBBBBBBB",
                "new.txt": b"new file", "photos/a.jpg": b"jpg",
                # gone from the source, kept at the destination:
                "gone.txt": b"bye", "old-site/index.html": b"<html>", "old-site/img/logo.png": b"png"}
    assert_migrated(migration.bucket, expected)
    assert not migration.task_dirs("failed_tasks")
