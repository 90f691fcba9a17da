"""HTTP front end of the OSS emulator: request parsing, routing, fault injection, the admin
endpoints (``/-/faults``, ``/-/stats``, ``/-/health``). The operations are in ``handlers``."""

from __future__ import annotations

import base64
import hashlib
import io
import ipaddress
import itertools
import json
import re
import select
import socket
import socketserver
import struct
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple
from urllib.parse import parse_qsl, unquote

from .auth import V1_SUBRESOURCES, Authenticator
from .faults import FaultInjector
from .handlers import BucketOps, MultipartOps, ObjectOps, S3Dialect
from .http1 import REASONS, BadRequest, Request, error_response, read_request
from .reactor import PrefixedSocketIO, Reactor
from .store import IO_CHUNK, Store, StoreError, crc64_update, write_new_file
from .wire import SMALL_BODY, http_date, unlink_quietly

BUCKET_RE = re.compile(r'^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$')
# sub-resources the emulator implements; any other signed sub-resource is answered NotImplemented
SUPPORTED_SUBRESOURCES = frozenset([
    'acl', 'uploadId', 'uploads', 'partNumber', 'delete', 'location', 'bucketInfo', 'objectMeta', 'append',
    'position', 'live', 'security-token', 'continuation-token', 'response-content-type',
    'response-content-language', 'response-cache-control', 'response-content-encoding', 'response-expires',
    'response-content-disposition', 'x-oss-traffic-limit', 'x-oss-request-payer',
])
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


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip('[]'))
        return True
    except ValueError:
        return False


class SocketWriter:
    """What handlers write responses to: straight to the socket, no buffer to flush."""

    def __init__(self, sock: socket.socket):
        self._sock = sock

    def write(self, data) -> int:
        self._sock.sendall(data)
        return len(data)


class OssRequestHandler(BucketOps, ObjectOps, MultipartOps, S3Dialect):
    """One connection's requests: ``serve`` takes one read by the reactor or by the connection's own
    thread (``reactor``), names its operation (``classify``), injects the faults asked for,
    authenticates it and calls the ``op_`` method of the part (``handlers``) that serves it."""

    emu: Emulator  # set on a per-server subclass

    def __init__(self, sock: socket.socket, client_address):
        self.connection = sock
        self.client_address = client_address
        # responses are written as header block + body; without NODELAY the body waits on delayed ACKs
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.wfile = SocketWriter(sock)
        self.rfile = None  # the current request's bytes: set by the reactor or run_threaded
        self.close_connection = False

    def serve(self, req: Request) -> None:
        self.command, self.path, self.request_version = req.method, req.path, req.version
        self.headers = req.headers
        self.close_connection = not req.keep_alive
        if req.expect_continue:
            self.wfile.write(b'HTTP/1.1 100 Continue\r\n\r\n')
        self._handle()
        if not self.close_connection and not self._body_done:
            self._drain()  # a body no handler read would be parsed as the next request
        if self.emu.verbose:
            sys.stderr.write('%s - "%s %s %s" %d\n' % (self.client_address[0], req.method, req.path,
                                                         req.version, self._status))

    def run_threaded(self, received: bytes = b'') -> None:
        """Serve the connection's requests in this thread until it closes; ``received`` are
        its bytes the reactor already read."""
        self.rfile = io.BufferedReader(PrefixedSocketIO(received, self.connection), 64 * 1024)
        try:
            while not self.close_connection:
                try:
                    req = read_request(self.rfile)
                except BadRequest as e:
                    self._refuse(e)
                    return
                if req is None:
                    return
                self.serve(req)
        except (OSError, UnicodeError):
            pass
        finally:
            self.finish()

    def finish(self) -> None:
        try:
            self.connection.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self.connection.close()

    def _refuse(self, e: BadRequest) -> None:
        try:
            self.wfile.write(error_response(e.status, e.message, http_date(time.time())))
        except OSError:
            pass

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
        if not self._chunked and self._body_decoder is None and self._remaining <= SMALL_BODY:
            data = self._read_body(SMALL_BODY)  # the common small PUT: one read, one write
            write_new_file(path, data)
            d = hashlib.md5(data).digest()
            return len(data), d.hex().upper(), crc64_update(data, 0), d
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

    def _receive_checked(self, path: str) -> Tuple[int, str, int, bytes]:
        """``_receive_to_file``, then the Content-MD5 check; ``path`` is removed if either fails."""
        try:
            received = self._receive_to_file(path)
        except BaseException:
            unlink_quietly(path)
            raise
        self._check_md5(received[3], path)
        return received

    def _check_md5(self, digest: bytes, tmp: Optional[str] = None) -> None:
        want = self.headers.get('Content-MD5')
        if want is not None and base64.b64encode(digest).decode() != want.strip():
            if tmp:
                unlink_quietly(tmp)
            raise StoreError('InvalidDigest', 'The Content-MD5 you specified was invalid.', 400)

    # --------------------------------------------------------------- response
    def _send(self, status: int, headers: Optional[List[Tuple[str, str]]] = None, body: bytes = b'',
              content_length: Optional[int] = None, chunked: bool = False) -> None:
        lines = ['HTTP/1.1 %d %s' % (status, REASONS.get(status, '')),
                 'Server: AliyunOSS', 'Date: ' + http_date(time.time()),
                 'x-oss-request-id: ' + self._rid]
        headers = self._dialect_response_headers(headers)
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
        body = self._error_body(e)
        headers = [('Content-Type', 'application/xml'), ('x-oss-ec', '0000-00000000')]
        headers.extend(e.headers.items())
        if self.command == 'HEAD':
            headers.append(('x-oss-err', base64.b64encode(body).decode()))
        self._drain()
        self._send(e.status, headers, body)

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
        self._take_dialect(wire_headers, pdict)
        try:
            bucket, key = self._resolve(raw_path)
        except StoreError as e:
            self._error(e)
            return
        op = self._classify(bucket, key, pdict)
        pdict = self._dialect_params(op, pdict)
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
        unsupported = self._s3_only_subresource(p)
        if unsupported:
            return 'Unsupported_' + unsupported
        return classify(self.command, bucket, key, p, self.headers)

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
        if hostname and '.' in hostname and hostname != 'localhost' and not self._host_is_ip(hostname):
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

    def _host_is_ip(self, hostname: str) -> bool:
        # a connection sends the same Host on every request; parsing it once per connection is enough
        known = getattr(self, '_host_kind', None)
        if known is None or known[0] != hostname:
            known = self._host_kind = (hostname, _is_ip(hostname))
        return known[1]

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

    def _endpoint(self) -> str:
        return self.emu.endpoint or (self.headers.get('Host') or '')


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




class EmulatorServer(socketserver.TCPServer):
    """Accepts connections and gives each to the reactor (``reactor``); where there is no epoll,
    each connection gets a thread of its own."""

    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(self, address, handler_class, quiet: bool = True):
        super().__init__(address, handler_class)
        self.reactor = Reactor(quiet=quiet) if hasattr(select, 'epoll') else None

    def process_request(self, request, client_address):
        handler = self.RequestHandlerClass(request, client_address)
        if self.reactor is not None:
            self.reactor.add(handler)
        else:
            threading.Thread(target=handler.run_threaded, daemon=True).start()

    def server_close(self):
        super().server_close()
        if self.reactor is not None:
            self.reactor.close()
            self.reactor = None
        emu = getattr(self, 'emu', None)
        if emu is not None:
            emu.store.close()

    def handle_error(self, request, client_address):
        # A client that hangs up (a test's short timeout, a killed worker) is normal traffic for
        # a test server; only real faults deserve socketserver's traceback on stderr.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


def make_server(host: str, port: int, data_dir: str, credentials: Dict[str, str], faults: Optional[str] = None,
                seed: Optional[int] = None, verbose: bool = False, quiet: bool = False,
                fsync: bool = False) -> EmulatorServer:
    emu = Emulator(store=Store(data_dir, fsync=fsync), auth=Authenticator(credentials),
                   faults=FaultInjector(faults, seed),
                   stats=Stats(), verbose=verbose, quiet=quiet)
    handler = type('BoundOssRequestHandler', (OssRequestHandler,), {'emu': emu})
    srv = EmulatorServer((host, port), handler, quiet=quiet)
    emu.endpoint = '%s:%d' % (host, srv.server_address[1])
    emu.host_id = emu.endpoint
    srv.emu = emu
    return srv
