"""Binary detection metrics and frame -> video score grouping.

scikit-learn computes every metric it has (AUC, log loss, precision/recall/F1, the ROC curve); this
module adds only what it lacks: the equal error rate and a tolerant wrapper, because evaluation sets
are often one-class (a folder of fakes only) and must yield a report, not a crash.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    log_loss,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)

# Probabilities are clipped to [EPS, 1 - EPS] for the log loss, so a confident 0/1 score costs
# -log(1e-7) ~ 16 nats instead of infinity.
LOG_LOSS_EPS = 1e-7

ScoreRule = Callable[[list[float]], "float | None"]


def _as_labels(labels: Any, n_expected: int | None = None) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {y.shape}")
    if y.dtype == bool:
        y = y.astype(np.int64)
    if y.size and not np.all(np.isin(y, (0, 1))):
        bad = sorted({str(v) for v in y[~np.isin(y, (0, 1))]})[:5]
        raise ValueError(f"labels must be 0 (real) or 1 (fake); found {', '.join(bad)}")
    if n_expected is not None and y.size != n_expected:
        raise ValueError(f"labels and scores differ in length ({y.size} vs {n_expected})")
    return y.astype(np.int64)


def _as_scores(scores: Any) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"scores must be one-dimensional, got shape {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN/inf (drop frames without faces before computing metrics)")
    return s


def equal_error_rate(labels: Any, scores: Any) -> tuple[float | None, float | None]:
    """Return ``(eer, threshold)`` where the false-positive and false-negative rates meet.

    The ROC is piecewise linear, so fpr - fnr is linear along each segment; the crossing is found
    exactly by linear interpolation on the first segment where it changes sign. The threshold is
    interpolated the same way (sklearn's leading ``inf`` threshold is replaced by the segment's
    other end). ``(None, None)`` when only one class is present: the EER is then undefined.
    """
    s = _as_scores(scores)
    y = _as_labels(labels, s.size)
    if np.unique(y).size < 2:
        return None, None
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    fnr = 1.0 - tpr
    diff = fpr - fnr  # starts at -1 (fpr=0, fnr=1) and ends at +1 (fpr=1, fnr=0): a crossing exists
    idx = np.flatnonzero(diff >= 0)
    j = int(idx[0])
    if diff[j] == 0 or j == 0:
        t_val = thr[j] if np.isfinite(thr[j]) else thr[min(j + 1, thr.size - 1)]
        return float(fpr[j]), float(t_val)
    i = j - 1
    w = diff[i] / (diff[i] - diff[j])  # in (0, 1]
    eer = fpr[i] + w * (fpr[j] - fpr[i])
    lo = thr[i] if np.isfinite(thr[i]) else thr[j]
    t_val = lo + w * (thr[j] - lo)
    return float(eer), float(t_val)


def binary_metrics(labels: Any, scores: Any, threshold: float = 0.5) -> dict[str, Any]:
    """Metrics for P(fake) ``scores`` against 0/1 ``labels`` (1 = fake); a score >= threshold is fake.

    Keys: n, n_pos, n_neg, threshold, tp, fp, tn, fn, accuracy, precision, recall, f1, roc_auc,
    log_loss, eer, eer_threshold. Precision/recall/F1 are 0 when undefined (no predicted / no actual
    positives); roc_auc, eer and eer_threshold are None for one-class input.
    """
    s = _as_scores(scores)
    y = _as_labels(labels, s.size)
    if s.size == 0:
        raise ValueError("no samples to evaluate")
    pred = (s >= threshold).astype(np.int64)
    precision, recall, f1, _ = precision_recall_fscore_support(
        y, pred, average="binary", pos_label=1, labels=[0, 1], zero_division=0
    )
    two_classes = np.unique(y).size == 2
    clipped = np.clip(s, LOG_LOSS_EPS, 1.0 - LOG_LOSS_EPS)
    eer, eer_thr = equal_error_rate(y, s)
    return {
        "n": int(s.size),
        "n_pos": int(y.sum()),
        "n_neg": int(s.size - y.sum()),
        "threshold": float(threshold),
        "tp": int(np.sum((pred == 1) & (y == 1))),
        "fp": int(np.sum((pred == 1) & (y == 0))),
        "tn": int(np.sum((pred == 0) & (y == 0))),
        "fn": int(np.sum((pred == 0) & (y == 1))),
        "accuracy": float(accuracy_score(y, pred)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "roc_auc": float(roc_auc_score(y, s)) if two_classes else None,
        "log_loss": float(log_loss(y, clipped, labels=[0, 1])),
        "eer": eer,
        "eer_threshold": eer_thr,
    }


@dataclass
class GroupedScores:
    """Per-group (e.g. per-video) scores, in order of each group's first appearance.

    ``skipped`` lists groups left out because none of their frames had a score (no face seen) or
    the rule returned None; they are reported rather than silently scored.
    """

    groups: list[str]
    scores: np.ndarray  # (G,) float64
    labels: np.ndarray | None  # (G,) int64, when labels were given
    sizes: np.ndarray  # (G,) int64: number of scored frames per group
    skipped: list[str] = field(default_factory=list)


def _mean_rule(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def group_scores(
    scores: Sequence[float | None],
    groups: Sequence[Any],
    labels: Sequence[int] | None = None,
    rule: ScoreRule | None = None,
) -> GroupedScores:
    """Aggregate per-frame scores into one score per group with ``rule`` (default: mean).

    ``rule`` receives the group's scores as a list of floats in input order (None/NaN entries,
    i.e. frames without a face, removed) and returns a float or None; the runtime's video
    aggregation fits here so that offline video-level metrics match what the CLI reports.
    A group's label must be the same for all its frames: a mix means a grouping error (e.g. real
    and fake clips sharing a name) and raises ValueError rather than being outvoted.
    """
    if len(scores) != len(groups):
        raise ValueError(f"scores and groups differ in length ({len(scores)} vs {len(groups)})")
    y = None if labels is None else _as_labels(list(labels), len(scores))
    rule = rule or _mean_rule

    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(str(g), []).append(i)

    out_groups: list[str] = []
    out_scores: list[float] = []
    out_labels: list[int] = []
    out_sizes: list[int] = []
    skipped: list[str] = []
    for g, idx in members.items():
        if y is not None:
            group_labels = {int(y[i]) for i in idx}
            if len(group_labels) > 1:
                n_fake = sum(int(y[i]) for i in idx)
                raise ValueError(
                    f"group {g!r} mixes labels ({n_fake} fake, {len(idx) - n_fake} real): "
                    "check the group pattern / manifest group column"
                )
        values = [float(scores[i]) for i in idx if scores[i] is not None and np.isfinite(scores[i])]
        agg = rule(values) if values else None
        if agg is None or not np.isfinite(agg):
            skipped.append(g)
            continue
        out_groups.append(g)
        out_scores.append(float(agg))
        out_sizes.append(len(values))
        if y is not None:
            out_labels.append(int(y[idx[0]]))
    return GroupedScores(
        groups=out_groups,
        scores=np.asarray(out_scores, dtype=np.float64),
        labels=None if y is None else np.asarray(out_labels, dtype=np.int64),
        sizes=np.asarray(out_sizes, dtype=np.int64),
        skipped=skipped,
    )
