"""The audit after an import (``jobType=audit``, and import.sh's check): the destination
verified against the source without writing anything.

general/detailed compare sizes and that the copy is not older than the source; detailed also
reads the source to compare its CRC64 (and MD5, when the object carries one) with the
destination's.

After an import, simple and general need only what a listing says of each object, so a
destination that lists (``Features.lists_objects``) is checked a task at a time by
``ListingAudit``: one LIST per 1,000 objects instead of a HEAD per object, which on small files
halves the requests of a job. The PUT's own answer (CRC64 on OSS, the MD5 ETag on S3) is the
proof of the bytes; the audit proves what is there afterwards.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Iterator, Optional

from . import crc64
from .errors import OperatorError, SourceChanged
from .models import (CRC_NOT_MATCH, MD5_NOT_MATCH, SIZE_NOT_MATCH, SOURCE_NOT_EXIST,
                     TARGET_NOT_EXIST, FileResult, ObjectEntry, Outcome)
from .retrying import failed_result
from .storage.errors import RequestFailed

CHUNK = 1024 * 1024
LAST_MODIFIED_NOT_MATCH = "LAST_MODIFIED_NOT_MATCH"
LIST_PAGE = 1000
# Listings that failed after their retries, one range after another, before a job's audit stops
# listing and HEADs every object (s3rver 3.7 answers 500 to a listing spanning ~1,000 nested keys).
LISTING_FAILURES_TO_STOP = 3

log = logging.getLogger("ossimport.audit")


def audit(t, entry: ObjectEntry, mode: str = "general") -> FileResult:
    """Verify one object through ``t`` (a ``transfer.Transferer``: its source, destination,
    retry engine and reader)."""
    key = entry.key
    try:
        if not t.source.features.sizes_known and not entry.size:
            sized = t.with_size(entry)
            if isinstance(sized, FileResult):
                return sized
            entry = sized
        dest = t.retry.call(t.destination.head, key)
        differs = _compare_listed(entry, dest, mode)
        if differs is not None:
            return differs
        if mode == "detailed":
            code, problem = _compare_content(t, entry, dest)
            if problem:
                return FileResult(key, Outcome.CHECK_FAILED, detail=problem, code=code)
        return FileResult(key, Outcome.SUCCEED, size=entry.size, crc64=dest.crc64, stored_crc64=dest.crc64,
                          md5=dest.md5, etag=dest.etag)
    except OperatorError:
        raise
    except FileNotFoundError:
        return FileResult(key, Outcome.FAILED,
                          detail=f"{SOURCE_NOT_EXIST}: source file does not exist", code=SOURCE_NOT_EXIST)
    except SourceChanged as exc:
        return FileResult(key, Outcome.CHECK_FAILED, detail=str(exc), code=exc.code)
    except (RequestFailed, OSError) as exc:
        return failed_result(key, exc)


def _compare_listed(entry: ObjectEntry, dest: Optional[ObjectEntry], mode: str) -> Optional[FileResult]:
    """The failed check when the destination's metadata (a HEAD's or a listing's) does not
    match the source's entry, None when it does."""
    key = entry.key
    if dest is None:
        return FileResult(key, Outcome.CHECK_FAILED,
                          detail=f"{TARGET_NOT_EXIST}: get target meta failed: "
                                 f"the object does not exist at the destination",
                          code=TARGET_NOT_EXIST)
    if dest.size != entry.size:
        return FileResult(key, Outcome.CHECK_FAILED,
                          detail=f"{SIZE_NOT_MATCH}: source {entry.size} bytes, "
                                 f"destination {dest.size} bytes", code=SIZE_NOT_MATCH)
    if mode in ("general", "detailed") and entry.mtime and dest.mtime \
            and int(entry.mtime) > dest.mtime:
        return FileResult(key, Outcome.CHECK_FAILED,
                          detail=f"{LAST_MODIFIED_NOT_MATCH}: source modified at "
                                 f"{entry.mtime}, after the object was written at "
                                 f"{dest.mtime}", code=LAST_MODIFIED_NOT_MATCH)
    return None


def _compare_content(t, entry: ObjectEntry, dest: ObjectEntry) -> tuple:
    """(code, detail) of the first difference between the source's bytes and the destination's
    checksums, ("", "") when they agree."""
    want_md5 = bool(dest.md5)
    crc = 0
    md5 = hashlib.md5() if want_md5 else None
    offset = 0
    step = max(CHUNK, min(t.options.part_size, 64 * CHUNK))
    while offset < entry.size or offset == 0:
        length = min(step, entry.size - offset)
        data, part_crc, _, _ = t.retry.call(t.read, entry, offset, length, False)
        crc = crc64.combine(crc, part_crc, len(data))
        if md5 is not None:
            md5.update(data)
        offset += length
        if length == 0:
            break
    if dest.crc64 is not None and dest.crc64 != crc:
        return CRC_NOT_MATCH, f"{CRC_NOT_MATCH}: source {crc}, destination {dest.crc64}"
    if md5 is not None and md5.hexdigest() != dest.md5.lower():
        return MD5_NOT_MATCH, f"{MD5_NOT_MATCH}: source {md5.hexdigest()}, destination {dest.md5}"
    return "", ""


@dataclass
class ListingAudit:
    """The audit after an import, of many objects at once, from the destination's listing.

    ``check`` lists the key range the entries span (their common prefix, from just before the
    first key to the last) and compares each listed object with its entry. An entry the listing
    lacks, or whose size the source did not know, gets the per-object ``audit`` (a HEAD: it
    confirms the absence), and so does every entry of a range whose listing failed after its
    retries or that holds far more objects of others than of ours. Shared by the job's threads."""

    t: object  # transfer.Transferer
    mode: str = "general"
    page: int = LIST_PAGE
    failed_in_a_row: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def applies(cls, destination, mode: str) -> bool:
        return destination.features.lists_objects and mode in ("simple", "general")

    def check(self, entries: list) -> Iterator[FileResult]:
        """A result for every entry (any order): succeeded, or the failed check."""
        sized = self.t.source.features.sizes_known
        wanted = {e.key: e for e in entries if sized or e.size}
        one_by_one = [e for e in entries if e.key not in wanted]
        if wanted and self.failed_in_a_row < LISTING_FAILURES_TO_STOP:
            yield from self._listed(wanted)
        for entry in (*wanted.values(), *one_by_one):
            yield audit(self.t, entry, self.mode)

    def _listed(self, wanted: dict) -> Iterator[FileResult]:
        """Results of the entries the listing shows, each taken out of ``wanted``."""
        first, last = min(wanted), max(wanted)
        prefix = os.path.commonprefix([first, last])
        after, others, budget = first[:-1], 0, self.page + len(wanted)
        while wanted:
            try:
                page, more = self.t.retry.call(self.t.destination.list_page, prefix, after, self.page)
            except RequestFailed as exc:
                self._listing_failed(prefix, after, len(wanted), exc)
                return
            self._listing_worked()
            for dest in page:
                if dest.key > last:
                    return
                entry = wanted.pop(dest.key, None)
                if entry is None:
                    others += 1
                    continue
                yield _compare_listed(entry, dest, self.mode) or \
                    FileResult(entry.key, Outcome.SUCCEED, size=entry.size)
            # An empty page that says there is more: a server ignoring start-after, which
            # would list the same page again.
            if not more or not page or others > budget:
                return
            after = page[-1].key

    def _listing_worked(self) -> None:
        with self._lock:
            self.failed_in_a_row = 0

    def _listing_failed(self, prefix: str, after: str, count: int, exc: RequestFailed) -> None:
        with self._lock:
            self.failed_in_a_row += 1
            stopping = self.failed_in_a_row == LISTING_FAILURES_TO_STOP
        log.warning("audit: listing the destination under '%s' after '%s' failed (%s): checking "
                    "its %d object(s) one by one with a HEAD%s", prefix, after, exc.describe(), count,
                    "; the job's audit HEADs every object from now on (listings failed "
                    f"{LISTING_FAILURES_TO_STOP} times in a row)" if stopping else "")
