"""A local directory as a source (srcType=local) and as a destination (destType=local).

Listing streams directory by directory, depth first, each directory's children sorted by
``name + '/'`` for directories and ``name`` for files: that is exactly the code-point order of
the full relative keys, so ``start_after`` works like an OSS marker and whole directories
already listed are skipped without being read.

File names that are not valid UTF-8 come back from ``os.scandir`` as surrogate-escaped str
(``os.fsdecode``); passing the same str back to ``open``/``stat`` reaches the same file.

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

import errno
import io
import json
import logging
import os
import shutil
import stat as stat_module
import time
import uuid
from typing import Callable, Iterator, Optional

from .. import crc64 as crc64_module
from ..errors import DestinationError, SourceError
from ..models import ObjectEntry
from .base import (MTIME_HEADER, SPILL_AFTER, BoundedReader, Destination, Features, PutResult, Source,
                   sorted_bounded)
from .errors import RequestFailed

log = logging.getLogger(__name__)


def _entry(key: str, st: os.stat_result) -> ObjectEntry:
    # The change token (inode and ctime) tells an incremental rescan that a file was replaced
    # even when the copy kept the old size and mtime (cp -p): no copy can keep its ctime.
    return ObjectEntry(key=key, size=st.st_size, mtime=st.st_mtime, etag=f"i{st.st_ino:x}c{st.st_ctime_ns:x}")


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
    spill_after = SPILL_AFTER

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

    def _scan(self, rel_dir: str):
        """(sort key, is_dir) of a directory's children, in key order, in bounded memory."""
        path = self._path(rel_dir)
        try:
            return sorted_bounded(self._children(path), self.spill_after)
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

    @staticmethod
    def _children(path: str):
        with os.scandir(path) as it:
            for entry in it:
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                except OSError:
                    is_dir = False
                yield entry.name + "/" if is_dir else entry.name, is_dir

    def _file_entry(self, key: str) -> Optional[ObjectEntry]:
        """The entry for a non-directory child, or None after reporting why it is skipped."""
        path = self._path(key)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None  # deleted since the directory was read: nothing to copy
        except OSError as exc:
            self.on_skip(key, f"cannot stat: {exc.strerror or exc}")
            return None
        if stat_module.S_ISLNK(st.st_mode):
            try:
                target = os.stat(path)
            except OSError:
                target = None
            if target is not None and stat_module.S_ISDIR(target.st_mode):
                self.on_skip(key, "symbolic link to a directory (never followed)")
                return None
            if not self.allow_symlinks:
                self.on_skip(key, "symbolic link (isAllowSymbolicLink=false)")
                return None
            if target is None:
                self.on_skip(key, "broken symbolic link")
                return None
            st = target
        if not stat_module.S_ISREG(st.st_mode):
            self.on_skip(key, "not a regular file (device, socket or pipe)")
            return None
        return _entry(key, st)

    def list(self, subtree: str = "", recursive: bool = True,
             start_after: Optional[str] = None) -> Iterator[ObjectEntry]:
        after = start_after or ""
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
            entry = self._file_entry(key)
            if entry is not None:
                yield entry

    def subtrees(self, subtree: str = "") -> list:
        return [subtree + sort_key for sort_key, is_dir in self._scan(subtree) if is_dir]

    def stat(self, key: str) -> Optional[ObjectEntry]:
        try:
            st = os.stat(self._path(key))
        except (FileNotFoundError, NotADirectoryError):
            return None
        return _entry(key, st)

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
    features = Features(has_crc64=True, multipart=True)
    preserves_mtime = True  # the transfer sends the source's mtime in MTIME_HEADER

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
    def from_job(cls, job):
        return cls(job.dest_domain, job.dest_prefix)

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
