"""Routes of the web app (mounted on the REST app, so the token check, busy limits and logging apply).

Page shell::

    GET /                      index.html          GET /assets/<file>   CSS, JS, strings, icons, samples
    GET /sw.js                 service worker      GET /manifest.webmanifest

JSON API (every call is scoped to the browser's random ``dg_client`` cookie; no accounts)::

    GET    /api/config                 upload limits and video sampling defaults
    GET    /api/model                  the installed model: metadata, validation numbers, parity checks
    POST   /api/analyze                multipart ``file`` (+ ``keep``, ``fps``) -> 202 {"id": job}
    GET    /api/jobs/<job>             {"state", "done", "total", "result" | "error" + "code"}
    DELETE /api/jobs/<job>             cancel
    GET    /api/history[?before=ID]    newest first, 50 per page, with 96 px thumbnails
    DELETE /api/history                delete all of this browser's entries
    GET    /api/history/<id>           the stored result (boxes, crops, preview)
    DELETE /api/history/<id>
    GET    /api/history/<id>/media     the original file, only when the user asked to keep it

Errors are ``{"error": message, "code": short_code}`` with HTTP 400/403/404/413/503; the page translates the
code and shows the message (escaped) as the technical detail.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, g, jsonify, request, send_file
from flask.blueprints import BlueprintSetupState
from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from deepguard import __version__
from deepguard.errors import MediaError
from deepguard.runtime.decode import media_kind
from deepguard.serving.batcher import Cancelled
from deepguard.serving.budget import Budget
from deepguard.serving.config import ServerConfig
from deepguard.serving.engine import Engine
from deepguard.serving.http_validation import (
    FORM_TRUE_WORDS,
    HttpError,
    check_size,
    error_json,
    flag,
    form_sampling,
    kind_limit,
    stream_size,
    uploaded_file,
)
from deepguard.web import STATIC_DIR
from deepguard.web.history import Entry, History
from deepguard.web.jobs import Job, Jobs
from deepguard.web.results import analyze_upload, data_uri

COOKIE = "dg_client"
_CLIENT_RE = re.compile(r"^[A-Za-z0-9_-]{22,64}$")
_MIME_RE = re.compile(r"^(image|video)/[a-z0-9.+-]{1,60}$")
PAGE_SIZE = 50
STATE_KEY = "deepguard.web"

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob:; connect-src 'self'; worker-src 'self'; manifest-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

#: The web API's refusal: ``{"error", "code", **extra}`` (the shared request checks raise it too).
WebError = HttpError


def static_version() -> str:
    """Hash of every static file: a new version of the app gets a new service-worker cache."""
    h = hashlib.sha256(__version__.encode())
    for p in sorted(STATIC_DIR.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(STATIC_DIR).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


@dataclass
class WebState:
    """What the web routes of one app share; on ``app.extensions`` so the routes need no closures."""

    engine: Engine
    config: ServerConfig
    history: History
    jobs: Jobs
    slots: threading.BoundedSemaphore  # background analyses, on top of the REST request slots
    version: str
    sw_source: str
    limits: dict[str, int]

    @classmethod
    def build(cls, engine: Engine, config: ServerConfig) -> WebState:
        version = static_version()
        return cls(
            engine=engine,
            config=config,
            history=History(getattr(config, "history_db", None)),
            jobs=Jobs(),
            slots=threading.BoundedSemaphore(max(2, config.max_uploads)),
            version=version,
            sw_source=(STATIC_DIR / "sw.js").read_text(encoding="utf-8").replace("__VERSION__", version),
            limits={
                "image_bytes": config.max_message_bytes,
                "video_bytes": config.max_video_bytes,
                "video_seconds": config.max_video_seconds,
                "frame_pixels": config.max_frame_pixels,
            },
        )


def _web() -> WebState:
    return current_app.extensions[STATE_KEY]


def _install(state: WebState, setup: BlueprintSetupState) -> None:
    setup.app.extensions[STATE_KEY] = state


def create_blueprint(engine: Engine, config: ServerConfig) -> Blueprint:
    """The page shell and ``/api/``; the history store opens now, so a bad ``--history-db`` fails at start."""
    bp = Blueprint("web", __name__, static_folder=str(STATIC_DIR), static_url_path="/assets")
    bp.record_once(partial(_install, WebState.build(engine, config)))
    bp.before_request(_same_origin_only)
    bp.after_request(_headers)
    bp.register_error_handler(HttpError, _web_error)
    bp.register_error_handler(RequestEntityTooLarge, _too_large)
    bp.register_error_handler(HTTPException, _http)
    for rule, method, view in _ROUTES:
        bp.add_url_rule(rule, view_func=view, methods=[method])
    return bp


# -- cross-cutting ---------------------------------------------------------------------------------------------
def client_id(create: bool = False) -> str | None:
    """The browser's random history key; a new one (set by :func:`_headers`) only when it will hold data."""
    cid = request.cookies.get(COOKIE, "")
    if _CLIENT_RE.match(cid):
        return cid
    if not create:
        return None
    g.new_client = secrets.token_urlsafe(24)
    return g.new_client


def need_client() -> str:
    cid = client_id()
    if cid is None:
        raise WebError(404, "not_found", "no history for this browser yet")
    return cid


def _same_origin_only() -> None:
    """State changes only from our own pages: a cross-site form or fetch must not analyse or delete."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return None
    site = request.headers.get("Sec-Fetch-Site")
    origin = request.headers.get("Origin")
    if (site and site not in ("same-origin", "none")) or (origin and urlsplit(origin).netloc != request.host):
        raise WebError(403, "forbidden", "cross-site requests are not allowed")
    return None


def _headers(resp: Response) -> Response:
    if g.get("new_client"):
        resp.set_cookie(
            COOKIE,
            g.new_client,
            max_age=2 * 365 * 86400,
            httponly=True,
            samesite="Strict",
            secure=request.is_secure,
        )
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    resp.headers.setdefault("Referrer-Policy", "no-referrer")
    if request.path.startswith("/api/"):
        resp.headers.setdefault("Cache-Control", "no-store")
    if resp.mimetype == "text/html":
        resp.headers["Content-Security-Policy"] = CSP
        resp.headers["X-Frame-Options"] = "DENY"
    return resp


def _web_error(e: HttpError) -> tuple[Response, int]:
    return jsonify(error_json(e)), e.status


def _too_large(_e: RequestEntityTooLarge) -> tuple[Response, int]:
    limit = _web().limits["video_bytes"]
    return jsonify(
        {
            "error": f"the upload is larger than the limit of {limit} bytes",
            "code": "too_large",
            "limit": limit,
            "size": request.content_length,
        }
    ), 413


def _http(e: HTTPException) -> tuple[Response, int]:
    return jsonify({"error": e.description or e.name, "code": "http"}), e.code or 500


# -- page shell ------------------------------------------------------------------------------------------------
def index() -> Response:
    resp = send_file(STATIC_DIR / "index.html", mimetype="text/html", max_age=0)
    resp.headers["Cache-Control"] = "no-cache"
    return resp


def service_worker() -> Response:
    """Served from ``/`` (not /assets/) with the app's version stamped in, so it may control every page."""
    return Response(
        _web().sw_source,
        mimetype="text/javascript",
        headers={"Cache-Control": "no-cache", "Service-Worker-Allowed": "/"},
    )


def manifest() -> Response:
    return send_file(STATIC_DIR / "manifest.webmanifest", mimetype="application/manifest+json", max_age=0)


def favicon() -> Response:
    return send_file(STATIC_DIR / "icons" / "icon-192.png", mimetype="image/png", max_age=86400)


# -- info ------------------------------------------------------------------------------------------------------
def api_config() -> Response:
    st = _web()
    engine, config = st.engine, st.config
    return jsonify(
        {
            "version": __version__,
            "app_version": st.version,
            "limits": st.limits,
            "fps": config.fps,
            "every_frame": config.every_frame,
            "max_frames": config.max_frames,
            "threshold": engine.threshold,
            "band": list(engine.band) if engine.band else None,
            "model": engine.classifier.name,
        }
    )


def api_model() -> Response:
    return jsonify(model_details(_web().engine))


# -- analyse ---------------------------------------------------------------------------------------------------
@dataclass
class _Upload:
    """One admitted upload on its way into a background job."""

    stream: IO[bytes]
    name: str
    kind: str
    size: int
    opts: dict[str, Any]
    keep: bool
    mime: str | None


def api_analyze() -> tuple[Response, int]:
    """Admit the upload and answer at once (202); the page polls the job for progress and the result."""
    st = _web()
    f, name = uploaded_file(request.files, "upload")
    stream = f.stream
    f.stream = io.BytesIO()  # the job owns the upload now; the request's cleanup must not close it
    release: list[Callable[[], None]] = [stream.close]
    try:
        up = _admit_upload(st, f, stream, name)
        _reserve(st, up.kind, release)
        client = client_id(create=True)
        assert client is not None
        # the job closes the stream itself; it releases the rest when it ends
        done = partial(_release_all, release[1:])
        job = st.jobs.start(client, name, up.kind, partial(_work, st, client, up), stream, done)
    except BaseException:
        _release_all(release)
        raise
    return jsonify(job.view()), 202


def _admit_upload(st: WebState, f: FileStorage, stream: IO[bytes], name: str) -> _Upload:
    """Everything that can be refused before a slot is taken: the media kind, its size, the form."""
    size = stream_size(stream)
    try:
        kind = media_kind(stream, name=name)
    except MediaError as e:
        raise WebError(400, "unsupported" if size else "empty", str(e)) from e
    check_size(name, kind, size, kind_limit(kind, st.config))
    opts = form_sampling(request.form)
    keep = flag(request.form.get("keep"), FORM_TRUE_WORDS)
    mime = f.mimetype if _MIME_RE.match(f.mimetype or "") else None
    return _Upload(stream, name, kind, size, opts, keep, mime)


def _reserve(st: WebState, kind: str, release: list[Callable[[], None]]) -> None:
    """Take the slots the job holds until it ends; each one taken is appended to ``release``."""
    if not st.slots.acquire(blocking=False):
        raise WebError(503, "busy", "server busy: too many analyses in progress; retry in a moment")
    release.append(st.slots.release)
    if kind == "video":
        if not st.engine.uploads.acquire(blocking=False):
            raise WebError(503, "busy", f"server busy: {st.config.max_uploads} video uploads in progress")
        release.append(st.engine.uploads.release)
    inflight = current_app.extensions.get("deepguard.inflight")
    if inflight is not None:  # a drain waits for background analyses too, not only for requests
        inflight.add(1)
        release.append(partial(inflight.add, -1))


def _release_all(release: list[Callable[[], None]]) -> None:
    for r in reversed(release):
        r()


def _work(st: WebState, client: str, up: _Upload, job: Job) -> dict:
    """The job's body, in its own thread (no app context: everything it needs comes as arguments)."""
    budget = Budget(st.config.request_budget_s, job.cancelled)
    try:
        with st.engine.finishing():  # an accepted analysis finishes during a drain (grace)
            res = analyze_upload(
                st.engine,
                up.stream,
                up.name,
                up.kind,
                cancelled=budget,
                on_total=partial(setattr, job, "total"),
                progress=partial(setattr, job, "done"),
                **up.opts,
            )
    except Cancelled as e:
        raise budget.explain(e, up.name) from e
    entry_id = st.history.add(
        client,
        res.data,
        name=up.name,
        size=up.size,
        preview=res.preview,
        thumb=res.thumb,
        media=up.stream if up.keep else None,
        media_type=up.mime,
    )
    entry = st.history.get(client, entry_id)
    assert entry is not None
    return entry_json(entry, full=True)


def _job(job_id: str) -> Job:
    job = _web().jobs.get(job_id, need_client())
    if job is None:
        raise WebError(404, "not_found", "no such analysis")
    return job


def api_job(job_id: str) -> Response:
    return jsonify(_job(job_id).view())


def api_job_cancel(job_id: str) -> Response:
    job = _job(job_id)
    job.cancel = True
    return jsonify(job.view())


# -- history ---------------------------------------------------------------------------------------------------
def api_history() -> Response:
    cid = client_id()
    if cid is None:
        return jsonify({"items": [], "more": False, "total": 0})
    history = _web().history
    before = request.args.get("before", type=int)
    items, more = history.list(cid, PAGE_SIZE, before)
    return jsonify({"items": [entry_json(e) for e in items], "more": more, "total": history.count(cid)})


def api_history_clear() -> Response:
    cid = client_id()
    return jsonify({"deleted": _web().history.delete(cid) if cid else 0})


def api_history_get(entry_id: int) -> Response:
    e = _web().history.get(need_client(), entry_id)
    if e is None:
        raise WebError(404, "not_found", f"history entry {entry_id} not found")
    return jsonify(entry_json(e, full=True))


def api_history_delete(entry_id: int) -> Response:
    if _web().history.delete(need_client(), entry_id) == 0:
        raise WebError(404, "not_found", f"history entry {entry_id} not found")
    return jsonify({"deleted": 1})


def api_history_media(entry_id: int) -> Response:
    m = _web().history.media(need_client(), entry_id)
    if m is None:
        raise WebError(404, "not_found", "the original file was not kept")
    path, name, mime = m
    # Always a download, never rendered inline: the bytes are the user's upload, not ours.
    return send_file(path, mimetype=mime, as_attachment=True, download_name=name, max_age=0)


#: (rule, method, view); the endpoint is the view's name, as with the ``@bp.get`` decorators.
_ROUTES: tuple[tuple[str, str, Callable[..., Any]], ...] = (
    ("/", "GET", index),
    ("/sw.js", "GET", service_worker),
    ("/manifest.webmanifest", "GET", manifest),
    ("/favicon.ico", "GET", favicon),
    ("/api/config", "GET", api_config),
    ("/api/model", "GET", api_model),
    ("/api/analyze", "POST", api_analyze),
    ("/api/jobs/<job_id>", "GET", api_job),
    ("/api/jobs/<job_id>", "DELETE", api_job_cancel),
    ("/api/history", "GET", api_history),
    ("/api/history", "DELETE", api_history_clear),
    ("/api/history/<int:entry_id>", "GET", api_history_get),
    ("/api/history/<int:entry_id>", "DELETE", api_history_delete),
    ("/api/history/<int:entry_id>/media", "GET", api_history_media),
)


def entry_json(e: Entry, full: bool = False) -> dict:
    out = {
        "id": e.id,
        "created": round(e.created, 3),
        "name": e.name,
        "kind": e.kind,
        "verdict": e.verdict,
        "score": e.score,
        "n_faces": e.n_faces,
        "size": e.size,
        "media_kept": e.media_kept,
        "thumb": data_uri(e.thumb),
    }
    if full and e.result is not None:
        out = {**e.result, **out, "preview": data_uri(e.preview)}
    return out


def model_details(engine: Engine) -> dict:
    """What the Model page shows: ``Engine.model_info`` plus the numbers stored next to the model file."""
    info = engine.model_info()
    try:
        meta = json.loads(info.pop("metadata_json", "{}"))
    except json.JSONDecodeError:
        meta = {}
    out = {**info, "meta": meta, "metrics": None, "parity": None}
    folder = Path(getattr(engine.classifier, "path", "")).parent
    for key, fname in (("metrics", "metrics.json"), ("parity", "parity.json")):
        p = folder / fname
        if p.is_file() and p.stat().st_size < 1 << 20:
            try:
                out[key] = json.loads(p.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                pass
    if isinstance(out["parity"], dict):
        checks = out["parity"].get("checks") or {}
        out["parity"] = {
            "passed": out["parity"].get("passed"),
            "checks": {k: bool(v.get("passed")) for k, v in checks.items() if isinstance(v, dict)},
        }
    return out
