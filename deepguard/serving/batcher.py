"""Dynamic batching: requests from many callers (threads, streams) are merged into one model run.

Why: onnxruntime's cost per item falls with batch size, and a server with eight cameras should run the
detector once for eight frames rather than eight times. Each model gets one worker thread that takes the
oldest request, waits at most ``max_wait_ms`` for more (until ``max_batch`` items), runs the model once and
scatters the results back through per-request futures.

Fairness: requests carry a ``key`` (one per stream); each key has its own lane and batches are formed
round-robin over the lanes, so a stream with many frames queued cannot push a stream with one frame to the
back of a long line. Requests without a key get a lane each (first come, first served among themselves).

The queue is bounded in *items* (frames or crops, not requests) so memory is bounded: a submit that would
exceed ``max_queue`` raises :class:`Overloaded` at once instead of growing without limit, unless the caller
passes ``force=True`` because it bounds its own items upstream (the engine admits frames through a byte and
frame budget, ``deepguard.serving.flow.FrameBudget``, and waits there instead of failing). A request whose
``cancelled()`` predicate is true when its batch is formed is dropped without running (its future raises
:class:`Cancelled`), so an abandoned stream stops costing compute.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("deepguard.server.batcher")


class Overloaded(Exception):
    """The queue is full: the caller should back off (RESOURCE_EXHAUSTED)."""


class Cancelled(Exception):
    """The request was dropped because its caller went away."""


class Closed(Exception):
    """The batcher is shut down and takes no new work."""


@dataclass
class _Request:
    items: Sequence[Any]
    future: Future
    cancelled: Callable[[], bool] | None
    enqueued: float = field(default_factory=time.monotonic)


class BatchObserver:
    """Hooks for metrics; the default does nothing so the batcher works without Prometheus."""

    def batch(self, name: str, size: int, seconds: float) -> None: ...

    def queue_depth(self, name: str, items: int) -> None: ...

    def dropped(self, name: str, items: int) -> None: ...

    def rejected(self, name: str) -> None: ...


class DynamicBatcher:
    """``workers`` threads (default one) in front of ``run(items) -> results`` (a list, one result per item, same
    order). With more than one, batches run concurrently, so ``run`` must be safe to call from several threads.

    ``submit(items)`` returns a Future whose result is the list of results for exactly those items.
    """

    def __init__(
        self,
        name: str,
        run: Callable[[list[Any]], Sequence[Any]],
        *,
        max_batch: int = 16,
        max_wait_ms: float = 5.0,
        max_queue: int = 256,
        observer: BatchObserver | None = None,
        workers: int = 1,
    ) -> None:
        if max_batch < 1 or max_queue < 1 or max_wait_ms < 0 or workers < 1:
            raise ValueError("max_batch, max_queue and workers must be >= 1 and max_wait_ms >= 0")
        self.name = name
        self._run = run
        self.max_batch = int(max_batch)
        self.max_wait = float(max_wait_ms) / 1000.0
        self.max_queue = int(max_queue)
        self._obs = observer or BatchObserver()
        self._lanes: OrderedDict[object, deque[_Request]] = OrderedDict()  # round-robin order
        self._queued_items = 0
        self._cond = threading.Condition()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._loop, name=f"batcher-{name}" + (f"-{i}" if i else ""), daemon=True)
            for i in range(workers)
        ]
        for t in self._threads:
            t.start()

    # -- callers -------------------------------------------------------------------------------------------
    def submit(
        self,
        items: Sequence[Any],
        cancelled: Callable[[], bool] | None = None,
        *,
        key: object | None = None,
        force: bool = False,
    ) -> Future:
        """Queue ``items`` as one request in lane ``key``; Overloaded when the queue is full, Closed after close().

        ``force``: admit even over ``max_queue`` (the caller bounds its items itself and must not be refused).
        """
        fut: Future = Future()
        n = len(items)
        if n == 0:
            fut.set_result([])
            return fut
        with self._cond:
            if self._closed:
                raise Closed(f"{self.name}: server is shutting down")
            # A request larger than the whole queue is still admitted into an empty queue, so one frame with
            # many faces can never be refused forever.
            if not force and self._queued_items and self._queued_items + n > self.max_queue:
                self._obs.rejected(self.name)
                raise Overloaded(
                    f"server busy: {self.name} queue is full ({self._queued_items} of {self.max_queue} "
                    "items); retry later"
                )
            req = _Request(list(items), fut, cancelled)
            self._lanes.setdefault(object() if key is None else key, deque()).append(req)
            self._queued_items += n
            self._obs.queue_depth(self.name, self._queued_items)
            self._cond.notify()
        return fut

    def close(self, timeout: float | None = 10.0) -> None:
        """Stop taking work, finish what is queued, stop the workers."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        end = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            t.join(None if end is None else max(0.0, end - time.monotonic()))

    # -- worker ----------------------------------------------------------------------------------------------
    def _peek(self) -> _Request:
        return next(iter(self._lanes.values()))[0]

    def _pop(self) -> _Request:
        """The head of the first lane; that lane goes to the back (round-robin), or away when empty."""
        key, lane = next(iter(self._lanes.items()))
        req = lane.popleft()
        if lane:
            self._lanes.move_to_end(key)
        else:
            del self._lanes[key]
        return req

    def _take_batch(self) -> list[_Request] | None:
        with self._cond:
            while not self._lanes:
                if self._closed:
                    return None
                self._cond.wait()
            batch = [self._pop()]
            n = len(batch[0].items)
            deadline = time.monotonic() + self.max_wait
            while n < self.max_batch:
                if self._lanes:
                    if n + len(self._peek().items) > self.max_batch:
                        break
                    req = self._pop()
                    batch.append(req)
                    n += len(req.items)
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    break
                self._cond.wait(remaining)
            self._queued_items -= n
            self._obs.queue_depth(self.name, self._queued_items)
        return batch

    def _loop(self) -> None:
        while (batch := self._take_batch()) is not None:
            live = []
            for req in batch:
                if req.cancelled is not None and _safe_call(req.cancelled):
                    self._obs.dropped(self.name, len(req.items))
                    req.future.set_exception(Cancelled(f"{self.name}: caller cancelled"))
                elif req.future.set_running_or_notify_cancel():
                    live.append(req)
            if live:
                self._execute(live)

    def _execute(self, reqs: list[_Request]) -> None:
        items = [x for r in reqs for x in r.items]
        t0 = time.perf_counter()
        try:
            results = self._run(items)
            if len(results) != len(items):
                raise RuntimeError(f"{self.name}: run returned {len(results)} results for {len(items)} items")
        except Exception as e:  # noqa: BLE001
            if len(reqs) == 1:
                reqs[0].future.set_exception(e)
                return
            # One bad request must not fail the others that happened to share its batch: retry one by one.
            log.warning("%s: batch of %d failed (%s); retrying requests one by one", self.name, len(items), e)
            for r in reqs:
                self._execute([r])
            return
        self._obs.batch(self.name, len(items), time.perf_counter() - t0)
        k = 0
        for r in reqs:
            n = len(r.items)
            r.future.set_result(list(results[k : k + n]))
            k += n


def _safe_call(fn: Callable[[], bool]) -> bool:
    try:
        return bool(fn())
    except Exception:  # noqa: BLE001 - a broken predicate must not kill the worker
        return False
