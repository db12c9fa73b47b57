"""Multiply-accumulates (MACs) per inference, counted from an ONNX graph after shape inference.

Why MACs from the graph: they are what the hardware must execute whatever the runtime does, so achieved
MAC/s over the CPU's peak MAC/s says how close to the machine's limit a stage runs. Only the dense ops are
counted (Conv, ConvTranspose, MatMul, Gemm and their integer forms): they are >98 % of the arithmetic of these
CNNs; element-wise ops, pooling and resizes are memory-bound and left out. 1 MAC = 2 FLOPs.

In a QDQ INT8 model a Conv/MatMul whose weight comes through ``DequantizeLinear`` of an 8-bit tensor runs as
an integer kernel on onnxruntime's CPU provider, so its MACs count as INT8; all others count as float.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto

_INT8 = {TensorProto.INT8, TensorProto.UINT8}


@dataclass
class MacCount:
    """MACs of one inference at a given input shape, split by the precision they run in."""

    float_macs: int = 0
    int8_macs: int = 0
    by_op: dict[str, int] = field(default_factory=dict)
    input_shapes: dict[str, list[int]] = field(default_factory=dict)

    @property
    def macs(self) -> int:
        return self.float_macs + self.int8_macs

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    def as_dict(self) -> dict:
        return {
            "gmacs": round(self.gmacs, 4),
            "float_gmacs": round(self.float_macs / 1e9, 4),
            "int8_gmacs": round(self.int8_macs / 1e9, 4),
            "by_op_gmacs": {k: round(v / 1e9, 4) for k, v in sorted(self.by_op.items())},
            "input_shapes": self.input_shapes,
        }


def _fix_inputs(model: onnx.ModelProto, shapes: Mapping[str, list[int]]) -> dict[str, list[int]]:
    """Pin every dynamic input dim: from ``shapes`` by name, else batch 1 and the metadata input size."""
    meta = {p.key: p.value for p in model.metadata_props}
    size = int(meta.get("deepguard.input_size", 0) or 0)
    inits = {t.name for t in model.graph.initializer}
    out: dict[str, list[int]] = {}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        dims = inp.type.tensor_type.shape.dim
        want = list(shapes.get(inp.name, []))
        fixed = []
        for k, d in enumerate(dims):
            if want:
                v = int(want[k])
            elif d.HasField("dim_value") and d.dim_value > 0:
                v = int(d.dim_value)
            elif k == 0:
                v = 1
            elif size and len(dims) == 4 and k in (1, 2):
                v = size
            else:
                raise ValueError(f"input {inp.name!r} dim {k} is dynamic; pass its size in shapes=")
            d.Clear()
            d.dim_value = v
            fixed.append(v)
        out[inp.name] = fixed
    return out


def _infer(model: onnx.ModelProto) -> onnx.ModelProto:
    """Shapes for every tensor: onnxruntime's symbolic inference (handles computed Resize sizes), else ONNX's."""
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
        if inferred is not None:
            return inferred
    except Exception:  # noqa: BLE001 - fall back to the stock inference below
        pass
    return onnx.shape_inference.infer_shapes(model, data_prop=True)


def _shape(vi: onnx.ValueInfoProto) -> list[int] | None:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
    return None if any(d <= 0 for d in dims) else dims


def count_macs(
    model: str | os.PathLike[str] | onnx.ModelProto, shapes: Mapping[str, list[int]] | None = None
) -> MacCount:
    """MACs of one run of ``model``; dynamic input dims default to batch 1 and ``deepguard.input_size``."""
    m = (
        onnx.load(str(model))
        if not isinstance(model, onnx.ModelProto)
        else onnx.ModelProto.FromString(model.SerializeToString())
    )
    fixed = _fix_inputs(m, shapes or {})
    m = _infer(m)
    g = m.graph
    shapes_by_name: dict[str, list[int]] = {}
    for vi in [*g.value_info, *g.input, *g.output]:
        s = _shape(vi)
        if s is not None:
            shapes_by_name[vi.name] = s
    inits = {t.name: t for t in g.initializer}
    for name, t in inits.items():
        shapes_by_name.setdefault(name, list(t.dims))
    producer = {o: n for n in g.node for o in n.output}

    def is_int8(tensor: str) -> bool:
        """Weight/activation arrives as 8-bit: directly, or through DequantizeLinear of an 8-bit tensor."""
        if tensor in inits:
            return inits[tensor].data_type in _INT8
        p = producer.get(tensor)
        if p is None:
            return False
        if p.op_type == "DequantizeLinear":
            src = p.input[0]
            if src in inits:
                return inits[src].data_type in _INT8
            q = producer.get(src)
            return q is not None and q.op_type in ("QuantizeLinear", "DynamicQuantizeLinear")
        return False

    count = MacCount(input_shapes=fixed)
    for n in g.node:
        op = n.op_type
        macs = 0
        int8 = False
        if op in ("Conv", "ConvInteger", "QLinearConv"):
            w_idx = 3 if op == "QLinearConv" else 1
            w, y = shapes_by_name.get(n.input[w_idx]), shapes_by_name.get(n.output[0])
            if w is None or y is None:
                continue
            macs = int(np.prod(y, dtype=np.int64) * np.prod(w[1:], dtype=np.int64))
            int8 = op != "Conv" or (is_int8(n.input[0]) and is_int8(n.input[1]))
        elif op == "ConvTranspose":
            x, w = shapes_by_name.get(n.input[0]), shapes_by_name.get(n.input[1])
            if x is None or w is None:
                continue
            macs = int(np.prod(x, dtype=np.int64) * np.prod(w[1:], dtype=np.int64))
            int8 = is_int8(n.input[0]) and is_int8(n.input[1])
        elif op in ("MatMul", "MatMulInteger", "QLinearMatMul", "Gemm"):
            a_idx = 0
            a, y = shapes_by_name.get(n.input[a_idx]), shapes_by_name.get(n.output[0])
            if a is None or y is None:
                continue
            trans_a = any(at.name == "transA" and at.i for at in n.attribute)
            k = a[-2] if (op == "Gemm" and trans_a) else a[-1]
            macs = int(np.prod(y, dtype=np.int64) * k)
            integer_op = op in ("MatMulInteger", "QLinearMatMul")
            int8 = integer_op or (is_int8(n.input[0]) and is_int8(n.input[1]))
        else:
            continue
        count.by_op[op] = count.by_op.get(op, 0) + macs
        if int8:
            count.int8_macs += macs
        else:
            count.float_macs += macs
    return count


__all__ = ["MacCount", "count_macs"]
