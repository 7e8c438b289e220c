"""Benchmark the documents list, its CSV and the dashboard's spend (web/documents_query.py).

Sorting and filtering read each document's fields from the JSON in
``documents.fields`` with SQLite's ``json_extract`` (no index): this measures
what that costs at a given number of documents. Each document is stored as
the pipeline stores it (fields and field sources with boxes, about 2 KB of
JSON), one mail each, one export each; every tenth is an XML.

Run from the repository root:

    .venv/bin/python bench/documents_list.py [--documents 10000] [--rounds 7]

Figures are the best of ``rounds`` (the machine's other work only adds);
nothing here asserts anything.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.store import Store  # noqa: E402
from web import documents_query as dq  # noqa: E402


def fill(store: Store, n: int) -> None:
    """``n`` documents with fields, each from its own mail, with one export."""
    rnd = random.Random(1)
    mids = store.insert_messages([{"received": "2026-01-01T00:00:00+00:00", "source": "smtp", "raw_path": "x",
                                   "size": 1, "sha256": f"m{i}", "status": "imported"} for i in range(n)])
    with store.write() as conn:
        for i, mid in enumerate(mids):
            total = rnd.uniform(1, 5000)
            fields = {"seller": f"Supplier {rnd.randint(1, 300)} GmbH", "seller_vat_id": None, "buyer": "Me",
                      "invoice_number": f"INV-{i}",
                      "issue_date": f"2026-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}",
                      "due_date": f"2026-{rnd.randint(1, 12):02d}-15", "currency": "EUR",
                      "net_total": f"{total / 1.19:.2f}", "tax_total": f"{total - total / 1.19:.2f}",
                      "grand_total": f"{total:.2f}", "amount_due": f"{total:.2f}", "iban": "DE89370400440532013000",
                      "document_type": rnd.choice(["invoice", "invoice", "credit_note", "receipt"])}
            sources = {k: {"source": "text", "confidence": 0.9, "page": 1, "box": [72.0, 100.5, 300.2, 112.7],
                           "label": "Rechnungsnummer"} for k in fields}
            cur = conn.execute(
                "INSERT INTO documents (message_id, sha256, filename, content_type, kind, size, path, created, fields) "
                "VALUES (?, ?, ?, 'application/pdf', ?, 1, 'x', '2026-01-01T00:00:00+00:00', ?)",
                (mid, f"s{i}", f"d{i}.pdf", "xml" if i % 10 == 0 else "pdf",
                 json.dumps({"fields": fields, "field_sources": sources})))
            conn.execute("INSERT INTO message_documents VALUES (?, ?)", (mid, cur.lastrowid))
            conn.execute("INSERT INTO exports (document_id, target, state, created) VALUES (?, 'nas', ?, '')",
                         (cur.lastrowid, rnd.choice(["delivered", "pending"])))


def best(fn: Callable[[], Any], rounds: int) -> float:
    """The fastest of ``rounds`` calls, in milliseconds."""
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--documents", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=7)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp))
        fill(store, a.documents)
        conn = store._conn()

        def page(params: dict[str, str]) -> Callable[[], Any]:
            q = dq.parse_query(params)
            return lambda: (dq.count_documents(conn, q), dq.list_documents(conn, q, limit=25, offset=0))

        cases: list[tuple[str, Callable[[], Any]]] = [
            ("list, newest first", page({})),
            ("list, sorted by total", page({"sort": "total"})),
            ("list, sorted by supplier", page({"sort": "supplier"})),
            ("list, supplier + amount filter, sorted by due date",
             page({"supplier": "Supplier 12", "amount_min": "100", "sort": "due"})),
            ("list, export state filter", page({"export_state": "pending"})),
            ("CSV of every document", lambda: sum(1 for _ in dq.csv_lines(conn, dq.parse_query({})))),
            ("dashboard spend (12 months)", lambda: dq.spend(conn, dt.date(2026, 1, 1), dt.date(2027, 1, 1))),
        ]
        print(f"{a.documents} documents, best of {a.rounds}, load average {os.getloadavg()[0]:.1f}")
        for label, fn in cases:
            print(f"  {label}: {best(fn, a.rounds):.0f} ms")
        store.close()


if __name__ == "__main__":
    main()
