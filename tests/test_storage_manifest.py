"""The manifest source: copy exactly the keys a list (or a failed task's error.list) names."""

import pytest

from ossimport_dist.errors import SourceError
from ossimport_dist.models import ObjectEntry
from ossimport_dist.storage.local import LocalSource
from ossimport_dist.storage.manifest import ListSource, ManifestFormatError

TREE = {"a.txt": b"1", "dir/b c.txt": b"22", "#hash": b"333", " lead space": b"4444",
        "z\u00e9": b"55555"}


@pytest.fixture
def inner(tmp_path):
    root = tmp_path / "src"
    for key, data in TREE.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)
    return LocalSource(str(root) + "/")


def manifest(tmp_path, text):
    path = tmp_path / "keys.list"
    path.write_bytes(text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text)
    return str(path)


def test_keys_in_file_order_statted_through_the_inner_source(tmp_path, inner):
    src = ListSource(inner, manifest(tmp_path, "z\u00e9\r\n#hash\n\n dir/b c.txt\n"
                                               "dir/b c.txt\n lead space\n"))
    entries = list(src.list())
    assert [(e.key, e.size) for e in entries] == [("z\u00e9", 5), ("#hash", 3), (" dir/b c.txt", 0),
                                                  ("dir/b c.txt", 2), (" lead space", 4)]
    assert entries[0].mtime == inner.stat("z\u00e9").mtime
    # A named key the source lacks is listed, refused: the worker fails it into error.list.
    assert [e.refused for e in entries] == [None, None, f"SOURCE_NOT_EXIST: named in "
                                            f"{src.manifest_path}:4 but not in the source", None, None]
    assert src.open(entries[3]).read() == b"22"
    assert src.stat("a.txt").size == 1
    assert src.subtrees() == []


def test_a_size_column_is_taken_without_a_stat(tmp_path, inner):
    calls = []
    real_stat = inner.stat
    inner.stat = lambda key: calls.append(key) or real_stat(key)
    src = ListSource(inner, manifest(tmp_path, "a.txt\t1\nz\u00e9\n"))
    assert [(e.key, e.size) for e in src.list()] == [("a.txt", 1), ("z\u00e9", 5)]
    assert calls == ["z\u00e9"]


def test_an_error_list_is_a_manifest(tmp_path, inner):
    error_list = ("dir/b c.txt\tSOURCE_NOT_EXIST: source file does not exist\n"
                  "a.txt\tHTTP 503 ServiceUnavailable\t(with a tab)\n")
    src = ListSource(inner, manifest(tmp_path, error_list))
    assert [(e.key, e.size) for e in src.list()] == [("dir/b c.txt", 2), ("a.txt", 1)]


def test_undecodable_names_come_back_as_the_local_source_spells_them(tmp_path):
    root = tmp_path / "src"
    root.mkdir()
    (root / "caf\xe9".encode("latin-1").decode("utf-8", "surrogateescape")).write_bytes(b"x")
    inner = LocalSource(str(root) + "/")
    [listed] = inner.list()
    src = ListSource(inner, manifest(tmp_path, listed.key + "\tSIZE_NOT_MATCH\n"))
    assert [e.key for e in src.list()] == [listed.key]


def test_start_after_and_subtree(tmp_path, inner):
    src = ListSource(inner, manifest(tmp_path, "z\u00e9\ndir/b c.txt\na.txt\n"))
    assert [e.key for e in src.list(start_after="z\u00e9")] == ["dir/b c.txt", "a.txt"]
    assert [e.key for e in src.list(subtree="dir/")] == ["dir/b c.txt"]
    with pytest.raises(SourceError, match="'nope' is no longer in it"):
        list(src.list(start_after="nope"))


@pytest.mark.parametrize("text, line, words", [
    ("a.txt\nb\t \n", 2, "TAB with nothing after it"),
    ("a.txt\nz\u00e9\na.txt\t1\n", 3, "also on line 1"),
])
def test_bad_lines_name_the_file_and_line(tmp_path, inner, text, line, words):
    path = manifest(tmp_path, text)
    with pytest.raises(ManifestFormatError) as info:
        list(ListSource(inner, path).list())
    assert str(info.value).startswith(f"Unknown list file format: {path}:{line}: ")
    assert words in str(info.value)


def test_missing_manifest_is_a_one_line_error(tmp_path, inner):
    with pytest.raises(SourceError, match="does not exist: create it or fix listFilePath"):
        list(ListSource(inner, str(tmp_path / "none.list")).list())
    with pytest.raises(SourceError, match="not an absolute path"):
        ListSource(inner, "keys.list")


def test_open_and_stat_are_the_inner_sources(tmp_path, inner):
    src = ListSource(inner, manifest(tmp_path, "a.txt\n"))
    with pytest.raises(FileNotFoundError):
        src.open(ObjectEntry("gone", 1))
    assert src.stat("gone") is None
