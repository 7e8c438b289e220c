"""`authenticated: true` binds to the domain that authenticated: a display name in `from` is
no proof, even when the sender's own domain authenticates (issue 14.8)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from conftest import Gateway, make_mail, run_cli, unique_pdf
from gateway.models import Address, MailView
from gateway.rules import load_rules_text
from gateway.senderauth import StubResolver
from test_trust_hold import settled
from test_trust_senderauth import key, signed  # noqa: F401  (key is a fixture)

RULES = """\
name: Trusted by name only
when: {from: "Trusted Supplier GmbH", authenticated: true}
assign: {company: Trusted Supplier GmbH, tags: [byname]}
---
name: Trusted by domain
when: {from: ["Trusted Supplier GmbH", "@trusted-supplier.example"], authenticated: true}
assign: {company: Trusted Supplier GmbH}
---
name: Everything else
priority: 200
when: {}
assign: {tags: [misc]}
"""


def resolver(key: tuple[bytes, str]) -> StubResolver:  # noqa: F811
    """DKIM keys and DMARC for the genuine supplier and for the attacker's own domain."""
    records = {}
    for domain in ("trusted-supplier.example", "evil.example"):
        records[(f"s1._domainkey.{domain}", "TXT")] = f"v=DKIM1; k=rsa; p={key[1]}"
        records[(f"_dmarc.{domain}", "TXT")] = "v=DMARC1; p=reject"
    return StubResolver(records)


def invoice(tag: str, address: str) -> bytes:
    return make_mail(sender=f"Trusted Supplier GmbH <{address}>", subject=f"Invoice {tag}",
                     attachments=[(f"invoice-{tag}.pdf", unique_pdf(tag), "application/pdf")]).as_bytes()


def test_display_name_of_an_authenticated_stranger_is_not_the_supplier(
        gateway_factory: Callable[..., Gateway], workdir: Path, key: tuple[bytes, str]) -> None:  # noqa: F811
    (workdir / "rules" / "suppliers.yaml").write_text(RULES)
    gw = gateway_factory()
    gw.service.pipeline.sender_auth.resolver = resolver(key)
    gw.send(signed(key, invoice("attacker", "billing@evil.example"), domain="evil.example"),
            sender="billing@evil.example")
    gw.send(signed(key, invoice("genuine", "billing@trusted-supplier.example"), domain="trusted-supplier.example"),
            sender="billing@trusted-supplier.example")
    attacker, genuine = settled(gw, 2)

    shown = gw.api(f"/api/messages/{attacker['id']}").json()
    assert shown["authentication"]["authenticated"] is True  # evil.example did authenticate
    assert attacker["status"] == "imported" and "rule 'Everything else'" in attacker["reason"]
    explain = {e["rule"]: e["reason"] for e in shown["decision"]["explain"]}
    assert "names no domain" in explain["Trusted by name only"]
    assert "binds to the domain that authenticated (evil.example)" in explain["Trusted by domain"]
    [doc] = gw.store.documents_of(attacker["id"])
    assert doc["company"] is None and "misc" in doc["tags"]

    assert genuine["status"] == "imported" and "rule 'Trusted by domain'" in genuine["reason"]
    [doc] = gw.store.documents_of(genuine["id"])
    assert doc["company"] == "Trusted Supplier GmbH"


def view(name: str, addr: str, authenticated: bool | None) -> MailView:
    return MailView(sender=Address(name, addr), to=(), subject="Invoice", body="", attachments=(), headers={},
                    source="smtp", authenticated=authenticated)


def test_require_authenticated_sender_binds_every_from_too() -> None:
    ruleset, problems = load_rules_text("name: By name\nwhen: {from: Trusted Supplier}\n---\n"
                                        "name: By address\nwhen: {from: billing@trusted.example}\n---\n"
                                        "name: Not the supplier\nwhen: {not: {from: Trusted Supplier}}\n")
    assert ruleset is not None and not problems
    stranger = view("Trusted Supplier", "x@evil.example", True)
    assert ruleset.decide(stranger).rule == "By name"  # without the setting a name is a name
    decision = ruleset.decide(stranger, require_authenticated_sender=True)
    # as documented, inside `not:` the setting means "not an authenticated sender X": true here
    assert decision.rule == "Not the supplier"
    assert "names no domain: with trust.require_authenticated_sender" in decision.explain[0].reason
    genuine = view("Trusted Supplier", "billing@trusted.example", True)
    assert ruleset.decide(genuine, require_authenticated_sender=True).rule == "By address"
    assert ruleset.rules[0].sender_warnings() == []
    assert "when.from: names no domain" in ruleset.rules[0].sender_warnings(True)[0]


def test_nested_from_is_bound_and_glob_domains_bind() -> None:
    ruleset, problems = load_rules_text(
        "name: Nested\nwhen: {authenticated: true, any: [{from: Trusted*}, {subject: never}]}\n---\n"
        "name: Domain glob\nwhen: {authenticated: true, from: \"*@*.trusted.example\"}\n")
    assert ruleset is not None and not problems
    assert ruleset.decide(view("Trusted Supplier", "x@evil.example", True)).rule is None
    assert ruleset.decide(view("Trusted Supplier", "a@mail.trusted.example", True)).rule == "Domain glob"
    assert ruleset.rules[0].name_only_froms == (("when.any[0].from", True),)
    assert ruleset.rules[1].sender_warnings() == []


def test_rules_check_warns_about_a_from_without_a_domain(tmp_path: Path) -> None:
    (tmp_path / "suppliers.yaml").write_text(RULES)
    result = run_cli("rules", "check", str(tmp_path), cwd=tmp_path)
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr
    assert (f"{tmp_path / 'suppliers.yaml'}:1: warning: rule 'Trusted by name only': when.from: names no domain, "
            "so with authenticated: true it never holds") in out
    assert "Trusted by domain" not in out
    assert out.strip().endswith("all valid; 1 warning(s)")
