"""The per-frame pipeline: detect -> square/clip -> square crop (edge-padded) -> preprocess
-> classify (one batch) -> track -> smooth, plus annotation. Each step is an injected callable
so tests can fake it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from emotion_core.annotate import annotate
from emotion_core.detect import (
    FaceDetector,
    HaarFaceDetector,
    crop_square,
    largest,
    square_and_clip,
)
from emotion_core.inference import Classifier
from emotion_core.preprocess import input_size_of, preprocess_batch
from emotion_core.results import Box, FaceResult, FrameResult
from emotion_core.smoothing import EmaSmoother
from emotion_core.tracking import IoUTracker


@dataclass(frozen=True)
class PipelineConfig:
    """Settings of the live and recorded-video pipeline.

    detect_width: frames are shrunk to this width for face detection (0 = full size). At 256 a
        640-wide frame's smallest findable face is ~60 px, ample for a webcam interview, and a
        full scan costs ~7 ms here instead of ~10 ms at 320; lower it for small, distant faces.
    scale_factor, min_neighbors: Haar detectMultiScale settings.
    min_face_px: smallest face side in full-frame pixels.
    smoothing_alpha: EMA weight of the past (0 disables smoothing).
    max_faces: at most this many faces (the largest) are classified per frame (0 = no limit).
    box_margin: grow each square face box by this fraction before cropping.
    iou_threshold, max_missing: tracker settings (see IoUTracker).
    tta: classify each face and its mirror image and average the two (one batched call).
    redetect_every: while faces are tracked, the detector's cheap detect_near (if it has one)
        re-finds them near their last boxes and a full-frame scan runs only every this many
        frames (or when a face is lost); 1 scans every frame.
    """

    detect_width: int = 256
    scale_factor: float = 1.2
    min_neighbors: int = 5
    min_face_px: int = 48
    smoothing_alpha: float = 0.6
    max_faces: int = 4
    box_margin: float = 0.0
    iou_threshold: float = 0.3
    max_missing: int = 15
    tta: bool = False
    redetect_every: int = 10


def frame_size(frame_bgr: np.ndarray) -> tuple[int, int]:
    """(W, H) of an (H, W, 3) frame."""
    return int(frame_bgr.shape[1]), int(frame_bgr.shape[0])


class EmotionPipeline:
    """Turns BGR frames into FrameResults; keeps tracker/smoother state between frames.

    One pipeline per video stream (it holds that stream's state); the classifier may be shared.
    """

    # NOTE: not thread-safe as a whole. find_faces/detect (detection state) and finish_batch/
    # assemble (tracker and smoother state) touch separate state, so one thread may run
    # find_faces ahead while another finishes earlier frames, each in frame order
    # (analyze_video does this). EmotionClassifier locks its own calls.

    def __init__(
        self,
        detector: FaceDetector,
        classifier: Classifier,
        tracker: IoUTracker,
        smoother: EmaSmoother,
        config: PipelineConfig | None = None,
    ) -> None:
        self.detector = detector
        self.classifier = classifier
        self.tracker = tracker
        self.smoother = smoother
        self.config = config or PipelineConfig()
        self._hints: list[Box] = []
        self._since_full = 0
        self._detect_size: tuple[int, int] | None = None  # (W, H) of the last frame detected
        self._track_size: tuple[int, int] | None = None  # (W, H) of the last frame assembled

    @classmethod
    def from_config(
        cls, classifier: Classifier, config: PipelineConfig | None = None
    ) -> EmotionPipeline:
        """The standard pipeline (Haar detector, IoU tracker, EMA smoother) for a classifier."""
        config = config or PipelineConfig()
        detector = HaarFaceDetector(
            detect_width=config.detect_width,
            scale_factor=config.scale_factor,
            min_neighbors=config.min_neighbors,
            min_face_px=config.min_face_px,
        )
        tracker = IoUTracker(iou_threshold=config.iou_threshold, max_missing=config.max_missing)
        return cls(detector, classifier, tracker, EmaSmoother(config.smoothing_alpha), config)

    def reset(self) -> None:
        """Forget tracks and smoothing state (e.g. when a new stream starts)."""
        self.tracker.reset()
        self.smoother.reset()
        self._hints = []
        self._since_full = 0
        self._detect_size = None
        self._track_size = None

    def detect(self, frame_bgr: np.ndarray) -> list[Box]:
        """Raw detector boxes (x, y, w, h) for a frame (H, W, 3) uint8 BGR: near the previous
        frame's faces when possible (see PipelineConfig.redetect_every), else a full-frame scan
        (always after the frames changed size: the old boxes may lie outside the new frame).
        Call in frame order."""
        size = frame_size(frame_bgr)
        if size != self._detect_size:
            self._detect_size, self._hints = size, []
        near = getattr(self.detector, "detect_near", None)
        if near is not None and self._hints and self._since_full < self.config.redetect_every - 1:
            boxes: list[Box] = near(frame_bgr, self._hints)
            if len(boxes) >= len(self._hints):
                self._since_full += 1
                self._hints = boxes
                return boxes
        self._since_full = 0
        self._hints = largest(self.detector(frame_bgr), self.config.max_faces)
        return self._hints

    def find_faces(self, frame_bgr: np.ndarray) -> tuple[list[Box], list[np.ndarray]]:
        """Detect in a frame (H, W, 3) uint8 BGR, keep the largest max_faces, square and clip:
        the clipped boxes (to show and track) and their square crops (s, s, 3), padded where
        the square leaves the frame (see crop_square), so preprocessing never stretches a face
        cut by the frame edge."""
        boxes = largest(self.detect(frame_bgr), self.config.max_faces)
        kept: list[Box] = []
        crops: list[np.ndarray] = []
        for box in boxes:
            sq = square_and_clip(box, frame_bgr.shape, self.config.box_margin)
            if sq[2] > 0 and sq[3] > 0:
                kept.append(sq)
                crops.append(crop_square(frame_bgr, box, self.config.box_margin))
        return kept, crops

    def classify(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Crops (list of (h, w, 3) BGR) -> probabilities (N, C) in ONE classifier call (faces
        resized to the classifier's input size S, from its card)."""
        n_classes = len(self.classifier.classes)
        if len(crops) == 0:
            return np.zeros((0, n_classes))
        x = preprocess_batch(list(crops), size=input_size_of(self.classifier))
        if self.config.tta:
            both = self.classifier.predict(np.concatenate([x, x[:, :, ::-1, :]]))
            probs = (np.asarray(both[: len(x)]) + np.asarray(both[len(x) :])) / 2.0
        else:
            probs = np.asarray(self.classifier.predict(x))
        if probs.shape != (len(crops), n_classes):
            raise ValueError(
                f"classifier returned shape {probs.shape}, expected {(len(x), n_classes)}"
            )
        return probs

    def assemble(
        self,
        frame_index: int,
        t_s: float,
        boxes: Sequence[Box],
        probs: np.ndarray,
        size: tuple[int, int] | None = None,
    ) -> FrameResult:
        """Track and smooth one frame's classified boxes (probs (N, C)) into a FrameResult.

        size: the frame's (W, H); when it differs from the previous frame's, the tracks are
        scaled to it first, so each face keeps its id (e.g. the browser lowered the stream's
        resolution). Must be called in frame order (the tracker and smoother keep state).
        """
        if size is not None:
            old, self._track_size = self._track_size, size
            if old is not None and old != size and min(old) > 0:
                self.tracker.rescale(size[0] / old[0], size[1] / old[1])
        ids = self.tracker.update(boxes)
        faces = tuple(
            FaceResult(face_id, box, probs[i], self.smoother(face_id, probs[i]))
            for i, (face_id, box) in enumerate(zip(ids, boxes, strict=True))
        )
        self.smoother.keep_only(self.tracker.active_ids)
        return FrameResult(frame_index=frame_index, t_s=float(t_s), faces=faces)

    def process(self, frame_bgr: np.ndarray, t_s: float, frame_index: int) -> FrameResult:
        """One frame (H, W, 3) uint8 BGR -> FrameResult (faces may be empty)."""
        boxes, crops = self.find_faces(frame_bgr)
        return self.assemble(frame_index, t_s, boxes, self.classify(crops), frame_size(frame_bgr))

    def process_batch(
        self,
        frames_bgr: Sequence[np.ndarray],
        t_s: Sequence[float],
        frame_indices: Sequence[int],
    ) -> list[FrameResult]:
        """Several consecutive frames, each (H, W, 3) uint8 BGR, with all their faces
        classified in ONE call (faster offline); t_s and frame_indices have one entry per frame.
        Returns one FrameResult per frame, in order.
        """
        found = [self.find_faces(frame) for frame in frames_bgr]
        return self.finish_batch(found, t_s, frame_indices, [frame_size(f) for f in frames_bgr])

    def finish_batch(
        self,
        found: Sequence[tuple[list[Box], list[np.ndarray]]],
        t_s: Sequence[float],
        frame_indices: Sequence[int],
        sizes: Sequence[tuple[int, int] | None] | None = None,
    ) -> list[FrameResult]:
        """Classify the faces that find_faces returned for consecutive frames in ONE call,
        then track and smooth them in order: one FrameResult per frame (sizes: each frame's
        (W, H), see assemble).
        """
        all_probs = self.classify([c for _, crops in found for c in crops])
        results = []
        start = 0
        sizes = sizes if sizes is not None else [None] * len(found)
        for (boxes, _), t, index, size in zip(found, t_s, frame_indices, sizes, strict=True):
            probs = all_probs[start : start + len(boxes)]
            start += len(boxes)
            results.append(self.assemble(index, t, boxes, probs, size))
        return results

    def annotate(
        self, frame_bgr: np.ndarray, frame_result: FrameResult, inplace: bool = False
    ) -> np.ndarray:
        """Draw the result's boxes and captions: (H, W, 3) -> (H, W, 3)."""
        return annotate(frame_bgr, frame_result, inplace=inplace, classes=self.classifier.classes)
