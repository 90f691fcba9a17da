"""Plain data classes shared by every role: what a job copies, how it is cut, how it ended."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Optional

# The source's mtime as listed vs. now: floats that went through JSON compare exactly, but a
# source reporting whole seconds (or a filesystem with coarse times) must not look changed.
MTIME_SLACK = 1e-3


@dataclass
class ObjectEntry:
    """One file or object, named by its key relative to ``srcPrefix``.

    ``mtime`` is seconds since the epoch (float). ``crc64``/``md5`` are filled in when the
    side that listed the object knows them (OSS listing does not give CRC64, a HEAD does).
    """

    key: str
    size: int
    mtime: float = 0.0
    crc64: Optional[int] = None
    md5: Optional[str] = None  # hex
    etag: Optional[str] = None
    headers: dict = field(default_factory=dict)
    # Where to read it when the key alone does not say (an http list: the full URL).
    src: Optional[str] = None
    # Set by the listing when the entry is recorded but never copied, with the reason (a code
    # below, then words): a FIFO under srcPrefix, a manifest line naming a key that leaves the
    # source. Listed entries are never dropped silently; the worker writes this as their outcome.
    refused: Optional[str] = None

    def to_json(self) -> str:
        doc = {"k": self.key, "s": self.size, "m": self.mtime}
        if self.crc64 is not None:
            doc["c"] = str(self.crc64)
        if self.md5:
            doc["5"] = self.md5
        if self.etag:
            doc["e"] = self.etag
        if self.src:
            doc["u"] = self.src
        if self.refused:
            doc["x"] = self.refused
        return json.dumps(doc, ensure_ascii=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> "ObjectEntry":
        doc = json.loads(line)
        crc = doc.get("c")
        return cls(key=doc["k"], size=int(doc["s"]), mtime=float(doc.get("m", 0)),
                   crc64=int(crc) if crc is not None else None, md5=doc.get("5"),
                   etag=doc.get("e"), src=doc.get("u"), refused=doc.get("x"))


def mtime_moved(entry: ObjectEntry, mtime) -> bool:
    """True when ``mtime`` (the source's now) is not the listed one."""
    # mtime 0 means the listing did not know it (an http list, a manifest with sizes only).
    return bool(entry.mtime) and abs(mtime - entry.mtime) > MTIME_SLACK


class Outcome:
    """Words written in ``audit.log``'s second column."""

    SUCCEED = "Succeed"
    SKIPPED = "Skipped"
    FAILED = "Failed"
    CHECK_FAILED = "CheckFailed"


# Error codes written in audit.log details and error.list, as OssImport operators grep them.
SIZE_NOT_MATCH = "SIZE_NOT_MATCH"
CRC_NOT_MATCH = "CRC64_NOT_MATCH"
MD5_NOT_MATCH = "MD5_NOT_MATCH"
SOURCE_NOT_EXIST = "SOURCE_NOT_EXIST"
TARGET_NOT_EXIST = "TARGET_NOT_EXIST"
# Refused at listing time. NOT_REGULAR_FILE (a FIFO, socket, device, a symlink the job does not
# follow) is skipped and counted: copying it again can never succeed. INVALID_KEY (a list line
# with '..', '.' or empty segments) fails: the operator must fix the list.
NOT_REGULAR_FILE = "NOT_REGULAR_FILE"
INVALID_KEY = "INVALID_KEY"
# A source entry that could not even be looked at (no search permission on its folder) fails:
# once the permission is fixed it can be copied.
SOURCE_NOT_READABLE = "SOURCE_NOT_READABLE"
# Refusals a retry looks up again: the source may have the key, or let it be read, by then.
SOURCE_REFUSALS = (SOURCE_NOT_EXIST, SOURCE_NOT_READABLE)
# A file queued when its job stopped on a fatal error (keys refused, bucket gone, endpoint dead):
# failed without a request, so that a retry once it is fixed sends it.
JOB_STOPPED = "JOB_STOPPED"
# Failures that a retry cannot fix until something changes at the source or destination: the
# file is not there, the list names a key that cannot be one, the destination refuses the name.
# import.sh does not offer a retry when every failed file is one of these.
NEEDS_A_CHANGE = (SOURCE_NOT_EXIST, INVALID_KEY)
# A destination's refusal of the name itself, as RequestFailed.describe words it ('PutObject <key>:
# HTTP 400 InvalidObjectName ...'): OSS's and S3's codes.
_DEST_REFUSED_NAME = re.compile(r": HTTP 400 (InvalidObjectName|KeyTooLongError)\b")


def needs_a_change(reason: str) -> bool:
    """True when ``reason`` (an error.list reason) is a failure no retry alone can fix."""
    return reason.startswith(NEEDS_A_CHANGE) or _DEST_REFUSED_NAME.search(reason) is not None


# A failure's reason code, as 'stat' groups failures ("Failed by reason: ..."). A code word of the
# list above (or any like it) starts a detail ("SOURCE_NOT_EXIST: ..."); a request that failed says
# "HTTP <status> <OSS/S3 code>" (storage.errors.RequestFailed.describe), or "network error".
NETWORK_ERROR = "network error"
OTHER_FAILURE = "OTHER"
MAX_CODE_LENGTH = 64
_CODE_WORD = re.compile(r"([A-Z][A-Z0-9_]{2,63}):")
# What a store's error code looks like; anything else in its Code element (a long text, spaces,
# a line break from a hostile or broken server) is not used as a code: its HTTP status is.
_STORE_CODE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
_HTTP_STATUS = re.compile(r"\bHTTP (\d{3})(?: ([A-Z][A-Za-z0-9]+)\b)?")
# fatal_error's sentences name the store's code in parentheses: "... rejected the signature
# (SignatureDoesNotMatch): ...".
_NAMED_CODE = re.compile(r"\(([A-Z][a-z0-9]+(?:[A-Z][A-Za-z0-9]*)+)\)")
_PY_ERROR = re.compile(r"([A-Z][A-Za-z]*Error): ")


def request_failure_code(status: int, code: str) -> str:
    """The reason code of one failed request: the store's error code (SignatureDoesNotMatch,
    NoSuchBucket, InternalError...), else its HTTP status, else a network error (no response)."""
    if not status:
        return NETWORK_ERROR
    return code if _STORE_CODE.fullmatch(code or "") else f"HTTP {status}"


def failure_code(detail: str) -> str:
    """The reason code of a failure known only by its words: an audit.log or error.list line read
    back (neither file has a code column, and operators grep them as they are, so none is added),
    or an operator error whose raiser named no code. The one place a code is parsed from words;
    a result made here gets its code where it is made."""
    code = _code_in(detail)
    return code if len(code) <= MAX_CODE_LENGTH else OTHER_FAILURE


def _code_in(detail: str) -> str:
    head = _CODE_WORD.match(detail)
    if head and "_" in head.group(1):
        return head.group(1)
    http = _HTTP_STATUS.search(detail)
    if http:
        return request_failure_code(int(http.group(1)), http.group(2) or "")
    if NETWORK_ERROR in detail:
        return NETWORK_ERROR
    for pattern in (_NAMED_CODE, _PY_ERROR):
        named = pattern.search(detail)
        if named:
            return named.group(1)
    return OTHER_FAILURE


def reasons_text(reasons: dict) -> str:
    """``SignatureDoesNotMatch 1194, SOURCE_NOT_EXIST 3``: counts by code, largest first."""
    ranked = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{code} {n}" for code, n in ranked)


def refused_result(entry: "ObjectEntry") -> "FileResult":
    """How a refused entry ends: skipped when it is not a file at all, failed otherwise."""
    reason = entry.refused or ""
    outcome = Outcome.SKIPPED if reason.startswith(NOT_REGULAR_FILE) else Outcome.FAILED
    # The reason was written in the task file by the listing: its code is the words' first.
    return FileResult(entry.key, outcome, detail=reason,
                      code=failure_code(reason) if outcome == Outcome.FAILED else "")


@dataclass
class FileResult:
    """How copying (or auditing) one object ended."""

    key: str
    outcome: str
    size: int = 0  # bytes moved (0 when skipped or failed)
    detail: str = ""
    crc64: Optional[int] = None  # a copy's: of the bytes read; a skip's or an audit's: the destination's
    # What the destination reported of the object (the PUT's answer, a HEAD), for the job report.
    stored_crc64: Optional[int] = None
    md5: Optional[str] = None  # hex, when the job records it (isCheckMd5 / Content-MD5)
    etag: Optional[str] = None
    # The verdict of the audit done with the copy (records.AUDIT_*), "" when none was (yet).
    audit: str = ""
    # Why it failed, as stat groups failures (SOURCE_NOT_EXIST, a request's OSS/S3 code...): set
    # where the failure is made. "" when it did not fail.
    code: str = ""
    # The exception a failure came from (never written anywhere): what the job's fatal-error
    # judge reads, rather than the words of ``detail``.
    cause: Optional[BaseException] = field(default=None, repr=False, compare=False)
    # The source's entry as it was copied (sized, stat'ed again by a retry), when its audit waits
    # for the end of its task (audit.ListingAudit). Never written anywhere.
    copied: Optional["ObjectEntry"] = field(default=None, repr=False, compare=False)

    @classmethod
    def from_record(cls, key: str, outcome: str, detail: str) -> "FileResult":
        """A result read back from an audit.log line, which has no code: read from its words."""
        failed = outcome not in (Outcome.SUCCEED, Outcome.SKIPPED)
        return cls(key, outcome, detail=detail, code=failure_code(detail) if failed else "")

    @property
    def ok(self) -> bool:
        return self.outcome in (Outcome.SUCCEED, Outcome.SKIPPED)


@dataclass
class Task:
    """A slice of the job: at most taskObjectCountLimit objects and taskObjectSizeLimit bytes."""

    task_id: str
    job_name: str
    objects: list = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(o.size for o in self.objects)


@dataclass
class TaskCounts:
    """Per-task totals, kept in the task folder's COUNTS file for ``stat``."""

    files: int = 0
    bytes: int = 0
    succeed: int = 0
    succeed_bytes: int = 0
    skipped: int = 0
    skipped_bytes: int = 0
    failed: int = 0
    failed_bytes: int = 0
    # Of the failed: verified different from the source, or absent at the destination. An
    # audit job's stat reports these; an import counts its failed checks here too.
    differ: int = 0
    missing: int = 0
    # Of the skipped: entries that are not regular files (listed in skipped.list).
    not_regular: int = 0
    # Of the failed: how many per reason code (FileResult.code), for "Failed by reason".
    reasons: dict = field(default_factory=dict)

    def recount(self, entry_size: int, check: FileResult) -> None:
        """A file counted as succeeded whose audit then failed: counted as ``check`` instead."""
        self.succeed -= 1
        self.succeed_bytes -= entry_size
        self.add(entry_size, check)

    def add(self, entry_size: int, result: FileResult) -> None:
        if result.outcome == Outcome.SUCCEED:
            self.succeed += 1
            self.succeed_bytes += entry_size
        elif result.outcome == Outcome.SKIPPED:
            self.skipped += 1
            self.skipped_bytes += entry_size
            if result.detail.startswith(NOT_REGULAR_FILE):
                self.not_regular += 1
        else:
            self.failed += 1
            self.failed_bytes += entry_size
            # A new dict, not an update in place: the service's progress writer reads these
            # counts from another thread, and a dict changing size under it would fail its copy.
            self.reasons = {**self.reasons, result.code: self.reasons.get(result.code, 0) + 1}
            if result.outcome == Outcome.CHECK_FAILED:
                if result.detail.startswith(TARGET_NOT_EXIST):
                    self.missing += 1
                else:
                    self.differ += 1
