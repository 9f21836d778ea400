"""Frozen result types passed between the pipeline, the recorder and the pages."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emotion_core.classes import CLASSES

Box = tuple[int, int, int, int]  # x, y, w, h in full-frame pixel coordinates


@dataclass(frozen=True)
class FaceResult:
    """One face in one frame.

    probs: (7,) raw per-frame probabilities in CLASSES order (what sessions record).
    smoothed: (7,) temporally smoothed probabilities (what the display shows).
    """

    face_id: int
    box: Box
    probs: np.ndarray
    smoothed: np.ndarray

    @property
    def label(self) -> str:
        """The raw per-frame top label (recorded)."""
        return CLASSES[int(np.argmax(self.probs))]

    @property
    def display_label(self) -> str:
        """The smoothed top label (shown on screen)."""
        return CLASSES[int(np.argmax(self.smoothed))]


@dataclass(frozen=True)
class FrameResult:
    """Everything the pipeline found in one frame (faces may be empty)."""

    frame_index: int
    t_s: float
    faces: tuple[FaceResult, ...]
