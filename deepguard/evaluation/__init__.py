"""Offline evaluation: labelled sets, binary metrics (incl. EER), frame -> video grouping, reports, plots,
robustness under perturbations (JPEG, downscaling, blur, noise).

matplotlib is imported only when a plot is drawn, so metrics-only callers stay light.
"""

from __future__ import annotations

from deepguard.evaluation.dataset import (
    IMAGE_EXTENSIONS,
    MEDIA_EXTENSIONS,
    VIDEO_EXTENSIONS,
    DatasetError,
    Sample,
    load_labelled,
)
from deepguard.evaluation.metrics import (
    LOG_LOSS_EPS,
    GroupedScores,
    binary_metrics,
    equal_error_rate,
    group_scores,
)
from deepguard.evaluation.perturb import (
    Perturbation,
    PerturbationError,
    parse_perturbations,
    robustness_from_files,
    robustness_table,
)
from deepguard.evaluation.plots import RocSeries, frames_to_series, plot_roc, plot_scores_over_time
from deepguard.evaluation.report import format_table, to_jsonable, write_json

__all__ = [
    "IMAGE_EXTENSIONS",
    "LOG_LOSS_EPS",
    "MEDIA_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "DatasetError",
    "GroupedScores",
    "Perturbation",
    "PerturbationError",
    "RocSeries",
    "Sample",
    "binary_metrics",
    "equal_error_rate",
    "format_table",
    "frames_to_series",
    "group_scores",
    "load_labelled",
    "parse_perturbations",
    "plot_roc",
    "plot_scores_over_time",
    "robustness_from_files",
    "robustness_table",
    "to_jsonable",
    "write_json",
]
