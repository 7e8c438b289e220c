"""The IBAN guard learns a seller's bank account only from mail authenticated for that seller or
from a person, and keeps flagging until then (issue 14.7). Through the running gateway."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import Gateway, make_mail, run_cli, write_config
from gateway.payment_guard import format_iban, mask_iban, vouched_by
from gateway.pipeline import Pipeline
from gateway.senderauth import StubResolver
from gateway.spool import Spool
from gateway.store import Store
from test_trust_hold import settled
from test_trust_iban import CII, NEW, OLD, feed, pipeline, text_pdf  # noqa: F401  (pipeline is a fixture)
from test_trust_senderauth import key, signed  # noqa: F401  (key is a fixture)
from test_web_pages import Browserless

SUPPLIER = "rechnung@muster-buero.example"
THIRD = "GB82WEST12345698765432"


def start(factory: Callable[..., Gateway], key: tuple[bytes, str]) -> Gateway:  # noqa: F811
    gw = factory()
    records: dict[tuple[str, str], Any] = {}
    for domain in ("muster-buero.example", "evil.example"):  # the attacker authenticates a domain of their own
        records[(f"s1._domainkey.{domain}", "TXT")] = f"v=DKIM1; k=rsa; p={key[1]}"
        records[(f"_dmarc.{domain}", "TXT")] = "v=DMARC1; p=none"
    gw.service.pipeline.sender_auth.resolver = StubResolver(records)
    return gw


class Sender:
    """Sends one invoice at a time and returns its document's IBAN warning ("" when not flagged)."""

    def __init__(self, gw: Gateway, key: tuple[bytes, str]) -> None:  # noqa: F811
        self.gw, self.key, self.n = gw, key, 0

    def send(self, attachment: tuple[str, bytes, str], sender: str = SUPPLIER, sign: str | None = None) -> str:
        self.n += 1
        raw = make_mail(sender=f"Muster <{sender}>", subject=f"Invoice {self.n}", attachments=[attachment]).as_bytes()
        self.gw.send(signed(self.key, raw, domain=sign) if sign else raw, sender=sender)
        row = settled(self.gw, self.n)[-1]
        assert row["status"] == "imported", row["reason"]
        auth = json.loads(row["auth"])
        assert auth["authenticated"] is bool(sign), auth["reason"]
        doc = self.gw.store.documents_of(row["id"])[0]  # the attachment (a bare XML also gets a readable PDF)
        self.last_doc = int(doc["id"])
        return next((w for w in json.loads(doc["warnings"]) if w.startswith("payment details changed")), "")

    def pdf(self, iban: str, **kw: Any) -> str:
        return self.send((f"invoice-{self.n + 1}.pdf", text_pdf(f"Invoice {self.n + 1} IBAN {format_iban(iban)}"),
                          "application/pdf"), **kw)


def test_unauthenticated_mail_never_teaches_the_guard_a_person_does(
        gateway_factory: Callable[..., Gateway], workdir: Path, key: tuple[bytes, str]) -> None:  # noqa: F811
    gw = start(gateway_factory, key)
    s = Sender(gw, key)
    assert s.pdf(OLD, sign="muster-buero.example") == ""  # the supplier, authenticated: learned
    first = s.pdf(NEW)  # the attacker, with the supplier's From but no proof
    second = s.pdf(NEW)
    prefix = f"payment details changed: IBAN {mask_iban(NEW)} was {mask_iban(OLD)}"
    assert [w[:len(prefix)] for w in (first, second)] == [prefix, prefix]  # flagged, and flagged again
    assert all("(last confirmed for domain muster-buero.example in message #1)" in w for w in (first, second))
    attacked = s.last_doc

    # the supplier really changed banks: a person confirms the account after a phone call
    config = write_config(workdir, gw.cfg)
    result = run_cli("--config", str(config), "-q", "confirm-account", str(attacked), "--by", "anna")
    assert result.returncode == 0, result.stderr
    assert f"document {attacked}: {mask_iban(NEW)} confirmed by anna" in result.stdout.decode()
    assert s.pdf(NEW) == ""  # known now, even unauthenticated
    assert mask_iban(NEW) in s.pdf(OLD)  # and the old one is what is new now

    # an authenticated supplier mail with another account: flagged once, then learned
    assert f"IBAN {mask_iban(THIRD)}" in s.pdf(THIRD, sign="muster-buero.example")
    assert s.pdf(THIRD) == ""


def test_an_authenticated_stranger_does_not_teach_the_account_of_a_seller(
        gateway_factory: Callable[..., Gateway], key: tuple[bytes, str]) -> None:  # noqa: F811
    gw = start(gateway_factory, key)
    s = Sender(gw, key)
    n = 0

    def cii(iban: str) -> tuple[str, bytes, str]:
        nonlocal n
        n += 1
        data = CII.replace(OLD.encode(), iban.encode()).replace(b"IG-2024-0042", f"IG-2024-9{n:03d}".encode())
        return f"e-{n}.xml", data, "application/xml"

    assert s.send(cii(OLD), sign="muster-buero.example") == ""  # seller VAT DE123456789 writes from muster-buero
    # the attacker's own domain authenticates, and their e-invoice names the seller's VAT ID
    warnings = [s.send(cii(NEW), sender="billing@evil.example", sign="evil.example") for _ in range(2)]
    assert all(w.startswith(f"payment details changed: IBAN {mask_iban(NEW)} was {mask_iban(OLD)}") for w in warnings)
    assert all("(last confirmed for vat DE123456789 in message #1)" in w for w in warnings)
    assert s.send(cii(OLD), sign="muster-buero.example") == ""

    # the API confirms too; a document without an IBAN has nothing to confirm
    done = gw.api(f"/api/documents/{s.last_doc}/confirm-account", "POST")
    assert done.status_code == 200 and done.json()["confirmed_ibans"] == [mask_iban(OLD)]
    s.send(("notes.pdf", text_pdf("no account here"), "application/pdf"))
    refused = gw.api(f"/api/documents/{s.last_doc}/confirm-account", "POST")
    assert refused.status_code == 409 and "carries no IBAN of a known seller" in refused.json()["error"]

    # the document page's button: the person confirmed the new account by phone (login and CSRF token)
    assert s.send(cii(NEW), sender="billing@evil.example", sign="evil.example").startswith("payment details changed")
    flagged = s.last_doc
    browser = Browserless(gw)
    browser.login()
    assert f'action="/documents/{flagged}/confirm-account"' in browser.get(f"/documents/{flagged}").text
    assert browser.post(f"/documents/{flagged}/confirm-account", token=False).status_code == 403
    page = browser.post(f"/documents/{flagged}/confirm-account", follow_redirects=True).text
    browser.close()
    assert f"Bank account {mask_iban(NEW)} confirmed" in page
    assert s.send(cii(NEW), sender="billing@evil.example", sign="evil.example") == ""


def test_who_speaks_for_a_seller(pipeline: tuple[Pipeline, Spool, Store]) -> None:  # noqa: F811
    _, _, store = pipeline
    feed(pipeline, "a.pdf", text_pdf(f"IBAN {format_iban(OLD)}"), "application/pdf")  # From muster-buero.example
    [mid] = store.message_ids()
    store.record_ibans(mid, [("vat:DE1", OLD, None)])  # as recorded before database version 5: no domain
    guard = pipeline[0].payment_guard
    assert guard.vouched("vat:DE1", mid + 1, "billing.muster-buero.example", True)  # the message's From stands in
    assert not guard.vouched("vat:DE1", mid + 1, "evil.example", True)
    assert not guard.vouched("vat:DE1", mid + 1, "muster-buero.example", False)
    assert guard.vouched("vat:NEW", mid + 1, "evil.example", True)  # a seller never seen takes the domain
    assert not guard.vouched("vat:NEW", mid + 1, "gmail.com", True)  # anyone authenticates at gmail.com
    assert vouched_by({"released_at": "2026-12-01", "released_by": "anna"}) == "released by anna"
    assert vouched_by({"auth": json.dumps({"authenticated": True})}) == "authenticated sender"
    assert vouched_by({"auth": json.dumps({"authenticated": None})}) is None and vouched_by({"auth": "{"}) is None
