"""Training jobs for the UI: check a dataset, launch ``python -m emotion_core.train`` as a
separate process, watch it through its run folder, cancel/resume it, and activate its model.

Everything lives on disk (docs/CONTRACTS.md, "Training run folder"), so another browser tab or a
restarted server reattaches by reading the folder. Besides train.py's files the runner writes
``launch.json`` (pid, command, config), ``stdout.log`` (the process's stdout and stderr) and
``exit.json`` (exit code, when this process reaped the child); ``<runs>/job.lock`` names the
job this runner started last while it lives. Never imports streamlit.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd

from emotion_core import registry
from emotion_core.classes import CLASSES
from emotion_core.data import DataError, load_dataset
from emotion_core.evaluate import EvalReport
from emotion_core.fileio import (
    FileId,
    atomic_write_json,
    read_json_object,
)
from emotion_core.procs import process_alive, process_start
from emotion_core.registry import ModelCard, ModelError, validate_name
from emotion_core.train import TrainConfig, check_config, check_inputs
from emotion_core.worker import WorkerJob

STATES: tuple[str, ...] = ("running", "finished", "failed", "cancelled", "interrupted")
FINAL_STATES = frozenset({"finished", "failed", "cancelled"})
RESUMABLE_STATES = frozenset({"cancelled", "interrupted", "failed"})
MIN_PER_CLASS = 10
LOCK_FILE = "job.lock"
METRIC_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr")
_RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_TRAIN_MODULE = "emotion_core.train"

# Popen objects of the jobs this process launched, by pid: polling them reaps
# finished children (no zombies) and gives their exit code.
_PROCS: dict[int, tuple[Path, subprocess.Popen[bytes]]] = {}  # pid -> (run folder, process)
_PROCS_LOCK = threading.Lock()


class JobError(Exception):
    """A job cannot be started, resumed, cancelled or activated (the message says why)."""


def current_models_dir() -> Path:
    """The models folder now (registry.models_dir: $EMOTION_MODELS_DIR read at call time)."""
    return registry.models_dir()


def resolve_data_path(text: str | Path, root: Path | None = None) -> Path:
    """A dataset path as typed: `~` expanded, a relative one taken from root (default: the
    project root, where the trainer runs), whatever the server's working folder."""
    path = Path(str(text).strip()).expanduser()
    return path if path.is_absolute() else (root or registry.PROJECT_ROOT) / path


# ---------------------------------------------------------------- dataset check


@dataclass(frozen=True)
class DatasetSummary:
    """What a dataset holds, per split and class, and what is wrong with it.

    errors block training (missing path, no images, a split that cannot be loaded); warnings
    do not (few images in a class, unknown class folders skipped, undecodable images).
    """

    path: str
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> class -> n
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    unknown_classes: dict[str, int] = field(default_factory=dict)  # folder name -> images
    undecodable: int = 0

    @property
    def ok(self) -> bool:
        """True when training can start on this dataset."""
        return not self.errors

    @property
    def problems(self) -> tuple[str, ...]:
        """Errors then warnings."""
        return self.errors + self.warnings

    def total(self, split: str) -> int:
        """Number of usable images in a split (0 when it could not be loaded)."""
        return sum(self.counts.get(split, {}).values())

    def table(self) -> pd.DataFrame:
        """Images per class (rows, CLASSES order) and split (columns), with a total row."""
        frame = pd.DataFrame(
            {split: [c.get(name, 0) for name in CLASSES] for split, c in self.counts.items()},
            index=pd.Index(list(CLASSES), name="class"),
        )
        if not frame.empty:
            frame.loc["total"] = frame.sum()
        return frame


def validate_dataset(
    path: Path | str,
    train_split: str = "Training",
    val_split: str = "PublicTest",
    min_per_class: int = MIN_PER_CLASS,
) -> DatasetSummary:
    """Load both splits with emotion_core.data and report counts and problems (never raises).
    A relative path is taken from the project root (resolve_data_path)."""
    text = str(path).strip()
    if not text:
        return DatasetSummary(text, errors=("No dataset path given.",))
    root = resolve_data_path(text)
    if not root.exists():
        return DatasetSummary(text, errors=(f"{root}: no such file or folder.",))
    counts: dict[str, dict[str, int]] = {}
    errors: list[str] = []
    warnings: list[str] = []
    unknown: dict[str, int] = {}
    undecodable = 0
    loaded: dict[str, Any] = {}
    for role, split in (("training", train_split), ("validation", val_split)):
        try:
            dataset = load_dataset(root, split)
        except DataError as exc:
            errors.append(f"No usable {role} images: {exc}")
            continue
        except (OSError, ValueError) as exc:
            errors.append(f"Cannot read the {role} split of {root}: {type(exc).__name__}: {exc}")
            continue
        loaded[role] = dataset
        counts[dataset.split] = dataset.class_counts()
        skipped_classes: dict[str, int] = {}
        for key, n in dataset.skipped.items():
            if key.startswith("class:"):
                name = key.removeprefix("class:")
                skipped_classes[name] = n
                unknown[name] = unknown.get(name, 0) + n
            elif key == "undecodable":
                undecodable += n
                warnings.append(
                    f"{n} {role} image(s) could not be decoded (corrupt or not an image) "
                    "and will be skipped."
                )
        if skipped_classes:
            listed = ", ".join(f"{k!r} ({n} images)" for k, n in sorted(skipped_classes.items()))
            warnings.append(
                f"Unknown class folders skipped in the {role} split: {listed}. "
                f"Known classes: {', '.join(CLASSES)}."
            )
        low = {c: n for c, n in dataset.class_counts().items() if n < min_per_class}
        if low:
            listed = ", ".join(f"{c} ({n})" for c, n in low.items())
            warnings.append(
                f"Few {role} images (< {min_per_class}) in: {listed}. "
                "The model will hardly learn (or be measured on) these classes."
            )
    train, val = loaded.get("training"), loaded.get("validation")
    if train is not None and val is not None and _same_images(train.images, val.images):
        warnings.append(
            "The validation split is the same images as the training split (no separate "
            "val/ folder?): validation scores will be over-optimistic."
        )
    return DatasetSummary(
        text, counts, tuple(errors), tuple(warnings), dict(sorted(unknown.items())), undecodable
    )


def _same_images(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.array_equal(a, b))


# ---------------------------------------------------------------- device


@dataclass(frozen=True)
class DeviceInfo:
    """The Keras backend and the GPUs it can see (the training process sees the same)."""

    backend: str
    gpus: tuple[str, ...]
    error: str = ""

    @property
    def summary(self) -> str:
        """One line for the UI."""
        if self.error:
            return f"Could not query the Keras backend: {self.error}"
        if self.gpus:
            return (
                f"GPU visible to Keras ({self.backend}): {', '.join(self.gpus)}; training uses it."
            )
        return f"No GPU visible to Keras ({self.backend}): training runs on the CPU."


@functools.lru_cache(maxsize=1)
def detect_device() -> DeviceInfo:
    """Ask the Keras backend (imported lazily, once per process) which GPUs it sees."""
    try:
        import keras

        backend = keras.backend.backend()
        if backend == "tensorflow":
            import tensorflow as tf

            gpus = tuple(d.name for d in tf.config.list_physical_devices("GPU"))
        elif backend == "jax":
            import jax

            gpus = tuple(d.device_kind for d in jax.devices() if d.platform == "gpu")
        elif backend == "torch":
            import torch

            n = torch.cuda.device_count() if torch.cuda.is_available() else 0
            gpus = tuple(torch.cuda.get_device_name(i) for i in range(n))
        else:
            gpus = ()
        return DeviceInfo(backend, gpus)
    except Exception as exc:  # noqa: BLE001  a broken backend must not break the page
        return DeviceInfo("unknown", (), f"{type(exc).__name__}: {exc}")


def describe_hardware() -> str:
    """This machine for a model card: CPU cores, the GPUs Keras sees, the backend."""
    device = detect_device()
    place = f"GPU {', '.join(device.gpus)}" if device.gpus else "CPU only"
    return f"{os.cpu_count()}-core {platform.machine()}, {place} (Keras {device.backend} backend)"


# ---------------------------------------------------------------- run state


@dataclass(frozen=True)
class RunHandle:
    """A launched training process."""

    run_id: str
    run_dir: Path
    pid: int
    command: tuple[str, ...]


@dataclass(frozen=True)
class RunInfo:
    """A run folder's state as seen now (a 'running' status whose process is gone reads as
    'interrupted', or 'failed' when its exit code was non-zero)."""

    run_id: str
    path: Path
    state: str
    epoch: int = 0
    epochs: int = 0
    progress: float = 0.0  # 0..1
    metrics: dict[str, float] = field(default_factory=dict)
    eta_s: float | None = None
    started: float | None = None  # unix time
    updated_at: float | None = None
    message: str = ""
    pid: int | None = None
    arch: str = ""

    @property
    def running(self) -> bool:
        """True while the training process lives."""
        return self.state == "running"

    @property
    def resumable(self) -> bool:
        """Cancelled, interrupted or failed runs can be continued from last.keras."""
        return self.state in RESUMABLE_STATES

    @property
    def has_model(self) -> bool:
        """True when best.keras exists (something to evaluate or activate)."""
        return (self.path / "best.keras").exists()


@dataclass(frozen=True)
class RunProgress:
    """Everything a page shows about one run."""

    info: RunInfo
    status: dict[str, Any]
    metrics: pd.DataFrame  # one row per epoch (METRIC_COLUMNS, elapsed_s)
    log_tail: str
    evaluation: EvalReport | None  # eval.json (old or partial files too; None: none yet)
    hparams: dict[str, Any] | None


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _float(value: Any, default: float = 0.0) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _pid_alive(pid: int | None, run_dir: Path | None = None) -> bool:
    """True when pid is a live (not zombie) training process, training into run_dir when given
    (a reused pid now training another run, or running anything else, is not this run's)."""
    if not pid or pid <= 0:
        return False
    _reap()
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path("/proc") / str(pid)
    try:
        stat = (proc / "stat").read_text()
        if stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
            return False
        argv = [a.decode(errors="replace") for a in (proc / "cmdline").read_bytes().split(b"\0")]
    except OSError:
        return True  # no /proc (macOS): os.kill said it exists
    if _TRAIN_MODULE not in " ".join(argv):
        return False  # the pid was reused by something else
    return run_dir is None or _trains_into(pid, argv, run_dir)


def _trains_into(pid: int, argv: list[str], run_dir: Path) -> bool:
    """True when the training command line argv (of process pid) has `--out run_dir`; a
    relative --out is taken from that process's working folder."""
    outs = [b for a, b in zip(argv, argv[1:], strict=False) if a == "--out"]
    outs += [a.removeprefix("--out=") for a in argv if a.startswith("--out=")]
    if not outs:
        return False
    out = Path(outs[-1])
    if not out.is_absolute():
        try:
            out = Path(os.readlink(f"/proc/{pid}/cwd")) / out
        except OSError:
            return False
    return _same_dir(out, run_dir)


def _same_dir(a: Path, b: Path) -> bool:
    """True when a and b are the same folder (links and relative paths resolved)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def _reap(wait_pid: int | None = None, run_dir: Path | None = None) -> None:
    """Poll the children this process launched; record exit codes in exit.json.

    wait_pid: a child of run_dir that looks dead (a killed multi-threaded process shows as a
    zombie before all its threads are gone, and only then can it be reaped): wait up to 10 s
    for it. A child training another run (the pid was reused) is not waited for.
    """
    entry = _PROCS.get(wait_pid) if wait_pid else None
    if entry is not None and (run_dir is None or _same_dir(entry[0], run_dir)):
        with contextlib.suppress(subprocess.TimeoutExpired):
            entry[1].wait(timeout=10)
    with _PROCS_LOCK:
        ended = [(pid, entry) for pid, entry in _PROCS.items() if entry[1].poll() is not None]
        for pid, _ in ended:
            del _PROCS[pid]
    for pid, (run_dir, proc) in ended:
        with contextlib.suppress(OSError):
            launched = _int(read_json_object(run_dir / "launch.json").get("pid"))
            if launched == pid:  # not a stale launch
                atomic_write_json(
                    run_dir / "exit.json", {"pid": pid, "returncode": proc.returncode,
                                            "at": time.time()}
                )  # fmt: skip
            lock = run_dir.parent / LOCK_FILE
            if read_json_object(lock).get("pid") == pid:
                lock.unlink(missing_ok=True)


def _check_start(config: TrainConfig, resuming: bool) -> None:
    """The trainer's own start checks (train.check_config, then train.check_inputs) as a
    JobError with their message: a run they refuse would only fail once launched."""
    try:
        check_config(config)
        check_inputs(config, resuming)
    except ValueError as exc:  # distill.TeacherError is one too
        raise JobError(str(exc)) from exc


def _with_paths(
    config: TrainConfig, data: Callable[[str], str], model: Callable[[str], str]
) -> TrainConfig:
    """config with its dataset path mapped by `data` and its model files (the init model and
    each comma-separated teacher) by `model`; blank paths stay as they are."""

    def mapped(fn: Callable[[str], str], path: str) -> str:
        return fn(path) if path.strip() else path

    teacher = ",".join(mapped(model, p.strip()) for p in config.teacher.split(",") if p.strip())
    return replace(
        config,
        data=mapped(data, config.data),
        init_model=mapped(model, config.init_model),
        teacher=teacher,
    )


def _anchored_at_project_root(config: TrainConfig) -> TrainConfig:
    """config with its relative data, init-model and teacher paths taken from the project
    root, where the trainer runs (absolute ones kept)."""

    def anchored(path: str) -> str:
        return str(resolve_data_path(path))

    return _with_paths(config, anchored, anchored)


def _stop_child(proc: subprocess.Popen[bytes]) -> None:
    """Kill a just-launched training process group (it has nothing to save yet) and reap it
    here, so that _reap records no exit code for it (its run did not start)."""
    with _PROCS_LOCK:
        _PROCS.pop(proc.pid, None)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def _cannot_write(path: Path, exc: OSError) -> str:
    """'cannot write <path>: No space left on device' (the OS error without the file name)."""
    return f"cannot write {path}: {exc.strerror or exc}"


def _write_json(path: Path, data: Any) -> None:
    """atomic_write_json, with an OSError turned into a JobError naming the file."""
    try:
        atomic_write_json(path, data)
    except OSError as exc:
        raise JobError(_cannot_write(path, exc)) from exc


def launched_processes() -> list[subprocess.Popen[bytes]]:
    """The training processes this Python process started that have not been reaped yet."""
    with _PROCS_LOCK:
        return [proc for _, proc in _PROCS.values()]


def describe_exit(code: int) -> str:
    """'exited with code 2' / 'was killed by SIGKILL (often: out of memory)'."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (often: the machine ran out of memory)" if code == -signal.SIGKILL else ""
        return f"was killed by {name}{hint}"
    return f"exited with code {code}"


def tail_text(path: Path, lines: int = 40, max_bytes: int = 65536) -> str:
    """The last lines of a (possibly growing) text file; '' if it does not exist."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(size - max_bytes, 0))
            data = fh.read()
    except OSError:
        return ""
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


def _oom_hint(log: str) -> str:
    markers = ("MemoryError", "OOM", "out of memory", "ResourceExhausted", "Killed")
    return " It looks like the machine ran out of memory." if any(m in log for m in markers) else ""


def read_metrics(path: Path) -> pd.DataFrame:
    """metrics.csv as a DataFrame (empty with METRIC_COLUMNS when missing or unreadable)."""
    try:
        frame = pd.read_csv(path, on_bad_lines="skip")
    except (OSError, ValueError, pd.errors.EmptyDataError):
        return pd.DataFrame(columns=list(METRIC_COLUMNS))
    if "epoch" not in frame.columns:
        return pd.DataFrame(columns=list(METRIC_COLUMNS))
    frame = frame.apply(pd.to_numeric, errors="coerce").dropna(subset=["epoch"])
    frame["epoch"] = frame["epoch"].astype(int)
    return frame.drop_duplicates("epoch", keep="last").sort_values("epoch").reset_index(drop=True)


def config_to_args(config: TrainConfig) -> list[str]:
    """TrainConfig -> `python -m emotion_core.train` arguments (the inverse of parse_args)."""
    args = [
        "--data", config.data, "--arch", config.arch, "--epochs", str(config.epochs),
        "--batch-size", str(config.batch_size), "--lr", repr(config.learning_rate),
        "--optimizer", config.optimizer, "--weight-decay", repr(config.weight_decay),
        "--schedule", config.schedule, "--warmup-epochs", str(config.warmup_epochs),
        "--label-smoothing", repr(config.label_smoothing), "--patience", str(config.patience),
        "--time-budget", repr(config.time_budget_s), "--train-split", config.train_split,
        "--val-split", config.val_split, "--seed", str(config.seed),
        "--max-train-samples", str(config.max_train_samples),
    ]  # fmt: skip
    if config.class_weighting:
        args.append("--class-weighting")
    if not config.augment:
        args.append("--no-augment")
    if config.init_model:
        args += ["--init-model", config.init_model]
    if config.teacher:
        args += ["--teacher", config.teacher, "--distill-alpha", repr(config.distill_alpha),
                 "--distill-temperature", repr(config.distill_temperature)]  # fmt: skip
    if config.live_teacher:
        args.append("--live-teacher")
    return args


FERPLUS_TEACHER = "FER+ annotator votes (fer2013new.csv beside the data)"


def teacher_candidates(models_dir: Path, data: Path | None = None) -> dict[str, Path]:
    """What a run can distil from, label -> path: registered models, then training runs' best
    checkpoints (e.g. a bigger network trained on a GPU), newest first (.keras files, which
    can also teach live); then, for a FER-2013 CSV `data` with FER+ votes beside it, those
    votes (FERPLUS_TEACHER, a .csv: fixed targets only)."""
    from emotion_core import registry
    from emotion_core.ferplus import ferplus_beside

    choices = {
        f"{card.name} (registered, {card.arch})": registry.model_path(card.name, models_dir)
        for card in registry.list_models(models_dir)
    }
    runs = sorted((models_dir / "runs").glob("*/best.keras"), key=_mtime, reverse=True)
    for best in runs:
        arch = read_json_object(best.parent / "hparams.json").get("arch", "?")
        choices[f"run {best.parent.name} (best.keras, {arch})"] = best
    votes = ferplus_beside(data) if data is not None else None
    if votes is not None:
        choices[FERPLUS_TEACHER] = votes
    return choices


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def suggest_model_name(run_id: str, models_dir: Path) -> str:
    """A name to activate run_id as that registry.check_name_free accepts: the run id as a
    model name, with -2, -3, ... while that is taken or reserved (e.g. 'registry'); the plain
    form when none is free among the first 1000 (activating then says why)."""
    base = re.sub(r"\.{2,}", ".", re.sub(r"[^A-Za-z0-9_.-]", "-", run_id))[:70] or "model"
    for n in range(1, 1001):
        name = base if n == 1 else f"{base}-{n}"
        try:
            registry.check_name_free(name, models_dir)
        except ModelError:
            continue
        return name
    return base


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """TrainConfig from hparams.json/launch.json data (unknown keys ignored)."""
    names = {f.name for f in fields(TrainConfig)}
    if "data" not in data:
        raise JobError("the saved hyperparameters lack 'data'")
    return TrainConfig(**{k: v for k, v in data.items() if k in names})


# ---------------------------------------------------------------- the runner


class TrainingJobRunner:
    """Starts and watches training processes whose run folders live in runs_dir.

    runs_dir defaults to <models dir>/runs, the models dir being $EMOTION_MODELS_DIR (read now)
    or registry.MODELS_DIR; models_dir (where activate registers) defaults to runs_dir's parent.
    """

    def __init__(
        self,
        runs_dir: Path | None = None,
        python: str = sys.executable,
        models_dir: Path | None = None,
    ) -> None:
        if runs_dir is None:
            models_dir = models_dir or current_models_dir()
            runs_dir = models_dir / "runs"
        self.runs_dir = Path(runs_dir)
        self.models_dir = Path(models_dir) if models_dir else self.runs_dir.parent
        self.python = python

    # ------------------------------------------------------------ dataset

    def validate_dataset(self, path: Path | str, **kwargs: Any) -> DatasetSummary:
        """See the module-level validate_dataset."""
        return validate_dataset(path, **kwargs)

    # ------------------------------------------------------------ launching

    def new_run_id(self, arch: str) -> str:
        """A fresh, unused run id like 20250101-120000-tiny."""
        base = time.strftime("%Y%m%d-%H%M%S") + f"-{re.sub(r'[^A-Za-z0-9_.-]', '-', arch)}"
        run_id, n = base, 1
        while (self.runs_dir / run_id).exists():
            n += 1
            run_id = f"{base}-{n}"
        return run_id

    def run_dir(self, run_id: str) -> Path:
        """The folder of a run (the id is checked to be a plain name)."""
        if not _RUN_ID_RE.match(run_id) or ".." in run_id:
            raise JobError(f"invalid run id {run_id!r}: use letters, digits, '_', '.', '-'")
        return self.runs_dir / run_id

    def start(
        self, config: TrainConfig, run_id: str | None = None, force: bool = False
    ) -> RunHandle:
        """Launch a training process into a new run folder.

        Raises JobError, before any folder is made, for what the trainer would refuse at its
        start (train.check_config, train.check_inputs: settings, the model to fine-tune, the
        teacher); then when another job is running (unless force) or the run id is taken.
        """
        config = self._absolute_paths(config)
        _check_start(config, resuming=False)
        # NOTE: the id is chosen and the folder checked under the lock, where _launch creates
        # it: two tabs starting the same architecture in the same second get two folders.
        with self._start_lock():
            run_dir = self.run_dir(run_id or self.new_run_id(config.arch))
            if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
                raise JobError(
                    f"run {run_dir.name!r} already exists in {self.runs_dir}; pick another id"
                )
            self._refuse_if_busy(force)
            return self._launch(run_dir, config, resume=False)

    def resume(self, run_id: str, force: bool = False, epochs: int | None = None) -> RunHandle:
        """Relaunch a cancelled/interrupted/failed run with --resume in the same folder
        (optionally with a new total number of epochs)."""
        # NOTE: checked under the lock: a second Resume of the same run (another tab) sees the
        # process the first launched and is refused; so does an activation of the run (which
        # registers itself under the same lock) and a Resume after one started.
        with self._start_lock():
            info = self.info(run_id)
            if info.state not in RESUMABLE_STATES:
                raise JobError(
                    f"run {run_id!r} is {info.state}; only cancelled, interrupted or "
                    "failed runs can be resumed"
                )
            activating = self.activating(run_id)
            if activating:
                raise JobError(
                    f"run {run_id!r} is being activated as model {activating!r}; resume it "
                    "once the activation has ended (training would change its checkpoint)"
                )
            config = self._saved_config(info, epochs)
            # NOTE: the trainer resumes from the project root, where relative saved paths (a run
            # started from the command line keeps them as typed) are read: check them there.
            _check_start(_anchored_at_project_root(config), resuming=True)
            self._refuse_if_busy(force)
            return self._launch(info.path, config, resume=True)

    @staticmethod
    def _saved_config(info: RunInfo, epochs: int | None) -> TrainConfig:
        """The configuration a run was launched with (optionally with a new total of epochs)."""
        saved = read_json_object(info.path / "launch.json").get("config") or read_json_object(
            info.path / "hparams.json"
        )
        if not saved:
            raise JobError(f"run {info.run_id!r} has no launch.json or hparams.json to resume from")
        config = config_from_dict(saved)
        return replace(config, epochs=epochs) if epochs is not None else config

    @staticmethod
    def _absolute_paths(config: TrainConfig) -> TrainConfig:
        """config with absolute paths for the trainer, which runs from the project root: the
        dataset's as the page reads it (resolve_data_path: from the project root); model files
        (from the models folder, which a relative $EMOTION_MODELS_DIR puts in the working
        folder, as the registry reads it) from the working folder."""

        def data(path: str) -> str:
            return str(resolve_data_path(path).resolve())

        def model(path: str) -> str:
            return str(Path(path).expanduser().resolve())

        return _with_paths(config, data, model)

    @contextlib.contextmanager
    def _start_lock(self) -> Iterator[None]:
        """Serialise check-then-launch between threads/processes (two tabs clicking Start)."""
        lock_path = self.runs_dir / ".start.lock"
        try:
            self.runs_dir.mkdir(parents=True, exist_ok=True)
            lock_file = lock_path.open("w")
        except OSError as exc:
            raise JobError(_cannot_write(lock_path, exc)) from exc
        with lock_file as fh:
            try:
                import fcntl

                fcntl.flock(fh, fcntl.LOCK_EX)
            except ImportError:  # Windows: best effort
                pass
            yield

    def _refuse_if_busy(self, force: bool) -> None:
        busy = self.running_job()
        if busy is not None and not force:
            raise JobError(
                f"training run {busy.run_id!r} is still running (pid {busy.pid}); cancel it "
                "first, or confirm to run two jobs at once (each will be slower)"
            )

    def _launch(self, run_dir: Path, config: TrainConfig, resume: bool) -> RunHandle:
        """Start the process and record it; JobError when a file cannot be written (a process
        already started is then stopped, so none runs untracked)."""
        command = [self.python, "-m", _TRAIN_MODULE, *config_to_args(config),
                   "--out", str(run_dir.resolve())]  # fmt: skip
        if resume:
            command.append("--resume")
        env = os.environ.copy()
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(registry.PROJECT_ROOT), env.get("PYTHONPATH", "")) if p
        )
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        header = f"=== {stamp} {'resume' if resume else 'start'}: {' '.join(command)}\n"
        with self._open_log(run_dir, header) as log:
            try:
                proc = subprocess.Popen(
                    command, cwd=registry.PROJECT_ROOT, stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True, env=env,
                )  # fmt: skip
            except OSError as exc:
                raise JobError(f"cannot start {self.python}: {exc}") from exc
        with _PROCS_LOCK:
            _PROCS[proc.pid] = (run_dir, proc)
        try:
            self._record_launch(run_dir, proc.pid, command, config, resume)
        except JobError as exc:
            _stop_child(proc)
            raise JobError(f"{exc}; the training process was stopped") from exc
        return RunHandle(run_dir.name, run_dir, proc.pid, tuple(command))

    @staticmethod
    def _open_log(run_dir: Path, header: str) -> BinaryIO:
        """Prepare the run folder and open its stdout.log for appending, header written."""
        log_path = run_dir / "stdout.log"
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            for stale in ("CANCEL", "exit.json"):
                (run_dir / stale).unlink(missing_ok=True)
            log = log_path.open("ab")
        except OSError as exc:
            raise JobError(_cannot_write(log_path, exc)) from exc
        try:
            log.write(header.encode())
            log.flush()
        except OSError as exc:
            log.close()
            raise JobError(_cannot_write(log_path, exc)) from exc
        return log

    def _record_launch(
        self, run_dir: Path, pid: int, command: list[str], config: TrainConfig, resume: bool
    ) -> None:
        """Write launch.json and the runner's job.lock for a started process."""
        launch = read_json_object(run_dir / "launch.json")
        _write_json(run_dir / "launch.json", {
            "run_id": run_dir.name, "pid": pid, "command": command,
            "config": asdict(config), "resume": resume,
            "started_at": launch.get("started_at", time.time()), "launched_at": time.time(),
            "launches": _int(launch.get("launches")) + 1,
        })  # fmt: skip
        _write_json(self.runs_dir / LOCK_FILE, {"run_id": run_dir.name, "pid": pid})

    # ------------------------------------------------------------ watching

    def list_runs(self) -> list[RunInfo]:
        """All runs, newest first."""
        if not self.runs_dir.is_dir():
            return []
        infos = [
            self._info(path)
            for path in self.runs_dir.iterdir()
            if path.is_dir()
            and not path.name.startswith(".")
            and _RUN_ID_RE.match(path.name)
            and any((path / f).exists() for f in ("status.json", "launch.json", "hparams.json"))
        ]
        return sorted(infos, key=lambda i: (i.started or 0.0, i.run_id), reverse=True)

    def info(self, run_id: str) -> RunInfo:
        """One run's state; JobError when there is no such run."""
        path = self.run_dir(run_id)
        if not path.is_dir():
            raise JobError(f"no training run {run_id!r} in {self.runs_dir}")
        return self._info(path)

    def running_job(self) -> RunInfo | None:
        """The running job (the lock file's, else any run folder with a live process)."""
        lock_path = self.runs_dir / LOCK_FILE
        lock = read_json_object(lock_path)
        if lock:
            locked = self.runs_dir / str(lock.get("run_id"))
            if locked.is_dir() and _pid_alive(_int(lock.get("pid")), locked):
                info = self._info(locked)
                if info.running:
                    return info
            lock_path.unlink(missing_ok=True)
        return next((i for i in self.list_runs() if i.running), None)

    def read_progress(self, run_id: str) -> RunProgress:
        """Status, per-epoch metrics, log tail, evaluation and hyperparameters of a run."""
        info = self.info(run_id)
        evaluation_data = read_json_object(info.path / "eval.json")
        evaluation = EvalReport.from_dict(evaluation_data) if evaluation_data else None
        return RunProgress(
            info=info,
            status=read_json_object(info.path / "status.json"),
            metrics=read_metrics(info.path / "metrics.csv"),
            log_tail=tail_text(info.path / "stdout.log"),
            evaluation=evaluation if info.state != "running" else None,
            hparams=read_json_object(info.path / "hparams.json") or None,
        )

    def wait(self, run_id: str, timeout_s: float = 300.0, poll_s: float = 0.5) -> RunInfo:
        """Block until the run is no longer running (JobError on timeout)."""
        deadline = time.monotonic() + timeout_s
        while True:
            info = self.info(run_id)
            if not info.running:
                return info
            if time.monotonic() > deadline:
                raise JobError(f"run {run_id!r} still running after {timeout_s:.0f} s")
            time.sleep(poll_s)

    def _info(self, path: Path) -> RunInfo:
        _reap()
        status = read_json_object(path / "status.json")
        launch = read_json_object(path / "launch.json")
        hparams = read_json_object(path / "hparams.json")
        config = launch.get("config") or hparams
        pid = _int(launch.get("pid")) or _int(status.get("pid")) or None
        if launch and self._resumed_by_hand(path, status, launch):
            pid = _int(status.get("pid"))  # that process is the run's now (for Cancel too)
        status_current = not launch or _int(status.get("pid")) == pid
        raw_state = str(status.get("state", "")) if status_current else ""
        message = str(status.get("message", "")) if status_current else ""
        if raw_state in FINAL_STATES:
            state = raw_state
        elif _pid_alive(pid, path):
            state, message = "running", message if raw_state else "starting (loading data)"
        else:
            state, message = self._dead_state(path, pid)
        epochs = (_int(status.get("epochs")) if status_current else 0) or _int(config.get("epochs"))
        done = _int(read_json_object(path / "resume.json").get("epoch"))
        progress = self._progress(status if status_current else {}, state, done, epochs, config)
        epoch = max(_int(status.get("epoch")) if status_current else 0, done)
        eta = status.get("eta_s") if state == "running" and status_current else None
        started = launch.get("started_at")
        if started is None:
            with contextlib.suppress(OSError, ValueError):
                started = min(p.stat().st_mtime for p in path.iterdir())
        return RunInfo(
            run_id=path.name, path=path, state=state, epoch=epoch, epochs=epochs,
            progress=progress,
            metrics={k: float(v) for k, v in (status.get("metrics") or {}).items()
                     if isinstance(v, int | float)},
            eta_s=float(eta) if isinstance(eta, int | float) else None,
            started=float(started) if isinstance(started, int | float) else None,
            updated_at=status.get("updated_at"), message=message, pid=pid,
            arch=str(config.get("arch", "")),
        )  # fmt: skip

    @staticmethod
    def _resumed_by_hand(path: Path, status: dict[str, Any], launch: dict[str, Any]) -> bool:
        """True when status.json comes from another process than launch.json's that took the
        run over after that launch (`python -m emotion_core.train --out RUN --resume`): it
        trains into this folder now, or wrote its status after that launch."""
        status_pid = _int(status.get("pid"))
        if not status_pid or status_pid == _int(launch.get("pid")):
            return False
        if _pid_alive(status_pid, path):
            return True
        launched, updated = launch.get("launched_at"), status.get("updated_at")
        if not (isinstance(launched, int | float) and isinstance(updated, int | float)):
            return False
        return float(updated) > float(launched)

    @staticmethod
    def _progress(
        status: dict[str, Any], state: str, done: int, epochs: int, config: dict[str, Any]
    ) -> float:
        if state == "finished":
            return 1.0
        epochs = max(epochs, 1)
        value = done / epochs
        if status.get("kind") == "batch":
            steps = max(_int(status.get("steps")), 1)
            value = (_int(status.get("epoch")) - 1 + _int(status.get("batch")) / steps) / epochs
        budget = float(config.get("time_budget_s") or 0.0)
        if budget > 0 and isinstance(status.get("elapsed_s"), int | float):
            value = max(value, float(status["elapsed_s"]) / budget)
        return float(min(max(value, 0.0), 1.0))

    @staticmethod
    def _dead_state(path: Path, pid: int | None) -> tuple[str, str]:
        """State and message of a run whose process is gone without a final status."""
        # it may have died a moment ago: record its exit code first
        _reap(wait_pid=pid, run_dir=path)
        exit_info = read_json_object(path / "exit.json")
        code = exit_info.get("returncode") if _int(exit_info.get("pid")) == pid else None
        log = tail_text(path / "stdout.log", lines=15)
        # a cancelled trainer ends with a final status; without one, the SIGTERM of the cancel
        # ended it while it started (before its handler was set): any other exit is a crash
        if (path / "CANCEL").exists() and code in (None, 0, -signal.SIGTERM):
            done = _int(read_json_object(path / "resume.json").get("epoch"))
            if not done:
                return "cancelled", "cancelled before training started"
            return "cancelled", (
                f"cancelled while the training process started; the checkpoint of epoch {done} "
                "is kept"
            )
        if isinstance(code, int) and code != 0:
            asked = " It had been asked to cancel." if (path / "CANCEL").exists() else ""
            return "failed", (
                f"The training process {describe_exit(code)}.{asked}{_oom_hint(log)}\n"
                f"Last output:\n{log}"
            )
        return "interrupted", (
            "The training process stopped without finishing (server restart, kill or crash)."
            f"{_oom_hint(log)} Resume continues from the last checkpoint.\nLast output:\n{log}"
        )

    # ------------------------------------------------------------ control

    def cancel(self, run_id: str) -> RunInfo:
        """Ask a running job to stop (CANCEL file + SIGTERM): it stops at the next batch, keeps
        its last checkpoint, evaluates best.keras and ends as 'cancelled'."""
        info = self.info(run_id)
        if not info.running:
            raise JobError(f"run {run_id!r} is not running ({info.state})")
        cancel_file = info.path / "CANCEL"
        try:
            cancel_file.write_text(f"{time.time()}\n")
        except OSError as exc:
            self._terminate(info.pid)
            raise JobError(
                f"{_cannot_write(cancel_file, exc)}; the training process (pid {info.pid}) was "
                "sent SIGTERM instead and should stop after the current batch"
            ) from exc
        self._terminate(info.pid)
        return info

    @staticmethod
    def _terminate(pid: int | None) -> None:
        if pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)

    # ------------------------------------------------------------ activation

    def activate(
        self, run_id: str, name: str, progress: Callable[[str], None] | None = None
    ) -> ModelCard:
        """Register the run's best.keras as model `name` and make it the default.

        Uses emotion_core.publish.publish_run (batch-norm recalibration and folding, the TFLite
        runtime, temperature calibration, CPU timing, the card; `progress` gets each of its
        PUBLISH_STEPS). Never overwrites another model; on any error what this activation
        wrote is undone (registry.undo_registration), while what other processes wrote meanwhile
        stays. Raises ModelError or JobError.
        """
        info, _ = self._check_activation(run_id, name)
        registry_file = self.models_dir / registry.REGISTRY_FILE
        before = _read_bytes(registry_file)
        written: dict[Path, FileId] = {}
        try:
            card: ModelCard = _publish_run()(
                info.path, name, make_default=True, models_dir=self.models_dir,
                progress=progress, written=written,
            )  # fmt: skip
        except BaseException as exc:
            registry.undo_registration(written, before)
            if isinstance(exc, ModelError | JobError) or not isinstance(exc, Exception):
                raise
            raise JobError(
                f"activating run {run_id!r} failed: {type(exc).__name__}: {exc}"
            ) from exc
        return card

    def _check_activation(self, run_id: str, name: str) -> tuple[RunInfo, list[Path]]:
        """The run and the files model `name` would take; raises ModelError or JobError for
        what would make activation fail at once (bad or taken name, no checkpoint, running)."""
        validate_name(name)
        info = self.info(run_id)
        if info.running:
            raise JobError(f"run {run_id!r} is still running; wait for it to end or cancel it")
        if not (info.path / "best.keras").exists():
            raise JobError(f"run {run_id!r} has no best.keras (no epoch finished)")
        targets = registry.model_files(name, self.models_dir)
        if any(t.exists() for t in targets):
            raise ModelError(
                f"a model named {name!r} already exists in {self.models_dir}; choose another name"
            )
        return info, targets

    def start_activation(self, run_id: str, name: str) -> ActivationJob:
        """Start `activate` on a daemon thread and return the job to poll. What would fail at
        once (see activate) raises here, as does a second activation into the same models
        folder while one runs (JobError)."""
        key = self.models_dir.resolve()
        with self._start_lock():  # NOTE: see resume: neither starts while the other runs
            self._check_activation(run_id, name)
            with _ACTIVATIONS_LOCK:
                current = _ACTIVATIONS.get(key)
                if current is not None and not current.view().finished:
                    raise JobError(
                        f"model {current.name!r} is being activated; wait for it to finish"
                    )
                elsewhere = self._activation_elsewhere()
                if elsewhere:
                    raise JobError(
                        f"model {elsewhere.get('name')!r} is being activated by another server "
                        f"process (pid {elsewhere.get('pid')}); wait for it to finish"
                    )
                marker = self.models_dir / ACTIVATION_MARKER
                record = {
                    "run_id": run_id,
                    "name": name,
                    "pid": os.getpid(),
                    "process_start": process_start(os.getpid()),
                    "started": time.time(),
                }
                try:
                    atomic_write_json(marker, record)
                except OSError as exc:
                    raise JobError(f"cannot start the activation: {exc}") from exc
                job = ActivationJob(run_id, name)
                _ACTIVATIONS[key] = job
        # NOTE: the job outlives a closed tab; current_activation() hands it to whichever page
        # asks next. The marker file outlives the process: a server stopped mid-activation is
        # noticed by recover_interrupted_activation() after the restart.
        job.start(job.run, "activation", activate=self.activate, marker=marker)
        return job

    def activating(self, run_id: str) -> str:
        """The model name run_id is being activated as, by this process or another server
        process; "" when it is not being activated."""
        job = self.current_activation()
        if job is not None and job.run_id == run_id and not job.view().finished:
            return job.name
        elsewhere = self._activation_elsewhere()
        return str(elsewhere.get("name", "?")) if elsewhere.get("run_id") == run_id else ""

    def _activation_elsewhere(self) -> dict[str, Any]:
        """The marker of an activation that another live process started here recently, or
        {} (none, ours, or stale: its process is gone, its pid now belongs to a process that
        started at another time, or it is older than a day)."""
        record = read_json_object(self.models_dir / ACTIVATION_MARKER)
        pid = _int(record.get("pid"))
        fresh = time.time() - _float(record.get("started")) < MARKER_STALE_S
        if not record or pid == os.getpid() or not fresh:
            return {}
        return record if process_alive(pid, str(record.get("process_start") or "")) else {}

    def recover_interrupted_activation(self) -> InterruptedActivation | None:
        """After a restart (or any loss of the worker): the activation a marker file says was
        running but no process runs any more. Deletes what it left (the model's files unless
        it was registered) and the marker, so that it is reported once; None when there is
        nothing to recover."""
        marker = self.models_dir / ACTIVATION_MARKER
        if not marker.exists():
            return None
        job = self.current_activation()
        if (job is not None and not job.view().finished) or self._activation_elsewhere():
            return None
        record = read_json_object(marker)
        name = str(record.get("name", ""))
        registered = bool(name) and any(
            c.name == name for c in registry.list_models(self.models_dir)
        )
        removed: list[str] = []
        if name and not registered:
            with contextlib.suppress(ModelError):
                # NOTE: also registry.register_model's temporary copy of the .keras file.
                tmp = self.models_dir / f"{validate_name(name)}.keras.tmp"
                for leftover in [*registry.model_files(name, self.models_dir), tmp]:
                    with contextlib.suppress(OSError):
                        leftover.unlink()
                        removed.append(leftover.name)
        with contextlib.suppress(OSError):
            marker.unlink(missing_ok=True)
        return InterruptedActivation(
            run_id=str(record.get("run_id", "?")),
            name=name or "?",
            started=_float(record.get("started")),
            registered=registered,
            removed=tuple(removed),
        )

    def current_activation(self) -> ActivationJob | None:
        """The last activation started into this models folder by this process, if any."""
        with _ACTIVATIONS_LOCK:
            return _ACTIVATIONS.get(self.models_dir.resolve())

    def forget_activation(self, job: ActivationJob) -> None:
        """Drop a finished job once its outcome has been shown."""
        with _ACTIVATIONS_LOCK:
            key = self.models_dir.resolve()
            if _ACTIVATIONS.get(key) is job and job.view().finished:
                del _ACTIVATIONS[key]


ACTIVATION_MARKER = ".activation.json"  # in the models folder while an activation runs
MARKER_STALE_S = 24 * 3600.0  # an older marker of a live pid is a reused pid, not an activation


@dataclass(frozen=True)
class InterruptedActivation:
    """An activation whose server process stopped before it ended (see
    TrainingJobRunner.recover_interrupted_activation)."""

    run_id: str
    name: str
    started: float  # epoch seconds
    registered: bool  # it had got as far as registering the model (the default may not be it)
    removed: tuple[str, ...]  # the half-written files deleted


@dataclass(frozen=True)
class ActivationView:
    """A consistent copy of an activation's state for one render."""

    run_id: str
    name: str
    stage: str  # the PUBLISH_STEPS entry running now ("" before the first)
    step: int  # 1-based index of that stage, 0 before the first
    steps: int
    detail: str  # the latest finer line within the stage (e.g. "batch norm 3/9 ..."), or ""
    elapsed_s: float
    finished: bool
    card: ModelCard | None
    error: str | None


class ActivationJob(WorkerJob[ActivationView]):
    """One TrainingJobRunner.activate on a worker thread (see start_activation).

    # NOTE: the worker writes the stage and the outcome under the lock; readers get
    # ActivationView copies. Nothing here touches a UI.
    """

    def __init__(self, run_id: str, name: str) -> None:
        """A not yet started activation of run run_id as model `name` (start_activation
        starts it); its stages are publish's PUBLISH_STEPS."""
        from emotion_core.publish import PUBLISH_STEPS

        super().__init__()
        self.run_id, self.name = run_id, name
        self._steps = PUBLISH_STEPS
        self._stage = ""
        self._detail = ""
        self._card: ModelCard | None = None
        self._error: str | None = None

    def report(self, line: str) -> None:
        """publish_run's progress callback (worker thread): a PUBLISH_STEPS entry starts a
        stage, any other line is detail within the current one."""
        with self._lock:
            if line in self._steps:
                self._stage, self._detail = line, ""
            else:
                self._detail = line

    def run(self, activate: Callable[..., ModelCard], marker: Path | None = None) -> None:
        """Thread body: activate(run_id, name, progress=...); every failure becomes `error`,
        a sentence for the user (the registry is then as it was, see activate). The marker
        file (see start_activation) is removed once it has ended, either way."""
        card, error = None, None
        try:
            card = activate(self.run_id, self.name, progress=self.report)
        except (ModelError, JobError) as exc:
            error = f"Not activated: {exc}. The default model is unchanged."
        except Exception as exc:  # noqa: BLE001  shown to the user instead of a dead thread
            error = f"Not activated: {type(exc).__name__}: {exc}. The default model is unchanged."
        finally:
            if marker is not None:
                with contextlib.suppress(OSError):
                    marker.unlink(missing_ok=True)
        with self._lock:
            self._card, self._error = card, error
            self._mark_ended()

    def view(self) -> ActivationView:
        with self._lock:
            step = self._steps.index(self._stage) + 1 if self._stage in self._steps else 0
            return ActivationView(
                run_id=self.run_id,
                name=self.name,
                stage=self._stage,
                step=step,
                steps=len(self._steps),
                detail=self._detail,
                elapsed_s=self._elapsed_s(),
                finished=self._ended is not None,
                card=self._card,
                error=self._error,
            )


# Activations running in this process, by resolved models folder (one at a time in each).
_ACTIVATIONS: dict[Path, ActivationJob] = {}
_ACTIVATIONS_LOCK = threading.Lock()


def arch_for_init_model(model_path: Path, arch: str) -> str:
    """The architecture to record when fine-tuning a registered model whose card says `arch`.

    publish_run registers the batch-norm-folded inference network when the zoo has one, while
    its card keeps the training name (e.g. 'fer-fast'); a run fine-tuned from such a file must
    say 'fer-fast-folded', or publishing it would try to fold it a second time.
    """
    try:
        with zipfile.ZipFile(model_path) as archive:
            config = archive.read("config.json").decode(errors="replace")
    except (OSError, KeyError, zipfile.BadZipFile):
        return arch
    if arch.endswith("-folded") or "BatchNormalization" in config:
        return arch
    from emotion_core.zoo import ARCHITECTURES

    return f"{arch}-folded" if f"{arch}-folded" in ARCHITECTURES else arch


def _read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _publish_run() -> Callable[..., ModelCard]:
    """emotion_core.publish.publish_run, imported late (it loads Keras)."""
    from emotion_core.publish import publish_run

    return publish_run


def summarize_runs(runs: Sequence[RunInfo]) -> pd.DataFrame:
    """A table of runs for display."""
    return pd.DataFrame(
        [
            {
                "run": r.run_id, "state": r.state, "arch": r.arch,
                "epoch": f"{r.epoch}/{r.epochs}",
                "val_accuracy": r.metrics.get("val_accuracy", r.metrics.get("best_val_accuracy")),
                "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(r.started))
                if r.started else "",
            }
            for r in runs
        ],
        columns=["run", "state", "arch", "epoch", "val_accuracy", "started"],
    )  # fmt: skip
