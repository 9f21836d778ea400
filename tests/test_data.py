"""Code and data checks for the FER-2013 loaders and the shared preprocessing."""

from __future__ import annotations

import gzip
import re

import numpy as np
import pytest
from helpers_data import SHARED_DATA, synthetic_csv, synthetic_folders, write_fer_csv

from emotion_core import data as data_module
from emotion_core.classes import CLASSES, canonical_class
from emotion_core.data import DataError, load_dataset, load_fer_csv, load_folder, pack_npz
from emotion_core.preprocess import preprocess, preprocess_batch


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(data_module, "CACHE_DIR", tmp_path / "cache")


def test_csv_splits_and_labels(tmp_path):
    path = synthetic_csv(tmp_path / "fer.csv", n_train=14, n_val=7)
    train = load_fer_csv(path, "Training")
    val = load_fer_csv(path, "val")
    assert (len(train), len(val)) == (14, 7)
    assert train.images.shape == (14, 48, 48) and train.images.dtype == np.uint8
    assert list(train.labels[:7]) == list(range(7))
    assert train.class_counts() == {name: 2 for name in CLASSES}


def test_gz_csv_and_cache_reuse(tmp_path):
    path = synthetic_csv(tmp_path / "fer.csv.gz", n_train=7, n_val=7)
    first = load_fer_csv(path, "Training")
    assert list((tmp_path / "cache").glob("*.npz")), "a parsed cache should be written"
    second = load_fer_csv(path, "Training")
    np.testing.assert_array_equal(first.images, second.images)


def test_cache_invalidated_when_file_changes(tmp_path):
    path = synthetic_csv(tmp_path / "fer.csv", n_train=7, n_val=7)
    load_fer_csv(path, "Training")
    synthetic_csv(path, n_train=14, n_val=7)  # rewritten: size changes
    assert len(load_fer_csv(path, "Training")) == 14


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("emotion,Usage\n0,Training\n", "missing column(s) pixels"),
        ("emotion,pixels,Usage\n0,1 2 3,Training\n", "has 3 values, expected 2304"),
        ("emotion,pixels,Usage\n0," + " ".join(["300"] * 2304) + ",Training\n", "outside 0-255"),
        ("emotion,pixels,Usage\n0," + " ".join(["a"] * 2304) + ",Training\n", "not integers"),
        ("emotion,pixels,Usage\n0," + " ".join(["9" * 20] * 2304) + ",Training\n", "not integ"),
        ("emotion,pixels,Usage\n0," + " ".join(["1"] * 2304) + ",Holdout\n", "unknown Usage"),
        ("emotion,pixels,Usage\n9," + " ".join(["1"] * 2304) + ",Training\n", "integer 0-6"),
        ("emotion,pixels,Usage\n1.5," + " ".join(["1"] * 2304) + ",Training\n", "integer 0-6"),
        ("", "empty"),
    ],
)
def test_bad_csv_gets_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DataError) as info:
        load_fer_csv(path, "Training", use_cache=False)
    assert message in str(info.value) and "bad.csv" in str(info.value)


def test_bad_csv_error_names_the_line_an_editor_shows(tmp_path):
    good = "0," + " ".join(["1"] * 2304) + ",Training\n"
    cases = {
        "emotion,pixels,Usage\n" + good * 2 + "x,1 2,Training\n": "line 4: emotion",
        "emotion,pixels,Usage\n" + good + "0,1 2 3,Training\n": "line 3: pixels has 3",
        "emotion,pixels,Usage\n" + good * 3 + "0,1,Holdout\n": "line 5: unknown Usage",
    }
    for i, (content, message) in enumerate(cases.items()):
        path = tmp_path / f"bad{i}.csv"
        path.write_text(content)
        with pytest.raises(DataError, match=message):
            load_fer_csv(path, "Training", use_cache=False)


def test_missing_split_and_missing_file(tmp_path):
    img = np.zeros((48, 48), np.uint8)
    path = write_fer_csv(tmp_path / "only_train.csv", [(0, img, "Training")])
    with pytest.raises(DataError, match="no rows with Usage=PrivateTest"):
        load_fer_csv(path, "PrivateTest")
    with pytest.raises(DataError, match="not found"):
        load_fer_csv(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="unknown split"):
        load_fer_csv(path, "holdout")


def test_folder_layout_with_synonyms_and_unknown_class(tmp_path, caplog):
    renames = {"angry": "Anger", "happy": "HAPPINESS"}
    root = synthetic_folders(tmp_path / "imgs", per_class=2, names=renames)
    extra = root / "train" / "contempt"
    extra.mkdir()
    for i in range(3):
        (extra / f"{i}.png").write_bytes((root / "train" / "Anger" / "0.png").read_bytes())
    train = load_folder(root, "train")
    assert train.class_counts() == {name: 2 for name in CLASSES}
    assert train.skipped["class:contempt"] == 3
    assert "skipped 3 images of unknown class" in caplog.text
    assert len(load_dataset(root, "PublicTest")) == 14


def test_undecodable_image_skip_or_fail(tmp_path):
    root = synthetic_folders(tmp_path / "imgs", per_class=1)
    (root / "train" / "sad" / "broken.jpg").write_bytes(b"not an image")
    assert load_folder(root, "train").skipped["undecodable"] == 1
    with pytest.raises(DataError, match="broken.jpg: cannot decode"):
        load_folder(root, "train", skip_bad=False)


def test_a_folder_named_like_an_image_is_not_read_as_one(tmp_path):
    root = synthetic_folders(tmp_path / "imgs", per_class=1)
    (root / "train" / "sad" / "odd.png").mkdir()
    assert len(load_folder(root, "train", skip_bad=False)) == len(CLASSES)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"labels": [0, 1, 2, 3], "usage": ["Training"] * 5}, "5 images, 4 labels and 5 usages"),
        ({"labels": [0, 1, 2, 3, 9], "usage": ["Training"] * 5}, "label 9 is not one of"),
        ({"labels": [0, 1, 2, 3, -1], "usage": ["Training"] * 5}, "whole numbers from 0"),
        ({"images_shape": (5, 40, 40)}, "expected (N, 48, 48)"),
    ],
)
def test_an_inconsistent_pack_is_a_clear_error(tmp_path, arrays, message):
    shape = arrays.get("images_shape", (5, 48, 48))
    path = tmp_path / "pack.npz"
    np.savez(
        path,
        images=np.zeros(shape, np.uint8),
        labels=np.array(arrays.get("labels", [0, 1, 2, 3, 4])),
        usage=np.array(arrays.get("usage", ["Training"] * 5)),
    )
    with pytest.raises(DataError, match=re.escape(message)):
        load_dataset(path, "Training")


def test_a_truncated_pack_is_a_clear_error(tmp_path):
    path = synthetic_csv(tmp_path / "fer.csv", n_train=14, n_val=7)
    pack = pack_npz(path, tmp_path / "pack.npz", splits=("Training",))
    cut = tmp_path / "cut.npz"
    cut.write_bytes(pack.read_bytes()[: pack.stat().st_size // 2])
    with pytest.raises(DataError, match="cut.npz: not a dataset pack"):
        load_dataset(cut, "Training")


def test_empty_folder_is_an_error(tmp_path):
    (tmp_path / "empty" / "train" / "happy").mkdir(parents=True)
    with pytest.raises(DataError, match="no images"):
        load_folder(tmp_path / "empty", "train")


def test_synonyms():
    assert canonical_class("Surprised") == "surprise"
    assert canonical_class("fearful") == "fear"
    assert canonical_class("contempt") is None


def test_compact_pack_round_trip(tmp_path):
    path = synthetic_csv(tmp_path / "fer.csv", n_train=14, n_val=7)
    pack = pack_npz(path, tmp_path / "pack.npz", splits=("Training", "PublicTest"), compact=True)
    for split in ("Training", "PublicTest"):
        a, b = load_dataset(pack, split), load_fer_csv(path, split)
        np.testing.assert_array_equal(a.images, b.images)  # lossless
        np.testing.assert_array_equal(a.labels, b.labels)


def test_compact_pack_can_store_training_faces_lossy_and_keeps_validation_exact(tmp_path):
    path = synthetic_csv(tmp_path / "fer.csv", n_train=14, n_val=7)
    splits = ("Training", "PublicTest")
    exact = pack_npz(path, tmp_path / "exact.npz", splits=splits, compact=True)
    lossy = pack_npz(path, tmp_path / "lossy.npz", splits=splits, compact=True, training_quality=90)
    assert lossy.stat().st_size < exact.stat().st_size
    train, original = load_dataset(lossy, "Training"), load_fer_csv(path, "Training")
    difference = np.abs(train.images.astype(int) - original.images)
    assert 0 < difference.mean() < 8  # close to the faces, not the same bytes
    np.testing.assert_array_equal(train.labels, original.labels)
    val = load_dataset(lossy, "PublicTest")
    np.testing.assert_array_equal(val.images, load_fer_csv(path, "PublicTest").images)


def test_preprocess_shapes_and_range():
    bgr = np.full((120, 90, 3), 255, np.uint8)
    out = preprocess(bgr)
    assert out.shape == (48, 48, 1) and out.dtype == np.float32
    assert np.allclose(out, 1.0)
    gray = np.arange(48 * 48, dtype=np.uint16).reshape(48, 48) % 256
    np.testing.assert_allclose(preprocess(gray.astype(np.uint8))[:, :, 0], gray / 255.0, atol=1e-6)
    batch = preprocess_batch([bgr, bgr[:50, :50]])
    assert batch.shape == (2, 48, 48, 1)
    with pytest.raises(ValueError):
        preprocess(np.zeros((0, 0), np.uint8))


needs_data = pytest.mark.skipif(
    not (SHARED_DATA / "fer2013").is_dir(), reason="../shared/data/fer2013 is not present"
)


@needs_data
@pytest.mark.data
def test_real_fer2013_counts():
    csv = SHARED_DATA / "fer2013" / "fer2013.csv.gz"
    train = load_dataset(csv, "Training")
    val = load_dataset(csv, "PublicTest")
    assert (len(train), len(val)) == (28709, 3589)
    assert train.class_counts() == {
        "angry": 3995, "disgust": 436, "fear": 4097, "happy": 7215,
        "sad": 4830, "surprise": 3171, "neutral": 4965,
    }  # fmt: skip


@needs_data
@pytest.mark.data
def test_real_folder_layout_matches_csv_labels():
    folder = load_dataset(SHARED_DATA / "fer2013" / "images", "val")
    assert len(folder) == 3589
    csv_val = load_dataset(SHARED_DATA / "fer2013" / "fer2013.csv.gz", "val")
    assert folder.class_counts() == csv_val.class_counts()


def _one_row_csv(path, usage: str = "Training", header: str = "emotion,pixels,Usage"):
    """A one-row CSV (label 3) with the given header (columns in its order, spaces kept)."""
    columns = [c.strip() for c in header.split(",")]
    values = {"emotion": "3", "pixels": " ".join(["7"] * 2304), "Usage": usage}
    path.write_text(header + "\n" + ",".join(values[c] for c in columns) + "\n")
    return path


def test_csv_file_names_match_in_any_letter_case(tmp_path):
    upper = _one_row_csv(tmp_path / "FER2013.CSV")
    assert list(load_dataset(upper, "Training").labels) == [3]
    gz = tmp_path / "Data.Csv.GZ"
    gz.write_bytes(gzip.compress(upper.read_bytes()))
    assert list(load_dataset(gz, "Training").labels) == [3]
    folder = tmp_path / "upper"
    folder.mkdir()
    _one_row_csv(folder / "FER2013.CSV")
    assert load_dataset(folder, "Training").source == str(folder / "FER2013.CSV")


def test_a_folder_of_several_csvs_takes_fer2013_or_names_the_candidates(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    _one_row_csv(folder / "a_notes.csv", usage="PublicTest")
    _one_row_csv(folder / "Fer2013.csv")  # preferred, in any letter case
    assert data_module.fer_csv_in_folder(folder) == folder / "Fer2013.csv"
    assert len(load_dataset(folder, "Training")) == 1
    (folder / "Fer2013.csv").unlink()
    _one_row_csv(folder / "b_other.csv")
    with pytest.raises(DataError, match=r"several CSV files \(a_notes.csv, b_other.csv\)"):
        load_dataset(folder, "Training")
    gz = synthetic_csv(folder / "fer2013.csv.gz", n_train=7, n_val=7)
    _one_row_csv(folder / "FER2013.csv")  # an unpacked copy beside its archive: the copy
    assert data_module.fer_csv_in_folder(folder) == folder / "FER2013.csv"
    _one_row_csv(folder / "fer2013.CSV")  # two copies differing in case only: ambiguous
    with pytest.raises(DataError, match=r"several CSV files \(.*FER2013.csv.*fer2013.CSV"):
        load_dataset(folder, "Training")
    (folder / "FER2013.csv").unlink()
    (folder / "fer2013.CSV").unlink()
    assert data_module.fer_csv_in_folder(folder) == gz


def test_kaggle_icml_face_data_header_with_spaces_loads(tmp_path):
    path = _one_row_csv(tmp_path / "icml_face_data.csv", " Training", "emotion, Usage, pixels")
    data = load_fer_csv(path, "Training", use_cache=False)
    assert list(data.labels) == [3] and int(data.images[0, 0, 0]) == 7
    _one_row_csv(tmp_path / "twice.csv", header="emotion,pixels,Usage")
    (tmp_path / "twice.csv").write_text(
        (tmp_path / "twice.csv").read_text().replace("Usage\n", "Usage, emotion\n", 1)
    )
    with pytest.raises(DataError, match="twice.csv: repeated column names"):
        load_fer_csv(tmp_path / "twice.csv", "Training", use_cache=False)


def test_cache_not_stale_after_a_same_size_rewrite_within_a_second(tmp_path):
    import os

    path = _one_row_csv(tmp_path / "fer.csv")
    second = 1_700_000_000 * 10**9
    os.utime(path, ns=(second + 100, second + 100))
    assert int(load_fer_csv(path, "Training").images[0, 0, 0]) == 7
    path.write_text(path.read_text().replace("7", "8"))  # same size, new pixels
    os.utime(path, ns=(second + 500_000_000, second + 500_000_000))  # same whole second
    assert int(load_fer_csv(path, "Training").images[0, 0, 0]) == 8


def test_preprocess_paths_agree_on_float_input():
    rng = np.random.default_rng(0)
    faces = rng.uniform(-40.0, 300.0, size=(5, 48, 48))
    faces[0, 0, :4] = [0.4, 0.6, 254.5, 255.7]  # rounding and clipping at both ends
    fast = preprocess_batch(faces)  # the (N, 48, 48) array path
    one_by_one = preprocess_batch(list(faces))  # the per-image path
    np.testing.assert_array_equal(fast, one_by_one)
    np.testing.assert_array_equal(fast[0], preprocess(faces[0]))
    assert fast.min() == 0.0 and fast.max() == 1.0
    np.testing.assert_allclose(fast[0, 0, :4, 0] * 255, [0, 1, 254, 255], atol=1e-4)
    wide = rng.integers(-50, 400, size=(3, 48, 48))  # other integer types clip the same way
    np.testing.assert_array_equal(preprocess_batch(wide), preprocess_batch(list(wide)))
