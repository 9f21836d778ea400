"""pages/1_Live.py under streamlit's AppTest, with webrtc_streamer replaced by a fake context.

The classifier is faked too (no TensorFlow here): the real model path is covered by the
browser test.
"""

from __future__ import annotations

import re

# NOTE: before anything that could load TensorFlow (see tests/conftest.py).
import streamlit_webrtc  # isort: skip

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from emotion_core import inference
from emotion_core.classes import CLASSES
from emotion_core.live import LiveAggregator, LiveProcessor
from emotion_core.registry import ModelCard
from emotion_core.results import FaceResult, FrameResult
from emotion_core.sessions import SessionError, SessionRecorder, load_session

PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "1_Live.py")
CONSENT = "The candidate has been told and consented"


@dataclass
class FakeState:
    playing: bool = False
    signalling: bool = False


@dataclass
class FakeContext:
    state: FakeState = field(default_factory=FakeState)


class PlayingFor:
    """A state whose `playing` is True for the first n reads (to exercise the poll loop)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.signalling = False

    @property
    def playing(self) -> bool:
        self.n -= 1
        return self.n >= 0


class FakeClassifier:
    classes = CLASSES
    runtime_problem = ""

    def predict(self, faces: np.ndarray) -> np.ndarray:
        return np.tile(np.eye(len(CLASSES))[3] * 0.9 + 0.1 / len(CLASSES), (len(faces), 1))


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A registered (fake) model, empty sessions and settings, a fake webrtc component."""
    models = tmp_path / "models"
    models.mkdir()
    card = ModelCard(name="tiny", arch="cnn-test", val_accuracy=0.613)
    (models / "tiny.json").write_text(json.dumps(card.to_dict()))
    (models / "tiny.keras").write_bytes(b"not used: load_classifier is faked")
    (models / "registry.json").write_text(json.dumps({"default": "tiny"}))
    sessions = tmp_path / "sessions"
    monkeypatch.setenv("EMOTION_MODELS_DIR", str(models))
    monkeypatch.setenv("EMOTION_SESSIONS_DIR", str(sessions))
    monkeypatch.setenv("EMOTION_SETTINGS_FILE", str(tmp_path / "settings.json"))
    monkeypatch.delenv("EMOTION_ICE_SERVERS", raising=False)
    monkeypatch.setattr(inference, "load_classifier", lambda name, models_dir: FakeClassifier())
    calls: list[dict[str, Any]] = []
    holder: dict[str, Any] = {"ctx": FakeContext()}

    def fake_webrtc_streamer(**kwargs: Any) -> Any:
        calls.append(kwargs)
        return holder["ctx"]

    monkeypatch.setattr(streamlit_webrtc, "webrtc_streamer", fake_webrtc_streamer)
    return {"models": models, "sessions": sessions, "calls": calls, "holder": holder}


def run_page(at: AppTest | None = None) -> AppTest:
    if at is None:  # NOTE: not `at or ...`: an AppTest that has not run yet is falsy
        at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def button(at: AppTest, label: str) -> Any:
    return next(b for b in at.button if label in b.label)


def text(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    return "\n".join(str(p) for p in parts)


def test_page_renders_with_component_settings_and_model(env: dict[str, Any]) -> None:
    at = run_page()
    assert at.title[0].value.endswith("Live")
    (kwargs,) = env["calls"][-1:]
    assert kwargs["key"] == "live"
    assert kwargs["mode"] == streamlit_webrtc.WebRtcMode.SENDRECV
    assert kwargs["media_stream_constraints"] == {"video": True, "audio": False}
    assert kwargs["rtc_configuration"] == {"iceServers": []}
    assert callable(kwargs["video_frame_callback"])
    sidebar = "\n".join(str(m.value) for m in at.sidebar.markdown)
    assert "tiny" in sidebar and "61.30%" in sidebar
    assert "Never images or video" in text(at)
    assert any("Press START" in i.value for i in at.info)
    assert not at.error and not at.sidebar.warning


def test_a_model_without_its_fast_runtime_is_said_so(
    env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    slow = FakeClassifier()
    slow.runtime_problem = "models/tiny.tflite: cannot read TFLite model"
    monkeypatch.setattr(inference, "load_classifier", lambda name, models_dir: slow)
    at = run_page()
    (warning,) = at.sidebar.warning
    assert "slower Keras model runs instead: models/tiny.tflite: cannot read" in warning.value


def test_record_requires_consent_and_writes_a_session(env: dict[str, Any]) -> None:
    at = run_page()
    assert button(at, "Record").disabled
    assert button(at, "Stop").disabled
    at.text_input(key="live_candidate").input("Zoë Müller")
    at.text_area(key="live_notes").input("first round")
    run_page(at)
    assert button(at, "Record").disabled  # still no consent
    at.checkbox(key="live_consent").check()
    run_page(at)
    assert not button(at, "Record").disabled
    button(at, "Record").click()
    run_page(at)
    assert button(at, "Record").disabled and not button(at, "Stop").disabled
    aggregator: LiveAggregator = at.session_state["live_aggregator"]
    assert aggregator.recording
    (folder,) = env["sessions"].iterdir()
    assert "zoe-muller" in folder.name
    for i in range(5):  # what the video callback would feed
        p = np.eye(len(CLASSES))[3] * 0.9 + 0.1 / len(CLASSES)
        aggregator.update(FrameResult(i, i / 10, (FaceResult(0, (1, 2, 30, 30), p, p),)), 3.0)
    button(at, "Stop").click()
    run_page(at)
    assert not aggregator.recording
    assert any(str(folder) in s.value for s in at.success)
    session = load_session(folder)
    assert session.info.complete and session.info.candidate == "Zoë Müller"
    assert session.meta["notes"] == "first round"
    assert session.meta["model_name"] == "tiny" and session.meta["model_hash"]
    assert session.meta["thresholds"]  # the nervousness rule in force
    assert session.meta["pipeline"]["min_neighbors"] == 5  # the detection settings in force
    assert session.meta["pipeline"]["tta"] is False
    assert len(session.frames) == 5 and (session.frames["face_id"] == 0).all()


def click_record() -> tuple[AppTest, LiveAggregator]:
    """Open the page, give consent and click Record: the page and its aggregator."""
    at = run_page()
    at.checkbox(key="live_consent").check()
    run_page(at)
    button(at, "Record").click()
    run_page(at)
    return at, at.session_state["live_aggregator"]


def start_a_recording(env: dict[str, Any]) -> tuple[AppTest, LiveAggregator]:
    at, aggregator = click_record()
    assert aggregator.recording
    return at, aggregator


def happy(i: int) -> FrameResult:
    p = np.eye(len(CLASSES))[3] * 0.9 + 0.1 / len(CLASSES)
    return FrameResult(i, i / 10, (FaceResult(0, (1, 2, 30, 30), p, p),))


def fill_the_disk(aggregator: LiveAggregator) -> SessionRecorder:
    """The active recording writes one frame (its file flushes every frame); its next write
    finds the disk full."""
    recorder = aggregator._recorder
    assert recorder is not None
    recorder.flush_interval_s = 0.0
    aggregator.update(happy(0))  # written

    def disk_full(data: str) -> int:
        raise OSError(28, "No space left on device")

    recorder._file._fh.write = disk_full  # type: ignore[method-assign,union-attr]
    return recorder


def test_stop_after_a_failed_write_reports_the_failure_not_a_save(env: dict[str, Any]) -> None:
    at, aggregator = start_a_recording(env)
    recorder = fill_the_disk(aggregator)
    aggregator.update(happy(1))  # fails on the video thread: the recorder is detached
    button(at, "Stop").click()  # the button was enabled when the page last ran
    run_page(at)
    assert not at.success  # not "Session saved"
    (error,) = at.error
    assert "Recording stopped" in error.value and "No space left on device" in error.value
    assert any("1 frames written before the failure are kept" in i.value for i in at.info)
    assert len(load_session(recorder.path).frames) == 1


def test_a_failed_write_without_a_stop_click_unticks_consent_and_says_what_was_kept(
    env: dict[str, Any],
) -> None:
    """The recording stops on the video thread; the next rerun (here: Reset statistics) must
    not offer Record with the previous candidate's consent, and says what was kept, once."""
    at, aggregator = start_a_recording(env)
    fill_the_disk(aggregator)
    aggregator.update(happy(1))
    button(at, "Reset statistics").click()
    run_page(at)
    assert not at.checkbox(key="live_consent").value and button(at, "Record").disabled
    assert any("1 frames written before the failure are kept" in i.value for i in at.info)
    at.checkbox(key="live_consent").check()  # the next candidate consents
    run_page(at)
    assert at.checkbox(key="live_consent").value and not button(at, "Record").disabled


def test_stop_between_a_failed_write_and_its_detach_keeps_its_error_message(
    env: dict[str, Any],
) -> None:
    at, aggregator = start_a_recording(env)
    recorder = fill_the_disk(aggregator)
    with pytest.raises(SessionError):
        recorder.add_frame(happy(1))  # the video thread's write fails ...
    with pytest.raises(SessionError):
        recorder.close(complete=False)  # ... and its handler closed it, not yet detached
    button(at, "Stop").click()
    run_page(at)
    assert any("not saved cleanly" in e.value for e in at.error)
    assert not any("stopped early" in i.value for i in at.info)


def test_stop_before_any_frame_saves_no_empty_session(env: dict[str, Any]) -> None:
    at, _ = start_a_recording(env)
    button(at, "Stop").click()
    run_page(at)
    assert not at.success and not list(env["sessions"].iterdir())
    assert any("No frame arrived while recording" in i.value for i in at.info)


def test_a_second_record_click_starts_no_second_session(env: dict[str, Any]) -> None:
    at, aggregator = start_a_recording(env)
    at.session_state["live_message"] = None
    record = at.button(key="live_record")
    record.proto.disabled = False  # a double click: the second landed before the rerun
    record.click()
    run_page(at)
    assert len(list(env["sessions"].iterdir())) == 1 and aggregator.recording
    assert not at.error


def test_record_says_which_session_is_recording(env: dict[str, Any]) -> None:
    at, aggregator = start_a_recording(env)
    status = aggregator.snapshot().recording
    assert status is not None
    assert any(f"Recording session {status.session_id}." in i.value for i in at.info)
    assert not at.error


def test_a_recording_that_cannot_start_says_why_and_leaves_nothing(
    env: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the sessions folder should be")
    monkeypatch.setenv("EMOTION_SESSIONS_DIR", str(blocked))
    at, aggregator = click_record()
    assert not aggregator.recording and button(at, "Stop").disabled
    assert any("Could not start recording" in e.value for e in at.error)
    assert blocked.is_file()


def test_the_pipeline_is_built_once_per_setting(env: dict[str, Any]) -> None:
    at = run_page()
    processor: LiveProcessor = at.session_state["live_processor"]
    pipeline = processor._pipeline
    assert pipeline is not None
    run_page(at)
    assert processor._pipeline is pipeline  # a rerun reuses it (and the tracker's face ids)
    at.sidebar.slider(key="live_min_neighbors").set_value(7)
    run_page(at)
    assert processor._pipeline is not pipeline and processor._pipeline is not None
    assert processor.pipeline_key[-1].min_neighbors == 7  # type: ignore[index]


def test_a_recording_keeps_its_pipeline_and_settings(
    env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    at, aggregator = start_a_recording(env)
    processor: LiveProcessor = at.session_state["live_processor"]
    pipeline = processor._pipeline
    assert at.sidebar.slider(key="live_min_neighbors").disabled
    assert at.sidebar.checkbox(key="live_tta").disabled
    # the default model changes on the Training page meanwhile
    card = ModelCard(name="newer", arch="cnn-test", val_accuracy=0.7)
    (env["models"] / "newer.json").write_text(json.dumps(card.to_dict()))
    (env["models"] / "newer.keras").write_bytes(b"not used: load_classifier is faked")
    (env["models"] / "registry.json").write_text(json.dumps({"default": "newer"}))
    run_page(at)
    assert processor._pipeline is pipeline  # same model, same tracker (face ids)
    assert any("goes on with the model it started with" in i.value for i in at.sidebar.info)
    button(at, "Stop").click()
    run_page(at)
    assert processor._pipeline is not pipeline  # the next recording uses the new default
    assert not at.sidebar.slider(key="live_min_neighbors").disabled


def test_consent_unticked_after_start_is_refused(env: dict[str, Any]) -> None:
    at = run_page()
    at.checkbox(key="live_consent").check()
    run_page(at)
    at.session_state["live_consent"] = False  # e.g. a stale click after unticking
    button(at, "Record").click()
    run_page(at)
    assert not list(env["sessions"].glob("*"))
    assert any("consent" in e.value for e in at.error)


def test_consent_is_asked_again_for_the_next_recording(env: dict[str, Any]) -> None:
    at, aggregator = start_a_recording(env)
    aggregator.update(happy(0))
    button(at, "Stop").click()
    run_page(at)
    assert not at.checkbox(key="live_consent").value
    assert button(at, "Record").disabled
    at.text_input(key="live_candidate").input("Next Candidate")
    at.checkbox(key="live_consent").check()
    run_page(at)
    assert not button(at, "Record").disabled


def test_missing_model_is_a_clear_message(
    env: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "no_models"
    empty.mkdir()
    monkeypatch.setenv("EMOTION_MODELS_DIR", str(empty))
    at = run_page()
    assert len(at.error) == 1
    assert "No emotion model is available" in at.error[0].value
    assert str(empty) in at.error[0].value
    assert not env["calls"]  # no stream without a model


def test_a_missing_face_detector_is_a_clear_message(
    env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import cv2

    monkeypatch.setattr(cv2.data, "haarcascades", "/nonexistent/")
    at = run_page()
    assert any("The face detector cannot start" in e.value for e in at.error)
    assert any("Haar cascade file not found" in e.value for e in at.error)


def test_the_sidebar_gives_the_speed_of_the_runtime_in_use(
    env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    card = ModelCard(
        name="tiny",
        arch="cnn-test",
        runtime="tflite-dynamic",
        cpu_ms_per_face=4.0,
        cpu_ms_per_face_keras=11.0,
    )
    (env["models"] / "tiny.json").write_text(json.dumps(card.to_dict()))
    captions = [c.value for c in run_page().sidebar.caption]
    assert "4.0 ms per face on CPU (tflite-dynamic runtime)." in captions
    monkeypatch.setenv("EMOTION_RUNTIME", "keras")  # the app then runs the Keras network
    captions = [c.value for c in run_page().sidebar.caption]
    assert "11.0 ms per face on CPU (keras runtime)." in captions
    assert not any("tflite" in c for c in captions)


def test_unloadable_model_is_a_clear_message(
    env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(name: str, models_dir: Path) -> Any:
        raise inference.ModelError(f"{models_dir}/broken.keras: not a loadable Keras model")

    monkeypatch.setattr(inference, "load_classifier", broken)
    (env["models"] / "registry.json").write_text(json.dumps({"default": "broken"}))
    card = ModelCard(name="broken", arch="x")
    (env["models"] / "broken.json").write_text(json.dumps(card.to_dict()))
    (env["models"] / "broken.keras").write_bytes(b"not a Keras file")
    at = run_page()
    assert any("could not be loaded" in e.value for e in at.error)


def test_statistics_chart_and_poll_loop(env: dict[str, Any]) -> None:
    aggregator = LiveAggregator()
    for i in range(20):
        k = 3 if i % 4 else 0
        p = np.eye(len(CLASSES))[k] * 0.9 + 0.1 / len(CLASSES)
        aggregator.update(FrameResult(i, i / 10, (FaceResult(0, (0, 0, 9, 9), p, p),)), 2.0)
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state["live_aggregator"] = aggregator
    at.session_state["live_processor"] = LiveProcessor(aggregator)
    env["holder"]["ctx"] = FakeContext(state=PlayingFor(3))  # type: ignore[arg-type]
    run_page(at)
    assert at.get("vega_lite_chart") or at.get("arrow_vega_lite_chart")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Frames analysed"] == "20" and metrics["With a face"] == "20"
    # a whole number without its unit (in the label): the narrow column cuts off "28.6 fps"
    assert re.fullmatch(r"\d+", metrics["Speed (fps)"])
    assert "happy" in text(at).lower() and "Nervousness indicator" in text(at)
    assert at.session_state["live_processor"].has_pipeline


def test_the_live_verdict_counts_only_the_time_a_face_was_in_view(env: dict[str, Any]) -> None:
    aggregator = LiveAggregator()
    fear = np.eye(len(CLASSES))[CLASSES.index("fear")] * 0.9 + 0.1 / len(CLASSES)
    for i in range(100):  # 20 s at 5 fps, a face in only 2 frames
        faces = (FaceResult(0, (0, 0, 9, 9), fear, fear),) if i in (10, 11) else ()
        aggregator.update(FrameResult(i, i / 5, faces), 2.0)
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state["live_aggregator"] = aggregator
    at.session_state["live_processor"] = LiveProcessor(aggregator)
    run_page(at)
    verdict = text(at)
    assert "not enough data" in verdict and "0.4 s" in verdict  # not "nervous" on 2 frames


def test_bad_ice_setting_is_a_warning(env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMOTION_ICE_SERVERS", "not json")
    at = run_page()
    assert any("ICE server setting ignored" in w.value for w in at.warning)
    monkeypatch.setenv("EMOTION_ICE_SERVERS", '[{"urls": ["stun:stun.example.org:3478"]}]')
    run_page(at)
    assert env["calls"][-1]["rtc_configuration"] == {
        "iceServers": [{"urls": ["stun:stun.example.org:3478"]}]
    }


def test_refuses_instead_of_crashing_after_tensorflow(
    env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(sys.modules, "pylibsrtp", raising=False)
    monkeypatch.setitem(sys.modules, "tensorflow", sys.modules.get("tensorflow", json))
    at = run_page()
    assert any("Restart the app" in e.value for e in at.error)
    assert not env["calls"]
