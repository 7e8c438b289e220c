"""The document page's preview: the fields boxed where they were found, the page's words to pick a value from."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from pathlib import Path

import httpx

from conftest import Gateway, text_layer_pdf
from test_corrections import send_pdf
from test_web_pages import Browserless

NUMBER = "RE-2026-0815"
LINES = ((60, 770, 12, "Brunnen Buerotechnik GmbH"), (60, 755, 10, "Hauptstr. 5, 10115 Berlin"),
         (60, 700, 20, "Rechnung"), (60, 660, 11, "Rechnungsnummer:"), (180, 660, 11, NUMBER),
         (60, 644, 11, "Rechnungsdatum:"), (180, 644, 11, "12.03.2026"), (60, 610, 11, "Gesamtbetrag: 119,00 EUR"))


def born_digital_invoice(lines: tuple[tuple[int, int, int, str], ...] = LINES) -> bytes:
    """A one-page A4 PDF with a text layer (Helvetica): its number right of "Rechnungsnummer"."""
    return text_layer_pdf(lines)


def test_the_preview_boxes_the_fields_and_gives_the_words_to_pick(gateway_factory: Callable[..., Gateway],
                                                                   workdir: Path) -> None:
    gw = gateway_factory()
    doc = send_pdf(gw, born_digital_invoice(), "brunnen", sender="rechnung@brunnen.example")
    assert doc["fields"]["invoice_number"] == NUMBER
    words_url = f"/api/documents/{doc['id']}/words"

    # the words need the login
    base = f"http://127.0.0.1:{gw.web_port}"
    assert httpx.get(base + words_url).status_code == 401
    assert httpx.get(f"{base}/documents/{doc['id']}/page/1.png").status_code == 302

    page = gw.api(words_url + "?page=1").json()
    assert page["page"] == 1 and page["width"] == 595 and page["height"] == 842
    texts = [w["text"] for w in page["words"]]
    assert NUMBER in texts and "Rechnungsnummer:" in texts and "Gesamtbetrag:" in texts
    for w in page["words"]:
        x0, y0, x1, y1 = w["box"]
        assert 0 <= x0 < x1 <= page["width"] and 0 <= y0 < y1 <= page["height"], w
    number = next(w for w in page["words"] if w["text"] == NUMBER)["box"]
    label = next(w for w in page["words"] if w["text"] == "Rechnungsnummer:")["box"]
    assert label[2] <= number[0] and abs(label[1] - number[1]) < 3  # right of its label, on its line
    assert gw.api(words_url + "?page=2").json()["words"] == []
    for bad in ("0", "x", "21"):
        assert gw.api(f"{words_url}?page={bad}").status_code == 400

    # the page shows each field found on page 1 as a box over the preview, named in its title
    c = Browserless(gw)
    assert c.login().status_code == 302
    text = c.get(f"/documents/{doc['id']}").text
    svg = re.search(r'<svg class="highlights" viewBox="0 0 ([\d.]+) ([\d.]+)".*?</svg>', text, re.S)
    assert svg and (svg.group(1), svg.group(2)) == ("595.0", "842.0")
    rects = dict(re.findall(r'<rect class="hl[^"]*" data-field="(\w+)"[^>]*><title>([^<]*)</title>', svg.group(0)))
    assert {"invoice_number", "issue_date", "grand_total", "seller"} <= set(rects)
    assert html.unescape(rects["invoice_number"]) == "Invoice number: text · Rechnungsnummer"
    x, width = re.search(r'data-field="invoice_number" x="([\d.]+)" y="[\d.]+" width="([\d.]+)"', svg.group(0)).groups()
    assert float(x) <= label[0] + 1 and float(x) + float(width) >= number[2] - 1  # the label and its value
    assert c.get(f"/documents/{doc['id']}/page/1.png").content.startswith(b"\x89PNG")
    assert c.get(f"/documents/{doc['id']}/page/2.png").status_code == 404
    assert c.get(f"/documents/{doc['id']}?page=2").status_code == 404

    # one way to correct a value: the old Edit form keeps tags and note; a company posted to it is a correction
    assert 'name="company"' not in text and 'name="tags"' in text
    r = c.post(f"/documents/{doc['id']}/edit", {"company": "Brunnen <GmbH>", "tags": "office", "note": "ok"})
    assert r.status_code == 302
    after = gw.api(f"/api/documents/{doc['id']}").json()
    assert after["company"] == "Brunnen <GmbH>" and after["tags"] == ["office"] and after["note"] == "ok"
    assert after["fields"]["seller"] == "Brunnen <GmbH>" and after["field_sources"]["seller"]["source"] == "person"
    assert "Brunnen <GmbH>" not in c.get(f"/documents/{doc['id']}").text
    c.close()
