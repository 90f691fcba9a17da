"""Verification of Amazon S3 request signatures: AWS Signature V4 (``AWS4-HMAC-SHA256``) in the
Authorization-header and presigned-URL forms, and the per-chunk signatures of
``STREAMING-AWS4-HMAC-SHA256-PAYLOAD`` bodies.

The canonical request is rebuilt from the request as received: the path exactly as the client
encoded it (S3 does not encode it a second time), the query re-encoded and sorted, the signed
headers lower-cased with their values trimmed, and the payload hash the client declared in
``x-amz-content-sha256`` (checked against the body while it streams, see s3body).
"""

from __future__ import annotations

import calendar
import datetime
import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Tuple
from urllib.parse import unquote

from .store import StoreError

ALGORITHM = 'AWS4-HMAC-SHA256'
UNSIGNED_PAYLOAD = 'UNSIGNED-PAYLOAD'
EMPTY_SHA256 = hashlib.sha256(b'').hexdigest()
MAX_SKEW = 15 * 60
MAX_PRESIGN_EXPIRES = 7 * 24 * 3600
_UNRESERVED = frozenset(b'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-~.')


@dataclass(frozen=True)
class S3Request:
    method: str
    raw_path: str                              # as on the request line, before '?'
    raw_query: str                             # as on the request line, after '?'
    header_values: Callable[[str], List[str]]  # every value of a header, by name


@dataclass(frozen=True)
class ChunkSigner:
    """Signs the chunks of a streaming-signed body, each chained to the previous signature."""

    key: bytes
    date_time: str
    scope: str
    seed_signature: str

    def sign(self, previous_signature: str, chunk_sha256: str) -> str:
        sts = '\n'.join(('AWS4-HMAC-SHA256-PAYLOAD', self.date_time, self.scope, previous_signature,
                         EMPTY_SHA256, chunk_sha256))
        return hmac.digest(self.key, sts.encode(), 'sha256').hex()


@dataclass(frozen=True)
class S3Grant:
    """A verified request: who signed it and what the body's chunk signatures must chain to."""

    access_key_id: str
    chunk_signer: ChunkSigner


@dataclass(frozen=True)
class _Credential:
    access_key_id: str
    date: str
    region: str
    service: str

    @property
    def scope(self) -> str:
        return '%s/%s/%s/aws4_request' % (self.date, self.region, self.service)


def is_signed_s3(authorization: str, query_names) -> bool:
    return authorization.startswith(ALGORITHM + ' ') or 'X-Amz-Algorithm' in query_names


def verify(req: S3Request, credentials: Mapping[str, str], now: Optional[float] = None) -> S3Grant:
    """Return the grant of a correctly signed S3 request, else raise StoreError."""
    now = time.time() if now is None else now
    auth = _first(req, 'authorization')
    if auth.startswith(ALGORITHM + ' '):
        return _verify_header(req, auth, credentials, now)
    return _verify_presigned(req, credentials, now)


# ------------------------------------------------------------------------- forms
def _verify_header(req: S3Request, auth: str, credentials, now: float) -> S3Grant:
    fields = _auth_fields(auth[len(ALGORITHM) + 1:])
    cred = _parse_credential(fields.get('Credential', ''))
    secret = _secret(credentials, cred.access_key_id)
    date_time = _first(req, 'x-amz-date')
    _check_skew(_parse_amz_date(date_time), now)
    payload_hash = _first(req, 'x-amz-content-sha256')
    if not payload_hash:
        raise StoreError('InvalidRequest', 'Missing required header for this request: x-amz-content-sha256', 400)
    signed_headers = _signed_header_names(fields.get('SignedHeaders', ''))
    query = _query_pairs(req.raw_query)
    return _check_signature(req, cred, secret, date_time, signed_headers, query, payload_hash,
                            fields.get('Signature', ''))


def _verify_presigned(req: S3Request, credentials, now: float) -> S3Grant:
    query = _query_pairs(req.raw_query)
    params = dict(query)
    if params.get('X-Amz-Algorithm') != ALGORITHM:
        raise StoreError('AuthorizationQueryParametersError', 'X-Amz-Algorithm only supports "%s".' % ALGORITHM,
                         400)
    cred = _parse_credential(params.get('X-Amz-Credential', ''))
    secret = _secret(credentials, cred.access_key_id)
    date_time = params.get('X-Amz-Date', '')
    signed_at = _parse_amz_date(date_time)
    try:
        expires = int(params.get('X-Amz-Expires', ''))
    except ValueError:
        raise StoreError('AuthorizationQueryParametersError', 'X-Amz-Expires must be a number of seconds.', 400)
    if not 0 < expires <= MAX_PRESIGN_EXPIRES:
        raise StoreError('AuthorizationQueryParametersError',
                         'X-Amz-Expires must be between 1 and %d seconds.' % MAX_PRESIGN_EXPIRES, 400)
    if signed_at - now > MAX_SKEW:
        raise StoreError('AccessDenied', 'Request is not valid yet', 403)
    if signed_at + expires < now:
        raise StoreError('AccessDenied', 'Request has expired', 403)
    signed_headers = _signed_header_names(params.get('X-Amz-SignedHeaders', ''))
    unsigned_query = [(k, v) for k, v in query if k != 'X-Amz-Signature']
    payload_hash = params.get('X-Amz-Content-Sha256') or UNSIGNED_PAYLOAD
    return _check_signature(req, cred, secret, date_time, signed_headers, unsigned_query, payload_hash,
                            params.get('X-Amz-Signature', ''))


def _check_signature(req, cred, secret, date_time, signed_headers, query, payload_hash, provided) -> S3Grant:
    key = signing_key(secret, cred)
    tried = []
    # the path as sent is what SDKs sign; a path sent with needless escapes or none is also
    # accepted in S3's own canonical form (decoded once, encoded once)
    for path in _canonical_path_forms(req.raw_path):
        canonical = _canonical_request(req, path, query, signed_headers, payload_hash)
        sts = '\n'.join((ALGORITHM, date_time, cred.scope, hashlib.sha256(canonical.encode()).hexdigest()))
        want = hmac.digest(key, sts.encode(), 'sha256').hex()
        if hmac.compare_digest(want, provided):
            return S3Grant(cred.access_key_id, ChunkSigner(key, date_time, cred.scope, provided))
        tried.append((canonical, sts))
    canonical, sts = tried[0]
    raise StoreError('SignatureDoesNotMatch', 'The request signature we calculated does not match the signature '
                     'you provided. Check your key and signing method.', 403,
                     details={'AWSAccessKeyId': cred.access_key_id, 'StringToSign': sts,
                              'SignatureProvided': provided, 'CanonicalRequest': canonical})


def signing_key(secret: str, cred: _Credential) -> bytes:
    key = ('AWS4' + secret).encode()
    for part in (cred.date, cred.region, cred.service, 'aws4_request'):
        key = hmac.digest(key, part.encode(), 'sha256')  # one-shot: a third of hmac.new's cost
    return key


# ----------------------------------------------------------------- canonical form
def _canonical_request(req: S3Request, path: str, query, signed_headers: List[str], payload_hash: str) -> str:
    canonical_query = '&'.join('%s=%s' % kv for kv in sorted((uri_encode(k), uri_encode(v)) for k, v in query))
    header_lines = ''.join('%s:%s\n' % (name, _header_value(req, name)) for name in signed_headers)
    return '\n'.join((req.method, path, canonical_query, header_lines, ';'.join(signed_headers), payload_hash))


def _canonical_path_forms(raw_path: str) -> List[str]:
    as_sent = raw_path or '/'
    try:
        reencoded = uri_encode(unquote(as_sent, errors='strict'), keep_slash=True)
    except UnicodeDecodeError:
        return [as_sent]
    return [as_sent] if reencoded == as_sent else [as_sent, reencoded]


def _header_value(req: S3Request, name: str) -> str:
    return ','.join(' '.join(v.split()) for v in req.header_values(name))


def uri_encode(text: str, keep_slash: bool = False) -> str:
    out = []
    for c in text.encode('utf-8', 'surrogatepass'):
        out.append(chr(c) if c in _UNRESERVED or (keep_slash and c == 0x2F) else '%%%02X' % c)
    return ''.join(out)


def _query_pairs(raw_query: str) -> List[Tuple[str, str]]:
    # unquote, not unquote_plus: SigV4 clients send a space as %20, and a '+' means '+'
    pairs = []
    for item in raw_query.split('&'):
        if item:
            k, _, v = item.partition('=')
            pairs.append((unquote(k), unquote(v)))
    return pairs


# ------------------------------------------------------------------------ pieces
def _first(req: S3Request, name: str) -> str:
    values = req.header_values(name)
    return values[0].strip() if values else ''


def _auth_fields(text: str) -> Dict[str, str]:
    fields = {}
    for part in text.split(','):
        k, _, v = part.strip().partition('=')
        fields[k.strip()] = v.strip()
    return fields


def _parse_credential(text: str) -> _Credential:
    parts = text.split('/')
    if len(parts) != 5 or parts[4] != 'aws4_request' or not all(parts[:4]):
        raise StoreError('AuthorizationHeaderMalformed', 'The authorization header is malformed; the Credential is '
                         'mal-formed; expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".', 400)
    return _Credential(*parts[:4])


def _signed_header_names(text: str) -> List[str]:
    names = [h.strip().lower() for h in text.split(';') if h.strip()]
    if not names:
        raise StoreError('AuthorizationHeaderMalformed', 'The authorization header is malformed; '
                         'SignedHeaders is empty.', 400)
    return names


def _secret(credentials: Mapping[str, str], access_key_id: str) -> str:
    secret = credentials.get(access_key_id)
    if secret is None:
        raise StoreError('InvalidAccessKeyId', 'The AWS Access Key Id you provided does not exist in our records.',
                         403, details={'AWSAccessKeyId': access_key_id})
    return secret


def _parse_amz_date(value: str) -> float:
    # the fixed ISO 8601 basic form, read by hand: time.strptime cost more than the signature check
    try:
        if len(value) != 16 or value[8] != 'T' or value[15] != 'Z' or not (value[:8] + value[9:15]).isdigit():
            raise ValueError(value)
        when = datetime.datetime(int(value[:4]), int(value[4:6]), int(value[6:8]), int(value[9:11]),
                                 int(value[11:13]), int(value[13:15]))  # checks the ranges
        return calendar.timegm(when.timetuple())
    except ValueError:
        raise StoreError('AccessDenied', 'AWS authentication requires a valid Date or x-amz-date header', 403)


def _check_skew(ts: float, now: float) -> None:
    if abs(ts - now) > MAX_SKEW:
        raise StoreError('RequestTimeTooSkewed', 'The difference between the request time and the current time '
                         'is too large.', 403)
