"""Classifier variants on real face crops: FP32 vs FP16 vs INT8, batch-size sweep, fused vs unfused, IO binding.

All on the CPU provider with 1 intra-op thread and no spinning (the stage benchmarks' setting) unless the
name says otherwise; ratios come from interleaved rounds (``deepguard.bench.harness``). FP16 is there to show
why ``auto`` never picks it on a CPU (onnxruntime's x86 kernels are FP32/INT8: FP16 graphs run through casts).
"""

from __future__ import annotations

import numpy as np
import pytest

from deepguard.bench.harness import interleaved, median, ratios
from deepguard.runtime.classify import FaceClassifier, default_model_path

SECTION = "classifier (default model, 160 px)"
BATCH = 16


def _clf(path, **kw) -> FaceClassifier:
    kw.setdefault("threads", 1)
    kw.setdefault("spin", False)
    return FaceClassifier(path, providers="cpu", batch_size=kw.pop("batch_size", 64), **kw)


@pytest.fixture(scope="module")
def crops16(face_crops: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.resize(face_crops, (BATCH, *face_crops.shape[1:])))


def test_fp32_fp16_int8(benchmark, perf, crops16) -> None:
    from deepguard.bench.models import fp16_of

    fp32 = default_model_path("fp32")
    models = {"fp32": _clf(fp32), "fp16": _clf(fp16_of(fp32)), "int8": _clf(default_model_path("int8"))}
    t = benchmark.pedantic(
        lambda: interleaved({k: (lambda m=m: m.score(crops16)) for k, m in models.items()}, 9),
        rounds=1,
        iterations=1,
    )
    for k in models:
        perf.add(SECTION, f"{k}, batch {BATCH}, 1 thread", median(t[k]) / BATCH * 1e3, "ms/face")
    perf.add(SECTION, "INT8 / FP32 speed", median(ratios(t, "fp32", "int8")), "x")
    perf.add(SECTION, "FP16 / FP32 speed (CPU)", median(ratios(t, "fp32", "fp16")), "x")
    ref = models["fp32"].score(crops16)[0]
    for k in ("fp16", "int8"):
        d = np.abs(models[k].score(crops16)[0] - ref)
        perf.add(SECTION, f"{k} max |dprob| vs FP32", float(d.max()), "", f"{len(ref)} real face crops")


@pytest.mark.parametrize("threads", [1, 2])
def test_batch_sweep(benchmark, perf, face_crops, threads: int) -> None:
    clf = _clf(default_model_path("int8"), threads=threads, spin=False)
    sizes = [1, 4, 8, 16, 32, 64]
    pool = np.ascontiguousarray(np.resize(face_crops, (64, *face_crops.shape[1:])))
    fns = {str(b): (lambda b=b: [clf.score(pool[i : i + b]) for i in range(0, 64, b)]) for b in sizes}
    t = benchmark.pedantic(lambda: interleaved(fns, 5), rounds=1, iterations=1)
    for b in sizes:
        perf.add(
            f"{SECTION}: batch sweep INT8",
            f"batch {b}, {threads} thread(s)",
            median(t[str(b)]) / 64 * 1e3,
            "ms/face",
        )


def test_fused_vs_unfused(benchmark, perf, crops16) -> None:
    from deepguard.bench.models import UnfusedEnsemble

    path = default_model_path("int8")
    fused, unfused = _clf(path), UnfusedEnsemble(path, threads=1)
    np.testing.assert_allclose(unfused.score(crops16), fused.score(crops16)[0], atol=1e-5)
    t = benchmark.pedantic(
        lambda: interleaved(
            {"unfused": lambda: unfused.score(crops16), "fused": lambda: fused.score(crops16)}, 15
        ),
        rounds=1,
        iterations=1,
    )
    perf.add(SECTION, "fused / unfused (2 sessions) speed, INT8", median(ratios(t, "unfused", "fused")), "x")


def test_io_binding(benchmark, perf, crops16) -> None:
    path = default_model_path("int8")
    plain, bound = _clf(path), _clf(path, io_binding=True)
    np.testing.assert_allclose(plain.score(crops16)[0], bound.score(crops16)[0], atol=1e-6)
    t = benchmark.pedantic(
        lambda: interleaved(
            {"plain": lambda: plain.score(crops16), "bound": lambda: bound.score(crops16)}, 15
        ),
        rounds=1,
        iterations=1,
    )
    perf.add(SECTION, "IO binding / run() speed, CPU", median(ratios(t, "plain", "bound")), "x")
