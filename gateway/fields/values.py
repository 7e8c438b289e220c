"""Values in text: dates, amounts, currencies, VAT IDs and IBANs, in six languages.

Own bounded parsers rather than dateparser: a document needs only absolute
dates, in the forms invoices print, found *inside* a line with their place;
dateparser reads relative words ("tomorrow"), costs milliseconds a call and
brings three dependencies. Every regex here is linear and runs on one line.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

MONTHS: dict[str, int] = {}
for _number, _names in enumerate((
    "januar jänner january janvier januari gennaio enero jan jän janv ene gen",
    "februar feber february février fevrier februari febbraio febrero feb fév fev febr",
    "märz maerz marz march mars maart marzo mär mrz mar mrt",
    "april avril aprile abril apr avr",
    "mai may mei maggio mayo mag",
    "juni june juin junio giugno jun jui giu",
    "juli july juillet luglio julio jul juil lug",
    "august august août aout augustus agosto aug aoû ago",
    "september septembre settembre septiembre sep sept set",
    "oktober october octobre ottobre octubre okt oct ott",
    "november novembre noviembre nov",
    "dezember december décembre decembre dicembre diciembre dez dec déc dic",
), start=1):
    for _name in _names.split():
        MONTHS[_name] = _number
_MONTH_RE = "|".join(sorted((re.escape(m) for m in MONTHS), key=len, reverse=True))
_DATE_RES = (
    # 2026-03-31, 2026/03/31
    ("ymd", re.compile(r"(?<!\d)(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?!\d)")),
    # 31.03.2026, 31/03/2026, 31-03-26, 03/31/2026 (decided by the values)
    ("dmy", re.compile(r"(?<![\d.,])(\d{1,2})[./-](\d{1,2})[./-](\d{4}|\d{2})(?![\d,]|\.\d)")),
    # 31. März 2026, 31 de marzo de 2026, 1er janvier 2026, 31 Mar. 2026
    ("d_month_y", re.compile(rf"(?<!\d)(\d{{1,2}})(?:\.|er|st|nd|rd|th|º)?\s*(?:de\s+)?({_MONTH_RE})\.?,?\s*(?:de\s+)?(\d{{4}})(?!\d)", re.I)),
    # March 31, 2026
    ("month_d_y", re.compile(rf"(?<![a-zà-ÿ])({_MONTH_RE})\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?,?\s+(\d{{4}})(?!\d)", re.I)),
)


def _date(y: int, m: int, d: int) -> dt.date | None:
    if y < 100:
        y += 2000 if y < 70 else 1900
    if not 1970 <= y <= 2100:
        return None
    try:
        return dt.date(y, m, d)
    except ValueError:
        return None


def find_dates(text: str, *, month_first: bool = False) -> list[tuple[dt.date, int, int]]:
    """The dates in ``text`` with their (start, end) offsets, in order; day first unless ``month_first``."""
    found: list[tuple[dt.date, int, int]] = []
    taken: list[tuple[int, int]] = []
    for kind, pattern in _DATE_RES:
        for m in pattern.finditer(text[:2000]):
            if any(s < m.end() and m.start() < e for s, e in taken):
                continue
            a, b, c = m.groups()
            date: dt.date | None
            if kind == "ymd":
                date = _date(int(a), int(b), int(c))
            elif kind == "dmy":
                first, second = int(a), int(b)
                if month_first and first <= 12:
                    first, second = second, first
                elif second > 12 and first <= 12:  # 03/31/2026 can only be month first
                    first, second = second, first
                date = _date(int(c), second, first)
            elif kind == "d_month_y":
                date = _date(int(c), MONTHS[b.lower()], int(a))
            else:
                date = _date(int(c), MONTHS[a.lower()], int(b))
            if date is not None:
                found.append((date, m.start(), m.end()))
                taken.append((m.start(), m.end()))
    return sorted(found, key=lambda f: f[1])


CURRENCY_SYMBOLS = {"€": "EUR", "$": "USD", "£": "GBP", "¥": "JPY", "fr.": "CHF", "sfr.": "CHF"}
CURRENCY_CODES = frozenset(
    "EUR USD GBP CHF JPY SEK NOK DKK PLN CZK HUF RON BGN HRK CAD AUD NZD CNY INR BRL MXN ZAR TRY".split())
_CURRENCY_RE = re.compile(r"(?<![A-Za-z])(EUR|USD|GBP|CHF|JPY|SEK|NOK|DKK|PLN|CZK|HUF|RON|BGN|CAD|AUD|NZD|CNY|INR"
                          r"|BRL|MXN|ZAR|TRY)(?![A-Za-z])|€|\$|£|¥|\bS?Fr\.", re.I)
_AMOUNT_RE = re.compile(
    r"(?<![\w.,/'-])([-−–]\s?)?"
    r"(\d{1,3}(?:(?:[.,'’\u202f\u00a0 ])\d{3})+(?:[.,]\d{1,2})?|\d+[.,]\d{1,2}|\d+)"
    r"(?![\w/]|[.,]\d|%|\s?%)(-)?")


@dataclass(frozen=True)
class Amount:
    """An amount found in text.

    Attributes:
        value: the amount.
        currency: the ISO 4217 code printed beside it, or None.
        start, end: its offsets in the text.
        decimals: whether it had a decimal part (a total almost always has).
    """

    value: Decimal
    currency: str | None
    start: int
    end: int
    decimals: bool


def parse_number(text: str) -> tuple[Decimal, bool] | None:
    """``1.234,56``, ``1,234.56``, ``1 234,56``, ``1'234.56``, ``1234`` -> (Decimal, had decimals)."""
    s = re.sub(r"[\s'’\u202f\u00a0]", "", text)
    decimals = False
    m = re.search(r"[.,](\d{1,2})$", s)
    if m:
        decimals = True
        s = re.sub(r"[.,]", "", s[:m.start()]) + "." + m.group(1)
    else:
        s = re.sub(r"[.,]", "", s)
    try:
        return Decimal(s), decimals
    except InvalidOperation:
        return None


def currency_code(token: str) -> str | None:
    """The ISO code of a currency code or symbol, or None."""
    t = token.strip()
    if t.upper() in CURRENCY_CODES:
        return t.upper()
    return CURRENCY_SYMBOLS.get(t.lower())


def find_amounts(text: str) -> list[Amount]:
    """The amounts in ``text``, each with a currency printed right before or after it."""
    out: list[Amount] = []
    currencies = [(m.start(), m.end(), currency_code(m.group(0))) for m in _CURRENCY_RE.finditer(text[:2000])]
    for m in _AMOUNT_RE.finditer(text[:2000]):
        parsed = parse_number(m.group(2))
        if parsed is None:
            continue
        value, decimals = parsed
        if m.group(1) or m.group(3):
            value = -value
        cur = None
        for s, e, code in currencies:
            if 0 <= m.start() - e <= 2 or 0 <= s - m.end() <= 2:
                cur = code
        out.append(Amount(value, cur, m.start(), m.end(), decimals))
    return out


def find_currencies(text: str) -> list[str]:
    """The currency codes and symbols in ``text`` as ISO codes, in order."""
    return [c for c in (currency_code(m.group(0)) for m in _CURRENCY_RE.finditer(text[:2000])) if c]


_VAT_RE = re.compile(r"(?<![A-Z0-9])(ATU|BE|BG|CHE|CY|CZ|DE|DK|EE|EL|GR|ES|FI|FR|GB|HR|HU|IE|IT|LT|LU|LV|MT|NL|PL|PT|RO|SE|"
                     r"SI|SK|XI)[ .\-]?([0-9A-Z][0-9A-Z .\-]{7,16}[0-9A-Z])", re.I)


def find_vat_ids(text: str) -> list[tuple[str, int, int]]:
    """The EU VAT IDs in ``text`` whose check digits are right (python-stdnum), compact, with offsets."""
    from stdnum.eu import vat
    from stdnum.gb import vat as gb_vat  # the UK left the EU VAT area; its numbers keep their own check

    out: list[tuple[str, int, int]] = []
    text = text[:2000]
    pos = 0
    # overlapping: "Ltd GB980780629" starts a match at "Lt" (Lithuania) that must not swallow the GB number
    while (m := _VAT_RE.search(text, pos)) is not None:
        pos = m.start() + 1
        prefix, rest = m.group(1), m.group(2)
        # try the longest run first, then shorter ones (the number may be followed by other words)
        parts = re.split(r"([ .\-])", rest)
        for n in range(len(parts), 0, -1):
            candidate = (prefix + "".join(parts[:n])).upper()
            try:
                checker = gb_vat if candidate.startswith("GB") else vat
                if checker.is_valid(candidate):
                    end = m.start() + len(prefix) + len("".join(parts[:n]))
                    out.append(("GB" + gb_vat.compact(candidate) if candidate.startswith("GB") else vat.compact(candidate), m.start(), end))
                    pos = end
                    break
            except Exception:  # stdnum raises only its own errors for odd input; never let one through
                continue
    return out
