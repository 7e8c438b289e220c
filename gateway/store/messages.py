"""Messages: intake rows, claims, the duplicate check, outcomes (``finish_processed``), releases, listings.

Also how a rule decision is stored (``pack_decision``/``decision_of``).
"""

from __future__ import annotations

import base64
import json
import sqlite3
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.errors import StoreError
from gateway.store.base import Row, StoreBase, _encode, _row, _row_required, iso, utcnow

MESSAGE_STATUSES = ("received", "imported", "ignored", "unmatched", "duplicate", "quarantined", "suspicious")



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


class MessagesMixin(StoreBase):
    """The ``messages`` table (and what a message's outcome writes: its documents and export rows)."""

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

    def messages_with_status(self, status: str, limit: int = 1000) -> list[Row]:
        """The newest messages with ``status`` (id, received, sender, subject, reason)."""
        return [dict(r) for r in self._conn().execute(
            "SELECT id, received, sender, subject, reason FROM messages WHERE status = ? ORDER BY id DESC LIMIT ?",
            (status, limit))]

    def message_statuses(self, ids: Sequence[int]) -> dict[int, str]:
        """Message id -> status, for the ids given."""
        out: dict[int, str] = {}
        conn = self._conn()
        for i in range(0, len(ids), 500):
            part = list(ids[i:i + 500])
            rows = conn.execute(f"SELECT id, status FROM messages WHERE id IN ({','.join('?' * len(part))})", part)
            out.update({int(r[0]): str(r[1]) for r in rows})
        return out
