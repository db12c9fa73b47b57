"""Model conversion: Keras members -> fused ONNX ensemble in FP32, FP16 and INT8 (one module per step).

``build_ensemble`` (:mod:`~deepguard.convert.ensemble`) runs every step in order; ``keras_onnx``, ``fuse``,
``fp16``, ``int8``, ``calibrate``, ``parity`` and ``metadata`` are the steps. Names resolve on first use, so
``import deepguard.convert`` (and the CLI, which only needs :mod:`~deepguard.convert.command`) loads no onnx.
"""

from importlib import import_module

_HOME = {
    "build_ensemble": "ensemble",
    "fuse_members": "fuse",
    "keras_to_onnx": "keras_onnx",
    "load_crops": "crops",
    "parity_report": "parity",
    "read_metadata": "metadata",
    "sha256_file": "metadata",
    "write_metadata": "metadata",
    "to_fp16": "fp16",
    "to_int8": "int8",
    "add_arguments": "command",
    "run": "command",
    "main": "command",
}
__all__ = sorted(_HOME)


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module 'deepguard.convert' has no attribute {name!r}")
    return getattr(import_module(f"deepguard.convert.{_HOME[name]}"), name)
