"""Black-and-white faces: found by their chroma, floored by a model that asks for it, floor set by measurement."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from deepguard.convert.calibrate import grey_floor
from deepguard.errors import ModelError
from deepguard.runtime.classify import FaceClassifier, default_model_path
from deepguard.runtime.colour import GREY_CHROMA, chroma, floor_grey, grey_crops
from deepguard.runtime.crop import jpeg_roundtrip


def _grey(x: np.ndarray) -> np.ndarray:
    y = np.rint(x.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).clip(0, 255)
    return np.repeat(y[..., None], 3, -1).astype(np.uint8)


@pytest.fixture(scope="module")
def faces(astronaut) -> np.ndarray:
    """Four colour crops of a real photo (different regions: skin, suit, flag), as the classifier re-encodes them."""
    crops = [astronaut[y : y + 160, x : x + 160] for y, x in ((30, 150), (200, 200), (300, 40), (0, 0))]
    return jpeg_roundtrip(np.stack(crops), 95)


def test_grey_crops_found_after_the_re_encode(faces) -> None:
    grey = jpeg_roundtrip(_grey(faces), 95)
    assert not grey_crops(faces).any()
    assert grey_crops(grey).all()
    assert chroma(grey).max() < GREY_CHROMA <= chroma(faces).min()


def test_floor_raises_only_grey_scores(faces) -> None:
    crops = np.concatenate([faces[:2], jpeg_roundtrip(_grey(faces[:2]), 95)])
    probs = np.array([0.1, 0.9, 0.1, 0.9], np.float32)
    out = floor_grey(probs, crops, 0.26)
    np.testing.assert_allclose(out, [0.1, 0.9, 0.26, 0.9])
    assert out.dtype == np.float32
    assert floor_grey(probs, crops, None) is probs


def test_grey_floor_rule() -> None:
    low = 0.3
    s = np.array([0.1] * 20 + [0.9] * 20)
    mostly_fake = np.array([1] * 5 + [0] * 15 + [1] * 20)  # REAL right 15/20 = 75 %
    assert grey_floor(s, mostly_fake, low) == low
    right = np.array([1] * 1 + [0] * 19 + [1] * 20)  # 19/20 = 95 %
    assert grey_floor(s, right, low) is None
    assert grey_floor(s[15:], mostly_fake[15:], low) is None  # 5 called real: too few to tell


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple:
    """The default INT8 graph without a grey floor and with one at 0.9x its fake cut (a floor must stay under it)."""
    from deepguard.convert.metadata import drop_metadata, read_metadata, write_metadata

    out = tmp_path_factory.mktemp("grey")
    plain, floored = out / "plain.onnx", out / "floored.onnx"
    for path in (plain, floored):
        shutil.copy(default_model_path("int8"), path)
    drop_metadata(plain, "grey_floor")
    write_metadata(floored, {"grey_floor": round(0.9 * read_metadata(floored)["threshold"], 4)})
    return plain, floored


def test_classifier_floors_grey_faces(models, faces) -> None:
    plain, floored = (FaceClassifier(p, providers="cpu") for p in models)
    floor = floored.grey_floor
    assert plain.grey_floor is None and floor == pytest.approx(0.9 * floored.threshold, abs=1e-4)
    grey = _grey(faces)
    raw, members = plain.score(grey)
    got, got_members = floored.score(grey)
    np.testing.assert_allclose(got, np.maximum(raw, floor), atol=1e-6)
    np.testing.assert_array_equal(got_members, members)  # member scores stay raw
    assert (raw < floor).any()  # the floor did something here
    np.testing.assert_allclose(floored.score(faces)[0], plain.score(faces)[0], atol=1e-6)  # colour untouched


def test_floor_over_the_cut_refused(tmp_path) -> None:
    from deepguard.convert.metadata import write_metadata

    path = tmp_path / "bad.onnx"
    shutil.copy(default_model_path("int8"), path)
    write_metadata(path, {"grey_floor": 0.99})
    with pytest.raises(ModelError, match="bad.onnx.*grey_floor"):
        FaceClassifier(path, providers="cpu")


def test_build_step_stores_and_drops_the_floor(tmp_path, faces) -> None:
    """store_grey_floor writes the band's low edge when grey REALs are unreliable and removes it when not."""
    pytest.importorskip("onnx")
    from deepguard.convert.metadata import read_metadata
    from deepguard.training.data import CropSet
    from deepguard.training.grey import grey_scores, store_grey_floor

    res = {}
    for prec in ("fp32", "int8"):
        res[prec] = tmp_path / f"{prec}.onnx"
        shutil.copy(default_model_path(prec), res[prec])
    low = FaceClassifier(res["int8"], providers="cpu").threshold  # the highest low edge a model can have
    under = np.all([grey_scores(res[p], faces) < low for p in res], axis=0)
    assert under.any(), "no test crop scores under the cut in black and white"
    images = np.concatenate([faces[under]] * 10)  # at least 10 grey faces called real
    n = len(images)

    def run(labels):
        val = CropSet(images, np.asarray(labels, np.float32), [""] * n, [""] * n, ["s"] * n)
        return store_grey_floor(res, {"uncertain_low": low}, val)  # every grey face is called real

    report = run([1] * n)  # ... and every one is fake
    assert report["graphs"]["int8"]["fakes_called_real"] == 1.0
    assert report["floor"] == low
    assert report["graphs"]["int8"]["real_verdict_precision"] == 0.0
    assert read_metadata(res["int8"])["grey_floor"] == pytest.approx(low)
    report = run([0] * n)  # ... and every one is real
    assert report["floor"] is None
    assert "grey_floor" not in read_metadata(res["int8"]) and "grey_floor" not in read_metadata(res["fp32"])
