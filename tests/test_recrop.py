"""Training crops are inference crops: ``training_crop`` against the runtime's ``crop_faces``, and the re-crop of files."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from deepguard.runtime.crop import crop_boxes_px, crop_faces
from deepguard.runtime.types import FaceBoxes
from deepguard.training.recrop import detect_padded, pick_face, recrop_images, training_crop

H, W = 300, 420


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """Smooth structure + noise: every pixel differs from its neighbours, so any one-pixel shift shows."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:H, 0:W]
    base = np.stack([(xx * 0.6) % 256, (yy * 0.8) % 256, ((xx + yy) * 0.3) % 256], -1)
    return np.clip(base + rng.normal(0, 25, (H, W, 3)), 0, 255).astype(np.uint8)


def _inside_boxes(rng, n: int, margin: float, dtype) -> list[np.ndarray]:
    """Random face boxes whose margin square lies inside the image (with a pixel to spare for rounding)."""
    out = []
    while len(out) < n:
        w, h = rng.uniform(8, 140), rng.uniform(8, 140)
        half = max(w, h) * (1 + 2 * margin) / 2 + 2
        if 2 * half >= min(H, W):
            continue
        cx, cy = rng.uniform(half, W - half), rng.uniform(half, H - half)
        out.append(np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dtype))
    return out


@pytest.mark.parametrize("margin", [0.0, 0.1, 0.3, 0.45])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_training_crop_is_the_runtime_crop(image, margin, dtype) -> None:
    rng = np.random.default_rng(int(margin * 100) + (dtype is np.float32))
    for box in _inside_boxes(rng, 60, margin, dtype):
        for size in (32, 64, 160):
            want = crop_faces(image, box[None], size, margin)[0]
            got = training_crop(image, box, size, margin)
            assert got.dtype == np.uint8 and got.shape == (size, size, 3)
            np.testing.assert_array_equal(
                got, want, err_msg=f"box {box.tolist()} margin {margin} size {size}"
            )


@pytest.mark.parametrize(
    "box",
    [  # float32 detector boxes whose square corner rounds differently in float32 and float64 (found by search)
        [328.6014709472656, 30.54423713684082, 353.6594543457031, 148.2616729736328],
        [379.5915832519531, 80.58028411865234, 461.04681396484375, 190.2789306640625],
        [94.67316436767578, 56.866737365722656, 189.4766082763672, 123.89739227294922],
    ],
)
def test_training_crop_rounds_float32_boxes_like_the_runtime(box) -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (400, 500, 3), np.uint8)
    b = np.array(box, np.float32)
    np.testing.assert_array_equal(training_crop(img, b, 64, 0.1), crop_faces(img, b[None], 64, 0.1)[0])


def test_border_face_is_mirrored_not_clipped(image) -> None:
    """A square reaching past the frame: the face stays at inference scale, the missing part is the mirror image."""
    box = np.array([-20.0, 40.0, 60.0, 130.0])  # square (30 % margin) reaches ~55 px past the left border
    pad = 80
    mirrored = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    shifted = box + pad
    for size in (48, 160):
        want = crop_faces(mirrored, shifted[None], size)[0]
        np.testing.assert_array_equal(training_crop(image, box, size), want)
    # ...whereas the runtime clips, which zooms in: the two differ
    assert not np.array_equal(training_crop(image, box, 64), crop_faces(image, box[None], 64)[0])


@pytest.mark.parametrize("context", [-0.06, 0.0, 0.03, 0.15])
def test_context_region_is_the_runtime_crop(image, context) -> None:
    """Inside the context square the pixels are the runtime crop's; outside they mirror the context band."""
    margin = 0.3
    rng = np.random.default_rng(11)
    for box in _inside_boxes(rng, 12, margin, np.float32):
        x1, y1, x2, y2 = crop_boxes_px(box[None], W, H, margin)[0]
        cx1, cy1, cx2, cy2 = crop_boxes_px(box[None], W, H, min(context, margin))[0]
        side = int(x2 - x1)
        a, b = int(cy1 - y1), int(cy2 - y1)  # context rows/cols inside the square
        c, d = int(cx1 - x1), int(cx2 - x1)
        # at the square's own resolution (no resize): the context region is exact and the border is its mirror
        got = training_crop(image, box, side, margin, context)
        ref = crop_faces(image, box[None], side, margin)[0]
        np.testing.assert_array_equal(got[a:b, c:d], ref[a:b, c:d])
        k = min(a, b - a - 1, 5)
        for j in range(1, k + 1):  # reflect: row a - j mirrors row a + j
            np.testing.assert_array_equal(got[a - j, c:d], got[a + j, c:d])
        assert not np.array_equal(got, ref) or context >= margin
        # resized to a model input: pixels whose resize footprint lies inside the context region are exact
        size = 64
        got = training_crop(image, box, size, margin, context).astype(int)
        ref = crop_faces(image, box[None], size, margin)[0].astype(int)
        s = size / side
        lo_r, hi_r = int(np.ceil(a * s)) + 2, int(np.floor(b * s)) - 2
        lo_c, hi_c = int(np.ceil(c * s)) + 2, int(np.floor(d * s)) - 2
        if hi_r > lo_r and hi_c > lo_c:
            np.testing.assert_array_equal(got[lo_r:hi_r, lo_c:hi_c], ref[lo_r:hi_r, lo_c:hi_c])


def test_pick_face_takes_the_largest() -> None:
    assert pick_face(FaceBoxes(np.zeros((0, 4), np.float32), np.zeros(0), np.zeros((0, 6, 2)))) is None
    boxes = np.array([[0, 0, 10, 10], [5, 5, 45, 40], [0, 0, 30, 30]], np.float32)
    assert pick_face(FaceBoxes(boxes, np.ones(3), np.zeros((3, 6, 2)))) == 1


@pytest.fixture(scope="module")
def detector():
    from deepguard.runtime.facedet import load_detector

    return load_detector(None)


def test_recrop_images_detects_and_crops_like_training_crop(astronaut, detector) -> None:
    face = astronaut[0:260, 120:360]
    imgs = []
    for scale, (oy, ox) in ((1.0, (0, 0)), (0.6, (40, 30)), (0.8, (10, 60))):  # face crops filling the frame
        f = cv2.resize(face, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        canvas = np.full((f.shape[0] + oy, f.shape[1] + ox, 3), 120, np.uint8)
        canvas[oy:, ox:] = f
        imgs.append(canvas)
    imgs.append(np.tile(np.linspace(0, 255, 100).astype(np.uint8)[None, :, None], (120, 1, 3)))  # no face
    contexts = [0.0, 0.02, -0.05, 0.0]
    crops, found, boxes = recrop_images(imgs, detector, 64, contexts)
    assert found.tolist() == [True, True, True, False]
    assert not crops[3].any()
    for img, box, ctx, crop in zip(imgs[:3], boxes[:3], contexts, crops[:3], strict=False):
        np.testing.assert_array_equal(crop, training_crop(img, box, 64, 0.3, ctx))
    # the padded detection is in image pixels: the astronaut's face (≈ x 55-185, y 40-190 in `face`) is inside
    x1, y1, x2, y2 = boxes[0]
    assert 20 < x1 < 110 and 130 < x2 < 220 and 0 < y1 < 110 and 130 < y2 < 230


def test_detect_padded_boxes_match_plain_detection(astronaut, detector) -> None:
    """A face small enough for plain detection: the padded run finds the same box (shifted back to the image)."""
    face = cv2.resize(astronaut[0:260, 120:360], (120, 130), interpolation=cv2.INTER_AREA)
    canvas = np.full((400, 400, 3), 90, np.uint8)
    canvas[150:280, 160:280] = face
    (plain,) = detector.detect([canvas])
    (padded,) = detect_padded([canvas], detector)
    assert len(plain) >= 1 and len(padded) >= 1
    b0, b1 = plain.boxes[pick_face(plain)], padded.boxes[pick_face(padded)]
    # same face, same place (the detector's box size itself varies with the face's scale in its input: ~20 %)
    centre = lambda b: np.array([b[0] + b[2], b[1] + b[3]]) / 2  # noqa: E731
    assert np.abs(centre(b0) - centre(b1)).max() < 0.25 * (b0[2] - b0[0]), (b0, b1)
    iw = max(0.0, min(b0[2], b1[2]) - max(b0[0], b1[0]))
    ih = max(0.0, min(b0[3], b1[3]) - max(b0[1], b1[1]))
    area = lambda b: (b[2] - b[0]) * (b[3] - b[1])  # noqa: E731
    assert iw * ih / (area(b0) + area(b1) - iw * ih) > 0.5, (b0, b1)
    assert 150 < centre(b1)[1] < 280 and 160 < centre(b1)[0] < 280
