"""Copies one object from a source to the destination and proves it arrived intact.

One place decides single PUT or multipart. The source is read once per attempt, in chunks,
computing CRC64 (and MD5 when workerRecordMd5 asks) in the same pass, with the worker's
``Throttle`` charged per chunk. Every write is checked against the CRC64 OSS reports; a file
that changes while it is read is reported, never uploaded as a torn copy.

Multipart uploads keep a checkpoint per object under ``state_dir/multipart/`` so a restarted
worker, or a retry of the failed task on any host, uploads only the parts that are missing. An
upload that will not be completed is aborted: when its checkpoint is dropped (the source changed
or vanished, the file is now copied another way) and when ``clean`` removes the job
(``abort_job_uploads``), so no orphan parts stay billable at the destination.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import mimetypes
import os
import pathlib
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Optional

from . import crc64
from .errors import OperatorError
from .layout import MULTIPART_DIR
from .models import (CRC_NOT_MATCH, MD5_NOT_MATCH, SIZE_NOT_MATCH, SOURCE_NOT_EXIST,
                     TARGET_NOT_EXIST, FileResult, ObjectEntry, Outcome)
from .storage.base import MTIME_HEADER
from .storage.errors import RequestFailed
from .throttle import Throttle

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
MAX_PARTS = 10000  # OSS refuses part numbers above this
# The source's mtime as listed vs. now: floats that went through JSON compare exactly, but a
# source reporting whole seconds (or a filesystem with coarse times) must not look changed.
MTIME_SLACK = 1e-3


@dataclass
class TransferOptions:
    multipart_threshold: int
    part_size: int
    parts_in_parallel: int  # uploadThreadNumPerLargeFile
    skip_existing: bool = False  # isSkipExistFile
    record_md5: bool = False  # workerRecordMd5: x-oss-meta-md5
    server_side_encryption: bool = False  # applied by the destination driver
    max_attempts: int = 5
    backoff_base: float = 0.5
    backoff_cap: float = 20.0


class Backpressure:
    """Slows every thread of a worker when the destination says "reduce your request rate".

    Each throttle signal pushes a shared "not before" time further out (doubling the pause on
    repeated signals); successes shrink the pause again.
    """

    def __init__(self, base: float = 0.2, cap: float = 10.0, clock=time.monotonic,
                 sleep=time.sleep):
        self._lock = threading.Lock()
        self._base, self._cap = base, cap
        self._clock, self._sleep = clock, sleep
        self._pause = 0.0
        self._not_before = 0.0

    @property
    def pause(self) -> float:
        return self._pause

    def signal(self) -> None:
        with self._lock:
            self._pause = min(self._cap, max(self._base, self._pause * 2))
            self._not_before = max(self._not_before, self._clock() + self._pause)

    def success(self) -> None:
        if not self._pause:  # the common case costs no lock
            return
        with self._lock:
            self._pause = self._pause * 0.8 if self._pause > self._base / 4 else 0.0

    def wait(self) -> None:
        delay = self._not_before - self._clock()
        if delay > 0:
            self._sleep(min(delay, self._cap))


def _mtime_moved(entry: ObjectEntry, mtime) -> bool:
    # mtime 0 means the listing did not know it (an http list, a manifest with sizes only).
    return bool(entry.mtime) and abs(mtime - entry.mtime) > MTIME_SLACK


class _Changed(Exception):
    """The source is not the file that was listed (size or mtime differ)."""

    def __init__(self, entry: ObjectEntry, size, mtime):
        super().__init__(f"{SIZE_NOT_MATCH}: listed {entry.size} bytes mtime {entry.mtime}, "
                         f"now {size} bytes mtime {mtime}")


class _Mismatch(Exception):
    """What was stored differs from what was read; retried, then reported as CheckFailed."""


def _failure_text(exc: Exception) -> str:
    if isinstance(exc, RequestFailed):
        return exc.describe()
    code = getattr(exc, "failure_code", None)  # a driver's own refusal, as operators grep it
    if code:
        return f"{code}: {exc}"
    if isinstance(exc, OSError):
        return f"{type(exc).__name__}: {exc.strerror or exc}" + (
            f": {exc.filename}" if exc.filename else "")
    if isinstance(exc, OperatorError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _failed(key: str, exc: Exception) -> FileResult:
    """A file failed by ``exc``, with the store's code when a request failed."""
    code = exc.reason_code if isinstance(exc, RequestFailed) else ""
    return FileResult(key, Outcome.FAILED, detail=_failure_text(exc), code=code, cause=exc)


def _take_back(sending: Optional[Callable], n: int) -> None:
    if sending is not None and n:
        sending(-n)


class Transferer:
    """Copies objects; one instance may be shared by all threads of a worker.

    ``on_bytes(n)`` is called with the bytes of each part or small object once the destination
    has accepted it, so the rate never counts an attempt that is later retried.

    ``copy(..., sending=f)`` calls ``f(n)`` per chunk read for the upload, so a large file shows
    progress before it ends, and ``f(-n)`` for an attempt that failed and is sent again (a
    retried part is counted once). Parts a resumed multipart upload adopts from its checkpoint
    count at once: they are at the destination already, though not in the rate.

    ``halted`` is set when the job stops on a fatal error: a request that fails then is not
    tried again, so the files in flight end within one request instead of a full backoff.
    """

    def __init__(self, source, destination, options: TransferOptions,
                 throttle: Optional[Throttle] = None, on_bytes: Optional[Callable] = None,
                 backpressure: Optional[Backpressure] = None, sleep: Optional[Callable] = None):
        self.source, self.destination, self.options = source, destination, options
        self.throttle = throttle or Throttle(0)
        self.on_bytes = on_bytes
        self.halted = threading.Event()
        self.backpressure = backpressure or Backpressure(sleep=sleep or time.sleep)
        self._sleep = sleep or self.halted.wait  # a backoff ends at once when the job stops
        self._random = random.Random()
        # Built-in table only: the same file gets the same Content-Type on every worker host,
        # whatever /etc/mime.types says there.
        self._mime = mimetypes.MimeTypes(filenames=())
        self._server_copy = True  # until the store refuses a server-side copy once

    def stat_source(self, entry: ObjectEntry) -> Optional[ObjectEntry]:
        """The source object as it is now. Entries that carry their own address (an http list's
        URL) are looked up by the entry, since the key alone does not find them."""
        return self.source.stat(entry if entry.src else entry.key)

    def _with_size(self, entry: ObjectEntry):
        """For sources whose listing has no sizes (http): the entry with the size and mtime the
        source reports now, or a FileResult saying why it cannot be copied."""
        now = self._call(self.stat_source, entry)
        if now is None:
            return FileResult(entry.key, Outcome.FAILED, detail=f"{SOURCE_NOT_EXIST}: source file does not exist")
        if now.size is None or now.size < 0:
            return FileResult(entry.key, Outcome.FAILED,
                              detail="SIZE_UNKNOWN: the server gives no Content-Length for this URL")
        return dataclasses.replace(entry, size=now.size, mtime=now.mtime or 0.0,
                                   headers={**(now.headers or {}), **(entry.headers or {})})

    def _copy_server_side(self, entry: ObjectEntry) -> Optional[FileResult]:
        """Copy inside the store (same OSS endpoint): the bytes never pass through this worker.
        None when the store refuses (the destination's keys cannot read the source bucket):
        the bytes then go through us, for this file and the rest."""
        now = self._call(self.stat_source, entry)
        if now is None:
            return FileResult(entry.key, Outcome.FAILED, detail=f"{SOURCE_NOT_EXIST}: source file does not exist")
        if now.size != entry.size:
            return FileResult(entry.key, Outcome.CHECK_FAILED,
                              detail=f"{SIZE_NOT_MATCH}: listed {entry.size} bytes, now {now.size} bytes")
        try:
            result = self._call(self.destination.copy_from, self.source, entry, self.options.part_size,
                                now.headers or None)
        except OperatorError as exc:
            log.warning("server-side copy refused (%s); copying through this worker instead", exc)
            self._server_copy = False
            return None
        stored = result.crc64 if result.crc64 is not None else self._stored_crc(entry.key, entry.size)
        if now.crc64 is not None and stored != now.crc64:
            return FileResult(entry.key, Outcome.CHECK_FAILED,
                              detail=f"{CRC_NOT_MATCH}: source {now.crc64}, copy {stored}")
        if self.on_bytes:
            self.on_bytes(entry.size)
        return FileResult(entry.key, Outcome.SUCCEED, size=entry.size, crc64=stored, detail="server-side copy")

    # ---------------------------------------------------------------- retry machinery

    def _gives_up(self, failure: RequestFailed, attempt: int) -> bool:
        return not failure.retryable or attempt >= self.options.max_attempts or self.halted.is_set()

    def _backoff(self, attempt: int, failure: RequestFailed) -> None:
        if failure.throttled:
            self.backpressure.signal()
        delay = min(self.options.backoff_cap, self.options.backoff_base * (2 ** (attempt - 1)))
        self._sleep(delay / 2 + self._random.uniform(0, delay / 2))

    def _call(self, fn, *args):
        """A destination/source request, retried while its failure is transient."""
        attempt = 1
        while True:
            self.backpressure.wait()
            try:
                result = fn(*args)
            except RequestFailed as failure:
                if self._gives_up(failure, attempt):
                    raise
                self._backoff(attempt, failure)
                attempt += 1
                continue
            self.backpressure.success()
            return result

    # ---------------------------------------------------------------- reading

    def _content_type(self, key: str) -> str:
        guessed, _ = self._mime.guess_type(key, strict=False)
        return guessed or "application/octet-stream"

    def _object_headers(self, entry: ObjectEntry, stream_headers: Optional[dict],
                        md5_hex: Optional[str]) -> dict:
        headers = {}
        for source in (entry.headers, stream_headers):
            if source:
                for name, value in source.items():
                    headers[name.lower()] = value
        if "content-type" not in headers:
            headers["content-type"] = self._content_type(entry.key)
        if md5_hex:
            headers["x-oss-meta-md5"] = md5_hex
        if entry.mtime and self.destination.features.preserves_mtime:
            headers[MTIME_HEADER] = repr(entry.mtime)
        return {name.title() if not name.startswith("x-oss-") else name: value
                for name, value in headers.items()}

    def _check_snapshot(self, entry: ObjectEntry, stream) -> None:
        stat_now = stream.stat_now
        if stat_now is None:
            return
        size, mtime = stat_now()
        if size != entry.size or _mtime_moved(entry, mtime):
            raise _Changed(entry, size, mtime)

    def _read(self, entry: ObjectEntry, offset: int, length: int, want_md5: bool,
              sending: Optional[Callable] = None):
        """(bytes, crc64, md5 hex or None, stream headers) of one range, read in one pass;
        ``sending(n)`` per chunk, and the chunks taken back when the read fails."""
        counted = [0]

        def sent(n: int) -> None:
            if sending is not None:
                sending(n)
                counted[0] += n

        try:
            return self._read_counted(entry, offset, length, want_md5, sent)
        except BaseException:
            _take_back(sending, counted[0])
            raise

    def _read_counted(self, entry: ObjectEntry, offset: int, length: int, want_md5: bool, sent: Callable):
        whole = offset == 0 and length == entry.size
        # The whole object is opened unbounded so that a file that grew shows up as extra bytes.
        stream = self.source.open(entry, 0, None) if whole else self.source.open(entry, offset, length)
        try:
            self._check_snapshot(entry, stream)
            crc = 0
            md5 = hashlib.md5() if want_md5 else None
            # One read for small objects; one more byte than expected shows a file that grew.
            want = length + 1 if whole else length
            chunks = []
            got = 0
            while got < want:
                piece = stream.read(min(CHUNK if length > CHUNK else want, want - got))
                if not piece:
                    break
                self.throttle.consume(len(piece))
                sent(len(piece))
                crc = crc64.crc64(piece, crc)
                if md5 is not None:
                    md5.update(piece)
                chunks.append(piece)
                got += len(piece)
            self._check_snapshot(entry, stream)
            headers = stream.headers
        finally:
            stream.close()
        if got != length:
            raise _Changed(entry, offset + got, "unknown")
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return data, crc, md5.hexdigest() if md5 is not None else None, headers

    # ---------------------------------------------------------------- public API

    def copy(self, entry: ObjectEntry, state_dir: pathlib.Path, sending: Optional[Callable] = None) -> FileResult:
        """Copy one object; failures are results, except a destination that cannot work at all.
        ``sending(n)``: bytes read for the upload so far (see the class)."""
        key = entry.key
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            return FileResult(key, Outcome.FAILED, detail="INVALID_KEY: file name is not valid "
                              "UTF-8 and cannot be an OSS key; rename it")
        try:
            if not self.source.features.sizes_known:
                sized = self._with_size(entry)
                if isinstance(sized, FileResult):
                    return sized
                entry = sized
            if self.options.skip_existing:
                existing = self._call(self.destination.head, key)
                if existing is not None and self._same(entry, existing):
                    self.abandon_upload(entry, state_dir)
                    return FileResult(key, Outcome.SKIPPED, detail="destination has the same "
                                      "object", crc64=existing.crc64)
            if self._server_copy and self.destination.can_copy_from(self.source):
                result = self._copy_server_side(entry)
                if result is not None:
                    self.abandon_upload(entry, state_dir)
                    return result
            if entry.size < self.options.multipart_threshold:
                self.abandon_upload(entry, state_dir)
                return self._copy_small(entry, sending)
            return self._copy_multipart(entry, pathlib.Path(state_dir), sending)
        except OperatorError:
            raise
        except FileNotFoundError as exc:
            return FileResult(key, Outcome.FAILED,
                              detail=f"{SOURCE_NOT_EXIST}: source file does not exist", cause=exc)
        except (_Changed, _Mismatch) as exc:
            return FileResult(key, Outcome.CHECK_FAILED, detail=str(exc))
        except (RequestFailed, OSError) as exc:
            return _failed(key, exc)
        except Exception as exc:  # one odd object must not stop the task's other files
            log.exception("unexpected error copying %s", key)
            return _failed(key, exc)

    def _same(self, entry: ObjectEntry, existing: ObjectEntry) -> bool:
        if existing.size != entry.size:
            return False
        if entry.crc64 is not None and existing.crc64 is not None:
            return entry.crc64 == existing.crc64
        # OssImport's rule: same size and the copy is not older than the source; Last-Modified
        # has whole seconds.
        return existing.mtime >= int(entry.mtime)

    def _copy_small(self, entry: ObjectEntry, sending: Optional[Callable] = None) -> FileResult:
        attempt = 1
        while True:
            self.backpressure.wait()
            data = b""
            try:
                data, crc, md5_hex, stream_headers = self._read(
                    entry, 0, entry.size, self.options.record_md5, sending)
                headers = self._object_headers(entry, stream_headers, md5_hex)
                result = self.destination.put(entry.key, data, headers)
                stored = result.crc64
                if stored is None and not result.bytes_confirmed:  # a store that did not say: ask it
                    stored = self._stored_crc(entry.key, entry.size)
                if stored is None and not self.destination.features.has_crc64:
                    pass  # no CRC64 there (S3): the store checked Content-MD5 and confirmed
                    # our bytes by their ETag, or the HEAD above checked the size
                elif stored != crc:
                    raise _Mismatch(f"{CRC_NOT_MATCH}: read {crc}, stored {stored}")
            except RequestFailed as failure:
                _take_back(sending, len(data))  # sent again, or the file fails: never twice
                if self._gives_up(failure, attempt):
                    raise
                self._backoff(attempt, failure)
            except _Mismatch as exc:
                _take_back(sending, len(data))
                if attempt >= self.options.max_attempts:
                    return FileResult(entry.key, Outcome.CHECK_FAILED, detail=str(exc))
                log.warning("%s: %s; retrying", entry.key, exc)
            else:
                self.backpressure.success()
                if self.on_bytes:
                    self.on_bytes(entry.size)
                return FileResult(entry.key, Outcome.SUCCEED, size=entry.size, crc64=crc)
            attempt += 1

    def _stored_crc(self, key: str, size: int) -> Optional[int]:
        head = self._call(self.destination.head, key)
        if head is None or head.size != size:
            raise _Mismatch(f"{SIZE_NOT_MATCH}: destination has "
                            f"{'no object' if head is None else f'{head.size} bytes'}")
        return head.crc64

    # ---------------------------------------------------------------- multipart

    def _checkpoint_path(self, state_dir: pathlib.Path, key: str) -> pathlib.Path:
        name = hashlib.sha1(key.encode("utf-8")).hexdigest()
        return pathlib.Path(state_dir) / MULTIPART_DIR / f"{name}.json"

    def abandon_upload(self, entry: ObjectEntry, state_dir: pathlib.Path) -> None:
        """Abort the multipart upload an earlier run of this task began for ``entry``, if any:
        the file is not copied by it (the source vanished, shrank below the threshold, or is
        copied another way now)."""
        if not (pathlib.Path(state_dir) / MULTIPART_DIR).is_dir():  # the common case: one stat
            return
        path = self._checkpoint_path(state_dir, entry.key)
        if path.is_file():
            _MultipartCopy(self, entry, path, 0).abandon()

    def _part_size(self, size: int) -> int:
        # A store may refuse small parts (S3: 5 MiB but the last).
        part = max(1, self.options.part_size, self.destination.features.min_part_size)
        if -(-size // part) > MAX_PARTS:
            # Larger parts rather than a failure: round up to whole MiB so resumed runs agree.
            part = -(-size // MAX_PARTS)
            part = -(-part // CHUNK) * CHUNK
        return part

    def _copy_multipart(self, entry: ObjectEntry, state_dir: pathlib.Path,
                        sending: Optional[Callable] = None) -> FileResult:
        return _MultipartCopy(self, entry, self._checkpoint_path(state_dir, entry.key),
                              self._part_size(entry.size), sending).run()

    # ---------------------------------------------------------------- audit

    def audit(self, entry: ObjectEntry, mode: str = "general") -> FileResult:
        """Verify the destination against the source without writing anything."""
        key = entry.key
        try:
            if not self.source.features.sizes_known and not entry.size:
                sized = self._with_size(entry)
                if isinstance(sized, FileResult):
                    return sized
                entry = sized
            dest = self._call(self.destination.head, key)
            if dest is None:
                return FileResult(key, Outcome.CHECK_FAILED,
                                  detail=f"{TARGET_NOT_EXIST}: get target meta failed: "
                                         f"the object does not exist at the destination")
            if dest.size != entry.size:
                return FileResult(key, Outcome.CHECK_FAILED,
                                  detail=f"{SIZE_NOT_MATCH}: source {entry.size} bytes, "
                                         f"destination {dest.size} bytes")
            if mode in ("general", "detailed") and entry.mtime and dest.mtime \
                    and int(entry.mtime) > dest.mtime:
                return FileResult(key, Outcome.CHECK_FAILED,
                                  detail=f"LAST_MODIFIED_NOT_MATCH: source modified at "
                                         f"{entry.mtime}, after the object was written at "
                                         f"{dest.mtime}")
            if mode == "detailed":
                problem = self._audit_content(entry, dest)
                if problem:
                    return FileResult(key, Outcome.CHECK_FAILED, detail=problem)
            return FileResult(key, Outcome.SUCCEED, size=entry.size, crc64=dest.crc64)
        except OperatorError:
            raise
        except FileNotFoundError:
            return FileResult(key, Outcome.FAILED,
                              detail=f"{SOURCE_NOT_EXIST}: source file does not exist")
        except _Changed as exc:
            return FileResult(key, Outcome.CHECK_FAILED, detail=str(exc))
        except (RequestFailed, OSError) as exc:
            return _failed(key, exc)

    def _audit_content(self, entry: ObjectEntry, dest: ObjectEntry) -> str:
        want_md5 = bool(dest.md5)
        crc = 0
        md5 = hashlib.md5() if want_md5 else None
        offset = 0
        step = max(CHUNK, min(self.options.part_size, 64 * CHUNK))
        while offset < entry.size or offset == 0:
            length = min(step, entry.size - offset)
            data, part_crc, _, _ = self._call(self._read, entry, offset, length, False)
            crc = crc64.combine(crc, part_crc, len(data))
            if md5 is not None:
                md5.update(data)
            offset += length
            if length == 0:
                break
        if dest.crc64 is not None and dest.crc64 != crc:
            return f"{CRC_NOT_MATCH}: source {crc}, destination {dest.crc64}"
        if md5 is not None and md5.hexdigest() != dest.md5.lower():
            return f"{MD5_NOT_MATCH}: source {md5.hexdigest()}, destination {dest.md5}"
        return ""


class _MultipartCopy:
    """One multipart upload: its checkpoint, its parts in parallel, its final check."""

    def __init__(self, transferer: Transferer, entry: ObjectEntry, checkpoint: pathlib.Path,
                 part_size: int, sending: Optional[Callable] = None):
        self.t, self.entry, self.path, self.part_size = transferer, entry, checkpoint, part_size
        self.sending = sending
        self.dest = transferer.destination
        self.lock = threading.Lock()
        self.parts = {}  # number -> [etag, crc64, size]
        self.upload_id = None
        self.md5 = None
        self.failed = threading.Event()

    # checkpoint --------------------------------------------------------------

    def _load(self) -> Optional[dict]:
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            log.warning("unreadable multipart checkpoint %s: starting the upload over", self.path)
            return None
        return doc if isinstance(doc, dict) else None

    def _save(self) -> None:
        doc = {"key": self.entry.key, "size": self.entry.size, "mtime": self.entry.mtime,
               "part_size": self.part_size, "upload_id": self.upload_id, "md5": self.md5,
               "parts": {str(n): v for n, v in sorted(self.parts.items())}}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{self.path.name}.{threading.get_ident()}.tmp")
        with open(tmp, "w", encoding="utf-8") as out:
            json.dump(doc, out, separators=(",", ":"))
        os.replace(tmp, self.path)

    def _forget(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def _abort_quietly(self, upload_id: str) -> None:
        try:
            self.t._call(self.dest.abort_multipart, self.entry.key, upload_id)
        except RequestFailed as exc:
            log.warning("could not abort multipart upload %s of %s: %s (OSS lifecycle rules "
                        "can clean up stale uploads)", upload_id, self.entry.key, exc.describe())

    def abandon(self) -> None:
        """Abort the upload the checkpoint records and drop the checkpoint."""
        doc = self._load()
        if doc is not None and doc.get("upload_id"):
            self._abort_quietly(str(doc["upload_id"]))
        self._forget()

    def _resume(self) -> None:
        """Adopt the parts a previous run uploaded, when they are still what we would send."""
        doc = self._load()
        if doc is None:
            return
        same = (doc.get("key") == self.entry.key and doc.get("size") == self.entry.size
                and isinstance(doc.get("mtime"), (int, float))
                and abs(doc["mtime"] - self.entry.mtime) <= MTIME_SLACK
                and doc.get("part_size") == self.part_size and doc.get("upload_id"))
        if not same:  # another version of the file: its parts are not ours to send
            self.abandon()
            return
        on_server = self.t._call(self.dest.list_parts, self.entry.key, doc["upload_id"])
        if on_server is None:  # NoSuchUpload: aborted or expired
            self._forget()
            return
        self.upload_id = doc["upload_id"]
        self.md5 = doc.get("md5")
        for number_text, (etag, crc, size) in doc.get("parts", {}).items():
            number = int(number_text)
            server = on_server.get(number)
            if server is not None and server[1] == etag and server[0] == size:
                self.parts[number] = [etag, int(crc), size]
        if self.sending is not None and self.parts:
            self.sending(sum(size for _, _, size in self.parts.values()))

    # parts -------------------------------------------------------------------

    def _layout(self) -> list:
        size, part = self.entry.size, self.part_size
        count = max(1, -(-size // part))
        return [(n, (n - 1) * part, min(part, size - (n - 1) * part)) for n in range(1, count + 1)]

    def _upload_part(self, number: int, offset: int, length: int) -> None:
        t = self.t
        attempt = 1
        while not self.failed.is_set():
            t.backpressure.wait()
            data = b""
            try:
                data, crc, _, _ = t._read(self.entry, offset, length, False, self.sending)
                result = self.dest.upload_part(self.entry.key, self.upload_id, number, data)
                if result.crc64 is not None and result.crc64 != crc:
                    raise _Mismatch(f"{CRC_NOT_MATCH}: part {number} read {crc}, "
                                    f"stored {result.crc64}")
            except RequestFailed as failure:
                _take_back(self.sending, len(data))  # the part is sent again or the file fails
                if t._gives_up(failure, attempt):
                    raise
                t._backoff(attempt, failure)
            except _Mismatch as exc:
                _take_back(self.sending, len(data))
                if attempt >= t.options.max_attempts:
                    raise
                log.warning("%s: %s; retrying", self.entry.key, exc)
            else:
                t.backpressure.success()
                with self.lock:
                    self.parts[number] = [result.etag, crc, length]
                    self._save()
                if t.on_bytes:
                    t.on_bytes(length)
                return
            attempt += 1

    def _upload_missing(self, todo: list) -> None:
        workers = max(1, min(self.t.options.parts_in_parallel, len(todo)))
        if workers == 1:
            for spec in todo:
                self._upload_part(*spec)
            return
        errors = []

        def run(spec):
            try:
                self._upload_part(*spec)
            except BaseException as exc:  # carried to the object, never to the process
                self.failed.set()
                errors.append(exc)

        with ThreadPoolExecutor(max_workers=workers,
                                thread_name_prefix="part") as pool:
            list(pool.map(run, todo))
        if errors:
            # Operator errors first: they stop the job; then a changed source; then the rest.
            errors.sort(key=lambda e: 0 if isinstance(e, OperatorError) else
                        1 if isinstance(e, (_Changed, FileNotFoundError)) else 2)
            raise errors[0]

    def _whole_md5(self) -> str:
        md5 = hashlib.md5()
        for _, offset, length in self._layout():
            data, _, _, _ = self.t._call(self.t._read, self.entry, offset, length, False)
            md5.update(data)
        return md5.hexdigest()

    # the whole object ----------------------------------------------------------

    def run(self) -> FileResult:
        entry, t = self.entry, self.t
        current = t.stat_source(entry)
        if current is None or current.size != entry.size or _mtime_moved(entry, current.mtime):
            # Not the listed file: an upload an earlier run began for it cannot be completed.
            self.abandon()
            if current is None:
                raise FileNotFoundError(entry.key)
            raise _Changed(entry, current.size, current.mtime)
        self._resume()
        if self.upload_id is None:
            if t.options.record_md5:
                # OSS takes metadata only when the upload starts, so the MD5 needs its own pass.
                self.md5 = self._whole_md5()
            # Metadata a source object carries (Content-Type...) comes with its stat.
            headers = t._object_headers(entry, current.headers, self.md5)
            self.upload_id = t._call(self.dest.init_multipart, entry.key, headers)
            self.parts = {}
            self._save()
        layout = self._layout()
        todo = [spec for spec in layout if spec[0] not in self.parts]
        try:
            self._upload_missing(todo)
        except (_Changed, FileNotFoundError):
            self._abort_quietly(self.upload_id)
            self._forget()
            raise
        except _Mismatch as exc:
            return FileResult(entry.key, Outcome.CHECK_FAILED, detail=str(exc))
        # The parts were read at different times: the file must still be the listed one.
        current = t.stat_source(entry)
        if current is None or current.size != entry.size or _mtime_moved(entry, current.mtime):
            self._abort_quietly(self.upload_id)
            self._forget()
            if current is None:
                raise FileNotFoundError(entry.key)
            raise _Changed(entry, current.size, current.mtime)
        expected = 0
        for number, _, length in layout:
            expected = crc64.combine(expected, self.parts[number][1], length)
        stored = self._complete(layout, expected)
        self._forget()
        if stored is not None and stored != expected:
            return FileResult(entry.key, Outcome.CHECK_FAILED,
                              detail=f"{CRC_NOT_MATCH}: read {expected}, stored {stored}")
        return FileResult(entry.key, Outcome.SUCCEED, size=entry.size, crc64=expected)

    def _complete(self, layout: list, expected: int) -> Optional[int]:
        """CRC64 of the completed object. A lost response to a completed upload is a success."""
        parts = [(number, self.parts[number][0]) for number, _, _ in layout]
        t = self.t
        attempt = 1
        while True:
            t.backpressure.wait()
            try:
                result = self.dest.complete_multipart(self.entry.key, self.upload_id, parts)
                t.backpressure.success()
                if result.crc64 is not None:
                    return result.crc64
                return self._head_crc()
            except RequestFailed as failure:
                if failure.retryable or failure.code == "NoSuchUpload":
                    head = t._call(self.dest.head, self.entry.key)
                    if head is not None and head.size == self.entry.size \
                            and head.crc64 == expected:
                        return head.crc64
                if t._gives_up(failure, attempt):
                    raise
                t._backoff(attempt, failure)
            attempt += 1

    def _head_crc(self) -> Optional[int]:
        head = self.t._call(self.dest.head, self.entry.key)
        if head is None or head.size != self.entry.size:
            raise _Mismatch(f"{SIZE_NOT_MATCH}: destination has "
                            f"{'no object' if head is None else f'{head.size} bytes'} after "
                            f"completing the upload")
        return head.crc64


# ---------------------------------------------------------------- uploads a removed job leaves

def checkpoint_upload(text: str) -> Optional[tuple]:
    """(key, upload id) a multipart checkpoint records, or None when it records none."""
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("key"), str) or not doc.get("upload_id"):
        return None
    return doc["key"], str(doc["upload_id"])


def abort_job_uploads(job, remote_checkpoints: tuple = ()) -> list:
    """Abort every multipart upload recorded in a job's checkpoints (its task folders here, and
    the texts of checkpoints fetched from worker hosts), before ``clean`` removes the state that
    names them. Returns one warning line per upload that could not be aborted, naming its key
    and upload id, so the operator can abort it by hand; never raises for one upload."""
    from . import config as config_mod
    from .storage import open_job_destination

    warnings, uploads = [], set()
    for path in job.multipart_checkpoints():
        try:
            upload = checkpoint_upload(path.read_text("utf-8", "replace"))
        except OSError:
            continue  # vanished meanwhile: its task finished or moved, the copy elsewhere counts
        if upload is None:
            warnings.append(f"{path}: unreadable multipart checkpoint; an upload it named is left to "
                            f"the destination (a lifecycle rule on uploads expires it)")
        uploads.add(upload)
    uploads.update(checkpoint_upload(text) for text in remote_checkpoints)
    uploads = sorted(u for u in uploads if u)
    if not uploads:
        return warnings
    try:
        destination = open_job_destination(config_mod.load_job(job.config_file))
    except OperatorError as exc:
        return warnings + [_abort_warning(key, upload_id, f"the destination cannot be opened: {exc}")
                           for key, upload_id in uploads]
    given_up = ""  # once the destination cannot answer at all, the rest are not tried
    try:
        for key, upload_id in uploads:
            if given_up:
                warnings.append(_abort_warning(key, upload_id, given_up))
                continue
            problem, hopeless = _abort_upload(destination, key, upload_id)
            if problem:
                warnings.append(_abort_warning(key, upload_id, problem))
            if hopeless:
                given_up = f"not tried after the destination failed with: {problem}"
    finally:
        destination.close()
    return warnings


def _abort_upload(destination, key: str, upload_id: str, attempts: int = 3) -> tuple:
    """('', False) once aborted (an upload already gone counts), else (why not, whether any
    other abort is hopeless too: no answer at all, or keys/bucket refused). A transient failure
    is tried again a few times, briefly: clean is an operator waiting at a prompt."""
    for attempt in range(1, attempts + 1):
        try:
            destination.abort_multipart(key, upload_id)
            return "", False
        except RequestFailed as exc:
            if not exc.retryable or attempt == attempts:
                return _failure_text(exc), exc.status == 0
            time.sleep(0.2 * attempt)
        except (OperatorError, OSError) as exc:
            return _failure_text(exc), True
    return "", False


def _abort_warning(key: str, upload_id: str, why: str) -> str:
    # json.dumps: the key in quotes on one line, whatever characters it has.
    return (f"could not abort multipart upload {upload_id} of {json.dumps(key, ensure_ascii=False)}: "
            f"{' '.join(why.split())}; abort it at the destination, or let a lifecycle rule expire it")
