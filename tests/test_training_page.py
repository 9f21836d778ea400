"""pages/3_Training.py under streamlit's AppTest, with models (and runs) in a temporary folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers_data import synthetic_csv, write_dataset, write_ferplus_votes
from streamlit.testing.v1 import AppTest

from emotion_core import jobs, registry
from emotion_core.classes import CLASSES
from emotion_core.evaluate import report_from_probs
from emotion_core.registry import ModelCard

PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "3_Training.py")
pytestmark = pytest.mark.slow


def save_tiny_model(path: Path) -> Path:
    from emotion_core.zoo import make_tiny_model

    make_tiny_model().save(path)
    return path


def write_run(runs: Path, run_id: str, status: dict[str, Any], data: Path,
              model: Path | None = None) -> Path:  # fmt: skip
    """A run folder as train.py leaves it (without running training)."""
    run = runs / run_id
    run.mkdir(parents=True)
    hparams = {"data": str(data), "arch": "tiny", "epochs": 2, "params": 79,
               "classes": list(CLASSES), "command": "python -m emotion_core.train"}  # fmt: skip
    (run / "hparams.json").write_text(json.dumps(hparams))
    (run / "status.json").write_text(json.dumps({"epochs": 2, "metrics": {}, **status}))
    (run / "metrics.csv").write_text(
        "epoch,loss,accuracy,val_loss,val_accuracy,lr,elapsed_s\n"
        "1,1.9,0.20,1.8,0.25,0.01,3.0\n2,1.7,0.30,1.7,0.35,0.01,6.0\n"
    )
    (run / "resume.json").write_text(json.dumps({"epoch": 2, "best": 0.35, "elapsed_s": 6.0}))
    (run / "stdout.log").write_text("[epoch] epoch 2/2 accuracy=0.3000\n")
    if model is not None:
        (run / "best.keras").write_bytes(model.read_bytes())
        labels = np.arange(70) % 7
        probs = np.random.default_rng(1).dirichlet(np.ones(7), 70)
        (run / "eval.json").write_text(json.dumps(report_from_probs(probs, labels).to_dict()))
    return run


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    models = tmp_path / "models"
    models.mkdir()
    monkeypatch.setenv("EMOTION_MODELS_DIR", str(models))
    model = save_tiny_model(tmp_path / "tiny.keras")
    registry.register_model(
        model, ModelCard(name="old-default", arch="tiny", val_accuracy=0.5), models, True
    )
    yield {"models": models, "runs": models / "runs", "data": write_dataset(tmp_path / "data"),
           "model": model, "tmp": tmp_path}  # fmt: skip
    for proc in jobs.launched_processes():  # never leave a training process behind
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    jobs._reap()


def run_page(at: AppTest | None = None) -> AppTest:
    if at is None:  # NOTE: not `at or ...`: an AppTest that has not run yet is falsy
        at = AppTest.from_file(PAGE, default_timeout=90)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest, kind: str) -> str:
    return "\n".join(str(e.value) for e in getattr(at, kind))


def table_with(at: AppTest, column: str) -> Any:
    """The last data frame shown that has `column`."""
    return next(f.value for f in reversed(at.dataframe) if column in f.value.columns)


def charts(at: AppTest) -> list[Any]:
    return list(at.get("arrow_vega_lite_chart")) + list(at.get("vega_lite_chart"))


def check(at: AppTest, path: Path | str) -> AppTest:
    at.text_input(key="train_data").set_value(str(path))
    at.button(key="train_check").click()
    return run_page(at)


def test_dataset_check_good_and_bad(env: dict[str, Any]) -> None:
    at = run_page()
    assert "No training runs yet" in texts(at, "info")
    assert "training runs on the CPU" in texts(at, "caption") or "GPU" in texts(at, "caption")
    assert {"tiny", "fer-fast"} <= set(at.selectbox(key="train_arch").options)

    check(at, env["tmp"] / "missing")
    assert "no such file or folder" in texts(at, "error")
    (env["tmp"] / "empty" / "train").mkdir(parents=True)
    check(at, env["tmp"] / "empty")
    assert "No usable training images" in texts(at, "error")
    at.button(key="train_start").click()
    run_page(at)
    assert "Training not started" in texts(at, "error")
    assert not env["runs"].exists() or not any(env["runs"].iterdir())

    odd = write_dataset(env["tmp"] / "odd", per_class=3, classes=("happy", "sad", "contempt"))
    (odd / "train" / "sad" / "corrupt.png").write_bytes(b"\x89PNG broken")
    check(at, odd)
    warnings = texts(at, "warning")
    assert "'contempt'" in warnings and "could not be decoded" in warnings
    assert "Few training images" in warnings and not at.error

    check(at, env["data"])
    assert "Dataset OK" in texts(at, "success") and not at.error and not at.warning
    table = table_with(at, "PublicTest")
    assert list(table.columns) == ["Training", "PublicTest"]
    assert table.loc["happy", "Training"] == 10


def test_start_watch_reattach_and_cancel(env: dict[str, Any]) -> None:
    at = run_page()
    at.text_input(key="train_data").set_value(str(env["data"]))
    at.selectbox(key="train_arch").set_value("tiny")
    at.number_input(key="train_epochs").set_value(500)
    at.selectbox(key="train_batch").set_value(16)
    at.checkbox(key="train_augment").uncheck()
    at.button(key="train_start").click()
    run_page(at)
    assert "Started run" in texts(at, "success")
    run_id = at.selectbox(key="train_run").value
    assert jobs.TrainingJobRunner(env["runs"]).info(run_id).running
    assert at.button(key="train_start").disabled  # one job at a time...
    assert at.button(key="train_retime").disabled  # and no timing while training loads the CPU
    at.checkbox(key="train_force").check()
    run_page(at)
    assert not at.button(key="train_start").disabled  # ...unless confirmed

    # Another tab (a fresh session) reattaches and sees the curves once an epoch is done.
    deadline = time.monotonic() + 120
    while True:
        other = run_page()
        if len(charts(other)) >= 2:
            break
        assert time.monotonic() < deadline, "no training curves after 120 s"
        time.sleep(0.5)
    assert other.selectbox(key="train_run").value == run_id
    assert other.get("progress") and "Epoch" in str(other.get("progress")[0].proto)
    assert "[epoch] epoch 1/500" in texts(other, "code")

    other.button(key="train_cancel").click()
    run_page(other)
    info = jobs.TrainingJobRunner(env["runs"]).wait(run_id, 120)
    assert info.state == "cancelled"
    run_page(at)
    assert "cancelled" in texts(at, "warning")
    assert at.button(key="train_resume") is not None
    assert registry.default_model_name(env["models"]) == "old-default"


def test_evaluation_and_activation_switch_the_default(
    env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    write_run(env["runs"], "done", {"kind": "end", "state": "finished"}, env["data"], env["model"])
    at = run_page()
    assert "finished" in texts(at, "success")
    metrics = {m.label: m.value for m in at.metric}
    assert "%" in metrics["Accuracy"] and "70 validation images" in texts(at, "caption")
    assert "before Activate recalibrates batch norm" in texts(at, "caption")
    assert len(charts(at)) == 4  # loss, accuracy, confusion matrix; registered models
    assert any("old-default" in c for c in texts(at, "caption").splitlines())
    version = registry.registry_version(env["models"])

    for bad in ("bad name!", "old-default"):
        at.text_input(key="train_activate_name:done").set_value(bad)
        at.button(key="train_activate").click()
        run_page(at)
        assert "Not activated" in texts(at, "error")
        assert registry.default_model_name(env["models"]) == "old-default"
    assert registry.registry_version(env["models"]) == version

    gate, publish = threading.Event(), jobs._publish_run()

    def gated_publish(*args: Any, **kwargs: Any) -> ModelCard:
        assert gate.wait(120)
        return publish(*args, **kwargs)

    monkeypatch.setattr(jobs, "_publish_run", lambda: gated_publish)
    at.text_input(key="train_activate_name:done").set_value("fresh-model")
    at.button(key="train_activate").click()
    run_page(at)  # the activation runs on a thread; the page shows its progress
    assert not at.error and "fresh-model" in str(at.get("progress")[0].proto)
    assert "Another model is being activated" in texts(at, "caption")
    assert registry.default_model_name(env["models"]) == "old-default"
    gate.set()
    job = jobs.TrainingJobRunner(env["runs"]).current_activation()
    assert job is not None and job.wait(300).finished
    run_page(at)
    assert not at.error
    assert "fresh-model" in texts(at, "success")
    assert registry.default_model_name(env["models"]) == "fresh-model"
    assert registry.registry_version(env["models"]) != version
    assert any("fresh-model" in c for c in texts(at, "caption").splitlines())


def test_the_model_name_follows_the_run_viewed_and_resume_waits_for_its_activation(
    env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for run_id in ("run-a", "run-b"):
        write_run(env["runs"], run_id, {"kind": "end", "state": "finished"}, env["data"],
                  env["model"])  # fmt: skip
    write_run(env["runs"], "cut", {"kind": "end", "state": "cancelled"}, env["data"], env["model"])
    at = run_page()

    def model_name_shown() -> str:
        (box,) = [t for t in at.text_input if t.label == "Model name"]
        return str(box.value)

    for run_id in ("run-a", "run-b", "run-a"):  # a keyed box once kept the first suggestion
        at.selectbox(key="train_run").set_value(run_id)
        run_page(at)
        assert model_name_shown() == run_id

    gate = threading.Event()

    def gated_publish(*args: Any, **kwargs: Any) -> ModelCard:
        assert gate.wait(60)
        raise RuntimeError("stopped by the test")

    monkeypatch.setattr(jobs, "_publish_run", lambda: gated_publish)
    runner = jobs.TrainingJobRunner(env["runs"], models_dir=env["models"])
    job = runner.start_activation("cut", "cut-model")
    try:
        at.selectbox(key="train_run").set_value("cut")
        run_page(at)
        assert at.button(key="train_resume").disabled
        assert "activation as **cut-model** has ended" in texts(at, "caption")
    finally:
        gate.set()
        assert job.wait(60).finished
    run_page(at)  # the page shows the outcome and forgets the activation
    run_page(at)
    assert not at.button(key="train_resume").disabled


def test_an_activation_cut_off_by_a_server_restart_is_reported_once(env: dict[str, Any]) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    marker = env["models"] / jobs.ACTIVATION_MARKER
    marker.write_text(json.dumps({"run_id": "done", "name": "half-done", "pid": gone.pid,
                                  "started": time.time() - 120}))  # fmt: skip
    (env["models"] / "half-done.keras").write_bytes(b"partial")
    at = run_page()
    warning = texts(at, "warning")
    assert "run done as **half-done**" in warning and "stopped with the server" in warning
    assert "default model is unchanged" in warning and "half-done.keras" in warning
    assert not (env["models"] / "half-done.keras").exists() and not marker.exists()
    assert registry.default_model_name(env["models"]) == "old-default"
    run_page(at)
    assert "stopped with the server" not in texts(at, "warning")  # said once


def test_registered_models_are_compared_and_the_default_can_change(
    env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    registry.register_model(env["model"], ModelCard(name="fast-one", arch="tiny",
                            val_accuracy=0.61, cpu_ms_per_face=0.4), env["models"])  # fmt: skip
    at = run_page()
    table = table_with(at, "model")
    assert list(table["model"]) == ["fast-one", "old-default"]  # most accurate first
    assert list(table["default"]) == [False, True]
    assert table["val_accuracy"].tolist() == pytest.approx([61.0, 50.0])  # "%.2f%%" of percents
    assert len(charts(at)) >= 1 and "5 ms budget" in texts(at, "caption")
    assert "not strictly comparable" in texts(at, "caption")  # timed apart, and it says so

    def disk_full(*args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    set_default = registry.set_default
    monkeypatch.setattr(registry, "set_default", disk_full)
    at.selectbox(key="train_default_choice").set_value("fast-one")
    at.button(key="train_make_default").click()
    run_page(at)
    assert "The default model is unchanged" in texts(at, "error")
    assert "No space left" in texts(at, "error")
    assert registry.default_model_name(env["models"]) == "old-default"

    monkeypatch.setattr(registry, "set_default", set_default)  # not undo(): it holds the env
    at.selectbox(key="train_default_choice").set_value("fast-one")
    at.button(key="train_make_default").click()
    run_page(at)
    assert "fast-one" in texts(at, "success") and not at.error
    assert registry.default_model_name(env["models"]) == "fast-one"
    assert list(table_with(at, "model")["default"]) == [True, False]


def save_five_class_model(path: Path) -> Path:
    """A network of 5 outputs (the cards here list 7 classes)."""
    from emotion_core.zoo import make_tiny_model

    make_tiny_model(num_classes=5).save(path)
    return path


def test_a_model_that_would_not_load_is_not_made_the_default(env: dict[str, Any]) -> None:
    five = save_five_class_model(env["tmp"] / "five.keras")
    registry.register_model(five, ModelCard(name="five-out", arch="tiny", val_accuracy=0.9),
                            env["models"])  # fmt: skip
    registry.register_model(env["model"], ModelCard(name="text-copy", arch="tiny",
                            val_accuracy=0.8), env["models"])  # fmt: skip
    (env["models"] / "text-copy.keras").write_text("not a model")  # e.g. a broken copy
    before = (env["models"] / registry.REGISTRY_FILE).read_bytes()
    at = run_page()
    cases = {
        "five-out": "five-out.keras: 5 outputs but the card lists 7 classes",
        "text-copy": "text-copy.keras: not a .keras model file",
    }
    for name, message in cases.items():
        at.selectbox(key="train_default_choice").set_value(name)
        at.button(key="train_make_default").click()
        run_page(at)
        error = texts(at, "error")
        assert "The default model is unchanged" in error and message in error, name
        assert "now the default" not in texts(at, "success")
        assert (env["models"] / registry.REGISTRY_FILE).read_bytes() == before
    assert list(table_with(at, "model")["default"]) == [False, False, True]


def test_fine_tuning_or_distilling_from_a_model_of_other_classes_is_refused(
    env: dict[str, Any],
) -> None:
    registry.register_model(save_five_class_model(env["tmp"] / "five.keras"),
                            ModelCard(name="five-out", arch="tiny"), env["models"])  # fmt: skip
    at = run_page()
    check(at, env["data"])
    at.radio(key="train_init").set_value("a registered model (fine-tune)")
    run_page(at)
    at.selectbox(key="train_init_model").set_value("five-out")
    at.button(key="train_start").click()
    run_page(at)
    error = texts(at, "error")
    assert "Training not started" in error and "5 outputs, but training needs 7 classes" in error
    assert "five-out.keras" in error and "Traceback" not in error

    at.radio(key="train_init").set_value("scratch")
    at.selectbox(key="train_teacher").set_value("five-out (registered, tiny)")
    at.checkbox(key="train_live").check()
    at.button(key="train_start").click()
    run_page(at)
    error = texts(at, "error")
    assert "Training not started" in error and "5 outputs, but training needs 7 classes" in error
    assert "live teacher" in error
    assert not jobs.launched_processes()
    assert not [p for p in env["runs"].glob("*") if not p.name.startswith(".")]  # no run folder


def test_cards_that_cannot_be_read_are_named_on_the_page(env: dict[str, Any]) -> None:
    registry.register_model(env["model"], ModelCard(name="kept", arch="tiny"), env["models"])
    registry.register_model(env["model"], ModelCard(name="broken", arch="tiny"), env["models"])
    (env["models"] / "broken.json").write_text("{oops")
    bad_field = {"name": "old-default", "arch": "tiny", "epochs": "x"}
    (env["models"] / "old-default.json").write_text(json.dumps(bad_field))
    at = run_page()
    warning = texts(at, "warning")
    assert "2 model card(s)" in warning and "leaves them out" in warning
    default_line = f"{env['models'] / 'old-default.json'}: model card field 'epochs'"
    assert default_line in warning and "(the default model's card)" in warning
    assert f"{env['models'] / 'broken.json'}: model card is not valid JSON" in warning
    assert warning.index("old-default.json") < warning.index("broken.json")  # the default first
    assert list(table_with(at, "model")["model"]) == ["kept"]

    for card in ("kept", "broken", "old-default"):  # no usable card at all: still said why
        (env["models"] / f"{card}.json").write_text("[]")
    run_page(at)
    assert "3 model card(s)" in texts(at, "warning")
    assert "No registered models" in texts(at, "info")


def test_the_default_model_panel_needs_its_network_and_gives_the_speed_in_use(
    env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under EMOTION_RUNTIME=keras the card and the models table give the Keras figure; a
    default whose network file is gone is not shown as the default model."""
    registry.update_card("old-default", {"runtime": "tflite", "cpu_ms_per_face": 0.62,
                         "cpu_ms_per_face_keras": 3.18}, env["models"])  # fmt: skip
    monkeypatch.setenv("EMOTION_RUNTIME", "keras")
    write_run(env["runs"], "broken", {"kind": "end", "state": "failed",
              "message": "/x/data: folder not found"}, env["data"])  # fmt: skip
    at = run_page()
    at.selectbox(key="train_run").set_value("broken")
    run_page(at)
    assert "3.2 ms/face on CPU (keras)" in texts(at, "caption")
    table = table_with(at, "model")
    assert table["ms_per_face"].tolist() == [3.18] and table["runtime"].tolist() == ["keras"]
    (env["models"] / "old-default.keras").unlink()
    run_page(at)
    info = texts(at, "info")
    assert "No default model" in info and "old-default.keras: missing" in info
    assert "ms/face on CPU" not in texts(at, "caption")


def test_failed_and_interrupted_runs_are_reported(env: dict[str, Any]) -> None:
    write_run(env["runs"], "broken", {"kind": "end", "state": "failed",
              "message": "/x/data: folder not found"}, env["data"])  # fmt: skip
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    write_run(env["runs"], "stopped", {"kind": "epoch", "state": "running", "epoch": 2,
              "pid": dead.pid}, env["data"], env["model"])  # fmt: skip
    at = run_page()
    at.selectbox(key="train_run").set_value("broken")
    run_page(at)
    assert "folder not found" in texts(at, "error")
    assert "nothing to activate" in texts(at, "caption")
    at.selectbox(key="train_run").set_value("stopped")
    run_page(at)
    assert "interrupted" in texts(at, "warning") and "stopped without finishing" in texts(
        at, "warning"
    )
    assert not at.button(key="train_resume").disabled
    assert registry.default_model_name(env["models"]) == "old-default"


def test_fine_tune_from_a_registered_model(env: dict[str, Any]) -> None:
    at = run_page()
    at.text_input(key="train_data").set_value(str(env["data"]))
    at.number_input(key="train_epochs").set_value(1)
    at.selectbox(key="train_batch").set_value(16)
    at.checkbox(key="train_augment").uncheck()
    at.radio(key="train_init").set_value("a registered model (fine-tune)")
    run_page(at)
    assert at.selectbox(key="train_init_model").value == "old-default"
    at.button(key="train_start").click()
    run_page(at)
    run_id = at.selectbox(key="train_run").value
    launch = json.loads((env["runs"] / run_id / "launch.json").read_text())
    assert launch["config"]["init_model"] == str((env["models"] / "old-default.keras").resolve())
    assert launch["config"]["arch"] == "tiny" and "--init-model" in launch["command"]
    assert jobs.TrainingJobRunner(env["runs"]).wait(run_id, 120).state == "finished"
    run_page(at)
    assert "finished" in texts(at, "success")


def test_a_start_the_trainer_would_refuse_is_refused_on_the_page(
    env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    (env["models"] / "old-default.keras").write_text("not a model")  # e.g. a broken copy
    monkeypatch.chdir(env["tmp"])  # a server started elsewhere: relative paths start at the root
    at = run_page()
    check(at, os.path.relpath(env["data"], registry.PROJECT_ROOT))
    assert "Dataset OK" in texts(at, "success") and not at.error
    at.radio(key="train_init").set_value("a registered model (fine-tune)")
    run_page(at)
    at.button(key="train_start").click()
    run_page(at)
    error = texts(at, "error")
    assert "Training not started" in error and "not a .keras model file" in error
    assert "Traceback" not in error and not jobs.launched_processes()
    assert not [p for p in env["runs"].glob("*") if not p.name.startswith(".")]  # no run folder


def test_the_suggested_model_name_is_never_the_reserved_one(env: dict[str, Any]) -> None:
    write_run(env["runs"], "registry", {"kind": "end", "state": "finished"}, env["data"],
              env["model"])  # fmt: skip
    at = run_page()
    (box,) = [t for t in at.text_input if t.label == "Model name"]
    assert box.value == "registry-2"  # "registry" would replace registry.json


def test_distil_from_a_run_checkpoint(env: dict[str, Any]) -> None:
    teacher_run = write_run(env["runs"], "big-teacher", {"state": "finished"}, env["data"],
                            model=env["model"])  # fmt: skip
    at = run_page()
    at.text_input(key="train_data").set_value(str(env["data"]))  # no FER+ votes beside it
    run_page(at)
    label = "run big-teacher (best.keras, tiny)"
    assert at.selectbox(key="train_teacher").options == [
        "none",
        "old-default (registered, tiny)",
        label,
    ]
    at.number_input(key="train_epochs").set_value(1)
    at.selectbox(key="train_batch").set_value(16)
    at.checkbox(key="train_augment").uncheck()
    at.selectbox(key="train_teacher").set_value(label)
    at.number_input(key="train_distill_alpha").set_value(0.6)
    at.button(key="train_start").click()
    run_page(at)
    run_id = at.selectbox(key="train_run").value
    launch = json.loads((env["runs"] / run_id / "launch.json").read_text())
    assert launch["config"]["teacher"] == str(teacher_run / "best.keras")
    assert launch["config"]["distill_alpha"] == 0.6 and "--teacher" in launch["command"]
    assert jobs.TrainingJobRunner(env["runs"]).wait(run_id, 120).state == "finished"
    hparams = json.loads((env["runs"] / run_id / "hparams.json").read_text())
    assert hparams["teacher"] == str(teacher_run / "best.keras")

    # live: the teacher runs in every step on the (augmented) view the student sees
    run_page(at)  # the first run has ended: Start is enabled again
    at.checkbox(key="train_augment").check()
    at.checkbox(key="train_live").check()
    at.button(key="train_start").click()
    run_page(at)
    live_id = at.selectbox(key="train_run").value
    launch = json.loads((env["runs"] / live_id / "launch.json").read_text())
    assert live_id != run_id and launch["config"]["live_teacher"] is True
    assert "--live-teacher" in launch["command"]
    assert jobs.TrainingJobRunner(env["runs"]).wait(live_id, 120).state == "finished"


def test_fer_plus_votes_beside_a_csv_are_offered_as_a_teacher(env: dict[str, Any]) -> None:
    from emotion_core.data import load_dataset

    root = env["tmp"] / "shared"
    for folder in ("fer2013", "ferplus"):
        (root / folder).mkdir(parents=True)
    csv = synthetic_csv(root / "fer2013" / "fer.csv")
    votes = write_ferplus_votes(root / "ferplus" / "fer2013new.csv", load_dataset(csv).labels)
    label = "FER+ annotator votes (fer2013new.csv beside the data)"
    at = run_page()
    at.text_input(key="train_data").set_value(str(env["data"]))  # a folder tree: no row order
    run_page(at)
    assert label not in at.selectbox(key="train_teacher").options
    at.text_input(key="train_data").set_value(str(root / "fer2013"))  # as the default path is
    run_page(at)
    assert label in at.selectbox(key="train_teacher").options
    at.text_input(key="train_data").set_value(str(csv))
    at.number_input(key="train_epochs").set_value(1)
    at.selectbox(key="train_batch").set_value(16)
    run_page(at)
    at.selectbox(key="train_teacher").set_value(label)
    at.number_input(key="train_distill_alpha").set_value(0.3)
    at.number_input(key="train_distill_temperature").set_value(1.0)
    run_page(at)
    assert at.checkbox(key="train_live").disabled  # votes belong to the face, not the view
    at.button(key="train_start").click()
    run_page(at)
    run_id = at.selectbox(key="train_run").value
    config = json.loads((env["runs"] / run_id / "launch.json").read_text())["config"]
    assert config["teacher"] == str(votes) and config["live_teacher"] is False
    assert config["distill_alpha"] == 0.3 and config["distill_temperature"] == 1.0
    assert jobs.TrainingJobRunner(env["runs"]).wait(run_id, 120).state == "finished"


def test_a_recalibrated_run_says_its_figures_are_after_recalibration(env: dict[str, Any]) -> None:
    run = write_run(env["runs"], "soup", {"kind": "end", "state": "finished"}, env["data"],
                    env["model"])  # fmt: skip
    hparams = json.loads((run / "hparams.json").read_text())
    (run / "hparams.json").write_text(json.dumps(hparams | {"recalibrated_on": "Training"}))
    (run / "metrics.csv").unlink()  # a soup trains no epochs
    at = run_page()
    assert "(batch norm recalibrated)" in texts(at, "caption")
    assert "before Activate" not in texts(at, "caption")
    assert "trained no epochs" in texts(at, "caption")
    assert "Curves appear after the first epoch" not in texts(at, "caption")


def test_models_are_timed_together_from_the_page(
    env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    registry.register_model(env["model"], ModelCard(name="second", arch="tiny",
                            cpu_ms_per_face=99.0), env["models"])  # fmt: skip
    at = run_page()
    assert "not strictly comparable" in texts(at, "caption")
    assert not at.button(key="train_retime").disabled
    at.button(key="train_retime").click()
    run_page(at)
    success = texts(at, "success")
    assert "Timed here (median ms per face)" in success
    assert "old-default" in success and "second" in success
    cards = {c.name: c for c in registry.list_models(env["models"])}
    how = "`bench models`, 5 interleaved rounds of 100 single-face calls"
    for card in cards.values():
        assert how in card.cpu_ms_measured and card.cpu_ms_per_face is not None
        assert f"{card.name} {card.cpu_ms_per_face:.2f}" in success
    assert cards["second"].cpu_ms_per_face != 99.0
    assert "not strictly comparable" not in texts(at, "caption")  # now one measurement
    assert "interleaved rounds" in texts(at, "caption")

    # a model whose network is no longer a .keras file is named and left out; the rest timed
    (env["models"] / "second.keras").write_text("not a model")
    at.button(key="train_retime").click()
    run_page(at)
    warning = texts(at, "warning")
    assert "Not timed" in warning and "second" in warning and "not a zip archive" in warning
    assert "old-default" in warning  # still timed
    assert (
        registry.read_card("second", env["models"]).cpu_ms_per_face
        == cards["second"].cpu_ms_per_face
    )

    def disk_full(*args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("emotion_core.bench.retime_registered", disk_full)
    at.button(key="train_retime").click()
    run_page(at)
    error = texts(at, "error")
    assert "Could not time the models" in error and "No space left" in error
