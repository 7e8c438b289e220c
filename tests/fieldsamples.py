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


# Layouts written after the readers, to see how they fare on what they were not shaped by.
def heldout() -> list[Sample]:
    """Four invoices in layouts unlike ``html``: a US SaaS bill, a German receipt, an Italian and a Dutch invoice."""
    us_iban = valid_iban("GB", "NWBK60161331926819")
    docs: list[tuple[str, str, str, dict[str, str]]] = [
        ("en", "saas", f"""
        <div style="float:right; text-align:right">Cloudly Inc.<br>548 Market St<br>San Francisco, CA 94104</div>
        <h1 style="font-size:26pt">Invoice</h1>
        <table><tr><td>Invoice number</td><td>INV-2026-00318</td></tr>
        <tr><td>Date of issue</td><td>March 3, 2026</td></tr><tr><td>Date due</td><td>April 2, 2026</td></tr></table>
        <p><b>Bill to</b><br>Jane Doe<br>jane@example.com</p>
        <h2>$1,210.00 USD due April 2, 2026</h2>
        <table style="width:100%"><tr><td>Description</td><td>Qty</td><td>Unit price</td><td>Amount</td></tr>
        <tr><td>Pro plan</td><td>10</td><td>$110.00</td><td>$1,100.00</td></tr></table>
        <table style="margin-left:300pt"><tr><td>Subtotal</td><td>$1,100.00</td></tr>
        <tr><td>Sales tax (10%)</td><td>$110.00</td></tr><tr><td>Total</td><td>$1,210.00</td></tr>
        <tr><td><b>Amount due</b></td><td><b>$1,210.00 USD</b></td></tr></table>
        <p>Wire transfer: IBAN {spaced(us_iban)}</p>""",
         {"seller": "Cloudly Inc.", "invoice_number": "INV-2026-00318", "issue_date": "2026-03-03",
          "due_date": "2026-04-02", "currency": "USD", "net_total": "1100.00", "tax_total": "110.00",
          "grand_total": "1210.00", "amount_due": "1210.00", "iban": us_iban, "document_type": "invoice"}),
        ("de", "receipt", """
        <div style="text-align:center; width:200pt">Bäckerei Sonnenschein e.K.<br>Lindenweg 3, 79098 Freiburg<br>
        USt-IdNr. DE136695976<br><br><b>KASSENBON</b><br>Beleg-Nr. 4711<br>14.02.2026 08:12</div>
        <table style="width:200pt"><tr><td>2x Brezel</td><td>1,80</td></tr><tr><td>Kaffee</td><td>2,90</td></tr>
        <tr><td><b>SUMME EUR</b></td><td><b>4,70</b></td></tr><tr><td>Gegeben BAR</td><td>10,00</td></tr>
        <tr><td>Rückgeld</td><td>5,30</td></tr><tr><td>MwSt 7% Netto 4,39</td><td>0,31</td></tr></table>""",
         {"seller": "Bäckerei Sonnenschein e.K.", "seller_vat_id": "DE136695976", "invoice_number": "4711",
          "issue_date": "2026-02-14", "currency": "EUR", "grand_total": "4.70", "tax_total": "0.31",
          "document_type": "receipt"}),
        ("it", "pa", f"""
        <p><b>Tecnoservizi S.p.A.</b> – Via Garibaldi 12 – 20121 Milano</p>
        <p style="margin-left:280pt">Spett.le<br>Studio Bianchi<br>Corso Italia 8<br>50123 Firenze</p>
        <p><b>FATTURA N. 2026/118 del 28/02/2026</b></p>
        <table><tr><td>Descrizione</td><td>Importo</td></tr><tr><td>Manutenzione impianto</td><td>2.450,00</td></tr></table>
        <table style="margin-left:280pt"><tr><td>Totale imponibile</td><td>€ 2.450,00</td></tr>
        <tr><td>IVA 22%</td><td>€ 539,00</td></tr><tr><td>Totale documento</td><td>€ 2.989,00</td></tr></table>
        <p>Pagamento: bonifico bancario a 30 giorni data fattura – IBAN {spaced(valid_iban("IT", "X0542811101000000123456"))}</p>
        <p style="font-size:7pt">P.IVA IT00743600439 – Capitale sociale € 100.000 i.v.</p>""",
         {"seller": "Tecnoservizi S.p.A.", "seller_vat_id": "IT00743600439", "buyer": "Studio Bianchi",
          "invoice_number": "2026/118", "issue_date": "2026-02-28", "due_date": "2026-03-30", "currency": "EUR",
          "net_total": "2450.00", "tax_total": "539.00", "grand_total": "2989.00", "amount_due": "2989.00",
          "iban": valid_iban("IT", "X0542811101000000123456"), "document_type": "invoice"}),
        ("nl", "columns", f"""
        <table style="width:100%"><tr><td style="width:50%"><b>Bakker &amp; Zonen B.V.</b><br>Kade 7<br>1011 AB Amsterdam
        <br>KvK 12345678<br>BTW NL123456782B01</td>
        <td><b>CREDITNOTA</b><br>Creditnotanummer: CN-2026-007<br>Datum: 9 januari 2026</td></tr></table>
        <p>Klant:<br>Jansen Techniek<br>Dorpsstraat 1</p>
        <table style="margin-left:280pt"><tr><td>Subtotaal</td><td>€ -200,00</td></tr>
        <tr><td>BTW 21%</td><td>€ -42,00</td></tr><tr><td>Totaal</td><td>€ -242,00</td></tr></table>
        <p>Het bedrag wordt binnen 14 dagen teruggestort op uw rekening.</p>""",
         {"seller": "Bakker & Zonen B.V.", "seller_vat_id": "NL123456782B01", "buyer": "Jansen Techniek",
          "invoice_number": "CN-2026-007", "issue_date": "2026-01-09", "currency": "EUR", "net_total": "-200.00",
          "tax_total": "-42.00", "grand_total": "-242.00", "document_type": "credit_note"}),
    ]
    return [Sample(language, layout, pdf_of(f'<html><head><meta charset="utf-8"></head><body style="font-family:'
                                            f'sans-serif; font-size:10pt">{body}</body></html>'), truth)
            for language, layout, body, truth in docs]
