"""A mail that claims a rule's sender without proof is held as suspicious, exports nothing,
and is exported once a person releases it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import Gateway, make_mail, run_cli, unique_pdf, wait_for, write_config
from gateway.senderauth import StubResolver
from test_trust_senderauth import key, signed  # noqa: F401  (key is a fixture)

SUPPLIER = "billing@known-supplier.example"
RULES = """\
name: Known supplier
when: {from: billing@known-supplier.example, authenticated: true}
assign: {company: Known Supplier GmbH}
---
name: Everything else
priority: 200
when: {}
assign: {tags: [misc]}
"""


def start(factory: Callable[..., Gateway], workdir: Path, key: tuple[bytes, str], rules: str = RULES,
          **cfg: Any) -> Gateway:
    (workdir / "rules" / "suppliers.yaml").write_text(rules)
    gw = factory(**cfg)
    gw.service.pipeline.sender_auth.resolver = StubResolver({
        ("known-supplier.example", "TXT"): "v=spf1 ip4:192.0.2.0/24 -all",  # not the test's 127.0.0.1
        ("s1._domainkey.known-supplier.example", "TXT"): f"v=DKIM1; k=rsa; p={key[1]}",
        ("_dmarc.known-supplier.example", "TXT"): "v=DMARC1; p=none",
    })
    return gw


def invoice(tag: str, sender: str = f"Known Supplier <{SUPPLIER}>") -> bytes:
    return make_mail(sender=sender, subject=f"Invoice {tag}",
                     attachments=[(f"invoice-{tag}.pdf", unique_pdf(tag), "application/pdf")]).as_bytes()


def settled(gw: Gateway, n: int) -> list[dict[str, Any]]:
    rows = wait_for(lambda: (r := gw.store.list_messages()[0]) and len(r) >= n
                    and all(m["status"] != "received" for m in r) and r, timeout=15)
    return sorted(rows, key=lambda r: r["id"])


def test_forged_sender_is_held_until_released(gateway_factory: Callable[..., Gateway], workdir: Path,
                                              key: tuple[bytes, str]) -> None:  # noqa: F811
    gw = start(gateway_factory, workdir, key)
    gw.send(invoice("forged"), sender=SUPPLIER)
    [msg] = settled(gw, 1)
    assert msg["status"] == "suspicious"
    assert f"claims to be from {SUPPLIER}, the sender of rule 'Known supplier'" in msg["reason"]
    assert "SPF fail" in msg["reason"] and f"invoice-gateway release {msg['id']}" in msg["reason"]
    assert gw.store.documents_of(msg["id"]) == [] and gw.store.export_counts() == {}
    api = gw.api(f"/api/messages/{msg['id']}").json()
    assert api["status"] == "suspicious"
    assert api["authentication"]["authenticated"] is False and api["authentication"]["spf"]["result"] == "fail"
    assert gw.exported_files() == []
    from test_web_pages import Browserless  # it imports this module

    client = Browserless(gw)
    try:
        assert client.login().status_code == 302
        page = client.get(f"/messages/{msg['id']}").text
    finally:
        client.close()
    assert "This mail claims a sender it could not prove." in page
    assert "<dt>Sender</dt><dd class=\"break\">not authenticated" in page and "SPF fail" in page
    assert "Authentication-Results: " in page and "spf=fail" in page and "{&#39;" not in page

    gw.store.release_message(msg["id"], by="anna")
    gw.service.pipeline.wake.set()
    files = wait_for(gw.exported_files, timeout=15)
    assert [f.name for f in files] == ["invoice-forged.pdf"]
    row = gw.store.message(msg["id"])
    assert row is not None and row["status"] == "imported" and row["released_by"] == "anna"
    assert "released by anna" in row["reason"]
    [doc] = gw.store.documents_of(msg["id"])
    assert doc["company"] == "Known Supplier GmbH"  # the claimed rule decided


def test_authenticated_sender_and_other_senders_are_imported(gateway_factory: Callable[..., Gateway],
                                                             workdir: Path, key: tuple[bytes, str]) -> None:  # noqa: F811
    gw = start(gateway_factory, workdir, key)
    gw.send(signed(key, invoice("genuine"), domain="known-supplier.example"), sender=SUPPLIER)
    gw.send(invoice("other", sender="shop@other.example"), sender="shop@other.example")
    genuine, other = settled(gw, 2)
    assert genuine["status"] == "imported" and "Known supplier" in genuine["reason"]
    assert other["status"] == "imported" and "Everything else" in other["reason"]
    wait_for(lambda: len(gw.exported_files()) == 2, timeout=15)


def test_require_authenticated_sender_makes_every_from_demand_it(gateway_factory: Callable[..., Gateway],
                                                                 workdir: Path, key: tuple[bytes, str]) -> None:  # noqa: F811
    rules = RULES.replace(", authenticated: true}", "}")
    gw = start(gateway_factory, workdir, key, rules, trust={"require_authenticated_sender": True})
    gw.send(invoice("forged2"), sender=SUPPLIER)
    gw.send(signed(key, invoice("genuine2"), domain="known-supplier.example"), sender=SUPPLIER)
    forged, genuine = settled(gw, 2)
    assert forged["status"] == "suspicious" and "trust.require_authenticated_sender" in forged["reason"]
    assert genuine["status"] == "imported"
    wait_for(lambda: len(gw.exported_files()) == 1, timeout=15)
    assert [f.name for f in gw.exported_files()] == ["invoice-genuine2.pdf"]

    # the rule tester decides as the gateway did: a stored mail brings its authentication
    tried = {m["id"]: gw.api(f"/api/rules/test?message={m['id']}", "POST").json() for m in (forged, genuine)}
    assert tried[genuine["id"]]["rule"] == "Known supplier" and tried[genuine["id"]]["authenticated"] is True
    assert tried[forged["id"]]["rule"] == "Everything else" and tried[forged["id"]]["authenticated"] is False
    assert "trust.require_authenticated_sender" in tried[forged["id"]]["explain"][0]["reason"]
    gw.store.release_message(forged["id"], by="anna")  # a person vouches for it: the rule decides
    released = gw.api(f"/api/rules/test?message={forged['id']}", "POST").json()
    assert released["rule"] == "Known supplier" and released["released"]["by"] == "anna"
    upload = gw.api("/api/rules/test", "POST", content=invoice("upload")).json()
    assert upload["require_authenticated_sender"] is True and upload["authenticated"] is None
    assert upload["rule"] == "Everything else"


def test_dns_failure_holds_as_not_known_and_release_cli_exports(gateway_factory: Callable[..., Gateway],
                                                                 workdir: Path, key: tuple[bytes, str]) -> None:  # noqa: F811
    gw = start(gateway_factory, workdir, key)
    gw.service.pipeline.sender_auth.resolver = StubResolver(failing=["known-supplier.example",
                                                                     "_dmarc.known-supplier.example"])
    gw.send(invoice("dnsdown"), sender=SUPPLIER)
    [msg] = settled(gw, 1)
    assert msg["status"] == "suspicious" and "temporarily" in msg["reason"]
    config = write_config(workdir, gw.cfg)
    result = run_cli("--config", str(config), "-q", "release", str(msg["id"]), "--by", "ops")
    assert result.returncode == 0, result.stderr
    assert f"#{msg['id']} released by ops: imported" in result.stdout.decode()
    wait_for(gw.exported_files, timeout=15)
    again = run_cli("--config", str(config), "-q", "release", str(msg["id"]))
    assert again.returncode == 1 and b"not suspicious" in again.stderr


def test_release_through_the_api_exports_and_a_second_release_is_refused(
        gateway_factory: Callable[..., Gateway], workdir: Path, key: tuple[bytes, str]) -> None:  # noqa: F811
    gw = start(gateway_factory, workdir, key)
    gw.send(invoice("api-release"), sender=SUPPLIER)
    [msg] = settled(gw, 1)
    assert msg["status"] == "suspicious" and not gw.exported_files()
    assert gw.api(f"/api/messages/{msg['id']}/release", method="POST").status_code == 202
    files = wait_for(gw.exported_files, timeout=15)
    assert [f.read_bytes() for f in files] == [unique_pdf("api-release")]
    row = gw.store.message(msg["id"])
    assert row["status"] == "imported" and row["released_by"] == "api"
    again = gw.api(f"/api/messages/{msg['id']}/release", method="POST")
    assert again.status_code == 409 and "not suspicious" in again.json()["error"]
