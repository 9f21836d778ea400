"""Bad input to the command-line tools: a one-line message and exit status 2, before the work
where it can be known then, and never at the cost of what a run folder or the registry holds."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from helpers_data import synthetic_csv

from emotion_core import bench, evaluate, publish
from emotion_core import train as train_module
from emotion_core.train import parse_args

pytestmark = pytest.mark.usefixtures("private_cache")

RUN_FILES = {
    "last.keras": b"last weights",
    "best.keras": b"best weights",
    "metrics.csv": b"epoch,loss\n1,0.5\n",
    "eval.json": b'{"accuracy": 0.5}',
    "resume.json": b'{"epoch": 1, "best": 0.5, "elapsed_s": 10.0}',
    "status.json": b'{"kind": "end", "state": "finished", "message": "finished"}',
}


def finished_run(folder: Path, data: Path, **files: bytes) -> Path:
    """A run folder as training leaves it (the checkpoints' bytes need not be a network)."""
    folder.mkdir(parents=True)
    hparams = json.dumps({"data": str(data), "arch": "tiny", "epochs": 1}).encode()
    for name, content in (RUN_FILES | {"hparams.json": hparams} | files).items():
        (folder / name).write_bytes(content)
    return folder


def contents(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


# ---------------------------------------------------------------- train


def test_train_never_touches_a_finished_run_without_resume(tmp_path, capsys):
    run = finished_run(tmp_path / "run", tmp_path / "fer.csv")
    before = contents(run)
    assert train_module.main(["--data", str(tmp_path / "fer.csv"), "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "already holds a run" in err and "--resume" in err
    assert contents(run) == before  # checkpoints, metrics, evaluation and status all kept
    with pytest.raises(SystemExit) as exit_info:  # a flag error, also before anything
        train_module.main(["--data", "d.csv", "--out", str(run), "--live-teacher"])
    assert exit_info.value.code == 2
    assert "--live-teacher needs --teacher" in capsys.readouterr().err
    assert contents(run) == before
    with pytest.raises(
        train_module.RunFolderError, match="already holds a run"
    ):  # the API refuses too
        train_module.train(train_module.TrainConfig(data="d.csv"), run)
    assert contents(run) == before


def test_train_checks_its_input_files_before_making_the_run_folder(tmp_path, capsys):
    csv = tmp_path / "fer.csv"
    (tmp_path / "folder.keras").mkdir()
    (tmp_path / "text.keras").write_text("not a model")
    cases = [
        (["--init-model", str(tmp_path / "missing.keras")], "missing.keras: the model to fine"),
        (["--init-model", str(tmp_path / "folder.keras")], "folder.keras: the model to fine"),
        (["--init-model", str(tmp_path / "text.keras")], "not a .keras model file"),
        (["--teacher", str(tmp_path / "missing.npz")], "missing.npz: teacher file not found"),
        (["--live-teacher", "--teacher", str(tmp_path / "t.npz")], "must be a .keras file"),
        (["--arch", "no-such-net"], "unknown architecture 'no-such-net'"),
    ]
    for flags, message in cases:
        out = tmp_path / "run"
        assert train_module.main(["--data", str(csv), "--out", str(out), *flags]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err, (flags, err)
        assert not out.exists(), flags


def test_train_refuses_a_network_of_the_wrong_shape_before_the_run_folder(tmp_path, capsys):
    """A model to fine-tune or a live teacher with 5 outputs (or 64x64 inputs) failed only after
    the data loaded, on a TensorFlow shape error; now the start is refused, naming the file."""
    from emotion_core.zoo import make_tiny_model

    five, wide = tmp_path / "five.keras", tmp_path / "wide.keras"
    make_tiny_model(num_classes=5).save(five)
    make_tiny_model((64, 64, 1)).save(wide)
    csv = synthetic_csv(tmp_path / "fer.csv")
    cases = [
        (["--init-model", str(five)], f"{five}: 5 outputs, but training needs 7 classes"),
        (["--init-model", str(wide)], f"{wide}: input shape (64, 64, 1), but training feeds"),
        (["--live-teacher", "--teacher", str(five)], f"{five}: 5 outputs, but training needs 7"),
    ]
    for flags, message in cases:
        out = tmp_path / "run"
        assert train_module.main(["--data", str(csv), "--out", str(out), *flags]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err, (flags, err)
        assert "Traceback" not in err and "must have the same shape" not in err
        assert not out.exists(), flags


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--lr", "-0.1"], "--lr: must be a finite number >= 0, not -0.1"),
        (["--lr", "nan"], "--lr: must be a finite number >= 0, not nan"),
        (["--weight-decay", "inf"], "--weight-decay: must be a finite number >= 0, not inf"),
        (["--weight-decay", "-1"], "--weight-decay: must be a finite number >= 0, not -1"),
        (["--label-smoothing", "1"], "--label-smoothing: must be in [0, 1), not 1"),
        (["--label-smoothing", "-0.1"], "--label-smoothing: must be in [0, 1), not -0.1"),
        (["--distill-alpha", "1.5"], "--distill-alpha: must be in [0, 1], not 1.5"),
        (["--distill-temperature", "0"], "--distill-temperature: must be a finite number > 0"),
        (["--time-budget", "-5"], "--time-budget: must be a finite number >= 0, not -5"),
        (["--live-teacher"], "--live-teacher needs --teacher a.keras[,b.keras...]"),
    ],
)
def test_out_of_range_training_flags_are_refused_at_once(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--data", "d.csv", *flags])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_the_training_pages_run_folders_are_accepted(tmp_path):
    """jobs.py launches into a fresh folder holding its stdout.log and launch.json, and
    resumes with --resume (a run without any checkpoint yet starts afresh)."""
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "stdout.log").write_text("=== start\n")
    (fresh / "launch.json").write_text("{}")
    assert train_module.check_run_folder(fresh, resume=False) is False
    assert train_module.check_run_folder(fresh, resume=True) is False
    assert train_module.check_run_folder(tmp_path / "new", resume=False) is False
    run = finished_run(tmp_path / "run", tmp_path / "fer.csv")
    assert train_module.check_run_folder(run, resume=True) is True


def test_a_run_that_cannot_be_resumed_is_refused_with_its_reason(tmp_path, capsys):
    csv = tmp_path / "fer.csv"
    broken = {
        "empty-state": ({"resume.json": b"{}"}, "resume.json: needs epoch, elapsed_s and best"),
        "bad-json": ({"resume.json": b"{epoch"}, "resume.json: unreadable"),
        "list-hparams": ({"hparams.json": b"[]"}, "hparams.json: not a JSON object"),
    }
    for name, (files, message) in broken.items():
        run = finished_run(tmp_path / name, csv, **files)
        before = contents(run)
        assert train_module.main(["--data", str(csv), "--out", str(run), "--resume"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and "Traceback" not in err, name
        assert "--init-model" in err and contents(run) == before, name
    best_only = finished_run(tmp_path / "best-only", csv)
    (best_only / "last.keras").unlink()
    assert train_module.main(["--data", str(csv), "--out", str(best_only), "--resume"]) == 2
    assert "no last.keras to resume from" in capsys.readouterr().err
    assert (best_only / "best.keras").read_bytes() == RUN_FILES["best.keras"]


def test_a_failed_resume_of_a_finished_run_keeps_its_final_status(tmp_path, capsys):
    missing = tmp_path / "moved.csv"  # the data is gone: found out only as it loads
    run = finished_run(tmp_path / "run", missing)
    assert train_module.main(["--data", str(missing), "--out", str(run), "--resume"]) == 2
    assert "moved.csv" in capsys.readouterr().err
    assert json.loads((run / "status.json").read_text())["state"] == "finished"
    assert (run / "last.keras").read_bytes() == RUN_FILES["last.keras"]
    fresh = tmp_path / "fresh"  # a new run that fails says so in its status
    assert train_module.main(["--data", str(missing), "--out", str(fresh)]) == 2
    assert json.loads((fresh / "status.json").read_text())["state"] == "failed"


def test_the_epochs_done_of_a_broken_resume_json_are_none(tmp_path, monkeypatch):
    state = tmp_path / "resume.json"
    assert train_module._epochs_done(tmp_path) == 0  # missing
    for content in (b"[1, 2]", b'"text"', b"{epoch", b'{"epoch": null}', b'{"epoch": "2"}',
                    b'{"epoch": -1}', b'{"epoch": true}', b"\xff\xfe"):  # fmt: skip
        state.write_bytes(content)
        assert train_module._epochs_done(tmp_path) == 0, content
    state.write_text('{"epoch": 3, "best": 0.5, "elapsed_s": 1.0}')
    assert train_module._epochs_done(tmp_path) == 3
    real_read_text = Path.read_text

    def read_text(self: Path, *args, **kwargs) -> str:
        if self.name == "resume.json":
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    assert train_module._epochs_done(tmp_path) == 0


def test_the_cli_checks_a_start_once(tmp_path, monkeypatch, capsys):
    """main checks the run folder and the input files once (in _preflight), and the settings
    once more than that (parse_args, for a usage error; then the settings it trains with)."""
    calls: list[str] = []
    for name in ("check_run_folder", "check_config", "check_inputs"):
        real = getattr(train_module, name)

        def counted(*args, _real=real, _name=name, **kwargs):
            calls.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(train_module, name, counted)

    def stop(config):
        raise train_module.DataError("stopped by the test after the checks")

    monkeypatch.setattr(train_module, "load_training_data", stop)
    out = tmp_path / "run"
    assert train_module.main(["--data", str(tmp_path / "d.csv"), "--out", str(out)]) == 2
    assert "stopped by the test" in capsys.readouterr().err
    assert sorted(calls) == ["check_config", "check_config", "check_inputs", "check_run_folder"]


def test_an_out_that_is_a_file_or_below_one_is_a_clear_error(tmp_path, capsys):
    a_file = tmp_path / "a-file"
    a_file.write_text("keep me")
    for out in (a_file, a_file / "run"):
        assert train_module.main(["--data", "d.csv", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and str(a_file) in err and "Traceback" not in err
    assert a_file.read_text() == "keep me"


# ---------------------------------------------------------------- publish


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"[]", "hparams.json: not a training run (not a JSON object)"),
        (b'\xff\xfe{"arch": "tiny"}', "hparams.json: unreadable"),
        (b'{"arch": "tiny", "data": null}', "hparams.json: not a training run (no 'data')"),
        (b'{"arch": "tiny"}', "hparams.json: not a training run (no 'data')"),
        (b'{"data": "d.csv", "arch": ["tiny"]}', "'arch' must be text"),
    ],
)
def test_publish_explains_a_malformed_hparams_json(tmp_path, monkeypatch, capsys, content, message):
    monkeypatch.setattr(publish, "MODELS_DIR", tmp_path / "models")
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.keras").write_bytes(b"x")
    (run / "hparams.json").write_bytes(content)
    assert publish.main([str(run), "--name", "m"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_publish_refuses_a_taken_name_before_any_work(tmp_path, monkeypatch, capsys):
    models = tmp_path / "models"
    models.mkdir()
    (models / "taken.json").write_text("{}")  # a card alone blocks the name too
    monkeypatch.setattr(publish, "MODELS_DIR", models)
    run = tmp_path / "run"  # no checkpoint at all: the name is checked first
    run.mkdir()
    (run / "hparams.json").write_text(json.dumps({"data": "d.csv"}))
    assert publish.main([str(run), "--name", "taken"]) == 2
    assert "a model named 'taken' already exists" in capsys.readouterr().err


def test_a_publish_that_fails_while_registering_leaves_no_half_model(tmp_path, monkeypatch, capsys):
    from emotion_core import registry
    from emotion_core.zoo import make_model

    csv = synthetic_csv(tmp_path / "fer.csv")
    run = tmp_path / "run"
    run.mkdir()
    make_model(arch="tiny").save(run / "best.keras")
    (run / "hparams.json").write_text(json.dumps({"data": str(csv), "arch": "tiny"}))
    models = tmp_path / "models"
    monkeypatch.setattr(publish, "MODELS_DIR", models)
    real_write = registry.atomic_write_json

    def disk_full_for_cards(path: Path, data: object) -> None:
        if Path(path).name == "m.json":
            raise OSError(28, "No space left on device")
        real_write(path, data)

    monkeypatch.setattr(registry, "atomic_write_json", disk_full_for_cards)
    args = [str(run), "--name", "m", "--runtime", "keras", "--recalibrate-faces", "-1"]
    assert publish.main(args) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert not [p.name for p in models.glob("m.*")]  # the .keras file went again
    monkeypatch.setattr(registry, "atomic_write_json", real_write)
    assert publish.main(args) == 0  # so the name is free
    assert (models / "m.keras").exists() and (models / "m.json").exists()


# ---------------------------------------------------------------- evaluate


def test_evaluate_keeps_its_report_and_its_image_apart(tmp_path, capsys, monkeypatch):
    from emotion_core.zoo import make_model

    csv = synthetic_csv(tmp_path / "fer.csv", n_train=7, n_val=14)
    make_model(arch="tiny").save(tmp_path / "m.keras")
    report = tmp_path / "rep.png"  # a report named like the image
    args = ["--model", str(tmp_path / "m.keras"), "--data", str(csv), "--json", str(report)]
    assert evaluate.main(args) == 0
    assert json.loads(report.read_text())["n"] == 14  # still the report
    image = tmp_path / "rep.confusion.png"
    assert image.read_bytes().startswith(b"\x89PNG")
    capsys.readouterr()
    monkeypatch.setattr(evaluate.cv2, "imwrite", lambda path, image: False)
    assert evaluate.main(args) == 2
    captured = capsys.readouterr()
    assert captured.out.strip().splitlines()[-1].startswith("accuracy=")
    assert "cannot write the image" in captured.err and "rep.confusion.png" in captured.err


# ---------------------------------------------------------------- bench


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["clip.avi", "--detect-width", "-5"], "--detect-width: must be at least 0, not -5"),
        (["clip.avi", "--warmup", "-1"], "--warmup: must be at least 0, not -1"),
        (["clip.avi", "--max-frames", "0"], "--max-frames: must be at least 1, not 0"),
        (["clip.avi", "--warm", "2"], "unrecognized arguments: --warm 2"),  # no abbreviations
        (["model", "--mod", "x"], "unrecognized arguments: --mod x"),
    ],
)
def test_bench_flags_are_checked_like_the_other_tools(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def fake_video_bench(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """bench's decoding, model and timing replaced by stand-ins; the steps taken, in order."""
    steps: list[str] = []

    def read_frames(path: Path, max_frames: int | None = None) -> tuple[object, list[object]]:
        steps.append("decode")
        return SimpleNamespace(width=64, height=48), [object()]

    result = bench.PipelineBench(1, 0, 50.0, 20.0, 20.0, 20.0, 20.0, 10.0)
    monkeypatch.setattr(bench, "read_frames", read_frames)
    monkeypatch.setattr(bench, "load_model", lambda *args: SimpleNamespace(name="f", runtime="r"))
    monkeypatch.setattr(bench, "bench_pipeline", lambda *args, **kwargs: result)
    return steps


def test_bench_checks_its_json_path_before_the_work_and_prints_first(tmp_path, monkeypatch, capsys):
    steps = fake_video_bench(monkeypatch)
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    assert bench.main(["clip.avi", "--json", str(a_file / "b.json")]) == 2
    assert steps == [] and str(a_file) in capsys.readouterr().err  # nothing decoded
    assert bench.main(["clip.avi", "--json", str(tmp_path)]) == 2  # a folder
    assert steps == [] and "is a folder" in capsys.readouterr().err

    # the file cannot be written after all (e.g. the disk filled meanwhile): the result stands
    monkeypatch.setattr(bench, "prepare_output_file", lambda path: None)
    assert bench.main(["clip.avi", "--json", str(a_file / "b.json")]) == 2
    captured = capsys.readouterr()
    assert captured.out.strip().splitlines()[-1].startswith("fps=50.0 p50_ms=20.00")
    last_error = captured.err.strip().splitlines()[-1]
    assert last_error.startswith("error: cannot write") and "Traceback" not in captured.err
    out = tmp_path / "new" / "b.json"
    assert bench.main(["clip.avi", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["fps"] == 50.0 and np.isclose(
        json.loads(out.read_text())["cpu_ms_per_frame"], 10.0
    )
