"""The default edge model recipe, end to end, as one call (``deepguard train-default``).

Steps: import ImageNet weights from the PyTorch checkpoints -> decode + cache the crops -> train MobileNetV2 then
EfficientNet-Lite0 (each with half the wall-clock budget) -> choose ensemble weights and threshold on validation ->
fuse into one ONNX graph (FP32 + INT8) with metadata and a parity report.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from deepguard.models.members import EDGE_HEAD
from deepguard.training.data import load_crops
from deepguard.training.train import TrainConfig, train_member

EDGE_MEMBERS = ("mobilenet_v2", "efficientnet_lite0")


def train_edge_members(data: str | Path, out_dir: str | Path, *, budget_min: float = 80.0, input_size: int = 160,
                       batch_size: int = 32, steps_per_epoch: int = 300, cache_dir: str | Path | None = None,
                       seed: int = 0, members: tuple[str, ...] = EDGE_MEMBERS) -> dict:
    """Train the edge members within ``budget_min`` minutes of wall clock; returns their summaries."""
    from deepguard.models.import_weights import import_backbone

    t0 = time.time()
    out_dir = Path(out_dir)
    cache_dir = Path(cache_dir) if cache_dir else out_dir / "cache"
    weights = {a: import_backbone(a, out_dir / "imagenet" / f"{a}.weights.h5", input_size) for a in members}
    train = load_crops(data, "train", input_size, cache_dir)
    val = load_crops(data, "val", input_size, cache_dir)
    prep = time.time() - t0
    per_member = (budget_min * 60 - prep) / len(members)
    summaries = {}
    for i, arch in enumerate(members):
        cfg = TrainConfig(arch=arch, input_size=input_size, batch_size=batch_size, steps_per_epoch=steps_per_epoch,
                          time_budget_s=per_member * 0.97, imagenet_weights=str(weights[arch]), seed=seed + i,
                          head=EDGE_HEAD)
        summaries[arch] = train_member(train, val, out_dir, cfg)
        print(f"[train] {arch}: val AUC {summaries[arch]['val_auc']:.4f} in {summaries[arch]['train_seconds']:.0f}s",
              flush=True)
    result = {"members": summaries, "prep_seconds": round(prep, 1), "total_seconds": round(time.time() - t0, 1)}
    (out_dir / "members.json").write_text(json.dumps(result, indent=2))
    return result
