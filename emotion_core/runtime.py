"""The fast CPU runtime: a registered Keras model exported to TensorFlow Lite, run by XNNPACK.

On these 2-core CPUs a `tf.function` call of fer-fast costs ~3 ms per face, mostly framework
overhead; the same network as a TFLite flatbuffer costs ~0.6 ms with identical outputs (float32,
max difference ~2e-6), and a 5M-parameter VGG ~5-7 ms instead of ~12. Exporting needs the
TensorFlow backend; running needs only the interpreter that ships inside TensorFlow (or the
`ai-edge-litert` package where that is installed instead).

Usage (adds models/<name>.tflite beside the .keras file and records it in the card)::

    python -m emotion_core.runtime export NAME [--data CSV]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from emotion_core.cli import quiet_native_logs
from emotion_core.data import DataError
from emotion_core.fileio import atomic_write_bytes, atomic_write_json
from emotion_core.registry import (
    MODELS_DIR,
    ModelCard,
    ModelError,
    model_path,
    read_card,
    tflite_path,
)

QUANTIZATIONS = ("none", "dynamic")
# NOTE: float32 export must reproduce the Keras outputs; anything larger is a broken export.
FLOAT_TOLERANCE = 1e-4


def _interpreter_class() -> Any:
    try:
        from tensorflow.lite.python.interpreter import Interpreter

        return Interpreter
    except ImportError:
        pass
    try:
        from ai_edge_litert.interpreter import Interpreter  # type: ignore[import-not-found]
    except ImportError as exc:
        raise ModelError("no TFLite interpreter: install tensorflow-cpu or ai-edge-litert") from exc
    return Interpreter


def export_tflite(model: Any, quantize: str = "none") -> bytes:
    """Convert a Keras model ((N, S, S, 1) -> (N, C)) to a TFLite flatbuffer.

    quantize: "none" (float32, same outputs) or "dynamic" (int8 weights, float activations:
    ~4x smaller, ~25% faster for large nets, outputs within ~0.1 and ~0.5% of labels changed).
    Needs the TensorFlow backend; raises ModelError otherwise or when conversion fails.
    """
    if quantize not in QUANTIZATIONS:
        raise ModelError(f"quantize must be one of {', '.join(QUANTIZATIONS)}, not {quantize!r}")
    import keras

    if keras.backend.backend() != "tensorflow":
        raise ModelError(
            f"exporting to TFLite needs KERAS_BACKEND=tensorflow (now {keras.backend.backend()})"
        )
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        try:
            model.export(tmp, format="tf_saved_model", verbose=False)
            converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
            if quantize == "dynamic":
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
            return bytes(converter.convert())
        except Exception as exc:  # the converter raises many types
            raise ModelError(f"TFLite export failed ({type(exc).__name__}: {exc})") from exc


class TFLiteCall:
    """A TFLite model as a function (N, S, S, 1) float32 -> (N, C) float32.

    Faces go through one at a time: the interpreter keeps its (1, S, S, 1) input, since resizing
    it re-plans the graph and batching saves nothing on two cores. Not thread-safe (callers
    lock, as EmotionClassifier does).
    """

    def __init__(
        self, content: bytes, source: str = "<memory>", threads: int | None = None
    ) -> None:
        """Load a .tflite model's bytes (source names it in errors; threads defaults to
        min(CPU count, 4)); raise ModelError when the interpreter rejects them."""
        self.source = source
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TF 2.21: "tf.lite moves to ai-edge-litert"
                self._interp = _interpreter_class()(
                    model_content=content, num_threads=threads or min(os.cpu_count() or 1, 4)
                )
            self._input = self._interp.get_input_details()[0]
            self._output = self._interp.get_output_details()[0]
            shape = list(self._input["shape"])
            if len(shape) != 4 or shape[0] != 1:
                self._interp.resize_tensor_input(self._input["index"], [1, *shape[1:]])
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError, IndexError) as exc:
            raise ModelError(f"{source}: not a usable TFLite model ({exc})") from exc
        self.input_shape: tuple[int, ...] = tuple(int(d) for d in self._input["shape"][1:])
        self.num_outputs = int(self._output["shape"][-1])

    @classmethod
    def from_file(cls, path: Path, threads: int | None = None) -> TFLiteCall:
        """Load a .tflite file; raise ModelError naming it when missing or unreadable."""
        try:
            content = Path(path).read_bytes()
        except OSError as exc:
            raise ModelError(f"{path}: cannot read TFLite model ({exc})") from exc
        return cls(content, str(path), threads)

    def __call__(self, faces: np.ndarray) -> np.ndarray:
        """faces (N, S, S, 1) float32 -> the model's outputs (N, C) float32, one face per
        interpreter call."""
        out = np.empty((len(faces), self.num_outputs), np.float32)
        index, result = self._input["index"], self._output["index"]
        for i in range(len(faces)):
            self._interp.set_tensor(index, faces[i : i + 1])
            self._interp.invoke()
            out[i] = self._interp.get_tensor(result)[0]
        return out


# NOTE: the single-face median is what the live path pays; timings on shared VMs drift by
# +-30% between hours, so `python -m emotion_core.bench models` re-times all models together.
SPEED_WHEN_EXPORTED = "median of 200 single-face calls when the runtime was added"
SPEED_WHEN_PUBLISHED = "median of 200 single-face calls when published"


def call_times_ms(call: Callable[[np.ndarray], Any], x: np.ndarray, repeats: int) -> np.ndarray:
    """Wall milliseconds of `repeats` calls call(x), one per call (no warm-up)."""
    times = np.empty(repeats)
    for i in range(repeats):
        start = time.perf_counter()
        call(x)
        times[i] = time.perf_counter() - start
    return times * 1000.0


def median_ms_per_face(call: Any, size: int = 48, repeats: int = 200) -> float:
    """Median wall ms of one (1, size, size, 1) face through `call` after a warm-up."""
    face = np.random.default_rng(1).random((1, size, size, 1), dtype=np.float32)
    call_times_ms(call, face, 20)
    return float(np.median(call_times_ms(call, face, repeats)))


def cpu_description() -> str:
    """This machine's CPU for a speed figure, e.g. 'AMD EPYC, 2 cores'."""
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            names = (ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name"))
            model = next(names, "")
    except OSError:
        pass
    return f"{model or platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def speed_note(how: str) -> str:
    """What a card's cpu_ms_per_face records: today, this CPU and `how` it was timed."""
    return f"{time.strftime('%Y-%m-%d')}, {cpu_description()}: {how}"


def max_output_difference(model: Any, call: TFLiteCall, faces: np.ndarray) -> float:
    """Largest |keras - tflite| probability over faces (N, S, S, 1)."""
    from emotion_core.inference import compile_call

    keras_call = compile_call(model)
    diff = 0.0
    for start in range(0, len(faces), 256):
        batch = faces[start : start + 256]
        diff = max(diff, float(np.abs(keras_call(batch) - call(batch)).max()))
    return diff


def checked_float_export(
    model: Any, probe: np.ndarray | None = None, source: str = "exported model"
) -> tuple[TFLiteCall, bytes, float]:
    """Float32 TFLite export checked against the Keras outputs on probe (N, S, S, 1) faces
    (default: 64 random images): the call, the bytes and the largest difference seen.
    Raises ModelError when the difference exceeds FLOAT_TOLERANCE."""
    content = export_tflite(model)
    call = TFLiteCall(content, source)
    if probe is None:
        size = int(model.input_shape[1])
        probe = np.random.default_rng(0).random((64, size, size, 1), dtype=np.float32)
    diff = max_output_difference(model, call, probe)
    if diff > FLOAT_TOLERANCE:
        raise ModelError(f"{source}: the TFLite export changes outputs by {diff:.2g}")
    return call, content, diff


def add_runtime(
    name: str, probe: np.ndarray | None = None, models_dir: Path | None = None
) -> tuple[ModelCard, float]:
    """Export a registered model to models/<name>.tflite (float32, checked on probe faces, see
    checked_float_export) and record it in its card. A quantized runtime is chosen when
    publishing instead, where it is evaluated: the card's accuracy is the Keras model's.
    Returns the new card and the largest output difference seen.
    """
    from emotion_core.inference import check_model_matches_card, load_keras_model

    models_dir = models_dir or MODELS_DIR
    card = read_card(name, models_dir)
    keras_file = model_path(name, models_dir)
    model = load_keras_model(keras_file)
    check_model_matches_card(model, card, keras_file)
    call, content, diff = checked_float_export(model, probe, f"{name}.tflite")
    atomic_write_bytes(tflite_path(name, models_dir), content)
    new_card = replace(
        card,
        runtime="tflite",
        cpu_ms_per_face=round(median_ms_per_face(call, card.input_size), 2),
        cpu_ms_per_face_keras=card.cpu_ms_per_face_keras or card.cpu_ms_per_face,
        cpu_ms_measured=speed_note(SPEED_WHEN_EXPORTED),
    )
    atomic_write_json(models_dir / f"{name}.json", new_card.to_dict())
    return new_card, diff


def _probe_faces(data: str | None, size: int) -> tuple[np.ndarray | None, str]:
    if not data:
        return None, "64 random images"
    from emotion_core.data import load_dataset
    from emotion_core.preprocess import preprocess_batch

    val = load_dataset(data, "PublicTest")
    return preprocess_batch(val.images, size), f"{len(val)} PublicTest faces"


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m emotion_core.runtime export NAME [--data D]`: add_runtime, then print the
    card's speeds and the largest output difference. Returns 0, or 2 after printing an error."""
    quiet_native_logs()
    p = argparse.ArgumentParser(
        prog="python -m emotion_core.runtime",
        description="Add a TFLite runtime (float32, same outputs) to a registered model.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    export = sub.add_parser("export", help="write models/<name>.tflite and update its card")
    export.add_argument("name")
    export.add_argument("--data", help="check the export on this dataset's PublicTest faces")
    a = p.parse_args(argv)
    try:
        size = read_card(a.name).input_size
        probe, what = _probe_faces(a.data, size)
        card, diff = add_runtime(a.name, probe=probe)
    except (ModelError, DataError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"model={card.name} runtime=tflite checked_on={what!r} max_diff={diff:.2g} "
        f"ms_per_face={card.cpu_ms_per_face} keras_ms_per_face={card.cpu_ms_per_face_keras}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
