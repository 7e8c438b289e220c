"""The fields read from every document, used everywhere: naming, the sidecar, e-mail subjects, rule conditions
(with their explanations and validation, in the rule tester too) and the `recognize` policy."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import Gateway, make_mail, wait_for
from fieldsamples import html, pdf_of
from test_web_pages import Browserless


def _invoice() -> tuple[bytes, dict[str, str]]:
    source, truth = html("de", "a", 0)  # Müller Bürotechnik GmbH, DE-2026-0100, 2026-01-03, 163.57 EUR
    return pdf_of(source), truth


# an invoice without an invoice word ("Rechnungsnummer" is not "Rechnung"), and a newsletter's brochure
HOFMANN = """<html><body style="font-family: sans-serif">
    <p><b>Hofmann Werkzeuge GmbH</b><br>Industriestr. 4, 70173 Stuttgart</p>
    <p style="margin-top:30pt">Rechnungsnummer: 2026-0042<br>Rechnungsdatum: 03.03.2026</p>
    <p>Werkzeugkoffer, 1 Stück</p>
    <p style="margin-top:20pt">Gesamtbetrag: 119,00 EUR</p></body></html>"""
BROCHURE = """<html><body style="font-family: sans-serif">
    <h1>Frühjahrsaktion</h1><p>Neue Werkzeugkoffer ab 19,99 EUR. Jetzt im Shop bestellen!</p>
    <p>Sie erhalten diese Nachricht, weil Sie unseren Newsletter abonniert haben.</p></body></html>"""


def test_plain_pdfs_are_decided_recognized_and_named_by_their_fields(
        gateway_factory: Callable[..., Gateway], workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gateway.docfields

    reads: list[int] = []
    real = gateway.docfields.read_document
    monkeypatch.setattr(gateway.docfields, "read_document", lambda *a, **k: reads.append(1) or real(*a, **k))
    (workdir / "rules" / "office.yaml").write_text(
        "name: Office supplies\n"
        "when:\n"
        "  supplier: müller*\n"
        "  document_type: invoice\n"
        "  currency: EUR\n"
        "  total: {min: 100, max: 500}\n"
        "assign: {tags: [office]}\n", encoding="utf-8")
    gw = gateway_factory(unmatched={"smtp": "recognize"}, exports=[{
        "name": "nas", "type": "folder", "path": str(workdir / "exports"), "sidecar": "json",
        "filename": "{issue_date:%Y}/{seller}_{invoice_number}_{total}{currency}"}])
    pdf, truth = _invoice()
    gw.send(make_mail(sender="Buchhaltung <rechnung@mueller.example>", subject="Unterlagen",
                      attachments=[("scan0001.pdf", pdf, "application/pdf")]), sender="rechnung@mueller.example")
    gw.send(make_mail(sender="Hofmann <buero@hofmann.example>", subject="Dokument", body="Anbei.",
                      attachments=[("scan_0042.pdf", pdf_of(HOFMANN), "application/pdf")]))
    gw.send(make_mail(sender="Hofmann Shop <news@hofmann.example>", subject="Dokument", body="Anbei.",
                      attachments=[("scan_0043.pdf", pdf_of(BROCHURE), "application/pdf")]))
    msgs = settled_by_subject_and_sender(gw)
    files = wait_for(lambda: (f := gw.exported_files()) and len(f) == 4 and f, timeout=30)
    names = sorted(p.relative_to(gw.exports).as_posix() for p in files)
    assert names == ["2026/Hofmann Werkzeuge GmbH_2026-0042_119.00EUR.pdf",
                     "2026/Hofmann Werkzeuge GmbH_2026-0042_119.00EUR.pdf.json",
                     "2026/Müller Bürotechnik GmbH_DE-2026-0100_163.57EUR.pdf",
                     "2026/Müller Bürotechnik GmbH_DE-2026-0100_163.57EUR.pdf.json"]
    assert len(reads) == 3  # each document read once, before the decision; the same reading is stored
    side = json.loads((gw.exports / names[3]).read_text(encoding="utf-8"))
    assert side["fields"]["grand_total"] == "163.57" and side["fields"]["due_date"] == truth["due_date"]
    assert side["field_sources"]["invoice_number"]["source"] == "text"
    assert side["fields"]["iban"].startswith(truth["iban"][:4]) and truth["iban"][4:-4] not in side["fields"]["iban"]
    assert side["tags"] == ["office"]

    # `recognize`: the invoice without an invoice word is one by its fields; the brochure is not
    assert msgs["buero@hofmann.example"]["status"] == "imported"
    assert ("scan_0042.pdf: looks like an invoice (its fields read as one: invoice number 2026-0042, "
            "total 119.00 EUR, date 2026-03-03)") in msgs["buero@hofmann.example"]["reason"]
    assert msgs["news@hofmann.example"]["status"] == "unmatched"
    assert "scan_0043.pdf: not recognised as an invoice" in msgs["news@hofmann.example"]["reason"]

    msg = msgs["rechnung@mueller.example"]
    assert json.loads(msg["decision"])["rule"] == "Office supplies"
    [trace] = gw.api(f"/api/messages/{msg['id']}").json()["decision"]["explain"]
    assert trace["matched"] and "total 163.57 is within 100..500 (scan0001.pdf)" in trace["reason"]
    assert 'supplier: "müller*" matched seller "Müller Bürotechnik GmbH"' in trace["reason"]

    # the admin page's rule tester, with a draft, on the stored mail
    client = Browserless(gw)
    try:
        assert client.login().status_code == 302
        page = client.post("/rules/test", {"message": str(msg["id"]), "draft_file": "big.yaml",
                                           "draft": "name: Big\npriority: 1\nwhen: {total: {min: 1000}}\n"}).text
    finally:
        client.close()
    assert "total 163.57 is below min 1000 (scan0001.pdf)" in page
    fields = page[page.index('id="fields-read-1"'):]
    assert "invoice_number DE-2026-0100" in fields[:fields.index("</dd>")]


def settled_by_subject_and_sender(gw: Gateway) -> dict[str, dict[str, Any]]:
    """The three messages, once processed, by sender address."""
    rows = wait_for(lambda: (r := gw.store.list_messages()[0]) and len(r) >= 3
                    and all(m["status"] != "received" for m in r) and r, timeout=30)
    return {m["sender"].rpartition("<")[2].rstrip(">"): m for m in rows}


DRAFT = """\
rules:
  - name: Large
    when: {total: {min: 1000}}
  - name: Dollars
    when: {currency: [USD, CHF]}
  - name: Credit notes
    when: {document_type: credit_note}
  - name: Other supplier
    when: {company: "Acme*"}
  - name: Number
    when: {invoice_number: "XX-*"}
  - name: Catalogue
    when: {subject: Katalog, total: {max: 50}}
  - name: Müller
    when: {supplier: [Acme, "re:^müller\\\\b"], invoice_number: "DE-2026-*", amount_due: {max: 200}}
"""


def _tester(raw: bytes, draft: str = DRAFT) -> dict[str, Any]:
    """What the rule tester (page, API) says about ``raw`` with ``draft`` as the only rules."""
    from gateway.explain import explain_decision, with_draft

    drafted = with_draft(None, draft, "draft.yaml")
    assert drafted.problems == ()
    return explain_decision(raw, drafted.ruleset)


def test_the_rule_tester_says_which_field_value_failed_and_any_document_satisfies_a_condition() -> None:
    from test_recognize import text_pdf

    pdf, _ = _invoice()
    brochure = text_pdf("Unser neuer Katalog")
    raw = make_mail(sender="Versand <news@mueller.example>", subject="Katalog und Rechnung",
                    attachments=[("katalog.pdf", brochure, "application/pdf"),
                                 ("scan0001.pdf", pdf, "application/pdf")]).as_bytes()
    out = _tester(raw)
    assert out["rule"] == "Müller"
    reasons = {t["rule"]: t["reason"] for t in out["explain"]}
    assert reasons["Large"] == "total 163.57 is below min 1000 (scan0001.pdf)"
    assert reasons["Dollars"] == "currency: USD or CHF did not match EUR (scan0001.pdf)"
    assert reasons["Credit notes"].startswith("document_type: credit_note did not match invoice")
    assert reasons["Other supplier"] == 'company: "Acme*" did not match seller "Müller Bürotechnik GmbH" (scan0001.pdf)'
    assert reasons["Number"] == 'invoice_number: "XX-*" did not match invoice_number "DE-2026-0100" (scan0001.pdf)'
    assert reasons["Catalogue"] == "total 163.57 is above max 50 (scan0001.pdf)"
    # the brochure has no fields: the invoice beside it satisfies each condition
    assert "amount due 163.57 is at most 200 (scan0001.pdf)" in reasons["Müller"]
    assert [d["filename"] for d in out["mail"]["documents"]] == ["katalog.pdf", "scan0001.pdf"]

    plain = make_mail(subject="Hallo", body="Kein Anhang").as_bytes()
    words = {t["rule"]: t["reason"] for t in _tester(plain)["explain"]}
    assert words["Large"] == "total: the mail has no PDF or XML document to read a total from"


@pytest.mark.parametrize(("rule", "line", "key", "message"), [
    ("  total: {min: x}\n", 3, "when.total.min", "'x' is not a number; write it as 10 or 499.99"),
    ("  total: {min: 500, max: 10}\n", 3, "when.total", "min 500 is above max 10"),
    ("  amount_due: 100\n", 3, "when.amount_due", "must be a range such as {min: 10, max: 500}"),
    ("  document_type: [invoice, recipt]\n", 3, "when.document_type[1]", "'recipt' is not a document type"),
    ("  currency: euro\n", 3, "when.currency", "'euro' is not a currency code"),
])
def test_a_bad_field_condition_names_its_line_and_key(rule: str, line: int, key: str, message: str) -> None:
    from gateway.rules import load_rules_text

    ruleset, problems = load_rules_text(f"name: Bad\nwhen:\n{rule}", "bad.yaml")
    assert ruleset is None
    [p] = problems
    assert (p.line, p.key) == (line, key) and p.message.startswith(message), str(p)


def test_naming_and_mail_subjects_use_the_fields_and_leave_guesses_out() -> None:
    from gateway.exporters.base import naming_values
    from gateway.exporters.email import render_subject
    from gateway.naming import render_pattern

    fields = {"fields": {"seller": "Acme GmbH", "invoice_number": "A-7", "issue_date": "2026-03-31",
                         "due_date": "2026-04-30", "currency": "EUR", "grand_total": "1190.00", "net_total": "1000.00",
                         "amount_due": "1190.00", "seller_vat_id": "DE136695976", "document_type": "invoice"},
              "field_sources": {"seller": {"source": "text", "confidence": 0.9},
                                "issue_date": {"source": "text", "confidence": 0.9},
                                "due_date": {"source": "text", "confidence": 0.9}}}
    doc = {"id": 3, "filename": "scan.pdf", "fields": json.dumps(fields), "created": "2026-04-01T10:00:00+00:00"}
    values = naming_values(doc, {"received": "2026-04-01T10:00:00+00:00", "sender": "x@acme.example"})
    assert render_pattern("{issue_date:%Y-%m}/{seller}_{invoice_number}_{total}{currency}_{document_type}",
                          values, "pdf") == "2026-03/Acme GmbH_A-7_1190.00EUR_invoice.pdf"
    assert render_pattern("{net_total}_{amount_due}_{seller_vat_id}_{company}", values, "pdf") == \
        "1000.00_1190.00_DE136695976_Acme GmbH.pdf"
    assert render_subject("Rechnung {seller} {invoice_number} über {total:,.2f} {currency}, fällig {due_date:%d.%m.%Y}",
                          values, "scan.pdf") == "Rechnung Acme GmbH A-7 über 1,190.00 EUR, fällig 30.04.2026"
    from gateway.exporters.base import ExportItem
    from gateway.exporters.email import EmailExporter

    item = ExportItem(1, 3, Path("scan.pdf"), "scan.pdf", "application/pdf", "scan.pdf", "ab" * 32, {}, values)
    body = EmailExporter.body(item, {}, values)
    assert "Total: 1190.00 EUR\nDue date: 2026-04-30\n" in body
    # the sender's display name and a letterhead guess never name a file
    fields["field_sources"]["seller"] = {"source": "mail", "confidence": 0.3}
    guessed = naming_values(dict(doc, fields=json.dumps(fields)), {})
    assert render_pattern("{seller}_{company}", guessed, "pdf") == "unknown_unknown.pdf"


def test_supplier_holds_by_the_company_an_address_assigns_and_a_guessed_seller_never_counts() -> None:
    from gateway.models import Address, MailView
    from gateway.rules import load_rules_text

    ruleset, problems = load_rules_text(
        "rules:\n"
        "  - {name: Power, when: {company: Stadtwerke*, not: {total: {min: 1000}}}}\n", "r.yaml")
    assert ruleset is not None and not problems
    view = MailView(sender=Address("Stadtwerke Hausen", "billing@sw.example"), to=(), subject="Strom", body="",
                    attachments=("a.pdf",), headers={}, source="smtp", documents=[{"filename": "a.pdf"}],
                    company="Stadtwerke Hausen")
    decision = ruleset.decide(view, trace_all=True)
    assert decision.rule == "Power"
    assert decision.explain[0].reason == ('company: "Stadtwerke*" matched company "Stadtwerke Hausen" (assigned by '
                                          'the import address or mailbox); not: (total: no total was read from the '
                                          "mail's documents)")

    from gateway.docfields import rule_values
    from gateway.fields import read_document

    # the sender's display name is the seller's last-resort guess: conditions never see it
    guessed = read_document(b"%PDF-1.4\n%%EOF", "pdf", sender_name="Stadtwerke Hausen")
    assert guessed.seller == "Stadtwerke Hausen" and "seller" not in rule_values(guessed, "a.pdf")


def test_rules_test_prints_the_fields_read_and_why_a_field_condition_failed(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from gateway.cli import main

    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "big.yaml").write_text("name: Big\nwhen: {total: {min: 1000}}\n")
    pdf, _ = _invoice()
    eml = tmp_path / "mail.eml"
    eml.write_bytes(make_mail(attachments=[("scan0001.pdf", pdf, "application/pdf")]).as_bytes())
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:  # in-process (a subprocess costs seconds); the command sets up logging: put it back after
        r = CliRunner().invoke(main, ["rules", "test", "--rules", str(tmp_path / "rules"), str(eml)])
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    assert r.exit_code == 0, r.output
    out = r.output
    assert ("fields of scan0001.pdf: seller Müller Bürotechnik GmbH; document_type invoice; invoice_number "
            "DE-2026-0100; issue_date 2026-01-03; grand_total 163.57; amount_due 163.57; currency EUR") in out
    assert "no    Big: total 163.57 is below min 1000 (scan0001.pdf)" in out
