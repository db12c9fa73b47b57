"""Labelled face crops for training: listing (folder or manifest), decoding once into a uint8 cache.

Why a cache: the DFDC crops are ~5 KB JPEGs; decoding them every epoch costs more CPU than a small backbone's
forward pass on this 2-core machine. Decoded crops at the training size are kept in one ``.npy`` (memory-mapped),
keyed by the file list and size, so a re-run starts training at once.
"""

from __future__ import annotations

import csv
import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from deepguard.errors import MediaError

IMAGE_EXT = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


@dataclass
class CropSet:
    """Crops (N, S, S, 3) uint8 RGB with labels (1 = fake), group ids (original video) and source names."""

    images: np.ndarray
    labels: np.ndarray
    groups: list[str]
    paths: list[str]
    sources: list[str] | None = None  # None: one source (see training/sources.py)


def list_samples(source: str | Path, split: str | None) -> tuple[list[Path], list[int], list[str]]:
    """Files + labels from ``real/`` and ``fake/`` folders (``source/split/...`` when split is given) or a manifest."""
    source = Path(source)
    if source.is_file():
        root = source.parent
        rows = list(csv.DictReader(source.open(newline="")))
        if not rows or not {"file", "label"} <= set(rows[0]):
            raise MediaError(f"{source}: manifest needs columns file,label[,group,split]")
        rows = [r for r in rows if split is None or r.get("split") == split]
        paths = [root / r["file"] for r in rows]
        labels = [1 if r["label"].strip().lower() in ("fake", "1") else 0 for r in rows]
        groups = [r.get("group") or r["file"] for r in rows]
        return paths, labels, groups
    base = source / split if split and (source / split).is_dir() else source
    paths, labels = [], []
    for lab, name in ((0, "real"), (1, "fake")):
        d = base / name
        if not d.is_dir():
            raise MediaError(f"{base}: expected sub-folders real/ and fake/ (missing {name}/)")
        files = sorted(p for p in d.rglob("*") if p.suffix.lower() in IMAGE_EXT)
        paths += files
        labels += [lab] * len(files)
    return paths, labels, [p.stem for p in paths]


def _load(path: Path, size: int) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise MediaError(f"{path}: not a readable image")
    interp = cv2.INTER_AREA if max(img.shape[:2]) > size else cv2.INTER_LINEAR
    return cv2.cvtColor(cv2.resize(img, (size, size), interpolation=interp), cv2.COLOR_BGR2RGB)


def load_crops(
    source: str | Path, split: str | None, size: int, cache_dir: str | Path | None = None, workers: int = 4
) -> CropSet:
    """Decode (or reuse the cached) crops of one split at ``size`` x ``size``."""
    paths, labels, groups = list_samples(source, split)
    if not paths:
        raise MediaError(f"{source}: no images found for split {split!r}")
    key = hashlib.sha256(("\n".join(map(str, paths)) + f"|{size}").encode()).hexdigest()[:16]
    cache = Path(cache_dir) / f"crops-{split or 'all'}-{size}-{key}.npy" if cache_dir else None
    if cache is not None and cache.is_file():
        images = np.load(cache, mmap_mode="r")
    else:
        images = np.empty((len(paths), size, size, 3), np.uint8)
        with ThreadPoolExecutor(workers) as ex:
            for i, img in enumerate(ex.map(lambda p: _load(p, size), paths, chunksize=64)):
                images[i] = img
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(".tmp.npy")
            np.save(tmp, images)
            tmp.rename(cache)
    return CropSet(images, np.asarray(labels, np.float32), groups, [str(p) for p in paths])
