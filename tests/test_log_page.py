"""The admin page's log shows refused recipients, documents recognised as already known and
duplicate mail (once only at INFO in the log), from serve and from the worker processes."""

from __future__ import annotations

import smtplib
from collections.abc import Callable

import pytest

from conftest import Gateway, make_mail, unique_pdf, wait_for
from test_web_pages import Browserless


@pytest.mark.parametrize("worker_processes", [False, True])
def test_refused_known_and_duplicate_mail_reach_the_log_page(gateway_factory: Callable[..., Gateway],
                                                             worker_processes: bool) -> None:
    gw = gateway_factory(limits={"worker_processes": worker_processes})
    with smtplib.SMTP("127.0.0.1", gw.smtp_port, timeout=30) as s:
        s.ehlo()
        s.mail("x@outside.example")
        code, _ = s.rcpt("victim@elsewhere.example")
        assert code == 550
    pdf = unique_pdf("log-page")
    gw.send(make_mail(subject="Invoice 1", attachments=[("invoice-1.pdf", pdf, "application/pdf")]))
    same = make_mail(subject="Invoice 2",
                     attachments=[("invoice-2.pdf", unique_pdf("log-2"), "application/pdf")]).as_bytes()
    gw.send(same)
    wait_for(lambda: gw.store.status_counts() == {"imported": 2}, timeout=30)
    gw.send(make_mail(subject="Invoice 1 again, other mail", attachments=[("copy&<b>.pdf", pdf, "application/pdf")]))
    gw.send(same)

    def kinds() -> set[str]:
        return {e["kind"] for e in gw.api("/api/log?limit=100").json()["items"]}

    wait_for(lambda: {"refused", "known", "duplicate"} <= kinds(), timeout=40)
    refused = gw.api("/api/log?kind=refused").json()["items"]
    assert "victim@elsewhere.example" in refused[0]["text"] and refused[0]["source"] == "serve"
    [known] = gw.api("/api/log?kind=known").json()["items"]
    assert "copy&" in known["text"] and "is already known as document" in known["text"]
    assert known["source"].startswith("worker-" if worker_processes else "serve")
    [dup] = gw.api("/api/log?kind=duplicate").json()["items"]
    assert "same message as #" in dup["text"]

    browser = Browserless(gw)
    assert browser.get("/log").status_code == 302  # the login first
    browser.login()
    assert "victim@elsewhere.example" in browser.get("/log?kind=refused").text
    page = browser.get("/log?kind=known").text
    browser.close()
    assert "copy&amp;" in page and "copy&<" not in page  # what senders control is escaped
