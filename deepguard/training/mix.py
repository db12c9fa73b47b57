"""What each training batch is made of: class-balanced, and within each class shared over sources by size^0.5.

The sources differ 26-fold in size (DFDC 13,098 real crops, Unsplash 501), so sampling files uniformly would teach
mostly DFDC again; sharing equally (v7) gave DFDC, the one source of face *swaps*, 1.5-2.3 passes in the whole budget
while Unsplash was seen 60 times, and DFDC AUC stayed at 0.79. The rule, fixed and stated in the model card, is the
temperature sampling of multi-source training: a group's share is split over its members in proportion to the
square root of their sizes (:data:`SIZE_POWER`), so big sources weigh more but the small ones are not drowned:

- half of every batch is real, shared by the real sources;
- of the fake half, ``sbi_fraction`` are self-blended reals (the real crop drawn as above, so self-blends come
  from every real source); the rest is shared by two kinds of fake, *swap* fakes (sources that hold both
  classes, e.g. DFDC: a face swapped into a real video) and *synthetic* fakes (sources that hold only fakes, e.g.
  StyleGAN), by the kinds' total sizes and then by the sources within each kind (a missing kind leaves its
  share to the other).

Draws are with replacement per source (each source's files are reshuffled when used up), seeded.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

#: Name of the self-blend "source" in :func:`mix_shares`.
SBI = "self-blend"
#: Exponent of the size weighting: shares within a group go as size**SIZE_POWER (0 would share equally).
SIZE_POWER = 0.5


@dataclass(frozen=True)
class Pool:
    """One entry of the mix: the indices it draws from, its share of the batch, and whether it self-blends."""

    name: str
    label: int
    indices: np.ndarray
    share: float
    self_blend: bool = False


def mix_pools(
    labels: np.ndarray,
    sources: Sequence[str] | None,
    sbi_fraction: float = 0.0,
    sbi_usable: np.ndarray | None = None,
) -> list[Pool]:
    """The pools of the rule in the module docstring (shares sum to 1); ``sbi_usable`` marks crops with a mesh."""
    y = np.asarray(labels).astype(int).reshape(-1)
    src = np.asarray(sources if sources is not None else ["all"] * len(y))
    names = sorted(set(src.tolist()))
    real = [s for s in names if np.any((src == s) & (y == 0))]
    fake = [s for s in names if np.any((src == s) & (y == 1))]
    if not real or not fake:
        raise ValueError("training needs real and fake faces")
    real_idx = {s: np.flatnonzero((src == s) & (y == 0)) for s in real}
    pools = [Pool(f"{s} real", 0, real_idx[s], w) for s, w in _split(0.5, real_idx).items()]
    usable = np.ones(len(y), bool) if sbi_usable is None else np.asarray(sbi_usable, bool)
    sbi_idx = {s: idx[usable[idx]] for s, idx in real_idx.items() if usable[idx].any()}
    sbi = 0.5 * sbi_fraction if sbi_idx else 0.0
    pools += [Pool(f"{s} {SBI}", 1, sbi_idx[s], w, self_blend=True) for s, w in _split(sbi, sbi_idx).items()]
    fake_idx = {s: np.flatnonzero((src == s) & (y == 1)) for s in fake}
    kinds = {"swap": [s for s in fake if s in real], "synthetic": [s for s in fake if s not in real]}
    kind_idx = {k: np.concatenate([fake_idx[s] for s in m]) for k, m in kinds.items() if m}
    for kind, kind_share in _split(0.5 - sbi, kind_idx).items():
        members = {s: fake_idx[s] for s in kinds[kind]}
        pools += [Pool(f"{s} fake", 1, members[s], w) for s, w in _split(kind_share, members).items()]
    return pools


def _split(total: float, groups: dict[str, np.ndarray]) -> dict[str, float]:
    """``total`` shared over ``groups`` (name -> indices) in proportion to size**SIZE_POWER."""
    w = {k: len(v) ** SIZE_POWER for k, v in groups.items()}
    return {k: total * v / sum(w.values()) for k, v in w.items()}


def mix_shares(pools: Sequence[Pool]) -> dict[str, float]:
    """``{pool name: share of a batch}``, for the model card."""
    return {p.name: round(p.share, 4) for p in pools}


def draw(pools: Sequence[Pool], seed: int) -> Iterator[tuple[int, bool]]:
    """Endless ``(crop index, self_blend)`` draws following the pools' shares."""
    rng = np.random.default_rng(seed)
    shares = np.array([p.share for p in pools], np.float64)
    shares /= shares.sum()
    order = [rng.permutation(p.indices) for p in pools]
    pos = [0] * len(pools)
    while True:
        k = int(rng.choice(len(pools), p=shares))
        if pos[k] >= len(order[k]):
            order[k], pos[k] = rng.permutation(pools[k].indices), 0
        yield int(order[k][pos[k]]), pools[k].self_blend
        pos[k] += 1


__all__ = ["SBI", "SIZE_POWER", "Pool", "draw", "mix_pools", "mix_shares"]
