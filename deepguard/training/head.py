"""Last-layer re-training: a linear correction of a trained member's logit, fitted on its frozen pooled features.

Why: the member's Dense head is trained with the backbone, batch by batch, in a mix where DFDC is 64 % of every
batch, and stops when the wall-clock budget ends (v8: train AUC 0.899, val 0.902 - underfit, not overfit). Its
pooled features hold more than that head reads out. A logistic regression on them, with the head's own logit as a
fixed offset, an L2 penalty (:data:`HEAD_L2`), every (source, class) group weighing the same (Kirichenko et al.,
ICLR 2023: "Last layer re-training is sufficient for robustness to spurious correlations") and self-blends of
every real source making a third of the fake weight, changed v8's shipped INT8 graph on validation as follows (at
each graph's own false-alarm cut: no real val source over 5 % called fake):

- DFDC face swaps called fake 34.6 % -> 41.2 %, DFDC real faces called fake 0.7 % -> 1.6 %; DFDC AUC 0.877 -> 0.878.
- Self-blend probe 0.956 -> 0.966; Unsplash AUC 0.894 -> 0.905, UTKFace 0.914 -> 0.920.
- GAN AUC 0.007-0.014 lower (StyleGAN3 0.946 -> 0.932); DFDC crops as stored 0.877 -> 0.872.

Graph surgery, not a new layer: the head keeps its Dense(H) -> ReLU -> Dense(1) shape, and the correction
``d = w.f + b`` is written exactly as ``relu(d) - relu(-d)`` into two hidden units that never fire (v8: 204 of
256). So the graph, its conversion path and the runtime stay the same.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from deepguard.errors import ModelError

#: L2 strength on the standardised correction's coefficients. Chosen among 0.1 / 0.01 / 0.001 on v8's validation
#: sources: the strongest keeps DFDC's AUC (0.877) and the GAN hit rates while the other gains hold.
HEAD_L2 = 0.1


@dataclass(frozen=True)
class Head:
    """Where a member's head sits in a graph: the pooled feature tensor and the four head initialisers."""

    pooled: str  # (N, D) features the head reads
    w0: str  # (D, H)
    b0: str  # (H,)
    w1: str  # (H, 1)
    b1: str  # (1,)
    logit: str  # (N, 1) the member's logit


def find_head(model: onnx.ModelProto) -> Head:
    """The Dense -> ReLU -> Dense head after the (only) global average pool, or a :class:`ModelError`."""
    nodes = list(model.graph.node)
    inits = {i.name for i in model.graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in nodes:
        for x in n.input:
            consumers.setdefault(x, []).append(n)
    pools = [n for n in nodes if n.op_type == "GlobalAveragePool"]
    if len(pools) != 1:
        raise ModelError(f"head re-fit needs exactly one GlobalAveragePool, found {len(pools)}")

    def only_next(tensor: str, op: str) -> onnx.NodeProto:
        nxt = consumers.get(tensor, [])
        if len(nxt) != 1 or nxt[0].op_type != op:
            found = [c.op_type for c in nxt]
            raise ModelError(f"head re-fit: expected one {op} after {tensor!r}, found {found}")
        return nxt[0]

    def weight(node: onnx.NodeProto) -> str:
        w = [x for x in node.input if x in inits]
        if len(w) != 1:
            raise ModelError(f"head re-fit: {node.name} has no single constant operand")
        return w[0]

    pooled = only_next(pools[0].output[0], "Squeeze").output[0]
    mm0 = only_next(pooled, "MatMul")
    add0 = only_next(mm0.output[0], "Add")
    relu = only_next(add0.output[0], "Relu")
    mm1 = only_next(relu.output[0], "MatMul")
    add1 = only_next(mm1.output[0], "Add")
    return Head(pooled, weight(mm0), weight(add0), weight(mm1), weight(add1), add1.output[0])


def pooled_features(
    model_path: str | Path, crops: np.ndarray, batch: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """``(features (N, D) float32, member logits (N,) float64)`` of a one-member fused graph on uint8 crops."""
    import onnxruntime as ort

    model = onnx.load(str(model_path))
    head = find_head(model)
    for name in (head.pooled, head.logit):
        model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feats, logits = [], []
    for i in range(0, len(crops), batch):
        f, z = sess.run([head.pooled, head.logit], {"image": np.ascontiguousarray(crops[i : i + batch])})
        feats.append(f)
        logits.append(z.reshape(-1))
    return np.concatenate(feats).astype(np.float32), np.concatenate(logits).astype(np.float64)


def group_weights(labels: np.ndarray, groups: Sequence[str], sbi: np.ndarray, sbi_share: float) -> np.ndarray:
    """Sample weights (mean 1): real and fake weigh half each; within the fakes the self-blends (``sbi`` True)
    weigh ``sbi_share``; within each of those three parts every group (a source) weighs the same."""
    labels = np.asarray(labels).astype(int)
    groups = np.asarray(groups)
    sbi = np.asarray(sbi, bool)
    parts = [(labels == 0, 0.5), ((labels == 1) & ~sbi, 0.5 * (1 - sbi_share)), (sbi, 0.5 * sbi_share)]
    w = np.zeros(len(labels))
    for part, total in parts:
        names = sorted(set(groups[part].tolist()))
        for g in names:
            m = part & (groups == g)
            w[m] = total / len(names) / m.sum()
    return w * len(w) / w.sum()


def fit_residual(
    features: np.ndarray, base: np.ndarray, labels: np.ndarray, weights: np.ndarray, l2: float = HEAD_L2
) -> tuple[np.ndarray, float]:
    """``(coef (D,), bias)`` of the weighted logistic regression ``base + coef . f + bias`` (the head's own logit
    ``base`` as a fixed offset, L2 ``l2`` on standardised coefficients), in the raw feature space."""
    from scipy.optimize import minimize

    x = np.asarray(features, np.float64)
    mu, sd = x.mean(0), x.std(0) + 1e-6
    z_std = (x - mu) / sd
    y, w, base = np.asarray(labels, np.float64), np.asarray(weights, np.float64), np.asarray(base, np.float64)

    def loss(p: np.ndarray) -> tuple[float, np.ndarray]:
        z = base + z_std @ p[:-1] + p[-1]
        r = w * (1 / (1 + np.exp(-z)) - y) / len(y)
        value = float(np.sum(w * (np.logaddexp(0, z) - y * z)) / len(y) + l2 * p[:-1] @ p[:-1] / 2)
        return value, np.r_[z_std.T @ r + l2 * p[:-1], r.sum()]

    p = minimize(loss, np.zeros(x.shape[1] + 1), jac=True, method="L-BFGS-B", options={"maxiter": 1000}).x
    coef = p[:-1] / sd
    return coef.astype(np.float32), float(p[-1] - (p[:-1] * mu / sd).sum())


def idle_units(model: onnx.ModelProto, features: np.ndarray, k: int = 2) -> np.ndarray:
    """The ``k`` hidden head units that contribute least to the logit on ``features`` (max of |w1| * activation):
    on v8, 204 of 256 never fire on the training crops."""
    head = find_head(model)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    act = np.maximum(np.asarray(features, np.float64) @ inits[head.w0] + inits[head.b0], 0)
    use = (act * np.abs(inits[head.w1].reshape(-1))).max(axis=0)
    return np.argsort(use, kind="stable")[:k]


def with_residual(
    model: onnx.ModelProto, coef: np.ndarray, bias: float, units: np.ndarray
) -> onnx.ModelProto:
    """A copy of ``model`` whose logit gains ``coef . f + bias``, written as ``relu(d) - relu(-d)`` into two idle
    hidden ``units`` (:func:`idle_units`); every other unit of the head is unchanged."""
    out = copy.deepcopy(model)
    head = find_head(out)
    inits = {i.name: i for i in out.graph.initializer}
    arrays = {n: numpy_helper.to_array(inits[n]).copy() for n in (head.w0, head.b0, head.w1)}
    w0 = arrays[head.w0]
    if w0.ndim != 2 or w0.shape[0] != len(coef) or len(set(np.asarray(units).tolist())) != 2:
        raise ModelError(f"head re-fit: first head layer is {w0.shape}, needs ({len(coef)}, H) and 2 units")
    u, v = (int(x) for x in units)
    w0[:, u], w0[:, v] = coef, -np.asarray(coef)
    arrays[head.b0][u], arrays[head.b0][v] = bias, -bias
    w1 = arrays[head.w1].reshape(-1)
    w1[u], w1[v] = 1.0, -1.0
    for name, value in arrays.items():
        inits[name].CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))
    return out


__all__ = [
    "HEAD_L2",
    "Head",
    "find_head",
    "fit_residual",
    "group_weights",
    "idle_units",
    "pooled_features",
    "with_residual",
]
