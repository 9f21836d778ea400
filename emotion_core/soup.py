"""Weight averaging ("model soup", SWA) and batch-norm recalibration of trained networks.

    python -m emotion_core.soup models/runs/m40-kd/last.keras models/runs/m40-ft/last.keras \
        models/runs/m40-cpu/last.keras --out models/runs/m40-soup

Checkpoints of one training trajectory (a run and the runs fine-tuned from it) lie in one basin
of the loss: the uniform mean of their weights is a network of its own, usually a little better
than each of them (Izmailov et al. 2018; Wortsman et al. 2022). Averaged weights no longer match
the batch-norm layers' moving statistics, and those statistics were gathered on augmented faces
(shifted, rotated, partly erased) anyway; so they are then recomputed, layer by layer, on the
clean training faces: each layer's population mean and variance of its input, with the layers
before it already recalibrated. One checkpoint alone gives batch-norm recalibration only.

No validation data is used to build the network. The run folder gets last.keras (the soup;
best.keras is the same file), hparams.json (the ingredients, the command), eval.json (the
soup's validation report, as training writes it, and each ingredient's accuracy) and a
finished status.json, so that the Training page lists it and

    python -m emotion_core.publish models/runs/m40-soup --name NAME

registers it, with every ingredient's training stages counted in its card.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from emotion_core.classes import CLASSES
from emotion_core.cli import (
    OutputError,
    command_parser,
    non_negative_int,
    positive_int,
    prepare_output_folder,
    quiet_native_logs,
)
from emotion_core.data import DataError
from emotion_core.fileio import save_keras_atomically
from emotion_core.registry import ModelError

if TYPE_CHECKING:
    from emotion_core.evaluate import EvalReport

Progress = Callable[[str], None]
# NOTE: statistics of 8,192 faces (each 2,304 positions at the first layer) are as good for the
# purpose as all 28,709, at under a third of the time (vgg-m40 on 2 CPU cores: 88 s).
DEFAULT_MAX_FACES = 8192
# NOTE: a plain stack's recalibration keeps one batch-norm input for every face between layers
# when it fits this (vgg-m40 on 8,192 faces: from the third layer on, 0.4-0.8 GB).
DEFAULT_CACHE_BYTES = 1 << 30


class SoupError(ModelError):
    """Checkpoints that cannot be averaged (different architectures), or a bad output folder."""


def average_weights(weight_lists: Sequence[Sequence[np.ndarray]]) -> list[np.ndarray]:
    """The element-wise mean of several networks' weights (each a list of arrays, same shapes)."""
    if not weight_lists:
        raise SoupError("no checkpoint to average")
    shapes = [tuple(w.shape for w in weights) for weights in weight_lists]
    if any(s != shapes[0] for s in shapes[1:]):
        raise SoupError(
            "the checkpoints are different architectures (their weight shapes differ); "
            "only runs of one architecture can be averaged"
        )
    return [
        np.mean([np.asarray(weights[i], np.float64) for weights in weight_lists], axis=0).astype(
            np.asarray(weight_lists[0][i]).dtype
        )
        for i in range(len(weight_lists[0]))
    ]


def check_ingredients(models: Sequence[Any], paths: Sequence[Path]) -> int:
    """Raise SoupError naming the checkpoint unless every model maps faces (S, S, 1) to one
    probability per class (len(CLASSES)) and all share one input shape and one architecture
    (weight shapes); returns S. Checked right after loading, before any evaluation."""
    shapes = []
    for path, model in zip(paths, models, strict=True):
        in_shape, out_shape = model.input_shape, model.output_shape
        if not all(isinstance(d, int | None) for d in (*in_shape, *out_shape)):
            raise SoupError(
                f"{path}: expected one input and one output, not {in_shape} -> {out_shape}"
            )
        if out_shape[-1] != len(CLASSES):
            raise SoupError(
                f"{path}: {out_shape[-1]} outputs, but a network here needs one per class "
                f"({len(CLASSES)}: {', '.join(CLASSES)})"
            )
        face = tuple(in_shape[1:])
        if len(face) != 3 or face[0] != face[1] or face[2] != 1 or not face[0]:
            raise SoupError(f"{path}: input shape {face}, expected square gray faces (S, S, 1)")
        shapes.append((face, tuple(tuple(w.shape) for w in model.weights)))
    for path, shape in zip(paths[1:], shapes[1:]):
        if shape[0] != shapes[0][0]:
            raise SoupError(
                f"{path}: input shape {shape[0]}, but {paths[0]} takes {shapes[0][0]}; "
                "only runs of one architecture can be averaged"
            )
        if shape[1] != shapes[0][1]:
            raise SoupError(
                f"{path} and {paths[0]} are different architectures (their weight shapes "
                "differ); only runs of one architecture can be averaged"
            )
    return int(shapes[0][0][0])


def batchnorm_layers(model: Any) -> list[Any]:
    """The model's BatchNormalization layers in graph order (inputs first)."""
    import keras

    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


def _channel_axis(layer: Any) -> int:
    """The batch-norm layer's channel axis as a non-negative index of its input's shape."""
    axis = layer.axis if isinstance(layer.axis, int) else layer.axis[0]
    return int(axis % len(layer.input.shape))


def _moments(features: np.ndarray, axis: int) -> np.ndarray:
    """Sums (2, C) of per-face channel means and mean squares of features (B, ..., C...)."""
    reduce = tuple(i for i in range(1, features.ndim) if i != axis)
    squares = np.square(features)
    if not reduce:
        return np.stack([features.sum(0, dtype=np.float64), squares.sum(0, dtype=np.float64)])
    means = features.mean(reduce, dtype=np.float64)
    return np.stack([means.sum(0), squares.mean(reduce, dtype=np.float64).sum(0)])


def _population(sums: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    mean, mean_square = sums / count
    return mean, np.maximum(mean_square - mean**2, 0.0)


def _input_statistics(
    model: Any, layer: Any, x: np.ndarray, batch: int
) -> tuple[np.ndarray, np.ndarray]:
    """Population mean and variance (C,) of `layer`'s input over faces x (N, 48, 48, 1), the
    network running in inference mode (no augmentation, no dropout)."""
    import keras

    features = layer.input
    axis = _channel_axis(layer)
    reduce = tuple(i for i in range(1, len(features.shape)) if i != axis)
    # NOTE: the reduction runs inside the compiled graph: a vgg-m40 feature map of every training
    # face would be ~10 GB, the per-face channel means are a few MB.
    moments = keras.Model(
        model.inputs,
        [
            keras.ops.mean(features, axis=reduce) if reduce else features,
            keras.ops.mean(keras.ops.square(features), axis=reduce) if reduce else features**2,
        ],
    )
    sums = np.zeros((2, features.shape[axis]), np.float64)
    for start in range(0, len(x), batch):
        means, squares = moments.predict_on_batch(x[start : start + batch])
        sums += np.asarray(means, np.float64).sum(0), np.asarray(squares, np.float64).sum(0)
    return _population(sums, len(x))


def is_chain(model: Any) -> bool:
    """True when every layer feeds only the next one (no branches): a plain VGG stack."""
    layers = list(getattr(model, "layers", []))
    if not layers or not getattr(model, "inputs", None) or len(model.outputs) != 1:
        return False
    linked = all(layer.input is prev.output for prev, layer in zip(layers, layers[1:]))
    return linked and model.outputs[0] is layers[-1].output and layers[0].output is model.inputs[0]


def _segment(layers: Sequence[Any], input_shape: tuple[int, ...]) -> Any:
    """A model running the (shared, already built) layers in order on inputs of input_shape."""
    import keras

    return keras.Sequential([keras.Input(input_shape[1:]), *layers])


def _recalibrate_chain(
    model: Any, x: np.ndarray, batch: int, cache_bytes: int, progress: Progress | None
) -> int:
    """recalibrate_batchnorm for a chain model (is_chain), in one sweep: the input of each
    batch-norm layer is computed from the last cached activation (the input of an earlier
    batch-norm layer, kept when all faces' copy fits cache_bytes) rather than from the faces."""
    import keras

    layers = list(model.layers)
    positions = [
        i for i, layer in enumerate(layers) if isinstance(layer, keras.layers.BatchNormalization)
    ]
    source_at, source = 0, x  # layers[source_at]'s output for every face
    for k, position in enumerate(positions, start=1):
        layer = layers[position]
        if progress:
            progress(f"batch norm {k}/{len(positions)} ({layer.name}) on {len(x)} faces")
        run = _segment(layers[source_at + 1 : position], source.shape)
        shape = tuple(int(d) for d in layer.input.shape[1:])
        keep = len(x) * int(np.prod(shape)) * 4 <= cache_bytes
        cached = np.empty((len(x), *shape), np.float32) if keep else None
        axis = _channel_axis(layer)
        sums = np.zeros((2, shape[axis - 1]), np.float64)
        for start in range(0, len(x), batch):
            chunk = source[start : start + batch]
            features = np.asarray(run.predict_on_batch(chunk) if run.layers else chunk)
            sums += _moments(features, axis)
            if cached is not None:
                cached[start : start + len(features)] = features
        mean, variance = _population(sums, len(x))
        layer.moving_mean.assign(mean.astype("float32"))
        layer.moving_variance.assign(variance.astype("float32"))
        if cached is not None:
            # NOTE: the cached features are this layer's *input*, so the next segment starts
            # with this (now recalibrated) layer.
            source_at, source = position - 1, cached
    return len(positions)


def recalibrate_batchnorm(
    model: Any,
    x: np.ndarray,
    batch: int = 256,
    progress: Progress | None = None,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
) -> int:
    """Recompute every batch-norm layer's moving mean and variance from faces x (N, 48, 48, 1),
    in graph order; returns how many layers were recalibrated. Needs a functional model. A
    plain stack (is_chain) reuses cached activations of at most cache_bytes each (~5x faster
    for vgg-m40); other graphs run from the faces to each batch-norm layer."""
    if len(x) == 0:
        raise SoupError("no faces to recalibrate batch norm on")
    layers = batchnorm_layers(model)
    if layers and not getattr(model, "inputs", None):
        raise SoupError("batch-norm recalibration needs a functional Keras model")
    if layers and cache_bytes > 0 and is_chain(model):
        return _recalibrate_chain(model, x, batch, cache_bytes, progress)
    for k, layer in enumerate(layers, start=1):
        if progress:
            progress(f"batch norm {k}/{len(layers)} ({layer.name}) on {len(x)} faces")
        mean, variance = _input_statistics(model, layer, x, batch)
        layer.moving_mean.assign(mean.astype("float32"))
        layer.moving_variance.assign(variance.astype("float32"))
    return len(layers)


def make_soup(
    models: Sequence[Any],
    x_train: np.ndarray | None,
    batch: int = 256,
    progress: Progress | None = None,
) -> Any:
    """Average the models' weights into the first one and (x_train given) recalibrate its batch
    norm; returns that model."""
    weights = average_weights([m.get_weights() for m in models])
    soup = models[0]
    soup.set_weights(weights)
    if x_train is not None:
        recalibrate_batchnorm(soup, x_train, batch, progress)
    return soup


def sample_faces(images: np.ndarray, max_faces: int, seed: int = 0, size: int = 48) -> np.ndarray:
    """Model-ready faces (n, size, size, 1) from images (N, 48, 48): all of them (max_faces 0
    or >= N), else a seeded random sample of max_faces, in their original order."""
    from emotion_core.preprocess import preprocess_batch

    if 0 < max_faces < len(images):
        keep = np.sort(np.random.default_rng(seed).choice(len(images), max_faces, replace=False))
        images = images[keep]
    return preprocess_batch(images, size=size)


def validation_report(model: Any, arch: str, x: np.ndarray, y: np.ndarray) -> EvalReport:
    """The report training writes to eval.json (accuracy, macro-F1, per class, confusion
    matrix, n) for a Keras model on faces x (N, 48, 48, 1) with labels y (N,)."""
    from emotion_core.evaluate import predict_all, report_from_probs
    from emotion_core.inference import EmotionClassifier
    from emotion_core.registry import ModelCard

    classifier = EmotionClassifier(model, ModelCard(name=model.name, arch=arch), calibrated=False)
    return report_from_probs(predict_all(classifier, x), y)


def write_soup_run(
    out: Path,
    soup: Any,
    checkpoints: Sequence[Path],
    settings: dict[str, Any],
    evaluation: EvalReport,
    *,
    split: str,
    ingredients: Mapping[str, float],
    seconds: float,
) -> None:
    """Write the run folder: last.keras and best.keras (the one network), hparams.json (settings
    + ingredients), eval.json (evaluation on split, plus each ingredient's accuracy and the
    seconds the soup took), and a finished status.json (elapsed: seconds) for the Training
    page."""
    from emotion_core.fileio import atomic_write_json
    from emotion_core.jobs import describe_hardware
    from emotion_core.train import ProgressEvent, StatusFileWriter

    out.mkdir(parents=True, exist_ok=True)
    save_keras_atomically(soup, out / "last.keras")
    try:  # one network: best and last are the same file
        os.link(out / "last.keras", out / "best.keras")
    except OSError:
        shutil.copyfile(out / "last.keras", out / "best.keras")
    hparams = {
        **settings,
        "ingredients": [str(path) for path in checkpoints],
        "params": int(soup.count_params()),
        "hardware": describe_hardware(),
    }
    atomic_write_json(out / "hparams.json", hparams)
    extra = {"split": split, "ingredients": dict(ingredients), "seconds": seconds}
    atomic_write_json(out / "eval.json", evaluation.to_dict() | extra)
    names = ", ".join(Path(path).parent.name for path in checkpoints)
    message = f"averaged {names}" if len(checkpoints) > 1 else f"from {names}"
    if settings.get("recalibrated_on"):
        message += f"; batch norm recalibrated on {settings['recalibrated_on']}"
    metrics = {"val_accuracy": evaluation.accuracy}
    StatusFileWriter(out)(
        ProgressEvent(kind="end", epoch=0, epochs=0, batch=0, steps=0, metrics=metrics,
                      elapsed_s=float(seconds), eta_s=None, state="finished", message=message)
    )  # fmt: skip


def check_out_folder(out: Path) -> None:
    """OutputError when the run folder could not be made or written, checked without making
    it (prepare_output_folder makes it once the checkpoints are known to fit together)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a folder")
    existing = next((p for p in (out, *out.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise OutputError(f"{existing}: exists and is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"{existing}: cannot write there (permission denied)")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = command_parser("emotion_core.soup", __doc__)
    p.add_argument("checkpoints", nargs="+", type=Path, help=".keras checkpoints, one architecture")
    p.add_argument("--out", required=True, type=Path, help="new run folder")
    p.add_argument("--data", help="FER-2013 CSV, folder root or .npz (default: the first run's)")
    p.add_argument("--split", help="split to recalibrate on (default: the first run's training)")
    p.add_argument("--val-split", help="split for the report (default: the first run's)")
    p.add_argument(
        "--max-faces",
        type=non_negative_int,
        default=DEFAULT_MAX_FACES,
        help=f"recalibrate on a seeded random sample of this many training faces (default "
        f"{DEFAULT_MAX_FACES}: ~5 min for vgg-m40 on 2 CPU cores); 0: all of them",
    )
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument(
        "--no-recalibrate",
        action="store_true",
        help="keep the averaged moving statistics (for comparison)",
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: average checkpoints, recalibrate batch norm, write a publishable run folder."""
    quiet_native_logs()
    a = parse_args(argv)  # before Keras loads: --help and usage errors come at once
    import keras

    from emotion_core.data import load_dataset
    from emotion_core.fileio import read_json_object
    from emotion_core.inference import load_keras_model
    from emotion_core.preprocess import preprocess_batch

    first = read_json_object(a.checkpoints[0].parent / "hparams.json")
    data = a.data or first.get("data")
    split = a.split or first.get("train_split", "Training")
    val_split = a.val_split or first.get("val_split", "PublicTest")
    say = lambda message: print(message, flush=True)  # noqa: E731
    created = finished = False
    try:
        if (a.out / "last.keras").exists() or (a.out / "best.keras").exists():
            raise SoupError(f"{a.out} already holds a network; choose a new --out folder")
        missing = [str(path) for path in a.checkpoints if not path.is_file()]
        if missing:
            raise SoupError(f"{', '.join(missing)}: model file not found")
        if not data:
            raise SoupError("--data is needed: the first checkpoint's run names no data")
        check_out_folder(a.out)  # before the checkpoints load; nothing made yet
        started = time.monotonic()
        models = [load_keras_model(path) for path in a.checkpoints]
        size = check_ingredients(models, a.checkpoints)  # before any evaluation
        created = prepare_output_folder(a.out)  # before minutes of work
        train = load_dataset(data, split)
        val = load_dataset(data, val_split)
        x_val = preprocess_batch(val.images, size=size)
        x_train = None if a.no_recalibrate else sample_faces(train.images, a.max_faces, size=size)
        arch = str(first.get("arch", ""))
        ingredients = {}
        for path, model in zip(a.checkpoints, models, strict=True):
            accuracy = validation_report(model, arch, x_val, val.labels).accuracy
            ingredients[str(path)] = round(accuracy, 4)
            say(f"{path}: {val.split} accuracy {accuracy:.4f}")
        soup = make_soup(models, x_train, a.batch_size, say)
        report = validation_report(soup, arch, x_val, val.labels)
        seconds = round(time.monotonic() - started, 1)
        settings = {
            "data": str(data),
            "arch": arch or soup.name,
            "train_split": split,
            "val_split": val_split,
            "classes": first.get("classes", list(CLASSES)),
            "recalibrated_on": None if a.no_recalibrate else train.split,
            "recalibration_faces": 0 if x_train is None else len(x_train),
            "backend": keras.backend.backend(),
            "command": "python -m emotion_core.soup "
            + shlex.join(sys.argv[1:] if argv is None else list(argv)),
        }
        write_soup_run(
            a.out,
            soup,
            a.checkpoints,
            settings,
            report,
            split=val.split,
            ingredients=ingredients,
            seconds=seconds,
        )
        finished = True
    except (SoupError, ModelError, DataError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if created and not finished:  # the folder made for nothing goes (when still empty)
            with contextlib.suppress(OSError):
                a.out.rmdir()
    what = "soup" if len(a.checkpoints) > 1 else "recalibrated network"
    say(f"{what}: {val.split} accuracy {report.accuracy:.4f} ({seconds:.0f} s)")
    say(f"wrote {a.out}/last.keras; publish: python -m emotion_core.publish {a.out} --name NAME")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
