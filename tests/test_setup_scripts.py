"""scripts/python.sh, which run_app.sh and test.sh use to pick the interpreter for .venv."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pick(
    python: str | None, venv: Path, path: str = "/usr/bin:/bin"
) -> subprocess.CompletedProcess[str]:
    """Source python.sh with PYTHON=python (None: unset, so the candidates on path are tried)."""
    env = {"PATH": path, "VENV": str(venv)}
    if python is not None:
        env["PYTHON"] = python
    return subprocess.run(
        ["bash", "-c", 'set -euo pipefail; source scripts/python.sh; echo "PY=$PY"'],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _fake_python(tmp_path: Path, body: str, name: str = "fakepython") -> Path:
    fake = tmp_path / name
    fake.write_text(f"#!/bin/sh\n{body}\n")
    fake.chmod(0o755)
    return fake


def _fake_version(tmp_path: Path, name: str, version: str, venv: bool = True) -> Path:
    """An interpreter that reports `version` and has (or lacks) ensurepip; else a real one."""
    body = f'case "$*" in *version_info*) echo {version}; exit 0;; esac\n'
    if not venv:
        body += 'case "$*" in *ensurepip*) exit 1;; esac\n'
    return _fake_python(tmp_path, body + f'exec {sys.executable} "$@"', name)


def test_a_working_interpreter_is_chosen(tmp_path: Path) -> None:
    done = _pick(sys.executable, tmp_path / "venv")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"PY={sys.executable}"


def test_an_old_interpreter_stops_with_what_to_install(tmp_path: Path) -> None:
    # stands in for Python 3.10: the version check exits 1
    old = _fake_python(tmp_path, "exit 1")
    done = _pick(str(old), tmp_path / "venv")
    assert done.returncode == 1
    assert "needs Python 3.11, 3.12 or 3.13" in done.stderr
    assert str(old) in done.stderr
    assert "PY=" not in done.stdout


def test_an_interpreter_outside_3_11_to_3_13_is_refused_naming_its_version(tmp_path: Path) -> None:
    # 3.14+: some pins have no wheel for it yet (README: wheels for 3.11-3.13)
    for version in ("3.14", "3.15", "4.0", "3.10"):
        fake = _fake_version(tmp_path, f"python-{version}", version)
        done = _pick(str(fake), tmp_path / "venv")
        assert done.returncode == 1, (version, done.stdout)
        assert "needs Python 3.11, 3.12 or 3.13" in done.stderr
        assert f"{fake} ({version})" in done.stderr
        assert "PY=" not in done.stdout
    for version in ("3.11", "3.13"):
        fake = _fake_version(tmp_path, f"python-{version}", version)
        done = _pick(str(fake), tmp_path / "venv")
        assert done.returncode == 0, (version, done.stderr)
        assert done.stdout.strip() == f"PY={fake}"


def test_the_next_candidate_is_tried_past_a_too_new_one_or_one_without_venv(
    tmp_path: Path,
) -> None:
    # without $PYTHON: python3 is 3.14, python3.13 lacks ensurepip, python3.12 works
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _fake_version(bin_dir, "python3", "3.14")
    _fake_version(bin_dir, "python3.13", "3.13", venv=False)
    _fake_version(bin_dir, "python3.12", "3.12")
    _fake_version(bin_dir, "python3.11", "3.11")
    path = f"{bin_dir}:/usr/bin:/bin"
    done = _pick(None, tmp_path / "venv", path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "PY=python3.12"
    # none left with venv support: the message names the package, not the version
    (bin_dir / "python3.12").unlink()
    (bin_dir / "python3.11").unlink()
    _fake_version(bin_dir, "python3.12", "3.12", venv=False)
    _fake_version(bin_dir, "python3.11", "3.14")
    done = _pick(None, tmp_path / "venv", path)
    assert done.returncode == 1
    assert "python3.13 cannot create a virtualenv" in done.stderr and "python3-venv" in done.stderr
    assert "python3 (3.14)" in done.stderr and "PY=" not in done.stdout


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


SKIPPING_TESTS = """
import pytest


@pytest.mark.skipif(True, reason="../shared/data/fer2013 is not present")
def test_needs_data():
    pass


def test_needs_clips():
    pytest.skip("real clips not available (/x/shared/data/videos is absent)")


def test_needs_playwright():
    pytest.importorskip("no_such_module_here", reason="pip package playwright absent")


def test_needs_pyav():  # what pytest.importorskip("av") says without PyAV
    pytest.skip("could not import 'av': No module named 'av'")


@pytest.mark.skipif(True, reason="needs /proc/self/fd")
def test_unrelated_skip():
    pass


@pytest.mark.xfail(reason="shared/data in an expected failure")
def test_expected_failure():
    raise AssertionError
"""


def _run_skipping_tests(tmp_path: Path, require: str | None) -> subprocess.CompletedProcess[str]:
    """pytest on SKIPPING_TESTS with tests/conftest.py loaded as a plugin."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_skips.py").write_text(SKIPPING_TESTS)
    env = {k: v for k, v in os.environ.items() if k != "EMOTION_REQUIRE_DATA"}
    env["PYTHONPATH"] = str(ROOT / "tests")
    if require is not None:
        env["EMOTION_REQUIRE_DATA"] = require
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "conftest", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_locally_missing_data_skips_but_in_ci_it_fails(tmp_path: Path) -> None:
    local = _run_skipping_tests(tmp_path, None)
    assert local.returncode == 0, local.stdout + local.stderr
    assert "5 skipped, 1 xfailed" in local.stdout
    ci = _run_skipping_tests(tmp_path, "1")
    assert ci.returncode == 1, ci.stdout + ci.stderr
    for name in ("test_needs_data", "test_needs_clips", "test_needs_playwright", "test_needs_pyav"):
        assert re.search(rf"(FAILED|ERROR) test_skips.py::{name}\b", ci.stdout), (name, ci.stdout)
    assert "EMOTION_REQUIRE_DATA=1 (CI): this test may not skip here" in ci.stdout
    assert "SKIPPED [1] test_skips.py" in ci.stdout and "needs /proc/self/fd" in ci.stdout
    assert "XFAIL test_skips.py::test_expected_failure" in ci.stdout


def _ci_copy(tmp_path: Path) -> Path:
    """.ci/run in a scratch checkout whose scripts/test.sh only shows what it was given."""
    repo = tmp_path / "main"
    (repo / ".ci").mkdir(parents=True)
    (repo / "scripts").mkdir()
    (repo / ".ci" / "run").write_text((ROOT / ".ci" / "run").read_text())
    (repo / "scripts" / "test.sh").write_text(
        'echo "tests would run: VENV=$VENV EMOTION_REQUIRE_DATA=$EMOTION_REQUIRE_DATA"\n'
    )
    return repo


def test_ci_stops_at_once_without_the_shared_data_and_requires_it_with(tmp_path: Path) -> None:
    repo = _ci_copy(tmp_path)
    run = ["bash", str(repo / ".ci" / "run")]
    env = {"PATH": "/usr/bin:/bin"}
    done = subprocess.run(run, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "CI needs the real data" in done.stderr
    assert "../shared/data/fer2013/fer2013.csv.gz" in done.stderr
    assert "tests would run" not in done.stdout
    data = tmp_path / "shared" / "data"
    for file in ("fer2013/fer2013.csv.gz", "ferplus/fer2013new.csv", "videos/1543684773.avi"):
        (data / file).parent.mkdir(parents=True, exist_ok=True)
        (data / file).write_bytes(b"x")
    done = subprocess.run(run, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "tests would run: VENV=.venv-ci EMOTION_REQUIRE_DATA=1"
