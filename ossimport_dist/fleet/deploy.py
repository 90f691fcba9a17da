"""``console.sh deploy``: install the agent on every worker host, which has Python 3 but no internet.

The master builds an offline bundle: wheels of this project and of every runtime dependency,
built with the master's own Python (so their compiled parts fit that Python's version and
platform). Each host gets, under ``<workingDir>/ossimport/``::

    wheels/          the bundle (a wheel already there with the same SHA-256 is not re-sent)
    venv/            python3 -m venv, then pip install --no-index from wheels/
    deployed.json    what is installed (source hash), so an unchanged re-deploy is quick

Re-deploying after a code change re-installs the project's wheel even when its version did not
change. A host that cannot take the bundle (no python3, another Python minor version than the
bundle's compiled wheels need, no venv module) is named with the reason; the others deploy.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import posixpath
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..errors import OperatorError, WorkerUnreachable
from .hosts import Host
from .ssh import Connection, HostResult, SshSettings, run_on_hosts

PROJECT = "ossimport-dist"
PROJECT_WHEEL_PREFIX = "ossimport_dist-"
PACKAGE_DIR = "ossimport_dist"
# What makes the project's wheel (long_description reads README.md).
SOURCE_FILES = ("setup.cfg", "setup.py", "pyproject.toml", "MANIFEST.in", "README.md")
# What decides the dependency wheels.
DEPENDENCY_FILES = ("setup.cfg", "setup.py", "pyproject.toml")
REMOTE_DIR = "ossimport"
KEEP_PROJECT_BUILDS = 5
PIP_WHEEL_TIMEOUT = 900
PIP_INSTALL_TIMEOUT = 600
VENV_TIMEOUT = 180
_PY_VERSION = re.compile(r"Python (\d+)\.(\d+)(?:\.(\d+))?")


class BundleError(OperatorError):
    """The master cannot build the bundle of wheels the workers install from."""


class DeployError(WorkerUnreachable):
    """A worker host cannot take the agent (its Python, its venv module, pip)."""


@dataclass(frozen=True)
class Wheel:
    path: Path
    size: int
    sha256: str

    @property
    def name(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class Bundle:
    """Everything a worker installs from; ``wheels`` includes ``project_wheel``."""

    wheels: tuple
    project_wheel: Wheel
    version: str
    python_tag: str  # e.g. cp311: the master's Python, which built the compiled wheels
    platform: str  # e.g. linux-x86_64
    machine: str  # e.g. x86_64
    source_hash: str
    deps_hash: str


def remote_dir(working_dir: str) -> str:
    return posixpath.join(working_dir, REMOTE_DIR)


def remote_python(working_dir: str) -> str:
    """The agent's Python on a worker host (inside the deployed venv)."""
    return posixpath.join(remote_dir(working_dir), "venv", "bin", "python")


# --- the bundle, on the master --------------------------------------------------------------

def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _source_files(install_dir: Path) -> list[Path]:
    """The files the project's wheel is built from, relative to ``install_dir``, sorted."""
    files = [Path(n) for n in SOURCE_FILES if (install_dir / n).is_file()]
    for path in sorted((install_dir / PACKAGE_DIR).rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".pyo"):
            files.append(path.relative_to(install_dir))
    return files


def _hash_files(root: Path, names, extra: str) -> str:
    h = hashlib.sha256(extra.encode())
    for name in names:
        data = (root / name).read_bytes()
        h.update(f"\0{name}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


def _wheel_of(path: Path) -> Wheel:
    return Wheel(path, path.stat().st_size, _sha256_file(path))


def _pip_wheel(staging: Path, out: Path, deps: bool) -> None:
    argv = [sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check", "--quiet",
            "--wheel-dir", str(out)]
    if not deps:
        argv.append("--no-deps")
    argv.append(str(staging))
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=PIP_WHEEL_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise BundleError(f"building the worker bundle took over {PIP_WHEEL_TIMEOUT} s "
                          f"(pip wheel); check the master's access to the package index") from None
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        raise BundleError(f"building the worker bundle failed (pip wheel): "
                          f"{lines[-1].strip() if lines else 'exit ' + str(proc.returncode)}; "
                          f"the master needs the package index (or pip's cache) to build it")


def _write_manifest(folder: Path, wheels, extra: dict) -> None:
    data = dict(extra, wheels=[{"name": w.name, "size": w.size, "sha256": w.sha256} for w in wheels])
    tmp = folder / "manifest.json.tmp"
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, folder / "manifest.json")


def _read_manifest(folder: Path) -> Optional[list[Wheel]]:
    """The wheels a finished build folder holds, or None if it is incomplete or damaged."""
    try:
        data = json.loads((folder / "manifest.json").read_text())
        wheels = [Wheel(folder / w["name"], w["size"], w["sha256"]) for w in data["wheels"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    for w in wheels:
        try:
            if w.path.stat().st_size != w.size:
                return None
        except OSError:
            return None
    return wheels


def _publish(tmp: Path, final: Path) -> None:
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def _prune_project_builds(cache_dir: Path, keep: Path) -> None:
    builds = sorted(cache_dir.glob("project-*"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in builds[KEEP_PROJECT_BUILDS:]:
        if old != keep:
            shutil.rmtree(old, ignore_errors=True)


def build_bundle(install_dir, cache_dir) -> Bundle:
    """Wheels of the project at ``install_dir`` and its dependencies, under ``cache_dir``.

    Dependency wheels are reused while setup.cfg/setup.py and the master's Python stay the
    same; the project's wheel while its source files stay the same. Builds run from a copy of
    the source, so the install folder gets no ``build/`` leftovers. Safe to call from several
    processes at once (a lock file in ``cache_dir``).
    """
    install_dir, cache_dir = Path(install_dir).resolve(), Path(cache_dir).resolve()
    if not (install_dir / PACKAGE_DIR).is_dir():
        raise BundleError(f"{install_dir} is not the ossimport-dist install folder (no {PACKAGE_DIR}/)")
    python_tag = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    plat, machine = sysconfig.get_platform(), platform.machine()
    files = _source_files(install_dir)
    dep_files = [n for n in DEPENDENCY_FILES if (install_dir / n).is_file()]
    deps_hash = _hash_files(install_dir, dep_files, f"{python_tag} {plat}")
    source_hash = _hash_files(install_dir, files, deps_hash)
    deps_dir = cache_dir / f"deps-{deps_hash[:16]}"
    project_dir = cache_dir / f"project-{source_hash[:16]}"
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        deps = _read_manifest(deps_dir)
        project = _read_manifest(project_dir)
        if deps is None or project is None:
            with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".build-") as tmp:
                staging, out = Path(tmp) / "src", Path(tmp) / "wheels"
                for name in files:
                    (staging / name).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(install_dir / name, staging / name)
                _pip_wheel(staging, out, deps=deps is None)
                built = sorted(out.glob("*.whl"))
                ours = [p for p in built if p.name.startswith(PROJECT_WHEEL_PREFIX)]
                if len(ours) != 1:
                    raise BundleError(f"pip wheel made {len(ours)} wheels of the project, expected 1")
                manifest = {"python_tag": python_tag, "platform": plat, "machine": machine,
                            "python": platform.python_version()}
                if deps is None:
                    d_tmp = Path(tmp) / "deps"
                    d_tmp.mkdir()
                    for p in built:
                        if p not in ours:
                            shutil.move(str(p), d_tmp / p.name)
                    _write_manifest(d_tmp, [_wheel_of(p) for p in sorted(d_tmp.glob("*.whl"))],
                                    dict(manifest, deps_hash=deps_hash))
                    _publish(d_tmp, deps_dir)
                    deps = _read_manifest(deps_dir)
                p_tmp = Path(tmp) / "project"
                p_tmp.mkdir()
                shutil.move(str(ours[0]), p_tmp / ours[0].name)
                _write_manifest(p_tmp, [_wheel_of(p_tmp / ours[0].name)],
                                dict(manifest, source_hash=source_hash))
                _publish(p_tmp, project_dir)
                project = _read_manifest(project_dir)
        os.utime(project_dir)  # recently used builds survive pruning
        _prune_project_builds(cache_dir, project_dir)
    project_wheel = project[0]
    version = project_wheel.name[len(PROJECT_WHEEL_PREFIX):].split("-", 1)[0]
    return Bundle(tuple(deps) + (project_wheel,), project_wheel, version, python_tag, plat,
                  machine, source_hash, deps_hash)


# --- installing, on each host ---------------------------------------------------------------

def _wheel_needs(filename: str):
    """What Python a wheel needs: None (pure), ("exact", (3, 11)) or ("min", (3, 7))."""
    py_tags, abi, plat = filename[:-len(".whl")].split("-")[-3:]
    if abi == "none" and plat == "any":
        return None
    versions = []
    for tag in py_tags.split("."):
        m = re.fullmatch(r"cp(\d)(\d+)", tag)
        if m:
            versions.append((int(m.group(1)), int(m.group(2))))
    if not versions:
        return None
    return ("min" if abi == "abi3" else "exact", min(versions))


def check_python(bundle: Bundle, version: tuple) -> Optional[str]:
    """Why a host's Python ``version`` (major, minor) cannot use ``bundle``, or None."""
    exact, minimum = set(), {}
    for w in bundle.wheels:
        need = _wheel_needs(w.name)
        if need is None:
            continue
        kind, v = need
        if kind == "exact" and v != version:
            exact.add(w.name.split("-", 1)[0])
        elif kind == "min" and version < v:
            minimum[w.name.split("-", 1)[0]] = v
    if not exact and not minimum:
        return None
    names = ", ".join(sorted(exact | set(minimum)))
    tag_major, tag_minor = bundle.python_tag[2], bundle.python_tag[3:]
    return (f"python {version[0]}.{version[1]} on this host cannot use wheels built for "
            f"{bundle.python_tag} ({names}); install python{tag_major}.{tag_minor} there "
            f"or run the master with the workers' Python")


def _fail(conn: Connection, problem: str) -> DeployError:
    exc = DeployError(f"{conn.host}: {problem}")
    exc.host, exc.problem = conn.host, problem
    return exc


def _remote_python_version(conn: Connection, python3: str, bundle: Bundle) -> tuple:
    res = conn.run(f"{python3} --version 2>&1", check=False, timeout=30)
    m = _PY_VERSION.search(res.stdout)
    if res.rc != 0 or m is None:
        wanted = f"python{bundle.python_tag[2]}.{bundle.python_tag[3:]}"
        raise _fail(conn, f"'{python3} --version' failed ({_last(res.stdout) or 'exit ' + str(res.rc)}); "
                          f"install {wanted} there (with its venv module)")
    return int(m.group(1)), int(m.group(2))


def _last(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:160] if lines else ""


def _remote_wheels(conn: Connection, wheel_dir: str) -> dict:
    res = conn.run(f"find {shlex.quote(wheel_dir)} -maxdepth 1 -type f -name '*.whl' "
                   f"-exec sha256sum {{}} + 2>/dev/null", check=False, timeout=120)
    found = {}
    for line in res.stdout.splitlines():
        digest, _, path = line.partition("  ")
        if path:
            found[posixpath.basename(path)] = digest
    return found


def _sync_wheels(conn: Connection, bundle: Bundle, wheel_dir: str) -> int:
    """Upload the wheels the host lacks, drop the ones no longer in the bundle; how many sent."""
    conn.makedirs(wheel_dir)
    have = _remote_wheels(conn, wheel_dir)
    sent = 0
    for w in bundle.wheels:
        if have.get(w.name) != w.sha256:
            conn.put_file(w.path, posixpath.join(wheel_dir, w.name), mode=0o644)
            sent += 1
    stale = sorted(set(have) - {w.name for w in bundle.wheels})
    if stale:
        conn.run("rm -f -- " + " ".join(shlex.quote(posixpath.join(wheel_dir, n)) for n in stale),
                 timeout=60)
    return sent


def _installed_version(conn: Connection, python: str) -> Optional[str]:
    res = conn.run(f"{shlex.quote(python)} -c "
                   + shlex.quote("import ossimport_dist; print(ossimport_dist.__version__)"),
                   check=False, timeout=60)
    return res.stdout.strip() if res.rc == 0 else None


def _ensure_venv(conn: Connection, python3: str, venv: str, version: tuple) -> None:
    vpy = posixpath.join(venv, "bin", "python")
    res = conn.run(f"{shlex.quote(vpy)} --version 2>&1", check=False, timeout=30)
    m = _PY_VERSION.search(res.stdout)
    if res.rc == 0 and m and (int(m.group(1)), int(m.group(2))) == version:
        return
    res = conn.run(f"{python3} -m venv --clear {shlex.quote(venv)}", check=False, timeout=VENV_TIMEOUT)
    if res.rc != 0:
        text = res.stdout + res.stderr
        if "ensurepip" in text or "No module named venv" in text:
            raise _fail(conn, f"{python3} cannot create a virtual environment (no venv/ensurepip "
                              f"module); install python3-venv there (e.g. 'apt-get install "
                              f"python3.{version[1]}-venv')")
        lines = [ln for ln in text.splitlines() if ln.strip()]
        raise _fail(conn, f"'{python3} -m venv {venv}' failed: {lines[-1].strip() if lines else res.rc}")


def _pip(conn: Connection, vpy: str, args: str) -> None:
    # --isolated: no pip.conf or PIP_* of the host changes what gets installed.
    res = conn.run(f"{shlex.quote(vpy)} -m pip --isolated --disable-pip-version-check "
                   f"--no-cache-dir install --no-index {args}", check=False, timeout=PIP_INSTALL_TIMEOUT)
    if res.rc != 0:
        lines = [ln for ln in (res.stderr or res.stdout).splitlines() if ln.strip()]
        raise _fail(conn, f"pip install from the bundle failed: {lines[-1].strip() if lines else res.rc}")


def deploy_host(conn: Connection, bundle: Bundle, working_dir: str, python3: str = "python3") -> str:
    """Install ``bundle`` into ``<working_dir>/ossimport/venv`` on ``conn``'s host; its version."""
    base = remote_dir(working_dir)
    wheel_dir, venv = posixpath.join(base, "wheels"), posixpath.join(base, "venv")
    vpy = remote_python(working_dir)
    version = _remote_python_version(conn, python3, bundle)
    why = check_python(bundle, version)
    if why:
        raise _fail(conn, why)
    if any(_wheel_needs(w.name) for w in bundle.wheels):
        machine = conn.run("uname -m", check=False, timeout=30).stdout.strip()
        if machine and machine != bundle.machine:
            raise _fail(conn, f"this host is {machine}, the bundle's compiled wheels are for "
                              f"{bundle.machine}; run the master on a {machine} machine")
    state_path = posixpath.join(base, "deployed.json")
    wanted = {"source_hash": bundle.source_hash, "deps_hash": bundle.deps_hash,
              "python": f"{version[0]}.{version[1]}", "version": bundle.version}
    try:
        deployed = json.loads(conn.get_bytes(state_path))
    except (FileNotFoundError, ValueError):
        deployed = None
    if deployed == wanted and _installed_version(conn, vpy) == bundle.version:
        return bundle.version
    _sync_wheels(conn, bundle, wheel_dir)
    _ensure_venv(conn, python3, venv, version)
    wheel = shlex.quote(posixpath.join(wheel_dir, bundle.project_wheel.name))
    links = f"--find-links {shlex.quote(wheel_dir)}"
    _pip(conn, vpy, f"{links} --upgrade --upgrade-strategy eager {wheel}")
    # Same version, new code: pip would call it "already satisfied"; this re-installs it.
    _pip(conn, vpy, f"{links} --force-reinstall --no-deps {wheel}")
    installed = _installed_version(conn, vpy)
    if installed != bundle.version:
        raise _fail(conn, f"after installing, {vpy} reports version {installed or 'none (import failed)'}, "
                          f"expected {bundle.version}")
    conn.put_bytes(json.dumps(wanted, sort_keys=True).encode(), state_path)
    return installed


def deploy_all(hosts, settings: SshSettings, install_dir, working_dir: str, cache_dir,
               bundle: Optional[Bundle] = None, max_workers: int = 8) -> dict[Host, HostResult]:
    """Build (or reuse) the bundle, then deploy it to every host at once; one row per host."""
    if bundle is None:
        bundle = build_bundle(install_dir, cache_dir)
    return run_on_hosts(hosts, lambda conn: deploy_host(conn, bundle, working_dir), settings,
                        max_workers=max_workers)
