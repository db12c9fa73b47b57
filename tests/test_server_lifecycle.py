"""Server robustness: cancellation frees queued work, deadlines, back-pressure, draining, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest

from deepguard.client import Client, ServerError
from tests.server_support import running_server, sample_frames, scrape

ROOT = Path(__file__).resolve().parent.parent


def _wait_for(pred, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def _paced(frames, delay: float, limit: int):
    for i in range(limit):
        time.sleep(delay)
        yield frames[i % len(frames)]


@pytest.fixture(scope="module")
def slow_server():
    """One frame per detector run and a deep window, so a stream's frames really queue up."""
    with running_server(detector_max_batch=1, stream_window=48, max_queue=256) as srv:
        yield srv


def test_cancel_mid_stream_drops_queued_work(slow_server, astronaut) -> None:
    port = slow_server.metrics_port
    with Client(f"127.0.0.1:{slow_server.port}") as c:
        stream = c.stream_frames(sample_frames(200)[:120])
        got = 0
        with pytest.raises(ServerError) as e:
            for _ in stream:
                got += 1
                if got == 2:
                    stream.cancel()
        assert e.value.code == grpc.StatusCode.CANCELLED and got == 2

        def settled() -> bool:
            dropped = scrape(port, "deepguard_dropped_items", stage="detector").get(
                "deepguard_dropped_items_total", 0
            )
            queue = scrape(port, "deepguard_queue_depth", stage="detector")["deepguard_queue_depth"]
            active = scrape(port, "deepguard_active_streams")["deepguard_active_streams"]
            return dropped > 0 and queue == 0 and active == 0

        assert _wait_for(settled), "cancelled stream's frames were not dropped"
        frames_done = scrape(port, "deepguard_frames")["deepguard_frames_total"]
        assert frames_done < 60  # most of the 120 frames were never computed
        assert c.analyze_image(astronaut).verdict in ("real", "uncertain", "fake")  # still serving


def test_deadline_exceeded_stream_is_dropped(slow_server) -> None:
    with Client(f"127.0.0.1:{slow_server.port}") as c:
        with pytest.raises(ServerError) as e:
            list(c.stream_frames(sample_frames(200), timeout=0.5))
        assert e.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert _wait_for(
            lambda: (
                scrape(slow_server.metrics_port, "deepguard_active_streams")["deepguard_active_streams"] == 0
            )
        )
        assert c.health() == "SERVING"


def test_full_queue_makes_the_stream_wait_not_fail() -> None:
    """A tiny --queue slows the stream down (its reads pause) instead of failing it (issue 15)."""
    with (
        running_server(detector_max_batch=1, max_queue=2, stream_window=32) as srv,
        Client(f"127.0.0.1:{srv.port}") as c,
    ):
        got = [r.frame.index for r in c.stream_frames(sample_frames(200)[:60])]
        assert got == list(range(60))  # every frame answered, in order, no RESOURCE_EXHAUSTED
        rejected = scrape(srv.metrics_port, "deepguard_rejected", stage="detector")
        assert rejected.get("deepguard_rejected_total", 0) == 0
        assert c.health() == "SERVING"


def test_stop_flushes_an_endless_stream_then_unavailable() -> None:
    with running_server(grace_s=1.0) as srv, Client(f"127.0.0.1:{srv.port}") as c:
        stream = c.stream_frames(_paced(sample_frames(200), 0.02, 2000))
        got = 0
        with pytest.raises(ServerError) as e:
            for _ in stream:
                got += 1
                if got == 3:
                    threading.Thread(target=srv.stop, args=(1.0,)).start()
        assert e.value.code == grpc.StatusCode.UNAVAILABLE and "shutting down" in e.value.details
        assert (
            stream.summary is not None and stream.summary.frames == got > 3
        )  # every accepted frame answered


def test_sigterm_drains_4_streams_in_flight(tmp_path: Path) -> None:
    """`deepguard serve` in a subprocess; SIGTERM while 4 paced streams are mid-flight; all results arrive."""
    log_path = tmp_path / "server.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "deepguard",
        "serve",
        "--port",
        "0",
        "--no-rest",
        "--no-metrics",
        "--threads",
        "1",
    ]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [*cmd, "--grace-s", "20"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:

        def serving() -> dict | None:
            for line in log_path.read_text().splitlines():
                if line.startswith("{") and json.loads(line).get("event") == "serving":
                    return json.loads(line)
            return None

        assert _wait_for(lambda: serving() is not None or proc.poll() is not None, 60), log_path.read_text()
        info = serving()
        assert info is not None, log_path.read_text()
        frames = sample_frames(200)[:30]
        results: dict[int, list] = {}
        summaries: dict[int, object] = {}
        started = [threading.Event() for _ in range(4)]
        errors: list[BaseException] = []

        def run(k: int) -> None:
            try:
                with Client(f"127.0.0.1:{info['port']}") as c:
                    stream = c.stream_frames(_paced(frames, 0.03, len(frames)))
                    results[k] = []
                    for r in stream:
                        results[k].append(r.frame.index)
                        started[k].set()
                    summaries[k] = stream.summary
            except BaseException as e:  # noqa: BLE001
                errors.append(e)
                started[k].set()

        threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        assert all(ev.wait(30) for ev in started)
        assert all(len(results[k]) < len(frames) for k in range(4)), "streams finished before SIGTERM"
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(60)
        assert not errors, errors
        for k in range(4):
            assert results[k] == list(range(30)) and summaries[k].frames == 30
        assert proc.wait(30) == 0
        events = [json.loads(x).get("event") for x in log_path.read_text().splitlines() if x.startswith("{")]
        assert "draining" in events and events[-1] == "stopped"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_stop_ends_an_idle_stream_with_its_summary() -> None:
    release = threading.Event()

    def two_then_idle():
        yield from sample_frames(200)[1:3]
        release.wait(15)  # a paused camera: the stream stays open but sends nothing

    with running_server(grace_s=1.0) as srv, Client(f"127.0.0.1:{srv.port}") as c:
        stream = c.stream_frames(two_then_idle())
        got = []
        try:
            with pytest.raises(ServerError) as e:
                for r in stream:
                    got.append(r.frame.index)
                    if len(got) == 2:
                        threading.Thread(target=srv.stop, args=(1.0,)).start()
        finally:
            release.set()
        assert e.value.code == grpc.StatusCode.UNAVAILABLE and got == [0, 1]
        assert stream.summary is not None and stream.summary.frames == 2
