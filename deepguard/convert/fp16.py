"""FP32 ONNX -> FP16 ONNX (weights and activations in half precision, I/O types unchanged).

Why keep the I/O types: the runtime feeds uint8 crops to fused models and reads float32 probabilities, whatever
the precision inside, so one code path serves every model file. The fusion head (cast, resize, sigmoid, weighted
mean; nodes named ``deepguard_fuse/...``) stays in FP32: it is a handful of tiny ops, and FP16 there would
only add rounding to the final probabilities and to the resized pixels (FP16 has 3 significant digits, pixel
values go up to 255).

Each member's stem (its first ``STEM_NODES`` nodes: normalisation, first conv, first depthwise) also stays FP32:
rounding there is carried through the whole network, and with it the shipped default's FP16 graph missed the
parity bound (max |dprob| 0.0105 > 1e-2 on 512 val crops); with the stem in FP32 it is 0.0055, for a few percent
of the compute.
"""

from __future__ import annotations

import copy
import os
import re
import warnings
from pathlib import Path

import onnx

from deepguard.convert.fuse import FUSE_PREFIX, load_onnx
from deepguard.convert.metadata import set_metadata
from deepguard.errors import ModelError

STEM_NODES = 8
_MEMBER = re.compile(r"^_*m\d+_[^/]*/")


def _stem_nodes(graph: onnx.GraphProto, count: int) -> list[str]:
    """Names of the first ``count`` nodes (graph order) of each member; a lone model is one member.

    A node whose output is a graph output or feeds the fusion head is never taken (the converter mishandles
    blocked output producers, see ``to_fp16``), so a tiny member is simply left partly FP16.
    """
    ends = {o.name for o in graph.output} | {
        i for n in graph.node if n.name.startswith(FUSE_PREFIX) for i in n.input
    }
    seen: dict[str, int] = {}
    names = []
    for n in graph.node:
        if n.name.startswith(FUSE_PREFIX) or any(o in ends for o in n.output):
            continue
        m = _MEMBER.match(n.name)
        key = m.group(0) if m else ""
        if seen.get(key, 0) < count:
            seen[key] = seen.get(key, 0) + 1
            names.append(n.name)
    return names


def _unshare_initializers(graph: onnx.GraphProto, blocked: set[str]) -> None:
    """Give every node of ``blocked`` its own copy of each initializer it shares with another node.

    Why: the converter types an initializer once, so a shared one (a Clip bound, a Pad width) used by an FP32
    node and by an FP16 neighbour makes an invalid graph. Only small constants are shared in these CNNs.
    """
    inits = {t.name: t for t in graph.initializer}
    users: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for i in n.input:
            if i in inits:
                users.setdefault(i, []).append(n)
    for name, nodes in users.items():
        if len(nodes) < 2 or not any(n.name in blocked for n in nodes):
            continue
        for j, n in enumerate(x for x in nodes if x.name in blocked):
            t = copy.deepcopy(inits[name])
            t.name = f"{name}__fp32_{j}"
            graph.initializer.append(t)
            n.input[:] = [t.name if i == name else i for i in n.input]


def _toposort(nodes: list[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    """Nodes in an order ONNX accepts (every input produced before use); re-assembling head + body needs it."""
    ready, pending, ordered = set(available) | {""}, list(nodes), []
    while pending:
        rest = [n for n in pending if not all(i in ready for i in n.input)]
        done = [n for n in pending if all(i in ready for i in n.input)]
        if not done:  # unresolved (e.g. outer-scope names of subgraphs): keep the original order for the rest
            ordered.extend(rest)
            break
        for n in done:
            ready.update(n.output)
        ordered.extend(done)
        pending = rest
    return ordered


def _split_head(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list, list]:
    """Split a fused graph into its fusion head (kept FP32) and a body model holding only the member nodes.

    The body's inputs are the resized images and its outputs the member logits, all float32, so
    ``keep_io_types=True`` puts exactly one Cast at each boundary and the head never sees FP16.
    """
    g = model.graph
    head = [n for n in g.node if n.name.startswith(FUSE_PREFIX)]
    body = [n for n in g.node if not n.name.startswith(FUSE_PREFIX)]
    head_out = {o for n in head for o in n.output} | {i.name for i in g.input}
    head_in = {i for n in head for i in n.input} | {o.name for o in g.output}
    body_out = {o for n in body for o in n.output}
    body_in = {i for n in body for i in n.input}
    head_used = {i for n in head for i in n.input}
    vi = {v.name: v for v in [*g.value_info, *g.input, *g.output]}
    inputs = sorted(body_in & head_out)
    outputs = sorted(body_out & head_in)

    def value(name: str) -> onnx.ValueInfoProto:
        if name in vi:
            return vi[name]
        return onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)

    # Initializers not used by the head go to the body (including any only referenced inside If/Loop bodies).
    body_inits = [t for t in g.initializer if t.name not in head_used or t.name in body_in]
    head_inits = [t for t in g.initializer if t.name in head_used]
    body_graph = onnx.helper.make_graph(
        body,
        g.name + "_body",
        [value(n) for n in inputs],
        [value(n) for n in outputs],
        initializer=body_inits,
    )
    body_model = onnx.helper.make_model(
        body_graph, opset_imports=model.opset_import, functions=model.functions
    )
    body_model.ir_version = model.ir_version
    return body_model, head, head_inits


def to_fp16(
    src: str | os.PathLike[str] | onnx.ModelProto,
    dst: str | os.PathLike[str],
    *,
    extra_op_block_list: list[str] | None = None,
    stem_nodes: int = STEM_NODES,
) -> Path:
    """Convert ``src`` (member or fused graph) to FP16 and save as ``dst``; returns ``dst``.

    Uses ``onnxconverter_common.float16.convert_float_to_float16(keep_io_types=True)`` with its default op block
    list (which already keeps Resize, Range, CumSum, Min/Max... in FP32). For a fused graph only the member
    nodes are converted: onnxconverter-common 1.16 mishandles ``keep_io_types`` when the nodes producing graph
    outputs are in ``node_block_list`` (it emits FP16 outputs and a MatMul with mixed FP16/FP32 inputs that ORT
    refuses to load), so the fusion head is cut off, the body converted alone, and the head re-attached.
    """
    from onnxconverter_common import float16

    # The stem blocking edits the graph: copy a caller's proto, a freshly loaded file is ours already.
    model = copy.deepcopy(src) if isinstance(src, onnx.ModelProto) else load_onnx(src)
    where = str(src) if not isinstance(src, onnx.ModelProto) else "model"
    stem = _stem_nodes(model.graph, stem_nodes)
    _unshare_initializers(model.graph, set(stem))
    op_block = list(float16.DEFAULT_OP_BLOCK_LIST) + list(extra_op_block_list or [])
    has_head = any(n.name.startswith(FUSE_PREFIX) for n in model.graph.node)
    with warnings.catch_warnings():
        # One UserWarning per tiny weight clamped to +-1e-7 (harmless, and hundreds of them for a real CNN).
        warnings.filterwarnings("ignore", category=UserWarning, module="onnxconverter_common")
        try:
            if not has_head:
                half = float16.convert_float_to_float16(
                    model, keep_io_types=True, op_block_list=op_block, node_block_list=stem
                )
            else:
                body, head, head_inits = _split_head(model)
                body16 = float16.convert_float_to_float16(
                    body, keep_io_types=True, op_block_list=op_block, node_block_list=stem
                )
                g = model.graph
                graph = onnx.helper.make_graph(
                    _toposort(
                        [*head, *body16.graph.node],
                        {i.name for i in g.input}
                        | {t.name for t in [*head_inits, *body16.graph.initializer]},
                    ),
                    g.name,
                    list(g.input),
                    list(g.output),
                    initializer=[*head_inits, *body16.graph.initializer],
                    value_info=list(body16.graph.value_info),
                )
                half = onnx.helper.make_model(
                    graph,
                    opset_imports=model.opset_import,
                    functions=body16.functions,
                    producer_name=model.producer_name,
                )
                half.ir_version = model.ir_version
                half.metadata_props.extend(model.metadata_props)
                onnx.checker.check_model(half, full_check=True)
        except Exception as exc:
            raise ModelError(f"{where}: FP16 conversion failed ({type(exc).__name__}: {exc})") from exc
    set_metadata(half, {"precision": "fp16"})
    out = Path(dst)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(half, str(out))
    return out
