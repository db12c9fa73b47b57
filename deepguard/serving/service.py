"""The gRPC servicer (``deepguard.v1.DeepGuard``): protocol handling only, all work goes to the Engine.

Status codes: bad input (empty/garbled messages, wrong dimensions, unknown colour order, over a pixel /
video / duration limit, undecodable media, truncated upload) -> INVALID_ARGUMENT with a message naming the
frame or upload and the problem; too many open streams (``--max-streams``, answered at the stream's start)
or uploads -> RESOURCE_EXHAUSTED; shutting down (a new call while draining, or a stream cut at the end of the
drain's reading period) -> UNAVAILABLE; a message over the transport limit -> RESOURCE_EXHAUSTED from gRPC itself; anything unexpected
-> INTERNAL (logged with its traceback). One call's failure never affects another call.

StreamFrames never fails a stream for load: its reader thread reads the next message only when the stream's
window and byte budget have room (``deepguard.serving.flow``), so HTTP/2 flow control slows the sender.
"""

from __future__ import annotations

import logging
import math
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import grpc

from deepguard.errors import MediaError
from deepguard.proto import deepguard_pb2 as pb
from deepguard.proto import deepguard_pb2_grpc as pb_grpc
from deepguard.runtime import aggregate
from deepguard.runtime.decode import load_image, media_kind, probe_image
from deepguard.runtime.types import Frame
from deepguard.serving import memory, wire
from deepguard.serving.batcher import Cancelled, Closed, Overloaded
from deepguard.serving.budget import Budget, OverBudget
from deepguard.serving.engine import Accumulator, Engine, FrameOutcome, ShuttingDown
from deepguard.serving.flow import DeferredFrame, Entry, LiveShare, StreamFlow
from deepguard.serving.metrics import Metrics
from deepguard.serving.stream_scoring import StreamScoring

log = logging.getLogger("deepguard.server")

MiB = 1 << 20
PROGRESS_EVERY_S = 0.5
LIVE_BACKLOG = 256  # answers a live stream may owe (mostly `skipped`) before its reads pause too
_END = object()


class TooManyStreams(Overloaded):
    """All ``--max-streams`` streams are open: refused at the start of the stream (RESOURCE_EXHAUSTED)."""


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


def _set_rescore_rate(scoring: StreamScoring, rate: float, position: int, label: str) -> None:
    """A stream's ``rescore_rate``: set by its first frame; later frames may repeat it, not change it."""
    if not (math.isfinite(rate) and rate >= 0):
        raise MediaError(
            f"{label}: rescore_rate must be a finite number >= 0 (0 = score every face), got {rate}"
        )
    if position == 0:
        scoring.set_rate(rate)
    elif rate != scoring.rescorer.rate:
        raise MediaError(
            f"{label}: rescore_rate {rate:g} differs from this stream's {scoring.rescorer.rate:g} "
            "(set it on the first frame; it holds for the whole stream)"
        )


def _refuse_image(buf, name: str) -> None:
    """A still image sent to AnalyzeVideo is the client's mistake: say so (FFmpeg would decode it as 1 frame)."""
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
        self._streams = 0  # open StreamFrames calls (the --max-streams limit)
        self._live = LiveShare(self.cfg.live_window)  # live frames in analysis, shared by the live streams
        self._streams_lock = threading.Lock()

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

    def _admit(self) -> None:
        """A draining server takes no new call (UNAVAILABLE before any response: a client may retry elsewhere)."""
        if self.engine.draining:
            raise ShuttingDown("server is shutting down; retry on another replica")

    def _unary(self, method: str, context, fn: Callable[[], object]):
        t0, code = time.perf_counter(), grpc.StatusCode.OK
        try:
            self._admit()
            return fn()
        except Exception as e:  # noqa: BLE001
            code, msg = status_for(e)
            context.abort(code, msg)
        finally:
            self._finish(method, context, code, t0)

    def _streamed(self, method: str, context, gen: Iterator, stats: dict | None = None):
        t0, code = time.perf_counter(), grpc.StatusCode.OK
        try:
            self._admit()
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
        stats: dict = {"frames": 0, "skipped": 0}
        return self._streamed(
            "StreamFrames", context, self._stream_frames(request_iterator, context, stats), stats
        )

    @contextmanager
    def _stream_slot(self) -> Iterator[None]:
        """Admit a stream, or refuse it at its start: the one limit a client cannot wait out mid-stream.

        When the last open stream ends, freed frame memory goes back to the OS (RSS returns near idle).
        """
        with self._streams_lock:
            if self._streams >= self.cfg.max_streams:
                self.metrics.rejected_total.labels("streams").inc()
                raise TooManyStreams(
                    f"server busy: {self._streams} streams already open (--max-streams "
                    f"{self.cfg.max_streams}); retry later"
                )
            self._streams += 1
        self.metrics.active_streams.inc()
        try:
            yield
        finally:
            with self._streams_lock:
                self._streams -= 1
                last = self._streams == 0
            self.metrics.active_streams.dec()
            if last:
                memory.trim()

    def _stream_frames(self, requests, context, stats: dict) -> Iterator[pb.FrameResult]:
        with self._stream_slot():
            gone_pred = self._gone(context)
            finished = threading.Event()

            def gone() -> bool:
                return finished.is_set() or gone_pred()

            key = object()  # this stream's lane in the batchers (round-robin across streams)
            scoring = StreamScoring(self.engine.rescore_rate, self.engine.scan_every)
            flow = StreamFlow(
                lambda fr: self.engine.submit_stream_frame(fr, scoring, gone, key),
                self.engine.frame_budget,
                window=self.cfg.stream_window,
                max_bytes=self.cfg.stream_max_bytes,
                live_window=self._live,
                backlog=LIVE_BACKLOG,
                launcher=self.engine.launcher,
            )
            reader = threading.Thread(
                target=self._read_stream,
                args=(requests, flow, scoring, gone),
                name="stream-reader",
                daemon=True,
            )
            reader.start()
            try:
                yield from self._answers(flow, scoring, gone, stats)
            finally:
                finished.set()  # stops the reader and drops this stream's queued work
                flow.close()

    def _answers(
        self, flow: StreamFlow, running: StreamScoring, gone: Callable[[], bool], stats: dict
    ) -> Iterator[pb.FrameResult]:
        """One answer per frame in stream order (analysed or skipped), then the summary. ``running``: the
        stream's persons (O(1) state per person; its score is the video rule) and re-scoring state."""
        thr = self.engine.threshold

        def idle() -> _DrainStop | None:  # an idle stream must not hold up the shutdown
            if self.engine.stop_reading():
                return _DrainStop(f"server is shutting down; results were sent for {running.frames} frames")
            return None

        while True:
            entry = flow.next_answer(gone, idle)
            if entry.final is _END:
                break
            if isinstance(entry.final, _DrainStop):
                yield self._summary(running, flow.skipped)
                raise entry.final
            if isinstance(entry.final, BaseException):
                raise entry.final
            if entry.skipped:
                stats["skipped"] += 1
                yield self._frame_result(entry, None, running, thr)
                continue
            out: FrameOutcome = entry.future.result()  # done: next_answer waited for it
            out.score, out.faces = running.complete(out.plan)  # carried scores, votes of classifier outputs
            stats["frames"] = running.frames
            yield self._frame_result(entry, out, running, thr)
        yield self._summary(running, flow.skipped)

    def _read_stream(
        self, requests, flow: StreamFlow, scoring: StreamScoring, gone: Callable[[], bool]
    ) -> None:
        """The stream's reader thread: reads a message only when the stream's window has room for it."""
        position = 0
        it = iter(requests)
        try:
            while flow.wait_for_room(gone):
                msg = next(it, None)
                if msg is None:
                    flow.finish(_END)
                    return
                if gone():
                    return
                if self.engine.stop_reading():
                    flow.finish(
                        _DrainStop(
                            f"server is shutting down; results were sent for the first {position} frames"
                        )
                    )
                    return
                index = msg.index if msg.HasField("index") else position
                try:
                    if msg.HasField("time") and not math.isfinite(msg.time):
                        raise MediaError(
                            f"frame {index}: time must be a finite number of seconds, got {msg.time}"
                        )
                    if msg.HasField("rescore_rate"):
                        _set_rescore_rate(scoring, msg.rescore_rate, position, f"frame {index}")
                    if position == 0 and not msg.HasField("time"):
                        scoring.untimed()
                    frame = self._frame(msg, index)
                except Exception as e:  # noqa: BLE001 - a bad frame ends the stream after earlier results
                    flow.finish(e)
                    return
                live, msg = msg.live, None  # the message's buffer is not kept while waiting for room
                flow.add(frame, live, gone)
                position += 1
        except Cancelled:
            return  # the stream ended while its reader waited for room
        except Exception as e:  # noqa: BLE001 - the request stream itself failed (client gone, transport limit)
            if not gone():
                flow.finish(e)

    def _frame(self, msg: pb.Frame, index: int) -> Frame | DeferredFrame:
        """A stream message's frame, checked. A live frame of encoded bytes is only sized from its header here
        and decoded if it is analysed (StreamFlow skips most live frames); anything else is decoded now."""
        label, limit = f"frame {index}", self.cfg.max_frame_pixels
        t = msg.time if msg.HasField("time") else None
        if msg.live and msg.WhichOneof("content") == "encoded":
            data = msg.encoded
            w, h = probe_image(data, label, max_pixels=limit)
            return DeferredFrame(index, t, w * h * 3, lambda: load_image(data, label, max_pixels=limit))
        return Frame(wire.image_to_rgb(msg, label, limit), index, t)

    def _frame_result(
        self, entry: Entry, out: FrameOutcome | None, running: StreamScoring, thr: float
    ) -> pb.FrameResult:
        """The answer for one frame; ``out`` None: a skipped live frame (no faces, running verdict carried)."""
        score = running.score
        r = pb.FrameResult(
            index=entry.index,
            running_verdict=wire.VERDICTS[aggregate.verdict(score, thr, self.engine.band)],
            frames_done=running.frames,
            skipped=out is None,
        )
        if entry.time is not None:
            r.time = entry.time
        if out is not None:
            r.faces.extend(wire.face_to_pb(f) for f in out.faces)
            if out.score.score is not None:
                r.score = out.score.score
        if score is not None:
            r.running_score = score
        return r

    def _summary(self, running: StreamScoring, skipped: int = 0) -> pb.FrameResult:
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
            frames_skipped=skipped,
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
