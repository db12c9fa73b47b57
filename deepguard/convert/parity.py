"""Numerical parity between the Keras members and every exported ONNX file.

Why: a conversion that silently changes the model (wrong normalisation, BatchNorm in training mode, a resize
convention mismatch, FP16 overflow, a badly calibrated INT8 layer) still "runs"; only comparing numbers catches
it. Checks, each with a ``passed`` bool:

- ``keras_vs_onnx_fp32``: every member's ONNX logit vs Keras, max |dlogit| <= 1e-4 (logits, not probabilities,
  so a saturated sigmoid cannot hide a difference).
- ``fused_vs_keras``: fused FP32 graph (in-graph cast + resize + sigmoid + weighted mean + temperature) vs the
  same computed in Python from the Keras members (resize: ``tf.image.resize`` bilinear, no antialias; the
  temperature from the model's metadata), max |dprob| <= 1e-4.
- ``fp16_vs_fp32``: max |dprob| <= 1e-2.
- ``int8_vs_fp32``: decision agreement at the threshold >= 0.99; with labels also AUC difference (|dAUC| <= 0.01).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deepguard.errors import ModelError

TOL_LOGIT = 1e-4
TOL_FUSED = 1e-4
TOL_FP16 = 1e-2
MIN_AGREEMENT = 0.99
MAX_DAUC = 0.01


def _session(path: str | os.PathLike[str], threads: int | None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelError(f"{path}: onnxruntime cannot load model ({type(exc).__name__}: {exc})") from exc


def run_onnx(
    path: str | os.PathLike[str], x: np.ndarray, *, batch_size: int = 32, threads: int | None = None
) -> tuple[dict[str, np.ndarray], float]:
    """All outputs of a single-input model over ``x`` in batches, and seconds per sample."""
    sess = _session(path, threads)
    name = sess.get_inputs()[0].name
    outs: dict[str, list[np.ndarray]] = {o.name: [] for o in sess.get_outputs()}
    t0 = time.perf_counter()
    for i in range(0, len(x), batch_size):
        for o, v in zip(outs, sess.run(None, {name: x[i : i + batch_size]}), strict=True):
            outs[o].append(v)
    dt = (time.perf_counter() - t0) / max(1, len(x))
    return {k: np.concatenate(v) for k, v in outs.items()}, dt


def resize_bilinear(x: np.ndarray, size: int) -> np.ndarray:
    """Float32 NHWC resize with the half-pixel bilinear rule the fused graph uses (identity at the same size)."""
    x = np.asarray(x, np.float32)
    if x.shape[1] == size and x.shape[2] == size:
        return x
    import tensorflow as tf

    return tf.image.resize(x, (size, size), method="bilinear", antialias=False).numpy().astype(np.float32)


def keras_logits(model: Any, x: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Keras member logits (N,) in inference mode, batched (``predict`` adds callbacks and retracing overhead)."""
    out = [np.asarray(model(x[i : i + batch_size], training=False)) for i in range(0, len(x), batch_size)]
    return np.concatenate(out).reshape(-1).astype(np.float64)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _auc(labels: np.ndarray | None, scores: np.ndarray) -> float | None:
    if labels is None or len(np.unique(labels)) < 2:
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def parity_report(
    crops: np.ndarray,
    fp32_path: str | os.PathLike[str],
    *,
    keras_members: Sequence[tuple[Any, str | os.PathLike[str], float, str]] = (),
    fp16_path: str | os.PathLike[str] | None = None,
    int8_path: str | os.PathLike[str] | None = None,
    labels: np.ndarray | None = None,
    threshold: float = 0.5,
    out_path: str | os.PathLike[str] | None = None,
    threads: int | None = None,
    temperature: float | None = None,
) -> dict[str, Any]:
    """Compare Keras members, member ONNX files and the fused FP32/FP16/INT8 graphs on ``crops``.

    ``crops``: uint8 (N, S, S, 3) RGB face crops (the fused graph's input). ``keras_members``: ``[(keras model or
    path, member ONNX path, weight, name), ...]`` in fusion order; empty skips the Keras checks. ``temperature``:
    the calibration inside the fused graph (default: its ``deepguard.temperature`` metadata, else 1). Writes JSON to
    ``out_path`` if given and returns the report; ``report["passed"]`` is True only if every run check passed.
    """
    crops, labels = _checked_inputs(crops, labels)
    report = _report_head(crops, fp32_path, fp16_path, int8_path, labels, threshold, temperature)
    checks = report["checks"]
    fp32, dt32 = run_onnx(fp32_path, crops, threads=threads)
    p32 = fp32["prob"].astype(np.float64)
    report["fp32"] = {
        "sec_per_sample": dt32,
        "auc": _auc(labels, p32),
        "positive_rate": float(np.mean(p32 >= threshold)),
    }
    if keras_members:
        checks.update(_keras_checks(crops, keras_members, fp32, report["temperature"], threads))
    if fp16_path:
        checks["fp16_vs_fp32"] = _fp16_check(crops, fp16_path, p32, threads)
    if int8_path:
        checks["int8_vs_fp32"] = _int8_check(
            crops, int8_path, p32, labels, threshold, report["fp32"]["auc"], threads
        )
    report["passed"] = bool(all(c["passed"] for c in checks.values()))
    if out_path is not None:
        out = Path(out_path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
    return report


def _checked_inputs(crops: np.ndarray, labels: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """``crops`` as an array and ``labels`` as int (N,), or a ValueError saying what is wrong with them."""
    crops = np.asarray(crops)
    if crops.ndim != 4 or crops.shape[-1] != 3 or crops.dtype != np.uint8 or len(crops) == 0:
        raise ValueError(
            f"parity_report needs non-empty uint8 (N, S, S, 3) crops, got {crops.dtype} {crops.shape}"
        )
    labels = None if labels is None else np.asarray(labels).astype(int).reshape(-1)
    if labels is not None and len(labels) != len(crops):
        raise ValueError(f"{len(labels)} labels for {len(crops)} crops")
    return crops, labels


def _report_head(
    crops: np.ndarray,
    fp32_path: str | os.PathLike[str],
    fp16_path: str | os.PathLike[str] | None,
    int8_path: str | os.PathLike[str] | None,
    labels: np.ndarray | None,
    threshold: float,
    temperature: float | None,
) -> dict[str, Any]:
    """What was compared: samples, threshold, the fused graph's temperature and the files (checks still empty)."""
    from deepguard.convert.metadata import read_metadata

    return {
        "n_samples": int(len(crops)),
        "crop_size": [int(crops.shape[1]), int(crops.shape[2])],
        "threshold": float(threshold),
        "temperature": float(
            temperature if temperature is not None else read_metadata(fp32_path).get("temperature", 1.0)
        ),
        "has_labels": labels is not None,
        "files": {"fp32": str(fp32_path), "fp16": str(fp16_path or ""), "int8": str(int8_path or "")},
        "checks": {},
    }


def _keras_checks(
    crops: np.ndarray,
    keras_members: Sequence[tuple[Any, str | os.PathLike[str], float, str]],
    fp32: dict[str, np.ndarray],
    temperature: float,
    threads: int | None,
) -> dict[str, Any]:
    """``keras_vs_onnx_fp32`` (each member's ONNX logit) and ``fused_vs_keras`` (the fused FP32 outputs)."""
    from deepguard.convert.calibrate import apply_temperature
    from deepguard.convert.keras_onnx import load_keras

    per_member, keras_probs, weights = {}, [], []
    for model_or_path, onnx_path, weight, name in keras_members:
        model = load_keras(model_or_path)
        size = int(model.inputs[0].shape[1])
        x = resize_bilinear(crops, size)
        k = keras_logits(model, x)
        o, _ = run_onnx(onnx_path, x, threads=threads)
        onnx_logit = next(iter(o.values())).reshape(-1).astype(np.float64)
        key = name if name not in per_member else f"{name}#{len(per_member)}"
        per_member[key] = {
            "input_size": size,
            "max_abs_dlogit": float(np.max(np.abs(k - onnx_logit))),
            "logit_std": float(np.std(k)),
        }
        keras_probs.append(_sigmoid(k))
        weights.append(float(weight))
    worst = max(m["max_abs_dlogit"] for m in per_member.values())
    checks: dict[str, Any] = {}
    checks["keras_vs_onnx_fp32"] = {
        "max_abs_dlogit": worst,
        "tolerance": TOL_LOGIT,
        "per_member": per_member,
        "passed": bool(worst <= TOL_LOGIT),
    }
    kp = np.stack(keras_probs, axis=1)
    w = np.asarray(weights) / np.sum(weights)
    d_members = np.abs(kp - fp32["member_probs"]).max(axis=0)
    d_prob = float(np.max(np.abs(apply_temperature(kp @ w, temperature) - fp32["prob"].astype(np.float64))))
    worst = max(d_prob, float(d_members.max()))
    checks["fused_vs_keras"] = {
        "max_abs_dprob": d_prob,
        "max_abs_dprob_per_member": {n: float(d) for n, d in zip(per_member, d_members, strict=True)},
        "tolerance": TOL_FUSED,
        "passed": bool(worst <= TOL_FUSED),
    }
    return checks


def _fp16_check(
    crops: np.ndarray, fp16_path: str | os.PathLike[str], p32: np.ndarray, threads: int | None
) -> dict[str, Any]:
    o16, dt16 = run_onnx(fp16_path, crops, threads=threads)
    d = np.abs(o16["prob"].astype(np.float64) - p32)
    return {
        "max_abs_dprob": float(d.max()),
        "mean_abs_dprob": float(d.mean()),
        "tolerance": TOL_FP16,
        "sec_per_sample": dt16,
        "passed": bool(d.max() <= TOL_FP16),
    }


def _int8_check(
    crops: np.ndarray,
    int8_path: str | os.PathLike[str],
    p32: np.ndarray,
    labels: np.ndarray | None,
    threshold: float,
    auc32: float | None,
    threads: int | None,
) -> dict[str, Any]:
    o8, dt8 = run_onnx(int8_path, crops, threads=threads)
    p8 = o8["prob"].astype(np.float64)
    agreement = float(np.mean((p8 >= threshold) == (p32 >= threshold)))
    auc8 = _auc(labels, p8)
    d_auc = None if auc8 is None or auc32 is None else auc8 - auc32
    passed = agreement >= MIN_AGREEMENT and (d_auc is None or abs(d_auc) <= MAX_DAUC)
    return {
        "decision_agreement": agreement,
        "min_agreement": MIN_AGREEMENT,
        "max_abs_dprob": float(np.max(np.abs(p8 - p32))),
        "mean_abs_dprob": float(np.mean(np.abs(p8 - p32))),
        "auc_int8": auc8,
        "auc_fp32": auc32,
        "delta_auc": d_auc,
        "max_abs_delta_auc": MAX_DAUC,
        "sec_per_sample": dt8,
        "passed": bool(passed),
    }
