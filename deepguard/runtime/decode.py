"""Decode stage: turn a file, a byte buffer or a file-like object into RGB uint8 frames.

All media opening lives here so the CLI (paths) and the server (uploaded bytes / streams) share the same
validation and the same user-facing errors: every failure is a :class:`~deepguard.errors.MediaError` whose
message starts with the file's name (path, given ``name``, or ``<bytes>``) followed by the problem.

Images go through Pillow (EXIF orientation applied, every mode normalised to RGB uint8); videos through
PyAV (FFmpeg), sampled by presentation time so the result does not depend on the container's frame rate.
"""

from __future__ import annotations

import io
import logging
import math
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from deepguard.errors import MediaError
from deepguard.runtime.types import Frame, Kind

log = logging.getLogger(__name__)

Source = str | Path | bytes | bytearray | memoryview | IO[bytes]

#: Largest image accepted by :func:`load_image` (pixels). 100 MP covers any real photo; beyond that a file
#: is far more likely a decompression bomb (a few KB that expand to gigabytes) than a face worth checking.
DEFAULT_MAX_PIXELS = 100_000_000

#: A decoder that keeps failing on consecutive packets is not going to recover; give up after this many
#: instead of spinning through a long garbage tail.
MAX_CONSECUTIVE_DECODE_ERRORS = 25

IMAGE_EXTENSIONS = frozenset(
    ".jpg .jpeg .jpe .jfif .png .webp .bmp .dib .gif .tif .tiff .ico .ppm .pgm .pbm .pnm .tga .jp2 .avif "
    ".heic .heif".split()
)
VIDEO_EXTENSIONS = frozenset(
    ".mp4 .m4v .mov .qt .avi .webm .mkv .flv .wmv .asf .mpg .mpeg .m2v .ts .mts .m2ts .3gp .3g2 .ogv "
    ".vob .mxf".split()
)

# ISO-BMFF brands that denote still images (HEIF/AVIF); every other `ftyp` brand is treated as video.
_IMAGE_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis"})
# QuickTime files without an `ftyp` box start directly with one of these atoms.
_QT_ATOMS = frozenset({b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"})


# --------------------------------------------------------------------------------------------- sources


def source_name(src: Any, name: str | None = None) -> str:
    """The label used in error messages: explicit ``name``, else the path, else a placeholder."""
    if name:
        return str(name)
    if isinstance(src, (str, Path)):
        return str(src)
    if isinstance(src, (bytes, bytearray, memoryview)):
        return "<bytes>"
    fname = getattr(src, "name", None)
    return str(fname) if isinstance(fname, (str, Path)) else "<stream>"


def _open_source(src: Source, label: str) -> str | IO[bytes]:
    """Validate ``src`` and return something both Pillow and PyAV can open (a path or a binary file-like).

    Empty and missing inputs are rejected here with a precise message, because the libraries would only
    report a generic "cannot identify" / "invalid data" for them.
    """
    if isinstance(src, (str, Path)):
        path = os.fspath(src)
        if not os.path.exists(path):
            raise MediaError(f"{label}: file not found")
        if os.path.isdir(path):
            raise MediaError(f"{label}: is a directory, not a media file")
        try:
            size = os.path.getsize(path)
        except OSError as e:
            raise MediaError(f"{label}: cannot read file ({e})") from e
        if size == 0:
            raise MediaError(f"{label}: empty file")
        return path
    if isinstance(src, (bytes, bytearray, memoryview)):
        if len(src) == 0:
            raise MediaError(f"{label}: empty file")
        return io.BytesIO(bytes(src))
    if hasattr(src, "read"):
        # Peek for emptiness when we can do so without consuming the stream.
        if hasattr(src, "seek") and hasattr(src, "tell") and _seekable(src):
            pos = src.tell()
            empty = not src.read(1)
            src.seek(pos)
            if empty:
                raise MediaError(f"{label}: empty file")
        return src
    raise MediaError(f"{label}: unsupported source type {type(src).__name__}")


def _seekable(f: Any) -> bool:
    try:
        return bool(f.seekable()) if hasattr(f, "seekable") else True
    except Exception:  # noqa: BLE001 - a broken stream is simply treated as not seekable
        return False


def _head(src: Source, label: str, n: int = 64) -> bytes:
    """First ``n`` bytes of the source, leaving a seekable stream where it was."""
    opened = _open_source(src, label)
    if isinstance(opened, str):
        try:
            with open(opened, "rb") as f:
                return f.read(n)
        except OSError as e:
            raise MediaError(f"{label}: cannot read file ({e})") from e
    if _seekable(opened):
        pos = opened.tell()
        head = opened.read(n)
        opened.seek(pos)
        return head
    raise MediaError(f"{label}: cannot sniff a non-seekable stream; pass a path, bytes or a seekable file")


# ----------------------------------------------------------------------------------------------- kind


def _sniff(head: bytes) -> Kind | None:
    """Classify by magic bytes; None when the signature is not recognised."""
    if head.startswith(b"\xff\xd8\xff") or head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image"
    if head[:6] in (b"GIF87a", b"GIF89a") or head.startswith(b"BM"):
        return "image"
    if head[:4] in (b"II*\x00", b"MM\x00*") or head.startswith(b"\x00\x00\x01\x00"):  # TIFF, ICO
        return "image"
    if head.startswith(b"\x00\x00\x00\x0cjP  ") or head.startswith(b"\xff\x4f\xff\x51"):  # JPEG 2000
        return "image"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image"
    if head[:4] == b"RIFF" and head[8:12] in (b"AVI ", b"AVIX"):
        return "video"
    if head[4:8] == b"ftyp":
        return "image" if head[8:12] in _IMAGE_BRANDS else "video"
    if head[4:8] in _QT_ATOMS:
        return "video"
    if head.startswith(b"\x1a\x45\xdf\xa3"):  # EBML: Matroska / WebM
        return "video"
    if head.startswith(b"FLV\x01") or head.startswith(b"OggS"):
        return "video"
    if head.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"):  # ASF / WMV
        return "video"
    if head.startswith(b"\x00\x00\x01\xba") or head.startswith(b"\x00\x00\x01\xb3"):  # MPEG-PS / ES
        return "video"
    if len(head) >= 189 and head[0] == 0x47 and head[188] == 0x47:  # MPEG-TS: sync byte every 188 bytes
        return "video"
    return None


def media_kind(src: Source, name: str | None = None) -> Kind:
    """Return ``"image"`` or ``"video"`` for a path, byte buffer or seekable file-like.

    Content (magic bytes) is checked first because extensions lie (a ``.mp4`` that is really a JPEG is
    common in scraped data); the extension of the path / ``name`` is only a fallback for signatures we do
    not know. Raises MediaError for missing, empty or unrecognisable input.
    """
    label = source_name(src, name)
    head = _head(src, label, 200)
    kind = _sniff(head)
    if kind is not None:
        return kind
    ext_src = name or (os.fspath(src) if isinstance(src, (str, Path)) else getattr(src, "name", ""))
    ext = Path(str(ext_src or "")).suffix.lower()
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if ext in VIDEO_EXTENSIONS:
        return "video"
    raise MediaError(f"{label}: unknown media type (neither a known image nor video signature/extension)")


# --------------------------------------------------------------------------------------------- images


def load_image(
    src: str | Path | bytes | IO[bytes],
    name: str | None = None,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Decode a still image to an RGB uint8 array of shape (H, W, 3).

    * EXIF orientation is applied, so a portrait phone photo comes out upright (face detectors are not
      rotation invariant).
    * Grey, palette, CMYK, 16-bit and alpha images are normalised to RGB uint8; alpha is composited on
      white (a transparent background would otherwise become black and could look like hair/shadow).
    * ``max_pixels`` (None = no limit of our own) rejects decompression bombs before pixel data is
      decoded. Pillow's global ``Image.MAX_IMAGE_PIXELS`` guard still applies on top of it.
    * Animated formats (GIF, animated WebP) return their first frame.

    Raises MediaError naming the file for missing/empty/corrupt/truncated/oversized input.
    """
    label = source_name(src, name)
    with _opened_image(src, label, max_pixels) as im:
        rgb = _jpeg_by_opencv(src, im)
        if rgb is not None:
            return rgb
        im.load()
        return _to_rgb_array(_apply_exif_orientation(im))


def _jpeg_by_opencv(src: Source, im: Image.Image) -> np.ndarray | None:
    """An upright, complete colour JPEG given as a path or bytes, decoded by OpenCV; None for anything else.

    Why: both decode with libjpeg-turbo and give the same pixels (checked bit for bit on 95 photos and face crops,
    progressive, 4:4:4 / 4:2:2 / 4:2:0 and Pillow-written files; ``tests/test_decode.py`` holds it to that), but
    OpenCV writes straight into its array: a 720p JPEG took 4.0 ms against Pillow's 12.0 ms here, on every photo and
    every JPEG frame a server receives. Pillow still reads the header (format, size, mode, EXIF: the checks above);
    a turned, grey, CMYK or file-like input, and a file that does not end with the JPEG end marker (truncated, or
    data after the image), is left to Pillow, whose errors and conversions are the documented ones.
    """
    import cv2

    flag = getattr(cv2, "IMREAD_COLOR_RGB", None)  # OpenCV >= 4.10
    if flag is None or im.format != "JPEG" or im.mode != "RGB" or _orientation(im) != 1:
        return None
    if isinstance(src, (bytes, bytearray, memoryview)):
        buf = np.frombuffer(src, np.uint8)
    elif isinstance(src, (str, Path)):
        buf = np.fromfile(os.fspath(src), np.uint8)
    else:
        return None
    if len(buf) < 4 or buf[-2] != 0xFF or buf[-1] != 0xD9:
        return None
    rgb = cv2.imdecode(buf, flag | cv2.IMREAD_IGNORE_ORIENTATION)
    if rgb is None or rgb.shape != (im.height, im.width, 3):
        return None
    return rgb


def probe_image(
    src: str | Path | bytes | IO[bytes],
    name: str | None = None,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> tuple[int, int]:
    """(width, height) of a still image from its header, pixels not decoded; the checks of ``load_image``
    that need no pixels (empty, unrecognised, too large). Why: a server can size and admit a frame it may
    never decode (live streams skip most frames)."""
    label = source_name(src, name)
    with _opened_image(src, label, max_pixels) as im:
        return im.size


@contextmanager
def _opened_image(src: Source, label: str, max_pixels: int | None) -> Iterator[Image.Image]:
    """Pillow's lazily opened image with its size checked; every failure inside becomes a MediaError."""
    opened = _open_source(src, label)
    try:
        with warnings.catch_warnings():
            # Our own max_pixels check below gives the user-facing message; silence Pillow's warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(opened)
            try:
                w, h = im.size
                if w <= 0 or h <= 0:
                    raise MediaError(f"{label}: image has zero size ({w}x{h})")
                if max_pixels is not None and w * h > max_pixels:
                    raise MediaError(
                        f"{label}: image too large ({w}x{h} = {w * h / 1e6:.1f} MP > "
                        f"{max_pixels / 1e6:.1f} MP limit; possible decompression bomb)"
                    )
                yield im
            finally:
                im.close()
    except MediaError:
        raise
    except Image.DecompressionBombError as e:
        raise MediaError(f"{label}: image too large, possible decompression bomb ({e})") from e
    except UnidentifiedImageError as e:
        raise MediaError(f"{label}: not an image or corrupt (unrecognised image data)") from e
    except OSError as e:
        if "truncated" in str(e).lower():
            raise MediaError(f"{label}: truncated image ({e})") from e
        raise MediaError(f"{label}: corrupt image ({e})") from e
    except MemoryError as e:
        raise MediaError(f"{label}: image too large to decode in memory") from e
    except Exception as e:  # noqa: BLE001 - plugins raise SyntaxError/ValueError/struct.error on garbage
        raise MediaError(f"{label}: not an image or corrupt ({type(e).__name__}: {e})") from e


def _apply_exif_orientation(im: Image.Image) -> Image.Image:
    """Rotate/flip per the EXIF orientation tag; a broken EXIF block must not make the image unreadable.

    An image without a turn is returned as it is: ``exif_transpose`` copies it anyway (a 720p frame: 5 ms,
    a third of its decode), and most images - every video frame sent as JPEG - have no turn.
    """
    if _orientation(im) == 1:
        return im
    try:
        return ImageOps.exif_transpose(im) or im
    except Exception as e:  # noqa: BLE001
        log.debug("ignoring unreadable EXIF orientation: %s", e)
        return im


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation tag (1 = upright, also for a missing or unreadable EXIF block)."""
    try:
        return int(im.getexif().get(ExifTags.Base.Orientation, 1))
    except Exception as e:  # noqa: BLE001
        log.debug("ignoring unreadable EXIF orientation: %s", e)
        return 1


def _to_rgb_array(im: Image.Image) -> np.ndarray:
    """Normalise any Pillow mode to a contiguous RGB uint8 (H, W, 3) array."""
    mode = im.mode
    if mode == "RGB":
        return np.ascontiguousarray(np.asarray(im, dtype=np.uint8))
    if mode.startswith("I;16") or mode in ("I", "F"):
        # Pillow's convert("RGB") clips 16/32-bit values at 255 (a mid-grey 16-bit PNG turns white);
        # rescale to 8 bits ourselves.
        a = np.asarray(im).astype(np.float64)
        if mode == "F":
            scale = 255.0 if np.nanmax(a, initial=0.0) <= 1.0 else 1.0
        elif mode == "I" and np.max(a, initial=0) <= 255:
            scale = 1.0  # 8-bit data stored in a 32-bit mode
        else:
            scale = 255.0 / 65535.0
        g = np.clip(np.nan_to_num(a * scale), 0, 255).round().astype(np.uint8)
        return np.ascontiguousarray(np.repeat(g[..., None], 3, axis=2))
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode in ("P", "L", "RGB", "1") and "transparency" in im.info
    )
    if has_alpha:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        rgb = Image.alpha_composite(white, rgba).convert("RGB")
    else:
        rgb = im.convert("RGB")  # L, 1, P, CMYK (Adobe inversion handled by Pillow), YCbCr, LAB, HSV ...
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))


# --------------------------------------------------------------------------------------------- videos


def _open_container(src: Source, label: str) -> Any:
    """Open ``src`` with PyAV; MediaError on any failure or when there is no video stream."""
    import av  # imported lazily: image-only users (and tests) should not pay for FFmpeg's load time

    opened = _open_source(src, label)
    try:
        container = av.open(opened, mode="r")
    except av.FFmpegError as e:
        raise MediaError(f"{label}: not a video, or corrupt/truncated ({_ffmpeg_msg(e)})") from e
    except Exception as e:  # noqa: BLE001
        raise MediaError(f"{label}: cannot open as video ({type(e).__name__}: {e})") from e
    if not container.streams.video:
        container.close()
        raise MediaError(f"{label}: no video stream")
    return container


def _ffmpeg_msg(e: Exception) -> str:
    return getattr(e, "strerror", None) or str(e)


def _stream_duration(container: Any, stream: Any) -> float | None:
    """Video duration in seconds: the stream's own duration, else the container's; None when unknown.

    The stream's is preferred because a container's duration includes a possibly longer audio track.
    """
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / 1_000_000  # AV_TIME_BASE
    rate = _stream_rate(stream)
    if stream.frames and rate:
        return stream.frames / rate
    return None


def _stream_rate(stream: Any) -> float | None:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            r = float(rate)
            if math.isfinite(r) and r > 0:
                return r
    return None


def _start_time(stream: Any) -> float | None:
    if stream.start_time is not None and stream.time_base is not None:
        return float(stream.start_time * stream.time_base)
    return None


def video_info(src: Source, name: str | None = None) -> dict[str, Any]:
    """Container metadata of the first video stream without decoding frames.

    Returns ``dict(fps, duration, frames, width, height, codec)``; ``fps``/``duration`` are None when the
    container does not say, and ``frames`` is estimated from duration x fps when the header has no count.
    """
    label = source_name(src, name)
    container = _open_container(src, label)
    try:
        stream = container.streams.video[0]
        fps = _stream_rate(stream)
        duration = _stream_duration(container, stream)
        frames: int | None = int(stream.frames) if stream.frames else None
        if frames is None and fps and duration:
            frames = int(round(duration * fps))
        ctx = stream.codec_context
        return {
            "fps": fps,
            "duration": duration,
            "frames": frames,
            "width": int(ctx.width),
            "height": int(ctx.height),
            "codec": ctx.name,
        }
    finally:
        container.close()


def iter_video_frames(
    src: Source,
    *,
    fps: float | None = 1.0,
    every_frame: bool = False,
    max_frames: int | None = None,
    name: str | None = None,
) -> Iterator[Frame]:
    """Decode the first video stream and yield sampled RGB frames.

    Sampling is by presentation time (seconds from the stream start), one mode at a time, in this order
    of precedence:

    * ``max_frames=K``: at most K frames spread evenly over the duration - sampling instants
      ``k * duration / K`` (k = 0..K-1), each served by the first frame at or after it, so a video with
      fewer than K frames yields all of them. If the duration is unknown, falls back to ``fps`` sampling
      (1 fps when ``fps`` is None) and stops after K frames.
    * ``every_frame=True`` (or ``fps=None``): every decoded frame.
    * ``fps=N``: sampling instants ``k / N``; a frame is taken when it is the first frame at or after the
      next instant (so 1 fps on a 25 fps clip takes frames 0, 25, 50, ...; a frame that covers several
      instants because of a gap is taken once).

    ``Frame.index`` is the 0-based index of the frame among all decoded frames, ``Frame.time`` its
    timestamp in seconds from the stream start. Colour conversion to RGB is only done for sampled frames.

    The container is opened (and validated) when this function is called, so a bad file raises
    MediaError immediately rather than on the first ``next()``. A truncated/damaged file yields the frames
    decodable before the damage (with a warning logged); if not a single frame decodes, MediaError.
    """
    if max_frames is not None and max_frames <= 0:
        raise ValueError(f"max_frames must be positive, got {max_frames}")
    if fps is not None and not (fps > 0 and math.isfinite(fps)):
        raise ValueError(f"fps must be a positive number or None, got {fps}")
    label = source_name(src, name)
    start_pos = _tell(src)
    container = _open_container(src, label)
    stream = container.streams.video[0]

    step: float | None  # seconds between sampling instants; None = every frame
    if max_frames is not None:
        duration = _stream_duration(container, stream)
        if duration is None and (
            isinstance(src, (str, Path, bytes, bytearray, memoryview)) or start_pos is not None
        ):
            # Headerless streams (raw H.264, browser MediaRecorder WebM) carry no duration: measure it with
            # a demux-only pass (no decoding, so cheap), then reopen from the start.
            duration = _scan_duration(container, stream, label)
            container.close()
            if start_pos is not None:
                src.seek(start_pos)  # type: ignore[union-attr]
            container = _open_container(src, label)
            stream = container.streams.video[0]
        if duration:
            step = duration / max_frames
        else:
            log.info("%s: duration unknown, sampling max_frames=%d at fps instead", label, max_frames)
            step = 1.0 / (fps or 1.0)
    elif every_frame or fps is None:
        step = None
    else:
        step = 1.0 / fps
    return _sample(container, stream, label, step, max_frames)


def _sample(
    container: Any, stream: Any, label: str, step: float | None, limit: int | None
) -> Iterator[Frame]:
    import av

    stream.thread_type = "AUTO"  # frame + slice threading: decoding dominates video analysis time
    origin = _start_time(stream)
    rate = _stream_rate(stream)
    next_k = 0  # index of the next sampling instant (k * step)
    decoded = 0
    yielded = 0
    last_time: float | None = None
    try:
        for vf in _decode(container, stream, label):
            index = decoded
            decoded += 1
            t = _frame_time(vf, origin, last_time, rate)
            last_time = t
            if step is not None:
                if t < next_k * step - 1e-6:
                    continue
                # Skip every instant this frame already covers (k*step <= t).
                next_k = max(next_k + 1, math.floor(t / step + 1e-6) + 1)
            try:
                image = vf.to_ndarray(format="rgb24")
            except (av.FFmpegError, ValueError) as e:
                log.warning("%s: frame %d could not be converted to RGB (%s); skipped", label, index, e)
                continue
            yield Frame(image=np.ascontiguousarray(image), index=index, time=t)
            yielded += 1
            if limit is not None and yielded >= limit:
                return
        if decoded == 0:
            raise MediaError(f"{label}: no decodable video frames (truncated or corrupt)")
        if stream.frames and decoded < stream.frames:
            log.warning(
                "%s: decoded %d of %d frames announced by the container (truncated or damaged?)",
                label,
                decoded,
                stream.frames,
            )
    finally:
        container.close()


def _tell(src: Any) -> int | None:
    """Current position of a seekable file-like (so it can be rewound), else None."""
    if isinstance(src, (str, Path, bytes, bytearray, memoryview)) or not hasattr(src, "tell"):
        return None
    if not _seekable(src):
        return None
    try:
        return int(src.tell())
    except Exception:  # noqa: BLE001
        return None


def _scan_duration(container: Any, stream: Any, label: str) -> float | None:
    """Duration measured from packet timestamps (or the packet count / frame rate when they are missing)."""
    import av

    first: int | None = None
    end: int | None = None
    count = 0
    try:
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            count += 1
            if packet.pts is not None:
                first = packet.pts if first is None else min(first, packet.pts)
                stop = packet.pts + (packet.duration or 0)
                end = stop if end is None else max(end, stop)
    except av.FFmpegError as e:
        log.debug("%s: duration scan stopped at damaged data (%s)", label, _ffmpeg_msg(e))
    if first is not None and end is not None and end > first and stream.time_base is not None:
        return float((end - first) * stream.time_base)
    rate = _stream_rate(stream)
    return count / rate if count and rate else None


def _frame_time(vf: Any, origin: float | None, last: float | None, rate: float | None) -> float:
    """Timestamp in seconds from the stream start, inventing one from the frame rate if pts is missing."""
    t = vf.time
    if t is None:
        if last is None:
            return 0.0
        return last + (1.0 / rate if rate else 0.04)
    if origin is not None:
        t -= origin
    return float(t)


def _decode(container: Any, stream: Any, label: str) -> Iterator[Any]:
    """Yield decoded VideoFrames; a damaged tail ends the stream instead of raising.

    Demux errors (the byte stream itself is broken) end decoding; decoder errors on individual packets
    are skipped, up to MAX_CONSECUTIVE_DECODE_ERRORS in a row. Both are logged. The caller decides whether
    zero frames is an error.
    """
    import av

    packets = container.demux(stream)
    errors = 0
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except av.FFmpegError as e:
            log.warning("%s: stopped reading at damaged data (%s)", label, _ffmpeg_msg(e))
            break
        try:
            # A packet with no data (the final one) flushes frames buffered by the decoder.
            frames = packet.decode()
        except av.FFmpegError as e:
            errors += 1
            log.warning("%s: undecodable packet skipped (%s)", label, _ffmpeg_msg(e))
            if errors >= MAX_CONSECUTIVE_DECODE_ERRORS:
                log.warning("%s: too many consecutive decode errors; stopping", label)
                return
            continue
        errors = 0
        yield from frames
    # Reading stopped early: flush what the decoder still holds so frames before the damage are kept.
    try:
        yield from stream.codec_context.decode(None)
    except av.FFmpegError as e:
        log.debug("%s: flush after damaged data failed (%s)", label, _ffmpeg_msg(e))


__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "iter_video_frames",
    "load_image",
    "media_kind",
    "probe_image",
    "source_name",
    "video_info",
]
