"""One web analysis: run an upload through the server's shared batchers and build what the page shows.

The scores come from exactly the same path as ``POST /v1/analyze`` (``Engine.run_frames`` + the same
aggregation), so the web app never disagrees with the API. On top of that, while each sampled frame is still
in memory, this module derives the visual parts - and only these small derived images outlive the request:

- ``preview``: the analysed image, or for a video its most suspicious sampled frame, at most 480 px (the page
  draws the face boxes over it, in original-pixel coordinates);
- ``thumb``: a 96 px version for the history list;
- ``crops``: a 96 px crop per face (images) or per person (videos: the person's highest-scoring face);
- ``face_verdicts``: each face's graded verdict (``aggregate.verdict`` with the model's threshold and band);
- ``persons``: the analysis' persons (faces tracked across sampled frames, ``deepguard.runtime.track``; the
  video score is the max of their scores), so the chart can mark each person and a card can show its face.

Frames are never all held at once: per frame only the running best is kept, so memory stays bounded for long
videos.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO

import numpy as np
from PIL import Image

from deepguard.output import to_record
from deepguard.runtime.aggregate import verdict
from deepguard.runtime.crop import crop_faces
from deepguard.runtime.decode import load_image, video_info
from deepguard.runtime.types import Analysis, Frame
from deepguard.serving.engine import Accumulator, Engine

PREVIEW_PX = 480
THUMB_PX = 96
CROP_PX = 96
CROP_MARGIN = 0.15  # tighter than the model's 30 %: the crop is for people to look at
MAX_CROPS = 24
MAX_PERSONS = 16


@dataclass
class WebResult:
    """The page's view of one analysis; ``data`` is JSON-ready (images only as separate JPEG bytes)."""

    analysis: Analysis
    data: dict
    preview: bytes
    thumb: bytes


def jpeg(image: np.ndarray, max_side: int, quality: int = 80) -> bytes:
    im = Image.fromarray(image)
    if max(im.size) > max_side:
        im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality, optimize=True)
    return buf.getvalue()


def data_uri(jpeg_bytes: bytes | None) -> str | None:
    return None if not jpeg_bytes else "data:image/jpeg;base64," + base64.b64encode(jpeg_bytes).decode()


@dataclass
class _Person:
    """What the page shows of one tracked person (``Face.person``, set by the runtime tracker in the Accumulator)."""

    id: int
    scores: list[float] = field(default_factory=list)
    times: list[float | None] = field(default_factory=list)
    best: float = -1.0
    best_face: int = -1
    crop: bytes | None = None


class ResultBuilder:
    """Feeds on (frame, outcome) pairs as they come out of the engine; keeps only running bests."""

    def __init__(self, engine: Engine, name: str, kind: str) -> None:
        self.acc = Accumulator(name, kind, engine.classifier.name, engine.threshold, engine.band)
        self.kind = kind
        self.people: dict[int, _Person] = {}
        self.face_person: list[int | None] = []
        self.image_crops: list[tuple[int, int, bytes]] = []  # (face index, person, jpeg) for images
        self.best_frame: Frame | None = None  # downscaled copy of the frame the boxes are drawn on
        self.best_size = (0, 0)  # its original width, height (the boxes' coordinate space)
        self.best_key = (-2.0, -1)

    def add(self, frame: Frame, out) -> None:
        first_face = len(self.acc.faces)
        self.acc.add(out)  # tracks: sets each face's person id
        faces = out.faces
        ids = [f.person for f in faces]
        assert None not in ids
        tracks = [self.people.setdefault(i, _Person(i)) for i in ids]  # type: ignore[arg-type]
        self.face_person.extend(ids)
        crops = None
        if faces:
            boxes = np.array([f.box for f in faces], np.float32)
            crops = crop_faces(frame.image, boxes, CROP_PX, CROP_MARGIN)
        for i, (f, t) in enumerate(zip(faces, tracks, strict=True)):
            assert crops is not None
            if self.kind == "image":
                if len(self.image_crops) < MAX_CROPS:
                    self.image_crops.append((first_face + i, t.id, jpeg(crops[i], CROP_PX, 85)))
            elif f.score > t.best:
                t.best, t.best_face, t.crop = f.score, first_face + i, jpeg(crops[i], CROP_PX, 85)
            t.scores.append(f.score)
            t.times.append(f.time)
        # The frame the boxes are drawn on: highest frame score, then most faces; the first frame otherwise.
        key = (-1.0 if out.score.score is None else out.score.score, len(faces))
        if self.best_frame is None or key > self.best_key:
            self.best_key = key
            self.best_frame = Frame(_shrink(frame.image, PREVIEW_PX), frame.index, frame.time)
            self.best_size = (int(frame.image.shape[1]), int(frame.image.shape[0]))

    def build(self) -> WebResult:
        a = self.acc.result()
        record = to_record(a)
        tracks = [self.people[p.id] for p in a.persons]  # the voting persons only (no one-frame detections)
        persons = [
            {
                "id": t.id,
                "score": round(p.score, 6),  # the confident-frames rule over the person's faces
                "verdict": p.verdict,
                "faces": len(t.scores),
                "max": round(max(t.scores), 6),
                "mean": round(sum(t.scores) / len(t.scores), 6),
                "first": t.times[0],
                "last": t.times[-1],
            }
            for p, t in zip(a.persons, tracks, strict=True)
        ]
        if self.kind == "image":
            crops = [{"face": i, "person": p, "src": data_uri(j)} for i, p, j in self.image_crops]
        else:
            ranked = sorted(tracks, key=lambda t: (-len(t.scores), t.id))[:MAX_PERSONS]
            crops = [
                {"face": t.best_face, "person": t.id, "src": data_uri(t.crop)}
                for t in sorted(ranked, key=lambda t: t.id)
                if t.crop
            ]
        fr = self.best_frame
        assert fr is not None  # acc.result() raised already when no frame was decoded
        w, h = self.best_size
        data = {
            "name": a.path,
            "kind": a.kind,
            "verdict": a.verdict,
            "score": record["score"],
            "threshold": a.threshold,
            "band": list(self.acc.band) if self.acc.band else None,
            "model": a.model,
            "record": record,
            "face_person": self.face_person,
            # each face's graded verdict (real / uncertain / fake, by the model's uncertain band): the page
            # colours and labels every box and card by it, never by the raw score against 0.5
            "face_verdicts": [verdict(f.score, self.acc.threshold, self.acc.band) for f in a.faces],
            "persons": persons,
            "frame": {"index": fr.index, "time": fr.time, "width": w, "height": h},
            "crops": crops,
        }
        return WebResult(a, data, jpeg(fr.image, PREVIEW_PX, 82), jpeg(fr.image, THUMB_PX, 80))


def _shrink(image: np.ndarray, max_side: int) -> np.ndarray:
    h, w = image.shape[:2]
    if max(h, w) <= max_side:
        return image.copy()
    im = Image.fromarray(image)
    im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return np.asarray(im)


def expected_frames(info: dict, fps: float | None, every_frame: bool, max_frames: int | None) -> int | None:
    """How many frames sampling will give (an estimate from the header; None when it cannot say)."""
    n: float | None
    if every_frame or not fps:
        n = info.get("frames")
    else:
        d = info.get("duration")
        n = None if d is None else max(1, math.ceil(d * fps - 1e-6))
    if n is not None and max_frames:
        n = min(n, max_frames)
    return None if n is None else int(n)


def analyze_upload(
    engine: Engine,
    src: IO[bytes],
    name: str,
    kind: str,
    *,
    fps: float | None = None,
    every_frame: bool | None = None,
    max_frames: int | None = None,
    cancelled: Callable[[], bool] | None = None,
    on_total: Callable[[int | None], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> WebResult:
    """Analyse an uploaded image or video (a seekable stream); MediaError for bad media, as the API."""
    cfg = engine.config
    frames: Iterator[Frame] | list[Frame]
    if kind == "image":
        data = src.read()
        image = load_image(data, name=name, max_pixels=cfg.max_frame_pixels)
        frames = [Frame(image, 0, None)]
        if on_total:
            on_total(1)
    else:
        if on_total:
            info = video_info(src, name=name)
            src.seek(0)
            on_total(
                expected_frames(
                    info,
                    cfg.fps if fps is None else fps,
                    cfg.every_frame if every_frame is None else every_frame,
                    cfg.max_frames if max_frames is None else max_frames,
                )
            )
        frames = engine.video_frames(src, name, fps=fps, every_frame=every_frame, max_frames=max_frames)
    builder = ResultBuilder(engine, name, kind)
    for fr, out in engine.run_frames(frames, cancelled):
        builder.add(fr, out)
        if progress:
            progress(builder.acc.n)
    return builder.build()
