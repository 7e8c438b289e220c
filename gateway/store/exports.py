"""Exports: one row per document and target; claims, outcomes, retries, backfill, health, archiving."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from gateway.store.base import Row, StoreBase, _row, _row_required, iso, utcnow
from gateway.store.documents import ORPHANED

EXPORT_STATES = ("pending", "running", "delivered", "failed", "error")


class ExportsMixin(StoreBase):
    """The ``exports`` table."""

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

    def awaiting_approval(self, targets: Sequence[str]) -> list[Row]:
        """Documents not yet approved whose export to one of ``targets`` waits for approval."""
        if not targets:
            return []
        marks = ",".join("?" * len(targets))
        return [dict(r) for r in self._conn().execute(
            f"SELECT DISTINCT d.id, d.filename, d.company FROM exports e JOIN documents d ON d.id = e.document_id "
            f"WHERE e.target IN ({marks}) AND e.state IN ('pending', 'failed') AND d.approved_at IS NULL "
            f"ORDER BY d.id", list(targets))]

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
