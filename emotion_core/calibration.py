"""Probability calibration: temperature scaling and expected calibration error."""

from __future__ import annotations

import numpy as np


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE with equal-width confidence bins. probs (N, C), labels (N,) int."""
    if len(labels) == 0:
        return 0.0
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        in_bin = (confidence > lo) & (confidence <= hi)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Softmax of log(probs) / T. probs (N, C) -> (N, C)."""
    logits = np.log(np.clip(probs, 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def negative_log_likelihood(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean -log p(true class). probs (N, C), labels (N,)."""
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0))))


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The temperature in [0.05, 20] minimising NLL (golden-section search on log T).
    probs (N, C), labels (N,) int."""
    lo, hi = np.log(0.05), np.log(20.0)
    ratio = (np.sqrt(5) - 1) / 2

    def loss(log_t: float) -> float:
        return negative_log_likelihood(apply_temperature(probs, float(np.exp(log_t))), labels)

    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = loss(a), loss(b)
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = loss(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = loss(b)
    return float(np.exp((lo + hi) / 2))


def choose_temperature(probs: np.ndarray, labels: np.ndarray) -> tuple[float, str]:
    """The NLL-optimal temperature when it does not make the ECE worse, else 1.0, and a
    sentence saying which was chosen and why. probs (N, C), labels (N,)."""
    fitted = fit_temperature(probs, labels)
    before = expected_calibration_error(probs, labels)
    after = expected_calibration_error(apply_temperature(probs, fitted), labels)
    if after <= before:
        return fitted, ""
    return 1.0, (
        f"The NLL-optimal temperature ({fitted:.3f}) made the 15-bin ECE worse "
        f"({before:.4f} -> {after:.4f}), so the temperature is 1.0."
    )
