"""Knowledge distillation: target maths, teacher files, the CLI and a distilled training run."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from helpers_data import synthetic_csv, tiny_config

from emotion_core.distill import (
    TeacherError,
    distillation_targets,
    ensemble_probabilities,
    load_teacher_file,
    save_teacher_file,
    soften,
)
from emotion_core.train import train

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("private_cache")


def test_soften_flattens_and_keeps_the_ranking():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], dtype=np.float32)
    soft = soften(probs, 2.0)
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, atol=1e-6)
    assert (soft.argmax(axis=1) == probs.argmax(axis=1)).all()
    assert (soft.max(axis=1) < probs.max(axis=1)).all()
    # T = 2 is the square root of the probabilities, renormalised.
    expected = np.sqrt(probs[0]) / np.sqrt(probs[0]).sum()
    np.testing.assert_allclose(soft[0], expected, rtol=1e-5)


def test_targets_mix_teacher_and_smoothed_labels_by_hand():
    teacher = np.array([[0.5, 0.25, 0.25]], dtype=np.float32)
    targets = distillation_targets(np.array([1]), teacher, alpha=0.5, temperature=1.0,
                                   label_smoothing=0.3)  # fmt: skip
    # one-hot [0, 1, 0] smoothed by 0.3 over 3 classes -> [0.1, 0.8, 0.1]
    np.testing.assert_allclose(targets, [[0.3, 0.525, 0.175]], rtol=1e-6)
    assert distillation_targets(np.array([2]), teacher, 0.0, 4.0)[0].tolist() == [0, 0, 1]
    with pytest.raises(TeacherError, match="alpha"):
        distillation_targets(np.array([0]), teacher, 1.5, 2.0)
    with pytest.raises(TeacherError, match="temperature"):
        distillation_targets(np.array([0]), teacher, 0.5, 0.0)


def test_teacher_file_round_trip_and_misaligned_rows(tmp_path):
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(7), size=5).astype(np.float32)
    labels = np.array([0, 3, 6, 2, 1])
    path = tmp_path / "teacher.npz"
    save_teacher_file(path, probs, labels, source="x.keras")
    np.testing.assert_allclose(load_teacher_file(path, labels), probs, atol=2e-3)
    with pytest.raises(TeacherError, match="different training set"):
        load_teacher_file(path, labels[:4])
    with pytest.raises(TeacherError, match="different training set"):
        load_teacher_file(path, labels[::-1])
    with pytest.raises(TeacherError, match="not found"):
        load_teacher_file(tmp_path / "missing.npz", labels)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(TeacherError, match="not a teacher file"):
        load_teacher_file(tmp_path / "bad.npz", labels)
    for name, content in (("empty.npz", b""), ("junk.npz", b"PK\x03\x04 not a zip archive")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(TeacherError, match="not a teacher file"):
            load_teacher_file(tmp_path / name, labels)


def test_distilled_training_from_a_teacher_model_and_its_cli_file(tmp_path):
    csv = synthetic_csv(tmp_path / "fer.csv")
    train(tiny_config(csv, epochs=2), tmp_path / "teacher")
    teacher = tmp_path / "teacher" / "best.keras"

    summary = train(tiny_config(csv, teacher=str(teacher)), tmp_path / "student")
    assert summary["state"] == "finished"
    hparams = json.loads((tmp_path / "student" / "hparams.json").read_text())
    assert hparams["teacher"] == str(teacher) and hparams["distill_alpha"] == 0.5

    out = tmp_path / "teacher.npz"
    proc = subprocess.run(
        [sys.executable, "-m", "emotion_core.distill", "--teacher", str(teacher),
         "--data", str(csv), "--out", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "70 rows" in proc.stdout
    summary = train(tiny_config(csv, teacher=str(out)), tmp_path / "student2")
    assert summary["state"] == "finished"


def test_an_ensemble_teacher_is_the_mean_of_its_members(tmp_path, capsys):
    from emotion_core.distill import main

    labels = np.array([0, 1, 2, 3])
    first = np.eye(7, dtype=np.float32)[[0, 1, 2, 4]]  # 3 of 4 right
    second = np.full((4, 7), 1 / 7, dtype=np.float32)
    second[:, 3] = 0.5
    second /= second.sum(axis=1, keepdims=True)
    for name, probs in (("a.npz", first), ("b.npz", second)):
        save_teacher_file(tmp_path / name, probs, labels, source=name)
    faces = np.zeros((4, 48, 48, 1), np.float32)
    mean, agreements = ensemble_probabilities(
        [str(tmp_path / "a.npz"), str(tmp_path / "b.npz")], faces, labels
    )
    np.testing.assert_allclose(mean, (first + second) / 2, atol=2e-3)
    assert agreements == [0.75, 0.25]
    with pytest.raises(TeacherError, match="no teacher"):
        ensemble_probabilities([], faces, labels)

    csv = synthetic_csv(tmp_path / "fer.csv")
    train(tiny_config(csv, epochs=1), tmp_path / "t")
    args = ["--data", str(csv), "--out", str(tmp_path / "ens.npz")]
    teacher = str(tmp_path / "t" / "last.keras")
    assert main(["--teacher", teacher, "--teacher", teacher, *args]) == 0
    out = capsys.readouterr().out
    assert out.count("last.keras: agrees with the labels on") == 2
    assert "70 rows, ensemble of 2 agrees with the labels on" in out
    assert main(["--teacher", teacher, "--teacher", str(tmp_path / "a.npz"), *args]) == 2
    assert "different training set" in capsys.readouterr().err


def test_train_cli_with_a_misaligned_teacher_is_clear(tmp_path):
    csv = synthetic_csv(tmp_path / "fer.csv")
    save_teacher_file(tmp_path / "t.npz", np.full((3, 7), 1 / 7), np.zeros(3, int), "x")
    proc = subprocess.run(
        [sys.executable, "-m", "emotion_core.train", "--data", str(csv), "--arch", "tiny",
         "--epochs", "1", "--teacher", str(tmp_path / "t.npz"), "--out", str(tmp_path / "run")],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "different training set" in proc.stderr and "Traceback" not in proc.stderr


def test_resume_from_a_checkpoint_without_optimizer_state(tmp_path):
    """scripts/gpu_train.sh returns checkpoints without optimizer state; --resume goes on."""
    import keras

    import emotion_core.zoo  # noqa: F401  registers FaceAugment

    csv = synthetic_csv(tmp_path / "fer.csv")
    run = tmp_path / "run"
    train(tiny_config(csv, epochs=1), run)
    slim = keras.saving.load_model(run / "last.keras", compile=False, safe_mode=True)
    slim.save(run / "last.keras")
    summary = train(tiny_config(csv, epochs=2), run, resume=True)
    assert summary["epochs_done"] == 2


def test_live_distillation_shows_teachers_and_student_the_same_view(tmp_path):
    import keras

    from emotion_core.distill import (
        TeacherError,
        live_distillation_loss,
        live_distillation_trainer,
        soften,
    )
    from emotion_core.zoo import make_tiny_model

    keras.utils.set_random_seed(3)
    student, teachers = make_tiny_model(augment=True), [make_tiny_model(), make_tiny_model()]
    trainer = live_distillation_trainer(student, teachers, temperature=2.0)
    faces = np.random.default_rng(0).random((5, 48, 48, 1), dtype=np.float32)
    out = np.asarray(trainer(faces, training=False))
    assert out.shape == (5, 14)
    np.testing.assert_allclose(out[:, :7], np.asarray(student(faces)), atol=1e-5)
    expected = np.mean([soften(np.asarray(t(faces)), 2.0) for t in teachers], axis=0)
    np.testing.assert_allclose(out[:, 7:], expected, atol=1e-4)
    # in training mode the view is augmented, and the teachers see that same view
    view = np.asarray(trainer(faces, training=True))
    assert not np.allclose(view[:, 7:], expected, atol=1e-4)
    np.testing.assert_allclose(view[:, 7:].sum(axis=1), 1.0, atol=1e-5)

    # the loss is the cross-entropy against alpha x teachers + (1 - alpha) x labels
    labels = np.eye(7, dtype=np.float32)[[0, 1, 2, 3, 4]]
    loss = np.asarray(live_distillation_loss(0.25)(labels, out))
    target = 0.25 * out[:, 7:] + 0.75 * labels
    np.testing.assert_allclose(loss, -(target * np.log(out[:, :7])).sum(axis=1), rtol=1e-4)

    # one step trains the student only
    teacher_weights = [w.copy() for w in teachers[0].get_weights()]
    student_weights = [w.copy() for w in student.get_weights()]
    trainer.compile(optimizer="sgd", loss=live_distillation_loss(0.5))
    trainer.fit(faces, labels, epochs=1, verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(teacher_weights, teachers[0].get_weights()))
    assert not all(np.array_equal(a, b) for a, b in zip(student_weights, student.get_weights()))

    with pytest.raises(TeacherError, match="augmentation layer"):
        live_distillation_trainer(make_tiny_model(augment=False), teachers, 2.0)


def test_a_live_runs_optimizer_state_is_restored_exactly_or_not_at_all(tmp_path):
    import keras

    from emotion_core.train import restore_optimizer_state, save_optimizer_state
    from emotion_core.zoo import make_tiny_model

    def compiled() -> keras.Model:
        keras.utils.set_random_seed(0)
        model = make_tiny_model()
        model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss="categorical_crossentropy")
        return model

    faces = np.random.default_rng(0).random((8, 48, 48, 1), dtype=np.float32)
    labels = np.eye(7, dtype=np.float32)[np.arange(8) % 7]
    trained = compiled()
    trained.fit(faces, labels, epochs=3, batch_size=4, verbose=0)
    save_optimizer_state(trained.optimizer, tmp_path / "optimizer.npz")
    resumed = compiled()
    assert restore_optimizer_state(resumed, tmp_path / "optimizer.npz") == 6
    for mine, theirs in zip(resumed.optimizer.variables, trained.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs))

    other = make_tiny_model(num_classes=3)  # another graph: nothing is loaded
    other.compile(optimizer=keras.optimizers.AdamW(1e-3), loss="categorical_crossentropy")
    assert restore_optimizer_state(other, tmp_path / "optimizer.npz") is None
    assert int(np.asarray(other.optimizer.iterations)) == 0
    (tmp_path / "broken.npz").write_bytes(b"not a zip file")
    assert restore_optimizer_state(resumed, tmp_path / "broken.npz") is None
    assert restore_optimizer_state(resumed, tmp_path / "missing.npz") is None


def test_live_distillation_trains_resumes_and_refuses_probability_files(tmp_path):
    csv = synthetic_csv(tmp_path / "fer.csv")
    train(tiny_config(csv, epochs=1), tmp_path / "teacher")
    teacher = str(tmp_path / "teacher" / "best.keras")
    config = tiny_config(csv, teacher=f"{teacher},{teacher}", live_teacher=True, epochs=1)
    run = tmp_path / "live"
    assert train(config, run)["state"] == "finished"
    hparams = json.loads((run / "hparams.json").read_text())
    assert hparams["live_teacher"] is True and hparams["params"] > 0
    from emotion_core.inference import load_keras_model

    student = load_keras_model(run / "best.keras")  # the plain student, not the training graph
    assert student.output_shape == (None, 7) and json.loads((run / "eval.json").read_text())["n"]
    with np.load(run / "optimizer.npz") as saved:  # written with every epoch's checkpoint
        step_after_one_epoch = int(saved["arr_0"])
    assert step_after_one_epoch > 0
    assert train(replace(config, epochs=2), run, resume=True)["epochs_done"] == 2
    with np.load(run / "optimizer.npz") as saved:  # the step count went on, not from zero
        assert int(saved["arr_0"]) == 2 * step_after_one_epoch

    # a student published without its augmentation layer (registered fer-fast) gets one
    from emotion_core.zoo import make_tiny_model

    make_tiny_model().save(tmp_path / "folded.keras")
    folded = replace(config, init_model=str(tmp_path / "folded.keras"))
    assert train(folded, tmp_path / "live-folded")["state"] == "finished"

    proc = subprocess.run(
        [sys.executable, "-m", "emotion_core.train", "--data", str(csv), "--arch", "tiny",
         "--epochs", "1", "--live-teacher", "--teacher", str(tmp_path / "t.npz"),
         "--out", str(tmp_path / "bad")],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "must be a .keras file" in proc.stderr


def test_train_with_a_broken_teacher_file_fails_clearly_and_says_so(tmp_path, capsys):
    from emotion_core.train import main

    csv = synthetic_csv(tmp_path / "fer.csv")
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 cut short")  # a zip's start only
    run = tmp_path / "run"
    args = ["--data", str(csv), "--arch", "tiny", "--epochs", "1", "--out", str(run)]
    assert main([*args, "--teacher", str(tmp_path / "broken.npz")]) == 2
    err = capsys.readouterr().err
    assert "broken.npz: not a teacher file" in err and "Traceback" not in err
    status = json.loads((run / "status.json").read_text())  # not "running" with a dead pid
    assert status["state"] == "failed" and "not a teacher file" in status["message"]


def test_the_distill_cli_writes_and_names_the_npz_file(tmp_path, capsys):
    from emotion_core.data import load_dataset
    from emotion_core.distill import main

    csv = synthetic_csv(tmp_path / "fer.csv")
    labels = load_dataset(csv, "Training").labels
    save_teacher_file(tmp_path / "t.npz", np.eye(7)[labels], labels, "test")
    args = ["--teacher", str(tmp_path / "t.npz"), "--data", str(csv)]
    assert main([*args, "--out", str(tmp_path / "x" / "tout")]) == 0
    written = tmp_path / "x" / "tout.npz"
    assert f"wrote {written}: 70 rows" in capsys.readouterr().out
    assert len(load_teacher_file(written, labels)) == 70
    (tmp_path / "a-file").write_text("")
    assert main([*args, "--out", str(tmp_path / "a-file" / "t.npz")]) == 2
    assert "a-file" in capsys.readouterr().err
