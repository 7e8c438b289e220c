"""Every document's fields: seller, number, dates, totals, IBAN and type, from its XML or its text.

``read_document(data, kind, ...)`` gives one frozen :class:`DocumentFields` per
document, with the e-invoice key names and, per field, where the value came
from (``sources``). Precedence: a rule's ``assign`` > the e-invoice XML >
the text read from the PDF (born-digital PDFs and rendered mail bodies: ``text``;
the text layer OCR added to a scan or photo: ``ocr``) > the mail's sender (seller
only). A supplier's layout learned from a person's corrections (``learned``)
comes before the generic reading of the text, and a person's corrections
(``corrections.apply``) before everything. The seller of a document matched to
a supplier is the supplier's name (``suppliers.with_supplier``, applied by the
pipeline): after a person, a rule and the XML, before the text. ``columns``
gives the document's top-level company, number and date from them;
``read_after_ocr`` reads a document again once OCR gave it a text layer.

Decisions:

- No supplier templates: labels in German, English, French, Dutch, Italian
  and Spanish, and the place of a value (right of its label or below it),
  read from the PDF's text layer with boxes (``text.read_pdf``).
- Check digits decide: a VAT ID counts only when python-stdnum validates it,
  an IBAN only with its country's length and mod-97 (the IBAN guard's finder).
- A hybrid e-invoice whose visible PDF disagrees with its XML on the total,
  the number or the IBAN gets a warning; the XML's values stand.
- Reading never raises: an unreadable PDF gives empty fields and a warning.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from . import learned as learning
from . import readers
from .model import DOCUMENT_TYPES, FIELD_NAMES, SOURCES, DocumentFields, FieldSource
from .text import Layout, ocr_bullets, ocr_cleaned, read_pdf

__all__ = ["DOCUMENT_TYPES", "FIELD_NAMES", "SOURCES", "DocumentFields", "FieldSource", "Layout",
           "apply_assign", "columns", "read_after_ocr", "read_document", "read_layout", "read_pdf"]

log = logging.getLogger(__name__)

_EINVOICE_DOC_TYPE = {"invoice": "invoice", "credit_note": "credit_note", "corrective": "invoice"}


def read_layout(layout: Layout, source: str = "text") -> dict[str, tuple[str, FieldSource]]:
    """The fields the text says, each with its source (``text`` or ``ocr``); missing fields are left out."""
    out: dict[str, tuple[str, FieldSource]] = {}

    def put(name: str, found: readers.Found | None, value: str | None = None) -> None:
        if found is None:
            return
        text = value if value is not None else str(found.value)
        out[name] = (text, FieldSource(source, found.confidence, found.page, found.box, found.label))

    if not layout.lines:
        return out
    named = layout
    if source == "ocr":  # OCR reads "Fällig" as "Fállig", a speck as ":" or ".": labels are looked up in a cleaned text
        named, layout = ocr_bullets(layout), ocr_cleaned(layout)
    put("invoice_number", readers.read_invoice_number(layout))
    issue, due = readers.read_dates(layout, readers.month_first(layout))
    put("issue_date", issue, issue.value.isoformat() if issue else None)
    put("due_date", due, due.value.isoformat() if due else None)
    amounts = readers.check_totals(readers.read_amounts(layout))
    for key in ("net_total", "tax_total", "grand_total", "amount_due"):
        f = amounts.get(key)
        put(key, f, readers.amount_text(f.value.value) if f else None)
    put("currency", readers.read_currency(layout, amounts))
    vat = readers.read_vat_id(layout)
    put("seller_vat_id", vat)
    seller, buyer = readers.read_parties(named, vat)
    put("seller", seller)
    put("buyer", buyer)
    put("iban", readers.read_iban(layout))
    put("document_type", readers.read_document_type(layout))
    return out


def _same_amount(a: str | None, b: str | None) -> bool:
    try:
        return a is not None and b is not None and Decimal(a) == Decimal(b)
    except InvalidOperation:
        return False


def _squash(text: str | None) -> str:
    return re.sub(r"[\s\-_/.]", "", text or "").upper()


def _disagreements(inv: Mapping[str, Any], text: Mapping[str, tuple[str, FieldSource]], layout: Layout) -> list[str]:
    """Where the visible PDF says otherwise than its XML: the total, the number, the IBAN."""
    out = []
    total = text.get("grand_total")
    xml_totals = [inv.get("grand_total"), inv.get("amount_due")]
    if total and total[1].confidence >= 0.9 and inv.get("grand_total") and not any(
            _same_amount(total[0], x) for x in xml_totals):
        out.append(f"the visible PDF shows the total {total[0]} ({total[1].label or 'page ' + str(total[1].page)}), "
                   f"its embedded XML says {inv.get('grand_total')}: check which is right before paying")
    number = text.get("invoice_number")
    if number and inv.get("invoice_number") and _squash(inv["invoice_number"]) not in _squash(layout.text) and \
            _squash(number[0]) != _squash(inv["invoice_number"]):
        out.append(f"the visible PDF shows the invoice number {number[0]}, its embedded XML says "
                   f"{inv['invoice_number']}")
    if inv.get("iban"):
        from gateway.payment_guard import find_ibans

        printed = find_ibans(layout.text)
        xml_iban = _squash(inv["iban"])
        if printed and xml_iban not in printed:
            from gateway.payment_guard import mask_iban

            out.append(f"the visible PDF shows the IBAN {mask_iban(printed[0])}, its embedded XML says "
                       f"{mask_iban(xml_iban)}: confirm the account with the seller before paying")
    return out


def _einvoice_keys(einvoice: Any) -> dict[str, Any]:
    """The e-invoice's seller VAT ID, IBAN and name: they name the supplier better than the text."""
    if einvoice is None:
        return {}
    inv = einvoice.fields()
    return {k: inv[k] for k in ("seller_vat_id", "iban", "seller") if inv.get(k)}


LearnedLookup = Callable[[Sequence[str]], Sequence[learning.Learned]]


def read_document(data: bytes, kind: str, *, einvoice: Any = None, assign: Mapping[str, Any] | None = None,
                  sender_name: str = "", sender_domain: str = "", layout: Layout | None = None,
                  learned: LearnedLookup | None = None, ocr: bool = False) -> DocumentFields:
    """One document's fields: rule assign > e-invoice XML > supplier's learned layout > text > sender. Never raises.

    ``learned`` gives the learned entries of the first of the supplier keys it is handed
    (``learned.supplier_keys``) that has any. ``ocr``: the PDF's text layer was added by
    OCR (read word by word; the source is ``ocr``).
    """
    values: dict[str, str] = {}
    sources: dict[str, FieldSource] = {}
    warnings: list[str] = []
    try:
        if layout is None and kind == "pdf":
            layout = read_pdf(data, ocr=ocr)
        if layout is not None:
            for warning in layout.warnings:  # no finding about the document itself: the log has it
                log.info("reading a document's text: %s", warning)
            for name, (value, source) in read_layout(layout, "ocr" if ocr else "text").items():
                values[name], sources[name] = value, source
            if learned is not None and layout.lines:
                keys = learning.supplier_keys({**values, **_einvoice_keys(einvoice)}, sender_domain)
                taught = learning.read_learned(layout, learned(keys))
                for name, (value, source) in taught.items():
                    values[name], sources[name] = value, source
                due = sources.get("amount_due")
                if "grand_total" in taught and "amount_due" not in taught and due is not None and \
                        due.label == "no prepayment printed":  # it was the generic total's copy
                    total = taught["grand_total"][1]
                    values["amount_due"] = values["grand_total"]
                    sources["amount_due"] = FieldSource("supplier", 0.6, total.page, total.box, total.label)
        if einvoice is not None:
            inv = {k: (v or None) for k, v in einvoice.fields().items()}
            if layout is not None and layout.lines:
                warnings.extend(_disagreements(inv, {k: (values[k], sources[k]) for k in values}, layout))
            inv["document_type"] = _EINVOICE_DOC_TYPE.get(str(inv.get("document_type")), "invoice")
            if inv.get("iban"):
                inv["iban"] = _squash(inv["iban"])
            for name in FIELD_NAMES:
                if inv.get(name):
                    values[name], sources[name] = str(inv[name]), FieldSource("einvoice", 1.0)
        if "seller" not in values and (sender_name or sender_domain):
            name = sender_name.strip() or sender_domain
            values["seller"] = name
            sources["seller"] = FieldSource("mail", 0.3, label="sender" if sender_name.strip() else "sender domain")
    except Exception as exc:  # a reader's bug must not stop a mail's processing
        log.exception("reading a document's fields failed")
        warnings.append(f"fields could not be read ({type(exc).__name__}: {exc})")
    if values.get("document_type") not in DOCUMENT_TYPES and "document_type" in values:
        values["document_type"] = "other"
    read = DocumentFields(**{k: values.get(k) for k in FIELD_NAMES}, sources=sources,
                          warnings=tuple(dict.fromkeys(warnings)))
    return apply_assign(read, assign)


def apply_assign(read: DocumentFields, assign: Mapping[str, Any] | None) -> DocumentFields:
    """``read`` with a rule's ``assign`` (company, document_type, invoice_number) put over it (source ``rule``).

    The pipeline reads a mail's documents once, before the rules decide (rule
    conditions on fields), and puts the deciding rule's assign over that reading.
    """
    rule = {"seller": (assign or {}).get("company"), "document_type": (assign or {}).get("document_type"),
            "invoice_number": (assign or {}).get("invoice_number")}
    changes: dict[str, Any] = {name: str(v) for name, v in rule.items() if v not in (None, "")}
    if not changes:
        return read
    sources = {**read.sources, **{name: FieldSource("rule", 1.0) for name in changes}}
    return dataclasses.replace(read, **changes, sources=sources)



#: the least confidence a value read from the text needs to name the document (its top-level columns)
_SURE = {"issue_date": 0.8}


def columns(read: DocumentFields, *, assign: Mapping[str, Any] | None = None,
            einvoice: Mapping[str, Any] | None = None, received: str | None = None) -> dict[str, str | None]:
    """The document's top-level ``company``, ``invoice_number`` and ``doc_date`` from its fields.

    A rule's assign > the e-invoice XML > the supplier's name and learned layout and
    what the text (or OCR) says with enough confidence. The sender's display name does not count (anyone can write any
    name there), so it stays a low-confidence field only; nor does a guess such
    as a letterhead's first line ("unknown" beats a wrong name in a file name),
    nor a date that no label or title names (the date decides a target's
    ``since``: the day received is safer).
    """
    meta, inv = assign or {}, einvoice or {}
    text = {k: v for k, v in read.values().items()
            if v and read.sources[k].source in ("person", "rule", "einvoice", "supplier", "text", "ocr")
            and read.sources[k].confidence >= _SURE.get(k, 0.5)}
    return {"company": meta.get("company") or inv.get("seller") or text.get("seller") or None,
            "invoice_number": meta.get("invoice_number") or inv.get("invoice_number") or text.get("invoice_number")
            or None,
            "doc_date": inv.get("issue_date") or text.get("issue_date") or received or None}


def read_after_ocr(data: bytes, stored: Mapping[str, Any] | None, *, learned: LearnedLookup | None = None,
                   sender_domain: str = "") -> DocumentFields:
    """A document's fields read again from the text layer OCR added; what a rule or the sender gave stays.

    ``stored`` is what the store holds (``{"fields": ..., "field_sources": ...}``,
    read when the document came, without text): a rule's assign keeps its
    precedence, the sender's name stays the last resort for the seller.
    """
    values = dict((stored or {}).get("fields") or {})
    sources = dict((stored or {}).get("field_sources") or {})
    assign: dict[str, Any] = {}
    sender_name = ""
    for name, source in sources.items():
        value = values.get(name)
        if not value or not isinstance(source, Mapping):
            continue
        if source.get("source") == "rule" and name in ("seller", "invoice_number", "document_type"):
            assign["company" if name == "seller" else name] = value
        elif source.get("source") == "mail" and name == "seller":
            if source.get("label") == "sender domain":
                sender_domain = str(value)
            else:
                sender_name = str(value)
    return read_document(data, "pdf", assign=assign, sender_name=sender_name, sender_domain=sender_domain, ocr=True,
                         learned=learned)
