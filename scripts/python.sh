# Sourced by run_app.sh and test.sh: sets PY to a Python >= 3.11 with venv support, or stops
# with a message that says what to install. $PYTHON, when set, is the only one tried.
# NOTE: every pin in requirements.txt has wheels for CPython 3.11-3.13 (av's is abi3 from
# 3.11; streamlit 1.67 needs >= 3.11), so an older interpreter fails deep inside pip.
python_ok() {
  "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1
}
if [ -n "${PYTHON:-}" ]; then
  CANDIDATES=("$PYTHON")
else
  CANDIDATES=(python3 python3.13 python3.12 python3.11)
fi
PY=""
for candidate in "${CANDIDATES[@]}"; do
  if command -v "$candidate" >/dev/null 2>&1 && python_ok "$candidate"; then
    PY=$candidate
    break
  fi
done
if [ -z "$PY" ]; then
  echo "error: this app needs Python 3.11 or newer; tried: ${CANDIDATES[*]}." >&2
  echo "Install python3.11 (or newer) and run again, or point PYTHON at one." >&2
  exit 1
fi
if [ ! -x "${VENV:-.venv}/bin/python" ] && ! "$PY" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  echo "error: $PY cannot create a virtualenv (no ensurepip); on Debian/Ubuntu install" \
    "python3-venv (or python3.X-venv for your version) and run again." >&2
  exit 1
fi
