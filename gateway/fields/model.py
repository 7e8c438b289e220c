"""The frozen dataclasses a document's fields are read into."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: The field names, as the e-invoice names them (EN 16931 business terms), plus document_type.
FIELD_NAMES: tuple[str, ...] = (
    "seller", "seller_vat_id", "buyer", "invoice_number", "issue_date", "due_date", "currency",
    "net_total", "tax_total", "grand_total", "amount_due", "iban", "document_type",
)
DOCUMENT_TYPES: tuple[str, ...] = (
    "invoice", "credit_note", "receipt", "reminder", "order_confirmation", "statement", "delivery_note", "other",
)
#: Where a value came from, strongest first: a person's correction, a rule's assign, the e-invoice XML,
#: the supplier (its layout learned from a correction; the seller: the document's supplier, see
#: gateway.fields.suppliers), the text read (``text`` from a PDF's own text layer or a mail body,
#: ``ocr`` from the layer OCR added); ``mail`` is the sender's display name and domain, the
#: last resort for the seller.
SOURCES: tuple[str, ...] = ("person", "rule", "einvoice", "supplier", "text", "ocr", "mail")


@dataclass(frozen=True)
class FieldSource:
    """Where one field's value came from.

    Attributes:
        source: ``person``, ``rule``, ``einvoice``, ``supplier``, ``text``, ``ocr`` or ``mail``.
        confidence: 0..1; 1 for a rule or the XML.
        page: the page it was read on (1-based), or None.
        box: [x0, y0, x1, y1] in PDF points from the page's top-left corner, around the value and
            the label it was found by, or None.
        label: the label it was found by ("Rechnungsnummer"), or None; for ``supplier``
            "learned from your correction on document N".
    """

    source: str
    confidence: float
    page: int | None = None
    box: tuple[float, float, float, float] | None = None
    label: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready: the box rounded to a tenth of a point."""
        out: dict[str, Any] = {"source": self.source, "confidence": round(self.confidence, 2)}
        if self.page is not None:
            out["page"] = self.page
        if self.box is not None:
            out["box"] = [round(v, 1) for v in self.box]
        if self.label:
            out["label"] = self.label
        return out


@dataclass(frozen=True)
class DocumentFields:
    """One document's fields, with the source of each.

    Attributes:
        seller, seller_vat_id, buyer, invoice_number: text or None.
        issue_date, due_date: ISO 8601 dates (``2026-03-31``) or None.
        currency: ISO 4217 code or None.
        net_total, tax_total, grand_total, amount_due: decimal strings with two
            decimals (``"238.00"``) or None; never floats.
        iban: the IBAN without spaces, or None.
        document_type: one of DOCUMENT_TYPES, or None when nothing tells.
        sources: per field that has a value, where it came from.
        warnings: what a person should know (the visible PDF disagrees with its XML).
    """

    seller: str | None = None
    seller_vat_id: str | None = None
    buyer: str | None = None
    invoice_number: str | None = None
    issue_date: str | None = None
    due_date: str | None = None
    currency: str | None = None
    net_total: str | None = None
    tax_total: str | None = None
    grand_total: str | None = None
    amount_due: str | None = None
    iban: str | None = None
    document_type: str | None = None
    sources: dict[str, FieldSource] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def values(self) -> dict[str, str | None]:
        """Every field name with its value (None when unknown), in FIELD_NAMES order."""
        return {name: getattr(self, name) for name in FIELD_NAMES}

    def to_json(self) -> dict[str, Any]:
        """What the store keeps: ``{"fields": {...}, "field_sources": {...}}``."""
        return {"fields": self.values(),
                "field_sources": {k: v.to_json() for k, v in self.sources.items() if getattr(self, k) is not None}}
