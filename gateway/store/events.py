"""The admin page's log: warnings and notable events of serve and its workers, the newest EVENTS_KEPT."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.store.base import Row, StoreBase

EVENTS_KEPT = 20_000


class EventsMixin(StoreBase):
    """The ``events`` table."""

    def add_events(self, rows: Sequence[tuple[str, str, str, str, str]]) -> None:
        """Append (at, level, kind, source, text) rows; only the newest EVENTS_KEPT are kept."""
        if not rows:
            return
        with self.write(durable=False) as conn:
            conn.executemany("INSERT INTO events (at, level, kind, source, text) VALUES (?, ?, ?, ?, ?)", rows)
            conn.execute("DELETE FROM events WHERE id <= (SELECT max(id) FROM events) - ?", (EVENTS_KEPT,))

    def list_events(self, *, kind: str | None = None, level: str | None = None, limit: int = 100,
                    offset: int = 0) -> tuple[list[Row], int]:
        """Log events, newest first, with the total for paging."""
        where, args = ["1=1"], []
        if kind:
            where.append("kind = ?")
            args.append(kind)
        if level:
            where.append("level = ?")
            args.append(level)
        return self._page("events", where, args, limit, offset)
