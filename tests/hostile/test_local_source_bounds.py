"""The local source reads only under srcPrefix and never blocks.

Stories through the real console.sh where the race can be staged from outside (a slow PUT
holds the only transfer thread while a folder is swapped for a link, or a file for a FIFO), and
the driver itself where a race must be staged exactly: list, swap, then open.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import stat as stat_module
import tempfile
import threading
import time
from pathlib import Path

import pytest

from conftest import assert_migrated, write_tree
from ossimport_dist.models import ObjectEntry
from ossimport_dist.storage.local import LocalSource, SourceRefused

SLOW_PUT_SECONDS = 2


# ----------------------------------------------------------------- helpers

@pytest.fixture(params=["openat2", "openat walk"])
def resolver(request):
    """Every driver-level case runs through openat2 and through the per-component walk used
    where the kernel has no openat2."""
    def make(root, allow_symlinks=False):
        source = LocalSource(str(root) + "/", allow_symlinks=allow_symlinks)
        if request.param == "openat walk":
            source._openat2 = None
        elif source._openat2 is None:
            pytest.skip("this kernel has no openat2")
        return source
    return make


def read(source, entry):
    with source.open(entry) as f:
        return f.read()


def bounded(fn, timeout=10):
    """fn() in a thread the test does not wait on for more than ``timeout`` seconds: an open()
    that blocks fails the test instead of hanging it. Returns fn's result or exception."""
    outcome = []

    def run():
        try:
            outcome.append(fn())
        except Exception as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout)
    assert not worker.is_alive(), f"blocked for {timeout}s"
    return outcome[0]


def outside_file(tmp_path, data=b"outside secret"):
    """A file outside srcPrefix with its content and times, to show it was left alone."""
    path = tmp_path / "outside" / "data" / "secret.txt"
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    return path


def snapshot(path):
    st = os.stat(path)
    return path.read_bytes(), st.st_mtime_ns, st.st_ino


def make_socket(path):
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))


def special_tree(src, outside):
    """One of every entry a local listing refuses, next to two plain files."""
    write_tree(src, {"real.txt": b"real", "sub/file.txt": b"in a folder"})
    os.symlink("real.txt", src / "inside-link")
    os.symlink(outside, src / "outside-link")
    os.symlink("../outside/data/secret.txt", src / "dotdot-link")
    os.symlink("nowhere", src / "broken")
    os.symlink("loop", src / "loop")
    os.symlink("sub", src / "dir-link")
    os.mkfifo(src / "fifo")
    make_socket(src / "sock")
    os.mknod(src / "null-dev", 0o600 | stat_module.S_IFCHR, os.makedev(1, 3))
    real_outside = os.path.realpath(outside)
    return {
        "outside-link": f"NOT_REGULAR_FILE: symbolic link to outside srcPrefix ({real_outside})",
        "dotdot-link": f"NOT_REGULAR_FILE: symbolic link to outside srcPrefix ({real_outside})",
        "broken": "NOT_REGULAR_FILE: broken symbolic link (to nowhere)",
        "loop": "NOT_REGULAR_FILE: symbolic link loop",
        "dir-link": "NOT_REGULAR_FILE: symbolic link to a folder (never followed)",
        "fifo": "NOT_REGULAR_FILE: a FIFO",
        "sock": "NOT_REGULAR_FILE: a socket",
        "null-dev": "NOT_REGULAR_FILE: a character device",
    }


def skipped_lines(migration) -> dict:
    found = {}
    for state in ("succeed_tasks", "failed_tasks"):
        for task in migration.task_dirs(state):
            listed = task / "skipped.list"
            for line in listed.read_text().splitlines() if listed.is_file() else []:
                key, reason = line.split("\t", 1)
                found[key] = reason
    return found


def error_lines(migration) -> dict:
    found = {}
    for task in migration.task_dirs("failed_tasks"):
        for line in (task / "error.list").read_text().splitlines():
            key, reason = line.split("\t", 1)
            found[key] = reason
    return found


def wait_for_listing(migration, timeout=30):
    """Returns once the scan has written a task: the files are listed, none copied yet while
    the first PUT is held by the emulator."""
    deadline = time.monotonic() + timeout
    while not list(migration.job_dir.glob("*_tasks/*/TASK")) and \
            not list(migration.job_dir.glob("dispatched/*/*/TASK")):
        assert time.monotonic() < deadline, "the scan wrote no task"
        time.sleep(0.01)


def start_with_slow_puts(migration, emulator, job_props=None):
    """One transfer thread, every PUT held SLOW_PUT_SECONDS: files are read one after the
    other, the second only after the first PUT, which leaves time to change the source."""
    migration.write_conf(sys_props={"workerTaskThreadNum": "1"}, job_props=job_props)
    emulator.set_faults(f"slow:1.0@{SLOW_PUT_SECONDS}:PutObject")
    migration.ok("submit", str(migration.job_file))
    migration.ok("start")
    wait_for_listing(migration)


def assert_no_traceback(migration, *outputs):
    for text in outputs:
        assert "Traceback" not in text
    log = migration.work / "logs" / "ossimport2.log"
    assert "Traceback" not in (log.read_text() if log.is_file() else "")


# ----------------------------------------------------------------- stories through console.sh

def test_a_folder_swapped_for_a_link_during_the_job_is_not_uploaded(migration, emulator, tmp_path):
    # The case: data/ is swapped for a link to a folder holding a file of the same name,
    # size and mtime; that file must not reach the bucket as if it were the listed one.
    outside = outside_file(tmp_path, b"outside secret")
    files = {"a-first.txt": b"first", "data/secret.txt": b"inside secret"}
    write_tree(migration.src, files)
    os.utime(outside, ns=(os.stat(migration.src / "data/secret.txt").st_mtime_ns,) * 2)
    before = snapshot(outside)
    start_with_slow_puts(migration, emulator, {"isAllowSymbolicLink": "true"})
    os.rename(migration.src / "data", tmp_path / "data-moved-away")
    os.symlink(outside.parent, migration.src / "data")

    s = migration.wait_state(timeout=60)
    assert s["JobState"] == "Failed", s
    assert s["Files"].startswith("1/2 done, succeed 1, skipped 0, failed 1"), s
    assert_migrated(migration.bucket, {"a-first.txt": b"first"})
    assert error_lines(migration) == {
        "data/secret.txt": f"SOURCE_REFUSED: folder {migration.src}/data/ is a symbolic link now "
                           f"(never followed); nothing under it was read"}
    [task] = migration.task_dirs("failed_tasks")
    assert any(" Failed data/secret.txt Detail:SOURCE_REFUSED: folder " in line
               for line in (task / "audit.log").read_text().splitlines())
    assert snapshot(outside) == before
    assert_no_traceback(migration, s.get("Files", ""))


def test_a_file_replaced_by_a_fifo_fails_at_once_and_the_job_ends(migration, emulator):
    files = {"a-first.txt": b"first", "b.log": b"the listed file"}
    write_tree(migration.src, files)
    start_with_slow_puts(migration, emulator)
    os.unlink(migration.src / "b.log")
    os.mkfifo(migration.src / "b.log")  # nobody ever writes: a blocking open() never returns

    s = migration.wait_state(timeout=60)
    assert s["JobState"] == "Failed", s
    assert s["Files"].startswith("1/2 done, succeed 1, skipped 0, failed 1"), s
    assert error_lines(migration) == {
        "b.log": f"SOURCE_REFUSED: {migration.src}/b.log is a FIFO now, not the regular file "
                 f"listed; nothing was read"}
    assert_migrated(migration.bucket, {"a-first.txt": b"first"})

    # The file is put back: the retry copies it.
    os.unlink(migration.src / "b.log")
    (migration.src / "b.log").write_bytes(b"the file again")
    emulator.set_faults(None)
    r = migration.console("retry")
    assert r.returncode == 0 and "1 failed task(s) back to pending" in r.stdout, r.stdout + r.stderr
    assert migration.wait_state(timeout=60)["JobState"] == "Succeed"
    assert_migrated(migration.bucket, {"a-first.txt": b"first", "b.log": b"the file again"})
    assert_no_traceback(migration, r.stdout, r.stderr)


def test_a_retry_of_a_file_that_stayed_a_fifo_counts_it_as_the_listing_would(migration, emulator):
    # The retry looks at the source as it is now: still a FIFO, so it is what a new listing
    # would say, a counted skip, never an attempt to read it.
    write_tree(migration.src, {"a-first.txt": b"first", "b.log": b"the listed file"})
    start_with_slow_puts(migration, emulator)
    os.unlink(migration.src / "b.log")
    os.mkfifo(migration.src / "b.log")
    assert migration.wait_state(timeout=60)["JobState"] == "Failed"
    emulator.set_faults(None)
    r = migration.console("retry")
    assert r.returncode == 0 and "1 failed task(s) back to pending" in r.stdout, r.stdout + r.stderr
    s = migration.wait_state(timeout=60)
    assert s["JobState"] == "Succeed", s
    assert s["Files"].startswith("2/2 done, succeed 1, skipped 1 (1 not a regular file: "
                                 "'console.sh errors local_test' lists them), failed 0"), s
    [task] = migration.task_dirs("succeed_tasks")
    assert (task / "skipped.list").read_text() == "b.log\tNOT_REGULAR_FILE: a FIFO\n"
    assert_migrated(migration.bucket, {"a-first.txt": b"first"})
    assert_no_traceback(migration, r.stdout, r.stderr)


@pytest.mark.parametrize("allow", ["false", "true"])
def test_every_entry_that_is_not_a_file_is_counted_and_listed_with_why(migration, tmp_path, allow):
    outside = outside_file(tmp_path)
    before = snapshot(outside)
    refused = special_tree(migration.src, outside)
    copied = {"real.txt": b"real", "sub/file.txt": b"in a folder"}
    if allow == "true":
        copied["inside-link"] = b"real"
    else:
        refused["inside-link"] = "NOT_REGULAR_FILE: symbolic link (isAllowSymbolicLink=false)"
    migration.write_conf(job_props={"isAllowSymbolicLink": allow})
    migration.ok("submit", str(migration.job_file))
    migration.ok("start")

    s = migration.wait_state(timeout=60)
    total = len(copied) + len(refused)
    assert s["JobState"] == "Succeed", s
    assert s["Files"].startswith(
        f"{total}/{total} done, succeed {len(copied)}, skipped {len(refused)} ({len(refused)} not "
        f"a regular file: 'console.sh errors local_test' lists them), failed 0"), s["Files"]
    assert skipped_lines(migration) == refused
    assert_migrated(migration.bucket, copied)
    r = migration.console("errors", "local_test")
    assert r.returncode == 0
    for key, reason in refused.items():
        assert f"skipped: {key}: {reason}" in r.stderr
    assert snapshot(outside) == before
    assert_no_traceback(migration, r.stdout, r.stderr)


def test_a_manifest_naming_a_fifo_or_a_key_outside_ends_counted(migration, tmp_path):
    outside = outside_file(tmp_path)
    before = snapshot(outside)
    write_tree(migration.src, {"real.txt": b"real"})
    os.mkfifo(migration.src / "fifo")
    manifest = tmp_path / "keys.list"
    manifest.write_text("real.txt\nfifo\n../outside/data/secret.txt\n")
    migration.write_conf(job_props={"srcType": "list", "listSrcType": "local",
                                    "listFilePath": str(manifest)})
    migration.ok("submit", str(migration.job_file))
    migration.ok("start")

    s = migration.wait_state(timeout=60)
    assert s["JobState"] == "Failed", s
    assert s["Files"].startswith("2/3 done, succeed 1, skipped 1 (1 not a regular file"), s
    assert skipped_lines(migration) == {"fifo": "NOT_REGULAR_FILE: a FIFO"}
    [(key, reason)] = error_lines(migration).items()
    assert key == "../outside/data/secret.txt"
    assert reason.startswith("INVALID_KEY: ") and "'..'" in reason, reason
    assert_migrated(migration.bucket, {"real.txt": b"real"})
    assert snapshot(outside) == before
    assert_no_traceback(migration, migration.stat_text("detail"))


# ----------------------------------------------------------------- the driver, races staged exactly

def test_a_folder_swapped_for_a_link_after_listing_is_never_read_through(tmp_path, resolver):
    outside = outside_file(tmp_path, b"outside secret")
    src = tmp_path / "src"
    write_tree(src, {"data/secret.txt": b"inside secret", "top.txt": b"top"})
    os.utime(outside, ns=(os.stat(src / "data/secret.txt").st_mtime_ns,) * 2)
    for allow in (False, True):
        source = resolver(src, allow_symlinks=allow)
        listed = {e.key: e for e in source.list()}
        os.rename(src / "data", tmp_path / f"moved-{allow}")
        os.symlink(outside.parent, src / "data")
        with pytest.raises(SourceRefused) as err:
            read(source, listed["data/secret.txt"])
        assert str(err.value) == (f"folder {src}/data/ is a symbolic link now (never followed); "
                                  f"nothing under it was read")
        now = source.stat("data/secret.txt")
        assert now.refused == (f"NOT_REGULAR_FILE: folder {src}/data/ on the way is a symbolic "
                               f"link (never followed)") and now.size == 0
        # The listing does not go through it either: the link is one refused entry.
        assert {e.key: e.refused for e in source.list()}["data"] == \
            "NOT_REGULAR_FILE: symbolic link to outside srcPrefix (%s)" % os.path.realpath(outside.parent)
        assert read(source, listed["top.txt"]) == b"top"
        os.unlink(src / "data")
        os.rename(tmp_path / f"moved-{allow}", src / "data")
    assert outside.read_bytes() == b"outside secret"


def test_a_link_is_followed_only_to_a_file_under_srcPrefix(tmp_path, resolver):
    outside = outside_file(tmp_path)
    src = tmp_path / "src"
    write_tree(src, {"real.txt": b"real", "sub/other.txt": b"other"})
    os.symlink("real.txt", src / "link")
    source = resolver(src, allow_symlinks=True)
    [link] = [e for e in source.list() if e.key == "link"]
    assert (link.size, link.refused, read(source, link)) == (4, None, b"real")
    # Retargeted after the listing: inside is still read, outside is refused.
    os.unlink(src / "link")
    os.symlink("sub/other.txt", src / "link")
    assert read(source, ObjectEntry("link", 5)) == b"other"
    os.unlink(src / "link")
    os.symlink(outside, src / "link")
    with pytest.raises(SourceRefused) as err:
        read(source, link)
    assert str(err.value) == (f"{src}/link is a symbolic link to outside srcPrefix "
                              f"({os.path.realpath(outside)}); nothing was read")
    assert source.stat("link").refused.startswith("NOT_REGULAR_FILE: symbolic link to outside")
    # A link to a FIFO (inside) or a device (outside) is looked at, never opened: no blocking.
    os.mkfifo(src / "fifo")
    for target, why in (("fifo", f"{src}/link is a FIFO now, not the regular file listed"),
                        ("/dev/null", f"{src}/link is a symbolic link to outside srcPrefix (/dev/null)")):
        os.unlink(src / "link")
        os.symlink(target, src / "link")
        refusal = bounded(lambda: read(source, link))
        assert isinstance(refusal, SourceRefused) and str(refusal).startswith(why), refusal
    # Without isAllowSymbolicLink nothing is read through a link, even inside.
    strict = resolver(src)
    os.unlink(src / "link")
    os.symlink("real.txt", src / "link")
    with pytest.raises(SourceRefused, match=r"link is a symbolic link now \(isAllowSymbolicLink=false\)"):
        read(strict, link)


@pytest.mark.parametrize("key, problem", [
    ("../outside/data/secret.txt", "has a '..' segment"),
    ("sub/../../outside/data/secret.txt", "has a '..' segment"),
    ("./real.txt", "has a '.' segment"),
    ("sub//real.txt", "has an empty segment ('//')"),
    ("/etc/passwd", "is absolute"),
    ("real.txt\x00.bin", "holds NUL"),
    ("sub/", "ends with '/' (a folder: name the files in it)"),
    ("", "is empty"),
])
def test_keys_that_leave_the_folder_are_refused_by_stat_and_open(tmp_path, resolver, key, problem):
    outside_file(tmp_path)
    src = tmp_path / "src"
    write_tree(src, {"real.txt": b"real", "sub/x": b"x"})
    source = resolver(src)
    shown = key.replace("\x00", "\\x00")  # reasons are one line of printable text
    assert source.stat(key).refused == (f"INVALID_KEY: key '{shown}' {problem}; keys are plain "
                                        f"paths relative to srcPrefix")
    with pytest.raises(SourceRefused) as err:
        source.open(ObjectEntry(key, 4))
    assert str(err.value) == f"key '{shown}' {problem}: not a plain path under {src}/"


def test_a_special_file_swapped_in_fails_the_open_without_blocking(tmp_path, resolver):
    src = tmp_path / "src"
    write_tree(src, {"fifo": b"1", "sock": b"2", "dev": b"3", "dir": b"4"})
    source = resolver(src)
    listed = {e.key: e for e in source.list()}
    for name in listed:
        os.unlink(src / name)
    os.mkfifo(src / "fifo")
    make_socket(src / "sock")
    os.mknod(src / "dev", 0o600 | stat_module.S_IFCHR, os.makedev(1, 3))
    (src / "dir").mkdir()
    outcomes = {name: str(bounded(lambda: read(source, entry))) for name, entry in listed.items()}
    kinds = {"fifo": "a FIFO", "sock": "a socket", "dev": "a character device", "dir": "a folder"}
    assert outcomes == {name: f"{src}/{name} is {what} now, not the regular file listed; "
                              f"nothing was read" for name, what in kinds.items()}
    # stat, which a manifest's key goes through, says what they are without opening them.
    assert {name: source.stat(name).refused for name in kinds} == \
        {name: f"NOT_REGULAR_FILE: {what}" for name, what in kinds.items()}


def test_every_special_entry_is_listed_with_what_it_is(tmp_path, resolver):
    outside = outside_file(tmp_path)
    src = tmp_path / "src"
    refused = special_tree(src, outside)
    for allow in (False, True):
        listing = list(resolver(src, allow_symlinks=allow).list())
        assert [e.key for e in listing] == sorted(e.key for e in listing)
        entries = {e.key: e for e in listing}
        got = {k: e.refused for k, e in entries.items() if e.refused}
        want = dict(refused)
        if not allow:
            want["inside-link"] = "NOT_REGULAR_FILE: symbolic link (isAllowSymbolicLink=false)"
        assert got == want
        assert all(entries[k].size == 0 and entries[k].mtime for k in got)
        assert {k for k in entries if k not in got} == {"real.txt", "sub/file.txt"} | (
            {"inside-link"} if allow else set())


@contextlib.contextmanager
def as_nobody():
    """Tests run as root, whom permissions do not stop: the code in the block runs as nobody."""
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)


@pytest.fixture
def public_dir():
    """A folder nobody can reach (pytest's own temporary folders are root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="ossimport-perm-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


def test_an_entry_that_cannot_be_looked_at_fails_with_the_fix(public_dir, resolver):
    # A folder readable but not searchable: its names list, its files cannot be stat'ed.
    src = public_dir / "src"
    write_tree(src, {"open.txt": b"ok", "locked/file.txt": b"locked"})
    os.chmod(src, 0o755)
    os.chmod(src / "locked", 0o744)
    with as_nobody():
        source = resolver(src)
        entries = {e.key: e for e in source.list()}
        now = source.stat("locked/file.txt")
    reason = (f"SOURCE_NOT_READABLE: cannot look at {src}/locked/file.txt (Permission denied); "
              f"give the worker's user execute permission on {src}/locked/")
    assert entries["locked/file.txt"].refused == reason
    assert entries["open.txt"].refused is None
    assert now.refused == reason


def test_non_utf8_names_list_stat_and_read(tmp_path, resolver):
    src = tmp_path / "src"
    src.mkdir()
    folder = os.path.join(os.fsencode(src), b"caf\xe9")
    os.mkdir(folder)
    with open(os.path.join(folder, b"\xff.bin"), "wb") as f:
        f.write(b"latin")
    os.mkfifo(os.path.join(folder, b"\xfe-fifo"))
    source = resolver(src)
    entries = {e.key: e for e in source.list()}
    assert set(entries) == {"caf\udce9/\udcff.bin", "caf\udce9/\udcfe-fifo"}
    assert entries["caf\udce9/\udcfe-fifo"].refused == "NOT_REGULAR_FILE: a FIFO"
    assert source.stat("caf\udce9/\udcff.bin").size == 5
    assert read(source, entries["caf\udce9/\udcff.bin"]) == b"latin"


def test_a_folder_mounted_over_srcPrefix_later_is_the_one_read(tmp_path, resolver, monkeypatch):
    # The source keeps a descriptor of srcPrefix; a share mounted (here: a folder renamed) there
    # after the job started must be what is read, as a path would.
    from ossimport_dist.storage import local

    src = tmp_path / "src"
    write_tree(src, {"a.txt": b"before"})
    source = resolver(src)
    assert read(source, ObjectEntry("a.txt", 6)) == b"before"
    os.rename(src, tmp_path / "unmounted")
    write_tree(src, {"a.txt": b"mounted"})
    monkeypatch.setattr(local, "ROOT_RECHECK_SECONDS", 0.0)
    assert read(source, ObjectEntry("a.txt", 7)) == b"mounted"
    assert [e.key for e in source.list()] == ["a.txt"]
    source.close()


def test_files_and_folders_gone_after_listing_are_missing_not_refused(tmp_path, resolver):
    src = tmp_path / "src"
    write_tree(src, {"gone.txt": b"1", "dir/gone.txt": b"2", "was-dir/f.txt": b"3"})
    source = resolver(src)
    listed = {e.key: e for e in source.list()}
    os.unlink(src / "gone.txt")
    shutil.rmtree(src / "dir")
    shutil.rmtree(src / "was-dir")
    (src / "was-dir").write_bytes(b"a file where the folder was")
    for key in listed:
        with pytest.raises(FileNotFoundError):
            read(source, listed[key])
        assert source.stat(key) is None, key


def test_a_large_file_replaced_by_a_fifo_is_never_copied(tmp_path, resolver):
    # The multipart path looks at the file before reading it; a FIFO there must end the file
    # too, with nothing written at the destination.
    from ossimport_dist.models import Outcome
    from ossimport_dist.storage.local import LocalDestination
    from ossimport_dist.transfer import Transferer, TransferOptions

    src = tmp_path / "src"
    write_tree(src, {"big.bin": os.urandom(3 << 20), "small.txt": b"small"})
    source = resolver(src)
    listed = {e.key: e for e in source.list()}
    for key in listed:
        os.unlink(src / key)
        os.mkfifo(src / key)
    out = tmp_path / "out"
    out.mkdir()
    options = TransferOptions(multipart_threshold=1 << 20, part_size=256 << 10, parts_in_parallel=2,
                              max_attempts=2, backoff_base=0.001, backoff_cap=0.01)
    transfer = Transferer(source, LocalDestination(str(out)), options, sleep=lambda s: None)
    results = {key: bounded(lambda: transfer.copy(entry, tmp_path / "state"))
               for key, entry in listed.items()}
    assert results["small.txt"].outcome == Outcome.FAILED
    assert results["small.txt"].detail == (f"SOURCE_REFUSED: {src}/small.txt is a FIFO now, not the "
                                           f"regular file listed; nothing was read")
    assert results["big.bin"].outcome in (Outcome.FAILED, Outcome.CHECK_FAILED)
    assert [p.name for p in out.iterdir() if p.name != ".ossimport-uploads"] == []


def test_many_threads_read_through_one_source_while_srcPrefix_is_rechecked(tmp_path, resolver,
                                                                          monkeypatch):
    from ossimport_dist.storage import local

    files = {f"d{i % 4}/sub/f{i:03d}": os.urandom(i) for i in range(200)}
    src = tmp_path / "src"
    write_tree(src, files)
    source = resolver(src)
    entries = list(source.list())
    monkeypatch.setattr(local, "ROOT_RECHECK_SECONDS", 0.0)  # every call looks at srcPrefix
    wrong = []

    def reader(offset):
        for entry in entries[offset:] + entries[:offset]:
            if read(source, entry) != files[entry.key] or source.stat(entry.key).size != entry.size:
                wrong.append(entry.key)

    threads = [threading.Thread(target=reader, args=(n * 25,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(t.is_alive() for t in threads) and wrong == []
    fds_before = len(os.listdir("/proc/self/fd"))
    source.close()
    assert len(os.listdir("/proc/self/fd")) == fds_before - 1
    with pytest.raises(OSError):
        read(source, entries[0])


def test_reasons_stay_one_line_of_text_whatever_the_names(tmp_path, resolver):
    # A reason is one field of one line in error.list / skipped.list: a name with a line break
    # or bytes that are not UTF-8 must not split it or make it unreadable.
    src = tmp_path / "src"
    src.mkdir()
    raw = os.path.join(os.fsencode(src), b"bad\nname-\xff")
    with open(raw, "wb") as f:
        f.write(b"x")
    os.symlink(b"to\tnowhere-\xfe", os.path.join(os.fsencode(src), b"link\r"))
    source = resolver(src)
    listed = {e.key: e for e in source.list()}
    assert listed["link\r"].refused == "NOT_REGULAR_FILE: broken symbolic link (to to\\x09nowhere-\\udcfe)"
    os.unlink(raw)
    os.mkfifo(raw)
    with pytest.raises(SourceRefused) as err:
        read(source, listed["bad\nname-\udcff"])
    assert str(err.value) == (f"{src}/bad\\x0aname-\\udcff is a FIFO now, not the regular file "
                              f"listed; nothing was read")
    for text in (listed["link\r"].refused, str(err.value)):
        assert text.encode("utf-8").decode("utf-8").isprintable()
