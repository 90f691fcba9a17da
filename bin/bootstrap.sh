# Sourced by console.sh, import.sh and tests/run.sh: make sure the project's virtual environment
# exists and has this version of the package installed, so a fresh machine needs only Python 3.
# Sets OSSIMPORT_PY to the environment's python.
OSSIMPORT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OSSIMPORT_VENV="${OSSIMPORT_VENV:-$OSSIMPORT_ROOT/.venv}"
OSSIMPORT_PY="$OSSIMPORT_VENV/bin/python"

_ossimport_stamp() {
  cat "$OSSIMPORT_ROOT/setup.cfg" "$OSSIMPORT_ROOT/setup.py" "$@" 2>/dev/null | cksum | cut -d' ' -f1
}

ossimport_bootstrap() {  # extras, e.g. "test"
  local extras="$1" base want have py
  base="$(_ossimport_stamp)"
  want="$base-$extras"
  have="$(cat "$OSSIMPORT_VENV/.ossimport-installed" 2>/dev/null || true)"
  # An environment set up for the tests has everything the console needs too.
  if [ -x "$OSSIMPORT_PY" ] && { [ "$have" = "$want" ] || [ "$have" = "$base-test" ]; }; then
    return 0
  fi
  py="$(command -v python3 || command -v python || true)"
  if [ -z "$py" ]; then
    echo "error: Python 3 is needed (python3 not found on PATH); install it, e.g. 'apt-get install python3 python3-venv'" >&2
    return 1
  fi
  echo "Setting up the Python environment in $OSSIMPORT_VENV (first run only)..." >&2
  if [ ! -x "$OSSIMPORT_PY" ]; then
    "$py" -m venv "$OSSIMPORT_VENV" >&2 || {
      echo "error: could not create a virtual environment; install python3-venv (e.g. 'apt-get install python3-venv')" >&2
      return 1; }
  fi
  local spec="$OSSIMPORT_ROOT"
  [ -n "$extras" ] && spec="$OSSIMPORT_ROOT[$extras]"
  "$OSSIMPORT_PY" -m pip install --quiet --disable-pip-version-check -e "$spec" >&2 || {
    echo "error: installing the package into $OSSIMPORT_VENV failed (see above); check access to the package index" >&2
    return 1; }
  echo "$want" > "$OSSIMPORT_VENV/.ossimport-installed"
}
