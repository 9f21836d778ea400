#!/usr/bin/env bash
# Install everything the tests need (venv, dev tools, Debian chromium) and run lint, types, tests.
# Usage: scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
source scripts/python.sh
if ! command -v chromium >/dev/null 2>&1 || [ ! -x /usr/bin/chromium ]; then
  SUDO=""; [ "$(id -u)" != 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
    chromium chromium-driver >/dev/null
fi
if [ ! -x "$VENV/bin/pytest" ] || [ requirements-dev.txt -nt "$VENV/.installed-dev" ] \
   || [ requirements.txt -nt "$VENV/.installed-dev" ]; then
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -r requirements-dev.txt
  touch "$VENV/.installed-dev"
fi
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
"$VENV/bin/mypy" emotion_core ui_common.py app.py pages/*.py
"$VENV/bin/python" -m pytest "$@"
