"""Exports: a per-session summary table (CSV) and a self-contained HTML report.

The HTML needs no network: charts are inline SVG (bars with interval whiskers, timeline
lines) and every number is also given as a table. All text from sessions (candidate names,
notes, file names) is HTML-escaped.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from emotion_core.classes import CLASSES
from emotion_core.inference import ms_per_face_in_use
from emotion_core.nervousness import (
    DISCLAIMER,
    NervousnessResult,
    NervousnessRule,
    per_face_table,
)
from emotion_core.registry import ModelCard
from emotion_core.sessions import Session
from emotion_core.stats import BASIS_LABELS, Comparison, SessionStats, Timeline

CLASS_COLORS: dict[str, str] = {
    "angry": "#d62728",
    "disgust": "#8c564b",
    "fear": "#9467bd",
    "happy": "#2ca02c",
    "sad": "#1f77b4",
    "surprise": "#ff7f0e",
    "neutral": "#7f7f7f",
}
RESPONSIBLE_USE = (
    "Facial-expression classifiers are imperfect (see the model's per-class accuracy), differ "
    "in accuracy across people, lighting and cameras, and show expressions, not feelings. The "
    "nervousness verdict is a heuristic indicator: it is not a measurement of anxiety and must "
    "not be used as a hiring signal or for any decision about a person. Record people only with "
    "their informed consent. See the README section 'Responsible use'."
)


MODEL_COLUMNS = (
    "model", "default", "arch", "params_m", "val_accuracy", "val_accuracy_tta", "val_macro_f1",
    "ece_after", "ms_per_face", "runtime", "epochs", "date",
)  # fmt: skip


def models_frame(cards: Sequence[ModelCard], default: str) -> pd.DataFrame:
    """One row per registered model (MODEL_COLUMNS), most accurate first, for comparing them:
    validation accuracy without and with flip TTA, macro-F1, ECE after temperature scaling,
    median CPU ms per face on the runtime the app uses (inference.ms_per_face_in_use: Keras
    under EMOTION_RUNTIME=keras) and that runtime. Unknown figures are NaN."""

    def number(value: float | None) -> float:
        return float("nan") if value is None else float(value)

    rows = []
    for card in cards:
        runtime, ms = ms_per_face_in_use(card)
        rows.append(
            {
                "model": card.name,
                "default": card.name == default,
                "arch": card.arch,
                "params_m": round(card.params / 1e6, 2) if card.params else float("nan"),
                "val_accuracy": number(card.val_accuracy),
                "val_accuracy_tta": number(card.val_accuracy_tta),
                "val_macro_f1": number(card.val_macro_f1),
                "ece_after": number(card.ece_after),
                "ms_per_face": number(ms),
                "runtime": runtime,
                "epochs": card.epochs,
                "date": card.date,
            }
        )
    frame = pd.DataFrame(rows, columns=list(MODEL_COLUMNS))
    frame = frame.sort_values(
        ["val_accuracy", "model"], ascending=[False, True], na_position="last"
    )
    return frame.reset_index(drop=True)


def speed_provenance(cards: Sequence[ModelCard]) -> str:
    """Where the ms/face figures come from: one shared measurement, or several."""
    notes = {card.cpu_ms_measured for card in cards}
    if len(notes) == 1 and "" not in notes:
        return f"measured {notes.pop()}"
    return (
        "measured at different times or on different machines, so not strictly comparable "
        "(`python -m emotion_core.bench models --update-cards` times them all together here)"
    )


# NOTE: a spreadsheet runs a cell starting with one of these as a formula (CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(text: Any) -> Any:
    """Text that a spreadsheet shows as text: one starting like a formula gets a leading "'".
    Non-text values pass unchanged."""
    if isinstance(text, str) and text.startswith(FORMULA_STARTS):
        return "'" + text
    return text


def summary_frame(
    entries: Sequence[tuple[Mapping[str, Any], SessionStats, NervousnessResult]],
) -> pd.DataFrame:
    """One row per session for CSV export.

    entries: (session meta, its statistics, its verdict). Columns: session_id, candidate,
    started_at, source, model_name, model_hash, complete, verdict, rule, data_notes (the rows
    left out of the recording when it was read, from meta's DATA_NOTES_KEY; empty when none),
    then SessionStats.summary_row() (duration, frames, shares and mean probabilities with CIs).
    """
    rows = []
    for meta, stats, result in entries:
        row: dict[str, Any] = {
            "session_id": meta.get("session_id", stats.name),
            "candidate": meta.get("candidate", ""),
            "started_at": meta.get("started_at", ""),
            "source": meta.get("source", ""),
            "model_name": meta.get("model_name", ""),
            "model_hash": meta.get("model_hash", ""),
            "complete": meta.get("complete", ""),
            "verdict": result.verdict,
            "verdict_note": "heuristic indicator, not a measurement of anxiety",
            "rule": json.dumps(result.rule, sort_keys=True),
            "data_notes": " | ".join(data_notes(meta)),
        }
        row.update(stats.summary_row())
        rows.append({key: spreadsheet_safe(value) for key, value in row.items()})
    return pd.DataFrame(rows)


DATA_NOTES_KEY = "data_notes"  # in a meta mapping handed to the exports: Session.warnings


def data_notes(meta: Mapping[str, Any]) -> tuple[str, ...]:
    """The notes on rows left out when the recording was read (sessions.Session.warnings), as
    the caller put them into the meta it exports under DATA_NOTES_KEY."""
    notes = meta.get(DATA_NOTES_KEY) or ()
    return (notes,) if isinstance(notes, str) else tuple(str(n) for n in notes)


def export_meta(session: Session) -> dict[str, Any]:
    """A session's meta for the exports, with its notes on rows left out (DATA_NOTES_KEY)."""
    return {**session.meta, DATA_NOTES_KEY: list(session.warnings)}


def summary_csv(
    entries: Sequence[tuple[Mapping[str, Any], SessionStats, NervousnessResult]],
) -> str:
    """summary_frame(entries) as CSV text (RFC 4180 line ends, so a text cell holding a CR or
    LF is quoted and stays one cell)."""
    return summary_frame(entries).to_csv(index=False, lineterminator="\r\n")


VERDICT_COLUMNS = ("session", "duration (s)", "verdict", "why")
PAIR_COLUMNS = ("A", "B", "JS distance", "effect", "p (Holm)", "largest difference")


def verdicts_frame(
    entries: Sequence[tuple[str, SessionStats, NervousnessResult]],
) -> pd.DataFrame:
    """One row per session (VERDICT_COLUMNS): entries are (display name, statistics, verdict)."""
    rows = [
        [name, round(stats.duration_s, 1), result.verdict, result.summary]
        for name, stats, result in entries
    ]
    return pd.DataFrame(rows, columns=list(VERDICT_COLUMNS))


def pairs_frame(cmp: Comparison) -> pd.DataFrame:
    """One row per pair of compared sessions (PAIR_COLUMNS): JS distance to 3 places, the
    Holm-adjusted p-value to 4 (None when there is none), the class differing most."""
    rows = [
        [
            p.a,
            p.b,
            round(p.js_distance, 3),
            p.effect,
            round(p.p_adjusted, 4) if math.isfinite(p.p_adjusted) else None,
            p.top_class,
        ]
        for p in cmp.pairs
    ]
    return pd.DataFrame(rows, columns=list(PAIR_COLUMNS))


# --------------------------------------------------------------------------------------------
# SVG helpers
# --------------------------------------------------------------------------------------------


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(v: float, digits: int = 3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def svg_bars(
    values: Sequence[float],
    intervals: Sequence[tuple[float, float]] | None,
    labels: Sequence[str] = CLASSES,
    title: str = "",
    thresholds: Mapping[str, float] | None = None,
    width: int = 520,
    height: int = 220,
) -> str:
    """Horizontal-axis bar chart (0..1) with interval whiskers and optional threshold ticks."""
    left, right, top, bottom = 70, 20, 24, 20
    plot_w = width - left - right
    row_h = (height - top - bottom) / max(1, len(labels))
    parts = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'role="img" aria-label="{_e(title)}">'
        ),
        f'<text x="{left}" y="14" font-size="12" font-weight="bold">{_e(title)}</text>',
    ]
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = left + tick * plot_w
        parts.append(
            f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{height - bottom}" stroke="#ddd"/>'
            f'<text x="{x:.1f}" y="{height - 6}" font-size="10" text-anchor="middle">'
            f"{tick:.2f}</text>"
        )
    for i, (label, v) in enumerate(zip(labels, values)):
        y = top + i * row_h
        color = CLASS_COLORS.get(label, "#4c78a8")
        parts.append(
            f'<text x="{left - 6}" y="{y + row_h * 0.65:.1f}" font-size="11" '
            f'text-anchor="end">{_e(label)}</text>'
        )
        if v is None or math.isnan(v):
            continue
        parts.append(
            f'<rect x="{left}" y="{y + row_h * 0.15:.1f}" width="{max(0.0, v) * plot_w:.1f}" '
            f'height="{row_h * 0.7:.1f}" fill="{color}"><title>{_e(label)}: {v:.3f}</title>'
            "</rect>"
        )
        if intervals is not None:
            lo, hi = intervals[i]
            if not (math.isnan(lo) or math.isnan(hi)):
                ym = y + row_h / 2
                x0, x1 = left + lo * plot_w, left + hi * plot_w
                parts.append(
                    f'<line x1="{x0:.1f}" y1="{ym:.1f}" x2="{x1:.1f}" y2="{ym:.1f}" '
                    'stroke="black" stroke-width="1.5"/>'
                    f'<line x1="{x0:.1f}" y1="{ym - 4:.1f}" x2="{x0:.1f}" y2="{ym + 4:.1f}" '
                    'stroke="black"/>'
                    f'<line x1="{x1:.1f}" y1="{ym - 4:.1f}" x2="{x1:.1f}" y2="{ym + 4:.1f}" '
                    'stroke="black"/>'
                )
        if thresholds and label in thresholds:
            xt = left + thresholds[label] * plot_w
            parts.append(
                f'<line x1="{xt:.1f}" y1="{y + 1:.1f}" x2="{xt:.1f}" y2="{y + row_h - 1:.1f}" '
                'stroke="black" stroke-dasharray="3,2" stroke-width="2"/>'
            )
    parts.append("</svg>")
    return "".join(parts)


def svg_timeline(tl: Timeline, width: int = 720, height: int = 240) -> str:
    """Line chart of the smoothed per-class probabilities over time (NaN gaps break lines)."""
    data = tl.data
    left, right, top, bottom = 40, 90, 10, 24
    plot_w, plot_h = width - left - right, height - top - bottom
    parts = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            'role="img" aria-label="timeline">'
        )
    ]
    if data.empty:
        parts.append('<text x="10" y="20" font-size="12">no data</text></svg>')
        return "".join(parts)
    t = data["t_s"].to_numpy(dtype=float)
    t0, t1 = float(t.min()), float(t.max())
    span = t1 - t0 if t1 > t0 else 1.0

    def xy(ti: float, p: float) -> str:
        return f"{left + (ti - t0) / span * plot_w:.1f},{top + (1 - p) * plot_h:.1f}"

    for frac in (0.0, 0.5, 1.0):
        y = top + (1 - frac) * plot_h
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#ddd"/>'
            f'<text x="{left - 4}" y="{y + 4:.1f}" font-size="10" text-anchor="end">'
            f"{frac:.1f}</text>"
        )
    parts.append(
        f'<text x="{left}" y="{height - 6}" font-size="10">{t0:.0f} s</text>'
        f'<text x="{left + plot_w}" y="{height - 6}" font-size="10" text-anchor="end">'
        f"{t1:.0f} s</text>"
    )
    for k, cls in enumerate(CLASSES):
        values = data[cls].to_numpy(dtype=float)
        segment: list[str] = []
        segments: list[list[str]] = []
        for ti, p in zip(t, values):
            if np.isnan(p):
                if segment:
                    segments.append(segment)
                segment = []
            else:
                segment.append(xy(ti, p))
        if segment:
            segments.append(segment)
        for seg in segments:
            if len(seg) == 1:
                seg = seg * 2
            parts.append(
                f'<polyline fill="none" stroke="{CLASS_COLORS[cls]}" stroke-width="1.5" '
                f'points="{" ".join(seg)}"/>'
            )
        ly = top + 12 + k * 16
        parts.append(
            f'<rect x="{left + plot_w + 10}" y="{ly - 8}" width="10" height="10" '
            f'fill="{CLASS_COLORS[cls]}"/><text x="{left + plot_w + 24}" y="{ly + 1}" '
            f'font-size="11">{cls}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _table(df: pd.DataFrame) -> str:
    return df.to_html(index=False, escape=True, float_format=lambda v: f"{v:.3f}", na_rep="n/a")


def _card_section(card: ModelCard | Mapping[str, Any] | None) -> str:
    if card is None:
        return "<p>No model card available for this session's model.</p>"
    data = card.to_dict() if isinstance(card, ModelCard) else dict(card)
    keys = [
        "name",
        "arch",
        "training_data",
        "validation_split",
        "epochs",
        "val_accuracy",
        "val_accuracy_tta",
        "val_macro_f1",
        "temperature",
        "ece_after",
        "date",
    ]
    rows = "".join(
        f"<tr><th>{_e(k)}</th><td>{_e(data.get(k))}</td></tr>" for k in keys if k in data
    )
    out = f"<table>{rows}</table>"
    per_class = per_class_frame(data)
    if per_class is not None:
        out += "<h3>Per-class validation metrics</h3>" + _table(per_class)
    return out


def analysis_settings_text(
    meta: Mapping[str, Any], card: ModelCard | Mapping[str, Any] | None
) -> str:
    """How the session's frames were analysed (its meta.json "pipeline"), in a sentence."""
    settings = meta.get("pipeline")
    if not isinstance(settings, dict) or not settings:
        return "Analysis settings not recorded (a session from an older version)."
    parts = []
    every = settings.get("every")
    if isinstance(every, int) and every > 1:
        parts.append(f"one frame in {every}")
    if settings.get("tta") is True:
        data = card.to_dict() if isinstance(card, ModelCard) else dict(card or {})
        tta_acc = data.get("val_accuracy_tta")
        with_tta = (
            f"; validation accuracy with it {tta_acc:.2%}" if isinstance(tta_acc, float) else ""
        )
        parts.append(f"mirror TTA (each face averaged with its mirror image{with_tta})")
    else:
        parts.append("no test-time augmentation (the per-class figures above apply as they are)")
    return "Analysed with " + ", ".join(parts) + "."


def per_class_frame(card: ModelCard | Mapping[str, Any] | None) -> pd.DataFrame | None:
    """The card's per_class metrics as a table (class + one column per metric), or None."""
    if card is None:
        return None
    data = card.to_dict() if isinstance(card, ModelCard) else dict(card)
    per_class = data.get("per_class") or {}
    if not isinstance(per_class, Mapping) or not per_class:
        return None
    rows = []
    for cls in CLASSES:
        metrics = per_class.get(cls)
        if isinstance(metrics, Mapping):
            rows.append({"class": cls, **{str(k): v for k, v in metrics.items()}})
    return pd.DataFrame(rows) if rows else None


def build_html_report(
    meta: Mapping[str, Any],
    stats: SessionStats,
    result: NervousnessResult,
    rule: NervousnessRule,
    card: ModelCard | Mapping[str, Any] | None = None,
    tl: Timeline | None = None,
    comparison: Comparison | None = None,
    t_range: tuple[float, float] | None = None,
    face_id: int | None = None,
) -> str:
    """A self-contained HTML report of one session (no scripts, no network).

    meta: the session's meta dict; stats / result: its statistics and verdict (for t_range,
    if given); card: the model card; tl: its timeline; comparison: optional comparison to show;
    face_id: the face the verdict (result) and timeline are for, when one was chosen (its
    distribution is then shown, not the pooled one).
    """
    d = stats.distribution_of(face_id)
    title = f"Emotion analysis - {meta.get('candidate') or stats.name}"
    generated = datetime.now(UTC).isoformat(timespec="seconds")
    thresholds = dict(rule.thresholds) if rule.logic != "sum" else None
    info_rows = [
        ("Session", meta.get("session_id", stats.name)),
        ("Candidate", meta.get("candidate", "")),
        ("Started", meta.get("started_at", "")),
        ("Source", meta.get("source", "")),
        ("Model", f"{meta.get('model_name', '')} ({meta.get('model_hash', '')})"),
        ("Complete", meta.get("complete", "")),
        ("Time range", f"{t_range[0]:.1f}-{t_range[1]:.1f} s" if t_range else "whole session"),
        ("Faces analysed", "all faces" if face_id is None else f"face {face_id} only"),
        ("Duration", f"{stats.duration_s:.1f} s"),
        ("Frames", stats.n_frames),
        ("Frames with no face", stats.n_frames_no_face),
        ("Time with a face", f"{d.face_s:.1f} s"),
        ("Faces seen", stats.faces_seen),
        ("Notes", meta.get("notes", "")),
    ]
    if data_notes(meta):  # rows of the recording that could not be read are left out
        info_rows.append(("Rows left out", " | ".join(data_notes(meta))))
    info = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in info_rows)
    level = f"{d.confidence * 100:.0f}%"
    widening = math.isfinite(d.widen) and d.widen > 1.005
    widened = f", widened x{d.widen:.2f} for few blocks" if widening else ""
    method = (
        "Shares and mean probabilities weight each frame by the time it stands for. "
        f"{level} intervals: circular block bootstrap over time, blocks of {d.block_s:.1f} s "
        f"({d.block_frames} frames), {d.n_boot} replicates{widened}. "
        + analysis_settings_text(meta, card)
    )
    charts = svg_bars(
        d.share,
        d.share_ci,
        title=f"{BASIS_LABELS['share'].capitalize()} (top label), {level} CI",
        thresholds=thresholds if rule.basis == "share" else None,
    ) + svg_bars(
        d.mean_prob,
        d.mean_prob_ci,
        title=f"Mean probability, {level} CI",
        thresholds=thresholds if rule.basis == "mean_prob" else None,
    )
    reasons = "".join(f"<li>{_e(r.text)}</li>" for r in result.reasons)
    faces = ""
    if stats.faces:
        faces = (
            "<h2>Per face</h2><p>Share of each face's observations by top label, weighted by "
            "time, and its verdict under the rule.</p>"
            + _table(pd.DataFrame(per_face_table(rule, stats)))
        )
    scope = "" if face_id is None else f", face {face_id}"
    note = d.intervals_note
    caveat = (
        f'<p class="warn">{_e(d.intervals_warning)}</p>'
        if note and note not in result.summary
        else ""
    )
    timeline_html = ""
    if tl is not None:
        timeline_html = (
            f"<h2>Timeline</h2><p>Per-class probability, {tl.step_s:g} s steps, rolling mean over "
            f"{tl.smooth_s:g} s.</p>" + svg_timeline(tl)
        )
    comparison_html = ""
    if comparison is not None:
        # NOTE: built from rows, not pivoted: a session may itself be called "class".
        wide = pd.DataFrame(
            [[cls, *(vals[k] for vals in comparison.values)] for k, cls in enumerate(CLASSES)],
            columns=["class", *comparison.names],
        )
        whole = (
            "<p>The comparison uses each session whole, all faces pooled (not the face or "
            "time range above).</p>"
            if t_range is not None or face_id is not None
            else ""
        )
        comparison_html = (
            f"<h2>Comparison ({_e(BASIS_LABELS[comparison.basis])})</h2>{whole}"
            f"<p>{_e(comparison.sentence)}</p>" + _table(wide)
        )
        if len(comparison.pairs) > 1:  # with two sessions the one pair is the sentence above
            pairs = pairs_frame(comparison)
            pairs["p (Holm)"] = [_num(p, 4) for p in pairs["p (Holm)"]]
            comparison_html += (
                "<h3>Pairwise comparisons</h3><p>Each pair of sessions: block permutation "
                "test, p-values Holm-adjusted over all pairs; effect size = Jensen-Shannon "
                "distance (0 = identical, 1 = no overlap).</p>" + _table(pairs)
            )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>
<style>
body {{ font-family: sans-serif; max-width: 980px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0; }}
th, td {{ border: 1px solid #ccc; padding: 3px 8px; text-align: left; font-size: 13px; }}
.warn {{ background: #fff4e5; border-left: 4px solid #f0a030; padding: 0.6em 1em; }}
.verdict {{ font-size: 1.3em; font-weight: bold; }}
</style></head><body>
<h1>{_e(title)}</h1>
<p class="warn">{_e(DISCLAIMER)}</p>
<table>{info}</table>
<h2>Nervousness indicator (heuristic){_e(scope)}</h2>
<p class="verdict">Verdict: {_e(result.verdict)}</p>{caveat}
<p>{_e(result.summary)}</p>
<ul>{reasons}</ul>
<h3>Rule</h3>
<p>{_e(rule.describe())}</p>
<p>{_e(rule.description)}</p>
<pre>{_e(rule.to_json())}</pre>
<h2>Emotion distribution</h2>
<p>{_e(method)}</p>
{charts}
{_table(d.to_frame())}
{faces}
{timeline_html}
{comparison_html}
<h2>Model card</h2>
{_card_section(card)}
<h2>Responsible use</h2>
<p>{_e(RESPONSIBLE_USE)}</p>
<p style="color:#888;font-size:12px">Generated {_e(generated)}.</p>
</body></html>
"""
