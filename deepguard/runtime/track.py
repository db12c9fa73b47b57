"""Person tracking: link a video's faces across sampled frames into persons, online.

Why: a video is as fake as its most fake *person* (``deepguard.runtime.aggregate``), so faces must be grouped
by who they are. The tracker is online - one ``update`` per sampled frame, in order - so a whole file
(``Detector.analyze_frames``, the server's ``Accumulator``) and an endless stream (``StreamFrames``) track
alike and give the same persons for the same frames.

Association, once per sampled frame (faces per frame are few, so a greedy pass over a small cost matrix):

- cost(track, face) = (1 - box IoU) + d, d = mean distance of the corresponding keypoints (BlazeFace's 6;
  the box centre when a detector gives none) divided by the face size (sqrt of box area, mean of the two);
- a track is compared both where it was last seen and where its last displacement predicts it, whichever is
  cheaper: sampled frames can be 1 s apart and a walking face crosses its own width in that time; the
  prediction keeps two people who cross apart, the last-seen position keeps a face that stopped or turned;
- a pair is allowed only when d <= MAX_SHIFT (1.5 face sizes) and the sizes differ by at most MAX_SCALE (2x);
- pairs are taken cheapest first, each track and face once; a face left over starts a new track;
- a track missing for more than MAX_GAP (3) consecutive sampled frames ends (at 1 fps: 3 s behind someone
  or turned away); a face seen after that is a new track - a longer memory would hand an identity to whoever
  next stands there.

Per track only a few numbers and the O(1) rule counters are kept (``aggregate.RunningScore``), so a stream
can run for hours; ``score`` (the max over voting tracks) costs O(active tracks) per frame.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from deepguard.runtime import aggregate
from deepguard.runtime.types import Face, Person

#: Sampled frames a track may miss in a row and still continue.
MAX_GAP = 3
#: Largest keypoint shift between matched faces, in face sizes.
MAX_SHIFT = 1.5
#: Largest size ratio between matched faces.
MAX_SCALE = 2.0


class Track:
    """One person's state: last box / points, motion, and the rule's running counters."""

    __slots__ = ("id", "box", "pts", "vel", "last", "first_frame", "last_frame", "rule")

    def __init__(self, id: int, box: np.ndarray, pts: np.ndarray, pos: int, frame: int) -> None:
        self.id, self.box, self.pts, self.last = id, box, pts, pos
        self.vel = np.zeros(2)  # box-centre displacement per sampled frame
        self.first_frame = self.last_frame = frame
        self.rule = aggregate.RunningScore()

    @property
    def n(self) -> int:
        return self.rule.n

    def person(self, threshold: float, band: tuple[float, float] | None = None) -> Person:
        score = self.rule.score
        assert score is not None  # a track has at least one face
        v = aggregate.verdict(score, threshold, band)
        return Person(self.id, score, self.n, self.first_frame, self.last_frame, v)


def _centre(boxes: np.ndarray) -> np.ndarray:
    return (boxes[..., :2] + boxes[..., 2:]) / 2


def _size(boxes: np.ndarray) -> np.ndarray:
    wh = np.maximum(boxes[..., 2:] - boxes[..., :2], 1.0)
    return np.sqrt(wh[..., 0] * wh[..., 1])


def _area(boxes: np.ndarray) -> np.ndarray:
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of (..., T, 4) against (F, 4) -> (..., T, F)."""
    a, b = a[..., :, None, :], b[None, :, :]
    wh = np.clip(np.minimum(a[..., 2:], b[..., 2:]) - np.maximum(a[..., :2], b[..., :2]), 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = _area(a) + _area(b) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


class Tracker:
    """Online tracker; ``update(faces)`` once per sampled frame (also frames without faces) sets ``face.person``."""

    def __init__(self, max_gap: int = MAX_GAP) -> None:
        self.max_gap = max_gap
        self.tracks: list[Track] = []  # every track so far; id = position
        self.active: list[Track] = []
        self.frames = self.frames_with_faces = self.faces = 0
        self.longest = 0  # faces in the longest track
        self._ended: dict[int, float] = {}  # min(n, MIN_PERSON_FACES) -> best score among ended tracks

    def update(self, faces: Sequence[Face]) -> list[int]:
        """Associate one sampled frame's faces with the live tracks and add their scores; returns (and sets) their
        person ids."""
        ids = self.assign(faces)
        self.record(faces)
        return ids

    def record(self, faces: Sequence[Face]) -> None:
        """Add assigned faces' scores to their persons' rule - only classifier outputs (``age == 0``): a score
        carried forward in stream mode is the same evidence again and must not vote twice."""
        for f in faces:
            if f.age == 0 and f.person is not None:
                t = self.tracks[f.person]
                t.rule.add(f.score)
                self.longest = max(self.longest, t.n)

    def assign(self, faces: Sequence[Face]) -> list[int]:
        """Associate one sampled frame's faces with the live tracks (geometry only, no score): sets and returns
        their person ids. Stream mode calls it before it knows which faces to classify."""
        pos = self.frames
        self.frames += 1
        self._retire(pos)
        if not faces:
            return []
        self.frames_with_faces += 1
        self.faces += len(faces)
        boxes = np.asarray([f.box for f in faces], np.float64).reshape(-1, 4)
        k = {len(f.keypoints) for f in faces}
        kps = np.asarray([f.keypoints for f in faces], np.float64) if len(k) == 1 and 0 not in k else None
        use_kps = kps is not None and all(t.pts.shape == kps.shape[1:] for t in self.active)
        pts = kps if use_kps else _centre(boxes)[:, None, :]
        ids = [-1] * len(faces)
        for ti, fi in self._match(boxes, pts, pos) if self.active else []:
            t = self.active[ti]
            t.vel = (_centre(boxes[fi]) - _centre(t.box)) / (pos - t.last)
            ids[fi] = t.id
        for fi, f in enumerate(faces):
            if ids[fi] < 0:
                t = Track(len(self.tracks), boxes[fi], pts[fi], pos, f.frame)
                self.tracks.append(t)
                self.active.append(t)
                ids[fi] = t.id
            t = self.tracks[ids[fi]]
            t.box, t.last, t.last_frame = boxes[fi], pos, f.frame
            t.pts = kps[fi] if kps is not None else _centre(boxes[fi])[None]
            f.person = t.id
        return ids

    def _retire(self, pos: int) -> None:
        keep = []
        for t in self.active:
            if pos - t.last - 1 > self.max_gap:
                key = min(t.n, aggregate.MIN_PERSON_FACES)
                self._ended[key] = max(self._ended.get(key, 0.0), t.rule.score or 0.0)
            else:
                keep.append(t)
        self.active = keep

    def _match(self, boxes: np.ndarray, pts: np.ndarray, pos: int) -> list[tuple[int, int]]:
        """Greedy cheapest-first (track, face) pairs under the gates (module docstring)."""
        act = self.active
        tb = np.stack([t.box for t in act])  # (T, 4)
        tp = np.stack([t.pts if t.pts.shape == pts.shape[1:] else _centre(t.box)[None] for t in act])
        shift = np.stack([t.vel * (pos - t.last) for t in act])  # (T, 2)
        cand_b = np.stack([tb, tb + np.tile(shift, 2)])  # (2, T, 4): last seen, predicted
        cand_p = np.stack([tp, tp + shift[:, None, :]])  # (2, T, P, 2)
        st, sf = _size(tb), _size(boxes)
        size = (st[:, None] + sf[None, :]) / 2  # (T, F)
        d = np.linalg.norm(cand_p[:, :, None] - pts[None, None], axis=-1).mean(-1) / size  # (2, T, F)
        cost = ((1.0 - _iou(cand_b, boxes)) + d).min(0)
        ratio = st[:, None] / sf[None, :]
        ok = (d.min(0) <= MAX_SHIFT) & (ratio <= MAX_SCALE) & (ratio >= 1 / MAX_SCALE)
        cost = np.where(ok, cost, np.inf)
        pairs, used_t, used_f = [], set(), set()
        for flat in np.argsort(cost, axis=None, kind="stable"):
            ti, fi = divmod(int(flat), cost.shape[1])
            if not np.isfinite(cost[ti, fi]):
                break
            if ti not in used_t and fi not in used_f:
                pairs.append((ti, fi))
                used_t.add(ti)
                used_f.add(fi)
        return pairs

    @property
    def score(self) -> float | None:
        """Video score so far: the max over voting tracks' rule scores (None before the first face)."""
        if not self.longest:
            return None
        m = min(self.longest, aggregate.MIN_PERSON_FACES)
        best = [s for key, s in self._ended.items() if key >= m]
        best += [t.rule.score for t in self.active if t.n >= m]
        return max(best)  # type: ignore[type-var]

    def persons(self, threshold: float, band: tuple[float, float] | None = None) -> list[Person]:
        """The voting tracks as Persons, by id (``aggregate.counts_as_person``); verdicts as the video's."""
        longest = self.longest
        return [t.person(threshold, band) for t in self.tracks if aggregate.counts_as_person(t.n, longest)]


def track_frames(frames: Iterable[Sequence[Face]], max_gap: int = MAX_GAP) -> Tracker:
    """Track a whole sequence offline: one list of faces per sampled frame (empty for frames without one)."""
    tr = Tracker(max_gap)
    for faces in frames:
        tr.update(faces)
    return tr


__all__ = ["MAX_GAP", "MAX_SCALE", "MAX_SHIFT", "Track", "Tracker", "track_frames"]
