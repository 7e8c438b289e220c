"""Suppliers: who sends the invoices, learned from e-invoices and confirmed documents (gateway.fields.suppliers)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, render_template

from web import data
from web.actions import MAX_ID
from web.pages import service

bp = Blueprint("suppliers", __name__, url_prefix="/suppliers")


@bp.get("")
def index() -> Any:
    """Every supplier with its number of documents and totals per currency."""
    return render_template("suppliers/list.html", suppliers=data.suppliers_json(service()))


@bp.get("/<int:supplier_id>")
def detail(supplier_id: int) -> Any:
    """One supplier: its documents, totals per month, known IBANs (masked), sender domains, VAT IDs, rules."""
    s = data.supplier_json(service(), supplier_id) if 0 < supplier_id <= MAX_ID else None
    if s is None:
        abort(404, f"there is no supplier {supplier_id}")
    return render_template("suppliers/detail.html", s=s)
