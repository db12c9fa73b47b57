"""The seed-size ensemble (Xception + EfficientNetV2-M at 299, the origin's models) on the CPU: ms per face.

Built on first use from Keras (random init unless Keras' ImageNet weights are cached; latency does not depend
on the weights) through the product's converter: fused graph, FP32 and INT8 QDQ (``deepguard.bench.models``),
into ``DEEPGUARD_BENCH_CACHE`` - several minutes the first time, reused afterwards. Target: INT8 <= 100 ms/face.
Set ``DEEPGUARD_BENCH_SEED=0`` to skip.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from deepguard.bench.harness import interleaved, median, ratios

SECTION = "seed-size ensemble (Xception + EffNetV2-M, 299 px)"
pytestmark = pytest.mark.skipif(
    os.environ.get("DEEPGUARD_BENCH_SEED") == "0", reason="DEEPGUARD_BENCH_SEED=0"
)


@pytest.fixture(scope="module")
def crops299(clip_frames) -> np.ndarray:
    from deepguard.runtime.crop import crop_faces
    from deepguard.runtime.facedet import load_detector

    det = load_detector(None, ["CPUExecutionProvider"])
    frames = clip_frames[::12]
    return np.concatenate(
        [crop_faces(f, b.boxes, 299) for f, b in zip(frames, det.detect(frames), strict=True)]
    )


@pytest.fixture(scope="module")
def seed(crops299):
    pytest.importorskip("tensorflow")
    from deepguard.bench.models import build_seed_ensemble

    return build_seed_ensemble(crops299[:32])


@pytest.mark.parametrize("threads", [2, 1])
def test_seed_ms_per_face(benchmark, perf, seed, crops299, threads: int) -> None:
    from deepguard.bench.flops import count_macs
    from deepguard.bench.peak import cpu_peak
    from deepguard.runtime.classify import FaceClassifier

    batch = np.ascontiguousarray(crops299[:4])
    clfs = {
        p: FaceClassifier(seed[p], providers="cpu", threads=threads, batch_size=len(batch), spin=False)
        for p in ("fp32", "int8")
    }
    t = benchmark.pedantic(
        lambda: interleaved({p: (lambda c=c: c.score(batch)) for p, c in clfs.items()}, 5),
        rounds=1,
        iterations=1,
    )
    ms = {p: median(t[p]) / len(batch) * 1e3 for p in clfs}
    for p in clfs:
        perf.add(
            SECTION,
            f"{p}, batch {len(batch)}, {threads} thread(s)",
            ms[p],
            "ms/face",
            "target INT8 <= 100" if p == "int8" else "",
        )
    perf.add(SECTION, f"INT8 / FP32 speed, {threads} thread(s)", median(ratios(t, "fp32", "int8")), "x")
    if threads == 2:
        macs = count_macs(seed["int8"])
        peak = cpu_peak()
        ideal = macs.float_macs / (peak.fp32_gmacs * 1e9) + macs.int8_macs / (peak.int8_gmacs * 1e9)
        perf.add(SECTION, "MACs per face", macs.gmacs, "GMAC", f"{macs.int8_macs / macs.macs:.0%} INT8")
        perf.add(SECTION, "INT8 % of theoretical peak", 100 * ideal / (ms["int8"] / 1e3), "%")
        fp32_macs = count_macs(seed["fp32"]).macs
        perf.add(
            SECTION,
            "FP32 % of theoretical peak",
            100 * fp32_macs / (peak.fp32_gmacs * 1e9) / (ms["fp32"] / 1e3),
            "%",
        )
