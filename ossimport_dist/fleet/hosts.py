"""The workers file: which hosts run a worker, the first of them also the master.

One host per line, ``host`` or ``host:port`` (IPv6 in brackets: ``[::1]:2222``); ``#`` starts a
comment; blank lines are ignored. A line without a port uses ``sshPort`` from sys.properties.

``Host.name`` is how the host appears in the state tree (``dispatched/<name>/``,
``<taskid>_<ms>@<name>``): the address as written, made filesystem-safe. A port written in the
file becomes part of the name with ``_`` (``10.0.0.5:2222`` -> ``10.0.0.5_2222``); a port taken
from ``sshPort`` does not, so changing ``sshPort`` does not rename the hosts of a running job.
IPv6 colons become ``_`` as well (``[fe80::1]`` -> ``fe80__1``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..errors import ConfigError

WORKERS_FILE = "workers.txt"  # ours, in the install folder
OSSIMPORT_WORKERS_FILE = "workers"  # OssImport's name, in conf/

_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_IPV6 = re.compile(r"[0-9A-Fa-f:.]+(?:%[A-Za-z0-9_.-]+)?")
_PORT = re.compile(r"[0-9]{1,5}")


@dataclass(frozen=True)
class Host:
    """One worker host: ``name`` for the state tree, ``address``/``port`` for SSH."""

    name: str
    address: str
    port: int

    def __str__(self) -> str:
        # The form used in every message about the host, ready to paste into ssh tools.
        addr = f"[{self.address}]" if ":" in self.address else self.address
        return f"{addr}:{self.port}"


def _name_for(address: str, port: Optional[int]) -> str:
    base = address.replace(":", "_").replace("%", "_")
    return f"{base}_{port}" if port is not None else base


def parse_host(text: str, default_port: int = 22, path="<workers>", line: int = 0) -> Host:
    """One line's host token -> Host; ``ConfigError`` naming file and line if malformed."""
    token = text.strip()
    fix = "write one host per line as host, host:port or [ipv6]:port"
    if "@" in token:
        raise ConfigError(path, line, "host", f"'{token}' has a user name",
                          "set the user with workerUserName in sys.properties and write only the host")
    port_text: Optional[str] = None
    if token.startswith("["):
        end = token.find("]")
        if end < 0:
            raise ConfigError(path, line, "host", f"'{token}' has no closing ']'", fix)
        address, rest = token[1:end], token[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise ConfigError(path, line, "host", f"'{token}' is not a host", fix)
            port_text = rest[1:]
        if not _IPV6.fullmatch(address) or ":" not in address:
            raise ConfigError(path, line, "host", f"'{address}' is not an IPv6 address", fix)
    else:
        if token.count(":") > 1:
            raise ConfigError(path, line, "host", f"'{token}': an IPv6 address needs brackets",
                              "write it as [address] or [address]:port")
        address, _, port_text_or_empty = token.partition(":")
        port_text = port_text_or_empty if ":" in token else None
        if not _HOSTNAME.fullmatch(address) or ".." in address:
            raise ConfigError(path, line, "host", f"'{address}' is not a host name or address", fix)
    port: Optional[int] = None
    if port_text is not None:
        if not _PORT.fullmatch(port_text) or not 1 <= int(port_text) <= 65535:
            raise ConfigError(path, line, "host", f"bad port '{port_text}' in '{token}'",
                              "a port is a number from 1 to 65535")
        port = int(port_text)
    return Host(_name_for(address, port), address, port if port is not None else default_port)


def read_workers(path, default_port: int = 22) -> list[Host]:
    """The hosts of a workers file, in order (the first is the master host)."""
    path = Path(path)
    text = read_workers_text(path)
    hosts: list[Host] = []
    seen_addr: dict[tuple[str, int], int] = {}
    seen_name: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        content = raw.split("#", 1)[0].strip()
        if not content:
            continue
        host = parse_host(content, default_port, path, number)
        key = (host.address.lower(), host.port)
        first = seen_addr.get(key, seen_name.get(host.name.lower()))
        if first is not None:
            raise ConfigError(path, number, "host", f"'{content}' is the same host as line {first}",
                              "list each host once")
        seen_addr[key] = number
        seen_name[host.name.lower()] = number
        hosts.append(host)
    if not hosts:
        raise ConfigError(path, 0, "", "no hosts listed",
                          "list one worker host per line; the first one is the master")
    return hosts


def read_workers_text(path: Path) -> str:
    """The workers file as text; ``ConfigError`` naming the file (and the line of a byte that
    is not UTF-8) when it cannot be read."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(path, 0, "", f"cannot read the workers file: {exc.strerror or exc}",
                          "list one worker host per line in it") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ConfigError(path, line, "", f"byte 0x{raw[exc.start]:02x} is not valid UTF-8",
                          "save the file as UTF-8; a host name is plain ASCII") from None


def lists_hosts(path: Path) -> bool:
    """True when the workers file names at least one host (else the install is standalone)."""
    return any(line.split("#", 1)[0].strip() for line in read_workers_text(path).splitlines())


def find_workers_file(conf_dir, install_dir) -> Optional[Path]:
    """``workers.txt`` in the install folder, else OssImport's ``conf/workers``; None if neither."""
    for candidate in (Path(install_dir) / WORKERS_FILE, Path(conf_dir) / OSSIMPORT_WORKERS_FILE):
        if candidate.is_file():
            return candidate
    return None
