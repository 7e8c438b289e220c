"""IDLE: one connection per mailbox folder that wakes the poller when new mail arrives.

The watcher EXAMINEs its folder, sends IDLE and waits for ``EXISTS``; then it
leaves IDLE and asks the poller to poll that folder (the poller imports, the
watcher only listens). A broken connection is opened again with backoff (1 s
doubling up to the re-check interval, at most 5 min). Outside the schedule's
window the watcher holds no connection.

A folder can change under a watcher without a word about new mail: deleted
and created again, Dovecot sends an untagged ``NO`` (or ``BYE``) and Cyrus
only ``EXPUNGE`` for the mail the old folder held, or nothing at all; none
announces mail in the new folder. So IDLE is ended every ``renew`` seconds
(the mailbox's ``idle_recheck``; RFC 2177 asks for less than 29 minutes, and
it also finds dead connections), at once on an untagged ``NO`` or an
``EXPUNGE`` and after new mail, and the folder is EXAMINEd again: a new
UIDVALIDITY (the folder was replaced), a UIDNEXT that grew without an
``EXISTS``, or mail above what the poller has handled wakes the poller. A
``BYE`` reconnects, and the same checks run on the new connection. STATUS
would not do: Dovecot answers it for the selected folder from the session's
old view.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from gateway.sources.imap import connect as conn

if TYPE_CHECKING:
    from gateway.sources.imap.poller import MailboxPoller

log = logging.getLogger(__name__)

CHECK_INTERVAL = 0.5  # seconds per idle_check: how fast stop() is noticed
RECONNECT_MAX = 300.0


class FolderWatcher:
    """IDLE on one folder of one mailbox, in a thread."""

    def __init__(self, poller: MailboxPoller, folder: str, *, renew: float = 300.0) -> None:
        self.poller = poller
        self.folder = folder
        self.renew = min(renew, 29 * 60.0)
        self.connected = threading.Event()
        self.notifications = 0
        self.idles = 0  # IDLE commands sent: one per renewal
        self.connects = 0
        self.rechecks = 0  # the folder EXAMINEd again (after each IDLE)
        self.reopens = 0  # ... and found replaced (a new UIDVALIDITY)
        self.ended: collections.Counter[str] = collections.Counter()  # why IDLE ended: new, no, expunge, renew
        self.uidvalidity: int | None = None  # of the folder as last opened
        self.uidnext: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start watching."""
        self._thread = threading.Thread(target=self._run, name=f"idle:{self.poller.name}:{self.folder}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to end (within about a second)."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread to end."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        delay = 1.0
        while not self._stop.is_set():
            if not self.poller.window_open():
                self._stop.wait(30)
                continue
            client: Any = None
            try:
                client = self.poller.connect()
                if not client.has_capability("IDLE"):
                    log.info("mailbox %s: the server does not offer IDLE", self.poller.name)
                    return
                self._open(client)
                self.connects += 1
                self.connected.set()
                delay = 1.0
                self._watch(client)
            except Exception as exc:
                self.connected.clear()
                err = conn.translate(exc, self.poller.mb, f"watching {self.folder!r} (IDLE)")
                log.debug("mailbox %s: IDLE on %s: %s; again in %.0f s", self.poller.name, self.folder, err, delay)
                self._stop.wait(delay)
                # a folder deleted and not yet created again is looked for at least every renew seconds
                delay = min(delay * 2, max(self.renew, 1.0), RECONNECT_MAX)
            finally:
                self.connected.clear()
                if client is not None:
                    conn.close(client)

    def _open(self, client: Any, *, announced: bool = False) -> None:
        """EXAMINE the folder; wake the poller when it was replaced or holds mail not yet announced.

        ``announced``: new mail was just announced (by EXISTS) and the poller woken for it.
        """
        info = client.select_folder(self.folder, readonly=True)
        uidvalidity = int(info[b"UIDVALIDITY"])
        uidnext = int(info[b"UIDNEXT"]) if info.get(b"UIDNEXT") is not None else None
        replaced = self.uidvalidity is not None and uidvalidity != self.uidvalidity
        # mail that came between two IDLEs, or while the connection was down, is announced by no EXISTS
        grew = (not replaced and uidnext is not None and self.uidnext is not None and uidnext > self.uidnext)
        if replaced:
            self.reopens += 1
            log.info("mailbox %s: folder %s was replaced (UIDVALIDITY %s -> %s); watching the new one",
                     self.poller.name, self.folder, self.uidvalidity, uidvalidity)
        self.uidvalidity, self.uidnext = uidvalidity, uidnext
        if replaced or (not announced and (grew or self._behind(uidvalidity, uidnext))):
            self.notifications += 1
            self.poller.trigger(self.folder)

    def _behind(self, uidvalidity: int, uidnext: Any) -> bool:
        """Whether the folder holds mail the poller has not handled (a poll of it finds work)."""
        state = self.poller.store.imap_folder(self.poller.name, self.folder)
        if state is None or state["uidvalidity"] is None:
            return False  # never polled: the first poll reads it all anyway
        if int(state["uidvalidity"]) != uidvalidity:
            return True
        return uidnext is not None and int(uidnext) - 1 > int(state["last_uid"])

    def _watch(self, client: Any) -> None:
        """IDLE until stopped or the window closes; re-check the folder; trigger the poller on new mail."""
        while not self._stop.is_set() and self.poller.window_open():
            client.idle()
            self.idles += 1
            outcome = "renew"
            try:
                outcome = self._wait(client)
            finally:
                # leave IDLE before anything else is said on this connection, LOGOUT included;
                # what arrived meanwhile comes with the answer to DONE
                with contextlib.suppress(Exception):
                    _, late = client.idle_done()
                    if _has_new_mail(late):
                        outcome = "new"
                    elif outcome == "renew":
                        outcome = _changed(late) or outcome
            if outcome == "new":
                self.notifications += 1
                self.poller.trigger(self.folder)
            elif outcome == "no":
                log.info("mailbox %s: the server said NO while watching %s; opening it again",
                         self.poller.name, self.folder)
            elif outcome == "expunge":
                log.debug("mailbox %s: mail was removed from %s; opening it again", self.poller.name, self.folder)
            self.ended[outcome] += 1
            self.rechecks += 1
            self._open(client, announced=outcome == "new")

    def _wait(self, client: Any) -> str:
        """Wait in IDLE up to ``renew`` seconds: ``new`` (mail arrived), ``no``, ``expunge`` or ``renew``."""
        started = time.monotonic()
        quick_empty = 0
        while not self._stop.is_set() and time.monotonic() - started < self.renew:
            t0 = time.monotonic()
            timeout = min(CHECK_INTERVAL, self.renew)
            responses = client.idle_check(timeout=timeout)
            if any(r and r[0] == b"BYE" for r in responses):
                raise ConnectionResetError("the server said BYE")
            if _has_new_mail(responses):
                return "new"
            changed = _changed(responses)
            if changed:
                return changed
            # a closed socket reads as "ready" with nothing in it, again and again
            quick = not responses and time.monotonic() - t0 < timeout / 2
            quick_empty = quick_empty + 1 if quick else 0
            if quick_empty >= 3:
                raise ConnectionResetError("the server closed the connection")
        return "renew"


def _changed(responses: Any) -> str | None:
    """``no`` for an untagged NO (Dovecot: the folder went away), ``expunge`` for an EXPUNGE (Cyrus: the
    folder's mail went away, with the folder or not), else None."""
    out: str | None = None
    for r in responses or ():
        if isinstance(r, tuple) and r and r[0] == b"NO":
            return "no"
        if isinstance(r, tuple) and len(r) >= 2 and r[1] == b"EXPUNGE":
            out = "expunge"
    return out


def _has_new_mail(responses: Any) -> bool:
    """Whether untagged responses announce mail (``* n EXISTS`` / ``* n RECENT``)."""
    return any(isinstance(r, tuple) and len(r) >= 2 and r[1] in (b"EXISTS", b"RECENT") for r in responses or ())
