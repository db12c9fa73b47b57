"""Robustness report: how much does the detector lose when the media was re-encoded, downscaled or blurred?

A *perturbation spec* is a comma-separated list of conditions, e.g. ``"jpeg:50,scale:0.5,blur:1.0"``; each
condition is one perturbation or several chained with ``+`` (``"scale:0.5+jpeg:70"``: what a messenger does
to a photo). Kinds (values in brackets):

* ``jpeg:Q``    re-encode as JPEG at quality Q [1..100] (OpenCV/libjpeg, 4:2:0 chroma subsampling);
* ``scale:F``   downscale by F [0 < F <= 1] with area interpolation; the pipeline then works on the smaller
  image, so face crops get upsampled back to the model input: the lost detail is what is being measured;
* ``blur:S``    Gaussian blur with sigma S pixels [> 0];
* ``noise:S``   additive Gaussian noise with standard deviation S grey levels [> 0], seeded by the image's
  content (deterministic, but not the same noise pattern on every image);
* ``sharpen:A`` unsharp mask of amount A [0 < A <= 5] over a 1.5 px Gaussian (what phone cameras and photo
  editors do to real photos: sharpness is also what makes GAN faces stand out);
* ``gamma:G``   tone curve ``255 * (x / 255) ** G`` [0.2..5]: G < 1 brightens, G > 1 darkens (exposure, grading);
* ``saturation:F`` colour saturation times F [0..2] in HLS; 0 makes a black-and-white photo;
* ``none`` / ``clean``: no change. The clean condition is always evaluated first and is the ΔAUC reference.

Every perturbation acts on the decoded RGB uint8 image *before* face detection/cropping, i.e. on what a user's
media would have suffered, and is deterministic. :func:`robustness_table` (in-memory images) and
:func:`robustness_from_files` (decoded once from disk) score a classifier under each condition and return one
row per condition; ``deepguard evaluate --perturb SPEC`` does the same through the full runtime.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deepguard.errors import DeepGuardError
from deepguard.evaluation.report import format_cell, render_table

Image = np.ndarray  # (H, W, 3) uint8 RGB


class PerturbationError(DeepGuardError, ValueError):
    """A perturbation spec that cannot be parsed (the message names the offending item)."""


def _check(img: np.ndarray) -> np.ndarray:
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        got = f"{img.shape} {img.dtype}" if isinstance(img, np.ndarray) else type(img).__name__
        raise ValueError(f"perturbations take (H, W, 3) uint8 RGB images, got {got}")
    return img


def jpeg(img: Image, quality: float) -> Image:
    """Re-encode as JPEG at ``quality`` (1..100) and decode again (the runtime's crop re-encode, one image)."""
    from deepguard.runtime.crop import jpeg_recode

    return jpeg_recode(_check(img), int(quality))


def downscale(img: Image, factor: float) -> Image:
    """Shrink both sides by ``factor`` (0 < factor <= 1) with area interpolation (at least 1 px)."""
    import cv2

    h, w = _check(img).shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    if size == (w, h):
        return img.copy()
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def gaussian_blur(img: Image, sigma: float) -> Image:
    """Gaussian blur with standard deviation ``sigma`` px (kernel chosen by OpenCV: ~6 sigma wide)."""
    import cv2

    return cv2.GaussianBlur(_check(img), (0, 0), sigmaX=float(sigma), sigmaY=float(sigma))


def gaussian_noise(img: Image, sigma: float) -> Image:
    """Add N(0, sigma^2) noise per pixel and channel (grey levels), rounded and clipped to uint8.

    The generator is seeded with a checksum of the image, so the result depends only on the input."""
    _check(img)
    seed = zlib.crc32(np.ascontiguousarray(img).data, zlib.crc32(repr(img.shape).encode()))
    noise = np.random.default_rng(seed).normal(0.0, float(sigma), img.shape)
    return np.clip(np.rint(img + noise), 0, 255).astype(np.uint8)


def sharpen(img: Image, amount: float) -> Image:
    """Unsharp mask: ``img + amount * (img - blur(img, 1.5 px))``, rounded and clipped."""
    import cv2

    x = _check(img).astype(np.float32)
    soft = cv2.GaussianBlur(x, (0, 0), sigmaX=1.5, sigmaY=1.5)
    return np.clip(np.rint(x + float(amount) * (x - soft)), 0, 255).astype(np.uint8)


def gamma(img: Image, g: float) -> Image:
    """Tone curve ``255 * (x / 255) ** g`` through a lookup table."""
    lut = np.clip(np.rint(255.0 * (np.arange(256) / 255.0) ** float(g)), 0, 255).astype(np.uint8)
    return lut[_check(img)]


def saturation(img: Image, factor: float) -> Image:
    """Saturation times ``factor`` in OpenCV's HLS space (0: grey, the luma kept as HLS lightness)."""
    import cv2

    hls = cv2.cvtColor(_check(img), cv2.COLOR_RGB2HLS).astype(np.float32)
    hls[..., 2] = np.clip(hls[..., 2] * float(factor), 0, 255)
    return cv2.cvtColor(np.rint(hls).astype(np.uint8), cv2.COLOR_HLS2RGB)


@dataclass(frozen=True)
class _Kind:
    fn: Callable[[Image, float], Image]
    valid: Callable[[float], bool]
    expects: str
    example: str
    integer: bool = False


KINDS: dict[str, _Kind] = {
    "jpeg": _Kind(jpeg, lambda q: 1 <= q <= 100, "an integer quality 1..100", "jpeg:50", integer=True),
    "scale": _Kind(downscale, lambda f: 0 < f <= 1, "a factor 0 < F <= 1", "scale:0.5"),
    "blur": _Kind(gaussian_blur, lambda s: 0 < s <= 100, "a sigma 0 < S <= 100 (pixels)", "blur:1.0"),
    "noise": _Kind(gaussian_noise, lambda s: 0 < s <= 255, "a sigma 0 < S <= 255 (grey levels)", "noise:5"),
    "sharpen": _Kind(sharpen, lambda a: 0 < a <= 5, "an amount 0 < A <= 5", "sharpen:1.5"),
    "gamma": _Kind(gamma, lambda g: 0.2 <= g <= 5, "an exponent 0.2 <= G <= 5", "gamma:0.7"),
    "saturation": _Kind(saturation, lambda f: 0 <= f <= 2, "a factor 0 <= F <= 2 (0: grey)", "saturation:0"),
}
_CLEAN_WORDS = frozenset({"none", "clean"})


@dataclass(frozen=True)
class Perturbation:
    """One evaluation condition: perturbation steps applied in order (none = the clean condition).

    Call it on an (H, W, 3) uint8 RGB image; the input is never modified."""

    steps: tuple[tuple[str, float], ...] = ()

    @property
    def name(self) -> str:
        if not self.steps:
            return "clean"
        return "+".join(f"{k}:{int(v) if KINDS[k].integer else format(v, 'g')}" for k, v in self.steps)

    @property
    def is_clean(self) -> bool:
        return not self.steps

    def __call__(self, img: Image) -> Image:
        _check(img)
        for kind, value in self.steps:
            img = KINDS[kind].fn(img, value)
        return img

    def __str__(self) -> str:
        return self.name


CLEAN = Perturbation()


def _parse_step(text: str, spec: str) -> tuple[str, float] | None:
    where = f"perturbation {text.strip()!r}" + (f" in {spec!r}" if spec.strip() != text.strip() else "")
    kind, sep, raw = (part.strip() for part in text.partition(":"))
    kind = kind.lower()
    if kind in _CLEAN_WORDS and not sep:
        return None
    known = ", ".join([*(k.example for k in KINDS.values()), "none"])
    if kind not in KINDS:
        raise PerturbationError(f"{where}: unknown kind {kind!r} (known: {known})")
    k = KINDS[kind]
    if not raw:
        raise PerturbationError(f"{where}: {kind} needs a value, e.g. {k.example}")
    try:
        value = float(raw)
    except ValueError:
        raise PerturbationError(f"{where}: {raw!r} is not a number; {kind} takes {k.expects}") from None
    if not math.isfinite(value) or not k.valid(value) or (k.integer and value != int(value)):
        raise PerturbationError(f"{where}: {kind} takes {k.expects}, got {raw}")
    return kind, value


def parse_perturbations(spec: str | Sequence[str] | None) -> list[Perturbation]:
    """Parse ``"jpeg:50,scale:0.5,blur:1.0"`` into conditions, the clean one first.

    Items are separated by commas (a list of items works too), steps within an item by ``+``; whitespace and
    case are ignored, empty items skipped, duplicates dropped. Raises :class:`PerturbationError` naming the
    bad item.
    """
    items = [spec] if spec is None or isinstance(spec, str) else list(spec)
    text = ",".join(s for s in items if s)
    out: list[Perturbation] = [CLEAN]
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        steps = []
        for part in item.split("+"):
            if not part.strip():
                raise PerturbationError(f"perturbation {item!r}: empty step around '+'")
            step = _parse_step(part, text)
            if step is not None:
                steps.append(step)
        p = Perturbation(tuple(steps))
        if p not in out:
            out.append(p)
    return out


# --------------------------------------------------------------------------------------- scoring crops


def to_model_input(img: Image, size: int) -> Image:
    """Resize a face crop to the model's ``size`` x ``size`` input, as the runtime's face-crop mode does
    (area interpolation when shrinking, bilinear when enlarging)."""
    import cv2

    if img.shape[0] == size and img.shape[1] == size:
        return img
    interp = cv2.INTER_AREA if min(img.shape[:2]) > size else cv2.INTER_LINEAR
    return cv2.resize(img, (size, size), interpolation=interp)


def score_crops(
    classifier: Any,
    batches: Iterable[Sequence[Image]],
    conditions: Sequence[Perturbation] = (CLEAN,),
) -> dict[str, np.ndarray]:
    """P(fake) of every face crop under every condition: ``{condition name: (N,) float64}``.

    ``batches`` yields lists of decoded crops (any size); each batch is perturbed per condition, resized to
    the classifier's input and scored, so every image is decoded once and only one batch is held at a time.
    """
    size = int(classifier.input_size)
    out: dict[str, list[np.ndarray]] = {c.name: [] for c in conditions}
    for imgs in batches:
        if len(imgs) == 0:
            continue
        for c in conditions:
            crops = np.stack([to_model_input(c(im), size) for im in imgs])
            out[c.name].append(np.asarray(classifier.score(crops)[0], np.float64).reshape(-1))
    return {k: np.concatenate(v) if v else np.zeros(0, np.float64) for k, v in out.items()}


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else float(a) - float(b)


def robustness_row(condition: str, metrics: Mapping[str, Any], clean: Mapping[str, Any]) -> dict[str, Any]:
    """One table row from :func:`~deepguard.evaluation.metrics.binary_metrics` output (``clean``: the
    reference condition's metrics). ``tpr``: fakes flagged, ``fpr``: reals flagged, at the threshold."""
    tp, fn, fp, tn = (int(metrics[k]) for k in ("tp", "fn", "fp", "tn"))
    return {
        "condition": condition,
        "n": int(metrics["n"]),
        "n_pos": int(metrics["n_pos"]),
        "n_neg": int(metrics["n_neg"]),
        "no_face": int(metrics.get("no_face", 0) or 0),
        "roc_auc": metrics.get("roc_auc"),
        "delta_auc": _delta(metrics.get("roc_auc"), clean.get("roc_auc")),
        "threshold": float(metrics["threshold"]),
        "accuracy": float(metrics["accuracy"]),
        "tpr": tp / (tp + fn) if tp + fn else None,
        "fpr": fp / (fp + tn) if fp + tn else None,
        "eer": metrics.get("eer"),
        "log_loss": metrics.get("log_loss"),
    }


def robustness_rows(
    labels: Sequence[int] | np.ndarray,
    scores: Mapping[str, Sequence[float | None] | np.ndarray],
    threshold: float,
) -> list[dict[str, Any]]:
    """Rows for ``{condition: scores}`` (in mapping order; the first is the ΔAUC reference). None/NaN scores
    (no face found) are left out of that condition's metrics and counted as ``no_face``."""
    from deepguard.evaluation.metrics import binary_metrics

    y = np.asarray(labels)
    rows: list[dict[str, Any]] = []
    clean: Mapping[str, Any] = {}
    for name, s in scores.items():
        v = np.array([np.nan if x is None else float(x) for x in s], np.float64)
        if v.size != y.size:
            raise ValueError(f"{name}: {v.size} scores for {y.size} labels")
        keep = np.isfinite(v)
        m = binary_metrics(y[keep], v[keep], threshold)
        m["no_face"] = int((~keep).sum())
        clean = clean or m
        rows.append(robustness_row(name, m, clean))
    return rows


def _classifier(classifier: Any) -> Any:
    if isinstance(classifier, (str, Path)):
        from deepguard.runtime.classify import FaceClassifier

        return FaceClassifier(classifier, providers="cpu")
    return classifier


def _batched(items: Sequence[Any], batch: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), batch):
        yield items[i : i + batch]


def robustness_table(
    classifier: Any,
    images_uint8: Sequence[Image] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    spec: str | Sequence[Perturbation] | None,
    *,
    threshold: float | None = None,
    batch: int = 64,
) -> list[dict[str, Any]]:
    """Score in-memory face crops (``(N, H, W, 3)`` uint8 or a list of crops) clean and under each condition
    of ``spec``; one row per condition (keys: condition, n, n_pos, n_neg, no_face, roc_auc, delta_auc,
    threshold, accuracy, tpr, fpr, eer, log_loss).

    ``classifier``: a :class:`~deepguard.runtime.classify.FaceClassifier` (or a path to a fused ONNX model);
    ``threshold`` defaults to the model's. Crops are perturbed at the size given, then resized to the model
    input, so a set already at the input size measures a slightly different thing than the originals (see
    :func:`robustness_from_files`).
    """
    clf = _classifier(classifier)
    conditions = _conditions(spec)
    if len(images_uint8) != len(labels):
        raise ValueError(f"{len(images_uint8)} images for {len(labels)} labels")
    scores = score_crops(clf, _batched(images_uint8, batch), conditions)
    return robustness_rows(labels, scores, clf.threshold if threshold is None else threshold)


def robustness_from_files(
    classifier: Any,
    paths: Sequence[str | Path],
    labels: Sequence[int] | np.ndarray,
    spec: str | Sequence[Perturbation] | None,
    *,
    threshold: float | None = None,
    batch: int = 64,
) -> list[dict[str, Any]]:
    """:func:`robustness_table` on face-crop image files (decoded once each, ``batch`` at a time) - the way
    ``deepguard evaluate --face-crops --perturb`` measures, on the originals rather than resized copies."""
    from deepguard.runtime.decode import load_image

    paths = list(paths)
    if len(paths) != len(labels):
        raise ValueError(f"{len(paths)} paths for {len(labels)} labels")
    clf = _classifier(classifier)
    batches = ([load_image(p) for p in chunk] for chunk in _batched(paths, batch))
    scores = score_crops(clf, batches, _conditions(spec))
    return robustness_rows(labels, scores, clf.threshold if threshold is None else threshold)


def _conditions(spec: str | Sequence[Perturbation] | None) -> list[Perturbation]:
    if spec is None or isinstance(spec, str) or all(isinstance(s, str) for s in spec):
        return parse_perturbations(spec)  # type: ignore[arg-type]
    out = [CLEAN] + [p for p in spec if not p.is_clean]
    return list(dict.fromkeys(out))


# ------------------------------------------------------------------------------------------- reporting

_COLUMNS = [
    ("n", "n", "d"),
    ("auc", "roc_auc", ".4f"),
    ("dAUC", "delta_auc", "+.4f"),
    ("acc", "accuracy", ".4f"),
    ("tpr", "tpr", ".4f"),
    ("fpr", "fpr", ".4f"),
    ("eer", "eer", ".4f"),
]


def format_robustness(rows: Sequence[Mapping[str, Any]]) -> str:
    """Plain-text table of :func:`robustness_rows` output (ASCII only; a ``no_face`` column when any
    condition lost faces). tpr/fpr/acc are at the rows' decision threshold, printed underneath."""
    cols = list(_COLUMNS)
    if any(r.get("no_face") for r in rows):
        cols.insert(1, ("no_face", "no_face", "d"))
    header = ["condition"] + [c[0] for c in cols]
    body = [[str(r["condition"])] + [format_cell(r.get(k), f) for _, k, f in cols] for r in rows]
    lines = render_table(header, body)
    thresholds = {r.get("threshold") for r in rows}
    if len(thresholds) == 1 and None not in thresholds:
        lines.append(f"(acc/tpr/fpr at threshold {float(thresholds.pop()):g}; dAUC vs clean)")
    return "\n".join(lines)
