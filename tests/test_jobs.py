"""emotion_core.jobs without Streamlit: real `python -m emotion_core.train` processes (arch
"tiny") on a synthetic class-folder dataset in a temporary models dir."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from helpers_data import write_dataset

from emotion_core import jobs, procs, registry
from emotion_core.classes import CLASSES
from emotion_core.jobs import JobError, TrainingJobRunner, validate_dataset
from emotion_core.publish import PUBLISH_STEPS
from emotion_core.registry import ModelCard, ModelError
from emotion_core.train import TrainConfig, parse_args

pytestmark = pytest.mark.slow


def wait_for(predicate: Callable[[], Any], timeout_s: float = 120.0, poll_s: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"condition not met within {timeout_s} s")


def metrics_epochs(run_dir: Path) -> list[int]:
    return [int(e) for e in jobs.read_metrics(run_dir / "metrics.csv")["epoch"]]


def tiny(data: Path, **kwargs: Any) -> TrainConfig:
    base = TrainConfig(data=str(data), arch="tiny", epochs=2, batch_size=16, patience=0,
                       augment=False, warmup_epochs=0)  # fmt: skip
    return replace(base, **kwargs)


@pytest.fixture(autouse=True)
def _kill_leftover_jobs() -> Iterator[None]:
    """Never leave a training process behind when a test fails half-way."""
    yield
    for proc in jobs.launched_processes():
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    jobs._reap()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, dataset: Path) -> tuple[Path, str, list]:
    """One finished 2-epoch run: (models dir, run id, states seen while polling)."""
    models = tmp_path_factory.mktemp("models")
    runner = TrainingJobRunner(models / "runs")
    handle = runner.start(tiny(dataset), run_id="done")
    seen: list[tuple[str, int]] = []

    def ended() -> bool:
        info = runner.info(handle.run_id)
        seen.append((info.state, info.epoch))
        return not info.running

    wait_for(ended, 180)
    return models, handle.run_id, seen


# ---------------------------------------------------------------- no processes


def gate_publishing(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Make activations publish until the returned event is set, then fail."""
    gate = threading.Event()

    def gated(run_dir: Path, name: str, **kwargs: Any) -> ModelCard:
        assert gate.wait(30)
        raise RuntimeError("stopped by the test")

    monkeypatch.setattr(jobs, "_publish_run", lambda: gated)
    return gate


def test_validate_dataset_counts_and_problems(tmp_path: Path, dataset: Path) -> None:
    good = validate_dataset(dataset)
    assert good.ok and not good.problems
    assert good.counts["Training"] == {c: 10 for c in CLASSES}
    assert good.total("PublicTest") == 70
    assert list(good.table().loc["total"]) == [70, 70]

    assert "no such file or folder" in validate_dataset(tmp_path / "nope").errors[0]
    assert validate_dataset("  ").errors == ("No dataset path given.",)
    (tmp_path / "empty" / "train").mkdir(parents=True)
    empty = validate_dataset(tmp_path / "empty")
    assert not empty.ok and "No usable training images" in empty.errors[0]

    odd = write_dataset(tmp_path / "odd", per_class=3, classes=("happy", "sad", "contempt"))
    (odd / "train" / "happy" / "broken.png").write_bytes(b"not a png")
    summary = validate_dataset(odd)
    assert summary.ok  # warnings only
    text = " ".join(summary.warnings)
    assert "'contempt' (3 images)" in text and summary.unknown_classes == {"contempt": 6}
    assert summary.undecodable == 1 and "could not be decoded" in text
    assert "Few training images (< 10)" in text and "angry (0)" in text

    flat = write_dataset(tmp_path / "flat")
    for child in (flat / "train").iterdir():
        child.rename(flat / child.name)
    for split in ("train", "val"):
        shutil.rmtree(flat / split)
    assert any("same images" in w for w in validate_dataset(flat).warnings)


def test_config_round_trips_through_the_cli(tmp_path: Path) -> None:
    config = TrainConfig(
        data="/d", arch="vgg-s", epochs=7, batch_size=32, learning_rate=0.003, optimizer="adamw",
        class_weighting=True, augment=False, init_model="/m.keras", max_train_samples=50,
        time_budget_s=60.0, teacher="/t.npz", distill_alpha=0.4, distill_temperature=3.0,
    )  # fmt: skip
    parsed, out, resume, *_ = parse_args([*jobs.config_to_args(config), "--out", str(tmp_path)])
    assert parsed == config and out == tmp_path and not resume
    assert jobs.config_from_dict(json.loads(json.dumps(config.__dict__))) == config
    live = replace(config, teacher="/a.keras,/b.keras", live_teacher=True)
    assert parse_args([*jobs.config_to_args(live), "--out", str(tmp_path)])[0] == live


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--batch-size", "0"], "--batch-size: must be at least 1, not 0"),
        (["--max-train-samples", "-5"], "--max-train-samples: must be at least 0, not -5"),
        (["--epochs", "ten"], "--epochs: 'ten' is not a whole number"),
        (["--epoch", "300"], "unrecognized arguments: --epoch 300"),  # no abbreviations
    ],
)
def test_bad_training_flags_are_refused_at_once(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--data", "d.csv", *flags])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_dead_running_status_is_interrupted(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    run = tmp_path / "runs" / "old"
    run.mkdir(parents=True)
    status = {
        "kind": "epoch", "state": "running", "epoch": 3, "epochs": 10, "batch": 5, "steps": 5,
        "metrics": {"val_accuracy": 0.4}, "eta_s": 50, "pid": proc.pid,
    }  # fmt: skip
    (run / "status.json").write_text(json.dumps(status))
    (run / "stdout.log").write_text("[epoch] epoch 3/10\n")
    runner = TrainingJobRunner(tmp_path / "runs")
    info = runner.info("old")
    assert info.state == "interrupted" and info.resumable and info.eta_s is None
    assert "stopped without finishing" in info.message and "[epoch] epoch 3/10" in info.message
    assert runner.running_job() is None
    with pytest.raises(JobError, match="not running"):
        runner.cancel("old")
    with pytest.raises(JobError, match="invalid run id"):
        runner.info("../x")


# ---------------------------------------------------------------- real training processes


def test_start_progress_finished_with_evaluation(finished: tuple[Path, str, list]) -> None:
    models, run_id, seen = finished
    runner = TrainingJobRunner(models / "runs")
    assert ("running", 0) in seen  # the job was visible as running before it ended
    info = runner.info(run_id)
    assert info.state == "finished" and info.progress == 1.0 and info.epoch == 2
    progress = runner.read_progress(run_id)
    assert list(progress.metrics["epoch"]) == [1, 2]
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(progress.metrics.columns)
    assert progress.evaluation is not None and progress.evaluation.n == 70
    assert "[epoch] epoch 2/2" in progress.log_tail
    assert progress.hparams is not None and progress.hparams["arch"] == "tiny"
    assert [r.run_id for r in runner.list_runs()] == [run_id]
    assert runner.running_job() is None
    with pytest.raises(JobError, match="finished"):
        runner.resume(run_id)
    with pytest.raises(JobError, match="already exists"):
        runner.start(tiny(Path(progress.hparams["data"])), run_id=run_id)


def test_one_job_at_a_time_cancel_resume_and_crash(tmp_path: Path, dataset: Path) -> None:
    runner = TrainingJobRunner(tmp_path / "models" / "runs")
    long = runner.start(tiny(dataset, epochs=500, batch_size=2), run_id="long")
    wait_for(lambda: metrics_epochs(long.run_dir), 120)  # at least one epoch done
    assert runner.running_job() is not None and runner.running_job().run_id == "long"
    assert (runner.runs_dir / jobs.LOCK_FILE).exists()
    with pytest.raises(JobError, match="still running"):
        runner.start(tiny(dataset))
    with pytest.raises(JobError, match="still running"):
        runner.activate("long", "m1")
    # force: a second job may start (this one fails at once: its data path does not exist)
    runner.start(tiny(tmp_path / "no-such-data"), run_id="bad", force=True)

    runner.cancel("long")
    info = runner.wait("long", 120)
    assert info.state == "cancelled" and info.resumable
    assert (long.run_dir / "last.keras").exists()
    stopped_at = max(metrics_epochs(long.run_dir))
    assert stopped_at < 500

    failed = runner.wait("bad", 120)
    assert failed.state == "failed" and "no-such-data" in failed.message

    runner.resume("long")
    wait_for(lambda: max(metrics_epochs(long.run_dir)) >= stopped_at + 2, 120)
    epochs = metrics_epochs(long.run_dir)
    assert epochs == list(range(1, len(epochs) + 1))  # continued, not restarted
    assert json.loads((long.run_dir / "launch.json").read_text())["launches"] == 2

    os.kill(runner.info("long").pid or 0, signal.SIGKILL)  # a crash (like the OOM killer)
    crashed = runner.wait("long", 60)
    assert crashed.state == "failed" and crashed.resumable
    assert "SIGKILL" in crashed.message and "Last output" in crashed.message
    assert not (runner.runs_dir / jobs.LOCK_FILE).exists()


def test_activate_switches_default_and_bad_names_change_nothing(
    finished: tuple[Path, str, list], monkeypatch: pytest.MonkeyPatch
) -> None:
    models, run_id, _ = finished
    best = models / "runs" / run_id / "best.keras"
    registry.register_model(best, ModelCard(name="old-default", arch="tiny"), models, True)
    version = registry.registry_version(models)
    runner = TrainingJobRunner(models / "runs")

    for bad in ("bad name!", "../evil", "old-default", ""):
        with pytest.raises(ModelError):
            runner.activate(run_id, bad)
    assert registry.default_model_name(models) == "old-default"
    assert registry.registry_version(models) == version

    def publish_then_fail(run_dir: Path, name: str, **kwargs: Any) -> ModelCard:
        registry.register_model(best, ModelCard(name=name, arch="tiny"), kwargs["models_dir"],
                                make_default=True, tflite=b"runtime bytes",
                                written=kwargs["written"])  # fmt: skip
        raise RuntimeError("calibration exploded")

    monkeypatch.setattr(jobs, "_publish_run", lambda: publish_then_fail)
    with pytest.raises(JobError, match="calibration exploded"):
        runner.activate(run_id, "half-done")
    assert registry.default_model_name(models) == "old-default"
    assert not [p.name for p in models.glob("half-done.*")]  # no .keras, .json or .tflite
    monkeypatch.undo()

    card = runner.activate(run_id, "new-model")
    assert registry.default_model_name(models) == "new-model"
    assert card.name == "new-model" and card.arch == "tiny" and card.val_accuracy is not None
    assert card.runtime == "tflite" and (models / "new-model.tflite").exists()
    assert registry.read_card("new-model", models).val_accuracy == card.val_accuracy
    assert {c.name for c in registry.list_models(models)} == {"old-default", "new-model"}
    with pytest.raises(ModelError, match="already exists"):
        runner.activate(run_id, "new-model")
    assert registry.default_model_name(models) == "new-model"


def fake_keras(path: Path) -> Path:
    """A file that registry.register_model accepts as a .keras file (a zip)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", "{}")
    return path


def models_with_fake_run(tmp_path: Path) -> tuple[Path, TrainingJobRunner, Path]:
    """A models folder with a default 'old-default', a model 'other' and a finished run 'r'
    (no real network: the publish step is faked); the fake .keras file to register."""
    models = tmp_path / "models"
    run = models / "runs" / "r"
    keras_file = fake_keras(run / "best.keras")
    (run / "status.json").write_text(json.dumps({"state": "finished"}))
    registry.register_model(keras_file, ModelCard(name="old-default", arch="tiny"), models, True)
    registry.register_model(keras_file, ModelCard(name="other", arch="tiny"), models)
    return models, TrainingJobRunner(models / "runs"), keras_file


def test_a_failed_activation_undoes_only_its_own_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models, runner, keras_file = models_with_fake_run(tmp_path)
    ours = ModelCard(name="mine", arch="tiny")

    def use(publish: Callable[..., ModelCard]) -> None:
        monkeypatch.setattr(jobs, "_publish_run", lambda: publish)

    # it registered its model and made it the default, then failed: both undone
    def register_then_fail(run_dir: Path, name: str, **kwargs: Any) -> ModelCard:
        registry.register_model(keras_file, ours, kwargs["models_dir"], make_default=True,
                                tflite=b"tflite", written=kwargs["written"])  # fmt: skip
        raise RuntimeError("timing exploded")

    use(register_then_fail)
    with pytest.raises(JobError, match="timing exploded"):
        runner.activate("r", "mine")
    assert registry.default_model_name(models) == "old-default"
    assert not list(models.glob("mine.*"))

    # meanwhile another process (python -m emotion_core.publish) made 'other' the default
    def other_default_then_fail(run_dir: Path, name: str, **kwargs: Any) -> ModelCard:
        registry.set_default("other", kwargs["models_dir"])
        raise RuntimeError("calibration exploded")

    use(other_default_then_fail)
    with pytest.raises(JobError, match="calibration exploded"):
        runner.activate("r", "mine")
    assert registry.default_model_name(models) == "other"  # not put back to 'old-default'

    # it made itself the default, then another process changed the default: that stays
    def ours_then_theirs_then_fail(run_dir: Path, name: str, **kwargs: Any) -> ModelCard:
        registry.register_model(keras_file, ours, kwargs["models_dir"], make_default=True,
                                written=kwargs["written"])  # fmt: skip
        time.sleep(0.01)  # a distinct mtime even where inodes are reused at once
        registry.set_default("old-default", kwargs["models_dir"])
        raise RuntimeError("card exploded")

    use(ours_then_theirs_then_fail)
    with pytest.raises(JobError, match="card exploded"):
        runner.activate("r", "mine")
    assert registry.default_model_name(models) == "old-default"
    assert not list(models.glob("mine.*"))

    # another process registered the same name (and made it the default) during the publish:
    # ours then refuses to overwrite it, and its model and default stay
    def same_name_elsewhere(run_dir: Path, name: str, **kwargs: Any) -> ModelCard:
        theirs = ModelCard(name=name, arch="theirs", notes="published by hand")
        registry.register_model(keras_file, theirs, kwargs["models_dir"], make_default=True,
                                tflite=b"their tflite")  # fmt: skip
        registry.register_model(keras_file, ours, kwargs["models_dir"], make_default=True,
                                written=kwargs["written"])  # fmt: skip
        raise AssertionError("unreachable: the name is taken")

    use(same_name_elsewhere)
    with pytest.raises(ModelError, match="already registered"):
        runner.activate("r", "mine")
    assert registry.default_model_name(models) == "mine"
    assert registry.read_card("mine", models).notes == "published by hand"
    assert (models / "mine.tflite").read_bytes() == b"their tflite"
    assert (models / "mine.keras").exists()


def models_with_finished_run(
    finished: tuple[Path, str, list], tmp_path: Path
) -> tuple[Path, str, TrainingJobRunner]:
    """A models folder holding a copy of the finished run and a default model 'old-default'."""
    source, run_id, _ = finished
    models = tmp_path / "models"
    shutil.copytree(source / "runs" / run_id, models / "runs" / run_id)
    registry.register_model(models / "runs" / run_id / "best.keras",
                            ModelCard(name="old-default", arch="tiny"), models, True)  # fmt: skip
    return models, run_id, TrainingJobRunner(models / "runs")


def test_activation_runs_in_the_background_step_by_step(
    finished: tuple[Path, str, list], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models, run_id, runner = models_with_finished_run(finished, tmp_path)
    gate, stages = threading.Event(), []
    real = jobs._publish_run()

    def gated(run_dir: Path, name: str, progress: Any, **kwargs: Any) -> ModelCard:
        assert gate.wait(120)
        return real(run_dir, name, progress=lambda s: (stages.append(s), progress(s)), **kwargs)

    monkeypatch.setattr(jobs, "_publish_run", lambda: gated)
    job = runner.start_activation(run_id, "bg-model")
    assert runner.current_activation() is job
    view = job.view()
    assert not view.finished and view.step == 0 and view.steps == len(PUBLISH_STEPS)
    with pytest.raises(JobError, match="being activated"):
        runner.start_activation(run_id, "other-model")
    with pytest.raises(ModelError, match="already exists"):
        runner.start_activation(run_id, "old-default")
    runner.forget_activation(job)  # still running: kept
    assert runner.current_activation() is job
    gate.set()
    view = job.wait(300)
    assert view.finished and view.error is None and view.card is not None
    # tiny has no batch norm: nothing to recalibrate, so that step is not reported
    assert stages == [s for s in PUBLISH_STEPS if s != PUBLISH_STEPS[1]]
    assert view.step == view.steps and view.detail == ""
    job.report("batch norm 2/9 (bn_2) on 8192 faces")  # detail lines keep the stage
    assert job.view().step == view.steps and job.view().detail.startswith("batch norm 2/9")
    assert view.card.name == "bg-model" == registry.default_model_name(models)
    runner.forget_activation(job)
    assert runner.current_activation() is None

    def explode(run_dir: Path, name: str, **kwargs: Any) -> ModelCard:
        kwargs["progress"](PUBLISH_STEPS[0])
        raise RuntimeError("calibration exploded")

    monkeypatch.setattr(jobs, "_publish_run", lambda: explode)
    failed = runner.start_activation(run_id, "doomed").wait(60)
    assert failed.finished and failed.card is None and failed.step == 1
    assert "Not activated" in str(failed.error) and "calibration exploded" in str(failed.error)
    assert registry.default_model_name(models) == "bg-model"
    assert not list(models.glob("doomed.*"))


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_an_activation_cut_off_by_a_restart_is_reported_once_and_cleaned_up(
    finished: tuple[Path, str, list], tmp_path: Path
) -> None:
    models, run_id, runner = models_with_finished_run(finished, tmp_path)
    marker = models / jobs.ACTIVATION_MARKER
    assert runner.recover_interrupted_activation() is None  # nothing ran

    # an activation that ends leaves no marker behind
    view = runner.start_activation(run_id, "fine").wait(300)
    assert view.finished and view.error is None and not marker.exists()
    runner.forget_activation(runner.current_activation())  # type: ignore[arg-type]
    assert runner.recover_interrupted_activation() is None

    # the server died while publishing "lost": half-written files, the marker
    def cut_off(name: str, pid: int) -> None:
        marker.write_text(json.dumps({"run_id": run_id, "name": name, "pid": pid,
                                      "started": time.time() - 60}))  # fmt: skip

    cut_off("lost", _dead_pid())
    (models / "lost.keras").write_bytes(b"half")
    (models / "lost.tflite").write_bytes(b"half")
    lost = runner.recover_interrupted_activation()
    assert lost is not None and lost.name == "lost" and lost.run_id == run_id
    assert not lost.registered and set(lost.removed) == {"lost.keras", "lost.tflite"}
    assert not list(models.glob("lost.*")) and not marker.exists()
    assert runner.recover_interrupted_activation() is None  # reported once
    assert registry.default_model_name(models) == "fine"

    # it had registered its model before the stop: the model is kept
    cut_off("fine", _dead_pid())
    kept = runner.recover_interrupted_activation()
    assert kept is not None and kept.registered and kept.removed == ()
    assert (models / "fine.keras").exists()

    # another live server process is activating: not ours to recover, and no second one starts
    other = subprocess.Popen(["sleep", "60"])
    try:
        cut_off("theirs", other.pid)
        assert runner.recover_interrupted_activation() is None
        with pytest.raises(JobError, match="another server process"):
            runner.start_activation(run_id, "mine")
    finally:
        other.kill()
        other.wait()
    assert runner.recover_interrupted_activation() is not None  # its process is gone now


def test_an_activation_marker_whose_pid_was_reused_is_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models, runner, _ = models_with_fake_run(tmp_path)
    marker = models / jobs.ACTIVATION_MARKER
    other = subprocess.Popen(["sleep", "60"])
    try:
        record = {"run_id": "r", "name": "lost", "pid": other.pid, "started": time.time() - 60}
        # the server activating is alive (same pid, same start time): neither recovered nor raced
        marker.write_text(json.dumps(record | {"process_start": procs.process_start(other.pid)}))
        assert runner.recover_interrupted_activation() is None
        with pytest.raises(JobError, match="another server process"):
            runner.start_activation("r", "mine")
        # that server crashed and an unrelated process got its pid (another start time)
        marker.write_text(json.dumps(record | {"process_start": "1"}))
        (models / "lost.keras").write_bytes(b"half")
        lost = runner.recover_interrupted_activation()
        assert lost is not None and lost.name == "lost" and lost.removed == ("lost.keras",)
        assert not marker.exists() and other.poll() is None
    finally:
        other.kill()
        other.wait()

    # the marker of a running activation names this process by pid and start time
    gate = gate_publishing(monkeypatch)
    job = runner.start_activation("r", "mine")
    try:
        written = json.loads(marker.read_text())
        assert written["pid"] == os.getpid()
        assert written["process_start"] == procs.process_start(os.getpid()) != ""
    finally:
        gate.set()
        assert job.wait(30).finished
        runner.forget_activation(job)


def test_arch_for_init_model_spots_folded_files(tmp_path: Path) -> None:
    files = {"bn": '{"class_name": "BatchNormalization"}', "folded": '{"class_name": "Conv2D"}'}
    for name, config in files.items():
        with zipfile.ZipFile(tmp_path / f"{name}.keras", "w") as archive:
            archive.writestr("config.json", config)
    assert jobs.arch_for_init_model(tmp_path / "bn.keras", "fer-fast") == "fer-fast"
    assert jobs.arch_for_init_model(tmp_path / "folded.keras", "fer-fast") == "fer-fast-folded"
    assert jobs.arch_for_init_model(tmp_path / "folded.keras", "tiny") == "tiny"
    assert jobs.arch_for_init_model(tmp_path / "missing.keras", "vgg-s") == "vgg-s"


def test_teacher_candidates_survive_run_and_card_files_that_used_to_crash_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run's hparams.json nested too deep raised RecursionError through read_json_object, and
    a card with an integer over Python's digit limit raised ValueError through list_models: the
    Training page's teacher list crashed on either."""
    models = tmp_path / "models"
    run = models / "runs" / "deep"
    run.mkdir(parents=True)
    (run / "best.keras").write_bytes(b"x")
    (run / "hparams.json").write_text("[" * 100_000)
    (models / "big.json").write_text(
        '{"name": "big", "arch": "tiny", "val_accuracy": 1' + "0" * 5000 + "}"
    )
    (models / "big.keras").write_bytes(b"x")
    assert jobs.teacher_candidates(models) == {"run deep (best.keras, ?)": run / "best.keras"}
    monkeypatch.setenv("EMOTION_MODELS_DIR", str(models))  # read when the runner is made
    runner = TrainingJobRunner()
    assert runner.models_dir == models and runner.runs_dir == models / "runs"


# ---------------------------------------------------------------- stand-in processes

SLEEP = "import time; time.sleep(60)"


@pytest.fixture
def fake_python(tmp_path: Path) -> str:
    """An 'interpreter' that sleeps with the training command line in its argv: a process that
    looks like `python -m emotion_core.train ... --out <run>` but trains nothing."""
    script = tmp_path / "fake-python"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -c "{SLEEP}" "$@"\n')
    script.chmod(0o755)
    return str(script)


def _running_status(run: Path, pid: int) -> None:
    run.mkdir(parents=True)
    (run / "launch.json").write_text(json.dumps({"pid": pid, "config": {"data": "/d"}}))
    (run / "status.json").write_text(json.dumps({"state": "running", "pid": pid, "epochs": 5}))


def test_a_reused_pid_training_another_run_is_not_taken_for_this_one(
    tmp_path: Path, fake_python: str
) -> None:
    runner = TrainingJobRunner(tmp_path / "runs", python=fake_python)
    other = runner.start(TrainConfig(data=str(tmp_path)), run_id="other")
    assert runner.info("other").running
    # a run that died while 'running'; its pid now belongs to the process training "other"
    _running_status(runner.runs_dir / "stale", other.pid)
    started = time.monotonic()
    assert runner.info("stale").state == "interrupted"
    assert time.monotonic() - started < 5  # not waiting for "other" to be reaped
    with pytest.raises(JobError, match="not running"):
        runner.cancel("stale")
    assert not (runner.runs_dir / "stale" / "CANCEL").exists()
    assert runner.info("other").running  # not sent SIGTERM
    busy = runner.running_job()
    assert busy is not None and busy.run_id == "other"

    # started by hand with a relative --out: resolved against that process's folder
    manual = subprocess.Popen(
        [sys.executable, "-c", SLEEP, "-m", "emotion_core.train", "--out", "runs/manual"],
        cwd=tmp_path,
    )
    try:
        _running_status(runner.runs_dir / "manual", manual.pid)
        assert wait_for(lambda: runner.info("manual").running, 10)
    finally:
        manual.kill()
        manual.wait()


def _disk_full(path: Path | str) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


@pytest.fixture
def popen_spy(monkeypatch: pytest.MonkeyPatch) -> list[subprocess.Popen[bytes]]:
    started: list[subprocess.Popen[bytes]] = []

    class Spy(subprocess.Popen):  # type: ignore[type-arg]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            started.append(self)

    monkeypatch.setattr(subprocess, "Popen", Spy)
    return started


@pytest.mark.parametrize("name", ["launch.json", jobs.LOCK_FILE])
def test_a_failed_write_after_launch_stops_the_child(
    tmp_path: Path,
    fake_python: str,
    monkeypatch: pytest.MonkeyPatch,
    popen_spy: list[subprocess.Popen[bytes]],
    name: str,
) -> None:
    real_write = jobs.atomic_write_json

    def write(path: Path, data: Any) -> None:
        if Path(path).name == name:
            raise _disk_full(path)
        real_write(path, data)

    monkeypatch.setattr(jobs, "atomic_write_json", write)
    runner = TrainingJobRunner(tmp_path / "runs", python=fake_python)
    with pytest.raises(JobError) as error:
        runner.start(TrainConfig(data=str(tmp_path)), run_id="full")
    message = str(error.value)
    assert name in message and "No space left on device" in message and "stopped" in message
    [child] = popen_spy
    assert child.poll() is not None  # stopped and reaped, not left training untracked
    assert child not in jobs.launched_processes()
    assert not (runner.runs_dir / jobs.LOCK_FILE).exists()
    assert runner.running_job() is None


def test_unwritable_lock_or_log_is_a_job_error_and_launches_nothing(
    tmp_path: Path,
    fake_python: str,
    monkeypatch: pytest.MonkeyPatch,
    popen_spy: list[subprocess.Popen[bytes]],
) -> None:
    (tmp_path / "file").write_text("not a folder")
    blocked = TrainingJobRunner(tmp_path / "file" / "runs", python=fake_python)
    with pytest.raises(JobError, match="cannot write .*runs"):
        blocked.start(TrainConfig(data=str(tmp_path)))

    runner = TrainingJobRunner(tmp_path / "runs", python=fake_python)
    (runner.runs_dir / ".start.lock").mkdir(parents=True)  # open("w") fails, even for root
    with pytest.raises(JobError, match=r"\.start\.lock"):
        runner.start(TrainConfig(data=str(tmp_path)))
    (runner.runs_dir / ".start.lock").rmdir()

    real_open = Path.open

    def open_(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self.name == "stdout.log":
            raise _disk_full(self)
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", open_)
    with pytest.raises(JobError, match=r"stdout\.log.*No space left on device"):
        runner.start(TrainConfig(data=str(tmp_path)), run_id="nolog")
    assert popen_spy == []


def test_cancel_when_the_cancel_file_cannot_be_written(
    tmp_path: Path, fake_python: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = TrainingJobRunner(tmp_path / "runs", python=fake_python)
    handle = runner.start(TrainConfig(data=str(tmp_path)), run_id="busy")
    real_write_text = Path.write_text

    def write_text(self: Path, *args: Any, **kwargs: Any) -> int:
        if self.name == "CANCEL":
            raise _disk_full(self)
        return real_write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    with pytest.raises(JobError, match=r"CANCEL.*No space left on device.*SIGTERM"):
        runner.cancel("busy")
    # the process was still asked to stop (freeing the disk is then up to the user)
    assert wait_for(lambda: not runner.info("busy").running, 10)
    assert runner.info("busy").pid == handle.pid


def _concurrently(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls on threads at once; each one's result or exception."""
    results: list[Any] = [None] * len(calls)

    def call(i: int) -> None:
        try:
            results[i] = calls[i]()
        except Exception as exc:  # noqa: BLE001  returned to the test
            results[i] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def test_two_tabs_starting_or_resuming_at_once_never_share_a_run_folder(
    tmp_path: Path,
    fake_python: str,
    monkeypatch: pytest.MonkeyPatch,
    popen_spy: list[subprocess.Popen[bytes]],
) -> None:
    runner = TrainingJobRunner(tmp_path / "runs", python=fake_python)
    config = TrainConfig(data=str(tmp_path), arch="tiny")
    real_lock = TrainingJobRunner._start_lock
    barrier = threading.Barrier(2, timeout=30)

    @contextlib.contextmanager
    def lock_when_both_arrive(self: TrainingJobRunner) -> Iterator[None]:
        barrier.wait()  # both clicks got this far before either holds the lock
        with real_lock(self):
            yield

    monkeypatch.setattr(TrainingJobRunner, "_start_lock", lock_when_both_arrive)

    # "run anyway" ticked in two tabs, same architecture, same second: two folders
    first, second = _concurrently(*[lambda: runner.start(config, force=True)] * 2)
    assert isinstance(first, jobs.RunHandle) and isinstance(second, jobs.RunHandle)
    assert first.run_dir != second.run_dir and len(popen_spy) == 2

    # the same explicit run id: one starts, the other is told the id is taken
    results = _concurrently(*[lambda: runner.start(config, run_id="same", force=True)] * 2)
    assert sum(isinstance(r, jobs.RunHandle) for r in results) == 1
    (refused,) = [r for r in results if isinstance(r, JobError)]
    assert "already exists" in str(refused) and len(popen_spy) == 3

    # Resume clicked on one interrupted run in two tabs: one process
    _running_status(runner.runs_dir / "cut", _dead_pid())
    assert runner.info("cut").resumable
    launched = len(popen_spy)
    results = _concurrently(*[lambda: runner.resume("cut", force=True)] * 2)
    assert sum(isinstance(r, jobs.RunHandle) for r in results) == 1
    (refused,) = [r for r in results if isinstance(r, JobError)]
    assert "is running" in str(refused) and len(popen_spy) == launched + 1


def test_relative_paths_are_made_absolute_for_the_trainer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # NOTE: the trainer runs from the project root, not from where the server was started
    monkeypatch.chdir(tmp_path)
    runner = TrainingJobRunner(tmp_path / "runs")
    config = runner._absolute_paths(tiny(Path("d.csv"), teacher="t/a.keras, b.keras"))
    # the dataset as the Training page reads it: from the project root; model files (from the
    # models folder, as the registry reads it) from the working folder
    assert config.data == str((registry.PROJECT_ROOT / "d.csv").resolve())
    assert config.teacher == f"{tmp_path / 't' / 'a.keras'},{tmp_path / 'b.keras'}"
    assert runner._absolute_paths(tiny(Path("d.csv"))).teacher == ""


def test_a_relative_dataset_path_means_the_same_to_the_check_and_the_run(
    tmp_path: Path, dataset: Path, monkeypatch: pytest.MonkeyPatch, fake_python: str
) -> None:
    assert jobs.resolve_data_path(" data/x ", root=tmp_path) == tmp_path / "data" / "x"
    assert jobs.resolve_data_path("/abs/x", root=tmp_path) == Path("/abs/x")
    assert jobs.resolve_data_path("~/x") == Path.home() / "x"
    relative = os.path.relpath(dataset, registry.PROJECT_ROOT)
    monkeypatch.chdir(tmp_path)  # a server started elsewhere
    assert validate_dataset(relative).ok
    runner = TrainingJobRunner(tmp_path / "runs", python=fake_python)
    handle = runner.start(tiny(Path(relative)), run_id="rel")
    launched = json.loads((handle.run_dir / "launch.json").read_text())["config"]["data"]
    assert Path(launched) == dataset.resolve()


def test_start_and_resume_run_the_trainers_checks_before_any_folder_or_process(
    tmp_path: Path, fake_python: str, popen_spy: list[subprocess.Popen[bytes]]
) -> None:
    runner = TrainingJobRunner(tmp_path / "runs", python=fake_python)
    (tmp_path / "text.keras").write_text("not a model")
    base = TrainConfig(data=str(tmp_path))
    cases = [
        (replace(base, teacher=str(tmp_path / "gone.keras")), "gone.keras: teacher file not found"),
        (replace(base, live_teacher=True), "--live-teacher needs --teacher"),
        (replace(base, teacher="t.npz", live_teacher=True), "must be a .keras file"),
        (replace(base, learning_rate=-1.0), "--lr must be a finite number"),
        (replace(base, init_model=str(tmp_path / "gone.keras")), "the model to fine-tune"),
        (replace(base, init_model=str(tmp_path / "text.keras")), "not a .keras model file"),
    ]
    for config, message in cases:
        with pytest.raises(JobError, match=re.escape(message)):
            runner.start(config)
    assert popen_spy == [] and not runner.runs_dir.exists()

    # a run whose teacher went away since it was launched is not resumed
    cut = runner.runs_dir / "cut"
    cut.mkdir(parents=True)
    config = {"data": str(tmp_path), "teacher": str(tmp_path / "gone.npz")}
    (cut / "launch.json").write_text(json.dumps({"pid": _dead_pid(), "config": config}))
    assert runner.info("cut").resumable
    launched = len(popen_spy)  # (_dead_pid's)
    with pytest.raises(JobError, match="gone.npz: teacher file not found"):
        runner.resume("cut")
    assert len(popen_spy) == launched and [p.name for p in cut.iterdir()] == ["launch.json"]


def test_a_run_saved_with_relative_paths_resumes_whatever_the_servers_folder(
    tmp_path: Path,
    fake_python: str,
    popen_spy: list[subprocess.Popen[bytes]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run started from the command line keeps its paths as typed, relative to the project
    root where the trainer runs: Resume checks them there, not in the server's folder."""
    runner = TrainingJobRunner(tmp_path / "runs", python=fake_python)
    run = runner.runs_dir / "cli"
    run.mkdir(parents=True)
    teacher = "models/" + registry.default_model_name(registry.MODELS_DIR) + ".keras"
    assert (registry.PROJECT_ROOT / teacher).is_file()
    config = {"data": str(tmp_path), "teacher": teacher, "live_teacher": True}
    (run / "launch.json").write_text(json.dumps({"pid": _dead_pid(), "config": config}))
    monkeypatch.chdir(tmp_path)  # the server started elsewhere
    launched = len(popen_spy)
    runner.resume("cli")
    assert len(popen_spy) == launched + 1


def test_the_suggested_model_name_is_free_and_never_reserved(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    assert jobs.suggest_model_name("20250101-tiny", models) == "20250101-tiny"
    assert jobs.suggest_model_name("registry", models) == "registry-2"  # registry.json's name
    assert jobs.suggest_model_name("Registry", models) == "Registry-2"
    (models / "taken.json").write_text("{}")  # a card alone takes the name
    (models / "taken-2.tflite").write_bytes(b"x")  # so does a leftover runtime file
    assert jobs.suggest_model_name("taken", models) == "taken-3"
    assert jobs.suggest_model_name("a..b", models) == "a.b"
    for run_id in ("registry", "taken", "a..b", "x" * 100):
        registry.check_name_free(jobs.suggest_model_name(run_id, models), models)


def test_a_run_resumed_from_the_command_line_is_running_and_can_be_cancelled(
    tmp_path: Path,
) -> None:
    runner = TrainingJobRunner(tmp_path / "runs")
    run = runner.runs_dir / "ui"
    page_pid = _dead_pid()  # launched from the page, whose process has since been killed
    _running_status(run, page_pid)
    launch = json.loads((run / "launch.json").read_text()) | {"launched_at": time.time() - 60}
    (run / "launch.json").write_text(json.dumps(launch))
    (run / "exit.json").write_text(json.dumps({"pid": page_pid, "returncode": -9}))
    assert runner.info("ui").state == "failed"

    # README: `python -m emotion_core.train --out RUN --resume` goes on from the command line
    argv = [sys.executable, "-c", SLEEP, "-m", "emotion_core.train", "--out", str(run), "--resume"]
    cli = subprocess.Popen(argv)
    status = {"kind": "epoch", "state": "running", "epoch": 5, "epochs": 10, "pid": cli.pid,
              "updated_at": time.time()}  # fmt: skip
    try:
        (run / "status.json").write_text(json.dumps(status))
        info = runner.info("ui")
        assert info.state == "running" and info.pid == cli.pid and info.epoch == 5
        assert not info.resumable
        busy = runner.running_job()
        assert busy is not None and busy.run_id == "ui"
        with pytest.raises(JobError, match="is running"):
            runner.resume("ui")
        with pytest.raises(JobError, match="still running"):
            runner.activate("ui", "m")
        runner.cancel("ui")
        assert cli.wait(10) == -signal.SIGTERM  # Cancel reached the command-line process
    finally:
        cli.kill()
        cli.wait()

    # it ended after the page's launch: its final status is the run's
    ended_at = time.time()
    (run / "status.json").write_text(json.dumps(status | {"kind": "end", "state": "finished",
                                                          "updated_at": ended_at}))  # fmt: skip
    assert runner.info("ui").state == "finished"

    # a later Resume from the page: the older status (of another process) is not this launch's
    relaunched = subprocess.Popen(argv)
    try:
        launch |= {"pid": relaunched.pid, "launched_at": ended_at + 1}
        (run / "launch.json").write_text(json.dumps(launch))
        info = runner.info("ui")
        assert info.state == "running" and info.pid == relaunched.pid
        assert info.message == "starting (loading data)"
    finally:
        relaunched.kill()
        relaunched.wait()


def test_a_crash_after_cancel_is_a_failure_and_a_cancel_at_start_says_what_is_kept(
    tmp_path: Path,
) -> None:
    runner = TrainingJobRunner(tmp_path / "runs")

    def ended_after_cancel(run_id: str, returncode: int | None, epochs_done: int) -> jobs.RunInfo:
        pid = _dead_pid()
        run = runner.runs_dir / run_id
        _running_status(run, pid)
        (run / "CANCEL").write_text(f"{time.time()}\n")
        if returncode is not None:
            (run / "exit.json").write_text(json.dumps({"pid": pid, "returncode": returncode}))
        if epochs_done:
            (run / "resume.json").write_text(json.dumps({"epoch": epochs_done, "best": 0.3,
                                                         "elapsed_s": 60.0}))  # fmt: skip
        return runner.info(run_id)

    # killed (the OOM killer) at epoch 12 while it finished the batch before stopping
    crashed = ended_after_cancel("oom", -signal.SIGKILL, 12)
    assert crashed.state == "failed" and crashed.resumable and crashed.epoch == 12
    assert "killed by SIGKILL" in crashed.message and "asked to cancel" in crashed.message
    exited = ended_after_cancel("exit1", 1, 3)
    assert exited.state == "failed" and "exited with code 1" in exited.message

    # the cancel's own SIGTERM, before the trainer set its handler (or an unknown exit code)
    early = ended_after_cancel("early", -signal.SIGTERM, 0)
    assert early.state == "cancelled" and early.message == "cancelled before training started"
    later = ended_after_cancel("later", -signal.SIGTERM, 4)
    assert later.state == "cancelled" and "before training started" not in later.message
    assert "checkpoint of epoch 4 is kept" in later.message
    unknown = ended_after_cancel("unknown", None, 0)
    assert unknown.state == "cancelled"


def test_a_run_being_activated_cannot_be_resumed(
    tmp_path: Path, fake_python: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    models, _, _ = models_with_fake_run(tmp_path)
    runner = TrainingJobRunner(models / "runs", python=fake_python, models_dir=models)
    run = runner.runs_dir / "r"
    (run / "status.json").write_text(json.dumps({"state": "cancelled"}))
    (run / "hparams.json").write_text(json.dumps({"data": str(tmp_path), "arch": "tiny"}))
    assert runner.info("r").resumable
    gate = gate_publishing(monkeypatch)
    job = runner.start_activation("r", "mine")
    try:
        with pytest.raises(JobError, match="being activated as model 'mine'"):
            runner.resume("r")
        assert not (run / "launch.json").exists()  # nothing launched
        assert runner.activating("r") == "mine" and runner.activating("other") == ""
    finally:
        gate.set()
        assert job.wait(30).finished
        runner.forget_activation(job)
    assert runner.activating("r") == ""

    # another server process is activating it (its marker names a live process): refused too
    other = subprocess.Popen(["sleep", "60"])
    try:
        (models / jobs.ACTIVATION_MARKER).write_text(json.dumps({
            "run_id": "r", "name": "theirs", "pid": other.pid, "started": time.time(),
            "process_start": procs.process_start(other.pid),
        }))  # fmt: skip
        with pytest.raises(JobError, match="being activated as model 'theirs'"):
            runner.resume("r")
    finally:
        other.kill()
        other.wait()
    runner.resume("r")  # that process is gone: the run resumes
    assert runner.info("r").running
