"""INT8 BlazeFace: parity with FP32 on real photos, the shipped files, the detector specs that load them.

Parity is judged on what the pipeline consumes, the detector's output after tiling, zoom-out and weighted NMS:
every face FP32 finds (at its 0.5 threshold) must be found by INT8 (IoU >= 0.5, one-to-one), INT8 must find no
other face, and matched boxes and keypoints must agree. The test photos are the ones the INT8 files were
calibrated on (insightface's and scikit-image's, :func:`calibration_photos`); the 720p benchmark frames and the
mirrored photos are frames the calibration never saw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import pytest

from deepguard.runtime.facedet import BLAZEFACE_INT8_VARIANTS, int8_path, load_detector, parse_blazeface_spec
from deepguard.runtime.facedet.blazeface import DATA_DIR, MODEL_CONFIGS, BlazeFaceDetector, iou_matrix
from deepguard.runtime.facedet.export import head_nodes
from deepguard.runtime.types import FaceBoxes

pytest.importorskip("skimage.data")
pytest.importorskip("insightface")

MODELS = BLAZEFACE_INT8_VARIANTS  # full only: the short-range model does not quantise to parity
# Eyes, nose tip, mouth centre; the two ear tragions (MediaPipe keypoints 4, 5) are unstable in FP32 already.
CORE_KEYPOINTS = slice(0, 4)


@dataclass
class Parity:
    faces: int  # FP32 faces
    found: int  # of them, matched by an INT8 face with IoU >= 0.5
    extra: int  # INT8 faces matching no FP32 face
    ious: np.ndarray  # (found,) IoU of each matched pair
    kp_err: np.ndarray  # (found, K) keypoint distance, pixels
    sides: np.ndarray  # (found,) FP32 box long side, pixels


def parity(ref: list[FaceBoxes], got: list[FaceBoxes], min_iou: float = 0.5) -> Parity:
    """Match each frame's boxes one-to-one, best IoU first; count misses and extras."""
    faces = found = extra = 0
    ious, kps, sides = [], [], []
    for a, b in zip(ref, got, strict=True):
        faces += len(a.scores)
        iou = iou_matrix(a.boxes, b.boxes) if len(a.scores) and len(b.scores) else np.zeros((len(a), len(b)))
        pairs = sorted(np.ndindex(iou.shape), key=lambda ij: -iou[ij])
        used_a: set[int] = set()
        used_b: set[int] = set()
        for i, j in pairs:
            if iou[i, j] < min_iou or i in used_a or j in used_b:
                continue
            used_a.add(i)
            used_b.add(j)
            ious.append(iou[i, j])
            kps.append(np.linalg.norm(a.keypoints[i] - b.keypoints[j], axis=-1))
            sides.append(max(a.boxes[i, 2] - a.boxes[i, 0], a.boxes[i, 3] - a.boxes[i, 1]))
        found += len(used_a)
        extra += len(b.scores) - len(used_b)
    k = ref[0].keypoints.shape[1] if ref else 0
    return Parity(
        faces,
        found,
        extra,
        np.asarray(ious, np.float64),
        np.asarray(kps, np.float64).reshape(-1, k),
        np.asarray(sides, np.float64),
    )


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    from deepguard.runtime.facedet.export import calibration_photos

    return calibration_photos()


@pytest.fixture(scope="module")
def unseen(photos) -> list[np.ndarray]:
    from deepguard.bench.clips import frames_720p

    return [np.ascontiguousarray(p[:, ::-1]) for p in photos] + frames_720p(8)[::2]


@pytest.fixture(scope="module", params=MODELS)
def pair(request) -> tuple[BlazeFaceDetector, BlazeFaceDetector]:
    return (
        load_detector(f"blazeface:{request.param}", threads=1),
        load_detector(f"blazeface:{request.param}:int8", threads=1),
    )


def test_int8_parity_on_test_photos(pair, photos):
    fp32, int8 = pair
    p = parity(fp32.detect(photos), int8.detect(photos))
    assert p.faces >= 9  # t1's six, Tom Hanks, the astronaut, the cameraman
    assert p.found == p.faces, f"{int8.name}: INT8 lost {p.faces - p.found} of {p.faces} faces"
    assert p.extra == 0, f"{int8.name}: {p.extra} faces FP32 does not find"
    assert p.ious.min() >= 0.9, f"{int8.name}: matched box IoU {np.round(np.sort(p.ious)[:3], 3)}"
    core = p.kp_err[:, CORE_KEYPOINTS].max(axis=1)
    assert (core <= np.maximum(4.0, 0.05 * p.sides)).all(), (
        f"{int8.name}: eye/nose/mouth off by {np.round(core, 1)} px on faces of {np.round(p.sides)} px"
    )
    assert p.kp_err.mean() <= 3.0


def test_int8_parity_on_unseen_frames(pair, unseen):
    """Mirrored photos and 720p benchmark frames (seven faces of 60-180 px each): the same faces, looser boxes.

    Why looser: faces of 60-110 px in a 1280 px frame are ~10-20 px in the model input, where INT8's ~0.3 px mean
    (~1.3 px p99) regressor error is several per cent of the face; FP32 against its own JPEG (q95) re-encode
    already agrees only to IoU 0.93 there.
    """
    fp32, int8 = pair
    p = parity(fp32.detect(unseen), int8.detect(unseen))
    assert p.faces >= 30
    assert p.found == p.faces, f"{int8.name}: INT8 lost {p.faces - p.found} of {p.faces} faces"
    assert p.extra == 0, f"{int8.name}: {p.extra} faces FP32 does not find"
    assert p.ious.min() >= 0.8, f"{int8.name}: matched box IoU {np.round(np.sort(p.ious)[:3], 3)}"
    assert p.ious.mean() >= 0.94
    assert np.median(p.kp_err[:, CORE_KEYPOINTS]) <= 3.0


def test_parity_check_can_fail(photos):
    """The matcher behind the parity tests reports a lost face, an extra face and a shifted box."""
    fp32 = load_detector("blazeface", threads=1)
    ref = fp32.detect(photos)
    assert parity(ref, ref).found == parity(ref, ref).faces and parity(ref, ref).ious.min() == 1.0
    lost = [FaceBoxes(r.boxes[1:], r.scores[1:], r.keypoints[1:]) for r in ref]
    assert parity(ref, lost).found < parity(ref, lost).faces
    assert parity(lost, ref).extra > 0
    shifted = []
    for r in ref:
        w = (r.boxes[:, 2:3] - r.boxes[:, 0:1]) * np.array([[0.1, 0, 0.1, 0]], np.float32)
        shifted.append(FaceBoxes(r.boxes + w, r.scores, r.keypoints))
    p = parity(ref, shifted)
    assert p.found == p.faces and p.ious.max() < 0.9  # a 10 % shift: IoU 0.82, below the 0.9 gate


@pytest.mark.parametrize("model", MODELS)
def test_int8_files(model):
    """Shipped INT8 files: small, quantised trunk, FP32 heads, same I/O as FP32, marked as INT8."""
    fp32_path = DATA_DIR / MODEL_CONFIGS[model].file
    path = int8_path(fp32_path)
    assert path.name == f"blazeface_{model}_int8.onnx"
    assert path.stat().st_size < 1_000_000
    q, f = onnx.load(str(path)), onnx.load(str(fp32_path))
    ops = [n.op_type for n in q.graph.node]
    assert ops.count("QuantizeLinear") >= 20 and "DequantizeLinear" in ops
    meta = {p.key: p.value for p in q.metadata_props}
    assert meta["deepguard.precision"] == "int8" and meta["deepguard.detector"] == f"blazeface_{model}"
    assert "Percentile" in meta["int8_recipe"] and "reduce_range" in meta["int8_recipe"]
    by_name = {n.name: n for n in q.graph.node}
    weights = {i.name for i in q.graph.initializer}
    head_convs = [n for n in head_nodes(f) if by_name[n].op_type == "Conv"]
    assert head_convs and all(by_name[n].input[1] in weights for n in head_convs)  # float weights, not DQ'd
    assert [o.name for o in q.graph.output] == [o.name for o in f.graph.output]
    assert q.graph.input[0].type == f.graph.input[0].type  # float input, dynamic batch


def test_no_short_range_int8():
    assert MODELS == ("full",)
    assert not int8_path(DATA_DIR / MODEL_CONFIGS["short"].file).exists()
    for spec in ("blazeface:short:int8", "blazeface:int8:short"):
        with pytest.raises(ValueError, match="no INT8 short-range"):
            load_detector(spec)


def test_int8_specs():
    assert parse_blazeface_spec("") == ("full", "fp32")
    assert parse_blazeface_spec("int8") == ("full", "int8")
    assert parse_blazeface_spec("short:INT8") == ("short", "int8")
    assert parse_blazeface_spec("int8:short") == ("short", "int8")
    assert parse_blazeface_spec("full:fp32") == ("full", "fp32")
    for bad in ("full:short", "int8:int8", "int4", "full:int8:x"):
        with pytest.raises(ValueError, match="detector spec"):
            load_detector(f"blazeface:{bad}")
    assert load_detector("blazeface:int8").name == "blazeface:full:int8"
    d = load_detector("BlazeFace:Full:INT8")
    assert d.name == "blazeface:full:int8" and d.model == "full"
    assert d.session.get_modelmeta().custom_metadata_map["deepguard.precision"] == "int8"
    fp32 = load_detector("blazeface:fp32")
    assert fp32.name == "blazeface:full"
    assert "deepguard.precision" not in fp32.session.get_modelmeta().custom_metadata_map


def test_missing_int8_file_names_it(tmp_path):
    from deepguard.errors import ModelError

    with pytest.raises(ModelError, match="export-detector"):
        BlazeFaceDetector("full", model_path=int8_path(tmp_path / MODEL_CONFIGS["full"].file))


@pytest.mark.slow  # ~20-40 s CPU: calibration and quantisation of the full-range model on three photos
def test_quantize_blazeface_builds_a_working_model(tmp_path, photos):
    from deepguard.runtime.facedet.export import quantize_blazeface

    src = DATA_DIR / MODEL_CONFIGS["full"].file
    dst = quantize_blazeface(src, tmp_path / "q.onnx", "full", photos[-3:])  # t1, astronaut, camera
    det = BlazeFaceDetector("full", model_path=dst, threads=1)
    ref = BlazeFaceDetector("full", threads=1)
    p = parity(ref.detect(photos[-3:]), det.detect(photos[-3:]))
    assert p.faces == 8 and p.found == p.faces and p.extra == 0 and p.ious.min() >= 0.8
    with pytest.raises(ValueError, match="unknown BlazeFace model"):
        quantize_blazeface(src, tmp_path / "x.onnx", "medium", photos[-1:])
