"""scripts/python.sh, which run_app.sh and test.sh use to pick the interpreter for .venv."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pick(python: str, venv: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", 'set -euo pipefail; source scripts/python.sh; echo "PY=$PY"'],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHON": python, "VENV": str(venv)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _fake_python(tmp_path: Path, body: str) -> Path:
    fake = tmp_path / "fakepython"
    fake.write_text(f"#!/bin/sh\n{body}\n")
    fake.chmod(0o755)
    return fake


def test_a_working_interpreter_is_chosen(tmp_path: Path) -> None:
    done = _pick(sys.executable, tmp_path / "venv")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"PY={sys.executable}"


def test_an_old_interpreter_stops_with_what_to_install(tmp_path: Path) -> None:
    # stands in for Python 3.10: the version check exits 1
    old = _fake_python(tmp_path, "exit 1")
    done = _pick(str(old), tmp_path / "venv")
    assert done.returncode == 1
    assert "needs Python 3.11 or newer" in done.stderr
    assert str(old) in done.stderr
    assert "PY=" not in done.stdout


def test_an_interpreter_without_venv_support_names_the_package(tmp_path: Path) -> None:
    # a new enough Python whose ensurepip is missing, as on Debian without python3-venv
    no_venv = _fake_python(
        tmp_path, f'case "$*" in *ensurepip*) exit 1;; esac\nexec {sys.executable} "$@"'
    )
    done = _pick(str(no_venv), tmp_path / "venv")
    assert done.returncode == 1
    assert "python3-venv" in done.stderr
    # an existing virtualenv needs no ensurepip: the same interpreter is then fine
    existing = tmp_path / "existing"
    (existing / "bin").mkdir(parents=True)
    (existing / "bin" / "python").symlink_to(sys.executable)
    assert _pick(str(no_venv), existing).returncode == 0
