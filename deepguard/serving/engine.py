"""The serving engine: frames from every caller go through two shared dynamic batchers.

    frame -> [detector batcher: N frames per BlazeFace run] -> crop -> [classifier batcher: M crops per run]
          -> FrameOutcome (same faces, boxes and scores as ``Detector.iter_frames`` gives in-process)

Each frame is a chain of futures: the detector batcher's callback crops the frame's faces and submits them
to the classifier batcher, whose callback assembles the result. Callers keep the futures of their frames in
order, so per-stream ordering holds however the batches interleave streams. A caller's ``cancelled()``
predicate travels with its work, so a dropped stream's queued frames and crops are skipped, not computed.

The face assembly mirrors ``deepguard.runtime.pipeline.Detector._faces_for_chunk`` (box rounding, keypoints,
member scores); tests compare the two result for result.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO

import numpy as np

from deepguard import __version__
from deepguard.errors import MediaError
from deepguard.runtime import aggregate
from deepguard.runtime.decode import iter_video_frames, load_image, video_info
from deepguard.runtime.facedet.regions import (
    REGION_SCORE,
    RegionJob,
    RegionSchedule,
    region_faces,
    region_job,
)
from deepguard.runtime.pipeline import Detector, assemble_faces
from deepguard.runtime.track import Tracker
from deepguard.runtime.types import Analysis, Face, FaceBoxes, Frame, FrameScore
from deepguard.serving import memory
from deepguard.serving.batcher import BatchObserver, Cancelled, DynamicBatcher
from deepguard.serving.config import ServerConfig
from deepguard.serving.flow import FrameBudget
from deepguard.serving.metrics import Metrics
from deepguard.serving.stream_scoring import Plan, StreamScoring

log = logging.getLogger("deepguard.server.engine")

Predicate = Callable[[], bool]


class ShuttingDown(Exception):
    """The server is draining and takes no new work."""


@dataclass
class FrameOutcome:
    score: FrameScore
    faces: list[Face]
    # Stream mode (submit_stream_frame): the frame's plan; the caller finishes it with StreamScoring.complete, in
    # stream order, which sets ``score`` and the carried faces' scores.
    plan: Plan | None = None


class Accumulator:
    """Collects frame outcomes into an Analysis exactly as ``Detector.analyze_frames`` aggregates them."""

    def __init__(
        self, name: str, kind: str, model: str, threshold: float, band: tuple[float, float] | None = None
    ) -> None:
        self.name, self.kind, self.model, self.threshold = name, kind, model, threshold
        self.band = band
        self.scores: list[FrameScore] = []
        self.faces: list[Face] = []
        self.tracker = Tracker()  # sets each face's person id as it comes

    @property
    def n(self) -> int:
        return len(self.scores)

    def add(self, out: FrameOutcome) -> None:
        self.scores.append(out.score)
        self.faces.extend(out.faces)
        self.tracker.update(out.faces)

    def result(self) -> Analysis:
        if self.kind == "video" and not self.scores:
            raise MediaError(f"{self.name}: no frames could be decoded")
        if self.kind == "image":
            score = self.scores[0].score if self.scores else None
        else:
            score = self.tracker.score
        return Analysis(
            path=self.name,
            kind=self.kind,  # type: ignore[arg-type]
            verdict=aggregate.verdict(score, self.threshold, self.band),
            score=score,
            faces=self.faces,
            frames=self.scores if self.kind == "video" else [],
            model=self.model,
            threshold=self.threshold,
            frames_sampled=len(self.scores),
            persons=self.tracker.persons(self.threshold, self.band),
        )


def wait_future(fut: Future, cancelled: Predicate | None, poll: float = 0.2):
    """``fut.result()`` that gives up with Cancelled as soon as the caller is gone (never blocks forever)."""
    while True:
        try:
            return fut.result(timeout=poll)
        except FutureTimeout:
            if cancelled is not None and cancelled():
                raise Cancelled("caller cancelled") from None


#: Detector batcher threads (for a detector that is ``thread_safe``; SCRFD keeps one). Why two: a detector batch is
#: followed, on the same thread, by each stream's next steps in its futures' callbacks (region jobs, tracking,
#: planning: Python under the GIL), and stream mode's next detection of a stream waits for them, so one thread left
#: onnxruntime idle between batches (4 real-time 720p JPEG streams: the detector thread 91 % busy, the server using
#: ~1.3 of 2 cores). With two, one batch runs while the other's callbacks do. One vs two threads, paired runs on the
#: 2-core AVX2 host: lossless JPEG analysed frames/s median 1.08x (9 pairs, 0.83-1.34x); live JPEG 1.30x (5 pairs,
#: all higher), p50 latency lower in all 5, p99 unchanged (291-400 vs 294-392 ms). Results stay in order: callers
#: hold their frames' futures in order.
DETECTOR_WORKERS = 2


class Engine:
    """Owns the models and the two batchers; shared by the gRPC service and the REST app."""

    def __init__(self, detector: Detector, config: ServerConfig, metrics: Metrics | None = None) -> None:
        self.detector = detector
        self.config = config
        self.classifier = detector.classifier
        self.face_detector = detector.face_detector  # load now, not inside the batcher thread
        self.size = self.classifier.input_size
        self.margin = detector.margin
        self.threshold = detector.threshold
        self.band = detector.band  # uncertain band (None: binary verdicts)
        self.rescore_rate = detector.rescore_rate  # StreamFrames' default (serve --rescore-rate)
        # stream mode's full scan every N frames, regions in between (BlazeFace only; 1 = scan every frame)
        self.scan_every = detector.region_scan_every
        self.metrics = metrics
        self.observer: BatchObserver = metrics or BatchObserver()
        self.det_batcher = DynamicBatcher(
            "detector",
            self._detect,
            max_batch=config.detector_max_batch,
            max_wait_ms=config.max_wait_ms,
            max_queue=config.max_queue,
            observer=self.observer,
            workers=DETECTOR_WORKERS if getattr(self.face_detector, "thread_safe", False) else 1,
        )
        self.cls_batcher = DynamicBatcher(
            "classifier",
            self._classify,
            max_batch=config.classifier_max_batch,
            max_wait_ms=config.max_wait_ms,
            max_queue=max(config.max_queue, config.max_faces_per_batch),
            observer=self.observer,
        )
        # Every frame of every caller waits here (never fails) before it reaches the detector queue, so the
        # queues cannot overflow and queued pixels have one ceiling (deepguard.serving.flow).
        self.frame_budget = FrameBudget(config.max_queued_bytes, config.max_queue)
        # Live streams hand a waiting frame to the engine here once a slot frees up (StreamFlow's launcher):
        # decoding it must not run on the batcher thread that freed the slot.
        self.launcher = ThreadPoolExecutor(max_workers=2, thread_name_prefix="live-launch")
        memory.pin_mmap_threshold()
        self.uploads = threading.BoundedSemaphore(max(1, config.max_uploads))
        self.draining = False
        self._read_deadline = math.inf
        self._local = threading.local()  # marks threads running a bounded job (see finishing())

    # -- model runs (batcher threads) ------------------------------------------------------------------------
    def _detect(self, items: list[tuple]) -> list[FaceBoxes]:
        """One detector run over frames of many callers; a detector that supports it skips the remaining
        views of a frame whose caller has gone (checked between its chunks), so a cancel or deadline stops work.

        An item is ``(image, cancelled)`` or ``(image, cancelled, job)``: a RegionJob (stream mode between full
        scans) is detected through its mosaic views, in the same run as the full frames.
        """
        views, cancels, spans = [], [], []
        for image, cancelled, *rest in items:
            job: RegionJob | None = rest[0] if rest else None
            vs = [image] if job is None else job.views
            spans.append((len(views), len(vs), job))
            views += vs
            cancels += [cancelled] * len(vs)
        kwargs: dict = {}
        if getattr(self.face_detector, "supports_cancel", False):
            kwargs["cancelled"] = cancels
        if any(job is not None for *_, job in spans):  # region jobs: BlazeFace only
            full = self.face_detector.score_threshold
            kwargs["thresholds"] = [
                full if job is None else REGION_SCORE for _, n, job in spans for _ in range(n)
            ]
        found = self.face_detector.detect(views, **kwargs)
        nms = getattr(self.face_detector, "nms_iou", 0.3)
        return [found[a] if job is None else region_faces(job, found[a : a + n], nms) for a, n, job in spans]

    def _classify(self, crops: list[np.ndarray]) -> list[tuple[float, list[float]]]:
        probs, members = self.classifier.score(np.stack(crops))
        return [(float(p), [float(v) for v in m]) for p, m in zip(probs, members, strict=True)]

    # -- frames ---------------------------------------------------------------------------------------------------
    def submit_frame(
        self, frame: Frame, cancelled: Predicate | None = None, key: object | None = None
    ) -> Future:
        """Queue one RGB frame; the Future resolves to a FrameOutcome (or Cancelled / the model's error).

        The caller must hold a ``frame_budget`` grant for it (``admit_and_submit``): that is what bounds the
        queues, so the frame is never refused for a full queue. ``key`` names the caller's lane in the
        batchers (one per stream: batches are formed round-robin over lanes). Raises ShuttingDown / Closed
        synchronously.
        """
        if self.stop_reading() and not self._finishing_job():
            raise ShuttingDown("server is shutting down")
        out: Future = Future()
        t0 = time.perf_counter()

        def fail(e: BaseException) -> None:
            if not out.done():
                out.set_exception(e)

        def on_classified(f: Future, boxes: FaceBoxes) -> None:
            try:
                out.set_result(self._outcome(frame, boxes, f.result()))
                self._observe_frame(t0, len(boxes))
            except BaseException as e:  # noqa: BLE001 - surfaced through the future
                fail(e)

        def on_detected(f: Future) -> None:
            try:
                boxes: FaceBoxes = f.result()[0]
                if cancelled is not None and cancelled():  # its detection may have been cut short
                    raise Cancelled("caller cancelled")
                if len(boxes) == 0:
                    out.set_result(self._outcome(frame, boxes, []))
                    self._observe_frame(t0, 0)
                    return
                crops = self.classifier.crops(frame.image, boxes.boxes, self.margin)
                # force: the frame was admitted through frame_budget, which bounds the crops it can make
                cf = self.cls_batcher.submit(list(crops), cancelled, key=key, force=True)
                cf.add_done_callback(lambda g: on_classified(g, boxes))
            except BaseException as e:  # noqa: BLE001
                fail(e)

        det = self.det_batcher.submit([(frame.image, cancelled)], cancelled, key=key, force=True)
        det.add_done_callback(on_detected)
        return out

    def submit_stream_frame(
        self,
        frame: Frame,
        stream: StreamScoring,
        cancelled: Predicate | None = None,
        key: object | None = None,
    ) -> Future:
        """``submit_frame`` in stream mode (:mod:`deepguard.serving.stream_scoring`): the frame is tracked in
        stream order after detection, and only the faces its plan names go to the classifier. The Future's
        FrameOutcome carries the plan; the caller passes it to ``stream.complete`` in stream order."""
        if self.stop_reading() and not self._finishing_job():
            raise ShuttingDown("server is shutting down")
        out: Future = Future()
        t0 = time.perf_counter()
        ticket = stream.ticket()

        def fail(e: BaseException) -> None:
            if not out.done():
                out.set_exception(e)

        def finish(boxes: FaceBoxes | None, scanned: bool, error: BaseException | None) -> None:
            """The frame's final detection (``boxes`` None: it failed): the schedule learns it first, so the
            stream's next frame can start; then the frame is tracked and planned in stream order."""
            if stream.schedule is not None:
                stream.schedule.observe(None if boxes is None else boxes.boxes, frame.time)
                stream.detection_done()
            try:
                stream.detected(
                    ticket,
                    frame,
                    boxes,
                    lambda plan, idx: self._classify_planned(
                        frame, plan, idx, error, out, t0, cancelled, key
                    ),
                    scanned,
                )
            except BaseException as e:  # noqa: BLE001
                fail(e)

        def start() -> None:
            self._detect_stream_frame(frame, stream.schedule, cancelled, key, finish)

        if stream.schedule is None:
            start()
        else:  # where to look depends on the previous frame's faces: one detection per stream at a time
            stream.start_detection(ticket, start)
        return out

    def _classify_planned(
        self,
        frame: Frame,
        plan: Plan | None,
        idx: list[int] | None,
        error: BaseException | None,
        out: Future,
        t0: float,
        cancelled: Predicate | None,
        key: object | None,
    ) -> None:
        """Send a planned frame's chosen crops to the classifier; ``out`` gets the FrameOutcome (or the error).
        Called once per frame by ``stream.detected``; never raises (the frames after it are called next)."""

        def fail(e: BaseException) -> None:
            if not out.done():
                out.set_exception(e)

        def on_classified(f: Future) -> None:
            try:
                for j, (p, m) in zip(idx or [], f.result(), strict=True):
                    plan.faces[j].score, plan.faces[j].member_scores = p, m
                pending = FrameScore(frame.index, frame.time, None, len(plan.faces))  # set by complete()
                out.set_result(FrameOutcome(pending, plan.faces, plan))
                self._observe_frame(t0, len(plan.faces))
            except BaseException as e:  # noqa: BLE001 - surfaced through the future
                fail(e)

        try:
            if plan is None:
                raise error if error is not None else Cancelled("frame passed over")
            if not idx:
                done: Future = Future()
                done.set_result([])
                on_classified(done)
                return
            crops = self.classifier.crops(frame.image, plan.boxes.boxes[idx], self.margin)
            cf = self.cls_batcher.submit(list(crops), cancelled, key=key, force=True)
            cf.add_done_callback(on_classified)
        except BaseException as e:  # noqa: BLE001 - surfaced through the future
            fail(e)

    def _detect_stream_frame(
        self,
        frame: Frame,
        schedule: RegionSchedule | None,
        cancelled: Predicate | None,
        key: object | None,
        finish: Callable[[FaceBoxes | None, bool, BaseException | None], None],
    ) -> None:
        """Submit the frame's detection: a full scan, or (``schedule`` says so) regions around the previous
        frame's faces, redone as a full scan if they lose a face (:mod:`deepguard.runtime.facedet.regions`).
        Calls ``finish(boxes, scanned, error)`` exactly once; never raises."""

        def submit(job: RegionJob | None) -> None:
            det = self.det_batcher.submit([(frame.image, cancelled, job)], cancelled, key=key, force=True)
            det.add_done_callback(lambda f: on_detected(f, job))

        def on_detected(f: Future, job: RegionJob | None) -> None:
            try:
                boxes: FaceBoxes = f.result()[0]
                if cancelled is not None and cancelled():  # its detection may have been cut short
                    raise Cancelled("caller cancelled")
                if job is not None and RegionSchedule.lost_a_face(len(job.regions), boxes):
                    submit(None)
                    return
            except BaseException as e:  # noqa: BLE001 - the frame is passed over, its error surfaced
                finish(None, True, e)
                return
            finish(boxes, job is None, None)

        try:
            job = None
            if schedule is not None and not schedule.full_scan_due(frame.time):
                job = region_job(self.face_detector, frame.image, schedule.last)
            submit(job)
        except BaseException as e:  # noqa: BLE001 - e.g. the batcher closed: surfaced through the future
            finish(None, True, e)

    def _observe_frame(self, t0: float, n_faces: int) -> None:
        if self.metrics is not None:
            self.metrics.frame_latency.observe(time.perf_counter() - t0)
            self.metrics.frames.inc()
            self.metrics.faces.inc(n_faces)

    @staticmethod
    def _outcome(frame: Frame, d: FaceBoxes, scored: list[tuple[float, list[float]]]) -> FrameOutcome:
        faces = assemble_faces(frame, d, [p for p, _ in scored], [m for _, m in scored])
        score = aggregate.frame_score([f.score for f in faces])
        return FrameOutcome(FrameScore(frame.index, frame.time, score, len(faces)), faces)

    def run_frames(
        self, frames: Iterable[Frame], cancelled: Predicate | None = None, window: int | None = None
    ) -> Iterator[tuple[Frame, FrameOutcome]]:
        """Results in input order with at most ``window`` frames in flight (for sources that never block).

        Leaving early (error, caller gone, generator closed) cancels the frames still queued.
        """
        window = max(1, window or self.config.stream_window)
        stop = threading.Event()

        def gone() -> bool:
            return stop.is_set() or (cancelled is not None and cancelled())

        pending: deque[tuple[Frame, Future]] = deque()
        key = object()  # this caller's lane in the batchers
        try:
            for fr in frames:
                if gone():
                    raise Cancelled("caller cancelled")
                pending.append((fr, self.admit_and_submit(fr, gone, key)))
                while len(pending) >= window:
                    head, fut = pending.popleft()
                    yield head, wait_future(fut, gone)
            while pending:
                head, fut = pending.popleft()
                yield head, wait_future(fut, gone)
        finally:
            stop.set()

    def admit_and_submit(
        self, frame: Frame, cancelled: Predicate | None, key: object | None = None
    ) -> Future:
        """Wait for a ``frame_budget`` grant (never refused), then ``submit_frame``; the grant ends with it."""
        n = int(frame.image.nbytes)
        self.frame_budget.acquire(n, cancelled)
        try:
            fut = self.submit_frame(frame, cancelled, key)
        except BaseException:
            self.frame_budget.release(n)
            raise
        fut.add_done_callback(lambda _f: self.frame_budget.release(n))
        return fut

    def analyze_frames(
        self,
        frames: Iterable[Frame],
        name: str,
        kind: str = "video",
        cancelled: Predicate | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Analysis:
        """Same aggregation as ``Detector.analyze_frames``, over the shared batchers."""
        acc = Accumulator(name, kind, self.classifier.name, self.threshold, self.band)
        for _, out in self.run_frames(frames, cancelled):
            acc.add(out)
            if progress:
                progress(acc.n)
        return acc.result()

    # -- whole inputs -------------------------------------------------------------------------------------------
    def analyze_image(self, image: np.ndarray, name: str, cancelled: Predicate | None = None) -> Analysis:
        return self.analyze_frames([Frame(image, 0, None)], name, "image", cancelled)

    def analyze_image_bytes(self, data: bytes, name: str, cancelled: Predicate | None = None) -> Analysis:
        if len(data) > self.config.max_message_bytes:
            raise MediaError(
                f"{name}: image is {len(data)} bytes, over the limit of {self.config.max_message_bytes} bytes"
            )
        image = load_image(data, name=name, max_pixels=self.config.max_frame_pixels)
        return self.analyze_image(image, name, cancelled)

    def video_frames(
        self,
        f: IO[bytes],
        name: str,
        *,
        fps: float | None = None,
        every_frame: bool | None = None,
        max_frames: int | None = None,
    ) -> Iterator[Frame]:
        """Sampled frames of a seekable in-memory / anonymous-temp-file video, after the limit checks.

        MediaError (naming ``name``) for undecodable input, bad sampling options or a video over the
        per-frame pixel or duration limit.
        """
        cfg = self.config
        fps = cfg.fps if fps is None else fps
        every_frame = cfg.every_frame if every_frame is None else every_frame
        max_frames = cfg.max_frames if max_frames is None else max_frames
        if fps is not None and not (math.isfinite(fps) and fps > 0):
            raise MediaError(f"{name}: fps must be a positive number, got {fps}")
        if max_frames is not None and max_frames <= 0:
            raise MediaError(f"{name}: max_frames must be positive, got {max_frames}")
        info = video_info(f, name=name)
        if info["width"] * info["height"] > cfg.max_frame_pixels:
            raise MediaError(
                f"{name}: video frames are {info['width']}x{info['height']}, over the limit of "
                f"{cfg.max_frame_pixels / 1e6:.1f} MP per frame"
            )
        if info["duration"] is not None and info["duration"] > cfg.max_video_seconds:
            raise MediaError(
                f"{name}: video is {info['duration']:.1f} s long, over the limit of {cfg.max_video_seconds:g} s"
            )
        f.seek(0)
        frames = iter_video_frames(f, fps=fps, every_frame=every_frame, max_frames=max_frames, name=name)

        def limited() -> Iterator[Frame]:  # headerless streams have no duration: enforce it while decoding
            for fr in frames:
                if fr.time is not None and fr.time > cfg.max_video_seconds:
                    raise MediaError(f"{name}: video runs past the limit of {cfg.max_video_seconds:g} s")
                yield fr

        return limited()

    def analyze_video_file(
        self,
        f: IO[bytes],
        name: str,
        *,
        fps: float | None = None,
        every_frame: bool | None = None,
        max_frames: int | None = None,
        cancelled: Predicate | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Analysis:
        frames = self.video_frames(f, name, fps=fps, every_frame=every_frame, max_frames=max_frames)
        return self.analyze_frames(frames, name, "video", cancelled, progress)

    def score_crops(
        self, crops: list[np.ndarray], cancelled: Predicate | None = None
    ) -> list[tuple[float, list[float]]]:
        """Face crops the caller cut itself, resized like ``Detector(face_crops=True)`` does."""
        import cv2

        s = self.size
        resized = [
            c
            if c.shape[:2] == (s, s)
            else cv2.resize(
                c, (s, s), interpolation=cv2.INTER_AREA if min(c.shape[:2]) > s else cv2.INTER_LINEAR
            )
            for c in crops
        ]
        if self.stop_reading():
            raise ShuttingDown("server is shutting down")
        return wait_future(self.cls_batcher.submit(resized, cancelled), cancelled)

    # -- info and lifecycle ------------------------------------------------------------------------------------
    def model_info(self) -> dict:
        cfg = self.config
        return {
            "model": self.classifier.name,
            "input_size": self.size,
            "threshold": self.threshold,
            **(
                {"uncertain_low": self.band[0], "uncertain_high": self.band[1]}
                if self.band is not None
                else {}
            ),
            "detector": getattr(self.face_detector, "name", type(self.face_detector).__name__),
            "provider": self.classifier.provider,
            "metadata_json": json.dumps(self.classifier.meta, default=str, sort_keys=True),
            "limits": {
                "max_message_bytes": cfg.max_message_bytes,
                "max_frame_pixels": cfg.max_frame_pixels,
                "max_video_bytes": cfg.max_video_bytes,
                "max_video_seconds": cfg.max_video_seconds,
                "max_faces_per_batch": cfg.max_faces_per_batch,
                "stream_window": cfg.stream_window,
                "max_streams": cfg.max_streams,
                "stream_max_bytes": cfg.stream_max_bytes,
                "max_queued_bytes": cfg.max_queued_bytes,
                "live_window": cfg.live_window,
            },
            "server_version": __version__,
        }

    def begin_drain(self, grace_s: float) -> None:
        """Stop taking new work; open streams keep being read for half the grace period, then flushed."""
        self.draining = True
        self._read_deadline = time.monotonic() + grace_s / 2
        self._drain_end = time.monotonic() + grace_s

    @contextmanager
    def finishing(self) -> Iterator[None]:
        """Frames this thread submits inside belong to one bounded job (a whole file over REST / the web app).

        Why: an open stream is cut at half the grace period so it cannot hold up the shutdown, but a file
        upload already accepted has a known end and was promised to finish - it may keep submitting frames
        until the whole grace period has passed (it used to get 503 at half of it).
        """
        self._local.job = True
        try:
            yield
        finally:
            self._local.job = False

    def _finishing_job(self) -> bool:
        return getattr(self._local, "job", False) and time.monotonic() < getattr(self, "_drain_end", math.inf)

    def stop_reading(self) -> bool:
        return self.draining and time.monotonic() >= self._read_deadline

    def close(self) -> None:
        self.launcher.shutdown(wait=False, cancel_futures=True)
        self.det_batcher.close()
        self.cls_batcher.close()
