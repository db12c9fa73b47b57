"""Per-request time budget: one analysis must not hold the shared models for longer than the server allows.

Why: a client deadline only exists when the client sets one, REST clients cannot set one, and a request
nobody waits for any more should stop costing CPU. A :class:`Budget` is a cancellation predicate (what the
engine and the detector already check between batches and detector chunks) that also turns true when the
server's ``--request-budget-s`` has passed; :meth:`Budget.explain` turns the resulting ``Cancelled`` into
:class:`OverBudget` so the caller learns why (gRPC ``DEADLINE_EXCEEDED``, HTTP 503).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from deepguard.serving.batcher import Cancelled


class OverBudget(Exception):
    """The analysis ran past the server's per-request budget and was stopped."""


class Budget:
    """``budget()`` is true once ``seconds`` have passed or ``gone()`` (the caller left) is true."""

    def __init__(self, seconds: float, gone: Callable[[], bool] | None = None) -> None:
        self.seconds = float(seconds)
        self.end = time.monotonic() + self.seconds
        self.gone = gone

    def expired(self) -> bool:
        return time.monotonic() >= self.end

    def __call__(self) -> bool:
        return self.expired() or (self.gone is not None and bool(self.gone()))

    def explain(self, e: Cancelled, name: str) -> BaseException:
        """The exception to raise for ``e``: OverBudget when the budget ran out, else ``e`` itself."""
        if self.expired() and not (self.gone is not None and self.gone()):
            return OverBudget(
                f"{name}: analysis stopped after the server's per-request budget of {self.seconds:g} s"
            )
        return e
