"""The one door for model conversion: Keras members -> fused ONNX ensemble in FP32, FP16 and INT8.

``build_ensemble`` (alias ``convert``) runs every step in order and writes, under ``out_dir``::

    members/<member>.onnx        each Keras member as ONNX (float32 pixels in, logit out), for debugging/parity
    <name>.fp32.onnx             fused graph: uint8 crops in, prob + member_probs out
    <name>.fp16.onnx             same, FP16 inside, same I/O
    <name>.int8.onnx             same, static INT8 QDQ (only with calibration crops)
    parity.json                  numbers from :func:`deepguard.convert.parity.parity_report`

Every ONNX file carries DeepGuard metadata (:mod:`deepguard.convert.metadata`). TensorFlow is imported only when a
conversion runs, so importing this package (e.g. for ``read_metadata``) stays cheap.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deepguard.convert.fp16 import to_fp16
from deepguard.convert.fuse import fuse_members, load_onnx, member_input_size, safe_name
from deepguard.convert.int8 import to_int8
from deepguard.convert.keras_onnx import keras_to_onnx
from deepguard.convert.metadata import read_metadata, sha256_file, sha256_files, utc_now, write_metadata
from deepguard.convert.parity import parity_report
from deepguard.errors import DeepGuardError, MediaError

__all__ = [
    "add_arguments",
    "build_ensemble",
    "convert",
    "fuse_members",
    "keras_to_onnx",
    "load_crops",
    "main",
    "parity_report",
    "read_metadata",
    "run",
    "sha256_file",
    "to_fp16",
    "to_int8",
    "write_metadata",
]

#: Metadata keys that describe the fused ``prob`` output (not a member's logit).
CALIBRATION_KEYS = ("temperature", "uncertain_low", "uncertain_high")
PARITY_MAX = 512  # parity on more crops only costs time; a few hundred catch every systematic error
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def _uint8_crops(arr: np.ndarray | None, what: str) -> np.ndarray | None:
    if arr is None:
        return None
    arr = np.asarray(arr)
    if arr.ndim != 4 or arr.shape[-1] != 3 or len(arr) == 0:
        raise ValueError(f"{what} must be a non-empty (N, S, S, 3) RGB array, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    return arr


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
    temperature = float(calibration.get("temperature", 1.0))
    out = Path(out_dir)
    (out / "members").mkdir(parents=True, exist_ok=True)
    calibration_crops = _uint8_crops(calibration_crops, "calibration_crops")
    val_crops = _uint8_crops(val_crops, "val_crops")

    from deepguard.convert.keras_onnx import load_keras

    # 1. Keras -> ONNX per member (models are kept loaded for the parity check).
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

    nominal = int(input_size or max(m["input_size"] for m in member_meta))
    common = {
        "name": name,
        "version": str(meta.get("version", "0")),
        "threshold": threshold,
        "training_data": str(meta.get("training_data", "")),
        "created": str(meta.get("created") or utc_now()),
        **{
            k: v
            for k, v in meta.items()
            if k not in {"name", "version", "threshold", "training_data", "created"}
        },
    }
    for (_, path, _, member_name), mm in zip(loaded, member_meta, strict=True):
        write_metadata(
            path,
            {
                **common,
                "name": member_name,
                "members": [{**mm, "weight": 1.0}],
                "input_size": mm["input_size"],
                "input_layout": "NHWC",
                "color_order": "RGB",
                "input_dtype": "float32",
                "precision": "fp32",
                "source_sha256": mm["source_sha256"],
            },
        )

    # 2. Fuse -> FP32, then FP16 / INT8 from the fused graph.
    stem = safe_name(name)
    result: dict[str, Any] = {"members": member_paths, "fp32": None, "fp16": None, "int8": None}
    fp32 = fuse_members(
        [(p, w, n) for _, p, w, n in loaded],
        out / f"{stem}.fp32.onnx",
        nominal,
        opset=opset,
        temperature=temperature,
    )
    result["fp32"] = fp32
    if "fp16" in precisions:
        result["fp16"] = to_fp16(fp32, out / f"{stem}.fp16.onnx")
    if "int8" in precisions:
        if calibration_crops is None:
            print("deepguard convert: no calibration crops, INT8 model skipped", file=sys.stderr)
        else:
            result["int8"] = to_int8(fp32, out / f"{stem}.int8.onnx", calibration_crops, threshold=threshold)

    ensemble_meta = {
        **common,
        "members": member_meta,
        "input_size": nominal,
        "input_layout": "NHWC",
        "color_order": "RGB",
        "input_dtype": "uint8",
        "source_sha256": sha256_files(source_files),
        **calibration,
    }
    for precision in ("fp32", "fp16", "int8"):
        if result[precision] is not None:
            write_metadata(result[precision], {**ensemble_meta, "precision": precision})

    # 3. Parity.
    crops, labels, source = val_crops, val_labels, "validation"
    if crops is None and calibration_crops is not None:
        crops, labels, source = calibration_crops, None, "calibration (in-sample for INT8)"
    if crops is None:
        rng = np.random.default_rng(0)
        crops, labels, source = (
            rng.integers(0, 256, (64, nominal, nominal, 3), dtype=np.uint8),
            None,
            "random",
        )
    if len(crops) > PARITY_MAX:
        idx = np.random.default_rng(0).choice(len(crops), PARITY_MAX, replace=False)
        crops, labels = crops[idx], None if labels is None else np.asarray(labels)[idx]
    report = parity_report(
        crops,
        fp32,
        keras_members=loaded,
        fp16_path=result["fp16"],
        int8_path=result["int8"],
        labels=labels,
        threshold=threshold,
        out_path=None,
        threads=threads,
    )
    report["crops_source"] = source
    report["files"]["members"] = {k: str(v) for k, v in member_paths.items()}
    parity_path = out / "parity.json"
    parity_path.write_text(json.dumps(report, indent=2) + "\n")
    result["parity"] = parity_path
    result["report"] = report
    return result


convert = build_ensemble


# ----------------------------------------------------------------------------------------------------------- CLI


def load_crops(
    src: str | os.PathLike[str], size: int | None = None, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Face crops for calibration/validation from a ``.npy``/``.npz`` array or a directory of images.

    A directory with ``real/`` and ``fake/`` sub-folders yields labels 0/1; otherwise labels are None. Images are
    decoded as RGB and resized (bilinear) to ``size`` if they differ. ``limit`` keeps an evenly spaced subset.
    """
    p = Path(src)
    if not p.exists():
        raise MediaError(f"{p}: crops path not found")
    labels: np.ndarray | None = None
    if p.is_file():
        try:
            data = np.load(p)
            if isinstance(data, np.lib.npyio.NpzFile):
                labels = data["labels"] if "labels" in data.files else None
                arr = data["crops"] if "crops" in data.files else data[data.files[0]]
            else:
                arr = data
        except Exception as exc:
            raise MediaError(f"{p}: cannot read crops array ({type(exc).__name__}: {exc})") from exc
        arr = np.asarray(arr)
        if arr.ndim != 4 or arr.shape[-1] != 3:
            raise MediaError(f"{p}: crops array must be (N, S, S, 3), found {arr.shape}")
        if size is not None and arr.shape[1:3] != (size, size):
            arr = np.stack([_resize(a, size) for a in _uint8_crops(arr, str(p))])
    else:
        sub = {"real": 0, "fake": 1}
        if all((p / d).is_dir() for d in sub):
            files = [
                (f, lab)
                for d, lab in sub.items()
                for f in sorted((p / d).rglob("*"))
                if f.suffix.lower() in IMAGE_EXTS
            ]
            labelled = True
        else:
            files = [(f, -1) for f in sorted(p.rglob("*")) if f.suffix.lower() in IMAGE_EXTS]
            labelled = False
        if not files:
            raise MediaError(f"{p}: no images ({', '.join(sorted(IMAGE_EXTS))}) found")
        if limit and len(files) > limit:
            files = [files[i] for i in np.linspace(0, len(files) - 1, limit).round().astype(int)]
        imgs = [_read_image(f, size) for f, _ in files]
        shapes = {im.shape for im in imgs}
        if len(shapes) > 1:
            raise MediaError(f"{p}: crops differ in size {sorted(shapes)}; pass --input-size to resize them")
        arr = np.stack(imgs)
        labels = np.array([lab for _, lab in files]) if labelled else None
    if limit and len(arr) > limit:
        idx = np.linspace(0, len(arr) - 1, limit).round().astype(int)
        arr, labels = arr[idx], None if labels is None else labels[idx]
    return _uint8_crops(arr, str(p)), labels


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))


def _read_image(path: Path, size: int | None) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB")
            if size is not None and rgb.size != (size, size):
                rgb = rgb.resize((size, size), Image.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8)
    except Exception as exc:
        raise MediaError(f"{path}: cannot decode image ({type(exc).__name__}: {exc})") from exc


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options of ``deepguard convert`` (the lead's CLI adds this as a sub-command)."""
    parser.add_argument("keras", nargs="+", metavar="KERAS", help="member models (.keras / .h5)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--weights", help="comma-separated member weights (default: equal)")
    parser.add_argument("--names", help="comma-separated member names (default: file stems)")
    parser.add_argument("--name", default="deepguard_ensemble", help="ensemble name (file stem and metadata)")
    parser.add_argument(
        "--model-version", dest="model_version", default="0", help="model version stored in metadata"
    )
    parser.add_argument("--threshold", type=float, default=0.5, help="decision threshold on prob (metadata)")
    parser.add_argument(
        "--temperature", type=float, default=1.0, help="calibration temperature applied to prob in the graph"
    )
    parser.add_argument(
        "--training-data", default="", help="free text describing the training data (metadata)"
    )
    parser.add_argument("--input-size", type=int, help="nominal crop size (default: largest member input)")
    parser.add_argument("--calib", help="calibration crops: image directory or .npy/.npz (needed for INT8)")
    parser.add_argument("--calib-max", type=int, default=256, help="use at most this many calibration crops")
    parser.add_argument("--val", help="validation crops: directory with real/ and fake/, or .npy/.npz")
    parser.add_argument(
        "--val-max", type=int, default=PARITY_MAX, help="use at most this many validation crops"
    )
    parser.add_argument("--precisions", default="fp32,fp16,int8", help="which fused files to write")
    parser.add_argument("--threads", type=int, help="onnxruntime threads for the parity runs")
    return parser


def _split(text: str | None, n: int, what: str, cast=str) -> list | None:
    if not text:
        return None
    parts = [s.strip() for s in text.split(",") if s.strip()]
    if len(parts) != n:
        raise ValueError(f"--{what} has {len(parts)} values for {n} models")
    try:
        return [cast(s) for s in parts]
    except ValueError as exc:
        raise ValueError(f"--{what}: {exc}") from exc


def run(args: argparse.Namespace) -> int:
    """Execute ``deepguard convert``; exit code 0 = all parity checks passed, 2 = a check failed, 1 = error."""
    try:
        n = len(args.keras)
        weights = _split(args.weights, n, "weights", float) or [1.0 / n] * n
        names = _split(args.names, n, "names") or [Path(k).stem for k in args.keras]
        size = args.input_size
        calib = val = labels = None
        if args.calib:
            calib, _ = load_crops(args.calib, size, args.calib_max)
            size = size or int(calib.shape[1])
        if args.val:
            val, labels = load_crops(args.val, size, args.val_max)
        result = build_ensemble(
            list(zip(args.keras, weights, names, strict=True)),
            args.out,
            calib,
            val,
            labels,
            metadata={
                "name": args.name,
                "version": args.model_version,
                "threshold": args.threshold,
                "temperature": args.temperature,
                "training_data": args.training_data,
            },
            input_size=args.input_size,
            precisions=[s.strip() for s in args.precisions.split(",") if s.strip()],
            threads=args.threads,
        )
    except (DeepGuardError, ValueError) as exc:
        print(f"deepguard convert: error: {exc}", file=sys.stderr)
        return 1
    report = result["report"]
    for precision in ("fp32", "fp16", "int8"):
        if result[precision] is not None:
            print(f"{precision}: {result[precision]}")
    for check, values in report["checks"].items():
        number = {k: v for k, v in values.items() if k.startswith(("max_abs", "decision", "delta_auc"))}
        print(f"{'PASS' if values['passed'] else 'FAIL'} {check}: {number}")
    print(f"parity report: {result['parity']}")
    return 0 if report["passed"] else 2


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point (``deepguard convert`` once the lead wires :func:`add_arguments`/:func:`run`)."""
    parser = argparse.ArgumentParser(prog="deepguard convert", description=__doc__.splitlines()[0])
    return run(add_arguments(parser).parse_args(argv))
