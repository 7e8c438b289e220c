"""What one poll of a mailbox did: ``PollResult``, and the progress callback's shape."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import MailboxError
from gateway.store import utcnow

Progress = Callable[[str, int, int, "PollResult"], None]
"""``progress(folder, done, total, result)``: called after every chunk and every download."""


@dataclass
class PollResult:
    """What one poll of a mailbox did (filled in while it runs).

    Attributes:
        mailbox: the mailbox's name.
        started: when the poll began (UTC).
        finished: when it ended.
        folders: the folders looked at.
        scanned: mails whose metadata was read.
        downloaded: mails downloaded whole and spooled.
        skipped: mails that cannot yield a document (not downloaded).
        known: mails already stored from this mailbox (not downloaded again).
        bytes_downloaded: bytes of the mails downloaded.
        bytes_skipped: bytes not downloaded (skipped and known mails).
        message_ids: the spooled messages' ids.
        statuses: the spooled messages by status after processing.
        acted: mails the after-import action touched.
        error: what stopped the poll, or the first folder error.
        errors: every error (a missing folder does not stop the other folders).
        per_folder: folder -> its own counts (scanned, downloaded, skipped, known) and its error.
    """

    mailbox: str
    started: dt.datetime = field(default_factory=utcnow)
    finished: dt.datetime | None = None
    folders: list[str] = field(default_factory=list)
    scanned: int = 0
    downloaded: int = 0
    skipped: int = 0
    known: int = 0
    bytes_downloaded: int = 0
    bytes_skipped: int = 0
    message_ids: list[int] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    acted: int = 0
    errors: list[MailboxError] = field(default_factory=list)
    per_folder: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def error(self) -> MailboxError | None:
        """The first error, or None when the poll succeeded."""
        return self.errors[0] if self.errors else None

    @property
    def imported(self) -> int:
        """Spooled messages that became ``imported``."""
        return self.statuses.get("imported", 0)

    def counts(self) -> dict[str, int]:
        """The running counts that are also kept per folder."""
        return {"scanned": self.scanned, "downloaded": self.downloaded, "skipped": self.skipped,
                "known": self.known}

    def as_dict(self) -> dict[str, Any]:
        """A JSON-able summary (kept in mailbox_status.stats)."""
        err = self.error
        return {
            "started": self.started.isoformat(), "finished": self.finished.isoformat() if self.finished else None,
            "folders": self.folders, "scanned": self.scanned, "downloaded": self.downloaded,
            "skipped": self.skipped, "known": self.known, "bytes_downloaded": self.bytes_downloaded,
            "bytes_saved": self.bytes_skipped, "imported": self.imported, "statuses": self.statuses,
            "acted": self.acted, "error": str(err) if err else None, "error_kind": err.kind if err else None,
            "per_folder": self.per_folder,
        }
