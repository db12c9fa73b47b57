"""Stream mode's detector schedule (deepguard.runtime.facedet.regions): region geometry, when full scans run, and
that faces found through the 2x2 region mosaic are the full scan's faces, on a real photo and the real model."""

from __future__ import annotations

import numpy as np
import pytest

from deepguard.runtime.facedet.blazeface import iou_matrix
from deepguard.runtime.facedet.regions import (
    SCAN_EVERY,
    RegionScan,
    RegionSchedule,
    detect_in_regions,
    regions_around,
    scan_planned,
)
from deepguard.runtime.types import Frame


def test_regions_are_squares_around_the_faces_inside_the_frame() -> None:
    boxes = np.array([[100, 100, 150, 160], [0, 0, 40, 40], [1250, 690, 1280, 720]], np.float32)
    r = regions_around(boxes, 720, 1280)
    side = r[:, 2] - r[:, 0]
    assert (side == r[:, 3] - r[:, 1]).all() and side.tolist() == [120, 80, 60]
    assert (r[:, :2] >= 0).all() and (r[:, 2] <= 1280).all() and (r[:, 3] <= 720).all()
    assert r[0].tolist() == [65, 70, 185, 190]  # centred on the first face
    assert r[1].tolist() == [0, 0, 80, 80] and r[2].tolist() == [1220, 660, 1280, 720]  # shifted inside


def test_full_scans_on_schedule_after_an_empty_frame_and_when_not_close_in_time() -> None:
    two = np.array([[10, 10, 50, 50], [70, 10, 110, 50]], np.float32)

    def run(sched: RegionSchedule, times, boxes=two) -> list[bool]:
        out = []
        for t in times:
            full = sched.full_scan_due(t)
            sched.observe(boxes, t)
            out.append(full)
        return out

    timed = run(RegionSchedule(SCAN_EVERY), [i / 25 for i in range(12)])
    assert [i for i, s in enumerate(timed) if s] == [0, 5, 10]
    assert run(RegionSchedule(SCAN_EVERY), [i / 25 for i in range(4)], np.zeros((0, 4))) == [True] * 4
    assert run(RegionSchedule(SCAN_EVERY), [None] * 3) == [True] * 3  # untimed: faces may be anywhere
    assert run(RegionSchedule(SCAN_EVERY), [0.0, 1.0, 2.0]) == [True] * 3  # 1 fps sampling
    assert run(RegionSchedule(1), [i / 25 for i in range(3)]) == [True] * 3


def test_region_mosaic_finds_the_full_scans_faces(t1_jpg) -> None:
    from deepguard.runtime.decode import load_image
    from deepguard.runtime.facedet import load_detector

    img = load_image(t1_jpg)
    det = load_detector(None, threads=1)
    full = det.detect([img])[0]
    assert len(full) == 6
    moved = np.ascontiguousarray(np.roll(img, 6, axis=1))  # the next frames: faces moved a little
    ref = det.detect([moved])[0]
    got = detect_in_regions(det, moved, full.boxes)
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
    blank = Frame(np.full_like(group_clip[8].image, 90), 8, 8 / 25)  # every face gone (cut to black)
    dets, scanned = scan.detect([group_clip[7], blank])
    assert scanned == [False, True] and len(dets[1]) == 0  # the regions lost the faces: full scan at once
    assert Detector(rescore_rate=5, scan_every=1)._region_scan() is None
    with pytest.raises(ValueError):
        Detector(rescore_rate=-1)


def test_planned_scans_are_the_periodic_and_time_gap_ones() -> None:
    assert [n for n in range(12) if scan_planned(n, 5, n / 25, (n - 1) / 25)] == [0, 5, 10]
    assert scan_planned(3, 5, None, 0.1) and scan_planned(3, 5, 0.1, None)  # untimed
    assert scan_planned(3, 5, 1.0, 0.5) and scan_planned(3, 5, 0.5, 1.0)  # a gap, or time going back


def test_full_scans_started_ahead_give_the_same_frames_as_in_turn(group_clip) -> None:
    """prefetch (the pipeline's reader thread) starts the planned full scans on a second thread; detect must give
    exactly what the sequential schedule gives, lost-face rescans included (a cut to grey mid-chunk)."""
    from deepguard.runtime.facedet import load_detector

    det = load_detector(None, threads=1)
    grey = Frame(np.full_like(group_clip[0].image, 90), 7, 7 / 25)
    frames = [
        *group_clip[:7],
        grey,
        *(Frame(f.image, 8 + i, (8 + i) / 25) for i, f in enumerate(group_clip[:6])),
    ]
    chunks = [frames[i : i + 4] for i in range(0, len(frames), 4)]
    ref = RegionScan(det, SCAN_EVERY)
    want = [ref.detect(c) for c in chunks]
    ahead = RegionScan(det, SCAN_EVERY, ahead=True)
    for c in chunks:  # the reader runs ahead of the detector by a chunk or more
        ahead.prefetch(c)
    got = [ahead.detect(c) for c in chunks]
    ahead.close()
    assert [s for _, sc in got for s in sc] == [s for _, sc in want for s in sc]
    # scans: period (0, 5, 10), the cut to grey (7: its regions lose every face), the frame after it (8: nothing to
    # look around)
    assert [n for n, s in enumerate(s for _, sc in got for s in sc) if s] == [0, 5, 7, 8, 10]
    for (g, _), (w, _) in zip(got, want, strict=True):
        for a, b in zip(g, w, strict=True):
            np.testing.assert_array_equal(a.boxes, b.boxes)
    assert not ahead._ahead  # every scan started ahead was used


def test_stream_scans_ahead_get_a_detector_of_their_own_that_splits_the_cores(monkeypatch) -> None:
    """Scans ahead + region search call the detector from two threads: on the CPU with no thread count given,
    their detector is a second one whose sessions use half the cores each; a thread count given is obeyed."""
    import os

    from deepguard.runtime.pipeline import Detector

    monkeypatch.delenv("DEEPGUARD_THREADS", raising=False)
    d = Detector(every_frame=True)
    split = d._region_scan(ahead=True).detector
    assert split is not d.face_detector and d._region_scan(ahead=False).detector is d.face_detector
    want = max(1, len(os.sched_getaffinity(0)) // 2)
    assert split.session.get_session_options().intra_op_num_threads == want
    assert d._region_scan(ahead=True).detector is split  # one for every stream of this Detector
    given = Detector(every_frame=True, threads=2)
    assert given._region_scan(ahead=True).detector is given.face_detector
    monkeypatch.setenv("DEEPGUARD_THREADS", "2")
    env = Detector(every_frame=True)
    assert env._region_scan(ahead=True).detector is env.face_detector
