"""HTTP front end of the OSS emulator: request parsing, routing, fault injection."""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import ipaddress
import itertools
import json
import os
import re
import socket
import struct
import sys
import threading
import time
import uuid
import zlib
from dataclasses import dataclass, field
from email.utils import formatdate, parsedate_tz, mktime_tz
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional, Tuple
from urllib.parse import parse_qsl, unquote
from xml.etree import ElementTree

from . import s3, s3auth, s3body, xmlgen
from .auth import V1_SUBRESOURCES, AuthRequest, Authenticator
from .faults import FaultInjector
from .store import (IO_CHUNK, ObjectMeta, Store, StoreError, crc64_update, iter_file_range)

BUCKET_RE = re.compile(r'^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$')
# sub-resources the emulator implements; any other signed sub-resource is answered NotImplemented
SUPPORTED_SUBRESOURCES = frozenset([
    'acl', 'uploadId', 'uploads', 'partNumber', 'delete', 'location', 'bucketInfo', 'objectMeta', 'append',
    'position', 'live', 'security-token', 'continuation-token', 'response-content-type',
    'response-content-language', 'response-cache-control', 'response-content-encoding', 'response-expires',
    'response-content-disposition', 'x-oss-traffic-limit', 'x-oss-request-payer',
])
STORED_HEADERS = ('content-type', 'content-encoding', 'cache-control', 'content-disposition', 'expires',
                  'content-language', 'x-oss-server-side-encryption', 'x-oss-server-side-encryption-key-id',
                  'x-oss-server-side-data-encryption')
GZIP_TYPES = ('text/', 'application/javascript', 'application/x-javascript', 'application/json',
              'application/xml', 'application/xhtml+xml')
SMALL_BODY = 64 * 1024
MAX_XML_BODY = 8 * 1024 * 1024
MAX_DRAIN = 64 * 1024 * 1024


@dataclass
class Stats:
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: int = 0
    by_operation: Dict[str, int] = field(default_factory=dict)
    by_method: Dict[str, int] = field(default_factory=dict)
    by_status: Dict[str, int] = field(default_factory=dict)
    faults: Dict[str, int] = field(default_factory=dict)

    def count(self, operation: str, method: str) -> None:
        with self.lock:
            self.requests += 1
            self.by_operation[operation] = self.by_operation.get(operation, 0) + 1
            self.by_method[method] = self.by_method.get(method, 0) + 1

    def status(self, status: int) -> None:
        with self.lock:
            k = str(status)
            self.by_status[k] = self.by_status.get(k, 0) + 1

    def fault(self, kind: str) -> None:
        with self.lock:
            self.faults[kind] = self.faults.get(kind, 0) + 1

    def snapshot(self) -> dict:
        with self.lock:
            return {'requests': self.requests, 'by_operation': dict(self.by_operation),
                    'by_method': dict(self.by_method), 'by_status': dict(self.by_status),
                    'faults_injected': dict(self.faults)}


@dataclass
class Emulator:
    store: Store
    auth: Authenticator
    faults: FaultInjector
    stats: Stats
    host_id: str = '127.0.0.1'
    endpoint: str = ''
    verbose: bool = False
    quiet: bool = False
    request_ids: 'itertools.count' = field(default_factory=itertools.count)
    rid_prefix: str = field(default_factory=lambda: uuid.uuid4().hex[:16].upper())


class ConnectionAbort(Exception):
    """Raised to drop the connection without answering (fault injection)."""


def http_date(ts: float) -> str:
    return formatdate(ts, usegmt=True)


def _parse_http_date(value: str) -> Optional[float]:
    parsed = parsedate_tz(value) if value else None
    return mktime_tz(parsed) if parsed else None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip('[]'))
        return True
    except ValueError:
        return False


class OssRequestHandler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    server_version = 'AliyunOSS'
    sys_version = ''
    emu: Emulator  # set on a per-server subclass

    def setup(self):
        super().setup()
        # responses are written as header block + body; without NODELAY the body waits on delayed ACKs
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format, *args):
        if self.emu.verbose:
            sys.stderr.write('%s - %s\n' % (self.address_string(), format % args))

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_OPTIONS = lambda self: self._handle()

    # ------------------------------------------------------------ body access
    def _init_body(self) -> None:
        te = self.headers.get('Transfer-Encoding', '')
        self._chunked = 'chunked' in te.lower()
        cl = self.headers.get('Content-Length')
        self._remaining = int(cl) if cl and not self._chunked else 0
        self._body_done = not self._chunked and self._remaining == 0
        self._body_decoder = None  # S3 requests: aws-chunked decoding and digest checks

    def _iter_body(self):
        """The request body as the handlers see it (for S3: decoded and checked)."""
        raw = self._iter_http_body()
        return self._body_decoder(raw) if self._body_decoder is not None else raw

    def _iter_http_body(self):
        rfile = self.rfile
        if self._chunked:
            while not self._body_done:
                line = rfile.readline(65537)
                if not line:
                    raise ConnectionAbort()
                size = int(line.split(b';', 1)[0].strip() or b'0', 16)
                if size == 0:
                    while True:  # trailers
                        t = rfile.readline(65537)
                        if t in (b'\r\n', b'\n', b''):
                            break
                    self._body_done = True
                    return
                left = size
                while left > 0:
                    data = rfile.read(min(left, IO_CHUNK))
                    if not data:
                        raise ConnectionAbort()
                    left -= len(data)
                    yield data
                rfile.readline(3)
        else:
            while self._remaining > 0:
                data = rfile.read(min(self._remaining, IO_CHUNK))
                if not data:
                    raise ConnectionAbort()
                self._remaining -= len(data)
                yield data
            self._body_done = True

    def _read_body(self, limit: int = MAX_XML_BODY) -> bytes:
        if not self._chunked and self._remaining <= limit and self._body_decoder is None:
            data = self.rfile.read(self._remaining) if self._remaining else b''
            if len(data) != self._remaining:
                raise ConnectionAbort()
            self._remaining = 0
            self._body_done = True
            return data
        parts, total = [], 0
        for chunk in self._iter_body():
            total += len(chunk)
            if total > limit:
                raise StoreError('EntityTooLarge', 'Request body too large.', 400)
            parts.append(chunk)
        return b''.join(parts)

    def _drain(self) -> None:
        if self._body_done:
            return
        if not self._chunked and self._remaining > MAX_DRAIN:
            self.close_connection = True
            return
        try:
            for _ in self._iter_http_body():
                pass
        except (ConnectionAbort, ValueError, OSError):
            self.close_connection = True

    def _receive_to_file(self, path: str) -> Tuple[int, str, int, bytes]:
        """Stream the body into ``path``; return size, md5 hex (upper), crc64, md5 digest."""
        md5 = hashlib.md5()
        crc = 0
        size = 0
        with open(path, 'wb') as f:
            for chunk in self._iter_body():
                md5.update(chunk)
                crc = crc64_update(chunk, crc)
                size += len(chunk)
                f.write(chunk)
        d = md5.digest()
        return size, d.hex().upper(), crc, d

    def _check_md5(self, digest: bytes, tmp: Optional[str] = None) -> None:
        want = self.headers.get('Content-MD5')
        if want is not None and base64.b64encode(digest).decode() != want.strip():
            if tmp:
                _unlink(tmp)
            raise StoreError('InvalidDigest', 'The Content-MD5 you specified was invalid.', 400)

    # --------------------------------------------------------------- response
    def _send(self, status: int, headers: Optional[List[Tuple[str, str]]] = None, body: bytes = b'',
              content_length: Optional[int] = None, chunked: bool = False) -> None:
        lines = ['HTTP/1.1 %d %s' % (status, self.responses.get(status, ('',))[0]),
                 'Server: AliyunOSS', 'Date: ' + http_date(time.time()),
                 'x-oss-request-id: ' + self._rid]
        if self._s3:
            headers = s3.s3_response_headers(headers or [], self._rid)
        if status == 304:
            body = b''  # a 304 has no body, whatever Content-Length says; one would desync the connection
        for k, v in headers or ():
            lines.append('%s: %s' % (k, v))
        if chunked:
            lines.append('Transfer-Encoding: chunked')
        else:
            lines.append('Content-Length: %d' % (len(body) if content_length is None else content_length))
        if self.close_connection:
            lines.append('Connection: close')
        else:
            lines.append('Connection: keep-alive')
        head = ('\r\n'.join(lines) + '\r\n\r\n').encode('latin-1', 'replace')
        self._status = status
        if self.command == 'HEAD':
            body = b''
        self.wfile.write(head + body if len(body) <= SMALL_BODY else head)
        if len(body) > SMALL_BODY:
            self.wfile.write(body)

    def _error(self, e: StoreError) -> None:
        if self._s3:
            body = s3.error_body(e.code, e.message, self.path.partition('?')[0], self._rid, self.emu.host_id,
                                 e.details)
        else:
            body = self._oss_error_body(e)
        headers = [('Content-Type', 'application/xml'), ('x-oss-ec', '0000-00000000')]
        headers.extend(e.headers.items())
        if self.command == 'HEAD':
            headers.append(('x-oss-err', base64.b64encode(body).decode()))
        self._drain()
        self._send(e.status, headers, body)

    def _oss_error_body(self, e: StoreError) -> bytes:
        extra = ''
        if e.code == 'SignatureDoesNotMatch':
            extra = '<OSSAccessKeyId>%s</OSSAccessKeyId>' % xmlgen.escape(self._access_key_hint())
        return xmlgen.error(e.code, e.message, self._rid, self.emu.host_id, extra)

    def _access_key_hint(self) -> str:
        auth = self.headers.get('Authorization', '')
        m = re.match(r'OSS (\S+?):', auth)
        return m.group(1) if m else ''

    # ---------------------------------------------------------------- routing
    def _handle(self) -> None:
        emu = self.emu
        self._rid = '%s%08X' % (emu.rid_prefix, next(emu.request_ids))
        self._status = 0
        self._s3 = False
        try:
            self._init_body()
        except ValueError:
            self.close_connection = True
            return
        raw_path, _, query = self.path.partition('?')
        if raw_path.startswith('/-/'):
            self._admin(raw_path)
            return
        params = parse_qsl(query, keep_blank_values=True)
        pdict = dict(params)
        wire_headers = self.headers
        self._s3 = s3auth.is_signed_s3(wire_headers.get('Authorization', ''), pdict)
        if self._s3:
            self.headers = s3.oss_view_of_headers(wire_headers)
        try:
            bucket, key = self._resolve(raw_path)
        except StoreError as e:
            self._error(e)
            return
        op = self._classify(bucket, key, pdict)
        if self._s3:
            pdict = s3.s3_params(op, pdict)
        emu.stats.count(op, self.command)
        try:
            fault = emu.faults.choose(op)
            if fault is not None:
                emu.stats.fault(fault.kind)
                if fault.kind == 'slow':
                    time.sleep(fault.delay)
                elif fault.kind == 'reset':
                    self._drain()
                    raise ConnectionAbort()
                elif fault.kind == '500':
                    raise StoreError('InternalError', 'We encountered an internal error. Please try again.', 500)
                elif fault.kind == '503':
                    raise StoreError('ServiceUnavailable', 'Service is unavailable. Please retry later.', 503)
                elif fault.kind == 'throttle':
                    raise StoreError('TotalQpsLimitExceeded', 'Please reduce your request rate.', 503)
                elif fault.kind == '429':
                    raise StoreError('QpsLimitExceeded', 'Please reduce your request rate.', 429)
            if bucket and not BUCKET_RE.match(bucket):
                raise StoreError('InvalidBucketName', 'The specified bucket is not valid.', 400)
            if key:
                kb = key.encode('utf-8', 'surrogatepass')
                if len(kb) > 1023 or key[0] in '/\\' or '\ufffd' in key:
                    raise StoreError('InvalidObjectName', 'The specified object is not valid.', 400)
            self._authenticate(wire_headers, bucket, key, params, raw_path, query)
            handler = getattr(self, 'op_' + op, None)
            if handler is None:
                raise StoreError('NotImplemented', 'The emulator does not implement %s.' % op, 501)
            handler(bucket, key, pdict)
        except StoreError as e:
            try:
                self._error(e)
            except OSError:
                self.close_connection = True
        except ConnectionAbort:
            self._reset()
        except (ConnectionError, BrokenPipeError, socket.timeout):
            self.close_connection = True
        except Exception as e:  # a bug in the emulator must not kill the connection thread silently
            if not emu.quiet:
                import traceback
                traceback.print_exc()
            if self._status == 0:
                try:
                    self._error(StoreError('InternalError', 'Emulator error: %r' % e, 500))
                except OSError:
                    pass
            self.close_connection = True
        finally:
            if self._status:
                emu.stats.status(self._status)

    def _classify(self, bucket: str, key: str, p: Dict[str, str]) -> str:
        unsupported = s3.unsupported_subresource(p) if self._s3 else None
        if unsupported:
            return 'Unsupported_' + unsupported
        return classify(self.command, bucket, key, p, self.headers)

    def _authenticate(self, wire_headers, bucket, key, params, raw_path, query) -> None:
        if not self._s3:
            self.emu.auth.verify(AuthRequest(self.command, bucket, key, params, wire_headers.items()))
            return
        header_values = functools.partial(_all_values, wire_headers)
        grant = s3auth.verify(s3auth.S3Request(self.command, raw_path, query, header_values),
                              self.emu.auth.credentials)
        self._body_decoder = functools.partial(s3body.decoded_body, header_values=header_values,
                                               signer=grant.chunk_signer)

    def _reset(self) -> None:
        # SO_LINGER 0 turns close() into an RST, which clients see as "connection reset by peer"
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
        except OSError:
            pass
        self.close_connection = True

    def _resolve(self, raw_path: str) -> Tuple[str, str]:
        host = (self.headers.get('Host') or '').strip()
        hostname = host.rsplit(':', 1)[0] if not host.endswith(']') else host
        if hostname and '.' in hostname and hostname != 'localhost' and not _is_ip(hostname):
            bucket = hostname.split('.', 1)[0]
            key_raw = raw_path[1:]
        else:
            bucket_raw, _, key_raw = raw_path[1:].partition('/')
            bucket = unquote(bucket_raw)
        try:
            key = unquote(key_raw, errors='strict')
        except UnicodeDecodeError:
            raise StoreError('InvalidObjectName', 'Object name is not valid UTF-8.', 400)
        return bucket, key

    # ------------------------------------------------------------------ admin
    def _admin(self, path: str) -> None:
        emu = self.emu
        try:
            if path == '/-/faults' and self.command == 'PUT':
                spec = self._read_body(65536).decode().strip()
                try:
                    emu.faults.set_spec(spec)
                except ValueError as e:
                    self._send(400, [('Content-Type', 'text/plain')], (str(e) + '\n').encode())
                    return
                self._send(200, [('Content-Type', 'text/plain')], (emu.faults.spec() + '\n').encode())
            elif path == '/-/faults' and self.command == 'GET':
                self._send(200, [('Content-Type', 'text/plain')], (emu.faults.spec() + '\n').encode())
            elif path == '/-/stats' and self.command == 'GET':
                self._send(200, [('Content-Type', 'application/json')],
                           json.dumps(emu.stats.snapshot(), sort_keys=True).encode())
            elif path == '/-/health':
                self._send(200, [('Content-Type', 'text/plain')], b'ok\n')
            else:
                self._drain()
                self._send(404, [('Content-Type', 'text/plain')], b'unknown admin endpoint\n')
        except (ConnectionAbort, OSError):
            self.close_connection = True

    # -------------------------------------------------------------- service
    def op_ListBuckets(self, bucket, key, p):
        prefix, marker = p.get('prefix', ''), p.get('marker', '')
        max_keys = _int_param(p, 'max-keys', 100, 1000)
        names = [b for b in self.emu.store.list_buckets() if b.name.startswith(prefix) and b.name > marker]
        page, truncated = names[:max_keys], len(names) > max_keys
        body = xmlgen.list_buckets(page, prefix, marker, max_keys, truncated, page[-1].name if truncated else '',
                                   self._endpoint())
        self._send(200, [('Content-Type', 'application/xml')], body)

    def _endpoint(self) -> str:
        return self.emu.endpoint or (self.headers.get('Host') or '')

    # --------------------------------------------------------------- bucket
    def op_PutBucket(self, bucket, key, p):
        body = self._read_body()
        sc = 'Standard'
        if body.strip():
            try:
                node = _parse_xml(body).find('StorageClass')
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
                                          _int_param(p, 'max-keys', 100, 1000))
        self._send(200, [('Content-Type', 'application/xml')], body)

    def op_ListObjects(self, bucket, key, p):
        b = self.emu.store.get_bucket(bucket)
        prefix, marker, delimiter = p.get('prefix', ''), p.get('marker', ''), p.get('delimiter', '')
        max_keys = _int_param(p, 'max-keys', 100, 1000)
        url = _encoding(p)
        page = self.emu.store.list_objects(b, prefix, marker, delimiter, max_keys)
        self._send(200, [('Content-Type', 'application/xml')],
                   xmlgen.list_objects(bucket, prefix, marker, max_keys, delimiter, url, page))

    def op_ListObjectsV2(self, bucket, key, p):
        b = self.emu.store.get_bucket(bucket)
        prefix, delimiter = p.get('prefix', ''), p.get('delimiter', '')
        start_after = p.get('start-after')
        token = p.get('continuation-token') or None  # oss2 always sends the parameter, often empty
        max_keys = _int_param(p, 'max-keys', 100, 1000)
        url = _encoding(p)
        marker = start_after or ''
        if token is not None:
            marker = _decode_token(token)
        page = self.emu.store.list_objects(b, prefix, marker, delimiter, max_keys)
        next_token = _encode_token(page.next_marker) if page.truncated else ''
        body = xmlgen.list_objects_v2(bucket, prefix, start_after, token, max_keys, delimiter, url,
                                      p.get('fetch-owner') == 'true', page, next_token)
        self._send(200, [('Content-Type', 'application/xml')], body)

    def op_DeleteMultipleObjects(self, bucket, key, p):
        b = self.emu.store.get_bucket(bucket)
        body = self._read_body()
        self._check_md5(hashlib.md5(body).digest())
        try:
            root = _parse_xml(_shield_controls(body))
        except ElementTree.ParseError:
            raise StoreError('MalformedXML', 'The XML you provided was not well-formed.', 400)
        quiet = (root.findtext('Quiet') or 'false').strip().lower() == 'true'
        keys = [_unshield_controls(o.findtext('Key') or '') for o in root.findall('Object')]
        if len(keys) > 1000:
            raise StoreError('MalformedXML', 'Too many objects to delete (max 1000).', 400)
        for k in keys:
            self.emu.store.delete_object(b, k)
        self._send(200, [('Content-Type', 'application/xml')],
                   xmlgen.delete_result([] if quiet else keys, _encoding(p)))

    def op_ListMultipartUploads(self, bucket, key, p):
        b = self.emu.store.get_bucket(bucket)
        prefix, delimiter = p.get('prefix', ''), p.get('delimiter', '')
        key_marker, id_marker = p.get('key-marker', ''), p.get('upload-id-marker', '')
        max_uploads = _int_param(p, 'max-uploads', 1000, 1000)
        url = _encoding(p)
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

    # --------------------------------------------------------------- object
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
        tmp = store.new_temp_path(b)
        try:
            size, etag, crc, digest = self._receive_to_file(tmp)
        except BaseException:
            _unlink(tmp)
            raise
        self._check_md5(digest, tmp)
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
        try:
            size, _, crc, digest = self._receive_to_file(tmp)
        except BaseException:
            _unlink(tmp)
            raise
        self._check_md5(digest, tmp)
        try:
            m = store.append(b, key, position, tmp, size, crc, self._request_meta())
        finally:
            _unlink(tmp)
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
        ius = _parse_http_date(h.get('If-Unmodified-Since', ''))
        if ius is not None and int(m.mtime) > ius:
            raise StoreError('PreconditionFailed', 'At least one of the pre-conditions you specified did not hold.',
                             412)
        inm = h.get('If-None-Match')
        if inm is not None and (inm.strip().strip('"').upper() == m.etag or inm.strip() == '*'):
            raise StoreError('NotModified', 'Not Modified', 304, {'ETag': '"%s"' % m.etag})
        ims = _parse_http_date(h.get('If-Modified-Since', ''))
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

    # ------------------------------------------------------------- multipart
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
                   xmlgen.init_upload(bucket, key, up.upload_id, _encoding(p)))

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
        try:
            size, etag, crc, digest = self._receive_to_file(tmp)
        except BaseException:
            _unlink(tmp)
            raise
        self._check_md5(digest, tmp)
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
                root = _parse_xml(body)
                parts = [(int(x.findtext('PartNumber')), x.findtext('ETag') or '') for x in root.findall('Part')]
            except (ElementTree.ParseError, TypeError, ValueError):
                raise StoreError('MalformedXML', 'The XML you provided was not well-formed.', 400)
        self._check_forbid_overwrite(b, key)
        m = store.complete_upload(b, up, parts)
        loc = 'http://%s/%s/%s' % (self._endpoint(), bucket, key)
        self._send(200, [('Content-Type', 'application/xml')] + self._write_headers(m),
                   xmlgen.complete_upload(bucket, key, m, _encoding(p), loc))

    def op_AbortMultipartUpload(self, bucket, key, p):
        store = self.emu.store
        b = store.get_bucket(bucket)
        store.abort_upload(b, store.get_upload(b, p.get('uploadId', ''), key))
        self._send(204)

    def op_ListParts(self, bucket, key, p):
        store = self.emu.store
        b = store.get_bucket(bucket)
        up = store.get_upload(b, p.get('uploadId', ''), key)
        marker = _int_param(p, 'part-number-marker', 0, 10000)
        max_parts = _int_param(p, 'max-parts', 1000, 1000)
        parts = [up.parts[n] for n in sorted(up.parts) if n > marker]
        truncated = len(parts) > max_parts
        parts = parts[:max_parts]
        self._send(200, [('Content-Type', 'application/xml')],
                   xmlgen.list_parts(bucket, up, marker, max_parts, parts, truncated, _encoding(p)))


def classify(method: str, bucket: str, key: str, p: Dict[str, str], headers) -> str:
    """Name the OSS operation of a request (used for routing, stats and per-operation faults)."""
    unsupported = [k for k in p if k in V1_SUBRESOURCES and k not in SUPPORTED_SUBRESOURCES]
    if unsupported:
        return 'Unsupported_' + unsupported[0]
    if not bucket:
        return 'ListBuckets' if method == 'GET' else 'Unsupported_Service' + method
    if not key:
        if method == 'PUT':
            return 'PutBucketAcl' if 'acl' in p else 'PutBucket'
        if method == 'GET':
            for sub, op in (('acl', 'GetBucketAcl'), ('bucketInfo', 'GetBucketInfo'),
                            ('location', 'GetBucketLocation'), ('uploads', 'ListMultipartUploads'),
                            ('live', 'ListLiveChannel')):
                if sub in p:
                    return op
            return 'ListObjectsV2' if p.get('list-type') == '2' else 'ListObjects'
        if method == 'HEAD':
            return 'HeadBucket'
        if method == 'DELETE':
            return 'DeleteBucket'
        if method == 'POST' and 'delete' in p:
            return 'DeleteMultipleObjects'
        return 'Unsupported_Bucket' + method
    if method == 'PUT':
        if 'partNumber' in p and 'uploadId' in p:
            return 'UploadPartCopy' if 'x-oss-copy-source' in headers else 'UploadPart'
        if 'acl' in p:
            return 'PutObjectAcl'
        return 'CopyObject' if 'x-oss-copy-source' in headers else 'PutObject'
    if method in ('GET', 'HEAD'):
        if 'acl' in p and method == 'GET':
            return 'GetObjectAcl'
        if 'uploadId' in p and method == 'GET':
            return 'ListParts'
        if 'objectMeta' in p:
            return 'GetObjectMeta'
        return 'GetObject' if method == 'GET' else 'HeadObject'
    if method == 'DELETE':
        return 'AbortMultipartUpload' if 'uploadId' in p else 'DeleteObject'
    if method == 'POST':
        if 'uploads' in p:
            return 'InitiateMultipartUpload'
        if 'uploadId' in p:
            return 'CompleteMultipartUpload'
        if 'append' in p:
            return 'AppendObject'
    return 'Unsupported_Object' + method


def _all_values(headers, name: str) -> List[str]:
    return headers.get_all(name) or []


def _parse_xml(body: bytes) -> ElementTree.Element:
    """Parse a request body, dropping XML namespaces (S3 SDKs send the S3 one, OSS clients none)."""
    root = ElementTree.fromstring(body)
    for el in root.iter():
        if isinstance(el.tag, str) and el.tag.startswith('{'):
            el.tag = el.tag.split('}', 1)[1]
    return root


def _int_param(p: Dict[str, str], name: str, default: int, maximum: int) -> int:
    v = p.get(name)
    if v is None or v == '':
        return default
    try:
        n = int(v)
    except ValueError:
        n = -1
    if n < 0 or n > maximum:
        raise StoreError('InvalidArgument', 'Argument %s must be an integer between 0 and %d.' % (name, maximum),
                         400)
    return n


def _encoding(p: Dict[str, str]) -> bool:
    et = p.get('encoding-type')
    if et is not None and et != 'url':
        raise StoreError('InvalidArgument', 'Invalid Encoding Method specified in Request.', 400)
    return et == 'url'


def _encode_token(marker: str) -> str:
    return base64.urlsafe_b64encode(b'k:' + marker.encode('utf-8', 'surrogatepass')).decode()


def _decode_token(token: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(token.encode('ascii'))
        if raw.startswith(b'k:'):
            return raw[2:].decode('utf-8')
    except (binascii.Error, ValueError, UnicodeError):
        pass
    raise StoreError('InvalidArgument', 'The continuation token provided is incorrect.', 400)


_CONTROL_BYTES = bytes(c for c in range(0x20) if c not in (0x09, 0x0A, 0x0D))


def _shield_controls(body: bytes) -> bytes:
    # oss2 writes keys with control characters (legal in OSS keys) raw into the XML, which XML 1.0
    # forbids; swap them for private-use code points before parsing and back afterwards
    if not any(c in body for c in _CONTROL_BYTES):
        return body
    out = bytearray()
    for c in body:
        if c in _CONTROL_BYTES:
            out += chr(0xF0000 + c).encode()
        else:
            out.append(c)
    return bytes(out)


def _unshield_controls(text: str) -> str:
    return ''.join(chr(ord(ch) - 0xF0000) if 0xF0000 <= ord(ch) < 0xF0020 else ch for ch in text)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class EmulatorServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        # A client that hangs up (a test's short timeout, a killed worker) is normal traffic for
        # a test server; only real faults deserve socketserver's traceback on stderr.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


def make_server(host: str, port: int, data_dir: str, credentials: Dict[str, str], faults: Optional[str] = None,
                seed: Optional[int] = None, verbose: bool = False, quiet: bool = False) -> EmulatorServer:
    emu = Emulator(store=Store(data_dir), auth=Authenticator(credentials), faults=FaultInjector(faults, seed),
                   stats=Stats(), verbose=verbose, quiet=quiet)
    handler = type('BoundOssRequestHandler', (OssRequestHandler,), {'emu': emu})
    srv = EmulatorServer((host, port), handler)
    emu.endpoint = '%s:%d' % (host, srv.server_address[1])
    emu.host_id = emu.endpoint
    srv.emu = emu
    return srv
