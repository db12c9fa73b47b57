"""The DeepGuard web app: a plain HTML/CSS/JS single page plus the JSON API it needs, on the REST port.

No build step and nothing fetched at run time: ``static/`` is package data served as is, so the app works
offline and installs as a PWA. ``register(app, engine, config)`` mounts it on the REST Flask app (which
keeps the origin endpoints untouched); see :mod:`deepguard.web.api` for the routes.
"""

from __future__ import annotations

from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent / "static"

#: Paths anyone may fetch even when the server requires a bearer token: the page shell holds no data, and a
#: browser cannot attach a token to a page navigation. Every /api/ call still needs the token.
PUBLIC_PATHS = frozenset({"/", "/sw.js", "/manifest.webmanifest", "/favicon.ico"})
PUBLIC_PREFIX = "/assets/"


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIX)


def register(app, engine, config) -> None:
    """Mount the web app and its API on ``app`` (the REST app built by ``deepguard.rest.create_app``)."""
    from deepguard.web.api import create_blueprint

    app.register_blueprint(create_blueprint(engine, config))
