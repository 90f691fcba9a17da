"""The emulator's own HTTP/1.1 request reader: the request line and header block read straight
from the connection's buffered reader.

``http.server`` parses every header block with ``email.parser``, which cost a third of the
emulator's CPU per small PUT; this reader keeps what the handlers rely on (names case-insensitive,
the first value wins for ``get``, every value for ``get_all``, values latin-1 decoded with leading
blanks dropped, folded lines joined) and answers malformed requests as ``http.server`` did
(400, 414, 431, 505, 501)."""

from __future__ import annotations

import html
from dataclasses import dataclass
from http import HTTPStatus
from typing import Dict, Iterator, List, Optional, Tuple

MAX_LINE = 65536
MAX_HEADERS = 100
METHODS = frozenset(['GET', 'PUT', 'POST', 'DELETE', 'HEAD', 'OPTIONS'])
REASONS = {s.value: s.phrase for s in HTTPStatus}


class Headers:
    """Request headers in wire order; lookups by lower-cased name."""

    __slots__ = ('_items', '_by_name')

    def __init__(self, items: Optional[List[Tuple[str, str]]] = None):
        self._items: List[Tuple[str, str]] = []
        self._by_name: Dict[str, List[str]] = {}  # lower-cased name -> its values in wire order
        for name, value in items or ():
            self[name] = value

    def __setitem__(self, name: str, value: str) -> None:
        # like email.message.Message: setting adds a value, it never replaces one
        self._items.append((name, value))
        self._by_name.setdefault(name.lower(), []).append(value)

    def get(self, name: str, default=None):
        values = self._by_name.get(name.lower())
        return values[0] if values else default

    def __getitem__(self, name: str) -> Optional[str]:
        return self.get(name)

    def __contains__(self, name) -> bool:
        return isinstance(name, str) and name.lower() in self._by_name

    def get_all(self, name: str, failobj=None):
        values = self._by_name.get(name.lower())
        return list(values) if values else failobj

    def items(self) -> List[Tuple[str, str]]:
        return list(self._items)

    def keys(self) -> List[str]:
        return [k for k, _ in self._items]

    def values(self) -> List[str]:
        return [v for _, v in self._items]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class Request:
    method: str
    path: str
    version: str
    headers: Headers
    keep_alive: bool
    expect_continue: bool


class BadRequest(Exception):
    """A request that cannot be served; answered with ``status`` and the connection closed."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def read_request(rfile) -> Optional[Request]:
    """The next request on a connection, None when the client closed it between requests."""
    line = rfile.readline(MAX_LINE + 1)
    while line in (b'\r\n', b'\n'):  # stray blank lines between requests are allowed (RFC 9112 2.2)
        line = rfile.readline(MAX_LINE + 1)
    if not line:
        return None
    if len(line) > MAX_LINE:
        raise BadRequest(414, 'Request-URI Too Long')
    words = line.decode('iso-8859-1').rstrip('\r\n').split()
    if len(words) != 3 or not words[2].startswith('HTTP/'):
        raise BadRequest(400, 'Bad request syntax (%r)' % line[:200])
    method, path, version = words
    try:
        major, minor = (int(x) for x in version[5:].split('.'))
    except ValueError:
        raise BadRequest(400, 'Bad request version (%r)' % version) from None
    if major >= 2:
        raise BadRequest(505, 'Invalid HTTP version (%s)' % version)
    headers = _read_headers(rfile)
    connection = (headers.get('Connection') or '').lower()
    keep_alive = (major, minor) >= (1, 1) and connection != 'close' or connection == 'keep-alive'
    expect = (headers.get('Expect') or '').lower() == '100-continue' and (major, minor) >= (1, 1)
    if method not in METHODS:
        raise BadRequest(501, 'Unsupported method (%r)' % method)
    return Request(method, path, version, headers, keep_alive, expect)


def _read_headers(rfile) -> Headers:
    lines: List[str] = []
    while True:
        raw = rfile.readline(MAX_LINE + 1)
        if len(raw) > MAX_LINE:
            raise BadRequest(431, 'Line too long')
        if raw in (b'\r\n', b'\n', b''):
            break
        line = raw.decode('iso-8859-1')
        if line[0] in ' \t' and lines:
            lines[-1] += line  # an obsolete folded line continues the previous value
            continue
        lines.append(line)
        if len(lines) > MAX_HEADERS:
            raise BadRequest(431, 'Too many headers')
    headers = Headers()
    for line in lines:
        name, sep, value = line.partition(':')
        if sep and name:
            headers[name] = value.lstrip(' \t').rstrip('\r\n')
    return headers


def error_response(status: int, message: str, date: str) -> bytes:
    text = ('<html><head><title>Error response</title></head><body><h1>Error response</h1>'
            '<p>Error code: %d</p><p>Message: %s.</p></body></html>\n' % (status, html.escape(message)))
    body = text.encode('utf-8', 'replace')
    head = ('HTTP/1.1 %d %s\r\nServer: AliyunOSS\r\nDate: %s\r\nConnection: close\r\n'
            'Content-Type: text/html;charset=utf-8\r\nContent-Length: %d\r\n\r\n'
            % (status, REASONS.get(status, ''), date, len(body)))
    return head.encode('latin-1') + body
