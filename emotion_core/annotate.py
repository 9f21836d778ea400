"""Drawing face boxes and "label 87%" captions onto frames."""

from __future__ import annotations

import cv2
import numpy as np

from emotion_core.classes import CLASSES
from emotion_core.results import FaceResult, FrameResult

# BGR colours per class (unknown class names fall back to white).
CLASS_COLOURS: dict[str, tuple[int, int, int]] = {
    "angry": (40, 40, 230),
    "disgust": (40, 140, 60),
    "fear": (160, 60, 160),
    "happy": (40, 200, 250),
    "sad": (200, 120, 40),
    "surprise": (220, 200, 40),
    "neutral": (200, 200, 200),
}
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def caption(face: FaceResult, classes: tuple[str, ...] = CLASSES) -> str:
    """The text shown for a face: smoothed top label and its probability, e.g. "happy 87%"."""
    top = int(np.argmax(face.smoothed))
    name = classes[top] if top < len(classes) else str(top)
    return f"{name} {round(100 * float(face.smoothed[top]))}%"


def annotate(
    frame_bgr: np.ndarray,
    frame_result: FrameResult,
    inplace: bool = False,
    classes: tuple[str, ...] = CLASSES,
) -> np.ndarray:
    """Draw every face's box and caption: frame (H, W, 3) uint8 BGR -> (H, W, 3).

    Draws on a copy unless inplace is True.
    """
    out = frame_bgr if inplace else frame_bgr.copy()
    height = out.shape[0]
    thick = max(1, height // 240)
    scale = max(0.4, height / 800.0)
    for face in frame_result.faces:
        x, y, w, h = face.box
        text = caption(face, classes)
        colour = CLASS_COLOURS.get(text.rsplit(" ", 1)[0], (255, 255, 255))
        cv2.rectangle(out, (x, y), (x + w, y + h), colour, thick)
        (tw, th), base = cv2.getTextSize(text, _FONT, scale, thick)
        ty = y - 4 if y - th - base - 4 >= 0 else y + h + th + 4
        cv2.rectangle(out, (x, ty - th - 4), (x + tw + 4, ty + base), colour, cv2.FILLED)
        cv2.putText(out, text, (x + 2, ty - 2), _FONT, scale, (0, 0, 0), thick, cv2.LINE_AA)
    return out
