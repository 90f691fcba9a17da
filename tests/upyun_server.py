"""A loopback test double of UPYUN's storage REST API, written from UPYUN's public docs.

It is not UPYUN and has never been compared with the real service: it answers exactly the calls
``ossimport_dist.storage.youpai`` makes, the way the public REST API documentation describes
them, over an in-memory tree:

- every request signed ``Authorization: UPYUN <operator>:<signature>``, the signature being
  base64(HMAC-SHA1(key=MD5 hex of the password, METHOD&URI&DATE)) with URI the path as sent;
  a wrong operator or signature, or a Date far from now, gets 401 and a JSON error body
  ``{"msg": ..., "code": ..., "id": ...}`` (codes here are illustrative, not UPYUN's table);
- ``GET /<service>/<folder>/`` lists a folder one page at a time (``x-list-limit``,
  ``x-list-iter``). With ``Accept: application/json`` it answers ``{"files": [{"name", "type",
  "length", "last_modified"}], "iter": ...}``, ``type`` being ``folder`` for folders and the MIME
  type for files; without it, the older text form, a line ``name<TAB>N|F<TAB>size<TAB>time`` per
  child (``F`` a folder), which UPYUN's own Python SDK reads. The page after the last one is
  marked ``g2gCZAAEbmV4dGQAA2VvZg`` in ``x-upyun-list-iter``.

UPYUN's official Python SDK (``upyun`` on PyPI) is run against this double in the tests, so its
signature and formats agree at least with what UPYUN ships to its own users.
- ``HEAD`` answers ``x-upyun-file-type``, ``x-upyun-file-size``, ``x-upyun-file-date``;
- ``GET`` of a file honours a single ``Range: bytes=a-b``.

With ``cdn=True`` it plays the service's public CDN domain instead: ``GET /<key>``, no signature.
``faults`` is a list of HTTP statuses returned (once each, in order) before normal answers.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import json
import mimetypes
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

LIST_END = "g2gCZAAEbmV4dGQAA2VvZg"
MAX_DATE_SKEW = 1800


class Tree:
    """Files by full path ('a/b.txt') with bytes and mtime; folders are implied by paths."""

    def __init__(self, files=None, mtime: int = 1_600_000_000):
        self.files = {}
        self.folders = {""}
        for path, data in (files or {}).items():
            self.put(path, data, mtime)

    def put(self, path: str, data: bytes, mtime: int = 1_600_000_000) -> None:
        self.files[path] = (data, int(mtime))
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            self.folders.add("/".join(parts[:i]))

    def children(self, folder: str) -> list:
        """[(name, is_dir, size, mtime)] directly in ``folder`` ('' or 'a/b'), sorted by name."""
        base = folder + "/" if folder else ""
        out = {}
        for path, (data, mtime) in self.files.items():
            if path.startswith(base):
                rest = path[len(base):]
                name, slash, _ = rest.partition("/")
                if slash:
                    out.setdefault(name, (name, True, 0, mtime))
                else:
                    out[name] = (name, False, len(data), mtime)
        # The server's own order (by plain name) puts a folder 'a' before 'a b', unlike keys.
        return sorted(out.values())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "upyun-test-double"
    # Headers and body go out in two writes: with Nagle on, each answer waits for a delayed ACK.
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    # ------------------------------------------------------------------ plumbing

    def _send(self, status: int, body: bytes = b"", headers=None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("x-request-id", uuid.uuid4().hex)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, msg: str, code: int) -> None:
        body = json.dumps({"msg": msg, "code": code, "id": uuid.uuid4().hex}).encode()
        self._send(status, body, {"Content-Type": "application/json"})

    def _authorized(self) -> bool:
        srv = self.server
        auth = self.headers.get("Authorization", "")
        date = self.headers.get("Date", "")
        if not date:
            self._error(401, "need date header", 40100005)
            return False
        try:
            when = email.utils.parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError):
            when = 0
        if abs(time.time() - when) > MAX_DATE_SKEW:
            self._error(401, "date offset error", 40100008)
            return False
        scheme, _, rest = auth.partition(" ")
        operator, _, signature = rest.partition(":")
        if scheme != "UPYUN" or operator != srv.operator:
            self._error(401, "user not exists", 40100006)
            return False
        key = hashlib.md5(srv.password.encode()).hexdigest().encode()
        to_sign = f"{self.command}&{self.path}&{date}"
        expected = base64.b64encode(hmac.new(key, to_sign.encode(), hashlib.sha1).digest())
        if not hmac.compare_digest(expected.decode(), signature):
            self._error(401, "sign error", 40100005)
            return False
        return True

    def _fault(self) -> bool:
        with self.server.lock:
            status = self.server.faults.pop(0) if self.server.faults else None
        if status is None:
            return False
        messages = {429: "too many requests", 503: "service unavailable"}
        self._error(status, messages.get(status, "internal error"), status * 100000)
        return True

    def _record(self) -> None:
        with self.server.lock:
            self.server.requests.append((self.command, self.path, dict(self.headers)))

    # ------------------------------------------------------------------ methods

    def do_HEAD(self):
        self._dispatch()

    def do_GET(self):
        self._dispatch()

    def _dispatch(self):
        self._record()
        if self._fault():
            return
        srv = self.server
        raw = self.path.split("?", 1)[0]
        path = unquote(raw)  # '+' stays '+': a path is not a form
        if srv.cdn:
            return self._object(path.lstrip("/"))
        if not self._authorized():
            return
        service, _, rest = path.lstrip("/").partition("/")
        if service != srv.service:
            return self._error(401, "bucket not exist", 40100012)
        if rest.endswith("/") or rest == "" or rest in srv.tree.folders:
            folder = rest.rstrip("/")
            if folder not in srv.tree.folders:
                return self._error(404, "file or directory not found", 40400001)
            if self.command == "HEAD":
                return self._send(200, headers={"x-upyun-file-type": "folder"})
            return self._list(folder)
        return self._object(rest)

    def _list(self, folder: str):
        try:
            limit = max(1, min(10000, int(self.headers.get("x-list-limit", "100"))))
        except ValueError:
            return self._error(400, "x-list-limit error", 40000001)
        token = self.headers.get("x-list-iter", "")
        start = 0
        if token:
            try:
                start = int(base64.b64decode(token).decode())
            except ValueError:
                return self._error(400, "x-list-iter error", 40000002)
        children = self.server.tree.children(folder)
        page = children[start:start + limit]
        nxt = start + limit
        token = base64.b64encode(str(nxt).encode()).decode() if nxt < len(children) else LIST_END
        if "json" not in self.headers.get("Accept", ""):
            text = "\n".join(f"{name}\t{'F' if is_dir else 'N'}\t{size}\t{mtime}"
                             for name, is_dir, size, mtime in page)
            return self._send(200, text.encode(), {"Content-Type": "text/plain; charset=utf-8",
                                                   "x-upyun-list-iter": token})
        files = [{"name": name,
                  "type": "folder" if is_dir else (mimetypes.guess_type(name)[0] or
                                                   "application/octet-stream"),
                  "length": size, "last_modified": mtime}
                 for name, is_dir, size, mtime in page]
        body = json.dumps({"files": files, "iter": token}).encode()
        self._send(200, body, {"Content-Type": "application/json", "x-upyun-list-iter": token})

    def _object(self, path: str):
        found = self.server.tree.files.get(path)
        if found is None:
            return self._error(404, "file or directory not found", 40400001)
        data, mtime = found
        headers = {"Content-Type": mimetypes.guess_type(path)[0] or "application/octet-stream",
                   "Last-Modified": email.utils.formatdate(mtime, usegmt=True),
                   "Accept-Ranges": "bytes"}
        if not self.server.cdn:
            headers.update({"x-upyun-file-type": "file", "x-upyun-file-size": str(len(data)),
                            "x-upyun-file-date": str(mtime)})
        if self.command == "HEAD":
            self.send_response(200)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            return
        rng = self.headers.get("Range", "")
        if rng.startswith("bytes="):
            first, _, last = rng[6:].partition("-")
            start = int(first)
            end = int(last) if last else len(data) - 1
            end = min(end, len(data) - 1)
            if start >= len(data):
                headers["Content-Range"] = f"bytes */{len(data)}"
                return self._send(416, b"", headers)
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            return self._send(206, data[start:end + 1], headers)
        self._send(200, data, headers)


class UpyunServer:
    """The double on 127.0.0.1 and a free port, serving in a daemon thread until ``stop()``."""

    def __init__(self, tree: Tree, service: str = "svc", operator: str = "op",
                 password: str = "", cdn: bool = False):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.tree, self.httpd.service, self.httpd.cdn = tree, service, cdn
        self.httpd.operator, self.httpd.password = operator, password
        self.httpd.lock = threading.Lock()
        self.httpd.faults = []
        self.httpd.requests = []
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.1}, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def requests(self) -> list:
        with self.httpd.lock:
            return list(self.httpd.requests)

    def set_faults(self, statuses) -> None:
        with self.httpd.lock:
            self.httpd.faults[:] = list(statuses)

    def start(self) -> "UpyunServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
