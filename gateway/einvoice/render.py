"""A readable PDF of an XML e-invoice: our own HTML template through weasyprint.

Every value from the XML is HTML-escaped by the template, and weasyprint gets
a URL fetcher that refuses every URL, so rendering reads nothing from the
network or the file system.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import jinja2

from ..errors import RenderError
from .model import EInvoice, format_amount, format_number

if TYPE_CHECKING:
    from weasyprint.urls import URLFetcher

log = logging.getLogger(__name__)

#: Most lines shown in the readable PDF; the rest are counted in a note. (weasyprint
#: takes some 6 s for 500 table rows on a small CPU, and the XML stays the original.)
MAX_RENDERED_LINES = 500

TITLES = {"invoice": "Invoice", "credit_note": "Credit note", "corrective": "Corrected invoice"}


_env: jinja2.Environment | None = None


def _environment() -> jinja2.Environment:
    global _env
    if _env is None:
        env = jinja2.Environment(
            loader=jinja2.PackageLoader("gateway", "templates"),
            autoescape=jinja2.select_autoescape(["html"]),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        env.filters["amount"] = format_amount
        env.filters["number"] = format_number
        _env = env
    return _env


def render_html(inv: EInvoice) -> str:
    """The HTML of the readable invoice (the template ``einvoice.html``)."""
    return _environment().get_template("einvoice.html").render(
        inv=inv,
        title=TITLES.get(inv.document_type, "Invoice"),
        lines=inv.lines[:MAX_RENDERED_LINES],
        hidden_lines=max(0, len(inv.lines) - MAX_RENDERED_LINES),
    )


def render_pdf(inv: EInvoice, *, url_fetcher: URLFetcher | None = None) -> bytes:
    """A readable PDF of the invoice; nothing is fetched (``url_fetcher`` defaults to refusing all).

    Raises RenderError when the template or weasyprint fails.
    """
    from weasyprint import HTML  # imported when first needed: it takes a second or more

    from .fetcher import RefusingFetcher

    try:
        html = render_html(inv)
        pdf = HTML(string=html, base_url=None, url_fetcher=url_fetcher or RefusingFetcher()).write_pdf()
    except Exception as exc:
        raise RenderError(f"could not render e-invoice {inv.invoice_number or '(no number)'} to PDF: {exc}") from exc
    if not isinstance(pdf, bytes):
        raise RenderError("weasyprint returned no PDF")
    return pdf
