"""Light validation of an e-invoice's fields: warnings for people, never exceptions.

This is no schema or Schematron validation: it checks what a person booking
the invoice relies on, namely that the mandatory header fields are there and
that the totals add up (EN 16931 BR-CO-10, BR-CO-13, BR-CO-15, BR-CO-16).
"""

from __future__ import annotations

from decimal import Decimal

from .extract import Fields
from .model import format_amount

_CENT = Decimal("0.01")

# (attribute, how a person calls it); EN 16931 BR-01 .. BR-06 make them mandatory.
MANDATORY: tuple[tuple[str, str], ...] = (
    ("invoice_number", "invoice number (BT-1)"),
    ("issue_date", "issue date (BT-2)"),
    ("seller", "seller name (BT-27)"),
    ("currency", "currency (BT-5)"),
    ("grand_total", "grand total (BT-112)"),
)


def _differs(a: Decimal, b: Decimal) -> bool:
    """Whether two amounts differ by a cent or more (sub-cent noise is not a finding)."""
    return abs(a - b) >= _CENT


def check(f: Fields) -> list[str]:
    """Warnings about missing mandatory fields and totals that do not add up."""
    found = [f"missing {label}" for attr, label in MANDATORY if getattr(f, attr) is None]

    nets = [line.net_amount for line in f.lines]
    if nets and None not in nets:
        line_sum = sum((n for n in nets if n is not None), Decimal(0))
        # Compare with BT-106; without it, with BT-109 when no allowances or charges intervene.
        target, label = f.line_total, "line total (BT-106)"
        if target is None and not f.allowance_total and not f.charge_total:
            target, label = f.net_total, "net total (BT-109)"
        if target is not None and _differs(line_sum, target):
            found.append(f"the line net amounts add up to {format_amount(line_sum)}, "
                         f"not to the {label} {format_amount(target)}")

    if f.line_total is not None and f.net_total is not None:
        expected = f.line_total - (f.allowance_total or 0) + (f.charge_total or 0)
        if _differs(expected, f.net_total):
            found.append(f"line total (BT-106) {format_amount(f.line_total)} less allowances plus charges is "
                         f"{format_amount(expected)}, not the net total (BT-109) {format_amount(f.net_total)}")

    if f.net_total is not None and f.grand_total is not None:
        expected = f.net_total + (f.tax_total or 0)
        if _differs(expected, f.grand_total):
            found.append(f"net total (BT-109) {format_amount(f.net_total)} plus tax total (BT-110) "
                         f"{format_amount(f.tax_total or Decimal(0))} is {format_amount(expected)}, "
                         f"not the grand total (BT-112) {format_amount(f.grand_total)}")

    if f.grand_total is not None and f.amount_due is not None:
        expected = f.grand_total - (f.prepaid_total or 0) + (f.rounding or 0)
        # Without BT-113 (Factur-X MINIMUM has none) a lower amount due may be an unstated prepayment.
        unstated_prepayment = f.prepaid_total is None and f.amount_due < f.grand_total
        if _differs(expected, f.amount_due) and not unstated_prepayment:
            found.append(f"grand total (BT-112) {format_amount(f.grand_total)} less prepaid plus rounding is "
                         f"{format_amount(expected)}, not the amount due (BT-115) {format_amount(f.amount_due)}")
    return found
