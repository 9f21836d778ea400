# Sourced by run_app.sh and test.sh: sets PY to a Python 3.11-3.13 with venv support, or stops
# with a message that says what to install. $PYTHON, when set, is the only one tried.
# NOTE: every pin in requirements.txt has wheels for CPython 3.11-3.13 (av's is abi3 from
# 3.11; streamlit 1.67 needs >= 3.11), so an older interpreter fails deep inside pip, and a
# newer one (3.14+) may find no wheel for a pin and try to build it from source.
python_version() {  # "3.12", or nothing when $1 cannot run
  "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null
}
python_supported() {  # $1 is a version such as 3.12
  [[ "$1" =~ ^3\.([0-9]+)$ ]] && ((BASH_REMATCH[1] >= 11 && BASH_REMATCH[1] <= 13))
}
can_make_venv() {  # an existing virtualenv needs no ensurepip
  [ -x "${VENV:-.venv}/bin/python" ] || "$1" -c 'import ensurepip, venv' >/dev/null 2>&1
}
if [ -n "${PYTHON:-}" ]; then
  CANDIDATES=("$PYTHON")
else
  CANDIDATES=(python3 python3.13 python3.12 python3.11)
fi
PY=""
TRIED=()     # "candidate (what was wrong)"
NO_VENV=""   # the first candidate of a good version that cannot create a virtualenv
for candidate in "${CANDIDATES[@]}"; do
  if ! command -v "$candidate" >/dev/null 2>&1; then
    TRIED+=("$candidate (not found)")
    continue
  fi
  version=$(python_version "$candidate") || version=""
  if [ -z "$version" ]; then
    TRIED+=("$candidate (does not run)")
  elif ! python_supported "$version"; then
    TRIED+=("$candidate ($version)")
  elif ! can_make_venv "$candidate"; then
    TRIED+=("$candidate ($version, no venv/ensurepip)")
    NO_VENV=${NO_VENV:-$candidate}
  else
    PY=$candidate
    break
  fi
done
if [ -z "$PY" ] && [ -n "$NO_VENV" ]; then
  echo "error: $NO_VENV cannot create a virtualenv (no ensurepip); on Debian/Ubuntu install" \
    "python3-venv (or python3.X-venv for your version) and run again." >&2
  echo "tried: ${TRIED[*]}" >&2
  exit 1
fi
if [ -z "$PY" ]; then
  echo "error: this app needs Python 3.11, 3.12 or 3.13 (every pin in requirements.txt has" \
    "wheels for those); tried: ${TRIED[*]}." >&2
  echo "Install python3.13 (or 3.12, 3.11) and run again, or point PYTHON at one." >&2
  exit 1
fi
unset candidate version TRIED NO_VENV
