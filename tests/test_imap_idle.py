"""IDLE hears a watched folder that was deleted and created again: Dovecot (NO or BYE), Cyrus (EXPUNGE or nothing),
and a relay that keeps Dovecot's words back."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import wait_for
from cyrus import Cyrus, cyrus_available
from dovecot import Dovecot, ImapRelay, dovecot_available
from test_imap import Rig, invoice, mailbox_cfg

assert dovecot_available(), "dovecot is missing: `make test` installs dovecot-imapd"
assert cyrus_available(), "cyrus is missing: `make test` installs cyrus-imapd"

FOLDER = "Invoices"


@pytest.fixture(scope="module")
def dovecot() -> Iterator[Dovecot]:
    """One server for the module; every test uses its own user."""
    with Dovecot() as dc:
        yield dc


def watching(rig: Rig, **kw: Any) -> Any:
    """A running poller (scheduled every hour: only IDLE is fast) whose first poll imported one mail."""
    poller = rig.poller(**kw)
    poller.start()
    wait_for(lambda: len(rig.docs()) == 1, 15)
    wait_for(lambda: FOLDER in poller.status()["idle"], 10)
    return poller


def recreate(dc: Dovecot | Cyrus, user: str, mail: bytes, *, pause: float) -> None:
    """Delete the watched folder, create it again after ``pause`` seconds, and put a new mail in it."""
    c = dc.client(user)
    try:
        c.delete_folder(FOLDER)
        time.sleep(pause)
        for attempt in range(5):
            try:
                c.create_folder(FOLDER)
                break
            except c.Error as exc:
                # Dovecot: the session that had the folder open (and was told BYE) may write
                # its index once more as it ends, making the folder again; delete that one too
                if "ALREADYEXISTS" not in str(exc) or attempt == 4:
                    raise
                c.delete_folder(FOLDER)
                time.sleep(0.2)
        c.append(FOLDER, mail)
    finally:
        c.logout()


# pause 0: Dovecot sends "* NO Internal error" and keeps the connection; 1.5 s: it notices the
# deletion first and says BYE, and the mail is in the folder before the watcher is back
@pytest.mark.parametrize("pause", [0.0, 1.5], ids=["no", "bye"])
def test_mail_in_a_watched_folder_deleted_and_created_again_is_imported_within_seconds(
        dovecot: Dovecot, workdir: Path, pause: float) -> None:
    user = dovecot.add_user()
    dovecot.append(user, FOLDER, [invoice("before", folder_tag=f"-idle{pause}")])
    rig = Rig(workdir, [mailbox_cfg(dovecot, user, folders=[FOLDER])])
    poller = watching(rig)
    try:
        watcher = poller.watchers[FOLDER]
        old = rig.store.imap_folder("box", FOLDER)["uidvalidity"]
        recreate(dovecot, user, invoice("after", folder_tag=f"-idle{pause}"), pause=pause)
        started = time.monotonic()
        wait_for(lambda: len(rig.docs()) == 2, 10)  # before the fix: only at the next hourly poll
        assert time.monotonic() - started < 10
        assert watcher.reopens == 1 and watcher.uidvalidity != old
        # NO: the folder is opened again on the same connection; BYE: on a new one
        assert watcher.connects == (1 if pause == 0 else 2)
        assert watcher.ended["no"] == (1 if pause == 0 else 0) and watcher.ended["renew"] == 0
        assert rig.store.imap_folder("box", FOLDER)["uidvalidity"] == watcher.uidvalidity
        assert len(rig.messages()) == 2

        # and the watcher hears the next mail in the new folder as usual
        dovecot.append(user, FOLDER, [invoice("later", folder_tag=f"-idle{pause}")])
        wait_for(lambda: len(rig.docs()) == 3, 10)
    finally:
        poller.stop()


def test_a_silent_server_is_rechecked_and_the_recreated_folder_watched(dovecot: Dovecot, workdir: Path) -> None:
    user = dovecot.add_user()
    dovecot.append(user, FOLDER, [invoice("before", folder_tag="-silent")])
    # like Cyrus: the relay drops Dovecot's untagged NO and BYE, so the watcher hears nothing
    with ImapRelay(dovecot.port, silent=True) as cyrus:
        rig = Rig(workdir, [mailbox_cfg(dovecot, user, port=cyrus.port, folders=[FOLDER])])
        poller = watching(rig, idle_renew=1.0)  # idle_recheck: 1s
        try:
            watcher = poller.watchers[FOLDER]
            recreate(dovecot, user, invoice("after", folder_tag="-silent"), pause=0)
            started = time.monotonic()
            wait_for(lambda: len(rig.docs()) == 2, 10)  # before the fix: only at the next hourly poll
            assert time.monotonic() - started < 10
            assert cyrus.dropped, "the server was expected to say something the relay kept back"
            assert watcher.ended["no"] == 0 and watcher.ended["renew"] > 0  # found by the re-check
            assert watcher.reopens == 1 and len(rig.messages()) == 2
        finally:
            poller.stop()


# Cyrus tells a watcher only that the old folder's mail is gone (EXPUNGE), and nothing at all when the
# old folder was empty: then only the periodic re-check (idle_recheck) finds the new folder
@pytest.mark.parametrize("emptied", [False, True], ids=["expunge", "silent"])
def test_cyrus_folder_deleted_and_created_again_is_watched_again(workdir: Path, emptied: bool) -> None:
    with Cyrus() as cyrus:
        user = cyrus.add_user()
        cyrus.append(user, FOLDER, [invoice("before", folder_tag=f"-cy{emptied}")])
        rig = Rig(workdir, [mailbox_cfg(cyrus, user, folders=[FOLDER])])
        poller = watching(rig, **({"idle_renew": 2.0} if emptied else {}))  # else the default 5 minutes
        try:
            watcher = poller.watchers[FOLDER]
            if emptied:
                c = cyrus.client(user)
                c.select_folder(FOLDER)
                c.move([1], "INBOX")
                c.logout()
                wait_for(lambda: watcher.idles >= 2, 10)  # the EXPUNGE was heard, IDLE sent again
            recreate(cyrus, user, invoice("after", folder_tag=f"-cy{emptied}"), pause=0)
            started = time.monotonic()
            wait_for(lambda: len(rig.docs()) == 2, 10)  # before the fix: only at the next hourly poll
            assert time.monotonic() - started < 10
            assert watcher.reopens == 1 and len(rig.messages()) == 2
            assert watcher.ended["no"] == 0 and watcher.connects == 1  # Cyrus never says NO or BYE here
            if emptied:  # nothing was said (one EXPUNGE: the mail moved out): the periodic re-check found it
                assert watcher.ended["expunge"] == 1 and watcher.ended["renew"] > 0
            else:  # the EXPUNGE of the old folder's mail, long before the 5-minute re-check
                assert watcher.ended["expunge"] >= 1 and watcher.ended["renew"] == 0
            cyrus.append(user, FOLDER, [invoice("later", folder_tag=f"-cy{emptied}")])
            wait_for(lambda: len(rig.docs()) == 3, 10)
        finally:
            poller.stop()


def test_idle_recheck_is_read_from_the_configuration(dovecot: Dovecot, workdir: Path) -> None:
    from gateway.errors import ConfigError

    user = dovecot.add_user()
    rig = Rig(workdir, [mailbox_cfg(dovecot, user, name="quick", idle_recheck="1s"),
                        mailbox_cfg(dovecot, user, name="default")])
    assert rig.poller("quick").idle_renew == 1.0 and rig.poller("default").idle_renew == 300.0
    with pytest.raises(ConfigError, match=r"idle_recheck: must be between 1s and 29m"):
        Rig(workdir, [mailbox_cfg(dovecot, user, idle_recheck="30m")])
