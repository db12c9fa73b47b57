"""Per-face latency of the shipped fused ensemble, FP32 vs INT8, batch 16 (ratios matter, not absolute ms)."""

from __future__ import annotations

import numpy as np
import pytest

from deepguard.runtime.classify import FaceClassifier

BATCH = 16


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    clf = FaceClassifier(precision="fp32")
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (BATCH, clf.input_size, clf.input_size, 3), dtype=np.uint8)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_classify_batch16(benchmark, perf, crops: np.ndarray, precision: str) -> None:
    clf = FaceClassifier(precision=precision, batch_size=BATCH)
    clf.score(crops)  # warm-up
    benchmark.extra_info["faces_per_call"] = BATCH
    benchmark.pedantic(clf.score, args=(crops,), rounds=15, iterations=1, warmup_rounds=2)
    ms = benchmark.stats.stats.median / BATCH * 1e3
    perf.add(
        "classifier (default model, 160 px)", f"{precision}, batch {BATCH}, default threads", ms, "ms/face"
    )
