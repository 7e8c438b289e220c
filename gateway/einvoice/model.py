"""The frozen dataclasses an e-invoice is read into, and their JSON-ready fields."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal

#: The keys of :meth:`EInvoice.fields`, in order (EN 16931 business terms noted).
FIELD_KEYS: tuple[str, ...] = (
    "invoice_number",  # BT-1
    "type_code",  # BT-3
    "document_type",  # invoice | credit_note | corrective
    "issue_date",  # BT-2
    "due_date",  # BT-9
    "seller",  # BT-27
    "seller_vat_id",  # BT-31
    "buyer",  # BT-44
    "buyer_reference",  # BT-10
    "currency",  # BT-5
    "net_total",  # BT-109
    "tax_total",  # BT-110
    "grand_total",  # BT-112
    "amount_due",  # BT-115
    "iban",  # BT-84
    "syntax",
    "profile",  # BT-24
)

_CENT = Decimal("0.01")


def format_amount(value: Decimal | None) -> str:
    """An amount as a plain decimal string with at least two decimals ("238.00"); "" for None."""
    if value is None:
        return ""
    if value == 0:
        value = abs(value)  # no "-0.00"
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent > -2:
        value = value.quantize(_CENT)
    return format(value, "f")


def format_number(value: Decimal | None) -> str:
    """A quantity or rate as a plain decimal string without trailing zeros; "" for None."""
    if value is None:
        return ""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


@dataclass(frozen=True, kw_only=True)
class InvoiceLine:
    """One invoice line (BG-25).

    Attributes:
        id: the line identifier (BT-126), or None.
        name: the item name (BT-153), or None.
        quantity: the invoiced quantity (BT-129), or None.
        unit: the unit of measure code of the quantity (BT-130, UN/ECE rec. 20), or None.
        net_amount: the line net amount (BT-131), or None.
        tax_rate: the VAT rate of the line in percent (BT-152), or None.
    """

    id: str | None = None
    name: str | None = None
    quantity: Decimal | None = None
    unit: str | None = None
    net_amount: Decimal | None = None
    tax_rate: Decimal | None = None


@dataclass(frozen=True, kw_only=True)
class TaxSubtotal:
    """One row of the VAT breakdown (BG-23).

    Attributes:
        category: the VAT category code (BT-118: S, Z, E, AE, K, G, O, L, M), or None.
        rate: the VAT rate in percent (BT-119), or None.
        basis: the taxable amount (BT-116), or None.
        amount: the VAT amount (BT-117), or None.
    """

    category: str | None = None
    rate: Decimal | None = None
    basis: Decimal | None = None
    amount: Decimal | None = None


@dataclass(frozen=True, kw_only=True)
class EInvoice:
    """A recognised e-invoice: where it came from, its XML, and the fields read from it.

    Attributes:
        syntax: ``CII`` (ZUGFeRD 2, Factur-X, XRechnung CII), ``UBL`` (Invoice or
            CreditNote 2.1, XRechnung UBL) or ``ZUGFeRD1`` (CrossIndustryDocument).
        profile: the specification identifier (BT-24: CII guideline ID, UBL
            CustomizationID), or None when the XML names none.
        container: ``xml`` for a bare XML file, ``pdf`` for a hybrid PDF.
        xml_filename: the embedded file's name for a PDF (``factur-x.xml``, ...); None for XML.
        xml: the XML itself, byte for byte as received or embedded.
        invoice_number: BT-1.
        type_code: BT-3 (UNTDID 1001: 380 invoice, 381 credit note, 384 corrected, ...).
        document_type: ``invoice``, ``credit_note`` or ``corrective``, as BT-3 says (the
            document's own type is :attr:`default_document_type`).
        issue_date: BT-2.
        due_date: BT-9.
        seller: the seller's name (BT-27; the trading name BT-28 when BT-27 is absent).
        seller_vat_id: BT-31.
        buyer: the buyer's name (BT-44).
        buyer_reference: BT-10 (the Leitweg-ID in XRechnung).
        currency: BT-5 (ISO 4217).
        net_total: the total without VAT (BT-109).
        tax_total: the VAT total in the invoice currency (BT-110).
        grand_total: the total with VAT (BT-112).
        amount_due: the amount due for payment (BT-115).
        iban: the payment account identifier (BT-84).
        lines: the invoice lines, in document order.
        warnings: what light validation found wrong, one sentence each.
        line_total: the sum of line net amounts as stated (BT-106).
        allowance_total: the document level allowances (BT-107).
        charge_total: the document level charges (BT-108).
        prepaid_total: the amount paid in advance (BT-113).
        rounding: the rounding amount (BT-114).
        seller_address: the seller's postal address on one line.
        buyer_address: the buyer's postal address on one line.
        payment_terms: the payment terms text (BT-20).
        notes: the invoice notes (BT-22).
        taxes: the VAT breakdown (BG-23).
    """

    syntax: str
    profile: str | None
    container: str
    xml_filename: str | None
    xml: bytes = field(repr=False)
    invoice_number: str | None = None
    type_code: str | None = None
    document_type: str = "invoice"
    issue_date: dt.date | None = None
    due_date: dt.date | None = None
    seller: str | None = None
    seller_vat_id: str | None = None
    buyer: str | None = None
    buyer_reference: str | None = None
    currency: str | None = None
    net_total: Decimal | None = None
    tax_total: Decimal | None = None
    grand_total: Decimal | None = None
    amount_due: Decimal | None = None
    iban: str | None = None
    lines: tuple[InvoiceLine, ...] = ()
    warnings: tuple[str, ...] = ()
    line_total: Decimal | None = None
    allowance_total: Decimal | None = None
    charge_total: Decimal | None = None
    prepaid_total: Decimal | None = None
    rounding: Decimal | None = None
    seller_address: str | None = None
    buyer_address: str | None = None
    payment_terms: str | None = None
    notes: tuple[str, ...] = ()
    taxes: tuple[TaxSubtotal, ...] = ()

    @property
    def default_document_type(self) -> str:
        """The document's ``document_type`` when no rule assigns one: ``credit_note`` or ``invoice``.

        A corrective invoice (BT-3 384) is booked as an invoice; its ``document_type``
        field stays ``corrective`` and its ``type_code`` 384.
        """
        return "credit_note" if self.document_type == "credit_note" else "invoice"

    def fields(self) -> dict[str, str]:
        """The main fields, JSON-ready: every key of FIELD_KEYS, "" when a value is absent.

        Dates are ISO 8601 (``2024-03-31``), amounts decimal strings with at
        least two decimals (``"238.00"``), never floats.
        """
        return {
            "invoice_number": self.invoice_number or "",
            "type_code": self.type_code or "",
            "document_type": self.document_type,
            "issue_date": self.issue_date.isoformat() if self.issue_date else "",
            "due_date": self.due_date.isoformat() if self.due_date else "",
            "seller": self.seller or "",
            "seller_vat_id": self.seller_vat_id or "",
            "buyer": self.buyer or "",
            "buyer_reference": self.buyer_reference or "",
            "currency": self.currency or "",
            "net_total": format_amount(self.net_total),
            "tax_total": format_amount(self.tax_total),
            "grand_total": format_amount(self.grand_total),
            "amount_due": format_amount(self.amount_due),
            "iban": self.iban or "",
            "syntax": self.syntax,
            "profile": self.profile or "",
        }
