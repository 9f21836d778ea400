"""Code checks for the chart builders the pages share (chart specs, not pixels)."""

from __future__ import annotations

import pandas as pd
import pytest

from emotion_core.charts import (
    confusion_chart,
    curves_chart,
    distribution_ci_chart,
    labels_left,
    live_distribution_chart,
    speed_accuracy_chart,
)
from emotion_core.classes import CLASSES
from emotion_core.live import LiveSnapshot
from emotion_core.nervousness import NervousnessRule
from emotion_core.registry import ModelCard
from emotion_core.report import MODEL_COLUMNS, models_frame, speed_provenance
from emotion_core.stats import BASIS_LABELS


def _datasets(spec: dict) -> list[list[dict]]:
    return list(spec.get("datasets", {}).values())


def test_live_distribution_shares_sum_to_one() -> None:
    snap = LiveSnapshot(
        label_counts={"happy": 2, "sad": 2},  # the counts say 50%, the time 75%
        label_time={"happy": 0.3, "sad": 0.1},
        mean_probs={"happy": 0.6},
    )
    (rows,) = _datasets(live_distribution_chart(snap).to_dict())
    shares = {r["emotion"]: r["share"] for r in rows}
    assert list(shares) == list(CLASSES)
    assert shares["happy"] == pytest.approx(0.75) and sum(shares.values()) == pytest.approx(1)
    empty = _datasets(live_distribution_chart(LiveSnapshot()).to_dict())[0]
    assert all(r["share"] == 0 for r in empty)  # no face yet: no division by zero


def test_confusion_rows_are_normalised() -> None:
    (rows,) = _datasets(confusion_chart([[3, 1], [0, 0]], ["a", "b"]).to_dict())
    share = {(r["true"], r["predicted"]): r["share"] for r in rows}
    assert share[("a", "a")] == pytest.approx(0.75) and share[("a", "b")] == pytest.approx(0.25)
    assert share[("b", "a")] == 0 and share[("b", "b")] == 0  # an empty row stays zero


def test_curves_split_train_and_validation() -> None:
    metrics = pd.DataFrame({"epoch": [1, 2], "loss": [1.0, 0.8], "val_loss": [1.1, None]})
    (rows,) = _datasets(curves_chart(metrics, "loss").to_dict())
    assert sorted((r["epoch"], r["split"]) for r in rows) == [
        (1, "train"), (1, "validation"), (2, "train"),
    ]  # fmt: skip


def test_threshold_ticks_only_when_the_rule_uses_the_basis() -> None:
    df = pd.DataFrame(
        {"class": list(CLASSES), "share": 0.1, "share_lo": 0.05, "share_hi": 0.2,
         "mean_prob": 0.1, "mean_prob_lo": 0.05, "mean_prob_hi": 0.2}
    )  # fmt: skip
    rule = NervousnessRule("custom", (("fear", 0.3), ("sad", 0.4)), basis="share")
    with_ticks = distribution_ci_chart(df, "share", rule).to_dict()
    without = distribution_ci_chart(df, "mean_prob", rule).to_dict()
    assert len(with_ticks["layer"]) == 3 and len(without["layer"]) == 2
    thresholds = [d for d in _datasets(with_ticks) if d and "threshold" in d[0]]
    assert thresholds == [[{"class": "fear", "threshold": 0.3}, {"class": "sad", "threshold": 0.4}]]
    # the chart title is short enough not to be cut; the axis title says it in full
    assert with_ticks["title"] == "share of face observations"
    assert with_ticks["layer"][0]["encoding"]["x"]["title"] == BASIS_LABELS["share"]


def test_models_frame_ranks_models_and_marks_the_default() -> None:
    cards = [
        ModelCard(name="fast", arch="fer-fast", val_accuracy=0.69, val_accuracy_tta=0.695,
                  cpu_ms_per_face=0.7, params=600_000, runtime="tflite"),
        ModelCard(name="untimed", arch="tiny"),
        ModelCard(name="best", arch="vgg-m40", val_accuracy=0.713, val_accuracy_tta=0.723,
                  cpu_ms_per_face=3.5, params=3_727_983, epochs=196),
    ]  # fmt: skip
    frame = models_frame(cards, default="best")
    assert list(frame.columns) == list(MODEL_COLUMNS)
    assert list(frame["model"]) == ["best", "fast", "untimed"]  # most accurate first, unknown last
    assert list(frame["default"]) == [True, False, False]
    assert frame.loc[0, "params_m"] == 3.73 and frame.loc[0, "epochs"] == 196
    assert pd.isna(frame.loc[2, "val_accuracy"]) and pd.isna(frame.loc[2, "ms_per_face"])

    spec = speed_accuracy_chart(frame, budget_ms=5.0).to_dict()
    rows = [r for data in _datasets(spec) for r in data]
    plotted = {r["model"]: r for r in rows if "model" in r}
    assert set(plotted) == {"best", "fast"}  # a model without both figures is not plotted
    assert plotted["best"]["role"] == "default" and plotted["fast"]["role"] == "other"
    assert {"ms": 5.0} in rows  # the budget rule
    # points, labels right, labels left (none here), and the budget rule
    assert len(spec["layer"]) == 4 and len(speed_accuracy_chart(frame).to_dict()["layer"]) == 3
    # the legend sits above the plot, clear of the labels of the slowest (rightmost) models
    assert spec["layer"][0]["encoding"]["shape"]["legend"] == {"orient": "top"}


def test_speed_provenance_says_whether_the_timings_compare() -> None:
    note = "2026-11-27, AMD EPYC, 2 cores: `bench models`, 5 interleaved rounds"
    together = [ModelCard(name=n, arch="tiny", cpu_ms_measured=note) for n in ("a", "b")]
    assert speed_provenance(together) == f"measured {note}"
    apart = [*together, ModelCard(name="c", arch="tiny", cpu_ms_measured="2026-11-01, X: y")]
    assert "not strictly comparable" in speed_provenance(apart)
    unknown = [*together, ModelCard(name="d", arch="tiny")]  # published before the field
    assert "not strictly comparable" in speed_provenance(unknown)


def test_close_models_get_their_labels_on_opposite_sides() -> None:
    cards = [
        ModelCard(name="v3", arch="vgg-m40", val_accuracy=0.7155, cpu_ms_per_face=4.30),
        ModelCard(name="v2", arch="vgg-m40", val_accuracy=0.7130, cpu_ms_per_face=4.34),
        ModelCard(name="v1", arch="vgg-m40", val_accuracy=0.7027, cpu_ms_per_face=4.28),
        ModelCard(name="fast", arch="fer-fast", val_accuracy=0.6584, cpu_ms_per_face=0.70),
    ]
    frame = models_frame(cards, default="v3")
    left = dict(zip(frame["model"], labels_left(frame), strict=True))
    # v2 sits just under v3 at the same speed: its label goes left; the others stay right
    assert left == {"v3": False, "v2": True, "v1": False, "fast": False}
    spec = speed_accuracy_chart(frame).to_dict()
    filters = [layer.get("transform", [{}])[0].get("filter") for layer in spec["layer"][1:]]
    assert filters == ["!datum.label_left", "datum.label_left"]
    rows = [r for data in _datasets(spec) for r in data if "model" in r]
    assert {r["model"]: r["label_left"] for r in rows} == left
    twins = models_frame([cards[0], ModelCard(name="twin", arch="x", val_accuracy=0.7155,
                                              cpu_ms_per_face=4.30)], default="v3")  # fmt: skip
    assert sorted(labels_left(twins)) == [False, True]  # exact ties: one of the two moves
