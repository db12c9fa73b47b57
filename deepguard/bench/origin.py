"""The origin project's pipeline, reproduced as the same-run baseline: MTCNN + Keras ``predict`` per frame.

Per frame: ``mtcnn.MTCNN().detect_faces(frame)`` (the PyPI ``mtcnn`` 1.0 package, TensorFlow, weights inside the
wheel), the *first* face cropped with the 30 % margin and resized to 299, then ``model.predict`` of Xception and
EfficientNetV2-M (``deepguard.models.members.build_seed_member``: Keras' ImageNet weights when cached, else
random init; latency does not depend on the weights) and the mean of the two sigmoids. One frame at a time,
as the origin did. Nothing is downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import numpy as np

from deepguard.runtime.crop import crop_faces

SEED_MEMBERS = ("xception", "efficientnetv2_m")


class OriginPipeline:
    """MTCNN + Keras predict of the seed-profile members, first face only (the origin's way)."""

    def __init__(self, input_size: int = 299, members: Sequence[str] = SEED_MEMBERS) -> None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        from mtcnn import MTCNN

        from deepguard.models.members import build_seed_member

        self.detector = MTCNN()
        self.models = [build_seed_member(a, input_size) for a in members]
        self.size = input_size

    def score_frame(self, rgb: np.ndarray) -> float | None:
        """P(fake) of the first face MTCNN finds (None without a face)."""
        faces = self.detector.detect_faces(rgb)
        if not faces:
            return None
        x, y, w, h = faces[0]["box"]
        crop = crop_faces(rgb, np.array([[x, y, x + w, y + h]], np.float32), self.size)
        batch = crop.astype(np.float32)
        logits = [float(m.predict(batch, verbose=0).reshape(-1)[0]) for m in self.models]
        return float(np.mean(0.5 * (1.0 + np.tanh(0.5 * np.asarray(logits)))))  # sigmoid, no overflow

    def run(self, frames: Iterable[np.ndarray]) -> list[float | None]:
        return [self.score_frame(f) for f in frames]

    def warm_up(self, frame: np.ndarray) -> None:
        """First calls trace TensorFlow functions (seconds); keep that out of the timings."""
        self.score_frame(frame)
        self.score_frame(frame)


__all__ = ["OriginPipeline", "SEED_MEMBERS"]
