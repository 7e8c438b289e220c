"""OAuth2 for IMAP (SASL XOAUTH2): access tokens from a refresh token, and the authorization.

Gmail and Microsoft 365 accept OAuth2 where passwords are refused or need
app passwords. A mailbox names a client (``oauth2: {client_id, client_secret,
token_url, refresh_token | refresh_token_file}``; ``provider: gmail`` or
``outlook`` fills the URLs and the scope). ``AccessTokens`` trades the refresh
token for an access token at ``token_url`` (an ``httpx`` POST) and again
shortly before it expires. When the provider rotates the refresh token (it
returns a new one, as Microsoft does), the new one is kept in
``data_dir/oauth/<mailbox>.json`` (mode 0600) and used from then on, until
the configured token changes. ``authorize`` runs the authorization-code flow
with PKCE and a loopback redirect (``invoice-gateway oauth MAILBOX``).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import html
import json
import logging
import os
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import httpx

from gateway.config import MailboxConfig, OAuth2Config
from gateway.errors import MailboxError

log = logging.getLogger(__name__)

# refresh this long before the access token expires, so a poll never starts with a dying one
EXPIRY_MARGIN = 120.0


def xoauth2_string(user: str, access_token: str) -> str:
    """The SASL XOAUTH2 initial response (before base64): ``user=U^Aauth=Bearer T^A^A``."""
    return f"user={user}\x01auth=Bearer {access_token}\x01\x01"


def _digest(token: str | None) -> str | None:
    return None if token is None else hashlib.sha256(token.encode()).hexdigest()[:24]


def configured_refresh_token(name: str, cfg: OAuth2Config) -> str | None:
    """The refresh token gateway.yaml gives (``refresh_token`` or the file), or None."""
    if cfg.refresh_token:
        return cfg.refresh_token
    if cfg.refresh_token_file is not None:
        try:
            return cfg.refresh_token_file.read_text(encoding="utf-8").strip() or None
        except OSError as exc:
            raise MailboxError(f"mailbox {name!r}: cannot read oauth2.refresh_token_file {cfg.refresh_token_file}: "
                               f"{exc.strerror}", kind="oauth",
                               hint="check the path, or run `invoice-gateway oauth " + name + "`") from exc
    return None


class TokenFile:
    """The latest refresh token of one mailbox, in ``data_dir/oauth/<mailbox>.json`` (0600)."""

    def __init__(self, data_dir: Path, mailbox: str) -> None:
        self.dir = Path(data_dir) / "oauth"
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in mailbox)
        self.path = self.dir / f"{safe}.json"

    def load(self) -> dict[str, Any] | None:
        """The stored record (``refresh_token``, ``configured``, ``updated``), or None."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and data.get("refresh_token") else None

    def save(self, refresh_token: str, *, configured: str | None) -> None:
        """Store a refresh token durably, readable by this user only."""
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        record = {"refresh_token": refresh_token, "configured": _digest(configured),
                  "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(record, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)


def _token_error(name: str, url: str, resp: httpx.Response) -> MailboxError:
    try:
        body = resp.json()
    except ValueError:
        body = {}
    code = str(body.get("error") or f"HTTP {resp.status_code}") if isinstance(body, dict) else f"HTTP {resp.status_code}"
    desc = str(body.get("error_description") or "") if isinstance(body, dict) else ""
    host = urllib.parse.urlsplit(url).netloc
    detail = f"{code}: {desc}" if desc else code
    if code == "invalid_grant":
        return MailboxError(
            f"mailbox {name!r}: the OAuth2 refresh token was refused by {host} ({detail}); it expired or was revoked",
            kind="oauth_expired",
            hint=f"authorize again with `invoice-gateway oauth {name}`. Google expires refresh tokens of apps in "
                 "'Testing' status after 7 days; Microsoft after 90 days without use, or when the password changes.")
    if code in ("invalid_client", "unauthorized_client"):
        return MailboxError(f"mailbox {name!r}: {host} refused the OAuth2 client ({detail})", kind="oauth",
                            hint="check oauth2.client_id and oauth2.client_secret against the app registration")
    return MailboxError(f"mailbox {name!r}: the token endpoint {url} answered {detail}", kind="oauth",
                        hint="check oauth2.token_url and oauth2.scope")


def _post(name: str, url: str, form: dict[str, str], client: httpx.Client | None, timeout: float) -> dict[str, Any]:
    try:
        if client is not None:
            resp = client.post(url, data=form, headers={"Accept": "application/json"})
        else:
            resp = httpx.post(url, data=form, headers={"Accept": "application/json"}, timeout=timeout)
    except httpx.TimeoutException as exc:
        raise MailboxError(f"mailbox {name!r}: the token endpoint {url} did not answer within {timeout:.0f} s",
                           kind="timeout", hint="check the network; the next poll tries again") from exc
    except httpx.HTTPError as exc:
        raise MailboxError(f"mailbox {name!r}: cannot reach the token endpoint {url}: {exc}", kind="unreachable",
                           hint="check the network and oauth2.token_url") from exc
    if resp.status_code != 200:
        raise _token_error(name, url, resp)
    try:
        data = resp.json()
    except ValueError as exc:
        raise MailboxError(f"mailbox {name!r}: the token endpoint {url} did not answer JSON", kind="oauth",
                           hint="check oauth2.token_url") from exc
    if not isinstance(data, dict) or not data.get("access_token"):
        raise MailboxError(f"mailbox {name!r}: the token endpoint {url} gave no access_token", kind="oauth",
                           hint="check oauth2.token_url and oauth2.scope")
    return data


class AccessTokens:
    """A valid access token for one mailbox, refreshed when it (nearly) expires; thread-safe."""

    def __init__(self, mailbox: MailboxConfig, data_dir: Path, *, client: httpx.Client | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if mailbox.oauth2 is None:
            raise ValueError(f"mailbox {mailbox.name!r} has no oauth2 settings")
        self.name = mailbox.name
        self.cfg = mailbox.oauth2
        self.timeout = float(mailbox.timeout)
        self.file = TokenFile(data_dir, mailbox.name)
        self.client = client
        self.clock = clock
        self._token: str | None = None
        self._expires = 0.0
        self._lock = threading.Lock()
        self.refreshes = 0

    def refresh_token(self) -> str:
        """The refresh token in force: the stored (rotated) one unless gateway.yaml's changed since."""
        configured = configured_refresh_token(self.name, self.cfg)
        stored = self.file.load()
        if stored and (configured is None or stored.get("configured") == _digest(configured)):
            return str(stored["refresh_token"])
        if configured:
            return configured
        raise MailboxError(f"mailbox {self.name!r} has no OAuth2 refresh token yet", kind="oauth",
                           hint=f"run `invoice-gateway oauth {self.name}` once, or set oauth2.refresh_token_file")

    def get(self) -> str:
        """An access token valid for at least a couple of minutes."""
        with self._lock:
            if self._token is None or self.clock() >= self._expires - EXPIRY_MARGIN:
                self._refresh()
            assert self._token is not None
            return self._token

    def invalidate(self) -> None:
        """Forget the access token (the server refused it): the next ``get`` refreshes."""
        with self._lock:
            self._token = None

    def _refresh(self) -> None:
        refresh = self.refresh_token()
        form = {"grant_type": "refresh_token", "refresh_token": refresh, "client_id": self.cfg.client_id}
        if self.cfg.client_secret:
            form["client_secret"] = self.cfg.client_secret
        if self.cfg.scope:
            form["scope"] = self.cfg.scope
        assert self.cfg.token_url is not None
        data = _post(self.name, self.cfg.token_url, form, self.client, self.timeout)
        self._token = str(data["access_token"])
        try:
            self._expires = self.clock() + float(data.get("expires_in") or 3600)
        except (TypeError, ValueError):
            self._expires = self.clock() + 3600
        self.refreshes += 1
        rotated = data.get("refresh_token")
        if rotated and rotated != refresh:
            self.file.save(str(rotated), configured=configured_refresh_token(self.name, self.cfg))
            log.info("mailbox %s: the provider rotated the OAuth2 refresh token; the new one is kept in %s",
                     self.name, self.file.path)


# -- the authorization-code flow (invoice-gateway oauth MAILBOX) --------------------------------------------


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(64)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def authorization_url(cfg: OAuth2Config, *, redirect_uri: str, state: str, challenge: str,
                      login_hint: str | None = None) -> str:
    """The provider's consent page URL for the authorization-code flow with PKCE."""
    if not cfg.auth_url:
        raise MailboxError("oauth2.auth_url is not set (no provider preset gives it)", kind="oauth",
                           hint="set oauth2.auth_url to the provider's authorization endpoint")
    params = {"response_type": "code", "client_id": cfg.client_id, "redirect_uri": redirect_uri,
              "state": state, "code_challenge": challenge, "code_challenge_method": "S256"}
    if cfg.scope:
        params["scope"] = cfg.scope
    if login_hint:
        params["login_hint"] = login_hint
    if "accounts.google.com" in cfg.auth_url:
        # without these Google issues no refresh token on a second authorization
        params.update(access_type="offline", prompt="consent")
    sep = "&" if "?" in cfg.auth_url else "?"
    return cfg.auth_url + sep + urllib.parse.urlencode(params)


class _Redirect(BaseHTTPRequestHandler):
    """Takes the provider's redirect (``?code=...&state=...``) and keeps its query on the server."""

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
        if "code" not in query and "error" not in query:
            self.send_response(404)
            self.end_headers()
            return
        self.server.result = query  # type: ignore[attr-defined]
        ok = "code" in query
        text = ("Authorized. You can close this window and return to invoice-gateway." if ok else
                f"Authorization failed: {query.get('error')} {query.get('error_description', '')}")
        body = f"<!doctype html><title>invoice-gateway</title><p>{html.escape(text)}</p>".encode()
        self.send_response(200 if ok else 400)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        log.debug("oauth redirect: " + format, *args)


def authorize(mailbox: MailboxConfig, data_dir: Path, *, port: int = 0,
              open_browser: Callable[[str], object] | None = None, echo: Callable[[str], object] = print,
              timeout: float = 300, client: httpx.Client | None = None) -> str:
    """Run the authorization-code flow with a loopback redirect; store and return the refresh token.

    Prints the consent URL (and hands it to ``open_browser``), waits on
    ``127.0.0.1:port`` for the provider's redirect, checks ``state``, and
    trades the code (with the PKCE verifier) for tokens at ``token_url``.
    """
    cfg = mailbox.oauth2
    if cfg is None:
        raise MailboxError(f"mailbox {mailbox.name!r} has no oauth2 settings", kind="oauth",
                           hint="add oauth2: {client_id: ..., client_secret: ...} to the mailbox")
    verifier, challenge = _pkce()
    state = secrets.token_urlsafe(24)
    server = HTTPServer(("127.0.0.1", port), _Redirect)
    server.result = {}  # type: ignore[attr-defined]
    server.timeout = 0.5
    try:
        redirect_uri = f"http://127.0.0.1:{server.server_address[1]}/"
        url = authorization_url(cfg, redirect_uri=redirect_uri, state=state, challenge=challenge,
                                login_hint=mailbox.username)
        echo(f"Open this URL in a browser and allow access for {mailbox.username}:\n\n  {url}\n")
        echo(f"Waiting for the redirect to {redirect_uri} (up to {timeout:.0f} s) ...")
        if open_browser is not None:
            with contextlib.suppress(Exception):
                open_browser(url)
        deadline = time.monotonic() + timeout
        while not server.result and time.monotonic() < deadline:  # type: ignore[attr-defined]
            server.handle_request()
        result: dict[str, str] = server.result  # type: ignore[attr-defined]
    finally:
        server.server_close()
    if not result:
        raise MailboxError(f"no answer from the browser within {timeout:.0f} s", kind="oauth",
                           hint="open the URL on this machine, or forward the port (ssh -L)")
    if "error" in result:
        raise MailboxError(f"the provider refused the authorization: {result['error']} "
                           f"{result.get('error_description', '')}".strip(), kind="oauth",
                           hint="check the app registration: redirect URI http://127.0.0.1 (any port), scopes")
    if not secrets.compare_digest(result.get("state", ""), state):
        raise MailboxError("the redirect carried a wrong state; it was not the answer to this request",
                           kind="oauth", hint="run the command again")
    form = {"grant_type": "authorization_code", "code": result["code"], "redirect_uri": redirect_uri,
            "client_id": cfg.client_id, "code_verifier": verifier}
    if cfg.client_secret:
        form["client_secret"] = cfg.client_secret
    assert cfg.token_url is not None
    data = _post(mailbox.name, cfg.token_url, form, client, float(mailbox.timeout))
    refresh = data.get("refresh_token")
    if not refresh:
        raise MailboxError("the provider gave no refresh token", kind="oauth",
                           hint="Microsoft: add the offline_access scope; Google: revoke the app's access and retry")
    TokenFile(data_dir, mailbox.name).save(str(refresh), configured=configured_refresh_token(mailbox.name, cfg))
    return str(refresh)


def oauth_command(settings: Any, name: str, *, port: int = 0, browser: bool = True,
                  echo: Callable[[str], object] = print) -> int:
    """``invoice-gateway oauth MAILBOX``: authorize and store the refresh token; returns the exit code."""
    from gateway.errors import ConfigError

    try:
        mailbox = settings.mailbox(name)
    except ConfigError as exc:
        echo(f"error: {exc}")
        return 2
    if mailbox.oauth2 is None:
        echo(f"error: mailbox {name!r} has no oauth2 settings (client_id, client_secret; provider gmail or "
             "outlook fills the URLs)")
        return 2
    opener: Callable[[str], object] | None = None
    if browser:
        import webbrowser

        opener = webbrowser.open
    try:
        authorize(mailbox, settings.data_dir, port=port, open_browser=opener, echo=echo)
    except MailboxError as exc:
        echo(f"error: {exc}" + (f"\n  hint: {exc.hint}" if exc.hint else ""))
        return 1
    echo(f"mailbox {name}: authorized; the refresh token is stored in "
         f"{TokenFile(settings.data_dir, name).path} (mode 0600)")
    return 0
