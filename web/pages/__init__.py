"""The HTML pages: one blueprint per area, each with list, detail and actions."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from flask import Flask, abort, current_app, flash, redirect, request
from werkzeug.exceptions import HTTPException

from web.actions import MAX_ID, Jobs

PAGE_SIZE = 25


def register(app: Flask) -> None:
    """Register every page blueprint."""
    from web.pages import dashboard, documents, exports, log, mailboxes, messages, notifications, rules, suppliers

    for module in (dashboard, messages, documents, suppliers, mailboxes, rules, exports, notifications, log):
        app.register_blueprint(module.bp)


def service() -> Any:
    """The running Service."""
    return current_app.config["SERVICE"]


def jobs() -> Jobs:
    """The app's background runs."""
    result: Jobs = current_app.extensions["gateway.jobs"]
    return result


def paging(total: int) -> dict[str, Any]:
    """Offset, limit and the links to the previous and next page, keeping the filters."""
    try:
        offset = max(0, min(MAX_ID, int(request.args.get("offset", 0))))  # past every row: an empty page
    except ValueError:
        abort(400, "offset must be a number")
    limit = PAGE_SIZE
    args = {k: v for k, v in request.args.items() if k != "offset" and v}

    def link(off: int) -> str:
        return request.path + "?" + urlencode({**args, "offset": off}) if off else \
            request.path + ("?" + urlencode(args) if args else "")

    return {
        "offset": offset, "limit": limit, "total": total,
        "first": offset + 1 if total else 0, "last": min(total, offset + limit),
        "prev": link(max(0, offset - limit)) if offset > 0 else None,
        "next": link(offset + limit) if offset + limit < total else None,
    }


def act(work: Any, done: str, back: str) -> Any:
    """Run an action for a form: flash what happened (or why not) and go back."""
    try:
        result = work()
    except HTTPException as exc:
        if exc.code == 404 and request.method == "GET":
            raise
        flash(exc.description or exc.name, "error")
        return redirect(back)
    flash(done.format(result=result), "ok")
    return redirect(back)


def back_to(default: str) -> str:
    """Where a form's ``back`` field points (same-site only), else ``default``."""
    from web.auth import safe_next

    target = request.form.get("back")
    return safe_next(target) if target else default


__all__ = ["act", "back_to", "jobs", "paging", "register", "service"]
