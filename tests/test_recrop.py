"""Training crops are inference crops: one function (``crop_faces`` with a ``context``) cuts both, the default model
carries the context its training used, and the pipeline cuts its crops with it; plus the re-crop of files."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from deepguard.runtime.crop import crop_boxes_px, crop_faces
from deepguard.runtime.types import FaceBoxes
from deepguard.training.recrop import (
    CONTEXT_MARGIN,
    INFERENCE_CONTEXT,
    detect_padded,
    pick_face,
    recrop_images,
)

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
def test_context_as_wide_as_the_margin_is_the_plain_crop(image, margin, dtype) -> None:
    rng = np.random.default_rng(int(margin * 100) + (dtype is np.float32))
    for box in _inside_boxes(rng, 60, margin, dtype):
        for size in (32, 64, 160):
            want = crop_faces(image, box[None], size, margin)[0]
            got = crop_faces(image, box[None], size, margin, context=margin)[0]
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
def test_mirrored_crop_rounds_float32_boxes_like_the_plain_crop(box) -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (400, 500, 3), np.uint8)
    b = np.array(box, np.float32)[None]
    np.testing.assert_array_equal(crop_faces(img, b, 64, 0.1, context=0.1), crop_faces(img, b, 64, 0.1))


def test_border_face_is_mirrored_not_clipped(image) -> None:
    """A square reaching past the frame: the face stays at inference scale, the missing part is the mirror image."""
    box = np.array([-20.0, 40.0, 60.0, 130.0])  # square (30 % margin) reaches ~55 px past the left border
    pad = 80
    mirrored = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    shifted = box + pad
    for size in (48, 160):
        want = crop_faces(mirrored, shifted[None], size)[0]
        np.testing.assert_array_equal(crop_faces(image, box[None], size, context=0.3)[0], want)
    # ...whereas without a context the crop is clipped, which zooms in: the two differ
    assert not np.array_equal(crop_faces(image, box[None], 64, context=0.3), crop_faces(image, box[None], 64))


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
        got = crop_faces(image, box[None], side, margin, context)[0]
        ref = crop_faces(image, box[None], side, margin)[0]
        np.testing.assert_array_equal(got[a:b, c:d], ref[a:b, c:d])
        k = min(a, b - a - 1, 5)
        for j in range(1, k + 1):  # reflect: row a - j mirrors row a + j
            np.testing.assert_array_equal(got[a - j, c:d], got[a + j, c:d])
        assert not np.array_equal(got, ref) or context >= margin
        # resized to a model input: pixels whose resize footprint lies inside the context region are exact
        size = 64
        got = crop_faces(image, box[None], size, margin, context)[0].astype(int)
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


def test_recrop_images_detects_and_crops_with_the_runtime_crop(astronaut, detector) -> None:
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
        np.testing.assert_array_equal(crop, crop_faces(img, box[None], 64, 0.3, ctx)[0])
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


def test_default_model_carries_the_training_crop_rule() -> None:
    """The shipped models store the context inference must keep: the middle of the range training drew from."""
    from deepguard.convert.metadata import read_metadata
    from deepguard.runtime.classify import DEFAULT_DIR, DEFAULT_NAMES

    assert CONTEXT_MARGIN[0] < INFERENCE_CONTEXT < CONTEXT_MARGIN[1]
    for precision in ("fp32", "int8"):
        assert (
            float(read_metadata(DEFAULT_DIR / DEFAULT_NAMES[precision])["crop_context"]) == INFERENCE_CONTEXT
        )


def test_pipeline_scores_the_crop_training_used(t1_jpg) -> None:
    """Every face of the group photo is scored on ``crop_faces(..., context=model's)``, not on a true-context crop
    (which a model trained on mirrored borders scores differently: the test can tell them apart)."""
    from deepguard.runtime.decode import load_image
    from deepguard.runtime.pipeline import Detector

    det = Detector(threads=2)
    ctx = det.classifier.crop_context
    assert ctx == INFERENCE_CONTEXT
    img = load_image(t1_jpg)
    faces = det.analyze(t1_jpg).faces
    boxes = np.array([f.box for f in faces], np.float32)
    size = det.classifier.input_size
    want = det.classifier.score(crop_faces(img, boxes, size, det.margin, ctx))[0]
    plain = det.classifier.score(crop_faces(img, boxes, size, det.margin))[0]
    np.testing.assert_allclose([f.score for f in faces], want, atol=1e-5)
    assert np.abs(want - plain).max() > 0.05


def _reference_mirrored(
    img: np.ndarray, box: np.ndarray, size: int, margin: float, context: float
) -> np.ndarray | None:
    """The training-time construction written out with numpy: context patch, ``np.pad`` reflect, then resize
    (None when the context square misses the frame)."""
    from deepguard.runtime.crop import square_boxes

    def px(m: float) -> list[int]:
        sq = square_boxes(box[None], m)[0].astype(np.float64)
        x1, y1, side = np.rint(sq[0]), np.rint(sq[1]), max(np.rint(sq[2] - sq[0]), 1.0)
        return [int(x1), int(y1), int(x1 + side), int(y1 + side)]

    x1, y1, x2, y2 = px(margin)
    cx1, cy1, cx2, cy2 = px(min(context, margin))
    cx1, cy1, cx2, cy2 = (
        max(cx1, x1, 0),
        max(cy1, y1, 0),
        min(cx2, x2, img.shape[1]),
        min(cy2, y2, img.shape[0]),
    )
    if cx2 <= cx1 or cy2 <= cy1:
        return None
    patch = img[cy1:cy2, cx1:cx2]
    mode = "reflect" if min(patch.shape[:2]) > 1 else "edge"
    patch = np.pad(patch, ((cy1 - y1, y2 - cy2), (cx1 - x1, x2 - cx2), (0, 0)), mode=mode)
    return cv2.resize(
        patch, (size, size), interpolation=cv2.INTER_AREA if patch.shape[0] >= size else cv2.INTER_LINEAR
    )


def test_mirrored_crop_equals_the_numpy_construction_even_for_slivers() -> None:
    """Faces at every corner and edge, down to context regions a pixel wide, where the mirror repeats itself."""
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (40, 60, 3), np.uint8)
    checked = 0
    for _ in range(400):
        w, h = rng.uniform(2, 30, 2)
        x, y = rng.uniform(-w + 1, 60 - 1), rng.uniform(-h + 1, 40 - 1)
        box = np.array([x, y, x + w, y + h], np.float32)
        context = float(rng.uniform(-0.1, 0.3))
        want = _reference_mirrored(img, box, 24, 0.3, context)
        if want is None:  # no true pixel to mirror: the clipped crop, as documented
            want = crop_faces(img, box[None], 24, 0.3)[0]
        else:
            checked += 1
        np.testing.assert_array_equal(crop_faces(img, box[None], 24, 0.3, context)[0], want, err_msg=str(box))
    assert checked > 300


def test_int8_calibration_crops_are_seeded_and_capped() -> None:
    from deepguard.training.data import CropSet
    from deepguard.training.default import int8_calibration_crops

    images = np.arange(200)[:, None, None, None].astype(np.uint8) * np.ones((1, 2, 2, 3), np.uint8)
    cs = CropSet(images, np.zeros(200), ["g"] * 200, ["p"] * 200)
    a, b = int8_calibration_crops(cs, n=100), int8_calibration_crops(cs, n=100)
    assert len(a) == 100 and np.array_equal(a, b) and len(np.unique(a[:, 0, 0, 0])) == 100
    small = CropSet(images[:40], np.zeros(40), ["g"] * 40, ["p"] * 40)
    assert sorted(int8_calibration_crops(small)[:, 0, 0, 0].tolist()) == list(range(40))


@pytest.mark.parametrize("raw", ["abc", "nan", "2", "-0.9"])
def test_a_bad_crop_context_names_the_model(raw) -> None:
    from deepguard.errors import ModelError
    from deepguard.runtime.classify import model_crop_context

    assert model_crop_context({}, "m.onnx") is None
    assert model_crop_context({"crop_context": "-0.015"}, "m.onnx") == -0.015
    with pytest.raises(ModelError, match=r"m\.onnx: metadata deepguard\.crop_context"):
        model_crop_context({"crop_context": raw}, "m.onnx")
