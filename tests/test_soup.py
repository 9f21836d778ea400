"""Model checks for weight averaging and batch-norm recalibration (emotion_core.soup)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers_data import synthetic_csv, tiny_config

from emotion_core.soup import (
    SoupError,
    average_weights,
    main,
    recalibrate_batchnorm,
    sample_faces,
)
from emotion_core.train import train

pytestmark = pytest.mark.usefixtures("private_cache")


def test_average_weights_is_the_elementwise_mean_and_refuses_other_architectures():
    a = [np.zeros((2, 3), np.float32), np.array([1.0, 3.0], np.float32)]
    b = [np.full((2, 3), 4.0, np.float32), np.array([3.0, 5.0], np.float32)]
    mean = average_weights([a, b])
    np.testing.assert_allclose(mean[0], np.full((2, 3), 2.0))
    np.testing.assert_allclose(mean[1], [2.0, 4.0])
    assert mean[0].dtype == np.float32
    with pytest.raises(SoupError, match="different architectures"):
        average_weights([a, [np.zeros((3, 3), np.float32), a[1]]])
    with pytest.raises(SoupError):
        average_weights([])


def test_recalibration_faces_are_all_or_a_seeded_sample_in_order():
    images = (np.arange(20 * 48 * 48).reshape(20, 48, 48) % 251).astype(np.uint8)
    assert sample_faces(images, 0).shape == (20, 48, 48, 1)
    assert sample_faces(images, 50).shape == (20, 48, 48, 1)
    sample = sample_faces(images, 5)
    assert sample.shape == (5, 48, 48, 1) and sample.dtype == np.float32
    np.testing.assert_array_equal(sample, sample_faces(images, 5))  # seeded
    rows = [next(i for i in range(20) if np.allclose(images[i] / 255.0, f[..., 0], atol=1e-6))
            for f in sample]  # fmt: skip
    assert rows == sorted(set(rows))


def _batchnorm_net(residual: bool = False):
    """conv-bn-relu-conv-bn (-add: a branch) - pool - dense-bn - softmax, on 12x12 faces."""
    import keras
    from keras import layers

    inputs = keras.Input((12, 12, 1))
    x = layers.Conv2D(4, 3, name="conv1")(inputs)
    x = layers.BatchNormalization(name="bn1")(x)
    x = skip = layers.Activation("relu")(x)
    x = layers.Conv2D(4, 3, padding="same", name="conv2")(x)
    x = layers.BatchNormalization(name="bn2")(x)
    x = layers.Add()([x, skip]) if residual else x
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.BatchNormalization(name="bn3")(layers.Dense(5)(x))
    return keras.Model(inputs, layers.Dense(7, activation="softmax")(x))


# cache_bytes 0: the graph from the faces to each layer; 2,500: the chain sweep with nothing
# reused (only bn3's input, 50 x 5 x 4 bytes, fits); 1 MB: each layer from the last one's input.
SWEEPS = [(False, 0), (False, 2_500), (False, 1 << 20), (True, 1 << 20)]


@pytest.mark.parametrize(("residual", "cache_bytes"), SWEEPS)
def test_recalibrated_batchnorm_holds_the_population_statistics_of_its_input(
    residual: bool, cache_bytes: int
):
    import keras

    from emotion_core.soup import is_chain

    model = _batchnorm_net(residual)
    assert is_chain(model) is not residual
    x = np.random.default_rng(0).normal(0.6, 0.3, (50, 12, 12, 1)).astype(np.float32)
    lines: list[str] = []
    # batch 16 does not divide 50: the last, short batch must count by its size
    count = recalibrate_batchnorm(
        model, x, batch=16, progress=lines.append, cache_bytes=cache_bytes
    )
    assert count == 3 and lines[-1] == "batch norm 3/3 (bn3) on 50 faces"
    for name in ("bn1", "bn2", "bn3"):  # bn2's input already passes through the recalibrated bn1
        layer = model.get_layer(name)
        features = np.asarray(keras.Model(model.inputs, layer.input).predict(x, verbose=0))
        axes = tuple(range(features.ndim - 1))
        np.testing.assert_allclose(layer.moving_mean, features.mean(axes), atol=1e-4)
        np.testing.assert_allclose(layer.moving_variance, features.var(axes), rtol=1e-3, atol=1e-6)
    # with every face in one batch, training mode (batch statistics) now equals inference mode
    np.testing.assert_allclose(
        np.asarray(model(x, training=True)), np.asarray(model(x, training=False)), atol=1e-4
    )
    with pytest.raises(SoupError, match="no faces"):
        recalibrate_batchnorm(model, x[:0])


def test_a_soup_of_a_fine_tuned_trajectory_publishes_with_every_stage_counted(tmp_path, capsys):
    from emotion_core.publish import publish_run, training_lineage

    csv = synthetic_csv(tmp_path / "fer.csv")
    first, second = tmp_path / "runs" / "first", tmp_path / "runs" / "second"
    train(tiny_config(csv, arch="fer-fast", epochs=2), first)
    init = str(first / "last.keras")
    train(tiny_config(csv, arch="fer-fast", init_model=init), second)
    soup = tmp_path / "runs" / "soup"
    ingredients = [str(first / "last.keras"), str(second / "last.keras")]

    assert main([*ingredients, "--out", str(soup), "--batch-size", "32", "--max-faces", "50"]) == 0
    out = capsys.readouterr().out
    assert "batch norm 1/" in out and "soup: PublicTest accuracy" in out
    hparams = json.loads((soup / "hparams.json").read_text())
    assert hparams["ingredients"] == ingredients and hparams["arch"] == "fer-fast"
    assert hparams["recalibrated_on"] == "Training" and hparams["data"] == str(csv)
    assert hparams["recalibration_faces"] == 50 and "--max-faces 50" in hparams["command"]
    report = json.loads((soup / "eval.json").read_text())
    assert set(report["ingredients"]) == set(ingredients) and 0 <= report["accuracy"] <= 1
    assert report["n"] == 21 and "macro_f1" in report and report["confusion_matrix"]  # as train's
    assert list(report)[-3:] == ["split", "ingredients", "seconds"]
    assert report["split"] == "PublicTest"
    status = json.loads((soup / "status.json").read_text())  # the timing, beside the report
    assert status["elapsed_s"] == report["seconds"] > 0
    assert status["metrics"] == {"val_accuracy": report["accuracy"]}

    # the Training page lists it as a finished run with a network
    from emotion_core.jobs import TrainingJobRunner

    info = TrainingJobRunner(runs_dir=tmp_path / "runs").info("soup")
    assert info.state == "finished" and info.has_model and "averaged first, second" in info.message

    # the second run fine-tuned the first: the first counts once
    assert [s.run_dir for s in training_lineage(soup)] == [first, second, soup]
    card = publish_run(soup, "souped", models_dir=tmp_path / "models")
    assert card.epochs == 3 and "python -m emotion_core.soup" in card.command
    assert "first, second averaged" in card.notes and "3 stages" in card.notes
    assert "layers) recalibrated" not in card.notes  # the soup already was; not done twice

    # the folder is not overwritten
    assert main([*ingredients, "--out", str(soup)]) == 2
    assert "already holds a network" in capsys.readouterr().err


def test_the_soup_cli_refuses_networks_of_different_architectures_clearly(tmp_path, capsys):
    csv = synthetic_csv(tmp_path / "fer.csv")
    train(tiny_config(csv), tmp_path / "tiny")
    train(tiny_config(csv, arch="fer-fast"), tmp_path / "fast")
    checkpoints = [str(tmp_path / "tiny" / "last.keras"), str(tmp_path / "fast" / "last.keras")]
    assert main([*checkpoints, "--out", str(tmp_path / "soup")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "different architectures" in err
    assert "Traceback" not in err and not (tmp_path / "soup").exists()
    assert main([str(tmp_path / "missing.keras"), "--out", str(tmp_path / "soup")]) == 2
    assert "model file not found" in capsys.readouterr().err


def test_publish_recalibrates_batch_norm_first_unless_told_not_to(tmp_path):
    from emotion_core.inference import load_keras_model
    from emotion_core.publish import PUBLISH_STEPS, publish_run

    csv = synthetic_csv(tmp_path / "fer.csv")
    run = tmp_path / "runs" / "fast"
    train(tiny_config(csv, arch="fer-fast"), run)
    lines: dict[str, list[str]] = {"kept": [], "recal": []}
    kept = publish_run(run, "kept", models_dir=tmp_path / "a", recalibrate_faces=-1,
                       progress=lines["kept"].append)  # fmt: skip
    recal = publish_run(run, "recal", models_dir=tmp_path / "b", recalibrate_faces=40,
                        progress=lines["recal"].append)  # fmt: skip
    assert "recalibrated" not in kept.notes
    assert "recalibrated on 40 clean Training faces" in recal.notes
    # the recalibration step is reported only when it runs, with each layer as a detail line
    without_recalibration = [s for s in PUBLISH_STEPS if s != PUBLISH_STEPS[1]]
    assert lines["kept"] == without_recalibration
    assert [s for s in lines["recal"] if s in PUBLISH_STEPS] == list(PUBLISH_STEPS)
    details = [s for s in lines["recal"] if s not in PUBLISH_STEPS]
    assert details and details[0].startswith("batch norm 1/") and "on 40 faces" in details[0]
    first_detail = lines["recal"].index(details[0])
    assert lines["recal"][first_detail - 1] == PUBLISH_STEPS[1]

    # a soup of one checkpoint is a recalibration; its card says so
    assert main([str(run / "last.keras"), "--out", str(tmp_path / "runs" / "bn")]) == 0
    card = publish_run(tmp_path / "runs" / "bn", "bn", models_dir=tmp_path / "c")
    assert "then bn (batch norm recalibrated on the training faces)" in card.notes
    assert "averaged" not in card.notes
    probe = np.random.default_rng(1).random((4, 48, 48, 1), dtype=np.float32)
    outputs = [
        np.asarray(load_keras_model(tmp_path / d / f"{n}.keras")(probe, training=False))
        for d, n in (("a", "kept"), ("b", "recal"))
    ]
    assert np.abs(outputs[0] - outputs[1]).max() > 1e-4  # different statistics, folded in


def test_the_soup_cli_checks_its_out_folder_before_the_work(tmp_path, monkeypatch, capsys):
    from emotion_core import data
    from emotion_core.data import DataError

    def no_work_yet(*args: object) -> None:
        raise AssertionError("the data loaded before --out was checked")

    monkeypatch.setattr(data, "load_dataset", no_work_yet)
    (tmp_path / "run.keras").write_bytes(b"x")
    (tmp_path / "a-file").write_text("")
    args = [str(tmp_path / "run.keras"), "--data", "d.csv", "--out"]
    for out in (tmp_path / "a-file", tmp_path / "a-file" / "soup"):
        assert main([*args, str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "a-file" in err and "Traceback" not in err

    def data_gone(*args: object) -> None:
        raise DataError("d.csv: file not found")

    monkeypatch.setattr(data, "load_dataset", data_gone)  # a failure after the check
    assert main([*args, str(tmp_path / "soup")]) == 2
    assert not (tmp_path / "soup").exists()  # the folder made for it went again
