"""Timing primitives that survive a noisy shared machine: interleaved rounds, per-round ratios, medians.

Why interleave: another tenant's load drifts over seconds. Timing A for ten rounds and then B for ten rounds
turns that drift into a fake speed difference; running A and B back to back inside every round (in rotating
order) exposes both to the same load, so the per-round ratio t_B / t_A is stable even when the absolute times
are not. The median over rounds then drops the rounds where a burst hit only one side.

Deliberate slowdowns for testing the gate are injected here, in the harness, never in production code:
``slow={"int8": 3.0}`` makes every timed call of the function named ``int8`` take 3x as long (it sleeps the
extra time after the call and records the stretched duration).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping


def parse_slow(text: str | None) -> dict[str, float]:
    """``"int8=3,stream=2.5"`` -> ``{"int8": 3.0, "stream": 2.5}`` (the ``DEEPGUARD_GATE_SLOW`` format)."""
    out: dict[str, float] = {}
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, factor = part.partition("=")
        if not sep:
            raise ValueError(f"slowdown {part!r}: expected NAME=FACTOR, e.g. int8=3")
        value = float(factor)
        if value < 1.0:
            raise ValueError(f"slowdown {part!r}: the factor must be >= 1")
        out[name.strip()] = value
    return out


def timed(fn: Callable[[], object], factor: float = 1.0) -> float:
    """Seconds one call of ``fn`` takes, stretched by ``factor`` (sleeping the difference) when > 1."""
    t0 = time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    if factor > 1.0:
        time.sleep(dt * (factor - 1.0))
        dt *= factor
    return dt


def interleaved(
    fns: Mapping[str, Callable[[], object]],
    rounds: int,
    *,
    warmup: int = 1,
    slow: Mapping[str, float] | None = None,
) -> dict[str, list[float]]:
    """Per-round seconds of each function, all functions run once per round in rotating order."""
    slow = slow or {}
    names = list(fns)
    for _ in range(max(0, warmup)):
        for n in names:
            fns[n]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(max(1, rounds)):
        k = r % len(names)
        for n in names[k:] + names[:k]:
            times[n].append(timed(fns[n], slow.get(n, 1.0)))
    return times


def ratios(times: Mapping[str, list[float]], slower: str, faster: str, scale: float = 1.0) -> list[float]:
    """Per-round ``scale * t[slower] / t[faster]``: how many times faster ``faster`` is, round by round."""
    return [scale * a / b for a, b in zip(times[slower], times[faster], strict=True) if b > 0]


def median(xs: list[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


__all__ = ["interleaved", "median", "parse_slow", "ratios", "timed"]
