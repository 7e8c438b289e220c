"""The admin page's log: warnings and notable events, kept in the store.

serve and each worker process install :class:`EventLog` on the root logger.
It keeps every record at WARNING or above from the gateway's own loggers,
and INFO records that name an event (``log.info(..., extra={"event":
"refused"})``): refused recipients, documents recognised as already known,
duplicates. Records are queued and written in batches by a thread, so
logging never waits for the database; a flood is bounded (the oldest queued
records are dropped and the drop is counted in the log itself).
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading

from gateway.store import Store

OURS = ("gateway", "web")
MAX_QUEUED = 5000
FLUSH_EVERY = 0.5  # seconds
MAX_TEXT = 2000


class EventLog(logging.Handler):
    """A logging handler that stores the records the log page shows."""

    def __init__(self, store: Store, source: str) -> None:
        super().__init__(level=logging.INFO)
        self.store = store
        self.source = source
        self._queue: queue.Queue[tuple[str, str, str, str, str]] = queue.Queue(MAX_QUEUED)
        self._dropped = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="eventlog", daemon=True)
        self._levels: dict[logging.Handler, int] = {}
        self._root_level = logging.NOTSET

    def wants(self, record: logging.LogRecord) -> bool:
        """Whether the log page shows ``record``."""
        if not record.name.split(".")[0] in OURS:
            return False
        return record.levelno >= logging.WARNING or bool(getattr(record, "event", None))

    def emit(self, record: logging.LogRecord) -> None:
        if not self.wants(record):
            return
        try:
            text = record.getMessage()
        except Exception:  # a bad format string must not break logging
            text = str(record.msg)
        kind = str(getattr(record, "event", None) or record.levelname.lower())
        row = (dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="seconds"),
               record.levelname.lower(), kind, self.source, text[:MAX_TEXT])
        try:
            self._queue.put_nowait(row)
        except queue.Full:
            self._dropped += 1

    def _drain(self) -> None:
        rows = []
        while True:
            try:
                rows.append(self._queue.get_nowait())
            except queue.Empty:
                break
        if self._dropped:
            now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
            rows.append((now, "warning", "warning", self.source,
                         f"{self._dropped} log record(s) were not kept for the log page (too many at once)"))
            self._dropped = 0
        try:
            self.store.add_events(rows)
        except Exception:  # the log page is a convenience: never let it break what it watches
            pass

    def _run(self) -> None:
        while not self._stop.wait(FLUSH_EVERY):
            self._drain()
        self._drain()

    def start(self) -> EventLog:
        """Install on the root logger and start writing.

        The events are INFO records: the root logger must pass INFO even when
        the console shows only warnings (``serve -q``), so the console's
        handlers keep the level the root had.
        """
        root = logging.getLogger()
        self._levels = {h: h.level for h in root.handlers}
        self._root_level = root.level
        for h in root.handlers:
            if h.level == logging.NOTSET:
                h.setLevel(root.level)
        if root.level > logging.INFO or root.level == logging.NOTSET:
            root.setLevel(logging.INFO)
        root.addHandler(self)
        self._thread.start()
        return self

    def close(self) -> None:
        """Uninstall, write what is queued, stop."""
        root = logging.getLogger()
        root.removeHandler(self)
        for h, level in self._levels.items():
            h.setLevel(level)
        if self._levels or self._root_level != logging.NOTSET:
            root.setLevel(self._root_level)
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        super().close()
