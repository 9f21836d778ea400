"""Shared pytest setup."""

from __future__ import annotations

import sys
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
