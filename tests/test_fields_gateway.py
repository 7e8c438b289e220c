"""Through the gateway: a plain PDF invoice sent by SMTP shows its fields in the API and is named by them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import Gateway, make_mail, wait_for
from fieldsamples import html, pdf_of


@pytest.mark.parametrize("processes", [False, True], ids=["threads", "worker-processes"])
def test_a_plain_pdf_invoice_gets_its_fields_and_a_name_from_them(
        gateway_factory: Callable[..., Gateway], workdir: Path, processes: bool) -> None:
    gw = gateway_factory(limits={"worker_processes": processes}, exports=[{"name": "nas", "type": "folder", "path": str(workdir / "exports"),
                                   "filename": "{company}_{invoice_number}"}])
    source, truth = html("de", "a", 0)
    gw.send(make_mail(sender="Buchhaltung <rechnung@mueller.example>", subject="Ihre Rechnung",
                      attachments=[("scan0001.pdf", pdf_of(source), "application/pdf")]),
            sender="rechnung@mueller.example")
    [file] = wait_for(lambda: gw.exported_files(), timeout=20)
    assert file.name == f"{truth['seller']}_{truth['invoice_number']}.pdf"

    [doc] = gw.api("/api/documents").json()["items"]
    assert {k: doc["fields"][k] for k in truth} == truth
    assert doc["company"] == truth["seller"] and doc["invoice_number"] == truth["invoice_number"]
    assert doc["date"] == truth["issue_date"]
    src = doc["field_sources"]["grand_total"]
    assert src["source"] == "text" and src["page"] == 1 and len(src["box"]) == 4 and 0 < src["confidence"] <= 1
    one = gw.api(f"/api/documents/{doc['id']}").json()
    assert one["fields"] == doc["fields"] and one["field_sources"] == doc["field_sources"]


def test_a_pdf_without_text_has_empty_fields_and_no_company_from_the_display_name(gateway: Gateway) -> None:
    from conftest import unique_pdf

    gateway.send(make_mail(sender="Trusted Supplier GmbH <billing@evil.example>", subject="Invoice 7",
                           attachments=[("a.pdf", unique_pdf("nofields"), "application/pdf")]))
    [doc] = wait_for(lambda: gateway.api("/api/documents").json()["items"], timeout=20)
    assert doc["company"] is None and doc["invoice_number"] is None
    # the display name is a hint in the fields, with its source, never the document's company
    assert doc["fields"]["seller"] == "Trusted Supplier GmbH" and doc["field_sources"]["seller"]["source"] == "mail"
    assert doc["fields"]["grand_total"] is None


def test_a_mail_whose_body_is_the_invoice_gets_fields_from_its_rendered_pdf(gateway: Gateway) -> None:
    source, truth = html("en", "b", 1)
    body = source.split("<body>", 1)[1].split("</body>", 1)[0]
    gateway.send(make_mail(sender="Harbour <billing@harbour.example>", subject="Your invoice",
                           body="See the HTML part.", html=f"<html><body>{body}</body></html>"))
    [doc] = wait_for(lambda: gateway.api("/api/documents").json()["items"], timeout=30)
    assert doc["origin"] == "body"
    for key in ("invoice_number", "issue_date", "grand_total", "iban", "seller_vat_id", "currency"):
        assert doc["fields"][key] == truth[key], key
    assert doc["invoice_number"] == truth["invoice_number"]


def test_a_date_no_label_names_stays_a_field_and_the_document_is_dated_when_received(gateway: Gateway) -> None:
    pdf = pdf_of("<html><body><p>03.02.2019</p><h1>Rechnung</h1><p>Rechnungsnummer: R-77</p>"
                 "<p>Gesamtbetrag 10,00 €</p></body></html>")
    gateway.send(make_mail(subject="Rechnung", attachments=[("r.pdf", pdf, "application/pdf")]))
    [doc] = wait_for(lambda: gateway.api("/api/documents").json()["items"], timeout=20)
    assert doc["fields"]["issue_date"] == "2019-02-03" and doc["field_sources"]["issue_date"]["confidence"] < 0.8
    assert doc["date"] == doc["created"][:10]  # a guess does not decide a target's `since`
    assert doc["invoice_number"] == "R-77"
