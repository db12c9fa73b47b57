"""Stream mode: detect and track every frame, classify a person only when its evidence is stale.

Why: on a 2-core edge box the classifier cannot score every face of every 720p frame in real time, and it does
not need to - a face does not change from one 40 ms frame to the next. Stream-analytics systems (DeepStream's
tracker + secondary classifier with a re-inference interval) solve this the same way: the detector and tracker
run on every frame, so every frame carries every face's box, person id and current score; the classifier
re-scores a person only

- when it first appears (a new track),
- when at least ``1 / rate`` seconds of video time have passed since it was last scored (``rate`` = R re-scores
  per second, default :data:`RESCORE_RATE`), or
- when its face changed enough since it was last scored (:meth:`Rescorer.changed`): the box grew or shrank by
  more than :data:`MAX_SIZE_CHANGE` (walking towards / away: new detail), it moved by more than
  :data:`MAX_MOVE` face sizes (motion blur, new lighting), the head turned (the nose's offset from the eyes'
  midpoint, in eye distances, moved by more than :data:`MAX_YAW_CHANGE`: a profile shows blending seams a
  frontal view hides) or the detector's confidence fell by more than :data:`MAX_CONF_DROP` (occlusion starting).

Frames in between carry the person's latest score with ``Face.age`` = frames since it was computed. Persons and
the video score aggregate only classifier outputs (``Tracker.record`` skips carried copies).

Frames without a timestamp (raw arrays) have no time to measure staleness by, so every face on them is scored:
stream mode needs timed frames (decoded video, or ``Frame(time=...)``). ``rate = 0`` means dense scoring.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from deepguard.runtime.types import Face

if TYPE_CHECKING:
    from deepguard.runtime.track import Tracker

#: Default re-scores per person per second.
RESCORE_RATE = 5.0
#: Re-score when the face box area changed by more than this factor (either way) since the last score.
MAX_SIZE_CHANGE = 1.25
#: ... or its centre moved by more than this many face sizes.
MAX_MOVE = 0.5
#: ... or the yaw proxy (nose offset from the eyes' midpoint, in eye distances) changed by more than this.
MAX_YAW_CHANGE = 0.15
#: ... or the detector confidence dropped by more than this (occlusion).
MAX_CONF_DROP = 0.15


@dataclass
class _Scored:
    """What a person looked like when last classified, and the result."""

    time: float
    frame: int
    box: np.ndarray
    yaw: float | None
    det_score: float
    score: float = float("nan")
    member_scores: list[float] | None = None


def yaw_proxy(keypoints: list[list[float]]) -> float | None:
    """Nose offset from the eyes' midpoint along the eye line, in eye distances (BlazeFace order: right eye,
    left eye, nose, ...); None without keypoints. 0 for a frontal face, about +-0.5 near profile."""
    if len(keypoints) < 3:
        return None
    re, le, nose = (np.asarray(k, np.float64) for k in keypoints[:3])
    axis = le - re
    d = float(np.linalg.norm(axis))
    if d < 1e-6:
        return None
    return float(np.dot(nose - (re + le) / 2, axis / d) / d)


class Rescorer:
    """Per-person re-scoring decisions for one stream (module docstring); state is O(1) per person."""

    def __init__(self, rate: float = RESCORE_RATE) -> None:
        if rate < 0:
            raise ValueError(f"rescore rate must be >= 0, got {rate}")
        self.rate = float(rate)
        self._last: dict[int, _Scored] = {}

    def plan(self, faces: list[Face], new_only: bool = False) -> list[tuple[bool, _Scored]]:
        """For one frame's tracked faces (``person`` set): ``(classify now?, reference)`` per face.

        ``new_only``: classify only persons seen for the first time; the others wait for a frame without it.
        Stream mode's region frames (:mod:`deepguard.runtime.facedet.regions`) pass it: their boxes come from a
        coarser view, so a crop from them would differ from the full scan's, and their detector confidence is not
        comparable with a full scan's (it would trip the occlusion rule); the next full scan is <= 4 frames away.

        A face to classify becomes its person's reference at once, so later frames of the same chunk are decided
        against it before its score exists (decisions use time and geometry only); a carried face's reference is
        always from an earlier frame, so :meth:`fill` in frame order finds its score there.
        """
        out = []
        for f in faces:
            now = _Scored(
                f.time if f.time is not None else float("nan"),
                f.frame,
                np.asarray(f.box, np.float64),
                yaw_proxy(f.keypoints),
                f.det_score,
            )
            last = self._last.get(f.person) if f.person is not None else None
            if last is None or (
                not new_only
                and (f.time is None or self.rate == 0 or self._stale(last, now) or self.changed(last, now))
            ):
                if f.person is not None:
                    self._last[f.person] = now
                out.append((True, now))
            else:
                out.append((False, last))
        return out

    def _stale(self, last: _Scored, now: _Scored) -> bool:
        # also True for NaN times; 1 µs of slack so 0.2 s at 25 fps (5 frames, 0.19999...) counts as 0.2
        return not (now.time - last.time < 1.0 / self.rate - 1e-6)

    @staticmethod
    def changed(last: _Scored | None, now: _Scored) -> bool:
        """The documented box / pose / occlusion rule (module docstring)."""
        if last is None:
            return True
        wh_l = np.maximum(last.box[2:] - last.box[:2], 1.0)
        wh_n = np.maximum(now.box[2:] - now.box[:2], 1.0)
        ratio = float(np.prod(wh_n) / np.prod(wh_l))
        if ratio > MAX_SIZE_CHANGE or ratio < 1 / MAX_SIZE_CHANGE:
            return True
        size = float(np.sqrt(np.prod(wh_l)))
        move = float(np.linalg.norm((now.box[:2] + now.box[2:] - last.box[:2] - last.box[2:]) / 2)) / size
        if move > MAX_MOVE:
            return True
        if last.yaw is not None and now.yaw is not None and abs(now.yaw - last.yaw) > MAX_YAW_CHANGE:
            return True
        return last.det_score - now.det_score > MAX_CONF_DROP

    @staticmethod
    def fill(faces: list[Face], plan: list[tuple[bool, _Scored]]) -> None:
        """After classification: keep each classified face's result on its reference and give each carried face
        its reference's score and ``age``. Call per frame in frame order, after the classified faces got their
        ``score``."""
        for f, (need, ref) in zip(faces, plan, strict=True):
            if need:
                f.age = 0
                ref.score, ref.member_scores = f.score, list(f.member_scores)
            else:
                f.score, f.member_scores = ref.score, list(ref.member_scores or [])
                f.age = f.frame - ref.frame

    def forget(self, live: set[int]) -> None:
        """Drop the state of persons the tracker no longer follows (keeps a long stream's memory bounded)."""
        for pid in [p for p in self._last if p not in live]:
            del self._last[pid]


def plan_frame(
    tracker: Tracker, rescorer: Rescorer, faces: list[Face], scanned: bool = True
) -> tuple[list[tuple[bool, _Scored]], list[int]]:
    """Stream mode's step before classification, for one frame's faces (scores not yet set), in stream order:
    track them, decide who is classified. Returns ``Rescorer.plan``'s decisions and the indices to classify.
    ``scanned`` False: the boxes come from regions, not a full detector scan, so only new persons qualify."""
    tracker.assign(faces)
    decisions = rescorer.plan(faces, new_only=not scanned)
    return decisions, [j for j, (need, _) in enumerate(decisions) if need]


def finish_frame(
    tracker: Tracker, rescorer: Rescorer, faces: list[Face], decisions: list[tuple[bool, _Scored]]
) -> None:
    """Stream mode's step after classification, in stream order: carry scores forward to the faces that were not
    classified, and add the classifier outputs (only those) to the persons."""
    rescorer.fill(faces, decisions)
    tracker.record(faces)


__all__ = ["RESCORE_RATE", "Rescorer", "finish_frame", "plan_frame", "yaw_proxy"]
