"""The IBAN guard's memory: the bank accounts seen per seller (``seller_ibans``), confirmations, flagged documents."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.store.base import Row, StoreBase, iso, utcnow


class IbansMixin(StoreBase):
    """The ``seller_ibans`` table and the documents the IBAN guard flagged."""

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

    def payment_flagged_documents(self, limit: int = 1000) -> list[Row]:
        """The newest documents the IBAN guard flagged (a changed bank account)."""
        return [dict(r) for r in self._conn().execute(
            "SELECT id, filename, company, payment_details_changed FROM documents "
            "WHERE payment_details_changed IS NOT NULL ORDER BY id DESC LIMIT ?", (limit,))]
