"""The ``email`` target: one mail per document to an accounting system's mail-in address.

The document is attached unchanged; the subject follows a pattern with the
same fields as file names; the body carries the note and the metadata. The
Message-ID is recorded as the location. It is derived from the export and the
document, so a mail sent again because the gateway could not know whether the
first one arrived (a crash or a lost connection right after the server took
it) carries the same Message-ID, and mail systems that deduplicate drop it.

A recipient refused with 5xx, a failed login and an untrusted certificate are
permanent; 4xx answers, timeouts and refused connections are retried.
"""

from __future__ import annotations

import datetime as dt
import logging
import smtplib
import socket
import ssl
import string
from collections.abc import Mapping
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

from gateway.config import ExportConfig, ExportSMTP
from gateway.errors import ExportError
from gateway.exporters.base import ExportItem
from gateway.mimeheaders import printable

log = logging.getLogger(__name__)

_BODY_FIELDS = (
    ("Company", "company"), ("Document type", "document_type"), ("Invoice number", "invoice_number"),
    ("Date", "date"), ("Sender", "sender"), ("Subject", "subject"), ("Received", "received"),
    ("Source", "source"),
)


def render_subject(pattern: str, values: Mapping[str, Any], fallback: str) -> str:
    """A subject from a pattern such as ``Invoice {company} {date:%Y-%m-%d}``; empty fields vanish.

    When every field is empty, ``fallback`` (the file name) is added, so the subject still tells mails apart.
    """
    out = []
    fields = filled = 0
    try:
        parsed = list(string.Formatter().parse(pattern))
    except ValueError:
        return fallback
    for literal, name, spec, _ in parsed:
        out.append(literal)
        if name is None:
            continue
        fields += 1
        value = values.get(name)
        if value is None or value == "":
            continue
        filled += 1
        if isinstance(value, (dt.date, dt.datetime)):
            out.append(value.strftime(spec or "%Y-%m-%d"))
            continue
        try:
            out.append(format(value, spec or ""))
        except (ValueError, TypeError):
            out.append(str(value))
    if fields and not filled:
        out.append(" " + fallback)
    text = " ".join(printable("".join(out)).split())  # no CR/LF, no doubled spaces where a field was empty
    return text[:250] or fallback


def _code_of(exc: smtplib.SMTPException) -> int:
    return int(getattr(exc, "smtp_code", 0) or 0)


class EmailExporter:
    """Sends each document as an attachment to ``to`` through ``smtp``."""

    def __init__(self, target: ExportConfig) -> None:
        assert target.to is not None and target.smtp is not None
        self.target = target
        self.smtp: ExportSMTP = target.smtp
        self.to = [a.strip() for a in target.to.split(",") if a.strip()]
        user = self.smtp.username or ""
        self.sender = target.sender or (user if "@" in user else f"invoice-gateway@{socket.getfqdn() or 'localhost'}")
        self.where = f"{self.smtp.host}:{self.smtp.port}"
        self.context: ssl.SSLContext | None = None
        if self.smtp.security != "none":
            try:
                cafile = str(self.smtp.ca_file) if self.smtp.ca_file else None
                self.context = ssl.create_default_context(cafile=cafile)
            except (OSError, ssl.SSLError) as exc:
                raise ExportError(f"exports {target.name}: cannot read smtp.ca_file {self.smtp.ca_file}: {exc}",
                                  retryable=False) from exc

    # -- the interface ---------------------------------------------------------------------

    def deliver(self, item: ExportItem) -> str:
        """Send one mail with the document; return its Message-ID."""
        msg = self.build(item)
        self._send(msg)
        return str(msg["Message-ID"])

    def build(self, item: ExportItem) -> EmailMessage:
        """The mail for one document."""
        meta = item.metadata
        values = dict(item.values) if item.values else {}
        msg = EmailMessage()
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.to)
        msg["Subject"] = render_subject(self.target.subject, values, item.filename)
        msg["Date"] = formatdate(localtime=True)
        domain = self.sender.rpartition("@")[2] or "invoice-gateway.invalid"
        msg["Message-ID"] = f"<invoice-gateway.{item.export_id}.{item.sha256[:24]}@{domain}>"
        msg["X-Invoice-Gateway-Document"] = f"{item.document_id}; sha256={item.sha256}"
        msg.set_content(self.body(item, meta, values))
        maintype, _, subtype = (item.content_type or "application/octet-stream").partition("/")
        msg.add_attachment(item.read(), maintype=maintype, subtype=subtype or "octet-stream",
                           filename=item.relpath.rpartition("/")[2] or item.filename)
        if self.target.sidecar == "json":
            msg.add_attachment(item.sidecar(), maintype="application", subtype="json",
                               filename=(item.relpath.rpartition("/")[2] or item.filename) + ".json")
        return msg

    @staticmethod
    def body(item: ExportItem, meta: Mapping[str, Any], values: Mapping[str, Any]) -> str:
        """The text part: the note, then one line per known field."""
        # every value on its own line, whatever it holds: a subject with CR/LF in it
        # (an encoded word can carry them) must not add lines such as "Bcc: ..."
        lines = []
        if meta.get("note"):
            lines += [printable(str(meta["note"])), ""]
        lines.append(f"Document: {printable(item.filename)}")
        for label, key in _BODY_FIELDS:
            value = meta.get(key)
            if value not in (None, "", []):
                lines.append(f"{label}: {printable(str(value))}")
        if values.get("total") not in (None, ""):
            lines.append(printable(f"Total: {values['total']} {values.get('currency') or ''}").rstrip())
        if isinstance(values.get("due_date"), dt.date):
            lines.append(f"Due date: {values['due_date']:%Y-%m-%d}")
        tags = meta.get("tags") or []
        if tags:
            lines.append(f"Tags: {printable(', '.join(str(t) for t in tags))}")
        lines.append(f"SHA-256: {item.sha256}")
        lines += ["", "Sent by invoice-gateway."]
        return "\n".join(lines) + "\n"

    # -- SMTP ------------------------------------------------------------------------------

    def _connect(self) -> smtplib.SMTP:
        s = self.smtp
        if s.security == "ssl":
            return smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout, context=self.context)
        conn = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
        try:
            conn.ehlo()
            if s.security == "starttls":
                if not conn.has_extn("starttls"):
                    raise ExportError(f"{self.where} does not offer STARTTLS; use security: ssl (port 465) "
                                      "or, on a trusted network only, security: none", retryable=False)
                conn.starttls(context=self.context)
                conn.ehlo()
        except BaseException:
            conn.close()
            raise
        return conn

    def _send(self, msg: EmailMessage) -> None:
        try:
            conn = self._connect()
        except ExportError:
            raise
        except Exception as exc:
            raise self._wrap(exc) from exc
        try:
            if self.smtp.username:
                conn.login(self.smtp.username, self.smtp.password or "")
            refused = conn.send_message(msg, from_addr=self.sender, to_addrs=self.to)
        except Exception as exc:
            conn.close()
            raise self._wrap(exc) from exc
        try:
            conn.quit()
        except (smtplib.SMTPException, OSError):
            conn.close()  # the server has the mail already; a failed QUIT changes nothing
        if refused:
            # some recipients took the mail: sending again would double it for them
            log.warning("%s refused some recipients: %s", self.where, refused)

    def _wrap(self, exc: BaseException) -> ExportError:
        where = self.where
        if isinstance(exc, smtplib.SMTPAuthenticationError):
            return ExportError(f"authentication failed for {where}: check username and password "
                               f"(many providers need an app password): {_code_of(exc)}", retryable=False)
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            codes = [int(c) for c, _ in exc.recipients.values()]
            detail = "; ".join(f"{addr}: {c} {m.decode('utf-8', 'replace') if isinstance(m, bytes) else m}"
                               for addr, (c, m) in exc.recipients.items())
            return ExportError(f"{where} refused the recipient ({detail})",
                               retryable=all(400 <= c < 500 for c in codes))
        if isinstance(exc, smtplib.SMTPNotSupportedError):
            return ExportError(f"{where}: {exc} (check smtp.security and whether the server needs a login)",
                               retryable=False)
        if isinstance(exc, smtplib.SMTPResponseException):
            code = _code_of(exc)
            text = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else exc.smtp_error
            kind = {smtplib.SMTPSenderRefused: "refused the sender " + self.sender,
                    smtplib.SMTPDataError: "refused the message"}.get(type(exc), "answered")
            return ExportError(f"{where} {kind}: {code} {text}", retryable=not 500 <= code < 600)
        if isinstance(exc, ssl.SSLCertVerificationError):
            return ExportError(f"the certificate of {where} is not trusted ({exc.verify_message}); "
                               "for a self-signed or private CA set smtp.ca_file", retryable=False)
        if isinstance(exc, ssl.SSLError):
            return ExportError(f"TLS with {where} failed ({exc.reason or exc}); check smtp.security "
                               "(ssl for port 465, starttls for port 587)", retryable=False)
        if isinstance(exc, (TimeoutError, socket.timeout)):
            return ExportError(f"{where} did not answer in time")
        if isinstance(exc, (smtplib.SMTPException, OSError)):
            return ExportError(f"cannot send through {where}: {exc}")
        return ExportError(f"sending through {where} failed: {type(exc).__name__}: {exc}")

