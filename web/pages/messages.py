"""Messages: the list with filters, one message with its decision, and what can be done with it."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Blueprint, abort, render_template, request, url_for

from gateway.store import MESSAGE_STATUSES, decision_of, iso
from web import actions, data
from web.api import send_raw
from web.pages import act, paging, service
from web.pages.documents import with_waiting
from web.mailbody import mail_body
from web.rulegen import ignore_rule_from_message, rule_from_message

bp = Blueprint("messages", __name__, url_prefix="/messages")


def _day(value: str | None, tz: dt.tzinfo, *, after: bool = False) -> str | None:
    """A date from a filter (local) as the UTC timestamp of its start (``after``: of the next day)."""
    if not value:
        return None
    try:
        day = dt.date.fromisoformat(value)
    except ValueError:
        abort(400, f"not a date: {value!r} (use YYYY-MM-DD)")
    if after:
        day += dt.timedelta(days=1)
    return iso(dt.datetime.combine(day, dt.time(), tzinfo=tz))


@bp.get("")
def index() -> Any:
    """Messages, newest first, with filters and paging."""
    svc = service()
    a = request.args
    tz = data.timezone(svc.settings)
    status = a.get("status") or None
    if status and status not in MESSAGE_STATUSES:
        abort(400, f"status: one of {', '.join(MESSAGE_STATUSES)}")
    filters = dict(status=status, source=a.get("source") or None, sender=a.get("sender") or None,
                   text=a.get("q") or None, since=_day(a.get("since"), tz), until=_day(a.get("until"), tz, after=True),
                   rule=a.get("rule") or None)
    _, total = svc.store.list_messages(limit=1, **filters)
    page = paging(total)
    rows, _ = svc.store.list_messages(limit=page["limit"], offset=page["offset"], **filters)
    docs = {r["id"]: len(svc.store.documents_of(r["id"])) for r in rows}
    why = {r["id"]: reason_of(r) for r in rows}
    return render_template("messages/list.html", rows=rows, docs=docs, why=why, page=page, statuses=MESSAGE_STATUSES,
                           sources=svc.store.message_sources(), counts=svc.store.status_counts(), args=a,
                           zone=zone_name(tz))


def zone_name(tz: dt.tzinfo) -> str:
    """The zone's name as people read it now (``CET``, ``UTC``), for headings of time columns."""
    return dt.datetime.now(tz).strftime("%Z") or str(tz)


def reason_of(row: dict[str, Any]) -> str:
    """Why a message has its status, in a few words: the stored reason, else the deciding rule."""
    reason = str(row.get("reason") or "")
    decision = decision_of(row.get("decision"))
    rule = decision.get("rule") if isinstance(decision, dict) else None
    if rule and str(rule) not in reason:
        return f"rule {rule}: {reason}" if reason else f"rule {rule}"
    if reason:
        return reason
    if isinstance(decision, dict) and decision.get("policy"):
        return f"policy {decision['policy']}"
    return ""


NOT_INVOICES = ("unmatched", "ignored")


@bp.get("/<int:message_id>")
def detail(message_id: int) -> Any:
    """One message: headers, decision and explanation, documents, actions."""
    svc = service()
    msg = actions.message_or_404(svc, message_id)
    documents = [with_waiting(svc, data.document_json(svc, d)) for d in svc.store.documents_of(message_id)]
    decision = data.decision_json(svc, msg)
    path = data.raw_path(svc, msg)
    headers = data.headers_of(path)
    ruleset = svc.rules.ruleset
    existing = {r.name for r in ruleset.rules} if ruleset is not None else set()
    snippet = rule_from_message(msg, svc.store.documents_of(message_id), existing)
    ignore = ignore_rule_from_message(msg, existing) if msg["status"] in NOT_INVOICES else None
    main_headers = [(n, v) for n, v in headers if n.lower() in ("from", "to", "cc", "reply-to", "subject", "date")]
    return render_template("messages/detail.html", m=msg, documents=documents, decision=decision,
                           headers=headers, main_headers=main_headers, raw_available=path is not None,
                           snippet=snippet, ignore_snippet=ignore, recipients=data.loads(msg["rcpt_tos"], []),
                           auth=data.loads(msg.get("auth"), None), body=mail_body(path),
                           zone=zone_name(data.timezone(svc.settings)))


@bp.get("/<int:message_id>/raw")
def raw(message_id: int) -> Any:
    """The stored .eml."""
    svc = service()
    return send_raw(svc, actions.message_or_404(svc, message_id))


@bp.post("/<int:message_id>/reprocess")
def reprocess(message_id: int) -> Any:
    """Run the rules on the message again."""
    return act(lambda: actions.reprocess(service(), message_id),
               "Message queued: the rules run on it again in a moment.",
               url_for("messages.detail", message_id=message_id))


@bp.post("/<int:message_id>/import")
def import_it(message_id: int) -> Any:
    """Import an unmatched or ignored message, whatever the rules say."""
    return act(lambda: actions.import_anyway(service(), message_id, by="admin"),
               "Importing it: its documents (or the mail as PDF) are imported and exported in a moment.",
               url_for("messages.detail", message_id=message_id))


@bp.post("/<int:message_id>/release")
def release(message_id: int) -> Any:
    """Release a suspicious message after the person checked its sender."""
    return act(lambda: actions.release(service(), message_id, by="admin"),
               "Released: the message is imported and exported in a moment.",
               url_for("messages.detail", message_id=message_id))


@bp.post("/reexamine")
def reexamine() -> Any:
    """Run every unmatched message through the rules again."""
    return act(lambda: actions.reexamine(service()), "Re-examining {result} unmatched message(s).",
               url_for("messages.index", status="unmatched"))
