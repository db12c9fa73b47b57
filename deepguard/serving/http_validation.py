"""Request checks shared by the HTTP areas (origin REST, ``/v1``, the web API): one wording for every client.

Why one module: the REST routes and the web app's ``/api/analyze`` take the same multipart upload, sanitise
its file name the same way and hold it to the same per-kind size limits, so a check written twice drifts
(one area's 413 message or accepted flag spellings end up different from the other's). The helpers take the
request's parts as arguments instead of reading ``flask.request`` themselves, so this module needs no web
framework at import time and each area decides how an :class:`HttpError` becomes a response body.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO, TYPE_CHECKING, Any, Protocol

from deepguard.serving import wire
from deepguard.serving.config import ServerConfig

if TYPE_CHECKING:
    from werkzeug.datastructures import FileStorage

#: Spellings a query string may use for "on"; an HTML form's checkbox also sends ``on``.
TRUE_WORDS = frozenset({"1", "true", "yes"})
FORM_TRUE_WORDS = TRUE_WORDS | {"on"}
UPLOAD_FIELD = "file"


class HttpError(Exception):
    """A request the server refuses: ``status`` for HTTP, ``code`` and ``extra`` for clients that branch."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.extra = status, code, extra


class Refusal(Protocol):
    """Anything shaped like :class:`HttpError` (also :class:`deepguard.httpguard.BodyError`)."""

    status: int
    code: str
    extra: dict[str, Any]


def error_json(e: Refusal | BaseException) -> dict[str, Any]:
    """``{"error", "code", **extra}``: the body the web API and the front-door gate answer with."""
    return {"error": str(e), "code": getattr(e, "code", "http"), **getattr(e, "extra", {})}


def flag(value: str | None, words: frozenset[str] = TRUE_WORDS) -> bool:
    """True when a query / form value spells "on"; anything else (also absent) is off."""
    return (value or "").lower() in words


def uploaded_file(files: Mapping[str, FileStorage], default_name: str) -> tuple[FileStorage, str]:
    """The multipart upload and a safe label for it: only the base name is kept, never used as a path."""
    f = files.get(UPLOAD_FIELD)
    if f is None:
        raise HttpError(400, "no_file", f"missing multipart field '{UPLOAD_FIELD}'")
    # Leading dots go too: some multipart stacks drop a Windows name's backslashes before we see it
    # ("..\\..\\x.png" arrives as "....x.png"), and "." / ".." mean nothing in a label anyway.
    base = (f.filename or "").replace("\\", "/").rsplit("/", 1)[-1].lstrip(".")
    return f, wire.sanitize_name(base, default_name)


def stream_size(stream: IO[bytes]) -> int:
    """The upload's size in bytes, with the stream rewound (uploads are spooled, so seeking is cheap)."""
    size = stream.seek(0, 2)
    stream.seek(0)
    return size


def kind_limit(kind: str, config: ServerConfig) -> int:
    """Largest accepted file of ``kind``: images the message limit, videos the (larger) video limit."""
    return config.max_message_bytes if kind == "image" else config.max_video_bytes


def check_size(name: str, kind: str, size: int, limit: int) -> None:
    """413 for a file over its kind's limit, with the numbers a client needs to explain it."""
    if size > limit:
        raise HttpError(
            413,
            "too_large",
            f"{name}: the {kind} is {size} bytes, larger than the limit of {limit} bytes",
            limit=limit,
            kind=kind,
            size=size,
        )


def query_sampling(args: Mapping[str, str]) -> dict[str, Any]:
    """``/v1`` video sampling from the query string; ValueError on a bad number (the caller says 400)."""
    return {
        "fps": float(args["fps"]) if "fps" in args else None,
        "every_frame": flag(args.get("every_frame")) or None,
        "max_frames": int(args["max_frames"]) if "max_frames" in args else None,
    }


def form_sampling(form: Mapping[str, str]) -> dict[str, Any]:
    """Web form video sampling, range-checked: a bad value is the user's error (400), not a crash."""
    out: dict[str, Any] = {}
    try:
        if form.get("fps"):
            out["fps"] = float(form["fps"])
        if form.get("max_frames"):
            out["max_frames"] = int(form["max_frames"])
    except ValueError as e:
        raise HttpError(400, "bad_option", f"bad option: {e}") from e
    if "fps" in out and not (0 < out["fps"] <= 60):
        raise HttpError(400, "bad_option", "fps must be between 0 and 60")
    if "max_frames" in out and out["max_frames"] < 1:
        raise HttpError(400, "bad_option", f"max_frames must be >= 1, got {out['max_frames']}")
    if flag(form.get("every_frame"), FORM_TRUE_WORDS):
        out["every_frame"] = True
    return out
