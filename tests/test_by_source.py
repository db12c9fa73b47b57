"""Per-source metrics (evaluation/by_source.py), the per-source false-alarm cut, and ``deepguard evaluate`` per source."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from deepguard.convert.calibrate import false_alarm_cut
from deepguard.evaluation.by_source import format_per_source, per_source, source_auc


def _scored_set(seed: int = 0):
    """Sources: 'both' (real + fake), 'photos' (real only), 'gan' (fake only); distinct continuous scores."""
    rng = np.random.default_rng(seed)
    parts = [("both", 0, 30, 0.35), ("both", 1, 30, 0.6), ("photos", 0, 40, 0.25), ("gan", 1, 25, 0.75)]
    s, y, src = [], [], []
    for name, lab, n, mu in parts:
        s.append(np.clip(rng.normal(mu, 0.2, n), 0.001, 0.999))
        y += [lab] * n
        src += [name] * n
    return np.concatenate(s), np.array(y), np.array(src)


def _shares(v: np.ndarray, lo: float, hi: float) -> tuple[float, float, float]:
    return float((v >= hi).mean()), float(((v >= lo) & (v < hi)).mean()), float((v < lo).mean())


@pytest.mark.parametrize("band", [(0.3, 0.7), None])
def test_per_source_rows_match_independent_numbers(band) -> None:
    s, y, src = _scored_set()
    thr = 0.5
    lo, hi = band if band else (thr, thr)
    rows = {r["source"]: r for r in per_source(s.tolist(), y.tolist(), src.tolist(), thr, band)}
    assert list(rows) == ["both", "gan", "photos", "all", "real, sources equal"]

    both = src == "both"
    assert rows["both"]["auc"] == pytest.approx(roc_auc_score(y[both], s[both]))
    # one-class sources: ranked against the other class of the other sources
    m = (src == "photos") | ((src != "photos") & (y == 1))
    assert rows["photos"]["auc"] == pytest.approx(roc_auc_score(y[m], s[m]))
    m = (src == "gan") | ((src != "gan") & (y == 0))
    assert rows["gan"]["auc"] == pytest.approx(roc_auc_score(y[m], s[m]))
    assert rows["all"]["auc"] == pytest.approx(roc_auc_score(y, s))

    for name, n_real, n_fake in (("both", 30, 30), ("photos", 40, 0), ("gan", 0, 25), ("all", 70, 55)):
        r = rows[name]
        assert (r["n_real"], r["n_fake"]) == (n_real, n_fake)
        mine = np.ones(len(s), bool) if name == "all" else src == name
        real, fake = s[mine & (y == 0)], s[mine & (y == 1)]
        if n_real:
            f, u, rr = _shares(real, lo, hi)
            assert r["real"]["called_fake"] == pytest.approx(f)
            assert r["real"]["called_uncertain"] == pytest.approx(u)
            assert r["real"]["called_real"] == pytest.approx(rr)
            assert f + u + rr == pytest.approx(1.0)
        else:
            assert r["real"]["called_fake"] is None
        if n_fake:
            assert r["fake_called_fake"] == pytest.approx(float((fake >= hi).mean()))
        else:
            assert r["fake_called_fake"] is None
    if band is None:
        assert rows["both"]["real"]["called_uncertain"] == 0.0
    # real sources weighted equally: the mean of the two real sources' shares, not the pooled share
    eq = rows["real, sources equal"]["real"]
    for k in ("called_fake", "called_uncertain", "called_real"):
        assert eq[k] == pytest.approx((rows["both"]["real"][k] + rows["photos"]["real"][k]) / 2)

    text = format_per_source(list(rows.values()))
    lines = text.splitlines()
    assert any(ln.lstrip().startswith("photos") and f"{rows['photos']['auc']:.4f}" in ln for ln in lines)
    both_line = next(ln for ln in lines if ln.lstrip().startswith("both"))
    assert f"{100 * rows['both']['real']['called_fake']:.1f}%" in both_line


def test_per_source_edge_cases() -> None:
    with pytest.raises(ValueError):
        per_source([0.1, 0.2], [0, 1], ["a"], 0.5)
    # nothing to rank a one-class source against: AUC None, and a set of fakes only has no balanced real row
    rows = per_source([0.2, 0.9], [1, 1], ["a", "b"], 0.5)
    assert rows[0]["auc"] is None and rows[-1]["real"] == {}
    y, s, src = np.array([0, 1, 0, 1]), np.array([0.1, 0.9, 0.8, 0.2]), np.array(["x", "x", "y", "y"])
    assert source_auc(s, y, src, "x") == 1.0 and source_auc(s, y, src, "y") == 0.0


def _check_cut(s, y, src, rate):
    cut = false_alarm_cut(s, y, src, rate)
    reals = sorted(set(src[y == 0].tolist()))
    for name in reals:  # no real source above the rate at the cut...
        v = s[(y == 0) & (src == name)]
        assert np.mean(v >= cut) <= rate + 1e-12, (name, np.mean(v >= cut))
    below = np.nextafter(cut, -np.inf)  # ...and any lower cut breaks it for at least one source
    assert any(np.mean(s[(y == 0) & (src == n)] >= below) > rate for n in reals)
    return cut


@pytest.mark.parametrize("rate", [0.05, 0.1, 0.2])
def test_false_alarm_cut_is_the_lowest_safe_cut(rate) -> None:
    rng = np.random.default_rng(int(rate * 100))
    s = np.concatenate([rng.uniform(0.01, 0.6, 200), rng.uniform(0.01, 0.9, 37), rng.uniform(0.2, 0.99, 50)])
    y = np.array([0] * 237 + [1] * 50)
    src = np.array(["big"] * 200 + ["small"] * 37 + ["gan"] * 50)
    cut = _check_cut(s, y, src, rate)
    # by brute force over every candidate cut (each score and just above it)
    cands = np.unique(np.concatenate([s, np.nextafter(s, np.inf)]))
    ok = [c for c in cands if all(np.mean(s[(y == 0) & (src == n)] >= c) <= rate for n in ("big", "small"))]
    assert cut == min(ok)
    # the fakes and a fake-only source do not move it; the worst real source sets it
    s2 = s.copy()
    s2[y == 1] = rng.uniform(0, 1, 50)
    assert false_alarm_cut(s2, y, src, rate) == cut
    alone = [false_alarm_cut(s[src == n], y[src == n], src[src == n], rate) for n in ("big", "small")]
    assert cut == max(alone)


def test_false_alarm_cut_with_ties_and_a_tiny_source() -> None:
    s = np.array([0.3] * 10 + [0.5] * 3 + [0.2, 0.4, 0.6])
    y = np.zeros(len(s), int)
    src = np.array(["a"] * 13 + ["b"] * 3)
    cut = _check_cut(s, y, src, 0.1)
    assert cut > 0.6  # 3 faces: none may be called fake, so the cut sits above the largest one


# --- deepguard evaluate, per source --------------------------------------------------------------------------


def _write_crops(root: Path, astronaut, rows) -> Path:
    import cv2

    root.mkdir(parents=True, exist_ok=True)
    with (root / "manifest.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "label"] + (["source"] if len(rows[0]) == 2 else []))
        for i, row in enumerate(rows):
            crop = cv2.cvtColor(astronaut[10 + 7 * i : 230 + 7 * i, 140:340], cv2.COLOR_RGB2BGR)
            cv2.imwrite(str(root / f"f{i}.jpg"), crop)
            w.writerow([f"f{i}.jpg", *row])
    return root / "manifest.csv"


ROWS = [
    ("real", "cam"),
    ("real", "cam"),
    ("fake", "cam"),
    ("fake", "cam"),
    ("real", "photos"),
    ("real", "photos"),
    ("real", "photos"),
    ("fake", "gan"),
    ("fake", "gan"),
]
SCORES = [0.10, 0.45, 0.80, 0.30, 0.05, 0.60, 0.95, 0.70, 0.20]


def test_load_labelled_reads_the_source_column(astronaut, tmp_path) -> None:
    from deepguard.evaluation.dataset import load_labelled

    samples = load_labelled(_write_crops(tmp_path / "s", astronaut, ROWS))
    assert [x.source for x in samples] == [r[1] for r in ROWS]
    plain = load_labelled(_write_crops(tmp_path / "p", astronaut, [r[:1] for r in ROWS]))
    assert all(x.source is None for x in plain)


def test_evaluate_per_source_table_and_json(astronaut, tmp_path, capsys, monkeypatch) -> None:
    """Scores injected per file: the per-source rows equal numbers computed here, at the model's threshold/band."""
    import deepguard.evaluation.run as run
    from deepguard.cli import main

    manifest = _write_crops(tmp_path / "s", astronaut, ROWS)
    by_name = {f"f{i}.jpg": v for i, v in enumerate(SCORES)}

    def fake_scores(clf, samples, batch=64, conditions=None):
        return {c.name: [by_name[x.path.name] for x in samples] for c in conditions}

    monkeypatch.setattr(run, "score_face_crops", fake_scores)
    js = tmp_path / "m.json"
    assert main(["evaluate", str(manifest), "--face-crops", "--json", str(js)]) == 0
    out = capsys.readouterr().out
    m = json.loads(js.read_text())
    thr, band = m["threshold"], m["uncertain_band"]
    lo, hi = band if band else (thr, thr)
    rows = {r["source"]: r for r in m["per_source"]}
    assert list(rows) == ["cam", "gan", "photos", "all", "real, sources equal"]
    s, y = np.array(SCORES), np.array([int(r[0] == "fake") for r in ROWS])
    src = np.array([r[1] for r in ROWS])
    cam = src == "cam"
    assert rows["cam"]["auc"] == pytest.approx(roc_auc_score(y[cam], s[cam]))
    mk = (src == "photos") | (y == 1)
    assert rows["photos"]["auc"] == pytest.approx(roc_auc_score(y[mk], s[mk]))
    mk = (src == "gan") | (y == 0)
    assert rows["gan"]["auc"] == pytest.approx(roc_auc_score(y[mk], s[mk]))
    for name in ("cam", "photos"):
        real = s[(src == name) & (y == 0)]
        f, u, r = _shares(real, lo, hi)
        assert rows[name]["real"] == pytest.approx(
            {"called_fake": f, "called_uncertain": u, "called_real": r}
        )
    assert rows["gan"]["fake_called_fake"] == pytest.approx(float((s[src == "gan"] >= hi).mean()))
    assert rows["all"]["auc"] == pytest.approx(m["levels"]["frame"]["roc_auc"])
    assert "per source" in out and "photos" in out and "real, sources equal" in out

    # the same files without a source column: nothing about sources
    plain = _write_crops(tmp_path / "p", astronaut, [r[:1] for r in ROWS])
    js2 = tmp_path / "m2.json"
    assert main(["evaluate", str(plain), "--face-crops", "--json", str(js2)]) == 0
    assert "per source" not in capsys.readouterr().out
    assert "per_source" not in json.loads(js2.read_text())


def test_evaluate_per_source_with_face_detection(astronaut, tmp_path, capsys) -> None:
    """The detection path (no --face-crops): every scored frame keeps its file's source."""
    import cv2

    from deepguard.cli import main

    root = tmp_path / "d"
    root.mkdir()
    rows = [("real", "a"), ("fake", "a"), ("real", "b"), ("fake", "c")]
    with (root / "m.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "label", "source"])
        for i, (lab, s) in enumerate(rows):
            canvas = np.full((420, 380, 3), 110 + 20 * i, np.uint8)
            canvas[60:320, 70:310] = astronaut[0:260, 120:360]
            cv2.imwrite(str(root / f"x{i}.jpg"), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
            w.writerow([f"x{i}.jpg", lab, s])
    js = tmp_path / "m.json"
    assert main(["evaluate", str(root / "m.csv"), "--json", str(js)]) == 0
    m = json.loads(js.read_text())
    rows_by = {r["source"]: r for r in m["per_source"]}
    assert [(rows_by[k]["n_real"], rows_by[k]["n_fake"]) for k in ("a", "b", "c")] == [(1, 1), (1, 0), (0, 1)]
    assert rows_by["all"]["n_real"] + rows_by["all"]["n_fake"] == m["levels"]["frame"]["n"] == 4


class _ChromaClassifier:
    """A stand-in model whose P(fake) is a crop's mean chroma / 255: colourful = fake. Conditions then move the
    scores predictably (grey crops score 0), so the per-condition rows can be checked by hand."""

    input_size = 16
    threshold = 0.3

    def score(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c = crops.astype(np.float64)
        p = (c.max(-1) - c.min(-1)).mean((1, 2)) / 255.0
        return p, p[:, None]


def test_per_source_under_scores_every_condition_per_source() -> None:
    from deepguard.evaluation.by_source import per_source_under

    rng = np.random.default_rng(0)
    chroma = np.r_[rng.uniform(0, 60, 20), rng.uniform(40, 200, 20), rng.uniform(100, 250, 10)]
    crops = np.zeros((50, 16, 16, 3), np.uint8)
    crops[..., 0] = 20
    crops[..., 1] = (20 + chroma).astype(np.uint8)[:, None, None]
    crops[..., 2] = 20
    labels = [0] * 20 + [1] * 20 + [1] * 10
    sources = ["cam"] * 40 + ["gan"] * 10
    clf = _ChromaClassifier()
    out = per_source_under(clf, crops, labels, sources, "saturation:0,gamma:1", batch=7)
    assert list(out) == ["clean", "saturation:0", "gamma:1"]
    clean = {r["source"]: r for r in out["clean"]}
    p = clf.score(crops)[0]
    assert clean["cam"]["real"]["called_fake"] == pytest.approx(float(np.mean(p[:20] >= 0.3)))
    assert clean["gan"]["fake_called_fake"] == pytest.approx(float(np.mean(p[40:] >= 0.3)))
    assert clean["cam"]["auc"] == pytest.approx(roc_auc_score(labels[:40], p[:40]))
    grey = {r["source"]: r for r in out["saturation:0"]}
    assert grey["cam"]["real"]["called_fake"] == 0 and grey["gan"]["fake_called_fake"] == 0
    assert out["gamma:1"] == out["clean"]  # an identity condition changes nothing
