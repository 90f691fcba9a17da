"""The OSS emulator is its own package: ossimport_dist never imports it, the workers' bundle that
``console.sh deploy`` ships carries none of it (nor fabric, an extra now), and the set-up scripts
install the extras each entry point needs without reinstalling a smaller environment."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import BUNDLE_CACHE
from ossimport_dist.fleet.deploy import build_bundle

pytest_plugins = ["fleet"]  # its bundle fixture (the fleet itself is not started here)

ROOT = Path(__file__).resolve().parents[2]
OLD_PACKAGE = "ossimport_dist/emulator/__init__.py"  # where the emulator lived before the move
EMULATOR_FILE = re.compile(r"(^|/)(oss_emulator|emulator)/")
# fabric's own dependencies (invoke stays: paramiko needs it)
FABRIC_ONLY = {"fabric", "decorator", "deprecated", "wrapt"}


def wheel_files(bundle) -> dict:
    return {w.name: zipfile.ZipFile(w.path).namelist() for w in bundle.wheels}


def distribution(wheel_name: str) -> str:
    return wheel_name.split("-")[0].lower()


@pytest.fixture(scope="module")
def old_bundle(tmp_path_factory):
    """The bundle of the commit before the emulator left ossimport_dist/, built the same way."""
    git = ["git", "-C", str(ROOT)]
    moved = subprocess.run(git + ["log", "-1", "--format=%H", "--diff-filter=D", "--", OLD_PACKAGE],
                           capture_output=True, text=True)
    if moved.returncode != 0 or not moved.stdout.strip():
        pytest.skip(f"no git history of {OLD_PACKAGE} here (not a clone, or a shallow one)")
    before = moved.stdout.strip() + "^"
    src = tmp_path_factory.mktemp("before-the-move")
    archive = subprocess.run(git + ["archive", "--format=tar", before, "setup.cfg", "setup.py", "README.md",
                                    "ossimport_dist"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive.stdout, check=True)
    return build_bundle(src, BUNDLE_CACHE)


def test_the_workers_bundle_carries_no_emulator_code_and_no_fabric(bundle):
    files = wheel_files(bundle)
    carried = {name: [f for f in names if EMULATOR_FILE.search(f)] for name, names in files.items()}
    assert {name: found for name, found in carried.items() if found} == {}
    project = files[bundle.project_wheel.name]
    assert "ossimport_dist/worker.py" in project and "ossimport_dist/fleet/agent.py" in project
    assert "ossimport_dist/cli/console.py" in project  # the subpackages travel with the package
    assert not [f for f in project if f.startswith("oss_emulator") or f.endswith("/demo.py")]
    top_level = [f for f in project if f.endswith(".dist-info/top_level.txt")]
    if top_level:
        with zipfile.ZipFile(bundle.project_wheel.path) as z:
            assert z.read(top_level[0]).decode().split() == ["ossimport_dist"]
    names = {distribution(n) for n in files}
    assert {"oss2", "paramiko", "psutil", "ossimport_dist"} <= names
    assert names & FABRIC_ONLY == set()


def test_the_bundle_is_smaller_than_before_the_emulator_moved_out(bundle, old_bundle):
    old_files = wheel_files(old_bundle)
    assert [f for f in old_files[old_bundle.project_wheel.name] if f.startswith("ossimport_dist/emulator/")], \
        "the commit before the move should have had the emulator in the package"
    # The project's own wheel grows with its code (and README) since the move, so its size alone
    # says nothing; the emulator's files are gone from it (the test above) and the whole bundle,
    # its dependencies with it, is what a deploy ships.
    dropped = {distribution(n) for n in old_files} - {distribution(w.name) for w in bundle.wheels}
    assert "fabric" in dropped and dropped <= FABRIC_ONLY
    old_total, total = (sum(w.size for w in b.wheels) for b in (old_bundle, bundle))
    assert total < old_total, f"the bundle grew: {old_total} -> {total} bytes"


def imports_of(path: Path) -> list:
    """Every module a source file imports, or names as a string (``-m NAME``, import_module)."""
    found = []
    for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.append(node.module or "")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and re.fullmatch(r"oss_emulator(\.\w+)*", node.value):
            found.append(node.value)
    return found


def test_ossimport_dist_never_imports_the_emulator():
    sources = sorted((ROOT / "ossimport_dist").rglob("*.py"))
    assert len(sources) > 20
    offenders = {str(p.relative_to(ROOT)): [m for m in imports_of(p) if m.split(".")[0] == "oss_emulator"]
                 for p in sources}
    assert {p: m for p, m in offenders.items() if m} == {}
    # (a checkout from before the move may keep an untracked emulator/__pycache__: no source)
    assert list((ROOT / "ossimport_dist" / "emulator").glob("*.py")) == []
    assert not (ROOT / "ossimport_dist" / "demo.py").exists()


def test_every_module_of_the_package_imports_with_the_emulator_absent():
    # sys.modules[name] = None makes any import of it fail, as on a worker host without it.
    code = ("import sys, pkgutil, importlib; sys.modules['oss_emulator'] = None\n"
            "import ossimport_dist\n"
            "for m in pkgutil.walk_packages(ossimport_dist.__path__, 'ossimport_dist.'):\n"
            "    if not m.name.endswith('__main__'):\n"
            "        importlib.import_module(m.name)\n"
            "print('imported', len(sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.startswith("imported "), r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("argv", [["--demo", "--bogus"], ["--yes", "--bogus", "--demo"]])
def test_import_sh_demo_names_a_bad_argument_in_one_line_and_starts_nothing(argv):
    r = subprocess.run(["bash", str(ROOT / "import.sh"), *argv], capture_output=True, text=True, timeout=120,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 2
    assert r.stderr.splitlines()[-1] == "import.sh --demo: error: unrecognized arguments: --bogus"
    assert "Traceback" not in r.stderr and "demo:" not in r.stdout


def test_oneclick_without_the_emulator_refuses_demo_as_an_unknown_option(tmp_path):
    # The console's own entry point has no demo: import.sh --demo runs oss_emulator.demo.
    r = subprocess.run([sys.executable, "-m", "ossimport_dist.cli.oneclick", "--install-dir", str(tmp_path), "--demo"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.splitlines()[-1] == "import.sh: error: unrecognized arguments: --demo"
    assert "Traceback" not in r.stderr


# --- bin/bootstrap.sh, with a stand-in python that records what pip was asked to install ------

FAKE_PYTHON = """#!/bin/sh
echo "$*" >> "$(dirname "$0")/../calls"
"""


def bootstrap(venv: Path, extras: str, installed=None) -> tuple:
    """Run ossimport_bootstrap EXTRAS against ``venv``; (pip calls, the stamp after)."""
    (venv / "bin").mkdir(parents=True, exist_ok=True)
    py = venv / "bin" / "python"
    py.write_text(FAKE_PYTHON)
    py.chmod(0o755)
    calls, stamp = venv / "calls", venv / ".ossimport-installed"
    calls.unlink(missing_ok=True)
    base = subprocess.run(["bash", "-c", f". {ROOT}/bin/bootstrap.sh; _ossimport_stamp"],
                          capture_output=True, text=True, check=True).stdout.strip()
    if installed is not None:
        stamp.write_text(f"{base}-{installed}\n")
    r = subprocess.run(["bash", "-c", f'. {ROOT}/bin/bootstrap.sh; ossimport_bootstrap "$1"', "-", extras],
                       capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin",
                                                                        "OSSIMPORT_VENV": str(venv)})
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    pip = [line.split()[-1] for line in calls.read_text().splitlines()] if calls.exists() else []
    return pip, stamp.read_text().strip()[len(base) + 1:]


@pytest.mark.parametrize("installed, wanted, pip, after", [
    (None, "", [str(ROOT)], ""),  # a fresh machine, console.sh
    (None, "emulator", [f"{ROOT}[emulator]"], "emulator"),  # a fresh machine, import.sh --demo
    ("", "emulator", [f"{ROOT}[emulator]"], "emulator"),  # the demo after the console
    ("emulator", "", [], "emulator"),  # the console after the demo: nothing to install
    ("emulator", "test", [f"{ROOT}[emulator,test]"], "emulator,test"),  # tests/run.sh after the demo
    ("test", "emulator", [], "test"),  # the test extra includes the emulator's
    ("emulator,test", "", [], "emulator,test"),
])
def test_bootstrap_installs_the_extras_asked_for_and_keeps_those_installed(tmp_path, installed, wanted, pip, after):
    assert bootstrap(tmp_path / "venv", wanted, installed) == (pip, after)


def test_bootstrap_reinstalls_everything_installed_when_the_version_changed(tmp_path):
    venv = tmp_path / "venv"
    (venv).mkdir()
    (venv / ".ossimport-installed").write_text("12345-emulator\n")  # another setup.cfg's stamp
    assert bootstrap(venv, "") == ([str(ROOT)], "")
