"""The runtime pipeline: decode -> detect -> crop -> classify -> aggregate, batched across frames.

``Detector().analyze(path)`` handles one image or video file; ``Detector().analyze_frames(frames)`` handles any
iterable of frames (a camera, a gRPC stream). Frames are processed in chunks: one detector run per chunk and one
classifier run for all faces of the chunk, which is what makes the edge CPU fast enough for every-frame video.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from pathlib import Path

import numpy as np

from deepguard.errors import DeepGuardError, MediaError
from deepguard.runtime import aggregate
from deepguard.runtime.classify import FaceClassifier
from deepguard.runtime.crop import crop_faces
from deepguard.runtime.decode import iter_video_frames, load_image, media_kind
from deepguard.runtime.types import Analysis, Face, Frame, FrameScore

log = logging.getLogger("deepguard.pipeline")


def _as_frame(f: Frame | np.ndarray, i: int) -> Frame:
    if isinstance(f, Frame):
        return f
    return Frame(np.asarray(f), index=i, time=None)


def _check_frame(img: np.ndarray, name: str) -> np.ndarray:
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3 or min(img.shape[:2]) < 1:
        raise MediaError(f"{name}: frame must be (H, W, 3) uint8 RGB, got {img.shape} {img.dtype}")
    return img


class Detector:
    """Face-level deepfake detector over images, videos and frame streams."""

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        detector: str | None = None,
        providers: Sequence[str] | str | None = None,
        precision: str = "auto",
        margin: float = 0.3,
        fps: float | None = 1.0,
        every_frame: bool = False,
        max_frames: int | None = None,
        face_crops: bool = False,
        chunk: int = 8,
        threads: int | None = None,
        threshold: float | None = None,
    ) -> None:
        self.classifier = FaceClassifier(model, precision=precision, providers=providers, threads=threads)
        self.face_crops = face_crops
        self._detector_spec = detector
        self._providers = providers
        self._face_detector = None
        self.margin = margin
        self.fps, self.every_frame, self.max_frames = fps, every_frame, max_frames
        self.chunk = max(1, chunk)
        self.threshold = self.classifier.threshold if threshold is None else float(threshold)

    @property
    def face_detector(self):
        """Loaded on first use so that ``--face-crops`` runs never open the detector model."""
        if self._face_detector is None:
            from deepguard.runtime.facedet import load_detector

            self._face_detector = load_detector(self._detector_spec, providers=self._providers)
        return self._face_detector

    @property
    def model_name(self) -> str:
        return self.classifier.name

    # -- core: frames -> faces ---------------------------------------------------------------------------
    def _faces_for_chunk(self, frames: list[Frame]) -> list[list[Face]]:
        size = self.classifier.input_size
        if self.face_crops:
            import cv2

            crops = np.stack(
                [
                    cv2.resize(
                        f.image,
                        (size, size),
                        interpolation=cv2.INTER_AREA if min(f.image.shape[:2]) > size else cv2.INTER_LINEAR,
                    )
                    for f in frames
                ]
            )
            probs, members = self.classifier.score(crops)
            return [
                [
                    Face(
                        box=[0.0, 0.0, float(f.image.shape[1]), float(f.image.shape[0])],
                        det_score=1.0,
                        keypoints=[],
                        frame=f.index,
                        time=f.time,
                        score=float(p),
                        member_scores=m.tolist(),
                    )
                ]
                for f, p, m in zip(frames, probs, members, strict=False)
            ]
        dets = self.face_detector.detect([f.image for f in frames])
        crops = [crop_faces(f.image, d.boxes, size, self.margin) for f, d in zip(frames, dets, strict=False)]
        all_crops = np.concatenate(crops) if crops else np.zeros((0, size, size, 3), np.uint8)
        probs, members = self.classifier.score(all_crops)
        out, k = [], 0
        for f, d in zip(frames, dets, strict=False):
            faces = []
            for j in range(len(d)):
                faces.append(
                    Face(
                        box=[round(float(v), 2) for v in d.boxes[j]],
                        det_score=float(d.scores[j]),
                        keypoints=np.round(d.keypoints[j], 2).tolist(),
                        frame=f.index,
                        time=f.time,
                        score=float(probs[k]),
                        member_scores=[float(v) for v in members[k]],
                    )
                )
                k += 1
            out.append(faces)
        return out

    def iter_frames(
        self, frames: Iterable[Frame | np.ndarray], name: str = "<stream>"
    ) -> Iterator[tuple[FrameScore, list[Face]]]:
        """Stream results frame by frame, in order, processing ``chunk`` frames per model run."""
        it = (_as_frame(f, i) for i, f in enumerate(frames))
        while batch := list(islice(it, self.chunk)):
            for f in batch:
                _check_frame(f.image, name)
            for f, faces in zip(batch, self._faces_for_chunk(batch), strict=False):
                score = aggregate.frame_score([x.score for x in faces])
                yield FrameScore(index=f.index, time=f.time, score=score, n_faces=len(faces)), faces

    # -- public API -----------------------------------------------------------------------------------------
    def analyze_frames(
        self,
        frames: Iterable[Frame | np.ndarray],
        name: str = "<stream>",
        kind: str = "video",
        progress: Callable[[int], None] | None = None,
    ) -> Analysis:
        """Aggregate a whole frame sequence into one verdict (per-frame = max over faces; per-video = rule)."""
        scores: list[FrameScore] = []
        faces: list[Face] = []
        for fs, ff in self.iter_frames(frames, name):
            scores.append(fs)
            faces.extend(ff)
            if progress:
                progress(1)
        if kind == "image":
            score = scores[0].score if scores else None
        else:
            score = aggregate.video_score([s.score for s in scores])
        return Analysis(
            path=name,
            kind=kind,
            verdict=aggregate.verdict(score, self.threshold),
            score=score,
            faces=faces,
            frames=scores if kind == "video" else [],
            model=self.model_name,
            threshold=self.threshold,
            frames_sampled=len(scores),
        )

    def analyze_image(self, image: np.ndarray, name: str = "<image>") -> Analysis:
        return self.analyze_frames([Frame(_check_frame(image, name), 0, None)], name=name, kind="image")

    def analyze(self, path: str | Path, progress: Callable[[int], None] | None = None) -> Analysis:
        """One file -> Analysis. Decoding/model problems become ``verdict='error'`` with a message, never a raise."""
        name = str(path)
        kind = "image"
        try:
            kind = media_kind(path)
            if kind == "image":
                return self.analyze_image(load_image(path), name)
            frames = iter_video_frames(
                path, fps=self.fps, every_frame=self.every_frame, max_frames=self.max_frames
            )
            res = self.analyze_frames(frames, name=name, kind="video", progress=progress)
            if res.frames_sampled == 0:
                raise MediaError(f"{name}: no frames could be decoded")
            return res
        except DeepGuardError as e:
            return self._error(name, kind, str(e))
        except Exception as e:  # last line of defence: a bad file must not stop a folder run
            log.exception("unexpected failure on %s", name)
            return self._error(name, kind, f"{name}: internal error: {type(e).__name__}: {e}")

    def _error(self, name: str, kind: str, message: str) -> Analysis:
        return Analysis(
            path=name,
            kind=kind,
            verdict="error",
            score=None,
            model=self.model_name,
            error=message,
            threshold=self.threshold,
        )
