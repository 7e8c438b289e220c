"""A person's corrections of a document's fields: checked, kept apart, laid over what was read.

A correction is stored on its own (the store's ``field_corrections``), so a
re-reading of the document never overwrites it: whatever reads the fields
again lays the corrections over the new reading with ``apply``. Its source is
``person`` with confidence 1.0, above every other source.

Decisions:

- Values are checked as the readers would take them: dates ISO 8601, amounts
  decimal (``1234.50``, a dot, no thousands separator), an IBAN by its check
  digits and a VAT ID by python-stdnum (the same checks as the readers), a
  document type from DOCUMENT_TYPES, a currency as three letters.
- An empty value (``null`` or ``""``) withdraws the person's correction: what
  was read before comes back.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from .model import DOCUMENT_TYPES, FIELD_NAMES, FieldSource

DATE_FIELDS = ("issue_date", "due_date")
AMOUNT_FIELDS = ("net_total", "tax_total", "grand_total", "amount_due")
MAX_VALUE = 200
#: the document's own columns that follow a field (the names, the list filters, a target's ``since``)
COLUMNS = {"seller": "company", "invoice_number": "invoice_number", "issue_date": "doc_date",
           "document_type": "document_type"}
PERSON = FieldSource("person", 1.0, label="corrected by a person")


class CorrectionError(ValueError):
    """A correction that cannot be taken; the message names the field."""


def _vat_valid(value: str) -> str | None:
    from stdnum.eu import vat
    from stdnum.gb import vat as gb_vat

    compact = re.sub(r"[\s.\-]", "", value).upper()
    try:
        if compact.startswith("GB"):
            return "GB" + str(gb_vat.compact(compact)) if gb_vat.is_valid(compact) else None
        return str(vat.compact(compact)) if vat.is_valid(compact) else None
    except Exception:  # stdnum raises only its own errors for odd input
        return None


def check(name: str, value: Any) -> str | None:
    """The value to store for field ``name`` (normalised), None to withdraw; CorrectionError when wrong."""
    if name not in FIELD_NAMES:
        raise CorrectionError(f"{name}: not a field; the fields are {', '.join(FIELD_NAMES)}")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise CorrectionError(f"{name}: must be text (or null to withdraw the correction)")
    text = str(value).strip()
    if not text:
        return None
    if len(text) > MAX_VALUE:
        raise CorrectionError(f"{name}: at most {MAX_VALUE} characters")
    if any(ord(c) < 32 for c in text):
        raise CorrectionError(f"{name}: must not contain control characters")
    if name in DATE_FIELDS:
        try:
            if not re.fullmatch(r"\d{4}-\d\d-\d\d", text):
                raise ValueError(text)
            return dt.date.fromisoformat(text).isoformat()
        except ValueError:
            raise CorrectionError(f"{name}: {text!r} is not a date as YYYY-MM-DD (e.g. 2026-03-31)") from None
    if name in AMOUNT_FIELDS:
        if not re.fullmatch(r"-?\d{1,15}(?:\.\d{1,4})?", text):
            raise CorrectionError(f"{name}: {text!r} is not an amount as a decimal number with a dot "
                                  "(e.g. 1234.50, no thousands separator)")
        try:
            return format(Decimal(text).quantize(Decimal("0.01")), "f")
        except InvalidOperation:  # pragma: no cover - the pattern keeps it decimal
            raise CorrectionError(f"{name}: {text!r} is not an amount") from None
    if name == "iban":
        from gateway.payment_guard import iban_valid, normalize_iban

        iban = normalize_iban(text)
        if not iban_valid(iban):
            raise CorrectionError(f"iban: {text!r} is not a valid IBAN (its length or check digits are wrong)")
        return iban
    if name == "seller_vat_id":
        vat_id = _vat_valid(text)
        if vat_id is None:
            raise CorrectionError(f"seller_vat_id: {text!r} is not a valid VAT ID (its check digits are wrong)")
        return vat_id
    if name == "currency":
        if not re.fullmatch(r"[A-Za-z]{3}", text):
            raise CorrectionError(f"currency: {text!r} is not a currency code such as EUR")
        return text.upper()
    if name == "document_type":
        kind = text.lower().replace(" ", "_")
        if kind not in DOCUMENT_TYPES:
            raise CorrectionError(f"document_type: {text!r} is not one of {', '.join(DOCUMENT_TYPES)}")
        return kind
    return text


def check_all(given: Any) -> dict[str, str | None]:
    """Every correction of a request body's ``fields`` object checked; CorrectionError at the first wrong one."""
    if not isinstance(given, Mapping) or not given:
        raise CorrectionError('fields: an object of field names and values, e.g. {"invoice_number": "R-1"}')
    return {str(name): check(str(name), value) for name, value in given.items()}


def apply(stored: Mapping[str, Any] | None, corrections: Mapping[str, str]) -> dict[str, Any]:
    """A document's stored fields JSON with the person's corrections laid over it (source ``person``)."""
    stored = stored if isinstance(stored, Mapping) else {}
    values = {k: (stored.get("fields") or {}).get(k) for k in FIELD_NAMES}
    sources = dict(stored.get("field_sources") or {})
    for name, value in corrections.items():
        if name in FIELD_NAMES:
            values[name] = value
            sources[name] = PERSON.to_json()
    return {"fields": values, "field_sources": {k: v for k, v in sources.items() if values.get(k) is not None}}


def stored_fields(fields_json: Any, einvoice_json: Any) -> dict[str, Any] | None:
    """A document's stored fields; one stored before fields were read has its e-invoice's, if any."""
    import json

    def load(value: Any) -> Any:
        try:
            return json.loads(value) if isinstance(value, str) else value
        except ValueError:
            return None

    stored = load(fields_json)
    if isinstance(stored, dict):
        return stored
    inv = load(einvoice_json)
    if not isinstance(inv, dict) or not inv:
        return None
    values = {k: (inv.get(k) or None) for k in FIELD_NAMES}
    values["document_type"] = "credit_note" if inv.get("document_type") == "credit_note" else "invoice"
    return {"fields": values, "field_sources": {k: {"source": "einvoice", "confidence": 1.0}
                                                for k, v in values.items() if v}}


def read_part(stored: Mapping[str, Any] | None, name: str) -> dict[str, Any] | None:
    """What the reading said for field ``name`` (value and source), to bring back when a correction is withdrawn."""
    stored = stored if isinstance(stored, Mapping) else {}
    value = (stored.get("fields") or {}).get(name)
    source = (stored.get("field_sources") or {}).get(name)
    if value is None or (isinstance(source, Mapping) and source.get("source") == "person"):
        return None
    return {"value": value, "source": source}


def withdraw(stored: Mapping[str, Any] | None, name: str, read: Mapping[str, Any] | None) -> dict[str, Any]:
    """The stored fields JSON with field ``name`` back to what was read (``read_part``), or empty."""
    out = apply(stored, {})
    out["fields"][name] = (read or {}).get("value")
    if read and read.get("source"):
        out["field_sources"][name] = dict(read["source"])
    else:
        out["field_sources"].pop(name, None)
    return out
