"""What was proven of each object: one JSON line per file a run of a task finished, in the
task's ``objects.jsonl``, beside its ``audit.log``.

``audit.log`` says how each file ended, in OssImport's words, for operators who grep it. This
file keeps what the job report (``report``) needs and audit.log has no room for: the size and
mtime copied, the CRC64 as read from the source and as the destination reported it, the MD5 and
ETag, when it ended. It travels with its task folder (dispatch, pull home, retry) and is only
ever appended to, so a retried task keeps its history: how many runs tried a file is the number
of its result lines.

Two kinds of line: a file's result, and a later audit of it (the listing audit after an import
checks a task's copies when the task ends), which names the key and the audit's verdict only.
A line cut short by a crash is skipped when read; its file is copied again anyway, since its
audit.log line was not flushed either.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Iterator, Optional

from .models import TARGET_NOT_EXIST, FileResult, ObjectEntry, Outcome

# The verdicts of an audit, as the report gives them.
AUDIT_MATCH = "match"
AUDIT_DIFFER = "differ"
AUDIT_MISSING = "missing"


@dataclass
class ObjectRecord:
    """One result line of objects.jsonl (``audit`` set alone by an audit line)."""

    key: str
    outcome: str = ""  # audit.log's word: Succeed, Skipped, Failed, CheckFailed
    size: int = 0
    mtime: float = 0.0
    read_crc64: Optional[int] = None  # of the bytes read from the source (a copy), or as it lists it
    stored_crc64: Optional[int] = None  # as the destination reported it (PUT answer, HEAD)
    md5: Optional[str] = None
    etag: Optional[str] = None
    code: str = ""
    detail: str = ""
    audit: str = ""  # AUDIT_*; "" when the object was not audited
    at: float = 0.0  # when it ended, seconds since the epoch
    seconds: float = 0.0  # how long it took
    is_audit_line: bool = False


def audit_verdict(result: FileResult) -> str:
    """The verdict of an audit that ended as ``result``; "" when it could not compare (the
    source vanished, the destination did not answer)."""
    if result.ok:
        return AUDIT_MATCH
    if result.outcome != Outcome.CHECK_FAILED:
        return ""
    return AUDIT_MISSING if result.code == TARGET_NOT_EXIST else AUDIT_DIFFER


def result_line(entry: ObjectEntry, result: FileResult, audit: str = "", copy: bool = True,
                seconds: float = 0.0) -> str:
    """The line of a file that ended as ``result``. ``audit``: the verdict of an audit of it,
    "" when none was done or it comes later (records.audit_line). ``copy``: False for an audit
    job's file, whose CRC64 is then the source's as listed, not as read. ``seconds``: how long
    the file took (its copy, and its audit when done with it)."""
    copied = result.outcome == Outcome.SUCCEED and copy
    doc = {"k": result.key, "o": result.outcome, "s": result.size or entry.size, "m": entry.mtime,
           "t": round(time.time(), 3), "z": round(seconds, 4)}
    read_crc = result.crc64 if copied else entry.crc64
    if read_crc is not None:
        doc["c"] = str(read_crc)
    if result.stored_crc64 is not None:
        doc["d"] = str(result.stored_crc64)
    md5 = result.md5 or entry.md5
    if md5:
        doc["5"] = md5
    if result.etag:
        doc["e"] = result.etag
    if result.code:
        doc["r"] = result.code
    if result.detail:
        doc["x"] = result.detail
    if audit:
        doc["a"] = audit
    return json.dumps(doc, ensure_ascii=True, separators=(",", ":")) + "\n"


def audit_line(key: str, verdict: str) -> str:
    """The line of a later audit of ``key`` (the listing audit at its task's end)."""
    return json.dumps({"k": key, "a": verdict, "t": round(time.time(), 3)}, ensure_ascii=True,
                      separators=(",", ":")) + "\n"


def read_records(path) -> Iterator[ObjectRecord]:
    """The whole lines of an objects.jsonl in file order; none when it cannot be opened."""
    try:
        f = open(path, "r", encoding="ascii", errors="replace", newline="\n")
    except OSError:
        return
    with f:
        for line in f:
            if not line.endswith("\n"):
                continue  # cut short by a crash
            try:
                doc = json.loads(line)
                yield _record(doc)
            except (ValueError, TypeError, KeyError, AttributeError):
                continue


def _record(doc: dict) -> ObjectRecord:
    key = doc["k"]
    if not isinstance(key, str):
        raise TypeError("key")
    if "o" not in doc:
        return ObjectRecord(key, audit=str(doc.get("a", "")), at=float(doc.get("t", 0)), is_audit_line=True)
    return ObjectRecord(key, outcome=str(doc["o"]), size=int(doc.get("s", 0)), mtime=float(doc.get("m", 0)),
                        read_crc64=_int(doc.get("c")), stored_crc64=_int(doc.get("d")), md5=doc.get("5"),
                        etag=doc.get("e"), code=str(doc.get("r", "")), detail=str(doc.get("x", "")),
                        audit=str(doc.get("a", "")), at=float(doc.get("t", 0)), seconds=float(doc.get("z", 0)))


def _int(text) -> Optional[int]:
    return None if text is None else int(text)
