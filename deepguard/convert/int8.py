"""FP32 ONNX -> static INT8 (QDQ) ONNX, calibrated on real face crops.

Default recipe, and why. Numbers: 1 ORT thread, AMD Zen 5 with AVX512-VNNI, 160 px crops, 256 training crops for
calibration; "agreement" = INT8 vs FP32 decisions at the model threshold on the 3234 validation crops; "real" =
the MobileNetV2 + EfficientNet-Lite0 ensemble, "prelim" = one MobileNetV2 member twice.

- QDQ format, U8S8 (uint8 asymmetric activations, int8 symmetric per-channel weights): the graph stays plain ONNX
  that ORT fuses into QLinearConv; VNNI's ``vpdpbusd`` multiplies u8 x s8 natively (1.70 ms/img vs 2.00 for S8S8,
  2.76 for U8U8 on one member). Per-channel weights matter for depthwise convs.
- ``reduce_range=True`` (weights in [-64, 64]) by default, because one file must be right on every CPU: without
  VNNI (AVX2 / AVX-512 before Cascade Lake, AMD before Zen 4) ORT's u8 x s8 kernel sums pairs of products in
  int16 (``vpmaddubsw``), which saturates for 8-bit weights (255 * 127 * 2 > 32767). Measured on the test
  ensemble under ``qemu-x86_64 -cpu Haswell``: decision agreement with FP32 0.76 with 8-bit weights, 0.997
  with 7-bit ones (the same as natively on a VNNI CPU); CI on a pre-VNNI host failed the same way (0.92).
- Percentile calibration (99.999 %), not MinMax: one outlier otherwise stretches a per-tensor grid. With the rest
  of the recipe in place MinMax, Entropy and MSE-optimal ranges were no better; 99.99 % gained 0.1-0.3 %
  agreement but doubled the worst-case |dprob| (0.07 -> 0.15 on real), so the wider range stays the default.
- FP32 input stem (``FP32_STEM_CONVS``): everything upstream of each backbone's k-th conv stays FP32, i.e. the
  Cast/Resize/Normalize preprocessing, the stem conv and the first inverted-residual block(s). These backbones
  amplify input noise enormously: re-quantising the normalised image alone (an 8-bit grid misaligned with the
  pixel grid) cost as much as all later layers together, and the stem output and the first depthwise weights
  (BN-folded, up to ~16) were the most harmful single tensors. Biggest single gain (agreement real 0.975 ->
  0.988, prelim 0.957 -> 0.985) for ~+0.2 ms/img. Only *contiguous* FP32 regions work: ORT's session-time
  ``WeightBiasQuantization`` pass re-quantises any float-weight Conv sitting between a DequantizeLinear and a
  QuantizeLinear with a *per-tensor* int8 grid, so excluding a single mid-network conv (depthwise convs, single
  nodes: tried) silently makes it worse, not better.
- GPTQ weight rounding (``gptq``): int8 weights are re-rounded column by column with second-order error feedback
  (Frantar et al. 2022) from each conv's float inputs on ``GPTQ_CROPS`` calibration crops; scales are unchanged,
  so the runtime graph is identical. Cuts the ensemble's mean |dlogit| ~20 % (real 0.080 -> 0.063; agreement
  0.988 -> 0.990) for ~15 s of build time.
- Pooled-feature mean correction (``mean_correction``): the classifier tail stays FP32 and a per-channel constant
  is added after global pooling so that the INT8 pooled features have the FP32 mean on the calibration crops.
  Quantisation shifts a member's logit systematically (+0.05 on real); a shift moves every near-threshold crop
  the same way, so removing it is worth more for agreement than its share of the error (real 0.990 -> 0.991).
  Per-layer empirical bias correction, by contrast, over-corrects (each layer re-corrects upstream shifts).
- Target check (``target_agreement``): the result is compared with the FP32 model on the calibration crops; if
  agreement is below target the FP32 stem is doubled (6 -> 12 convs per backbone, at most a quarter of its convs)
  and the build repeats; if that still misses, the plain quantiser output (no GPTQ, no mean correction) is tried
  too, for tiny nets calibrated on a handful of crops (kept only if its agreement is strictly higher).
- The fusion head (``deepguard_fuse/...``: cast, resize, sigmoid, weighted mean) and each member's classifier tail
  after global pooling stay FP32: quantising probabilities or the pooled vector flips near-threshold decisions for
  a cost of ~C multiply-adds per image.

Result (agreement on 3234 / on a fixed 600-crop subset; ms/crop single thread, same run):
real   FP32 6.4 ms | old default 0.975 / 0.980, 3.2 ms | this default (stem 6) 0.991 / 0.990, |dAUC| < 0.001,
       max |dprob| 0.07, 3.4 ms, build 46 s.
prelim FP32 6.2 ms | old default 0.957 / 0.953, 3.2 ms | stem 6 0.986 / 0.990, 3.4 ms | this default escalates to
       stem 12: 0.988 / 0.987, 4.0 ms, build 75 s.
Tried and not kept: equalising per-channel ReLU6 ranges across conv pairs (+10 dB local SQNR, no output gain),
MSE-optimal ranges, keeping late blocks or residual Adds FP32, reading residual skips in float (~3 % less
error, not worth a graph edit), per-layer bias correction. Remaining error is spread over every activation
(per-tensor 8-bit, 24-44 dB local SQNR each); no small set of further layers dominates, so more accuracy costs
speed roughly linearly (24 FP32 convs per backbone: prelim 0.991 at 4.7 ms).
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from deepguard.convert.fuse import FUSE_PREFIX, PROB_NAME, load_onnx
from deepguard.convert.metadata import read_metadata, set_metadata
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
_MEMBER_RE = re.compile(r"^_*m\d+_[^/]*/")


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


def _backbone_convs(model: onnx.ModelProto) -> list[list[onnx.NodeProto]]:
    """Conv nodes of each backbone in graph (topological) order; a fused graph's members are ``m{i}_<name>/``."""
    groups: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        if n.op_type == "Conv" and not n.name.startswith(FUSE_PREFIX):
            m = _MEMBER_RE.match(n.name)
            groups.setdefault(m.group(0) if m else "", []).append(n)
    return list(groups.values())


def _stem_nodes(model: onnx.ModelProto, k: int) -> list[str]:
    """Every node upstream of (and including) the k-th conv of each backbone, capped at a quarter of its convs.

    Why a contiguous region: see the module docstring (ORT re-quantises isolated float convs per-tensor). The cap
    keeps small backbones mostly quantised (a 3-conv test net keeps none of them FP32).
    """
    if k <= 0:
        return []
    producer = {o: n for n in model.graph.node for o in n.output}
    stack = [convs[min(k, len(convs) // 4) - 1] for convs in _backbone_convs(model) if len(convs) // 4 > 0]
    keep: dict[str, onnx.NodeProto] = {}
    while stack:
        n = stack.pop()
        if n.name in keep:
            continue
        keep[n.name] = n
        stack.extend(producer[i] for i in n.input if i in producer)
    return sorted(name for name in keep if name)


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


def _evenly(data: np.ndarray, n: int) -> np.ndarray:
    if n <= 0 or len(data) <= n:
        return data
    return data[np.linspace(0, len(data) - 1, n).round().astype(int)]


# ------------------------------------------------------------------------------------------------ ORT helpers


def _session(
    model: onnx.ModelProto | str, threads: int, extra_outputs: Iterable[str] = (), optimize: bool = True
):
    import onnxruntime as ort

    if extra_outputs:
        model = copy.deepcopy(model if isinstance(model, onnx.ModelProto) else onnx.load(model))
        have = {o.name for o in model.graph.output}
        for t in extra_outputs:
            if t not in have:
                model.graph.output.append(helper.make_tensor_value_info(t, TensorProto.FLOAT, None))
                have.add(t)
    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, int(threads))
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    payload = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(payload, so, providers=["CPUExecutionProvider"])


def _batches(data: np.ndarray, batch_size: int):
    for i in range(0, len(data), batch_size):
        yield np.ascontiguousarray(data[i : i + batch_size])


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


# ----------------------------------------------------------------------------------------------------- GPTQ


def _patches(x: np.ndarray, kernel: tuple[int, int], strides, pads, dilations) -> np.ndarray:
    """(N, C, H, W) -> (N, C, kh*kw, Ho*Wo): the input patch behind every output pixel."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (dh, dw) = kernel, strides, dilations
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    ho = (h + pads[0] + pads[2] - dh * (kh - 1) - 1) // sh + 1
    wo = (w + pads[1] + pads[3] - dw * (kw - 1) - 1) // sw + 1
    out = np.empty((n, c, kh * kw, ho * wo), x.dtype)
    for i in range(kh):
        for j in range(kw):
            window = xp[:, :, i * dh : i * dh + sh * ho : sh, j * dw : j * dw + sw * wo : sw]
            out[:, :, i * kw + j] = window.reshape(n, c, -1)
    return out


def _conv_hessian(node: onnx.NodeProto, weight_shape: tuple[int, ...], x: np.ndarray) -> np.ndarray | None:
    """Sum of input-patch outer products for one batch: (K, K) for dense convs, (C, k*k, k*k) for depthwise."""
    if (
        _attr(node, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")
        or x.ndim != 4
        or len(weight_shape) != 4
    ):
        return None
    group = int(_attr(node, "group", 1))
    kernel = tuple(weight_shape[2:])
    strides = tuple(_attr(node, "strides", [1, 1]))
    pads = tuple(_attr(node, "pads", [0, 0, 0, 0]))
    dilations = tuple(_attr(node, "dilations", [1, 1]))
    if group == 1:
        if kernel == (1, 1) and strides == (1, 1) and not any(pads):
            cols = x.transpose(0, 2, 3, 1).reshape(-1, x.shape[1])
        else:
            if x.shape[1] * kernel[0] * kernel[1] > 4096:
                return None
            p = _patches(x, kernel, strides, pads, dilations)
            cols = p.transpose(0, 3, 1, 2).reshape(-1, p.shape[1] * p.shape[2])
        cols = cols.astype(np.float64)
        return cols.T @ cols
    if group == x.shape[1] and weight_shape[0] == group and weight_shape[1] == 1:
        p = _patches(x, kernel, strides, pads, dilations).astype(np.float64)
        return np.einsum("ncil,ncjl->cij", p, p)
    return None


def _gptq_rows(
    w: np.ndarray, hess: np.ndarray, scale: np.ndarray, limit: int, damp: float = 0.01
) -> np.ndarray | None:
    """Round rows of ``w`` (O, K) to [-limit, limit] on grid ``scale`` (O,), feeding each column's error forward.

    ``limit`` is the quantiser's own range (127, or 64 with reduce_range): GPTQ must not widen it, or the
    pre-VNNI kernels' int16 pair sums saturate again.
    """
    w = w.astype(np.float64).copy()
    h = hess.astype(np.float64).copy()
    dead = np.diag(h) <= 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += np.eye(len(h)) * damp * float(np.mean(np.diag(h)))
    try:
        u = np.linalg.cholesky(np.linalg.inv(h)).T  # upper factor of H^-1
    except np.linalg.LinAlgError:
        return None
    q = np.zeros(w.shape, np.int64)
    s = scale.reshape(-1).astype(np.float64)
    for i in range(w.shape[1]):
        q[:, i] = np.clip(np.round(w[:, i] / s), -limit, limit)
        err = (w[:, i] - q[:, i] * s) / u[i, i]
        w[:, i + 1 :] -= np.outer(err, u[i, i + 1 :])
    return q


def _quantized_convs(qmodel: onnx.ModelProto, fmodel: onnx.ModelProto) -> list[tuple]:
    """(int8 conv, its weight DequantizeLinear, the same conv in the float model) for GPTQ-able convs."""
    inits = {i.name for i in qmodel.graph.initializer}
    producer = {o: n for n in qmodel.graph.node for o in n.output}
    uses: dict[str, int] = {}
    for n in qmodel.graph.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    fconv = {n.name: n for n in fmodel.graph.node if n.op_type == "Conv" and n.name}
    finits = {i.name for i in fmodel.graph.initializer}
    out = []
    for n in qmodel.graph.node:
        if n.op_type != "Conv" or n.name not in fconv or len(n.input) < 2:
            continue
        dq = producer.get(n.input[1])
        f = fconv[n.name]
        if (
            dq is not None
            and dq.op_type == "DequantizeLinear"
            and dq.input[0] in inits
            and uses.get(dq.input[0]) == 1
            and uses.get(n.input[1]) == 1
            and f.input[1] in finits
        ):
            out.append((n, dq, f))
    return out


def _hessians(fmodel: onnx.ModelProto, convs: list[tuple], data, input_name: str, threads: int, batch: int):
    finits = {i.name: i for i in fmodel.graph.initializer}
    shapes = {f.name: tuple(finits[f.input[1]].dims) for _, _, f in convs}
    inputs = sorted({f.input[0] for _, _, f in convs} - {input_name})
    sess = _session(fmodel, threads, inputs)
    hess: dict[str, np.ndarray | None] = {}
    for x in _batches(data, batch):
        acts = dict(zip(inputs, sess.run(inputs, {input_name: x}), strict=True)) if inputs else {}
        acts[input_name] = x.astype(np.float32)
        for _, _, f in convs:
            if f.name in hess and hess[f.name] is None:
                continue
            h = _conv_hessian(f, shapes[f.name], acts[f.input[0]])
            hess[f.name] = None if h is None else h + hess.get(f.name, 0.0)
    return hess


def _apply_gptq(qmodel: onnx.ModelProto, fmodel: onnx.ModelProto, hess: dict, convs: list[tuple]) -> int:
    """Rewrite the int8 weights of ``convs`` in place (scales untouched); returns how many convs changed."""
    qinits = {i.name: i for i in qmodel.graph.initializer}
    finits = {i.name: i for i in fmodel.graph.initializer}
    done = 0
    for _, dq, f in convs:
        h = hess.get(f.name)
        if h is None:
            continue
        wq = numpy_helper.to_array(qinits[dq.input[0]])
        scale = numpy_helper.to_array(qinits[dq.input[1]]).astype(np.float64).reshape(-1)
        zp = numpy_helper.to_array(qinits[dq.input[2]]) if len(dq.input) > 2 and dq.input[2] else np.zeros(1)
        wf = numpy_helper.to_array(finits[f.input[1]]).astype(np.float64)
        rows = wf.shape[0]
        axis = int(_attr(dq, "axis", 1))
        if wq.dtype != np.int8 or np.any(zp != 0) or wq.shape != wf.shape:
            continue
        if scale.size == 1:
            scale = np.full(rows, scale[0])
        elif scale.size != rows or axis != 0:
            continue
        limit = int(np.abs(wq.astype(np.int64)).max())  # symmetric per-channel: each channel's max hits it
        if h.ndim == 2:
            q = _gptq_rows(wf.reshape(rows, -1), h, scale, limit)
        else:  # depthwise: every channel has its own input patches
            parts = [_gptq_rows(wf[c].reshape(1, -1), h[c], scale[c : c + 1], limit) for c in range(rows)]
            q = None if any(p is None for p in parts) else np.concatenate(parts)
        if q is None:
            continue
        qinits[dq.input[0]].CopyFrom(
            numpy_helper.from_array(q.reshape(wf.shape).astype(np.int8), dq.input[0])
        )
        done += 1
    return done


# -------------------------------------------------------------------------------------------- mean correction


def _pool_means(model, names: list[str], data, input_name: str, threads: int, batch: int) -> list[np.ndarray]:
    sess = _session(model, threads, names)
    sums: list[np.ndarray | float] = [0.0] * len(names)
    for x in _batches(data, batch):
        for j, out in enumerate(sess.run(names, {input_name: x})):
            sums[j] = sums[j] + out.astype(np.float64).sum(axis=0)
    return [np.asarray(s) / len(data) for s in sums]


def _mean_correct(qmodel: onnx.ModelProto, fmodel: onnx.ModelProto, data, input_name, threads, batch) -> int:
    """Add (FP32 - INT8) mean of each global-pool output right after the pool, in place; returns how many."""
    fnames = {o for n in fmodel.graph.node for o in n.output}
    pools = [
        n
        for n in qmodel.graph.node
        if n.op_type in {"GlobalAveragePool", "ReduceMean"}
        and not n.name.startswith(FUSE_PREFIX)
        and n.output[0] in fnames
    ]
    if not pools:
        return 0
    names = [p.output[0] for p in pools]
    want = _pool_means(fmodel, names, data, input_name, threads, batch)
    have = _pool_means(qmodel, names, data, input_name, threads, batch)
    nodes = list(qmodel.graph.node)
    for pool, w, h in zip(pools, want, have, strict=True):
        out = pool.output[0]
        raw, const = f"{out}_int8", f"{out}_int8_mean_correction"
        pool.output[0] = raw
        qmodel.graph.initializer.append(numpy_helper.from_array((w - h).astype(np.float32), const))
        nodes.insert(
            nodes.index(pool) + 1, helper.make_node("Add", [raw, const], [out], name=f"{pool.name}/mean_fix")
        )
    del qmodel.graph.node[:]
    qmodel.graph.node.extend(nodes)
    return len(pools)


def _agreement(fmodel, qmodel, data, input_name: str, threshold: float, threads: int, batch: int) -> float:
    runs = []
    for model in (fmodel, qmodel):
        sess = _session(model, threads)
        runs.append(
            np.concatenate([sess.run([PROB_NAME], {input_name: x})[0].ravel() for x in _batches(data, batch)])
        )
    return float(np.mean((runs[0] >= threshold) == (runs[1] >= threshold)))


def _threshold(model: onnx.ModelProto, threshold: float | None) -> float:
    if threshold is not None:
        return float(threshold)
    try:
        return float(read_metadata(model).get("threshold", 0.5))
    except Exception:
        return 0.5


# ----------------------------------------------------------------------------------------------------- main

#: The recipe's fixed settings (module docstring says why each); experiments with others live in git history.
FP32_STEM_CONVS = 6  # first try; doubled while the agreement check misses, up to MAX_FP32_STEM_CONVS
MAX_FP32_STEM_CONVS = 12
PERCENTILE = 99.999
BATCH = 8  # calibration / check batch
WINDOW = 16  # images calibrated per pass (memory bound; ranges are merged across passes)
GPTQ_CROPS = 64
CHECK_CROPS = 512
THREADS = 1  # ORT threads of the statistics / check sessions


def to_int8(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    calibration: np.ndarray,
    *,
    calibrate_method: str = "Percentile",
    target_agreement: float | None = 0.99,
    threshold: float | None = None,
    gptq: bool = True,
    mean_correction: bool = True,
) -> Path:
    """Statically quantise ``src`` (member or fused graph) to INT8 QDQ and save ``dst``; returns ``dst``.

    ``calibration``: (N, S, S, 3) face crops, uint8 for fused graphs or float32 [0, 255] for member graphs (the
    model's input type decides; values are cast to it). A few hundred real *training* crops: they set activation
    ranges, GPTQ statistics and the mean correction, and the agreement check runs on them.
    ``calibrate_method``: ``Percentile`` (the recipe) or ``MinMax`` (same graph, faster build: benchmarks).
    ``target_agreement``: for fused graphs (``prob`` output), if INT8 vs FP32 decision agreement at
    ``threshold`` (default: the model's metadata, else 0.5) on the calibration crops is below it, the FP32 stem
    is doubled, then the plain quantiser output is tried (module docstring). None: build once.
    ``gptq`` / ``mean_correction``: the two statistics-based repairs (module docstring); off only where accuracy
    means nothing (random-weight benchmark models) or the test needs the bare quantiser.
    The chosen settings and the calibration agreement are stored in the ``int8_recipe`` metadata entry.
    """
    src_path = Path(src)
    where = str(src_path)
    model = load_onnx(src_path)
    input_name, elem_type = _model_input(model)
    data = _as_input_dtype(calibration, elem_type, where)
    checked = target_agreement is not None and any(o.name == PROB_NAME for o in model.graph.output)
    thr = _threshold(model, threshold)
    out = Path(dst)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="deepguard_int8_") as tmp:
        pre = _preprocess(src_path, Path(tmp) / "preprocessed.onnx", where)
        pre_model = onnx.load(str(pre))
        hess: dict = {}  # GPTQ statistics of the float graph: shared by every stem size
        best: tuple[float, onnx.ModelProto, dict] | None = None
        for stem, use_gptq, use_mean, fallback in _attempts(pre_model, checked, gptq, mean_correction):
            try:
                q = _quantize(pre, pre_model, data, input_name, stem, calibrate_method, Path(tmp))
                recipe = {
                    "fp32_stem_convs": stem,
                    "calibrate_method": calibrate_method,
                    "percentile": PERCENTILE if calibrate_method == "Percentile" else None,
                    "calibration_crops": len(data),
                    "gptq": use_gptq,
                    "mean_correction": use_mean,
                    **_repair(q, pre_model, data, input_name, use_gptq, use_mean, hess),
                }
                agree = None
                if checked:
                    check = _evenly(data, CHECK_CROPS)
                    agree = _agreement(pre_model, q, check, input_name, thr, THREADS, BATCH)
                    recipe.update(
                        calibration_agreement=round(agree, 5), threshold=thr, check_crops=len(check)
                    )
            except ModelError:
                raise
            except Exception as exc:
                raise ModelError(f"{where}: INT8 quantisation failed ({type(exc).__name__}: {exc})") from exc
            score = -1.0 if agree is None else agree
            # A larger FP32 stem always replaces a smaller one: more FP32 is more accurate in expectation, and
            # agreement on a few hundred crops is too noisy (+-0.6 %) to overrule that. The plain fallback has to
            # beat the statistics-based build outright.
            if best is None or not fallback or score > best[0]:
                best = (score, q, recipe)
            if agree is None or agree >= target_agreement:
                break
    assert best is not None
    _, q, recipe = best
    _save(q, model, recipe, out)
    return out


def _preprocess(src: Path, dst: Path, where: str) -> Path:
    """ORT's ``quant_pre_process`` (shape inference + graph clean-up the quantiser expects)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=False)
    except Exception:
        # Symbolic shape inference chokes on some exotic graphs; ONNX shape inference alone is enough here.
        try:
            quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
        except Exception as exc:
            raise ModelError(f"{where}: quant_pre_process failed ({type(exc).__name__}: {exc})") from exc
    return dst


def _attempts(
    pre_model: onnx.ModelProto, checked: bool, gptq: bool, mean_correction: bool
) -> list[tuple[int, bool, bool, bool]]:
    """Builds to try in order: ``(fp32 stem convs, gptq, mean correction, is the plain fallback)``.

    Stems k, 2k, ... while the (capped) FP32 region still grows; without the agreement check, one build.
    """
    schedule: list[int] = []
    k = FP32_STEM_CONVS
    while True:
        if not schedule or _stem_nodes(pre_model, k) != _stem_nodes(pre_model, schedule[-1]):
            schedule.append(k)
        if not checked or 2 * k > MAX_FP32_STEM_CONVS:
            break
        k *= 2
    attempts = [(stem, gptq, mean_correction, False) for stem in schedule]
    if checked and (gptq or mean_correction):
        # Last resort (tiny nets, a handful of crops): the plain quantiser output, no statistics-based edits.
        attempts.append((schedule[-1], False, False, True))
    return attempts


def _quantize(
    pre: Path,
    pre_model: onnx.ModelProto,
    data: np.ndarray,
    input_name: str,
    stem: int,
    method: str,
    tmp: Path,
) -> onnx.ModelProto:
    """One ``quantize_static`` run: QDQ, U8S8 per-channel 7-bit weights; fusion head, classifier tails and the
    first ``stem`` convs of each backbone left in FP32 (module docstring)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    excluded = [n.name for n in pre_model.graph.node if n.name.startswith(FUSE_PREFIX)]
    excluded += _classifier_nodes(pre_model) + _stem_nodes(pre_model, stem)
    reader = ArrayCalibrationReader(input_name, data, BATCH)
    options: dict = {
        "ActivationSymmetric": False,
        "WeightSymmetric": True,
        # Calibrate ~WINDOW images at a time to bound memory (see ArrayCalibrationReader).
        "CalibStridedMinMax": _stride(len(reader), max(1, WINDOW // BATCH)),
    }
    if method == "Percentile":
        options["CalibPercentile"] = PERCENTILE
    qpath = tmp / f"int8_{stem}.onnx"
    with contextlib.redirect_stdout(io.StringIO()):  # ORT prints calibration progress
        quantize_static(
            str(pre),
            str(qpath),
            reader,
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=sorted(set(excluded)),
            calibrate_method=getattr(CalibrationMethod, method),
            extra_options=options,
        )
    return onnx.load(str(qpath))


def _repair(
    q: onnx.ModelProto,
    pre_model: onnx.ModelProto,
    data: np.ndarray,
    input_name: str,
    use_gptq: bool,
    use_mean: bool,
    hess: dict,
) -> dict:
    """GPTQ re-rounding and the pooled-mean correction, in place on ``q``; returns their recipe entries."""
    recipe: dict = {}
    if use_gptq:
        convs = _quantized_convs(q, pre_model)
        if not hess:
            hess.update(_hessians(pre_model, convs, _evenly(data, GPTQ_CROPS), input_name, THREADS, 4))
        recipe["gptq_convs"] = _apply_gptq(q, pre_model, hess, convs)
    if use_mean:
        recipe["mean_corrected_pools"] = _mean_correct(q, pre_model, data, input_name, THREADS, BATCH)
    return recipe


def _save(q: onnx.ModelProto, model: onnx.ModelProto, recipe: dict, out: Path) -> None:
    """The quantiser may drop metadata_props: carry the source's over, then mark the precision and the recipe."""
    have = {p.key for p in q.metadata_props}
    for prop in model.metadata_props:
        if prop.key not in have:
            q.metadata_props.add(key=prop.key, value=prop.value)
    set_metadata(q, {"precision": "int8", "int8_recipe": recipe})
    onnx.save(q, str(out))
