"""Leave-one-source-out (training/loso.py): fold sets, the fold report and table, one real fold, the CLI command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from deepguard.errors import MediaError
from deepguard.training.data import CropSet
from deepguard.training.loso import _val_faces, concat, fold_report, fold_sets, format_loso, subset

from .test_sources import write_sourced_data


def _set(layout: list[tuple[str, int, int]], tag: str) -> CropSet:
    """A CropSet whose crop i is filled with its running number (so subsets can be checked pixel by pixel)."""
    labels = np.concatenate([[lab] * n for _, lab, n in layout]).astype(np.float32)
    sources = [s for s, _, n in layout for _ in range(n)]
    n = len(labels)
    images = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, 4, 4, 3)).copy()
    return CropSet(images, labels, [f"{tag}g{i}" for i in range(n)], [f"{tag}{i}" for i in range(n)], sources)


TRAIN = [("swap", 0, 5), ("swap", 1, 6), ("photos", 0, 4), ("gan", 1, 3), ("cam", 0, 2)]
VAL = [("swap", 0, 2), ("swap", 1, 3), ("photos", 0, 3), ("gan", 1, 2), ("cam", 0, 1)]


def test_subset_and_concat_keep_rows_aligned() -> None:
    cs = _set(TRAIN, "t")
    part = subset(cs, np.asarray(cs.sources) == "photos")
    assert part.paths == ["t11", "t12", "t13", "t14"] and part.sources == ["photos"] * 4
    assert part.images[:, 0, 0, 0].tolist() == [11, 12, 13, 14] and part.labels.tolist() == [0] * 4
    idx = subset(cs, np.array([3, 0]))
    assert idx.paths == ["t3", "t0"] and idx.groups == ["tg3", "tg0"]
    both = concat(part, idx)
    assert both.paths == part.paths + idx.paths and len(both.images) == len(both.labels) == 6
    assert both.images[:, 0, 0, 0].tolist() == [11, 12, 13, 14, 3, 0]


@pytest.mark.parametrize("held", ["swap", "photos", "gan", "cam"])
def test_fold_sets_partition(held: str) -> None:
    train, val = _set(TRAIN, "t"), _set(VAL, "v")
    fold_train, fold_val, test = fold_sets(train, val, held)
    # nothing of the held-out source is trained or validated on; everything else is
    assert held not in fold_train.sources and held not in fold_val.sources
    assert sorted(fold_train.paths) == sorted(
        p for p, s in zip(train.paths, train.sources, strict=True) if s != held
    )
    assert sorted(fold_val.paths) == sorted(
        p for p, s in zip(val.paths, val.sources, strict=True) if s != held
    )
    # the test holds every face of the held-out source, train and val splits
    mine = [p for p, s in zip(train.paths + val.paths, train.sources + val.sources, strict=True) if s == held]
    assert [p for p, s in zip(test.paths, test.sources, strict=True) if s == held] == mine
    classes = {int(y) for y, s in zip(test.labels, test.sources, strict=True) if s == held}
    others = [(p, int(y)) for p, y, s in zip(test.paths, test.labels, test.sources, strict=True) if s != held]
    if classes == {0, 1}:  # both classes: ranked within the source
        assert others == []
    else:  # one class: against the other class of the other sources' val split (never their train split)
        (c,) = classes
        want = [
            (p, int(y))
            for p, y, s in zip(val.paths, val.labels, val.sources, strict=True)
            if s != held and y != c
        ]
        assert others == want and all(p.startswith("v") for p, _ in others)
    # pixels travel with their rows
    for cs in (fold_train, fold_val, test):
        for img, p in zip(cs.images, cs.paths, strict=True):
            assert int(img[0, 0, 0]) == int(p[1:])


def test_fold_report_and_table_by_hand() -> None:
    # held-out real source 'photos' (scores .2 .6 .9) ranked against other sources' fakes (.5 .8):
    # fake > real in 3 of 6 pairs -> AUC 0.5; at cut 0.6, 2 of 3 reals are called fake
    test = _set([("photos", 0, 3), ("gan", 1, 1), ("swap", 1, 1)], "x")
    rep = fold_report(np.array([0.2, 0.6, 0.9, 0.5, 0.8]), test, "photos", 0.6)
    assert rep == {
        "auc": 0.5,
        "n_real": 3,
        "n_fake": 0,
        "cut": 0.6,
        "real_called_fake": pytest.approx(2 / 3),
        "fake_called_fake": None,
    }
    # a source with both classes: reals .1 .4, fakes .3 .7 .9 -> 5 of 6 pairs; cut .35: 1/2 reals, 2/3 fakes
    test2 = _set([("swap", 0, 2), ("swap", 1, 3)], "y")
    rep2 = fold_report(np.array([0.1, 0.4, 0.3, 0.7, 0.9]), test2, "swap", 0.35)
    assert rep2["auc"] == pytest.approx(5 / 6) and (rep2["n_real"], rep2["n_fake"]) == (2, 3)
    assert rep2["real_called_fake"] == 0.5 and rep2["fake_called_fake"] == pytest.approx(2 / 3)
    # a fake-only source: its fakes (.7 .2) against the other sources' reals (.1 .4): 3 of 4 pairs
    test3 = _set([("gan", 1, 2), ("cam", 0, 2)], "z")
    rep3 = fold_report(np.array([0.7, 0.2, 0.1, 0.4]), test3, "gan", 0.5)
    assert rep3["auc"] == 0.75 and rep3["real_called_fake"] is None and rep3["fake_called_fake"] == 0.5

    ref = {"photos": {**rep, "auc": 0.9}}
    table = format_loso(
        {"folds": {"photos": {**rep, "auc_val": 0.25}, "swap": rep2, "gan": rep3}, "reference": ref}
    )
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["held-out", "source", "real"]
    assert lines[2].split() == ["photos", "3", "0", "0.5000", "0.2500", "0.9000", "66.7%", "-"]
    assert lines[3].split() == ["swap", "2", "3", "0.8333", "-", "-", "50.0%", "66.7%"]
    assert lines[4].split() == ["gan", "0", "2", "0.7500", "-", "-", "-", "50.0%"]


def test_val_faces_keeps_the_held_sources_val_split_and_all_others() -> None:
    train, val = _set(TRAIN, "t"), _set(VAL, "v")
    _, _, test = fold_sets(train, val, "photos")
    mask = _val_faces(test, val, "photos")
    kept = [p for p, k in zip(test.paths, mask, strict=True) if k]
    # photos' val faces (v5-v7), then the other sources' val fakes it is ranked against; photos' train faces out
    assert kept == ["v5", "v6", "v7", "v2", "v3", "v4", "v8", "v9"]
    _, _, swap = fold_sets(train, val, "swap")
    assert [p for p, k in zip(swap.paths, _val_faces(swap, val, "swap"), strict=True) if k] == [
        "v0",
        "v1",
        "v2",
        "v3",
        "v4",
    ]


def test_leave_one_source_out_end_to_end(tmp_path, astronaut, monkeypatch) -> None:
    """One real fold on generated files: re-crop, train (tiny budget), cut on the other sources, score the held one.

    The fold's first epoch always runs to its end (the budget is checked per epoch), so the epoch is made short
    here: 4 steps of 8 instead of 100 of 32 (~1 min on a busy 2-core machine); everything else is the real call.
    """
    pytest.importorskip("tensorflow")
    pytest.importorskip("torch")
    from dataclasses import replace

    import deepguard.training.train as train_mod
    from deepguard.runtime.classify import DEFAULT_DIR, DEFAULT_NAMES
    from deepguard.training.default import CONTINUE_LR
    from deepguard.training.loso import leave_one_source_out

    from .test_sources import MANIFEST

    configs = []
    real_config = train_mod.TrainConfig

    def short_epochs(**kw):
        cfg = real_config(**kw)
        configs.append(cfg)
        return replace(cfg, steps_per_epoch=4, batch_size=8)

    monkeypatch.setattr(train_mod, "TrainConfig", short_epochs)

    manifest, extra = write_sourced_data(tmp_path / "data", astronaut)
    out = tmp_path / "loso"
    with pytest.raises(MediaError, match="nope"):  # a typo fails before any work
        leave_one_source_out([manifest, extra], out, only=["nope"])
    res = leave_one_source_out(
        [manifest, extra],
        out,
        budget_min=0.05,
        arch="mobilenet_v2",
        input_size=32,
        cache_dir=tmp_path / "cache",
        only=["photos"],
        sbi_fraction=0.0,
        init_from=DEFAULT_DIR / DEFAULT_NAMES["fp32"],
        reference=True,
    )
    assert list(res["folds"]) == ["photos"] and res["budget_min_per_fold"] == 0.05
    assert res["init_from"] == DEFAULT_NAMES["fp32"]
    # the reference fold trained on every source and scored each source's val faces
    assert sorted(res["reference"]) == ["extra", "gan", "photos", "swap"]
    assert res["reference"]["photos"]["n_real"] == MANIFEST[("photos", "real", "val")]
    assert all(0.0 <= r["auc"] <= 1.0 for r in res["reference"].values())
    assert (out / "reference" / "mobilenet_v2.train.json").is_file()
    f = res["folds"]["photos"]
    n_photos = MANIFEST[("photos", "real", "train")] + MANIFEST[("photos", "real", "val")]
    assert (f["n_real"], f["n_fake"]) == (n_photos, 0)  # the no-face file is not scored
    assert 0.0 <= f["auc"] <= 1.0 and 1e-3 <= f["cut"] <= 1 - 1e-3
    assert f["fake_called_fake"] is None and f["real_called_fake"] in {
        k / n_photos for k in range(n_photos + 1)
    }
    assert json.loads((out / "loso.json").read_text())["folds"]["photos"]["auc"] == f["auc"]
    summary = json.loads((out / "photos" / "mobilenet_v2.train.json").read_text())
    assert summary["input_size"] == 32
    assert "photos" in format_loso(res).splitlines()[2]
    (cfg,) = configs  # the default recipe's settings reach both folds (one config)
    assert cfg.schedule == "cosine" and cfg.time_budget_s == pytest.approx(3.0) and cfg.input_size == 32
    assert cfg.sbi_fraction == 0.0 and cfg.imagenet_weights and Path(cfg.imagenet_weights).is_file()
    assert cfg.init_from == str(DEFAULT_DIR / DEFAULT_NAMES["fp32"]) and cfg.lr == CONTINUE_LR
    assert 0.0 <= f["auc_val"] <= 1.0


def test_loso_command(monkeypatch, capsys) -> None:
    import deepguard.training.loso as loso
    from deepguard.cli import build_parser, main
    from deepguard.training.default import DEFAULT_DATA

    seen = {}

    def fake(data, out_dir, **kw):
        seen.update(data=list(data), out=str(out_dir), **kw)
        return {
            "folds": {
                "gan": {
                    "n_real": 0,
                    "n_fake": 4,
                    "auc": 0.9,
                    "real_called_fake": None,
                    "fake_called_fake": 0.75,
                }
            }
        }

    monkeypatch.setattr(loso, "leave_one_source_out", fake)
    assert main(["loso", "--out", "o", "--budget-min", "0.5", "--only", "gan", "photos", "--size", "96"]) == 0
    assert seen["data"] == list(DEFAULT_DATA) and seen["out"] == "o" and seen["only"] == ["gan", "photos"]
    assert seen["budget_min"] == 0.5 and seen["input_size"] == 96 and seen["arch"] == "mobilenet_v2"
    assert seen["cache_dir"] is None and seen["sbi_fraction"] is None
    assert seen["init_from"] is None and seen["reference"] is False
    assert "0.9000" in capsys.readouterr().out
    args = build_parser().parse_args(
        [
            "loso",
            "--data",
            "a.csv",
            "b",
            "--arch",
            "efficientnet_lite0",
            "--cache",
            "c",
            "--init-from",
            "m.onnx",
        ]
        + ["--reference"]
    )
    assert args.init_from == "m.onnx" and args.reference
    assert args.data == ["a.csv", "b"] and args.arch == "efficientnet_lite0" and args.cache == "c"
    assert args.budget_min == 4.0 and args.size == 160 and args.only is None


def test_put_loso_on_card_changes_only_the_loso_section(tmp_path) -> None:
    """The installed card re-rendered with a new LOSO run: the new table appears, everything else is as shipped."""
    import shutil

    from deepguard.runtime.classify import DEFAULT_DIR
    from deepguard.training.remeasure import main, put_loso_on_card

    for name in ("metrics.json", "parity.json", "MODEL_CARD.md"):
        shutil.copy(DEFAULT_DIR / name, tmp_path / name)
    before = (tmp_path / "MODEL_CARD.md").read_text()
    fold = {
        "n_real": 87,
        "n_fake": 0,
        "auc": 0.8765,
        "auc_val": 0.8642,
        "cut": 0.8,
        "real_called_fake": 0.046,
    }
    loso = {
        "arch": "mobilenet_v2",
        "budget_min_per_fold": 13.0,
        "init_from": "start.onnx",
        "folds": {"unsplash": {**fold, "fake_called_fake": None}},
        "reference": {"unsplash": {**fold, "auc": 0.9111}},
    }
    (tmp_path / "loso.json").write_text(json.dumps(loso))
    after = put_loso_on_card(tmp_path / "loso.json", tmp_path).read_text()
    assert "| unsplash | 87 | 0 | 0.8765 | 0.8642 | 0.9111 | 4.6% | - |" in after

    def outside_loso(text: str) -> str:
        head, rest = text.split("\n## Leave one source out\n")
        return head + rest[rest.index("\n## ") :]

    assert outside_loso(after) == outside_loso(before)
    assert json.loads((tmp_path / "metrics.json").read_text())["loso"] == loso
    with pytest.raises(SystemExit):
        main(["--card-only"])  # --card-only without --loso is an argument error, not a re-measure


def test_resumed_keeps_finished_folds_only_for_the_same_settings(tmp_path) -> None:
    from deepguard.training.loso import _resumed

    settings = {"arch": "mobilenet_v2", "budget_min_per_fold": 13.0, "max_test_per_class": 2000}
    assert _resumed(tmp_path, settings) == {**settings, "folds": {}}  # nothing there yet
    done = {**settings, "init_from": "start.onnx", "folds": {"gan": {"auc": 0.8}}, "reference": {"gan": {}}}
    (tmp_path / "loso.json").write_text(json.dumps(done))
    again = _resumed(tmp_path, {**settings, "init_from": "start.onnx"})
    assert again["folds"] == {"gan": {"auc": 0.8}} and again["reference"] == {"gan": {}}
    # another start, another budget, or ImageNet instead of a graph: the old folds measured something else
    for other in (
        {**settings, "init_from": "other.onnx"},
        {**settings, "budget_min_per_fold": 2.0},
        settings,
    ):
        assert _resumed(tmp_path, other) == {**other, "folds": {}}
