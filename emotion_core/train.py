"""Train an emotion model: data -> model -> train -> evaluate (reads top to bottom).

    python -m emotion_core.train --data ../shared/data/fer2013 --arch vgg-m --epochs 120 \
        --out models/runs/my-run

Writes to the run folder: hparams.json, status.json (live progress), metrics.csv (per epoch),
last.keras (every epoch, with optimizer state, for --resume), best.keras (best val accuracy),
eval.json (evaluation of best.keras on the validation split when training ends); with live
distillation, whose checkpoints hold the student alone, also optimizer.npz (for --resume).
Backend-agnostic: TensorFlow here, KERAS_BACKEND=jax on a GPU box.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shlex
import signal
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from emotion_core.classes import CLASSES
from emotion_core.cli import (
    below_one_float,
    command_parser,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    prepare_output_folder,
    quiet_native_logs,
    unit_float,
)
from emotion_core.data import DataError, Dataset, load_dataset
from emotion_core.fileio import (
    JsonFileError,
    atomic_write_json,
    load_json_object,
    save_keras_atomically,
)
from emotion_core.preprocess import preprocess_batch
from emotion_core.registry import ModelError

# ---------------------------------------------------------------- configuration


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one run (saved as hparams.json)."""

    data: str
    arch: str = "fer-fast"
    epochs: int = 120
    batch_size: int = 128
    learning_rate: float = 0.01
    optimizer: str = "sgd"  # sgd (Nesterov momentum 0.9) or adamw
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # cosine, plateau or constant
    warmup_epochs: int = 2
    label_smoothing: float = 0.1
    class_weighting: bool = False
    augment: bool = True
    patience: int = 30  # early stopping on val accuracy (0 disables)
    time_budget_s: float = 0.0  # >0: stop (and anneal the cosine) by wall time
    train_split: str = "Training"
    val_split: str = "PublicTest"
    init_model: str = ""  # fine-tune from this .keras file instead of starting from scratch
    seed: int = 1337
    max_train_samples: int = 0  # 0 = all (small values for smoke tests)
    teacher: str = ""  # distil from a .keras teacher, its probabilities .npz or FER+ votes .csv
    distill_alpha: float = 0.5  # weight of the teacher's softened probabilities in the targets
    distill_temperature: float = 2.0
    live_teacher: bool = False  # teacher = "a.keras,b.keras" run in each step on the same view


# ---------------------------------------------------------------- progress interface


@dataclass(frozen=True)
class ProgressEvent:
    """What a UI needs to show progress; kind is 'start', 'batch', 'epoch' or 'end'."""

    kind: str
    epoch: int
    epochs: int
    batch: int
    steps: int
    metrics: dict[str, float]
    elapsed_s: float
    eta_s: float | None
    state: str = "running"
    message: str = ""


class ProgressListener(Protocol):
    """Anything that wants training progress (a UI, a status file, a console)."""

    def __call__(self, event: ProgressEvent) -> None: ...


class StatusFileWriter:
    """Writes status.json atomically (throttled for batch events) for other processes to read."""

    def __init__(self, run_dir: Path, min_interval_s: float = 1.0) -> None:
        self.path = run_dir / "status.json"
        self.min_interval_s = min_interval_s
        self._last = 0.0

    def __call__(self, event: ProgressEvent) -> None:
        now = time.time()
        if event.kind == "batch" and now - self._last < self.min_interval_s:
            return
        self._last = now
        data = asdict(event) | {"pid": os.getpid(), "updated_at": now}
        atomic_write_json(self.path, data)


class ConsoleProgress:
    """Prints one line per epoch (and the start/end) to stdout."""

    def __call__(self, event: ProgressEvent) -> None:
        if event.kind == "batch":
            return
        metrics = " ".join(f"{k}={v:.4f}" for k, v in event.metrics.items())
        eta = f" eta={event.eta_s:.0f}s" if event.eta_s is not None else ""
        print(
            f"[{event.kind}] epoch {event.epoch}/{event.epochs} {metrics}{eta} {event.message}",
            flush=True,
        )


def load_training_data(
    config: TrainConfig,
) -> tuple[Dataset, Dataset, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Load train/val splits -> datasets and model-ready arrays x (N,48,48,1), y (N,) int."""
    train = load_dataset(config.data, config.train_split)
    val = load_dataset(config.data, config.val_split)
    x_train, y_train = preprocess_batch(train.images), train.labels
    if config.max_train_samples:
        x_train, y_train = x_train[: config.max_train_samples], y_train[: config.max_train_samples]
    return train, val, x_train, y_train, preprocess_batch(val.images), val.labels


def class_weights(labels: np.ndarray, num_classes: int = len(CLASSES)) -> dict[int, float]:
    """Inverse-frequency weights normalised to mean 1 (missing classes get weight 1)."""
    counts = np.bincount(labels, minlength=num_classes).astype(float)
    weights = np.where(counts > 0, counts.sum() / (num_classes * np.maximum(counts, 1)), 1.0)
    return {i: float(w) for i, w in enumerate(weights)}


# ---------------------------------------------------------------- model


def build_model(config: TrainConfig, steps_per_epoch: int) -> Any:
    """A compiled zoo model (or the init model for fine-tuning)."""
    import keras

    from emotion_core.zoo import make_model

    if config.init_model:
        model = keras.saving.load_model(config.init_model, compile=False, safe_mode=True)
        model, note = with_augmentation(model, config.augment)
        if note:
            print(f"note: {note}", flush=True)
    else:
        model = make_model((48, 48, 1), len(CLASSES), config.arch, augment=config.augment)
    return _compile(model, config)


def init_model_arch(model: Any, config: TrainConfig) -> str:
    """The architecture a run records: a fine-tune's start model names its own when it is a zoo
    network (e.g. a registered fer-fast file is 'fer-fast-folded') or one --arch cannot describe
    (e.g. a pruned 'vgg-m-p2'), since publishing rebuilds and folds by that name (and never
    folds one the zoo does not know); else config.arch."""
    from emotion_core.zoo import ARCHITECTURES

    if not config.init_model or model.name == config.arch:
        return config.arch
    if (
        model.name not in ARCHITECTURES
        and config.arch in ARCHITECTURES
        and _weight_shapes(model) == _weight_shapes(ARCHITECTURES[config.arch]())
    ):
        return config.arch  # e.g. a file saved under another name: --arch describes it
    print(
        f"note: {config.init_model} is a {model.name} network; recording that, not {config.arch!r}",
        flush=True,
    )
    return str(model.name)


def _weight_shapes(model: Any) -> list[tuple[int, ...]]:
    return [tuple(w.shape) for w in model.weights]


def with_augmentation(model: Any, augment: bool) -> tuple[Any, str]:
    """A fine-tune's start model with an augmentation layer exactly when `augment`: one added
    after the input (registered fer-fast models are published folded, without it) or its own
    removed (--no-augment), with copies of the other layers and their weights. Plain stacks only
    (soup.is_chain); returns (model, what changed or why not; "" when nothing had to)."""
    import keras

    from emotion_core.soup import is_chain
    from emotion_core.zoo import make_augmentation

    layers = list(model.layers)
    has_it = any(layer.name == "augment" for layer in layers)
    if has_it == augment:
        return model, ""
    if not is_chain(model):
        kept = "keeps its augmentation layer" if has_it else "trains without augmentation"
        return model, f"{model.name} is not a plain stack of layers, so it {kept}"
    inputs = keras.Input(tuple(model.input_shape[1:]), name=layers[0].name)
    x = make_augmentation()(inputs) if augment else inputs
    for layer in layers[1:]:
        if layer.name != "augment":
            # NOTE: copies, not the layers themselves: a layer called in two graphs has two
            # inputs, and the copy must stay a plain stack (live distillation checks it).
            copy = type(layer).from_config(layer.get_config())
            x = copy(x)
            copy.set_weights(layer.get_weights())
    what = "added an augmentation layer to" if augment else "removed the augmentation layer of"
    return keras.Model(inputs, x, name=model.name), f"{what} {model.name}"


def _compile(model: Any, config: TrainConfig, live: bool = False) -> Any:
    """Compile with the configured optimizer and (soft-target) cross-entropy; live: a
    distill.live_distillation_trainer, against its own teachers' outputs."""
    import keras

    if config.optimizer == "adamw":
        optimizer: Any = keras.optimizers.AdamW(
            config.learning_rate, weight_decay=config.weight_decay
        )
    else:
        optimizer = keras.optimizers.SGD(
            config.learning_rate, momentum=0.9, nesterov=True, weight_decay=config.weight_decay
        )
    if live:
        from emotion_core.distill import accuracy, live_distillation_loss

        model.compile(
            optimizer=optimizer,
            loss=live_distillation_loss(config.distill_alpha),
            metrics=[accuracy],
        )
        return model
    model.compile(
        optimizer=optimizer,
        # NOTE: with a teacher the smoothing is already inside the soft targets.
        loss=keras.losses.CategoricalCrossentropy(
            label_smoothing=0.0 if config.teacher else config.label_smoothing
        ),
        metrics=["accuracy"],
    )
    return model


def live_trainer(student: Any, config: TrainConfig) -> Any:
    """The compiled live-distillation graph around student (see distill.py); the teachers are
    the .keras files in config.teacher."""
    from emotion_core.distill import live_distillation_trainer, teacher_paths
    from emotion_core.inference import load_keras_model

    teachers = [load_keras_model(path) for path in teacher_paths(config.teacher)]
    trainer = live_distillation_trainer(student, teachers, config.distill_temperature)
    return _compile(trainer, config, live=True)


OPTIMIZER_STATE = "optimizer.npz"  # a live-distillation run's optimizer variables


def save_optimizer_state(optimizer: Any, path: Path) -> None:
    """Write an optimizer's variables (step count, moments: one array per variable) to .npz,
    atomically: a live-distillation run's checkpoints hold the student alone."""
    import keras

    partial = path.with_name(path.stem + ".partial.npz")
    np.savez(partial, *[keras.ops.convert_to_numpy(v) for v in optimizer.variables])
    os.replace(partial, path)


def restore_optimizer_state(model: Any, path: Path) -> int | None:
    """Build model's optimizer on its trainable variables and load the saved ones; the step
    count restored, or None (nothing loaded) when the file is missing, unreadable or made for
    another graph."""
    import keras

    optimizer = model.optimizer
    optimizer.build(model.trainable_variables)
    try:
        with np.load(path) as saved:
            values = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    except (OSError, ValueError, KeyError):
        return None
    variables = list(optimizer.variables)
    shapes = [tuple(v.shape) for v in variables]
    if shapes != [value.shape for value in values]:
        return None
    for variable, value in zip(variables, values, strict=True):
        variable.assign(value)
    return int(keras.ops.convert_to_numpy(optimizer.iterations))


def lr_at(config: TrainConfig, epoch: int, progress: float) -> float:
    """Learning rate for an epoch; progress in [0, 1] is the epoch or time fraction done."""
    if epoch < config.warmup_epochs:
        return config.learning_rate * (epoch + 1) / (config.warmup_epochs + 1)
    if config.schedule == "cosine":
        return config.learning_rate * (
            0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        )
    return config.learning_rate


# ---------------------------------------------------------------- checks before a run starts


class RunFolderError(ValueError):
    """A run folder that training cannot use as asked (it would destroy or misread a run)."""


CHECKPOINT_FILES = ("last.keras", "best.keras")


def check_run_folder(run_dir: Path, resume: bool) -> bool:
    """Whether training into run_dir resumes it; RunFolderError when training would destroy
    or misread the run there: checkpoints without `resume`, or a resume that cannot go on
    from them (no last.keras, a missing or broken resume.json or hparams.json). Reads only."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(f"{run_dir}: exists and is not a folder; choose another --out")
    held = [name for name in CHECKPOINT_FILES if (run_dir / name).exists()]
    if not held:
        return False
    if not resume:
        raise RunFolderError(
            f"{run_dir} already holds a run ({', '.join(held)}); add --resume to continue it, "
            "or choose another --out"
        )
    if "last.keras" not in held:
        raise RunFolderError(
            f"{run_dir} has no last.keras to resume from; start a new run from its weights "
            f"(--init-model {run_dir / 'best.keras'}) with another --out"
        )
    read_resume_state(run_dir)
    _read_state_file(run_dir / "hparams.json")
    return True


def read_resume_state(run_dir: Path) -> tuple[int, float, float]:
    """(epochs done, training seconds so far, best val accuracy) from run_dir/resume.json;
    RunFolderError when it is missing or broken."""
    state = _read_state_file(run_dir / "resume.json")
    epoch, elapsed, best = (state.get(key) for key in ("epoch", "elapsed_s", "best"))
    if not (
        isinstance(epoch, int)
        and epoch >= 0
        and all(_is_number(value) for value in (epoch, elapsed, best))
    ):
        raise RunFolderError(
            f"{run_dir / 'resume.json'}: needs epoch, elapsed_s and best as numbers, has "
            f"{json.dumps(state)[:200]}; cannot resume {run_dir} (a new run can start from its "
            f"weights: --init-model {run_dir / 'last.keras'} with another --out)"
        )
    return int(state["epoch"]), float(state["elapsed_s"]), float(state["best"])


def _read_state_file(path: Path) -> dict[str, Any]:
    """A run's JSON object file; RunFolderError when it is missing, unreadable or not one."""
    hint = (
        f"cannot resume {path.parent} (a new run can start from its weights: --init-model "
        f"{path.parent / 'last.keras'} with another --out)"
    )
    try:
        return load_json_object(path)
    except JsonFileError as err:
        if err.reason == "missing":
            raise RunFolderError(f"{path}: missing; {hint}") from None
        if err.reason == "not_object":
            raise RunFolderError(f"{path}: not a JSON object; {hint}") from None
        raise RunFolderError(f"{path}: unreadable ({err.detail}); {hint}") from err


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# (field, flag, lowest, highest, whether the highest itself is allowed)
_RANGES = (
    ("learning_rate", "--lr", 0.0, math.inf, False),
    ("weight_decay", "--weight-decay", 0.0, math.inf, False),
    ("label_smoothing", "--label-smoothing", 0.0, 1.0, False),
    ("distill_alpha", "--distill-alpha", 0.0, 1.0, True),
    ("time_budget_s", "--time-budget", 0.0, math.inf, False),
)


def check_config(config: TrainConfig) -> None:
    """ValueError naming the first setting that cannot train: out of its range, or flags that
    do not go together."""
    for field, flag, low, high, high_allowed in _RANGES:
        value = getattr(config, field)
        if not (_is_number(value) and low <= value and (value < high or high_allowed)):
            bound = f"{high:g}]" if high_allowed else f"{high:g})"
            raise ValueError(f"{flag} must be a finite number in [{low:g}, {bound}, not {value!r}")
    if not (_is_number(config.distill_temperature) and config.distill_temperature > 0):
        raise ValueError(f"--distill-temperature must be > 0, not {config.distill_temperature!r}")
    if config.live_teacher and not config.teacher:
        raise ValueError("--live-teacher needs --teacher a.keras[,b.keras...]")


@dataclass(frozen=True)
class StartPlan:
    """A checked start (see checked_start), for train_plan."""

    config: TrainConfig  # what to train with (a resumed run's saved settings merged in)
    run_dir: Path
    resume: bool  # --resume was asked for
    resuming: bool  # and run_dir holds a run to continue


def checked_start(
    config: TrainConfig, run_dir: Path, resume: bool, overrides: Iterable[str]
) -> StartPlan:
    """The plan to train run_dir with, reading the folder only: a resumed run's saved settings
    (before its data and targets are built from them), checked with check_run_folder,
    check_config and check_inputs, which raise for what cannot train."""
    resuming = check_run_folder(run_dir, resume)
    if resuming:
        config = _resumed_config(config, run_dir, overrides)
    check_config(config)
    check_inputs(config, resuming)
    return StartPlan(config, run_dir, resume, resuming)


def check_inputs(config: TrainConfig, resuming: bool) -> None:
    """ValueError (distill.TeacherError for a teacher) when a file the run starts from is not
    there or cannot serve it: the teacher(s), and for a new run the model to fine-tune; a
    network (the model to fine-tune, a .keras teacher) must take one (48, 48, 1) face and give
    one output per class (read from its archive: see check_network_fits). (The data is checked
    as it loads.)"""
    from emotion_core.distill import TeacherError, teacher_paths

    if config.live_teacher:
        for path in teacher_paths(config.teacher):
            check_network_fits(path, "a live teacher (--teacher)", TeacherError)
    elif config.teacher and not Path(config.teacher).is_file():
        raise TeacherError(f"{config.teacher}: teacher file not found")
    elif config.teacher.endswith(".keras"):
        check_network_fits(Path(config.teacher), "the teacher (--teacher)", TeacherError)
    if config.init_model and not resuming:
        if not Path(config.init_model).is_file():
            raise ValueError(
                f"{config.init_model}: the model to fine-tune (--init-model) not found"
            )
        check_network_fits(Path(config.init_model), "the model to fine-tune (--init-model)")


def check_network_fits(path: Path, role: str, error: type[ValueError] = ValueError) -> None:
    """`error` naming the file and its role in the run (e.g. "the model to fine-tune
    (--init-model)") when it is not a usable .keras file, or not a network from one face of
    the size training feeds (INPUT_SIZE) to one output per class (CLASSES): training would
    otherwise fail only after the data loaded, on a shape error."""
    from emotion_core.preprocess import INPUT_SIZE
    from emotion_core.registry import network_shapes

    try:
        in_shape, outputs = network_shapes(path)
    except ModelError as exc:
        raise error(f"{exc}; it is {role}") from exc
    faces = (INPUT_SIZE, INPUT_SIZE, 1)
    if outputs != len(CLASSES):
        raise error(
            f"{path}: {outputs} outputs, but training needs {len(CLASSES)} classes "
            f"({', '.join(CLASSES)}); {role} must have one output per class"
        )
    if in_shape != faces:
        raise error(
            f"{path}: input shape {in_shape}, but training feeds faces of shape {faces}; "
            f"{role} must take them"
        )


# ---------------------------------------------------------------- training loop


def _make_callbacks(
    config: TrainConfig,
    run_dir: Path,
    listeners: Sequence[ProgressListener],
    steps: int,
    initial_epoch: int,
    prior_elapsed: float,
    best_so_far: float,
    stop_flag: dict[str, bool],
    network: Any = None,
) -> list[Any]:
    """network: what the checkpoints hold (default: the model being fit; with live
    distillation, the student inside it)."""
    import keras

    class RunCallback(keras.callbacks.Callback):  # type: ignore[misc]
        """LR schedule, checkpoints, metrics log, progress events, cancel and time budget."""

        def __init__(self) -> None:
            super().__init__()
            self.started = time.time() - prior_elapsed
            self.best = best_so_far
            self.epoch_times: list[float] = []
            self.epoch_started = time.time()
            self.since_best = 0
            self.epoch = initial_epoch
            self.cut_short = False  # cancelled before the epoch's last batch

        def _elapsed(self) -> float:
            return time.time() - self.started

        def _progress(self, epoch: int) -> float:
            if config.time_budget_s > 0:
                return self._elapsed() / config.time_budget_s
            return epoch / max(config.epochs, 1)

        def _eta(self, epoch: int, batch: int) -> float | None:
            if not self.epoch_times:
                rate = (time.time() - self.epoch_started) / max(batch, 1) * steps if batch else None
            else:
                rate = float(np.mean(self.epoch_times[-5:]))
            if rate is None:
                return None
            remaining = (config.epochs - epoch) * rate + rate * (1 - batch / max(steps, 1))
            if config.time_budget_s > 0:
                remaining = min(remaining, max(config.time_budget_s - self._elapsed(), 0.0))
            return float(max(remaining, 0.0))

        def _emit(
            self,
            kind: str,
            epoch: int,
            batch: int,
            metrics: dict[str, float],
            state: str = "running",
            message: str = "",
        ) -> None:
            event = ProgressEvent(
                kind,
                epoch,
                config.epochs,
                batch,
                steps,
                metrics,
                self._elapsed(),
                self._eta(epoch, batch),
                state,
                message,
            )
            for listener in listeners:
                listener(event)

        def _cancelled(self) -> bool:
            return stop_flag["stop"] or (run_dir / "CANCEL").exists()

        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self.epoch = epoch
            self.epoch_started = time.time()
            self.cut_short = False
            self.model.optimizer.learning_rate.assign(lr_at(config, epoch, self._progress(epoch)))

        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            if batch % 20 == 0:
                metrics = {k: float(v) for k, v in (logs or {}).items()}
                self._emit("batch", self.epoch + 1, batch + 1, metrics)
            if self._cancelled():
                self.cut_short = batch + 1 < steps
                self.model.stop_training = True

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            if self.cut_short:
                # NOTE: Keras still validates and ends an epoch it left part-way; saving it
                # would make --resume skip the rest of that epoch, so the last whole one stays.
                kept = (
                    f"the checkpoint of epoch {epoch} stays"
                    if (run_dir / "last.keras").exists()
                    else "no checkpoint has been saved yet"
                )
                self._emit(
                    "epoch",
                    epoch,
                    steps,
                    {"best_val_accuracy": self.best} if self.best >= 0 else {},
                    message=f"cancelled during epoch {epoch + 1}: its partial training is "
                    f"not saved; {kept}",
                )
                return
            logs = {k: float(v) for k, v in (logs or {}).items()}
            lr = float(np.asarray(self.model.optimizer.learning_rate))
            self.epoch_times.append(time.time() - self.epoch_started)
            saved = network if network is not None else self.model
            save_keras_atomically(saved, run_dir / "last.keras")
            if saved is not self.model:  # live distillation: the student alone, so also
                save_optimizer_state(self.model.optimizer, run_dir / OPTIMIZER_STATE)
            val_acc = logs.get("val_accuracy", logs.get("accuracy", 0.0))
            if val_acc > self.best:
                self.best = val_acc
                self.since_best = 0
                # eval.json describes the previous best.keras (a resumed run's earlier end)
                (run_dir / "eval.json").unlink(missing_ok=True)
                save_keras_atomically(saved, run_dir / "best.keras")
            else:
                self.since_best += 1
            row = {
                "epoch": epoch + 1,
                **{
                    k: logs.get(k, float("nan"))
                    for k in ("loss", "accuracy", "val_loss", "val_accuracy")
                },
                "lr": lr,
                "elapsed_s": self._elapsed(),
            }
            _append_metrics(run_dir / "metrics.csv", row)
            atomic_write_json(
                run_dir / "resume.json",
                {"epoch": epoch + 1, "best": self.best, "elapsed_s": self._elapsed()},
            )
            self._emit("epoch", epoch + 1, steps, logs | {"lr": lr, "best_val_accuracy": self.best})
            if config.patience and self.since_best >= config.patience:
                self.model.stop_training = True
            if config.time_budget_s > 0:
                mean_epoch = float(np.mean(self.epoch_times[-3:]))
                if self._elapsed() + mean_epoch > config.time_budget_s:
                    self.model.stop_training = True
            if self._cancelled():
                self.model.stop_training = True

    return [RunCallback()]


def _append_metrics(path: Path, row: dict[str, float]) -> None:
    new = not path.exists()
    with path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)
        fh.flush()


def train(
    config: TrainConfig,
    run_dir: Path,
    resume: bool = False,
    listeners: Sequence[ProgressListener] = (),
    overrides: Iterable[str] = ("epochs", "time_budget_s"),
) -> dict[str, Any]:
    """Run training into run_dir; returns the final summary (also in status.json).

    With resume=True the run's saved hyperparameters win, except the fields in `overrides`
    (by default epochs and time_budget_s, so a resumed run can be extended). Raises, before
    run_dir is touched, RunFolderError for a folder holding a run it would destroy (see
    check_run_folder) and ValueError for settings or input files that cannot train.
    """
    # NOTE: everything that would refuse the run is checked before the folder is touched.
    return train_plan(checked_start(config, run_dir, resume, overrides), listeners)


def train_plan(plan: StartPlan, listeners: Sequence[ProgressListener] = ()) -> dict[str, Any]:
    """Run a start that checked_start has checked (see train); the final summary."""
    import keras

    config, run_dir, resume, resuming = plan.config, plan.run_dir, plan.resume, plan.resuming
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "CANCEL").unlink(missing_ok=True)
    listeners = [StatusFileWriter(run_dir), *listeners]
    stop_flag = {"stop": False}
    _install_sigterm(stop_flag)
    keras.utils.set_random_seed(config.seed)

    # Data
    _emit_simple(listeners, "start", config, "loading data")
    train_set, val_set, x_train, y_train, x_val, y_val = load_training_data(config)
    steps = math.ceil(len(x_train) / config.batch_size)
    n = len(CLASSES)
    y_train_targets = keras.utils.to_categorical(y_train, n)
    if config.teacher and config.live_teacher:
        from emotion_core.distill import smoothed_one_hot

        # NOTE: the teachers' part of the targets is computed in each step (distill.py).
        y_train_targets = smoothed_one_hot(y_train, n, config.label_smoothing)
    elif config.teacher:
        from emotion_core.distill import distillation_targets, load_teacher

        _emit_simple(listeners, "start", config, f"teacher probabilities from {config.teacher}")
        y_train_targets = distillation_targets(
            y_train,
            load_teacher(
                config.teacher,
                x_train,
                y_train,
                train_set.split,
                split_labels=train_set.labels,
            ),
            config.distill_alpha,
            config.distill_temperature,
            config.label_smoothing,
        )
    y_val_1h = keras.utils.to_categorical(y_val, n)

    # Model (fresh, fine-tuned, or resumed from the last checkpoint)
    initial_epoch, prior_elapsed, best = 0, 0.0, -1.0
    if resuming:
        initial_epoch, prior_elapsed, best = read_resume_state(run_dir)
        live = config.live_teacher
        model = keras.saving.load_model(run_dir / "last.keras", compile=not live, safe_mode=True)
        # (a live run's checkpoint is the student alone: its training graph and optimizer
        # state are rebuilt below)
        if not live and getattr(model, "optimizer", None) is None:
            # NOTE: checkpoints slimmed for transfer (scripts/gpu_train.sh) have no optimizer
            # state; training goes on with a fresh optimizer at the scheduled learning rate.
            print(f"note: {run_dir / 'last.keras'} has no optimizer state; starting a new one")
            model = _compile(model, config)
    else:
        if resume:
            print(f"note: {run_dir} has no checkpoint to resume from; starting fresh", flush=True)
        model = build_model(config, steps)
        config = replace(config, arch=init_model_arch(model, config))
        # (no checkpoint is here: check_run_folder refused the folder otherwise)
        for stale in ("metrics.csv", "resume.json", "eval.json", OPTIMIZER_STATE):
            (run_dir / stale).unlink(missing_ok=True)
    network = model  # what the checkpoints hold
    if config.live_teacher:
        _emit_simple(listeners, "start", config, f"live teachers {config.teacher}")
        model = live_trainer(network, config)
        if initial_epoch:
            step = restore_optimizer_state(model, run_dir / OPTIMIZER_STATE)
            # NOTE: without the file (a run from before it was saved, or slimmed for transfer)
            # training goes on with a fresh optimizer at the scheduled learning rate.
            what = f"its optimizer state (step {step})" if step is not None else "a new optimizer"
            print(f"note: live distillation resumes with {what}", flush=True)
    from emotion_core.jobs import describe_hardware

    atomic_write_json(
        run_dir / "hparams.json",
        asdict(config)
        | {
            "classes": list(CLASSES),
            "train_counts": train_set.class_counts(),
            "val_counts": val_set.class_counts(),
            "backend": keras.backend.backend(),
            "params": int(network.count_params()),
            "hardware": describe_hardware(),
            "command": _command_line(),
        },
    )

    # Train
    callbacks = _make_callbacks(
        config, run_dir, listeners, steps, initial_epoch, prior_elapsed, best, stop_flag, network
    )
    started = time.time()
    # NOTE: a cancel can arrive while the data or teachers load (minutes); then no epoch starts.
    if initial_epoch < config.epochs and not (stop_flag["stop"] or (run_dir / "CANCEL").exists()):
        model.fit(
            x_train,
            y_train_targets,
            batch_size=config.batch_size,
            epochs=config.epochs,
            initial_epoch=initial_epoch,
            validation_data=(x_val, y_val_1h),
            class_weight=class_weights(y_train) if config.class_weighting else None,
            callbacks=callbacks,
            verbose=0,
            shuffle=True,
        )
    cancelled = stop_flag["stop"] or (run_dir / "CANCEL").exists()

    # Evaluate the best checkpoint on the validation split
    from emotion_core.evaluate import evaluate_model_file

    best_path = run_dir / "best.keras"
    report = evaluate_model_file(best_path, x_val, y_val) if best_path.exists() else None
    summary: dict[str, Any] = {
        "state": "cancelled" if cancelled else "finished",
        "epochs_done": _epochs_done(run_dir),
        "train_time_s": prior_elapsed + time.time() - started,
        "best_val_accuracy": report.accuracy if report is not None else None,
        "best_val_macro_f1": report.macro_f1 if report is not None else None,
    }
    if report is not None:
        atomic_write_json(run_dir / "eval.json", report.to_dict())
    _emit_simple(
        listeners,
        "end",
        config,
        f"{summary['state']}",
        state=summary["state"],
        metrics={k: v for k, v in summary.items() if isinstance(v, float)},
        epoch=summary["epochs_done"],
    )
    return summary


def _resumed_config(config: TrainConfig, run_dir: Path, overrides: Iterable[str]) -> TrainConfig:
    """config with the run's saved hyperparameters, except `overrides` and the data path."""
    hparams = _read_state_file(run_dir / "hparams.json")
    keep = set(overrides) | {"data"}
    fields = TrainConfig.__dataclass_fields__
    return replace(config, **{k: v for k, v in hparams.items() if k in fields and k not in keep})


def _epochs_done(run_dir: Path) -> int:
    """The epochs resume.json says are done; 0 when it is missing, unreadable, not a JSON
    object or has no such number (as _read_state_file reads it)."""
    try:
        epoch = _read_state_file(run_dir / "resume.json").get("epoch")
    except RunFolderError:
        return 0
    return int(epoch) if isinstance(epoch, int | float) and _is_number(epoch) and epoch >= 0 else 0


def _emit_simple(
    listeners: Sequence[ProgressListener],
    kind: str,
    config: TrainConfig,
    message: str,
    state: str = "running",
    metrics: dict[str, float] | None = None,
    epoch: int = 0,
) -> None:
    event = ProgressEvent(
        kind, epoch, config.epochs, 0, 0, metrics or {}, 0.0, None, state, message
    )
    for listener in listeners:
        listener(event)


def _install_sigterm(stop_flag: dict[str, bool]) -> None:
    # NOTE: the training page cancels with SIGTERM; we stop at the next batch end so the last
    # checkpoint stays intact instead of dying half-way through a save.
    def handler(signum: int, frame: Any) -> None:
        stop_flag["stop"] = True

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not in the main thread (e.g. called from tests in a thread)
        pass


# ---------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None = None) -> tuple[TrainConfig, Path, bool, set[str]]:
    """CLI -> (config, run_dir, resume, config fields given explicitly on the command line)."""
    defaults = TrainConfig(data="")
    p = command_parser("emotion_core.train", __doc__)
    p.add_argument("--data", required=True, help="FER-2013 CSV (.csv/.csv.gz) or class-folder root")
    p.add_argument("--arch", default=defaults.arch)
    p.add_argument("--epochs", type=positive_int, default=defaults.epochs)
    p.add_argument("--batch-size", type=positive_int, default=defaults.batch_size)
    p.add_argument("--lr", type=non_negative_float, default=defaults.learning_rate)
    p.add_argument("--optimizer", choices=["sgd", "adamw"], default=defaults.optimizer)
    p.add_argument("--weight-decay", type=non_negative_float, default=defaults.weight_decay)
    p.add_argument("--schedule", choices=["cosine", "constant"], default=defaults.schedule)
    p.add_argument("--warmup-epochs", type=non_negative_int, default=defaults.warmup_epochs)
    p.add_argument("--label-smoothing", type=below_one_float, default=defaults.label_smoothing)
    p.add_argument("--class-weighting", action="store_true")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--patience", type=non_negative_int, default=defaults.patience)
    p.add_argument(
        "--time-budget",
        type=non_negative_float,
        default=0.0,
        help="seconds; anneal and stop by time",
    )
    p.add_argument("--train-split", default=defaults.train_split)
    p.add_argument("--val-split", default=defaults.val_split)
    p.add_argument("--init-model", default="", help="fine-tune from this .keras file")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument(
        "--max-train-samples", type=non_negative_int, default=0, help="0: all training faces"
    )
    p.add_argument(
        "--teacher",
        default="",
        help="distil: teacher .keras, its .npz (emotion_core.distill) or FER+ votes "
        "fer2013new.csv (emotion_core.ferplus)",
    )
    p.add_argument("--distill-alpha", type=unit_float, default=defaults.distill_alpha)
    p.add_argument(
        "--distill-temperature", type=positive_float, default=defaults.distill_temperature
    )
    p.add_argument(
        "--live-teacher",
        action="store_true",
        help="run the --teacher .keras files (comma-separated) in each training step on the "
        "student's augmented view, instead of fixed probabilities of the clean faces",
    )
    p.add_argument("--out", default="", help="run folder (default models/runs/<time>-<arch>)")
    p.add_argument(
        "--resume", action="store_true", help="continue from the run folder's last.keras"
    )
    a = p.parse_args(argv)
    config = TrainConfig(
        data=a.data,
        arch=a.arch,
        epochs=a.epochs,
        batch_size=a.batch_size,
        learning_rate=a.lr,
        optimizer=a.optimizer,
        weight_decay=a.weight_decay,
        schedule=a.schedule,
        warmup_epochs=a.warmup_epochs,
        label_smoothing=a.label_smoothing,
        class_weighting=a.class_weighting,
        augment=not a.no_augment,
        patience=a.patience,
        time_budget_s=a.time_budget,
        train_split=a.train_split,
        val_split=a.val_split,
        init_model=a.init_model,
        seed=a.seed,
        max_train_samples=a.max_train_samples,
        teacher=a.teacher,
        distill_alpha=a.distill_alpha,
        distill_temperature=a.distill_temperature,
        live_teacher=a.live_teacher,
    )
    try:
        check_config(config)
    except ValueError as exc:
        p.error(str(exc))
    from emotion_core.registry import MODELS_DIR

    run_dir = (
        Path(a.out) if a.out else MODELS_DIR / "runs" / time.strftime(f"%Y%m%d-%H%M%S-{a.arch}")
    )
    given = [arg.split("=")[0] for arg in (sys.argv[1:] if argv is None else argv)]
    explicit = {field for flag, field in _FLAG_FIELDS.items() if flag in given}
    return config, run_dir, a.resume, explicit


_FLAG_FIELDS = {
    "--epochs": "epochs",
    "--time-budget": "time_budget_s",
    "--batch-size": "batch_size",
    "--lr": "learning_rate",
    "--patience": "patience",
    "--label-smoothing": "label_smoothing",
    "--weight-decay": "weight_decay",
}


def _command_line() -> str:
    """How this process was started, as a command to paste (the CLI form when run as a module)."""
    if Path(sys.argv[0]).name == "train.py":
        return shlex.join(["python", "-m", "emotion_core.train", *sys.argv[1:]])
    return shlex.join(sys.argv)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: exit 0 on success, 2 with a clear message on bad input. What would
    refuse the run (flags, missing files, a run folder it would destroy or cannot write) is
    refused before the run folder is touched."""
    quiet_native_logs()
    config, run_dir, resume, explicit = parse_args(argv)
    try:
        plan = _preflight(config, run_dir, resume, explicit)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from emotion_core.fileio import read_json_object

    before = read_json_object(run_dir / "status.json")
    epochs: list[int] = []  # epochs this process ended

    def count_epochs(event: ProgressEvent) -> None:
        if event.kind == "epoch":
            epochs.append(event.epoch)

    try:
        summary = train_plan(plan, [ConsoleProgress(), count_epochs])  # checked once, above
    except (DataError, ValueError, OSError, ModelError) as exc:
        plain = isinstance(exc, DataError | RunFolderError)
        message = str(exc) if plain else f"{type(exc).__name__}: {exc}"
        _record_failure(run_dir, message, before if not epochs else {})
        print(f"error: {message}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug: the run says so, and the traceback follows
        _record_failure(run_dir, f"{type(exc).__name__}: {exc}", before if not epochs else {})
        raise
    print(json.dumps(summary), flush=True)
    return 0


def _preflight(config: TrainConfig, run_dir: Path, resume: bool, overrides: set[str]) -> StartPlan:
    """The checked plan (checked_start); raise (ValueError or OSError, with a one-line
    message) for whatever train would refuse, reading the run folder only; then make sure it
    can be written (created if missing)."""
    from emotion_core.zoo import ARCHITECTURES

    plan = checked_start(config, run_dir, resume, overrides)
    if not plan.resuming and plan.config.arch not in ARCHITECTURES and not plan.config.init_model:
        raise ValueError(
            f"unknown architecture {plan.config.arch!r}; choose from {', '.join(ARCHITECTURES)}"
        )
    prepare_output_folder(run_dir)
    return plan


def _record_failure(run_dir: Path, message: str, finished_before: dict[str, Any]) -> None:
    """Mark the run failed in status.json, unless it had finished before and this process
    trained no epoch (e.g. a --resume whose data moved): then its final status is put back.
    A status that cannot be written is left as it is (the message is printed anyway)."""
    status: dict[str, Any] = {
        "kind": "end",
        "state": "failed",
        "message": message,
        "pid": os.getpid(),
        "updated_at": time.time(),
    }
    if finished_before.get("state") == "finished":
        status = finished_before
    try:
        atomic_write_json(run_dir / "status.json", status)
    except OSError:
        pass


if __name__ == "__main__":
    raise SystemExit(main())
