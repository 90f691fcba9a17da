"""The audit after an import (``jobType=audit``, and import.sh's check): the destination
verified against the source without writing anything.

general/detailed compare sizes and that the copy is not older than the source; detailed also
reads the source to compare its CRC64 (and MD5, when the object carries one) with the
destination's.
"""

from __future__ import annotations

import hashlib

from . import crc64
from .errors import OperatorError, SourceChanged
from .models import (CRC_NOT_MATCH, MD5_NOT_MATCH, SIZE_NOT_MATCH, SOURCE_NOT_EXIST,
                     TARGET_NOT_EXIST, FileResult, ObjectEntry, Outcome)
from .retrying import failed_result
from .storage.errors import RequestFailed

CHUNK = 1024 * 1024
LAST_MODIFIED_NOT_MATCH = "LAST_MODIFIED_NOT_MATCH"


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
        if mode == "detailed":
            code, problem = _compare_content(t, entry, dest)
            if problem:
                return FileResult(key, Outcome.CHECK_FAILED, detail=problem, code=code)
        return FileResult(key, Outcome.SUCCEED, size=entry.size, crc64=dest.crc64)
    except OperatorError:
        raise
    except FileNotFoundError:
        return FileResult(key, Outcome.FAILED,
                          detail=f"{SOURCE_NOT_EXIST}: source file does not exist", code=SOURCE_NOT_EXIST)
    except SourceChanged as exc:
        return FileResult(key, Outcome.CHECK_FAILED, detail=str(exc), code=exc.code)
    except (RequestFailed, OSError) as exc:
        return failed_result(key, exc)


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
