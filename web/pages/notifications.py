"""Notifications: the configured Apprise URLs, what is pending now, and a test button."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Blueprint, flash, redirect, render_template

from gateway.notify import configured
from web.pages import service

bp = Blueprint("notifications", __name__)


@bp.get("/notifications")
def index() -> Any:
    """The notification URLs (without their secrets), their events, and what needs a person now."""
    svc = service()
    now = dt.datetime.now(dt.timezone.utc)
    return render_template("notifications.html", urls=configured(svc.settings.notify.urls),
                           pending=svc.notifier.pending(now), admin_url=svc.notifier.admin_url())


@bp.post("/notifications/test")
def test() -> Any:
    """Send a test notification to every URL and say, per URL, whether it arrived."""
    svc = service()
    results = svc.notifier.test()
    if not results:
        flash("No notification URLs are configured: add notify.urls to gateway.yaml.", "error")
    for d in results:
        flash(f"Test notification to {d.url}: " + ("sent" if d.ok else f"failed: {d.error}"),
              "ok" if d.ok else "error")
    return redirect("/notifications")
