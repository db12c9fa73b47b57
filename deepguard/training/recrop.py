"""Training crops made the way inference makes them: the product's face detector and crop rule on every image.

Why: every source ships its own framing (DFDC: 224 px crops with margin; UTKFace: tight aligned faces; GAN and
Unsplash images: the whole head). Resizing those files as they are lets a classifier learn "this framing = this
label". Here each image goes through the runtime's default detector (BlazeFace) and the runtime's crop function
(:func:`deepguard.runtime.crop.crop_faces`: square, 30 % margin, resize to the model input), so a training crop
frames the face exactly as an inference crop does.

Where the files lack context the crop cannot be cut as at inference: the 30 % margin square reaches past a DFDC,
UTKFace or Unsplash file (their faces reach the frame edge: the largest margin that fits is -0.04 / -0.01 / -0.03
in the median of 100 files each), while it fits in a GAN file (0.13-0.20).
Clipping (the runtime's rule at frame borders) would then zoom those sources in by ~1.5x, and mirror-padding only
them would mark them with mirrored borders: either way the framing tells the source, hence the label. So every
image, of every source, keeps only a thin band of true context (a margin drawn from :data:`CONTEXT_MARGIN`,
seeded per file) and the rest of the margin square is mirrored from it: the face sits at the inference scale and
the mirrored border is the same for every source and both classes. For a face whose square fits in the image and
``context=None`` the pixels are exactly the runtime's crop (tested).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from deepguard.runtime.crop import DEFAULT_MARGIN, crop_faces, square_boxes
from deepguard.runtime.types import FaceBoxes


def pick_face(det: FaceBoxes) -> int | None:
    """Index of the largest detected face (the photo's subject), or None when nothing was found."""
    if len(det) == 0:
        return None
    b = np.asarray(det.boxes, np.float64).reshape(-1, 4)
    return int(np.argmax((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])))


#: Context kept around the face before mirror padding, as a margin drawn per image from this range (see below).
CONTEXT_MARGIN = (-0.06, 0.03)


def _square_px(box: np.ndarray, margin: float) -> np.ndarray:
    """The runtime's integer square (``crop_boxes_px`` rounding) before clipping: x1, y1, x2, y2.

    The square is computed in the box's own dtype, as the runtime does (float32 for detector boxes): rounding a
    float64 square instead shifts the crop by a pixel for boxes whose corner lies within float32 error of .5.
    """
    sq = square_boxes(np.asarray(box).reshape(1, 4), margin)[0].astype(np.float64)
    x1, y1 = np.rint(sq[0]), np.rint(sq[1])
    side = max(np.rint(sq[2] - sq[0]), 1.0)
    return np.array([x1, y1, x1 + side, y1 + side], np.int64)


def training_crop(
    image: np.ndarray,
    box: np.ndarray,
    size: int,
    margin: float = DEFAULT_MARGIN,
    context: float | None = None,
) -> np.ndarray:
    """The runtime crop (:func:`crop_faces`) of ``box``, with pixels outside a ``context`` margin mirrored.

    The square is the runtime's (side ``max(w, h) * (1 + 2 * margin)``). Only the part inside the image and inside
    the ``context``-margin square (all of it when ``context`` is None) is taken from the image; the rest of the
    square is filled by mirroring that part. With ``context=None`` and a square inside the image this is exactly
    ``crop_faces(image, box, size, margin)`` (tested).
    """
    h, w = image.shape[:2]
    x1, y1, x2, y2 = _square_px(box, margin)
    cx1, cy1, cx2, cy2 = _square_px(box, margin if context is None else min(context, margin))
    cx1, cy1 = max(cx1, x1, 0), max(cy1, y1, 0)
    cx2, cy2 = min(cx2, x2, w), min(cy2, y2, h)
    if cx2 <= cx1 or cy2 <= cy1:  # degenerate box: the runtime's clipped crop
        return crop_faces(image, np.asarray(box).reshape(1, 4), size, margin)[0]
    patch = image[cy1:cy2, cx1:cx2]
    pads = ((cy1 - y1, y2 - cy2), (cx1 - x1, x2 - cx2), (0, 0))
    if any(p for pair in pads[:2] for p in pair):
        patch = np.pad(patch, pads, mode="reflect" if min(patch.shape[:2]) > 1 else "edge")
    side = float(x2 - x1)
    return crop_faces(patch, np.array([[0.0, 0.0, side, side]]), size, margin=0.0)[0]


#: Black border added on each side before detection, as a fraction of the image's long side (see detect_padded).
DETECT_PAD = 0.5


def detect_padded(images: Sequence[np.ndarray], detector, pad: float = DETECT_PAD) -> list[FaceBoxes]:
    """Run ``detector`` on each image centred in a black canvas ``1 + 2 * pad`` times its size; boxes in image pixels.

    Why: the files here are face crops or portraits whose face fills 60-98 % of the frame, and BlazeFace's
    full-range model (the runtime default) finds only 5-35 % of such faces (DFDC crops, UTKFace, Unsplash, measured
    on 100 of each); with the face at a third of the canvas it finds 97-100 %. The border only helps detection:
    the crop is cut from the original image.
    """
    padded, offsets = [], []
    for img in images:
        q = int(round(pad * max(img.shape[:2])))
        padded.append(np.pad(img, ((q, q), (q, q), (0, 0))))
        offsets.append(q)
    dets = detector.detect(padded)
    out = []
    for det, q in zip(dets, offsets, strict=True):
        shift = np.float32(q)
        out.append(FaceBoxes(det.boxes - shift, det.scores, det.keypoints - shift))
    return out


def recrop_images(
    images: Sequence[np.ndarray],
    detector,
    size: int,
    contexts: Sequence[float] | None = None,
    margin: float = DEFAULT_MARGIN,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Detect and crop the main face of each RGB image: ``(crops uint8 (N,S,S,3), found bool (N,), boxes (N,4))``.

    Images with no detected face get a zero crop and ``found = False``; callers drop them (at inference such a
    face is never scored either) and report how many each source lost.
    """
    dets = detect_padded(images, detector)
    crops = np.zeros((len(images), size, size, 3), np.uint8)
    found = np.zeros(len(images), bool)
    boxes = np.zeros((len(images), 4), np.float32)
    for i, (img, det) in enumerate(zip(images, dets, strict=True)):
        k = pick_face(det)
        if k is None:
            continue
        boxes[i] = det.boxes[k]
        ctx = None if contexts is None else float(contexts[i])
        crops[i] = training_crop(img, det.boxes[k], size, margin, ctx)
        found[i] = True
    return crops, found, boxes


__all__ = ["CONTEXT_MARGIN", "DETECT_PAD", "detect_padded", "pick_face", "recrop_images", "training_crop"]
