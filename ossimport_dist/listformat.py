"""How a key is written on a line of our text files and read back: ``error.list`` and
``skipped.list`` (``key<TAB>reason``), a manifest for ``srcType=list`` (``key`` or
``key<TAB>size``) and the key column of ``audit.log`` (``<stamp> <outcome> <key> Detail:<detail>``).

One writer and one reader, so every legal key makes the round trip the README promises: a job's
error.list, gathered by ``console.sh errors -o f.list``, read by a ``srcType=list`` job, names
exactly the objects that failed.

A key is written as it is, so an operator's manifest of plain names (spaces, backslashes, '#',
non-ASCII) means what it says, unless the raw text could not survive a line or hides in it: a TAB,
CR, LF or any other control character, an invisible mark (zero-width, direction override, BOM), a
lone surrogate (a local file name that is not UTF-8), nothing but white space, a leading double
quote, or ``" Detail:"`` (audit.log's column separator). Such a key is written as a JSON string
literal, ASCII only (``"a\\tb"``, ``"caf\\udce9"``). The reader takes a line that starts with
``"`` as a JSON string up to its closing quote, any other line as raw text up to the first
separator. A written key never holds a raw TAB, so splitting a line at its first TAB separates the
key as written from the rest. (JSON pairs a high surrogate followed by a low one into one
character; no source makes such a key: the surrogates of a file name stand for one undecodable
byte each, U+DC80..U+DCFF, all low ones.)

Files written before this format escaped only CR and LF, as the two characters ``\\r``/``\\n`` in an
otherwise raw key. Such a line now reads as a key with a literal backslash, which the source does
not have: a list job fails it as SOURCE_NOT_EXIST naming its line, it never copies another object;
a resumed task copies that file again. An old raw key starting with ``"`` is refused on its
line (INVALID_KEY) unless the whole key is a JSON string: a file named ``"x"``, quotes included,
now reads as ``x``. Every other old line reads as before.
"""

from __future__ import annotations

import json
import os
import re
import stat
from typing import BinaryIO, Callable, Iterable, Iterator, Optional

from .errors import SourceError
from .models import INVALID_KEY

# audit.log: "<stamp> <outcome> <key>[ Detail:<detail>]".
DETAIL_SEPARATOR = " Detail:"
LIST_SEPARATOR = "\t"

# Characters that break a line of text or hide in it: C0 and C1 controls (CR, LF, TAB, NEL...),
# DEL, the Unicode line and paragraph separators, invisible marks (zero-width, direction
# overrides that make a name read backwards, the BOM) and lone surrogates.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2064\ufeff"
                     "\ud800-\udfff]")
# Surrogates that stand for one undecodable byte of a file name (Python's surrogateescape);
# any other lone surrogate names no file anywhere.
_NOT_A_BYTE = re.compile("[\ud800-\udc7f\udd00-\udfff]")


class KeyFormatError(ValueError):
    """A line's key starts with a double quote but is not a JSON string."""


def write_key(key: str) -> str:
    """``key`` as it goes on a line of error.list, skipped.list, a manifest or audit.log."""
    if key.startswith('"') or not key.strip() or DETAIL_SEPARATOR in key or _UNSAFE.search(key):
        return json.dumps(key, ensure_ascii=True)
    return key


def read_key(text: str, separator: str = LIST_SEPARATOR) -> tuple:
    """(key, rest) of one line without its line break: ``rest`` is what follows the separator
    after the key, None when the line holds only the key. Raises KeyFormatError."""
    if not text.startswith('"'):
        key, found, rest = text.partition(separator)
        return key, rest if found else None
    try:
        key, end = json.JSONDecoder().raw_decode(text)
    except ValueError as exc:
        what = getattr(exc, "msg", str(exc))
        if what.startswith("Unterminated string"):
            what = "no closing quote"
        raise KeyFormatError(f"starts with a double quote but is not a JSON string ({what}, "
                             f"column {getattr(exc, 'colno', '?')})") from None
    tail = text[end:]
    if not tail:
        return key, None
    if tail.startswith(separator):
        return key, tail[len(separator):]
    raise KeyFormatError(f"has '{one_line(tail[:20])}' after the closing quote of its JSON string")


def list_line(key: str, column: str = "") -> str:
    """One line of error.list or skipped.list (``key<TAB>reason``), or of a manifest
    (``key<TAB>size``); just the key when the column is empty, since a manifest refuses a TAB
    with nothing after it."""
    if not column:
        return write_key(key) + "\n"
    return f"{write_key(key)}{LIST_SEPARATOR}{one_line(column)}\n"


def written_columns(line: str) -> tuple:
    """(key as written, rest) of a list line: what a person is shown, one line, as in the file."""
    written, _, rest = line.partition(LIST_SEPARATOR)
    return written, rest


def one_line(text: str) -> str:
    """Free text (a reason, a detail, a key inside a message) that stays on its line: the
    characters write_key would quote are shown as JSON escapes. For people; never read back."""
    return _UNSAFE.sub(lambda m: json.dumps(m.group(), ensure_ascii=True)[1:-1], text)


def key_problem(key: str) -> Optional[str]:
    """Why a key from a list file cannot name an object under the source's prefix, or None.

    The drivers join a key to their prefix as text (local: srcPrefix + key), so a '..' segment
    would read outside it and '.' or empty segments would name the same object twice. A trailing
    '/' is allowed: it is how an object store names a folder marker.
    """
    if not key:
        return "is empty"
    if "\x00" in key:
        return "holds a NUL character"
    if key.startswith("/"):
        return "starts with '/' (an absolute path)"
    segments = key[:-1].split("/") if key.endswith("/") else key.split("/")
    for segment, words in (("..", "has a '..' segment"), (".", "has a '.' segment"),
                           ("", "has an empty segment (two '/' in a row)")):
        if segment in segments:
            return words
    odd = _NOT_A_BYTE.search(key)
    if odd:
        return f"holds the lone surrogate {one_line(odd.group())}, which no file name encodes"
    return None


def invalid_key_reason(path: str, number: int, key: str,
                       fix: str = "list keys relative to srcPrefix") -> Optional[str]:
    """The refusal of line ``number`` of list file ``path`` for its key, or None when the key
    is fine: ``INVALID_KEY: <file> line <n>: key '<k>' has a '..' segment; <fix>``."""
    problem = key_problem(key)
    if problem is None:
        return None
    return f"{INVALID_KEY}: {path} line {number}: key '{one_line(key)}' {problem}; {fix}"


# Longer than any key or URL line could be (a 4 KiB path with every byte a 6-character JSON
# escape, plus its URL): beyond it the file is not a list, and reading on would fill memory.
MAX_LINE_BYTES = 64 * 1024
UTF8_BOM = b"\xef\xbb\xbf"


def list_file_lines(path: str, setting: str) -> Iterator[tuple]:
    """(line number, raw bytes without the line break) of every line of a job's list file;
    one-line SourceErrors for a file that cannot be read or is not a list."""
    with _open_list_file(path, setting) as handle:
        number = 0
        while True:
            raw = handle.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            number += 1
            if number == 1 and raw.startswith(UTF8_BOM):
                raw = raw[len(UTF8_BOM):]  # Windows Notepad's UTF-8: not part of the first key
            if len(raw) > MAX_LINE_BYTES:
                raise SourceError(f"{setting} {path}:{number}: line longer than "
                                  f"{MAX_LINE_BYTES // 1024} KiB: this is not a list of keys; "
                                  f"name a text file with one line per object")
            yield number, raw.rstrip(b"\r\n")


def list_file_text(path: str, setting: str,
                   not_utf8: Optional[Callable[[int], Exception]] = None) -> Iterator[tuple]:
    """(line number, text) of every line of a job's list file that is not blank, as
    ``list_file_lines`` reads them. A line that is not UTF-8 raises ``not_utf8(number)``; without
    it, its bytes read as surrogate escapes, as the local source spells a name that is not UTF-8."""
    for number, raw in list_file_lines(path, setting):
        try:
            text = raw.decode("utf-8", "strict" if not_utf8 else "surrogateescape")
        except UnicodeDecodeError:
            raise not_utf8(number) from None
        if text.strip():
            yield number, text


def absolute_list_path(path: str, setting: str, example: str) -> str:
    """``path`` when it is absolute; a one-line SourceError naming ``setting`` otherwise."""
    if not path or not path.startswith("/"):
        raise SourceError(f"{setting} '{path}' is not an absolute path: write it like {example}")
    return path


def listed_rows(rows: Iterable[tuple], path: str, subtree: str = "", recursive: bool = True,
                start_after: Optional[str] = None) -> Iterator[tuple]:
    """The rows (line number, key, ...) of a list file a scan unit asks for: after
    ``start_after`` (a resumed listing), under ``subtree``, only its direct children when not
    ``recursive``. A resumed listing whose key the file no longer holds raises ``resume_lost``."""
    resuming = bool(start_after)
    for row in rows:
        key = row[1]
        if resuming:
            resuming = key != start_after
            continue
        if subtree and not key.startswith(subtree):
            continue
        if not recursive and "/" in key[len(subtree):]:
            continue
        yield row
    if resuming:
        raise resume_lost(path, start_after)


def resume_lost(path: str, start_after: str) -> SourceError:
    """The error of a listing resumed after a key its list file no longer holds."""
    return SourceError(f"cannot resume the listing of {path}: key '{one_line(start_after)}' is no "
                       f"longer in it; the list changed after the scan started: restore it, or "
                       f"clean and resubmit the job")


def _open_list_file(path: str, setting: str) -> BinaryIO:
    """The list file a job names (``setting`` is its key: listFilePath, httpListFilePath), open
    for reading bytes; a one-line SourceError naming it otherwise. Opened without blocking and
    checked to be a regular file, so a FIFO or a device named by mistake cannot hang the scan."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise SourceError(f"{setting} {path} does not exist: create it or fix {setting}") from None
    except OSError as exc:
        raise SourceError(f"cannot read {setting} {path}: {exc.strerror or exc}; give the "
                          f"service's user read permission") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        what = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else \
            "a device or socket"
        raise SourceError(f"{setting} {path} is {what}, not a file: name a text file with one "
                          f"line per object")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def audit_records(path) -> Iterator[tuple]:
    """(outcome, key, detail) of each whole line of an audit.log, in file order. A last line cut
    short by a crash is left out (its key may be cut short too), and so is a line whose key
    does not read; an audit.log that cannot be opened has no records."""
    try:
        f = open(path, "r", encoding="utf-8", errors="surrogateescape", newline="\n")
    except OSError:
        return
    with f:
        yield from audit_line_records(f)


def audit_line_records(lines: Iterable[str]) -> Iterator[tuple]:
    """audit_records of an audit.log's lines, each with its line break (read from a worker
    host, say)."""
    for line in lines:
        if not line.endswith("\n"):
            continue
        parts = line[:-1].split(" ", 3)
        if len(parts) < 4:
            continue
        try:
            key, detail = read_key(parts[3], DETAIL_SEPARATOR)
        except KeyFormatError:
            continue
        yield parts[2], key, detail or ""
