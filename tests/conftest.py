"""Shared fixtures: real photos from installed packages and small synthetic videos made with PyAV."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _pkg_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{name} not installed")
    return Path(list(spec.submodule_search_locations)[0])


@pytest.fixture(scope="session")
def t1_jpg() -> Path:
    """insightface's group photo (6 faces)."""
    return _pkg_dir("insightface") / "data" / "images" / "t1.jpg"


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    skdata = pytest.importorskip("skimage.data")
    return skdata.astronaut()


def write_video(path: Path, frames: list[np.ndarray], fps: int = 25, codec: str = "libx264") -> Path:
    """Encode RGB frames into a real video file (H.264 mp4 by default)."""
    import av

    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = w - w % 2, h - h % 2, "yuv420p"
        for f in frames:
            fr = av.VideoFrame.from_ndarray(np.ascontiguousarray(f[: h - h % 2, : w - w % 2]), format="rgb24")
            for pkt in s.encode(fr):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


def moving_face_frames(face: np.ndarray, n: int, size: tuple[int, int] = (480, 360)) -> list[np.ndarray]:
    """A face pasted on a grey canvas, sliding horizontally: detection must follow it."""
    from deepguard.bench.clips import sliding_face_frames

    return sliding_face_frames(n, size, face)


@pytest.fixture(scope="session")
def group_clip(t1_jpg: Path) -> list:
    """One second at 25 fps of a real 6-face group photo, panning 2 px per frame (the faces move, slowly)."""
    from deepguard.runtime.decode import load_image
    from deepguard.runtime.types import Frame

    img = load_image(t1_jpg)
    return [Frame(np.ascontiguousarray(np.roll(img, 2 * i, axis=1)), i, i / 25.0) for i in range(25)]


@pytest.fixture(scope="session")
def face_video(tmp_path_factory, astronaut) -> Path:
    """3 s, 25 fps, 480x360 H.264 clip of the astronaut's face moving across the frame."""
    face = astronaut[0:260, 120:360]
    return write_video(tmp_path_factory.mktemp("vid") / "moving.mp4", moving_face_frames(face, 75))


def pytest_report_header(config) -> str:
    """CPU model and whether it has VNNI: INT8 numerics differ by kernel, so a CI log must say which ran."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "cpu: unknown"
    model = next(
        (ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "?"
    )
    flags = next((ln for ln in info.splitlines() if ln.startswith("flags")), "")
    vnni = [f for f in ("avx512_vnni", "avx_vnni", "amx_int8") if f in flags.split()]
    return f"cpu: {model}; int8 dot-product: {', '.join(vnni) or 'no VNNI (int16 pair sums)'}"
