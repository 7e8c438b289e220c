"""Documents: the list with thumbnails and filters, one document with preview and export history."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, current_app, render_template, request, send_file, url_for

from gateway.store import EXPORT_STATES
from web import actions, data
from web.api import send_document
from web.pages import act, paging, service

bp = Blueprint("documents", __name__, url_prefix="/documents")

TYPES = ("invoice", "receipt", "credit_note", "reminder", "contract", "other")


@bp.get("")
def index() -> Any:
    """Documents, newest first, with thumbnails, filters and paging."""
    svc = service()
    a = request.args
    approved = {"yes": True, "no": False}.get(a.get("approved", ""), None)
    archived = {"yes": True, "no": False, "any": None}.get(a.get("archived", "no"), False)
    state = a.get("export_state") or None
    if state and state not in EXPORT_STATES:
        abort(400, f"export_state: one of {', '.join(EXPORT_STATES)}")
    filters = dict(company=a.get("company") or None, document_type=a.get("document_type") or None,
                   tag=a.get("tag") or None, approved=approved, archived=archived, export_state=state,
                   orphaned=True if a.get("orphaned") == "yes" else None)
    _, total = svc.store.list_documents(limit=1, **filters)
    page = paging(total)
    rows, _ = svc.store.list_documents(limit=page["limit"], offset=page["offset"], **filters)
    docs = [data.document_json(svc, r) for r in rows]
    return render_template("documents/list.html", docs=docs, page=page, facets=svc.store.document_facets(),
                           states=EXPORT_STATES, args=a)


@bp.get("/<int:document_id>")
def detail(document_id: int) -> Any:
    """One document: preview, metadata, e-invoice fields, export history, actions."""
    svc = service()
    row = actions.document_or_404(svc, document_id)
    doc = data.document_json(svc, row)
    msg = svc.store.message(int(row["message_id"]))
    thumbs = current_app.extensions["gateway.thumbs"]
    targets = {t.name: t for t in svc.settings.exports}
    waiting = [e["target"] for e in doc["exports"]
               if e["state"] == "pending" and not doc["approved"] and targets.get(e["target"])
               and targets[e["target"]].require_approval]
    return render_template("documents/detail.html", d=doc, msg=msg, info=thumbs.info(row),
                           targets=svc.settings.exports, waiting=waiting, types=TYPES,
                           einvoice=data.einvoice_rows(doc["einvoice"] if isinstance(doc["einvoice"], dict) else None),
                           facets=svc.store.document_facets())


@bp.get("/<int:document_id>/file")
def file(document_id: int) -> Any:
    """Download the document."""
    svc = service()
    return send_document(svc, actions.document_or_404(svc, document_id))


@bp.get("/<int:document_id>/<any(thumb, preview):size>.png")
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


@bp.post("/<int:document_id>/approve")
def approve(document_id: int) -> Any:
    """Approve the document for targets that require approval."""
    return act(lambda: actions.approve(service(), document_id, True),
               "Approved: targets that wait for approval will deliver it.",
               url_for("documents.detail", document_id=document_id))


@bp.post("/<int:document_id>/unapprove")
def unapprove(document_id: int) -> Any:
    """Withdraw the approval."""
    return act(lambda: actions.approve(service(), document_id, False), "Approval withdrawn.",
               url_for("documents.detail", document_id=document_id))


@bp.post("/<int:document_id>/edit")
def edit(document_id: int) -> Any:
    """Change company, type, invoice number, tags and note."""
    f = request.form
    fields = {k: f.get(k, "") for k in ("company", "document_type", "invoice_number", "tags", "note")}
    return act(lambda: actions.edit_document(service(), document_id, fields), "Saved.",
               url_for("documents.detail", document_id=document_id))


@bp.post("/<int:document_id>/export")
def export(document_id: int) -> Any:
    """Export the document again to a target."""
    target = request.form.get("target", "")
    return act(lambda: actions.export_again(service(), document_id, [target] if target else []),
               "Queued for {result[0]} again.", url_for("documents.detail", document_id=document_id))
