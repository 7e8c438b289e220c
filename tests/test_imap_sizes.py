"""A server that reports sizes inexactly (Exchange): mail already imported is recognised by what the server said.

Dovecot reports true sizes, so these tests put an ``ImapRelay`` in front of it
that adds to every RFC822.SIZE, as Exchange reports a stored size.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dovecot import Dovecot, ImapRelay, dovecot_available
from test_imap import Rig, invoice, mailbox_cfg

assert dovecot_available(), "dovecot is missing: `make test` installs dovecot-imapd"

OFFSET = 57  # what Exchange adds (or takes away): any difference will do


@pytest.fixture(scope="module")
def dovecot() -> Iterator[Dovecot]:
    """One server for the module; every test uses its own user."""
    with Dovecot() as dc:
        yield dc


@pytest.fixture
def exchange(dovecot: Dovecot) -> Iterator[ImapRelay]:
    """An Exchange-like server: Dovecot's mail, sizes reported 57 bytes too large."""
    with ImapRelay(dovecot.port, size_offset=OFFSET) as relay:
        yield relay


def test_the_relay_reports_sizes_that_differ_from_the_mail(dovecot: Dovecot, exchange: ImapRelay) -> None:
    user = dovecot.add_user()
    raw = invoice("size", folder_tag="-x")
    dovecot.append(user, "INBOX", [raw])
    from imapclient import IMAPClient

    c = IMAPClient("127.0.0.1", port=exchange.port, ssl=False, timeout=10)
    try:
        c.login(user, dovecot.users[user])
        c.select_folder("INBOX", readonly=True)
        data = c.fetch([1], ["RFC822.SIZE", "BODY.PEEK[]"])[1]
    finally:
        c.logout()
    assert data[b"BODY[]"] == raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")  # the mail itself is untouched
    assert data[b"RFC822.SIZE"] == len(data[b"BODY[]"]) + OFFSET and exchange.rewritten >= 1


def test_after_a_uidvalidity_change_imported_mail_is_not_downloaded_again(
        dovecot: Dovecot, exchange: ImapRelay, workdir: Path) -> None:
    user = dovecot.add_user()
    mails = [invoice(i, folder_tag="-xv") for i in range(3)]
    dovecot.append(user, "Invoices", mails)
    rig = Rig(workdir, [mailbox_cfg(dovecot, user, port=exchange.port, folders=["Invoices"])])
    poller = rig.poller()
    first = poller.poll()
    assert first.error is None and first.downloaded == 3 and len(rig.docs()) == 3

    c = dovecot.client(user)
    c.delete_folder("Invoices")
    c.create_folder("Invoices")
    for m in mails:
        c.append("Invoices", m)
    c.logout()

    again = poller.poll()
    assert again.error is None and again.scanned == 3
    assert again.downloaded == 0 and again.known == 3  # before the fix: 3 downloaded again (as duplicates)
    assert len(rig.messages()) == 3 and len(rig.docs()) == 3

    dovecot.append(user, "Invoices", [invoice("new", folder_tag="-xv")])
    new = poller.poll()
    assert new.downloaded == 1 and new.known == 0 and len(rig.docs()) == 4


def test_mail_filed_into_another_watched_folder_is_not_downloaded_again(
        dovecot: Dovecot, exchange: ImapRelay, workdir: Path) -> None:
    user = dovecot.add_user()
    dovecot.append(user, "INBOX", [invoice(i, folder_tag="-xf") for i in range(2)])
    dovecot.append(user, "Archive", [invoice("old", folder_tag="-xf")])
    rig = Rig(workdir, [mailbox_cfg(dovecot, user, port=exchange.port, folders=["INBOX", "Archive"])])
    poller = rig.poller()
    assert poller.poll().downloaded == 3

    c = dovecot.client(user)
    c.select_folder("INBOX")
    c.copy([1, 2], "Archive")  # the user files both invoices
    c.logout()
    dovecot.append(user, "Archive", [invoice("filed-new", folder_tag="-xf")])

    result = poller.poll()
    assert result.error is None
    assert result.per_folder["Archive"]["known"] == 2 and result.per_folder["Archive"]["downloaded"] == 1
    assert result.downloaded == 1 and len(rig.messages()) == 4 and len(rig.docs()) == 4
    assert {m["status"] for m in rig.messages()} == {"imported"}
