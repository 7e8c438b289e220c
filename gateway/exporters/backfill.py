"""Give a target the documents that already exist (a new target need not start empty).

    queued, left_out = backfill(settings, store, "nextcloud", since=dt.date(2026, 1, 1))

Only documents whose mail is still imported are offered; the target's
filter and ``since`` decide as for new documents; a document the target
already has (or has queued) is not queued twice. The export runner then
delivers them as usual: approval, naming and retries apply.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from gateway.config import Settings
from gateway.pipeline import target_accepts
from gateway.store import Store


@dataclass(frozen=True)
class Backfill:
    """What a backfill queued.

    Attributes:
        target: the target's name.
        queued: documents queued for it now.
        left_out: documents its filter (or ``since``) does not take.
        already: documents it had delivered or queued before.
    """

    target: str
    queued: int
    left_out: int
    already: int


def backfill(settings: Settings, store: Store, name: str, *, since: dt.date | None = None) -> Backfill:
    """Queue for target ``name`` every existing document it takes (from ``since`` on, by document date)."""
    target = settings.export(name)  # ConfigError naming the known targets
    rows = store.backfill_candidates(name, since.isoformat() if since else None)
    fresh = [r for r in rows if not r["has_export"]]
    taken = [int(r["id"]) for r in fresh if target_accepts(target, r, r["source"] or "")]
    queued = store.ensure_exports(taken, name)
    return Backfill(name, queued, len(fresh) - len(taken), len(rows) - len(fresh))
