"""N member ONNX graphs + weights -> ONE ONNX graph that takes raw uint8 face crops.

Why one graph: the runtime then does a single ``session.run`` per batch (one thread pool, one memory arena, one
file to ship and hash), and all preprocessing that must match training (cast, resize to each member's own size)
lives inside the model where it cannot drift from the Python code.

Graph::

    image uint8 [N,H,W,3] -> Cast(float) -> Resize(linear, half_pixel, to S_i)  (one per distinct S_i)
        -> member_i (names prefixed "m{i}_{name}/") -> logit [N,1] -> Sigmoid
    member_probs = Concat(p_i) [N,M];  prob = member_probs @ (w / sum w)  [N]
    with temperature T != 1:  prob = Sigmoid((Log(q) - Log(1 - q)) * (1/T)),  q = Clip(prob_raw, 1e-6, 1-1e-6)

The temperature (fitted on validation, :mod:`deepguard.convert.calibrate`) makes ``prob`` a calibrated
probability for every consumer; ``member_probs`` stay the members' raw sigmoids. With T == 1 no node is added,
so uncalibrated graphs are unchanged.

Half-pixel linear resize is what ``tf.image.resize(..., "bilinear", antialias=False)`` does, and at the same size it
is an exact identity. All fusion nodes are named ``deepguard_fuse/...`` so FP16/INT8 conversion can keep them in
full precision (the weighted average must not be quantised).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from deepguard.convert.metadata import set_metadata
from deepguard.errors import ModelError

FUSE_PREFIX = "deepguard_fuse/"
INPUT_NAME = "image"
PROB_NAME = "prob"
MEMBER_PROBS_NAME = "member_probs"

Member = tuple[str | os.PathLike[str] | onnx.ModelProto, float, str]


def safe_name(name: str) -> str:
    """Member name usable inside tensor names and file names."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)).strip("_")
    return cleaned or "member"


def load_onnx(path_or_proto: str | os.PathLike[str] | onnx.ModelProto) -> onnx.ModelProto:
    """Load an ONNX file, turning every failure into a :class:`ModelError` that names the file."""
    if isinstance(path_or_proto, onnx.ModelProto):
        return path_or_proto
    p = Path(path_or_proto)
    if not p.is_file():
        raise ModelError(f"{p}: ONNX model file not found")
    try:
        model = onnx.load(str(p))
    except Exception as exc:
        raise ModelError(f"{p}: not a readable ONNX model ({type(exc).__name__}: {exc})") from exc
    if not model.graph.node:
        raise ModelError(f"{p}: ONNX model has an empty graph")
    return model


def member_input_size(model: onnx.ModelProto, where: str = "member") -> int:
    """The fixed square size S of a member's float NHWC input [N, S, S, 3]."""
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1 or len(model.graph.output) != 1:
        raise ModelError(
            f"{where}: a member needs exactly 1 input and 1 output, found {len(inputs)} and {len(model.graph.output)}"
        )
    ttype = inputs[0].type.tensor_type
    if ttype.elem_type != TensorProto.FLOAT:
        raise ModelError(
            f"{where}: member input must be float32, found {TensorProto.DataType.Name(ttype.elem_type)}"
        )
    dims = [d.dim_value if d.HasField("dim_value") else None for d in ttype.shape.dim]
    if len(dims) != 4 or dims[3] != 3:
        raise ModelError(f"{where}: member input must be NHWC [N, S, S, 3], found {dims}")
    if dims[1] is None or dims[1] != dims[2]:
        raise ModelError(f"{where}: member input needs a fixed square size, found {dims}")
    return int(dims[1])


def _opset(model: onnx.ModelProto) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def fuse_members(
    members: Sequence[Member],
    out_path: str | os.PathLike[str] | None,
    input_size: int,
    *,
    opset: int = 17,
    name: str = "deepguard_ensemble",
    temperature: float = 1.0,
) -> Path | onnx.ModelProto:
    """Fuse members ``[(onnx_path_or_proto, weight, name), ...]`` into one graph; returns ``out_path``.

    ``input_size`` is the nominal crop size the runtime should feed (stored as metadata); the graph itself
    accepts any H, W. ``temperature``: calibration applied to ``prob`` inside the graph (stored as metadata when
    it is not 1). With ``out_path=None`` the checked ModelProto is returned instead of written.
    """
    temperature, weights = _checked_inputs(members, temperature)
    parts = _GraphParts(opset)
    parts.add_input_nodes()
    prob_names = [
        parts.add_member(i, src, member_name, opset) for i, (src, _, member_name) in enumerate(members)
    ]
    parts.add_head(prob_names, weights, temperature)
    fused = parts.model(name, len(members))
    _set_fused_metadata(fused, members, parts.sizes, input_size, temperature)
    _check_fused(fused)
    if out_path is None:
        return fused
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(fused, str(out))
    return out


def _checked_inputs(members: Sequence[Member], temperature: float) -> tuple[float, np.ndarray]:
    """The temperature as a float and the member weights, or a :class:`ModelError` saying what is wrong."""
    if not members:
        raise ModelError("fuse_members: no members given")
    temperature = float(temperature)
    if not np.isfinite(temperature) or temperature <= 0:
        raise ModelError(f"fuse_members: temperature must be a positive number, got {temperature}")
    weights = np.array([float(w) for _, w, _ in members], dtype=np.float64)
    if not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
        raise ModelError(f"fuse_members: weights must be >= 0 with a positive sum, got {weights.tolist()}")
    return temperature, weights


class _GraphParts:
    """What the fused graph is assembled from: nodes, initialisers, value infos, functions and opsets,
    collected member by member in fusion order."""

    def __init__(self, opset: int) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.value_info: list[onnx.ValueInfoProto] = []
        self.functions: list[onnx.FunctionProto] = []
        self.opsets: dict[str, int] = {"": opset}
        self.ir_version = 8  # opset 17 needs IR >= 8
        self.resized: dict[int, str] = {}  # member input size -> resized image tensor
        self.used: set[str] = set()  # member name prefixes already taken
        self.sizes: list[int] = []  # each member's input size, in fusion order

    def const(self, tensor_name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(array, tensor_name))
        return tensor_name

    def add_input_nodes(self) -> None:
        """Cast the uint8 image to float and take the batch size (for each resize's target shape)."""
        f = FUSE_PREFIX
        self.nodes.append(
            helper.make_node("Cast", [INPUT_NAME], [f + "image_f32"], to=TensorProto.FLOAT, name=f + "cast")
        )
        self.nodes.append(
            helper.make_node("Shape", [INPUT_NAME], [f + "batch"], start=0, end=1, name=f + "batch")
        )
        self.const(f + "shape_n1", np.array([-1, 1], np.int64))  # member logit [N,1] or [N] -> [N,1]

    def add_member(self, i: int, src, member_name: str, opset: int) -> str:
        """Splice member ``i`` in (prefixed, fed by the resize to its size); returns its probability tensor."""
        f = FUSE_PREFIX
        where = str(src) if not isinstance(src, onnx.ModelProto) else f"member {member_name!r}"
        model = load_onnx(src)
        size = member_input_size(model, where)
        model = onnx.compose.add_prefix(_at_opset(model, opset, where), self._prefix(i, member_name))
        inits_set = {t.name for t in model.graph.initializer}
        m_in = next(x.name for x in model.graph.input if x.name not in inits_set)
        m_out = model.graph.output[0].name
        image = self._resized(size)
        for node in model.graph.node:
            for k, x in enumerate(node.input):
                if x == m_in:
                    node.input[k] = image
            _rename_in_subgraphs(node, m_in, image)
        self._absorb(model)
        flat = f + f"logit_{i}"
        self.nodes.append(helper.make_node("Reshape", [m_out, f + "shape_n1"], [flat], name=f + f"flat_{i}"))
        self.nodes.append(helper.make_node("Sigmoid", [flat], [f + f"prob_{i}"], name=f + f"sigmoid_{i}"))
        self.sizes.append(size)
        return f + f"prob_{i}"

    def _prefix(self, i: int, member_name: str) -> str:
        prefix = f"m{i}_{safe_name(member_name)}/"
        while prefix in self.used:
            prefix = "_" + prefix
        self.used.add(prefix)
        return prefix

    def _resized(self, size: int) -> str:
        """The float image resized to ``size`` (one Resize per distinct member size)."""
        f = FUSE_PREFIX
        if size not in self.resized:
            sizes = self.const(f + f"size_{size}", np.array([size, size, 3], np.int64))
            self.nodes.append(
                helper.make_node(
                    "Concat", [f + "batch", sizes], [f + f"shape_{size}"], axis=0, name=f + f"shape_{size}"
                )
            )
            self.nodes.append(
                helper.make_node(
                    "Resize",
                    [f + "image_f32", "", "", f + f"shape_{size}"],
                    [f + f"image_{size}"],
                    mode="linear",
                    coordinate_transformation_mode="half_pixel",
                    name=f + f"resize_{size}",
                )
            )
            self.resized[size] = f + f"image_{size}"
        return self.resized[size]

    def _absorb(self, model: onnx.ModelProto) -> None:
        """Take over a prefixed member's nodes, initialisers, value infos, functions, opsets and IR version."""
        self.nodes.extend(model.graph.node)
        self.inits.extend(model.graph.initializer)
        self.value_info.extend(model.graph.value_info)
        self.functions.extend(model.functions)
        for o in model.opset_import:
            if o.domain not in ("", "ai.onnx"):
                self.opsets[o.domain] = max(self.opsets.get(o.domain, 0), o.version)
        self.ir_version = max(self.ir_version, model.ir_version)

    def add_head(self, prob_names: list[str], weights: np.ndarray, temperature: float) -> None:
        """``member_probs`` and their weighted mean ``prob`` (temperature-scaled when T != 1)."""
        f = FUSE_PREFIX
        self.nodes.append(
            helper.make_node("Concat", prob_names, [MEMBER_PROBS_NAME], axis=1, name=f + "member_probs")
        )
        w = self.const(f + "weights", (weights / weights.sum()).astype(np.float32))
        mean = PROB_NAME if temperature == 1.0 else f + "prob_uncalibrated"
        self.nodes.append(
            helper.make_node("MatMul", [MEMBER_PROBS_NAME, w], [mean], name=f + "weighted_mean")
        )
        if temperature != 1.0:
            self.nodes.extend(_temperature_nodes(mean, PROB_NAME, temperature, self.const))

    def model(self, name: str, m: int) -> onnx.ModelProto:
        """The fused ModelProto: uint8 ``image`` [N,H,W,3] in, ``prob`` [N] and ``member_probs`` [N,m] out."""
        graph = helper.make_graph(
            self.nodes,
            name,
            [helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, ["N", "H", "W", 3])],
            [
                helper.make_tensor_value_info(PROB_NAME, TensorProto.FLOAT, ["N"]),
                helper.make_tensor_value_info(MEMBER_PROBS_NAME, TensorProto.FLOAT, ["N", m]),
            ],
            initializer=self.inits,
            value_info=self.value_info,
        )
        fused = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid(d, v) for d, v in self.opsets.items()],
            producer_name="deepguard.convert",
            functions=self.functions,
        )
        fused.ir_version = self.ir_version
        return fused


def _at_opset(model: onnx.ModelProto, opset: int, where: str) -> onnx.ModelProto:
    """The member converted to the fused graph's opset (unchanged when it already has it)."""
    if _opset(model) == opset:
        return model
    try:
        return onnx.version_converter.convert_version(model, opset)
    except Exception as exc:
        raise ModelError(
            f"{where}: cannot convert member from opset {_opset(model)} to {opset} ({exc})"
        ) from exc


def _set_fused_metadata(
    fused: onnx.ModelProto, members: Sequence[Member], sizes: list[int], input_size: int, temperature: float
) -> None:
    meta_members = [
        {"name": str(member_name), "weight": float(weight), "input_size": size}
        for (_, weight, member_name), size in zip(members, sizes, strict=True)
    ]
    set_metadata(
        fused,
        {
            "members": meta_members,
            "input_size": int(input_size),
            "input_layout": "NHWC",
            "color_order": "RGB",
            "input_dtype": "uint8",
            "precision": "fp32",
            "temperature": temperature if temperature != 1.0 else None,
        },
    )


def _check_fused(fused: onnx.ModelProto) -> None:
    try:
        onnx.checker.check_model(fused, full_check=True)
    except Exception as exc:
        raise ModelError(
            f"fuse_members: fused graph failed onnx.checker ({type(exc).__name__}: {exc})"
        ) from exc


def _temperature_nodes(src: str, dst: str, temperature: float, const) -> list[onnx.NodeProto]:
    """``dst = sigmoid(logit(clip(src)) / T)`` as FP32 fusion-head nodes (FP16/INT8 keep them in FP32)."""
    f = FUSE_PREFIX + "calibrate/"
    lo = const(f + "min", np.array(1e-6, np.float32))
    hi = const(f + "max", np.array(1 - 1e-6, np.float32))
    one = const(f + "one", np.array(1.0, np.float32))
    inv_t = const(f + "inv_temperature", np.array(1.0 / temperature, np.float32))
    make = helper.make_node
    return [
        make("Clip", [src, lo, hi], [f + "q"], name=f + "clip"),
        make("Sub", [one, f + "q"], [f + "one_minus_q"], name=f + "one_minus_q"),
        make("Log", [f + "q"], [f + "log_q"], name=f + "log_q"),
        make("Log", [f + "one_minus_q"], [f + "log_1mq"], name=f + "log_1mq"),
        make("Sub", [f + "log_q", f + "log_1mq"], [f + "logit"], name=f + "logit"),
        make("Mul", [f + "logit", inv_t], [f + "scaled"], name=f + "scale"),
        make("Sigmoid", [f + "scaled"], [dst], name=f + "sigmoid"),
    ]


def _rename_in_subgraphs(node: onnx.NodeProto, old: str, new: str) -> None:
    """Rename an outer-scope tensor used inside If/Loop/Scan bodies (rare in CNNs, but cheap to get right)."""
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for g in graphs:
            for sub in g.node:
                for k, x in enumerate(sub.input):
                    if x == old:
                        sub.input[k] = new
                _rename_in_subgraphs(sub, old, new)
