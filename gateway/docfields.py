"""The fields of a mail's documents, read once: for the rules, the ``recognize`` policy and the store.

Rule conditions on fields (``total:``, ``supplier:``, ``document_type:`` ...)
and the ``recognize`` policy need the fields of a mail's PDF and XML
attachments before anything is decided; the pipeline then stores the same
reading with each document, the deciding rule's ``assign`` put over it
(``gateway.fields.apply_assign``). Reading a PDF's text costs milliseconds a
page, so the documents are read when a condition or the policy first asks,
or when they are stored, and never twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, overload

from gateway.fields import DocumentFields, LearnedLookup, read_document
from gateway.models import Attachment

#: The document types that make a document an invoice for the ``recognize`` policy.
INVOICE_TYPES = ("invoice", "credit_note", "receipt", "reminder")


def rule_values(read: DocumentFields, filename: str) -> dict[str, str]:
    """What rule conditions see of a document's fields: the values found, and ``filename``.

    A seller that is only a guess (the sender's display name, which anyone can
    write, or a letterhead line: confidence under 0.5) is left out, as it is
    from the document's ``company``.
    """
    out = {k: v for k, v in read.values().items() if v}
    seller = read.sources.get("seller")
    if seller is not None and (seller.source == "mail" or seller.confidence < 0.5):
        out.pop("seller", None)
    out["filename"] = filename
    return out


def invoice_signs(read: DocumentFields) -> str | None:
    """Why a document's fields make it an invoice (for ``recognize``), or None.

    An invoice number, a total and a date together, or a document type of
    invoice, credit note, receipt or reminder read from the title (or the XML),
    count; a brochure or newsletter has none of them.
    """
    kind = read.document_type
    source = read.sources.get("document_type")
    if kind in INVOICE_TYPES and source is not None and source.confidence >= 0.8:
        return f"its title reads as {kind.replace('_', ' ')}" if source.source == "text" else f"a {kind}"
    total = read.grand_total or read.amount_due
    if read.invoice_number and total and read.issue_date:
        money = f"{total} {read.currency}" if read.currency else total
        return f"invoice number {read.invoice_number}, total {money}, date {read.issue_date}"
    return None


class Readings(Sequence[Mapping[str, str]]):
    """The fields of a mail's candidate documents, read on first use and kept.

    ``learned`` is the store's lookup of what a supplier's corrections taught
    (``Store.learned_for``), as for ``read_document``; ``named(fields,
    sender_domain)`` names a reading's seller by its supplier
    (``Suppliers.name``), so that rule conditions see the supplier's name.

    As a sequence it is what rule conditions see (``MailView.documents``):
    one mapping per attachment (``rule_values``). ``of`` and ``fields_for``
    give the full reading, for ``recognize`` and for storing.
    """

    def __init__(self, attachments: Sequence[Attachment], einvoices: Mapping[int, Any] | None = None,
                 sender_name: str = "", sender_domain: str = "", learned: LearnedLookup | None = None,
                 named: Callable[[DocumentFields, str], DocumentFields] | None = None) -> None:
        self._atts = list(attachments)
        self._einvoices = dict(einvoices or {})
        self._sender = (sender_name, sender_domain)
        self._learned = learned
        self._named = named
        self._read: dict[tuple[str, str], DocumentFields] = {}
        self._views: tuple[Mapping[str, str], ...] | None = None

    def fields_for(self, data: bytes, kind: str, einvoice: Any = None) -> DocumentFields:
        """The fields of a document (read now unless read before; no rule's assign)."""
        key = (hashlib.sha256(data).hexdigest(), kind)
        read = self._read.get(key)
        if read is None:
            read = read_document(data, kind, einvoice=einvoice, sender_name=self._sender[0],
                                 sender_domain=self._sender[1], learned=self._learned)
            if self._named is not None:
                read = self._named(read, self._sender[1])
            self._read[key] = read
        return read

    def of(self, att: Attachment) -> DocumentFields:
        """The fields of one of the mail's attachments."""
        return self.fields_for(att.data, att.kind, self._einvoices.get(id(att)))

    def _all(self) -> tuple[Mapping[str, str], ...]:
        if self._views is None:
            self._views = tuple(rule_values(self.of(a), a.filename) for a in self._atts)
        return self._views

    def __len__(self) -> int:
        return len(self._atts)

    @overload
    def __getitem__(self, index: int) -> Mapping[str, str]: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Mapping[str, str]]: ...

    def __getitem__(self, index: int | slice) -> Mapping[str, str] | Sequence[Mapping[str, str]]:
        return self._all()[index]

    def __iter__(self) -> Iterator[Mapping[str, str]]:
        return iter(self._all())

    def __repr__(self) -> str:
        return f"Readings({len(self._atts)} document(s), {'read' if self._views is not None else 'not read yet'})"
