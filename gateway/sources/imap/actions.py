"""What happens to a mail in its mailbox after it was imported: ``after_import: none|seen|flag|move:Folder``.

One small interface (``apply(client, uids)``), looked up by what the user
wrote. The poller calls it only for UIDs whose message was durably spooled
*and* processed with status ``imported``, in a read-write SELECT of the
folder; every action is idempotent, so a crash between acting and recording
repeats it harmlessly.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

log = logging.getLogger(__name__)


class AfterImport(Protocol):
    """An action on imported mail."""

    name: str

    def apply(self, client: Any, uids: Sequence[int]) -> None:
        """Act on ``uids`` of the selected folder."""


class AddFlag:
    """Set a flag (``\\Seen`` for ``seen``, ``\\Flagged`` for ``flag``)."""

    def __init__(self, name: str, flag: bytes) -> None:
        self.name = name
        self.flag = flag

    def apply(self, client: Any, uids: Sequence[int]) -> None:
        """Add the flag to every UID."""
        client.add_flags(list(uids), [self.flag], silent=True)


class MoveTo:
    """Move to a folder (created when missing): MOVE, or COPY + \\Deleted + UID EXPUNGE."""

    def __init__(self, folder: str) -> None:
        self.name = f"move:{folder}"
        self.folder = folder
        self._checked = False

    def apply(self, client: Any, uids: Sequence[int]) -> None:
        """Move every UID to the target folder."""
        if not self._checked:
            if not client.folder_exists(self.folder):
                log.info("creating folder %r for after_import: %s", self.folder, self.name)
                client.create_folder(self.folder)
            self._checked = True
        uids = list(uids)
        if client.has_capability("MOVE"):
            client.move(uids, self.folder)
            return
        client.copy(uids, self.folder)
        client.add_flags(uids, [b"\\Deleted"], silent=True)
        if client.has_capability("UIDPLUS"):
            client.uid_expunge(uids)
        # without UIDPLUS an EXPUNGE would also remove mail the user marked deleted: leave it marked


def after_import_action(spec: str) -> AfterImport | None:
    """The action for an ``after_import`` value; None for ``none``."""
    if spec == "none":
        return None
    if spec == "seen":
        return AddFlag("seen", b"\\Seen")
    if spec == "flag":
        return AddFlag("flag", b"\\Flagged")
    if spec.startswith("move:") and len(spec) > 5:
        return MoveTo(spec[5:])
    raise ValueError(f"after_import: {spec!r} is not none, seen, flag or move:Folder")
