"""FER-2013 loaders: the original CSV (plain or .gz) and the class-folder layout.

Both give a `Dataset` of (N, 48, 48) uint8 images and (N,) int labels in CLASSES order.
Parsed CSVs are cached as .npz keyed on the source file's size and mtime (in nanoseconds).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import itertools
import logging
import os
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from emotion_core.classes import CLASSES, canonical_class

log = logging.getLogger(__name__)

USAGES: tuple[str, ...] = ("Training", "PublicTest", "PrivateTest")
SPLIT_ALIASES: dict[str, str] = {
    "training": "Training",
    "train": "Training",
    "publictest": "PublicTest",
    "val": "PublicTest",
    "valid": "PublicTest",
    "validation": "PublicTest",
    "privatetest": "PrivateTest",
    "test": "PrivateTest",
}
FOLDER_NAMES: dict[str, tuple[str, ...]] = {
    "Training": ("train", "training", "Training"),
    "PublicTest": ("val", "validation", "valid", "publictest", "PublicTest"),
    "PrivateTest": ("test", "privatetest", "PrivateTest"),
}
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm"}
PIXELS = 48 * 48
CACHE_DIR = Path(os.environ.get("EMOTION_CACHE_DIR", Path.home() / ".cache" / "emotion_core"))


class DataError(Exception):
    """A dataset file or folder is missing or malformed (the message names it and the problem)."""


@dataclass(frozen=True)
class Dataset:
    """images: (N, 48, 48) uint8; labels: (N,) int64 indices into CLASSES."""

    images: np.ndarray
    labels: np.ndarray
    source: str
    split: str
    skipped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(len(self.labels))

    def class_counts(self) -> dict[str, int]:
        """Number of images per class, in CLASSES order."""
        counts = np.bincount(self.labels, minlength=len(CLASSES))
        return {name: int(c) for name, c in zip(CLASSES, counts, strict=True)}


def canonical_split(split: str) -> str:
    """'train'/'val'/'test' and friends -> 'Training'/'PublicTest'/'PrivateTest'."""
    key = split.strip().lower()
    if key in SPLIT_ALIASES:
        return SPLIT_ALIASES[key]
    raise DataError(f"unknown split {split!r}: use one of {', '.join(USAGES)} (or train/val/test)")


# ---------------------------------------------------------------- CSV


def parse_pixels(pixels: Iterable[str], source: str, first_line: int = 2) -> np.ndarray:
    """Parse pixel strings of 2,304 integers 0-255 -> (N, 48, 48) uint8; DataError on a bad row,
    naming its line in the file (first_line: the line of the first string; 2 below a header)."""
    out = []
    for i, text in enumerate(pixels):
        where = f"{source}: line {first_line + i}"
        try:
            values = np.array(str(text).split(), dtype=np.int64)
        except (ValueError, OverflowError) as exc:
            raise DataError(f"{where}: pixels are not integers from 0 to 255") from exc
        if values.size != PIXELS:
            raise DataError(f"{where}: pixels has {values.size} values, expected {PIXELS}")
        if values.min() < 0 or values.max() > 255:
            raise DataError(f"{where}: pixel values outside 0-255")
        out.append(values.astype(np.uint8))
    if not out:
        return np.zeros((0, 48, 48), np.uint8)
    return np.stack(out).reshape(-1, 48, 48)


def _cache_path(path: Path) -> Path:
    stat = path.stat()
    # st_mtime_ns, not whole seconds: a same-size rewrite within a second must not be served stale
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    return CACHE_DIR / f"fer-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"


def _csv_line(row: int) -> int:
    """The line of data row `row` (0-based) in a CSV file with one header line, as an editor or
    a spreadsheet numbers it (assumes no quoted line breaks, which FER-2013 files never have)."""
    return row + 2


def _raw_row(path: Path, row: int) -> tuple[int, int]:
    """The line number and the number of fields of data row `row` (0-based; blank lines are
    skipped, as pandas does) of a CSV file with one header line, read as written."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt", newline="", errors="replace") as fh:
        reader = csv.reader(fh)
        next(reader, None)  # the header
        data_rows = (fields for fields in reader if fields)
        fields = next(itertools.islice(data_rows, row, None), [])
        return reader.line_num, len(fields)


def _check_no_truncated_row(path: Path, frame: pd.DataFrame) -> None:
    """DataError naming the line of the first row with fewer fields than the header (a file cut
    off mid-row, say): pandas fills such a row with NaN, which would otherwise be reported as
    a bad emotion or Usage. A row whose fields are there but empty is left to those checks."""
    holes = frame[["emotion", "pixels", "Usage"]].isna().any(axis=1).to_numpy()
    if not holes.any():
        return
    row = int(np.flatnonzero(holes)[0])
    try:
        line, fields = _raw_row(path, row)
    except (OSError, EOFError, csv.Error):  # the checks that follow still name the row
        return
    expected = len(frame.columns)
    if fields >= expected:
        return
    pixels = frame["pixels"].iloc[row]
    count = 0 if pd.isna(pixels) else len(str(pixels).split())
    cut = f"; {count} pixels, expected {PIXELS}" if 0 < count != PIXELS else ""
    raise DataError(
        f"{path}: line {line}: truncated row (expected {expected} fields "
        f"{','.join(map(str, frame.columns))}, found {fields}{cut})"
    )


def _parse_csv(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Whole CSV -> images (N,48,48) uint8, labels (N,), usage (N,) str."""
    try:
        frame = pd.read_csv(path, dtype={"pixels": str, "Usage": str})
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, EOFError) as exc:
        raise DataError(f"{path}: cannot read CSV ({exc})") from exc
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path}: file is empty") from exc
    # Kaggle's icml_face_data.csv has the header "emotion, Usage, pixels"
    frame.columns = [str(c).strip() for c in frame.columns]
    if frame.columns.duplicated().any():
        raise DataError(f"{path}: repeated column names {', '.join(map(str, frame.columns))}")
    missing = [c for c in ("emotion", "pixels", "Usage") if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)}; expected emotion,pixels,Usage"
        )
    if len(frame) == 0:
        raise DataError(f"{path}: no data rows")
    _check_no_truncated_row(path, frame)
    labels = pd.to_numeric(frame["emotion"], errors="coerce")
    bad = labels.isna() | (labels < 0) | (labels >= len(CLASSES)) | (labels % 1 != 0)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            f"{path}: line {_csv_line(row)}: emotion must be an integer 0-6, "
            f"got {frame['emotion'][row]!r}"
        )
    usage = frame["Usage"].astype(str).str.strip()
    unknown = ~usage.isin(USAGES)
    if unknown.any():
        row = int(np.flatnonzero(unknown.to_numpy())[0])
        raise DataError(
            f"{path}: line {_csv_line(row)}: unknown Usage {usage[row]!r}; "
            f"expected {', '.join(USAGES)}"
        )
    images = parse_pixels(frame["pixels"].fillna(""), str(path))
    return images, labels.to_numpy(np.int64), usage.to_numpy(dtype=str)


def load_fer_csv(path: Path | str, split: str = "Training", use_cache: bool = True) -> Dataset:
    """Load one Usage split of a FER-2013 CSV (emotion,pixels,Usage; plain or .gz)."""
    path = Path(path)
    usage_name = canonical_split(split)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    cache = _cache_path(path) if use_cache else None
    if cache is not None and cache.exists():
        with np.load(cache) as data:
            images, labels, usage = data["images"], data["labels"], data["usage"]
    else:
        images, labels, usage = _parse_csv(path)
        if cache is not None:
            try:
                cache.parent.mkdir(parents=True, exist_ok=True)
                tmp = cache.with_name(cache.stem + f".{os.getpid()}.tmp.npz")
                np.savez(tmp, images=images, labels=labels, usage=usage)
                os.replace(tmp, cache)
            except OSError as exc:  # a read-only home or full disk must not stop loading
                log.warning("could not write cache %s: %s", cache, exc)
    mask = usage == usage_name
    if not mask.any():
        raise DataError(f"{path}: no rows with Usage={usage_name}")
    return Dataset(images[mask], labels[mask], str(path), usage_name)


# ---------------------------------------------------------------- folders


def _split_dir(root: Path, split: str) -> Path:
    usage_name = canonical_split(split)
    for child in sorted(p for p in root.iterdir() if p.is_dir()):
        if child.name.lower() in {n.lower() for n in FOLDER_NAMES[usage_name]}:
            return child
    if any(canonical_class(p.name) for p in root.iterdir() if p.is_dir()):
        return root  # the root holds class folders directly
    names = ", ".join(FOLDER_NAMES[usage_name])
    raise DataError(f"{root}: no sub-folder for split {usage_name} (looked for {names})")


def read_gray_image(path: Path) -> np.ndarray | None:
    """Decode an image file to 48x48 uint8 gray, or None if it cannot be decoded."""
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE) if data.size else None
    if image is None:
        return None
    if image.shape != (48, 48):
        image = cv2.resize(image, (48, 48), interpolation=cv2.INTER_AREA)
    return image


def load_folder(root: Path | str, split: str = "Training", skip_bad: bool = True) -> Dataset:
    """Load <root>/<split>/<class>/*.{jpg,png,...} (or <root>/<class>/* when there are no splits).

    Class folders match case-insensitively with synonyms; other classes are skipped with a warning
    that says how many. Undecodable images are skipped and counted (skip_bad) or raise DataError.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found")
    split_dir = _split_dir(root, split)
    images: list[np.ndarray] = []
    labels: list[int] = []
    skipped: dict[str, int] = {}
    for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        files = [
            f
            for f in sorted(class_dir.iterdir())
            if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file()  # not a folder "x.png"
        ]
        name = canonical_class(class_dir.name)
        if name is None:
            skipped[f"class:{class_dir.name}"] = len(files)
            log.warning("%s: skipped %d images of unknown class", class_dir, len(files))
            continue
        for file in files:
            image = read_gray_image(file)
            if image is None:
                if not skip_bad:
                    raise DataError(f"{file}: cannot decode image")
                skipped["undecodable"] = skipped.get("undecodable", 0) + 1
                continue
            images.append(image)
            labels.append(CLASSES.index(name))
    if not images:
        raise DataError(f"{split_dir}: no images in any known class folder ({', '.join(CLASSES)})")
    if skipped.get("undecodable"):
        log.warning("%s: skipped %d undecodable images", split_dir, skipped["undecodable"])
    return Dataset(
        np.stack(images), np.array(labels, np.int64), str(root), canonical_split(split), skipped
    )


LOSSLESS = 101  # the WebP quality that OpenCV takes for lossless encoding


def load_npz(path: Path | str, split: str = "Training") -> Dataset:
    """Load a split from a compact .npz pack (images (N,48,48) uint8, labels (N,), usage (N,))."""
    path = Path(path)
    usage_name = canonical_split(split)
    try:
        with np.load(path) as data:
            labels, usage = data["labels"], data["usage"].astype(str)
            if "images" in data:
                images = data["images"]
            else:  # compact pack: WebP bytes + offsets
                images = _decode_all(data["encoded"], data["offsets"])
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a dataset pack with images, labels, usage ({exc})") from exc
    problem = _pack_problem(images, labels, usage)
    if problem:
        raise DataError(f"{path}: not a usable dataset pack ({problem})")
    mask = usage == usage_name
    if not mask.any():
        raise DataError(f"{path}: no rows with Usage={usage_name}")
    return Dataset(images[mask], labels[mask].astype(np.int64), str(path), usage_name)


def _pack_problem(images: np.ndarray, labels: np.ndarray, usage: np.ndarray) -> str:
    """Why a pack's arrays do not fit together ("" when they do)."""
    if images.ndim != 3 or images.shape[1:] != (48, 48):
        return f"images have shape {images.shape}, expected (N, 48, 48)"
    if not len(images) == len(labels) == len(usage):
        return f"{len(images)} images, {len(labels)} labels and {len(usage)} usages"
    if labels.size and not (np.issubdtype(labels.dtype, np.integer) and labels.min() >= 0):
        return "labels must be whole numbers from 0"
    if labels.size and labels.max() >= len(CLASSES):
        return f"label {int(labels.max())} is not one of the {len(CLASSES)} classes 0-6"
    return ""


def _decode_all(encoded: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    images = np.empty((len(offsets) - 1, 48, 48), np.uint8)
    for i in range(len(images)):
        image = cv2.imdecode(encoded[offsets[i] : offsets[i + 1]], cv2.IMREAD_GRAYSCALE)
        if image is None or image.shape != (48, 48):
            raise ValueError(f"image {i} of the pack cannot be decoded")
        images[i] = image
    return images


def pack_npz(
    source: Path | str,
    out: Path | str,
    splits: Iterable[str] = USAGES,
    compact: bool = False,
    training_quality: int = LOSSLESS,
) -> Path:
    """Write the given splits of any supported dataset into one .npz pack.

    compact=True stores each image as WebP (~1.6 kB each lossless, ~53 MB for FER-2013's
    train+val, small enough to carry to a GPU box); otherwise raw pixels, zlib-compressed.
    training_quality < 101 stores the Training split's images as lossy WebP at that quality
    (95: ~1.1 kB each, 45 dB PSNR) to make room for other things in a device call; the other
    splits stay lossless, so accuracy measured on them is exact.
    """
    parts = []
    for split in splits:
        try:
            parts.append(load_dataset(source, split))
        except DataError:
            continue
    if not parts:
        raise DataError(f"{source}: none of the splits {list(splits)} could be loaded")
    columns: dict[str, Any] = {
        "labels": np.concatenate([p.labels for p in parts]).astype(np.uint8),
        "usage": np.concatenate([np.full(len(p), p.split) for p in parts]),
    }
    if not compact:
        images = np.concatenate([p.images for p in parts])
        np.savez_compressed(Path(out), images=images, **columns)
        return Path(out)
    blobs = [
        cv2.imencode(".webp", im, [cv2.IMWRITE_WEBP_QUALITY, quality])[1]
        for p in parts
        for quality in [training_quality if p.split == "Training" else LOSSLESS]
        for im in p.images
    ]
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    np.savez(Path(out), encoded=np.concatenate(blobs).ravel(), offsets=offsets, **columns)
    return Path(out)


CSV_SUFFIXES: tuple[str, ...] = (".csv", ".csv.gz")
PREFERRED_CSV_NAMES: tuple[str, ...] = ("fer2013.csv", "fer2013.csv.gz")


def is_csv_name(path: Path) -> bool:
    """Whether a file name ends in .csv or .csv.gz, in any letter case (FER2013.CSV too)."""
    return path.name.lower().endswith(CSV_SUFFIXES)


def fer_csv_in_folder(folder: Path) -> Path | None:
    """The FER-2013 CSV a dataset folder stands for (one with only CSVs, or CSVs beside an
    `images/` tree, as ../shared/data/fer2013 is); None for a class-folder tree.

    Of several CSVs, the one named fer2013.csv or fer2013.csv.gz (any case) is taken;
    DataError naming the candidates when that still leaves more than one (or none).
    """
    csvs = sorted(p for p in folder.iterdir() if is_csv_name(p) and p.is_file())
    if not csvs:
        return None
    if not ((folder / "images").is_dir() or not any(p.is_dir() for p in folder.iterdir())):
        return None
    if len(csvs) == 1:
        return csvs[0]
    for wanted in PREFERRED_CSV_NAMES:  # fer2013.csv before its .gz archive when both lie there
        hits = [p for p in csvs if p.name.lower() == wanted]
        if len(hits) == 1:
            return hits[0]
        if hits:  # copies whose names differ in letter case only: which one is meant?
            break
    preferred = [p for p in csvs if p.name.lower() in PREFERRED_CSV_NAMES]
    names = ", ".join(p.name for p in (preferred or csvs))
    raise DataError(f"{folder}: several CSV files ({names}); pass the one to use as the data path")


def load_dataset(path: Path | str, split: str = "Training", skip_bad: bool = True) -> Dataset:
    """Load a split from a FER-2013 CSV, a class-folder tree or an .npz pack (by `path`)."""
    path = Path(path)
    if path.suffix.lower() == ".npz":
        return load_npz(path, split)
    if path.is_dir():
        csv = fer_csv_in_folder(path)
        return load_fer_csv(csv, split) if csv else load_folder(path, split, skip_bad)
    if is_csv_name(path):
        return load_fer_csv(path, split)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    raise DataError(f"{path}: expected a FER-2013 .csv/.csv.gz file or a folder of class folders")
