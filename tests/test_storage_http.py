"""The URL-list source against a real HTTP server on 127.0.0.1: list parsing, HEAD, ranged GETs,
redirects, missing and slow URLs, bodies cut short, and a copy into a local folder."""

import email.utils
import http.server
import threading
import time
from urllib.parse import quote, unquote

import pytest

from ossimport_dist import crc64
from ossimport_dist.errors import SourceError
from ossimport_dist.models import ObjectEntry, Outcome
from ossimport_dist.storage.errors import RequestFailed
from ossimport_dist.storage.http import HttpSource, ListFormatError
from ossimport_dist.storage.local import MTIME_HEADER, LocalDestination
from ossimport_dist.transfer import Transferer, TransferOptions

KIB = 1024
MTIME = 1700000000

FILES = {
    "docs/a.txt": b"hello world\n",
    "docs/\u00e9t\u00e9 #1 %2B+.txt": b"unicode name",
    "docs/with space.bin": bytes(range(256)) * 4,
    "empty": b"",
    "big.bin": bytes((i * 7) % 251 for i in range(300 * KIB)),
}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so connection reuse is visible

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        self.server.connections += 1

    def _send(self, status, body=b"", headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        if not any(name == "Content-Length" for name, _ in headers):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _serve(self):
        path = unquote(self.path.split("?")[0], errors="strict")
        self.server.requests.append((self.command, path, self.headers.get("Range")))
        if path.startswith("/moved/"):
            return self._send(302, headers=[("Location", "/files/" + quote(path[7:]))])
        if path == "/loop":
            return self._send(302, headers=[("Location", "/loop")])
        if path == "/slow":
            time.sleep(1.5)
            return self._send(200, b"late")
        if path == "/short":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(b"x" * 50)
            self.close_connection = True
            return None
        if path == "/broken":
            return self._send(503, b"try later")
        if path == "/nohead/a" and self.command == "HEAD":
            return self._send(405)
        name = path[len("/files/"):] if path.startswith("/files/") else path.lstrip("/")
        data = FILES.get(name)
        if data is None:
            return self._send(404, b"not found")
        headers = [("Last-Modified", email.utils.formatdate(MTIME, usegmt=True)),
                   ("Content-Type", "text/x-test"), ("Cache-Control", "max-age=60"),
                   ("Content-Disposition", "attachment"), ("X-Other", "dropped")]
        wanted = self.headers.get("Range")
        if wanted and self.server.ranges:
            start, _, end = wanted[len("bytes="):].partition("-")
            start = int(start)
            if start >= len(data):
                return self._send(416, headers=[("Content-Range", f"bytes */{len(data)}")])
            end = min(int(end), len(data) - 1) if end else len(data) - 1
            headers.append(("Content-Range", f"bytes {start}-{end}/{len(data)}"))
            return self._send(206, data[start:end + 1], headers)
        return self._send(200, data, headers)

    do_GET = do_HEAD = _serve


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.connections, srv.requests, srv.ranges = 0, [], True
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(5)


def write_list(tmp_path, text, name="urls.list"):
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return str(path)


def source_for(tmp_path, server, names=FILES, **kwargs):
    lines = [f"{server.base}/files/ {quote(name)}" for name in names]
    return HttpSource(write_list(tmp_path, "\n".join(lines) + "\n"), **kwargs)


def read_all(stream):
    try:
        chunks = []
        while True:
            piece = stream.read(7 * KIB)
            if not piece:
                return b"".join(chunks)
            chunks.append(piece)
    finally:
        stream.close()


# --------------------------------------------------------------------------- the list file

def test_listing_is_in_file_order_with_decoded_keys(tmp_path, server):
    src = source_for(tmp_path, server)
    entries = list(src.list())
    assert [e.key for e in entries] == list(FILES)
    assert all(e.size == 0 and e.mtime == 0 for e in entries)
    assert entries[1].src == f"{server.base}/files/{quote('docs/été #1 %2B+.txt')}"
    assert src.subtrees() == []


def test_comments_blank_lines_crlf_and_other_columns(tmp_path):
    path = write_list(tmp_path, "# exported 2026-11-25\r\n\r\n"
                                "x1  a/b.jpg   http://h.example/base/\r\n"
                                "   \t\r\n"
                                "x2\tc.jpg\thttps://h.example:8443/\r\n")
    src = HttpSource(path, prefix_column=3, relative_column=2)
    entries = list(src.list())
    assert [(e.key, e.src) for e in entries] == [
        ("a/b.jpg", "http://h.example/base/a/b.jpg"), ("c.jpg", "https://h.example:8443/c.jpg")]


def test_non_ascii_is_encoded_in_the_url_and_leading_slash_dropped_from_the_key(tmp_path):
    src = HttpSource(write_list(tmp_path, "http://h.example /dir/\u00e9.txt\n"))
    [entry] = src.list()
    assert entry.key == "dir/\u00e9.txt"
    assert entry.src == "http://h.example/dir/%C3%A9.txt"
    [entry] = HttpSource(write_list(tmp_path, "http://h.example/ 100%.txt\n")).list()
    assert (entry.key, entry.src) == ("100%.txt", "http://h.example/100%25.txt")


@pytest.mark.parametrize("text, line, words", [
    ("http://h/ a\nhttp://h/only-one-column\n", 2, "1 column(s), need 2"),
    ("http://h/ a\n\n# c\nftp://h/ b\n", 4, "scheme 'ftp'"),
    ("file:///etc/ passwd\n", 1, "scheme 'file'"),
    ("h.example/ a\n", 1, "scheme '(none)'"),
    ("http://h:99999/ a\n", 1, "bad URL"),
    ("http:/// a\n", 1, "no host"),
    ("http://h/ a/\n", 1, "does not name a file"),
    ("http://h/ %FF\n", 1, "not UTF-8"),
    ("http://h/ a\nhttp://h/ b\nhttp://other/ a\n", 3, "also on line 1"),
])
def test_bad_lines_name_the_file_and_line(tmp_path, text, line, words):
    path = write_list(tmp_path, text)
    with pytest.raises(ListFormatError) as info:
        list(HttpSource(path).list())
    message = str(info.value)
    assert message.startswith(f"Unknown http list file format: {path}:{line}: ")
    assert words in message
    assert isinstance(info.value, SourceError)


def test_list_file_problems_are_one_line_source_errors(tmp_path):
    with pytest.raises(SourceError, match="not an absolute path"):
        HttpSource("urls.list")
    with pytest.raises(SourceError, match="does not exist: create it or fix httpListFilePath"):
        list(HttpSource(str(tmp_path / "missing.list")).list())
    with pytest.raises(SourceError, match=r"urls.list:2: not valid UTF-8"):
        list(HttpSource(write_list(tmp_path, b"http://h/ a\nhttp://h/ \xff\n")).list())


def test_start_after_resumes_after_that_line_in_file_order(tmp_path):
    path = write_list(tmp_path, "".join(f"http://h/ {k}\n" for k in ["z", "b", "y", "a"]))
    src = HttpSource(path)
    assert [e.key for e in src.list(start_after="b")] == ["y", "a"]
    assert [e.key for e in src.list(start_after="a")] == []
    with pytest.raises(SourceError, match="key 'gone' is no longer in it"):
        list(src.list(start_after="gone"))


def test_task_boundary_where_the_host_changes(tmp_path):
    path = write_list(tmp_path, "http://a.example/ 1\nhttp://a.example/x/ 2\n"
                                "http://b.example/ 3\nhttp://b.example:81/ 4\nhttps://b.example:81/ 5\n")
    src = HttpSource(path)
    e = list(src.list())
    assert [src.task_boundary(p, n) for p, n in zip(e, e[1:])] == [False, True, True, True]
    # A bare entry (as rebuilt from an old task file) is resolved through the list.
    assert src.task_boundary(ObjectEntry("1", 0), ObjectEntry("3", 0)) is True


# --------------------------------------------------------------------------- HTTP

def test_stat_heads_size_mtime_and_headers(tmp_path, server):
    src = source_for(tmp_path, server)
    entry = src.stat("docs/with space.bin")
    assert (entry.size, entry.mtime) == (1024, MTIME)
    assert entry.headers == {"content-type": "text/x-test", "cache-control": "max-age=60",
                             "content-disposition": "attachment"}
    assert src.stat("empty").size == 0
    assert ("HEAD", "/files/docs/with space.bin", None) in server.requests


def test_stat_of_a_missing_url_or_key_is_none(tmp_path, server):
    src = source_for(tmp_path, server, names=["docs/a.txt", "nope"])
    assert src.stat("nope") is None
    assert src.stat("not-in-the-list") is None


def test_stat_falls_back_to_a_one_byte_get_when_head_is_refused(tmp_path, server):
    src = HttpSource(write_list(tmp_path, f"{server.base}/nohead/ a\n"))
    FILES["nohead/a"] = b"12345"
    try:
        assert src.stat("a").size == 5
    finally:
        del FILES["nohead/a"]
    assert ("GET", "/nohead/a", "bytes=0-0") in server.requests


def test_open_reads_whole_and_ranges_with_headers(tmp_path, server):
    src = source_for(tmp_path, server)
    entry = next(e for e in src.list() if e.key == "big.bin")
    stream = src.open(entry)
    assert stream.headers["content-type"] == "text/x-test"
    assert "x-other" not in stream.headers
    assert read_all(stream) == FILES["big.bin"]
    assert read_all(src.open(entry, 1000, 5000)) == FILES["big.bin"][1000:6000]
    assert read_all(src.open(entry, 300 * KIB - 10)) == FILES["big.bin"][-10:]
    assert ("GET", "/files/big.bin", "bytes=1000-5999") in server.requests


def test_a_server_ignoring_range_still_gives_the_right_bytes(tmp_path, server):
    server.ranges = False
    src = source_for(tmp_path, server)
    entry = ObjectEntry("big.bin", 0)
    assert read_all(src.open(entry, 70000, 100)) == FILES["big.bin"][70000:70100]


def test_connections_are_reused_by_a_thread(tmp_path, server):
    src = source_for(tmp_path, server)
    for entry in src.list():
        src.stat(entry.key)
        read_all(src.open(entry))
    assert server.connections == 1
    # A stream closed half-read must not poison the next request on that connection.
    stream = src.open(ObjectEntry("big.bin", 0))
    stream.read(10)
    stream.close()
    assert read_all(src.open(ObjectEntry("docs/a.txt", 0))) == FILES["docs/a.txt"]
    src.close()


def test_redirects_are_followed_but_bounded(tmp_path, server):
    src = HttpSource(write_list(tmp_path, f"{server.base}/moved/ docs/a.txt\n"
                                          f"{server.base}/ loop\n"))
    assert src.stat("docs/a.txt").size == len(FILES["docs/a.txt"])
    assert read_all(src.open(ObjectEntry("docs/a.txt", 0), 6, 5)) == b"world"
    with pytest.raises(RequestFailed, match="redirects") as info:
        src.open(ObjectEntry("loop", 0))
    assert not info.value.retryable


def test_missing_url_is_the_transfers_source_not_exist(tmp_path, server):
    src = source_for(tmp_path, server, names=["gone.txt"])
    with pytest.raises(FileNotFoundError, match="source file does not exist"):
        src.open(next(src.list()))


def test_server_errors_and_timeouts_are_retryable(tmp_path, server):
    src = HttpSource(write_list(tmp_path, f"{server.base}/ broken\n{server.base}/ slow\n"),
                     read_timeout=0.3)
    with pytest.raises(RequestFailed) as info:
        src.open(ObjectEntry("broken", 0))
    assert info.value.status == 503 and info.value.retryable
    started = time.monotonic()
    with pytest.raises(RequestFailed) as info:
        src.open(ObjectEntry("slow", 0))
    assert info.value.retryable and info.value.code == "Timeout"
    assert time.monotonic() - started < 1.4


def test_a_body_shorter_than_its_content_length_is_never_a_success(tmp_path, server):
    src = HttpSource(write_list(tmp_path, f"{server.base}/ short\n"))
    stream = src.open(ObjectEntry("short", 0))
    with pytest.raises(RequestFailed, match=r"body ended after 50 of 100 bytes") as info:
        read_all(stream)
    assert info.value.retryable


def test_nothing_is_listening_is_retryable(tmp_path):
    src = HttpSource(write_list(tmp_path, "http://127.0.0.1:9/ a\n"), connect_timeout=2)
    with pytest.raises(RequestFailed) as info:
        src.open(ObjectEntry("a", 0))
    assert info.value.status == 0 and info.value.retryable


# --------------------------------------------------------------------------- end to end

def test_copy_from_urls_into_a_local_folder(tmp_path, server):
    """What the transfer must do for a source without sizes: stat first, then copy."""
    src = source_for(tmp_path, server)
    dest_root = tmp_path / "dest"
    dest_root.mkdir()
    dest = LocalDestination(str(dest_root), "mirror/")
    transferer = Transferer(src, dest, TransferOptions(multipart_threshold=64 * KIB,
                                                       part_size=100 * KIB, parts_in_parallel=2),
                            throttle=None)
    for listed in src.list():
        entry = src.stat(listed)
        entry.headers[MTIME_HEADER] = str(entry.mtime)
        result = transferer.copy(entry, tmp_path / "state")
        assert result.outcome == Outcome.SUCCEED, result.detail
        assert result.crc64 == crc64.crc64(FILES[listed.key])
    for key, data in FILES.items():
        path = dest_root / "mirror" / key
        assert path.read_bytes() == data
        assert path.stat().st_mtime == MTIME
        assert dest.head(key).crc64 == crc64.crc64(data)
    assert not [p for p in (dest_root / ".ossimport-uploads").rglob("*") if p.is_file()]
    # The large file went in ranged parts.
    assert sum(1 for m, p, r in server.requests if p == "/files/big.bin" and r) >= 3
