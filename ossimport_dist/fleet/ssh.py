"""The only module that speaks SSH: commands and files on worker hosts, over paramiko.

A ``Connection`` connects lazily on first use and reconnects on the next call after the link
dropped (a call that loses the link raises ``WorkerUnreachable``; nothing is retried behind the
caller's back, because a remote command may not be safe to run twice).

Thread safety: one ``Connection`` may be shared by several threads. Connecting is serialised;
``run`` calls proceed in parallel (one SSH channel each); file calls share one SFTP session and
are serialised. ``run_on_hosts`` gives every host its own ``Connection`` and thread.

Secrets: the password goes only to paramiko's password authentication. It is never logged,
never put on a remote command line, and is scrubbed from every message this module produces.
With ``key_file`` set, key login is used and the password is not sent at all (OssImport's rule).

Host keys: checked against ``known_hosts``; an unknown host is refused unless
``accept_new_host_keys`` (sys.properties ``sshAcceptNewHostKeys=true``), which appends the new
key to the file; a changed key is always refused.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import posixpath
import secrets
import select
import shlex
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import paramiko

from ..errors import OperatorError, WorkerUnreachable
from ..layout import CONF_DIR, SYS_PROPERTIES
from .hosts import Host

log = logging.getLogger(__name__)

SYS_FILE = f"{CONF_DIR}/{SYS_PROPERTIES}"  # as messages name it
ACCEPT_NEW_KEYS_KEY = "sshAcceptNewHostKeys"
_CHUNK = 256 * 1024
# After the remote command exits, how long to wait for its output to close: a background
# process that kept the channel's stdout open must not hold ``run`` until the timeout.
_OUTPUT_GRACE = 1.0


@dataclass(frozen=True)
class SshSettings:
    """How to log into workers (sys.properties: workerUserName, workerPassword, privateKeyFile,
    sshPort, sshAcceptNewHostKeys)."""

    user: str
    password: str = field(default="", repr=False)
    key_file: str = ""
    port: int = 22
    connect_timeout: float = 10
    command_timeout: float = 120
    known_hosts: str = "~/.ssh/known_hosts"
    accept_new_host_keys: bool = False

    @classmethod
    def from_sys_config(cls, sys_cfg, **overrides) -> "SshSettings":
        """From a ``config.SysConfig``; keys it does not have yet take their defaults."""
        values = dict(
            user=sys_cfg.worker_user_name,
            password=sys_cfg.worker_password,
            key_file=sys_cfg.private_key_file,
            port=sys_cfg.ssh_port,
            accept_new_host_keys=getattr(sys_cfg, "ssh_accept_new_host_keys", False),
        )
        values.update(overrides)
        return cls(**values)


@dataclass(frozen=True)
class RunResult:
    rc: int  # -1 when the remote side gave no exit status (killed by a signal)
    stdout: str
    stderr: str


@dataclass(frozen=True)
class HostResult:
    ok: bool
    value: Any = None
    error: str = ""  # one line naming the host, empty when ok


class RemoteCommandFailed(OperatorError):
    """A command on a worker exited non-zero (``run(check=True)``)."""

    def __init__(self, host: Host, command: str, result: RunResult, secret: str = ""):
        self.host, self.command, self.result = host, command, result
        detail = _last_line(result.stderr) or _last_line(result.stdout) or "no output"
        text = f"{host}: command failed (exit {result.rc}): {_short(command)}: {detail}"
        super().__init__(scrub(text, secret))


def unreachable(host: Host, problem: str) -> WorkerUnreachable:
    """The one-line ``WorkerUnreachable`` every host failure in this module raises."""
    exc = WorkerUnreachable(f"{host}: {problem}")
    exc.host, exc.problem = host, problem
    return exc


def _short(command: str, limit: int = 120) -> str:
    command = " ".join(command.split())
    return command if len(command) <= limit else command[: limit - 3] + "..."


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def scrub(text: str, secret: str) -> str:
    """``text`` without ``secret`` (a password must not reach a log or a message)."""
    return text.replace(secret, "******") if secret else text


def _fingerprint(key) -> str:
    return f"{key.get_name()} {key.fingerprint}"


class _UnknownHostKey(paramiko.SSHException):
    def __init__(self, key):
        super().__init__("host key not known")
        self.key = key


class _RejectUnknown(paramiko.MissingHostKeyPolicy):
    def missing_host_key(self, client, hostname, key):
        raise _UnknownHostKey(key)


class _AppendUnknown(paramiko.MissingHostKeyPolicy):
    """Accept a new host's key and append it to known_hosts.

    Appending under a file lock (rather than paramiko's rewrite of the whole file) keeps keys
    that other connections, running at the same time, add to the same file.
    """

    def __init__(self, path: Path):
        self.path = path

    def missing_host_key(self, client, hostname, key):
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        line = paramiko.hostkeys.HostKeyEntry([hostname], key).to_line()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, line.encode())
        finally:
            os.close(fd)
        log.info("added %s host key %s to %s", hostname, _fingerprint(key), self.path)


class Connection:
    """One worker host: a lazily opened SSH connection and SFTP session."""

    def __init__(self, host: Host, settings: SshSettings):
        self.host = host
        self.settings = settings
        self._lock = threading.Lock()  # connecting and closing
        self._sftp_lock = threading.Lock()  # one SFTP request sequence at a time
        self._client: Optional[paramiko.SSHClient] = None
        self._sftp: Optional[paramiko.SFTPClient] = None

    def __repr__(self) -> str:
        return f"Connection({self.host}, user={self.settings.user!r})"

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- connecting -----------------------------------------------------------------------

    def _fail(self, problem: str) -> WorkerUnreachable:
        return unreachable(self.host, scrub(problem, self.settings.password))

    def _load_key(self) -> paramiko.PKey:
        path = os.path.expanduser(self.settings.key_file)
        fix = f"check privateKeyFile in {SYS_FILE}"
        try:
            return paramiko.PKey.from_path(path)
        except FileNotFoundError:
            raise self._fail(f"private key file {path} not found; {fix}") from None
        except PermissionError:
            raise self._fail(f"cannot read private key file {path} (permission denied); {fix}") from None
        except IsADirectoryError:
            raise self._fail(f"private key file {path} is a directory; {fix}") from None
        except (paramiko.PasswordRequiredException, TypeError) as exc:
            # cryptography reports an OpenSSH-format key with a passphrase as a TypeError.
            if isinstance(exc, TypeError) and "password" not in str(exc):
                raise self._fail(f"private key file {path} is not a private key that can be used "
                                 f"({exc}); {fix}") from None
            raise self._fail(f"private key file {path} is encrypted with a passphrase; use a key "
                             f"without one (ssh-keygen -p -N '' -f {path}) or a password login") from None
        except (paramiko.SSHException, ValueError, OSError) as exc:
            raise self._fail(f"private key file {path} is not a private key that can be used "
                             f"({type(exc).__name__}: {exc}); {fix}") from None

    def _connect(self) -> paramiko.SSHClient:
        s = self.settings
        if not s.user:
            raise self._fail(f"no SSH user; set workerUserName in {SYS_FILE}")
        pkey = self._load_key() if s.key_file else None
        if pkey is None and not s.password:
            raise self._fail(f"no SSH credentials; set workerPassword or privateKeyFile in {SYS_FILE}")
        known_hosts = Path(os.path.expanduser(s.known_hosts))
        client = paramiko.SSHClient()
        try:
            if known_hosts.is_file():
                try:
                    client.load_host_keys(str(known_hosts))
                except (OSError, paramiko.SSHException) as exc:
                    raise self._fail(f"cannot read known_hosts file {s.known_hosts}: {exc}") from None
            client.set_missing_host_key_policy(
                _AppendUnknown(known_hosts) if s.accept_new_host_keys else _RejectUnknown())
            t = s.connect_timeout
            client.connect(self.host.address, port=self.host.port, username=s.user,
                           password=None if pkey else s.password, pkey=pkey,
                           allow_agent=False, look_for_keys=False, timeout=t,
                           banner_timeout=t, auth_timeout=t, channel_timeout=t)
        except WorkerUnreachable:
            client.close()
            raise
        except Exception as exc:  # every failure to connect becomes one named line
            transport = client.get_transport()
            greeted = transport is not None and bool(getattr(transport, "remote_version", ""))
            client.close()
            if not greeted and isinstance(exc, (paramiko.SSHException, EOFError)):
                raise self._fail(f"cannot connect (no SSH greeting within {s.connect_timeout:g} s); "
                                 f"is sshd running and the host in workers.txt right?") from None
            raise self._fail(self._explain(exc, pkey)) from None
        transport = client.get_transport()
        transport.set_keepalive(30)  # notice a dead host on idle connections
        log.debug("connected to %s as %s", self.host, s.user)
        return client

    def _explain(self, exc: Exception, pkey) -> str:
        s = self.settings
        where = "is sshd running and the host in workers.txt right?"
        if isinstance(exc, _UnknownHostKey):
            port = self.host.port
            addr = self.host.address
            return (f"host key ({_fingerprint(exc.key)}) not in known_hosts ({s.known_hosts}); run "
                    f"'ssh-keyscan -p {port} {addr} >> {s.known_hosts}' after checking it, "
                    f"or set {ACCEPT_NEW_KEYS_KEY}=true in sys.properties")
        if isinstance(exc, paramiko.BadHostKeyException):
            name = self.host.address if self.host.port == 22 else f"[{self.host.address}]:{self.host.port}"
            return (f"host key changed (known_hosts {s.known_hosts} has {_fingerprint(exc.expected_key)}, "
                    f"the host offers {_fingerprint(exc.key)}); refusing to connect: if the host was "
                    f"reinstalled, check it and run 'ssh-keygen -R \"{name}\" -f {s.known_hosts}'")
        if isinstance(exc, paramiko.AuthenticationException):
            allowed = getattr(exc, "allowed_types", None)
            refused = f"; the server allows only {', '.join(allowed)}" if allowed else ""
            if pkey is not None:
                return (f"authentication failed for user '{s.user}' with key {s.key_file}{refused}; "
                        f"check privateKeyFile and workerUserName in {SYS_FILE} and that the public "
                        f"key is in the user's authorized_keys")
            return (f"authentication failed for user '{s.user}' (password){refused}; "
                    f"check workerUserName/workerPassword in {SYS_FILE}")
        if isinstance(exc, (paramiko.ssh_exception.NoValidConnectionsError, ConnectionRefusedError)):
            errnos = {getattr(e, "errno", None) for e in getattr(exc, "errors", {}).values()}
            why = "no route to host" if errnos == {errno.EHOSTUNREACH} else "connection refused"
            return f"cannot connect ({why}); {where}"
        if isinstance(exc, (socket.timeout, TimeoutError)):
            return f"cannot connect (timed out after {s.connect_timeout:g} s); {where}"
        if isinstance(exc, socket.gaierror):
            return f"cannot connect (unknown host name: {exc.strerror}); {where}"
        if isinstance(exc, OSError):
            return f"cannot connect ({exc.strerror or exc}); {where}"
        return f"SSH session failed ({type(exc).__name__}: {exc}); {where}"

    def _live_client(self) -> paramiko.SSHClient:
        with self._lock:
            client = self._client
            if client is not None:
                transport = client.get_transport()
                if transport is not None and transport.is_active():
                    return client
                self._close_locked()
            self._client = self._connect()
            return self._client

    def _link_lost(self, exc: BaseException) -> bool:
        client = self._client
        transport = client.get_transport() if client is not None else None
        return transport is None or not transport.is_active() or isinstance(exc, EOFError)

    def _lost(self, exc: BaseException) -> WorkerUnreachable:
        if not self._link_lost(exc):
            # The link is fine; the server refused one channel (e.g. sshd's MaxSessions).
            return self._fail(f"SSH channel failed ({type(exc).__name__}: {exc})")
        with self._lock:
            self._close_locked()
        return self._fail(f"connection lost ({type(exc).__name__}: {exc or 'closed'}); "
                          f"is the host up and sshd running?")

    # --- commands -------------------------------------------------------------------------

    def run(self, command: str, timeout: Optional[float] = None, check: bool = True,
            input: Optional[bytes] = None) -> RunResult:
        """Run ``command`` with the user's login shell; stdout/stderr decoded as UTF-8.

        A command that leaves a background process must redirect that process's output
        (``</dev/null >log 2>&1 &``); ``run`` returns shortly after the command itself exits.
        """
        limit = self.settings.command_timeout if timeout is None else timeout
        client = self._live_client()
        try:
            chan = client.get_transport().open_session(timeout=self.settings.connect_timeout)
        except Exception as exc:
            raise self._lost(exc) from None
        try:
            try:
                chan.exec_command(command)
                if input:
                    chan.sendall(input)
                chan.shutdown_write()
                rc, out, err = self._collect(chan, limit)
            except (paramiko.SSHException, EOFError, OSError) as exc:
                raise self._lost(exc) from None
        finally:
            chan.close()
        if rc is None:
            raise self._fail(f"command did not finish within {limit:g} s: {_short(command)}")
        result = RunResult(rc, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))
        if check and rc != 0:
            raise RemoteCommandFailed(self.host, command, result, self.settings.password)
        return result

    @staticmethod
    def _collect(chan: paramiko.Channel, limit: float):
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + limit
        exited_at = None
        while True:
            while chan.recv_ready():
                out += chan.recv(_CHUNK)
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(_CHUNK)
            now = time.monotonic()
            if chan.exit_status_ready():
                if exited_at is None:
                    exited_at = now
                if chan.eof_received or chan.closed or now - exited_at > _OUTPUT_GRACE:
                    while chan.recv_ready():
                        out += chan.recv(_CHUNK)
                    while chan.recv_stderr_ready():
                        err += chan.recv_stderr(_CHUNK)
                    return chan.recv_exit_status(), bytes(out), bytes(err)
            if now >= deadline:
                return None, bytes(out), bytes(err)
            select.select([chan], [], [], min(0.2, deadline - now))

    # --- files ----------------------------------------------------------------------------

    def _sftp_call(self, fn: Callable[[paramiko.SFTPClient], Any]):
        client = self._live_client()
        with self._sftp_lock:
            if self._sftp is None or self._sftp.sock.closed:
                try:
                    self._sftp = client.open_sftp()
                except Exception as exc:
                    if self._link_lost(exc):
                        raise self._lost(exc) from None
                    raise self._fail(f"cannot open SFTP ({type(exc).__name__}: {exc}); is the "
                                     f"sftp Subsystem enabled in the host's sshd_config?") from None
                # Bounds every SFTP request, so a hung host cannot hold a tracker thread.
                self._sftp.get_channel().settimeout(self.settings.command_timeout)
            try:
                return fn(self._sftp)
            except Exception as exc:
                lost = self._link_lost(exc)
                if lost or isinstance(exc, (socket.timeout, TimeoutError, paramiko.SSHException)):
                    stale, self._sftp = self._sftp, None
                    try:
                        stale.close()
                    except Exception:
                        pass
                    if lost:
                        raise self._lost(exc) from None
                    raise self._fail(f"file transfer failed or stalled ({type(exc).__name__}: "
                                     f"{exc or 'no answer within %g s' % self.settings.command_timeout})") from None
                raise

    @staticmethod
    def _tmp_name(remote_path: str) -> str:
        head, tail = posixpath.split(remote_path)
        return posixpath.join(head, f".{tail}.tmp-{secrets.token_hex(6)}")

    def _write_atomic(self, remote_path: str, mode: int, write: Callable[[Any], None]) -> None:
        def go(sftp: paramiko.SFTPClient):
            tmp = self._tmp_name(remote_path)
            try:
                with sftp.open(tmp, "wb") as f:
                    f.chmod(mode)  # before any byte is written: secrets are never readable by others
                    f.set_pipelined(True)
                    write(f)
                sftp.posix_rename(tmp, remote_path)
            except BaseException:
                try:
                    sftp.remove(tmp)
                except Exception:
                    pass
                raise
        self._sftp_call(go)

    def put_bytes(self, data: bytes, remote_path: str, mode: int = 0o644) -> None:
        """Write ``data`` to ``remote_path`` atomically (a reader sees the old file or the new)."""
        self._write_atomic(remote_path, mode, lambda f: f.write(data))

    def put_file(self, local, remote_path: str, mode: Optional[int] = None) -> None:
        """Copy a local file to ``remote_path`` atomically; ``mode`` defaults to the local one."""
        local = Path(local)
        if mode is None:
            mode = local.stat().st_mode & 0o777

        def write(f):
            with local.open("rb") as src:
                while True:
                    block = src.read(_CHUNK)
                    if not block:
                        break
                    f.write(block)
        self._write_atomic(remote_path, mode, write)

    def get_bytes(self, remote_path: str) -> bytes:
        def go(sftp):
            with sftp.open(remote_path, "rb") as f:
                f.prefetch()
                return f.read()
        return self._sftp_call(go)

    def get_file(self, remote_path: str, local) -> None:
        """Copy ``remote_path`` to ``local``, replacing it atomically."""
        local = Path(local)
        tmp = local.with_name(f".{local.name}.tmp-{secrets.token_hex(6)}")
        try:
            with tmp.open("wb") as out:
                self._sftp_call(lambda sftp: sftp.getfo(remote_path, out))
            os.replace(tmp, local)
        finally:
            tmp.unlink(missing_ok=True)

    def listdir(self, remote_dir: str) -> list[str]:
        """Names in ``remote_dir``, sorted; a missing folder is empty."""
        try:
            return sorted(self._sftp_call(lambda sftp: sftp.listdir(remote_dir)))
        except FileNotFoundError:
            return []

    def makedirs(self, remote_dir: str, mode: int = 0o755) -> None:
        def go(sftp):
            path = "/" if remote_dir.startswith("/") else ""
            for part in [p for p in remote_dir.split("/") if p]:
                path = posixpath.join(path, part) if path else part
                try:
                    sftp.stat(path)
                    continue
                except FileNotFoundError:
                    pass
                try:
                    sftp.mkdir(path, mode)
                except OSError:
                    sftp.stat(path)  # another client made it meanwhile: fine; else the real error
        self._sftp_call(go)

    def rename(self, src: str, dst: str) -> None:
        """Atomic rename (POSIX semantics: a file ``dst`` is replaced, a directory must be empty)."""
        self._sftp_call(lambda sftp: sftp.posix_rename(src, dst))

    def remove_tree(self, remote_dir: str) -> None:
        """Delete ``remote_dir`` and everything under it; a missing folder is fine."""
        norm = posixpath.normpath(remote_dir)
        if not norm.startswith("/") or norm.count("/") < 2:
            raise ValueError(f"refusing to remove {remote_dir!r}: not an absolute path below the top level")
        self.run(f"rm -rf -- {shlex.quote(norm)}")

    def exists(self, remote_path: str) -> bool:
        try:
            self._sftp_call(lambda sftp: sftp.stat(remote_path))
            return True
        except FileNotFoundError:
            return False

    def stat_mtime(self, remote_path: str) -> Optional[float]:
        """Modification time in whole seconds (SFTP's resolution); None if the path is missing."""
        try:
            return float(self._sftp_call(lambda sftp: sftp.stat(remote_path)).st_mtime)
        except FileNotFoundError:
            return None

    # --- closing --------------------------------------------------------------------------

    def _close_locked(self) -> None:
        sftp, client = self._sftp, self._client
        self._sftp = self._client = None
        for thing in (sftp, client):
            if thing is not None:
                try:
                    thing.close()
                except Exception:
                    pass

    def close(self) -> None:
        with self._lock:
            self._close_locked()


def run_on_hosts(hosts, fn: Callable[[Connection], Any], settings: SshSettings,
                 max_workers: int = 8) -> dict[Host, HostResult]:
    """``fn(connection)`` on every host at once; a host that fails is a row, not a crash.

    Results come back in the order of ``hosts``; each failure's ``error`` is one line naming
    the host (an unexpected exception is named by its type) and never holds the password.
    """
    hosts = list(hosts)

    def one(host: Host) -> HostResult:
        conn = Connection(host, settings)
        try:
            return HostResult(True, fn(conn), "")
        except OperatorError as exc:
            text = str(exc)
            if not text.startswith(str(host)):
                text = f"{host}: {text}"
            return HostResult(False, None, scrub(text, settings.password))
        except Exception as exc:  # a bug or an unforeseen failure stays on this host's row
            log.debug("%s failed", host, exc_info=True)
            return HostResult(False, None, scrub(f"{host}: {type(exc).__name__}: {exc}", settings.password))
        finally:
            conn.close()

    if not hosts:
        return {}
    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(hosts))),
                            thread_name_prefix="ssh") as pool:
        results = list(pool.map(one, hosts))
    return dict(zip(hosts, results))
