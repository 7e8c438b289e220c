"""SQLite (WAL): every table, every SQL statement, migrations.

Plain ``sqlite3`` rather than sqlite-utils (named in DESIGN.md): every write
here needs explicit ``BEGIN IMMEDIATE`` control, per-transaction durability
and ``UPDATE ... RETURNING`` claims, which sqlite-utils does not wrap, and
nothing used its table helpers.

One connection per thread; writes are short ``BEGIN IMMEDIATE`` transactions,
so several threads (and a second process such as ``invoice-gateway export``
beside ``serve``) can share the database safely.

``Store`` is one object made of one part per table group, all sharing
``StoreBase``'s connection and transactions:

- ``base``: StoreBase (connections, ``write()``, migrate, ping, key/value), ``Row``, ``utcnow``, ``iso``
- ``migrations``: the schema, one numbered migration after another
- ``messages``: intake, claims, duplicates, outcomes, listings; ``pack_decision``/``decision_of``
- ``documents``: documents and their listings; ``ibans``: the IBAN guard's memory
- ``exports``: export rows, claims, retries, health; ``ocr``: the OCR queue
- ``imap``: IMAP folder state and mailbox status; ``events``: the admin page's log
- ``corrections``: a person's corrections of documents' fields and the supplier layouts learned from them
"""

from __future__ import annotations

from gateway.store.base import Row, StoreBase, iso, utcnow
from gateway.store.corrections import CorrectionsMixin
from gateway.store.documents import ORPHANED, DocumentsMixin
from gateway.store.events import EVENTS_KEPT, EventsMixin
from gateway.store.exports import EXPORT_STATES, ExportsMixin
from gateway.store.ibans import IbansMixin
from gateway.store.imap import ImapMixin
from gateway.store.messages import (
    MESSAGE_STATUSES,
    PACK_EXPLAIN_OVER,
    DedupKey,
    Finished,
    MessagesMixin,
    decision_of,
    pack_decision,
)
from gateway.store.ocr import OcrMixin

__all__ = [
    "EVENTS_KEPT", "EXPORT_STATES", "MESSAGE_STATUSES", "ORPHANED", "PACK_EXPLAIN_OVER", "DedupKey", "Finished",
    "Row", "Store", "decision_of", "iso", "pack_decision", "utcnow",
]


class Store(MessagesMixin, DocumentsMixin, IbansMixin, ExportsMixin, OcrMixin, ImapMixin, EventsMixin, CorrectionsMixin,
            StoreBase):
    """The gateway's database and file store under ``data_dir``."""
