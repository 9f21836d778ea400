"""Analyse a recorded video file into a session (the same format as a live recording).

Usage::

    python -m emotion_core.analyze_video VIDEO [--out SESSIONS_DIR] [--candidate NAME]
        [--every N] [--tta] [--model NAME]

Decoding and face detection run on a background thread while the calling thread classifies
the faces of several frames in one batch, tracks them and records the rows.
Progress goes to stderr; stdout ends with
``session=<path> frames=N faces=M speed=<x>x``. Exit status: 0 when complete, 1 when the
session is incomplete (truncated file), 2 with ``error: ...`` when nothing could be analysed.
"""

from __future__ import annotations

import argparse
import contextlib
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from emotion_core.cli import quiet_native_logs
from emotion_core.detect import DetectorError
from emotion_core.inference import Classifier
from emotion_core.pipeline import EmotionPipeline, PipelineConfig, frame_size
from emotion_core.registry import ModelCard, ModelError
from emotion_core.results import Box
from emotion_core.video import VideoError, VideoInfo, iter_frames, probe_video

ProgressFn = Callable[[int, int, float], None]
BATCH_FRAMES = 16


@dataclass(frozen=True)
class AnalysisResult:
    """Outcome of analysing one video.

    frames: frames analysed (rows written per frame); faces: face rows written.
    video_seconds: length of video analysed; speed: video_seconds / wall_seconds.
    complete: False when the file was truncated/corrupt or the run was cancelled (the partial
    session is kept and marked incomplete). message: a sentence for the user.
    """

    session_dir: Path
    frames: int
    faces: int
    video_seconds: float
    wall_seconds: float
    speed: float
    complete: bool
    message: str


Found = tuple[list[Box], list[np.ndarray]]


class FrameStamp(NamedTuple):
    """Where a decoded frame sits in the file (its pixels are not kept)."""

    frame_index: int
    t_s: float
    size: tuple[int, int]  # (W, H)


class _Decoder:
    """Decodes a file and finds the faces in each frame on a background thread, in chunks."""

    # NOTE: the thread runs iter_frames and pipeline.find_faces (detection state only) and puts
    # (stamps, found) chunks, or a final exception, on a small bounded queue; the caller's
    # thread classifies, tracks and records them, so detection overlaps classification.
    # Chunks hold copied face crops, never full frames (crop views would keep each whole
    # frame alive: ~80 frames, ~1.9 GiB at 4K). stop() makes the thread exit within ~0.1 s.
    # file_frames is set before _END is put (the queue orders it before the consumer's get).
    _END = object()

    def __init__(
        self, path: Path, every: int, chunk: int, find: Callable[[np.ndarray], Found]
    ) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=3)
        self._stop = threading.Event()
        self._find = find
        self.file_frames: int | None = None  # frames in the file, once decoding ended cleanly
        self._thread = threading.Thread(
            target=self._run, args=(path, every, chunk), name="video-decode", daemon=True
        )
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, path: Path, every: int, chunk: int) -> None:
        frames: list[FrameStamp] = []
        found: list[Found] = []
        try:
            decoding = iter_frames(path, every=every)
            while True:
                try:
                    frame = next(decoding)
                except StopIteration as end:  # its value: the frames in the file
                    self.file_frames = end.value if isinstance(end.value, int) else None
                    break
                boxes, crops = self._find(frame.frame_bgr)  # may raise: the chunk ends before
                found.append((boxes, [c.copy() for c in crops]))  # a view keeps the frame alive
                frames.append(FrameStamp(frame.frame_index, frame.t_s, frame_size(frame.frame_bgr)))
                del frame
                if len(frames) >= chunk:
                    if not self._put((frames, found)):
                        return
                    frames, found = [], []
            if frames and not self._put((frames, found)):
                return
            self._put(self._END)
        except Exception as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
            if frames and not self._put((frames, found)):
                return
            self._put(exc)

    def chunks(self) -> Iterator[tuple[list[FrameStamp], list[Found]]]:
        """Chunks in file order; raises the thread's exception (e.g. VideoError) at its point."""
        while True:
            item = self._next()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def _next(self) -> Any:
        """The next item of the queue, waiting while the thread lives."""
        while True:
            try:
                return self._queue.get(timeout=0.5)
            except queue.Empty:
                if not self._thread.is_alive():
                    break
        # NOTE: the thread may have put its last item and ended between the timeout and
        # is_alive(); only an empty queue after its end means it died without a word.
        try:
            return self._queue.get_nowait()
        except queue.Empty:
            raise RuntimeError("the video decoding thread stopped unexpectedly") from None

    def stop(self) -> None:
        """Stop decoding and wait for the thread to end."""
        self._stop.set()
        self._thread.join(timeout=5.0)


def _model_identity(classifier: Classifier) -> ModelCard | str:
    """The classifier's card (recorded with its hash), or its name when it has none."""
    card: ModelCard | None = getattr(classifier, "card", None)
    if card is not None:
        return card
    return str(getattr(classifier, "name", type(classifier).__name__))


def analyze_video(
    path: Path | str,
    sessions_dir: Path | str,
    candidate: str,
    every: int = 1,
    tta: bool = False,
    classifier: Classifier | None = None,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    config: PipelineConfig | None = None,
    notes: str = "",
    model_name: str | None = None,
    thresholds: dict[str, Any] | None = None,
    batch_frames: int = BATCH_FRAMES,
) -> AnalysisResult:
    """Run the pipeline on every `every`-th frame of a video and record a session.

    classifier: defaults to load_classifier(model_name). tta (or config.tta): also classify
    mirror images. progress(done_frames, total_frames, eta_s) is called after each batch
    (total_frames is 0 when unknown, and may be an estimate until the end: MKV/WebM) and, when
    the file was read to its end, once more with done == total. cancel: set it to stop
    early (the partial session is kept, marked incomplete). Raises VideoError when the file
    cannot be read at all (no session is created then), ModelError for a bad model.
    """
    from emotion_core.sessions import SessionError, SessionRecorder

    path = Path(path)
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    info = probe_video(path)
    if classifier is None:
        from emotion_core.inference import load_classifier

        classifier = load_classifier(model_name)
    model = _model_identity(classifier)
    config = config or PipelineConfig()
    config = replace(config, tta=tta or config.tta)
    pipeline = EmotionPipeline.from_config(classifier, config)
    start = time.perf_counter()
    decoder = _Decoder(path, every, max(1, batch_frames), pipeline.find_faces)
    chunks = decoder.chunks()
    recorder = None
    frames = faces = done = 0
    last_t = 0.0
    reported = (0, 0)
    complete, message = True, ""
    try:
        chunk = next(chunks, None)  # raises VideoError when not a single frame decodes
        recorder = SessionRecorder.for_model(
            sessions_dir,
            model=model,
            candidate=candidate,
            notes=notes,
            source=path.name,
            thresholds=thresholds,
            pipeline={**asdict(config), "every": every},
        )
        while chunk is not None:
            if cancel is not None and cancel.is_set():
                complete, message = False, f"cancelled after {frames} analysed frames"
                break
            batch, found = chunk
            results = pipeline.finish_batch(
                found,
                [f.t_s for f in batch],
                [f.frame_index for f in batch],
                [f.size for f in batch],
            )
            for result in results:
                recorder.add_frame(result)
                faces += len(result.faces)
            frames += len(results)
            done = batch[-1].frame_index + 1
            last_t = batch[-1].t_s
            if progress is not None:
                total = max(info.frame_count, done) if info.frame_count else 0
                progress(done, total, _eta(start, done, total))
                reported = (done, total)
            try:
                chunk = next(chunks, None)
            except VideoError as exc:
                complete, message = False, f"partial session kept: {exc}"
                break
    except BaseException:
        decoder.stop()
        if recorder is not None:
            with contextlib.suppress(SessionError):  # keep the original error
                recorder.close(complete=False)
        raise
    decoder.stop()
    if complete and progress is not None:
        # the true count: the container's may be an estimate (VFR MKV/WebM), and --every may
        # have skipped the tail
        end = decoder.file_frames or max(info.frame_count, done)
        if reported != (end, end):
            progress(end, end, 0.0)
    session_dir = recorder.close(complete=complete)
    wall = time.perf_counter() - start
    video_s = _video_seconds(info, complete, done, last_t)
    if faces == 0 and frames > 0:
        extra = f"no face was found in {frames} analysed frames (rows recorded with face_id=-1)"
        message = f"{message}; {extra}" if message else extra
    if not message:
        message = f"analysed {frames} frames, {faces} face detections"
    return AnalysisResult(
        session_dir=session_dir,
        frames=frames,
        faces=faces,
        video_seconds=video_s,
        wall_seconds=wall,
        speed=video_s / wall if wall > 0 else 0.0,
        complete=complete,
        message=message,
    )


def warm_up(classifier: Classifier, size: int = 48) -> None:
    """Run the classifier once on a batch so its compiled call is traced before timing."""
    classifier.predict(np.zeros((BATCH_FRAMES, size, size, 1), np.float32))


def _eta(start: float, done: int, total: int) -> float:
    """Seconds left, extrapolated from the pace so far (0 when unknown)."""
    if done <= 0 or total <= done:
        return 0.0
    return (time.perf_counter() - start) / done * (total - done)


def _video_seconds(info: VideoInfo, complete: bool, done: int, last_t: float) -> float:
    """Length of video covered: the whole file when complete, else up to the last frame."""
    step = 1.0 / info.fps if info.fps > 0 else 0.0
    if complete and info.duration_s > 0:
        return max(info.duration_s, last_t + step)
    return last_t + step if done else 0.0


def _stderr_progress() -> ProgressFn:
    last = [0.0]

    def report(done: int, total: int, eta_s: float) -> None:
        now = time.monotonic()
        if now - last[0] < 0.5 and done < total:
            return
        last[0] = now
        of = f"/{total}" if total else ""
        print(f"frames {done}{of}  eta {eta_s:.1f} s", file=sys.stderr, flush=True)

    return report


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 with `error: ...` on bad input)."""
    quiet_native_logs()
    parser = argparse.ArgumentParser(
        prog="python -m emotion_core.analyze_video",
        description="Analyse a recorded video into a session.",
    )
    parser.add_argument("video", type=Path, help="video file (any format OpenCV/FFmpeg reads)")
    parser.add_argument("--out", type=Path, help="sessions folder (default: the app's)")
    parser.add_argument("--candidate", help="candidate name (default: the file name)")
    parser.add_argument("--notes", default="", help="free-text notes stored with the session")
    parser.add_argument("--every", type=int, default=1, help="analyse one frame in N")
    parser.add_argument("--tta", action="store_true", help="average each face with its mirror")
    parser.add_argument("--model", help="registered model name (default: the registry default)")
    args = parser.parse_args(argv)
    from emotion_core.sessions import SessionError, sessions_dir_default

    try:
        if args.every < 1:
            raise ValueError("--every must be >= 1")
        start = time.perf_counter()
        from emotion_core.inference import load_classifier

        probe_video(args.video)  # fail fast on a bad file before loading the model
        classifier = load_classifier(args.model)
        warm_up(classifier)
        print(
            f"model {classifier.name} loaded in {time.perf_counter() - start:.1f} s",
            file=sys.stderr,
        )
        result = analyze_video(
            args.video,
            args.out or sessions_dir_default(),
            args.candidate or args.video.stem,
            every=args.every,
            tta=args.tta,
            classifier=classifier,
            progress=_stderr_progress(),
            notes=args.notes,
        )
    except (ModelError, VideoError, DetectorError, SessionError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    if not result.complete:
        print(f"warning: session incomplete: {result.message}", file=sys.stderr)
    else:
        print(result.message, file=sys.stderr)
    print(
        f"session={result.session_dir} frames={result.frames} faces={result.faces} "
        f"speed={result.speed:.1f}x"
    )
    return 0 if result.complete else 1


if __name__ == "__main__":
    sys.exit(main())
