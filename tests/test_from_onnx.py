"""A shipped fused graph gives back its member as Keras weights (BatchNorms folded), exactly, and training it
further keeps the folded BatchNorms fixed."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
ort = pytest.importorskip("onnxruntime")

from deepguard.errors import ModelError  # noqa: E402
from deepguard.models.from_onnx import freeze_batchnorm, member_from_fused  # noqa: E402
from deepguard.models.members import EDGE_HEAD, build_edge_member  # noqa: E402
from deepguard.runtime.classify import default_model_path  # noqa: E402

SHIPPED = default_model_path("fp32")


def _member():
    return build_edge_member("mobilenet_v2", 160, EDGE_HEAD, backbone_size=128)


def _crops() -> np.ndarray:
    """Noise and smooth gradients: different activation ranges, no data needed."""
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (4, 160, 160, 3))
    ramp = np.linspace(0, 255, 160)
    smooth = np.stack(
        [
            np.stack(np.broadcast_arrays(ramp[:, None], ramp[None, :] * k % 256, 255 - ramp[:, None]), -1)
            for k in (1, 3)
        ]
    )
    return np.concatenate([noise, smooth]).astype(np.uint8)


def test_shipped_member_recovered_exactly() -> None:
    model = _member()
    assert member_from_fused(SHIPPED, model) > 100
    x = _crops()
    sess = ort.InferenceSession(str(SHIPPED), providers=["CPUExecutionProvider"])
    want = sess.run(["member_probs"], {"image": x})[0][:, 0]
    got = 1 / (1 + np.exp(-model(x.astype(np.float32), training=False).numpy()[:, 0]))
    assert np.abs(got - want).max() < 1e-5
    assert np.ptp(want) > 0.01  # the inputs do tell members apart


def test_fresh_member_is_not_the_shipped_one() -> None:
    """Negative control for the parity above: without the weights the member answers differently."""
    x = _crops()
    sess = ort.InferenceSession(str(SHIPPED), providers=["CPUExecutionProvider"])
    want = sess.run(["member_probs"], {"image": x})[0][:, 0]
    got = 1 / (1 + np.exp(-_member()(x.astype(np.float32), training=False).numpy()[:, 0]))
    assert np.abs(got - want).max() > 1e-3


def test_training_on_keeps_folded_batchnorms() -> None:
    model = _member()
    member_from_fused(SHIPPED, model)
    assert freeze_batchnorm(model) == 52
    bn = model.get_layer("features.5.conv.1.1")
    conv = model.get_layer("features.5.conv.0.0")
    before_bn = [w.copy() for w in bn.get_weights()]
    before_conv = conv.get_weights()[0].copy()
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.BinaryCrossentropy(from_logits=True)
    )
    x = _crops().astype(np.float32)
    model.train_on_batch(x, np.ones((len(x), 1), np.float32))
    for a, b in zip(before_bn, bn.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert np.abs(conv.get_weights()[0] - before_conv).max() > 0


def test_other_architecture_named() -> None:
    with pytest.raises(ModelError, match="layer"):
        member_from_fused(SHIPPED, build_edge_member("efficientnet_lite0", 160, EDGE_HEAD))


def test_not_a_fused_graph(tmp_path) -> None:
    onnx = pytest.importorskip("onnx")
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    path = tmp_path / "plain.onnx"
    onnx.save(onnx.helper.make_model(graph), str(path))
    with pytest.raises(ModelError, match="plain.onnx"):
        member_from_fused(path, _member())
