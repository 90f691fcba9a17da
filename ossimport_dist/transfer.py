"""Copies one object from a source to the destination and proves it arrived intact.

One place decides single PUT or multipart. The source is read once per attempt, in chunks,
computing CRC64 (and MD5 when workerRecordMd5 asks) in the same pass, with the worker's
``Throttle`` charged per chunk. Every write is checked against the CRC64 OSS reports; a file
that changes while it is read is reported, never uploaded as a torn copy.

Every request goes through one retry engine (``retrying.Retrier``). Multipart uploads, with
their checkpoint per object under ``state_dir/multipart/``, are ``multipart.MultipartUpload``;
the audit after an import is ``audit.audit``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import mimetypes
import os
import pathlib
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

from . import audit as audit_mod
from . import crc64
from .errors import CheckFailed, OperatorError, SourceChanged, VerificationMismatch
from .layout import MULTIPART_DIR
from .models import (CRC_NOT_MATCH, INVALID_KEY, SIZE_NOT_MATCH, SOURCE_NOT_EXIST, FileResult,
                     ObjectEntry, Outcome, mtime_moved)
from .multipart import MultipartUpload, UploadTools, take_back
# Backpressure is Transferer's to take: its callers import it from here.
from .retrying import Backpressure, Retrier, RetryPolicy, failed_result
from .storage.base import MTIME_HEADER
from .storage.errors import RequestFailed
from .throttle import Throttle

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
MAX_PARTS = 10000  # OSS refuses part numbers above this


def same_object(entry: ObjectEntry, existing: ObjectEntry) -> bool:
    """Whether the destination's ``existing`` object is the source's ``entry`` for
    isSkipExistFile: the same size, and the same CRC64 when both sides know it."""
    if existing.size != entry.size:
        return False
    if entry.crc64 is not None and existing.crc64 is not None:
        return entry.crc64 == existing.crc64
    # OssImport's rule: same size and the copy is not older than the source; Last-Modified
    # has whole seconds.
    return existing.mtime >= int(entry.mtime)


def part_size_for(size: int, part_size: int, min_part_size: int = 0) -> int:
    """The part size a multipart upload of ``size`` bytes uses: partSize, raised to what the
    store accepts (S3: 5 MiB but the last) and so that no more than MAX_PARTS are needed."""
    part = max(1, part_size, min_part_size)
    if -(-size // part) > MAX_PARTS:
        # Larger parts rather than a failure: round up to whole MiB so resumed runs agree.
        part = -(-size // MAX_PARTS)
        part = -(-part // CHUNK) * CHUNK
    return part


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
        self.retry = Retrier(RetryPolicy(options.max_attempts, options.backoff_base, options.backoff_cap),
                             # a backoff ends at once when the job stops
                             sleep=sleep or self.halted.wait, backpressure=self.backpressure,
                             halted=self.halted.is_set)
        # Built-in table only: the same file gets the same Content-Type on every worker host,
        # whatever /etc/mime.types says there.
        self._mime = mimetypes.MimeTypes(filenames=())
        self._server_copy = True  # until the store refuses a server-side copy once

    def stat_source(self, entry: ObjectEntry) -> Optional[ObjectEntry]:
        """The source object as it is now. Entries that carry their own address (an http list's
        URL) are looked up by the entry, since the key alone does not find them."""
        return self.source.stat(entry if entry.src else entry.key)

    def with_size(self, entry: ObjectEntry):
        """For sources whose listing has no sizes (http): the entry with the size and mtime the
        source reports now, or a FileResult saying why it cannot be copied."""
        now = self.retry.call(self.stat_source, entry)
        if now is None:
            return FileResult(entry.key, Outcome.FAILED, detail=f"{SOURCE_NOT_EXIST}: source file does not exist",
                              code=SOURCE_NOT_EXIST)
        if now.size is None or now.size < 0:
            return FileResult(entry.key, Outcome.FAILED,
                              detail="SIZE_UNKNOWN: the server gives no Content-Length for this URL",
                              code="SIZE_UNKNOWN")
        return dataclasses.replace(entry, size=now.size, mtime=now.mtime or 0.0,
                                   headers={**(now.headers or {}), **(entry.headers or {})})

    def _copy_server_side(self, entry: ObjectEntry) -> Optional[FileResult]:
        """Copy inside the store (same OSS endpoint): the bytes never pass through this worker.
        None when the store refuses (the destination's keys cannot read the source bucket):
        the bytes then go through us, for this file and the rest."""
        now = self.retry.call(self.stat_source, entry)
        if now is None:
            return FileResult(entry.key, Outcome.FAILED, detail=f"{SOURCE_NOT_EXIST}: source file does not exist",
                              code=SOURCE_NOT_EXIST)
        if now.size != entry.size:
            return FileResult(entry.key, Outcome.CHECK_FAILED,
                              detail=f"{SIZE_NOT_MATCH}: listed {entry.size} bytes, now {now.size} bytes",
                              code=SIZE_NOT_MATCH)
        try:
            result = self.retry.call(self.destination.copy_from, self.source, entry, self.options.part_size,
                                now.headers or None)
        except OperatorError as exc:
            log.warning("server-side copy refused (%s); copying through this worker instead", exc)
            self._server_copy = False
            return None
        stored = result.crc64 if result.crc64 is not None else self._stored_crc(entry.key, entry.size)
        if now.crc64 is not None and stored != now.crc64:
            return FileResult(entry.key, Outcome.CHECK_FAILED,
                              detail=f"{CRC_NOT_MATCH}: source {now.crc64}, copy {stored}", code=CRC_NOT_MATCH)
        if self.on_bytes:
            self.on_bytes(entry.size)
        return FileResult(entry.key, Outcome.SUCCEED, size=entry.size, crc64=stored, stored_crc64=stored,
                          detail="server-side copy")

    # ---------------------------------------------------------------- reading

    def _content_type(self, key: str) -> str:
        guessed, _ = self._mime.guess_type(key, strict=False)
        return guessed or "application/octet-stream"

    def object_headers(self, entry: ObjectEntry, stream_headers: Optional[dict],
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
        if size != entry.size or mtime_moved(entry, mtime):
            raise SourceChanged(entry, size, mtime)

    def read(self, entry: ObjectEntry, offset: int, length: int, want_md5: bool,
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
            take_back(sending, counted[0])
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
            if length > CHUNK:
                data, crc, got = self._read_into_buffer(stream, want, crc, md5, sent)
            else:
                chunks = []
                got = 0
                while got < want:  # a network body may come in shorter reads
                    piece = stream.read(want - got)
                    if not piece:
                        break
                    self.throttle.consume(len(piece))
                    sent(len(piece))
                    crc = crc64.crc64(piece, crc)
                    if md5 is not None:
                        md5.update(piece)
                    chunks.append(piece)
                    got += len(piece)
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            self._check_snapshot(entry, stream)
            headers = stream.headers
        finally:
            stream.close()
        if got != length:
            raise SourceChanged(entry, offset + got, "unknown")
        return data, crc, md5.hexdigest() if md5 is not None else None, headers

    def _read_into_buffer(self, stream, want: int, crc: int, md5, sent: Callable) -> tuple:
        """(bytearray of the bytes read, crc64, count) of a large object or part, read in CHUNK
        pieces straight into one buffer: pieces read apart and joined made the kernel fault in
        (zero and map) twice the object's size, most of a large file's CPU (sys 2.8 s of 4.5 s
        per GiB; 1.1 s of 2.6 s this way)."""
        buf = bytearray(want)
        got = 0
        with memoryview(buf) as view:
            while got < want:
                n = stream.readinto(view[got:min(got + CHUNK, want)])
                if not n:
                    break
                self.throttle.consume(n)
                sent(n)
                with view[got:got + n] as piece:
                    crc = crc64.crc64(piece, crc)
                    if md5 is not None:
                        md5.update(piece)
                got += n
        del buf[got:]  # the byte that shows a file that grew, or the bytes a shrunk one lacks
        return buf, crc, got

    # ---------------------------------------------------------------- public API

    def copy(self, entry: ObjectEntry, state_dir: pathlib.Path, sending: Optional[Callable] = None) -> FileResult:
        """Copy one object; failures are results, except a destination that cannot work at all.
        ``sending(n)``: bytes read for the upload so far (see the class)."""
        key = entry.key
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            return FileResult(key, Outcome.FAILED, detail=f"{INVALID_KEY}: file name is not valid "
                              "UTF-8 and cannot be an OSS key; rename it", code=INVALID_KEY)
        try:
            if not self.source.features.sizes_known:
                sized = self.with_size(entry)
                if isinstance(sized, FileResult):
                    return sized
                entry = sized
            if self.options.skip_existing:
                existing = self.retry.call(self.destination.head, key)
                if existing is not None and same_object(entry, existing):
                    self.abandon_upload(entry, state_dir)
                    return FileResult(key, Outcome.SKIPPED, detail="destination has the same "
                                      "object", crc64=existing.crc64, stored_crc64=existing.crc64,
                                      md5=existing.md5, etag=existing.etag)
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
            return FileResult(key, Outcome.FAILED, detail=f"{SOURCE_NOT_EXIST}: source file does not exist",
                              code=SOURCE_NOT_EXIST, cause=exc)
        except CheckFailed as exc:
            return FileResult(key, Outcome.CHECK_FAILED, detail=str(exc), code=exc.code)
        except (RequestFailed, OSError) as exc:
            return failed_result(key, exc)
        except Exception as exc:  # one odd object must not stop the task's other files
            log.exception("unexpected error copying %s", key)
            return failed_result(key, exc)

    def _copy_small(self, entry: ObjectEntry, sending: Optional[Callable] = None) -> FileResult:
        def send() -> FileResult:
            data = b""
            try:
                data, crc, md5_hex, stream_headers = self.read(
                    entry, 0, entry.size, self.options.record_md5, sending)
                headers = self.object_headers(entry, stream_headers, md5_hex)
                result = self.destination.put(entry.key, data, headers)
                stored = result.crc64
                if stored is None and not result.bytes_confirmed:  # a store that did not say: ask it
                    stored = self._stored_crc(entry.key, entry.size)
                if stored is None and not self.destination.features.has_crc64:
                    pass  # no CRC64 there (S3): the store checked Content-MD5 and confirmed
                    # our bytes by their ETag, or the HEAD above checked the size
                elif stored != crc:
                    raise VerificationMismatch(CRC_NOT_MATCH, f"read {crc}, stored {stored}")
            except (RequestFailed, VerificationMismatch):
                take_back(sending, len(data))  # sent again, or the file fails: never twice
                raise
            return FileResult(entry.key, Outcome.SUCCEED, size=entry.size, crc64=crc, stored_crc64=stored,
                              md5=md5_hex, etag=result.etag)

        done = self.retry.run(send, resend_on=(VerificationMismatch,), what=entry.key)
        if self.on_bytes:
            self.on_bytes(entry.size)
        return done

    def _stored_crc(self, key: str, size: int) -> Optional[int]:
        head = self.retry.call(self.destination.head, key)
        if head is None or head.size != size:
            raise VerificationMismatch(SIZE_NOT_MATCH, f"destination has "
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
        # The common case: one stat, by os.path (pathlib's objects cost more than the stat on a
        # job of small files).
        if not os.path.isdir(os.path.join(state_dir, MULTIPART_DIR)):
            return
        path = self._checkpoint_path(state_dir, entry.key)
        if path.is_file():
            MultipartUpload(self._upload_tools(), entry, path, 0).abandon()

    def _copy_multipart(self, entry: ObjectEntry, state_dir: pathlib.Path,
                        sending: Optional[Callable] = None) -> FileResult:
        return MultipartUpload(self._upload_tools(), entry, self._checkpoint_path(state_dir, entry.key),
                               part_size_for(entry.size, self.options.part_size,
                                             self.destination.features.min_part_size), sending).run()

    def _upload_tools(self) -> UploadTools:
        return UploadTools(self.destination, self.retry, self.read, self.stat_source,
                           self.object_headers, self.options.parts_in_parallel,
                           self.options.record_md5, self.on_bytes)

    # ---------------------------------------------------------------- audit

    def audit(self, entry: ObjectEntry, mode: str = "general") -> FileResult:
        """Verify the destination against the source without writing anything."""
        return audit_mod.audit(self, entry, mode)
