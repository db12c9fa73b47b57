"""Crop geometry: 30 % margin squares, border clipping, resize, degenerate boxes."""

from __future__ import annotations

import numpy as np
import pytest

from deepguard.runtime.crop import crop_boxes_px, crop_faces, square_boxes


def test_square_boxes_geometry():
    boxes = np.array([[10, 20, 30, 60], [0, 0, 50, 10]], np.float32)  # w20 h40 ; w50 h10
    sq = square_boxes(boxes)
    assert sq.shape == (2, 4) and sq.dtype == np.float32
    side = sq[:, 2] - sq[:, 0]
    np.testing.assert_allclose(side, [1.6 * 40, 1.6 * 50], rtol=1e-6)
    np.testing.assert_allclose(sq[:, 3] - sq[:, 1], side, rtol=1e-6)  # square
    np.testing.assert_allclose((sq[:, 0] + sq[:, 2]) / 2, [20, 25])  # centre kept
    np.testing.assert_allclose((sq[:, 1] + sq[:, 3]) / 2, [40, 5])
    np.testing.assert_allclose(sq[0], [20 - 32, 40 - 32, 20 + 32, 40 + 32])


def test_square_boxes_margin_and_empty():
    sq = square_boxes(np.array([[0, 0, 10, 10]], np.float64), margin=0.0)
    assert sq.dtype == np.float64
    np.testing.assert_allclose(sq, [[0, 0, 10, 10]])
    assert square_boxes(np.zeros((0, 4), np.float32)).shape == (0, 4)


def frame_with_quadrants(h: int = 100, w: int = 120) -> np.ndarray:
    f = np.zeros((h, w, 3), np.uint8)
    f[: h // 2, : w // 2] = (255, 0, 0)
    f[: h // 2, w // 2 :] = (0, 255, 0)
    f[h // 2 :, : w // 2] = (0, 0, 255)
    f[h // 2 :, w // 2 :] = (255, 255, 255)
    return f


def test_crop_inside_frame_exact_pixels():
    frame = np.arange(100 * 120 * 3, dtype=np.uint32).reshape(100, 120, 3).astype(np.uint8)
    # w=h=10 -> side 16, centre (55, 45) -> [47, 37, 63, 53) exactly
    box = np.array([[50, 40, 60, 50]], np.float32)
    np.testing.assert_array_equal(crop_boxes_px(box, 120, 100), [[47, 37, 63, 53]])
    out = crop_faces(frame, box, 16)
    assert out.shape == (1, 16, 16, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0], frame[37:53, 47:63])  # no resize at native size


@pytest.mark.parametrize(
    ("box", "expected"),
    [
        ([0, 40, 10, 50], [0, 37, 13, 53]),  # left: x1 = -3 clipped
        ([110, 40, 120, 50], [107, 37, 120, 53]),  # right: x2 = 123 clipped
        ([50, 0, 60, 10], [47, 0, 63, 13]),  # top
        ([50, 90, 60, 100], [47, 87, 63, 100]),  # bottom
        ([-20, -20, 140, 120], [0, 0, 120, 100]),  # bigger than the frame on every side
    ],
)
def test_clipping_at_each_border(box, expected):
    np.testing.assert_array_equal(crop_boxes_px(np.array([box], np.float32), 120, 100), [expected])
    out = crop_faces(frame_with_quadrants(), np.array([box], np.float32), 32)
    assert out.shape == (1, 32, 32, 3)


def test_resize_shrink_and_enlarge_keep_content():
    frame = frame_with_quadrants()
    # a big box centred on the frame centre shows all four quadrants
    big = crop_faces(frame, np.array([[30, 20, 90, 80]], np.float32), 24, margin=0.0)[0]
    assert tuple(big[2, 2]) == (255, 0, 0) and tuple(big[2, 21]) == (0, 255, 0)
    assert tuple(big[21, 2]) == (0, 0, 255) and tuple(big[21, 21]) == (255, 255, 255)
    small = crop_faces(frame, np.array([[10, 10, 14, 14]], np.float32), 64)[0]  # enlarge a red patch
    assert small.shape == (64, 64, 3) and (small == (255, 0, 0)).all()


def test_multiple_boxes_and_zero_boxes():
    frame = frame_with_quadrants()
    boxes = np.array([[10, 10, 30, 30], [80, 60, 100, 80], [50, 40, 60, 50]], np.float32)
    assert crop_faces(frame, boxes, 20).shape == (3, 20, 20, 3)
    empty = crop_faces(frame, np.zeros((0, 4), np.float32), 20)
    assert empty.shape == (0, 20, 20, 3) and empty.dtype == np.uint8


@pytest.mark.parametrize(
    "box",
    [
        [50, 50, 50, 50],  # zero size
        [60, 40, 50, 30],  # inverted
        [500, 500, 520, 520],  # entirely outside (right/bottom)
        [-80, -80, -60, -60],  # entirely outside (left/top)
        [np.nan, 0, 10, 10],  # NaN
    ],
)
def test_degenerate_boxes_do_not_crash(box):
    rect = crop_boxes_px(np.array([box], np.float32), 120, 100)[0]
    assert rect[2] - rect[0] >= 1 and rect[3] - rect[1] >= 1
    assert 0 <= rect[0] < rect[2] <= 120 and 0 <= rect[1] < rect[3] <= 100
    out = crop_faces(frame_with_quadrants(), np.array([box], np.float32), 8)
    assert out.shape == (1, 8, 8, 3)


def test_bad_frame_rejected():
    with pytest.raises(ValueError):
        crop_faces(np.zeros((10, 10), np.uint8), np.zeros((0, 4)), 8)
