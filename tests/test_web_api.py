"""The JSON API: every page's data and action, with the Bearer token; docs/openapi.yaml matches it."""

from __future__ import annotations

import re
from typing import Any

import yaml

from conftest import ROOT, Gateway, make_mail, unique_pdf, wait_for
from test_web_pages import invoice_pdf, settle, site_config

SPEC = ROOT / "docs" / "openapi.yaml"


def _spec() -> dict[str, Any]:
    return dict(yaml.safe_load(SPEC.read_text(encoding="utf-8")))


def node_ref(ref: str) -> list[str]:
    """The keys of a local reference (``#/components/schemas/Error``)."""
    return ref.lstrip("#/").split("/")


def deref(spec: dict[str, Any], node: Any) -> Any:
    """Follow $ref until a real node."""
    while isinstance(node, dict) and "$ref" in node:
        target: Any = spec
        for part in node_ref(node["$ref"]):
            target = target[part]
        node = target
    return node


def properties(spec: dict[str, Any], schema: Any) -> set[str]:
    """The property names a schema declares (through $ref and allOf)."""
    schema = deref(spec, schema)
    out = set((schema.get("properties") or {}).keys())
    for part in schema.get("allOf") or ():
        out |= properties(spec, part)
    return out


def test_openapi_documents_every_api_route(gateway: Gateway) -> None:
    spec = _spec()
    assert spec["openapi"].startswith("3.")
    documented = {(path, method.upper()) for path, item in spec["paths"].items()
                  for method in item if method in ("get", "post", "patch", "put", "delete")}
    app = gateway.service.web.app
    served = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/") or rule.rule in ("/healthz", "/metrics"):
            path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
            served |= {(path, m) for m in (rule.methods or set()) - {"HEAD", "OPTIONS"}}
    assert served == documented, (served - documented, documented - served)
    # every reference resolves, every path parameter is declared
    text = SPEC.read_text()
    for ref in set(re.findall(r'\$ref: "([^"]+)"', text)):
        deref(spec, {"$ref": ref})
    for path, item in spec["paths"].items():
        names = {deref(spec, p)["name"] for p in item.get("parameters", [])}
        for method in ("get", "post", "patch"):
            names |= {deref(spec, p)["name"] for p in item.get(method, {}).get("parameters", [])}
        assert set(re.findall(r"{(\w+)}", path)) <= names, path


def test_api_answers_match_the_documented_schemas(gateway: Gateway) -> None:
    spec = _spec()
    schemas = spec["components"]["schemas"]
    gateway.send(make_mail(subject="Invoice 1", attachments=[("a.pdf", unique_pdf("schema"), "application/pdf")]))
    settle(gateway, 1)
    msg = gateway.api("/api/messages/1").json()
    doc = gateway.api("/api/documents/1").json()
    assert set(msg) <= properties(spec, schemas["MessageFull"])
    assert msg["decision"], msg
    assert set(msg["decision"]) <= properties(spec, schemas["Decision"])
    assert set(doc) <= properties(spec, schemas["Document"])
    status = gateway.api("/api/status").json()
    assert set(status) <= properties(spec, schemas["Status"])
    assert set(status["counts"]) <= properties(spec, schemas["Status"]["properties"]["counts"])
    target = gateway.api("/api/exports/nas").json()
    assert set(target) - {"running", "last_run", "items"} <= properties(spec, schemas["Target"])
    assert set(target["items"][0]) <= properties(spec, schemas["ExportRow"])
    assert set(gateway.api("/api/rules").json()) <= properties(spec, schemas["Rules"])
    raw = make_mail(subject="x").as_bytes()
    explanation = gateway.api("/api/rules/test", "POST", content=raw).json()
    assert set(explanation) <= properties(spec, schemas["Explanation"])


def test_document_actions_through_the_api(gateway_factory: Any, workdir: Any) -> None:
    gw = gateway_factory(**{k: v for k, v in site_config(workdir).items() if k in ("exports", "unmatched")})
    pdf_bytes = invoice_pdf("API")
    gw.send(make_mail(subject="Invoice 9", attachments=[("inv.pdf", pdf_bytes, "application/pdf"),
                                                        ("notes.xml", b"<notes/>", "application/xml")]))
    settle(gw, 1)
    docs = gw.api("/api/documents").json()["items"]
    pdf = next(d for d in docs if d["filename"] == "inv.pdf")
    did = pdf["id"]
    # approve and withdraw
    assert gw.api(f"/api/documents/{did}/approve", "POST").json()["approved"] is True
    assert gw.api(f"/api/documents/{did}/unapprove", "POST").json()["approved"] is False
    # edit
    r = gw.api(f"/api/documents/{did}", "PATCH", json={"company": "  API GmbH ", "tags": ["a", "b", "a"]})
    assert r.status_code == 200 and r.json()["company"] == "API GmbH" and r.json()["tags"] == ["a", "b"]
    assert gw.api("/api/documents?company=API").json()["total"] == 1
    assert gw.api(f"/api/documents/{did}", "PATCH", json={"company": ""}).json()["company"] is None
    r = gw.api(f"/api/documents/{did}", "PATCH", json={"sha256": "x"})
    assert r.status_code == 400 and "cannot be changed" in r.json()["error"]
    assert gw.api(f"/api/documents/{did}", "PATCH", json=["x"]).status_code == 400
    assert gw.api(f"/api/documents/{did}", "PATCH", content=b"{", headers={
        "Content-Type": "application/json"}).status_code == 400
    assert gw.api(f"/api/documents/{did}", "PATCH", json={"company": 5}).status_code == 400
    assert gw.api(f"/api/documents/{did}", "PATCH", json={"note": "x" * 3000}).status_code == 400
    assert gw.api("/api/documents?tag=b").json()["total"] == 1
    # export again
    wait_for(lambda: any(e["state"] == "delivered" for e in gw.api(f"/api/documents/{did}").json()["exports"]))
    r = gw.api(f"/api/documents/{did}/export", "POST", json={"target": "nas"})
    assert r.status_code == 202 and r.json()["queued"] == ["nas"]
    assert gw.api(f"/api/documents/{did}/export", "POST", json={"target": "nope"}).status_code == 404
    assert gw.api(f"/api/documents/{did}/export", "POST", json={}).status_code == 400
    # file and thumbnails
    assert gw.api(f"/api/documents/{did}/file").content == pdf_bytes
    assert gw.api(f"/api/documents/{did}/thumbnail?size=preview").content.startswith(b"\x89PNG")
    assert gw.api(f"/api/documents/{did}/thumbnail?size=huge").status_code == 400
    xml = next(d for d in docs if d["filename"] == "notes.xml")
    assert gw.api(f"/api/documents/{xml['id']}/thumbnail").status_code == 404
    assert gw.api("/api/documents/999").status_code == 404


def test_messages_rules_exports_and_mailboxes_through_the_api(gateway_factory: Any, workdir: Any) -> None:
    gw = gateway_factory(**{k: v for k, v in site_config(workdir).items() if k in ("exports", "unmatched")})
    gw.send(make_mail(sender="Acme <billing@acme.example>", subject="Invoice 3",
                      attachments=[("a.pdf", unique_pdf("msg"), "application/pdf")]))
    gw.send(make_mail(sender="someone@else.example", subject="hello"), sender="someone@else.example")
    settle(gw, 2)
    unmatched = gw.api("/api/messages?status=unmatched").json()["items"][0]
    mid = unmatched["id"]
    full = gw.api(f"/api/messages/{mid}").json()
    assert full["decision"]["policy"] == "recognize" and full["raw"] == f"/api/messages/{mid}/raw"
    assert gw.api(f"/api/messages/{mid}/raw").content.startswith(b"From: someone@else.example")
    assert "from: someone@else.example" in gw.api(f"/api/messages/{mid}/rule").json()["yaml"]
    assert gw.api(f"/api/messages/{mid}/reprocess", "POST").status_code == 202
    wait_for(lambda: gw.store.message(mid)["status"] == "unmatched" and gw.store.message(mid)["processed_at"])
    assert gw.api("/api/messages/reexamine", "POST").json()["reexamining"] == 1
    assert gw.api("/api/messages/999/reprocess", "POST").status_code == 404
    # rules: the tester with a stored message, and with a body
    r = gw.api(f"/api/rules/test?message={mid}", "POST")
    assert r.status_code == 200 and r.json()["rule"] is None and r.json()["policy"] == "recognize"
    r = gw.api("/api/rules/test?source=imap:gmail", "POST", content=make_mail(
        sender="billing@acme.example").as_bytes())
    assert r.json()["rule"] == "Acme invoices" and r.json()["source"] == "imap:gmail"
    assert gw.api("/api/rules/test", "POST", content=b"").status_code == 400
    draft = "name: Hello rule\nwhen:\n  subject: hello\n"
    r = gw.api("/api/rules/test", "POST", json={"message": mid, "draft": draft}).json()
    assert r["rule"] == "Hello rule" and r["draft"] is True
    r = gw.api("/api/rules/test", "POST", json={"raw": "Subject: hello\r\n\r\nhi", "draft": "name: [x"}).json()
    assert r["rule"] is None and r["problems"] and r["draft"] is True
    assert gw.api("/api/rules/test", "POST", json={"draft": draft}).status_code == 400
    f = gw.api("/api/rules/file/acme.yaml").json()
    assert f["file"] == "acme.yaml" and "Acme invoices" in f["text"] and f["rules"][0]["name"] == "Acme invoices"
    assert gw.api("/api/rules/file/..%2Fgateway.yaml").status_code == 404
    assert ["Subject", "hello"] in gw.api(f"/api/messages/{mid}").json()["headers"]
    assert gw.api("/api/rules/test?source=<x>", "POST", content=b"Subject: x\r\n\r\nx").status_code == 400
    assert gw.api("/api/rules/test", "POST", content=b"x" * (1024 * 1024 * 3)).status_code == 413
    # exports: run, retry
    wait_for(lambda: gw.store.export_counts().get("broken", {}).get("failed"), timeout=15)
    targets = {t["name"]: t for t in gw.api("/api/exports").json()["items"]}
    assert targets["broken"]["counts"]["failed"] == 1 and "cannot write" in targets["broken"]["last_error"]
    assert targets["nas"]["ok"] and targets["nas"]["destination"].endswith("exports")
    failed = gw.api("/api/exports/broken?state=failed").json()["items"]
    r = gw.api("/api/exports/broken/retry", "POST", json={"ids": [failed[0]["id"]]})
    assert r.json()["retried"] == 1
    wait_for(lambda: gw.store.export_counts().get("broken", {}).get("failed"), timeout=15)
    assert gw.api("/api/exports/broken/retry", "POST").json()["retried"] == 1
    assert gw.api("/api/exports/nas/retry", "POST", json={"ids": [failed[0]["id"]]}).status_code == 404
    assert gw.api("/api/exports/broken/retry", "POST", json={"ids": ["x"]}).status_code == 400
    doc = gw.api("/api/documents").json()["items"][0]
    gw.api(f"/api/documents/{doc['id']}/approve", "POST")
    r = gw.api("/api/exports/accounting/run", "POST")
    assert r.status_code == 202 and r.json()["started"] is True
    wait_for(lambda: not gw.api("/api/exports/accounting").json()["running"])
    assert gw.api("/api/exports/accounting").json()["last_run"]["result"]["delivered"] == 1
    assert gw.api("/api/exports/nowhere/run", "POST").status_code == 404
    # mailboxes: none configured here
    assert gw.api("/api/mailboxes").json() == {"items": []}
    assert gw.api("/api/mailboxes/gmail").status_code == 404
    assert gw.api("/api/mailboxes/gmail/fetch", "POST").status_code == 404
    status = gw.api("/api/status").json()
    assert status["counts"]["unmatched"] == 1 and status["health"]["down"] == []
