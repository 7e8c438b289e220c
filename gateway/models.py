"""The frozen dataclasses that pass between the stages of the pipeline.

intake (Envelope) -> mime (ParsedMessage, Attachment) -> rules (MailView ->
Decision, RuleTrace) -> store (documents) -> exporters (ExportItem).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Address:
    """A mail address with its display name.

    Attributes:
        name: the display name, decoded ("" when there is none).
        addr: the address, as written (``local@domain``; may be odd in bad mail).
    """

    name: str
    addr: str

    def __str__(self) -> str:
        return f"{self.name} <{self.addr}>" if self.name else self.addr


@dataclass(frozen=True)
class Envelope:
    """How a message reached the gateway; recorded with the raw bytes.

    Attributes:
        source: ``smtp``, ``imap:<mailbox>``, ``folder:<name>`` or ``import``.
        mail_from: the SMTP envelope sender ("" for bounces and non-SMTP sources).
        rcpt_tos: the envelope recipients (import addresses for SMTP).
        received: when the gateway took the message (UTC).
        peer: the connecting client's IP for SMTP, else None.
        import_address: the configured import address the mail was sent to.
        tag: the ``+tag`` of a plus-address, else None.
        assign: values the address or mailbox assigns (company, tags, ...).
        origin: source-specific identity (``folder/uidvalidity/uid`` for IMAP).
    """

    source: str
    mail_from: str = ""
    rcpt_tos: tuple[str, ...] = ()
    received: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))
    peer: str | None = None
    import_address: str | None = None
    tag: str | None = None
    assign: Mapping[str, Any] = field(default_factory=dict)
    origin: str | None = None


@dataclass(frozen=True)
class Attachment:
    """A part of a mail that may become a document.

    Attributes:
        filename: the sanitised file name (always set; derived when the mail gave none).
        original_filename: the name as the mail gave it, decoded, or None.
        content_type: the declared MIME type, lower case.
        data: the decoded bytes.
        kind: ``pdf`` or ``xml`` (judged by the bytes, not the label) or ``other``.
        inline: True when the part was marked inline (a ``cid:`` image, say).
        content_id: the Content-ID without angle brackets, or None.
        forwarded: True when the part came from an attached (forwarded) mail.
    """

    filename: str
    original_filename: str | None
    content_type: str
    data: bytes
    kind: str
    inline: bool = False
    content_id: str | None = None
    forwarded: bool = False


@dataclass(frozen=True)
class ParsedMessage:
    """What the pipeline reads out of a raw message (gateway.mime.parse).

    Attributes:
        message_id: the Message-ID header without angle brackets, or None.
        subject: the decoded subject ("" when absent).
        sender: the From address, or None when absent or unreadable.
        to: the To and Cc addresses.
        date: the Date header as an aware datetime, or None.
        headers: every header as (name, decoded value), in order.
        text: the plain-text body ("" when there is none).
        html: the HTML body, or None.
        attachments: every leaf part that is not the body, in order.
        defects: what the parser found wrong, as short strings.
        forwarded_from: the From of the first attached message/rfc822 (a mail
            forwarded as an attachment), or None.
    """

    message_id: str | None
    subject: str
    sender: Address | None
    to: tuple[Address, ...]
    date: dt.datetime | None
    headers: tuple[tuple[str, str], ...]
    text: str
    html: str | None
    attachments: tuple[Attachment, ...]
    defects: tuple[str, ...] = ()
    forwarded_from: Address | None = None

    def header(self, name: str) -> list[str]:
        """All values of header ``name`` (case-insensitive)."""
        low = name.lower()
        return [v for k, v in self.headers if k.lower() == low]


@dataclass(frozen=True)
class MailView:
    """What import rules see of a message.

    Attributes:
        sender: the From address (None when the mail has none).
        to: To, Cc and the envelope recipients.
        subject: the decoded subject.
        body: the body as text (HTML reduced to text).
        attachments: the file names of the attachments.
        headers: decoded header values by lower-case name.
        source: ``smtp``, ``imap:<mailbox>``, ``folder:<name>`` or ``import``.
        import_address: the import address the mail was sent to, if any.
        tag: the plus-address tag, if any.
        einvoice: e-invoice fields of the first e-invoice document
            (``seller``, ``seller_vat_id``, ``invoice_number``, ...), or None.
        authenticated: True when the sender was authenticated (DMARC or
            aligned DKIM pass), False when it failed, None when unknown.
        forwarded_from: the original sender of a forwarded mail (the From of an
            attached message, or of the forwarded header block in the body), or None.
        fields: values for ``{placeholders}`` in ``assign`` (``subject``,
            ``sender``, ``sender_domain``, ``tag``, ``einvoice.seller``, ...).
        documents: the fields read from each of the mail's PDF and XML
            attachments (``seller``, ``grand_total``, ``document_type``, ...,
            and ``filename``), for conditions on fields; a sequence that may
            read them on first use (``gateway.docfields.Readings``).
        company: the company the import address or mailbox assigns, or None.
    """

    sender: Address | None
    to: tuple[Address, ...]
    subject: str
    body: str
    attachments: tuple[str, ...]
    headers: Mapping[str, tuple[str, ...]]
    source: str
    import_address: str | None = None
    tag: str | None = None
    einvoice: Mapping[str, str] | None = None
    authenticated: bool | None = None
    fields: Mapping[str, str] = field(default_factory=dict)
    forwarded_from: Address | None = None
    documents: Sequence[Mapping[str, str]] = ()
    company: str | None = None


@dataclass(frozen=True)
class RuleTrace:
    """How one rule judged one message.

    Attributes:
        rule: the rule's name.
        file: the rule file (relative to rules_dir).
        matched: whether every condition held.
        reason: for a miss, the first condition that failed
            (``from: "x@y" did not match "a@b"``); for a match, what matched.
    """

    rule: str
    file: str
    matched: bool
    reason: str


@dataclass(frozen=True)
class Decision:
    """What the import rules decided for one message.

    Attributes:
        rule: the deciding rule's name, or None when no rule matched.
        action: ``import`` or ``ignore``; ``unmatched`` when no rule matched
            (the source's unmatched policy then decides).
        import_mode: ``attachments``, ``body``, ``both`` or ``images`` (attachments, photos and scans too).
        attachment_globs: file-name globs that narrow the attachments ((): all).
        assign: company, document_type, tags, note, placeholders filled in.
        explain: one trace per rule tried, in order, up to the deciding one
            (every rule before it, each with the first condition that failed;
            the rule set may fill it in lazily, on first access).
    """

    rule: str | None
    action: str
    import_mode: str = "attachments"
    attachment_globs: tuple[str, ...] = ()
    assign: Mapping[str, Any] = field(default_factory=dict)
    explain: Sequence[RuleTrace] = ()
