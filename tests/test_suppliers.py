"""Suppliers: learned from e-invoices, matched on later documents, shown, and used by the IBAN guard."""

from __future__ import annotations

import json
from decimal import Decimal
from collections.abc import Callable
from pathlib import Path

import httpx

from conftest import PDF_BYTES, Gateway, make_mail, run_cli, wait_for
from fieldsamples import html, pdf_of, valid_vat
from gateway.fields import DocumentFields
from gateway.fields.suppliers import Suppliers, name_key, rules_naming
from gateway.payment_guard import format_iban, mask_iban
from gateway.pipeline import Pipeline
from gateway.spool import Spool
from gateway.store import Store
from test_trust_iban import CII, NEW, OLD, changed, feed, pipeline, text_pdf  # noqa: F401  (pipeline is a fixture)
from test_web_pages import Browserless

VAT = valid_vat("DE", "13669597")  # the VAT ID of fieldsamples' German invoices
SELLER = "Muster Bürobedarf GmbH"  # the seller of CII


def cii(number: str, *, vat: str = VAT, seller: str = SELLER, iban: str = OLD) -> bytes:
    """The XRechnung sample with another number, VAT ID, seller name and IBAN."""
    return (CII.replace(b"IG-2024-0042", number.encode()).replace(b"DE123456789", vat.encode())
            .replace(SELLER.encode(), seller.replace("&", "&amp;").replace("<", "&lt;").encode())
            .replace(OLD.encode(), iban.encode()))


def docs_of(store: Store) -> list[dict[str, object]]:
    return [dict(d, fields=json.loads(d["fields"])) for mid in store.message_ids() for d in store.documents_of(mid)]


def test_names_are_matched_without_case_accents_punctuation_or_legal_form() -> None:
    assert name_key("Müller Bürotechnik GmbH & Co. KG") == name_key("MULLER BÜROTECHNIK") == "muller burotechnik"
    assert name_key("ACME, Inc.") == name_key("Acme") == name_key("acme ltd.") == "acme"
    assert name_key("Van Dijk Installaties B.V.") == "van dijk installaties"
    assert name_key("Ferramenta Rossi S.r.l.") == name_key("Ferramenta Rossi SRL") == "ferramenta rossi"
    assert name_key("Atelier Lumière SAS") == name_key("atelier lumiere") and name_key("AG") == "ag"
    assert name_key("Acme Widgets") != name_key("Acme")


def test_the_rules_that_name_a_supplier() -> None:
    files = (("a.yaml", b"rules:\n- {name: by-regex, when: {any: [{supplier: 're:muster b.robedarf'}]}}\n"
                        b"- {name: by-glob, when: {company: 'Muster*'}}\n- {name: by-assign, when: {from: x},"
                        b" assign: {company: MUSTER BUROBEDARF}}\n- {name: other, when: {company: Muster AG},"
                        b" assign: {company: Mustermann}}\n"),
             ("b.yaml", b"name: by-alias\nwhen: {not: {seller: Buero Muster}}\n"), ("broken.yaml", b"a: [\n"))
    ruleset = type("RuleSet", (), {"sources": files})
    found = rules_naming(ruleset, {"name": SELLER, "aliases": [SELLER, "Büro Muster"]})
    assert found == ["by-regex", "by-glob", "by-assign"]


def test_a_plain_pdf_from_another_domain_is_named_by_the_supplier_its_vat_id_names(
        pipeline: tuple[Pipeline, Spool, Store]) -> None:  # noqa: F811
    _, _, store = pipeline
    feed(pipeline, "a.xml", cii("IG-1"), "application/xml")  # the supplier's e-invoice: learned
    feed(pipeline, "b.pdf", text_pdf(f"Rechnung R-7  USt-IdNr.: {VAT}"), "application/pdf",
         sender="Shop <shop@elsewhere.example>")
    feed(pipeline, "c.pdf", text_pdf(f"Rechnung R-8  USt-IdNr.: {valid_vat('DE', '29876543')}"),
         "application/pdf", sender="Shop <shop@elsewhere.example>")  # another company's VAT ID: not the supplier
    [supplier] = Suppliers(store).list()
    assert supplier["name"] == SELLER
    *_, pdf, other = docs_of(store)
    assert pdf["fields"]["fields"]["seller"] == SELLER and pdf["company"] == SELLER
    assert pdf["fields"]["field_sources"]["seller"] == {"source": "supplier", "confidence": 0.95,
                                                        "label": f"VAT ID {VAT}"}
    assert pdf["supplier_id"] == supplier["id"] and other["supplier_id"] is None
    assert other["fields"]["field_sources"]["seller"]["source"] == "mail"
    # by name too, whatever the case and legal form; never over the e-invoice's own seller
    got = Suppliers(store).match(DocumentFields(seller="MUSTER BÜROBEDARF"))
    assert got is not None and got.kind == "name" and got.supplier_id == supplier["id"]


def test_a_supplier_learns_its_domains_and_accounts_only_from_senders_that_speak_for_it(tmp_path: Path) -> None:
    store = Store(tmp_path)
    suppliers = Suppliers(store, ["home.example"])

    def learn(mid: int, domain: str, auth: str | None, **inv: str) -> None:
        with store.write() as conn:
            einvoice = {"seller": SELLER, "seller_vat_id": VAT, "iban": OLD, **inv}
            suppliers.learner(mid, domain, auth)(conn, mid, {"einvoice": einvoice, "fields": {}})

    learn(1, "gmail.com", "authenticated sender")  # anyone authenticates at a freemail domain
    learn(2, "muster-buero.example", None)  # anyone can write any From
    assert (s := suppliers.get(1)) is not None and s["vat_ids"] == [VAT]
    assert s["sender_domains"] == [] and s["ibans"] == []
    learn(3, "billing.muster-buero.example", "authenticated sender")  # the first that speaks for it
    learn(4, "evil.example", "authenticated sender", iban=NEW)  # the attacker's own domain authenticates
    learn(5, "muster-buero.example", None, iban=NEW)
    s = suppliers.get(1)
    assert s is not None and [d["value"] for d in s["sender_domains"]] == ["muster-buero.example"]
    assert [(i["value"], i["confirmed_by"]) for i in s["ibans"]] == [(mask_iban(OLD), "authenticated sender")]
    assert suppliers.known_ibans(1, before_message=6) == (SELLER, {OLD}, 3)
    assert suppliers.known_ibans(1, before_message=3) is None
    assert [x["id"] for x in suppliers.list()] == [1]  # one supplier, whoever named its VAT ID


def test_the_iban_guard_compares_with_the_supplier_across_sender_domains(
        pipeline: tuple[Pipeline, Spool, Store]) -> None:  # noqa: F811
    pipe, _, store = pipeline
    feed(pipeline, "a.xml", cii("IG-1"), "application/xml")  # unauthenticated: the account is not learned
    first = store.documents_of(store.message_ids()[0])[0]
    assert Suppliers(store).get(first["supplier_id"])["ibans"] == []
    pipe.payment_guard.confirm(int(first["id"]), "anna", store.data_dir)  # a person confirms it by phone

    def pdf(iban: str, domain: str) -> list[str]:
        return changed(feed(pipeline, f"{domain}.pdf", text_pdf(f"Rechnung USt-IdNr.: {VAT}  IBAN {format_iban(iban)}"),
                            "application/pdf", sender=f"Billing <billing@{domain}>"))

    [warning] = pdf(NEW, "muster-shop.example")  # a sender domain never seen, same VAT ID: same supplier
    assert warning.startswith(f"payment details changed: IBAN {mask_iban(NEW)} was {mask_iban(OLD)}")
    assert f"supplier {SELLER}" in warning
    assert pdf(OLD, "muster-service.example") == []  # the supplier's account, from a third domain
    page = Suppliers(store).get(first["supplier_id"])
    assert [i["value"] for i in page["ibans"]] == [mask_iban(OLD)] and page["ibans"][0]["confirmed_by"] == \
        "confirmed by anna"


def test_suppliers_page_and_api_through_the_gateway(gateway_factory: Callable[..., Gateway], workdir: Path) -> None:
    (workdir / "rules" / "muster.yaml").write_text(
        "rules:\n- {name: muster-office, when: {from: '@never.example'}, assign: {company: Muster Bürobedarf}}\n"
        "- {name: muster-paper, when: {supplier: Muster Bürobedarf}, assign: {tags: [muster]}}\n")
    gw = gateway_factory()
    gw.service.pipeline.xml_renderer = lambda inv: PDF_BYTES + inv.invoice_number.encode()  # not what is tested
    nasty = "<script>alert(1)</script> & Söhne GmbH"
    gw.send(make_mail(sender="Muster <rechnung@muster-buero.example>", subject="e-invoice",
                      attachments=[("IG-1.xml", cii("IG-1"), "application/xml")]),
            sender="rechnung@muster-buero.example")
    gw.send(make_mail(sender="X <x@nasty.example>", subject="nasty", attachments=[
        ("N-1.xml", cii("N-1", vat=valid_vat("DE", "29876543"), seller=nasty), "application/xml")]))
    wait_for(lambda: len(gw.api("/api/suppliers").json()["items"]) == 2, timeout=30)
    source, truth = html("de", "a", 0)  # a plain PDF from another domain, printing the supplier's VAT ID
    gw.send(make_mail(sender="Buchhaltung <rechnung@muster-shop.example>", subject="plain",
                      attachments=[("scan.pdf", pdf_of(source), "application/pdf")]),
            sender="rechnung@muster-shop.example")
    items = wait_for(lambda: (r := gw.api("/api/documents?limit=100").json()["items"]) and
                     any(d["filename"] == "scan.pdf" for d in r) and r, timeout=30)
    [doc] = [d for d in items if d["filename"] == "scan.pdf"]
    assert truth["seller_vat_id"] == VAT and truth["seller"] != SELLER
    assert doc["fields"]["seller"] == SELLER and doc["company"] == SELLER
    assert doc["field_sources"]["seller"]["source"] == "supplier"
    assert doc["field_sources"]["seller"]["label"] == f"VAT ID {VAT}"
    assert doc["tags"] == ["muster"]  # a rule's supplier condition sees the supplier's name

    listed = {s["name"]: s for s in gw.api("/api/suppliers").json()["items"]}
    muster = listed[SELLER]
    # the e-invoice and the readable PDF made from it are one invoice: counted once
    mine = sorted(d["id"] for d in items if d["supplier_id"] == muster["id"] and d["origin"] != "einvoice-render")
    assert muster["documents"] == len(mine) == 2 and doc["id"] in mine
    assert muster["totals"] == {"EUR": f"{Decimal('238.00') + Decimal(truth['grand_total']):.2f}"}
    one = gw.api(f"/api/suppliers/{muster['id']}").json()
    assert one["vat_ids"] == [VAT] and sorted(d["id"] for d in one["documents"]) == mine
    assert one["rules"] == ["muster-office", "muster-paper"] and one["months"]
    # a person corrects the seller of a document (PATCH fields): its supplier takes the name
    fixed = gw.api(f"/api/documents/{doc['id']}", "PATCH", json={"fields": {"seller": "Muster Bürobedarf Berlin"}})
    assert fixed.status_code == 200, fixed.text
    assert gw.api(f"/api/suppliers/{muster['id']}").json()["name"] == "Muster Bürobedarf Berlin"
    assert gw.api("/api/suppliers/999").status_code == 404
    assert httpx.get(f"http://127.0.0.1:{gw.web_port}/api/suppliers").status_code == 401

    browser = Browserless(gw)
    assert browser.get("/suppliers").status_code in (302, 303, 401)  # login first
    browser.login()
    pages = [browser.get("/suppliers").text, browser.get(f"/suppliers/{listed[nasty]['id']}").text]
    detail = browser.get(f"/suppliers/{muster['id']}").text
    assert f'href="/suppliers/{muster["id"]}"' in browser.get(f"/documents/{doc['id']}").text
    browser.close()
    for page in pages:
        assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; Söhne GmbH" in page and "<script>alert" not in page
    assert 'href="/suppliers"' in pages[0] and "Muster Bürobedarf Berlin" in detail and "muster-paper" in detail
    assert f'href="/documents/{doc["id"]}"' in detail


def test_an_approved_document_teaches_its_seller_and_the_cli_lists_the_suppliers(
        pipeline: tuple[Pipeline, Spool, Store], tmp_path: Path) -> None:  # noqa: F811
    _, _, store = pipeline
    feed(pipeline, "a.pdf", text_pdf("Rechnung R-1"), "application/pdf",
         sender="Harbour Supplies Ltd <a@harbour.example>")
    [first] = store.documents_of(store.message_ids()[0])
    assert Suppliers(store).list() == []  # a display name alone teaches nothing
    assert Suppliers(store).learn_confirmed(int(first["id"]), "anna") is not None  # a person approved it
    feed(pipeline, "b.pdf", text_pdf("Rechnung R-2"), "application/pdf", sender="HARBOUR SUPPLIES <b@other.example>")
    second = docs_of(store)[-1]
    assert second["fields"]["fields"]["seller"] == "Harbour Supplies Ltd"
    assert second["fields"]["field_sources"]["seller"]["label"] == "name HARBOUR SUPPLIES"

    config = tmp_path / "gateway.yaml"
    config.write_text(f"data_dir: {store.data_dir}\n")
    listed = run_cli("--config", str(config), "suppliers", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [json.loads(line) for line in listed.stdout.decode().splitlines()] == [
        {"id": 1, "name": "Harbour Supplies Ltd", "documents": 2, "totals": {}}]


def test_fields_read_after_ocr_are_named_by_the_supplier_and_keep_a_persons_correction(
        pipeline: tuple[Pipeline, Spool, Store]) -> None:  # noqa: F811
    from gateway.ocr.queue import OcrWorker

    pipe, _, store = pipeline
    feed(pipeline, "a.xml", cii("IG-1"), "application/xml")  # the supplier's e-invoice: learned
    feed(pipeline, "scan.pdf", text_pdf("a page without text yet"), "application/pdf",
         sender="Shop <shop@elsewhere.example>")
    scan = docs_of(store)[-1]
    store.correct_fields(int(scan["id"]), {"invoice_number": "R-77"}, by="admin")
    # what OCR gives: a text layer that prints the supplier's VAT ID and another number
    worker = OcrWorker(pipe.settings, store)
    worker._read_fields(store.document(int(scan["id"])) or {}, text_pdf(f"Rechnung R-8  USt-IdNr.: {VAT}"))
    doc = docs_of(store)[-1]
    assert doc["fields"]["fields"]["seller"] == SELLER and doc["company"] == SELLER
    assert doc["fields"]["field_sources"]["seller"]["source"] == "supplier"
    assert doc["supplier_id"] == Suppliers(store).list()[0]["id"]
    assert doc["fields"]["fields"]["invoice_number"] == "R-77" and doc["invoice_number"] == "R-77"  # the person's
    assert doc["fields"]["field_sources"]["invoice_number"]["source"] == "person"
