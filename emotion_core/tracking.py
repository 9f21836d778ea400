"""Stable face ids across frames by greedy IoU (then centroid-distance) matching."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from emotion_core.results import Box


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x, y, w, h) boxes, in [0, 1]."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = min(ax + aw, bx + bw) - max(ax, bx)
    ih = min(ay + ah, by + bh) - max(ay, by)
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def centre_distance(a: Box, b: Box) -> float:
    """Distance between the centres of two boxes, in pixels."""
    dx = (a[0] + a[2] / 2.0) - (b[0] + b[2] / 2.0)
    dy = (a[1] + a[3] / 2.0) - (b[1] + b[3] / 2.0)
    return float((dx * dx + dy * dy) ** 0.5)


@dataclass
class Track:
    """One tracked face: its id, last box and how many frames in a row it was not seen."""

    face_id: int
    box: Box
    missing: int = 0


class IoUTracker:
    """Assigns each detected box a face id that stays the same while the face stays in view.

    Boxes are matched to tracks greedily, best IoU first (pairs with IoU >= iou_threshold);
    boxes left over are then matched by centre distance (< centre_ratio * the track's box side),
    which catches fast moves. A track unseen for more than max_missing frames is dropped;
    unmatched boxes start new tracks with fresh ids (ids are never reused).
    """

    def __init__(
        self,
        iou_threshold: float = 0.3,
        max_missing: int = 15,
        centre_ratio: float = 0.5,
    ) -> None:
        self.iou_threshold = iou_threshold
        self.max_missing = max_missing
        self.centre_ratio = centre_ratio
        self.tracks: list[Track] = []
        self._next_id = 0

    @property
    def active_ids(self) -> set[int]:
        """Ids of the tracks currently kept (seen recently)."""
        return {t.face_id for t in self.tracks}

    def reset(self) -> None:
        """Forget all tracks (ids keep increasing so old ids are never reused)."""
        self.tracks = []

    def rescale(self, sx: float, sy: float) -> None:
        """Scale every track's box by (sx, sy): the frames changed size (e.g. the browser
        lowered the stream's resolution), and the faces in them with it."""
        for track in self.tracks:
            x, y, w, h = track.box
            track.box = (round(x * sx), round(y * sy), round(w * sx), round(h * sy))

    def update(self, boxes: Sequence[Box]) -> list[int]:
        """Match this frame's boxes to tracks: returns one face id per box, in box order."""
        ids: list[int | None] = [None] * len(boxes)
        free_tracks = set(range(len(self.tracks)))
        pairs = []
        for ti, track in enumerate(self.tracks):
            for bi, box in enumerate(boxes):
                score = iou(track.box, box)
                if score >= self.iou_threshold:
                    pairs.append((score, ti, bi))
        pairs.sort(reverse=True)
        for _, ti, bi in pairs:
            if ti in free_tracks and ids[bi] is None:
                ids[bi] = ti
                free_tracks.discard(ti)
        far = []
        for ti in free_tracks:
            for bi, box in enumerate(boxes):
                if ids[bi] is None:
                    side = max(self.tracks[ti].box[2], self.tracks[ti].box[3], 1)
                    dist = centre_distance(self.tracks[ti].box, box)
                    if dist < self.centre_ratio * side:
                        far.append((dist, ti, bi))
        far.sort()
        for _, ti, bi in far:
            if ti in free_tracks and ids[bi] is None:
                ids[bi] = ti
                free_tracks.discard(ti)

        result: list[int] = []
        new_tracks: list[Track] = []
        for bi, box in enumerate(boxes):
            match = ids[bi]
            if match is None:
                track = Track(self._next_id, box)
                self._next_id += 1
            else:
                track = self.tracks[match]
                track.box, track.missing = box, 0
            new_tracks.append(track)
            result.append(track.face_id)
        for ti in sorted(free_tracks):
            track = self.tracks[ti]
            track.missing += 1
            if track.missing <= self.max_missing:
                new_tracks.append(track)
        self.tracks = new_tracks
        return result
