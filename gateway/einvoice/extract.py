"""Read the EN 16931 fields out of a parsed CII, ZUGFeRD 1 or UBL document.

Paths match elements by local name in any namespace, so one reader serves
ZUGFeRD 1.0 (and its unqualified release candidate), ZUGFeRD 2 / Factur-X /
XRechnung CII, and UBL Invoice and CreditNote. Values that cannot be read
become None and a warning; nothing here raises on odd content.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import TypeAlias

from lxml import etree

from .model import InvoiceLine, TaxSubtotal

#: Most lines read from one invoice; the rest are counted in a warning.
MAX_LINES = 10_000
#: Longest single-line text field kept (invoice number, names, ...).
MAX_TEXT = 500

# UNTDID 1001 codes of credit notes and of corrected invoices.
CREDIT_NOTE_CODES = frozenset({"81", "83", "261", "262", "296", "308", "381", "396", "420", "458", "532"})
CORRECTIVE_CODES = frozenset({"384"})

_AMOUNT = re.compile(r"[+-]?(?:\d{1,20}(?:\.\d{0,12})?|\.\d{1,12})")
_SPACES = re.compile(r"\s+")
# UBL has no element for a note's subject code (BT-21): XRechnung and PEPPOL put it in front, "#ADU#text".
_NOTE_SUBJECT = re.compile(r"\A#[A-Z]{3}#")

Element: TypeAlias = etree._Element


@functools.lru_cache(maxsize=512)
def _path(path: str) -> str:
    """``A/B`` -> ``{*}A/{*}B``: any namespace, or none."""
    return "/".join(f"{{*}}{step}" for step in path.split("/"))


@dataclass(frozen=True)
class Fields:
    """Everything read from one document, before it becomes an EInvoice (see EInvoice)."""

    profile: str | None
    invoice_number: str | None
    type_code: str | None
    document_type: str
    issue_date: dt.date | None
    due_date: dt.date | None
    seller: str | None
    seller_vat_id: str | None
    seller_address: str | None
    buyer: str | None
    buyer_address: str | None
    buyer_reference: str | None
    currency: str | None
    line_total: Decimal | None
    allowance_total: Decimal | None
    charge_total: Decimal | None
    net_total: Decimal | None
    tax_total: Decimal | None
    grand_total: Decimal | None
    prepaid_total: Decimal | None
    rounding: Decimal | None
    amount_due: Decimal | None
    iban: str | None
    payment_terms: str | None
    notes: tuple[str, ...]
    taxes: tuple[TaxSubtotal, ...]
    lines: tuple[InvoiceLine, ...]
    warnings: tuple[str, ...]


class _Reader:
    """Typed look-ups below one element, collecting warnings."""

    def __init__(self) -> None:
        self.warnings: list[str] = []

    def all(self, el: Element | None, path: str) -> Iterator[Element]:
        if el is not None:
            yield from el.iterfind(_path(path))

    def one(self, el: Element | None, path: str) -> Element | None:
        return None if el is None else el.find(_path(path))

    def raw(self, el: Element | None) -> str | None:
        if el is None:
            return None
        text = (el.text or "") if len(el) == 0 else "".join(t for t in el.itertext() if isinstance(t, str))
        text = text.strip()
        return text or None

    def text(self, el: Element | None, path: str | None = None, *, label: str = "") -> str | None:
        """Single-line text: white space collapsed, capped at MAX_TEXT."""
        node = el if path is None else self.one(el, path)
        value = self.raw(node)
        if value is None:
            return None
        value = _SPACES.sub(" ", value)
        if len(value) > MAX_TEXT:
            self.warnings.append(f"{label or 'a text field'} is longer than {MAX_TEXT} characters; it was cut")
            value = value[:MAX_TEXT]
        return value

    def amount(self, el: Element | None, path: str | None, label: str) -> Decimal | None:
        node = el if path is None else self.one(el, path)
        return self.decimal(self.raw(node), label)

    def decimal(self, value: str | None, label: str) -> Decimal | None:
        if value is None:
            return None
        if not _AMOUNT.fullmatch(value):
            self.warnings.append(f"{label} {value[:40]!r} is not a decimal number")
            return None
        return Decimal(value)

    def date(self, el: Element | None, path: str, label: str) -> dt.date | None:
        node = self.one(el, path)
        if node is None:
            return None
        # CII: <IssueDateTime><DateTimeString format="102">; the ZF1 RC puts the string in place.
        inner = self.one(node, "DateTimeString")
        node = node if inner is None else inner
        value = self.raw(node)
        if value is None:
            return None
        fmt = node.get("format")
        try:
            if re.fullmatch(r"\d{8}", value):
                date = dt.date(int(value[:4]), int(value[4:6]), int(value[6:]))
                if fmt not in (None, "102"):
                    # eight digits that make a valid date are YYYYMMDD whatever the (wrong) code says
                    self.warnings.append(f"{label} {value!r} has the date format code {fmt[:10]!r}, "
                                         "not 102; it was read as YYYYMMDD")
                return date
            if re.match(r"\d{4}-\d{2}-\d{2}(?:$|[TZ+-])", value):
                return dt.date.fromisoformat(value[:10])
        except ValueError:
            pass
        if fmt not in (None, "102"):
            self.warnings.append(f"{label} {value[:40]!r} has date format {fmt[:10]!r}; only 102 (YYYYMMDD) is read")
        else:
            self.warnings.append(f"{label} {value[:40]!r} is not a date")
        return None


def document_type(type_code: str | None, root_name: str) -> str:
    """``credit_note``, ``corrective`` or ``invoice`` for a type code (BT-3) and root element."""
    if root_name == "CreditNote" or type_code in CREDIT_NOTE_CODES:
        return "credit_note"
    if type_code in CORRECTIVE_CODES:
        return "corrective"
    return "invoice"


def _address(r: _Reader, el: Element | None, parts: tuple[str, ...]) -> str | None:
    values = [r.text(el, p, label="an address line") for p in parts]
    joined = ", ".join(v for v in values if v)
    return joined or None


def _pick_currency(nodes: list[Element], currency: str | None) -> Element | None:
    """The node in the invoice currency (BT-110 may repeat in the VAT accounting currency)."""
    for node in nodes:
        if currency and node.get("currencyID") == currency:
            return node
    for node in nodes:
        if node.get("currencyID") is None:
            return node
    return nodes[0] if nodes else None


def _attr(el: Element | None, name: str) -> str | None:
    value = None if el is None else el.get(name)
    return value.strip() or None if value else None


def _cap_lines(r: _Reader, items: Iterator[Element]) -> Iterator[Element]:
    for count, item in enumerate(items):
        if count == MAX_LINES:
            rest = sum(1 for _ in items) + 1
            r.warnings.append(f"only the first {MAX_LINES} lines were read; {rest} more were skipped")
            return
        yield item


def read_cii(root: Element, zf1: bool) -> Fields:
    """Read a CrossIndustryInvoice (``zf1=False``) or a ZUGFeRD 1 CrossIndustryDocument."""
    r = _Reader()
    if zf1:
        ctx, doc = "SpecifiedExchangedDocumentContext", "HeaderExchangedDocument"
        tx = "SpecifiedSupplyChainTradeTransaction"
        agreement = r.one(root, f"{tx}/ApplicableSupplyChainTradeAgreement")
        settlement = r.one(root, f"{tx}/ApplicableSupplyChainTradeSettlement")
        summation = r.one(settlement, "SpecifiedTradeSettlementMonetarySummation")
        line_delivery, line_settlement = "SpecifiedSupplyChainTradeDelivery", "SpecifiedSupplyChainTradeSettlement"
        line_sum, rate = "SpecifiedTradeSettlementMonetarySummation", "ApplicablePercent"
    else:
        ctx, doc, tx = "ExchangedDocumentContext", "ExchangedDocument", "SupplyChainTradeTransaction"
        agreement = r.one(root, f"{tx}/ApplicableHeaderTradeAgreement")
        settlement = r.one(root, f"{tx}/ApplicableHeaderTradeSettlement")
        summation = r.one(settlement, "SpecifiedTradeSettlementHeaderMonetarySummation")
        line_delivery, line_settlement = "SpecifiedLineTradeDelivery", "SpecifiedLineTradeSettlement"
        line_sum, rate = "SpecifiedTradeSettlementLineMonetarySummation", "RateApplicablePercent"

    seller = r.one(agreement, "SellerTradeParty")
    buyer = r.one(agreement, "BuyerTradeParty")
    address = ("PostalTradeAddress/LineOne", "PostalTradeAddress/LineTwo", "PostalTradeAddress/LineThree",
               "PostalTradeAddress/PostcodeCode", "PostalTradeAddress/CityName", "PostalTradeAddress/CountryID")
    vat_id = next((r.text(reg) for reg in r.all(seller, "SpecifiedTaxRegistration/ID")
                   if reg.get("schemeID") == "VA" and r.text(reg)), None)
    currency = r.text(settlement, "InvoiceCurrencyCode", label="the currency")
    iban = next(filter(None, (
        r.text(acct, "IBANID") or r.text(acct, "ProprietaryID")
        for acct in r.all(settlement, "SpecifiedTradeSettlementPaymentMeans/PayeePartyCreditorFinancialAccount")
    )), None)
    type_code = r.text(root, f"{doc}/TypeCode", label="the type code")

    taxes = tuple(
        TaxSubtotal(
            category=r.text(tax, "CategoryCode"),
            rate=r.amount(tax, rate, "a VAT rate (BT-119)"),
            basis=r.amount(tax, "BasisAmount", "a VAT taxable amount (BT-116)"),
            amount=r.amount(tax, "CalculatedAmount", "a VAT amount (BT-117)"),
        )
        for tax in r.all(settlement, "ApplicableTradeTax")
    )
    lines = []
    for item in _cap_lines(r, r.all(root, f"{tx}/IncludedSupplyChainTradeLineItem")):
        quantity = r.one(item, f"{line_delivery}/BilledQuantity")
        line_settle = r.one(item, line_settlement)
        lines.append(InvoiceLine(
            id=r.text(item, "AssociatedDocumentLineDocument/LineID", label="a line ID"),
            name=r.text(item, "SpecifiedTradeProduct/Name", label="a line name"),
            quantity=r.amount(quantity, None, "a line quantity (BT-129)"),
            unit=_attr(quantity, "unitCode"),
            net_amount=r.amount(line_settle, f"{line_sum}/LineTotalAmount", "a line net amount (BT-131)"),
            tax_rate=r.amount(line_settle, f"ApplicableTradeTax/{rate}", "a line VAT rate (BT-152)"),
        ))
    terms = [r.raw(t) for t in r.all(settlement, "SpecifiedTradePaymentTerms/Description")]
    return Fields(
        profile=r.text(root, f"{ctx}/GuidelineSpecifiedDocumentContextParameter/ID", label="the profile"),
        invoice_number=r.text(root, f"{doc}/ID", label="the invoice number"),
        type_code=type_code,
        document_type=document_type(type_code, etree.QName(root).localname),
        issue_date=r.date(root, f"{doc}/IssueDateTime", "the issue date (BT-2)"),
        due_date=r.date(settlement, "SpecifiedTradePaymentTerms/DueDateDateTime", "the due date (BT-9)"),
        seller=r.text(seller, "Name", label="the seller name"),
        seller_vat_id=vat_id,
        seller_address=_address(r, seller, address),
        buyer=r.text(buyer, "Name", label="the buyer name"),
        buyer_address=_address(r, buyer, address),
        buyer_reference=r.text(agreement, "BuyerReference", label="the buyer reference"),
        currency=currency,
        line_total=r.amount(summation, "LineTotalAmount", "the line total (BT-106)"),
        allowance_total=r.amount(summation, "AllowanceTotalAmount", "the allowance total (BT-107)"),
        charge_total=r.amount(summation, "ChargeTotalAmount", "the charge total (BT-108)"),
        net_total=r.amount(summation, "TaxBasisTotalAmount", "the net total (BT-109)"),
        tax_total=r.amount(_pick_currency(list(r.all(summation, "TaxTotalAmount")), currency), None,
                           "the tax total (BT-110)"),
        grand_total=r.amount(summation, "GrandTotalAmount", "the grand total (BT-112)"),
        prepaid_total=r.amount(summation, "TotalPrepaidAmount", "the prepaid amount (BT-113)"),
        rounding=r.amount(summation, "RoundingAmount", "the rounding amount (BT-114)"),
        amount_due=r.amount(summation, "DuePayableAmount", "the amount due (BT-115)"),
        iban=iban,
        payment_terms="\n".join(t for t in terms if t) or None,
        notes=tuple(filter(None, (r.raw(n) for n in r.all(root, f"{doc}/IncludedNote/Content")))),
        taxes=taxes,
        lines=tuple(lines),
        warnings=tuple(r.warnings),
    )


def read_ubl(root: Element) -> Fields:
    """Read a UBL 2.1 Invoice or CreditNote."""
    r = _Reader()
    credit = etree.QName(root).localname == "CreditNote"
    supplier = r.one(root, "AccountingSupplierParty/Party")
    customer = r.one(root, "AccountingCustomerParty/Party")
    totals = r.one(root, "LegalMonetaryTotal")
    currency = r.text(root, "DocumentCurrencyCode", label="the currency")
    address = ("PostalAddress/StreetName", "PostalAddress/AdditionalStreetName", "PostalAddress/AddressLine/Line",
               "PostalAddress/PostalZone", "PostalAddress/CityName", "PostalAddress/Country/IdentificationCode")

    def party_name(party: Element | None, label: str) -> str | None:
        return (r.text(party, "PartyLegalEntity/RegistrationName", label=label)
                or r.text(party, "PartyName/Name", label=label))

    # BT-31 is the PartyTaxScheme whose TaxScheme/ID is VAT; any other (FC, ...) is BT-32, the tax number.
    vat = [s for s in r.all(supplier, "PartyTaxScheme") if r.text(s, "TaxScheme/ID") == "VAT"]
    tax_totals = list(r.all(root, "TaxTotal"))
    tax_total = _pick_currency([t for t in (r.one(t, "TaxAmount") for t in tax_totals) if t is not None], currency)
    main_tax = tax_total.getparent() if tax_total is not None else None
    type_code = r.text(root, "CreditNoteTypeCode" if credit else "InvoiceTypeCode", label="the type code")
    qty = "CreditedQuantity" if credit else "InvoicedQuantity"
    lines = []
    for line in _cap_lines(r, r.all(root, "CreditNoteLine" if credit else "InvoiceLine")):
        quantity = r.one(line, qty)
        lines.append(InvoiceLine(
            id=r.text(line, "ID", label="a line ID"),
            name=r.text(line, "Item/Name", label="a line name"),
            quantity=r.amount(quantity, None, "a line quantity (BT-129)"),
            unit=_attr(quantity, "unitCode"),
            net_amount=r.amount(line, "LineExtensionAmount", "a line net amount (BT-131)"),
            tax_rate=r.amount(line, "Item/ClassifiedTaxCategory/Percent", "a line VAT rate (BT-152)"),
        ))
    terms = [r.raw(t) for t in r.all(root, "PaymentTerms/Note")]
    return Fields(
        profile=r.text(root, "CustomizationID", label="the profile"),
        invoice_number=r.text(root, "ID", label="the invoice number"),
        type_code=type_code,
        document_type=document_type(type_code, etree.QName(root).localname),
        issue_date=r.date(root, "IssueDate", "the issue date (BT-2)"),
        due_date=(r.date(root, "DueDate", "the due date (BT-9)")
                  or r.date(root, "PaymentMeans/PaymentDueDate", "the due date (BT-9)")
                  or r.date(root, "PaymentTerms/PaymentDueDate", "the due date (BT-9)")),
        seller=party_name(supplier, "the seller name"),
        seller_vat_id=next(filter(None, (r.text(s, "CompanyID") for s in vat)), None),
        seller_address=_address(r, supplier, address),
        buyer=party_name(customer, "the buyer name"),
        buyer_address=_address(r, customer, address),
        buyer_reference=r.text(root, "BuyerReference", label="the buyer reference"),
        currency=currency,
        line_total=r.amount(totals, "LineExtensionAmount", "the line total (BT-106)"),
        allowance_total=r.amount(totals, "AllowanceTotalAmount", "the allowance total (BT-107)"),
        charge_total=r.amount(totals, "ChargeTotalAmount", "the charge total (BT-108)"),
        net_total=r.amount(totals, "TaxExclusiveAmount", "the net total (BT-109)"),
        tax_total=r.amount(tax_total, None, "the tax total (BT-110)"),
        grand_total=r.amount(totals, "TaxInclusiveAmount", "the grand total (BT-112)"),
        prepaid_total=r.amount(totals, "PrepaidAmount", "the prepaid amount (BT-113)"),
        rounding=r.amount(totals, "PayableRoundingAmount", "the rounding amount (BT-114)"),
        amount_due=r.amount(totals, "PayableAmount", "the amount due (BT-115)"),
        iban=next(filter(None, (r.text(a) for a in r.all(root, "PaymentMeans/PayeeFinancialAccount/ID"))), None),
        payment_terms="\n".join(t for t in terms if t) or None,
        notes=tuple(filter(None, (_NOTE_SUBJECT.sub("", r.raw(n) or "").strip() for n in r.all(root, "Note")))),
        taxes=tuple(
            TaxSubtotal(
                category=r.text(sub, "TaxCategory/ID"),
                rate=r.amount(sub, "TaxCategory/Percent", "a VAT rate (BT-119)"),
                basis=r.amount(sub, "TaxableAmount", "a VAT taxable amount (BT-116)"),
                amount=r.amount(sub, "TaxAmount", "a VAT amount (BT-117)"),
            )
            for sub in r.all(main_tax, "TaxSubtotal")
        ),
        lines=tuple(lines),
        warnings=tuple(r.warnings),
    )
