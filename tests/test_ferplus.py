"""FER+ soft labels: the vote mapping, the alignment checks, the CLI, and the real files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers_data import FERPLUS_HEADER as HEADER
from helpers_data import SHARED_DATA, synthetic_csv, tiny_config, vote_row, write_dataset
from helpers_data import write_ferplus_votes as ferplus_file

from emotion_core.classes import CLASSES
from emotion_core.data import DataError, load_dataset
from emotion_core.distill import TeacherError, load_teacher, load_teacher_file
from emotion_core.ferplus import (
    FERPLUS_COLUMNS,
    ferplus_beside,
    ferplus_targets,
    read_votes,
    soft_labels,
)

ROOT = Path(__file__).resolve().parents[1]


def test_votes_become_soft_labels_in_our_class_order():
    votes = np.zeros((3, len(FERPLUS_COLUMNS)), dtype=np.int32)
    votes[0, FERPLUS_COLUMNS.index("happiness")] = 6
    votes[0, FERPLUS_COLUMNS.index("surprise")] = 2
    votes[0, FERPLUS_COLUMNS.index("contempt")] = 2  # not one of ours: left out
    votes[1, FERPLUS_COLUMNS.index("anger")] = 1
    votes[1, FERPLUS_COLUMNS.index("disgust")] = 3
    votes[2, FERPLUS_COLUMNS.index("NF")] = 10  # no emotion vote: the FER-2013 label stays
    soft = soft_labels(votes, np.array([0, 0, 4]))
    assert soft.shape == (3, 7) and np.allclose(soft.sum(axis=1), 1.0)
    assert soft[0, CLASSES.index("happy")] == pytest.approx(0.75)
    assert soft[0, CLASSES.index("surprise")] == pytest.approx(0.25)
    assert soft[1, CLASSES.index("angry")] == pytest.approx(0.25)
    assert soft[1, CLASSES.index("disgust")] == pytest.approx(0.75)
    np.testing.assert_array_equal(soft[2], np.eye(7)[4])


def test_targets_check_that_the_files_belong_together(tmp_path):
    labels = np.array([0, 3, 3, 6, 4, 5, 2, 1, 3, 6])
    good = ferplus_file(tmp_path / "good.csv", labels)
    soft = ferplus_targets(good, labels)
    np.testing.assert_array_equal(soft.argmax(axis=1), labels)
    assert len(read_votes(good, "PublicTest")) == 1  # split by Usage
    short = ferplus_file(tmp_path / "short.csv", labels[:9])
    with pytest.raises(DataError, match="9 Training rows, but the FER-2013 data has 10"):
        ferplus_targets(short, labels)
    shifted = ferplus_file(tmp_path / "shifted.csv", np.roll(labels, 1))
    with pytest.raises(DataError, match="not aligned"):
        ferplus_targets(shifted, labels)
    (tmp_path / "other.csv").write_text("emotion,pixels,Usage\n0,1 2,Training\n")
    with pytest.raises(DataError, match="not a FER\\+ file"):
        read_votes(tmp_path / "other.csv", "Training")
    (tmp_path / "bad.csv").write_text(HEADER + "\n" + vote_row("Training").replace("0", "x", 1))
    with pytest.raises(DataError, match="bad FER\\+ row"):
        read_votes(tmp_path / "bad.csv", "Training")
    with pytest.raises(DataError, match="cannot read"):
        read_votes(tmp_path / "missing.csv", "Training")
    negative = HEADER + "\n" + vote_row("Training", fear=4) + "\n" + vote_row("Training", fear=-5)
    (tmp_path / "negative.csv").write_text(negative + "\n")
    with pytest.raises(DataError, match="negative vote count in Training row 1"):
        read_votes(tmp_path / "negative.csv", "Training")
    (tmp_path / "huge.csv").write_text(HEADER + "\n" + vote_row("Training", fear=99999999999))
    with pytest.raises(DataError, match="bad FER\\+ row"):
        read_votes(tmp_path / "huge.csv", "Training")


def test_split_aliases_and_a_byte_order_mark_are_read_like_the_fer2013_csv(tmp_path):
    rows = [HEADER, vote_row("Training", anger=9), vote_row("PublicTest", happiness=7, fear=3)]
    path = tmp_path / "votes.csv"  # saved by a spreadsheet: a UTF-8 byte order mark first
    path.write_bytes(b"\xef\xbb\xbf" + ("\n".join(rows) + "\n").encode())
    assert read_votes(path, "val").tolist() == read_votes(path, "PublicTest").tolist()
    soft = ferplus_targets(path, np.array([CLASSES.index("happy")]), "val")
    assert soft[0, CLASSES.index("happy")] == pytest.approx(0.7)
    assert read_votes(path, "train")[0, FERPLUS_COLUMNS.index("anger")] == 9


def test_cli_writes_a_teacher_file_training_accepts(tmp_path):
    csv = synthetic_csv(tmp_path / "fer.csv")
    labels = load_dataset(csv, "Training").labels
    votes = ferplus_file(tmp_path / "fer2013new.csv", labels)
    out = tmp_path / "ferplus.npz"
    command = [sys.executable, "-m", "emotion_core.ferplus", "--ferplus", str(votes),
               "--data", str(csv), "--out", str(out)]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"{len(labels)} rows, FER+ majority agrees with the labels on 1.0000" in proc.stdout
    np.testing.assert_array_equal(load_teacher_file(out, labels).argmax(axis=1), labels)
    command[command.index("--ferplus") + 1] = str(tmp_path / "nope.csv")
    bad = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert bad.returncode == 2 and "nope.csv" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.data
@pytest.mark.skipif(
    not (SHARED_DATA / "ferplus" / "fer2013new.csv").exists(),
    reason="../shared/data/ferplus is not present",
)
def test_real_ferplus_votes_align_with_the_fer2013_training_split():
    labels = load_dataset(SHARED_DATA / "fer2013" / "fer2013.csv.gz", "Training").labels
    soft = ferplus_targets(SHARED_DATA / "ferplus" / "fer2013new.csv", labels)
    assert soft.shape == (28_709, 7) and np.allclose(soft.sum(axis=1), 1.0, atol=1e-5)
    # measured: the FER+ majority is FER-2013's label for 64.7% of the faces
    assert 0.6 < float((soft.argmax(axis=1) == labels).mean()) < 0.7


def test_training_reads_the_votes_as_its_teacher(tmp_path, private_cache):
    from emotion_core.train import train

    for folder in ("fer2013", "ferplus"):
        (tmp_path / folder).mkdir()
    csv = synthetic_csv(tmp_path / "fer2013" / "fer.csv")
    labels = load_dataset(csv, "Training").labels
    votes = ferplus_file(tmp_path / "ferplus" / "fer2013new.csv", labels)
    assert ferplus_beside(csv) == votes  # DATA/fer2013/x.csv -> DATA/ferplus/fer2013new.csv
    assert ferplus_beside(tmp_path / "fer2013") == votes  # the folder the CSV stands for
    assert ferplus_beside(write_dataset(tmp_path / "tree", per_class=1)) is None  # no row order
    assert ferplus_beside(tmp_path / ("x" * 300 + ".csv")) is None  # a name too long: no error
    soft = load_teacher(str(votes), np.zeros((len(labels), 48, 48, 1)), labels)
    np.testing.assert_allclose(soft.max(axis=1), 1.0)  # 8 of 8 emotion votes for the label
    summary = train(tiny_config(csv, teacher=str(votes), distill_alpha=0.3), tmp_path / "run")
    assert summary["state"] == "finished"
    # a run limited to fewer images gets the votes of its first rows; a wrong file is refused
    limited = tiny_config(csv, teacher=str(votes), max_train_samples=20)
    assert train(limited, tmp_path / "limited")["state"] == "finished"
    # alignment is judged on the whole split: three first faces whose votes disagree are fine
    noisy = ferplus_file(tmp_path / "noisy.csv", np.concatenate([labels[:3] + 1, labels[3:]]) % 7)
    first = load_teacher(str(noisy), soft[:3], labels[:3], split_labels=labels)
    assert first.shape == (3, 7) and (first.argmax(axis=1) != labels[:3]).all()
    with pytest.raises(TeacherError, match="not aligned"):
        load_teacher(str(ferplus_file(tmp_path / "x.csv", np.roll(labels, 1))), soft, labels)


def test_no_votes_offered_beside_a_folder_of_several_csvs(tmp_path):
    for folder in ("fer2013", "ferplus"):
        (tmp_path / folder).mkdir()
    synthetic_csv(tmp_path / "fer2013" / "a.csv")
    synthetic_csv(tmp_path / "fer2013" / "b.csv")
    (tmp_path / "ferplus" / "fer2013new.csv").write_text("x\n")
    # the folder does not say which CSV the votes would align with: none offered, no error
    assert ferplus_beside(tmp_path / "fer2013") is None
