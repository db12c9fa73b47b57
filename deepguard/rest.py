"""The origin DeepGuard REST contract (Flask), served next to gRPC on the same Engine.

Origin endpoints, exactly as the origin web and mobile apps call them (multipart field ``file``)::

    POST /predict_image   -> {"msg": {"result": "Real"|"Fake"|"No Faces"|"Error", "prob": "87.12"}}
    POST /predict_video   -> same shape

``prob`` is always P(fake) in percent with two decimals, as a string - also for "Real" (a real verdict
reads e.g. "3.41", i.e. 96.59 % likely real), because one meaning for the field is easier to get right in a
client than a number whose meaning flips with the verdict. "No Faces" and "Error" carry "0.00": there is
no score, read ``result``. The origin clients know only Real and Fake, so the graded ``"uncertain"`` verdict
(a calibrated model with an uncertain band, see :mod:`deepguard.convert.calibrate`) is answered as the binary
verdict at the model threshold: "Fake" if ``score >= threshold`` else "Real" (``prob`` still tells how close it
was); ``/v1/analyze`` and the web app show the graded verdict. Errors keep the origin shape, add a top-level ``"error"`` message naming the
problem and use HTTP 400 (bad media), 401 (token), 413 (too large) or 503 (busy / shutting down).

DeepGuard endpoints: ``POST /v1/analyze`` (image or video, query ``fps``, ``every_frame``, ``max_frames``)
returns the full result - the same JSON record as ``deepguard detect --format jsonl``; ``GET /v1/model``;
``GET /healthz``. Uploads live in memory up to 16 MiB, beyond that in an anonymous temporary file; the
client's file name is only ever used as a label.

The web app (:mod:`deepguard.web`: the page at ``/`` and its ``/api/`` routes) is mounted on the same app.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from typing import IO

from flask import Flask, Request, g, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from deepguard.errors import MediaError
from deepguard.output import to_record
from deepguard.runtime import aggregate
from deepguard.runtime.decode import media_kind
from deepguard.runtime.types import Analysis
from deepguard.serving import wire
from deepguard.serving.auth import token_ok
from deepguard.serving.batcher import Cancelled, Closed, Overloaded
from deepguard.serving.budget import Budget
from deepguard.serving.config import MiB, ServerConfig
from deepguard.serving.engine import Engine, ShuttingDown
from deepguard.serving.metrics import Metrics
from deepguard.web import is_public
from deepguard.web import register as register_web

log = logging.getLogger("deepguard.server.rest")

ORIGIN_RESULT = {"real": "Real", "fake": "Fake", "no_face": "No Faces", "error": "Error"}
ORIGIN_PATHS = ("/predict_image", "/predict_video")


class _Request(Request):
    def _get_file_stream(
        self, total_content_length, content_type, filename=None, content_length=None
    ) -> IO[bytes]:
        # Memory first, then an anonymous temporary file: no path on disk, never the client's file name.
        return tempfile.SpooledTemporaryFile(max_size=16 * MiB, mode="rb+")


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def origin_body(a: Analysis | None, error: str | None = None) -> dict:
    """``{"msg": {"result", "prob"}}``: prob = P(fake) x 100 with two decimals (see module docstring)."""
    if a is None or a.verdict == "error":
        body: dict = {"msg": {"result": "Error", "prob": "0.00"}}
        body["error"] = error or (a.error if a else "error")
        return body
    prob = "0.00" if a.score is None else f"{a.score * 100:.2f}"
    verdict = a.verdict
    if verdict == "uncertain":  # origin clients only know Real/Fake: the binary verdict at the threshold
        verdict = aggregate.verdict(a.score, 0.5 if a.threshold is None else a.threshold)
    return {"msg": {"result": ORIGIN_RESULT[verdict], "prob": prob}}


def create_app(
    engine: Engine, metrics: Metrics | None = None, token: str | None = None, web: bool = True
) -> Flask:
    """The WSGI app; any WSGI server can host it as long as it shares the process with ``engine``."""
    cfg = engine.config
    app = Flask("deepguard.rest")
    app.request_class = _Request
    app.config["MAX_CONTENT_LENGTH"] = max(cfg.max_video_bytes, cfg.max_message_bytes) + MiB
    app.json.sort_keys = False
    slots = threading.BoundedSemaphore(cfg.max_concurrent_rpcs)
    app.extensions["deepguard.inflight"] = inflight = _Counter()

    @app.before_request
    def _admit():
        g.t0 = time.perf_counter()
        g.slot = False
        if request.method == "OPTIONS" or request.path == "/healthz":
            return None
        if (
            token
            and not is_public(request.path)
            and not token_ok(request.headers.get("Authorization"), token)
        ):
            raise ApiError(401, "missing or invalid bearer token: send 'Authorization: Bearer <token>'")
        if engine.draining:
            raise ApiError(503, "server is shutting down")
        if not slots.acquire(blocking=False):
            raise ApiError(503, f"server busy: {cfg.max_concurrent_rpcs} requests in progress; retry later")
        g.slot = True
        inflight.add(1)
        return None

    @app.teardown_request
    def _release(_exc):
        if g.get("slot"):
            g.slot = False
            slots.release()
            inflight.add(-1)

    @app.after_request
    def _account(resp):
        dt = time.perf_counter() - g.get("t0", time.perf_counter())
        if metrics is not None:
            # the route, not the path: /api/history/<int:entry_id> must not make a label per entry
            route = request.url_rule.rule if request.url_rule is not None else "<unmatched>"
            metrics.requests.labels(f"REST {route}", str(resp.status_code)).inc()
            metrics.request_latency.labels(f"REST {route}").observe(dt)
        log.info(
            "%s %s %s",
            request.method,
            request.path,
            resp.status_code,
            extra={
                "event": "http",
                "method": request.method,
                "path": request.path,
                "status": resp.status_code,
                "ms": round(dt * 1e3, 1),
                "peer": request.remote_addr,
            },
        )
        return resp

    def _error_response(status: int, message: str):
        if request.path in ORIGIN_PATHS:
            return jsonify(origin_body(None, message)), status
        return jsonify({"error": message}), status

    @app.errorhandler(ApiError)
    def _api_error(e: ApiError):
        return _error_response(e.status, str(e))

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(_e):
        return _error_response(
            413, f"upload is larger than the limit of {app.config['MAX_CONTENT_LENGTH']} bytes"
        )

    @app.errorhandler(HTTPException)
    def _http(e: HTTPException):
        return _error_response(e.code or 500, e.description or e.name)

    @app.errorhandler(Exception)
    def _internal(e: Exception):
        log.error("internal error on %s: %s", request.path, e, exc_info=e)
        return _error_response(500, f"internal error: {type(e).__name__}")

    def _upload() -> tuple[IO[bytes], str]:
        f = request.files.get("file")
        if f is None:
            raise ApiError(400, "missing multipart field 'file'")
        name = wire.sanitize_name((f.filename or "").replace("\\", "/").rsplit("/", 1)[-1], "<upload>")
        return f.stream, name

    def _run(kind: str | None) -> Analysis:
        """The upload's analysis; an accepted request is a bounded job, so a drain lets it finish (grace)."""
        with engine.finishing():
            return _analyze(kind)

    def _analyze(kind: str | None) -> Analysis:
        stream, name = _upload()
        try:
            actual = media_kind(stream, name=name)
            if kind is not None and actual != kind:
                raise MediaError(
                    f"{name}: expected {'an image' if kind == 'image' else 'a video'}, got {actual} data"
                )
            size = stream.seek(0, 2)
            stream.seek(0)
            limit = cfg.max_message_bytes if actual == "image" else cfg.max_video_bytes
            if size > limit:
                raise ApiError(
                    413, f"{name}: the {actual} is {size} bytes, larger than the limit of {limit} bytes"
                )
            budget = Budget(cfg.request_budget_s)
            if actual == "image":
                return engine.analyze_image_bytes(stream.read(), name, budget)
            if not engine.uploads.acquire(blocking=False):
                raise Overloaded(
                    f"server busy: {cfg.max_uploads} video uploads already in progress; retry later"
                )
            try:
                q = request.args
                return engine.analyze_video_file(
                    stream,
                    name,
                    fps=float(q["fps"]) if "fps" in q else None,
                    every_frame=q.get("every_frame", "").lower() in ("1", "true", "yes") or None,
                    max_frames=int(q["max_frames"]) if "max_frames" in q else None,
                    cancelled=budget,
                )
            finally:
                engine.uploads.release()
        except Cancelled as e:
            raise ApiError(503, str(budget.explain(e, name))) from e
        except MediaError as e:
            raise ApiError(400, str(e)) from e
        except ValueError as e:
            raise ApiError(400, f"bad query parameter: {e}") from e
        except Overloaded as e:
            raise ApiError(503, str(e)) from e
        except (ShuttingDown, Closed) as e:
            raise ApiError(503, str(e) or "server is shutting down") from e

    @app.post("/predict_image")
    def predict_image():
        return jsonify(origin_body(_run("image")))

    @app.post("/predict_video")
    def predict_video():
        return jsonify(origin_body(_run("video")))

    @app.post("/v1/analyze")
    def analyze():
        return jsonify(to_record(_run(None)))

    @app.get("/v1/model")
    def model():
        return jsonify(engine.model_info())

    @app.get("/healthz")
    def healthz():
        if engine.draining:
            return jsonify({"status": "NOT_SERVING"}), 503
        return jsonify({"status": "SERVING"})

    if web:
        register_web(app, engine, cfg)
    return app


class _Counter:
    def __init__(self) -> None:
        self._n = 0
        self._cond = threading.Condition()

    def add(self, d: int) -> None:
        with self._cond:
            self._n += d
            self._cond.notify_all()

    def wait_zero(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._n == 0, timeout)


def gate_error_body(path: str, e) -> dict:
    """JSON for a request refused before the app ran (see :mod:`deepguard.httpguard`), in the route's shape."""
    log.info("refused %s: %s", path, e, extra={"event": "http", "path": path, "status": e.status})
    if path in ORIGIN_PATHS:
        return origin_body(None, str(e))
    return {"error": str(e), "code": e.code, **e.extra}


def _lazy_tls(srv, cfg: ServerConfig) -> None:
    """TLS with the handshake in the connection's own thread, under its read timeout.

    werkzeug wraps the listening socket with the default ``do_handshake_on_connect=True``, which runs every
    handshake inside ``accept()`` on the one serving thread: a client that connects and sends nothing
    would stop the whole REST port.
    """
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key)  # type: ignore[arg-type]
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True, do_handshake_on_connect=False)
    srv.ssl_context = ctx


class RestServer:
    """Werkzeug's threaded WSGI server in a background thread, with a draining stop."""

    def __init__(self, engine: Engine, metrics: Metrics | None, config: ServerConfig) -> None:
        self.engine = engine
        self.config = config
        self.app = create_app(engine, metrics, config.token)
        self.port: int | None = None

    def start(self) -> RestServer:
        from werkzeug.serving import make_server

        from deepguard.httpguard import BodyGate, handler_class

        cfg = self.config
        self._srv = make_server(
            cfg.host.strip("[]"),
            cfg.rest_port or 0,
            BodyGate(self.app, cfg, gate_error_body),
            threaded=True,
            request_handler=handler_class(cfg.read_timeout_s),
        )
        if cfg.tls:
            _lazy_tls(self._srv, cfg)
        self.port = self._srv.server_port
        self._thread = threading.Thread(target=self._srv.serve_forever, name="rest", daemon=True)
        self._thread.start()
        return self

    def stop(self, grace: float) -> None:
        """New requests get 503 (the engine is draining); in-flight ones get up to ``grace`` seconds."""
        self.app.extensions["deepguard.inflight"].wait_zero(grace)
        self._srv.shutdown()
        self._srv.server_close()
        self._thread.join(5)
