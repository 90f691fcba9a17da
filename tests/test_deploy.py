"""``deploy``: the master builds an offline bundle of wheels and installs the agent on worker
hosts that have Python 3 but no internet (the fleet's hosts cannot reach any package index)."""

from __future__ import annotations

import shlex
import shutil
import time
from pathlib import Path

import pytest

import ossimport_dist
from ossimport_dist.fleet.deploy import (build_bundle, check_python, deploy_all, deploy_host,
                                   remote_dir, remote_python)
from ossimport_dist.fleet.ssh import Connection

from conftest import BUNDLE_CACHE as CACHE  # where the fleet's bundle and deployed fixtures build
from conftest import ROOT

pytest_plugins = ["fleet"]
# One worker of a parallel run holds the fleet (sshd on 127.0.0.11-13): its tests run there.
pytestmark = pytest.mark.xdist_group("fleet")


def remote_import(conn: Connection, working_dir: str, expr: str) -> str:
    code = f"import ossimport_dist; print({expr})"
    return conn.run(f"{remote_python(working_dir)} -c {shlex.quote(code)}").stdout.strip()


def test_bundle_is_reused_for_the_same_source(bundle):
    started = time.monotonic()
    again = build_bundle(ROOT, CACHE)
    assert time.monotonic() - started < 5
    assert again == bundle
    assert bundle.version == ossimport_dist.__version__
    assert bundle.python_tag.startswith("cp3") and bundle.project_wheel in bundle.wheels
    names = {w.name.split("-")[0].lower() for w in bundle.wheels}
    assert {"oss2", "paramiko", "javaproperties", "psutil", "ossimport_dist"} <= names


def test_deploy_to_hosts_without_internet(fleet, deployed, bundle):
    assert {h: r.ok for h, r in deployed.items()} == {h: True for h in fleet.hosts}, deployed
    assert {r.value for r in deployed.values()} == {ossimport_dist.__version__}
    for host in fleet.hosts:
        with Connection(host, fleet.settings()) as conn:
            assert remote_import(conn, fleet.working_dir, "ossimport_dist.__version__") == bundle.version
            assert remote_import(conn, fleet.working_dir, "__import__('paramiko').__name__") == "paramiko"
        assert (fleet.host_dir(host) / "ossimport" / "venv" / "bin" / "python").exists()
    assert not Path(remote_dir(fleet.working_dir)).exists()  # nothing landed on the master

    # The hosts really are offline for pip: this is what makes the test above mean something.
    with Connection(fleet.hosts[0], fleet.settings()) as conn:
        res = conn.run(f"{remote_python(fleet.working_dir)} -m pip download --no-deps "
                       f"-d {fleet.working_dir}/pip-probe six", check=False, timeout=60)
    assert res.rc != 0
    assert "Looking in indexes: http://127.0.0.1:9/simple" in res.stdout
    assert "No matching distribution found for six" in res.stderr


def test_redeploy_same_version_picks_up_changed_code(fleet, deployed, bundle, tmp_path):
    host = fleet.hosts[0]
    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.cfg", "setup.py", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "ossimport_dist", src / "ossimport_dist",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    marker = f"changed-{time.time_ns()}"
    with open(src / "ossimport_dist" / "__init__.py", "a") as f:
        f.write(f"\nDEPLOY_MARKER = {marker!r}\n")
    changed = build_bundle(src, CACHE)
    assert changed.version == bundle.version and changed.deps_hash == bundle.deps_hash
    assert changed.project_wheel.sha256 != bundle.project_wheel.sha256

    wheels = fleet.host_dir(host) / "ossimport" / "wheels"
    dep_mtimes = {p.name: p.stat().st_mtime_ns for p in wheels.glob("*.whl")
                  if not p.name.startswith("ossimport_dist-")}
    try:
        with Connection(host, fleet.settings()) as conn:
            assert deploy_host(conn, changed, fleet.working_dir) == bundle.version
            assert remote_import(conn, fleet.working_dir, "ossimport_dist.DEPLOY_MARKER") == marker
        # Only the project's wheel travelled again.
        assert {p.name: p.stat().st_mtime_ns for p in wheels.glob("*.whl")
                if not p.name.startswith("ossimport_dist-")} == dep_mtimes
    finally:
        with Connection(host, fleet.settings()) as conn:
            deploy_host(conn, bundle, fleet.working_dir)
            assert remote_import(conn, fleet.working_dir,
                                 "hasattr(ossimport_dist, 'DEPLOY_MARKER')") == "False"


def test_host_with_unsuitable_python_is_named(fleet, deployed, bundle):
    bad = fleet.hosts[2]
    fake = fleet.host_bin(bad) / "python3"  # first on that host's PATH only
    fake.write_text("#!/bin/sh\necho 'Python 3.6.0'\n")
    fake.chmod(0o755)
    try:
        results = deploy_all(fleet.hosts, fleet.settings(), ROOT, fleet.working_dir, CACHE, bundle=bundle)
    finally:
        fake.unlink()
    assert [results[h].ok for h in fleet.hosts] == [True, True, False]
    error = results[bad].error
    assert error.startswith(f"{bad}: python 3.6 on this host cannot use wheels built for {bundle.python_tag} (")
    assert f"install python3.{bundle.python_tag[3:]} there or run the master with the workers' Python" in error


def test_host_without_venv_module_is_named(fleet, deployed, bundle):
    host = fleet.hosts[1]
    fake = fleet.host_bin(host) / "python3"
    fake.write_text('#!/bin/sh\nif [ "$1" = -m ] && [ "$2" = venv ]; then\n'
                    '  echo "/usr/bin/python3: No module named venv" >&2; exit 1\nfi\n'
                    'exec /usr/bin/python3 "$@"\n')
    fake.chmod(0o755)
    try:
        with Connection(host, fleet.settings()) as conn:
            with pytest.raises(ossimport_dist.errors.WorkerUnreachable) as e:
                deploy_host(conn, bundle, f"{fleet.working_dir}/fresh")  # no venv there yet
    finally:
        fake.unlink()
    assert str(e.value).startswith(f"{host}: python3 cannot create a virtual environment")
    assert "install python3-venv there" in str(e.value)


def test_dead_host_is_reported_and_the_others_deploy(fleet, deployed, bundle):
    hosts = [fleet.dead_host, fleet.hosts[0]]
    results = deploy_all(hosts, fleet.settings(), ROOT, fleet.working_dir, CACHE, bundle=bundle)
    assert results[fleet.hosts[0]].ok and results[fleet.hosts[0]].value == bundle.version
    assert not results[fleet.dead_host].ok
    assert results[fleet.dead_host].error.startswith(f"{fleet.dead_host}: cannot connect (connection refused)")


def test_python_compatibility_rules(bundle):
    tag = (int(bundle.python_tag[2]), int(bundle.python_tag[3:]))
    assert check_python(bundle, tag) is None
    assert "cannot use wheels built for" in check_python(bundle, (3, 8))
