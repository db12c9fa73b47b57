"""Face crops for calibration / validation of a conversion: arrays or image folders -> uint8 (N, S, S, 3).

Kept apart from the converters so the ``deepguard convert`` command and tests can read crops without onnx.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from deepguard.errors import MediaError

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def uint8_crops(arr: np.ndarray | None, what: str) -> np.ndarray | None:
    if arr is None:
        return None
    arr = np.asarray(arr)
    if arr.ndim != 4 or arr.shape[-1] != 3 or len(arr) == 0:
        raise ValueError(f"{what} must be a non-empty (N, S, S, 3) RGB array, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    return arr


def load_crops(
    src: str | os.PathLike[str], size: int | None = None, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Face crops for calibration/validation from a ``.npy``/``.npz`` array or a directory of images.

    A directory with ``real/`` and ``fake/`` sub-folders yields labels 0/1; otherwise labels are None. Images are
    decoded as RGB and resized (bilinear) to ``size`` if they differ. ``limit`` keeps an evenly spaced subset.
    """
    p = Path(src)
    if not p.exists():
        raise MediaError(f"{p}: crops path not found")
    labels: np.ndarray | None = None
    if p.is_file():
        try:
            data = np.load(p)
            if isinstance(data, np.lib.npyio.NpzFile):
                labels = data["labels"] if "labels" in data.files else None
                arr = data["crops"] if "crops" in data.files else data[data.files[0]]
            else:
                arr = data
        except Exception as exc:
            raise MediaError(f"{p}: cannot read crops array ({type(exc).__name__}: {exc})") from exc
        arr = np.asarray(arr)
        if arr.ndim != 4 or arr.shape[-1] != 3:
            raise MediaError(f"{p}: crops array must be (N, S, S, 3), found {arr.shape}")
        if size is not None and arr.shape[1:3] != (size, size):
            arr = np.stack([_resize(a, size) for a in uint8_crops(arr, str(p))])
    else:
        sub = {"real": 0, "fake": 1}
        if all((p / d).is_dir() for d in sub):
            files = [
                (f, lab)
                for d, lab in sub.items()
                for f in sorted((p / d).rglob("*"))
                if f.suffix.lower() in IMAGE_EXTS
            ]
            labelled = True
        else:
            files = [(f, -1) for f in sorted(p.rglob("*")) if f.suffix.lower() in IMAGE_EXTS]
            labelled = False
        if not files:
            raise MediaError(f"{p}: no images ({', '.join(sorted(IMAGE_EXTS))}) found")
        if limit and len(files) > limit:
            files = [files[i] for i in np.linspace(0, len(files) - 1, limit).round().astype(int)]
        imgs = [_read_image(f, size) for f, _ in files]
        shapes = {im.shape for im in imgs}
        if len(shapes) > 1:
            raise MediaError(f"{p}: crops differ in size {sorted(shapes)}; pass --input-size to resize them")
        arr = np.stack(imgs)
        labels = np.array([lab for _, lab in files]) if labelled else None
    if limit and len(arr) > limit:
        idx = np.linspace(0, len(arr) - 1, limit).round().astype(int)
        arr, labels = arr[idx], None if labels is None else labels[idx]
    return uint8_crops(arr, str(p)), labels


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))


def _read_image(path: Path, size: int | None) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB")
            if size is not None and rgb.size != (size, size):
                rgb = rgb.resize((size, size), Image.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8)
    except Exception as exc:
        raise MediaError(f"{path}: cannot decode image ({type(exc).__name__}: {exc})") from exc
