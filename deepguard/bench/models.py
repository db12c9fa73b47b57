"""Model variants the benchmarks compare: unfused members, FP16 and the seed-size ensemble (built into a cache).

Nothing here is committed: everything is derived from the shipped default model or built from Keras into
``DEEPGUARD_BENCH_CACHE`` (default ``~/.cache/deepguard/bench``) on first use and reused afterwards.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import onnx

log = logging.getLogger("deepguard.bench")

FUSE_PREFIX = "deepguard_fuse/"


def cache_dir() -> Path:
    d = Path(os.environ.get("DEEPGUARD_BENCH_CACHE") or Path.home() / ".cache" / "deepguard" / "bench")
    d.mkdir(parents=True, exist_ok=True)
    return d


def member_prob_names(model: onnx.ModelProto) -> list[str]:
    """The fused graph's per-member probability tensors, in member order (``deepguard_fuse/prob_i``)."""
    names = [o for n in model.graph.node if n.name.startswith(FUSE_PREFIX + "sigmoid_") for o in n.output]
    return sorted(names, key=lambda s: int(s.rsplit("_", 1)[1]))


def split_members(fused: str | Path, out_dir: str | Path) -> list[Path]:
    """One ONNX file per member, cut out of a fused model: uint8 crops -> cast -> resize -> member -> prob.

    This is the "unfused" deployment (one session per member, the weighted mean in numpy) that fusion replaced;
    cutting it from the same file keeps weights, quantisation and preprocessing identical.
    """
    fused = Path(fused)
    model = onnx.load(str(fused))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, name in enumerate(member_prob_names(model)):
        path = out_dir / f"{fused.stem}.member{i}.onnx"
        if not path.is_file() or path.stat().st_mtime < fused.stat().st_mtime:
            sub = onnx.utils.Extractor(model).extract_model(["image"], [name])
            sub.metadata_props.extend(model.metadata_props)
            onnx.save(sub, str(path))
        paths.append(path)
    return paths


class UnfusedEnsemble:
    """Members as separate sessions; ``score`` mirrors ``FaceClassifier.score`` (weights from the metadata)."""

    def __init__(self, fused: str | Path, threads: int | None = 1) -> None:
        from deepguard.runtime.classify import model_crop_jpeg, parse_metadata
        from deepguard.runtime.providers import make_session

        self.paths = split_members(fused, cache_dir() / "unfused")
        self.sessions = [make_session(p, "cpu", threads, spin=False) for p in self.paths]
        meta = parse_metadata(self.sessions[0].get_modelmeta().custom_metadata_map)
        w = np.array(
            [float(m.get("weight", 1.0)) for m in meta.get("members", [])] or [1.0] * len(self.paths)
        )
        self.weights = (w / w.sum()).astype(np.float32)
        self.temperature = float(meta.get("temperature", 1.0))  # the fused graph calibrates its average
        self.crop_jpeg = model_crop_jpeg(meta, fused)  # ... of re-encoded crops, like FaceClassifier.score

    def score(self, crops: np.ndarray) -> np.ndarray:
        from deepguard.convert.calibrate import apply_temperature
        from deepguard.runtime.crop import jpeg_roundtrip

        if self.crop_jpeg is not None:
            crops = jpeg_roundtrip(crops, self.crop_jpeg)
        probs = [s.run(None, {"image": crops})[0].reshape(len(crops), -1) for s in self.sessions]
        p = np.concatenate(probs, axis=1) @ self.weights
        return apply_temperature(p, self.temperature).astype(np.float32)


def fp16_of(fp32: str | Path) -> Path:
    """FP16 variant of a fused model (onnxconverter-common), cached next to the other derived files."""
    from deepguard.convert.fp16 import to_fp16

    fp32 = Path(fp32)
    out = cache_dir() / "fp16" / f"{fp32.stem.replace('-fp32', '').replace('.fp32', '')}-fp16.onnx"
    if not out.is_file() or out.stat().st_mtime < fp32.stat().st_mtime:
        to_fp16(fp32, out)
    return out


# ------------------------------------------------------------------------------------- seed-size ensemble

SEED_SIZE = 299


def seed_ensemble_paths() -> dict[str, Path]:
    d = cache_dir() / f"seed{SEED_SIZE}"
    return {"dir": d, "fp32": d / "seed.fp32.onnx", "int8": d / "seed.int8.onnx", "info": d / "build.json"}


def build_seed_ensemble(calibration: np.ndarray, *, force: bool = False) -> dict[str, Path]:
    """Xception + EfficientNetV2-M at 299 (the origin's models), fused, FP32 and INT8, built once into the cache.

    ``calibration``: uint8 (N, 299, 299, 3) face crops. INT8 uses the product's recipe (``to_int8``: QDQ,
    U8S8, per-channel, head and classifier tails in FP32) but MinMax calibration:
    the graph, hence the latency, is the same whatever the ranges, and Percentile histograms of these two big
    models take far longer. Takes several minutes (TensorFlow tracing, tf2onnx, quantisation); ~300 MB on disk.
    """
    p = seed_ensemble_paths()
    if not force and p["fp32"].is_file() and p["int8"].is_file():
        return p
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from deepguard.convert.fuse import fuse_members
    from deepguard.convert.int8 import to_int8
    from deepguard.convert.keras_onnx import keras_to_onnx
    from deepguard.convert.metadata import write_metadata
    from deepguard.models.members import build_seed_member

    d = p["dir"]
    (d / "members").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    members = []
    for arch in ("xception", "efficientnetv2_m"):
        path = d / "members" / f"{arch}.onnx"
        if force or not path.is_file():
            keras_to_onnx(build_seed_member(arch, SEED_SIZE), path)
        members.append((path, 0.5, arch))
    fuse_members(members, p["fp32"], SEED_SIZE)
    write_metadata(
        p["fp32"], {"name": "seed-ensemble", "version": "bench", "threshold": 0.5, "input_size": SEED_SIZE}
    )
    # Random-init seed members: accuracy repairs (GPTQ, mean correction, self-check) mean nothing here and only
    # slow the build; the graph shape (and so the latency) is the same as the default recipe's.
    kwargs = {"calibrate_method": "MinMax", "target_agreement": None, "gptq": False, "mean_correction": False}
    to_int8(p["fp32"], p["int8"], np.ascontiguousarray(calibration, np.uint8), **kwargs)
    write_metadata(p["int8"], {"precision": "int8"})
    p["info"].write_text(
        json.dumps(
            {"build_s": round(time.perf_counter() - t0, 1), "calibration": list(calibration.shape), **kwargs}
        )
    )
    return p


__all__ = [
    "UnfusedEnsemble",
    "build_seed_ensemble",
    "cache_dir",
    "fp16_of",
    "member_prob_names",
    "seed_ensemble_paths",
    "split_members",
]
