"""Linked mailboxes against a real Dovecot: import once, look before downloading, after_import, resume, UIDVALIDITY."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Iterator
from email import policy
from pathlib import Path
from typing import Any

import pytest

from conftest import base_config, make_mail, unique_pdf, wait_for
from dovecot import Dovecot, dovecot_available

assert dovecot_available(), "dovecot is missing: `make test` installs dovecot-imapd"


@pytest.fixture(scope="module")
def dovecot() -> Iterator[Dovecot]:
    """One server for the module; every test uses its own user."""
    with Dovecot() as dc:
        yield dc


def invoice(n: int | str, *, folder_tag: str = "", **kw: Any) -> bytes:
    """A mail with a PDF the IMAP `recognize` policy imports (the file name says Rechnung)."""
    return make_mail(subject=f"Ihre Rechnung {n}", message_id=f"<inv-{n}{folder_tag}@acme.example>",
                     attachments=[(f"Rechnung_{n}.pdf", unique_pdf(f"inv-{n}{folder_tag}"), "application/pdf")],
                     **kw).as_bytes(policy=policy.SMTP)


def plain(n: int | str) -> bytes:
    """A mail without anything that could be a document."""
    return make_mail(subject=f"Lunch {n}?", body="See you at noon. " * 50,
                     message_id=f"<plain-{n}@friends.example>").as_bytes(policy=policy.SMTP)


def newsletter(n: int | str) -> bytes:
    """An HTML newsletter with an inline picture (a named part, but shown inline)."""
    m = make_mail(subject=f"Deals of week {n}", body="Deals", html="<p>Deals <img src='cid:logo'></p>",
                  message_id=f"<news-{n}@shop.example>")
    m.get_payload()[1].add_related(b"\x89PNG\r\n\x1a\n" + b"x" * 4000, maintype="image", subtype="png",
                                   cid="<logo>", filename="logo.png", disposition="inline")
    return m.as_bytes(policy=policy.SMTP)


def holiday_photo(n: int | str) -> bytes:
    """A photo attached (a named part, a picture: it can never be a document)."""
    return make_mail(subject=f"Beach {n}", body="Look!", message_id=f"<beach-{n}@friends.example>",
                     attachments=[(f"IMG_{n}.jpg", b"\xff\xd8\xff\xe0" + b"j" * 20000, "image/jpeg")]
                     ).as_bytes(policy=policy.SMTP)


def photo_pdf(n: int | str) -> bytes:
    """A PDF that is no invoice: downloaded (it could be), processed, not imported."""
    return make_mail(subject=f"Holiday {n}", body="Pictures from the trip.", message_id=f"<photo-{n}@friends.example>",
                     attachments=[(f"trip_{n}.pdf", unique_pdf(f"trip-{n}"), "application/pdf")]
                     ).as_bytes(policy=policy.SMTP)


def mailbox_cfg(dc: Dovecot, user: str, **kw: Any) -> dict[str, Any]:
    """A mailboxes: entry for a Dovecot user (plain text on loopback)."""
    cfg: dict[str, Any] = {"name": kw.pop("name", "box"), "host": "127.0.0.1", "port": dc.port, "security": "none",
                           "username": user, "password": dc.users.get(user, "secret"), "timeout": "10s"}
    cfg.update(kw)
    return cfg


class Rig:
    """Settings, store, spool and pipeline of one gateway, with pollers built on them."""

    def __init__(self, workdir: Path, mailboxes: list[dict[str, Any]], **overrides: Any) -> None:
        from gateway.config import parse_settings
        from gateway.pipeline import Pipeline, RulesState
        from gateway.spool import Spool
        from gateway.store import Store

        cfg = base_config(workdir, mailboxes=mailboxes, **overrides)
        self.settings = parse_settings(cfg, base=workdir)
        self.store = Store(self.settings.data_dir)
        self.spool = Spool(self.store)
        self.rules = RulesState()
        self.reload_rules()
        self.pipeline = Pipeline(self.settings, self.store, self.rules)

    def reload_rules(self) -> None:
        from gateway.rules import load_rules

        ruleset, problems = load_rules(self.settings.rules_dir)
        assert not problems, problems
        self.rules.ruleset = ruleset

    def poller(self, name: str = "box", **kw: Any) -> Any:
        from gateway.sources.imap import MailboxPoller

        kw.setdefault("process", lambda ids: self.pipeline.run_pending())
        return MailboxPoller(self.settings.mailbox(name), store=self.store, spool=self.spool,
                             settings=self.settings, rules=self.rules, **kw)

    def docs(self) -> list[dict[str, Any]]:
        return self.store.list_documents(limit=1000, archived=None)[0]

    def messages(self) -> list[dict[str, Any]]:
        return self.store.list_messages(limit=10000)[0]


def snapshot(dc: Dovecot, user: str) -> dict[str, Any]:
    """Every folder with its UIDs and flags, read with EXAMINE (changes nothing)."""
    c = dc.client(user)
    try:
        out: dict[str, Any] = {}
        for _, _, name in c.list_folders():
            info = c.select_folder(name, readonly=True)
            uids = c.search(["ALL"])
            flags = {u: tuple(sorted(f for f in fl if f != b"\\Recent")) for u, fl in c.get_flags(uids).items()}
            out[name] = (info[b"UIDVALIDITY"], flags)
        return out
    finally:
        c.logout()


# -- the basic promise ----------------------------------------------------------------------------------


def test_fetch_imports_every_invoice_once_and_leaves_the_mailbox_unchanged(dovecot: Dovecot, workdir: Path) -> None:
    from gateway.sources.imap import fetch_command

    user = dovecot.add_user()
    dovecot.append(user, "INBOX", [invoice(1), plain(1), invoice(2), newsletter(1), invoice(3)])
    dovecot.append(user, "Invoices", [invoice(4), plain(2), invoice(5)])
    before = snapshot(dovecot, user)
    rig = Rig(workdir, [mailbox_cfg(dovecot, user, folders=["INBOX", "Invoices"])])
    lines: list[str] = []

    assert fetch_command(rig.settings, [], None, echo=lines.append, tty=False) == 0
    docs = rig.docs()
    assert sorted(d["filename"] for d in docs) == [f"Rechnung_{i}.pdf" for i in range(1, 6)]
    msgs = rig.messages()
    assert len(msgs) == 5 and {m["status"] for m in msgs} == {"imported"}
    assert all(m["source"] == "imap:box" for m in msgs)
    origins = sorted(m["origin"] for m in msgs)
    assert [o.split("/")[0] for o in origins] == ["INBOX"] * 3 + ["Invoices"] * 2
    summary = next(line for line in lines if line.startswith("box:"))
    assert "8 looked at" in summary and "5 downloaded" in summary and "3 not downloaded" in summary
    assert "5 imported" in summary
    stats = rig.store.mailbox_status("box")
    assert stats["last_success"] and stats["failures"] == 0 and stats["last_error"] is None
    assert snapshot(dovecot, user) == before  # after_import none: not a flag, not a folder changed

    # nothing new: nothing downloaded, nothing imported
    lines.clear()
    assert fetch_command(rig.settings, [], None, echo=lines.append, tty=False) == 0
    assert "0 downloaded" in lines[-1] and len(rig.docs()) == 5 and len(rig.messages()) == 5

    # one new mail: exactly one new document
    dovecot.append(user, "Invoices", [invoice(6)])
    assert fetch_command(rig.settings, ["box"], None, echo=lines.append, tty=False) == 0
    assert len(rig.docs()) == 6 and len(rig.messages()) == 6
    assert snapshot(dovecot, user)["INBOX"] == before["INBOX"]


def test_skipped_mail_is_not_downloaded_and_bytes_saved_are_reported(dovecot: Dovecot, workdir: Path) -> None:
    user = dovecot.add_user()
    dovecot.append(user, "INBOX", [newsletter(1), plain(1), invoice(1), holiday_photo(1)])
    rig = Rig(workdir, [mailbox_cfg(dovecot, user)])
    poller = rig.poller()
    sessions, sent_before = dovecot.logins(user), dovecot.bytes_sent(user)
    result = poller.poll()
    assert result.error is None
    assert (result.scanned, result.downloaded, result.skipped) == (4, 1, 3)
    assert result.bytes_skipped > 6000 + 26000 and result.bytes_downloaded == rig.messages()[0]["size"]
    uidvalidity = rig.store.imap_folder("box", "INBOX")["uidvalidity"]
    assert rig.store.imap_uids_in_state("box", "INBOX", uidvalidity, "skipped") == [1, 2, 4]
    # what the server sent (its own count): the one mail plus metadata, far less than the skipped mail
    wait_for(lambda: dovecot.logins(user) > sessions)
    sent = dovecot.bytes_sent(user) - sent_before
    assert result.bytes_downloaded < sent < result.bytes_downloaded + result.bytes_skipped / 2
    again = poller.poll()
    assert (again.scanned, again.downloaded) == (0, 0)


def test_star_takes_every_folder_but_trash_spam_drafts_and_sent(dovecot: Dovecot, workdir: Path) -> None:
    user = dovecot.add_user()
    dovecot.append(user, "INBOX", [invoice("a")])
    dovecot.append(user, "Suppliers/Acme", [invoice("b")])
    for special in ("Trash", "Junk", "Drafts", "Sent"):
        dovecot.append(user, special, [invoice(f"in-{special}")])
    rig = Rig(workdir, [mailbox_cfg(dovecot, user, folders="*")])
    result = rig.poller().poll()
    assert result.error is None
    assert sorted(result.folders) == ["INBOX", "Suppliers/Acme"]
    assert sorted(d["filename"] for d in rig.docs()) == ["Rechnung_a.pdf", "Rechnung_b.pdf"]


def test_a_missing_folder_is_named_and_the_others_still_import(dovecot: Dovecot, workdir: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    user = dovecot.add_user()
    dovecot.append(user, "INBOX", [invoice(1)])
    rig = Rig(workdir, [mailbox_cfg(dovecot, user, folders=["INBOX", "Rechnungen"])])
    poller = rig.poller()
    result = poller.poll()
    assert result.error is not None and result.error.kind == "folder_missing"
    assert "'Rechnungen' does not exist" in str(result.error) and "INBOX" in (result.error.hint or "")
    assert len(rig.docs()) == 1
    status = rig.store.mailbox_status("box")
    assert status["error_kind"] == "folder_missing" and status["failures"] == 1

    # the user creates the folder: its mail is read as a new folder's, no "UIDVALIDITY changed"
    dovecot.append(user, "Rechnungen", [invoice(2)])
    with caplog.at_level(logging.INFO, logger="gateway"):
        again = poller.poll()
    assert again.error is None and len(rig.docs()) == 2
    assert "UIDVALIDITY changed" not in caplog.text


# -- after_import ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["seen", "flag", "move:Done"])
def test_after_import_touches_only_imported_mail_and_only_after_the_import(
        dovecot: Dovecot, workdir: Path, action: str) -> None:
    user = dovecot.add_user()
    dovecot.append(user, "INBOX", [invoice(1), photo_pdf(1), plain(1), invoice(2)])
    before = snapshot(dovecot, user)
    rig = Rig(workdir, [mailbox_cfg(dovecot, user, after_import=action)])

    # the mail is spooled but not processed (a crash before the pipeline ran): the mailbox stays as it was
    first = rig.poller(process=lambda ids: None).poll()
    assert first.error is None and first.downloaded == 3 and first.acted == 0
    assert set(first.statuses) == {"received"}
    assert snapshot(dovecot, user) == before

    seen_at_processing: list[Any] = []

    def process(ids: list[int]) -> None:
        seen_at_processing.append(snapshot(dovecot, user))
        rig.pipeline.run_pending()

    second = rig.poller(process=process).poll()
    assert second.error is None and second.downloaded == 0
    assert seen_at_processing == [before]  # nothing was touched before the import was done
    statuses = {m["origin"].rsplit("/", 1)[1]: m["status"] for m in rig.messages()}
    assert statuses == {"1": "imported", "2": "unmatched", "4": "imported"}
    assert second.acted == 2

    after = snapshot(dovecot, user)
    inbox = after["INBOX"][1]
    if action == "move:Done":
        assert sorted(inbox) == [2, 3]  # the unmatched PDF and the plain mail stay
        assert len(after["Done"][1]) == 2
        assert all(flags == () for flags in inbox.values())
    else:
        flag = b"\\Seen" if action == "seen" else b"\\Flagged"
        assert inbox == {1: (flag,), 2: (), 3: (), 4: (flag,)}
    # a later poll does not act again, nor on anything else
    third = rig.poller().poll()
    assert third.error is None and third.acted == 0 and snapshot(dovecot, user) == after


# -- interruptions and resets -------------------------------------------------------------------------------


def test_dovecot_stopped_mid_fetch_the_next_fetch_finishes_without_loss_or_doubles(workdir: Path) -> None:
    n = 60
    with Dovecot() as dc:
        user = dc.add_user()
        dc.append(user, "INBOX", [invoice(i) for i in range(n)] + [plain(i) for i in range(5)])
        rig = Rig(workdir, [mailbox_cfg(dc, user, timeout="5s")])
        stopped = threading.Event()

        def progress(folder: str, done: int, total: int, result: Any) -> None:
            if result.downloaded >= 15 and not stopped.is_set():
                stopped.set()
                dc.stop()  # the server goes away between two downloads of the poll

        first = rig.poller().poll(progress=progress)
        assert stopped.is_set()
        assert first.error is not None and first.error.kind in ("connection", "unreachable", "timeout")
        assert 15 <= first.downloaded < n
        rig.pipeline.run_pending()
        status = rig.store.mailbox_status("box")
        assert status["failures"] == 1 and status["hint"]

        dc.start()
        second = rig.poller().poll()
        assert second.error is None
        assert first.downloaded + second.downloaded == n
        docs = rig.docs()
        assert len(docs) == n and len({d["sha256"] for d in docs}) == n
        msgs = rig.messages()
        assert len(msgs) == n and {m["status"] for m in msgs} == {"imported"}
        assert len({m["origin"] for m in msgs}) == n


def test_mail_spooled_but_not_yet_recorded_is_not_fetched_again(dovecot: Dovecot, workdir: Path) -> None:
    """The process dies between Spool.accept and recording the UIDs: the next poll finds them by origin."""
    from gateway.store import Store

    class DyingStore(Store):
        """Dies (once) at the moment the poller records what it spooled."""

        died = False

        def mark_imap_spooled(self, *args: Any, **kw: Any) -> None:
            if not self.died:
                self.died = True
                raise SystemExit("killed")
            super().mark_imap_spooled(*args, **kw)

    user = dovecot.add_user()
    dovecot.append(user, "INBOX", [invoice(i, folder_tag="-crash") for i in range(30)])
    rig = Rig(workdir, [mailbox_cfg(dovecot, user)])
    rig.store = DyingStore(rig.settings.data_dir)
    with pytest.raises(SystemExit):
        rig.poller().poll()
    spooled_before = len(rig.messages())
    assert 0 < spooled_before < 30  # the first download batch reached the spool, no UID was recorded

    result = rig.poller().poll()
    assert result.error is None and result.downloaded == 30 - spooled_before
    rig.pipeline.run_pending()
    msgs = rig.messages()
    assert len(msgs) == 30 and {m["status"] for m in msgs} == {"imported"} and len(rig.docs()) == 30


def test_uidvalidity_reset_rescans_without_duplicates(dovecot: Dovecot, workdir: Path) -> None:
    user = dovecot.add_user()
    mails = [invoice(i, folder_tag="-r") for i in range(4)] + [plain("r")]
    dovecot.append(user, "Invoices", mails)
    rig = Rig(workdir, [mailbox_cfg(dovecot, user, folders=["Invoices"])])
    poller = rig.poller()
    assert poller.poll().downloaded == 4
    old = rig.store.imap_folder("box", "Invoices")["uidvalidity"]

    c = dovecot.client(user)
    c.delete_folder("Invoices")
    c.create_folder("Invoices")
    for m in mails:
        c.append("Invoices", m)
    c.logout()

    result = poller.poll()
    assert result.error is None
    assert rig.store.imap_folder("box", "Invoices")["uidvalidity"] != old
    assert result.scanned == 5 and result.downloaded == 0 and result.known == 4
    assert len(rig.docs()) == 4 and len(rig.messages()) == 4

    dovecot.append(user, "Invoices", [invoice("new", folder_tag="-r")])
    assert poller.poll().downloaded == 1 and len(rig.docs()) == 5


# -- rules decide what is worth downloading ---------------------------------------------------------------------


def test_a_body_rule_downloads_its_senders_mail_and_skipped_mail_is_revisited(dovecot: Dovecot, workdir: Path) -> None:
    user = dovecot.add_user()
    receipt = make_mail(sender="Cloudhost <billing@cloudhost.example>", subject="Receipt #1234",
                        body="You paid 12.00 EUR.", message_id="<r1234@cloudhost.example>").as_bytes(policy=policy.SMTP)
    dovecot.append(user, "INBOX", [receipt, plain(1)])
    rig = Rig(workdir, [mailbox_cfg(dovecot, user)])
    first = rig.poller().poll()
    assert (first.downloaded, first.skipped) == (0, 2)  # no rule wants the body: nothing can come of them

    (rig.settings.rules_dir / "cloud.yaml").write_text(
        'name: Cloud receipts\nwhen:\n  from: "@cloudhost.example"\nimport: body\n')
    rig.reload_rules()
    second = rig.poller().poll()
    assert second.error is None and second.downloaded == 1 and second.imported == 1
    [doc] = rig.docs()
    assert doc["origin"] == "body"
    third = rig.poller().poll()
    assert third.downloaded == 0 and third.scanned == 0


def test_download_policy_decisions() -> None:
    from gateway.rules import load_rules_text
    from gateway.sources.imap.scan import MailMeta, Part, download_policy

    def meta(sender: str, *parts: Part) -> MailMeta:
        return MailMeta(uid=1, size=100, message_id="x", sender=sender, subject="", parts=parts)

    text = Part("text/plain", None, None)
    pic = Part("image/png", "logo.png", "inline")
    policy_ = download_policy(None, "recognize")
    assert policy_.reason(meta("a@b.example", text, Part("application/pdf", None, "attachment")))
    assert policy_.reason(meta("a@b.example", text, Part("application/octet-stream", None, None)))
    assert policy_.reason(meta("a@b.example", text, Part("text/xml", None, None)))
    assert policy_.reason(meta("a@b.example", text, Part("message/rfc822", None, "attachment")))
    assert policy_.reason(meta("a@b.example", text, Part("image/png", "invoice.pdf", "inline")))
    assert policy_.reason(meta("a@b.example", text, Part("image/pdf", "scan", "attachment")))  # mislabelled
    assert policy_.reason(meta("a@b.example", text, Part("application/vnd.ms-excel", "list.xls", "attachment")))
    # a photo attached is a picture: never a PDF or XML document, never downloaded for one
    assert not policy_.reason(meta("a@b.example", text, Part("image/jpeg", "IMG_0042.JPG", "attachment")))
    assert not policy_.reason(meta("a@b.example", text, Part("video/mp4", "clip.mp4", "attachment")))
    assert not policy_.reason(meta("a@b.example", text, pic))
    assert not policy_.reason(meta("a@b.example", text))
    assert download_policy(None, "import").reason(meta("a@b.example", text))

    rules, problems = load_rules_text(
        'name: body\nwhen: {from: "@*.cloud.example"}\nimport: body\n---\n'
        'name: logos\nwhen: {from: x@y.example}\nattachments: "*.png"\n')
    assert rules is not None, problems
    p = download_policy(rules, "recognize")
    assert p.reason(meta("billing@eu.cloud.example", text))
    assert not p.reason(meta("billing@cloud.example.org", text))
    assert p.reason(meta("a@b.example", text, pic))  # a rule picks attachments by name
    anyone = download_policy(load_rules_text('name: b\nwhen: {subject: receipt}\nimport: both\n')[0], "recognize")
    assert anyone.everything and anyone.fingerprint != p.fingerprint


# -- schedule windows --------------------------------------------------------------------------------------------


def test_no_scheduled_poll_outside_the_window_but_fetch_now_runs(dovecot: Dovecot, workdir: Path) -> None:
    from zoneinfo import ZoneInfo

    user = dovecot.add_user()
    dovecot.append(user, "INBOX", [invoice(1)])
    berlin = ZoneInfo("Europe/Berlin")
    saturday = dt.datetime(2026, 3, 7, 10, 0, tzinfo=berlin)
    rig = Rig(workdir, [mailbox_cfg(dovecot, user, schedule={"every": "15m", "days": ["mon", "tue", "wed", "thu", "fri"],
                                                             "between": "08:00-18:00"})],
              timezone="Europe/Berlin")
    poller = rig.poller(clock=lambda: saturday.astimezone(dt.timezone.utc))
    assert not poller.due(saturday)
    assert poller.tick(saturday) is None
    monday = dt.datetime(2026, 3, 9, 10, 0, tzinfo=berlin)
    assert poller.due(monday) and not poller.due(monday.replace(hour=19))

    # the poller thread, living on Saturday, does not poll; fetch now does
    sessions = dovecot.logins(user)  # the APPEND above
    poller.start()
    try:
        assert poller.status()["window_open"] is False
        threading.Event().wait(0.3)
        assert dovecot.logins(user) == sessions and rig.messages() == []
        result = poller.fetch_now(wait=True, timeout=30)
        assert result is not None and result.error is None and result.downloaded == 1
    finally:
        poller.stop()
    assert len(rig.docs()) == 1
    # after a success the next poll is due after `every`, and never outside the window
    assert poller.next_attempt is not None and poller.next_attempt.astimezone(berlin) == monday.replace(hour=8)


def test_next_window_start_and_backoff() -> None:
    from gateway.config import Schedule
    from gateway.sources.imap.schedule import backoff, next_window_start

    tz = dt.timezone(dt.timedelta(hours=1))
    s = Schedule(every=900, days=("mon", "tue", "wed", "thu", "fri"), between="08:00-18:00")
    friday_evening = dt.datetime(2026, 3, 6, 18, 30, tzinfo=tz)
    assert next_window_start(s, friday_evening) == dt.datetime(2026, 3, 9, 8, 0, tzinfo=tz)
    tuesday_noon = dt.datetime(2026, 3, 10, 12, 0, tzinfo=tz)
    assert next_window_start(s, tuesday_noon) == tuesday_noon
    assert [backoff(n) for n in (1, 2, 3, 4)] == [30, 60, 120, 240] and backoff(20) == 3600


def test_fetch_with_a_progress_bar(dovecot: Dovecot, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.sources.imap import fetch_command

    user = dovecot.add_user()
    dovecot.append(user, "INBOX", [invoice("bar-1"), plain("bar"), invoice("bar-2")])
    dovecot.append(user, "Archive", [invoice("bar-3")])
    rig = Rig(workdir, [mailbox_cfg(dovecot, user, folders=["INBOX", "Archive"])])
    lines: list[str] = []
    assert fetch_command(rig.settings, [], None, echo=lines.append, tty=True) == 0
    shown = capsys.readouterr().out
    assert "box INBOX" in shown and "box Archive" in shown  # one bar per folder, labelled
    assert lines[-1].startswith("box: 4 looked at, 3 downloaded") and "3 imported" in lines[-1]
