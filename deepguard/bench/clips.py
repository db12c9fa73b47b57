"""Synthetic 720p H.264 test clips with several moving faces, made from photos that installed packages ship.

Why synthetic: benchmarks must run offline and the repository must not carry media. The clip is built from
insightface's group photo ``t1.jpg`` (six faces, 1280x886) panned and slowly zoomed behind a 1280x720 window,
plus scikit-image's astronaut face sliding across it: seven faces of ~60-180 px that move every frame, so the
detector cannot reuse anything and the encoder sees real motion.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from deepguard.errors import MediaError

WIDTH, HEIGHT = 1280, 720


def package_file(package: str, *parts: str) -> Path:
    """A data file inside an installed package, without importing it (insightface's import is slow)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MediaError(f"{package}: package not installed (needed for benchmark media)")
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*parts)
    if not path.is_file():
        raise MediaError(f"{path}: benchmark media missing from the {package} package")
    return path


def group_photo() -> np.ndarray:
    """insightface's ``t1.jpg`` as RGB uint8 (six faces)."""
    from deepguard.runtime.decode import load_image

    return load_image(package_file("insightface", "data", "images", "t1.jpg"))


def astronaut_face() -> np.ndarray:
    """The astronaut's head from scikit-image (RGB uint8, ~260x240)."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[0:260, 120:360])


def frames_720p(n: int, fps: float = 25.0) -> list[np.ndarray]:
    """``n`` RGB 1280x720 frames: the group photo panned/zoomed, the astronaut face moving over it."""
    import cv2

    bg = group_photo()
    face = astronaut_face()
    bh, bw = bg.shape[:2]
    out = []
    for i in range(n):
        t = i / fps
        # Zoom 1.00-1.12 and a vertical pan across the 166 spare rows; x wobbles a little.
        zoom = 1.0 + 0.06 * (1 - np.cos(2 * np.pi * t / 4.0))
        cw, ch = WIDTH / zoom, HEIGHT / zoom
        x0 = (bw - cw) * (0.5 + 0.5 * np.sin(2 * np.pi * t / 3.0))
        y0 = (bh - ch) * (0.5 + 0.5 * np.sin(2 * np.pi * t / 5.0))
        m = np.float32([[zoom, 0, -x0 * zoom], [0, zoom, -y0 * zoom]])
        frame = cv2.warpAffine(bg, m, (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        side = int(150 + 40 * np.sin(2 * np.pi * t / 2.0))
        sprite = cv2.resize(
            face, (side, int(side * face.shape[0] / face.shape[1])), interpolation=cv2.INTER_AREA
        )
        sh, sw = sprite.shape[:2]
        x = int((WIDTH - sw) * (0.5 + 0.5 * np.sin(2 * np.pi * t / 6.0)))
        y = int(HEIGHT - sh - 10 - 30 * (1 + np.sin(2 * np.pi * t / 1.5)))
        frame[y : y + sh, x : x + sw] = sprite
        out.append(frame)
    return out


def sliding_face_frames(
    n: int, size: tuple[int, int] = (640, 360), face: np.ndarray | None = None
) -> list[np.ndarray]:
    """A face (default: the astronaut's) sliding across a grey canvas: one face per frame, detection must follow."""
    import cv2

    w, h = size
    f = cv2.resize(astronaut_face() if face is None else face, (h // 2, h // 2))
    out = []
    for i in range(n):
        canvas = np.full((h, w, 3), 90, np.uint8)
        x = int((w - f.shape[1]) * i / max(n - 1, 1))
        canvas[h // 4 : h // 4 + f.shape[0], x : x + f.shape[1]] = f
        out.append(canvas)
    return out


def write_h264(path: str | Path, frames: list[np.ndarray], fps: int = 25, crf: int = 23) -> Path:
    """Encode RGB frames as H.264 (libx264, yuv420p, default preset: B-frames, like real camera/web video)."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w - w % 2, h - h % 2, "yuv420p"
        s.options = {"crf": str(crf)}
        for f in frames:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f[: s.height, : s.width]), format="rgb24")
            for pkt in s.encode(vf):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


def clip_720p(directory: str | Path, seconds: float = 4.0, fps: int = 25) -> Path:
    """Write (once; reused when present) a 720p H.264 clip of ``seconds`` and return its path."""
    n = int(round(seconds * fps))
    path = Path(directory) / f"faces720p_{n}f_{fps}fps.mp4"
    if not path.is_file():
        tmp = path.with_suffix(".part.mp4")
        write_h264(tmp, frames_720p(n, fps), fps)
        tmp.replace(path)
    return path


__all__ = [
    "HEIGHT",
    "WIDTH",
    "astronaut_face",
    "clip_720p",
    "frames_720p",
    "group_photo",
    "package_file",
    "sliding_face_frames",
    "write_h264",
]
