"""A list of keys as a source (srcType=list): copy exactly the objects a manifest names.

The manifest names one key per line, relative to the real source's prefix, optionally followed
by a TAB and the size in bytes (``key<TAB>size``). A task's ``error.list`` (``key<TAB>reason``)
is a manifest too: the second column is a size only when it is all digits, so the failed
objects of one job can be fed to a new one. Keys are taken verbatim (spaces and backslashes
included; only the line break is removed), so there are no comment lines; blank lines are
skipped. A line starting with ``"`` holds its key as a JSON string: that is how error.list writes
a key with a TAB, CR, LF or other control character (``listformat``, the one writer and reader).

A line is never dropped silently. A key that could leave the source's prefix ('..', '.' or empty
segments, a leading '/', NUL) or a malformed JSON key is listed refused ``INVALID_KEY`` with the
file and line; a key the source does not have is listed refused ``SOURCE_NOT_EXIST``. The worker
fails both into error.list, and the job goes on with the other lines.

Entries come in file order; ``start_after`` means "after the line with that key". Reading and
stat'ing go to the wrapped source (``listSrcType`` with the usual srcXxx keys).
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Iterator, Optional

from ..errors import SourceError
from ..listformat import (KeyFormatError, absolute_list_path, invalid_key_reason, list_file_text,
                          listed_rows, one_line, read_key)
from ..models import INVALID_KEY, SOURCE_NOT_EXIST, ObjectEntry
from . import open_job_source
from .base import PROBE_LINES, Source, once_per_key


class ManifestFormatError(SourceError):
    """A line of the manifest cannot be read."""

    def __init__(self, path: str, line: int, what: str):
        self.path, self.line = path, line
        super().__init__(f"Unknown list file format: {path}:{line}: {what}")


class ListSource(Source):
    kind = "list"

    def __init__(self, inner: Source, manifest_path: str):
        absolute_list_path(manifest_path, "listFilePath", "/data/keys.list")
        self.inner, self.manifest_path = inner, manifest_path
        # What the inner source can do with an object, but listed from one file, not by folder.
        self.features = dataclasses.replace(inner.features, lists_by_folder=False)

    @classmethod
    def from_job(cls, job, sys_cfg=None):
        inner_type = getattr(job, "list_src_type", "") or "local"
        if inner_type == "list":
            raise SourceError("listSrcType=list would read a manifest of manifests: name the "
                              "real source (local, oss, http)")
        inner = open_job_source(dataclasses.replace(job, src_type=inner_type), sys_cfg)
        return cls(inner, getattr(job, "list_file_path", ""))

    def _lines(self) -> Iterator[tuple]:
        # A raw non-UTF-8 name (a list made with ls on a Latin-1 NAS) reads back as the local
        # source spells it; error.list writes such names as JSON escapes instead.
        return list_file_text(self.manifest_path, "listFilePath")

    def _parse(self, number: int, text: str) -> tuple:
        """(key, size or None, refusal or None) of one line."""
        try:
            key, rest = read_key(text)
        except KeyFormatError as exc:
            # Kept as written: error.list then holds it as a JSON string, so that line, copied
            # back into the manifest, names the key this one spells.
            key, _, _ = text.partition("\t")
            return key, None, (f"{INVALID_KEY}: {self.manifest_path} line {number}: key "
                               f"'{one_line(key)}' {exc}; write a key that starts with '\"' as "
                               f"a JSON string, as error.list does")
        size = None
        if rest is not None:
            column = rest.split("\t", 1)[0].strip()
            if column.isdigit() and column.isascii():
                size = int(column)
            elif not rest.strip():
                raise ManifestFormatError(self.manifest_path, number,
                                          "TAB with nothing after it; write 'key' or "
                                          "'key<TAB>size'")
        return key, size, invalid_key_reason(self.manifest_path, number, key)

    def _entries(self) -> Iterator[tuple]:
        return once_per_key(self._lines, self._parse, lambda number, key, first: ManifestFormatError(
            self.manifest_path, number, f"key '{one_line(key)}' is also on line {first}; name each "
                                        f"object once"))

    def _looked_up(self, number: int, key: str) -> ObjectEntry:
        """The source's entry for a named key, or the key refused with why it is not there."""
        named = f"named in {self.manifest_path}:{number}"
        try:
            entry = self.inner.stat(key)
        except OSError as exc:  # e.g. a name too long, a folder without read permission
            return ObjectEntry(key=key, size=0, refused=f"{SOURCE_NOT_EXIST}: {named} but it "
                               f"cannot be looked up in the source: {exc.strerror or exc}")
        if entry is None:
            return ObjectEntry(key=key, size=0,
                               refused=f"{SOURCE_NOT_EXIST}: {named} but not in the source")
        return entry

    def list(self, subtree: str = "", recursive: bool = True,
             start_after: Optional[str] = None) -> Iterator[ObjectEntry]:
        entries = self._entries()
        first = next(entries, None)
        if first is None:
            raise self._names_nothing()
        rows = listed_rows(itertools.chain([first], entries), self.manifest_path, subtree, recursive, start_after)
        for number, key, size, refusal in rows:
            if refusal:
                yield ObjectEntry(key=key, size=0, refused=refusal)
            elif size is not None:
                yield ObjectEntry(key=key, size=size)
            else:
                yield self._looked_up(number, key)

    def _names_nothing(self) -> SourceError:
        # Most likely the wrong file, or 'console.sh errors -o' of a job with no failure:
        # a job that copies nothing must not end as if it had copied what was meant.
        return SourceError(f"listFilePath {self.manifest_path} names no key (it is empty or "
                           f"holds only blank lines): nothing to copy; write one key per line, "
                           f"or fix listFilePath")

    def probe(self, timeout: float) -> None:
        """The manifest's first lines parse, then the source it names answers its own probe."""
        named_any = False
        for _, (number, text) in zip(range(PROBE_LINES), self._lines()):
            self._parse(number, text)
            named_any = True
        if not named_any:
            raise self._names_nothing()
        self.inner.probe(timeout)

    def subtrees(self, subtree: str = "") -> list:
        return []

    def task_boundary(self, prev: ObjectEntry, entry: ObjectEntry) -> bool:
        return self.inner.task_boundary(prev, entry)

    def stat(self, key):
        return self.inner.stat(key)

    def open(self, entry: ObjectEntry, offset: int = 0, length: Optional[int] = None):
        return self.inner.open(entry, offset, length)

    def close(self) -> None:
        self.inner.close()
