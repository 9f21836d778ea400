"""The live pipeline: detection boxes, one batched classifier call, tracking, smoothing,
annotation; plus the Haar detector on the real single-face clips (skipped without them)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from emotion_core.annotate import annotate, caption
from emotion_core.classes import CLASSES
from emotion_core.detect import (
    DetectorError,
    HaarFaceDetector,
    crop,
    crop_square,
    haar_cascade_path,
    largest,
    shrink,
    square_and_clip,
)
from emotion_core.pipeline import EmotionPipeline, PipelineConfig
from emotion_core.registry import ModelCard
from emotion_core.results import Box, FaceResult, FrameResult
from emotion_core.smoothing import EmaSmoother
from emotion_core.tracking import IoUTracker, iou

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
VIDEOS = DATA_DIR / "videos"
SINGLE_FACE_CLIPS = ("1543684773.avi", "1543684810.avi")


class FakeDetector:
    """Returns the boxes it is given for each successive frame (the last list repeats)."""

    def __init__(self, boxes: Sequence[Sequence[Box]]) -> None:
        self.boxes = [list(b) for b in boxes]
        self.calls = 0

    def __call__(self, frame_bgr: np.ndarray) -> list[Box]:
        out = self.boxes[min(self.calls, len(self.boxes) - 1)]
        self.calls += 1
        return list(out)


class FakeClassifier:
    """Probabilities from each face's mean brightness; records every call's batch shape."""

    classes = CLASSES

    def __init__(self) -> None:
        self.calls: list[tuple[int, ...]] = []

    def predict(self, faces: np.ndarray) -> np.ndarray:
        self.calls.append(faces.shape)
        k = (faces.reshape(len(faces), -1).mean(axis=1) * 6.999).astype(int)
        probs = np.full((len(faces), len(CLASSES)), 0.1 / (len(CLASSES) - 1))
        probs[np.arange(len(faces)), k] = 0.9
        return probs


def make_pipeline(
    boxes: Sequence[Sequence[Box]], **config: Any
) -> tuple[EmotionPipeline, FakeDetector, FakeClassifier]:
    detector, classifier = FakeDetector(boxes), FakeClassifier()
    cfg = PipelineConfig(**config)
    pipe = EmotionPipeline(
        detector, classifier, IoUTracker(max_missing=cfg.max_missing), EmaSmoother(0.0), cfg
    )
    return pipe, detector, classifier


def frame_with_patches(shape: tuple[int, int] = (120, 160)) -> np.ndarray:
    """(H, W, 3) frame: left half dark, right half bright."""
    frame = np.zeros((*shape, 3), np.uint8)
    frame[:, shape[1] // 2 :] = 250
    return frame


def onehot(k: int, peak: float = 0.9) -> np.ndarray:
    p = np.full(len(CLASSES), (1 - peak) / (len(CLASSES) - 1))
    p[k] = peak
    return p


# --- boxes -------------------------------------------------------------------------------


def test_square_and_clip_inside_frame_is_square_and_centred() -> None:
    assert square_and_clip((40, 30, 20, 40), (200, 200)) == (30, 30, 40, 40)
    assert square_and_clip((40, 30, 20, 20), (200, 200), margin=0.5) == (35, 25, 30, 30)


@pytest.mark.parametrize(
    "box",
    [(-10, 5, 40, 20), (90, 90, 30, 30), (-50, -50, 60, 60), (150, 0, 80, 80), (0, 0, 100, 100)],
)
def test_square_and_clip_stays_inside_frame(box: Box) -> None:
    x, y, w, h = square_and_clip(box, (100, 160, 3))
    assert 0 <= x and 0 <= y and w > 0 and h > 0
    assert x + w <= 160 and y + h <= 100
    assert w == h or x == 0 or y == 0 or x + w == 160 or y + h == 100  # only edges cut it


def test_box_outside_frame_is_empty_and_dropped_by_pipeline() -> None:
    assert square_and_clip((300, 300, 20, 20), (100, 100))[2:] == (0, 0)
    pipe, _, clf = make_pipeline([[(300, 300, 20, 20), (10, 10, 20, 20)]])
    result = pipe.process(frame_with_patches((100, 100)), 0.0, 0)
    assert [f.box for f in result.faces] == [(10, 10, 20, 20)]
    assert clf.calls == [(1, 48, 48, 1)]


def test_crop_and_largest() -> None:
    frame = np.arange(100 * 120 * 3, dtype=np.uint8).reshape(100, 120, 3)
    assert crop(frame, (10, 20, 30, 40)).shape == (40, 30, 3)
    boxes = [(0, 0, 10, 10), (0, 0, 30, 30), (0, 0, 20, 20)]
    assert largest(boxes, 2) == [(0, 0, 30, 30), (0, 0, 20, 20)]
    assert len(largest(boxes, 0)) == 3


def test_a_face_over_the_left_edge_is_padded_square_not_stretched() -> None:
    frame = np.zeros((120, 160, 3), np.uint8)
    frame[:, :, 0] = np.arange(160, dtype=np.uint8)[None, :]  # column index in channel 0
    frame[:, :, 1] = np.arange(120, dtype=np.uint8)[:, None]  # row index in channel 1
    box = (-20, 30, 60, 60)  # a third of the face lies left of the frame
    pipe, _, clf = make_pipeline([[box]])
    boxes, crops = pipe.find_faces(frame)
    assert boxes == [(0, 30, 40, 60)]  # the box shown and tracked stays inside the frame
    face = crops[0]
    assert face.shape == (60, 60, 3)  # square: preprocess only scales it, never stretches
    np.testing.assert_array_equal(face[:, 20:], frame[30:90, 0:40])  # 1:1, not resampled
    np.testing.assert_array_equal(face[:, :20], np.repeat(frame[30:90, :1], 20, axis=1))
    np.testing.assert_array_equal(crop_square(frame, (40, 30, 60, 60)), frame[30:90, 40:100])
    assert crop_square(frame, (300, 300, 20, 20)).size == 0
    pipe.process(frame, 0.0, 0)
    assert clf.calls == [(1, 48, 48, 1)]


def test_faces_are_resized_to_the_classifiers_card_input_size() -> None:
    pipe, _, clf = make_pipeline([[(5, 5, 40, 40), (100, 50, 40, 40)]])
    clf.card = ModelCard(name="big", arch="tiny", input_size=64)  # type: ignore[attr-defined]
    pipe.process(frame_with_patches(), 0.0, 0)
    assert clf.calls == [(2, 64, 64, 1)]


# --- pipeline ------------------------------------------------------------------------------


def test_all_faces_of_a_frame_classified_in_one_call() -> None:
    boxes = [(5, 5, 40, 40), (100, 50, 40, 40), (60, 70, 30, 30)]
    pipe, _, clf = make_pipeline([boxes])
    result = pipe.process(frame_with_patches(), 1.5, 7)
    assert clf.calls == [(3, 48, 48, 1)]
    assert (result.frame_index, result.t_s, len(result.faces)) == (7, 1.5, 3)
    by_box = {f.box: f for f in result.faces}
    assert by_box[(5, 5, 40, 40)].label == CLASSES[0]  # dark crop
    assert by_box[(100, 50, 40, 40)].label == CLASSES[6]  # bright crop
    for face in result.faces:
        assert face.probs.shape == (len(CLASSES),)
        assert face.probs.sum() == pytest.approx(1.0)


def test_frame_without_faces_skips_the_classifier() -> None:
    pipe, _, clf = make_pipeline([[]])
    result = pipe.process(frame_with_patches(), 0.0, 0)
    assert result.faces == () and clf.calls == []


def test_max_faces_keeps_the_largest() -> None:
    boxes = [(0, 0, 10, 10), (20, 20, 50, 50), (80, 0, 30, 30)]
    pipe, _, clf = make_pipeline([boxes], max_faces=2)
    result = pipe.process(frame_with_patches(), 0.0, 0)
    assert sorted(f.box[2] for f in result.faces) == [30, 50]
    assert clf.calls == [(2, 48, 48, 1)]


def test_tta_is_still_one_call_with_mirrors() -> None:
    pipe, _, clf = make_pipeline([[(5, 5, 40, 40), (100, 50, 40, 40)]], tta=True)
    result = pipe.process(frame_with_patches(), 0.0, 0)
    assert clf.calls == [(4, 48, 48, 1)]
    assert all(f.probs.sum() == pytest.approx(1.0) for f in result.faces)


def test_process_batch_equals_frame_by_frame_in_one_call() -> None:
    seq = [[(10, 10, 40, 40)], [], [(12, 10, 40, 40), (100, 60, 40, 40)], [(14, 12, 40, 40)]]
    frames = [frame_with_patches() for _ in seq]
    single, _, _ = make_pipeline(seq)
    expected = [single.process(f, i / 10, i) for i, f in enumerate(frames)]
    batch, _, clf = make_pipeline(seq)
    got = batch.process_batch(frames, [i / 10 for i in range(4)], list(range(4)))
    assert clf.calls == [(4, 48, 48, 1)]
    assert [r.frame_index for r in got] == [0, 1, 2, 3]
    for a, b in zip(expected, got, strict=True):
        assert [(f.face_id, f.box) for f in a.faces] == [(f.face_id, f.box) for f in b.faces]
        for fa, fb in zip(a.faces, b.faces, strict=True):
            np.testing.assert_allclose(fa.probs, fb.probs)


def test_classifier_with_wrong_output_shape_is_an_error() -> None:
    pipe, _, clf = make_pipeline([[(5, 5, 40, 40)]])
    clf.predict = lambda faces: np.ones((len(faces), 3)) / 3  # type: ignore[method-assign]
    with pytest.raises(ValueError, match="shape"):
        pipe.process(frame_with_patches(), 0.0, 0)


class NearDetector(FakeDetector):
    """A fake with detect_near: records which kind of scan each frame got."""

    def __init__(self, boxes: Sequence[Sequence[Box]], near_finds: bool = True) -> None:
        super().__init__(boxes)
        self.near_finds = near_finds
        self.log: list[str] = []

    def __call__(self, frame_bgr: np.ndarray) -> list[Box]:
        self.log.append("full")
        return super().__call__(frame_bgr)

    def detect_near(self, frame_bgr: np.ndarray, previous: Sequence[Box]) -> list[Box]:
        self.log.append("near")
        return list(previous) if self.near_finds else []


def test_full_scan_every_n_frames_while_tracking() -> None:
    det = NearDetector([[(10, 10, 40, 40)]])
    cfg = PipelineConfig(redetect_every=3)
    pipe = EmotionPipeline(det, FakeClassifier(), IoUTracker(), EmaSmoother(0.0), cfg)
    for i in range(7):
        assert len(pipe.process(frame_with_patches(), i / 30, i).faces) == 1
    assert det.log == ["full", "near", "near", "full", "near", "near", "full"]
    pipe.reset()
    pipe.process(frame_with_patches(), 1.0, 8)
    assert det.log[-1] == "full"


def test_lost_face_triggers_a_full_scan_and_redetect_every_1_never_uses_near() -> None:
    det = NearDetector([[(10, 10, 40, 40)]], near_finds=False)
    pipe = EmotionPipeline(det, FakeClassifier(), IoUTracker(), EmaSmoother(0.0), PipelineConfig())
    for i in range(3):
        assert len(pipe.process(frame_with_patches(), i / 30, i).faces) == 1
    assert det.log == ["full", "near", "full", "near", "full"]
    det2 = NearDetector([[(10, 10, 40, 40)]])
    pipe2 = EmotionPipeline(
        det2, FakeClassifier(), IoUTracker(), EmaSmoother(0.0), PipelineConfig(redetect_every=1)
    )
    for i in range(3):
        pipe2.process(frame_with_patches(), i / 30, i)
    assert det2.log == ["full"] * 3


def test_a_smaller_frame_mid_stream_keeps_the_face_id_and_scans_the_whole_frame() -> None:
    """The browser halves the stream's resolution: the face (found at half the size) keeps its
    id, and the old hints are not searched near (they may lie outside the new frame)."""
    det = NearDetector([[(80, 40, 60, 60)], [(40, 20, 30, 30)]])  # per full scan
    pipe = EmotionPipeline(det, FakeClassifier(), IoUTracker(), EmaSmoother(0.0), PipelineConfig())
    first = pipe.process(frame_with_patches((120, 160)), 0.0, 0)
    pipe.process(frame_with_patches((120, 160)), 0.1, 1)
    small = pipe.process(frame_with_patches((60, 80)), 0.2, 2)
    assert det.log == ["full", "near", "full"]
    assert [f.face_id for f in small.faces] == [f.face_id for f in first.faces] == [0]


def test_a_smaller_frame_keeps_the_face_id_when_frames_are_found_ahead_in_batches() -> None:
    """analyze_video finds faces up to several chunks ahead of tracking: the tracks must be
    scaled when the smaller frame is tracked, not when it is detected."""
    big, small = (80, 40, 60, 60), (40, 20, 30, 30)
    det = FakeDetector([[big], [big], [small], [small]])
    pipe = EmotionPipeline(
        det, FakeClassifier(), IoUTracker(), EmaSmoother(0.0), PipelineConfig(redetect_every=1)
    )
    frames = [frame_with_patches((120, 160))] * 2 + [frame_with_patches((60, 80))] * 2
    found = [pipe.find_faces(f) for f in frames]  # all detected before any is tracked
    sizes = [(f.shape[1], f.shape[0]) for f in frames]
    results = pipe.finish_batch(found, [0.0, 0.1, 0.2, 0.3], [0, 1, 2, 3], sizes)
    assert [[face.face_id for face in r.faces] for r in results] == [[0]] * 4
    batch = EmotionPipeline(
        FakeDetector([[big], [big], [small], [small]]), FakeClassifier(), IoUTracker(),
        EmaSmoother(0.0), PipelineConfig(redetect_every=1),
    )  # fmt: skip
    ids = [[f.face_id for f in r.faces] for r in batch.process_batch(frames, [0] * 4, range(4))]
    assert ids == [[0]] * 4


def test_haar_search_near_a_box_at_the_edge_of_a_smaller_frame() -> None:
    """A hint from a 640x480 frame on a 320x240 one leaves a strip a few pixels wide: no
    OpenCV error, just no face."""
    det = HaarFaceDetector()
    frame = np.full((240, 320, 3), 128, np.uint8)
    assert det.detect_near(frame, [(200, 297, 200, 200)]) == []
    gray, scale = shrink(np.zeros((3, 200), np.uint8), 0.2)
    assert gray.shape == (1, 40) and scale == pytest.approx(0.2)


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        PipelineConfig().detect_width = 1  # type: ignore[misc]


# --- tracking -------------------------------------------------------------------------------


def test_iou() -> None:
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (20, 0, 10, 10)) == 0.0
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)


def test_tracker_keeps_id_of_a_moving_face() -> None:
    tracker = IoUTracker()
    ids = [tracker.update([(100 + 6 * i, 50 + 2 * i, 80, 80)])[0] for i in range(30)]
    assert set(ids) == {ids[0]}


def test_tracker_follows_a_fast_move_by_centre_distance() -> None:
    tracker = IoUTracker()
    a = tracker.update([(100, 100, 40, 40)])
    b = tracker.update([(118, 100, 40, 40)])  # IoU 0.22 < 0.3, centre moved 18 < 20
    assert a == b


def test_two_faces_are_not_swapped_even_when_listed_in_other_order() -> None:
    tracker = IoUTracker()
    left, right = (50, 100, 60, 60), (300, 100, 60, 60)
    first = tracker.update([left, right])
    assert first[0] != first[1]
    for step in range(1, 20):
        lb = (50 + 5 * step, 100, 60, 60)
        rb = (300 - 5 * step, 100, 60, 60)
        boxes = [rb, lb] if step % 2 else [lb, rb]
        ids = dict(zip(boxes, tracker.update(boxes), strict=True))
        assert ids[lb] == first[0] and ids[rb] == first[1]


def test_tracker_drops_a_track_after_max_missing_frames() -> None:
    tracker = IoUTracker(max_missing=3)
    (fid,) = tracker.update([(10, 10, 50, 50)])
    for _ in range(3):
        assert tracker.update([]) == []
    assert tracker.update([(10, 10, 50, 50)]) == [fid]  # back within 3 missing frames
    for _ in range(4):
        tracker.update([])
    assert tracker.active_ids == set()
    (new,) = tracker.update([(10, 10, 50, 50)])
    assert new != fid  # ids are never reused


def test_pipeline_face_ids_stable_and_smoother_forgets_dropped_tracks() -> None:
    seq = [[(10, 10, 40, 40)]] * 3 + [[]] * 3 + [[(12, 10, 40, 40)]]
    pipe, _, _ = make_pipeline(seq, max_missing=2)
    ids = [[f.face_id for f in pipe.process(frame_with_patches(), i, i).faces] for i in range(7)]
    assert ids[:3] == [[0], [0], [0]] and ids[3:6] == [[], [], []]
    assert ids[6] == [1]


# --- smoothing -----------------------------------------------------------------------------


def test_alpha_zero_equals_raw() -> None:
    sm = EmaSmoother(0.0)
    rng = np.random.default_rng(1)
    for _ in range(5):
        p = rng.dirichlet(np.ones(len(CLASSES)))
        np.testing.assert_array_equal(sm(3, p), p)


def test_ema_formula_per_face_and_forgetting() -> None:
    sm = EmaSmoother(0.75)
    np.testing.assert_allclose(sm(1, onehot(0)), onehot(0))
    np.testing.assert_allclose(sm(1, onehot(3)), 0.75 * onehot(0) + 0.25 * onehot(3))
    np.testing.assert_allclose(sm(2, onehot(5)), onehot(5))  # another face is independent
    sm.keep_only([2])
    np.testing.assert_allclose(sm(1, onehot(3)), onehot(3))
    with pytest.raises(ValueError):
        EmaSmoother(1.0)


def test_pipeline_smoothed_differs_from_raw_and_labels() -> None:
    detector, clf = FakeDetector([[(10, 10, 40, 40)], [(100, 10, 40, 40)]]), FakeClassifier()
    tracker = IoUTracker(iou_threshold=0.0, centre_ratio=10.0)  # same face moved
    pipe = EmotionPipeline(detector, clf, tracker, EmaSmoother(0.8))
    frame = frame_with_patches()
    pipe.process(frame, 0.0, 0)
    (face,) = pipe.process(frame, 0.1, 1).faces
    assert face.label == CLASSES[6] and face.display_label == CLASSES[0]
    np.testing.assert_allclose(face.smoothed, 0.8 * onehot(0) + 0.2 * onehot(6))


# --- annotation ----------------------------------------------------------------------------


def test_annotate_draws_box_and_caption_on_a_copy() -> None:
    frame = np.full((240, 320, 3), 30, np.uint8)
    face = FaceResult(0, (100, 80, 60, 60), onehot(3, 0.87), onehot(3, 0.87))
    result = FrameResult(0, 0.0, (face,))
    assert caption(face) == "happy 87%"
    out = annotate(frame, result)
    assert out.shape == frame.shape and (frame == 30).all()  # input untouched
    changed = (out != frame).any(axis=2)
    assert changed[80, 100:160].any() and changed[80:140, 100].any()  # box edges
    assert changed[40:78, 100:200].any()  # caption above the box
    assert not changed[150:, 200:].any()  # nothing far away
    same = annotate(frame, result, inplace=True)
    assert same is frame and (frame != 30).any()


def test_annotate_caption_near_top_goes_below_and_no_faces_is_noop() -> None:
    frame = np.zeros((240, 320, 3), np.uint8)
    face = FaceResult(0, (10, 0, 60, 60), onehot(0), onehot(0))
    out = annotate(frame, FrameResult(0, 0.0, (face,)))
    assert (out[62:90, 10:80] != 0).any()
    empty = annotate(frame, FrameResult(0, 0.0, ()))
    assert (empty == 0).all()


def test_pipeline_annotate_uses_smoothed_label() -> None:
    pipe, _, _ = make_pipeline([[(100, 50, 40, 40)]])
    frame = frame_with_patches()
    result = pipe.process(frame, 0.0, 0)
    out = pipe.annotate(frame, result)
    assert (out != frame).any()


# --- Haar detector and real clips ------------------------------------------------------------


def test_haar_detector_finds_nothing_in_a_blank_frame() -> None:
    det = HaarFaceDetector()
    assert det(np.full((480, 640, 3), 128, np.uint8)) == []
    assert det.detect_near(np.full((480, 640, 3), 128, np.uint8), [(100, 100, 200, 200)]) == []


def _videos() -> Path:
    if not VIDEOS.is_dir():
        pytest.skip(f"real clips not available ({VIDEOS} is absent)")
    return VIDEOS


@pytest.fixture(scope="module")
def real_classifier() -> Any:
    """The registered default model when there is one, else a small untrained network."""
    from emotion_core.registry import MODELS_DIR

    if (MODELS_DIR / "registry.json").exists():
        from emotion_core.inference import load_classifier

        return load_classifier()
    from emotion_core.inference import EmotionClassifier
    from emotion_core.registry import ModelCard
    from emotion_core.zoo import make_model

    model = make_model(arch="tiny", augment=False)
    return EmotionClassifier(model, ModelCard(name="untrained-tiny", arch="tiny"))


@pytest.mark.parametrize("clip", SINGLE_FACE_CLIPS)
def test_real_clip_single_stable_face(clip: str, real_classifier: Any) -> None:
    from emotion_core.video import read_frames

    path = _videos() / clip
    _, frames = read_frames(path)
    pipe = EmotionPipeline.from_config(real_classifier)
    results = [pipe.process(f.frame_bgr, f.t_s, f.frame_index) for f in frames]
    with_face = [r for r in results if r.faces]
    assert len(with_face) >= 0.8 * len(results)
    assert {f.face_id for r in results for f in r.faces} == {0}
    assert all(len(r.faces) == 1 for r in with_face)
    height, width = frames[0].frame_bgr.shape[:2]
    for r in with_face:
        (face,) = r.faces
        x, y, w, h = face.box
        assert w == h and w >= 100 and 0 <= x and x + w <= width and 0 <= y and y + h <= height
        assert face.probs.shape == (len(CLASSES),) and np.all(face.probs >= 0)
        assert face.probs.sum() == pytest.approx(1.0, abs=1e-5)
        assert face.smoothed.sum() == pytest.approx(1.0, abs=1e-5)
    # the ROI re-detection agrees with a full scan on every frame
    full = EmotionPipeline.from_config(real_classifier, PipelineConfig(redetect_every=1))
    full_found = sum(bool(full.process(f.frame_bgr, f.t_s, f.frame_index).faces) for f in frames)
    assert len(with_face) >= full_found - 2
    out = pipe.annotate(frames[-1].frame_bgr, results[-1])
    assert out.shape == frames[-1].frame_bgr.shape


def test_an_opencv_without_haar_cascades_is_a_detector_error(monkeypatch) -> None:
    import cv2

    monkeypatch.delattr(cv2, "data")  # as in OpenCV 5
    with pytest.raises(DetectorError, match="ships no Haar cascades"):
        haar_cascade_path()
