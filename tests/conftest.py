"""Shared pytest setup."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Generator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# NOTE: pylibsrtp (streamlit_webrtc -> aiortc) segfaults when first imported after TensorFlow;
# load it before any test module can import TensorFlow/Keras.
try:
    import pylibsrtp  # noqa: F401
except ImportError:  # streamlit-webrtc not installed: the tests that need it are skipped
    pass


@pytest.fixture
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A per-test parsed-data cache, so synthetic datasets never meet the real one."""
    from emotion_core import data as data_module

    monkeypatch.setattr(data_module, "CACHE_DIR", tmp_path / "cache")
    return tmp_path / "cache"


# Skips that CI may not take: .ci/run sets EMOTION_REQUIRE_DATA=1 once it has checked that
# ../shared/data is there, so a test that skips for the real data, the clips, chromium,
# Playwright, PyAV or streamlit-webrtc fails there instead of passing silently. Elsewhere (a
# user's machine, a quick local run) such tests skip with their reason, as before.
REQUIRE_DATA_ENV = "EMOTION_REQUIRE_DATA"
REQUIRED_SKIP = re.compile(
    r"shared/data|real clips|fer2013|ferplus|chromium|playwright|streamlit_webrtc|\bav\b",
    re.IGNORECASE,
)


def required_skip_reason(report: pytest.TestReport) -> str | None:
    """The reason of a skip that EMOTION_REQUIRE_DATA=1 turns into a failure, else None."""
    if os.environ.get(REQUIRE_DATA_ENV) != "1" or not report.skipped:
        return None
    if hasattr(report, "wasxfail"):  # an expected failure, not a skip
        return None
    longrepr = report.longrepr
    reason = str(longrepr[2]) if isinstance(longrepr, tuple) else str(longrepr)
    return reason if REQUIRED_SKIP.search(reason) else None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    reason = required_skip_reason(report)
    if reason is not None:
        report.outcome = "failed"
        report.longrepr = (
            f"{REQUIRE_DATA_ENV}=1 (CI): this test may not skip here, but it did: {reason}"
        )
    return report
