"""E-invoices: ZUGFeRD 1 and 2, Factur-X, XRechnung (CII and UBL), UBL 2.1.

``detect(data)`` recognises an e-invoice in a bare XML file or embedded in a
PDF and reads its main fields; ``render_pdf(inv)`` makes a readable PDF of a
bare XML invoice.

Decisions:

- Detection judges the bytes, never the file name or MIME type: anything that
  starts like XML is parsed; a PDF (``%PDF-`` in its first KB, not an archive)
  is searched for embedded XML files. ``filename`` and ``content_type`` only label log lines.
- XML is parsed without DTD, entities or network, up to ``MAX_XML_BYTES``.
  Hostile or unreadable XML is **not an e-invoice**: a DOCTYPE (billion laughs,
  external entities), malformed XML, an oversized file or a foreign root
  element all give None, and ``examine`` says why. The attachment then stays
  an ordinary file; nothing is read from it. Hostile, malformed or oversized
  XML (bare or embedded in a PDF) also gives ``Examination.warning``, which the
  pipeline puts on the document: a person should know the file was not read.
- A recognised invoice never raises for odd content: unreadable values become
  None, and what is missing or does not add up becomes ``warnings``.
- A PDF carrying several e-invoice XMLs (ZUGFeRD 1 and Factur-X side by side)
  yields the preferred one (factur-x.xml, xrechnung.xml, zugferd-invoice.xml;
  CII/UBL before ZUGFeRD 1), with a warning naming the others.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from .checks import check
from .extract import Fields, read_cii, read_ubl
from .model import FIELD_KEYS, EInvoice, InvoiceLine, TaxSubtotal, format_amount
from .pdf import STANDARD_NAMES, EmbeddedXml, embedded_xml, is_pdf
from .render import render_html, render_pdf
from .xmlread import MAX_XML_BYTES, ParsedXml, Refusal, looks_like_xml, parse

__all__ = [
    "FIELD_KEYS",
    "MAX_XML_BYTES",
    "EInvoice",
    "Examination",
    "InvoiceLine",
    "RefusingFetcher",
    "TaxSubtotal",
    "detect",
    "examine",
    "format_amount",
    "render_html",
    "render_pdf",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Examination:
    """The outcome of looking for an e-invoice in a file.

    Attributes:
        einvoice: the e-invoice found, or None.
        reason: why the file is not an e-invoice (None when it is one).
        warning: for XML refused as hostile or unreadable (a DOCTYPE, not
            well-formed, over the size limit), a sentence for the document's
            warnings; None otherwise (a plain PDF or a foreign XML is no finding).
    """

    einvoice: EInvoice | None
    reason: str | None = None
    warning: str | None = None


def __getattr__(name: str) -> Any:
    # RefusingFetcher subclasses weasyprint's fetcher: imported on first use only,
    # since importing weasyprint costs every worker a second or more.
    if name == "RefusingFetcher":
        from .fetcher import RefusingFetcher

        return RefusingFetcher
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _build(parsed: ParsedXml, xml: bytes, container: str, xml_filename: str | None,
           extra: tuple[str, ...] = ()) -> EInvoice:
    f: Fields = read_ubl(parsed.root) if parsed.syntax == "UBL" else read_cii(
        parsed.root, zf1=parsed.syntax == "ZUGFeRD1")
    warnings = (*parsed.warnings, *extra, *f.warnings, *check(f))
    return EInvoice(
        syntax=parsed.syntax, profile=f.profile, container=container, xml_filename=xml_filename, xml=xml,
        invoice_number=f.invoice_number, type_code=f.type_code, document_type=f.document_type,
        issue_date=f.issue_date, due_date=f.due_date, seller=f.seller, seller_vat_id=f.seller_vat_id,
        buyer=f.buyer, buyer_reference=f.buyer_reference, currency=f.currency, net_total=f.net_total,
        tax_total=f.tax_total, grand_total=f.grand_total, amount_due=f.amount_due, iban=f.iban,
        lines=f.lines, warnings=tuple(dict.fromkeys(warnings)), line_total=f.line_total,
        allowance_total=f.allowance_total, charge_total=f.charge_total, prepaid_total=f.prepaid_total,
        rounding=f.rounding, seller_address=f.seller_address, buyer_address=f.buyer_address,
        payment_terms=f.payment_terms, notes=f.notes, taxes=f.taxes,
    )


def _from_pdf(data: bytes) -> Examination:
    found = embedded_xml(data)
    if isinstance(found, str):
        return Examination(None, found)
    parsed: list[tuple[EmbeddedXml, ParsedXml]] = []
    refusals: list[str] = []
    hostile: list[str] = []
    for item in found:
        result = parse(item.data)
        if isinstance(result, Refusal):
            refusals.append(f"{item.name}: {result.reason}")
            if result.warn:
                hostile.append(refusals[-1])
        else:
            parsed.append((item, result))
    if not parsed:
        warning = f"the embedded XML was not read as an e-invoice: {'; '.join(hostile)}" if hostile else None
        return Examination(None, "no embedded XML is an e-invoice (" + "; ".join(refusals) + ")", warning)
    # found is already ordered by name; prefer EN 16931 syntaxes over ZUGFeRD 1 (stable sort).
    parsed.sort(key=lambda pair: pair[1].syntax == "ZUGFeRD1")
    item, chosen = parsed[0]
    extra = [f"the PDF also carries {other.name} ({p.syntax}); {item.name} was read" for other, p in parsed[1:]]
    base = item.name.rsplit("/", 1)[-1].lower()
    if base not in STANDARD_NAMES:
        extra.append(f"the embedded file name {item.name!r} is not a standard e-invoice name")
    return Examination(_build(chosen, item.data, "pdf", item.name, tuple(extra)))


def examine(data: bytes, filename: str | None = None, content_type: str | None = None) -> Examination:
    """Look for an e-invoice in a file's bytes: the EInvoice, or why there is none. Never raises."""
    try:
        # A PDF may have junk before its header; an XML file never starts with "%PDF-".
        if data.startswith(b"%PDF-") or (not looks_like_xml(data) and is_pdf(data)):
            result = _from_pdf(data)
        elif looks_like_xml(data):
            parsed = parse(data)
            if isinstance(parsed, Refusal):
                warning = f"not read as an e-invoice: {parsed.reason}" if parsed.warn else None
                result = Examination(None, parsed.reason, warning)
            else:
                result = Examination(_build(parsed, data, "xml", None))
        else:
            result = Examination(None, "neither a PDF nor XML")
    except Exception as exc:  # a bug here must not stop a mail's processing
        log.exception("e-invoice detection failed for %s (%s)", filename or "a file", content_type or "?")
        result = Examination(None, f"e-invoice detection failed: {type(exc).__name__}: {exc}")
    if result.einvoice is None:
        log.debug("%s is not an e-invoice: %s", filename or "file", result.reason)
    return result


def detect(data: bytes, filename: str | None = None, content_type: str | None = None) -> EInvoice | None:
    """The e-invoice in a file (bare XML or hybrid PDF), or None when it holds none. Never raises."""
    return examine(data, filename, content_type).einvoice
