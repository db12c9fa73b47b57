"""The member graphs inside a fused DeepGuard model, cut back out as stand-alone member ONNX graphs.

Why: a new member joins a model that is already built (``deepguard train-default --join MODEL``) from the members
that *ship*, not from Keras files that may be gone. Each member of a fused graph (:mod:`deepguard.convert.fuse`)
is the sub-graph from the resized float image ``deepguard_fuse/image_{S}`` to the input of its
``deepguard_fuse/flat_{i}`` node; cutting there gives back the float32 NHWC pixels -> logit graph the fuser took
in, with its ``m{i}_{name}/`` prefix removed, so fusing it again splices the same nodes in.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper

from deepguard.convert.fuse import FUSE_PREFIX, load_onnx
from deepguard.convert.metadata import read_metadata
from deepguard.errors import ModelError

#: Name of a cut-out member's input (the fuser renames it to the resized image again).
MEMBER_INPUT = "pixels"


@dataclass(frozen=True)
class FusedMember:
    """One member of a fused model: its graph (float [N,S,S,3] -> logit), weight and name."""

    model: onnx.ModelProto
    weight: float
    name: str
    input_size: int


def extract_members(path: str | os.PathLike[str]) -> list[FusedMember]:
    """Every member of the fused FP32 model at ``path``, in fusion order (a :class:`ModelError` names the file
    when it is not a fused DeepGuard graph, e.g. an INT8 file, whose members are quantised)."""
    fused = load_onnx(path)
    meta = read_metadata(path).get("members")
    fused_nodes = {n.name for n in fused.graph.node if n.name.startswith(FUSE_PREFIX)}
    if not isinstance(meta, list) or not meta or FUSE_PREFIX + "member_probs" not in fused_nodes:
        raise ModelError(f"{path}: not a fused model (no member list in its metadata or no fusion head)")
    if any(n.op_type == "QuantizeLinear" for n in fused.graph.node):
        raise ModelError(f"{path}: a quantised model; join members from the FP32 file")
    flats = {n.name: n for n in fused.graph.node if n.name.startswith(FUSE_PREFIX + "flat_")}
    out = []
    for i, m in enumerate(meta):
        flat = flats.get(f"{FUSE_PREFIX}flat_{i}")
        if flat is None:
            raise ModelError(f"{path}: member {i} ({m.get('name')}) has no {FUSE_PREFIX}flat_{i} node")
        size = int(m["input_size"])
        graph = _cut(fused, f"{FUSE_PREFIX}image_{size}", flat.input[0], size, str(path))
        out.append(FusedMember(graph, float(m["weight"]), str(m["name"]), size))
    return out


def _cut(fused: onnx.ModelProto, start: str, end: str, size: int, where: str) -> onnx.ModelProto:
    """The nodes between tensor ``start`` and tensor ``end`` as a model with input ``pixels`` [N,S,S,3]."""
    producer = {o: n for n in fused.graph.node for o in n.output}
    inits = {t.name: t for t in fused.graph.initializer}
    keep: dict[str, onnx.NodeProto] = {}
    stack = [end]
    while stack:
        name = stack.pop()
        if name == start or name in inits or name not in producer:
            continue
        node = producer[name]
        if node.name in keep:
            continue
        if node.name.startswith(FUSE_PREFIX):
            raise ModelError(
                f"{where}: member output {end!r} depends on {node.name!r}, not only on {start!r}"
            )
        keep[node.name] = node
        stack.extend(node.input)
    nodes = [n for n in fused.graph.node if n.name in keep]  # graph order is topological
    used = {x for n in nodes for x in n.input}
    prefix = _common_prefix([n.name for n in nodes])
    rename = {start: MEMBER_INPUT}
    graph = helper.make_graph(
        [_renamed(n, prefix, rename) for n in nodes],
        "member",
        [helper.make_tensor_value_info(MEMBER_INPUT, TensorProto.FLOAT, ["N", size, size, 3])],
        [helper.make_tensor_value_info(_strip(end, prefix), TensorProto.FLOAT, ["N", 1])],
        initializer=[_renamed_tensor(inits[x], prefix) for x in sorted(used) if x in inits],
    )
    model = helper.make_model(
        graph, opset_imports=list(fused.opset_import), producer_name="deepguard.convert"
    )
    model.ir_version = fused.ir_version
    onnx.checker.check_model(model)
    return model


def _common_prefix(names: list[str]) -> str:
    """The ``m{i}_{name}/`` prefix the fuser gave every node of the member ('' when they do not share one)."""
    first = names[0].split("/", 1)[0] + "/" if names and "/" in names[0] else ""
    return first if first and all(n.startswith(first) for n in names) else ""


def _strip(name: str, prefix: str) -> str:
    return name[len(prefix) :] if prefix and name.startswith(prefix) else name


def _renamed(node: onnx.NodeProto, prefix: str, rename: dict[str, str]) -> onnx.NodeProto:
    new = onnx.NodeProto()
    new.CopyFrom(node)
    new.name = _strip(node.name, prefix)
    new.input[:] = [rename.get(x, _strip(x, prefix)) for x in node.input]
    new.output[:] = [_strip(x, prefix) for x in node.output]
    return new


def _renamed_tensor(t: onnx.TensorProto, prefix: str) -> onnx.TensorProto:
    new = onnx.TensorProto()
    new.CopyFrom(t)
    new.name = _strip(t.name, prefix)
    return new


def member_logits(model: onnx.ModelProto, pixels: np.ndarray, batch: int = 256) -> np.ndarray:
    """A member graph's logits (N,) on float pixels [N,S,S,3], on the CPU."""
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    x = np.asarray(pixels, np.float32)
    return np.concatenate(
        [sess.run(None, {name: x[i : i + batch]})[0].reshape(-1) for i in range(0, len(x), batch)]
    )
