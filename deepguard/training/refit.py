"""``deepguard refit-head``: re-fit a built default model's head on its frozen features, then rebuild and measure it.

The last step of the default recipe (:func:`deepguard.training.default.train_default` runs it after the build),
and a command of its own, so that a shipped model can be re-fitted without its training run. Steps: pooled
features of every training crop and of one self-blend of each usable real crop -> the group-balanced regression
(:mod:`deepguard.training.head`) -> the member taken out of the fused FP32 graph with the new head
(:func:`deepguard.convert.unfuse.extract_member`) -> calibration on validation (temperature, the false-alarm cut,
the band) -> fused FP32/FP16/INT8 with the same code as the build -> parity, per-source metrics, card.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from deepguard.training.data import CropSet
from deepguard.training.sources import load_sources

#: Version of a model whose head was re-fitted (the build writes MODEL_VERSION).
REFIT_SUFFIX = "+head"


def _self_blends(
    train: CropSet, points: np.ndarray, valid: np.ndarray, seed: int = 0
) -> tuple[np.ndarray, list[str]]:
    """One self-blend of each usable real training crop (seeded) and the source of each."""
    from deepguard.training.sbi import self_blend

    idx = np.flatnonzero(valid)
    rng = np.random.default_rng(seed)
    crops = np.stack([self_blend(np.asarray(train.images[i]), points[i], rng)[0] for i in idx])
    sources = train.sources or ["data"] * len(train.labels)
    return crops, [sources[i] for i in idx]


def fit_head_on(fp32: Path, train: CropSet, cache_dir: Path) -> tuple[np.ndarray, float, np.ndarray, dict]:
    """The head correction ``(coef, bias)`` for the fused graph ``fp32``, the two idle units to write it into, and
    what it was fitted on."""
    import onnx

    from deepguard.training.default import SBI_FRACTION, sbi_landmarks
    from deepguard.training.head import HEAD_L2, fit_residual, group_weights, idle_units, pooled_features

    feats, base = pooled_features(fp32, train.images)
    points, valid = sbi_landmarks(train, cache_dir)
    blends, blend_sources = _self_blends(train, points, valid)
    blend_feats, blend_base = pooled_features(fp32, blends)
    x = np.concatenate([feats, blend_feats])
    y = np.r_[train.labels.astype(int), np.ones(len(blends), int)]
    groups = list(train.sources or ["data"] * len(train.labels)) + blend_sources
    sbi = np.r_[np.zeros(len(feats), bool), np.ones(len(blends), bool)]
    w = group_weights(y, groups, sbi, SBI_FRACTION)
    coef, bias = fit_residual(x, np.r_[base, blend_base], y, w)
    units = idle_units(onnx.load(str(fp32)), x)
    info = {
        "train_faces": int(len(feats)),
        "self_blends": int(len(blends)),
        "sbi_share": SBI_FRACTION,
        "l2": HEAD_L2,
        "units": units.tolist(),
    }
    return coef, bias, units, info


def refit_head(
    fp32: str | Path,
    summary: dict,
    data: Sequence[str | Path],
    out_dir: str | Path,
    *,
    input_size: int = 160,
    cache_dir: str | Path | None = None,
    install: bool = False,
) -> dict:
    """Re-fit ``fp32``'s head (``summary``: its build summary, the card's source), rebuild, measure, install."""
    import onnx

    from deepguard.convert.calibrate import calibrate
    from deepguard.convert.unfuse import extract_member
    from deepguard.training.default import _install, _measured_summary, _original_dfdc_val, _store_shipped_cut
    from deepguard.training.head import pooled_features, with_residual

    t0 = time.time()
    fp32, out_dir = Path(fp32), Path(out_dir)
    cache_dir = Path(cache_dir) if cache_dir else out_dir / "cache"
    train, faces_train = load_sources(data, "train", input_size, cache_dir)
    val, faces_val = load_sources(data, "val", input_size, cache_dir)
    coef, bias, units, info = fit_head_on(fp32, train, cache_dir)
    member, name, _ = extract_member(onnx.load(str(fp32)))
    member = with_residual(member, coef, bias, units)
    val_feats, val_base = pooled_features(fp32, val.images)
    logits = val_base + val_feats.astype(np.float64) @ coef + bias  # the reference for parity
    cal = calibrate(1 / (1 + np.exp(-logits.astype(np.float64))), val.labels, sources=val.sources)
    res = _rebuild(fp32, member, name, cal.metadata(), train, val, logits, out_dir, input_size)
    scores = {prec: _scores(res[prec], val.images) for prec in ("fp32", "int8")}
    cal_meta = _store_shipped_cut(res, cal.metadata(), scores, val)
    members = {"members": {name: {}}, "faces": {"train": faces_train, "val": faces_val}}
    members["batch_mix"] = summary.get("batch_mix")
    dfdc = _original_dfdc_val(data, input_size, cache_dir)
    out = {
        **summary,
        **_measured_summary(res, members, {name: logits}, [1.0], cal, cal_meta, val, dfdc, cache_dir, scores),
        "head_refit": {**info, "from": str(fp32)},
        "files": {k: str(v) for k, v in res.items() if k in ("fp32", "fp16", "int8", "parity")},
    }
    out["head_refit"]["seconds"] = round(time.time() - t0, 1)
    if install:
        _install(out, res, val)
    (out_dir / "default_model.json").write_text(json.dumps(out, indent=2, default=str))
    return out


def _scores(path: Path, crops: np.ndarray) -> np.ndarray:
    from deepguard.training.default import _onnx_scores

    return _onnx_scores(path, crops)


def _rebuild(
    src: Path,
    member,
    name: str,
    fitted: dict[str, float],
    train: CropSet,
    val: CropSet,
    logits: np.ndarray,
    out_dir: Path,
    input_size: int,
) -> dict:
    """Fused FP32/FP16/INT8 of the re-fitted member with ``src``'s metadata and ``fitted`` calibration, and the
    parity report with one more check: the FP32 graph's member logit against the regression on the features."""
    from deepguard.convert.ensemble import fused_files, write_fused_metadata
    from deepguard.convert.metadata import read_metadata, utc_now
    from deepguard.convert.parity import parity_report
    from deepguard.training.default import int8_calibration_crops

    meta = {k: v for k, v in read_metadata(src).items() if k != "precision"}
    meta.update(fitted)
    meta.update({"version": f"{meta.get('version', '0')}{REFIT_SUFFIX}", "created": utc_now()})
    (out_dir / "onnx").mkdir(parents=True, exist_ok=True)
    stem = out_dir / "onnx" / str(meta.get("name", "deepguard-edge"))
    res = fused_files(
        [(None, member, 1.0, name)],
        stem,
        input_size,
        17,
        {"temperature": fitted["temperature"]},
        ("fp32", "fp16", "int8"),
        int8_calibration_crops(train),
        fitted["threshold"],
    )
    write_fused_metadata(res, meta)
    pick = np.random.default_rng(0).choice(len(val.labels), min(512, len(val.labels)), replace=False)
    report = parity_report(
        np.asarray(val.images[pick]),
        res["fp32"],
        fp16_path=res["fp16"],
        int8_path=res["int8"],
        labels=val.labels[pick],
        threshold=fitted["threshold"],
    )
    report["checks"]["head_vs_regression"] = _head_check(res["fp32"], val.images[pick], logits[pick])
    report["passed"] = bool(all(c["passed"] for c in report["checks"].values()))
    res["parity"] = out_dir / "onnx" / "parity.json"
    res["parity"].write_text(json.dumps(report, indent=2, default=str) + "\n")
    res["report"] = report
    return res


#: Largest difference between the FP32 graph's member probability and the corrected logit computed on the features.
HEAD_ATOL = 1e-4


def _head_check(fp32: Path, crops: np.ndarray, want_logits: np.ndarray) -> dict:
    from deepguard.training.head import pooled_features

    _, got = pooled_features(fp32, np.asarray(crops))
    sig = lambda z: 1 / (1 + np.exp(-np.asarray(z, np.float64)))  # noqa: E731
    diff = float(np.abs(sig(got) - sig(want_logits)).max())
    return {"max_abs_dprob": diff, "atol": HEAD_ATOL, "passed": bool(diff <= HEAD_ATOL)}


__all__ = ["REFIT_SUFFIX", "fit_head_on", "refit_head"]
