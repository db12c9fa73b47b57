"""Robustness report: perturbation specs, what each perturbation does to an image, scoring under conditions,
``deepguard evaluate --perturb`` end to end (synthetic data only), and the model card's Robustness section."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from deepguard.cli import main
from deepguard.evaluation.perturb import (
    CLEAN,
    Perturbation,
    PerturbationError,
    downscale,
    format_robustness,
    gamma,
    gaussian_blur,
    gaussian_noise,
    jpeg,
    parse_perturbations,
    robustness_from_files,
    robustness_rows,
    robustness_table,
    saturation,
    sharpen,
)


@pytest.fixture(scope="module")
def crop(astronaut) -> np.ndarray:
    """A 224x224 face crop with real texture (hair, skin, fabric)."""
    return np.ascontiguousarray(astronaut[10:234, 130:354])


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def _high_freq(img: np.ndarray) -> float:
    """Variance of the Laplacian: the usual sharpness measure."""
    return float(cv2.Laplacian(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())


# ------------------------------------------------------------------------------------------ parsing


def test_parse_names_order_and_clean_first() -> None:
    ps = parse_perturbations("jpeg:50,scale:0.5,blur:1.0")
    assert [p.name for p in ps] == ["clean", "jpeg:50", "scale:0.5", "blur:1"]
    assert ps[0] is CLEAN and ps[0].is_clean and not ps[1].is_clean
    assert ps[1].steps == (("jpeg", 50.0),)


def test_parse_lenient_forms() -> None:
    ps = parse_perturbations(" JPEG:50 , none,, blur:1, blur:1.0, noise:5, scale:0.5+jpeg:70 ,clean")
    assert [p.name for p in ps] == ["clean", "jpeg:50", "blur:1", "noise:5", "scale:0.5+jpeg:70"]
    assert [p.name for p in parse_perturbations(["jpeg:90", "blur:2"])] == ["clean", "jpeg:90", "blur:2"]
    assert parse_perturbations("none") == [CLEAN] == parse_perturbations("")


@pytest.mark.parametrize(
    ("spec", "bad", "why"),
    [
        ("jpeg:50,jpg:50", "jpg:50", "unknown kind"),
        ("jpeg", "jpeg", "needs a value"),
        ("jpeg:0", "jpeg:0", "1..100"),
        ("jpeg:101", "jpeg:101", "1..100"),
        ("jpeg:50.5", "jpeg:50.5", "integer"),
        ("scale:0", "scale:0", "0 < F <= 1"),
        ("scale:2", "scale:2", "0 < F <= 1"),
        ("blur:1,blur:abc", "blur:abc", "not a number"),
        ("blur:-1", "blur:-1", "sigma"),
        ("noise:nan", "noise:nan", "sigma"),
        ("jpeg:50+", "jpeg:50+", "empty step"),
        ("none:3", "none:3", "unknown kind"),
        ("sharpen:0", "sharpen:0", "0 < A <= 5"),
        ("gamma:0.1", "gamma:0.1", "0.2 <= G <= 5"),
        ("saturation:-1", "saturation:-1", "0 <= F <= 2"),
    ],
)
def test_parse_errors_name_the_bad_item(spec: str, bad: str, why: str) -> None:
    with pytest.raises(PerturbationError) as e:
        parse_perturbations(spec)
    assert repr(bad) in str(e.value) and why in str(e.value)
    assert isinstance(e.value, ValueError)


# ------------------------------------------------------------------------------------ perturbations


def test_jpeg_quality_orders_fidelity_and_size(crop: np.ndarray) -> None:
    outs = {q: jpeg(crop, q) for q in (95, 50, 10)}
    psnr = {q: _psnr(crop, o) for q, o in outs.items()}
    assert psnr[95] > psnr[50] > psnr[10] > 20
    # the re-encoded file shrinks with quality (measured at one fixed re-encode of each output)
    sizes = {
        q: len(cv2.imencode(".jpg", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, q])[1])
        for q in outs
    }
    assert sizes[95] > sizes[50] > sizes[10]
    assert all(o.shape == crop.shape and o.dtype == np.uint8 for o in outs.values())
    # JPEG keeps colours where they were (RGB in, RGB out: no channel swap)
    assert np.abs(outs[95].mean((0, 1)) - crop.mean((0, 1))).max() < 2


def test_blur_removes_high_frequencies(crop: np.ndarray) -> None:
    hf = [_high_freq(crop)] + [_high_freq(gaussian_blur(crop, s)) for s in (0.5, 1.0, 2.0)]
    assert hf == sorted(hf, reverse=True) and hf[2] < 0.3 * hf[0]
    assert abs(float(gaussian_blur(crop, 1.0).mean()) - float(crop.mean())) < 1


def test_scale_changes_shape_with_area_interpolation(crop: np.ndarray) -> None:
    assert downscale(crop, 0.5).shape == (112, 112, 3)
    assert downscale(crop[:, :223], 0.5).shape == (112, 112, 3)  # rounded: 111.5 -> 112
    assert downscale(crop, 0.001).shape == (1, 1, 3)
    assert np.array_equal(downscale(crop, 1.0), crop)
    # area interpolation averages blocks: a 2x2 checkerboard becomes flat grey (nearest would alias)
    board = np.indices((8, 8)).sum(0) % 2 * 255
    out = downscale(np.repeat(board[..., None], 3, 2).astype(np.uint8), 0.5)
    assert np.all(np.abs(out.astype(int) - 128) <= 1)
    # the information loss the report measures: down and back up is not the original
    up = cv2.resize(downscale(crop, 0.5), (224, 224), interpolation=cv2.INTER_LINEAR)
    assert _psnr(crop, up) < _psnr(crop, jpeg(crop, 95))


def test_noise_strength_and_seeding(crop: np.ndarray) -> None:
    grey = np.full((64, 64, 3), 128, np.uint8)
    n = gaussian_noise(grey, 5).astype(np.float64) - 128
    assert abs(n.std() - 5) < 0.3 and abs(n.mean()) < 0.3
    other = gaussian_noise(np.full((64, 64, 3), 100, np.uint8), 5).astype(np.float64) - 100
    assert not np.array_equal(n, other)  # the noise pattern depends on the image


def test_sharpen_adds_high_frequencies_and_keeps_flat_areas(crop: np.ndarray) -> None:
    hf = [_high_freq(crop)] + [_high_freq(sharpen(crop, a)) for a in (0.5, 1.5)]
    assert hf == sorted(hf) and hf[2] > 2 * hf[0]
    flat = np.full((32, 32, 3), 90, np.uint8)
    assert np.array_equal(sharpen(flat, 1.5), flat)  # no edge, nothing to sharpen
    assert abs(float(sharpen(crop, 1.5).astype(float).mean()) - float(crop.mean())) < 1.5


def test_gamma_curve(crop: np.ndarray) -> None:
    assert np.array_equal(gamma(crop, 1.0), crop)
    ramp = np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, 2)
    bright, dark = gamma(ramp, 0.5)[0, :, 0].astype(int), gamma(ramp, 2.0)[0, :, 0].astype(int)
    assert bright[64] == round(255 * (64 / 255) ** 0.5) and dark[64] == round(255 * (64 / 255) ** 2)
    assert bright[0] == dark[0] == 0 and bright[255] == dark[255] == 255
    assert np.all(np.diff(bright) >= 0) and np.all(np.diff(dark) >= 0)  # monotone: tones keep their order


def test_saturation_zero_is_grey_and_one_is_near_identity(crop: np.ndarray) -> None:
    grey = saturation(crop, 0).astype(int)
    assert np.abs(grey[..., 0] - grey[..., 1]).max() <= 1 and np.abs(grey[..., 1] - grey[..., 2]).max() <= 1
    assert np.abs(saturation(crop, 1).astype(int) - crop.astype(int)).max() <= 4  # 8-bit HLS round trip

    def chroma(x):
        return float(np.mean(x.max(-1).astype(int) - x.min(-1)))

    assert chroma(saturation(crop, 1.5)) > chroma(crop) > chroma(saturation(crop, 0.5)) > chroma(grey)


@pytest.mark.parametrize(
    "spec",
    [
        "jpeg:50",
        "scale:0.5",
        "blur:1.0",
        "noise:5",
        "sharpen:1.5",
        "gamma:0.7",
        "saturation:0",
        "scale:0.7+jpeg:60+blur:0.8",
    ],
)
def test_deterministic_and_input_untouched(crop: np.ndarray, spec: str) -> None:
    (p,) = parse_perturbations(spec)[1:]
    before = crop.copy()
    a, b = p(crop), p(crop.copy())
    assert np.array_equal(a, b) and a.dtype == np.uint8 and a.ndim == 3
    assert np.array_equal(crop, before)
    assert not np.array_equal(a[: crop.shape[0], : crop.shape[1]], crop) or a.shape != crop.shape


def test_perturbation_rejects_non_rgb_uint8() -> None:
    with pytest.raises(ValueError, match="uint8 RGB"):
        Perturbation((("blur", 1.0),))(np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="uint8 RGB"):
        Perturbation((("jpeg", 50.0),))(np.zeros((8, 8, 3), np.float32))


# ------------------------------------------------------------------------------------ scoring tables


class _SharpnessModel:
    """Stand-in classifier: P(fake) grows with high-frequency energy, so blur erases its evidence."""

    input_size = 32
    threshold = 0.5

    def __init__(self) -> None:
        self.seen: list[tuple[int, ...]] = []

    def score(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.seen.append(crops.shape)
        g = crops.astype(np.float64).mean(-1)
        hf = np.abs(np.diff(g, axis=1)).mean((1, 2)) + np.abs(np.diff(g, axis=2)).mean((1, 2))
        p = 1 - np.exp(-hf / 10)
        return p, p[:, None]


def _synthetic_set(n: int = 24, size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Reals: smooth gradients; fakes: the same plus fine texture (the 'artefact')."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    imgs, labels = [], []
    for i in range(n):
        base = (60 + 2 * xx + yy + rng.integers(0, 40)).astype(np.float64)
        fake = i % 2
        strength = 8 + 4 * rng.random()
        img = base + (fake * strength * ((xx + yy) % 2 * 2 - 1)) + rng.normal(0, 1.5, base.shape)
        imgs.append(np.repeat(np.clip(img, 0, 255).astype(np.uint8)[..., None], 3, 2))
        labels.append(fake)
    return np.stack(imgs), np.asarray(labels)


def test_robustness_table_rows(tmp_path: Path) -> None:
    imgs, labels = _synthetic_set()
    model = _SharpnessModel()
    rows = robustness_table(model, imgs, labels, "blur:1.5,jpeg:90")
    assert [r["condition"] for r in rows] == ["clean", "blur:1.5", "jpeg:90"]
    assert {s[1:] for s in model.seen} == {(32, 32, 3)}  # resized to the model input after perturbing
    clean, blur, _ = rows
    assert clean["n"] == 24 and clean["n_pos"] == 12 and clean["delta_auc"] == 0.0
    assert clean["roc_auc"] > 0.95 and blur["delta_auc"] < -0.2  # blur erases the texture evidence
    assert set(clean) >= {
        "condition",
        "n",
        "roc_auc",
        "delta_auc",
        "accuracy",
        "eer",
        "tpr",
        "fpr",
        "threshold",
    }
    text = format_robustness(rows)
    assert text.splitlines()[0].split()[:3] == ["condition", "n", "auc"]
    assert all(name in text for name in ("clean", "blur:1.5", "jpeg:90")) and "threshold 0.5" in text

    # the same crops from lossless files give the same rows
    paths = []
    for i, im in enumerate(imgs):
        paths.append(tmp_path / f"{i}.png")
        cv2.imwrite(str(paths[-1]), cv2.cvtColor(im, cv2.COLOR_RGB2BGR))
    assert robustness_from_files(_SharpnessModel(), paths, labels, "blur:1.5,jpeg:90") == rows
    with pytest.raises(ValueError, match="labels"):
        robustness_table(model, imgs, labels[:3], "blur:1")


def test_robustness_rows_count_missing_faces() -> None:
    rows = robustness_rows(
        [0, 1, 0, 1], {"clean": [0.1, 0.9, 0.2, 0.8], "scale:0.2": [0.1, None, 0.7, 0.6]}, 0.5
    )
    assert rows[1]["no_face"] == 1 and rows[1]["n"] == 3 and rows[1]["fpr"] == 0.5
    assert rows[1]["delta_auc"] == pytest.approx(rows[1]["roc_auc"] - 1.0)
    assert "no_face" in format_robustness(rows)


# ------------------------------------------------------------------------------------------ the CLI


def _labelled_folder(root: Path, astronaut: np.ndarray, n: int = 4) -> Path:
    for label in ("real", "fake"):
        (root / label).mkdir(parents=True)
    for i in range(n):
        c = cv2.cvtColor(astronaut[10 + 10 * i : 230 + 10 * i, 140:340], cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(root / ("real" if i % 2 else "fake") / f"v{i}_0.jpg"), c)
    return root


def test_evaluate_perturb_face_crops(astronaut, tmp_path: Path, capsys) -> None:
    src = _labelled_folder(tmp_path / "set", astronaut)
    js = tmp_path / "m.json"
    assert main(["evaluate", str(src), "--face-crops", "--perturb", "jpeg:50,blur:1", "--json", str(js)]) == 0
    out = capsys.readouterr().out
    assert "robustness" in out
    lines = {ln.split()[0]: ln.split() for ln in out.splitlines() if ln.strip()}
    for cond in ("clean", "jpeg:50", "blur:1"):
        assert cond in lines and lines[cond][1] == "4", out
    assert lines["clean"][3] == "+0.0000"
    res = json.loads(js.read_text())
    assert res["perturb"] == ["jpeg:50", "blur:1"]
    frame = res["robustness"]["frame"]
    assert [r["condition"] for r in frame] == ["clean", "jpeg:50", "blur:1"]
    assert frame[0]["roc_auc"] == res["levels"]["frame"]["roc_auc"]  # the clean row is the main table's
    # the perturbed scores really differ from the clean ones (same samples, different inputs)
    assert frame[1]["log_loss"] != frame[0]["log_loss"] and frame[2]["log_loss"] != frame[0]["log_loss"]


def test_evaluate_perturb_bad_spec_exits_2(astronaut, tmp_path: Path, capsys) -> None:
    src = _labelled_folder(tmp_path / "set", astronaut, n=2)
    assert main(["evaluate", str(src), "--face-crops", "--perturb", "jpeg:50,blurr:1"]) == 2
    err = capsys.readouterr().err
    assert "'blurr:1'" in err and "unknown kind" in err


def test_evaluate_perturb_detector_path(astronaut, face_video: Path, tmp_path: Path, capsys) -> None:
    """Full path: whole photos go through face detection after the perturbation; a video per frame."""
    root = tmp_path / "set"
    for label in ("real", "fake"):
        (root / label).mkdir(parents=True)
    cv2.imwrite(str(root / "real" / "a.jpg"), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(root / "fake" / "b.jpg"), cv2.cvtColor(astronaut[:, ::-1], cv2.COLOR_RGB2BGR))
    (root / "fake" / "c.mp4").write_bytes(face_video.read_bytes())
    js = tmp_path / "m.json"
    assert (
        main(["evaluate", str(root), "--max-frames", "3", "--perturb", "scale:0.5", "--json", str(js)]) == 0
    )
    out = capsys.readouterr().out
    res = json.loads(js.read_text())
    frame = {r["condition"]: r for r in res["robustness"]["frame"]}
    assert set(frame) == {"clean", "scale:0.5"} and res["errors"] == 0
    assert frame["clean"]["n"] == frame["scale:0.5"]["n"] == 5  # 2 photos + 3 video frames, faces found
    video = {r["condition"]: r for r in res["robustness"]["video"]}
    assert video["clean"]["n"] == 3
    assert "robustness, video level" in out


def test_analyze_perturbed_clean_matches_analyze(face_video: Path, monkeypatch) -> None:
    from deepguard.evaluation import run
    from deepguard.runtime.pipeline import Detector

    det = Detector(max_frames=3)
    conds = parse_perturbations("blur:2")
    ref = det.analyze(face_video)
    got = run.analyze_perturbed(det, face_video, conds)
    assert [f.score for f in got["clean"].frames] == pytest.approx([f.score for f in ref.frames])
    assert len(got["blur:2"].frames) == len(ref.frames)
    monkeypatch.setattr(run, "FRAME_CACHE_BYTES", 1)  # too long to cache: decoded again per condition
    again = run.analyze_perturbed(det, face_video, conds)
    assert [f.score for f in again["blur:2"].frames] == [f.score for f in got["blur:2"].frames]
    bad = run.analyze_perturbed(det, face_video.parent / "missing.mp4", conds)
    assert all(a.verdict == "error" for a in bad.values())


# ---------------------------------------------------------------------------------------- model card


def _summary() -> dict:
    m = {k: 0.9 for k in ("roc_auc", "accuracy", "precision", "recall", "f1", "log_loss", "eer")}
    return {
        "weights": {"a": 0.5, "b": 0.5},
        "member_val_auc": {"a": 0.88, "b": 0.87},
        "threshold": 0.42,
        "val": {"fp32": m, "int8": m, "int8_vs_fp32": {"delta_auc": 0.0, "decision_agreement": 1.0}},
    }


def test_model_card_robustness_section(tmp_path: Path) -> None:
    from deepguard.training.card import write_model_card

    plain = write_model_card(_summary(), tmp_path / "plain.md").read_text()
    assert "## Robustness" not in plain and "## Limits" in plain
    rows = robustness_rows(
        [0, 1, 0, 1], {"clean": [0.1, 0.9, 0.2, 0.8], "jpeg:50": [0.3, 0.6, 0.5, 0.4]}, 0.42
    )
    card = write_model_card({**_summary(), "robustness": rows}, tmp_path / "card.md").read_text()
    section = card.split("## Robustness")[1].split("## ")[0]
    assert "| clean | 4 | 1.0000 | +0.0000 |" in section
    assert "| jpeg:50 | 4 | 0.7500 | -0.2500 |" in section


def test_video_level_uses_the_runtime_person_score_for_single_file_groups() -> None:
    """A video file's own (person-level) score replaces the frame-rule score; crop groups keep the frame rule."""
    from deepguard.evaluation.run import _levels

    scores = [0.1, 0.1, 0.1, 0.9, 0.2, 0.3]
    labels = [1, 1, 1, 1, 0, 0]
    groups = ["clip.mp4"] * 4 + ["crops"] * 2
    _, _, plain = _levels(scores, labels, groups, 0.5, "src")
    _, _, person = _levels(scores, labels, groups, 0.5, "src", {"clip.mp4": 0.9})
    assert plain.scores[0] < 0.5 and person.scores[0] == 0.9
    assert plain.scores[1] == person.scores[1]
