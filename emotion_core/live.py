"""Thread-safe running statistics of a live stream, fed by the video callback, read by the page.

The webrtc video callback runs on a worker thread and calls ``LiveAggregator.update`` for every
frame; the Streamlit script thread calls ``snapshot()`` a few times per second and starts/stops
recordings. Both sides only meet inside this object, under its lock.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol, Self

import numpy as np
import pandas as pd

from emotion_core.classes import CLASSES
from emotion_core.results import FrameResult
from emotion_core.sessions import COLUMNS, SessionError, SessionRecorder
from emotion_core.stats import MAX_GAP_S

DEFAULT_FRAME_INTERVAL_S = 1 / 30

# t_s, frame, face_id, box, probs (NaN when no face), raw label
_Row = tuple[float, int, int, tuple[int, int, int, int], np.ndarray, str]


@dataclass(frozen=True)
class CurrentFace:
    """A face in the latest frame as shown on screen (smoothed label and its probability)."""

    face_id: int
    label: str
    confidence: float


@dataclass(frozen=True)
class RecordingStatus:
    """The active (or just failed) recording."""

    session_id: str
    path: Path
    frames: int
    faces: int
    active: bool
    error: str | None = None
    discarded: bool = False  # stopped before any frame arrived: nothing was kept

    @classmethod
    def of(cls, recorder: SessionRecorder, active: bool, error: str | None = None) -> Self:
        """A recorder's status now (its counts wait for the recorder's lock)."""
        return cls(
            recorder.session_id, recorder.path, recorder.frames, recorder.faces, active, error
        )


OutcomeKind = Literal[
    "started", "busy", "not_started", "saved", "discarded", "kept", "failed", "none"
]


@dataclass(frozen=True)
class RecordingOutcome:
    """What a Record or Stop click did (or a write failure on the video thread), for the page.

    kind: "started"; "busy" (a recording is already on: nothing was done); "not_started" (the
    recorder could not be created or attached; no session is left behind); "saved";
    "discarded" (stopped before any frame arrived: nothing kept); "kept" (a write failure had
    stopped it: the frames written before it are kept, listed as incomplete); "failed"
    (closing it failed); "none" (there was nothing to stop).
    text: the sentence to show ("" for busy, saved and none). status: the recording it is
    about (None for busy, not_started and none; for failed, None when it is unknown).
    """

    kind: OutcomeKind
    text: str = ""
    status: RecordingStatus | None = None

    @property
    def is_error(self) -> bool:
        """Show the text as an error (else as information)."""
        return self.kind in ("not_started", "failed")

    @property
    def saved(self) -> RecordingStatus | None:
        """The saved recording's final status (path and counts), when it was saved."""
        return self.status if self.kind == "saved" else None

    @property
    def failure_id(self) -> str | None:
        """The session whose failure this outcome reports (so that it is reported once)."""
        if self.kind in ("kept", "failed") and self.status is not None:
            return self.status.session_id
        return None


def stop_outcome(status: RecordingStatus | None) -> RecordingOutcome:
    """What became of a recording, from its final status (stop_recording's)."""
    if status is None:
        return RecordingOutcome("none")
    if status.error:  # a write failed earlier and stopped it
        return RecordingOutcome(
            "kept",
            f"The recording had stopped early; the {status.frames} frames written before "
            f"the failure are kept in `{status.path}` (listed as incomplete).",
            status,
        )
    if status.discarded:
        return RecordingOutcome(
            "discarded",
            "No frame arrived while recording (press START on the video first), so no "
            "session was saved.",
            status,
        )
    return RecordingOutcome("saved", "", status)


@dataclass(frozen=True)
class LiveSnapshot:
    """A consistent copy of the live statistics since the last reset.

    label_counts: per class, faces whose raw top label was that class.
    label_time: per class, the same weighted by time (each frame counts the seconds since the
    previous one, at most stats.MAX_GAP_S), as the Analysis page weighs frames; its shares are
    what the live chart and indicator use.
    mean_probs: per class, the time-weighted mean raw probability over all faces (0 when no face
    yet). face_time_s: seconds with a face in view (the same weights).
    current: faces of the latest frame (smoothed display labels).
    fps: frames processed per second over the last ``fps_window_s`` (0 when stalled).
    process_ms: mean pipeline time per frame over the same window.
    duration_s: stream time covered (last - first frame time since the reset).
    """

    frames: int = 0
    frames_with_face: int = 0
    faces: int = 0
    label_counts: dict[str, int] = field(default_factory=dict)
    label_time: dict[str, float] = field(default_factory=dict)
    mean_probs: dict[str, float] = field(default_factory=dict)
    face_time_s: float = 0.0
    current: tuple[CurrentFace, ...] = ()
    fps: float = 0.0
    process_ms: float = 0.0
    duration_s: float = 0.0
    last_t_s: float | None = None
    recording: RecordingStatus | None = None
    error: str | None = None


class LiveAggregator:
    """Accumulates FrameResults from the video thread; optionally owns the active recorder."""

    def __init__(
        self,
        classes: tuple[str, ...] = CLASSES,
        fps_window_s: float = 2.0,
        history_s: float = 120.0,
        max_history_rows: int = 20_000,
    ) -> None:
        self.classes = tuple(classes)
        self.fps_window_s = float(fps_window_s)
        self.history_s = float(history_s)
        # NOTE: update() runs on the webrtc worker thread, everything else on the script thread;
        # all shared state below is read and written only while holding this lock. Recorder I/O
        # and reads of the recorder's counts happen outside it (the recorder has its own lock),
        # so an fsync never holds this lock.
        self._lock = threading.Lock()
        self._recorder: SessionRecorder | None = None
        self._last_recording: RecordingStatus | None = None
        self._history: deque[_Row] = deque(maxlen=max_history_rows)
        self._reset_locked()

    def _reset_locked(self) -> None:
        k = len(self.classes)
        self._frames = 0
        self._frames_with_face = 0
        self._faces = 0
        self._counts = np.zeros(k, dtype=np.int64)
        self._label_time = np.zeros(k, dtype=np.float64)  # seconds per top label
        self._prob_time = np.zeros(k, dtype=np.float64)  # probabilities x seconds
        self._obs_time = 0.0  # observations x seconds
        self._face_time = 0.0  # seconds of frames with a face
        self._last_weight = DEFAULT_FRAME_INTERVAL_S
        self._current: tuple[CurrentFace, ...] = ()
        self._times: deque[tuple[float, float]] = deque()
        self._first_t_s: float | None = None
        self._last_t_s: float | None = None
        self._error: str | None = None
        self._history.clear()

    def reset(self) -> None:
        """Forget the statistics (not the recording)."""
        with self._lock:
            self._reset_locked()

    def update(self, result: FrameResult, process_ms: float = 0.0) -> None:
        """Add one processed frame (called from the video thread); records it when recording."""
        now = time.monotonic()
        current = tuple(
            CurrentFace(f.face_id, f.display_label, float(np.max(f.smoothed))) for f in result.faces
        )
        with self._lock:
            weight = self._weight_locked(float(result.t_s))
            self._frames += 1
            self._faces += len(result.faces)
            if result.faces:
                self._frames_with_face += 1
                self._face_time += weight
            for face in result.faces:
                probs = np.asarray(face.probs, dtype=np.float64)
                top = int(np.argmax(probs))
                self._counts[top] += 1
                self._label_time[top] += weight
                self._prob_time += weight * probs
                self._obs_time += weight
                self._history.append(
                    (
                        float(result.t_s),
                        result.frame_index,
                        face.face_id,
                        face.box,
                        probs,
                        face.label,
                    )
                )
            if not result.faces:
                self._history.append(
                    (
                        float(result.t_s),
                        result.frame_index,
                        -1,
                        (0, 0, 0, 0),
                        np.full(len(self.classes), np.nan),
                        "",
                    )
                )
            while self._history and self._history[0][0] < result.t_s - self.history_s:
                self._history.popleft()
            self._current = current
            self._error = None  # this frame went through: an earlier failure is over
            if self._first_t_s is None:
                self._first_t_s = float(result.t_s)
            self._last_t_s = float(result.t_s)
            self._times.append((now, float(process_ms)))
            while self._times and self._times[0][0] < now - self.fps_window_s:
                self._times.popleft()
            recorder = self._recorder
        if recorder is not None:
            try:
                recorder.add_frame(result)
            except SessionError as exc:
                self._recording_failed(recorder, str(exc))

    def _weight_locked(self, t_s: float) -> float:
        """Seconds this frame stands for: the time since the previous frame, at most MAX_GAP_S
        (a stall is not counted); the previous weight when there is no forward gap."""
        if self._last_t_s is not None and t_s > self._last_t_s:
            self._last_weight = min(t_s - self._last_t_s, MAX_GAP_S)
        return self._last_weight

    def _recording_failed(self, recorder: SessionRecorder, message: str) -> None:
        if recorder.closed and recorder.error is None:
            return  # NOTE: stop_recording won the race with this frame; nothing is wrong.
        try:
            recorder.close(complete=False)
        except SessionError:
            pass
        with self._lock:
            if self._recorder is recorder:
                self._recorder = None
                self._last_recording = RecordingStatus.of(recorder, active=False, error=message)

    def report_error(self, message: str | None) -> None:
        """Remember a processing error for the page to show (None clears it)."""
        with self._lock:
            self._error = message

    def _fps_locked(self, now: float) -> tuple[float, float]:
        times = [t for t in self._times if t[0] >= now - self.fps_window_s]
        if len(times) < 2:
            return 0.0, (times[0][1] if times else 0.0)
        span = times[-1][0] - times[0][0]
        fps = (len(times) - 1) / span if span > 0 else 0.0
        return fps, float(np.mean([t[1] for t in times]))

    def snapshot(self) -> LiveSnapshot:
        """A consistent, immutable copy of the current statistics."""
        now = time.monotonic()
        with self._lock:
            fps, process_ms = self._fps_locked(now)
            if self._obs_time > 0:
                mean = self._prob_time / self._obs_time
            else:
                mean = np.zeros(len(self.classes))
            recorder = self._recorder
            recording = self._last_recording
            snapshot = LiveSnapshot(
                frames=self._frames,
                frames_with_face=self._frames_with_face,
                faces=self._faces,
                label_counts={c: int(n) for c, n in zip(self.classes, self._counts, strict=True)},
                label_time={
                    c: float(s) for c, s in zip(self.classes, self._label_time, strict=True)
                },
                mean_probs={c: float(p) for c, p in zip(self.classes, mean, strict=True)},
                face_time_s=self._face_time,
                current=self._current,
                fps=fps,
                process_ms=process_ms,
                duration_s=(
                    self._last_t_s - self._first_t_s
                    if self._last_t_s is not None and self._first_t_s is not None
                    else 0.0
                ),
                last_t_s=self._last_t_s,
                recording=recording,
                error=self._error,
            )
        if recorder is None:
            return snapshot
        # NOTE: read outside our lock: the recorder's counts wait for its lock, which the video
        # thread holds while it fsyncs, and update() must not wait for that behind us.
        active = RecordingStatus.of(recorder, active=True, error=recorder.error)
        return replace(snapshot, recording=active)

    def recent_frames(self, window_s: float | None = None) -> pd.DataFrame:
        """The last window_s seconds (default: all kept history) as a frames.csv-style DataFrame."""
        with self._lock:
            rows = list(self._history)
        if window_s is not None and rows:
            last = rows[-1][0]
            rows = [r for r in rows if r[0] >= last - window_s]
        if not rows:
            return pd.DataFrame(
                {c: pd.Series(dtype=object if c == "label" else float) for c in COLUMNS}
            )
        probs = np.stack([r[4] for r in rows])
        data: dict[str, object] = {
            "t_s": [r[0] for r in rows],
            "frame": [r[1] for r in rows],
            "face_id": [r[2] for r in rows],
            "x": [r[3][0] for r in rows],
            "y": [r[3][1] for r in rows],
            "w": [r[3][2] for r in rows],
            "h": [r[3][3] for r in rows],
        }
        for k, cls in enumerate(self.classes):
            data[cls] = probs[:, k]
        data["label"] = [r[5] for r in rows]
        return pd.DataFrame(data)

    # -- recording ------------------------------------------------------------------------------

    @property
    def recording(self) -> bool:
        """True while a recorder is attached."""
        with self._lock:
            return self._recorder is not None

    def start_recording(self, recorder: SessionRecorder, reset_stats: bool = False) -> None:
        """Attach a fresh recorder: from the next frame on, every frame is written to it.
        reset_stats: also forget the statistics, at the same moment, so that they describe
        exactly the frames recorded."""
        with self._lock:
            if self._recorder is not None:
                raise SessionError(
                    f"{self._recorder.path}: already recording; stop it before starting another"
                )
            self._recorder = recorder
            self._last_recording = None
            if reset_stats:
                self._reset_locked()

    def begin_session(self, make_recorder: Callable[[], SessionRecorder]) -> RecordingOutcome:
        """Start recording into make_recorder()'s recorder, the statistics reset at the same
        moment (they then describe exactly the frames recorded).

        "busy", creating no recorder, while a recording is on. "not_started" when the recorder
        cannot be created or attached (SessionError); one that was created is discarded (no
        frame reached it), so no empty session is left behind.
        """
        # NOTE: called on the script thread (a Record on_click); a double click queues a second
        # on_click, which finds the first recording on and must not start another.
        if self.recording:
            return RecordingOutcome("busy")
        recorder = None
        try:
            recorder = make_recorder()
            self.start_recording(recorder, reset_stats=True)
        except SessionError as exc:
            if recorder is not None:
                recorder.discard()
            return RecordingOutcome("not_started", f"Could not start recording: {exc}")
        return RecordingOutcome(
            "started",
            f"Recording session {recorder.session_id}.",
            RecordingStatus.of(recorder, active=True),
        )

    def end_session(self) -> RecordingOutcome:
        """Stop the recording (stop_recording) and say what became of it (stop_outcome);
        "failed" when closing it failed, with the failed recording's status."""
        try:
            status = self.stop_recording()
        except SessionError as exc:
            return RecordingOutcome(
                "failed",
                f"The session was not saved cleanly: {exc}",
                self.snapshot().recording,
            )
        return stop_outcome(status)

    def failed_recording(self) -> RecordingStatus | None:
        """The last recording when a write failure stopped it (on the video thread, or before
        a Stop closed it) and none is on now; else None."""
        if self.recording:
            return None
        status = self.snapshot().recording
        return status if status is not None and status.error else None

    def stop_recording(self, complete: bool = True) -> RecordingStatus | None:
        """Detach and close the active recorder; returns its final status (None if none).
        A recorder that got no frame is deleted instead (status.discarded).

        Raises SessionError when closing fails (the rows written so far are kept).
        """
        with self._lock:
            recorder = self._recorder
            self._recorder = None
            if recorder is None:
                return self._last_recording
        if recorder.error is None and recorder.discard_if_empty():
            # no frame arrived (the video never started): no empty session is kept
            status = RecordingStatus(
                recorder.session_id, recorder.path, 0, 0, active=False, discarded=True
            )
            with self._lock:
                self._last_recording = status
            return status
        error: str | None = None
        try:
            recorder.close(complete=complete)
        except SessionError as exc:
            error = str(exc)
        # NOTE: a write that failed on the video thread closes the recorder before detaching
        # it; a Stop in between finds it closed without error, so ask the recorder too.
        error = error or recorder.error
        status = RecordingStatus.of(recorder, active=False, error=error)
        with self._lock:
            self._last_recording = status
        if error is not None:
            raise SessionError(error)
        return status

    def flush_recording(self, force: bool = False) -> None:
        """Flush the active recorder if its flush interval has passed, or now if force."""
        with self._lock:
            recorder = self._recorder
        if recorder is not None:
            try:
                if force:
                    recorder.flush()
                else:
                    recorder.flush_if_due()
            except SessionError as exc:
                self._recording_failed(recorder, str(exc))


class FramePipeline(Protocol):
    """What LiveProcessor needs from emotion_core.pipeline.EmotionPipeline."""

    def process(self, frame_bgr: np.ndarray, t_s: float, frame_index: int) -> FrameResult: ...

    def annotate(self, frame_bgr: np.ndarray, frame_result: FrameResult) -> np.ndarray: ...

    def reset(self) -> None: ...


class LiveProcessor:
    """The whole per-frame job of the video callback: process, aggregate, annotate.

    Never raises: a failing frame is returned unannotated and the error is reported through
    the aggregator (the page shows it). The pipeline can be swapped from the script thread.
    A new stream (time going backwards, or a gap over ``restart_gap_s`` beyond the time the
    previous frame took to process) resets tracking.
    Times stay continuous across streams: each new connection's clock starts again near 0,
    so a stream whose time goes backwards is shifted to follow the last frame one frame
    interval later (a recording that spans STOP/START keeps increasing times).
    """

    def __init__(
        self,
        aggregator: LiveAggregator,
        pipeline: FramePipeline | None = None,
        restart_gap_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.aggregator = aggregator
        self.restart_gap_s = float(restart_gap_s)
        self._clock = clock
        # NOTE: process() runs on the webrtc worker thread; set_pipeline() on the script thread.
        # The lock only guards the swap; processing happens outside it on the captured pipeline.
        self._lock = threading.Lock()
        self._pipeline = pipeline
        self._pipeline_key: object = None
        self._frame_index = 0
        self._last_t_s: float | None = None
        self._offset_s = 0.0  # added to the stream's time: keeps times increasing
        self._step_s = DEFAULT_FRAME_INTERVAL_S  # the last interval between two frames
        self._busy_s = 0.0  # how long the last frame took to process

    @property
    def pipeline_key(self) -> object:
        """Whatever key the page passed with the current pipeline (to detect changes)."""
        with self._lock:
            return self._pipeline_key

    @property
    def has_pipeline(self) -> bool:
        """True once a pipeline is set."""
        with self._lock:
            return self._pipeline is not None

    def set_pipeline(self, pipeline: FramePipeline | None, key: object = None) -> None:
        """Use this pipeline from the next frame on (None: pass frames through)."""
        with self._lock:
            self._pipeline = pipeline
            self._pipeline_key = key

    def keeps_pipeline(self, recording: bool) -> bool:
        """True when the current pipeline must stay: a recording is on and a pipeline is set."""
        # NOTE: a recording keeps the pipeline it started with: the model named in its
        # meta.json, and the tracker's face ids (a new pipeline would number faces from 0).
        return recording and self.has_pipeline

    def ensure_pipeline(self, key: object, build: Callable[[], FramePipeline]) -> bool:
        """Use the pipeline for key: build() one and swap it in when the current one was set
        for another key (or none is set); True when it did. When build() raises, frames pass
        through unprocessed (no pipeline for another key goes on) and the error propagates.
        """
        if self.pipeline_key == key:
            return False
        # NOTE: build() (loading the face detector) runs outside the lock on the script thread;
        # the video thread goes on with the old pipeline meanwhile, and only the swap locks.
        try:
            pipeline = build()
        except Exception:
            self.set_pipeline(None)
            raise
        self.set_pipeline(pipeline, key)
        return True

    def process(self, frame_bgr: np.ndarray, t_s: float | None) -> np.ndarray:
        """One BGR frame (and its stream time in s, or None) -> the annotated frame."""
        start = self._clock()
        t = float(t_s) if t_s is not None else start
        with self._lock:
            pipeline = self._pipeline
            restarted, t = self._continuous_time_locked(t)
            index = self._frame_index
            self._frame_index += 1
        if pipeline is None:
            return frame_bgr
        try:
            if restarted:
                pipeline.reset()
            result = pipeline.process(frame_bgr, t, index)
            out = pipeline.annotate(frame_bgr, result)
            self.aggregator.update(result, (self._clock() - start) * 1000.0)
        except Exception as exc:  # noqa: BLE001  NOTE: raising here would kill the stream.
            self.aggregator.report_error(f"Frame processing failed: {type(exc).__name__}: {exc}")
            return frame_bgr
        finally:
            with self._lock:
                self._busy_s = self._clock() - start
        return out

    def _continuous_time_locked(self, stream_t: float) -> tuple[bool, float]:
        """(is this a new stream, the frame's time on the continuous clock)."""
        last = self._last_t_s
        self._last_t_s = stream_t
        if last is None:
            return False, stream_t + self._offset_s
        previous = last + self._offset_s
        gap = stream_t - last
        if gap < 0:  # a new connection: its clock started again
            self._offset_s = previous + self._step_s - stream_t
            return True, previous + self._step_s
        if 0 < gap <= self.restart_gap_s:
            self._step_s = gap
        # NOTE: frames that arrive while one is processed are dropped, so a slow frame leaves
        # a gap as long as its processing; only a gap beyond that is a pause of the stream.
        return gap > self.restart_gap_s + self._busy_s, stream_t + self._offset_s


def parse_ice_servers(value: Any) -> list[dict[str, Any]]:
    """ICE servers from JSON text or an already parsed list (env var / secrets).

    Accepts ``[{"urls": ["stun:..."]}, {"urls": "turn:...", "username": .., "credential": ..}]``
    and raises ValueError with a readable message for anything else.
    """
    if isinstance(value, str):
        if not value.strip():
            return []
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"ICE servers are not valid JSON ({exc})") from exc
    if not isinstance(value, list | tuple):
        raise ValueError("ICE servers must be a JSON list of objects with 'urls'")  # noqa: TRY004
    servers: list[dict[str, Any]] = []
    for i, item in enumerate(value):
        if not hasattr(item, "get") or not item.get("urls"):
            raise ValueError(f"ICE server #{i + 1} needs 'urls' (a string or list of strings)")
        servers.append(dict(item))
    return servers
