"""Python client for the DeepGuard gRPC server (``deepguard detect --server HOST:PORT`` uses it).

    from deepguard.client import Client
    with Client("127.0.0.1:50051") as c:
        a = c.analyze_file("clip.mp4")                    # -> deepguard.runtime.types.Analysis
        stream = c.stream_frames(camera_frames)           # RGB arrays, Frame objects or JPEG bytes
        for r in stream:                                  # one StreamResult per frame, in order
            print(r.frame.index, r.frame.score, r.running_verdict)
        print(stream.summary.verdict)

Results come back as the runtime's own types, so code (and the CLI's output formats) cannot tell a local
Detector from a remote one. Server errors raise :class:`ServerError` with the gRPC status code; for
``analyze_file`` bad media (INVALID_ARGUMENT) becomes an ``Analysis`` with ``verdict="error"``, as locally.
TLS: pass ``tls_ca`` (the server's certificate or its CA, PEM) or ``tls=True`` for the system roots; the
token goes in ``authorization: Bearer`` metadata.

Replicas: ``target`` may name several servers - ``"host:port,host:port"``, or a gRPC target such as
``"dns:///deepguard.example:50051"`` or ``"ipv4:10.0.0.5:50051,10.0.0.6:50051"`` - and gRPC's own
``round_robin`` balancer spreads the calls over the replicas whose grpc.health.v1 status is SERVING (client-side
health checking, see :func:`channel_target`). A call that fails ``UNAVAILABLE`` before its first response is
sent again to another replica (unary calls by gRPC's retry policy, streams here); a call that has produced a
response is never repeated.
"""

from __future__ import annotations

import io
import ipaddress
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import grpc
import numpy as np

from deepguard.errors import DeepGuardError, MediaError
from deepguard.proto import deepguard_pb2 as pb
from deepguard.proto import deepguard_pb2_grpc as pb_grpc
from deepguard.runtime import aggregate
from deepguard.runtime.types import Analysis, Face, Frame, FrameScore, Person
from deepguard.serving import wire

log = logging.getLogger("deepguard.client")

CHUNK = 1 << 20
SERVICE = "deepguard.v1.DeepGuard"
UNARY_METHODS = ("AnalyzeImage", "AnalyzeFaces", "GetModelInfo")
# Replicas: how often a call is tried in all (first try included) when it fails UNAVAILABLE before any response
# was received, and the pause before each retry (doubling, capped).
CALL_ATTEMPTS = 3
RETRY_BACKOFF_S = (0.1, 1.0)
REPLAY_MAX_BYTES = 64 << 20  # requests a stream keeps for a retry until its first response; beyond: no retry
_END = object()
_REPLICA_SCHEMES = ("dns:", "ipv4:", "ipv6:")  # gRPC targets that may name several servers
_ORDERS = {
    "rgb": pb.COLOR_ORDER_RGB,
    "bgr": pb.COLOR_ORDER_BGR,
    "gray": pb.COLOR_ORDER_GRAY,
    "rgba": pb.COLOR_ORDER_RGBA,
    "bgra": pb.COLOR_ORDER_BGRA,
}


class ServerError(DeepGuardError):
    """A call failed on the server (or could not reach it); ``code`` is the gRPC status code."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"server: {code.name}: {details}")
        self.code = code
        self.details = details


def _server_error(e: grpc.RpcError) -> ServerError:
    code = e.code() if hasattr(e, "code") else grpc.StatusCode.UNKNOWN
    details = e.details() if hasattr(e, "details") else str(e)
    return ServerError(code or grpc.StatusCode.UNKNOWN, details or "")


@dataclass(frozen=True)
class ChannelTarget:
    """What a ``--server`` value becomes: the gRPC target, whether it names replicas, the name TLS checks."""

    target: str
    balanced: bool  # several replicas (or a resolver that may return several): round_robin + health + retries
    tls_name: str | None = None  # the host name the server certificates are checked against (None: gRPC's)


def channel_target(server: str) -> ChannelTarget:
    """``host:port`` or any other single gRPC target (one server, a plain channel as before), ``host:port,
    host:port,...``, or a ``dns:``, ``ipv4:`` or ``ipv6:`` target (replicas).

    A list becomes gRPC's multi-address ``ipv4:``/``ipv6:`` target; its host names are resolved once, here, to one
    address each, IPv4 preferred (use ``dns:///name:port`` for a name whose addresses change, e.g. a Kubernetes
    headless Service). With TLS, every replica of a list or an ``ipv4:``/``ipv6:`` target must present a
    certificate for the first host listed (``tls_server_name`` overrides it).
    """
    server = server.strip()
    if server.startswith(_REPLICA_SCHEMES):
        name = None
        if server.startswith(("ipv4:", "ipv6:")):
            name = _split_host_port(server.split(":", 1)[1].lstrip("/").split(",")[0])[0]
        return ChannelTarget(server, True, name)
    if "," not in server:
        return ChannelTarget(server, False)
    parts = [x.strip() for x in server.split(",") if x.strip()]
    if not parts:
        raise DeepGuardError(f"--server {server!r}: no address given")
    addrs = [_resolve(*_split_host_port(x)) for x in parts]
    if all(ip.version == 4 for ip, _ in addrs):
        target = "ipv4:" + ",".join(f"{ip}:{port}" for ip, port in addrs)
    else:  # IPv6, with IPv4 replicas as v4-mapped addresses (dual-stack sockets)
        target = "ipv6:" + ",".join(f"[{_as_v6(ip)}]:{port}" for ip, port in addrs)
    return ChannelTarget(target, True, _split_host_port(parts[0])[0])


def _split_host_port(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise DeepGuardError(f"--server: {addr!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def _resolve(host: str, port: int) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    try:
        return ipaddress.ip_address(host), port
    except ValueError:
        pass
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        raise DeepGuardError(f"--server: cannot resolve {host!r}: {e}") from None
    # IPv4 first: "localhost" often resolves to ::1 first while the server listens on 127.0.0.1
    info.sort(key=lambda x: x[0] != socket.AF_INET)
    return ipaddress.ip_address(info[0][4][0]), port


def _as_v6(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    return str(ip) if ip.version == 6 else f"::ffff:{ip}"


def service_config() -> str:
    """The channel's service config for replicas: gRPC's round_robin over the replicas whose health (the
    server's overall ``""`` service in grpc.health.v1, Watch) is SERVING, and retries of unary calls that fail
    UNAVAILABLE (gRPC retries only calls that got no response, so none is answered twice)."""
    return json.dumps(
        {
            "loadBalancingConfig": [{"round_robin": {}}],
            "healthCheckConfig": {"serviceName": ""},
            "methodConfig": [
                {
                    "name": [{"service": SERVICE, "method": m} for m in UNARY_METHODS],
                    "retryPolicy": {
                        "maxAttempts": CALL_ATTEMPTS,
                        "initialBackoff": f"{RETRY_BACKOFF_S[0]}s",
                        "maxBackoff": f"{RETRY_BACKOFF_S[1]}s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ],
        }
    )


@dataclass
class StreamResult:
    frame: FrameScore
    faces: list[Face]
    running_verdict: str
    running_score: float | None
    skipped: bool = False  # live mode: not analysed, a newer frame was (no faces, no score)


@dataclass
class StreamSummary:
    verdict: str
    score: float | None
    frames: int
    frames_with_faces: int
    faces: int
    model: str
    threshold: float
    persons: list[Person] = field(default_factory=list)  # the score is the max over their scores
    frames_skipped: int = 0  # live mode: frames answered `skipped` (not counted in `frames`)


def raw_image(image: np.ndarray, color_order: str = "rgb") -> pb.RawImage:
    """A uint8 (H, W[, C]) array as a RawImage; ``color_order`` is rgb, bgr, gray, rgba or bgra."""
    a = np.ascontiguousarray(image)
    if a.dtype != np.uint8:
        raise MediaError(f"frame must be uint8, got {a.dtype}")
    if a.ndim == 2:
        a, color_order = a[:, :, None], "gray"
    if a.ndim != 3:
        raise MediaError(f"frame must be (H, W) or (H, W, C), got shape {a.shape}")
    order = _ORDERS.get(color_order.lower())
    if order is None:
        raise MediaError(f"unknown color order {color_order!r}; use one of {sorted(_ORDERS)}")
    return pb.RawImage(
        height=a.shape[0], width=a.shape[1], channels=a.shape[2], color_order=order, pixels=a.tobytes()
    )


def _frame_msg(item: Any, color_order: str) -> pb.Frame:
    if isinstance(item, pb.Frame):
        return item
    if isinstance(item, (bytes, bytearray, memoryview)):
        return pb.Frame(encoded=bytes(item))
    if isinstance(item, Frame):
        msg = _frame_msg(item.image, color_order)
        msg.index = item.index
        if item.time is not None:
            msg.time = item.time
        return msg
    return pb.Frame(raw=raw_image(np.asarray(item), color_order))


def _with_live(msg: pb.Frame, live: bool) -> pb.Frame:
    if live:
        msg.live = True
    return msg


class _Replay:
    """A request stream that can be sent again while its call has not started (no response yet).

    Each attempt first sends what earlier attempts had taken from the source, then reads on; an attempt whose
    call has ended stops reading (so no request goes to a dead call only). Once the call has started
    (``commit``) nothing more is kept; a stream that kept more than ``limit`` bytes is no longer retryable.

    The source (the caller's generator: a camera, or a generator waiting on something) may block. It is read
    under its own lock, never under the state lock, so a retry can start while a failed attempt's gRPC thread
    is still blocked in it; what that thread reads then goes to the current attempt.
    """

    def __init__(self, requests: Iterable, limit: int = REPLAY_MAX_BYTES) -> None:
        self._source = iter(requests)
        self._items: list = []  # read from the source; from position ``_base`` on
        self._base = 0
        self._retryable = True
        self._ended = False
        self._bytes = 0
        self._limit = limit
        self._attempt = 0
        self._lock = threading.Lock()  # the state above
        self._reading = threading.Lock()  # one reader of the source at a time

    @property
    def retryable(self) -> bool:
        return self._retryable

    def commit(self) -> None:
        self._retryable = False  # no lock: a reader blocked on a slow source must not delay the first result

    def attempt(self) -> Iterator:
        with self._lock:
            self._attempt += 1
            return self._requests(self._attempt)

    def _requests(self, attempt: int) -> Iterator:
        pos = 0
        while (item := self._take(attempt, pos)) is not _END:
            pos += 1
            yield item

    def _take(self, attempt: int, pos: int):
        """The source's item at ``pos`` for ``attempt``; _END once the source ended or the attempt is stale."""
        while True:
            with self._lock:
                if attempt != self._attempt:
                    return _END
                if pos < self._base + len(self._items):
                    item = self._items[pos - self._base]
                    if not self._retryable:  # it will not be sent again: let it go
                        del self._items[: pos + 1 - self._base]
                        self._base = pos + 1
                    return item
                if self._ended:
                    return _END
            with self._reading:
                with self._lock:
                    if attempt != self._attempt or pos < self._base + len(self._items):
                        continue  # stale, or another attempt's reader got it meanwhile
                item = next(self._source, _END)
                with self._lock:
                    if item is _END:
                        self._ended = True
                        continue
                    self._items.append(item)
                    if self._retryable:
                        self._bytes += item.ByteSize()
                        self._retryable = self._bytes <= self._limit


class _Call:
    """A streaming call that is started again (gRPC picks another replica) if it fails UNAVAILABLE before its
    first response, sending the requests the failed try had taken; after a response it is never repeated.
    ``attempts=1``: a plain call (one server)."""

    def __init__(self, method, requests: Iterable, metadata, timeout: float | None, attempts: int) -> None:
        self._method, self._metadata, self._attempts = method, metadata, attempts
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._replay = _Replay(requests) if attempts > 1 else None
        self._requests = requests
        self._cancelled = False
        self._call = self._start()

    def _start(self):
        requests = self._replay.attempt() if self._replay else self._requests
        timeout = None if self._deadline is None else max(0.0, self._deadline - time.monotonic())
        return self._method(requests, metadata=self._metadata, timeout=timeout)

    def cancel(self) -> None:
        self._cancelled = True
        self._call.cancel()

    def _may_retry(self, e: grpc.RpcError, attempt: int) -> bool:
        return (
            self._replay is not None
            and self._replay.retryable
            and attempt < self._attempts
            and not self._cancelled
            and e.code() == grpc.StatusCode.UNAVAILABLE
            and (self._deadline is None or time.monotonic() < self._deadline)
        )

    def __iter__(self) -> Iterator:
        attempt = 1
        while True:
            started = False
            try:
                for r in self._call:
                    if not started and self._replay is not None:
                        self._replay.commit()
                    started = True
                    yield r
                return
            except grpc.RpcError as e:
                if started or not self._may_retry(e, attempt):
                    raise
                log.info("call not started (%s: %s); retrying on another replica", e.code().name, e.details())
                time.sleep(min(RETRY_BACKOFF_S[0] * 2 ** (attempt - 1), RETRY_BACKOFF_S[1]))
                if self._cancelled:
                    raise
            attempt += 1
            self._call = self._start()


class FrameStream:
    """Iterate for per-frame results (in order); ``summary`` is set once the stream has ended."""

    def __init__(self, call) -> None:
        self._call = call
        self.summary: StreamSummary | None = None

    def __iter__(self) -> Iterator[StreamResult]:
        try:
            for r in self._call:
                if r.HasField("summary"):
                    s = r.summary
                    self.summary = StreamSummary(
                        verdict=wire.VERDICT_NAMES.get(s.verdict, "error"),
                        score=s.score if s.HasField("score") else None,
                        frames=s.frames,
                        frames_with_faces=s.frames_with_faces,
                        faces=s.faces,
                        model=s.model,
                        threshold=s.threshold,
                        persons=[wire.person_from_pb(p) for p in s.persons],
                        frames_skipped=s.frames_skipped,
                    )
                    continue
                yield StreamResult(
                    frame=wire.frame_score_from_pb(r),
                    faces=[wire.face_from_pb(f) for f in r.faces],
                    running_verdict=wire.VERDICT_NAMES.get(r.running_verdict, "error"),
                    running_score=r.running_score if r.HasField("running_score") else None,
                    skipped=r.skipped,
                )
        except grpc.RpcError as e:
            raise _server_error(e) from None

    def cancel(self) -> None:
        self._call.cancel()


class Client:
    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        tls_ca: str | Path | bytes | None = None,
        tls: bool = False,
        timeout: float | None = None,
        max_message_bytes: int = 64 << 20,
        tls_server_name: str | None = None,
    ) -> None:
        """``target``: ``host:port``, or replicas (``host:port,host:port``, ``dns:///name:port``, ``ipv4:...``; see
        :func:`channel_target`); ``tls_server_name``: the name the server certificates must carry, when it is
        not the (first) host dialled."""
        dest = channel_target(target)
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
        if dest.balanced:
            options.append(("grpc.service_config", service_config()))
        if tls_ca is not None or tls:
            name = tls_server_name or dest.tls_name
            if name:
                options.append(("grpc.ssl_target_name_override", name))
            ca = tls_ca if isinstance(tls_ca, (bytes, type(None))) else Path(tls_ca).read_bytes()
            self.channel = grpc.secure_channel(
                dest.target, grpc.ssl_channel_credentials(root_certificates=ca), options
            )
        else:
            self.channel = grpc.insecure_channel(dest.target, options)
        self.attempts = CALL_ATTEMPTS if dest.balanced else 1  # streams: retried before their first response
        self.stub = pb_grpc.DeepGuardStub(self.channel)
        self.metadata = [("authorization", f"Bearer {token}")] if token else []
        self.timeout = timeout
        self.target = target

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _unary(self, method, request):
        try:
            return method(request, metadata=self.metadata, timeout=self.timeout)
        except grpc.RpcError as e:
            raise _server_error(e) from None

    # -- calls ----------------------------------------------------------------------------------------------
    def health(self, service: str = "") -> str:
        """SERVING / NOT_SERVING / ... from grpc.health.v1 (needs no token).

        With replicas the check goes to one that is SERVING (a draining one is not picked): UNAVAILABLE means none is.
        """
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        try:
            r = health_pb2_grpc.HealthStub(self.channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=self.timeout or 10
            )
        except grpc.RpcError as e:
            raise _server_error(e) from None
        return health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)

    def model_info(self) -> dict:
        from google.protobuf.json_format import MessageToDict

        return MessageToDict(
            self._unary(self.stub.GetModelInfo, pb.ModelInfoRequest()), preserving_proto_field_name=True
        )

    def analyze_image(
        self, image: bytes | str | Path | np.ndarray, name: str | None = None, color_order: str = "rgb"
    ) -> Analysis:
        """Encoded file bytes / a path (sent as is: the server decodes, EXIF included) or a pixel array."""
        if isinstance(image, (str, Path)):
            name = name or Path(image).name
            image = Path(image).read_bytes()
        if isinstance(image, (bytes, bytearray, memoryview)):
            req = pb.Image(encoded=bytes(image), name=name or "")
        else:
            req = pb.Image(raw=raw_image(image, color_order), name=name or "")
        return wire.analysis_from_pb(self._unary(self.stub.AnalyzeImage, req))

    def analyze_video(
        self,
        src: str | Path | bytes | IO[bytes],
        name: str | None = None,
        *,
        fps: float | None = None,
        every_frame: bool = False,
        max_frames: int | None = None,
        progress: Callable[[int, int], None] | None = None,
        chunk_size: int = CHUNK,
    ) -> Analysis:
        """Upload a video in chunks; ``progress(bytes_received, frames_done)`` is called as the server reports."""
        if isinstance(src, (str, Path)):
            name = name or Path(src).name
            f: IO[bytes] = open(src, "rb")  # noqa: SIM115 - closed below
        elif isinstance(src, (bytes, bytearray, memoryview)):
            f = io.BytesIO(bytes(src))
        else:
            f = src
        try:
            total = _size(f)
            opts = pb.VideoOptions(name=name or "", every_frame=every_frame)
            if fps is not None:
                opts.fps = fps
            if max_frames is not None:
                opts.max_frames = max_frames
            if total is not None:
                opts.total_bytes = total

            def chunks() -> Iterator[pb.VideoChunk]:
                first = True
                while data := f.read(chunk_size):
                    msg = pb.VideoChunk(data=data)
                    if first:
                        msg.options.CopyFrom(opts)
                    yield msg
                    first = False
                if first:
                    yield pb.VideoChunk(options=opts)

            try:
                call = _Call(self.stub.AnalyzeVideo, chunks(), self.metadata, self.timeout, self.attempts)
                for u in call:
                    if u.HasField("result"):
                        return wire.analysis_from_pb(u.result)
                    if progress:
                        progress(u.progress.bytes_received, u.progress.frames_done)
            except grpc.RpcError as e:
                raise _server_error(e) from None
            raise ServerError(grpc.StatusCode.UNKNOWN, "the server ended the upload without a result")
        finally:
            if isinstance(src, (str, Path)):
                f.close()

    def analyze_faces(
        self, crops: Iterable[np.ndarray | bytes], color_order: str = "rgb"
    ) -> list[tuple[float, list[float]]]:
        """(P(fake), member probabilities) per crop, for clients that crop faces themselves."""
        batch = pb.FaceBatch(
            crops=[
                pb.Image(encoded=bytes(c))
                if isinstance(c, (bytes, bytearray))
                else pb.Image(raw=raw_image(c, color_order))
                for c in crops
            ]
        )
        r = self._unary(self.stub.AnalyzeFaces, batch)
        return [(f.score, list(f.member_scores)) for f in r.faces]

    def stream_frames(
        self,
        frames: Iterable[np.ndarray | Frame | bytes | pb.Frame],
        color_order: str = "rgb",
        timeout: float | None = None,
        live: bool = False,
        rescore_rate: float | None = None,
    ) -> FrameStream:
        """Send frames (lazily: a camera generator is fine) and iterate over their results in order.

        The server reads the stream only as fast as it analyses it (flow control): a generator that produces
        frames faster is simply asked for the next one later. ``live=True`` (cameras): when the stream falls
        behind, the server analyses the newest frame and answers the older ones ``skipped`` (one result per
        frame still, in order; ``StreamResult.skipped``), so results stay close to real time. Live cameras
        should send JPEG ``bytes`` (or a ``Frame`` holding them): the server decodes only the frames it analyses,
        while every raw frame costs its full size on the wire and in the server's parser, skipped or not.
        ``rescore_rate``: stream mode's re-classifications per person per second of video (sent on the first
        frame; default the server's ``--rescore-rate``; 0 = every face of every frame). Faces in between carry
        their person's latest score with ``Face.age`` > 0; frames need ``time`` for it.
        """

        def requests() -> Iterator[pb.Frame]:
            for i, f in enumerate(frames):
                msg = _with_live(_frame_msg(f, color_order), live)
                if i == 0 and rescore_rate is not None:
                    msg.rescore_rate = rescore_rate
                yield msg

        call = _Call(
            self.stub.StreamFrames, requests(), self.metadata, timeout or self.timeout, self.attempts
        )
        return FrameStream(call)

    def analyze_file(
        self,
        path: str | Path,
        *,
        fps: float | None = None,
        every_frame: bool = False,
        max_frames: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Analysis:
        """Like ``Detector.analyze``: bad media -> verdict "error"; other server failures raise ServerError."""
        from deepguard.runtime.decode import media_kind

        name = str(path)
        kind = "image"
        try:
            kind = media_kind(path)
            if kind == "image":
                res = self.analyze_image(Path(path).read_bytes(), name=Path(path).name)
            else:
                done = [0]

                def on_progress(_bytes: int, frames: int) -> None:
                    if progress and frames > done[0]:
                        progress(frames - done[0])
                        done[0] = frames

                res = self.analyze_video(
                    path, fps=fps, every_frame=every_frame, max_frames=max_frames, progress=on_progress
                )
            res.path = name
            return res
        except (MediaError, OSError) as e:
            error = str(e) if isinstance(e, MediaError) else f"{name}: cannot read file ({e})"
        except ServerError as e:
            if e.code != grpc.StatusCode.INVALID_ARGUMENT:
                raise
            error = e.details
        return Analysis(path=name, kind=kind, verdict="error", score=None, error=error)  # type: ignore[arg-type]


class RemoteAnalyzer:
    """``Detector.analyze``'s interface over a server, for ``deepguard detect --server``."""

    def __init__(
        self, client: Client, *, fps=1.0, every_frame=False, max_frames=None, threshold=None
    ) -> None:
        self.client = client
        self.fps, self.every_frame, self.max_frames = fps, every_frame, max_frames
        self.threshold = threshold

    def analyze(self, path: str | Path, progress: Callable[[int], None] | None = None) -> Analysis:
        res = self.client.analyze_file(
            path, fps=self.fps, every_frame=self.every_frame, max_frames=self.max_frames, progress=progress
        )
        if self.threshold is not None and res.verdict != "error":
            res.threshold = float(self.threshold)
            res.verdict = aggregate.verdict(res.score, res.threshold)
        return res

    @classmethod
    def from_args(cls, args) -> RemoteAnalyzer:
        from deepguard.serving.config import read_token

        if getattr(args, "face_crops", False):
            raise DeepGuardError("--face-crops is not supported with --server (use Client.analyze_faces)")
        client = Client(
            args.server,
            token=read_token(args.token_file),
            tls_ca=args.tls_ca,
            tls_server_name=getattr(args, "tls_server_name", None),
        )
        every = args.every_frame
        return cls(
            client,
            fps=None if every else args.fps,
            every_frame=every,
            max_frames=args.max_frames,
            threshold=args.threshold,
        )


def _size(f: IO[bytes]) -> int | None:
    """Bytes left in a seekable file (announced as total_bytes so a cut-off upload is detected)."""
    try:
        pos = f.tell()
        end = f.seek(0, os.SEEK_END)
        f.seek(pos)
        return end - pos
    except (OSError, AttributeError, ValueError):
        return None
