#!/usr/bin/env bash
# Sets up everything the test suite needs (the project's virtual environment with the package and
# its test extras), then runs it. Extra arguments go to pytest, e.g. `bash tests/run.sh -k stat`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$ROOT/bin/bootstrap.sh"
ossimport_bootstrap test
cd "$ROOT"
"$OSSIMPORT_PY" -m pytest tests "$@"
