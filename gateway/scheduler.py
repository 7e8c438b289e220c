"""Schedule-based jobs: polls and export intervals, inside allowed days and hours.

A job is due when ``every`` has passed since its last run and ``now`` lies in
its window. ``now`` is a parameter of ``tick``, so tests of windows need no
clock patching and no sleeping. (The ``schedule`` library named in DESIGN.md
reads the wall clock itself, which makes windows untestable without patching;
this small loop replaces it.)
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from gateway.config import Schedule

log = logging.getLogger(__name__)


@dataclass
class Job:
    """A named callable run on a schedule.

    Attributes:
        name: for logs and status (``poll:gmail``, ``export:nas``).
        schedule: every / days / between.
        run: the work; takes ``now``.
        last_run: when it last started (None: never, so due at once).
        next_due: when it is next due (computed by ``tick``).
    """

    name: str
    schedule: Schedule
    run: Callable[[dt.datetime], object]
    last_run: dt.datetime | None = None
    next_due: dt.datetime | None = None
    running: bool = field(default=False)

    def due(self, now: dt.datetime, tz: ZoneInfo | None = None) -> bool:
        """Whether the job should start at ``now`` (aware)."""
        local = now.astimezone(tz) if tz else now.astimezone()
        if not self.schedule.allows(local):
            return False
        if self.last_run is None or self.schedule.every is None:
            return True
        return (now - self.last_run).total_seconds() >= self.schedule.every


class Scheduler:
    """Runs due jobs from one thread; each job runs in its own short-lived thread."""

    def __init__(self, tz: str | None = None, tick: float = 1.0) -> None:
        self.jobs: list[Job] = []
        self.tz = ZoneInfo(tz) if tz else None
        self.interval = tick
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, job: Job) -> Job:
        """Register a job."""
        self.jobs.append(job)
        return job

    def tick(self, now: dt.datetime) -> list[str]:
        """Start every job that is due at ``now``; returns their names."""
        started = []
        for job in self.jobs:
            if job.running or not job.due(now, self.tz):
                continue
            job.last_run = now
            job.running = True
            started.append(job.name)
            threading.Thread(target=self._run, args=(job, now), name=job.name, daemon=True).start()
        return started

    def _run(self, job: Job, now: dt.datetime) -> None:
        try:
            job.run(now)
        except Exception:
            log.exception("job %s failed", job.name)
        finally:
            job.running = False

    def start(self) -> None:
        """Tick every second in a thread."""
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.tick(dt.datetime.now(dt.timezone.utc))
            self._stop.wait(self.interval)

    def stop(self) -> None:
        """Stop ticking (running jobs finish on their own)."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
