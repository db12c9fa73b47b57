"""FP32 ONNX -> static INT8 (QDQ) ONNX, calibrated on real face crops.

Choices and why (numbers: MobileNetV2 member at 160 px, 1 ORT thread, AMD Zen 5 with AVX512-VNNI):
- QDQ format: the graph stays a normal ONNX graph with QuantizeLinear/DequantizeLinear pairs, which ORT fuses
  into QLinearConv/QLinearMatMul on CPU and TensorRT/OpenVINO understand too; QOperator would tie us to ORT.
- Activations QUInt8 (asymmetric), weights QInt8 (symmetric, per channel): "U8S8". Measured 1.70 ms/img vs 2.00
  (S8S8), 2.76 (U8U8) and 2.80 (FP32). VNNI's ``vpdpbusd`` multiplies u8 x s8 natively, so U8S8 is the direct
  path; post-ReLU6 activations are non-negative, so unsigned 8 bits use the whole grid; symmetric weights make
  the zero-point free in the GEMM; per-channel weights matter for depthwise convs, whose channel ranges differ a
  lot. On pre-VNNI AVX2 CPUs U8S8 goes through ``vpmaddubsw``, which can saturate; ``reduce_range=True`` is the
  documented fallback if accuracy drops there.
- Percentile calibration (99.999 %), not MinMax: a single outlier activation otherwise stretches the per-tensor
  grid; on the MobileNetV2 member it raised INT8/FP32 logit correlation from 0.89 to 0.95.
- The fusion head (``deepguard_fuse/...``: cast, resize, sigmoid, weighted mean) and each member's classifier
  tail after global pooling stay FP32: quantising probabilities or the pooled feature vector flips decisions
  near the threshold (tiny test model: mean |dprob| 0.016 -> 0.005) for a cost of ~C multiply-adds per image.
- ``quant_pre_process`` first (symbolic shape inference + graph optimisation), as ORT recommends, so the
  quantiser sees folded BatchNorms and known shapes.

Backbones without quantisation-aware training (MobileNetV2 especially) lose SQNR layer by layer (~30 dB after the
stem, ~10 dB at the last feature map); the parity report's INT8 decision-agreement check is what tells whether a
given ensemble may ship in INT8.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto

from deepguard.convert.fuse import FUSE_PREFIX, load_onnx
from deepguard.convert.metadata import set_metadata
from deepguard.errors import ModelError


def _model_input(model: onnx.ModelProto) -> tuple[str, int]:
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise ModelError(f"INT8 quantisation expects a single-input model, found {len(inputs)} inputs")
    return inputs[0].name, inputs[0].type.tensor_type.elem_type


class ArrayCalibrationReader:
    """Feeds a calibration array to the quantiser in batches, cast to the model's input dtype.

    Implements onnxruntime's ``CalibrationDataReader`` protocol (``get_next``/``rewind``) plus ``set_range`` and
    ``len`` (in batches), which ORT's ``CalibStridedMinMax`` option uses to calibrate window by window. Histogram
    calibrators (Percentile) otherwise keep *every* intermediate activation of every calibration image in memory
    at once: tens of MB per 224 px image and member, i.e. gigabytes for a few hundred crops.
    """

    def __init__(self, input_name: str, data: np.ndarray, batch_size: int = 8) -> None:
        self.input_name = input_name
        self.data = data
        self.batch_size = max(1, int(batch_size))
        self._start, self._end = 0, len(self)
        self._pos = 0

    def __len__(self) -> int:
        return -(-len(self.data) // self.batch_size)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._start, self._end = int(start_index), min(int(end_index), len(self))
        self._pos = self._start

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._pos >= self._end:
            return None
        i = self._pos * self.batch_size
        self._pos += 1
        return {self.input_name: np.ascontiguousarray(self.data[i : i + self.batch_size])}

    def rewind(self) -> None:
        self._pos = self._start

    def __iter__(self):
        self.rewind()
        return iter(self.get_next, None)


def _stride(n_batches: int, max_batches: int) -> int:
    """Largest divisor of ``n_batches`` <= ``max_batches`` (ORT requires the windows to tile the data exactly)."""
    return max(d for d in range(1, max(1, min(n_batches, max_batches)) + 1) if n_batches % d == 0)


_POOL_OPS = {"GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceMax"}


def _classifier_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of each member's post-pooling tail (global pool, squeeze/flatten, dense layers): kept in FP32.

    Why: the pooled feature vector is where a per-tensor 8-bit grid hurts most (the class signal lives in small
    differences of feature means), while the tail costs ~C multiply-adds per image, nothing next to the convs.
    Found by shape: global-pool ops plus every node whose outputs are known to have rank <= 2.
    """
    ranks: dict[str, int] = {}
    for v in [*model.graph.value_info, *model.graph.output]:
        if v.type.tensor_type.HasField("shape"):
            ranks[v.name] = len(v.type.tensor_type.shape.dim)
    names = []
    for n in model.graph.node:
        if n.name.startswith(FUSE_PREFIX):
            continue
        out_ranks = [ranks.get(o) for o in n.output]
        if n.op_type in _POOL_OPS or (out_ranks and all(r is not None and r <= 2 for r in out_ranks)):
            names.append(n.name)
    return names


def _as_input_dtype(calibration: np.ndarray, elem_type: int, where: str) -> np.ndarray:
    arr = np.asarray(calibration)
    if arr.ndim != 4 or arr.shape[-1] != 3 or len(arr) == 0:
        raise ModelError(f"{where}: calibration data must be a non-empty (N, S, S, 3) array, got {arr.shape}")
    if elem_type == TensorProto.UINT8:
        if arr.dtype != np.uint8:
            if arr.min() < 0 or arr.max() > 255:
                raise ModelError(f"{where}: uint8 model needs calibration pixels in [0, 255]")
            arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return arr
    if elem_type == TensorProto.FLOAT:
        return arr.astype(np.float32)
    raise ModelError(f"{where}: unsupported model input type {TensorProto.DataType.Name(elem_type)} for INT8")


def to_int8(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    calibration: np.ndarray,
    *,
    per_channel: bool = True,
    reduce_range: bool = False,
    activation_type: str = "QUInt8",
    weight_type: str = "QInt8",
    batch_size: int = 8,
    window: int = 16,
    exclude_fusion_head: bool = True,
    keep_classifier_fp32: bool = True,
    op_types_to_quantize: list[str] | None = None,
    calibrate_method: str = "Percentile",
) -> Path:
    """Statically quantise ``src`` (member or fused graph) to INT8 QDQ and save ``dst``; returns ``dst``.

    ``calibration``: (N, S, S, 3) face crops, uint8 for fused graphs or float32 [0, 255] for member graphs (the
    model's input type decides; values are cast to it). A few hundred real crops are plenty.
    ``window``: images calibrated per pass (memory bound; ranges are merged across passes).
    ``reduce_range=True`` (7-bit weights) is the fallback for pre-VNNI AVX2 CPUs if accuracy drops there.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src_path = Path(src)
    where = str(src_path)
    model = load_onnx(src_path)
    input_name, elem_type = _model_input(model)
    data = _as_input_dtype(calibration, elem_type, where)

    class _Reader(ArrayCalibrationReader, CalibrationDataReader):
        pass

    out = Path(dst)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="deepguard_int8_") as tmp:
        pre = Path(tmp) / "preprocessed.onnx"
        try:
            quant_pre_process(str(src_path), str(pre), skip_symbolic_shape=False)
        except Exception:
            # Symbolic shape inference chokes on some exotic graphs; ONNX shape inference alone is enough here.
            try:
                quant_pre_process(str(src_path), str(pre), skip_symbolic_shape=True)
            except Exception as exc:
                raise ModelError(f"{where}: quant_pre_process failed ({type(exc).__name__}: {exc})") from exc
        pre_model = onnx.load(str(pre))
        excluded = [
            n.name for n in pre_model.graph.node if exclude_fusion_head and n.name.startswith(FUSE_PREFIX)
        ]
        if keep_classifier_fp32:
            excluded += _classifier_nodes(pre_model)
        del pre_model
        reader = _Reader(input_name, data, batch_size)
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # ORT prints calibration progress
                quantize_static(
                    str(pre),
                    str(out),
                    reader,
                    quant_format=QuantFormat.QDQ,
                    per_channel=per_channel,
                    reduce_range=reduce_range,
                    activation_type=getattr(QuantType, activation_type),
                    weight_type=getattr(QuantType, weight_type),
                    nodes_to_exclude=excluded,
                    op_types_to_quantize=op_types_to_quantize,
                    calibrate_method=getattr(CalibrationMethod, calibrate_method),
                    extra_options={
                        "ActivationSymmetric": False,
                        "WeightSymmetric": True,
                        # Calibrate ~`window` images at a time to bound memory (see ArrayCalibrationReader).
                        "CalibStridedMinMax": _stride(len(reader), max(1, window // reader.batch_size)),
                    },
                )
        except Exception as exc:
            raise ModelError(f"{where}: INT8 quantisation failed ({type(exc).__name__}: {exc})") from exc
    q = onnx.load(str(out))
    # The quantiser may drop metadata_props; carry the source's over, then mark the precision.
    have = {p.key for p in q.metadata_props}
    for prop in model.metadata_props:
        if prop.key not in have:
            q.metadata_props.add(key=prop.key, value=prop.value)
    set_metadata(q, {"precision": "int8"})
    onnx.save(q, str(out))
    return out
