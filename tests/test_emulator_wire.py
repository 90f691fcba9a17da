"""The emulator's own request reader, reactor and journal: what a client sees on the wire, and what
a killed emulator keeps."""

import base64
import email.utils
import hashlib
import hmac
import json
import os
import socket

import oss2

from oss_emulator import start_process
from oss_emulator.store import key_hash

AK, SK = 'wire-ak', 'wire-secret'


def _connect(endpoint):
    host, port = endpoint.rsplit('/', 1)[1].split(':')
    return socket.create_connection((host, int(port)), timeout=10)


def _read_response(sock, buffered=b''):
    """(status, headers, body, bytes after it) of one response with a Content-Length."""
    data = buffered
    while b'\r\n\r\n' not in data:
        chunk = sock.recv(65536)
        assert chunk, 'connection closed before a response'
        data += chunk
    head, _, rest = data.partition(b'\r\n\r\n')
    lines = head.decode('latin-1').split('\r\n')
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(':') for line in lines[1:])}
    length = int(headers.get('content-length', 0))
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, 'connection closed inside a body'
        rest += chunk
    return int(lines[0].split()[1]), headers, rest[:length], rest[length:]


def _signed_put(bucket_name, key, body):
    """The header block of a PutObject signed with OSS V1."""
    date = email.utils.formatdate(usegmt=True)
    to_sign = 'PUT\n\napplication/octet-stream\n%s\n/%s/%s' % (date, bucket_name, key)
    sig = base64.b64encode(hmac.new(SK.encode(), to_sign.encode(), hashlib.sha1).digest()).decode()
    return ('PUT /%s/%s HTTP/1.1\r\nHost: 127.0.0.1\r\nDate: %s\r\nContent-Type: application/octet-stream\r\n'
            'Content-Length: %d\r\nAuthorization: OSS %s:%s\r\n\r\n'
            % (bucket_name, key, date, len(body), AK, sig)).encode()


def test_a_half_sent_request_holds_up_no_one_and_is_served_when_complete(tmp_path):
    h = start_process(str(tmp_path / 'd'), AK, SK)
    try:
        b = oss2.Bucket(oss2.Auth(AK, SK), h.endpoint, 'half')
        b.create_bucket()
        body = os.urandom(3000)
        slow = _connect(h.endpoint)
        slow.sendall(_signed_put('half', 'slow-key', body) + body[:100])
        # the emulator serves everyone else while that body is missing
        for i in range(20):
            b.put_object('other-%d' % i, b'x' * i)
        assert b.get_object('other-7').read() == b'x' * 7
        slow.sendall(body[100:])
        status, headers, _, _ = _read_response(slow)
        assert status == 200 and headers['etag'].strip('"') == hashlib.md5(body).hexdigest().upper()
        assert b.get_object('slow-key').read() == body
        slow.close()
    finally:
        h.stop()


def test_pipelined_requests_and_malformed_ones(tmp_path):
    h = start_process(str(tmp_path / 'd'), AK, SK)
    try:
        s = _connect(h.endpoint)
        s.sendall(b'GET /-/health HTTP/1.1\r\nHost: a\r\n\r\nGET /-/faults HTTP/1.1\r\nHost: a\r\n\r\n')
        status, _, body, rest = _read_response(s)
        assert (status, body) == (200, b'ok\n')
        status, _, body, rest = _read_response(s, rest)
        assert (status, body, rest) == (200, b'\n', b'')
        s.close()
        for request, want in ((b'NONSENSE\r\n\r\n', 400), (b'BREW /pot HTTP/1.1\r\n\r\n', 501),
                              (b'GET / HTTP/2.0\r\n\r\n', 505),
                              (b'GET / HTTP/1.1\r\nX-Long: ' + b'a' * 70000 + b'\r\n\r\n', 431)):
            s = _connect(h.endpoint)
            s.sendall(request)
            status, headers, _, _ = _read_response(s)
            assert (status, headers.get('connection')) == (want, 'close'), request[:30]
            assert s.recv(100) == b''  # and the connection is closed
            s.close()
        # HTTP/1.0 without keep-alive: answered, then closed
        s = _connect(h.endpoint)
        s.sendall(b'GET /-/health HTTP/1.0\r\n\r\n')
        status, headers, _, _ = _read_response(s)
        assert (status, headers['connection'], s.recv(100)) == (200, 'close', b'')
        s.close()
    finally:
        h.stop()


def test_a_killed_emulator_keeps_what_its_journal_says_and_nothing_torn(tmp_path):
    data = tmp_path / 'd'
    h = start_process(str(data), AK, SK)
    try:
        b = oss2.Bucket(oss2.Auth(AK, SK), h.endpoint, 'journal')
        b.create_bucket()
        b.put_object('a', b'first')
        b.put_object('b', b'gone soon')
        b.put_object('a', b'second')
        b.put_object_acl('a', oss2.OBJECT_ACL_PUBLIC_READ)
        b.delete_object('b')
        b.put_object('c', b'third')
    finally:
        h.kill()
    with open(data / 'journal' / 'journal.log', 'ab') as f:
        f.write(b'{"o": {"key": "torn", "si')  # the line a kill cut short
    h = start_process(str(data), AK, SK)
    try:
        b = oss2.Bucket(oss2.Auth(AK, SK), h.endpoint, 'journal')
        assert [o.key for o in oss2.ObjectIterator(b)] == ['a', 'c']
        assert b.get_object('a').read() == b'second' and b.get_object('c').read() == b'third'
        assert b.get_object_acl('a').acl == oss2.OBJECT_ACL_PUBLIC_READ
        data_files = [n for _, _, names in os.walk(data / 'journal' / 'obj') for n in names]
        assert len(data_files) == 2 and all(n.endswith('.data') for n in data_files)
        lines = (data / 'journal' / 'journal.log').read_bytes().splitlines()
        assert [json.loads(line)['o']['key'] for line in lines] == ['a', 'c']  # rewritten at start
    finally:
        h.stop()


def test_a_data_directory_from_before_the_journal_is_served_and_folded_into_it(tmp_path):
    bucket_dir = tmp_path / 'd' / 'legacy'
    for sub in ['tmp', 'mpu'] + ['obj/%02x' % i for i in range(256)]:
        (bucket_dir / sub).mkdir(parents=True)
    (bucket_dir / 'bucket.json').write_text('{"created": 1700000000.0}')
    h = key_hash('old/key')
    body = b'written by an emulator without a journal'
    (bucket_dir / 'obj' / h[:2] / (h + '.0123456789ab.data')).write_bytes(body)
    meta = {'key': 'old/key', 'size': len(body), 'etag': hashlib.md5(body).hexdigest().upper(), 'crc64': 0,
            'mtime': 1700000000.0, 'otype': 'Normal', 'data': h + '.0123456789ab.data',
            'headers': {'content-type': 'text/plain'}}
    (bucket_dir / 'obj' / h[:2] / (h + '.meta')).write_text(json.dumps(meta))
    emu = start_process(str(tmp_path / 'd'), AK, SK)
    try:
        b = oss2.Bucket(oss2.Auth(AK, SK), emu.endpoint, 'legacy')
        got = b.get_object('old/key')
        assert got.read() == body and got.headers['Content-Type'] == 'text/plain'
        assert not (bucket_dir / 'obj' / h[:2] / (h + '.meta')).exists()
        assert json.loads((bucket_dir / 'journal.log').read_text())['o']['key'] == 'old/key'
    finally:
        emu.stop()


def test_with_fsync_every_kind_of_write_is_kept_across_a_kill(tmp_path):
    data = str(tmp_path / 'd')
    h = start_process(data, AK, SK, extra_args=['--fsync'])
    try:
        b = oss2.Bucket(oss2.Auth(AK, SK), h.endpoint, 'durable')
        b.create_bucket()
        b.put_object('small', b'kept')
        b.put_object('gone', b'deleted')
        b.delete_object('gone')
        b.append_object('log', 0, b'one,')
        b.append_object('log', 4, b'two')
        up = b.init_multipart_upload('parts').upload_id
        part = b.upload_part('parts', up, 1, b'p' * 1000)
        b.complete_multipart_upload('parts', up, [oss2.models.PartInfo(1, part.etag)])
        b.copy_object('durable', 'small', 'copied')
    finally:
        h.kill()
    h = start_process(data, AK, SK)
    try:
        b = oss2.Bucket(oss2.Auth(AK, SK), h.endpoint, 'durable')
        assert [o.key for o in oss2.ObjectIterator(b)] == ['copied', 'log', 'parts', 'small']
        assert b.get_object('copied').read() == b'kept' and b.get_object('log').read() == b'one,two'
        assert b.get_object('parts').read() == b'p' * 1000
    finally:
        h.stop()
