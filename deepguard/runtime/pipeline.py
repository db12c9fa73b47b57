"""The runtime pipeline: decode -> detect -> crop -> classify -> aggregate, batched across frames.

``Detector().analyze(path)`` handles one image or video file; ``Detector().analyze_frames(frames)`` handles any
iterable of frames (a camera, a gRPC stream). Frames are processed in chunks: one detector run per chunk and one
classifier run for all faces of the chunk, which is what makes the edge CPU fast enough for every-frame video.

Long inputs are pipelined: a reader thread pulls (decodes) frames, a detector thread detects and crops chunk
k+1 while the caller's thread classifies chunk k, with bounded queues between them. PyAV, OpenCV and
onnxruntime all release the GIL, so the stages really overlap; results stay in input order, and an error
from the source surfaces after the frames before it, exactly as in the serial loop.

Sessions do not busy-wait (``deepguard.runtime.providers``, ``DEEPGUARD_SPIN``): onnxruntime's idle workers
would otherwise spin for their next task and steal the core the other stage (or another process) needs.
Measured on the shared 2-core VM (interleaved, a neighbour busy on one core): 720p every frame 19.6 fps with
the serial loop and spinning sessions, 28.0 pipelined with non-spinning sessions; one 6-face photo 112 -> 51 ms.
Knobs: ``Detector(pipeline=False)`` or ``DEEPGUARD_PIPELINE=0`` for the serial loop, ``threads=N`` /
``DEEPGUARD_THREADS`` for the sessions' intra-op threads (default: one per core), ``chunk`` for frames per model
run. Inputs of at most one chunk (a photo) skip the threads.

Stream mode (``rescore_rate`` R > 0, the default; :mod:`deepguard.runtime.stream`): faces are tracked on every
frame and a person is classified only when new, stale (1/R s of video time) or changed; other frames carry its
latest score with ``Face.age``. At 1 fps sampling every face is stale on every sampled frame, so only dense
frame sequences (``--every-frame``, camera streams) are affected. ``rescore_rate=0`` scores every face.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from pathlib import Path

import numpy as np

from deepguard.errors import DeepGuardError, MediaError
from deepguard.runtime import aggregate
from deepguard.runtime.classify import FaceClassifier
from deepguard.runtime.decode import iter_video_frames, load_image, media_kind
from deepguard.runtime.facedet.regions import SCAN_EVERY, RegionScan
from deepguard.runtime.stream import RESCORE_RATE, Rescorer, finish_frame, plan_frame
from deepguard.runtime.track import Tracker
from deepguard.runtime.types import Analysis, Face, FaceBoxes, Frame, FrameScore

log = logging.getLogger("deepguard.pipeline")

#: Chunks buffered between two pipeline stages: enough to hide jitter, small enough to bound memory
#: (a 720p chunk of 8 frames is 22 MB).
QUEUE_CHUNKS = 2
_POLL_S = 0.1


class _Failed:
    """An exception travelling down the pipeline queues in order, raised where the serial loop raised it."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_END = object()


def pipeline_default() -> bool:
    """``DEEPGUARD_PIPELINE`` (default on)."""
    return os.environ.get("DEEPGUARD_PIPELINE", "1").strip().lower() not in ("0", "false", "no", "off")


def _as_frame(f: Frame | np.ndarray, i: int) -> Frame:
    if isinstance(f, Frame):
        return f
    return Frame(np.asarray(f), index=i, time=None)


def _check_frame(img: np.ndarray, name: str) -> np.ndarray:
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3 or min(img.shape[:2]) < 1:
        raise MediaError(f"{name}: frame must be (H, W, 3) uint8 RGB, got {img.shape} {img.dtype}")
    return img


def assemble_faces(
    frame: Frame, d: FaceBoxes, probs: Sequence[float], members: Sequence[Sequence[float]]
) -> list[Face]:
    """Scored ``Face`` records for one frame's detections (boxes/keypoints rounded to 0.01 px).

    The one place that builds faces, shared by this pipeline and the server's engine, so both report identical
    numbers for the same frame.
    """
    boxes = [[round(v, 2) for v in row] for row in d.boxes.tolist()]
    scores = d.scores.tolist()
    kps = np.round(d.keypoints, 2).tolist()
    return [
        Face(
            box=boxes[j],
            det_score=scores[j],
            keypoints=kps[j],
            frame=frame.index,
            time=frame.time,
            score=float(probs[j]),
            member_scores=[float(v) for v in members[j]],
        )
        for j in range(len(d))
    ]


def usable_band(band: tuple[float, float] | None, threshold: float) -> tuple[float, float] | None:
    """The model's uncertain band if it still brackets ``threshold``; None (binary verdicts) otherwise.

    Why: an overridden ``--threshold`` outside the band would make "real"/"fake" contradict the threshold the
    user asked for, so such a run gets binary verdicts at that threshold.
    """
    if band is None or not band[0] <= threshold <= band[1]:
        if band is not None:
            log.info("threshold %.4f is outside the uncertain band %s: binary verdicts", threshold, band)
        return None
    return band


class Detector:
    """Face-level deepfake detector over images, videos and frame streams."""

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        detector: str | None = None,
        providers: Sequence[str] | str | None = None,
        precision: str = "auto",
        margin: float = 0.3,
        fps: float | None = 1.0,
        every_frame: bool = False,
        max_frames: int | None = None,
        face_crops: bool = False,
        chunk: int = 8,
        threads: int | None = None,
        threshold: float | None = None,
        pipeline: bool | None = None,
        rescore_rate: float = RESCORE_RATE,
        scan_every: int = SCAN_EVERY,
    ) -> None:
        if rescore_rate < 0:
            raise ValueError(f"rescore_rate must be >= 0 (0 = score every face), got {rescore_rate}")
        self.rescore_rate = float(rescore_rate)
        # stream mode: a full detector scan every N frames, regions in between (1 = a full scan on every frame)
        self.scan_every = max(1, int(scan_every))
        self.pipeline = pipeline_default() if pipeline is None else bool(pipeline)
        self.threads = threads
        self.classifier = FaceClassifier(model, precision=precision, providers=providers, threads=threads)
        self.face_crops = face_crops
        self._detector_spec = detector
        self._providers = providers
        self._face_detector = None
        self._split_detector = None  # stream mode's, when its full scans run ahead (_scan_detector)
        self._detector_lock = threading.Lock()
        self.margin = margin
        self.fps, self.every_frame, self.max_frames = fps, every_frame, max_frames
        self.chunk = max(1, chunk)
        self.threshold = self.classifier.threshold if threshold is None else float(threshold)
        self.band = usable_band(self.classifier.band, self.threshold)

    @property
    def face_detector(self):
        """Loaded on first use so that ``--face-crops`` runs never open the detector model."""
        if self._face_detector is None:
            with self._detector_lock:  # the pipeline's detector thread and the caller may race here
                if self._face_detector is None:
                    self._face_detector = self._load_detector(self.threads)
        return self._face_detector

    def _provider_names(self) -> list[str]:
        from deepguard.runtime.providers import provider_names, resolve_providers

        return provider_names(resolve_providers(self._providers))

    def _load_detector(self, threads: int | None):
        from deepguard.runtime.facedet import load_detector

        return load_detector(self._detector_spec, providers=self._provider_names(), threads=threads)

    def _scan_detector(self):
        """The detector of a stream whose full scans run ahead. On the CPU with no thread count given
        (``threads``, DEEPGUARD_THREADS): a detector of its own whose sessions use half the cores each. Why: the
        region search and the scans ahead call it from two threads at once, and two runs on their own cores beat
        two runs sharing one pool of all cores (stream mode 1.10x median on the 720p clip, 2 cores, 6 alternating
        rounds; same faces and scores)."""
        if (
            self.threads is not None
            or os.environ.get("DEEPGUARD_THREADS")
            or self._provider_names() != ["CPUExecutionProvider"]
        ):
            return self.face_detector
        with self._detector_lock:
            if self._split_detector is None:
                self._split_detector = self._load_detector(max(1, len(os.sched_getaffinity(0)) // 2))
        return self._split_detector

    @property
    def model_name(self) -> str:
        return self.classifier.name

    # -- core: frames -> faces ---------------------------------------------------------------------------
    def _face_crop_chunk(self, frames: list[Frame]) -> list[list[Face]]:
        """``face_crops`` mode: each frame is one already-cropped face, resized and classified (no detector)."""
        import cv2

        size = self.classifier.input_size
        crops = np.stack(
            [
                cv2.resize(
                    f.image,
                    (size, size),
                    interpolation=cv2.INTER_AREA if min(f.image.shape[:2]) > size else cv2.INTER_LINEAR,
                )
                for f in frames
            ]
        )
        probs, members = self.classifier.score(crops)
        return [
            [
                Face(
                    box=[0.0, 0.0, float(f.image.shape[1]), float(f.image.shape[0])],
                    det_score=1.0,
                    keypoints=[],
                    frame=f.index,
                    time=f.time,
                    score=float(p),
                    member_scores=m.tolist(),
                )
            ]
            for f, p, m in zip(frames, probs, members, strict=False)
        ]

    def _detect_chunk(self, frames: list[Frame]) -> tuple[list[FaceBoxes], np.ndarray]:
        """Detector run for a chunk of frames + the crops of all their faces (concatenated, frame order)."""
        size = self.classifier.input_size
        dets = self.face_detector.detect([f.image for f in frames])
        crops = [
            self.classifier.crops(f.image, d.boxes, self.margin) for f, d in zip(frames, dets, strict=False)
        ]
        all_crops = np.concatenate(crops) if crops else np.zeros((0, size, size, 3), np.uint8)
        return dets, all_crops

    def _detect_only(
        self, scan: RegionScan | None, frames: list[Frame]
    ) -> tuple[list[FaceBoxes], list[bool]]:
        """Stream mode's detector stage: boxes only (which faces to crop is decided after tracking), and which
        frames were full scans; with a BlazeFace, full scans every ``scan_every`` frames and regions around the
        last faces in between (:mod:`deepguard.runtime.facedet.regions`)."""
        if scan is None:
            return self.face_detector.detect([f.image for f in frames]), [True] * len(frames)
        return scan.detect(frames)

    def _stream_chunk(
        self,
        tracker: Tracker,
        rescorer: Rescorer,
        frames: list[Frame],
        dets: list[FaceBoxes],
        scanned: list[bool],
    ) -> list[list[Face]]:
        """Track every frame, classify only the faces :class:`Rescorer` asks for, carry the rest (on frames
        that were not full scans, only new persons are classified: ``Rescorer.plan(new_only=...)``).

        Frame by frame (not one classifier run per chunk): tracking a frame needs the previous frame's persons
        complete, and in stream mode a frame has a fraction of a face to classify on average, so batching
        across frames would save little.
        """
        out = []
        for f, d, full in zip(frames, dets, scanned, strict=True):
            nan = [float("nan")] * len(d)
            faces = assemble_faces(f, d, nan, [[] for _ in nan])
            plan, idx = plan_frame(tracker, rescorer, faces, full)
            if idx:
                probs, members = self.classifier.score(
                    self.classifier.crops(f.image, d.boxes[idx], self.margin)
                )
                for j, p, m in zip(
                    idx, probs.tolist(), np.asarray(members, np.float64).tolist(), strict=True
                ):
                    faces[j].score, faces[j].member_scores = float(p), [float(v) for v in m]
            finish_frame(tracker, rescorer, faces, plan)
            out.append(faces)
        rescorer.forget({t.id for t in tracker.active})
        return out

    def _score_chunk(self, frames: list[Frame], dets: list[FaceBoxes], crops: np.ndarray) -> list[list[Face]]:
        """Classifier run for all crops of a chunk, assembled into Faces (bulk numpy -> list conversions)."""
        probs, members = self.classifier.score(crops)
        probs_l, members_l = probs.tolist(), np.asarray(members, np.float64).tolist()
        out, k = [], 0
        for f, d in zip(frames, dets, strict=False):
            n = len(d)
            out.append(assemble_faces(f, d, probs_l[k : k + n], members_l[k : k + n]))
            k += n
        return out

    def iter_frames(
        self, frames: Iterable[Frame | np.ndarray], name: str = "<stream>", tracker: Tracker | None = None
    ) -> Iterator[tuple[FrameScore, list[Face]]]:
        """Stream results frame by frame, in order, processing ``chunk`` frames per model run.

        Faces are tracked into persons in ``tracker`` (a new one if None; ``Face.person``), which also holds the
        running video score. Inputs longer than one chunk are pipelined (module docstring) unless
        ``pipeline=False``.
        """
        tracker = Tracker() if tracker is None else tracker
        short = isinstance(frames, Sequence) and len(frames) <= self.chunk
        serial = not self.pipeline or self.face_crops or short
        detect, score, ahead = self._stages(tracker, ahead=not serial)
        if serial:
            yield from self._iter_serial(frames, name, detect, score)
        else:
            yield from self._iter_pipelined(frames, name, detect, score, ahead)

    def _stages(
        self, tracker: Tracker, ahead: bool = False
    ) -> tuple[Callable[[list[Frame]], tuple], Callable[..., list[list[Face]]], RegionScan | None]:
        """``(detect stage, score stage, scan ahead)`` for the mode: the detector thread runs the first, the caller
        the second. The third is None, or (``ahead``, stream mode) the region schedule whose planned full scans the
        reader thread starts as soon as a chunk is decoded (:meth:`RegionScan.prefetch`)."""
        if self.face_crops:
            return (
                (lambda frames: ()),
                lambda frames: self._tracked(tracker, self._face_crop_chunk(frames)),
                None,
            )
        if self.rescore_rate > 0:
            rescorer = Rescorer(self.rescore_rate)
            scan = self._region_scan(ahead)
            return (
                lambda frames: self._detect_only(scan, frames),
                lambda frames, dets, scanned: self._stream_chunk(tracker, rescorer, frames, dets, scanned),
                scan if ahead else None,
            )

        def score(frames: list[Frame], dets: list[FaceBoxes], crops: np.ndarray) -> list[list[Face]]:
            return self._tracked(tracker, self._score_chunk(frames, dets, crops))

        return self._detect_chunk, score, None

    @property
    def region_scan_every(self) -> int:
        """Stream mode's full-scan interval as it applies to this detector: ``scan_every`` for BlazeFace (regions
        need its mosaic view), 1 (a full scan on every frame) for any other. The server reads it too."""
        from deepguard.runtime.facedet.blazeface import BlazeFaceDetector

        return self.scan_every if isinstance(self.face_detector, BlazeFaceDetector) else 1

    def _region_scan(self, ahead: bool = False) -> RegionScan | None:
        """A fresh detection schedule for one stream; None where every frame gets a full scan. ``ahead``: its
        planned full scans may run ahead on the scan thread (:meth:`RegionScan.prefetch`)."""
        n = self.region_scan_every
        if n <= 1:
            return None
        return RegionScan(self._scan_detector() if ahead else self.face_detector, n, ahead=ahead)

    @staticmethod
    def _tracked(tracker: Tracker, faces: list[list[Face]]) -> list[list[Face]]:
        for ff in faces:
            tracker.update(ff)
        return faces

    @staticmethod
    def _results(batch: list[Frame], faces: list[list[Face]]) -> Iterator[tuple[FrameScore, list[Face]]]:
        for f, ff in zip(batch, faces, strict=False):
            score = aggregate.frame_score([x.score for x in ff])
            yield FrameScore(index=f.index, time=f.time, score=score, n_faces=len(ff)), ff

    def _chunks(self, frames: Iterable[Frame | np.ndarray], name: str) -> Iterator[list[Frame]]:
        it = (_as_frame(f, i) for i, f in enumerate(frames))
        while batch := list(islice(it, self.chunk)):
            for f in batch:
                _check_frame(f.image, name)
            yield batch

    def _iter_serial(
        self, frames: Iterable[Frame | np.ndarray], name: str, detect: Callable, score: Callable
    ) -> Iterator[tuple[FrameScore, list[Face]]]:
        for batch in self._chunks(frames, name):
            yield from self._results(batch, score(batch, *detect(batch)))

    def _iter_pipelined(
        self,
        frames: Iterable[Frame | np.ndarray],
        name: str,
        detect: Callable,
        score: Callable,
        ahead: RegionScan | None = None,
    ) -> Iterator[tuple[FrameScore, list[Face]]]:
        """reader thread (decode; starts ``ahead``'s planned full scans) -> detector thread (detect + crop) -> this
        thread (classify + assemble)."""
        stop = threading.Event()
        read_q: queue.Queue = queue.Queue(QUEUE_CHUNKS)
        det_q: queue.Queue = queue.Queue(QUEUE_CHUNKS)

        def put(q: queue.Queue, item: object) -> bool:
            while not stop.is_set():
                try:
                    q.put(item, timeout=_POLL_S)
                    return True
                except queue.Full:
                    continue
            return False

        def reader() -> None:
            try:
                for batch in self._chunks(frames, name):
                    if ahead is not None:
                        ahead.prefetch(batch)
                    if not put(read_q, batch):
                        return
                put(read_q, _END)
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread, in order
                put(read_q, _Failed(e))

        def detector() -> None:
            while not stop.is_set():
                try:
                    item = read_q.get(timeout=_POLL_S)
                except queue.Empty:
                    continue
                if item is _END or isinstance(item, _Failed):
                    put(det_q, item)
                    return
                try:
                    out = (item, *detect(item))
                except BaseException as e:  # noqa: BLE001
                    put(det_q, _Failed(e))
                    return
                if not put(det_q, out):
                    return

        threads = [
            threading.Thread(target=reader, name="deepguard-decode", daemon=True),
            threading.Thread(target=detector, name="deepguard-detect", daemon=True),
        ]
        for t in threads:
            t.start()
        try:
            while True:
                try:
                    item = det_q.get(timeout=_POLL_S)
                except queue.Empty:
                    if not threads[1].is_alive() and det_q.empty():
                        raise RuntimeError(
                            "deepguard pipeline: detector stage ended without a result"
                        ) from None
                    continue
                if item is _END:
                    return
                if isinstance(item, _Failed):
                    raise item.exc
                batch, *found = item
                yield from self._results(batch, score(batch, *found))
        finally:
            # Early exit (error, caller closed the generator): stages see the event within _POLL_S and stop.
            stop.set()
            if ahead is not None:
                ahead.close()

    # -- public API -----------------------------------------------------------------------------------------
    def analyze_frames(
        self,
        frames: Iterable[Frame | np.ndarray],
        name: str = "<stream>",
        kind: str = "video",
        progress: Callable[[int], None] | None = None,
    ) -> Analysis:
        """Aggregate a whole frame sequence into one verdict (``deepguard.runtime.aggregate``).

        Per frame the max over its faces; faces are tracked into persons (``deepguard.runtime.track``), each
        person is scored by the confident-frames rule and the video score is the max over persons. An image is
        one frame: its score is the max over its faces.
        """
        scores: list[FrameScore] = []
        faces: list[Face] = []
        tracker = Tracker()
        for fs, ff in self.iter_frames(frames, name, tracker):
            scores.append(fs)
            faces.extend(ff)
            if progress:
                progress(1)
        if kind == "image":
            score = scores[0].score if scores else None
        else:
            score = tracker.score
        return Analysis(
            path=name,
            kind=kind,
            verdict=aggregate.verdict(score, self.threshold, self.band),
            score=score,
            faces=faces,
            frames=scores if kind == "video" else [],
            model=self.model_name,
            threshold=self.threshold,
            frames_sampled=len(scores),
            persons=tracker.persons(self.threshold, self.band),
        )

    def analyze_image(self, image: np.ndarray, name: str = "<image>") -> Analysis:
        return self.analyze_frames([Frame(_check_frame(image, name), 0, None)], name=name, kind="image")

    def analyze(self, path: str | Path, progress: Callable[[int], None] | None = None) -> Analysis:
        """One file -> Analysis. Decoding/model problems become ``verdict='error'`` with a message, never a raise."""
        name = str(path)
        kind = "image"
        try:
            kind = media_kind(path)
            if kind == "image":
                return self.analyze_image(load_image(path), name)
            frames = iter_video_frames(
                path, fps=self.fps, every_frame=self.every_frame, max_frames=self.max_frames
            )
            res = self.analyze_frames(frames, name=name, kind="video", progress=progress)
            if res.frames_sampled == 0:
                raise MediaError(f"{name}: no frames could be decoded")
            return res
        except DeepGuardError as e:
            return self._error(name, kind, str(e))
        except Exception as e:  # last line of defence: a bad file must not stop a folder run
            log.exception("unexpected failure on %s", name)
            return self._error(name, kind, f"{name}: internal error: {type(e).__name__}: {e}")

    def _error(self, name: str, kind: str, message: str) -> Analysis:
        return Analysis(
            path=name,
            kind=kind,
            verdict="error",
            score=None,
            model=self.model_name,
            error=message,
            threshold=self.threshold,
        )
