"""Server throughput and latency vs the in-process runtime: ``pytest benchmarks/test_bench_server.py -s``.

* in-process: ``Detector.iter_frames`` over N frames (chunks of 8, one thread) - the baseline;
* 1 stream: the same N frames as one gRPC stream (raw RGB) through a loopback server;
* 16 streams, flood: 16 concurrent streams sending as fast as flow control allows - aggregate throughput;
* 16 streams, lock-step: 16 clients that each send a frame and wait for its result before the next one -
  the per-frame latency an interactive client sees while 15 others load the server (p50 / p99).

Frames are 640x360 with one face; the server uses the shared Detector, so both sides run the same sessions.
Set DEEPGUARD_THREADS to pin onnxruntime's intra-op threads (default: one per core).
"""

from __future__ import annotations

import statistics
import threading
import time

import numpy as np
import pytest

from deepguard.client import Client
from deepguard.runtime.pipeline import Detector
from deepguard.server import Server
from deepguard.serving.config import ServerConfig

N = 96
STREAMS = 16
LOCKSTEP_FRAMES = 8


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    skdata = pytest.importorskip("skimage.data")
    from tests.conftest import moving_face_frames

    return moving_face_frames(skdata.astronaut()[0:260, 120:360], N, size=(640, 360))


@pytest.fixture(scope="module")
def det() -> Detector:
    d = Detector()
    _ = d.face_detector
    return d


@pytest.fixture(scope="module")
def client(det):
    srv = Server(ServerConfig(port=0, rest_port=None, metrics_port=None), det).start()
    with Client(f"127.0.0.1:{srv.port}") as c:
        yield c
    srv.stop(2)


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1e3, q))


def _report(benchmark, name: str, frames: int, seconds: float, lat: list[float] | None = None) -> None:
    benchmark.extra_info["frames_per_s"] = round(frames / seconds, 1)
    line = f"\n[bench] {name}: {frames / seconds:.1f} frames/s"
    if lat:
        p50, p99 = _pct(lat, 50), _pct(lat, 99)
        benchmark.extra_info.update(p50_ms=round(p50, 1), p99_ms=round(p99, 1))
        line += f", latency p50 {p50:.0f} ms, p99 {p99:.0f} ms (n={len(lat)})"
    print(line)


def test_in_process(benchmark, det, frames) -> None:
    list(det.iter_frames(frames[:8]))  # warm-up
    benchmark.pedantic(lambda: list(det.iter_frames(frames)), rounds=2, iterations=1)
    _report(benchmark, "in-process", N, benchmark.stats.stats.mean)


def test_one_stream(benchmark, client, frames) -> None:
    list(client.stream_frames(frames[:8]))
    benchmark.pedantic(lambda: list(client.stream_frames(frames)), rounds=2, iterations=1)
    _report(benchmark, "server, 1 stream", N, benchmark.stats.stats.mean)


def _timed_stream(client: Client, frames: list[np.ndarray], lat: list[float], lockstep: bool) -> None:
    sent: list[float] = []
    got = threading.Semaphore(0)

    def gen():
        for f in frames:
            if lockstep and sent:
                got.acquire()
            sent.append(time.perf_counter())
            yield f

    for i, _ in enumerate(client.stream_frames(gen())):
        lat.append(time.perf_counter() - sent[i])
        got.release()


def _run_streams(
    client: Client, per_stream: list[list[np.ndarray]], lockstep: bool
) -> tuple[float, list[float]]:
    lat: list[float] = []
    threads = [threading.Thread(target=_timed_stream, args=(client, fs, lat, lockstep)) for fs in per_stream]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0, lat


def test_16_streams_flood(benchmark, client, frames) -> None:
    per = [frames[k::STREAMS] for k in range(STREAMS)]  # 6 frames each, 96 in all
    lat_all: list[float] = []

    def run():
        dt, lat = _run_streams(client, per, lockstep=False)
        lat_all.extend(lat)
        return dt

    benchmark.pedantic(run, rounds=2, iterations=1)
    _report(benchmark, f"server, {STREAMS} streams flood", N, benchmark.stats.stats.mean, lat_all)


def test_16_streams_lockstep_latency(benchmark, client, frames) -> None:
    per = [frames[k * LOCKSTEP_FRAMES : (k + 1) * LOCKSTEP_FRAMES] for k in range(STREAMS)][
        : N // LOCKSTEP_FRAMES
    ]
    per = (per * (STREAMS // len(per) + 1))[:STREAMS]
    lat_all: list[float] = []

    def run():
        dt, lat = _run_streams(client, per, lockstep=True)
        lat_all.extend(lat)
        return dt

    benchmark.pedantic(run, rounds=2, iterations=1)
    _report(
        benchmark,
        f"server, {STREAMS} streams lock-step",
        STREAMS * LOCKSTEP_FRAMES,
        benchmark.stats.stats.mean,
        lat_all,
    )
    assert statistics.median(lat_all) > 0


def test_interleaved_ratio(benchmark, perf, det, client, frames) -> None:
    """The shared CPU drifts between tests: alternate the three modes and compare medians of the same rounds."""
    per = [frames[k::STREAMS] for k in range(STREAMS)]
    modes = {
        "in-process": lambda: list(det.iter_frames(frames)),
        "1 stream": lambda: list(client.stream_frames(frames)),
        f"{STREAMS} streams": lambda: _run_streams(client, per, lockstep=False),
    }
    times: dict[str, list[float]] = {m: [] for m in modes}

    def rounds() -> None:
        for _ in range(3):
            for m, fn in modes.items():
                t0 = time.perf_counter()
                fn()
                times[m].append(time.perf_counter() - t0)

    benchmark.pedantic(rounds, rounds=1, iterations=1)
    fps = {m: N / statistics.median(ts) for m, ts in times.items()}
    base = fps["in-process"]
    benchmark.extra_info.update({f"{m} frames/s": round(v, 1) for m, v in fps.items()})
    for m, v in fps.items():
        perf.add(
            "server (640x360, 1 face)", f"{m} (interleaved)", v, "frames/s", f"{v / base:.2f}x in-process"
        )
    print(
        "\n[bench] interleaved medians: "
        + ", ".join(f"{m} {v:.1f} frames/s ({v / base:.2f}x)" for m, v in fps.items())
    )
