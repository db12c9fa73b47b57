"""Calibration and graded verdicts: temperature fit, band rule, the temperature inside the fused graph (FP32,
FP16, INT8), metadata, the runtime's band, protobuf and the origin REST mapping. Keras-free and fast: the fused
graphs are built from tiny hand-made ONNX members."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from deepguard.convert.calibrate import (
    apply_temperature,
    calibrate,
    choose_band,
    ece,
    fit_temperature,
    graded_metrics,
    nll,
)
from deepguard.convert.fuse import FUSE_PREFIX, fuse_members
from deepguard.convert.metadata import read_metadata, write_metadata
from deepguard.errors import ModelError
from deepguard.runtime.aggregate import verdict
from deepguard.runtime.types import Analysis

ort = pytest.importorskip("onnxruntime")


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


# ------------------------------------------------------------------------------------------ temperature fit


def test_fit_recovers_known_temperature_and_improves_calibration():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, 40_000)
    y = (rng.random(z.size) < _sigmoid(z)).astype(int)  # true P(fake) = sigmoid(z)
    p = _sigmoid(2.0 * z)  # over-confident by a factor 2 -> T = 2
    t = fit_temperature(p, y)
    assert t == pytest.approx(2.0, rel=0.05)
    c = apply_temperature(p, t)
    assert ece(c, y) < 0.5 * ece(p, y) and ece(c, y) < 0.02
    assert nll(c, y) < nll(p, y)
    under = _sigmoid(0.5 * z)  # under-confident: T < 1
    assert fit_temperature(under, y) == pytest.approx(0.5, rel=0.05)


def test_apply_temperature_is_monotone_and_fixes_one_half():
    p = np.array([1e-9, 0.1, 0.5, 0.9, 1.0])
    c = apply_temperature(p, 3.0)
    assert np.all(np.diff(c) > 0) and c[2] == pytest.approx(0.5)
    assert c[1] > 0.1 and c[3] < 0.9  # T > 1 pulls towards 1/2
    np.testing.assert_array_equal(apply_temperature(p, 1.0), p)  # T == 1: exactly as the unmodified graph


def test_ece_of_perfectly_binned_scores_is_zero():
    p = np.repeat([0.1, 0.9], 10)
    y = np.array([1] + [0] * 9 + [1] * 9 + [0])
    assert ece(p, y) == pytest.approx(0.0)
    assert ece(np.full(10, 0.9), np.zeros(10)) == pytest.approx(0.9)


# ------------------------------------------------------------------------------------------ band rule


def _band_data():
    """40 real at 0.10, 40 alternating real/fake at 0.30 ... 0.69 (real first), 40 fake at 0.90."""
    mid = np.round(0.30 + 0.01 * np.arange(40), 2)
    s = np.concatenate([np.full(40, 0.10), mid, np.full(40, 0.90)])
    y = np.concatenate([np.zeros(40), np.arange(40) % 2, np.ones(40)]).astype(int)
    return s, y


def test_band_rule_on_synthetic_scores():
    s, y = _band_data()
    # Below 0.41: 40 + 6 real of 51 = 0.902; one more face drops under 0.9. Symmetric on top: 46 of 51 fake.
    lo, hi, fb = choose_band(s, y, 0.5, target=0.9)
    assert (lo, hi, fb) == (pytest.approx(0.41), pytest.approx(0.59), [])
    g = graded_metrics(s, y, 0.5, (lo, hi))
    assert g["real_verdict_precision"] >= 0.9 and g["fake_verdict_precision"] >= 0.9
    assert g["uncertain_fraction"] == pytest.approx(18 / 120)
    # Clamped so that lo <= threshold <= hi: the real side already reaches 90 % at a threshold of 0.35.
    lo, hi, _ = choose_band(s, y, 0.35, target=0.9)
    assert lo == pytest.approx(0.35) and hi == pytest.approx(0.59)
    # A stricter target widens the band.
    lo2, hi2, _ = choose_band(s, y, 0.5, target=0.95)
    assert lo2 < 0.41 and hi2 > 0.59


def test_band_falls_back_when_target_is_unreachable():
    rng = np.random.default_rng(1)
    s, y = rng.random(500), rng.integers(0, 2, 500)  # scores carry no information
    lo, hi, fb = choose_band(s, y, 0.5, target=0.9)
    assert (lo, hi) == (pytest.approx(0.45), pytest.approx(0.55)) and fb == ["low", "high"]


def test_calibrate_end_to_end():
    rng = np.random.default_rng(2)
    z = rng.normal(0, 2.5, 5000)
    y = (rng.random(z.size) < _sigmoid(z)).astype(int)
    cal = calibrate(_sigmoid(3 * z), y)
    assert cal.temperature == pytest.approx(3.0, rel=0.1)
    assert cal.uncertain_low <= cal.threshold <= cal.uncertain_high
    assert 0.4 < cal.threshold < 0.6  # balanced classes, calibrated scores: Youden near 1/2
    assert cal.ece_after < cal.ece_before and cal.nll_after < cal.nll_before
    assert cal.real_verdict_precision >= 0.9 and cal.fake_verdict_precision >= 0.9
    assert cal.accuracy_outside_band > cal.accuracy_at_threshold and 0 < cal.uncertain_fraction < 0.5
    m = cal.metadata()
    assert set(m) == {"temperature", "threshold", "uncertain_low", "uncertain_high"}
    assert m["uncertain_low"] <= m["threshold"] <= m["uncertain_high"]


# ------------------------------------------------------------------------------------------ verdicts


@pytest.mark.parametrize(
    ("score", "expected"),
    [
        (None, "no_face"),
        (0.0, "real"),
        (0.2999, "real"),
        (0.3, "uncertain"),  # lo is inside the band
        (0.5, "uncertain"),
        (0.6999, "uncertain"),
        (0.7, "fake"),  # hi is fake, like the threshold without a band
        (1.0, "fake"),
    ],
)
def test_verdict_with_band(score, expected):
    assert verdict(score, 0.5, (0.3, 0.7)) == expected


def test_verdict_empty_band_and_no_band_are_binary():
    for s in (0.49, 0.5, 0.51):
        assert verdict(s, 0.5, (0.5, 0.5)) == verdict(s, 0.5) == ("fake" if s >= 0.5 else "real")


# ------------------------------------------------------------------------------------------ fused graph


def _member(size: int, seed: int) -> onnx.ModelProto:
    """float NHWC [N,S,S,3] -> mean colour -> linear logit [N,1] (shaped like a real member for fuse_members)."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(0, 0.05, (3, 1)).astype(np.float32), "w")
    b = numpy_helper.from_array(np.array([-127 * 0.05], np.float32), "b")
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["m"], axes=[1, 2], keepdims=0, name="pool"),
        helper.make_node("MatMul", ["m", "w"], ["mw"], name="dense"),
        helper.make_node("Add", ["mw", "b"], ["logit"], name="bias"),
    ]
    graph = helper.make_graph(
        nodes,
        "member",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", size, size, 3])],
        [helper.make_tensor_value_info("logit", TensorProto.FLOAT, ["N", 1])],
        initializer=[w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _fused(temperature: float) -> onnx.ModelProto:
    return fuse_members(
        [(_member(16, 1), 0.7, "a"), (_member(12, 2), 0.3, "b")], None, 16, temperature=temperature
    )


def _run(model, x):
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"image": x}), strict=True))


def _crops(n: int = 64, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)


def test_fused_graph_applies_temperature():
    x = _crops()
    plain, hot = _fused(1.0), _fused(2.5)
    assert not any("calibrate" in n.name for n in plain.graph.node)  # T == 1: graph as before
    assert "deepguard.temperature" not in {p.key for p in plain.metadata_props}
    calib_nodes = [n for n in hot.graph.node if "calibrate" in n.name]
    # fusion-head names: FP16 and INT8 conversion keep these nodes in FP32
    assert calib_nodes and all(n.name.startswith(FUSE_PREFIX) for n in calib_nodes)
    assert read_metadata(hot)["temperature"] == 2.5
    a, b = _run(plain, x), _run(hot, x)
    np.testing.assert_array_equal(a["member_probs"], b["member_probs"])  # members stay raw
    raw = a["member_probs"].astype(np.float64) @ np.array([0.7, 0.3])
    assert np.max(np.abs(a["prob"] - raw)) < 1e-6
    want = apply_temperature(raw, 2.5)
    assert np.max(np.abs(want - raw)) > 1e-2  # the test data is not all at 1/2
    assert b["prob"].shape == (64,) and np.max(np.abs(b["prob"] - want)) < 1e-5
    ext = np.zeros((2, 16, 16, 3), np.uint8), np.full((2, 16, 16, 3), 255, np.uint8)  # finite at the extremes
    assert all(np.all(np.isfinite(_run(hot, e)["prob"])) for e in ext)
    with pytest.raises(ModelError, match="temperature"):
        _fused(0.0)


def test_fp16_and_int8_keep_the_temperature(tmp_path):
    from deepguard.convert import to_fp16, to_int8

    hot = tmp_path / "hot.onnx"
    onnx.save(_fused(2.5), str(hot))
    x = _crops(96, 4)
    want = _run(hot, x)["prob"]
    fp16 = to_fp16(hot, tmp_path / "hot.fp16.onnx")
    assert np.max(np.abs(_run(fp16, x)["prob"] - want)) < 1e-2
    int8 = to_int8(hot, tmp_path / "hot.int8.onnx", x, threshold=0.5, gptq=False)
    q = onnx.load(str(int8))
    produced = {o: n for n in q.graph.node for o in n.output}
    calib_nodes = [n for n in q.graph.node if "calibrate" in n.name]
    assert len(calib_nodes) == 7 and produced["prob"].op_type == "Sigmoid"
    for n in calib_nodes:  # still FP32: no Q/DQ pair feeding it
        feeds = [produced[i].op_type for i in n.input if i in produced]
        assert "DequantizeLinear" not in feeds, n.name
    assert read_metadata(int8)["temperature"] == 2.5
    assert np.max(np.abs(_run(int8, x)["prob"] - want)) < 0.05


# ------------------------------------------------------------------------------------------ metadata + runtime


def test_calibration_metadata_round_trip_and_classifier_band(tmp_path):
    from deepguard.runtime.classify import FaceClassifier, model_band

    path = tmp_path / "m.onnx"
    onnx.save(_fused(2.0), str(path))
    write_metadata(path, {"threshold": 0.45})
    clf = FaceClassifier(path, providers="cpu")
    assert clf.band is None and clf.temperature == 2.0 and clf.threshold == 0.45  # no band: binary verdicts
    write_metadata(path, {"uncertain_low": 0.3, "uncertain_high": 0.62})
    meta = read_metadata(path)
    assert (meta["temperature"], meta["uncertain_low"], meta["uncertain_high"]) == (2.0, 0.3, 0.62)
    assert isinstance(meta["uncertain_low"], float)
    assert FaceClassifier(path, providers="cpu").band == (0.3, 0.62)
    with pytest.raises(ModelError, match="threshold"):
        model_band({"uncertain_low": 0.5, "uncertain_high": 0.6}, 0.45)  # band must contain the threshold
    with pytest.raises(ModelError, match="both"):
        model_band({"uncertain_low": 0.3}, 0.45)


def test_detector_band_dropped_for_threshold_outside_it():
    from deepguard.runtime.pipeline import usable_band

    assert usable_band((0.3, 0.6), 0.5) == (0.3, 0.6)
    assert usable_band((0.3, 0.6), 0.8) is None
    assert usable_band(None, 0.5) is None


def test_accumulator_grades_with_band():
    from deepguard.runtime.types import FrameScore
    from deepguard.serving.engine import Accumulator, FrameOutcome

    acc = Accumulator("x.jpg", "image", "m", 0.5, (0.4, 0.6))
    acc.add(FrameOutcome(FrameScore(0, None, 0.55, 1), []))
    assert acc.result().verdict == "uncertain"
    plain = Accumulator("x.jpg", "image", "m", 0.5)
    plain.add(FrameOutcome(FrameScore(0, None, 0.55, 1), []))
    assert plain.result().verdict == "fake"


# ------------------------------------------------------------------------------------------ wire + REST


def test_uncertain_protobuf_round_trip():
    from deepguard.proto import deepguard_pb2 as pb
    from deepguard.serving import wire

    assert pb.VERDICT_UNCERTAIN == 5 and wire.VERDICTS["uncertain"] == pb.VERDICT_UNCERTAIN
    a = Analysis(path="x.jpg", kind="image", verdict="uncertain", score=0.55, model="m", threshold=0.5)
    msg = pb.AnalysisResult.FromString(wire.analysis_to_pb(a).SerializeToString())
    assert msg.verdict == pb.VERDICT_UNCERTAIN
    assert wire.analysis_from_pb(msg).verdict == "uncertain"
    info = pb.ModelInfo(threshold=0.5, uncertain_low=0.4, uncertain_high=0.6)
    assert pb.ModelInfo.FromString(info.SerializeToString()).uncertain_high == pytest.approx(0.6)
    assert not pb.ModelInfo(threshold=0.5).HasField("uncertain_low")


@pytest.mark.parametrize(("score", "result"), [(0.45, "Real"), (0.5, "Fake"), (0.58, "Fake")])
def test_origin_rest_maps_uncertain_by_threshold(score, result):
    pytest.importorskip("flask")
    from deepguard.rest import origin_body

    a = Analysis(path="x.jpg", kind="image", verdict="uncertain", score=score, threshold=0.5)
    assert origin_body(a) == {"msg": {"result": result, "prob": f"{score * 100:.2f}"}}
    a.verdict = "real"  # graded real/fake pass through unchanged
    assert origin_body(a)["msg"]["result"] == "Real"


# ------------------------------------------------------------------------------------------ model card


def test_model_card_has_calibration_section(tmp_path):
    from deepguard.training.card import write_model_card

    s, y = _band_data()
    cal = calibrate(np.clip(s, 0.01, 0.99), y)
    row = {k: 0.9 for k in ("roc_auc", "accuracy", "precision", "recall", "f1", "log_loss", "eer")}
    summary = {
        "weights": {"a": 1.0},
        "member_val_auc": {"a": 0.9},
        "threshold": cal.metadata()["threshold"],
        "val": {"fp32": row, "int8": row, "int8_vs_fp32": {"delta_auc": 0.0, "decision_agreement": 1.0}},
        "calibration": {
            **cal.to_dict(),
            "stored": cal.metadata(),
            "onnx_val": {"fp32": graded_metrics(s, y, 0.5, (0.41, 0.59))},
        },
    }
    text = write_model_card(summary, tmp_path / "card.md").read_text()
    st = cal.metadata()
    assert "## Calibration and verdicts" in text
    assert f"T = {st['temperature']:.4f}" in text and f"**uncertain** in [{st['uncertain_low']:.4f}, " in text
    assert f"{cal.ece_before:.4f} → **{cal.ece_after:.4f}**" in text
    assert "| FP32 | 0.1500 |" in text  # share of val faces in the band, per shipped model
    del summary["calibration"]
    assert "## Calibration and verdicts" not in write_model_card(summary, tmp_path / "c2.md").read_text()
    assert "crop_context" not in text  # a model without the training crop rule says nothing about it...
    summary["crop_context"] = -0.015
    text = write_model_card(summary, tmp_path / "c3.md").read_text()
    assert "true pixels only up to a margin of -0.015 around the face box" in text  # ...one with it states it
    assert "crop_jpeg_quality" not in text and "re-measured" not in text
    summary["crop_jpeg_quality"] = 95
    summary["remeasured"] = {"seconds": 420.0, "why": "crops re-encoded like training crops"}
    text = write_model_card(summary, tmp_path / "c4.md").read_text()
    assert "re-encoded as a JPEG at quality 95 before it is scored" in text
    assert (
        "re-measured on the shipped graphs without retraining (crops re-encoded like training crops" in text
    )
    assert "Continued training" not in text  # trained from ImageNet: nothing to say...
    old = {
        "a": {"lr": 0.0005, "schedule": "cosine", "epochs_run": 29, "steps_per_epoch": 300, "batch_size": 32}
    }
    summary["recipe"] = {
        "continued_from": {"file": "v8.onnx", "recipe": {"schedule": old}, "train_seconds": 6205.4}
    }
    text = write_model_card(summary, tmp_path / "c5.md").read_text()
    assert "**Continued training**: this run started from v8.onnx (the previous default: a: Adam peak" in text
    assert "29 epochs of 300 steps from ImageNet, 6205 s)" in text  # ...continued: what it started from
    v9 = {"a": {**old["a"], "lr": 0.0001, "epochs_run": 8}}
    summary["recipe"] = {
        "continued_from": {
            "file": "v9.onnx",
            "recipe": {"schedule": v9, "continued_from": summary["recipe"]["continued_from"]},
            "train_seconds": 5566.0,
        }
    }
    # ...and a chain of continuations, back to ImageNet
    text = write_model_card(summary, tmp_path / "c6.md").read_text()
    assert "8 epochs of 300 steps continued from v8.onnx (a: Adam peak 0.0005" in text
    assert "29 epochs of 300 steps from ImageNet, 6205 s), 5566 s)" in text


def test_model_card_states_the_false_alarm_rule_and_per_source_table(tmp_path):
    """With sources, the card says how the threshold was chosen and carries the per-source and LOSO tables."""
    from deepguard.evaluation.by_source import per_source
    from deepguard.training.card import write_model_card

    s, y = _band_data()
    src = np.where(np.arange(len(y)) % 2 == 0, "alpha", "beta")
    cal = calibrate(np.clip(s, 0.01, 0.99), y, sources=src)
    st = cal.metadata()
    row = {k: 0.9 for k in ("roc_auc", "accuracy", "precision", "recall", "f1", "log_loss", "eer")}
    rows = per_source(s, y, src, st["threshold"], (st["uncertain_low"], st["uncertain_high"]))
    fold = {"n_real": 3, "n_fake": 0, "auc": 0.8123, "real_called_fake": 1 / 3, "fake_called_fake": None}
    summary = {
        "weights": {"a": 1.0},
        "member_val_auc": {"a": 0.9},
        "threshold": st["threshold"],
        "val": {"fp32": row, "int8": row, "int8_vs_fp32": {"delta_auc": 0.0, "decision_agreement": 1.0}},
        "calibration": {**cal.to_dict(), "stored": st, "onnx_val": {}},
        "by_source": {"int8": rows},
        "loso": {"arch": "mobilenet_v2", "budget_min_per_fold": 3, "folds": {"alpha": fold}},
    }
    text = write_model_card(summary, tmp_path / "card.md").read_text()
    assert "no* real validation source has more than 5% of its faces called fake" in text
    alpha = rows[0]
    assert f"| alpha | {alpha['n_real']} | {alpha['n_fake']} | {alpha['auc']:.4f} |" in text
    assert "| alpha | 3 | 0 | 0.8123 | - | - | 33.3% | - |" in text and "from ImageNet" in text
    summary["loso"] |= {"init_from": "start.onnx", "reference": {"alpha": {**fold, "auc": 0.9345}}}
    summary["loso"]["note"] = "beta was not held out"
    summary["loso"]["folds"]["alpha"] = {**fold, "auc_val": 0.7}
    text = write_model_card(summary, tmp_path / "loso.md").read_text()
    assert "| alpha | 3 | 0 | 0.8123 | 0.7000 | 0.9345 | 33.3% | - |" in text
    assert "continued from `start.onnx`" in text and '"Seen" is one more run' in text
    assert "Folds: beta was not held out." in text
    assert "## Everyday processing" not in text
    grey = per_source(np.zeros_like(s), y, src, st["threshold"], (st["uncertain_low"], st["uncertain_high"]))
    summary["processing"] = {"spec": "saturation:0", "rows": {"clean": rows, "saturation:0": grey}}
    text = write_model_card(summary, tmp_path / "c2.md").read_text()
    assert (
        "| condition | ROC-AUC (all) | alpha real → fake | beta real → fake | alpha caught | beta caught |"
        in text
    )
    cells = [_pct(alpha["real"]["called_fake"]), _pct(rows[1]["real"]["called_fake"])]
    cells += [_pct(alpha["fake_called_fake"]), _pct(rows[1]["fake_called_fake"])]
    assert f"| clean | {rows[2]['auc']:.4f} | {' | '.join(cells)} |" in text
    assert "| saturation:0 | 0.5000 | 0.0% | 0.0% | 0.0% | 0.0% |" in text  # all scores 0: none called fake
    caught = f"{rows[2]['fake_called_fake']:.0%}"  # the limit line rounds to whole percent
    assert (
        f"- Black-and-white media: 0% of the val fakes are caught once desaturated ({caught} in colour)"
        in text
    )
    assert "to this model grey looks real" in text  # no p_grey in the recipe
    assert "grey_floor" not in text and "weak evidence" in text  # no grey measurement: the old caveat
    g = {"real_verdict_precision": 0.68, "fakes_called_real": 0.49, "reals_called_real": 0.9}
    summary["grey"] = {"target_precision": 0.9, "low": 0.26, "floor": 0.26, "graphs": {"int8": g}}
    text = write_model_card(summary, tmp_path / "c3.md").read_text()
    assert (
        "a REAL verdict would be right 68.0% of the time (target 90%; 49.0% of grey fakes under the band)"
        in text
    )
    assert "raised to at least 0.2600 (metadata `grey_floor`" in text
    summary["grey"]["floor"] = None
    text = write_model_card(summary, tmp_path / "c4.md").read_text()
    assert "black-and-white faces keep the normal verdicts" in text and "grey_floor" not in text
    summary["recipe"] = {"p_grey": 0.1}
    text = write_model_card(summary, tmp_path / "c3.md").read_text()
    assert "Black-and-white media" in text and "grey looks real" not in text
    del summary["processing"]
    assert "Black-and-white media" not in write_model_card(summary, tmp_path / "c4.md").read_text()


def _pct(v: float) -> str:
    return f"{v:.1%}"


def test_model_card_states_each_members_schedule(tmp_path):
    """The recipe line comes from what the members trained with, not from fixed text."""
    from deepguard.training.card import write_model_card

    row = {k: 0.9 for k in ("roc_auc", "accuracy", "precision", "recall", "f1", "log_loss", "eer")}
    sched = {"lr": 5e-4, "schedule": "cosine", "epochs_run": 13, "steps_per_epoch": 300, "batch_size": 32}
    summary = {
        "weights": {"a": 1.0},
        "member_val_auc": {"a": 0.9},
        "threshold": 0.5,
        "val": {"fp32": row, "int8": row, "int8_vs_fp32": {"delta_auc": 0.0, "decision_agreement": 1.0}},
        "recipe": {"sbi_fraction": 0.4, "schedule": {"a": sched}},
    }
    text = write_model_card(summary, tmp_path / "card.md").read_text()
    assert (
        "a: Adam peak 0.0005, linear warm-up then cosine decay" in text and "13 epochs of 300 steps" in text
    )
    assert "black and white" not in text  # a recipe without the B/W augmentation (v8) is not said to have it
    summary["recipe"]["schedule"]["a"] = {**sched, "schedule": "plateau"}
    summary["recipe"]["p_grey"] = 0.1
    text = write_model_card(summary, tmp_path / "c2.md").read_text()
    assert "halved on a validation plateau" in text and "colour jitter, black and white (10% of crops" in text


def test_shipped_cut_holds_the_false_alarm_rule_on_every_graph():
    """The cut chosen on the members' probabilities is raised until no real source has more than 5 % of its faces
    at or above it in any shipped graph's scores (INT8 moves scores), rounded up to the stored 4 digits."""
    from deepguard.convert.calibrate import false_alarm_cut
    from deepguard.training.default import shipped_cut

    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(200), np.ones(100)].astype(int)
    sources = ["a"] * 100 + ["b"] * 100 + ["gan"] * 100
    fp32 = np.r_[rng.uniform(0, 0.8, 200), rng.uniform(0.5, 1, 100)]
    meta = {"temperature": 1.0, "threshold": 0.8, "uncertain_low": 0.2, "uncertain_high": 0.8}
    assert shipped_cut(meta, {"fp32": fp32}, labels, sources) == meta  # the rule already holds: unchanged
    int8 = fp32.copy()
    int8[:8] = [0.81, 0.82, 0.83, 0.84, 0.85, 0.86, 0.87, 0.88123]  # 8 % of source a past the cut in INT8
    out = shipped_cut(meta, {"fp32": fp32, "int8": int8}, labels, sources)
    assert (
        out["threshold"] == out["uncertain_high"] == 0.8301
    )  # just above a's 6th highest (0.83): 5 % remain
    assert out["threshold"] >= false_alarm_cut(int8, labels, sources)
    assert out["uncertain_low"] == 0.2 and out["temperature"] == 1.0
    for s in (fp32, int8):
        for src in ("a", "b"):
            real = s[(labels == 0) & (np.asarray(sources) == src)]
            assert np.mean(real >= out["threshold"]) <= 0.05
