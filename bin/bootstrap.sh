# Sourced by console.sh, import.sh and tests/run.sh: make sure the project's virtual environment
# exists and has this version of the package installed, so a fresh machine needs only Python 3.
# Sets OSSIMPORT_PY to the environment's python.
OSSIMPORT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OSSIMPORT_VENV="${OSSIMPORT_VENV:-$OSSIMPORT_ROOT/.venv}"
OSSIMPORT_PY="$OSSIMPORT_VENV/bin/python"

_ossimport_stamp() {
  cat "$OSSIMPORT_ROOT/setup.cfg" "$OSSIMPORT_ROOT/setup.py" "$@" 2>/dev/null | cksum | cut -d' ' -f1
}

# Whether the extras "$1" (comma-separated) are all among the installed ones "$2"; the test extra
# includes every other one (setup.cfg).
_ossimport_has_extras() {
  local e
  case ",$2," in *,test,*) return 0 ;; esac
  for e in ${1//,/ }; do
    case ",$2," in *",$e,"*) ;; *) return 1 ;; esac
  done
}

ossimport_bootstrap() {  # extras, e.g. "test" or "emulator"
  local extras="$1" base want have had py
  base="$(_ossimport_stamp)"
  have="$(cat "$OSSIMPORT_VENV/.ossimport-installed" 2>/dev/null || true)"
  had=""
  [ "${have%%-*}" = "$base" ] && had="${have#*-}"
  if [ -x "$OSSIMPORT_PY" ] && [ "${have%%-*}" = "$base" ] && _ossimport_has_extras "$extras" "$had"; then
    return 0
  fi
  # Keep the extras already installed for this version: the demo after the tests (or the console
  # after the demo) does not reinstall a smaller environment.
  if [ -n "$had" ] && [ -n "$extras" ]; then extras="$had,$extras"; else extras="${extras:-$had}"; fi
  want="$base-$extras"
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
