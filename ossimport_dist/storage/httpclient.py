"""The one HTTP/1.1 client of the drivers that speak REST themselves: the lean OSS/S3 path
(``lean.py``), the URL list (``http.py``) and UPYUN (``youpai.py``).

Each thread keeps one idle connection per (scheme, host, port): a request takes it out, and it
goes back only once its response was read to the end and the server did not ask to close, so
unread body bytes are never taken for the next response. A connection is opened with the connect
timeout and then reads with the read timeout: no wait is unbounded.

A kept-alive connection the server closed while it sat idle fails on its first bytes
(BrokenPipe, ConnectionReset, RemoteDisconnected): that request is sent again once, on a fresh
connection. A fresh connection cannot be stale, so its failures are real. Every transport error
is a retryable ``RequestFailed`` of status 0; one that could not even connect says so
(``connect_failed``: "never connected" is what the fatal detector counts, a timeout is not).
"""

from __future__ import annotations

import http.client
import socket
import threading
import weakref
from dataclasses import dataclass
from typing import Optional
from urllib.parse import urlsplit

from .base import BoundedReader
from .errors import RequestFailed, connect_failed

CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0

# How a kept-alive connection the server closed while idle fails on reuse.
_STALE_ERRORS = (ConnectionError, http.client.BadStatusLine)
_TRANSPORT_ERRORS = (OSError, http.client.HTTPException)


@dataclass(frozen=True)
class Origin:
    """Where a connection goes."""

    scheme: str  # "http" or "https"
    host: str
    port: Optional[int]

    @property
    def hostport(self) -> str:
        """host[:port] as a Host header and a URL write it (an IPv6 address in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.hostport}"


def origin_of(url: str) -> Origin:
    """The origin of an http(s) URL; ValueError when it has no host or a port out of range."""
    parts = urlsplit(url)
    port = parts.port
    if not parts.hostname:
        raise ValueError(f"no host in URL '{url}'")
    return Origin(parts.scheme.lower(), parts.hostname, port)


def transport_failure(exc: BaseException, label: str = "", *, operation: str = "",
                      key: str = "") -> RequestFailed:
    """The retryable RequestFailed of a request whose connection broke or timed out; ``label``
    (the URL, "reading <url>") goes before the error's own words."""
    code = "Timeout" if isinstance(exc, socket.timeout) else type(exc).__name__
    text = str(exc) or ("connection lost" if isinstance(exc, _STALE_ERRORS) else code)
    return RequestFailed(0, code, f"{label}: {text}" if label else text, retryable=True,
                         operation=operation, key=key)


def lower_headers(resp) -> dict:
    return {k.lower(): v for k, v in resp.getheaders()}


class HttpClient:
    """Kept-alive connections, one idle per thread and origin. ``role`` ("src"/"dest") names
    the keys that point at an endpoint that takes no connection."""

    def __init__(self, connect_timeout: float = CONNECT_TIMEOUT,
                 read_timeout: float = READ_TIMEOUT, role: str = ""):
        self.connect_timeout, self.read_timeout, self.role = connect_timeout, read_timeout, role
        self._local = threading.local()
        self._all_lock = threading.Lock()
        # Weak: a connection dies with the (short-lived part-upload) thread that kept it.
        self._all = weakref.WeakSet()

    def _idle(self) -> dict:
        idle = getattr(self._local, "idle", None)
        if idle is None:
            idle = self._local.idle = {}
        return idle

    def _take(self, origin: Origin):
        """(connection, fresh), the connection now the caller's; OSError when none opens."""
        conn = self._idle().pop(origin, None)
        if conn is not None and conn.sock is not None:  # not one close() shut meanwhile
            return conn, False
        https = origin.scheme == "https"
        cls = http.client.HTTPSConnection if https else http.client.HTTPConnection
        conn = cls(origin.host, origin.port, timeout=self.connect_timeout)
        try:
            conn.connect()
        except BaseException:
            conn.close()
            raise
        conn.sock.settimeout(self.read_timeout)
        try:
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # not a TCP socket the OS tunes: only latency is at stake
        conn.ossimport_origin = origin
        with self._all_lock:
            self._all.add(conn)
        return conn, True

    def release(self, conn, resp) -> None:
        """Gives back a connection whose response ``resp`` was read to its end."""
        idle = self._idle()
        origin = conn.ossimport_origin
        if resp.will_close or not resp.isclosed() or origin in idle:
            self.discard(conn)
        else:
            idle[origin] = conn

    def discard(self, conn) -> None:
        with self._all_lock:
            self._all.discard(conn)
        conn.close()

    def drain(self, conn, resp) -> bytes:
        """The rest of a response not streamed (an error's body, a redirect's): b"" when it
        cannot be read; the connection goes back when it can be reused."""
        try:
            body = resp.read()
        except _TRANSPORT_ERRORS:
            self.discard(conn)
            return b""
        self.release(conn, resp)
        return body

    def close(self) -> None:
        with self._all_lock:
            conns, self._all = list(self._all), weakref.WeakSet()
        for conn in conns:
            conn.close()

    def _exchange(self, origin: Origin, method: str, path: str, headers: dict,
                  body: Optional[bytes], read: bool, label: str, operation: str, key: str):
        for attempt in (1, 2):
            try:
                conn, fresh = self._take(origin)
            except OSError as exc:
                # Only a request for a URL is named: a store's endpoint failure is the store's.
                named = {"operation": operation, "key": key} if key else {}
                raise connect_failed(exc, origin.url, self.role, **named) from exc
            try:
                conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
                for name, value in {"Host": origin.hostport, **headers}.items():
                    conn.putheader(name, value)
                if body is not None:
                    conn.putheader("Content-Length", str(len(body)))
                conn.endheaders(body or None)
                resp = conn.getresponse()
                return conn, resp, (resp.read() if read else None)
            except _TRANSPORT_ERRORS as exc:
                self.discard(conn)
                if not fresh and attempt == 1 and isinstance(exc, _STALE_ERRORS):
                    continue  # the server closed an idle kept-alive connection: reconnect once
                raise transport_failure(exc, label, operation=operation, key=key) from exc
        raise AssertionError("unreachable")

    def send(self, origin: Origin, method: str, path: str, headers: dict, *,
             body: Optional[bytes] = None, label: str = "", operation: str = "", key: str = ""):
        """(connection, response) with the body unread: the connection is the caller's until
        ``release``, ``discard`` or ``drain`` (a ``ResponseStream`` does it when closed).
        ``headers`` may hold Host (signed by the caller); else it is the origin's."""
        conn, resp, _ = self._exchange(origin, method, path, headers, body, False, label,
                                       operation, key)
        return conn, resp

    def fetch(self, origin: Origin, method: str, path: str, headers: dict, *,
              body: Optional[bytes] = None, label: str = "", operation: str = "", key: str = ""):
        """(status, lower-cased headers, body) of a request whose answer is small. A body that
        breaks on a reused connection counts as stale too: the request is sent again once."""
        conn, resp, data = self._exchange(origin, method, path, headers, body, True, label,
                                          operation, key)
        self.release(conn, resp)
        return resp.status, lower_headers(resp), data


class ResponseStream(BoundedReader):
    """A streamed response body that refuses to end early: fewer bytes than Content-Length is a
    retryable IncompleteBody. Its connection goes back to the client once the body is read to
    the end; closed half-read, it is dropped. ``headers`` is what the copy carries over."""

    def __init__(self, client: HttpClient, conn, resp, where: str, *, skip: int = 0,
                 length: Optional[int] = None, headers: Optional[dict] = None,
                 operation: str = "GET", key: str = ""):
        super().__init__(length, skip)
        self._client, self._conn, self._resp, self.where = client, conn, resp, where
        self.headers = headers or {}
        self._operation, self._key = operation, key
        self._expected = resp.length  # None for chunked or close-delimited bodies
        self._got = 0

    def _raw(self, size: int) -> bytes:
        try:
            data = self._resp.read(size)
        except _TRANSPORT_ERRORS as exc:
            self._drop()
            raise transport_failure(exc, f"reading {self.where}", operation=self._operation,
                                    key=self._key) from exc
        self._got += len(data)
        if not data and self._expected is not None and self._got < self._expected:
            self._drop()
            raise RequestFailed(0, "IncompleteBody",
                                f"{self.where}: body ended after {self._got} of "
                                f"{self._expected} bytes (Content-Length)", retryable=True,
                                operation=self._operation, key=self._key)
        self._give_back_if_read()
        return data

    def _give_back_if_read(self) -> None:
        if self._conn is not None and self._resp.isclosed():
            self._client.release(self._conn, self._resp)
            self._conn = None

    def _drop(self) -> None:
        if self._conn is not None:
            self._client.discard(self._conn)
            self._conn = None

    def close(self) -> None:
        try:
            self._give_back_if_read()
            # Unread body bytes would be taken for the next response: such a connection goes.
            self._drop()
            self._resp.close()
        finally:
            super().close()
