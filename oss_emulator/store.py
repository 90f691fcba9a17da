"""On-disk storage for the OSS emulator.

Layout under the data dir::

    <bucket>/bucket.json                 bucket attributes
    <bucket>/journal.log                 object metadata: one JSON line per write or delete
    <bucket>/obj/<hh>/<hash>.<ver>.data  object bytes; <ver> changes on every write
    <bucket>/mpu/<upload-id>/upload.json multipart upload in progress
    <bucket>/mpu/<upload-id>/<n>.<ver>.data / <n>.json   its parts
    <bucket>/tmp/                        partially received bodies

Keys never become path components (they may contain anything, including
``..``), so files are named after a hash of the key. A write becomes visible
only when its line is appended to the bucket's journal, in one write(); the
data file it points to is already complete by then, so a killed emulator never
serves half an object (a torn last line is a write that never happened). A
PutObject body is written straight into its final, versioned data file, other
bodies go through ``tmp/``; data files no line refers to are swept at startup.
A journal, not a metadata file per object: on ext4 creating a file (finding a
free inode) cost more CPU than all the rest of a small PUT. At startup the
journal is replayed and rewritten with one line per live object; ``.meta``
files of data directories written before the journal are read first, then
folded into it. Metadata of every object is also held in memory (with a sorted
key list per bucket) so HEAD and listing do not touch the disk.

Nothing is fsynced unless the store is opened with ``fsync=True``: a killed
emulator loses nothing committed (the page cache survives a process), only a
power cut can.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import json
import os
import shutil
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Dict, Iterator, List, Optional, Tuple

from ossimport_dist import crc64 as _crc64

crc64_update = _crc64.crc64  # the client's own, fast implementation: same CRC-64/XZ

MIN_PART_SIZE = 100 * 1024
IO_CHUNK = 1024 * 1024
# Folders of ours beside the buckets in the data directory, never bucket names (OSS forbids dots first).
_STAGING_PREFIX = ".staging-"
_TRASH_PREFIX = ".trash-"


class StoreError(Exception):
    """An OSS error detected by the store; mapped to an XML error by the server."""

    def __init__(self, code: str, message: str, status: int, headers: Optional[dict] = None,
                 details: Optional[Dict[str, str]] = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.headers = headers or {}
        self.details = details or {}  # extra <Error> elements (S3 sends e.g. StringToSign)


def write_new_file(path: str, data: bytes, fsync: bool = False) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:  # a metadata file is a few hundred bytes: one write
            view = view[os.write(fd, view):]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def _json_bytes(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(',', ':')).encode('utf-8')


def _journal_line(record: dict) -> bytes:
    return _json_bytes(record) + b'\n'  # JSON escapes newlines inside strings: one line a record


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode('utf-8', 'surrogatepass')).hexdigest()[:40]


@dataclass
class ObjectMeta:
    key: str
    size: int
    etag: str          # upper-case, without quotes
    crc64: int
    mtime: float
    otype: str         # Normal | Multipart | Appendable
    data: str          # data file name inside the object's hash directory
    headers: Dict[str, str] = field(default_factory=dict)  # content-type, x-oss-meta-*, ...
    storage_class: str = 'Standard'
    acl: str = 'default'


@dataclass
class PartMeta:
    number: int
    size: int
    etag: str
    crc64: int
    mtime: float
    data: str


@dataclass
class Upload:
    upload_id: str
    key: str
    initiated: float
    headers: Dict[str, str]
    parts: Dict[int, PartMeta] = field(default_factory=dict)


@dataclass
class Bucket:
    name: str
    path: str
    created: float
    storage_class: str = 'Standard'
    acl: str = 'private'
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    append_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    keys: List[str] = field(default_factory=list)          # sorted; str order == UTF-8 byte order
    objects: Dict[str, ObjectMeta] = field(default_factory=dict)
    uploads: Dict[str, Upload] = field(default_factory=dict)
    journal_fd: Optional[int] = None  # open for appending while the bucket exists; under ``lock``

    @property
    def journal_path(self) -> str:
        return os.path.join(self.path, 'journal.log')

    @property
    def tmp_dir(self) -> str:
        return os.path.join(self.path, 'tmp')

    def obj_dir(self, h: str) -> str:
        return os.path.join(self.path, 'obj', h[:2])

    def upload_dir(self, upload_id: str) -> str:
        return os.path.join(self.path, 'mpu', upload_id)


@dataclass
class ListPage:
    objects: List[ObjectMeta]
    prefixes: List[str]
    truncated: bool
    next_marker: str


def _successor(prefix: str) -> str:
    """Smallest string greater than every string starting with ``prefix``."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


class Store:
    def __init__(self, root: str, fsync: bool = False):
        self.root = os.path.abspath(root)
        self.fsync = fsync
        os.makedirs(self.root, exist_ok=True)
        self._lock = threading.Lock()  # guards the bucket dict only
        self.buckets: Dict[str, Bucket] = {}
        # unique file names without a uuid4 per file: one random prefix per start, then a counter
        self._run = uuid.uuid4().hex[:8]
        self._serial = itertools.count()
        self._load()

    def _unique(self) -> str:
        return '%s%x' % (self._run, next(self._serial))

    def _atomic_write_json(self, path: str, tmp_dir: str, obj) -> None:
        tmp = os.path.join(tmp_dir, self._unique() + '.json.tmp')
        write_new_file(tmp, _json_bytes(obj), self.fsync)
        os.replace(tmp, path)
        if self.fsync:
            _fsync_path(os.path.dirname(path))

    # ----------------------------------------------------------------- loading
    def _load(self) -> None:
        for name in sorted(os.listdir(self.root)):
            bpath = os.path.join(self.root, name)
            if name.startswith((_STAGING_PREFIX, _TRASH_PREFIX)):
                # Our own leftovers of a crash in create_bucket or delete_bucket.
                shutil.rmtree(bpath, ignore_errors=True)
                continue
            info_path = os.path.join(bpath, 'bucket.json')
            if not os.path.isfile(info_path):
                continue
            with open(info_path, encoding='utf-8') as f:
                info = json.load(f)
            b = Bucket(name=name, path=bpath, created=info['created'],
                       storage_class=info.get('storage_class', 'Standard'), acl=info.get('acl', 'private'))
            shutil.rmtree(b.tmp_dir, ignore_errors=True)
            os.makedirs(b.tmp_dir, exist_ok=True)
            self._load_objects(b)
            self._load_uploads(b)
            self.buckets[name] = b

    def _load_objects(self, b: Bucket) -> None:
        obj_root = os.path.join(b.path, 'obj')
        legacy = []  # .meta files of a data directory older than the journal
        data_files = []
        for sub in os.listdir(obj_root):
            d = os.path.join(obj_root, sub)
            for n in os.listdir(d):
                if n.endswith('.meta'):
                    legacy.append(os.path.join(d, n))
                elif n.endswith('.data'):
                    data_files.append((d, n))
        for path in legacy:
            try:
                with open(path, encoding='utf-8') as f:
                    m = ObjectMeta(**json.load(f))
            except (OSError, ValueError, TypeError):
                continue
            b.objects[m.key] = m
        self._replay_journal(b)
        b.keys = sorted(b.objects)
        referenced = {m.data for m in b.objects.values()}
        for d, n in data_files:  # writes that never committed, overwritten versions
            if n not in referenced:
                _unlink(os.path.join(d, n))
        compact = os.path.join(b.tmp_dir, 'journal.compact')
        lines = b''.join(_journal_line({'o': vars(b.objects[k])}) for k in b.keys)
        write_new_file(compact, lines, self.fsync)
        os.replace(compact, b.journal_path)
        for path in legacy:
            _unlink(path)
        b.journal_fd = self._open_journal(b.journal_path)

    def _replay_journal(self, b: Bucket) -> None:
        try:
            with open(b.journal_path, 'rb') as f:
                raw = f.read()
        except FileNotFoundError:
            return
        for line in raw.split(b'\n'):
            try:
                rec = json.loads(line)
                if 'o' in rec:
                    m = ObjectMeta(**rec['o'])
                    b.objects[m.key] = m
                else:
                    b.objects.pop(rec['d'], None)
            except (ValueError, TypeError, KeyError):
                continue  # the torn last line of a killed emulator, or an empty one

    def _open_journal(self, path: str) -> int:
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _journal(self, b: Bucket, record: dict) -> None:
        """Append one record; the caller holds ``b.lock``."""
        if b.journal_fd is None:
            raise StoreError('NoSuchBucket', 'The specified bucket does not exist.', 404)
        view = memoryview(_journal_line(record))
        while view:
            view = view[os.write(b.journal_fd, view):]
        if self.fsync:
            os.fsync(b.journal_fd)

    def close(self) -> None:
        """Close the journals (a stopped in-process emulator must not keep descriptors)."""
        with self._lock:
            for b in self.buckets.values():
                with b.lock:
                    if b.journal_fd is not None:
                        os.close(b.journal_fd)
                        b.journal_fd = None

    def _load_uploads(self, b: Bucket) -> None:
        mpu_root = os.path.join(b.path, 'mpu')
        for uid in os.listdir(mpu_root):
            d = os.path.join(mpu_root, uid)
            try:
                with open(os.path.join(d, 'upload.json'), encoding='utf-8') as f:
                    info = json.load(f)
            except (OSError, ValueError):
                shutil.rmtree(d, ignore_errors=True)
                continue
            up = Upload(upload_id=uid, key=info['key'], initiated=info['initiated'], headers=info['headers'])
            names = os.listdir(d)
            for n in names:
                if n.endswith('.json') and n != 'upload.json':
                    try:
                        with open(os.path.join(d, n), encoding='utf-8') as f:
                            p = PartMeta(**json.load(f))
                    except (OSError, ValueError, TypeError):
                        continue
                    up.parts[p.number] = p
            referenced = {p.data for p in up.parts.values()}
            for n in names:
                if n.endswith('.data') and n not in referenced:
                    _unlink(os.path.join(d, n))
            b.uploads[uid] = up

    # ----------------------------------------------------------------- buckets
    def get_bucket(self, name: str) -> Bucket:
        b = self.buckets.get(name)
        if b is None:
            raise StoreError('NoSuchBucket', 'The specified bucket does not exist.', 404)
        return b

    def create_bucket(self, name: str, storage_class: str = 'Standard', acl: str = 'private') -> Bucket:
        with self._lock:
            if name in self.buckets:
                raise StoreError('BucketAlreadyExists', 'The requested bucket name is not available.', 409)
            bpath = os.path.join(self.root, name)
            # Built aside and renamed into place: a folder of that name that is not a bucket
            # (someone else's data in --data-dir) is refused, never replaced, and a crash
            # mid-creation leaves only a staging folder of ours, swept at the next start.
            staging = os.path.join(self.root, _STAGING_PREFIX + uuid.uuid4().hex)
            for sub in ('tmp', 'mpu'):
                os.makedirs(os.path.join(staging, sub))
            for i in range(256):
                os.makedirs(os.path.join(staging, 'obj', '%02x' % i))
            b = Bucket(name=name, path=staging, created=time.time(), storage_class=storage_class, acl=acl)
            self._save_bucket(b)
            b.journal_fd = self._open_journal(b.journal_path)  # the descriptor survives the rename
            try:
                os.rename(staging, bpath)  # replaces only an empty directory
            except OSError:
                os.close(b.journal_fd)
                shutil.rmtree(staging, ignore_errors=True)
                raise StoreError('BucketAlreadyExists',
                                 f'The data directory already holds a folder or file named {name} '
                                 f'that is not a bucket; it is left as it is.', 409) from None
            b.path = bpath
            self.buckets[name] = b
            return b

    def _save_bucket(self, b: Bucket) -> None:
        self._atomic_write_json(os.path.join(b.path, 'bucket.json'), b.tmp_dir,
                           {'created': b.created, 'storage_class': b.storage_class, 'acl': b.acl})

    def set_bucket_acl(self, b: Bucket, acl: str) -> None:
        with b.lock:
            b.acl = acl
            self._save_bucket(b)

    def delete_bucket(self, name: str) -> None:
        with self._lock:
            b = self.get_bucket(name)
            with b.lock:
                if b.objects or b.uploads:
                    raise StoreError('BucketNotEmpty', 'The bucket you tried to delete is not empty.', 409)
                del self.buckets[name]
                if b.journal_fd is not None:
                    os.close(b.journal_fd)
                    b.journal_fd = None  # a write still under way on this bucket gets NoSuchBucket
            # rename first so a crash mid-rmtree never leaves a half bucket that loads
            trash = os.path.join(self.root, _TRASH_PREFIX + uuid.uuid4().hex)
            os.replace(b.path, trash)
        shutil.rmtree(trash, ignore_errors=True)

    def list_buckets(self) -> List[Bucket]:
        with self._lock:
            return [self.buckets[n] for n in sorted(self.buckets)]

    # ----------------------------------------------------------------- objects
    def new_temp_path(self, b: Bucket) -> str:
        return os.path.join(b.tmp_dir, self._unique() + '.part')

    def new_data_path(self, b: Bucket, key: str) -> str:
        """Where a new version of ``key`` may be written in place; ``commit_object`` publishes it."""
        h = key_hash(key)
        return os.path.join(b.obj_dir(h), '%s.%s.data' % (h, self._unique()))

    def head(self, b: Bucket, key: str) -> ObjectMeta:
        m = b.objects.get(key)
        if m is None:
            raise StoreError('NoSuchKey', 'The specified key does not exist.', 404)
        return m

    def data_path(self, b: Bucket, m: ObjectMeta) -> str:
        return os.path.join(b.obj_dir(key_hash(m.key)), m.data)

    def open_object(self, b: Bucket, key: str) -> Tuple[ObjectMeta, 'os.PathLike']:
        """Return metadata and an open file of one consistent version."""
        for _ in range(5):
            m = self.head(b, key)
            try:
                return m, open(self.data_path(b, m), 'rb')
            except FileNotFoundError:
                continue  # overwritten between reading meta and opening; take the new version
        raise StoreError('InternalError', 'Object changed repeatedly while being opened.', 500)

    def commit_object(self, b: Bucket, key: str, tmp_path: Optional[str], size: int, etag: str, crc: int,
                      otype: str, headers: Dict[str, str], storage_class: str = 'Standard',
                      link_from: Optional[str] = None, acl: str = 'default') -> ObjectMeta:
        """Publish a fully written temp file (or hard link of another data file) as ``key``."""
        h = key_hash(key)
        d = b.obj_dir(h)
        if tmp_path is not None and os.path.dirname(tmp_path) == d:
            data_name = os.path.basename(tmp_path)  # written in place (new_data_path)
        else:
            data_name = '%s.%s.data' % (h, self._unique())
            final = os.path.join(d, data_name)
            if link_from is not None:
                os.link(link_from, final)
            else:
                os.replace(tmp_path, final)
        if self.fsync:
            _fsync_path(os.path.join(d, data_name))
        m = ObjectMeta(key=key, size=size, etag=etag, crc64=crc, mtime=time.time(), otype=otype,
                       data=data_name, headers=headers, storage_class=storage_class, acl=acl)
        with b.lock:
            try:
                # vars(), not asdict(): the fields are JSON already, asdict's deep copy costs more
                self._journal(b, {'o': vars(m)})
            except BaseException:
                _unlink(os.path.join(d, data_name))
                raise
            old = b.objects.get(key)
            b.objects[key] = m
            if old is None:
                bisect.insort(b.keys, key)
        if old is not None and old.data != data_name:
            _unlink(os.path.join(d, old.data))
        return m

    def update_meta(self, b: Bucket, m: ObjectMeta) -> None:
        """Rewrite metadata of an existing data version (metadata-only copy, ACL)."""
        with b.lock:
            self._journal(b, {'o': asdict(m)})
            b.objects[m.key] = m

    def delete_object(self, b: Bucket, key: str) -> bool:
        h = key_hash(key)
        with b.lock:
            if key not in b.objects:
                return False
            self._journal(b, {'d': key})
            old = b.objects.pop(key)
            i = bisect.bisect_left(b.keys, key)
            if i < len(b.keys) and b.keys[i] == key:
                del b.keys[i]
        _unlink(os.path.join(b.obj_dir(h), old.data))
        return True

    def append(self, b: Bucket, key: str, position: int, tmp_path: str, size: int, crc: int,
               headers: Dict[str, str]) -> ObjectMeta:
        # appends are rare (migration never uses them), so copying under a
        # per-bucket append lock is acceptable; PUTs never take this lock
        with b.append_lock:
            cur = b.objects.get(key)
            if cur is None:
                if position != 0:
                    raise StoreError('PositionNotEqualToLength', 'Position is not equal to file length', 409,
                                     {'x-oss-next-append-position': '0'})
                m = self.commit_object(b, key, tmp_path, size, '', crc, 'Appendable', headers)
            else:
                if cur.otype != 'Appendable':
                    raise StoreError('ObjectNotAppendable', 'The object is not appendable', 409)
                if position != cur.size:
                    raise StoreError('PositionNotEqualToLength', 'Position is not equal to file length', 409,
                                     {'x-oss-next-append-position': str(cur.size)})
                path = self.data_path(b, cur)
                with open(path, 'r+b') as dst, open(tmp_path, 'rb') as src:
                    dst.truncate(cur.size)  # drop bytes of an append that never committed
                    dst.seek(cur.size)
                    shutil.copyfileobj(src, dst, IO_CHUNK)
                _unlink(tmp_path)
                m = ObjectMeta(**{**asdict(cur), 'size': cur.size + size, 'mtime': time.time(),
                                  'crc64': crc64_update_combine(cur.crc64, path, cur.size, size)})
            m.etag = '%016X%016X' % (m.crc64, m.size)  # OSS ETags of appendable objects are not MD5s
            self.update_meta(b, m)
            return m

    def list_objects(self, b: Bucket, prefix: str, marker: str, delimiter: str, max_keys: int) -> ListPage:
        objs: List[ObjectMeta] = []
        prefixes: List[str] = []
        last = ''
        truncated = False
        with b.lock:
            keys = b.keys
            i = bisect.bisect_left(keys, prefix) if prefix else 0
            if marker:
                i = max(i, bisect.bisect_right(keys, marker))
            n = len(keys)
            while i < n:
                k = keys[i]
                if prefix and not k.startswith(prefix):
                    break
                if len(objs) + len(prefixes) >= max_keys:
                    truncated = True
                    break
                if delimiter:
                    j = k.find(delimiter, len(prefix))
                    if j >= 0:
                        cp = k[:j + len(delimiter)]
                        i = bisect.bisect_left(keys, _successor(cp), i)
                        if marker and cp <= marker:
                            continue
                        prefixes.append(cp)
                        last = cp
                        continue
                objs.append(b.objects[k])
                last = k
                i += 1
        return ListPage(objs, prefixes, truncated, last if truncated else '')

    # --------------------------------------------------------------- multipart
    def init_upload(self, b: Bucket, key: str, headers: Dict[str, str]) -> Upload:
        # time-ordered ids: OSS lists uploads of one key in upload-id order, which should be creation order
        up = Upload(upload_id='%016X%s' % (time.time_ns(), uuid.uuid4().hex[:16].upper()), key=key, initiated=time.time(), headers=headers)
        d = b.upload_dir(up.upload_id)
        os.makedirs(d)
        self._atomic_write_json(os.path.join(d, 'upload.json'), b.tmp_dir,
                           {'key': key, 'initiated': up.initiated, 'headers': headers})
        with b.lock:
            b.uploads[up.upload_id] = up
        return up

    def get_upload(self, b: Bucket, upload_id: str, key: Optional[str] = None) -> Upload:
        up = b.uploads.get(upload_id)
        if up is None or (key is not None and up.key != key):
            raise StoreError('NoSuchUpload', 'The specified upload does not exist. The upload ID may be invalid, '
                             'or the upload may have been aborted or completed.', 404)
        return up

    def commit_part(self, b: Bucket, up: Upload, number: int, tmp_path: Optional[str], size: int, etag: str,
                    crc: int, copy_from: Optional[Tuple[str, int, int]] = None) -> PartMeta:
        d = b.upload_dir(up.upload_id)
        data_name = '%d.%s.data' % (number, self._unique())
        try:
            if copy_from is not None:
                src, start, length = copy_from
                with open(src, 'rb') as fs, open(os.path.join(d, data_name), 'wb') as fd:
                    fs.seek(start)
                    _copy_n(fs, fd, length)
            else:
                os.replace(tmp_path, os.path.join(d, data_name))
        except FileNotFoundError:
            raise StoreError('NoSuchUpload', 'The specified upload does not exist.', 404)
        p = PartMeta(number=number, size=size, etag=etag, crc64=crc, mtime=time.time(), data=data_name)
        if self.fsync:
            _fsync_path(os.path.join(d, data_name))
        meta_tmp = os.path.join(b.tmp_dir, self._unique() + '.pjson.tmp')
        write_new_file(meta_tmp, _json_bytes(asdict(p)), self.fsync)
        with b.lock:
            if up.upload_id not in b.uploads:
                _unlink(meta_tmp)
                _unlink(os.path.join(d, data_name))
                raise StoreError('NoSuchUpload', 'The specified upload does not exist.', 404)
            os.replace(meta_tmp, os.path.join(d, '%d.json' % number))
            old = up.parts.get(number)
            up.parts[number] = p
        if self.fsync:
            _fsync_path(d)
        if old is not None and old.data != data_name:
            _unlink(os.path.join(d, old.data))
        return p

    def complete_upload(self, b: Bucket, up: Upload, part_list: List[Tuple[int, str]]) -> ObjectMeta:
        parts = dict(up.parts)
        chosen: List[PartMeta] = []
        prev = 0
        for number, etag in part_list:
            if number <= prev:
                raise StoreError('InvalidPartOrder', 'The list of parts was not in ascending order. Parts list '
                                 'must be specified in order by part number.', 400)
            prev = number
            p = parts.get(number)
            if p is None or p.etag.upper() != etag.strip().strip('"').upper():
                raise StoreError('InvalidPart', 'One or more of the specified parts could not be found or the '
                                 'specified entity tag might not have matched the part\'s entity tag.', 400)
            chosen.append(p)
        if not chosen:
            raise StoreError('InvalidXML', 'The XML you provided was not well-formed.', 400)
        for p in chosen[:-1]:
            if p.size < MIN_PART_SIZE:
                raise StoreError('EntityTooSmall', 'Your proposed upload is smaller than the minimum allowed size.',
                                 400)
        d = b.upload_dir(up.upload_id)
        tmp = self.new_temp_path(b)
        crc = 0
        md5s = hashlib.md5()
        total = 0
        with open(tmp, 'wb') as out:
            for p in chosen:
                with open(os.path.join(d, p.data), 'rb') as f:
                    while True:
                        chunk = f.read(IO_CHUNK)
                        if not chunk:
                            break
                        crc = crc64_update(chunk, crc)
                        out.write(chunk)
                total += p.size
                md5s.update(bytes.fromhex(p.etag))
        with b.lock:
            if b.uploads.pop(up.upload_id, None) is None:
                _unlink(tmp)
                raise StoreError('NoSuchUpload', 'The specified upload does not exist.', 404)
        etag = '%s-%d' % (md5s.hexdigest().upper(), len(chosen))
        headers = dict(up.headers)
        acl = headers.pop('x-oss-object-acl', 'default')
        sc = headers.pop('x-oss-storage-class', 'Standard')
        m = self.commit_object(b, up.key, tmp, total, etag, crc, 'Multipart', headers, storage_class=sc, acl=acl)
        shutil.rmtree(d, ignore_errors=True)
        return m

    def abort_upload(self, b: Bucket, up: Upload) -> None:
        with b.lock:
            if b.uploads.pop(up.upload_id, None) is None:
                raise StoreError('NoSuchUpload', 'The specified upload does not exist.', 404)
        shutil.rmtree(b.upload_dir(up.upload_id), ignore_errors=True)

    def list_uploads(self, b: Bucket) -> List[Upload]:
        with b.lock:
            ups = list(b.uploads.values())
        ups.sort(key=lambda u: (u.key, u.upload_id))
        return ups


def crc64_update_combine(crc: int, path: str, start: int, length: int) -> int:
    """Extend ``crc`` (of the first ``start`` bytes of ``path``) over the next ``length`` bytes."""
    with open(path, 'rb') as f:
        f.seek(start)
        remaining = length
        while remaining > 0:
            chunk = f.read(min(IO_CHUNK, remaining))
            if not chunk:
                break
            crc = crc64_update(chunk, crc)
            remaining -= len(chunk)
    return crc


def _copy_n(src, dst, n: int) -> None:
    while n > 0:
        chunk = src.read(min(IO_CHUNK, n))
        if not chunk:
            break
        dst.write(chunk)
        n -= len(chunk)


def iter_file_range(f, start: int, length: int, chunk: int = 256 * 1024) -> Iterator[bytes]:
    f.seek(start)
    while length > 0:
        data = f.read(min(chunk, length))
        if not data:
            break
        length -= len(data)
        yield data


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
