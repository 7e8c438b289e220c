"""The log page: warnings and notable events of serve and its workers, newest first."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template, request

from web.pages import paging, service

bp = Blueprint("log", __name__)

# the kinds the page offers as filters, with what they mean
KINDS = {
    "refused": "recipients refused at RCPT (not an import address)",
    "known": "documents recognised as already known (linked, not exported again)",
    "duplicate": "mail that came a second time",
    "warning": "warnings", "error": "errors",
}


@bp.get("/log")
def index() -> Any:
    """The newest log events, filtered by kind."""
    store = service().store
    kind = request.args.get("kind") or None
    _, total = store.list_events(kind=kind, limit=1)
    page = paging(total)
    rows, _ = store.list_events(kind=kind, limit=page["limit"], offset=page["offset"])
    return render_template("log.html", rows=rows, page=page, kind=kind, kinds=KINDS)
