"""OSS emulator: a local HTTP server speaking the subset of the OSS REST API that oss2 and OssImport use.

Start it with ``python -m oss_emulator`` or, from tests, with :func:`start_process`
(real subprocess) or :func:`run_in_thread` (in-process).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from typing import Optional

LISTEN_RE = re.compile(r'^OSS emulator listening on (http://\S+):(\d+)\s*$')


def _put_faults(endpoint: str, spec: Optional[str]) -> str:
    req = urllib.request.Request(endpoint + '/-/faults', data=(spec or '').encode(), method='PUT')
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.read().decode().strip()


def get_stats(endpoint: str) -> dict:
    import json
    with urllib.request.urlopen(endpoint + '/-/stats', timeout=10) as resp:
        return json.loads(resp.read())


@dataclass
class ThreadHandle:
    server: object
    thread: threading.Thread
    endpoint: str
    port: int

    def set_faults(self, spec: Optional[str]) -> None:
        self.server.emu.faults.set_spec(spec)

    def stats(self) -> dict:
        return self.server.emu.stats.snapshot()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


def run_in_thread(data_dir: str, access_key_id: str, secret: str, faults: Optional[str] = None,
                  host: str = '127.0.0.1', port: int = 0, seed: Optional[int] = None) -> ThreadHandle:
    from .server import make_server
    srv = make_server(host, port, data_dir, {access_key_id: secret}, faults=faults, seed=seed, quiet=True)
    t = threading.Thread(target=srv.serve_forever, kwargs={'poll_interval': 0.2}, name='oss-emulator', daemon=True)
    t.start()
    port = srv.server_address[1]
    return ThreadHandle(srv, t, 'http://%s:%d' % (host, port), port)


@dataclass
class ProcessHandle:
    proc: subprocess.Popen
    endpoint: str
    port: int

    def set_faults(self, spec: Optional[str]) -> str:
        return _put_faults(self.endpoint, spec)

    def stats(self) -> dict:
        return get_stats(self.endpoint)

    def stop(self, timeout: float = 10) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        if self.proc.stdout:
            self.proc.stdout.close()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL, to test crash consistency."""
        self.proc.kill()
        self.proc.wait(10)


def start_process(data_dir: str, access_key_id: str, secret: str, faults: Optional[str] = None,
                  host: str = '127.0.0.1', port: int = 0, seed: Optional[int] = None,
                  python: str = sys.executable, extra_args=(), startup_timeout: float = 20,
                  env: Optional[dict] = None) -> ProcessHandle:
    cmd = [python, '-m', 'oss_emulator', '--host', host, '--port', str(port), '--data-dir', data_dir,
           '--access-key-id', access_key_id, '--quiet']
    if faults:
        cmd += ['--faults', faults]
    if seed is not None:
        cmd += ['--seed', str(seed)]
    cmd += list(extra_args)
    if env is None:
        env = dict(os.environ)
        # the folder holding oss_emulator/ (and ossimport_dist/, whose crc64 the store uses)
        pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env['PYTHONPATH'] = pkg_root + os.pathsep + env.get('PYTHONPATH', '')
    # The secret goes through the environment, which ps does not show, never the command line.
    env = dict(env, OSS_EMULATOR_ACCESS_KEY_SECRET=secret)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, text=True)
    deadline = time.monotonic() + startup_timeout
    result = {}

    def reader():
        line = proc.stdout.readline()
        result['line'] = line

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    t.join(max(0.0, deadline - time.monotonic()))
    m = LISTEN_RE.match(result.get('line', ''))
    if not m:
        proc.kill()
        proc.wait(10)
        raise RuntimeError('emulator did not start: %r' % result.get('line'))
    return ProcessHandle(proc, '%s:%s' % (m.group(1), m.group(2)), int(m.group(2)))
