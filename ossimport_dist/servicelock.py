"""One service per working directory, and no ``clean`` beside it.

``master/service.lock`` is flock'ed exclusively for the whole life of the process that holds
it: the service (``console.sh start`` forks it; the service itself takes the lock, so it is
held as long as the service lives, not as long as the console that started it), or a
``console.sh clean`` while it removes a job. The file holds the holder's role and pid
(``service 1234``). The kernel drops the lock when its process dies, however it dies, so a
stale pid file or a recycled pid never passes for a running service.

Asking who holds the lock takes it for an instant, so whoever wants to hold it tries for
``ACQUIRE_WAIT_S`` before concluding that someone else does.
"""

from __future__ import annotations

import fcntl
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

ROLE_SERVICE = "service"
ROLE_CLEAN = "clean"
# A probe holds the lock for microseconds; a holder holds it for good. Waiting this long
# tells the two apart.
ACQUIRE_WAIT_S = 1.0
POLL_S = 0.02
# Exit code of a service that found the lock held (another service, or a clean).
LOCKED_EXIT = 3


@dataclass(frozen=True)
class Holder:
    role: str
    pid: int


@dataclass
class HeldLock:
    """The open, locked file; the lock lasts until ``release`` or the end of the process."""

    path: Path
    fd: int

    def release(self) -> None:
        if self.fd >= 0:
            os.ftruncate(self.fd, 0)  # so the next holder's name is never read beside ours
            os.close(self.fd)  # closing the last descriptor drops the flock
            self.fd = -1


def acquire(path: Path, role: str, wait_s: float = ACQUIRE_WAIT_S) -> Optional[HeldLock]:
    """Hold the lock as ``role``; None when another process holds it (after ``wait_s``)."""
    # Never through a symlink: the file is truncated, and must be ours, inside workingDir.
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                return None
            time.sleep(POLL_S)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{role} {os.getpid()}\n".encode("ascii"), 0)
    return HeldLock(path, fd)


def holder(path: Path, wait_s: float = ACQUIRE_WAIT_S) -> Optional[Holder]:
    """Who holds the lock, or None when nobody does (or the file does not exist)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        if _nobody_holds(fd):
            return None
        # Held: the holder writes its name right after taking the lock. Held by another probe,
        # the file still names whoever held it last, maybe a process killed since: a name
        # counts only while its process lives, and the lock is tried again meanwhile.
        deadline = time.monotonic() + wait_s
        while True:
            found = _parse(os.pread(fd, 64, 0))
            if found is not None and _alive(found.pid):
                return found
            if _nobody_holds(fd):
                return None
            if time.monotonic() >= deadline:
                return Holder(ROLE_SERVICE, 0)
            time.sleep(POLL_S)
    finally:
        os.close(fd)


def _parse(data: bytes) -> Optional[Holder]:
    role, _, pid = data.decode("ascii", "replace").strip().partition(" ")
    if role in (ROLE_SERVICE, ROLE_CLEAN) and pid.isdigit():
        return Holder(role, int(pid))
    return None


def _nobody_holds(fd: int) -> bool:
    """Takes the lock for an instant and lets go: True when nobody else held it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    fcntl.flock(fd, fcntl.LOCK_UN)
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process, alive
    return True
