"""The documents page as a sortable, filtered list, its CSV for the accountant, and the dashboard's spend.

The documents are written into the store as the pipeline stores them (fields
JSON); the pages are asked through Flask's test client of an unstarted service.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Gateway, base_config

PASSWORD = "admin-secret"
XSS = "<script>alert(1)</script>"
TODAY = dt.date.today()


def ago(days: int) -> str:
    return (TODAY - dt.timedelta(days=days)).isoformat()


# seller, number, issued, due, total, currency, type (None: unknown)
DOCS = (
    ("Stadtwerke Nord GmbH", "SW-1", ago(40), ago(10), "119.00", "EUR", "invoice"),
    ("Telecom AG", "T-77", ago(20), ago(-10), "39.90", "EUR", "invoice"),
    ("Telecom AG", "T-78", ago(15), None, "10.00", "EUR", "credit_note"),
    ("Hosting Ltd", "H-9", ago(5), ago(-25), "1250.00", "GBP", None),
    (XSS, "=cmd|' /C calc'!A0", ago(3), ago(-30), "-5.00", "EUR", "invoice"),
    ("Stadtwerke Nord GmbH", "SW-0", ago(500), ago(470), "99.00", "EUR", "invoice"),  # older than 12 months
    ("Stadtwerke Nord GmbH", "R-1", ago(30), None, "119.00", "EUR", "reminder"),  # repeats SW-1: not spend
)


def insert(gw: Gateway, docs: tuple[tuple[Any, ...], ...] = DOCS) -> list[int]:
    """Store a message with one document per row of ``docs``, fields as the pipeline writes them."""
    store = gw.store
    [mid] = store.insert_messages([{"received": "2026-01-01T00:00:00+00:00", "source": "smtp", "raw_path": "x.eml",
                                    "size": 1, "sha256": "m", "status": "imported"}])
    ids = []
    with store.write() as conn:
        for i, (seller, number, issued, due, total, currency, kind) in enumerate(docs):
            fields = {"seller": seller, "seller_vat_id": "DE123456788" if i == 0 else None,
                      "invoice_number": number, "issue_date": issued, "due_date": due, "currency": currency,
                      "net_total": "100.00" if i == 0 else None, "tax_total": "19.00" if i == 0 else None,
                      "grand_total": total, "amount_due": total, "document_type": kind}
            cur = conn.execute(
                "INSERT INTO documents (message_id, sha256, filename, content_type, kind, size, path, created, "
                "company, fields) VALUES (?, ?, ?, 'application/pdf', 'pdf', 1, 'x', ?, ?, ?)",
                (mid, f"sha{i}", f"doc-{i}.pdf", f"2026-01-0{1 + i % 9}T00:00:00+00:00", seller,
                 json.dumps({"fields": fields, "field_sources": {}})))
            ids.append(int(cur.lastrowid or 0))
            conn.execute("INSERT INTO message_documents (message_id, document_id) VALUES (?, ?)", (mid, ids[-1]))
        conn.execute("INSERT INTO exports (document_id, target, state, created) VALUES (?, 'nas', 'delivered', '')",
                     (ids[0],))
    return ids


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, list[int]]]:
    from web.app import create_app

    workdir: Path = tmp_path_factory.mktemp("doclist")
    for d in ("data", "rules", "exports"):
        (workdir / d).mkdir()
    gw = Gateway(workdir, base_config(workdir))
    ids = insert(gw)
    app = create_app(gw.service)
    yield app, ids
    gw.store.close()


@pytest.fixture(scope="module")
def client(site: tuple[Any, list[int]]) -> Any:
    c = site[0].test_client()
    page = c.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token
    assert c.post("/login", data={"csrf_token": token.group(1), "password": PASSWORD, "next": "/"}).status_code == 302
    return c


def numbers(c: Any, query: str) -> list[str]:
    """The invoice numbers of the list's rows, in order."""
    page = c.get("/documents?" + query)
    assert page.status_code == 200, page.get_data(as_text=True)[:500]
    return re.findall(r'<td data-label="Number" class="nowrap number">([^<]*)</td>', page.get_data(as_text=True))


def test_list_sorts_by_total_and_due_date(client: Any) -> None:
    # equal totals: the newer document first
    assert numbers(client, "sort=total&order=desc") == ["H-9", "R-1", "SW-1", "SW-0", "T-77", "T-78",
                                                        "=cmd|&#39; /C calc&#39;!A0"]
    assert numbers(client, "sort=total&order=asc")[:2] == ["=cmd|&#39; /C calc&#39;!A0", "T-78"]
    # documents without a due date come last in either direction
    assert numbers(client, "sort=due&order=asc") == ["SW-0", "SW-1", "T-77", "H-9", "=cmd|&#39; /C calc&#39;!A0",
                                                     "R-1", "T-78"]
    assert numbers(client, "sort=due&order=desc")[:2] == ["=cmd|&#39; /C calc&#39;!A0", "H-9"]
    page = client.get("/documents?sort=due&order=asc").get_data(as_text=True)
    # the sorted header says so, and its link turns the order round; the others keep the filters
    assert 'aria-sort="ascending"><a href="/documents?sort=due&amp;order=desc"' in page
    # only the columns it knows: a sort name never reaches SQL
    assert client.get("/documents?sort=id;DROP TABLE documents").status_code == 400
    assert client.get("/documents?order=sideways").status_code == 400


def test_filters(client: Any) -> None:
    assert numbers(client, "supplier=telecom&sort=number") == ["T-77", "T-78"]
    assert numbers(client, "company=stadtwerke&sort=number") == ["R-1", "SW-0", "SW-1"]  # the old name still works
    assert numbers(client, f"date_from={ago(21)}&date_to={ago(4)}&sort=number") == ["H-9", "T-77", "T-78"]
    assert numbers(client, f"due_before={ago(0)}&sort=number") == ["SW-0", "SW-1"]
    assert numbers(client, "amount_min=39,90&amount_max=119&sort=number") == ["R-1", "SW-0", "SW-1", "T-77"]
    assert numbers(client, "currency=gbp") == ["H-9"]
    assert numbers(client, "document_type=credit_note") == ["T-78"]
    assert numbers(client, "currency=EUR&document_type=invoice&amount_min=100&sort=number") == ["SW-1"]
    assert client.get("/documents?date_from=31.12.2026").status_code == 400
    assert client.get("/documents?amount_min=lots").status_code == 400
    # the cards stay as a view, with the same filters and sort; the toggle keeps them
    cards = client.get("/documents?view=cards&currency=GBP").get_data(as_text=True)
    assert 'class="doc-card' in cards and "no. H-9" in cards and "no. T-77" not in cards
    assert 'href="/documents?view=list&amp;currency=GBP"' in cards


def test_seller_markup_is_escaped(client: Any) -> None:
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    for path in ("/documents", "/documents?view=cards", "/"):
        text = client.get(path).get_data(as_text=True)
        assert XSS not in text and escaped in text, path


def test_csv_of_the_filtered_list(client: Any, site: tuple[Any, list[int]]) -> None:
    ids = site[1]
    resp = client.get("/documents.csv?currency=EUR&sort=total&order=desc")
    assert resp.status_code == 200 and resp.mimetype == "text/csv"
    assert "attachment" in resp.headers["Content-Disposition"]
    raw = resp.get_data()
    assert raw.startswith(b"\xef\xbb\xbf")  # UTF-8 with BOM: Excel reads the umlauts right
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    assert rows[0] == ["id", "seller", "seller_vat_id", "invoice_number", "issue_date", "due_date", "currency",
                       "net_total", "tax_total", "grand_total", "amount_due", "document_type", "filename",
                       "received", "exported_to"]
    assert [r[3] for r in rows[1:]] == ["R-1", "SW-1", "SW-0", "T-77", "T-78", "'=cmd|' /C calc'!A0"]
    first = dict(zip(rows[0], rows[2]))
    assert first == {"id": str(ids[0]), "seller": "Stadtwerke Nord GmbH", "seller_vat_id": "DE123456788",
                     "invoice_number": "SW-1", "issue_date": ago(40), "due_date": ago(10), "currency": "EUR",
                     "net_total": "100.00", "tax_total": "19.00", "grand_total": "119.00", "amount_due": "119.00",
                     "document_type": "invoice", "filename": "doc-0.pdf", "received": "2026-01-01T00:00:00+00:00",
                     "exported_to": "nas"}
    hostile = dict(zip(rows[0], rows[-1]))
    # a value a spreadsheet would run as a formula starts with ' ; an amount stays a number
    assert hostile["invoice_number"].startswith("'=") and hostile["seller"] == XSS
    assert hostile["grand_total"] == "-5.00"
    # the filters of the page apply: the GBP invoice is not in an EUR list
    assert "H-9" not in raw.decode("utf-8-sig")
    # the page links to the CSV of what it shows
    page = client.get("/documents?currency=EUR&sort=total&view=cards").get_data(as_text=True)
    assert 'href="/documents.csv?currency=EUR&amp;sort=total"' in page


def test_csv_and_list_need_the_login(site: tuple[Any, list[int]]) -> None:
    anonymous = site[0].test_client()
    for path in ("/documents.csv", "/documents?sort=total", "/"):
        resp = anonymous.get(path)
        assert resp.status_code == 302 and "/login" in resp.headers["Location"], path
        assert b"Stadtwerke" not in resp.get_data()


def test_dashboard_spend(client: Any) -> None:
    text = client.get("/").get_data(as_text=True)
    spend = re.search(r'<section class="panel" id="spend">(.*?)</section>', text, re.S)
    assert spend
    body = spend.group(1)
    # EUR: 119 + 39.90 - 10 (credit note) - 5; the reminder and the invoice older than 12 months do not count
    assert "Per month · 143.90 EUR" in body and "Per month · 1250.00 GBP" in body
    table = re.findall(r"<tr><td>(?:<a [^>]*>)?([^<]*)(?:</a>)?</td>\s*<td class=\"num nowrap\">([^<]*)</td>", body)
    assert table == [("Hosting Ltd", "1250.00 GBP"), ("Stadtwerke Nord GmbH", "119.00 EUR"),
                     ("Telecom AG", "29.90 EUR"), ("&lt;script&gt;alert(1)&lt;/script&gt;", "-5.00 EUR")]
    # the supplier chart's tooltip is exact, the label short and escaped
    assert "<title>Telecom AG: 29.90 EUR</title>" in body
    # the API says the same, amounts as decimal strings
    api = client.get("/api/status").get_json()["spend"]
    assert [(c["currency"], c["total"]) for c in api["currencies"]] == [("GBP", "1250.00"), ("EUR", "143.90")]
    assert api["suppliers"][2] == {"supplier": "Telecom AG", "currency": "EUR", "total": "29.90", "documents": 2}


def test_an_einvoice_and_its_readable_pdf_are_one_row_and_count_once(tmp_path: Path) -> None:
    from web.app import create_app

    for d in ("data", "rules", "exports"):
        (tmp_path / d).mkdir()
    gw = Gateway(tmp_path, base_config(tmp_path))
    xml, pdf = insert(gw, (("Muster GmbH", "IG-42", ago(9), ago(-5), "238.00", "EUR", "invoice"),) * 2)
    with gw.store.write() as conn:
        conn.execute("UPDATE documents SET kind = 'xml', filename = 'IG-42.xml' WHERE id = ?", (xml,))
        conn.execute("UPDATE documents SET origin = 'einvoice-render', filename = 'IG-42.pdf' WHERE id = ?", (pdf,))
        conn.execute("UPDATE exports SET target = 'dms', state = 'pending' WHERE document_id = ?", (xml,))
        conn.execute("INSERT INTO exports (document_id, target, state, created) VALUES (?, 'nas', 'delivered', '')",
                     (pdf,))
    c = create_app(gw.service).test_client()
    token = re.search(r'name="csrf_token" value="([^"]+)"', c.get("/login").get_data(as_text=True))
    assert token and c.post("/login", data={"csrf_token": token.group(1), "password": PASSWORD}).status_code == 302
    try:
        assert numbers(c, "") == ["IG-42"]
        # the pair's exports are the XML's (waiting for dms) and the readable PDF's (delivered to nas)
        assert numbers(c, "export_state=delivered") == numbers(c, "export_state=pending") == ["IG-42"]
        assert numbers(c, "export_state=failed") == []
        rows = list(csv.DictReader(io.StringIO(c.get("/documents.csv").get_data().decode("utf-8-sig"))))
        assert [(r["id"], r["filename"], r["exported_to"]) for r in rows] == [(str(xml), "IG-42.xml", "nas")]
        assert "Per month · 238.00 EUR" in c.get("/").get_data(as_text=True)
    finally:
        gw.store.close()
