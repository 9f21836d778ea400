"""Altair charts shared by the pages (pure functions: data in, chart spec out; no Streamlit)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import altair as alt
import pandas as pd

from emotion_core.classes import CLASSES
from emotion_core.report import CLASS_COLORS
from emotion_core.stats import BASIS_LABELS

if TYPE_CHECKING:  # the live module loads the pipeline; charts only need the types
    from emotion_core.live import LiveSnapshot
    from emotion_core.nervousness import NervousnessRule
    from emotion_core.stats import Comparison

COLOR_SCALE = alt.Scale(domain=list(CLASSES), range=[CLASS_COLORS[c] for c in CLASSES])


def distribution_ci_chart(df: pd.DataFrame, basis: str, rule: NervousnessRule) -> Any:
    """Bars with CI error bars for one basis (df: one row per class with columns class, BASIS,
    BASIS_lo, BASIS_hi); threshold ticks when the rule uses this basis."""
    title = BASIS_LABELS[basis]
    base = alt.Chart(df).encode(
        y=alt.Y("class:N", sort=list(CLASSES), title=None, axis=alt.Axis(labelOverlap=False))
    )
    bars = base.mark_bar().encode(
        x=alt.X(f"{basis}:Q", scale=alt.Scale(domain=[0, 1]), title=title),
        color=alt.Color("class:N", scale=COLOR_SCALE, legend=None),
        tooltip=[
            "class",
            alt.Tooltip(f"{basis}:Q", format=".3f"),
            alt.Tooltip(f"{basis}_lo:Q", format=".3f", title="CI low"),
            alt.Tooltip(f"{basis}_hi:Q", format=".3f", title="CI high"),
        ],
    )
    errors = base.mark_errorbar(ticks=True).encode(
        x=alt.X(f"{basis}_lo:Q", title=title), x2=f"{basis}_hi:Q"
    )
    layers: list[Any] = [bars, errors]
    if rule.basis == basis and rule.logic != "sum":
        thr = pd.DataFrame(
            {"class": list(rule.emotions), "threshold": [t for _, t in rule.thresholds]}
        )
        layers.append(
            alt.Chart(thr)
            .mark_tick(color="black", thickness=2, size=18)
            .encode(
                y=alt.Y("class:N", sort=list(CLASSES)),
                x="threshold:Q",
                tooltip=[alt.Tooltip("threshold:Q", format=".2f")],
            )
        )
    # NOTE: the chart title is cut at the chart's width; the axis title below carries the rest.
    short = title.split(" (")[0]
    return alt.layer(*layers).properties(height=alt.Step(28), title=short)


def timeline_chart(long: pd.DataFrame) -> alt.Chart:
    """Smoothed per-class probability lines with an x-interval brush named 'brush'; a line
    breaks where the timeline has no face (long's `segment`, from Timeline.long)."""
    brush = alt.selection_interval(encodings=["x"], name="brush")
    chart = (
        alt.Chart(long)
        .mark_line()
        .encode(
            x=alt.X("t_s:Q", title="time (s)"),
            y=alt.Y("probability:Q", scale=alt.Scale(domain=[0, 1])),
            color=alt.Color("class:N", scale=COLOR_SCALE),
            detail="segment:N",
            tooltip=["t_s", "class", alt.Tooltip("probability:Q", format=".2f")],
        )
        .add_params(brush)
        .properties(height=240)
    )
    return chart


def comparison_chart(cmp: Comparison) -> alt.Chart:
    """Grouped bars: one group per class, one bar per session."""
    return (
        alt.Chart(cmp.to_frame())
        .mark_bar()
        .encode(
            x=alt.X("class:N", sort=list(CLASSES), title=None),
            xOffset="session:N",
            y=alt.Y("value:Q", title=BASIS_LABELS[cmp.basis]),
            color=alt.Color("session:N"),
            tooltip=["session", "class", alt.Tooltip("value:Q", format=".3f")],
        )
        .properties(height=260)
    )


def live_distribution_chart(snap: LiveSnapshot) -> alt.Chart:
    """Bar chart of the share of face observations per top label, weighted by time (as on the
    Analysis page; tooltip: mean probability and the count of faces)."""
    total = sum(snap.label_time.values()) or 1.0
    data = pd.DataFrame(
        {
            "emotion": list(CLASSES),
            "share": [snap.label_time.get(c, 0.0) / total for c in CLASSES],
            "mean probability": [snap.mean_probs.get(c, 0.0) for c in CLASSES],
            "faces": [snap.label_counts.get(c, 0) for c in CLASSES],
        }
    )
    return (
        alt.Chart(data, title="Emotion distribution (time-weighted share)")
        .mark_bar()
        .encode(
            x=alt.X("emotion:N", sort=list(CLASSES), title=None),
            y=alt.Y(
                "share:Q", axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1]), title="share"
            ),
            color=alt.Color("emotion:N", scale=COLOR_SCALE, legend=None),
            tooltip=[
                "emotion",
                alt.Tooltip("share:Q", format=".1%"),
                alt.Tooltip("mean probability:Q", format=".1%"),
                "faces",
            ],
        )
        .properties(height=260)
    )


def curves_chart(metrics: pd.DataFrame, metric: str) -> alt.Chart:
    """Train and validation `metric` ('loss' or 'accuracy') per epoch."""
    cols = [c for c in (metric, f"val_{metric}") if c in metrics.columns]
    long = metrics.melt(id_vars=["epoch"], value_vars=cols, var_name="series", value_name="value")
    long["split"] = long["series"].map(lambda s: "validation" if s.startswith("val_") else "train")
    return (
        alt.Chart(long.dropna(), title=metric.capitalize())
        .mark_line(point=True)
        .encode(
            x=alt.X("epoch:Q", title="epoch", axis=alt.Axis(format="d", tickMinStep=1)),
            y=alt.Y("value:Q", title=metric, scale=alt.Scale(zero=False)),
            color=alt.Color("split:N", title=None),
            tooltip=["epoch:Q", "split:N", alt.Tooltip("value:Q", title=metric, format=".4f")],
        )
        .properties(height=220)
    )


def confusion_chart(matrix: list[list[int]], classes: list[str]) -> alt.LayerChart:
    """Row-normalised confusion matrix heat map (rows: true class, columns: predicted)."""
    rows = []
    for i, true in enumerate(classes):
        total = max(sum(matrix[i]), 1)
        for j, pred in enumerate(classes):
            rows.append({"true": true, "predicted": pred, "count": int(matrix[i][j]),
                         "share": matrix[i][j] / total})  # fmt: skip
    frame = pd.DataFrame(rows)
    base = alt.Chart(frame).encode(
        x=alt.X("predicted:N", sort=classes, title="predicted"),
        y=alt.Y("true:N", sort=classes, title="true class"),
    )
    heat = base.mark_rect().encode(
        color=alt.Color("share:Q", scale=alt.Scale(scheme="blues", domain=[0, 1]), title="share"),
        tooltip=["true:N", "predicted:N", "count:Q", alt.Tooltip("share:Q", format=".1%")],
    )
    text = base.mark_text(fontSize=11).encode(
        text=alt.Text("share:Q", format=".2f"),
        color=alt.condition("datum.share > 0.5", alt.value("white"), alt.value("black")),
    )
    return (heat + text).properties(
        width=alt.Step(44), height=alt.Step(36), title="Confusion matrix (rows sum to 1)"
    )


def labels_left(data: pd.DataFrame, x_frac: float = 0.15, y_frac: float = 0.08) -> pd.Series:
    """For speed_accuracy_chart: True for a model whose label (drawn above-right of its point)
    would overlap the label of a more accurate model close by (within x_frac of the ms range and
    y_frac of the accuracy range); its label goes to the left of its point instead (below, it
    would meet the label of the next model down)."""
    ms, acc = data["ms_per_face"].astype(float), data["val_accuracy"].astype(float)
    x_span = max(float(ms.max()), 1e-9)
    y_span = max(float(acc.max() - acc.min()), 1e-9)
    left = [
        bool(
            (
                ((ms - m).abs() / x_span < x_frac)
                & ((acc - a).abs() / y_span < y_frac)
                & ((acc > a) | ((acc == a) & (data.index < i)))
            ).any()
        )
        for i, m, a in zip(data.index, ms, acc, strict=True)
    ]
    return pd.Series(left, index=data.index, dtype=bool)


def speed_accuracy_chart(models: pd.DataFrame, budget_ms: float | None = None) -> alt.LayerChart:
    """Validation accuracy against median CPU ms per face, one labelled point per model (rows
    of emotion_core.report.models_frame; models without both figures are left out), the default
    filled; `budget_ms` draws a vertical rule (e.g. the live path's per-face budget)."""
    data = models.dropna(subset=["val_accuracy", "ms_per_face"]).copy()
    data["role"] = data["default"].map({True: "default", False: "other"})
    data["label_left"] = labels_left(data) if len(data) else pd.Series(dtype=bool)
    base = alt.Chart(data).encode(
        x=alt.X("ms_per_face:Q", title="CPU ms per face (median)", scale=alt.Scale(zero=True)),
        y=alt.Y(
            "val_accuracy:Q",
            title="validation accuracy",
            axis=alt.Axis(format="%"),
            scale=alt.Scale(zero=False),
        ),
    )
    points = base.mark_point(size=90).encode(
        # NOTE: a legend on the right would cover the labels of the slowest models
        shape=alt.Shape("role:N", title=None, legend=alt.Legend(orient="top")),
        fill=alt.condition("datum.role == 'default'", alt.value("#1f77b4"), alt.value("white")),
        tooltip=[
            "model:N", "arch:N",
            alt.Tooltip("val_accuracy:Q", title="accuracy", format=".2%"),
            alt.Tooltip("val_accuracy_tta:Q", title="accuracy, flip TTA", format=".2%"),
            alt.Tooltip("ms_per_face:Q", title="ms/face", format=".2f"),
            "runtime:N",
        ],
    )  # fmt: skip
    right = base.transform_filter("!datum.label_left").mark_text(
        align="left", dx=8, dy=-6, fontSize=11
    )
    left = base.transform_filter("datum.label_left").mark_text(
        align="right", dx=-8, dy=-6, fontSize=11
    )
    layers: list[Any] = [points, *(t.encode(text="model:N") for t in (right, left))]
    if budget_ms is not None:
        rule = alt.Chart(pd.DataFrame({"ms": [budget_ms]})).mark_rule(strokeDash=[4, 4])
        layers.append(rule.encode(x="ms:Q"))
    return alt.LayerChart(layer=layers, height=260)
