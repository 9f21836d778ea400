"""Shared pytest setup."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# NOTE: pylibsrtp (streamlit_webrtc -> aiortc) segfaults when first imported after TensorFlow;
# load it before any test module can import TensorFlow/Keras.
try:
    import pylibsrtp  # noqa: F401
except ImportError:  # streamlit-webrtc not installed: the tests that need it are skipped
    pass
