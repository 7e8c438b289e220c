"""Check sender authentication again, with backoff, for mail held only because DNS failed.

A mail held as ``suspicious`` whose result is ``temporary`` (a DNS lookup
failed: temperror) may well pass once DNS answers. The service's scheduler
calls ``recheck_held`` every minute; a held mail is due 5 min, 15 min, 1 h,
3 h, 6 h, 12 h and 24 h after its first check. Due mail goes back to
``received``: the pipeline checks it again (a temporary result is never
kept), then a pass proceeds through the rules, a definite fail stays
``suspicious`` with its reason, and another temporary failure waits for the
next point. After the last one it waits for a person (release or reprocess).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Mapping
from typing import Any

from gateway.store import Store

log = logging.getLogger(__name__)

# after the first check; the last one is a day later
RECHECK_AFTER: tuple[dt.timedelta, ...] = tuple(
    dt.timedelta(minutes=m) for m in (5, 15, 60, 180, 360, 720, 1440))


def _when(value: Any) -> dt.datetime | None:
    try:
        t = dt.datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def next_recheck(auth: Mapping[str, Any]) -> dt.datetime | None:
    """When a temporary result is next checked again (None: not temporary, or no point is left)."""
    if not auth.get("temporary"):
        return None
    last = _when(auth.get("checked_at"))
    first = _when(auth.get("first_checked_at")) or last
    if first is None or last is None:
        return None
    return next((first + d for d in RECHECK_AFTER if first + d > last), None)


def describe(auth: Mapping[str, Any]) -> str:
    """The words added to a temporary result's reason: when it is checked again."""
    when = next_recheck(auth)
    if when is None:
        return "still not known after a day of checks: release it or reprocess it"
    return f"checked again automatically at {when.strftime('%Y-%m-%d %H:%M')} UTC (5 min, 15 min, 1 h ... up to a day)"


def recheck_held(store: Store, now: dt.datetime) -> list[int]:
    """Put held mail whose temporary result is due at ``now`` back into processing; returns their ids."""
    due = []
    for mid, stored in store.suspicious_auth():
        try:
            auth = json.loads(stored)
        except ValueError:
            continue
        when = next_recheck(auth) if isinstance(auth, dict) else None
        if when is not None and when <= now:
            due.append(mid)
    requeued = store.requeue_suspicious(due) if due else []
    if requeued:
        log.info("checking sender authentication again (DNS failed before) for message(s) %s",
                 ", ".join(f"#{i}" for i in requeued))
    return requeued
