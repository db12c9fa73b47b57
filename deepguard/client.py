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
"""

from __future__ import annotations

import io
import os
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

CHUNK = 1 << 20
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
    ) -> None:
        options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
        if tls_ca is not None or tls:
            ca = tls_ca if isinstance(tls_ca, (bytes, type(None))) else Path(tls_ca).read_bytes()
            self.channel = grpc.secure_channel(
                target, grpc.ssl_channel_credentials(root_certificates=ca), options
            )
        else:
            self.channel = grpc.insecure_channel(target, options)
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
        """SERVING / NOT_SERVING / ... from grpc.health.v1 (needs no token)."""
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
                for u in self.stub.AnalyzeVideo(chunks(), metadata=self.metadata, timeout=self.timeout):
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
    ) -> FrameStream:
        """Send frames (lazily: a camera generator is fine) and iterate over their results in order.

        The server reads the stream only as fast as it analyses it (flow control): a generator that produces
        frames faster is simply asked for the next one later. ``live=True`` (cameras): when the stream falls
        behind, the server analyses the newest frame and answers the older ones ``skipped`` (one result per
        frame still, in order; ``StreamResult.skipped``), so results stay close to real time.
        """
        requests = (_with_live(_frame_msg(f, color_order), live) for f in frames)
        call = self.stub.StreamFrames(requests, metadata=self.metadata, timeout=timeout or self.timeout)
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
        client = Client(args.server, token=read_token(args.token_file), tls_ca=args.tls_ca)
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
