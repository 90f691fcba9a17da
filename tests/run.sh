#!/usr/bin/env bash
# Sets up everything the test suite needs (the project's virtual environment with the package and
# its test extras), then runs it. Extra arguments go to pytest, e.g. `bash tests/run.sh -k stat`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$ROOT/bin/bootstrap.sh"
ossimport_bootstrap test
cd "$ROOT"
# oss2's own integration tests against the emulator (a test suite nobody here wrote).
"$OSSIMPORT_PY" tests/oss2_compat/run.py
# Debian packages the suite needs (openssh-server for the SSH fleet); quick when installed.
bash "$ROOT/tests/setup_system.sh"
# The project's suite: migration stories through the real scripts and the real emulator, on
# OSSIMPORT_TEST_WORKERS processes (default 3: the stories mostly wait on their servers); the
# tests of the sshd fleet all run in one of them (xdist_group "fleet"). 0 runs them in this one.
"$OSSIMPORT_PY" -m pytest tests -n "${OSSIMPORT_TEST_WORKERS:-3}" --dist loadgroup "$@"
