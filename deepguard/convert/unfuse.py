"""A member back out of a fused graph: the inverse of :func:`deepguard.convert.fuse.fuse_members` for one member.

Why: a shipped model is one fused file; its training run (the Keras members) lives on the machine that trained it.
To re-fit a member's head (:mod:`deepguard.training.head`) or re-calibrate a shipped model, the member graph is
taken out of the fused file - float32 NHWC pixels at the member's own size in, its logit out, names without the
fusion prefix - and fused again with the same code that built it.
"""

from __future__ import annotations

import onnx
from onnx import helper

from deepguard.convert.fuse import FUSE_PREFIX, safe_name
from deepguard.convert.metadata import read_metadata
from deepguard.errors import ModelError


def _strip(name: str, prefix: str) -> str:
    return name[len(prefix) :] if name.startswith(prefix) else name


def extract_member(fused: onnx.ModelProto, index: int = 0) -> tuple[onnx.ModelProto, str, float]:
    """``(member graph, member name, weight)`` of member ``index`` of a fused DeepGuard graph."""
    members = read_metadata(fused).get("members") or []
    if not 0 <= index < len(members):
        raise ModelError(f"fused graph has {len(members)} members, no member {index}")
    meta = members[index]
    name, size = str(meta["name"]), int(meta["input_size"])
    prefix = f"m{index}_{safe_name(name)}/"
    image = f"{FUSE_PREFIX}image_{size}"
    flat = next((n for n in fused.graph.node if n.name == f"{FUSE_PREFIX}flat_{index}"), None)
    if flat is None:
        raise ModelError(f"fused graph lacks {FUSE_PREFIX}flat_{index}: not built by fuse_members")
    nodes = [n for n in fused.graph.node if n.name.startswith(prefix)]
    if not nodes:
        raise ModelError(f"fused graph has no nodes named {prefix}*")

    def rename(x: str) -> str:
        return "input" if x == image else _strip(x, prefix)

    out_nodes = []
    for n in nodes:
        m = onnx.NodeProto()
        m.CopyFrom(n)
        m.name = _strip(n.name, prefix)
        m.input[:] = [rename(x) for x in n.input]
        m.output[:] = [rename(x) for x in n.output]
        out_nodes.append(m)
    inits = []
    for t in fused.graph.initializer:
        if t.name.startswith(prefix):
            c = onnx.TensorProto()
            c.CopyFrom(t)
            c.name = _strip(t.name, prefix)
            inits.append(c)
    infos = []
    for v in fused.graph.value_info:
        if v.name.startswith(prefix):
            c = onnx.ValueInfoProto()
            c.CopyFrom(v)
            c.name = _strip(v.name, prefix)
            infos.append(c)
    logit = rename(flat.input[0])
    graph = helper.make_graph(
        out_nodes,
        safe_name(name),
        [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["N", size, size, 3])],
        [helper.make_tensor_value_info(logit, onnx.TensorProto.FLOAT, ["N", 1])],
        initializer=inits,
        value_info=infos,
    )
    member = helper.make_model(
        graph, opset_imports=list(fused.opset_import), producer_name="deepguard.unfuse"
    )
    member.ir_version = fused.ir_version
    onnx.checker.check_model(member)
    return member, name, float(meta.get("weight", 1.0))


__all__ = ["extract_member"]
