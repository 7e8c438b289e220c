"""The IMAP source: linked mailboxes polled on a schedule, on demand and by IDLE, feeding only the spool.

connect (TLS, login, errors people can act on) -> folders (which to watch) ->
scan (look before downloading) -> poller (state per folder, spool, after
import, status) ; schedule (windows, backoff) ; result (PollResult) ; idle
(one watcher per folder) ; actions (after_import) ; fetch (the ``fetch`` command).
"""

from __future__ import annotations

from typing import Any

from gateway.sources.imap.fetch import fetch_command
from gateway.sources.imap.poller import MailboxPoller
from gateway.sources.imap.result import PollResult

__all__ = ["MailboxPoller", "PollResult", "fetch_command", "start_pollers"]


def start_pollers(service: Any) -> dict[str, MailboxPoller]:
    """Start a poller for every configured mailbox of a Service; name -> poller."""
    pollers: dict[str, MailboxPoller] = {}
    for mb in service.settings.mailboxes:
        poller = MailboxPoller(mb, store=service.store, spool=service.spool, settings=service.settings,
                               rules=service.rules)
        poller.start()
        pollers[mb.name] = poller
    return pollers
