"""Recover a trained member's Keras weights from a fused ensemble graph, so a shipped model can be trained further.

Why: the default's Keras checkpoint is not kept (it is an intermediate of ``train-default``), but its FP32 ONNX
graph is shipped and holds every weight. tf2onnx folds each BatchNorm into the convolution before it (regular
convs: into the kernel and a bias; depthwise convs: into a Mul and an Add after the conv), so the Keras member gets
the folded kernels and BatchNorms that pass the folded bias (and scale) through: gamma = scale, beta = bias,
moving mean 0, moving variance 1 - eps. In inference mode that is the same function; training it further must
keep the BatchNorms in inference mode (``freeze_batchnorm``), since their batch statistics are no longer those the
kernels expect. Only the edge MobileNetV2 member's naming is known here (``deepguard/models/edge.py``).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from deepguard.errors import ModelError

#: A Keras layer name inside a tf2onnx tensor or node name: ``.../mobilenet_v2_1/features.3.conv.1.0_1/...``.
_LAYER = re.compile(r"/(features\.[0-9a-z.]+?|head\.dense\d+|logit)_\d+/")


def _layer_of(*names: str) -> str | None:
    for name in names:
        found = _LAYER.search(name)
        if found:
            return found.group(1)
    return None


def folded_weights(onnx_path: str | Path, member: int = 0) -> dict[str, list[np.ndarray]]:
    """Keras layer name -> weights (Keras order and layout) of member ``member`` of a fused graph."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    prefix = f"m{member}_"
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    out: dict[str, list[np.ndarray]] = {}
    for node in graph.node:
        if not node.name.startswith(prefix):
            continue
        if node.op_type == "Conv":
            out.update(_conv(node, init, consumers))
        elif node.op_type == "MatMul":
            layer = _layer_of(node.name)
            (add,) = consumers[node.output[0]]
            bias = next(init[n] for n in add.input if n in init)
            out[layer] = [init[node.input[1]], bias.reshape(-1)]
    if not out:
        raise ModelError(f"{onnx_path}: no layers of member {member} found (is it a fused deepguard graph?)")
    return out


def _conv(node, init: dict, consumers: dict) -> dict[str, list[np.ndarray]]:
    """One Conv node -> its Keras conv kernel and the pass-through BatchNorm after it."""
    kernel = init[node.input[1]]
    depthwise = int(next((a.i for a in node.attribute if a.name == "group"), 1)) > 1
    conv = _layer_of(node.name, node.input[1], node.input[2] if len(node.input) > 2 else "")
    if conv is None:
        raise ModelError(f"Conv node {node.name}: cannot tell which Keras layer it is")
    if depthwise:  # (C, 1, kh, kw) -> (kh, kw, C, 1); BN folded into the Mul + Add that follow
        (mul,) = consumers[node.output[0]]
        (add,) = consumers[mul.output[0]]
        scale = next(init[n] for n in mul.input if n in init).reshape(-1)
        bias = next(init[n] for n in add.input if n in init).reshape(-1)
        kernel = kernel.transpose(2, 3, 0, 1)
        bn = _layer_of(mul.name)
    else:  # (O, I, kh, kw) -> (kh, kw, I, O); BN folded into the kernel and the bias input
        scale = np.ones(kernel.shape[0], np.float32)
        bias = init[node.input[2]].reshape(-1)
        kernel = kernel.transpose(2, 3, 1, 0)
        bn = _layer_of(node.input[2])
    return {conv: [kernel], bn: [scale, bias]}


def member_from_fused(onnx_path: str | Path, model, member: int = 0) -> int:
    """Load member ``member`` of a fused graph into the Keras ``model`` built by ``build_edge_member``.

    Returns the number of layers set; raises :class:`ModelError` when a weighted layer of ``model`` has no weights
    in the graph or a shape differs (a different architecture or input size).
    """
    weights = folded_weights(onnx_path, member)
    done = 0
    for layer in model.layers:
        if not layer.weights or layer.__class__.__name__ == "Normalization":
            continue
        found = weights.get(layer.name)
        if found is None:
            raise ModelError(f"{onnx_path}: no weights for layer {layer.name} of {model.name}")
        if layer.__class__.__name__ == "BatchNormalization":
            scale, bias = found
            found = [scale, bias, np.zeros_like(bias), np.full_like(bias, 1.0 - layer.epsilon)]
        have = [tuple(w.shape) for w in layer.get_weights()]
        if have != [w.shape for w in found]:
            raise ModelError(
                f"{onnx_path}: layer {layer.name} is {have} in Keras, {[w.shape for w in found]} in ONNX"
            )
        layer.set_weights(found)
        done += 1
    return done


def freeze_batchnorm(model) -> int:
    """Run every BatchNorm of ``model`` in inference mode with its scale and offset fixed; returns how many."""
    n = 0
    for layer in model.layers:
        if layer.__class__.__name__ == "BatchNormalization":
            layer.trainable = False
            n += 1
    return n
