"""IMAP state: per folder the UIDVALIDITY and last UID, the UIDs seen and their state, mailbox status and errors."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from gateway.store.base import Row, StoreBase, _encode, _row, _row_required, iso, utcnow


class ImapMixin(StoreBase):
    """Tables ``imap_folders``, ``imap_seen``, ``imap_reported_sizes``, ``mailbox_status``, ``mailbox_poll_errors``."""

    def imap_folder(self, mailbox: str, folder: str) -> Row | None:
        """The UIDVALIDITY and last UID recorded for a mailbox folder."""
        return _row(self._conn().execute(
            "SELECT * FROM imap_folders WHERE mailbox = ? AND folder = ?", (mailbox, folder)).fetchone())

    def set_imap_folder(self, mailbox: str, folder: str, *, uidvalidity: int, last_uid: int) -> None:
        """Record a folder's UIDVALIDITY and the highest UID handled."""
        with self.write() as conn:
            conn.execute(
                "INSERT INTO imap_folders (mailbox, folder, uidvalidity, last_uid, updated) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(mailbox, folder) DO UPDATE SET "
                "uidvalidity = excluded.uidvalidity, last_uid = excluded.last_uid, updated = excluded.updated",
                (mailbox, folder, uidvalidity, last_uid, iso(utcnow())),
            )

    def record_folder_poll(self, mailbox: str, folder: str, *, at: dt.datetime, stats: dict[str, int],
                           error: str | None = None, error_kind: str | None = None) -> None:
        """Record how the last poll of one folder went: its counts and its error (None: it succeeded)."""
        with self.write() as conn:
            conn.execute(
                "INSERT INTO imap_folders (mailbox, folder, last_poll, last_success, last_error, error_kind, stats) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(mailbox, folder) DO UPDATE SET "
                "last_poll = excluded.last_poll, last_success = COALESCE(excluded.last_success, last_success), "
                "last_error = excluded.last_error, error_kind = excluded.error_kind, stats = excluded.stats",
                (mailbox, folder, iso(at), None if error else iso(at), error, error_kind, _encode(stats)),
            )

    def imap_folders(self, mailbox: str) -> list[Row]:
        """Every folder of a mailbox the poller has looked at, by name."""
        rows = self._conn().execute("SELECT * FROM imap_folders WHERE mailbox = ? ORDER BY folder", (mailbox,))
        return [_row_required(r) for r in rows]

    def count_poll_error(self, mailbox: str, kind: str) -> None:
        """Add one failed poll of ``mailbox`` (``kind`` as MailboxError names it) to the running count."""
        with self.write() as conn:
            conn.execute("INSERT INTO mailbox_poll_errors (mailbox, kind, count) VALUES (?, ?, 1) "
                         "ON CONFLICT(mailbox, kind) DO UPDATE SET count = count + 1", (mailbox, kind))

    def poll_errors(self) -> dict[str, dict[str, int]]:
        """mailbox -> kind -> failed polls, counted since the database was made (never reset)."""
        out: dict[str, dict[str, int]] = {}
        for mailbox, kind, count in self._conn().execute("SELECT mailbox, kind, count FROM mailbox_poll_errors"):
            out.setdefault(mailbox, {})[kind] = int(count)
        return out

    def imap_seen_uids(self, mailbox: str, folder: str, uidvalidity: int) -> set[int]:
        """UIDs of a folder generation already handled."""
        rows = self._conn().execute(
            "SELECT uid FROM imap_seen WHERE mailbox = ? AND folder = ? AND uidvalidity = ?",
            (mailbox, folder, uidvalidity),
        )
        return {int(r[0]) for r in rows}

    def mark_imap_seen(self, mailbox: str, folder: str, uidvalidity: int, uids: Sequence[int],
                       *, message: int | None = None, state: str = "spooled") -> None:
        """Record UIDs as handled (spooled, or skipped because they hold nothing)."""
        with self.write() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO imap_seen VALUES (?, ?, ?, ?, ?, ?)",
                [(mailbox, folder, uidvalidity, u, message, state) for u in uids],
            )

    def mailbox_status(self, name: str) -> Row | None:
        """The recorded state of a mailbox."""
        return _row(self._conn().execute("SELECT * FROM mailbox_status WHERE name = ?", (name,)).fetchone())

    def set_mailbox_status(self, name: str, **fields: Any) -> None:
        """Update a mailbox's recorded state."""
        with self.write() as conn:
            conn.execute("INSERT OR IGNORE INTO mailbox_status (name) VALUES (?)", (name,))
            if fields:
                sets = ", ".join(f"{k} = ?" for k in fields)
                conn.execute(f"UPDATE mailbox_status SET {sets} WHERE name = ?",
                             [*(_encode(v) for v in fields.values()), name])

    def imap_seen_above(self, mailbox: str, folder: str, uidvalidity: int, uid: int) -> set[int]:
        """UIDs above ``uid`` of a folder generation already handled (resuming an interrupted poll)."""
        rows = self._conn().execute(
            "SELECT uid FROM imap_seen WHERE mailbox = ? AND folder = ? AND uidvalidity = ? AND uid > ?",
            (mailbox, folder, uidvalidity, uid),
        )
        return {int(r[0]) for r in rows}

    def mark_imap_spooled(self, mailbox: str, folder: str, uidvalidity: int, items: Sequence[tuple[int, int]],
                          *, state: str = "spooled", reported_sizes: Mapping[int, int] | None = None) -> None:
        """Record downloaded UIDs with their message ids ((uid, message id) pairs), in one transaction.

        ``reported_sizes``: message id -> the RFC822.SIZE the server reported for it.
        """
        with self.write() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO imap_seen VALUES (?, ?, ?, ?, ?, ?)",
                [(mailbox, folder, uidvalidity, uid, message, state) for uid, message in items],
            )
            if reported_sizes:
                conn.executemany("INSERT OR REPLACE INTO imap_reported_sizes VALUES (?, ?)",
                                 sorted(reported_sizes.items()))

    def imap_spooled_origins(self, source: str, folder: str, uidvalidity: int) -> dict[int, int]:
        """UID -> message id of messages spooled from a folder generation (their origin names it)."""
        prefix = f"{folder}/{uidvalidity}/"
        pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = self._conn().execute(
            "SELECT id, origin FROM messages WHERE source = ? AND origin LIKE ? ESCAPE '\\'", (source, pattern))
        out: dict[int, int] = {}
        for r in rows:
            tail = str(r[1])[len(prefix):]
            if tail.isdigit():
                out[int(tail)] = int(r[0])
        return out

    def imap_uids_in_state(self, mailbox: str, folder: str, uidvalidity: int, state: str) -> list[int]:
        """UIDs of a folder generation in one state (``skipped``, ``spooled``, ...), ascending."""
        rows = self._conn().execute(
            "SELECT uid FROM imap_seen WHERE mailbox = ? AND folder = ? AND uidvalidity = ? AND state = ? ORDER BY uid",
            (mailbox, folder, uidvalidity, state),
        )
        return [int(r[0]) for r in rows]

    def set_imap_state(self, mailbox: str, folder: str, uidvalidity: int, uids: Sequence[int], state: str) -> None:
        """Change the state of handled UIDs (``spooled`` -> ``done`` once the after-import action ran)."""
        with self.write() as conn:
            conn.executemany(
                "UPDATE imap_seen SET state = ? WHERE mailbox = ? AND folder = ? AND uidvalidity = ? AND uid = ?",
                [(state, mailbox, folder, uidvalidity, u) for u in uids],
            )

    def forget_imap_generations(self, mailbox: str, folder: str, keep: int) -> int:
        """Drop the handled UIDs of a folder's other UIDVALIDITY generations; returns rows removed."""
        with self.write() as conn:
            cur = conn.execute("DELETE FROM imap_seen WHERE mailbox = ? AND folder = ? AND uidvalidity != ?",
                               (mailbox, folder, keep))
            return int(cur.rowcount)

    def imap_pending_actions(self, mailbox: str) -> list[Row]:
        """Spooled UIDs whose message is processed: the after-import action is due (or not wanted).

        Each row: folder, uidvalidity, uid, message (id) and status (the message's).
        """
        rows = self._conn().execute(
            "SELECT s.folder, s.uidvalidity, s.uid, s.message, m.status FROM imap_seen s "
            "JOIN messages m ON m.id = s.message WHERE s.mailbox = ? AND s.state = 'spooled' "
            "AND m.status != 'received' ORDER BY s.folder, s.uid",
            (mailbox,),
        )
        return [_row_required(r) for r in rows]

    def imap_known_messages(self, source: str, message_ids: Sequence[str]) -> dict[str, list[int]]:
        """Message-ID -> sizes of messages already stored from ``source`` (``imap:<mailbox>``).

        A size is the RFC822.SIZE the server reported when it sent the mail; the
        real size for mail recorded before reported sizes were kept.
        """
        out: dict[str, list[int]] = {}
        ids = list(dict.fromkeys(message_ids))
        conn = self._conn()
        for i in range(0, len(ids), 500):
            part = ids[i:i + 500]
            rows = conn.execute(
                "SELECT m.message_id, COALESCE(r.size, m.size) FROM messages m "
                "LEFT JOIN imap_reported_sizes r ON r.message = m.id "
                f"WHERE m.source = ? AND m.message_id IN ({','.join('?' * len(part))})",
                [source, *part],
            )
            for r in rows:
                out.setdefault(r[0], []).append(int(r[1]))
        return out
