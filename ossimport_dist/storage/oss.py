"""OSS as a source and as the destination.

Small-object writes, HEADs and the destination's listing go through the lean path
(``lean.py``), each request signed with OSS V1. Multipart bookkeeping (init, list, complete,
abort) and a bucket as a source go through oss2, where per-request overhead is noise; oss2 is
imported when first needed (about a quarter of a second of CPU, which a job of small objects
would otherwise pay before its first PUT).

Every failure comes out as ``RequestFailed`` (retry or not) or, when no request to the store
can work (wrong keys, no such bucket, skewed clock), as ``DestinationError``/``SourceError``
with one line naming the bucket, the endpoint and the fix.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import functools
import hmac
import http.client
import io
import re
from typing import Iterator, Optional

from ..errors import STORE_UNUSABLE, SourceError
from ..models import ObjectEntry
from .base import Destination, Features, PutResult, Source, SourceStream
from .errors import RequestFailed, never_connected
from .lean import CONNECT_TIMEOUT, READ_TIMEOUT, Endpoint, LeanClient, SignedStore, parse_endpoint

# Object headers copied from a source object to its destination copy.
PASS_THROUGH_HEADERS = ("content-type", "content-encoding", "content-disposition",
                        "content-language", "cache-control", "expires")


# Query parameters that are OSS V1 sub-resources, the only ones its signature covers (prefix,
# max-keys, list-type... are not), among those the lean path sends.
SIGNED_SUBRESOURCES = frozenset(["partNumber", "uploadId"])
BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")


def _sdk():
    """oss2, imported on first use (see the module docstring)."""
    import oss2
    import oss2.exceptions
    import oss2.models

    return oss2


def _http_date() -> str:
    return email.utils.formatdate(usegmt=True)


def _parse_http_date(text: Optional[str]) -> float:
    if not text:
        return 0.0
    try:
        return email.utils.parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError):
        return 0.0


class OssLeanClient(LeanClient):
    """The lean path signed with OSS V1 (header form)."""

    def __init__(self, endpoint: Endpoint, access_key: str, secret_key: str,
                 connect_timeout: float = CONNECT_TIMEOUT, read_timeout: float = READ_TIMEOUT):
        super().__init__(endpoint, connect_timeout, read_timeout)
        self._access_key = access_key
        self._secret = secret_key.encode("utf-8")

    def authorize(self, method: str, full_key: str, path: str, headers: dict,
                  params: Optional[dict]) -> None:
        headers["Date"] = _http_date()
        headers["Authorization"] = self.sign(method, full_key, headers, params)

    def sign(self, method: str, full_key: str, headers: dict, params: Optional[dict]) -> str:
        content_md5 = content_type = ""
        oss_headers = []
        for name, value in headers.items():
            lower = name.lower()
            if lower == "content-type":
                content_type = value
            elif lower == "content-md5":
                content_md5 = value
            elif lower.startswith("x-oss-"):
                oss_headers.append((lower, value))
        oss_headers.sort()
        resource = f"/{self.endpoint.bucket}/{full_key}"
        sub = sorted((k, v) for k, v in (params or {}).items() if k in SIGNED_SUBRESOURCES)
        if sub:
            resource += "?" + "&".join(f"{k}={v}" if v else k for k, v in sub)
        canonical = "".join(f"{k}:{v}\n" for k, v in oss_headers)
        to_sign = f"{method}\n{content_md5}\n{content_type}\n{headers['Date']}\n{canonical}{resource}"
        digest = hmac.new(self._secret, to_sign.encode("utf-8"), hashlib.sha1).digest()
        return f"OSS {self._access_key}:{base64.b64encode(digest).decode('ascii')}"


def _crc_header(headers: dict) -> Optional[int]:
    value = headers.get("x-oss-hash-crc64ecma")
    return int(value) if value else None


class _OssStore(SignedStore):
    """What source and destination share: lean client, oss2 bucket, error translation."""

    role = "dest"
    request_id_header = "x-oss-request-id"
    endpoint_example = "http://oss-cn-hangzhou.aliyuncs.com"

    def __init__(self, domain: str, bucket: str, prefix: str, access_key: str, secret_key: str):
        self._check_bucket_name(bucket)
        if not BUCKET_NAME.match(bucket):
            raise self._error_class()(
                f"{self.role}Bucket '{bucket}' is not a valid bucket name: 3-63 characters of "
                f"lowercase letters, digits and '-'")
        try:
            self.endpoint = parse_endpoint(domain, bucket)
        except ValueError as exc:
            raise self._bad_domain(domain) from exc
        self.bucket_name, self.prefix = bucket, prefix or ""
        self._access_key, self._secret_key = access_key, secret_key
        self.lean = OssLeanClient(self.endpoint, access_key, secret_key)
        self.lean.role = self.role

    @functools.cached_property
    def bucket(self):
        """The oss2 Bucket, made on first use (multipart bookkeeping, a source's reads)."""
        oss2 = _sdk()
        return oss2.Bucket(oss2.Auth(self._access_key, self._secret_key), self.endpoint.url,
                           self.bucket_name, connect_timeout=(CONNECT_TIMEOUT, READ_TIMEOUT), enable_crc=False)

    def _oss2(self, op: str, key: str, call, *args, **kwargs):
        try:
            return call(*args, **kwargs)
        except _sdk().exceptions.OssError as exc:
            status = exc.status if exc.status > 0 else 0
            message = exc.message or (str(exc.body) if exc.body else str(exc))
            failure = RequestFailed(status, exc.code or type(exc).__name__, message,
                                    exc.request_id or "", operation=op, key=key,
                                    retryable=True if status == 0 else None, role=self.role,
                                    unreachable=never_connected(exc))
            raise self._fail(failure) from exc

    def _head(self, full_key: str, rel_key: str) -> Optional[ObjectEntry]:
        headers = self._head_headers(full_key)
        if headers is None:
            return None
        etag = headers.get("etag", "").strip('"') or None
        return ObjectEntry(
            key=rel_key, size=int(headers.get("content-length", 0)),
            mtime=_parse_http_date(headers.get("last-modified")),
            crc64=_crc_header(headers), md5=headers.get("x-oss-meta-md5") or None, etag=etag,
            headers={k: v for k, v in headers.items()
                     if k in PASS_THROUGH_HEADERS or k.startswith("x-oss-meta-")})

    def probe(self, timeout: float) -> None:
        """A listing of at most one key under the prefix: needs the keys, writes nothing. A
        client of its own, so the job's connections keep their long timeouts."""
        quick = OssLeanClient(self.endpoint, self._access_key, self._secret_key, timeout, timeout)
        quick.role = self.role
        try:
            self._lean_list(self.prefix, "", 1, client=quick)
        finally:
            quick.close()


# OSS's CopyObject takes objects up to 1 GB; larger ones are copied part by part.
MAX_COPY_OBJECT = 1 << 30


class OssDestination(_OssStore, Destination):
    kind = "oss"
    features = Features(has_crc64=True, multipart=True, server_side_copy_from=("oss",),
                        lists_objects=True)
    role = "dest"

    def __init__(self, *, domain: str, bucket: str, prefix: str = "", access_key: str = "",
                 secret_key: str = "", server_side_encryption: bool = False):
        super().__init__(domain, bucket, prefix, access_key, secret_key)
        self.server_side_encryption = server_side_encryption

    @classmethod
    def from_job(cls, job, sys_cfg=None):
        return cls(domain=job.dest_domain, bucket=job.dest_bucket, prefix=job.dest_prefix,
                   access_key=job.dest_access_key, secret_key=job.dest_secret_key,
                   server_side_encryption=job.is_server_side_encryption)

    def _object_headers(self, headers: Optional[dict]) -> dict:
        out = dict(headers) if headers else {}
        if self.server_side_encryption:
            out["x-oss-server-side-encryption"] = "AES256"
        return out

    def head(self, key: str) -> Optional[ObjectEntry]:
        return self._head(self.prefix + key, key)

    def put(self, key: str, data: bytes, headers: Optional[dict] = None) -> PutResult:
        full = self.prefix + key
        rhdrs = self._lean_request("PUT", "PUT", full, headers=self._object_headers(headers), body=data)
        return PutResult(crc64=_crc_header(rhdrs), etag=rhdrs.get("etag", "").strip('"') or None)

    def list_page(self, prefix: str, start_after: str = "", max_keys: int = 1000) -> tuple:
        return self._listed_page(prefix, start_after, max_keys)

    def init_multipart(self, key: str, headers: Optional[dict] = None) -> str:
        full = self.prefix + key
        result = self._oss2("InitiateMultipartUpload", full, self.bucket.init_multipart_upload,
                            full, headers=self._object_headers(headers))
        return result.upload_id

    def upload_part(self, key: str, upload_id: str, part_number: int, data: bytes) -> PutResult:
        full = self.prefix + key
        rhdrs = self._lean_request("UploadPart", "PUT", full,
                                   params={"partNumber": str(part_number), "uploadId": upload_id}, body=data)
        return PutResult(crc64=_crc_header(rhdrs), etag=rhdrs.get("etag", "").strip('"') or None)

    def list_parts(self, key: str, upload_id: str) -> Optional[dict]:
        full = self.prefix + key
        parts = {}
        try:
            for part in _sdk().PartIterator(self.bucket, full, upload_id, max_parts=1000):
                parts[part.part_number] = (part.size, (part.etag or "").strip('"'))
        except _sdk().exceptions.NoSuchUpload:
            return None
        except _sdk().exceptions.OssError as exc:
            self._oss2("ListParts", full, _reraise, exc)
        return parts

    def complete_multipart(self, key: str, upload_id: str, parts: list) -> PutResult:
        full = self.prefix + key
        infos = [_sdk().models.PartInfo(number, etag) for number, etag in parts]
        result = self._oss2("CompleteMultipartUpload", full, self.bucket.complete_multipart_upload,
                            full, upload_id, infos)
        return PutResult(crc64=result.crc, etag=(result.etag or "").strip('"') or None)

    def abort_multipart(self, key: str, upload_id: str) -> None:
        full = self.prefix + key
        try:
            self._oss2("AbortMultipartUpload", full, self.bucket.abort_multipart_upload,
                       full, upload_id)
        except RequestFailed as exc:
            if exc.code != "NoSuchUpload":
                raise

    def can_copy_from(self, source) -> bool:
        """Same OSS endpoint: CopyObject / UploadPartCopy, the bytes stay inside OSS."""
        return source.kind in self.features.server_side_copy_from and source.endpoint.url == self.endpoint.url

    def copy_from(self, source, entry: ObjectEntry, part_size: int, headers: Optional[dict] = None) -> PutResult:
        full, src_full = self.prefix + entry.key, source.prefix + entry.key
        if entry.size <= MAX_COPY_OBJECT and entry.size < part_size * 2:
            result = self._oss2("CopyObject", full, self.bucket.copy_object, source.bucket_name, src_full, full,
                                headers=self._object_headers(headers))
            return PutResult(crc64=result.crc, etag=(result.etag or "").strip('"') or None)
        upload_id = self.init_multipart(entry.key, headers)
        try:
            parts = []
            for number, start in enumerate(range(0, entry.size, part_size), start=1):
                end = min(start + part_size, entry.size) - 1
                result = self._oss2("UploadPartCopy", full, self.bucket.upload_part_copy, source.bucket_name,
                                    src_full, (start, end), full, upload_id, number)
                parts.append((number, (result.etag or "").strip('"')))
            return self.complete_multipart(entry.key, upload_id, parts)
        except BaseException:
            self.abort_multipart(entry.key, upload_id)
            raise


def _reraise(exc):
    raise exc


class OssReader(SourceStream, io.RawIOBase):
    """A GetObject body; ``headers`` holds what the copy should carry over (Content-Type...)."""

    def __init__(self, stream, headers: dict):
        super().__init__()
        self._stream = stream
        self.headers = headers

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        try:
            return self._stream.read(size if size is not None and size >= 0 else None)
        except _sdk().exceptions.OssError as exc:
            raise RequestFailed(0, type(exc).__name__, str(exc), retryable=True,
                                operation="GetObject") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise RequestFailed(0, type(exc).__name__, str(exc) or "read failed", retryable=True,
                                operation="GetObject") from exc

    def close(self) -> None:
        try:
            close = getattr(self._stream, "close", None)
            if close:
                close()
        finally:
            super().close()


class OssSource(_OssStore, Source):
    kind = "oss"
    features = Features(has_crc64=True, multipart=True)
    role = "src"

    def __init__(self, *, domain: str, bucket: str, prefix: str = "", access_key: str = "",
                 secret_key: str = ""):
        super().__init__(domain, bucket, prefix, access_key, secret_key)

    @classmethod
    def from_job(cls, job, sys_cfg=None):
        return cls(domain=job.src_domain, bucket=job.src_bucket, prefix=job.src_prefix,
                   access_key=job.src_access_key, secret_key=job.src_secret_key)

    def list(self, subtree: str = "", recursive: bool = True,
             start_after: Optional[str] = None) -> Iterator[ObjectEntry]:
        prefix = self.prefix + subtree
        after = self.prefix + start_after if start_after else ""
        iterator = _sdk().ObjectIteratorV2(self.bucket, prefix=prefix,
                                         delimiter="" if recursive else "/",
                                         start_after=after if after > prefix else "",
                                         max_keys=1000)
        cut = len(self.prefix)
        while True:
            try:
                info = next(iterator)
            except StopIteration:
                return
            except _sdk().exceptions.OssError as exc:
                try:
                    self._oss2("ListObjectsV2", prefix, _reraise, exc)
                except RequestFailed as failure:
                    raise SourceError(f"listing srcBucket '{self.bucket_name}' at "
                                      f"{self.endpoint.url} prefix '{prefix}' failed: "
                                      f"{failure.describe()}") from failure
            if info.is_prefix():
                continue
            yield ObjectEntry(key=info.key[cut:], size=info.size, mtime=float(info.last_modified),
                              etag=(info.etag or "").strip('"') or None)

    def subtrees(self, subtree: str = "") -> list:
        prefix = self.prefix + subtree
        out = []
        token = ""
        while True:
            result = self._oss2("ListObjectsV2", prefix, self.bucket.list_objects_v2,
                                prefix=prefix, delimiter="/", continuation_token=token,
                                max_keys=1000)
            out.extend(p[len(self.prefix):] for p in result.prefix_list)
            if not result.is_truncated:
                return sorted(out)
            token = result.next_continuation_token

    def stat(self, key: str) -> Optional[ObjectEntry]:
        return self._head(self.prefix + key, key)

    def root_problem(self) -> Optional[str]:
        # A HEAD cannot tell a missing key from a missing bucket; a listing's answer can.
        try:
            self._oss2("ListObjectsV2", self.prefix, self.bucket.list_objects_v2, prefix=self.prefix, max_keys=1)
        except SourceError as refused:
            return str(refused) if refused.refusal == STORE_UNUSABLE else None
        except RequestFailed:
            return None  # no proof either way
        return None

    def open(self, entry: ObjectEntry, offset: int = 0, length: Optional[int] = None):
        """Raises FileNotFoundError when the object is gone."""
        full = self.prefix + entry.key
        if length == 0 or (length is None and entry.size == 0 and offset == 0):
            if self.stat(entry.key) is None:
                raise FileNotFoundError(full)
            return OssReader(io.BytesIO(b""), {})
        byte_range = None
        if offset or length is not None:
            byte_range = (offset, offset + length - 1 if length is not None else None)
        try:
            result = self._oss2("GetObject", full, self.bucket.get_object, full,
                                byte_range=byte_range,
                                headers={"x-oss-range-behavior": "standard"} if byte_range else None)
        except RequestFailed as exc:
            if exc.status == 404 and exc.code in ("NoSuchKey", ""):
                raise FileNotFoundError(full) from exc
            raise
        headers = {k.lower(): v for k, v in result.headers.items()}
        keep = {k: v for k, v in headers.items()
                if k in PASS_THROUGH_HEADERS or k.startswith("x-oss-meta-")}
        return OssReader(result, keep)
