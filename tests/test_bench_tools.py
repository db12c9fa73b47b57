"""Benchmark helpers: MAC counting from ONNX graphs, the CPU peak formula, test clips, unfused members."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from deepguard.bench.flops import count_macs
from deepguard.bench.peak import cpu_peak


def _tiny(qdq: bool) -> onnx.ModelProto:
    """x[N,3,8,8] -> Conv 4x3x3x3 (pad 1) -> Flatten -> MatMul [256, 2]; optionally QDQ around the Conv."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((256, 2)).astype(np.float32), "fc")]
    nodes = []
    x, w = "x", "w"
    if qdq:
        inits += [
            numpy_helper.from_array(rng.integers(-127, 128, (4, 3, 3, 3), dtype=np.int8), "w_q"),
            numpy_helper.from_array(np.float32(0.01), "s"),
            numpy_helper.from_array(np.uint8(128), "zp_u8"),
            numpy_helper.from_array(np.int8(0), "zp_s8"),
        ]
        nodes += [
            helper.make_node("QuantizeLinear", ["x", "s", "zp_u8"], ["x_q"]),
            helper.make_node("DequantizeLinear", ["x_q", "s", "zp_u8"], ["x_dq"]),
            helper.make_node("DequantizeLinear", ["w_q", "s", "zp_s8"], ["w_dq"]),
        ]
        x, w = "x_dq", "w_dq"
    else:
        inits.append(numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"))
    nodes += [
        helper.make_node("Conv", [x, w], ["y"], pads=[1, 1, 1, 1]),
        helper.make_node("Flatten", ["y"], ["f"]),
        helper.make_node("MatMul", ["f", "fc"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 2])],
        inits,
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_count_macs_exact_on_a_tiny_graph() -> None:
    conv = 4 * 8 * 8 * (3 * 3 * 3)  # output elements x (Cin/group x kH x kW)
    fc = 256 * 2
    c = count_macs(_tiny(False))
    assert c.macs == conv + fc and c.int8_macs == 0
    assert c.by_op == {"Conv": conv, "MatMul": fc} and c.input_shapes == {"x": [1, 3, 8, 8]}
    assert count_macs(_tiny(False), {"x": [4, 3, 8, 8]}).macs == 4 * (conv + fc)
    q = count_macs(_tiny(True))
    assert q.int8_macs == conv and q.float_macs == fc  # the QDQ conv runs in INT8, the float MatMul does not


def test_default_models_mac_counts() -> None:
    from deepguard.runtime.classify import default_model_path
    from deepguard.runtime.facedet.blazeface import DATA_DIR

    fp32, int8 = count_macs(default_model_path("fp32")), count_macs(default_model_path("int8"))
    assert 0.08e9 < fp32.macs < 0.12e9  # MobileNetV2 at 128 px (its published 0.3 GMAC at 224 x (128/224)^2)
    # INT8 file: most MACs in INT8; the FP32 stem (first convs of each backbone, see convert/int8.py) stays float
    assert fp32.int8_macs == 0 and 0.6 * int8.macs < int8.int8_macs < int8.macs
    assert abs(int8.macs - fp32.macs) < 0.01 * fp32.macs  # same network, different precision
    assert 0.05e9 < count_macs(DATA_DIR / "blazeface_full.onnx").macs < 0.2e9


def test_peak_formula(monkeypatch) -> None:
    monkeypatch.setenv("DEEPGUARD_CPU_GHZ", "2.5")
    p = cpu_peak(cores=2)
    assert p.ghz == 2.5 and p.cores == 2
    assert p.fp32_gmacs == pytest.approx(2 * 2.5 * p.fp32_macs_per_cycle, rel=1e-3)
    assert p.int8_gmacs == pytest.approx(2 * 2.5 * p.int8_macs_per_cycle, rel=1e-3)
    assert "cores x" in p.formula and "GMAC/s" in p.formula
    if "avx512f" in p.isa.lower() or "AVX-512" in p.isa:
        assert p.fp32_macs_per_cycle == 32
    if "AVX512-VNNI" in p.isa:
        assert p.int8_macs_per_cycle == 128


def test_clip_frames_have_motion_and_faces() -> None:
    pytest.importorskip("skimage")
    from deepguard.bench.clips import HEIGHT, WIDTH, frames_720p
    from deepguard.runtime.facedet import load_detector

    frames = frames_720p(13)
    assert frames[0].shape == (HEIGHT, WIDTH, 3) and frames[0].dtype == np.uint8
    assert np.abs(frames[12].astype(int) - frames[0].astype(int)).mean() > 5  # things move
    found = load_detector(None, ["CPUExecutionProvider"], threads=1).detect([frames[0]])[0]
    assert len(found) >= 4  # several faces


def test_write_h264_roundtrip(tmp_path) -> None:
    from deepguard.bench.clips import write_h264
    from deepguard.runtime.decode import video_info

    frames = [np.full((72, 128, 3), i * 20, np.uint8) for i in range(5)]
    info = video_info(write_h264(tmp_path / "c.mp4", frames))
    assert info["codec"] == "h264" and (info["width"], info["height"]) == (128, 72)


def test_unfused_members_match_the_fused_graph(tmp_path, monkeypatch, astronaut) -> None:
    monkeypatch.setenv("DEEPGUARD_BENCH_CACHE", str(tmp_path))
    from deepguard.bench.models import UnfusedEnsemble
    from deepguard.runtime.classify import FaceClassifier, default_model_path

    path = default_model_path("int8")
    crops = np.stack([astronaut[0:160, 150:310], astronaut[20:180, 140:300]])
    unfused = UnfusedEnsemble(path)
    members = json.loads((path.parent / "metrics.json").read_text())["weights"]
    assert len(unfused.sessions) == len(members) and unfused.weights.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(
        unfused.score(crops), FaceClassifier(path, providers="cpu").score(crops)[0], atol=1e-5
    )
