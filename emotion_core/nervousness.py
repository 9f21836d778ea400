"""The "nervousness" rule: a named, serialisable heuristic over a session's emotion distribution.

This is a HEURISTIC INDICATOR computed from a facial-expression classifier's output. It is not a
measurement of anxiety or of any inner state, and it must not be used as a hiring signal or for
any decision about a person. Every result carries `DISCLAIMER`.

A rule picks some emotions, a threshold per emotion (or one threshold for their sum), a logic
("any": nervous when any emotion exceeds its threshold; "all": when every one does; "sum": when
their combined value exceeds `sum_threshold`), a basis ("share": share of face observations,
one per face per frame, whose top label is the emotion; "mean_prob": mean probability) and a
minimum duration before any verdict is given. "Exceeds" is strict (value > threshold), as in
the original app; a value equal to the threshold up to rounding (`TIE_TOLERANCE`) does not.

The minimum duration applies to the time a face was in view: on the Analysis page the time its
frames stand for (stats.frame_weights), on the Live page the seconds between frames with a face
(`face_time_s` estimates it from frame counts where nothing better is known). A face seen in a
few frames of a long session therefore gets "not enough data", not a verdict on two frames.

With bootstrap intervals (`evaluate_rule`), a verdict is only "nervous" / "not nervous" when
the interval lies entirely on one side of the threshold(s) that decide it; otherwise it is
"inconclusive". A rule that tests several emotions one by one ("any"/"all") uses intervals
at a Bonferroni-adjusted level (`rule_confidence`: 98.3% for three emotions at 95%), so testing
more emotions does not make "nervous" ("any") or "not nervous" ("all") likelier by chance (the
other side is then conservative). When the observations fall into
fewer than 2 bootstrap blocks the interval says nothing (every replicate resamples the same few
frames) and the verdict is "not enough data". When the distribution is flagged `persistent`
(expressions last for a large part of the session, so its intervals may be too narrow) a
verdict is never more than "inconclusive", and the result's `caveat` says why. Running counts
(`evaluate_rule_on_counts`, for the Live page) have no intervals and give "nervous", "not
nervous" or "not enough data".
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from emotion_core.classes import CLASSES
from emotion_core.stats import BASES, BASIS_LABELS, Basis, Distribution, SessionStats

Logic = Literal["any", "all", "sum"]
LOGICS: tuple[str, ...] = ("any", "all", "sum")
VERDICTS: tuple[str, ...] = ("nervous", "not nervous", "inconclusive", "not enough data")
DISCLAIMER = (
    "Heuristic indicator only: it summarises what an imperfect facial-expression classifier "
    "output. It is not a measurement of anxiety or of any inner state, and it must not be used "
    "as a hiring signal or for any decision about a person."
)
RULE_FORMAT_VERSION = 1


class RuleError(ValueError):
    """A rule is invalid (unknown emotion, threshold out of range, bad logic or basis)."""


# A face in view for an hour is surely enough; the sidebar offers the same range.
MAX_MIN_DURATION_S = 3600.0


@dataclass(frozen=True)
class NervousnessRule:
    """A named nervousness heuristic.

    name: shown in the UI and reports ("seed", "negative-affect", "custom", ...).
    thresholds: ((emotion, threshold in [0, 1]), ...) in the order given; the emotions used.
    logic: "any" | "all" | "sum". For "sum" the per-emotion thresholds are ignored and
    sum_threshold applies to the emotions' combined value.
    basis: "share" (of face observations - one per face per frame - by top label) |
    "mean_prob".
    description: display text only; it is not part of rule equality, so a rule saved with an
    older description still matches its preset.
    min_duration_s: with a face in view for less than this many seconds (see `face_time_s`)
    the verdict is "not enough data".
    """

    name: str
    thresholds: tuple[tuple[str, float], ...]
    logic: Logic = "any"
    basis: Basis = "share"
    sum_threshold: float = 0.35
    min_duration_s: float = 10.0
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not str(self.name).strip():
            raise RuleError("rule name is empty")
        if not self.thresholds:
            raise RuleError("rule uses no emotions")
        seen = set()
        for emotion, thr in self.thresholds:
            if emotion not in CLASSES:
                raise RuleError(f"unknown emotion {emotion!r} (expected one of {CLASSES})")
            if emotion in seen:
                raise RuleError(f"emotion {emotion!r} listed twice")
            seen.add(emotion)
            if not (isinstance(thr, (int, float)) and 0.0 <= float(thr) <= 1.0):
                raise RuleError(f"threshold for {emotion} must be between 0 and 1, got {thr!r}")
        if self.logic not in LOGICS:
            raise RuleError(f"logic must be one of {LOGICS}, got {self.logic!r}")
        if self.basis not in BASES:
            raise RuleError(f"basis must be one of {BASES}, got {self.basis!r}")
        # Shares, and mean probabilities, of several emotions add up to at most 1.
        if not 0.0 <= float(self.sum_threshold) <= 1.0:
            raise RuleError(f"sum threshold must be between 0 and 1, got {self.sum_threshold!r}")
        if not 0.0 <= float(self.min_duration_s) <= MAX_MIN_DURATION_S:
            raise RuleError(
                f"minimum duration must be between 0 and {MAX_MIN_DURATION_S:g} s, got "
                f"{self.min_duration_s!r}"
            )

    @property
    def emotions(self) -> tuple[str, ...]:
        """The emotions the rule looks at."""
        return tuple(e for e, _ in self.thresholds)

    def threshold_for(self, emotion: str) -> float:
        """The threshold of one emotion (KeyError if the rule does not use it)."""
        for e, thr in self.thresholds:
            if e == emotion:
                return float(thr)
        raise KeyError(emotion)

    def replace(self, **changes: Any) -> NervousnessRule:
        """A copy with some fields changed (validated)."""
        return replace(self, **changes)

    def describe(self) -> str:
        """One plain-words sentence describing the rule."""
        basis = BASIS_LABELS[self.basis]
        if self.logic == "sum":
            body = (
                f"nervous when {' + '.join(self.emotions)} combined ({basis}) exceeds "
                f"{_fmt(self.sum_threshold, self.basis)}"
            )
        else:
            thr = {t for _, t in self.thresholds}
            word = "ANY" if self.logic == "any" else "ALL"
            if len(thr) == 1:
                body = (
                    f"nervous when {word} of {', '.join(self.emotions)} exceeds "
                    f"{_fmt(next(iter(thr)), self.basis)} ({basis})"
                )
            else:
                parts = ", ".join(f"{e} > {_fmt(t, self.basis)}" for e, t in self.thresholds)
                body = f"nervous when {word} of: {parts} ({basis})"
        return (
            f"Rule '{self.name}': {body}; at least {self.min_duration_s:g} s needed "
            "(heuristic indicator)."
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (inverse of from_dict)."""
        return {
            "name": self.name,
            "thresholds": {e: float(t) for e, t in self.thresholds},
            "logic": self.logic,
            "basis": self.basis,
            "sum_threshold": float(self.sum_threshold),
            "min_duration_s": float(self.min_duration_s),
            "description": self.description,
            "format_version": RULE_FORMAT_VERSION,
        }

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> NervousnessRule:
        """Build a rule from to_dict() output; raise RuleError with a clear message if invalid.

        thresholds may be a mapping {emotion: threshold} or a list of [emotion, threshold].
        """
        if not isinstance(data, Mapping):
            raise RuleError("rule must be a JSON object")
        raw = data.get("thresholds")
        try:
            if isinstance(raw, Mapping):
                pairs = tuple((str(e), float(t)) for e, t in raw.items())
            elif isinstance(raw, (list, tuple)):
                pairs = tuple((str(e), float(t)) for e, t in raw)
            else:
                raise RuleError("rule lacks 'thresholds'")
            return NervousnessRule(
                name=str(data.get("name", "custom")),
                thresholds=pairs,
                logic=data.get("logic", "any"),
                basis=data.get("basis", "share"),
                sum_threshold=float(data.get("sum_threshold", 0.35)),
                min_duration_s=float(data.get("min_duration_s", 10.0)),
                description=str(data.get("description", "")),
            )
        except (TypeError, ValueError, OverflowError) as exc:
            if isinstance(exc, RuleError):
                raise
            raise RuleError(f"invalid rule: {exc}") from exc

    def to_json(self) -> str:
        """JSON text of to_dict()."""
        return json.dumps(self.to_dict(), indent=2)

    @staticmethod
    def from_json(text: str) -> NervousnessRule:
        """Inverse of to_json (RuleError on bad JSON)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RuleError(f"rule is not valid JSON ({exc})") from exc
        return NervousnessRule.from_dict(data)


SEED_RULE = NervousnessRule(
    name="seed",
    thresholds=tuple((e, 0.30) for e in ("angry", "neutral", "fear", "sad", "surprise")),
    logic="any",
    basis="share",
    min_duration_s=10.0,
    description=(
        "The original app's rule: nervous when the share of ANY of angry, neutral, fear, sad or "
        "surprise exceeds 30% of face observations (one per face per frame; disgust ignored). "
        "Note that it counts neutral, so a calm, expressionless face is often called 'nervous'."
    ),
)
NEGATIVE_AFFECT_RULE = NervousnessRule(
    name="negative-affect",
    thresholds=tuple((e, 0.35) for e in ("fear", "sad", "surprise", "angry")),
    logic="sum",
    basis="share",
    sum_threshold=0.35,
    min_duration_s=10.0,
    description=(
        "Nervous when fear, sad, surprise and angry together exceed 35% of face observations; "
        "neutral (and disgust) excluded."
    ),
)
PRESETS: dict[str, NervousnessRule] = {
    SEED_RULE.name: SEED_RULE,
    NEGATIVE_AFFECT_RULE.name: NEGATIVE_AFFECT_RULE,
}
DEFAULT_RULE = SEED_RULE


def preset(name: str) -> NervousnessRule:
    """A preset rule by name (RuleError if unknown)."""
    try:
        return PRESETS[name]
    except KeyError as exc:
        raise RuleError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}") from exc


@dataclass(frozen=True)
class Reason:
    """Why a verdict was reached, for one emotion (or the combined sum).

    what: emotion name, or "a+b+c" for the sum logic; value: the statistic; threshold;
    margin: value - threshold; lo / hi: interval bounds (NaN without bootstrap);
    crossed: value > threshold; straddles: the interval contains the threshold;
    text: one plain-words line.
    """

    what: str
    value: float
    threshold: float
    margin: float
    lo: float
    hi: float
    crossed: bool
    straddles: bool
    text: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "what": self.what,
            "value": self.value,
            "threshold": self.threshold,
            "margin": self.margin,
            "lo": self.lo,
            "hi": self.hi,
            "crossed": self.crossed,
            "straddles": self.straddles,
            "text": self.text,
        }


@dataclass(frozen=True)
class NervousnessResult:
    """The verdict of a rule on one session (or face, or time range).

    verdict: one of VERDICTS; reasons: one per emotion (or one for "sum"); summary: one line;
    duration_s: seconds recorded; face_time_s: seconds with a face in view (what
    min_duration_s is compared with); with_ci: whether bootstrap intervals were used;
    caveat: why the intervals may be too narrow ("" if no reason; see
    Distribution.intervals_note), in which case the verdict is at most "inconclusive";
    disclaimer: always DISCLAIMER.
    """

    verdict: str
    rule_name: str
    rule: dict[str, Any]
    reasons: tuple[Reason, ...]
    summary: str
    duration_s: float
    face_time_s: float
    frames_with_face: int
    with_ci: bool
    confidence: float | None = None
    caveat: str = ""
    disclaimer: str = DISCLAIMER

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "verdict": self.verdict,
            "rule_name": self.rule_name,
            "rule": self.rule,
            "reasons": [r.to_dict() for r in self.reasons],
            "summary": self.summary,
            "duration_s": self.duration_s,
            "face_time_s": self.face_time_s,
            "frames_with_face": self.frames_with_face,
            "with_ci": self.with_ci,
            "confidence": self.confidence,
            "caveat": self.caveat,
            "disclaimer": self.disclaimer,
        }


def _fmt(v: float, basis: str) -> str:
    if math.isnan(v):
        return "n/a"
    return f"{v * 100:.0f}%" if basis == "share" else f"{v:.2f}"


def _margin_text(margin: float, basis: str) -> str:
    if basis == "share":
        return f"{abs(margin) * 100:.1f} points"
    return f"{abs(margin):.3f}"


TIE_TOLERANCE = 1e-9


def _snap(x: float, thr: float) -> float:
    """x, or thr itself when x differs from it only by rounding."""
    return thr if abs(x - thr) <= TIE_TOLERANCE else x


def _reason(
    what: str,
    value: float,
    thr: float,
    lo: float,
    hi: float,
    basis: str,
    conf: float | None,
    narrow: bool = False,
) -> Reason:
    """One emotion's (or the sum's) reason; narrow: the interval may be too narrow to trust.

    Values within TIE_TOLERANCE of the threshold count as equal to it (a share of exactly 35%
    summed from 5% + 10% + 20% comes out as 0.35000000000000003, which must not "exceed" 35%).
    """
    value, lo, hi = (_snap(x, thr) for x in (value, lo, hi))
    margin = value - thr
    crossed = bool(value > thr)
    has_ci = not (math.isnan(lo) or math.isnan(hi))
    straddles = bool(has_ci and lo <= thr < hi)
    unit = "of face observations" if basis == "share" else "mean probability"
    side = "above" if crossed else ("at" if margin == 0 else "below")
    text = f"{what}: {_fmt(value, basis)} {unit} vs threshold {_fmt(thr, basis)}"
    text += f" - {side} by {_margin_text(margin, basis)}" if margin != 0 else " - exactly at it"
    if has_ci:
        level = f"{(conf or 0.95) * 100:.3g}% CI"
        where = (
            "straddles the threshold"
            if straddles
            else ("entirely above" if lo > thr else "entirely at or below")
        )
        if narrow and not straddles:
            where += ", but the interval may be too narrow"
        text += f" ({level} {_fmt(lo, basis)}-{_fmt(hi, basis)}, {where})"
    return Reason(what, value, thr, margin, lo, hi, crossed, straddles, text)


def _decide(rule: NervousnessRule, reasons: Sequence[Reason], with_ci: bool) -> str:
    """Combine reasons into a verdict (see module doc)."""
    if with_ci:
        above = [r.lo > r.threshold for r in reasons]
        below = [r.hi <= r.threshold for r in reasons]
    else:
        above = [r.crossed for r in reasons]
        below = [not r.crossed for r in reasons]
    if rule.logic == "all":
        if all(above):
            return "nervous"
        if any(below):
            return "not nervous"
    else:  # "any" and "sum" (one reason)
        if any(above):
            return "nervous"
        if all(below):
            return "not nervous"
    return "inconclusive"


def _summary(
    verdict: str, rule: NervousnessRule, reasons: Sequence[Reason], why: str, caveat: str = ""
) -> str:
    head = f"Heuristic indicator ({rule.name} rule): {verdict}"
    if verdict == "not enough data":
        return f"{head} - {why}."
    crossed = [r for r in reasons if r.crossed]
    straddling = [r for r in reasons if r.straddles]
    parts = []
    if crossed:
        parts.append(
            "above threshold: "
            + ", ".join(f"{r.what} {_fmt(r.value, rule.basis)}" for r in crossed)
        )
    else:
        parts.append("nothing above its threshold")
    if verdict == "inconclusive" and straddling:
        parts.append(
            "the interval straddles the threshold for " + ", ".join(r.what for r in straddling)
        )
    if caveat:
        parts.append(caveat)
    return f"{head} - " + "; ".join(parts) + "."


def face_time_s(duration_s: float, frames_with_face: int, n_frames: int | None) -> float:
    """Seconds with a face in view: duration_s x frames_with_face / n_frames.

    That is the recorded time times the share of frames that had a face, so a face present
    throughout gets the whole duration and one seen in 2 of 300 frames gets 2/300 of it.
    n_frames None: every frame is taken to have had a face (duration_s as given).
    """
    if n_frames is None:
        return float(duration_s)
    if n_frames <= 0:
        return 0.0
    return float(duration_s) * min(max(frames_with_face, 0), n_frames) / n_frames


def _not_enough(
    rule: NervousnessRule,
    values: np.ndarray,
    frames_with_face: int,
    duration_s: float,
    seen_s: float,
) -> str:
    """Why there is not enough data for a verdict ("" when there is)."""
    if frames_with_face <= 0 or np.isnan(values).all():
        return "no face was seen"
    if seen_s >= rule.min_duration_s:
        return ""
    if seen_s < duration_s - 1e-9:
        return (
            f"a face was in view for {seen_s:.1f} s of the {duration_s:.1f} s recorded, the "
            f"rule needs at least {rule.min_duration_s:g} s with a face"
        )
    return f"{duration_s:.1f} s recorded, the rule needs at least {rule.min_duration_s:g} s"


def _evaluate(
    rule: NervousnessRule,
    values: np.ndarray,
    ci: np.ndarray | None,
    combined: tuple[float, float, float] | None,
    frames_with_face: int,
    duration_s: float,
    confidence: float | None,
    seen_s: float,
    data_note: str = "",
    caveat: str = "",
) -> NervousnessResult:
    """Shared core: values (7,) for rule.basis, ci (7, 2) or None, combined sum (v, lo, hi).

    seen_s: seconds with a face in view (compared with rule.min_duration_s); data_note: a reason
    the intervals carry no information ("" if none), which also gives "not enough data";
    caveat: a reason the intervals may be too narrow ("" if none), which caps the verdict at
    "inconclusive".
    """
    with_ci = ci is not None
    why = _not_enough(rule, values, frames_with_face, duration_s, seen_s) or data_note
    narrow = bool(caveat)
    reasons: list[Reason] = []
    if not why:
        if rule.logic == "sum":
            v, lo, hi = combined if combined is not None else (math.nan, math.nan, math.nan)
            if combined is None:
                idx = [CLASSES.index(e) for e in rule.emotions]
                v = float(values[idx].sum())
            what = "+".join(rule.emotions)
            reasons.append(
                _reason(what, v, rule.sum_threshold, lo, hi, rule.basis, confidence, narrow)
            )
        else:
            for emotion, thr in rule.thresholds:
                i = CLASSES.index(emotion)
                lo = float(ci[i, 0]) if ci is not None else math.nan
                hi = float(ci[i, 1]) if ci is not None else math.nan
                reasons.append(
                    _reason(emotion, float(values[i]), thr, lo, hi, rule.basis, confidence, narrow)
                )
    verdict = "not enough data" if why else _decide(rule, reasons, with_ci)
    caveat = "" if why else caveat
    if caveat and verdict in ("nervous", "not nervous"):
        verdict = "inconclusive"
    return NervousnessResult(
        verdict=verdict,
        rule_name=rule.name,
        rule=rule.to_dict(),
        reasons=tuple(reasons),
        summary=_summary(verdict, rule, reasons, why, caveat),
        duration_s=float(duration_s),
        face_time_s=float(seen_s),
        frames_with_face=int(frames_with_face),
        with_ci=with_ci,
        confidence=confidence if with_ci else None,
        caveat=caveat,
    )


def _blocks_note(dist: Distribution) -> str:
    """Why the distribution's intervals carry no information ("" when they do)."""
    if dist.n_obs == 0 or not dist.too_few_blocks:
        return ""
    return (
        f"a face was seen within a single {dist.block_s:.1f} s bootstrap block, too little for "
        "an interval (at least 2 blocks needed)"
    )


def rule_confidence(rule: NervousnessRule, confidence: float) -> float:
    """The interval level a rule's verdict uses: `confidence`, Bonferroni-adjusted when the
    rule tests k > 1 emotions one by one ("any"/"all": 1 - (1 - confidence) / k), so that
    testing several emotions does not make "nervous" ("any") or "not nervous" ("all") likelier
    by chance. The other side of each verdict needs no adjustment; using the same intervals
    there is conservative (it can only turn a verdict into "inconclusive")."""
    k = len(rule.thresholds) if rule.logic in ("any", "all") else 1
    return 1.0 - (1.0 - confidence) / k if k > 1 else confidence


def evaluate_distribution(
    rule: NervousnessRule, dist: Distribution, duration_s: float
) -> NervousnessResult:
    """Evaluate a rule on a Distribution (with its block-bootstrap intervals).

    duration_s: seconds covered by the frames dist was computed from (session or time range);
    the minimum duration applies to duration_s x dist.face_fraction (time with a face).
    """
    combined = dist.combined(rule.basis, rule.emotions) if rule.logic == "sum" else None
    confidence = rule_confidence(rule, dist.confidence)
    return _evaluate(
        rule,
        dist.values(rule.basis),
        dist.interval_at(rule.basis, confidence),
        combined,
        dist.n_obs,
        duration_s,
        confidence,
        float(duration_s) * dist.face_fraction,
        _blocks_note(dist),
        dist.intervals_note,
    )


def evaluate_rule(
    rule: NervousnessRule, stats: SessionStats, face_id: int | None = None
) -> NervousnessResult:
    """Evaluate a rule on a session's statistics (all faces pooled, or one face)."""
    if face_id is None:
        return evaluate_distribution(rule, stats.distribution, stats.duration_s)
    for face in stats.faces:
        if face.face_id == face_id:
            return evaluate_distribution(rule, face.distribution, stats.duration_s)
    raise KeyError(f"face {face_id} not in session {stats.name}")


def per_face_table(rule: NervousnessRule, stats: SessionStats) -> list[dict[str, Any]]:
    """One row per face: its frames, seconds in view, verdict under the rule and class shares."""
    rows = []
    for face in stats.faces:
        result = evaluate_rule(rule, stats, face.face_id)
        shares = {c: round(float(v), 3) for c, v in zip(CLASSES, face.distribution.share)}
        rows.append(
            {
                "face": face.face_id,
                "frames": face.n_frames,
                "seen (s)": round(result.face_time_s, 1),
                "verdict": result.verdict,
            }
            | shares
        )
    return rows


def _as_vector(values: Mapping[str, float] | Sequence[float] | np.ndarray | None) -> np.ndarray:
    if values is None:
        return np.full(len(CLASSES), np.nan)
    if isinstance(values, Mapping):
        return np.array([float(values.get(c, 0.0)) for c in CLASSES])
    arr = np.asarray(values, dtype=float)
    if arr.shape != (len(CLASSES),):
        raise ValueError(f"expected {len(CLASSES)} values in CLASSES order, got {arr.shape}")
    return arr


def evaluate_rule_on_counts(
    rule: NervousnessRule,
    label_counts: Mapping[str, float] | Sequence[float] | np.ndarray,
    mean_probs: Mapping[str, float] | Sequence[float] | np.ndarray | None,
    frames_with_face: int,
    duration_s: float,
    n_frames: int | None = None,
    face_time: float | None = None,
) -> NervousnessResult:
    """Fast evaluation on running totals (Live page): no bootstrap, so never "inconclusive".

    label_counts: top-label counts per class ({class: n} or (7,) in CLASSES order), or their
    time-weighted totals (LiveSnapshot.label_time, as the Analysis page weighs frames); shares
    are label_counts / sum(label_counts), i.e. of face observations (one per face per frame).
    mean_probs: mean probability per class (only needed for basis "mean_prob"; None otherwise).
    frames_with_face: frames where a face was seen (0 -> "not enough data").
    duration_s: seconds recorded so far.
    n_frames: frames analysed so far, with or without a face. When given, rule.min_duration_s
    applies to the time with a face in view, duration_s x frames_with_face / n_frames, as on
    the Analysis page; None compares duration_s itself (every frame assumed to have a face).
    face_time: the seconds with a face in view, measured (LiveSnapshot.face_time_s); when given
    it is what rule.min_duration_s applies to, instead of the estimate from n_frames.
    """
    counts = _as_vector(label_counts)
    total = float(counts.sum())
    if rule.basis == "share":
        values = counts / total if total > 0 else np.full(len(CLASSES), np.nan)
    elif mean_probs is None:
        raise ValueError("rule basis is mean_prob: pass mean_probs")
    else:
        values = _as_vector(mean_probs)
    if face_time is not None:
        seen_s = min(max(float(face_time), 0.0), float(duration_s))
    else:
        seen_s = face_time_s(duration_s, frames_with_face, n_frames)
    return _evaluate(rule, values, None, None, frames_with_face, duration_s, None, seen_s)
