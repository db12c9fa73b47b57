"""Detector members: an ImageNet backbone + the origin project's classification head, emitting ONE logit.

Profiles:
- ``edge`` (default): MobileNetV2 and EfficientNet-Lite0, ImageNet weights imported from PyTorch checkpoints.
- ``seed``: the origin project's Xception (max pooling) and EfficientNetV2-M (avg pooling) at 299 px, with Keras'
  ImageNet weights when they are already cached locally, else random init (nothing is downloaded).

Convention shared with ``deepguard.convert``: input float32 NHWC RGB in [0, 255], output logit (N, 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras
from keras import layers, regularizers

from deepguard.models.edge import BACKBONES, imagenet_classifier, imagenet_normalization


@dataclass(frozen=True)
class HeadConfig:
    """The origin document's head: Dense 1024-512-512-512 ReLU, dropout 0.5, L2 1e-3, then one logit."""

    units: tuple[int, ...] = (1024, 512, 512, 512)
    dropout: float = 0.5
    l2: float = 1e-3


# The default edge model's lighter head. Why: with the origin head (four Dense layers, dropout 0.5 each, L2 1e-3)
# the L2 term is ~4x the cross-entropy at the start and the first CPU epochs mostly shrink weights. Measured on
# DFDC val after one 9.6k-crop epoch of MobileNetV2 @160: AUC 0.709 (origin head) vs 0.763 (this head); the edge
# budget is only a few epochs on 2 cores. The seed profile keeps the origin head.
EDGE_HEAD = HeadConfig(units=(256,), dropout=0.5, l2=1e-4)


def add_head(x, cfg: HeadConfig):
    reg = regularizers.L2(cfg.l2) if cfg.l2 else None
    for i, u in enumerate(cfg.units):
        x = layers.Dense(u, activation="relu", kernel_regularizer=reg, name=f"head.dense{i}")(x)
        if cfg.dropout:
            x = layers.Dropout(cfg.dropout, name=f"head.drop{i}")(x)
    return layers.Dense(1, name="logit", dtype="float32")(x)


def build_edge_member(
    arch: str,
    input_size: int = 224,
    head: HeadConfig = HeadConfig(),
    imagenet_weights: str | Path | None = None,
    backbone_size: int | None = None,
) -> keras.Model:
    """Edge member; ``imagenet_weights`` is a ``.weights.h5`` written by ``deepguard import-weights``.

    ``backbone_size`` (default ``input_size``): the backbone runs on the crop resized to this size *inside* the
    member (bilinear, half-pixel, no antialias: the fused graph's own resize), so a member can take the runtime's
    crops as they are and still cost only the FLOPs of its smaller resolution.
    """
    if arch not in BACKBONES:
        raise ValueError(f"unknown edge backbone {arch!r}; choose one of {sorted(BACKBONES)}")
    features, _ = BACKBONES[arch]
    inp = keras.Input((input_size, input_size, 3), name="pixels")
    x = inp
    if backbone_size and backbone_size != input_size:
        x = layers.Resizing(backbone_size, backbone_size, interpolation="bilinear", name="backbone_resize")(x)
    x = imagenet_normalization()(x)
    x = features(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    out = add_head(x, head)
    model = keras.Model(inp, out, name=arch)
    if imagenet_weights:
        ref = imagenet_classifier(arch, input_size)
        ref.load_weights(str(imagenet_weights))
        by_name = {layer.name: layer for layer in ref.layers}
        copied = 0
        for layer in model.layers:
            src = by_name.get(layer.name)
            if src is not None and src.weights and not layer.name.startswith("head."):
                layer.set_weights(src.get_weights())
                copied += 1
        if copied < 50:
            raise ValueError(f"{imagenet_weights}: only {copied} layers matched backbone {arch}")
    return model


def build_seed_member(
    arch: str, input_size: int = 299, head: HeadConfig = HeadConfig(), imagenet: bool = True
) -> keras.Model:
    """Origin-project member (Xception max-pool / EfficientNetV2-M avg-pool) with Keras' own preprocessing."""
    from keras import applications as apps

    weights = "imagenet" if imagenet and _keras_weights_cached(arch) else None
    inp = keras.Input((input_size, input_size, 3), name="pixels")
    if arch == "xception":
        x = layers.Rescaling(1 / 127.5, offset=-1.0, name="xception_scale")(inp)
        base = apps.Xception(
            include_top=False, weights=weights, input_shape=(input_size, input_size, 3), pooling="max"
        )
    elif arch == "efficientnetv2_m":
        x = layers.Rescaling(1 / 127.5, offset=-1.0, name="effv2_scale")(inp)
        base = apps.EfficientNetV2M(
            include_top=False,
            weights=weights,
            input_shape=(input_size, input_size, 3),
            pooling="avg",
            include_preprocessing=False,
        )
    else:
        raise ValueError(f"unknown seed backbone {arch!r}; choose xception or efficientnetv2_m")
    out = add_head(base(x), head)
    return keras.Model(inp, out, name=arch)


def _keras_weights_cached(arch: str) -> bool:
    """True when Keras' ImageNet weights for ``arch`` are already in ~/.keras/models (we never download)."""
    d = (
        Path(keras.config.keras_home() if hasattr(keras.config, "keras_home") else Path.home() / ".keras")
        / "models"
    )
    pat = {
        "xception": "xception_weights_tf_dim_ordering_tf_kernels_notop*",
        "efficientnetv2_m": "efficientnetv2-m_notop*",
    }[arch]
    return d.is_dir() and any(d.glob(pat))
