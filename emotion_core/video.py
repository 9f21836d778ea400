"""Decoding recorded video files with OpenCV (FFmpeg backend): frames with real timestamps.

Timestamps come from the container (CAP_PROP_POS_MSEC), so variable-frame-rate files keep
their true timing; they are forced to increase strictly. Rotation metadata (phones) is applied.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np

# cv2.rotate codes for the clockwise rotation a player applies for each metadata angle.
_ROTATE_CODES: dict[int, int] = {
    90: cv2.ROTATE_90_CLOCKWISE,
    180: cv2.ROTATE_180,
    270: cv2.ROTATE_90_COUNTERCLOCKWISE,
}


class VideoError(Exception):
    """A video file is missing, unreadable, not a video, or truncated/corrupt.

    The message names the file. partial is True when some frames were decoded before the
    error (frames_decoded of them; the caller may keep what it got).
    """

    def __init__(self, message: str, path: Path, frames_decoded: int = 0) -> None:
        super().__init__(message)
        self.path = Path(path)
        self.frames_decoded = frames_decoded

    @property
    def partial(self) -> bool:
        """True when some frames were decoded before the error."""
        return self.frames_decoded > 0


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video (width/height after rotation).

    frame_count is the container's count or, for MKV/WebM, an estimate (duration x fps, off
    for variable-frame-rate files); 0 when unknown. duration_s likewise.
    """

    path: Path
    width: int
    height: int
    fps: float
    frame_count: int
    duration_s: float
    rotation: int
    codec: str


class DecodedFrame(NamedTuple):
    """One decoded frame: index in the file, time in seconds, (H, W, 3) uint8 BGR pixels."""

    frame_index: int
    t_s: float
    frame_bgr: np.ndarray


@contextlib.contextmanager
def _quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's own warnings (e.g. on files it cannot open) within the block."""
    try:
        level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except AttributeError:  # very old builds lack the logging bindings
        yield
        return
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(level)


def _fourcc(value: float) -> str:
    code = int(value)
    chars = "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4))
    return chars if chars.isprintable() else ""


def open_video(path: Path | str) -> tuple[Any, VideoInfo, int]:
    """Open a file with cv2.VideoCapture (FFmpeg backend).

    Returns (capture, info, manual_rotation): manual_rotation is the angle still to apply to
    each frame (0 when OpenCV rotates frames itself). Raises VideoError naming the file.
    """
    path = Path(path)
    if not path.exists():
        raise VideoError(f"{path}: file not found", path)
    if path.is_dir():
        raise VideoError(f"{path}: is a directory, not a video file", path)
    with _quiet_opencv():
        try:
            cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        except cv2.error as exc:
            raise VideoError(f"{path}: cannot be opened as a video ({exc})", path) from exc
    if not cap.isOpened():
        raise VideoError(
            f"{path}: cannot be opened as a video (not a video file, an unsupported format, "
            "or a truncated/corrupt file)",
            path,
        )
    rotation = int(cap.get(cv2.CAP_PROP_ORIENTATION_META)) % 360
    cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)
    auto = bool(cap.get(cv2.CAP_PROP_ORIENTATION_AUTO))
    manual = 0 if auto or rotation not in _ROTATE_CODES else rotation
    width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    if manual in (90, 270):
        width, height = height, width
    fps = float(cap.get(cv2.CAP_PROP_FPS))
    fps = fps if math.isfinite(fps) and 0 < fps < 1000 else 0.0
    count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
    count = int(count) if math.isfinite(count) and 0 < count < 1e9 else 0
    duration = count / fps if fps > 0 else 0.0
    info = VideoInfo(
        path,
        width,
        height,
        fps,
        count,
        duration,
        rotation,
        _fourcc(cap.get(cv2.CAP_PROP_FOURCC)),
    )
    return cap, info, manual


def probe_video(path: Path | str) -> VideoInfo:
    """Size, frame rate, frame count and rotation of a video file (raises VideoError)."""
    cap, info, _ = open_video(path)
    cap.release()
    return info


def _is_truncated(decoded: int, expected: int, end_s: float, duration_s: float) -> bool:
    """True when clearly fewer frames were decoded than the container announced AND decoding
    stopped clearly before its duration (end_s: end of the last decoded frame).

    MKV/WebM store no frame count: OpenCV estimates it as duration x nominal fps, which a
    variable-frame-rate file (e.g. a browser recording) may fall far short of in full.
    """
    if expected <= 0 or decoded >= expected - max(2, round(0.05 * expected)):
        return False
    return duration_s <= 0 or end_s < duration_s - max(0.5, 0.05 * duration_s)


def iter_frames(
    path: Path | str, every: int = 1, max_frames: int | None = None
) -> Generator[DecodedFrame, None, int]:
    """Decode a file frame by frame: yields DecodedFrame(frame_index, t_s, frame_bgr).

    every: yield one frame in every (the others are skipped without colour conversion; indices
    and timestamps stay those of the file). max_frames: stop after this many file frames.
    t_s strictly increases. Raises VideoError (with frames_decoded set, .partial True) when the
    file ends early or breaks off mid-way; frames yielded before that are valid. Returns (as
    the generator's value) the number of file frames read, skipped ones included.
    """
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    cap, info, manual = open_video(path)
    path = info.path
    step = 1.0 / info.fps if info.fps > 0 else 1.0 / 30.0
    index = 0
    yielded = 0
    prev_t = -math.inf
    try:
        while max_frames is None or index < max_frames:
            want = index % every == 0
            try:
                ok = cap.grab()
                frame = cap.retrieve()[1] if ok and want else None
            except cv2.error as exc:
                raise VideoError(
                    f"{path}: decoding failed at frame {index} ({exc})", path, yielded
                ) from exc
            if not ok or (want and frame is None):
                break
            t_s = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            if not math.isfinite(t_s) or t_s < 0 or (index > 0 and t_s == 0.0):
                t_s = index * step
            if t_s <= prev_t:
                t_s = prev_t + step
            prev_t = t_s
            if frame is not None:
                if manual:
                    frame = cv2.rotate(frame, _ROTATE_CODES[manual])
                yield DecodedFrame(index, t_s, frame)
                yielded += 1
            index += 1
    finally:
        cap.release()
    if index == 0:
        raise VideoError(f"{path}: no frame could be decoded (corrupt or not a video)", path)
    read_to_end = max_frames is None or index < max_frames
    if read_to_end and _is_truncated(index, info.frame_count, prev_t + step, info.duration_s):
        raise VideoError(
            f"{path}: video is truncated or corrupt: decoded {index} of {info.frame_count} "
            f"frames ({prev_t:.2f} s)",
            path,
            yielded,
        )
    return index


def read_frames(
    path: Path | str, max_frames: int | None = None, every: int = 1
) -> tuple[VideoInfo, list[DecodedFrame]]:
    """Decode a whole file into memory (raises VideoError, including for truncated files)."""
    info = probe_video(path)
    return info, list(iter_frames(path, every=every, max_frames=max_frames))
