"""Loading a registered model and classifying preprocessed faces fast.

`model.predict` costs ~40 ms per call on CPU; a compiled call (tf.function or jax.jit, chosen by
the Keras backend) costs ~1-3 ms for one face; the model's TFLite file, when the card names that
runtime (emotion_core.runtime), ~0.6 ms. EMOTION_RUNTIME=keras forces the Keras call.
"""

from __future__ import annotations

import logging
import os
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from emotion_core.calibration import apply_temperature
from emotion_core.registry import (
    MODELS_DIR,
    ModelCard,
    ModelError,
    default_model_name,
    model_path,
    read_card,
    tflite_path,
)

log = logging.getLogger(__name__)


class Classifier(Protocol):
    """Anything that turns (N, S, S, 1) float32 faces into (N, C) probabilities (S: the input
    size, 48 unless the classifier's card says otherwise; C = len(classes))."""

    classes: tuple[str, ...]

    def predict(self, faces: np.ndarray) -> np.ndarray:
        """faces (N, S, S, 1) float32 in [0, 1] -> probabilities (N, C), one row per face."""
        ...


def softmax_with_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Re-scale softmax outputs (N, C) as if their logits were divided by temperature."""
    if temperature == 1.0:
        return probs
    return apply_temperature(probs, temperature)


def load_keras_model(path: Path) -> Any:
    """Load a .keras file in safe mode; raise ModelError naming the file on any failure."""
    import keras

    import emotion_core.zoo  # noqa: F401  registers FaceAugment for checkpoints that contain it

    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: model file not found")
    try:
        with open(path, "rb") as fh:
            is_zip = zipfile.is_zipfile(fh)
    except OSError as exc:  # a folder named x.keras, no permission
        raise ModelError(f"{path}: cannot read the model file ({exc.strerror or exc})") from exc
    if not is_zip:  # Keras would say "File not found" about a file that is there
        raise ModelError(f"{path}: not a .keras model file (not a zip archive)")
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # keras raises many types for a bad file
        raise ModelError(
            f"{path}: not a loadable Keras model ({type(exc).__name__}: {exc})"
        ) from exc


def check_model_matches_card(model: Any, card: ModelCard, path: Path | str) -> None:
    """Raise ModelError when the network's input or output shape disagrees with its card (or
    it has several inputs or outputs: Keras then gives a list of shapes)."""
    in_shape, out_shape = model.input_shape, model.output_shape
    if not all(isinstance(d, int | None) for d in (*in_shape, *out_shape)):
        raise ModelError(
            f"{path}: expected one input and one output, not {in_shape} -> {out_shape}"
        )
    check_shapes_match_card(tuple(in_shape[1:]), int(out_shape[-1]), card, path)


def check_shapes_match_card(
    in_shape: tuple[int, ...], out: int, card: ModelCard, path: Path | str
) -> None:
    """Raise ModelError naming `path` when one face's input shape (S, S, 1) or the number of
    outputs (C) disagrees with the card (a Keras model or its TFLite file)."""
    want_in = (card.input_size, card.input_size, 1)
    if in_shape != want_in:
        raise ModelError(f"{path}: input shape {in_shape} but the card says {want_in}")
    if out != len(card.classes):
        raise ModelError(f"{path}: {out} outputs but the card lists {len(card.classes)} classes")


def compile_call(model: Any) -> Callable[[np.ndarray], np.ndarray]:
    """A fast inference function for the current Keras backend: (N,H,W,1) -> (N,C) numpy."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        shape = (None, *model.input_shape[1:])
        fn = tf.function(
            lambda x: model(x, training=False),
            input_signature=[tf.TensorSpec(shape, tf.float32)],
            reduce_retracing=True,
        )
        return lambda x: np.asarray(fn(x))
    if backend == "jax":
        import jax

        jitted = jax.jit(lambda x: model(x, training=False))
        return lambda x: np.asarray(jitted(x))
    return lambda x: np.asarray(keras.ops.convert_to_numpy(model(x, training=False)))


class EmotionClassifier:
    """A registered model ready for inference; thread-safe; applies the card's temperature.

    call: a ready inference function (e.g. runtime.TFLiteCall); by default the model's compiled
    Keras call. runtime: what runs it ("keras", "tflite", ...), shown to the user;
    runtime_problem: why the card's runtime is not the one in use ("" when it is).
    """

    def __init__(
        self,
        model: Any,
        card: ModelCard,
        calibrated: bool = True,
        call: Callable[[np.ndarray], np.ndarray] | None = None,
        runtime: str = "keras",
        runtime_problem: str = "",
    ) -> None:
        self.model = model
        self.card = card
        self.classes: tuple[str, ...] = tuple(card.classes)
        self.name = card.name
        self.temperature = card.temperature if calibrated else 1.0
        self.runtime = runtime
        self.runtime_problem = runtime_problem
        self._call = call if call is not None else compile_call(model)
        # NOTE: the webrtc callback runs in a worker thread while the page (and video analysis)
        # may classify too; TF functions are thread-safe but tracing is not, so calls are locked.
        self._lock = threading.Lock()

    def predict(self, faces: np.ndarray) -> np.ndarray:
        """faces (N, S, S, 1) float32 in [0, 1] -> probabilities (N, C) float64 summing to 1."""
        if len(faces) == 0:
            return np.zeros((0, len(self.classes)))
        with self._lock:
            probs = self._call(np.ascontiguousarray(faces, dtype=np.float32))
        probs = np.asarray(probs, dtype=np.float64)
        probs = softmax_with_temperature(probs, self.temperature)
        return probs / probs.sum(axis=1, keepdims=True)

    def predict_tta(self, faces: np.ndarray) -> np.ndarray:
        """Test-time augmentation: mean of the face and its mirror image. (N, C)."""
        flipped = faces[:, :, ::-1, :]
        return (self.predict(faces) + self.predict(np.ascontiguousarray(flipped))) / 2.0


def load_classifier(
    name: str | None = None,
    models_dir: Path | None = None,
    calibrated: bool = True,
    keras_only: bool = False,
) -> EmotionClassifier:
    """Load a registered model (the default when name is None) with its card checked, on the
    card's runtime (keras_only: on the Keras call, e.g. to compare speeds)."""
    models_dir = models_dir or MODELS_DIR
    name = name or default_model_name(models_dir)
    card = read_card(name, models_dir)
    fast, problem = (None, "") if keras_only else _load_runtime(card, models_dir)
    if fast is not None:
        return EmotionClassifier(None, card, calibrated, call=fast, runtime=card.runtime)
    path = model_path(name, models_dir)
    model = load_keras_model(path)
    check_model_matches_card(model, card, path)
    return EmotionClassifier(model, card, calibrated=calibrated, runtime_problem=problem)


RUNTIME_ENV = "EMOTION_RUNTIME"
_warned_runtime_values: set[str] = set()


def forced_runtime() -> str:
    """The runtime EMOTION_RUNTIME forces: "keras" (any letter case), or "" when it is unset,
    empty or not understood; an unknown value is logged once, naming the accepted ones."""
    raw = os.environ.get(RUNTIME_ENV, "")
    value = raw.strip().lower()
    if value in ("", "keras"):
        return value
    if raw not in _warned_runtime_values:
        _warned_runtime_values.add(raw)
        log.warning(
            "%s=%r is not understood and is ignored: set it to keras (run every model's Keras "
            "network) or leave it unset (each card's runtime)",
            RUNTIME_ENV,
            raw,
        )
    return ""


def runs_on_keras(card: ModelCard) -> bool:
    """Whether the app runs the card's Keras network: its runtime says so, or
    EMOTION_RUNTIME=keras forces it (a broken .tflite file also falls back, see _load_runtime)."""
    forced = forced_runtime() == "keras"  # first: an unknown value is reported whatever the card
    return forced or not card.runtime.startswith("tflite")


def ms_per_face_in_use(card: ModelCard) -> tuple[str, float | None]:
    """The runtime the app runs `card` on ("keras" when runs_on_keras) and that runtime's median
    CPU ms per face from the card (None when not measured)."""
    runtime = "keras" if runs_on_keras(card) else card.runtime
    ms = card.cpu_ms_per_face if runtime == card.runtime else card.cpu_ms_per_face_keras
    return runtime, ms


def _load_runtime(
    card: ModelCard, models_dir: Path
) -> tuple[Callable[[np.ndarray], np.ndarray] | None, str]:
    """The card's TFLite call, or None for the Keras one (card says keras, EMOTION_RUNTIME=keras,
    or the .tflite file is missing or broken: then also the problem, logged, since the .keras
    file still works)."""
    if runs_on_keras(card):
        return None, ""
    from emotion_core.runtime import TFLiteCall

    try:
        call = TFLiteCall.from_file(tflite_path(card.name, models_dir))
        check_shapes_match_card(call.input_shape, call.num_outputs, card, call.source)
    except ModelError as exc:
        log.warning("%s; using the Keras model instead", exc)
        return None, str(exc)
    return call, ""


def load_classifier_from_file(path: Path, card: ModelCard | None = None) -> EmotionClassifier:
    """Load any .keras file (e.g. a training checkpoint); a card is inferred when not given."""
    model = load_keras_model(path)
    if card is None:
        card = ModelCard(name=Path(path).stem, arch="unknown", input_size=model.input_shape[1])
    check_model_matches_card(model, card, Path(path))
    return EmotionClassifier(model, card)
