"""Prometheus metrics for the server, on a registry of its own.

Why a private registry: several servers can live in one process (tests, an embedding application) and the
global default registry would refuse the second set of metric names.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from deepguard.serving.batcher import BatchObserver

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics(BatchObserver):
    """Every metric the server exports; also the batchers' observer."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "deepguard_requests",
            "Finished RPCs / HTTP requests by method and status code",
            ["method", "code"],
            registry=r,
        )
        self.request_latency = Histogram(
            "deepguard_request_latency_seconds",
            "Wall time of a whole RPC / HTTP request",
            ["method"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.frame_latency = Histogram(
            "deepguard_frame_latency_seconds",
            "From a frame entering the pipeline (decoded) to its result being ready",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.frames = Counter("deepguard_frames", "Frames scored", registry=r)
        self.faces = Counter("deepguard_faces", "Faces scored", registry=r)
        self.batch_size = Histogram(
            "deepguard_batch_size", "Items per model run", ["stage"], buckets=_BATCH_BUCKETS, registry=r
        )
        self.batch_latency = Histogram(
            "deepguard_batch_latency_seconds",
            "Model run time per batch",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue = Gauge("deepguard_queue_depth", "Items waiting for a model run", ["stage"], registry=r)
        self.dropped_items = Counter(
            "deepguard_dropped_items",
            "Queued items dropped because their caller cancelled",
            ["stage"],
            registry=r,
        )
        self.rejected_total = Counter(
            "deepguard_rejected", "Requests refused because a queue was full", ["stage"], registry=r
        )
        self.active_streams = Gauge("deepguard_active_streams", "Open StreamFrames calls", registry=r)

    # -- BatchObserver -----------------------------------------------------------------------------------------
    def batch(self, name: str, size: int, seconds: float) -> None:
        self.batch_size.labels(name).observe(size)
        self.batch_latency.labels(name).observe(seconds)

    def queue_depth(self, name: str, items: int) -> None:
        self.queue.labels(name).set(items)

    def dropped(self, name: str, items: int) -> None:
        self.dropped_items.labels(name).inc(items)

    def rejected(self, name: str) -> None:
        self.rejected_total.labels(name).inc()
