"""Video decoding (timestamps, rotation, truncated/corrupt files) and recorded-video analysis
into sessions, on small generated videos (plus one real clip when ../shared/data exists)."""

from __future__ import annotations

import io
import json
import os
import queue
import re
import signal
import struct
import subprocess
import sys
import threading
import time
import weakref
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from emotion_core import analyze_video as av_mod
from emotion_core import bench, video_job
from emotion_core.analyze_video import analyze_video
from emotion_core.classes import CLASSES
from emotion_core.procs import process_start
from emotion_core.sessions import load_session
from emotion_core.video import DecodedFrame, VideoError, iter_frames, probe_video, read_frames
from emotion_core.video_job import (
    check_video_file,
    safe_file_name,
    start_video_job,
    sweep_stale_video_folders,
)

ROOT = Path(__file__).resolve().parents[1]
VIDEOS = ROOT.parent / "shared" / "data" / "videos"


class FakeClassifier:
    """Uniform-ish probabilities; counts calls."""

    classes = CLASSES
    name = "fake"
    runtime = "fake-runtime"

    def __init__(self) -> None:
        self.calls = 0

    def predict(self, faces: np.ndarray) -> np.ndarray:
        self.calls += 1
        probs = np.full((len(faces), len(CLASSES)), 0.1)
        probs[:, 3] = 0.4
        return probs


def make_video(
    path: Path,
    n: int = 24,
    fps: float = 12.0,
    size: tuple[int, int] = (160, 120),
    noise: bool = False,
) -> Path:
    """Write an MJPG .avi: a bright square moving over a dark (or noisy) background."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, size)
    assert writer.isOpened()
    rng = np.random.default_rng(0)
    width, height = size
    for i in range(n):
        if noise:
            frame = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        else:
            frame = np.full((height, width, 3), 20, np.uint8)
        x = (5 * i) % (width - 20)
        frame[10:30, x : x + 20] = 240
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture
def video(tmp_path: Path) -> Path:
    return make_video(tmp_path / "clip.avi")


def truncated_copy(src: Path, dst: Path, keep: float = 0.5) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


def read_rows(session_dir: Path) -> Any:
    return load_session(session_dir).frames


# --- decoding ------------------------------------------------------------------------------


def test_probe_reports_size_rate_and_count(video: Path) -> None:
    info = probe_video(video)
    assert (info.width, info.height, info.frame_count) == (160, 120, 24)
    assert info.fps == pytest.approx(12.0) and info.duration_s == pytest.approx(2.0)
    assert info.rotation == 0 and info.codec == "MJPG"


def test_all_frames_with_monotonic_timestamps(video: Path) -> None:
    frames = list(iter_frames(video))
    assert [f.frame_index for f in frames] == list(range(24))
    t = np.array([f.t_s for f in frames])
    assert (np.diff(t) > 0).all()
    np.testing.assert_allclose(t, np.arange(24) / 12.0, atol=1e-3)
    assert frames[0].frame_bgr.shape == (120, 160, 3) and frames[0].frame_bgr.dtype == np.uint8
    # the moving square is where it was drawn (frames are distinct and in order)
    assert frames[3].frame_bgr[20, 15 + 10].mean() > 200


def test_every_n_keeps_file_indices_and_times(video: Path) -> None:
    frames = list(iter_frames(video, every=5))
    assert [f.frame_index for f in frames] == [0, 5, 10, 15, 20]
    np.testing.assert_allclose(
        [f.t_s for f in frames], [0, 5 / 12, 10 / 12, 15 / 12, 20 / 12], atol=1e-3
    )
    _, first = read_frames(video, max_frames=4)
    assert len(first) == 4
    with pytest.raises(ValueError):
        list(iter_frames(video, every=0))


def test_variable_frame_rate_keeps_the_file_timestamps(tmp_path: Path) -> None:
    av = pytest.importorskip("av")  # tests may use PyAV to write a VFR file; emotion_core may not
    times = [0.0, 0.1, 0.15, 0.4, 0.45, 0.5, 1.0, 1.04]
    path = tmp_path / "vfr.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        stream.codec_context.time_base = stream.time_base = Fraction(1, 1000)
        for i, t in enumerate(times):
            frame = av.VideoFrame.from_ndarray(np.full((120, 160, 3), 20 * i, np.uint8), "bgr24")
            frame.pts, frame.time_base = round(t * 1000), Fraction(1, 1000)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    frames = list(iter_frames(path))
    np.testing.assert_allclose([f.t_s for f in frames], times, atol=2e-3)
    res = analyze_video(path, tmp_path / "s", "x", classifier=FakeClassifier())
    np.testing.assert_allclose(read_rows(res.session_dir)["t_s"], times, atol=2e-3)


# Irregular gaps (ms) as a browser's MediaRecorder writes them: far fewer frames than
# duration x the stream's nominal 30 fps, the frame count OpenCV estimates for MKV/WebM.
VFR_GAPS_MS = [33, 200, 66, 33, 100, 200, 33, 66, 200, 100] * 4


def make_vfr(path: Path, container: str, codec: str) -> list[float]:
    """Write a 40-frame VFR file with PyAV (skips when the codec is missing); its times."""
    av = pytest.importorskip("av")
    try:
        av.codec.Codec(codec, "w")
    except Exception:  # noqa: BLE001 - PyAV raises its own error types per version
        pytest.skip(f"PyAV has no {codec} encoder here, cannot write a test {container} file")
    times = np.cumsum([0, *VFR_GAPS_MS[:-1]]) / 1000.0
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for i, t in enumerate(times):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 6 * i, np.uint8), "bgr24")
            frame.pts, frame.time_base = round(t * 1000), Fraction(1, 1000)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return [float(t) for t in times]


@pytest.mark.parametrize(("name", "container", "codec"), [
    ("rec.webm", "webm", "libvpx"), ("rec.mkv", "matroska", "libx264"),
])  # fmt: skip
def test_vfr_webm_and_mkv_decode_completely_though_the_count_is_an_estimate(
    tmp_path: Path, name: str, container: str, codec: str
) -> None:
    times = make_vfr(tmp_path / name, container, codec)
    info = probe_video(tmp_path / name)
    assert info.frame_count > 2 * len(times)  # the estimate, far off for this VFR file
    frames = list(iter_frames(tmp_path / name))  # no "truncated or corrupt" error
    np.testing.assert_allclose([f.t_s for f in frames], times, atol=2e-3)
    calls: list[tuple[int, int, float]] = []
    res = analyze_video(
        tmp_path / name, tmp_path / "s", "x", classifier=FakeClassifier(), batch_frames=16,
        progress=lambda d, t, e: calls.append((d, t, e)),
    )  # fmt: skip
    assert res.complete and res.frames == len(times), res.message
    assert load_session(res.session_dir).info.complete is True
    assert calls[-1] == (len(times), len(times), 0.0)  # the bar ends full, not at 13%
    assert all(d <= t for d, t, _ in calls)


@pytest.mark.parametrize(("ext", "container", "codec"), [
    ("webm", "webm", "libvpx"), ("mkv", "matroska", "libx264"),
])  # fmt: skip
def test_truncated_vfr_webm_and_mkv_are_still_reported(
    tmp_path: Path, ext: str, container: str, codec: str
) -> None:
    times = make_vfr(tmp_path / f"full.{ext}", container, codec)
    cut = truncated_copy(tmp_path / f"full.{ext}", tmp_path / f"cut.{ext}", 0.8)
    got: list[DecodedFrame] = []
    with pytest.raises(VideoError, match=f"cut.{ext}.*truncated") as err:
        got.extend(iter_frames(cut))
    assert 0 < len(got) < len(times) and err.value.frames_decoded == len(got)


def test_truncated_file_yields_frames_then_partial_error(tmp_path: Path) -> None:
    full = make_video(tmp_path / "full.avi", n=40, noise=True)
    cut = truncated_copy(full, tmp_path / "cut.avi", 0.5)
    got: list[DecodedFrame] = []
    with pytest.raises(VideoError) as err:
        got.extend(iter_frames(cut))
    assert 5 < len(got) < 40
    assert err.value.partial and err.value.frames_decoded == len(got)
    assert "cut.avi" in str(err.value) and "truncated" in str(err.value)


@pytest.mark.parametrize("content", [b"", b"hello, not a video\n" * 50, bytes(range(256)) * 40])
def test_not_a_video_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "notes.avi"
    path.write_bytes(content)
    with pytest.raises(VideoError) as err:
        list(iter_frames(path))
    assert "notes.avi" in str(err.value) and not err.value.partial


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(VideoError, match="not found"):
        probe_video(tmp_path / "nope.mp4")
    with pytest.raises(VideoError, match="directory"):
        probe_video(tmp_path)


def make_rotated_mp4(path: Path) -> Path:
    """A 160x120 mp4 whose track matrix says "rotate 90 degrees" (as phones write)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 10, (160, 120))
    assert writer.isOpened()
    for _ in range(5):
        frame = np.zeros((120, 160, 3), np.uint8)
        frame[:40, :80] = 255  # top-left block
        writer.write(frame)
    writer.release()
    data = bytearray(path.read_bytes())
    at = data.find(b"tkhd")
    assert at > 0 and data[at + 4] == 0  # version 0 header: matrix at +44
    data[at + 44 : at + 80] = struct.pack(">9i", 0, 65536, 0, -65536, 0, 0, 0, 0, 1 << 30)
    path.write_bytes(bytes(data))
    return path


def _check_rotated(path: Path) -> None:
    info = probe_video(path)
    assert info.rotation == 90 and (info.width, info.height) == (120, 160)
    frames = list(iter_frames(path))
    assert len(frames) == 5
    frame = frames[0].frame_bgr
    assert frame.shape == (160, 120, 3)
    assert frame[:70, 90:].mean() > 200 and frame[100:, :].mean() < 30  # block now top-right


def test_rotation_metadata_is_applied(tmp_path: Path) -> None:
    _check_rotated(make_rotated_mp4(tmp_path / "phone.mp4"))


def test_rotation_applied_by_hand_when_opencv_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = cv2.VideoCapture

    class NoAutoRotate:
        """A capture that refuses CAP_PROP_ORIENTATION_AUTO (like older builds)."""

        def __init__(self, *args: Any) -> None:
            self._cap = real(*args)
            self._cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 0)

        def set(self, prop: int, value: float) -> bool:
            if prop == cv2.CAP_PROP_ORIENTATION_AUTO:
                return False
            return bool(self._cap.set(prop, value))

        def get(self, prop: int) -> float:
            if prop == cv2.CAP_PROP_ORIENTATION_AUTO:
                return 0.0
            return float(self._cap.get(prop))

        def __getattr__(self, name: str) -> Any:
            return getattr(self._cap, name)

    monkeypatch.setattr("emotion_core.video.cv2.VideoCapture", NoAutoRotate)
    _check_rotated(make_rotated_mp4(tmp_path / "phone.mp4"))


# --- analysis into sessions ------------------------------------------------------------------


def test_analysis_rows_match_decoded_frames(video: Path, tmp_path: Path) -> None:
    calls: list[tuple[int, int, float]] = []
    clf = FakeClassifier()
    res = analyze_video(
        video, tmp_path / "sessions", "Ana Test", classifier=clf,
        progress=lambda d, t, e: calls.append((d, t, e)), batch_frames=10,
    )  # fmt: skip
    assert res.complete and res.frames == 24 and res.faces == 0
    assert "no face" in res.message
    assert res.video_seconds == pytest.approx(2.0) and res.speed > 0
    rows = read_rows(res.session_dir)
    assert len(rows) == 24 and (rows["face_id"] == -1).all()
    assert list(rows["frame"]) == list(range(24))
    assert (np.diff(rows["t_s"].to_numpy()) > 0).all()
    meta = json.loads((res.session_dir / "meta.json").read_text())
    assert meta["complete"] is True and meta["frames"] == 24 and meta["source"] == "clip.avi"
    assert meta["candidate"] == "Ana Test" and meta["model_name"] == "fake"
    assert [c[0] for c in calls] == [10, 20, 24] and all(c[1] == 24 for c in calls)
    assert clf.calls == 0  # no faces: nothing to classify


def test_analysis_every_n(video: Path, tmp_path: Path) -> None:
    res = analyze_video(video, tmp_path, "x", every=3, tta=True, classifier=FakeClassifier())
    rows = read_rows(res.session_dir)
    assert res.frames == 8 and len(rows) == 8
    np.testing.assert_allclose(rows["t_s"], np.arange(8) * 3 / 12.0, atol=2e-3)
    meta = json.loads((res.session_dir / "meta.json").read_text())
    assert meta["pipeline"]["every"] == 3 and meta["pipeline"]["tta"] is True


def test_truncated_video_keeps_partial_session_marked_incomplete(tmp_path: Path) -> None:
    full = make_video(tmp_path / "full.avi", n=40, noise=True)
    cut = truncated_copy(full, tmp_path / "cut.avi", 0.5)
    decoded = 0
    try:
        for _ in iter_frames(cut):
            decoded += 1
    except VideoError:
        pass
    res = analyze_video(cut, tmp_path / "s", "x", classifier=FakeClassifier(), batch_frames=4)
    assert not res.complete and "truncated" in res.message and "cut.avi" in res.message
    assert res.frames == decoded
    session = load_session(res.session_dir)
    assert session.info.complete is False and len(session.frames) == decoded
    assert res.video_seconds == pytest.approx(decoded / 12.0, abs=0.01)


def test_cancel_keeps_partial_session(video: Path, tmp_path: Path) -> None:
    cancel = threading.Event()
    res = analyze_video(
        video, tmp_path, "x", classifier=FakeClassifier(), batch_frames=5,
        progress=lambda d, t, e: cancel.set(), cancel=cancel,
    )  # fmt: skip
    assert not res.complete and "cancel" in res.message
    assert res.frames == 5 and len(read_rows(res.session_dir)) == 5
    assert load_session(res.session_dir).info.complete is False


def test_a_detector_failure_mid_video_is_raised_and_earlier_frames_kept(
    video: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from emotion_core.pipeline import EmotionPipeline

    find_faces = EmotionPipeline.find_faces
    calls = 0

    def fails_on_the_seventh(self: EmotionPipeline, frame: np.ndarray) -> Any:
        nonlocal calls
        calls += 1
        if calls == 7:
            raise RuntimeError("detector broke")
        return find_faces(self, frame)

    monkeypatch.setattr(EmotionPipeline, "find_faces", fails_on_the_seventh)
    sessions = tmp_path / "sessions"
    with pytest.raises(RuntimeError, match="detector broke"):  # the real error, not a zip one
        analyze_video(video, sessions, "x", classifier=FakeClassifier(), batch_frames=5)
    (folder,) = sessions.iterdir()
    session = load_session(folder)
    assert session.info.complete is False
    assert len(session.frames) == 6  # the chunk of 5 and the frame before the failure


def test_unreadable_video_creates_no_session(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    sessions = tmp_path / "sessions"
    with pytest.raises(VideoError, match="bad.mp4"):
        analyze_video(bad, sessions, "x", classifier=FakeClassifier())
    assert not sessions.exists() or not any(sessions.iterdir())


# --- background jobs (emotion_core.video_job) ------------------------------------------------


@pytest.mark.parametrize(
    ("name", "size", "problem"),
    [("notes.txt", 10, "not a supported video type"), ("a.mp4", 0, "empty"),
     ("big.MOV", 3 * 1024 * 1024, "over the 2 MB")],
)  # fmt: skip
def test_video_file_checks(name: str, size: int, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        check_video_file(name, size, limit_mb=2)
    check_video_file("ok.Mp4", 1024, limit_mb=2)  # accepted: no exception


def test_safe_file_name_drops_folders_and_odd_characters() -> None:
    assert safe_file_name("../../etc/pass wd;rm.mp4") == "pass wd_rm.mp4"
    assert safe_file_name("...") == "video"


def test_safe_file_name_fits_the_file_system(tmp_path: Path) -> None:
    long = safe_file_name("интервью_" * 30 + ".mp4")  # 514 bytes of UTF-8
    assert long.startswith("интервью_интервью_") and long.endswith(".mp4")
    assert len(long.encode()) <= video_job.MAX_NAME_BYTES
    (tmp_path / long).write_bytes(b"ok")  # no "[Errno 36] File name too long"
    assert len(safe_file_name("é" * 300).encode()) == 100  # cut between characters
    assert safe_file_name("x." + "a" * 300) == "x." + "a" * 98  # no real extension to keep
    assert safe_file_name("Ana clip .mp4") == "Ana clip .mp4"  # short names are unchanged
    job = start_video_job(
        io.BytesIO(b"not a video"), "интервью_" * 30 + ".mp4", FakeClassifier(),
        tmp_path / "s", temp_root=tmp_path,
    )  # fmt: skip
    assert job.file_name == long and "Could not analyse" in str(job.wait(60).error)


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _upload_folder(root: Path, name: str, owner: str | None, age_s: float = 0.0) -> Path:
    folder = root / f"{video_job.TEMP_PREFIX}{name}"
    folder.mkdir()
    (folder / "interview.mp4").write_bytes(b"video")
    if owner is not None:
        (folder / video_job.OWNER_FILE).write_text(owner)
    if age_s:
        os.utime(folder, (time.time() - age_s,) * 2)
    return folder


def test_upload_folders_of_stopped_servers_are_swept(tmp_path: Path) -> None:
    me = f"{os.getpid()} {process_start(os.getpid())}"
    stale = [
        _upload_folder(tmp_path, "dead", f"{_dead_pid()} 1"),
        _upload_folder(tmp_path, "reused", f"{os.getpid()} 1"),  # our pid, another start time
        _upload_folder(tmp_path, "ownerless-old", None, age_s=2 * video_job.ORPHAN_AGE_S),
    ]
    kept = [
        _upload_folder(tmp_path, "live", me),
        _upload_folder(tmp_path, "parent", str(os.getppid())),
        _upload_folder(tmp_path, "ownerless-new", None),  # its owner may be writing the file
        tmp_path / "unrelated",
    ]
    kept[-1].mkdir()
    assert sorted(sweep_stale_video_folders(tmp_path)) == sorted(stale)
    assert not any(f.exists() for f in stale) and all(f.exists() for f in kept)

    leftover = _upload_folder(tmp_path, "dead-again", f"{_dead_pid()} 1")
    job = start_video_job(
        io.BytesIO(b"not a video"), "x.mp4", FakeClassifier(), tmp_path / "s", temp_root=tmp_path
    )
    assert not leftover.exists()  # a new job sweeps first
    job.wait(60)
    assert not job.video_path.parent.exists()


def test_upload_folders_are_marked_and_removed_when_the_server_exits(tmp_path: Path) -> None:
    folder = video_job._new_video_folder(tmp_path)
    assert (folder / video_job.OWNER_FILE).read_text().split()[0] == str(os.getpid())
    assert sweep_stale_video_folders(tmp_path) == []  # ours, and we run
    video_job._remove_owned_folders()
    assert not folder.exists()

    make = (
        "import os, signal, sys; from pathlib import Path; from emotion_core import video_job; "
        "f = video_job._new_video_folder(Path(sys.argv[1])); (f / 'v.mp4').write_bytes(b'x'); "
        "sys.argv[2] == 'kill' and os.kill(os.getpid(), signal.SIGKILL)"
    )
    exited = subprocess.run([sys.executable, "-c", make, str(tmp_path), "exit"], cwd=ROOT)
    assert exited.returncode == 0 and list(tmp_path.iterdir()) == []  # atexit removed it
    killed = subprocess.run([sys.executable, "-c", make, str(tmp_path), "kill"], cwd=ROOT)
    assert killed.returncode == -signal.SIGKILL
    [orphan] = tmp_path.iterdir()  # no atexit after SIGKILL ...
    assert sweep_stale_video_folders(tmp_path) == [orphan]  # ... the next sweep deletes it
    assert not orphan.exists()


def test_decoder_item_put_just_after_a_timeout_is_not_lost() -> None:
    """The decoder thread puts its last items and exits between get()'s timeout and the
    is_alive() check: the items are still read, and only a truly empty queue is an error."""

    class RacingQueue(queue.Queue):
        def __init__(self, items: list[Any]) -> None:
            super().__init__()
            self.items, self.raced = items, False

        def get(self, block: bool = True, timeout: float | None = None) -> Any:
            if block and not self.raced:
                self.raced = True
                for item in self.items:
                    self.put(item)
                raise queue.Empty
            return super().get(block, timeout)

    class DeadThread:
        def is_alive(self) -> bool:
            return False

    def decoder(items: list[Any]) -> Any:
        dec = av_mod._Decoder.__new__(av_mod._Decoder)
        dec._thread, dec._queue = DeadThread(), RacingQueue(items)
        return dec

    end = av_mod._Decoder._END
    assert list(decoder([end]).chunks()) == []
    chunk: tuple[list[Any], list[Any]] = ([], [])
    assert list(decoder([chunk, end]).chunks()) == [chunk]
    with pytest.raises(VideoError, match="truncated"):
        list(decoder([VideoError("truncated", Path("v.mp4"))]).chunks())
    with pytest.raises(RuntimeError, match="stopped unexpectedly"):
        list(decoder([]).chunks())


def test_analysis_queues_no_full_frames(
    video: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a slow classifier the decoder runs ahead by several chunks: those must hold face
    crops (copies), not the full frames a crop view keeps alive (~80 frames, 1.9 GiB at 4K)."""
    from emotion_core.pipeline import EmotionPipeline

    alive: list[weakref.ref[np.ndarray]] = []
    n = 8 * av_mod.BATCH_FRAMES

    def tracked_frames(path: Path, every: int = 1) -> Any:
        for i in range(n):
            frame = np.full((120, 160, 3), i, np.uint8)
            alive.append(weakref.ref(frame))
            yield DecodedFrame(i, i / 12.0, frame)

    def one_face(self: EmotionPipeline, frame: np.ndarray) -> Any:
        return [(10, 10, 40, 40)], [frame[10:50, 10:50]]  # a view, as find_faces returns

    class SlowClassifier(FakeClassifier):
        peak = 0

        def predict(self, faces: np.ndarray) -> np.ndarray:
            time.sleep(0.05)  # the decoder fills its queue meanwhile
            self.peak = max(self.peak, sum(r() is not None for r in alive))
            return super().predict(faces)

    monkeypatch.setattr(av_mod, "iter_frames", tracked_frames)
    monkeypatch.setattr(EmotionPipeline, "find_faces", one_face)
    clf = SlowClassifier()
    res = analyze_video(video, tmp_path / "s", "x", classifier=clf)
    assert res.frames == n and res.faces == n and clf.calls == 8
    assert clf.peak <= 3, f"{clf.peak} full frames alive while classifying"


def test_video_job_runs_in_background_and_cleans_up(video: Path, tmp_path: Path) -> None:
    with video.open("rb") as source:
        source.read(100)  # the job must copy from the start
        job = start_video_job(
            source, "../Ana's clip.avi", FakeClassifier(), tmp_path / "s", every=2,
            thresholds={"rule": "seed"},
        )  # fmt: skip
    view = job.wait(timeout=60)
    assert view.finished and view.error is None and view.result is not None
    assert view.file_name == "Ana_s clip.avi"
    assert (view.done, view.total) == (24, 24) and view.result.frames == 12  # every 2nd frame
    info = load_session(view.result.session_dir).info
    assert info.candidate == "Ana_s clip" and info.complete
    assert not job.video_path.parent.exists()  # the temporary copy is gone


def test_video_job_reports_a_bad_file_as_a_sentence(tmp_path: Path) -> None:
    source = io.BytesIO(b"not a video at all")
    job = start_video_job(source, "broken.mp4", FakeClassifier(), tmp_path / "s")
    view = job.wait(timeout=60)
    assert view.finished and view.result is None
    assert view.error is not None and view.error.startswith("Could not analyse the video")
    assert "broken.mp4" in view.error and str(job.video_path) not in view.error
    assert not job.video_path.parent.exists()


def test_video_job_cancel_keeps_an_incomplete_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = threading.Event()
    real_iter = av_mod.iter_frames

    def gated(path: Path, every: int = 1) -> Any:
        for i, frame in enumerate(real_iter(path, every=every)):
            if i == av_mod.BATCH_FRAMES:
                gate.wait(30)  # hold decoding after the first batch until the test cancels
            yield frame

    monkeypatch.setattr(av_mod, "iter_frames", gated)
    video = make_video(tmp_path / "long.avi", n=2 * av_mod.BATCH_FRAMES)
    with video.open("rb") as source:
        job = start_video_job(source, "long.avi", FakeClassifier(), tmp_path / "s")
    try:
        deadline = time.monotonic() + 30
        while job.view().done < av_mod.BATCH_FRAMES and time.monotonic() < deadline:
            time.sleep(0.02)
        assert job in video_job.running_video_jobs()  # any session of the server sees it
        video_job.forget_video_job(job)  # a running job stays listed
        assert job in video_job.video_jobs()
        job.cancel.set()
    finally:
        gate.set()
    view = job.wait(timeout=60)
    assert view.cancelling and view.result is not None and not view.result.complete
    assert view.result.frames == av_mod.BATCH_FRAMES
    assert load_session(view.result.session_dir).info.complete is False
    assert job not in video_job.running_video_jobs() and job in video_job.video_jobs()
    video_job.forget_video_job(job)  # its outcome has been shown
    assert job not in video_job.video_jobs()


def test_real_clip_analysis_finds_the_face(tmp_path: Path) -> None:
    clip = VIDEOS / "1543684773.avi"
    if not clip.exists():
        pytest.skip(f"real clips not available ({VIDEOS} is absent)")
    clf = FakeClassifier()
    res = analyze_video(clip, tmp_path, "x", classifier=clf)
    rows = read_rows(res.session_dir)
    assert res.complete and len(rows) == res.frames == 67
    faces = rows[rows["face_id"] >= 0]
    assert len(faces) >= 0.8 * 67 and set(faces["face_id"]) == {0}
    assert (faces["label"] == "happy").all()
    assert clf.calls <= 67 // 16 + 1  # frames batched together


# --- command lines ---------------------------------------------------------------------------


def test_analyze_cli_success_and_errors(
    video: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(
        "emotion_core.inference.load_classifier", lambda name=None: FakeClassifier()
    )
    assert av_mod.main([str(video), "--out", str(tmp_path / "s"), "--every", "2"]) == 0
    out = capsys.readouterr().out.strip().splitlines()[-1]
    m = re.fullmatch(r"session=(\S+) frames=12 faces=0 speed=[0-9.]+x", out)
    assert m and Path(m.group(1)).is_dir()
    notvideo = tmp_path / "x.mp4"
    notvideo.write_text("hello")
    for args in ([str(notvideo)], [str(tmp_path / "missing.avi")], [str(video), "--every", "0"]):
        assert av_mod.main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "Traceback" not in err


def test_bench_cli(
    video: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(bench, "load_model", lambda name, file, keras_only: FakeClassifier())
    out_json = tmp_path / "b.json"
    assert bench.main([str(video), "--json", str(out_json), "--max-frames", "10"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"model_load_s=[0-9.]+", lines[0])
    assert re.fullmatch(r"fps=[0-9.]+ p50_ms=[0-9.]+ p95_ms=[0-9.]+ frames=10 faces=0", lines[-1])
    assert json.loads(out_json.read_text())["frames"] == 10
    assert bench.main(["model"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert re.fullmatch(
        r"model=fake runtime=fake-runtime p50_ms_per_face=[0-9.]+ p95_ms=[0-9.]+"
        r" batch8_ms=[0-9.]+",
        last,
    )
    assert bench.main([str(tmp_path / "missing.avi")]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_bench_cli_without_a_model(
    video: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("emotion_core.inference.MODELS_DIR", tmp_path / "no-models")
    assert bench.main(["model"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "registry" in err and "Traceback" not in err
