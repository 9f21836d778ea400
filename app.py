"""Emotion analytics - home page (run: ``streamlit run app.py``)."""

from __future__ import annotations

import streamlit as st

import ui_common
from emotion_core import __version__
from emotion_core.inference import ms_per_face_in_use
from emotion_core.registry import ModelError, default_card, list_models

st.set_page_config(page_title="Emotion analytics", page_icon="🙂")
ui_common.page_nav(settings_follow=False)
st.title("Emotion analytics")
st.caption(f"version {__version__}")
st.markdown(
    "Recognises facial expressions in a webcam stream or a recorded video with our own CNN, "
    "records interview sessions (with consent) and turns them into statistics with honest "
    "uncertainty, including a configurable, heuristic *nervousness indicator*."
)

WHAT_EACH_PAGE_DOES = {
    "Live": "analyse the webcam and record a session",
    "Analysis": "statistics, comparisons, reports",
    "Video": "analyse a recorded interview",
    "Training": "train, evaluate, activate",
}
for path, label, icon in ui_common.PAGES[1:]:  # the sidebar's list, after Home
    st.page_link(path, label=f"{label}: {WHAT_EACH_PAGE_DOES[label]}", icon=icon)

st.subheader("Active model")
models_dir = ui_common.models_dir()
try:
    card = default_card(models_dir)
except ModelError as exc:
    st.error(f"No usable default model: {exc}")
else:
    st.markdown(f"**{card.name}** (the model the Live and Video pages use)")
    cols = st.columns(4)
    cols[0].metric("Val. accuracy", ui_common.accuracy_text(card.val_accuracy))
    cols[1].metric("With flip TTA", ui_common.accuracy_text(card.val_accuracy_tta))
    f1 = card.val_macro_f1
    cols[2].metric("Macro-F1", f"{f1:.3f}" if f1 is not None else "n/a")
    runtime, ms = ms_per_face_in_use(card)  # the runtime the app runs it on
    measured = (
        f"measured {card.cpu_ms_measured}"
        if card.cpu_ms_measured
        else "measured when the model was published"
    )
    cols[3].metric(
        "CPU ms/face",
        ui_common.ms_text(ms) if ms is not None else "n/a",
        help=f"Median of single-face calls on the {runtime} runtime, {measured}.",
    )
    params = f"{card.params:,} parameters" if card.params else "parameters not recorded"
    trained = (
        f"trained on {card.training_data} ({card.training_split}; validated on "
        f"{card.validation_split})"
        if card.training_data
        else "training data not recorded"
    )
    st.caption(
        f"Architecture {card.arch}, {params}, {trained}. "
        f"{len(list_models(models_dir))} model(s) in the registry; compare them on the "
        "Training page."
    )

st.warning(
    "**Responsible use.** Facial expressions are not reliable indicators of inner states, and "
    "the nervousness indicator is a heuristic, not a measurement of anxiety and not a hiring "
    "signal. Emotion recognition in workplaces and education is prohibited in the EU (AI Act "
    "Art. 5(1)(f)). Record people only with their informed consent. See README.md, section "
    "'Responsible use'."
)
