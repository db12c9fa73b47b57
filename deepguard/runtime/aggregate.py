"""Aggregate stage: face scores -> frame score -> video score -> verdict.

Scores are P(fake) in [0, 1]. A frame is as fake as its most fake face (a swap usually targets one person
among several). A video combines its frames with the DFDC winner's "confident frames" rule.

Video rule (DFDC 1st place, Selim Seferbekov's ``confident_strategy``), over the n frames that have a face:

1. more than 40 % (FAKE_FRACTION) score > 0.8 (CONFIDENT_FAKE) -> mean of those confident-fake frames;
2. elif more than 90 % (REAL_FRACTION) score < 0.2 (CONFIDENT_REAL) -> mean of those confident-real frames;
3. else -> mean of all n frames.

Why: a plain mean lets a few confidently-fake frames of a swapped face be washed out by the frames where
the swap happens to look clean (pose, blur), while a plain max turns one false-positive frame into a fake
verdict. This rule is robust to a handful of false-positive frames (they are < 40 % and get averaged in),
yet a face that is *consistently* flagged wins outright with its confident score; likewise a clearly real
video is not dragged up by a few uncertain frames. The original also required more than 11 confident-fake
frames (it always sampled 32 frames per video); DeepGuard samples ~1 fps of possibly short clips, so only
the fraction is used.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np

#: A frame scoring above this is a *confident fake* frame.
CONFIDENT_FAKE = 0.8
#: A frame scoring below this is a *confident real* frame.
CONFIDENT_REAL = 0.2
#: If more than this fraction of the scored frames are confident fakes, the video score is their mean.
FAKE_FRACTION = 0.4
#: Else, if more than this fraction are confident reals, the video score is their mean.
REAL_FRACTION = 0.9


def frame_score(face_scores: Iterable[float] | np.ndarray | None) -> float | None:
    """Max P(fake) over the faces of one frame - one fake face makes the frame fake. None if no face."""
    if face_scores is None:
        return None
    a = np.asarray(list(face_scores) if not isinstance(face_scores, np.ndarray) else face_scores, np.float64)
    if a.size == 0:
        return None
    return float(np.max(a))


def video_score(frame_scores: Sequence[float | None]) -> float | None:
    """Combine per-frame scores with the confident-frames rule (see module docstring).

    Frames without a face (None) are ignored; None when no frame had a face.
    """
    s = np.asarray([x for x in frame_scores if x is not None], np.float64)
    n = s.size
    if n == 0:
        return None
    fake = s[s > CONFIDENT_FAKE]
    if fake.size > FAKE_FRACTION * n:
        return float(fake.mean())
    real = s[s < CONFIDENT_REAL]
    if real.size > REAL_FRACTION * n:
        return float(real.mean())
    return float(s.mean())


def verdict(score: float | None, threshold: float) -> Literal["fake", "real", "no_face"]:
    """``"fake"`` when ``score >= threshold``, ``"real"`` below it, ``"no_face"`` when score is None.

    A score exactly at the threshold counts as fake: the threshold is the smallest score we flag.
    """
    if score is None:
        return "no_face"
    return "fake" if score >= threshold else "real"


__all__ = [
    "CONFIDENT_FAKE",
    "CONFIDENT_REAL",
    "FAKE_FRACTION",
    "REAL_FRACTION",
    "frame_score",
    "video_score",
    "verdict",
]
