"""Stream mode vs dense scoring on DFDC-validation-like clips: ``pytest benchmarks/test_bench_stream_agreement.py``.

Each clip is built from one DFDC validation face crop (``DEEPGUARD_DFDC_DIR``, default ``../shared/data/dfdc-faces``;
skipped where it is absent - the data is research-only and never in the repository): 2 s at 25 frames/s of a
640x360 frame, the crop upscaled to 200 px drifting 2 px per frame over a blurred copy of itself, with a slow
zoom, every frame JPEG re-encoded at quality 80 (video-like compression that changes frame to frame). Dense
(``rescore_rate=0``) and stream mode (the default: 5 re-scores per person per second, region detection between
full scans) analyse the same frames; reported: the share of clips with the same video verdict and the mean
|person score difference| (targets: every verdict the same, <= 0.02).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest

from deepguard.bench.agreement import person_deltas
from deepguard.runtime.pipeline import Detector
from deepguard.runtime.types import Frame

CLIPS_PER_CLASS = int(os.environ.get("DEEPGUARD_BENCH_DFDC_CLIPS") or 20)
FPS, SECONDS = 25.0, 2.0


def _root() -> Path:
    return Path(
        os.environ.get("DEEPGUARD_DFDC_DIR") or Path(__file__).resolve().parents[2] / "shared/data/dfdc-faces"
    )


def _val_crops(root: Path, per_class: int) -> list[tuple[Path, str]]:
    rows = [r for r in csv.DictReader((root / "manifest.csv").open()) if r["split"].strip() == "val"]
    rng = np.random.default_rng(0)
    out = []
    for label in ("real", "fake"):
        rs = [r for r in rows if r["label"].strip() == label]
        out += [(root / rs[i]["file"].strip(), label) for i in rng.choice(len(rs), per_class, replace=False)]
    return out


def clip_from_crop(crop: np.ndarray, seconds: float = SECONDS, fps: float = FPS) -> list[Frame]:
    """The module docstring's clip: drift, slow zoom and per-frame JPEG re-encoding of one face crop."""
    import cv2

    w, h = 640, 360
    bg = cv2.GaussianBlur(cv2.resize(crop, (w, h)), (0, 0), 12)
    frames = []
    for i in range(int(seconds * fps)):
        side = int(200 * (1 + 0.1 * np.sin(2 * np.pi * i / (fps * seconds))))
        face = cv2.resize(crop, (side, side), interpolation=cv2.INTER_CUBIC)
        x, y = 120 + 2 * i, (h - side) // 2
        img = bg.copy()
        img[y : y + side, x : x + side] = face
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 80])
        frames.append(Frame(cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB), i, i / fps))
    return frames


def test_stream_vs_dense_on_dfdc_like_clips(benchmark, perf) -> None:
    root = _root()
    if not (root / "manifest.csv").is_file():
        pytest.skip(f"{root}: DFDC face crops not available")
    from deepguard.runtime.decode import load_image

    crops = _val_crops(root, CLIPS_PER_CLASS)
    dense, stream = Detector(rescore_rate=0), Detector()
    rows: list[dict] = []

    def run() -> None:
        for path, label in crops:
            frames = clip_from_crop(load_image(path))
            a, b = dense.analyze_frames(frames, name=str(path)), stream.analyze_frames(frames, name=str(path))
            deltas = person_deltas(a, b)
            rows.append(
                {
                    "label": label,
                    "same_verdict": a.verdict == b.verdict,
                    "delta": float(np.mean(deltas)) if deltas else None,
                    "classified_share": sum(f.age == 0 for f in b.faces) / max(1, len(b.faces)),
                    "faces": (len(a.faces), len(b.faces)),
                }
            )

    benchmark.pedantic(run, rounds=1, iterations=1)
    same = float(np.mean([r["same_verdict"] for r in rows]))
    deltas = [r["delta"] for r in rows if r["delta"] is not None]
    boxed = sum(r["faces"][1] for r in rows) / max(1, sum(r["faces"][0] for r in rows))
    section = f"stream vs dense, {len(rows)} DFDC-val-like clips (2 s, 25 frames/s, 640x360)"
    perf.add(section, "same video verdict", same, "share", "target 1.0")
    perf.add(
        section, "mean |d person score|", float(np.mean(deltas)), "", f"max {max(deltas):.4f}, target <= 0.02"
    )
    perf.add(section, "faces boxed, stream / dense", boxed, "", "every face on every frame: 1.0")
    perf.add(
        section,
        "faces classified in stream mode",
        float(np.mean([r["classified_share"] for r in rows])),
        "share",
    )
    benchmark.extra_info.update(same_verdict=same, mean_delta=float(np.mean(deltas)), faces_boxed=boxed)
