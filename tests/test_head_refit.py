"""Last-layer re-training: a member taken out of a fused graph, a linear correction of its logit written exactly
into two idle units of its Dense-ReLU-Dense head, the group weights, and the whole re-fit on small generated data."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from deepguard.convert.fuse import fuse_members
from deepguard.convert.unfuse import extract_member
from deepguard.errors import ModelError
from deepguard.training.head import (
    find_head,
    fit_residual,
    group_weights,
    idle_units,
    pooled_features,
    with_residual,
)

C = 4  # pooled feature width of the tiny member


def _member(size: int, seed: int, hidden: int = 6) -> onnx.ModelProto:
    """float NHWC [N,S,S,3] -> 1x1 conv (C channels) -> ReLU -> GlobalAveragePool -> Squeeze -> Dense(H) -> ReLU
    -> Dense(1): the shape of a real member's end, with random weights."""
    rng = np.random.default_rng(seed)

    def init(name: str, shape: tuple[int, ...], scale: float = 0.05) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.normal(0, scale, shape).astype(np.float32), name)

    inits = [
        init("conv_w", (C, 3, 1, 1)),
        init("w0", (C, hidden), 0.5),
        init("b0", (hidden,)),
        init("w1", (hidden, 1), 0.5),
        init("b1", (1,)),
        numpy_helper.from_array(np.array([2, 3], np.int64), "axes"),
    ]
    nodes = [
        helper.make_node("Transpose", ["x"], ["nchw"], perm=[0, 3, 1, 2], name="to_nchw"),
        helper.make_node("Conv", ["nchw", "conv_w"], ["c"], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu_c"),
        helper.make_node("GlobalAveragePool", ["r"], ["gap"], name="gap"),
        helper.make_node("Squeeze", ["gap", "axes"], ["pooled"], name="squeeze"),
        helper.make_node("MatMul", ["pooled", "w0"], ["h"], name="dense0"),
        helper.make_node("Add", ["h", "b0"], ["hb"], name="dense0_bias"),
        helper.make_node("Relu", ["hb"], ["hr"], name="dense0_relu"),
        helper.make_node("MatMul", ["hr", "w1"], ["z"], name="logit_mm"),
        helper.make_node("Add", ["z", "b1"], ["logit"], name="logit_add"),
    ]
    graph = helper.make_graph(
        nodes,
        "member",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", size, size, 3])],
        [helper.make_tensor_value_info("logit", TensorProto.FLOAT, ["N", 1])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _run(model: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"image": x}), strict=True))


def _pooled_reference(model: onnx.ModelProto, crops: np.ndarray) -> np.ndarray:
    """The tiny member's pooled features computed with numpy from its conv weights (independent of onnxruntime)."""
    w = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name.endswith("conv_w")))[
        :, :, 0, 0
    ]
    return np.maximum(crops.astype(np.float64) @ w.T, 0).mean(axis=(1, 2))


@pytest.fixture
def crops() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (20, 16, 16, 3), np.uint8)


def test_extract_member_refuses_to_the_same_graph(crops) -> None:
    fused = fuse_members([(_member(16, 1), 1.0, "tiny")], None, 16, temperature=1.3)
    member, name, weight = extract_member(fused)
    assert (name, weight) == ("tiny", 1.0)
    assert not any(n.name.startswith("m0_") for n in member.graph.node)
    again = fuse_members([(member, weight, name)], None, 16, temperature=1.3)
    a, b = _run(fused, crops), _run(again, crops)
    np.testing.assert_array_equal(a["prob"], b["prob"])
    np.testing.assert_array_equal(a["member_probs"], b["member_probs"])
    with pytest.raises(ModelError, match="no member 1"):
        extract_member(fused, 1)


def _head_logit(model: onnx.ModelProto, feats: np.ndarray, skip: tuple[int, ...] = ()) -> np.ndarray:
    """The tiny head's logit computed with numpy from its initialisers (units in ``skip`` left out)."""
    w = {i.name.split("/")[-1]: numpy_helper.to_array(i) for i in model.graph.initializer}
    h = np.maximum(feats.astype(np.float64) @ w["w0"] + w["b0"], 0)
    keep = np.ones(h.shape[1], bool)
    keep[list(skip)] = False
    return (h[:, keep] @ w["w1"][keep] + w["b1"]).reshape(-1)


def test_residual_is_written_exactly_into_idle_units(crops, tmp_path) -> None:
    model = _member(16, 2)
    inits = {i.name: i for i in model.graph.initializer}
    w0 = np.abs(numpy_helper.to_array(inits["w0"]))
    w0[:, [1, 4]] = -1.0  # two units that never fire on non-negative pooled features...
    inits["w0"].CopyFrom(numpy_helper.from_array(w0, "w0"))
    b0 = np.where(np.isin(np.arange(w0.shape[1]), [1, 4]), 0.0, 1.0).astype(
        np.float32
    )  # ...the rest always do
    inits["b0"].CopyFrom(numpy_helper.from_array(b0, "b0"))
    w1 = np.array([[0.5], [0.7], [-0.6], [0.8], [0.9], [-0.5]], np.float32)  # every unit counts in the logit
    inits["w1"].CopyFrom(numpy_helper.from_array(w1, "w1"))
    fused = fuse_members([(model, 1.0, "tiny")], None, 16)
    path = tmp_path / "fused.onnx"
    onnx.save(fused, str(path))
    feats, base = pooled_features(path, crops, batch=7)
    np.testing.assert_allclose(feats, _pooled_reference(fused, crops), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(base, _head_logit(model, feats), atol=1e-5)
    member, name, _ = extract_member(fused)
    units = idle_units(member, feats)
    assert sorted(units.tolist()) == [1, 4]
    coef, bias = np.array([0.3, -0.2, 0.05, 0.1], np.float32), -1.5
    refit = fuse_members([(with_residual(member, coef, bias, units), 1.0, name)], None, 16)
    z = _head_logit(model, feats, skip=(1, 4)) + feats.astype(np.float64) @ coef + bias
    np.testing.assert_allclose(_run(refit, crops)["member_probs"][:, 0], 1 / (1 + np.exp(-z)), atol=1e-6)
    assert np.ptp(feats @ coef) > 0.1  # the correction is visible: the test can tell heads apart
    np.testing.assert_allclose(_run(fused, crops)["member_probs"][:, 0], 1 / (1 + np.exp(-base)), atol=1e-6)


def test_head_shape_is_checked() -> None:
    model = _member(16, 3)
    with pytest.raises(ModelError, match="2 units"):
        with_residual(model, np.zeros(C, np.float32), 0.0, np.array([1, 1]))
    no_pool = _member(16, 3)
    for n in no_pool.graph.node:
        if n.op_type == "GlobalAveragePool":
            n.op_type = "GlobalMaxPool"
    with pytest.raises(ModelError, match="GlobalAveragePool"):
        find_head(no_pool)


def test_group_weights_balance_classes_self_blends_and_sources() -> None:
    labels = np.array([0] * 90 + [0] * 10 + [1] * 40 + [1] * 60 + [1] * 30)
    groups = ["a"] * 90 + ["b"] * 10 + ["a"] * 40 + ["c"] * 60 + ["a"] * 30
    sbi = np.array([False] * 200 + [True] * 30)
    w = group_weights(labels, groups, sbi, 1 / 3)
    assert w.mean() == pytest.approx(1.0)
    total = w.sum()
    g = np.asarray(groups)
    assert w[labels == 0].sum() / total == pytest.approx(0.5)
    assert w[sbi].sum() / total == pytest.approx(0.5 / 3)
    real_a, real_b = w[(labels == 0) & (g == "a")].sum(), w[(labels == 0) & (g == "b")].sum()
    assert real_a == pytest.approx(real_b)  # 90 faces weigh what 10 faces weigh
    fake_a, fake_c = (w[(labels == 1) & ~sbi & (g == x)].sum() for x in ("a", "c"))
    assert fake_a == pytest.approx(fake_c)


def test_fit_residual_corrects_the_base_logit_in_raw_feature_units() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(0, 1, (600, 3)) * [1.0, 50.0, 0.01] + [0.0, 100.0, 5.0]
    y = (x[:, 0] + rng.normal(0, 0.3, 600) > 0).astype(int)
    base = np.where(rng.random(600) < 0.5, 2.0, -2.0)  # a base logit that knows nothing
    coef, bias = fit_residual(x, base, y, np.ones(len(y)), l2=1e-3)
    z = base + x @ coef + bias
    assert np.mean((z > 0) == (y == 1)) > 0.85
    assert abs(coef[0]) > 10 * abs(coef[1])  # the informative feature, in raw units
    # a strong penalty keeps the correction small: the base logit stays in charge
    strong, _ = fit_residual(x, base, y, np.ones(len(y)), l2=100.0)
    assert np.abs(strong * x.std(0)).max() < 0.1 * np.abs(coef * x.std(0)).max()


def test_refit_head_end_to_end(tmp_path, astronaut) -> None:
    """The whole re-fit on generated files: features, self-blends, regression, rebuild, calibration, parity."""
    import json

    from deepguard.convert.metadata import read_metadata, write_metadata
    from deepguard.training.refit import REFIT_SUFFIX, refit_head

    from .test_sources import write_sourced_data

    manifest, extra = write_sourced_data(tmp_path / "data", astronaut)
    fused = fuse_members([(_member(48, 7), 1.0, "tiny")], None, 48)
    meta = {
        "name": "tiny",
        "version": "1",
        "threshold": 0.5,
        "crop_context": -0.015,
        "training_data": "generated",
    }
    write_metadata(fused, {**meta, "uncertain_low": 0.4, "uncertain_high": 0.5})
    src = tmp_path / "tiny.fp32.onnx"
    onnx.save(fused, str(src))
    out = refit_head(
        src,
        {"recipe": {"input_size": 48}},
        [manifest, extra],
        tmp_path / "refit",
        input_size=48,
        cache_dir=tmp_path / "cache",
    )
    assert out["head_refit"]["self_blends"] > 0 and out["head_refit"]["train_faces"] > 0
    report = json.loads((tmp_path / "refit" / "onnx" / "parity.json").read_text())
    assert report["checks"]["head_vs_regression"]["passed"], report["checks"]
    for precision in ("fp32", "int8"):
        m = read_metadata(out["files"][precision])
        assert m["version"] == "1" + REFIT_SUFFIX and float(m["crop_context"]) == -0.015
        assert float(m["threshold"]) == pytest.approx(out["threshold"])
        assert m["precision"] == precision
    assert out["recipe"] == {"input_size": 48}  # the source model's summary is carried over
    assert {r["source"] for r in out["by_source"]["int8"]} >= {"photos", "swap"}
    # the head changed: the re-fitted graph scores the val crops differently from the source graph
    x = np.random.default_rng(1).integers(0, 256, (8, 48, 48, 3), np.uint8)
    new = ort.InferenceSession(out["files"]["fp32"], providers=["CPUExecutionProvider"]).run(
        None, {"image": x}
    )
    assert np.abs(new[1] - _run(fused, x)["member_probs"]).max() > 1e-3
