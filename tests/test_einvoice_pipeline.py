"""E-invoices through the whole gateway: fields on documents, names, a readable PDF for bare XML."""

from __future__ import annotations

import io
import resource
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfWriter

from conftest import CORPUS, Gateway, make_mail, wait_for
from test_einvoice import hostile

FACTURX = CORPUS / "einvoices/akretion-factur-x/pdf/invoice_EN16931.pdf"
XRECHNUNG_UBL = CORPUS / "einvoices/xrechnung-testsuite/business-cases/standard/01.01a-INVOICE_ubl.xml"
CII_SAMPLE = (Path(__file__).parent / "data" / "einvoice" / "cii-xrechnung.xml").read_bytes()
MUSTANG = CORPUS / "einvoices/mustangproject"
# The corpus files that are not e-invoices (see tests/test_einvoice.py, NEGATIVE).
NEGATIVES = {
    "plain-1.4.pdf": MUSTANG / "library/src/test/resources/MustangGnuaccountingBeispielRE-20170509_505PDF14.pdf",
    "blanko.pdf": MUSTANG / "library/src/test/resources/MustangGnuaccountingBeispielRE-20201121_508blanko.pdf",
    "xmp-claims-factur-x.pdf": MUSTANG / "validator/src/test/resources/corruptedV2PDF.pdf",
    "corrupt.pdf": MUSTANG / "Mustang-CLI/src/test/resources/corrupt-factur-x-waytoosmall.pdf",
    "foreign-root.xml": MUSTANG / "validator/src/test/resources/invalidV2Root.xml",
}


def facturx_pdf(xml: bytes) -> bytes:
    """A one-page PDF carrying ``xml`` as factur-x.xml."""
    writer = PdfWriter()
    writer.add_blank_page(595, 842)
    writer.add_attachment("factur-x.xml", xml)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def settled(gw: Gateway, count: int, timeout: float = 30) -> list[dict[str, Any]]:
    """The API's messages once ``count`` of them have left status received."""
    def done() -> list[dict[str, Any]] | None:
        items: list[dict[str, Any]] = gw.api("/api/messages").json()["items"]
        return items if len(items) == count and all(m["status"] != "received" for m in items) else None

    result: list[dict[str, Any]] = wait_for(done, timeout=timeout)
    return result


@pytest.mark.corpus
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


@pytest.mark.corpus
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


def test_hostile_xml_is_imported_as_a_plain_file_with_a_warning(gateway_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    secret = "S3CRET-" + "b41e07"  # built, so the marker is not in this file's bytes as one string either
    secret_path = tmp_path / "secret.txt"
    secret_path.write_text(secret)
    laughs = hostile(b"<!DOCTYPE rsm:CrossIndustryInvoice [<!ENTITY lol0 \"lol\">" + b"".join(
        b'<!ENTITY lol%d "%s">' % (i, b"&lol%d;" % (i - 1) * 10) for i in range(1, 10)) + b"]>", b"&lol9;")
    xxe = hostile(b'<!DOCTYPE x [<!ENTITY xxe SYSTEM "' + secret_path.as_uri().encode() + b'">]>', b"&xxe;")
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


@pytest.mark.corpus
def test_naming_uses_the_total_currency_and_issue_date_of_the_einvoice(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    gw: Gateway = gateway_factory(exports=[{"name": "nas", "type": "folder", "path": "exports",
                                            "filename": "{date:%Y-%m-%d} {seller} {total} {currency}"}])
    # the mail is dated (and received) in another year than the invoice was issued (2026-01-31)
    mail = make_mail(subject="Facture", attachments=[("facture.pdf", FACTURX.read_bytes(), "application/pdf")])
    mail["Date"] = "Tue, 03 Mar 2020 10:00:00 +0000"
    gw.send(mail)
    files = wait_for(gw.exported_files, timeout=20)
    assert [f.relative_to(gw.exports).as_posix() for f in files] == ["2026-01-31 LE FOURNISSEUR 104.90 EUR.pdf"]


TELEKOM_RULE = """\
name: Telekom by VAT ID
when:
  einvoice: {seller_vat_id: DE123456789, seller: "*Telekom*"}
assign:
  company: Telekom
  document_type: phone bill
  tags: [telecom]
"""


def test_rule_on_einvoice_seller_vat_id_and_seller_decides_and_assigns(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    gw: Gateway = gateway_factory(unmatched={"smtp": "keep"})
    (gw.settings.rules_dir / "telekom.yaml").write_text(TELEKOM_RULE, encoding="utf-8")
    wait_for(lambda: gw.service.rules.ruleset is not None and len(gw.service.rules.ruleset.rules) == 1, timeout=10)
    telekom = CII_SAMPLE.replace("Muster Bürobedarf GmbH".encode(), b"Telekom Deutschland GmbH")
    impostor = telekom.replace(b">DE123456789<", b">DE999999999<")  # same name, another VAT ID
    gw.send(make_mail(subject="Ihre Rechnung", attachments=[("rechnung.pdf", facturx_pdf(telekom), "application/pdf")]))
    gw.send(make_mail(subject="Ihre Rechnung", attachments=[("rechnung.pdf", facturx_pdf(impostor), "application/pdf")]))
    messages = {m["id"]: m for m in settled(gw, 2)}
    first, second = (gw.api(f"/api/messages/{mid}").json() for mid in sorted(messages))
    assert first["status"] == "imported" and first["decision"]["rule"] == "Telekom by VAT ID"
    assert second["status"] == "unmatched" and second["decision"]["rule"] is None
    docs = gw.api("/api/documents").json()["items"]
    assert len(docs) == 1
    doc = docs[0]
    assert (doc["company"], doc["document_type"], doc["tags"]) == ("Telekom", "phone bill", ["telecom"])
    assert doc["einvoice"]["seller"] == "Telekom Deutschland GmbH" and doc["einvoice"]["seller_vat_id"] == "DE123456789"


def test_totals_that_do_not_add_up_are_warnings_in_the_api(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    gw: Gateway = gateway_factory()
    wrong = CII_SAMPLE.replace(b"<ram:GrandTotalAmount>238.00</ram:GrandTotalAmount>",
                               b"<ram:GrandTotalAmount>283.00</ram:GrandTotalAmount>")
    gw.send(make_mail(subject="Rechnung", attachments=[("rechnung.pdf", facturx_pdf(wrong), "application/pdf")]))
    assert [m["status"] for m in settled(gw, 1)] == ["imported"]
    doc = gw.api("/api/documents").json()["items"][0]
    assert doc["einvoice"]["grand_total"] == "283.00"
    assert any("not the grand total (BT-112) 283.00" in w for w in doc["warnings"]), doc["warnings"]


@pytest.mark.corpus
def test_corpus_negatives_are_imported_as_plain_documents(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    gw: Gateway = gateway_factory()
    for name, path in NEGATIVES.items():
        ctype = "application/xml" if name.endswith(".xml") else "application/pdf"
        gw.send(make_mail(subject=f"Rechnung {name}", attachments=[(name, path.read_bytes(), ctype)]))
    messages = settled(gw, len(NEGATIVES))
    assert [m["status"] for m in messages] == ["imported"] * len(NEGATIVES), [m["reason"] for m in messages]
    docs = gw.api("/api/documents").json()["items"]
    assert sorted(d["filename"] for d in docs) == sorted(NEGATIVES)  # no readable PDF made: no e-invoice
    for doc in docs:
        assert doc["einvoice"] is None and doc["origin"] == "attachment", doc
        assert doc["kind"] == NEGATIVES[doc["filename"]].suffix[1:]
        # no e-invoice read: what company and number there are come from the PDF's visible text (gateway.fields)
        for key, field in (("company", "seller"), ("invoice_number", "invoice_number")):
            assert doc[key] is None or (doc[key] == doc["fields"][field]
                                        and doc["field_sources"][field]["source"] == "text"), doc
    files = wait_for(lambda: len(gw.exported_files()) == len(NEGATIVES) and gw.exported_files(), timeout=20)
    assert sorted(f.read_bytes() for f in files) == sorted(p.read_bytes() for p in NEGATIVES.values())


def test_utf16_xrechnung_is_examined_and_read(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    gw: Gateway = gateway_factory()
    utf16 = CII_SAMPLE.decode("utf-8").replace('encoding="UTF-8"', 'encoding="UTF-16"').encode("utf-16")
    gw.send(make_mail(subject="Rechnung", attachments=[("rechnung.xml", utf16, "application/octet-stream")]))
    assert [m["status"] for m in settled(gw, 1, timeout=40)] == ["imported"]
    docs = {d["origin"]: d for d in gw.api("/api/documents").json()["items"]}
    assert set(docs) == {"attachment", "einvoice-render"}
    xml = docs["attachment"]
    assert xml["kind"] == "xml" and xml["einvoice"]["seller"] == "Muster Bürobedarf GmbH"
    assert xml["einvoice"]["grand_total"] == "238.00" and xml["company"] == "Muster Bürobedarf GmbH"


@pytest.mark.corpus
def test_document_type_defaults_to_invoice_or_credit_note(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    gw: Gateway = gateway_factory()
    einvoices = CORPUS / "einvoices"
    for name, path in (
        ("corrected.pdf", einvoices / "xrechnung-testsuite/business-cases/standard/01.18a-INVOICE_uncefact.xml"),  # 384
        ("credit.pdf", einvoices / "zugferd-corpus/ZUGFeRDv2/correct/Mustangproject/testout-ZF2PushCreditNote.xml"),
        ("invoice.pdf", einvoices / "xrechnung-testsuite/business-cases/standard/01.01a-INVOICE_uncefact.xml"),
    ):
        gw.send(make_mail(subject=name, attachments=[(name, facturx_pdf(path.read_bytes()), "application/pdf")]))
    settled(gw, 3)
    docs = {d["filename"]: d for d in gw.api("/api/documents").json()["items"]}
    got = {name: (d["document_type"], d["einvoice"]["document_type"], d["einvoice"]["type_code"])
           for name, d in docs.items()}
    assert got == {"corrected.pdf": ("invoice", "corrective", "384"),
                   "credit.pdf": ("credit_note", "credit_note", "381"),
                   "invoice.pdf": ("invoice", "invoice", "380")}
