"""Emotion analytics - home page (run: ``streamlit run app.py``)."""

from __future__ import annotations

# NOTE: pylibsrtp (streamlit_webrtc -> aiortc) segfaults when first imported after TensorFlow;
# load it before any page can import TensorFlow.
import pylibsrtp  # noqa: F401  isort: skip

import streamlit as st

st.set_page_config(page_title="Emotion analytics", page_icon="🙂")
st.title("Emotion analytics")
st.markdown(
    "- **Live**: analyse the webcam and record an interview session (with consent).\n"
    "- **Analysis**: statistics, comparisons and reports of recorded sessions."
)
