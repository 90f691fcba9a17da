"""A real fleet of worker hosts on one machine, for distributed-mode tests.

Each "host" is a real OpenSSH ``sshd`` on its own loopback address (127.0.0.11, .12, .13; port 22
when free there, else a free port, written ``addr:port`` in workers files). Each lives in its own
mount namespace (``unshare -m``), in which its own folder is bind-mounted over the common
workingDir path: master and workers use the same absolute path, yet see different files, as on
separate machines. Everything sshd starts (login sessions, the agent) inherits that namespace.

The hosts have no internet for pip: their sessions get ``PIP_CONFIG_FILE=/dev/null`` (no machine
or user pip.conf), an index URL and proxies pointing at the closed port 127.0.0.1:9, and no
find-links; ``tests/test_deploy.py`` checks that ``pip download six`` fails there. Each host's
PATH starts with ``fleet.host_bin(host)``, an empty folder a test may put a fake program into.

Use it from a test module with ``pytest_plugins = ["fleet"]`` (one session-wide fleet for all
modules; sshd start-up is paid once) and the ``fleet`` fixture; ``deployed`` has the agent installed
on every host (once for the session, from the ``bundle`` of this checkout). Needs root, ``unshare``/``nsenter``
and ``/usr/sbin/sshd`` (``tests/setup_system.sh`` installs it); otherwise the tests skip.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import secrets
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytest

from conftest import BUNDLE_CACHE, ROOT
from ossimport_dist.fleet.deploy import build_bundle, deploy_all
from ossimport_dist.fleet.hosts import Host, parse_host
from ossimport_dist.fleet.ssh import SshSettings

SSHD = "/usr/sbin/sshd"
USER = "ossimport-w"
ADDRESSES = ("127.0.0.11", "127.0.0.12", "127.0.0.13")
DEAD_ADDRESS = "127.0.0.19"  # nothing listens there: connection refused
# Shared by concurrent test sessions on this machine: one password for the one test user.
STATE_DIR = Path("/var/lib/ossimport-test-fleet")
NO_INTERNET_ENV = {
    "PIP_CONFIG_FILE": "/dev/null",
    "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
    "PIP_EXTRA_INDEX_URL": "",
    "PIP_FIND_LINKS": "",
    "PIP_RETRIES": "0",
    "PIP_TIMEOUT": "3",
    "http_proxy": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    # Cut off from the internet, not from the emulator on loopback: oss2 (multipart uploads)
    # honours the proxy variables, and a dead proxy would fail every upload there.
    "no_proxy": "127.0.0.1,localhost",
    "NO_PROXY": "127.0.0.1,localhost",
}
START_TIMEOUT = 10.0


def unavailable_reason() -> str:
    """Why a fleet cannot run here, or "" if it can."""
    if os.geteuid() != 0:
        return "the SSH fleet needs root (sshd, mount namespaces, a test user)"
    for tool in (SSHD,):
        if not os.access(tool, os.X_OK):
            return f"{tool} missing; run tests/setup_system.sh (installs openssh-server)"
    for tool in ("unshare", "nsenter", "ssh-keygen", "useradd", "chpasswd"):
        if shutil.which(tool) is None:
            return f"{tool} not found"
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"],
                           capture_output=True, text=True, timeout=10)
    if probe.returncode != 0:
        return f"cannot create a mount namespace: {probe.stderr.strip()}"
    return ""


def _sh(argv, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("timeout", 30)
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kw)


def _port_free(address: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
            return True
        except OSError:
            return False


def _free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def _ensure_user() -> str:
    """The test user exists with a known password; returns the password."""
    STATE_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(STATE_DIR / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if subprocess.run(["id", USER], capture_output=True).returncode != 0:
            _sh(["useradd", "--create-home", "--shell", "/bin/bash", USER])
        pw_file = STATE_DIR / "password"
        if pw_file.is_file():
            password = pw_file.read_text().strip()
        else:
            # Characters a shell or URL would mangle make a leaked password easier to spot.
            password = "pw-" + secrets.token_urlsafe(18)
            fd = os.open(pw_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(password + "\n")
        # Set every time: a stale hash (from an earlier machine image) must not linger.
        _sh(["chpasswd"], input=f"{USER}:{password}\n")
        return password


def _pids_in_namespace(ns: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/ns/mnt") == ns:
                    pids.append(int(entry))
            except OSError:
                pass
    return pids


def _wait_dead(pids, deadline: float) -> list[int]:
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if Path(f"/proc/{p}").exists() and not _zombie(p)]
        if alive:
            time.sleep(0.05)
    return alive


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


@dataclass
class _Node:
    host: Host
    root: Path  # sshd's own files
    data: Path  # what the host sees at the common workingDir
    bin: Path  # first on the host's PATH
    holder: subprocess.Popen  # keeps the mount namespace alive across sshd restarts
    ns: str
    sshd: Optional[subprocess.Popen] = None


@dataclass
class Fleet:
    base: Path
    working_dir: str
    user: str
    password: str = field(repr=False)
    key_file: str
    known_hosts: str
    nodes: list = field(default_factory=list)

    @property
    def hosts(self) -> list[Host]:
        return [n.host for n in self.nodes]

    @property
    def dead_host(self) -> Host:
        return Host(DEAD_ADDRESS, DEAD_ADDRESS, 22)

    def _node(self, host: Host) -> _Node:
        for n in self.nodes:
            if n.host == host or n.host.name == getattr(host, "name", host):
                return n
        raise KeyError(host)

    def settings(self, **overrides) -> SshSettings:
        """Password login with the safe host-key policy; override e.g. ``key_file=fleet.key_file``."""
        values = dict(user=self.user, password=self.password, known_hosts=self.known_hosts,
                      connect_timeout=5, command_timeout=60)
        values.update(overrides)
        return SshSettings(**values)

    def host_dir(self, host: Host) -> Path:
        """Where ``host``'s workingDir really is, seen from the master (for assertions)."""
        return self._node(host).data

    def host_bin(self, host: Host) -> Path:
        """An (empty) folder first on ``host``'s PATH, for fake programs; root-owned."""
        return self._node(host).bin

    def write_workers_file(self, path, hosts=None) -> Path:
        path = Path(path)
        lines = [f"{h.address}:{h.port}" if h.port != 22 else h.address
                 for h in (self.hosts if hosts is None else hosts)]
        path.write_text("# written by tests/fleet.py\n" + "\n".join(lines) + "\n")
        return path

    def run_in_host(self, host: Host, argv, as_user: bool = False, check: bool = True,
                    timeout: float = 60, **kw) -> subprocess.CompletedProcess:
        """``argv`` inside ``host``'s mount namespace, as root (or the test user)."""
        prefix = ["nsenter", "-t", str(self._node(host).holder.pid), "-m", "--"]
        if as_user:
            prefix += ["runuser", "-u", self.user, "--"]
        return subprocess.run(prefix + list(argv), check=check, capture_output=True, text=True,
                              timeout=timeout, **kw)

    def host_pids(self, host: Host) -> list[int]:
        """Processes in ``host``'s namespace (sshd, sessions, agents), not the namespace holder."""
        node = self._node(host)
        return [p for p in _pids_in_namespace(node.ns) if p != node.holder.pid]

    def stop_sshd(self, host: Host, kill_sessions: bool = True) -> None:
        """Take ``host`` off the network: its sshd and (by default) every process it started."""
        node = self._node(host)
        if node.sshd is not None:
            node.sshd.terminate()
            try:
                node.sshd.wait(5)
            except subprocess.TimeoutExpired:
                node.sshd.kill()
                node.sshd.wait(5)
            node.sshd = None
        if kill_sessions:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                pids = self.host_pids(host)
                if not pids:
                    break
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                _wait_dead(pids, time.monotonic() + 1)

    def ensure_up(self) -> None:
        """Every host back on the network: a test that took one down and failed must not take
        the next tests with it."""
        for node in self.nodes:
            self.start_sshd(node.host)  # a no-op for a host that is up

    def start_sshd(self, host: Host) -> None:
        node = self._node(host)
        if node.sshd is not None and node.sshd.poll() is None:
            return
        cfg = node.root / "sshd_config"
        log_path = node.root / "sshd.log"
        with open(log_path, "ab") as log:
            start = log.tell()
            node.sshd = subprocess.Popen(
                ["nsenter", "-t", str(node.holder.pid), "-m", "--", SSHD, "-D", "-e", "-f", str(cfg)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            with open(log_path, "rb") as f:
                f.seek(start)
                text = f.read().decode("utf-8", "replace")
            if "Server listening on" in text:
                return
            if node.sshd.poll() is not None:
                node.sshd = None
                raise RuntimeError(f"sshd for {host} exited: {text.strip()[-500:]}")
            time.sleep(0.05)
        raise RuntimeError(f"sshd for {host} not listening after {START_TIMEOUT} s; see {log_path}")

    def close(self) -> None:
        for node in self.nodes:
            try:
                self.stop_sshd(node.host)
            finally:
                node.holder.kill()
                node.holder.wait(5)
        shutil.rmtree(self.base, ignore_errors=True)
        shutil.rmtree(self.working_dir, ignore_errors=True)


def _start_holder(data: Path, working_dir: str) -> subprocess.Popen:
    script = 'mount --bind "$1" "$2" && echo ready && exec sleep infinity'
    proc = subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", "--", "sh", "-c", script, "sh",
         str(data), working_dir],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True)
    ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT)
    line = proc.stdout.readline() if ready else b""
    if line.strip() != b"ready":
        proc.kill()
        err = proc.stderr.read().decode() if proc.wait(5) is not None else ""
        raise RuntimeError(f"cannot set up the mount namespace for {data}: {err.strip()}")
    proc.stdout.close()
    proc.stderr.close()
    return proc


def _sshd_config(node_root: Path, address: str, port: int, authorized: Path, bin_dir: Path) -> str:
    env = {"PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin", **NO_INTERNET_ENV}
    setenv = " ".join(f"{k}={v}" for k, v in env.items())
    return "\n".join([
        f"ListenAddress {address}:{port}",
        f"HostKey {node_root}/ssh_host_ed25519_key",
        f"PidFile {node_root}/sshd.pid",
        f"AuthorizedKeysFile {authorized}",
        f"AllowUsers {USER}",
        "PermitRootLogin no",
        "PasswordAuthentication yes",
        "PubkeyAuthentication yes",
        "KbdInteractiveAuthentication no",
        # No PAM: password checks go straight to /etc/shadow, which works in a container.
        "UsePAM no",
        "StrictModes no",
        "UseDNS no",
        "PrintMotd no",
        "MaxStartups 100:30:200",
        "MaxSessions 100",
        "Subsystem sftp internal-sftp",
        "LogLevel VERBOSE",
        f"SetEnv {setenv}",
        "",
    ])


def start_fleet(addresses=ADDRESSES) -> Fleet:
    password = _ensure_user()
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
    pw = pwd.getpwnam(USER)
    base = Path(tempfile.mkdtemp(prefix="fleet-", dir="/tmp"))
    base.chmod(0o755)  # sshd reads authorized_keys as the user
    working_dir = f"/srv/ossimport-test-{secrets.token_hex(4)}"
    os.makedirs(working_dir, mode=0o755)
    key = base / "id_ed25519"
    _sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "fleet-client", "-f", str(key)])
    authorized = base / "authorized_keys"
    shutil.copy(f"{key}.pub", authorized)
    authorized.chmod(0o644)
    fleet = Fleet(base=base, working_dir=working_dir, user=USER, password=password,
                  key_file=str(key), known_hosts=str(base / "known_hosts"))
    known_lines = []
    try:
        for address in addresses:
            short = "host" + address.rsplit(".", 1)[1]
            root, data, bin_dir = base / f"sshd-{short}", base / short, base / f"bin-{short}"
            for d in (root, data, bin_dir):
                d.mkdir(mode=0o755)
            os.chown(data, pw.pw_uid, pw.pw_gid)
            _sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", short,
                 "-f", str(root / "ssh_host_ed25519_key")])
            holder = _start_holder(data, working_dir)
            ns = os.readlink(f"/proc/{holder.pid}/ns/mnt")
            node = None
            for attempt in range(3):
                port = 22 if attempt == 0 and _port_free(address, 22) else _free_port(address)
                host = parse_host(f"{address}:{port}" if port != 22 else address)
                (root / "sshd_config").write_text(_sshd_config(root, address, port, authorized, bin_dir))
                node = _Node(host, root, data, bin_dir, holder, ns)
                if fleet.nodes and fleet.nodes[-1].host.address == address:
                    fleet.nodes.pop()
                fleet.nodes.append(node)
                try:
                    fleet.start_sshd(host)
                    break
                except RuntimeError:
                    if attempt == 2:
                        raise  # another process took the port between our check and sshd's bind
            pub = (root / "ssh_host_ed25519_key.pub").read_text().split()[:2]
            name = address if node.host.port == 22 else f"[{address}]:{node.host.port}"
            known_lines.append(f"{name} {pub[0]} {pub[1]}")
        Path(fleet.known_hosts).write_text("\n".join(known_lines) + "\n")
    except BaseException:
        fleet.close()
        raise
    return fleet


@pytest.fixture(scope="session")
def fleet():
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    f = start_fleet()
    yield f
    f.close()


@pytest.fixture(scope="session")
def bundle():
    """The worker bundle of this checkout, built as ``console.sh deploy`` builds it."""
    return build_bundle(ROOT, BUNDLE_CACHE)


@pytest.fixture(scope="session")
def deployed(fleet, bundle):
    """Every fleet host with the agent installed, offline, once for the session: the results of
    that deploy, host by host."""
    return deploy_all(fleet.hosts, fleet.settings(), ROOT, fleet.working_dir, BUNDLE_CACHE, bundle=bundle)
