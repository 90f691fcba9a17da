"""Which thread serves a connection's requests: one reactor thread for the small ones, a thread of
its own for a connection whose request would block.

With a thread per connection, every thread that wants the GIL turns the blocking calls of the
others into futex hand-offs: 16 busy connections cost ~70 futex calls per 4 KiB PUT, half the
emulator's CPU. Here the reactor waits for all idle connections in one epoll, reads what arrived
without blocking, and serves a request itself once the whole of it (header block and a body of at
most ``SMALL_BODY``) is in memory. A request that would make it wait - a bigger or chunked body,
``Expect: 100-continue``, a header block it cannot frame, ``slow`` faults being on - hands its
connection to a thread of its own, which serves it as before (``OssRequestHandler.run_threaded``)
until it closes. A client that sends half a request holds nothing: the reactor keeps its bytes
and serves the others.
"""

from __future__ import annotations

import io
import os
import select
import socket
import sys
import threading
import traceback
from dataclasses import dataclass, field
from typing import Dict

from .http1 import MAX_LINE, BadRequest, read_request
from .wire import SMALL_BODY

ARM = select.EPOLLIN | select.EPOLLONESHOT if hasattr(select, 'epoll') else 0
RECV_SIZE = 256 * 1024


class PrefixedSocketIO(io.RawIOBase):
    """A connection's bytes: those the reactor already received, then the socket's."""

    def __init__(self, prefix: bytes, sock: socket.socket):
        super().__init__()
        self._prefix = memoryview(prefix)
        self._sock = sock

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        if self._prefix:
            n = min(len(buf), len(self._prefix))
            buf[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        return self._sock.recv_into(buf)


@dataclass
class Connection:
    handler: object          # the OssRequestHandler bound to this socket
    pending: bytes = b''     # received, not yet served


@dataclass
class Reactor:
    quiet: bool = True
    _epoll: 'select.epoll' = field(default_factory=lambda: select.epoll())
    _conns: Dict[int, Connection] = field(default_factory=dict)
    _wake: tuple = field(default_factory=os.pipe)
    _closed: bool = False

    def __post_init__(self):
        self._epoll.register(self._wake[0], select.EPOLLIN)
        self._thread = threading.Thread(target=self._run, name='oss-emulator-reactor', daemon=True)
        self._thread.start()

    def add(self, handler) -> None:
        fd = handler.connection.fileno()
        self._conns[fd] = Connection(handler)
        self._epoll.register(fd, ARM)

    def close(self) -> None:
        self._closed = True
        os.write(self._wake[1], b'x')
        self._thread.join(10)
        for conn in list(self._conns.values()):
            conn.handler.finish()
        self._conns.clear()
        self._epoll.close()
        for fd in self._wake:
            os.close(fd)

    def _run(self) -> None:
        while not self._closed:
            try:
                events = self._epoll.poll()
            except InterruptedError:
                continue
            for fd, _ in events:
                conn = self._conns.get(fd)
                if conn is None:
                    continue  # the wake-up pipe
                try:
                    self._serve(fd, conn)
                except Exception:  # a bug must cost one connection, never the reactor
                    if not self.quiet:
                        traceback.print_exc(file=sys.stderr)
                    self._drop(fd, conn)

    def _serve(self, fd: int, conn: Connection) -> None:
        sock = conn.handler.connection
        try:
            data = sock.recv(RECV_SIZE, socket.MSG_DONTWAIT)
        except BlockingIOError:
            self._epoll.modify(fd, ARM)
            return
        except OSError:
            self._drop(fd, conn)
            return
        if not data:
            self._drop(fd, conn)
            return
        conn.pending += data
        while conn.pending:
            whole = self._whole_request(conn)
            if whole is None:
                break  # wait for the rest of it
            if whole is False:
                self._hand_off(fd, conn)
                return
            req, body_end = whole
            body = conn.pending[:body_end]
            conn.pending = conn.pending[body_end:]
            handler = conn.handler
            handler.rfile = io.BytesIO(body)
            handler.serve(req)
            if handler.close_connection:
                self._drop(fd, conn)
                return
        if len(conn.pending) > MAX_LINE + SMALL_BODY:
            self._hand_off(fd, conn)  # whatever it is, the thread's reader answers it
            return
        self._epoll.modify(fd, ARM)

    def _whole_request(self, conn: Connection):
        """(request, end of its body in pending) when it is all there; None to wait for more;
        False when a thread of its own must serve it."""
        pending = conn.pending
        end = pending.find(b'\r\n\r\n')
        if end < 0:
            return False if b'\n\n' in pending else None
        try:
            req = read_request(io.BytesIO(pending[:end + 4]))
        except (BadRequest, UnicodeError):
            return False
        if req is None or req.expect_continue or 'Transfer-Encoding' in req.headers:
            return False
        if conn.handler.emu.faults.delays():
            return False
        try:
            length = int(req.headers.get('Content-Length') or 0)
        except ValueError:
            return False
        if not 0 <= length <= SMALL_BODY:
            return False
        if len(pending) < end + 4 + length:
            return None
        conn.pending = pending[end + 4:]
        return req, length

    def _hand_off(self, fd: int, conn: Connection) -> None:
        self._epoll.unregister(fd)
        del self._conns[fd]
        threading.Thread(target=conn.handler.run_threaded, args=(conn.pending,), daemon=True,
                         name='oss-emulator-connection').start()

    def _drop(self, fd: int, conn: Connection) -> None:
        self._conns.pop(fd, None)
        try:
            self._epoll.unregister(fd)
        except (OSError, ValueError):
            pass
        conn.handler.finish()
