"""Re-examination: new rules re-examine unmatched mail by themselves; imported mail is re-decided
only on request, and when its outcome changes after its documents were exported, the message,
the document and a list say so."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import Gateway, make_mail, unique_pdf, wait_for


def settled(gw: Gateway) -> dict[str, Any]:
    rows = wait_for(lambda: (r := gw.store.list_messages()[0]) and all(m["status"] != "received" for m in r) and r,
                    timeout=30)
    return {m["subject"]: m for m in rows}


def test_unmatched_mail_is_reexamined_by_itself_imported_mail_only_on_request(
        gateway_factory: Callable[..., Gateway], workdir: Path) -> None:
    (workdir / "later").mkdir()
    gw = gateway_factory(exports=[
        {"name": "nas", "type": "folder", "path": str(workdir / "exports")},
        {"name": "later", "type": "folder", "path": str(workdir / "later"), "schedule": {"every": "1d"}}])
    gw.send(make_mail(sender="Shop <news@shop.example>", subject="Our brochure",
                      attachments=[("brochure.pdf", unique_pdf("brochure"), "application/pdf")]),
            sender="news@shop.example")
    gw.send(make_mail(sender="Friend <friend@mail.example>", subject="hello", body="hello, how are you?"),
            sender="friend@mail.example")
    first = settled(gw)
    assert first["Our brochure"]["status"] == "imported"  # the smtp policy imports PDF attachments
    assert first["hello"]["status"] == "unmatched" and "no sign of an invoice" in first["hello"]["reason"]
    wait_for(lambda: [p for p in gw.exported_files() if p.name == "brochure.pdf"], timeout=15)
    brochure = first["Our brochure"]
    [doc] = gw.store.documents_of(brochure["id"])
    assert {e["target"]: e["state"] for e in gw.store.exports_of(doc["id"])} == {"nas": "delivered", "later": "pending"}

    (workdir / "rules" / "shop.yaml").write_text(
        "name: Shop newsletters\nwhen: {from: '@shop.example'}\naction: ignore\n---\n"
        "name: Friend's receipts\nwhen: {from: friend@mail.example}\nimport: body\n")
    # the unmatched mail is re-examined by itself; the imported one is left as it was
    wait_for(lambda: gw.store.message(first["hello"]["id"])["status"] == "imported", timeout=30)
    assert gw.store.message(brochure["id"])["status"] == "imported"
    assert gw.api("/api/documents?orphaned=true").json()["total"] == 0

    # a person asks: the brochure's mail is ignored now, and everything says what became of its document
    assert gw.api(f"/api/messages/{brochure['id']}/reprocess", method="POST").status_code in (200, 202)
    wait_for(lambda: gw.store.message(brochure["id"])["status"] == "ignored", timeout=30)
    msg = gw.api(f"/api/messages/{brochure['id']}").json()
    assert "imported before and is ignored now" in msg["reason"]
    assert f"document {doc['id']} (brochure.pdf): delivered to nas, where it stays" in msg["reason"]
    assert [d["id"] for d in msg["documents"]] == [doc["id"]]  # "Docs: 1" with the explanation beside it
    api_doc = gw.api(f"/api/documents/{doc['id']}").json()
    assert api_doc["orphaned"] is True
    assert {e["target"] for e in api_doc["exports"]} == {"nas"}  # the export not yet delivered is withdrawn
    listed = gw.api("/api/documents?orphaned=true").json()
    assert [d["id"] for d in listed["items"]] == [doc["id"]]
    assert [p.name for p in gw.exported_files()].count("brochure.pdf") == 1  # nothing deleted on the target
    assert gw.api("/api/status").status_code == 200
    dash = gw.service.store.list_documents(limit=1, orphaned=True, archived=None)[1]
    assert dash == 1
