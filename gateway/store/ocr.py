"""OCR: documents waiting for their text layer (``documents.ocr``: pending, running, done, failed)."""

from __future__ import annotations

import json

from gateway.store.base import Row, StoreBase, _row


class OcrMixin(StoreBase):
    """The OCR queue, kept in the ``documents`` table."""

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
