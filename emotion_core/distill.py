"""Knowledge distillation: a bigger teacher's softened probabilities become training targets.

Offline distillation: the teacher is run once over the (un-augmented, flip-averaged) training
faces; the student then learns `alpha * soften(teacher, T) + (1 - alpha) * smoothed one-hot`
with ordinary cross-entropy. A teacher can be a `.keras` file or a `.npz` of its probabilities
written by this module's CLI (small enough to carry to a GPU machine instead of the teacher):

    python -m emotion_core.distill --teacher models/runs/vgg-m/best.keras \
        --data ../shared/data/fer2013/fer2013.csv.gz --out teacher.npz

Several --teacher options (each a .keras file or an earlier .npz) make an ensemble teacher: the
mean of their probabilities.

Live ("consistent") distillation instead runs the teachers inside the training step on the very
augmented view the student sees (`python -m emotion_core.train --live-teacher --teacher
a.keras,b.keras`): the targets then say how the teachers read a shifted, rotated, partly erased
face, not the clean one (Beyer et al. 2022, "Knowledge distillation: a good teacher is patient
and consistent"). It costs the teachers' forward passes in every step.
"""

from __future__ import annotations

import sys
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emotion_core.calibration import apply_temperature
from emotion_core.classes import CLASSES
from emotion_core.cli import command_parser, prepare_output_file, quiet_native_logs
from emotion_core.data import DataError


class TeacherError(ValueError):
    """A teacher file that cannot serve the training set (missing, wrong shape, misaligned)."""


FacesDone = Callable[[int, int], None]  # (faces done, faces in all)
# NOTE: a progress line every 10 batches: ~35 s apart for vgg-m40 on 2 CPU cores.
PROGRESS_BATCHES = 10


def teacher_probabilities(
    model_path: Path, faces: np.ndarray, batch: int = 256, progress: FacesDone | None = None
) -> np.ndarray:
    """Flip-averaged probabilities (N, C) of a .keras teacher on faces (N, 48, 48, 1);
    progress(done, N) is called before the first face and after every PROGRESS_BATCHES
    batches."""
    from emotion_core.evaluate import predict_all
    from emotion_core.inference import load_classifier_from_file

    classifier = load_classifier_from_file(Path(model_path))
    chunk = batch * PROGRESS_BATCHES
    parts = [np.zeros((0, len(classifier.classes)), np.float32)]
    if progress is not None:
        progress(0, len(faces))
    for start in range(0, len(faces), chunk):
        part = predict_all(classifier, faces[start : start + chunk], tta=True, batch=batch)
        parts.append(part.astype(np.float32))
        if progress is not None:
            progress(start + len(part), len(faces))
    return np.concatenate(parts)


def soften(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities (N, C) re-scaled as if their logits were divided by temperature."""
    return apply_temperature(probs.astype(np.float64), temperature).astype(np.float32)


def distillation_targets(
    labels: np.ndarray,
    teacher: np.ndarray,
    alpha: float,
    temperature: float,
    label_smoothing: float = 0.0,
) -> np.ndarray:
    """Targets (N, C): alpha * soften(teacher, T) + (1 - alpha) * label-smoothed one-hot."""
    if not 0.0 <= alpha <= 1.0:
        raise TeacherError(f"distillation alpha must be in [0, 1], got {alpha}")
    if temperature <= 0:
        raise TeacherError(f"distillation temperature must be > 0, got {temperature}")
    one_hot = smoothed_one_hot(labels, teacher.shape[1], label_smoothing)
    return alpha * soften(teacher, temperature) + (1.0 - alpha) * one_hot


def smoothed_one_hot(labels: np.ndarray, num_classes: int, smoothing: float) -> np.ndarray:
    """Label-smoothed one-hot targets (N, C) of labels (N,)."""
    one_hot = np.eye(num_classes, dtype=np.float32)[labels]
    return one_hot * (1.0 - smoothing) + smoothing / num_classes


def teacher_file_path(path: Path) -> Path:
    """Where a teacher file asked for as `path` is written: with a .npz suffix added when it
    has none (as numpy would add it)."""
    path = Path(path)
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


def save_teacher_file(path: Path, probs: np.ndarray, labels: np.ndarray, source: str) -> Path:
    """Write probabilities (N, C) with the labels they belong to (checked on load); returns
    the path written (teacher_file_path)."""
    path = teacher_file_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path, probs=probs.astype(np.float16), labels=labels.astype(np.int8), source=source
    )
    return path


def load_teacher_file(path: Path, labels: np.ndarray) -> np.ndarray:
    """Probabilities (N, C) from a teacher .npz whose rows must match labels (N,)."""
    path = Path(path)
    if not path.exists():
        raise TeacherError(f"{path}: teacher file not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            probs, saved_labels = data["probs"].astype(np.float32), data["labels"]
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise TeacherError(f"{path}: not a teacher file ({why})") from exc
    if probs.ndim != 2 or probs.shape[1] != len(CLASSES):
        raise TeacherError(f"{path}: probabilities have shape {probs.shape}, need (N, 7)")
    if len(saved_labels) != len(labels) or not np.array_equal(saved_labels, labels):
        raise TeacherError(
            f"{path}: made for a different training set ({len(saved_labels)} rows, "
            f"{len(labels)} here, or the labels differ); rebuild it with python -m "
            "emotion_core.distill"
        )
    return probs / probs.sum(axis=1, keepdims=True)


def load_teacher(
    path: str,
    faces: np.ndarray,
    labels: np.ndarray,
    split: str = "Training",
    split_labels: np.ndarray | None = None,
    progress: FacesDone | None = None,
) -> np.ndarray:
    """Teacher probabilities (N, C) for the training faces (N, 48, 48, 1) with labels (N,), from
    a .npz, a .keras teacher, or FER+ votes (a .csv, emotion_core.ferplus); a .npz and the votes
    are checked against the whole split's labels, split_labels, when the faces are only its
    first N. progress: see teacher_probabilities (a .keras teacher only)."""
    whole = labels if split_labels is None else split_labels
    if path.endswith(".npz"):
        return load_teacher_file(Path(path), whole)[: len(labels)]
    if path.endswith(".csv"):
        from emotion_core.ferplus import ferplus_targets

        try:
            return ferplus_targets(Path(path), whole, split)[: len(labels)]
        except DataError as exc:
            raise TeacherError(str(exc)) from exc
    if len(faces) != len(labels):
        raise TeacherError(f"{len(faces)} faces but {len(labels)} labels")
    return teacher_probabilities(Path(path), faces, progress=progress)


def teacher_label(path: str | Path) -> str:
    """A teacher's short name in progress lines: its file's stem, with the run folder for a
    run's best.keras or last.keras ("vgg-m40-v4", "vgg-m/best")."""
    path = Path(path)
    return f"{path.parent.name}/{path.stem}" if path.stem in ("best", "last") else path.stem


def ensemble_probabilities(
    teachers: Sequence[str],
    faces: np.ndarray,
    labels: np.ndarray,
    progress: Callable[[str], None] | None = None,
) -> tuple[np.ndarray, list[float]]:
    """Mean of the teachers' probabilities (N, C) (each a .keras file or a teacher .npz), and
    each teacher's agreement with the labels. progress gets a line per teacher and per chunk
    of faces ("teacher 1/3 vgg-m40-v4: 12,800/28,709 faces")."""
    if not teachers:
        raise TeacherError("no teacher given")
    each = []
    for k, teacher in enumerate(teachers, start=1):
        name = f"teacher {k}/{len(teachers)} {teacher_label(teacher)}"

        def faces_done(done: int, total: int, name: str = name) -> None:
            if progress is not None:
                progress(f"{name}: {done:,}/{total:,} faces")

        each.append(load_teacher(str(teacher), faces, labels, progress=faces_done))
        if progress is not None and str(teacher).endswith((".npz", ".csv")):
            progress(f"{name}: {len(each[-1]):,} faces read from {teacher}")
    agreements = [float((probs.argmax(axis=1) == labels).mean()) for probs in each]
    return np.mean(each, axis=0).astype(np.float32), agreements


def teacher_paths(spec: str) -> list[Path]:
    """The .keras files of a live teacher spec "a.keras,b.keras" (checked to exist)."""
    paths = [Path(part.strip()) for part in spec.split(",") if part.strip()]
    if not paths:
        raise TeacherError("live distillation needs at least one teacher .keras file")
    for path in paths:
        if path.suffix != ".keras":
            raise TeacherError(f"{path}: a live teacher must be a .keras file (not probabilities)")
        if not path.exists():
            raise TeacherError(f"{path}: teacher file not found")
    return paths


def live_distillation_trainer(student: Any, teachers: Sequence[Any], temperature: float) -> Any:
    """The training graph of live distillation: faces (N, 48, 48, 1) -> (N, 2C), the student's
    probabilities then the teachers' mean softened probabilities, both on the same augmented
    view. The student must be a plain stack whose second layer is its "augment" layer; it shares
    its layers (so its weights train), the teachers are frozen and run in inference mode."""
    import keras

    from emotion_core.soup import is_chain

    layers = list(student.layers)
    if not is_chain(student) or len(layers) < 3 or layers[1].name != "augment":
        raise TeacherError(
            "live distillation needs a plain-stack student with its augmentation layer "
            "(a zoo architecture trained with augmentation)"
        )
    if temperature <= 0:
        raise TeacherError(f"distillation temperature must be > 0, got {temperature}")
    faces = keras.Input(tuple(student.input_shape[1:]), name="faces")
    views = layers[1](faces)
    x = views
    for layer in layers[2:]:
        x = layer(x)
    softened = []
    for k, teacher in enumerate(teachers, start=1):
        teacher.trainable = False
        # NOTE: a fresh wrapper per teacher: two teachers (or a teacher and the student) may
        # share a name, and names must be unique in the training graph.
        named = keras.Model(teacher.inputs, teacher.outputs[0], name=f"teacher_{k}")
        probs = named(views, training=False)
        softened.append(keras.ops.softmax(keras.ops.log(probs + 1e-7) / temperature, axis=-1))
    mean = softened[0] if len(softened) == 1 else keras.ops.mean(keras.ops.stack(softened), 0)
    both = keras.layers.Concatenate(name="student_and_teacher")([x, keras.ops.stop_gradient(mean)])
    return keras.Model(faces, both, name=f"{student.name}-live-kd")


def live_distillation_loss(alpha: float) -> Any:
    """Cross-entropy of the student (first half of y_pred) against alpha x teachers (second
    half) + (1 - alpha) x y_true (label-smoothed one-hot, (N, C))."""
    import keras

    if not 0.0 <= alpha <= 1.0:
        raise TeacherError(f"distillation alpha must be in [0, 1], got {alpha}")

    def live_distillation(y_true: Any, y_pred: Any) -> Any:
        classes = keras.ops.shape(y_true)[-1]
        student, teacher = y_pred[:, :classes], y_pred[:, classes:]
        target = alpha * teacher + (1.0 - alpha) * keras.ops.cast(y_true, student.dtype)
        return keras.losses.categorical_crossentropy(target, student)

    return live_distillation


def accuracy(y_true: Any, y_pred: Any) -> Any:
    """The student's accuracy when y_pred holds the student's then the teachers' probabilities
    (logged as 'accuracy', like a plain run's)."""
    import keras

    classes = keras.ops.shape(y_true)[-1]
    return keras.metrics.categorical_accuracy(y_true, y_pred[:, :classes])


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: write a teacher's (or an ensemble's) probabilities on a training split to a .npz."""
    quiet_native_logs()
    p = command_parser("emotion_core.distill", __doc__)
    p.add_argument(
        "--teacher",
        required=True,
        action="append",
        help="teacher .keras file or teacher .npz; repeat for an ensemble",
    )
    p.add_argument("--data", required=True, help="FER-2013 CSV, folder root or .npz pack")
    p.add_argument("--split", default="Training")
    p.add_argument("--out", required=True, help="output .npz (the suffix is added if missing)")
    a = p.parse_args(argv)
    from emotion_core.data import load_dataset
    from emotion_core.preprocess import preprocess_batch
    from emotion_core.registry import ModelError

    try:
        out = teacher_file_path(Path(a.out))
        prepare_output_file(out)  # before minutes of work
        data = load_dataset(a.data, a.split)
        faces = preprocess_batch(data.images)
        say = lambda line: print(line, flush=True)  # noqa: E731
        say(f"{data.split} of {a.data}: {len(data):,} faces, {len(a.teacher)} teacher(s)")
        probs, agreements = ensemble_probabilities(a.teacher, faces, data.labels, say)
        out = save_teacher_file(out, probs, data.labels, source=" + ".join(a.teacher))
    except (DataError, ModelError, TeacherError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for teacher, teacher_agreement in zip(a.teacher, agreements, strict=True):
        print(f"{teacher}: agrees with the labels on {teacher_agreement:.4f}")
    agreement = float((probs.argmax(axis=1) == data.labels).mean())
    what = "teacher agrees" if len(a.teacher) == 1 else f"ensemble of {len(a.teacher)} agrees"
    print(f"wrote {out}: {len(probs)} rows, {what} with the labels on {agreement:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
