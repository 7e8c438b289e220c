"""OAuth2 (XOAUTH2): a token endpoint run by the test, refresh and rotation, the loopback authorization,
and Dovecot's oauth2 passdb checking our access tokens against that endpoint (introspection)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import threading
import urllib.parse
from collections.abc import Iterator
from email import policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import base_config, make_mail, unique_pdf
from dovecot import Dovecot, dovecot_available


class TokenServer:
    """A tiny OAuth2 provider: /token (refresh_token and authorization_code grants) and /introspect (RFC 7662).

    Refresh tokens rotate on use when ``rotate`` is set (as Microsoft does): the old one is then invalid.
    """

    def __init__(self, *, rotate: bool = True, expires_in: int = 3600) -> None:
        self.rotate = rotate
        self.expires_in = expires_in
        self.refresh: dict[str, str] = {}  # refresh token -> user
        self.access: dict[str, str] = {}  # access token -> user
        self.codes: dict[str, tuple[str, str, str]] = {}  # code -> (user, code_challenge, redirect_uri)
        self.requests: list[dict[str, str]] = []
        self.introspections = 0
        self._n = 0
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                status, body = outer.handle(self.path, form)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def _new(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}-{self._n}-{os.urandom(6).hex()}"

    def issue_refresh(self, user: str) -> str:
        """A refresh token for ``user`` (what an earlier authorization left)."""
        with self._lock:
            token = self._new("rt")
            self.refresh[token] = user
            return token

    def handle(self, path: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            if path == "/introspect":
                self.introspections += 1
                user = self.access.get(form.get("token", ""))
                return 200, ({"active": True, "username": user} if user else {"active": False})
            self.requests.append(form)
            if form.get("client_id") != "gateway-client" or form.get("client_secret") != "s3cret":
                return 401, {"error": "invalid_client", "error_description": "unknown client"}
            grant = form.get("grant_type")
            if grant == "refresh_token":
                user = self.refresh.get(form.get("refresh_token", ""))
                if user is None:
                    return 400, {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}
                new_refresh = None
                if self.rotate:
                    del self.refresh[form["refresh_token"]]
                    new_refresh = self._new("rt")
                    self.refresh[new_refresh] = user
            elif grant == "authorization_code":
                entry = self.codes.pop(form.get("code", ""), None)
                if entry is None:
                    return 400, {"error": "invalid_grant", "error_description": "bad code"}
                user, challenge, redirect = entry
                verifier = form.get("code_verifier", "")
                digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
                if digest != challenge or form.get("redirect_uri") != redirect:
                    return 400, {"error": "invalid_grant", "error_description": "PKCE or redirect_uri mismatch"}
                new_refresh = self._new("rt")
                self.refresh[new_refresh] = user
            else:
                return 400, {"error": "unsupported_grant_type"}
            access = self._new("at")
            self.access[access] = user
            body: dict[str, Any] = {"access_token": access, "token_type": "Bearer", "expires_in": self.expires_in}
            if new_refresh:
                body["refresh_token"] = new_refresh
            return 200, body

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def provider() -> Iterator[TokenServer]:
    server = TokenServer()
    yield server
    server.close()


def mailbox_config(provider: TokenServer, user: str, refresh: str | None, **kw: Any) -> Any:
    from gateway.config import parse_settings

    oauth = {"client_id": "gateway-client", "client_secret": "s3cret", "token_url": f"{provider.url}/token",
             "auth_url": f"{provider.url}/authorize", "scope": "imap"}
    if refresh:
        oauth["refresh_token"] = refresh
    mb = {"name": "work", "host": "127.0.0.1", "port": kw.pop("port", 993), "security": "none", "username": user,
          "oauth2": oauth, "timeout": "5s", **kw}
    return parse_settings({"mailboxes": [mb], "exports": []}, env={}).mailboxes[0]


def test_xoauth2_initial_response() -> None:
    from gateway.oauth import xoauth2_string

    s = xoauth2_string("someuser@example.com", "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg")
    assert s == "user=someuser@example.com\x01auth=Bearer ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg\x01\x01"
    # the example of Google's XOAUTH2 documentation, base64 as sent on the wire
    assert base64.b64encode(s.encode()).decode() == (
        "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52YjNSbGNrQmhkSFJoZG1semRHRXVZMjl0Q2cBAQ==")


def test_access_tokens_refresh_rotate_persist_and_expire(provider: TokenServer, tmp_path: Path) -> None:
    from gateway.oauth import AccessTokens, TokenFile

    first_refresh = provider.issue_refresh("alice@example.test")
    mb = mailbox_config(provider, "alice@example.test", first_refresh)
    now = [1000.0]
    tokens = AccessTokens(mb, tmp_path, clock=lambda: now[0])
    a1 = tokens.get()
    assert provider.access[a1] == "alice@example.test"
    assert tokens.get() == a1 and tokens.refreshes == 1  # cached while valid

    # the provider rotated the refresh token: the new one is kept, private, and the old one is dead
    stored = TokenFile(tmp_path, "work")
    record = stored.load()
    assert record is not None and record["refresh_token"] != first_refresh
    assert record["refresh_token"] in provider.refresh and first_refresh not in provider.refresh
    assert stat.S_IMODE(stored.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(stored.dir.stat().st_mode) == 0o700

    now[0] += 3600 - 60  # within the safety margin before expiry: refreshed
    a2 = tokens.get()
    assert a2 != a1 and tokens.refreshes == 2

    # a restart reads the rotated token (the configured one no longer works)
    again = AccessTokens(mb, tmp_path)
    assert provider.access[again.get()] == "alice@example.test"
    assert provider.requests[-1]["refresh_token"] != first_refresh

    # a newly configured refresh token wins over the stored one
    fresh = provider.issue_refresh("alice@example.test")
    assert AccessTokens(mailbox_config(provider, "alice@example.test", fresh), tmp_path).refresh_token() == fresh


def test_an_expired_refresh_token_gives_a_clear_error(provider: TokenServer, tmp_path: Path) -> None:
    from gateway.errors import MailboxError
    from gateway.oauth import AccessTokens

    tokens = AccessTokens(mailbox_config(provider, "bob@example.test", "rt-revoked"), tmp_path)
    with pytest.raises(MailboxError) as info:
        tokens.get()
    err = info.value
    assert err.kind == "oauth_expired"
    assert "refresh token was refused" in str(err) and "Token has been expired or revoked" in str(err)
    assert "invoice-gateway oauth work" in (err.hint or "")

    no_token = AccessTokens(mailbox_config(provider, "bob@example.test", None), tmp_path)
    with pytest.raises(MailboxError, match="has no OAuth2 refresh token yet"):
        no_token.get()


def test_the_authorization_code_flow_with_a_loopback_redirect(provider: TokenServer, tmp_path: Path) -> None:
    from gateway.oauth import AccessTokens, TokenFile, authorize

    mb = mailbox_config(provider, "carol@example.test", None)
    seen: dict[str, str] = {}

    def browser(url: str) -> None:
        """The user consents; the provider redirects the browser to the loopback address."""
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
        seen.update(query)
        provider.codes["code-123"] = ("carol@example.test", query["code_challenge"], query["redirect_uri"])

        def redirect() -> None:
            target = f"{query['redirect_uri']}?code=code-123&state={urllib.parse.quote(query['state'])}"
            httpx.get(target.replace("/?", "/favicon.ico?x=1&").split("?")[0], timeout=5)  # noise first
            seen["page"] = httpx.get(target, timeout=5).text

        threading.Thread(target=redirect, daemon=True).start()

    printed: list[str] = []
    refresh = authorize(mb, tmp_path, open_browser=browser, echo=printed.append, timeout=20)
    assert seen["client_id"] == "gateway-client" and seen["code_challenge_method"] == "S256"
    assert seen["scope"] == "imap" and seen["login_hint"] == "carol@example.test"
    assert seen["redirect_uri"].startswith("http://127.0.0.1:")
    assert any(seen["redirect_uri"] in line for line in printed)
    assert "Authorized" in seen["page"]
    assert provider.refresh[refresh] == "carol@example.test"
    assert TokenFile(tmp_path, "work").load()["refresh_token"] == refresh  # type: ignore[index]
    # the poller can now get access tokens without anything in gateway.yaml
    assert provider.access[AccessTokens(mb, tmp_path).get()] == "carol@example.test"


def test_the_oauth_command_refuses_a_wrong_state(provider: TokenServer, workdir: Path) -> None:
    from gateway.config import parse_settings
    from gateway.oauth import oauth_command

    oauth = {"client_id": "gateway-client", "client_secret": "s3cret", "token_url": f"{provider.url}/token",
             "auth_url": f"{provider.url}/authorize"}
    settings = parse_settings(base_config(workdir, mailboxes=[
        {"name": "work", "host": "127.0.0.1", "username": "dave@example.test", "oauth2": oauth}]), base=workdir)
    lines: list[str] = []

    def echo(line: str) -> None:
        lines.append(line)
        if "http://127.0.0.1:" in line and "Waiting" in line:
            redirect = line.split("redirect to ", 1)[1].split(" ", 1)[0]
            threading.Thread(target=lambda: httpx.get(f"{redirect}?code=x&state=forged", timeout=5),
                             daemon=True).start()

    assert oauth_command(settings, "work", browser=False, echo=echo) == 1
    assert any("wrong state" in line for line in lines)
    assert oauth_command(settings, "nope", browser=False, echo=lines.append) == 2


def test_dovecot_accepts_our_xoauth2_login_by_introspecting_the_token(provider: TokenServer, workdir: Path) -> None:
    """End to end: refresh token -> access token -> SASL XOAUTH2 -> Dovecot asks our endpoint -> mail imported."""
    from gateway.config import parse_settings
    from gateway.pipeline import Pipeline
    from gateway.sources.imap import MailboxPoller
    from gateway.spool import Spool
    from gateway.store import Store

    with Dovecot(oauth2_introspection_url=f"{provider.url}/introspect") as dc:
        user = "erin@example.test"
        dc.write_maildir(user, "INBOX", [make_mail(
            subject="Rechnung 7", attachments=[("Rechnung_7.pdf", unique_pdf("oauth"), "application/pdf")]
        ).as_bytes(policy=policy.SMTP)])
        refresh = provider.issue_refresh(user)
        oauth = {"client_id": "gateway-client", "client_secret": "s3cret", "token_url": f"{provider.url}/token",
                 "refresh_token": refresh}
        cfg = base_config(workdir, mailboxes=[{"name": "work", "host": "127.0.0.1", "port": dc.port,
                                               "security": "none", "username": user, "oauth2": oauth}])
        settings = parse_settings(cfg, base=workdir)
        store = Store(settings.data_dir)
        pipeline = Pipeline(settings, store)
        poller = MailboxPoller(settings.mailboxes[0], store=store, spool=Spool(store), settings=settings,
                               process=lambda ids: pipeline.run_pending())
        result = poller.poll()
        assert result.error is None, result.error
        assert result.downloaded == 1 and result.imported == 1
        assert provider.introspections >= 1
        assert "method=XOAUTH2" in dc.log()

        # the provider revokes every access token: the gateway fetches a fresh one and logs in again
        provider.access.clear()
        assert poller.poll().error is None
        # and when the refresh token dies as well, the mailbox says what to do
        provider.access.clear()
        provider.refresh.clear()
        assert poller.tokens is not None
        poller.tokens.invalidate()
        err = poller.poll().error
        assert err is not None and err.kind == "oauth_expired"
        status = store.mailbox_status("work")
        assert status["error_kind"] == "oauth_expired" and "invoice-gateway oauth work" in status["hint"]
