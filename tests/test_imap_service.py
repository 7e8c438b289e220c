"""Mailboxes inside a running gateway (Service): IDLE imports within seconds; a broken mailbox harms no other."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from email import policy
from typing import Any

import pytest

from conftest import Gateway, make_mail, unique_pdf, wait_for
from dovecot import Dovecot, dovecot_available

assert dovecot_available(), "dovecot is missing: `make test` installs dovecot-imapd"


@pytest.fixture(scope="module")
def dovecot() -> Iterator[Dovecot]:
    with Dovecot() as dc:
        yield dc


def invoice(n: int | str) -> bytes:
    return make_mail(subject=f"Rechnung {n}", message_id=f"<svc-{n}@acme.example>",
                     attachments=[(f"Rechnung_{n}.pdf", unique_pdf(f"svc-{n}"), "application/pdf")]
                     ).as_bytes(policy=policy.SMTP)


def mailbox(dc: Dovecot, user: str, name: str, **kw: Any) -> dict[str, Any]:
    cfg = {"name": name, "host": "127.0.0.1", "port": dc.port, "security": "none", "username": user,
           "password": dc.users[user], "timeout": "10s"}
    cfg.update(kw)
    return cfg


def test_idle_imports_new_mail_within_seconds(dovecot: Dovecot, gateway_factory: Callable[..., Gateway]) -> None:
    user = dovecot.add_user()
    dovecot.append(user, "INBOX", [invoice("idle-1")])
    gw = gateway_factory(mailboxes=[mailbox(dovecot, user, "home")])  # every 1h: only IDLE can be this fast
    poller = gw.service.pollers["home"]
    wait_for(lambda: gw.store.document_count() == 1, 15)
    wait_for(lambda: "INBOX" in poller.status()["idle"], 10)

    started = time.monotonic()
    dovecot.append(user, "INBOX", [invoice("idle-2")])
    wait_for(lambda: gw.store.document_count() == 2, timeout=5)
    assert time.monotonic() - started < 5
    assert poller.watchers["INBOX"].notifications >= 1
    status = gw.store.mailbox_status("home")
    assert status["last_success"] and status["error_kind"] is None


def test_wrong_password_shows_the_hint_and_other_mailboxes_keep_polling(
        dovecot: Dovecot, gateway_factory: Callable[..., Gateway], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway")
    good, bad = dovecot.add_user(), dovecot.add_user()
    gw = gateway_factory(mailboxes=[
        # a Gmail preset pointed at the test server: the hint is Gmail's
        mailbox(dovecot, bad, "gmail", provider="gmail", password="not-the-app-password"),
        mailbox(dovecot, good, "home"),
    ])
    wait_for(lambda: (gw.store.mailbox_status("gmail") or {}).get("error_kind") == "auth", 15)
    status = gw.store.mailbox_status("gmail")
    assert "authentication failed" in status["last_error"]
    assert "app password" in status["hint"] and "2-step verification" in status["hint"]
    assert status["failures"] == 1 and status["next_attempt"] and status["last_success"] is None

    broken = gw.service.pollers["gmail"]
    for _ in range(2):
        result = broken.fetch_now(wait=True, timeout=30)
        assert result is not None and result.error is not None and result.error.kind == "auth"
    status = gw.store.mailbox_status("gmail")
    assert status["failures"] == 3
    # backoff: the retry after the third failure in a row waits 2 minutes
    assert broken.next_attempt is not None
    assert 100 < (broken.next_attempt - broken.clock()).total_seconds() <= 120
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "authentication failed" in r.getMessage()]
    assert len(warnings) == 1  # logged once, not on every attempt

    # the gateway keeps running and the other mailbox keeps importing
    wait_for(lambda: (gw.store.mailbox_status("home") or {}).get("last_success"), 15)
    dovecot.append(good, "INBOX", [invoice("other")])
    gw.service.pollers["home"].fetch_now(wait=True, timeout=30)
    wait_for(lambda: gw.store.document_count() == 1, 10)
    assert gw.service.health()["store"] and gw.service.pollers["home"].running and broken.running


def test_idle_renews_and_reconnects_after_a_server_restart(workdir: Any) -> None:
    from gateway.config import parse_settings
    from gateway.sources.imap import MailboxPoller
    from gateway.sources.imap.idle import FolderWatcher
    from gateway.spool import Spool
    from gateway.store import Store

    with Dovecot() as dc:
        user = dc.add_user()
        settings = parse_settings({"data_dir": str(workdir / "data"), "exports": [],
                                   "mailboxes": [mailbox(dc, user, "home")]}, env={})
        store = Store(settings.data_dir)
        poller = MailboxPoller(settings.mailboxes[0], store=store, spool=Spool(store), settings=settings)
        triggered: list[str] = []
        poller.trigger = triggered.append  # type: ignore[method-assign]  # only the watcher is under test
        watcher = FolderWatcher(poller, "INBOX", renew=0.3)
        watcher.start()
        try:
            wait_for(watcher.connected.is_set, 5)
            wait_for(lambda: watcher.idles >= 3, 5)  # IDLE was ended and sent again, on the same connection
            assert watcher.connects == 1
            dc.append(user, "INBOX", [invoice("renew")])
            wait_for(lambda: triggered == ["INBOX"], 5)

            dc.stop()
            wait_for(lambda: not watcher.connected.is_set(), 5)
            dc.start()
            wait_for(lambda: watcher.connects == 2, 10)  # reconnected (after 1 s, then 2 s, ...)
            dc.append(user, "INBOX", [invoice("after-restart")])
            wait_for(lambda: len(triggered) == 2, 5)
        finally:
            watcher.stop()
            watcher.join(5)
