"""Multipart uploads: one object in parts sent in parallel, with a checkpoint per object so a
restarted worker, or a retry of the failed task on any host, sends only the parts that are
missing; and the abort of the uploads a removed job leaves (``abort_job_uploads``).

An upload that will not be completed is aborted: when its checkpoint is dropped (the source
changed or vanished, the file is now copied another way) and when ``clean`` removes the job, so
no orphan parts stay billable at the destination.

``MultipartUpload`` gets what it needs from the copy as an ``UploadTools`` (the destination, the
retry engine, the source reader), never from the ``Transferer`` itself.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Optional

from . import crc64
from .errors import OperatorError, SourceChanged, VerificationMismatch
from .models import (CRC_NOT_MATCH, MTIME_SLACK, SIZE_NOT_MATCH, FileResult, ObjectEntry, Outcome,
                     mtime_moved)
from .retrying import Retrier, RetryPolicy, failure_text
from .storage.errors import RequestFailed

log = logging.getLogger(__name__)

# A transient failure of clean's abort is tried again a few times, briefly (0.2 s, then 0.4 s):
# clean is an operator waiting at a prompt.
CLEAN_ABORT_POLICY = RetryPolicy(attempts=3, base=0.2, cap=0.4, jitter=False)


def take_back(sending: Optional[Callable], n: int) -> None:
    """Uncount ``n`` bytes reported to ``sending`` for an attempt that is sent again or fails."""
    if sending is not None and n:
        sending(-n)


@dataclass
class UploadTools:
    """What a multipart upload uses of the copy that runs it."""

    destination: object
    retry: Retrier
    # (entry, offset, length, want_md5, sending) -> (bytes, crc64, md5 hex or None, stream headers)
    read: Callable
    stat_source: Callable  # entry -> the source object as it is now, or None
    object_headers: Callable  # (entry, stream headers, md5 hex) -> headers of the new object
    parts_in_parallel: int
    record_md5: bool
    on_bytes: Optional[Callable] = None


class MultipartUpload:
    """One multipart upload: its checkpoint, its parts in parallel, its final check."""

    def __init__(self, tools: UploadTools, entry: ObjectEntry, checkpoint: pathlib.Path,
                 part_size: int, sending: Optional[Callable] = None):
        self.t, self.entry, self.path, self.part_size = tools, entry, checkpoint, part_size
        self.sending = sending
        self.dest = tools.destination
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
            self.t.retry.call(self.dest.abort_multipart, self.entry.key, upload_id)
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
        on_server = self.t.retry.call(self.dest.list_parts, self.entry.key, doc["upload_id"])
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
        def send():
            data = b""
            try:
                data, crc, _, _ = self.t.read(self.entry, offset, length, False, self.sending)
                result = self.dest.upload_part(self.entry.key, self.upload_id, number, data)
                if result.crc64 is not None and result.crc64 != crc:
                    raise VerificationMismatch(CRC_NOT_MATCH, f"part {number} read {crc}, "
                                               f"stored {result.crc64}")
            except (RequestFailed, VerificationMismatch):
                take_back(self.sending, len(data))  # the part is sent again or the file fails
                raise
            return result, crc

        sent = self.t.retry.run(send, resend_on=(VerificationMismatch,), what=self.entry.key,
                                keep_going=lambda: not self.failed.is_set())
        if sent is None:  # another part failed: the object fails with it
            return
        result, crc = sent
        with self.lock:
            self.parts[number] = [result.etag, crc, length]
            self._save()
        if self.t.on_bytes:
            self.t.on_bytes(length)

    def _upload_missing(self, todo: list) -> None:
        workers = max(1, min(self.t.parts_in_parallel, len(todo)))
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
                        1 if isinstance(e, (SourceChanged, FileNotFoundError)) else 2)
            raise errors[0]

    def _whole_md5(self) -> str:
        md5 = hashlib.md5()
        for _, offset, length in self._layout():
            data, _, _, _ = self.t.retry.call(self.t.read, self.entry, offset, length, False)
            md5.update(data)
        return md5.hexdigest()

    # the whole object ----------------------------------------------------------

    def run(self) -> FileResult:
        entry, t = self.entry, self.t
        current = t.stat_source(entry)
        if current is None or current.size != entry.size or mtime_moved(entry, current.mtime):
            # Not the listed file: an upload an earlier run began for it cannot be completed.
            self.abandon()
            if current is None:
                raise FileNotFoundError(entry.key)
            raise SourceChanged(entry, current.size, current.mtime)
        self._resume()
        if self.upload_id is None:
            if t.record_md5:
                # OSS takes metadata only when the upload starts, so the MD5 needs its own pass.
                self.md5 = self._whole_md5()
            # Metadata a source object carries (Content-Type...) comes with its stat.
            headers = t.object_headers(entry, current.headers, self.md5)
            self.upload_id = t.retry.call(self.dest.init_multipart, entry.key, headers)
            self.parts = {}
            self._save()
        layout = self._layout()
        todo = [spec for spec in layout if spec[0] not in self.parts]
        try:
            self._upload_missing(todo)
        except (SourceChanged, FileNotFoundError):
            self._abort_quietly(self.upload_id)
            self._forget()
            raise
        except VerificationMismatch as exc:
            return FileResult(entry.key, Outcome.CHECK_FAILED, detail=str(exc), code=exc.code)
        # The parts were read at different times: the file must still be the listed one.
        current = t.stat_source(entry)
        if current is None or current.size != entry.size or mtime_moved(entry, current.mtime):
            self._abort_quietly(self.upload_id)
            self._forget()
            if current is None:
                raise FileNotFoundError(entry.key)
            raise SourceChanged(entry, current.size, current.mtime)
        expected = 0
        for number, _, length in layout:
            expected = crc64.combine(expected, self.parts[number][1], length)
        stored = self._complete(layout, expected)
        self._forget()
        if stored is not None and stored != expected:
            return FileResult(entry.key, Outcome.CHECK_FAILED,
                              detail=f"{CRC_NOT_MATCH}: read {expected}, stored {stored}", code=CRC_NOT_MATCH)
        return FileResult(entry.key, Outcome.SUCCEED, size=entry.size, crc64=expected, stored_crc64=stored,
                          md5=self.md5)

    def _complete(self, layout: list, expected: int) -> Optional[int]:
        """CRC64 of the completed object. A lost response to a completed upload is a success."""
        parts = [(number, self.parts[number][0]) for number, _, _ in layout]

        def complete() -> Optional[int]:
            result = self.dest.complete_multipart(self.entry.key, self.upload_id, parts)
            return result.crc64 if result.crc64 is not None else self._head_crc()

        def completed_anyway(failure: RequestFailed) -> Optional[int]:
            if failure.retryable or failure.code == "NoSuchUpload":
                head = self.t.retry.call(self.dest.head, self.entry.key)
                if head is not None and head.size == self.entry.size and head.crc64 == expected:
                    return head.crc64
            return None

        return self.t.retry.run(complete, rescue=completed_anyway)

    def _head_crc(self) -> Optional[int]:
        head = self.t.retry.call(self.dest.head, self.entry.key)
        if head is None or head.size != self.entry.size:
            raise VerificationMismatch(SIZE_NOT_MATCH, f"destination has "
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
    other abort is hopeless too: no answer at all, or keys/bucket refused)."""
    retry = Retrier(dataclasses.replace(CLEAN_ABORT_POLICY, attempts=attempts))
    try:
        retry.call(destination.abort_multipart, key, upload_id)
    except RequestFailed as exc:
        return failure_text(exc), exc.status == 0
    except (OperatorError, OSError) as exc:
        return failure_text(exc), True
    return "", False


def _abort_warning(key: str, upload_id: str, why: str) -> str:
    # json.dumps: the key in quotes on one line, whatever characters it has.
    return (f"could not abort multipart upload {upload_id} of {json.dumps(key, ensure_ascii=False)}: "
            f"{' '.join(why.split())}; abort it at the destination, or let a lifecycle rule expire it")
