"""Emotion analytics core: data, models, live pipeline, sessions and statistics.

This package never imports streamlit, streamlit_webrtc or av (a test checks it).
"""

from emotion_core.classes import CLASSES, NUM_CLASSES

__version__ = "0.1.0"
__all__ = ["CLASSES", "NUM_CLASSES", "__version__"]
