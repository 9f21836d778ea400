"""Model checks: zoo shapes, training (1 epoch, resume, cancel), evaluation maths, registry."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from helpers_data import synthetic_csv, tiny_config

from emotion_core.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
)
from emotion_core.classes import CLASSES
from emotion_core.evaluate import (
    EvalReport,
    confusion_matrix,
    metrics_from_confusion,
    report_from_probs,
)
from emotion_core.registry import ModelCard, ModelError, card_hash, default_model_name
from emotion_core.train import ProgressEvent, train

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("private_cache")


@pytest.mark.parametrize("arch", ["fer-fast", "seed", "vgg-s", "tiny"])
def test_zoo_shapes(arch):
    from emotion_core.zoo import make_model

    model = make_model((48, 48, 1), 7, arch)
    out = np.asarray(model(np.zeros((2, 48, 48, 1), np.float32), training=False))
    assert out.shape == (2, 7)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


def test_the_vgg_family_widths_and_sizes():
    from keras import layers

    from emotion_core.zoo import make_model

    for arch, width, params in [
        ("vgg-s3", 32, 2.5e6),
        ("vgg-m40", 40, 3.73e6),
        ("vgg-m", 48, 5.19e6),
    ]:
        model = make_model((48, 48, 1), 7, arch, augment=False)
        convs = [layer.filters for layer in model.layers if isinstance(layer, layers.Conv2D)]
        assert convs == [width] * 2 + [2 * width] * 2 + [4 * width] * 3 + [8 * width] * 3, arch
        assert abs(model.count_params() - params) / params < 0.01, (arch, model.count_params())


def test_unknown_arch():
    from emotion_core.zoo import make_model

    with pytest.raises(ValueError, match="unknown architecture"):
        make_model(arch="resnet-9000")


def test_augmentation_is_training_only_and_jit_compatible():
    from keras.src.trainers.trainer import model_supports_jit

    from emotion_core.zoo import FaceAugment, make_model

    layer = FaceAugment(seed=3)
    x = np.random.default_rng(0).random((4, 48, 48, 1), dtype=np.float32)
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
    y = np.asarray(layer(x, training=True))
    assert y.shape == x.shape and not np.allclose(y, x)
    assert 0.0 <= y.min() and y.max() <= 1.0
    assert model_supports_jit(make_model(arch="fer-fast"))


def test_fold_batchnorm_preserves_outputs():
    import keras

    from emotion_core.zoo import fold_batchnorm, make_model

    trained = make_model(arch="fer-fast")
    rng = np.random.default_rng(0)
    for layer in trained.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            g, b, m, v = layer.get_weights()
            new = [rng.random(g.shape) + 0.5, rng.normal(size=b.shape)]
            new += [rng.normal(size=m.shape) * 0.1, rng.random(v.shape) + 0.5]
            layer.set_weights(new)
    folded = fold_batchnorm(trained, make_model(arch="fer-fast-folded"))
    x = rng.random((3, 48, 48, 1), dtype=np.float32)
    np.testing.assert_allclose(
        np.asarray(trained(x, training=False)), np.asarray(folded(x)), atol=1e-5
    )
    assert len(folded.layers) < len(trained.layers)


def test_train_one_epoch_writes_run_folder(tmp_path):
    csv = synthetic_csv(tmp_path / "fer.csv")
    events: list[ProgressEvent] = []
    summary = train(tiny_config(csv), tmp_path / "run", listeners=[events.append])
    run = tmp_path / "run"
    for name in ("hparams.json", "status.json", "metrics.csv", "last.keras", "best.keras",
                 "eval.json"):  # fmt: skip
        assert (run / name).exists(), name
    assert summary["state"] == "finished" and summary["epochs_done"] == 1
    kinds = [e.kind for e in events]
    assert kinds[0] == "start" and "epoch" in kinds and kinds[-1] == "end"
    assert events[-1].epoch == 1 and events[-1].state == "finished"
    epoch_event = next(e for e in events if e.kind == "epoch")
    assert "val_accuracy" in epoch_event.metrics and epoch_event.eta_s is not None
    hparams = json.loads((run / "hparams.json").read_text())
    assert hparams["arch"] == "tiny" and hparams["classes"] == list(CLASSES)
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "finished"
    from emotion_core.inference import load_classifier_from_file

    probs = load_classifier_from_file(run / "best.keras").predict(np.zeros((1, 48, 48, 1), "f4"))
    assert probs.shape == (1, 7)


def test_a_fine_tune_gets_the_augmentation_its_config_asks_for(tmp_path, capsys):
    import keras

    from emotion_core.inference import load_keras_model
    from emotion_core.soup import is_chain
    from emotion_core.train import with_augmentation
    from emotion_core.zoo import make_tiny_model

    faces = np.random.default_rng(0).random((4, 48, 48, 1), dtype=np.float32)
    plain, augmented = make_tiny_model(), make_tiny_model(augment=True)
    for model, augment in ((plain, True), (augmented, False)):
        changed, note = with_augmentation(model, augment)
        assert any(layer.name == "augment" for layer in changed.layers) == augment and note
        assert is_chain(changed)  # still a plain stack (live distillation needs one)
        # same weights, same inference outputs: the augmentation layer only acts in training
        before, after = model.predict(faces, verbose=0), changed.predict(faces, verbose=0)
        np.testing.assert_allclose(after, before)
    assert with_augmentation(plain, False) == (plain, "")
    inputs = keras.Input((48, 48, 1))  # a graph with branches is left as it is, with a reason
    branches = keras.layers.Concatenate()([keras.layers.Flatten()(inputs)] * 2)
    graph = keras.Model(inputs, keras.layers.Dense(7, activation="softmax")(branches))
    assert with_augmentation(graph, True)[0] is graph
    assert "trains without augmentation" in with_augmentation(graph, True)[1]

    # a registered fer-fast model is published without the layer: fine-tuning it with
    # augmentation on (the default) really augments, and the checkpoints keep the layer
    csv = synthetic_csv(tmp_path / "fer.csv")
    plain.save(tmp_path / "registered.keras")
    run = tmp_path / "ft"
    train(tiny_config(csv, init_model=str(tmp_path / "registered.keras")), run)
    assert "added an augmentation layer to tiny" in capsys.readouterr().out
    assert "augment" in [layer.name for layer in load_keras_model(run / "last.keras").layers]


def test_a_fine_tune_records_its_start_models_architecture_not_a_mismatched_flag(tmp_path, capsys):
    from emotion_core.zoo import make_model

    # a registered fer-fast file is the folded network; `--arch fer-fast` (the default) with it
    # once went into hparams, and publishing would then have folded it a second time
    csv = synthetic_csv(tmp_path / "fer.csv")
    make_model(arch="fer-fast-folded").save(tmp_path / "registered.keras")
    run = tmp_path / "ft"
    train(tiny_config(csv, arch="fer-fast", init_model=str(tmp_path / "registered.keras")), run)
    assert json.loads((run / "hparams.json").read_text())["arch"] == "fer-fast-folded"
    assert "is a fer-fast-folded network; recording that, not 'fer-fast'" in capsys.readouterr().out
    matching = tmp_path / "ft2"  # a start model that is what --arch says: nothing to note
    train(tiny_config(csv, init_model=str(run / "last.keras"), arch="fer-fast-folded"), matching)
    assert json.loads((matching / "hparams.json").read_text())["arch"] == "fer-fast-folded"
    assert "recording that" not in capsys.readouterr().out


def test_a_fine_tune_of_a_network_the_zoo_does_not_know_records_its_name(tmp_path, capsys):
    from emotion_core.prune import prune_vgg
    from emotion_core.publish import inference_form
    from emotion_core.zoo import make_vgg_model

    csv = synthetic_csv(tmp_path / "fer.csv")
    pruned = prune_vgg(make_vgg_model(width=4, name="vgg-w4"), 0.5, name="vgg-w4-p2")
    pruned.save(tmp_path / "pruned.keras")
    run = tmp_path / "ft"  # --arch left at its default, fer-fast, as prune's docstring shows
    train(tiny_config(csv, arch="fer-fast", init_model=str(tmp_path / "pruned.keras")), run)
    assert json.loads((run / "hparams.json").read_text())["arch"] == "vgg-w4-p2"
    assert "is a vgg-w4-p2 network; recording that" in capsys.readouterr().out
    with pytest.raises(ModelError, match="cannot fold this network as 'fer-fast'"):
        inference_form(pruned, "fer-fast")  # as publishing it under a wrong arch once did
    import keras

    from emotion_core.zoo import make_model

    tiny = make_model(arch="tiny")  # a zoo network saved under another name: --arch holds
    keras.Model(tiny.inputs, tiny.outputs, name="whatever").save(tmp_path / "w.keras")
    renamed = tmp_path / "renamed"
    train(tiny_config(csv, arch="tiny", init_model=str(tmp_path / "w.keras")), renamed)
    assert json.loads((renamed / "hparams.json").read_text())["arch"] == "tiny"


def test_resume_continues_from_last_checkpoint(tmp_path, monkeypatch):
    from emotion_core import train as train_module
    from emotion_core.fileio import save_keras_atomically

    saved: list[str] = []  # checkpoints go through the temp-file save, never model.save alone

    def spy(model, path):
        saved.append(Path(path).name)
        save_keras_atomically(model, path)

    monkeypatch.setattr(train_module, "save_keras_atomically", spy)
    csv = synthetic_csv(tmp_path / "fer.csv")
    run = tmp_path / "run"
    train(tiny_config(csv, epochs=1), run)
    assert saved == ["last.keras", "best.keras"]
    assert not list(run.glob(".*partial*"))
    summary = train(tiny_config(csv, epochs=3), run, resume=True)
    assert summary["epochs_done"] == 3
    epochs = [line.split(",")[0] for line in (run / "metrics.csv").read_text().splitlines()[1:]]
    assert epochs == ["1", "2", "3"]


def test_a_resumed_run_that_improves_and_dies_leaves_no_stale_evaluation(tmp_path):
    csv = synthetic_csv(tmp_path / "fer.csv")
    run = tmp_path / "run"
    train(tiny_config(csv, epochs=1), run)
    evaluation = (run / "eval.json").read_text()

    def killed_after_epoch_2(event: ProgressEvent) -> None:
        if event.kind == "epoch" and event.epoch == 2:
            raise RuntimeError("killed before the final evaluation")

    def resume_and_die(best: float) -> None:
        state = json.loads((run / "resume.json").read_text())
        (run / "resume.json").write_text(json.dumps(state | {"epoch": 1, "best": best}))
        with pytest.raises(RuntimeError, match="killed"):
            train(tiny_config(csv, epochs=3), run, resume=True, listeners=[killed_after_epoch_2])

    resume_and_die(best=2.0)  # epoch 2 cannot beat it: best.keras and its evaluation stay
    assert (run / "eval.json").read_text() == evaluation
    resume_and_die(best=-1.0)  # epoch 2 writes a new best.keras: the old evaluation goes
    assert not (run / "eval.json").exists()


def cancelled_run(
    tmp_path: Path, epochs: int, when: Callable[[ProgressEvent], bool], **overrides: object
) -> tuple[dict, Path, Path, list[ProgressEvent]]:
    """A tiny run on 70 synthetic faces (5 batches of 16 an epoch) cancelled (its CANCEL file
    made) at the first event `when` accepts: (summary, data, run folder, every event)."""
    csv = synthetic_csv(tmp_path / "fer.csv")
    run = tmp_path / "run"
    events: list[ProgressEvent] = []

    def listener(event: ProgressEvent) -> None:
        events.append(event)
        if when(event):
            (run / "CANCEL").touch()

    summary = train(tiny_config(csv, epochs=epochs, **overrides), run, listeners=[listener])
    return summary, csv, run, events


def test_cancel_file_stops_training(tmp_path):
    summary, _, run, _ = cancelled_run(tmp_path, 5, lambda e: e.kind == "epoch")
    assert summary["state"] == "cancelled"
    assert summary["epochs_done"] == 1
    assert (run / "last.keras").exists()


def test_a_cancel_mid_epoch_keeps_the_last_whole_epoch_for_resume(tmp_path):
    after_epoch_twos_first_batch = lambda e: e.kind == "batch" and e.epoch == 2  # noqa: E731
    summary, csv, run, events = cancelled_run(tmp_path, 5, after_epoch_twos_first_batch)
    assert summary["state"] == "cancelled" and summary["epochs_done"] == 1
    rows = (run / "metrics.csv").read_text().splitlines()[1:]
    assert [row.split(",")[0] for row in rows] == ["1"]  # no row for the cut epoch
    assert any("its partial training is not saved" in e.message for e in events)
    resumed = train(tiny_config(csv, epochs=2), run, resume=True)
    assert resumed["epochs_done"] == 2  # epoch 2 trained whole, not skipped


def test_a_resumed_run_keeps_its_teacher_and_sample_limit(tmp_path):
    from emotion_core.data import load_dataset
    from emotion_core.distill import save_teacher_file

    csv = synthetic_csv(tmp_path / "fer.csv")
    labels = load_dataset(csv, "Training").labels
    teacher = tmp_path / "teacher.npz"  # for the whole split, as the distill CLI writes it
    save_teacher_file(teacher, np.eye(7)[labels], labels, "test")
    run = tmp_path / "run"
    first = tiny_config(csv, epochs=1, teacher=str(teacher), max_train_samples=40)
    train(first, run)  # 40 of the 70 faces, with the teacher's first 40 rows
    messages: list[str] = []
    plain = tiny_config(csv, epochs=2)  # `--resume` given without the run's other flags
    summary = train(plain, run, resume=True, listeners=[lambda e: messages.append(e.message)])
    assert summary["epochs_done"] == 2
    assert f"teacher probabilities from {teacher}" in messages  # not plain one-hot labels
    hparams = json.loads((run / "hparams.json").read_text())
    assert hparams["max_train_samples"] == 40 and hparams["teacher"] == str(teacher)


def test_a_cancel_in_the_first_epoch_says_nothing_is_saved(tmp_path):
    summary, _, run, events = cancelled_run(tmp_path, 3, lambda e: e.kind == "batch")
    assert summary["state"] == "cancelled" and summary["epochs_done"] == 0
    (cut,) = [e for e in events if e.kind == "epoch"]
    assert "no checkpoint has been saved yet" in cut.message
    assert "best_val_accuracy" not in cut.metrics  # not a -1 "best"
    assert not (run / "last.keras").exists()


def test_a_cancel_while_loading_trains_nothing(tmp_path):
    summary, _, run, _ = cancelled_run(tmp_path, 5, lambda e: e.kind == "start")
    assert summary["state"] == "cancelled" and summary["epochs_done"] == 0
    assert not (run / "last.keras").exists() and not (run / "best.keras").exists()


def test_publish_counts_every_stage_of_a_fine_tuned_run(tmp_path):
    from emotion_core.publish import _stages_note, publish_run, training_lineage
    from emotion_core.registry import update_card

    csv = synthetic_csv(tmp_path / "fer.csv")
    first, second = tmp_path / "runs" / "first", tmp_path / "runs" / "second"
    train(tiny_config(csv, epochs=2), first)
    train(tiny_config(csv, epochs=1, init_model=str(first / "best.keras")), second)
    stages = training_lineage(second)
    assert [(s.run_dir, s.epochs) for s in stages] == [(first, 2), (second, 1)]
    assert all(s.seconds > 0 for s in stages)
    card = publish_run(second, "two-stage", models_dir=tmp_path / "models")
    assert card.epochs == 3
    # the app's runtime ships beside the network, and the card's figures are the runtime's
    assert (tmp_path / "models" / "two-stage.tflite").exists() and card.runtime == "tflite"
    assert card.cpu_ms_per_face and card.cpu_ms_per_face_keras
    assert "cores: median of 200 single-face calls when published" in card.cpu_ms_measured
    assert card.training_time_s == pytest.approx(sum(s.seconds for s in stages), abs=0.1)
    assert "2 stages" in card.notes and "first (2 epochs" in card.notes
    # a run fine-tuned from the registered model counts it as one stage, from its card (whose
    # machines are named once each beside the new run's)
    card = update_card("two-stage", {"hardware": f"GPU box; {card.hardware}"}, tmp_path / "models")
    registered = tmp_path / "models" / "two-stage.keras"
    third = tmp_path / "runs" / "third"
    train(tiny_config(csv, epochs=1, init_model=str(registered)), third)
    stages = training_lineage(third)
    assert [(s.run_dir.name, s.epochs, s.registered) for s in stages] == [
        ("two-stage", 3, True), ("third", 1, False),
    ]  # fmt: skip
    assert stages[0].command == card.command and stages[0].seconds == card.training_time_s
    third_card = publish_run(third, "three-stage", models_dir=tmp_path / "models")
    assert third_card.epochs == 4 and third_card.command.startswith(card.command + " && ")
    assert "two-stage (the registered model: 3 epochs" in third_card.notes
    assert third_card.hardware == card.hardware  # this machine named once
    # a soup (or recalibration) of a registered model is that, not a training run of 0 epochs
    soup = tmp_path / "runs" / "soup"
    soup.mkdir()
    (soup / "hparams.json").write_text(json.dumps({"ingredients": [str(registered)]}))
    stages = training_lineage(soup)
    assert stages[-1].ingredients == (registered.with_suffix(""),)
    assert "soup (batch norm recalibrated on the training faces)" in _stages_note(stages)
    (first / "hparams.json").unlink()  # a parent without its folder's files ends the chain
    assert [s.run_dir for s in training_lineage(second)] == [second]


def test_train_cli_bad_data_is_clear(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "emotion_core.train", "--data", str(tmp_path / "missing.csv"),
         "--arch", "tiny", "--out", str(tmp_path / "run")],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "missing.csv" in proc.stderr and "Traceback" not in proc.stderr
    assert json.loads((tmp_path / "run" / "status.json").read_text())["state"] == "failed"


def test_confusion_and_metrics_by_hand():
    y_true = np.array([0, 0, 1, 1, 1, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 2])
    matrix = confusion_matrix(y_true, y_pred, 3)
    np.testing.assert_array_equal(matrix, [[1, 1, 0], [0, 2, 1], [0, 0, 1]])
    m = metrics_from_confusion(matrix, ("a", "b", "c"))
    assert m.accuracy == pytest.approx(4 / 6)
    # a: P=1, R=.5, F1=2/3; b: P=2/3, R=2/3, F1=2/3; c: P=.5, R=1, F1=2/3
    assert m.per_class["a"].f1 == pytest.approx(2 / 3)
    assert m.per_class["c"].precision == pytest.approx(0.5)
    assert m.macro_f1 == pytest.approx(2 / 3)
    assert m.classes == ("a", "b", "c") and m.ece is None and m.no_face is None
    np.testing.assert_array_equal(m.matrix, matrix)


def test_report_counts_missed_faces_as_wrong():
    probs = np.eye(7)[[0, 1, 2]]
    report = report_from_probs(probs, np.array([0, 1, 2]), missed_labels=np.array([0]))
    assert report.accuracy == pytest.approx(0.75) and report.n == 4
    assert report.no_face == 1
    angry = report.per_class["angry"]  # one found and right, one not found
    assert angry.recall == pytest.approx(0.5) and angry.support == 2
    assert angry.precision == pytest.approx(1.0)
    assert report.macro_f1 == pytest.approx((2 / 3 + 1 + 1) / 3)  # same basis as accuracy


def test_eval_report_keeps_the_eval_json_format():
    probs = np.random.default_rng(0).dirichlet(np.ones(7), 30)
    labels = np.arange(30) % 7
    report = report_from_probs(probs, labels, missed_labels=np.array([3]))
    data = json.loads(json.dumps(report.to_dict()))
    assert list(data) == ["accuracy", "macro_f1", "n", "per_class", "confusion_matrix",
                          "classes", "no_face", "ece"]  # fmt: skip
    assert list(data["per_class"]["angry"]) == ["precision", "recall", "f1", "support"]
    assert data["confusion_matrix"] == report.matrix.tolist() and data["classes"] == list(CLASSES)
    assert EvalReport.from_dict(data) == report and EvalReport.from_dict(data).to_dict() == data
    assert "no_face" not in report_from_probs(probs, labels).to_dict()  # only when detecting
    # what writers put beside the report (split, seconds, ...) is not part of it
    assert EvalReport.from_dict(data | {"split": "PublicTest", "seconds": 1.5}) == report


def test_eval_report_reads_old_and_partial_files():
    partial = EvalReport.from_dict({"accuracy": 0.5})
    assert partial.accuracy == 0.5 and partial.n == 0 and partial.macro_f1 == 0.0
    assert not partial.per_class and not partial.confusion_matrix and not partial.classes
    assert partial.ece is None and partial.no_face is None
    assert EvalReport.from_dict({"n": "x", "per_class": [], "confusion_matrix": 3}).n == 0
    old = {"accuracy": 0.7, "macro_f1": 0.6, "n": 2,
           "per_class": {"sad": {"precision": 0.5, "recall": 1.0, "f1": 0.6, "support": 2}},
           "confusion_matrix": [[2]], "classes": ["sad"]}  # fmt: skip
    assert EvalReport.from_dict(old).to_dict() == old  # an eval.json from before ece


def test_temperature_scaling_improves_overconfident_model():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 7, 2000)
    logits = rng.normal(size=(2000, 7))
    logits[np.arange(2000), labels] += 1.0
    probs = apply_temperature(np.exp(logits) / np.exp(logits).sum(1, keepdims=True), 0.3)
    t = fit_temperature(probs, labels)
    assert t > 1.5
    assert expected_calibration_error(apply_temperature(probs, t), labels) < (
        expected_calibration_error(probs, labels)
    )


def test_ece_perfect_calibration_is_zero():
    probs = np.tile([[1.0, 0, 0, 0, 0, 0, 0]], (10, 1))
    assert expected_calibration_error(probs, np.zeros(10, int)) == 0.0


def test_registry_round_trip_and_mismatch(tmp_path):
    from emotion_core.inference import load_classifier
    from emotion_core.registry import list_models, register_model, set_default
    from emotion_core.zoo import make_model

    path = tmp_path / "m.keras"
    make_model(arch="tiny").save(path)
    card = ModelCard(name="tiny-a", arch="tiny", temperature=2.0)
    register_model(path, card, tmp_path / "models", make_default=True)
    assert default_model_name(tmp_path / "models") == "tiny-a"
    classifier = load_classifier(models_dir=tmp_path / "models")
    assert classifier.name == "tiny-a" and classifier.temperature == 2.0
    assert [c.name for c in list_models(tmp_path / "models")] == ["tiny-a"]
    assert card_hash(card) == card_hash(ModelCard(name="tiny-a", arch="tiny", temperature=2.0))
    with pytest.raises(ModelError, match="already registered"):
        register_model(path, ModelCard(name="tiny-a", arch="tiny"), tmp_path / "models")
    # a card that disagrees with the network
    register_model(path, ModelCard(name="wrong", arch="tiny", classes=("a", "b")),
                   tmp_path / "models")  # fmt: skip
    with pytest.raises(ModelError, match="7 outputs but the card lists 2 classes"):
        load_classifier("wrong", tmp_path / "models")
    with pytest.raises(ModelError, match="invalid model name"):
        set_default("../etc/passwd", tmp_path / "models")
    # stored deflated (smaller), and a file that is not a .keras zip is refused
    assert (tmp_path / "models" / "tiny-a.keras").stat().st_size < path.stat().st_size
    (tmp_path / "junk.keras").write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="junk.keras: not a .keras file"):
        register_model(tmp_path / "junk.keras", ModelCard(name="junk", arch="tiny"),
                       tmp_path / "models")  # fmt: skip
    assert not (tmp_path / "models" / "junk.keras").exists()


def test_odd_card_files_are_skipped_with_a_reason_not_a_crash(tmp_path):
    from emotion_core.registry import list_models, read_card

    models = tmp_path / "models"
    models.mkdir()
    good = ModelCard(name="good", arch="tiny", val_accuracy=0.7)
    odd = {
        "renamed": json.dumps(ModelCard(name="other", arch="tiny").to_dict()),
        "text-acc": json.dumps({"name": "text-acc", "arch": "tiny", "val_accuracy": "high"}),
        "deep": "[" * 100_000,
        "cold": json.dumps({"name": "cold", "arch": "tiny", "temperature": -1}),
        "nan-t": '{"name": "nan-t", "arch": "tiny", "temperature": NaN}',
    }
    for name, text in {"good": json.dumps(good.to_dict()), **odd}.items():
        (models / f"{name}.json").write_text(text)
        (models / f"{name}.keras").write_bytes(b"")
    (models / "folder.json").mkdir()  # a folder where a card should be
    (models / "folder.keras").write_bytes(b"")
    assert [c.name for c in list_models(models)] == ["good"]
    for name, message in [
        ("renamed", "the card is named 'other', not 'renamed'"),
        ("text-acc", "field 'val_accuracy': 'high' is not a number"),
        ("deep", "not valid JSON"),
        ("folder", "model card unreadable"),
        ("cold", "field 'temperature': must be positive, not -1"),
        ("nan-t", "field 'temperature': nan is not a number"),
    ]:
        with pytest.raises(ModelError, match=message):
            read_card(name, models)
    (models / "registry.json").write_text("[" * 100_000)
    with pytest.raises(ModelError, match="registry is corrupt"):
        default_model_name(models)


HUGE_INT = "1" * 5000  # valid JSON that json.loads refuses with a plain ValueError


def test_load_json_object_says_why_a_file_is_unusable(tmp_path):
    from emotion_core.fileio import JsonFileError, load_json_object, read_json_object

    cases = {
        "missing": None,
        "folder": None,
        "not-utf8": b'\xff\xfe{"a": 1}',
        "bad-json": b"{oops",
        "deep": b"[" * 100_000,
        "huge-int": f'{{"a": {HUGE_INT}}}'.encode(),
        "list": b"[1]",
        "text": b'"text"',
        "null": b"null",
    }
    (tmp_path / "folder").mkdir()
    for name, content in cases.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
    expected = {"missing": "missing", "folder": "unreadable", "list": "not_object"}
    expected |= {"text": "not_object", "null": "not_object"}
    for name in cases:
        with pytest.raises(JsonFileError) as caught:
            load_json_object(tmp_path / name)
        assert isinstance(caught.value, ValueError)
        assert caught.value.reason == expected.get(name, "invalid"), name
        assert bool(caught.value.detail) == (caught.value.reason != "not_object"), name
        assert str(tmp_path / name) in str(caught.value)
        assert read_json_object(tmp_path / name) == {}, name  # the lenient reader: {} for all
    (tmp_path / "ok.json").write_text('{"a": [1, "é"]}', encoding="utf-8")
    assert load_json_object(tmp_path / "ok.json") == {"a": [1, "é"]}


def test_card_and_registry_files_that_used_to_leak_a_traceback(tmp_path):
    """A card or registry.json json.loads refuses with a plain ValueError (an integer over
    Python's digit limit) raised that ValueError through read_card, list_models and
    default_model_name; a top-level list, string or null registry gets a clear message."""
    from emotion_core.registry import list_models, read_card

    models = tmp_path / "models"
    models.mkdir()
    (models / "big.json").write_text(
        f'{{"name": "big", "arch": "tiny", "val_accuracy": {HUGE_INT}}}'
    )
    (models / "big.keras").write_bytes(b"")
    with pytest.raises(ModelError, match="big.json: model card is not valid JSON"):
        read_card("big", models)
    assert list_models(models) == []  # skipped, not a crash
    for text, detail in [
        (f'{{"default": {HUGE_INT}}}', "Exceeds the limit"),
        ("[1]", "not a JSON object"),
        ('"m"', "not a JSON object"),
        ("null", "not a JSON object"),
        ('{"name": "m"}', "no 'default'"),
        ('\xff{"default": "m"}', "codec"),
    ]:
        (models / "registry.json").write_bytes(text.encode("latin-1"))
        with pytest.raises(ModelError, match="registry is corrupt") as caught:
            default_model_name(models)
        assert detail in str(caught.value), text
    (models / "registry.json").unlink()
    with pytest.raises(ModelError, match="no registry"):
        default_model_name(models)
    (models / "registry.json").mkdir()
    with pytest.raises(ModelError, match="registry unreadable"):
        default_model_name(models)


def test_models_dir_reads_the_environment_at_call_time(tmp_path, monkeypatch):
    from emotion_core import jobs, registry

    monkeypatch.delenv("EMOTION_MODELS_DIR", raising=False)
    assert registry.models_dir() == registry.MODELS_DIR == jobs.current_models_dir()
    monkeypatch.setenv("EMOTION_MODELS_DIR", str(tmp_path / "elsewhere"))
    assert registry.models_dir() == tmp_path / "elsewhere" == jobs.current_models_dir()
    monkeypatch.setenv("EMOTION_MODELS_DIR", "")  # empty: unset, as before
    assert registry.models_dir() == registry.MODELS_DIR


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")
def test_registered_copy_is_on_disk_before_the_default_names_it(tmp_path, monkeypatch):
    import os
    import zipfile

    from emotion_core.registry import register_model

    source = tmp_path / "src.keras"
    with zipfile.ZipFile(source, "w") as archive:
        archive.writestr("config.json", "{}")
    events: list[tuple[str, ...]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst) -> None:
        events.append(("replace", str(src), str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    models = Path(os.path.realpath(tmp_path)) / "models"
    register_model(source, ModelCard(name="m", arch="tiny"), models, make_default=True)

    tmp, target = str(models / "m.keras.tmp"), str(models / "m.keras")
    renamed = events.index(("replace", tmp, target))
    assert ("fsync", tmp) in events[:renamed]  # the data is on disk before the rename ...
    default = next(i for i, e in enumerate(events) if e[-1] == str(models / "registry.json"))
    assert ("fsync", str(models)) in events[renamed:default]  # ... and the rename before the
    assert default > renamed  # default can point at it
    assert default_model_name(models) == "m"


def test_corrupt_model_file_is_clear(tmp_path):
    from emotion_core.fileio import atomic_write_json
    from emotion_core.inference import load_classifier

    models = tmp_path / "models"
    models.mkdir()
    (models / "junk.keras").write_bytes(b"this is not a zip")
    atomic_write_json(models / "junk.json", ModelCard(name="junk", arch="tiny").to_dict())
    atomic_write_json(models / "registry.json", {"default": "junk"})
    with pytest.raises(ModelError, match=r"junk.keras: not a \.keras model file \(not a zip"):
        load_classifier(models_dir=models)
    (models / "registry.json").write_text("{oops")
    with pytest.raises(ModelError, match="registry is corrupt"):
        default_model_name(models)


def test_evaluate_cli_last_line(tmp_path):
    from emotion_core.zoo import make_model

    csv = synthetic_csv(tmp_path / "fer.csv", n_train=7, n_val=14)
    make_model(arch="tiny").save(tmp_path / "m.keras")
    out = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "emotion_core.evaluate", "--model", str(tmp_path / "m.keras"),
         "--data", str(csv), "--split", "PublicTest", "--json", str(out), "--tta"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
        env={"EMOTION_CACHE_DIR": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    # TensorFlow's native start-up chatter (absl, CPU feature notes) is kept out of the output
    assert "absl" not in proc.stderr and "cpu_feature_guard" not in proc.stderr, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("accuracy=") and last.endswith("n=14")
    assert proc.stdout.startswith(f"model {tmp_path / 'm.keras'} (keras runtime), PublicTest of")
    assert "14 faces, with flip TTA" in proc.stdout.splitlines()[0]
    report = json.loads(out.read_text())
    assert np.array(report["confusion_matrix"]).sum() == 14
    assert list(report)[-5:] == ["model", "data", "split", "tta", "detect_faces"]
    assert EvalReport.from_dict(report).n == 14
    assert (tmp_path / "report.confusion.png").exists()  # beside the report, never over it

    (tmp_path / "a-file").write_text("")  # a report that cannot be written: said before the work
    proc = subprocess.run(
        [sys.executable, "-m", "emotion_core.evaluate", "--model", str(tmp_path / "m.keras"),
         "--data", str(csv), "--json", str(tmp_path / "a-file" / "report.json")],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
        env={"EMOTION_CACHE_DIR": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr == f"error: {tmp_path / 'a-file'}: exists and is not a folder\n"
    assert "accuracy=" not in proc.stdout


class FakeTFLiteCall:
    """Stands in for runtime.TFLiteCall: uniform probabilities for (N, 48, 48, 1) faces."""

    input_shape = (48, 48, 1)
    num_outputs = len(CLASSES)
    source = "fake.tflite"

    def __call__(self, faces: np.ndarray) -> np.ndarray:
        return np.full((len(faces), self.num_outputs), 1.0 / self.num_outputs, np.float32)


def test_evaluating_a_registered_models_file_runs_it_as_the_app_does(tmp_path, monkeypatch, capsys):
    import shutil

    from emotion_core import evaluate, runtime
    from emotion_core.registry import register_model
    from emotion_core.zoo import make_model

    fake = classmethod(lambda cls, path, threads=None: FakeTFLiteCall())
    monkeypatch.setattr(runtime.TFLiteCall, "from_file", fake)
    monkeypatch.delenv("EMOTION_RUNTIME", raising=False)
    models = tmp_path / "models"
    make_model(arch="tiny").save(tmp_path / "m.keras")
    card = ModelCard(name="tiny-t", arch="tiny", runtime="tflite")
    register_model(tmp_path / "m.keras", card, models, tflite=b"fake")
    network = str(models / "tiny-t.keras")
    monkeypatch.setattr(evaluate, "MODELS_DIR", models)
    assert evaluate.resolve_model("tiny-t")[0].runtime == "tflite"
    classifier, name = evaluate.resolve_model(network)
    assert (classifier.runtime, name) == ("tflite", network)  # the same runtime as by name
    assert "registered model tiny-t: evaluated as the app runs it" in capsys.readouterr().err
    copy = tmp_path / "copy"
    copy.mkdir()
    for suffix in (".keras", ".json"):
        shutil.copy(models / f"tiny-t{suffix}", copy / f"tiny-t{suffix}")
    assert evaluate.resolve_model(str(copy / "tiny-t.keras"))[0].runtime == "keras"
    monkeypatch.setenv("EMOTION_RUNTIME", "keras")  # an explicit runtime choice still wins
    assert evaluate.resolve_model(network)[0].runtime == "keras"
    monkeypatch.delenv("EMOTION_RUNTIME")
    csv = synthetic_csv(tmp_path / "fer.csv", n_train=7, n_val=7)
    assert evaluate.main(["--model", network, "--data", str(csv)]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith(f"model {network} (tflite runtime), PublicTest of")


def test_evaluate_feeds_a_model_faces_of_its_own_input_size(tmp_path, capsys):
    from emotion_core import evaluate
    from emotion_core.zoo import make_model

    make_model(input_shape=(64, 64, 1), arch="tiny").save(tmp_path / "big.keras")
    csv = synthetic_csv(tmp_path / "fer.csv", n_train=7, n_val=14)
    assert evaluate.main(["--model", str(tmp_path / "big.keras"), "--data", str(csv)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].endswith("n=14")


def test_emotion_core_never_imports_ui_packages():
    code = (
        "import sys, importlib, pkgutil, emotion_core\n"
        "for m in pkgutil.iter_modules(emotion_core.__path__):\n"
        "    importlib.import_module('emotion_core.' + m.name)\n"
        "bad = [n for n in ('streamlit', 'streamlit_webrtc', 'av') if n in sys.modules]\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_temperature_that_worsens_ece_is_not_kept(monkeypatch):
    from emotion_core import calibration
    from emotion_core.calibration import choose_temperature

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 7, 4000)
    logits = rng.normal(size=(4000, 7))
    logits[np.arange(4000), labels] += 2.0
    over = np.exp(3 * logits) / np.exp(3 * logits).sum(axis=1, keepdims=True)
    temperature, note = choose_temperature(over, labels)  # overconfident: a real fix
    assert temperature > 1.2 and note == ""
    assert expected_calibration_error(apply_temperature(over, temperature), labels) < (
        expected_calibration_error(over, labels)
    )
    # When the fitted temperature would make the ECE worse, 1.0 is kept and the note says why.
    monkeypatch.setattr(calibration, "fit_temperature", lambda probs, labels: 10.0)
    temperature, note = choose_temperature(over, labels)
    assert temperature == 1.0 and "(10.000) made the 15-bin ECE worse" in note


def test_a_keras_file_with_two_outputs_is_a_model_error(tmp_path):
    import keras

    from emotion_core.inference import load_classifier_from_file

    faces = keras.Input((48, 48, 1))
    flat = keras.layers.Flatten()(faces)
    two = keras.Model(faces, [keras.layers.Dense(7)(flat), keras.layers.Dense(1)(flat)])
    two.save(tmp_path / "two.keras")
    with pytest.raises(ModelError, match="expected one input and one output"):
        load_classifier_from_file(tmp_path / "two.keras")


def test_a_checkpoint_save_that_dies_leaves_the_previous_checkpoint(tmp_path):
    from emotion_core.fileio import save_keras_atomically

    class DiesMidSave:
        def save(self, path):
            Path(path).write_bytes(b"PK\x03\x04 half a zip")
            raise KeyboardInterrupt  # e.g. the SIGTERM/SIGKILL of a hard stop

    last = tmp_path / "last.keras"
    last.write_bytes(b"the previous, complete checkpoint")
    with pytest.raises(KeyboardInterrupt):
        save_keras_atomically(DiesMidSave(), last)
    assert last.read_bytes() == b"the previous, complete checkpoint"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.keras"]


def test_a_model_named_registry_is_refused_before_its_card_replaces_registry_json(tmp_path):
    import zipfile

    from emotion_core.registry import register_model, validate_name

    keras_file = tmp_path / "m.keras"
    with zipfile.ZipFile(keras_file, "w") as archive:
        archive.writestr("config.json", "{}")
    models = tmp_path / "models"
    register_model(keras_file, ModelCard(name="a", arch="tiny"), models, make_default=True)
    for reserved in ("registry", "Registry"):  # some file systems ignore case
        with pytest.raises(ModelError, match="reserved .*registry.json"):
            register_model(keras_file, ModelCard(name=reserved, arch="tiny"), models)
    assert default_model_name(models) == "a"
    assert sorted(p.name for p in models.iterdir()) == ["a.json", "a.keras", "registry.json"]
    assert validate_name("registry-v2") == "registry-v2"


def test_the_default_card_needs_its_network_file_and_says_how_to_get_one(tmp_path):
    from emotion_core.registry import default_card, register_model
    from emotion_core.zoo import make_tiny_model

    models = tmp_path / "models"
    with pytest.raises(ModelError, match="no registry") as caught:
        default_card(models)
    assert "Train one" in str(caught.value)
    make_tiny_model().save(tmp_path / "tiny.keras")
    register_model(tmp_path / "tiny.keras", ModelCard(name="gone", arch="tiny"), models, True)
    register_model(tmp_path / "tiny.keras", ModelCard(name="kept", arch="tiny"), models)
    assert default_card(models).name == "gone"
    (models / "gone.keras").unlink()
    with pytest.raises(ModelError, match=r"gone.keras: missing") as caught:
        default_card(models)
    assert "1 registered model(s) (kept): make one the default" in str(caught.value)
    assert default_card(models, require_network=False).name == "gone"


def test_update_card_reads_the_card_once_and_refuses_a_change_that_breaks_it(tmp_path, monkeypatch):
    from emotion_core import registry
    from emotion_core.registry import read_card, update_card

    models = tmp_path / "models"
    models.mkdir()
    path = models / "m.json"
    path.write_text(json.dumps({**ModelCard(name="m", arch="tiny").to_dict(), "extra": 1}))
    before = path.read_text()
    for changes, problem in (
        ({"name": "other"}, "the card is named 'other', not 'm'"),  # would rename the model
        ({"cpu_ms_per_face": "fast"}, "model card field 'cpu_ms_per_face': 'fast' is not a number"),
    ):
        with pytest.raises(ModelError, match=f"m.json: {problem}"):
            update_card("m", changes, models)
        assert path.read_text() == before  # nothing written
    reads = []
    real_read_text = Path.read_text

    def counting_read_text(self: Path, *args, **kwargs) -> str:
        reads.append(self.name)
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", counting_read_text)
    card = update_card("m", {"cpu_ms_per_face": 1.5}, models)
    assert reads == ["m.json"]  # parsed once
    assert card == read_card("m", models) and card.cpu_ms_per_face == 1.5
    assert json.loads(path.read_text())["extra"] == 1
    path.write_text("{broken")
    with pytest.raises(ModelError, match="m.json: model card is not valid JSON"):
        update_card("m", {"cpu_ms_per_face": 2.0}, models)

    def no_space(*args, **kwargs) -> None:
        raise OSError(28, "No space left on device")

    path.write_text(before)
    monkeypatch.setattr(registry, "atomic_write_json", no_space)
    with pytest.raises(ModelError, match="m.json: cannot write the model card"):
        update_card("m", {"cpu_ms_per_face": 2.0}, models)
