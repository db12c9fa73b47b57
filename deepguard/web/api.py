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
from pathlib import Path
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, g, jsonify, request, send_file
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from deepguard import __version__
from deepguard.errors import MediaError
from deepguard.runtime.decode import media_kind
from deepguard.serving import wire
from deepguard.serving.batcher import Cancelled
from deepguard.serving.budget import Budget
from deepguard.serving.config import ServerConfig
from deepguard.serving.engine import Engine
from deepguard.web import STATIC_DIR
from deepguard.web.history import Entry, History
from deepguard.web.jobs import Job, Jobs
from deepguard.web.results import analyze_upload, data_uri

COOKIE = "dg_client"
_CLIENT_RE = re.compile(r"^[A-Za-z0-9_-]{22,64}$")
_MIME_RE = re.compile(r"^(image|video)/[a-z0-9.+-]{1,60}$")
PAGE_SIZE = 50

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob:; connect-src 'self'; worker-src 'self'; manifest-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


class WebError(Exception):
    def __init__(self, status: int, code: str, message: str, **extra) -> None:
        super().__init__(message)
        self.status, self.code, self.extra = status, code, extra


def static_version() -> str:
    """Hash of every static file: a new version of the app gets a new service-worker cache."""
    h = hashlib.sha256(__version__.encode())
    for p in sorted(STATIC_DIR.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(STATIC_DIR).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def create_blueprint(engine: Engine, config: ServerConfig) -> Blueprint:
    bp = Blueprint("web", __name__, static_folder=str(STATIC_DIR), static_url_path="/assets")
    history = History(getattr(config, "history_db", None))
    jobs = Jobs()
    slots = threading.BoundedSemaphore(max(2, config.max_uploads))
    version = static_version()
    sw_source = (STATIC_DIR / "sw.js").read_text(encoding="utf-8").replace("__VERSION__", version)
    limits = {
        "image_bytes": config.max_message_bytes,
        "video_bytes": config.max_video_bytes,
        "video_seconds": config.max_video_seconds,
        "frame_pixels": config.max_frame_pixels,
    }

    # -- cross-cutting -----------------------------------------------------------------------------------------
    def client_id(create: bool = False) -> str | None:
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

    @bp.before_request
    def _same_origin_only():
        """State changes only from our own pages: a cross-site form or fetch must not analyse or delete."""
        if request.method in ("GET", "HEAD", "OPTIONS"):
            return None
        site = request.headers.get("Sec-Fetch-Site")
        origin = request.headers.get("Origin")
        if (site and site not in ("same-origin", "none")) or (
            origin and urlsplit(origin).netloc != request.host
        ):
            raise WebError(403, "forbidden", "cross-site requests are not allowed")
        return None

    @bp.after_request
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

    @bp.errorhandler(WebError)
    def _web_error(e: WebError):
        return jsonify({"error": str(e), "code": e.code, **e.extra}), e.status

    @bp.errorhandler(RequestEntityTooLarge)
    def _too_large(_e):
        return jsonify(
            {
                "error": f"the upload is larger than the limit of {limits['video_bytes']} bytes",
                "code": "too_large",
                "limit": limits["video_bytes"],
                "size": request.content_length,
            }
        ), 413

    @bp.errorhandler(HTTPException)
    def _http(e: HTTPException):
        return jsonify({"error": e.description or e.name, "code": "http"}), e.code or 500

    # -- page shell ----------------------------------------------------------------------------------------------
    @bp.get("/")
    def index():
        resp = send_file(STATIC_DIR / "index.html", mimetype="text/html", max_age=0)
        resp.headers["Cache-Control"] = "no-cache"
        return resp

    @bp.get("/sw.js")
    def service_worker():
        return Response(
            sw_source,
            mimetype="text/javascript",
            headers={"Cache-Control": "no-cache", "Service-Worker-Allowed": "/"},
        )

    @bp.get("/manifest.webmanifest")
    def manifest():
        return send_file(STATIC_DIR / "manifest.webmanifest", mimetype="application/manifest+json", max_age=0)

    @bp.get("/favicon.ico")
    def favicon():
        return send_file(STATIC_DIR / "icons" / "icon-192.png", mimetype="image/png", max_age=86400)

    # -- info ------------------------------------------------------------------------------------------------------
    @bp.get("/api/config")
    def api_config():
        return jsonify(
            {
                "version": __version__,
                "app_version": version,
                "limits": limits,
                "fps": config.fps,
                "every_frame": config.every_frame,
                "max_frames": config.max_frames,
                "threshold": engine.threshold,
                "band": list(engine.band) if engine.band else None,
                "model": engine.classifier.name,
            }
        )

    @bp.get("/api/model")
    def api_model():
        return jsonify(model_details(engine))

    # -- analyse -----------------------------------------------------------------------------------------------------
    @bp.post("/api/analyze")
    def api_analyze():
        f = request.files.get("file")
        if f is None:
            raise WebError(400, "no_file", "missing multipart field 'file'")
        name = wire.sanitize_name((f.filename or "").replace("\\", "/").rsplit("/", 1)[-1], "upload")
        stream = f.stream
        f.stream = io.BytesIO()  # the job owns the upload now; the request's cleanup must not close it
        release = [stream.close]
        try:
            size = stream.seek(0, 2)
            stream.seek(0)
            try:
                kind = media_kind(stream, name=name)
            except MediaError as e:
                raise WebError(400, "unsupported" if size else "empty", str(e)) from e
            limit = limits["image_bytes"] if kind == "image" else limits["video_bytes"]
            if size > limit:
                raise WebError(
                    413,
                    "too_large",
                    f"{name}: the {kind} is {size} bytes, larger than the limit of {limit} bytes",
                    limit=limit,
                    kind=kind,
                    size=size,
                )
            opts = _options(request.form)
            keep = request.form.get("keep", "").lower() in ("1", "true", "on", "yes")
            mime = f.mimetype if _MIME_RE.match(f.mimetype or "") else None
            if not slots.acquire(blocking=False):
                raise WebError(503, "busy", "server busy: too many analyses in progress; retry in a moment")
            release.append(slots.release)
            if kind == "video":
                if not engine.uploads.acquire(blocking=False):
                    raise WebError(
                        503, "busy", f"server busy: {config.max_uploads} video uploads in progress"
                    )
                release.append(engine.uploads.release)
            inflight = current_app.extensions.get("deepguard.inflight")
            if inflight is not None:  # a drain waits for background analyses too, not only for requests
                inflight.add(1)
                release.append(lambda: inflight.add(-1))
            client = client_id(create=True)
            assert client is not None

            def work(job: Job) -> dict:
                budget = Budget(config.request_budget_s, job.cancelled)
                try:
                    with engine.finishing():  # an accepted analysis finishes during a drain (grace)
                        res = analyze_upload(
                            engine,
                            stream,
                            name,
                            kind,
                            cancelled=budget,
                            on_total=lambda n: setattr(job, "total", n),
                            progress=lambda n: setattr(job, "done", n),
                            **opts,
                        )
                except Cancelled as e:
                    raise budget.explain(e, name) from e
                entry_id = history.add(
                    client,
                    res.data,
                    name=name,
                    size=size,
                    preview=res.preview,
                    thumb=res.thumb,
                    media=stream if keep else None,
                    media_type=mime,
                )
                entry = history.get(client, entry_id)
                assert entry is not None
                return entry_json(entry, full=True)

            def release_all() -> None:
                for r in reversed(release[1:]):
                    r()

            job = jobs.start(client, name, kind, work, stream, release_all)
        except BaseException:
            for r in reversed(release):
                r()
            raise
        return jsonify(job.view()), 202

    @bp.get("/api/jobs/<job_id>")
    def api_job(job_id: str):
        job = jobs.get(job_id, need_client())
        if job is None:
            raise WebError(404, "not_found", "no such analysis")
        return jsonify(job.view())

    @bp.delete("/api/jobs/<job_id>")
    def api_job_cancel(job_id: str):
        job = jobs.get(job_id, need_client())
        if job is None:
            raise WebError(404, "not_found", "no such analysis")
        job.cancel = True
        return jsonify(job.view())

    # -- history -----------------------------------------------------------------------------------------------------
    @bp.get("/api/history")
    def api_history():
        cid = client_id()
        if cid is None:
            return jsonify({"items": [], "more": False, "total": 0})
        before = request.args.get("before", type=int)
        items, more = history.list(cid, PAGE_SIZE, before)
        return jsonify({"items": [entry_json(e) for e in items], "more": more, "total": history.count(cid)})

    @bp.delete("/api/history")
    def api_history_clear():
        cid = client_id()
        return jsonify({"deleted": history.delete(cid) if cid else 0})

    @bp.get("/api/history/<int:entry_id>")
    def api_history_get(entry_id: int):
        e = history.get(need_client(), entry_id)
        if e is None:
            raise WebError(404, "not_found", f"history entry {entry_id} not found")
        return jsonify(entry_json(e, full=True))

    @bp.delete("/api/history/<int:entry_id>")
    def api_history_delete(entry_id: int):
        if history.delete(need_client(), entry_id) == 0:
            raise WebError(404, "not_found", f"history entry {entry_id} not found")
        return jsonify({"deleted": 1})

    @bp.get("/api/history/<int:entry_id>/media")
    def api_history_media(entry_id: int):
        m = history.media(need_client(), entry_id)
        if m is None:
            raise WebError(404, "not_found", "the original file was not kept")
        path, name, mime = m
        # Always a download, never rendered inline: the bytes are the user's upload, not ours.
        return send_file(path, mimetype=mime, as_attachment=True, download_name=name, max_age=0)

    return bp


def _options(form) -> dict:
    """Video sampling options from the form; a bad value is the user's error (400), not a crash."""
    out: dict = {}
    try:
        if form.get("fps"):
            out["fps"] = float(form["fps"])
        if form.get("max_frames"):
            out["max_frames"] = int(form["max_frames"])
    except ValueError as e:
        raise WebError(400, "bad_option", f"bad option: {e}") from e
    if "fps" in out and not (0 < out["fps"] <= 60):
        raise WebError(400, "bad_option", "fps must be between 0 and 60")
    if "max_frames" in out and out["max_frames"] < 1:
        raise WebError(400, "bad_option", f"max_frames must be >= 1, got {out['max_frames']}")
    if form.get("every_frame", "").lower() in ("1", "true", "on", "yes"):
        out["every_frame"] = True
    return out


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
