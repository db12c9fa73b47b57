"""Face detection stage: RGB frames in, one ``FaceBoxes`` per frame out.

``load_detector`` is the single entry point the pipeline uses, so detector choice is a string
that can come straight from the CLI or a config file. Implementations are imported lazily:
BlazeFace needs only onnxruntime, SCRFD needs the optional insightface package.

BlazeFace comes in FP32 (default) and, for the full-range model, static INT8 (``blazeface:int8``; built by
``deepguard export-detector`` next to the FP32 file, recipe in :mod:`deepguard.runtime.facedet.export`). INT8 is
not the default: per 1280x720 frame its ``detect`` ran 0.96x (one frame per call) to 1.15x (eight per call) the
speed of FP32 on the 2-core box, while moving small faces' boxes to IoU ~0.86 with FP32's; the parity it is held to
is in ``tests/test_facedet_int8.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from deepguard.runtime.types import FaceBoxes

__all__ = ["DEFAULT_DETECTOR", "FaceDetector", "int8_path", "load_detector", "parse_blazeface_spec"]

DEFAULT_DETECTOR = "blazeface:full"
BLAZEFACE_VARIANTS = ("full", "short")
BLAZEFACE_PRECISIONS = ("fp32", "int8")
# Variants with a shipped INT8 file. Not the short-range model: its stride-16 stage carries activations up to ~300
# where the 99th percentile is 2-4, which no per-tensor 8-bit grid holds; all-INT8 it loses 8 of the 9 faces of the
# test photos, and even with its last 20 of 33 convs left FP32 it loses a 720p face while saving <= 10 %.
BLAZEFACE_INT8_VARIANTS = ("full",)


def int8_path(fp32: str | Path) -> Path:
    """Where the INT8 twin of a BlazeFace FP32 ONNX file lives: ``blazeface_full.onnx`` -> ``blazeface_full_int8.onnx``."""
    path = Path(fp32)
    return path.with_name(f"{path.stem}_int8{path.suffix}")


def parse_blazeface_spec(arg: str, spec: str | None = None) -> tuple[str, str]:
    """The part after ``blazeface:`` -> (variant, precision); each field optional, in any order.

    ``""`` -> (full, fp32); ``"short"`` -> (short, fp32); ``"int8"`` -> (full, int8); ``"short:int8"`` -> (short, int8)
    (which :func:`load_detector` refuses: see ``BLAZEFACE_INT8_VARIANTS``).
    """
    variant = precision = None
    for field in (f.strip().lower() for f in arg.split(":")):
        if not field:
            continue
        if field in BLAZEFACE_VARIANTS and variant is None:
            variant = field
        elif field in BLAZEFACE_PRECISIONS and precision is None:
            precision = field
        else:
            raise ValueError(
                f"unknown or repeated BlazeFace option {field!r} in detector spec {spec or arg!r}; use "
                "blazeface[:full|:short][:fp32|:int8]"
            )
    return variant or "full", precision or "fp32"


@runtime_checkable
class FaceDetector(Protocol):
    """Anything that finds faces in a batch of RGB uint8 frames."""

    name: str

    def detect(self, frames: Sequence[np.ndarray]) -> list[FaceBoxes]: ...


def load_detector(
    spec: str | None = None,
    providers: Sequence[str] | None = None,
    *,
    threads: int | None = None,
    spin: bool | None = None,
) -> FaceDetector:
    """Build a detector from a spec string.

    ``threads``/``spin`` tune BlazeFace's onnxruntime session (see ``deepguard.runtime.providers``); SCRFD
    sessions are created by insightface and keep its defaults.

    ``None`` / ``"blazeface"`` / ``"blazeface:full"``: BlazeFace full range (default).
    ``"blazeface:short"``: BlazeFace short range (faces within ~2 m, fastest).
    ``"blazeface:int8"`` / ``"blazeface:full:int8"``: the full-range static INT8 model (CPU; no short-range one).
    ``"scrfd:/path/model.onnx"``: insightface SCRFD from a local ONNX file.
    """
    text = (spec or DEFAULT_DETECTOR).strip()
    kind, _, arg = text.partition(":")
    kind = kind.strip().lower()
    if kind == "blazeface":
        from deepguard.runtime.facedet.blazeface import DATA_DIR, MODEL_CONFIGS, BlazeFaceDetector

        variant, precision = parse_blazeface_spec(arg, spec)
        if precision == "int8" and variant not in BLAZEFACE_INT8_VARIANTS:
            raise ValueError(
                f"detector spec {spec!r}: there is no INT8 {variant}-range BlazeFace (it does not quantise "
                f"to parity); INT8 exists for: {', '.join(BLAZEFACE_INT8_VARIANTS)}"
            )
        path = DATA_DIR / MODEL_CONFIGS[variant].file
        if precision == "int8":
            path = int8_path(path)
        det = BlazeFaceDetector(
            model=variant, providers=providers, threads=threads, spin=spin, model_path=path
        )
        if precision == "int8":
            det.name = f"blazeface:{variant}:int8"
        return det
    if kind == "scrfd":
        if not arg.strip():
            raise ValueError(f"detector spec {spec!r} needs a model path: scrfd:/path/model.onnx")
        from deepguard.runtime.facedet.scrfd import ScrfdDetector

        return ScrfdDetector(arg.strip(), providers=providers)
    raise ValueError(
        f"unknown face detector spec {spec!r}; expected 'blazeface', 'blazeface:full', "
        "'blazeface:short', 'blazeface:int8', 'blazeface:short:int8' or 'scrfd:/path/model.onnx'"
    )
