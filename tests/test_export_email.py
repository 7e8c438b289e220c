"""The email target against an aiosmtpd server on loopback: plain, STARTTLS, implicit TLS, refusals."""

from __future__ import annotations

import email
import email.policy
import hashlib
import ssl
import subprocess
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from conftest import Gateway, free_port, make_mail, unique_pdf, wait_for
from gateway.config import ExportConfig
from gateway.errors import ExportError
from gateway.exporters.base import ExportItem
from gateway.exporters.email import EmailExporter, render_subject


class Inbox:
    """An aiosmtpd handler that keeps what it receives and refuses some recipients."""

    def __init__(self) -> None:
        self.mails: list[tuple[Envelope, EmailMessage]] = []

    async def handle_RCPT(self, server: Any, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        if address.startswith("nobody@"):
            return "550 5.1.1 no such mailbox"
        if address.startswith("later@"):
            return "450 4.2.1 mailbox busy, try later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        msg = email.message_from_bytes(envelope.original_content or b"", policy=email.policy.default)
        self.mails.append((envelope, msg))  # type: ignore[arg-type]
        return "250 OK"


def authenticator(server: Any, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and data.login == b"gateway" and data.password == b"smtp-secret"
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def smtp_server() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    ctl = Controller(inbox, hostname="127.0.0.1", port=port)
    ctl.start()
    yield inbox, port
    ctl.stop()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], check=True, capture_output=True)
    return cert, key


def item(tmp_path: Path, data: bytes, name: str = "invoice.pdf", export_id: int = 1) -> ExportItem:
    sha = hashlib.sha256(data).hexdigest()
    path = tmp_path / f"{sha}.pdf"
    path.write_bytes(data)
    return ExportItem(export_id=export_id, document_id=export_id, path=path, relpath=f"2026/{name}",
                      content_type="application/pdf", filename=name, sha256=sha,
                      metadata={"company": "Acme GmbH", "note": "paid"}, values={"company": "Acme GmbH"})


def exporter(port: int, to: str = "inbox@accounting.example", **smtp: Any) -> EmailExporter:
    cfg = {"name": "accounting", "type": "email", "to": to,
           "smtp": {"host": "127.0.0.1", "port": port, "security": "none", "timeout": "10s", **smtp}}
    return EmailExporter(ExportConfig.model_validate(cfg))


def attachments(msg: EmailMessage) -> list[tuple[str, bytes]]:
    return [(str(p.get_filename()), p.get_content()) for p in msg.iter_attachments()]


def test_one_mail_per_document_with_the_pdf_unchanged(gateway_factory: Callable[..., Gateway],
                                                       smtp_server: tuple[Inbox, int]) -> None:
    inbox, port = smtp_server
    gw = gateway_factory(exports=[{
        "name": "accounting", "type": "email", "to": "inbox-1234@accounting.example",
        "sender": "gateway@home.example", "subject": "Beleg {sender_domain} {date:%Y-%m-%d} {stem}",
        "note": "Paid by credit card", "filename": "{stem}",
        "smtp": {"host": "127.0.0.1", "port": port, "security": "none"},
    }])
    pdfs = {"one.pdf": unique_pdf("mail-1"), "two.pdf": unique_pdf("mail-2")}
    gw.send(make_mail(subject="Two invoices", attachments=[(n, d, "application/pdf") for n, d in pdfs.items()]))
    wait_for(lambda: len(inbox.mails) >= 2, timeout=20)
    rows = wait_for(lambda: [r for r in gw.store.list_exports(target="accounting") if r["state"] == "delivered"]
                    if len(gw.store.list_exports(target="accounting", state="delivered")) == 2 else None)
    assert len(inbox.mails) == 2
    got = {}
    for env, msg in inbox.mails:
        assert env.rcpt_tos == ["inbox-1234@accounting.example"] and env.mail_from == "gateway@home.example"
        (name, data), = attachments(msg)
        got[name] = data
        assert msg["Subject"].startswith("Beleg acme.example 20") and msg["Subject"].endswith(name[:-4])
        body = msg.get_body(("plain",)).get_content()
        assert "Paid by credit card" in body and f"Document: {name}" in body and "Subject: Two invoices" in body
        assert msg["Message-ID"] in {r["location"] for r in rows}
    assert got == pdfs  # byte-identical


def server_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    """The test SMTP server's TLS context with the self-signed certificate."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(certificate[0]), str(certificate[1]))
    return ctx


def test_starttls_needs_the_ca_file_for_a_self_signed_certificate(tmp_path: Path,
                                                                  certificate: tuple[Path, Path]) -> None:
    inbox = Inbox()
    ctx = server_tls(certificate)
    port = free_port()
    ctl = Controller(inbox, hostname="127.0.0.1", port=port, tls_context=ctx, require_starttls=True,
                     authenticator=authenticator, auth_require_tls=True)
    ctl.start()
    try:
        it = item(tmp_path, unique_pdf("tls"))
        auth = {"security": "starttls", "username": "gateway", "password": "smtp-secret"}
        with pytest.raises(ExportError) as err:
            exporter(port, **auth).deliver(it)
        assert not err.value.retryable and "not trusted" in str(err.value) and "ca_file" in str(err.value)
        with pytest.raises(ExportError) as err:
            exporter(port, **dict(auth, password="wrong"), ca_file=str(certificate[0])).deliver(it)
        assert not err.value.retryable and str(err.value).startswith("authentication failed for 127.0.0.1")
        assert "wrong" not in str(err.value)
        assert inbox.mails == []
        location = exporter(port, **auth, ca_file=str(certificate[0])).deliver(it)
        (_, msg), = inbox.mails
        assert msg["Message-ID"] == location and attachments(msg) == [("invoice.pdf", unique_pdf("tls"))]
    finally:
        ctl.stop()


class TLSInbox(Inbox):
    """An Inbox that also notes the TLS version of the connection each mail came over (None: plain)."""

    def __init__(self) -> None:
        super().__init__()
        self.tls: list[str | None] = []

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        ssl_object = server.transport.get_extra_info("ssl_object")
        self.tls.append(ssl_object.version() if ssl_object is not None else None)
        return await super().handle_DATA(server, session, envelope)


def test_security_ssl_is_tls_from_the_first_byte_and_needs_the_ca_file(tmp_path: Path,
                                                                       certificate: tuple[Path, Path]) -> None:
    inbox = TLSInbox()
    ctx = server_tls(certificate)
    port = free_port()
    # implicit TLS, as on port 465 (aiosmtpd's auth_require_tls only knows STARTTLS: the whole session is TLS)
    ctl = Controller(inbox, hostname="127.0.0.1", port=port, ssl_context=ctx,
                     authenticator=authenticator, auth_require_tls=False)
    ctl.start()
    try:
        it = item(tmp_path, unique_pdf("implicit-tls"))
        auth = {"security": "ssl", "username": "gateway", "password": "smtp-secret"}
        with pytest.raises(ExportError) as err:
            exporter(port, **auth).deliver(it)  # self-signed, no ca_file
        assert not err.value.retryable and "not trusted" in str(err.value) and "ca_file" in str(err.value)
        with pytest.raises(ExportError) as err:  # plain text to a TLS port: no greeting comes; an error, no hang
            exporter(port, security="starttls", timeout="2s", ca_file=str(certificate[0])).deliver(it)
        assert str(err.value).startswith(f"cannot send through 127.0.0.1:{port}") and "timed out" in str(err.value)
        with pytest.raises(ExportError) as err:
            exporter(port, **dict(auth, password="wrong"), ca_file=str(certificate[0])).deliver(it)
        assert not err.value.retryable and str(err.value).startswith("authentication failed for 127.0.0.1")
        assert inbox.mails == []
        location = exporter(port, **auth, ca_file=str(certificate[0])).deliver(it)
        (_, msg), = inbox.mails
        assert msg["Message-ID"] == location and attachments(msg) == [("invoice.pdf", unique_pdf("implicit-tls"))]
        assert inbox.tls == ["TLSv1.3"] or inbox.tls == ["TLSv1.2"]
    finally:
        ctl.stop()


def test_a_refused_recipient_is_permanent_and_a_busy_one_retryable(tmp_path: Path,
                                                                   smtp_server: tuple[Inbox, int]) -> None:
    inbox, port = smtp_server
    it = item(tmp_path, unique_pdf("rcpt"))
    with pytest.raises(ExportError) as err:
        exporter(port, to="nobody@accounting.example").deliver(it)
    assert not err.value.retryable and "550" in str(err.value)
    with pytest.raises(ExportError) as err:
        exporter(port, to="later@accounting.example").deliver(it)
    assert err.value.retryable and "450" in str(err.value)
    assert inbox.mails == []


def test_a_server_that_is_down_is_retryable(tmp_path: Path) -> None:
    with pytest.raises(ExportError) as err:
        exporter(free_port()).deliver(item(tmp_path, unique_pdf("down")))
    assert err.value.retryable and "cannot send through 127.0.0.1" in str(err.value)


def test_the_message_id_is_the_same_when_sent_again(tmp_path: Path, smtp_server: tuple[Inbox, int]) -> None:
    inbox, port = smtp_server
    it = item(tmp_path, unique_pdf("again"))
    ex = exporter(port)
    assert ex.deliver(it) == ex.deliver(it)  # a mail system that deduplicates drops the second
    assert inbox.mails[0][1]["Message-ID"] == inbox.mails[1][1]["Message-ID"]


def test_subject_pattern() -> None:
    import datetime as dt

    values = {"company": "Acme", "date": dt.datetime(2026, 3, 5), "invoice_number": None}
    assert render_subject("Invoice {company} {invoice_number} {date:%d.%m.%Y}", values, "x") == "Invoice Acme 05.03.2026"
    assert render_subject("{invoice_number}", values, "fallback.pdf") == "fallback.pdf"
    assert render_subject("Invoice {invoice_number}", values, "scan.pdf") == "Invoice scan.pdf"
    assert render_subject("A\r\nB {company}", values, "x") == "A B Acme"
