"""Per-face exponential moving average of class probabilities (steadies the on-screen label)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


class EmaSmoother:
    """smoothed = alpha * previous + (1 - alpha) * probs, kept per face id.

    alpha in [0, 1): 0 disables smoothing (smoothed == probs); larger is steadier but slower.
    """

    def __init__(self, alpha: float = 0.6) -> None:
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"alpha must be in [0, 1), got {alpha}")
        self.alpha = float(alpha)
        self._state: dict[int, np.ndarray] = {}

    def __call__(self, face_id: int, probs: np.ndarray) -> np.ndarray:
        """Smooth one face's probabilities (C,) -> (C,); the first sighting returns probs."""
        probs = np.asarray(probs, dtype=np.float64)
        prev = self._state.get(face_id)
        if self.alpha == 0.0 or prev is None or prev.shape != probs.shape:
            smoothed = probs.copy()
        else:
            smoothed = self.alpha * prev + (1.0 - self.alpha) * probs
        self._state[face_id] = smoothed
        return smoothed

    def keep_only(self, face_ids: Iterable[int]) -> None:
        """Forget faces not in face_ids (e.g. tracks the tracker dropped)."""
        keep = set(face_ids)
        for face_id in [f for f in self._state if f not in keep]:
            del self._state[face_id]

    def reset(self) -> None:
        """Forget every face."""
        self._state.clear()
