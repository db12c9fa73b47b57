"""DeepGuard Edge: offline deepfake detection for faces in images and video.

The heavy parts (onnxruntime sessions, TensorFlow for training) are imported lazily so that
``import deepguard`` stays cheap for the CLI and the server.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["Detector", "__version__"]


def __getattr__(name: str):  # pragma: no cover - trivial lazy import
    if name == "Detector":
        from deepguard.runtime.pipeline import Detector

        return Detector
    raise AttributeError(name)
