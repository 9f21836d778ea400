"""The one preprocessing step shared by training, evaluation and the live pipeline."""

from __future__ import annotations

import cv2
import numpy as np

INPUT_SIZE: int = 48


def to_gray(image: np.ndarray) -> np.ndarray:
    """Return a 2-D uint8/float gray image from (H, W), (H, W, 1), (H, W, 3) BGR or (H, W, 4)."""
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    raise ValueError(f"expected a 2-D gray or 3-D BGR image, got shape {image.shape}")


def preprocess(face: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """Turn one face crop into the model's input.

    face: (H, W), (H, W, 1) or (H, W, 3) BGR, uint8 0-255 (or float already in 0-255).
    Returns (size, size, 1) float32 in [0, 1].
    """
    if face.size == 0:
        raise ValueError("empty face crop")
    gray = to_gray(face)
    if gray.dtype != np.uint8:
        gray = np.clip(gray, 0, 255).astype(np.uint8)
    if gray.shape != (size, size):
        interp = cv2.INTER_AREA if min(gray.shape) > size else cv2.INTER_LINEAR
        gray = cv2.resize(gray, (size, size), interpolation=interp)
    return (gray.astype(np.float32) / np.float32(255.0))[:, :, None]


def preprocess_batch(faces: list[np.ndarray] | np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """Preprocess many crops: returns (N, size, size, 1) float32 in [0, 1]."""
    if isinstance(faces, np.ndarray) and faces.ndim == 3 and faces.shape[1:] == (size, size):
        return (faces.astype(np.float32) / np.float32(255.0))[..., None]
    if len(faces) == 0:
        return np.zeros((0, size, size, 1), np.float32)
    return np.stack([preprocess(f, size) for f in faces])
