"""Documents: rows, their edits, listings and facets for the admin page, orphaned and known documents."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.store.base import Row, StoreBase, _encode, _row, _row_required

# a document that no imported mail links any more: its mail was re-decided (ignored, unmatched, ...)
ORPHANED = ("NOT EXISTS (SELECT 1 FROM message_documents md JOIN messages m ON m.id = md.message_id "
            "WHERE md.document_id = documents.id AND m.status IN ('imported', 'received'))")


class DocumentsMixin(StoreBase):
    """The ``documents`` and ``message_documents`` tables."""

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
