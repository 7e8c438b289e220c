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
                           spend_charts=spend_charts(d["spend"]), now=dt.datetime.now(dt.timezone.utc))


def spend_charts(spend: dict[str, Any], currencies: int = 3) -> list[dict[str, Any]]:
    """Per currency (the largest ``currencies``): its spend per month and per supplier as charts."""
    out = []
    for c in spend["currencies"][:currencies]:
        code = c["currency"]
        months = c["months"]
        labels = [MONTHS[int(m["month"][5:7]) - 1] for m in months]
        years = [m["month"][:4] if i == 0 or m["month"].endswith("-01") else "" for i, m in enumerate(months)]

        def exact(value: float, code: str = code) -> str:
            return f"{value:,.2f} {code}"

        month_chart = charts.column_chart(
            [(lab, float(m["total"])) for lab, m in zip(labels, months)], sublabels=years,
            title=f"Spend per month in {code}, last 12 months", fmt=charts.short_number, tip=exact)
        suppliers = [s for s in spend["suppliers"] if s["currency"] == code]
        supplier_chart = charts.bar_chart(
            [(s["supplier"] or "(no supplier)", float(s["total"])) for s in suppliers],
            title=f"Spend per supplier in {code}, last 12 months", empty="No invoices with a total yet",
            fmt=charts.short_number, tip=exact)
        out.append({"currency": code, "total": c["total"], "months": month_chart, "suppliers": supplier_chart})
    return out
