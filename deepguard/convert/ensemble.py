"""``build_ensemble``: Keras members -> member ONNX files -> fused FP32 graph -> FP16 / INT8 -> parity report.

It writes, under ``out_dir``::

    members/<member>.onnx        each Keras member as ONNX (float32 pixels in, logit out), for debugging/parity
    <name>.fp32.onnx             fused graph: uint8 crops in, prob + member_probs out
    <name>.fp16.onnx             same, FP16 inside, same I/O
    <name>.int8.onnx             same, static INT8 QDQ (only with calibration crops)
    parity.json                  numbers from :func:`deepguard.convert.parity.parity_report`

Every ONNX file carries DeepGuard metadata (:mod:`deepguard.convert.metadata`). TensorFlow is imported only when a
conversion runs.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deepguard.convert.crops import uint8_crops
from deepguard.convert.fp16 import to_fp16
from deepguard.convert.fuse import fuse_members, load_onnx, member_input_size, safe_name
from deepguard.convert.int8 import to_int8
from deepguard.convert.keras_onnx import keras_to_onnx
from deepguard.convert.metadata import sha256_file, sha256_files, utc_now, write_metadata
from deepguard.convert.parity import parity_report

#: Metadata keys that describe the fused ``prob`` output (not a member's logit).
CALIBRATION_KEYS = ("temperature", "uncertain_low", "uncertain_high")
PARITY_MAX = 512  # parity on more crops only costs time; a few hundred catch every systematic error


def build_ensemble(
    keras_members: Sequence[tuple[Any, float, str]],
    out_dir: str | os.PathLike[str],
    calibration_crops: np.ndarray | None = None,
    val_crops: np.ndarray | None = None,
    val_labels: np.ndarray | None = None,
    metadata: Mapping[str, Any] | None = None,
    *,
    input_size: int | None = None,
    precisions: Sequence[str] = ("fp32", "fp16", "int8"),
    opset: int = 17,
    threads: int | None = None,
) -> dict[str, Any]:
    """Convert Keras members ``[(path_or_model, weight, name), ...]`` into the shipped ONNX files.

    ``calibration_crops``: uint8 (N, S, S, 3) face crops for INT8 calibration (INT8 is skipped without them).
    ``val_crops``/``val_labels``: held-out crops (and 0=real/1=fake labels) for the parity report; without them
    parity runs on the calibration crops, or on seeded random pixels if there are none.
    ``metadata``: name, version, threshold, training_data... (anything else is stored too). Its
    ``temperature`` (default 1) is baked into the fused graphs (``prob`` is then the calibrated probability, see
    :mod:`deepguard.convert.calibrate`); it and ``uncertain_low``/``uncertain_high`` go to the fused files only,
    not to the member graphs, whose output is a raw logit.
    ``input_size``: nominal crop size of the fused model; default the largest member size.
    ``precisions``: which of fp16/int8 to derive (the fused fp32 file is always written).

    Returns ``{"members": {name: Path}, "fp32": Path, "fp16": Path|None, "int8": Path|None, "parity": Path,
    "report": dict}``. Parity failures do not raise: check ``result["report"]["passed"]``.
    """
    if not keras_members:
        raise ValueError("build_ensemble: no members given")
    unknown = set(precisions) - {"fp32", "fp16", "int8"}
    if unknown:
        raise ValueError(f"unknown precisions {sorted(unknown)}; choose from fp32, fp16, int8")
    meta = dict(metadata or {})
    name = str(meta.get("name") or "deepguard_ensemble")
    threshold = float(meta.get("threshold", 0.5))
    calibration = {k: meta.pop(k) for k in CALIBRATION_KEYS if meta.get(k) is not None}
    out = Path(out_dir)
    (out / "members").mkdir(parents=True, exist_ok=True)
    calibration_crops = uint8_crops(calibration_crops, "calibration_crops")
    val_crops = uint8_crops(val_crops, "val_crops")

    # 1. Keras -> ONNX per member (models are kept loaded for the parity check).
    loaded, member_paths, member_meta, source_files = _convert_members(keras_members, out, opset)
    nominal = int(input_size or max(m["input_size"] for m in member_meta))
    common = _common_metadata(meta, name, threshold)
    for (_, path, _, member_name), mm in zip(loaded, member_meta, strict=True):
        write_metadata(path, _member_metadata(common, member_name, mm))

    # 2. Fuse -> FP32, then FP16 / INT8 from the fused graph.
    stem = out / safe_name(name)
    result: dict[str, Any] = {"members": member_paths}
    result.update(
        _fused_files(loaded, stem, nominal, opset, calibration, precisions, calibration_crops, threshold)
    )
    ensemble_meta = {
        **common,
        "members": member_meta,
        "input_size": nominal,
        "source_sha256": sha256_files(source_files),
        **calibration,
    }
    _write_fused_metadata(result, ensemble_meta)
    fp32 = result["fp32"]

    # 3. Parity.
    crops, labels, source = _parity_crops(val_crops, val_labels, calibration_crops, nominal)
    result["parity"], result["report"] = _parity(
        crops, labels, source, fp32, loaded, result, threshold, threads, out
    )
    return result


def _write_fused_metadata(files: Mapping[str, Any], meta: dict[str, Any]) -> None:
    """Every fused file: uint8 NHWC RGB crops in, its own precision named."""
    for precision in ("fp32", "fp16", "int8"):
        if files.get(precision) is not None:
            write_metadata(
                files[precision],
                {
                    **meta,
                    "input_layout": "NHWC",
                    "color_order": "RGB",
                    "input_dtype": "uint8",
                    "precision": precision,
                },
            )


def _parity(
    crops: np.ndarray,
    labels: np.ndarray | None,
    source: str,
    fp32: Path,
    loaded: list,
    files: Mapping[str, Any],
    threshold: float,
    threads: int | None,
    out: Path,
) -> tuple[Path, dict[str, Any]]:
    """The parity report over Keras, FP32, FP16 and INT8, written to ``out/parity.json``."""
    report = parity_report(
        crops,
        fp32,
        keras_members=loaded,
        fp16_path=files["fp16"],
        int8_path=files["int8"],
        labels=labels,
        threshold=threshold,
        out_path=None,
        threads=threads,
    )
    report["crops_source"] = source
    report["files"]["members"] = {k: str(v) for k, v in files["members"].items()}
    path = out / "parity.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path, report


def _fused_files(
    loaded: list[tuple[Any, Path, float, str]],
    stem: Path,
    nominal: int,
    opset: int,
    calibration: Mapping[str, Any],
    precisions: Sequence[str],
    calibration_crops: np.ndarray | None,
    threshold: float,
) -> dict[str, Path | None]:
    """``<stem>.fp32.onnx`` (temperature baked in), then FP16 / INT8 derived from it as asked (INT8 needs crops)."""
    fp32 = fuse_members(
        [(p, w, n) for _, p, w, n in loaded],
        stem.with_name(f"{stem.name}.fp32.onnx"),
        nominal,
        opset=opset,
        temperature=float(calibration.get("temperature", 1.0)),
    )
    files: dict[str, Path | None] = {"fp32": fp32, "fp16": None, "int8": None}
    if "fp16" in precisions:
        files["fp16"] = to_fp16(fp32, stem.with_name(f"{stem.name}.fp16.onnx"))
    if "int8" in precisions:
        if calibration_crops is None:
            print("deepguard convert: no calibration crops, INT8 model skipped", file=sys.stderr)
        else:
            int8 = stem.with_name(f"{stem.name}.int8.onnx")
            files["int8"] = to_int8(fp32, int8, calibration_crops, threshold=threshold)
    return files


def _convert_members(
    keras_members: Sequence[tuple[Any, float, str]], out: Path, opset: int
) -> tuple[list[tuple[Any, Path, float, str]], dict[str, Path], list[dict], list[Path]]:
    """Each member to ``out/members/<name>.onnx``: ``(loaded, paths by name, member metadata, source files)``."""
    from deepguard.convert.keras_onnx import load_keras

    names: list[str] = []
    loaded, member_paths, member_meta, source_files = [], {}, [], []
    for src, weight, member_name in keras_members:
        model = load_keras(src)
        base = safe_name(member_name)
        while base in names:
            base += "_"
        names.append(base)
        path = keras_to_onnx(model, out / "members" / f"{base}.onnx", opset)
        if isinstance(src, (str, os.PathLike)):
            source_sha = sha256_file(src)
            source_files.append(Path(src))
        else:  # in-memory model: the converted graph is the best fingerprint we have
            source_sha = sha256_file(path)
            source_files.append(path)
        size = member_input_size(load_onnx(path), str(path))
        loaded.append((model, path, float(weight), str(member_name)))
        member_paths[str(member_name) if str(member_name) not in member_paths else base] = path
        member_meta.append(
            {
                "name": str(member_name),
                "weight": float(weight),
                "input_size": size,
                "source_sha256": source_sha,
            }
        )
    return loaded, member_paths, member_meta, source_files


def _common_metadata(meta: Mapping[str, Any], name: str, threshold: float) -> dict[str, Any]:
    """Entries every written file carries: the named ones normalised, anything else the caller gave kept."""
    named = {"name", "version", "threshold", "training_data", "created"}
    return {
        "name": name,
        "version": str(meta.get("version", "0")),
        "threshold": threshold,
        "training_data": str(meta.get("training_data", "")),
        "created": str(meta.get("created") or utc_now()),
        **{k: v for k, v in meta.items() if k not in named},
    }


def _member_metadata(common: dict[str, Any], member_name: str, mm: dict) -> dict[str, Any]:
    """A member graph's metadata: a one-member "ensemble" with float32 pixels in and a raw logit out."""
    return {
        **common,
        "name": member_name,
        "members": [{**mm, "weight": 1.0}],
        "input_size": mm["input_size"],
        "input_layout": "NHWC",
        "color_order": "RGB",
        "input_dtype": "float32",
        "precision": "fp32",
        "source_sha256": mm["source_sha256"],
    }


def _parity_crops(
    val_crops: np.ndarray | None,
    val_labels: np.ndarray | None,
    calibration_crops: np.ndarray | None,
    size: int,
) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Crops for the parity report: validation, else calibration, else seeded noise; at most ``PARITY_MAX``."""
    crops, labels, source = val_crops, val_labels, "validation"
    if crops is None and calibration_crops is not None:
        crops, labels, source = calibration_crops, None, "calibration (in-sample for INT8)"
    if crops is None:
        rng = np.random.default_rng(0)
        crops, labels, source = rng.integers(0, 256, (64, size, size, 3), dtype=np.uint8), None, "random"
    if len(crops) > PARITY_MAX:
        idx = np.random.default_rng(0).choice(len(crops), PARITY_MAX, replace=False)
        crops, labels = crops[idx], None if labels is None else np.asarray(labels)[idx]
    return crops, labels, source
