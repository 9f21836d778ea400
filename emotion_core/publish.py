"""Publish a training run into the model registry: recalibrate, fold, calibrate, measure, write
the card.

    python -m emotion_core.publish RUN_DIR --name NAME [--default] [--checkpoint best|last]
        [--runtime tflite|tflite-dynamic|keras] [--recalibrate-faces N] [--notes TEXT]

Steps: load the run's best.keras (or last.keras); recalibrate its batch norm on clean training
faces (the statistics gathered in training are of augmented faces; emotion_core.soup); fold batch
norm into the inference form when
the architecture has one (same outputs, ~2x faster on CPU); export it for the runtime the app
will use (default: float32 TFLite, same outputs, several times faster on CPU); evaluate that
runtime on the run's validation split with and without flip TTA; fit a temperature on that split
(kept only when it does not worsen the 15-bin ECE) and report ECE before and after; time one face
through the runtime (and the Keras call, for comparison); register the .keras file, the .tflite
file and the JSON card.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emotion_core.calibration import (
    apply_temperature,
    choose_temperature,
    expected_calibration_error,
)
from emotion_core.classes import CLASSES
from emotion_core.cli import command_parser, quiet_native_logs
from emotion_core.data import DataError, load_dataset
from emotion_core.evaluate import predict_all, report_from_probs
from emotion_core.fileio import FileId, JsonFileError, load_json_object, read_json_object
from emotion_core.preprocess import preprocess_batch
from emotion_core.registry import (
    MODELS_DIR,
    REGISTRY_FILE,
    ModelCard,
    ModelError,
    check_name_free,
    read_card,
    register_model,
    undo_registration,
)
from emotion_core.soup import DEFAULT_MAX_FACES

CHECKPOINTS = ("best", "last")
RUNTIMES = ("tflite", "tflite-dynamic", "keras")
CHECKPOINT_FILES = tuple(f"{checkpoint}.keras" for checkpoint in CHECKPOINTS)
# What publish_run is doing, in order, as it reports it to its `progress` callback (which also
# gets finer detail lines, e.g. each batch-norm layer; the recalibration step is reported only
# when it runs).
PUBLISH_STEPS = (
    "loading the checkpoint",
    "recalibrating batch norm on clean training faces",
    "exporting the network for the runtime",
    "evaluating on the validation split, with and without flip TTA",
    "fitting the temperature",
    "timing one face on this CPU",
    "registering the model",
)


def inference_form(model: Any, arch: str) -> Any:
    """The folded inference network for `arch` when the zoo has one, else the model itself."""
    from emotion_core.zoo import ARCHITECTURES, fold_batchnorm

    folded_name = f"{arch}-folded"
    if folded_name not in ARCHITECTURES:
        return model
    try:
        folded = fold_batchnorm(model, ARCHITECTURES[folded_name]())
    except ValueError as exc:  # a network of another shape than the zoo's `arch`
        raise ModelError(f"cannot fold this network as {arch!r}: {exc}") from exc
    probe = np.random.default_rng(0).random((8, 48, 48, 1), dtype=np.float32)
    diff = np.abs(np.asarray(model(probe, training=False)) - np.asarray(folded(probe))).max()
    if diff > 1e-3:
        raise ModelError(f"folding batch norm changed the outputs by {diff:.2g}; not publishing")
    return folded


def runtime_call(model: Any, runtime: str) -> tuple[Any, bytes | None]:
    """The inference function the app will run for `runtime`, and the .tflite bytes if any."""
    from emotion_core.inference import compile_call
    from emotion_core.runtime import TFLiteCall, checked_float_export, export_tflite

    if runtime not in RUNTIMES:
        raise ModelError(f"runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}")
    if runtime == "keras":
        return compile_call(model), None
    if runtime == "tflite":  # float32 must reproduce Keras; a quantized one is evaluated as is
        call, content, _ = checked_float_export(model)
        return call, content
    content = export_tflite(model, "dynamic")
    return TFLiteCall(content, "exported model"), content


def publish_run(
    run_dir: Path,
    name: str,
    make_default: bool = False,
    models_dir: Path | None = None,
    notes: str = "",
    checkpoint: str = "best",
    runtime: str = "tflite",
    recalibrate_faces: int = DEFAULT_MAX_FACES,
    progress: Callable[[str], None] | None = None,
    written: dict[Path, FileId] | None = None,
) -> ModelCard:
    """Register run_dir/<checkpoint>.keras (best: best validation accuracy; last: the final
    epoch, free of selection on the validation split) as models/<name>.keras with its card,
    and the network for `runtime` (see RUNTIMES) beside it; every figure is the runtime's.
    Batch norm is first recalibrated on `recalibrate_faces` clean training faces (0: all; -1:
    not at all), unless the run is an emotion_core.soup run that already was. `progress` gets
    each of PUBLISH_STEPS as it starts, and detail lines within a step; `written` the file_id
    of each file registered (see registry.register_model)."""
    from emotion_core.inference import EmotionClassifier, compile_call, load_keras_model
    from emotion_core.runtime import SPEED_WHEN_PUBLISHED, median_ms_per_face, speed_note

    step = progress or (lambda _stage: None)
    check_name_free(name, models_dir)  # before minutes of work
    run_dir = Path(run_dir)
    if checkpoint not in CHECKPOINTS:
        raise ModelError(f"checkpoint must be one of {', '.join(CHECKPOINTS)}, not {checkpoint!r}")
    weights = run_dir / f"{checkpoint}.keras"
    hparams = read_run_hparams(run_dir)
    step(PUBLISH_STEPS[0])
    trained = load_keras_model(weights)
    recalibration_note = recalibrate(trained, hparams, recalibrate_faces, step)
    step(PUBLISH_STEPS[2])
    model = inference_form(trained, hparams.get("arch", ""))
    call, tflite = runtime_call(model, runtime)
    step(PUBLISH_STEPS[3])
    val = load_dataset(hparams["data"], hparams.get("val_split", "PublicTest"))
    x_val = preprocess_batch(val.images)
    base = ModelCard(name=name, arch=hparams.get("arch", "unknown"))
    classifier = EmotionClassifier(model, base, calibrated=False, call=call, runtime=runtime)
    probs = predict_all(classifier, x_val)
    probs_tta = predict_all(classifier, x_val, tta=True)
    plain, tta = report_from_probs(probs, val.labels), report_from_probs(probs_tta, val.labels)
    step(PUBLISH_STEPS[4])
    temperature, temperature_note = choose_temperature(probs, val.labels)
    ece_before = expected_calibration_error(probs, val.labels)
    ece_after = expected_calibration_error(apply_temperature(probs, temperature), val.labels)
    step(PUBLISH_STEPS[5])
    cpu_ms, keras_ms = median_ms_per_face(call), median_ms_per_face(compile_call(model))
    stages = training_lineage(run_dir)
    card = ModelCard(
        name=name,
        arch=hparams.get("arch", "unknown"),
        classes=tuple(hparams.get("classes", CLASSES)),
        training_data=str(hparams["data"]),
        training_split=hparams.get("train_split", "Training"),
        validation_split=val.split,
        epochs=sum(stage.epochs for stage in stages),
        val_accuracy=round(plain.accuracy, 4),
        val_macro_f1=round(plain.macro_f1, 4),
        val_accuracy_tta=round(tta.accuracy, 4),
        val_macro_f1_tta=round(tta.macro_f1, 4),
        per_class=plain.per_class_dict(),
        temperature=round(temperature, 4),
        ece_before=round(ece_before, 4),
        ece_after=round(ece_after, 4),
        params=int(model.count_params()),
        cpu_ms_per_face=round(cpu_ms, 2),
        runtime=runtime,
        cpu_ms_per_face_keras=round(keras_ms, 2),
        cpu_ms_measured=speed_note(SPEED_WHEN_PUBLISHED),
        hardware="; ".join(
            dict.fromkeys(part for stage in stages for part in stage.hardware.split("; ") if part)
        ),
        training_time_s=round(sum(stage.seconds for stage in stages), 1) or None,
        date=time.strftime("%Y-%m-%d"),
        command=" && ".join(stage.command for stage in stages if stage.command),
        notes=" ".join(
            filter(None, [notes, _stages_note(stages), recalibration_note, temperature_note])
        ),
    )
    step(PUBLISH_STEPS[6])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.keras"
        model.save(path)
        register_model(
            path, card, models_dir, make_default=make_default, tflite=tflite, written=written
        )
    return card


def read_run_hparams(run_dir: Path) -> dict[str, Any]:
    """A run's hparams.json, checked to be a training run's (an object naming its data);
    ModelError saying what is wrong otherwise."""
    path = Path(run_dir) / "hparams.json"
    try:
        hparams = load_json_object(path)
    except JsonFileError as err:
        if err.reason == "missing":
            raise ModelError(f"{path}: missing (not a training run folder)") from None
        if err.reason == "not_object":
            raise ModelError(f"{path}: not a training run (not a JSON object)") from None
        raise ModelError(f"{path}: unreadable ({err.detail})") from err  # OS error, bad JSON
    if not isinstance(hparams.get("data"), str) or not hparams["data"]:
        raise ModelError(f"{path}: not a training run (no 'data')")
    for key in ("arch", "train_split", "val_split"):
        if key in hparams and not isinstance(hparams[key], str):
            raise ModelError(f"{path}: {key!r} must be text, not {hparams[key]!r}")
    return hparams


def recalibrate(
    model: Any,
    hparams: dict[str, Any],
    max_faces: int,
    progress: Callable[[str], None] | None = None,
) -> str:
    """Recalibrate the model's batch norm on clean faces of the run's training split (see
    emotion_core.soup) unless max_faces < 0, it has none, or the run already did; returns a
    note for the card ("" when nothing was done). `progress` gets PUBLISH_STEPS[1] and each
    layer, only when it runs."""
    from emotion_core.soup import batchnorm_layers, recalibrate_batchnorm, sample_faces

    if max_faces < 0 or not batchnorm_layers(model) or hparams.get("recalibrated_on"):
        return ""
    if progress:
        progress(PUBLISH_STEPS[1])
    split = hparams.get("train_split", "Training")
    train = load_dataset(hparams["data"], split)
    faces = sample_faces(train.images, max_faces)
    count = recalibrate_batchnorm(model, faces, progress=progress)
    return (
        f"Batch norm ({count} layers) recalibrated on {len(faces)} clean {train.split} faces "
        "before publishing (emotion_core.soup)."
    )


@dataclass(frozen=True)
class TrainingStage:
    """One training run (or soup): its folder, epochs done, training seconds and command."""

    run_dir: Path
    epochs: int
    seconds: float
    command: str
    hardware: str
    ingredients: tuple[Path, ...] = ()
    registered: bool = False  # a registered model (its card's figures stand for all its stages)


def _parent_sources(hparams: dict[str, Any]) -> list[Path]:
    """What a run started from: a soup's ingredients, or the --init-model file."""
    sources = hparams.get("ingredients") or [hparams.get("init_model") or ""]
    return [Path(str(s)) for s in sources if str(s)]


def _registered_stage(model_file: Path) -> TrainingStage | None:
    """models/NAME.keras with its card beside it, as one stage: the card's epochs, training
    time, command and hardware (those of every stage it was made in); None for any other file."""
    if model_file.suffix != ".keras":
        return None
    try:
        card = read_card(model_file.stem, model_file.parent)
    except ModelError:
        return None
    return TrainingStage(
        model_file.with_suffix(""),
        card.epochs,
        float(card.training_time_s or 0.0),
        card.command,
        card.hardware,
        registered=True,
    )


def training_lineage(run_dir: Path, max_stages: int = 20) -> list[TrainingStage]:
    """The run and every run it was built from, oldest first: the run it was fine-tuned from
    (--init-model RUN/best.keras or last.keras), or a soup's ingredients (emotion_core.soup),
    each counted once. A registered model started from (--init-model models/NAME.keras, or a
    soup ingredient) is one stage built from its card: a soup of two registered models that
    share training counts that training twice, since a card does not say what it was made of.
    A parent whose folder has no hparams.json ends that branch."""
    from emotion_core.jobs import describe_hardware, read_metrics

    stages: list[TrainingStage] = []
    seen: set[Path] = set()

    def first_visit(path: Path) -> bool:
        if path.resolve() in seen or len(seen) >= max_stages:
            return False
        seen.add(path.resolve())
        return True

    def visit(current: Path) -> None:
        if not first_visit(current):
            return
        hparams = read_json_object(current / "hparams.json")
        if not hparams:
            return
        sources = _parent_sources(hparams)
        parents = []
        for source in sources:
            if source.name in CHECKPOINT_FILES:
                parents.append(source.parent)
                visit(source.parent)
            elif registered := _registered_stage(source):
                parents.append(registered.run_dir)
                if first_visit(registered.run_dir):
                    stages.append(registered)
        metrics = read_metrics(current / "metrics.csv")
        seconds = (
            float(metrics["elapsed_s"].iloc[-1]) if "elapsed_s" in metrics and len(metrics) else 0.0
        )
        program, _, args = str(hparams.get("command", "")).partition(" ")
        if program.endswith("emotion_core/train.py"):  # runs recorded before the CLI form
            program = "python -m emotion_core.train"
        command = f"{program} {args}".strip()
        hardware = str(hparams.get("hardware") or describe_hardware())
        soup_of = tuple(parents) if hparams.get("ingredients") else ()
        stages.append(TrainingStage(current, len(metrics), seconds, command, hardware, soup_of))

    visit(Path(run_dir))
    return stages


def _stages_note(stages: Sequence[TrainingStage]) -> str:
    if len(stages) < 2:
        return ""
    parts = []
    for stage in stages:
        if stage.registered:
            parts.append(
                f"{stage.run_dir.name} (the registered model: {stage.epochs} epochs, "
                f"{stage.seconds / 60:.0f} min in all)"
            )
        elif stage.ingredients:
            names = ", ".join(p.name for p in stage.ingredients)
            averaged = f"the weights of {names} averaged, " if len(stage.ingredients) > 1 else ""
            parts.append(
                f"{stage.run_dir.name} ({averaged}batch norm recalibrated on the training faces)"
            )
        else:
            parts.append(
                f"{stage.run_dir.name} ({stage.epochs} epochs, {stage.seconds / 60:.0f} min)"
            )
    soup = any(s.ingredients for s in stages)
    verb = "each built on the ones before it" if soup else "each fine-tuning the previous one"
    return f"Trained in {len(stages)} stages, {verb}: " + ", then ".join(parts) + "."


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    quiet_native_logs()
    p = command_parser("emotion_core.publish", __doc__)
    p.add_argument("run_dir")
    p.add_argument("--name", required=True)
    p.add_argument("--default", action="store_true", help="make it the model the app uses")
    p.add_argument("--notes", default="")
    p.add_argument(
        "--checkpoint",
        choices=CHECKPOINTS,
        default="best",
        help="best: best validation accuracy; last: the final epoch (no selection on validation)",
    )
    p.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default="tflite",
        help="what the app runs: tflite (float32, same outputs as Keras, default), "
        "tflite-dynamic (int8 weights: 4x smaller file, faster for large nets, evaluated as such) "
        "or keras (tf.function)",
    )
    p.add_argument(
        "--recalibrate-faces",
        type=int,
        default=DEFAULT_MAX_FACES,
        help="recalibrate batch norm on this many clean training faces first (0: all of them; "
        f"-1: keep the trained statistics; default {DEFAULT_MAX_FACES}); skipped for a soup run",
    )
    a = p.parse_args(argv)
    models_dir = MODELS_DIR
    try:
        registry_before: bytes | None = (models_dir / REGISTRY_FILE).read_bytes()
    except OSError:
        registry_before = None
    written: dict[Path, FileId] = {}
    try:
        card = publish_run(
            Path(a.run_dir),
            a.name,
            a.default,
            models_dir=models_dir,
            notes=a.notes,
            checkpoint=a.checkpoint,
            runtime=a.runtime,
            recalibrate_faces=a.recalibrate_faces,
            progress=lambda line: print(f"[publish] {line}...", file=sys.stderr, flush=True),
            written=written,
        )
    except (ModelError, DataError, OSError, KeyError) as exc:
        undo_registration(written, registry_before)  # no half-registered model blocks the name
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BaseException:
        undo_registration(written, registry_before)
        raise
    print(json.dumps({k: v for k, v in card.to_dict().items() if k != "per_class"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
