"""Stream mode's detector schedule (deepguard.runtime.facedet.regions): region geometry, when full scans run, and
that faces found through the 2x2 region mosaic are the full scan's faces, on a real photo and the real model."""

from __future__ import annotations

import numpy as np
import pytest

from deepguard.runtime.facedet.blazeface import iou_matrix
from deepguard.runtime.facedet.regions import SCAN_EVERY, RegionScan, detect_in_regions, regions_around
from deepguard.runtime.types import FaceBoxes, Frame


def test_regions_are_squares_around_the_faces_inside_the_frame() -> None:
    boxes = np.array([[100, 100, 150, 160], [0, 0, 40, 40], [1250, 690, 1280, 720]], np.float32)
    r = regions_around(boxes, 720, 1280)
    side = r[:, 2] - r[:, 0]
    assert (side == r[:, 3] - r[:, 1]).all() and side.tolist() == [120, 80, 60]
    assert (r[:, :2] >= 0).all() and (r[:, 2] <= 1280).all() and (r[:, 3] <= 720).all()
    assert r[0].tolist() == [65, 70, 185, 190]  # centred on the first face
    assert r[1].tolist() == [0, 0, 80, 80] and r[2].tolist() == [1220, 660, 1280, 720]  # shifted inside


class _Counting:
    """A detector double that records calls; only the schedule is under test here (real model below)."""

    def __init__(self, faces: int) -> None:
        self.faces, self.calls = faces, []

    def detect(self, frames):
        self.calls.append([f.shape for f in frames])
        n = self.faces
        boxes = np.array([[10 + 60 * j, 10, 50 + 60 * j, 50] for j in range(n)], np.float32).reshape(-1, 4)
        return [
            FaceBoxes(boxes, np.full(n, 0.9, np.float32), np.zeros((n, 6, 2), np.float32)) for _ in frames
        ]


def test_full_scans_on_schedule_and_after_an_empty_frame(monkeypatch) -> None:
    import deepguard.runtime.facedet.regions as regions

    det = _Counting(faces=2)
    monkeypatch.setattr(
        regions,
        "detect_in_regions",
        lambda d, f, r, c: FaceBoxes(
            r[:, :4].astype(np.float32), np.ones(len(r), np.float32), np.zeros((len(r), 6, 2), np.float32)
        ),
    )
    scan = RegionScan(det, SCAN_EVERY)
    img = np.zeros((240, 320, 3), np.uint8)
    frames = [Frame(img, i, i / 25) for i in range(12)]
    _, scanned = scan.detect(frames)
    assert [i for i, s in enumerate(scanned) if s] == [0, 5, 10]
    untimed = RegionScan(det, SCAN_EVERY).detect([Frame(img, i, None) for i in range(3)])[1]
    one_fps = RegionScan(det, SCAN_EVERY).detect([Frame(img, i, float(i)) for i in range(3)])[1]
    assert untimed == one_fps == [True] * 3  # not close in time: the faces may be anywhere
    det.faces = 0
    empty = RegionScan(det, SCAN_EVERY)
    _, scanned = empty.detect(frames[:4])
    assert scanned == [True] * 4  # nothing to look around: every frame is a full scan


def test_region_mosaic_finds_the_full_scans_faces(t1_jpg) -> None:
    from deepguard.runtime.decode import load_image
    from deepguard.runtime.facedet import load_detector

    img = load_image(t1_jpg)
    det = load_detector(None, threads=1)
    full = det.detect([img])[0]
    assert len(full) == 6
    moved = np.ascontiguousarray(np.roll(img, 6, axis=1))  # the next frames: faces moved a little
    ref = det.detect([moved])[0]
    got = detect_in_regions(
        det, moved, regions_around(full.boxes, *img.shape[:2]), (full.boxes[:, :2] + full.boxes[:, 2:]) / 2
    )
    assert len(got) == len(ref) == 6
    iou = iou_matrix(ref.boxes, got.boxes).max(1)
    assert iou.min() >= 0.75 and np.median(iou) >= 0.85
    assert got.keypoints.shape == (6, 6, 2)
    d = np.abs(got.keypoints[:, :2] - ref.keypoints[iou_matrix(got.boxes, ref.boxes).argmax(1)][:, :2])
    sizes = (got.boxes[:, 2] - got.boxes[:, 0])[:, None, None]
    assert (d / sizes).max() <= 0.15  # eyes within 15 % of the face size of the full scan's


def test_pipeline_uses_regions_between_scans_in_stream_mode(group_clip) -> None:
    from deepguard.runtime.pipeline import Detector

    d = Detector(rescore_rate=5, pipeline=False)
    scan = d._region_scan()
    assert scan is not None
    _, scanned = scan.detect(group_clip[:7])
    assert scanned == [True, False, False, False, False, True, False]
    assert Detector(rescore_rate=5, scan_every=1)._region_scan() is None
    with pytest.raises(ValueError):
        Detector(rescore_rate=-1)
