"""A list of keys as a source (srcType=list): copy exactly the objects a manifest names.

The manifest names one key per line, relative to the real source's prefix, optionally followed
by a TAB and the size in bytes (``key<TAB>size``). A task's ``error.list`` (``key<TAB>reason``)
is a manifest too: the second column is a size only when it is all digits, so the failed
objects of one job can be fed to a new one. Keys are taken verbatim (spaces included; only the
line break is removed), so there are no comment lines; blank lines are skipped.

Entries come in file order; ``start_after`` means "after the line with that key". Reading and
stat'ing go to the wrapped source (``listSrcType`` with the usual srcXxx keys).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Iterator, Optional

from ..errors import SourceError
from ..models import ObjectEntry
from . import open_job_source
from .base import Source, once_per_key

log = logging.getLogger(__name__)


class ManifestFormatError(SourceError):
    """A line of the manifest cannot be read."""

    def __init__(self, path: str, line: int, what: str):
        self.path, self.line = path, line
        super().__init__(f"Unknown list file format: {path}:{line}: {what}")


class ListSource(Source):
    kind = "list"

    def __init__(self, inner: Source, manifest_path: str):
        if not manifest_path or not manifest_path.startswith("/"):
            raise SourceError(f"listFilePath '{manifest_path}' is not an absolute path: write it "
                              f"like /data/keys.list")
        self.inner, self.manifest_path = inner, manifest_path
        # What the inner source can do with an object, but listed from one file, not by folder.
        self.features = dataclasses.replace(inner.features, lists_by_folder=False)
        self.sizes_known = getattr(inner, "sizes_known", True)

    @classmethod
    def from_job(cls, job):
        inner_type = getattr(job, "list_src_type", "") or "local"
        if inner_type == "list":
            raise SourceError("listSrcType=list would read a manifest of manifests: name the "
                              "real source (local, oss, http)")
        inner = open_job_source(dataclasses.replace(job, src_type=inner_type))
        return cls(inner, getattr(job, "list_file_path", ""))

    def on_skip(self, key: str, reason: str) -> None:
        """Called for a named key the source does not have; the scanner replaces it to record it."""
        log.warning("not copied: %s: %s", key, reason)

    def _lines(self) -> Iterator[tuple]:
        try:
            handle = open(self.manifest_path, "rb")
        except FileNotFoundError:
            raise SourceError(f"listFilePath {self.manifest_path} does not exist: create it or "
                              f"fix listFilePath") from None
        except OSError as exc:
            raise SourceError(f"cannot read listFilePath {self.manifest_path}: "
                              f"{exc.strerror or exc}; give the service's user read "
                              f"permission") from exc
        with handle:
            for number, raw in enumerate(handle, 1):
                # error.list holds non-UTF-8 local names surrogate-escaped: read them back alike.
                text = raw.decode("utf-8", "surrogateescape").rstrip("\r\n")
                if text.strip():
                    yield number, text

    def _parse(self, number: int, text: str) -> tuple:
        """(key, size or None) of one line."""
        key, tab, rest = text.partition("\t")
        if not key:
            raise ManifestFormatError(self.manifest_path, number,
                                      "empty key before the TAB; write 'key' or 'key<TAB>size'")
        if key.startswith("/") or "\x00" in key:
            raise ManifestFormatError(self.manifest_path, number,
                                      f"key '{key}' starts with '/' or holds NUL: keys are "
                                      f"relative to the source prefix")
        size = None
        column = rest.split("\t", 1)[0].strip() if tab else ""
        if column.isdigit() and column.isascii():
            size = int(column)
        elif tab and not rest.strip():
            raise ManifestFormatError(self.manifest_path, number,
                                      "TAB with nothing after it; write 'key' or "
                                      "'key<TAB>size'")
        return key, size

    def _entries(self) -> Iterator[tuple]:
        return once_per_key(self._lines, self._parse, lambda number, key, first: ManifestFormatError(
            self.manifest_path, number, f"key '{key}' is also on line {first}; name each object once"))

    def list(self, subtree: str = "", recursive: bool = True,
             start_after: Optional[str] = None) -> Iterator[ObjectEntry]:
        resuming = bool(start_after)
        for number, key, size in self._entries():
            if resuming:
                resuming = key != start_after
                continue
            if subtree and not key.startswith(subtree):
                continue
            if not recursive and "/" in key[len(subtree):]:
                continue
            if size is not None:
                yield ObjectEntry(key=key, size=size)
                continue
            entry = self.inner.stat(key)
            if entry is None:
                self.on_skip(key, f"named in {self.manifest_path}:{number} but not in the source")
                continue
            yield entry
        if resuming:
            raise SourceError(f"cannot resume the listing of {self.manifest_path}: key "
                              f"'{start_after}' is no longer in it; the list changed after the "
                              f"scan started: restore it, or clean and resubmit the job")

    def subtrees(self, subtree: str = "") -> list:
        return []

    def task_boundary(self, prev: ObjectEntry, entry: ObjectEntry) -> bool:
        boundary = getattr(self.inner, "task_boundary", None)
        return bool(boundary and boundary(prev, entry))

    def stat(self, key):
        return self.inner.stat(key)

    def open(self, entry: ObjectEntry, offset: int = 0, length: Optional[int] = None):
        return self.inner.open(entry, offset, length)

    def close(self) -> None:
        self.inner.close()
