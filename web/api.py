"""The JSON API under /api: Bearer token from ``web.api_token``."""

from __future__ import annotations

import hmac
import json
from typing import Any

from flask import Blueprint, abort, current_app, jsonify, request, send_file

bp = Blueprint("api", __name__, url_prefix="/api")


def _service() -> Any:
    return current_app.config["SERVICE"]


@bp.before_request
def _require_token() -> Any:
    token = _service().settings.web.api_token
    header = request.headers.get("Authorization", "")
    given = header[7:].strip() if header.lower().startswith("bearer ") else ""
    if current_app.config.get("SESSION_AUTH") and current_app.config["SESSION_AUTH"]():
        return None
    if not token or not given or not hmac.compare_digest(given.encode(), token.encode()):
        resp = jsonify({"error": "unauthorized: send Authorization: Bearer <web.api_token>"})
        resp.status_code = 401
        resp.headers["WWW-Authenticate"] = 'Bearer realm="invoice-gateway"'
        return resp
    return None


def _page() -> tuple[int, int]:
    try:
        limit = max(1, min(500, int(request.args.get("limit", 50))))
        offset = max(0, int(request.args.get("offset", 0)))
    except ValueError:
        abort(400, "limit and offset must be numbers")
    return limit, offset


def _json(value: Any, default: Any) -> Any:
    if value is None:
        return default
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return default
    return value


def document_json(doc: dict[str, Any]) -> dict[str, Any]:
    """A document as the API shows it, with its export state."""
    store = _service().store
    return {
        "id": doc["id"],
        "message_id": doc["message_id"],
        "filename": doc["filename"],
        "content_type": doc["content_type"],
        "kind": doc["kind"],
        "origin": doc["origin"],
        "size": doc["size"],
        "sha256": doc["sha256"],
        "created": doc["created"],
        "date": doc["doc_date"],
        "company": doc["company"],
        "document_type": doc["document_type"],
        "invoice_number": doc["invoice_number"],
        "tags": _json(doc["tags"], []),
        "note": doc["note"],
        "einvoice": _json(doc["einvoice"], None),
        "warnings": _json(doc["warnings"], []),
        "approved": doc["approved_at"] is not None,
        "approved_at": doc["approved_at"],
        "archived": doc["archived_at"] is not None,
        "exports": [
            {"target": e["target"], "state": e["state"], "attempts": e["attempts"], "location": e["location"],
             "error": e["last_error"], "next_attempt": e["next_attempt"], "delivered_at": e["delivered_at"]}
            for e in store.exports_of(doc["id"])
        ],
        "file": f"/api/documents/{doc['id']}/file",
    }


def message_json(msg: dict[str, Any], *, full: bool = False) -> dict[str, Any]:
    """A message as the API shows it."""
    store = _service().store
    out = {
        "id": msg["id"],
        "received": msg["received"],
        "source": msg["source"],
        "sender": msg["sender"],
        "mail_from": msg["mail_from"],
        "recipients": _json(msg["rcpt_tos"], []),
        "import_address": msg["import_address"],
        "tag": msg["tag"],
        "subject": msg["subject"],
        "message_id": msg["message_id"],
        "size": msg["size"],
        "sha256": msg["sha256"],
        "status": msg["status"],
        "reason": msg["reason"],
        "duplicate_of": msg["duplicate_of"],
        "documents": [document_json(d) for d in store.documents_of(msg["id"])],
    }
    decision = _json(msg["decision"], None)
    out["decision"] = decision if full else (
        {"rule": decision.get("rule"), "action": decision.get("action")} if decision else None)
    if msg.get("auth"):
        out["authentication"] = _json(msg["auth"], None)
    return out


@bp.get("/messages")
def messages() -> Any:
    limit, offset = _page()
    a = request.args
    rows, total = _service().store.list_messages(
        limit=limit, offset=offset, status=a.get("status"), source=a.get("source"), sender=a.get("sender"),
        text=a.get("q"), since=a.get("since"), until=a.get("until"))
    return jsonify({"total": total, "limit": limit, "offset": offset,
                    "items": [message_json(r) for r in rows]})


@bp.get("/messages/<int:message_id>")
def message(message_id: int) -> Any:
    row = _service().store.message(message_id)
    if row is None:
        abort(404)
    return jsonify(message_json(row, full=True))


@bp.get("/documents")
def documents() -> Any:
    limit, offset = _page()
    a = request.args
    approved = {"true": True, "false": False}.get(a.get("approved", ""), None)
    archived = {"true": True, "false": False, "any": None}.get(a.get("archived", "false"), False)
    rows, total = _service().store.list_documents(
        limit=limit, offset=offset, company=a.get("company"), document_type=a.get("document_type"),
        tag=a.get("tag"), approved=approved, archived=archived, export_state=a.get("export_state"))
    return jsonify({"total": total, "limit": limit, "offset": offset,
                    "items": [document_json(r) for r in rows]})


@bp.get("/documents/<int:document_id>")
def document(document_id: int) -> Any:
    row = _service().store.document(document_id)
    if row is None:
        abort(404)
    return jsonify(document_json(row))


@bp.get("/documents/<int:document_id>/file")
def document_file(document_id: int) -> Any:
    svc = _service()
    row = svc.store.document(document_id)
    if row is None:
        abort(404)
    path = (svc.settings.data_dir / row["path"]).resolve()
    return send_file(path, mimetype=row["content_type"], as_attachment=True, download_name=row["filename"])
