"""The minimal JSON API and /healthz of the spine, over a real HTTP socket."""

from __future__ import annotations

import httpx

from conftest import API_TOKEN, Gateway, make_mail, run_cli, unique_pdf, wait_for


def test_api_requires_the_bearer_token(gateway: Gateway) -> None:
    base = f"http://127.0.0.1:{gateway.web_port}"
    for path in ("/api/messages", "/api/documents", "/api/documents/1", "/api/documents/1/file"):
        assert httpx.get(base + path).status_code == 401
        assert httpx.get(base + path, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(base + "/healthz").status_code == 200


def test_messages_and_documents_newest_first_with_export_state(gateway: Gateway) -> None:
    pdf = unique_pdf("api")
    gateway.send(make_mail(subject="first", attachments=[("a.pdf", pdf, "application/pdf")]))
    gateway.send(make_mail(subject="second, no attachment", body="Invoice 7: just text"))
    wait_for(lambda: "received" not in gateway.store.status_counts()
             and sum(gateway.store.status_counts().values()) == 2, timeout=30)
    wait_for(gateway.exported_files, timeout=10)
    msgs = gateway.api("/api/messages?limit=1").json()
    assert msgs["total"] == 2 and len(msgs["items"]) == 1
    newest = msgs["items"][0]
    assert newest["subject"] == "second, no attachment"
    first = gateway.api("/api/messages?limit=1&offset=1").json()["items"][0]
    assert first["status"] == "imported" and first["source"] == "smtp"
    assert first["recipients"] == ["invoices@localhost"] and first["sender"].endswith("<billing@acme.example>")
    doc = first["documents"][0]
    assert doc["filename"] == "a.pdf" and doc["size"] == len(pdf)
    wait_for(lambda: gateway.api(f"/api/documents/{doc['id']}").json()["exports"][0]["state"] == "delivered")
    got = gateway.api(doc["file"])
    assert got.status_code == 200 and got.content == pdf
    docs = gateway.api("/api/documents").json()
    assert docs["items"][0]["exports"][0]["target"] == "nas"
    # a mail without attachment whose body looks like an invoice is the invoice itself: rendered to PDF
    assert gateway.api("/api/messages?status=imported").json()["total"] == 2
    body_doc = newest["documents"][0]
    assert body_doc["origin"] == "body" and body_doc["filename"] == "second, no attachment.pdf"
    assert gateway.api(body_doc["file"]).content.startswith(b"%PDF-")


def test_healthz_names_what_is_down(gateway: Gateway) -> None:
    gateway.service.smtp.stop()
    r = httpx.get(f"http://127.0.0.1:{gateway.web_port}/healthz")
    assert r.status_code == 503 and r.json()["down"] == ["smtp"]


def test_import_from_stdin_takes_the_same_path(workdir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from conftest import base_config, write_config

    config = write_config(workdir, base_config(workdir))
    raw = make_mail(attachments=[("piped.pdf", unique_pdf("stdin"), "application/pdf")]).as_bytes()
    r = run_cli("--config", str(config), "import", "-", input=raw)
    assert r.returncode == 0, r.stderr
    assert b"imported" in r.stdout
    r = run_cli("--config", str(config), "export")
    assert r.returncode == 0 and b"nas: 1 delivered" in r.stdout
    assert [p.read_bytes() for p in (workdir / "exports").rglob("*.pdf")] == [unique_pdf("stdin")]
    r = run_cli("--config", str(config), "status", "--json")
    assert r.returncode == 0 and b'"imported": 1' in r.stdout
    _ = API_TOKEN
