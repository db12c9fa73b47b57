"""Optional SCRFD detector (insightface) for users who bring their own SCRFD ONNX file.

Why a wrapper: the pipeline speaks ``FaceBoxes``; insightface speaks BGR images, (N, 5) arrays
and ``(N, 5, 2)`` keypoints. insightface is an optional dependency and no SCRFD weights ship with
DeepGuard, so every way of failing to load one becomes a ModelError that names the file.
SCRFD runs one frame per call (its ONNX export has a fixed batch); that is its cost, not ours.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from deepguard.errors import MediaError, ModelError
from deepguard.runtime.types import FaceBoxes

NUM_KEYPOINTS = 5


class ScrfdDetector:
    """insightface SCRFD: boxes, scores and 5 keypoints (eyes, nose, mouth corners) per face."""

    def __init__(
        self,
        path: str | Path,
        det_size: tuple[int, int] = (640, 640),
        score_threshold: float = 0.5,
        nms_iou: float = 0.4,
        providers: Sequence[str] | None = None,
    ) -> None:
        self.path = Path(path).expanduser()
        self.name = f"scrfd:{self.path.name}"
        # Check the path ourselves: insightface treats non-.onnx names as model-zoo names under
        # ~/.insightface and would look (or, with download=True, fetch) elsewhere.
        if not self.path.is_file():
            raise ModelError(f"{self.path}: SCRFD model file not found")
        if self.path.suffix.lower() != ".onnx":
            raise ModelError(f"{self.path}: SCRFD model must be an .onnx file")
        try:
            from insightface import model_zoo
        except ImportError as exc:
            raise ModelError(
                f"{self.path}: the SCRFD detector needs insightface (`pip install deepguard[insightface]`)"
            ) from exc
        try:
            model = model_zoo.get_model(
                str(self.path),
                download=False,
                providers=list(providers or ["CPUExecutionProvider"]),
            )
        except Exception as exc:  # onnx/onnxruntime/insightface raise many unrelated types
            raise ModelError(f"{self.path}: cannot load SCRFD model: {exc}") from exc
        if model is None or getattr(model, "taskname", None) != "detection" or not hasattr(model, "detect"):
            kind = type(model).__name__ if model is not None else "unrecognised model"
            raise ModelError(f"{self.path}: not an SCRFD face detector (insightface sees {kind})")
        try:
            # ctx_id < 0 makes insightface force CPUExecutionProvider; keep GPU providers if asked.
            # model_zoo models take input_size (FaceAnalysis.prepare calls it det_size).
            on_cpu = not providers or all(p == "CPUExecutionProvider" for p in providers)
            model.prepare(
                ctx_id=-1 if on_cpu else 0,
                input_size=tuple(det_size),
                det_thresh=score_threshold,
                nms_thresh=nms_iou,
            )
        except Exception as exc:
            raise ModelError(f"{self.path}: cannot prepare SCRFD model: {exc}") from exc
        self.model = model

    def detect(self, frames: Sequence[np.ndarray]) -> list[FaceBoxes]:
        """One FaceBoxes (K=5) per RGB uint8 frame; boxes clipped to the frame."""
        return [self._detect_one(np.asarray(f), i) for i, f in enumerate(frames)]

    def _detect_one(self, frame: np.ndarray, index: int) -> FaceBoxes:
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3 or 0 in frame.shape[:2]:
            raise MediaError(f"frame {index}: expected an (H, W, 3) uint8 RGB image, got {frame.shape}")
        bgr = np.ascontiguousarray(frame[:, :, ::-1])
        det, kps = self.model.detect(bgr)
        if det is None or len(det) == 0:
            return FaceBoxes.empty(NUM_KEYPOINTS)
        det = np.asarray(det, np.float32)
        h, w = frame.shape[:2]
        boxes = np.clip(det[:, :4], 0, [w, h, w, h]).astype(np.float32)
        if kps is None:
            kps = np.zeros((len(det), NUM_KEYPOINTS, 2), np.float32)
        order = np.argsort(-det[:, 4], kind="stable")
        return FaceBoxes(boxes[order], det[order, 4].copy(), np.asarray(kps, np.float32)[order])
