"""Notifications through Apprise, to real receivers on 127.0.0.1: an SMTP server (mailto://)
and an HTTP endpoint (json://). Each event is told once, with a link to the admin page, and
no secret of a notification URL reaches the log, the page or the API."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from email import message_from_bytes
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from conftest import Gateway, free_port, make_mail, unique_pdf, wait_for
from test_trust_hold import invoice, start
from test_web_pages import Browserless
from test_trust_senderauth import key  # noqa: F401  (a fixture)

SECRET = "s3cret-hook-pw"


class Receivers:
    """An SMTP server and an HTTP endpoint that keep what they are sent."""

    def __init__(self) -> None:
        self.mails: list[dict[str, str]] = []
        self.posts: list[dict[str, Any]] = []
        self.refuse_http = False
        outer = self

        class SMTPHandler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                msg = message_from_bytes(envelope.content, policy=default_policy)
                body = msg.get_body(("plain",))
                outer.mails.append({"subject": str(msg["Subject"]), "to": ",".join(envelope.rcpt_tos),
                                    "body": body.get_content() if body is not None else ""})
                return "250 OK"

        class HTTPHandler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                if outer.refuse_http:
                    self.send_response(503)
                    self.end_headers()
                    return
                n = int(self.headers.get("Content-Length") or 0)
                outer.posts.append({"path": self.path, "auth": self.headers.get("Authorization"),
                                    **json.loads(self.rfile.read(n))})
                self.send_response(200)
                self.end_headers()

            def refuse(self) -> None:  # the WebDAV share: wrong credentials, a permanent export error
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="dav"')
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_PUT = do_MKCOL = do_PROPFIND = do_MOVE = do_HEAD = do_GET = do_DELETE = refuse

            def log_message(self, *args: Any) -> None:
                return None

        self.smtp_port, self.http_port = free_port(), free_port()
        self.smtp = Controller(SMTPHandler(), hostname="127.0.0.1", port=self.smtp_port)
        self.http = ThreadingHTTPServer(("127.0.0.1", self.http_port), HTTPHandler)

    def start(self) -> Receivers:
        self.smtp.start()
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.smtp.stop()
        self.http.shutdown()
        self.http.server_close()

    @property
    def mailto(self) -> str:
        return f"mailto://127.0.0.1:{self.smtp_port}?from=gateway@localhost&to=me@localhost&secure=no"

    @property
    def json(self) -> str:
        return f"json://hook:{SECRET}@127.0.0.1:{self.http_port}/hook"

    def titles(self) -> list[str]:
        return [p["title"] for p in self.posts]


@pytest.fixture
def receivers() -> Iterator[Receivers]:
    r = Receivers().start()
    yield r
    r.stop()


def notify_cfg(r: Receivers, mail_events: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    urls: list[dict[str, Any]] = [{"url": r.json}]
    if mail_events is not None:
        urls.append({"url": r.mailto, "events": mail_events})
    return {"urls": urls, "check_every": "1s", "admin_url": "http://nas.example:8080", **extra}


def gateway_log(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records)


def test_broken_rules_are_told_once_and_again_when_broken_anew(
        gateway_factory: Callable[..., Gateway], workdir: Path, receivers: Receivers,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    gw = gateway_factory(notify=notify_cfg(receivers, mail_events=["rules_broken"]))
    (workdir / "rules" / "bad.yaml").write_text("name: Broken\nwhen: {frm: x@y.example}\n")
    wait_for(lambda: [t for t in receivers.titles() if "Rules are broken" in t], timeout=20)
    wait_for(lambda: [m for m in receivers.mails if "Rules are broken" in m["subject"]], timeout=10)
    post = next(p for p in receivers.posts if "Rules are broken" in p["title"])
    assert "bad.yaml" in post["title"] and "http://nas.example:8080/rules" in post["message"]
    assert post["auth"] and post["auth"].startswith("Basic ")  # the URL's credentials reached the receiver
    time.sleep(3.5)  # three more checks: nothing new
    assert len([t for t in receivers.titles() if "Rules are broken" in t]) == 1
    assert len([m for m in receivers.mails if "Rules are broken" in m["subject"]]) == 1
    # fixed, then broken in another way: told again
    (workdir / "rules" / "bad.yaml").write_text("name: Fixed\nwhen: {from: x@y.example}\n")
    wait_for(lambda: not gw.service.rules.problems, timeout=20)
    (workdir / "rules" / "bad.yaml").write_text("name: Broken again\nwhen: {subjekt: x}\n")
    wait_for(lambda: len([t for t in receivers.titles() if "Rules are broken" in t]) == 2, timeout=20)
    # secrets never logged, shown or served
    assert SECRET not in gateway_log(caplog)
    page = gw.api("/api/notifications").json()
    assert SECRET not in json.dumps(page) and page["urls"][0]["url"].startswith("json://")


def test_disk_export_and_mailbox_events(gateway_factory: Callable[..., Gateway], workdir: Path,
                                        receivers: Receivers) -> None:
    dead = free_port()  # nothing listens: the mailbox fails, the WebDAV target is refused
    gw = gateway_factory(
        notify=notify_cfg(receivers, mailbox_failing_after="2s"),
        limits={"worker_processes": False, "disk_free_min": "100000GB"},
        mailboxes=[{"name": "shop", "host": "127.0.0.1", "port": dead, "security": "none", "username": "u",
                    "password": "mailbox-pw", "idle": False, "schedule": {"every": "1s"}, "timeout": "2s"}],
        exports=[{"name": "nas", "type": "folder", "path": str(workdir / "exports")},
                 {"name": "dav", "type": "webdav", "url": f"http://127.0.0.1:{receivers.http_port}/dav/",
                  "username": "u", "password": "dav-pw"}])
    wait_for(lambda: [t for t in receivers.titles() if "Disk nearly full" in t], timeout=20)
    wait_for(lambda: [t for t in receivers.titles() if "Mailbox shop has not been read" in t], timeout=30)
    # the WebDAV share answers 401 (wrong password): a permanent export error
    gw.send(make_mail(attachments=[("inv.pdf", unique_pdf("notify-export"), "application/pdf")]))
    wait_for(lambda: gw.store.list_exports(target="dav", state="error"), timeout=30)
    wait_for(lambda: [t for t in receivers.titles() if "Export of inv.pdf to dav failed" in t], timeout=20)
    time.sleep(3)
    titles = receivers.titles()
    for needle in ("Disk nearly full", "Mailbox shop has not been read", "Export of inv.pdf to dav failed"):
        assert len([t for t in titles if needle in t]) == 1, titles
    # the banner on every page says the same, and the dashboard does not claim all is well
    body = gw.api("/api/notifications").json()
    assert {p["event"] for p in body["pending"]} >= {"disk_full", "mailbox_failing", "export_failed"}


def test_suspicious_bank_account_and_approval_digest(gateway_factory: Callable[..., Gateway], workdir: Path,
                                                     receivers: Receivers, key: tuple[bytes, str]) -> None:  # noqa: F811
    receivers.refuse_http = True  # the endpoint is down at first: retried, not lost
    gw = start(gateway_factory, workdir, key,
               notify=notify_cfg(receivers, mail_events=["suspicious", "approval_digest"], digest_at="00:00"),
               trust={"check_senders": True},
               exports=[{"name": "nas", "type": "folder", "path": str(workdir / "exports"),
                         "require_approval": True}])
    gw.send(invoice("<script>x</script>"), sender="billing@known-supplier.example")
    wait_for(lambda: [m for m in receivers.mails if "suspicious" in m["subject"]], timeout=30)
    mail = next(m for m in receivers.mails if "suspicious" in m["subject"])
    assert "http://nas.example:8080/messages/" in mail["body"]
    receivers.refuse_http = False
    wait_for(lambda: [t for t in receivers.titles() if "suspicious" in t], timeout=20)
    # a document waiting for approval: one digest a day
    gw.send(make_mail(sender="Other <shop@other.example>",
                      attachments=[("wait.pdf", unique_pdf("digest"), "application/pdf")]))
    wait_for(lambda: [m for m in receivers.mails if "wait for your approval" in m["subject"]], timeout=30)
    # the IBAN guard flagged a document: a changed bank account is told
    doc = gw.store.list_documents()[0][0]
    gw.store.update_document(doc["id"], payment_details_changed=json.dumps({"iban": "DE89 **** 3000"}))
    wait_for(lambda: [t for t in receivers.titles() if "Changed bank account" in t], timeout=20)
    time.sleep(2.5)
    assert len([m for m in receivers.mails if "wait for your approval" in m["subject"]]) == 1
    assert len([m for m in receivers.mails if "suspicious" in m["subject"]]) == 1
    assert not [m for m in receivers.mails if "Changed bank account" in m["subject"]]  # not its events
    # what senders control is escaped on the notifications page, which needs the login
    browser = Browserless(gw)
    assert browser.get("/notifications").status_code == 302
    browser.login()
    page = browser.get("/notifications").text
    browser.close()
    assert "<script>x</script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page


def test_test_button_reports_each_url(gateway_factory: Callable[..., Gateway], receivers: Receivers,
                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    broken = f"json://hook:{SECRET}@127.0.0.1:{free_port()}/nobody"
    gw = gateway_factory(notify={"urls": [{"url": receivers.json}, {"url": receivers.mailto}, {"url": broken}]})
    # without the token or a session's CSRF token it is refused
    import httpx

    assert httpx.post(f"http://127.0.0.1:{gw.web_port}/api/notifications/test").status_code == 401
    results = gw.api("/api/notifications/test", method="POST").json()["results"]
    assert [r["ok"] for r in results] == [True, True, False]
    assert results[2]["error"] and SECRET not in json.dumps(results)
    assert any("test notification" in t for t in receivers.titles())
    assert any("test notification" in m["subject"] for m in receivers.mails)
    assert SECRET not in gateway_log(caplog)
