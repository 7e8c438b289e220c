"""SMTP AUTH guessing is slowed down and cut off per client address, over real sockets (smtplib).

It used to be unlimited: 60 wrong passwords over 4 sessions, each answered 535
in 0.03 s, then the right one accepted at once.
"""

from __future__ import annotations

import smtplib
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import Gateway, make_mail, unique_pdf
from gateway.config import SMTPLimits
from gateway.sources.smtp_auth import MAX_DELAY, AuthThrottle
from test_trust_smtp import PASSWORD, cert, client_ctx, smtp_cfg  # noqa: F401  (cert is a fixture)

DELAY = 0.4
LIMIT = 4


def _session(gw: Gateway, cert: tuple[Path, Path], source: str = "127.0.0.1") -> smtplib.SMTP:
    s = smtplib.SMTP("127.0.0.1", gw.smtp_port, timeout=30, source_address=(source, 0))
    s.ehlo("client.test")
    s.starttls(context=client_ctx(cert))
    s.ehlo("client.test")
    return s


def _auth(s: smtplib.SMTP, password: str) -> tuple[int, str, float]:
    """One AUTH PLAIN attempt (smtplib's login() would try LOGIN too): code, reply, seconds it took."""
    s.user, s.password = "scanner", password
    start = time.monotonic()
    try:
        code, reply = s.auth("PLAIN", s.auth_plain)
    except smtplib.SMTPAuthenticationError as exc:
        code, reply = exc.smtp_code, exc.smtp_error
    return code, reply.decode(), time.monotonic() - start


def test_auth_failures_slow_down_then_lock_out_only_that_address(gateway_factory: Callable[..., Gateway],
                                                                   cert: tuple[Path, Path]) -> None:
    limits = {"auth_failures_per_ip": LIMIT, "auth_failure_window": "10m", "auth_delay": DELAY}
    gw = gateway_factory(smtp=smtp_cfg(cert, auth={"required": True}, limits=limits))
    # LIMIT wrong passwords over two sessions: each waits DELAY longer than the one before
    took = []
    for passwords in (["wrong-1", "wrong-2"], ["wrong-3", "wrong-4"]):
        with _session(gw, cert) as s:
            for pw in passwords:
                code, _, seconds = _auth(s, pw)
                assert code == 535
                took.append(seconds)
    for n, seconds in enumerate(took):
        assert n * DELAY - 0.05 <= seconds < n * DELAY + 3.0, took  # upper bound: a busy machine
    assert took[3] - took[1] >= 2 * DELAY - 0.1, took  # across sessions too
    # now the right password is refused for this address (at once: nothing left to wait for)
    with _session(gw, cert) as s:
        code, reply, seconds = _auth(s, PASSWORD)
        assert code == 454 and "Too many failed authentications from 127.0.0.1" in reply, reply
        assert "try again in 10 minutes" in reply and seconds < DELAY
        with pytest.raises(smtplib.SMTPSenderRefused):
            s.sendmail("scanner@home.example", ["invoices@localhost"], b"Subject: x\r\n\r\nx\r\n")
    # another client address is unaffected: no wait, logged in, mail accepted
    with _session(gw, cert, source="127.0.0.2") as s:
        code, _, seconds = _auth(s, PASSWORD)
        assert code == 235 and seconds < DELAY
        s.send_message(make_mail(attachments=[("a.pdf", unique_pdf("auth-other"), "application/pdf")]),
                       to_addrs=["invoices@localhost"])


def test_sessions_guessing_at_once_get_no_more_than_the_limit(gateway_factory: Callable[..., Gateway],
                                                               cert: tuple[Path, Path]) -> None:
    """Ten sessions from one address send a wrong password at the same moment: LIMIT are checked, the rest
    get 454. A race: 5 rounds, each from its own address."""
    gw = gateway_factory(smtp=smtp_cfg(cert, limits={"auth_failures_per_ip": LIMIT, "auth_delay": DELAY}))
    for round_ in range(5):
        sessions = [_session(gw, cert, source=f"127.0.0.{10 + round_}") for _ in range(10)]
        barrier = threading.Barrier(len(sessions))

        def guess(s: smtplib.SMTP) -> int:
            barrier.wait()
            return _auth(s, "wrong")[0]

        with ThreadPoolExecutor(len(sessions)) as pool:
            codes = sorted(pool.map(guess, sessions))
        for s in sessions:
            s.close()
        assert codes == [454] * (10 - LIMIT) + [535] * LIMIT, (round_, codes)


def test_lockout_is_bounded_and_per_address() -> None:
    now = [100.0]
    throttle = AuthThrottle(SMTPLimits(auth_failures_per_ip=3, auth_failure_window=600, auth_delay=2.0),
                            clock=lambda: now[0])
    assert throttle.wait("192.0.2.1") == 0 and throttle.refusal("192.0.2.1") is None
    for step in (0.0, 1.0, 5.0):
        now[0] += step
        throttle.failed("192.0.2.1")
    # failures at 100, 101, 106: locked until 700 (the oldest leaves the window), only this address
    refusal = throttle.refusal("192.0.2.1")
    assert refusal is not None and refusal.startswith("454 4.7.0") and "try again in 10 minutes" in refusal
    assert throttle.wait("192.0.2.1") == 0  # refused at once, not kept waiting
    assert throttle.refusal("192.0.2.2") is None and throttle.wait("192.0.2.2") == 0
    now[0] = 699.0
    assert "try again in 1 minute" in (throttle.refusal("192.0.2.1") or "")
    now[0] = 700.0
    assert throttle.refusal("192.0.2.1") is None  # bounded: the window, not forever
    # two failures left in the window: the next attempt waits 2 x 2 s after the last one (106), long past
    assert throttle.wait("192.0.2.1") == 0
    throttle.failed("192.0.2.1")
    assert throttle.refusal("192.0.2.1") is not None  # 101, 106, 700: three in the window again
    # IPv6 counts per /64; the delay grows per failure and is capped
    v6 = AuthThrottle(SMTPLimits(auth_failures_per_ip=0, auth_delay=10.0), clock=lambda: now[0])
    for i in range(5):
        v6.failed(f"2001:db8:0:1::{i + 1}")
    assert v6.refusal("2001:db8:0:1::99") is None  # 0: no lockout
    assert v6.wait("2001:db8:0:1::99") == MAX_DELAY and v6.wait("2001:db8:0:2::1") == 0
