"""``deepguard serve``: the gRPC streaming server (+ origin REST API and Prometheus metrics) in one process.

    python -m deepguard serve --port 50051 --rest-port 8000 --metrics-port 9464

One :class:`~deepguard.serving.engine.Engine` (the models behind two shared dynamic batchers) serves every
front-end, so frames from gRPC streams, video uploads and REST requests are batched together. See
docs/server.md for the protocol, limits, status codes and security rules.

Lifecycle: ``Server(config, detector).start()`` binds everything (port 0 = pick a free port; the bound ports
are on the instance and in the ``serving`` log line); ``stop(grace)`` - also what SIGTERM/SIGINT trigger -
marks health NOT_SERVING, refuses new calls, keeps reading open streams for half the grace period, delivers
every accepted frame's result, and only then closes the models. For the first ``DRAIN_NOTICE_S`` of the drain
the port stays open: health answers NOT_SERVING (and tells its watchers) and new calls are refused with
UNAVAILABLE, so clients balancing over replicas move new streams elsewhere while open ones finish.
"""

from __future__ import annotations

import argparse
import logging
import math
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from deepguard.serving.config import ConfigError, MiB, ServerConfig, grpc_address, read_token

log = logging.getLogger("deepguard.server")

SERVICE_NAME = "deepguard.v1.DeepGuard"
# Drain notice: seconds (at most half the grace period) between health turning NOT_SERVING and the gRPC port
# refusing connections. Meanwhile health Check/Watch still answer - so balancers and clients' health checks see
# NOT_SERVING instead of "connection refused" - and new calls get UNAVAILABLE (a replica-aware client retries
# them on another replica). Open streams are unaffected: they keep being read for half the grace period.
DRAIN_NOTICE_S = 1.0


class Server:
    """The running server; heavy imports happen here so ``deepguard --help`` stays fast."""

    def __init__(self, config: ServerConfig, detector) -> None:
        config.validate()
        self.config = config
        self.detector = detector
        self.port: int | None = None
        self.rest_port: int | None = None
        self.metrics_port: int | None = None
        self.health_port: int | None = None
        self._health_grpc = None
        self._stopped = threading.Event()

    # -- start ----------------------------------------------------------------------------------------------
    def start(self) -> Server:
        self._build_grpc()
        self._bind_grpc()
        self._start_grpc()
        self._start_rest()
        self._start_metrics_http()
        self._log_serving()
        return self

    def _build_grpc(self) -> None:
        """The engine and the gRPC server with its services, not yet bound.

        The imports come first, so a missing package fails before the engine (and its batcher threads) exists.
        """
        import grpc
        from grpc_health.v1 import health, health_pb2_grpc
        from grpc_reflection.v1alpha import reflection

        from deepguard.proto import deepguard_pb2 as pb
        from deepguard.serving.auth import TokenAuthInterceptor
        from deepguard.serving.decoding import add_service
        from deepguard.serving.engine import Engine
        from deepguard.serving.metrics import Metrics
        from deepguard.serving.service import DeepGuardService

        cfg = self.config
        self.metrics = Metrics()
        self.engine = Engine(self.detector, cfg, self.metrics)
        # Every admitted call gets a thread (a stream holds one for its lifetime); calls beyond the limit are
        # refused by gRPC with RESOURCE_EXHAUSTED instead of queueing without bound.
        self._pool = ThreadPoolExecutor(max_workers=cfg.max_concurrent_rpcs + 4, thread_name_prefix="grpc")
        self._grpc = grpc.server(
            self._pool,
            interceptors=[TokenAuthInterceptor(cfg.token)] if cfg.token else [],
            options=_grpc_options(cfg),
            maximum_concurrent_rpcs=cfg.max_concurrent_rpcs,
        )
        add_service(
            DeepGuardService(self.engine, self.metrics), self._grpc
        )  # malformed bytes: INVALID_ARGUMENT
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._grpc)
        reflection.enable_server_reflection(
            (
                pb.DESCRIPTOR.services_by_name["DeepGuard"].full_name,
                health.SERVICE_NAME,
                reflection.SERVICE_NAME,
            ),
            self._grpc,
        )
        if cfg.health_port is not None:
            self._health_grpc = _health_only_server(self.health)

    def _bind_grpc(self) -> None:
        """Bind the gRPC port (TLS when configured); an address that cannot be bound closes the engine."""
        import grpc

        cfg = self.config
        addr = grpc_address(cfg.host, cfg.port)
        try:
            if cfg.tls:
                creds = grpc.ssl_server_credentials(
                    [(Path(cfg.tls_key).read_bytes(), Path(cfg.tls_cert).read_bytes())]  # type: ignore[arg-type]
                )
                self.port = self._grpc.add_secure_port(addr, creds)
            else:
                self.port = self._grpc.add_insecure_port(addr)
        except RuntimeError as e:
            self.engine.close()
            raise ConfigError(f"cannot bind gRPC to {addr}: {e}") from e
        if self._health_grpc is not None:
            addr = grpc_address(cfg.host, cfg.health_port)  # type: ignore[arg-type]
            try:
                self.health_port = self._health_grpc.add_insecure_port(addr)
            except RuntimeError as e:
                self.engine.close()
                raise ConfigError(f"cannot bind --health-port to {addr}: {e}") from e

    def _start_grpc(self) -> None:
        from grpc_health.v1 import health_pb2

        self._grpc.start()
        if self._health_grpc is not None:
            self._health_grpc.start()
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    def _start_rest(self) -> None:
        cfg = self.config
        self._rest = None
        if cfg.rest_port is not None:
            from deepguard.rest import RestServer

            self._rest = RestServer(self.engine, self.metrics, cfg).start()
            self.rest_port = self._rest.port

    def _start_metrics_http(self) -> None:
        cfg = self.config
        self._metrics_http = None
        if cfg.metrics_port is not None:
            from prometheus_client import start_http_server

            self._metrics_http, _ = start_http_server(
                cfg.metrics_port,
                addr=metrics_address(cfg),
                registry=self.metrics.registry,
                certfile=cfg.tls_cert,
                keyfile=cfg.tls_key,
            )
            self.metrics_port = self._metrics_http.server_port

    def _log_serving(self) -> None:
        cfg = self.config
        log.info(
            "serving %s on %s",
            self.engine.classifier.name,
            grpc_address(cfg.host, self.port),
            extra={
                "event": "serving",
                "host": cfg.host,
                "port": self.port,
                "rest_port": self.rest_port,
                "metrics_port": self.metrics_port,
                "health_port": self.health_port,
                "tls": cfg.tls,
                "auth": bool(cfg.token),
                "model": self.engine.classifier.name,
                "detector_max_batch": cfg.detector_max_batch,
                "classifier_max_batch": cfg.classifier_max_batch,
                "max_wait_ms": cfg.max_wait_ms,
            },
        )

    # -- stop -------------------------------------------------------------------------------------------------
    def stop(self, grace: float | None = None) -> None:
        """Drain and stop (idempotent): results for every frame already accepted are delivered first."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        grace = self.config.grace_s if grace is None else grace
        log.info("draining (grace %.1f s)", grace, extra={"event": "draining", "grace_s": grace})
        self.health.enter_graceful_shutdown()
        self.engine.begin_drain(grace)  # new calls: UNAVAILABLE from now on
        notice = min(DRAIN_NOTICE_S, grace / 2)
        time.sleep(notice)  # health still answers (NOT_SERVING): balancers move new streams away
        done = self._grpc.stop(grace - notice)  # refuses connections now; open calls end at the drain's end
        if self._rest is not None:
            self._rest.stop(grace)
        done.wait()
        if self._health_grpc is not None:  # answered NOT_SERVING for the whole drain; closes with the models
            self._health_grpc.stop(0).wait()
        self.engine.close()
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http.server_close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        log.info("stopped", extra={"event": "stopped"})

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _health_only_server(servicer):
    """A plain-text gRPC server with nothing but ``servicer`` (grpc.health.v1), for ``--health-port``.

    Why a second server: the kubelet's native gRPC probe cannot speak TLS, and the main port's TLS and token cover
    every service on it. This port gives away only the serving status (the same servicer, so it turns NOT_SERVING
    the moment a drain starts); every other method on it is UNIMPLEMENTED. A few threads: probes are short calls.
    """
    import grpc
    from grpc_health.v1 import health_pb2_grpc

    server = grpc.server(
        ThreadPoolExecutor(max_workers=4, thread_name_prefix="health"), maximum_concurrent_rpcs=8
    )
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    return server


def _grpc_options(cfg: ServerConfig) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", cfg.max_message_bytes),
        ("grpc.max_send_message_length", max(cfg.max_message_bytes, 64 * MiB)),
        ("grpc.so_reuseport", 0),  # a second server on the same port must fail, not share it
    ]


# ------------------------------------------------------------------------------------------------- CLI


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``serve`` flags (the model flags are the CLI's shared ones), one argument group per concern."""
    d = ServerConfig()
    _address_args(p.add_argument_group("addresses"), d)
    _security_args(p.add_argument_group("security"))
    _limit_args(p.add_argument_group("batching and limits"), d)
    p.add_argument("--grace-s", type=float, default=d.grace_s, help="drain period on SIGTERM")
    _hide(p, "--face-crops")  # a shared runtime flag that has no meaning for serve (clients use AnalyzeFaces)


def _address_args(g, d: ServerConfig) -> None:
    g.add_argument(
        "--host", default=d.host, help="bind address (non-loopback needs TLS + token, see --allow-insecure)"
    )
    g.add_argument("--port", type=int, default=d.port, help="gRPC port (0 = any free port)")
    g.add_argument(
        "--rest-port", type=int, default=d.rest_port, help="origin REST API port (0 = any free port)"
    )
    g.add_argument("--no-rest", action="store_true", help="do not serve the REST API")
    g.add_argument("--metrics-port", type=int, default=d.metrics_port, help="Prometheus /metrics port")
    g.add_argument("--no-metrics", action="store_true", help="do not serve Prometheus metrics")
    g.add_argument(
        "--health-port",
        type=int,
        help="also answer grpc.health.v1 (only) in plain text on this port, for Kubernetes' native gRPC probes, "
        "which cannot speak TLS (off by default)",
    )
    g.add_argument(
        "--history-db",
        metavar="PATH",
        help="SQLite file for the web app's history (default $XDG_DATA_HOME/deepguard/history.sqlite3)",
    )


def _security_args(s) -> None:
    s.add_argument("--tls-cert", help="PEM certificate chain (enables TLS on every port)")
    s.add_argument("--tls-key", help="PEM private key for --tls-cert")
    s.add_argument(
        "--token-file", help="file holding the bearer token clients must send (else $DEEPGUARD_TOKEN)"
    )
    s.add_argument(
        "--allow-insecure", action="store_true", help="allow a non-loopback address without TLS and a token"
    )


def _limit_args(b, d: ServerConfig) -> None:
    b.add_argument("--max-batch", type=int, default=d.detector_max_batch, help="frames per detector run")
    b.add_argument(
        "--max-crops", type=int, default=d.classifier_max_batch, help="face crops per classifier run"
    )
    b.add_argument("--max-wait-ms", type=float, default=d.max_wait_ms, help="how long a batch waits to fill")
    b.add_argument(
        "--queue", type=int, default=d.max_queue, help="frames queued for the models (more wait for room)"
    )
    b.add_argument("--window", type=int, default=d.stream_window, help="frames of one stream in flight")
    b.add_argument(
        "--max-streams",
        type=int,
        default=d.max_streams,
        help="concurrent StreamFrames calls (then RESOURCE_EXHAUSTED)",
    )
    b.add_argument(
        "--stream-mb", type=float, default=d.stream_max_bytes / MiB, help="queued frame bytes per stream"
    )
    b.add_argument(
        "--queue-mb", type=float, default=d.max_queued_bytes / MiB, help="queued frame bytes, all callers"
    )
    b.add_argument(
        "--live-window",
        type=int,
        default=d.live_window,
        help="live-mode frames in analysis, shared by the open live streams (each gets at least 1)",
    )
    b.add_argument("--max-rpcs", type=int, default=d.max_concurrent_rpcs, help="concurrent calls")
    b.add_argument("--max-uploads", type=int, default=d.max_uploads, help="concurrent video uploads")
    b.add_argument(
        "--max-message-mb", type=float, default=d.max_message_bytes / MiB, help="largest gRPC message"
    )
    b.add_argument("--max-frame-pixels", type=int, default=d.max_frame_pixels, help="largest frame (pixels)")
    b.add_argument("--max-video-mb", type=float, default=d.max_video_bytes / MiB, help="largest video upload")
    b.add_argument(
        "--max-video-seconds", type=float, default=d.max_video_seconds, help="longest video upload"
    )
    b.add_argument(
        "--request-budget-s",
        type=float,
        default=d.request_budget_s,
        help="longest one analysis may run before it is stopped (DEADLINE_EXCEEDED / HTTP 503)",
    )
    b.add_argument(
        "--read-timeout-s",
        type=float,
        default=d.read_timeout_s,
        help="HTTP: longest silence while a request is read before it is answered 400/408",
    )
    b.add_argument(
        "--min-upload-kbps",
        type=float,
        default=d.min_upload_rate / 1024,
        help="HTTP: slowest average upload rate (KiB/s) accepted once --read-timeout-s has passed (0 = off)",
    )


def _hide(p: argparse.ArgumentParser, flag: str) -> None:
    """Keep ``flag`` out of ``serve --help``; ``run`` still refuses it with a message."""
    for action in p._actions:
        if flag in action.option_strings:
            action.help = argparse.SUPPRESS
    p.add_argument("--log-format", choices=["json", "text"], default="json")


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    return ServerConfig(
        host=args.host,
        port=args.port,
        rest_port=None if args.no_rest else args.rest_port,
        metrics_port=None if args.no_metrics else args.metrics_port,
        health_port=args.health_port,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        token=read_token(args.token_file),
        allow_insecure=args.allow_insecure,
        detector_max_batch=args.max_batch,
        classifier_max_batch=args.max_crops,
        max_wait_ms=args.max_wait_ms,
        max_queue=args.queue,
        stream_window=args.window,
        max_streams=args.max_streams,
        stream_max_bytes=int(args.stream_mb * MiB),
        max_queued_bytes=int(args.queue_mb * MiB),
        live_window=args.live_window,
        max_concurrent_rpcs=args.max_rpcs,
        max_uploads=args.max_uploads,
        max_message_bytes=_mib(args.max_message_mb, "--max-message-mb"),
        max_frame_pixels=args.max_frame_pixels,
        max_video_bytes=_mib(args.max_video_mb, "--max-video-mb"),
        max_video_seconds=args.max_video_seconds,
        fps=args.fps,
        every_frame=args.every_frame,
        max_frames=args.max_frames,
        grace_s=args.grace_s,
        history_db=args.history_db,
        request_budget_s=args.request_budget_s,
        read_timeout_s=args.read_timeout_s,
        min_upload_rate=args.min_upload_kbps * 1024,
    )


def _mib(value: float, flag: str) -> int:
    """MiB -> bytes; NaN/inf/negative are refused here with the flag's name (int() would raise a bare error)."""
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{flag} must be a positive number, got {value:g}")
    return int(value * MiB)


def metrics_address(cfg: ServerConfig) -> str:
    """Where ``/metrics`` listens: the server's address, or loopback only when a token guards the other ports.

    Why: the Prometheus exporter cannot check a bearer token, and its counters name the model and every method;
    with a token set they must not be readable by whoever may not call the API. Scrape from the host itself (a
    local agent or a reverse proxy that adds its own auth).
    """
    from deepguard.serving.config import is_loopback

    host = cfg.host.strip("[]")
    if cfg.token and not is_loopback(host):
        return "::1" if ":" in host else "127.0.0.1"
    return host


def check_model_path(path: str | None) -> None:
    """``--model`` must name an ONNX file: a folder or a missing path is a usage error (exit 2), said plainly."""
    if path is None:
        return
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"--model {path}: is a folder; give the fused .onnx model file inside it")
    if not p.is_file():
        raise ConfigError(f"--model {path}: no such file")


def run(args: argparse.Namespace, make_detector: Callable[[argparse.Namespace], object]) -> int:
    """The ``serve`` command: start, wait for SIGTERM/SIGINT, drain, exit 0."""
    from deepguard.serving.logs import setup_logging

    if getattr(args, "face_crops", False):
        raise ConfigError(
            "--face-crops does not apply to serve: clients send their own crops with AnalyzeFaces"
        )
    cfg = config_from_args(args)
    cfg.validate()  # before the models load: a refused config should fail fast
    check_model_path(getattr(args, "model", None))
    setup_logging(args.log_format, logging.DEBUG if getattr(args, "verbose", False) else logging.INFO)
    server = Server(cfg, make_detector(args)).start()
    stop = threading.Event()

    def on_signal(signum, _frame) -> None:
        log.info("received %s", signal.Signals(signum).name, extra={"event": "signal"})
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stop.wait(1.0):
        pass
    server.stop()
    return 0
