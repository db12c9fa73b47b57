"""Face detection stage: RGB frames in, one ``FaceBoxes`` per frame out.

``load_detector`` is the single entry point the pipeline uses, so detector choice is a string
that can come straight from the CLI or a config file. Implementations are imported lazily:
BlazeFace needs only onnxruntime, SCRFD needs the optional insightface package.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from deepguard.runtime.types import FaceBoxes

__all__ = ["DEFAULT_DETECTOR", "FaceDetector", "load_detector"]

DEFAULT_DETECTOR = "blazeface:full"


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
    ``"scrfd:/path/model.onnx"``: insightface SCRFD from a local ONNX file.
    """
    text = (spec or DEFAULT_DETECTOR).strip()
    kind, _, arg = text.partition(":")
    kind = kind.strip().lower()
    if kind == "blazeface":
        from deepguard.runtime.facedet.blazeface import BlazeFaceDetector

        variant = arg.strip().lower() or "full"
        if variant not in ("full", "short"):
            raise ValueError(
                f"unknown BlazeFace variant {arg!r} in detector spec {spec!r}; use full or short"
            )
        return BlazeFaceDetector(model=variant, providers=providers, threads=threads, spin=spin)
    if kind == "scrfd":
        if not arg.strip():
            raise ValueError(f"detector spec {spec!r} needs a model path: scrfd:/path/model.onnx")
        from deepguard.runtime.facedet.scrfd import ScrfdDetector

        return ScrfdDetector(arg.strip(), providers=providers)
    raise ValueError(
        f"unknown face detector spec {spec!r}; expected 'blazeface', 'blazeface:full', "
        "'blazeface:short' or 'scrfd:/path/model.onnx'"
    )
