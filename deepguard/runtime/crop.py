"""Crop stage: square, margin-padded face crops resized to the classifier's input size.

The classifier was trained on MTCNN-style crops (the origin project): a square around the face with 30 %
of the face size added on every side, so hair line, ears and chin edge - where blending artefacts of
face swaps live - are inside the crop. Inference must reproduce that geometry exactly.

The default model was also trained with *mirrored context* (:mod:`deepguard.training.recrop` says why): only a
thin band of true pixels around the face (a ``context`` margin), the rest of the 30 % square mirrored from it.
A model that never saw true background past that band scores it as unusual: on insightface's real group photo,
v8's six faces scored 0.31-0.85 with true context and 0.07-0.24 with the training rule. So the crop takes the
model's ``context`` (metadata ``crop_context``) and cuts inference crops with the same function training used.

Every training crop also ended in a JPEG re-encode of the crop itself (quality 30-95, ``training/augment.py``), so
the model only ever saw crops carrying JPEG's 8x8 blocks and halved chroma on the crop's own grid; a crop cut from
a PNG, a sharp photo or a video frame carries none, and the model scores that as unusual too (the scikit-image
astronaut, a real studio portrait: 0.97 as cut, 0.75 after a quality-95 re-encode). So the classifier re-encodes
each crop at the quality the model names (metadata ``crop_jpeg_quality``, :func:`jpeg_roundtrip`) before scoring it.
"""

from __future__ import annotations

import cv2
import numpy as np

#: Fraction of the face size added on *each* side (side = max(w, h) * (1 + 2 * margin)).
DEFAULT_MARGIN = 0.3


def square_boxes(boxes: np.ndarray, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """Square boxes of side ``max(w, h) * (1 + 2 * margin)`` centred on each box's centre.

    ``boxes`` is (N, 4) x1, y1, x2, y2 in frame pixels; returns (N, 4) in the same convention (float32 for
    float32/integer input, float64 stays float64). Negative widths/heights count as 0. No clipping here:
    the result may extend past the frame, :func:`crop_faces` clips.
    """
    b = np.asarray(boxes)
    out_dtype = np.float64 if b.dtype == np.float64 else np.float32
    b = b.astype(np.float64, copy=False).reshape(-1, 4)
    cx = (b[:, 0] + b[:, 2]) * 0.5
    cy = (b[:, 1] + b[:, 3]) * 0.5
    side = np.maximum(np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]), 0.0) * (1.0 + 2.0 * margin)
    half = side * 0.5
    return np.stack([cx - half, cy - half, cx + half, cy + half], axis=1).astype(out_dtype)


def _square_px(boxes: np.ndarray, margin: float) -> np.ndarray:
    """The integer squares (N, 4) float64 ``x1, y1, x2, y2`` before clipping: corner and side each rounded.

    The square is computed in the boxes' own dtype (float32 for detector boxes): rounding a float64 square instead
    shifts the crop by a pixel for boxes whose corner lies within float32 error of .5.
    """
    sq = np.nan_to_num(square_boxes(boxes, margin).astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    x1, y1 = np.rint(sq[:, 0]), np.rint(sq[:, 1])
    side = np.maximum(np.rint(sq[:, 2] - sq[:, 0]), 1.0)
    return np.stack([x1, y1, x1 + side, y1 + side], axis=1)


def crop_boxes_px(boxes: np.ndarray, width: int, height: int, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """Integer pixel rectangles (N, 4) int64 ``x1, y1, x2, y2`` (half-open) that :func:`crop_faces` cuts.

    Rounding: the square's top-left corner and its side are each rounded to the nearest integer
    (``np.rint``, ties to even) and ``x2 = x1 + side`` - so an unclipped crop stays exactly square. The
    rectangle is then clipped to ``[0, width] x [0, height]``; a rectangle that is empty after clipping
    (box outside the frame, zero-size or NaN box) is widened to a 1-pixel minimum at the nearest border
    so degenerate detections never crash the pipeline.
    """
    x1, y1, x2, y2 = _square_px(boxes, margin).T
    # Clip to the frame, then enforce at least one pixel inside it on each axis.
    x1 = np.clip(x1, 0, width - 1)
    y1 = np.clip(y1, 0, height - 1)
    x2 = np.clip(np.maximum(x2, x1 + 1), 1, width)
    y2 = np.clip(np.maximum(y2, y1 + 1), 1, height)
    return np.stack([x1, y1, x2, y2], axis=1).astype(np.int64)


def crop_faces(
    frame: np.ndarray,
    boxes: np.ndarray,
    size: int,
    margin: float = DEFAULT_MARGIN,
    context: float | None = None,
) -> np.ndarray:
    """Cut the margin-padded square around every box and resize it to ``size x size``.

    Returns (N, size, size, 3) uint8 (``(0, size, size, 3)`` for no boxes). Pixel geometry is documented
    in :func:`crop_boxes_px`. With ``context=None`` squares reaching past the frame are clipped (not padded), so
    border faces get a slightly stretched crop, as the origin project's MTCNN crops did. With a ``context``
    margin, only the true pixels inside the ``context``-margin square (and the frame) are kept and the rest of the
    ``margin`` square is mirrored from them: the rule the default model was trained with.
    Resizing uses ``cv2.INTER_AREA`` when the crop is at least ``size`` on both axes (anti-aliased shrinking) and
    ``cv2.INTER_LINEAR`` otherwise (enlarging).
    """
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame must be (H, W, 3), got shape {frame.shape}")
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    img = frame if frame.dtype == np.uint8 else np.clip(frame, 0, 255).astype(np.uint8)
    boxes = np.asarray(boxes).reshape(-1, 4)
    if context is not None:
        outer = _square_px(boxes, margin).astype(np.int64)
        inner = _square_px(boxes, min(context, margin)).astype(np.int64)
        out = np.empty((len(boxes), size, size, 3), np.uint8)
        for i in range(len(boxes)):
            out[i] = _mirrored(img, boxes[i], size, margin, outer[i], inner[i])
        return out
    h, w = img.shape[:2]
    rects = crop_boxes_px(boxes, w, h, margin)
    out = np.empty((len(rects), size, size, 3), np.uint8)
    for i, (x1, y1, x2, y2) in enumerate(rects):
        out[i] = _resized(img[y1:y2, x1:x2], size)
    return out


def _resized(patch: np.ndarray, size: int) -> np.ndarray:
    ph, pw = patch.shape[:2]
    if ph == size and pw == size:
        return patch
    interp = cv2.INTER_AREA if (pw >= size and ph >= size) else cv2.INTER_LINEAR
    return cv2.resize(patch, (size, size), interpolation=interp)


def _mirrored(
    img: np.ndarray, box: np.ndarray, size: int, margin: float, outer: np.ndarray, inner: np.ndarray
) -> np.ndarray:
    """One face's crop with true pixels only inside the context square ``inner``, the rest of ``outer`` mirrored.

    ``outer`` is the ``margin`` square (side ``max(w, h) * (1 + 2 * margin)``), ``inner`` the ``context`` one, both
    integer (:func:`_square_px`, computed for all boxes at once by :func:`crop_faces`). The part of ``outer`` inside
    the frame and inside ``inner`` is cut from ``img``; everything else (beyond the context band, or past the frame)
    is filled by mirroring that part, so the face sits at the same scale in every crop and the border looks the same
    whatever the photo's background or framing. A box whose context square misses the frame gets the clipped crop.
    """
    h, w = img.shape[:2]
    x1, y1, x2, y2 = (int(v) for v in outer)
    cx1, cy1 = max(int(inner[0]), x1, 0), max(int(inner[1]), y1, 0)
    cx2, cy2 = min(int(inner[2]), x2, w), min(int(inner[3]), y2, h)
    if cx2 <= cx1 or cy2 <= cy1:
        return crop_faces(img, np.asarray(box).reshape(1, 4), size, margin)[0]
    patch = img[cy1:cy2, cx1:cx2]
    top, bottom, left, right = cy1 - y1, y2 - cy2, cx1 - x1, x2 - cx2
    if top or bottom or left or right:  # REFLECT_101 is numpy's "reflect" (the edge pixel is not repeated)
        mode = cv2.BORDER_REFLECT_101 if min(patch.shape[:2]) > 1 else cv2.BORDER_REPLICATE
        patch = cv2.copyMakeBorder(patch, top, bottom, left, right, mode)
    return _resized(patch, size)


def jpeg_recode(img: np.ndarray, quality: int) -> np.ndarray:
    """One RGB uint8 image encoded as a baseline JPEG at ``quality`` (4:2:0 chroma, libjpeg's defaults, as
    training's ``tf.image.adjust_jpeg_quality``) and decoded again."""
    # cvtColor, not img[..., ::-1]: OpenCV takes the reversed view through a slow generic copy (0.39 vs 0.16 ms)
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    )
    if not ok:
        raise ValueError(f"JPEG encoding failed for an image of shape {img.shape}")
    return cv2.imdecode(buf, cv2.IMREAD_COLOR_RGB)


def jpeg_roundtrip(crops: np.ndarray, quality: int) -> np.ndarray:
    """Each crop of (N, S, S, 3) RGB uint8 through :func:`jpeg_recode` (module docstring says why)."""
    out = np.empty_like(crops)
    for i, crop in enumerate(crops):
        out[i] = jpeg_recode(crop, quality)
    return out


__all__ = ["DEFAULT_MARGIN", "crop_boxes_px", "crop_faces", "jpeg_recode", "jpeg_roundtrip", "square_boxes"]
