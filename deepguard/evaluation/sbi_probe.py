"""Self-blend probe: how well a model separates real val faces from self-blended copies of the same faces.

Why: the hidden test sets use other datasets and other manipulation methods, which we cannot measure here. What
every face swap and most composites share is a blending boundary and a colour/texture mismatch inside the face.
Pairing each real validation face with one seeded self-blend of itself (``training/sbi.py``) isolates exactly that
evidence — identity, pose, compression and background are identical within a pair — so the AUC says whether the
model looks at blending artefacts at all, independently of DFDC's own generators. It is a proxy, not a substitute
for cross-dataset results; report it next to them, never instead of them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np


def self_blend_pairs(
    real_crops: np.ndarray, cache_dir: str | Path, key: str, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(reals with usable landmarks, one self-blend of each), deterministic for a seed."""
    from deepguard.training.landmarks import crop_landmarks
    from deepguard.training.sbi import self_blend

    real_crops = np.asarray(real_crops)
    points, prob = crop_landmarks(real_crops, cache_dir, key)
    keep = np.flatnonzero(prob >= 0.5)
    rng = np.random.default_rng(seed)
    fakes = np.stack([self_blend(real_crops[i], points[i], rng)[0] for i in keep])
    return real_crops[keep], fakes


def sbi_probe_auc(
    score: Callable[[np.ndarray], np.ndarray],
    real_crops: np.ndarray,
    cache_dir: str | Path,
    key: str,
    seed: int = 0,
) -> dict:
    """ROC-AUC of ``score`` (crops -> P(fake)) on reals vs their self-blends, plus the pair count."""
    from sklearn.metrics import roc_auc_score

    reals, fakes = self_blend_pairs(real_crops, cache_dir, key, seed)
    s = np.concatenate([score(reals), score(fakes)])
    y = np.r_[np.zeros(len(reals)), np.ones(len(fakes))]
    return {"auc": float(roc_auc_score(y, s)), "pairs": int(len(reals)), "seed": seed}
