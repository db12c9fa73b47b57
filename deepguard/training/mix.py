"""What each training batch is made of: class-balanced, and within each class balanced over sources.

The sources differ 13-fold in size (DFDC 13,098 real crops, Unsplash 501), so sampling files uniformly would teach
mostly DFDC again. The rule, fixed and stated in the model card:

- half of every batch is real; the real half is shared equally by the real sources;
- of the fake half, ``sbi_fraction`` are self-blended reals (the real crop drawn as above, so self-blends come
  from every real source); the rest is shared equally by two kinds of fake, *swap* fakes (sources that hold both
  classes, e.g. DFDC: a face swapped into a real video) and *synthetic* fakes (sources that hold only fakes, e.g.
  StyleGAN), and equally by the sources within each kind (a missing kind leaves its share to the other).

Draws are with replacement per source (each source's files are reshuffled when used up), seeded.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

#: Name of the self-blend "source" in :func:`mix_shares`.
SBI = "self-blend"


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
    pools = [Pool(f"{s} real", 0, np.flatnonzero((src == s) & (y == 0)), 0.5 / len(real)) for s in real]
    usable = np.ones(len(y), bool) if sbi_usable is None else np.asarray(sbi_usable, bool)
    sbi_src = [s for s in real if np.any((src == s) & (y == 0) & usable)]
    sbi = 0.5 * sbi_fraction if sbi_src else 0.0
    for s in sbi_src:
        idx = np.flatnonzero((src == s) & (y == 0) & usable)
        pools.append(Pool(f"{s} {SBI}", 1, idx, sbi / len(sbi_src), self_blend=True))
    swap = [s for s in fake if s in real]
    synthetic = [s for s in fake if s not in real]
    kinds = [k for k in (swap, synthetic) if k]
    for kind in kinds:
        for s in kind:
            share = (0.5 - sbi) / len(kinds) / len(kind)
            pools.append(Pool(f"{s} fake", 1, np.flatnonzero((src == s) & (y == 1)), share))
    return pools


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


__all__ = ["SBI", "Pool", "draw", "mix_pools", "mix_shares"]
