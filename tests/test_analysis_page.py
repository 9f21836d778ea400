"""pages/2_Analysis.py under streamlit's AppTest with sessions in a temporary folder."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

import ui_common
from emotion_core import registry
from emotion_core.classes import CLASSES

PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "2_Analysis.py")
HEADER = "t_s,frame,face_id,x,y,w,h," + ",".join(CLASSES) + ",label"


def frames_csv(labels: Sequence[str | None], fps: float = 5.0) -> str:
    """frames.csv text: each label a confident frame (0.88 / 0.02), None = no face."""
    lines = [HEADER]
    for i, lab in enumerate(labels):
        t = f"{i / fps:.3f}"
        if lab is None:
            lines.append(f"{t},{i},-1,0,0,0,0,,,,,,,,")
            continue
        p = np.full(7, 0.02)
        p[CLASSES.index(lab)] = 0.88
        lines.append(f"{t},{i},0,1,2,30,30," + ",".join(f"{v:.6f}" for v in p) + f",{lab}")
    return "\n".join(lines) + "\n"


def write_session(
    root: Path,
    sid: str,
    labels: Sequence[str | None] | None = None,
    candidate: str = "Ann",
    model: str = "",
    started: str = "2024-05-01T10:00:00+00:00",
    frames_text: str | None = None,
    meta_extra: dict | None = None,
) -> Path:
    folder = root / sid
    folder.mkdir(parents=True)
    text = frames_text if frames_text is not None else frames_csv(labels or [])
    (folder / "frames.csv").write_text(text)
    meta = {
        "session_id": sid, "candidate": candidate, "notes": "", "started_at": started,
        "ended_at": "2024-05-01T10:05:00+00:00", "source": "webcam", "model_name": model,
        "model_hash": "abc123", "thresholds": {}, "app_version": "0.1.0", "format_version": 1,
        "complete": True, "frames": 0, "faces": 0,
        **(meta_extra or {}),
    }  # fmt: skip
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


# 60 s at 5 fps: sad in short runs -> share ~50% with a narrow interval.
SADDISH = (["sad"] * 5 + ["happy"] * 5) * 30
HAPPY = ["happy"] * 280 + [None] * 20


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A sessions folder, a settings file with a small bootstrap, an empty models folder."""
    sessions = tmp_path / "sessions"
    sessions.mkdir()
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"n_boot": 100, "block_s": 2.0, "confidence": 0.95}))
    models = tmp_path / "models"
    models.mkdir()
    monkeypatch.setenv("EMOTION_SESSIONS_DIR", str(sessions))
    monkeypatch.setenv("EMOTION_SETTINGS_FILE", str(settings))
    monkeypatch.setenv("EMOTION_MODELS_DIR", str(models))  # as a deployment would
    return sessions


def run(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def app() -> AppTest:
    return run(AppTest.from_file(PAGE, default_timeout=60))


def verdicts(at: AppTest) -> dict[str, str]:
    df = next(d.value for d in at.dataframe if "verdict" in d.value.columns)
    return dict(zip(df["session"], df["verdict"]))


def errors(at: AppTest) -> str:
    return "\n".join(e.value for e in at.error)


def test_newest_session_selected_and_analysed(env: Path) -> None:
    write_session(env, "old", SADDISH, candidate="Old", started="2024-01-01T09:00:00+00:00")
    write_session(env, "new", HAPPY, candidate="New", started="2024-06-01T09:00:00+00:00")
    at = app()
    table = at.dataframe[0].value
    assert {"candidate", "date", "duration (s)", "source", "model", "complete"} <= set(
        table.columns
    )
    assert at.multiselect(key="an_selected").value == ["new"]
    assert verdicts(at) == {"New": "not nervous"}
    assert any("Bonferroni-adjusted" in c.value for c in at.caption)  # the seed rule: 5 emotions
    labels = [m.label for m in at.metric]
    assert {"Duration", "Frames", "Frames with no face", "Faces seen"} <= set(labels)
    no_face = next(m for m in at.metric if m.label == "Frames with no face")
    assert no_face.value == "20"
    assert not at.error
    assert any("heuristic" in c.value.lower() for c in at.caption)
    assert any("Responsible use" in c.value for c in at.caption)


def test_changing_threshold_changes_verdict(env: Path) -> None:
    write_session(env, "s1", SADDISH, candidate="Sam")
    at = app()
    assert verdicts(at) == {"Sam": "nervous"}
    at.selectbox(key=ui_common.W_PRESET).set_value("custom")
    run(at)
    # The custom widgets start from the seed rule; raise sad's threshold above the ~50% share.
    assert at.number_input(key=ui_common.W_THR_PREFIX + "sad").value == 30.0
    at.number_input(key=ui_common.W_THR_PREFIX + "sad").set_value(80.0)
    run(at)
    assert verdicts(at) == {"Sam": "not nervous"}
    rule = at.session_state[ui_common.RULE_KEY]
    assert rule["name"] == "custom" and rule["thresholds"]["sad"] == 0.8
    # Back to a preset: the negative-affect rule (sad ~50% > 35%) says nervous.
    at.selectbox(key=ui_common.W_PRESET).set_value("negative-affect")
    run(at)
    assert verdicts(at) == {"Sam": "nervous"}
    # A long minimum duration makes it "not enough data".
    at.selectbox(key=ui_common.W_PRESET).set_value("custom")
    run(at)
    at.number_input(key=ui_common.W_MIN_DUR).set_value(120.0)
    run(at)
    assert verdicts(at) == {"Sam": "not enough data"}


def test_save_as_default_writes_settings(env: Path, tmp_path: Path) -> None:
    write_session(env, "s1", SADDISH)
    at = app()
    at.selectbox(key=ui_common.W_PRESET).set_value("negative-affect")
    run(at)
    at.button(key="rule_save_default").click()
    run(at)
    saved = json.loads((tmp_path / "settings.json").read_text())
    assert saved["rule"]["name"] == "negative-affect"
    assert saved["n_boot"] == 100
    # A fresh app (new browser session) starts from the saved rule.
    at2 = app()
    assert at2.selectbox(key=ui_common.W_PRESET).value == "negative-affect"


def test_save_as_default_with_a_bad_value_or_an_unwritable_file_says_so(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An invalid statistics value (Settings raises ValueError) or a failed write is an error
    in the sidebar, not a traceback, and the saved file is left as it was."""
    write_session(env, "s1", SADDISH)
    settings_file = tmp_path / "settings.json"
    before = settings_file.read_text()
    at = app()
    stats = dict(at.session_state[ui_common.STATS_KEY])
    at.session_state[ui_common.STATS_KEY] = {**stats, "n_boot": 5}  # read before the sidebar
    at.button(key="rule_save_default").click()
    run(at)
    error = "\n".join(e.value for e in at.sidebar.error)
    assert "Not saved as default" in error and "n_boot must be between 50" in error
    assert settings_file.read_text() == before and not at.sidebar.success
    monkeypatch.setenv("EMOTION_SETTINGS_FILE", str(tmp_path))  # a folder: the write fails
    at.button(key="rule_save_default").click()
    run(at)
    error = "\n".join(e.value for e in at.sidebar.error)
    assert "Not saved as default" in error and "cannot write settings" in error


def test_the_upload_limit_is_in_the_uploaders_unit() -> None:
    """The byte limit the page checks is what file_uploader's max_upload_size (in MB of
    1024 * 1024 bytes) allows; the messages are tested with sessions.load_session_upload."""
    assert ui_common.MAX_UPLOAD_BYTES == ui_common.MAX_UPLOAD_MB * 1024 * 1024


def test_one_bad_saved_value_resets_only_that_value(env: Path, tmp_path: Path) -> None:
    (tmp_path / "settings.json").write_text(json.dumps({"n_boot": 300, "block_s": 600}))
    write_session(env, "s1", SADDISH)
    at = app()
    warning = "\n".join(w.value for w in at.sidebar.warning)
    assert "block_s reset to its default" in warning and "settings.json" in warning
    assert at.number_input(key=ui_common.W_NBOOT).value == 300
    assert at.number_input(key=ui_common.W_BLOCK).value == 2.0


def test_a_session_starting_at_a_negative_time_is_shown_whole(env: Path) -> None:
    """int(-0.5) is 0: the slider's lower bound rounds down, so nothing is cut off unasked."""
    text = frames_csv(["happy"] * 50).splitlines()
    shifted = [text[0]] + [
        f"{float(line.split(',', 1)[0]) - 0.5:.3f},{line.split(',', 1)[1]}" for line in text[1:]
    ]
    write_session(env, "neg", frames_text="\n".join(shifted) + "\n")
    at = app()
    slider = at.slider(key=next(k for k in at.session_state if str(k).startswith("an_range_")))
    assert slider.value == (-1.0, 10.0)
    frames = next(m for m in at.metric if m.label == "Frames")
    assert frames.value == "50"


def compare_happy_and_sad(env: Path, happy_name: str, sad_name: str) -> AppTest:
    """The page with two sessions selected: a mostly happy one and an all-sad one."""
    write_session(env, "a", HAPPY, candidate=happy_name, started="2024-01-01T09:00:00+00:00")
    write_session(env, "b", ["sad"] * 300, candidate=sad_name, started="2024-01-02T09:00:00")
    at = app()
    at.multiselect(key="an_selected").set_value(["a", "b"])
    return run(at)


def test_comparison_of_two_sessions(env: Path) -> None:
    at = compare_happy_and_sad(env, "Ann", "Bob")
    assert verdicts(at) == {"Ann": "not nervous", "Bob": "nervous"}
    sentence = next(i.value for i in at.info if "JS distance" in i.value)
    assert "unlikely to be chance" in sentence
    assert sentence.startswith("Ann shows")
    # Switch the detail view and the comparison basis.
    at.selectbox(key="an_detail").set_value("Bob")
    at.radio(key="an_cmp_basis").set_value("mean_prob")
    run(at)
    sentence = next(i.value for i in at.info if "JS distance" in i.value)
    assert "mean" in sentence and "probability" in sentence


def test_names_are_shown_as_typed_not_as_markdown(env: Path) -> None:
    at = compare_happy_and_sad(env, "**Ann** $x$", "[Bob](x)")
    sentence = next(i.value for i in at.info if "JS distance" in i.value)
    assert r"\*\*Ann\*\* \$x\$" in sentence and r"\[Bob\]\(x\)" in sentence
    labels = [str(getattr(b, "label", "")) for b in at.get("download_button")]
    assert any(r"HTML report (\[Bob\]\(x\))" in label for label in labels)


def test_persistent_expressions_are_warned_about(env: Path) -> None:
    # 40 s at 5 fps in two long runs: few independent stretches, so intervals may be too narrow
    write_session(env, "slow", ["sad"] * 100 + ["happy"] * 100, candidate="Slow")
    at = app()
    warning = next(w.value for w in at.warning if "may be too narrow" in w.value)
    assert warning.startswith("Intervals may be too narrow")
    assert verdicts(at)["Slow"] != "nervous"  # at most inconclusive


def test_time_range_slider_recomputes(env: Path) -> None:
    # First 30 s sad, last 30 s happy.
    write_session(env, "s1", ["sad"] * 150 + ["happy"] * 150, candidate="Sam")
    at = app()
    slider = at.slider(key=next(k for k in at.session_state if str(k).startswith("an_range_")))
    slider.set_value((40.0, 60.0))
    run(at)
    assert any("40.0-60.0 s" in c.value for c in at.caption)
    frames = next(m for m in at.metric if m.label == "Frames")
    assert int(frames.value) < 150
    verdict_md = " ".join(m.value for m in at.markdown)
    assert "not nervous" in verdict_md  # the detail verdict for the happy part


def test_model_card_per_class_accuracy_shown(env: Path, tmp_path: Path) -> None:
    card = registry.ModelCard(
        name="cardmodel",
        arch="cnn",
        val_accuracy=0.62,
        per_class={c: {"precision": 0.5, "recall": 0.6, "f1": 0.55} for c in CLASSES},
    )
    (tmp_path / "models" / "cardmodel.json").write_text(json.dumps(card.to_dict()))
    write_session(env, "s1", SADDISH, model="cardmodel")
    at = app()
    tables = [d.value for d in at.dataframe]
    assert any("recall" in t.columns for t in tables)
    assert any("Analysis settings not recorded" in c.value for c in at.caption)


def test_how_a_video_was_analysed_is_shown_beside_the_model_figures(
    env: Path, tmp_path: Path
) -> None:
    card = registry.ModelCard(
        name="cardmodel", arch="cnn", val_accuracy=0.62, val_accuracy_tta=0.64,
        per_class={c: {"precision": 0.5, "recall": 0.6, "f1": 0.55} for c in CLASSES},
    )  # fmt: skip
    (tmp_path / "models" / "cardmodel.json").write_text(json.dumps(card.to_dict()))
    pipeline = {"tta": True, "every": 3, "min_neighbors": 5}
    write_session(env, "s1", SADDISH, model="cardmodel", meta_extra={"pipeline": pipeline})
    at = app()
    (caption,) = [c.value for c in at.caption if c.value.startswith("Analysed with")]
    assert "one frame in 3" in caption and "mirror TTA" in caption and "64" in caption


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        ("missing_col", HEADER.replace(",neutral", "") + "\n0,0,0,1,1,1,1,.1,.1,.1,.1,.1,.5,x\n",
         "missing required columns: neutral"),
        ("extra_col", HEADER + ",bonus\n", "unexpected columns: bonus"),
        ("bad_sum", HEADER + "\n0,0,0,1,1,1,1,.5,.5,.5,.5,.5,.5,.5,happy\n", "sum to"),
        ("not_number", HEADER + "\n0,0,0,1,1,1,1,abc,.1,.1,.4,.1,.1,.2,happy\n",
         "is not a number"),
    ],
)  # fmt: skip
def test_broken_session_folders_reported_others_load(
    env: Path, name: str, text: str, problem: str
) -> None:
    write_session(env, "good", HAPPY, candidate="Good", started="2024-01-01T09:00:00+00:00")
    write_session(env, name, frames_text=text, started="2024-02-01T09:00:00+00:00")
    at = app()
    assert name in errors(at) and problem in errors(at)
    assert verdicts(at) == {"Good": "not nervous"}


def test_empty_and_unreadable_sessions(env: Path) -> None:
    write_session(env, "good", HAPPY, candidate="Good", started="2024-01-01T09:00:00+00:00")
    write_session(env, "empty", frames_text=HEADER + "\n", candidate="Empty")
    (env / "nometa").mkdir()
    (env / "nometa" / "frames.csv").write_text(frames_csv(HAPPY))
    write_session(env, "future", HAPPY, meta_extra={"format_version": 99})
    write_session(env, "badjson", HAPPY)
    (env / "badjson" / "meta.json").write_text("{oops")
    at = app()
    at.multiselect(key="an_selected").set_value(["good", "empty"])
    run(at)
    text = errors(at)
    assert "empty" in text and "no frames" in text
    assert "nometa" in text and "missing" in text
    assert "future" in text and "newer" in text
    assert "badjson" in text and "JSON" in text
    assert verdicts(at) == {"Good": "not nervous"}


def test_uploads_good_bad_older_and_huge(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ui_common, "MAX_UPLOAD_BYTES", 60_000)
    write_session(env, "good", HAPPY, candidate="Good")
    at = app()
    older = (
        "t_s,"
        + ",".join(CLASSES)
        + "\n"
        + "\n".join(f"{i / 5:.2f},0.02,0.02,0.02,0.02,0.88,0.02,0.02" for i in range(100))
    )  # older single-face format: no frame/face_id/box/label columns
    at.file_uploader(key="an_uploads").set_value(
        [
            ("upload_ok.csv", frames_csv(SADDISH).encode(), "text/csv"),
            ("older.csv", older.encode(), "text/csv"),
            ("extra.csv", (HEADER + ",bonus\n").encode(), "text/csv"),
            ("huge.csv", frames_csv(["happy"] * 1000).encode(), "text/csv"),
            ("empty.csv", HEADER.encode(), "text/csv"),
        ]
    )
    run(at)
    text = errors(at)
    assert "extra.csv" in text and "unexpected columns" in text
    assert "huge.csv" in text and "upload limit" in text
    assert "empty.csv" in text and "no rows" in text
    v = verdicts(at)
    assert v["Good"] == "not nervous"
    assert v["upload_ok.csv (upload)"] == "nervous"
    assert v["older.csv (upload)"] == "nervous"  # 100% sad, 19.8 s


def delete_form_for_gone(env: Path) -> AppTest:
    """Two sessions, "keep" and "gone"; the delete form with "gone" picked and confirmed."""
    write_session(env, "keep", HAPPY, candidate="Keep", started="2024-01-01T09:00:00+00:00")
    write_session(env, "gone", HAPPY, candidate="Gone", started="2024-03-01T09:00:00+00:00")
    at = app()
    at.selectbox(key="an_delete_target").set_value("gone")
    run(at)
    assert at.button(key="an_delete").disabled
    at.checkbox(key="an_delete_confirm:gone").check()
    run(at)
    return at


def test_delete_needs_confirmation(env: Path) -> None:
    at = delete_form_for_gone(env)
    assert not at.button(key="an_delete").disabled
    at.button(key="an_delete").click()
    run(at)
    assert not (env / "gone").exists() and (env / "keep").exists()
    assert any("Deleted session gone" in s.value for s in at.success)
    assert "gone" not in at.multiselect(key="an_selected").value


def test_delete_confirmation_does_not_follow_a_new_target(env: Path) -> None:
    at = delete_form_for_gone(env)
    at.selectbox(key="an_delete_target").set_value("keep")
    run(at)
    assert at.button(key="an_delete").disabled
    assert not at.checkbox(key="an_delete_confirm:keep").value
    assert (env / "gone").exists() and (env / "keep").exists()


def test_exports_present(env: Path) -> None:
    write_session(env, "s1", SADDISH, candidate="Sam")
    at = app()
    labels = [str(getattr(b, "label", "")) for b in at.get("download_button")]
    assert any("Summary CSV" in lab for lab in labels)
    assert any("HTML report" in lab for lab in labels)


def test_no_sessions(env: Path) -> None:
    at = app()
    assert any("No recorded sessions" in i.value for i in at.info)


def test_two_faces_per_face_view(env: Path) -> None:
    lines = [HEADER]
    for i in range(300):  # 60 s: face 0 always happy, face 1 always sad
        t = f"{i / 5:.3f}"
        for fid, lab in ((0, "happy"), (1, "sad")):
            p = np.full(7, 0.02)
            p[CLASSES.index(lab)] = 0.88
            lines.append(f"{t},{i},{fid},1,2,30,30," + ",".join(f"{v:.6f}" for v in p) + f",{lab}")
    write_session(env, "two", frames_text="\n".join(lines) + "\n", candidate="Pair")
    at = app()
    assert next(m for m in at.metric if m.label == "Faces seen").value == "2"
    per_face = next(d.value for d in at.dataframe if "face" in d.value.columns)
    assert dict(zip(per_face["face"], per_face["verdict"])) == {0: "not nervous", 1: "nervous"}
    face_box = at.selectbox(key=next(k for k in at.session_state if str(k).startswith("an_face_")))
    face_box.set_value(0)
    run(at)
    md = " ".join(m.value for m in at.markdown)
    assert ":green[not nervous]" in md
    labels = [str(getattr(b, "label", "")) for b in at.get("download_button")]
    assert any("HTML report (Pair, face 0)" in label for label in labels)


def test_three_sessions_get_a_table_of_their_pairs(env: Path) -> None:
    write_session(env, "a", HAPPY, candidate="Ann", started="2024-01-01T09:00:00+00:00")
    write_session(env, "b", ["sad"] * 300, candidate="Bob", started="2024-01-02T09:00:00")
    write_session(env, "c", SADDISH, candidate="Ann", started="2024-01-03T09:00:00")
    at = app()
    at.multiselect(key="an_selected").set_value(["a", "b", "c"])
    run(at)
    assert list(verdicts(at)) == ["Ann", "Bob", "Ann #2"]  # repeated names made unique
    pairs = next(d.value for d in at.dataframe if "JS distance" in d.value.columns)
    assert list(pairs.columns) == ["A", "B", "JS distance", "effect", "p (Holm)",
                                   "largest difference"]  # fmt: skip
    assert list(zip(pairs["A"], pairs["B"])) == [("Ann", "Bob"), ("Ann", "Ann #2"),
                                                 ("Bob", "Ann #2")]  # fmt: skip


def test_a_save_as_default_over_a_broken_settings_file_clears_its_warning(
    env: Path, tmp_path: Path
) -> None:
    """The warning about the unreadable file is stale once the save has replaced the file: it
    is not shown beside "Saved as default" in the same render."""
    settings_file = tmp_path / "settings.json"
    settings_file.write_text("this is not JSON")
    write_session(env, "s1", SADDISH)
    at = app()
    warning = "\n".join(w.value for w in at.sidebar.warning)
    assert "Saved settings ignored" in warning and "not valid JSON" in warning
    at.button(key="rule_save_default").click()
    run(at)
    assert any("Saved as default in" in s.value for s in at.sidebar.success)
    assert not [w.value for w in at.sidebar.warning if "Saved settings" in w.value]
    assert json.loads(settings_file.read_text())["rule"]["name"] == "seed"
    run(at)  # and not on the next render either
    assert not [w.value for w in at.sidebar.warning if "Saved settings" in w.value]


def test_a_session_folder_with_an_odd_name_is_analysed_and_deleted(env: Path) -> None:
    """A folder renamed by hand is listed and analysed; Delete accepts it too."""
    odd = "odd name é .."
    write_session(env, odd, HAPPY, candidate="Odd", started="2024-03-01T09:00:00+00:00")
    write_session(env, "keep", HAPPY, candidate="Keep", started="2024-01-01T09:00:00+00:00")
    at = app()
    assert at.multiselect(key="an_selected").value == [odd]
    assert verdicts(at) == {"Odd": "not nervous"}
    at.selectbox(key="an_delete_target").set_value(odd)
    run(at)
    at.checkbox(key=f"an_delete_confirm:{odd}").check()
    run(at)
    at.button(key="an_delete").click()
    run(at)
    assert not errors(at), errors(at)
    assert any(f"Deleted session {odd}" in s.value for s in at.success)
    assert not (env / odd).exists() and (env / "keep").exists()


def test_a_sessions_folder_that_is_a_file_is_an_error_and_uploads_still_work(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a_file = tmp_path / "sessions.csv"
    a_file.write_text("not a folder")
    monkeypatch.setenv("EMOTION_SESSIONS_DIR", str(a_file))
    at = app()
    assert "sessions.csv: the sessions folder is not a folder" in errors(at)
    assert not [i.value for i in at.info if "No recorded sessions" in i.value]
    at.file_uploader(key="an_uploads").set_value(
        [("up.csv", frames_csv(SADDISH).encode(), "text/csv")]
    )
    run(at)
    assert verdicts(at) == {"up.csv (upload)": "nervous"}
    assert a_file.read_text() == "not a folder"


def test_a_few_bad_rows_or_a_cut_off_last_line_are_skipped_with_a_warning(env: Path) -> None:
    """A complete session whose last line was cut off, and one with a 'nan' in one row of 300:
    both are analysed from their valid rows, with a warning saying what was skipped; the files
    stay as they were."""
    cut_text = frames_csv(HAPPY) + "60.000,300,0,1,2,30,30,0.02"
    write_session(env, "cut", candidate="Cut", started="2024-03-01T09:00:00", frames_text=cut_text)
    nan_lines = frames_csv(SADDISH).splitlines()
    nan_lines[6] = nan_lines[6].replace("0.020000", "nan", 1)
    nan_text = "\n".join(nan_lines) + "\n"
    write_session(env, "nan", candidate="Nan", started="2024-02-01T09:00:00", frames_text=nan_text)
    at = app()
    at.multiselect(key="an_selected").set_value(["cut", "nan"])
    run(at)
    assert not errors(at), errors(at)
    assert verdicts(at) == {"Cut": "not nervous", "Nan": "nervous"}
    warnings = "\n".join(w.value for w in at.warning)
    assert "Cut: " in warnings and "line 302 is cut off" in warnings
    assert "Nan: " in warnings and "1 invalid row of 300 skipped" in warnings
    assert "line 7, column 'angry': 'nan' is not a number" in warnings
    assert (env / "cut" / "frames.csv").read_text() == cut_text
    assert (env / "nan" / "frames.csv").read_text() == nan_text
