"""Sender authentication of mail fetched from a real Dovecot: only the topmost Authentication-Results
header counts, so a forged DKIM pass under the provider's real fail cannot satisfy `authenticated: true`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from email import policy
from pathlib import Path
from typing import Any

import pytest

from conftest import Gateway, make_mail, unique_pdf, wait_for
from dovecot import Dovecot, dovecot_available

assert dovecot_available(), "dovecot is missing: `make test` installs dovecot-imapd"

RULES = """\
name: Supplier
when: {from: billing@supplier.example, authenticated: true}
assign: {company: Supplier GmbH}
---
name: Everything else
priority: 200
when: {}
assign: {tags: [misc]}
"""
REAL = "mx.google.com;\r\n       spf=fail smtp.mailfrom=x@evil.example;\r\n       dmarc=fail header.from=supplier.example"
GENUINE = ("mx.google.com;\r\n       dkim=pass header.i=@supplier.example header.s=s1;\r\n"
           "       spf=pass smtp.mailfrom=billing@supplier.example;\r\n       dmarc=pass header.from=supplier.example")
FORGED = "mx.google.com; dkim=pass header.d=supplier.example header.s=s1"


@pytest.fixture(scope="module")
def dovecot() -> Iterator[Dovecot]:
    with Dovecot() as dc:
        yield dc


def invoice(tag: str, *authentication_results: str) -> bytes:
    msg = make_mail(sender="Supplier <billing@supplier.example>", subject=f"Invoice {tag}",
                    message_id=f"<{tag}@supplier.example>",
                    attachments=[(f"invoice-{tag}.pdf", unique_pdf(tag), "application/pdf")])
    head = "".join(f"Authentication-Results: {v}\r\n" for v in authentication_results)
    return head.encode() + msg.as_bytes(policy=policy.SMTP)


def test_stacked_headers_do_not_authenticate_an_imap_mail(dovecot: Dovecot, workdir: Path,
                                                          gateway_factory: Callable[..., Gateway]) -> None:
    user = dovecot.add_user()
    # the provider's real header on top (fail), the sender's forged DKIM pass below it
    dovecot.append(user, "INBOX", [invoice("stacked", REAL, FORGED), invoice("genuine", GENUINE)])
    (workdir / "rules" / "suppliers.yaml").write_text(RULES)
    box: dict[str, Any] = {"name": "gmail", "provider": "gmail", "host": "127.0.0.1", "port": dovecot.port,
                           "security": "none", "username": user, "password": dovecot.users[user],
                           "timeout": "10s"}
    gw = gateway_factory(mailboxes=[box])
    rows = wait_for(lambda: (r := gw.store.list_messages()[0]) and len(r) == 2
                    and all(m["status"] != "received" for m in r) and r, timeout=30)
    by_subject = {m["subject"]: m for m in rows}
    stacked, genuine = by_subject["Invoice stacked"], by_subject["Invoice genuine"]

    assert stacked["status"] == "suspicious"
    assert "claims to be from billing@supplier.example, the sender of rule 'Supplier'" in stacked["reason"]
    assert "not authenticated according to mx.google.com" in stacked["reason"]
    api = gw.api(f"/api/messages/{stacked['id']}").json()
    assert api["status"] == "suspicious"
    assert api["authentication"]["authenticated"] is False and api["authentication"]["dkim"] == []
    assert gw.store.documents_of(stacked["id"]) == []

    # the control: the provider's own pass is believed, and only that mail is exported
    assert genuine["status"] == "imported" and "Supplier" in genuine["reason"]
    files = wait_for(lambda: (f := gw.exported_files()) and f, timeout=15)
    assert [f.name for f in files] == ["invoice-genuine.pdf"]
