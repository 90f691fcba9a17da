"""Amazon S3 and S3-compatible stores as a source (srcType=s3, qiniu, bos, ks3, cos) and as a
destination (destType=s3), through boto3.

One boto3 client per store: botocore clients are thread-safe, and the client's urllib3 pool is
sized for ``workerTaskThreadNum`` so every transfer thread keeps its own kept-alive connection.
Requests are signed with Signature V4. IP and ``localhost`` endpoints use path-style addressing
(there is no DNS name to put the bucket in); names use virtual-host style, which every vendor
below documents. The region comes from the endpoint's host name when it carries one, else
``us-east-1``. botocore's own retries are off: the transfer engine retries ``RequestFailed``
with its shared backoff, and two retry layers would multiply.

Vendor srcTypes: each vendor serves an S3-compatible API; OssImport's keys are turned into it
here. ``srcDomain`` given as a URL or a host name with a dot (or an IP, or with a port) is used
as given, so a job (or a test) can point at any S3 endpoint; a bare region id is expanded:

========  ==========================================  =============================================
srcType   srcDomain -> S3 endpoint                    bucket / prefix
========  ==========================================  =============================================
s3        ``s3.<region>.amazonaws.com``               as written
cos       ``cos.<region>.myqcloud.com``; OssImport's  ``<srcBucket>-<appId>`` (unless it already
          v4 short names (sh, gz, tj, bj, cd, sgp,    ends with it); srcPrefix ``/dir/`` -> key
          hk, ca, ger) map to ap-shanghai, ...        prefix ``dir/``, ``/`` -> whole bucket
bos       ``s3.<region>.bcebos.com``; the native API  as written
          domain ``<region>.bcebos.com`` is rewritten
ks3       ``ks3-<region>.ksyuncs.com`` (region        as written
          ``cn-beijing`` or ``ks3-cn-beijing``)
qiniu     ``s3.<region>.qiniucs.com`` (region         the bucket's S3 name, shown in Kodo's
          ``cn-east-1`` ...); a download (CDN)        console (usually the Kodo name)
          domain such as ``*.clouddn.com`` cannot
          list, and is refused with the fix
========  ==========================================  =============================================

Where the S3 API falls short and a vendor's own SDK would be needed: qiniu's
``getObjectMetaMode=stat`` (the Kodo ``stat`` API with its own hash) has no S3 equivalent, HEAD
is used; OssImport's qiniu/youpai CDN download (``isDownloadFromCdn``) is not done here; COS and
KS3 archive-class objects need a vendor ``restore`` before a GET works; BOS's native
``x-bce-meta-*`` metadata and content-md5 (BOS keeps MD5 for multipart objects too) are visible
only through the BOS API. The S3 ETag is an MD5 only for single-PUT objects without KMS/SSE-C,
so ``md5`` is set only for a 32-hex-digit ETag (never one with '-').

As a destination S3 has no CRC64: every PUT and UploadPart carries ``Content-MD5``, so the
server itself refuses bytes damaged in flight (``BadDigest``), and the returned ETag is compared
with our MD5 where it is one; a PUT whose ETag is our MD5 is confirmed without a HEAD, others
are checked by size through a HEAD. OSS's own S3-compatible endpoint still reports
``x-oss-hash-crc64ecma``: there the copy is checked by CRC64, as through the OSS API.

HEAD and single PUTs, the requests made once per object, go through the lean path
(``lean.py``, Signature V4 with ``UNSIGNED-PAYLOAD``): boto3 costs about 3 ms of CPU per
request, which on a 2-core worker caps small-file throughput.
"""

from __future__ import annotations

import base64
import email.utils
import functools
import hashlib
import hmac
import io
import re
import time
from dataclasses import dataclass
from typing import Iterator, Optional
from urllib.parse import quote, urlsplit

from ..errors import STORE_UNUSABLE, SourceError
from ..models import ObjectEntry
from .base import Destination, Features, PutResult, Source, SourceStream
from .errors import RequestFailed
from .lean import CONNECT_TIMEOUT, READ_TIMEOUT, LeanClient, SignedStore
from .lean import parse_endpoint as lean_endpoint

UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
DEFAULT_REGION = "us-east-1"
# Connections kept per client when no sys.properties says how many tasks run at once (a
# check, a listing).
DEFAULT_POOL = 64
PAGE_SIZE = 1000

# Object headers carried from a source object to its copy (user metadata is mapped apart).
PASS_THROUGH_HEADERS = ("content-type", "content-encoding", "content-disposition",
                        "content-language", "cache-control", "expires")
_HEADER_PARAMS = {"content-type": "ContentType", "content-encoding": "ContentEncoding",
                  "content-disposition": "ContentDisposition",
                  "content-language": "ContentLanguage", "cache-control": "CacheControl"}
_OSS_META = "x-oss-meta-"
_AMZ_META = "x-amz-meta-"
_PLAIN_MD5 = re.compile(r"^[0-9a-f]{32}$")

# Host names that say their region: s3/vendor endpoints and OSS's own S3-compatible endpoint.
_REGION_IN_HOST = (
    re.compile(r"^(?:[^.]+\.)?s3[.-](?:dualstack\.)?([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$"),
    re.compile(r"^(?:[^.]+\.)?cos\.([a-z0-9-]+)\.myqcloud\.com$"),
    re.compile(r"^(?:[^.]+\.)?s3\.([a-z0-9-]+)\.bcebos\.com$"),
    re.compile(r"^(?:[^.]+\.)?ks3-([a-z0-9-]+?)(?:-internal)?\.ksyuncs\.com$"),
    re.compile(r"^(?:[^.]+\.)?s3[.-]([a-z0-9-]+)\.qiniucs\.com$"),
    re.compile(r"^(?:[^.]+\.)?oss-([a-z0-9-]+?)(?:-internal)?\.aliyuncs\.com$"),
)

# OssImport's COS (API v4) region spellings -> COS XML/S3 region ids.
_COS_SHORT_REGIONS = {"sh": "ap-shanghai", "gz": "ap-guangzhou", "tj": "ap-beijing-1",
                      "bj": "ap-beijing", "cd": "ap-chengdu", "sgp": "ap-singapore",
                      "hk": "ap-hongkong", "ca": "na-toronto", "ger": "eu-frankfurt"}


@dataclass(frozen=True)
class S3Endpoint:
    url: str  # scheme://host[:port]
    region: str
    path_style: bool


def parse_endpoint(domain: str, default_scheme: str = "https") -> S3Endpoint:
    if not domain.strip():
        raise ValueError("empty endpoint")
    ep = lean_endpoint(domain, "", default_scheme)
    region = DEFAULT_REGION
    for pattern in _REGION_IN_HOST:
        match = pattern.match(ep.host)
        if match:
            region = match.group(1)
            break
    return S3Endpoint(ep.url, region, ep.path_style)


def _is_full_endpoint(domain: str) -> bool:
    """A URL, a dotted host name, an IP or host:port: used as given, never rewritten."""
    text = domain.strip()
    return "://" in text or "." in text or ":" in text or text == "localhost"


def _md5_from_etag(etag: Optional[str]) -> Optional[str]:
    return etag if etag and _PLAIN_MD5.match(etag.lower()) else None


def _raw_headers(resp: dict) -> dict:
    return resp.get("ResponseMetadata", {}).get("HTTPHeaders", {})


def _oss_crc64(headers: dict) -> Optional[int]:
    """OSS's S3-compatible endpoint still reports the CRC64 it computed: then the copy is
    verified by CRC64 exactly as through the OSS API."""
    value = headers.get("x-oss-hash-crc64ecma")
    try:
        return int(value) if value else None
    except ValueError:
        return None


def _http_time(text: Optional[str]) -> float:
    try:
        return email.utils.parsedate_to_datetime(text).timestamp() if text else 0.0
    except (TypeError, ValueError):
        return 0.0


def _strip_etag(etag) -> Optional[str]:
    return (etag or "").strip('"') or None


def _object_params(headers: Optional[dict]) -> dict:
    """The transfer's OSS-style header dict -> boto3 PutObject/CreateMultipartUpload kwargs."""
    params: dict = {}
    metadata = {}
    for name, value in (headers or {}).items():
        lower = name.lower()
        if lower in _HEADER_PARAMS:
            params[_HEADER_PARAMS[lower]] = value
        elif lower == "expires":
            try:
                params["Expires"] = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                pass  # an unparseable Expires is not worth failing the copy for
        elif lower.startswith(_OSS_META):
            metadata[lower[len(_OSS_META):]] = value
        elif lower.startswith(_AMZ_META):
            metadata[lower[len(_AMZ_META):]] = value
    if metadata:
        params["Metadata"] = metadata
    return params


def _object_headers(headers: Optional[dict]) -> dict:
    """The transfer's OSS-style header dict -> S3 request headers (user metadata as
    ``x-amz-meta-*``), for the lean PUT."""
    out = {}
    for name, value in (headers or {}).items():
        lower = name.lower()
        if lower.startswith(_OSS_META):
            lower = _AMZ_META + lower[len(_OSS_META):]
        elif lower not in PASS_THROUGH_HEADERS and not lower.startswith(_AMZ_META):
            continue
        if not value.isascii():
            # S3 headers are ASCII; a non-ASCII value travels RFC 2047-encoded, as S3 itself
            # returns such metadata.
            value = "=?UTF-8?B?" + base64.b64encode(value.encode("utf-8")).decode("ascii") + "?="
        out[lower] = value
    return out


def _copy_headers(raw: dict) -> dict:
    """Response headers -> what the transfer copies (user metadata as ``x-oss-meta-*``)."""
    out = {}
    for name, value in raw.items():
        lower = name.lower()
        if lower in PASS_THROUGH_HEADERS:
            out[lower] = value
        elif lower.startswith(_AMZ_META):
            out[_OSS_META + lower[len(_AMZ_META):]] = value
    return out


def _botocore():
    """botocore, imported on first use (multipart bookkeeping, a bucket as a source): boto3 and
    its client cost about a quarter of a second, which a job of small objects would otherwise
    pay before its first PUT. Its HEAD, PUT, UploadPart and listing go the lean path."""
    import botocore.config
    import botocore.exceptions

    return botocore


def _content_md5(data: bytes) -> tuple:
    digest = hashlib.md5(data).digest()
    return digest.hex(), base64.b64encode(digest).decode("ascii")


def _network_errors() -> tuple:
    errors = _botocore().exceptions
    return (errors.EndpointConnectionError, errors.ConnectionError, errors.HTTPClientError,
            errors.ReadTimeoutError, errors.ConnectTimeoutError, errors.IncompleteReadError,
            errors.ResponseStreamingError)

# HEAD responses have no body: botocore names the error by its status.
_STATUS_CODES = {"400": "BadRequest", "403": "AccessDenied", "404": "NotFound",
                 "503": "ServiceUnavailable"}


def _client_config(path_style: bool, pool: int, signed: bool, timeout: Optional[float] = None):
    botocore = _botocore()
    kwargs = dict(max_pool_connections=max(1, pool),
                  connect_timeout=timeout or CONNECT_TIMEOUT, read_timeout=timeout or READ_TIMEOUT,
                  retries={"total_max_attempts": 1, "mode": "standard"},
                  s3={"addressing_style": "path" if path_style else "virtual"},
                  signature_version="s3v4" if signed else botocore.UNSIGNED)
    # Newer botocore adds CRC32 trailers to every upload by default; S3-compatible stores do not
    # all understand them, and we send Content-MD5 ourselves.
    try:
        return botocore.config.Config(request_checksum_calculation="when_required",
                                      response_checksum_validation="when_required", **kwargs)
    except TypeError:
        return botocore.config.Config(**kwargs)


def _pool_size(sys_cfg) -> int:
    """One connection per task thread (workerTaskThreadNum), so no thread waits for a
    connection and none is opened that no thread uses."""
    return sys_cfg.worker_task_thread_num if sys_cfg is not None else DEFAULT_POOL


class S3LeanClient(LeanClient):
    """The lean path signed with AWS Signature V4, header form. The payload is not hashed
    (``UNSIGNED-PAYLOAD``): every request that carries bytes carries their Content-MD5, which
    the store checks, and hashing each body twice would cost more CPU than the request."""

    keep_slash = True

    def __init__(self, endpoint, region: str, access_key: str, secret_key: str,
                 connect_timeout: float = CONNECT_TIMEOUT, read_timeout: float = READ_TIMEOUT):
        super().__init__(endpoint, connect_timeout, read_timeout)
        self._access_key, self._secret, self._region = access_key, secret_key, region
        self._day_key = ("", b"")  # (yyyymmdd, signing key): derived once a day

    def _signing_key(self, day: str) -> bytes:
        cached_day, key = self._day_key
        if cached_day != day:
            key = hmac.new(("AWS4" + self._secret).encode("utf-8"), day.encode(), hashlib.sha256).digest()
            for part in (self._region, "s3", "aws4_request"):
                key = hmac.new(key, part.encode(), hashlib.sha256).digest()
            self._day_key = (day, key)  # one tuple swap: threads see the old or the new pair
        return key

    def authorize(self, method: str, full_key: str, path: str, headers: dict,
                  params: Optional[dict]) -> None:
        if not (self._access_key or self._secret):
            return  # a public bucket read anonymously
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        headers["x-amz-date"] = stamp
        headers["x-amz-content-sha256"] = UNSIGNED_PAYLOAD
        signed = sorted((name.lower(), " ".join(str(value).split())) for name, value in headers.items())
        names = ";".join(name for name, _ in signed)
        query = "&".join(f"{quote(k, safe='-_.~')}={quote(str(v), safe='-_.~')}"
                         for k, v in sorted((params or {}).items()))
        canonical = "\n".join([method, path, query, "".join(f"{n}:{v}\n" for n, v in signed), names,
                               UNSIGNED_PAYLOAD])
        scope = f"{stamp[:8]}/{self._region}/s3/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope,
                             hashlib.sha256(canonical.encode("utf-8")).hexdigest()])
        signature = hmac.new(self._signing_key(stamp[:8]), to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
        headers["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={self._access_key}/{scope}, "
                                    f"SignedHeaders={names}, Signature={signature}")


class _S3Store(SignedStore):
    """What source and destination share: the client, the prefix, error translation."""

    role = "dest"
    request_id_header = "x-amz-request-id"
    endpoint_example = "https://s3.us-west-2.amazonaws.com"

    def __init__(self, domain: str, bucket: str, prefix: str, access_key: str, secret_key: str,
                 pool_size: int = DEFAULT_POOL):
        self._check_bucket_name(bucket)
        try:
            self.endpoint = parse_endpoint(domain)
        except ValueError as exc:
            raise self._bad_domain(domain) from exc
        self.bucket_name, self.prefix = bucket, prefix or ""
        self._access_key, self._secret_key = access_key, secret_key
        self._signed = bool(access_key or secret_key)
        self._pool_size = pool_size
        # HEAD, PUT, UploadPart and listings, the requests made per object or part, skip boto3's
        # overhead.
        self.lean = self._lean_client()

    def _lean_client(self, timeout: Optional[float] = None) -> "S3LeanClient":
        lean = S3LeanClient(lean_endpoint(self.endpoint.url, self.bucket_name), self.endpoint.region,
                            self._access_key, self._secret_key, timeout or CONNECT_TIMEOUT,
                            timeout or READ_TIMEOUT)
        lean.role = self.role
        return lean

    @functools.cached_property
    def client(self):
        """The boto3 client, made on first use (see ``_botocore``)."""
        import boto3

        signed = self._signed
        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint.url, region_name=self.endpoint.region,
            aws_access_key_id=self._access_key if signed else None,
            aws_secret_access_key=self._secret_key if signed else None,
            config=_client_config(self.endpoint.path_style, self._pool_size, signed))

    def _failure(self, exc: Exception, op: str, key: str) -> Exception:
        """A botocore exception -> RequestFailed, or the one-line fatal error it implies."""
        botocore = _botocore()
        if isinstance(exc, botocore.exceptions.ClientError):
            response = exc.response or {}
            meta = response.get("ResponseMetadata", {})
            err = response.get("Error", {})
            status = int(meta.get("HTTPStatusCode") or 0)
            code = str(err.get("Code", ""))
            code = _STATUS_CODES.get(code, code)
            failure = RequestFailed(status, code, str(err.get("Message", "")),
                                    str(meta.get("RequestId", "")), operation=op, key=key,
                                    retryable=None if status else True)
        elif isinstance(exc, botocore.exceptions.ParamValidationError):
            return self._error_class()(
                f"{self.role}Bucket '{self.bucket_name}' at {self.endpoint.url}: {op} refused "
                f"by the client ({exc}): fix {self.role}Bucket")
        elif isinstance(exc, botocore.exceptions.NoCredentialsError):
            return self._error_class()(f"{self.role}Bucket '{self.bucket_name}' at "
                                       f"{self.endpoint.url}: no credentials: set "
                                       f"{self.role}AccessKey and {self.role}SecretKey")
        elif isinstance(exc, _network_errors()) or isinstance(exc, OSError):
            failure = RequestFailed(0, type(exc).__name__,
                                    f"{self.endpoint.url}: {exc}", retryable=True,
                                    operation=op, key=key, role=self.role,
                                    unreachable=isinstance(exc, botocore.exceptions.EndpointConnectionError))
        else:
            failure = RequestFailed(0, type(exc).__name__, str(exc), retryable=False,
                                    operation=op, key=key)
        return self._fail(failure)

    def _call(self, op: str, key: str, method, **params):
        try:
            return method(Bucket=self.bucket_name, **params)
        except (_botocore().exceptions.BotoCoreError, _botocore().exceptions.ClientError,
                OSError) as exc:
            raise self._failure(exc, op, key) from exc

    def _head(self, full_key: str, rel_key: str) -> Optional[ObjectEntry]:
        headers = self._head_headers(full_key)
        if headers is None:
            return None
        etag = _strip_etag(headers.get("etag"))
        md5 = headers.get(_AMZ_META + "md5") or _md5_from_etag(etag)
        return ObjectEntry(key=rel_key, size=int(headers.get("content-length", 0)),
                           mtime=_http_time(headers.get("last-modified")), crc64=_oss_crc64(headers),
                           md5=md5, etag=etag, headers=_copy_headers(headers))

    def probe(self, timeout: float) -> None:
        """ListObjectsV2 of at most one key under the prefix: needs the keys, writes nothing.
        A client of its own, so the job's keeps its long timeouts."""
        quick = self._lean_client(timeout)
        try:
            self._lean_list(self.prefix, "", 1, client=quick)
        finally:
            quick.close()

    def close(self) -> None:
        super().close()
        if "client" in self.__dict__:  # made only when it was needed
            self.client.close()


class S3Reader(SourceStream, io.RawIOBase):
    """A GetObject body; ``headers`` holds what the copy carries over (Content-Type...)."""

    def __init__(self, body, headers: dict, key: str = ""):
        super().__init__()
        self._body = body
        self._key = key
        self.headers = headers

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        try:
            return self._body.read(size if size is not None and size >= 0 else None)
        except (_botocore().exceptions.BotoCoreError, OSError) as exc:
            raise RequestFailed(0, type(exc).__name__, str(exc) or "read failed",
                                retryable=True, operation="GetObject", key=self._key) from exc
        except Exception as exc:
            # urllib3's ProtocolError and friends escape botocore's wrapping on a reset body.
            if type(exc).__module__.startswith("urllib3"):
                raise RequestFailed(0, type(exc).__name__, str(exc) or "read failed",
                                    retryable=True, operation="GetObject", key=self._key) from exc
            raise

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close:
                close()
        finally:
            super().close()


class S3Source(_S3Store, Source):
    """srcType=s3, and the base of the vendor srcTypes (see the module docstring)."""

    kind = "s3"
    features = Features(has_md5=True)
    role = "src"

    def __init__(self, *, domain: str, bucket: str, prefix: str = "", access_key: str = "",
                 secret_key: str = "", pool_size: int = DEFAULT_POOL, page_size: int = PAGE_SIZE):
        super().__init__(domain, bucket, prefix, access_key, secret_key, pool_size)
        self.page_size = max(1, min(1000, page_size))

    # ------------------------------------------------------------ vendor mapping

    @classmethod
    def locate(cls, domain: str, bucket: str, prefix: str, app_id: int = 0) -> tuple:
        """OssImport's (srcDomain, srcBucket, srcPrefix) -> (endpoint, bucket, key prefix)."""
        domain = domain.strip()
        if domain and not _is_full_endpoint(domain):
            domain = f"s3.{domain}.amazonaws.com"
        return domain or "s3.amazonaws.com", bucket, prefix

    @classmethod
    def from_job(cls, job, sys_cfg=None):
        endpoint, bucket, prefix = cls.locate(job.src_domain, job.src_bucket, job.src_prefix, job.app_id)
        return cls(domain=endpoint, bucket=bucket, prefix=prefix, access_key=job.src_access_key,
                   secret_key=job.src_secret_key, pool_size=_pool_size(sys_cfg))

    # ------------------------------------------------------------ listing

    def root_problem(self) -> Optional[str]:
        # A HEAD cannot tell a missing key from a missing bucket; a listing's answer can.
        try:
            self._call("ListObjectsV2", self.prefix, self.client.list_objects_v2, Prefix=self.prefix, MaxKeys=1)
        except SourceError as refused:
            return str(refused) if refused.refusal == STORE_UNUSABLE else None
        except RequestFailed:
            return None  # no proof either way
        return None

    def _pages(self, prefix: str, delimiter: str, start_after: str):
        params = {"Prefix": prefix, "MaxKeys": self.page_size}
        if delimiter:
            params["Delimiter"] = delimiter
        if start_after:
            params["StartAfter"] = start_after
        while True:
            try:
                page = self._call("ListObjectsV2", prefix, self.client.list_objects_v2, **params)
            except RequestFailed as failure:
                if failure.retryable:
                    raise
                raise SourceError(f"listing srcBucket '{self.bucket_name}' at "
                                  f"{self.endpoint.url} prefix '{prefix}' failed: "
                                  f"{failure.describe()}") from failure
            yield page
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return
            params["ContinuationToken"] = token

    def list(self, subtree: str = "", recursive: bool = True,
             start_after: Optional[str] = None) -> Iterator[ObjectEntry]:
        prefix = self.prefix + subtree
        after = self.prefix + start_after if start_after else ""
        after = after if after > prefix else ""
        cut = len(self.prefix)
        for page in self._pages(prefix, "" if recursive else "/", after):
            for item in page.get("Contents", ()):
                key = item["Key"]
                # Some S3-compatible servers ignore StartAfter: never yield what was asked away.
                if after and key <= after:
                    continue
                etag = _strip_etag(item.get("ETag"))
                modified = item.get("LastModified")
                yield ObjectEntry(key=key[cut:], size=int(item.get("Size", 0)),
                                  mtime=modified.timestamp() if modified else 0.0,
                                  md5=_md5_from_etag(etag), etag=etag)

    def subtrees(self, subtree: str = "") -> list:
        prefix = self.prefix + subtree
        out = []
        for page in self._pages(prefix, "/", ""):
            out.extend(p["Prefix"][len(self.prefix):] for p in page.get("CommonPrefixes", ()))
        return sorted(out)

    def stat(self, key: str) -> Optional[ObjectEntry]:
        return self._head(self.prefix + key, key)

    def open(self, entry: ObjectEntry, offset: int = 0, length: Optional[int] = None):
        """Raises FileNotFoundError when the object is gone."""
        full = self.prefix + entry.key
        if length == 0 or (length is None and entry.size == 0 and offset == 0):
            # A Range on an empty object is a 416: ask for existence and headers instead.
            head = self.stat(entry.key)
            if head is None:
                raise FileNotFoundError(full)
            return S3Reader(io.BytesIO(b""), head.headers, full)
        params = {"Key": full}
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            params["Range"] = f"bytes={offset}-{end}"
        try:
            resp = self._call("GetObject", full, self.client.get_object, **params)
        except RequestFailed as exc:
            if exc.status == 404 and exc.code in ("NoSuchKey", "NotFound", ""):
                raise FileNotFoundError(full) from exc
            raise
        raw = resp.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        return S3Reader(resp["Body"], _copy_headers(raw), full)


class CosSource(S3Source):
    """Tencent COS through its S3-compatible XML API."""

    kind = "cos"

    @classmethod
    def locate(cls, domain, bucket, prefix, app_id=0):
        domain = domain.strip()
        if domain and not _is_full_endpoint(domain):
            region = _COS_SHORT_REGIONS.get(domain, domain)
            domain = f"cos.{region}.myqcloud.com"
        if app_id and not bucket.endswith(f"-{app_id}"):
            bucket = f"{bucket}-{app_id}"
        # OssImport spells COS prefixes with a leading '/', which is not part of the key.
        return domain, bucket, prefix.lstrip("/")


class BosSource(S3Source):
    """Baidu BOS through its S3-compatible endpoint."""

    kind = "bos"

    @classmethod
    def locate(cls, domain, bucket, prefix, app_id=0):
        text = domain.strip()
        scheme = ""
        if "://" in text:
            scheme, text = text.split("://", 1)
            scheme += "://"
        host = text.rstrip("/")
        native = re.match(r"^([a-z0-9-]+)\.bcebos\.com$", host)
        if native:  # the BOS API domain: its S3 twin lives under s3.
            host = f"s3.{native.group(1)}.bcebos.com"
        elif host and not _is_full_endpoint(host):
            host = f"s3.{host}.bcebos.com"
        return scheme + host, bucket, prefix


class Ks3Source(S3Source):
    """Kingsoft KS3 through its S3-compatible endpoint."""

    kind = "ks3"

    @classmethod
    def locate(cls, domain, bucket, prefix, app_id=0):
        domain = domain.strip()
        if domain and not _is_full_endpoint(domain):
            region = domain[len("ks3-"):] if domain.startswith("ks3-") else domain
            domain = f"ks3-{region}.ksyuncs.com"
        return domain, bucket, prefix


class QiniuSource(S3Source):
    """Qiniu Kodo through its S3-compatible endpoint."""

    kind = "qiniu"

    @classmethod
    def locate(cls, domain, bucket, prefix, app_id=0):
        domain = domain.strip()
        host = urlsplit(domain if "://" in domain else "//" + domain).hostname or ""
        if host.endswith(".clouddn.com") or host.endswith(".qiniudn.com"):
            raise SourceError(f"srcDomain '{domain}' is a Qiniu download domain, which cannot "
                              f"list a bucket: set srcDomain to the bucket's region "
                              f"(e.g. cn-east-1) or its S3 endpoint s3.<region>.qiniucs.com")
        if domain and not _is_full_endpoint(domain):
            domain = f"s3.{domain}.qiniucs.com"
        return domain, bucket, prefix


class S3Destination(_S3Store, Destination):
    """destType=s3: any S3-compatible store, OSS's own S3 endpoint included."""

    kind = "s3"
    # S3 refuses (EntityTooSmall, at complete time) any part but the last below 5 MiB, while
    # multipartUploadPartSize may be as small as 100k: the transfer raises its part size.
    features = Features(has_md5=True, multipart=True, min_part_size=5 * 1024 * 1024,
                        lists_objects=True)
    role = "dest"

    def __init__(self, *, domain: str, bucket: str, prefix: str = "", access_key: str = "",
                 secret_key: str = "", server_side_encryption: bool = False,
                 pool_size: int = DEFAULT_POOL):
        super().__init__(domain, bucket, prefix, access_key, secret_key, pool_size)
        self.server_side_encryption = server_side_encryption

    @classmethod
    def from_job(cls, job, sys_cfg=None):
        return cls(domain=job.dest_domain, bucket=job.dest_bucket, prefix=job.dest_prefix,
                   access_key=job.dest_access_key, secret_key=job.dest_secret_key,
                   server_side_encryption=job.is_server_side_encryption,
                   pool_size=_pool_size(sys_cfg))

    def _params(self, headers: Optional[dict]) -> dict:
        params = _object_params(headers)
        if self.server_side_encryption:
            params["ServerSideEncryption"] = "AES256"
        return params

    @staticmethod
    def _check_etag(op: str, key: str, resp: dict, md5_hex: str) -> Optional[str]:
        """The ETag of a write (boto3 response or lower-cased headers), checked against our MD5."""
        etag = _strip_etag(resp.get("ETag") or resp.get("etag"))
        # KMS and customer-key encryption make the ETag something other than the MD5.
        opaque = ("aws:kms" in (resp.get("ServerSideEncryption"), resp.get("x-amz-server-side-encryption"))
                  or resp.get("SSECustomerAlgorithm")
                  or resp.get("x-amz-server-side-encryption-customer-algorithm"))
        if etag and not opaque and _md5_from_etag(etag) and etag.lower() != md5_hex:
            raise RequestFailed(0, "ETagMismatch", f"stored ETag {etag}, sent MD5 {md5_hex}",
                                retryable=True, operation=op, key=key)
        return etag

    def head(self, key: str) -> Optional[ObjectEntry]:
        return self._head(self.prefix + key, key)

    def put(self, key: str, data: bytes, headers: Optional[dict] = None) -> PutResult:
        full = self.prefix + key
        md5_hex, md5_b64 = _content_md5(data)
        hdrs = _object_headers(headers)
        hdrs["Content-MD5"] = md5_b64
        if self.server_side_encryption:
            hdrs["x-amz-server-side-encryption"] = "AES256"
        rhdrs = self._lean_request("PUT", "PUT", full, headers=hdrs, body=data)
        etag = self._check_etag("PUT", full, rhdrs, md5_hex)
        return PutResult(crc64=_oss_crc64(rhdrs), etag=etag,
                         bytes_confirmed=bool(etag) and etag.lower() == md5_hex)

    def list_page(self, prefix: str, start_after: str = "", max_keys: int = 1000) -> tuple:
        return self._listed_page(prefix, start_after, max_keys)

    def init_multipart(self, key: str, headers: Optional[dict] = None) -> str:
        full = self.prefix + key
        resp = self._call("CreateMultipartUpload", full, self.client.create_multipart_upload,
                          Key=full, **self._params(headers))
        return resp["UploadId"]

    def upload_part(self, key: str, upload_id: str, part_number: int, data: bytes) -> PutResult:
        full = self.prefix + key
        md5_hex, md5_b64 = _content_md5(data)
        # The lean path: botocore hashes every body with SHA-256 for the signature over http,
        # which costs more CPU than sending the part; Content-MD5 already guards the bytes.
        rhdrs = self._lean_request("UploadPart", "PUT", full,
                                   params={"partNumber": str(part_number), "uploadId": upload_id},
                                   headers={"Content-MD5": md5_b64}, body=data)
        return PutResult(crc64=_oss_crc64(rhdrs), etag=self._check_etag("UploadPart", full, rhdrs, md5_hex))

    def list_parts(self, key: str, upload_id: str) -> Optional[dict]:
        full = self.prefix + key
        parts = {}
        params = {"Key": full, "UploadId": upload_id, "MaxParts": 1000}
        while True:
            try:
                resp = self._call("ListParts", full, self.client.list_parts, **params)
            except RequestFailed as exc:
                # 405/501: a server without ListParts (s3rver); the transfer then starts the
                # object over, which costs bytes but never correctness.
                if exc.code == "NoSuchUpload" or exc.status in (404, 405, 501):
                    return None
                raise
            for part in resp.get("Parts", ()):
                parts[int(part["PartNumber"])] = (int(part["Size"]), _strip_etag(part["ETag"]))
            marker = resp.get("NextPartNumberMarker")
            if not resp.get("IsTruncated") or not marker:
                return parts
            params["PartNumberMarker"] = marker

    def complete_multipart(self, key: str, upload_id: str, parts: list) -> PutResult:
        full = self.prefix + key
        listed = [{"PartNumber": int(number), "ETag": f'"{(etag or "").strip(chr(34))}"'}
                  for number, etag in parts]
        resp = self._call("CompleteMultipartUpload", full, self.client.complete_multipart_upload,
                          Key=full, UploadId=upload_id, MultipartUpload={"Parts": listed})
        return PutResult(crc64=_oss_crc64(_raw_headers(resp)), etag=_strip_etag(resp.get("ETag")))

    def abort_multipart(self, key: str, upload_id: str) -> None:
        full = self.prefix + key
        try:
            self._call("AbortMultipartUpload", full, self.client.abort_multipart_upload,
                       Key=full, UploadId=upload_id)
        except RequestFailed as exc:
            if exc.code != "NoSuchUpload" and exc.status != 404:
                raise
