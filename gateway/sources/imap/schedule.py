"""When a mailbox is polled: the schedule's next window and the backoff after failures."""

from __future__ import annotations

import datetime as dt

from gateway.config import Schedule

BACKOFF_BASE = 30.0
BACKOFF_MAX = 3600.0


def backoff(failures: int) -> float:
    """Seconds to wait after ``failures`` failures in a row: 30 s, 1 min, 2 min, ... at most 1 h."""
    return float(min(BACKOFF_BASE * 2 ** max(0, failures - 1), BACKOFF_MAX))


def next_window_start(schedule: Schedule, local: dt.datetime) -> dt.datetime:
    """The first moment at or after ``local`` (aware) that the schedule allows (within 8 days)."""
    if schedule.allows(local):
        return local
    window = schedule.window()
    start_time = window[0] if window else dt.time(0, 0)
    for days in range(0, 9):
        day = (local + dt.timedelta(days=days)).date()
        candidate = dt.datetime.combine(day, start_time, tzinfo=local.tzinfo)
        if candidate >= local and schedule.allows(candidate):
            return candidate
    return local + dt.timedelta(days=1)
