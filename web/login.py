"""Login, logout, and the guard every request passes (session or token, CSRF)."""

from __future__ import annotations

import hmac
import secrets
from typing import Any

from flask import (
    Blueprint,
    Flask,
    current_app,
    g,
    has_request_context,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSessionInterface
from werkzeug.wrappers import Response

from web.auth import LoginLimiter, Password, Sessions, csrf_ok, csrf_token, safe_next

bp = Blueprint("login", __name__)

PUBLIC = {"login.login", "login.login_post", "static", "healthz"}
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


class Gate:
    """The admin's password, the sessions issued, and the login limiter of one app."""

    def __init__(self, service: Any) -> None:
        self.service = service
        self.password = Password(service.settings.web.password, service.settings.data_dir)
        self.sessions = Sessions(service.store, self.password.fingerprint)
        self.limiter = LoginLimiter()

    def token_ok(self) -> bool:
        """Whether the request carries the API token as ``Authorization: Bearer``."""
        token = self.service.settings.web.api_token
        header = request.headers.get("Authorization", "")
        given = header[7:].strip() if header[:7].lower() == "bearer " else ""
        return bool(token) and bool(given) and hmac.compare_digest(given.encode(), str(token).encode())


class SessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie session, Secure also when the request came over https."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"]) or (has_request_context() and request.is_secure)


def gate() -> Gate:
    """The app's Gate."""
    result: Gate = current_app.extensions["gateway.gate"]
    return result


def current_csrf() -> str:
    """The CSRF token for forms of this session (a pre-login one on the login page)."""
    sid = session.get("sid")
    if sid and gate().sessions.valid(sid):
        return csrf_token(current_app.secret_key, sid)  # type: ignore[arg-type]
    pre = session.get("pre")
    if not pre:
        pre = session["pre"] = secrets.token_urlsafe(16)
    return csrf_token(current_app.secret_key, "pre:" + pre)  # type: ignore[arg-type]


def _api_like() -> bool:
    return request.path.startswith("/api/") or request.path in ("/api", "/metrics")


def _refuse(status: int, message: str) -> Response:
    if _api_like() or request.accept_mimetypes.best == "application/json":
        resp = jsonify({"error": message})
    else:
        resp = current_app.make_response((render_template("error.html", code=status, message=message), status))
    resp.status_code = status
    return resp


def guard() -> Response | None:
    """Runs before every request: who is asking, and may they."""
    g.auth = None
    if gate().sessions.valid(session.get("sid")):
        g.auth = "session"
    elif _api_like() and gate().token_ok():
        g.auth = "token"
    endpoint = request.endpoint or ""
    if endpoint not in PUBLIC and g.auth is None:
        if _api_like():
            resp = jsonify({"error": "unauthorized: send Authorization: Bearer <web.api_token>, or log in"})
            resp.status_code = 401
            resp.headers["WWW-Authenticate"] = 'Bearer realm="invoice-gateway"'
            return resp
        return redirect(url_for("login.login", next=request.full_path.rstrip("?")))
    if request.method not in SAFE_METHODS and g.auth != "token":
        if request.headers.get("Sec-Fetch-Site") == "cross-site":
            return _refuse(403, "refused: the request came from another site")
        given = request.headers.get("X-CSRF-Token")
        if given is None and request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
            given = request.form.get("csrf_token")
        if g.auth == "session":
            sid = session.get("sid")
        else:
            sid = "pre:" + session["pre"] if session.get("pre") else None
        if not csrf_ok(current_app.secret_key, sid, given):  # type: ignore[arg-type]
            return _refuse(400 if endpoint == "login.login_post" else 403,
                           "the form has expired or is not from this page (CSRF check failed); "
                           "reload the page and try again")
    return None


@bp.get("/login")
def login() -> Any:
    """The login form."""
    if g.auth == "session":
        return redirect(safe_next(request.args.get("next")))
    return render_template("login.html", next=safe_next(request.args.get("next")), error=None)


@bp.post("/login")
def login_post() -> Any:
    """Check the password; on success a new session starts."""
    gt = gate()
    client = request.remote_addr or "?"
    nxt = safe_next(request.form.get("next"))
    wait = gt.limiter.retry_after(client)
    if wait:
        resp = current_app.make_response((render_template(
            "login.html", next=nxt, error=f"Too many failed attempts. Try again in {(wait + 59) // 60} minute(s)."),
            429))
        resp.headers["Retry-After"] = str(wait)
        return resp
    if not gt.password.check(request.form.get("password", "")):
        gt.limiter.failed(client)
        current_app.logger.warning("failed admin login from %s", client)
        return render_template("login.html", next=nxt, error="Wrong password."), 401
    gt.limiter.succeeded(client)
    session.clear()
    session["sid"] = gt.sessions.issue()
    session.permanent = True
    return redirect(nxt)


@bp.post("/logout")
def logout() -> Any:
    """End the session."""
    gate().sessions.revoke(session.get("sid"))
    session.clear()
    return redirect(url_for("login.login"))
