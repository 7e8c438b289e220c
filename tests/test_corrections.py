"""Corrections that teach: a person corrects a document's fields; the supplier's next invoice reads right."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from conftest import Gateway, make_mail, wait_for
from fieldsamples import pdf_of, valid_iban, valid_vat
from test_web_pages import Browserless

VAT = valid_vat("DE", "81234567")
SUPPLIER = "Kessler Werkzeuge GmbH"


def supplier_pdf(number: str, total: str, part: str) -> bytes:
    """Kessler's invoice: its number by an unusual label ("Beleg-Kennung"), its total under "Schlusswert",
    off to the right, and a part sum ("Summe Leistung") a generic reader takes for the total."""
    return pdf_of(f"""<html><head><meta charset="utf-8"></head><body style="font-family:sans-serif;font-size:10pt">
    <p><b>{SUPPLIER}</b><br>Industriestr. 4<br>70565 Stuttgart</p><h1>Rechnung</h1>
    <table><tr><td>Beleg-Kennung</td><td>{number}</td></tr><tr><td>Datum</td><td>12.03.2026</td></tr></table>
    <table style="margin-top:20pt"><tr><td>Summe Leistung</td><td>{part} €</td></tr></table>
    <p style="margin-top:30pt; margin-left:300pt">Schlusswert<br><b>{total} €</b></p>
    <p style="margin-top:40pt; font-size:7pt">USt-IdNr. {VAT}</p></body></html>""")


def send_pdf(gw: Gateway, pdf: bytes, subject: str, sender: str = "rechnung@kessler.example",
             rcpt: str = "invoices@localhost") -> dict[str, Any]:
    gw.send(make_mail(sender=f"Kessler <{sender}>", to=rcpt, subject=subject,
                      attachments=[(f"{subject}.pdf", pdf, "application/pdf")]), sender=sender, rcpt=[rcpt])

    def stored() -> dict[str, Any] | None:
        docs = [d for d in gw.api("/api/documents").json()["items"] if d["filename"] == f"{subject}.pdf"]
        return docs[0] if docs else None

    found: dict[str, Any] = wait_for(stored, timeout=20)
    return found


def patch(gw: Gateway, doc_id: int, fields: dict[str, Any]) -> httpx.Response:
    r: httpx.Response = gw.api(f"/api/documents/{doc_id}", method="PATCH", json={"fields": fields})
    return r


def test_a_correction_teaches_the_supplier_layout_and_the_next_invoice_reads_right(
        gateway_factory: Callable[..., Gateway], workdir: Path) -> None:
    gw = gateway_factory(exports=[{"name": "nas", "type": "folder", "path": str(workdir / "exports"),
                                   "filename": "{company}_{invoice_number}"}])
    first = send_pdf(gw, supplier_pdf("KW-58213", "95,20", "80,00"), "first")
    # the generic reader misses the number and takes the part sum for the total
    assert first["fields"]["invoice_number"] is None and first["fields"]["grand_total"] == "80.00"
    wait_for(lambda: [f.name for f in gw.exported_files()] == [f"{SUPPLIER}_unknown.pdf"], timeout=20)

    r = patch(gw, first["id"], {"invoice_number": "KW-58213", "grand_total": "95.20"})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["fields"]["invoice_number"] == "KW-58213" and doc["fields"]["grand_total"] == "95.20"
    assert doc["field_sources"]["grand_total"] == {"source": "person", "confidence": 1.0,
                                                   "label": "corrected by a person"}
    assert doc["invoice_number"] == "KW-58213"  # the document's own column follows
    assert set(doc["learned"]) == {"invoice_number", "grand_total"}

    # the delivered file's name changes: the page offers to export it again under the new name
    c = Browserless(gw)
    assert c.login().status_code == 302
    page = c.get(f"/documents/{first['id']}").text
    assert "Export again under the new name" in page and f"{SUPPLIER}_KW-58213.pdf" in page
    assert c.post(f"/documents/{first['id']}/export", {"target": "nas"}).status_code == 302
    wait_for(lambda: f"{SUPPLIER}_KW-58213.pdf" in [f.name for f in gw.exported_files()], timeout=20)

    # the next invoice of that supplier, another number and total, reads right through the gateway
    second = send_pdf(gw, supplier_pdf("KW-61007", "1.234,50", "999,00"), "second")
    assert second["fields"]["invoice_number"] == "KW-61007" and second["fields"]["grand_total"] == "1234.50"
    assert second["invoice_number"] == "KW-61007"
    for name in ("invoice_number", "grand_total"):
        src = second["field_sources"][name]
        assert src["source"] == "supplier" and src["label"] == f"learned from your correction on document {first['id']}"
    wait_for(lambda: f"{SUPPLIER}_KW-61007.pdf" in [f.name for f in gw.exported_files()], timeout=20)
    assert f"learned from your correction on document {first['id']}" in c.get(f"/documents/{second['id']}").text

    # re-processing the first mail keeps the person's corrections
    assert gw.api(f"/api/messages/{first['message_id']}/reprocess", method="POST").status_code == 202
    wait_for(lambda: gw.api(f"/api/messages/{first['message_id']}").json()["status"] == "imported", timeout=20)
    again = gw.api(f"/api/documents/{first['id']}").json()
    assert again["fields"]["grand_total"] == "95.20" and again["field_sources"]["grand_total"]["source"] == "person"

    # withdrawing a correction brings back what was read (and the column what it was)
    r = patch(gw, first["id"], {"invoice_number": None, "grand_total": ""})
    assert r.status_code == 200, r.text
    back = r.json()
    assert back["fields"]["invoice_number"] is None and back["invoice_number"] is None
    assert back["fields"]["grand_total"] == "80.00" and back["field_sources"]["grand_total"]["source"] == "text"
    c.close()


def test_corrections_need_the_login_and_csrf_are_checked_and_escaped(
        gateway_factory: Callable[..., Gateway], workdir: Path) -> None:
    cfg_addresses = [{"address": "invoices@localhost"},
                     {"address": "ruled@localhost", "assign": {"company": "Rule Co"}}]
    from conftest import base_config

    smtp = base_config(workdir)["smtp"]
    gw = gateway_factory(smtp={**smtp, "addresses": cfg_addresses})
    doc = send_pdf(gw, supplier_pdf("KW-1", "10,00", "5,00"), "ruled", rcpt="ruled@localhost")
    assert doc["company"] == "Rule Co" and doc["field_sources"]["seller"]["source"] == "rule"
    url = f"http://127.0.0.1:{gw.web_port}/api/documents/{doc['id']}"

    # neither a stranger nor a logged-in page without the CSRF token may correct
    assert httpx.patch(url, json={"fields": {"seller": "X"}}).status_code == 401
    c = Browserless(gw)
    assert c.login().status_code == 302
    assert c.http.patch(url, json={"fields": {"seller": "X"}}).status_code == 403
    assert c.post(f"/documents/{doc['id']}/fields", {"seller": "X"}, token=False).status_code == 403
    r = c.http.patch(url, json={"fields": {"seller": "Person Co"}}, headers={"X-CSRF-Token": c.csrf()})
    assert r.status_code == 200 and r.json()["company"] == "Person Co"  # a person beats a rule
    assert r.json()["field_sources"]["seller"]["source"] == "person"

    # wrong values: 400 naming the field, and nothing of the request changes
    bad_iban = valid_iban("DE", "200800000970375700")[:-1] + "1"
    for fields, named in (({"colour": "red"}, "colour"), ({"issue_date": "31.03.2026"}, "issue_date"),
                          ({"grand_total": "1.234,56"}, "grand_total"), ({"iban": bad_iban}, "iban"),
                          ({"iban": "IBAN"}, "iban"), ({"seller_vat_id": VAT[:-1] + str((int(VAT[-1]) + 1) % 10)},
                                                       "seller_vat_id"),
                          ({"invoice_number": "ok-1", "due_date": "tomorrow"}, "due_date")):
        r = patch(gw, doc["id"], fields)
        assert r.status_code == 400 and named in r.json()["error"], (fields, r.text)
    assert gw.api(f"/api/documents/{doc['id']}").json()["fields"]["invoice_number"] is None  # not "ok-1"

    # the page's form: what changed is flashed; a value is shown escaped
    hostile = "<img src=x onerror=alert(1)>"
    r = c.post(f"/documents/{doc['id']}/fields", {"buyer": hostile, "issue_date": "2026-03-31", "seller": "Person Co"})
    assert r.status_code == 302
    page = c.get(f"/documents/{doc['id']}").text
    assert "Corrected" in page and "issue date: 2026-03-12 → 2026-03-31" in page
    assert hostile not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert gw.api(f"/api/documents/{doc['id']}").json()["date"] == "2026-03-31"

    # the document list shows the company: escaped too
    assert patch(gw, doc["id"], {"seller": hostile}).json()["company"] == hostile
    for path in ("/documents", f"/documents/{doc['id']}"):
        page = c.get(path).text
        assert hostile not in page and "&lt;img src=x onerror=alert(1)&gt;" in page, path

    # withdrawing the person's seller brings the rule's back
    r = patch(gw, doc["id"], {"seller": None})
    assert r.json()["company"] == "Rule Co" and r.json()["field_sources"]["seller"]["source"] == "rule"
    c.close()


def test_a_value_without_a_label_is_learned_by_its_place() -> None:
    from gateway.fields import read_pdf
    from gateway.fields.learned import locate, read_learned

    def invoice(number: str) -> bytes:
        return pdf_of(f'<html><body><p style="margin-left:300pt">{number}</p><p>Danke!</p></body></html>')

    entry = locate(read_pdf(invoice("XY-1001")), "invoice_number", "XY-1001", 7)
    assert entry is not None and entry.label is None and entry.page == 1
    [(value, source)] = read_learned(read_pdf(invoice("XY-2002")), [entry]).values()
    assert value == "XY-2002" and source.source == "supplier"
    assert source.label == "learned from your correction on document 7"


def test_precedence_rule_then_einvoice_then_the_learned_layout_then_the_text() -> None:
    from gateway.fields import read_document, read_pdf
    from gateway.fields.learned import locate

    class Einvoice:
        def fields(self) -> dict[str, str]:
            return {"invoice_number": "XML-9", "seller_vat_id": VAT}

    first = read_pdf(supplier_pdf("KW-58213", "95,20", "80,00"))
    entries = [e for e in (locate(first, "invoice_number", "KW-58213", 3), locate(first, "grand_total", "95.20", 3))
               if e is not None]
    pdf = supplier_pdf("KW-61007", "1.234,50", "999,00")
    asked: list[list[str]] = []

    def lookup(keys: Any) -> Any:
        asked.append(list(keys))
        return entries

    read = read_document(pdf, "pdf", einvoice=Einvoice(), assign={"company": "Rule Co"}, learned=lookup)
    assert asked[0][0] == f"vat:{VAT}"  # the supplier is known by its VAT ID first
    assert (read.seller, read.sources["seller"].source) == ("Rule Co", "rule")
    assert (read.invoice_number, read.sources["invoice_number"].source) == ("XML-9", "einvoice")
    assert (read.grand_total, read.sources["grand_total"].source) == ("1234.50", "supplier")  # not the text's 999.00
    assert read_document(pdf, "pdf").grand_total == "999.00"


def test_a_new_reading_of_the_fields_keeps_the_corrections_on_top(tmp_path: Path) -> None:
    from gateway.store import Store

    def reading(number: str, total: str) -> dict[str, Any]:
        return {"fields": {"invoice_number": number, "grand_total": total},
                "field_sources": {"invoice_number": {"source": "text", "confidence": 0.9},
                                  "grand_total": {"source": "text", "confidence": 0.9}}}

    store = Store(tmp_path)
    (mid,) = store.insert_messages([{"received": "2026-12-07T10:00:00", "source": "smtp", "raw_path": "x",
                                     "size": 1, "sha256": "m"}])
    doc = {"sha256": "a" * 64, "filename": "r.pdf", "content_type": "application/pdf", "kind": "pdf", "size": 1,
           "path": "documents/aa/r.pdf", "invoice_number": "R-1", "fields": reading("R-1", "10.00")}
    (doc_id,) = store.finish_message(mid, status="imported", reason="", fields={}, documents=[doc])
    assert store.correct_fields(doc_id, {"invoice_number": "R-100"}, by="admin") == {"invoice_number": ("R-1", "R-100")}
    # read again (after OCR, say): the new reading counts where no person corrected
    store.set_read_fields(doc_id, reading("R-2", "12.00"))
    row = store.document(doc_id)
    assert row is not None and row["invoice_number"] == "R-100"
    fields = json.loads(row["fields"])
    assert fields["fields"] == {**fields["fields"], "invoice_number": "R-100", "grand_total": "12.00"}
    assert fields["field_sources"]["invoice_number"]["source"] == "person"
    # withdrawn: the newest reading comes back, the column what it was
    store.correct_fields(doc_id, {"invoice_number": None})
    row = store.document(doc_id)
    assert row is not None and json.loads(row["fields"])["fields"]["invoice_number"] == "R-2"
    assert row["invoice_number"] == "R-1" and store.field_corrections(doc_id) == {}
