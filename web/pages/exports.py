"""Exports: per target the queue, the delivered and the failed; run now and retry."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, render_template, request, url_for

from gateway.store import EXPORT_STATES
from web import actions, data
from web.pages import act, back_to, jobs, paging, service

bp = Blueprint("exports", __name__, url_prefix="/exports")


@bp.get("")
def index() -> Any:
    """Every target with its counts, last delivery and last error."""
    svc = service()
    counts, health = svc.store.export_counts(), svc.store.export_health()
    targets = [dict(data.target_json(svc, t, counts, health), running=jobs().running(f"export:{t.name}"))
               for t in svc.settings.exports]
    failed = svc.store.list_exports(state="failed", limit=10) + svc.store.list_exports(state="error", limit=10)
    return render_template("exports/list.html", targets=targets, failed=failed)


@bp.get("/<name>")
def detail(name: str) -> Any:
    """One target: its settings and its export rows by state."""
    svc = service()
    cfg = actions.target_or_404(svc, name)
    t = data.target_json(svc, cfg)
    state = request.args.get("state") or None
    if state and state not in EXPORT_STATES:
        abort(400, f"state: one of {', '.join(EXPORT_STATES)}")
    total = t["counts"][state] if state else sum(t["counts"].values())
    page = paging(total)
    rows = svc.store.list_exports(target=name, state=state, limit=page["limit"], offset=page["offset"])
    approved = {}
    if cfg.require_approval:
        for r in rows:
            doc = svc.store.document(int(r["document_id"]))
            approved[r["id"]] = bool(doc and doc["approved_at"])
    return render_template("exports/detail.html", t=t, rows=rows, page=page, current=state, states=EXPORT_STATES,
                           approved=approved, running=jobs().running(f"export:{name}"),
                           last=jobs().last.get(f"export:{name}"))


def _page_of(name: str) -> str:
    """The target's page, or the list when there is no such target."""
    if any(t.name == name for t in service().settings.exports):
        return url_for("exports.detail", name=name)
    return url_for("exports.index")


@bp.post("/<name>/run")
def run(name: str) -> Any:
    """Deliver what is due now, in the background."""
    def work() -> str:
        return "Export started" if actions.run_export(service(), jobs(), name) else "The export is already running"

    return act(work, "{result}.", back_to(_page_of(name)))


@bp.post("/<name>/retry")
def retry(name: str) -> Any:
    """Retry one failed export (``export_id``) or all of the target's."""
    raw = request.form.get("export_id")
    try:
        ids = [int(raw)] if raw else None
    except ValueError:
        abort(400, "export_id: a number")
    return act(lambda: actions.retry_exports(service(), name, ids), "{result} export(s) will be tried again now.",
               back_to(_page_of(name)))


@bp.post("/<name>/backfill")
def backfill(name: str) -> Any:
    """Give the target the documents that already exist (from a date on, if given)."""
    def work() -> str:
        done = actions.backfill_export(service(), name, request.form.get("since") or None)
        return (f"{done.queued} existing document(s) queued for {name} ({done.left_out} left out by its filter, "
                f"{done.already} it already had)")

    return act(work, "{result}.", back_to(_page_of(name)))
