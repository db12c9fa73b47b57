"""``export-triton``: each config.pbtxt parses as Triton's ModelConfig and agrees with its ONNX graph.

The graph is read here with ``onnx`` directly and dtypes are mapped with ``tritonclient.utils`` (not with the
exporter's own table), so a wrong table, a dropped dim or a renamed tensor fails the comparison.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

mc = pytest.importorskip("tritonclient.grpc.model_config_pb2")
from google.protobuf import text_format  # noqa: E402
from tritonclient.utils import triton_to_np_dtype  # noqa: E402

from deepguard.serving import triton  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "deepguard" / "models" / "default"
BLAZEFACE = ROOT / "deepguard" / "runtime" / "facedet" / "data"


def _config(folder: Path):
    return text_format.Parse((folder / "config.pbtxt").read_text(), mc.ModelConfig())


def _graph_tensors(path: Path) -> tuple[list, list]:
    m = onnx.load(str(path))
    weights = {t.name for t in m.graph.initializer}

    def one(v):
        t = v.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        return v.name, onnx.helper.tensor_dtype_to_np_dtype(t.elem_type), dims

    return [one(v) for v in m.graph.input if v.name not in weights], [one(v) for v in m.graph.output]


def assert_matches_graph(cfg, onnx_path: Path) -> None:
    inputs, outputs = _graph_tensors(onnx_path)
    for declared, graph in ((cfg.input, inputs), (cfg.output, outputs)):
        assert [t.name for t in declared] == [g[0] for g in graph]
        for t, (name, np_type, dims) in zip(declared, graph, strict=True):
            assert triton_to_np_dtype(mc.DataType.Name(t.data_type).removeprefix("TYPE_")) == np_type, name
            if cfg.max_batch_size > 0:
                assert dims[0] == -1, f"{name}: batched export of a fixed batch dim"
                dims = dims[1:]
            if dims:
                assert list(t.dims) == dims and not t.HasField("reshape"), name
            else:  # [batch] only: Triton's form is dims [1] reshaped to a scalar
                assert list(t.dims) == [1] and t.HasField("reshape") and list(t.reshape.shape) == [], name


@pytest.fixture(scope="module")
def cpu_repo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("repo-cpu")
    assert triton.main([str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def gpu_repo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("repo-gpu")
    triton.export_repository(out, device="gpu", tensorrt_fp16=True, instances=2, detector="short")
    return out


def test_repository_layout(cpu_repo: Path) -> None:
    names = sorted(p.name for p in cpu_repo.iterdir())
    assert names == ["deepguard_classifier", "deepguard_face_detector"]
    for n in names:
        assert sorted(p.name for p in (cpu_repo / n).iterdir()) == ["1", "config.pbtxt"]
        assert [p.name for p in (cpu_repo / n / "1").iterdir()] == ["model.onnx"]
    # CPU instances get the INT8 classifier (as the runtime's auto precision) and the full-range detector
    assert filecmp.cmp(cpu_repo / names[0] / "1" / "model.onnx", SHIPPED / "deepguard-edge-int8.onnx", False)
    assert filecmp.cmp(cpu_repo / names[1] / "1" / "model.onnx", BLAZEFACE / "blazeface_full.onnx", False)


def test_cpu_configs_match_the_onnx_graphs(cpu_repo: Path) -> None:
    cls = _config(cpu_repo / "deepguard_classifier")
    det = _config(cpu_repo / "deepguard_face_detector")
    for cfg, src in ((cls, SHIPPED / "deepguard-edge-int8.onnx"), (det, BLAZEFACE / "blazeface_full.onnx")):
        assert cfg.platform == "onnxruntime_onnx" and cfg.backend == "onnxruntime"
        assert_matches_graph(cfg, src)
        assert [g.kind for g in cfg.instance_group] == [mc.ModelInstanceGroup.KIND_CPU]
        assert [g.count for g in cfg.instance_group] == [1]
        assert not cfg.HasField("optimization")
        assert cfg.dynamic_batching.max_queue_delay_microseconds == 5000
    # exact values, so a change in the graph or the defaults is seen
    assert cls.name == "deepguard_classifier" and cls.max_batch_size == 32
    assert list(cls.dynamic_batching.preferred_batch_size) == [8, 16, 32]
    assert [(t.name, t.data_type, list(t.dims)) for t in cls.input] == [("image", mc.TYPE_UINT8, [-1, -1, 3])]
    n_members = len(json.loads((SHIPPED / "metrics.json").read_text())["weights"])
    assert [(t.name, list(t.dims)) for t in cls.output] == [("prob", [1]), ("member_probs", [n_members])]
    assert det.max_batch_size == 8 and list(det.dynamic_batching.preferred_batch_size) == [2, 4, 8]
    assert [(t.name, t.data_type, list(t.dims)) for t in det.input] == [
        ("input", mc.TYPE_FP32, [192, 192, 3])
    ]
    assert [(t.name, list(t.dims)) for t in det.output] == [
        ("regressors", [2304, 16]),
        ("classificators", [2304, 1]),
    ]


def test_gpu_configs_with_tensorrt_fp16(gpu_repo: Path) -> None:
    cls = _config(gpu_repo / "deepguard_classifier")
    det = _config(gpu_repo / "deepguard_face_detector")
    assert filecmp.cmp(gpu_repo / cls.name / "1" / "model.onnx", SHIPPED / "deepguard-edge-fp32.onnx", False)
    assert_matches_graph(cls, SHIPPED / "deepguard-edge-fp32.onnx")
    assert_matches_graph(det, BLAZEFACE / "blazeface_short.onnx")
    assert [(t.name, list(t.dims)) for t in det.input] == [("input", [128, 128, 3])]
    for cfg in (cls, det):
        assert [(g.kind, g.count) for g in cfg.instance_group] == [(mc.ModelInstanceGroup.KIND_GPU, 2)]
        (acc,) = cfg.optimization.execution_accelerators.gpu_execution_accelerator
        assert acc.name == "tensorrt" and acc.parameters["precision_mode"] == "FP16"
        assert int(acc.parameters["max_workspace_size_bytes"]) > 0


def test_copies_run_like_the_sources(cpu_repo: Path) -> None:
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    feeds = {
        "deepguard_classifier": (
            SHIPPED / "deepguard-edge-int8.onnx",
            {"image": rng.integers(0, 256, (2, 160, 160, 3), dtype=np.uint8)},
        ),
        "deepguard_face_detector": (
            BLAZEFACE / "blazeface_full.onnx",
            {"input": rng.uniform(-1, 1, (1, 192, 192, 3)).astype(np.float32)},
        ),
    }
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    for name, (src, feed) in feeds.items():
        run = [
            ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"]).run(None, feed)
            for p in (cpu_repo / name / "1" / "model.onnx", src)
        ]
        assert len(run[0]) == len(_config(cpu_repo / name).output)
        for a, b in zip(*run, strict=True):
            np.testing.assert_array_equal(a, b)


def _tiny_model(path: Path, batch: int | str) -> Path:
    """y = x + 1 on a [batch, 4] float tensor."""
    h = onnx.helper
    x = h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [batch, 4])
    y = h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [batch, 4])
    one = h.make_tensor("one", onnx.TensorProto.FLOAT, [1], [1.0])
    graph = h.make_graph([h.make_node("Add", ["x", "one"], ["y"])], "tiny", [x], [y], [one])
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]), str(path))
    return path


def test_custom_model_and_fixed_batch_dim(tmp_path: Path) -> None:
    dynamic = _tiny_model(tmp_path / "dyn.onnx", "N")
    cfg = triton.model_config("tiny", dynamic, triton.ModelOptions(max_batch_size=4))
    assert [(t.name, list(t.dims)) for t in cfg.input] == [("x", [4])]  # the initializer is no input
    fixed = _tiny_model(tmp_path / "fixed.onnx", 1)
    with pytest.raises(triton.ExportError, match="no dynamic batch dimension"):
        triton.model_config("tiny", fixed, triton.ModelOptions(max_batch_size=4))
    cfg = triton.model_config("tiny", fixed, triton.ModelOptions(max_batch_size=0))
    assert list(cfg.input[0].dims) == [1, 4] and not cfg.HasField("dynamic_batching")
    assert_matches_graph(text_format.Parse(text_format.MessageToString(cfg), mc.ModelConfig()), fixed)

    out = tmp_path / "repo"
    triton.export_repository(out, model=str(dynamic), classifier_max_batch=4)
    assert filecmp.cmp(out / "deepguard_classifier" / "1" / "model.onnx", dynamic, False)
    assert_matches_graph(_config(out / "deepguard_classifier"), dynamic)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tensorrt_fp16": True}, "needs GPU instances"),
        ({"device": "gpu", "tensorrt_fp16": True, "precision": "int8"}, "FP32 graph"),
        ({"model": "nope.onnx"}, "no such file"),
        ({"model": "x.onnx", "precision": "fp32"}, "cannot be combined"),
        ({"instances": 0}, "instance count"),
        ({"max_queue_delay_us": -1}, "queue delay"),
        ({"detector_max_batch": -1}, "max_batch_size must be >= 0"),
        ({"detector": "tiny"}, "unknown BlazeFace variant"),
    ],
)
def test_contradicting_options_are_refused(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(triton.DeepGuardError, match=message):
        triton.export_repository(tmp_path / "repo", **kwargs)
    assert not (tmp_path / "repo").exists()  # nothing half-written


def test_subcommand_registration_is_light() -> None:
    p = argparse.ArgumentParser()
    triton.add_export_triton(p.add_subparsers(dest="command"))
    args = p.parse_args(["export-triton", "out", "--device", "gpu", "--tensorrt-fp16", "--max-crops", "16"])
    assert args.func is triton.run and args.max_crops == 16 and args.tensorrt_fp16
    heavy = ("onnx", "onnxruntime", "tritonclient", "google.protobuf", "grpc", "cv2")
    probe = (
        "import argparse, json, sys\nfrom deepguard.serving.triton import add_export_triton\n"
        "add_export_triton(argparse.ArgumentParser().add_subparsers())\n"
        f"print(json.dumps([m for m in {heavy!r} if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
