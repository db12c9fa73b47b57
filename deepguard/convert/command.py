"""``deepguard convert``: its options and its run (Keras files -> fused ONNX + parity report on the console).

Only argparse at import time: building the CLI parser must not load onnx or TensorFlow.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from deepguard.errors import DeepGuardError


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
        "--val-max",
        type=int,
        help="use at most this many validation crops (default: as many as the parity check uses, 512)",
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
    from deepguard.convert.crops import load_crops
    from deepguard.convert.ensemble import PARITY_MAX, build_ensemble

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
            val, labels = load_crops(args.val, size, PARITY_MAX if args.val_max is None else args.val_max)
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
    parser = argparse.ArgumentParser(
        prog="deepguard convert", description="Keras members -> fused ONNX (FP32/FP16/INT8)"
    )
    return run(add_arguments(parser).parse_args(argv))
