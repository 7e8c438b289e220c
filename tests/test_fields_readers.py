"""The readers on layouts built line by line: document types, labels beside and below, the seller's VAT ID."""

from __future__ import annotations

import pytest

from gateway.fields import read_layout
from gateway.fields.text import Layout, Line, Segment


def layout_of(*rows: str | list[tuple[float, str]]) -> Layout:
    """A one-page layout: each row a line, given as text (at x=50) or as (x, text) runs."""
    lines = []
    for i, row in enumerate(rows):
        runs = [(50.0, row)] if isinstance(row, str) else row
        y = 60.0 + 14 * i
        lines.append(Line(1, tuple(Segment(text, 1, (x, y, x + 5.5 * len(text), y + 9)) for x, text in runs), 842.0))
    return Layout(tuple(lines), 1)


def read(*rows: str | list[tuple[float, str]]) -> dict[str, str]:
    return {k: v for k, (v, _) in read_layout(layout_of(*rows)).items()}


@pytest.mark.parametrize("title,kind", [
    ("Gutschrift Nr. 12", "credit_note"), ("Credit note", "credit_note"), ("AVOIR", "credit_note"),
    ("Creditnota", "credit_note"), ("Nota di credito", "credit_note"), ("Nota de crédito", "credit_note"),
    ("Abono", "credit_note"), ("Mahnung", "reminder"), ("Zahlungserinnerung", "reminder"),
    ("Payment reminder", "reminder"), ("Relance", "reminder"), ("Herinnering", "reminder"), ("Sollecito", "reminder"),
    ("Recordatorio de pago", "reminder"), ("Quittung", "receipt"), ("Kassenbon", "receipt"), ("Receipt", "receipt"),
    ("Reçu", "receipt"), ("Kassabon", "receipt"), ("Ricevuta", "receipt"), ("Recibo", "receipt"),
    ("Auftragsbestätigung", "order_confirmation"), ("Order confirmation", "order_confirmation"),
    ("Confirmation de commande", "order_confirmation"), ("Orderbevestiging", "order_confirmation"),
    ("Kontoauszug", "statement"), ("Statement of account", "statement"), ("Estratto conto", "statement"),
    ("Lieferschein", "delivery_note"), ("Delivery note", "delivery_note"), ("Bon de livraison", "delivery_note"),
    ("Pakbon", "delivery_note"), ("Albarán", "delivery_note"), ("Rechnung", "invoice"), ("Factuur", "invoice"),
    ("Fattura", "invoice"), ("Factura", "invoice"),
])
def test_document_types_in_six_languages(title: str, kind: str) -> None:
    assert read("Acme GmbH", title, "Betrag 10,00 €")["document_type"] == kind


def test_other_without_invoice_words_and_invoice_from_a_word_in_the_text() -> None:
    assert "document_type" not in read("Acme GmbH", "Newsletter", "Unsere Angebote im März")
    assert read("Acme GmbH", "Sehr geehrte Damen und Herren,", "anbei Ihre Rechnung.")["document_type"] == "invoice"


@pytest.mark.parametrize("label", [
    "Rechnungsnummer", "Rechnungs-Nr.", "Invoice No.", "Invoice number", "N° de facture", "Factuurnummer",
    "Numero fattura", "Nº factura", "Factura nº", "Re.-Nr.",
])
def test_invoice_number_labels_beside_and_below(label: str) -> None:
    assert read(f"{label}: 2026-0042")["invoice_number"] == "2026-0042"
    assert read([(50, label), (300, "Datum")], [(50, "2026-0042"), (300, "01.02.2026")])["invoice_number"] == "2026-0042"


@pytest.mark.parametrize("label,text", [
    ("Fälligkeit", "15.03.2026"), ("fällig am", "15.03.2026"), ("zahlbar bis", "15. März 2026"),
    ("Due date", "March 15, 2026"), ("Échéance", "15 mars 2026"), ("Vervaldatum", "15-03-2026"),
    ("Scadenza", "15/03/2026"), ("Vencimiento", "15 de marzo de 2026"),
])
def test_due_date_labels(label: str, text: str) -> None:
    got = read("Rechnungsdatum: 01.03.2026", f"{label} {text}")
    assert got["issue_date"] == "2026-03-01" and got["due_date"] == "2026-03-15"


def test_due_date_from_payment_terms_but_not_from_a_discount_period() -> None:
    assert read("Invoice date: 01/03/2026", "Payable within 14 days.")["due_date"] == "2026-03-15"
    assert "due_date" not in read("Rechnungsdatum: 01.03.2026", "Innerhalb von 10 Tagen 2 % Skonto")


@pytest.mark.parametrize("label,text,value", [
    ("Gesamtbetrag", "1.234,56 €", "1234.56"), ("Rechnungsbetrag", "EUR 99,00", "99.00"), ("Grand total", "$1,234.56", "1234.56"),
    ("Balance due", "£ 10.50", "10.50"), ("Total TTC", "1 234,56 €", "1234.56"), ("Totaal", "€ 12,00", "12.00"),
    ("Totale", "1.000,00 €", "1000.00"), ("Importe total", "56,78 €", "56.78"), ("Total", "CHF 1'234.50", "1234.50"),
])
def test_totals_with_their_labels(label: str, text: str, value: str) -> None:
    got = read("Rechnung", [(50, label), (400, text)])
    assert got["grand_total"] == value and got["amount_due"] == value


def test_net_tax_and_total_that_add_up() -> None:
    got = read([(50, "Nettobetrag"), (400, "100,00 €")], [(50, "MwSt. 19 % auf 100,00 €"), (400, "19,00 €")],
               [(50, "Gesamtbetrag"), (400, "119,00 €")])
    assert (got["net_total"], got["tax_total"], got["grand_total"], got["currency"]) == ("100.00", "19.00", "119.00", "EUR")


def test_the_buyers_vat_id_is_not_the_sellers() -> None:
    got = read("Kunde: Stadtwerke, Ihre USt-IdNr. FR11123456782", "Rechnung", "Müller GmbH · USt-IdNr. DE136695976")
    assert got["seller_vat_id"] == "DE136695976"


def test_seller_from_a_return_address_and_the_buyer_below_it() -> None:
    got = read("Bei Spiel GmbH · Ecke 12 · 12345 Stadthausen", "Theodor Est", "Bahnstr. 42", "Rechnung RE-1")
    assert got["seller"] == "Bei Spiel GmbH" and got["buyer"] == "Theodor Est" and got["invoice_number"] == "RE-1"


@pytest.mark.parametrize("name", [
    "Acme GmbH", "Acme AG", "Acme KG", "Acme UG", "Acme e.K.", "Acme B.V.", "Acme N.V.", "Acme SAS", "Acme SARL",
    "Acme S.A.", "Acme S.r.l.", "Acme S.p.A.", "Acme S.L.", "Acme Ltd", "Acme Limited", "Acme LLC", "Acme Inc.",
    "Acme Corp.",
])
def test_legal_forms_make_the_seller(name: str) -> None:
    assert read("Invoice", "Invoice No.: 1", name)["seller"] == name


def test_a_label_in_several_runs_and_none_across_a_column_gap() -> None:
    assert read([(50, "Handelsrechnung"), (140, "Nr."), (160, "4711"), (190, "vom 01.02.2026")])["invoice_number"] == "4711"
    got = read([(50, "Invoice date"), (250, "Due date")], [(50, "01/02/2026"), (250, "03/03/2026")])
    assert (got["issue_date"], got["due_date"]) == ("2026-02-01", "2026-03-03")


def test_a_vat_id_right_after_a_legal_form_and_the_net_read_twice_as_the_total() -> None:
    # "Lt" of "Ltd" is Lithuania's prefix: the GB number after it is still found
    assert read("Harbour Supplies Ltd GB980780629", "Invoice")["seller_vat_id"] == "GB980780629"
    # "Net total" taken for "Total" gives a total equal to the net although tax is charged: it is net + tax
    got = read([(50, "Net total: 496.00 €")], [(50, "VAT total: 75.04 €")], [(50, "Due payable: 571.04 €")])
    assert (got["net_total"], got["tax_total"], got["grand_total"]) == ("496.00", "75.04", "571.04")


def test_text_read_by_ocr_tolerates_its_noise() -> None:
    from gateway.fields.text import Layout

    def ocr(*rows: str | list[tuple[float, str]]) -> dict[str, str]:
        layout: Layout = layout_of(*rows)
        return {k: v for k, (v, _) in read_layout(layout, "ocr").items()}

    got = ocr("Bei Spiel GmbH “e Ecke 12 ‘e 12345 Stadthausen", "Theodor Est", "Rechnung",
              "Rechnungsnummer: . RE-2026-0815", "Fállig am: 6. März 2026", "Nettobetrag: 100,00 €",
              "USt. 19 %: 19,00-€", "Gesamtbetrag: 1l9,O0 €")
    assert (got["seller"], got["buyer"], got["invoice_number"], got["due_date"]) == (
        "Bei Spiel GmbH", "Theodor Est", "RE-2026-0815", "2026-03-06")
    assert (got["tax_total"], got["grand_total"]) == ("19.00", "119.00")
    # the seller keeps its accents: only the labels are looked up without them
    assert ocr("Café Central S.L.", "Receipt")["seller"] == "Café Central S.L."
