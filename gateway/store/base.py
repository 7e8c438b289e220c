"""StoreBase: the database file, one connection per thread, ``write()`` transactions, migrations, key/value.

Also the helpers every table group uses: ``Row``, ``utcnow``/``iso`` and the
row encoding (``_encode``, ``_row``, ``_row_required``).
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gateway.claims import ClaimLock
from gateway.errors import StoreError
from gateway.store.migrations import _MIGRATIONS

Row = dict[str, Any]


def utcnow() -> dt.datetime:
    """The current time, aware, UTC."""
    return dt.datetime.now(dt.timezone.utc)


def iso(t: dt.datetime | None) -> str | None:
    """An aware datetime as ISO 8601 (UTC, seconds with microseconds)."""
    return None if t is None else t.astimezone(dt.timezone.utc).isoformat()


def _encode(v: Any) -> Any:
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v, default=str)
    if isinstance(v, dt.datetime):
        return iso(v)
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, str):
        return v.encode("utf-8", "replace").decode("utf-8")
    return v


def _row(r: sqlite3.Row | None) -> Row | None:
    return None if r is None else dict(r)


def _row_required(r: sqlite3.Row) -> Row:
    return dict(r)


class StoreBase:
    """The database under ``data_dir``: connections, transactions, migrations; the table groups build on it."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.data_dir / "gateway.db"
        self._local = threading.local()
        self.claims = ClaimLock(self.data_dir)
        self._migrate()

    # -- connections -------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open the database {self.path}: {exc}") from exc
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
        return conn

    @contextmanager
    def write(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """A short ``BEGIN IMMEDIATE`` transaction.

        ``durable=False`` skips the fsync at commit (WAL, synchronous=NORMAL):
        for bookkeeping whose loss in a power cut only means work is done
        again, idempotently (claims, processing outcomes). The next durable
        commit makes it durable too. What a client was promised (a recorded
        message, a delivered export) is always committed durably.
        """
        conn = self._conn()
        if not durable:
            conn.execute("PRAGMA synchronous=NORMAL")
        try:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"database busy or unavailable: {exc}") from exc
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            else:
                try:
                    conn.execute("COMMIT")
                except sqlite3.Error as exc:
                    raise StoreError(f"commit failed: {exc}") from exc
        finally:
            if not durable:
                conn.execute("PRAGMA synchronous=FULL")

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _migrate(self) -> None:
        conn = self._conn()
        with self.write():
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(_MIGRATIONS[version:], start=version + 1):
                for stmt in script.split(";"):
                    if stmt.strip():
                        conn.execute(stmt)
                conn.execute(f"PRAGMA user_version={number}")

    def ping(self) -> bool:
        """True when the database answers."""
        try:
            self._conn().execute("SELECT 1").fetchone()
            return True
        except sqlite3.Error:
            return False

    # -- paging -----------------------------------------------------------------

    def _page(self, table: str, where: Sequence[str], args: Sequence[Any], limit: int,
              offset: int) -> tuple[list[Row], int]:
        """Rows of ``table`` matching every condition in ``where``, newest first, and how many match."""
        cond = " AND ".join(where)
        conn = self._conn()
        total = conn.execute(f"SELECT count(*) FROM {table} WHERE {cond}", list(args)).fetchone()[0]
        rows = conn.execute(f"SELECT * FROM {table} WHERE {cond} ORDER BY id DESC LIMIT ? OFFSET ?",
                            [*args, limit, offset])
        return [_row_required(r) for r in rows], int(total)

    # -- key/value ---------------------------------------------------------------

    def get_kv(self, key: str, default: Any = None) -> Any:
        """A JSON value stored under ``key``."""
        row = self._conn().execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def set_kv(self, key: str, value: Any) -> None:
        """Store a JSON value under ``key``."""
        with self.write() as conn:
            conn.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (key, json.dumps(value)))
