"""Face detection stage: BlazeFace ONNX export, decoding, NMS, batching, letterbox mapping."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from deepguard.errors import MediaError, ModelError
from deepguard.runtime.facedet import FaceDetector, load_detector
from deepguard.runtime.facedet.blazeface import (
    DATA_DIR,
    MODEL_CONFIGS,
    BlazeFaceDetector,
    generate_anchors,
    halvings,
    iou_matrix,
    tile_pyramid,
    weighted_nms,
)
from deepguard.runtime.facedet.export import make_batch_dynamic
from deepguard.runtime.types import FaceBoxes

skimage_data = pytest.importorskip("skimage.data")

# The six people in insightface's t1.jpg (1280x886), approximate face centres in pixels, found
# by looking at the image. The tiny blurred portrait in the wall frame is not a face to count.
T1_FACES = {
    "left woman": (112, 333),
    "woman behind": (315, 217),
    "man centre": (515, 345),
    "man red shirt": (780, 412),
    "man standing": (935, 137),
    "right woman": (1172, 340),
}
ASTRONAUT_FACE = (226, 122)


def _t1() -> np.ndarray:
    spec = importlib.util.find_spec("insightface")
    if spec is None or spec.origin is None:
        pytest.skip("insightface not installed (its data/images/t1.jpg is the group photo)")
    path = Path(spec.origin).parent / "data" / "images" / "t1.jpg"
    bgr = cv2.imread(str(path))
    assert bgr is not None, path
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def t1() -> np.ndarray:
    return _t1()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage_data.astronaut()


@pytest.fixture(scope="module")
def det() -> BlazeFaceDetector:
    return BlazeFaceDetector(threads=1)


@pytest.fixture(scope="module")
def det_untiled() -> BlazeFaceDetector:
    return BlazeFaceDetector(tile=False, threads=1)


def _centres(fb: FaceBoxes) -> np.ndarray:
    return (fb.boxes[:, :2] + fb.boxes[:, 2:]) / 2


def _contains(box: np.ndarray, pt: tuple[float, float]) -> bool:
    return bool(box[0] <= pt[0] <= box[2] and box[1] <= pt[1] <= box[3])


def _check_plausible(fb: FaceBoxes, shape: tuple[int, ...]) -> None:
    h, w = shape[:2]
    assert fb.boxes.dtype == np.float32 and fb.scores.dtype == np.float32
    assert fb.keypoints.shape == (len(fb), 6, 2)
    assert np.all(fb.boxes >= 0) and np.all(fb.boxes[:, [2, 3]] <= [w, h])
    bw, bh = fb.boxes[:, 2] - fb.boxes[:, 0], fb.boxes[:, 3] - fb.boxes[:, 1]
    assert np.all(bw > 0) and np.all(bh > 0)
    assert np.all(np.abs(np.log(bw / bh)) < 0.3)  # BlazeFace boxes are ~square
    assert np.all(np.diff(fb.scores) <= 0)  # sorted by score
    # eyes (keypoints 0, 1) inside their box
    for box, kp in zip(fb.boxes, fb.keypoints, strict=True):
        assert _contains(box, kp[0]) and _contains(box, kp[1])


# -- real images ------------------------------------------------------------------------------


def test_group_photo_all_six_faces(det, t1):
    fb = det.detect([t1])[0]
    _check_plausible(fb, t1.shape)
    assert len(fb) == len(T1_FACES), fb.boxes
    for name, centre in T1_FACES.items():
        hits = [b for b in fb.boxes if _contains(b, centre)]
        assert len(hits) == 1, f"{name}: {len(hits)} boxes contain {centre}"
        width = hits[0][2] - hits[0][0]
        assert 70 < width < 180, (name, width)
    assert fb.scores.min() > 0.6


def test_group_photo_untiled_still_finds_all(det_untiled, t1):
    fb = det_untiled.detect([t1])[0]
    assert len(fb) == len(T1_FACES)


def test_astronaut_exactly_one_face(det, astronaut):
    fb = det.detect([astronaut])[0]
    _check_plausible(fb, astronaut.shape)
    assert len(fb) == 1
    assert _contains(fb.boxes[0], ASTRONAUT_FACE)
    assert 70 < fb.boxes[0, 2] - fb.boxes[0, 0] < 160
    assert fb.scores[0] > 0.9
    # keypoint 0 is the subject's right eye = image left for a frontal face
    assert fb.keypoints[0, 0, 0] < fb.keypoints[0, 1, 0]


def test_blank_and_noise_have_no_faces(det):
    rng = np.random.default_rng(0)
    frames = [
        np.zeros((480, 640, 3), np.uint8),
        rng.integers(0, 256, (480, 640, 3), dtype=np.uint8),
        rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8),  # tiled path too
    ]
    assert [len(fb) for fb in det.detect(frames)] == [0, 0, 0]


def test_short_range_model(astronaut):
    d = load_detector("blazeface:short")
    assert d.name == "blazeface:short"
    fb = d.detect([astronaut])[0]
    assert len(fb) == 1 and _contains(fb.boxes[0], ASTRONAUT_FACE)


# -- batching ---------------------------------------------------------------------------------


def test_batch_equals_single(det, t1, astronaut):
    camera = np.repeat(skimage_data.camera()[:, :, None], 3, axis=2)
    frames = [astronaut, t1, camera]
    batched = det.detect(frames)
    for frame, got in zip(frames, batched, strict=True):
        ref = det.detect([frame])[0]
        assert len(got) == len(ref)
        np.testing.assert_allclose(got.boxes, ref.boxes, atol=0.05)
        np.testing.assert_allclose(got.scores, ref.scores, atol=1e-4)
        np.testing.assert_allclose(got.keypoints, ref.keypoints, atol=0.05)
    assert [len(fb) for fb in batched] == [1, 6, 1]
    chunked = BlazeFaceDetector(threads=1, max_batch=2).detect(frames)  # 1 + (1 + 4 tiles) + 1 = 7 views
    for got, ref in zip(chunked, batched, strict=True):
        np.testing.assert_allclose(got.boxes, ref.boxes, atol=0.05)


def test_reused_input_buffer_leaves_nothing_behind(t1, astronaut):
    """The detector reuses its input batch across calls: a letterboxed view after a full-canvas one must see
    black padding, not the previous frame, and give exactly what a fresh detector gives."""
    wide = np.ascontiguousarray(np.concatenate([astronaut, astronaut[:, ::-1]], axis=1))  # padded top/bottom
    noise = np.random.default_rng(0).integers(0, 255, (512, 512, 3), np.uint8)  # fills the whole canvas
    used = BlazeFaceDetector(threads=1)
    used.detect([noise, noise, t1])  # the buffer now holds noise and t1's views
    got = used.detect([wide])[0]
    ref = BlazeFaceDetector(threads=1).detect([wide])[0]
    assert len(got) == len(ref) == 2
    np.testing.assert_array_equal(got.boxes, ref.boxes)
    np.testing.assert_array_equal(got.scores, ref.scores)


@pytest.mark.parametrize("model", ["short", "full"])
def test_exported_batch_dim_is_dynamic(model):
    path = DATA_DIR / MODEL_CONFIGS[model].file
    proto = onnx.load(str(path))
    for value in list(proto.graph.input) + list(proto.graph.output):
        dim0 = value.type.tensor_type.shape.dim[0]
        assert dim0.dim_param == "N" and not dim0.HasField("dim_value"), value.name
    onnx.checker.check_model(proto)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert isinstance(sess.get_inputs()[0].shape[0], str)
    size = MODEL_CONFIGS[model].input_size
    x = np.random.default_rng(1).uniform(-1, 1, (3, size, size, 3)).astype(np.float32)
    reg, cls = sess.run(["regressors", "classificators"], {"input": x})
    n = MODEL_CONFIGS[model].num_anchors
    assert reg.shape == (3, n, 16) and cls.shape == (3, n, 1)
    reg1, _ = sess.run(["regressors", "classificators"], {"input": x[1:2]})
    np.testing.assert_allclose(reg[1:2], reg1, atol=1e-4)
    assert BlazeFaceDetector(model).batch_dynamic


def test_make_batch_dynamic_patches_reshape():
    from onnx import TensorProto, helper, numpy_helper

    shape = numpy_helper.from_array(np.array([1, -1, 4], np.int64), "shape")
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"], name="r")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4])],
        [shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert make_batch_dynamic(model) == 1
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {"x": np.zeros((3, 2, 2, 4), np.float32)})
    assert y.shape == (3, 4, 4)


# -- geometry ---------------------------------------------------------------------------------


@pytest.mark.parametrize("tall", [False, True])
def test_extreme_aspect_letterbox_mapping(det_untiled, astronaut, tall):
    """A head pasted at known offsets on a 4:1 canvas: boxes move by exactly that offset."""
    head = cv2.resize(astronaut[20:320, 80:380], (400, 400), interpolation=cv2.INTER_LINEAR)
    ref = det_untiled.detect([head])[0]
    assert len(ref) == 1
    size = ref.boxes[0, 2] - ref.boxes[0, 0]

    def paste(pos: int) -> tuple[np.ndarray, tuple[int, int]]:
        canvas = np.zeros((1600, 400, 3) if tall else (400, 1600, 3), np.uint8)
        off = (0, pos) if tall else (pos, 0)  # (x, y)
        canvas[off[1] : off[1] + 400, off[0] : off[0] + 400] = head
        return canvas, off

    (c1, off1), (c2, off2) = paste(1100), paste(300)
    for d in (det_untiled, BlazeFaceDetector(threads=1)):  # whole-frame view only, then + tiles
        g1, g2 = d.detect([c1, c2])
        assert len(g1) == len(g2) == 1, d.tile
        # same canvas scale, different offset: the mapping must move boxes by the offset
        delta = np.subtract(off1, off2)
        # (tolerance ~1 model-input pixel: the net is not exactly shift-equivariant)
        np.testing.assert_allclose(g1.boxes[0] - g2.boxes[0], np.tile(delta, 2), atol=0.05 * size)
        kp_delta = g1.keypoints[0] - g2.keypoints[0]
        np.testing.assert_allclose(kp_delta, np.broadcast_to(delta, (6, 2)), atol=0.07 * size)
        # and agree with the head detected on its own (the model sees it 4x smaller here)
        np.testing.assert_allclose(_centres(g1)[0] - _centres(ref)[0], off1, atol=0.08 * size)
        assert 0.75 < (g1.boxes[0, 2] - g1.boxes[0, 0]) / size < 1.25


def test_tile_pyramid_covers_frame():
    tiles = tile_pyramid(1080, 1920, 768, min_side=192)
    assert tiles and all(x1 - x0 == y1 - y0 for x0, y0, x1, y1 in tiles)
    cover = np.zeros((1080, 1920), bool)
    for x0, y0, x1, y1 in tiles:
        assert 0 <= x0 < x1 <= 1920 and 0 <= y0 < y1 <= 1080
        cover[y0:y1, x0:x1] = True
    assert cover.all()
    assert tile_pyramid(400, 300, 768, min_side=192) == tile_pyramid(400, 300, 768, min_side=192)


def test_views_are_halved_before_their_area_resize():
    """A view shrunk by ~2x or more is cut from a halved frame; what the model sees stays within a few grey
    levels of the one-step area resize (the reference, computed here with plain OpenCV), views of a frame
    already near the model size are untouched."""
    assert [halvings(w, h, nw, nh) for w, h, nw, nh in [(1280, 720, 192, 108), (720, 720, 192, 192)]] == [
        1,
        1,
    ]
    assert halvings(1920, 1080, 192, 108) == 2 and halvings(224, 224, 192, 192) == 0
    assert halvings(640, 640, 192, 192) == 0  # one halving would leave 1.67x, under LAST_SHRINK
    rng = np.random.default_rng(0)
    smooth = cv2.GaussianBlur(rng.integers(0, 256, (720, 1280, 3)).astype(np.uint8), (0, 0), 3)
    frame = np.ascontiguousarray(np.clip(smooth.astype(np.int16) * 4 - 384, 0, 255).astype(np.uint8))
    det = BlazeFaceDetector(threads=1)
    views = det._views([frame])
    assert len(views) == 4  # the whole frame and three tiles
    batch = det._input_batch(len(views))
    det._fill(batch, [frame], views)
    for j, v in enumerate(views):
        ref = cv2.resize(frame[v.y0 : v.y1, v.x0 : v.x1], (v.new_w, v.new_h), interpolation=cv2.INTER_AREA)
        got = (batch[j, v.pad_y : v.pad_y + v.new_h, v.pad_x : v.pad_x + v.new_w] + 1) * 127.5
        diff = np.abs(got - ref)
        assert diff.mean() < 1.5 and diff.max() <= 12, (j, diff.mean(), diff.max())
        assert not np.allclose(got, ref, atol=0.01)  # the halved path was taken: not bit-equal to one step


# -- faces that fill the frame: the zoomed-out view ----------------------------------------------------


def _tight_crop(img: np.ndarray, box: np.ndarray, fill: float, shift: float = 0.0):
    """Square crop around ``box`` whose side is ``box side / fill``, moved right by ``shift`` of its side."""
    side = max(box[2] - box[0], box[3] - box[1])
    c = int(round(side / fill))
    x0 = int(round((box[0] + box[2]) / 2 - c / 2 + shift * c))
    y0 = int(round((box[1] + box[3]) / 2 - c / 2))
    assert x0 >= 0 and y0 >= 0 and x0 + c <= img.shape[1] and y0 + c <= img.shape[0]
    ref = np.clip(box - np.array([x0, y0, x0, y0], np.float32), 0, c)  # the face in crop pixels, clipped
    return img[y0 : y0 + c, x0 : x0 + c], ref


@pytest.mark.parametrize("shift", [0.0, 0.15])  # 0.15: the face is cut by the crop's left edge
def test_tight_face_crops_are_found(det, t1, shift):
    """Each t1 face cropped so it fills ~90 % of the image: one box, where the face was on the whole photo."""
    plain = BlazeFaceDetector(threads=1, zoom_out=False)
    found_plain = 0
    for box in det.detect([t1])[0].boxes:
        crop, ref = _tight_crop(t1, box, 0.9, shift)
        fb = det.detect([crop])[0]
        _check_plausible(fb, crop.shape)  # boxes clipped to the crop
        assert len(fb) == 1, (box, fb.boxes)
        assert iou_matrix(fb.boxes, ref[None])[0, 0] > 0.6, (fb.boxes, ref)
        found_plain += len(plain.detect([crop])[0]) > 0
    if shift == 0.0:
        assert found_plain <= 3  # what the zoomed-out view is for: the whole-frame view alone misses most


def test_zoom_out_adds_nothing_to_normal_photos(t1, astronaut):
    """Always-on or fallback, the zoomed-out view changes no box of a photo whose faces the other views find."""
    camera = np.repeat(skimage_data.camera()[:, :, None], 3, axis=2)
    frames = [t1, astronaut, camera, np.zeros((480, 640, 3), np.uint8), cv2.resize(t1, (640, 443))]
    ref = BlazeFaceDetector(threads=1, zoom_out=False).detect(frames)
    for mode in (True, "fallback"):
        got = BlazeFaceDetector(threads=1, zoom_out=mode).detect(frames)
        for g, r in zip(got, ref, strict=True):
            assert len(g) == len(r), mode
            np.testing.assert_allclose(g.boxes, r.boxes, atol=1e-3)
            np.testing.assert_allclose(g.scores, r.scores, atol=1e-6)


def test_zoom_out_fallback_batches_like_single(det, t1):
    """The fallback pass runs only for frames where nothing was found, and a batch equals single frames."""
    box = det.detect([t1])[0].boxes[0]
    crop, _ = _tight_crop(t1, box, 0.9)
    frames = [t1, crop, np.zeros((300, 300, 3), np.uint8), crop]
    batched = det.detect(frames)
    assert [len(fb) for fb in batched] == [6, 1, 0, 1]
    for frame, got in zip(frames, batched, strict=True):
        ref = det.detect([frame])[0]
        np.testing.assert_allclose(got.boxes, ref.boxes, atol=0.05)
    always = BlazeFaceDetector(threads=1, zoom_out=True).detect(frames)
    assert [len(fb) for fb in always] == [6, 1, 0, 1]
    np.testing.assert_allclose(always[1].boxes, batched[1].boxes, atol=0.5)


@pytest.mark.parametrize("max_views", [40, 10])
@pytest.mark.parametrize(
    "shape", [(224, 224), (480, 640), (1080, 1920), (2160, 3840), (1100, 1000), (1440, 5760), (600, 1300)]
)
def test_zoom_view_counts_in_the_view_cap(shape, max_views):
    det = BlazeFaceDetector(threads=1, zoom_out=True, max_views=max_views)
    views = det._views([np.zeros((*shape, 3), np.uint8)])
    assert len(views) <= max_views
    zoom = [v for v in views if v.is_zoom]
    h, w = shape
    assert len(zoom) == (min(h, w) > 0.5 * max(h, w))  # an elongated frame cannot be filled by a face
    for v in zoom:  # the whole frame, at half the model input
        assert (v.x0, v.y0, v.x1, v.y1) == (0, 0, w, h) and max(v.new_w, v.new_h) == 96
    fallback = BlazeFaceDetector(threads=1, max_views=max_views)  # default: the second pass counts too
    assert 1 + len(fallback.frame_tiles(h, w)) + len(zoom) <= max_views
    with pytest.raises(ValueError, match="zoom_out"):
        BlazeFaceDetector(zoom_out="always")


# -- anchors and NMS --------------------------------------------------------------------------


def test_anchor_counts_and_order():
    for cfg in MODEL_CONFIGS.values():
        a = generate_anchors(cfg.input_size, cfg.strides, cfg.interpolated_scale_aspect_ratio)
        assert a.shape == (cfg.num_anchors, 2)
        assert a.min() > 0 and a.max() < 1
    short = generate_anchors(128, (8, 16, 16, 16), 1.0)
    np.testing.assert_allclose(short[:2], [[0.5 / 16] * 2] * 2)  # 2 anchors per 16x16 cell
    np.testing.assert_allclose(short[2], [1.5 / 16, 0.5 / 16])  # x varies fastest
    np.testing.assert_allclose(short[512:518], [[0.5 / 8] * 2] * 6)  # 6 per 8x8 cell
    full = generate_anchors(192, (4,), 0.0)
    np.testing.assert_allclose(full[[0, 1, 48]], [[0.5 / 48] * 2, [1.5 / 48, 0.5 / 48], [0.5 / 48, 1.5 / 48]])


def test_weighted_nms_hand_made():
    boxes = np.array(
        [
            [0, 0, 10, 10],  # A: best of cluster 1
            [1, 1, 11, 11],  # IoU(A) = 0.68 -> merged into A
            [5, 0, 15, 10],  # IoU(A) = 0.333 -> merged into A
            [8, 0, 18, 10],  # IoU(A) = 0.11 -> its own cluster
            [20, 20, 30, 30],  # far away
        ],
        np.float32,
    )
    scores = np.array([0.9, 0.6, 0.5, 0.55, 0.8], np.float32)
    kps = np.repeat(boxes[:, None, :2], 6, axis=1)
    out_b, out_s, out_k = weighted_nms(boxes, scores, kps, iou_threshold=0.3)
    np.testing.assert_allclose(out_s, [0.9, 0.8, 0.55])
    w = np.array([0.9, 0.6, 0.5])
    np.testing.assert_allclose(out_b[0], (w[:, None] * boxes[:3]).sum(0) / w.sum(), rtol=1e-6)
    np.testing.assert_allclose(out_b[1], boxes[4])
    np.testing.assert_allclose(out_b[2], boxes[3])
    np.testing.assert_allclose(out_k[0, 3], out_b[0, :2], rtol=1e-6)
    empty = weighted_nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 6, 2)))
    assert [e.shape for e in empty] == [(0, 4), (0,), (0, 6, 2)]


# -- loading and errors -----------------------------------------------------------------------


def test_load_detector_specs():
    d = load_detector(None)
    assert isinstance(d, FaceDetector) and d.name == "blazeface:full"
    assert load_detector("blazeface").name == "blazeface:full"
    assert load_detector("BlazeFace:full").name == "blazeface:full"
    for bad in ("yolo", "blazeface:medium", "scrfd:"):
        with pytest.raises(ValueError, match="detector spec"):
            load_detector(bad)
    assert load_detector("").name == "blazeface:full"  # empty means default, like None


def test_bad_frames_and_empty_batch(det):
    assert det.detect([]) == []
    with pytest.raises(MediaError, match="frame 1"):
        det.detect([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.float32)])
    with pytest.raises(MediaError, match="shape"):
        det.detect([np.zeros((0, 8, 3), np.uint8)])
    grey = det.detect([np.zeros((32, 48), np.uint8), np.zeros((32, 48, 4), np.uint8)])
    assert [len(fb) for fb in grey] == [0, 0]
    tiny = det.detect([np.full((1, 1, 3), 255, np.uint8)])
    assert len(tiny[0]) == 0


def test_missing_or_bad_blazeface_model(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        BlazeFaceDetector(model_path=tmp_path / "nope.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(ModelError, match="bad.onnx"):
        BlazeFaceDetector(model_path=bad)
    with pytest.raises(ModelError, match="blazeface_full.onnx: expected one"):
        BlazeFaceDetector("short", model_path=DATA_DIR / MODEL_CONFIGS["full"].file)


def test_scrfd_missing_or_invalid(tmp_path):
    pytest.importorskip("insightface")
    with pytest.raises(ModelError, match="not found"):
        load_detector(f"scrfd:{tmp_path / 'scrfd_missing.onnx'}")
    bad = tmp_path / "scrfd_bad.onnx"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(ModelError, match="scrfd_bad.onnx"):
        load_detector(f"scrfd:{bad}")
    with pytest.raises(ModelError, match="not an SCRFD"):  # a valid ONNX that is no detector
        load_detector(f"scrfd:{DATA_DIR / MODEL_CONFIGS['short'].file}")
    txt = tmp_path / "model.bin"
    txt.write_bytes(b"x")
    with pytest.raises(ModelError, match=".onnx"):
        load_detector(f"scrfd:{txt}")


# -- export fidelity --------------------------------------------------------------------------

_TFLITE_SCRIPT = r"""
import sys, numpy as np, tensorflow as tf
for path, npy in zip(sys.argv[1::2], sys.argv[2::2]):
    x = np.load(npy)
    it = tf.lite.Interpreter(model_path=path)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    outs = [it.get_tensor(o["index"]) for o in it.get_output_details()]
    np.save(npy + ".reg.npy", [o for o in outs if o.shape[-1] == 16][0])
    np.save(npy + ".cls.npy", [o for o in outs if o.shape[-1] == 1][0])
"""


@pytest.fixture(scope="module")
def tflite_outputs(astronaut, tmp_path_factory) -> dict[str, tuple[np.ndarray, ...]]:
    """Run tf.lite.Interpreter for both models in ONE child process (TensorFlow takes seconds
    to import and never loads into the test interpreter). Returns model -> (x, reg, cls)."""
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("tensorflow not installed")
    from deepguard.runtime.facedet.export import tflite_path

    tmp = tmp_path_factory.mktemp("tflite")
    args, inputs = [], {}
    for model, cfg in MODEL_CONFIGS.items():
        try:
            src = tflite_path(model)
        except ModelError as exc:
            pytest.skip(str(exc))
        size = cfg.input_size
        x = cv2.resize(astronaut, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 127.5 - 1
        npy = tmp / f"{model}.npy"
        np.save(npy, x[None])
        args += [str(src), str(npy)]
        inputs[model] = (x[None], npy)
    proc = subprocess.run(
        [sys.executable, "-c", _TFLITE_SCRIPT, *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {
        m: (x, np.load(str(npy) + ".reg.npy"), np.load(str(npy) + ".cls.npy"))
        for m, (x, npy) in inputs.items()
    }


@pytest.mark.slow  # ~4-12 s: importing TensorFlow in the child process
@pytest.mark.parametrize("model", ["short", "full"])
def test_onnx_matches_tflite(model, tflite_outputs):
    """The shipped ONNX reproduces tf.lite.Interpreter on a real image."""
    x, ref_reg, ref_cls = tflite_outputs[model]
    sess = ort.InferenceSession(str(DATA_DIR / MODEL_CONFIGS[model].file), providers=["CPUExecutionProvider"])
    reg, cls = sess.run(["regressors", "classificators"], {"input": x})
    assert reg.shape == ref_reg.shape and cls.shape == ref_cls.shape
    assert np.abs(reg - ref_reg).max() < 1e-2  # observed ~1e-4 (input-pixel units)
    assert np.abs(cls - ref_cls).max() < 1e-2  # logits
    assert 1 / (1 + np.exp(-cls.max())) > 0.9  # the face is there in both
