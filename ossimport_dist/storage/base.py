"""The storage-driver boundary: one small interface for every source and destination.

Copy logic (scanner, transfer) never asks "which backend is this?"; it asks a driver to list,
read, stat or write, and looks at ``Features`` for optional capabilities. Adding a source type is
one new module here and one line in ``storage/__init__.py``'s registry.

Keys are always relative to the job's prefix (``srcPrefix`` / ``destPrefix``): the driver joins
them with its own prefix. Listing order is lexicographic by key (code-point order, which is
UTF-8 byte order), so ``start_after`` resumes a listing exactly, like an OSS marker.
"""

from __future__ import annotations

import hashlib
import heapq
import io
import json
import os
import shutil
import tempfile
import weakref
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterable, Iterator, Optional

from ..models import ObjectEntry


class SourceStream:
    """What the transfer may ask of a stream ``Source.open`` returns, beyond reading it.
    Readers mix this in and override what they can tell."""

    # Object headers the source holds (Content-Type, Cache-Control, user metadata), copied to
    # the destination object; None when the source has none to give.
    headers: Optional[dict] = None
    # stat_now() -> (size, mtime) of the object being read, at this moment, so a file that
    # changed while it was read is caught. None: the stream cannot tell (the listing's snapshot
    # is all there is).
    stat_now: Optional[Callable[[], tuple]] = None

    def readinto(self, buffer) -> int:
        # The readers implement read(); io.RawIOBase's buffered users call readinto.
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


class BoundedReader(SourceStream, io.RawIOBase):
    """A stream that yields at most ``length`` bytes (all, when None) after dropping the first
    ``skip`` (a server that ignored a Range sent the whole object). Drivers give ``_raw(n)``:
    at most n bytes of the underlying body, b"" at its end."""

    READ_ALL_CHUNK = 1 << 20

    def __init__(self, length: Optional[int] = None, skip: int = 0):
        super().__init__()
        self._left, self._skip = length, skip

    def _raw(self, size: int) -> bytes:
        raise NotImplementedError

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while self._skip:
            dropped = self._raw(min(self._skip, self.READ_ALL_CHUNK))
            if not dropped:
                return b""
            self._skip -= len(dropped)
        if self._left is not None:
            if size is None or size < 0 or size > self._left:
                size = self._left
            if size == 0:
                return b""
        if size is None or size < 0:
            chunks = []
            while True:
                piece = self._raw(self.READ_ALL_CHUNK)
                if not piece:
                    break
                chunks.append(piece)
            data = b"".join(chunks)
        else:
            data = self._raw(size)
        if self._left is not None:
            self._left -= len(data)
        return data


def once_per_key(lines: Callable[[], Iterator[tuple]], parse: Callable[[int, str], tuple],
                 duplicate: Callable[[int, str, int], Exception]) -> Iterator[tuple]:
    """(line number, *parse(number, text)) for a list file whose first parsed field is a key that
    may appear once (each key is a destination object). ``lines()`` yields (number, text) afresh on
    each call; ``duplicate(number, key, first)`` makes the error raised for a repeated key.

    The whole file is checked before the first line is given: an 8-byte digest of each key,
    with its line number, sorted in bounded memory (``sorted_bounded``), so equal keys meet as
    neighbours whatever the file's size, and a repeated key is refused before any task is cut.
    A digest hit is confirmed by re-reading both lines."""
    def digest(key: str) -> int:
        # surrogatepass: a JSON-quoted key may hold any lone surrogate, not only escaped bytes.
        return int.from_bytes(hashlib.blake2b(key.encode("utf-8", "surrogatepass"),
                                              digest_size=8).digest(), "big")

    def key_at(line: int) -> Optional[str]:
        for number, text in lines():
            if number == line:
                return parse(number, text)[0]
            if number > line:
                break
        return None

    def checked() -> Iterator[tuple]:
        before = None
        for d, number in sorted_bounded((digest(parse(n, t)[0]), n) for n, t in lines()):
            if before is not None and before[0] == d:
                key = key_at(number)
                if key_at(before[1]) == key:
                    raise duplicate(number, key, before[1])
            before = (d, number)
        for number, text in lines():
            yield (number, *parse(number, text))

    return checked()


# A destination that keeps files' modification times (preserves_mtime) reads it from this
# header on put/init_multipart; stores that keep their own Last-Modified never receive it.
MTIME_HEADER = "x-ossimport-mtime"


# Lines of a list file (manifest, URL list) a probe parses before the first copy.
PROBE_LINES = 10

# A key no job writes: the default destination probe HEADs it under destPrefix.
PROBE_KEY = ".ossimport-preflight-probe"


# Children of one folder a source holds in memory (about 100 bytes each) before sorting spills
# to disk.
SPILL_AFTER = 100_000


def sorted_bounded(items: Iterable[tuple], limit: int = SPILL_AFTER):
    """``items`` (distinct tuples of JSON-able values) in order, holding at
    most ``limit`` of them in memory: beyond that, sorted runs go to a temporary folder and are
    merged as they are read. Reads ``items`` to the end before returning, so errors of the
    listing behind them surface here. Sources list one folder at a time this way, and a flat
    folder of ten million files lists in bounded memory."""
    chunk, runs = [], None
    for item in items:
        chunk.append(item)
        if len(chunk) >= limit:
            runs = runs or _SortedRuns()
            runs.add(chunk)
            chunk = []
    if runs is None:
        chunk.sort()
        return chunk
    runs.add(chunk)
    return runs.merged()


class _SortedRuns:
    """Sorted runs, one JSON array per line (JSON keeps any str, lone surrogates of undecodable
    file names included), in a temporary folder that goes with the listing."""

    def __init__(self):
        self.folder = tempfile.mkdtemp(prefix="ossimport-scan-")
        self.paths = []
        # The folder goes when the listing is dropped, read to the end or not.
        self._cleanup = weakref.finalize(self, shutil.rmtree, self.folder, True)

    def add(self, chunk: list) -> None:
        chunk.sort()
        path = os.path.join(self.folder, f"{len(self.paths):06d}.run")
        with open(path, "w", encoding="ascii") as out:
            out.writelines(json.dumps(item) + "\n" for item in chunk)
        self.paths.append(path)

    @staticmethod
    def _read(path: str):
        with open(path, "r", encoding="ascii") as f:
            for line in f:
                yield tuple(json.loads(line))

    def merged(self):
        try:
            yield from heapq.merge(*(self._read(p) for p in self.paths))
        finally:
            self._cleanup()


@dataclass(frozen=True)
class Features:
    """Optional capabilities of a driver, as data."""

    has_crc64: bool = False  # stat()/head() can report the CRC64 of an object
    has_md5: bool = False  # stat()/head() can report an MD5 (not an opaque multipart ETag)
    # Source kinds a destination copies from without the bytes passing through us; its
    # can_copy_from() decides for one source (the same endpoint, say).
    server_side_copy_from: tuple = ()
    multipart: bool = False
    # subtrees() names the folders under a prefix, so a scan can be split into one unit per
    # folder. A list file (manifest, URL list) is one stream in file order: it has no folders.
    lists_by_folder: bool = True
    # A source whose list() gives size 0 / mtime 0 (an http URL list): the transfer learns the
    # size from stat() (HEAD) or the download before deciding single PUT or multipart.
    sizes_known: bool = True
    # A destination that keeps the source's mtime: the transfer sends it in MTIME_HEADER.
    preserves_mtime: bool = False
    # The smallest part but the last a destination accepts (S3: 5 MiB); 0 when any size does.
    min_part_size: int = 0
    # A destination whose list_page() reports each object's size and mtime: the audit after an
    # import reads one listing per 1,000 objects instead of a HEAD per object.
    lists_objects: bool = False


@dataclass
class PutResult:
    """What the destination reports for a written object or part."""

    crc64: Optional[int] = None  # x-oss-hash-crc64ecma, when the store computes it
    etag: Optional[str] = None
    # The store confirmed it holds exactly the bytes sent (S3: the ETag is their MD5), so a
    # store without CRC64 needs no HEAD to check the write.
    bytes_confirmed: bool = False


class Source:
    """A place objects are read from."""

    kind = "abstract"
    features = Features()

    @classmethod
    def from_job(cls, job, sys_cfg=None) -> "Source":
        """The driver for a job (JobConfig: the srcXxx keys it needs). ``sys_cfg`` (SysConfig)
        when it will run the job's tasks: a driver with a connection pool sizes it to
        workerTaskThreadNum. Keys are checked by the kind's rules (rules.py) before this."""
        raise NotImplementedError

    def list(self, subtree: str = "", recursive: bool = True,
             start_after: Optional[str] = None) -> Iterator[ObjectEntry]:
        """Yield objects under ``subtree`` (a relative key prefix ending in '/', or '') in key order.

        ``recursive=False`` yields only the objects directly in ``subtree``. Objects with
        key <= ``start_after`` are not yielded. Must stream: never hold the whole listing.
        """
        raise NotImplementedError

    def subtrees(self, subtree: str = "") -> list:
        """The immediate 'directories' under ``subtree`` (each ending in '/'), sorted."""
        raise NotImplementedError

    def stat(self, key: str) -> Optional[ObjectEntry]:
        """The object's current size and mtime, or None when it no longer exists."""
        raise NotImplementedError

    def open(self, entry: ObjectEntry, offset: int = 0, length: Optional[int] = None) -> BinaryIO:
        """A readable binary stream of ``length`` bytes (all when None) from ``offset``: a
        ``SourceStream``."""
        raise NotImplementedError

    def task_boundary(self, prev: ObjectEntry, entry: ObjectEntry) -> bool:
        """True when a task must end between ``prev`` and ``entry`` though it is not full (an
        http list is cut where the host changes); the default cuts only by size and count."""
        return False

    def probe(self, timeout: float) -> None:
        """The cheapest real read that proves the job can list this source: raises SourceError
        (one line with the fix) or RequestFailed; never writes. Requests wait at most
        ``timeout`` seconds for a connection or an answer, and are not retried here.

        This default reads the first entry of the listing; drivers override it with one
        request when they have one (a LIST of one key)."""
        next(iter(self.list()), None)

    def root_problem(self) -> Optional[str]:
        """What is wrong with the whole source when a file is missing from it (its folder gone),
        or None: a missing file is then that file's problem alone."""
        return None

    def close(self) -> None:
        pass


class Destination:
    """A place objects are written to. Must be safe to call from many threads at once."""

    kind = "abstract"
    features = Features()

    @classmethod
    def from_job(cls, job, sys_cfg=None) -> "Destination":
        """The driver for a job's destXxx keys; ``sys_cfg`` as in ``Source.from_job``."""
        raise NotImplementedError

    def head(self, key: str) -> Optional[ObjectEntry]:
        """Size, mtime (and CRC64/MD5 when known) of the destination object, or None."""
        raise NotImplementedError

    def put(self, key: str, data: bytes, headers: Optional[dict] = None) -> PutResult:
        """Write a whole object in one request."""
        raise NotImplementedError

    def list_page(self, prefix: str, start_after: str = "", max_keys: int = 1000) -> tuple:
        """One page of the objects whose keys (relative, as ``put`` takes them) start with
        ``prefix`` and sort after ``start_after``, in the store's key order: (entries, more).
        Entries carry size, mtime and etag as the listing reports them. Only for a destination
        with ``features.lists_objects``."""
        raise NotImplementedError

    # Multipart: used for objects at or above multipartUploadThreshold.
    def init_multipart(self, key: str, headers: Optional[dict] = None) -> str:
        raise NotImplementedError

    def upload_part(self, key: str, upload_id: str, part_number: int, data: bytes) -> PutResult:
        raise NotImplementedError

    def list_parts(self, key: str, upload_id: str) -> Optional[dict]:
        """{part_number: (size, etag)} already uploaded, or None when the upload is gone."""
        raise NotImplementedError

    def complete_multipart(self, key: str, upload_id: str, parts: list) -> PutResult:
        """``parts`` is [(part_number, etag), ...] in order."""
        raise NotImplementedError

    def abort_multipart(self, key: str, upload_id: str) -> None:
        raise NotImplementedError

    # Server-side copy: the store copies from ``source`` itself, the bytes never pass through us.
    def can_copy_from(self, source: Source) -> bool:
        return False

    def copy_from(self, source: Source, entry: ObjectEntry, part_size: int,
                  headers: Optional[dict] = None) -> PutResult:
        raise NotImplementedError

    def probe(self, timeout: float) -> None:
        """A read that needs the destination's keys and writes nothing, proving the store, the
        bucket and the keys work: raises DestinationError (one line with the fix) or
        RequestFailed. ``timeout`` bounds each request's connect and read, as in Source.probe.

        This default HEADs a key no job writes; drivers override it with a cheaper or surer read."""
        self.head(PROBE_KEY)

    def close(self) -> None:
        pass
