"""Invoices of our own, in six languages and two layouts, made with weasyprint: PDFs and their truth.

Used by tests/test_fields*.py and bench/extract.py. The truth is what the
fields reader must find; nothing here knows how the reader works.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal


def valid_vat(prefix: str, stem: str) -> str:
    """A VAT ID ``prefix + stem + one digit`` whose check digit is right (python-stdnum decides)."""
    from stdnum.eu import vat
    from stdnum.gb import vat as gb_vat

    if prefix == "GB":
        vat = gb_vat
    chars = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    for suffix in [*chars, *(a + b for a in chars[:10] for b in chars[:10])]:
        if vat.is_valid(prefix + stem + suffix):
            return prefix + stem + suffix
    raise ValueError(f"no check digit makes {prefix}{stem}? valid")


def valid_iban(country: str, bban: str) -> str:
    """An IBAN for ``bban`` with the right check digits (ISO 13616 mod 97)."""
    digits = "".join(str(int(c, 36)) for c in bban + country + "00")
    return f"{country}{98 - int(digits) % 97:02d}{bban}"


def spaced(iban: str) -> str:
    """An IBAN in groups of four."""
    return " ".join(iban[i:i + 4] for i in range(0, len(iban), 4))


@dataclass(frozen=True)
class Sample:
    """One generated invoice: its language, layout, PDF bytes and the fields it shows."""

    language: str
    layout: str
    pdf: bytes
    truth: dict[str, str]


MONTHS = {
    "de": "Januar Februar März April Mai Juni Juli August September Oktober November Dezember",
    "en": "January February March April May June July August September October November December",
    "fr": "janvier février mars avril mai juin juillet août septembre octobre novembre décembre",
    "nl": "januari februari maart april mei juni juli augustus september oktober november december",
    "it": "gennaio febbraio marzo aprile maggio giugno luglio agosto settembre ottobre novembre dicembre",
    "es": "enero febrero marzo abril mayo junio julio agosto septiembre octubre noviembre diciembre",
}
WORDS = {  # title, number, date, due, net, tax, total, due amount, bill to, pay to
    "de": ("Rechnung", "Rechnungsnummer", "Rechnungsdatum", "Fällig am", "Nettobetrag", "MwSt. 19 %", "Gesamtbetrag",
           "Zahlbetrag", "Rechnungsempfänger", "Bankverbindung"),
    "en": ("Invoice", "Invoice No.", "Invoice date", "Due date", "Subtotal", "VAT 20%", "Total", "Amount due",
           "Bill to", "Bank details"),
    "fr": ("Facture", "N° de facture", "Date de facture", "Échéance", "Total HT", "TVA 20 %", "Total TTC",
           "Net à payer", "Client", "Coordonnées bancaires"),
    "nl": ("Factuur", "Factuurnummer", "Factuurdatum", "Vervaldatum", "Subtotaal", "BTW 21%", "Totaal",
           "Te betalen", "Klant", "Bankgegevens"),
    "it": ("Fattura", "Numero fattura", "Data fattura", "Scadenza", "Imponibile", "IVA 22%", "Totale",
           "Totale da pagare", "Cliente", "Coordinate bancarie"),
    "es": ("Factura", "Nº factura", "Fecha", "Vencimiento", "Base imponible", "IVA 21%", "Importe total",
           "Total a pagar", "Cliente", "Datos bancarios"),
}
PARTIES = {  # seller, its VAT prefix and stem, IBAN country and BBAN, buyer, rate, currency
    "de": ("Müller Bürotechnik GmbH", "DE", "13669597", "DE", "200800000970375700", "Stadtwerke Hausen", "0.19", "EUR"),
    "en": ("Harbour Supplies Ltd", "GB", "9807806", "GB", "NWBK60161331926819", "Acme Trading", "0.20", "GBP"),
    "fr": ("Atelier Lumière SARL", "FR", "1112345678", "FR", "20041010050500013M02606", "Boulangerie Petit", "0.20", "EUR"),
    "nl": ("Van Dijk Installaties B.V.", "NL", "123456782B", "NL", "ABNA0417164300", "Gemeente Utrecht", "0.21", "EUR"),
    "it": ("Ferramenta Rossi S.r.l.", "IT", "0074360043", "IT", "X0542811101000000123456", "Comune di Lucca", "0.22", "EUR"),
    "es": ("Suministros García S.L.", "ES", "B1234567", "ES", "91210004184502000513", "Ayuntamiento de Toledo", "0.21", "EUR"),
}


def _money(value: Decimal, language: str, currency: str) -> str:
    whole, cents = f"{value:.2f}".split(".")
    groups = f"{int(whole):,}"
    if language == "en":
        return f"£{groups}.{cents}" if currency == "GBP" else f"€{groups}.{cents}"
    sep = {"de": ".", "fr": "\u202f", "nl": ".", "it": ".", "es": "."}[language]
    text = groups.replace(",", sep) + "," + cents
    return f"€ {text}" if language == "nl" else f"{text} €"


def _date(d: dt.date, language: str, style: int) -> str:
    if style == 0:
        return {"de": d.strftime("%d.%m.%Y"), "en": d.strftime("%d/%m/%Y"), "fr": d.strftime("%d/%m/%Y"),
                "nl": d.strftime("%d-%m-%Y"), "it": d.strftime("%d/%m/%Y"), "es": d.strftime("%d/%m/%Y")}[language]
    month = MONTHS[language].split()[d.month - 1]
    return {"de": f"{d.day}. {month} {d.year}", "en": f"{month} {d.day}, {d.year}", "fr": f"{d.day} {month} {d.year}",
            "nl": f"{d.day} {month} {d.year}", "it": f"{d.day} {month} {d.year}",
            "es": f"{d.day} de {month} de {d.year}"}[language]


def html(language: str, layout: str, n: int) -> tuple[str, dict[str, str]]:
    """The HTML of invoice ``n`` in ``language`` and ``layout`` (``a``: label beside value; ``b``: label above)."""
    w = WORDS[language]
    seller, vp, vs, ic, bban, buyer, rate, currency = PARTIES[language]
    vat_id = valid_vat(vp, vs)
    iban = valid_iban(ic, bban)
    number = f"{language.upper()}-2026-{100 + n:04d}"
    issue = dt.date(2026, 1 + n % 12, 3 + n % 20)
    due = issue + dt.timedelta(days=30)
    net = Decimal(137 + 1011 * n) + Decimal("0.45")
    tax = (net * Decimal(rate)).quantize(Decimal("0.01"))
    total = net + tax
    style = n % 2
    m = lambda v: _money(v, language, currency)  # noqa: E731
    head = f"""<html><head><meta charset="utf-8"><style>
      body {{ font-family: sans-serif; font-size: 10pt; margin: 0 }}
      table {{ border-collapse: collapse }} td {{ padding: 2pt 8pt 2pt 0 }}
      .right {{ text-align: right }} .small {{ font-size: 7pt }} h1 {{ font-size: 18pt }}
    </style></head><body>"""
    lines = "".join(f"<tr><td>{i + 1}</td><td>Artikel {i + 1}</td><td class='right'>{m(v)}</td></tr>"
                    for i, v in enumerate([net - Decimal(100), Decimal(100)]))
    if layout == "a":
        body = f"""
        <p class="small">{seller} · Hauptstraße 5 · 10115 Berlin</p>
        <p>{buyer}<br>Marktplatz 1<br>12345 Hausen</p>
        <h1>{w[0]}</h1>
        <table><tr><td>{w[1]}:</td><td>{number}</td></tr>
               <tr><td>{w[2]}:</td><td>{_date(issue, language, style)}</td></tr>
               <tr><td>{w[3]}:</td><td>{_date(due, language, style)}</td></tr></table>
        <table style="margin-top:20pt">{lines}</table>
        <table style="margin-top:20pt; margin-left:250pt">
          <tr><td>{w[4]}</td><td class="right">{m(net)}</td></tr>
          <tr><td>{w[5]}</td><td class="right">{m(tax)}</td></tr>
          <tr><td><b>{w[6]}</b></td><td class="right"><b>{m(total)}</b></td></tr></table>
        <p class="small" style="margin-top:80pt">{seller} · {vat_id} · IBAN {spaced(iban)}</p>"""
    else:
        body = f"""
        <table style="width:100%"><tr><td><b>{seller}</b><br>Via Roma 1<br>00100 Roma</td>
          <td class="right"><h1>{w[0].upper()}</h1></td></tr></table>
        <p>{w[8]}:<br>{buyer}<br>Rue 2</p>
        <table style="margin-top:10pt"><tr><td>{w[1]}</td><td>{w[2]}</td><td>{w[3]}</td></tr>
          <tr><td>{number}</td><td>{_date(issue, language, style)}</td><td>{_date(due, language, style)}</td></tr></table>
        <table style="margin-top:20pt">{lines}</table>
        <table style="margin-top:20pt; margin-left:250pt">
          <tr><td>{w[4]}:</td><td class="right">{m(net)}</td></tr>
          <tr><td>{w[5]}:</td><td class="right">{m(tax)}</td></tr>
          <tr><td>{w[7]}:</td><td class="right"><b>{m(total)}</b></td></tr></table>
        <p style="margin-top:60pt">{w[9]}: IBAN {spaced(iban)}<br>VAT: {vat_id}</p>"""
    truth = {"seller": seller, "seller_vat_id": vat_id, "invoice_number": number, "issue_date": issue.isoformat(),
             "due_date": due.isoformat(), "currency": currency, "net_total": f"{net:.2f}", "tax_total": f"{tax:.2f}",
             "grand_total": f"{total:.2f}", "amount_due": f"{total:.2f}", "iban": iban, "document_type": "invoice"}
    return head + body + "</body></html>", truth


def pdf_of(source: str) -> bytes:
    """A PDF of ``source`` HTML (weasyprint, nothing fetched)."""
    import weasyprint

    return bytes(weasyprint.HTML(string=source).write_pdf())


def samples(per_layout: int = 1) -> list[Sample]:
    """Invoices in the six languages, each layout ``per_layout`` times with other values."""
    out = []
    for language in WORDS:
        for layout in ("a", "b"):
            for n in range(per_layout):
                source, truth = html(language, layout, n + (1 if layout == "b" else 0))
                out.append(Sample(language, layout, pdf_of(source), truth))
    return out
