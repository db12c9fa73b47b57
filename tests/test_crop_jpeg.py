"""Crops are re-encoded as JPEG before scoring, like every training crop: the encoder is training's, the quality is
the model's (metadata ``crop_jpeg_quality``), every scored crop gets it, and the shipped default carries it."""

from __future__ import annotations

import numpy as np
import pytest

from deepguard.runtime.crop import jpeg_roundtrip
from deepguard.training.recrop import INFERENCE_JPEG_QUALITY, as_scored


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    """Face-like smooth crops with texture: JPEG changes them by about a grey level, not more."""
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0:160, 0:160]
    base = np.stack([120 + 60 * np.sin(xx / 17.0), 100 + 50 * np.cos(yy / 13.0), 90 + 0.3 * (xx + yy)], -1)
    return np.stack([np.clip(base + rng.normal(0, 6, base.shape), 0, 255) for _ in range(8)]).astype(np.uint8)


def test_the_re_encode_is_trainings_encoder(crops) -> None:
    """Training re-encodes with TensorFlow (``tf.image.adjust_jpeg_quality``); decoded by the same decoder, its
    JPEG and ours are the same pixels, at the inference quality and at another (a different quality or chroma
    subsampling would not be)."""
    tf = pytest.importorskip("tensorflow")
    import cv2

    for q in (INFERENCE_JPEG_QUALITY, 60):
        ours = jpeg_roundtrip(crops, q)
        for crop, got in zip(crops, ours, strict=True):
            data = tf.io.encode_jpeg(crop, quality=q).numpy()
            want = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB)
            np.testing.assert_array_equal(got, want)
    assert np.abs(jpeg_roundtrip(crops, 95).astype(int) - crops).mean() > 0.2  # it does change the crop
    assert not np.array_equal(jpeg_roundtrip(crops, 95), jpeg_roundtrip(crops, 60))


def test_inference_quality_is_within_what_training_drew() -> None:
    from deepguard.training.augment import AugmentConfig

    cfg = AugmentConfig()
    assert INFERENCE_JPEG_QUALITY == cfg.jpeg_quality[1] and cfg.p_jpeg == 1.0


def test_keras_side_validation_scores_what_the_classifier_scores(crops) -> None:
    np.testing.assert_array_equal(as_scored(crops), jpeg_roundtrip(crops, INFERENCE_JPEG_QUALITY))


def test_the_classifier_scores_re_encoded_crops(crops) -> None:
    """The shipped default names the quality, and ``score`` feeds the graph the re-encoded crops, not the crops as
    given (the graph's own output on both shows the difference)."""
    from deepguard.convert.metadata import read_metadata
    from deepguard.runtime.classify import DEFAULT_DIR, DEFAULT_NAMES, FaceClassifier

    for precision in ("fp32", "int8"):
        meta = read_metadata(DEFAULT_DIR / DEFAULT_NAMES[precision])
        assert int(meta["crop_jpeg_quality"]) == INFERENCE_JPEG_QUALITY
    clf = FaceClassifier(DEFAULT_DIR / DEFAULT_NAMES["fp32"], providers="cpu", threads=1)
    assert clf.crop_jpeg == INFERENCE_JPEG_QUALITY

    def graph(x: np.ndarray) -> np.ndarray:
        return clf.session.run(["prob"], {clf.input_name: x})[0].reshape(-1)

    got = clf.score(crops)[0]
    np.testing.assert_allclose(got, graph(as_scored(crops)), atol=1e-6)
    assert np.abs(got - graph(crops)).max() > 1e-3


@pytest.mark.parametrize("raw", ["abc", 0, 101, 9.5, True])
def test_a_bad_crop_jpeg_quality_names_the_model(raw) -> None:
    from deepguard.errors import ModelError
    from deepguard.runtime.classify import model_crop_jpeg

    assert model_crop_jpeg({}, "m.onnx") is None
    assert model_crop_jpeg({"crop_jpeg_quality": 95}, "m.onnx") == 95
    with pytest.raises(ModelError, match=r"m\.onnx: metadata deepguard\.crop_jpeg_quality"):
        model_crop_jpeg({"crop_jpeg_quality": raw}, "m.onnx")


def test_set_temperature_rewrites_the_calibration_inside_the_graph(tmp_path, crops) -> None:
    """After ``set_temperature(T)`` the graph's ``prob`` is sigmoid(logit(member prob) / T) for the new T."""
    import shutil

    from deepguard.runtime.classify import DEFAULT_DIR, DEFAULT_NAMES, FaceClassifier
    from deepguard.training.remeasure import set_temperature

    path = tmp_path / "m.onnx"
    shutil.copy(DEFAULT_DIR / DEFAULT_NAMES["fp32"], path)
    set_temperature(path, 2.5)
    prob, members = FaceClassifier(path, providers="cpu", threads=1).score(crops)
    p = np.clip(members[:, 0].astype(np.float64), 1e-6, 1 - 1e-6)
    want = 1 / (1 + np.exp(-np.log(p / (1 - p)) / 2.5))
    np.testing.assert_allclose(prob, want, atol=1e-5)
    assert np.abs(prob - members[:, 0]).max() > 1e-3
