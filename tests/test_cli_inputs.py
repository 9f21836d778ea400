"""Bad input to the model commands: a clear one-line error (exit 2) before any work, progress
while the work runs, and nothing half-made left behind."""

from __future__ import annotations

import gzip
import logging
import re
from pathlib import Path

import numpy as np
import pytest
from helpers_data import synthetic_csv, synthetic_images, write_fer_csv

from emotion_core import bench, distill, evaluate, inference, soup
from emotion_core.data import DataError, load_fer_csv
from emotion_core.registry import ModelCard, ModelError, register_model

pytestmark = pytest.mark.usefixtures("private_cache")


def tiny_net(path: Path, outputs: int = 7, filters: int = 2) -> Path:
    """Save a small (48, 48, 1) -> (outputs,) softmax network with batch norm; `filters`
    changes its architecture (weight shapes) without changing its input or output."""
    import keras
    from keras import layers

    model = keras.Sequential(
        [
            keras.Input((48, 48, 1)),
            layers.Conv2D(filters, 3, strides=4),
            layers.BatchNormalization(),
            layers.GlobalAveragePooling2D(),
            layers.Dense(outputs, activation="softmax"),
        ]
    )
    model.save(path)
    return path


def no_work(*args: object, **kwargs: object) -> None:
    raise AssertionError("the work started before the input was checked")


# ---------------------------------------------------------------- soup


def test_soup_refuses_a_network_with_other_than_seven_outputs_before_any_work(
    tmp_path, monkeypatch, capsys
):
    csv = synthetic_csv(tmp_path / "fer.csv")
    five = tiny_net(tmp_path / "five.keras", outputs=5)
    seven = tiny_net(tmp_path / "seven.keras")
    out = tmp_path / "soup"
    monkeypatch.setattr(soup, "validation_report", no_work)  # no checkpoint gets evaluated
    for checkpoints in ([five], [seven, five]):
        args = [*map(str, checkpoints), "--out", str(out), "--data", str(csv)]
        assert soup.main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
        assert "five.keras: 5 outputs" in err and "(7: angry" in err
        assert not out.exists()  # no empty run folder left behind


def test_soup_refuses_other_architectures_before_evaluating_any_checkpoint(
    tmp_path, monkeypatch, capsys
):
    csv = synthetic_csv(tmp_path / "fer.csv")
    a = tiny_net(tmp_path / "a.keras", filters=2)
    b = tiny_net(tmp_path / "b.keras", filters=3)
    monkeypatch.setattr(soup, "validation_report", no_work)
    out = tmp_path / "soup"
    assert soup.main([str(a), str(b), "--out", str(out), "--data", str(csv)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "different architectures" in err and "b.keras" in err
    assert not out.exists()


def test_soup_removes_the_folder_it_made_when_the_work_fails_unexpectedly(tmp_path, monkeypatch):
    csv = synthetic_csv(tmp_path / "fer.csv")
    seven = tiny_net(tmp_path / "seven.keras")

    def broken(*args: object) -> None:
        raise RuntimeError("unexpected")

    monkeypatch.setattr(soup, "validation_report", broken)
    out = tmp_path / "soup"
    with pytest.raises(RuntimeError):
        soup.main([str(seven), "--out", str(out), "--data", str(csv)])
    assert not out.exists()


# ---------------------------------------------------------------- distill


def test_distill_reports_progress_per_teacher_and_per_chunk_of_faces(tmp_path, monkeypatch, capsys):
    csv = synthetic_csv(tmp_path / "fer.csv", n_train=70, n_val=7)
    teacher = tiny_net(tmp_path / "vgg-x.keras")
    faces = np.random.default_rng(0).random((70, 48, 48, 1), dtype=np.float32)
    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(distill, "PROGRESS_BATCHES", 2)
    probs = distill.teacher_probabilities(
        teacher, faces, batch=8, progress=lambda *c: calls.append(c)
    )
    assert probs.shape == (70, 7)
    assert calls == [(0, 70), (16, 70), (32, 70), (48, 70), (64, 70), (70, 70)]

    out = tmp_path / "t.npz"
    assert distill.main(["--teacher", str(teacher), "--data", str(csv), "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "teacher 1/1 vgg-x: 0/70 faces" in lines and "teacher 1/1 vgg-x: 70/70 faces" in lines
    assert lines.index("teacher 1/1 vgg-x: 0/70 faces") == 1  # before the minutes of work
    args = ["--teacher", str(teacher), "--teacher", str(out), "--data", str(csv)]
    assert distill.main([*args, "--out", str(tmp_path / "two.npz")]) == 0
    printed = capsys.readouterr().out
    assert "teacher 1/2 vgg-x: 70/70 faces" in printed
    assert f"teacher 2/2 t: 70 faces read from {out}" in printed
    assert distill.teacher_label("runs/vgg-m/best.keras") == "vgg-m/best"


# ---------------------------------------------------------------- evaluate


def test_evaluate_checks_its_json_path_before_the_work(tmp_path, monkeypatch, capsys):
    (tmp_path / "a-file").write_text("")
    (tmp_path / "folder.json").mkdir()
    (tmp_path / "r.confusion.png").mkdir()
    monkeypatch.setattr(evaluate, "resolve_model", no_work)
    for target, why in (
        (tmp_path / "a-file" / "out.json", "a-file: exists and is not a folder"),
        (tmp_path / "folder.json", "folder.json: is a folder"),
        (tmp_path / "r.json", "r.confusion.png: is a folder"),
    ):
        assert evaluate.main(["--data", "x.csv", "--json", str(target)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and why in err and err.count("\n") == 1


def test_evaluate_removes_the_report_folder_it_made_when_it_stops_early(tmp_path, capsys):
    csv = synthetic_csv(tmp_path / "fer.csv")
    (tmp_path / "text.keras").write_text("not a model")
    report = tmp_path / "reports" / "r.json"
    args = ["--model", str(tmp_path / "text.keras"), "--data", str(csv), "--json", str(report)]
    assert evaluate.main(args) == 2
    assert "not a .keras model file" in capsys.readouterr().err
    assert not report.parent.exists()


# ---------------------------------------------------------------- bench models


@pytest.fixture
def registry_with_broken_models(tmp_path, monkeypatch):
    models = tmp_path / "models"
    good = tiny_net(tmp_path / "good.keras")
    register_model(good, ModelCard(name="good", arch="tiny"), models, make_default=True)
    five = tiny_net(tmp_path / "five.keras", outputs=5)
    register_model(five, ModelCard(name="five", arch="tiny"), models)
    register_model(good, ModelCard(name="text", arch="tiny"), models)
    (models / "text.keras").write_text("not a model")
    monkeypatch.setattr("emotion_core.inference.MODELS_DIR", models)
    return models


def test_bench_models_skips_broken_models_and_times_the_rest(registry_with_broken_models, capsys):
    assert bench.main(["models", "--rounds", "1", "--repeats", "2"]) == 0
    captured = capsys.readouterr()
    assert "skipped five: " in captured.err and "5 outputs but the card lists 7" in captured.err
    assert "skipped text: " in captured.err and "not a zip archive" in captured.err
    timed = [line for line in captured.out.splitlines() if line.startswith("model=")]
    assert len(timed) == 1 and timed[0].startswith("model=good ")
    assert "skipped 2 model(s): five, text" in captured.out

    results, _ = bench.retime_registered(registry_with_broken_models, 1, 2, update_cards=True)
    assert [r.name for r in results] == ["good"]
    assert set(results.skipped) == {"five", "text"} and "5 outputs" in results.skipped["five"]


def test_bench_models_fails_only_when_no_model_can_be_timed(registry_with_broken_models, capsys):
    from emotion_core.registry import model_path

    model_path("good", registry_with_broken_models).write_text("broken too")
    assert bench.main(["models", "--rounds", "1", "--repeats", "2"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("error: no registered model could be timed (")
    with pytest.raises(ModelError, match="five: .*5 outputs"):
        bench.retime_registered(registry_with_broken_models, 1, 2)


# ---------------------------------------------------------------- inference


def test_a_keras_file_that_is_not_a_zip_archive_is_named_as_such(tmp_path):
    (tmp_path / "x.keras").write_text("hello")
    with pytest.raises(ModelError) as caught:
        inference.load_keras_model(tmp_path / "x.keras")
    assert (
        str(caught.value) == f"{tmp_path / 'x.keras'}: not a .keras model file (not a zip archive)"
    )
    (tmp_path / "dir.keras").mkdir()
    with pytest.raises(ModelError, match="dir.keras: cannot read the model file"):
        inference.load_keras_model(tmp_path / "dir.keras")


def test_emotion_runtime_is_read_in_any_case_and_an_unknown_value_is_reported_once(
    monkeypatch, caplog
):
    monkeypatch.setattr(inference, "_warned_runtime_values", set())
    card = ModelCard(name="m", arch="tiny", runtime="tflite")
    for value in ("keras", "Keras", " KERAS "):
        monkeypatch.setenv("EMOTION_RUNTIME", value)
        assert inference.runs_on_keras(card)
    monkeypatch.setenv("EMOTION_RUNTIME", "bogus")
    with caplog.at_level(logging.WARNING, logger="emotion_core.inference"):
        assert not inference.runs_on_keras(card)
        assert inference.runs_on_keras(ModelCard(name="k", arch="tiny"))  # asked again
    warnings = [r.getMessage() for r in caplog.records if "EMOTION_RUNTIME" in r.getMessage()]
    assert len(warnings) == 1
    assert "'bogus'" in warnings[0] and "keras" in warnings[0] and "unset" in warnings[0]
    monkeypatch.delenv("EMOTION_RUNTIME")
    assert not inference.runs_on_keras(card)


# ---------------------------------------------------------------- data


def _rows(n: int = 3) -> list[tuple[int, np.ndarray, str]]:
    images, labels = synthetic_images(n)
    return [(int(label), image, "Training") for image, label in zip(images, labels, strict=True)]


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz"])
def test_a_csv_cut_off_mid_row_names_the_truncated_line(tmp_path, suffix):
    path = write_fer_csv(tmp_path / f"fer{suffix}", _rows())
    opener = gzip.open if suffix.endswith(".gz") else open
    with opener(path, "rt") as fh:
        text = fh.read()
    cut = text[: text.rindex(",Training") - 10]  # the last row ends mid-pixels
    with opener(path, "wt") as fh:
        fh.write(cut)
    pixels = len(cut.splitlines()[-1].split(",")[1].split())
    with pytest.raises(DataError) as caught:
        load_fer_csv(path, use_cache=False)
    assert str(caught.value) == (
        f"{path}: line 4: truncated row (expected 3 fields emotion,pixels,Usage, found 2; "
        f"{pixels} pixels, expected 2304)"
    )


def test_a_row_with_fewer_fields_is_called_truncated_and_an_empty_field_is_not(tmp_path):
    head = "emotion,pixels,Usage\n"
    good = "0," + " ".join(["1"] * 2304) + ",Training\n"
    cases = {
        head + good + "\n" + "3\n": "line 4: truncated row (expected 3 fields "
        "emotion,pixels,Usage, found 1)",  # the blank line skipped, still counted
        head + good + "2," + " ".join(["1"] * 2304) + "\n": "line 3: truncated row "
        "(expected 3 fields emotion,pixels,Usage, found 2)",
        head + good + "2," + " ".join(["1"] * 2304) + ",\n": "line 3: unknown Usage",
    }
    for text, message in cases.items():
        path = tmp_path / "fer.csv"
        path.write_text(text)
        with pytest.raises(DataError, match=re.escape(message)):
            load_fer_csv(path, use_cache=False)
