"""Stream mode on the server: one StreamFrames call's tracker and re-scoring decisions over the shared batchers.

Why a sequencer: frames of one stream are in flight together (its window) and the detector batcher may finish
them in any order, but tracking frame n needs frames 0..n-1 tracked, and whether a face is classified is decided
from its track (:class:`deepguard.runtime.stream.Rescorer`). So each frame takes a ticket when it is submitted;
once it is detected, :meth:`StreamScoring.detected` tracks and plans the frames in ticket order and only then
sends their chosen crops to the classifier batcher. The answers are consumed in stream order anyway, so
:meth:`StreamScoring.complete` carries scores forward (``Face.age``) and adds the classifier outputs to the
persons there. With rate 0 every face is planned: the same code path is dense scoring.

All state is per stream (its lock included): a stalled stream holds none of another stream's frames.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from deepguard.runtime import aggregate
from deepguard.runtime.facedet.regions import RegionSchedule
from deepguard.runtime.pipeline import assemble_faces
from deepguard.runtime.stream import Rescorer, finish_frame, plan_frame
from deepguard.runtime.track import Tracker
from deepguard.runtime.types import Face, FaceBoxes, Frame, FrameScore, Person


@dataclass
class Plan:
    """What :meth:`StreamScoring.detected` decided for one frame (travels with its FrameOutcome)."""

    frame: Frame
    boxes: FaceBoxes  # the detections, unrounded (crops are cut from these, as in-process)
    faces: list[Face]
    decisions: list = field(default_factory=list)  # Rescorer.plan's (classify now?, reference) per face


class StreamScoring:
    """Tracker + Rescorer of one stream, fed in ticket order; also the stream's running counts and score."""

    def __init__(self, rate: float, scan_every: int = 1) -> None:
        self._scan_every = scan_every
        self.rescorer = Rescorer(rate)
        self.schedule = _schedule(rate, scan_every)
        self.tracker = Tracker()
        self._lock = threading.Lock()
        self._tickets = 0
        self._next = 0
        self._ready: dict[int, tuple[Frame, FaceBoxes | None, bool, Callable]] = {}
        self._starts: dict[int, Callable[[], None]] = {}  # region mode: detections waiting for their turn
        self._next_start = 0
        self._detecting = False
        self.frames = self.frames_with_faces = self.faces = 0  # answered frames (the tracker runs ahead)

    def set_rate(self, rate: float) -> None:
        """The stream's own rate (its first frame's ``rescore_rate``); only before any frame is submitted."""
        if self._tickets:
            raise RuntimeError("the re-score rate is fixed once frames are in flight")
        self.rescorer = Rescorer(rate)
        self.schedule = _schedule(rate, self._scan_every)

    def untimed(self) -> None:
        """The stream's first frame has no time: no regions (they need time between frames), so its frames are
        detected in parallel as before stream mode. Only before any frame is submitted."""
        if self._tickets:
            raise RuntimeError("the detection schedule is fixed once frames are in flight")
        self._scan_every, self.schedule = 1, None

    def start_detection(self, ticket: int, start: Callable[[], None]) -> None:
        """Region mode: run ``start`` (it submits the frame's detection) once every earlier frame of the stream
        is detected - where to look depends on the previous frame's faces. It must not raise."""
        with self._lock:
            self._starts[ticket] = start
            run = self._take_start()
        if run is not None:
            run()

    def detection_done(self) -> None:
        """Region mode: the detection in flight has its final boxes (after ``schedule.observe``)."""
        with self._lock:
            self._detecting = False
            run = self._take_start()
        if run is not None:
            run()

    def _take_start(self) -> Callable[[], None] | None:
        if self._detecting or self._next_start not in self._starts:
            return None
        self._detecting = True
        self._next_start += 1
        return self._starts.pop(self._next_start - 1)

    def ticket(self) -> int:
        """The frame's place in the stream; take one per submitted frame, in stream order."""
        with self._lock:
            t = self._tickets
            self._tickets += 1
            return t

    def detected(
        self, ticket: int, frame: Frame, boxes: FaceBoxes | None, then: Callable, scanned: bool = True
    ) -> None:
        """Frame ``ticket`` is detected (``boxes`` None: it failed or was cancelled, so it is passed over;
        ``scanned`` False: its boxes come from regions, so only new persons are classified on it).

        Tracks and plans every frame whose predecessors are all done, in ticket order, under this stream's lock;
        then, outside the lock (it submits work and may resolve futures), calls ``then(Plan, indices to
        classify)`` for each, or ``then(None, None)`` for a passed-over frame.
        """
        run = []
        with self._lock:
            self._ready[ticket] = (frame, boxes, scanned, then)
            while self._next in self._ready:
                fr, b, full, fn = self._ready.pop(self._next)
                self._next += 1
                if b is None:
                    run.append((fn, None, None))
                    continue
                nan = [float("nan")] * len(b)
                faces = assemble_faces(fr, b, nan, [[] for _ in nan])
                decisions, idx = plan_frame(self.tracker, self.rescorer, faces, full)
                run.append((fn, Plan(fr, b, faces, decisions), idx))
        for fn, plan, idx in run:
            fn(plan, idx)

    def complete(self, plan: Plan) -> tuple[FrameScore, list[Face]]:
        """In stream order, once the planned faces have their scores: carry the others' scores forward, add the
        classifier outputs to the persons, and return the frame's score and faces."""
        with self._lock:
            finish_frame(self.tracker, self.rescorer, plan.faces, plan.decisions)
            self.rescorer.forget({t.id for t in self.tracker.active})
            self.frames += 1
            self.frames_with_faces += bool(plan.faces)
            self.faces += len(plan.faces)
        fr = plan.frame
        score = aggregate.frame_score([f.score for f in plan.faces])
        return FrameScore(fr.index, fr.time, score, len(plan.faces)), plan.faces

    @property
    def score(self) -> float | None:
        """The video score over the answered frames (the tracker's rule)."""
        with self._lock:
            return self.tracker.score

    def persons(self, threshold: float, band: tuple[float, float] | None = None) -> list[Person]:
        with self._lock:
            return self.tracker.persons(threshold, band)


def _schedule(rate: float, scan_every: int) -> RegionSchedule | None:
    """Region detection between full scans for stream mode; dense streams (rate 0) scan every frame."""
    return RegionSchedule(scan_every) if rate > 0 and scan_every > 1 else None


__all__ = ["Plan", "StreamScoring"]
