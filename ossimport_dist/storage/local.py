"""A local directory as a source (srcType=local) and as a destination (destType=local).

Listing streams directory by directory, depth first, each directory's children sorted by
``name + '/'`` for directories and ``name`` for files: that is exactly the code-point order of
the full relative keys, so ``start_after`` works like an OSS marker and whole directories
already listed are skipped without being read.

File names that are not valid UTF-8 come back from ``os.scandir`` as surrogate-escaped str
(``os.fsdecode``); passing the same str back to ``open``/``stat`` reaches the same file.

As a source it reads only under ``srcPrefix``: one descriptor of it stays open, and every folder,
key and stat is resolved from there with no symbolic link followed on the way (``openat2`` with
RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS, or one ``openat`` per component with O_NOFOLLOW where the
kernel lacks it), so a folder swapped for a link after the listing leads nowhere. Files open
with O_NONBLOCK and must be regular files on the open descriptor: a FIFO swapped in fails the
file instead of blocking the thread. Whatever the listing finds that is not copied (FIFO,
socket, device, a link it does not follow and why) is listed as a refused entry, never dropped.

As a destination, ``destDomain`` is the absolute root directory and ``destPrefix + key`` the
path under it. Every file appears whole or not at all (temporary file, then ``os.replace``);
a multipart upload keeps its parts under ``<root>/.ossimport-uploads/<id>/`` until it completes,
so a large file resumes from the parts already written. Temporary files live in
``<root>/.ossimport-uploads/tmp/`` (or, when a folder is another file system, next to the file),
so the leftovers of a crash are found in one place: opening the destination removes temporary
files untouched for ``STALE_TEMP_SECONDS`` and uploads untouched for ``STALE_UPLOAD_SECONDS``.

Each file written carries its CRC64 in the extended attribute ``user.ossimport.crc64`` with the
size and mtime it was computed for, as OSS keeps an object's CRC64: ``head`` then needs no
read of the file (the audit after import, skip-existing). A file changed since, or a file
system without user xattrs, gets its CRC64 by reading the file. A key that would land outside the root
(``..``, absolute, NUL, or a symlinked folder pointing outside) is refused with a
``DestinationError`` naming it.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import io
import json
import logging
import os
import shutil
import stat as stat_module
import sys
import threading
import time
import uuid
import weakref
from typing import Iterator, Optional

from .. import crc64 as crc64_module
from ..errors import DestinationError, SourceError
from ..models import INVALID_KEY, NOT_REGULAR_FILE, SOURCE_NOT_READABLE, ObjectEntry
from .base import (MTIME_HEADER, SPILL_AFTER, BoundedReader, Destination, Features, PutResult, Source,
                   sorted_bounded)
from .errors import RequestFailed

log = logging.getLogger(__name__)


def _entry(key: str, st: os.stat_result) -> ObjectEntry:
    # The change token (inode and ctime) tells an incremental rescan that a file was replaced
    # even when the copy kept the old size and mtime (cp -p): no copy can keep its ctime.
    return ObjectEntry(key=key, size=st.st_size, mtime=st.st_mtime, etag=f"i{st.st_ino:x}c{st.st_ctime_ns:x}")


def _refused(key: str, reason: str, st: Optional[os.stat_result] = None) -> ObjectEntry:
    """An entry recorded but never copied. It keeps the mtime and change token of what is there,
    so importSince treats it like a file and an incremental rescan sees it replaced by one."""
    if st is None:
        return ObjectEntry(key=key, size=0, refused=reason)
    return dataclasses.replace(_entry(key, st), size=0, refused=reason)


# Control characters as \xNN: a reason is one field of one line in error.list and skipped.list.
_CONTROL_ESCAPES = str.maketrans({code: f"\\x{code:02x}" for code in [*range(32), 127]})


def _shown(text: str) -> str:
    """A path or key inside a reason: one line of valid UTF-8 (bytes of a name that are not
    UTF-8 shown as \\udcNN, control characters as \\xNN)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").translate(_CONTROL_ESCAPES)


def _kind(mode: int) -> str:
    for test, what in ((stat_module.S_ISFIFO, "a FIFO"), (stat_module.S_ISSOCK, "a socket"),
                       (stat_module.S_ISCHR, "a character device"),
                       (stat_module.S_ISBLK, "a block device"), (stat_module.S_ISDIR, "a folder"),
                       (stat_module.S_ISLNK, "a symbolic link")):
        if test(mode):
            return what
    return f"not a regular file (mode {mode:o})"


def key_problem(key: str) -> str:
    """Why ``key`` is not a plain relative path under a root ('' when it is one)."""
    if not key:
        return "is empty"
    if "\x00" in key:
        return "holds NUL"
    if key[0] == "/":
        return "is absolute"
    if key[-1] == "/":
        return "ends with '/' (a folder: name the files in it)"
    if "//" in key:
        return "has an empty segment ('//')"
    if key[0] == "." or "/." in key:  # only then can a segment be '.' or '..'
        for segment in key.split("/"):
            if segment in (".", ".."):
                return f"has a '{segment}' segment"
    return ""


class LimitedReader(BoundedReader):
    """A file opened at ``offset`` that reads at most ``length`` bytes (to EOF when None).

    ``stat_now()`` reports the file's current size and mtime from the open descriptor, so the
    transfer can tell that a file changed while it was read without another path lookup.
    """

    def __init__(self, fileobj, offset: int, length: Optional[int]):
        super().__init__(length)
        self._file = fileobj
        if offset:
            fileobj.seek(offset)

    def _raw(self, size: int) -> bytes:
        return self._file.read(size)

    def readinto(self, buffer) -> int:
        # Into the caller's buffer with no bytes object between: a large file is read into one
        # buffer (Transferer.read).
        with memoryview(buffer) as whole:
            with whole[:self._left] if self._left is not None else whole[:] as view:
                got = self._file.readinto(view) if len(view) else 0
        if self._left is not None:
            self._left -= got
        return got

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


class SourceRefused(OSError):
    """The key cannot be read under srcPrefix as the regular file that was listed (a FIFO now,
    a symbolic link on the way, a key that leaves the folder). The transfer records the text as
    the file's failure; nothing is read."""

    failure_code = "SOURCE_REFUSED"

    def __init__(self, text: str):
        super().__init__(None, text)

    def __str__(self) -> str:
        return self.strerror

    @classmethod
    def not_regular(cls, path: str, mode: int) -> "SourceRefused":
        return cls(f"{_shown(path)} is {_kind(mode)} now, not the regular file listed; nothing "
                   f"was read")


# openat2(2) (Linux 5.6) resolves a whole path under a directory in one call, refusing every
# symbolic link on the way. 437 on the architectures that share the generic syscall numbers;
# elsewhere (MIPS, Alpha) the openat walk is used rather than a number that means another call.
_SYS_OPENAT2 = 437
_OPENAT2_MACHINES = frozenset({"x86_64", "i386", "i686", "aarch64", "arm64", "armv7l", "armv8l",
                               "ppc64le", "ppc64", "s390x", "riscv64", "loongarch64"})
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
# O_PATH opens nothing (no read permission needed, no device or FIFO touched): enough to walk
# through a folder or to look at what a symbolic link leads to.
_PATH = getattr(os, "O_PATH", os.O_RDONLY | os.O_NONBLOCK)
_WALK = _PATH | os.O_DIRECTORY | _CLOEXEC
_READ_DIR = os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC
# O_NONBLOCK: a FIFO swapped in after the listing must not block open() until a writer comes.
_READ_FILE = os.O_RDONLY | os.O_NONBLOCK | _CLOEXEC
# How often the root descriptor is checked against srcPrefix's path: a share mounted (or
# remounted) there after the job started is then read, as a path-based open would.
ROOT_RECHECK_SECONDS = 1.0


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


class _Openat2:
    """openat2 with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS through libc's syscall()."""

    def __init__(self):
        prototype = ctypes.CFUNCTYPE(ctypes.c_long, ctypes.c_long, ctypes.c_int, ctypes.c_char_p,
                                     ctypes.c_void_p, ctypes.c_size_t, use_errno=True)
        self._syscall = prototype(("syscall", ctypes.CDLL(None, use_errno=True)))
        self._how = {}  # flags -> (_OpenHow, its address): read-only once made

    @classmethod
    def probe(cls, dir_fd: int) -> Optional["_Openat2"]:
        """The call when this kernel has it (and no seccomp filter refuses it), else None."""
        if not sys.platform.startswith("linux") or os.uname().machine not in _OPENAT2_MACHINES:
            return None
        try:
            call = cls()
            os.close(call(dir_fd, b".", _WALK))
        except (OSError, AttributeError):
            return None
        return call

    def __call__(self, dir_fd: int, path: bytes, flags: int) -> int:
        how = self._how.get(flags)
        if how is None:
            made = _OpenHow(flags, 0, _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS)
            how = self._how.setdefault(flags, (made, ctypes.addressof(made)))
        while True:
            fd = self._syscall(_SYS_OPENAT2, dir_fd, path, how[1], ctypes.sizeof(_OpenHow))
            if fd >= 0:
                return fd
            err = ctypes.get_errno()
            if err != errno.EINTR:
                raise OSError(err, os.strerror(err), os.fsdecode(path))


class _Folder:
    """The one folder a listing holds open to lstat its files, reopened when the listing moves
    to another folder: open descriptors stay at one however deep the tree is."""

    def __init__(self, source: "LocalSource"):
        self.source, self.rel, self.fd = source, None, -1

    def fd_for(self, rel_dir: str) -> int:
        if rel_dir != self.rel:
            self.close()
            self.fd = self.source._open_beneath(rel_dir, _WALK)
            self.rel = rel_dir
        return self.fd

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
        self.rel, self.fd = None, -1


def _close_all(fds: list) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


class LocalSource(Source):
    """Reads only under srcPrefix: every key is resolved from a descriptor of srcPrefix with no
    symbolic link followed on the way, so a folder swapped for a link after the listing leads
    nowhere. A link as the last component is followed only with isAllowSymbolicLink=true, and
    only when the descriptor it opens is a file under srcPrefix's real path."""

    kind = "local"
    features = Features()
    spill_after = SPILL_AFTER

    def __init__(self, prefix: str, allow_symlinks: bool = False):
        if not prefix or not os.path.isabs(prefix):
            raise SourceError(f"srcPrefix '{prefix}' is not an absolute directory: "
                              f"write it like /data/files/")
        self.root = prefix if prefix.endswith("/") else prefix + "/"
        self.allow_symlinks = allow_symlinks
        self._lock = threading.Lock()
        self._fds = []  # every root descriptor opened, closed with the source
        self._closer = weakref.finalize(self, _close_all, self._fds)
        self._root_fd, self._root_id, self._real_root = -1, None, ""
        self._root_checked = time.monotonic()
        self._open_root()
        self._openat2 = _Openat2.probe(self._root_fd)

    def _open_root(self) -> None:
        # srcPrefix itself may be reached through links (the operator's path); nothing below it.
        try:
            fd = os.open(self.root, _WALK)
        except (FileNotFoundError, NotADirectoryError):
            raise SourceError(f"srcPrefix '{self.root}' is not a directory: create it or fix "
                              f"srcPrefix") from None
        except OSError as exc:
            raise SourceError(f"srcPrefix '{self.root}' cannot be opened ({exc.strerror}); give "
                              f"the worker's user execute permission on it") from None
        self._fds.append(fd)
        st = os.fstat(fd)
        real = self._real_path(fd, self.root) or os.path.realpath(self.root)
        self._real_root = real if real.endswith("/") else real + "/"
        self._root_id = (st.st_dev, st.st_ino)
        self._root_fd = fd

    def _root(self) -> int:
        """The descriptor of srcPrefix, reopened when the path leads to another folder now."""
        now = time.monotonic()
        if now - self._root_checked < ROOT_RECHECK_SECONDS:
            return self._root_fd
        with self._lock:
            if now - self._root_checked >= ROOT_RECHECK_SECONDS:
                self._root_checked = now
                try:
                    st = os.stat(self.root)
                    if (st.st_dev, st.st_ino) != self._root_id:
                        # The old descriptor stays open: other threads may be resolving from it.
                        self._open_root()
                except (OSError, SourceError):
                    pass  # srcPrefix is gone for now: keep reading what was opened
        return self._root_fd

    def root_problem(self) -> Optional[str]:
        # An unmounted NAS, a removed folder: no file of the job can be read any more.
        if os.path.isdir(self.root):
            return None
        return (f"srcPrefix '{self.root}' is gone (an unmounted NAS or a removed folder?): mount it "
                f"again or fix srcPrefix")

    def close(self) -> None:
        self._closer()
        self._root_fd = -1  # its number may be reused: later calls fail with EBADF instead

    @classmethod
    def from_job(cls, job, sys_cfg=None):
        return cls(job.src_prefix, allow_symlinks=job.is_allow_symbolic_link)

    # ------------------------------------------------------------------ resolving keys

    def _path(self, key: str) -> str:
        return self.root + key

    def _inside(self, real: str) -> bool:
        return (real + "/").startswith(self._real_root)

    @staticmethod
    def _real_path(fd: int, path: str) -> Optional[str]:
        """Where an open descriptor really is: from /proc, or else the path resolved and checked
        to be the same file as the descriptor."""
        try:
            return os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass
        real = os.path.realpath(path)
        try:
            st, there = os.fstat(fd), os.stat(real)
        except OSError:
            return None
        return real if (st.st_dev, st.st_ino) == (there.st_dev, there.st_ino) else None

    def _open_beneath(self, rel: str, flags: int) -> int:
        """A descriptor of ``rel`` (a key or a folder, '' for srcPrefix) opened with ``flags``,
        reached from srcPrefix without following any symbolic link: ELOOP or ENOTDIR when one
        is on the way."""
        rel = rel.rstrip("/") or "."
        root = self._root()
        if "/" not in rel and rel != "..":  # one name: O_NOFOLLOW alone keeps it beneath
            return os.open(rel, flags | _NOFOLLOW, dir_fd=root)
        if self._openat2 is not None:
            return self._openat2(root, os.fsencode(rel), flags | _NOFOLLOW)
        *folders, last = rel.split("/")
        if ".." in folders or last == "..":
            raise SourceRefused(f"'{_shown(rel)}' leads out of {_shown(self.root)}")
        fd = root
        try:
            for name in folders:
                below = os.open(name, _WALK | _NOFOLLOW, dir_fd=fd)
                if fd != root:
                    os.close(fd)
                fd = below
            return os.open(last, flags | _NOFOLLOW, dir_fd=fd)
        finally:
            if fd != root:
                os.close(fd)

    def _obstacle(self, key: str) -> tuple:
        """(the first part of ``key`` that is not a plain folder on the way, its lstat), or
        ('', None). Only to say why a key could not be opened: nothing is read through it."""
        parts = key.split("/")
        for depth in range(1, len(parts) + 1):
            rel = "/".join(parts[:depth])
            try:
                st = os.stat(rel, dir_fd=self._root(), follow_symlinks=False)
            except OSError:
                return rel, None
            if depth == len(parts) or not stat_module.S_ISDIR(st.st_mode):
                return rel, st
        return "", None

    # ------------------------------------------------------------------ listing

    def _scan(self, rel_dir: str):
        """(sort key, is_dir) of a directory's children, in key order, in bounded memory."""
        path = _shown(self._path(rel_dir))
        try:
            fd = self._open_beneath(rel_dir, _READ_DIR)
        except FileNotFoundError:
            if rel_dir:
                return []  # removed since its parent was listed: nothing left to copy
            raise SourceError(f"srcPrefix directory {path} does not exist")
        except OSError as exc:
            if rel_dir and exc.errno in (errno.ENOTDIR, errno.ELOOP, errno.EXDEV):
                log.warning("folder %s was replaced while listed (%s): not followed, nothing "
                            "under it listed", path, exc.strerror)
                return []
            raise self._unlistable(path, exc) from exc
        try:
            return sorted_bounded(self._children(fd), self.spill_after)
        except OSError as exc:
            raise self._unlistable(path, exc) from exc
        finally:
            os.close(fd)

    def probe(self, timeout: float) -> None:
        """srcPrefix opens and lists: its first child is read, not the whole folder."""
        path = _shown(self.root)
        try:
            fd = self._open_beneath("", _READ_DIR)
        except OSError as exc:
            raise self._unlistable(path, exc) from exc
        children = self._children(fd)
        try:
            next(children, None)
        except OSError as exc:
            raise self._unlistable(path, exc) from exc
        finally:
            children.close()
            os.close(fd)

    @staticmethod
    def _unlistable(path: str, exc: OSError) -> SourceError:
        if isinstance(exc, PermissionError):
            return SourceError(f"cannot list directory {path}: permission denied "
                               f"({exc.strerror}); give the worker's user read and execute "
                               f"permission on it")
        return SourceError(f"cannot list directory {path}: {exc.strerror or exc}")

    @staticmethod
    def _children(fd: int):
        with os.scandir(fd) as it:
            for entry in it:
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                except OSError:
                    is_dir = False
                yield entry.name + "/" if is_dir else entry.name, is_dir

    def _unreadable(self, key: str, exc: OSError) -> ObjectEntry:
        # A failure, not a NOT_REGULAR_FILE skip: once the permission is fixed it is a file to copy.
        path = _shown(self._path(key))
        folder = path.rsplit("/", 1)[0] + "/"
        fix = (f"give the worker's user execute permission on {folder}"
               if exc.errno in (errno.EACCES, errno.EPERM) else "fix the name or the file system")
        return _refused(key, f"{SOURCE_NOT_READABLE}: cannot look at {path} "
                             f"({exc.strerror or exc}); {fix}")

    def _file_entry(self, key: str, dir_fd: int, name: str) -> Optional[ObjectEntry]:
        """The entry for a non-directory ``name`` in the folder ``dir_fd``: a file to copy, or one
        refused with what it is; None when it is gone."""
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None  # deleted since the directory was read: nothing to copy
        except OSError as exc:
            return self._unreadable(key, exc)
        if stat_module.S_ISREG(st.st_mode):
            return _entry(key, st)
        if stat_module.S_ISLNK(st.st_mode):
            return self._link_entry(key, dir_fd, name, st)
        return _refused(key, f"{NOT_REGULAR_FILE}: {_kind(st.st_mode)}", st)

    def _link_entry(self, key: str, dir_fd: int, name: str, link: os.stat_result) -> ObjectEntry:
        """A symbolic link: where it leads is looked at (O_PATH opens nothing), never read."""
        try:
            fd = os.open(name, _PATH | _CLOEXEC, dir_fd=dir_fd)
        except FileNotFoundError:
            try:
                to = os.readlink(name, dir_fd=dir_fd)
            except OSError:
                to = "?"
            return _refused(key, f"{NOT_REGULAR_FILE}: broken symbolic link (to {_shown(to)})", link)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return _refused(key, f"{NOT_REGULAR_FILE}: symbolic link loop", link)
            return self._unreadable(key, exc)
        try:
            target = os.fstat(fd)
            real = self._real_path(fd, self._path(key))
        finally:
            os.close(fd)
        if real is None or not self._inside(real):
            return _refused(key, f"{NOT_REGULAR_FILE}: symbolic link to outside srcPrefix "
                                 f"({_shown(real or 'unknown')})", link)
        if stat_module.S_ISDIR(target.st_mode):
            return _refused(key, f"{NOT_REGULAR_FILE}: symbolic link to a folder (never followed)", link)
        if not stat_module.S_ISREG(target.st_mode):
            return _refused(key, f"{NOT_REGULAR_FILE}: symbolic link to {_kind(target.st_mode)}", link)
        if not self.allow_symlinks:
            return _refused(key, f"{NOT_REGULAR_FILE}: symbolic link (isAllowSymbolicLink=false)", link)
        return _entry(key, target)

    def list(self, subtree: str = "", recursive: bool = True,
             start_after: Optional[str] = None) -> Iterator[ObjectEntry]:
        after = start_after or ""
        folder = _Folder(self)
        try:
            # A stack of sorted child iterators, one per open directory: depth first, streaming.
            stack = [(subtree, iter(self._scan(subtree)))]
            while stack:
                rel_dir, children = stack[-1]
                child = next(children, None)
                if child is None:
                    stack.pop()
                    continue
                sort_key, is_dir = child
                key = rel_dir + sort_key
                if is_dir:
                    # Every key under dir/ sorts before start_after when start_after is past dir/
                    # and not inside it.
                    if not recursive or (after > key and not after.startswith(key)):
                        continue
                    stack.append((key, iter(self._scan(key))))
                    continue
                if key <= after:
                    continue
                entry = self._listed_entry(folder, rel_dir, key, sort_key)
                if entry is not None:
                    yield entry
        finally:
            folder.close()

    def _listed_entry(self, folder: _Folder, rel_dir: str, key: str, name: str):
        try:
            dir_fd = folder.fd_for(rel_dir)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EXDEV):
                return None  # the folder went (or became a link) since it was read: not followed
            return self._unreadable(key, exc)
        return self._file_entry(key, dir_fd, name)

    def subtrees(self, subtree: str = "") -> list:
        return [subtree + sort_key for sort_key, is_dir in self._scan(subtree) if is_dir]

    # ------------------------------------------------------------------ one key

    def stat(self, key: str) -> Optional[ObjectEntry]:
        """The entry as the listing would give it now (refused when it is no regular file), or
        None when there is nothing at ``key``."""
        problem = key_problem(key)
        if problem:
            return _refused(key, f"{INVALID_KEY}: key '{_shown(key)}' {problem}; keys are plain paths "
                                 f"relative to srcPrefix")
        folder, _, name = key.rpartition("/")
        try:
            dir_fd = self._open_beneath(folder, _WALK)
        except OSError as exc:
            return self._unreachable(key, exc)
        try:
            return self._file_entry(key, dir_fd, name)
        finally:
            os.close(dir_fd)

    def _unreachable(self, key: str, exc: OSError) -> Optional[ObjectEntry]:
        """What stat says for a key whose folder could not be opened."""
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR, errno.EXDEV):
            return None if isinstance(exc, FileNotFoundError) else self._unreadable(key, exc)
        rel, st = self._obstacle(key)
        if st is not None and stat_module.S_ISLNK(st.st_mode):
            return _refused(key, f"{NOT_REGULAR_FILE}: folder {_shown(self._path(rel))}/ on the way is a "
                                 f"symbolic link (never followed)", st)
        return None  # a file where a folder should be: no such key

    def open(self, entry: ObjectEntry, offset: int = 0, length: Optional[int] = None):
        """Raises FileNotFoundError when the file is gone, SourceRefused when what is there now
        must not be read (a FIFO, a link the job does not follow)."""
        fd = self._open_file(entry.key)
        return LimitedReader(io.FileIO(fd, "rb", closefd=True), offset, length)

    def _open_file(self, key: str) -> int:
        problem = key_problem(key)
        if problem:
            raise SourceRefused(f"key '{_shown(key)}' {problem}: not a plain path under "
                                f"{_shown(self.root)}")
        try:
            fd = self._open_beneath(key, _READ_FILE)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR, errno.EXDEV, errno.ENXIO):
                raise
            fd = self._open_past(key, exc)
        try:
            st = os.fstat(fd)
            if not stat_module.S_ISREG(st.st_mode):
                raise SourceRefused.not_regular(self._path(key), st.st_mode)
            os.set_blocking(fd, True)  # regular files ignore O_NONBLOCK; reads must not see it
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _open_past(self, key: str, exc: OSError) -> int:
        """After a refused resolution: the descriptor through an allowed last link (checked to
        be under srcPrefix), or the error that says what is in the way."""
        rel, st = self._obstacle(key)
        path = _shown(self._path(rel))
        if st is None or not stat_module.S_ISLNK(st.st_mode):
            if st is not None and rel == key:
                raise SourceRefused.not_regular(self._path(key), st.st_mode)
            if st is not None and not stat_module.S_ISDIR(st.st_mode):
                raise FileNotFoundError(errno.ENOENT, f"{path} is a file, not a folder", path)
            raise exc
        if rel != key:
            raise SourceRefused(f"folder {path}/ is a symbolic link now (never followed); "
                                f"nothing under it was read")
        if not self.allow_symlinks:
            raise SourceRefused(f"{path} is a symbolic link now (isAllowSymbolicLink=false); "
                                f"nothing was read")
        folder, _, name = key.rpartition("/")
        dir_fd = self._open_beneath(folder, _WALK)
        try:
            # O_PATH follows the link and opens nothing: a device or FIFO it leads to (anywhere)
            # is looked at, never opened, until it is known to be a file under srcPrefix.
            target_fd = os.open(name, _PATH | _CLOEXEC, dir_fd=dir_fd)
            try:
                real = self._real_path(target_fd, self._path(key))
                if real is None or not self._inside(real):
                    raise SourceRefused(f"{path} is a symbolic link to outside srcPrefix "
                                        f"({_shown(real or 'unknown')}); nothing was read")
                target = os.fstat(target_fd)
                if not stat_module.S_ISREG(target.st_mode):
                    raise SourceRefused.not_regular(self._path(key), target.st_mode)
                return self._reopen(target_fd, target, dir_fd, name, path)
            finally:
                os.close(target_fd)
        finally:
            os.close(dir_fd)

    @staticmethod
    def _reopen(target_fd: int, target: os.stat_result, dir_fd: int, name: str, shown: str) -> int:
        """``target_fd`` (checked, maybe O_PATH) opened for reading: through /proc, which reaches
        the very same file, or else by name again, checked to be the same file."""
        try:
            return os.open(f"/proc/self/fd/{target_fd}", _READ_FILE)
        except OSError:
            pass
        fd = os.open(name, _READ_FILE, dir_fd=dir_fd)
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (target.st_dev, target.st_ino):
            os.close(fd)
            raise SourceRefused(f"{shown} changed while it was opened; nothing was read")
        return fd


UPLOADS_DIR = ".ossimport-uploads"
TEMP_DIR = "tmp"
CRC_XATTR = "user.ossimport.crc64"
# A write in progress touches its temporary file every chunk; one left this long is a crash's.
STALE_TEMP_SECONDS = 6 * 3600
# A multipart upload a stopped job may still resume; after a week it is abandoned.
STALE_UPLOAD_SECONDS = 7 * 24 * 3600
_COPY_CHUNK = 1024 * 1024


def _file_crc64(path: str) -> int:
    crc = 0
    with open(path, "rb") as handle:
        while True:
            data = handle.read(_COPY_CHUNK)
            if not data:
                return crc
            crc = crc64_module.crc64(data, crc)


def _header_mtime(headers: Optional[dict]) -> Optional[float]:
    for name, value in (headers or {}).items():
        if name.lower() == MTIME_HEADER:
            try:
                return float(value)
            except (TypeError, ValueError):
                return None
    return None


class LocalDestination(Destination):
    kind = "local"
    features = Features(has_crc64=True, multipart=True, preserves_mtime=True)

    def __init__(self, root: str, prefix: str = "", fsync: bool = True):
        path = root[len("file://"):] if root.startswith("file://") else root
        if not path or not os.path.isabs(path):
            raise DestinationError(f"destDomain '{root}' is not an absolute directory: for "
                                   f"destType=local write it like /data/copy/")
        if not os.path.isdir(path):
            raise DestinationError(f"destDomain '{root}' is not a directory: create it or fix "
                                   f"destDomain")
        self.root = os.path.realpath(path)
        self.prefix = prefix or ""
        self.fsync = fsync
        self.uploads = os.path.join(self.root, UPLOADS_DIR)
        self.temps = os.path.join(self.uploads, TEMP_DIR)
        self._xattrs = hasattr(os, "setxattr")
        try:
            os.makedirs(self.temps, exist_ok=True)
            self._temps_dev = os.stat(self.temps).st_dev
        except OSError as exc:
            raise DestinationError(f"destDomain '{root}': cannot create {self.temps} "
                                   f"({exc.strerror}); make the folder writable") from None
        self.sweep()

    def sweep(self, now: Optional[float] = None) -> int:
        """Removes what crashed writers left: stale temporary files and abandoned uploads."""
        now = time.time() if now is None else now
        removed = 0
        for folder, age, is_upload in ((self.temps, STALE_TEMP_SECONDS, False),
                                       (self.uploads, STALE_UPLOAD_SECONDS, True)):
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue
            for dirent in entries:
                if is_upload and (dirent.name == TEMP_DIR or not dirent.name.isalnum()):
                    continue
                try:
                    if now - dirent.stat(follow_symlinks=False).st_mtime < age:
                        continue
                    if is_upload:
                        shutil.rmtree(dirent.path)
                    else:
                        os.unlink(dirent.path)
                    removed += 1
                except OSError:
                    continue
        if removed:
            log.info("destination %s: removed %d temporary file(s) or upload(s) left by a crash",
                     self.root, removed)
        return removed

    @classmethod
    def from_job(cls, job, sys_cfg=None):
        return cls(job.dest_domain, job.dest_prefix)

    def probe(self, timeout: float) -> None:
        """The folder is writable by this user, asked of the system (os.access), not by a write."""
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise DestinationError(f"destDomain '{self.root}' is not writable by this user: give it "
                                   f"write and execute permission on the folder, or fix destDomain")

    # ------------------------------------------------------------------ where a key goes

    def _path(self, key: str) -> str:
        """The absolute path of ``destPrefix + key``, refusing anything that escapes the root."""
        full = self.prefix + key
        segments = full.split("/")
        if full.endswith("/"):
            segments = segments[:-1]  # "dir/": a folder marker object
        bad = (not key or "\x00" in full or full.startswith("/")
               or any(seg in ("", ".", "..") for seg in segments)
               or segments[0] == UPLOADS_DIR)
        if bad:
            raise DestinationError(f"refusing key '{key}' for destType=local: destPrefix + key "
                                   f"'{full}' is not a plain relative path under {self.root} "
                                   f"(no '..', '.', empty or absolute segments, NUL, or "
                                   f"{UPLOADS_DIR}); rename the source object or fix destPrefix")
        return os.path.join(self.root, *segments)

    def _inside(self, key: str, directory: str) -> None:
        real = os.path.realpath(directory)
        if real != self.root and not real.startswith(self.root + os.sep):
            raise DestinationError(f"refusing key '{key}' for destType=local: its folder "
                                   f"{directory} leads to {real}, outside {self.root} through "
                                   f"a symbolic link; remove the link")

    def _parent(self, key: str, path: str) -> str:
        """Creates the key's folder after checking that no symlink leads it outside the root."""
        parent = os.path.dirname(path)
        # Check before creating too: makedirs must not create folders outside through a link.
        probe = parent
        while not os.path.lexists(probe):
            probe = os.path.dirname(probe)
        self._inside(key, probe)
        os.makedirs(parent, exist_ok=True)
        self._inside(key, parent)
        return parent

    def _temp(self, directory: str, name: str) -> str:
        """A temporary file's path: in the one temp folder, unless ``directory`` is on another
        file system (a mount inside the root), where os.replace could not move it."""
        try:
            same_fs = os.stat(directory).st_dev == self._temps_dev
        except OSError:
            same_fs = False
        return os.path.join(self.temps if same_fs else directory,
                            f".{name[:100]}.{uuid.uuid4().hex}.tmp")

    def _remember_crc(self, tmp: str, crc: int) -> None:
        if not self._xattrs:
            return
        st = os.stat(tmp)
        try:
            os.setxattr(tmp, CRC_XATTR, f"{crc} {st.st_size} {st.st_mtime_ns}".encode("ascii"))
        except OSError:
            self._xattrs = False  # this file system keeps no user xattrs: head reads files

    def _stored_crc(self, path: str, st: os.stat_result) -> Optional[int]:
        if not self._xattrs:
            return None
        try:
            crc, size, mtime_ns = os.getxattr(path, CRC_XATTR).decode("ascii").split()
            if int(size) == st.st_size and int(mtime_ns) == st.st_mtime_ns:
                return int(crc)
        except (OSError, ValueError, UnicodeDecodeError):
            pass
        return None

    def _commit(self, key: str, tmp: str, path: str, mtime: Optional[float], crc: int) -> None:
        try:
            if mtime is not None:
                os.utime(tmp, (mtime, mtime))
            self._remember_crc(tmp, crc)
            if os.path.isdir(path) and not os.path.islink(path):
                raise RequestFailed(409, "FileIsFolder", f"{path} is a folder", retryable=False,
                                    operation="PUT", key=key)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise

    def _write(self, key: str, chunks, mtime: Optional[float]) -> PutResult:
        """Writes ``chunks`` (an iterable of bytes) to the key's file atomically."""
        path = self._path(key)
        parent = self._parent(key, path)
        if key.endswith("/"):
            os.makedirs(path, exist_ok=True)
            self._inside(key, path)
            if mtime is not None:
                os.utime(path, (mtime, mtime))
            return PutResult(crc64=0)
        tmp = self._temp(parent, os.path.basename(path))
        crc = 0
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0),
                     0o666)
        try:
            with io.FileIO(fd, "wb", closefd=True) as out:
                for data in chunks:
                    crc = crc64_module.crc64(data, crc)
                    view = memoryview(data)
                    while view:
                        view = view[out.write(view):]
                if self.fsync:
                    os.fsync(out.fileno())
        except BaseException:
            os.unlink(tmp)
            raise
        self._commit(key, tmp, path, mtime, crc)
        return PutResult(crc64=crc)

    # ------------------------------------------------------------------ the interface

    def head(self, key: str) -> Optional[ObjectEntry]:
        path = self._path(key)
        self._inside(key, path)  # a link (folder or file) leading outside is never read
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if stat_module.S_ISDIR(st.st_mode):
            if not key.endswith("/"):
                return None
            return ObjectEntry(key=key, size=0, mtime=st.st_mtime, crc64=0)
        if not stat_module.S_ISREG(st.st_mode) or key.endswith("/"):
            return None
        crc = self._stored_crc(path, st)
        return ObjectEntry(key=key, size=st.st_size, mtime=st.st_mtime,
                           crc64=_file_crc64(path) if crc is None else crc)

    def put(self, key: str, data: bytes, headers: Optional[dict] = None) -> PutResult:
        return self._write(key, (data,), _header_mtime(headers))

    def _upload_dir(self, key: str, upload_id: str) -> str:
        """The upload's folder; NoSuchUpload when it is gone or belongs to another key."""
        if not upload_id or not upload_id.isalnum():
            raise RequestFailed(404, "NoSuchUpload", f"bad upload id '{upload_id}'",
                                retryable=False, operation="UploadPart", key=key)
        folder = os.path.join(self.uploads, upload_id)
        try:
            with open(os.path.join(folder, "upload.json"), encoding="utf-8") as handle:
                doc = json.load(handle)
        except (FileNotFoundError, NotADirectoryError, ValueError):
            raise RequestFailed(404, "NoSuchUpload", f"no upload {upload_id}", retryable=False,
                                key=key) from None
        if doc.get("key") != self.prefix + key:
            raise RequestFailed(404, "NoSuchUpload", f"upload {upload_id} is for another key",
                                retryable=False, key=key)
        return folder

    def init_multipart(self, key: str, headers: Optional[dict] = None) -> str:
        self._path(key)
        upload_id = uuid.uuid4().hex
        folder = os.path.join(self.uploads, upload_id)
        os.makedirs(folder)
        doc = {"key": self.prefix + key, "mtime": _header_mtime(headers)}
        with open(os.path.join(folder, "upload.json"), "w", encoding="utf-8") as out:
            json.dump(doc, out)
        return upload_id

    @staticmethod
    def _parts(folder: str) -> dict:
        """{number: (size, etag, file name)} of the parts in an upload folder."""
        parts = {}
        with os.scandir(folder) as it:
            for dirent in it:
                stem, _, ext = dirent.name.partition(".")
                number, _, etag = stem.partition("-")
                if ext == "part" and number.isdigit() and etag:
                    parts[int(number)] = (dirent.stat().st_size, etag, dirent.name)
        return parts

    def upload_part(self, key: str, upload_id: str, part_number: int, data: bytes) -> PutResult:
        folder = self._upload_dir(key, upload_id)
        crc = crc64_module.crc64(data)
        # The etag is the part's CRC64, so list_parts knows it without reading the part again.
        etag = f"{crc:016x}"
        old = self._parts(folder).get(part_number)
        tmp = self._temp(folder, str(part_number))
        with open(tmp, "wb") as out:
            out.write(data)
            if self.fsync:
                os.fsync(out.fileno())
        name = f"{part_number:05d}-{etag}.part"
        os.replace(tmp, os.path.join(folder, name))
        if old is not None and old[2] != name:
            try:
                os.unlink(os.path.join(folder, old[2]))
            except FileNotFoundError:
                pass
        return PutResult(crc64=crc, etag=etag)

    def list_parts(self, key: str, upload_id: str) -> Optional[dict]:
        try:
            folder = self._upload_dir(key, upload_id)
        except RequestFailed:
            return None
        return {n: (size, etag) for n, (size, etag, _) in self._parts(folder).items()}

    def complete_multipart(self, key: str, upload_id: str, parts: list) -> PutResult:
        folder = self._upload_dir(key, upload_id)
        with open(os.path.join(folder, "upload.json"), encoding="utf-8") as handle:
            mtime = json.load(handle).get("mtime")
        have = self._parts(folder)
        names = []
        for number, etag in parts:
            part = have.get(number)
            if part is None or part[1] != etag:
                raise RequestFailed(400, "InvalidPart", f"part {number} with etag {etag} was not "
                                    f"uploaded", retryable=False, operation="CompleteMultipart",
                                    key=key)
            names.append(os.path.join(folder, part[2]))

        def chunks():
            for name in names:
                with open(name, "rb") as handle:
                    while True:
                        data = handle.read(_COPY_CHUNK)
                        if not data:
                            break
                        yield data

        result = self._write(key, chunks(), mtime)
        shutil.rmtree(folder, ignore_errors=True)
        return result

    def abort_multipart(self, key: str, upload_id: str) -> None:
        try:
            folder = self._upload_dir(key, upload_id)
        except RequestFailed:
            return
        shutil.rmtree(folder, ignore_errors=True)
