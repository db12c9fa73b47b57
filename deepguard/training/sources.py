"""Labelled faces from several data roots, each row tagged with its source, re-cropped like inference and cached.

Why sources: a detector trained on one dataset learns that dataset's camera and compression; the product must
be judged per source and leave-one-source-out (:mod:`deepguard.evaluation.by_source`). A manifest's ``source``
column names each row's source; a manifest without one is a single source named after its folder
(``../shared/data/dfdc-faces/manifest.csv`` -> ``dfdc-faces``).

Every image is re-cropped with the runtime's detector and crop rule (:mod:`deepguard.training.recrop`); images
without a detected face are dropped and counted per source. The result is cached in one ``.npz`` keyed by the
file list, size and crop settings, so a re-run (or the build step after training) starts at once.
"""

from __future__ import annotations

import csv
import hashlib
import json
import zlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from deepguard.errors import MediaError
from deepguard.training.data import CropSet, list_samples
from deepguard.training.recrop import CONTEXT_MARGIN, DETECT_PAD


def manifest_sources(manifest: str | Path) -> list[str] | None:
    """The ``source`` column of a manifest CSV (None when it has none)."""
    with Path(manifest).open(newline="") as fh:
        rows = csv.DictReader(fh)
        if "source" not in (rows.fieldnames or []):
            return None
        return [r["source"] for r in rows]


def list_sourced(
    roots: Sequence[str | Path], split: str | None
) -> tuple[list[Path], list[int], list[str], list[str]]:
    """``(paths, labels, groups, sources)`` of one split over several manifests / folders."""
    paths, labels, groups, sources = [], [], [], []
    for root in roots:
        root = Path(root)
        p, lab, g = list_samples(root, split)
        src = None
        if root.is_file():
            col = manifest_sources(root)
            if col is not None:
                with root.open(newline="") as fh:
                    rows = list(csv.DictReader(fh))
                src = [r["source"] for r in rows if split is None or r.get("split") == split]
        name = (root.parent if root.is_file() else root).name
        paths += p
        labels += lab
        groups += [f"{name}/{x}" for x in g]
        sources += src if src is not None else [name] * len(p)
    return paths, labels, groups, sources


def context_of(path: str | Path) -> float:
    """The per-file context margin (uniform in :data:`CONTEXT_MARGIN`, seeded by the file name: reproducible)."""
    rng = np.random.default_rng(zlib.crc32(Path(path).name.encode()))
    return float(rng.uniform(*CONTEXT_MARGIN))


def _read_rgb(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise MediaError(f"{path}: not a readable image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def recrop_files(
    paths: Sequence[Path], size: int, detector=None, chunk: int = 64, context: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Re-cropped faces ``(N, size, size, 3)`` uint8 and ``found`` (N,) bool for image files (decoded in threads);
    each file keeps its own context band (:func:`context_of`), or ``context`` for all when given."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    from deepguard.training.recrop import recrop_images

    if detector is None:
        from deepguard.runtime.facedet import load_detector

        detector = load_detector(None)
    crops = np.zeros((len(paths), size, size, 3), np.uint8)
    found = np.zeros(len(paths), bool)
    with ThreadPoolExecutor(2) as ex, tqdm(total=len(paths), desc="re-crop", mininterval=30) as bar:
        for start in range(0, len(paths), chunk):
            part = list(paths[start : start + chunk])
            imgs = list(ex.map(_read_rgb, part))
            ctx = [context_of(p) if context is None else context for p in part]
            c, f, _ = recrop_images(imgs, detector, size, ctx)
            crops[start : start + len(part)], found[start : start + len(part)] = c, f
            bar.update(len(part))
    return crops, found


def load_sources(
    roots: Sequence[str | Path], split: str | None, size: int, cache_dir: str | Path | None = None
) -> tuple[CropSet, dict]:
    """Re-cropped faces of one split over ``roots`` (faces found only) and a per-source report of what was dropped.

    Training crops keep a context band drawn per file (augmentation that also hides each source's framing);
    validation crops are cut exactly as inference cuts them (:data:`INFERENCE_CONTEXT`, the model's
    ``crop_context``), so the threshold rule and every val number hold for what the runtime scores.
    """
    from deepguard.training.recrop import INFERENCE_CONTEXT

    paths, labels, groups, sources = list_sourced(roots, split)
    if not paths:
        raise MediaError(f"{', '.join(map(str, roots))}: no images found for split {split!r}")
    context = INFERENCE_CONTEXT if split == "val" else None
    tag = "" if context is None else f"|context={context}"
    key = hashlib.sha256(
        ("\n".join(map(str, paths)) + f"|{size}|{CONTEXT_MARGIN}|{DETECT_PAD}{tag}").encode()
    ).hexdigest()[:16]
    cache = Path(cache_dir) / f"recrop-{split or 'all'}-{size}-{key}.npz" if cache_dir else None
    if cache is not None and cache.is_file():
        z = np.load(cache)
        crops, found = z["crops"], z["found"]
    else:
        crops, found = recrop_files(paths, size, context=context)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(".tmp.npz")
            np.savez(tmp, crops=crops, found=found)
            tmp.rename(cache)
    keep = np.flatnonzero(found)
    total, kept = Counter(sources), Counter(sources[i] for i in keep)
    report = {s: {"files": total[s], "faces": kept[s], "no_face": total[s] - kept[s]} for s in sorted(total)}
    crop_set = CropSet(
        images=crops[keep],
        labels=np.asarray(labels, np.float32)[keep],
        groups=[groups[i] for i in keep],
        paths=[str(paths[i]) for i in keep],
        sources=[sources[i] for i in keep],
    )
    print(f"[data] {split}: {json.dumps(report)}", flush=True)
    return crop_set, report


__all__ = ["context_of", "list_sourced", "load_sources", "manifest_sources", "recrop_files"]
