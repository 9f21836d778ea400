"""Live page: webcam -> face detection -> emotion classification in the browser, with running
statistics, the nervousness indicator and consent-gated session recording.

Thin by design (the style of streamlit-webrtc's examples): the video callback hands each frame
to emotion_core.live.LiveProcessor; the script thread polls a LiveAggregator snapshot while the
stream plays. Nothing here runs st.* from the callback thread.
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:  # `streamlit run` adds the root; AppTest and tools may not
    sys.path.insert(0, str(_ROOT))

import streamlit as st  # isort: skip

# NOTE: pylibsrtp (imported by streamlit_webrtc via aiortc) segfaults the whole server when it
# is first imported after TensorFlow. app.py/emotion_core load it early; if another page loaded
# TensorFlow first anyway, refuse politely instead of crashing every user's session.
if "tensorflow" in sys.modules and "pylibsrtp" not in sys.modules:
    st.error(
        "The live video library cannot be loaded after TensorFlow in this server process. "
        "Restart the app (`streamlit run app.py`) and open the Live page first."
    )
    st.stop()

from streamlit_webrtc import WebRtcMode, webrtc_streamer  # isort: skip

import os
import time
from typing import Any

import av

import ui_common
from emotion_core.charts import live_distribution_chart
from emotion_core.detect import DetectorError
from emotion_core.live import (
    LiveAggregator,
    LiveProcessor,
    LiveSnapshot,
    RecordingOutcome,
    parse_ice_servers,
    stop_outcome,
)
from emotion_core.nervousness import NervousnessRule, evaluate_rule_on_counts
from emotion_core.pipeline import EmotionPipeline, PipelineConfig
from emotion_core.registry import ModelCard
from emotion_core.sessions import SessionRecorder, sessions_dir_default

AGGREGATOR_KEY = "live_aggregator"
PROCESSOR_KEY = "live_processor"
MESSAGE_KEY = "live_message"
SAVED_KEY = "live_saved_session"
FAILURE_SHOWN_KEY = "live_failure_shown"  # the failed recording whose message was given
CANDIDATE_KEY = "live_candidate"
NOTES_KEY = "live_notes"
CONSENT_KEY = "live_consent"
POLL_S = 0.5


def ice_servers() -> tuple[list[dict[str, Any]], str | None]:
    """ICE servers from $EMOTION_ICE_SERVERS or st.secrets["ice_servers"] (default: none)."""
    raw: Any = os.environ.get("EMOTION_ICE_SERVERS")
    if raw is None:
        try:
            raw = st.secrets.get("ice_servers")
        except Exception:  # noqa: BLE001  no secrets.toml is normal
            raw = None
    if raw is None:
        return [], None
    try:
        return parse_ice_servers(raw), None
    except ValueError as exc:
        return [], f"ICE server setting ignored: {exc}"


def live_objects() -> tuple[LiveAggregator, LiveProcessor]:
    """This browser session's aggregator and processor (created once)."""
    if AGGREGATOR_KEY not in st.session_state:
        aggregator = LiveAggregator()
        st.session_state[AGGREGATOR_KEY] = aggregator
        st.session_state[PROCESSOR_KEY] = LiveProcessor(aggregator)
    return st.session_state[AGGREGATOR_KEY], st.session_state[PROCESSOR_KEY]


def make_callback(processor: LiveProcessor) -> Any:
    """The webrtc video callback (runs on a worker thread: no st.* calls in it)."""

    def callback(frame: av.VideoFrame) -> av.VideoFrame:
        image = frame.to_ndarray(format="bgr24")
        annotated = processor.process(image, frame.time)
        return av.VideoFrame.from_ndarray(annotated, format="bgr24")

    return callback


def pipeline_sidebar(recording: bool) -> PipelineConfig:
    """Detection and smoothing settings (fixed while recording: one session, one pipeline)."""
    default = PipelineConfig()
    with st.sidebar.expander("Detection & smoothing"):
        if recording:
            st.caption("Fixed while recording; changes apply to the next recording.")
        widths = [0, 224, 256, 320, 480, 640]
        detect_width = st.select_slider(
            "Detection width (px)",
            options=widths,
            value=default.detect_width,
            format_func=lambda w: "full size" if w == 0 else str(w),
            key="live_detect_width",
            disabled=recording,
            help="Frames are shrunk to this width to find faces: smaller is faster.",
        )
        min_neighbors = st.slider(
            "Detector strictness (min neighbours)",
            2,
            10,
            default.min_neighbors,
            key="live_min_neighbors",
            disabled=recording,
            help="Higher: fewer false faces, more missed faces.",
        )
        min_face_px = st.slider(
            "Smallest face (px)",
            24,
            240,
            default.min_face_px,
            step=8,
            key="live_min_face",
            disabled=recording,
        )
        max_faces = st.slider(
            "Faces per frame (largest first)",
            1,
            8,
            default.max_faces,
            key="live_max_faces",
            disabled=recording,
        )
        alpha = st.slider(
            "Smoothing",
            0.0,
            0.95,
            default.smoothing_alpha,
            step=0.05,
            key="live_smoothing",
            disabled=recording,
            help="Weight of the past in the on-screen label (0 = none). Recorded probabilities "
            "are always the raw per-frame ones.",
        )
        tta = st.checkbox(
            "Mirror test-time augmentation (slower)",
            value=default.tta,
            key="live_tta",
            disabled=recording,
        )
    return PipelineConfig(
        detect_width=int(detect_width),
        min_neighbors=int(min_neighbors),
        min_face_px=int(min_face_px),
        max_faces=int(max_faces),
        smoothing_alpha=float(alpha),
        tta=bool(tta),
    )


def start_recording(card: ModelCard, rule: NervousnessRule, config: PipelineConfig) -> None:
    """on_click of Record: runs before the script body, so no extra rerun is needed."""
    aggregator, _ = live_objects()
    st.session_state.pop(SAVED_KEY, None)
    if not st.session_state.get(CONSENT_KEY):
        st.session_state[MESSAGE_KEY] = ("error", "Recording needs the candidate's consent.")
        return
    candidate = st.session_state.get(CANDIDATE_KEY, "")
    notes = st.session_state.get(NOTES_KEY, "")
    # NOTE: a double click queues a second on_click; begin_session then does nothing ("busy").
    outcome = aggregator.begin_session(
        lambda: SessionRecorder.for_model(
            sessions_dir_default(),
            model=card,
            candidate=candidate,
            notes=notes,
            source="webcam",
            thresholds=rule.to_dict(),
            pipeline=config,  # the settings this recording keeps to its end
        )
    )
    tell(outcome)


def stop_recording() -> None:
    """on_click of Stop."""
    aggregator, _ = live_objects()
    st.session_state[CONSENT_KEY] = False  # consent covers one recording: the next asks again
    st.session_state.pop(MESSAGE_KEY, None)
    tell(aggregator.end_session())


def tell(outcome: RecordingOutcome) -> None:
    """Keep what a Record or Stop click (or a failed write) did for recording_controls."""
    if outcome.failure_id is not None:  # said once: note_failed_recording need not say it
        st.session_state[FAILURE_SHOWN_KEY] = outcome.failure_id
    if outcome.text:
        st.session_state[MESSAGE_KEY] = ("error" if outcome.is_error else "info", outcome.text)
    if outcome.saved is not None:
        st.session_state[SAVED_KEY] = outcome.saved


def note_failed_recording(aggregator: LiveAggregator) -> None:
    """A write failure stopped the recording on the video thread (no Stop click): consent
    covered that recording only, and the page says what was kept. Runs before the widgets."""
    status = aggregator.failed_recording()
    if status is None or st.session_state.get(FAILURE_SHOWN_KEY) == status.session_id:
        return
    st.session_state[CONSENT_KEY] = False
    # NOTE: the statistics column already shows the error; this says what was kept.
    tell(stop_outcome(status))


def recording_controls(
    card: ModelCard, rule: NervousnessRule, config: PipelineConfig, recording: bool
) -> None:
    """Candidate, notes, consent, what is stored, Record / Stop."""
    st.subheader("Recording")
    st.text_input("Candidate name", key=CANDIDATE_KEY, max_chars=200, disabled=recording)
    st.text_area("Notes", key=NOTES_KEY, height=68, max_chars=10_000, disabled=recording)
    consent = st.checkbox(ui_common.CONSENT_LABEL, key=CONSENT_KEY, disabled=recording)
    st.caption(ui_common.stored_statement(sessions_dir_default()))
    col_rec, col_stop = st.columns(2)
    col_rec.button(
        "Record",
        icon=":material/radio_button_checked:",
        key="live_record",
        type="primary",
        disabled=recording or not consent,
        on_click=start_recording,
        args=(card, rule, config),
        width="stretch",
    )
    col_stop.button(
        "Stop",
        icon=":material/stop_circle:",
        key="live_stop",
        disabled=not recording,
        on_click=stop_recording,
        width="stretch",
    )
    if not consent and not recording:
        st.caption(
            "Recording is possible only after the candidate has consented (asked again for "
            "each recording)."
        )
    message = st.session_state.get(MESSAGE_KEY)
    if message:
        kind, text = message
        (st.error if kind == "error" else st.info)(text)
    saved = st.session_state.get(SAVED_KEY)
    if saved and not recording:
        st.success(
            f"Session saved ({saved.frames} frames, {saved.faces} face rows): `{saved.path}`"
        )
        try:
            st.page_link(
                "pages/2_Analysis.py",
                label="Open it on the Analysis page",
                icon=":material/analytics:",
            )
        except Exception:  # noqa: BLE001  e.g. the page is run on its own
            st.caption("Open it on the Analysis page.")


VERDICT_SLOTS = 8  # render_verdict writes 3-4 elements; padded to a fixed count


class _Counting:
    """Wraps a container and counts the elements written through it."""

    def __init__(self, container: Any) -> None:
        self._container = container
        self.count = 0

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._container, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return method(*args, **kwargs)

        return call


def render_stats(snap: LiveSnapshot, rule: NervousnessRule, playing: bool) -> None:
    """Everything the page shows about the stream (called repeatedly while it plays).

    # NOTE: every call writes the same number of elements in the same order (st.empty() where
    # there is nothing to show). While the poll loop runs the script never finishes, so
    # Streamlit never removes elements that a shorter re-render left behind.
    """
    c1, c2, c3 = st.columns(3)
    c1.metric("Frames analysed", f"{snap.frames:,}")
    # NOTE: three metrics share a narrow column: short labels and values, or they are cut off.
    c2.metric("With a face", f"{snap.frames_with_face:,}", help="frames with a face found")
    c3.metric(
        "Speed (fps)",
        f"{snap.fps:.0f}" if playing else "-",
        help=f"{snap.fps:.1f} frames per second, {snap.process_ms:.0f} ms per frame"
        if playing
        else None,
    )
    if not playing:
        st.info("Press START on the video to analyse the webcam.")
    else:
        st.empty()
    rec = snap.recording
    if rec is not None and rec.active:
        st.markdown(f":red[● Recording] `{rec.session_id}` - {rec.frames} frames")
    elif rec is not None and rec.error:
        st.error(f"Recording stopped: {rec.error}")
    else:
        st.empty()
    if snap.error:
        st.warning(snap.error)
    else:
        st.empty()
    if playing and snap.current:
        faces = ", ".join(
            f"face {f.face_id}: **{f.label}** ({f.confidence:.0%})" for f in snap.current
        )
        st.markdown(f"**Now:** {faces}")
    elif playing and snap.frames:
        st.markdown("**Now:** no face in view")
    else:
        st.empty()
    if snap.faces:
        st.altair_chart(live_distribution_chart(snap), width="stretch")
    else:
        st.caption("The emotion distribution appears once a face has been analysed.")
    result = evaluate_rule_on_counts(
        rule,
        snap.label_time,  # weighted by time, as on the Analysis page
        snap.mean_probs,
        snap.frames_with_face,
        snap.duration_s,
        face_time=snap.face_time_s,  # the minimum duration counts the time a face was in view
    )
    with st.container():
        counting = _Counting(st)
        ui_common.render_verdict(result, counting)
        for _ in range(VERDICT_SLOTS - counting.count):
            st.empty()


def main() -> None:
    st.set_page_config(page_title="Live - Emotion analytics", page_icon="🎥", layout="wide")
    ui_common.page_nav()
    st.title("🎥 Live")
    aggregator, processor = live_objects()

    mdir = ui_common.models_dir()
    card, version = ui_common.default_model_or_stop("live analysis cannot start")

    ui_common.model_sidebar(card)
    note_failed_recording(aggregator)
    recording = aggregator.recording
    config = pipeline_sidebar(recording)
    rule = ui_common.rule_sidebar()

    col_video, col_stats = st.columns([3, 2], gap="large")
    with col_video:
        servers, ice_error = ice_servers()
        if ice_error:
            st.warning(ice_error)
        # NOTE: rendered before anything slow (model loading) so that an interrupted run still
        # renders the component; a run that skips it makes streamlit-webrtc reset the stream.
        ctx = webrtc_streamer(
            key="live",
            mode=WebRtcMode.SENDRECV,
            video_frame_callback=make_callback(processor),
            media_stream_constraints={"video": True, "audio": False},
            rtc_configuration={"iceServers": servers},
        )
        st.caption(
            "Press START and allow camera access. No picture? Check the browser's camera "
            "permission; away from localhost the page must be served over HTTPS."
        )
        recording_controls(card, rule, config, recording)

    key = (str(mdir), card.name, version, config)
    if processor.keeps_pipeline(recording):
        if processor.pipeline_key != key:
            st.sidebar.info(
                "The default model changed; this recording goes on with the model it started "
                "with, the next one uses the new default."
            )
    else:
        classifier = ui_common.classifier_or_error(card, version)
        if classifier is None:
            processor.set_pipeline(None)
            st.stop()
        try:
            processor.ensure_pipeline(key, lambda: EmotionPipeline.from_config(classifier, config))
        except DetectorError as exc:
            st.error(f"The face detector cannot start: {exc}")
            st.stop()

    with col_stats:
        st.subheader("Statistics")
        st.button("Reset statistics", key="live_reset", on_click=aggregator.reset)
        placeholder = st.empty()
    playing = bool(ctx.state.playing)
    aggregator.flush_recording(force=not playing)  # stream stopped: nothing more will come
    with placeholder.container():
        render_stats(aggregator.snapshot(), rule, playing)
    while ctx.state.playing:
        time.sleep(POLL_S)
        aggregator.flush_recording()
        snap = aggregator.snapshot()
        if recording and snap.recording is not None and snap.recording.error:
            if not snap.recording.active:
                st.rerun()  # a write failure stopped the recording: redraw the controls
        with placeholder.container():
            render_stats(snap, rule, True)


main()
