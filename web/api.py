"""The JSON API under /api (docs/openapi.yaml).

Authentication: ``Authorization: Bearer <web.api_token>``, or the admin
page's session (then a POST needs the ``X-CSRF-Token`` header); the guard in
web.login checks both before any route here runs.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from flask import Blueprint, abort, current_app, jsonify, request, send_file
from werkzeug.exceptions import BadRequest

from gateway.notify import configured
from web import actions, data, preview
from web.rulegen import rule_from_message
from web.rulefiles import relative_rule_file, rules_file_text

bp = Blueprint("api", __name__, url_prefix="/api")

SAFE_TYPES = ("application/pdf", "application/xml", "text/xml")


def _service() -> Any:
    return current_app.config["SERVICE"]


def _jobs() -> actions.Jobs:
    jobs: actions.Jobs = current_app.extensions["gateway.jobs"]
    return jobs


def _page() -> tuple[int, int]:
    try:
        limit = max(1, min(500, int(request.args.get("limit", 50))))
        offset = max(0, min(actions.MAX_ID, int(request.args.get("offset", 0))))  # past every row: an empty page
    except ValueError:
        abort(400, "limit and offset must be numbers")
    return limit, offset


def _body() -> dict[str, Any]:
    """A JSON object body, or the form fields; {} when there is none."""
    if request.is_json:
        body = request.get_json(silent=True)
        if body is None and request.content_length:
            raise BadRequest("the body is not valid JSON")
        if body is not None and not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        return body or {}
    return {k: v for k, v in request.form.items() if k != "csrf_token"}


def document_json(doc: dict[str, Any]) -> dict[str, Any]:
    """A document as the API shows it, with its export state."""
    return data.document_json(_service(), doc)


def message_json(msg: dict[str, Any], *, full: bool = False) -> dict[str, Any]:
    """A message as the API shows it."""
    return data.message_json(_service(), msg, full=full)


def send_document(svc: Any, row: dict[str, Any]) -> Any:
    """A document's file as a download."""
    root = Path(svc.settings.data_dir).resolve()
    path = (root / row["path"]).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        abort(404, "the document's file is missing from the data folder")
    ctype = row["content_type"] if row["content_type"] in SAFE_TYPES else "application/octet-stream"
    return send_file(path, mimetype=ctype, as_attachment=True, download_name=row["filename"], max_age=0)


def send_raw(svc: Any, msg: dict[str, Any]) -> Any:
    """A message's stored .eml as a download."""
    path = data.raw_path(svc, msg)
    if path is None:
        abort(404, "the raw message file is missing from the data folder")
    return send_file(path, mimetype="message/rfc822", as_attachment=True,
                     download_name=f"message-{msg['id']}.eml", max_age=0)


# -- status ---------------------------------------------------------------------------------


@bp.get("/status")
def status() -> Any:
    """What the dashboard shows."""
    return jsonify(data.dashboard(_service()))


# -- messages --------------------------------------------------------------------------------


@bp.get("/messages")
def messages() -> Any:
    limit, offset = _page()
    a = request.args
    rows, total = _service().store.list_messages(
        limit=limit, offset=offset, status=a.get("status"), source=a.get("source"), sender=a.get("sender"),
        text=a.get("q"), since=a.get("since"), until=a.get("until"), rule=a.get("rule"))
    return jsonify({"total": total, "limit": limit, "offset": offset,
                    "items": [message_json(r) for r in rows]})


@bp.post("/messages/reexamine")
def reexamine() -> Any:
    return jsonify({"reexamining": actions.reexamine(_service())}), 202


@bp.get("/messages/<int:message_id>")
def message(message_id: int) -> Any:
    return jsonify(message_json(actions.message_or_404(_service(), message_id), full=True))


@bp.get("/messages/<int:message_id>/raw")
def message_raw(message_id: int) -> Any:
    svc = _service()
    return send_raw(svc, actions.message_or_404(svc, message_id))


@bp.get("/messages/<int:message_id>/rule")
def message_rule(message_id: int) -> Any:
    svc = _service()
    msg = actions.message_or_404(svc, message_id)
    ruleset = svc.rules.ruleset
    existing = {r.name for r in ruleset.rules} if ruleset is not None else set()
    return jsonify({"yaml": rule_from_message(msg, svc.store.documents_of(message_id), existing)})


@bp.post("/messages/<int:message_id>/release")
def message_release(message_id: int) -> Any:
    actions.release(_service(), message_id, by="api")
    return jsonify({"id": message_id, "status": "received"}), 202


@bp.post("/messages/<int:message_id>/import")
def message_import(message_id: int) -> Any:
    """Import an unmatched or ignored message, whatever the rules say ("import it")."""
    actions.import_anyway(_service(), message_id, by="api")
    return jsonify({"id": message_id, "status": "received"}), 202


@bp.post("/messages/<int:message_id>/reprocess")
def message_reprocess(message_id: int) -> Any:
    actions.reprocess(_service(), message_id)
    return jsonify({"id": message_id, "status": "received"}), 202


# -- documents -------------------------------------------------------------------------------


@bp.get("/documents")
def documents() -> Any:
    limit, offset = _page()
    a = request.args
    approved = {"true": True, "false": False}.get(a.get("approved", ""), None)
    archived = {"true": True, "false": False, "any": None}.get(a.get("archived", "false"), False)
    rows, total = _service().store.list_documents(
        limit=limit, offset=offset, company=a.get("company"), document_type=a.get("document_type"),
        tag=a.get("tag"), approved=approved, archived=archived, export_state=a.get("export_state"),
        orphaned={"true": True, "false": False}.get(a.get("orphaned", ""), None))
    return jsonify({"total": total, "limit": limit, "offset": offset,
                    "items": [document_json(r) for r in rows]})


@bp.get("/documents/facets")
def document_facets() -> Any:
    """The companies, document types and tags in use: the values the document filters offer."""
    return jsonify(_service().store.document_facets())


@bp.get("/documents/<int:document_id>")
def document(document_id: int) -> Any:
    return jsonify(document_json(actions.document_or_404(_service(), document_id)))


@bp.patch("/documents/<int:document_id>")
def document_edit(document_id: int) -> Any:
    """Change a document's metadata; ``fields``: a person's corrections of its fields (null withdraws one)."""
    svc = _service()
    done = actions.edit_document(svc, document_id, _body(), by="api")
    return jsonify({**document_json(actions.document_or_404(svc, document_id)), **done})


@bp.get("/documents/<int:document_id>/file")
def document_file(document_id: int) -> Any:
    svc = _service()
    return send_document(svc, actions.document_or_404(svc, document_id))


@bp.get("/documents/<int:document_id>/thumbnail")
def document_thumbnail(document_id: int) -> Any:
    svc = _service()
    doc = actions.document_or_404(svc, document_id)
    size = request.args.get("size", "thumb")
    if size not in ("thumb", "preview"):
        abort(400, "size: thumb or preview")
    png = current_app.extensions["gateway.thumbs"].get(doc, size)
    if png is None:
        abort(404, "no preview: the document is not a PDF, or it cannot be rendered")
    return send_file(png, mimetype="image/png", max_age=3600)


@bp.get("/documents/<int:document_id>/words")
def document_words(document_id: int) -> Any:
    """A page's words with their boxes (PDF points from the page's top-left corner), to pick a value from."""
    svc = _service()
    doc = actions.document_or_404(svc, document_id)
    raw = request.args.get("page", "1")
    if not raw.isdigit() or not 1 <= int(raw) <= preview.MAX_PAGE:
        abort(400, f"page: a number from 1 to {preview.MAX_PAGE}")
    page = int(raw)
    layout = preview.layout_of(svc, dict(doc))
    size = preview.page_size(layout, page)
    return jsonify({"document_id": document_id, "page": page, "pages": layout.pages if layout else 0,
                    "width": size[0] if size else None, "height": size[1] if size else None,
                    "words": preview.words(layout, page)})


@bp.post("/documents/<int:document_id>/approve")
def document_approve(document_id: int) -> Any:
    svc = _service()
    actions.approve(svc, document_id, True)
    return jsonify(document_json(actions.document_or_404(svc, document_id)))


@bp.post("/documents/approve")
def documents_approve() -> Any:
    """Approve several documents at once: ``{"ids": [...]}``."""
    svc = _service()
    wanted, done = actions.approve_many(svc, _body().get("ids"))
    return jsonify({"approved": done, "already_approved": [i for i in wanted if i not in done]})


@bp.post("/documents/<int:document_id>/confirm-account")
def document_confirm_account(document_id: int) -> Any:
    ibans = actions.confirm_account(_service(), document_id, by="api")
    return jsonify({"id": document_id, "confirmed_ibans": ibans, "confirmed_by": "api"})


@bp.post("/documents/<int:document_id>/unapprove")
def document_unapprove(document_id: int) -> Any:
    svc = _service()
    actions.approve(svc, document_id, False)
    return jsonify(document_json(actions.document_or_404(svc, document_id)))


@bp.post("/documents/<int:document_id>/export")
def document_export(document_id: int) -> Any:
    svc = _service()
    body = _body()
    targets = body.get("targets") or ([body["target"]] if body.get("target") else [])
    if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
        raise BadRequest("targets: a list of export target names")
    queued = actions.export_again(svc, document_id, targets)
    return jsonify({"queued": queued, "document": document_json(actions.document_or_404(svc, document_id))}), 202


# -- mailboxes -------------------------------------------------------------------------------


@bp.get("/mailboxes")
def mailboxes() -> Any:
    svc = _service()
    return jsonify({"items": [data.mailbox_json(svc, m) for m in svc.settings.mailboxes]})


@bp.get("/mailboxes/<name>")
def mailbox(name: str) -> Any:
    svc = _service()
    for m in svc.settings.mailboxes:
        if m.name == name:
            out = data.mailbox_json(svc, m)
            out["fetch"] = _jobs().last.get(f"fetch:{name}")
            out["fetching"] = _jobs().running(f"fetch:{name}")
            return jsonify(out)
    abort(404, f"there is no mailbox {name!r}")


@bp.post("/mailboxes/<name>/fetch")
def mailbox_fetch(name: str) -> Any:
    started = actions.fetch_now(_service(), _jobs(), name)
    return jsonify({"mailbox": name, "started": started, "running": True}), 202


# -- rules -----------------------------------------------------------------------------------


@bp.get("/rules")
def rules() -> Any:
    return jsonify(data.rules_json(_service()))


@bp.get("/rules/file/<path:file>")
def rule_file(file: str) -> Any:
    svc = _service()
    rel, text = rules_file_text(svc, file)
    r = data.rules_json(svc)
    return jsonify({"file": rel, "text": text, "rules": [x for x in r["rules"] if x["file"] == rel],
                    "problems": [p for p in r["problems"] if relative_rule_file(svc, p["file"]) == rel]})


@bp.post("/rules/test")
def rules_test() -> Any:
    svc = _service()
    body = request.get_json(silent=True) if request.is_json else None
    if request.is_json and not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object: {\"raw\": ..., \"message\": ..., \"draft\": ...}")
    args = {**request.args, **(body or {})}
    source = str(args.get("source") or "smtp")
    draft = args.get("draft")
    if draft is not None and not isinstance(draft, str):
        raise BadRequest("draft: the text of one rule file")
    msg = None
    if args.get("message"):
        try:
            msg = actions.message_or_404(svc, int(args["message"]))
        except (TypeError, ValueError):
            raise BadRequest("message: a message id") from None
        path = data.raw_path(svc, msg)
        if path is None:
            abort(404, "the raw message file is missing from the data folder")
        raw = path.read_bytes()
        source = str(args.get("source") or msg["source"])
    elif body is not None:
        if not isinstance(body.get("raw"), str):
            raise BadRequest("raw: the message as text, or message: a stored message's id")
        raw = body["raw"].encode("utf-8", "surrogateescape")
    else:
        raw = request.get_data(cache=False)
    draft_file = args.get("draft_file")
    if draft_file is not None and not isinstance(draft_file, str):
        raise BadRequest("draft_file: the rule file the draft would be saved in, such as acme.yaml")
    return jsonify(actions.explain_mail(svc, raw, source=source, draft=draft, message=msg, draft_file=draft_file))


# -- exports ---------------------------------------------------------------------------------


@bp.get("/exports")
def exports() -> Any:
    svc = _service()
    counts, health = svc.store.export_counts(), svc.store.export_health()
    items = []
    for t in svc.settings.exports:
        item = data.target_json(svc, t, counts, health)
        item["running"] = _jobs().running(f"export:{t.name}")
        items.append(item)
    return jsonify({"items": items})


@bp.get("/exports/<name>")
def export_target(name: str) -> Any:
    svc = _service()
    target = actions.target_or_404(svc, name)
    limit, offset = _page()
    state = request.args.get("state") or None
    out = data.target_json(svc, target)
    out["running"] = _jobs().running(f"export:{name}")
    out["last_run"] = _jobs().last.get(f"export:{name}")
    out["items"] = [data.export_json(e) for e in svc.store.list_exports(target=name, state=state, limit=limit,
                                                                         offset=offset)]
    return jsonify(out)


@bp.post("/exports/<name>/run")
def export_run(name: str) -> Any:
    started = actions.run_export(_service(), _jobs(), name)
    return jsonify({"target": name, "started": started, "running": True}), 202


@bp.post("/exports/<name>/retry")
def export_retry(name: str) -> Any:
    body = _body()
    ids = body.get("ids")
    if body.get("id") is not None:
        ids = [body["id"]]
    if ids is not None:
        try:
            ids = [int(i) for i in ids]
        except (TypeError, ValueError):
            raise BadRequest("ids: a list of export ids") from None
    return jsonify({"target": name, "retried": actions.retry_exports(_service(), name, ids)})


@bp.get("/notifications")
def notifications() -> Any:
    """The notification URLs (privacy form) and what needs a person now."""
    svc = _service()
    pending = svc.notifier.pending(dt.datetime.now(dt.timezone.utc))
    return jsonify({"urls": configured(svc.settings.notify.urls), "admin_url": svc.notifier.admin_url(),
                    "pending": [{"event": a.event, "title": a.title, "detail": a.detail, "link": a.link}
                                for a in pending]})


@bp.post("/notifications/test")
def notifications_test() -> Any:
    """Send a test notification to every URL; per URL whether it was delivered."""
    results = _service().notifier.test()
    return jsonify({"results": [{"url": d.url, "ok": d.ok, "error": d.error or None} for d in results]})


@bp.post("/exports/<name>/backfill")
def export_backfill(name: str) -> Any:
    """Queue the existing documents the target takes (``{"since": "2026-01-01"}`` optional)."""
    since = _body().get("since")
    done = actions.backfill_export(_service(), name, str(since) if since else None)
    return jsonify({"target": done.target, "queued": done.queued, "left_out": done.left_out,
                    "already": done.already})


@bp.get("/log")
def log_events() -> Any:
    """The log page's events (``?kind=refused|known|duplicate|warning|error``), newest first."""
    limit, offset = _page()
    rows, total = _service().store.list_events(kind=request.args.get("kind") or None, limit=limit, offset=offset)
    return jsonify({"total": total, "limit": limit, "offset": offset, "items": rows})


# -- suppliers -------------------------------------------------------------------------------


@bp.get("/suppliers")
def suppliers() -> Any:
    """Every supplier with its number of documents and totals per currency."""
    items = data.suppliers_json(_service())
    return jsonify({"total": len(items), "items": items})


@bp.get("/suppliers/<int:supplier_id>")
def supplier(supplier_id: int) -> Any:
    """One supplier: its keys (IBANs masked), documents, totals per month and the rules that name it."""
    s = data.supplier_json(_service(), supplier_id) if 0 < supplier_id <= actions.MAX_ID else None
    if s is None:
        abort(404, f"there is no supplier {supplier_id}")
    return jsonify(s)
