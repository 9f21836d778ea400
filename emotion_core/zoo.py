"""The model zoo: backend-agnostic Keras 3 networks for 48x48x1 faces -> 7-way softmax.

Every builder has the signature `make_model(input_shape, num_classes, augment=True)`. Augmentation
is made of Keras layers inside the network (active only in training), so it runs on any backend
and the saved `.keras` file is the whole thing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
from keras import layers

from emotion_core.classes import NUM_CLASSES

DEFAULT_ARCH = "fer-fast"
INPUT_SHAPE: tuple[int, int, int] = (48, 48, 1)


@keras.saving.register_keras_serializable(package="emotion_core")
class FaceAugment(layers.Layer):
    """Training-only augmentation written in keras.ops so it JIT-compiles on every backend.

    Keras' RandomRotation/Translation/Zoom are not JIT-compatible (supports_jit=False), which
    silently turns off compilation of the whole train step; this layer does the same work:
    horizontal flip, rotation (+-rotation_deg), shift (+-shift of size), zoom (+-zoom) and
    random erasing (probability erase_p, 2-15% of the area). Input/output (B, H, W, C) in [0, 1].
    """

    def __init__(
        self,
        rotation_deg: float = 10.0,
        shift: float = 0.1,
        zoom: float = 0.1,
        erase_p: float = 0.5,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.rotation_deg, self.shift, self.zoom, self.erase_p = rotation_deg, shift, zoom, erase_p
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def _uniform(self, shape: tuple[Any, ...], low: float = 0.0, high: float = 1.0) -> Any:
        return keras.random.uniform(shape, low, high, seed=self.seed_generator)

    def call(self, images: Any, training: bool | None = None) -> Any:
        if not training:
            return images
        ops = keras.ops
        shape = ops.shape(images)
        batch, height, width = shape[0], shape[1], shape[2]
        flip = self._uniform((batch, 1, 1, 1)) < 0.5
        images = ops.where(flip, ops.flip(images, axis=2), images)
        # Affine: input = A @ output + b, A = R(theta) / scale, about the image centre.
        theta = self._uniform((batch,), -1.0, 1.0) * (self.rotation_deg * 3.14159265 / 180.0)
        scale = 1.0 + self._uniform((batch,), -self.zoom, self.zoom)
        h, w = ops.cast(height, "float32"), ops.cast(width, "float32")
        tx = self._uniform((batch,), -self.shift, self.shift) * w
        ty = self._uniform((batch,), -self.shift, self.shift) * h
        cos, sin = ops.cos(theta) / scale, ops.sin(theta) / scale
        cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
        a2 = cx - cos * cx + sin * cy + tx
        b2 = cy - sin * cx - cos * cy + ty
        zeros = ops.zeros_like(cos)
        transform = ops.stack([cos, -sin, a2, sin, cos, b2, zeros, zeros], axis=1)
        images = ops.image.affine_transform(
            images, transform, interpolation="bilinear", fill_mode="nearest"
        )
        # Random erasing: one rectangle of random area/aspect filled with a random grey.
        area = self._uniform((batch,), 0.02, 0.15) * h * w
        aspect = ops.exp(self._uniform((batch,), -1.2, 1.2))
        eh = ops.minimum(ops.sqrt(area * aspect), h)
        ew = ops.minimum(ops.sqrt(area / aspect), w)
        y0 = self._uniform((batch,)) * (h - eh)
        x0 = self._uniform((batch,)) * (w - ew)
        ys = ops.reshape(ops.arange(height, dtype="float32"), (1, -1, 1, 1))
        xs = ops.reshape(ops.arange(width, dtype="float32"), (1, 1, -1, 1))

        def col(v: Any) -> Any:
            return ops.reshape(v, (-1, 1, 1, 1))

        inside = (ys >= col(y0)) & (ys < col(y0 + eh)) & (xs >= col(x0)) & (xs < col(x0 + ew))
        erase = inside & (self._uniform((batch, 1, 1, 1)) < self.erase_p)
        fill = ops.ones_like(images) * self._uniform((batch, 1, 1, 1))
        return ops.where(erase, fill, images)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return super().get_config() | {
            "rotation_deg": self.rotation_deg,
            "shift": self.shift,
            "zoom": self.zoom,
            "erase_p": self.erase_p,
            "seed": self.seed,
        }


def make_augmentation(strength: float = 1.0, erase_p: float = 0.5) -> layers.Layer:
    """Flip, ~10 degree rotation, 10% shift and zoom, random erasing (training only)."""
    return FaceAugment(10.0 * strength, 0.1 * strength, 0.1 * strength, erase_p, name="augment")


def make_seed_model(
    input_shape: tuple[int, int, int] = INPUT_SHAPE,
    num_classes: int = NUM_CLASSES,
    augment: bool = True,
) -> keras.Model:
    """The original app's network (baseline): Conv 128-256-512-1024 (3x3 ReLU, MaxPool 2,
    Dropout 0.4), Dense 512-256-128, softmax. ~11M params."""
    inputs = keras.Input(shape=input_shape, name="face")
    x = make_augmentation()(inputs) if augment else inputs
    for filters in (128, 256, 512, 1024):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D(2)(x)
        x = layers.Dropout(0.4)(x)
    x = layers.Flatten()(x)
    for units in (512, 256, 128):
        x = layers.Dense(units, activation="relu")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probs", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="seed")


def _conv_bn_relu(x: Any, filters: int, folded: bool = False) -> Any:
    if folded:  # batch norm folded into the convolution (inference form, see fold_batchnorm)
        return layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    return layers.Activation("relu")(x)


def _dense_head(x: Any, num_classes: int, dropout: float, folded: bool = False) -> Any:
    """Flatten -> (dropout) Dense 256 BN ReLU (dropout) -> softmax (folded: no BN/dropout)."""
    x = layers.Flatten()(x)
    if folded:
        x = layers.Dense(256, activation="relu")(x)
    else:
        x = layers.Dropout(dropout)(x)
        x = layers.Dense(256, use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
        x = layers.Dropout(dropout)(x)
    return layers.Dense(num_classes, activation="softmax", name="probs", dtype="float32")(x)


def make_vgg_model(
    input_shape: tuple[int, int, int] = INPUT_SHAPE,
    num_classes: int = NUM_CLASSES,
    augment: bool = True,
    width: int = 48,
    convs_per_stage: tuple[int, ...] = (2, 2, 2, 2),
    name: str = "vgg",
) -> keras.Model:
    """VGG-style net with batch norm: 4 stages (width, 2w, 4w, 8w) of 3x3 conv-BN-ReLU blocks,
    each followed by MaxPool 2; then Dense 256 + dropout and softmax. 48x48 -> 3x3 features."""
    inputs = keras.Input(shape=input_shape, name="face")
    x = make_augmentation()(inputs) if augment else inputs
    for stage, n_convs in enumerate(convs_per_stage):
        for _ in range(n_convs):
            x = _conv_bn_relu(x, width * 2**stage)
        x = layers.MaxPooling2D(2)(x)
        x = layers.Dropout(0.1)(x)
    return keras.Model(inputs, _dense_head(x, num_classes, dropout=0.5), name=name)


def make_fast_model(
    input_shape: tuple[int, int, int] = INPUT_SHAPE,
    num_classes: int = NUM_CLASSES,
    augment: bool = True,
    stem: int = 16,
    widths: tuple[int, ...] = (32, 64, 128),
    convs_per_stage: tuple[int, ...] = (2, 2, 3),
    name: str = "fer-fast",
    folded: bool = False,
) -> keras.Model:
    """Our CPU-real-time default: a 48x48 stem conv + MaxPool, then VGG stages with batch norm at
    24, 12 and 6 px (~30M multiply-adds, ~0.7M params); Dense 256 head, softmax.

    folded=True builds the inference form (no augmentation, dropout or batch norm layers; the
    batch norm is folded into conv/dense weights by fold_batchnorm): same outputs, ~2x faster.
    """
    inputs = keras.Input(shape=input_shape, name="face")
    # NOTE: a small network underfits FER-2013 under heavy regularisation, so erasing is rarer.
    x = make_augmentation(erase_p=0.25)(inputs) if augment and not folded else inputs
    x = _conv_bn_relu(x, stem, folded)
    x = layers.MaxPooling2D(2)(x)
    for width, n_convs in zip(widths, convs_per_stage, strict=True):
        for _ in range(n_convs):
            x = _conv_bn_relu(x, width, folded)
        x = layers.MaxPooling2D(2)(x)
        if not folded:
            x = layers.Dropout(0.05)(x)
    return keras.Model(inputs, _dense_head(x, num_classes, 0.3, folded), name=name)


def make_tiny_model(
    input_shape: tuple[int, int, int] = INPUT_SHAPE,
    num_classes: int = NUM_CLASSES,
    augment: bool = False,
) -> keras.Model:
    """A very small network for tests and smoke runs (not for real use)."""
    inputs = keras.Input(shape=input_shape, name="face")
    x = make_augmentation()(inputs) if augment else inputs
    x = layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="tiny")


def fold_batchnorm(trained: keras.Model, folded: keras.Model) -> keras.Model:
    """Copy trained weights into the folded (inference) form of the same architecture.

    Each Conv2D/Dense followed by BatchNormalization becomes one layer with
    W' = W * g / sqrt(v + eps) and b' = beta + (b - m) * g / sqrt(v + eps). Returns `folded`.
    """
    import numpy as np

    def weighted(model: keras.Model) -> list[Any]:
        return [
            layer
            for layer in model.layers
            if isinstance(layer, (layers.Conv2D, layers.Dense, layers.BatchNormalization))
        ]

    source, target = (
        weighted(trained),
        [layer for layer in weighted(folded) if not isinstance(layer, layers.BatchNormalization)],
    )
    pairs: list[tuple[Any, Any]] = []
    for layer in source:
        if isinstance(layer, layers.BatchNormalization):
            pairs[-1] = (pairs[-1][0], layer)
        else:
            pairs.append((layer, None))
    if len(pairs) != len(target):
        raise ValueError(f"cannot fold: {len(pairs)} weighted layers vs {len(target)} in target")
    for (layer, bn), out in zip(pairs, target, strict=True):
        weights = layer.get_weights()
        kernel = weights[0]
        bias = weights[1] if len(weights) > 1 else np.zeros(kernel.shape[-1], kernel.dtype)
        if bn is not None:
            gamma, beta, mean, var = bn.get_weights()
            scale = gamma / np.sqrt(var + bn.epsilon)
            kernel = kernel * scale
            bias = beta + (bias - mean) * scale
        out.set_weights([kernel.astype("float32"), bias.astype("float32")])
    return folded


ARCHITECTURES: dict[str, Callable[..., keras.Model]] = {
    "fer-fast": make_fast_model,
    "fer-fast-folded": lambda s=INPUT_SHAPE, n=NUM_CLASSES, augment=False: make_fast_model(
        s, n, False, folded=True, name="fer-fast-folded"
    ),
    "seed": make_seed_model,
    "vgg-s": lambda s=INPUT_SHAPE, n=NUM_CLASSES, augment=True: make_vgg_model(
        s, n, augment, width=32, name="vgg-s"
    ),
    "vgg-s3": lambda s=INPUT_SHAPE, n=NUM_CLASSES, augment=True: make_vgg_model(
        s, n, augment, width=32, convs_per_stage=(2, 2, 3, 3), name="vgg-s3"
    ),
    "vgg-m": lambda s=INPUT_SHAPE, n=NUM_CLASSES, augment=True: make_vgg_model(
        s, n, augment, width=48, convs_per_stage=(2, 2, 3, 3), name="vgg-m"
    ),
    # NOTE: vgg-m at width 40 (3.7M params): ~3.6 ms per face with int8 weights, inside the
    # live budget that vgg-m (4.7-5.8 ms) only touches.
    "vgg-m40": lambda s=INPUT_SHAPE, n=NUM_CLASSES, augment=True: make_vgg_model(
        s, n, augment, width=40, convs_per_stage=(2, 2, 3, 3), name="vgg-m40"
    ),
    "vgg-l": lambda s=INPUT_SHAPE, n=NUM_CLASSES, augment=True: make_vgg_model(
        s, n, augment, width=64, convs_per_stage=(2, 2, 3, 3), name="vgg-l"
    ),
    "tiny": make_tiny_model,
}


def make_model(
    input_shape: tuple[int, int, int] = INPUT_SHAPE,
    num_classes: int = NUM_CLASSES,
    arch: str = DEFAULT_ARCH,
    augment: bool = True,
) -> keras.Model:
    """Build a zoo architecture by name (see ARCHITECTURES)."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}: choose from {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[arch](input_shape, num_classes, augment=augment)
