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

Layout: one blueprint per area (``origin``, ``v1``, the web app's ``web``), one small function per route; the
admission gate, accounting and error handlers are app-wide so every area shares them; per-app state is a
:class:`RestState` on ``app.extensions`` (no closures); request checks shared with the web API live in
:mod:`deepguard.serving.http_validation`.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

from flask import Blueprint, Flask, Request, Response, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from deepguard.errors import MediaError
from deepguard.output import to_record
from deepguard.runtime import aggregate
from deepguard.runtime.decode import media_kind
from deepguard.runtime.types import Analysis
from deepguard.serving.auth import token_ok
from deepguard.serving.batcher import Cancelled, Closed, Overloaded
from deepguard.serving.budget import Budget
from deepguard.serving.config import MiB, ServerConfig
from deepguard.serving.engine import Engine, ShuttingDown
from deepguard.serving.http_validation import (
    HttpError,
    Refusal,
    check_size,
    error_json,
    kind_limit,
    query_sampling,
    stream_size,
    uploaded_file,
)
from deepguard.serving.metrics import Metrics
from deepguard.web import is_public
from deepguard.web import register as register_web

if TYPE_CHECKING:
    from werkzeug.serving import BaseWSGIServer

log = logging.getLogger("deepguard.server.rest")

ORIGIN_RESULT = {"real": "Real", "fake": "Fake", "no_face": "No Faces", "error": "Error"}
ORIGIN_PATHS = ("/predict_image", "/predict_video")
STATE_KEY = "deepguard.rest"

#: The origin contract (``/predict_image``, ``/predict_video``) and DeepGuard's own ``/v1`` + health; the
#: routes hold no state, so one blueprint object serves every app (state: :func:`_state`).
origin = Blueprint("origin", __name__)
v1 = Blueprint("v1", __name__)


class _Request(Request):
    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> IO[bytes]:
        # Memory first, then an anonymous temporary file: no path on disk, never the client's file name.
        return tempfile.SpooledTemporaryFile(max_size=16 * MiB, mode="rb+")


class ApiError(Exception):
    """A refusal by the app-wide gate or a REST route: ``{"error": message}`` (origin shape on origin paths).

    Distinct from :class:`~deepguard.serving.http_validation.HttpError` so the web blueprint's handlers leave
    it alone: a 401/503 from the gate reads the same on every path.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Counter:
    """Requests (and web analyses) in flight, so a draining stop can wait for them to reach zero."""

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


@dataclass
class RestState:
    """What one app's hooks and routes share; on ``app.extensions`` so routes need no closures."""

    engine: Engine
    config: ServerConfig
    metrics: Metrics | None
    token: str | None
    slots: threading.BoundedSemaphore
    inflight: _Counter


def _state() -> RestState:
    return current_app.extensions[STATE_KEY]


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
    state = RestState(
        engine, cfg, metrics, token, threading.BoundedSemaphore(cfg.max_concurrent_rpcs), _Counter()
    )
    app.extensions[STATE_KEY] = state
    app.extensions["deepguard.inflight"] = state.inflight  # RestServer.stop and web jobs wait on it
    # App-wide, not per blueprint: the web app's routes and unmatched paths get the same gate and logs.
    app.before_request(_admit)
    app.teardown_request(_release)
    app.after_request(_account)
    for exc, handler in _ERROR_HANDLERS:
        app.register_error_handler(exc, handler)
    app.register_blueprint(origin)
    app.register_blueprint(v1)
    if web:
        register_web(app, engine, cfg)
    return app


# -- app-wide hooks: admission (token, drain, request slots), release, accounting ----------------------------
def _admit() -> None:
    """Refuse before any work: a bad token, a draining server or all request slots taken."""
    g.t0 = time.perf_counter()
    g.slot = False
    if request.method == "OPTIONS" or request.path == "/healthz":
        return None
    st = _state()
    if (
        st.token
        and not is_public(request.path)
        and not token_ok(request.headers.get("Authorization"), st.token)
    ):
        raise ApiError(401, "missing or invalid bearer token: send 'Authorization: Bearer <token>'")
    if st.engine.draining:
        raise ApiError(503, "server is shutting down")
    if not st.slots.acquire(blocking=False):
        raise ApiError(503, f"server busy: {st.config.max_concurrent_rpcs} requests in progress; retry later")
    g.slot = True
    st.inflight.add(1)
    return None


def _release(_exc: BaseException | None) -> None:
    """Teardown runs even when a handler failed, so a slot can never leak."""
    if g.get("slot"):
        g.slot = False
        st = _state()
        st.slots.release()
        st.inflight.add(-1)


def _account(resp: Response) -> Response:
    """Metrics per route and one structured log line per request, whatever area answered it."""
    dt = time.perf_counter() - g.get("t0", time.perf_counter())
    metrics = _state().metrics
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


# -- app-wide error handlers (the web blueprint answers its own routes' errors in its own shape) ---------------
def _error_response(status: int, message: str) -> tuple[Response, int]:
    """By path, not blueprint: a 404/405 on an origin path matched no route but keeps the origin shape."""
    if request.path in ORIGIN_PATHS:
        return jsonify(origin_body(None, message)), status
    return jsonify({"error": message}), status


def _api_error(e: ApiError | HttpError) -> tuple[Response, int]:
    return _error_response(e.status, str(e))


def _too_large(_e: RequestEntityTooLarge) -> tuple[Response, int]:
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    return _error_response(413, f"upload is larger than the limit of {limit} bytes")


def _http(e: HTTPException) -> tuple[Response, int]:
    return _error_response(e.code or 500, e.description or e.name)


def _internal(e: Exception) -> tuple[Response, int]:
    log.error("internal error on %s: %s", request.path, e, exc_info=e)
    return _error_response(500, f"internal error: {type(e).__name__}")


_ERROR_HANDLERS = (
    (ApiError, _api_error),
    (HttpError, _api_error),
    (RequestEntityTooLarge, _too_large),
    (HTTPException, _http),
    (Exception, _internal),
)


# -- analysis of one upload -----------------------------------------------------------------------------------
def _run(kind: str | None) -> Analysis:
    """The upload's analysis; an accepted request is a bounded job, so a drain lets it finish (grace)."""
    st = _state()
    with st.engine.finishing():
        return _analyze(st, kind)


def _analyze(st: RestState, kind: str | None) -> Analysis:
    """Every refusal of the engine as the HTTP status the contract names (400 bad media, 503 busy)."""
    f, name = uploaded_file(request.files, "<upload>")
    try:
        return _score(st, f.stream, name, kind)
    except MediaError as e:
        raise ApiError(400, str(e)) from e
    except ValueError as e:
        raise ApiError(400, f"bad query parameter: {e}") from e
    except Overloaded as e:
        raise ApiError(503, str(e)) from e
    except (ShuttingDown, Closed) as e:
        raise ApiError(503, str(e) or "server is shutting down") from e


def _score(st: RestState, stream: IO[bytes], name: str, kind: str | None) -> Analysis:
    """Check the upload (kind, size) before the budget starts, then score it within the budget."""
    actual = media_kind(stream, name=name)
    if kind is not None and actual != kind:
        raise MediaError(
            f"{name}: expected {'an image' if kind == 'image' else 'a video'}, got {actual} data"
        )
    check_size(name, actual, stream_size(stream), kind_limit(actual, st.config))
    budget = Budget(st.config.request_budget_s)
    try:
        if actual == "image":
            return st.engine.analyze_image_bytes(stream.read(), name, budget)
        return _score_video(st, stream, name, budget)
    except Cancelled as e:
        raise ApiError(503, str(budget.explain(e, name))) from e


def _score_video(st: RestState, stream: IO[bytes], name: str, budget: Budget) -> Analysis:
    """Videos also take an upload slot: decoding one holds far more memory and CPU than an image."""
    engine = st.engine
    if not engine.uploads.acquire(blocking=False):
        raise Overloaded(
            f"server busy: {st.config.max_uploads} video uploads already in progress; retry later"
        )
    try:
        return engine.analyze_video_file(stream, name, cancelled=budget, **query_sampling(request.args))
    finally:
        engine.uploads.release()


# -- routes ---------------------------------------------------------------------------------------------------
@origin.post("/predict_image")
def predict_image() -> Response:
    return jsonify(origin_body(_run("image")))


@origin.post("/predict_video")
def predict_video() -> Response:
    return jsonify(origin_body(_run("video")))


@v1.post("/v1/analyze")
def analyze() -> Response:
    return jsonify(to_record(_run(None)))


@v1.get("/v1/model")
def model() -> Response:
    return jsonify(_state().engine.model_info())


@v1.get("/healthz")
def healthz() -> Response | tuple[Response, int]:
    """Unauthenticated and outside the request slots (see :func:`_admit`), so probes work when busy."""
    if _state().engine.draining:
        return jsonify({"status": "NOT_SERVING"}), 503
    return jsonify({"status": "SERVING"})


def gate_error_body(path: str, e: Refusal) -> dict:
    """JSON for a request refused before the app ran (see :mod:`deepguard.httpguard`), in the route's shape."""
    log.info("refused %s: %s", path, e, extra={"event": "http", "path": path, "status": e.status})
    if path in ORIGIN_PATHS:
        return origin_body(None, str(e))
    return error_json(e)


def _lazy_tls(srv: BaseWSGIServer, cfg: ServerConfig) -> None:
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
