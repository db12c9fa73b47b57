"""Conversion parity on tiny Keras members: Keras -> ONNX, fusion, FP16, INT8, metadata, errors, CLI.

The members are small CNNs shaped like the real ones (Normalization, Conv+BN+ReLU6, GAP, Dense(1)) whose
classifier is a logistic probe fitted on a separable synthetic task (smooth "real" images vs "fake" ones with
high-frequency noise). That keeps logits spread over several units instead of random-init noise or a saturated
sigmoid, so logit, probability and INT8 decision checks all mean something. Whole file: ~15 s on 1 CPU thread.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import onnx
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")

from deepguard.convert import (  # noqa: E402
    build_ensemble,
    fuse_members,
    keras_to_onnx,
    load_crops,
    main,
    read_metadata,
    sha256_file,
    to_int8,
    write_metadata,
)
from deepguard.convert.calibrate import apply_temperature  # noqa: E402
from deepguard.errors import MediaError, ModelError  # noqa: E402

CROP = 48
TEMPERATURE = 1.5  # baked into the fused graphs by build_ensemble; parity must account for it
SIZES = {"a": 48, "b": 32}  # b is resized inside the fused graph
WEIGHTS = {"a": 0.6, "b": 0.4}


def _data(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Smooth random colour fields; label 1 adds strong high-frequency noise."""
    rng = np.random.default_rng(seed)
    low = rng.uniform(40, 215, (n, 4, 4, 3)).astype(np.float32)
    base = tf.image.resize(low, (size, size), "bilinear").numpy()
    y = rng.integers(0, 2, n)
    amp = np.where(y == 1, rng.uniform(8, 40, n), rng.uniform(0, 10, n))
    noise = rng.normal(0, 1, (n, size, size, 3)) * amp[:, None, None, None]
    return np.clip(base + noise, 0, 255).round().astype(np.uint8), y


def _member(size: int, seed: int, filters: tuple[int, ...], x: np.ndarray, y: np.ndarray):
    """Random conv features + a logistic-regression head fitted on them (deterministic, no SGD needed)."""
    from sklearn.linear_model import LogisticRegression

    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size, 3), name="pixels")
    h = keras.layers.Normalization(axis=-1, mean=[127.0] * 3, variance=[64.0**2] * 3)(inp)
    for f in filters:
        h = keras.layers.Conv2D(f, 3, strides=2, padding="same", use_bias=False)(h)
        h = keras.layers.BatchNormalization()(h)
        h = keras.layers.ReLU(6.0)(h)
    feat = keras.layers.GlobalAveragePooling2D()(h)
    out = keras.layers.Dense(1, name="logit")(feat)
    model = keras.Model(inp, out)
    xs = (
        tf.image.resize(x.astype(np.float32), (size, size)).numpy()
        if size != x.shape[1]
        else x.astype(np.float32)
    )
    f = keras.Model(inp, feat)(xs, training=False).numpy()
    mu, sd = f.mean(0), f.std(0) + 1e-6
    lr = LogisticRegression(C=0.5, max_iter=2000).fit((f - mu) / sd, y)
    w = lr.coef_[0] / sd
    b = lr.intercept_[0] - np.sum(lr.coef_[0] * mu / sd)
    model.get_layer("logit").set_weights([w[:, None].astype(np.float32), np.array([b], np.float32)])
    return model


def _keras_probs(models: dict, crops: np.ndarray) -> np.ndarray:
    """Member probabilities computed outside ONNX: tf.image.resize (bilinear, half-pixel, no antialias) + sigmoid."""
    cols = []
    for name, model in models.items():
        x = crops.astype(np.float32)
        if x.shape[1:3] != (SIZES[name], SIZES[name]):
            x = tf.image.resize(x, (SIZES[name], SIZES[name]), method="bilinear", antialias=False).numpy()
        cols.append(1 / (1 + np.exp(-model(x, training=False).numpy().astype(np.float64).reshape(-1))))
    return np.stack(cols, axis=1)


def _run(path, x: np.ndarray) -> dict[str, np.ndarray]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    outs = sess.run(None, {sess.get_inputs()[0].name: x})
    return {o.name: v for o, v in zip(sess.get_outputs(), outs, strict=True)}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("convert")
    x_train, y_train = _data(400, CROP, 0)
    models = {
        "a": _member(48, 1, (8, 16), x_train, y_train),
        "b": _member(32, 2, (8, 16, 16), x_train, y_train),
    }
    paths = {}
    for name, model in models.items():
        paths[name] = tmp / f"{name}.keras"
        model.save(paths[name])
    calib, _ = _data(96, CROP, 5)
    val, val_labels = _data(300, CROP, 7)
    result = build_ensemble(
        [(paths[n], WEIGHTS[n], n) for n in models],
        tmp / "out",
        calib,
        val,
        val_labels,
        metadata={
            "name": "tiny",
            "version": "1.2.3",
            "threshold": 0.5,
            "training_data": "synthetic",
            "temperature": TEMPERATURE,
            "uncertain_low": 0.4,
            "uncertain_high": 0.6,
        },
        threads=1,
    )
    return {"tmp": tmp, "models": models, "paths": paths, "val": val, "labels": val_labels, "result": result}


@pytest.mark.parametrize("name", ["a", "b"])
def test_keras_vs_onnx_logits_dynamic_batch(built, name):
    model, onnx_path = built["models"][name], built["result"]["members"][name]
    proto = onnx.load(str(onnx_path))
    assert [i.name for i in proto.graph.input] == ["pixels"]
    assert [o.name for o in proto.graph.output] == ["logit"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"  # dynamic batch
    x = built["val"][:40].astype(np.float32)
    if SIZES[name] != CROP:
        x = tf.image.resize(x, (SIZES[name],) * 2).numpy()
    for n in (1, 5):
        got = _run(onnx_path, x[:n])["logit"]
        want = model(x[:n], training=False).numpy()
        assert got.shape == (n, 1)
        assert np.max(np.abs(got - want)) <= 1e-4
    logits = model(x, training=False).numpy()
    assert (
        logits.std() > 0.5 and np.mean(np.abs(logits) > 8) < 0.1
    )  # spread, not saturated: parity is meaningful


def test_fused_equals_weighted_average_of_keras_members(built):
    fp32, models = built["result"]["fp32"], built["models"]
    crops = built["val"][:64]
    out = _run(fp32, crops)
    want_members = _keras_probs(models, crops)
    w = np.array([WEIGHTS["a"], WEIGHTS["b"]])
    want = apply_temperature(want_members @ (w / w.sum()), TEMPERATURE)  # member_probs stay uncalibrated
    assert np.max(np.abs(want - want_members @ (w / w.sum()))) > 1e-3  # the temperature really does something
    assert out["prob"].shape == (64,) and out["member_probs"].shape == (64, 2)
    assert out["prob"].dtype == np.float32
    # a: same size (Resize must be an identity); b: 48 -> 32 in-graph vs tf.image.resize outside.
    assert np.max(np.abs(out["member_probs"][:, 0] - want_members[:, 0])) <= 1e-5
    assert np.max(np.abs(out["member_probs"] - want_members)) <= 1e-4
    assert np.max(np.abs(out["prob"] - want)) <= 1e-4
    for n in (1, 5):  # dynamic batch on the fused graph
        assert np.max(np.abs(_run(fp32, crops[:n])["prob"] - want[:n])) <= 1e-4


def test_fused_accepts_other_crop_sizes(built):
    """Dynamic H, W: a non-square 40x56 crop is resized in-graph to each member's size."""
    crops = np.ascontiguousarray(built["val"][:8, 4:44, :, :])
    crops = tf.image.resize(crops.astype(np.float32), (40, 56)).numpy().round().astype(np.uint8)
    out = _run(built["result"]["fp32"], crops)
    want = _keras_probs(built["models"], crops)
    assert np.max(np.abs(out["member_probs"] - want)) <= 1e-4


def test_fp16_close_to_fp32(built):
    fp16, fp32 = built["result"]["fp16"], built["result"]["fp32"]
    proto = onnx.load(str(fp16))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert all(o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for o in proto.graph.output)
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in proto.graph.initializer)
    crops = built["val"]
    d = np.abs(_run(fp16, crops)["prob"] - _run(fp32, crops)["prob"])
    assert d.max() <= 1e-2


def test_fp16_keeps_each_member_stem_in_fp32(built, tmp_path):
    """The first ``stem_nodes`` nodes of every member keep FP32 weights; the rest of each member is FP16."""
    from deepguard.convert.fp16 import _stem_nodes, to_fp16

    fp32 = onnx.load(str(built["result"]["fp32"]))
    members = [n for n in fp32.graph.node if n.name.startswith(("m0_", "m1_"))]
    first_conv = {
        p: [n.name for n in members if n.name.startswith(p)].index(
            next(n.name for n in members if n.name.startswith(p) and n.op_type == "Conv")
        )
        for p in ("m0_", "m1_")
    }
    k = max(first_conv.values()) + 1  # each member's first conv is in its stem, later ones are not
    stem = set(_stem_nodes(fp32.graph, k))
    assert {n.split("/")[0] for n in stem} == {"m0_a", "m1_b"}
    proto = onnx.load(str(to_fp16(built["result"]["fp32"], tmp_path / "stem.onnx", stem_nodes=k)))
    dtype = {t.name: t.data_type for t in proto.graph.initializer}
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    kinds = {flag: {dtype[n.input[1]] for n in convs if (n.name in stem) == flag} for flag in (True, False)}
    assert kinds[True] == {onnx.TensorProto.FLOAT} and kinds[False] == {onnx.TensorProto.FLOAT16}
    crops = built["val"]
    d = np.abs(_run(tmp_path / "stem.onnx", crops)["prob"] - _run(built["result"]["fp32"], crops)["prob"])
    assert d.max() <= 1e-2


def test_int8_agrees_with_fp32(built):
    int8, fp32 = built["result"]["int8"], built["result"]["fp32"]
    proto = onnx.load(str(int8))
    ops = {n.op_type for n in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ, one file
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    crops = built["val"]
    p8, p32 = _run(int8, crops)["prob"], _run(fp32, crops)["prob"]
    assert np.mean((p8 >= 0.5) == (p32 >= 0.5)) >= 0.99
    check = built["result"]["report"]["checks"]["int8_vs_fp32"]
    assert check["passed"] and abs(check["delta_auc"]) <= 0.01


def test_int8_weights_fit_pre_vnni_kernels(built):
    """Every quantised weight is within [-64, 64]: pre-VNNI CPUs' int16 pair sums (255 * 64 * 2) cannot saturate."""
    from onnx import numpy_helper

    proto = onnx.load(str(built["result"]["int8"]))
    inits = {i.name: i for i in proto.graph.initializer}
    weights = [
        numpy_helper.to_array(inits[n.input[0]])
        for n in proto.graph.node
        if n.op_type == "DequantizeLinear"
        and n.input[0] in inits
        and inits[n.input[0]].data_type == onnx.TensorProto.INT8
    ]
    assert weights and max(int(np.abs(w.astype(np.int64)).max()) for w in weights) <= 64


def test_int8_recipe_recorded(built):
    """The INT8 file says how it was built and how well it agreed with FP32 on the calibration crops."""
    recipe = read_metadata(built["result"]["int8"])["int8_recipe"]
    assert recipe["calibration_crops"] == 96 and recipe["check_crops"] == 96
    assert recipe["calibration_agreement"] >= 0.9 and recipe["threshold"] == 0.5
    assert recipe["fp32_stem_convs"] == 6  # capped to nothing on these 2-3-conv nets: still quantised


def test_int8_fp32_stem_is_contiguous_and_capped():
    """The FP32 stem is everything upstream of the k-th conv of each backbone, at most a quarter of its convs."""
    from onnx import TensorProto, helper

    from deepguard.convert.int8 import _stem_nodes

    nodes = [helper.make_node("Mul", ["x", "s"], ["n"], name="m0_a/norm")]
    prev = "n"
    for i in range(8):
        nodes.append(helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], name=f"m0_a/conv{i}"))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"m0_a/relu{i}"))
        prev = f"r{i}"
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph)
    assert _stem_nodes(model, 1) == ["m0_a/conv0", "m0_a/norm"]
    assert _stem_nodes(model, 6) == ["m0_a/conv0", "m0_a/conv1", "m0_a/norm", "m0_a/relu0"]  # 8 // 4 = 2
    assert _stem_nodes(model, 0) == []


def test_gptq_rounding_beats_round_to_nearest():
    """GPTQ keeps the quantiser's grid and range (here reduce_range's 7 bits) but lowers the output error."""
    from deepguard.convert.int8 import _gptq_rows

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 16)) @ rng.normal(size=(16, 16))  # correlated input channels
    w = rng.normal(size=(8, 16))
    scale = np.abs(w).max(axis=1) / 64
    q = _gptq_rows(w, x.T @ x, scale, 64)
    rtn = np.clip(np.round(w / scale[:, None]), -64, 64)
    assert q is not None and q.min() >= -64 and q.max() <= 64
    err = np.mean((x @ (q * scale[:, None]).T - x @ w.T) ** 2)
    err_rtn = np.mean((x @ (rtn * scale[:, None]).T - x @ w.T) ** 2)
    assert err < 0.8 * err_rtn


def test_int8_member_graph_with_float_calibration(built, tmp_path):
    """to_int8 reads the model's input type: a float32 member graph is calibrated with float pixels."""
    src = built["result"]["members"]["a"]
    x = built["val"][:32].astype(np.float32)
    out = to_int8(src, tmp_path / "a.int8.onnx", x)
    got = _run(out, x)["logit"]
    want = _run(src, x)["logit"]
    assert got.shape == (32, 1) and np.mean((got >= 0) == (want >= 0)) >= 0.9


def test_parity_report_written_and_passed(built):
    result = built["result"]
    report = json.loads(result["parity"].read_text())
    assert report == json.loads(json.dumps(result["report"]))
    assert report["passed"] is True
    assert set(report["checks"]) == {"keras_vs_onnx_fp32", "fused_vs_keras", "fp16_vs_fp32", "int8_vs_fp32"}
    assert all(c["passed"] for c in report["checks"].values())
    assert report["checks"]["keras_vs_onnx_fp32"]["max_abs_dlogit"] <= 1e-4


def test_metadata_in_every_file(built):
    result, paths = built["result"], built["paths"]
    for precision in ("fp32", "fp16", "int8"):
        meta = read_metadata(result[precision], required=True)
        assert meta["precision"] == precision
        assert meta["name"] == "tiny" and meta["version"] == "1.2.3" and meta["threshold"] == 0.5
        assert meta["input_size"] == CROP and meta["input_dtype"] == "uint8"
        assert meta["input_layout"] == "NHWC" and meta["color_order"] == "RGB"
        assert [m["name"] for m in meta["members"]] == ["a", "b"]
        assert [m["weight"] for m in meta["members"]] == [0.6, 0.4]
        assert [m["input_size"] for m in meta["members"]] == [48, 32]
        assert meta["members"][0]["source_sha256"] == sha256_file(paths["a"])
        assert len(meta["source_sha256"]) == 64 and meta["created"]
        assert meta["temperature"] == TEMPERATURE
        assert (meta["uncertain_low"], meta["uncertain_high"]) == (0.4, 0.6)
    member = read_metadata(result["members"]["b"])
    assert member["input_dtype"] == "float32" and member["input_size"] == 32 and member["name"] == "b"
    assert not {"temperature", "uncertain_low", "uncertain_high"} & set(member)  # a member outputs raw logits


def _identity_model() -> onnx.ModelProto:
    """The smallest valid ONNX model: metadata tests need a file, not a network."""
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    return onnx.helper.make_model(graph)


def test_metadata_round_trip(tmp_path):
    proto = _identity_model()
    proto.metadata_props.add(key="other.tool", value="kept")
    meta = {
        "name": "x",
        "members": [{"name": "a", "weight": 0.5, "input_size": 224, "source_sha256": "0" * 64}],
        "input_size": 224,
        "threshold": 0.37,
        "precision": "fp16",
        "extra": {"k": [1, 2]},
    }
    write_metadata(proto, meta)
    path = tmp_path / "m.onnx"
    onnx.save(proto, str(path))
    write_metadata(path, {"threshold": 0.42})  # merge: other keys stay
    back = read_metadata(path)
    assert back == {**meta, "threshold": 0.42}
    assert {p.key: p.value for p in onnx.load(str(path)).metadata_props}["other.tool"] == "kept"
    assert all(isinstance(p.value, str) for p in onnx.load(str(path)).metadata_props)
    with pytest.raises(ModelError, match="lacks"):
        read_metadata(path, required=True)


def test_drop_metadata_and_write_errors(tmp_path, monkeypatch):
    from deepguard.convert.metadata import drop_metadata

    path = tmp_path / "m.onnx"
    onnx.save(write_metadata(_identity_model(), {"threshold": 0.4, "grey_floor": 0.3}), str(path))
    drop_metadata(path, "grey_floor")
    assert read_metadata(path) == {"threshold": 0.4}
    drop_metadata(path, "grey_floor")  # absent: nothing to do, no error
    assert read_metadata(path) == {"threshold": 0.4}

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(onnx, "save", full_disk)
    with pytest.raises(ModelError, match=r"m\.onnx: cannot write model with metadata \(No space left"):
        write_metadata(path, {"threshold": 0.5})
    with pytest.raises(ModelError, match=r"m\.onnx: cannot write model without threshold"):
        drop_metadata(path, "threshold")


def test_bad_model_paths_raise_model_error(tmp_path):
    missing = tmp_path / "nope.keras"
    with pytest.raises(ModelError, match="nope.keras"):
        keras_to_onnx(missing, tmp_path / "x.onnx")
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"not a zip file at all")
    with pytest.raises(ModelError, match="corrupt.keras"):
        keras_to_onnx(corrupt, tmp_path / "x.onnx")
    bad_onnx = tmp_path / "bad.onnx"
    bad_onnx.write_bytes(b"\x00\x01garbage")
    with pytest.raises(ModelError, match="bad.onnx"):
        fuse_members([(bad_onnx, 1.0, "m")], tmp_path / "f.onnx", 32)
    with pytest.raises(ModelError, match="gone.onnx"):
        read_metadata(tmp_path / "gone.onnx")


def test_cli_end_to_end(built, tmp_path):
    calib = tmp_path / "calib.npy"
    np.save(calib, built["val"][:32])
    out = tmp_path / "cli"
    argv = [
        str(built["paths"]["a"]),
        str(built["paths"]["b"]),
        "--weights",
        "1,1",
        "--out",
        str(out),
        "--calib",
        str(calib),
        "--name",
        "cli_model",
        "--precisions",
        "fp32,int8",
        "--threads",
        "1",
    ]
    assert main(argv) == 0
    assert (out / "cli_model.fp32.onnx").is_file() and (out / "cli_model.int8.onnx").is_file()
    assert not (out / "cli_model.fp16.onnx").exists()
    meta = read_metadata(out / "cli_model.int8.onnx")
    assert [m["name"] for m in meta["members"]] == ["a", "b"] and meta["precision"] == "int8"
    assert main([str(tmp_path / "missing.keras"), "--out", str(out)]) == 1


def test_load_crops_from_labelled_folders(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls, n in (("real", 2), ("fake", 3)):
        (tmp_path / cls).mkdir()
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(
                tmp_path / cls / f"{i}.png"
            )
    crops, labels = load_crops(tmp_path, size=32)
    assert crops.shape == (5, 32, 32, 3) and crops.dtype == np.uint8
    assert labels.tolist() == [0, 0, 1, 1, 1]
    (tmp_path / "fake" / "broken.jpg").write_bytes(b"nope")
    with pytest.raises(MediaError, match="broken.jpg"):
        load_crops(tmp_path, size=32)
    with pytest.raises(MediaError, match="missing"):
        load_crops(tmp_path / "missing")
