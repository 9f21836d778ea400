"""Face detection and the box/crop steps of the pipeline.

Boxes are ``(x, y, w, h)`` int tuples in full-frame pixel coordinates
(``emotion_core.results.Box``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from emotion_core.preprocess import to_gray
from emotion_core.results import Box

HAAR_FRONTALFACE = "haarcascade_frontalface_default.xml"


class DetectorError(Exception):
    """The face detector could not be created (e.g. missing cascade file)."""


class FaceDetector(Protocol):
    """Anything that finds faces: frame (H, W, 3) uint8 BGR -> list of (x, y, w, h) boxes."""

    def __call__(self, frame_bgr: np.ndarray) -> list[Box]:
        """frame (H, W, 3) uint8 BGR -> boxes (x, y, w, h) in frame pixels, in any order."""
        ...


def haar_cascade_path(name: str = HAAR_FRONTALFACE) -> Path:
    """Path of one of OpenCV's bundled Haar cascade XML files; DetectorError on a build that
    ships none (OpenCV 5 removed them)."""
    folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
    if not folder:
        raise DetectorError(
            f"OpenCV {cv2.__version__} ships no Haar cascades; install opencv-python-headless<5"
        )
    return Path(folder) / name


class HaarFaceDetector:
    """OpenCV Haar cascade run on a downscaled gray copy of the frame.

    detect_width: the frame is shrunk to this width before detection (0 or a width >= the
    frame's width detects at full size); boxes are mapped back to full-frame coordinates.
    min_face_px: smallest face side, in full-frame pixels.
    roi_grow, roi_face_px: settings of detect_near (re-finding known faces cheaply).
    """

    def __init__(
        self,
        detect_width: int = 320,
        scale_factor: float = 1.2,
        min_neighbors: int = 5,
        min_face_px: int = 48,
        cascade_path: Path | None = None,
        roi_grow: float = 1.6,
        roi_face_px: int = 36,
    ) -> None:
        if scale_factor <= 1.0:
            raise ValueError(f"scale_factor must be > 1, got {scale_factor}")
        path = Path(cascade_path) if cascade_path is not None else haar_cascade_path()
        if not hasattr(cv2, "CascadeClassifier"):
            raise DetectorError("this OpenCV build has no CascadeClassifier (use opencv 4.x)")
        if not path.exists():
            raise DetectorError(f"{path}: Haar cascade file not found")
        self.cascade = cv2.CascadeClassifier(str(path))
        if self.cascade.empty():
            raise DetectorError(f"{path}: not a loadable Haar cascade")
        self.detect_width = int(detect_width)
        self.scale_factor = float(scale_factor)
        self.min_neighbors = int(min_neighbors)
        self.min_face_px = int(min_face_px)
        self.roi_grow = float(roi_grow)
        self.roi_face_px = int(roi_face_px)

    def __call__(self, frame_bgr: np.ndarray) -> list[Box]:
        """frame (H, W, 3) BGR or (H, W) gray uint8 -> boxes (x, y, w, h) in frame pixels."""
        width = frame_bgr.shape[1]
        scale = self.detect_width / width if 0 < self.detect_width < width else 1.0
        gray, scale = shrink(to_gray(frame_bgr), scale)
        min_side = max(1, round(self.min_face_px * scale))
        found = self.cascade.detectMultiScale(
            gray,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(min_side, min_side),
        )
        return _to_boxes(found, 1.0 / scale, 0, 0)

    def detect_near(self, frame_bgr: np.ndarray, previous: Sequence[Box]) -> list[Box]:
        """Look for faces only around previous boxes (much cheaper than a full scan).

        Each region is the previous box grown to roi_grow times its side, shrunk so that the
        face is about roi_face_px wide, and searched for faces 0.7-1.4 times the previous
        size. frame (H, W, 3) BGR -> at most one box per previous box, overlaps removed.
        """
        height, width = frame_bgr.shape[:2]
        found: list[Box] = []
        for x, y, w, h in previous:
            side = max(w, h, 1)
            half = side * self.roi_grow / 2.0
            cx, cy = x + w / 2.0, y + h / 2.0
            x0, y0 = max(0, round(cx - half)), max(0, round(cy - half))
            x1, y1 = min(width, round(cx + half)), min(height, round(cy + half))
            if x1 - x0 < 2 or y1 - y0 < 2:
                continue
            roi, scale = shrink(to_gray(frame_bgr[y0:y1, x0:x1]), self.roi_face_px / side)
            face = side * scale
            min_side = max(1, round(0.7 * face))
            if min(roi.shape) < min_side:
                continue
            hits = self.cascade.detectMultiScale(
                roi,
                scaleFactor=self.scale_factor,
                minNeighbors=self.min_neighbors,
                minSize=(min_side, min_side),
                maxSize=(round(1.4 * face) + 1,) * 2,
            )
            boxes = _to_boxes(hits, 1.0 / scale, x0, y0)
            if boxes:
                best = min(
                    boxes, key=lambda b: abs(b[0] + b[2] / 2 - cx) + abs(b[1] + b[3] / 2 - cy)
                )
                if all(_overlap(best, other) < 0.3 for other in found):
                    found.append(best)
        return found


def shrink(gray: np.ndarray, scale: float) -> tuple[np.ndarray, float]:
    """Downscale a (H, W) image by about `scale` (<= 1; larger values leave it as is).

    Uses OpenCV's fast integer-factor area averaging, then a bilinear step for the rest.
    Returns the image and the exact scale applied (new width / old width).
    """
    height, width = gray.shape[:2]
    if scale >= 1.0:
        return gray, 1.0
    target = (max(1, round(width * scale)), max(1, round(height * scale)))
    factor = int(1.0 / scale)
    if factor >= 2 and width >= factor and height >= factor:
        # Whole multiples of the factor take OpenCV's fast integer area-averaging path.
        fw, fh = width // factor, height // factor
        gray = cv2.resize(
            gray[: fh * factor, : fw * factor], (fw, fh), interpolation=cv2.INTER_AREA
        )
    if gray.shape[1] != target[0] or gray.shape[0] != target[1]:
        gray = cv2.resize(gray, target, interpolation=cv2.INTER_LINEAR)
    return gray, target[0] / width


def _to_boxes(found: Any, inv_scale: float, dx: int, dy: int) -> list[Box]:
    """detectMultiScale output (K, 4) at a scale -> full-frame boxes offset by (dx, dy)."""
    if len(found) == 0:
        return []
    return [
        (
            round(x * inv_scale) + dx,
            round(y * inv_scale) + dy,
            round(w * inv_scale),
            round(h * inv_scale),
        )
        for x, y, w, h in np.asarray(found).tolist()
    ]


def _overlap(a: Box, b: Box) -> float:
    """Intersection over the smaller box's area (0-1)."""
    iw = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    ih = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    return iw * ih / max(1, min(a[2] * a[3], b[2] * b[3]))


def square_box(box: Box, margin: float = 0.0) -> Box:
    """The square box around a box's centre (side = max(w, h) * (1 + margin)), not clipped: it
    may reach outside the frame."""
    x, y, w, h = box
    side = max(w, h) * (1.0 + margin)
    cx, cy = x + w / 2.0, y + h / 2.0
    return (round(cx - side / 2.0), round(cy - side / 2.0), round(side), round(side))


def square_and_clip(box: Box, frame_shape: Sequence[int], margin: float = 0.0) -> Box:
    """Make a box square around its centre (side = max(w, h) * (1 + margin)), then clip it.

    frame_shape: (H, W, ...) of the frame. The result lies inside the frame; it stays square
    unless the frame edge cuts it. A box wholly outside the frame gets w = h = 0.
    """
    height, width = int(frame_shape[0]), int(frame_shape[1])
    x0, y0, side, _ = square_box(box, margin)
    x1, y1 = x0 + side, y0 + side
    x0, y0 = min(max(x0, 0), width), min(max(y0, 0), height)
    x1, y1 = min(max(x1, 0), width), min(max(y1, 0), height)
    return (x0, y0, max(0, x1 - x0), max(0, y1 - y0))


def crop(frame: np.ndarray, box: Box) -> np.ndarray:
    """The (h, w, ...) view of frame inside box (no copy); box must already be clipped."""
    x, y, w, h = box
    return frame[y : y + h, x : x + w]


def crop_square(frame: np.ndarray, box: Box, margin: float = 0.0) -> np.ndarray:
    """The square crop (s, s, ...) of box made square (see square_box), with the part outside the
    frame filled by repeating the edge pixels (cv2.BORDER_REPLICATE), so a face cut by the frame
    edge keeps its aspect instead of being stretched later. A view when it lies inside the frame;
    (0, 0, ...) when it misses the frame entirely."""
    height, width = frame.shape[:2]
    x, y, side, _ = square_box(box, margin)
    x0, y0 = min(max(x, 0), width), min(max(y, 0), height)
    x1, y1 = min(max(x + side, 0), width), min(max(y + side, 0), height)
    if x1 <= x0 or y1 <= y0:
        return frame[0:0, 0:0]
    inside = frame[y0:y1, x0:x1]
    top, left = y0 - y, x0 - x
    bottom, right = y + side - y1, x + side - x1
    if top == left == bottom == right == 0:
        return inside
    return cv2.copyMakeBorder(inside, top, bottom, left, right, cv2.BORDER_REPLICATE)


def largest(boxes: Sequence[Box], max_faces: int) -> list[Box]:
    """The max_faces largest boxes by area (all of them when max_faces <= 0), largest first."""
    ordered = sorted(boxes, key=lambda b: b[2] * b[3], reverse=True)
    return ordered if max_faces <= 0 else ordered[:max_faces]
