"""Decode stage: images via Pillow, videos via PyAV; all media is synthesised in tmp_path."""

from __future__ import annotations

import io
import signal
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepguard.errors import MediaError
from deepguard.runtime.decode import iter_video_frames, load_image, media_kind, video_info

av = pytest.importorskip("av")

W, H, FPS = 64, 48, 25
BITS = 8  # frame counter: 8 vertical bars (8 px wide) in the top half, white = 1


# ------------------------------------------------------------------------------------------ helpers


def counter_frame(i: int) -> np.ndarray:
    img = np.zeros((H, W, 3), np.uint8)
    for b in range(BITS):
        if (i >> b) & 1:
            img[: H // 2, b * 8 : (b + 1) * 8] = 255
    img[H // 2 :, :, 1] = 128  # constant green bottom half: lets us check colours survive RGB conversion
    return img


def read_counter(img: np.ndarray) -> int:
    top = img[4 : H // 2 - 4].astype(np.float32).mean(axis=(0, 2))  # mean per column
    return sum(1 << b for b in range(BITS) if top[b * 8 + 2 : b * 8 + 6].mean() > 127)


def encode_video(
    path: Path, n: int, codec: str = "libx264", fps: int = FPS, options: dict | None = None
) -> Path:
    pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
    with av.open(str(path), "w", options=options or {}) as out:
        s = out.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = W, H, pix_fmt
        if codec == "libx264":
            s.options = {"preset": "ultrafast", "crf": "18"}
        for i in range(n):
            for p in s.encode(av.VideoFrame.from_ndarray(counter_frame(i), format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


def has_encoder(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
        return True
    except Exception:  # noqa: BLE001
        return False


@contextmanager
def no_hang(seconds: int = 10):
    """Fail instead of hanging (SIGALRM; tests run in the main thread)."""

    def boom(*_):
        raise TimeoutError(f"decoding took more than {seconds}s")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module")
def mp4_4s(tmp_path_factory) -> Path:
    return encode_video(tmp_path_factory.mktemp("v") / "clip.mp4", 100)


@pytest.fixture(scope="module")
def mp4_faststart(tmp_path_factory) -> Path:
    # moov atom first, so a file cut short still has its index and the frames before the cut decode.
    return encode_video(tmp_path_factory.mktemp("v") / "fs.mp4", 100, options={"movflags": "+faststart"})


def indices(frames) -> list[int]:
    return [f.index for f in frames]


# ------------------------------------------------------------------------------------------ videos


def test_every_frame_counter_and_times(mp4_4s):
    frames = list(iter_video_frames(mp4_4s, every_frame=True))
    assert indices(frames) == list(range(100))
    assert [read_counter(f.image) for f in frames] == list(range(100))
    times = [f.time for f in frames]
    assert all(b > a for a, b in zip(times, times[1:], strict=False))
    assert times[0] == pytest.approx(0.0) and times[-1] == pytest.approx(99 / FPS)
    f0 = frames[0].image
    assert f0.shape == (H, W, 3) and f0.dtype == np.uint8 and f0.flags.c_contiguous
    assert abs(int(f0[H - 4, 4, 1]) - 128) < 12 and f0[H - 4, 4, 0] < 20  # green bottom half


def test_fps_none_is_every_frame(mp4_4s):
    assert len(list(iter_video_frames(mp4_4s, fps=None))) == 100


def test_default_one_fps(mp4_4s):
    frames = list(iter_video_frames(mp4_4s))
    assert indices(frames) == [0, 25, 50, 75]
    assert [read_counter(f.image) for f in frames] == [0, 25, 50, 75]
    assert [f.time for f in frames] == pytest.approx([0.0, 1.0, 2.0, 3.0])


def test_two_fps(mp4_4s):
    frames = list(iter_video_frames(mp4_4s, fps=2.0))
    # instants 0, 0.5, ... 3.5 s; frames are 0.04 s apart so 0.5 s falls on frame 12.5 -> frame 13
    assert indices(frames) == [0, 13, 25, 38, 50, 63, 75, 88]
    times = [f.time for f in frames]
    assert all(b > a for a, b in zip(times, times[1:], strict=False))


def test_fps_higher_than_stream_takes_every_frame_once(mp4_4s):
    assert indices(iter_video_frames(mp4_4s, fps=100.0)) == list(range(100))


@pytest.mark.parametrize(
    ("k", "expected"),
    [(1, [0]), (4, [0, 25, 50, 75]), (10, list(range(0, 100, 10))), (500, list(range(100)))],
)
def test_max_frames_spread_evenly(mp4_4s, k, expected):
    frames = list(iter_video_frames(mp4_4s, max_frames=k))
    assert indices(frames) == expected
    assert len(frames) <= k


def test_max_frames_overrides_fps_and_every_frame(mp4_4s):
    assert indices(iter_video_frames(mp4_4s, fps=5.0, every_frame=True, max_frames=4)) == [0, 25, 50, 75]


def test_invalid_sampling_args(mp4_4s):
    with pytest.raises(ValueError):
        iter_video_frames(mp4_4s, fps=0)
    with pytest.raises(ValueError):
        iter_video_frames(mp4_4s, max_frames=0)


def test_one_frame_video(tmp_path):
    p = encode_video(tmp_path / "one.mp4", 1)
    for kw in ({}, {"every_frame": True}, {"fps": 2.0}, {"max_frames": 5}):
        frames = list(iter_video_frames(p, **kw))
        assert indices(frames) == [0], kw
        assert frames[0].time == pytest.approx(0.0)


def test_early_stop_closes_cleanly(mp4_4s):
    it = iter_video_frames(mp4_4s, every_frame=True)
    first = next(it)
    it.close()
    assert first.index == 0


def test_bytes_and_filelike_sources(mp4_4s):
    data = mp4_4s.read_bytes()
    assert indices(iter_video_frames(data, name="upload.mp4")) == [0, 25, 50, 75]
    assert indices(iter_video_frames(io.BytesIO(data))) == [0, 25, 50, 75]


def test_video_info(mp4_4s):
    info = video_info(mp4_4s)
    assert info["fps"] == pytest.approx(25.0)
    assert info["duration"] == pytest.approx(4.0, abs=0.05)
    assert info["frames"] == 100
    assert (info["width"], info["height"]) == (W, H)
    assert info["codec"] == "h264"


@pytest.mark.parametrize(
    ("codec", "ext"),
    [("mpeg4", "avi"), ("mjpeg", "avi"), ("libx264", "mkv"), ("libx264", "mov")],
)
def test_other_containers(tmp_path, codec, ext):
    if not has_encoder(codec):
        pytest.skip(f"PyAV build has no {codec} encoder")
    p = encode_video(tmp_path / f"c.{ext}", 50, codec=codec)
    assert media_kind(p) == "video"
    frames = list(iter_video_frames(p))
    assert indices(frames) == [0, 25]
    assert [read_counter(f.image) for f in frames] == [0, 25]


@pytest.mark.parametrize("codec", ["libvpx-vp9", "libvpx"])
def test_webm(tmp_path, codec):
    if not has_encoder(codec):
        pytest.skip(f"PyAV build has no {codec} (VP8/VP9) encoder")
    p = encode_video(tmp_path / "c.webm", 50, codec=codec)
    assert media_kind(p) == "video"
    # WebM stores no per-stream duration; the container's is used for max_frames.
    assert indices(iter_video_frames(p, max_frames=2)) == [0, 25]
    frames = list(iter_video_frames(p, every_frame=True))
    assert [read_counter(f.image) for f in frames] == list(range(50))


def test_max_frames_without_container_duration(tmp_path):
    """Raw H.264 has no duration (nor timestamps): it is measured by a demux pass, also for file-likes."""
    p = tmp_path / "raw.h264"
    with av.open(str(p), "w", format="h264") as out:
        s = out.add_stream("libx264", rate=FPS)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        for i in range(60):
            for pk in s.encode(av.VideoFrame.from_ndarray(counter_frame(i), format="rgb24")):
                out.mux(pk)
        for pk in s.encode():
            out.mux(pk)
    assert video_info(p)["duration"] is None
    # 60 frames = 2.4 s -> instants 0, 0.8, 1.6 s -> frames 0, 20, 40
    assert indices(iter_video_frames(p, max_frames=3)) == [0, 20, 40]
    with open(p, "rb") as f:
        frames = list(iter_video_frames(f, max_frames=3))
    assert [read_counter(fr.image) for fr in frames] == [0, 20, 40]
    assert indices(iter_video_frames(p)) == [0, 25, 50]  # times invented from the frame rate


def _check_truncated(path: Path, label: str):
    """A damaged file either yields correct frames (those before the damage) or raises MediaError."""
    with no_hang(15):
        try:
            frames = list(iter_video_frames(path, every_frame=True))
        except MediaError as e:
            assert label in str(e)
            return None
    assert frames, "no frames must raise MediaError, not yield nothing"
    assert indices(frames) == list(range(len(frames)))
    assert [read_counter(f.image) for f in frames[:10]] == list(range(min(10, len(frames))))
    return frames


@pytest.mark.parametrize("fixture", ["mp4_4s", "mp4_faststart"])
def test_truncated_mp4(tmp_path, request, fixture):
    data = request.getfixturevalue(fixture).read_bytes()
    half = tmp_path / "half.mp4"
    half.write_bytes(data[: len(data) // 2])
    frames = _check_truncated(half, "half.mp4")
    if fixture == "mp4_faststart":
        # index at the front: the first half of the frames is decodable
        assert frames is not None and 10 <= len(frames) < 100
    kb = tmp_path / "kb.mp4"
    kb.write_bytes(data[:1024])
    _check_truncated(kb, "kb.mp4")


def test_empty_video_file(tmp_path):
    p = tmp_path / "empty.mp4"
    p.write_bytes(b"")
    with pytest.raises(MediaError, match=r"empty\.mp4: empty file"):
        iter_video_frames(p)
    with pytest.raises(MediaError, match="empty"):
        video_info(p)


def test_random_bytes_video(tmp_path):
    p = tmp_path / "noise.mp4"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    with no_hang(15), pytest.raises(MediaError, match=r"noise\.mp4"):
        list(iter_video_frames(p))


def test_missing_file(tmp_path):
    with pytest.raises(MediaError, match="not found"):
        iter_video_frames(tmp_path / "nope.mp4")


def test_no_video_stream(tmp_path):
    p = tmp_path / "audio.mka"
    with av.open(str(p), "w", format="matroska") as out:
        s = out.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for pk in s.encode(frame):
            out.mux(pk)
        for pk in s.encode():
            out.mux(pk)
    with pytest.raises(MediaError, match=r"audio\.mka: no video stream"):
        iter_video_frames(p)


def test_image_is_not_a_video(tmp_path):
    p = tmp_path / "pic.png"
    Image.new("RGB", (8, 8)).save(p)
    # FFmpeg can read a PNG as a 1-frame "video"; either outcome is fine, never a crash.
    try:
        frames = list(iter_video_frames(p))
        assert len(frames) == 1
    except MediaError as e:
        assert "pic.png" in str(e)


# ------------------------------------------------------------------------------------------ media_kind


def test_media_kind_sniffs_content_first(tmp_path, mp4_4s):
    jpg_named_mp4 = tmp_path / "liar.mp4"
    Image.new("RGB", (8, 8)).save(jpg_named_mp4, format="JPEG")
    assert media_kind(jpg_named_mp4) == "image"
    mp4_named_jpg = tmp_path / "liar.jpg"
    mp4_named_jpg.write_bytes(mp4_4s.read_bytes())
    assert media_kind(mp4_named_jpg) == "video"
    assert media_kind(mp4_4s.read_bytes()) == "video"
    for fmt in ("PNG", "WEBP", "BMP", "GIF", "TIFF"):
        buf = io.BytesIO()
        Image.new("RGB", (8, 8)).save(buf, format=fmt)
        assert media_kind(buf.getvalue()) == "image", fmt


def test_media_kind_extension_fallback_and_unknown(tmp_path):
    blob = b"\x00\x01garbage-without-signature" * 4
    (tmp_path / "x.mp4").write_bytes(blob)
    (tmp_path / "x.png").write_bytes(blob)
    (tmp_path / "x.xyz").write_bytes(blob)
    assert media_kind(tmp_path / "x.mp4") == "video"
    assert media_kind(tmp_path / "x.png") == "image"
    assert media_kind(blob, name="upload.MOV") == "video"
    with pytest.raises(MediaError, match=r"x\.xyz: unknown media type"):
        media_kind(tmp_path / "x.xyz")
    (tmp_path / "e.jpg").write_bytes(b"")
    with pytest.raises(MediaError, match=r"e\.jpg: empty file"):
        media_kind(tmp_path / "e.jpg")


# ------------------------------------------------------------------------------------------ images

RED, BLUE = (255, 0, 0), (0, 0, 255)


def two_tone(w: int = 40, h: int = 20) -> Image.Image:
    """Left half red, right half blue."""
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 2] = RED
    a[:, w // 2 :] = BLUE
    return Image.fromarray(a)


def close(px, rgb, tol=30) -> bool:
    return all(abs(int(a) - b) <= tol for a, b in zip(px, rgb, strict=True))


def test_exif_orientation_6_rotates(tmp_path):
    p = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    two_tone(40, 20).save(p, quality=95, exif=exif)
    img = load_image(p)
    assert img.shape == (40, 20, 3) and img.dtype == np.uint8
    # rotating 90 degrees clockwise brings the left (red) half to the top
    assert close(img[5, 10], RED) and close(img[34, 10], BLUE)


def test_exif_orientation_png(tmp_path):
    p = tmp_path / "o8.png"
    exif = Image.Exif()
    exif[0x0112] = 8  # rotate 90 CCW to display: the left (red) half goes to the bottom
    two_tone(40, 20).save(p, exif=exif)
    img = load_image(p)
    assert img.shape == (40, 20, 3)
    assert tuple(img[34, 10]) == RED and tuple(img[5, 10]) == BLUE


def test_cmyk_jpeg(tmp_path):
    p = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (12, 10), (0, 255, 255, 0)).save(p, quality=95)  # pure red in CMYK
    img = load_image(p)
    assert img.shape == (10, 12, 3) and img.dtype == np.uint8
    assert close(img[5, 6], RED)


def test_grey_png(tmp_path):
    p = tmp_path / "g.png"
    Image.new("L", (7, 5), 77).save(p)
    img = load_image(p)
    assert img.shape == (5, 7, 3) and (img == 77).all()


def test_rgba_png_composited_on_white(tmp_path):
    p = tmp_path / "a.png"
    a = np.zeros((4, 6, 4), np.uint8)
    a[:, :3] = (255, 0, 0, 255)  # opaque red
    a[:, 3:] = (0, 0, 0, 0)  # fully transparent black -> white
    Image.fromarray(a, "RGBA").save(p)
    img = load_image(p)
    assert img.shape == (4, 6, 3)
    assert tuple(img[0, 0]) == RED and tuple(img[0, 5]) == (255, 255, 255)


def test_la_png_half_alpha(tmp_path):
    p = tmp_path / "la.png"
    Image.new("LA", (3, 3), (0, 128)).save(p)  # black at ~50 % alpha over white -> mid grey
    img = load_image(p)
    assert img.shape == (3, 3, 3) and abs(int(img[1, 1, 0]) - 127) <= 2


def test_palette_png(tmp_path):
    p = tmp_path / "p.png"
    im = Image.new("P", (5, 4))
    im.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    im.paste(1, (0, 0, 5, 2))  # top half palette index 1 (green)
    im.save(p)
    img = load_image(p)
    assert img.shape == (4, 5, 3)
    assert tuple(img[0, 0]) == (0, 255, 0) and tuple(img[3, 0]) == (0, 0, 0)


def test_palette_png_with_transparency(tmp_path):
    p = tmp_path / "pt.png"
    im = Image.new("P", (4, 4), 0)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    im.paste(1, (0, 0, 2, 4))
    im.save(p, transparency=0)  # index 0 is transparent
    img = load_image(p)
    assert tuple(img[0, 0]) == RED and tuple(img[0, 3]) == (255, 255, 255)


def test_16bit_grey_png(tmp_path):
    p = tmp_path / "g16.png"
    a = np.full((6, 8), 32896, np.uint16)  # 32896 / 257 = 128
    a[0, 0] = 65535
    Image.fromarray(a).save(p)
    assert Image.open(p).mode.startswith("I")
    img = load_image(p)
    assert img.shape == (6, 8, 3) and img.dtype == np.uint8
    assert tuple(img[3, 3]) == (128, 128, 128) and tuple(img[0, 0]) == (255, 255, 255)


def test_16bit_rgb_png(tmp_path):
    cv2 = pytest.importorskip("cv2")
    p = tmp_path / "rgb16.png"
    a = np.zeros((5, 6, 3), np.uint16)
    a[..., 2] = 65535  # cv2 writes BGR: this is red
    a[..., 1] = 32896
    assert cv2.imwrite(str(p), a)
    img = load_image(p)
    assert img.shape == (5, 6, 3) and img.dtype == np.uint8
    assert close(img[2, 2], (255, 128, 0), tol=1)


def test_webp_and_bmp(tmp_path):
    for fmt, ext in (("WEBP", "webp"), ("BMP", "bmp")):
        p = tmp_path / f"x.{ext}"
        two_tone(40, 20).save(p, format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
        img = load_image(p)
        assert img.shape == (20, 40, 3) and img.dtype == np.uint8, fmt
        assert tuple(img[10, 5]) == RED and tuple(img[10, 35]) == BLUE, fmt


def test_bytes_and_filelike_images(tmp_path):
    buf = io.BytesIO()
    two_tone().save(buf, format="PNG")
    data = buf.getvalue()
    assert load_image(data, name="upload.png").shape == (20, 40, 3)
    assert load_image(io.BytesIO(data)).shape == (20, 40, 3)


def test_image_errors_name_the_file(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(MediaError, match=r"empty\.jpg: empty file"):
        load_image(empty)
    with pytest.raises(MediaError, match=r"upload\.png: empty file"):
        load_image(b"", name="upload.png")
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with no_hang(10), pytest.raises(MediaError, match=r"garbage\.png: not an image or corrupt"):
        load_image(garbage)
    with pytest.raises(MediaError, match="not found"):
        load_image(tmp_path / "missing.jpg")


def test_truncated_jpeg(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
        buf, format="JPEG"
    )
    p = tmp_path / "cut.jpg"
    p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(MediaError, match=r"cut\.jpg: truncated"):
        load_image(p)


def test_decompression_bomb_guard(tmp_path):
    p = tmp_path / "big.png"
    Image.new("RGB", (200, 100)).save(p)
    with pytest.raises(MediaError, match=r"big\.png: image too large"):
        load_image(p, max_pixels=10_000)
    assert load_image(p, max_pixels=20_000).shape == (100, 200, 3)
    assert load_image(p, max_pixels=None).shape == (100, 200, 3)


# -- JPEGs decoded by OpenCV: the same pixels as Pillow ------------------------------------------------------


def _pillow_rgb(data: bytes) -> np.ndarray:
    """The reference: Pillow's own decode, as load_image did it for every JPEG before."""
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def _photo() -> np.ndarray:
    from skimage import data as skdata

    return np.ascontiguousarray(skdata.astronaut()[::2, ::2])


@pytest.mark.parametrize(
    "save",
    [
        {"quality": 90},
        {"quality": 50, "subsampling": 0},  # 4:4:4
        {"quality": 75, "subsampling": 1},  # 4:2:2
        {"quality": 95, "progressive": True},
        {"quality": 85, "optimize": True},
    ],
)
def test_jpeg_fast_path_gives_pillows_pixels(tmp_path, save):
    import cv2

    from deepguard.runtime.decode import _jpeg_by_opencv

    if not hasattr(cv2, "IMREAD_COLOR_RGB"):
        pytest.skip("OpenCV < 4.10: every JPEG goes through Pillow")
    buf = io.BytesIO()
    Image.fromarray(_photo()).save(buf, "JPEG", **save)
    data = buf.getvalue()
    path = tmp_path / "p.jpg"
    path.write_bytes(data)
    with Image.open(io.BytesIO(data)) as im:
        assert _jpeg_by_opencv(data, im) is not None  # the fast path is the one taken
    ref = _pillow_rgb(data)
    for src in (data, path, str(path)):
        got = load_image(src)
        assert got.dtype == np.uint8 and got.flags["C_CONTIGUOUS"]
        assert np.array_equal(got, ref)


def test_jpegs_the_fast_path_leaves_to_pillow(tmp_path):
    from deepguard.runtime.decode import _jpeg_by_opencv

    buf = io.BytesIO()
    Image.fromarray(_photo()).save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    trailing = data + b"appended by a phone"  # data after the end marker
    grey = io.BytesIO()
    Image.fromarray(_photo()[..., 0]).save(grey, "JPEG")
    turned = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(_photo()).save(turned, "JPEG", exif=exif)
    for src in (trailing, grey.getvalue(), turned.getvalue(), io.BytesIO(data)):
        raw = src.getvalue() if isinstance(src, io.BytesIO) else src
        with Image.open(io.BytesIO(raw)) as im:
            assert _jpeg_by_opencv(src, im) is None
    assert np.array_equal(load_image(trailing), _pillow_rgb(data))
    assert load_image(grey.getvalue()).shape == (256, 256, 3)
    assert load_image(turned.getvalue()).shape == (256, 256, 3)
    with pytest.raises(MediaError, match=r"cut\.jpg: truncated"):
        load_image(data[: len(data) // 2], name="cut.jpg")
