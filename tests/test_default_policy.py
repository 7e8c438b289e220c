"""With the default configuration, mail that is clearly no invoice is not exported: a newsletter
(List-Id) and a "hello" wait as unmatched with the reason, one click from "import it"; an invoice
PDF from the same senders is exported."""

from __future__ import annotations

from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

import httpx

from conftest import Gateway, make_mail, settled_by_subject, unique_pdf, wait_for
from test_web_pages import Browserless


def newsletter(**kw: object) -> EmailMessage:
    msg = make_mail(sender="Shop News <news@shop.example>", **kw)  # type: ignore[arg-type]
    msg["List-Id"] = "Shop news <news.shop.example>"
    msg["List-Unsubscribe"] = "<mailto:unsubscribe@shop.example>"
    return msg


def test_newsletter_and_hello_wait_an_invoice_from_the_same_senders_is_exported(
        gateway_factory: Callable[..., Gateway], workdir: Path) -> None:
    gw = gateway_factory()  # the default unmatched policy: smtp import
    gw.send(newsletter(subject="Our December deals", body="Big sale!", html="<h1>Big sale</h1><p>Shop now</p>"),
            sender="news@shop.example")
    gw.send(newsletter(subject="Brochure", attachments=[("brochure.pdf", unique_pdf("brochure"), "application/pdf")]),
            sender="news@shop.example")
    gw.send(make_mail(sender="Friend <friend@mail.example>", subject="hello", body="hello"), sender="friend@mail.example")
    gw.send(newsletter(subject="Your invoice 2026-12",
                       attachments=[("invoice-2026-12.pdf", unique_pdf("nl-invoice"), "application/pdf")]),
            sender="news@shop.example")
    gw.send(make_mail(sender="Friend <friend@mail.example>", subject="the bill",
                      attachments=[("rechnung.pdf", unique_pdf("friend-invoice"), "application/pdf")]),
            sender="friend@mail.example")
    by = settled_by_subject(gw, 5)
    for subject in ("Our December deals", "Brochure", "hello"):
        assert by[subject]["status"] == "unmatched", by[subject]
    assert "mailing-list mail (List-Id)" in by["Our December deals"]["reason"]
    assert "brochure.pdf: not recognised as an invoice" in by["Brochure"]["reason"]
    assert "no sign of an invoice" in by["hello"]["reason"]
    assert by["Your invoice 2026-12"]["status"] == "imported"
    assert by["the bill"]["status"] == "imported"
    wait_for(lambda: len(gw.exported_files()) == 2, timeout=20)
    assert sorted(p.name for p in gw.exported_files()) == ["invoice-2026-12.pdf", "rechnung.pdf"]

    # one click from "import it" (and from "make a rule"), with the login and the CSRF token
    browser = Browserless(gw)
    browser.login()
    page = browser.get(f"/messages/{by['hello']['id']}").text
    assert f'action="/messages/{by["hello"]["id"]}/import"' in page and 'href="#make-rule"' in page
    assert browser.post(f"/messages/{by['hello']['id']}/import", token=False).status_code == 403
    browser.post(f"/messages/{by['hello']['id']}/import")
    browser.close()
    wait_for(lambda: gw.store.message(by["hello"]["id"])["status"] == "imported", timeout=30)
    hello = gw.api(f"/api/messages/{by['hello']['id']}").json()
    assert "imported at the request of admin" in hello["reason"] and hello["documents"][0]["origin"] == "body"
    # the API does the same; a message that is not unmatched or ignored is a conflict
    assert gw.api(f"/api/messages/{by['Brochure']['id']}/import", method="POST").status_code == 202
    wait_for(lambda: gw.store.message(by["Brochure"]["id"])["status"] == "imported", timeout=30)
    assert gw.api(f"/api/messages/{by['the bill']['id']}/import", method="POST").status_code == 409
    assert httpx.post(f"http://127.0.0.1:{gw.web_port}/api/messages/1/import").status_code == 401
    wait_for(lambda: len(gw.exported_files()) == 4, timeout=20)
