"""UPYUN cloud storage (又拍云) as a source (srcType=youpai).

Speaks UPYUN's documented REST API directly (no SDK): ``srcDomain`` is the API endpoint
(``v0.api.upyun.com`` when empty), ``srcBucket`` the service name, ``srcAccessKey`` the
operator and ``srcSecretKey`` the operator's password. Every request is signed
``Authorization: UPYUN <operator>:<base64 HMAC-SHA1(MD5(password), METHOD&URI&DATE)>``, where
URI is the percent-encoded request path exactly as sent; only the MD5 of the password is kept.

UPYUN storage is a tree of real folders with no prefix listing, so ``list()`` walks it folder by
folder, depth first. Each folder's children are read whole (all ``x-list-iter`` pages; beyond
100,000 of them in sorted runs on disk, so memory stays bounded) and sorted by ``name + '/'`` for folders and ``name`` for files: that is the code-point order of the
full keys, so ``start_after`` is a plain string comparison and folders wholly before it are
never listed. A ``srcPrefix`` that does not end in '/' selects the names in its parent folder
that start with its last part, as an OSS prefix would.

With ``isDownloadFromCdn=true`` the bytes come from ``cdnDomain + '/' + srcPrefix + key`` with no
signature (listing and stat still use the API): the CDN must serve the service publicly.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Iterator, Optional
from urllib.parse import quote, urlsplit

from ..errors import KEYS_REFUSED, SourceError
from ..models import ObjectEntry
from .base import SPILL_AFTER, Features, Source, sorted_bounded
from .errors import RequestFailed
from .httpclient import (CONNECT_TIMEOUT, READ_TIMEOUT, HttpClient, Origin, ResponseStream,
                         lower_headers)

DEFAULT_ENDPOINT = "v0.api.upyun.com"
# The largest page UPYUN documents for x-list-limit; fewer round trips per folder.
LIST_LIMIT = 10000
# The x-list-iter value UPYUN returns after the last page.
LIST_END = "g2gCZAAEbmV4dGQAA2VvZg"

# Response headers a copy carries to its destination object.
PASS_THROUGH_HEADERS = ("content-type", "content-encoding", "content-disposition",
                        "cache-control")


@dataclass(frozen=True)
class Address:
    """An API endpoint or CDN domain as the operator wrote it."""

    origin: Origin
    path: str  # any path the operator wrote after the host (a CDN may be mounted under one)

    @property
    def url(self) -> str:
        return self.origin.url


def parse_address(text: str) -> Address:
    url = text.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) address: {text!r}")
    return Address(Origin(parts.scheme, parts.hostname, parts.port), parts.path.rstrip("/"))


def _unix_time(text: Optional[str]) -> float:
    try:
        return float(text) if text else 0.0
    except ValueError:
        return 0.0


class YoupaiSource(Source):
    kind = "youpai"
    features = Features()
    spill_after = SPILL_AFTER

    def __init__(self, *, service: str, operator: str, password: str, prefix: str = "",
                 domain: str = "", cdn_domain: str = "", download_from_cdn: bool = False,
                 list_limit: int = LIST_LIMIT, connect_timeout: float = CONNECT_TIMEOUT,
                 read_timeout: float = READ_TIMEOUT):
        if not service or "/" in service:
            raise SourceError(f"srcBucket '{service}' is not an UPYUN service name: write the "
                              f"service name alone, without '/' or the endpoint")
        if not operator or not password:
            raise SourceError(f"srcType=youpai needs srcAccessKey (the operator name) and "
                              f"srcSecretKey (the operator password) for service '{service}'")
        endpoint = domain or DEFAULT_ENDPOINT
        try:
            self.api = parse_address(endpoint)
        except ValueError as exc:
            raise SourceError(f"srcDomain '{domain}' is not an UPYUN API endpoint like "
                              f"v0.api.upyun.com") from exc
        self.cdn = None
        if download_from_cdn:
            try:
                self.cdn = parse_address(cdn_domain)
            except ValueError as exc:
                raise SourceError(f"cdnDomain '{cdn_domain}' is not an http(s) address of the "
                                  f"service's CDN domain; fix it or set "
                                  f"isDownloadFromCdn=false") from exc
        self.service, self.operator = service, operator
        self.prefix = (prefix or "").lstrip("/")
        # The signature is keyed by the password's MD5: the password itself is not kept.
        self._key = hashlib.md5(password.encode("utf-8")).hexdigest().encode("ascii")
        self.list_limit = max(1, int(list_limit))
        self._http = HttpClient(connect_timeout, read_timeout, role="src")

    @classmethod
    def from_job(cls, job, sys_cfg=None):
        return cls(service=job.src_bucket, operator=job.src_access_key,
                   password=job.src_secret_key, prefix=job.src_prefix, domain=job.src_domain,
                   cdn_domain=job.cdn_domain, download_from_cdn=job.is_download_from_cdn)

    # ------------------------------------------------------------------ requests

    def _uri(self, full_path: str) -> str:
        return quote(f"/{self.service}/{full_path}".encode("utf-8", "surrogateescape"),
                     safe="/~")

    def _sign(self, method: str, uri: str, date: str) -> str:
        digest = hmac.new(self._key, f"{method}&{uri}&{date}".encode("utf-8"),
                          hashlib.sha1).digest()
        return f"UPYUN {self.operator}:{base64.b64encode(digest).decode('ascii')}"

    def _signed_headers(self, method: str, uri: str, extra: Optional[dict] = None) -> dict:
        date = email.utils.formatdate(usegmt=True)
        headers = {"Date": date, "Authorization": self._sign(method, uri, date)}
        if extra:
            headers.update(extra)
        return headers

    def _where(self) -> str:
        return f"UPYUN service '{self.service}' (srcBucket) at {self.api.url}"

    def _failure(self, op: str, path: str, status: int, headers: dict, body: bytes) -> Exception:
        try:
            doc = json.loads(body) if body else {}
        except ValueError:
            doc = {}
        if not isinstance(doc, dict):
            doc = {}
        message = str(doc.get("msg", "")) or (body[:200].decode("utf-8", "replace")
                                              if body and not doc else "")
        code = str(doc.get("code", ""))
        request_id = headers.get("x-request-id", "") or str(doc.get("id", ""))
        if status in (401, 403):
            said = f" ({message})" if message else ""
            keys = ()
            if "date" in message.lower() or "time" in message.lower():
                fix = "sync this host's clock (NTP): UPYUN refuses requests dated far from now"
            else:
                fix = (f"check srcAccessKey (operator) and srcSecretKey (operator password), and "
                       f"that operator '{self.operator}' is authorized on service "
                       f"'{self.service}' with read permission")
                keys = ("srcAccessKey", "srcSecretKey")
            text = (f"{self._where()} rejected operator '{self.operator}' "
                    f"(HTTP {status}{said}): {fix}")
            if request_id:
                text += f" [RequestId={request_id}]"
            error = SourceError(text)
            error.config_keys = keys
            error.refusal = KEYS_REFUSED
            return error
        return RequestFailed(status, code, message, request_id, operation=op, key=path)

    def _request(self, op: str, method: str, full_path: str, extra: Optional[dict] = None):
        uri = self._uri(full_path)
        headers = {"Accept-Encoding": "identity", **self._signed_headers(method, uri, extra)}
        return self._http.fetch(self.api.origin, method, uri, headers, operation=method)

    # ------------------------------------------------------------------ listing

    def _read_folder(self, full_dir: str) -> Iterator[tuple]:
        """(name, is_dir, size, mtime) of a folder's children, page by page; raises
        FileNotFoundError when the folder does not exist."""
        token = ""
        while True:
            extra = {"Accept": "application/json", "x-list-limit": str(self.list_limit)}
            if token:
                extra["x-list-iter"] = token
            status, headers, body = self._request("List", "GET", full_dir, extra)
            if status == 404:
                raise FileNotFoundError(full_dir)
            if not 200 <= status < 300:
                raise self._failure("List", full_dir, status, headers, body)
            try:
                doc = json.loads(body) if body.strip() else {}
                files = doc.get("files") or []
                page = [(item["name"], str(item.get("type", "")) in ("F", "folder"),
                         int(item.get("length") or 0),
                         _unix_time(str(item.get("last_modified") or ""))) for item in files]
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise RequestFailed(status, "BadListing", f"listing {full_dir} is not UPYUN's "
                                    f"JSON: {body[:200]!r}", retryable=True,
                                    operation="List", key=full_dir) from exc
            yield from page
            token = doc.get("iter") or headers.get("x-upyun-list-iter") or ""
            if not token or token == LIST_END or not files:
                return

    def _children(self, rel_dir: str):
        """(key relative to the prefix, is_dir, size, mtime) of a folder's children, in key
        order, in bounded memory (sorted runs on disk beyond ``spill_after`` children)."""
        full = self.prefix + rel_dir
        folder, _, partial = full.rpartition("/")
        folder = folder + "/" if folder else ""
        cut = len(self.prefix)

        def keyed():
            for name, is_dir, size, mtime in self._read_folder(folder):
                if name and "/" not in name and name.startswith(partial):
                    yield (folder + name)[cut:] + ("/" if is_dir else ""), is_dir, size, mtime

        try:
            return sorted_bounded(keyed(), self.spill_after)
        except FileNotFoundError:
            if rel_dir:
                return []  # removed since its parent was listed: nothing left to copy
            raise self._no_prefix() from None

    def _no_prefix(self) -> SourceError:
        return SourceError(f"srcPrefix '{self.prefix}' does not exist in {self._where()}: "
                           f"fix srcPrefix (a folder path like dir/sub/) or srcBucket")

    def probe(self, timeout: float) -> None:
        """The first page of srcPrefix's folder: not the whole folder, which a listing sorts."""
        folder = self.prefix.rpartition("/")[0]
        try:
            next(self._read_folder(folder + "/" if folder else ""), None)
        except FileNotFoundError:
            raise self._no_prefix() from None

    def list(self, subtree: str = "", recursive: bool = True,
             start_after: Optional[str] = None) -> Iterator[ObjectEntry]:
        after = start_after or ""
        # A stack of sorted child iterators, one per open folder: depth first, streaming.
        stack = [iter(self._children(subtree))]
        while stack:
            child = next(stack[-1], None)
            if child is None:
                stack.pop()
                continue
            key, is_dir, size, mtime = child
            if is_dir:
                # Every key under dir/ sorts before start_after when start_after is past dir/
                # and not inside it.
                if not recursive or (after > key and not after.startswith(key)):
                    continue
                stack.append(iter(self._children(key)))
                continue
            if key > after:
                yield ObjectEntry(key=key, size=size, mtime=mtime)

    def subtrees(self, subtree: str = "") -> list:
        return [key for key, is_dir, _, _ in self._children(subtree) if is_dir]

    # ------------------------------------------------------------------ objects

    def stat(self, key: str) -> Optional[ObjectEntry]:
        full = self.prefix + key
        status, headers, body = self._request("HEAD", "HEAD", full)
        if status == 404:
            return None
        if not 200 <= status < 300:
            raise self._failure("HEAD", full, status, headers, body)
        if headers.get("x-upyun-file-type", "").lower() == "folder":
            return None
        size = headers.get("x-upyun-file-size") or headers.get("content-length") or "0"
        return ObjectEntry(key=key, size=int(size),
                           mtime=_unix_time(headers.get("x-upyun-file-date")),
                           headers={k: v for k, v in headers.items()
                                    if k in PASS_THROUGH_HEADERS})

    def _cdn_path(self, full: str) -> str:
        return quote(f"{self.cdn.path}/{full}".encode("utf-8", "surrogateescape"), safe="/~")

    def open(self, entry: ObjectEntry, offset: int = 0, length: Optional[int] = None):
        """Raises FileNotFoundError when the object is gone."""
        full = self.prefix + entry.key
        if length == 0:
            if self.stat(entry.key) is None:
                raise FileNotFoundError(full)
            return ResponseStream(self._http, None, _Empty(), full, length=0)
        extra = {}
        if offset or length is not None:
            end = str(offset + length - 1) if length is not None else ""
            extra["Range"] = f"bytes={offset}-{end}"
        if self.cdn is not None:
            origin, path = self.cdn.origin, self._cdn_path(full)
            headers = extra
        else:
            origin, path = self.api.origin, self._uri(full)
            headers = self._signed_headers("GET", path, extra)
        # Bytes as stored: Content-Encoding travels as a header.
        conn, resp = self._http.send(origin, "GET", path,
                                     {"Accept-Encoding": "identity", **headers}, operation="GET")
        where = f"{origin.url}{path}"
        status = resp.status
        headers = lower_headers(resp)
        if status in (200, 206):
            keep = {k: v for k, v in headers.items() if k in PASS_THROUGH_HEADERS}
            skip = offset if status == 200 else 0
            return ResponseStream(self._http, conn, resp, where, skip=skip, length=length,
                                  headers=keep)
        body = self._http.drain(conn, resp)
        if status == 404:
            raise FileNotFoundError(full)
        if status == 416:
            # Shorter than the range asks for: the empty read shows the copy that it changed.
            return ResponseStream(self._http, None, _Empty(), where, length=0)
        if self.cdn is not None and status in (401, 403):
            raise SourceError(f"cdnDomain {self.cdn.url} refused {full} (HTTP {status}): "
                              f"the CDN needs a token or referer (anti-leech); allow this host "
                              f"or set isDownloadFromCdn=false to download through the API")
        raise self._failure("GET", full, status, headers, body)

    def close(self) -> None:
        self._http.close()


class _Empty:
    """A drained response, for reads that need no request."""

    length = 0
    will_close = False

    def read(self, size: int = -1) -> bytes:
        return b""

    def isclosed(self) -> bool:
        return True

    def close(self) -> None:
        pass
