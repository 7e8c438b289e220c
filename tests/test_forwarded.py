"""forwarded_from: rules on the original sender of what people forward, as an attached message
or as a header block quoted in the body, in the clients' languages."""

from __future__ import annotations

import time
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

import pytest

from conftest import Gateway, make_mail, settled_by_subject, unique_pdf, wait_for
from gateway.forwarded import sender_in_text
from gateway.models import Address

RULE = """\
name: Electricity I forward
when:
  from: me@example.com
  forwarded_from: "@stadtwerke.example"
assign: {company: "Stadtwerke ({forwarded_from_name})", tags: [forwarded-by-me]}
"""


@pytest.mark.parametrize("text, expected", [
    ("Hi\n\n---------- Forwarded message ---------\nFrom: ACME Billing <billing@acme.example>\nDate: Mon\n",
     Address("ACME Billing", "billing@acme.example")),
    ("FYI\n\n-----Original Message-----\nFrom: Billing [mailto:billing@acme.example]\nSent: Monday\n",
     Address("Billing", "billing@acme.example")),
    ("Begin forwarded message:\n\n> From: \"ACME\" <billing@acme.example>\n> Subject: Invoice\n",
     Address("ACME", "billing@acme.example")),
    ("-------- Weitergeleitete Nachricht --------\nBetreff: Rechnung\nDatum: heute\n"
     "Von: Stadtwerke <rechnung@stadtwerke.example>\n", Address("Stadtwerke", "rechnung@stadtwerke.example")),
    ("-------- Message transféré --------\nSujet : Facture\nDe : EDF <factures@edf.example>\n",
     Address("EDF", "factures@edf.example")),
    ("---------- Messaggio inoltrato ---------\nDa: Enel <bollette@enel.example>\n",
     Address("Enel", "bollette@enel.example")),
    ("________________________________\nFrom: Contoso Billing <billing@contoso.example>\nSent: Monday\n",
     Address("Contoso Billing", "billing@contoso.example")),
    ("Anfang der weitergeleiteten Nachricht:\n\nVon: shop@shop.example\n", Address("", "shop@shop.example")),
    ("From: someone@x.example wrote that the invoice is late", None),  # no forwarding marker
    ("---------- Forwarded message ---------\n" + "line\n" * 30 + "From: late@x.example\n", None),
])
def test_the_forwarded_header_block_of_each_client(text: str, expected: Address | None) -> None:
    assert sender_in_text(text) == expected


@pytest.mark.parametrize("line", ["La de da de da 1234\n", "INVOICE 2026 TOTAL 100.00 EUR\n", "X" * 78 + "\n"])
def test_a_long_body_without_a_marker_is_searched_in_milliseconds(line: str) -> None:
    # a plain-text body of such lines cost seconds of a worker's CPU per mail (the marker's
    # leading character class took "*-_" for a range over digits and capitals)
    text = line * (100_000 // len(line))
    t0 = time.perf_counter()
    assert sender_in_text(text) is None
    assert sender_in_text("Hi\n\n" + line * 100 + "-----Original Message-----\nFrom: a@b.example\n") == Address("", "a@b.example")
    assert time.perf_counter() - t0 < 0.2


def forwarded_as_attachment(pdf: bytes) -> EmailMessage:
    inner = make_mail(sender="Stadtwerke Kundenservice <rechnung@stadtwerke.example>", subject="Ihre Rechnung",
                      attachments=[("rechnung-2026-11.pdf", pdf, "application/pdf")])
    outer = make_mail(sender="Me <me@example.com>", subject="Fwd: Ihre Rechnung", body="see attached")
    outer.add_attachment(inner)
    return outer


def test_rules_match_the_original_sender_of_forwarded_mail(gateway_factory: Callable[..., Gateway],
                                                           workdir: Path) -> None:
    (workdir / "rules" / "forwarded.yaml").write_text(RULE)
    gw = gateway_factory()
    gw.send(forwarded_as_attachment(unique_pdf("fwd-attached")), sender="me@example.com")
    gw.send(make_mail(sender="Me <me@example.com>", subject="Fwd: Rechnung Dezember",
                      body="---------- Forwarded message ---------\n"
                           "From: Stadtwerke Kundenservice <rechnung@stadtwerke.example>\n"
                           "Date: Mon, 7 Dec 2026\nSubject: Rechnung Dezember\n\nAnbei Ihre Rechnung.",
                      attachments=[("rechnung-2026-12.pdf", unique_pdf("fwd-inline"), "application/pdf")]),
            sender="me@example.com")
    gw.send(make_mail(sender="Stadtwerke <rechnung@stadtwerke.example>", subject="Rechnung direkt",
                      attachments=[("direkt.pdf", unique_pdf("direct"), "application/pdf")]),
            sender="rechnung@stadtwerke.example")
    by_subject = settled_by_subject(gw, 3)
    for subject in ("Fwd: Ihre Rechnung", "Fwd: Rechnung Dezember"):
        msg = gw.api(f"/api/messages/{by_subject[subject]['id']}").json()
        assert msg["status"] == "imported" and msg["decision"]["rule"] == "Electricity I forward", msg["reason"]
        [doc] = msg["documents"]
        assert doc["company"] == "Stadtwerke (Stadtwerke Kundenservice)" and "forwarded-by-me" in doc["tags"]
    direct = gw.api(f"/api/messages/{by_subject['Rechnung direkt']['id']}").json()
    assert direct["decision"]["rule"] is None  # not forwarded by me: the rule does not take it
    [why] = [t["reason"] for t in direct["decision"]["explain"] if t["rule"] == "Electricity I forward"]
    assert why.startswith("from:")
