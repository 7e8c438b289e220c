"""The dashboard: counts, charts, recent activity, health of mailboxes, targets and rules."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Blueprint, render_template

from web import charts, data
from web.pages import service

bp = Blueprint("dashboard", __name__)

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@bp.get("/")
def index() -> Any:
    """The dashboard."""
    svc = service()
    d = data.dashboard(svc)
    months = d["months"]
    labels = [MONTHS[int(m["month"][5:7]) - 1] for m in months]
    years = [m["month"][:4] if i == 0 or m["month"].endswith("-01") else "" for i, m in enumerate(months)]
    month_chart = charts.column_chart([(lab, m["documents"]) for lab, m in zip(labels, months)],
                                      title="Documents per month, last 12 months", sublabels=years)
    company_chart = charts.bar_chart(
        [(c["company"] or "(no company)", c["documents"]) for c in d["companies"]],
        title="Documents per company, top 10", empty="No documents yet")
    return render_template("dashboard.html", d=d, month_chart=month_chart, company_chart=company_chart,
                           now=dt.datetime.now(dt.timezone.utc))
