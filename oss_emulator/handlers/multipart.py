"""Multipart uploads: initiate, upload a part (or copy one from an object), list parts, complete,
abort. A part copy names and checks its source as CopyObject does, and completing an upload checks
x-oss-forbid-overwrite and answers as a write does: those are ``ObjectOps``' methods."""

from __future__ import annotations

import base64
import hashlib
import re
from xml.etree import ElementTree

from .. import xmlgen
from ..store import IO_CHUNK, StoreError, crc64_update, iter_file_range
from ..wire import int_param, parse_xml, url_encoding


class MultipartOps:
    def op_InitiateMultipartUpload(self, bucket, key, p):
        store = self.emu.store
        b = store.get_bucket(bucket)
        self._read_body()
        self._check_forbid_overwrite(b, key)
        meta = self._request_meta()
        for extra in ('x-oss-object-acl', 'x-oss-storage-class'):
            if extra in self.headers:
                meta[extra] = self.headers[extra]
        up = store.init_upload(b, key, meta)
        self._send(200, [('Content-Type', 'application/xml')],
                   xmlgen.init_upload(bucket, key, up.upload_id, url_encoding(p)))

    def _part_number(self, p) -> int:
        try:
            n = int(p.get('partNumber', ''))
        except ValueError:
            n = 0
        if not 1 <= n <= 10000:
            raise StoreError('InvalidArgument', 'Part number must be an integer between 1 and 10000, inclusive.',
                             400)
        return n

    def op_UploadPart(self, bucket, key, p):
        store = self.emu.store
        b = store.get_bucket(bucket)
        n = self._part_number(p)
        up = store.get_upload(b, p.get('uploadId', ''), key)
        tmp = store.new_temp_path(b)
        size, etag, crc, digest = self._receive_checked(tmp)
        part = store.commit_part(b, up, n, tmp, size, etag, crc)
        self._send(200, [('ETag', '"%s"' % part.etag), ('x-oss-hash-crc64ecma', str(part.crc64)),
                         ('Content-MD5', base64.b64encode(digest).decode())])

    def op_UploadPartCopy(self, bucket, key, p):
        store = self.emu.store
        b = store.get_bucket(bucket)
        n = self._part_number(p)
        up = store.get_upload(b, p.get('uploadId', ''), key)
        sb, skey = self._copy_source()
        src_bucket = store.get_bucket(sb)
        m, f = store.open_object(src_bucket, skey)
        with f:
            self._check_copy_conditions(m)
            start, end = 0, m.size - 1
            rv = self.headers.get('x-oss-copy-source-range')
            if rv:
                mt = re.fullmatch(r'\s*bytes\s*=\s*(\d+)-(\d*)\s*', rv)
                if mt:
                    start = int(mt.group(1))
                    end = min(int(mt.group(2)), m.size - 1) if mt.group(2) else m.size - 1
                if not mt or start > end:
                    raise StoreError('InvalidArgument', 'The x-oss-copy-source-range is invalid.', 400)
            tmp = store.new_temp_path(b)
            md5, crc, size = hashlib.md5(), 0, 0
            with open(tmp, 'wb') as out:
                for chunk in iter_file_range(f, start, end - start + 1, IO_CHUNK):
                    md5.update(chunk)
                    crc = crc64_update(chunk, crc)
                    size += len(chunk)
                    out.write(chunk)
        part = store.commit_part(b, up, n, tmp, size, md5.hexdigest().upper(), crc)
        self._send(200, [('Content-Type', 'application/xml'), ('ETag', '"%s"' % part.etag),
                         ('x-oss-hash-crc64ecma', str(part.crc64))], xmlgen.copy_part_result(part))

    def op_CompleteMultipartUpload(self, bucket, key, p):
        store = self.emu.store
        b = store.get_bucket(bucket)
        up = store.get_upload(b, p.get('uploadId', ''), key)
        body = self._read_body()
        if self.headers.get('x-oss-complete-all', '').lower() == 'yes':
            if body.strip():
                raise StoreError('InvalidArgument', 'Should not specify both complete all header and http body.',
                                 400)
            parts = [(n, up.parts[n].etag) for n in sorted(up.parts)]
        else:
            try:
                root = parse_xml(body)
                parts = [(int(x.findtext('PartNumber')), x.findtext('ETag') or '') for x in root.findall('Part')]
            except (ElementTree.ParseError, TypeError, ValueError):
                raise StoreError('MalformedXML', 'The XML you provided was not well-formed.', 400)
        self._check_forbid_overwrite(b, key)
        m = store.complete_upload(b, up, parts)
        loc = 'http://%s/%s/%s' % (self._endpoint(), bucket, key)
        self._send(200, [('Content-Type', 'application/xml')] + self._write_headers(m),
                   xmlgen.complete_upload(bucket, key, m, url_encoding(p), loc))

    def op_AbortMultipartUpload(self, bucket, key, p):
        store = self.emu.store
        b = store.get_bucket(bucket)
        store.abort_upload(b, store.get_upload(b, p.get('uploadId', ''), key))
        self._send(204)

    def op_ListParts(self, bucket, key, p):
        store = self.emu.store
        b = store.get_bucket(bucket)
        up = store.get_upload(b, p.get('uploadId', ''), key)
        marker = int_param(p, 'part-number-marker', 0, 10000)
        max_parts = int_param(p, 'max-parts', 1000, 1000)
        parts = [up.parts[n] for n in sorted(up.parts) if n > marker]
        truncated = len(parts) > max_parts
        parts = parts[:max_parts]
        self._send(200, [('Content-Type', 'application/xml')],
                   xmlgen.list_parts(bucket, up, marker, max_parts, parts, truncated, url_encoding(p)))
