"""``deepguard evaluate``: score a labelled set with the runtime and report frame- and video-level metrics.

Frame level: one score per image (or per sampled video frame). Video level: frames grouped by video id (the
manifest's ``group`` column or ``--group-pattern``) with the same rule the runtime uses for videos, so offline
numbers match what users see. Samples where no face was found are excluded from the metrics and counted.

``--perturb SPEC`` (``deepguard.evaluation.perturb``) scores the same samples again under each perturbation,
applied to every decoded image / sampled video frame before face detection, and adds a robustness table
(ROC-AUC and its drop vs clean, accuracy, EER per condition). Each file is decoded once for all conditions.

A manifest with a ``source`` column also gets a per-source table (frame level, clean condition): faces per class,
AUC (a one-class source ranked against the other class of the other sources) and the verdict shares at the
model's threshold and uncertain band (:mod:`deepguard.evaluation.by_source`; ``per_source`` in ``--json``).
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from deepguard.errors import DeepGuardError, MediaError
from deepguard.evaluation.dataset import VIDEO_EXTENSIONS, DatasetError, Sample, load_labelled
from deepguard.evaluation.metrics import GroupedScores, binary_metrics, group_scores
from deepguard.evaluation.perturb import (
    CLEAN,
    Perturbation,
    format_robustness,
    parse_perturbations,
    robustness_row,
    score_crops,
)
from deepguard.evaluation.report import format_table, write_json

#: Name of the per-source row for manifest rows whose ``source`` cell is empty.
NO_SOURCE = "(none)"

#: Sampled video frames kept in memory so that every perturbation reuses one decode; a video whose sampled
#: frames exceed this (``--every-frame`` on a long clip) is decoded again per condition instead.
FRAME_CACHE_BYTES = 1 << 30


def _decoded(samples: Sequence[Sample], batch: int):
    from deepguard.runtime.decode import load_image

    for i in range(0, len(samples), batch):
        yield [load_image(x.path) for x in samples[i : i + batch]]


def score_face_crops(
    clf, samples: Sequence[Sample], batch: int = 64, conditions: Sequence[Perturbation] | None = None
):
    """Fast path for crop datasets: decode, resize, and score in large batches (no detector).

    Without ``conditions``: the scores, one float per sample. With them: ``{condition name: scores}``, each
    image decoded once and perturbed per condition before the resize to the model input."""
    by = score_crops(clf, _decoded(samples, batch), conditions or [CLEAN])
    if conditions is None:
        return [float(p) for p in by[CLEAN.name]]
    return {k: [float(p) for p in v] for k, v in by.items()}


def _video_frames(det, path: Path, budget: int | None):
    """The video's sampled frames as a list, or None when they would exceed ``budget`` bytes (then the
    caller re-decodes; ``budget=None`` returns the lazy iterator)."""
    from deepguard.runtime.decode import iter_video_frames

    it = iter_video_frames(path, fps=det.fps, every_frame=det.every_frame, max_frames=det.max_frames)
    if budget is None:
        return it
    frames, size = [], 0
    try:
        for f in it:
            frames.append(f)
            size += f.image.nbytes
            if size > budget:
                return None
    finally:
        close = getattr(it, "close", None)
        if close:
            close()
    return frames


def analyze_perturbed(det, path: str | Path, conditions: Sequence[Perturbation]) -> dict:
    """``det.analyze(path)`` under each condition: ``{condition name: Analysis}``.

    The file is decoded once (videos: the sampled frames, up to :data:`FRAME_CACHE_BYTES`), each condition
    perturbs the decoded image/frames before detection. Failures become ``verdict='error'`` analyses, as in
    ``Detector.analyze``."""
    from deepguard.runtime.decode import load_image, media_kind
    from deepguard.runtime.types import Frame

    name, kind, out = str(path), "image", {}
    try:
        kind = media_kind(path)
        if kind == "image":
            img = load_image(path)
            return {c.name: det.analyze_image(c(img), name) for c in conditions}
        cached = _video_frames(det, Path(path), FRAME_CACHE_BYTES)
        for c in conditions:
            src = cached if cached is not None else _video_frames(det, Path(path), None)
            frames = (Frame(c(f.image), f.index, f.time) for f in src)
            a = det.analyze_frames(frames, name=name, kind="video")
            if a.frames_sampled == 0:
                raise MediaError(f"{name}: no frames could be decoded")
            out[c.name] = a
        return out
    except DeepGuardError as e:
        err = det._error(name, kind, str(e))
    except Exception as e:  # noqa: BLE001 - like Detector.analyze: one bad file must not stop the run
        err = det._error(name, kind, f"{name}: internal error: {type(e).__name__}: {e}")
    return {c.name: out.get(c.name, err) for c in conditions}


def _levels(
    scores, labels, groups, thr: float, source, known: dict[str, float] | None = None
) -> tuple[dict, list[int], GroupedScores]:
    """Frame- and video-level metrics of one condition (+ the kept frame indices and the video scores).

    ``known`` holds the runtime's own score for groups that are exactly one video file: that score comes from the
    person-level rule (faces tracked across frames, max over persons), which frame scores alone cannot rebuild, so
    it replaces the frame-rule score and offline numbers match what users see.
    """
    from deepguard.runtime.aggregate import video_score

    keep = [i for i, s in enumerate(scores) if s is not None]
    frame_m = binary_metrics([labels[i] for i in keep], [scores[i] for i in keep], thr)
    frame_m["no_face"] = len(scores) - len(keep)
    try:
        g = group_scores(scores, groups, labels, rule=lambda v: video_score(v))
    except ValueError as e:  # e.g. DFDC's `group` = source video, shared by a real clip and its fakes
        raise DatasetError(
            f"{source}: {e}; choose the video id with --video-column or --group-pattern"
        ) from e
    for i, name in enumerate(g.groups):
        if known and known.get(name) is not None:
            g.scores[i] = known[name]
    video_m = binary_metrics(g.labels, g.scores, thr)
    video_m["no_face"] = len(g.skipped)
    return {"frame": frame_m, "video": video_m}, keep, g


def source_rows(scores, labels, sources, threshold: float, band) -> list[dict] | None:
    """Per-source rows (:func:`deepguard.evaluation.by_source.per_source`) over the scored frames; None without
    sources (no sample has one) or without a scored frame."""
    from deepguard.evaluation.by_source import per_source

    if all(s is None for s in sources):
        return None
    keep = [i for i, s in enumerate(scores) if s is not None]
    if not keep:
        return None
    return per_source(
        [scores[i] for i in keep],
        [labels[i] for i in keep],
        [sources[i] if sources[i] is not None else NO_SOURCE for i in keep],
        threshold,
        tuple(band) if band is not None else None,
    )


def evaluate(args: argparse.Namespace) -> str:
    from deepguard.options import detector_from_args

    spec = getattr(args, "perturb", None)
    conditions = parse_perturbations(spec) if spec else [CLEAN]  # a bad spec fails before any work
    samples = _load_samples(args)
    if getattr(args, "rescore_rate", None) is None:
        args.rescore_rate = 0.0  # metrics count classifier outputs on every sampled face: dense unless asked
    det = detector_from_args(args)
    names = [c.name for c in conditions]
    sc = _score_samples(det, samples, conditions, args.face_crops)
    thr, band = det.threshold, getattr(det, "band", None)
    by_condition = {
        n: _levels(sc.scores[n], sc.labels[n], sc.groups[n], thr, args.source, sc.known[n]) for n in names
    }
    levels, keep, g = by_condition[CLEAN.name]
    clean_scores, clean_labels, errors = sc.scores[CLEAN.name], sc.labels[CLEAN.name], sc.errors[CLEAN.name]
    by_source = source_rows(clean_scores, clean_labels, sc.sources, thr, band)
    robustness = _robustness(by_condition, sc.errors, names) if len(conditions) > 1 else None
    if args.roc:
        _plot_roc(args, det, [clean_labels[i] for i in keep], [clean_scores[i] for i in keep], g)
    if args.json:
        write_json(_json_report(args, det, levels, errors, names, robustness, by_source), args.json)
    head = (
        f"model {det.model_name}; {len(samples)} samples; {errors} errors; "
        f"{levels['frame']['no_face']} frames without a face (excluded)"
    )
    text = head + "\n" + format_table(levels)
    if by_source:
        text += _per_source_text(by_source, thr, band)
    if robustness:
        text += _robustness_text(robustness, by_condition, names)
    return text


def _load_samples(args: argparse.Namespace) -> list[Sample]:
    """The labelled samples, thinned evenly to ``--limit``."""
    samples = load_labelled(args.source, args.split, args.group_pattern, args.video_column)
    if args.limit and args.limit < len(samples):
        idx = np.linspace(0, len(samples) - 1, args.limit).round().astype(int)
        samples = [samples[i] for i in idx]
    return samples


class _Scores:
    """Per condition: one score (None: no face), label and video id per frame, errors, and the runtime's own
    score of each single-file video (see :func:`_levels`); the sources are for the clean condition only."""

    def __init__(self, names: Sequence[str]) -> None:
        self.scores: dict[str, list[float | None]] = {n: [] for n in names}
        self.labels: dict[str, list[int]] = {n: [] for n in names}
        self.groups: dict[str, list[str]] = {n: [] for n in names}
        self.sources: list[str | None] = []  # clean condition only (the per-source table)
        self.errors = dict.fromkeys(names, 0)
        self.known: dict[str, dict[str, float]] = {n: {} for n in names}


def _score_samples(det, samples: Sequence[Sample], conditions: Sequence[Perturbation], face_crops) -> _Scores:
    """Score every sample under every condition: crop datasets by the fast path, anything else file by file."""
    sc = _Scores([c.name for c in conditions])
    if face_crops and not any(x.path.suffix.lower() in VIDEO_EXTENSIONS for x in samples):
        by = score_face_crops(det.classifier, samples, conditions=conditions)
        for n in sc.scores:
            sc.scores[n] = list(by[n])
            sc.labels[n] = [x.label for x in samples]
            sc.groups[n] = [x.group_key for x in samples]
        sc.sources = [x.source for x in samples]
    else:
        _score_files(det, samples, conditions, sc)
    return sc


def _score_files(det, samples: Sequence[Sample], conditions: Sequence[Perturbation], sc: _Scores) -> None:
    """Analyse each file with the full runtime (detector included) and add its frames to ``sc``."""
    from tqdm import tqdm

    per_group = Counter(x.group_key for x in samples)
    for x in tqdm(samples, desc="evaluate", unit="file", disable=None):
        if len(conditions) == 1:
            results = {CLEAN.name: det.analyze(x.path)}
        else:
            results = analyze_perturbed(det, x.path, conditions)
        for n, a in results.items():
            sc.errors[n] += a.verdict == "error"
            frames = [fr.score for fr in a.frames] if a.kind == "video" else [a.score]
            if a.kind == "video" and per_group[x.group_key] == 1 and a.score is not None:
                sc.known[n][str(x.group_key)] = a.score
            sc.scores[n] += frames
            sc.labels[n] += [x.label] * len(frames)
            sc.groups[n] += [x.group_key] * len(frames)
            if n == CLEAN.name:
                sc.sources += [x.source] * len(frames)


def _robustness(by_condition: dict, errs: dict[str, int], names: Sequence[str]) -> dict[str, list[dict]]:
    """Frame- and video-level robustness rows, each condition against the clean one."""
    levels = by_condition[CLEAN.name][0]
    return {
        level: [
            {**robustness_row(n, by_condition[n][0][level], levels[level]), "errors": errs[n]} for n in names
        ]
        for level in ("frame", "video")
    }


def _plot_roc(
    args: argparse.Namespace, det, labels: list[int], scores: list[float], g: GroupedScores
) -> None:
    from deepguard.evaluation.plots import RocSeries, plot_roc

    plot_roc(
        labels,
        scores,
        args.roc,
        title=f"ROC: {Path(args.source).name} ({det.model_name})",
        name="frames",
        more=[RocSeries("videos", g.labels, g.scores)],
    )


def _json_report(
    args: argparse.Namespace, det, levels: dict, errors: int, names, robustness, by_source
) -> dict:
    """What ``--json`` writes."""
    band = getattr(det, "band", None)
    return {
        "model": det.model_name,
        "source": str(args.source),
        "split": args.split,
        "levels": levels,
        "errors": errors,
        **({"perturb": names[1:], "robustness": robustness} if robustness else {}),
        **(
            {
                "per_source": by_source,
                "threshold": det.threshold,
                "uncertain_band": list(band) if band is not None else None,
            }
            if by_source
            else {}
        ),
    }


def _per_source_text(by_source: list[dict], thr: float, band) -> str:
    from deepguard.evaluation.by_source import format_per_source

    rule = (
        f"real < {band[0]:.4g} <= uncertain < {band[1]:.4g} <= fake"
        if band is not None
        else f"real < {thr:.4g} <= fake"
    )
    return f"\n\nper source, frame level ({rule}):\n" + format_per_source(by_source)


def _robustness_text(robustness: dict[str, list[dict]], by_condition: dict, names: Sequence[str]) -> str:
    """The frame-level robustness table, and the video-level one when videos group frames of any condition."""
    text = (
        "\n\nrobustness, frame level (each perturbation applied to the decoded media before face "
        "detection/cropping):\n" + format_robustness(robustness["frame"])
    )
    if any(by_condition[n][0]["video"]["n"] != by_condition[n][0]["frame"]["n"] for n in names):
        text += "\n\nrobustness, video level:\n" + format_robustness(robustness["video"])
    return text
