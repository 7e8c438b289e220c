"""A person's corrections of documents' fields and the supplier layouts learned from them.

``field_corrections`` keeps each correction apart from what was read (so a new
reading never overwrites it: ``set_read_fields`` lays the corrections over it);
``learned_layouts`` keeps, per supplier key and field, the label or place a
correction taught (gateway.fields.corrections, gateway.fields.learned).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from gateway.errors import StoreError
from gateway.store.base import Row, StoreBase, _encode, _row_required, iso, utcnow


class CorrectionsMixin(StoreBase):
    """Corrections of fields (``field_corrections``) and learned layouts (``learned_layouts``)."""

    def field_corrections(self, document_id: int) -> dict[str, Row]:
        """Field name -> the person's correction (value, read, column_before, corrected_by, corrected_at)."""
        rows = self._conn().execute("SELECT * FROM field_corrections WHERE document_id = ? ORDER BY field",
                                    (document_id,))
        return {str(r["field"]): dict(r, read=json.loads(r["read"]) if r["read"] else None) for r in rows}

    def correct_fields(self, document_id: int, changes: dict[str, str | None], *,
                       by: str = "") -> dict[str, tuple[str | None, str | None]]:
        """Record a person's corrections (a None value withdraws one); returns field -> (shown before, now).

        The document's fields are the reading with every correction laid over it; its
        company, invoice_number, doc_date and document_type follow the corrected fields
        (and go back to what they were when a correction is withdrawn).
        """
        from gateway.fields import corrections

        now = iso(utcnow())
        changed: dict[str, tuple[str | None, str | None]] = {}
        with self.write() as conn:
            doc = conn.execute("SELECT * FROM documents WHERE id = ?", (document_id,)).fetchone()
            if doc is None:
                raise StoreError(f"there is no document {document_id}")
            stored = corrections.stored_fields(doc["fields"], doc["einvoice"])
            shown = dict((stored or {}).get("fields") or {})
            existing = {str(r["field"]): r for r in conn.execute(
                "SELECT * FROM field_corrections WHERE document_id = ?", (document_id,))}
            columns: dict[str, Any] = {}
            for name, value in changes.items():
                column = corrections.COLUMNS.get(name)
                before = existing.get(name)
                if value is None:
                    if before is None:
                        continue
                    conn.execute("DELETE FROM field_corrections WHERE document_id = ? AND field = ?",
                                 (document_id, name))
                    read = json.loads(before["read"]) if before["read"] else None
                    stored = corrections.withdraw(stored, name, read)
                    if column:
                        columns[column] = before["column_before"]
                elif before is None:
                    conn.execute("INSERT INTO field_corrections (document_id, field, value, read, column_before, "
                                 "corrected_by, corrected_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                                 (document_id, name, value, _encode(corrections.read_part(stored, name)),
                                  doc[column] if column else None, by, now))
                else:
                    conn.execute("UPDATE field_corrections SET value = ?, corrected_by = ?, corrected_at = ? "
                                 "WHERE document_id = ? AND field = ?", (value, by, now, document_id, name))
                if column and value is not None:
                    columns[column] = value
                if shown.get(name) != value:
                    changed[name] = (shown.get(name), value)
            kept = {str(r["field"]): str(r["value"]) for r in conn.execute(
                "SELECT field, value FROM field_corrections WHERE document_id = ?", (document_id,))}
            update = dict(columns, fields=corrections.apply(stored, kept))
            sets = ", ".join(f"{k} = ?" for k in update)
            conn.execute(f"UPDATE documents SET {sets} WHERE id = ?", [*(_encode(v) for v in update.values()), document_id])
        return changed

    def set_read_fields(self, document_id: int, read: Row, **columns: Any) -> None:
        """Store a new reading of a document's fields (``DocumentFields.to_json()``), the corrections laid over it.

        Whatever reads a document's fields again (after OCR, a re-examination) stores them
        here, so a person's corrections are never overwritten. ``columns`` are the
        document's other columns as that reading gives them (company, invoice_number,
        doc_date, supplier_id, ...); a corrected field's column keeps the person's value,
        and what the reading gives becomes what a withdrawn correction goes back to.
        """
        from gateway.fields import corrections

        with self.write() as conn:
            kept = {}
            for r in conn.execute("SELECT field, value FROM field_corrections WHERE document_id = ?", (document_id,)):
                name = str(r["field"])
                kept[name] = str(r["value"])
                column = corrections.COLUMNS.get(name)
                if column in columns:
                    conn.execute("UPDATE field_corrections SET column_before = ? WHERE document_id = ? AND field = ?",
                                 (columns.pop(column), document_id, name))
                conn.execute("UPDATE field_corrections SET read = ? WHERE document_id = ? AND field = ?",
                             (_encode(corrections.read_part(read, name)), document_id, name))
            update = dict(columns, fields=corrections.apply(read, kept))
            sets = ", ".join(f"{k} = ?" for k in update)
            conn.execute(f"UPDATE documents SET {sets} WHERE id = ?", [*(_encode(v) for v in update.values()), document_id])

    def learn_layout(self, key: str, entry: Any) -> None:
        """Keep where supplier ``key`` prints a field (a ``gateway.fields.learned.Learned``); the newest wins."""
        with self.write() as conn:
            conn.execute(
                "INSERT INTO learned_layouts (supplier_key, field, label, relation, page, box, document_id, learned_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(supplier_key, field) DO UPDATE SET label = excluded.label, "
                "relation = excluded.relation, page = excluded.page, box = excluded.box, "
                "document_id = excluded.document_id, learned_at = excluded.learned_at",
                (key, entry.field, entry.label, entry.relation, entry.page, _encode(list(entry.box)),
                 entry.document_id, iso(utcnow())))

    def forget_layout(self, document_id: int, field: str) -> int:
        """Forget what a document's correction of ``field`` taught (the correction was withdrawn)."""
        with self.write() as conn:
            return conn.execute("DELETE FROM learned_layouts WHERE document_id = ? AND field = ?",
                                (document_id, field)).rowcount

    def learned_for(self, keys: Sequence[str]) -> list[Any]:
        """The learned entries (``Learned``) of the first of ``keys`` that has any."""
        from gateway.fields.learned import Learned

        conn = self._conn()
        for key in keys:
            rows = conn.execute("SELECT * FROM learned_layouts WHERE supplier_key = ? ORDER BY field", (key,)).fetchall()
            if rows:
                return [Learned(str(r["field"]), r["label"], r["relation"], int(r["page"] or 1),
                                tuple(json.loads(r["box"] or "[0, 0, 0, 0]")), int(r["document_id"])) for r in rows]
        return []

    def learned_layouts(self, document_id: int) -> list[Row]:
        """What a document's corrections taught: supplier key, field, label or place."""
        rows = self._conn().execute("SELECT * FROM learned_layouts WHERE document_id = ? ORDER BY field",
                                    (document_id,))
        return [_row_required(r) for r in rows]
