"""HTTP front-door hardening for the REST port (origin API + web app): slow or lying clients cost no slot.

Why a WSGI layer in front of Flask: the app takes a request slot in ``before_request``, and Flask reads the
body lazily, so a client that sent its headers and then stalled used to hold a slot for ever (64 idle
half-sent uploads made every call answer 503). :class:`BodyGate` reads the whole body first - bounded by the
route's size limit known from ``Content-Length`` before any byte is read, by the socket's read timeout
(``--read-timeout-s``) and by an average-rate floor (``--min-upload-kbps``) - and only then calls the app.
Errors are JSON (origin shape on the origin paths) and close the connection:

- 413 ``too_large``: Content-Length over the route's limit (nothing is read);
- 411 ``length_required``: a chunked body (every browser, curl -F and the origin apps send a length);
- 400 ``incomplete``: the body ended or went silent before its Content-Length (a length that lies);
- 400 ``bad_request``: a Content-Length that is not a number;
- 408 ``too_slow``: the body averages under the rate floor once the read timeout has passed.

:func:`handler_class` gives werkzeug's request handler the read timeout (headers and body) and JSON bodies
for the errors ``http.server`` answers itself (414 URI too long, 431 header too large, 400 bad request
line, 505 bad version), which were HTML.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Iterable
from typing import IO

from deepguard.serving.config import MiB, ServerConfig

MULTIPART_SLACK = 64 * 1024  # multipart headers, boundaries and small form fields around the file
READ_SIZE = 64 * 1024
UPLOAD_PATHS = ("/predict_video", "/v1/analyze", "/api/analyze")


class BodyError(Exception):
    """A request body the server refuses; ``status`` / ``code`` / message go to the client as JSON."""

    def __init__(self, status: int, code: str, message: str, **extra) -> None:
        super().__init__(message)
        self.status, self.code, self.extra = status, code, extra


def file_limit(path: str, cfg: ServerConfig) -> int:
    """Largest file a route accepts: image routes the image limit, uploads the video one, others none."""
    if path == "/predict_image":
        return cfg.max_message_bytes
    if path in UPLOAD_PATHS:
        return max(cfg.max_video_bytes, cfg.max_message_bytes)
    return 0


def body_limit(path: str, cfg: ServerConfig) -> int:
    """Largest body a route accepts, known before reading: its file limit plus the multipart framing."""
    return file_limit(path, cfg) + MULTIPART_SLACK


def read_body(src: IO[bytes], length: int, cfg: ServerConfig) -> IO[bytes]:
    """Exactly ``length`` bytes into memory / an anonymous temp file, or BodyError (never waits unbounded).

    ``read1`` returns whatever one socket read gives, so a client dripping bytes cannot keep one call
    blocked: the rate floor is checked after every read.
    """
    out = tempfile.SpooledTemporaryFile(max_size=16 * MiB)
    read = getattr(src, "read1", src.read)
    got, t0 = 0, time.monotonic()
    try:
        while got < length:
            try:
                data = read(min(READ_SIZE, length - got))
            except TimeoutError:
                raise BodyError(
                    400,
                    "incomplete",
                    f"request body incomplete: received {got} of the {length} bytes of its Content-Length, "
                    f"then nothing for {cfg.read_timeout_s:g} s",
                ) from None
            if not data:
                raise BodyError(
                    400,
                    "incomplete",
                    f"request body ended after {got} of the {length} bytes its Content-Length announced",
                )
            out.write(data)
            got += len(data)
            _check_rate(got, length, time.monotonic() - t0, cfg)
    except BaseException:
        out.close()
        raise
    out.seek(0)
    return out


def _check_rate(got: int, length: int, elapsed: float, cfg: ServerConfig) -> None:
    if got < length and cfg.min_upload_rate > 0 and elapsed > cfg.read_timeout_s:
        if got < cfg.min_upload_rate * elapsed:
            raise BodyError(
                408,
                "too_slow",
                f"upload too slow: {got} of {length} bytes in {elapsed:.0f} s; the server needs at least "
                f"{cfg.min_upload_rate / 1024:g} KiB/s",
            )


class BodyGate:
    """WSGI middleware: the body is read (bounded, timed) before the app - and so before a slot - sees it."""

    def __init__(
        self, app: Callable, cfg: ServerConfig, error_body: Callable[[str, BodyError], dict]
    ) -> None:
        self.app, self.cfg, self.error_body = app, cfg, error_body

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        try:
            body = self._body(environ)
        except BodyError as e:
            return self._refuse(environ, start_response, e)
        if body is None:
            return self.app(environ, start_response)
        environ["wsgi.input"] = body
        from werkzeug.wsgi import ClosingIterator

        return ClosingIterator(self.app(environ, start_response), body.close)

    def _body(self, environ: dict) -> IO[bytes] | None:
        if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            raise BodyError(
                411,
                "length_required",
                "send the upload with a Content-Length (chunked bodies are not accepted)",
            )
        raw = environ.get("CONTENT_LENGTH", "").strip()
        if not raw:
            return None
        if not raw.isdigit():
            raise BodyError(400, "bad_request", f"invalid Content-Length {raw[:40]!r}")
        length, path = int(raw), environ.get("PATH_INFO", "")
        limit = body_limit(path, self.cfg)
        if length > limit:
            raise BodyError(
                413,
                "too_large",
                f"{path}: the request body is {length} bytes, larger than the upload limit of "
                f"{file_limit(path, self.cfg)} bytes",
                limit=file_limit(path, self.cfg),
                size=length,
            )
        return read_body(environ["wsgi.input"], length, self.cfg) if length else None

    def _refuse(self, environ: dict, start_response: Callable, e: BodyError) -> list[bytes]:
        from http import HTTPStatus

        data = json.dumps(self.error_body(environ.get("PATH_INFO", ""), e)).encode()
        start_response(
            f"{e.status} {HTTPStatus(e.status).phrase}",
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(data))),
                ("Connection", "close"),
            ],
        )
        return [data]


def handler_class(read_timeout_s: float) -> type:
    """werkzeug's request handler with a socket read timeout and JSON for http.server's own errors."""
    from http import HTTPStatus

    from werkzeug.serving import WSGIRequestHandler

    class Handler(WSGIRequestHandler):
        timeout = read_timeout_s  # socketserver applies it to the connection: headers and body reads

        def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
            try:
                phrase = HTTPStatus(code).phrase
            except ValueError:
                phrase = "Error"
            body = json.dumps({"error": message or phrase, "code": "http", "status": code}).encode()
            self.log_error("code %d, message %s", code, message)
            if getattr(self, "request_version", "") == "HTTP/0.9":  # a garbled line parses as 0.9: no headers
                self.request_version = "HTTP/1.0"
            self.send_response(code, phrase)
            self.send_header("Content-Type", "application/json")
            self.send_header("Connection", "close")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD" and code >= 200 and code not in (204, 304):
                self.wfile.write(body)
            self.close_connection = True

    return Handler
