"""GPU path (``pip install '.[gpu]'``): faces/s and frames/s on CUDA / TensorRT, FP16 parity. Skipped without one.

Run on a GPU box::

    pip install -e '.[gpu,dev,train]' mtcnn
    DEEPGUARD_TRT_CACHE=/tmp/trt pytest benchmarks/test_bench_gpu.py -s      # default model
    DEEPGUARD_BENCH_SEED=1 pytest benchmarks/test_bench_gpu.py -s            # + seed-size ensemble (builds it)

What it records: classifier faces/s at batch 64 per provider and precision (FP32 graph, FP16 graph on CUDA,
TensorRT FP16 engine from the FP32 graph), FP16 parity against FP32 on the CPU (max |dprob| and decision
agreement on real face crops), TensorRT engine build time vs a cached load, and end-to-end 720p frames/s
with detector and classifier on the GPU. The log line of ``deepguard.providers`` says which provider ran.
"""

from __future__ import annotations

import os
import time

import numpy as np
import onnxruntime as ort
import pytest

from deepguard.bench.harness import interleaved, median
from deepguard.runtime.classify import FaceClassifier, default_model_path

GPU = [
    p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in ort.get_available_providers()
]
pytestmark = pytest.mark.skipif(
    not GPU, reason="no CUDA/TensorRT provider (pip install '.[gpu]' on a GPU box)"
)
SECTION = "GPU"
ALIAS = {"TensorrtExecutionProvider": "tensorrt", "CUDAExecutionProvider": "cuda"}


def _variants(fp32_path, fp16_path) -> list[tuple[str, str, object, str]]:
    out = []
    for p in GPU:
        out.append((ALIAS[p], "fp32", fp32_path, "fp32"))
        if p == "CUDAExecutionProvider":
            out.append((ALIAS[p], "fp16", fp16_path, "fp16"))
        else:  # TensorRT: FP16 engine built from the FP32 graph
            out.append((ALIAS[p], "fp16 engine", fp32_path, "auto"))
    return out


def _faces_per_s(perf, name: str, clf: FaceClassifier, crops: np.ndarray) -> float:
    t = interleaved({"x": lambda: clf.score(crops)}, 10)
    fps = len(crops) / median(t["x"])
    perf.add(SECTION, name, fps, "faces/s", f"batch {len(crops)}, ran on {clf.provider}")
    return fps


def _parity(perf, name: str, clf: FaceClassifier, ref: FaceClassifier, crops: np.ndarray) -> None:
    p, r = clf.score(crops)[0], ref.score(crops)[0]
    agree = float(np.mean((p >= ref.threshold) == (r >= ref.threshold)))
    perf.add(
        SECTION,
        f"{name} parity: max |dprob| vs CPU FP32",
        float(np.abs(p - r).max()),
        "",
        f"agreement {agree:.3f}",
    )


def test_default_model_faces_per_s_and_parity(perf, face_crops) -> None:
    from deepguard.bench.models import fp16_of

    fp32 = default_model_path("fp32")
    crops = np.ascontiguousarray(np.resize(face_crops, (64, *face_crops.shape[1:])))
    ref = FaceClassifier(fp32, providers="cpu")
    for prov, label, path, precision in _variants(fp32, fp16_of(fp32)):
        clf = FaceClassifier(path, providers=prov, precision=precision, batch_size=64)
        _faces_per_s(perf, f"default {label} on {prov}", clf, crops)
        _parity(perf, f"default {label} on {prov}", clf, ref, crops)


def test_tensorrt_engine_cache(perf, tmp_path, monkeypatch) -> None:
    if "TensorrtExecutionProvider" not in GPU:
        pytest.skip("no TensorRT provider")
    monkeypatch.setenv("DEEPGUARD_TRT_CACHE", str(tmp_path))
    times = []
    for _ in range(2):
        t = time.perf_counter()
        clf = FaceClassifier(default_model_path("fp32"), providers="tensorrt")
        clf.score(np.zeros((1, clf.input_size, clf.input_size, 3), np.uint8))
        times.append(time.perf_counter() - t)
    assert any(tmp_path.iterdir()), "TensorRT wrote no engine into the cache directory"
    perf.add(SECTION, "TensorRT first session (engine build)", times[0], "s")
    perf.add(SECTION, "TensorRT second session (cached engine)", times[1], "s")


def test_end_to_end_720p_on_gpu(perf, clip) -> None:
    from deepguard.runtime.pipeline import Detector

    det = Detector(
        every_frame=True, rescore_rate=0, providers=",".join(ALIAS[p] for p in GPU) + ",cpu", threads=0
    )
    det.analyze(clip)  # warm-up (and TensorRT engine builds)
    t = time.perf_counter()
    res = det.analyze(clip)
    fps = res.frames_sampled / (time.perf_counter() - t)
    perf.add(
        SECTION, "end-to-end 720p every frame", fps, "frames/s", f"classifier on {det.classifier.provider}"
    )


@pytest.mark.skipif(os.environ.get("DEEPGUARD_BENCH_SEED") != "1", reason="set DEEPGUARD_BENCH_SEED=1")
def test_seed_ensemble_on_gpu(perf, clip_frames) -> None:
    pytest.importorskip("tensorflow")
    from deepguard.bench.models import build_seed_ensemble, fp16_of
    from deepguard.runtime.crop import crop_faces
    from deepguard.runtime.facedet import load_detector

    det = load_detector(None, ["CPUExecutionProvider"])
    frames = clip_frames[::12]
    crops = np.concatenate(
        [crop_faces(f, b.boxes, 299) for f, b in zip(frames, det.detect(frames), strict=True)]
    )
    seed = build_seed_ensemble(crops[:32])
    batch = np.ascontiguousarray(np.resize(crops, (32, *crops.shape[1:])))
    ref = FaceClassifier(seed["fp32"], providers="cpu")
    for prov, label, path, precision in _variants(seed["fp32"], fp16_of(seed["fp32"])):
        clf = FaceClassifier(path, providers=prov, precision=precision, batch_size=32)
        _faces_per_s(perf, f"seed {label} on {prov}", clf, batch)
        _parity(perf, f"seed {label} on {prov}", clf, ref, batch)
