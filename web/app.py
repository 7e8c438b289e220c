"""The Flask application factory: auth, pages, API, /healthz and /metrics."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from typing import Any

from flask import Flask, current_app, g, jsonify, render_template, request, url_for
from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import IntegerConverter
from werkzeug.wrappers import Response

from gateway import health
from web import metrics
from web.actions import MAX_ID, Jobs
from web.auth import SESSION_LIFETIME, secret_key
from web.data import parse_time, timezone
from web.login import Gate, SessionInterface, current_csrf, guard
from web.thumbs import Thumbnails

STATIC = Path(__file__).with_name("static")
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; object-src 'none'; "
       "frame-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


class RowIdConverter(IntegerConverter):
    """``<int:...>`` in every route: a number no row can have is 404, never a 500 from SQLite."""

    def to_python(self, value: str) -> Any:
        number = super().to_python(value)
        # NotFound, not werkzeug's ValidationError: that would let the matcher answer 405
        # where another method's rule has the same path
        if number > MAX_ID:
            raise NotFound(f"{value} is not an id here: ids go up to {MAX_ID}")
        return number


def _asset_version() -> str:
    h = hashlib.sha256()
    for p in sorted(STATIC.rglob("*")):
        if p.is_file():
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()[:10]


def create_app(service: Any) -> Flask:
    """The app for a running (or CLI-built) Service."""
    app = Flask(__name__)
    app.url_map.converters["int"] = RowIdConverter  # before any route is added
    settings = service.settings
    app.config.update(
        SERVICE=service,
        JSON_SORT_KEYS=False,
        SECRET_KEY=secret_key(settings.data_dir),
        SESSION_COOKIE_NAME="gateway_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.web.secure_cookies,
        PERMANENT_SESSION_LIFETIME=dt.timedelta(seconds=SESSION_LIFETIME),
        MAX_CONTENT_LENGTH=settings.smtp.max_message_size + 1024 * 1024,
        SEND_FILE_MAX_AGE_DEFAULT=dt.timedelta(days=365),
        TEMPLATES_AUTO_RELOAD=False,
    )
    app.session_interface = SessionInterface()
    app.extensions["gateway.gate"] = Gate(service)
    app.extensions["gateway.jobs"] = Jobs()
    app.extensions["gateway.thumbs"] = Thumbnails(settings.data_dir)
    app.extensions["gateway.metrics"] = metrics.registry_for(service)
    version = _asset_version()
    tz = timezone(settings)

    from web.api import bp as api_bp
    from web.login import bp as login_bp
    from web.pages import register as register_pages

    app.register_blueprint(login_bp)
    app.register_blueprint(api_bp)
    register_pages(app)
    app.before_request(guard)

    @app.after_request
    def headers(resp: Response) -> Response:
        h = resp.headers
        h.setdefault("Content-Security-Policy", CSP)
        h["X-Content-Type-Options"] = "nosniff"
        h["X-Frame-Options"] = "DENY"
        h["Referrer-Policy"] = "same-origin"
        h["Cross-Origin-Opener-Policy"] = "same-origin"
        h["Permissions-Policy"] = "camera=(), microphone=(), geolocation=(), interest-cohort=()"
        if request.endpoint != "static":
            h["Cache-Control"] = "no-store"
        return resp

    @app.context_processor
    def template_globals() -> dict[str, Any]:
        return {"csrf_token": current_csrf, "asset": lambda name: url_for("static", filename=name, v=version),
                "auth": g.get("auth"), "nav": request.blueprint or request.endpoint,
                "banner": attention_banner, "tzname": dt.datetime.now(tz).tzname()}

    def attention_banner() -> list[Any]:
        """What the banner on every page shows (computed only where a page asks for it)."""
        if g.get("auth") is None:
            return []
        return health.banner(settings, service.store, list(service.rules.problems),
                             now=dt.datetime.now(dt.timezone.utc))

    @app.template_filter("when")
    def when(value: str | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
        t = parse_time(value)
        return t.astimezone(tz).strftime(fmt) if t else "—"

    @app.template_filter("ago")
    def ago(value: str | None) -> str:
        t = parse_time(value)
        if t is None:
            return "never"
        s = (dt.datetime.now(dt.timezone.utc) - t).total_seconds()
        future = s < 0
        s = abs(s)
        text = (f"{int(s)} s" if s < 60 else f"{int(s // 60)} min" if s < 3600 else
                f"{int(s // 3600)} h" if s < 86400 else f"{int(s // 86400)} d")
        return f"in {text}" if future else f"{text} ago"

    @app.template_filter("due")
    def due(value: str | None) -> str:
        t = parse_time(value)
        if t is None:
            return "—"
        return "due now" if t <= dt.datetime.now(dt.timezone.utc) else ago(value)

    @app.template_filter("every")
    def every(seconds: int | None) -> str:
        s = int(seconds or 0)
        for unit, n in (("day", 86400), ("h", 3600), ("min", 60)):
            if s and s % n == 0:
                count = s // n
                return f"{count} {unit}{'s' if unit == 'day' and count > 1 else ''}"
        return f"{s} s"

    @app.template_filter("size")
    def size(value: int | None) -> str:
        n = float(value or 0)
        for unit in ("B", "KB", "MB", "GB"):
            if n < 1024 or unit == "GB":
                return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
            n /= 1024
        return f"{n:.1f} GB"

    @app.get("/healthz")
    def healthz() -> Any:
        parts = service.health()
        down = [k for k, ok in parts.items() if not ok]
        body = {"status": "ok" if not down else "down", "parts": parts, "down": down}
        return jsonify(body), (200 if not down else 503)

    @app.get("/metrics")
    def prometheus() -> Any:
        from prometheus_client import CONTENT_TYPE_LATEST

        body = metrics.render(current_app.extensions["gateway.metrics"])
        return Response(body, content_type=CONTENT_TYPE_LATEST)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        code = exc.code or 500
        message = exc.description or exc.name
        if request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json":
            resp = jsonify({"error": message})
        else:
            resp = current_app.make_response(render_template("error.html", code=code, message=message))
        resp.status_code = code
        allow = getattr(exc, "valid_methods", None)
        if allow:
            resp.headers["Allow"] = ", ".join(allow)
        return resp

    return app
