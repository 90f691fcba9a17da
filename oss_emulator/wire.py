"""What the handler parts share about requests and responses: the headers an object keeps, dates,
query parameters, listing tokens, XML bodies."""

from __future__ import annotations

import base64
import binascii
import os
import time
from email.utils import mktime_tz, parsedate_tz
from typing import Dict, Optional
from xml.etree import ElementTree

from .store import StoreError

STORED_HEADERS = ('content-type', 'content-encoding', 'cache-control', 'content-disposition', 'expires',
                  'content-language', 'x-oss-server-side-encryption', 'x-oss-server-side-encryption-key-id',
                  'x-oss-server-side-data-encryption')
GZIP_TYPES = ('text/', 'application/javascript', 'application/x-javascript', 'application/json',
              'application/xml', 'application/xhtml+xml')
SMALL_BODY = 64 * 1024


_DAYS = ('Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat', 'Sun')
_MONTHS = ('', 'Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec')


def http_date(ts: float) -> str:
    """RFC 7231 IMF-fixdate, as email.utils.formatdate(usegmt=True) writes it, at a tenth of its cost
    (it is written on every response)."""
    t = time.gmtime(ts)
    return '%s, %02d %s %04d %02d:%02d:%02d GMT' % (_DAYS[t.tm_wday], t.tm_mday, _MONTHS[t.tm_mon], t.tm_year,
                                                   t.tm_hour, t.tm_min, t.tm_sec)


def parse_http_date(value: str) -> Optional[float]:
    parsed = parsedate_tz(value) if value else None
    return mktime_tz(parsed) if parsed else None


def parse_xml(body: bytes) -> ElementTree.Element:
    """Parse a request body, dropping XML namespaces (S3 SDKs send the S3 one, OSS clients none)."""
    root = ElementTree.fromstring(body)
    for el in root.iter():
        if isinstance(el.tag, str) and el.tag.startswith('{'):
            el.tag = el.tag.split('}', 1)[1]
    return root


def int_param(p: Dict[str, str], name: str, default: int, maximum: int) -> int:
    v = p.get(name)
    if v is None or v == '':
        return default
    try:
        n = int(v)
    except ValueError:
        n = -1
    if n < 0 or n > maximum:
        raise StoreError('InvalidArgument', 'Argument %s must be an integer between 0 and %d.' % (name, maximum),
                         400)
    return n


def url_encoding(p: Dict[str, str]) -> bool:
    et = p.get('encoding-type')
    if et is not None and et != 'url':
        raise StoreError('InvalidArgument', 'Invalid Encoding Method specified in Request.', 400)
    return et == 'url'


def encode_token(marker: str) -> str:
    return base64.urlsafe_b64encode(b'k:' + marker.encode('utf-8', 'surrogatepass')).decode()


def decode_token(token: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(token.encode('ascii'))
        if raw.startswith(b'k:'):
            return raw[2:].decode('utf-8')
    except (binascii.Error, ValueError, UnicodeError):
        pass
    raise StoreError('InvalidArgument', 'The continuation token provided is incorrect.', 400)


CONTROL_BYTES = bytes(c for c in range(0x20) if c not in (0x09, 0x0A, 0x0D))


def shield_controls(body: bytes) -> bytes:
    # oss2 writes keys with control characters (legal in OSS keys) raw into the XML, which XML 1.0
    # forbids; swap them for private-use code points before parsing and back afterwards
    if not any(c in body for c in CONTROL_BYTES):
        return body
    out = bytearray()
    for c in body:
        if c in CONTROL_BYTES:
            out += chr(0xF0000 + c).encode()
        else:
            out.append(c)
    return bytes(out)


def unshield_controls(text: str) -> str:
    return ''.join(chr(ord(ch) - 0xF0000) if 0xF0000 <= ord(ch) < 0xF0020 else ch for ch in text)


def unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
