"""Metrics per source: how the model does on each kind of media, not one pooled number.

For each source: its face count per class, a ROC-AUC, and the verdict shares at the model's threshold and band
(real faces called fake / uncertain / real; fake faces called fake). A source holding both classes gets its own
AUC; a source holding one class (e.g. only real photos, or only GAN faces) is ranked against the other class of
all *other* sources in the set, which is the question a user asks of it ("does a photo like this score below a
fake?"). Pooled rows follow: all faces, and real faces with every real source weighted equally.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from deepguard.evaluation.report import format_cell, render_table


def _auc(y: np.ndarray, s: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s)) if len(np.unique(y)) == 2 else None


def _shares(s: np.ndarray, threshold: float, band: tuple[float, float] | None) -> dict[str, float | None]:
    lo, hi = band if band is not None else (threshold, threshold)
    if not len(s):
        return {"called_fake": None, "called_uncertain": None, "called_real": None}
    return {
        "called_fake": float(np.mean(s >= hi)),
        "called_uncertain": float(np.mean((s >= lo) & (s < hi))),
        "called_real": float(np.mean(s < lo)),
    }


def source_auc(scores: np.ndarray, labels: np.ndarray, sources: np.ndarray, name: str) -> float | None:
    """AUC of one source by the rule in the module docstring (None when there is nothing to rank against)."""
    mine = sources == name
    if len(np.unique(labels[mine])) == 2:
        return _auc(labels[mine], scores[mine])
    other = (~mine) & (labels != labels[mine][0])
    keep = mine | other
    return _auc(labels[keep], scores[keep])


def per_source(
    scores: Sequence[float],
    labels: Sequence[int],
    sources: Sequence[str],
    threshold: float,
    band: tuple[float, float] | None = None,
) -> list[dict[str, Any]]:
    """One row per source (sorted by name), then ``all`` and ``real, sources equal``."""
    s, y, src = np.asarray(scores, np.float64), np.asarray(labels).astype(int), np.asarray(sources)
    if not len(s) == len(y) == len(src):
        raise ValueError(f"{len(s)} scores, {len(y)} labels, {len(src)} sources")
    rows = []
    for name in sorted(set(src.tolist())):
        m = src == name
        real, fake = s[m & (y == 0)], s[m & (y == 1)]
        rows.append(
            {
                "source": name,
                "n_real": int(len(real)),
                "n_fake": int(len(fake)),
                "auc": source_auc(s, y, src, name),
                "real": _shares(real, threshold, band),
                "fake_called_fake": _shares(fake, threshold, band)["called_fake"],
            }
        )
    real_rows = [r["real"] for r in rows if r["n_real"]]
    balanced = {k: float(np.mean([r[k] for r in real_rows])) for k in real_rows[0]} if real_rows else {}
    rows.append(
        {
            "source": "all",
            "n_real": int((y == 0).sum()),
            "n_fake": int((y == 1).sum()),
            "auc": _auc(y, s),
            "real": _shares(s[y == 0], threshold, band),
            "fake_called_fake": _shares(s[y == 1], threshold, band)["called_fake"],
        }
    )
    rows.append(
        {"source": "real, sources equal", "n_real": rows[-1]["n_real"], "n_fake": 0, "real": balanced}
    )
    return rows


def per_source_under(
    classifier: Any,
    crops: np.ndarray,
    labels: Sequence[int],
    sources: Sequence[str],
    spec: str,
    band: tuple[float, float] | None = None,
    batch: int = 256,
) -> dict[str, list[dict[str, Any]]]:
    """:func:`per_source` rows at the classifier's threshold for the clean crops and under each condition of a
    perturbation ``spec`` (``evaluation/perturb.py``), ``{condition: rows}``.

    Why: media from other sources differs from validation mostly by what cameras, editors and platforms did to
    it (sharpening, tone curves, black and white, re-compression, small faces); a condition that makes *real*
    faces of some source score as fake is a false alarm users will meet, which a pooled AUC drop hides."""
    from deepguard.evaluation.perturb import parse_perturbations, score_crops

    conditions = parse_perturbations(spec)
    batches = (np.asarray(crops[i : i + batch]) for i in range(0, len(crops), batch))
    scores = score_crops(classifier, batches, conditions)
    return {
        name: per_source(s, labels, sources, float(classifier.threshold), band) for name, s in scores.items()
    }


def format_per_source(rows: Sequence[dict[str, Any]]) -> str:
    """Plain-text table: source, faces, AUC, real faces called fake / uncertain / real, fakes called fake."""
    header = ["source", "real", "fake", "AUC", "real→fake", "real→uncertain", "real→real", "fake→fake"]
    body = []
    for r in rows:
        real = r.get("real") or {}
        body.append(
            [
                r["source"],
                str(r["n_real"]),
                str(r["n_fake"]),
                format_cell(r.get("auc"), ".4f"),
                format_cell(real.get("called_fake"), ".1%"),
                format_cell(real.get("called_uncertain"), ".1%"),
                format_cell(real.get("called_real"), ".1%"),
                format_cell(r.get("fake_called_fake"), ".1%"),
            ]
        )
    return "\n".join(render_table(header, body))


__all__ = ["format_per_source", "per_source", "per_source_under", "source_auc"]
