"""Access to the admin page and the API: login, sessions, CSRF, rate limit, the generated password."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import API_TOKEN, Gateway, base_config, free_port
from test_web_pages import PASSWORD, Browserless

PUBLIC = {"/login", "/healthz"}


SAMPLE = {"message_id": 1, "document_id": 1, "export_id": 1, "name": "nas", "size": "thumb", "file": "acme.yaml",
          "page": 2, "supplier_id": 1}


def _routes(gw: Gateway) -> list[tuple[str, str]]:
    """Every route of the app as (method, a concrete path with made-up values)."""
    app = gw.service.web.app
    urls = app.url_map.bind("localhost")
    out = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = urls.build(rule.endpoint, {a: SAMPLE[a] for a in rule.arguments})
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            out.append((method, path.split("?")[0]))
    return out


def test_every_page_and_api_route_needs_a_session_or_the_token(gateway: Gateway) -> None:
    base = f"http://127.0.0.1:{gateway.web_port}"
    routes = _routes(gateway)
    assert len(routes) > 40
    pages = api = 0
    http = httpx.Client(base_url=base)
    for method, path in routes:
        if path in PUBLIC:
            continue
        for headers in ({}, {"Authorization": "Bearer wrong-token"}, {"Cookie": "gateway_session=forged"}):
            r = http.request(method, path, headers=headers)
            if path.startswith("/api/") or path == "/metrics":
                assert r.status_code == 401, (method, path, r.status_code)
                assert r.json()["error"].startswith("unauthorized")
                api += 1
            else:
                assert r.status_code == 302, (method, path, r.status_code)
                assert r.headers["location"].startswith("/login?next="), (method, path)
                pages += 1
    assert pages > 50 and api > 50
    http.close()
    # the token opens the API and /metrics, never the pages
    assert httpx.get(base + "/api/status", headers={"Authorization": f"Bearer {API_TOKEN}"}).status_code == 200
    assert httpx.get(base + "/metrics", headers={"Authorization": f"Bearer {API_TOKEN}"}).status_code == 200
    assert httpx.get(base + "/", headers={"Authorization": f"Bearer {API_TOKEN}"}).status_code == 302
    assert httpx.get(base + "/healthz").status_code == 200
    assert httpx.get(base + "/static/app.css").status_code == 200


def test_login_session_cookie_and_logout(gateway: Gateway) -> None:
    c = Browserless(gateway)
    page = c.get("/login").text
    assert re.search(r'<input type="password" id="password" name="password"', page)
    r = c.login("not-the-password")
    assert r.status_code == 401 and "Wrong password." in r.text
    r = c.login()
    assert r.status_code == 302 and r.headers["location"] == "/"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    assert c.get("/").status_code == 200
    assert c.get("/login").status_code == 302  # already logged in
    stolen = dict(c.http.cookies)
    r = c.post("/logout")
    assert r.status_code == 302 and r.headers["location"] == "/login"
    assert c.get("/").status_code == 302
    # the old cookie is worthless after logout: the session id was revoked on the server
    replay = httpx.get(f"{c.base}/", cookies=stolen)
    assert replay.status_code == 302
    c.close()


def test_login_goes_back_to_the_page_asked_for_but_never_off_site(gateway: Gateway) -> None:
    c = Browserless(gateway)
    r = c.get("/messages?status=unmatched")
    assert r.headers["location"] == "/login?next=/messages?status%3Dunmatched"
    for target, expected in (("/messages?status=unmatched", "/messages?status=unmatched"),
                             ("//evil.example/", "/"), ("https://evil.example/", "/"), ("/\\evil", "/")):
        c.http.cookies.clear()
        token = c.csrf("/login")
        r = c.http.post("/login", data={"csrf_token": token, "password": PASSWORD, "next": target})
        assert r.headers["location"] == expected, target
    c.close()


def test_posts_without_the_csrf_token_are_refused(gateway: Gateway) -> None:
    c = Browserless(gateway)
    # the login form itself is protected
    c.get("/login")
    r = c.http.post("/login", data={"password": PASSWORD})
    assert r.status_code == 400 and "CSRF" in r.text
    assert c.login().status_code == 302
    unsafe = [(m, p) for m, p in _routes(gateway) if m not in ("GET", "HEAD", "OPTIONS")]
    assert len(unsafe) > 20 and ("POST", "/logout") in unsafe and ("POST", "/api/documents/1/approve") in unsafe
    assert ("POST", "/documents/approve") in unsafe and ("POST", "/api/documents/approve") in unsafe  # bulk approve
    wrong = "0" * 64
    for method, path in unsafe:
        expected = 400 if path == "/login" else 403
        attempts = [
            c.http.request(method, path),  # no token at all
            c.http.request(method, path, data={"csrf_token": wrong}),  # a form with a wrong token
            c.http.request(method, path, headers={"X-CSRF-Token": wrong}),  # the pages' API calls: wrong header
            c.http.request(method, path, json={"csrf_token": c.csrf()}),  # the token only in a JSON body
        ]
        for r in attempts:
            assert r.status_code == expected, (method, path, r.status_code)
            assert "CSRF" in (r.json()["error"] if path.startswith("/api/") else r.text), (method, path)
    # the pages' own API calls need the header
    assert c.http.post("/api/exports/nas/run").status_code == 403
    assert c.http.post("/api/exports/nas/run", headers={"X-CSRF-Token": "nope"}).status_code == 403
    assert c.api_post("/api/exports/nas/run").status_code == 202
    # a form posted from another site is refused even with a token
    r = c.http.post("/exports/nas/run", data={"csrf_token": c.csrf()}, headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403
    # the bearer token is no ambient credential: no CSRF token needed
    r = httpx.post(f"{c.base}/api/exports/nas/run", headers={"Authorization": f"Bearer {API_TOKEN}"})
    assert r.status_code == 202
    assert c.get("/").status_code == 200  # still logged in: nothing above logged us out
    c.close()


HUGE = 99999999999999999999999  # past SQLite's 64-bit integers


def test_an_id_out_of_range_is_404_on_every_route(gateway: Gateway) -> None:
    """Every route with an integer in its URL, each method, logged in (pages) or with the token (API):
    an id no row can have is 404, never 500 (it was 500: SQLite cannot even take it)."""
    app = gateway.service.web.app
    urls = app.url_map.bind("localhost")
    c = Browserless(gateway)
    assert c.login().status_code == 302
    token = {"Authorization": f"Bearer {API_TOKEN}"}
    csrf = c.csrf()
    seen = 0
    for rule in app.url_map.iter_rules():
        ints = set(re.findall(r"<int:(\w+)>", rule.rule))
        if not ints:
            continue
        for huge in (HUGE, 2**63):  # 2**63: the first past the largest rowid
            path = urls.build(rule.endpoint, {a: huge if a in ints else SAMPLE[a] for a in rule.arguments})
            for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
                if path.startswith("/api/"):
                    r = httpx.request(method, f"{c.base}{path}", headers=token, json={} if method != "GET" else None)
                elif method == "GET":
                    r = c.get(path)
                else:
                    r = c.post(path, {"csrf_token": csrf}, token=False)
                assert r.status_code == 404, (method, path, r.status_code, r.text[:300])
                seen += 1
    assert seen >= 2 * 20
    # ids in a query or a body are no different
    api = f"{c.base}/api"
    assert httpx.post(f"{api}/rules/test", headers=token, json={"message": HUGE}).status_code == 404
    assert httpx.post(f"{api}/exports/nas/retry", headers=token, json={"ids": [HUGE]}).status_code == 404
    r = c.get(f"/rules/test?message={HUGE}")  # the tester page shows its form errors with 400
    assert r.status_code == 400 and f"there is no message {HUGE}" in r.text
    # and an offset past any table is an empty page
    r = httpx.get(f"{api}/messages?offset={HUGE}", headers=token)
    assert r.status_code == 200 and r.json()["items"] == []
    assert httpx.get(f"{api}/documents?offset={HUGE}", headers=token).json()["items"] == []
    assert c.get(f"/messages?offset={HUGE}").status_code == 200 and c.get(f"/documents?offset={HUGE}").status_code == 200
    c.close()


def test_failed_logins_are_rate_limited(gateway: Gateway) -> None:
    c = Browserless(gateway)
    for _ in range(5):
        assert c.login("guess").status_code == 401
    r = c.login()  # even the right password waits now
    assert r.status_code == 429 and "Too many failed attempts" in r.text
    assert int(r.headers["Retry-After"]) > 60
    c.close()


def _logins_from(url: str, source: str, passwords: list[str], forwarded_for: str | None = None) -> list[int]:
    """Log in with each password over a real connection from ``source`` (a loopback address); the statuses."""
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    with httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=30, headers=headers) as c:
        page = c.get(url).text
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
        return [c.post(url, data={"csrf_token": token, "password": pw, "next": "/"}).status_code for pw in passwords]


def test_failed_logins_from_elsewhere_never_lock_out_the_admin(gateway_factory: Any) -> None:
    """35 wrong passwords from 7 addresses (5 each) used to lock out everyone for 15 minutes (30 overall)."""
    gw = gateway_factory(web={"listen": f"127.0.0.1:{free_port()}", "password": PASSWORD})
    url = f"http://127.0.0.1:{gw.web_port}/login"
    for n in range(2, 9):
        # each stranger is limited (429 also for the right password), each on its own
        assert _logins_from(url, f"127.0.0.{n}", ["guess"] * 5 + [PASSWORD]) == [401] * 5 + [429]
    assert _logins_from(url, "127.0.0.1", [PASSWORD]) == [302]  # the admin is not
    # behind a trusted proxy the same holds per forwarded address
    gw = gateway_factory(web={"listen": f"127.0.0.1:{free_port()}", "password": PASSWORD, "trusted_proxy": "127.0.0.1"})
    url = f"http://127.0.0.1:{gw.web_port}/login"
    for n in range(7):
        assert _logins_from(url, "127.0.0.1", ["guess"] * 5 + [PASSWORD], f"203.0.113.{n}") == [401] * 5 + [429]
    assert _logins_from(url, "127.0.0.1", [PASSWORD], "198.51.100.2") == [302]


def test_login_limit_is_bounded_and_per_client() -> None:
    """The lockout ends when the oldest failure is 15 minutes old; IPv6 clients count per /64."""
    from web.auth import LoginLimiter

    now = [1000.0]
    limiter = LoginLimiter(clock=lambda: now[0])
    for _ in range(5):
        limiter.failed("2001:db8:1:2::10")
        now[0] += 10
    assert limiter.retry_after("2001:db8:1:2::99") == 900 - 50  # the same /64
    assert limiter.retry_after("2001:db8:1:3::10") == 0 and limiter.retry_after("192.0.2.1") == 0
    now[0] += 850
    assert limiter.retry_after("2001:db8:1:2::10") == 0  # bounded: the oldest failure left the window


def test_security_headers(gateway: Gateway) -> None:
    c = Browserless(gateway)
    c.login()
    for path in ("/", "/login", "/api/status"):
        h = c.get(path).headers
        assert "default-src 'self'" in h["Content-Security-Policy"] and "frame-ancestors 'none'" in h[
            "Content-Security-Policy"]
        assert h["X-Content-Type-Options"] == "nosniff" and h["X-Frame-Options"] == "DENY"
        assert h["Cache-Control"] == "no-store"
    assert "max-age" in c.get("/static/app.css").headers["Cache-Control"]
    c.close()


def test_secure_cookies_when_asked(gateway_factory: Any) -> None:
    gw = gateway_factory(web={"listen": f"127.0.0.1:{free_port()}", "password": PASSWORD, "secure_cookies": True})
    r = httpx.get(f"http://127.0.0.1:{gw.web_port}/login")
    assert "Secure" in r.headers["set-cookie"] and "HttpOnly" in r.headers["set-cookie"]


def test_behind_a_trusted_proxy_its_forwarded_headers_count_and_no_one_elses(gateway_factory: Any) -> None:
    gw = gateway_factory(web={"listen": f"127.0.0.1:{free_port()}", "password": PASSWORD,
                              "trusted_proxy": "127.0.0.1"})
    url = f"http://127.0.0.1:{gw.web_port}/login"
    proxy = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.1"))
    other = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"))  # another host
    https = {"X-Forwarded-Proto": "https"}
    assert "Secure" in proxy.get(url, headers=https).headers["set-cookie"]
    assert "Secure" not in proxy.get(url).headers["set-cookie"]  # the proxy says plain http
    assert "Secure" not in other.get(url, headers=https).headers["set-cookie"]

    def login(client: httpx.Client, password: str, forwarded_for: str) -> int:
        client.cookies.clear()
        page = client.get(url, headers={"X-Forwarded-For": forwarded_for}).text
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
        return client.post(url, data={"csrf_token": token, "password": password, "next": "/"},
                           headers={"X-Forwarded-For": forwarded_for}).status_code

    # the rate limit is per client behind the proxy, not per proxy
    for _ in range(5):
        assert login(proxy, "guess", "203.0.113.7") == 401
    assert login(proxy, PASSWORD, "203.0.113.7") == 429
    assert login(proxy, PASSWORD, "198.51.100.2") == 302
    # a host that is not the proxy cannot pick its address with the header
    for n in range(5):
        assert login(other, "guess", f"192.0.2.{n}") == 401
    assert login(other, PASSWORD, "192.0.2.99") == 429
    proxy.close()
    other.close()


def test_without_a_trusted_proxy_forwarded_headers_are_ignored(gateway_factory: Any) -> None:
    gw = gateway_factory(web={"listen": f"127.0.0.1:{free_port()}", "password": PASSWORD})
    r = httpx.get(f"http://127.0.0.1:{gw.web_port}/login", headers={"X-Forwarded-Proto": "https"})
    assert "Secure" not in r.headers["set-cookie"] and "HttpOnly" in r.headers["set-cookie"]


def test_trusted_proxy_must_be_an_address(workdir: Path) -> None:
    from gateway.config import parse_settings
    from gateway.errors import ConfigError

    with pytest.raises(ConfigError, match=r"web\.trusted_proxy: 'proxy\.lan' is not an IP address"):
        parse_settings(base_config(workdir, web={"trusted_proxy": "proxy.lan"}), base=workdir)


def test_generated_password_is_logged_once_and_stored_hashed(gateway_factory: Any, workdir: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="web.auth")
    gw = gateway_factory(web={"listen": f"127.0.0.1:{free_port()}", "api_token": API_TOKEN})
    lines = [r.getMessage() for r in caplog.records if "admin page password" in r.getMessage()]
    assert len(lines) == 1
    password = re.search(r"shown only this once\): (\S+)", lines[0]).group(1)  # type: ignore[union-attr]
    stored = (workdir / "data" / "web" / "admin-password").read_text()
    assert password not in stored and stored.startswith(("scrypt:", "pbkdf2:"))
    assert (workdir / "data" / "web" / "admin-password").stat().st_mode & 0o077 == 0
    c = Browserless(gw)
    assert c.login(password).status_code == 302
    c.close()
    gw.stop()
    caplog.clear()
    again = gateway_factory(web={"listen": f"127.0.0.1:{free_port()}", "api_token": API_TOKEN})
    assert not [r for r in caplog.records if "admin page password" in r.getMessage()]
    c = Browserless(again)
    assert c.login(password).status_code == 302  # the same password after a restart
    assert c.get("/").status_code == 200
    c.close()


def test_sessions_survive_a_restart_but_not_a_new_password(gateway_factory: Any, workdir: Path) -> None:
    gw = gateway_factory()
    c = Browserless(gw)
    c.login()
    cookies = dict(c.http.cookies)
    c.close()
    gw.stop()
    same = gateway_factory()
    assert httpx.get(f"http://127.0.0.1:{same.web_port}/", cookies=cookies).status_code == 200
    same.stop()
    changed = gateway_factory(web={"listen": f"127.0.0.1:{free_port()}", "password": "a-new-password",
                                   "api_token": API_TOKEN})
    assert httpx.get(f"http://127.0.0.1:{changed.web_port}/", cookies=cookies).status_code == 302
