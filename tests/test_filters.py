"""Filters: a job takes only the keys its srcIncludePattern / srcExcludePattern and minSize /
maxSize select; plan counts what they leave out, the scan never puts it in a task, and the
destination holds exactly the rest."""

from __future__ import annotations

import json
import os

import pytest

from conftest import dest_objects, write_tree
from ossimport_dist.filters import BY_PATTERN, BY_SIZE, PatternError, Selection, parse_patterns
from ossimport_dist.models import ObjectEntry


def selected(include="", exclude="", min_size=0, max_size=0, keys=(), size=10) -> list:
    s = Selection(parse_patterns(include), parse_patterns(exclude), min_size, max_size)
    return [k for k in keys if s.left_out(ObjectEntry(k, size)) is None]


KEYS = ("a.jpg", "photos/b.jpg", "photos/2024/c.JPG", "photos/2024/raw/d.jpg", "docs/x.txt",
        "docs/sub/y.txt", "logs/app.log", "a[1].txt", "caf\udce9.jpg", ".hidden.jpg")


@pytest.mark.parametrize("include, exclude, want", [
    ("*.jpg", "", ["a.jpg", "photos/b.jpg", "photos/2024/raw/d.jpg", "caf\udce9.jpg", ".hidden.jpg"]),
    ("*.[jJ][pP][gG]", "", ["a.jpg", "photos/b.jpg", "photos/2024/c.JPG", "photos/2024/raw/d.jpg",
                            "caf\udce9.jpg", ".hidden.jpg"]),
    ("photos/*.jpg", "", ["photos/b.jpg"]),  # a '/': the whole key, and * stops at '/'
    ("photos/**", "", ["photos/b.jpg", "photos/2024/c.JPG", "photos/2024/raw/d.jpg"]),
    ("photos/**.jpg", "**/raw/**", ["photos/b.jpg"]),
    ("docs/**, logs/*.log", "", ["docs/x.txt", "docs/sub/y.txt", "logs/app.log"]),
    ("", "*.jpg,*.JPG", ["docs/x.txt", "docs/sub/y.txt", "logs/app.log", "a[1].txt"]),
    ("a[[]1].txt", "", ["a[1].txt"]),  # a class holding '[' matches the bracket itself
    ("/a.jpg", "", ["a.jpg"]),  # a leading '/' anchors at the top, as rclone has it
    ("?.jpg", "", ["a.jpg", "photos/b.jpg", "photos/2024/raw/d.jpg"]),  # a file name at any depth
    ("[!a]*.txt", "", ["docs/x.txt", "docs/sub/y.txt"]),
])
def test_patterns_select_keys_as_rclone_reads_them(include, exclude, want):
    assert selected(include, exclude, keys=KEYS) == want


def test_sizes_bound_what_is_taken_and_a_refused_entry_is_judged_by_its_name_alone():
    s = Selection((), parse_patterns("*.tmp"), 100, 1000)
    assert s.left_out(ObjectEntry("a", 99)) == BY_SIZE
    assert s.left_out(ObjectEntry("a", 100)) is None and s.left_out(ObjectEntry("a", 1000)) is None
    assert s.left_out(ObjectEntry("a", 1001)) == BY_SIZE
    fifo = ObjectEntry("pipe", 0, refused="NOT_REGULAR_FILE: a FIFO")
    assert s.left_out(fifo) is None  # still listed as skipped, with why
    assert s.left_out(ObjectEntry("x.tmp", 0, refused="NOT_REGULAR_FILE: a FIFO")) == BY_PATTERN
    with pytest.raises(PatternError, match="never closed"):
        parse_patterns("ok, *.[jp")


def test_a_filtered_job_copies_exactly_what_it_selects_and_plan_said_so(migration):
    files = {
        "photos/beach.jpg": os.urandom(5000), "photos/2024/party.jpg": os.urandom(7000),
        "photos/2024/draft-party.jpg": os.urandom(6000),  # excluded by name
        "photos/thumb.jpg": os.urandom(300),  # under minSize
        "photos/poster.jpg": os.urandom(3 * 1024 * 1024),  # over maxSize
        "docs/report.pdf": os.urandom(4000), "docs/old/notes.txt": os.urandom(2000),
        "logs/app.log": os.urandom(9000), "cache/x.tmp": os.urandom(4000),
    }
    write_tree(migration.src, files)
    os.mkfifo(migration.src / "docs" / "a-fifo")  # selected by docs/**: listed as skipped, not copied
    migration.write_conf(job_props={"srcIncludePattern": "*.jpg, docs/**", "srcExcludePattern": "**/draft-*",
                                    "minSize": "1k", "maxSize": "1m", "destPrefix": "f/"})
    plan = json.loads(migration.ok("plan", "--json"))
    want = {k: v for k, v in files.items()
            if k in ("photos/beach.jpg", "photos/2024/party.jpg", "docs/report.pdf", "docs/old/notes.txt")}
    assert plan["listed"]["objects"] == len(files) + 1
    assert plan["left_out"] == {"pattern": 3, "size": 2}  # draft, log, tmp; thumb, poster
    assert plan["objects"] == len(want) + 1 and plan["to_copy"]["objects"] == len(want)
    assert plan["skipped"]["not_regular_files"] == 1
    assert "left out: 3 by srcIncludePattern/srcExcludePattern; 2 by minSize/maxSize" in migration.ok("plan")

    migration.ok("submit", str(migration.job_file))
    migration.ok("start")
    assert migration.wait_state()["JobState"] == "Succeed"
    # Object by object: exactly the selected files, with their bytes.
    assert set(dest_objects(migration.bucket, "f/")) == {"f/" + k for k in want}
    for key, data in want.items():
        assert migration.bucket.get_object("f/" + key).read() == data
    job = json.loads(migration.console("stat", "--json").stdout)["jobs"][0]
    assert job["objects"] == plan["objects"] and job["totals"]["succeed"] == len(want)
    # The selection is part of the job as submitted: a retry or a later round selects the same.
    frozen = (migration.job_dir / "job.cfg").read_text()
    assert "srcIncludePattern=*.jpg, docs/**" in frozen and "minSize=1k" in frozen


def test_a_selection_that_cannot_work_is_refused_in_one_line(migration):
    write_tree(migration.src, {"a.txt": b"a"})
    cases = [({"srcIncludePattern": "*.[jp"}, "srcIncludePattern: '*.[jp': '[' at character 3 is never closed"),
             ({"minSize": "2m", "maxSize": "1m"}, "minSize: 2097152 bytes is more than maxSize"),
             ({"maxSize": "-1"}, "maxSize")]
    for props, words in cases:
        migration.write_conf(job_props=props)
        for command in ("plan", "submit"):
            r = migration.console(command)
            assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and words in r.stderr, (props, r.stderr)
    url_list = migration.dir / "urls.list"
    url_list.write_text("http://127.0.0.1:9/ a.txt\n")
    migration.write_conf(job_props={"srcType": "http", "httpListFilePath": str(url_list), "minSize": "1k"})
    r = migration.console("submit")
    assert r.returncode == 2 and "minSize: srcType=http lists no sizes to filter by" in r.stderr, r.stderr
