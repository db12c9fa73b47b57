"""Human- and machine-readable evaluation output: a plain-text table and JSON.

The table is for terminals and logs (fixed-width, no dependencies); the JSON is the durable record,
so it must survive numpy scalars/arrays, Paths and NaN (written as null, since JSON has no NaN).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

# (column header, metric key, format); None values print as "-".
_COLUMNS: list[tuple[str, str, str]] = [
    ("n", "n", "d"),
    ("fake", "n_pos", "d"),
    ("real", "n_neg", "d"),
    ("acc", "accuracy", ".4f"),
    ("prec", "precision", ".4f"),
    ("recall", "recall", ".4f"),
    ("f1", "f1", ".4f"),
    ("auc", "roc_auc", ".4f"),
    ("eer", "eer", ".4f"),
    ("eer_thr", "eer_threshold", ".4f"),
    ("logloss", "log_loss", ".4f"),
]


def format_cell(value: Any, fmt: str) -> str:
    """One table cell: ``fmt`` applied to a number, "-" for a missing or NaN value, the text of anything else."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    try:
        return format(int(value) if fmt == "d" else float(value), fmt)
    except (TypeError, ValueError):
        return str(value)


def render_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Aligned plain-text lines: header, dashes, rows; the first column left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return [line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]


def format_table(metrics_by_level: Mapping[str, Mapping[str, Any]]) -> str:
    """Render ``{"frame": binary_metrics(...), "video": ...}`` as an aligned plain-text table.

    One row per level, in the mapping's order; metrics a level lacks show as "-". The decision
    threshold is printed under the table when all levels share one, else as an extra column.
    """
    columns = list(_COLUMNS)
    thresholds = {m.get("threshold") for m in metrics_by_level.values()}
    if len(thresholds) > 1:
        columns.insert(3, ("thr", "threshold", ".3f"))
    header = ["level"] + [c[0] for c in columns]
    rows = [
        [str(level)] + [format_cell(metrics.get(key), fmt) for _, key, fmt in columns]
        for level, metrics in metrics_by_level.items()
    ]
    out = render_table(header, rows)
    if len(thresholds) == 1:
        (thr,) = thresholds
        if thr is not None:
            out.append(f"(decision threshold {float(thr):g}: score >= threshold counts as fake)")
    return "\n".join(out)


def to_jsonable(obj: Any) -> Any:
    """Convert metrics/results to plain JSON types (numpy -> Python, NaN/inf -> None, Path -> str)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, str):
        return obj
    return str(obj)


def write_json(obj: Any, out_path: str | Path, indent: int = 2) -> Path:
    """Write ``obj`` (via :func:`to_jsonable`) as UTF-8 JSON, creating parent folders."""
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(to_jsonable(obj), indent=indent, allow_nan=False) + "\n", encoding="utf-8")
    return out
