"""Runs the export queue: claim a due export, deliver it, record the outcome.

Safe beside another runner (``invoice-gateway export`` next to ``serve``):
an export is claimed in one transaction before it is delivered, so each
document reaches each target once. A failure is retried with exponential
backoff; an error no retry can fix is shown as such and not retried.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any
from zoneinfo import ZoneInfo

from gateway.config import ExportConfig, Settings
from gateway.errors import ExportError
from gateway.exporters.base import Exporter, build_item, make_exporter
from gateway.store import Store, utcnow

log = logging.getLogger(__name__)

BACKOFF_BASE = 30
BACKOFF_CAP = 6 * 3600
# a run stops after this many retryable failures in a row (a server that is down
# or times out), so the rest wait for the next run instead of each waiting out a timeout
MAX_FAILURES_IN_A_ROW = 3
# deliveries to a target that recognises a document it already has (webdav, folder) are
# recorded in one durable commit per batch: at most this many, at most this old
RECORD_BATCH = 64
RECORD_WAIT = 0.5


def backoff(attempts: int) -> int:
    """Seconds to wait before attempt ``attempts + 1``."""
    return int(min(BACKOFF_CAP, BACKOFF_BASE * 2 ** max(0, attempts - 1)))


class ExportRunner:
    """Delivers queued documents to their targets."""

    def __init__(self, settings: Settings, store: Store,
                 exporters: dict[str, Exporter] | None = None) -> None:
        self.settings = settings
        self.store = store
        self._exporters = dict(exporters or {})
        self._lock = threading.Lock()
        self.wake = threading.Event()
        self.last_error: dict[str, str] = {}

    def exporter(self, target: ExportConfig) -> Exporter:
        """The exporter object of a target (made once)."""
        with self._lock:
            if target.name not in self._exporters:
                self._exporters[target.name] = make_exporter(target)
            return self._exporters[target.name]

    def targets(self, names: Sequence[str] = ()) -> list[ExportConfig]:
        """The enabled targets, or the named ones."""
        if names:
            return [self.settings.export(n) for n in names]
        return [t for t in self.settings.exports if t.enabled]

    def run_target(self, target: ExportConfig, now: dt.datetime | None = None,
                   progress: Callable[[str, dict[str, Any]], None] | None = None,
                   stop: threading.Event | None = None) -> dict[str, int]:
        """Deliver everything of one target that is due; returns counts."""
        counts = {"delivered": 0, "failed": 0, "error": 0}
        tried: list[int] = []
        in_a_row = 0
        # Confirmed by the server, not yet recorded. Safe only where a second delivery is
        # recognised: after a crash before the record the claim is released, the document
        # is delivered again and found already there (never a second mail or file).
        unrecorded: list[tuple[int, str, int]] | None = [] if self._recognises_redelivery(target) else None
        oldest = 0.0
        try:
            with self._batch(target):
                while (stop is None or not stop.is_set()) and in_a_row < MAX_FAILURES_IN_A_ROW:
                    t = now or utcnow()
                    row = self.store.claim_export(target.name, now=t, require_approval=target.require_approval,
                                                  exclude=tried)
                    if row is None:
                        break
                    if not unrecorded:
                        oldest = time.monotonic()
                    state = self._deliver(target, row, t, unrecorded)
                    if state == "failed":  # due again at once only with a clock far ahead; never twice in a run
                        tried.append(int(row["id"]))
                    counts[state] += 1
                    in_a_row = in_a_row + 1 if state == "failed" else 0
                    if unrecorded and (len(unrecorded) >= RECORD_BATCH or time.monotonic() - oldest >= RECORD_WAIT):
                        self._record(target, unrecorded)
                    if progress:
                        progress(target.name, dict(row, state=state))
        finally:
            if unrecorded:
                self._record(target, unrecorded)
        return counts

    def _recognises_redelivery(self, target: ExportConfig) -> bool:
        try:
            return bool(getattr(self.exporter(target), "recognises_redelivery", False))
        except ExportError:
            return False

    def _record(self, target: ExportConfig, delivered: list[tuple[int, str, int]]) -> None:
        """Record confirmed deliveries in one durable commit, then archive what is done.

        When the record fails (a locked or full disk), the exports go back to
        the queue at once rather than stay claimed until a restart: the next
        run finds each file already there and records it.
        """
        try:
            self.store.finish_exports_delivered([(export_id, location) for export_id, location, _ in delivered])
        except Exception as exc:
            why = f"delivered, but recording it failed ({type(exc).__name__}: {exc}); checked again by the next run"
            log.error("export %s: %d deliveries %s", target.name, len(delivered), why)
            try:
                self.store.release_export_claims([export_id for export_id, _, _ in delivered], error=why)
            except Exception:
                log.exception("export %s: could not give the deliveries back to the queue either", target.name)
            delivered.clear()
            raise
        for _, _, document_id in delivered:
            self._archive(document_id)
        delivered.clear()

    def _batch(self, target: ExportConfig) -> AbstractContextManager[Any]:
        """The exporter's ``batch()`` (one connection for the whole run), where it has one."""
        try:
            batch = getattr(self.exporter(target), "batch", None)
        except ExportError:
            return nullcontext()  # shown by each delivery, which makes the exporter again
        return batch() if batch is not None else nullcontext()

    def _deliver(self, target: ExportConfig, row: dict[str, Any], now: dt.datetime,
                 unrecorded: list[tuple[int, str, int]] | None = None) -> str:
        """Deliver one claimed export; a success is recorded now, or added to ``unrecorded``."""
        doc = self.store.document(int(row["document_id"]))
        msg = self.store.message(int(doc["message_id"])) if doc else None
        if doc is None or msg is None:
            self.store.finish_export(int(row["id"]), state="error", error="the document no longer exists")
            return "error"
        try:
            item = build_item(row, doc, msg, target, self.settings.data_dir)
            location = self.exporter(target).deliver(item)
        except ExportError as exc:
            return self._failed(target, row, str(exc), exc.retryable, now)
        except Exception as exc:  # a bug or an unforeseen failure: visible, retried
            log.exception("export %s of document %s failed unexpectedly", target.name, row["document_id"])
            return self._failed(target, row, f"{type(exc).__name__}: {exc}", True, now)
        self.last_error.pop(target.name, None)
        log.info("exported document %s to %s: %s", row["document_id"], target.name, location)
        if unrecorded is not None:
            unrecorded.append((int(row["id"]), location, int(row["document_id"])))
            return "delivered"
        self.store.finish_export(int(row["id"]), state="delivered", location=location)
        self._archive(int(row["document_id"]))
        return "delivered"

    def _archive(self, document_id: int) -> None:
        """Archive a document once a target with archive_after_export and all its other targets delivered it.

        Checked after every delivery, so the order in which its targets finish does not matter.
        """
        flagged = {t.name for t in self.settings.exports if t.archive_after_export}
        if not flagged:
            return
        if flagged & {r["target"] for r in self.store.exports_of(document_id)}:
            self.store.archive_if_done(document_id, [t.name for t in self.settings.exports])

    def _failed(self, target: ExportConfig, row: dict[str, Any], error: str, retryable: bool,
                now: dt.datetime) -> str:
        attempts = int(row["attempts"])
        if retryable:
            wait = backoff(attempts)
            self.store.finish_export(int(row["id"]), state="failed", error=error,
                                     next_attempt=now + dt.timedelta(seconds=wait))
            if self.last_error.get(target.name) != error:
                log.warning("export to %s failed (attempt %d, next in %ds): %s", target.name, attempts, wait, error)
        else:
            self.store.finish_export(int(row["id"]), state="error", error=error)
            log.error("export to %s failed permanently: %s", target.name, error)
        self.last_error[target.name] = error
        return "failed" if retryable else "error"

    def run(self, names: Sequence[str] = (), now: dt.datetime | None = None,
            progress: Callable[[str, dict[str, Any]], None] | None = None) -> dict[str, dict[str, int]]:
        """Deliver what is due for the named (or all) targets."""
        return {t.name: self.run_target(t, now, progress) for t in self.targets(names)}

    def immediate_loop(self, stop: threading.Event) -> None:
        """Deliver targets without a schedule as soon as documents are ready."""
        tz = ZoneInfo(self.settings.timezone) if self.settings.timezone else None
        while not stop.is_set():
            local_now = dt.datetime.now(dt.timezone.utc).astimezone(tz)  # the scheduler's time zone
            for target in self.targets():
                sched = target.schedule
                if sched is None or (sched.every is None and sched.allows(local_now)):
                    try:
                        self.run_target(target, stop=stop)
                    except Exception:
                        log.exception("export loop for %s failed", target.name)
            self.wake.wait(1.0)
            self.wake.clear()
