"""SMTP AUTH: the password check, and the brake on guessing (``smtp.limits``, docs/security.md).

Each failed AUTH from a client address (IPv6: its /64) makes that client's
next AUTH wait ``auth_delay`` longer, in its own session or any other (the
wait is an ``asyncio.sleep`` before the attempt is read, so no other client
waits). After ``auth_failures_per_ip`` failures within
``auth_failure_window`` the address gets ``454`` without its password being
checked, the right one included, until the oldest failure is that old: a
lockout bounded by the window and limited to the one address, so a stranger
cannot lock out the real client for long, nor from anywhere else.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Mapping
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope as SMTPEnvelope, LoginPassword, Session

from gateway.config import SMTPLimits
from gateway.ratelimit import FailureLimiter, client_key

log = logging.getLogger(__name__)

MAX_DELAY = 30.0  # seconds; also without a lockout (auth_failures_per_ip: 0)


class AuthThrottle:
    """Failed SMTP AUTH per client address: the wait before its next attempt, and the lockout."""

    def __init__(self, limits: SMTPLimits, clock: Callable[[], float] | None = None) -> None:
        kw = {"clock": clock} if clock is not None else {}
        self.failures = FailureLimiter(limits.auth_failures_per_ip, limits.auth_failure_window, **kw)
        self.delay = limits.auth_delay

    def wait(self, ip: str) -> float:
        """Seconds ``ip`` must still wait before its next attempt is read (0 when locked out: refused at once)."""
        if self.failures.retry_after(ip):
            return 0.0
        last = self.failures.last_failure(ip)
        if last is None or not self.delay:
            return 0.0
        due = last + min(self.delay * self.failures.failures(ip), MAX_DELAY)
        return max(0.0, due - self.failures.clock())

    def refusal(self, ip: str) -> str | None:
        """The ``454`` reply while ``ip`` is locked out, else None."""
        wait = self.failures.retry_after(ip)
        if not wait:
            return None
        minutes = max(1, int(wait + 59) // 60)
        return (f"454 4.7.0 Too many failed authentications from {client_key(ip)}; "
                f"try again in {minutes} minute{'s' if minutes > 1 else ''}")

    def failed(self, ip: str) -> None:
        """Count a failed attempt of ``ip``; log when it locks the address out."""
        count = self.failures.failed(ip)
        if self.failures.limit and count == self.failures.limit:
            log.warning("SMTP AUTH: %d failures from %s within %d s; AUTH from that address is refused (454) "
                        "for up to %d s", count, client_key(ip), self.failures.window, self.failures.window)


def peer_ip(peer: Any) -> str:
    """The client's IP address from aiosmtpd's ``session.peer``."""
    return str(peer[0]) if isinstance(peer, tuple) and peer else str(peer)


def authenticator(users: Mapping[str, str], throttle: AuthThrottle) -> Any:
    """An aiosmtpd authenticator for PLAIN and LOGIN against ``users``, refusing locked-out clients."""
    known = {name: secret.encode("utf-8") for name, secret in users.items()}

    def authenticate(server: SMTP, session: Session, envelope: SMTPEnvelope, mechanism: str,
                     auth_data: Any) -> AuthResult:
        if mechanism not in ("PLAIN", "LOGIN") or not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        ip = peer_ip(session.peer)
        # checked here too, not only before the attempt: sessions that started their attempts
        # together must not get more guesses than the limit between them
        refusal = throttle.refusal(ip)
        if refusal is not None:
            return AuthResult(success=False, handled=False, message=refusal)
        user = auth_data.login.decode("utf-8", "replace")
        expected = known.get(user)
        # compare in constant time, also for unknown users
        ok = hmac.compare_digest(auth_data.password, expected if expected is not None else b"\0" * 32)
        ok = ok and expected is not None
        if not ok:
            log.warning("SMTP AUTH %s failed for %r from %s", mechanism, user, session.peer)
            throttle.failed(ip)
        return AuthResult(success=ok, handled=False, auth_data=user if ok else None)

    return authenticate
