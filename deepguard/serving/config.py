"""Server settings: addresses, batching, limits and the security rules checked before anything binds.

Security rule: a server reachable from other machines must have TLS *and* a bearer token. Binding a
non-loopback address without both is refused unless ``allow_insecure`` is set explicitly, so a typo in
``--host`` cannot expose an unauthenticated deepfake service on the network.
"""

from __future__ import annotations

import ipaddress
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from deepguard.errors import DeepGuardError

MiB = 1 << 20


class ConfigError(DeepGuardError):
    """The server settings are unsafe or inconsistent; the message says which flag to change."""


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 50051  # gRPC; 0 = any free port
    rest_port: int | None = 8000  # None = no REST front-end
    metrics_port: int | None = 9464  # None = no Prometheus endpoint
    # plain-text port answering only grpc.health.v1 (Kubernetes' native gRPC probes cannot speak TLS); None = off
    health_port: int | None = None
    # security
    tls_cert: str | None = None
    tls_key: str | None = None
    token: str | None = None
    allow_insecure: bool = False
    # batching
    detector_max_batch: int = 8  # frames per detector run (CPU: per-frame cost is flat up to ~8)
    classifier_max_batch: int = 32  # crops per classifier run
    max_wait_ms: float = 5.0
    # flow control (docs/server.md): every limit below makes callers *wait*, except max_streams
    max_queue: int = 256  # frames of all callers queued for the models; more wait for room
    stream_window: int = 16  # frames of one stream read and not answered before its reads pause
    stream_max_bytes: int = 32 * MiB  # decoded bytes of one stream's frames awaiting analysis
    max_queued_bytes: int = 256 * MiB  # the same over all callers (one stream's first frame always fits)
    live_window: int = 2  # live frames in analysis, all live streams (>= 1 each; flow.LiveShare)
    max_streams: int = 32  # concurrent StreamFrames calls; one more is RESOURCE_EXHAUSTED at its start
    max_concurrent_rpcs: int = 64
    max_uploads: int = 8  # concurrent video uploads (gRPC + REST)
    # limits
    max_message_bytes: int = 16 * MiB
    max_frame_pixels: int = 3840 * 2160
    max_video_bytes: int = 256 * MiB
    max_video_seconds: float = 600.0
    max_faces_per_batch: int = 256
    # video sampling defaults for uploads (a client may override per upload)
    fps: float | None = 1.0
    every_frame: bool = False
    max_frames: int | None = None
    # per request: the analysis budget, and how slow an HTTP client may be (REST / web app) before it is cut off
    request_budget_s: float = 600.0  # one analysis (image, video upload, REST request) at most this long
    read_timeout_s: float = 20.0  # HTTP: longest silence while reading a request (headers or body)
    min_upload_rate: float = 8 * 1024  # HTTP: bytes/s a body must average once read_timeout_s has passed
    # lifecycle
    grace_s: float = 30.0
    # web app (on the REST port): SQLite history file; None = $XDG_DATA_HOME/deepguard/history.sqlite3
    history_db: str | None = None

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert)

    def validate(self) -> None:
        """Raise ConfigError for unsafe or inconsistent settings (call before binding anything)."""
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("TLS needs both --tls-cert and --tls-key")
        for f in (self.tls_cert, self.tls_key):
            if f and not Path(f).is_file():
                raise ConfigError(f"{f}: TLS file not found")
        if self.token is not None and not self.token.strip():
            raise ConfigError("the bearer token is empty")
        if not is_loopback(self.host) and not self.allow_insecure:
            missing = [
                n for n, ok in (("TLS (--tls-cert/--tls-key)", self.tls), ("a token", self.token)) if not ok
            ]
            if missing:
                raise ConfigError(
                    f"refusing to serve on non-loopback address {self.host!r} without {' and '.join(missing)}; "
                    "add them, bind 127.0.0.1, or pass --allow-insecure if the network is trusted"
                )
        for name in (
            "detector_max_batch",
            "classifier_max_batch",
            "max_queue",
            "stream_window",
            "stream_max_bytes",
            "max_queued_bytes",
            "live_window",
            "max_streams",
            "max_concurrent_rpcs",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1")
        if self.max_wait_ms < 0 or self.grace_s < 0:
            raise ConfigError("max_wait_ms and grace_s must be >= 0")
        self._validate_limits()
        if self.rest_port is not None:
            check_history_db(self.history_db)
        for name, port in (
            ("--port", self.port),
            ("--rest-port", self.rest_port),
            ("--metrics-port", self.metrics_port),
            ("--health-port", self.health_port),
        ):
            if port is not None and not 0 <= port <= 65535:
                raise ConfigError(f"{name} must be between 0 and 65535, got {port}")
        others = {self.port, self.rest_port, self.metrics_port} - {None, 0}
        if self.health_port and self.health_port in others:
            raise ConfigError(f"--health-port {self.health_port} is already one of the server's other ports")

    def _validate_limits(self) -> None:
        """Every limit must be a positive, finite number: 0 would refuse everything, NaN would refuse nothing."""
        limits = {
            "--max-message-mb": self.max_message_bytes,
            "--max-frame-pixels": self.max_frame_pixels,
            "--max-video-mb": self.max_video_bytes,
            "--max-video-seconds": self.max_video_seconds,
            "--max-uploads": self.max_uploads,
            "--request-budget-s": self.request_budget_s,
            "--read-timeout-s": self.read_timeout_s,
            "max_faces_per_batch": self.max_faces_per_batch,
        }
        for flag, value in limits.items():
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"{flag} must be a positive number, got {value!r}")
        if not (math.isfinite(self.min_upload_rate) and self.min_upload_rate >= 0):
            raise ConfigError(f"--min-upload-kbps must be >= 0, got {self.min_upload_rate / 1024:g}")
        if self.fps is not None and not (math.isfinite(self.fps) and self.fps > 0):
            raise ConfigError(f"--fps must be a positive number, got {self.fps!r}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ConfigError(f"--max-frames must be >= 1, got {self.max_frames}")


def check_history_db(path: str | None) -> None:
    """ConfigError unless the web history file can be created/written (checked at start, created on first use).

    Why at start: an unwritable ``--history-db`` used to start fine and then fail every web analysis with
    "internal error". SQLite's WAL mode also writes ``-wal``/``-shm`` files next to it, so the folder must be
    writable too. Nothing is created here: a server whose web app is never used leaves no file behind.
    """
    from deepguard.web.history import default_path

    p = Path(path) if path else default_path()
    flag = f"--history-db {p}" if path else f"the web history file {p} (set --history-db)"
    if p.exists() and not p.is_file():
        raise ConfigError(f"{flag}: is not a regular file")
    folder = p.parent
    while not folder.exists():  # the folders are created on first use: the first existing one must allow it
        folder = folder.parent
    if not folder.is_dir():
        raise ConfigError(f"{flag}: {folder} is not a folder")
    try:  # real probes (os.access says yes to root even on a read-only file system); neither leaves a trace
        if p.is_file():
            with open(p, "ab"):
                pass
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise ConfigError(f"{flag}: not writable ({e.strerror or e})") from e


def is_loopback(host: str) -> bool:
    """True for localhost and 127.0.0.0/8 / ::1; every other name or address counts as reachable."""
    h = host.strip().strip("[]")
    if h.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def grpc_address(host: str, port: int) -> str:
    h = host.strip()
    return f"[{h.strip('[]')}]:{port}" if ":" in h.strip("[]") else f"{h}:{port}"


def read_token(path: str | None) -> str | None:
    """Token from a file (first line), else $DEEPGUARD_TOKEN, else None. Never from argv (visible in ps)."""
    if path:
        try:
            token = Path(path).read_text().strip()
        except OSError as e:
            raise ConfigError(f"{path}: cannot read token file ({e})") from e
        if not token:
            raise ConfigError(f"{path}: token file is empty")
        return token
    return os.environ.get("DEEPGUARD_TOKEN") or None
