"""Readers per field: labels and values in German, English, French, Dutch, Italian and Spanish.

No supplier templates: a label's value is the rest of its segment, the next
segment to its right on the same line, or the line directly below it
(overlapping it horizontally). Each reader returns a value with the segment
it was read from, or None.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .text import Layout, Line, Segment
from .values import Amount, find_amounts, find_currencies, find_dates, find_vat_ids


@dataclass(frozen=True)
class Found:
    """A value read from the text: what, where, by which label, how sure."""

    value: Any
    page: int
    box: tuple[float, float, float, float]
    confidence: float
    label: str | None = None


def _labels(*words: str) -> re.Pattern[str]:
    return re.compile(r"(?<![\w-])(?:" + "|".join(words) + r")(?![\w])\s*[:#.]?\s*", re.I)


NUMBER_LABELS = _labels(
    r"rechnungs?[- ]?(?:nummer|nr\.?|no\.?)", r"rechnung\s+(?:nr\.?|nummer)", r"beleg[- ]?(?:nummer|nr\.?)",
    r"gutschrift(?:s[- ]?(?:nummer|nr\.?)|\s+nr\.?)", r"re\.?-?\s?nr\.?", r"rg\.?-?\s?nr\.?",
    r"\w*rechnung\s*(?:\(\d{3}\)\s*)?nr\.?",
    r"invoice\s*(?:no\.?|number|nr\.?|num\.?|#|id)",
    r"inv\.?\s*(?:no\.?|#)", r"receipt\s*(?:no\.?|number|#)", r"credit\s*note\s*(?:no\.?|number|#)",
    r"n[°º]\s*(?:de\s+)?facture", r"num[ée]ro\s+de\s+facture", r"facture\s*n[°ºo]\.?", r"avoir\s*n[°ºo]\.?",
    r"factuur\s*(?:nummer|nr\.?|no\.?)", r"factuurnummer", r"numero\s+(?:di\s+)?fattura", r"fattura\s*n[.°º]?",
    r"n[.°º]\s*fattura", r"n[º°o]\.?\s*(?:de\s+)?factura", r"n[úu]mero\s+de\s+factura", r"factura\s*n[º°o]\.?",
    r"nr\.\s*factura",
)
# a document-type word followed by a number: "Rechnung RE1001", "INVOICE #123", "Facture F2018-27"
TITLE_NUMBER = re.compile(
    r"^(?:rechnung|gutschrift|invoice|tax invoice|credit note|facture|avoir|factuur|creditnota|fattura|nota di credito"
    r"|factura|abono|receipt|quittung)\s*(?:nr\.?|no\.?|n[°º]|#|number|nummer)?\s*[:.]?\s*(?=[A-Z0-9-]*\d)([A-Z0-9][\w/.\-]{1,30})",
    re.I)
ISSUE_LABELS = _labels(
    r"rechnungsdatum", r"belegdatum", r"ausstellungsdatum", r"datum\s+der\s+rechnung", r"invoice\s+date", r"date\s+of\s+issue",
    r"issue\s+date", r"date\s+(?:de\s+(?:la\s+)?)?facture", r"date\s+d['’]émission", r"factuurdatum", r"data\s+(?:della\s+)?fattura",
    r"data\s+(?:di\s+)?emissione", r"fecha\s+(?:de\s+)?(?:la\s+)?factura", r"fecha\s+de\s+emisi[óo]n", r"fecha\s+factura",
)
ISSUE_GENERIC = _labels(r"datum", r"date", r"data", r"fecha", r"den")
DUE_LABELS = _labels(
    r"f[äa]lligkeit(?:sdatum)?", r"f[äa]llig\s+(?:am|bis(?:\s+zum)?)", r"zahlbar\s+(?:bis|ohne\s+abzug\s+bis)(?:\s+zum)?",
    r"zahlungsziel", r"due\s+date", r"date\s+due", r"payment\s+due(?:\s+date)?", r"due\s+by", r"pay\s+by", r"date\s+d['’]?[ée]ch[ée]ance",
    r"[ée]ch[ée]ance", r"[àa]\s+payer\s+avant\s+le", r"vervaldatum", r"vervaldag", r"te\s+betalen\s+voor", r"uiterste\s+betaaldatum",
    r"data\s+(?:di\s+)?scadenza", r"scadenza", r"fecha\s+de\s+vencimiento", r"vencimiento",
    r"(?:[üu]berweisen|zahlen|bezahlen)\s+sie\s+(?:den\s+betrag\s+)?(?:bis|sp[äa]testens)(?:\s+(?:zum|am))?",
    r"(?:pay|payable)\s+(?:before|by|until)", r"payer\s+avant\s+le", r"betalen\s+v[óo][óo]r", r"pagare\s+entro\s+il",
    r"pagar\s+antes\s+del?",
)
# grand total labels, most specific first (rank 0 is best)
TOTAL_LABELS = (
    _labels(r"gesamtbetrag", r"rechnungsbetrag", r"endbetrag", r"endsumme", r"bruttobetrag", r"bruttosumme",
            r"rechnungssumme(?!\s+ohne)", r"gesamtsumme", r"summe\s+brutto", r"gesamt\s+brutto", r"grand\s+total",
            r"invoice\s+total", r"total\s+(?:amount|incl\.?|including)(?:\s+(?:vat|tax))?", r"total\s+ttc",
            r"montant\s+ttc", r"totaal\s+(?:incl\.?|inclusief)(?:\s+btw)?", r"factuurbedrag", r"totaalbedrag",
            r"totale\s+(?:fattura|documento|ivato|complessivo)", r"importe\s+total", r"total\s+factura",
            r"total\s+a\s+pagar", r"total\s+con\s+iva"),
    _labels(r"gesamt", r"total", r"totaal", r"totale", r"summe", r"amount"),
)
DUE_AMOUNT_LABELS = _labels(
    r"zahlbetrag", r"zu\s+zahlen(?:der\s+betrag)?", r"offener\s+betrag", r"amount\s+due", r"balance\s+due", r"total\s+due",
    r"amount\s+payable", r"net\s+[àa]\s+payer", r"reste\s+[àa]\s+payer", r"montant\s+d[uû]", r"te\s+betalen(?:\s+bedrag)?",
    r"totale\s+da\s+pagare", r"netto\s+a\s+pagare", r"importe\s+a\s+pagar", r"total\s+a\s+pagar",
)
NET_LABELS = _labels(
    r"nettobetrag", r"netto(?:summe|betrag)?", r"summe\s+netto", r"gesamt\s+netto", r"rechnungssumme\s+ohne\s+ust\.?",
    r"zwischensumme", r"positionen\s+netto", r"net\s+(?:total|amount)", r"total\s+(?:net|excl\.?|excluding)(?:\s+(?:vat|tax))?",
    r"subtotal", r"sub-total", r"total\s+ht", r"montant\s+ht", r"totaal\s+excl\.?(?:\s+btw)?", r"subtotaal",
    r"imponibile", r"totale\s+imponibile", r"base\s+imponible", r"subtotal\s+sin\s+iva", r"total\s+sin\s+iva",
)
TAX_LABELS = _labels(
    r"mehrwertsteuer", r"umsatzsteuer", r"mwst\.?", r"ust\.?", r"steuerbetrag", r"vat(?:\s+amount)?", r"tax(?:\s+amount)?",
    r"sales\s+tax", r"total\s+tva", r"montant\s+tva", r"tva", r"btw(?:[- ]bedrag)?", r"totale\s+iva", r"iva", r"imposta",
    r"cuota\s+iva", r"total\s+iva",
)
BUYER_WORDS = re.compile(r"\b(?:kunde|kunden|customer|client|cliente|klant|ihre?|your|votre|vos|uw|vostr[ao]|su|"
                         r"rechnungsempf[äa]nger|bill\s+to|billed\s+to|factur[ée]\s+[àa]|destinatario)\b", re.I)
IBAN_LABEL = re.compile(r"\bIBAN\b", re.I)
LEGAL_FORM = re.compile(
    r"(?<![\w])(?:GmbH(?:\s*&\s*Co\.?\s*KG)?|AG|KG|OHG|UG(?:\s*\(haftungsbeschränkt\))?|e\.\s?K\.|e\.V\.|B\.V\.|BV|N\.V\.|NV|SAS|SARL|"
    r"S\.A\.S\.?|S\.A\.R\.L\.?|S\.A\.|SA|S\.r\.l\.|Srl|S\.p\.A\.|SpA|S\.L\.|SL|S\.L\.U\.|Ltd\.?|Limited|LLC|Inc\.?|Corp\.?|"
    r"PLC|plc|GbR|mbH|EURL|SE)(?![\w])")
DOC_TYPES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("credit_note", re.compile(r"\b(?:gutschrift|rechnungskorrektur|credit\s*note|avoir|creditnota|creditfactuur|"
                               r"nota\s+di\s+credito|nota\s+de\s+cr[ée]dito|abono|factura\s+rectificativa)\b", re.I)),
    ("reminder", re.compile(r"\b(?:mahnung|zahlungserinnerung|payment\s+reminder|reminder|relance|rappel|herinnering|"
                            r"aanmaning|sollecito|recordatorio(?:\s+de\s+pago)?)\b", re.I)),
    ("receipt", re.compile(r"\b(?:quittung|kassenbon|kassenbeleg|receipt|re[çc]u|ticket\s+de\s+caisse|kassabon|kwitantie|"
                           r"ricevuta|scontrino|recibo|ticket)\b", re.I)),
    ("order_confirmation", re.compile(r"\b(?:auftragsbest[äa]tigung|bestellbest[äa]tigung|order\s+confirmation|"
                                      r"confirmation\s+de\s+commande|orderbevestiging|conferma\s+d['’]?ordine|"
                                      r"confirmaci[óo]n\s+de\s+pedido)\b", re.I)),
    ("statement", re.compile(r"\b(?:kontoauszug|saldenbest[äa]tigung|statement(?:\s+of\s+account)?|relev[ée]\s+de\s+compte|"
                             r"rekeningoverzicht|estratto\s+conto|extracto(?:\s+de\s+cuenta)?)\b", re.I)),
    ("delivery_note", re.compile(r"\b(?:lieferschein|delivery\s+note|packing\s+slip|bon\s+de\s+livraison|pakbon|leverbon|"
                                 r"bolla\s+di\s+consegna|documento\s+di\s+trasporto|albar[áa]n)\b", re.I)),
    ("invoice", re.compile(r"\b(?:rechnung|invoice|tax\s+invoice|bill|facture|factuur|fattura|factura)\b", re.I)),
)


def _phrases(line: Line) -> list[list[Segment]]:
    """The line's runs grouped where they are close (a word gap), split where a column gap is."""
    out: list[list[Segment]] = []
    for seg in line.segments:
        if out:
            last = out[-1][-1]
            gap = seg.box[0] - last.box[2]
            if gap < max(6.0, 1.2 * (last.box[3] - last.box[1])):
                out[-1].append(seg)
                continue
        out.append([seg])
    return out


def _after(line: Line, label: re.Pattern[str]) -> Iterator[tuple[str, Segment, str, str]]:
    """For each label in ``line``: the text after it, the label's run (its box around every run the label
    spans: "Nr." is often a run of its own), the label, and the text from its run's start to 12 past it.

    A label never spans a column gap: "Invoice date | Due date" holds no "date Due".
    """
    phrases = _phrases(line)
    for index, phrase in enumerate(phrases):
        text = ""
        spans: list[tuple[int, int, Segment]] = []
        for seg in phrase:
            start = len(text) + (1 if text else 0)
            text = f"{text} {seg.text}" if text else seg.text
            spans.append((start, len(text), seg))
        following = " ".join(s.text for later in phrases[index + 1:] for s in later)
        for m in label.finditer(text):
            covered = [(a, s) for a, b, s in spans if a < m.end() and b > m.start()]
            if not covered:
                continue
            first = covered[0][1]
            box = (min(s.box[0] for _, s in covered), min(s.box[1] for _, s in covered),
                   max(s.box[2] for _, s in covered), max(s.box[3] for _, s in covered))
            context = text[covered[0][0]:m.end() + 12]
            rest = (text[m.end():] + " " + following).strip()
            yield rest, Segment(first.text, first.page, box), m.group(0).strip(" :#."), context


def _below(lines: Sequence[Line], index: int, seg: Segment) -> Line | None:
    """The line directly below ``lines[index]`` with a segment overlapping ``seg`` horizontally."""
    here = lines[index]
    height = max(1.0, seg.box[3] - seg.box[1])
    for nxt in lines[index + 1:index + 4]:
        if nxt.page != here.page or nxt.box[1] - seg.box[3] > max(3 * height, 18.0):
            return None
        parts = [s for s in nxt.segments if s.box[0] < seg.box[2] + 40 and s.box[2] > seg.box[0] - 10]
        if parts:
            # the value under the label is the run whose start or centre is nearest the label's
            centre = (seg.box[0] + seg.box[2]) / 2
            best = min(parts, key=lambda s: min(abs(s.box[0] - seg.box[0]), abs((s.box[0] + s.box[2]) / 2 - centre)))
            # with the runs that continue it (a value printed in pieces), not the next column's
            run = [best]
            for s in nxt.segments:
                if s.box[0] > run[-1].box[2] and s.box[0] - run[-1].box[2] < max(4.0, 0.8 * (s.box[3] - s.box[1])):
                    run.append(s)
            return Line(nxt.page, tuple(run), nxt.page_height)
    return None


def labelled(layout: Layout, label: re.Pattern[str], parse: Callable[[str], Any],
             exclude: re.Pattern[str] | None = None) -> list[Found]:
    """Every value ``parse`` finds right of or below a label, in reading order."""
    lines = layout.lines
    out: list[Found] = []
    for index, line in enumerate(lines):
        for rest, seg, name, context in _after(line, label):
            if exclude is not None and exclude.search(context):
                continue
            value = parse(rest) if rest else None
            where = seg
            if value is None:
                below = _below(lines, index, seg)
                if below is not None:
                    value = parse(below.text)
                    where = below.segments[0]
            if value is not None:
                out.append(Found(value, where.page, (min(seg.box[0], where.box[0]), seg.box[1],
                                                     max(seg.box[2], where.box[2]), where.box[3]), 0.9, name))
    return out


def _number_value(text: str) -> str | None:
    token = text.split()[0] if text.split() else ""
    token = token.strip(":#.,;")
    if not token or not any(c.isdigit() for c in token) or len(token) > 40:
        return None
    if find_dates(token) and re.fullmatch(r"[\d./-]+", token):
        return None  # a date is not a number
    if not re.fullmatch(r"[\w][\w/.\-]*", token):
        return None
    return token


def read_invoice_number(layout: Layout) -> Found | None:
    """The invoice number: a labelled value, else a title such as "Rechnung RE1001"."""
    found = labelled(layout, NUMBER_LABELS, _number_value)
    if found:
        return found[0]
    for line in layout.lines[:60]:
        for seg in line.segments:
            m = TITLE_NUMBER.search(seg.text)
            if m and _number_value(m.group(1)):
                return Found(_number_value(m.group(1)), seg.page, seg.box, 0.7, "title")
    return None


_WITHIN = re.compile(r"\b(?:innerhalb|binnen|within|sous|dans\s+les|entro|en\s+un\s+plazo\s+de|a)\s+(?:von\s+)?(\d{1,3})\s+"
                     r"(?:kalender)?(?:tagen|tage|days|jours|dagen|giorni|d[íi]as)\b", re.I)
_PAYMENT = re.compile(r"zahlbar|zahlung|payable|payment|paiement|payer|r[èe]glement|betal|pagament|pagar|pago|"
                      r"net\s+\d", re.I)
_DISCOUNT = re.compile(r"skonto|discount|escompte|korting|sconto|descuento", re.I)
_INVOICE_STEM = re.compile(r"rechnung|gutschrift|invoice|factur|factuur|fattura|credit\s*note|avoir", re.I)
_DATED = re.compile(r"\b(?:vom|von|du|of|dated|del|van|de)\s+(?=\d)", re.I)


def _date_value(month_first: bool) -> Callable[[str], dt.date | None]:
    def parse(text: str) -> dt.date | None:
        dates = find_dates(text[:60], month_first=month_first)
        return dates[0][0] if dates and dates[0][1] <= 25 else None
    return parse


def read_dates(layout: Layout, month_first: bool) -> tuple[Found | None, Found | None]:
    """The issue date and the due date."""
    parse = _date_value(month_first)
    due = labelled(layout, DUE_LABELS, parse)
    not_issue = re.compile(r"liefer|leistungs|delivery|livraison|levering|consegna|entrega|bestell|order|commande|"
                           r"f[äa]llig|due|[ée]ch[ée]ance|verval|scadenza|vencimiento|druck|print|period|zeitraum|"
                           r"start|end|fin|d[ée]but|associ|zeit|time", re.I)
    issue = labelled(layout, ISSUE_LABELS, parse, exclude=not_issue) or labelled(
        layout, ISSUE_GENERIC, parse, exclude=not_issue)
    issue_found = issue[0] if issue else None
    if issue_found is None:  # a title such as "Rechnung Nr. 47110815 vom 01.12.2025"
        for line in layout.lines[:80]:
            m = _DATED.search(line.text)
            if line.page == 1 and m and _INVOICE_STEM.search(line.text[:m.start()]):
                date = parse(line.text[m.end():])
                if date is not None:
                    issue_found = Found(date, line.page, line.box, 0.8, m.group(0).strip())
                    break
    if issue_found is None:  # else the first date on page 1
        for line in layout.lines[:80]:
            if line.page != 1:
                break
            dates = find_dates(line.text, month_first=month_first)
            if dates and not DUE_LABELS.search(line.text):
                issue_found = Found(dates[0][0], line.page, line.box, 0.5, None)
                break
    due_found = next((d for d in due if issue_found is None or d.value >= issue_found.value), None)
    if due_found is None and issue_found is not None:  # "zahlbar innerhalb von 14 Tagen": issue date + 14 days
        for line in layout.lines:
            m = _WITHIN.search(line.text)
            if m and _PAYMENT.search(line.text) and not _DISCOUNT.search(line.text) and 0 < int(m.group(1)) <= 120:
                due_found = Found(issue_found.value + dt.timedelta(days=int(m.group(1))), line.page, line.box, 0.6,
                                  m.group(0))
                break
    return issue_found, due_found


def _amount_value(text: str) -> Amount | None:
    """The amount a label names: the one right after it ("Netto 4,39 0,31"), else the last on the line
    ("USt 19 % auf 804,35 € 152,83 €")."""
    amounts = [a for a in find_amounts(text[:200]) if a.decimals]
    if not amounts:
        return None
    first = amounts[0]
    lead = text[:first.start]
    if len(lead.strip(" :€$£")) == 0 or lead.strip() in ("EUR", "USD", "GBP", "CHF"):
        return first
    return amounts[-1]


def read_amounts(layout: Layout) -> dict[str, Found]:
    """grand_total, amount_due, net_total and tax_total (each an Amount)."""
    out: dict[str, Found] = {}
    net = labelled(layout, NET_LABELS, _amount_value)
    tax = labelled(layout, TAX_LABELS, _amount_value, exclude=re.compile(
        r"\bid\b|-id|nr|nummer|number|intra|n[°º]|incl|inkl|excl|exkl|ohne|sans|hors|zzgl|zuz[üu]glich|identifier|clause|"
        r"registration|satz|rate|taux", re.I))
    due = labelled(layout, DUE_AMOUNT_LABELS, _amount_value)
    not_total = re.compile(r"zwischen|sub|\bht\b|netto|\bnet\b|excl|exkl|ohne|zuschl|abschl|anzahl|positions|menge|qty|"
                           r"quantity|preis|price|prix|prezzo|precio|prijs|stk|\btax\b(?!.*incl)", re.I)
    totals: list[Found] = []
    for rank, labels in enumerate(TOTAL_LABELS):
        totals = [f for f in labelled(layout, labels, _amount_value)
                  if rank == 0 or not not_total.search(layout_line_text(layout, f))]
        if totals:
            break
    if totals:
        best = max(totals, key=lambda f: (f.value.value, f.page, f.box[1]))
        out["grand_total"] = Found(best.value, best.page, best.box, 0.9 if totals is not None else 0.7, best.label)
    if due:
        out["amount_due"] = due[-1]
    if net:
        out["net_total"] = max(net, key=lambda f: (f.page, f.box[1]))
    taxes = [f for f in tax if f.value.value != 0]
    if taxes and "net_total" in out and "grand_total" in out:
        diff = out["grand_total"].value.value - out["net_total"].value.value
        for f in taxes:  # any amount on a tax line that makes net + tax = total
            for a in find_amounts(layout_line_text(layout, f)):
                if a.value == diff and a.decimals:
                    taxes = [Found(a, f.page, f.box, f.confidence, f.label)]
                    break
    if taxes:
        out["tax_total"] = taxes[-1]
    return out


def layout_line_text(layout: Layout, found: Found) -> str:
    """The text of the line a value was found on."""
    for line in layout.lines:
        if line.page == found.page and line.box[1] <= found.box[1] + 1 and line.box[3] >= found.box[1] + 1:
            return line.text
    return ""


def read_currency(layout: Layout, amounts: dict[str, Found]) -> Found | None:
    """The currency: the one printed beside the total, else the most frequent in the text."""
    for key in ("grand_total", "amount_due", "net_total"):
        f = amounts.get(key)
        if f is not None and f.value.currency:
            return Found(f.value.currency, f.page, f.box, 0.9, f.label)
    counts: Counter[str] = Counter()
    first: dict[str, Line] = {}
    for line in layout.lines:
        for code in find_currencies(line.text):
            counts[code] += 1
            first.setdefault(code, line)
    if not counts:
        return None
    code, _ = counts.most_common(1)[0]
    return Found(code, first[code].page, first[code].box, 0.7, None)


def read_vat_id(layout: Layout) -> Found | None:
    """The seller's VAT ID: the first valid one not on a buyer's line (check digits by python-stdnum)."""
    candidates: list[Found] = []
    for line in layout.lines:
        for seg in line.segments:
            for vat_id, _, _ in find_vat_ids(seg.text):
                buyer = BUYER_WORDS.search(seg.text) is not None
                candidates.append(Found(vat_id, seg.page, seg.box, 0.5 if buyer else 0.85, None))
    if not candidates:
        return None
    return max(candidates, key=lambda f: f.confidence)


def read_iban(layout: Layout) -> Found | None:
    """The IBAN: one with its country's length and a right mod-97 check (the IBAN guard's finder)."""
    from gateway.payment_guard import find_ibans

    for index, line in enumerate(layout.lines):
        for seg in line.segments:
            ibans = find_ibans(seg.text)
            if not ibans and IBAN_LABEL.search(seg.text):
                ibans = find_ibans(line.text[line.text.find(seg.text):])
            if not ibans and IBAN_LABEL.search(seg.text) and index + 1 < len(layout.lines):
                # an IBAN broken over two lines (a wrapped paragraph, a narrow footer column)
                joined = seg.text + " " + layout.lines[index + 1].segments[0].text
                ibans = [i for i in find_ibans(joined) if i[:4] in re.sub(r"\s", "", seg.text).upper()]
            if ibans:
                return Found(ibans[0], seg.page, seg.box, 0.95, "IBAN" if IBAN_LABEL.search(line.text) else None)
    return None


def _entity_name(text: str) -> str | None:
    """The company name in a text holding a legal form ("Bei Spiel GmbH, Ecke 12" -> "Bei Spiel GmbH")."""
    for part in re.split(r"\s+[|·•–]\s+|\s{2,}|,\s+(?=\D)|\s-\s", text):
        m = LEGAL_FORM.search(part)
        # "10 KG" is a weight and "Lager 3 AG" no company: a name has letters right before its legal form
        if m and m.start() > 0 and re.search(r"[^\W\d_][\s.,&)]*$", part[:m.start()]) and not part[0].isdigit():
            name = part[:m.end()].strip(" :,-")
            name = re.sub(r"^(?:name|firma|company|soci[ée]t[ée]|vendor|seller|verk[äa]ufer|lieferant)\s*:\s*", "",
                          name, flags=re.I)
            if 2 < len(name) <= 80 and not BUYER_WORDS.search(name):
                return name
    return None


def read_parties(layout: Layout, vat: Found | None) -> tuple[Found | None, Found | None]:
    """The seller (legal-entity line at the top or in the footer, else the letterhead) and the buyer."""
    seller: Found | None = None
    buyer: Found | None = None
    lines = [line for line in layout.lines if line.page == 1]
    seller_label = re.compile(r"\b(?:verk[äa]ufer|lieferant|seller|supplier|vendor|fournisseur|vendeur|leverancier|"
                              r"fornitore|cedente|proveedor|vendedor|emisor)\b", re.I)
    buyer_label = re.compile(r"\b(?:k[äa]ufer|kunde|rechnungsempf[äa]nger|leistungsempf[äa]nger|bill(?:ed)?\s+to|buyer|"
                             r"customer|sold\s+to|client|acheteur|factur[ée]\s+[àa]|klant|koper|cliente|cessionario|"
                             r"comprador|facturar\s+a|spett\.?\s?le|attn|z\.\s?hd\.?)(?:\b|(?<=\.))", re.I)
    # labelled blocks first ("Verkäufer" ... "Name: Rohstoff AG Salzgitter")
    for i, line in enumerate(lines):
        for label, kind in ((seller_label, "seller"), (buyer_label, "buyer")):
            head = line.segments[0].text.strip()
            m = label.match(head)
            # the label stands alone ("Verkäufer", "Bill to:"), not inside a line ("Customer:2")
            if m and len(head) < 40 and not re.search(r"\d", head[m.end():]):
                for nxt in lines[i + 1:i + 5]:
                    named = re.match(r"(?:name|firma|company|nom|naam|nome|nombre)\s*:\s*(\S.{1,78})$", nxt.text, re.I)
                    first = nxt.segments[0].text.strip()
                    # a name without a legal form only right under its label, of two words or more
                    plain = first if (nxt is lines[i + 1] and re.fullmatch(r"[^\W\d_][^\d:]{1,58}", first)
                                      and len(first.split()) >= 2 and not label.search(first)) else None
                    name = named.group(1).strip() if named else (_entity_name(nxt.text) or plain)
                    if name:
                        f = Found(name, nxt.page, nxt.box, 0.8, label.pattern and line.text.strip())
                        if kind == "seller" and seller is None:
                            seller = f
                        elif kind == "buyer" and buyer is None:
                            buyer = f
                        break
    # a return-address line above the address window ("Bei Spiel GmbH · Ecke 12 · 12345 Stadt")
    for i, line in enumerate(lines[:40]):
        for seg in line.segments:
            joined = " ".join(x.text for x in line.segments)
            if re.search(r"\s[|·•●,–-]\s.*\b\d{4,5}\s+[^\W\d_]{2,}", joined) and seg.box[1] < line.page_height * 0.4:
                name = _entity_name(seg.text) or re.split(r"\s[|·•●–-]\s|,", seg.text)[0].strip(" ,")
                if seller is None and name and 2 < len(name) <= 80 and not re.search(r"\d{4,}", name):
                    seller = Found(name, seg.page, seg.box, 0.75, "return address")
                if buyer is None:
                    below = _below(lines, i, seg)
                    if below is not None and not re.search(r"\d", below.text):
                        buyer = Found(below.text.strip(), below.page, below.box, 0.6, "address window")
                break
        if seller is not None:
            break
    if seller is None:
        height = lines[0].page_height if lines else 842.0
        top = [ln for ln in lines if ln.box[1] < height * 0.3]
        footer = [ln for ln in lines if ln.box[1] > height * 0.8]
        for ln in top + footer:
            for seg in ln.segments:
                name = _entity_name(seg.text)
                if name and (buyer is None or name != buyer.value) and not buyer_label.search(
                        ln.text[:max(0, ln.text.find(seg.text))]):
                    seller = Found(name, seg.page, seg.box, 0.7, "legal form")
                    break
            if seller is not None:
                break
    if seller is None and lines:  # the letterhead: the first line of page 1 that is not a title or a date
        for ln in lines[:5]:
            text = ln.segments[0].text
            if (not DOC_TYPES[-1][1].search(text) and not find_dates(text) and re.search(r"[A-Za-z]{3}", text)
                    and len(text) <= 60 and not re.search(r"\d{3,}|\b(?:page|seite|pagina|página|blad)\b", text, re.I)):
                seller = Found(text, ln.page, ln.segments[0].box, 0.4, "letterhead")
                break
    return seller, buyer


def read_document_type(layout: Layout) -> Found | None:
    """The document type: the first title word on page 1 (a line that starts with it), else invoice words anywhere."""
    for line in layout.lines[:60]:
        if line.page != 1:
            break
        for seg in line.segments:
            for kind, pattern in DOC_TYPES:
                m = pattern.match(seg.text.strip())
                if m and len(seg.text) < 80:
                    return Found(kind, seg.page, seg.box, 0.8, m.group(0))
    # elsewhere a credit-note or reminder word is only a hint ("Gutschrift folgt"): invoice words decide
    if DOC_TYPES[-1][1].search(layout.text[:20000]):
        return Found("invoice", 1, (0.0, 0.0, 0.0, 0.0), 0.4, None)
    return None


def month_first(layout: Layout) -> bool:
    """Whether dates are printed month first (US dollars and English labels)."""
    text = layout.text[:20000]
    return "$" in text and "USD" not in text.upper() and re.search(r"\binvoice\b", text, re.I) is not None \
        and re.search(r"\d\d/\d\d/\d{4}", text) is not None and "€" not in text


def check_totals(amounts: dict[str, Found]) -> dict[str, Found]:
    """Net + tax = total: a sum that holds raises confidence; a missing one is filled when the others hold."""
    g, n, t = (amounts.get(k) for k in ("grand_total", "net_total", "tax_total"))
    out = dict(amounts)
    if g and n and t and n.value.value + t.value.value == g.value.value:
        for k in ("grand_total", "net_total", "tax_total"):
            f = out[k]
            out[k] = Found(f.value, f.page, f.box, 0.98, f.label)
    # a total under the net, or the net read twice where tax is charged ("Net total" taken for "Total")
    elif n and t and (g is None or g.value.value < n.value.value or (g.value.value == n.value.value
                                                                     and t.value.value > 0)):
        value = n.value.value + t.value.value
        out["grand_total"] = Found(Amount(value, n.value.currency, 0, 0, True), n.page, n.box, 0.6, "net + tax")
    elif g and n and t is None and g.value.value >= n.value.value:
        value = g.value.value - n.value.value
        out["tax_total"] = Found(Amount(value, g.value.currency, 0, 0, True), g.page, g.box, 0.6, "total - net")
    if "grand_total" not in out and "amount_due" in out:  # only "Balance due" printed: no prepayment shown either
        f = out["amount_due"]
        out["grand_total"] = Found(f.value, f.page, f.box, min(f.confidence, 0.6), f.label)
    if "amount_due" not in out and "grand_total" in out:
        f = out["grand_total"]
        out["amount_due"] = Found(f.value, f.page, f.box, min(f.confidence, 0.6), "no prepayment printed")
    return out


def amount_text(value: Decimal) -> str:
    """Two decimals, as the e-invoice fields give them."""
    return format(value.quantize(Decimal("0.01")), "f")
