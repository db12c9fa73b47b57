"""Training augmentations as TensorFlow ops (run inside tf.data, in parallel with the model).

Why these: the origin recipe's flips/shifts/zoom/rotation, plus what the deepfake-detection literature finds
makes detectors survive real-world media: re-compression (JPEG quality 30-95), blur, down-/up-scaling, sensor
noise and colour shifts. Without them a detector learns the training set's compression fingerprint and collapses
on other sources. Every op takes and returns float32 pixels in [0, 255].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import tensorflow as tf


@dataclass(frozen=True)
class AugmentConfig:
    flip: float = 0.5
    rotate_deg: float = 10.0
    # >1 zooms in; <1 shows more context (reflect padding). Up to 1.6: a face-crop file (DFDC, UTKFace: the face
    # fills the frame) scored as is is framed ~1.5x tighter than the runtime's 30 % margin crop; both must work.
    zoom: tuple[float, float] = (0.85, 1.6)
    shift: float = 0.06  # fraction of the side
    # Always re-encode, last: the training files' own compression differs by source (faces-extra: real sources
    # and DFDC at quality 75, generated.photos and StyleGAN3 at 90), so a crop left as stored would let "cleaner
    # than q75" mean fake; the last encoder has to be ours, with one quality distribution for both classes.
    p_jpeg: float = 1.0
    jpeg_quality: tuple[int, int] = (30, 95)
    p_blur: float = 0.2
    blur_sigma: tuple[float, float] = (0.3, 1.5)
    p_downscale: float = 0.25
    downscale: tuple[float, float] = (0.35, 0.9)
    p_color: float = 0.8
    # Black and white, for both classes: 20 % of Unsplash's and 1 % of UTKFace's faces are B/W photos and no fake
    # source has one, so without it "grey" means real (v8 on desaturated val: 49 % of fakes called real).
    p_grey: float = 0.1
    p_noise: float = 0.15
    noise_std: tuple[float, float] = (1.0, 8.0)
    p_cutout: float = 0.2
    cutout: tuple[float, float] = (0.15, 0.35)  # side of the erased box, fraction of the crop side


def _uniform(lo: float, hi: float) -> tf.Tensor:
    return tf.random.uniform([], lo, hi)


def _coin(p: float) -> tf.Tensor:
    return tf.random.uniform([]) < p


def geometric(img: tf.Tensor, cfg: AugmentConfig) -> tf.Tensor:
    """One projective warp = rotation + zoom + shift (+ horizontal flip), bilinear, reflect padding."""
    size = tf.cast(tf.shape(img)[0], tf.float32)
    ang = _uniform(-cfg.rotate_deg, cfg.rotate_deg) * math.pi / 180.0
    zoom = _uniform(*cfg.zoom)
    flip = tf.where(_coin(cfg.flip), -1.0, 1.0)
    tx, ty = _uniform(-cfg.shift, cfg.shift) * size, _uniform(-cfg.shift, cfg.shift) * size
    c = (size - 1.0) / 2.0
    cos, sin = tf.cos(ang) / zoom, tf.sin(ang) / zoom
    # Output pixel (x, y) samples input at A @ (x - c, y - c) + c + t (inverse map, as the op expects).
    a0, a1 = cos * flip, -sin
    b0, b1 = sin * flip, cos
    t = tf.stack([a0, a1, c - a0 * c - a1 * c + tx, b0, b1, c - b0 * c - b1 * c + ty, 0.0, 0.0])
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=img[None],
        transforms=t[None],
        output_shape=tf.shape(img)[:2],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="REFLECT",
    )
    return out[0]


def jpeg(img: tf.Tensor, cfg: AugmentConfig) -> tf.Tensor:
    q = tf.random.uniform([], cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1, dtype=tf.int32)
    u8 = tf.cast(tf.clip_by_value(tf.round(img), 0, 255), tf.uint8)
    return tf.cast(tf.image.adjust_jpeg_quality(u8, q), tf.float32)


def gaussian_blur(img: tf.Tensor, sigma: tf.Tensor) -> tf.Tensor:
    """Separable Gaussian blur (radius 3) as two depthwise convolutions."""
    x = tf.range(-3, 4, dtype=tf.float32)
    k = tf.exp(-(x**2) / (2.0 * sigma**2))
    k = k / tf.reduce_sum(k)
    kx = tf.tile(tf.reshape(k, [1, 7, 1, 1]), [1, 1, 3, 1])
    ky = tf.tile(tf.reshape(k, [7, 1, 1, 1]), [1, 1, 3, 1])
    y = tf.pad(img[None], [[0, 0], [3, 3], [3, 3], [0, 0]], mode="REFLECT")
    y = tf.nn.depthwise_conv2d(y, kx, [1, 1, 1, 1], "VALID")
    y = tf.nn.depthwise_conv2d(y, ky, [1, 1, 1, 1], "VALID")
    return y[0]


def downscale(img: tf.Tensor, cfg: AugmentConfig) -> tf.Tensor:
    size = tf.shape(img)[:2]
    f = _uniform(*cfg.downscale)
    small = tf.maximum(tf.cast(tf.cast(size, tf.float32) * f, tf.int32), 8)
    x = tf.image.resize(img, small, method="area")
    return tf.image.resize(x, size, method="bilinear")


def color(img: tf.Tensor) -> tf.Tensor:
    x = img / 255.0
    x = tf.image.random_brightness(x, 0.12)
    x = tf.image.random_contrast(x, 0.8, 1.2)
    x = tf.image.random_saturation(x, 0.75, 1.25)
    x = tf.image.random_hue(x, 0.03)
    return tf.clip_by_value(x, 0.0, 1.0) * 255.0


def grey(img: tf.Tensor) -> tf.Tensor:
    """Black and white (ITU-R 601 luma in all three channels)."""
    return tf.tile(tf.image.rgb_to_grayscale(img), [1, 1, 3])


def cutout(img: tf.Tensor, cfg: AugmentConfig) -> tf.Tensor:
    """Erase one box (grey) centred in the middle 60 % of the crop, where eyes, nose and mouth are.

    Why: forces the model to use evidence spread over the whole face instead of one part (the DFDC winner's
    part-dropout idea); a swap's artefacts are rarely confined to a single feature.
    """
    size = tf.shape(img)[0]
    sf = tf.cast(size, tf.float32)
    side = _uniform(*cfg.cutout) * sf
    cy, cx = _uniform(0.2, 0.8) * sf, _uniform(0.2, 0.8) * sf
    r = tf.cast(tf.range(size), tf.float32)
    inside_y = tf.abs(r - cy) < side / 2
    inside_x = tf.abs(r - cx) < side / 2
    box = tf.logical_and(inside_y[:, None], inside_x[None, :])[..., None]
    return tf.where(box, tf.fill(tf.shape(img), 127.5), img)


def augment(img_u8: tf.Tensor, cfg: AugmentConfig = AugmentConfig()) -> tf.Tensor:
    """Full chain for one uint8 (S, S, 3) crop -> float32 [0, 255]."""
    x = tf.cast(img_u8, tf.float32)
    x = geometric(x, cfg)
    x = tf.cond(_coin(cfg.p_downscale), lambda: downscale(x, cfg), lambda: x)
    x = tf.cond(_coin(cfg.p_blur), lambda: gaussian_blur(x, _uniform(*cfg.blur_sigma)), lambda: x)
    x = tf.cond(_coin(cfg.p_color), lambda: color(x), lambda: x)
    x = tf.cond(_coin(cfg.p_grey), lambda: grey(x), lambda: x)
    x = tf.cond(
        _coin(cfg.p_noise),
        lambda: tf.clip_by_value(x + tf.random.normal(tf.shape(x)) * _uniform(*cfg.noise_std), 0, 255),
        lambda: x,
    )
    x = tf.cond(_coin(cfg.p_cutout), lambda: cutout(x, cfg), lambda: x)
    x = tf.cond(_coin(cfg.p_jpeg), lambda: jpeg(x, cfg), lambda: x)
    x.set_shape(img_u8.shape)
    return x
