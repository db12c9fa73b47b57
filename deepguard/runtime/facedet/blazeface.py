"""BlazeFace (MediaPipe) face detection on onnxruntime, batched over frames and tiles.

Why this shape: sampled video frames are detected together, so every frame (and every tile of a
large frame) is letterboxed into one (B, S, S, 3) tensor and sent through one session call
(chunked at ``max_batch`` views only to bound memory).
Anchor generation, box decoding and MediaPipe's *weighted* NMS follow the MediaPipe calculators
(ssd_anchors_calculator, tensors_to_detections_calculator, non_max_suppression_calculator) so the
ONNX export behaves like the original tflite graph, but are vectorised with numpy.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from deepguard.errors import MediaError, ModelError
from deepguard.runtime.types import FaceBoxes

DATA_DIR = Path(__file__).resolve().parent / "data"
NUM_KEYPOINTS = 6
RAW_SCORE_CLIP = 100.0  # MediaPipe's score_clipping_thresh
MAX_BATCH = 64  # views per session call by default; bounds the input tensor to ~28 MB (full)
# Views per frame. Why a cap: the tile pyramid is sized by the short side, so a 1 x 8000 strip made one view per
# pixel column (11,429 views, minutes of CPU from a 102-byte PNG). Every frame with an aspect ratio up to 4:1
# within the 8.3 MP server limit needs at most 40 (3840x2160: 35); beyond the cap a frame gets strip tiles.
MAX_VIEWS_PER_FRAME = 40
MAX_STRIPS = 15  # strip tiles of a degenerate frame: whole frame + 15 = 16 views
# The zoomed-out view: the whole frame letterboxed into this fraction of the model input (as if centred in a black
# canvas twice its size). Why: the full-range model misses faces that fill most of its input - it finds a face in
# 5 % of tight 224 px DFDC crops, 17 % of UTKFace, 50 % of Unsplash portraits (100 of each) - and 98-100 % of them
# at half the input. Only frames whose short side is > ZOOM_MIN_ASPECT of the long one get it: a face is about square,
# so in a more elongated frame it spans at most that much of the letterboxed input and the plain view sees it.
ZOOM_OUT = 0.5
ZOOM_MIN_ASPECT = 0.5
# Its detections smaller than this fraction of the frame's long side are dropped: the plain view sees such faces
# twice as large (it finds most faces up to ~0.7 of the frame), so mixing in the coarser boxes only blurs them.
ZOOM_MIN_FACE = 0.3


@dataclass(frozen=True)
class ModelConfig:
    """The SsdAnchorsCalculator / TensorsToDetections options MediaPipe uses for one model."""

    file: str
    input_size: int
    strides: tuple[int, ...]
    interpolated_scale_aspect_ratio: float
    num_anchors: int


MODEL_CONFIGS: dict[str, ModelConfig] = {
    # mediapipe/modules/face_detection/face_detection_short_range.pbtxt
    "short": ModelConfig("blazeface_short.onnx", 128, (8, 16, 16, 16), 1.0, 896),
    # mediapipe/modules/face_detection/face_detection_full_range.pbtxt
    "full": ModelConfig("blazeface_full.onnx", 192, (4,), 0.0, 2304),
}


def generate_anchors(
    input_size: int,
    strides: Sequence[int],
    interpolated_scale_aspect_ratio: float = 1.0,
    num_aspect_ratios: int = 1,
    offset: float = 0.5,
) -> np.ndarray:
    """(A, 2) anchor centres (x, y) in [0, 1], as MediaPipe's SsdAnchorsCalculator orders them.

    Only ``fixed_anchor_size: true`` is needed for BlazeFace, so anchors have width = height = 1
    and only their centres matter. Consecutive layers with the same stride share one feature map;
    each layer contributes ``num_aspect_ratios`` anchors (+1 when the interpolated scale is on)
    per cell, and anchors of one cell are contiguous (row-major y, x, anchor).
    """
    out: list[np.ndarray] = []
    layer = 0
    while layer < len(strides):
        stride = strides[layer]
        per_cell = 0
        last = layer
        while last < len(strides) and strides[last] == stride:
            per_cell += num_aspect_ratios + (1 if interpolated_scale_aspect_ratio > 0 else 0)
            last += 1
        fm = math.ceil(input_size / stride)
        centres = (np.arange(fm, dtype=np.float32) + offset) / fm
        yy, xx = np.meshgrid(centres, centres, indexing="ij")
        cells = np.stack([xx.ravel(), yy.ravel()], axis=1)
        out.append(np.repeat(cells, per_cell, axis=0))
        layer = last
    return np.concatenate(out, axis=0).astype(np.float32)


def sigmoid_scores(raw: np.ndarray, clip: float = RAW_SCORE_CLIP) -> np.ndarray:
    """Clipped sigmoid (float64 inside so exp never overflows), returned as float32."""
    x = np.clip(raw.astype(np.float64), -clip, clip)
    return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


def decode(raw_boxes: np.ndarray, anchors: np.ndarray, input_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw regressors (..., A, 16) -> boxes (..., A, 4) x1y1x2y2 and keypoints (..., A, 6, 2).

    Output coordinates are normalised to the letterboxed model input. The raw layout is
    (x_centre, y_centre, w, h, kp0x, kp0y, ...) in input pixels relative to the anchor centre
    (``reverse_output_order: true``, anchor size 1).
    """
    raw = raw_boxes.astype(np.float32) / np.float32(input_size)
    centre = raw[..., 0:2] + anchors
    half = raw[..., 2:4] / 2
    boxes = np.concatenate([centre - half, centre + half], axis=-1)
    kps = raw[..., 4:].reshape(*raw.shape[:-1], NUM_KEYPOINTS, 2) + anchors[..., None, :]
    return boxes, kps


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes a (M, 4) and b (K, 4), x1y1x2y2."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=-1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def weighted_nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    keypoints: np.ndarray,
    iou_threshold: float = 0.3,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MediaPipe's WEIGHTED non-max suppression.

    Take the best remaining detection; every remaining detection with IoU > ``iou_threshold``
    against it (itself included) forms its cluster; the output box and keypoints are the
    score-weighted mean of the cluster, the output score is the best score. Pairwise IoUs are
    computed once; the only Python loop runs over the clusters that are kept.
    """
    k = keypoints.shape[1] if keypoints.ndim == 3 else 0
    if len(scores) == 0:
        return (
            np.zeros((0, 4), np.float32),
            np.zeros((0,), np.float32),
            np.zeros((0, k, 2), np.float32),
        )
    order = np.argsort(-scores, kind="stable")
    boxes, scores, keypoints = boxes[order], scores[order], keypoints[order]
    ious = iou_matrix(boxes, boxes)
    w = scores.astype(np.float64)
    flat = np.concatenate([boxes.reshape(len(boxes), -1), keypoints.reshape(len(boxes), -1)], axis=1)
    remaining = np.ones(len(scores), bool)
    out_vals, out_scores = [], []
    while remaining.any():
        top = int(np.argmax(remaining))  # sorted by score: first remaining is the best
        members = remaining & (ious[top] > iou_threshold)
        members[top] = True  # a degenerate box has IoU 0 with itself; still its own cluster
        mw = w[members]
        out_vals.append((mw[:, None] * flat[members]).sum(axis=0) / mw.sum())
        out_scores.append(scores[top])
        remaining &= ~members
    vals = np.asarray(out_vals, np.float32)
    return (
        vals[:, :4],
        np.asarray(out_scores, np.float32),
        vals[:, 4:].reshape(len(vals), k, 2),
    )


def tile_grid(
    height: int, width: int, side: int, min_overlap: float = 0.3
) -> list[tuple[int, int, int, int]]:
    """Square ``side`` tiles (x0, y0, x1, y1), evenly spaced, overlapping by >= ``min_overlap``.

    ``side`` is clamped to the short side so tiles stay square (no letterbox padding). Any face
    smaller than ``min_overlap * side`` lies wholly inside at least one tile.
    """
    side = int(max(1, min(side, height, width)))
    step = side * (1 - min_overlap)

    def starts(length: int) -> list[int]:
        if length <= side:
            return [0]
        n = math.ceil((length - side) / step) + 1
        return [round(v) for v in np.linspace(0, length - side, n)]

    return [(x, y, x + side, y + side) for y in starts(height) for x in starts(width)]


def grid_size(height: int, width: int, side: int, min_overlap: float = 0.3) -> int:
    """How many tiles :func:`tile_grid` makes, computed without building them (O(1) for any shape)."""
    side = int(max(1, min(side, height, width)))
    step = side * (1 - min_overlap)

    def n(length: int) -> int:
        return 1 if length <= side else math.ceil((length - side) / step) + 1

    return n(height) * n(width)


def tile_pyramid(
    height: int,
    width: int,
    base: int,
    growth: float = 2.5,
    min_overlap: float = 0.3,
    min_side: int = 1,
    max_tiles: int | None = None,
) -> list[tuple[int, int, int, int]] | None:
    """Tiles of sides base, base*growth, ... until a level would nearly be the whole frame.

    With ``max_tiles``, None when the pyramid would hold more tiles than that (counted level by level
    before any tile is built, so a 1 x 8 M strip costs nothing to refuse).

    Why levels: a face must be >= ~12 px in the model input to be found, and must fit inside a
    tile's overlap to be seen whole. Level k finds faces from ~0.07*side_k up to
    ``min_overlap*side_k``; with growth 2.5 those ranges chain, and the whole-frame view (always
    run) covers the largest faces. The first level never exceeds 60% of the long side, so small
    frames still get a real zoom when tiling is forced.
    """
    short, long = min(height, width), max(height, width)
    side = float(max(min_side, min(base, round(0.6 * long))))
    tiles: list[tuple[int, int, int, int]] = []
    while True:
        s = min(side, short)
        count = grid_size(height, width, int(s), min_overlap)
        if max_tiles is not None and count > 1 and len(tiles) + count > max_tiles:
            return None
        if count > 1:
            tiles += tile_grid(height, width, int(s), min_overlap)
        if s >= short or side * growth >= long:
            return tiles
        side *= growth


def strip_tiles(
    height: int, width: int, count: int = MAX_STRIPS, min_overlap: float = 0.3
) -> list[tuple[int, int, int, int]]:
    """At most ``count`` overlapping tiles along the long axis, each spanning the whole short side.

    Used for frames too elongated for square tiles (a 1 x N strip would need N of them): the tiles are
    letterboxed like the whole frame, so the work per frame is bounded by ``count`` whatever its shape.
    """
    short, long = min(height, width), max(height, width)
    length = max(short, math.ceil(long / (1 + (count - 1) * (1 - min_overlap))))
    if length >= long:
        return []
    n = min(count, math.ceil((long - length) / (length * (1 - min_overlap))) + 1)
    starts = sorted({round(v) for v in np.linspace(0, long - length, n)})
    if width >= height:
        return [(x, 0, x + length, height) for x in starts]
    return [(0, y, width, y + length) for y in starts]


#: The least shrink :func:`halvings` leaves for the final area resize of a detector view.
LAST_SHRINK = 1.75


def halvings(width: int, height: int, new_w: int, new_h: int) -> int:
    """How many times a ``width`` x ``height`` crop is halved before its area resize to ``new_w`` x ``new_h``:
    as often as a shrink of at least :data:`LAST_SHRINK` is left for that resize.

    Why: OpenCV's area resize takes a fast path only for integer factors; a 1280x720 frame shrunk to a 192 px
    view by the generic path cost 3.5 ms here and each 720 px tile 2.2 ms (a 720p full scan: 10 ms of resizing
    next to 25 ms of model). Halving first (2x2 area average, the fast path) and area-resizing the rest is nearly
    the same box filter: 6.3 ms of resizing per scan instead of 11.4, detector scores within 0.01 of the one-step
    resize on the test photo. Leaving less for the last step blurs more: two halvings of t1.jpg's 1280 px width
    (1.67x left) dropped its faintest face from 0.55 to 0.48, under the detection threshold.
    """
    k = 0
    while width >> (k + 1) >= LAST_SHRINK * new_w and height >> (k + 1) >= LAST_SHRINK * new_h:
        k += 1
    return k


def half(image: np.ndarray) -> np.ndarray:
    """``image`` at half size by 2x2 area averaging (an odd last row or column is dropped)."""
    h, w = image.shape[0] // 2, image.shape[1] // 2
    return cv2.resize(image[: 2 * h, : 2 * w], (w, h), interpolation=cv2.INTER_AREA)


@dataclass
class _View:
    """One letterboxed crop fed to the model, and how to map its outputs back to the frame."""

    frame: int
    x0: int
    y0: int
    x1: int
    y1: int
    scale_x: float  # model-input pixels per frame pixel
    scale_y: float
    pad_x: int  # letterbox offset in model-input pixels
    pad_y: int
    is_tile: bool
    new_w: int  # size of the resized crop inside the model input
    new_h: int
    is_zoom: bool = False  # the zoomed-out whole-frame view


Cancels = Sequence[Callable[[], bool] | None] | None


def _dead_frames(cancelled: Cancels) -> set[int]:
    """Indices of frames whose caller has gone (a predicate that raises counts as still wanted)."""
    dead: set[int] = set()
    for i, pred in enumerate(cancelled or ()):
        try:
            if pred is not None and pred():
                dead.add(i)
        except Exception:  # noqa: BLE001 - a broken predicate must not fail the other frames of the batch
            pass
    return dead


def _as_rgb(frame: np.ndarray, index: int) -> np.ndarray:
    """Accept RGB uint8 (H, W, 3); tolerate grey (H, W[, 1]) and RGBA. Anything else: MediaError."""
    arr = np.asarray(frame)
    if arr.dtype != np.uint8:
        raise MediaError(f"frame {index}: expected uint8 pixels, got dtype {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise MediaError(f"frame {index}: expected an (H, W, 3) RGB image, got shape {arr.shape}")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 4:
        arr = arr[:, :, :3]
    return arr


class BlazeFaceDetector:
    """MediaPipe BlazeFace on onnxruntime; ``detect`` takes a list of RGB frames.

    ``tile``: ``False`` runs each frame once, letterboxed to the model size. ``True`` also runs
    a pyramid of overlapping square tiles (``tile_pyramid``; first level ``tile_size`` px,
    default 4x the model input) of every frame, all in the same batch, and merges everything with
    weighted NMS; tile detections crossing an inner tile edge are dropped as partial faces.
    ``"auto"`` (default) tiles only frames whose long side exceeds ``tile_min_side`` (1024) px:
    there a whole-frame pass misses faces under ~100 px, while 640x480 video frames keep a cost
    of one view each (1280x720: 4 views, 1920x1080: 9 views).

    All views of all frames go to onnxruntime together, ``max_batch`` per call (chunking only
    bounds memory; on a 2-core CPU per-image cost was flat up to batch 4 and ~35% higher at 8,
    on GPUs large batches pay off). ``threads`` sets onnxruntime's intra-op threads.

    ``zoom_out``: faces filling most of the frame (a tight face crop, a passport-style portrait) are too large
    for the full-range model in the whole-frame view, so a frame also gets a zoomed-out view: the whole frame
    letterboxed into :data:`ZOOM_OUT` (half) of the model input, as if centred in a black canvas twice its size.
    Its boxes are mapped back to frame pixels (and clipped to the frame like all boxes), those smaller than
    :data:`ZOOM_MIN_FACE` of the long side are dropped, and the rest merge with the other views' by the
    weighted NMS. Only frames whose short side exceeds :data:`ZOOM_MIN_ASPECT` of the long one get it (in a more
    elongated frame no face is that large). ``"fallback"`` (default) runs it, as a second batched pass, only for
    the frames where the other views found nothing; ``True`` runs it for every frame in the first pass;
    ``False`` never. Measured on 100 files each (CPU, 1 thread): faces found in DFDC 224 px crops 5 -> 100 %,
    UTKFace 17 -> 100 %, Unsplash portraits 50 -> 98 % (fallback 100 / 100 / 98 %, always-on the same; on one
    DFDC crop the plain view took an eye for a face, and only always-on also found the face); no box of a
    normal photo changes (t1.jpg: the same six faces). Detector time per frame with faces, fallback / off:
    640x480 0.99x, 1920x1080 1.02x (always-on 2.0x and 1.13x); a frame without faces pays the extra view.

    A frame never gets more than ``max_views`` views (default :data:`MAX_VIEWS_PER_FRAME`, counting the whole-frame
    and the zoomed-out view): a frame whose pyramid would exceed it (a degenerate aspect ratio such as 1 x 8000)
    gets the whole-frame view plus at most :data:`MAX_STRIPS` letterboxed strip tiles (:func:`strip_tiles`), so
    work is bounded per frame.
    """

    supports_cancel = True  # detect(frames, cancelled=...) skips the remaining views of cancelled frames
    thread_safe = (
        True  # detect may run on several threads at once (per-thread input batches, one shared session)
    )

    def __init__(
        self,
        model: Literal["full", "short"] = "full",
        score_threshold: float = 0.5,
        nms_iou: float = 0.3,
        providers: Sequence[str] | None = None,
        tile: bool | Literal["auto"] = "auto",
        *,
        tile_min_side: int = 1024,
        tile_size: int | None = None,
        model_path: str | Path | None = None,
        threads: int | None = None,
        max_batch: int = MAX_BATCH,
        spin: bool | None = None,
        max_views: int = MAX_VIEWS_PER_FRAME,
        zoom_out: bool | Literal["fallback"] = "fallback",
    ) -> None:
        if model not in MODEL_CONFIGS:
            raise ValueError(f"unknown BlazeFace model {model!r}; use 'full' or 'short'")
        if tile not in (True, False, "auto"):
            raise ValueError(f"tile must be True, False or 'auto', got {tile!r}")
        if zoom_out not in (True, False, "fallback"):
            raise ValueError(f"zoom_out must be True, False or 'fallback', got {zoom_out!r}")
        self.config = MODEL_CONFIGS[model]
        self.model = model
        self.name = f"blazeface:{model}"
        self.score_threshold = float(score_threshold)
        self.nms_iou = float(nms_iou)
        self.tile = tile
        self.tile_min_side = int(tile_min_side)
        self.tile_size = int(tile_size or 4 * self.config.input_size)
        self.max_batch = max(1, int(max_batch))
        self.max_views = max(3, int(max_views))
        self.zoom_out = zoom_out
        self.anchors = generate_anchors(
            self.config.input_size, self.config.strides, self.config.interpolated_scale_aspect_ratio
        )
        path = Path(model_path) if model_path is not None else DATA_DIR / self.config.file
        self.session = _open_session(path, providers, threads, spin)
        self._buffers = threading.local()  # per-thread input batch (_input_batch)
        self._check_io(path)

    # -- model plumbing -------------------------------------------------------------------------

    def _check_io(self, path: Path) -> None:
        inputs = self.session.get_inputs()
        size = self.config.input_size
        if len(inputs) != 1 or list(inputs[0].shape[1:]) != [size, size, 3]:
            raise ModelError(f"{path}: expected one (N, {size}, {size}, 3) input, got {inputs[0].shape}")
        self.input_name = inputs[0].name
        outs = {o.name: o for o in self.session.get_outputs()}
        names = ("regressors", "classificators")
        if not all(n in outs for n in names):
            raise ModelError(f"{path}: outputs {sorted(outs)} lack {names}; re-run export-detector")
        self.output_names = list(names)
        n_anchors = outs["regressors"].shape[1]
        if n_anchors != len(self.anchors) or outs["regressors"].shape[2] != 4 + 2 * NUM_KEYPOINTS:
            raise ModelError(
                f"{path}: model has {n_anchors} anchors, the {self.model} anchor config makes "
                f"{len(self.anchors)}"
            )

    @property
    def batch_dynamic(self) -> bool:
        """True when the session accepts any batch size (symbolic first input dim)."""
        return not isinstance(self.session.get_inputs()[0].shape[0], int)

    # -- preprocessing --------------------------------------------------------------------------

    def zooms(self, height: int, width: int) -> bool:
        """Whether a frame of this shape gets the zoomed-out view (always or as fallback): not too elongated."""
        return self.zoom_out is not False and min(height, width) > ZOOM_MIN_ASPECT * max(height, width)

    def frame_tiles(self, height: int, width: int) -> list[tuple[int, int, int, int]]:
        """The tiles detected besides the whole frame: the pyramid, or strips when it exceeds the cap.

        The cap counts the whole-frame view and, where the frame gets one, the zoomed-out view.
        """
        if not (self.tile is True or (self.tile == "auto" and max(height, width) > self.tile_min_side)):
            return []
        size = self.config.input_size
        room = self.max_views - 1 - int(self.zooms(height, width))
        tiles = tile_pyramid(height, width, self.tile_size, min_side=size, max_tiles=room)
        if tiles is None:
            return strip_tiles(height, width, min(MAX_STRIPS, room))
        return tiles

    def _letterbox(
        self, i: int, box: tuple[int, int, int, int], is_tile: bool = False, fill: float = 1.0
    ) -> _View:
        """The view of ``box`` of frame ``i``, its long side scaled to ``fill`` of the model input, centred."""
        size = self.config.input_size
        x0, y0, x1, y1 = box
        cw, ch = x1 - x0, y1 - y0
        s = fill * size / max(cw, ch)
        nw, nh = max(1, round(cw * s)), max(1, round(ch * s))
        px, py = (size - nw) // 2, (size - nh) // 2
        return _View(i, x0, y0, x1, y1, nw / cw, nh / ch, px, py, is_tile, nw, nh, fill != 1.0)

    def _zoom_views(self, frames: Sequence[np.ndarray], indices: Sequence[int]) -> list[_View]:
        """The zoomed-out whole-frame views of the frames ``indices`` that get one."""
        views = []
        for i in indices:
            h, w = frames[i].shape[:2]
            if self.zooms(h, w):
                views.append(self._letterbox(i, (0, 0, w, h), fill=ZOOM_OUT))
        return views

    def _views(self, frames: Sequence[np.ndarray]) -> list[_View]:
        """Every view of every frame run in the first pass (the zoomed-out one too when ``zoom_out`` is True)."""
        views: list[_View] = []
        for i, frame in enumerate(frames):
            h, w = frame.shape[:2]
            views.append(self._letterbox(i, (0, 0, w, h)))
            views += [self._letterbox(i, t, is_tile=True) for t in self.frame_tiles(h, w)]
            if self.zoom_out is True:
                views += self._zoom_views(frames, [i])
        return views

    def _fill(self, batch: np.ndarray, frames: Sequence[np.ndarray], views: Sequence[_View]) -> None:
        """Letterbox each view into ``batch`` (pre-filled with -1 = black) scaled to [-1, 1].

        A view shrunk by 2x or more is cut from a halved copy of its frame (:func:`halvings`), made once per
        frame and level and shared by the frame's views. Scaled in place in the batch (no float temporaries).
        """
        pyramids: dict[int, list[np.ndarray]] = {}
        for j, v in enumerate(views):
            nw, nh = v.new_w, v.new_h
            k = halvings(v.x1 - v.x0, v.y1 - v.y0, nw, nh)
            levels = pyramids.setdefault(v.frame, [frames[v.frame]])
            while len(levels) <= k:
                levels.append(half(levels[-1]))
            crop = levels[k][v.y0 >> k : v.y1 >> k, v.x0 >> k : v.x1 >> k]
            interp = cv2.INTER_AREA if nw < crop.shape[1] else cv2.INTER_LINEAR
            img = cv2.resize(crop, (nw, nh), interpolation=interp) if (nw, nh) != crop.shape[1::-1] else crop
            dst = batch[j, v.pad_y : v.pad_y + nh, v.pad_x : v.pad_x + nw]
            np.multiply(img, np.float32(1 / 127.5), out=dst, dtype=np.float32)
            dst -= np.float32(1)

    def _input_batch(self, n: int) -> np.ndarray:
        """A (n, S, S, 3) float32 batch filled with -1, from a buffer this thread reuses across calls.

        Why: sampled in the server's detector thread (4 streams of 720p, py-spy), allocating a fresh 0.44 MB-per-view
        array each call (``np.full``) took 12 % of the thread's time, as much as letterboxing itself; with the
        reused buffer it no longer shows. The buffer is per thread (the detector is shared by threads) and only grows
        (to ``max_batch`` views at most); the session reads it synchronously, so reuse is safe.
        """
        size = self.config.input_size
        buf = getattr(self._buffers, "batch", None)
        if buf is None or len(buf) < n:
            buf = self._buffers.batch = np.empty((n, size, size, 3), np.float32)
        out = buf[:n]
        out.fill(-1.0)
        return out

    # -- inference ------------------------------------------------------------------------------

    def _candidates(
        self,
        frames: Sequence[np.ndarray],
        views: Sequence[_View],
        cancelled: Cancels = None,
        thresholds: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Run the views in chunks of ``max_batch``; keep only above-threshold detections.

        Returns (view index, boxes, scores, keypoints), boxes/keypoints in frame pixels. Only
        candidates are kept between chunks, so memory does not grow with the raw (V, A, 16).
        Before each chunk the frames' ``cancelled`` predicates are asked again, and views of frames
        whose caller has gone are skipped: a cancel or deadline stops the work, not just the result.
        """
        size = self.config.input_size
        empty = (np.zeros(0, np.int64), np.zeros((0, 4), np.float32), np.zeros(0, np.float32))
        parts = [(*empty, np.zeros((0, NUM_KEYPOINTS, 2), np.float32))]
        for start in range(0, len(views), self.max_batch):
            dead = _dead_frames(cancelled)
            sel = np.array(
                [
                    j
                    for j in range(start, min(start + self.max_batch, len(views)))
                    if views[j].frame not in dead
                ],
                np.int64,
            )
            if len(sel) == 0:
                continue
            chunk = [views[j] for j in sel]
            batch = self._input_batch(len(chunk))
            self._fill(batch, frames, chunk)
            raw_boxes, raw_scores = self.session.run(self.output_names, {self.input_name: batch})
            scores = sigmoid_scores(raw_scores[..., 0])  # (v, A)
            th = self.score_threshold if thresholds is None else thresholds[[v.frame for v in chunk]][:, None]
            li, ai = np.nonzero(scores >= th)  # decode only the candidates
            b, k = decode(raw_boxes[li, ai], self.anchors[ai], size)
            valid = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
            li, ai, b, k = li[valid], ai[valid], b[valid], k[valid]
            vi = sel[li]
            b, k = self._to_frame(b, k, views, vi)
            keep = self._drop_partial(b, vi, views, frames)
            parts.append((vi[keep], b[keep], scores[li[keep], ai[keep]], k[keep]))
        vi, b, s, k = (np.concatenate(x) for x in zip(*parts, strict=True))
        return vi, b, s, k

    def detect(
        self,
        frames: Sequence[np.ndarray],
        cancelled: Cancels = None,
        thresholds: Sequence[float] | None = None,
    ) -> list[FaceBoxes]:
        """Detect faces in RGB uint8 frames; one FaceBoxes per frame, sorted by score.

        Each view gets MediaPipe's weighted NMS; when a frame was tiled or zoomed out, the per-view results
        are merged with one more weighted NMS (``zoom_out="fallback"``: frames with no detection get their
        zoomed-out view in a second session run). Boxes are clipped to the frame; keypoints (subject's
        right eye, left eye, nose tip, mouth centre, right ear tragion, left ear tragion, in
        MediaPipe's order; the right eye is image-left on a frontal face) are not clipped, so
        they keep the true geometry for alignment when a face is cut by the frame edge.

        ``cancelled``: one predicate (or None) per frame; a frame whose predicate turns true gets no
        more detector work and an empty result (the caller is gone and discards it).

        ``thresholds``: one score threshold per frame instead of ``score_threshold`` (stream mode's region
        mosaics look for faces already known, at a lower one: :data:`deepguard.runtime.facedet.regions.REGION_SCORE`).
        """
        frames = [_as_rgb(f, i) for i, f in enumerate(frames)]
        if not frames:
            return []
        th = None if thresholds is None else np.asarray(thresholds, np.float32).reshape(len(frames))
        per_frame: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in frames]
        self._run_views(frames, self._views(frames), cancelled, per_frame, th)
        if self.zoom_out == "fallback":  # a second pass, only for the frames where nothing was found
            empty = [i for i, parts in enumerate(per_frame) if not parts]
            self._run_views(frames, self._zoom_views(frames, empty), cancelled, per_frame, th)
        return [self._finish(parts, frame.shape) for parts, frame in zip(per_frame, frames, strict=True)]

    def _run_views(
        self,
        frames: Sequence[np.ndarray],
        views: Sequence[_View],
        cancelled: Cancels,
        per_frame: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]],
        thresholds: np.ndarray | None = None,
    ) -> None:
        """Detect in ``views``; append each view's NMS-ed detections (frame pixels) to its frame's list."""
        if not views:
            return
        vi, boxes, scores, kps = self._candidates(frames, views, cancelled, thresholds)
        order = np.argsort(vi, kind="stable")
        vi, boxes, scores, kps = vi[order], boxes[order], scores[order], kps[order]
        ids, starts = np.unique(vi, return_index=True)
        ends = np.append(starts[1:], len(vi)).astype(np.int64)
        for v, lo, hi in zip(ids, starts, ends[: len(starts)], strict=True):
            per_frame[views[v].frame].append(
                weighted_nms(boxes[lo:hi], scores[lo:hi], kps[lo:hi], self.nms_iou)
            )

    def _to_frame(
        self, boxes: np.ndarray, kps: np.ndarray, views: Sequence[_View], vi: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Normalised model-input coords -> frame pixels (undo letterbox, scale and crop offset)."""
        size = self.config.input_size
        meta = np.array(
            [(v.x0, v.y0, v.scale_x, v.scale_y, v.pad_x, v.pad_y) for v in views], np.float32
        ).reshape(-1, 6)[vi]
        off, scale, pad = meta[:, None, 0:2], meta[:, None, 2:4], meta[:, None, 4:6]
        b = ((boxes.reshape(-1, 2, 2) * size - pad) / scale + off).reshape(-1, 4)
        k = (kps * size - pad) / scale + off
        return b, k

    def _drop_partial(
        self, boxes: np.ndarray, vi: np.ndarray, views: Sequence[_View], frames: Sequence[np.ndarray]
    ) -> np.ndarray:
        """Mask dropping tile detections that cross a tile edge lying inside the frame, and small zoomed-out ones."""
        keep = np.ones(len(vi), bool)
        if any(v.is_zoom for v in views) and len(vi):
            zoom = np.array([v.is_zoom for v in views], bool)[vi]
            long = np.array([max(frames[v.frame].shape[:2]) for v in views], np.float32)[vi]
            side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
            keep &= ~zoom | (side >= ZOOM_MIN_FACE * long)
        if not any(v.is_tile for v in views) or len(vi) == 0:
            return keep
        arr = np.array(
            [
                (
                    v.is_tile,
                    v.x0 if v.x0 > 0 else -np.inf,
                    v.y0 if v.y0 > 0 else -np.inf,
                    v.x1 if v.x1 < frames[v.frame].shape[1] else np.inf,
                    v.y1 if v.y1 < frames[v.frame].shape[0] else np.inf,
                )
                for v in views
            ],
            np.float64,
        )[vi]
        margin = 2.0
        inside = (
            (boxes[:, 0] >= arr[:, 1] + margin)
            & (boxes[:, 1] >= arr[:, 2] + margin)
            & (boxes[:, 2] <= arr[:, 3] - margin)
            & (boxes[:, 3] <= arr[:, 4] - margin)
        )
        return keep & np.where(arr[:, 0] > 0, inside, True)

    def _finish(
        self, parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]], shape: tuple[int, ...]
    ) -> FaceBoxes:
        """Merge per-view detections of one frame, clip to the frame, drop degenerate boxes."""
        if not parts:
            return FaceBoxes.empty(NUM_KEYPOINTS)
        boxes, scores, kps = parts[0]
        if len(parts) > 1:
            merged = (np.concatenate(x) for x in zip(*parts, strict=True))
            boxes, scores, kps = weighted_nms(*merged, iou_threshold=self.nms_iou)
        h, w = shape[:2]
        boxes = np.clip(boxes, 0, [w, h, w, h]).astype(np.float32)
        ok = (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)
        return FaceBoxes(boxes[ok], scores[ok].astype(np.float32), kps[ok].astype(np.float32))


def _open_session(path: Path, providers: Sequence[str] | None, threads: int | None, spin: bool | None = None):
    """Create the onnxruntime session, turning every failure into a ModelError naming the file.

    Session options, providers (TensorRT dynamic-batch profile, FP16, engine cache), the TensorRT -> CUDA -> CPU
    fallback and its log line come from ``deepguard.runtime.providers.make_session``, so the detector is tuned
    like the classifier; CPU unless asked otherwise.
    """
    from deepguard.runtime.providers import make_session

    if not path.is_file():
        raise ModelError(
            f"{path}: BlazeFace ONNX model not found; regenerate it with `deepguard export-detector`"
        )
    try:
        return make_session(path, list(providers or ["CPUExecutionProvider"]), threads, spin=spin)
    except ModelError as exc:  # make_session names the file; say which model it is
        raise ModelError(f"{path}: cannot load BlazeFace ONNX model: {exc.__cause__ or exc}") from exc
