"""Mailboxes: the state of each linked IMAP mailbox, and fetch now."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, render_template, url_for

from web import actions, data
from web.pages import act, back_to, jobs, service

bp = Blueprint("mailboxes", __name__, url_prefix="/mailboxes")


@bp.get("")
def index() -> Any:
    """Every configured mailbox with its last poll, success and error."""
    svc = service()
    boxes = [dict(data.mailbox_json(svc, m), fetching=jobs().running(f"fetch:{m.name}"))
             for m in svc.settings.mailboxes]
    return render_template("mailboxes/list.html", boxes=boxes)


@bp.get("/<name>")
def detail(name: str) -> Any:
    """One mailbox: state, statistics, settings and the mail it brought."""
    svc = service()
    cfg = next((m for m in svc.settings.mailboxes if m.name == name), None)
    if cfg is None:
        abort(404, f"there is no mailbox {name!r}")
    box = data.mailbox_json(svc, cfg)
    rows, total = svc.store.list_messages(limit=10, source=f"imap:{name}")
    return render_template("mailboxes/detail.html", b=box, rows=rows, total=total,
                           fetching=jobs().running(f"fetch:{name}"), last=jobs().last.get(f"fetch:{name}"))


@bp.post("/<name>/fetch")
def fetch(name: str) -> Any:
    """Poll the mailbox now, in the background."""
    def work() -> str:
        started = actions.fetch_now(service(), jobs(), name)
        return "Fetching now" if started else "A fetch is already running"

    known = any(m.name == name for m in service().settings.mailboxes)
    return act(work, "{result}: new mail appears under Messages.",
               back_to(url_for("mailboxes.detail", name=name) if known else url_for("mailboxes.index")))
