"""PNG plots for evaluation reports: ROC curves and a video's fake score over time.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot): no display is needed, no global
backend is switched for the host process, and nothing leaks between calls from server threads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from deepguard.evaluation.metrics import equal_error_rate


class RocSeries(NamedTuple):
    """One curve on a ROC plot, e.g. ``RocSeries("video", video_labels, video_scores)``."""

    name: str
    labels: Any
    scores: Any


def _new_figure(size: tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, out_png: str | Path) -> Path:
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    return out


def plot_roc(
    labels: Any,
    scores: Any,
    out_png: str | Path,
    title: str = "ROC curve",
    *,
    name: str = "frames",
    more: Sequence[RocSeries] = (),
) -> Path:
    """Draw the ROC of ``scores`` vs ``labels`` (plus any ``more`` series) to ``out_png``.

    Each curve's legend entry carries its AUC and EER, and the EER point is marked, since those are
    the numbers the report quotes. Pass ``labels=None`` to plot only ``more``. A one-class series
    has no ROC; it is named in the legend as such instead of failing the whole figure.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    series: list[RocSeries] = [] if labels is None else [RocSeries(name, labels, scores)]
    series.extend(RocSeries(*s) for s in more)
    if not series:
        raise ValueError("plot_roc needs at least one series")

    fig = _new_figure((5.5, 5.0))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", linewidth=1, label="chance")
    for s in series:
        y = np.asarray(s.labels, dtype=np.int64)
        sc = np.asarray(s.scores, dtype=np.float64)
        if np.unique(y).size < 2:
            ax.plot([], [], linestyle="none", label=f"{s.name}: one class only, no ROC (n={y.size})")
            continue
        fpr, tpr, _ = roc_curve(y, sc)
        auc = roc_auc_score(y, sc)
        eer, _thr = equal_error_rate(y, sc)
        (line,) = ax.plot(
            fpr, tpr, linewidth=1.8, label=f"{s.name}: AUC {auc:.3f}, EER {eer:.3f} (n={y.size})"
        )
        ax.plot([eer], [1 - eer], marker="o", color=line.get_color(), markersize=5)
    ax.set_xlim(-0.01, 1.0)  # keep curves hugging an axis visible
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate (real flagged as fake)")
    ax.set_ylabel("true positive rate (fakes caught)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return _save(fig, out_png)


def frames_to_series(frames: Sequence[Any]) -> tuple[list[float | None], list[float | None]]:
    """Split runtime ``FrameScore`` objects (``.time``, ``.score``) into plot inputs."""
    return [f.time for f in frames], [f.score for f in frames]


def plot_scores_over_time(
    times: Sequence[float | None] | None,
    scores: Sequence[float | None],
    out_png: str | Path,
    threshold: float | None = 0.5,
    title: str = "Fake score over time",
) -> Path:
    """Plot a video's per-frame P(fake) with the decision threshold.

    Frames without a face (score None/NaN) break the line, so the plot never invents scores across
    them, and get a grey tick along the bottom. If any time is missing, the x axis is the frame
    number instead of seconds.
    """
    s = np.array([np.nan if v is None else float(v) for v in scores], dtype=np.float64)
    if times is not None and len(times) != len(s):
        raise ValueError(f"times and scores differ in length ({len(times)} vs {len(s)})")
    if times is None or any(t is None for t in times):
        x = np.arange(len(s), dtype=np.float64)
        xlabel = "frame"
    else:
        x = np.asarray(times, dtype=np.float64)
        xlabel = "time (s)"

    fig = _new_figure((8.0, 3.2))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(x, s, marker=".", markersize=4, linewidth=1.4, color="tab:blue", label="P(fake)")
    gaps = np.isnan(s)
    if gaps.any():
        ax.plot(
            x[gaps], np.full(int(gaps.sum()), 0.01), linestyle="none", marker="|", markersize=10,
            color="grey", label="no face",
        )  # fmt: skip
    if threshold is not None and math.isfinite(threshold):
        ax.axhline(threshold, color="tab:red", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
    ax.set_ylim(-0.02, 1.02)
    if x.size:
        lo, hi = float(np.min(x)), float(np.max(x))
        pad = max((hi - lo) * 0.02, 0.5 if xlabel == "frame" else 0.05)
        ax.set_xlim(lo - pad, hi + pad)
    else:
        ax.text(0.5, 0.5, "no frames", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("P(fake)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8, framealpha=0.8)
    fig.tight_layout()
    return _save(fig, out_png)
