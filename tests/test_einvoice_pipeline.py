"""E-invoices through the whole gateway: fields on documents, names, a readable PDF for bare XML."""

from __future__ import annotations

import resource
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


CII_HEAD = (b'<rsm:CrossIndustryInvoice xmlns:rsm="urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100"'
            b' xmlns:ram="urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100">')


def hostile_cii(doctype: bytes, ref: bytes) -> bytes:
    """A CII invoice whose number and seller are the entity reference ``ref``, under ``doctype``."""
    return (b'<?xml version="1.0"?>\n' + doctype + b"\n" + CII_HEAD
            + b"<rsm:ExchangedDocument><ram:ID>" + ref + b"</ram:ID></rsm:ExchangedDocument>"
            + b"<rsm:SupplyChainTradeTransaction><ram:ApplicableHeaderTradeAgreement><ram:SellerTradeParty>"
            + b"<ram:Name>" + ref + b"</ram:Name></ram:SellerTradeParty></ram:ApplicableHeaderTradeAgreement>"
            + b"</rsm:SupplyChainTradeTransaction></rsm:CrossIndustryInvoice>")


def test_hostile_xml_is_imported_as_a_plain_file_with_a_warning(gateway_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    secret = "S3CRET-" + "b41e07"  # built, so the marker is not in this file's bytes as one string either
    secret_path = tmp_path / "secret.txt"
    secret_path.write_text(secret)
    laughs = hostile_cii(b"<!DOCTYPE rsm:CrossIndustryInvoice [<!ENTITY lol0 \"lol\">" + b"".join(
        b'<!ENTITY lol%d "%s">' % (i, b"&lol%d;" % (i - 1) * 10) for i in range(1, 10)) + b"]>", b"&lol9;")
    xxe = hostile_cii(b'<!DOCTYPE x [<!ENTITY xxe SYSTEM "' + secret_path.as_uri().encode() + b'">]>', b"&xxe;")
    gw: Gateway = gateway_factory()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for name, data in (("laughs.xml", laughs), ("xxe.xml", xxe)):
        gw.send(make_mail(subject=f"Rechnung {name}", attachments=[(name, data, "application/xml")]))
    messages = wait_for(lambda: (items := gw.api("/api/messages").json()["items"]) and len(items) == 2
                        and all(m["status"] != "received" for m in items) and items, timeout=30)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KiB: nothing was expanded
    assert sorted(m["status"] for m in messages) == ["imported", "imported"]
    docs = gw.api("/api/documents").json()["items"]
    assert sorted(d["filename"] for d in docs) == ["laughs.xml", "xxe.xml"]  # no readable PDF: no e-invoice
    for doc in docs:
        assert doc["einvoice"] is None and doc["kind"] == "xml"
        assert any("not read as an e-invoice" in w and "DOCTYPE" in w for w in doc["warnings"]), doc["warnings"]
    stored = [p.read_bytes() for p in (gw.workdir / "data").rglob("*") if p.is_file()]
    stored += [p.read_bytes() for p in gw.exported_files()]
    api = "".join(gw.api(path).text for path in ("/api/documents", "/api/messages"))
    for m in messages:
        api += gw.api(f"/api/messages/{m['id']}").text
    assert secret not in api
    assert not any(secret.encode() in blob for blob in stored)
