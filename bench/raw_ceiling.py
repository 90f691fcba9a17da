"""The raw ceiling of a server: a tight loop of signed PUTs, no migration tool in between.

    .venv/bin/python bench/raw_ceiling.py --files 10000 --size 4k --threads 16
    .venv/bin/python bench/raw_ceiling.py --files 8 --size 128m --threads 8 --json
    .venv/bin/python bench/raw_ceiling.py --endpoint http://127.0.0.1:9000 --bucket b \\
        --key-id AK --secret SK --protocol s3

Each thread keeps one connection alive (http.client) and PUTs its share of the objects, each
request signed on its own (OSS V1 header signature, or S3 SigV4 with UNSIGNED-PAYLOAD), the way a
migration tool must. Every answer is checked (status 200, ETag = MD5 of the body), so a server
that drops or mangles writes cannot post a good number. Without --endpoint the script starts the
bundled emulator on a temporary data directory and stops it afterwards.

Reports objects/s, MiB/s, and the CPU milliseconds per object spent by this client and by the
server process (the server's only when its pid is known: our own emulator, --server-pid, or the
process found listening on the endpoint's port).
"""

from __future__ import annotations

import argparse
import base64
import email.utils
import hashlib
import hmac
import http.client
import json
import os
import secrets
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Tuple
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZE_UNITS = {'': 1, 'b': 1, 'k': 1 << 10, 'm': 1 << 20, 'g': 1 << 30}


def parse_size(text: str) -> int:
    t = text.strip().lower()
    t = t[:-2] if t.endswith('ib') else t  # 4KiB == 4k
    unit = t[-1] if t and t[-1] in SIZE_UNITS else ''
    return int(float(t[:-1] if unit else t) * SIZE_UNITS[unit])


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    bucket: str
    key_id: str
    secret: str
    protocol: str  # oss | s3


def oss_v1_headers(t: Target, method: str, path: str, resource: str, size: int) -> dict:
    """OSS V1 header signature: HMAC-SHA1 over method, MD5, type, date and the resource."""
    date = email.utils.formatdate(usegmt=True)
    content_type = 'application/octet-stream'
    to_sign = f'{method}\n\n{content_type}\n{date}\n{resource}'
    sig = base64.b64encode(hmac.new(t.secret.encode(), to_sign.encode(), hashlib.sha1).digest()).decode()
    return {'Date': date, 'Content-Type': content_type, 'Content-Length': str(size),
            'Authorization': f'OSS {t.key_id}:{sig}'}


def s3_v4_headers(t: Target, method: str, path: str, resource: str, size: int) -> dict:
    """SigV4 with UNSIGNED-PAYLOAD, region us-east-1, path-style addressing."""
    now = time.gmtime()
    amz_date = time.strftime('%Y%m%dT%H%M%SZ', now)
    day = amz_date[:8]
    host = f'{t.host}:{t.port}'
    signed = 'host;x-amz-content-sha256;x-amz-date'
    canonical = (f'{method}\n{path}\n\nhost:{host}\nx-amz-content-sha256:UNSIGNED-PAYLOAD\n'
                 f'x-amz-date:{amz_date}\n\n{signed}\nUNSIGNED-PAYLOAD')
    scope = f'{day}/us-east-1/s3/aws4_request'
    to_sign = f'AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}'
    key = ('AWS4' + t.secret).encode()
    for part in (day, 'us-east-1', 's3', 'aws4_request'):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    sig = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return {'x-amz-date': amz_date, 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD',
            'Content-Length': str(size),
            'Authorization': f'AWS4-HMAC-SHA256 Credential={t.key_id}/{scope}, '
                             f'SignedHeaders={signed}, Signature={sig}'}


SIGNERS: dict = {'oss': oss_v1_headers, 's3': s3_v4_headers}


def send(conn: http.client.HTTPConnection, t: Target, method: str, key: str,
         body: bytes = b'') -> http.client.HTTPResponse:
    path = f'/{t.bucket}/{key}' if key else f'/{t.bucket}'
    resource = f'/{t.bucket}/{key}' if key else f'/{t.bucket}/'
    headers = SIGNERS[t.protocol](t, method, path, resource, len(body))
    conn.request(method, path, body=body or None, headers=headers)
    resp = conn.getresponse()
    resp.read()
    return resp


def create_bucket(t: Target) -> None:
    conn = http.client.HTTPConnection(t.host, t.port, timeout=60)
    try:
        resp = send(conn, t, 'PUT', '')
        if resp.status not in (200, 409):
            raise SystemExit(f'creating bucket {t.bucket}: HTTP {resp.status}')
    finally:
        conn.close()


@dataclass
class Share:
    """One thread's objects and what went wrong with them."""
    keys: List[str]
    failures: List[str]


def request_loop(t: Target, share: Share, method: str, body: bytes, etag: str) -> None:
    """PUT ``body`` as each key of the share (or HEAD each), checking every answer's ETag."""
    conn = http.client.HTTPConnection(t.host, t.port, timeout=120)
    try:
        for key in share.keys:
            resp = send(conn, t, method, key, body if method == 'PUT' else b'')
            got = (resp.getheader('ETag') or '').strip('"').upper()
            if resp.status != 200 or got != etag:
                share.failures.append(f'{key}: HTTP {resp.status}, ETag {got or "-"}')
    except (OSError, http.client.HTTPException) as e:
        share.failures.append(f'connection failed: {e!r}')
    finally:
        conn.close()


def server_cpu_reader(pid: Optional[int], port: int) -> Callable[[], Optional[Tuple[float, float]]]:
    """A function giving the server's (user, system) CPU seconds so far, or None when its process
    is unknown."""
    try:
        import psutil
    except ImportError:
        return lambda: None
    if pid is None:
        try:
            pid = next(c.pid for c in psutil.net_connections('tcp')
                       if c.status == psutil.CONN_LISTEN and c.laddr.port == port and c.pid)
        except (StopIteration, psutil.AccessDenied):
            return lambda: None
    proc = psutil.Process(pid)

    def read() -> Tuple[float, float]:
        ct = proc.cpu_times()
        return ct.user, ct.system
    return read


def timed(t: Target, shares: List[Share], method: str, body: bytes, etag: str,
          server_cpu: Callable[[], Optional[Tuple[float, float]]]) -> dict:
    """Every share's requests, one thread a share; wall time and CPU per request."""
    s0, c0, w0 = server_cpu(), time.process_time(), time.perf_counter()
    workers = [threading.Thread(target=request_loop, args=(t, s, method, body, etag)) for s in shares]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    w1, c1, s1 = time.perf_counter(), time.process_time(), server_cpu()
    failures = [f for s in shares for f in s.failures]
    if failures:
        raise SystemExit(f'{len(failures)} {method}s failed, first: {failures[0]}')
    n = sum(len(s.keys) for s in shares)
    elapsed = w1 - w0
    return {'seconds': elapsed, 'objects_per_s': n / elapsed,
            'mib_per_s': n * len(body) / elapsed / (1 << 20),
            'client_cpu_ms': (c1 - c0) * 1000 / n,
            'server_cpu_ms': None if s0 is None else (sum(s1) - sum(s0)) * 1000 / n,
            'server_user_ms': None if s0 is None else (s1[0] - s0[0]) * 1000 / n}


def run(t: Target, files: int, size: int, threads: int, server_pid: Optional[int], head: bool) -> dict:
    """The PUTs of ``files`` objects, then (``head``) a HEAD of each."""
    body = os.urandom(size)
    etag = hashlib.md5(body).hexdigest().upper()
    create_bucket(t)
    run_id = secrets.token_hex(4)
    keys = [f'raw-{run_id}/{i:07d}' for i in range(files)]
    shares = [Share(keys[i::threads], []) for i in range(min(threads, files))]
    server_cpu = server_cpu_reader(server_pid, t.port)
    r = {'files': files, 'size': size, 'threads': len(shares), 'protocol': t.protocol,
         **timed(t, shares, 'PUT', body, etag, server_cpu)}
    if head:
        r['head'] = timed(t, shares, 'HEAD', b'', etag, server_cpu)
    return r


def summary(what: str, r: dict) -> str:
    server = ('unknown' if r['server_cpu_ms'] is None else
              f"{r['server_cpu_ms']:.3f} ms (user {r['server_user_ms']:.3f})")
    return (f"{what}: {r['seconds']:.2f} s, {r['objects_per_s']:.0f} objects/s, {r['mib_per_s']:.1f} MiB/s, "
            f"CPU per object: client {r['client_cpu_ms']:.3f} ms, server {server}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--endpoint', help='http://HOST:PORT; without it the bundled emulator is started')
    ap.add_argument('--bucket', default='raw-ceiling')
    ap.add_argument('--key-id', default='raw')
    ap.add_argument('--secret', default=None, help='required with --endpoint')
    ap.add_argument('--files', type=int, default=10000)
    ap.add_argument('--size', default='4k')
    ap.add_argument('--threads', type=int, default=16)
    ap.add_argument('--protocol', choices=sorted(SIGNERS), default='oss')
    ap.add_argument('--server-pid', type=int, default=None, help="the server's pid, for its CPU time")
    ap.add_argument('--emulator-arg', action='append', default=[],
                    help='extra argument for the emulator this script starts (repeatable)')
    ap.add_argument('--head', action='store_true', help='then HEAD every object, timed apart')
    ap.add_argument('--data-dir', default=None,
                    help='where the emulator this script starts keeps its data (default: a temporary '
                         'folder in $TMPDIR; a tmpfs such as /dev/shm takes the filesystem out)')
    ap.add_argument('--json', action='store_true', help='print one JSON object')
    args = ap.parse_args(argv)
    size = parse_size(args.size)
    if args.endpoint:
        if args.secret is None:
            ap.error('--endpoint needs --secret')
        u = urlsplit(args.endpoint)
        t = Target(u.hostname, u.port or 80, args.bucket, args.key_id, args.secret, args.protocol)
        r = run(t, args.files, size, args.threads, args.server_pid, args.head)
    else:
        from oss_emulator import start_process
        secret = args.secret or secrets.token_hex(16)
        with tempfile.TemporaryDirectory(prefix='raw-ceiling-', dir=args.data_dir) as d:
            emu = start_process(os.path.join(d, 'data'), args.key_id, secret, extra_args=args.emulator_arg)
            try:
                t = Target('127.0.0.1', emu.port, args.bucket, args.key_id, secret, args.protocol)
                r = run(t, args.files, size, args.threads, emu.proc.pid, args.head)
            finally:
                emu.stop()
    keys = ('objects_per_s', 'mib_per_s', 'client_cpu_ms', 'server_cpu_ms')
    if args.json:
        out = {k: r[k] for k in keys}
        if 'head' in r:
            out['head'] = {k: r['head'][k] for k in keys}
        print(json.dumps(out))
        return 0
    print(summary(f"{r['files']} x {args.size} ({r['protocol']}, {r['threads']} threads)", r))
    if 'head' in r:
        print(summary(f"{r['files']} HEADs", r['head']))
    return 0


if __name__ == '__main__':
    sys.exit(main())
