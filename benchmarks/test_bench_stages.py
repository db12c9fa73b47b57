"""Per-stage cost on the 720p several-faces clip, every frame: decode, detect, crop, classify, aggregate.

Each stage runs alone (serially, the way the pipeline's stage threads run it: one onnxruntime thread, chunks of
8 frames), so the numbers add up to the CPU time one frame costs; the end-to-end benchmark shows how much of
it the pipeline overlaps on two cores. ``DEEPGUARD_THREADS`` pins the sessions' threads.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from deepguard.runtime import aggregate
from deepguard.runtime.crop import crop_faces
from deepguard.runtime.decode import iter_video_frames

CHUNK = 8
THREADS = int(os.environ.get("DEEPGUARD_THREADS") or 1)


@pytest.fixture(scope="module")
def detector():
    from deepguard.runtime.facedet import load_detector

    return load_detector(None, ["CPUExecutionProvider"], threads=THREADS, spin=False)


@pytest.fixture(scope="module")
def classifier():
    from deepguard.runtime.classify import FaceClassifier

    return FaceClassifier(providers="cpu", threads=THREADS, spin=False)


@pytest.fixture(scope="module")
def detections(detector, clip_frames):
    return [d for i in range(0, len(clip_frames), CHUNK) for d in detector.detect(clip_frames[i : i + CHUNK])]


def _per_frame(benchmark, perf, stage: str, n_frames: int, note: str = "") -> None:
    ms = benchmark.stats.stats.median / n_frames * 1e3
    benchmark.extra_info["ms_per_frame"] = round(ms, 3)
    perf.add("stages (720p, 1 thread)", stage, ms, "ms/frame", note)


def test_decode(benchmark, perf, clip) -> None:
    n = sum(1 for _ in iter_video_frames(clip, every_frame=True))
    benchmark.pedantic(
        lambda: sum(1 for _ in iter_video_frames(clip, every_frame=True)), rounds=3, iterations=1
    )
    _per_frame(benchmark, perf, "decode (PyAV, H.264 -> RGB)", n)


def test_detect(benchmark, perf, detector, clip_frames, detections) -> None:
    def run():
        for i in range(0, len(clip_frames), CHUNK):
            detector.detect(clip_frames[i : i + CHUNK])

    benchmark.pedantic(run, rounds=3, iterations=1)
    views = len(detector._views(clip_frames[:1])) if hasattr(detector, "_views") else 1
    faces = np.mean([len(d) for d in detections])
    _per_frame(
        benchmark,
        perf,
        "detect (BlazeFace full)",
        len(clip_frames),
        f"{views} views/frame, {faces:.1f} faces",
    )


def test_crop(benchmark, perf, clip_frames, detections) -> None:
    def run():
        for f, d in zip(clip_frames, detections, strict=True):
            crop_faces(f, d.boxes, 160)

    benchmark.pedantic(run, rounds=5, iterations=1)
    _per_frame(benchmark, perf, "crop (square + margin, resize 160)", len(clip_frames))


def test_classify(benchmark, perf, classifier, clip_frames, detections) -> None:
    crops = [
        np.concatenate(
            [
                crop_faces(f, d.boxes, 160)
                for f, d in zip(clip_frames[i : i + CHUNK], detections[i : i + CHUNK], strict=True)
            ]
        )
        for i in range(0, len(clip_frames), CHUNK)
    ]
    n_faces = sum(len(c) for c in crops)

    def run():
        for c in crops:
            classifier.score(c)

    benchmark.pedantic(run, rounds=3, iterations=1)
    _per_frame(benchmark, perf, "classify (default INT8, all faces)", len(clip_frames))
    perf.add(
        "stages (720p, 1 thread)",
        "classify per face",
        benchmark.stats.stats.median / n_faces * 1e3,
        "ms/face",
        f"{n_faces} faces",
    )


def test_aggregate(benchmark, perf, detections) -> None:
    rng = np.random.default_rng(0)
    face_scores = [rng.random(len(d)).tolist() for d in detections]

    def run():
        frames = [aggregate.frame_score(s) for s in face_scores]
        aggregate.verdict(aggregate.video_score(frames), 0.5)

    benchmark.pedantic(run, rounds=20, iterations=1)
    _per_frame(benchmark, perf, "aggregate (frame max + video rule)", len(detections))
