"""The service's bucket list, bucket operations and bucket listings (objects, multipart uploads)."""

from __future__ import annotations

import hashlib
from xml.etree import ElementTree

from .. import xmlgen
from ..store import StoreError
from ..wire import (decode_token, encode_token, int_param, parse_xml, shield_controls, unshield_controls,
                    url_encoding)


class BucketOps:
    def op_ListBuckets(self, bucket, key, p):
        prefix, marker = p.get('prefix', ''), p.get('marker', '')
        max_keys = int_param(p, 'max-keys', 100, 1000)
        names = [b for b in self.emu.store.list_buckets() if b.name.startswith(prefix) and b.name > marker]
        page, truncated = names[:max_keys], len(names) > max_keys
        body = xmlgen.list_buckets(page, prefix, marker, max_keys, truncated, page[-1].name if truncated else '',
                                   self._endpoint())
        self._send(200, [('Content-Type', 'application/xml')], body)

    def op_PutBucket(self, bucket, key, p):
        body = self._read_body()
        sc = 'Standard'
        if body.strip():
            try:
                node = parse_xml(body).find('StorageClass')
            except ElementTree.ParseError:
                raise StoreError('MalformedXML', 'The XML you provided was not well-formed.', 400)
            if node is not None and node.text:
                sc = node.text
        self.emu.store.create_bucket(bucket, sc, self.headers.get('x-oss-acl', 'private'))
        self._send(200, [('Location', '/' + bucket)])

    def op_DeleteBucket(self, bucket, key, p):
        self.emu.store.delete_bucket(bucket)
        self._send(204)

    def op_HeadBucket(self, bucket, key, p):
        self.emu.store.get_bucket(bucket)
        self._send(200)

    def op_GetBucketInfo(self, bucket, key, p):
        b = self.emu.store.get_bucket(bucket)
        self._send(200, [('Content-Type', 'application/xml')], xmlgen.bucket_info(b, self._endpoint()))

    def op_GetBucketLocation(self, bucket, key, p):
        self.emu.store.get_bucket(bucket)
        self._send(200, [('Content-Type', 'application/xml')], xmlgen.location())

    def op_GetBucketAcl(self, bucket, key, p):
        b = self.emu.store.get_bucket(bucket)
        self._send(200, [('Content-Type', 'application/xml')], xmlgen.acl(b.acl))

    def op_PutBucketAcl(self, bucket, key, p):
        b = self.emu.store.get_bucket(bucket)
        acl = self.headers.get('x-oss-acl', 'private')
        if acl not in ('private', 'public-read', 'public-read-write'):
            raise StoreError('InvalidArgument', 'no such bucket access control exists', 400)
        self.emu.store.set_bucket_acl(b, acl)
        self._send(200)

    def op_ListLiveChannel(self, bucket, key, p):
        self.emu.store.get_bucket(bucket)
        body = xmlgen.empty_live_channels(p.get('prefix', ''), p.get('marker', ''),
                                          int_param(p, 'max-keys', 100, 1000))
        self._send(200, [('Content-Type', 'application/xml')], body)

    def op_ListObjects(self, bucket, key, p):
        b = self.emu.store.get_bucket(bucket)
        prefix, marker, delimiter = p.get('prefix', ''), p.get('marker', ''), p.get('delimiter', '')
        max_keys = int_param(p, 'max-keys', 100, 1000)
        url = url_encoding(p)
        page = self.emu.store.list_objects(b, prefix, marker, delimiter, max_keys)
        self._send(200, [('Content-Type', 'application/xml')],
                   xmlgen.list_objects(bucket, prefix, marker, max_keys, delimiter, url, page))

    def op_ListObjectsV2(self, bucket, key, p):
        b = self.emu.store.get_bucket(bucket)
        prefix, delimiter = p.get('prefix', ''), p.get('delimiter', '')
        start_after = p.get('start-after')
        token = p.get('continuation-token') or None  # oss2 always sends the parameter, often empty
        max_keys = int_param(p, 'max-keys', 100, 1000)
        url = url_encoding(p)
        marker = start_after or ''
        if token is not None:
            marker = decode_token(token)
        page = self.emu.store.list_objects(b, prefix, marker, delimiter, max_keys)
        next_token = encode_token(page.next_marker) if page.truncated else ''
        body = xmlgen.list_objects_v2(bucket, prefix, start_after, token, max_keys, delimiter, url,
                                      p.get('fetch-owner') == 'true', page, next_token)
        self._send(200, [('Content-Type', 'application/xml')], body)

    def op_DeleteMultipleObjects(self, bucket, key, p):
        b = self.emu.store.get_bucket(bucket)
        body = self._read_body()
        self._check_md5(hashlib.md5(body).digest())
        try:
            root = parse_xml(shield_controls(body))
        except ElementTree.ParseError:
            raise StoreError('MalformedXML', 'The XML you provided was not well-formed.', 400)
        quiet = (root.findtext('Quiet') or 'false').strip().lower() == 'true'
        keys = [unshield_controls(o.findtext('Key') or '') for o in root.findall('Object')]
        if len(keys) > 1000:
            raise StoreError('MalformedXML', 'Too many objects to delete (max 1000).', 400)
        for k in keys:
            self.emu.store.delete_object(b, k)
        self._send(200, [('Content-Type', 'application/xml')],
                   xmlgen.delete_result([] if quiet else keys, url_encoding(p)))

    def op_ListMultipartUploads(self, bucket, key, p):
        b = self.emu.store.get_bucket(bucket)
        prefix, delimiter = p.get('prefix', ''), p.get('delimiter', '')
        key_marker, id_marker = p.get('key-marker', ''), p.get('upload-id-marker', '')
        max_uploads = int_param(p, 'max-uploads', 1000, 1000)
        url = url_encoding(p)
        ups, prefixes = [], []
        truncated = False
        next_key = next_id = ''
        for u in self.emu.store.list_uploads(b):
            if not u.key.startswith(prefix):
                continue
            if key_marker and (u.key < key_marker or (u.key == key_marker and (not id_marker or
                                                                               u.upload_id <= id_marker))):
                continue
            if delimiter:
                j = u.key.find(delimiter, len(prefix))
                if j >= 0:
                    cp = u.key[:j + len(delimiter)]
                    if cp in prefixes or (key_marker and cp <= key_marker):
                        continue
                    if len(ups) + len(prefixes) >= max_uploads:
                        truncated = True
                        break
                    prefixes.append(cp)
                    next_key, next_id = cp, ''
                    continue
            if len(ups) + len(prefixes) >= max_uploads:
                truncated = True
                break
            ups.append(u)
            next_key, next_id = u.key, u.upload_id
        if not truncated:
            next_key = next_id = ''
        body = xmlgen.list_uploads(bucket, prefix, delimiter, key_marker, id_marker, max_uploads, ups, prefixes,
                                   truncated, next_key, next_id, url)
        self._send(200, [('Content-Type', 'application/xml')], body)
