"""Provider configuration without a GPU: TensorRT/CUDA options, FP16 model choice, the TensorRT -> CUDA -> CPU
fallback and its log line (onnxruntime's provider list and session class are faked), CPU session knobs."""

from __future__ import annotations

import logging

import numpy as np
import onnxruntime as ort
import pytest

from deepguard.runtime import classify, providers
from deepguard.runtime.classify import DEFAULT_DIR, FaceClassifier, default_model_path
from deepguard.runtime.facedet.blazeface import DATA_DIR

TRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
INT8 = DEFAULT_DIR / "deepguard-edge-int8.onnx"


@pytest.fixture
def gpu_box(monkeypatch, tmp_path):
    """onnxruntime-gpu as it looks from Python: TensorRT, CUDA and CPU listed as available."""
    monkeypatch.setattr(ort, "get_available_providers", lambda: [TRT, CUDA, CPU])
    monkeypatch.setenv("DEEPGUARD_TRT_CACHE", str(tmp_path / "trt"))
    monkeypatch.delenv("DEEPGUARD_PROVIDERS", raising=False)
    return tmp_path / "trt"


class FakeSession:
    """Records what it was asked for; ``broken`` providers raise like a missing libnvinfer / cuDNN does."""

    broken: set[str] = set()
    ignored: set[str] = set()  # accepted but silently not used (onnxruntime's own fallback)
    created: list[list] = []

    def __init__(self, path, sess_options=None, providers=None):
        names = [p if isinstance(p, str) else p[0] for p in providers]
        FakeSession.created.append(list(providers))
        if names[0] in self.broken:
            raise RuntimeError(f"{names[0]}: libnvinfer.so.10: cannot open shared object file")
        self._providers = [n for n in names if n not in self.broken and n not in self.ignored]

    def get_providers(self):
        return self._providers


@pytest.fixture
def fake_sessions(monkeypatch):
    FakeSession.broken, FakeSession.ignored, FakeSession.created = set(), set(), []
    monkeypatch.setattr(ort, "InferenceSession", FakeSession)
    return FakeSession


def test_gpu_chain_has_fp16_engine_cache_and_dynamic_batch_profile(gpu_box) -> None:
    chain = providers.resolve_providers(None, model_path=INT8)
    assert providers.provider_names(chain) == [TRT, CUDA, CPU]
    trt = chain[0][1]
    assert trt["trt_fp16_enable"] is True
    assert trt["trt_engine_cache_enable"] is True and trt["trt_engine_cache_path"] == str(gpu_box)
    assert trt["trt_timing_cache_enable"] is True
    assert trt["trt_profile_min_shapes"] == "image:1x160x160x3"  # spatial dims pinned to metadata input_size
    assert trt["trt_profile_opt_shapes"] == f"image:{providers.TRT_OPT_BATCH}x160x160x3"
    assert trt["trt_profile_max_shapes"] == f"image:{providers.TRT_MAX_BATCH}x160x160x3"
    cuda = chain[1][1]
    assert cuda["cudnn_conv_algo_search"] == "HEURISTIC" and cuda["device_id"] == 0


def test_trt_knobs_from_env_and_fp32(gpu_box, monkeypatch) -> None:
    monkeypatch.setenv("DEEPGUARD_TRT_MAX_BATCH", "32")
    monkeypatch.setenv("DEEPGUARD_TRT_OPT_BATCH", "64")  # clamped to max
    shapes = providers.trt_profile_shapes(DATA_DIR / "blazeface_full.onnx")
    assert shapes == {
        "trt_profile_min_shapes": "input:1x192x192x3",
        "trt_profile_opt_shapes": "input:32x192x192x3",
        "trt_profile_max_shapes": "input:32x192x192x3",
    }
    assert providers.tensorrt_options(INT8, fp16=False)["trt_fp16_enable"] is False
    monkeypatch.setenv("DEEPGUARD_TRT_FP16", "0")
    assert providers.tensorrt_options()["trt_fp16_enable"] is False


def test_requested_aliases_and_unavailable(gpu_box, monkeypatch, caplog) -> None:
    assert providers.provider_names(providers.resolve_providers("trt, cpu")) == [TRT, CPU]
    assert providers.provider_names(providers.resolve_providers("gpu")) == [CUDA, CPU]
    monkeypatch.setenv("DEEPGUARD_PROVIDERS", "cuda")
    assert providers.provider_names(providers.resolve_providers()) == [CUDA, CPU]
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CPU])
    with caplog.at_level(logging.WARNING, "deepguard.providers"):
        assert providers.resolve_providers("tensorrt,cuda") == [CPU]
    assert "not available" in caplog.text


def test_fallback_tensorrt_to_cuda_logs_which_ran(gpu_box, fake_sessions, caplog) -> None:
    fake_sessions.broken = {TRT}
    with caplog.at_level(logging.INFO, "deepguard.providers"):
        sess = providers.make_session(INT8)
    assert sess.get_providers()[0] == CUDA
    assert [providers.provider_names(c)[0] for c in fake_sessions.created] == [TRT, CUDA]
    line = caplog.records[-1]
    assert line.levelno == logging.WARNING
    assert "runs on CUDAExecutionProvider, not TensorrtExecutionProvider" in line.getMessage()
    assert "libnvinfer" in line.getMessage()


def test_fallback_to_cpu_and_silent_fallbacks_are_logged(gpu_box, fake_sessions, caplog) -> None:
    fake_sessions.broken = {TRT, CUDA}
    with caplog.at_level(logging.INFO, "deepguard.providers"):
        assert providers.make_session(INT8).get_providers() == [CPU]
    assert "runs on CPUExecutionProvider" in caplog.records[-1].getMessage()
    fake_sessions.broken, fake_sessions.ignored = set(), {TRT, CUDA}  # created fine, but on the CPU
    caplog.clear()
    with caplog.at_level(logging.INFO, "deepguard.providers"):
        providers.make_session(INT8)
    assert caplog.records[-1].levelno == logging.WARNING
    assert "runs on CPUExecutionProvider, not TensorrtExecutionProvider" in caplog.records[-1].getMessage()


def test_first_choice_logged_at_info(gpu_box, fake_sessions, caplog) -> None:
    with caplog.at_level(logging.INFO, "deepguard.providers"):
        providers.make_session(INT8)
    rec = caplog.records[-1]
    assert rec.levelno == logging.INFO and "runs on TensorrtExecutionProvider" in rec.getMessage()


def test_auto_precision_per_provider(gpu_box, monkeypatch) -> None:
    assert classify.auto_precision() == "fp32"  # TensorRT builds FP16 engines from the FP32 graph
    assert classify.auto_precision("cuda") == "fp16"
    assert classify.auto_precision("cpu") == "int8"
    fp16 = DEFAULT_DIR / "deepguard-edge-fp16.onnx"
    expected = fp16 if fp16.is_file() else DEFAULT_DIR / "deepguard-edge-fp32.onnx"
    assert default_model_path("auto", "cuda") == expected
    assert default_model_path("auto", "cpu").name == "deepguard-edge-int8.onnx"


def test_classifier_asks_tensorrt_for_fp32_when_fp32_is_explicit(gpu_box, fake_sessions) -> None:
    with pytest.raises(AttributeError):  # the fake session has no model metadata; only the request matters
        FaceClassifier(precision="fp32")
    assert fake_sessions.created[0][0][1]["trt_fp16_enable"] is False
    fake_sessions.created.clear()
    with pytest.raises(AttributeError):
        FaceClassifier(precision="auto")
    assert fake_sessions.created[0][0][1]["trt_fp16_enable"] is True


def test_blazeface_gets_the_same_gpu_options(gpu_box, fake_sessions) -> None:
    from deepguard.runtime.facedet.blazeface import _open_session

    _open_session(DATA_DIR / "blazeface_full.onnx", [TRT, CUDA, CPU], threads=1)
    trt = fake_sessions.created[0][0]
    assert trt[0] == TRT and trt[1]["trt_profile_max_shapes"].startswith("input:")


def test_cpu_session_options(monkeypatch) -> None:
    key = "session.intra_op.allow_spinning"
    monkeypatch.delenv("DEEPGUARD_SPIN", raising=False)
    so = providers.session_options(1)
    assert (
        so.intra_op_num_threads == 1 and so.get_session_config_entry(key) == "0"
    )  # no busy-waiting by default
    assert providers.session_options(None, spin=True).get_session_config_entry(key) == "1"
    monkeypatch.setenv("DEEPGUARD_SPIN", "1")
    assert providers.session_options().get_session_config_entry(key) == "1"


def test_io_binding_path_matches_run(astronaut) -> None:
    crops = np.stack([astronaut[0:160, 150:310], astronaut[10:170, 160:320]])
    plain = FaceClassifier(precision="int8", providers="cpu", threads=1)
    bound = FaceClassifier(precision="int8", providers="cpu", threads=1, io_binding=True)
    assert not plain.io_binding and bound.io_binding
    for a, b in zip(plain.score(crops), bound.score(crops), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_detector_accepts_provider_string(astronaut) -> None:
    from deepguard.runtime.pipeline import Detector

    a = Detector(providers="cpu").analyze_image(
        astronaut, "astronaut"
    )  # used to reach BlazeFace as 'c','p','u'
    assert len(a.faces) == 1
