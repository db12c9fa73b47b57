"""The origin REST contract (multipart field `file` -> {"msg": {"result", "prob"}}) and the JSON endpoint."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from deepguard.output import to_record
from tests.server_support import running_server, shared_detector

ORIGIN = {"real": "Real", "fake": "Fake", "no_face": "No Faces"}


@pytest.fixture(scope="module")
def url():
    with running_server(max_video_bytes=8 << 20) as srv:
        yield f"http://127.0.0.1:{srv.rest_port}"


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


def _origin_expected(a) -> dict:
    verdict = a.verdict
    if verdict == "uncertain":  # origin clients know Real/Fake only: the binary verdict at the threshold
        verdict = "fake" if a.score >= a.threshold else "real"
    return {"msg": {"result": ORIGIN[verdict], "prob": "0.00" if a.score is None else f"{a.score * 100:.2f}"}}


def test_predict_image_origin_format(url, t1_jpg: Path) -> None:
    r = requests.post(
        f"{url}/predict_image", files={"file": ("t1.jpg", t1_jpg.read_bytes(), "image/jpeg")}, timeout=60
    )
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"msg"} and set(body["msg"]) == {"result", "prob"}
    assert body == _origin_expected(shared_detector().analyze(t1_jpg))
    assert isinstance(body["msg"]["prob"], str) and 0 <= float(body["msg"]["prob"]) <= 100


def test_predict_image_no_faces(url) -> None:
    r = requests.post(
        f"{url}/predict_image",
        files={"file": ("grey.png", _png(np.full((120, 160, 3), 90, np.uint8)))},
        timeout=60,
    )
    assert r.status_code == 200 and r.json() == {"msg": {"result": "No Faces", "prob": "0.00"}}


def test_predict_video_origin_format(url, face_video: Path) -> None:
    r = requests.post(
        f"{url}/predict_video", files={"file": ("clip.mp4", face_video.read_bytes(), "video/mp4")}, timeout=60
    )
    assert r.status_code == 200
    assert r.json() == _origin_expected(shared_detector().analyze(face_video))


@pytest.mark.parametrize(
    ("path", "files", "status", "fragment"),
    [
        ("/predict_image", {"file": ("x.jpg", b"\xff\xd8\xff" + os.urandom(900))}, 400, "x.jpg"),
        ("/predict_image", {"other": ("x.jpg", b"123")}, 400, "missing multipart field 'file'"),
        ("/predict_image", {"file": ("e.png", b"")}, 400, "e.png: empty file"),
        ("/predict_video", {"file": ("t.mp4", b"\x00\x00\x00\x18ftypmp42" + bytes(100))}, 400, "t.mp4"),
        ("/predict_video", {"file": ("big.mp4", bytes(9 << 20))}, 413, "larger than the limit"),
    ],
)
def test_origin_errors_keep_origin_shape(url, path, files, status, fragment) -> None:
    r = requests.post(f"{url}{path}", files=files, timeout=60)
    assert r.status_code == status
    body = r.json()
    assert body["msg"] == {"result": "Error", "prob": "0.00"} and fragment in body["error"]
    assert requests.get(f"{url}/healthz", timeout=10).json() == {"status": "SERVING"}


def test_wrong_kind_is_an_error(url, t1_jpg: Path) -> None:
    r = requests.post(f"{url}/predict_video", files={"file": ("t1.jpg", t1_jpg.read_bytes())}, timeout=60)
    assert r.status_code == 400 and "expected a video, got image" in r.json()["error"]


def test_full_json_endpoint_equals_cli_record(url, face_video: Path) -> None:
    r = requests.post(f"{url}/v1/analyze", files={"file": ("clip.mp4", face_video.read_bytes())}, timeout=60)
    assert r.status_code == 200
    got, want = r.json(), to_record(shared_detector().analyze(face_video))
    assert set(got) == set(want)
    assert got["path"] == "clip.mp4" and got["verdict"] == want["verdict"] and got["frames_sampled"] == 3
    assert got["score"] == pytest.approx(want["score"], abs=1e-5)
    every = requests.post(
        f"{url}/v1/analyze?every_frame=1", files={"file": ("c.mp4", face_video.read_bytes())}, timeout=60
    )
    assert every.json()["frames_sampled"] == 75
    info = requests.get(f"{url}/v1/model", timeout=10).json()
    assert info["model"] == shared_detector().model_name
