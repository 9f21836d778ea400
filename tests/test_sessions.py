"""Session recording, crash safety, names, concurrency, loading/validation and deletion."""

from __future__ import annotations

import errno
import gc
import hashlib
import io
import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from emotion_core import sessions as sessions_mod
from emotion_core.classes import CLASSES
from emotion_core.results import FaceResult, FrameResult
from emotion_core.sessions import (
    COLUMNS,
    FRAMES_FILE,
    META_FILE,
    SessionError,
    SessionRecorder,
    clean_candidate,
    delete_session,
    list_sessions,
    load_session,
    load_session_csv,
    session_table,
    slugify,
    unique_labels,
)

HEADER = ",".join(COLUMNS)


def probs_for(k: int, peak: float = 0.7) -> np.ndarray:
    p = np.full(len(CLASSES), (1.0 - peak) / (len(CLASSES) - 1))
    p[k] = peak
    return p


def frame(i: int, t: float, n_faces: int = 1, k: int = 3) -> FrameResult:
    faces = tuple(
        FaceResult(j, (10 * j, 20, 30, 40), probs_for(k), probs_for(k)) for j in range(n_faces)
    )
    return FrameResult(frame_index=i, t_s=t, faces=faces)


def disk_rows(rec: SessionRecorder) -> list[str]:
    return rec.frames_path.read_text(encoding="utf-8").splitlines()[1:]


# --- recording ---------------------------------------------------------------------------------


def test_rows_format_and_meta(tmp_path: Path) -> None:
    rec = SessionRecorder(
        tmp_path,
        "Ana",
        notes="round 1",
        model_name="m1",
        model_hash="abc",
        thresholds={"name": "seed"},
    )
    rec.add_frame(frame(100, 50.0, n_faces=2, k=3))
    rec.add_frame(frame(101, 50.5, n_faces=0))
    path = rec.close()
    assert path == tmp_path / rec.session_id
    lines = (path / FRAMES_FILE).read_text().splitlines()
    assert lines[0] == HEADER
    assert lines[1].startswith("0.000,0,0,0,20,30,40,")
    assert lines[1].endswith(",happy")
    assert lines[2].startswith("0.000,0,1,10,20,30,40,")
    assert lines[3] == "0.500,1,-1,0,0,0,0,,,,,,,,"
    meta = json.loads((path / META_FILE).read_text())
    assert set(meta) >= {
        "session_id",
        "candidate",
        "notes",
        "started_at",
        "ended_at",
        "source",
        "model_name",
        "model_hash",
        "thresholds",
        "app_version",
        "format_version",
        "complete",
        "frames",
        "faces",
    }
    assert meta["complete"] is True and meta["ended_at"]
    assert (meta["frames"], meta["faces"], meta["format_version"]) == (2, 2, 1)
    assert meta["source"] == "webcam" and meta["thresholds"] == {"name": "seed"}
    session = load_session(rec.session_id, tmp_path)
    assert session.info.complete and session.info.frames == 2 and session.info.faces == 2
    assert session.info.duration_s == pytest.approx(0.5)
    df = session.frames
    assert list(df.columns) == list(COLUMNS)
    assert df["face_id"].tolist() == [0, 1, -1]
    assert np.isnan(df.loc[2, list(CLASSES)].to_numpy(dtype=float)).all()
    assert df.loc[2, "label"] == ""
    np.testing.assert_allclose(
        df.loc[0, list(CLASSES)].to_numpy(dtype=float), probs_for(3), atol=1e-6
    )


def test_for_model_records_the_card_rule_and_settings(tmp_path: Path) -> None:
    from emotion_core.pipeline import PipelineConfig
    from emotion_core.registry import ModelCard, card_hash

    card = ModelCard(name="tiny", arch="cnn-test")
    config = PipelineConfig(min_neighbors=7)
    rec = SessionRecorder.for_model(
        str(tmp_path),  # a str folder is fine
        model=card,
        candidate="Zoë",
        notes="round 2",
        source="webcam",
        thresholds={"name": "seed"},
        pipeline=config,
    )
    rec.add_frame(frame(0, 0.0))
    meta = json.loads((rec.close() / META_FILE).read_text())
    assert (meta["model_name"], meta["model_hash"]) == ("tiny", card_hash(card))
    assert meta["candidate"] == "Zoë" and meta["notes"] == "round 2"
    assert meta["source"] == "webcam" and meta["thresholds"] == {"name": "seed"}
    assert meta["pipeline"]["min_neighbors"] == 7 and meta["pipeline"]["tta"] is False
    assert rec.path.parent == tmp_path


def test_for_model_takes_a_bare_model_name_and_a_settings_dict(tmp_path: Path) -> None:
    settings = {"min_neighbors": 5, "every": 3}
    rec = SessionRecorder.for_model(
        tmp_path, model="FakeClassifier", candidate="x", source="clip.mp4", pipeline=settings
    )
    settings["every"] = 9  # the recorder keeps its own copy
    rec.add_frame(frame(0, 0.0))
    meta = json.loads((rec.close() / META_FILE).read_text())
    assert (meta["model_name"], meta["model_hash"]) == ("FakeClassifier", "")
    assert meta["pipeline"] == {"min_neighbors": 5, "every": 3}
    assert meta["thresholds"] == {} and meta["notes"] == ""


def test_for_model_refuses_unknown_settings_before_creating_a_folder(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="dataclass or a mapping"):
        SessionRecorder.for_model(
            tmp_path / "s",
            model="m",
            candidate="x",
            source="webcam",
            pipeline=[1, 2],  # type: ignore[arg-type]
        )
    assert not (tmp_path / "s").exists()


def test_discard_if_empty_deletes_only_a_recording_without_frames(tmp_path: Path) -> None:
    empty = SessionRecorder(tmp_path, "Empty")
    assert empty.discard_if_empty() and not empty.path.exists()
    with pytest.raises(SessionError, match="already stopped"):
        empty.add_frame(frame(0, 0.0))  # a frame arriving after the discard is refused
    kept = SessionRecorder(tmp_path, "Kept")
    kept.add_frame(frame(0, 0.0))
    assert not kept.discard_if_empty() and kept.path.exists()
    kept.add_frame(frame(1, 0.1))  # still recording
    kept.close(complete=True)
    assert len(load_session(kept.path).frames) == 2


def test_meta_written_at_start_is_incomplete(tmp_path: Path) -> None:
    rec = SessionRecorder(tmp_path, "Bo")
    meta = json.loads(rec.meta_path.read_text())
    assert meta["complete"] is False and meta["ended_at"] is None
    assert rec.frames_path.read_text() == HEADER + "\n"
    assert not list(rec.path.glob(".tmp-*"))  # atomic writes leave no temp files
    rec.close()


def test_incremental_flush_visible_on_disk_before_close(tmp_path: Path) -> None:
    rec = SessionRecorder(tmp_path, "Cy", flush_interval_s=0.05)
    rec.add_frame(frame(0, 0.0))
    time.sleep(0.06)
    rec.add_frame(frame(1, 0.1))  # interval passed: both rows go to disk now
    assert len(disk_rows(rec)) == 2
    rec.add_frame(frame(2, 0.2))  # buffered
    time.sleep(0.06)
    rec.flush_if_due()
    assert len(disk_rows(rec)) == 3
    rec.add_frame(frame(3, 0.3))
    rec.flush()
    assert len(disk_rows(rec)) == 4
    rec.close()


def test_buffered_rows_wait_for_the_interval(tmp_path: Path) -> None:
    rec = SessionRecorder(tmp_path, "Di", flush_interval_s=3600)
    for i in range(5):
        rec.add_frame(frame(i, i / 10))
    assert disk_rows(rec) == []
    rec.close()
    assert len(disk_rows(rec)) == 5


def test_abandoned_recorder_is_loadable_and_incomplete(tmp_path: Path) -> None:
    rec = SessionRecorder(tmp_path, "Eve", flush_interval_s=0.0)
    for i in range(10):
        rec.add_frame(frame(i, i / 10))
    # Simulated crash: no close(), and half a row left by an interrupted append.
    with open(rec.frames_path, "a", encoding="utf-8") as fh:
        fh.write("1.000,10,0,1,2,3,4,0.1,0.1")
    del rec
    (info,) = list_sessions(tmp_path)
    assert info.error is None and info.complete is False
    assert info.frames == 10 and info.faces == 10
    session = load_session(info.path)
    assert session.info.complete is False and len(session.frames) == 10
    assert session.frames["t_s"].iloc[-1] == pytest.approx(0.9)


def test_partial_meta_and_missing_ended_at_mean_incomplete(tmp_path: Path) -> None:
    rec = SessionRecorder(tmp_path, "Fay")
    rec.add_frame(frame(0, 0.0))
    rec.close()
    meta = json.loads(rec.meta_path.read_text())
    rec.meta_path.rename(rec.path / "meta.partial.json")
    assert load_session(rec.path).info.complete is False
    meta.pop("ended_at")
    rec.meta_path.write_text(json.dumps(meta))
    assert load_session(rec.path).info.complete is False
    meta["ended_at"] = "2026-01-01T10:01:00+00:00"
    meta["complete"] = "false"  # hand-edited: a string, read as not complete
    rec.meta_path.write_text(json.dumps(meta))
    assert load_session(rec.path).info.complete is False
    meta["complete"] = True
    rec.meta_path.write_text(json.dumps(meta))
    assert load_session(rec.path).info.complete is True


def test_an_unusable_meta_file_is_named_not_skipped_for_the_partial_one(tmp_path: Path) -> None:
    """meta.partial.json is read only when there is no meta.json: a meta.json that is a folder,
    not UTF-8 or unreadable is reported as such (SessionError naming it)."""
    folder = write_session(tmp_path, "m", HEADER + "\n" + good_row() + "\n")
    meta = (folder / META_FILE).read_text()
    (folder / "meta.partial.json").write_text(meta)
    (folder / META_FILE).unlink()
    assert load_session(folder).info.complete is False  # the partial one, read instead
    (folder / META_FILE).mkdir()
    with pytest.raises(SessionError, match=f"{META_FILE}: unreadable or not valid JSON"):
        load_session(folder)
    (folder / META_FILE).rmdir()
    (folder / META_FILE).write_bytes(b"\xff\xfe" + meta.encode())
    with pytest.raises(SessionError, match="utf-8"):
        load_session(folder)


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("../../etc", "etc"),
        ("../../../../tmp/evil", "tmp-evil"),
        ("a/b\\c", "a-b-c"),
        ("José Müller", "jose-muller"),
        ("李雷", "unnamed"),
        ("", "unnamed"),
        ("   ", "unnamed"),
        ("..", "unnamed"),
        ("nul\x00byte\nnewline", "nul-byte-newline"),
        ("x" * 300, "x" * 40),
    ],
)
def test_candidate_names_are_sanitised(tmp_path: Path, name: str, slug: str) -> None:
    assert slugify(name) == slug
    rec = SessionRecorder(tmp_path, name)
    assert rec.path.parent == tmp_path
    assert rec.session_id.split("-", 2)[2].rsplit("-", 1)[0] == slug
    assert rec.session_id.isascii() and "/" not in rec.session_id
    meta = json.loads(rec.close().joinpath(META_FILE).read_text(encoding="utf-8"))
    assert meta["candidate"] == clean_candidate(name)
    assert list(tmp_path.iterdir()) == [rec.path]


def test_unicode_candidate_kept_readable_in_meta(tmp_path: Path) -> None:
    rec = SessionRecorder(tmp_path, "  Zoë\tO'Brien  李雷 ")
    rec.close()
    raw = rec.meta_path.read_text(encoding="utf-8")
    assert "Zoë O'Brien 李雷" in raw  # not \\u-escaped
    assert load_session(rec.path).info.candidate == "Zoë O'Brien 李雷"


def test_never_overwrites_an_existing_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = iter(["aaaaaa", "aaaaaa", "aaaaaa", "bbbbbb"])
    monkeypatch.setattr(sessions_mod.secrets, "token_hex", lambda n: next(tokens))
    first = SessionRecorder(tmp_path, "Gil")
    first.add_frame(frame(0, 0.0))
    first.close()
    before = first.frames_path.read_bytes()
    # Same second, same name, same random part twice: the retry must find a new id.
    second = SessionRecorder(tmp_path, "Gil")
    assert second.session_id != first.session_id
    second.close()
    assert first.frames_path.read_bytes() == before


def test_many_recorders_get_distinct_ids(tmp_path: Path) -> None:
    ids = {SessionRecorder(tmp_path, "same").session_id for _ in range(30)}
    assert len(ids) == 30 == len(list(tmp_path.iterdir()))


def test_two_recorders_in_threads_write_separate_sessions(tmp_path: Path) -> None:
    n = 300

    def run(name: str, k: int, out: list[SessionRecorder]) -> None:
        rec = SessionRecorder(tmp_path, name, flush_interval_s=0.001)
        out.append(rec)
        for i in range(n):
            rec.add_frame(frame(i, i / 30, n_faces=2, k=k))
        rec.close()

    a: list[SessionRecorder] = []
    b: list[SessionRecorder] = []
    threads = [
        threading.Thread(target=run, args=("A", 0, a)),
        threading.Thread(target=run, args=("B", 3, b)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    infos = {i.candidate: i for i in list_sessions(tmp_path)}
    assert set(infos) == {"A", "B"}
    for name, label in (("A", "angry"), ("B", "happy")):
        session = load_session(infos[name].path)
        assert session.info.complete and session.info.frames == n
        assert len(session.frames) == 2 * n
        assert set(session.frames["label"]) == {label}


def test_one_recorder_shared_by_threads_keeps_rows_whole(tmp_path: Path) -> None:
    rec = SessionRecorder(tmp_path, "shared", flush_interval_s=0.0)

    def feed(offset: int) -> None:
        for i in range(200):
            rec.add_frame(frame(offset + i, offset + i / 30))

    threads = [threading.Thread(target=feed, args=(o,)) for o in (0, 1000)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    rec.close()
    session = load_session(rec.path)  # validation would fail on an interleaved row
    assert len(session.frames) == 400


class _FullDisk:
    """A file object whose writes fail like a full disk."""

    def __init__(self, real: object) -> None:
        self.real = real

    def write(self, data: str) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    def flush(self) -> None: ...

    def fileno(self) -> int:
        return self.real.fileno()  # type: ignore[attr-defined]

    def close(self) -> None:
        self.real.close()  # type: ignore[attr-defined]


def test_disk_full_keeps_recorded_rows_and_raises_clearly(tmp_path: Path) -> None:
    rec = SessionRecorder(tmp_path, "Hal", flush_interval_s=0.0)
    rec.add_frame(frame(0, 0.0))
    rec.add_frame(frame(1, 0.1))
    rec._file._fh = _FullDisk(rec._file._fh)  # type: ignore[assignment]
    with pytest.raises(SessionError, match="No space left on device"):
        rec.add_frame(frame(2, 0.2))
    assert rec.error is not None and str(rec.frames_path) in rec.error
    assert (rec.frames, rec.faces) == (2, 2)  # the rows on disk, not the lost third
    with pytest.raises(SessionError, match="recording stopped"):
        rec.add_frame(frame(3, 0.3))
    with pytest.raises(SessionError):
        rec.close()
    session = load_session(rec.path)
    assert len(session.frames) == 2 and session.info.complete is False
    assert (session.info.frames, session.info.faces) == (2, 2)  # meta.json agrees with the CSV


def test_recorder_dropped_without_close_keeps_its_buffered_rows(tmp_path: Path) -> None:
    rec = SessionRecorder(tmp_path, "Gone", flush_interval_s=3600.0)
    for i in range(3):
        rec.add_frame(frame(i, i / 10))
    assert len(load_session(rec.path).frames) == 0  # still buffered
    path = rec.path
    del rec  # the browser session ended: nobody calls close()
    gc.collect()
    session = load_session(path)
    assert len(session.frames) == 3
    assert session.info.complete is False and session.info.frames == 3
    assert json.loads((path / "meta.json").read_text())["ended_at"]


def test_a_recording_open_when_the_process_exits_keeps_its_buffered_rows(tmp_path: Path) -> None:
    """The server stops (normal interpreter exit) while a recorder is still attached."""
    script = (
        "import sys, numpy as np\n"
        "from emotion_core.results import FaceResult, FrameResult\n"
        "from emotion_core.sessions import SessionRecorder\n"
        "rec = SessionRecorder(sys.argv[1], 'Exit', flush_interval_s=3600.0)\n"
        "p = np.full(7, 1 / 7)\n"
        "for i in range(4):\n"
        "    rec.add_frame(FrameResult(i, i / 10, (FaceResult(0, (0, 0, 9, 9), p, p),)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    (info,) = list_sessions(tmp_path)
    assert info.frames == 4 and info.complete is False
    assert len(load_session(info.path).frames) == 4


def test_a_closed_recorder_is_not_closed_again_when_dropped(tmp_path: Path) -> None:
    rec = SessionRecorder(tmp_path, "Done")
    rec.add_frame(frame(0, 0.0))
    path = rec.close()
    del rec
    gc.collect()
    assert load_session(path).info.complete is True


def test_discard_removes_only_an_empty_recording(tmp_path: Path) -> None:
    empty = SessionRecorder(tmp_path, "Empty")
    empty.discard()
    assert not empty.path.exists()
    used = SessionRecorder(tmp_path, "Used", flush_interval_s=3600.0)
    used.add_frame(frame(0, 0.0))
    used.discard()
    session = load_session(used.path)
    assert len(session.frames) == 1 and session.info.complete is False


def test_a_start_that_fails_leaves_no_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sessions_mod, "atomic_write_json", disk_full)
    with pytest.raises(SessionError, match="cannot start the session"):
        SessionRecorder(tmp_path, "Nope")
    assert list(tmp_path.iterdir()) == []  # nothing half-made for the sessions list


def test_cannot_start_in_unwritable_place(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SessionError, match="sessions folder"):
        SessionRecorder(blocker / "sub", "Ivy")


def test_add_after_close_is_refused(tmp_path: Path) -> None:
    rec = SessionRecorder(tmp_path, "Jo")
    rec.close()
    assert rec.close() == rec.path  # idempotent
    with pytest.raises(SessionError, match="already stopped"):
        rec.add_frame(frame(0, 0.0))


def test_sessions_dir_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMOTION_SESSIONS_DIR", str(tmp_path / "elsewhere"))
    assert sessions_mod.sessions_dir_default() == tmp_path / "elsewhere"
    monkeypatch.delenv("EMOTION_SESSIONS_DIR")
    assert sessions_mod.sessions_dir_default() == sessions_mod.SESSIONS_DIR


# --- loading and validation ----------------------------------------------------------------------


def good_row(t: float = 0.0, frame_no: int = 0, face_id: int = 0) -> str:
    probs = ",".join(f"{p:.6f}" for p in probs_for(6))
    return f"{t},{frame_no},{face_id},1,2,3,4,{probs},neutral"


def write_session(root: Path, sid: str, csv_text: str, meta: dict | None = None) -> Path:
    folder = root / sid
    folder.mkdir(parents=True)
    (folder / FRAMES_FILE).write_text(csv_text, encoding="utf-8")
    base = {
        "session_id": sid,
        "candidate": "X",
        "started_at": "2026-01-01T10:00:00+00:00",
        "ended_at": "2026-01-01T10:01:00+00:00",
        "format_version": 1,
        "complete": True,
        "frames": 1,
        "faces": 1,
    }
    (folder / META_FILE).write_text(json.dumps(base | (meta or {})))
    return folder


@pytest.mark.parametrize(
    ("csv_text", "message"),
    [
        ("", "empty"),
        (HEADER.replace(",angry", "") + "\n", "missing required columns: angry"),
        (HEADER + ",extra\n" + good_row() + ",1\n", "unexpected columns: extra"),
        (
            HEADER + "\n" + good_row().replace("0.0,0,0", "abc,0,0", 1) + "\n",
            "line 2, column 't_s': 'abc' is not a number",
        ),
        (  # at most 1% of the rows may be skipped: none of three
            HEADER
            + "\n"
            + good_row()
            + "\n"
            + good_row(0.1, 1).replace(",1,2,", ",x,2,", 1)
            + "\n"
            + good_row(0.2, 2).replace(",1,2,", ",x,2,", 1)
            + "\n",
            "line 3, column 'x': 'x' is not a number (2 of the 3 rows are invalid; at most 0",
        ),
        (
            HEADER + "\n" + good_row().replace("0.700000", "0.900000") + "\n",
            "probabilities sum to 1.2000",
        ),
        (HEADER + "\n" + good_row().replace("0.700000", "") + "\n", "needs all 7"),
        (HEADER + "\n" + good_row().replace(",neutral", ",bored") + "\n", "'bored' is not one"),
        (HEADER + "\n" + good_row() + ",1,2\n", "not a valid CSV"),
        (
            HEADER + "\n" + good_row().replace(",1,2,3,4,", ",1.5,2,3,4,") + "\n",
            "not a whole number",
        ),
        (HEADER + "\n" + good_row(face_id=-3) + "\n", "face_id must be -1"),
        (
            HEADER + "\n" + good_row().replace("0.0,0,0", "0.0,1e20,0", 1) + "\n",
            "line 2, column 'frame': 1e+20 is too large",
        ),
        (
            HEADER + "\n" + good_row() + "\n" + good_row(1e13, 1) + "\n",
            "column 't_s' spans 1e+13 s (line 2 to line 3), more than a week",
        ),
        (  # two recordings pasted together: the frame counter restarts
            HEADER
            + "\n"
            + good_row(0.0, 0)
            + "\n"
            + good_row(0.1, 1)
            + "\n"
            + good_row(10.0, 0)
            + "\n",
            "line 4: frame 0 appears again at another time (10 s)",
        ),
        (
            HEADER + "\n" + good_row(0.0, 0) + "\n" + good_row(0.0, 0) + "\n",
            "line 3: face 0 of frame 0 appears twice",
        ),
    ],
)
def test_bad_csv_gives_clear_error(tmp_path: Path, csv_text: str, message: str) -> None:
    folder = write_session(tmp_path, "bad", csv_text)
    with pytest.raises(SessionError) as err:
        load_session(folder)
    assert message in str(err.value)
    assert str(folder / FRAMES_FILE) in str(err.value)
    (info,) = list_sessions(tmp_path)  # listed with its error, list does not break
    assert info.error is not None and message in info.error


def test_sum_tolerance_is_002(tmp_path: Path) -> None:
    ok = good_row().replace("0.700000", "0.715000")
    bad = good_row().replace("0.700000", "0.725000")
    assert len(load_session_csv(_bytes(HEADER + "\n" + ok + "\n"), "ok.csv").frames) == 1
    with pytest.raises(SessionError, match="sum to"):
        load_session_csv(_bytes(HEADER + "\n" + bad + "\n"), "bad.csv")


def many_rows(n: int) -> list[str]:
    """n valid face rows, one per frame, 0.2 s apart."""
    return [good_row(round(i * 0.2, 3), i) for i in range(n)]


@pytest.mark.parametrize("complete", [True, False])
def test_a_cut_off_last_line_is_skipped_with_a_note(tmp_path: Path, complete: bool) -> None:
    rows = many_rows(150)
    text = HEADER + "\n" + "\n".join(rows) + "\n" + good_row(30.0, 150)[:25]  # cut mid-write
    folder = write_session(tmp_path, "cut", text, {"complete": complete})
    session = load_session(folder)
    assert len(session.frames) == 150
    (note,) = session.warnings
    assert str(folder / FRAMES_FILE) in note and "line 152 is cut off" in note
    assert (folder / FRAMES_FILE).read_text() == text  # the file is never rewritten
    (info,) = list_sessions(tmp_path)
    assert info.error is None and info.frames == 150
    # Upload of the same text: the same.
    upload = load_session_csv(_bytes(text), "cut.csv")
    assert len(upload.frames) == 150 and "line 152 is cut off" in upload.warnings[0]


def test_a_complete_last_line_without_a_line_end_is_kept(tmp_path: Path) -> None:
    text = HEADER + "\n" + "\n".join(many_rows(5))  # a hand-made file: no final newline
    folder = write_session(tmp_path, "whole", text)
    session = load_session(folder)
    assert len(session.frames) == 5 and session.warnings == ()


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        (lambda r: r.replace("0.050000", "nan", 1), "'nan' is not a number"),
        (lambda r: r.replace("0.050000", "inf", 1), "'inf' is not finite"),
        (lambda r: r + ",1,2", "has 17 fields, the header has 15"),
        (lambda r: r[:30], "fields, the header has 15"),
        (lambda r: r.replace("0.700000", "1.700000"), "must lie in [0, 1]"),
        (lambda r: r.replace(",1,2,3,4,", ",,2,3,4,", 1), "column 'x': empty value"),
    ],
)
def test_a_few_invalid_rows_are_skipped_with_a_note(
    tmp_path: Path, bad: Callable[[str], str], problem: str
) -> None:
    """Up to 1% of the rows (at least one) may be invalid: they are skipped, with a note giving
    how many and their lines; one more and the session is refused, naming the first."""
    rows = many_rows(200)
    for k in (4, 120):
        rows[k] = bad(rows[k])
    text = HEADER + "\n" + "\n".join(rows) + "\n"
    folder = write_session(tmp_path, "two_bad", text)
    session = load_session(folder)
    assert len(session.frames) == 198 and 4 not in session.frames["frame"].tolist()
    (note,) = session.warnings
    assert "2 invalid rows of 200 skipped (lines 6 and 122" in note and problem in note
    assert (folder / FRAMES_FILE).read_text() == text
    rows[7] = bad(rows[7])  # 3 of 200: more than 1%
    folder = write_session(tmp_path, "three_bad", HEADER + "\n" + "\n".join(rows) + "\n")
    with pytest.raises(SessionError) as err:
        load_session(folder)
    assert "line 6" in str(err.value) and problem in str(err.value)
    assert "3 of the 200 rows are invalid; at most 2 may be skipped" in str(err.value)
    infos = {i.session_id: i for i in list_sessions(tmp_path)}
    assert infos["two_bad"].error is None and infos["two_bad"].frames == 198
    assert infos["three_bad"].error is not None and "3 of the 200" in infos["three_bad"].error


def test_an_invalid_row_in_a_session_under_100_rows_is_refused(tmp_path: Path) -> None:
    """At most 1% of the rows may be skipped: none of 20 (one would be 5%)."""
    rows = many_rows(20)
    rows[3] = rows[3].replace("0.050000", "nan", 1)
    with pytest.raises(SessionError) as err:
        load_session_csv(_bytes(HEADER + "\n" + "\n".join(rows) + "\n"), "short.csv")
    assert "line 5, column 'angry': 'nan' is not a number" in str(err.value)
    assert "1 of the 20 rows are invalid; at most 0 may be skipped, 1%" in str(err.value)
    lonely = HEADER + "\n" + rows[3] + "\n"
    with pytest.raises(SessionError, match=r"line 2, column 'angry': 'nan' is not a number$"):
        load_session_csv(_bytes(lonely), "lonely.csv")


def test_a_bad_last_row_without_a_line_end_is_not_excused_as_cut_off() -> None:
    """A hand-made file often lacks the final line end: a last row with all its fields that is
    invalid counts as an invalid row (towards the 1%), not as a recording cut off."""
    rows = many_rows(150)
    rows[-1] = rows[-1].replace("0.700000", "0.200000")  # probabilities no longer sum to 1
    rows[10] = rows[10].replace("0.050000", "nan", 1)
    text = HEADER + "\n" + "\n".join(rows)  # no final newline
    with pytest.raises(
        SessionError, match="2 of the 150 rows are invalid; at most 1 may be skipped"
    ):
        load_session_csv(_bytes(text), "hand.csv")
    rows[10] = many_rows(150)[10]
    session = load_session_csv(_bytes(HEADER + "\n" + "\n".join(rows)), "hand.csv")
    (note,) = session.warnings
    assert "1 invalid row of 150 skipped (line 151" in note and "cut off" not in note


def test_a_file_whose_only_row_is_cut_off_says_so() -> None:
    text = HEADER + "\n" + good_row(0.0, 0)[:25]
    with pytest.raises(SessionError, match="header but no rows .*line 2 is cut off"):
        load_session_csv(_bytes(text), "one.csv")


def test_structural_problems_are_still_refused_among_many_rows(tmp_path: Path) -> None:
    rows = many_rows(300)
    twice = rows[:10] + [rows[9]] + rows[10:]  # a face repeated
    with pytest.raises(SessionError, match="line 12: face 0 of frame 9 appears twice"):
        load_session_csv(_bytes(HEADER + "\n" + "\n".join(twice) + "\n"), "twice.csv")
    restart = rows + [good_row(100.0, 0)]  # a frame counter that restarts
    with pytest.raises(SessionError, match="frame 0 appears again at another time"):
        load_session_csv(_bytes(HEADER + "\n" + "\n".join(restart) + "\n"), "restart.csv")
    header = HEADER.replace(",angry", ",angri")
    with pytest.raises(SessionError, match="missing required columns: angry"):
        load_session_csv(_bytes(header + "\n" + "\n".join(rows) + "\n"), "header.csv")


def _bytes(text: str) -> io.BytesIO:
    return io.BytesIO(text.encode("utf-8"))


def test_older_format_is_upgraded_with_defaults(tmp_path: Path) -> None:
    probs = ",".join(f"{p:.4f}" for p in probs_for(5))
    text = "t_s," + ",".join(CLASSES) + "\n" + f"0.0,{probs}\n0.5,,,,,,,\n1.0,{probs}\n"
    session = load_session_csv(_bytes(text), "old.csv")
    df = session.frames
    assert list(df.columns) == list(COLUMNS)
    assert df["face_id"].tolist() == [0, -1, 0]
    assert df["frame"].tolist() == [0, 1, 2]
    assert df["label"].tolist() == ["surprise", "", "surprise"]
    assert (df[["x", "y", "w", "h"]] == 0).all().all()
    assert session.info.frames == 3 and session.info.faces == 2


def test_upload_with_bom_and_header_only(tmp_path: Path) -> None:
    text = "\ufeff" + HEADER + "\n" + good_row() + "\n"
    assert len(load_session_csv(_bytes(text), "bom.csv").frames) == 1
    with pytest.raises(SessionError, match="empty.csv: the file has a header but no rows"):
        load_session_csv(_bytes(HEADER + "\n"), "empty.csv")
    with pytest.raises(SessionError, match="bin.csv: not UTF-8"):
        load_session_csv(io.BytesIO(b"\xff\xfe\x00bad"), "bin.csv")


def test_upload_from_path(tmp_path: Path) -> None:
    p = tmp_path / "f.csv"
    p.write_text(HEADER + "\n" + good_row() + "\n0.1,1,-1,0,0,0,0,,,,,,,,\n")
    session = load_session_csv(p, "f.csv")
    assert session.frames["face_id"].tolist() == [0, -1]
    assert isinstance(session.frames, pd.DataFrame)


@pytest.mark.parametrize(
    ("meta_text", "message"),
    [
        (None, "meta.json: missing"),
        ("{not json", "not valid JSON"),
        ("[1]", "JSON object"),
        ('{"format_version": 99}', "newer than this app"),
        ('{"format_version": 1e999}', "is not a number"),
        ("[" * 100_000, "not valid JSON"),
        ('"text"', "JSON object"),
        ("null", "JSON object"),
        # json.loads refuses an integer this long with a plain ValueError, which used to leak
        # out of load_session and list_sessions as a traceback
        ('{"format_version": 1' + "0" * 5000 + "}", "not valid JSON"),
    ],
)
def test_bad_meta(tmp_path: Path, meta_text: str | None, message: str) -> None:
    folder = write_session(tmp_path, "m", HEADER + "\n" + good_row() + "\n")
    if meta_text is None:
        (folder / META_FILE).unlink()
    else:
        (folder / META_FILE).write_text(meta_text)
    with pytest.raises(SessionError, match=message):
        load_session(folder)
    good = write_session(tmp_path, "zgood", HEADER + "\n" + good_row() + "\n")
    infos = {i.session_id: i for i in list_sessions(tmp_path)}
    assert infos["m"].error is not None and message.split(":")[-1].strip() in infos["m"].error
    assert infos["zgood"].error is None and infos["zgood"].path == good


def test_list_sessions_newest_first_and_missing_dir(tmp_path: Path) -> None:
    assert list_sessions(tmp_path / "nope") == []
    write_session(
        tmp_path,
        "old",
        HEADER + "\n" + good_row() + "\n",
        {"started_at": "2025-01-01T00:00:00+00:00"},
    )
    write_session(
        tmp_path,
        "new",
        HEADER + "\n" + good_row() + "\n" + good_row(2.5, 1) + "\n",
        {"started_at": "2026-06-01T00:00:00+00:00"},
    )
    infos = list_sessions(tmp_path)
    assert [i.session_id for i in infos] == ["new", "old"]
    assert infos[0].duration_s == pytest.approx(2.5)


def test_load_by_id_rejects_traversal(tmp_path: Path) -> None:
    with pytest.raises(SessionError):
        load_session("../../etc", tmp_path)
    with pytest.raises(SessionError, match="not a valid session id"):
        load_session("..", tmp_path)


# --- deletion ----------------------------------------------------------------------------------


def test_a_malformed_count_in_meta_does_not_break_the_list(tmp_path: Path) -> None:
    write_session(tmp_path, "odd", HEADER + "\n" + good_row() + "\n", {"frames": "many"})
    write_session(tmp_path, "fine", HEADER + "\n" + good_row() + "\n", {"faces": [1]})
    infos = {i.session_id: i for i in list_sessions(tmp_path)}
    assert set(infos) == {"odd", "fine"}
    assert all(i.error is None and i.frames == 1 for i in infos.values())  # counted from the CSV


def test_a_copied_session_folder_is_listed_and_deleted_as_itself(tmp_path: Path) -> None:
    rec = SessionRecorder(tmp_path, "Kim")
    rec.add_frame(frame(0, 0.0))
    rec.close()
    backup = tmp_path / f"{rec.session_id}-backup"
    shutil.copytree(rec.path, backup)  # same meta.json, session_id included
    ids = sorted(i.session_id for i in list_sessions(tmp_path))
    assert ids == sorted([rec.session_id, backup.name])
    delete_session(backup.name, tmp_path)
    assert rec.path.exists() and not backup.exists()  # the original stays


def test_delete_session(tmp_path: Path) -> None:
    rec = SessionRecorder(tmp_path / "s", "Kim")
    rec.close()
    delete_session(rec.session_id, tmp_path / "s")
    assert not rec.path.exists()
    with pytest.raises(SessionError, match="no such session"):
        delete_session(rec.session_id, tmp_path / "s")


def test_a_session_being_recorded_is_not_deleted(tmp_path: Path) -> None:
    rec = SessionRecorder(tmp_path, "Kim")
    rec.add_frame(frame(0, 0.0))
    with pytest.raises(SessionError, match="being recorded now"):
        delete_session(rec.session_id, tmp_path)
    rec.add_frame(frame(1, 0.5))
    rec.close()
    assert len(load_session(rec.session_id, tmp_path).frames) == 2
    delete_session(rec.session_id, tmp_path)  # stopped: now it may go
    assert not rec.path.exists()


def test_a_delete_while_the_recording_closes_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = SessionRecorder(tmp_path, "Kim")
    rec.add_frame(frame(0, 0.0))
    write_json = sessions_mod.atomic_write_json
    refused: list[str] = []

    def delete_during_the_last_write(path: Path, data: object) -> None:
        try:
            delete_session(rec.session_id, tmp_path)  # e.g. the Analysis page, meanwhile
        except SessionError as exc:
            refused.append(str(exc))
        write_json(path, data)

    monkeypatch.setattr(sessions_mod, "atomic_write_json", delete_during_the_last_write)
    rec.close()
    assert refused and "being recorded now" in refused[0]
    assert len(load_session(rec.session_id, tmp_path).frames) == 1


def test_closing_a_recording_removed_from_outside_says_so(tmp_path: Path) -> None:
    rec = SessionRecorder(tmp_path, "Kim")
    rec.add_frame(frame(0, 0.0))
    shutil.rmtree(rec.path)  # e.g. another program or a person in a file manager
    with pytest.raises(SessionError, match="removed while recording"):
        rec.close()
    assert not rec.path.exists()  # no folder with only a meta.json brought back


@pytest.mark.parametrize(
    "bad_id", ["..", "../victim", "/etc", "a/../../victim", "", ".", "~", "a\x00b", "x/.."]
)
def test_delete_refuses_traversal(tmp_path: Path, bad_id: str) -> None:
    root = tmp_path / "sessions"
    root.mkdir()
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / META_FILE).write_text("{}")
    with pytest.raises(SessionError):
        delete_session(bad_id, root)
    assert victim.exists() and root.exists()


@pytest.mark.parametrize("name", ["odd name é ..", "x..y", "a b", "~", "ünïcode", "-dash"])
def test_any_listed_session_folder_can_be_deleted(tmp_path: Path, name: str) -> None:
    """What the list shows, Delete accepts: a folder made by hand (copied, renamed) may have
    spaces, accents or dots in its name; only names that could leave the folder are refused."""
    folder = write_session(tmp_path, name, HEADER + "\n" + good_row() + "\n")
    keep = write_session(tmp_path, "keep", HEADER + "\n" + good_row() + "\n")
    (info,) = [i for i in list_sessions(tmp_path) if i.session_id == name]
    assert info.error is None
    assert len(load_session(name, tmp_path).frames) == 1
    delete_session(info.session_id, tmp_path)
    assert not folder.exists() and keep.exists()


def test_a_sessions_folder_that_is_a_file_is_named_as_such(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "sessions.txt"
    not_a_folder.write_text("x")
    with pytest.raises(SessionError, match=r"sessions\.txt: the sessions folder is not a folder"):
        list_sessions(not_a_folder)
    assert not_a_folder.read_text() == "x"
    assert list_sessions(tmp_path / "not-yet") == []  # not created yet: simply no sessions


def test_delete_refuses_symlink_and_non_session_folder(tmp_path: Path) -> None:
    root = tmp_path / "sessions"
    root.mkdir()
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / META_FILE).write_text("{}")
    (root / "link").symlink_to(victim)
    with pytest.raises(SessionError):
        delete_session("link", root)
    (root / "plain").mkdir()
    (root / "plain" / "keep.txt").write_text("x")
    with pytest.raises(SessionError, match="does not look like a session"):
        delete_session("plain", root)
    assert victim.exists() and (root / "plain" / "keep.txt").exists()


def test_session_table_and_unique_labels(tmp_path: Path) -> None:
    from emotion_core.sessions import SessionInfo

    infos = [
        SessionInfo("a1", tmp_path / "a1", "Ann", "2026-11-26T10:00:00.123+00:00", 12.34,
                    source="webcam", model_name="m", complete=True),
        SessionInfo("b2", tmp_path / "b2", error="frames.csv: not a session"),
    ]  # fmt: skip
    table = session_table(infos)
    assert list(table["session id"]) == ["a1", "b2"]
    assert table.loc[0, "date"] == "2026-11-26 10:00:00" and table.loc[0, "duration (s)"] == 12.3
    assert table.loc[1, "problem"] == "frames.csv: not a session" and table.loc[0, "problem"] == ""
    assert list(session_table([]).columns) == list(table.columns)
    assert unique_labels(["Ann", "Bob", "Ann", "Ann"]) == ["Ann", "Bob", "Ann #2", "Ann #3"]


def test_an_upload_is_checked_against_its_limit_in_one_unit() -> None:
    """The size check: exactly the limit loads, a byte more is refused; both sizes are given in
    the same MB (Streamlit's, 1024 * 1024 bytes), not the file in 10**6 and the limit in 2**20."""
    data = (HEADER + "\n" + good_row() + "\n").encode()
    assert len(sessions_mod.load_session_upload("ok.csv", data, len(data)).frames) == 1
    with pytest.raises(SessionError, match=r"^tight.csv: file is .* upload limit$"):
        sessions_mod.load_session_upload("tight.csv", data, len(data) - 1)
    mb = sessions_mod.BYTES_PER_MB
    assert mb == 1024 * 1024  # what file_uploader's max_upload_size (in "MB") means
    with pytest.raises(SessionError) as caught:
        sessions_mod.load_session_upload("big.csv", b"x" * (20 * mb + 1), 20 * mb)
    message = str(caught.value)
    assert "file is 20.00 MB (20,971,521 bytes)" in message
    assert "over the 20.00 MB (20,971,520 bytes) upload limit" in message
    with pytest.raises(SessionError, match="bad.csv: not UTF-8"):  # parse errors still named
        sessions_mod.load_session_upload("bad.csv", b"\xff\xfe\x00bad", 20 * mb)


# --- collecting sessions for analysis ------------------------------------------------------------


def test_collect_loads_recordings_then_uploads_and_reports_the_rest(tmp_path: Path) -> None:
    from emotion_core.sessions import LoadedSession, SessionInfo, collect, file_stamp

    rows = "\n".join(good_row(i / 5, i) for i in range(10))
    ann = write_session(tmp_path, "ann1", HEADER + "\n" + rows + "\n")
    empty = write_session(tmp_path, "empty1", HEADER + "\n")
    infos = [
        SessionInfo("ann1", ann, "Ann"),
        SessionInfo("gone1", tmp_path / "gone1", "Gone"),  # no folder: load raises
        SessionInfo("empty1", empty, ""),
        SessionInfo("ann2", ann, ""),  # no candidate: named by its id
    ]
    good = (HEADER + "\n" + rows + "\n").encode()
    uploads = [("Ann", good), ("bad.csv", b"t_s\n1\n"), ("big.csv", good + b"\n" * 100)]
    loaded_from: list[Path] = []

    def load(folder: Path) -> sessions_mod.Session:
        loaded_from.append(folder)
        return load_session(folder)

    loaded, errors = collect(infos, uploads, load, max_bytes=len(good))
    assert loaded_from == [ann, tmp_path / "gone1", empty, ann]
    assert [item.name for item in loaded] == ["Ann", "ann2", "Ann (upload)"]
    assert all(isinstance(item, LoadedSession) for item in loaded)
    assert loaded[0].key == f"dir:{ann}:{file_stamp(ann)}" and len(loaded[0].session.frames) == 10
    digest = hashlib.sha256(good).hexdigest()[:12]
    assert loaded[2].key == f"upload:Ann:{digest}"
    assert errors[0].startswith(f"Cannot load session gone1: {tmp_path / 'gone1'}")
    assert errors[1] == f"{empty / FRAMES_FILE}: the session has no frames (empty recording)."
    assert errors[2].startswith("Upload rejected - bad.csv: ")
    assert errors[3].startswith("Upload rejected - big.csv: file is") and len(errors) == 4
    with pytest.raises(AttributeError):  # frozen
        loaded[0].name = "x"  # type: ignore[misc]


def test_collect_makes_names_unique_and_keys_follow_the_bytes(tmp_path: Path) -> None:
    from emotion_core.sessions import SessionInfo, collect

    rows = "\n".join(good_row(i / 5, i) for i in range(5))
    a = write_session(tmp_path, "a", HEADER + "\n" + rows + "\n")
    one = (HEADER + "\n" + rows + "\n").encode()
    other = (HEADER + "\n" + rows + "\n" + good_row(1.0, 5) + "\n").encode()
    loaded, errors = collect(
        [SessionInfo("a", a, "x.csv (upload)")],
        [("x.csv", one), ("x.csv", other)],
        load_session,
        max_bytes=10**6,
    )
    assert errors == []
    assert [item.name for item in loaded] == [
        "x.csv (upload)", "x.csv (upload) #2", "x.csv (upload) #3"
    ]  # fmt: skip
    assert loaded[1].key != loaded[2].key  # same file name, different contents
    assert collect([], [], load_session, 1) == ([], [])


def test_file_stamp_is_zero_for_a_missing_file(tmp_path: Path) -> None:
    from emotion_core.sessions import file_stamp

    (tmp_path / FRAMES_FILE).write_text("x")
    frames_mtime, meta_mtime = file_stamp(tmp_path)
    assert frames_mtime == (tmp_path / FRAMES_FILE).stat().st_mtime and meta_mtime == 0.0
