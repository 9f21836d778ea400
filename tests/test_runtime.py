"""Model checks of the TFLite runtime: export, the call, the registry and the fallback."""

from __future__ import annotations

import json
import logging
import re

import numpy as np
import pytest

from emotion_core import bench
from emotion_core.inference import check_shapes_match_card, compile_call, load_classifier
from emotion_core.registry import (
    ModelCard,
    ModelError,
    read_card,
    register_model,
    tflite_path,
    update_card,
)
from emotion_core.runtime import TFLiteCall, add_runtime, export_tflite, main
from emotion_core.zoo import ARCHITECTURES, fold_batchnorm, make_model

FACES = np.random.default_rng(3).random((5, 48, 48, 1), dtype=np.float32)


@pytest.fixture(scope="module")
def fast_model():
    """A folded fer-fast network with non-trivial (random) weights, as publish ships it."""
    trained = make_model(arch="fer-fast")
    return fold_batchnorm(trained, ARCHITECTURES["fer-fast-folded"]())


@pytest.fixture
def registered(tmp_path):
    models = tmp_path / "models"
    path = tmp_path / "m.keras"
    make_model(arch="tiny").save(path)
    register_model(path, ModelCard(name="tiny-a", arch="tiny", cpu_ms_per_face=9.0), models,
                   make_default=True)  # fmt: skip
    return models


def test_float_export_reproduces_keras_outputs(fast_model):
    call = TFLiteCall(export_tflite(fast_model))
    assert call.input_shape == (48, 48, 1) and call.num_outputs == 7
    np.testing.assert_allclose(call(FACES), compile_call(fast_model)(FACES), atol=1e-5)
    assert call(FACES[:0]).shape == (0, 7)


def test_dynamic_quantization_is_smaller_and_close(fast_model):
    plain, quantized = export_tflite(fast_model), export_tflite(fast_model, "dynamic")
    assert len(quantized) < len(plain) / 2
    diff = np.abs(TFLiteCall(quantized)(FACES) - compile_call(fast_model)(FACES)).max()
    assert 0 < diff < 0.1
    with pytest.raises(ModelError, match="quantize must be one of"):
        export_tflite(fast_model, "int4")


def test_garbage_and_mismatched_files_are_refused(tmp_path):
    (tmp_path / "junk.tflite").write_bytes(b"not a flatbuffer at all")
    with pytest.raises(ModelError, match="junk.tflite: not a usable TFLite model"):
        TFLiteCall.from_file(tmp_path / "junk.tflite")
    with pytest.raises(ModelError, match="missing.tflite: cannot read"):
        TFLiteCall.from_file(tmp_path / "missing.tflite")
    call = TFLiteCall(export_tflite(make_model(arch="tiny")), "tiny.tflite")
    wrong_classes = ModelCard(name="x", arch="tiny", classes=("a", "b"))
    with pytest.raises(ModelError, match="7 outputs but the card lists 2"):
        check_shapes_match_card(call.input_shape, call.num_outputs, wrong_classes, call.source)
    wrong_size = ModelCard(name="x", arch="tiny", input_size=40)
    with pytest.raises(
        ModelError, match=r"tiny.tflite: input shape \(48, 48, 1\) but the card says \(40"
    ):
        check_shapes_match_card(call.input_shape, call.num_outputs, wrong_size, call.source)


def test_add_runtime_makes_the_classifier_use_it(registered, monkeypatch):
    keras_probs = load_classifier(models_dir=registered).predict(FACES)
    card, diff = add_runtime("tiny-a", models_dir=registered)
    assert diff < 1e-4 and tflite_path("tiny-a", registered).exists()
    assert card.runtime == "tflite" and card.cpu_ms_per_face_keras == 9.0
    assert card.cpu_ms_measured.endswith("cores: median of 200 single-face calls when the "
                                         "runtime was added")  # fmt: skip
    assert read_card("tiny-a", registered) == card
    classifier = load_classifier(models_dir=registered)
    assert classifier.runtime == "tflite" and classifier.model is None
    np.testing.assert_allclose(classifier.predict(FACES), keras_probs, atol=1e-5)
    assert load_classifier(models_dir=registered, keras_only=True).runtime == "keras"
    monkeypatch.setenv("EMOTION_RUNTIME", "keras")
    assert load_classifier(models_dir=registered).runtime == "keras"


def test_a_broken_runtime_file_falls_back_to_keras(registered, caplog):
    add_runtime("tiny-a", models_dir=registered)
    tflite_path("tiny-a", registered).write_bytes(b"truncated")
    with caplog.at_level(logging.WARNING, logger="emotion_core.inference"):
        classifier = load_classifier(models_dir=registered)
    assert classifier.runtime == "keras"
    assert classifier.predict(FACES).shape == (5, 7)
    assert "tiny-a.tflite: not a usable TFLite model (" in classifier.runtime_problem
    assert classifier.runtime_problem in caplog.text and "using the Keras model" in caplog.text
    tflite_path("tiny-a", registered).unlink()
    classifier = load_classifier(models_dir=registered)
    assert (
        classifier.runtime == "keras" and "tiny-a.tflite: cannot read" in classifier.runtime_problem
    )


def test_runtime_cli(registered, monkeypatch, capsys):
    monkeypatch.setattr("emotion_core.registry.MODELS_DIR", registered)
    monkeypatch.setattr("emotion_core.runtime.MODELS_DIR", registered)
    assert main(["export", "no-such-model"]) == 2
    assert "no-such-model.json: model card not found" in capsys.readouterr().err
    assert main(["export", "tiny-a", "--data", str(registered / "missing.csv")]) == 2
    assert "missing.csv" in capsys.readouterr().err
    assert main(["export", "tiny-a"]) == 0
    out = capsys.readouterr().out.strip().splitlines()[-1]
    assert out.startswith("model=tiny-a runtime=tflite checked_on='64 random images' max_diff=")
    assert json.loads((registered / "tiny-a.json").read_text())["runtime"] == "tflite"


def test_update_card_changes_fields_and_keeps_unknown_keys(registered):
    path = registered / "tiny-a.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "reviewer": "kept"}))
    card = update_card("tiny-a", {"cpu_ms_per_face": 1.5, "cpu_ms_measured": "today"}, registered)
    assert card == read_card("tiny-a", registered) and card.cpu_ms_per_face == 1.5
    assert json.loads(path.read_text())["reviewer"] == "kept"
    with pytest.raises(ModelError, match="unknown card field"):
        update_card("tiny-a", {"speed": 1.0}, registered)
    with pytest.raises(ModelError, match="model card not found"):
        update_card("absent", {"cpu_ms_per_face": 1.0}, registered)


class _Recorder:
    """A classifier stand-in that logs which model each call went to."""

    def __init__(self, name, log):
        self.name, self.runtime, self.log = name, "fake", log
        self.card = ModelCard(name=name, arch="tiny", cpu_ms_per_face=2.0)

    def predict(self, faces):
        self.log.append(self.name)
        return np.zeros((len(faces), 7))


def test_bench_models_interleaves_rounds_in_rotated_order():
    log = []
    models = [_Recorder(n, log) for n in "abc"]
    results = bench.bench_models(models, rounds=3, repeats=4)
    visits = [name for i, name in enumerate(log) if i % 24 == 0]  # first call of each visit
    assert visits == list("abc" + "bca" + "cab") and len(log) == 3 * 3 * (20 + 4)
    assert [r.name for r in results] == list("abc")  # the order given
    assert all(r.low_ms <= r.p50_ms <= r.high_ms and r.card_ms == 2.0 for r in results)
    with pytest.raises(ValueError, match="--rounds"):
        bench.bench_models(models, rounds=0)


def test_bench_models_cli_times_every_model_and_updates_cards(registered, monkeypatch, capsys):
    add_runtime("tiny-a", models_dir=registered)
    path = registered / "m2.keras"
    make_model(arch="tiny").save(path)
    register_model(path, ModelCard(name="tiny-b", arch="tiny"), registered)
    monkeypatch.setattr("emotion_core.inference.MODELS_DIR", registered)
    before = read_card("tiny-a", registered)
    assert bench.main(["models", "--rounds", "2", "--repeats", "5"]) == 0
    assert read_card("tiny-a", registered) == before  # only --update-cards writes
    lines = capsys.readouterr().out.strip().splitlines()
    pattern = r"model=(\S+) runtime=(\S+) p50_ms_per_face=[0-9.]+ rounds=[0-9.]+-[0-9.]+ card=\S+"
    timed = [re.fullmatch(pattern, line) for line in lines[:2]]
    assert all(timed)
    assert {(m[1], m[2]) for m in timed if m} == {("tiny-a", "tflite"), ("tiny-b", "keras")}
    assert lines[2].startswith("measured: ") and "`bench models`, 2 interleaved rounds" in lines[2]

    assert bench.main(["models", "--rounds", "2", "--repeats", "5", "--update-cards"]) == 0
    out = capsys.readouterr().out
    assert "updated 2 card(s)" in out
    for name in ("tiny-a", "tiny-b"):
        card = read_card(name, registered)
        printed = re.search(rf"model={name} \S+ p50_ms_per_face=([0-9.]+)", out)
        assert card.cpu_ms_per_face == float(printed[1]) > 0
        assert re.search(r"\d+ cores: `bench models`", card.cpu_ms_measured)
        assert card.cpu_ms_measured in out

    tflite_path("tiny-a", registered).write_bytes(b"broken")  # timed through Keras instead
    written = read_card("tiny-a", registered)
    assert bench.main(["models", "--rounds", "1", "--repeats", "2", "--update-cards"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: not writing timings into cards") and "tiny-a: " in err
    assert "not a usable TFLite model" in err and read_card("tiny-a", registered) == written
    add_runtime("tiny-a", models_dir=registered)  # repaired
    written = read_card("tiny-a", registered)
    monkeypatch.setenv("EMOTION_RUNTIME", "keras")  # every model on Keras: shown, not written
    assert bench.main(["models", "--rounds", "1", "--repeats", "2"]) == 0
    assert "model=tiny-a runtime=keras" in capsys.readouterr().out
    assert bench.main(["models", "--rounds", "1", "--repeats", "2", "--update-cards"]) == 2
    assert "tiny-a: EMOTION_RUNTIME=keras" in capsys.readouterr().err
    assert read_card("tiny-a", registered) == written
    assert bench.main(["models", "--rounds", "0"]) == 2
    assert "--rounds and --repeats must be >= 1" in capsys.readouterr().err


def test_bench_models_cli_without_models(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("emotion_core.inference.MODELS_DIR", tmp_path / "none")
    assert bench.main(["models"]) == 2
    assert "no registered models" in capsys.readouterr().err
