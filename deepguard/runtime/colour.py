"""Which face crops are black and white, and the floor a model can put under their scores.

Why: a detector that learned "grey means real" (v8 did: 134 of its training faces are black-and-white photos and
every one is real) answers a confident REAL on any desaturated face, fakes included - a one-click evasion. Where a
model's REAL verdict is not trustworthy on grey faces (measured at build time on desaturated validation faces,
:func:`deepguard.convert.calibrate.grey_floor`), its metadata carries ``grey_floor`` (the uncertain band's low
edge) and the classifier raises a grey face's score to at least that: UNCERTAIN at best, never REAL, while a FAKE
stays FAKE. Sepia or tinted monochrome photos keep some chroma and are not caught by this test.
"""

from __future__ import annotations

import numpy as np

#: A crop is grey when its mean chroma, (|Cb| + |Cr|) / 2 in grey levels, is under this. On the val crops after
#: the quality-95 re-encode: desaturated faces 0.0, the real B/W photos (Unsplash, UTKFace) under 1.0, colour
#: faces 1.5 and up (0.5th percentile 1.7).
GREY_CHROMA = 1.0


def chroma(crops: np.ndarray) -> np.ndarray:
    """Mean absolute chroma (ITU-R BT.601 Cb, Cr) per RGB crop, (N, H, W, 3) -> (N,)."""
    x = np.asarray(crops, np.float32)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b
    return ((np.abs(cb) + np.abs(cr)) * 0.5).mean(axis=(1, 2))


#: Every how many pixels (each axis) the grey test samples a crop. Why: it runs on every scored face; on the whole
#: 160 px crop it cost 0.33 ms a face (12 % of the INT8 classifier), on every 4th pixel 0.05 ms, and the crop's
#: chroma is smooth (JPEG keeps it at half resolution): on the val crops the sampled mean moved by at most 0.32
#: grey levels and called the same crops grey.
GREY_STRIDE = 4


def grey_crops(crops: np.ndarray) -> np.ndarray:
    """Boolean (N,): which crops are black and white."""
    return chroma(np.asarray(crops)[:, ::GREY_STRIDE, ::GREY_STRIDE]) < GREY_CHROMA


def floor_grey(probs: np.ndarray, crops: np.ndarray, floor: float | None) -> np.ndarray:
    """``probs`` with each grey crop's score raised to at least ``floor`` (unchanged when ``floor`` is None)."""
    if floor is None or len(probs) == 0:
        return probs
    return np.where(grey_crops(crops), np.maximum(probs, np.float32(floor)), probs).astype(probs.dtype)
