"""Issue 15: flow control instead of failures, fairness across streams, live mode, bounded memory.

Unit tests drive the real batcher / budget / stream window with a controllable model function; the server
tests use a real server on loopback. Nothing here asserts a tight wall time: bounds are generous and only
prove liveness (no stream is starved or slowed without bound); the numbers are in benchmarks/.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future

import grpc
import numpy as np
import pytest

from deepguard.runtime.types import Frame
from deepguard.serving.batcher import Cancelled, DynamicBatcher
from deepguard.serving.flow import FrameBudget, StreamFlow


def _wait_for(pred, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return False


# ------------------------------------------------------------------------------------- batcher fairness


def test_batcher_round_robin_across_stream_keys() -> None:
    """A stream with 12 queued frames must not push a stream with 1 frame behind all of them."""
    gate = threading.Event()
    batches: list[list[str]] = []

    def run(items: list[str]) -> list[str]:
        gate.wait(5)
        batches.append(list(items))
        return items

    b = DynamicBatcher("t", run, max_batch=2, max_wait_ms=0, max_queue=100)
    try:
        first = b.submit(["warm"])  # holds the worker at the gate while the others queue
        time.sleep(0.05)
        heavy = [b.submit([f"a{i}"], key="A") for i in range(12)]
        light = b.submit(["b0"], key="B")
        gate.set()
        assert first.result(5) == ["warm"] and light.result(5) == ["b0"]
        assert [f.result(5) for f in heavy] == [[f"a{i}"] for i in range(12)]  # order within a lane kept
        position = next(i for i, batch in enumerate(batches) if "b0" in batch)
        assert position <= 1, batches  # served in the first batch after the gate, not the seventh
    finally:
        gate.set()
        b.close()


def test_batcher_force_admits_over_the_queue_limit() -> None:
    gate = threading.Event()
    b = DynamicBatcher("t", lambda xs: (gate.wait(5), xs)[1], max_batch=1, max_wait_ms=0, max_queue=1)
    try:
        futs = [b.submit([i], force=True) for i in range(5)]
        gate.set()
        assert [f.result(5) for f in futs] == [[i] for i in range(5)]
    finally:
        gate.set()
        b.close()


# ------------------------------------------------------------------------------------------ frame budget


def test_frame_budget_is_first_come_first_served() -> None:
    budget = FrameBudget(max_bytes=100, max_items=10)
    budget.acquire(60)
    order: list[str] = []

    def take(name: str, n: int) -> None:
        budget.acquire(n)
        order.append(name)

    big = threading.Thread(target=take, args=("big", 60))
    big.start()
    assert _wait_for(lambda: len(budget._turns) == 1)
    small = threading.Thread(target=take, args=("small", 10))  # would fit now, but it is not its turn
    small.start()
    time.sleep(0.3)
    assert order == []  # the small frame did not overtake the big one that waits for room
    budget.release(60)
    big.join(5)
    small.join(5)
    assert order == ["big", "small"] and budget.bytes == 70 and budget.items == 2


def test_frame_budget_admits_an_oversized_frame_alone_and_honours_cancel() -> None:
    budget = FrameBudget(max_bytes=10, max_items=1)
    budget.acquire(1000)  # larger than the whole budget, but nothing else is held
    gone = threading.Event()
    threading.Timer(0.3, gone.set).start()
    with pytest.raises(Cancelled):
        budget.acquire(1, gone.is_set)
    budget.release(1000)
    assert budget.bytes == 0 and budget.items == 0 and not budget._turns


# ------------------------------------------------------------------------------------ stream window, live


class Engine:
    """The engine boundary of a StreamFlow: frames are 'analysed' when the test resolves their futures."""

    def __init__(self) -> None:
        self.submitted: list[tuple[int, Future]] = []
        self.lock = threading.Lock()

    def submit(self, frame: Frame) -> Future:
        fut: Future = Future()
        with self.lock:
            self.submitted.append((frame.index, fut))
        return fut

    def finish(self, index: int) -> None:
        with self.lock:
            fut = next(f for i, f in self.submitted if i == index)
        fut.set_result(f"out{index}")


def _frame(i: int, nbytes: int = 100) -> Frame:
    return Frame(np.zeros(nbytes, np.uint8), i)


def _flow(engine: Engine, budget: FrameBudget, **kw) -> StreamFlow:
    opts = {"window": 4, "max_bytes": 10_000, "live_window": 2, "backlog": 64, **kw}
    return StreamFlow(engine.submit, budget, **opts)


def test_window_full_pauses_reading_until_an_answer_is_taken() -> None:
    engine, budget = Engine(), FrameBudget(10**6, 100)
    flow = _flow(engine, budget, window=3)
    never = lambda: False  # noqa: E731
    for i in range(3):
        assert flow.wait_for_room(never)
        flow.add(_frame(i), False, never)
    room = threading.Event()
    t = threading.Thread(target=lambda: flow.wait_for_room(never) and room.set())
    t.start()
    time.sleep(0.3)
    assert not room.is_set()  # window of 3 full: the reader does not read the 4th message
    engine.finish(0)
    assert budget.bytes == 200  # the analysed frame's bytes are back at once
    time.sleep(0.3)
    assert not room.is_set()  # ...but its window slot only when its answer is taken
    assert flow.next_answer(never, lambda: None).index == 0
    t.join(5)
    assert room.is_set()
    flow.close()


def test_live_mode_skips_the_older_waiting_frame_and_answers_in_order() -> None:
    engine, budget = Engine(), FrameBudget(10**6, 100)
    flow = _flow(engine, budget, live_window=2)
    never = lambda: False  # noqa: E731
    for i in range(6):  # 0 and 1 go to analysis; 2..5 each replace the one waiting
        flow.add(_frame(i), True, never)
    assert [i for i, _ in engine.submitted] == [0, 1] and flow.skipped == 3
    assert budget.bytes == 300  # 0, 1 and the newest (5); skipped frames hold nothing
    engine.finish(0)  # a compute slot frees: the newest frame starts
    assert [i for i, _ in engine.submitted] == [0, 1, 5]
    engine.finish(1)
    engine.finish(5)
    answers = [flow.next_answer(never, lambda: None) for _ in range(6)]
    assert [a.index for a in answers] == list(range(6))
    assert [a.skipped for a in answers] == [False, False, True, True, True, False]
    assert [a.future.result() for a in answers if not a.skipped] == ["out0", "out1", "out5"]
    assert budget.bytes == 0 and budget.items == 0
    flow.close()


def test_lossless_is_the_default_and_never_skips() -> None:
    engine, budget = Engine(), FrameBudget(10**6, 100)
    flow = _flow(engine, budget, window=8)
    never = lambda: False  # noqa: E731
    for i in range(6):
        flow.add(_frame(i), False, never)
    assert [i for i, _ in engine.submitted] == list(range(6)) and flow.skipped == 0
    flow.close()


def test_stream_byte_budget_pauses_and_close_returns_everything() -> None:
    engine, budget = Engine(), FrameBudget(10**6, 100)
    flow = _flow(engine, budget, window=8, max_bytes=250)
    never = lambda: False  # noqa: E731
    flow.add(_frame(0), False, never)
    flow.add(_frame(1), False, never)
    added = threading.Event()
    t = threading.Thread(target=lambda: (flow.add(_frame(2), False, never), added.set()))
    t.start()
    time.sleep(0.3)
    assert not added.is_set() and flow.queued_bytes == 200  # 300 > 250: the third frame waits
    engine.finish(0)
    t.join(5)
    assert added.is_set() and flow.queued_bytes == 200
    live = _flow(engine, budget, live_window=1)
    live.add(_frame(10), True, never)
    live.add(_frame(11), True, never)  # waits for the slot frame 10 holds
    live.close()  # the waiting frame never started: its bytes go back
    engine.finish(10)
    flow.close()
    engine.finish(1)
    engine.finish(2)
    assert budget.bytes == 0 and budget.items == 0


def test_grpc_status_for_too_many_streams() -> None:
    from deepguard.serving.service import TooManyStreams, status_for

    code, msg = status_for(TooManyStreams("server busy: 2 streams already open (--max-streams 2)"))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "max-streams" in msg
