"""Statistics over recorded sessions: distributions with block-bootstrap CIs, timelines, tests.

Input everywhere is a session's frames DataFrame (docs/CONTRACTS.md): one row per face per
frame with columns ``t_s, frame, face_id, x, y, w, h, <7 class probabilities>, label``; a frame
with no face has one row with ``face_id == -1`` and empty probabilities.

Units and conventions
---------------------
* A *frame* is one distinct value of the ``frame`` column (its time is the smallest ``t_s``).
* An *observation* is one face row (``face_id >= 0`` with all 7 probabilities present). The
  session-level distribution pools every face's observations; per-face distributions use that
  face's observations only.
* "Share" is the fraction of observations whose top label (argmax of the probabilities) is a
  class; "mean probability" is the average probability the model gave the class.
* Both are **weighted by time**: each frame stands for the time around it (half the gap to
  the frame before plus half the gap to the next, a gap counting at most `MAX_GAP_STEPS`
  typical frame steps or `MAX_GAP_S`, so a stall is not stretched over). A stretch analysed at
  10 fps then counts as much as an equally long one at 30 fps; with an even frame rate this is
  the plain count.
* Duration = last frame time - first frame time (as in emotion_core.sessions).
* Confidence intervals come from a **circular block bootstrap over time**: the session's frames
  (including frames without a face, which carry zero weight) are cut into blocks of
  ``block_s`` seconds (lengthened automatically to ``auto_block_factor`` integrated
  autocorrelation times when the data are more persistent) that may start at any frame and wrap
  around the end; blocks are drawn with
  replacement and the statistic is the ratio estimator sum(values) / sum(observations). This
  keeps the strong frame-to-frame autocorrelation of video inside each block, so intervals are
  honest where an i.i.d. bootstrap over frames would be far too narrow. With few blocks the
  percentile interval is still too narrow (its variance is an overlapping-batch-means estimate
  from few batches), so it is widened about the estimate by `small_sample_factor`.
* The autocorrelation time uses Geyer's initial monotone sequence estimator. A session shorter
  than `PERSISTENT_MIN_TAUS` autocorrelation times (or whose autocorrelation-based block had to
  be cut to a quarter of the frames) is flagged `persistent`: expressions last for a large part
  of it, there are only a few independent stretches, and its intervals may be too narrow.
* Session comparisons use a **block permutation test**: each session is cut into consecutive,
  non-overlapping windows (same length rule as above, the longest any session needs) and whole
  windows are shuffled between sessions.
  The statistic is the (generalised, equal-weight) Jensen-Shannon divergence between the
  sessions' distributions; the effect size is the Jensen-Shannon distance (its square root,
  base 2, in [0, 1]; for k > 2 sessions divided by log2 k first, so 1 is still no overlap).

Nothing here imports streamlit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from emotion_core.classes import CLASSES

Basis = Literal["share", "mean_prob"]
BASES: tuple[str, ...] = ("share", "mean_prob")
BASIS_LABELS: dict[str, str] = {
    # Observations are face rows (one per face per frame), not frames: with two faces in view
    # a frame counts twice.
    "share": "share of face observations (one per face per frame, weighted by time)",
    "mean_prob": "mean probability",
}
PROB_COLUMNS: list[str] = list(CLASSES)
_K = len(CLASSES)
# A gap between two frames counts up to this many typical frame steps, or MAX_GAP_S if that is
# longer (see frame_weights): a stall is not stretched over, a lower frame rate is kept.
MAX_GAP_STEPS = 4.0
MAX_GAP_S = 1.0
# Recorded times have 3 decimals: at 30 fps the steps alternate 0.033 / 0.034 s. Gaps this
# close to the typical step count as their mean, so an even frame rate gives equal weights.
TIME_RESOLUTION_S = 0.0015
# A timeline has at most this many steps (about 5.5 h at 1 s); longer sessions get coarser ones.
MAX_TIMELINE_BINS = 20_000

# Below this many autocorrelation times of data (frames with a face / tau), intervals are
# flagged as possibly too narrow: blocks of 6 tau would leave fewer than 4 of them. Measured
# (two-state label chain, 30 fps, switching every 5 s, true tau 149 frames, 200-400 sessions
# each): 95% intervals covered 81% at 20 s (4 tau; 95% of sessions flagged), 92% at 2 min
# (24 tau; 36% flagged), 93% at 4 min (48 tau; 1% flagged).
PERSISTENT_MIN_TAUS = 24.0

# Conventional, not universal, labels for the Jensen-Shannon distance (base 2, in [0, 1]).
JS_EFFECT_BANDS: tuple[tuple[float, str], ...] = (
    (0.05, "negligible"),
    (0.15, "small"),
    (0.30, "moderate"),
    (math.inf, "large"),
)


@dataclass(frozen=True)
class BootstrapConfig:
    """How intervals and tests are computed.

    n_boot: bootstrap replicates (and permutations for tests).
    block_s: minimum block length in seconds (time windows kept intact when resampling).
    auto_block_factor: blocks are lengthened to at least this many integrated
    autocorrelation times of the data (estimated from the top-label series, see
    `autocorrelation_time`), so that neighbouring blocks are nearly independent; 0 disables
    this and uses block_s as given. With the default 6, simulations of autocorrelated label
    sequences keep the comparison test's false-positive rate near 5%.
    confidence: two-sided interval level, e.g. 0.95.
    seed: random seed; the same inputs and seed give the same numbers.
    alpha: significance level used in the plain-words comparison sentence.
    """

    n_boot: int = 1000
    block_s: float = 2.0
    confidence: float = 0.95
    seed: int = 0
    alpha: float = 0.05
    auto_block_factor: float = 6.0

    def __post_init__(self) -> None:
        if self.n_boot < 1:
            raise ValueError("n_boot must be at least 1")
        if not self.block_s > 0:
            raise ValueError("block_s must be positive")
        if not 0 < self.confidence < 1:
            raise ValueError("confidence must be between 0 and 1")
        if not 0 < self.alpha < 1:
            raise ValueError("alpha must be between 0 and 1")
        if not self.auto_block_factor >= 0:
            raise ValueError("auto_block_factor must be >= 0")


# --------------------------------------------------------------------------------------------
# Preparing frames
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Units:
    """Per-frame arrays, frames in time order.

    t: (U,) frame times; n: (U,) observations per frame; top: (U, 7) top-label counts;
    prob: (U, 7) summed probabilities; w: (U,) seconds each frame stands for (frame_weights).
    """

    t: np.ndarray
    n: np.ndarray
    top: np.ndarray
    prob: np.ndarray
    w: np.ndarray


def face_rows(frames: pd.DataFrame) -> pd.DataFrame:
    """Rows that are usable face observations: face_id >= 0 and all 7 probabilities numeric."""
    if frames.empty:
        return frames
    probs = frames[PROB_COLUMNS].apply(pd.to_numeric, errors="coerce")
    mask = (pd.to_numeric(frames["face_id"], errors="coerce") >= 0) & probs.notna().all(axis=1)
    out: pd.DataFrame = frames.loc[mask]
    return out


def slice_time(frames: pd.DataFrame, t0: float | None, t1: float | None) -> pd.DataFrame:
    """Rows with t0 <= t_s <= t1 (either bound may be None = open)."""
    mask = pd.Series(True, index=frames.index)
    if t0 is not None:
        mask &= frames["t_s"] >= t0
    if t1 is not None:
        mask &= frames["t_s"] <= t1
    return frames.loc[mask]


def resolve_range(
    t0: float,
    t1: float,
    slider: tuple[float, float] | None,
    brush: Sequence[float] | None,
) -> tuple[float, float] | None:
    """The time range to analyse for a session spanning t0..t1, or None for all of it.

    A brush (a timeline selection: two times, in either order) wins; else the slider's
    (lo, hi) if it cuts something off (lo > t0 or hi < t1). None stands for no slider or no
    brush; a brush that is not two times is ignored.
    """
    if brush is not None and len(brush) == 2:
        return float(min(brush)), float(max(brush))
    if slider is not None and (slider[0] > t0 or slider[1] < t1):
        return float(slider[0]), float(slider[1])
    return None


def _units(frames: pd.DataFrame, face_id: int | None = None) -> _Units:
    """Aggregate a frames table into per-frame arrays (frames without a usable face: n=0)."""
    if frames.empty:
        empty = np.zeros((0, _K))
        return _Units(np.zeros(0), np.zeros(0), empty, empty.copy(), np.zeros(0))
    frame_key = frames["frame"] if "frame" in frames else frames["t_s"]
    times = frames.groupby(frame_key, sort=False)["t_s"].min().astype(float)
    order = np.argsort(times.to_numpy(), kind="stable")
    keys = times.index.to_numpy()[order]
    t = times.to_numpy()[order]
    rows = face_rows(frames)
    if face_id is not None:
        rows = rows[rows["face_id"].astype(int) == face_id]
    probs = rows[PROB_COLUMNS].to_numpy(dtype=float)
    top = np.zeros_like(probs)
    if len(probs):
        top[np.arange(len(probs)), probs.argmax(axis=1)] = 1.0
    row_keys = (rows["frame"] if "frame" in rows else rows["t_s"]).to_numpy()
    pos = pd.Index(keys).get_indexer(row_keys)
    u = len(keys)
    n = np.bincount(pos, minlength=u).astype(float) if len(pos) else np.zeros(u)
    top_sum = np.zeros((u, _K))
    prob_sum = np.zeros((u, _K))
    np.add.at(top_sum, pos, top)
    np.add.at(prob_sum, pos, probs)
    return _Units(t, n, top_sum, prob_sum, frame_weights(t))


def frame_step(t: np.ndarray) -> float:
    """Typical interval between frames (median positive step), 0.0 if unknown."""
    if len(t) < 2:
        return 0.0
    steps = np.diff(np.sort(t))
    steps = steps[steps > 0]
    return float(np.median(steps)) if len(steps) else 0.0


def frame_weights(t: np.ndarray) -> np.ndarray:
    """(U,) seconds each frame at sorted times t stands for: half the gap to the previous and
    half to the next frame, a gap capped at max(MAX_GAP_STEPS frame steps, MAX_GAP_S) (and one
    within TIME_RESOLUTION_S of the step counted as the mean of those), and half a typical gap
    beyond the ends; frames sharing a time share it. All 1.0 when no step is known."""
    step = frame_step(t)
    if step <= 0:
        return np.ones(len(t))
    times, inverse, counts = np.unique(t, return_inverse=True, return_counts=True)
    gaps = np.diff(times)
    even = np.abs(gaps - step) <= TIME_RESOLUTION_S
    typical = float(gaps[even].mean()) if even.any() else step  # NOTE: the mean keeps the total
    gaps[even] = typical
    half = np.minimum(gaps, max(MAX_GAP_STEPS * step, MAX_GAP_S)) / 2.0
    per_time = np.zeros(len(times))
    per_time[:-1] += half
    per_time[1:] += half
    per_time[[0, -1]] += typical / 2.0
    return np.asarray(per_time[inverse] / counts[inverse], dtype=float)


def duration_of(t: np.ndarray) -> float:
    """Duration covered by frames at times t (seconds): last - first (0.0 when empty)."""
    if len(t) == 0:
        return 0.0
    return float(np.max(t) - np.min(t))


# --------------------------------------------------------------------------------------------
# Distributions
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Distribution:
    """Emotion distribution of a set of observations, with block-bootstrap intervals.

    classes: the 7 class names (CLASSES order); every tuple below has one entry per class.
    share / share_ci: share of observations by top label, (lo, hi) interval per class.
    mean_prob / mean_prob_ci: mean probability per class, (lo, hi) per class.
    n_obs: observations used (0 -> all values NaN).
    block_frames / block_s: block length actually used, in frames and seconds.
    tau_frames: estimated integrated autocorrelation time of the top-label series, in frames
    with a face (the block length converts it to frames of the whole series).
    n_frames / n_frames_with_obs: frames in the series (with or without a face) / frames with
    at least one observation; covered_s / face_s: the time they stand for (frame_weights), all
    of it / with a face in view (`face_fraction` is their ratio).
    n_obs_blocks: how many consecutive blocks of block_frames frames, counted from the first
    frame with an observation, hold an observation. Below 2 every replicate resamples the same
    few frames, so the interval has no meaning (`too_few_blocks`).
    widen: factor by which the percentile intervals were widened about the estimate for having
    few blocks (`small_sample_factor`, 1.0 when there are many).
    persistent: the data hold fewer than PERSISTENT_MIN_TAUS autocorrelation times, or the block
    length the autocorrelation asks for was cut to a quarter of the frames: expressions persist
    for a large part of the time covered and the intervals may be too narrow (`intervals_note`).
    share_boot / mean_prob_boot: (n_boot, 7) bootstrap replicates (not compared or printed),
    used for intervals of combined quantities (e.g. the sum of several classes); not widened.
    """

    classes: tuple[str, ...]
    share: tuple[float, ...]
    share_ci: tuple[tuple[float, float], ...]
    mean_prob: tuple[float, ...]
    mean_prob_ci: tuple[tuple[float, float], ...]
    n_obs: int
    block_frames: int
    block_s: float
    tau_frames: float
    n_frames: int
    n_frames_with_obs: int
    covered_s: float
    face_s: float
    n_obs_blocks: int
    widen: float
    persistent: bool
    n_boot: int
    confidence: float
    share_boot: np.ndarray = field(repr=False, compare=False)
    mean_prob_boot: np.ndarray = field(repr=False, compare=False)

    @property
    def face_fraction(self) -> float:
        """The share of the time covered in which a face was in view (0.0 without frames)."""
        return self.face_s / self.covered_s if self.covered_s > 0 else 0.0

    @property
    def too_few_blocks(self) -> bool:
        """The observations lie in fewer than 2 blocks: the intervals are not informative."""
        return self.n_obs_blocks < 2

    @property
    def intervals_note(self) -> str:
        """A warning to show next to the intervals ("" when there is nothing to warn about)."""
        if not self.persistent or self.n_obs == 0:
            return ""
        n_tau = self.n_frames_with_obs / max(self.tau_frames, 1.0)
        lasts_s = self.tau_frames * self.face_s / max(self.n_frames_with_obs, 1)
        # NOTE: the cause is either long-lasting expressions or little time with a face;
        # the sentence gives both figures and blames neither.
        return (
            f"intervals may be too narrow: the {self.face_s:.1f} s with a face "
            f"hold only about {n_tau:.0f} independent stretches (an expression lasts about "
            f"{lasts_s:.1f} s here; {PERSISTENT_MIN_TAUS:.0f} stretches are "
            "needed for reliable intervals)"
        )

    @property
    def intervals_warning(self) -> str:
        """intervals_note as a sentence of its own, to show alone ("" when there is none)."""
        note = self.intervals_note
        return f"{note[0].upper()}{note[1:]}." if note else ""

    def values(self, basis: Basis) -> np.ndarray:
        """(7,) point estimates for a basis."""
        return np.asarray(self.share if basis == "share" else self.mean_prob, dtype=float)

    def interval(self, basis: Basis) -> np.ndarray:
        """(7, 2) interval bounds for a basis."""
        ci = self.share_ci if basis == "share" else self.mean_prob_ci
        return np.asarray(ci, dtype=float).reshape(len(self.classes), 2)

    def interval_at(self, basis: Basis, confidence: float) -> np.ndarray:
        """(7, 2) interval bounds for a basis at another level than the session's, from the same
        replicates (e.g. Bonferroni-adjusted for a rule that tests several emotions)."""
        if confidence == self.confidence or self.share_boot.size == 0:
            return self.interval(basis)
        boot = self.share_boot if basis == "share" else self.mean_prob_boot
        widen = small_sample_factor(self.n_obs_blocks, confidence)
        ci = _widened_ci(self.values(basis), boot, confidence, widen)
        return np.asarray(ci, dtype=float).reshape(len(self.classes), 2)

    def combined(self, basis: Basis, emotions: Sequence[str]) -> tuple[float, float, float]:
        """(value, lo, hi) of the summed value of several classes, interval from the replicates."""
        idx = [self.classes.index(e) for e in emotions]
        value = float(self.values(basis)[idx].sum())
        boot = self.share_boot if basis == "share" else self.mean_prob_boot
        if boot.size == 0 or math.isnan(value):
            return value, math.nan, math.nan
        sums = boot[:, idx].sum(axis=1, keepdims=True)
        (ci,) = _widened_ci(np.array([value]), sums, self.confidence, self.widen)
        return value, ci[0], ci[1]

    def to_frame(self) -> pd.DataFrame:
        """One row per class: class, share, share_lo, share_hi, mean_prob, mean_prob_lo/hi."""
        share_ci = self.interval("share")
        mp_ci = self.interval("mean_prob")
        return pd.DataFrame(
            {
                "class": list(self.classes),
                "share": list(self.share),
                "share_lo": share_ci[:, 0],
                "share_hi": share_ci[:, 1],
                "mean_prob": list(self.mean_prob),
                "mean_prob_lo": mp_ci[:, 0],
                "mean_prob_hi": mp_ci[:, 1],
            }
        )


def block_length(t: np.ndarray, block_s: float, min_frames: int = 1) -> int:
    """Block length in frames: max(block_s seconds, min_frames), capped so that a series has
    at least 4 blocks."""
    step = frame_step(t)
    length = max(1, round(block_s / step)) if step > 0 else 1
    length = max(length, int(min_frames))
    return max(1, min(length, len(t) // 4)) if len(t) >= 4 else 1


def _autocorrelation(x: np.ndarray) -> np.ndarray:
    """(N,) trace-weighted autocorrelation rho(k) = sum_d cov_d(k) / sum_d var_d of a centred
    (N, D) series (biased, 1/N, estimator via FFT)."""
    n = len(x)
    size = 1 << (2 * n - 1).bit_length()
    f = np.fft.rfft(x, n=size, axis=0)
    acov = np.fft.irfft((f * np.conj(f)).real, n=size, axis=0)[:n].sum(axis=1) / n
    return np.asarray(acov / acov[0])


def autocorrelation_time(series: np.ndarray) -> float:
    """Integrated autocorrelation time (in samples) of a multivariate series.

    series: (N, D) values in time order (e.g. per-frame top-label shares). The autocorrelation
    is the trace-weighted average over columns (`_autocorrelation`), and tau = -1 + 2 * sum of
    Geyer's initial monotone sequence: the pair sums rho(2m) + rho(2m + 1), kept while positive
    and made non-increasing. Unlike a fixed window (Sokal's, used before), it does not stop
    early on slowly decaying, persistent series (two-state label chain with true tau 149
    frames: median estimate 64 vs 45 from 600 frames, 126 vs 104 from 3600).
    Returns 1.0 for constant or very short series (independent samples: tau = 1).
    """
    x = np.asarray(series, dtype=float)
    n = len(x)
    if n < 8:
        return 1.0
    x = x - x.mean(axis=0)
    if float((x**2).sum()) / n <= 1e-12:
        return 1.0
    rho = _autocorrelation(x)
    m = n // 2
    pairs = rho[0 : 2 * m : 2] + rho[1 : 2 * m : 2]
    stop = np.flatnonzero(pairs <= 0)
    kept = pairs[: stop[0]] if len(stop) else pairs
    tau = -1.0 + 2.0 * float(np.minimum.accumulate(kept).sum()) if len(kept) else 1.0
    return max(1.0, tau)


def _series_tau(units: _Units) -> float:
    """Autocorrelation time (frames) of the per-frame top-label shares, frames with a face."""
    keep = units.n > 0
    if keep.sum() < 8:
        return 1.0
    return autocorrelation_time(units.top[keep] / units.n[keep, None])


def _tau_on_all_frames(units: _Units, tau: float) -> float:
    """tau counted in frames with a face (`_series_tau`) as frames of the whole series: the face
    frames lie about frames / frames-with-a-face apart (a face in a fifth of the frames: an
    expression lasting 10 face frames spans about 50 frames)."""
    with_face = int((units.n > 0).sum())
    return tau * len(units.n) / with_face if with_face else tau


def _auto_frames(units: _Units, cfg: BootstrapConfig) -> tuple[int, float]:
    """(minimum block length in frames of the whole series, from the data; tau in frames with
    a face)."""
    tau = _series_tau(units)
    if cfg.auto_block_factor <= 0:
        return 1, tau
    return math.ceil(cfg.auto_block_factor * _tau_on_all_frames(units, tau)), tau


def _is_persistent(units: _Units, tau: float, auto_frames: int) -> bool:
    """Fewer than PERSISTENT_MIN_TAUS autocorrelation times of frames with a face, or the
    autocorrelation-based block length cut by block_length's cap (a quarter of the frames)."""
    with_face = int((units.n > 0).sum())
    capped = len(units.t) >= 4 and auto_frames > len(units.t) // 4
    return with_face < PERSISTENT_MIN_TAUS * tau or capped


def small_sample_factor(n_blocks: float, confidence: float) -> float:
    """Widening of a block-bootstrap percentile interval built from about n_blocks blocks.

    The circular block bootstrap's variance is the overlapping-batch-means estimate without its
    small-sample correction: it is low by (m - 1) / m and has about 1.5 (m - 1) degrees of
    freedom (Meketon & Schmeiser 1984). Factor = sqrt(m / (m - 1)) * t_q(1.5 (m - 1)) / z_q,
    q = (1 + confidence) / 2: 1.57 for 4 blocks, 1.05 for 30, -> 1 for many; NaN below 2.
    """
    from scipy.special import ndtri, stdtrit  # lazy: only needed once intervals are built

    m = float(n_blocks)
    if not m >= 2:
        return math.nan
    q = (1.0 + confidence) / 2.0
    return math.sqrt(m / (m - 1.0)) * float(stdtrit(1.5 * (m - 1.0), q)) / float(ndtri(q))


def _widened_ci(
    point: np.ndarray, reps: np.ndarray, confidence: float, widen: float
) -> tuple[tuple[float, float], ...]:
    """Percentile intervals per column of reps (B, D) about point (D,), each side stretched by
    `widen` and clipped to [0, 1] (shares and probabilities, or sums of them); the point always
    lies inside. Columns without replicates, and every column when `widen` is NaN (fewer than
    2 blocks: the replicates all resample the same frames), give (NaN, NaN)."""
    if not math.isfinite(widen):
        return tuple((math.nan, math.nan) for _ in point)
    lo_p, hi_p = _percentile_ci(reps, confidence)
    w = widen
    out = []
    for lo_i, hi_i, p in zip(lo_p, hi_p, point):
        if math.isnan(lo_i) or math.isnan(hi_i) or math.isnan(p):
            out.append((math.nan, math.nan))
            continue
        lo_w = max(0.0, p - w * max(p - lo_i, 0.0))
        hi_w = min(1.0, p + w * max(hi_i - p, 0.0))
        out.append((float(min(lo_w, p)), float(max(hi_w, p))))
    return tuple(out)


def _percentile_ci(reps: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval per column of reps (B, D), ignoring NaN replicates."""
    tail = (1.0 - confidence) / 2.0 * 100.0
    with np.errstate(all="ignore"):
        ok = ~np.isnan(reps).all(axis=0)
        lo = np.full(reps.shape[1], np.nan)
        hi = np.full(reps.shape[1], np.nan)
        if ok.any():
            q = np.nanpercentile(reps[:, ok], [tail, 100.0 - tail], axis=0)
            lo[ok], hi[ok] = q[0], q[1]
    return lo, hi


def circular_block_bootstrap(
    values: np.ndarray, block: int, n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """Circular block bootstrap of column sums.

    values: (U, D) per-unit values in time order; block: block length in units (>= 1).
    Returns (n_boot, D): for each replicate, the column sums over ceil(U / block) blocks of
    `block` consecutive units whose start is uniform over the U units (wrapping at the end).
    """
    u, d = values.shape
    if u == 0:
        return np.zeros((n_boot, d))
    block = max(1, min(block, u))
    ext = np.concatenate([values, values[:block]], axis=0)
    prefix = np.vstack([np.zeros((1, d)), np.cumsum(ext, axis=0)])
    block_sums = prefix[block : block + u] - prefix[:u]  # (U, D): block starting at each unit
    m = -(-u // block)
    out = np.empty((n_boot, d))
    chunk = max(1, 2_000_000 // max(1, m * d))
    for s in range(0, n_boot, chunk):
        e = min(n_boot, s + chunk)
        starts = rng.integers(0, u, size=(e - s, m))
        out[s:e] = block_sums[starts].sum(axis=1)
    return out


def _obs_blocks(n: np.ndarray, block: int) -> int:
    """Blocks of `block` frames, from the first frame with an observation, that hold one.

    n: (U,) observations per frame in time order."""
    idx = np.flatnonzero(n > 0)
    if len(idx) == 0:
        return 0
    return len(np.unique((idx - idx[0]) // max(1, block)))


def _distribution(units: _Units, cfg: BootstrapConfig, rng: np.random.Generator) -> Distribution:
    n_obs = int(units.n.sum())
    min_frames, tau = _auto_frames(units, cfg)
    block = block_length(units.t, cfg.block_s, min_frames)
    n_obs_blocks = _obs_blocks(units.n, block)
    persistent = n_obs > 0 and _is_persistent(units, tau, min_frames)
    widen = small_sample_factor(n_obs_blocks, cfg.confidence)
    step = frame_step(units.t)
    nan7 = tuple([math.nan] * _K)
    nan_ci = tuple([(math.nan, math.nan)] * _K)
    if n_obs == 0:
        empty = np.zeros((0, _K))
        return Distribution(
            classes=CLASSES,
            share=nan7,
            share_ci=nan_ci,
            mean_prob=nan7,
            mean_prob_ci=nan_ci,
            n_obs=0,
            block_frames=block,
            block_s=block * step,
            tau_frames=tau,
            n_frames=len(units.t),
            n_frames_with_obs=0,
            covered_s=float(units.w.sum()),
            face_s=0.0,
            n_obs_blocks=0,
            widen=math.nan,
            persistent=False,
            n_boot=cfg.n_boot,
            confidence=cfg.confidence,
            share_boot=empty,
            mean_prob_boot=empty.copy(),
        )
    stacked = units.w[:, None] * np.hstack([units.top, units.prob, units.n[:, None]])
    totals = stacked.sum(axis=0)  # NOTE: one sum per column, all in the same order: a class
    share = totals[:_K] / totals[-1]  # seen in every observation comes out as exactly 1.0
    mean_prob = totals[_K : 2 * _K] / totals[-1]
    sums = circular_block_bootstrap(stacked, block, cfg.n_boot, rng)
    with np.errstate(invalid="ignore", divide="ignore"):
        denom = sums[:, -1:]
        denom = np.where(denom > 0, denom, np.nan)
        share_boot = sums[:, :_K] / denom
        mp_boot = sums[:, _K : 2 * _K] / denom

    return Distribution(
        classes=CLASSES,
        share=tuple(float(x) for x in share),
        share_ci=_widened_ci(share, share_boot, cfg.confidence, widen),
        mean_prob=tuple(float(x) for x in mean_prob),
        mean_prob_ci=_widened_ci(mean_prob, mp_boot, cfg.confidence, widen),
        n_obs=n_obs,
        block_frames=block,
        block_s=block * step,
        tau_frames=tau,
        n_frames=len(units.t),
        n_frames_with_obs=int((units.n > 0).sum()),
        covered_s=float(units.w.sum()),
        face_s=float(units.w[units.n > 0].sum()),
        n_obs_blocks=n_obs_blocks,
        widen=widen,
        persistent=persistent,
        n_boot=cfg.n_boot,
        confidence=cfg.confidence,
        share_boot=share_boot,
        mean_prob_boot=mp_boot,
    )


def distribution(
    frames: pd.DataFrame, cfg: BootstrapConfig | None = None, face_id: int | None = None
) -> Distribution:
    """Distribution (both ways, with block-bootstrap CIs) of a frames table, one face or all."""
    cfg = cfg or BootstrapConfig()
    return _distribution(_units(frames, face_id), cfg, np.random.default_rng(cfg.seed))


@dataclass(frozen=True)
class FaceStats:
    """One tracked face: frames it appears in, first/last time and its distribution."""

    face_id: int
    n_frames: int
    first_t_s: float
    last_t_s: float
    distribution: Distribution


@dataclass(frozen=True)
class SessionStats:
    """Summary of one session (or of a time range of it).

    duration_s: seconds covered (see module doc); n_frames: distinct frames;
    n_frames_with_face / n_frames_no_face: frames with at least one / no usable face;
    n_observations: face rows used; faces_seen: distinct face ids;
    distribution: all faces pooled; faces: one FaceStats per face id (ascending).
    """

    name: str
    t_start: float
    t_end: float
    duration_s: float
    n_frames: int
    n_frames_with_face: int
    n_frames_no_face: int
    n_observations: int
    faces_seen: int
    distribution: Distribution
    faces: tuple[FaceStats, ...]

    def distribution_of(self, face_id: int | None) -> Distribution:
        """All faces pooled (None), one face's, or, for a face not seen here, a distribution
        of no observations (NaN values and intervals): never another face's numbers."""
        if face_id is None:
            return self.distribution
        for face in self.faces:
            if face.face_id == face_id:
                return face.distribution
        d = self.distribution
        cfg = BootstrapConfig(n_boot=d.n_boot, confidence=d.confidence)
        return _distribution(_units(pd.DataFrame()), cfg, np.random.default_rng(cfg.seed))

    def summary_row(self) -> dict[str, object]:
        """A flat dict for tables and CSV export (one column per class and statistic)."""
        row: dict[str, object] = {
            "session": self.name,
            "t_start": self.t_start,
            "t_end": self.t_end,
            "duration_s": round(self.duration_s, 3),
            "frames": self.n_frames,
            "frames_with_face": self.n_frames_with_face,
            "frames_no_face": self.n_frames_no_face,
            "face_time_s": round(self.distribution.face_s, 3),
            "observations": self.n_observations,
            "faces_seen": self.faces_seen,
        }
        d = self.distribution
        bases: tuple[Basis, ...] = ("share", "mean_prob")
        for basis in bases:
            vals = d.values(basis)
            ci = d.interval(basis)
            for i, c in enumerate(d.classes):
                row[f"{basis}_{c}"] = vals[i]
                row[f"{basis}_{c}_lo"] = ci[i, 0]
                row[f"{basis}_{c}_hi"] = ci[i, 1]
        row["block_s"] = d.block_s
        row["ci_widen"] = d.widen
        row["intervals_may_be_too_narrow"] = d.persistent
        row["n_boot"] = d.n_boot
        row["confidence"] = d.confidence
        return row


def summarize_session(
    frames: pd.DataFrame,
    name: str = "session",
    cfg: BootstrapConfig | None = None,
    t_range: tuple[float, float] | None = None,
) -> SessionStats:
    """Statistics of a session's frames (optionally only rows with t_range[0] <= t_s <= [1])."""
    cfg = cfg or BootstrapConfig()
    if t_range is not None:
        frames = slice_time(frames, t_range[0], t_range[1])
    rng = np.random.default_rng(cfg.seed)
    units = _units(frames)
    rows = face_rows(frames)
    face_ids = sorted(int(f) for f in rows["face_id"].unique()) if len(rows) else []
    faces = []
    for fid in face_ids:
        fu = _units(frames, fid)
        present = fu.t[fu.n > 0]
        faces.append(
            FaceStats(
                face_id=fid,
                n_frames=int((fu.n > 0).sum()),
                first_t_s=float(present.min()),
                last_t_s=float(present.max()),
                distribution=_distribution(fu, cfg, np.random.default_rng(cfg.seed + 1 + fid)),
            )
        )
    with_face = int((units.n > 0).sum())
    return SessionStats(
        name=name,
        t_start=float(units.t.min()) if len(units.t) else math.nan,
        t_end=float(units.t.max()) if len(units.t) else math.nan,
        duration_s=duration_of(units.t),
        n_frames=len(units.t),
        n_frames_with_face=with_face,
        n_frames_no_face=len(units.t) - with_face,
        n_observations=int(units.n.sum()),
        faces_seen=len(face_ids),
        distribution=_distribution(units, cfg, rng),
        faces=tuple(faces),
    )


# --------------------------------------------------------------------------------------------
# Timeline
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Timeline:
    """Per-class probability on a fixed time grid.

    data: DataFrame with columns t_s (bin start, multiples of step_s), the 7 classes
    (rolling mean over smooth_s of the per-bin mean probability; NaN where no face has been
    seen in the window) and n (observations in the bin). One row per bin from the first to the
    last frame.
    """

    step_s: float
    smooth_s: float
    data: pd.DataFrame

    def long(self) -> pd.DataFrame:
        """Long form for charts: columns t_s, class, probability, segment (NaN rows dropped).

        segment numbers the stretches between empty bins, so that a chart draws one line per
        stretch and none across a time without a face."""
        out = self.data.melt(
            id_vars=["t_s"], value_vars=PROB_COLUMNS, var_name="class", value_name="probability"
        )
        out["segment"] = out["probability"].isna().groupby(out["class"]).cumsum().astype(int)
        return out.dropna(subset=["probability"]).reset_index(drop=True)


def timeline(
    frames: pd.DataFrame,
    step_s: float = 1.0,
    smooth_s: float = 3.0,
    face_id: int | None = None,
) -> Timeline:
    """Resample per-class probabilities to step_s bins and smooth with a centred rolling mean.

    A bin's value is the mean probability over all observations (all faces, or face_id) in
    [t, t + step_s); bins with none are NaN before smoothing. A session longer than
    MAX_TIMELINE_BINS steps gets a whole multiple of step_s instead (and smooth_s at least that);
    the Timeline says which. The rolling window spans
    max(1, round(smooth_s / step_s)) bins and needs at least one non-empty bin.
    """
    if step_s <= 0:
        raise ValueError("step_s must be positive")
    cols = ["t_s", *PROB_COLUMNS, "n"]
    if frames.empty:
        return Timeline(step_s, smooth_s, pd.DataFrame(columns=cols))
    t_all = frames["t_s"].astype(float).to_numpy()
    t_min, t_max = float(np.min(t_all)), float(np.max(t_all))
    span_bins = (t_max - t_min) / step_s + 1
    if span_bins > MAX_TIMELINE_BINS:  # a long session: coarser steps, never a huge table
        step_s *= math.ceil(span_bins / MAX_TIMELINE_BINS)
        smooth_s = max(smooth_s, step_s)
    first = math.floor(t_min / step_s)
    last = math.floor(t_max / step_s)
    bins = np.arange(first, last + 1)
    rows = face_rows(frames)
    if face_id is not None:
        rows = rows[rows["face_id"].astype(int) == face_id]
    probs = rows[PROB_COLUMNS].astype(float)
    idx = np.floor(rows["t_s"].astype(float).to_numpy() / step_s).astype(int)
    grouped = probs.groupby(idx)
    means = grouped.mean().reindex(bins)
    counts = grouped.size().reindex(bins).fillna(0).astype(int)
    window = max(1, round(smooth_s / step_s))
    smooth = means.rolling(window, center=True, min_periods=1).mean()
    data = smooth.reset_index(drop=True)
    data.insert(0, "t_s", bins * step_s)
    data["n"] = counts.to_numpy()
    return Timeline(step_s, smooth_s, data[cols])


# --------------------------------------------------------------------------------------------
# Jensen-Shannon and comparisons
# --------------------------------------------------------------------------------------------


def _entropy_bits(p: np.ndarray) -> np.ndarray:
    """Shannon entropy in bits along the last axis (0 log 0 = 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log2(np.where(p > 0, p, 1.0)), 0.0)
    return np.asarray(terms.sum(axis=-1))


def _normalise(p: np.ndarray) -> np.ndarray:
    total = p.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(p / total)


def js_divergence(dists: np.ndarray) -> np.ndarray:
    """Equal-weight generalised Jensen-Shannon divergence in bits.

    dists: (..., k, C) non-negative weights per group (normalised here along C).
    Returns (...): H(mean_k p_k) - mean_k H(p_k), in [0, log2 k].
    """
    p = _normalise(np.asarray(dists, dtype=float))
    mix = p.mean(axis=-2)
    return np.asarray(np.maximum(_entropy_bits(mix) - _entropy_bits(p).mean(axis=-1), 0.0))


def js_distance(p: Sequence[float] | np.ndarray, q: Sequence[float] | np.ndarray) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) between two distributions (normalised)."""
    return float(np.sqrt(js_divergence(np.stack([np.asarray(p, float), np.asarray(q, float)]))))


def js_effect_label(distance: float) -> str:
    """Plain-words size of a JS distance: negligible < 0.05 <= small < 0.15 <= moderate < 0.30
    <= large (a convention for this app, not a universal standard); "n/a" for NaN."""
    if math.isnan(distance):
        return "n/a"
    for bound, label in JS_EFFECT_BANDS:
        if distance < bound:
            return label
    return "large"


def _blocks(frames: pd.DataFrame, block_s: float, basis: Basis) -> tuple[np.ndarray, np.ndarray]:
    """Consecutive non-overlapping windows of block_s seconds with at least one observation.

    Returns (sums (B, 7), n (B,)): per window, summed top-label counts or probabilities and
    the number of observations.
    """
    u = _units(frames)
    keep = u.n > 0
    if not keep.any():
        return np.zeros((0, _K)), np.zeros(0)
    t0 = float(u.t.min())
    win = np.floor((u.t - t0) / block_s).astype(int)
    vals = (u.top if basis == "share" else u.prob) * u.w[:, None]
    ids, inv = np.unique(win[keep], return_inverse=True)
    sums = np.zeros((len(ids), _K))
    np.add.at(sums, inv, vals[keep])
    n = np.bincount(inv, weights=(u.n * u.w)[keep], minlength=len(ids))
    return sums, n


def comparison_block_s(frames_list: Sequence[pd.DataFrame], cfg: BootstrapConfig) -> float:
    """Window length (s) for comparing sessions: cfg.block_s, or longer when any session's
    autocorrelation needs it (auto_block_factor * tau * frame step, the longest over sessions).
    """
    block_s = cfg.block_s
    if cfg.auto_block_factor > 0:
        for frames in frames_list:
            u = _units(frames)
            tau = _tau_on_all_frames(u, _series_tau(u))
            block_s = max(block_s, cfg.auto_block_factor * tau * frame_step(u.t))
    return float(block_s)


def block_permutation_test(
    blocks: Sequence[tuple[np.ndarray, np.ndarray]], n_perm: int, rng: np.random.Generator
) -> tuple[float, float]:
    """Permutation test that k groups of time blocks share one distribution.

    blocks: per group, (sums (B_g, 7), n (B_g,)) as from the session's time windows.
    Whole blocks are shuffled between groups (group sizes kept). Statistic: equal-weight JS
    divergence of the groups' pooled distributions. Returns (observed statistic, p-value) with
    p = (1 + #{permuted >= observed}) / (1 + n_perm).
    """
    sums = np.concatenate([b[0] for b in blocks], axis=0)
    labels = np.concatenate([np.full(len(b[0]), g) for g, b in enumerate(blocks)])
    k = len(blocks)
    group_tot = np.stack([b[0].sum(axis=0) for b in blocks])
    observed = float(js_divergence(group_tot))
    if n_perm < 1:
        return observed, math.nan
    onehot_rows = max(1, 4_000_000 // max(1, len(labels) * k))
    exceed = 0
    for s in range(0, n_perm, onehot_rows):
        e = min(n_perm, s + onehot_rows)
        perm = rng.permuted(np.tile(labels, (e - s, 1)), axis=1)  # (P, B)
        onehot = (perm[:, :, None] == np.arange(k)).astype(float)  # (P, B, k)
        tot = np.einsum("pbk,bc->pkc", onehot, sums)
        stats = js_divergence(tot)
        exceed += int((stats >= observed - 1e-12).sum())
    return observed, (1 + exceed) / (1 + n_perm)


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (NaN stays NaN)."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(len(p), np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


def format_p(p: float, n_perm: int | None = None) -> str:
    """'p=0.003', 'p<0.001' or 'p=n/a' (n_perm is accepted for symmetry and unused)."""
    if math.isnan(p):
        return "p=n/a"
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


@dataclass(frozen=True)
class PairComparison:
    """Two sessions compared on one basis.

    values_a / values_b: (7,) distributions (all NaN for a session without face observations);
    top_class: class with the largest difference ("" when a session has no face observations,
    and then js_distance is NaN, effect "n/a" and the sentence names the empty session);
    p_value: block permutation test; p_adjusted: Holm-adjusted over all pairs (= p_value when
    only two sessions); js_distance: effect size in [0, 1]; effect: its plain-words band.
    """

    a: str
    b: str
    values_a: tuple[float, ...]
    values_b: tuple[float, ...]
    top_class: str
    js_distance: float
    effect: str
    p_value: float
    p_adjusted: float
    sentence: str


@dataclass(frozen=True)
class Comparison:
    """Two or more sessions compared on one basis ("share" or "mean_prob").

    names: session names; values: per session a (7,) distribution (CLASSES order);
    statistic: equal-weight JS divergence of all sessions (bits, at most log2 k for k
    sessions); js_distance: sqrt(statistic / log2 k), in [0, 1] as for a pair (for two
    sessions, the JS distance); p_value: block permutation test of "all sessions
    share one distribution"; n_blocks: time windows per session; pairs: every pair;
    no_face: names of sessions without face observations (nothing to compare; statistic,
    p-value and effect are then NaN / "n/a"); sentence: the overall result in plain words.
    """

    names: tuple[str, ...]
    basis: str
    values: tuple[tuple[float, ...], ...]
    statistic: float
    js_distance: float
    effect: str
    p_value: float
    n_perm: int
    block_s: float
    alpha: float
    n_blocks: tuple[int, ...]
    pairs: tuple[PairComparison, ...]
    no_face: tuple[str, ...]
    sentence: str

    def to_frame(self) -> pd.DataFrame:
        """Long form: session, class, value."""
        rows = [
            {"session": name, "class": c, "value": v}
            for name, vals in zip(self.names, self.values)
            for c, v in zip(CLASSES, vals)
        ]
        return pd.DataFrame(rows)


def _pct(v: float, basis: str) -> str:
    return f"{v * 100:.0f}%" if basis == "share" else f"{v:.2f}"


def _no_face_sentence(empty: Sequence[str]) -> str:
    """'B has no face observations' / 'A and B have no face observations'."""
    verb = "has" if len(empty) == 1 else "have"
    return f"{' and '.join(empty)} {verb} no face observations"


def pair_sentence(
    a: str,
    b: str,
    va: np.ndarray,
    vb: np.ndarray,
    basis: str,
    p: float,
    dist: float,
    alpha: float,
    n_perm: int | None = None,
    too_few: str | None = None,
) -> tuple[str, str]:
    """Plain-words result for two sessions; returns (sentence, class with largest difference).

    too_few: when set (e.g. "too few independent time windows (2 and 3 windows of 37 s)"), the
    test cannot reach alpha, and the sentence says why instead of calling the difference chance.
    A session without face observations (all-NaN values) gives "B has no face observations, so
    A and B cannot be compared" and class "" (no direction, no effect size).
    """
    empty = [name for name, v in ((a, va), (b, vb)) if np.isnan(v).all()]
    if len(empty) == 2:
        return f"{_no_face_sentence(empty)}, so there is nothing to compare.", ""
    if empty:
        return f"{_no_face_sentence(empty)}, so {a} and {b} cannot be compared.", ""
    diff = va - vb
    c = int(np.nanargmax(np.abs(diff))) if not np.isnan(diff).all() else 0
    cls = CLASSES[c]
    if abs(diff[c]) < 0.005:
        head = f"{a} and {b} show almost the same distribution"
    elif basis == "share":
        more = "more" if diff[c] >= 0 else "less"
        head = (
            f"{a} shows {more} {cls} than {b} ({_pct(va[c], basis)} vs {_pct(vb[c], basis)} "
            "of face observations)"
        )
    else:
        more = "higher" if diff[c] >= 0 else "lower"
        head = (
            f"{a} has a {more} mean {cls} probability than {b} ({_pct(va[c], basis)} vs "
            f"{_pct(vb[c], basis)})"
        )
    numbers = f"{format_p(p, n_perm)}, JS distance {dist:.2f}, {js_effect_label(dist)}"
    if math.isnan(p):
        tail = f"too little data to test whether this is chance ({numbers})"
    elif too_few and p >= alpha:
        tail = f"{too_few} to tell whether this is chance ({numbers})"
    elif p < alpha:
        tail = f"the difference is unlikely to be chance ({numbers})"
    else:
        tail = f"the difference could well be chance ({numbers})"
    return f"{head}; {tail}.", cls


def _split_ways(sizes: Sequence[int], cap: int) -> int:
    """Ways to split sum(sizes) windows into groups of these sizes (the multinomial
    coefficient), exact as an integer but stopped at `cap` once it exceeds it (long sessions
    have astronomically many ways; only whether they exceed n_perm + 1 matters)."""
    ways, total = 1, 0
    for n in sizes:
        total += int(n)
        ways *= math.comb(total, int(n))
        if ways > cap:
            return cap
    return ways


def min_p_value(sizes: Sequence[int], n_perm: int) -> float:
    """Smallest p-value a block permutation test can give with these numbers of windows:
    max(1 / (ways to split the windows into groups of these sizes), 1 / (n_perm + 1)).

    Integer arithmetic throughout, so it never overflows a float however many windows."""
    floor = n_perm + 1
    ways = _split_ways(sizes, floor)
    return 1.0 / min(ways, floor)


def holm_floor(own: float, others: Sequence[float]) -> float:
    """The smallest Holm-adjusted p-value a test can get when its own p-value is at least
    `own` and the other tests' are at least `others` (whatever the data): the minimum, over the
    rank r it could take, of max((m - r + 1) own, (m - j + 1) g_j for j < r), g the others'
    floors in ascending order."""
    g = sorted(others)
    m = len(g) + 1
    best = math.inf
    for r in range(1, m + 1):
        bound = (m - r + 1) * own
        for j in range(1, r):
            bound = max(bound, (m - j + 1) * g[j - 1])
        best = min(best, bound)
    return best


def _too_few(
    sizes: Sequence[int],
    block_s: float,
    cfg: BootstrapConfig,
    others: Sequence[float] = (),
) -> str | None:
    """Why a test cannot reach cfg.alpha whatever the data, Holm-adjusted among the tests whose
    smallest possible p-values are `others` (none: a single test), or None when it can: too few
    time windows, or too few permutations for so many tests."""
    if min(sizes) < 2 or holm_floor(min_p_value(sizes, cfg.n_boot), others) < cfg.alpha:
        return None
    tests = len(others) + 1
    if holm_floor(1.0 / (cfg.n_boot + 1), [1.0 / (cfg.n_boot + 1)] * (tests - 1)) >= cfg.alpha:
        return (
            f"too few permutations ({cfg.n_boot} for {tests} tests; raise the bootstrap replicates)"
        )
    windows = " and ".join(str(n) for n in sizes)
    return f"too few independent time windows ({windows} windows of {block_s:.0f} s)"


def compare_sessions(
    frames_list: Sequence[pd.DataFrame],
    names: Sequence[str],
    basis: Basis = "share",
    cfg: BootstrapConfig | None = None,
) -> Comparison:
    """Compare 2+ sessions: distributions, block permutation test, JS distance, sentence.

    frames_list: one frames table per session; names: display names (same length).
    Uses windows of comparison_block_s() seconds and cfg.n_boot permutations, seeded by
    cfg.seed. A session with
    fewer than 2 windows holding a face makes the p-value NaN ("too little data").
    """
    cfg = cfg or BootstrapConfig()
    if len(frames_list) < 2:
        raise ValueError("compare_sessions needs at least two sessions")
    if len(frames_list) != len(names):
        raise ValueError("names and frames_list differ in length")
    if basis not in BASES:
        raise ValueError(f"basis must be one of {BASES}")
    block_s = comparison_block_s(frames_list, cfg)
    blocks = [_blocks(f, block_s, basis) for f in frames_list]
    values = []
    for sums, n in blocks:
        total = n.sum()
        values.append(sums.sum(axis=0) / total if total > 0 else np.full(_K, np.nan))
    enough = all(len(b[0]) >= 2 for b in blocks)
    rng = np.random.default_rng(cfg.seed)
    if enough:
        stat, p = block_permutation_test(blocks, cfg.n_boot, rng)
    else:
        stat = float(js_divergence(np.stack([b[0].sum(axis=0) for b in blocks])))
        stat = math.nan if any(len(b[0]) == 0 for b in blocks) else stat
        p = math.nan
    pairs_raw = []
    for i in range(len(blocks)):
        for j in range(i + 1, len(blocks)):
            if len(blocks) == 2:
                pij = p
            elif len(blocks[i][0]) >= 2 and len(blocks[j][0]) >= 2:
                _, pij = block_permutation_test([blocks[i], blocks[j]], cfg.n_boot, rng)
            else:
                pij = math.nan
            pairs_raw.append((i, j, pij))
    adjusted = holm_adjust([pr[2] for pr in pairs_raw])
    floors = {
        (i, j): min_p_value([len(blocks[i][0]), len(blocks[j][0])], cfg.n_boot)
        for i, j, pij in pairs_raw
        if not math.isnan(pij)
    }
    pairs = []
    for (i, j, pij), padj in zip(pairs_raw, adjusted):
        va, vb = values[i], values[j]
        dist = js_distance(va, vb) if not (np.isnan(va).any() or np.isnan(vb).any()) else math.nan
        sizes = [len(blocks[i][0]), len(blocks[j][0])]
        others = [f for pair, f in floors.items() if pair != (i, j)]
        few = _too_few(sizes, block_s, cfg, others)
        sentence, cls = pair_sentence(
            names[i], names[j], va, vb, basis, padj, dist, cfg.alpha, cfg.n_boot, few
        )
        pairs.append(
            PairComparison(
                a=names[i],
                b=names[j],
                values_a=tuple(float(x) for x in va),
                values_b=tuple(float(x) for x in vb),
                top_class=cls,
                js_distance=dist,
                effect=js_effect_label(dist),
                p_value=pij,
                p_adjusted=padj,
                sentence=sentence,
            )
        )
    # NOTE: k groups' JS divergence reaches log2 k bits; scaled so that 1 = no overlap for any k.
    dist_all = math.sqrt(stat / math.log2(len(blocks))) if not math.isnan(stat) else math.nan
    no_face = tuple(name for name, v in zip(names, values) if np.isnan(v).all())
    if len(blocks) == 2:
        sentence = pairs[0].sentence
    else:
        numbers = f"{format_p(p, cfg.n_boot)}, JS distance {dist_all:.2f}"
        few = _too_few([len(b[0]) for b in blocks], block_s, cfg)
        if no_face:
            verdict = f"{_no_face_sentence(no_face)}, so they cannot all be tested together"
            numbers = "p=n/a"
        elif math.isnan(p):
            verdict = "there is too little data to test whether they differ"
        elif few and p >= cfg.alpha:
            verdict = f"there are {few} to test whether they differ"
        elif p < cfg.alpha:
            verdict = "their emotion distributions differ by more than chance would explain"
        else:
            verdict = "their emotion distributions could well differ only by chance"
        sentence = (
            f"Across the {len(blocks)} sessions, {verdict} ({numbers}). "
            "Pairwise (Holm-adjusted): " + " ".join(pr.sentence for pr in pairs)
        )
    return Comparison(
        names=tuple(names),
        basis=basis,
        values=tuple(tuple(float(x) for x in v) for v in values),
        statistic=stat,
        js_distance=dist_all,
        effect=js_effect_label(dist_all),
        p_value=p,
        n_perm=cfg.n_boot,
        block_s=block_s,
        alpha=cfg.alpha,
        n_blocks=tuple(len(b[0]) for b in blocks),
        pairs=tuple(pairs),
        no_face=no_face,
        sentence=sentence,
    )
