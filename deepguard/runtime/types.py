"""Plain data passed between runtime stages (decode -> detect -> crop -> classify -> aggregate).

Kept free of numpy-heavy logic so every stage, the CLI and the server can share one vocabulary.
Coordinates are always in pixels of the *original* frame, boxes as (x1, y1, x2, y2).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

# "uncertain" only from models that carry an uncertain band (deepguard.uncertain_low/high); see aggregate.verdict.
Verdict = Literal["fake", "real", "uncertain", "no_face", "error"]
Kind = Literal["image", "video"]


@dataclass
class Frame:
    """One decoded RGB frame (H, W, 3 uint8) with its position in the source."""

    image: np.ndarray
    index: int = 0
    time: float | None = None  # seconds from the start of a video; None for still images


@dataclass
class FaceBoxes:
    """Detector output for one frame: N faces, vectorised."""

    boxes: np.ndarray  # (N, 4) float32, x1 y1 x2 y2 in frame pixels
    scores: np.ndarray  # (N,) float32 detector confidence
    keypoints: np.ndarray  # (N, K, 2) float32 in frame pixels (K=6 for BlazeFace, 5 for SCRFD)

    @classmethod
    def empty(cls, k: int = 6) -> FaceBoxes:
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, k, 2), np.float32))

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


@dataclass
class Face:
    """One scored face."""

    box: list[float]
    det_score: float
    keypoints: list[list[float]]
    frame: int
    time: float | None
    score: float  # fused probability that the face is fake
    member_scores: list[float] = field(default_factory=list)
    person: int | None = None  # track id from deepguard.runtime.track; None where no tracking ran
    # Stream mode (deepguard.runtime.stream): frames since this person's face was last classified; 0 = ``score``
    # was computed on this very frame, > 0 = it is that person's latest score carried forward.
    age: int = 0


@dataclass
class FrameScore:
    index: int
    time: float | None
    score: float | None  # max over faces; None when the frame has no face
    n_faces: int


@dataclass
class Person:
    """One face followed across sampled frames (``deepguard.runtime.track``), scored by the video rule.

    Only tracks that vote are listed (``aggregate.counts_as_person``): a face whose ``person`` id is missing
    here belonged to a track too short to count (a probable false detection), so ids need not be contiguous.
    """

    id: int
    score: float  # P(fake): the confident-frames rule over this person's face scores
    n_faces: int
    first_frame: int
    last_frame: int
    verdict: str = ""


@dataclass
class Analysis:
    """Result for one input file (or stream). ``score`` is P(fake); None when no face was seen."""

    path: str
    kind: Kind
    verdict: Verdict
    score: float | None
    faces: list[Face] = field(default_factory=list)
    frames: list[FrameScore] = field(default_factory=list)
    model: str = ""
    error: str | None = None
    threshold: float | None = None
    frames_sampled: int = 0
    persons: list[Person] = field(default_factory=list)  # the video score is the max of their scores

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
