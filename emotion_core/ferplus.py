"""FER+ soft labels (Barsoum et al. 2016): ten annotators' votes per FER-2013 face, as a
teacher file that training mixes into its targets like a distilled teacher's probabilities.

`fer2013new.csv` has one row per row of the full FER-2013 CSV, in the same order, with the same
`Usage`: votes over neutral, happiness, surprise, sadness, anger, disgust, fear, contempt,
unknown and NF (not a face). The seven FER-2013 emotions' votes, normalised, are a face's soft
label; a face with none of them (only contempt, unknown or not-a-face votes) keeps its
FER-2013 label. The file is aligned with our CSV split by split, and checked row for row against
it: a face whose FER+ majority is one of the seven must not be contradicted by more than the
real data's disagreement rate (~35%), so a shifted file fails loudly.

    python -m emotion_core.ferplus --ferplus ../shared/data/ferplus/fer2013new.csv \\
        --data ../shared/data/fer2013/fer2013.csv.gz --out .next/ferplus.npz
    python -m emotion_core.train ... --teacher .next/ferplus.npz --distill-alpha 0.3 \\
        --distill-temperature 1

`train --teacher fer2013new.csv` reads the votes directly (the Training page offers them when the
file lies beside the FER-2013 CSV).
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from emotion_core.classes import CLASSES
from emotion_core.cli import command_parser, quiet_native_logs
from emotion_core.data import (
    DataError,
    canonical_split,
    fer_csv_in_folder,
    is_csv_name,
    load_dataset,
)

FERPLUS_FILE = "fer2013new.csv"
FERPLUS_COLUMNS = (
    "neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear",
    "contempt", "unknown", "NF",
)  # fmt: skip
# FER+ vote column for each of our classes (angry, disgust, fear, happy, sad, surprise, neutral)
_FERPLUS_NAME = {
    "angry": "anger", "disgust": "disgust", "fear": "fear", "happy": "happiness",
    "sad": "sadness", "surprise": "surprise", "neutral": "neutral",
}  # fmt: skip
# Above this share of disagreeing majorities the two files are not row-aligned (measured on the
# real Training split: 35% of faces with a 7-class FER+ majority disagree with FER-2013's label;
# a file shifted by one row disagrees on 82%).
MAX_DISAGREEMENT = 0.55


def read_votes(path: Path, split: str) -> np.ndarray:
    """Votes (N, 10) of one split's rows of fer2013new.csv, in file order (FERPLUS_COLUMNS)."""
    split = canonical_split(split)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            missing = {"Usage", *FERPLUS_COLUMNS} - set(reader.fieldnames or ())
            if missing:
                raise DataError(f"{path}: not a FER+ file (no column {', '.join(sorted(missing))})")
            rows = [
                [int(row[name] or 0) for name in FERPLUS_COLUMNS]
                for row in reader
                if row["Usage"] == split
            ]
        votes = np.asarray(rows, dtype=np.int32).reshape(-1, len(FERPLUS_COLUMNS))
    except OSError as exc:
        raise DataError(f"{path}: cannot read the FER+ file ({exc.strerror or exc})") from exc
    except (ValueError, OverflowError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: bad FER+ row ({exc})") from exc
    if not len(votes):
        raise DataError(f"{path}: no {split} rows")
    if (votes < 0).any():
        row = int(np.argwhere(votes < 0)[0, 0])
        raise DataError(f"{path}: negative vote count in {split} row {row} (0-based)")
    return votes


def emotion_votes(votes: np.ndarray) -> np.ndarray:
    """The seven FER-2013 emotions' votes (N, 7), in our class order, of votes (N, 10)."""
    return votes[:, [FERPLUS_COLUMNS.index(_FERPLUS_NAME[name]) for name in CLASSES]]


def soft_labels(votes: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Soft labels (N, 7) in our class order from votes (N, 10); the one-hot label (N,) where a
    face got no vote for any of the seven emotions."""
    counts = emotion_votes(votes).astype(np.float32)
    totals = counts.sum(axis=1, keepdims=True)
    one_hot = np.eye(len(CLASSES), dtype=np.float32)[labels]
    return np.where(totals > 0, counts / np.maximum(totals, 1.0), one_hot)


def disagreement(soft: np.ndarray, votes: np.ndarray, labels: np.ndarray) -> float:
    """Share of faces with votes for the seven emotions whose FER+ majority is not the label."""
    voted = emotion_votes(votes).sum(axis=1) > 0
    if not voted.any():
        return 0.0
    return float((soft[voted].argmax(axis=1) != labels[voted]).mean())


def ferplus_beside(data: Path) -> Path | None:
    """The FER+ votes file laid out beside a FER-2013 CSV (DATA/fer2013/fer2013.csv.gz, or the
    folder DATA/fer2013 that holds it -> DATA/ferplus/fer2013new.csv, or in the CSV's own
    folder); None when there is none or the path cannot be looked at."""
    try:
        csv_file = fer_csv_in_folder(data) if data.is_dir() else data
        if csv_file is None or not is_csv_name(csv_file):
            return None  # a class-folder tree (or a pack) has no row order to align votes with
        for folder in (csv_file.parent, csv_file.parent.parent / "ferplus"):
            if (folder / FERPLUS_FILE).is_file() and folder / FERPLUS_FILE != csv_file:
                return folder / FERPLUS_FILE
    except (OSError, DataError):  # a name too long, an unreadable folder, several CSVs: no votes
        return None
    return None


def ferplus_targets(ferplus: Path, labels: np.ndarray, split: str = "Training") -> np.ndarray:
    """Soft labels (N, 7) for a FER-2013 split's labels (N,), checked for alignment."""
    votes = read_votes(ferplus, split)
    if len(votes) != len(labels):
        raise DataError(
            f"{ferplus}: {len(votes)} {split} rows, but the FER-2013 data has {len(labels)}: "
            "the files do not belong together"
        )
    soft = soft_labels(votes, labels)
    share = disagreement(soft, votes, labels)
    if share > MAX_DISAGREEMENT:
        raise DataError(
            f"{ferplus}: its majority disagrees with FER-2013's label on {share:.0%} of the "
            f"{split} faces (real data: ~35%): the rows are not aligned with the FER-2013 file"
        )
    return soft


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: write FER+ soft labels for a FER-2013 split as a teacher .npz."""
    quiet_native_logs()
    p = command_parser("emotion_core.ferplus", __doc__)
    p.add_argument("--ferplus", required=True, help="fer2013new.csv")
    p.add_argument("--data", required=True, help="FER-2013 CSV, folder root or .npz pack")
    p.add_argument("--split", default="Training")
    p.add_argument("--out", required=True, help="output .npz (a teacher file for --teacher)")
    a = p.parse_args(argv)
    from emotion_core.distill import save_teacher_file

    try:
        dataset = load_dataset(a.data, a.split)  # its split name is the canonical one (val ->
        labels = dataset.labels  # PublicTest), as in the FER+ file's Usage column
        soft = ferplus_targets(Path(a.ferplus), labels, dataset.split)
        save_teacher_file(Path(a.out), soft, labels, source=f"FER+ votes ({a.ferplus})")
    except (DataError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    agreement = float((soft.argmax(axis=1) == labels).mean())
    print(
        f"wrote {a.out}: {len(soft)} rows, FER+ majority agrees with the labels on {agreement:.4f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
