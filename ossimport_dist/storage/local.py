"""A local directory as a source (srcType=local).

Listing streams directory by directory, depth first, each directory's children sorted by
``name + '/'`` for directories and ``name`` for files: that is exactly the code-point order of
the full relative keys, so ``start_after`` works like an OSS marker and whole directories
already listed are skipped without being read.

File names that are not valid UTF-8 come back from ``os.scandir`` as surrogate-escaped str
(``os.fsdecode``); passing the same str back to ``open``/``stat`` reaches the same file.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import stat as stat_module
from typing import Callable, Iterator, Optional

from ..errors import SourceError
from ..models import ObjectEntry
from .base import Features, Source

log = logging.getLogger(__name__)


class LimitedReader(io.RawIOBase):
    """A file opened at ``offset`` that reads at most ``length`` bytes (to EOF when None).

    ``stat_now()`` reports the file's current size and mtime from the open descriptor, so the
    transfer can tell that a file changed while it was read without another path lookup.
    """

    def __init__(self, fileobj, offset: int, length: Optional[int]):
        super().__init__()
        self._file = fileobj
        if offset:
            fileobj.seek(offset)
        self._left = length

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._left is not None:
            if size is None or size < 0 or size > self._left:
                size = self._left
            if size == 0:
                return b""
        data = self._file.read(size if size is not None else -1)
        if self._left is not None:
            self._left -= len(data)
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def fileno(self) -> int:
        return self._file.fileno()

    def stat_now(self) -> tuple:
        st = os.fstat(self._file.fileno())
        return st.st_size, st.st_mtime

    def close(self) -> None:
        try:
            self._file.close()
        finally:
            super().close()


class LocalSource(Source):
    kind = "local"
    features = Features()

    def __init__(self, prefix: str, allow_symlinks: bool = False,
                 on_skip: Optional[Callable[[str, str], None]] = None):
        if not prefix or not os.path.isabs(prefix):
            raise SourceError(f"srcPrefix '{prefix}' is not an absolute directory: "
                              f"write it like /data/files/")
        self.root = prefix if prefix.endswith("/") else prefix + "/"
        if not os.path.isdir(self.root):
            raise SourceError(f"srcPrefix '{prefix}' is not a directory: create it or fix srcPrefix")
        self.allow_symlinks = allow_symlinks
        if on_skip is not None:
            self.on_skip = on_skip

    @classmethod
    def from_settings(cls, *, prefix: str, allow_symlinks: bool = False, **_unused):
        return cls(prefix, allow_symlinks=allow_symlinks)

    @classmethod
    def from_job(cls, job):
        return cls(job.src_prefix, allow_symlinks=job.is_allow_symbolic_link)

    def on_skip(self, key: str, reason: str) -> None:
        """Called for every file the listing leaves out; the scanner replaces it to record them."""
        log.warning("not copied: %s%s: %s", self.root, key, reason)

    def _path(self, key: str) -> str:
        return self.root + key

    def _scan(self, rel_dir: str) -> list:
        """(sort key, DirEntry, is_dir) of a directory's children, in key order."""
        path = self._path(rel_dir)
        try:
            with os.scandir(path) as it:
                children = []
                for entry in it:
                    try:
                        is_dir = entry.is_dir(follow_symlinks=False)
                    except OSError:
                        is_dir = False
                    children.append((entry.name + "/" if is_dir else entry.name, entry, is_dir))
        except FileNotFoundError:
            if rel_dir:
                return []  # removed since its parent was listed: nothing left to copy
            raise SourceError(f"srcPrefix directory {path} does not exist")
        except NotADirectoryError:
            return []
        except PermissionError as exc:
            raise SourceError(f"cannot list directory {path}: permission denied "
                              f"({exc.strerror}); give the worker's user read and execute "
                              f"permission on it") from exc
        except OSError as exc:
            raise SourceError(f"cannot list directory {path}: {exc.strerror or exc}") from exc
        children.sort(key=lambda child: child[0])
        return children

    def _file_entry(self, key: str, dirent) -> Optional[ObjectEntry]:
        """The entry for a non-directory child, or None after reporting why it is skipped."""
        try:
            if dirent.is_symlink():
                if dirent.is_dir(follow_symlinks=True):
                    self.on_skip(key, "symbolic link to a directory (never followed)")
                    return None
                if not self.allow_symlinks:
                    self.on_skip(key, "symbolic link (isAllowSymbolicLink=false)")
                    return None
                st = dirent.stat(follow_symlinks=True)
            else:
                st = dirent.stat(follow_symlinks=False)
        except FileNotFoundError:
            if dirent.is_symlink():
                self.on_skip(key, "broken symbolic link")
            return None  # a plain file deleted since the directory was read: nothing to copy
        except OSError as exc:
            self.on_skip(key, f"cannot stat: {exc.strerror or exc}")
            return None
        if not stat_module.S_ISREG(st.st_mode):
            self.on_skip(key, "not a regular file (device, socket or pipe)")
            return None
        return ObjectEntry(key=key, size=st.st_size, mtime=st.st_mtime)

    def list(self, subtree: str = "", recursive: bool = True,
             start_after: Optional[str] = None) -> Iterator[ObjectEntry]:
        after = start_after or ""
        # A stack of sorted child lists with a cursor each: depth first, streaming.
        stack = [(subtree, self._scan(subtree), 0)]
        while stack:
            rel_dir, children, i = stack.pop()
            if i >= len(children):
                continue
            stack.append((rel_dir, children, i + 1))
            sort_key, dirent, is_dir = children[i]
            key = rel_dir + sort_key
            if is_dir:
                # Every key under dir/ sorts before start_after when start_after is past dir/
                # and not inside it.
                if not recursive or (after > key and not after.startswith(key)):
                    continue
                stack.append((key, self._scan(key), 0))
                continue
            if key <= after:
                continue
            entry = self._file_entry(key, dirent)
            if entry is not None:
                yield entry

    def subtrees(self, subtree: str = "") -> list:
        return [subtree + sort_key for sort_key, _, is_dir in self._scan(subtree) if is_dir]

    def stat(self, key: str) -> Optional[ObjectEntry]:
        try:
            st = os.stat(self._path(key))
        except (FileNotFoundError, NotADirectoryError):
            return None
        return ObjectEntry(key=key, size=st.st_size, mtime=st.st_mtime)

    def open(self, entry: ObjectEntry, offset: int = 0, length: Optional[int] = None):
        """Raises FileNotFoundError when the file is gone."""
        path = self._path(entry.key)
        flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
        if not self.allow_symlinks:
            # A file swapped for a symlink after listing is refused without an extra lstat.
            flags |= getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(path, flags)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise FileNotFoundError(errno.ENOENT, "now a symbolic link", path) from exc
            raise
        return LimitedReader(io.FileIO(fd, "rb", closefd=True), offset, length)
