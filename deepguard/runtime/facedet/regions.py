"""Stream mode's cheaper detector path: full scans now and then, and in between each known face is looked for only
where it just was.

Why: a full scan of a 1280x720 frame is the whole frame plus three tiles through the full-range BlazeFace (the
tiles find faces too small for one 192 px view of the frame), about 23 ms on one core - the largest cost of a
stream-mode frame. A face moves little in 40 ms, so on the frames between full scans each face of the previous
frame is searched for in a square region around its box (:data:`REGION_SCALE` face sizes); up to four regions share
one detector view as a 2x2 mosaic, and five or more as 3x3 mosaics (:func:`mosaic_grid`), so F faces cost one view
up to nine faces instead of the full scan's 4 (:func:`detect_in_regions`). A view costs the same whatever it holds
(~6 ms on one core here), so packing nine regions is what pays: on the benchmark's 720p clip (5.4 faces per frame)
2x2 mosaics needed two views a frame, 3x3 one, at 0.66x the region time, with 97.8 % (2x2: 97.9 %) of the next
full scan's faces found and box IoU with them 0.89 median (the same as 2x2; in a 64 px cell a 2x region holds a
32 px face, within the full-range model's reach, if at lower scores: hence :data:`REGION_SCORE`). The short-range
model (128 px views, 2x2) was as fast but its boxes are ~4 % smaller and shifted by ~5 % of a face (IoU 0.77 median
with the full scans'): a box that jumps between scan and region frames.

The schedule (:class:`RegionSchedule`, one per stream): a full scan on frames 0, N, 2N, ... of the stream
(N = :data:`SCAN_EVERY`; 0.2 s at 25 fps: a face that walks in is found within that), on any frame whose predecessor
had no face (nothing to look around), on a frame where the regions found fewer faces than the previous frame had (a
face moved faster than its region, left or was occluded: the frame is scanned again at once), and on frames without
a time or more than :data:`MAX_GAP_S` after the previous one (1 fps sampling, raw arrays: the faces may have moved
anywhere). The periodic and time-based scans depend on nothing the detector finds (:func:`scan_planned`), so
:meth:`RegionScan.prefetch` starts them on a second thread as soon as their frames are decoded, and they overlap
the region frames before them instead of stalling the sequential region search (which needs each previous frame's
faces).
A region keeps its best detection whose centre lies near where its face was (its own face, not a neighbour cut by
the region's edge; regions at the frame's edge are shifted inside it, so that is not always the region's middle);
duplicates from overlapping regions are merged by the same weighted NMS a full scan uses. Region frames box and
track every face, but the classifier sees crops of full-scan boxes only (on region frames only new persons are
classified: ``Rescorer.plan(new_only=True)``), so a classified crop is the one dense mode scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from deepguard.runtime.types import FaceBoxes, Frame

#: Region side in face sizes (long side of the last box): room for a face moving at up to ~half its size per frame.
REGION_SCALE = 2.0
#: Full scan every this many frames (and whenever the previous frame had no face).
SCAN_EVERY = 5
#: Regions only for frames at most this long after the previous one (dense video and camera streams).
MAX_GAP_S = 0.1
#: A region keeps detections whose centre lies within this fraction of its side from where its face was.
CENTRE_SHARE = 0.25
#: Score a region's detection needs (a full scan's: 0.5). A region looks for a face known a frame ago, near where it
#: was, so a weaker detection there is that face, not a new one: the low-score association of trackers such as
#: ByteTrack. Measured on the benchmark clip with 3x3 mosaics: frames whose regions lost a face (each then pays a
#: full scan) 10 / 99 at 0.5, 7 at 0.4, 2 at 0.3 (2x2 mosaics at 0.5: 2); faces of the next full scan found 96.8 ->
#: 97.8 %, region boxes matching none of them 7 -> 10 in 99 frames.
REGION_SCORE = 0.3


def regions_around(boxes: np.ndarray, height: int, width: int, scale: float = REGION_SCALE) -> np.ndarray:
    """Square regions (x0, y0, x1, y1), int, centred on ``boxes`` (N, 4), side ``scale`` x the box's long side,
    shifted to stay inside the frame where they fit (clipped where they do not)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) * scale
    side = np.clip(side, 16, min(height, width))
    x0 = np.clip(cx - side / 2, 0, width - side)
    y0 = np.clip(cy - side / 2, 0, height - side)
    out = np.stack([x0, y0, x0 + side, y0 + side], 1)
    return np.round(out).astype(np.int64)


def mosaic_grid(faces: int) -> int:
    """Regions per side of a mosaic view for a frame with ``faces`` known faces: 2 (cells of half the model input)
    up to four faces, 3 (cells of a third) from five on, so that up to nine faces cost one view."""
    return 2 if faces <= 4 else 3


@dataclass
class RegionJob:
    """One frame's region search: the regions, where each one's face was, and the mosaic views to detect."""

    regions: np.ndarray  # (F, 4) int
    expected: np.ndarray  # (F, 2) face centres in frame pixels
    views: list[np.ndarray]  # ceil(F / grid**2) square images of the model's input size
    cell: int
    shape: tuple[int, int]  # the frame's (height, width)
    grid: int = 2  # regions per side of a view

    def place(self, i: int) -> tuple[int, int]:
        """Region ``i``'s view, and its cell's top-left corner (x, y) in that view."""
        per = self.grid * self.grid
        r, c = divmod(i % per, self.grid)
        return i // per, (c * self.cell, r * self.cell)


def region_job(detector, frame: np.ndarray, last_boxes: np.ndarray) -> RegionJob:
    """The regions around ``last_boxes`` and their mosaics (each region resized to one cell of a
    :func:`mosaic_grid` x :func:`mosaic_grid` grid over the model input; the margin left over is grey)."""
    import cv2

    h, w = frame.shape[:2]
    regions = regions_around(last_boxes, h, w)
    size = detector.config.input_size
    grid = mosaic_grid(len(regions))
    job = RegionJob(
        regions,
        np.asarray((last_boxes[:, :2] + last_boxes[:, 2:]) / 2, np.float64),
        [],
        size // grid,
        (h, w),
        grid,
    )
    cell = job.cell
    for i, (x0, y0, x1, y1) in enumerate(regions.tolist()):
        v, (cx, cy) = job.place(i)
        if v == len(job.views):
            job.views.append(np.full((size, size, 3), 127, np.uint8))
        crop = frame[y0:y1, x0:x1]
        interp = cv2.INTER_AREA if crop.shape[0] > cell else cv2.INTER_LINEAR
        job.views[v][cy : cy + cell, cx : cx + cell] = cv2.resize(crop, (cell, cell), interpolation=interp)
    return job


def region_faces(job: RegionJob, found: Sequence[FaceBoxes], nms_iou: float) -> FaceBoxes:
    """The frame's faces from the detections in ``job``'s views: per region its best detection near where its face
    was, mapped back to frame pixels, merged by weighted NMS (sorted by score, as ``detect`` returns them)."""
    from deepguard.runtime.facedet.blazeface import NUM_KEYPOINTS, weighted_nms

    cell = job.cell
    picked = []
    for i, (x0, y0, x1, _y1) in enumerate(job.regions.tolist()):
        v, corner = job.place(i)
        fb = found[v]
        if not len(fb):
            continue
        scale = (x1 - x0) / cell
        origin = np.array(corner, np.float32)
        off = np.array([x0, y0], np.float32)
        want = (job.expected[i] - off) / scale + origin  # where the region's own face was, in the mosaic
        centre = (fb.boxes[:, :2] + fb.boxes[:, 2:]) / 2
        near = np.all(np.abs(centre - want) <= CENTRE_SHARE * cell, axis=1)
        if not near.any():
            continue
        j = int(np.flatnonzero(near)[np.argmax(fb.scores[near])])
        box = (fb.boxes[j].reshape(2, 2) - origin) * scale + off
        kps = (fb.keypoints[j] - origin) * scale + off
        picked.append((box.reshape(4), fb.scores[j], kps))
    if not picked:
        return FaceBoxes.empty(NUM_KEYPOINTS)
    boxes = np.stack([p[0] for p in picked]).astype(np.float32)
    scores = np.array([p[1] for p in picked], np.float32)
    kps = np.stack([p[2] for p in picked]).astype(np.float32)
    boxes, scores, kps = weighted_nms(boxes, scores, kps, nms_iou)
    h, w = job.shape
    return FaceBoxes(np.clip(boxes, 0, [w, h, w, h]).astype(np.float32), scores, kps)


def detect_in_regions(detector, frame: np.ndarray, last_boxes: np.ndarray) -> FaceBoxes:
    """One frame's faces found by ``detector`` (BlazeFace) in the regions around ``last_boxes``.

    Regions share detector views: each is resized to one cell of a 2x2 or 3x3 grid (:func:`mosaic_grid`), so a
    frame with up to nine known faces costs one view (a full 720p scan: 4) and the boxes come from the same model
    as the full scans' (no jump in box statistics between scan and region frames).
    """
    job = region_job(detector, frame, last_boxes)
    found = detector.detect(job.views, thresholds=[REGION_SCORE] * len(job.views))
    return region_faces(job, found, detector.nms_iou)


def scan_planned(number: int, scan_every: int, time: float | None, previous_time: float | None) -> bool:
    """Whether frame ``number`` (0-based, in stream order) gets a full scan whatever the detector finds: on the
    period, or not close in time to the previous frame (untimed frames, 1 fps sampling: faces may be anywhere)."""
    return (
        number % scan_every == 0
        or time is None
        or previous_time is None
        or not 0 <= time - previous_time <= MAX_GAP_S
    )


class RegionSchedule:
    """When a stream's next frame gets a full scan (module docstring); fed each frame's result in order."""

    def __init__(self, scan_every: int = SCAN_EVERY) -> None:
        self.scan_every = max(1, int(scan_every))
        self.frames = 0  # frames observed: the next frame's number
        self.last: np.ndarray | None = None  # the previous frame's boxes
        self._last_time: float | None = None

    def full_scan_due(self, time: float | None) -> bool:
        """Planned (:func:`scan_planned`), or no face on the previous frame to look around."""
        return (
            self.last is None
            or not len(self.last)
            or scan_planned(self.frames, self.scan_every, time, self._last_time)
        )

    @staticmethod
    def lost_a_face(looked_for: int, found: FaceBoxes) -> bool:
        """The regions found fewer faces than they looked for: the frame gets a full scan at once."""
        return len(found) < looked_for

    def observe(self, boxes: np.ndarray | None, time: float | None) -> None:
        """The frame's final boxes (None: its detection failed)."""
        self.frames += 1
        self.last = None if boxes is None else np.asarray(boxes)
        self._last_time = time


class RegionScan:
    """In-process stream mode's detector stage: ``detect(frames)`` in stream order, frame by frame.

    With ``ahead``, :meth:`prefetch` (called with each chunk in stream order, before :meth:`detect` gets it - the
    pipeline's reader thread does) starts the chunk's planned full scans on a thread of the scan's own, and
    ``detect`` takes their results when it reaches those frames; :meth:`close` ends that thread. Why: the region
    search is sequential (each frame looks where the previous frame's faces were), and full scans were ~40 % of its
    time on the 720p clip; this way they run on the other core.
    """

    def __init__(self, detector, scan_every: int = SCAN_EVERY, ahead: bool = False) -> None:
        self.detector = detector
        self.schedule = RegionSchedule(scan_every)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="deepguard-scan") if ahead else None
        self._ahead: dict[int, Future] = {}  # frame number -> its full scan, started by prefetch
        self._queued = 0  # frames prefetch has seen
        self._queued_time: float | None = None

    def prefetch(self, frames: Sequence[Frame]) -> None:
        """Start the planned full scans of ``frames`` (the stream's next frames, in order) on the pool."""
        if self._pool is None:
            return
        for fr in frames:
            if scan_planned(self._queued, self.schedule.scan_every, fr.time, self._queued_time):
                self._ahead[self._queued] = self._pool.submit(self._full_scan, fr.image)
            self._queued += 1
            self._queued_time = fr.time

    def _full_scan(self, image: np.ndarray) -> FaceBoxes:
        return self.detector.detect([image])[0]

    def close(self) -> None:
        """Stop the scan thread: scans not started are dropped, a running one finishes in the background."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def detect(self, frames: Sequence[Frame]) -> tuple[list[FaceBoxes], list[bool]]:
        """Each frame's faces, and whether it was a full scan (False: found in regions)."""
        out, scanned = [], []
        sched = self.schedule
        for fr in frames:
            ahead = self._ahead.pop(sched.frames, None)
            full = ahead is not None or sched.full_scan_due(fr.time)
            if not full:
                fb = detect_in_regions(self.detector, fr.image, sched.last)
                full = sched.lost_a_face(len(sched.last), fb)
            if full:
                fb = ahead.result() if ahead is not None else self._full_scan(fr.image)
            sched.observe(fb.boxes, fr.time)
            out.append(fb)
            scanned.append(full)
        return out, scanned


__all__ = [
    "REGION_SCALE",
    "REGION_SCORE",
    "SCAN_EVERY",
    "RegionJob",
    "RegionScan",
    "RegionSchedule",
    "detect_in_regions",
    "mosaic_grid",
    "region_faces",
    "region_job",
    "regions_around",
    "scan_planned",
]
