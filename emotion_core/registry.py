"""The model registry in models/: a .keras file plus a JSON card per model, one default.

Layout::

    models/<name>.keras     the network (input (48, 48, 1) float32 in [0, 1], softmax over 7)
    models/<name>.tflite    optional: the same network for the fast CPU runtime (card.runtime)
    models/<name>.json      its card (see ModelCard)
    models/registry.json    {"default": "<name>"}
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import zipfile
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from emotion_core.classes import CLASSES
from emotion_core.fileio import (
    FileId,
    JsonFileError,
    atomic_write_bytes,
    atomic_write_json,
    durable_replace,
    file_id,
    load_json_object,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = Path(os.environ.get("EMOTION_MODELS_DIR", PROJECT_ROOT / "models"))
REGISTRY_FILE = "registry.json"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")


def models_dir() -> Path:
    """The models folder now: $EMOTION_MODELS_DIR read at call time (so tests and deployments
    can point elsewhere), else MODELS_DIR (fixed at import; functions taking a models_dir
    argument default to MODELS_DIR)."""
    env = os.environ.get("EMOTION_MODELS_DIR")
    return Path(env) if env else MODELS_DIR


class ModelError(Exception):
    """A model file or card is missing, unreadable or inconsistent (message names the file)."""


@dataclass(frozen=True)
class ModelCard:
    """What a model is, how it was made and how well it does."""

    name: str
    arch: str
    classes: tuple[str, ...] = CLASSES
    input_size: int = 48
    preprocessing: str = "gray 48x48, float32 in [0,1] (emotion_core.preprocess.preprocess)"
    training_data: str = ""
    training_split: str = "Training"
    validation_split: str = "PublicTest"
    epochs: int = 0
    val_accuracy: float | None = None
    val_macro_f1: float | None = None
    val_accuracy_tta: float | None = None
    val_macro_f1_tta: float | None = None
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)
    temperature: float = 1.0
    ece_before: float | None = None
    ece_after: float | None = None
    params: int = 0
    cpu_ms_per_face: float | None = None  # measured on `runtime`, one face, median
    runtime: str = "keras"  # keras, tflite (float32: same outputs) or tflite-dynamic (int8 weights)
    cpu_ms_per_face_keras: float | None = None  # the Keras tf.function call, for comparison
    cpu_ms_measured: str = ""  # when, where and how cpu_ms_per_face was measured ("": unknown)
    hardware: str = ""
    training_time_s: float | None = None
    date: str = ""
    command: str = ""
    notes: str = ""

    @staticmethod
    def from_dict(data: dict[str, Any]) -> ModelCard:
        """Build a card from JSON data, ignoring unknown keys; ModelError for a field of the
        wrong type (a number as text, say), which pages would otherwise fail on later."""
        known = {f for f in ModelCard.__dataclass_fields__}
        kwargs = {k: v for k, v in data.items() if k in known}
        if "name" not in kwargs or "arch" not in kwargs:
            raise ModelError("model card lacks 'name' or 'arch'")
        for key, value in kwargs.items():
            problem = _field_problem(key, value)
            if problem:
                raise ModelError(f"model card field {key!r}: {problem}")
        if "classes" in kwargs:
            kwargs["classes"] = tuple(kwargs["classes"])
        return ModelCard(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        data = asdict(self)
        data["classes"] = list(self.classes)
        return data


_NUMBERS = {"input_size", "epochs", "temperature", "params"}
_OPTIONAL_NUMBERS = {
    "val_accuracy",
    "val_macro_f1",
    "val_accuracy_tta",
    "val_macro_f1_tta",
    "ece_before",
    "ece_after",
    "cpu_ms_per_face",
    "cpu_ms_per_face_keras",
    "training_time_s",
}


def _field_problem(key: str, value: Any) -> str:
    """Why a card field's JSON value is unusable ("" when it is fine)."""
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if key in _NUMBERS or key in _OPTIONAL_NUMBERS:
        if value is None and key in _OPTIONAL_NUMBERS:
            return ""
        if not (is_number and math.isfinite(value)):
            return f"{value!r} is not a number"
        if key in ("temperature", "input_size") and value <= 0:  # would invert or break output
            return f"must be positive, not {value!r}"
        return ""
    if key == "classes":
        ok = isinstance(value, list) and all(isinstance(c, str) for c in value)
        return "" if ok else "must be a list of class names"
    if key == "per_class":
        return "" if isinstance(value, dict) else "must be an object"
    return "" if isinstance(value, str) else f"{value!r} is not text"


def validate_name(name: str) -> str:
    """Return name if it is a safe model name (letters, digits, _ . -) whose card would not
    replace registry.json, else raise ModelError."""
    if not _NAME_RE.match(name) or ".." in name:
        raise ModelError(f"invalid model name {name!r}: use letters, digits, '_', '.', '-'")
    if name.lower() == Path(REGISTRY_FILE).stem:  # any case: some file systems ignore it
        raise ModelError(
            f"invalid model name {name!r}: reserved (its card would replace {REGISTRY_FILE}); "
            "choose another name"
        )
    return name


def card_hash(card: ModelCard) -> str:
    """A short stable hash of the card (recorded in sessions so results are traceable)."""
    blob = json.dumps(card.to_dict(), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def read_card(name: str, models_dir: Path | None = None) -> ModelCard:
    """Read models/<name>.json."""
    path = (models_dir or MODELS_DIR) / f"{validate_name(name)}.json"
    return _card_from_data(_card_data(path), path, name)


def _card_data(path: Path) -> dict[str, Any]:
    """The JSON object in a card file; ModelError naming the file when it is missing or bad."""
    try:
        return load_json_object(path)
    except JsonFileError as err:
        if err.reason == "missing":
            raise ModelError(f"{path}: model card not found") from err
        if err.reason == "invalid":
            raise ModelError(f"{path}: model card is not valid JSON ({err.detail})") from err
        if err.reason == "unreadable":  # e.g. a folder of that name
            raise ModelError(f"{path}: model card unreadable ({err.detail})") from err
        raise ModelError(f"{path}: model card must be a JSON object") from err


def _card_from_data(data: dict[str, Any], path: Path, name: str) -> ModelCard:
    """The card in `data` (read from `path`), checked to be named `name` like its file;
    ModelError naming the file otherwise."""
    try:
        card = ModelCard.from_dict(data)
    except (TypeError, ModelError) as exc:
        raise ModelError(f"{path}: {exc}") from exc
    if card.name != name:  # e.g. a renamed file: it would point the app at another model
        raise ModelError(f"{path}: the card is named {card.name!r}, not {name!r} like its file")
    return card


class ModelScan(NamedTuple):
    """What scan_models finds: the usable cards, and a line per card it had to leave out."""

    cards: list[ModelCard]
    problems: list[str]  # "<card path>: <why>", one per card left out


def scan_models(models_dir: Path | None = None) -> ModelScan:
    """Every card in the models folder: those of models with both a card and a .keras file,
    sorted by name, and the problems of the cards left out (unreadable, invalid, misnamed, or
    without their network file), each naming its file."""
    models_dir = models_dir or MODELS_DIR
    cards, problems = [], []
    for path in sorted(models_dir.glob("*.json")):
        if path.name == REGISTRY_FILE or path.name.startswith("."):  # e.g. .activation.json
            continue
        network = path.with_suffix(".keras")
        try:
            card = read_card(path.stem, models_dir)
        except ModelError as exc:
            problems.append(str(exc) if str(path) in str(exc) else f"{path}: {exc}")
            continue
        if not network.exists():
            problems.append(f"{path}: its network file {network.name} is missing")
            continue
        cards.append(card)
    return ModelScan(cards, problems)


def list_models(models_dir: Path | None = None) -> list[ModelCard]:
    """All models that have both a card and a .keras file, sorted by name (a card that cannot
    be used is left out: see scan_models and card_problems for why)."""
    return scan_models(models_dir).cards


def card_problems(models_dir: Path | None = None) -> list[str]:
    """Why each card that list_models leaves out is left out ("<card path>: <why>")."""
    return scan_models(models_dir).problems


def default_model_name(models_dir: Path | None = None) -> str:
    """The name of the model the app uses."""
    models_dir = models_dir or MODELS_DIR
    path = models_dir / REGISTRY_FILE
    try:
        data = load_json_object(path)
    except JsonFileError as err:
        if err.reason == "missing":
            raise ModelError(f"{path}: no registry (train a model or restore models/)") from err
        if err.reason == "unreadable":
            raise ModelError(f"{path}: registry unreadable ({err.detail})") from err
        detail = err.detail or "not a JSON object"
        raise ModelError(f"{path}: registry is corrupt ({detail})") from err
    if "default" not in data:
        raise ModelError(f"{path}: registry is corrupt (no 'default')")
    return validate_name(str(data["default"]))


def default_card(models_dir: Path | None = None, require_network: bool = True) -> ModelCard:
    """The default model's card, with its network file checked to exist (require_network);
    ModelError saying what is wrong and how to get a usable default model."""
    models_dir = models_dir or MODELS_DIR
    try:
        card = read_card(default_model_name(models_dir), models_dir)
        network = model_path(card.name, models_dir)
        if require_network and not network.is_file():
            raise ModelError(
                f"{network}: missing (the default model's card is there, its network file is not)"
            )
        return card
    except ModelError as exc:
        others = [c.name for c in list_models(models_dir)]  # list_models skips bad cards
        how = (
            f"{len(others)} registered model(s) ({', '.join(others[:5])}): make one the default "
            "on the Training page (Registered models)."
            if others
            else "Train one (`python -m emotion_core.train`) or activate one on the Training page."
        )
        raise ModelError(f"{exc}\n\n{how}") from exc


def registry_version(models_dir: Path | None = None) -> float:
    """mtime of registry.json: changes when the default model changes (pages poll this)."""
    models_dir = models_dir or MODELS_DIR
    try:
        return (models_dir / REGISTRY_FILE).stat().st_mtime
    except FileNotFoundError:
        return 0.0


def set_default(name: str, models_dir: Path | None = None, *, verify: bool = False) -> None:
    """Make an already registered model the default (atomic). verify: first check that its
    network is a usable .keras file matching its card (check_network), as a choice among the
    registered models must (register_model's caller has just built and checked the network);
    ModelError naming the file otherwise, with registry.json unchanged."""
    models_dir = models_dir or MODELS_DIR
    validate_name(name)
    if not (models_dir / f"{name}.keras").exists():
        raise ModelError(f"{models_dir / name}.keras: no such model")
    card = read_card(name, models_dir)
    if verify:
        check_network(card, models_dir)
    atomic_write_json(models_dir / REGISTRY_FILE, {"default": name})


# ---------------------------------------------------------------- a network's shapes

# Layers whose output has the shape of their input (the last layers of a classifier).
_SAME_SHAPE_LAYERS = frozenset(
    {"Activation", "Softmax", "Dropout", "Identity", "ReLU", "LeakyReLU", "ELU", "PReLU",
     "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization"}
)  # fmt: skip
Shape = tuple[int | None, ...]


def network_shapes(path: Path | str) -> tuple[Shape, int]:
    """(the input shape of one face, the number of outputs) of the .keras file at `path`; read
    from the config.json in its archive (no Keras) when it says plainly, else from the network
    loaded with Keras. ModelError naming the file when it is missing, not a complete .keras
    archive (its bytes are checked), or not a network of one input and one output."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            bad = archive.testzip()  # the CRC of every member: a damaged copy fails here
            config = json.loads(archive.read("config.json")) if "config.json" in names else None
    except FileNotFoundError as exc:
        raise ModelError(f"{path}: model file not found") from exc
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise ModelError(f"{path}: not a .keras model file (not a zip archive)") from exc
    except OSError as exc:  # a folder named x.keras, no permission
        raise ModelError(f"{path}: cannot read the model file ({exc.strerror or exc})") from exc
    except (ValueError, RecursionError) as exc:  # config.json is not JSON
        raise ModelError(f"{path}: not a .keras model file (bad config.json: {exc})") from exc
    if bad is not None:
        raise ModelError(f"{path}: damaged .keras file ({bad} fails its checksum)")
    if not isinstance(config, dict) or not any(n.startswith("model.weights") for n in names):
        raise ModelError(f"{path}: not a .keras model file (no network configuration or weights)")
    shapes = _config_shapes(config)
    if shapes is not None:
        return shapes
    from emotion_core.inference import load_keras_model  # an unusual graph: ask Keras

    model = load_keras_model(path)
    in_shape, out_shape = model.input_shape, model.output_shape
    if not all(isinstance(d, int | None) for d in (*in_shape, *out_shape)):
        raise ModelError(
            f"{path}: expected one input and one output, not {in_shape} -> {out_shape}"
        )
    return tuple(in_shape[1:]), int(out_shape[-1])


def _config_shapes(config: dict[str, Any]) -> tuple[Shape, int] | None:
    """(input shape, outputs) of a Functional or Sequential network's config.json, or None
    when it does not say them plainly (several inputs or outputs, an unknown last layer)."""
    inner = config.get("config")
    layers = inner.get("layers") if isinstance(inner, dict) else None
    if not isinstance(inner, dict) or not isinstance(layers, list):
        return None
    if not all(isinstance(layer, dict) for layer in layers) or not layers:
        return None
    if config.get("class_name") == "Sequential":
        first = layers[0]
        if first.get("class_name") == "InputLayer":
            in_shape = _batch_shape(first.get("config"))
        else:
            build = config.get("build_config")
            in_shape = _shape(build.get("input_shape")) if isinstance(build, dict) else None
        outputs = _sequential_units(layers)
    elif config.get("class_name") == "Functional":
        by_name = {layer.get("name"): layer for layer in layers}
        inputs, outs = (
            _single_node(inner.get("input_layers")),
            _single_node(inner.get("output_layers")),
        )
        if inputs is None or outs is None or inputs not in by_name:
            return None
        in_shape = _batch_shape(by_name[inputs].get("config"))
        outputs = _functional_units(by_name, outs)
    else:
        return None
    if in_shape is None or len(in_shape) < 2 or outputs is None:
        return None
    return in_shape[1:], outputs


def _single_node(nodes: Any) -> str | None:
    """The layer name of a single input or output ["name", 0, 0] (or [["name", 0, 0]])."""
    if isinstance(nodes, list) and len(nodes) == 1 and isinstance(nodes[0], list):
        nodes = nodes[0]
    if isinstance(nodes, list) and nodes and isinstance(nodes[0], str):
        return nodes[0]
    return None


def _shape(value: Any) -> Shape | None:
    ok = isinstance(value, list) and all(
        d is None or (isinstance(d, int) and not isinstance(d, bool)) for d in value
    )
    return tuple(value) if ok else None


def _batch_shape(layer_config: Any) -> Shape | None:
    if not isinstance(layer_config, dict):
        return None
    return _shape(layer_config.get("batch_shape", layer_config.get("batch_input_shape")))


def _units(layer: dict[str, Any]) -> int | None:
    units = layer.get("config", {}).get("units") if layer.get("class_name") == "Dense" else None
    return units if isinstance(units, int) and not isinstance(units, bool) else None


def _sequential_units(layers: list[dict[str, Any]]) -> int | None:
    for layer in reversed(layers):
        if layer.get("class_name") == "Dense":
            return _units(layer)
        if layer.get("class_name") not in _SAME_SHAPE_LAYERS:
            return None
    return None


def _functional_units(by_name: dict[Any, dict[str, Any]], name: str) -> int | None:
    for _ in range(len(by_name)):  # follows the same-shape layers back to a Dense one
        layer = by_name.get(name)
        if layer is None:
            return None
        if layer.get("class_name") == "Dense":
            return _units(layer)
        if layer.get("class_name") not in _SAME_SHAPE_LAYERS:
            return None
        try:
            (node,) = layer["inbound_nodes"]
            (tensor,) = node["args"]
            name = tensor["config"]["keras_history"][0]
        except (KeyError, TypeError, ValueError, IndexError):
            return None
    return None


def check_network(card: ModelCard, models_dir: Path | None = None) -> None:
    """ModelError naming the file when the network of a registered model (its .keras file) is
    not a usable .keras file or does not match its card: one face of the card's input size in,
    one output per class out."""
    path = model_path(card.name, models_dir)
    in_shape, outputs = network_shapes(path)
    want = (card.input_size, card.input_size, 1)
    if in_shape != want:
        raise ModelError(f"{path}: input shape {in_shape} but the card says {want}")
    if outputs != len(card.classes):
        raise ModelError(
            f"{path}: {outputs} outputs but the card lists {len(card.classes)} classes"
        )


def deflated_copy(source: Path, target: Path) -> None:
    """Copy a .keras file (a zip Keras writes uncompressed) with deflate: ~9% smaller for the
    repository and for the 64 MiB a GPU call carries; Keras loads it the same."""
    try:
        with (
            zipfile.ZipFile(source) as src,
            zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as dst,
        ):
            for info in src.infolist():
                dst.writestr(info.filename, src.read(info.filename))
    except (zipfile.BadZipFile, OSError) as exc:
        target.unlink(missing_ok=True)
        raise ModelError(f"{source}: not a .keras file ({exc})") from exc


def register_model(
    keras_path: Path,
    card: ModelCard,
    models_dir: Path | None = None,
    make_default: bool = False,
    tflite: bytes | None = None,
    written: dict[Path, FileId] | None = None,
) -> Path:
    """Copy a .keras file (and the TFLite bytes of card.runtime, if any) into the registry with
    its card; refuse to overwrite another model. `written` gets the file_id of each file written
    (registry.json included), so a caller undoing a failed publish can tell its own files from
    ones another process wrote since."""
    models_dir = models_dir or MODELS_DIR
    validate_name(card.name)
    target = models_dir / f"{card.name}.keras"
    if target.exists() and target.resolve() != Path(keras_path).resolve():
        raise ModelError(f"{target}: a model with this name is already registered")
    models_dir.mkdir(parents=True, exist_ok=True)
    if target.resolve() != Path(keras_path).resolve():
        tmp = target.with_suffix(".keras.tmp")
        deflated_copy(Path(keras_path), tmp)
        try:
            durable_replace(tmp, target)  # before set_default can name it
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise ModelError(f"{target}: cannot write the model file ({exc})") from exc
        _note_written(written, target)
    if tflite is not None:
        atomic_write_bytes(tflite_path(card.name, models_dir), tflite)
        _note_written(written, tflite_path(card.name, models_dir))
    atomic_write_json(models_dir / f"{card.name}.json", card.to_dict())
    _note_written(written, models_dir / f"{card.name}.json")
    if make_default:
        set_default(card.name, models_dir)
        _note_written(written, models_dir / REGISTRY_FILE)
    return target


def _note_written(written: dict[Path, FileId] | None, path: Path) -> None:
    if written is not None and (identity := file_id(path)) is not None:
        written[path] = identity


def update_card(name: str, changes: dict[str, Any], models_dir: Path | None = None) -> ModelCard:
    """Change some fields of a registered model's card (atomic; keys the card does not know
    are kept in the file). Returns the new card; ModelError naming the file for an unknown
    field, a missing or bad card, a change that would make it invalid, or a failed write."""
    models_dir = models_dir or MODELS_DIR
    unknown = set(changes) - set(ModelCard.__dataclass_fields__)
    if unknown:
        raise ModelError(f"unknown card field(s): {', '.join(sorted(unknown))}")
    path = models_dir / f"{validate_name(name)}.json"
    data = {**_card_data(path), **changes}  # read once: no second read to race or fail
    card = _card_from_data(data, path, name)  # the changed card must be valid, name kept
    try:
        atomic_write_json(path, data)
    except OSError as exc:
        raise ModelError(f"{path}: cannot write the model card ({exc})") from exc
    return card


def model_path(name: str, models_dir: Path | None = None) -> Path:
    """Path of models/<name>.keras (not checked)."""
    return (models_dir or MODELS_DIR) / f"{validate_name(name)}.keras"


def tflite_path(name: str, models_dir: Path | None = None) -> Path:
    """Path of models/<name>.tflite, the model's fast CPU runtime (not checked)."""
    return (models_dir or MODELS_DIR) / f"{validate_name(name)}.tflite"


def model_files(name: str, models_dir: Path | None = None) -> list[Path]:
    """The files model `name` has in the models folder once registered."""
    folder = models_dir or MODELS_DIR
    return [folder / f"{validate_name(name)}{ext}" for ext in (".keras", ".json", ".tflite")]


def check_name_free(name: str, models_dir: Path | None = None) -> None:
    """ModelError when `name` is not a valid model name or a model of that name (any of its
    files) is already in the models folder."""
    if any(path.exists() for path in model_files(name, models_dir)):
        raise ModelError(
            f"a model named {name!r} already exists in {models_dir or MODELS_DIR}; "
            "choose another name"
        )


def undo_registration(written: dict[Path, FileId], registry_before: bytes | None) -> None:
    """After a failed publish: delete the files it registered (`written`, see publish.publish_run)
    and put registry.json back as it was (`registry_before`; None: there was none), each only
    while it still is the file this publish wrote (another process's later file stays)."""
    for path, identity in written.items():
        if file_id(path) != identity:
            continue
        with contextlib.suppress(OSError):
            if path.name != REGISTRY_FILE:
                path.unlink()
            elif registry_before is None:
                path.unlink()
            else:
                atomic_write_bytes(path, registry_before)
