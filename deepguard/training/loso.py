"""Leave-one-source-out (``deepguard loso``): for each source S, train without S, then score S.

Why: validation faces from the sources a model was trained on say little about media from anywhere else; the
hidden test sets are other sources. Holding a whole source out is the closest offline stand-in: a GAN family the
model never saw, a real-photo collection it never saw, a face-swap dataset it never saw.

Each fold trains one member with the default recipe's data rule (:mod:`deepguard.training.mix`, self-blends
included) for ``budget_min`` minutes, selects its checkpoint and false-alarm cut on the *other* sources' val
split, and is tested on every face of S (train and val splits) ranked against the val faces of the other class
from the other sources (for a source holding both classes: within S). Reported per fold: the AUC, and for a real
source the share of its faces scoring at or above the fold's cut ("called fake").
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from deepguard.errors import MediaError
from deepguard.training.data import CropSet
from deepguard.training.recrop import as_scored

if TYPE_CHECKING:
    from deepguard.training.train import TrainConfig

#: Name (and run folder) of the fold that holds nothing out (``reference=True``).
REFERENCE = "reference"


def subset(cs: CropSet, keep: np.ndarray) -> CropSet:
    """The crops at boolean mask / indices ``keep`` (images copied out of a memory map)."""
    idx = np.flatnonzero(keep) if np.asarray(keep).dtype == bool else np.asarray(keep)
    return CropSet(
        images=np.asarray(cs.images[idx]),
        labels=cs.labels[idx],
        groups=[cs.groups[i] for i in idx],
        paths=[cs.paths[i] for i in idx],
        sources=[cs.sources[i] for i in idx] if cs.sources is not None else None,
    )


def concat(a: CropSet, b: CropSet) -> CropSet:
    return CropSet(
        images=np.concatenate([np.asarray(a.images), np.asarray(b.images)]),
        labels=np.concatenate([a.labels, b.labels]),
        groups=a.groups + b.groups,
        paths=a.paths + b.paths,
        sources=(a.sources or []) + (b.sources or []),
    )


def fold_sets(train: CropSet, val: CropSet, held: str) -> tuple[CropSet, CropSet, CropSet]:
    """``(train without S, val without S, test)`` for held-out source ``held`` (test rule: module docstring)."""
    tr_src, va_src = np.asarray(train.sources), np.asarray(val.sources)
    fold_train, fold_val = subset(train, tr_src != held), subset(val, va_src != held)
    mine = concat(subset(train, tr_src == held), subset(val, va_src == held))
    classes = set(mine.labels.astype(int).tolist())
    if len(classes) == 2:
        return fold_train, fold_val, mine
    other = (va_src != held) & (val.labels.astype(int) != next(iter(classes)))
    return fold_train, fold_val, concat(mine, subset(val, other))


def leave_one_source_out(
    data: Sequence[str | Path],
    out_dir: str | Path,
    *,
    budget_min: float = 4.0,
    arch: str = "mobilenet_v2",
    input_size: int = 160,
    cache_dir: str | Path | None = None,
    only: Sequence[str] | None = None,
    sbi_fraction: float | None = None,
    max_test: int = 2000,
    init_from: str | Path | None = None,
    reference: bool = False,
) -> dict:
    """Run every fold (or those in ``only``); writes ``<out>/loso.json`` after each fold and returns it.

    ``max_test``: at most this many held-out faces per class are scored (DFDC alone holds 35,000).
    ``init_from``: a fused graph every fold continues from instead of ImageNet (at the continuation rate). Only
    sources that graph was never trained on say anything when held out: e.g. a DFDC-only model as the start of
    the faces-extra folds, where a fold from ImageNet costs ~3x as much per step on a CPU.
    ``reference``: first train one fold on *every* source with the same start and budget and report each
    source's val AUC, so that each fold's ``auc_val`` (the same val faces, held out) shows what holding the
    source out costs, apart from what the short budget costs.
    """
    from deepguard.evaluation.by_source import source_auc
    from deepguard.models.import_weights import import_backbone
    from deepguard.training.default import SBI_FRACTION, sbi_landmarks
    from deepguard.training.sources import list_sourced, load_sources

    # before any work: a typo in ``only`` must not cost the folds before it (and a fold of no faces has no test)
    known = {s for split in ("train", "val") for s in list_sourced(data, split)[3]}
    unknown = sorted(set(only or ()) - known)
    if unknown:
        raise MediaError(
            f"no source named {', '.join(map(repr, unknown))} (sources: {', '.join(sorted(known))})"
        )
    out_dir = Path(out_dir)
    cache_dir = Path(cache_dir) if cache_dir else out_dir / "cache"
    sbi = SBI_FRACTION if sbi_fraction is None else sbi_fraction
    weights = import_backbone(arch, out_dir / "imagenet" / f"{arch}.weights.h5", input_size)
    train, _ = load_sources(data, "train", input_size, cache_dir)
    val, _ = load_sources(data, "val", input_size, cache_dir)
    points, valid = sbi_landmarks(train, cache_dir) if sbi > 0 else (None, None)
    result = {"arch": arch, "budget_min_per_fold": budget_min, "max_test_per_class": max_test}
    if init_from:
        result["init_from"] = Path(init_from).name
    result = _resumed(out_dir, result)
    folds: dict = result["folds"]
    cfg = _fold_config(arch, input_size, budget_min, weights, init_from, sbi)

    def fold(
        name: str, fold_train: CropSet, keep: np.ndarray, fold_val: CropSet, test: CropSet
    ) -> tuple[np.ndarray, float]:
        pts = (points[keep], valid[keep]) if points is not None else (None, None)
        return _train_fold(fold_train, pts, fold_val, test, out_dir / name, cfg)

    if reference and "reference" not in result:
        t0 = time.time()
        scores, cut = fold(REFERENCE, train, np.ones(len(train.labels), bool), val, val)
        result["reference"] = {s: fold_report(scores, val, s, cut) for s in sorted(set(val.sources))}
        result["reference_train_seconds"] = round(time.time() - t0, 1)
        print(f"[loso] reference: {json.dumps(result['reference'])}", flush=True)
        _write(out_dir, result)
    for held in only or sorted(set(train.sources) | set(val.sources)):
        if held in folds:
            continue
        t0 = time.time()
        fold_train, fold_val, test = fold_sets(train, val, held)
        test = _capped(test, held, max_test)
        scores, cut = fold(held, fold_train, np.asarray(train.sources) != held, fold_val, test)
        del fold_train  # a copy of ~all training crops (2.8 GB at 160 px): not kept into the next fold
        folds[held] = fold_report(scores, test, held, cut)
        on_val = _val_faces(test, val, held)  # the faces the reference scored, for a like-for-like AUC
        y, src = test.labels.astype(int), np.asarray(test.sources)
        folds[held]["auc_val"] = source_auc(scores[on_val], y[on_val], src[on_val], held)
        folds[held]["train_seconds"] = round(time.time() - t0, 1)
        print(f"[loso] {held}: {json.dumps(folds[held])}", flush=True)
        _write(out_dir, result)  # after every fold: a long run that stops early keeps what it measured
    _write(out_dir, result)
    return result


def _fold_config(
    arch: str, input_size: int, budget_min: float, weights: Path, init_from: str | Path | None, sbi: float
) -> TrainConfig:
    """The default recipe's member settings for one fold (epochs of 100 steps: short budgets still validate)."""
    from deepguard.models.members import EDGE_HEAD
    from deepguard.training.default import BACKBONE_SIZE, CONTINUE_LR, PEAK_LR
    from deepguard.training.train import TrainConfig

    return TrainConfig(
        arch=arch,
        input_size=input_size,
        backbone_size=BACKBONE_SIZE,
        batch_size=32,
        steps_per_epoch=100,
        time_budget_s=budget_min * 60,
        lr=CONTINUE_LR if init_from else PEAK_LR,
        schedule="cosine",
        imagenet_weights=str(weights),
        init_from=str(init_from) if init_from else None,
        head=EDGE_HEAD,
        sbi_fraction=sbi,
    )


def _train_fold(
    fold_train: CropSet, pts: tuple, fold_val: CropSet, test: CropSet, run_dir: Path, cfg: TrainConfig
) -> tuple[np.ndarray, float]:
    """Train one member; the scores of ``test`` and the false-alarm cut on ``fold_val``.

    Both are scored as the shipped graph scores crops (re-encoded, :func:`as_scored`).
    """
    import gc

    import keras

    from deepguard.convert.calibrate import false_alarm_cut
    from deepguard.training.train import predict_logits, train_member

    summary = train_member(
        fold_train, replace(fold_val, images=as_scored(fold_val.images)), run_dir, cfg, *pts
    )
    model = keras.models.load_model(summary["keras"])
    val_scores = 1 / (1 + np.exp(-np.load(run_dir / f"{cfg.arch}.val_logits.npy")))
    cut = false_alarm_cut(val_scores, fold_val.labels, fold_val.sources)
    scores = 1 / (1 + np.exp(-predict_logits(model, as_scored(test.images))))
    del model, summary
    keras.backend.clear_session()  # a run of seven folds otherwise grows past 24 GB (OOM-killed in the sixth)
    gc.collect()
    return scores, cut


def _resumed(out_dir: Path, settings: dict) -> dict:
    """``settings`` plus the folds (and reference) of an earlier run in ``out_dir`` with the same settings.

    Why: a run of many folds takes hours; one that stopped (killed, out of memory) goes on where it stopped
    instead of training the finished folds again. A run with other settings starts afresh.
    """
    old_path = out_dir / "loso.json"
    old = json.loads(old_path.read_text()) if old_path.is_file() else {}
    if {k: old.get(k) for k in (*settings, "init_from")} != {"init_from": None, **settings}:
        return {**settings, "folds": {}}
    kept = {k: old[k] for k in ("reference", "reference_train_seconds") if k in old}
    if old["folds"] or kept:
        print(f"[loso] resuming {old_path}: {', '.join([*kept][:1] + list(old['folds']))} done", flush=True)
    return {**settings, **kept, "folds": dict(old["folds"])}


def _val_faces(test: CropSet, val: CropSet, held: str) -> np.ndarray:
    """Mask of ``test``: the held source's faces from the val split, and every face of the other sources."""
    held_val = {p for p, s in zip(val.paths, val.sources, strict=True) if s == held}
    return np.array([s != held or p in held_val for p, s in zip(test.paths, test.sources, strict=True)])


def _write(out_dir: Path, result: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "loso.json").write_text(json.dumps(result, indent=2))


def _capped(test: CropSet, held: str, max_test: int, seed: int = 0) -> CropSet:
    """At most ``max_test`` faces of the held-out source per class (evenly drawn, seeded), all others kept."""
    src, y = np.asarray(test.sources), test.labels.astype(int)
    rng = np.random.default_rng(seed)
    keep = np.ones(len(y), bool)
    for c in (0, 1):
        idx = np.flatnonzero((src == held) & (y == c))
        if len(idx) > max_test:
            keep[idx] = False
            keep[np.sort(rng.choice(idx, max_test, replace=False))] = True
    return test if keep.all() else subset(test, keep)


def fold_report(scores: np.ndarray, test: CropSet, held: str, cut: float) -> dict:
    """AUC of the held-out source (rule above) and the share of its real / fake faces at or above ``cut``."""
    from deepguard.evaluation.by_source import source_auc

    src, y = np.asarray(test.sources), test.labels.astype(int)
    mine = src == held
    real, fake = scores[mine & (y == 0)], scores[mine & (y == 1)]
    return {
        "auc": source_auc(scores, y, src, held),
        "n_real": int(len(real)),
        "n_fake": int(len(fake)),
        "cut": round(cut, 4),
        "real_called_fake": float(np.mean(real >= cut)) if len(real) else None,
        "fake_called_fake": float(np.mean(fake >= cut)) if len(fake) else None,
    }


def format_loso(result: dict) -> str:
    """Plain-text table of the folds (with each source's AUC when seen, if a reference fold ran)."""
    from deepguard.evaluation.report import format_cell, render_table

    ref = result.get("reference") or {}
    header = ["held-out source", "real", "fake", "AUC", "AUC (val)", "seen (val)", "real→fake", "fake→fake"]
    rows = [
        [
            name,
            str(f["n_real"]),
            str(f["n_fake"]),
            format_cell(f["auc"], ".4f"),
            format_cell(f.get("auc_val"), ".4f"),
            format_cell((ref.get(name) or {}).get("auc"), ".4f"),
            format_cell(f["real_called_fake"], ".1%"),
            format_cell(f["fake_called_fake"], ".1%"),
        ]
        for name, f in result["folds"].items()
    ]
    return "\n".join(render_table(header, rows))


__all__ = ["fold_sets", "format_loso", "leave_one_source_out"]
