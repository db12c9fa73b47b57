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

Persons (``deepguard.runtime.track`` links a video's faces across sampled frames into persons): the rule above
runs over each *person's* face scores (``video_score``, or its O(1) mirror ``RunningScore`` for streams), and
the video score is the max over persons - a fake person makes the video fake. Why not the rule over per-frame
maxima: the max mixes persons, and a real bystander's many confident-real frames dilute the swapped person.
Example: a swapped face in 4 of 12 frames at 0.95, a real person in all 12 at 0.05 -> frame maxima are 4 x
0.95 + 8 x 0.05: 33 % confident fakes (not > 40 %), so the mean, 0.35, says real; per person it is 0.95, fake.
A track counts as a person only with at least MIN_PERSON_FACES (2) faces - a face seen in a single sampled
frame is as likely a false detection, and one such face at 0.99 must not make a real video fake - unless no
track is that long (a photo, a 1-frame clip, fast cuts): then every track counts (``counts_as_person``).
A photo is one frame, so each face is its own person and its score stays the max over its faces.
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
#: A track needs this many faces to vote as a person (unless no track has that many; see the docstring).
MIN_PERSON_FACES = 2


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


def counts_as_person(n_faces: int, longest: int) -> bool:
    """Whether a track of ``n_faces`` votes for the video, given the longest track's length (docstring)."""
    return n_faces >= min(MIN_PERSON_FACES, longest)


class RunningScore:
    """``video_score`` over a growing sequence in O(1) per item (a stream's person can last for hours).

    Keeps the counts and sums the confident-frames rule needs instead of every score; tests check it equals
    ``video_score`` on the same sequence.
    """

    def __init__(self) -> None:
        self.n = self.n_fake = self.n_real = 0
        self.total = self.sum_fake = self.sum_real = 0.0

    def add(self, score: float | None) -> None:
        if score is None:
            return
        self.n += 1
        self.total += score
        if score > CONFIDENT_FAKE:
            self.n_fake += 1
            self.sum_fake += score
        if score < CONFIDENT_REAL:
            self.n_real += 1
            self.sum_real += score

    @property
    def score(self) -> float | None:
        if self.n == 0:
            return None
        if self.n_fake > FAKE_FRACTION * self.n:
            return self.sum_fake / self.n_fake
        if self.n_real > REAL_FRACTION * self.n:
            return self.sum_real / self.n_real
        return self.total / self.n


def verdict(
    score: float | None, threshold: float, band: tuple[float, float] | None = None
) -> Literal["fake", "real", "uncertain", "no_face"]:
    """The verdict for a (face, frame or video) score; ``"no_face"`` when score is None.

    Without ``band`` (binary): ``"fake"`` when ``score >= threshold``, else ``"real"``; a score exactly at the
    threshold counts as fake, the threshold being the smallest score we flag. With ``band = (lo, hi)`` (a
    calibrated model's uncertain band, ``lo <= threshold <= hi``): ``"real"`` below ``lo``, ``"uncertain"`` for
    ``lo <= score < hi``, ``"fake"`` at or above ``hi``; the same half-open convention, and an empty band
    (``lo == hi``) gives the binary verdict at ``hi``.
    """
    if score is None:
        return "no_face"
    if band is None:
        return "fake" if score >= threshold else "real"
    lo, hi = band
    if score >= hi:
        return "fake"
    return "uncertain" if score >= lo else "real"


__all__ = [
    "CONFIDENT_FAKE",
    "CONFIDENT_REAL",
    "FAKE_FRACTION",
    "REAL_FRACTION",
    "MIN_PERSON_FACES",
    "RunningScore",
    "counts_as_person",
    "frame_score",
    "video_score",
    "verdict",
]
