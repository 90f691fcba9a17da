"""List jobs through the real console.sh: the failed objects of a job come back through
``console.sh errors -o`` and a ``srcType=list`` job whatever their names, and a list line whose
key leaves its bounds is refused on its own line while the others are copied."""

from __future__ import annotations

import functools
import http.server
import json
import os
import threading
import time
from pathlib import Path

import pytest

from conftest import assert_migrated, crc64_of, write_tree
from ossimport_dist.storage.local import LocalDestination


def run_job(migration, job: dict, timeout: float = 90) -> dict:
    migration.write_conf(job_props=job)
    outputs = [migration.ok("submit", str(migration.job_file)), migration.ok("start")]
    s = migration.wait_state(timeout=timeout)
    assert_no_traceback(migration, *outputs, migration.stat_text("detail"))
    return s


def assert_no_traceback(migration, *outputs: str) -> None:
    """Nothing crashed: not in what the console printed, not in the service's logs."""
    logs = migration.work / "logs"
    texts = [*outputs, *(p.read_text("utf-8", "replace") for p in logs.glob("*.log"))]
    assert not [t for t in texts if "Traceback" in t], texts


def error_lines(migration) -> list:
    """Every line of every failed task's error.list, as bytes on disk, sorted."""
    lines = []
    for task in migration.task_dirs("failed_tasks"):
        lines += (task / "error.list").read_bytes().split(b"\n")[:-1]
    return sorted(lines)


def files_under(root: Path) -> dict:
    """relative name -> bytes of every file under root, the tool's own upload folder left out."""
    out = {}
    for path in root.rglob("*"):
        rel = os.fsdecode(path.relative_to(root))
        if path.is_file() and not rel.startswith(".ossimport"):
            out[rel] = path.read_bytes()
    return out


def assert_copied_exactly(dest: Path, files: dict) -> None:
    """Destination holds exactly ``files``, each with its bytes and the CRC64 the driver reports."""
    got = files_under(dest)
    assert sorted(got) == sorted(files)
    driver = LocalDestination(str(dest))
    for key, data in files.items():
        assert got[key] == data, key
        assert driver.head(key).crc64 == crc64_of(data), key


class Untouched:
    """A file outside the bounds, set up so that reading it shows: its atime is made older
    than its mtime, which a read updates on relatime, strictatime and default mounts."""

    def __init__(self, path: Path, data: bytes = b"top secret\n"):
        write_tree(path.parent, {path.name: data})
        self.path, self.data = path, data
        mtime = path.stat().st_mtime
        os.utime(path, (mtime - 86400, mtime))
        self.before = path.stat()

    def check(self) -> None:
        now = self.path.stat()
        assert self.path.read_bytes() == self.data
        assert (now.st_atime, now.st_mtime) == (self.before.st_atime, self.before.st_mtime), \
            f"{self.path} was read"


def check_reading_shows(tmp_path) -> None:
    """The atime check can fail: reading a file set up like Untouched changes its atime."""
    probe = Untouched(tmp_path / "probe" / "read-me")
    probe.path.read_bytes()
    with pytest.raises(AssertionError, match="was read"):
        probe.check()


# ----------------------------------------------------------------------------- the round trip

AWKWARD = {"tab\there.txt": b"tab" * 10, "cr\rhere.txt": b"cr" * 20, "lf\nhere.txt": b"lf" * 30,
           '"quoted" first.txt': b"quote" * 4, "back\\slash.txt": b"\\" * 50,
           "trailing space.txt ": b"space " * 7, "plain.txt": b"plain\n"}


def test_failed_objects_with_any_name_come_back_through_errors_and_a_list_job(migration, tmp_path):
    write_tree(migration.src, AWKWARD)
    dest = tmp_path / "nas2"
    for key in AWKWARD:  # a folder where each file should go: all seven fail
        (dest / key).mkdir(parents=True)
    s = run_job(migration, {"destType": "local", "destDomain": str(dest)})
    assert s["JobState"] == "Failed" and s["Files"].startswith("0/7 done"), s
    assert len(error_lines(migration)) == 7

    failed_list = migration.dir / "f.list"
    r = migration.console("errors", "-o", str(failed_list))
    assert r.returncode == 0, r.stderr
    assert_no_traceback(migration, r.stdout, r.stderr)
    assert r.stderr.splitlines()[0].startswith("7 failed object(s) of job:local_test written to "
                                               f"{failed_list}"), r.stderr
    # One line per object whatever its name: the awkward ones as JSON strings, the rest raw.
    written = sorted(line.split(b"\t")[0] for line in failed_list.read_bytes().split(b"\n")[:-1])
    assert written == sorted([b'"tab\\there.txt"', b'"cr\\rhere.txt"', b'"lf\\nhere.txt"',
                              b'"\\"quoted\\" first.txt"', b"back\\slash.txt",
                              b"trailing space.txt ", b"plain.txt"])

    for key in AWKWARD:
        (dest / key).rmdir()
    migration.ok("stop")
    migration.ok("clean", "local_test")
    s = run_job(migration, {"srcType": "list", "listFilePath": str(failed_list), "listSrcType": "local",
                            "destType": "local", "destDomain": str(dest)})
    assert s["JobState"] == "Succeed" and s["Files"].startswith("7/7 done, succeed 7,"), s
    assert_copied_exactly(dest, AWKWARD)
    assert files_under(migration.src) == AWKWARD  # read, never changed


def test_a_named_key_the_source_lacks_fails_with_its_line_until_it_appears(migration, tmp_path):
    write_tree(migration.src, {"reports/q1.csv": b"a,b\n", "reports/q2.csv": b"c,d\n"})
    manifest = migration.dir / "keys.list"
    manifest.write_text("reports/q1.csv\nreports/q3.csv\nreports/q2.csv\n")
    dest = tmp_path / "nas2"
    dest.mkdir()
    job = {"srcType": "list", "listFilePath": str(manifest), "listSrcType": "local",
           "destType": "local", "destDomain": str(dest)}
    s = run_job(migration, job)
    assert s["JobState"] == "Failed" and s["Files"].startswith("2/3 done, succeed 2,"), s
    assert error_lines(migration) == [f"reports/q3.csv\tSOURCE_NOT_EXIST: named in {manifest}:2 but "
                                      f"not in the source".encode()]
    assert_copied_exactly(dest, {"reports/q1.csv": b"a,b\n", "reports/q2.csv": b"c,d\n"})
    # Once the file is there, a retry looks the key up again and copies it.
    write_tree(migration.src, {"reports/q3.csv": b"e,f\n"})
    r = migration.console("retry")
    assert r.returncode == 0, r.stderr
    s = migration.wait_state(timeout=60)
    assert_no_traceback(migration, r.stdout, r.stderr)
    assert s["JobState"] == "Succeed", s
    assert_copied_exactly(dest, {"reports/q1.csv": b"a,b\n", "reports/q2.csv": b"c,d\n",
                                 "reports/q3.csv": b"e,f\n"})


# ---------------------------------------------------------------------------- keys in bounds

def test_manifest_keys_that_leave_src_prefix_are_refused_line_by_line(migration, tmp_path):
    check_reading_shows(tmp_path)
    secret = Untouched(tmp_path / "outside" / "secret.txt")
    files = {"ok.txt": b"ok", "a/b.txt": b"ab"}
    write_tree(migration.src, files)
    manifest = migration.dir / "keys.list"
    lines = [b"ok.txt", b"../outside/secret.txt", b"a/../../outside/secret.txt", b"./ok.txt",
             b"a//b.txt", b"a/./b.txt", str(secret.path).encode(), b"a/b.txt\x00../../outside/secret.txt",
             b'"sub\\/..\\/..\\/outside/secret.txt"', b"a/b.txt"]
    manifest.write_bytes(b"\n".join(lines) + b"\n")
    dest = tmp_path / "nas2"
    dest.mkdir()
    s = run_job(migration, {"srcType": "list", "listFilePath": str(manifest), "listSrcType": "local",
                            "destType": "local", "destDomain": str(dest)})
    assert s["JobState"] == "Failed" and s["Files"].startswith("2/10 done, succeed 2,"), s

    def refused(n, key, written, problem):
        return (f"{written}\tINVALID_KEY: {manifest} line {n}: key '{key}' {problem}; list keys "
                f"relative to srcPrefix").encode()
    assert error_lines(migration) == sorted([
        refused(2, "../outside/secret.txt", "../outside/secret.txt", "has a '..' segment"),
        refused(3, "a/../../outside/secret.txt", "a/../../outside/secret.txt", "has a '..' segment"),
        refused(4, "./ok.txt", "./ok.txt", "has a '.' segment"),
        refused(5, "a//b.txt", "a//b.txt", "has an empty segment (two '/' in a row)"),
        refused(6, "a/./b.txt", "a/./b.txt", "has a '.' segment"),
        refused(7, secret.path, secret.path, "starts with '/' (an absolute path)"),
        refused(8, "a/b.txt\\u0000../../outside/secret.txt", '"a/b.txt\\u0000../../outside/secret.txt"',
                "holds a NUL character"),
        # A JSON-quoted key is checked once decoded: escaping the '/' hides nothing.
        refused(9, "sub/../../outside/secret.txt", "sub/../../outside/secret.txt", "has a '..' segment"),
    ])
    assert_copied_exactly(dest, files)
    assert files_under(migration.src) == files
    secret.check()
    assert sorted(p.name for p in secret.path.parent.iterdir()) == ["secret.txt"]


class RecordingHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.paths.append(self.path)
        super().do_GET()

    def do_HEAD(self):
        self.server.paths.append(self.path)
        super().do_HEAD()


@pytest.fixture
def web(tmp_path):
    """A loopback file server on tmp_path/www that records every path asked for."""
    root = tmp_path / "www"
    root.mkdir()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                          functools.partial(RecordingHandler, directory=str(root)))
    srv.paths, srv.root = [], root
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}"
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_http_list_keys_that_leave_bounds_are_refused_and_never_requested(migration, web):
    files = {"ok.txt": b"ok", "a/b.txt": b"ab", "c.txt": b"c"}
    write_tree(web.root, {**files, "outside/secret.txt": b"secret"})
    url_list = migration.dir / "urls.list"
    relatives = ["ok.txt", "../outside/secret.txt", "a/%2E%2E/%2e%2e/outside/secret.txt", "./ok.txt",
                 "a//b.txt", "a/b.txt%00.jpg", "a/b.txt"]
    url_list.write_text("".join(f"{web.base}/ {rel}\n" for rel in relatives) + f"{web.base} /c.txt\n")
    s = run_job(migration, {"srcType": "http", "httpListFilePath": str(url_list), "srcPrefix": "",
                            "destPrefix": "web/"})
    assert s["JobState"] == "Failed" and s["Files"].startswith("3/8 done, succeed 3,"), s

    def refused(n, key, problem, written=None):
        return (f"{written or key}\tINVALID_KEY: {url_list} line {n}: key '{key}' {problem}; the "
                f"relative path column is the destination key: write a plain relative path").encode()
    assert error_lines(migration) == sorted([
        refused(2, "../outside/secret.txt", "has a '..' segment"),
        refused(3, "a/../../outside/secret.txt", "has a '..' segment"),
        refused(4, "./ok.txt", "has a '.' segment"),
        refused(5, "a//b.txt", "has an empty segment (two '/' in a row)"),
        refused(6, "a/b.txt\\u0000.jpg", "holds a NUL character", '"a/b.txt\\u0000.jpg"'),
    ])
    # A leading '/' of the relative column is not part of the key (the http list's rule).
    assert_migrated(migration.bucket, {f"web/{key}": data for key, data in files.items()})
    asked = sorted(set(web.paths))
    assert asked == ["/a/b.txt", "/c.txt", "/ok.txt"], asked


# ----------------------------------------------------------------------------- siblings

def test_a_manifest_that_names_nothing_is_one_line_and_copies_nothing(migration, tmp_path):
    write_tree(migration.src, {"a.txt": b"a"})
    manifest = migration.dir / "keys.list"
    manifest.write_bytes(b"\r\n   \n\t\n")
    dest = tmp_path / "nas2"
    dest.mkdir()
    migration.write_conf(job_props={"srcType": "list", "listFilePath": str(manifest),
                                    "listSrcType": "local", "destType": "local",
                                    "destDomain": str(dest)})
    # Preflight refuses such a list at submit (test_preflight); past it, the scan says it too.
    migration.ok("submit", "--no-preflight", str(migration.job_file))
    migration.ok("start", "--no-preflight")
    want = (f"listFilePath {manifest} names no key (it is empty or holds only blank lines): nothing "
            f"to copy; write one key per line, or fix listFilePath")
    deadline = time.monotonic() + 30
    while want not in (out := migration.stat_text()):
        assert time.monotonic() < deadline, out
        time.sleep(0.3)
    assert "JobState:Succeed" not in out, out
    assert_no_traceback(migration, out)
    assert files_under(dest) == {}
    assert not migration.task_dirs("succeed_tasks") and not migration.task_dirs("failed_tasks")


def test_a_manifest_of_refused_lines_only_fails_every_line_and_writes_nothing(migration, tmp_path):
    check_reading_shows(tmp_path)
    secret = Untouched(tmp_path / "secret.txt")
    manifest = migration.dir / "keys.list"
    manifest.write_text("../secret.txt\n.\n")
    dest = tmp_path / "nas2"
    dest.mkdir()
    s = run_job(migration, {"srcType": "list", "listFilePath": str(manifest), "listSrcType": "local",
                            "destType": "local", "destDomain": str(dest)})
    assert s["JobState"] == "Failed" and s["Files"].startswith("0/2 done, succeed 0, skipped 0, "
                                                               "failed 2"), s
    assert error_lines(migration) == sorted([
        f"../secret.txt\tINVALID_KEY: {manifest} line 1: key '../secret.txt' has a '..' segment; "
        f"list keys relative to srcPrefix".encode(),
        f".\tINVALID_KEY: {manifest} line 2: key '.' has a '.' segment; list keys relative to "
        f"srcPrefix".encode()])
    assert files_under(dest) == {}
    secret.check()


def test_a_crlf_manifest_with_a_latin1_name_is_read_as_saved(migration, tmp_path):
    # Saved on Windows: CRLF line ends, one name in Latin-1 (not UTF-8), as the NAS holds it.
    latin1 = "caf\xe9.txt".encode("latin-1")
    write_tree(migration.src, {"docs/plain.txt": b"plain", os.fsdecode(b"docs/" + latin1): b"latin-1"})
    manifest = migration.dir / "keys.list"
    manifest.write_bytes(b"docs/plain.txt\r\ndocs/" + latin1 + b"\r\ndocs/gone\xff.txt\r\n\r\n")
    dest = tmp_path / "nas2"
    dest.mkdir()
    s = run_job(migration, {"srcType": "list", "listFilePath": str(manifest), "listSrcType": "local",
                            "destType": "local", "destDomain": str(dest)})
    assert s["JobState"] == "Failed" and s["Files"].startswith("1/3 done, succeed 1,"), s
    # The Latin-1 line names the very file the local source lists (its byte kept as a surrogate,
    # written as a JSON escape), and fails as that file fails in any job: no object key can hold
    # it. The missing one is named with its line.
    [named, missing] = error_lines(migration)
    key, reason = named.split(b"\t")
    assert json.loads(key) == os.fsdecode(b"docs/" + latin1) == "docs/caf\udce9.txt"
    assert reason.startswith(b"INVALID_KEY: file name is not valid UTF-8"), reason
    assert missing == (f'"docs/gone\\udcff.txt"\tSOURCE_NOT_EXIST: named in {manifest}:3 but not '
                       f'in the source').encode()
    assert_copied_exactly(dest, {"docs/plain.txt": b"plain"})
    # Gathered by console.sh errors, the lines stay exactly as written.
    failed_list = migration.dir / "f.list"
    r = migration.console("errors", "-o", str(failed_list))
    assert r.returncode == 0, r.stderr
    assert_no_traceback(migration, r.stdout, r.stderr)
    assert failed_list.read_bytes().splitlines() == [named, missing]
