"""The nervousness rule: presets, custom rules, intervals, serialisation, settings, report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from emotion_core import nervousness as nv
from emotion_core import report, settings, stats
from emotion_core.classes import CLASSES

FAST = stats.BootstrapConfig(n_boot=200, seed=0)
ORIGINAL_EMOTIONS = ("angry", "neutral", "fear", "sad", "surprise")


def original_rule(label_counts: dict[str, int]) -> str:
    """The original app: nervous when any of the five emotions exceeds 30% of face frames."""
    total = sum(label_counts.values())
    nervous = any(label_counts.get(e, 0) / total > 0.30 for e in ORIGINAL_EMOTIONS)
    return "nervous" if nervous else "not nervous"


def counts(**kw: int) -> dict[str, int]:
    return {c: int(kw.get(c, 0)) for c in CLASSES}


def session(blocks: list[tuple[str, int]], fps: float = 5.0) -> pd.DataFrame:
    """Frames for runs of labels, e.g. [("sad", 10), ("happy", 5)] (label None = no face)."""
    rows = []
    i = 0
    for label, n in blocks:
        for _ in range(n):
            p = np.zeros(7)
            if label is not None:
                p[CLASSES.index(label)] = 1.0
            rows.append(
                {"t_s": i / fps, "frame": i, "face_id": -1 if label is None else 0,
                 "x": 0, "y": 0, "w": 0, "h": 0,
                 **{c: (np.nan if label is None else p[k]) for k, c in enumerate(CLASSES)},
                 "label": label or ""}
            )  # fmt: skip
            i += 1
    return pd.DataFrame(rows)


WORKED = [
    counts(happy=70, neutral=30),  # exactly 30% neutral: not over
    counts(happy=69, neutral=31),  # 31% neutral: nervous
    counts(disgust=90, happy=10),  # disgust is ignored
    counts(fear=20, sad=20, angry=20, happy=40),  # 20% each: not nervous under seed
    counts(surprise=35, happy=65),
    counts(angry=1),
    counts(happy=100),
    counts(neutral=10, fear=10, sad=10, surprise=10, angry=10, happy=50),
]


@pytest.mark.parametrize("c", WORKED)
def test_seed_preset_matches_original_rule_on_worked_examples(c: dict[str, int]) -> None:
    total = sum(c.values())
    res = nv.evaluate_rule_on_counts(nv.SEED_RULE, c, None, total, duration_s=60.0)
    assert res.verdict == original_rule(c)


def test_seed_preset_matches_original_rule_on_random_counts() -> None:
    rng = np.random.default_rng(0)
    for _ in range(300):
        vec = rng.multinomial(rng.integers(1, 200), rng.dirichlet(np.ones(7) * 0.7))
        c = dict(zip(CLASSES, (int(v) for v in vec)))
        res = nv.evaluate_rule_on_counts(nv.SEED_RULE, vec, None, int(vec.sum()), 60.0)
        assert res.verdict == original_rule(c)


def test_seed_preset_definition() -> None:
    rule = nv.preset("seed")
    assert set(rule.emotions) == set(ORIGINAL_EMOTIONS)
    assert "disgust" not in rule.emotions and "happy" not in rule.emotions
    assert all(t == 0.30 for _, t in rule.thresholds)
    assert (rule.logic, rule.basis) == ("any", "share")


def test_negative_affect_preset() -> None:
    rule = nv.preset("negative-affect")
    assert "neutral" not in rule.emotions and rule.logic == "sum"
    c = counts(fear=20, sad=20, angry=20, happy=40)
    assert nv.evaluate_rule_on_counts(rule, c, None, 100, 60.0).verdict == "nervous"
    c = counts(fear=10, sad=10, angry=10, neutral=70)  # 30% combined, neutral excluded
    assert nv.evaluate_rule_on_counts(rule, c, None, 100, 60.0).verdict == "not nervous"
    with pytest.raises(nv.RuleError):
        nv.preset("nope")


def test_not_enough_data() -> None:
    c = counts(sad=50, happy=50)
    res = nv.evaluate_rule_on_counts(nv.SEED_RULE, c, None, 100, duration_s=3.0)
    assert res.verdict == "not enough data" and not res.reasons
    assert "10 s" in res.summary
    res = nv.evaluate_rule_on_counts(nv.SEED_RULE, counts(), None, 0, duration_s=60.0)
    assert res.verdict == "not enough data"
    s = stats.summarize_session(session([("sad", 10)]), "short", FAST)  # 1.8 s
    assert nv.evaluate_rule(nv.SEED_RULE, s).verdict == "not enough data"


def test_custom_all_logic_and_mean_prob_basis() -> None:
    rule = nv.NervousnessRule(
        "custom", (("fear", 0.2), ("sad", 0.2)), logic="all", basis="share", min_duration_s=0
    )
    assert (
        nv.evaluate_rule_on_counts(rule, counts(fear=30, sad=30, happy=40), None, 100, 1).verdict
        == "nervous"
    )
    assert (
        nv.evaluate_rule_on_counts(rule, counts(fear=30, sad=10, happy=60), None, 100, 1).verdict
        == "not nervous"
    )
    mp = rule.replace(basis="mean_prob", logic="any")
    probs = dict(zip(CLASSES, [0.0, 0.0, 0.25, 0.1, 0.1, 0.0, 0.55]))
    res = nv.evaluate_rule_on_counts(mp, counts(neutral=100), probs, 100, 1)
    assert res.verdict == "nervous"
    fear = next(r for r in res.reasons if r.what == "fear")
    assert fear.crossed and fear.margin == pytest.approx(0.05)
    with pytest.raises(ValueError):
        nv.evaluate_rule_on_counts(mp, counts(neutral=1), None, 1, 1)


def test_reasons_say_which_emotion_crossed_by_how_much() -> None:
    res = nv.evaluate_rule_on_counts(
        nv.SEED_RULE, counts(fear=42, happy=58), None, 100, duration_s=60.0
    )
    fear = next(r for r in res.reasons if r.what == "fear")
    assert fear.crossed and fear.value == pytest.approx(0.42)
    assert fear.threshold == 0.30 and fear.margin == pytest.approx(0.12)
    assert "above by 12.0 points" in fear.text
    assert "fear 42%" in res.summary
    assert not any(r.crossed for r in res.reasons if r.what != "fear")


def test_bootstrap_verdicts_decisive_far_from_threshold() -> None:
    # 60 s, sad in short alternating runs -> narrow interval around 50%.
    s = stats.summarize_session(session([("sad", 5), ("happy", 5)] * 30), "a", FAST)
    res = nv.evaluate_rule(nv.SEED_RULE, s)
    assert res.with_ci and res.verdict == "nervous"
    sad = next(r for r in res.reasons if r.what == "sad")
    assert sad.lo > 0.30 and not sad.straddles and "entirely above" in sad.text
    happy = stats.summarize_session(session([("happy", 300)]), "b", FAST)
    assert nv.evaluate_rule(nv.SEED_RULE, happy).verdict == "not nervous"


def test_inconclusive_when_interval_straddles_threshold() -> None:
    # fear 32% in long runs: the point estimate crosses 30% but the interval is wide.
    s = stats.summarize_session(session([("fear", 16), ("happy", 34)] * 6), "c", FAST)
    res = nv.evaluate_rule(nv.SEED_RULE, s)
    fear = next(r for r in res.reasons if r.what == "fear")
    assert fear.crossed and fear.straddles
    assert res.verdict == "inconclusive"
    assert "straddles" in res.summary and "straddles the threshold" in fear.text
    # The same counts without intervals follow the original rule.
    fast = nv.evaluate_rule_on_counts(nv.SEED_RULE, counts(fear=96, happy=204), None, 300, 60)
    assert fast.verdict == "nervous"


def test_sum_logic_uses_joint_bootstrap_interval() -> None:
    s = stats.summarize_session(session([("fear", 3), ("sad", 3), ("happy", 4)] * 30), "d", FAST)
    res = nv.evaluate_rule(nv.NEGATIVE_AFFECT_RULE, s)
    assert len(res.reasons) == 1
    r = res.reasons[0]
    assert r.what == "fear+sad+surprise+angry"
    assert r.value == pytest.approx(0.6)
    assert r.lo <= 0.6 <= r.hi and r.lo > 0.35
    assert res.verdict == "nervous"


def test_a_sum_exactly_at_its_threshold_does_not_exceed_it() -> None:
    """1 sad + 2 surprise + 4 angry of 20 is 35% exactly, though the float sum is
    0.35000000000000003: "exceeds" is strict, so not nervous."""
    c = counts(sad=1, surprise=2, angry=4, happy=13)
    assert sum(c[e] / 20 for e in ("sad", "surprise", "angry")) > 0.35  # the rounding
    res = nv.evaluate_rule_on_counts(nv.NEGATIVE_AFFECT_RULE, c, None, 20, duration_s=60.0)
    assert res.verdict == "not nervous"
    assert not res.reasons[0].crossed and "exactly at it" in res.reasons[0].text


def test_rules_over_several_emotions_use_bonferroni_intervals() -> None:
    s = stats.summarize_session(session([("fear", 16), ("happy", 34)] * 6), "c", FAST)
    k = len(nv.SEED_RULE.thresholds)
    assert k > 1 and nv.rule_confidence(nv.SEED_RULE, 0.95) == pytest.approx(1 - 0.05 / k)
    assert nv.rule_confidence(nv.NEGATIVE_AFFECT_RULE, 0.95) == 0.95  # one test: the sum
    one = nv.SEED_RULE.replace(thresholds=(("fear", 0.3),))
    assert nv.rule_confidence(one, 0.95) == 0.95
    wide = nv.evaluate_rule(nv.SEED_RULE, s)
    narrow = nv.evaluate_rule(one, s)
    assert wide.confidence == pytest.approx(1 - 0.05 / k) and narrow.confidence == 0.95
    fear_wide = next(r for r in wide.reasons if r.what == "fear")
    fear_narrow = narrow.reasons[0]
    assert fear_wide.lo < fear_narrow.lo and fear_wide.hi > fear_narrow.hi
    assert f"{(1 - 0.05 / k) * 100:.3g}% CI" in fear_wide.text and "95% CI" in fear_narrow.text


def test_per_face_evaluation() -> None:
    s = stats.summarize_session(session([("sad", 100)]), "e", FAST)
    assert nv.evaluate_rule(nv.SEED_RULE, s, face_id=0).verdict == "nervous"
    with pytest.raises(KeyError):
        nv.evaluate_rule(nv.SEED_RULE, s, face_id=7)


def test_rule_serialisation_round_trip() -> None:
    for rule in (nv.SEED_RULE, nv.NEGATIVE_AFFECT_RULE):
        assert nv.NervousnessRule.from_dict(rule.to_dict()) == rule
        assert nv.NervousnessRule.from_json(rule.to_json()) == rule
        json.dumps(rule.to_dict())
    custom = nv.NervousnessRule(
        "mine", (("fear", 0.1), ("sad", 0.45)), logic="all", basis="mean_prob", min_duration_s=3
    )
    back = nv.NervousnessRule.from_dict(json.loads(json.dumps(custom.to_dict())))
    assert back == custom and back.threshold_for("sad") == 0.45
    # Also accepts a list of pairs.
    assert nv.NervousnessRule.from_dict({**custom.to_dict(), "thresholds": [["fear", 0.1],
                                         ["sad", 0.45]]}) == custom  # fmt: skip


@pytest.mark.parametrize(
    "bad",
    [
        {"thresholds": {"joy": 0.3}},
        {"thresholds": {"fear": 1.5}},
        {"thresholds": {}},
        {"thresholds": {"fear": 0.3}, "logic": "xor"},
        {"thresholds": {"fear": 0.3}, "basis": "votes"},
        {"thresholds": {"fear": 0.3}, "min_duration_s": -1},
        {"thresholds": {"fear": "lots"}},
        {"name": "x"},
    ],
)
def test_invalid_rules_raise_rule_error(bad: dict) -> None:
    with pytest.raises(nv.RuleError):
        nv.NervousnessRule.from_dict({"name": "x", **bad})


def test_results_are_labelled_heuristic() -> None:
    res = nv.evaluate_rule_on_counts(nv.SEED_RULE, counts(sad=50, happy=50), None, 100, 60)
    assert res.verdict in nv.VERDICTS
    assert "Heuristic indicator" in res.summary
    assert "not a measurement of anxiety" in res.disclaimer
    assert "hiring" in res.disclaimer
    assert res.to_dict()["disclaimer"] == nv.DISCLAIMER
    assert "heuristic" in nv.SEED_RULE.describe()


def test_results_are_frozen() -> None:
    res = nv.evaluate_rule_on_counts(nv.SEED_RULE, counts(sad=50, happy=50), None, 100, 60)
    with pytest.raises(AttributeError):
        res.verdict = "x"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        nv.SEED_RULE.name = "x"  # type: ignore[misc]


# ---- settings ---------------------------------------------------------------------------------


def test_settings_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "cfg" / "settings.json"
    monkeypatch.setenv("EMOTION_SETTINGS_FILE", str(path))
    assert settings.settings_path() == path
    assert settings.load_settings() == settings.Settings()  # missing file -> defaults
    rule = nv.NEGATIVE_AFFECT_RULE.replace(name="custom", sum_threshold=0.5)
    written = settings.save_settings(settings.Settings(rule, n_boot=300, block_s=3.0))
    assert written == path and path.exists()
    loaded = settings.load_settings()
    assert loaded.rule == rule and loaded.n_boot == 300 and loaded.block_s == 3.0
    settings.save_default_rule(nv.SEED_RULE)
    assert settings.load_default_rule() == nv.SEED_RULE
    assert settings.load_settings().n_boot == 300  # other settings kept
    assert loaded.bootstrap_config().block_s == 3.0
    off = settings.Settings(auto_block_factor=0.0)
    settings.save_settings(off)
    assert settings.load_settings().bootstrap_config().auto_block_factor == 0.0


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        "[1, 2]",
        '{"rule": {"thresholds": {"joy": 1}}}',
        '{"n_boot": -5}',
        # beyond what the sidebar offers: it would silently reset them to its minimum
        '{"n_boot": 20000}',
        '{"block_s": 90}',
        '{"auto_block_factor": 30}',
        '{"confidence": 0.5}',
        '{"rule": {"thresholds": {"fear": 0.3}, "logic": "sum", "sum_threshold": 1.2}}',
        '{"rule": {"thresholds": {"fear": 0.3}, "min_duration_s": 7200}}',
        # overflowing numbers
        '{"n_boot": 1e400}',
        '{"rule": {"thresholds": {"fear": 0.3}, "min_duration_s": 1' + "0" * 400 + "}}",
        "[" * 100_000,
    ],
)
def test_bad_settings_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "settings.json"
    path.write_text(text)
    with pytest.raises(settings.SettingsError, match="settings.json"):
        settings.load_settings(path)


def test_lenient_settings_keep_the_valid_values(tmp_path: Path) -> None:
    """One value out of range resets that value only, and says so; the rest are kept."""
    path = tmp_path / "settings.json"
    rule = nv.NEGATIVE_AFFECT_RULE.to_dict()
    path.write_text(json.dumps({"rule": rule, "n_boot": 20000, "block_s": 3.0, "confidence": 0.5}))
    loaded = settings.load_settings_leniently(path)
    assert loaded.settings.rule == nv.NEGATIVE_AFFECT_RULE
    assert loaded.settings.block_s == 3.0
    assert loaded.settings.n_boot == settings.Settings().n_boot
    assert loaded.settings.confidence == settings.Settings().confidence
    assert [p.split()[0] for p in loaded.problems] == ["n_boot", "confidence"]
    # Saving a new default rule keeps the valid block length.
    settings.save_default_rule(nv.SEED_RULE, path)
    assert settings.load_settings(path).block_s == 3.0
    assert settings.load_settings_leniently(path).problems == ()
    # A file that is not a JSON object still fails whole.
    path.write_text("[1, 2]")
    with pytest.raises(settings.SettingsError, match="settings.json"):
        settings.load_settings_leniently(path)
    assert settings.load_settings_leniently(tmp_path / "none.json").settings == settings.Settings()


def test_a_settings_file_that_is_not_utf8_is_a_settings_error(tmp_path: Path) -> None:
    """It used to raise UnicodeDecodeError (a traceback) from both readers."""
    path = tmp_path / "settings.json"
    path.write_bytes(b'\xff\xfe{"n_boot": 500}')
    for load in (settings.load_settings, settings.load_settings_leniently):
        with pytest.raises(settings.SettingsError, match="settings.json: settings are not valid"):
            load(path)
    settings.save_default_rule(nv.SEED_RULE, path)  # replaced, the other values at defaults
    assert settings.load_settings(path).rule == nv.SEED_RULE


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read settings"),  # a folder
        (b"null", "invalid settings (settings must be a JSON object)"),
        (b'"text"', "invalid settings (settings must be a JSON object)"),
        (b"{oops", "settings are not valid JSON"),
    ],
)
def test_both_settings_readers_refuse_a_file_alike(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "settings.json"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    for load in (settings.load_settings, settings.load_settings_leniently):
        with pytest.raises(settings.SettingsError) as caught:
            load(path)
        assert f"settings.json: {message}" in str(caught.value), load


def test_lenient_settings_read_the_file_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"n_boot": 20000, "block_s": 3.0}))
    reads = []
    real = settings.load_json_object
    monkeypatch.setattr(settings, "load_json_object", lambda p: reads.append(p) or real(p))
    loaded = settings.load_settings_leniently(path)
    assert loaded.settings.block_s == 3.0 and [p.split()[0] for p in loaded.problems] == ["n_boot"]
    assert reads == [path]


# ---- report -----------------------------------------------------------------------------------


def test_html_report_is_self_contained_and_escaped() -> None:
    frames = session([("sad", 5), ("happy", 5)] * 30)
    s = stats.summarize_session(frames, "s", FAST)
    res = nv.evaluate_rule(nv.SEED_RULE, s)
    meta = {"session_id": "x1", "candidate": "<script>alert(1)</script>", "model_name": "m"}
    card = {"name": "m", "arch": "cnn", "val_accuracy": 0.61,
            "per_class": {"sad": {"precision": 0.5, "recall": 0.4}}}  # fmt: skip
    html = report.build_html_report(
        meta, s, res, nv.SEED_RULE, card, stats.timeline(frames), None, None
    )
    assert "<script>alert" not in html and "&lt;script&gt;" in html
    assert "<script" not in html.lower()  # no scripts at all
    assert "src=" not in html and "<link" not in html  # nothing fetched from the network
    assert "<svg" in html and "polyline" in html
    assert res.verdict in html and nv.DISCLAIMER in html
    assert "Responsible use" in html and "recall" in html
    assert nv.SEED_RULE.to_dict()["name"] in html


def test_summary_csv() -> None:
    s = stats.summarize_session(session([("sad", 100)]), "s", FAST)
    res = nv.evaluate_rule(nv.SEED_RULE, s)
    df = report.summary_frame([({"session_id": "a", "candidate": "Ann"}, s, res)])
    assert df.loc[0, "verdict"] == "nervous"
    assert df.loc[0, "share_sad"] == 1.0
    assert {"share_sad_lo", "duration_s", "frames_no_face", "rule"} <= set(df.columns)
    assert "candidate" in report.summary_csv([({"candidate": "Ann"}, s, res)]).splitlines()[0]
    assert not math.isnan(float(df["duration_s"].iloc[0]))


def test_per_face_table_gives_each_face_its_own_verdict() -> None:
    sad = session([("sad", 100)])
    happy = session([("happy", 100)]).assign(face_id=1)
    s = stats.summarize_session(pd.concat([sad, happy], ignore_index=True), "two", FAST)
    rows = {row["face"]: row for row in nv.per_face_table(nv.SEED_RULE, s)}
    assert set(rows) == {0, 1}
    assert rows[0]["verdict"] == "nervous" and rows[0]["sad"] == 1.0
    assert rows[1]["verdict"] != "nervous" and rows[1]["happy"] == 1.0
    assert rows[0]["frames"] == rows[1]["frames"] == 100


# ---- time with a face in view, and too few bootstrap blocks ----------------------------------


def two_faces(n: int, brief: set[int], brief_label: str = "fear", fps: float = 5.0) -> pd.DataFrame:
    """Face 0 happy in all n frames; face 1 showing brief_label only in the frames `brief`."""
    face0 = session([("happy", n)], fps)
    face1 = session([(brief_label, n)], fps).assign(face_id=1)
    return pd.concat([face0, face1[face1["frame"].isin(brief)]], ignore_index=True)


def test_brief_face_gets_not_enough_data_not_a_certain_verdict() -> None:
    # 60 s at 5 fps; face 1 shows fear in 2 frames only. It used to be "nervous" with a
    # 100%-100% interval, checked against the whole session's 60 s.
    s = stats.summarize_session(two_faces(300, {150, 151}), "brief", FAST)
    rows = {row["face"]: row for row in nv.per_face_table(nv.SEED_RULE, s)}
    assert rows[1]["verdict"] == "not enough data"
    assert rows[1]["seen (s)"] == pytest.approx(0.4, abs=0.05)
    assert rows[0]["verdict"] == "not nervous" and rows[0]["seen (s)"] == pytest.approx(59.8)
    res = nv.evaluate_rule(nv.SEED_RULE, s, face_id=1)
    assert res.face_time_s == pytest.approx(59.8 * 2 / 300)
    assert "0.4 s of the 59.8 s recorded" in res.summary and not res.reasons


def test_pooled_session_with_a_face_in_two_frames_is_not_enough_data() -> None:
    frames = session([(None, 150), ("fear", 2), (None, 148)])
    s = stats.summarize_session(frames, "mostly empty", FAST)
    res = nv.evaluate_rule(nv.SEED_RULE, s)
    assert res.verdict == "not enough data"
    assert res.duration_s == pytest.approx(59.8) and res.face_time_s < 1.0


def test_observations_in_one_bootstrap_block_are_not_enough_data() -> None:
    # Even with no minimum duration, 2 adjacent frames lie in one 2 s block: every bootstrap
    # replicate resamples the same frames and the interval is degenerate.
    rule = nv.SEED_RULE.replace(min_duration_s=0.0)
    s = stats.summarize_session(two_faces(300, {150, 151}), "brief", FAST)
    assert s.faces[1].distribution.n_obs_blocks == 1
    res = nv.evaluate_rule(rule, s, face_id=1)
    assert res.verdict == "not enough data" and "bootstrap block" in res.summary
    # Spread over the session, the same rule gives face 1 a verdict.
    spread = stats.summarize_session(two_faces(300, set(range(0, 300, 3))), "spread", FAST)
    assert spread.faces[1].distribution.n_obs_blocks >= 2
    assert nv.evaluate_rule(rule, spread, face_id=1).verdict == "nervous"


def test_live_and_analysis_apply_minimum_duration_to_time_with_a_face() -> None:
    # 30 s at 5 fps with a face in every 4th frame: 7.5 s in view, below the rule's 10 s.
    labels: list[tuple[str | None, int]] = [("sad", 1), (None, 3)] * 38
    frames = session(labels)
    s = stats.summarize_session(frames, "sparse", FAST)
    analysis = nv.evaluate_rule(nv.SEED_RULE, s)
    live = nv.evaluate_rule_on_counts(
        nv.SEED_RULE, counts(sad=38), None, 38, s.duration_s, n_frames=s.n_frames
    )
    assert analysis.verdict == live.verdict == "not enough data"
    assert analysis.face_time_s == pytest.approx(live.face_time_s)
    assert live.face_time_s == pytest.approx(s.duration_s * 38 / 152)
    # Without n_frames the Live evaluation compares the whole duration (previous behaviour).
    assert (
        nv.evaluate_rule_on_counts(nv.SEED_RULE, counts(sad=38), None, 38, s.duration_s).verdict
        == "nervous"
    )
    # A face in every frame: time in view = duration, as before.
    full = nv.evaluate_rule_on_counts(nv.SEED_RULE, counts(sad=150), None, 150, 30.0, 150)
    assert full.verdict == "nervous" and full.face_time_s == 30.0


def test_persistent_session_verdict_is_inconclusive_with_a_caveat() -> None:
    # 2 min at 5 fps: sad and happy alternate in 10 s runs, only ~12 independent stretches.
    # The sad interval used to be "entirely above" 30% and the verdict "nervous".
    s = stats.summarize_session(session([("sad", 50), ("happy", 50)] * 6), "slow", FAST)
    assert s.distribution.persistent
    res = nv.evaluate_rule(nv.SEED_RULE, s)
    assert res.verdict == "inconclusive"
    assert "may be too narrow" in res.caveat and res.caveat in res.summary
    sad = next(r for r in res.reasons if r.what == "sad")
    assert sad.crossed and ("straddles" in sad.text or "may be too narrow" in sad.text)
    # Quickly alternating runs over the same time are not persistent: a verdict is given.
    fast = stats.summarize_session(session([("sad", 5), ("happy", 5)] * 60), "fast", FAST)
    assert not fast.distribution.persistent
    fast_res = nv.evaluate_rule(nv.SEED_RULE, fast)
    assert fast_res.verdict == "nervous" and fast_res.caveat == ""


def test_share_basis_is_labelled_as_face_observations() -> None:
    # Face 0 sad and face 1 happy in all 100 frames: sad is in every frame with a face, yet its
    # share is 50%, because the denominator is face rows (frames x faces), not frames.
    sad = session([("sad", 100)])
    happy = session([("happy", 100)]).assign(face_id=1)
    s = stats.summarize_session(pd.concat([sad, happy], ignore_index=True), "two", FAST)
    assert dict(zip(CLASSES, s.distribution.share))["sad"] == pytest.approx(0.5)
    label = stats.BASIS_LABELS["share"]
    assert "face observations" in label and "frames with a face" not in label
    res = nv.evaluate_rule(nv.SEED_RULE, s)
    sad_reason = next(r for r in res.reasons if r.what == "sad")
    assert "50% of face observations vs threshold 30%" in sad_reason.text
    for rule in nv.PRESETS.values():
        assert "frames with a face" not in rule.description + rule.describe()


def test_rule_equality_ignores_description() -> None:
    # A preset saved with an older description still counts as that preset.
    old = nv.SEED_RULE.replace(description="exceeds 30% of frames with a face")
    assert old == nv.SEED_RULE
    assert nv.SEED_RULE.replace(min_duration_s=5.0) != nv.SEED_RULE


def test_save_defaults_saves_the_rule_and_statistics_or_says_why_not(tmp_path: Path) -> None:
    """One function for both "Save as default" cases; a bad value is a SettingsError naming the
    file (not a bare ValueError), and nothing is written."""
    path = tmp_path / "settings.json"
    settings.save_settings(settings.Settings(n_boot=300, block_s=3.0), path)
    settings.save_defaults(nv.SEED_RULE, None, path)  # the rule only: the rest kept
    assert settings.load_settings(path) == settings.Settings(nv.SEED_RULE, 300, 3.0)
    stats = {"n_boot": 500, "block_s": 1.0, "confidence": 0.9, "auto_block_factor": 0.0}
    settings.save_defaults(nv.NEGATIVE_AFFECT_RULE, stats, path)
    assert settings.load_settings(path) == settings.Settings(nv.NEGATIVE_AFFECT_RULE, **stats)
    before = path.read_text()
    for bad in ({"n_boot": 5}, {"confidence": 0.5}, {"speed": 1}):
        with pytest.raises(settings.SettingsError, match="settings.json: settings not saved"):
            settings.save_defaults(nv.SEED_RULE, bad, path)
    assert path.read_text() == before
    with pytest.raises(settings.SettingsError, match="cannot write settings"):
        settings.save_defaults(nv.SEED_RULE, None, tmp_path)  # a folder: the write fails
