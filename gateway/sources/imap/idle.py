"""IDLE: one connection per mailbox folder that wakes the poller when new mail arrives.

The watcher EXAMINEs its folder, sends IDLE and waits for ``EXISTS``; then it
leaves IDLE and asks the poller to poll that folder (the poller imports, the
watcher only listens). IDLE is renewed every ``renew`` seconds (RFC 2177 asks
for less than 29 minutes; renewing also finds dead connections), and a broken
connection is opened again with backoff (1 s doubling to 5 min). Outside the
schedule's window the watcher holds no connection.
"""

from __future__ import annotations

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
                client.select_folder(self.folder, readonly=True)
                self.connects += 1
                self.connected.set()
                delay = 1.0
                self._watch(client)
            except Exception as exc:
                self.connected.clear()
                err = conn.translate(exc, self.poller.mb, f"watching {self.folder!r} (IDLE)")
                log.debug("mailbox %s: IDLE on %s: %s; again in %.0f s", self.poller.name, self.folder, err, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, RECONNECT_MAX)
            finally:
                self.connected.clear()
                if client is not None:
                    conn.close(client)

    def _watch(self, client: Any) -> None:
        """IDLE until stopped or the window closes; renew; trigger the poller on new mail."""
        while not self._stop.is_set() and self.poller.window_open():
            client.idle()
            self.idles += 1
            new_mail = False
            try:
                new_mail = self._wait(client)
            finally:
                # leave IDLE before anything else is said on this connection, LOGOUT included;
                # what arrived meanwhile comes with the answer to DONE
                with contextlib.suppress(Exception):
                    _, late = client.idle_done()
                    new_mail = new_mail or _has_new_mail(late)
            if new_mail:
                self.notifications += 1
                self.poller.trigger(self.folder)

    def _wait(self, client: Any) -> bool:
        """Wait in IDLE up to ``renew`` seconds; True when new mail arrived."""
        started = time.monotonic()
        quick_empty = 0
        while not self._stop.is_set() and time.monotonic() - started < self.renew:
            t0 = time.monotonic()
            responses = client.idle_check(timeout=CHECK_INTERVAL)
            if any(r and r[0] == b"BYE" for r in responses):
                raise ConnectionResetError("the server said BYE")
            if _has_new_mail(responses):
                return True
            # a closed socket reads as "ready" with nothing in it, again and again
            quick = not responses and time.monotonic() - t0 < CHECK_INTERVAL / 2
            quick_empty = quick_empty + 1 if quick else 0
            if quick_empty >= 3:
                raise ConnectionResetError("the server closed the connection")
        return False


def _has_new_mail(responses: Any) -> bool:
    """Whether untagged responses announce mail (``* n EXISTS`` / ``* n RECENT``)."""
    return any(isinstance(r, tuple) and len(r) >= 2 and r[1] in (b"EXISTS", b"RECENT") for r in responses or ())
