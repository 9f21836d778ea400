"""Synthetic datasets for tests (no real data needed)."""

from __future__ import annotations

import gzip
from pathlib import Path

import cv2
import numpy as np

from emotion_core.classes import CLASSES
from emotion_core.ferplus import FERPLUS_COLUMNS
from emotion_core.train import TrainConfig

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def synthetic_images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, 48, 48) uint8 images whose class is visible (a bright bar at a class-specific row)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(CLASSES)
    images = rng.integers(0, 60, size=(n, 48, 48), dtype=np.uint8)
    for i, label in enumerate(labels):
        row = 4 + 6 * int(label)
        images[i, row : row + 4, 8:40] = 250
    return images, labels


def write_fer_csv(path: Path, rows: list[tuple[int, np.ndarray, str]]) -> Path:
    """Write emotion,pixels,Usage rows (gzip when the name ends in .gz)."""
    lines = ["emotion,pixels,Usage"]
    lines += [f"{e},{' '.join(map(str, img.ravel()))},{u}" for e, img, u in rows]
    text = "\n".join(lines) + "\n"
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return path


def synthetic_csv(path: Path, n_train: int = 70, n_val: int = 21) -> Path:
    """A small FER-style CSV with Training and PublicTest rows."""
    tr_images, tr_labels = synthetic_images(n_train, 0)
    va_images, va_labels = synthetic_images(n_val, 1)
    rows = [(int(label), img, "Training") for img, label in zip(tr_images, tr_labels)]
    rows += [(int(label), img, "PublicTest") for img, label in zip(va_images, va_labels)]
    return write_fer_csv(path, rows)


def synthetic_folders(root: Path, per_class: int = 4, names: dict[str, str] | None = None) -> Path:
    """root/train/<class>/*.png and root/val/<class>/*.png; `names` renames class folders."""
    names = names or {}
    for split, seed in (("train", 0), ("val", 1)):
        images, labels = synthetic_images(per_class * len(CLASSES), seed)
        for i, (img, label) in enumerate(zip(images, labels)):
            folder = root / split / names.get(CLASSES[label], CLASSES[label])
            folder.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / f"{i}.png"), img)
    return root


def write_dataset(root: Path, per_class: int = 10, classes: tuple[str, ...] = CLASSES) -> Path:
    """48x48 PNGs in root/train/<class>/ and root/val/<class>/ (brightness depends on class)."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for i, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(per_class):
                image = (rng.random((48, 48)) * 60 + 20 + 25 * (i % 7)).astype(np.uint8)
                cv2.imwrite(str(folder / f"{k}.png"), image)
    return root


def tiny_config(csv: Path, **overrides: object) -> TrainConfig:
    """A one-epoch `tiny` training config on a synthetic CSV (overrides change any field)."""
    base: dict[str, object] = dict(
        data=str(csv), arch="tiny", epochs=1, batch_size=16, warmup_epochs=0, patience=0
    )
    return TrainConfig(**(base | overrides))  # type: ignore[arg-type]


FERPLUS_HEADER = "Usage,Image name," + ",".join(FERPLUS_COLUMNS)
OUR_TO_FERPLUS = {
    "angry": "anger", "disgust": "disgust", "fear": "fear", "happy": "happiness",
    "sad": "sadness", "surprise": "surprise", "neutral": "neutral",
}  # fmt: skip


def vote_row(usage: str, **votes: int) -> str:
    return ",".join([usage, "x.png", *(str(votes.get(name, 0)) for name in FERPLUS_COLUMNS)])


def write_ferplus_votes(path: Path, labels: np.ndarray, usage: str = "Training") -> Path:
    """Votes that agree with every label (8 of 10), plus a row of another split between them."""
    rows = [FERPLUS_HEADER, vote_row("PublicTest", neutral=10)]
    for label in labels:
        name = OUR_TO_FERPLUS[CLASSES[label]]
        rows.append(vote_row(usage, **{name: 8, "unknown": 2}))
    path.write_text("\n".join(rows) + "\n")
    return path
