"""Channel pruning: shrink a trained VGG-BN network (zoo.make_vgg_model) to a narrower one.

Every conv layer keeps the `keep` fraction of its output channels that matter most (L1 norm of
the filter times the batch norm's |gamma| / sqrt(var + eps)); the next layer keeps the matching
input channels, and the dense head the matching rows. The batch norm statistics no longer fit
afterwards, so they are recomputed on clean training faces (emotion_core.soup); then the
network is fine-tuned (e.g. distilled from a teacher) with
`python -m emotion_core.train --init-model OUT`.

    python -m emotion_core.prune models/runs/vgg-m/last.keras --keep 0.75 \\
        --data ../shared/data/fer2013/fer2013.csv.gz --out models/runs/vgg-m-p36.keras

FLOPs scale with keep squared: keep 0.75 leaves ~56% of vgg-m's (~2.5-3.5 ms per face with
the TFLite runtime instead of ~5-6).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from itertools import groupby
from pathlib import Path
from typing import Any

import numpy as np

from emotion_core.cli import command_parser, quiet_native_logs
from emotion_core.data import DataError
from emotion_core.fileio import save_keras_atomically
from emotion_core.registry import ModelError


def _layers(model: Any, kind: type) -> list[Any]:
    return [layer for layer in model.layers if isinstance(layer, kind)]


def vgg_layout(model: Any) -> tuple[int, tuple[int, ...]]:
    """(width, convs_per_stage) of a zoo VGG-BN network; ModelError for any other network."""
    from keras import layers

    convs = _layers(model, layers.Conv2D)
    filters = [int(conv.filters) for conv in convs]
    stages = tuple(len(list(group)) for _, group in groupby(filters))
    widths = [f for f, _ in groupby(filters)]
    expected = [widths[0] * 2**i for i in range(len(widths))] if widths else []
    bns = _layers(model, layers.BatchNormalization)
    if not convs or widths != expected or len(bns) != len(convs) + 1:
        raise ModelError(
            "pruning needs a VGG-BN network from the zoo (conv widths w, 2w, 4w, ... each with "
            f"batch norm); this one has conv widths {filters}"
        )
    return widths[0], stages


def prune_vgg(model: Any, keep: float, name: str = "") -> Any:
    """A copy of the VGG-BN `model` with round(keep * width) channels per stage width.

    model: (N, 48, 48, 1) -> (N, C) built by zoo.make_vgg_model (with or without augmentation).
    """
    from keras import layers

    from emotion_core.zoo import make_vgg_model

    if not 0.0 < keep <= 1.0:
        raise ModelError(f"keep must be in (0, 1], got {keep}")
    width, stages = vgg_layout(model)
    new_width = max(1, round(width * keep))
    augment = any(layer.name == "augment" for layer in model.layers)
    shape = tuple(model.input_shape[1:])
    classes = int(model.output_shape[-1])
    pruned = make_vgg_model(
        shape, classes, augment, new_width, stages, name or f"{model.name}-p{new_width}"
    )
    source_convs, target_convs = _layers(model, layers.Conv2D), _layers(pruned, layers.Conv2D)
    source_bns, target_bns = (
        _layers(model, layers.BatchNormalization),
        _layers(pruned, layers.BatchNormalization),
    )
    kept_in = np.arange(shape[-1])
    for conv, bn, new_conv, new_bn in zip(
        source_convs, source_bns, target_convs, target_bns, strict=False
    ):
        kernel = conv.get_weights()[0][:, :, kept_in, :]  # (3, 3, in, out)
        gamma, beta, mean, var = bn.get_weights()
        importance = np.abs(kernel).sum(axis=(0, 1, 2)) * np.abs(gamma) / np.sqrt(var + bn.epsilon)
        n_out = int(new_conv.filters)
        kept_out = np.sort(np.argsort(-importance, kind="stable")[:n_out])
        new_conv.set_weights([kernel[:, :, :, kept_out]])
        new_bn.set_weights([gamma[kept_out], beta[kept_out], mean[kept_out], var[kept_out]])
        kept_in = kept_out
    first_dense, new_first = _layers(model, layers.Dense)[0], _layers(pruned, layers.Dense)[0]
    kernel, *rest = first_dense.get_weights()
    channels = int(source_convs[-1].filters)
    cells = kernel.shape[0] // channels  # flatten order is (h, w, c)
    rows = (np.arange(cells)[:, None] * channels + kept_in[None, :]).reshape(-1)
    new_first.set_weights([kernel[rows], *rest])
    for old, new in zip(
        _layers(model, layers.Dense)[1:], _layers(pruned, layers.Dense)[1:], strict=True
    ):
        new.set_weights(old.get_weights())
    target_bns[-1].set_weights(source_bns[-1].get_weights())
    return pruned


def _accuracy(model: Any, faces: np.ndarray, labels: np.ndarray) -> float:
    from emotion_core.evaluate import predict_all, report_from_probs
    from emotion_core.inference import EmotionClassifier
    from emotion_core.registry import ModelCard

    classifier = EmotionClassifier(model, ModelCard(name=model.name, arch="?"), calibrated=False)
    return float(report_from_probs(predict_all(classifier, faces), labels).accuracy)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m emotion_core.prune` (see the module docstring): prune, recalibrate batch norm,
    save to --out and print the PublicTest accuracy before and after. Returns 0, or 2 after
    printing an error."""
    quiet_native_logs()
    p = command_parser("emotion_core.prune", __doc__)
    p.add_argument("source", type=Path, help="a trained zoo VGG-BN .keras file")
    p.add_argument("--keep", type=float, default=0.75, help="fraction of channels kept")
    p.add_argument("--data", required=True, help="FER-2013 CSV, folder root or .npz pack")
    p.add_argument(
        "--calibration-faces", type=int, default=12800, help="faces for batch norm (0: all)"
    )
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    from emotion_core.data import load_dataset
    from emotion_core.inference import load_keras_model
    from emotion_core.preprocess import preprocess_batch
    from emotion_core.soup import recalibrate_batchnorm, sample_faces

    try:
        source = load_keras_model(a.source)
        pruned = prune_vgg(source, a.keep)
        train = load_dataset(a.data, "Training")
        clean = sample_faces(train.images, a.calibration_faces, a.seed)
        recalibrate_batchnorm(pruned, clean)
        a.out.parent.mkdir(parents=True, exist_ok=True)
        save_keras_atomically(pruned, Path(a.out))
        val = load_dataset(a.data, "PublicTest")
        faces = preprocess_batch(val.images)
        before, after = _accuracy(source, faces, val.labels), _accuracy(pruned, faces, val.labels)
    except (ModelError, DataError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"wrote {a.out}: {pruned.count_params()} params (from {source.count_params()}); "
        f"PublicTest accuracy {before:.4f} -> {after:.4f} before fine-tuning"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
