#!/usr/bin/env bash
# Install the app into .venv (first run only) and start it on the shipped model and ./sessions.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/python.sh
if [ ! -x .venv/bin/streamlit ] || [ requirements.txt -nt .venv/.installed ]; then
  "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r requirements.txt
  touch .venv/.installed
fi
# TensorFlow's native start-up chatter (absl, CPU feature notes) out of the server log
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
exec .venv/bin/streamlit run app.py "$@"
