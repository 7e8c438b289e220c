"""/metrics: Prometheus text generated from the store and the running parts at scrape time."""

from __future__ import annotations

import smtplib
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from conftest import API_TOKEN, make_mail, unique_pdf
from test_web_pages import Browserless, mailbox_gateway, settle


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_need_the_token_or_a_session_and_report_the_store(workdir: Path) -> None:
    gw = mailbox_gateway(workdir)
    try:
        base = f"http://127.0.0.1:{gw.web_port}"
        assert httpx.get(base + "/metrics").status_code == 401
        gw.send(make_mail(subject="Invoice 1", attachments=[("a.pdf", unique_pdf("m1"), "application/pdf")]))
        gw.send(make_mail(subject="Invoice 2", attachments=[("b.pdf", unique_pdf("m2"), "application/pdf")]))
        with smtplib.SMTP("127.0.0.1", gw.smtp_port) as s:
            s.ehlo()
            s.mail("x@example.com")
            assert s.rcpt("nobody@elsewhere.example")[0] == 550
        settle(gw, 2)
        r = httpx.get(base + "/metrics", headers={"Authorization": f"Bearer {API_TOKEN}"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        m = _samples(r.text)
        assert m[("gateway_messages", (("status", "imported"),))] == 2
        assert m[("gateway_messages", (("status", "quarantined"),))] == 0
        assert m[("gateway_documents", ())] == 2
        assert m[("gateway_exports", (("state", "pending"), ("target", "nas")))] + \
            m[("gateway_exports", (("state", "delivered"), ("target", "nas")))] == 2
        assert m[("gateway_smtp_events_total", (("event", "accepted"),))] == 2
        assert m[("gateway_smtp_events_total", (("event", "refused_rcpt"),))] == 1
        assert m[("gateway_smtp_refusals_total", ())] == 1
        assert m[("gateway_processing_latency_seconds_count", ())] == 2
        assert m[("gateway_processing_latency_seconds_sum", ())] > 0
        assert m[("gateway_oldest_waiting_message_age_seconds", ())] == 0
        assert m[("gateway_up", (("part", "smtp"),))] == 1 and m[("gateway_up", (("part", "store"),))] == 1
        # mailboxes: the failing one and the one not polled yet
        assert m[("gateway_mailbox_up", (("mailbox", "office"),))] == 0
        assert m[("gateway_mailbox_consecutive_failures", (("mailbox", "office"),))] == 3
        assert m[("gateway_mailbox_poll_errors_total", (("kind", "auth"), ("mailbox", "office")))] == 3
        assert m[("gateway_mailbox_up", (("mailbox", "gmail"),))] == 0
        gw.service.pollers["gmail"].fetch_now()
        c = Browserless(gw)
        c.login()
        m = _samples(c.get("/metrics").text)  # the admin's session works too
        assert m[("gateway_mailbox_up", (("mailbox", "gmail"),))] == 1
        assert m[("gateway_mailbox_last_success_timestamp_seconds", (("mailbox", "gmail"),))] > 1.7e9
        assert m[("gateway_mailbox_stat", (("mailbox", "gmail"), ("stat", "fetched")))] == 1
        assert m[("gateway_rules", ())] == 0 and m[("gateway_rules_problems", ())] == 0
        c.close()
        # generated at scrape time: a stopped SMTP server shows at once
        gw.service.smtp.stop()
        m = _samples(httpx.get(base + "/metrics", headers={"Authorization": f"Bearer {API_TOKEN}"}).text)
        assert m[("gateway_up", (("part", "smtp"),))] == 0
    finally:
        gw.stop()
