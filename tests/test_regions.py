"""Stream mode's detector schedule (deepguard.runtime.facedet.regions): region geometry, when full scans run, and
that faces found through the region mosaics are the full scan's faces, on a real photo and the real model."""

from __future__ import annotations

import numpy as np
import pytest

from deepguard.runtime.facedet.blazeface import iou_matrix
from deepguard.runtime.facedet.regions import (
    SCAN_EVERY,
    RegionJob,
    RegionScan,
    RegionSchedule,
    detect_in_regions,
    mosaic_grid,
    region_faces,
    region_job,
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


@pytest.mark.parametrize("known, grid", [(4, 2), (6, 3)])
def test_region_mosaic_finds_the_full_scans_faces(t1_jpg, known, grid) -> None:
    """Four known faces share a 2x2 mosaic view, six a 3x3 one; either way each region finds its face where the
    full scan of the moved frame does. (IoU of single faces with the full scan's box is noisy at these sizes,
    ~100 px: 0.73-0.96 for both grids over a few shifts, so the bound is on the median and a loose minimum.)"""
    from deepguard.runtime.decode import load_image
    from deepguard.runtime.facedet import load_detector

    img = load_image(t1_jpg)
    det = load_detector(None, threads=1)
    full = det.detect([img])[0]
    assert len(full) == 6
    moved = np.ascontiguousarray(np.roll(img, 6, axis=1))  # the next frames: faces moved a little
    ref = det.detect([moved])[0]
    last = full.boxes[:known]
    job = region_job(det, moved, last)
    assert job.grid == grid and len(job.views) == 1 and job.cell == det.config.input_size // grid
    got = detect_in_regions(det, moved, last)
    assert len(got) == known
    iou = iou_matrix(got.boxes, ref.boxes).max(1)
    assert iou.min() >= 0.7 and np.median(iou) >= 0.85
    assert got.keypoints.shape == (known, 6, 2)
    d = np.abs(got.keypoints[:, :2] - ref.keypoints[iou_matrix(got.boxes, ref.boxes).argmax(1)][:, :2])
    sizes = (got.boxes[:, 2] - got.boxes[:, 0])[:, None, None]
    assert (d / sizes).max() <= 0.15  # eyes within 15 % of the face size of the full scan's


def test_mosaic_grid_packs_nine_regions_per_view() -> None:
    assert [mosaic_grid(f) for f in (1, 4, 5, 9, 10)] == [2, 2, 3, 3, 3]
    job = RegionJob(np.zeros((11, 4), np.int64), np.zeros((11, 2)), [], 64, (720, 1280), grid=3)
    assert job.place(0) == (0, (0, 0)) and job.place(4) == (0, (64, 64)) and job.place(8) == (0, (128, 128))
    assert job.place(9) == (1, (0, 0)) and job.place(10) == (1, (64, 0))


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


def test_detect_takes_a_threshold_per_frame(t1_jpg) -> None:
    from deepguard.runtime.decode import load_image
    from deepguard.runtime.facedet import load_detector

    img = load_image(t1_jpg)
    det = load_detector(None, threads=1)
    default, strict, loose = det.detect([img, img, img], thresholds=[det.score_threshold, 0.99, 0.3])
    assert len(default) == 6 and len(strict) == 0 and len(loose) >= 6
    assert np.allclose(default.boxes, det.detect([img])[0].boxes)


def test_regions_keep_a_known_face_at_a_lower_score_than_a_scan_needs(t1_jpg) -> None:
    """Six known faces in a 3x3 mosaic (64 px cells), the frame ever more out of focus: there is a blur at which
    a face's region scores under the full scan's 0.5 but over REGION_SCORE, where the region search keeps all six
    (no full rescan) and a search at the scan's threshold loses one; at no blur does it find a seventh."""
    import cv2

    from deepguard.runtime.decode import load_image
    from deepguard.runtime.facedet import load_detector
    from deepguard.runtime.facedet.regions import REGION_SCORE

    img = load_image(t1_jpg)
    det = load_detector(None, threads=1)
    last = det.detect([img])[0].boxes
    assert len(last) == 6
    kept_only_by_region_score = False
    for sigma in range(1, 9):  # at sigma 6 the faintest face's region scored 0.40 here
        frame = cv2.GaussianBlur(np.roll(img, 4, axis=1), (0, 0), sigma)
        job = region_job(det, frame, last)
        strict = region_faces(job, det.detect(job.views), det.nms_iou)
        got = detect_in_regions(det, frame, last)
        assert len(got) <= 6 and len(strict) <= len(got)
        kept_only_by_region_score |= len(got) == 6 and len(strict) < 6
        if len(got) == 6:
            assert got.scores.min() >= REGION_SCORE
    assert kept_only_by_region_score
