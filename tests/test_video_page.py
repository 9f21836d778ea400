"""pages/4_Video.py under streamlit's AppTest: upload gating, the size limit, a real background
analysis (tiny untrained Keras model in a temporary registry) into a temporary sessions folder,
cancelling, bad files, and the hand-over to the Analysis page.

The face video is made from the first frame of ../shared/data/videos/1543684773.avi when that
clip exists; without it the video has no face and only the face count is not checked.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

import ui_common
from emotion_core import analyze_video as av_mod
from emotion_core import video_job
from emotion_core.registry import ModelCard, register_model
from emotion_core.sessions import list_sessions, load_session

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
PAGE = "pages/4_Video.py"
CLIP = ROOT.parent / "shared" / "data" / "videos" / "1543684773.avi"
CONSENT = "The candidate has been told and consented"
MB = 1024 * 1024


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry holding two tiny untrained models, the first one the default."""
    import keras

    from emotion_core.zoo import make_tiny_model

    root = tmp_path_factory.mktemp("video-models")
    keras.utils.set_random_seed(0)
    model = make_tiny_model()
    src = root / "tiny-video-src.keras"
    model.save(src)
    card = ModelCard(name="tiny-video", arch="tiny-untrained", params=model.count_params())
    register_model(src, card, models_dir=root / "models", make_default=True)
    other = ModelCard(name="tiny-other", arch="tiny-untrained", val_accuracy=0.5, cpu_ms_per_face=2)
    register_model(src, other, models_dir=root / "models")
    return root / "models"


@pytest.fixture
def env(tmp_path: Path, models: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The tiny model, an empty sessions folder, a small bootstrap; returns the sessions dir."""
    sessions = tmp_path / "sessions"
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"n_boot": 100, "block_s": 1.0, "confidence": 0.95}))
    monkeypatch.setenv("EMOTION_MODELS_DIR", str(models))
    monkeypatch.setenv("EMOTION_SESSIONS_DIR", str(sessions))
    monkeypatch.setenv("EMOTION_SETTINGS_FILE", str(settings))
    monkeypatch.delenv("EMOTION_MAX_VIDEO_MB", raising=False)
    return sessions


@pytest.fixture(autouse=True)
def _no_analyses_left_over() -> Iterator[None]:
    """Analyses are server-wide: one that another test left unshown would show on a fresh page."""

    def clear() -> None:
        for job in video_job.video_jobs():
            job.cancel.set()
            job.wait(60)
            video_job.forget_video_job(job)

    clear()
    yield
    clear()


@pytest.fixture
def held_decoding(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Decoding stops after the first batch of frames until the returned event is set."""
    gate = threading.Event()
    real_iter = av_mod.iter_frames

    def gated(path: Path, every: int = 1) -> Iterator[Any]:
        for i, frame in enumerate(real_iter(path, every=every)):
            if i == av_mod.BATCH_FRAMES:
                gate.wait(30)
            yield frame

    monkeypatch.setattr(av_mod, "iter_frames", gated)
    yield gate
    gate.set()


def face_frame(size: tuple[int, int]) -> np.ndarray | None:
    """A real frontal face (the shared clip's first frame, resized), or None without the data."""
    if not CLIP.exists():
        return None
    cap = cv2.VideoCapture(str(CLIP))
    ok, frame = cap.read()
    cap.release()
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA) if ok else None


def make_video(path: Path, n: int = 30, face: bool = True, fps: float = 10.0) -> Path:
    """An MJPG .avi of n frames (360x240): the face frame, or a bright square on dark grey."""
    size = (360, 240)
    base = face_frame(size) if face else None
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, size)
    assert writer.isOpened()
    for i in range(n):
        if base is not None:
            frame = np.roll(base, i % 3, axis=1)  # tiny motion, the face stays whole
        else:
            frame = np.full((size[1], size[0], 3), 30, np.uint8)
            frame[20:60, 5 * i % 300 : 5 * i % 300 + 40] = 230
        writer.write(frame)
    writer.release()
    return path


# --- helpers ---------------------------------------------------------------------------------


def open_page() -> AppTest:
    """The Video page inside the multipage app (so switch_page can find the Analysis page)."""
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page(PAGE)
    return run(at)


def run(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def start_button(at: AppTest) -> Any:
    return at.button(key="video_start")


def fill_and_start(at: AppTest, name: str, data: bytes, candidate: str = "") -> AppTest:
    at.file_uploader(key="video_upload").set_value((name, data, "video/x-msvideo"))
    if candidate:
        at.text_input(key="video_candidate").input(candidate)
    at.checkbox(key="video_consent").check()
    run(at)
    assert not start_button(at).disabled
    start_button(at).click()
    return run(at)


def cancel_button(at: AppTest, job: video_job.VideoJob) -> Any:
    return at.button(key=f"video_cancel_{job.job_id}")


def wait_first_batch(job: video_job.VideoJob) -> None:
    deadline = time.monotonic() + 30
    while job.view().done < av_mod.BATCH_FRAMES and time.monotonic() < deadline:
        time.sleep(0.05)


def wait_finished(at: AppTest, timeout_s: float = 40.0) -> AppTest:
    """Wait for the worker thread (what the page's polling does), then render the outcome."""
    job = at.session_state["video_job"]
    job.thread.join(timeout_s)
    assert not job.thread.is_alive(), "the analysis did not finish in time"
    return run(at)


def all_text(at: AppTest) -> str:
    parts = [*at.markdown, *at.caption, *at.error, *at.warning, *at.success, *at.info]
    return "\n".join(str(p.value) for p in parts)


# --- tests -----------------------------------------------------------------------------------


def test_page_states_the_limit_and_gates_start(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMOTION_MAX_VIDEO_MB", "50")
    at = open_page()
    assert "Video analysis" in at.title[0].value
    uploader = at.file_uploader(key="video_upload")
    assert "50 MB" in uploader.label and "at most 50 MB" in all_text(at)
    assert uploader.proto.max_upload_size_mb == 50
    assert {"mp4", "avi", "mov", "webm", "mkv"} <= {t.lstrip(".") for t in uploader.allowed_type}
    assert "Never images or video" in all_text(at)
    assert "tiny-video" in "\n".join(str(m.value) for m in at.sidebar.markdown)
    assert start_button(at).disabled and not at.error
    at.checkbox(key="video_consent").check()
    run(at)
    assert start_button(at).disabled  # consent but no file
    at.checkbox(key="video_consent").uncheck()
    at.file_uploader(key="video_upload").set_value(("a.avi", b"x" * 100, "video/x-msvideo"))
    run(at)
    assert start_button(at).disabled  # file but no consent
    at.checkbox(key="video_consent").check()
    run(at)
    assert not start_button(at).disabled


def test_default_limit_and_oversized_upload_rejected(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = open_page()
    assert "at most 200 MB" in all_text(at)
    monkeypatch.setenv("EMOTION_MAX_VIDEO_MB", "1")
    run(at)
    at.file_uploader(key="video_upload").set_value(("big.mp4", b"\0" * (MB + 10), "video/mp4"))
    at.checkbox(key="video_consent").check()
    run(at)
    assert any("over the 1 MB upload limit" in e.value for e in at.error)
    assert start_button(at).disabled
    assert "video_job" not in at.session_state and not env.exists()


def test_analysis_runs_in_background_and_opens_in_analysis(env: Path, tmp_path: Path) -> None:
    video = make_video(tmp_path / "source.avi", n=30)
    at = open_page()
    at.text_area(key="video_notes").input("second round")
    run(at)
    fill_and_start(at, "interview.avi", video.read_bytes(), candidate="Zoë Müller")
    at = wait_finished(at)
    assert not at.error, [e.value for e in at.error]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Frames analysed"] == "30" and metrics["Session"] == "complete"
    assert float(metrics["Speed vs real time"].rstrip("x")) > 0

    (info,) = list_sessions(env)
    session = load_session(info.path)
    assert session.info.complete and session.info.candidate == "Zoë Müller"
    assert session.meta["source"] == "interview.avi" and session.meta["notes"] == "second round"
    assert session.meta["model_name"] == "tiny-video" and session.meta["thresholds"]
    assert session.frames["frame"].nunique() == 30
    if CLIP.exists():
        assert (session.frames["face_id"] >= 0).sum() >= 25
        assert any("Analysis finished" in s.value for s in at.success)
    job = at.session_state["video_job"]
    assert not job.video_path.parent.exists()  # the uploaded copy is gone
    # the next video is another candidate's: consent, name and notes are asked again
    assert not at.checkbox(key="video_consent").value
    assert at.text_input(key="video_candidate").value == ""
    assert at.text_area(key="video_notes").value == ""
    assert at.button(key="video_start").disabled

    at.button(key="video_open").click()
    run(at)
    assert at.title[0].value == "Session analysis"
    assert at.multiselect(key="an_selected").value == [info.session_id]
    assert ui_common.PRESELECT_KEY not in at.session_state


def test_another_registered_model_can_analyse_the_video(env: Path, tmp_path: Path) -> None:
    at = open_page()
    choice = at.sidebar.selectbox(key="video_model")
    assert choice.value == "tiny-video" and choice.options == [
        "tiny-other (50.00%, 2.0 ms/face)", "tiny-video (accuracy ?) - default"
    ]  # fmt: skip
    choice.set_value("tiny-other")
    run(at)
    assert "**tiny-other** (tiny-untrained)" in "\n".join(m.value for m in at.sidebar.markdown)
    fill_and_start(at, "clip.avi", make_video(tmp_path / "clip.avi", n=5).read_bytes())
    wait_finished(at)
    (info,) = list_sessions(env)
    assert load_session(info.path).meta["model_name"] == "tiny-other"
    assert at.sidebar.selectbox(key="video_model").value == "tiny-other"


def test_the_model_choice_gives_the_speed_of_the_runtime_the_app_runs(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under EMOTION_RUNTIME=keras the choice's label and the sidebar both give the card's Keras
    figure (3.18 -> "3.2"), not its TFLite one (0.62)."""
    from emotion_core.zoo import make_tiny_model

    models = tmp_path / "models"
    src = tmp_path / "src.keras"
    make_tiny_model().save(src)
    card = ModelCard(name="tiny-fast", arch="tiny", runtime="tflite", cpu_ms_per_face=0.62,
                     cpu_ms_per_face_keras=3.18)  # fmt: skip
    register_model(src, card, models, make_default=True)
    monkeypatch.setenv("EMOTION_MODELS_DIR", str(models))
    monkeypatch.setenv("EMOTION_RUNTIME", "keras")
    at = open_page()
    choice = at.sidebar.selectbox(key="video_model")
    assert choice.options == ["tiny-fast (accuracy ?, 3.2 ms/face) - default"]
    captions = "\n".join(c.value for c in at.sidebar.caption)
    assert "3.2 ms per face on CPU (keras runtime)" in captions and "0.6 ms" not in captions


def test_the_consent_wording_and_hand_over_key_are_defined_once(env: Path) -> None:
    """The consent label, what is stored and the Analysis hand-over key come from ui_common;
    no page keeps its own copy to drift apart."""
    import ast

    for page in sorted((ROOT / "pages").glob("*.py")):
        tree = ast.parse(page.read_text())
        assigned = {t.id for node in tree.body if isinstance(node, ast.Assign)
                    for t in node.targets if isinstance(t, ast.Name)}  # fmt: skip
        assert not assigned & {"CONSENT_LABEL", "STORED_STATEMENT", "PRESELECT_KEY"}, page.name
    at = open_page()
    assert at.checkbox(key="video_consent").label == ui_common.CONSENT_LABEL == CONSENT
    statement = ui_common.stored_statement(env, video=True)
    assert statement in [c.value for c in at.caption]
    assert "the file name" in statement and "the file name" not in ui_common.stored_statement(env)


def test_a_broken_model_or_runtime_is_said_so_before_starting(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from emotion_core.zoo import make_tiny_model

    models = tmp_path / "models"
    src = tmp_path / "src.keras"
    make_tiny_model().save(src)
    ok = ModelCard(name="tiny-ok", arch="tiny", runtime="tflite")
    register_model(src, ok, models, make_default=True, tflite=b"not a TFLite model")
    broken = register_model(src, ModelCard(name="tiny-broken", arch="tiny"), models)
    broken.write_bytes(b"damaged on disk")
    monkeypatch.setenv("EMOTION_MODELS_DIR", str(models))
    at = open_page()
    assert not at.error
    (warning,) = at.sidebar.warning
    assert "slower Keras model runs instead" in warning.value and "tiny-ok.tflite" in warning.value

    at.sidebar.selectbox(key="video_model").set_value("tiny-broken")
    run(at)
    (error,) = at.error
    assert "The model tiny-broken could not be loaded" in error.value
    assert "Choose another model" in error.value
    at.file_uploader(key="video_upload").set_value(("a.avi", b"x" * 100, "video/x-msvideo"))
    at.checkbox(key="video_consent").check()
    run(at)
    assert start_button(at).disabled and "video_job" not in at.session_state
    at.sidebar.selectbox(key="video_model").set_value("tiny-ok")
    run(at)
    assert not at.error and not start_button(at).disabled


def start_held_analysis(tmp_path: Path) -> tuple[AppTest, video_job.VideoJob]:
    """A page that started a 40-frame analysis whose decoding is held after the first batch
    (call inside try/finally: held_decoding.set())."""
    video = make_video(tmp_path / "long.avi", n=40, face=False)
    at = open_page()
    fill_and_start(at, "long.avi", video.read_bytes())
    job = at.session_state["video_job"]
    wait_first_batch(job)
    return at, job


def test_cancel_keeps_a_partial_session_marked_incomplete(
    env: Path, tmp_path: Path, held_decoding: threading.Event
) -> None:
    try:
        at, job = start_held_analysis(tmp_path)
        run(at)
        assert at.progress and "of 40" in at.progress[0].proto.text
        assert at.button(key="video_start").disabled  # no second job while one runs
        cancel_button(at, job).click()
        run(at)
        assert job.cancel.is_set() and any("Cancelling" in i.value for i in at.info)
    finally:
        held_decoding.set()
    at = wait_finished(at)
    assert any("incomplete" in w.value and "cancelled" in w.value for w in at.warning)
    assert {m.label: m.value for m in at.metric}["Session"] == "incomplete"
    (info,) = list_sessions(env)
    assert info.complete is False
    assert load_session(info.path).frames["frame"].nunique() == av_mod.BATCH_FRAMES
    assert start_button(at).disabled  # the next video needs consent again...
    at.checkbox(key="video_consent").check()
    assert not start_button(run(at)).disabled  # ...and then the page is usable again


def test_bad_files_give_clear_messages_and_the_page_stays_usable(env: Path, tmp_path: Path) -> None:
    at = open_page()
    fill_and_start(at, "notes.mp4", b"this is a text file, not a video\n" * 50)
    at = wait_finished(at)
    (error,) = at.error
    assert "notes.mp4" in error.value and "cannot be opened as a video" in error.value
    assert str(tmp_path) not in error.value and "emotion-video-" not in error.value
    assert not env.exists() or not list_sessions(env)

    # A truncated file: what decoded is kept, marked incomplete. No face: a warning.
    full = make_video(tmp_path / "full.avi", n=40, face=False)
    cut = full.read_bytes()[: full.stat().st_size // 2]
    at.file_uploader(key="video_upload").set_value(("cut.avi", cut, "video/x-msvideo"))
    at.checkbox(key="video_consent").check()  # asked again for each video
    run(at)
    start_button(at).click()
    at = wait_finished(run(at))
    (warning,) = at.warning
    assert "incomplete" in warning.value and "truncated" in warning.value
    assert "cut.avi" in warning.value and "emotion-video-" not in warning.value
    assert "no face was found" in warning.value
    (info,) = list_sessions(env)
    assert info.complete is False and info.source == "cut.avi" and info.candidate == "cut"


def test_a_running_analysis_is_shown_and_cancellable_in_a_fresh_session(
    env: Path, tmp_path: Path, held_decoding: threading.Event
) -> None:
    try:
        first, job = start_held_analysis(tmp_path)
        second = open_page()  # the browser reloaded, or another tab: a new session
        assert second.session_state["video_job"] is job
        assert second.progress and "long.avi: frame" in second.progress[0].proto.text
        (warning,) = second.warning
        assert "running in this server" in warning.value and "long.avi" in warning.value
        assert start_button(second).disabled  # no second analysis beside it unasked
        cancel_button(second, job).click()
        run(second)
        assert job.cancel.is_set() and any("Cancelling" in i.value for i in second.info)
    finally:
        held_decoding.set()
    wait_finished(second)
    assert any("incomplete" in w.value and "cancelled" in w.value for w in second.warning)
    assert video_job.video_jobs() == []  # its outcome has been shown: no longer listed
    run(first)  # the session that started it shows the outcome too
    assert {m.label: m.value for m in first.metric}["Session"] == "incomplete"
    third = open_page()
    assert not third.progress and not third.metric and not third.warning
    assert "video_job" not in third.session_state


def test_a_second_analysis_starts_only_when_asked_and_both_are_shown(
    env: Path, tmp_path: Path, held_decoding: threading.Event
) -> None:
    video = make_video(tmp_path / "long.avi", n=40, face=False).read_bytes()
    first, second = open_page(), open_page()
    try:
        fill_and_start(first, "one.avi", video)
        one = first.session_state["video_job"]
        run(second)
        assert second.session_state["video_job"] is one  # followed until it starts its own
        assert start_button(second).disabled and second.file_uploader(key="video_upload").disabled
        second.checkbox(key="video_force").check()
        run(second)
        assert not second.file_uploader(key="video_upload").disabled
        fill_and_start(second, "two.avi", video)
        two = second.session_state["video_job"]
        assert two is not one and len(video_job.running_video_jobs()) == 2
        wait_first_batch(two)

        third = open_page()  # sees both, follows the older one
        assert third.session_state["video_job"] is one
        bars = [bar.proto.text for bar in third.progress]
        assert len(bars) == 2 and bars[0].startswith("one.avi") and bars[1].startswith("two.avi")
        assert "one.avi" in third.warning[0].value and "two.avi" in third.warning[0].value
        for job in (one, two):
            cancel_button(third, job).click()
            run(third)
        assert one.cancel.is_set() and two.cancel.is_set()
    finally:
        held_decoding.set()
    assert one.wait(40).finished and two.wait(40).finished
    run(third)
    assert not third.progress and {m.label: m.value for m in third.metric}["Session"] == (
        "incomplete"
    )
