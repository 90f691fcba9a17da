"""Object operations: put, append, copy, get (ranges, conditions, gzip), head, delete, ACLs."""

from __future__ import annotations

import base64
import re
import time
import zlib
from typing import Dict, List, Optional, Tuple
from urllib.parse import unquote

from .. import xmlgen
from ..store import IO_CHUNK, ObjectMeta, StoreError, iter_file_range
from ..wire import GZIP_TYPES, SMALL_BODY, STORED_HEADERS, http_date, parse_http_date, unlink_quietly


class ObjectOps:
    def _request_meta(self) -> Dict[str, str]:
        meta = {}
        for k, v in self.headers.items():
            lk = k.lower()
            if lk.startswith('x-oss-meta-') or lk in STORED_HEADERS:
                meta[lk] = v
        meta.setdefault('content-type', 'application/octet-stream')
        return meta

    def _write_headers(self, m: ObjectMeta) -> List[Tuple[str, str]]:
        h = [('ETag', '"%s"' % m.etag), ('x-oss-hash-crc64ecma', str(m.crc64))]
        if 'x-oss-server-side-encryption' in m.headers:
            h.append(('x-oss-server-side-encryption', m.headers['x-oss-server-side-encryption']))
        return h

    def _check_forbid_overwrite(self, b, key):
        if self.headers.get('x-oss-forbid-overwrite', '').lower() == 'true' and key in b.objects:
            raise StoreError('FileAlreadyExists', 'The object you specified already exists and can not be '
                             'overwritten.', 409)

    def op_PutObject(self, bucket, key, p):
        store = self.emu.store
        b = store.get_bucket(bucket)
        self._check_forbid_overwrite(b, key)
        tmp = store.new_data_path(b, key)
        size, etag, crc, digest = self._receive_checked(tmp)
        meta = self._request_meta()
        acl = meta.pop('x-oss-object-acl', self.headers.get('x-oss-object-acl', 'default'))
        m = store.commit_object(b, key, tmp, size, etag, crc, 'Normal', meta,
                                storage_class=self.headers.get('x-oss-storage-class', 'Standard'), acl=acl)
        self._send(200, self._write_headers(m) + [('Content-MD5', base64.b64encode(digest).decode())])

    def op_AppendObject(self, bucket, key, p):
        store = self.emu.store
        b = store.get_bucket(bucket)
        try:
            position = int(p.get('position', ''))
        except ValueError:
            raise StoreError('InvalidArgument', 'position is not valid', 400)
        tmp = store.new_temp_path(b)
        size, _, crc, digest = self._receive_checked(tmp)
        try:
            m = store.append(b, key, position, tmp, size, crc, self._request_meta())
        finally:
            unlink_quietly(tmp)
        self._send(200, self._write_headers(m) + [('x-oss-next-append-position', str(m.size))])

    def op_CopyObject(self, bucket, key, p):
        store = self.emu.store
        b = store.get_bucket(bucket)
        sb, skey = self._copy_source()
        src_bucket = store.get_bucket(sb)
        src = store.head(src_bucket, skey)
        self._check_copy_conditions(src)
        self._check_forbid_overwrite(b, key)
        replace = self.headers.get('x-oss-metadata-directive', 'COPY').upper() == 'REPLACE'
        headers = self._request_meta() if replace else dict(src.headers)
        acl = self.headers.get('x-oss-object-acl', src.acl if (sb, skey) == (bucket, key) else 'default')
        sc = self.headers.get('x-oss-storage-class', src.storage_class)
        if (sb, skey) == (bucket, key):
            m = ObjectMeta(**{**src.__dict__, 'headers': headers, 'mtime': time.time(), 'acl': acl,
                              'storage_class': sc})
            store.update_meta(b, m)
        else:
            otype = 'Normal' if src.otype == 'Appendable' else src.otype
            if src.otype == 'Appendable':
                # appendable data files are modified in place, so they cannot be shared by a hard link
                m, f = store.open_object(src_bucket, skey)
                tmp = store.new_temp_path(b)
                with f, open(tmp, 'wb') as out:
                    for chunk in iter_file_range(f, 0, m.size, IO_CHUNK):
                        out.write(chunk)
                m = store.commit_object(b, key, tmp, m.size, m.etag, m.crc64, otype, headers, sc, acl=acl)
            else:
                m = self._link_copy(src_bucket, skey, b, key, otype, headers, sc, acl)
        self._send(200, [('Content-Type', 'application/xml')] + self._write_headers(m), xmlgen.copy_result(m))

    def _link_copy(self, src_bucket, skey, b, key, otype, headers, sc, acl):
        store = self.emu.store
        for _ in range(5):
            src = store.head(src_bucket, skey)
            try:
                return store.commit_object(b, key, None, src.size, src.etag, src.crc64, otype, headers, sc,
                                           link_from=store.data_path(src_bucket, src), acl=acl)
            except FileNotFoundError:
                continue
        raise StoreError('InternalError', 'Source object changed repeatedly during copy.', 500)

    def _copy_source(self) -> Tuple[str, str]:
        raw = self.headers.get('x-oss-copy-source', '')
        raw = raw.split('?', 1)[0]
        try:
            src = unquote(raw, errors='strict')
        except UnicodeDecodeError:
            raise StoreError('InvalidArgument', 'Copy Source must mention the source bucket and key.', 400)
        if src.startswith('/'):
            src = src[1:]
        sb, _, skey = src.partition('/')
        if not sb or not skey:
            raise StoreError('InvalidArgument', 'Copy Source must mention the source bucket and key: '
                             'sourcebucket/sourcekey.', 400)
        return sb, skey

    def _check_copy_conditions(self, m: ObjectMeta) -> None:
        h = self.headers
        im = h.get('x-oss-copy-source-if-match')
        if im is not None and im.strip('"').upper() != m.etag:
            raise StoreError('PreconditionFailed', 'At least one of the pre-conditions you specified did not hold.',
                             412)
        inm = h.get('x-oss-copy-source-if-none-match')
        if inm is not None and inm.strip('"').upper() == m.etag:
            raise StoreError('NotModified', 'Not Modified', 304)

    def op_DeleteObject(self, bucket, key, p):
        b = self.emu.store.get_bucket(bucket)
        self.emu.store.delete_object(b, key)
        self._send(204)

    def op_GetObjectAcl(self, bucket, key, p):
        b = self.emu.store.get_bucket(bucket)
        m = self.emu.store.head(b, key)
        self._send(200, [('Content-Type', 'application/xml')], xmlgen.acl(m.acl))

    def op_PutObjectAcl(self, bucket, key, p):
        b = self.emu.store.get_bucket(bucket)
        m = self.emu.store.head(b, key)
        acl = self.headers.get('x-oss-object-acl', 'default')
        if acl not in ('default', 'private', 'public-read', 'public-read-write'):
            raise StoreError('InvalidArgument', 'no such object access control exists', 400)
        self.emu.store.update_meta(b, ObjectMeta(**{**m.__dict__, 'acl': acl}))
        self._send(200)

    def _object_headers(self, m: ObjectMeta, p: Dict[str, str]) -> List[Tuple[str, str]]:
        h = []
        for k, v in m.headers.items():
            if k == 'content-type':
                continue
            h.append((k, v))
        h.append(('Content-Type', p.get('response-content-type') or m.headers.get('content-type',
                                                                                 'application/octet-stream')))
        for name in ('content-language', 'expires', 'cache-control', 'content-disposition', 'content-encoding'):
            v = p.get('response-' + name)
            if v is not None:
                h = [(k, x) for k, x in h if k != name] + [(name, v)]
        h += [('ETag', '"%s"' % m.etag), ('Last-Modified', http_date(m.mtime)), ('Accept-Ranges', 'bytes'),
              ('x-oss-object-type', m.otype), ('x-oss-storage-class', m.storage_class),
              ('x-oss-hash-crc64ecma', str(m.crc64))]
        if m.otype == 'Appendable':
            h.append(('x-oss-next-append-position', str(m.size)))
        return h

    def _check_conditions(self, m: ObjectMeta) -> None:
        h = self.headers
        im = h.get('If-Match')
        if im is not None and im.strip().strip('"').upper() != m.etag and im.strip() != '*':
            raise StoreError('PreconditionFailed', 'At least one of the pre-conditions you specified did not hold.',
                             412)
        ius = parse_http_date(h.get('If-Unmodified-Since', ''))
        if ius is not None and int(m.mtime) > ius:
            raise StoreError('PreconditionFailed', 'At least one of the pre-conditions you specified did not hold.',
                             412)
        inm = h.get('If-None-Match')
        if inm is not None and (inm.strip().strip('"').upper() == m.etag or inm.strip() == '*'):
            raise StoreError('NotModified', 'Not Modified', 304, {'ETag': '"%s"' % m.etag})
        ims = parse_http_date(h.get('If-Modified-Since', ''))
        if ims is not None and int(m.mtime) <= ims:
            raise StoreError('NotModified', 'Not Modified', 304, {'ETag': '"%s"' % m.etag})

    def op_HeadObject(self, bucket, key, p):
        b = self.emu.store.get_bucket(bucket)
        m = self.emu.store.head(b, key)
        self._check_conditions(m)
        self._send(200, self._object_headers(m, p), content_length=m.size)

    def op_GetObjectMeta(self, bucket, key, p):
        b = self.emu.store.get_bucket(bucket)
        m = self.emu.store.head(b, key)
        h = [('ETag', '"%s"' % m.etag), ('Last-Modified', http_date(m.mtime)),
             ('x-oss-hash-crc64ecma', str(m.crc64))]
        if self.command == 'HEAD':
            self._send(200, h, content_length=m.size)
        else:
            self._send(200, h + [('x-oss-object-size', str(m.size))])

    def op_GetObject(self, bucket, key, p):
        store = self.emu.store
        b = store.get_bucket(bucket)
        m, f = store.open_object(b, key)
        with f:
            self._check_conditions(m)
            headers = self._object_headers(m, p)
            rng = self._parse_range(m.size)
            if rng is not None:
                start, end = rng
                length = end - start + 1
                headers.append(('Content-Range', 'bytes %d-%d/%d' % (start, end, m.size)))
                status = 206
            else:
                start, length, status = 0, m.size, 200
                if self._want_gzip(m):
                    self._send_gzip(f, m, headers)
                    return
            if length <= SMALL_BODY:
                f.seek(start)
                self._send(status, headers, f.read(length))
                return
            self._send(status, headers, content_length=length)
            for chunk in iter_file_range(f, start, length):
                self.wfile.write(chunk)

    def _want_gzip(self, m: ObjectMeta) -> bool:
        if 'gzip' not in self.headers.get('Accept-Encoding', '') or m.size < 1024:
            return False
        if 'content-encoding' in m.headers:
            return False
        ct = m.headers.get('content-type', '')
        return ct.startswith(GZIP_TYPES)

    def _send_gzip(self, f, m: ObjectMeta, headers) -> None:
        # OSS compresses text-like objects on request and then streams them chunked, without Content-Length
        headers = [(k, v) for k, v in headers if k.lower() != 'content-encoding'] + [('Content-Encoding', 'gzip')]
        self._send(200, headers, chunked=True)
        comp = zlib.compressobj(6, zlib.DEFLATED, 31)
        w = self.wfile
        for chunk in iter_file_range(f, 0, m.size):
            out = comp.compress(chunk)
            if out:
                w.write(b'%X\r\n%s\r\n' % (len(out), out))
        out = comp.flush()
        if out:
            w.write(b'%X\r\n%s\r\n' % (len(out), out))
        w.write(b'0\r\n\r\n')

    def _parse_range(self, size: int) -> Optional[Tuple[int, int]]:
        value = self.headers.get('Range')
        if not value:
            return None
        standard = self.headers.get('x-oss-range-behavior', '').lower() == 'standard'
        mt = re.fullmatch(r'\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*', value)
        rng = None
        if mt and (mt.group(1) or mt.group(2)):
            a, z = mt.group(1), mt.group(2)
            if a == '':
                n = int(z)
                if n > 0 and size > 0:
                    rng = (max(0, size - n), size - 1)
            else:
                start = int(a)
                end = int(z) if z else size - 1
                if z and end < start:
                    rng = None
                elif start < size:
                    rng = (start, min(end, size - 1))
        if rng is None and standard:
            raise StoreError('InvalidRange', 'The requested range cannot be satisfied.', 416,
                             {'Content-Range': 'bytes */%d' % size})
        return rng
