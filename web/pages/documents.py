"""Documents: the sortable list (or cards) with filters and its CSV, one document with preview and export history."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

from flask import (Blueprint, Response, abort, current_app, render_template, request, send_file, stream_with_context,
                   url_for)

from gateway.fields import FIELD_NAMES
from gateway.store import EXPORT_STATES
from web import actions, corrections, data, preview
from web import documents_query as dq
from web.api import send_document
from web.pages import act, back_to, paging, service

# no prefix: the list's CSV is /documents.csv beside /documents
bp = Blueprint("documents", __name__)

# The document types a person picks from (stored value, label); a value outside the list is kept.
TYPES = (
    ("invoice", "invoice"), ("credit_note", "credit note"), ("receipt", "receipt"), ("reminder", "reminder"),
    ("order_confirmation", "order confirmation"), ("statement", "statement"), ("delivery_note", "delivery note"),
    ("other", "other"),
)


# The fields as the correction form names them (an amount as 1234.50, a date as 2026-03-31).
FIELD_LABELS = {
    "seller": "Seller", "seller_vat_id": "Seller VAT ID", "buyer": "Buyer", "invoice_number": "Invoice number",
    "issue_date": "Issue date", "due_date": "Due date", "currency": "Currency", "net_total": "Net total",
    "tax_total": "Tax total", "grand_total": "Total", "amount_due": "Amount due", "iban": "IBAN",
    "document_type": "Document type",
}


def waiting_reason(cfg: Any, approved: bool) -> str | None:
    """Why a pending export of a document to target ``cfg`` waits: "for approval", "for the schedule" or None."""
    if cfg is None:
        return None
    if cfg.require_approval and not approved:
        return "for approval"
    if cfg.schedule is not None and cfg.schedule.every:
        return "for the schedule"
    return None


def with_waiting(svc: Any, doc: dict[str, Any]) -> dict[str, Any]:
    """A document's JSON with each export's ``waiting`` reason and the targets that wait for its approval."""
    targets = {t.name: t for t in svc.settings.exports}
    for e in doc["exports"]:
        e["waiting"] = waiting_reason(targets.get(e["target"]), doc["approved"]) if e["state"] == "pending" else None
    doc["waiting_for_approval"] = [e["target"] for e in doc["exports"] if e["waiting"] == "for approval"]
    return doc


def partner_of(svc: Any, row: dict[str, Any]) -> dict[str, Any] | None:
    """The other half of an e-invoice pair: the XML for a readable PDF made from it, and the other way round.

    The pipeline stores the PDF it renders from an e-invoice XML right after
    the XML, from the same message, named after it (``IG-42.xml`` and ``IG-42.pdf``).
    """
    rendered = row["origin"] == "einvoice-render"
    if not rendered and not (row["kind"] == "xml" and row["einvoice"]):
        return None
    stem = str(row["filename"]).rpartition(".")[0]
    for d in svc.store.documents_of(int(row["message_id"])):
        other = d["kind"] == "xml" and d["origin"] == "attachment" if rendered else d["origin"] == "einvoice-render"
        if d["id"] != row["id"] and other and str(d["filename"]).rpartition(".")[0] == stem:
            return dict(d)
    return None


def pair_of(svc: Any, row: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(the document to show, the e-invoice XML beside it or None): a pair shows its readable PDF."""
    partner = partner_of(svc, row)
    if partner is None:
        return row, None
    return (partner, row) if row["kind"] == "xml" else (row, partner)


def _link(**changes: str | None) -> str:
    """This page's URL with some parameters changed (None: removed); the page offset starts over."""
    args = {k: v for k, v in request.args.items() if v and k != "offset"}
    for k, v in changes.items():
        if v is None:
            args.pop(k, None)
        else:
            args[k] = v
    return "/documents" + ("?" + urlencode(args) if args else "")


def sort_links(q: dq.DocumentQuery) -> dict[str, str]:
    """Per sortable column, the link a header click follows: that column, or the other direction if sorted by it."""
    links = {}
    for key in dq.SORTS:
        if key == q.sort:
            order = "asc" if q.descending else "desc"
        else:
            order = "desc" if key in ("received", "date", "total") else "asc"
        links[key] = _link(sort=key, order=order)
    return links


def _entry(svc: Any, row: dict[str, Any]) -> dict[str, Any]:
    """One row or card: the document to show (an e-invoice pair's readable PDF), its XML, their exports."""
    main, xml = pair_of(svc, row)
    doc = with_waiting(svc, data.document_json(svc, main))
    pair = with_waiting(svc, data.document_json(svc, xml)) if xml is not None else None
    waits = doc["waiting_for_approval"] or (pair["waiting_for_approval"] if pair else [])
    exports = [*doc["exports"], *[e for e in (pair["exports"] if pair else []) if e["target"] not in
                                   {x["target"] for x in doc["exports"]}]]
    return {"doc": doc, "xml": pair, "waits": bool(waits), "shown": row["shown"], "exports": exports,
            "ids": ",".join(str(d["id"]) for d in (doc, pair) if d is not None)}


@bp.get("/documents")
def index() -> Any:
    """Documents as a sortable list (or cards), with filters and paging; an e-invoice and its readable PDF as one."""
    svc = service()
    q = dq.parse_query(request.args)
    conn = svc.store._conn()
    page = paging(dq.count_documents(conn, q))
    rows = dq.list_documents(conn, q, limit=page["limit"], offset=page["offset"]) if page["total"] else []
    cards = [_entry(svc, r) for r in rows]
    csv_args = {k: v for k, v in request.args.items() if v and k not in ("offset", "view")}
    filtered = any(v for k, v in request.args.items() if k not in ("offset", "view", "sort", "order"))
    return render_template("documents/list.html", cards=cards, page=page, facets=svc.store.document_facets(),
                           states=EXPORT_STATES, args=request.args, q=q, filtered=filtered, sorts=sort_links(q),
                           views={v: _link(view=v) for v in dq.VIEWS},
                           csv_link="/documents.csv" + ("?" + urlencode(csv_args) if csv_args else ""))


@bp.get("/documents.csv")
def csv_download() -> Any:
    """The filtered list as CSV for the accountant (every matching document, sorted as the page; UTF-8 with BOM)."""
    svc = service()
    q = dq.parse_query(request.args)

    def lines() -> Iterator[str]:
        yield "\ufeff"
        yield from dq.csv_lines(svc.store._conn(), q)

    return Response(stream_with_context(lines()), mimetype="text/csv",
                    headers={"Content-Disposition": 'attachment; filename="documents.csv"',
                             "Cache-Control": "no-store"})


@bp.get("/documents/<int:document_id>")
def detail(document_id: int) -> Any:
    """One document: preview, metadata, e-invoice fields, export history, actions."""
    svc = service()
    row = actions.document_or_404(svc, document_id)
    doc = with_waiting(svc, data.document_json(svc, row))
    main, xml = pair_of(svc, row)
    partner_row = partner_of(svc, row)
    partner = with_waiting(svc, data.document_json(svc, partner_row)) if partner_row is not None else None
    readable = doc if main["id"] == row["id"] else partner
    msg = svc.store.message(int(row["message_id"]))
    thumbs = current_app.extensions["gateway.thumbs"]
    info = thumbs.info(dict(main))
    shown = _shown_page(info)
    layout = preview.layout_of(svc, dict(main)) if preview.boxed(readable or {}, shown) else None
    found = preview.highlights(readable or {}, shown, FIELD_LABELS, layout)
    waiting = sorted({*doc["waiting_for_approval"], *(partner["waiting_for_approval"] if partner else [])})
    types = list(TYPES)
    if doc["document_type"] and doc["document_type"] not in {v for v, _ in TYPES}:
        types.append((doc["document_type"], doc["document_type"]))
    return render_template("documents/detail.html", d=doc, msg=msg, info=info, shown_page=shown,
                           last_page=min(int(info.get("pages") or 0), preview.MAX_PAGE),
                           page_size=preview.page_size(layout, shown), highlights=found,
                           field_names=FIELD_NAMES, field_labels=FIELD_LABELS,
                           renamed=corrections.renamed_exports(svc, row),
                           targets=svc.settings.exports, waiting=waiting, types=types,
                           partner=partner, readable=readable, xml_id=xml["id"] if xml is not None else None,
                           einvoice=data.einvoice_rows(doc["einvoice"] if isinstance(doc["einvoice"], dict) else None))


def _shown_page(info: dict[str, Any]) -> int:
    """The page the preview shows (``?page=N``, default 1), or 404 past the document's end."""
    raw = request.args.get("page", "1")
    page = int(raw) if raw.isdigit() and len(raw) < 6 else 0
    last = min(int(info.get("pages") or preview.MAX_PAGE), preview.MAX_PAGE)
    if not 1 <= page <= last:
        abort(404, f"page: 1 to {last}")
    return page


@bp.post("/documents/approve")
def approve_selected() -> Any:
    """Approve the documents ticked on the list (``ids``; a pair's box carries both ids)."""
    ids = [part for value in request.form.getlist("ids") for part in value.split(",") if part.strip()]

    def work() -> int:
        if not ids:
            abort(400, "Tick the documents to approve first.")
        return len(actions.approve_many(service(), ids)[1])

    return act(work, "Approved {result} document(s): targets that wait for approval will deliver them.",
               back_to(url_for("documents.index")))


@bp.get("/documents/<int:document_id>/file")
def file(document_id: int) -> Any:
    """Download the document."""
    svc = service()
    return send_document(svc, actions.document_or_404(svc, document_id))


@bp.get("/documents/<int:document_id>/<any(thumb, preview):size>.png")
def image(document_id: int, size: str) -> Any:
    """The first page as PNG; a placeholder when there is none."""
    svc = service()
    doc = actions.document_or_404(svc, document_id)
    png = current_app.extensions["gateway.thumbs"].get(doc, size)
    if png is None:
        static = current_app.static_folder or ""
        name = "doc-xml.svg" if doc["kind"] == "xml" else "doc.svg"
        return send_file(f"{static}/{name}", mimetype="image/svg+xml", max_age=300)
    return send_file(png, mimetype="image/png", max_age=3600)


@bp.get("/documents/<int:document_id>/page/<int:page>.png")
def page_image(document_id: int, page: int) -> Any:
    """A page of the document as PNG at the preview's size (pages up to preview.MAX_PAGE)."""
    svc = service()
    doc = actions.document_or_404(svc, document_id)
    thumbs = current_app.extensions["gateway.thumbs"]
    pages = thumbs.info(dict(doc)).get("pages")
    if not 1 <= page <= min(int(pages or preview.MAX_PAGE), preview.MAX_PAGE):
        abort(404, f"the document has no page {page} to preview")
    png = thumbs.get(doc, "preview", page)
    if png is None:
        abort(404, f"page {page} cannot be shown: the document is not a PDF, or it cannot be rendered")
    return send_file(png, mimetype="image/png", max_age=3600)


def _approve_pair(document_id: int, approved: bool) -> None:
    """Approve (or withdraw) a document and, for an e-invoice pair, its other half: they are one invoice."""
    svc = service()
    row = actions.document_or_404(svc, document_id)
    actions.approve(svc, document_id, approved)
    partner = partner_of(svc, row)
    if partner is not None:
        actions.approve(svc, int(partner["id"]), approved)


@bp.post("/documents/<int:document_id>/approve")
def approve(document_id: int) -> Any:
    """Approve the document (and its e-invoice pair) for targets that require approval."""
    return act(lambda: _approve_pair(document_id, True),
               "Approved: targets that wait for approval will deliver it.",
               url_for("documents.detail", document_id=document_id))


@bp.post("/documents/<int:document_id>/unapprove")
def unapprove(document_id: int) -> Any:
    """Withdraw the approval (of the pair)."""
    return act(lambda: _approve_pair(document_id, False), "Approval withdrawn.",
               url_for("documents.detail", document_id=document_id))


@bp.post("/documents/<int:document_id>/confirm-account")
def confirm_account(document_id: int) -> Any:
    """The person confirmed the document's new bank account with the seller: the IBAN guard learns it."""
    return act(lambda: ", ".join(actions.confirm_account(service(), document_id, by="admin")),
               "Bank account {result} confirmed: later invoices of this seller with it are not flagged.",
               url_for("documents.detail", document_id=document_id))


# The old Edit form's names for the fields a person corrects in the Fields panel.
EDIT_AS_FIELDS = {"company": "seller", "invoice_number": "invoice_number", "document_type": "document_type"}


@bp.post("/documents/<int:document_id>/edit")
def edit(document_id: int) -> Any:
    """Change tags and note; a company, type or invoice number posted here is a correction of its field."""
    svc = service()
    f = request.form
    row = actions.document_or_404(svc, document_id)
    shown, _ = data.document_fields(row)
    given = {field: f.get(name, "").strip() or None for name, field in EDIT_AS_FIELDS.items()
             if name in f and f.get(name, "").strip() != (shown.get(field) or "")}
    rest: dict[str, Any] = {k: f.get(k, "") for k in ("tags", "note") if k in f}
    if given:
        rest["fields"] = given
    return act(lambda: actions.edit_document(svc, document_id, rest, by="admin"), "Saved.",
               url_for("documents.detail", document_id=document_id))


@bp.post("/documents/<int:document_id>/export")
def export(document_id: int) -> Any:
    """Export the document again to a target."""
    target = request.form.get("target", "")
    return act(lambda: actions.export_again(service(), document_id, [target] if target else []),
               "Queued for {result[0]} again.", url_for("documents.detail", document_id=document_id))


@bp.post("/documents/<int:document_id>/fields")
def correct_fields(document_id: int) -> Any:
    """Correct the fields the form changed (an emptied field withdraws a person's correction)."""
    svc = service()
    row = actions.document_or_404(svc, document_id)
    shown, _ = data.document_fields(row)
    given = {}
    for name in FIELD_NAMES:
        if name in request.form:
            value = request.form.get(name, "").strip()
            if value != (shown.get(name) or ""):
                given[name] = value or None

    def work() -> str:
        if not given:
            return "Nothing changed."
        changed, taught = corrections.correct(svc, document_id, given, by="admin")
        text = corrections.in_words(changed, taught)
        if corrections.renamed_exports(svc, row):
            text += " Its export name changes: export it again under the new name (Exports, below)."
        return text

    return act(work, "{result}", url_for("documents.detail", document_id=document_id))
