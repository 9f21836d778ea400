"""Emotion analytics core: data, models, live pipeline, sessions and statistics.

This package never imports streamlit, streamlit_webrtc or av (a test checks it).
"""

import sys

# NOTE: pylibsrtp (streamlit-webrtc's SRTP crypto, via aiortc) segfaults when it is first
# imported after TensorFlow (clashing crypto symbols). The app is one process shared by all
# pages, and every page imports emotion_core before anything loads TensorFlow, so loading it
# here, once, protects every entry point. Once TensorFlow is loaded it is too late: importing it
# then IS the crash, so skip it. It is not a UI import; without streamlit-webrtc, nothing to do.
if "tensorflow" not in sys.modules or "pylibsrtp" in sys.modules:
    try:
        import pylibsrtp  # noqa: F401
    except ImportError:
        pass

from emotion_core.classes import CLASSES, NUM_CLASSES  # noqa: E402

__version__ = "0.1.0"
__all__ = ["CLASSES", "NUM_CLASSES", "__version__"]
