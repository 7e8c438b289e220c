"""Layouts learned from a person's corrections: the next invoice of the same supplier reads right.

When a person corrects a field, ``locate`` finds the corrected value in the
document's text (the words on the page) and keeps the label printed left of
it or above it ("Beleg-Kennung"), or, when no label is there, its place
(page and box). ``read_learned`` reads the next document of the same
supplier by what was learned, before the generic readers' guess counts: its
source is ``supplier``, labelled "learned from your correction on document N".

The supplier is known by a key (``supplier_key``): the document's VAT ID if
it has one, else its IBAN, else the sender's domain (not a free mailer's),
else the seller's name, normalised. Both functions are pure; the store keeps
the entries (``learned_layouts``).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from . import readers
from .model import FieldSource
from .text import Layout, Line, Segment
from .values import find_amounts, find_currencies, find_dates, find_vat_ids

#: the fields a layout is learned for (a seller's name or a document type is not "next to a label")
LEARNABLE = ("invoice_number", "issue_date", "due_date", "net_total", "tax_total", "grand_total", "amount_due",
             "iban", "seller_vat_id", "buyer", "currency")
_AMOUNTS = ("net_total", "tax_total", "grand_total", "amount_due")
_DATES = ("issue_date", "due_date")
_LETTERS = re.compile(r"[^\W\d_]{2,}")


@dataclass(frozen=True)
class Learned:
    """Where a supplier prints one field.

    Attributes:
        field: the field name.
        label: the label text printed left of the value (``relation`` ``right``) or above it (``below``),
            or None when the place is what was learned.
        relation: ``right`` or ``below`` with a label, None without.
        page: the page the value was on (1-based).
        box: the value's box [x0, y0, x1, y1] in PDF points from the page's top-left corner.
        document_id: the document whose correction taught it.
    """

    field: str
    label: str | None
    relation: str | None
    page: int
    box: tuple[float, float, float, float]
    document_id: int

    @property
    def note(self) -> str:
        """What the field's source says: "learned from your correction on document N"."""
        return f"learned from your correction on document {self.document_id}"


def supplier_key(values: Mapping[str, Any], sender_domain: str = "") -> str | None:
    """The supplier's key: ``vat:``, ``iban:``, ``domain:`` or ``name:``, the first the document has."""
    keys = supplier_keys(values, sender_domain)
    return keys[0] if keys else None


def supplier_keys(values: Mapping[str, Any], sender_domain: str = "") -> list[str]:
    """Every key the document could be known by, in the order ``supplier_key`` prefers them."""
    from gateway.payment_guard import FREEMAIL, normalize_iban

    keys = []
    vat = re.sub(r"[\s.\-]", "", str(values.get("seller_vat_id") or "")).upper()
    if vat:
        keys.append(f"vat:{vat}")
    iban = normalize_iban(str(values.get("iban") or ""))
    if iban:
        keys.append(f"iban:{iban}")
    domain = sender_domain.strip().lower().rstrip(".")
    if domain:
        from gateway.senderauth.dmarc import org_domain

        domain = org_domain(domain)
        if domain not in FREEMAIL:
            keys.append(f"domain:{domain}")
    name = " ".join(re.sub(r"[^\w&]+", " ", str(values.get("seller") or "")).casefold().split())
    if name:
        keys.append(f"name:{name}")
    return keys


# -- finding a corrected value in the text ------------------------------------------------


def _offset(field: str, value: str, text: str) -> int | None:
    """Where ``value`` of ``field`` is printed in ``text`` (its start), or None."""
    if field in _AMOUNTS:
        try:
            wanted = Decimal(value)
        except InvalidOperation:
            return None
        return next((a.start for a in find_amounts(text) if a.value == wanted and a.decimals), None)
    if field in _DATES:
        for month_first in (False, True):
            hit = next((start for d, start, _ in find_dates(text, month_first=month_first)
                        if d.isoformat() == value), None)
            if hit is not None:
                return hit
        return None
    # text: the value's characters, whatever the spaces between them ("DE89 3704 ...")
    pattern = r"[\s]?".join(re.escape(c) for c in re.sub(r"\s", "", value))
    m = re.search(pattern, text, re.I) if pattern else None
    return m.start() if m else None


def _label_text(text: str) -> str | None:
    """A label from the text before a value: its last 60 characters, without trailing ``:#.``; None without words."""
    label = " ".join(text.split()).strip(" :#.-–")
    label = label[-60:].strip()
    return label if _LETTERS.search(label) and len(label) >= 3 else None


def _left_label(line: Line, seg: Segment, start: int) -> str | None:
    """The label left of a value on its line: in its own run, else the run (phrase) just before it."""
    own = _label_text(seg.text[:start])
    if own:
        return own
    before = [s for s in line.segments if s.box[2] <= seg.box[0] + 1 and s is not seg]
    if not before:
        return None
    nearest = max(before, key=lambda s: s.box[2])
    if seg.box[0] - nearest.box[2] > 250:  # across the page: no label of this value
        return None
    phrase = [nearest]
    for s in reversed(before[:-1] if before[-1] is nearest else before):
        if phrase[0].box[0] - s.box[2] < max(6.0, 1.2 * (s.box[3] - s.box[1])):
            phrase.insert(0, s)
        else:
            break
    return _label_text(" ".join(s.text for s in phrase))


def _above_label(lines: Sequence[Line], index: int, seg: Segment) -> str | None:
    """The label right above a value (a column heading), on the same page, overlapping it."""
    height = max(1.0, seg.box[3] - seg.box[1])
    for above in reversed(lines[max(0, index - 3):index]):
        if above.page != seg.page or seg.box[1] - above.box[3] > max(3 * height, 18.0):
            return None
        parts = [s for s in above.segments if s.box[0] < seg.box[2] + 10 and s.box[2] > seg.box[0] - 10]
        if parts:
            best = min(parts, key=lambda s: abs(s.box[0] - seg.box[0]))
            return _label_text(best.text)
    return None


def locate(layout: Layout, field: str, value: str, document_id: int) -> Learned | None:
    """Where the corrected ``value`` of ``field`` is printed: its label (left of it or above it), else its place."""
    if field not in LEARNABLE or not value:
        return None
    placed: Learned | None = None
    for index, line in enumerate(layout.lines):
        for seg in line.segments:
            start = _offset(field, value, seg.text)
            if start is None:
                continue
            label = _left_label(line, seg, start)
            relation = "right" if label else None
            if label is None:
                label = _above_label(layout.lines, index, seg)
                relation = "below" if label else None
            if label is not None:
                return Learned(field, label, relation, seg.page, seg.box, document_id)
            if placed is None:
                placed = Learned(field, None, None, seg.page, seg.box, document_id)
    return placed


# -- reading by what was learned ---------------------------------------------------------------


def _parser(field: str, month_first: bool) -> Callable[[str], str | None]:
    """How a learned field's value is read from the text after (or under) its label."""
    if field in _AMOUNTS:
        def amount(text: str) -> str | None:
            found = readers._amount_value(text)
            return readers.amount_text(found.value) if found is not None else None
        return amount
    if field in _DATES:
        date = readers._date_value(month_first)

        def iso(text: str) -> str | None:
            d: dt.date | None = date(text)
            return d.isoformat() if d is not None else None
        return iso
    if field == "invoice_number":
        return readers._number_value
    if field == "iban":
        from gateway.payment_guard import find_ibans

        return lambda text: next(iter(find_ibans(text[:80])), None)
    if field == "seller_vat_id":
        return lambda text: next((v for v, _, _ in find_vat_ids(text[:80])), None)
    if field == "currency":
        return lambda text: next(iter(find_currencies(text[:20])), None)
    return lambda text: " ".join(text.split()[:8])[:80] or None


def _by_label(layout: Layout, entry: Learned, parse: Callable[[str], str | None]) -> readers.Found | None:
    label = re.compile(r"(?<![\w-])" + r"\s+".join(re.escape(w) for w in (entry.label or "").split())
                       + r"(?![\w])\s*[:#.]?\s*", re.I)
    found = readers.labelled(layout, label, parse)
    if not found:
        return None
    # the label may be printed more than once: the one nearest the learned place
    return min(found, key=lambda f: (f.page != entry.page, abs(f.box[1] - entry.box[1])))


def _by_place(layout: Layout, entry: Learned, parse: Callable[[str], str | None]) -> readers.Found | None:
    x0, y0, x1, y1 = entry.box
    pad = 4.0
    for line in layout.lines:
        if line.page != entry.page:
            continue
        inside = [s for s in line.segments if x0 - pad <= (s.box[0] + s.box[2]) / 2 <= x1 + pad
                  and y0 - pad <= (s.box[1] + s.box[3]) / 2 <= y1 + pad]
        if inside:
            value = parse(" ".join(s.text for s in inside))
            if value is not None:
                box = (min(s.box[0] for s in inside), min(s.box[1] for s in inside),
                       max(s.box[2] for s in inside), max(s.box[3] for s in inside))
                return readers.Found(value, line.page, box, 0.8, None)
    return None


def read_learned(layout: Layout, entries: Sequence[Learned]) -> dict[str, tuple[str, FieldSource]]:
    """The fields a supplier's learned layout gives in ``layout``, each with its source (``supplier``)."""
    out: dict[str, tuple[str, FieldSource]] = {}
    if not layout.lines:
        return out
    month_first = readers.month_first(layout)
    for entry in entries:
        parse = _parser(entry.field, month_first)
        found = _by_label(layout, entry, parse) if entry.label else _by_place(layout, entry, parse)
        if found is None or found.value in (None, ""):
            continue
        out[entry.field] = (str(found.value), FieldSource("supplier", 0.95 if entry.label else 0.8, found.page,
                                                          found.box, entry.note))
    return out
