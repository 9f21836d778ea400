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


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Pixels of any dtype -> uint8 of the same shape: rounded to the nearest integer (halves to
    even) and clipped to [0, 255]; uint8 input is returned as is."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.bool_:
        return image.astype(np.uint8)
    if np.issubdtype(image.dtype, np.integer):
        return np.clip(image, 0, 255).astype(np.uint8)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def input_size_of(classifier: object, default: int = INPUT_SIZE) -> int:
    """The face side S a classifier takes: its card's input_size (EmotionClassifier), else
    an `input_size` attribute, else `default`."""
    card = getattr(classifier, "card", None)
    size = getattr(card, "input_size", None) or getattr(classifier, "input_size", None)
    return int(size) if isinstance(size, int | np.integer) and size > 0 else default


def preprocess(face: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """Turn one face crop into the model's input.

    face: (H, W), (H, W, 1), (H, W, 3) BGR or (H, W, 4) BGRA, uint8 0-255 (other dtypes are
    rounded and clipped to 0-255 first, see to_uint8).
    Returns (size, size, 1) float32 in [0, 1].
    """
    if face.size == 0:
        raise ValueError("empty face crop")
    gray = to_gray(to_uint8(face))
    if gray.shape != (size, size):
        interp = cv2.INTER_AREA if min(gray.shape) > size else cv2.INTER_LINEAR
        gray = cv2.resize(gray, (size, size), interpolation=interp)
    return (gray.astype(np.float32) / np.float32(255.0))[:, :, None]


def preprocess_batch(faces: list[np.ndarray] | np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """Preprocess many crops: returns (N, size, size, 1) float32 in [0, 1].

    An (N, size, size) array takes a vectorised path that gives exactly what `preprocess` gives
    each face (the same rounding and clipping of non-uint8 pixels).
    """
    if isinstance(faces, np.ndarray) and faces.ndim == 3 and faces.shape[1:] == (size, size):
        return (to_uint8(faces).astype(np.float32) / np.float32(255.0))[..., None]
    if len(faces) == 0:
        return np.zeros((0, size, size, 1), np.float32)
    return np.stack([preprocess(f, size) for f in faces])
