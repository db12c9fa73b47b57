"""The gRPC servicer (``deepguard.v1.DeepGuard``): protocol handling only, all work goes to the Engine.

Status codes: bad input (empty/garbled messages, wrong dimensions, unknown colour order, over a pixel /
video / duration limit, undecodable media, truncated upload) -> INVALID_ARGUMENT with a message naming the
frame or upload and the problem; a full queue or too many uploads -> RESOURCE_EXHAUSTED; shutting down ->
UNAVAILABLE; a message over the transport limit -> RESOURCE_EXHAUSTED from gRPC itself; anything unexpected
-> INTERNAL (logged with its traceback). One call's failure never affects another call.
"""

from __future__ import annotations

import logging
import queue
import tempfile
import threading
import time
from collections.abc import Callable, Iterator

import grpc

from deepguard.errors import MediaError
from deepguard.proto import deepguard_pb2 as pb
from deepguard.proto import deepguard_pb2_grpc as pb_grpc
from deepguard.runtime import aggregate
from deepguard.runtime.track import Tracker
from deepguard.runtime.types import Frame
from deepguard.serving import wire
from deepguard.serving.batcher import Cancelled, Closed, Overloaded
from deepguard.serving.budget import Budget, OverBudget
from deepguard.serving.engine import (
    Accumulator,
    Engine,
    FrameOutcome,
    ShuttingDown,
    wait_future,
)
from deepguard.serving.metrics import Metrics

log = logging.getLogger("deepguard.server")

MiB = 1 << 20
PROGRESS_EVERY_S = 0.5
_END = object()


class _DrainStop(Exception):
    """The server stopped reading this stream because it is shutting down."""


def status_for(e: BaseException) -> tuple[grpc.StatusCode, str]:
    if isinstance(e, MediaError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(e)
    if isinstance(e, Overloaded):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(e)
    if isinstance(e, (ShuttingDown, Closed, _DrainStop)):
        return grpc.StatusCode.UNAVAILABLE, str(e) or "server is shutting down"
    if isinstance(e, Cancelled):
        return grpc.StatusCode.CANCELLED, str(e)
    if isinstance(e, OverBudget):
        return grpc.StatusCode.DEADLINE_EXCEEDED, str(e)
    log.error("internal error: %s", e, exc_info=e)
    return grpc.StatusCode.INTERNAL, f"internal error: {type(e).__name__}: {e}"


def _refuse_image(buf, name: str) -> None:
    """A still image sent to AnalyzeVideo is the client's mistake: say so (FFmpeg would decode it as 1 frame)."""
    from deepguard.runtime.decode import media_kind

    buf.seek(0)
    try:
        kind = media_kind(buf, name=name)
    except MediaError:
        return  # no known signature: the video decoder decides
    if kind == "image":
        raise MediaError(f"{name}: expected a video, got image data (send images with AnalyzeImage)")


class DeepGuardService(pb_grpc.DeepGuardServicer):
    def __init__(self, engine: Engine, metrics: Metrics) -> None:
        self.engine = engine
        self.metrics = metrics
        self.cfg = engine.config

    # -- bookkeeping -----------------------------------------------------------------------------------------
    def _finish(self, method: str, context, code: grpc.StatusCode, t0: float, **fields) -> None:
        if code == grpc.StatusCode.OK and not context.is_active():
            code = grpc.StatusCode.CANCELLED
        dt = time.perf_counter() - t0
        self.metrics.requests.labels(method, code.name).inc()
        self.metrics.request_latency.labels(method).observe(dt)
        log.info(
            "%s %s",
            method,
            code.name,
            extra={
                "event": "rpc",
                "method": method,
                "code": code.name,
                "ms": round(dt * 1e3, 1),
                "peer": context.peer(),
                **fields,
            },
        )

    def _unary(self, method: str, context, fn: Callable[[], object]):
        t0, code = time.perf_counter(), grpc.StatusCode.OK
        try:
            return fn()
        except Exception as e:  # noqa: BLE001
            code, msg = status_for(e)
            context.abort(code, msg)
        finally:
            self._finish(method, context, code, t0)

    def _streamed(self, method: str, context, gen: Iterator, stats: dict | None = None):
        t0, code = time.perf_counter(), grpc.StatusCode.OK
        try:
            yield from gen
        except Exception as e:  # noqa: BLE001
            code, msg = status_for(e)
            context.abort(code, msg)
        finally:
            self._finish(method, context, code, t0, **(stats or {}))

    @staticmethod
    def _gone(context) -> Callable[[], bool]:
        """A cancellation predicate: true once the call ended (client cancel, deadline, disconnect)."""
        ended = threading.Event()
        context.add_callback(ended.set)
        return lambda: ended.is_set() or not context.is_active()

    # -- StreamFrames ----------------------------------------------------------------------------------------------
    def StreamFrames(self, request_iterator, context):
        stats: dict = {"frames": 0}
        return self._streamed(
            "StreamFrames", context, self._stream_frames(request_iterator, context, stats), stats
        )

    def _stream_frames(self, requests, context, stats: dict) -> Iterator[pb.FrameResult]:
        gone_pred = self._gone(context)
        finished = threading.Event()

        def gone() -> bool:
            return finished.is_set() or gone_pred()

        # Bounded hand-over between the reader thread and this (writer) thread: when it is full the reader
        # stops reading, so HTTP/2 flow control pushes back on the client instead of memory growing.
        pending: queue.Queue = queue.Queue(maxsize=self.cfg.stream_window)
        reader = threading.Thread(
            target=self._read_stream, args=(requests, pending, gone), name="stream-reader", daemon=True
        )
        running = Tracker()  # persons across the stream; O(1) state per person, its score is the video rule
        thr = self.engine.threshold
        self.metrics.active_streams.inc()
        reader.start()
        try:
            while True:
                item = self._get(pending, gone, running.frames)
                if item is _END:
                    break
                if isinstance(item, _DrainStop):
                    yield self._summary(running)
                    raise item
                if isinstance(item, BaseException):
                    raise item
                frame, fut = item
                out: FrameOutcome = wait_future(fut, gone)
                running.update(out.faces)  # sets the faces' person ids before they are sent
                stats["frames"] = running.frames
                yield self._frame_result(frame, out, running, thr)
            yield self._summary(running)
        finally:
            finished.set()  # stops the reader and drops this stream's queued work
            self.metrics.active_streams.dec()

    def _get(self, pending: queue.Queue, gone: Callable[[], bool], done: int):
        while True:
            try:
                return pending.get(timeout=0.2)
            except queue.Empty:
                if gone():
                    raise Cancelled("stream cancelled") from None
                if self.engine.stop_reading():  # an idle stream must not hold up the shutdown
                    return _DrainStop(f"server is shutting down; results were sent for {done} frames")

    def _read_stream(self, requests, pending: queue.Queue, gone: Callable[[], bool]) -> None:
        def put(item) -> bool:
            while not gone():
                try:
                    pending.put(item, timeout=0.2)
                    return True
                except queue.Full:
                    continue
            return False

        position = 0
        try:
            for msg in requests:
                if gone():
                    return
                if self.engine.stop_reading():
                    put(
                        _DrainStop(
                            f"server is shutting down; results were sent for the first {position} frames"
                        )
                    )
                    return
                index = msg.index if msg.HasField("index") else position
                try:
                    image = wire.image_to_rgb(msg, f"frame {index}", self.cfg.max_frame_pixels)
                    frame = Frame(image, index, msg.time if msg.HasField("time") else None)
                    fut = self.engine.submit_frame(frame, gone)
                except Exception as e:  # noqa: BLE001 - bad frame / overload: ends the stream after earlier results
                    put(e)
                    return
                if not put((frame, fut)):
                    return
                position += 1
            put(_END)
        except Exception as e:  # noqa: BLE001 - the request stream itself failed (client gone, transport limit)
            if not gone():
                put(e)

    def _frame_result(self, frame: Frame, out: FrameOutcome, running: Tracker, thr: float) -> pb.FrameResult:
        score = running.score
        r = pb.FrameResult(
            index=frame.index,
            faces=[wire.face_to_pb(f) for f in out.faces],
            running_verdict=wire.VERDICTS[aggregate.verdict(score, thr, self.engine.band)],
            frames_done=running.frames,
        )
        if frame.time is not None:
            r.time = frame.time
        if out.score.score is not None:
            r.score = out.score.score
        if score is not None:
            r.running_score = score
        return r

    def _summary(self, running: Tracker) -> pb.FrameResult:
        thr, band, score = self.engine.threshold, self.engine.band, running.score
        verdict = wire.VERDICTS[aggregate.verdict(score, thr, band)]
        s = pb.StreamSummary(
            verdict=verdict,
            frames=running.frames,
            frames_with_faces=running.frames_with_faces,
            faces=running.faces,
            model=self.engine.classifier.name,
            threshold=thr,
            persons=[wire.person_to_pb(p) for p in running.persons(thr, band)],
        )
        if score is not None:
            s.score = score
        r = pb.FrameResult(summary=s, running_verdict=verdict, frames_done=running.frames)
        if score is not None:
            r.running_score = score
        return r

    # -- AnalyzeImage --------------------------------------------------------------------------------------------------
    def AnalyzeImage(self, request, context):
        def run():
            name = wire.sanitize_name(request.name, "<image>")
            image = wire.image_to_rgb(request, name, self.cfg.max_frame_pixels)
            budget = Budget(self.cfg.request_budget_s, self._gone(context))
            try:
                return wire.analysis_to_pb(self.engine.analyze_image(image, name, budget))
            except Cancelled as e:
                raise budget.explain(e, name) from e

        return self._unary("AnalyzeImage", context, run)

    # -- AnalyzeVideo --------------------------------------------------------------------------------------------------
    def AnalyzeVideo(self, request_iterator, context):
        return self._streamed("AnalyzeVideo", context, self._analyze_video(request_iterator, context))

    def _analyze_video(self, requests, context) -> Iterator[pb.VideoUpdate]:
        if not self.engine.uploads.acquire(blocking=False):
            raise Overloaded(
                f"server busy: {self.cfg.max_uploads} video uploads already in progress; retry later"
            )
        # In memory up to 16 MiB, then an anonymous temporary file (no name on disk); never a client-given name.
        buf = tempfile.SpooledTemporaryFile(max_size=16 * MiB)
        try:
            gone = self._gone(context)
            opts, name, received, last = None, "<upload>", 0, 0.0
            for chunk in requests:
                if opts is None:
                    opts = chunk.options
                    name = wire.sanitize_name(opts.name, "<upload>")
                received += len(chunk.data)
                if received > self.cfg.max_video_bytes:
                    raise MediaError(f"{name}: upload exceeds the limit of {self.cfg.max_video_bytes} bytes")
                if opts.HasField("total_bytes") and received > opts.total_bytes:
                    raise MediaError(
                        f"{name}: upload is longer than its declared total_bytes ({opts.total_bytes})"
                    )
                buf.write(chunk.data)
                if time.monotonic() - last >= PROGRESS_EVERY_S:
                    last = time.monotonic()
                    yield pb.VideoUpdate(progress=pb.Progress(bytes_received=received))
            if opts is None or received == 0:
                raise MediaError(f"{name}: empty upload: no video data received")
            if opts.HasField("total_bytes") and received != opts.total_bytes:
                raise MediaError(
                    f"{name}: upload truncated: received {received} of the {opts.total_bytes} bytes announced"
                )
            _refuse_image(buf, name)
            buf.seek(0)
            frames = self.engine.video_frames(
                buf,
                name,
                fps=opts.fps if opts.HasField("fps") else None,
                every_frame=opts.every_frame or None,
                max_frames=opts.max_frames if opts.HasField("max_frames") else None,
            )
            acc = Accumulator(
                name, "video", self.engine.classifier.name, self.engine.threshold, self.engine.band
            )
            budget = Budget(self.cfg.request_budget_s, gone)  # the analysis, not the upload, is budgeted
            try:
                for _, out in self.engine.run_frames(frames, budget):
                    acc.add(out)
                    if time.monotonic() - last >= PROGRESS_EVERY_S:
                        last = time.monotonic()
                        yield pb.VideoUpdate(progress=pb.Progress(bytes_received=received, frames_done=acc.n))
            except Cancelled as e:
                raise budget.explain(e, name) from e
            yield pb.VideoUpdate(result=wire.analysis_to_pb(acc.result()))
        finally:
            buf.close()
            self.engine.uploads.release()

    # -- AnalyzeFaces ---------------------------------------------------------------------------------------------------
    def AnalyzeFaces(self, request, context):
        def run():
            n = len(request.crops)
            if n == 0:
                raise MediaError("crops: empty batch: send at least one face crop")
            if n > self.cfg.max_faces_per_batch:
                raise MediaError(
                    f"crops: {n} crops, over the limit of {self.cfg.max_faces_per_batch} per call"
                )
            crops = [
                wire.image_to_rgb(c, f"crop {i}", self.cfg.max_frame_pixels)
                for i, c in enumerate(request.crops)
            ]
            scored = self.engine.score_crops(crops, self._gone(context))
            thr, band = self.engine.threshold, self.engine.band
            return pb.FaceScores(
                faces=[
                    pb.FaceScore(
                        score=p, member_scores=m, verdict=wire.VERDICTS[aggregate.verdict(p, thr, band)]
                    )
                    for p, m in scored
                ],
                model=self.engine.classifier.name,
                threshold=thr,
            )

        return self._unary("AnalyzeFaces", context, run)

    # -- GetModelInfo ---------------------------------------------------------------------------------------------------
    def GetModelInfo(self, request, context):
        def run():
            info = dict(self.engine.model_info())
            info["limits"] = pb.Limits(**info["limits"])
            return pb.ModelInfo(**info)

        return self._unary("GetModelInfo", context, run)
