"""LiveAggregator / LiveProcessor: statistics, fps, recording hand-over, thread safety."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from emotion_core.classes import CLASSES
from emotion_core.live import (
    LiveAggregator,
    LiveProcessor,
    RecordingOutcome,
    RecordingStatus,
    parse_ice_servers,
    stop_outcome,
)
from emotion_core.results import FaceResult, FrameResult
from emotion_core.sessions import COLUMNS, SessionError, SessionRecorder, load_session


def onehot(k: int, peak: float = 0.8) -> np.ndarray:
    p = np.full(len(CLASSES), (1 - peak) / (len(CLASSES) - 1))
    p[k] = peak
    return p


def result(i: int, t: float, ks: tuple[int, ...] = (3,)) -> FrameResult:
    faces = tuple(
        FaceResult(j, (j * 50, 0, 40, 40), onehot(k), onehot(k, 0.6)) for j, k in enumerate(ks)
    )
    return FrameResult(i, t, faces)


def test_snapshot_counts_and_means() -> None:
    agg = LiveAggregator()
    agg.update(result(0, 0.0, (3,)), 5.0)
    agg.update(result(1, 1 / 30, (3, 0)), 7.0)  # an even 30 fps: time weights are all equal
    agg.update(result(2, 2 / 30, ()), 1.0)
    snap = agg.snapshot()
    assert (snap.frames, snap.frames_with_face, snap.faces) == (3, 2, 3)
    assert snap.label_counts["happy"] == 2 and snap.label_counts["angry"] == 1
    assert sum(snap.label_counts.values()) == 3
    assert snap.mean_probs["happy"] == pytest.approx((0.8 + 0.8 + 0.2 / 6) / 3)
    assert sum(snap.mean_probs.values()) == pytest.approx(1.0)
    assert snap.current == ()  # the last frame had no face
    assert snap.duration_s == pytest.approx(2 / 30)
    agg.update(result(3, 0.1, (5,)))
    (face,) = agg.snapshot().current
    assert (face.face_id, face.label, face.confidence) == (0, "surprise", pytest.approx(0.6))
    agg.reset()
    snap = agg.snapshot()
    assert snap.frames == 0 and snap.mean_probs["happy"] == 0.0 and snap.fps == 0.0


def test_live_shares_and_face_time_are_weighted_by_time() -> None:
    """30 s of happy at 10 fps, then 30 s without a face at 30 fps: happy is all of the face
    observations, and the face was in view half the time (a quarter of the frames)."""
    agg = LiveAggregator()
    t, i = 0.0, 0
    for _ in range(300):
        agg.update(result(i, t, (3,)))
        t, i = t + 0.1, i + 1
    for _ in range(900):
        agg.update(result(i, t, ()))
        t, i = t + 1 / 30, i + 1
    agg.update(result(i, t + 30.0, ()))  # a 30 s stall counts as at most MAX_GAP_S
    snap = agg.snapshot()
    assert snap.face_time_s == pytest.approx(30.0, abs=0.1)
    assert snap.label_time["happy"] == pytest.approx(snap.face_time_s)
    assert snap.frames_with_face / snap.frames < 0.26


def test_fps_over_recent_window(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr("emotion_core.live.time.monotonic", lambda: now[0])
    agg = LiveAggregator(fps_window_s=2.0)
    for i in range(41):  # 20 fps for 2 s
        now[0] = 100.0 + i * 0.05
        agg.update(result(i, i * 0.05), 10.0)
    snap = agg.snapshot()
    assert snap.fps == pytest.approx(20.0, rel=0.05)
    assert snap.process_ms == pytest.approx(10.0)
    now[0] += 5.0  # stream stalled
    assert agg.snapshot().fps == 0.0


def test_recent_frames_has_session_columns() -> None:
    agg = LiveAggregator(history_s=1.0)
    for i in range(30):
        agg.update(result(i, i * 0.1, (1,) if i % 2 else ()))
    df = agg.recent_frames()
    assert list(df.columns) == list(COLUMNS)
    assert df["t_s"].min() >= 2.9 - 1.0 - 1e-9  # older rows dropped
    assert set(df["face_id"]) == {-1, 0}
    assert len(agg.recent_frames(window_s=0.25)) == 3
    assert list(LiveAggregator().recent_frames().columns) == list(COLUMNS)


def test_recording_hand_over(tmp_path: Path) -> None:
    agg = LiveAggregator()
    agg.update(result(0, 10.0))  # before recording: not written
    rec = SessionRecorder(tmp_path, "Live", flush_interval_s=0.0)
    agg.start_recording(rec)
    assert agg.recording
    with pytest.raises(SessionError, match="already recording"):
        agg.start_recording(SessionRecorder(tmp_path, "Other"))
    for i in range(1, 6):
        agg.update(result(i, 10.0 + i / 10))
    assert agg.snapshot().recording.active  # type: ignore[union-attr]
    status = agg.stop_recording()
    assert status is not None and status.frames == 5 and not status.active
    agg.update(result(7, 11.0))  # after stop: not written
    session = load_session(rec.path)
    assert session.info.complete and len(session.frames) == 5
    assert session.frames["t_s"].iloc[0] == 0.0 and session.frames["frame"].iloc[-1] == 4
    assert agg.stop_recording() == status


def recording_on_a_full_disk(tmp_path: Path) -> tuple[LiveAggregator, SessionRecorder]:
    """A recording that wrote one frame; its next write finds the disk full."""
    agg = LiveAggregator()
    rec = SessionRecorder(tmp_path, "Full", flush_interval_s=0.0)
    agg.start_recording(rec)
    agg.update(result(0, 0.0))

    def broken_write(data: str) -> int:
        raise OSError(28, "No space left on device")

    rec._file._fh.write = broken_write  # type: ignore[method-assign,union-attr]
    return agg, rec


def test_write_failure_detaches_recorder_and_is_reported(tmp_path: Path) -> None:
    agg, rec = recording_on_a_full_disk(tmp_path)
    agg.update(result(1, 0.1))  # must not raise in the video thread
    snap = agg.snapshot()
    assert not agg.recording
    assert snap.recording is not None and not snap.recording.active
    assert "No space left on device" in (snap.recording.error or "")
    assert len(load_session(rec.path).frames) == 1


def test_stop_racing_with_frames(tmp_path: Path) -> None:
    agg = LiveAggregator()
    agg.start_recording(SessionRecorder(tmp_path, "Race", flush_interval_s=0.0))
    stop = threading.Event()

    def feed() -> None:
        i = 0
        while not stop.is_set():
            agg.update(result(i, i / 30))
            i += 1

    thread = threading.Thread(target=feed)
    thread.start()
    try:
        while agg.snapshot().recording.frames == 0:  # type: ignore[union-attr]
            time.sleep(0.001)
        status = agg.stop_recording()
    finally:
        stop.set()
        thread.join(timeout=30)
    assert status is not None and status.error is None
    assert agg.snapshot().recording == status  # no spurious failure recorded
    assert load_session(status.path).info.complete


class FakePipeline:
    def __init__(self, fail_at: int = -1) -> None:
        self.calls: list[tuple[float, int]] = []
        self.resets = 0
        self.fail_at = fail_at

    def process(self, frame_bgr: np.ndarray, t_s: float, frame_index: int) -> FrameResult:
        if frame_index == self.fail_at:
            raise RuntimeError("boom")
        self.calls.append((t_s, frame_index))
        return result(frame_index, t_s)

    def annotate(self, frame_bgr: np.ndarray, frame_result: FrameResult) -> np.ndarray:
        return frame_bgr + 1

    def reset(self) -> None:
        self.resets += 1


def test_processor_processes_annotates_and_survives_errors() -> None:
    agg = LiveAggregator()
    proc = LiveProcessor(agg)
    img = np.zeros((4, 4, 3), np.uint8)
    assert proc.process(img, 0.0) is img  # no pipeline yet: passthrough
    pipe = FakePipeline(fail_at=2)
    proc.set_pipeline(pipe, key="k1")
    assert proc.pipeline_key == "k1" and proc.has_pipeline
    assert (proc.process(img, 0.1) == 1).all()
    out = proc.process(img, 0.2)  # raises inside: frame passes through, error reported
    assert out is img and "boom" in (agg.snapshot().error or "")
    proc.process(img, 0.3)
    assert [c[1] for c in pipe.calls] == [1, 3]
    assert agg.snapshot().frames == 2
    proc.process(img, 0.0)  # time went back: a new stream
    proc.process(img, 9.0)  # long gap: a new stream
    assert pipe.resets == 2
    proc.process(img, None)  # no timestamp: monotonic clock used
    assert len(pipe.calls) == 5


def test_times_stay_continuous_when_the_stream_restarts(tmp_path: Path) -> None:
    """STOP/START on the video during a recording: the new connection's clock starts at 0."""
    agg = LiveAggregator()
    proc = LiveProcessor(agg)
    pipe = FakePipeline()
    proc.set_pipeline(pipe)
    rec = SessionRecorder(tmp_path, "Restart", flush_interval_s=0.0)
    agg.start_recording(rec)
    img = np.zeros((4, 4, 3), np.uint8)
    for i in range(5):
        proc.process(img, 50.0 + i * 0.1)  # first stream, 10 fps
    for i in range(5):
        proc.process(img, 0.2 + i * 0.1)  # second stream
    times = [t for t, _ in pipe.calls]
    assert times[5] == pytest.approx(50.5) and pipe.resets == 1  # one frame interval later
    assert np.all(np.diff(times) > 0)
    assert agg.snapshot().duration_s == pytest.approx(0.9)
    agg.stop_recording()
    recorded = load_session(rec.path).frames["t_s"].to_numpy()
    assert recorded == pytest.approx(np.arange(10) * 0.1)
    proc.process(img, 60.0)  # a forward gap is real elapsed stream time: kept
    assert pipe.calls[-1][0] == pytest.approx(60.0 + 50.5 - 0.2) and pipe.resets == 2


def test_an_aggregator_error_does_not_escape_the_video_callback() -> None:
    agg = LiveAggregator()
    proc = LiveProcessor(agg)

    class EightClasses(FakePipeline):
        def process(self, frame_bgr: np.ndarray, t_s: float, frame_index: int) -> FrameResult:
            face = FaceResult(0, (0, 0, 4, 4), np.full(8, 0.125), np.full(8, 0.125))
            return FrameResult(frame_index, t_s, (face,))

    proc.set_pipeline(EightClasses())
    img = np.zeros((4, 4, 3), np.uint8)
    assert proc.process(img, 0.0) is img  # statistics reject 8 classes: reported, not raised
    assert "Frame processing failed" in (agg.snapshot().error or "")


def test_parse_ice_servers() -> None:
    assert parse_ice_servers("") == []
    assert parse_ice_servers('[{"urls": ["stun:stun.example.org:3478"]}]') == [
        {"urls": ["stun:stun.example.org:3478"]}
    ]
    assert (
        parse_ice_servers([{"urls": "turn:x", "username": "u", "credential": "c"}])[0]["username"]
        == "u"
    )
    for bad in ("{", '{"urls": "x"}', "[{}]", "[1]"):
        with pytest.raises(ValueError, match="ICE"):
            parse_ice_servers(bad)


def test_flush_recording_when_due_or_forced(tmp_path: Path) -> None:
    agg = LiveAggregator()
    rec = SessionRecorder(tmp_path, "Flush", flush_interval_s=3600)
    agg.start_recording(rec)
    agg.update(result(0, 0.0))
    agg.flush_recording()
    assert len(rec.frames_path.read_text().splitlines()) == 1  # header only: not due yet
    agg.flush_recording(force=True)
    assert len(rec.frames_path.read_text().splitlines()) == 2
    agg.stop_recording()
    agg.flush_recording(force=True)  # nothing attached: no-op


def test_slow_frames_are_not_mistaken_for_a_new_stream() -> None:
    """Frames that arrive while one is processed are dropped: with 2.5 s per frame the stream
    times jump by 2.5 s, which is not a pause (tracking must not reset on every frame)."""
    clock = [100.0]

    class SlowPipeline(FakePipeline):
        def process(self, frame_bgr: np.ndarray, t_s: float, frame_index: int) -> FrameResult:
            clock[0] += 2.5
            return super().process(frame_bgr, t_s, frame_index)

    pipe = SlowPipeline()
    proc = LiveProcessor(LiveAggregator(), pipe, restart_gap_s=2.0, clock=lambda: clock[0])
    img = np.zeros((4, 4, 3), np.uint8)
    for t in (0.0, 2.5, 5.0, 7.5):
        proc.process(img, t)
    assert pipe.resets == 0
    fast = FakePipeline()
    proc = LiveProcessor(LiveAggregator(), fast, restart_gap_s=2.0, clock=lambda: clock[0])
    for t in (0.0, 0.1, 9.0):  # a real pause of the stream
        proc.process(img, t)
    assert fast.resets == 1


def test_a_processing_error_clears_once_frames_go_through_again() -> None:
    agg = LiveAggregator()
    proc = LiveProcessor(agg, FakePipeline(fail_at=0))
    img = np.zeros((4, 4, 3), np.uint8)
    proc.process(img, 0.0)
    assert "boom" in (agg.snapshot().error or "")
    proc.process(img, 0.1)
    assert agg.snapshot().error is None


def test_stop_between_a_failed_write_and_its_detach_reports_the_failure(tmp_path: Path) -> None:
    """The video thread's failure handler closes the recorder, then detaches it: a Stop in
    between must not say "saved"."""
    agg, rec = recording_on_a_full_disk(tmp_path)
    with pytest.raises(SessionError):
        rec.add_frame(result(1, 0.1))  # what update() does on the video thread ...
    with pytest.raises(SessionError):
        rec.close(complete=False)  # ... and the first step of its failure handler
    with pytest.raises(SessionError, match="No space left"):
        agg.stop_recording()
    status = agg.snapshot().recording
    assert status is not None and "No space left" in (status.error or "")
    assert not load_session(rec.path).info.complete


# --- recording start/stop outcomes (what the Live page says) -----------------------------------


def test_stop_outcome_says_what_became_of_a_recording(tmp_path: Path) -> None:
    assert stop_outcome(None) == RecordingOutcome("none")
    saved = RecordingStatus("s1", tmp_path / "s1", 5, 4, active=False)
    outcome = stop_outcome(saved)
    assert (outcome.kind, outcome.text, outcome.saved) == ("saved", "", saved)
    assert not outcome.is_error and outcome.failure_id is None
    empty = RecordingStatus("s2", tmp_path / "s2", 0, 0, active=False, discarded=True)
    outcome = stop_outcome(empty)
    assert outcome.kind == "discarded" and "No frame arrived" in outcome.text
    assert outcome.saved is None and outcome.failure_id is None and not outcome.is_error
    failed = RecordingStatus("s3", tmp_path / "s3", 7, 7, active=False, error="disk full")
    outcome = stop_outcome(failed)
    assert outcome.kind == "kept" and outcome.failure_id == "s3" and not outcome.is_error
    assert "the 7 frames written before the failure are kept in" in outcome.text
    assert str(tmp_path / "s3") in outcome.text and outcome.saved is None


def test_begin_session_starts_a_recording_with_fresh_statistics(tmp_path: Path) -> None:
    agg = LiveAggregator()
    agg.update(result(0, 0.0))
    outcome = agg.begin_session(lambda: SessionRecorder(tmp_path, "Ana", flush_interval_s=0.0))
    assert outcome.kind == "started" and not outcome.is_error and outcome.status is not None
    assert outcome.text == f"Recording session {outcome.status.session_id}."
    assert agg.recording and agg.snapshot().frames == 0  # reset at the same moment
    made: list[SessionRecorder] = []

    def another() -> SessionRecorder:
        made.append(SessionRecorder(tmp_path, "Second"))
        return made[-1]

    assert agg.begin_session(another) == RecordingOutcome("busy")  # a double click
    assert not made and len(list(tmp_path.iterdir())) == 1
    agg.update(result(1, 0.1))
    outcome = agg.end_session()
    assert outcome.kind == "saved" and outcome.saved is not None
    assert outcome.saved.frames == 1 and load_session(outcome.saved.path).info.complete


def test_begin_session_that_fails_leaves_no_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    agg = LiveAggregator()

    def cannot_create() -> SessionRecorder:
        raise SessionError("sessions: cannot create the sessions folder")

    outcome = agg.begin_session(cannot_create)
    assert outcome.kind == "not_started" and outcome.is_error and outcome.status is None
    assert outcome.text == "Could not start recording: sessions: cannot create the sessions folder"
    assert not agg.recording

    def refuse(recorder: SessionRecorder, reset_stats: bool = False) -> None:
        raise SessionError("cannot attach")

    monkeypatch.setattr(agg, "start_recording", refuse)
    outcome = agg.begin_session(lambda: SessionRecorder(tmp_path, "Unattached"))
    assert outcome.kind == "not_started" and "cannot attach" in outcome.text
    assert not list(tmp_path.iterdir())  # the created recorder was discarded


def test_end_session_without_frames_or_recording(tmp_path: Path) -> None:
    agg = LiveAggregator()
    assert agg.end_session() == RecordingOutcome("none")
    agg.begin_session(lambda: SessionRecorder(tmp_path, "Nobody"))
    outcome = agg.end_session()
    assert outcome.kind == "discarded" and not list(tmp_path.iterdir())


def test_a_write_failure_is_reported_once_by_failed_recording_or_end_session(
    tmp_path: Path,
) -> None:
    agg, rec = recording_on_a_full_disk(tmp_path)
    assert agg.failed_recording() is None  # recording, nothing failed
    agg.update(result(1, 0.1))  # fails on the video thread
    failed = agg.failed_recording()
    assert failed is not None and failed.session_id == rec.session_id
    assert "No space left" in (failed.error or "")
    outcome = agg.end_session()  # a Stop that was already under way
    assert outcome.kind == "kept" and outcome.failure_id == rec.session_id
    assert "1 frames written before the failure" in outcome.text


def test_end_session_when_closing_fails(tmp_path: Path) -> None:
    agg, rec = recording_on_a_full_disk(tmp_path)
    with pytest.raises(SessionError):
        rec.add_frame(result(1, 0.1))
    with pytest.raises(SessionError):
        rec.close(complete=False)  # closed on the video thread, not yet detached
    outcome = agg.end_session()
    assert outcome.kind == "failed" and outcome.is_error and outcome.saved is None
    assert outcome.text.startswith("The session was not saved cleanly: ")
    assert "No space left" in outcome.text and outcome.failure_id == rec.session_id
    failed = agg.failed_recording()
    assert failed is not None and failed.session_id == rec.session_id


def test_a_clean_stop_is_no_failed_recording(tmp_path: Path) -> None:
    agg = LiveAggregator()
    agg.begin_session(lambda: SessionRecorder(tmp_path, "Fine"))
    agg.update(result(0, 0.0))
    assert agg.end_session().kind == "saved" and agg.failed_recording() is None


# --- pipeline swaps ----------------------------------------------------------------------------


def test_ensure_pipeline_builds_only_when_the_key_changes() -> None:
    proc = LiveProcessor(LiveAggregator())
    built: list[FakePipeline] = []

    def build() -> FakePipeline:
        # NOTE: the swap lock is free while building: the video thread is never held up
        assert proc._lock.acquire(blocking=False)
        proc._lock.release()
        built.append(FakePipeline())
        return built[-1]

    assert proc.ensure_pipeline("k1", build) and proc._pipeline is built[0]
    assert not proc.ensure_pipeline("k1", build) and len(built) == 1
    assert proc.ensure_pipeline("k2", build) and proc._pipeline is built[1]
    assert proc.pipeline_key == "k2"


def test_a_failed_build_leaves_frames_unprocessed() -> None:
    proc = LiveProcessor(LiveAggregator())
    proc.set_pipeline(FakePipeline(), "k1")

    def broken() -> FakePipeline:
        raise RuntimeError("no cascade")

    with pytest.raises(RuntimeError, match="no cascade"):
        proc.ensure_pipeline("k2", broken)
    assert not proc.has_pipeline and proc.pipeline_key is None
    img = np.zeros((4, 4, 3), np.uint8)
    assert proc.process(img, 0.0) is img
    assert proc.ensure_pipeline("k2", FakePipeline)  # the next run tries again


def test_a_recording_keeps_a_set_pipeline() -> None:
    proc = LiveProcessor(LiveAggregator())
    assert not proc.keeps_pipeline(recording=True)  # nothing to keep yet
    proc.set_pipeline(FakePipeline(), "k1")
    assert proc.keeps_pipeline(recording=True) and not proc.keeps_pipeline(recording=False)
