"""Evaluate a model on a FER-2013 split: accuracy, macro-F1, per-class table, confusion matrix.

    python -m emotion_core.evaluate [--model PATH|NAME] --data PATH [--split PublicTest]
        [--detect-faces] [--tta] [--json OUT]

The last stdout line is exactly `accuracy=0.XXXX macro_f1=0.XXXX n=N`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from emotion_core.calibration import expected_calibration_error
from emotion_core.classes import CLASSES
from emotion_core.cli import OutputError, command_parser, prepare_output_file, quiet_native_logs
from emotion_core.data import DataError, load_dataset
from emotion_core.fileio import atomic_write_json
from emotion_core.preprocess import INPUT_SIZE, input_size_of, preprocess, preprocess_batch
from emotion_core.registry import MODELS_DIR, ModelError


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) int matrix: rows are true classes, columns predictions."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def _number(value: Any, kind: type[float] | type[int], default: Any) -> Any:
    """kind(value), or default when value is missing or not a number (partial/old files)."""
    try:
        return kind(value)
    except (TypeError, ValueError, OverflowError):
        return default


@dataclass(frozen=True)
class ClassMetrics:
    """One class's precision, recall and F1, and its support (faces of that class)."""

    precision: float
    recall: float
    f1: float
    support: int

    def to_dict(self) -> dict[str, Any]:
        """The per_class entry of eval.json (and of a model card)."""
        return {
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "support": self.support,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClassMetrics:
        """From a per_class entry; missing or malformed figures read as 0."""
        return cls(
            precision=_number(data.get("precision"), float, 0.0),
            recall=_number(data.get("recall"), float, 0.0),
            f1=_number(data.get("f1"), float, 0.0),
            support=_number(data.get("support"), int, 0),
        )


@dataclass(frozen=True)
class EvalReport:
    """An evaluation on a labelled split, as eval.json and `--json` reports hold it.

    per_class: class name -> ClassMetrics, in the order of classes. confusion_matrix: (C, C)
    counts as a tuple of rows (rows: true classes, columns: predictions; C = len(classes), 7
    for the app's classes); the array form is `matrix`. no_face: faces never classified (no
    face detected), counted as wrong; None when faces were not detected. ece: expected
    calibration error of the classified faces; None when not measured. to_dict/from_dict
    keep the file format; keys a writer adds beside the report (split, seconds, ...) are not
    part of it.
    """

    accuracy: float
    macro_f1: float
    n: int
    per_class: Mapping[str, ClassMetrics]
    confusion_matrix: tuple[tuple[int, ...], ...]
    classes: tuple[str, ...]
    no_face: int | None = None
    ece: float | None = None

    @property
    def matrix(self) -> np.ndarray:
        """The confusion matrix as a (C, C) int64 array."""
        return np.array(self.confusion_matrix, dtype=np.int64)

    def per_class_dict(self) -> dict[str, dict[str, Any]]:
        """per_class as plain dicts (eval.json's and a model card's per_class)."""
        return {name: metrics.to_dict() for name, metrics in self.per_class.items()}

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of eval.json, keys in the file's order."""
        data: dict[str, Any] = {
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "n": self.n,
            "per_class": self.per_class_dict(),
            "confusion_matrix": [list(row) for row in self.confusion_matrix],
            "classes": list(self.classes),
        }
        if self.no_face is not None:
            data["no_face"] = self.no_face
        if self.ece is not None:
            data["ece"] = self.ece
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvalReport:
        """From an eval.json object, old or partial ones too: missing or malformed fields read
        as 0 / empty (None for no_face and ece); other keys are ignored."""
        per_class = data.get("per_class")
        rows = data.get("confusion_matrix")
        try:
            matrix = tuple(tuple(int(v) for v in row) for row in rows) if rows else ()
        except (TypeError, ValueError, OverflowError):
            matrix = ()
        classes = data.get("classes")
        no_face, ece = data.get("no_face"), data.get("ece")
        return cls(
            accuracy=_number(data.get("accuracy"), float, 0.0),
            macro_f1=_number(data.get("macro_f1"), float, 0.0),
            n=_number(data.get("n"), int, 0),
            per_class={
                str(name): ClassMetrics.from_dict(row)
                for name, row in (per_class.items() if isinstance(per_class, Mapping) else ())
                if isinstance(row, Mapping)
            },
            confusion_matrix=matrix,
            classes=tuple(str(c) for c in classes) if isinstance(classes, list | tuple) else (),
            no_face=None if no_face is None else _number(no_face, int, None),
            ece=None if ece is None else _number(ece, float, None),
        )


def metrics_from_confusion(
    matrix: np.ndarray, classes: Sequence[str] = CLASSES, missed: np.ndarray | None = None
) -> EvalReport:
    """Accuracy, macro-F1 and per-class precision/recall/F1/support from a confusion matrix
    (C, C); missed (C,): faces of each true class never classified (no face detected), which
    count as wrong in accuracy, recall, F1 and support alike. No ece, no no_face."""
    missed = np.zeros(len(matrix), np.int64) if missed is None else np.asarray(missed, np.int64)
    tp = np.diag(matrix).astype(float)
    predicted = matrix.sum(axis=0).astype(float)
    actual = (matrix.sum(axis=1) + missed).astype(float)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    present = actual > 0
    total = matrix.sum() + missed.sum()
    return EvalReport(
        accuracy=float(tp.sum() / total) if total else 0.0,
        macro_f1=float(f1[present].mean()) if present.any() else 0.0,
        n=int(total),
        per_class={
            name: ClassMetrics(precision=float(p), recall=float(r), f1=float(f), support=int(s))
            for name, p, r, f, s in zip(classes, precision, recall, f1, actual, strict=True)
        },
        confusion_matrix=tuple(tuple(row) for row in matrix.tolist()),
        classes=tuple(classes),
    )


def report_from_probs(
    probs: np.ndarray, labels: np.ndarray, missed_labels: np.ndarray | None = None
) -> EvalReport:
    """Full report from probabilities (N, C) and labels (N,); missed_labels (M,): the labels of
    faces with no prediction (not detected), which count as wrong (ECE: of the N predicted)."""
    num_classes = probs.shape[1]
    preds = probs.argmax(axis=1)
    matrix = confusion_matrix(labels, preds, num_classes)
    missed = None
    if missed_labels is not None and len(missed_labels):
        missed = np.bincount(np.asarray(missed_labels, np.int64), minlength=num_classes)
    report = metrics_from_confusion(matrix, missed=missed)
    return dataclasses.replace(
        report,
        no_face=None if missed is None else int(missed.sum()),
        ece=expected_calibration_error(probs, labels),
    )


def evaluate_model_file(path: Path, x: np.ndarray, y: np.ndarray, tta: bool = False) -> EvalReport:
    """Evaluate a .keras file on preprocessed faces x (N,48,48,1) and labels y (N,)."""
    from emotion_core.inference import load_classifier_from_file

    classifier = load_classifier_from_file(path)
    return report_from_probs(predict_all(classifier, x, tta), y)


def predict_all(classifier: Any, x: np.ndarray, tta: bool = False, batch: int = 256) -> np.ndarray:
    """Probabilities (N, C) in batches, optionally with flip TTA."""
    fn = classifier.predict_tta if tta else classifier.predict
    parts = [fn(x[i : i + batch]) for i in range(0, len(x), batch)]
    return np.concatenate(parts) if parts else np.zeros((0, len(CLASSES)))


def detect_and_crop(
    images: np.ndarray, upscale: int = 4, size: int = INPUT_SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """Run the Haar detector on each (upscaled) image; crop the largest face.

    images (N, H, W) uint8 -> faces (M, size, size, 1) float32 and found mask (N,) bool.
    """
    cascade_file = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"  # type: ignore[attr-defined]
    cascade = cv2.CascadeClassifier(cascade_file)
    faces, found = [], np.zeros(len(images), bool)
    for i, image in enumerate(images):
        big = cv2.resize(image, None, fx=upscale, fy=upscale, interpolation=cv2.INTER_CUBIC)
        boxes = cascade.detectMultiScale(big, scaleFactor=1.1, minNeighbors=3, minSize=(60, 60))
        if len(boxes) == 0:
            continue
        x, y, w, h = max(boxes, key=lambda b: b[2] * b[3])
        faces.append(preprocess(big[y : y + h, x : x + w], size))
        found[i] = True
    return (np.stack(faces) if faces else np.zeros((0, size, size, 1), np.float32)), found


def confusion_png_path(report_path: Path) -> Path:
    """Where the confusion heat map of a JSON report goes: `<stem>.confusion.png` beside it
    (never the report itself, whatever its suffix)."""
    report_path = Path(report_path)
    return report_path.with_name(f"{report_path.stem}.confusion.png")


def prepare_report_paths(report_path: Path) -> Path | None:
    """Check before the work that the JSON report and its heat map (confusion_png_path) can be
    written there; returns their folder when it had to be made (to remove again should the
    command stop before writing), else None. Raises OutputError saying why not."""
    report_path = Path(report_path)
    existed = report_path.parent.is_dir()
    prepare_output_file(report_path)
    picture = confusion_png_path(report_path)
    if picture.is_dir():
        raise OutputError(f"{picture}: is a folder, not a file name (the report's heat map)")
    return None if existed else report_path.parent


def save_confusion_png(matrix: np.ndarray, path: Path, classes: Sequence[str] = CLASSES) -> None:
    """Draw a row-normalised confusion matrix heat map (OpenCV, no matplotlib); OSError when
    it cannot be written."""
    cell, margin = 70, 110
    n = len(classes)
    norm = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    image = np.full((margin + n * cell + 10, margin + n * cell + 10, 3), 255, np.uint8)
    for i in range(n):
        for j in range(n):
            shade = int(255 - 200 * norm[i, j])
            x0, y0 = margin + j * cell, margin + i * cell
            cv2.rectangle(image, (x0, y0), (x0 + cell, y0 + cell), (255, shade, shade), -1)
            color = (255, 255, 255) if norm[i, j] > 0.5 else (0, 0, 0)
            cv2.putText(
                image,
                f"{norm[i, j]:.2f}",
                (x0 + 12, y0 + 40),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.5,
                color,
                1,
                cv2.LINE_AA,
            )
        cv2.putText(
            image,
            classes[i][:8],
            (5, margin + i * cell + 40),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.45,
            (0, 0, 0),
            1,
            cv2.LINE_AA,
        )
        cv2.putText(
            image,
            classes[i][:8],
            (margin + i * cell + 5, margin - 10),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.45,
            (0, 0, 0),
            1,
            cv2.LINE_AA,
        )
    cv2.putText(image, "true \\ predicted", (5, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    if not cv2.imwrite(str(path), image):
        raise OSError(f"cannot write the image {path}")


def is_registered_file(path: Path, models_dir: Path) -> bool:
    """Whether path is a registered model's network: a .keras file in models_dir with its
    card <stem>.json beside it."""
    try:
        return (
            path.suffix == ".keras"
            and path.parent.resolve() == Path(models_dir).resolve()
            and path.with_suffix(".json").is_file()
        )
    except OSError:  # e.g. a name too long: not a registered model
        return False


def resolve_model(model: str | None, models_dir: Path | None = None) -> tuple[Any, str]:
    """A classifier for --model (a .keras path, a registered name, or None = the default) and
    the name to report it by.

    A registered model's own .keras file (in models_dir, default MODELS_DIR) is loaded as by
    name, so it runs on its card's runtime (e.g. TFLite) as the app runs it, and the figures
    match `--model NAME`; EMOTION_RUNTIME=keras still forces the Keras network. Any other
    .keras file runs on Keras, with the card beside it if there is a valid one.
    """
    from emotion_core.inference import load_classifier, load_classifier_from_file
    from emotion_core.registry import read_card

    models_dir = models_dir or MODELS_DIR
    if model and (model.endswith(".keras") or Path(model).exists()):
        path = Path(model)
        card = None
        if path.with_suffix(".json").exists():
            try:
                card = read_card(path.stem, path.parent)
            except ModelError as exc:  # e.g. a copy whose card still names the original
                print(f"note: {exc}; evaluating the network without its card", file=sys.stderr)
        if card is not None and is_registered_file(path, models_dir):
            classifier = load_classifier(path.stem, models_dir)
            print(
                f"note: {path} is the registered model {classifier.name}: evaluated as the app "
                f"runs it, on the {classifier.runtime} runtime",
                file=sys.stderr,
            )
            return classifier, str(path)
        return load_classifier_from_file(path, card), str(path)
    classifier = load_classifier(model, models_dir)
    return classifier, classifier.name


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    quiet_native_logs()
    p = command_parser("emotion_core.evaluate", __doc__)
    p.add_argument(
        "--model", default=None, help="a .keras file or registered name (default: app's)"
    )
    p.add_argument("--data", required=True, help="FER-2013 CSV or class-folder root")
    p.add_argument("--split", default="PublicTest")
    p.add_argument("--detect-faces", action="store_true", help="detect the face first (largest)")
    p.add_argument("--tta", action="store_true", help="average with the mirrored face")
    p.add_argument(
        "--json",
        default=None,
        help="write the report here (and its confusion heat map beside it, <stem>.confusion.png)",
    )
    a = p.parse_args(argv)
    out = Path(a.json) if a.json else None
    made: Path | None = None  # the report's folder, when made for it
    try:
        if out is not None:  # before minutes of work, not after them
            made = prepare_report_paths(out)
        classifier, model_name = resolve_model(a.model)
        dataset = load_dataset(a.data, a.split)
    except (DataError, ModelError, OSError) as exc:
        if made is not None:
            with contextlib.suppress(OSError):
                made.rmdir()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"model {model_name} ({classifier.runtime} runtime), {dataset.split} of {a.data}: "
        f"{len(dataset)} faces, {'with flip TTA' if a.tta else 'no TTA'}"
    )
    size = input_size_of(classifier)
    labels = dataset.labels
    missed_labels = None
    if a.detect_faces:
        x, found = detect_and_crop(dataset.images, size=size)
        missed_labels = labels[~found]
        missed = len(missed_labels)
        labels = labels[found]
        print(
            f"faces detected in {found.sum()}/{len(found)} images; {missed} count as misses",
            file=sys.stderr,
        )
    else:
        x = preprocess_batch(dataset.images, size=size)
    report = report_from_probs(predict_all(classifier, x, a.tta), labels, missed_labels)
    for name, row in report.per_class.items():
        print(
            f"{name:>9}  precision={row.precision:.3f} recall={row.recall:.3f} "
            f"f1={row.f1:.3f} support={row.support}"
        )
    problem = ""
    if out is not None:
        context = {
            "model": model_name,
            "data": str(a.data),
            "split": dataset.split,
            "tta": a.tta,
            "detect_faces": a.detect_faces,
        }
        try:
            atomic_write_json(out, report.to_dict() | context)  # never half a report
            save_confusion_png(report.matrix, confusion_png_path(out))
        except OSError as exc:  # e.g. a full disk: the figures still get printed
            problem = f"error: cannot write the report {out}: {exc}"
    print(f"accuracy={report.accuracy:.4f} macro_f1={report.macro_f1:.4f} n={report.n}")
    if problem:
        print(problem, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
