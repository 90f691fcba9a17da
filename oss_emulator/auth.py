"""Verification of OSS request signatures (V1, V2, V4, header and presigned-URL forms).

The canonicalisation mirrors what the oss2 SDK signs, so the server rebuilds the
string-to-sign from the request exactly as received (header values as raw bytes).
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import hmac
import time
from dataclasses import dataclass
from email.utils import parsedate_tz, mktime_tz
from typing import Dict, List, Optional, Tuple

from .store import StoreError

MAX_SKEW = 15 * 60

# query parameters that V1 includes in the canonicalized resource
V1_SUBRESOURCES = frozenset([
    'response-content-type', 'response-content-language', 'response-cache-control', 'logging',
    'response-content-encoding', 'acl', 'uploadId', 'uploads', 'partNumber', 'group', 'link', 'delete',
    'website', 'location', 'objectInfo', 'objectMeta', 'response-expires', 'response-content-disposition',
    'cors', 'lifecycle', 'restore', 'qos', 'referer', 'stat', 'bucketInfo', 'append', 'position',
    'security-token', 'live', 'comp', 'status', 'vod', 'startTime', 'endTime', 'x-oss-process', 'symlink',
    'callback', 'callback-var', 'tagging', 'encryption', 'versions', 'versioning', 'versionId', 'policy',
    'requestPayment', 'x-oss-traffic-limit', 'qosInfo', 'asyncFetch', 'x-oss-request-payer', 'sequential',
    'inventory', 'inventoryId', 'continuation-token', 'worm', 'wormId', 'wormExtend', 'replication',
    'replicationLocation', 'replicationProgress', 'transferAcceleration', 'cname', 'metaQuery',
    'x-oss-ac-source-ip', 'x-oss-ac-subnet-mask', 'x-oss-ac-vpc-id', 'x-oss-ac-forward-allow',
    'resourceGroup', 'style', 'styleName', 'x-oss-async-process', 'regionList',
    'x-oss-write-get-object-response', 'bucketArchiveDirectRead', 'httpsConfig', 'redundancyTransition',
    'x-oss-target-redundancy-type', 'x-oss-redundancy-transition-taskid', 'accessPoint',
    'accessPointPolicy', 'publicAccessBlock', 'x-oss-access-point-name', 'requesterQosInfo',
    'qosRequester', 'resourcePoolInfo', 'resourcePool', 'resourcePoolBuckets',
])

_UNRESERVED = frozenset(b'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-~.')


@dataclass
class AuthRequest:
    method: str
    bucket: str
    key: str
    params: List[Tuple[str, str]]     # decoded query parameters
    headers: List[Tuple[str, str]]    # (name, value) as received; values latin-1 decoded


def _err_sig(string_to_sign) -> StoreError:
    if isinstance(string_to_sign, bytes):
        string_to_sign = string_to_sign.decode('utf-8', 'replace')
    return StoreError('SignatureDoesNotMatch',
                      'The request signature we calculated does not match the signature you provided. '
                      'Check your key and signing method. StringToSign: %r' % string_to_sign, 403)


def _uri_encode(text: str, keep_slash: bool) -> str:
    out = []
    for c in text.encode('utf-8', 'surrogatepass'):
        if c in _UNRESERVED or (keep_slash and c == 0x2F):
            out.append(chr(c))
        else:
            out.append('%%%02X' % c)
    return ''.join(out)


def _query_pair(k: str, v: str) -> str:
    return k + '=' + v if v else k


def _parse_date(date: str) -> Optional[float]:
    """The time of a Date / x-oss-date header (RFC 1123, or ISO 8601 basic for V4), None if neither."""
    if len(date) == 16 and date.endswith('Z') and 'T' in date:
        try:
            return calendar.timegm(time.strptime(date, '%Y%m%dT%H%M%SZ'))
        except ValueError:
            return None
    parsed = parsedate_tz(date)
    return mktime_tz(parsed) if parsed is not None else None


class Authenticator:
    def __init__(self, credentials: Dict[str, str]):
        self.credentials = credentials
        # the last Date header parsed and its time: concurrent clients send the same one for a second
        self._last_date: Tuple[str, Optional[float]] = ('', None)

    def _secret(self, access_key_id: str) -> str:
        secret = self.credentials.get(access_key_id)
        if secret is None:
            raise StoreError('InvalidAccessKeyId', 'The OSS Access Key Id you provided does not exist in our records.',
                             403)
        return secret

    def verify(self, req: AuthRequest, now: Optional[float] = None) -> str:
        """Return the access key id of a correctly signed request, else raise StoreError."""
        now = time.time() if now is None else now
        hdrs = {k.lower(): v for k, v in req.headers}
        params = dict(req.params)
        auth = hdrs.get('authorization')
        if auth:
            if auth.startswith('OSS4-HMAC-SHA256 '):
                return self._v4_header(req, hdrs, auth, now)
            if auth.startswith('OSS2 '):
                return self._v2_header(req, hdrs, auth, now)
            if auth.startswith('OSS '):
                return self._v1_header(req, hdrs, auth, now)
            raise StoreError('InvalidArgument', 'Authorization header is invalid.', 400)
        if 'OSSAccessKeyId' in params:
            return self._v1_url(req, hdrs, params, now)
        sv = params.get('x-oss-signature-version')
        if sv == 'OSS4-HMAC-SHA256':
            return self._v4_url(req, hdrs, params, now)
        if sv == 'OSS2':
            return self._v2_url(req, hdrs, params, now)
        raise StoreError('AccessDenied', 'You have no right to access this object because of bucket acl.', 403)

    # ------------------------------------------------------------------ common
    def _check_date(self, hdrs: Dict[str, str], now: float) -> None:
        date = hdrs.get('x-oss-date') or hdrs.get('date')
        if not date:
            raise StoreError('AccessDenied', 'Missing Date header.', 403)
        last = self._last_date  # one tuple, read and replaced whole: safe across threads
        ts = last[1] if last[0] == date else _parse_date(date)
        if ts is None:
            raise StoreError('AccessDenied', 'Invalid date format of header Date.', 403)
        self._last_date = (date, ts)
        if abs(ts - now) > MAX_SKEW:
            raise StoreError('RequestTimeTooSkewed', 'The difference between the request time and the current '
                             'time is too large.', 403)

    @staticmethod
    def _check_expires(expires: str, now: float) -> None:
        try:
            exp = int(expires)
        except ValueError:
            raise StoreError('AccessDenied', 'Invalid Expires.', 403)
        if exp < now:
            raise StoreError('AccessDenied', 'Request has expired.', 403)

    # ---------------------------------------------------------------------- V1
    def _v1_string(self, req: AuthRequest, hdrs: Dict[str, str], date: str) -> bytes:
        oss_headers = sorted((k.lower(), v) for k, v in req.headers if k.lower().startswith('x-oss-'))
        canon = b''.join(k.encode('latin-1') + b':' + v.encode('latin-1') + b'\n' for k, v in oss_headers)
        sub = sorted((k, v) for k, v in req.params if k in V1_SUBRESOURCES)
        resource = '/' + req.bucket + '/' + req.key if req.bucket else '/'
        if sub:
            resource += '?' + '&'.join(_query_pair(k, v) for k, v in sub)
        return b'\n'.join([req.method.encode(), hdrs.get('content-md5', '').encode('latin-1'),
                           hdrs.get('content-type', '').encode('latin-1'), date.encode('latin-1'),
                           canon + resource.encode('utf-8', 'surrogatepass')])

    def _v1_header(self, req, hdrs, auth, now) -> str:
        try:
            ak, sig = auth[4:].strip().rsplit(':', 1)
        except ValueError:
            raise StoreError('InvalidArgument', 'Authorization header is invalid.', 400)
        secret = self._secret(ak)
        self._check_date(hdrs, now)
        sts = self._v1_string(req, hdrs, hdrs.get('x-oss-date') or hdrs.get('date', ''))
        want = base64.b64encode(hmac.digest(secret.encode(), sts, 'sha1')).decode()
        if not hmac.compare_digest(want, sig):
            raise _err_sig(sts)
        return ak

    def _v1_url(self, req, hdrs, params, now) -> str:
        ak = params['OSSAccessKeyId']
        secret = self._secret(ak)
        expires = params.get('Expires', '')
        self._check_expires(expires, now)
        sts = self._v1_string(req, hdrs, expires)
        want = base64.b64encode(hmac.digest(secret.encode(), sts, 'sha1')).decode()
        if not hmac.compare_digest(want, params.get('Signature', '')):
            raise _err_sig(sts)
        return ak

    # ---------------------------------------------------------------------- V2
    def _v2_string(self, req, hdrs, date, additional, skip_params=()) -> bytes:
        canon_h = sorted((k.lower(), v) for k, v in req.headers
                         if k.lower().startswith('x-oss-') or k.lower() in additional)
        canon = b''.join(k.encode('latin-1') + b':' + v.encode('latin-1') + b'\n' for k, v in canon_h)
        resource = _uri_encode('/' + req.bucket + '/' + req.key if req.bucket else '/', False)
        q = sorted((_uri_encode(k, False), _uri_encode(v, False)) for k, v in req.params if k not in skip_params)
        if q:
            resource += '?' + '&'.join(_query_pair(k, v) for k, v in q)
        return (req.method.encode() + b'\n' + hdrs.get('content-md5', '').encode('latin-1') + b'\n'
                + hdrs.get('content-type', '').encode('latin-1') + b'\n' + date.encode('latin-1') + b'\n'
                + canon + ';'.join(sorted(additional)).encode() + b'\n' + resource.encode())

    def _v2_header(self, req, hdrs, auth, now) -> str:
        fields = {}
        for part in auth[5:].split(','):
            k, _, v = part.strip().partition(':')
            fields[k] = v
        ak = fields.get('AccessKeyId', '')
        secret = self._secret(ak)
        self._check_date(hdrs, now)
        additional = [h for h in fields.get('AdditionalHeaders', '').split(';') if h]
        sts = self._v2_string(req, hdrs, hdrs.get('date', ''), additional)
        want = base64.b64encode(hmac.digest(secret.encode(), sts, 'sha256')).decode()
        if not hmac.compare_digest(want, fields.get('Signature', '')):
            raise _err_sig(sts)
        return ak

    def _v2_url(self, req, hdrs, params, now) -> str:
        ak = params.get('x-oss-access-key-id', '')
        secret = self._secret(ak)
        expires = params.get('x-oss-expires', '')
        self._check_expires(expires, now)
        additional = [h for h in params.get('x-oss-additional-headers', '').split(';') if h]
        sts = self._v2_string(req, hdrs, expires, additional, skip_params=('x-oss-signature',))
        want = base64.b64encode(hmac.digest(secret.encode(), sts, 'sha256')).decode()
        if not hmac.compare_digest(want, params.get('x-oss-signature', '')):
            raise _err_sig(sts)
        return ak

    # ---------------------------------------------------------------------- V4
    def _v4_signature(self, req, hdrs, secret, date_time, scope_parts, additional, skip_params=()):
        def signed(k: str) -> bool:
            return k.startswith('x-oss-') or k in ('content-type', 'content-md5') or k in additional

        canon_h = sorted((k.lower(), v) for k, v in req.headers if signed(k.lower()))
        uri = _uri_encode('/' + req.bucket + '/' + req.key if req.bucket else '/', True)
        q = sorted((_uri_encode(k, False), _uri_encode(v, False)) for k, v in req.params if k not in skip_params)
        canonical = (req.method.encode() + b'\n' + uri.encode() + b'\n'
                     + '&'.join(_query_pair(k, v) for k, v in q).encode() + b'\n'
                     + b''.join(k.encode('latin-1') + b':' + v.encode('latin-1') + b'\n' for k, v in canon_h)
                     + b'\n' + ';'.join(sorted(additional)).encode() + b'\n'
                     + hdrs.get('x-oss-content-sha256', 'UNSIGNED-PAYLOAD').encode('latin-1'))
        date, region, product = scope_parts
        scope = '%s/%s/%s/aliyun_v4_request' % (date, region, product)
        sts = 'OSS4-HMAC-SHA256\n%s\n%s\n%s' % (date_time, scope, hashlib.sha256(canonical).hexdigest())
        key = ('aliyun_v4' + secret).encode()
        for part in (date, region, product, 'aliyun_v4_request'):
            key = hmac.digest(key, part.encode(), 'sha256')
        return hmac.digest(key, sts.encode(), 'sha256').hex(), canonical

    @staticmethod
    def _parse_credential(cred: str) -> Tuple[str, Tuple[str, str, str]]:
        parts = cred.split('/')
        if len(parts) != 5 or parts[4] != 'aliyun_v4_request':
            raise StoreError('InvalidArgument', 'Invalid credential in Authorization header.', 400)
        return parts[0], (parts[1], parts[2], parts[3])

    def _v4_header(self, req, hdrs, auth, now) -> str:
        fields = {}
        for part in auth[len('OSS4-HMAC-SHA256 '):].split(','):
            k, _, v = part.strip().partition('=')
            fields[k] = v
        ak, scope = self._parse_credential(fields.get('Credential', ''))
        secret = self._secret(ak)
        self._check_date(hdrs, now)
        date_time = hdrs.get('x-oss-date', '')
        additional = [h.lower() for h in fields.get('AdditionalHeaders', '').split(';') if h]
        want, canonical = self._v4_signature(req, hdrs, secret, date_time, scope, additional)
        if not hmac.compare_digest(want, fields.get('Signature', '')):
            raise _err_sig(canonical)
        return ak

    def _v4_url(self, req, hdrs, params, now) -> str:
        ak, scope = self._parse_credential(params.get('x-oss-credential', ''))
        secret = self._secret(ak)
        date_time = params.get('x-oss-date', '')
        try:
            start = calendar.timegm(time.strptime(date_time, '%Y%m%dT%H%M%SZ'))
            exp = start + int(params.get('x-oss-expires', '0'))
        except ValueError:
            raise StoreError('AccessDenied', 'Invalid x-oss-date or x-oss-expires.', 403)
        if exp < now:
            raise StoreError('AccessDenied', 'Request has expired.', 403)
        additional = [h for h in params.get('x-oss-additional-headers', '').split(';') if h]
        want, canonical = self._v4_signature(req, hdrs, secret, date_time, scope, additional,
                                             skip_params=('x-oss-signature',))
        if not hmac.compare_digest(want, params.get('x-oss-signature', '')):
            raise _err_sig(canonical)
        return ak
