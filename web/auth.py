"""One admin: password, sessions, CSRF tokens and the login rate limit.

Design (docs/admin.md, "Security"):

- The password comes from ``web.password`` (or ``password_file``); a value
  that starts with ``scrypt:`` or ``pbkdf2:`` is taken as a hash. With none
  set, one is generated at first start, stored hashed in
  ``data_dir/web/admin-password`` and logged once.
- The session is Flask's signed cookie (HttpOnly, SameSite=Lax, Secure with
  ``web.secure_cookies`` or on https) that carries a random session id; the
  gateway keeps the ids it issued (hashed, in the store), so logout and a
  changed password really end a session.
- CSRF: a form's token is an HMAC of the session id under the app's secret
  key; every POST from a session (form field ``csrf_token`` or header
  ``X-CSRF-Token``) must carry it. Bearer-token API calls need none.
- Failed logins are limited per client address (IPv6: per /64), never overall,
  so nobody else can lock the admin out.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import os
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from werkzeug.security import check_password_hash, generate_password_hash

from gateway.ratelimit import FailureLimiter

log = logging.getLogger(__name__)

SESSION_LIFETIME = 7 * 24 * 3600
HASH_PREFIXES = ("scrypt:", "pbkdf2:")


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def secret_key(data_dir: Path) -> bytes:
    """The key that signs session cookies and CSRF tokens (made once, kept in data_dir)."""
    path = data_dir / "web" / "secret-key"
    try:
        key = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        key = secrets.token_hex(32)
        _write_private(path, key + "\n")
    return key.encode()


class Password:
    """Checks the admin password (plain from the config, or a stored hash)."""

    def __init__(self, configured: str | None, data_dir: Path) -> None:
        self.generated = False
        self._plain: str | None = None
        self._hash: str | None = None
        if configured and configured.startswith(HASH_PREFIXES):
            self._hash = configured
        elif configured:
            self._plain = configured
        else:
            self._hash = self._stored_or_generated(data_dir / "web" / "admin-password")

    def _stored_or_generated(self, path: Path) -> str:
        try:
            stored = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            stored = ""
        if stored:
            return stored
        password = secrets.token_urlsafe(12)
        hashed = generate_password_hash(password)
        _write_private(path, hashed + "\n")
        self.generated = True
        # printed once: only the hash is kept, so this line is the only copy
        log.warning("admin page password (generated, shown only this once): %s  -- set web.password to "
                    "choose your own, or delete %s and restart to get a new one", password, path)
        return hashed

    @property
    def fingerprint(self) -> str:
        """Changes when the password changes (ends the sessions of the old one)."""
        basis = self._hash if self._hash is not None else "plain:" + (self._plain or "")
        return hashlib.sha256(basis.encode()).hexdigest()[:16]

    def check(self, given: str) -> bool:
        """Whether ``given`` is the password (constant time for plain ones)."""
        if self._plain is not None:
            return hmac.compare_digest(given.encode(), self._plain.encode())
        return self._hash is not None and check_password_hash(self._hash, given)


class Sessions:
    """The session ids issued, hashed, persisted in the store's key/value table."""

    KEY = "web.sessions"

    def __init__(self, store: Any, fingerprint: str, lifetime: int = SESSION_LIFETIME) -> None:
        self.store = store
        self.fingerprint = fingerprint
        self.lifetime = lifetime
        self._lock = threading.Lock()
        saved = store.get_kv(self.KEY, {}) or {}
        now = time.time()
        self._ids: dict[str, float] = {}
        if saved.get("password") == fingerprint:
            self._ids = {k: float(v) for k, v in (saved.get("ids") or {}).items() if float(v) > now}

    @staticmethod
    def _h(sid: str) -> str:
        return hashlib.sha256(sid.encode()).hexdigest()

    def _save(self) -> None:
        self.store.set_kv(self.KEY, {"password": self.fingerprint, "ids": self._ids})

    def issue(self) -> str:
        """A new session id, valid for the lifetime."""
        sid = secrets.token_urlsafe(32)
        now = time.time()
        with self._lock:
            self._ids = {k: v for k, v in self._ids.items() if v > now}
            self._ids[self._h(sid)] = now + self.lifetime
            self._save()
        return sid

    def valid(self, sid: str | None) -> bool:
        """Whether ``sid`` was issued and has not expired or been revoked."""
        if not sid:
            return False
        expires = self._ids.get(self._h(sid))
        return expires is not None and expires > time.time()

    def revoke(self, sid: str | None) -> None:
        """End one session."""
        if not sid:
            return
        with self._lock:
            if self._ids.pop(self._h(sid), None) is not None:
                self._save()


class LoginLimiter:
    """Failed logins: at most ``per_client`` per client address per ``window`` seconds.

    Per client only (IPv6: per /64), never overall: failures from anywhere
    else must not lock out the admin's own browser (gateway.ratelimit).
    """

    def __init__(self, per_client: int = 5, window: float = 900.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.failures = FailureLimiter(per_client, window, clock)

    def retry_after(self, client: str) -> int:
        """Whole seconds until ``client`` may try again (0: now)."""
        wait = self.failures.retry_after(client)
        return max(1, math.ceil(wait)) if wait else 0

    def failed(self, client: str) -> None:
        """Record a failed attempt."""
        self.failures.failed(client)

    def succeeded(self, client: str) -> None:
        """Forget a client's failures after it logged in."""
        self.failures.forget(client)


def csrf_token(key: bytes, sid: str) -> str:
    """The CSRF token of a session."""
    return hmac.new(key, b"csrf:" + sid.encode(), hashlib.sha256).hexdigest()


def csrf_ok(key: bytes, sid: str | None, given: str | None) -> bool:
    """Whether ``given`` is the CSRF token of session ``sid``."""
    if not sid or not given:
        return False
    return hmac.compare_digest(csrf_token(key, sid), given)


def safe_next(target: str | None) -> str:
    """A same-site path to go to after login (anything else: the dashboard)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    if any(ord(c) < 32 for c in target):
        return "/"
    return target
