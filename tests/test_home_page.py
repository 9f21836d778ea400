"""app.py (the home page) under streamlit's AppTest, with a temporary model registry."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from emotion_core import registry
from emotion_core.registry import ModelCard

APP = str(Path(__file__).resolve().parent.parent / "app.py")


def run_home(models: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("EMOTION_MODELS_DIR", str(models))
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_home_names_the_active_model_and_its_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from emotion_core.zoo import make_tiny_model

    make_tiny_model().save(tmp_path / "tiny.keras")
    models = tmp_path / "models"
    figures = {"val_accuracy": 0.7155, "val_accuracy_tta": 0.7208, "val_macro_f1": 0.7025}
    measured = "2026-11-27, AMD EPYC, 2 cores: `bench models`"
    card = ModelCard(name="a-rather-long-model-name-v12", arch="tiny", cpu_ms_per_face=3.18,
                     cpu_ms_measured=measured, **figures)  # fmt: skip
    registry.register_model(tmp_path / "tiny.keras", card, models, make_default=True)
    registry.register_model(tmp_path / "tiny.keras", ModelCard(name="other", arch="tiny"), models)
    at = run_home(models, monkeypatch)
    markdown = "\n".join(str(m.value) for m in at.markdown)
    assert "**a-rather-long-model-name-v12**" in markdown  # in full, not cut to a metric's width
    metrics = {m.label: m.value for m in at.metric}
    assert metrics == {"Val. accuracy": "71.55%", "With flip TTA": "72.08%",
                       "Macro-F1": "0.703", "CPU ms/face": "3.2"}  # fmt: skip
    speed = next(m for m in at.metric if m.label == "CPU ms/face")
    assert speed.help == f"Median of single-face calls on the keras runtime, measured {measured}."
    assert "2 model(s) in the registry" in at.caption[-1].value
    assert "Responsible use" in at.warning[0].value


def test_home_without_a_usable_default_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = tmp_path / "empty"
    models.mkdir()
    at = run_home(models, monkeypatch)
    assert "No usable default model" in at.error[0].value
    assert not at.metric


def test_a_default_without_its_network_file_or_a_missing_registry_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from emotion_core.zoo import make_tiny_model

    make_tiny_model().save(tmp_path / "tiny.keras")
    models = tmp_path / "models"
    card = ModelCard(name="gone", arch="tiny", val_accuracy=0.7)
    registry.register_model(tmp_path / "tiny.keras", card, models, make_default=True)
    registry.register_model(tmp_path / "tiny.keras", ModelCard(name="kept", arch="tiny"), models)
    (models / "gone.keras").unlink()
    at = run_home(models, monkeypatch)
    error = at.error[0].value
    assert "gone.keras: missing" in error and not at.metric  # not shown as the active model
    assert "make one the default on the Training page" in error and "kept" in error
    (models / "registry.json").unlink()
    at = run_home(models, monkeypatch)
    assert "make one the default on the Training page" in at.error[0].value


def test_the_sidebar_lists_the_pages_home_first_on_every_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMOTION_SESSIONS_DIR", str(tmp_path / "sessions"))
    at = run_home(tmp_path, monkeypatch)
    expected = ["Home", "Live", "Analysis", "Video", "Training"]  # not "app", not by file name
    assert [link.proto.label for link in at.sidebar.get("page_link")] == expected
    body = [link.proto.label for link in at.main.get("page_link")]  # the same pages, described
    assert [label.split(":")[0] for label in body] == expected[1:] and all(": " in b for b in body)
    assert not at.sidebar.get("divider")  # nothing below the list to divide it from
    at.switch_page("pages/2_Analysis.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Session analysis"
    links = at.sidebar.get("page_link")
    assert [link.proto.label for link in links] == expected
    assert len(at.sidebar.get("divider")) == 1  # the list, then the page's own settings
    assert [link.proto.page for link in links][1:] == expected[1:]  # URLs /Live, /Analysis, ...


def test_script_runs_do_not_clear_the_keras_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Streamlit would call keras.backend.clear_session() (a full GC, ~0.4 s holding the GIL)
    after every script run, and every poll of a progress fragment is one: it starved the video
    analysis (a 9 s clip took 13 s instead of 3 s; with a second tab open it never ended)."""
    import tomllib

    import keras

    calls: list[int] = []
    monkeypatch.setattr(keras.backend, "clear_session", lambda *a, **k: calls.append(1))
    at = run_home(tmp_path / "no-models", monkeypatch)
    at.run()
    assert calls == []
    config = tomllib.loads((Path(APP).parent / ".streamlit" / "config.toml").read_text())
    assert config["runner"]["postScriptGC"] is False  # Streamlit's own full GC after each run


def test_the_speed_shown_is_that_of_the_runtime_the_app_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EMOTION_RUNTIME=keras makes the app run the Keras network: the home page then gives the
    card's Keras figure, not its faster TFLite one, and says which runtime it is."""
    from emotion_core.zoo import make_tiny_model

    make_tiny_model().save(tmp_path / "tiny.keras")
    models = tmp_path / "models"
    card = ModelCard(name="fast", arch="tiny", runtime="tflite", cpu_ms_per_face=0.62,
                     cpu_ms_per_face_keras=3.18)  # fmt: skip
    registry.register_model(tmp_path / "tiny.keras", card, models, make_default=True)

    def speed() -> tuple[str, str]:
        metric = next(m for m in run_home(models, monkeypatch).metric if m.label == "CPU ms/face")
        return metric.value, metric.help

    monkeypatch.delenv("EMOTION_RUNTIME", raising=False)
    value, help_text = speed()
    assert value == "0.6" and "on the tflite runtime" in help_text
    monkeypatch.setenv("EMOTION_RUNTIME", "keras")
    value, help_text = speed()
    assert value == "3.2" and "on the keras runtime" in help_text


def test_the_app_sends_no_usage_statistics() -> None:
    """A tool that records job candidates makes no outside calls of its own: Streamlit's usage
    statistics are off in the app's config, not only in the browser test's command line."""
    import tomllib

    config = tomllib.loads((Path(APP).parent / ".streamlit" / "config.toml").read_text())
    assert config["browser"]["gatherUsageStats"] is False
