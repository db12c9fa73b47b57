"""``deepguard evaluate``: score a labelled set with the runtime and report frame- and video-level metrics.

Frame level: one score per image (or per sampled video frame). Video level: frames grouped by video id (the
manifest's ``group`` column or ``--group-pattern``) with the same rule the runtime uses for videos, so offline
numbers match what users see. Samples where no face was found are excluded from the metrics and counted.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from deepguard.evaluation.dataset import VIDEO_EXTENSIONS, DatasetError, Sample, load_labelled
from deepguard.evaluation.metrics import binary_metrics, group_scores
from deepguard.evaluation.report import format_table, write_json


def score_face_crops(clf, samples: Sequence[Sample], batch: int = 64) -> list[float]:
    """Fast path for crop datasets: decode, resize, and score in large batches (no detector)."""
    import cv2

    from deepguard.runtime.decode import load_image

    s = clf.input_size
    out: list[float] = []
    for i in range(0, len(samples), batch):
        imgs = [load_image(x.path) for x in samples[i : i + batch]]
        crops = np.stack(
            [
                cv2.resize(
                    im, (s, s), interpolation=cv2.INTER_AREA if min(im.shape[:2]) > s else cv2.INTER_LINEAR
                )
                for im in imgs
            ]
        )
        out.extend(float(p) for p in clf.score(crops)[0])
    return out


def evaluate(args: argparse.Namespace) -> str:
    from tqdm import tqdm

    from deepguard.cli import _detector_from
    from deepguard.runtime.aggregate import video_score

    samples = load_labelled(args.source, args.split, args.group_pattern, args.video_column)
    if args.limit and args.limit < len(samples):
        idx = np.linspace(0, len(samples) - 1, args.limit).round().astype(int)
        samples = [samples[i] for i in idx]
    det = _detector_from(args)
    f_scores: list[float | None] = []
    f_labels: list[int] = []
    f_groups: list[str] = []
    errors = 0
    if args.face_crops and not any(x.path.suffix.lower() in VIDEO_EXTENSIONS for x in samples):
        f_scores = list(score_face_crops(det.classifier, samples))
        f_labels = [x.label for x in samples]
        f_groups = [x.group_key for x in samples]
    else:
        for x in tqdm(samples, desc="evaluate", unit="file", disable=None):
            a = det.analyze(x.path)
            errors += a.verdict == "error"
            frames = [fr.score for fr in a.frames] if a.kind == "video" else [a.score]
            f_scores += frames
            f_labels += [x.label] * len(frames)
            f_groups += [x.group_key] * len(frames)
    keep = [i for i, s in enumerate(f_scores) if s is not None]
    thr = det.threshold
    frame_m = binary_metrics([f_labels[i] for i in keep], [f_scores[i] for i in keep], thr)
    frame_m["no_face"] = len(f_scores) - len(keep)
    try:
        g = group_scores(f_scores, f_groups, f_labels, rule=lambda v: video_score(v))
    except ValueError as e:  # e.g. DFDC's `group` = source video, shared by a real clip and its fakes
        raise DatasetError(
            f"{args.source}: {e}; choose the video id with --video-column or --group-pattern"
        ) from e
    video_m = binary_metrics(g.labels, g.scores, thr)
    video_m["no_face"] = len(g.skipped)
    levels = {"frame": frame_m, "video": video_m}
    if args.roc:
        from deepguard.evaluation.plots import RocSeries, plot_roc

        plot_roc(
            [f_labels[i] for i in keep],
            [f_scores[i] for i in keep],
            args.roc,
            title=f"ROC: {Path(args.source).name} ({det.model_name})",
            name="frames",
            more=[RocSeries("videos", g.labels, g.scores)],
        )
    if args.json:
        write_json(
            {
                "model": det.model_name,
                "source": str(args.source),
                "split": args.split,
                "levels": levels,
                "errors": errors,
            },
            args.json,
        )
    head = (
        f"model {det.model_name}; {len(samples)} samples; {errors} errors; "
        f"{frame_m['no_face']} frames without a face (excluded)"
    )
    return head + "\n" + format_table(levels)
