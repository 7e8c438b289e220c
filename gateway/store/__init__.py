"""SQLite (WAL): every table, every SQL statement, migrations.

Plain ``sqlite3`` rather than sqlite-utils (named in DESIGN.md): every write
here needs explicit ``BEGIN IMMEDIATE`` control, per-transaction durability
and ``UPDATE ... RETURNING`` claims, which sqlite-utils does not wrap, and
nothing used its table helpers.

One connection per thread; writes are short ``BEGIN IMMEDIATE`` transactions,
so several threads (and a second process such as ``invoice-gateway export``
beside ``serve``) can share the database safely.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import sqlite3
import threading
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.claims import ClaimLock
from gateway.errors import StoreError

Row = dict[str, Any]

MESSAGE_STATUSES = ("received", "imported", "ignored", "unmatched", "duplicate", "quarantined", "suspicious")
EXPORT_STATES = ("pending", "running", "delivered", "failed", "error")

_MIGRATIONS: list[str] = [
    # 1: the spine
    """
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        received TEXT NOT NULL,
        source TEXT NOT NULL,
        origin TEXT,
        peer TEXT,
        mail_from TEXT NOT NULL DEFAULT '',
        rcpt_tos TEXT NOT NULL DEFAULT '[]',
        import_address TEXT,
        tag TEXT,
        assign TEXT NOT NULL DEFAULT '{}',
        raw_path TEXT NOT NULL,
        size INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        content_hash TEXT,
        message_id TEXT,
        subject TEXT,
        sender TEXT,
        date TEXT,
        status TEXT NOT NULL DEFAULT 'received',
        reason TEXT,
        decision TEXT,
        duplicate_of INTEGER,
        auth TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        claimed_by TEXT,
        claimed_at TEXT,
        processed_at TEXT
    );
    CREATE INDEX messages_status ON messages(status, id);
    CREATE INDEX messages_msgid ON messages(message_id);
    CREATE INDEX messages_sha ON messages(sha256);
    CREATE TABLE documents (
        id INTEGER PRIMARY KEY,
        message_id INTEGER NOT NULL REFERENCES messages(id),
        sha256 TEXT NOT NULL UNIQUE,
        filename TEXT NOT NULL,
        content_type TEXT NOT NULL,
        kind TEXT NOT NULL,
        origin TEXT NOT NULL DEFAULT 'attachment',
        parent_id INTEGER,
        size INTEGER NOT NULL,
        path TEXT NOT NULL,
        created TEXT NOT NULL,
        doc_date TEXT,
        company TEXT,
        document_type TEXT,
        invoice_number TEXT,
        tags TEXT NOT NULL DEFAULT '[]',
        note TEXT,
        einvoice TEXT,
        warnings TEXT NOT NULL DEFAULT '[]',
        approved_at TEXT,
        archived_at TEXT
    );
    CREATE TABLE message_documents (
        message_id INTEGER NOT NULL REFERENCES messages(id),
        document_id INTEGER NOT NULL REFERENCES documents(id),
        PRIMARY KEY (message_id, document_id)
    );
    CREATE TABLE exports (
        id INTEGER PRIMARY KEY,
        document_id INTEGER NOT NULL REFERENCES documents(id),
        target TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt TEXT,
        last_error TEXT,
        location TEXT,
        created TEXT NOT NULL,
        delivered_at TEXT,
        claimed_by TEXT,
        claimed_at TEXT,
        UNIQUE (document_id, target)
    );
    CREATE INDEX exports_state ON exports(target, state);
    CREATE TABLE imap_folders (
        mailbox TEXT NOT NULL,
        folder TEXT NOT NULL,
        uidvalidity INTEGER,
        last_uid INTEGER NOT NULL DEFAULT 0,
        updated TEXT,
        PRIMARY KEY (mailbox, folder)
    );
    CREATE TABLE imap_seen (
        mailbox TEXT NOT NULL,
        folder TEXT NOT NULL,
        uidvalidity INTEGER NOT NULL,
        uid INTEGER NOT NULL,
        message INTEGER,
        state TEXT NOT NULL DEFAULT 'spooled',
        PRIMARY KEY (mailbox, folder, uidvalidity, uid)
    );
    CREATE TABLE mailbox_status (
        name TEXT PRIMARY KEY,
        last_poll TEXT,
        last_success TEXT,
        last_error TEXT,
        error_kind TEXT,
        hint TEXT,
        failures INTEGER NOT NULL DEFAULT 0,
        next_attempt TEXT,
        stats TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE kv (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # 2: trust: releasing suspicious mail; the bank accounts seen per seller (the IBAN guard)
    """
    ALTER TABLE messages ADD COLUMN released_at TEXT;
    ALTER TABLE messages ADD COLUMN released_by TEXT;
    CREATE TABLE seller_ibans (
        seller_key TEXT NOT NULL,
        iban TEXT NOT NULL,
        message_id INTEGER NOT NULL,
        seen_at TEXT NOT NULL,
        PRIMARY KEY (seller_key, iban, message_id)
    );
    CREATE INDEX seller_ibans_key ON seller_ibans(seller_key, message_id);
    """,
    # 3: the IBAN guard's flag as a field of the document (JSON), not only a warning
    """
    ALTER TABLE documents ADD COLUMN payment_details_changed TEXT;
    """,
    # 4: admin page: each IMAP folder's last poll; a running count of failed polls per mailbox
    """
    ALTER TABLE imap_folders ADD COLUMN last_poll TEXT;
    ALTER TABLE imap_folders ADD COLUMN last_success TEXT;
    ALTER TABLE imap_folders ADD COLUMN last_error TEXT;
    ALTER TABLE imap_folders ADD COLUMN error_kind TEXT;
    ALTER TABLE imap_folders ADD COLUMN stats TEXT NOT NULL DEFAULT '{}';
    CREATE TABLE mailbox_poll_errors (
        mailbox TEXT NOT NULL,
        kind TEXT NOT NULL,
        count INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (mailbox, kind)
    );
    """,
    # 5: the IBAN guard learns a seller's account only from mail authenticated for the seller or
    # confirmed by a person (confirmed_by); the sender's organizational domain binds the seller
    """
    ALTER TABLE seller_ibans ADD COLUMN confirmed_by TEXT;
    ALTER TABLE seller_ibans ADD COLUMN sender_domain TEXT;
    """,
    # 6: the RFC822.SIZE the IMAP server reported for each mail it sent: Exchange may report a
    # stored size, not the real one, and a mail seen again is recognised by what the server says
    """
    CREATE TABLE imap_reported_sizes (
        message INTEGER PRIMARY KEY REFERENCES messages(id),
        size INTEGER NOT NULL
    );
    """,
    # 7: the admin page's log: warnings and notable events (refused recipients, known documents)
    # of serve and its worker processes, the newest EVENTS_KEPT of them
    """
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        level TEXT NOT NULL,
        kind TEXT NOT NULL,
        source TEXT NOT NULL,
        text TEXT NOT NULL
    );
    CREATE INDEX events_kind ON events(kind, id);
    """,
    # 8: "import it": a person asks for an unmatched or ignored mail to be imported, whatever the rules say
    """
    ALTER TABLE messages ADD COLUMN import_requested_at TEXT;
    ALTER TABLE messages ADD COLUMN import_requested_by TEXT;
    """,
    # 9: claims: why the last holder of a claim was stopped (it names the bound a mail
    # exceeded when the mail is quarantined for it); the claims are looked up often
    """
    ALTER TABLE messages ADD COLUMN claim_error TEXT;
    CREATE INDEX messages_claimed ON messages(claimed_by) WHERE claimed_by IS NOT NULL;
    CREATE INDEX exports_claimed ON exports(claimed_by) WHERE claimed_by IS NOT NULL;
    """,
    # 10: every document's fields (gateway.fields): {"fields": {...}, "field_sources": {...}} as JSON
    """
    ALTER TABLE documents ADD COLUMN fields TEXT;
    """,
    # 11: OCR: a scan's or photo's document waits for its text layer (ocr: pending, running; then done,
    # failed); once read, sha256 is the new file's and ocr_source_sha256 the bytes that came
    """
    ALTER TABLE documents ADD COLUMN ocr TEXT;
    ALTER TABLE documents ADD COLUMN ocr_source_sha256 TEXT;
    CREATE INDEX documents_ocr ON documents(ocr, id) WHERE ocr IN ('pending', 'running');
    CREATE INDEX documents_ocr_source ON documents(ocr_source_sha256) WHERE ocr_source_sha256 IS NOT NULL;
    """,
]
EVENTS_KEPT = 20_000


def utcnow() -> dt.datetime:
    """The current time, aware, UTC."""
    return dt.datetime.now(dt.timezone.utc)


def iso(t: dt.datetime | None) -> str | None:
    """An aware datetime as ISO 8601 (UTC, seconds with microseconds)."""
    return None if t is None else t.astimezone(dt.timezone.utc).isoformat()


@dataclass(frozen=True)
class DedupKey:
    """What makes two messages the same mail.

    Attributes:
        sha256: the raw bytes' digest (the same bytes).
        message_id: the Message-ID header, or None.
        content_hash: the body's hash; with ``message_id`` the same mail by
            another route (SMTP and IMAP), or None.
    """

    sha256: str
    message_id: str | None
    content_hash: str | None


@dataclass(frozen=True)
class Finished:
    """What ``finish_processed`` recorded.

    Attributes:
        status: the status stored (``duplicate`` when another copy was there first).
        reason: the reason stored.
        document_ids: the documents linked to the message.
        duplicate_of: the copy that was there first, when the status is ``duplicate``.
    """

    status: str
    reason: str
    document_ids: tuple[int, ...]
    duplicate_of: Row | None = None


class Store:
    """The gateway's database and file store under ``data_dir``."""

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

    # -- messages ----------------------------------------------------------------

    def _page(self, table: str, where: Sequence[str], args: Sequence[Any], limit: int,
              offset: int) -> tuple[list[Row], int]:
        """Rows of ``table`` matching every condition in ``where``, newest first, and how many match."""
        cond = " AND ".join(where)
        conn = self._conn()
        total = conn.execute(f"SELECT count(*) FROM {table} WHERE {cond}", list(args)).fetchone()[0]
        rows = conn.execute(f"SELECT * FROM {table} WHERE {cond} ORDER BY id DESC LIMIT ? OFFSET ?",
                            [*args, limit, offset])
        return [_row_required(r) for r in rows], int(total)

    def insert_messages(self, items: Sequence[Row]) -> list[int]:
        """Record spooled messages (status ``received``) in one transaction."""
        ids: list[int] = []
        with self.write() as conn:
            for item in items:
                cols = ", ".join(item)
                marks = ", ".join("?" for _ in item)
                cur = conn.execute(f"INSERT INTO messages ({cols}) VALUES ({marks})", [_encode(v) for v in item.values()])
                ids.append(int(cur.lastrowid or 0))
        return ids

    def claim_message(self, token: str | None = None) -> Row | None:
        """Claim the oldest unclaimed ``received`` message for processing.

        The claim names this process's claim token (see gateway.claims): it
        ends with the process, however the process ends.
        """
        token = token or self.claims.token()
        with self.write(durable=False) as conn:
            row = conn.execute(
                "UPDATE messages SET claimed_by = ?, claimed_at = ?, attempts = attempts + 1 "
                "WHERE id = (SELECT id FROM messages WHERE status = 'received' AND claimed_by IS NULL "
                "ORDER BY id LIMIT 1) RETURNING *",
                (token, iso(utcnow())),
            ).fetchone()
        return _row(row)

    def claim_tokens(self) -> set[str]:
        """The tokens that hold a claim on a message or an export."""
        conn = self._conn()
        rows = conn.execute("SELECT DISTINCT claimed_by FROM messages WHERE claimed_by IS NOT NULL "
                            "UNION SELECT DISTINCT claimed_by FROM exports WHERE claimed_by IS NOT NULL")
        return {str(r[0]) for r in rows}

    def claimed_messages(self) -> list[Row]:
        """Messages that are claimed right now (id, status, claimed_by, claimed_at, attempts)."""
        rows = self._conn().execute("SELECT id, status, claimed_by, claimed_at, attempts FROM messages "
                                    "WHERE claimed_by IS NOT NULL ORDER BY id")
        return [_row_required(r) for r in rows]

    def release_stale_claims(self, causes: dict[int, str] | None = None) -> int:
        """Free the claims whose holder is gone (its claim lock can be taken); returns how many.

        Cheap enough to run every second: the claims are indexed and a living
        holder costs one failed ``flock``. ``causes`` notes why a holder was
        stopped on the messages it held (``claim_error``), so that a mail that
        keeps stopping workers is quarantined with the reason.
        """
        tokens = self.claim_tokens()
        dead = sorted(t for t in tokens if not self.claims.alive(t))
        freed = 0
        if dead:
            marks = ",".join("?" for _ in dead)
            with self.write() as conn:
                for mid, cause in (causes or {}).items():
                    conn.execute(f"UPDATE messages SET claim_error = ? WHERE id = ? AND claimed_by IN ({marks})",
                                 (cause, mid, *dead))
                freed += conn.execute(f"UPDATE messages SET claimed_by = NULL, claimed_at = NULL "
                                      f"WHERE claimed_by IN ({marks})", dead).rowcount
                freed += conn.execute(f"UPDATE exports SET claimed_by = NULL, claimed_at = NULL, "
                                      f"state = CASE WHEN state = 'running' THEN 'pending' ELSE state END "
                                      f"WHERE claimed_by IN ({marks})", dead).rowcount
        self.claims.sweep(tokens - set(dead))
        return freed

    def message(self, message_id: int) -> Row | None:
        """One message row, or None."""
        return _row(self._conn().execute("SELECT * FROM messages WHERE id = ?", (message_id,)).fetchone())

    def find_duplicate(self, message_id: int, header_id: str | None, sha256: str, content_hash: str | None) -> Row | None:
        """The copy of this mail that was processed first (same bytes, or same Message-ID and content).

        A copy still ``received`` has no outcome yet, and a ``duplicate`` is
        never the first; the earliest of the others is. Only a hint before the
        work: ``finish_processed`` decides, atomically.
        """
        return self._first_copy(self._conn(), message_id, DedupKey(sha256, header_id, content_hash))

    @staticmethod
    def _first_copy(conn: sqlite3.Connection, message_id: int, key: DedupKey) -> Row | None:
        row = conn.execute(
            "SELECT * FROM messages WHERE sha256 = ? AND id != ? AND status NOT IN ('received', 'duplicate') "
            "ORDER BY id LIMIT 1",
            (key.sha256, message_id),
        ).fetchone()
        if row is None and key.message_id and key.content_hash:
            row = conn.execute(
                "SELECT * FROM messages WHERE message_id = ? AND content_hash = ? AND id != ? "
                "AND status NOT IN ('received', 'duplicate') ORDER BY id LIMIT 1",
                (key.message_id, key.content_hash, message_id),
            ).fetchone()
        return _row(row)

    def finish_message(
        self,
        message_id: int,
        *,
        status: str,
        reason: str,
        fields: Row,
        documents: Sequence[Row] = (),
        targets_for: Any = None,
    ) -> list[int]:
        """Record a message's outcome, its documents and their export rows, atomically.

        ``documents`` rows carry the document columns; an existing document with
        the same sha256 is linked, not inserted again. ``targets_for(doc_row)``
        names the export targets a new document goes to. Returns document ids.
        """
        return list(self.finish_processed(message_id, status=status, reason=reason, fields=fields,
                                          documents=documents, targets_for=targets_for).document_ids)

    def finish_processed(
        self,
        message_id: int,
        *,
        status: str,
        reason: str,
        fields: Row,
        documents: Sequence[Row] = (),
        targets_for: Any = None,
        dedup: DedupKey | None = None,
        duplicate_reason: Callable[[Row], str] | None = None,
    ) -> Finished:
        """``finish_message``, unless another copy of the mail got its outcome first.

        With ``dedup``, the copy that was there first is looked for inside the
        transaction that records the outcome (writers take turns: ``BEGIN
        IMMEDIATE``), so however two copies race (two workers, SMTP and IMAP,
        ``import`` beside ``serve``) exactly one is recorded with its outcome
        and every other one as ``duplicate`` of it, with no documents.
        """
        now = iso(utcnow())
        doc_ids: list[int] = []
        first: Row | None = None
        # not durable: after a power cut the message is processed again, idempotently
        with self.write(durable=False) as conn:
            if dedup is not None:
                first = self._first_copy(conn, message_id, dedup)
            if first is not None:
                status = "duplicate"
                reason = duplicate_reason(first) if duplicate_reason else f"same message as #{first['id']}"
                fields = dict(fields, duplicate_of=first["id"])
                documents = ()
            for doc in documents:
                existing = conn.execute("SELECT id FROM documents WHERE sha256 = ? OR ocr_source_sha256 = ?",
                                        (doc["sha256"], doc["sha256"])).fetchone()
                if existing is not None:
                    doc_id = int(existing["id"])
                else:
                    row = dict(doc, message_id=message_id, created=now)
                    cols = ", ".join(row)
                    cur = conn.execute(
                        f"INSERT INTO documents ({cols}) VALUES ({', '.join('?' for _ in row)})",
                        [_encode(v) for v in row.values()],
                    )
                    doc_id = int(cur.lastrowid or 0)
                    for target in targets_for(dict(row, id=doc_id)) if targets_for else ():
                        conn.execute(
                            "INSERT OR IGNORE INTO exports (document_id, target, created) VALUES (?, ?, ?)",
                            (doc_id, target, now),
                        )
                conn.execute("INSERT OR IGNORE INTO message_documents VALUES (?, ?)", (message_id, doc_id))
                doc_ids.append(doc_id)
            update = dict(fields, status=status, reason=reason, processed_at=now, claimed_by=None, claimed_at=None,
                          claim_error=None)
            if isinstance(update.get("decision"), dict):
                update["decision"] = pack_decision(update["decision"])
            sets = ", ".join(f"{k} = ?" for k in update)
            conn.execute(f"UPDATE messages SET {sets} WHERE id = ?", [*(_encode(v) for v in update.values()), message_id])
        return Finished(status, reason, tuple(doc_ids), first)

    def release_message(self, message_id: int, *, by: str = "") -> Row:
        """Release a ``suspicious`` message: a person vouches for its sender; it is processed again.

        The pipeline then treats the sender as authenticated, so the rule the
        mail claimed decides and its documents are exported. Raises StoreError
        when the message does not exist or is not suspicious.
        """
        with self.write() as conn:
            row = conn.execute("SELECT id, status FROM messages WHERE id = ?", (message_id,)).fetchone()
            if row is None:
                raise StoreError(f"no message {message_id}")
            if row["status"] != "suspicious":
                raise StoreError(f"message {message_id} is {row['status']}, not suspicious: there is nothing to release")
            conn.execute(
                "UPDATE messages SET status = 'received', released_at = ?, released_by = ?, claimed_by = NULL, "
                "claimed_at = NULL WHERE id = ?", (iso(utcnow()), by or None, message_id))
        released = self.message(message_id)
        assert released is not None
        return released

    def request_import(self, message_id: int, *, by: str = "") -> Row:
        """A person asks for an ``unmatched`` or ``ignored`` message to be imported; it is processed again.

        The pipeline then imports its document attachments (or, without any,
        the mail rendered to PDF), whatever the rules and the policy say.
        Raises StoreError when the message does not exist or has another status.
        """
        with self.write() as conn:
            row = conn.execute("SELECT id, status FROM messages WHERE id = ?", (message_id,)).fetchone()
            if row is None:
                raise StoreError(f"no message {message_id}")
            if row["status"] not in ("unmatched", "ignored"):
                raise StoreError(f"message {message_id} is {row['status']}: only unmatched or ignored mail is "
                                 "imported on request (a suspicious one is released)")
            conn.execute(
                "UPDATE messages SET status = 'received', import_requested_at = ?, import_requested_by = ?, "
                "claimed_by = NULL, claimed_at = NULL, attempts = 0 WHERE id = ?",
                (iso(utcnow()), by or None, message_id))
        requested = self.message(message_id)
        assert requested is not None
        return requested

    def suspicious_auth(self) -> list[tuple[int, str]]:
        """(id, stored auth JSON) of the ``suspicious`` messages that have an authentication result."""
        rows = self._conn().execute(
            "SELECT id, auth FROM messages WHERE status = 'suspicious' AND auth IS NOT NULL ORDER BY id")
        return [(int(r[0]), str(r[1])) for r in rows]

    def requeue_suspicious(self, ids: Sequence[int]) -> list[int]:
        """Put messages that are still ``suspicious`` back to ``received``; returns those that were.

        Each is a new request (attempts start afresh): a mail re-checked
        several times was never interrupted.
        """
        done = []
        with self.write() as conn:
            for i in ids:
                cur = conn.execute("UPDATE messages SET status = 'received', claimed_by = NULL, claimed_at = NULL, "
                                   "attempts = 0 WHERE id = ? AND status = 'suspicious'", (i,))
                if cur.rowcount:
                    done.append(int(i))
        return done

    def record_ibans(self, message_id: int, records: Sequence[tuple[str, str, str | None]],
                     sender_domain: str = "") -> None:
        """Remember the (seller key, IBAN, confirmed by or None) a message's documents carried.

        A confirmation is never taken back by processing the message again.
        """
        if not records:
            return
        now = iso(utcnow())
        with self.write() as conn:
            conn.executemany(
                "INSERT INTO seller_ibans (seller_key, iban, message_id, seen_at, confirmed_by, sender_domain) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (seller_key, iban, message_id) DO UPDATE SET "
                "confirmed_by = coalesce(seller_ibans.confirmed_by, excluded.confirmed_by)",
                [(key, iban, message_id, now, by, sender_domain or None) for key, iban, by in records])

    def known_ibans(self, keys: Sequence[str], *, before_message: int) -> tuple[str, set[str], int, bool] | None:
        """The account a seller is known by, before ``before_message``: (key, IBANs, message id, confirmed).

        The newest confirmed message of the first of ``keys`` that has one;
        when none has, the first message of the first key seen at all (its
        IBANs are compared with, but never replaced by, unconfirmed mail).
        """
        conn = self._conn()
        for confirmed, pick in ((True, "max"), (False, "min")):
            where = "AND confirmed_by IS NOT NULL" if confirmed else ""
            for key in keys:
                row = conn.execute(f"SELECT {pick}(message_id) FROM seller_ibans WHERE seller_key = ? "
                                   f"AND message_id < ? {where}", (key, before_message)).fetchone()
                if row is None or row[0] is None:
                    continue
                mid = int(row[0])
                ibans = {r[0] for r in conn.execute(
                    f"SELECT iban FROM seller_ibans WHERE seller_key = ? AND message_id = ? {where}", (key, mid))}
                return key, ibans, mid, confirmed
        return None

    def seller_domains(self, key: str, *, before_message: int) -> set[str] | None:
        """The sender domains a seller is known to write from (None: the seller was never seen).

        Those of its confirmed accounts; without any, that of its first message. A row
        recorded before database version 5 has no domain: its message's From stands in.
        """
        conn = self._conn()
        domain = ("coalesce(s.sender_domain, m.sender) FROM seller_ibans s LEFT JOIN messages m "
                  "ON m.id = s.message_id WHERE s.seller_key = ? AND s.message_id < ?")
        rows = conn.execute(f"SELECT DISTINCT {domain} AND s.confirmed_by IS NOT NULL",
                            (key, before_message)).fetchall()
        if rows:
            return {r[0] for r in rows if r[0]}
        first = conn.execute(f"SELECT {domain} ORDER BY s.message_id LIMIT 1", (key, before_message)).fetchone()
        return None if first is None else ({first[0]} if first[0] else set())

    def ibans_recorded(self, document_id: int, ibans: Sequence[str]) -> bool:
        """Whether the IBAN guard remembers any of ``ibans`` from the messages of a document."""
        marks = ",".join("?" * len(ibans))
        row = self._conn().execute(
            f"SELECT 1 FROM seller_ibans WHERE iban IN ({marks}) AND message_id IN "
            "(SELECT message_id FROM message_documents WHERE document_id = ?) LIMIT 1",
            (*ibans, document_id)).fetchone()
        return row is not None

    def confirm_ibans(self, document_id: int, ibans: Sequence[str], by: str) -> int:
        """Record that a person confirmed ``ibans`` for the sellers of a document's messages; returns rows changed."""
        with self.write() as conn:
            cur = conn.executemany(
                "UPDATE seller_ibans SET confirmed_by = ? WHERE iban = ? AND confirmed_by IS NULL AND message_id IN "
                "(SELECT message_id FROM message_documents WHERE document_id = ?)",
                [(by, iban, document_id) for iban in ibans])
            return int(cur.rowcount)

    def reset_for_reprocess(self, ids: Sequence[int], *, keep_attempts: bool = False) -> None:
        """Put messages back to ``received`` so the pipeline runs them again.

        A person's request starts the count of attempts afresh; a retry after a
        failure (``keep_attempts``) does not.
        """
        attempts = "" if keep_attempts else ", attempts = 0, claim_error = NULL"
        with self.write() as conn:
            conn.executemany(
                f"UPDATE messages SET status = 'received', claimed_by = NULL, claimed_at = NULL{attempts} WHERE id = ?",
                [(i,) for i in ids],
            )

    def message_ids(self, *, status: str | None = None, since: str | None = None) -> list[int]:
        """Ids of messages with a status (and received on/after ``since``)."""
        sql, args = "SELECT id FROM messages WHERE 1=1", []
        if status:
            sql += " AND status = ?"
            args.append(status)
        if since:
            sql += " AND received >= ?"
            args.append(since)
        return [int(r[0]) for r in self._conn().execute(sql + " ORDER BY id", args)]

    def list_messages(
        self, *, limit: int = 50, offset: int = 0, status: str | None = None, source: str | None = None,
        sender: str | None = None, text: str | None = None, since: str | None = None, until: str | None = None,
        rule: str | None = None,
    ) -> tuple[list[Row], int]:
        """Messages, newest first, with the total count for paging; ``rule``: those that rule decided."""
        where, args = ["1=1"], []
        if rule:
            where.append("decision IS NOT NULL AND json_valid(decision) AND json_extract(decision, '$.rule') = ?")
            args.append(rule)
        if status:
            where.append("status = ?")
            args.append(status)
        if source:
            where.append("source LIKE ?")
            args.append(source + "%")
        if sender:
            where.append("(sender LIKE ? OR mail_from LIKE ?)")
            args += [f"%{sender}%", f"%{sender}%"]
        if text:
            where.append("(subject LIKE ? OR sender LIKE ? OR reason LIKE ?)")
            args += [f"%{text}%"] * 3
        if since:
            where.append("received >= ?")
            args.append(since)
        if until:
            where.append("received < ?")
            args.append(until)
        return self._page("messages", where, args, limit, offset)

    def status_counts(self) -> dict[str, int]:
        """Messages by status."""
        rows = self._conn().execute("SELECT status, count(*) FROM messages GROUP BY status")
        return {r[0]: int(r[1]) for r in rows}

    def message_sources(self) -> list[str]:
        """The distinct sources messages came from (for filters)."""
        return [r[0] for r in self._conn().execute("SELECT DISTINCT source FROM messages ORDER BY source")]

    def messages_by_rule(self, rule: str, limit: int = 20) -> list[Row]:
        """The newest messages a rule decided."""
        rows = self._conn().execute(
            "SELECT * FROM messages WHERE decision IS NOT NULL AND json_valid(decision) "
            "AND json_extract(decision, '$.rule') = ? ORDER BY id DESC LIMIT ?", (rule, limit))
        return [_row_required(r) for r in rows]

    def processing_latency(self) -> tuple[int, float]:
        """Processed messages and the sum of their seconds from receipt to outcome."""
        row = self._conn().execute(
            "SELECT count(*), coalesce(sum(max(0, (julianday(processed_at) - julianday(received)) * 86400.0)), 0) "
            "FROM messages WHERE processed_at IS NOT NULL").fetchone()
        return int(row[0]), float(row[1])

    def oldest_waiting(self) -> str | None:
        """When the oldest message still waiting for processing was received, or None."""
        row = self._conn().execute("SELECT min(received) FROM messages WHERE status = 'received'").fetchone()
        return None if row is None else row[0]

    # -- documents ---------------------------------------------------------------

    def document(self, document_id: int) -> Row | None:
        """One document row, or None."""
        return _row(self._conn().execute("SELECT * FROM documents WHERE id = ?", (document_id,)).fetchone())

    def documents_of(self, message_id: int) -> list[Row]:
        """The documents a message carried (including ones first seen elsewhere)."""
        rows = self._conn().execute(
            "SELECT d.* FROM documents d JOIN message_documents md ON md.document_id = d.id "
            "WHERE md.message_id = ? ORDER BY d.id",
            (message_id,),
        )
        return [_row_required(r) for r in rows]

    def list_documents(
        self, *, limit: int = 50, offset: int = 0, company: str | None = None, document_type: str | None = None,
        tag: str | None = None, approved: bool | None = None, archived: bool | None = False,
        export_state: str | None = None, orphaned: bool | None = None,
    ) -> tuple[list[Row], int]:
        """Documents, newest first, with the total count for paging.

        ``orphaned``: only documents no ``imported`` mail links any more (their
        mail was re-decided after they were imported), or only the others.
        """
        where, args = ["1=1"], []
        if orphaned is not None:
            where.append(("" if orphaned else "NOT ") + ORPHANED)
        if company:
            where.append("company LIKE ?")
            args.append(f"%{company}%")
        if document_type:
            where.append("document_type = ?")
            args.append(document_type)
        if tag:
            where.append("EXISTS (SELECT 1 FROM json_each(documents.tags) WHERE value = ?)")
            args.append(tag)
        if approved is not None:
            where.append("approved_at IS NOT NULL" if approved else "approved_at IS NULL")
        if archived is not None:
            where.append("archived_at IS NOT NULL" if archived else "archived_at IS NULL")
        if export_state:
            where.append("EXISTS (SELECT 1 FROM exports e WHERE e.document_id = documents.id AND e.state = ?)")
            args.append(export_state)
        return self._page("documents", where, args, limit, offset)

    def update_document(self, document_id: int, **fields: Any) -> None:
        """Change a document's metadata (company, document_type, tags, note, approved_at, ...)."""
        if not fields:
            return
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self.write() as conn:
            conn.execute(f"UPDATE documents SET {sets} WHERE id = ?", [*(_encode(v) for v in fields.values()), document_id])

    def document_count(self) -> int:
        """How many documents there are."""
        return int(self._conn().execute("SELECT count(*) FROM documents").fetchone()[0])

    def document_months(self, since: str) -> dict[str, int]:
        """Documents stored per month (``YYYY-MM``) from ``since`` (an ISO date) on."""
        rows = self._conn().execute(
            "SELECT substr(created, 1, 7) AS month, count(*) FROM documents WHERE created >= ? GROUP BY month",
            (since,))
        return {r[0]: int(r[1]) for r in rows}

    def document_companies(self, limit: int = 10) -> list[tuple[str | None, int]]:
        """The companies with the most documents, as (company or None, count)."""
        rows = self._conn().execute(
            "SELECT nullif(trim(company), '') AS c, count(*) AS n FROM documents GROUP BY c "
            "ORDER BY n DESC, c LIMIT ?", (limit,))
        return [(r[0], int(r[1])) for r in rows]

    def document_facets(self) -> dict[str, list[str]]:
        """The companies, document types and tags in use (for filters and suggestions)."""
        conn = self._conn()
        return {
            "companies": [r[0] for r in conn.execute(
                "SELECT DISTINCT company FROM documents WHERE company IS NOT NULL AND company != '' ORDER BY company")],
            "document_types": [r[0] for r in conn.execute(
                "SELECT DISTINCT document_type FROM documents WHERE document_type IS NOT NULL "
                "AND document_type != '' ORDER BY document_type")],
            "tags": [r[0] for r in conn.execute(
                "SELECT DISTINCT j.value FROM documents, json_each(documents.tags) j "
                "WHERE json_valid(documents.tags) ORDER BY j.value")],
        }

    # -- exports -----------------------------------------------------------------

    def exports_of(self, document_id: int) -> list[Row]:
        """The export rows of one document."""
        rows = self._conn().execute("SELECT * FROM exports WHERE document_id = ? ORDER BY target", (document_id,))
        return [_row_required(r) for r in rows]

    def ensure_exports(self, document_ids: Sequence[int], target: str) -> int:
        """Queue documents for a target (no-op where a row exists); returns rows added."""
        now = iso(utcnow())
        with self.write() as conn:
            before = conn.total_changes
            conn.executemany(
                "INSERT OR IGNORE INTO exports (document_id, target, created) VALUES (?, ?, ?)",
                [(d, target, now) for d in document_ids],
            )
            return conn.total_changes - before

    def backfill_candidates(self, target: str, since: str | None) -> list[Row]:
        """Documents whose mail is imported, dated ``since`` or later, with their first mail's source.

        ``has_export``: the target already has a row for it (delivered, queued or failed).
        """
        return [dict(r) for r in self._conn().execute(
            f"SELECT documents.*, m.source, EXISTS (SELECT 1 FROM exports e WHERE e.document_id = documents.id "
            f"AND e.target = ?) AS has_export FROM documents JOIN messages m ON m.id = documents.message_id "
            f"WHERE NOT {ORPHANED} AND (? IS NULL OR COALESCE(documents.doc_date, substr(documents.created, 1, 10)) >= ?) "
            f"ORDER BY documents.id", (target, since, since))]

    def claim_export(self, target: str, *, now: dt.datetime, require_approval: bool,
                     token: str | None = None, exclude: Sequence[int] = ()) -> Row | None:
        """Claim one export of ``target`` that is due; None when nothing is (the claim ends with this process)."""
        token = token or self.claims.token()
        approval = "AND d.approved_at IS NOT NULL" if require_approval else ""
        skip = f"AND e.id NOT IN ({','.join(str(int(i)) for i in exclude)})" if exclude else ""
        with self.write(durable=False) as conn:
            row = conn.execute(
                f"""UPDATE exports SET state = 'running', claimed_by = ?, claimed_at = ?, attempts = attempts + 1
                WHERE id = (SELECT e.id FROM exports e JOIN documents d ON d.id = e.document_id
                    WHERE e.target = ? AND e.state IN ('pending', 'failed') AND e.claimed_by IS NULL
                    AND (d.ocr IS NULL OR d.ocr NOT IN ('pending', 'running'))
                    AND (e.next_attempt IS NULL OR e.next_attempt <= ?) {approval} {skip}
                    ORDER BY e.id LIMIT 1)
                RETURNING *""",
                (token, iso(now), target, iso(now)),
            ).fetchone()
        return _row(row)

    def finish_export(self, export_id: int, *, state: str, location: str | None = None, error: str | None = None,
                      next_attempt: dt.datetime | None = None) -> None:
        """Record a delivery's outcome and release the claim."""
        with self.write() as conn:
            conn.execute(
                "UPDATE exports SET state = ?, location = COALESCE(?, location), last_error = ?, next_attempt = ?, "
                "delivered_at = CASE WHEN ? = 'delivered' THEN ? ELSE delivered_at END, "
                "claimed_by = NULL, claimed_at = NULL WHERE id = ?",
                (state, location, error, iso(next_attempt), state, iso(utcnow()), export_id),
            )

    def finish_exports_delivered(self, items: Sequence[tuple[int, str]]) -> None:
        """Record several confirmed deliveries, (export id, location), in one durable commit."""
        now = iso(utcnow())
        with self.write() as conn:
            conn.executemany(
                "UPDATE exports SET state = 'delivered', location = ?, last_error = NULL, next_attempt = NULL, "
                "delivered_at = ?, claimed_by = NULL, claimed_at = NULL WHERE id = ?",
                [(location, now, export_id) for export_id, location in items],
            )

    def release_export_claims(self, export_ids: Sequence[int], *, error: str) -> None:
        """Give running exports back to the queue (their delivery is checked again), noting ``error``."""
        with self.write() as conn:
            conn.executemany(
                "UPDATE exports SET state = 'pending', claimed_by = NULL, claimed_at = NULL, last_error = ? "
                "WHERE id = ? AND state = 'running'",
                [(error, export_id) for export_id in export_ids],
            )

    def retry_export(self, export_id: int) -> None:
        """Make a failed export due now."""
        with self.write() as conn:
            conn.execute(
                "UPDATE exports SET state = 'pending', next_attempt = NULL WHERE id = ? AND state IN ('failed', 'error')",
                (export_id,),
            )

    def requeue_export(self, document_id: int, target: str) -> None:
        """Export a document to a target again ("export again")."""
        now = iso(utcnow())
        with self.write() as conn:
            conn.execute(
                "INSERT INTO exports (document_id, target, created) VALUES (?, ?, ?) "
                "ON CONFLICT(document_id, target) DO UPDATE SET state = 'pending', next_attempt = NULL, "
                "attempts = 0, last_error = NULL WHERE claimed_by IS NULL",
                (document_id, target, now),
            )

    def list_exports(self, *, target: str | None = None, state: str | None = None, limit: int = 100,
                     offset: int = 0) -> list[Row]:
        """Export rows with their document's file name, newest first."""
        where, args = ["1=1"], []
        if target:
            where.append("e.target = ?")
            args.append(target)
        if state:
            where.append("e.state = ?")
            args.append(state)
        rows = self._conn().execute(
            f"SELECT e.*, d.filename FROM exports e JOIN documents d ON d.id = e.document_id "
            f"WHERE {' AND '.join(where)} ORDER BY e.id DESC LIMIT ? OFFSET ?",
            [*args, limit, offset],
        )
        return [_row_required(r) for r in rows]

    def export_counts(self) -> dict[str, dict[str, int]]:
        """Export rows by target and state."""
        out: dict[str, dict[str, int]] = {}
        for r in self._conn().execute("SELECT target, state, count(*) FROM exports GROUP BY target, state"):
            out.setdefault(r[0], {})[r[1]] = int(r[2])
        return out

    def export_row(self, export_id: int) -> Row | None:
        """One export row, or None."""
        return _row(self._conn().execute("SELECT * FROM exports WHERE id = ?", (export_id,)).fetchone())

    def export_health(self) -> dict[str, Row]:
        """Per target: the last delivery, and the newest failure with its error and whether it is retried.

        ``last_error_state`` is ``failed`` (retried at ``last_error_next_attempt``)
        or ``error`` (permanent: no retry can help; ``last_error_permanent``).
        """
        conn = self._conn()
        out: dict[str, Row] = {}
        none = {"last_error": None, "last_error_document": None, "last_error_state": None,
                "last_error_permanent": None, "last_error_attempts": None, "last_error_next_attempt": None}
        for r in conn.execute("SELECT target, max(delivered_at) FROM exports GROUP BY target"):
            out[r[0]] = {"last_delivered": r[1], **none}
        for r in conn.execute(
                "SELECT e.target, e.last_error, e.document_id, e.state, e.attempts, e.next_attempt FROM exports e "
                "WHERE e.id IN (SELECT max(id) FROM exports WHERE state IN ('failed', 'error') GROUP BY target)"):
            out.setdefault(r[0], {"last_delivered": None, **none})
            out[r[0]].update(last_error=r[1], last_error_document=r[2], last_error_state=r[3],
                             last_error_permanent=r[3] == "error", last_error_attempts=r[4],
                             last_error_next_attempt=r[5] if r[3] == "failed" else None)
        return out

    def archive_if_done(self, document_id: int, targets: Sequence[str]) -> bool:
        """Mark a document archived once every target in ``targets`` has delivered it."""
        with self.write() as conn:
            states = conn.execute(
                "SELECT target, state FROM exports WHERE document_id = ?", (document_id,)
            ).fetchall()
            by_target = {r["target"]: r["state"] for r in states}
            if targets and all(by_target.get(t) == "delivered" for t in targets if t in by_target):
                conn.execute(
                    "UPDATE documents SET archived_at = COALESCE(archived_at, ?) WHERE id = ?",
                    (iso(utcnow()), document_id),
                )
                return True
        return False

    # -- key/value ---------------------------------------------------------------

    def get_kv(self, key: str, default: Any = None) -> Any:
        """A JSON value stored under ``key``."""
        row = self._conn().execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def set_kv(self, key: str, value: Any) -> None:
        """Store a JSON value under ``key``."""
        with self.write() as conn:
            conn.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (key, json.dumps(value)))

    # -- what needs a person (health banner, notifications) ------------------------

    def messages_with_status(self, status: str, limit: int = 1000) -> list[Row]:
        """The newest messages with ``status`` (id, received, sender, subject, reason)."""
        return [dict(r) for r in self._conn().execute(
            "SELECT id, received, sender, subject, reason FROM messages WHERE status = ? ORDER BY id DESC LIMIT ?",
            (status, limit))]

    def payment_flagged_documents(self, limit: int = 1000) -> list[Row]:
        """The newest documents the IBAN guard flagged (a changed bank account)."""
        return [dict(r) for r in self._conn().execute(
            "SELECT id, filename, company, payment_details_changed FROM documents "
            "WHERE payment_details_changed IS NOT NULL ORDER BY id DESC LIMIT ?", (limit,))]

    def awaiting_approval(self, targets: Sequence[str]) -> list[Row]:
        """Documents not yet approved whose export to one of ``targets`` waits for approval."""
        if not targets:
            return []
        marks = ",".join("?" * len(targets))
        return [dict(r) for r in self._conn().execute(
            f"SELECT DISTINCT d.id, d.filename, d.company FROM exports e JOIN documents d ON d.id = e.document_id "
            f"WHERE e.target IN ({marks}) AND e.state IN ('pending', 'failed') AND d.approved_at IS NULL "
            f"ORDER BY d.id", list(targets))]

    def earlier_documents(self, message_id: int) -> list[Row]:
        """The documents a message imported before, each with the targets it was delivered to."""
        return [dict(r) for r in self._conn().execute(
            "SELECT d.id, d.filename, (SELECT group_concat(e.target, ', ') FROM exports e WHERE e.document_id = d.id "
            "AND e.state = 'delivered') AS delivered FROM message_documents md JOIN documents d ON d.id = md.document_id "
            "WHERE md.message_id = ? ORDER BY d.id", (message_id,))]

    def is_orphaned(self, document_id: int) -> bool:
        """Whether no imported (or not yet processed) mail links the document any more."""
        return self._conn().execute(f"SELECT 1 FROM documents WHERE id = ? AND {ORPHANED}",
                                    (document_id,)).fetchone() is not None

    def withdraw_exports(self, document_ids: Sequence[int]) -> int:
        """Drop the exports not yet delivered of documents no imported mail links any more; returns how many.

        What was delivered stays delivered (the gateway does not delete files on
        the targets); the documents are listed as orphaned for a person to handle.
        """
        if not document_ids:
            return 0
        marks = ",".join("?" * len(document_ids))
        with self.write() as conn:
            cur = conn.execute(
                f"DELETE FROM exports WHERE state IN ('pending', 'failed') AND claimed_by IS NULL "
                f"AND document_id IN ({marks}) AND document_id IN (SELECT id FROM documents WHERE {ORPHANED})",
                list(document_ids))
            return cur.rowcount

    # -- the admin page's log ---------------------------------------------------------

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

    def known_documents(self, shas: Sequence[str]) -> dict[str, int]:
        """sha256 -> id of the documents already stored among ``shas``."""
        if not shas:
            return {}
        marks = ",".join("?" * len(shas))
        known = {str(r[0]): int(r[1]) for r in self._conn().execute(
            f"SELECT sha256, id FROM documents WHERE sha256 IN ({marks})", list(shas))}
        known.update({str(r[0]): int(r[1]) for r in self._conn().execute(  # a scan stored with its text layer
            f"SELECT ocr_source_sha256, id FROM documents WHERE ocr_source_sha256 IN ({marks})", list(shas))})
        return known

    # -- OCR ---------------------------------------------------------------------

    def claim_ocr(self) -> Row | None:
        """Claim the oldest document waiting for OCR (``ocr`` pending -> running); None when none waits."""
        with self.write(durable=False) as conn:
            row = conn.execute(
                "UPDATE documents SET ocr = 'running' WHERE id = (SELECT id FROM documents WHERE ocr = 'pending' "
                "ORDER BY id LIMIT 1) RETURNING *").fetchone()
        return _row(row)

    def release_ocr_claims(self) -> int:
        """At start: documents whose reading was cut short wait again; returns how many."""
        with self.write() as conn:
            return conn.execute("UPDATE documents SET ocr = 'pending' WHERE ocr = 'running'").rowcount

    def ocr_waiting(self) -> int:
        """How many documents wait for OCR or are being read."""
        return int(self._conn().execute(
            "SELECT count(*) FROM documents WHERE ocr IN ('pending', 'running')").fetchone()[0])

    def finish_ocr(self, document_id: int, *, state: str, warning: str | None = None, sha256: str | None = None,
                   path: str | None = None, size: int | None = None) -> bool:
        """Record a document's OCR outcome; with ``sha256``, its file is now the one with a text layer.

        Returns False when another document already holds that file (it stays as it came).
        """
        with self.write() as conn:
            row = conn.execute("SELECT sha256, warnings FROM documents WHERE id = ?", (document_id,)).fetchone()
            if row is None:
                return False
            warnings = json.loads(row["warnings"] or "[]")
            replaced = False
            if sha256 is not None and sha256 != row["sha256"]:
                taken = conn.execute("SELECT id FROM documents WHERE sha256 = ?", (sha256,)).fetchone()
                if taken is None:
                    conn.execute("UPDATE documents SET ocr_source_sha256 = sha256, sha256 = ?, path = ?, size = ? "
                                 "WHERE id = ?", (sha256, path, size, document_id))
                    replaced = True
                else:
                    state, warning = "failed", f"OCR: the read file is already document {taken['id']}"
            if warning:
                warnings.append(warning)
            conn.execute("UPDATE documents SET ocr = ?, warnings = ? WHERE id = ?",
                         (state, json.dumps(warnings), document_id))
        return replaced or sha256 is None

    # -- IMAP state --------------------------------------------------------------

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

    def message_statuses(self, ids: Sequence[int]) -> dict[int, str]:
        """Message id -> status, for the ids given."""
        out: dict[int, str] = {}
        conn = self._conn()
        for i in range(0, len(ids), 500):
            part = list(ids[i:i + 500])
            rows = conn.execute(f"SELECT id, status FROM messages WHERE id IN ({','.join('?' * len(part))})", part)
            out.update({int(r[0]): str(r[1]) for r in rows})
        return out


# a document that no imported mail links any more: its mail was re-decided (ignored, unmatched, ...)
ORPHANED = ("NOT EXISTS (SELECT 1 FROM message_documents md JOIN messages m ON m.id = md.message_id "
            "WHERE md.document_id = documents.id AND m.status IN ('imported', 'received'))")


# An explanation in words lists every rule tried: with a large rule set that
# is ~150 bytes per rule for every mail, most of it the same words ("from: ...
# did not match <sender>"). The pipeline now stores a compact ``trace``
# instead (gateway.rules.trace; put into words by gateway.explain when read);
# words are still stored where there is no trace, and rows written before
# hold them: above this size deflated (about a tenth).
PACK_EXPLAIN_OVER = 4096


def pack_decision(decision: Row) -> Row:
    """The decision as stored: a long ``explain`` deflated into ``explain_z`` (base64)."""
    explain = decision.get("explain")
    if not explain:
        return decision
    text = json.dumps(explain, default=str, ensure_ascii=False, separators=(",", ":"))
    if len(text) <= PACK_EXPLAIN_OVER:
        return decision
    packed = base64.b64encode(zlib.compress(text.encode("utf-8"), 1)).decode("ascii")
    out = {k: v for k, v in decision.items() if k != "explain"}
    out["explain_z"] = packed
    return out


def decision_of(value: Any) -> Row | None:
    """A stored ``decision`` column as the dict it was recorded as (``explain`` unpacked)."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if not isinstance(value, dict):
        return None
    out: Row = value
    packed = out.get("explain_z")
    if isinstance(packed, str):
        out = {k: v for k, v in out.items() if k != "explain_z"}
        try:
            out["explain"] = json.loads(zlib.decompress(base64.b64decode(packed)).decode("utf-8"))
        except (ValueError, zlib.error):
            out["explain"] = []
    return out


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
