"""/metrics: Prometheus text generated from the store and the running parts at scrape time."""

from __future__ import annotations

import smtplib
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from conftest import API_TOKEN, Gateway, base_config, make_mail, unique_pdf, wait_for, wait_port
from dovecot import Dovecot, dovecot_available
from test_web_pages import Browserless, mailbox_gateway, settle

assert dovecot_available(), "dovecot is missing: `make test` installs dovecot-imapd"


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
        assert m[("gateway_mailbox_poll_errors_total", (("kind", "auth"), ("mailbox", "gmail")))] == 0
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


def test_smtp_sessions_are_counted_from_zero(workdir: Path) -> None:
    gw = Gateway(workdir, base_config(workdir))
    gw.service.start()  # not gw.start(): its wait for the SMTP port would be a session
    try:
        wait_port(gw.web_port)
        def sessions() -> float:
            r = httpx.get(f"http://127.0.0.1:{gw.web_port}/metrics", headers={"Authorization": f"Bearer {API_TOKEN}"})
            return _samples(r.text)[("gateway_smtp_sessions_total", ())]

        assert sessions() == 0  # present before the first session, so rate() sees the first one
        with smtplib.SMTP("127.0.0.1", gw.smtp_port) as s:
            s.ehlo()
        wait_for(lambda: sessions() == 1)
    finally:
        gw.stop()


def _invoice(tag: str) -> bytes:
    return make_mail(subject=f"Rechnung {tag}", message_id=f"<{tag}@acme.example>",
                     attachments=[(f"{tag}.pdf", unique_pdf(tag), "application/pdf")]).as_bytes()


def _unstarted_pollers(workdir: Path, dc: Dovecot, boxes: dict[str, list[str]]) -> Gateway:
    """A gateway whose mailboxes (name -> folders, each its own Dovecot user) the test polls itself."""
    mailboxes = []
    for name, folders in boxes.items():
        user = dc.add_user()
        dc.append(user, "INBOX", [_invoice(f"{name}-1")])
        mailboxes.append({"name": name, "host": "127.0.0.1", "port": dc.port, "security": "none",
                          "username": user, "password": dc.users[user], "timeout": "5s", "folders": folders})
    gw = Gateway(workdir, base_config(workdir, mailboxes=mailboxes))
    svc = gw.service
    from gateway.sources.imap import MailboxPoller

    # pollers that are not started: no scheduled poll adds to what the test counts
    svc._start_mailboxes = lambda: svc.pollers.update(  # type: ignore[method-assign]
        {m.name: MailboxPoller(m, store=svc.store, spool=svc.spool, settings=svc.settings, rules=svc.rules)
         for m in svc.settings.mailboxes})
    return gw.start()


def test_poll_errors_are_a_running_count_that_success_does_not_reset(workdir: Path) -> None:
    with Dovecot() as dc:
        gw = _unstarted_pollers(workdir, dc, {"home": ["INBOX"]})
        svc = gw.service
        try:
            poller = svc.pollers["home"]

            def metrics() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
                return _samples(gw.api("/metrics").text)

            errors = ("gateway_mailbox_poll_errors_total", (("kind", "unreachable"), ("mailbox", "home")))
            in_a_row = ("gateway_mailbox_consecutive_failures", (("mailbox", "home"),))
            assert metrics()[errors] == 0
            dc.stop()
            assert poller.poll().error is not None
            assert poller.poll().error is not None
            m = metrics()
            assert m[errors] == 2 and m[in_a_row] == 2
            dc.start()
            assert poller.poll().error is None
            m = metrics()
            assert m[errors] == 2 and m[in_a_row] == 0
            assert m[("gateway_mailbox_up", (("mailbox", "home"),))] == 1
            dc.stop()
            assert poller.poll().error is not None
            m = metrics()
            assert m[errors] == 3 and m[in_a_row] == 1
            assert sum(v for (name, labels), v in m.items()
                       if name == "gateway_mailbox_poll_errors_total" and ("mailbox", "home") in labels) == 3
            assert gw.api("/api/mailboxes/home").json()["poll_errors"] == {"unreachable": 3}
        finally:
            gw.stop()


def test_each_folder_shows_its_last_poll_counts_and_error(workdir: Path) -> None:
    with Dovecot() as dc:
        gw = _unstarted_pollers(workdir, dc, {"split": ["INBOX", "Rechnungen"]})
        try:
            poll = gw.service.pollers["split"].poll()
            assert poll.error is not None and poll.error.kind == "folder_missing"
            box = gw.api("/api/mailboxes/split").json()
            folders = {f["folder"]: f for f in box["folder_states"]}
            assert set(folders) == {"INBOX", "Rechnungen"}
            inbox, missing = folders["INBOX"], folders["Rechnungen"]
            assert inbox["last_error"] is None and inbox["last_success"] == inbox["last_poll"] is not None
            assert inbox["counts"] == {"scanned": 1, "downloaded": 1, "skipped": 0, "known": 0}
            assert inbox["last_uid"] == 1
            assert missing["error_kind"] == "folder_missing" and "Rechnungen" in missing["last_error"]
            assert missing["last_success"] is None
            assert box["state"]["stats"]["per_folder"]["INBOX"]["downloaded"] == 1
            c = Browserless(gw)
            c.login()
            page = c.get("/mailboxes/split").text
            folders_table = page[page.index("<h2>Folders</h2>"):page.index("Mail from this mailbox")]
            assert "INBOX" in folders_table and "Rechnungen" in folders_table
            assert "folder_missing: folder &#39;Rechnungen&#39; does not exist" in folders_table
            c.close()
            # a second poll finds nothing new in INBOX: its counts are those of the last poll
            gw.service.pollers["split"].poll()
            inbox = {f["folder"]: f for f in gw.api("/api/mailboxes/split").json()["folder_states"]}["INBOX"]
            assert inbox["counts"]["downloaded"] == 0 and inbox["last_error"] is None
        finally:
            gw.stop()
