"""Command-line options every model-running command shares, and the :class:`Detector` they describe.

Its own module so that ``deepguard.cli`` and ``deepguard.evaluation`` both build a detector the same way without
importing each other. Only argparse at import time: the runtime loads when a detector is built.
"""

from __future__ import annotations

import argparse


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="fused ONNX model (default: the shipped edge ensemble)")
    p.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "fp16", "int8"],
        help="which shipped model to use (auto: INT8 on CPU, FP32 on GPU)",
    )
    p.add_argument("--providers", help="onnxruntime providers, e.g. cpu or tensorrt,cuda,cpu (default: best)")
    p.add_argument("--threads", type=int, help="intra-op threads (default: one per core)")


def _non_negative(text: str) -> float:
    """argparse type: a float >= 0 (a clear usage error instead of a traceback from the runtime)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return v


def add_runtime_args(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    p.add_argument(
        "--detector",
        help="face detector: blazeface[:full|:short] (default full, FP32), blazeface:int8 (full range, INT8) "
        "or scrfd:PATH.onnx",
    )
    p.add_argument(
        "--face-crops", action="store_true", help="inputs are already-cropped faces (no detection)"
    )
    p.add_argument("--margin", type=float, default=0.3, help="crop margin per side, fraction of the face box")
    p.add_argument("--threshold", type=float, help="override the model's decision threshold")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--fps", type=float, default=1.0, help="video frames sampled per second (default 1)")
    g.add_argument("--every-frame", action="store_true", help="score every video frame")
    g.add_argument("--max-frames", type=int, help="at most K frames spread over the video")
    p.add_argument(
        "--rescore-rate",
        type=_non_negative,
        help="stream mode: re-classify each tracked person R times per second of video (and when it appears "
        "or its face changes); frames between carry its latest score (0 = every face on every frame; default 5, "
        "0 for evaluate)",
    )


def detector_from_args(args: argparse.Namespace):
    """The :class:`~deepguard.runtime.pipeline.Detector` that ``add_runtime_args`` options describe."""
    from deepguard.runtime.pipeline import Detector

    return Detector(
        args.model,
        detector=args.detector,
        providers=args.providers,
        precision=args.precision,
        margin=args.margin,
        fps=args.fps,
        every_frame=args.every_frame,
        max_frames=args.max_frames,
        face_crops=args.face_crops,
        threads=args.threads,
        threshold=args.threshold,
        **({} if args.rescore_rate is None else {"rescore_rate": args.rescore_rate}),
    )
