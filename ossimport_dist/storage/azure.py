"""An Azure Blob Storage container as a source (srcType=azure).

OssImport's keys for Azure: srcAccessKey is the storage account name, srcSecretKey the account
key, srcBucket the container, srcDomain the EndpointSuffix (``core.windows.net``,
``core.chinacloudapi.cn``; empty means the global cloud). A full URL in srcDomain
(``http://127.0.0.1:10000/devstoreaccount1`` for Azurite, a private endpoint) is used as given.

Azure lists blob names in UTF-16 code-unit order, which differs from the code-point order the
scanner relies on only where a character above U+FFFF (emoji, rare CJK) meets one in
U+E000..U+FFFF: ``code_point_order`` restores code-point order while streaming, holding back only
the names that a later name could still precede. ``start_after`` is honoured by skipping while
streaming: the service's continuation marker is opaque and cannot be built from a key, so a
resumed listing re-reads (but does not yield) the names before the checkpoint.

Reads and HEADs leave retries to the transfer engine (the SDK's own retries would hide
"ServerBusy" from the worker's backpressure); listing keeps a few short SDK retries because a
failed page fails the whole scan unit.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import io
from typing import Iterator, Optional
from urllib.parse import urlsplit

from ..errors import KEYS_REFUSED, STORE_UNUSABLE, SourceError
from ..models import ObjectEntry
from .base import Features, Source, SourceStream
from .errors import RequestFailed, never_connected

CONNECT_TIMEOUT = 10
READ_TIMEOUT = 60
DEFAULT_SUFFIX = "core.windows.net"
# Small download chunks: the SDK buffers a whole chunk in memory before read() returns any of it.
CHUNK_BYTES = 4 * 1024 * 1024
LIST_PAGE_SIZE = 5000  # the service's maximum
_THROTTLE_CODES = frozenset({"ServerBusy", "IngressOverAccountLimit", "EgressOverAccountLimit",
                             "TooManyRequests"})
_AUTH_CODES = frozenset({"AuthenticationFailed", "InvalidAuthenticationInfo"})
_DENIED_CODES = frozenset({"AuthorizationPermissionMismatch",
                           "AuthorizationSourceIPMismatch", "AuthorizationProtocolMismatch",
                           "KeyBasedAuthenticationNotPermitted", "InsufficientAccountPermissions"})
PASS_THROUGH = (("content_type", "content-type"), ("content_encoding", "content-encoding"),
                ("cache_control", "cache-control"),
                ("content_disposition", "content-disposition"),
                ("content_language", "content-language"))


def account_url(account: str, domain: str) -> str:
    """The blob service URL of ``account`` for an EndpointSuffix or a full endpoint URL."""
    domain = (domain or "").strip().rstrip("/")
    if "://" in domain:
        return domain
    suffix = domain or DEFAULT_SUFFIX
    # Operators also paste the blob host or its "blob." part; both name the same endpoint.
    if suffix.lower().startswith(f"{account.lower()}.blob."):
        return f"https://{suffix}"
    if suffix.lower().startswith("blob."):
        suffix = suffix[len("blob."):]
    return f"https://{account}.blob.{suffix}"


def _headers_of(props) -> dict:
    """What a copy carries over, lower-cased like OssReader's: content headers and metadata."""
    out = {}
    settings = getattr(props, "content_settings", None)
    if settings is not None:
        for attr, name in PASS_THROUGH:
            value = getattr(settings, attr, None)
            if value:
                out[name] = value
    for name, value in (getattr(props, "metadata", None) or {}).items():
        out[f"x-oss-meta-{name.lower()}"] = value
    return out


def _md5_of(props) -> Optional[str]:
    settings = getattr(props, "content_settings", None)
    digest = getattr(settings, "content_md5", None) if settings is not None else None
    return bytes(digest).hex() if digest else None


def _total_size(props) -> Optional[int]:
    """The blob's whole size from a (ranged) download's Content-Range ``bytes a-b/total``."""
    content_range = getattr(props, "content_range", None) or ""
    total = content_range.rpartition("/")[2]
    return int(total) if total.isdigit() else None


def _floor_of_later_names(key: str, fixed: int) -> Optional[str]:
    """The smallest code-point name that may still follow ``key`` in UTF-16 order, or None when
    every later name is greater than ``key``.

    A later name can differ from ``key`` first at a character above U+FFFF (a surrogate pair in
    UTF-16) by having one in U+E000..U+FFFF there: UTF-16 puts it after, code points before.
    The first ``fixed`` characters are the listing prefix, which every name shares.
    """
    for i in range(fixed, len(key)):
        if ord(key[i]) > 0xFFFF:
            return key[:i] + "\ue000"
    return None


def code_point_order(items, fixed: int = 0):
    """(key, value) pairs in UTF-16 order of key, yielded in code-point order of key.

    Keys must be unique. Memory holds only names behind a character above U+FFFF that a later
    name could still precede, normally none.
    """
    held = []
    for key, value in items:
        heapq.heappush(held, (key, value))
        floor = _floor_of_later_names(key, fixed)
        while held and (held[0][0] <= key if floor is None else held[0][0] < floor):
            yield heapq.heappop(held)
    while held:
        yield heapq.heappop(held)


class AzureReader(SourceStream, io.RawIOBase):
    """A ranged blob download; ``headers`` holds what the copy should carry over.

    ``stat_now()`` reports the size and mtime of the blob version being read, so the transfer
    sees that a blob was replaced after it was listed, as it does for local files.
    """

    def __init__(self, downloader, headers: dict, source: "AzureSource", blob: str):
        super().__init__()
        self._downloader = downloader
        self.headers = headers
        self._source, self._blob = source, blob

    def readable(self) -> bool:
        return True

    def stat_now(self) -> tuple:
        props = self._downloader.properties
        size = _total_size(props)
        return (size if size is not None else props.size), props.last_modified.timestamp()

    def read(self, size: int = -1) -> bytes:
        try:
            return self._downloader.read(size if size is not None and size >= 0 else -1)
        except Exception as exc:  # the SDK raises azure.core errors and plain socket errors
            raise self._source._failure(exc, "GetBlob", self._blob, retry_network=True) from exc


class AzureSource(Source):
    kind = "azure"
    # Content-MD5 is present only on blobs written in one request or by tools that set it.
    features = Features()

    def __init__(self, *, account: str, key: str, container: str, prefix: str = "",
                 domain: str = "", page_size: int = LIST_PAGE_SIZE):
        if not account:
            raise SourceError("srcAccessKey is empty: for srcType=azure set it to the storage "
                              "account name")
        if not container:
            raise SourceError("srcBucket is empty: for srcType=azure set it to the container name")
        try:
            base64.b64decode(key, validate=True)
        except (binascii.Error, ValueError):
            raise SourceError(f"srcSecretKey is not an Azure account key (base64) for account "
                              f"'{account}': copy key1 or key2 from the storage account's "
                              f"Access keys page") from None
        self.account, self.container_name, self.prefix = account, container, prefix or ""
        self.endpoint = account_url(account, domain)
        self.page_size = page_size
        scheme = urlsplit(self.endpoint).scheme
        if scheme not in ("http", "https"):
            raise SourceError(f"srcDomain '{domain}' is neither an EndpointSuffix "
                              f"(core.windows.net) nor an http(s) URL: fix srcDomain")
        # Imported here: a job without Azure sources never pays for the SDK.
        from azure.storage.blob import ContainerClient, ExponentialRetry

        self._client = ContainerClient(
            self.endpoint, container, credential={"account_name": account, "account_key": key},
            connection_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT,
            max_single_get_size=CHUNK_BYTES, max_chunk_get_size=CHUNK_BYTES,
            retry_policy=ExponentialRetry(initial_backoff=1, increment_base=2, retry_total=3))

    @classmethod
    def from_job(cls, job, sys_cfg=None):
        return cls(account=job.src_access_key, key=job.src_secret_key, container=job.src_bucket,
                   prefix=job.src_prefix, domain=job.src_domain)

    # ---------------------------------------------------------------- errors

    def _where(self) -> str:
        return (f"container srcBucket '{self.container_name}' of account srcAccessKey "
                f"'{self.account}' at {self.endpoint}")

    def _failure(self, exc: Exception, op: str, key: str, retry_network: bool = True) -> Exception:
        """``RequestFailed`` for one failed request, or ``SourceError`` when none can work."""
        from azure.core.exceptions import AzureError, HttpResponseError

        if isinstance(exc, (RequestFailed, SourceError)):
            return exc
        if isinstance(exc, HttpResponseError) and exc.status_code:
            status = exc.status_code
            code = getattr(exc, "error_code", None) or ""
            response = getattr(exc, "response", None)
            headers = getattr(response, "headers", None) or {}
            request_id = headers.get("x-ms-request-id", "")
            if not code:
                code = headers.get("x-ms-error-code", "") or ""
            message = (str(getattr(exc, "reason", "") or "") or str(exc)).splitlines()[0]
            fatal = self._fatal(status, code, request_id)
            if fatal is not None:
                return fatal
            throttled = status == 503 and code in _THROTTLE_CODES or status == 429
            # 412: the blob changed between two chunks of one download; a fresh open is right.
            retryable = True if status == 412 else None
            return RequestFailed(status, code, message, request_id, retryable=retryable,
                                 throttled=throttled or None, operation=op, key=key)
        if isinstance(exc, (AzureError, OSError)):
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return RequestFailed(0, type(exc).__name__, text, retryable=retry_network,
                                 operation=op, key=key, role="src", unreachable=never_connected(exc))
        return exc

    def _fatal(self, status: int, code: str, request_id: str) -> Optional[SourceError]:
        where = self._where()
        keys = ("srcAccessKey", "srcSecretKey")
        refusal = KEYS_REFUSED  # the three first cases; the others: the container or account
        if code in _AUTH_CODES or (status == 403 and not code):
            text = (f"{where} rejected the signature ({code or 'HTTP 403'}): srcSecretKey is not "
                    f"a key of account '{self.account}'; fix srcAccessKey/srcSecretKey "
                    f"(or srcDomain when the account lives in another cloud)")
        elif code == "AuthorizationFailure":
            # Azure's answer to a firewall rule, Azurite's to a wrong key: name both fixes.
            text = (f"{where} refused the request ({code}): check that srcSecretKey is a key of "
                    f"account '{self.account}' and that the storage account's networking "
                    f"settings allow this host")
        elif code in _DENIED_CODES:
            text = (f"{where} denied access ({code}): allow key access and this host's address "
                    f"in the storage account's networking settings")
        elif code == "ContainerNotFound":
            text = f"{where} does not exist: fix srcBucket (the container name) or srcAccessKey"
            keys = ("srcBucket", "srcAccessKey")
            refusal = STORE_UNUSABLE
        elif code in ("InvalidResourceName", "OutOfRangeInput") and status == 400:
            text = f"{where} refused the container name ({code}): fix srcBucket"
            keys = ("srcBucket",)
            refusal = STORE_UNUSABLE
        elif code in ("AccountIsDisabled", "AccountBeingCreated"):
            text = f"{where}: the storage account is not usable ({code})"
            refusal = STORE_UNUSABLE
        else:
            return None
        if request_id:
            text += f" [RequestId={request_id}]"
        error = SourceError(text)
        error.config_keys = keys
        error.refusal = refusal
        return error

    def _listing_error(self, exc: Exception, prefix: str) -> SourceError:
        failure = self._failure(exc, "ListBlobs", prefix)
        if isinstance(failure, SourceError):
            return failure
        detail = failure.describe() if isinstance(failure, RequestFailed) else str(failure)
        return SourceError(f"listing {self._where()} prefix '{prefix}' failed: {detail}; "
                           f"check srcAccessKey (account name) and srcDomain")

    # ---------------------------------------------------------------- listing

    def _entry(self, props, key: str) -> ObjectEntry:
        return ObjectEntry(key=key, size=props.size, mtime=props.last_modified.timestamp(),
                           md5=_md5_of(props), etag=(props.etag or "").strip('"') or None,
                           headers=_headers_of(props))

    def _stream(self, items, prefix: str):
        """Items of an SDK pager; a failure on any page becomes one SourceError line."""
        iterator = iter(items)
        while True:
            try:
                item = next(iterator)
            except StopIteration:
                return
            except Exception as exc:
                raise self._listing_error(exc, prefix) from exc
            yield item

    def list(self, subtree: str = "", recursive: bool = True,
             start_after: Optional[str] = None) -> Iterator[ObjectEntry]:
        from azure.storage.blob import BlobPrefix

        prefix = self.prefix + subtree
        after = start_after or ""
        cut = len(self.prefix)
        if recursive:
            pager = self._client.list_blobs(name_starts_with=prefix or None,
                                            results_per_page=self.page_size)
        else:
            pager = self._client.walk_blobs(name_starts_with=prefix or None, delimiter="/",
                                            results_per_page=self.page_size)
        blobs = ((item.name[cut:], item) for item in self._stream(pager, prefix)
                 if not isinstance(item, BlobPrefix))
        for key, item in code_point_order(blobs, len(subtree)):
            if key > after:
                yield self._entry(item, key)

    def probe(self, timeout: float) -> None:
        """One page of one blob under the prefix, with one retry at most."""
        pager = self._client.list_blobs(name_starts_with=self.prefix or None, results_per_page=1,
                                        retry_total=1, connection_timeout=timeout,
                                        read_timeout=timeout)
        next(iter(self._stream(pager, self.prefix)), None)

    def subtrees(self, subtree: str = "") -> list:
        from azure.storage.blob import BlobPrefix

        prefix = self.prefix + subtree
        cut = len(self.prefix)
        pager = self._client.walk_blobs(name_starts_with=prefix or None, delimiter="/",
                                        results_per_page=self.page_size)
        return sorted(item.name[cut:] for item in self._stream(pager, prefix)
                      if isinstance(item, BlobPrefix))

    # ---------------------------------------------------------------- objects

    def stat(self, key: str) -> Optional[ObjectEntry]:
        from azure.core.exceptions import ResourceNotFoundError

        full = self.prefix + key
        try:
            props = self._client.get_blob_client(full).get_blob_properties(retry_total=0)
        except ResourceNotFoundError as exc:
            if getattr(exc, "error_code", None) == "ContainerNotFound":
                raise self._failure(exc, "GetBlobProperties", full) from exc
            return None
        except Exception as exc:
            raise self._failure(exc, "GetBlobProperties", full) from exc
        return self._entry(props, key)

    def open(self, entry: ObjectEntry, offset: int = 0, length: Optional[int] = None):
        """Raises FileNotFoundError when the blob is gone."""
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

        full = self.prefix + entry.key
        if length == 0:
            if self.stat(entry.key) is None:
                raise FileNotFoundError(full)
            return io.BytesIO(b"")
        blob = self._client.get_blob_client(full)
        try:
            downloader = blob.download_blob(offset=offset if offset or length is not None else None,
                                            length=length, max_concurrency=1, retry_total=0,
                                            # The stored bytes, even when Content-Encoding is
                                            # gzip: the copy keeps the header, so OSS serves them
                                            # the same way.
                                            decompress=False)
        except ResourceNotFoundError as exc:
            if getattr(exc, "error_code", None) == "ContainerNotFound":
                raise self._failure(exc, "GetBlob", full) from exc
            raise FileNotFoundError(full) from exc
        except HttpResponseError as exc:
            if exc.status_code == 416:  # an offset past the end: the blob shrank since listing
                return io.BytesIO(b"")
            raise self._failure(exc, "GetBlob", full) from exc
        except Exception as exc:
            raise self._failure(exc, "GetBlob", full) from exc
        return AzureReader(downloader, _headers_of(downloader.properties), self, full)

    def close(self) -> None:
        self._client.close()
