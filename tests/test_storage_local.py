"""The local-directory source: listing order, resuming a listing, odd files, reading ranges."""

import gc
import os
import tempfile

import pytest

from ossimport_dist.errors import OperatorError, SourceError
from ossimport_dist.models import ObjectEntry
from ossimport_dist.storage import open_source
from ossimport_dist.storage.local import LocalSource, SourceRefused

# Names chosen so that naive per-directory sorting gets the order wrong: '-' and '.' sort
# before '/', so "a-b/x" and "a.txt" come before "a/..." in key order.
TREE = {
    "a.txt": b"1",
    "a/b": b"22",
    "a/c/d.bin": b"333",
    "a-b/x": b"4444",
    "a0": b"",
    "b": b"55555",
    "z/\u00e9t\u00e9 #1 %2B+.txt": b"unicode",
    "z/\U0001f600": b"emoji",
}


def make_tree(root, tree=TREE):
    for key, data in tree.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


@pytest.fixture
def src(tmp_path):
    root = tmp_path / "src"
    root.mkdir()
    make_tree(root)
    return LocalSource(str(root) + "/")


def keys(entries):
    return [e.key for e in entries]


def test_listing_is_in_exact_key_order(src):
    listed = keys(src.list())
    assert listed == sorted(TREE)
    assert listed[:4] == ["a-b/x", "a.txt", "a/b", "a/c/d.bin"]


def test_entries_carry_size_and_mtime(src, tmp_path):
    by_key = {e.key: e for e in src.list()}
    assert by_key["a/c/d.bin"].size == 3
    assert by_key["a0"].size == 0
    assert by_key["b"].mtime == os.stat(tmp_path / "src" / "b").st_mtime


def test_start_after_resumes_exactly_at_every_key(src):
    everything = keys(src.list())
    for i, marker in enumerate(everything):
        assert keys(src.list(start_after=marker)) == everything[i + 1:], marker
    # Markers that are not keys behave like an OSS marker too.
    for marker in ["", "a", "a/", "a/c", "a0", "aa", "y", "zz"]:
        assert keys(src.list(start_after=marker)) == [k for k in everything if k > marker]


def test_a_huge_directory_lists_the_same_through_sorted_runs_on_disk(tmp_path, monkeypatch):
    # A flat folder of many files is sorted in runs of spill_after names on disk, then merged:
    # the listing (order, markers, sizes, odd names) must be the one an in-memory sort gives.
    root = tmp_path / "flat"
    tree = {f"f{i:04d}{'-x' if i % 3 else ''}.bin": bytes(i % 5) for i in range(500)}
    tree.update({k: v for k, v in TREE.items()})
    make_tree(root, tree)
    os.mkdir(os.path.join(os.fsencode(root), b"bad-\xff-name"))
    open(os.path.join(os.fsencode(root), b"bad-\xff-name", b"f"), "wb").close()
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    small = LocalSource(str(root) + "/")
    huge = LocalSource(str(root) + "/")
    huge.spill_after = 7
    expected = [(e.key, e.size) for e in small.list()]
    assert [(e.key, e.size) for e in huge.list()] == expected and len(expected) == 509
    for marker in ["", "a", "a/", "f0100", "f0100-x.bin", "f0499.bin", "zz"]:
        assert keys(huge.list(start_after=marker)) == keys(small.list(start_after=marker)), marker
    assert huge.subtrees() == small.subtrees()
    # The runs are gone once read, and when a listing is dropped half way.
    assert list(temp.iterdir()) == []
    listing = huge.list()
    next(listing)
    assert list(temp.iterdir()) != []
    listing.close()
    del listing
    gc.collect()
    assert list(temp.iterdir()) == []


def test_directories_before_the_marker_are_not_read(src, monkeypatch):
    scanned = []
    original = src._scan
    monkeypatch.setattr(src, "_scan", lambda rel: scanned.append(rel) or original(rel))
    assert keys(src.list(start_after="a0")) == ["b", "z/\u00e9t\u00e9 #1 %2B+.txt", "z/\U0001f600"]
    assert "a/" not in scanned and "a/c/" not in scanned and "a-b/" not in scanned
    scanned.clear()
    assert keys(src.list(start_after="a/b")) [:1] == ["a/c/d.bin"]
    assert "a/" in scanned and "a-b/" not in scanned


def test_subtree_non_recursive_and_subtrees(src):
    assert src.subtrees() == ["a-b/", "a/", "z/"]
    assert src.subtrees("a/") == ["a/c/"]
    assert keys(src.list("", recursive=False)) == ["a.txt", "a0", "b"]
    assert keys(src.list("a/", recursive=False)) == ["a/b"]
    assert keys(src.list("a/")) == ["a/b", "a/c/d.bin"]
    assert keys(src.list("a/", start_after="a/b")) == ["a/c/d.bin"]


def test_symlinks_are_listed_refused_with_what_they_are(tmp_path):
    root = tmp_path / "src"
    (root / "dir").mkdir(parents=True)
    (root / "real").write_bytes(b"data")
    (root / "link").symlink_to(root / "real")
    (root / "dir" / "loop").symlink_to(root)  # a loop if it were followed
    (root / "dangling").symlink_to(root / "nowhere")
    src = LocalSource(str(root) + "/")
    entries = {e.key: e for e in src.list()}
    assert sorted(entries) == ["dangling", "dir/loop", "link", "real"]
    assert entries["real"].refused is None and entries["real"].size == 4
    assert entries["link"].refused == "NOT_REGULAR_FILE: symbolic link (isAllowSymbolicLink=false)"
    assert entries["dir/loop"].refused == "NOT_REGULAR_FILE: symbolic link to a folder (never followed)"
    assert entries["dangling"].refused == f"NOT_REGULAR_FILE: broken symbolic link (to {root}/nowhere)"
    assert all(e.size == 0 for k, e in entries.items() if k != "real")

    follow = LocalSource(str(root) + "/", allow_symlinks=True)
    entries = {e.key: e for e in follow.list()}
    assert entries["link"].refused is None and entries["link"].size == 4
    assert entries["dir/loop"].refused and entries["dangling"].refused
    with follow.open(entries["link"]) as f:
        assert f.read() == b"data"
    # Without isAllowSymbolicLink a file swapped for a link is not read through it.
    with pytest.raises(SourceRefused, match="symbolic link now .isAllowSymbolicLink=false"):
        src.open(ObjectEntry("link", 4))


def test_unreadable_directory_names_the_path(src, monkeypatch, tmp_path):
    # Tests run as root, whom permissions do not stop: the listing of folder a/ is refused here.
    real_scandir = os.scandir
    refused = os.stat(tmp_path / "src" / "a").st_ino

    def scandir(fd):
        if os.fstat(fd).st_ino == refused:
            raise PermissionError(13, "Permission denied")
        return real_scandir(fd)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(SourceError) as err:
        list(src.list())
    assert str(tmp_path / "src" / "a") in str(err.value)
    assert "permission" in str(err.value)


def test_missing_prefix_is_an_operator_error(tmp_path):
    with pytest.raises(SourceError, match="srcPrefix"):
        LocalSource(str(tmp_path / "nope") + "/")
    with pytest.raises(SourceError, match="absolute"):
        LocalSource("relative/dir/")


def test_non_utf8_names_round_trip(tmp_path):
    root = tmp_path / "src"
    root.mkdir()
    raw = os.fsencode(str(root)) + b"/caf\xe9.txt"  # Latin-1, not UTF-8
    with open(raw, "wb") as f:
        f.write(b"latin")
    src = LocalSource(str(root) + "/")
    [entry] = list(src.list())
    assert entry.key == "caf\udce9.txt"
    assert src.stat(entry.key).size == 5
    with src.open(entry) as f:
        assert f.read() == b"latin"


def test_stat_and_ranged_open(src, tmp_path):
    entry = src.stat("a/c/d.bin")
    assert (entry.size, entry.key) == (3, "a/c/d.bin")
    assert src.stat("missing") is None
    assert src.stat("a.txt/below") is None
    big = ObjectEntry("b", 5)
    with src.open(big, 1, 3) as f:
        assert f.read(2) == b"55"
        assert f.read() == b"5"
        assert f.read() == b""
        assert f.stat_now()[0] == 5
    with src.open(big, 4) as f:
        assert f.read(100) == b"5"
    with pytest.raises(FileNotFoundError):
        src.open(ObjectEntry("gone", 1))


def test_registry_opens_local_and_names_the_allowed_kinds(tmp_path):
    source = open_source("local", prefix=str(tmp_path) + "/")
    assert isinstance(source, LocalSource)
    with pytest.raises(OperatorError) as err:
        open_source("Local", prefix=str(tmp_path) + "/")
    assert "'Local'" in str(err.value) and "local, oss" in str(err.value)
