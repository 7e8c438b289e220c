"""The documents list, its CSV and the dashboard's spend: queries over the documents' fields.

A document's fields are JSON in ``documents.fields`` (``{"fields": {...}}``,
gateway.fields); a document stored before fields were read has its e-invoice
XML's in ``documents.einvoice``. A person's or a rule's company, type and
number are the top-level columns and win over what was read. Sorting and
filtering read the JSON with SQLite's ``json_extract``: a full scan of the
documents, a few milliseconds per thousand (docs/admin.md has the figures).

An e-invoice and the readable PDF made from it are one invoice: the list, the
CSV and the sums show the XML's row (the PDF's exports count for it) and leave
the rendered PDF out.

Every name a person can sort or filter by is looked up in a fixed table here:
no text from the request ever becomes SQL.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from werkzeug.exceptions import BadRequest

from gateway.store import EXPORT_STATES, ORPHANED


def _field(name: str) -> str:
    """A field's value: the fields read, else the e-invoice XML's (documents stored before fields were read)."""
    return (f"coalesce(json_extract(documents.fields, '$.fields.{name}'), "
            f"json_extract(documents.einvoice, '$.{name}'))")


#: The columns of the list as SQL expressions over ``documents`` (fixed text: never from the request).
SELLER = f"coalesce(nullif(trim(documents.company), ''), {_field('seller')})"
NUMBER = f"coalesce(nullif(trim(documents.invoice_number), ''), {_field('invoice_number')})"
ISSUED = f"substr(coalesce({_field('issue_date')}, documents.doc_date), 1, 10)"
DUE = f"substr({_field('due_date')}, 1, 10)"
CURRENCY = f"upper({_field('currency')})"
TOTAL_TEXT = f"coalesce({_field('grand_total')}, {_field('amount_due')})"
TOTAL = f"CAST({TOTAL_TEXT} AS REAL)"
DOCTYPE = f"coalesce(nullif(trim(documents.document_type), ''), {_field('document_type')})"
#: An e-invoice's rendered PDF: its XML's row stands for the pair.
NOT_RENDERED = "documents.origin != 'einvoice-render'"
#: The readable PDF rendered from an e-invoice XML (``documents``): stored right after it, from the same mail.
RENDERED_OF = ("(SELECT p.id FROM message_documents md JOIN documents p ON p.id = md.document_id "
               "WHERE md.message_id = documents.message_id AND p.origin = 'einvoice-render' AND p.id > documents.id "
               "ORDER BY p.id LIMIT 1)")
#: The other way round: the XML a rendered PDF ``d`` was made from.
XML_OF = ("(SELECT x.id FROM message_documents md JOIN documents x ON x.id = md.document_id "
          "WHERE md.message_id = d.message_id AND x.kind = 'xml' AND x.id < d.id ORDER BY x.id DESC LIMIT 1)")

SORTS: dict[str, str] = {
    "supplier": f"lower({SELLER})", "number": NUMBER, "date": ISSUED, "due": DUE, "total": TOTAL,
    "type": DOCTYPE, "received": "documents.id",
}
VIEWS = ("list", "cards")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True)
class DocumentQuery:
    """What the documents page (and its CSV) shows: filters, sort column and direction.

    Attributes:
        supplier: part of the supplier's name (case-insensitive), or None.
        date_from, date_to: issue dates (inclusive, ISO), or None.
        due_before: due dates on or before this ISO date, or None.
        amount_min, amount_max: the total's range (inclusive), or None.
        currency: an ISO 4217 code, or None.
        document_type, tag, approved, archived, export_state, orphaned: as before (Store.list_documents).
        sort: a key of SORTS; descending: the direction.
        view: ``list`` or ``cards``.
    """

    supplier: str | None = None
    date_from: str | None = None
    date_to: str | None = None
    due_before: str | None = None
    amount_min: Decimal | None = None
    amount_max: Decimal | None = None
    currency: str | None = None
    document_type: str | None = None
    tag: str | None = None
    approved: bool | None = None
    archived: bool | None = False
    export_state: str | None = None
    orphaned: bool | None = None
    sort: str = "received"
    descending: bool = True
    view: str = "list"


def _date(args: Mapping[str, str], key: str) -> str | None:
    value = (args.get(key) or "").strip()
    if not value:
        return None
    try:
        if not _DATE.fullmatch(value):
            raise ValueError
        dt.date.fromisoformat(value)
    except ValueError:
        raise BadRequest(f"{key}: a date as YYYY-MM-DD, not {value!r}") from None
    return value


def _amount(args: Mapping[str, str], key: str) -> Decimal | None:
    value = (args.get(key) or "").strip().replace(" ", "")
    if not value:
        return None
    if "," in value and "." not in value:
        value = value.replace(",", ".")
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise BadRequest(f"{key}: an amount such as 100 or 99.50, not {value!r}") from None
    if not amount.is_finite():
        raise BadRequest(f"{key}: an amount such as 100 or 99.50, not {value!r}")
    return amount


def parse_query(args: Mapping[str, str]) -> DocumentQuery:
    """The query a page's (or CSV link's) parameters ask for; a clear 400 for a value it cannot use."""
    state = args.get("export_state") or None
    if state and state not in EXPORT_STATES:
        raise BadRequest(f"export_state: one of {', '.join(EXPORT_STATES)}")
    sort = args.get("sort") or "received"
    if sort not in SORTS:
        raise BadRequest(f"sort: one of {', '.join(SORTS)}")
    order = args.get("order") or ("desc" if sort in ("received", "date", "total") else "asc")
    if order not in ("asc", "desc"):
        raise BadRequest("order: asc or desc")
    view = args.get("view") or "list"
    if view not in VIEWS:
        raise BadRequest(f"view: one of {', '.join(VIEWS)}")
    currency = (args.get("currency") or "").strip().upper() or None
    return DocumentQuery(
        supplier=(args.get("supplier") or args.get("company") or "").strip() or None,
        date_from=_date(args, "date_from"), date_to=_date(args, "date_to"), due_before=_date(args, "due_before"),
        amount_min=_amount(args, "amount_min"), amount_max=_amount(args, "amount_max"), currency=currency,
        document_type=args.get("document_type") or None, tag=args.get("tag") or None,
        approved={"yes": True, "no": False}.get(args.get("approved", ""), None),
        archived={"yes": True, "no": False, "any": None}.get(args.get("archived", "no"), False),
        export_state=state, orphaned=True if args.get("orphaned") == "yes" else None,
        sort=sort, descending=order == "desc", view=view)


def _like(text: str) -> str:
    """``text`` as a LIKE pattern matching it anywhere (its own % and _ taken literally)."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def where(q: DocumentQuery) -> tuple[list[str], list[Any]]:
    """The SQL conditions (fixed text) and their arguments for ``q``."""
    cond: list[str] = [NOT_RENDERED]
    args: list[Any] = []
    if q.orphaned is not None:
        cond.append(("" if q.orphaned else "NOT ") + ORPHANED)
    if q.supplier:
        cond.append(f"{SELLER} LIKE ? ESCAPE '\\'")
        args.append(_like(q.supplier))
    for expr, op, value in ((ISSUED, ">=", q.date_from), (ISSUED, "<=", q.date_to), (DUE, "<=", q.due_before),
                            (TOTAL, ">=", q.amount_min), (TOTAL, "<=", q.amount_max)):
        if value is not None:
            cond.append(f"{expr} {op} ?")
            args.append(float(value) if isinstance(value, Decimal) else value)
    if q.currency:
        cond.append(f"{CURRENCY} = ?")
        args.append(q.currency)
    if q.document_type:
        cond.append(f"{DOCTYPE} = ?")
        args.append(q.document_type)
    if q.tag:
        cond.append("EXISTS (SELECT 1 FROM json_each(documents.tags) WHERE value = ?)")
        args.append(q.tag)
    if q.approved is not None:
        cond.append("documents.approved_at IS " + ("NOT NULL" if q.approved else "NULL"))
    if q.archived is not None:
        cond.append("documents.archived_at IS " + ("NOT NULL" if q.archived else "NULL"))
    if q.export_state:
        # the pair's exports count: a target may take only the readable PDF of an e-invoice
        cond.append(f"(EXISTS (SELECT 1 FROM exports e WHERE e.document_id = documents.id AND e.state = ?) "
                    f"OR (documents.kind = 'xml' AND EXISTS (SELECT 1 FROM exports e WHERE e.state = ? "
                    f"AND e.document_id = {RENDERED_OF})))")
        args += [q.export_state, q.export_state]
    return cond, args


def order_by(q: DocumentQuery, key: str | None = None) -> str:
    """ORDER BY for ``q``: unknown values last in either direction, then newest first.

    ``key``: the name the sort value already has (a column of a CTE), else its expression.
    """
    direction = "DESC" if q.descending else "ASC"
    if q.sort == "received":
        return f"documents.id {direction}"
    expr = key or SORTS[q.sort]
    return f"({expr}) IS NULL, {expr} {direction}, {'documents.id' if key is None else 'id'} DESC"


#: What each row of the list shows, computed as the list sorts (``row["shown"]``).
SHOWN = {"supplier": SELLER, "number": NUMBER, "date": ISSUED, "due": DUE, "total": TOTAL_TEXT,
         "currency": CURRENCY, "type": DOCTYPE}


def count_documents(conn: Any, q: DocumentQuery) -> int:
    """How many documents ``q`` matches (an e-invoice pair counts once)."""
    cond, args = where(q)
    return int(conn.execute(f"SELECT count(*) FROM documents WHERE {' AND '.join(cond)}", args).fetchone()[0])


def list_documents(conn: Any, q: DocumentQuery, *, limit: int, offset: int) -> list[dict[str, Any]]:
    """One page of the documents ``q`` asks for, sorted; each row has the ``shown`` columns.

    The page's ids come first, with each document's sort value read once (a
    materialized CTE); the shown columns are read for the page's rows only.
    """
    cond, args = where(q)
    sql_where = " AND ".join(cond)
    if q.sort == "received":
        ids = [r[0] for r in conn.execute(f"SELECT documents.id FROM documents WHERE {sql_where} "
                                          f"ORDER BY {order_by(q)} LIMIT ? OFFSET ?", [*args, limit, offset])]
    else:
        ids = [r[0] for r in conn.execute(
            f"WITH s AS MATERIALIZED (SELECT documents.id AS id, {SORTS[q.sort]} AS k FROM documents "
            f"WHERE {sql_where}) SELECT id FROM s ORDER BY {order_by(q, 'k')} LIMIT ? OFFSET ?",
            [*args, limit, offset])]
    shown = ", ".join(f"{expr} AS shown_{name}" for name, expr in SHOWN.items())
    marks = ", ".join("?" for _ in ids)
    rows = {r["id"]: dict(r) for r in conn.execute(
        f"SELECT documents.*, {shown} FROM documents WHERE documents.id IN ({marks})", ids)}
    out = []
    for i in ids:
        row = rows[i]
        row["shown"] = {name: row.pop(f"shown_{name}") for name in SHOWN}
        out.append(row)
    return out


# -- the CSV for the accountant ----------------------------------------------------------

CSV_COLUMNS = ("id", "seller", "seller_vat_id", "invoice_number", "issue_date", "due_date", "currency",
               "net_total", "tax_total", "grand_total", "amount_due", "document_type", "filename", "received",
               "exported_to")
MONEY = ("net_total", "tax_total", "grand_total", "amount_due")
#: What a spreadsheet reads as the start of a formula (OWASP's list: = + - @, tab and carriage return).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def cell(value: Any) -> str:
    """A text cell that no spreadsheet runs as a formula: a leading = + - @ (or tab, CR) gets a ``'``."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def money_cell(value: Any) -> str:
    """An amount with a dot as the decimal separator and no thousands separator; not a number: a guarded text."""
    if value in (None, ""):
        return ""
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        return cell(value)
    return f"{amount:.2f}" if amount.is_finite() else cell(value)


def _delivered(conn: Any) -> dict[int, list[str]]:
    """Per document (a rendered PDF's under its XML's id), the targets it was delivered to."""
    out: dict[int, list[str]] = {}
    rows = conn.execute(
        f"SELECT CASE WHEN d.origin = 'einvoice-render' THEN coalesce({XML_OF}, d.id) ELSE d.id END, "
        f"e.target FROM exports e JOIN documents d ON d.id = e.document_id WHERE e.state = 'delivered' "
        f"ORDER BY e.target")
    for doc_id, target in rows:
        names = out.setdefault(int(doc_id), [])
        if target not in names:
            names.append(target)
    return out


def csv_lines(conn: Any, q: DocumentQuery) -> Iterator[str]:
    """The CSV of every document ``q`` matches (no paging), line by line, sorted as the page."""
    cond, args = where(q)
    delivered = _delivered(conn)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    rows = conn.execute(
        f"SELECT documents.id, {SELLER}, {_field('seller_vat_id')}, {NUMBER}, {ISSUED}, {DUE}, {CURRENCY}, "
        f"{_field('net_total')}, {_field('tax_total')}, {_field('grand_total')}, {_field('amount_due')}, "
        f"{DOCTYPE}, documents.filename, documents.created FROM documents WHERE {' AND '.join(cond)} "
        f"ORDER BY {order_by(q)}", args)
    for r in rows:
        values = list(r)
        line = [str(values[0]), *(cell(v) for v in values[1:7]), *(money_cell(v) for v in values[7:11]),
                *(cell(v) for v in values[11:14]), cell(", ".join(delivered.get(int(values[0]), [])))]
        writer.writerow(line)
        yield buf.getvalue()
        buf.seek(0)
        buf.truncate()


# -- spend for the dashboard -------------------------------------------------------------

#: The document types that are spend; a credit note subtracts; unknown type counts as an invoice.
#: Reminders, statements, order confirmations and delivery notes repeat or announce an invoice.
SPEND_TYPES = ("invoice", "receipt", "credit_note")
#: A document received this long before the window cannot have been issued inside it (read no further back).
RECEIVED_BEFORE = dt.timedelta(days=62)


@dataclass(frozen=True)
class Spend:
    """The spend issued in a window, in each currency on its own.

    Attributes:
        months: per currency, per month (``YYYY-MM``): the sum of the totals.
        suppliers: per currency, the suppliers with the largest spend (largest
            first), each a dict of supplier (None when unknown), currency, total
            and documents.
    """

    months: dict[str, dict[str, Decimal]]
    suppliers: list[dict[str, Any]]


def _money(value: Any) -> Decimal:
    """A SUM of REALs as cents-exact Decimal."""
    return Decimal(str(value or 0)).quantize(Decimal("0.01"))


def spend(conn: Any, since: dt.date, until: dt.date, suppliers: int = 10) -> Spend:
    """Spend issued in [since, until): per currency per month, and the top ``suppliers`` per currency.

    One pass over the documents received from shortly before the window on,
    each document's fields read once (a materialized CTE).
    """
    rows = conn.execute(
        f"WITH d AS MATERIALIZED (SELECT {SELLER} AS seller, {CURRENCY} AS currency, {ISSUED} AS issued, "
        f"{TOTAL} AS total, {DOCTYPE} AS type FROM documents WHERE {NOT_RENDERED} AND documents.created >= ?) "
        f"SELECT currency, substr(issued, 1, 7), min(seller), "
        f"sum(CASE WHEN type = 'credit_note' THEN -abs(total) ELSE total END), count(*) FROM d "
        f"WHERE total IS NOT NULL AND currency IS NOT NULL AND coalesce(type, 'invoice') IN {SPEND_TYPES!r} "
        f"AND issued >= ? AND issued < ? GROUP BY 1, 2, lower(trim(seller))",
        ((since - RECEIVED_BEFORE).isoformat(), since.isoformat(), until.isoformat()))
    months: dict[str, dict[str, Decimal]] = {}
    per_supplier: dict[tuple[str | None, str], dict[str, Any]] = {}
    for currency, month, seller, total, count in rows:
        amount = _money(total)
        by_month = months.setdefault(str(currency), {})
        by_month[str(month)] = by_month.get(str(month), Decimal("0.00")) + amount
        key = (seller.strip().lower() if seller else None, str(currency))
        entry = per_supplier.setdefault(key, {"supplier": seller, "currency": str(currency),
                                              "total": Decimal("0.00"), "documents": 0})
        entry["total"] += amount
        entry["documents"] += int(count)
    ranked = sorted(per_supplier.values(), key=lambda e: (-e["total"], str(e["supplier"] or "")))
    top = [e for c in months for e in [e for e in ranked if e["currency"] == c][:suppliers]]
    return Spend(months, top)
