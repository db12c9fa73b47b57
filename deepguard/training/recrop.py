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
the mirrored border is the same for every source and both classes. The crop is the runtime's own
:func:`deepguard.runtime.crop.crop_faces` with that ``context``; inference cuts it with the same function and the
model's ``crop_context`` (:data:`INFERENCE_CONTEXT`, the middle of the range), so a training crop and an inference
crop of the same face differ only in how much true context the band keeps.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from deepguard.runtime.crop import DEFAULT_MARGIN, crop_faces, jpeg_roundtrip
from deepguard.runtime.types import FaceBoxes


def pick_face(det: FaceBoxes) -> int | None:
    """Index of the largest detected face (the photo's subject), or None when nothing was found."""
    if len(det) == 0:
        return None
    b = np.asarray(det.boxes, np.float64).reshape(-1, 4)
    return int(np.argmax((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])))


#: Context kept around the face before mirror padding, as a margin drawn per image from this range (see above).
CONTEXT_MARGIN = (-0.06, 0.03)
#: The context inference crops keep: the middle of the training range, stored in the model as ``crop_context``
#: (the runtime's crop reads it from there, see :func:`deepguard.runtime.crop.crop_faces`).
INFERENCE_CONTEXT = round(sum(CONTEXT_MARGIN) / 2, 4)
#: The JPEG quality inference re-encodes each crop at before scoring (stored as ``crop_jpeg_quality``; see
#: :mod:`deepguard.runtime.crop`): every training crop ends in a re-encode at 30-95 (``AugmentConfig.jpeg_quality``),
#: and the lightest of those keeps the most detail while giving the crop the 8x8 blocks on its own grid that every
#: training crop had. Measured on v8 (INT8, val): real photo sources' AUC 0.906 / 0.916 -> 0.920 / 0.936 (Unsplash /
#: UTKFace), GAN sources' 0.01 lower, DFDC unchanged; the scikit-image astronaut 0.97 -> 0.75.
INFERENCE_JPEG_QUALITY = 95


def as_scored(crops: np.ndarray) -> np.ndarray:
    """``crops`` as the built model scores them (re-encoded at :data:`INFERENCE_JPEG_QUALITY`, as
    ``FaceClassifier.score`` does for a model carrying it): what Keras-side validation must score - checkpoint
    choice, calibration, leave-one-source-out cuts - for its numbers to hold for the shipped graph."""
    return jpeg_roundtrip(np.asarray(crops), INFERENCE_JPEG_QUALITY)


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
    contexts: Sequence[float],
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
        crops[i] = crop_faces(img, det.boxes[k][None], size, margin, float(contexts[i]))
        found[i] = True
    return crops, found, boxes


__all__ = [
    "CONTEXT_MARGIN",
    "DETECT_PAD",
    "INFERENCE_CONTEXT",
    "INFERENCE_JPEG_QUALITY",
    "as_scored",
    "detect_padded",
    "pick_face",
    "recrop_images",
]
