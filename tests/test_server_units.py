"""Server building blocks without a server: the batcher, the running verdict, wire decoding, generated code."""

from __future__ import annotations

import filecmp
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from deepguard.errors import MediaError
from deepguard.proto import deepguard_pb2 as pb
from deepguard.runtime import aggregate
from deepguard.serving import wire
from deepguard.serving.batcher import Cancelled, DynamicBatcher, Overloaded


class Recorder:
    def __init__(self, delay: float = 0.0, fail_on=None) -> None:
        self.batches: list[list] = []
        self.delay, self.fail_on = delay, fail_on

    def __call__(self, items: list) -> list:
        if self.fail_on is not None and self.fail_on in items:
            raise ValueError("bad item")
        self.batches.append(list(items))
        time.sleep(self.delay)
        return [x * 10 for x in items]


def test_batcher_merges_callers_and_scatters_results() -> None:
    run = Recorder(delay=0.05)
    b = DynamicBatcher("t", run, max_batch=8, max_wait_ms=0, max_queue=100)
    try:
        first = b.submit([0])  # occupies the worker while the others queue up
        time.sleep(0.01)
        futs = [b.submit([i, i + 100]) for i in range(1, 5)]
        assert first.result(5) == [0]
        assert [f.result(5) for f in futs] == [[i * 10, (i + 100) * 10] for i in range(1, 5)]
        assert max(len(x) for x in run.batches) == 8  # four callers' items in one run
    finally:
        b.close()


def test_batcher_waits_up_to_max_wait_for_a_fuller_batch() -> None:
    run = Recorder()
    b = DynamicBatcher("t", run, max_batch=4, max_wait_ms=300, max_queue=100)
    try:
        first = b.submit([1])
        time.sleep(0.05)  # well inside the wait window
        second = b.submit([2])
        assert first.result(5) == [10] and second.result(5) == [20]
        assert run.batches == [[1, 2]]
    finally:
        b.close()


def test_batcher_workers_run_batches_at_once_and_all_stop_on_close() -> None:
    """Two workers: a second request runs while the first is still inside ``run`` (one worker would deadlock
    here: the first batch waits for the second to start), and close() ends both threads."""
    inside = threading.Barrier(2, timeout=5)

    def run(items: list) -> list:
        inside.wait()  # both batches must be inside run at the same time
        return [x + 1 for x in items]

    b = DynamicBatcher("t", run, max_batch=1, max_wait_ms=0, max_queue=10, workers=2)
    try:
        f1, f2 = b.submit([1]), b.submit([2])
        assert f1.result(5) == [2] and f2.result(5) == [3]
    finally:
        b.close()
    assert not any(t.is_alive() for t in b._threads) and len(b._threads) == 2
    with pytest.raises(ValueError, match="workers"):
        DynamicBatcher("t", run, workers=0)


def test_engine_runs_two_detector_workers_for_blazeface() -> None:
    from deepguard.runtime.facedet.scrfd import ScrfdDetector
    from deepguard.runtime.pipeline import Detector
    from deepguard.serving.config import ServerConfig
    from deepguard.serving.engine import DETECTOR_WORKERS, Engine

    engine = Engine(Detector(), ServerConfig())
    try:
        assert len(engine.det_batcher._threads) == DETECTOR_WORKERS == 2
        assert len(engine.cls_batcher._threads) == 1
    finally:
        engine.close()
    assert not getattr(ScrfdDetector, "thread_safe", False)  # insightface's detector keeps one worker


def test_batcher_bounded_queue_and_oversized_request() -> None:
    gate = threading.Event()
    b = DynamicBatcher("t", lambda xs: (gate.wait(5), xs)[1], max_batch=1, max_wait_ms=0, max_queue=3)
    try:
        running = b.submit([1])
        time.sleep(0.05)  # the worker holds item 1; the queue is empty again
        queued = [b.submit([2]), b.submit([3]), b.submit([4])]
        with pytest.raises(Overloaded, match="queue is full"):
            b.submit([5])
        gate.set()
        assert running.result(5) == [1] and [f.result(5) for f in queued] == [[2], [3], [4]]
        assert b.submit(list(range(10))).result(5) == list(
            range(10)
        )  # larger than the queue, but it is empty
    finally:
        gate.set()
        b.close()


def test_batcher_drops_cancelled_and_isolates_failures() -> None:
    run = Recorder(delay=0.05, fail_on=-1)
    b = DynamicBatcher("t", run, max_batch=4, max_wait_ms=0, max_queue=100)
    try:
        gone = threading.Event()
        busy = b.submit([1])
        time.sleep(0.01)
        dropped = b.submit([2, 3], cancelled=gone.is_set)
        gone.set()
        with pytest.raises(Cancelled):
            dropped.result(5)
        assert busy.result(5) == [10]
        assert all(2 not in batch for batch in run.batches)  # never computed
        blocker = b.submit([7])
        time.sleep(0.01)
        bad, good = b.submit([-1]), b.submit([5])  # same batch; the bad one must not fail the good one
        assert blocker.result(5) == [70] and good.result(5) == [50]
        with pytest.raises(ValueError):
            bad.result(5)
    finally:
        b.close()


def test_running_score_equals_video_score() -> None:
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(1, 40))
        scores = [
            None
            if rng.random() < 0.2
            else float(rng.choice([rng.random(), rng.random() * 0.2, 0.8 + rng.random() * 0.2]))
            for _ in range(n)
        ]
        r = aggregate.RunningScore()
        for s in scores:
            r.add(s)
        want = aggregate.video_score(scores)
        assert (r.score is None) == (want is None)
        if want is not None:
            assert r.score == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize(
    ("order", "channels", "convert"),
    [
        (pb.COLOR_ORDER_RGB, 3, lambda a: a),
        (pb.COLOR_ORDER_BGR, 3, lambda a: a[:, :, ::-1]),
        (pb.COLOR_ORDER_RGBA, 4, lambda a: a[:, :, :3]),
        (pb.COLOR_ORDER_BGRA, 4, lambda a: a[:, :, 2::-1]),
        (pb.COLOR_ORDER_GRAY, 1, lambda a: np.repeat(a, 3, axis=2)),
    ],
)
def test_raw_colour_orders(order: int, channels: int, convert) -> None:
    a = np.random.default_rng(1).integers(0, 256, (5, 7, channels), dtype=np.uint8)
    raw = pb.RawImage(height=5, width=7, channels=channels, color_order=order, pixels=a.tobytes())
    np.testing.assert_array_equal(wire.raw_to_rgb(raw, "f", 10**6), convert(a))
    raw.channels = 0  # implied by the colour order
    assert wire.raw_to_rgb(raw, "f", 10**6).shape == (5, 7, 3)


def test_pixel_limit_checked_before_size() -> None:
    raw = pb.RawImage(height=100_000, width=100_000, channels=3, color_order=1, pixels=b"")
    with pytest.raises(MediaError, match="f: 100000x100000 = 10000.0 MP exceeds"):
        wire.raw_to_rgb(raw, "f", 10**6)


def test_sanitize_name() -> None:
    assert wire.sanitize_name("a\x00b\nc.jpg", "x") == "abc.jpg"
    assert wire.sanitize_name("", "<upload>") == "<upload>" and len(wire.sanitize_name("y" * 999, "x")) == 200


def test_generated_protobuf_code_is_current(tmp_path: Path) -> None:
    """Regenerate into a temp dir; fails when deepguard.proto changed without `python -m deepguard.proto.build`."""
    pytest.importorskip("grpc_tools")
    import subprocess
    import sys

    from deepguard.proto import build

    # In a child process: protoc's C++ runtime crashes when TensorFlow/torch (loaded by other tests) share it.
    subprocess.run(
        [sys.executable, "-m", "deepguard.proto.build", "--out", str(tmp_path)],
        check=True,
        capture_output=True,
        cwd=build.ROOT,
    )
    for fresh in [tmp_path / "deepguard" / "proto" / name for name in build.GENERATED]:
        committed = build.PROTO_DIR / fresh.name
        assert committed.is_file(), f"{committed} missing: run python -m deepguard.proto.build"
        assert filecmp.cmp(fresh, committed, shallow=False), (
            f"{committed.name} is stale: run python -m deepguard.proto.build (with the grpcio-tools pinned in the dev extra)"
        )
