"""Code checks for the chart builders the pages share (chart specs, not pixels)."""

from __future__ import annotations

import pandas as pd
import pytest

from emotion_core.charts import (
    confusion_chart,
    curves_chart,
    distribution_ci_chart,
    live_distribution_chart,
)
from emotion_core.classes import CLASSES
from emotion_core.live import LiveSnapshot
from emotion_core.nervousness import NervousnessRule


def _datasets(spec: dict) -> list[list[dict]]:
    return list(spec.get("datasets", {}).values())


def test_live_distribution_shares_sum_to_one() -> None:
    snap = LiveSnapshot(label_counts={"happy": 3, "sad": 1}, mean_probs={"happy": 0.6})
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
