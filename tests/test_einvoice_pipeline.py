"""E-invoices through the whole gateway: fields on documents, names, a readable PDF for bare XML."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import CORPUS, Gateway, make_mail, wait_for

FACTURX = CORPUS / "einvoices/akretion-factur-x/pdf/invoice_EN16931.pdf"
XRECHNUNG_UBL = CORPUS / "einvoices/xrechnung-testsuite/business-cases/standard/01.01a-INVOICE_ubl.xml"


def test_facturx_pdf_is_named_by_seller_and_number_and_shows_its_fields(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    gw: Gateway = gateway_factory(exports=[{"name": "nas", "type": "folder", "path": "exports",
                                            "filename": "{company}/{invoice_number}"}])
    gw.send(make_mail(subject="Votre facture", attachments=[("facture.pdf", FACTURX.read_bytes(), "application/pdf")]))
    files = wait_for(gw.exported_files, timeout=20)
    assert [f.relative_to(gw.exports).as_posix() for f in files] == ["LE FOURNISSEUR/F20260023.pdf"]
    assert files[0].read_bytes() == FACTURX.read_bytes()
    doc = gw.api("/api/documents").json()["items"][0]
    assert doc["company"] == "LE FOURNISSEUR" and doc["document_type"] == "invoice"
    assert doc["invoice_number"] == "F20260023" and doc["date"] == "2026-01-31"
    einv = doc["einvoice"]
    assert einv["grand_total"] == "104.90" and einv["issue_date"] == "2026-01-31" and einv["currency"] == "EUR"
    assert einv["syntax"] == "CII" and einv["seller_vat_id"] == "FR11123456782"


def test_bare_xrechnung_gets_a_readable_pdf_beside_it(gateway_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    gw: Gateway = gateway_factory(exports=[{"name": "nas", "type": "folder", "path": "exports",
                                            "filename": "{seller}/{invoice_number}"}])
    gw.send(make_mail(subject="Rechnung", attachments=[("xrechnung.xml", XRECHNUNG_UBL.read_bytes(), "application/xml")]))
    files = wait_for(lambda: len(gw.exported_files()) == 2 and gw.exported_files(), timeout=40)
    names = sorted(f.relative_to(gw.exports).as_posix() for f in files)
    assert names == ["[Seller name]/123456XX.pdf", "[Seller name]/123456XX.xml"]
    pdf = next(f for f in files if f.suffix == ".pdf")
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    assert "[Seller name]" in text and "123456XX" in text and "336.90" in text.replace(",", ".")
    docs = gw.api("/api/documents").json()["items"]
    assert {d["origin"] for d in docs} == {"attachment", "einvoice-render"}
