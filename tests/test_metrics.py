"""Evaluation package: metrics checked against hand counts, grouping, dataset loading, plots, report.

Expected values are derived independently (counting, Mann-Whitney pairs, explicit logs) rather than
by calling scikit-learn again, so a wrong use of sklearn in the code cannot hide behind itself.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest

from deepguard.evaluation import (
    DatasetError,
    RocSeries,
    binary_metrics,
    equal_error_rate,
    format_table,
    frames_to_series,
    group_scores,
    load_labelled,
    plot_roc,
    plot_scores_over_time,
    write_json,
)
from deepguard.runtime.types import FrameScore

# --- metrics -------------------------------------------------------------------------------------

# 3 fakes then 3 reals. At threshold 0.5 predictions are [1, 1, 0, 1, 0, 0]:
# TP=2 (0.9, 0.6), FN=1 (0.4), FP=1 (0.7), TN=2 (0.2, 0.1).
LABELS6 = [1, 1, 1, 0, 0, 0]
SCORES6 = [0.9, 0.6, 0.4, 0.7, 0.2, 0.1]


def mann_whitney_auc(labels: list[int], scores: list[float]) -> float:
    """P(score of a random fake > score of a random real), ties counting half: the AUC by definition."""
    pos = [s for y, s in zip(labels, scores, strict=True) if y == 1]
    neg = [s for y, s in zip(labels, scores, strict=True) if y == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_six_sample_counts() -> None:
    m = binary_metrics(LABELS6, SCORES6, threshold=0.5)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (2, 1, 2, 1)
    assert (m["n"], m["n_pos"], m["n_neg"]) == (6, 3, 3)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["precision"] == pytest.approx(2 / 3)  # TP / (TP + FP)
    assert m["recall"] == pytest.approx(2 / 3)  # TP / (TP + FN)
    assert m["f1"] == pytest.approx(2 / 3)  # harmonic mean of two equal numbers
    # 0.9 beats all 3 reals, 0.6 and 0.4 beat 0.2 and 0.1: 7 of 9 pairs.
    assert m["roc_auc"] == pytest.approx(7 / 9)
    assert m["roc_auc"] == pytest.approx(mann_whitney_auc(LABELS6, SCORES6))
    expected_ll = (
        -(
            math.log(0.9)
            + math.log(0.6)
            + math.log(0.4)
            + math.log(1 - 0.7)
            + math.log(1 - 0.2)
            + math.log(1 - 0.1)
        )
        / 6
    )
    assert m["log_loss"] == pytest.approx(expected_ll)


def test_threshold_moves_predictions() -> None:
    m = binary_metrics(LABELS6, SCORES6, threshold=0.65)  # predictions [1, 0, 0, 1, 0, 0]
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (1, 1, 2, 2)
    assert m["precision"] == pytest.approx(0.5)
    assert m["recall"] == pytest.approx(1 / 3)
    assert m["f1"] == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))
    assert m["threshold"] == 0.65


def test_auc_with_ties_matches_mann_whitney() -> None:
    rng = np.random.default_rng(0)
    labels = [int(v) for v in rng.integers(0, 2, 40)]
    scores = [round(float(v), 1) for v in rng.random(40)]  # rounding forces ties
    assert binary_metrics(labels, scores)["roc_auc"] == pytest.approx(mann_whitney_auc(labels, scores))


def test_eer_exact_point() -> None:
    # reals 0.1, 0.4, 0.6; fakes 0.3, 0.7, 0.9. At threshold 0.6: FPR = 1/3 (0.6), FNR = 1/3 (0.3).
    eer, thr = equal_error_rate([0, 0, 0, 1, 1, 1], [0.1, 0.4, 0.6, 0.3, 0.7, 0.9])
    assert eer == pytest.approx(1 / 3)
    assert thr == pytest.approx(0.6)


def test_eer_interpolated() -> None:
    # fakes 0.8, 0.4; reals 0.6, 0.3, 0.2. ROC points (fpr, fnr): t=0.6 -> (1/3, 1/2), t=0.4 -> (1/3, 0).
    # fpr - fnr goes -1/6 -> +1/3, so the crossing is 1/3 of the way: fpr = fnr = 1/3, t = 0.6 - 0.2/3.
    eer, thr = equal_error_rate([1, 1, 0, 0, 0], [0.8, 0.4, 0.6, 0.3, 0.2])
    assert eer == pytest.approx(1 / 3)
    assert thr == pytest.approx(0.6 - 0.2 / 3)


def test_eer_all_tied_is_half() -> None:
    eer, thr = equal_error_rate([0, 1], [0.5, 0.5])
    assert eer == pytest.approx(0.5)
    assert thr == pytest.approx(0.5)


def test_perfect_and_inverted() -> None:
    labels = [0, 0, 0, 1, 1, 1]
    good = [0.1, 0.2, 0.3, 0.7, 0.8, 0.9]
    m = binary_metrics(labels, good)
    assert m["accuracy"] == 1.0 and m["f1"] == 1.0
    assert m["roc_auc"] == 1.0
    assert m["eer"] == 0.0
    assert 0.3 < m["eer_threshold"] <= 0.7

    bad = [1 - s for s in good]
    m = binary_metrics(labels, bad)
    assert m["accuracy"] == 0.0 and m["precision"] == 0.0 and m["f1"] == 0.0
    assert m["roc_auc"] == 0.0
    assert m["eer"] == pytest.approx(1.0)


@pytest.mark.parametrize("label", [0, 1])
def test_one_class_input(label: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no UndefinedMetricWarning noise either
        m = binary_metrics([label] * 4, [0.2, 0.4, 0.6, 0.8])
    assert m["roc_auc"] is None and m["eer"] is None and m["eer_threshold"] is None
    assert m["accuracy"] == 0.5
    assert math.isfinite(m["log_loss"])
    assert (m["n_pos"], m["n_neg"]) == ((4, 0) if label else (0, 4))
    if label == 0:  # no fakes: recall undefined -> 0, two false positives -> precision 0
        assert m["precision"] == 0.0 and m["recall"] == 0.0 and m["fp"] == 2


def test_log_loss_with_hard_scores_is_finite() -> None:
    m = binary_metrics([1, 0, 1, 0], [0.0, 1.0, 1.0, 0.0])  # two confidently wrong
    assert math.isfinite(m["log_loss"])
    assert m["log_loss"] == pytest.approx(-math.log(1e-7) / 2, rel=1e-3)
    assert binary_metrics([1, 0], [1.0, 0.0])["log_loss"] < 1e-6


def test_bad_metric_input() -> None:
    with pytest.raises(ValueError, match="length"):
        binary_metrics([0, 1], [0.5])
    with pytest.raises(ValueError, match="0 \\(real\\) or 1"):
        binary_metrics([0, 2], [0.5, 0.5])
    with pytest.raises(ValueError, match="NaN"):
        binary_metrics([0, 1], [0.5, float("nan")])
    with pytest.raises(ValueError, match="no samples"):
        binary_metrics([], [])


# --- grouping ------------------------------------------------------------------------------------


def test_group_scores_mean_and_rule() -> None:
    scores = [0.2, 0.4, None, 0.9, 0.7, None, float("nan")]
    groups = ["a", "a", "a", "b", "b", "c", "c"]
    labels = [0, 0, 0, 1, 1, 1, 1]
    g = group_scores(scores, groups, labels)
    assert g.groups == ["a", "b"]
    np.testing.assert_allclose(g.scores, [0.3, 0.8])
    assert g.labels.tolist() == [0, 1]
    assert g.sizes.tolist() == [2, 2]
    assert g.skipped == ["c"]  # no frame of c had a face

    g = group_scores(scores, groups, labels, rule=max)
    np.testing.assert_allclose(g.scores, [0.4, 0.9])

    g = group_scores([0.1, 0.3], ["x", "x"])
    assert g.labels is None and g.scores.tolist() == [pytest.approx(0.2)]


def test_group_scores_rejects_mixed_labels() -> None:
    with pytest.raises(ValueError, match="'v1' mixes labels"):
        group_scores([0.1, 0.9], ["v1", "v1"], [0, 1])
    with pytest.raises(ValueError, match="length"):
        group_scores([0.1], ["a", "b"])


# --- datasets ------------------------------------------------------------------------------------


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")  # contents are never decoded by the loader
    return path


def test_load_folder_tree(tmp_path: Path) -> None:
    for rel in [
        "real/abc_0001.jpg",
        "real/abc_0002.JPG",
        "real/def_0001.png",
        "fake/ghi_0001.mp4",
        "fake/sub/jkl_0003.jpg",
        "fake/notes.txt",
        "fake/.cache/zzz_0001.jpg",
    ]:
        _touch(tmp_path / rel)
    samples = load_labelled(tmp_path)
    rel = sorted((s.path.relative_to(tmp_path).as_posix(), s.label) for s in samples)
    assert rel == [
        ("fake/ghi_0001.mp4", 1),
        ("fake/sub/jkl_0003.jpg", 1),
        ("real/abc_0001.jpg", 0),
        ("real/abc_0002.JPG", 0),
        ("real/def_0001.png", 0),
    ]
    assert all(s.group is None for s in samples)
    assert len({s.group_key for s in samples}) == 5

    by_name = {s.path.name: s.group for s in load_labelled(str(tmp_path), group_pattern=r"(\w+?)_\d+")}
    assert by_name["abc_0001.jpg"] == by_name["abc_0002.JPG"] == "abc"
    assert by_name["jkl_0003.jpg"] == "jkl"


def test_group_by_subfolder(tmp_path: Path) -> None:
    for rel in ["fake/vid1/0001.jpg", "fake/vid1/0002.jpg", "fake/vid2/0001.jpg"]:
        _touch(tmp_path / rel)
    samples = load_labelled(tmp_path, group_pattern=r"^(?P<group>[^/]+)/")
    assert [s.group for s in samples] == ["vid1", "vid1", "vid2"]


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        load_labelled(tmp_path / "nope")
    with pytest.raises(DatasetError, match="'real/' and/or 'fake/'"):
        load_labelled(tmp_path)
    _touch(tmp_path / "fake" / "readme.txt")
    with pytest.raises(DatasetError, match="no image/video files"):
        load_labelled(tmp_path)
    _touch(tmp_path / "fake" / "nounderscore.jpg")
    with pytest.raises(DatasetError, match="nounderscore.jpg"):
        load_labelled(tmp_path, group_pattern=r"^(\w+?)_\d+")
    with pytest.raises(DatasetError, match="split 'test'"):
        load_labelled(tmp_path, split="test")


def test_folder_split(tmp_path: Path) -> None:
    _touch(tmp_path / "test" / "real" / "a.jpg")
    _touch(tmp_path / "train" / "fake" / "b.jpg")
    assert [s.path.name for s in load_labelled(tmp_path, split="test")] == ["a.jpg"]


def test_load_manifest(tmp_path: Path) -> None:
    for name in ["clips/a.mp4", "clips/b.mp4", "frames/c_01.jpg", "frames/c_02.jpg"]:
        _touch(tmp_path / name)
    outside = _touch(tmp_path.parent / f"{tmp_path.name}_abs.jpg")
    manifest = tmp_path / "set.csv"
    manifest.write_text(
        "\ufefffile,Label,group,split\n"  # BOM and header case from spreadsheet exports
        "clips/a.mp4,fake,,test\n"
        "clips/b.mp4, REAL ,,train\n"
        "frames/c_01.jpg,1,vidC,test\n"
        "frames/c_02.jpg,1,vidC,test\n"
        f"{outside},0,,test\n",
        encoding="utf-8",
    )
    samples = load_labelled(manifest)
    assert [(s.path.name, s.label, s.group) for s in samples] == [
        ("a.mp4", 1, None),
        ("b.mp4", 0, None),
        ("c_01.jpg", 1, "vidC"),
        ("c_02.jpg", 1, "vidC"),
        (outside.name, 0, None),
    ]
    assert samples[0].path == tmp_path / "clips" / "a.mp4"

    test = load_labelled(manifest, split="test")
    assert [s.path.name for s in test] == ["a.mp4", "c_01.jpg", "c_02.jpg", outside.name]
    assert [s.path.name for s in load_labelled(manifest, split="train")] == ["b.mp4"]

    # Pattern fills only the empty group cells.
    grouped = load_labelled(manifest, split="test", group_pattern=r"^(\w+?)[_.]")
    assert [s.group for s in grouped] == ["a", "vidC", "vidC", outside.name.split("_")[0]]


def test_manifest_errors(tmp_path: Path) -> None:
    _touch(tmp_path / "a.jpg")
    m = tmp_path / "m.csv"

    m.write_text("path,label\na.jpg,fake\n")
    with pytest.raises(DatasetError, match="lacks column\\(s\\) file"):
        load_labelled(m)

    m.write_text("file,label\na.jpg,maybe\n")
    with pytest.raises(DatasetError, match="m.csv:2: label 'maybe'"):
        load_labelled(m)

    m.write_text("file,label\na.jpg,fake\nmissing.jpg,real\n")
    with pytest.raises(DatasetError, match="(?s)1 listed file\\(s\\) not found.*m.csv:3: .*missing.jpg"):
        load_labelled(m)

    m.write_text("file,label\na.jpg,fake\n")
    with pytest.raises(DatasetError, match="no split column"):
        load_labelled(m, split="test")

    m.write_text("file,label,split\na.jpg,fake,train\n")
    with pytest.raises(DatasetError, match="no rows for split 'test'.*'train'"):
        load_labelled(m, split="test")

    m.write_text("")
    with pytest.raises(DatasetError, match="empty"):
        load_labelled(m)


# --- plots and report ----------------------------------------------------------------------------

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_plot_roc_writes_png(tmp_path: Path) -> None:
    out = plot_roc(
        LABELS6,
        SCORES6,
        tmp_path / "deep" / "roc.png",
        title="test ROC",
        more=[RocSeries("video", [0, 1], [0.3, 0.8]), RocSeries("fakes only", [1, 1], [0.2, 0.9])],
    )
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5000


def test_plot_scores_over_time_writes_png(tmp_path: Path) -> None:
    frames = [
        FrameScore(i, i / 10, s, 0 if s is None else 1)
        for i, s in enumerate([0.2, 0.7, None, None, 0.9, 0.4])
    ]
    times, scores = frames_to_series(frames)
    out = plot_scores_over_time(times, scores, tmp_path / "t.png", threshold=0.5, title="clip")
    assert out.read_bytes().startswith(PNG_MAGIC) and out.stat().st_size > 5000

    out2 = plot_scores_over_time(None, [None, 0.3], tmp_path / "t2.png")  # frame axis, mostly gaps
    assert out2.stat().st_size > 1000
    with pytest.raises(ValueError, match="length"):
        plot_scores_over_time([0.0], [0.1, 0.2], tmp_path / "t3.png")


def test_format_table_and_json(tmp_path: Path) -> None:
    frame = binary_metrics(LABELS6, SCORES6)
    video = binary_metrics([1, 1], [0.9, 0.8])
    text = format_table({"frame": frame, "video": video})
    lines = text.splitlines()
    assert lines[0].split()[:2] == ["level", "n"]
    assert lines[2].startswith("frame") and "0.7778" in lines[2]  # AUC 7/9
    assert lines[3].startswith("video") and " - " in lines[3]  # one-class: no AUC/EER
    assert "threshold 0.5" in text

    out = write_json(
        {"frame": frame, "arr": np.arange(3), "nan": float("nan"), "p": tmp_path}, tmp_path / "m.json"
    )
    back = json.loads(out.read_text())
    assert back["frame"]["roc_auc"] == pytest.approx(7 / 9)
    assert back["arr"] == [0, 1, 2] and back["nan"] is None and back["p"] == str(tmp_path)
