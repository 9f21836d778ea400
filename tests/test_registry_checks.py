"""Checks of registered networks and cards before they are used: a model made the default must
load and match its card, a network to fine-tune or distil from must fit the 7 classes training
needs, and a card that cannot be used is reported, not silently dropped."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from emotion_core import registry
from emotion_core import train as train_module
from emotion_core.distill import TeacherError
from emotion_core.registry import ModelCard, ModelError


def tiny(path: Path, classes: int = 7, size: int = 48) -> Path:
    """A tiny network of `classes` outputs taking (size, size, 1) faces, saved to path."""
    from emotion_core.zoo import make_tiny_model

    make_tiny_model((size, size, 1), classes).save(path)
    return path


@pytest.fixture(scope="module")
def nets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import keras

    folder = tmp_path_factory.mktemp("nets")
    sequential = keras.Sequential([keras.Input((48, 48, 1)), keras.layers.Flatten(),
                                   keras.layers.Dense(7), keras.layers.Softmax()])  # fmt: skip
    sequential.save(folder / "sequential.keras")
    faces = keras.Input((48, 48, 1))
    x = keras.layers.Flatten()(faces)
    reshaped = keras.layers.Reshape((5,))(keras.layers.Dense(5)(x))  # the config cannot tell
    keras.Model(faces, reshaped).save(folder / "reshaped.keras")
    two = keras.Model(faces, [keras.layers.Dense(7)(x), keras.layers.Dense(2)(x)])
    two.save(folder / "two-outputs.keras")
    return {
        "good": tiny(folder / "good.keras"),
        "five": tiny(folder / "five.keras", classes=5),
        "big": tiny(folder / "big.keras", size=64),
        "sequential": folder / "sequential.keras",
        "reshaped": folder / "reshaped.keras",
        "two": folder / "two-outputs.keras",
    }


def test_network_shapes_are_read_from_the_archive(nets: dict[str, Path], tmp_path: Path) -> None:
    assert registry.network_shapes(nets["good"]) == ((48, 48, 1), 7)
    assert registry.network_shapes(nets["five"]) == ((48, 48, 1), 5)
    assert registry.network_shapes(nets["big"]) == ((64, 64, 1), 7)
    assert registry.network_shapes(nets["sequential"]) == ((48, 48, 1), 7)
    assert registry.network_shapes(nets["reshaped"]) == ((48, 48, 1), 5)  # asked Keras
    with pytest.raises(ModelError, match="expected one input and one output"):
        registry.network_shapes(nets["two"])

    text = tmp_path / "text.keras"
    text.write_text("not a model")
    (tmp_path / "folder.keras").mkdir()
    empty = tmp_path / "empty.keras"
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("config.json", "{}")
    damaged = tmp_path / "damaged.keras"
    data = bytearray(nets["good"].read_bytes())
    with zipfile.ZipFile(nets["good"]) as archive:
        info = archive.getinfo("model.weights.h5")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)  # the member's data
    data[start + info.compress_size // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    cases = {
        text: "text.keras: not a .keras model file (not a zip archive)",
        tmp_path / "folder.keras": "folder.keras: cannot read the model file",
        tmp_path / "missing.keras": "missing.keras: model file not found",
        empty: "empty.keras: not a .keras model file (no network configuration or weights)",
        damaged: "damaged.keras: damaged .keras file (model.weights.h5 fails its checksum)",
    }
    for path, message in cases.items():
        with pytest.raises(ModelError) as info_:
            registry.network_shapes(path)
        assert message in str(info_.value), path


def register(models: Path, name: str, network: Path, **card: Any) -> None:
    registry.register_model(network, ModelCard(name=name, arch="tiny", **card), models)


def test_only_a_model_that_loads_and_fits_its_card_becomes_the_default(
    nets: dict[str, Path], tmp_path: Path
) -> None:
    models = tmp_path / "models"
    registry.register_model(nets["good"], ModelCard(name="old", arch="tiny"), models, True)
    register(models, "five", nets["five"])  # 5 outputs, a card of 7 classes
    register(models, "wide", nets["good"], input_size=64)  # the card says 64x64 faces
    register(models, "text", nets["good"])
    (models / "text.keras").write_text("not a model")  # e.g. a broken copy
    register(models, "fine", nets["good"])
    before = (models / registry.REGISTRY_FILE).read_bytes()
    cases = {
        "five": "five.keras: 5 outputs but the card lists 7 classes",
        "wide": "wide.keras: input shape (48, 48, 1) but the card says (64, 64, 1)",
        "text": "text.keras: not a .keras model file (not a zip archive)",
    }
    for name, message in cases.items():
        with pytest.raises(ModelError) as info:
            registry.set_default(name, models, verify=True)
        assert message in str(info.value), name
        assert (models / registry.REGISTRY_FILE).read_bytes() == before
    registry.set_default("fine", models, verify=True)
    assert registry.default_model_name(models) == "fine"


def test_cards_left_out_of_the_list_are_reported_with_their_file(
    nets: dict[str, Path], tmp_path: Path
) -> None:
    models = tmp_path / "models"
    registry.register_model(nets["good"], ModelCard(name="old", arch="tiny"), models, True)
    register(models, "ok", nets["good"])
    for name in ("bad-json", "bad-field", "renamed", "no-network"):
        register(models, name, nets["good"])
    (models / "bad-json.json").write_text("{oops")
    card = json.loads((models / "ok.json").read_text())
    (models / "bad-field.json").write_text(json.dumps(card | {"name": "bad-field",
                                                               "epochs": "12"}))  # fmt: skip
    (models / "renamed.json").write_text(json.dumps(card))  # names "ok"
    (models / "no-network.keras").unlink()
    (models / "old.json").write_text("[]")  # the default's card
    (models / ".activation.json").write_text("{}")  # a marker, not a card

    scan = registry.scan_models(models)
    assert [c.name for c in scan.cards] == ["ok"] == [c.name for c in registry.list_models(models)]
    assert scan.problems == registry.card_problems(models)
    problems = "\n".join(scan.problems)
    assert len(scan.problems) == 5, problems
    for line in (
        f"{models / 'bad-json.json'}: model card is not valid JSON",
        f"{models / 'bad-field.json'}: model card field 'epochs': '12' is not a number",
        f"{models / 'renamed.json'}: the card is named 'ok', not 'renamed'",
        f"{models / 'no-network.json'}: its network file no-network.keras is missing",
        f"{models / 'old.json'}: model card must be a JSON object",
    ):
        assert line in problems
    assert ".activation" not in problems


def test_training_refuses_networks_of_the_wrong_shape_before_loading_data(
    nets: dict[str, Path], tmp_path: Path
) -> None:
    def start(**settings: Any) -> train_module.TrainConfig:
        return train_module.TrainConfig(data=str(tmp_path / "d.csv"), **settings)

    train_module.check_inputs(start(init_model=str(nets["good"])), resuming=False)
    train_module.check_inputs(start(init_model=str(nets["sequential"])), resuming=False)
    train_module.check_inputs(start(init_model=str(nets["five"])), resuming=True)  # not used
    with pytest.raises(ValueError) as info:
        train_module.check_inputs(start(init_model=str(nets["five"])), resuming=False)
    message = str(info.value)
    assert f"{nets['five']}: 5 outputs, but training needs 7 classes" in message
    assert "--init-model" in message
    with pytest.raises(ValueError, match=r"input shape \(64, 64, 1\), but training feeds faces"):
        train_module.check_inputs(start(init_model=str(nets["big"])), resuming=False)

    live = f"{nets['good']},{nets['five']}"
    with pytest.raises(TeacherError, match="5 outputs, but training needs 7 classes") as teacher:
        train_module.check_inputs(start(teacher=live, live_teacher=True), resuming=True)
    assert "live teacher" in str(teacher.value)
    with pytest.raises(TeacherError, match="5 outputs, but training needs 7 classes"):
        train_module.check_inputs(start(teacher=str(nets["five"])), resuming=False)
    train_module.check_inputs(start(teacher=str(nets["good"]), live_teacher=True), False)
