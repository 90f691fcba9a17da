"""A list of URLs as a source (srcType=http).

``httpListFilePath`` names a text file, one object per line, whitespace-separated columns:
the URL is column ``httpPrefixColumn`` followed directly by column ``relativePathColumn``,
and the relative column (percent-decoded, leading '/' removed) is the key. Since columns are
split on whitespace, a name with a space is written ``%20`` and comes back as a space in the key;
the URL is requested as written, with only characters that cannot travel in a request line
(non-ASCII, controls) percent-encoded.

A relative path whose key would not be a plain name under the destination prefix ('..', '.' or
empty segments, NUL) is listed refused ``INVALID_KEY`` naming the file and line, and its URL is
never requested; the job goes on with the other lines (``listformat.key_problem``, the check the
manifest source shares).

There is no tree: entries come in file order, ``start_after`` means "after the line with that
key", and ``subtrees()`` is empty. Sizes are not in the list: ``list()`` says 0 and the real
size comes from ``stat()`` (HEAD) or the download itself (see ``Features.sizes_known``).

Each entry carries its full URL in ``entry.src`` (serialised by the task file as "u"), so a
worker needs nothing but the entry; a bare key is resolved through the list file as a fallback.
"""

from __future__ import annotations

import email.utils
import io
import re
import threading
from typing import Iterator, Optional, Union
from urllib.parse import quote, unquote, urljoin, urlsplit

from ..errors import SourceError
from ..listformat import absolute_list_path, invalid_key_reason, list_file_text, listed_rows, one_line
from ..models import ObjectEntry
from .base import PROBE_LINES, Features, Source, once_per_key
from .errors import RequestFailed
from .httpclient import CONNECT_TIMEOUT, READ_TIMEOUT, HttpClient, ResponseStream, origin_of
MAX_REDIRECTS = 5
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
GONE_STATUSES = (404, 410)

# Response headers a copy carries to its destination object.
PASS_THROUGH_HEADERS = ("content-type", "content-encoding", "cache-control", "content-disposition")

# Characters a URL may hold as written; everything else (non-ASCII, controls) is %-encoded.
_URL_SAFE = "!#$%&'()*+,-./:;=?@[]~_"
_LONE_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _as_url(text: str) -> str:
    """``text`` made sendable: existing %XX escapes kept, a lone '%' and non-ASCII encoded."""
    return quote(_LONE_PERCENT.sub("%25", text), safe=_URL_SAFE)


def _http_date(text: Optional[str]) -> float:
    if not text:
        return 0.0
    try:
        return email.utils.parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError, IndexError):
        return 0.0


def entry_url(entry: ObjectEntry) -> Optional[str]:
    """The URL an entry was listed with, when it carries one."""
    return getattr(entry, "src", None)


def _with_url(entry: ObjectEntry, url: str) -> ObjectEntry:
    # ``src`` is the proposed ObjectEntry field; until it exists it is a plain attribute.
    entry.src = url
    return entry


class ListFormatError(SourceError):
    """A line of the URL list cannot be read."""

    def __init__(self, path: str, line: int, what: str):
        self.path, self.line = path, line
        super().__init__(f"Unknown http list file format: {path}:{line}: {what}")


class HttpReader(ResponseStream):
    """A GET body (``ResponseStream``: fewer bytes than promised is a retryable failure).
    ``size`` is the whole object's size when the server said it (Content-Length or
    Content-Range), else None."""

    def __init__(self, client: HttpClient, conn, response, url: str, skip: int,
                 length: Optional[int], size: Optional[int], headers: dict):
        super().__init__(client, conn, response, url, skip=skip, length=length, headers=headers,
                         key=url)
        self.url, self.size = url, size


class HttpSource(Source):
    kind = "http"
    # list() gives size 0 / mtime 0: the transfer takes size and mtime from stat() before
    # choosing single PUT or multipart.
    features = Features(lists_by_folder=False, sizes_known=False)

    def __init__(self, list_path: str, prefix_column: int = 1, relative_column: int = 2, *,
                 connect_timeout: float = CONNECT_TIMEOUT, read_timeout: float = READ_TIMEOUT):
        absolute_list_path(list_path, "httpListFilePath", "/data/url.list")
        if prefix_column < 1 or relative_column < 1 or prefix_column == relative_column:
            raise SourceError(f"httpPrefixColumn={prefix_column} and relativePathColumn="
                              f"{relative_column} must be different column numbers from 1")
        self.list_path = list_path
        self.prefix_column, self.relative_column = prefix_column, relative_column
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self._http = HttpClient(connect_timeout, read_timeout, role="src")
        self._index_lock = threading.Lock()
        self._index = None  # key -> URL, built only when asked about a key without its entry

    @classmethod
    def from_job(cls, job, sys_cfg=None):
        return cls(job.http_list_file_path, job.http_prefix_column, job.relative_path_column)

    # ------------------------------------------------------------------ the list file

    def _lines(self) -> Iterator[tuple]:
        """(line number, text) of every non-blank, non-comment line."""
        def not_utf8(number: int) -> ListFormatError:
            return ListFormatError(self.list_path, number,
                                   "not valid UTF-8; save the list as UTF-8")

        for number, text in list_file_text(self.list_path, "httpListFilePath", not_utf8):
            text = text.strip()
            if not text.startswith("#"):
                yield number, text

    def _parse(self, number: int, text: str) -> tuple:
        """(key, url, refusal or None) of one line."""
        columns = text.split()
        need = max(self.prefix_column, self.relative_column)
        if len(columns) < need:
            raise ListFormatError(self.list_path, number,
                                  f"{len(columns)} column(s), need {need} (httpPrefixColumn="
                                  f"{self.prefix_column}, relativePathColumn="
                                  f"{self.relative_column})")
        prefix = columns[self.prefix_column - 1]
        relative = columns[self.relative_column - 1]
        url = _as_url(prefix + relative)
        try:
            parts = urlsplit(url)
            parts.port  # a port that is not a number in 0..65535 raises ValueError here
        except ValueError as exc:
            raise ListFormatError(self.list_path, number, f"bad URL '{prefix + relative}': "
                                  f"{exc}") from None
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise ListFormatError(self.list_path, number,
                                  f"scheme '{parts.scheme or '(none)'}' in '{prefix}' is not "
                                  f"supported: only http:// and https:// URLs")
        if not parts.hostname:
            raise ListFormatError(self.list_path, number, f"no host in URL '{prefix + relative}'")
        try:
            key = unquote(relative, errors="strict")
        except UnicodeDecodeError:
            raise ListFormatError(self.list_path, number,
                                  f"relative path '{relative}' decodes to bytes that are not "
                                  f"UTF-8") from None
        key = key.lstrip("/")
        if not key or key.endswith("/"):
            raise ListFormatError(self.list_path, number,
                                  f"relative path '{relative}' does not name a file (the key "
                                  f"must be non-empty and not end with '/')")
        return key, url, invalid_key_reason(self.list_path, number, key,
                                            "the relative path column is the destination key: "
                                            "write a plain relative path")

    def _entries(self) -> Iterator[tuple]:
        """(line number, key, url, refusal) in file order; a key seen twice stops the listing."""
        return once_per_key(self._lines, self._parse, lambda number, key, first: ListFormatError(
            self.list_path, number, f"key '{one_line(key)}' is also on line {first}; each key is "
                                    f"a destination object, so it may appear once"))

    def list(self, subtree: str = "", recursive: bool = True,
             start_after: Optional[str] = None) -> Iterator[ObjectEntry]:
        for _, key, url, refusal in listed_rows(self._entries(), self.list_path, subtree, recursive, start_after):
            yield _with_url(ObjectEntry(key=key, size=0, mtime=0.0, refused=refusal), url)

    def subtrees(self, subtree: str = "") -> list:
        return []

    def task_boundary(self, prev: ObjectEntry, entry: ObjectEntry) -> bool:
        """True when ``entry``'s URL is on another host than ``prev``'s: tasks are cut there."""
        def host(e):
            parts = urlsplit(entry_url(e) or self._url_of(e.key))
            return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port
        return host(prev) != host(entry)

    def _url_of(self, key: str) -> str:
        with self._index_lock:
            if self._index is None:
                self._index = {k: u for _, k, u, refused in self._entries() if not refused}
            url = self._index.get(key)
        if url is None:
            raise FileNotFoundError(f"'{key}' is not in {self.list_path}")
        return url

    def _target(self, what: Union[str, ObjectEntry]) -> tuple:
        if isinstance(what, ObjectEntry):
            return what.key, entry_url(what) or self._url_of(what.key)
        return what, self._url_of(what)

    # ------------------------------------------------------------------ HTTP

    def close(self) -> None:
        self._http.close()

    def _send(self, method: str, url: str, headers: dict):
        """(connection, response) of one request, redirects not followed."""
        parts = urlsplit(url)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        # Bytes as stored: a gzip file stays gzip, Content-Encoding travels as a header.
        return self._http.send(origin_of(url), method, path,
                               {"Accept-Encoding": "identity", **headers}, label=url,
                               operation=method, key=url)

    def _request(self, method: str, url: str, headers: dict):
        """(connection, response, final URL), redirects followed; the body is left unread."""
        for _ in range(MAX_REDIRECTS + 1):
            conn, resp = self._send(method, url, headers)
            if resp.status not in REDIRECT_STATUSES:
                return conn, resp, url
            location = resp.getheader("Location")
            self._http.drain(conn, resp)
            if not location:
                raise RequestFailed(resp.status, "NoLocation", f"{url}: redirect without a "
                                    f"Location header", retryable=False, operation=method,
                                    key=url)
            target = _as_url(urljoin(url, location.strip()))
            if urlsplit(target).scheme.lower() not in ("http", "https"):
                raise RequestFailed(resp.status, "BadRedirect", f"{url} redirects to "
                                    f"'{location}', which is not http(s)", retryable=False,
                                    operation=method, key=url)
            try:
                origin_of(target)
            except ValueError as exc:
                raise RequestFailed(resp.status, "BadRedirect", f"{url} redirects to "
                                    f"'{location}': {exc}", retryable=False, operation=method,
                                    key=url) from None
            url = target
        raise RequestFailed(0, "TooManyRedirects", f"more than {MAX_REDIRECTS} redirects",
                            retryable=False, operation=method, key=url)

    def _failed(self, method: str, url: str, conn, resp) -> RequestFailed:
        reason = resp.reason or ""
        self._http.drain(conn, resp)
        return RequestFailed(resp.status, "", reason, operation=method, key=url)

    # ------------------------------------------------------------------ the interface

    def stat(self, key: Union[str, ObjectEntry]) -> Optional[ObjectEntry]:
        """HEAD (or a one-byte GET where HEAD is refused); accepts a key or an entry."""
        try:
            rel, url = self._target(key)
        except FileNotFoundError:
            return None
        conn, resp, final = self._request("HEAD", url, {})
        if resp.status in GONE_STATUSES:
            self._http.drain(conn, resp)
            return None
        size = None
        if resp.status in (405, 501) or (resp.status == 200 and
                                         resp.getheader("Content-Length") is None):
            # HEAD refused, or no size in its answer: a one-byte range says the total.
            self._http.drain(conn, resp)
            conn, resp, final = self._request("GET", url, {"Range": "bytes=0-0"})
            if resp.status in GONE_STATUSES:
                self._http.drain(conn, resp)
                return None
            if resp.status == 206:
                size = _range_total(resp.getheader("Content-Range"))
            elif resp.status == 416:
                size = 0  # no byte 0: the object is empty
            elif resp.status == 200:
                # The server ignored Range: read the size from the headers, not the body.
                length = resp.getheader("Content-Length")
                size = int(length) if length is not None else None
                headers = {k.lower(): v for k, v in resp.getheaders()}
                self._http.discard(conn)
                return self._stat_entry(rel, url, size, headers)
        elif resp.status == 200:
            size = int(resp.getheader("Content-Length"))
        if not (200 <= resp.status < 300) and resp.status != 416:
            raise self._failed("HEAD", final, conn, resp)
        headers = {k.lower(): v for k, v in resp.getheaders()}
        self._http.drain(conn, resp)
        return self._stat_entry(rel, url, size, headers)

    def probe(self, timeout: float) -> None:
        """The first lines of the list parse, and the first URL that is not refused answers a
        HEAD (or a GET of byte 0 where HEAD is refused), read with ``timeout``."""
        first = None
        for _, (number, text) in zip(range(PROBE_LINES), self._lines()):
            key, url, refusal = self._parse(number, text)
            if first is None and refusal is None:
                first = (number, key, url)
        if first is None:
            return  # nothing to ask: the listing says what the lines are
        number, key, url = first
        quick = HttpSource(self.list_path, self.prefix_column, self.relative_column,
                           connect_timeout=timeout, read_timeout=timeout)
        try:
            found = quick.stat(_with_url(ObjectEntry(key=key, size=0), url))
        finally:
            quick.close()
        if found is None:
            raise SourceError(f"the first URL of httpListFilePath {self.list_path} (line {number}), "
                              f"{url}, is not there (HTTP 404 or 410): fix the list or the server")

    @staticmethod
    def _stat_entry(rel: str, url: str, size: Optional[int], headers: dict) -> ObjectEntry:
        entry = ObjectEntry(key=rel, size=size if size is not None else -1,
                            mtime=_http_date(headers.get("last-modified")),
                            headers={k: v for k, v in headers.items() if k in PASS_THROUGH_HEADERS})
        return _with_url(entry, url)

    def open(self, entry: ObjectEntry, offset: int = 0, length: Optional[int] = None):
        """Raises FileNotFoundError (the transfer's "source file does not exist") on 404/410."""
        _, url = self._target(entry)
        headers = {}
        if offset or length is not None:
            if length == 0:
                return io.BytesIO(b"")
            end = "" if length is None else str(offset + length - 1)
            headers["Range"] = f"bytes={offset}-{end}"
        conn, resp, final = self._request("GET", url, headers)
        if resp.status in GONE_STATUSES:
            self._http.drain(conn, resp)
            raise FileNotFoundError(f"{final}: HTTP {resp.status}, source file does not exist")
        skip = 0
        if resp.status == 206:
            start = _range_start(resp.getheader("Content-Range"))
            if start != offset:
                self._http.discard(conn)
                raise RequestFailed(206, "BadContentRange", f"asked for bytes from {offset}, "
                                    f"got Content-Range '{resp.getheader('Content-Range')}'",
                                    retryable=True, operation="GET", key=final)
            size = _range_total(resp.getheader("Content-Range"))
        elif resp.status == 200:
            skip = offset if headers else 0
            size = resp.length
        else:
            raise self._failed("GET", final, conn, resp)
        keep = {k.lower(): v for k, v in resp.getheaders() if k.lower() in PASS_THROUGH_HEADERS}
        return HttpReader(self._http, conn, resp, final, skip, length, size, keep)


def _range_start(content_range: Optional[str]) -> Optional[int]:
    try:
        return int(content_range.split()[1].split("-")[0])
    except (AttributeError, IndexError, ValueError):
        return None


def _range_total(content_range: Optional[str]) -> Optional[int]:
    try:
        total = content_range.rsplit("/", 1)[1]
        return None if total == "*" else int(total)
    except (AttributeError, IndexError, ValueError):
        return None
