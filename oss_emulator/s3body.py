"""Request bodies of S3-signed requests: ``aws-chunked`` decoding and the digests S3 checks.

``aws-chunked`` (Content-Encoding, or an ``x-amz-content-sha256`` of ``STREAMING-...``) frames the
object as ``<hex size>[;chunk-signature=<sig>]\\r\\n<data>\\r\\n`` ... a zero-size chunk, then optional
trailer lines (``x-amz-checksum-crc32:...``) and an empty line. It sits inside the HTTP framing
(Content-Length or Transfer-Encoding: chunked), so the decoder reads the already de-framed HTTP
body. Chunk signatures are verified; the trailer signature of ``...-PAYLOAD-TRAILER`` is not.

Everything is checked while the body streams to disk: the hex ``x-amz-content-sha256``, the
``x-amz-checksum-*`` header or trailer, the ``x-amz-decoded-content-length``. A failure raises
StoreError after the last byte, before the caller commits the object.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import zlib
from typing import Callable, Dict, Iterable, Iterator, List, Optional

from .s3auth import ChunkSigner
from .store import StoreError

SIGNED_STREAMING = ('STREAMING-AWS4-HMAC-SHA256-PAYLOAD', 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER')
MAX_CHUNK_HEADER = 4096
_HEX_SHA256 = re.compile(r'^[0-9a-fA-F]{64}$')


class _Crc32:
    """zlib.crc32 behind the hashlib interface (digest: 4 bytes, big-endian, as S3 encodes it)."""

    def __init__(self):
        self.value = 0

    def update(self, data: bytes) -> None:
        self.value = zlib.crc32(data, self.value)

    def digest(self) -> bytes:
        return self.value.to_bytes(4, 'big')


# x-amz-checksum-<name> values this emulator can recompute; crc32c and crc64nvme are accepted unchecked
CHECKSUMS: Dict[str, Callable[[], object]] = {'crc32': _Crc32, 'sha1': hashlib.sha1, 'sha256': hashlib.sha256}


def decoded_body(raw: Iterable[bytes], header_values: Callable[[str], List[str]],
                 signer: Optional[ChunkSigner]) -> Iterator[bytes]:
    """The object bytes of an S3 request body, verified against what the headers promise."""
    def header(name: str) -> str:
        values = header_values(name)
        return values[0].strip() if values else ''

    content_sha256 = header('x-amz-content-sha256')
    trailers: Dict[str, str] = {}
    body: Iterable[bytes] = raw
    if content_sha256.startswith('STREAMING-') or 'aws-chunked' in header('content-encoding').lower():
        chunk_signer = signer if content_sha256 in SIGNED_STREAMING else None
        body = _iter_aws_chunked(_Buffered(raw), trailers, chunk_signer)
    decoded_length = header('x-amz-decoded-content-length')
    expected_sha256 = content_sha256.lower() if _HEX_SHA256.match(content_sha256) else None
    header_checksums = {name: header('x-amz-checksum-' + name) for name in CHECKSUMS
                        if header('x-amz-checksum-' + name)}
    trailer_names = [t.strip().lower() for t in header('x-amz-trailer').split(',') if t.strip()]
    return _verified(body, expected_sha256, header_checksums, trailer_names, trailers,
                     int(decoded_length) if decoded_length.isdigit() else None)


def _verified(body: Iterable[bytes], expected_sha256: Optional[str], header_checksums: Dict[str, str],
              trailer_names: List[str], trailers: Dict[str, str], decoded_length: Optional[int]) -> Iterator[bytes]:
    names = set(header_checksums) | {t[len('x-amz-checksum-'):] for t in trailer_names
                                     if t.startswith('x-amz-checksum-')}
    hashers = {name: CHECKSUMS[name]() for name in names if name in CHECKSUMS}
    payload = hashlib.sha256() if expected_sha256 else None
    size = 0
    for chunk in body:
        size += len(chunk)
        for h in hashers.values():
            h.update(chunk)
        if payload is not None:
            payload.update(chunk)
        yield chunk
    if decoded_length is not None and size != decoded_length:
        raise StoreError('IncompleteBody', 'You did not provide the number of bytes specified by the '
                         'x-amz-decoded-content-length HTTP header.', 400)
    if payload is not None and payload.hexdigest() != expected_sha256:
        raise StoreError('XAmzContentSHA256Mismatch', "The provided 'x-amz-content-sha256' header does not match "
                         'what was computed.', 400,
                         details={'ClientComputedContentSHA256': expected_sha256,
                                  'S3ComputedContentSHA256': payload.hexdigest()})
    for name, hasher in hashers.items():
        expected = header_checksums.get(name) or trailers.get('x-amz-checksum-' + name, '')
        _check_checksum(name, hasher.digest(), expected)


def _check_checksum(name: str, computed: bytes, expected_b64: str) -> None:
    try:
        expected = base64.b64decode(expected_b64, validate=True)
    except (binascii.Error, ValueError):
        expected = b''
    if expected != computed:
        raise StoreError('BadDigest', 'The %s you specified did not match the calculated checksum.' % name.upper(),
                         400)


# --------------------------------------------------------------------- aws-chunked
class _Buffered:
    """Line and length reads over an iterator of byte strings."""

    def __init__(self, chunks: Iterable[bytes]):
        self._chunks = iter(chunks)
        self._buf = b''

    def _fill(self) -> bool:
        more = next(self._chunks, None)
        if more is None:
            return False
        self._buf += more
        return True

    def readline(self) -> bytes:
        while b'\n' not in self._buf:
            if len(self._buf) > MAX_CHUNK_HEADER or not self._fill():
                break
        end = self._buf.find(b'\n') + 1 or len(self._buf)
        if end > MAX_CHUNK_HEADER:
            raise _malformed('chunk header line too long')
        line, self._buf = self._buf[:end], self._buf[end:]
        return line

    def read_up_to(self, n: int) -> bytes:
        if not self._buf and not self._fill():
            return b''
        out, self._buf = self._buf[:n], self._buf[n:]
        return out


def _malformed(why: str) -> StoreError:
    return StoreError('IncompleteBody', 'The aws-chunked request body is malformed: %s.' % why, 400)


def _iter_aws_chunked(src: _Buffered, trailers: Dict[str, str], signer: Optional[ChunkSigner]) -> Iterator[bytes]:
    previous = signer.seed_signature if signer else ''
    while True:
        size, signature = _parse_chunk_header(src.readline())
        digest = hashlib.sha256()
        left = size
        while left:
            data = src.read_up_to(left)
            if not data:
                raise _malformed('body ends inside a chunk')
            left -= len(data)
            digest.update(data)
            yield data
        if signer is not None:
            previous = _check_chunk_signature(signer, previous, digest.hexdigest(), signature)
        if size == 0:
            _read_trailers(src, trailers)
            return
        if src.readline().strip():
            raise _malformed('chunk data not followed by CRLF')


def _parse_chunk_header(line: bytes):
    if not line.endswith(b'\n'):
        raise _malformed('missing chunk header')
    size_text, _, ext = line.strip().partition(b';')
    try:
        size = int(size_text, 16)
    except ValueError:
        raise _malformed('bad chunk size %r' % size_text[:20])
    signature = ''
    name, _, value = ext.partition(b'=')
    if name.strip() == b'chunk-signature':
        signature = value.strip().decode('ascii', 'replace')
    return size, signature


def _check_chunk_signature(signer: ChunkSigner, previous: str, chunk_sha256: str, provided: str) -> str:
    want = signer.sign(previous, chunk_sha256)
    if want != provided:
        raise StoreError('SignatureDoesNotMatch', 'The chunk signature we calculated does not match the '
                         'chunk-signature you provided.', 403)
    return want


def _read_trailers(src: _Buffered, trailers: Dict[str, str]) -> None:
    while True:
        line = src.readline()
        if not line.strip():
            return
        name, sep, value = line.decode('latin-1').partition(':')
        if not sep:
            raise _malformed('bad trailer line')
        trailers[name.strip().lower()] = value.strip()
