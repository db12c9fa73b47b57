"""Member models: the origin head, one logit out, seed and edge profiles build and run."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from deepguard.models.members import HeadConfig, build_edge_member, build_seed_member  # noqa: E402


def _dense_units(model) -> list[int]:
    return [layer.units for layer in model.layers if isinstance(layer, keras.layers.Dense)]


def test_origin_head_structure() -> None:
    m = build_edge_member("mobilenet_v2", 64)
    assert _dense_units(m) == [1024, 512, 512, 512, 1]
    drops = [layer.rate for layer in m.layers if isinstance(layer, keras.layers.Dropout)]
    assert drops == [0.5] * 4
    reg = m.get_layer("head.dense0").kernel_regularizer
    assert float(reg.l2) == pytest.approx(1e-3)
    out = m(np.random.default_rng(0).uniform(0, 255, (3, 64, 64, 3)).astype(np.float32), training=False)
    assert out.shape == (3, 1)


@pytest.mark.parametrize(
    "arch,pool",
    [
        ("xception", keras.layers.GlobalMaxPooling2D),
        ("efficientnetv2_m", keras.layers.GlobalAveragePooling2D),
    ],
)
def test_seed_members_build(arch: str, pool) -> None:
    m = build_seed_member(arch, 96, HeadConfig(), imagenet=False)
    base = m.layers[2]
    assert any(isinstance(layer, pool) for layer in base.layers)
    assert m.output.shape[-1] == 1


def test_imagenet_weights_are_copied(tmp_path) -> None:
    pytest.importorskip("torch")
    from deepguard.models.import_weights import import_backbone

    w = import_backbone("efficientnet_lite0", tmp_path / "lite0.weights.h5", 96)
    a = build_edge_member("efficientnet_lite0", 96, imagenet_weights=w)
    b = build_edge_member("efficientnet_lite0", 96)
    wa, wb = a.get_layer("_conv_stem").get_weights()[0], b.get_layer("_conv_stem").get_weights()[0]
    assert not np.allclose(wa, wb)
    from deepguard.models.import_weights import load_state_dict

    ref = load_state_dict("efficientnet_lite0")["_conv_stem.weight"].transpose(2, 3, 1, 0)
    assert np.allclose(wa, ref)


def test_unknown_backbone() -> None:
    with pytest.raises(ValueError, match="unknown"):
        build_edge_member("resnet9000")


def test_backbone_size_resizes_inside_the_member(tmp_path) -> None:
    """A member at backbone 48 px on 64 px crops equals the 48 px member fed tf.image.resize'd crops (the fused
    graph's own resize: bilinear, half-pixel, no antialias), and its ONNX file takes the 64 px crops."""
    import onnxruntime as ort
    import tensorflow as tf

    from deepguard.convert import keras_to_onnx

    head = HeadConfig(units=(8,), dropout=0.0, l2=0.0)
    small = build_edge_member("mobilenet_v2", 64, head, backbone_size=48)
    ref = build_edge_member("mobilenet_v2", 48, head)
    assert small.get_layer("backbone_resize") is not None
    ref.set_weights(small.get_weights())  # the resize has no weights: same layers, same order
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 255, (4, 64, 64, 3)).astype(np.float32)
    want = ref(tf.image.resize(x, (48, 48), method="bilinear", antialias=False), training=False).numpy()
    got = small(x, training=False).numpy()
    assert np.max(np.abs(got - want)) <= 1e-4
    assert np.std(want) > 0  # not a constant: the comparison can fail

    path = keras_to_onnx(small, tmp_path / "m.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape[1:] == [64, 64, 3]
    onnx_out = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    assert np.max(np.abs(onnx_out - got)) <= 1e-4
