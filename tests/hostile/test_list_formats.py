"""One list format for every key: what the worker writes in error.list, a manifest and audit.log
comes back as the same key through the readers that use them (the manifest source, a resumed
task's audit.log). Property-tested with hypothesis over any text: surrogates of non-UTF-8 names,
TAB, CR, LF, quotes, backslashes, edge spaces, " Detail:" inside a key."""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ossimport_dist.errors import SourceError
from ossimport_dist.listformat import list_line, one_line, read_key, write_key
from ossimport_dist.models import FileResult, Outcome
from ossimport_dist.storage.http import HttpSource
from ossimport_dist.storage.local import LocalSource
from ossimport_dist.storage.manifest import ListSource
from ossimport_dist.worker import audit_line, finished_keys

# Pieces that broke or could break a line format, mixed with any character at all.
AWKWARD = ["\t", "\r", "\n", "\r\n", '"', "\\", " ", "/", ".", "..", " Detail:", "Detail:", "\\n",
           "\\t", '\\"', "\x00", "\x1c", "\x85", "\u2028", "\udce9", "\udcc3\udca9", "\ud800", "é",
           "😀", "#", "%2F"]
any_char = st.characters(exclude_categories=())  # surrogates included
# A high surrogate then a low one is the only text JSON cannot keep apart (it pairs them into
# one character); no source makes such a key (see listformat).
PAIRED = re.compile("[\ud800-\udbff][\udc00-\udfff]")
keys = st.lists(st.one_of(any_char, st.sampled_from(AWKWARD)), max_size=12).map("".join).filter(
    lambda k: not PAIRED.search(k))
reasons = st.tuples(st.sampled_from(["SIZE_NOT_MATCH: ", "HTTP 503 ", "SOURCE_NOT_EXIST: "]),
                    keys).map("".join)
PROPERTY = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
def empty_source(tmp_path):
    root = tmp_path / "src"
    root.mkdir(exist_ok=True)
    return LocalSource(str(root) + "/")


def listed(tmp_path, source, text: str) -> list:
    path = tmp_path / "f.list"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    return list(ListSource(source, str(path)).list())


@PROPERTY
@given(key=keys, reason=reasons)
def test_a_written_line_is_one_line_and_reads_back_as_its_key(key, reason):
    line = list_line(key, reason)
    assert line.endswith("\n") and len(line.splitlines()) == 1, repr(line)
    assert line.count("\t") == 1  # the separator only: a written key or reason holds no TAB
    assert read_key(line[:-1]) == (key, one_line(reason))
    assert read_key(write_key(key)) == (key, None)
    line.encode("utf-8")  # nothing left that only surrogateescape could write


@PROPERTY
@given(names=st.lists(keys.filter(bool), min_size=1, max_size=5, unique=True), reason=reasons)
def test_error_list_read_as_a_manifest_names_every_failed_key(tmp_path, empty_source, names, reason):
    entries = listed(tmp_path, empty_source, "".join(list_line(k, reason) for k in names))
    assert [e.key for e in entries] == names
    # The source is empty: each key is named and refused, none is dropped or copied.
    assert all(e.refused.startswith(("SOURCE_NOT_EXIST: ", "INVALID_KEY: ")) for e in entries)


@PROPERTY
@given(names=st.lists(keys.filter(bool), min_size=1, max_size=5, unique=True),
       sizes=st.lists(st.integers(0, 2**63), min_size=5, max_size=5))
def test_a_manifest_with_sizes_reads_back_key_and_size(tmp_path, empty_source, names, sizes):
    entries = listed(tmp_path, empty_source,
                     "".join(list_line(k, str(s)) for k, s in zip(names, sizes)))
    assert [e.key for e in entries] == names
    assert [e.size for e in entries if not e.refused] == [s for k, s, e in zip(names, sizes, entries)
                                                          if not e.refused]


@PROPERTY
@given(done=st.lists(keys, min_size=1, max_size=4, unique=True), failed=keys, detail=reasons)
def test_a_resumed_task_recognises_every_key_it_finished(tmp_path, done, failed, detail):
    audit = tmp_path / "audit.log"
    results = [FileResult(k, Outcome.SUCCEED if i % 2 else Outcome.SKIPPED, detail=detail if i else "")
               for i, k in enumerate(done)]
    if failed not in done:
        results.append(FileResult(failed, Outcome.FAILED, detail=detail))
    audit.write_text("".join(audit_line(r) for r in results), "utf-8")
    # Keys a careless reader could confuse with those on the lines: the key with its detail,
    # the key cut at any " Detail:", the key as written.
    decoys = {failed}
    for r in results:
        decoys |= {r.key + " Detail:" + one_line(r.detail), write_key(r.key),
                   *(r.key[:i] for i in range(len(r.key)) if r.key[i:].startswith(" Detail:"))}
    assert finished_keys(audit, set(done) | decoys) == {r.key: r.outcome for r in results
                                                       if r.outcome != Outcome.FAILED}


def test_an_audit_line_cut_short_by_a_crash_is_not_taken_for_done(tmp_path):
    audit = tmp_path / "audit.log"
    audit.write_text(audit_line(FileResult("a.txt", Outcome.SUCCEED))
                     + audit_line(FileResult("big/file.bin", Outcome.SUCCEED))[:-5], "utf-8")
    assert finished_keys(audit, {"a.txt", "big/file.bin", "big/fi"}) == {"a.txt": "Succeed"}


# ------------------------------------------------------------- manifests written by operators

def test_operator_lines_mean_what_they_say(tmp_path):
    root = tmp_path / "src"
    files = {"dir\\name.txt": b"1", " lead and trail ": b"22", "x\"quote\".txt": b"333",
             "caf\u00e9.txt": b"4444", "tab\there": b"55555"}
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    entries = listed(tmp_path, LocalSource(str(root) + "/"),
                     "dir\\name.txt\r\n lead and trail \n"       # a literal backslash, raw spaces
                     "x\"quote\".txt\tSIZE_NOT_MATCH\n"          # a quote inside is plain text
                     "caf\u00e9.txt\t4\n\"tab\\there\"\t5\n")    # a JSON-quoted key with its size
    assert [(e.key, e.size, e.refused) for e in entries] == [
        ("dir\\name.txt", 1, None), (" lead and trail ", 2, None), ("x\"quote\".txt", 3, None),
        ("caf\u00e9.txt", 4, None), ("tab\there", 5, None)]


@pytest.mark.parametrize("line, problem", [
    ('"unterminated.txt', "starts with a double quote but is not a JSON string (no closing "
                          "quote, column 1)"),
    ('"my file".txt', "has '.txt' after the closing quote of its JSON string"),
    ('"bad \\q escape"', "starts with a double quote but is not a JSON string (Invalid \\escape, "
                         "column 6)"),
])
def test_a_leading_quote_that_is_not_json_is_refused_on_its_line(tmp_path, empty_source, line, problem):
    [entry] = listed(tmp_path, empty_source, line + "\n")
    path = tmp_path / "f.list"
    assert entry.key == line
    assert entry.refused == (f"INVALID_KEY: {path} line 1: key '{line}' {problem}; write a key that "
                             f"starts with '\"' as a JSON string, as error.list does")
    # error.list writes it quoted: copied back into a manifest, that line names this key.
    assert read_key(list_line(entry.key, entry.refused)[:-1])[0] == line


def test_an_old_error_list_with_backslash_escapes_fails_loudly_instead_of_copying(tmp_path):
    # Before this format, "a\nb" was written as the four characters a \ n b.
    root = tmp_path / "src"
    root.mkdir()
    (root / "a\nb").write_bytes(b"x")
    [entry] = listed(tmp_path, LocalSource(str(root) + "/"), "a\\nb\tHTTP 503\n")
    assert (entry.key, entry.refused) == (
        "a\\nb", f"SOURCE_NOT_EXIST: named in {tmp_path / 'f.list'}:1 but not in the source")


@pytest.mark.parametrize("content", [b"", b"\n  \r\n\t\n"])
def test_a_manifest_that_names_nothing_is_one_line_error(tmp_path, empty_source, content):
    path = tmp_path / "f.list"
    path.write_bytes(content)
    with pytest.raises(SourceError) as info:
        list(ListSource(empty_source, str(path)).list())
    assert str(info.value) == (f"listFilePath {path} names no key (it is empty or holds only blank "
                               f"lines): nothing to copy; write one key per line, or fix listFilePath")


def test_a_key_too_long_to_look_up_is_refused_not_a_crash(tmp_path, empty_source):
    # In a folder that is missing the key is simply not there; in one that exists the name
    # itself cannot be looked at, and the reason says so.
    [entry] = listed(tmp_path, empty_source, "d/" + "x" * 5000 + "\n")
    assert entry.refused == f"SOURCE_NOT_EXIST: named in {tmp_path / 'f.list'}:1 but not in the source"
    (Path(empty_source.root) / "d").mkdir()
    [entry] = listed(tmp_path, empty_source, "d/" + "x" * 5000 + "\n")
    assert entry.refused.startswith(f"SOURCE_NOT_READABLE: cannot look at {empty_source.root}d/xxx")
    assert entry.refused.endswith("(File name too long); fix the name or the file system")


# ------------------------------------------------------------------ the list file itself

def _listing_ends(source) -> str:
    """The one-line error of listing ``source``, failing (not hanging) when it blocks."""
    outcome = []

    def run():
        try:
            list(source.list())
        except SourceError as exc:
            outcome.append(str(exc))
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "listing blocked on the list file"
    assert outcome, "listing a list file that is not a file did not fail"
    return outcome[0]


@pytest.mark.parametrize("make, what", [(os.mkfifo, "a FIFO"), (os.mkdir, "a directory")])
def test_a_list_file_that_is_not_a_file_is_one_line_not_a_hang(tmp_path, empty_source, make, what):
    path = tmp_path / "f.list"
    make(path)
    assert _listing_ends(ListSource(empty_source, str(path))) == (
        f"listFilePath {path} is {what}, not a file: name a text file with one line per object")
    assert _listing_ends(HttpSource(str(path))) == (
        f"httpListFilePath {path} is {what}, not a file: name a text file with one line per object")


def test_a_list_file_with_an_endless_line_is_refused_before_memory_fills(tmp_path, empty_source):
    path = tmp_path / "f.list"
    path.write_bytes(b"a.txt\n" + b"x" * (64 * 1024 + 1) + b"\n")
    assert _listing_ends(ListSource(empty_source, str(path))) == (
        f"listFilePath {path}:2: line longer than 64 KiB: this is not a list of keys; name a text "
        f"file with one line per object")
    path.write_bytes(b"http://h/ " + b"x" * (64 * 1024 - 11) + b"\n")  # 64 KiB with its line end
    [entry] = HttpSource(str(path)).list()
    assert entry.key == "x" * (64 * 1024 - 11)


def test_a_list_saved_with_a_bom_reads_its_first_key_and_shows_hidden_marks(tmp_path):
    root = tmp_path / "src"
    write = {"a.txt": b"1", "invoice\u202etxt.exe": b"22"}
    for name, data in write.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    entries = listed(tmp_path, LocalSource(str(root) + "/"), "\ufeffa.txt\ninvoice\u202etxt.exe\n")
    assert [(e.key, e.size, e.refused) for e in entries] == [
        ("a.txt", 1, None), ("invoice\u202etxt.exe", 2, None)]
    # In error.list a name that reads backwards on screen is shown for what it is.
    assert list_line("invoice\u202etxt.exe", "HTTP 503") == '"invoice\\u202etxt.exe"\tHTTP 503\n'
    (tmp_path / "urls.list").write_bytes(b"\xef\xbb\xbfhttp://h/ a.txt\n")
    assert [e.key for e in HttpSource(str(tmp_path / "urls.list")).list()] == ["a.txt"]
