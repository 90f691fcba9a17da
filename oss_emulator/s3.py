"""The Amazon S3 dialect of the emulator ("OSS S3 compatibility"), on the same port as OSS.

A request signed with AWS Signature V4 is an S3 request. It is served by the same ``op_``
handlers as OSS: its headers are renamed to their OSS equivalents on the way in
(``x-amz-meta-*`` -> ``x-oss-meta-*``, ``x-amz-copy-source`` -> ``x-oss-copy-source``, ...),
S3's defaults replace OSS's where they differ (1000 keys a page, 416 for an unsatisfiable range,
no gzip), and the response headers and error codes are renamed back on the way out. Objects are
stored one way, so whatever one API writes the other reads with the same metadata.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from . import xmlgen
from .http1 import Headers

# S3 headers that mean what an OSS header means
_HEADER_RENAMES = {
    'x-amz-copy-source': 'x-oss-copy-source',
    'x-amz-copy-source-range': 'x-oss-copy-source-range',
    'x-amz-copy-source-if-match': 'x-oss-copy-source-if-match',
    'x-amz-copy-source-if-none-match': 'x-oss-copy-source-if-none-match',
    'x-amz-copy-source-if-modified-since': 'x-oss-copy-source-if-modified-since',
    'x-amz-copy-source-if-unmodified-since': 'x-oss-copy-source-if-unmodified-since',
    'x-amz-metadata-directive': 'x-oss-metadata-directive',
    'x-amz-server-side-encryption': 'x-oss-server-side-encryption',
    'x-amz-server-side-encryption-aws-kms-key-id': 'x-oss-server-side-encryption-key-id',
}
_STORAGE_CLASSES = {'STANDARD': 'Standard', 'REDUCED_REDUNDANCY': 'Standard', 'STANDARD_IA': 'IA',
                    'ONEZONE_IA': 'IA', 'INTELLIGENT_TIERING': 'Standard', 'GLACIER_IR': 'IA',
                    'GLACIER': 'Archive', 'DEEP_ARCHIVE': 'ColdArchive'}
_CANNED_ACLS = ('private', 'public-read', 'public-read-write')

# S3 names for OSS error codes that differ; the rest are the same in both APIs
_ERROR_CODES = {
    'InvalidDigest': 'BadDigest',                # Content-MD5 did not match the body
    'BucketAlreadyExists': 'BucketAlreadyOwnedByYou',  # one account owns every emulator bucket
    'TotalQpsLimitExceeded': 'SlowDown',
    'QpsLimitExceeded': 'SlowDown',
    'InvalidXML': 'MalformedXML',
    'FileAlreadyExists': 'PreconditionFailed',
}

# S3 sub-resources with no OSS operation here; without this list they would fall through to a
# plain GET/PUT of the bucket or object, which they are not
S3_ONLY_SUBRESOURCES = frozenset([
    'accelerate', 'analytics', 'attributes', 'intelligent-tiering', 'legal-hold', 'metrics', 'notification',
    'object-lock', 'ownershipControls', 'policyStatus', 'retention', 'select', 'session', 'torrent',
    'restore', 'tagging', 'versioning', 'versions', 'versionId', 'lifecycle', 'cors', 'policy', 'website',
    'logging', 'encryption', 'replication', 'inventory', 'requestPayment', 'publicAccessBlock',
])

S3_DEFAULT_MAX_KEYS = 1000
S3_MAX_KEYS = 1000


def unsupported_subresource(params: Dict[str, str]) -> Optional[str]:
    for name in params:
        if name in S3_ONLY_SUBRESOURCES:
            return name
    return None


def oss_view_of_headers(wire: Headers) -> Headers:
    """The request headers as the OSS handlers expect them."""
    out = Headers()
    for name, value in wire.items():
        for oss_name, oss_value in _oss_headers(name.lower(), value):
            out[oss_name] = oss_value
    # S3 answers an unsatisfiable range with 416
    out['x-oss-range-behavior'] = 'standard'
    return out


def _oss_headers(lower: str, value: str) -> List[Tuple[str, str]]:
    if lower.startswith('x-amz-meta-'):
        return [('x-oss-meta-' + lower[len('x-amz-meta-'):], value)]
    if lower in _HEADER_RENAMES:
        return [(_HEADER_RENAMES[lower], value)]
    if lower == 'x-amz-storage-class':
        return [('x-oss-storage-class', _STORAGE_CLASSES.get(value.strip().upper(), 'Standard'))]
    if lower == 'x-amz-acl':
        acl = value.strip()
        # one canned ACL header in S3 for buckets and objects, two in OSS
        return [('x-oss-acl', acl), ('x-oss-object-acl', acl)] if acl in _CANNED_ACLS else []
    if lower == 'content-encoding':
        # aws-chunked only frames the request body; it is not how the object is encoded
        rest = [e.strip() for e in value.split(',') if e.strip() and e.strip().lower() != 'aws-chunked']
        return [('Content-Encoding', ','.join(rest))] if rest else []
    if lower in ('accept-encoding', 'x-oss-range-behavior'):
        return []  # S3 never compresses a response on its own accord
    return [(lower, value)]


def s3_params(op: str, params: Dict[str, str]) -> Dict[str, str]:
    """Query parameters with S3's defaults where OSS's differ."""
    out = dict(params)
    if op in ('ListObjects', 'ListObjectsV2', 'ListBuckets'):
        name = 'max-buckets' if op == 'ListBuckets' else 'max-keys'
        # S3 quietly caps a page at 1000 keys where OSS refuses more
        try:
            wanted = int(out.get(name) or S3_DEFAULT_MAX_KEYS)
        except ValueError:
            wanted = -1
        out['max-keys'] = str(min(wanted, S3_MAX_KEYS)) if wanted >= 0 else out.get(name, '')
    return out


def s3_response_headers(headers: List[Tuple[str, str]], request_id: str) -> List[Tuple[str, str]]:
    out = [('x-amz-request-id', request_id), ('x-amz-id-2', request_id)]
    for name, value in headers:
        lower = name.lower()
        if lower.startswith('x-oss-meta-'):
            out.append(('x-amz-meta-' + name[len('x-oss-meta-'):], value))
            continue
        out.append((name, value))
        if lower == 'x-oss-server-side-encryption':
            out.append(('x-amz-server-side-encryption', value))
    return out


def error_body(code: str, message: str, resource: str, request_id: str, host_id: str,
               details: Dict[str, str]) -> bytes:
    return xmlgen.s3_error(_ERROR_CODES.get(code, code), message, resource, request_id, host_id, details)
