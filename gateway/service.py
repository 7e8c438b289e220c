"""Wires the parts together and starts and stops their threads."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from gateway.config import ExportConfig, Schedule, Settings
from gateway.eventlog import EventLog
from gateway.exporters.runner import ExportRunner
from gateway.notify import Notifier
from gateway.pipeline import Pipeline, RulesState
from gateway.scheduler import Job, Scheduler
from gateway.senderauth.recheck import recheck_held
from gateway.spool import Spool
from gateway.store import Store

log = logging.getLogger(__name__)

# how often claims are checked for holders that died (a worker, an `import`
# or `export` beside serve, the workers of a serve that was killed)
CLAIM_CHECK_INTERVAL = 1.0


class _WakeWorkers:
    """``pipeline.wake`` when processing runs in worker processes: ``set`` wakes them."""

    def __init__(self, workers: Any) -> None:
        self.workers = workers

    def set(self) -> None:
        self.workers.wake()

    def clear(self) -> None:
        return None

    def wait(self, timeout: float | None = None) -> bool:
        return False


class Service:
    """Everything ``invoice-gateway serve`` runs, in one process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = Store(settings.data_dir)
        self.rules = RulesState()
        self.pipeline = Pipeline(settings, self.store, self.rules)
        self.workers: Any = None
        if settings.limits.worker_processes:
            from gateway.workers import WorkerProcesses

            self.workers = WorkerProcesses(settings, self.store, settings.limits.workers)
            self.pipeline.wake = _WakeWorkers(self.workers)  # type: ignore[assignment]
        self.spool = Spool(self.store, on_new=self.pipeline.wake.set)
        self.exports = ExportRunner(settings, self.store)
        self.pipeline.on_exports = self.exports.wake.set
        if self.workers is not None:
            self.workers.on_exports = self.exports.wake.set
            self.workers.intake = self._smtp_accepted  # the workers hold while SMTP takes a burst
        self.scheduler = Scheduler(settings.timezone)
        self.notifier = Notifier(settings, self.store, lambda: list(self.rules.problems))
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []
        self.smtp: Any = None
        self.web: Any = None
        self.rules_watcher: Any = None
        self.pollers: dict[str, Any] = {}
        self.folder_watchers: list[Any] = []
        self.ocr: Any = None  # gateway.ocr.queue.OcrWorker while serving with ocr.enabled
        self.started_at: dt.datetime | None = None
        self.eventlog: EventLog | None = None

    # -- parts ---------------------------------------------------------------------

    def load_rules(self) -> None:
        """Load the rules folder once (the watcher keeps it current)."""
        from gateway.rules import load_rules

        self.settings.rules_dir.mkdir(parents=True, exist_ok=True)
        ruleset, problems = load_rules(self.settings.rules_dir)
        self._apply_rules(ruleset, problems, initial=True)

    def _apply_rules(self, ruleset: Any, problems: list[Any], initial: bool = False) -> None:
        with self.rules.lock:
            self.rules.problems = list(problems)
            if problems:
                for p in problems:
                    log.error("rules: %s", p)
                log.error("rules: %d problem(s); %s", len(problems),
                          "the last good rules stay in force" if self.rules.ruleset is not None else "no rules are in force")
                return
            changed = self.rules.ruleset is None or ruleset.digest != getattr(self.rules.ruleset, "digest", None)
            self.rules.ruleset = ruleset
            self.rules.loaded_at = dt.datetime.now(dt.timezone.utc)
        log.info("rules: %d rule(s) from %d file(s) in force", len(ruleset.rules), len(ruleset.files))
        if self.workers is not None:
            self.workers.reload_rules(ruleset.digest)  # before any re-examined mail is woken
        if changed and not initial:
            self.reexamine()
            self._rescan_mailboxes()

    def _rescan_mailboxes(self) -> None:
        """New rules may want mail a poll skipped: poll the mailboxes whose window is open."""
        for poller in list(self.pollers.values()):
            try:
                if poller.window_open():
                    poller.fetch_now()
            except Exception:
                log.exception("mailbox %s: could not start a poll after the rules changed", poller.name)

    def reexamine(self) -> int:
        """Run every unmatched message through the rules again; returns how many.

        A thread waits until each of them has an outcome and then logs and
        records (``last_reexamine``) exactly how many of them changed status.
        """
        ids = self.store.message_ids(status="unmatched")
        if not ids:
            return 0
        self.store.reset_for_reprocess(ids)
        self.pipeline.wake.set()
        log.info("rules changed: re-examining %d unmatched message(s)", len(ids))
        threading.Thread(target=self._report_reexamine, args=(ids,), daemon=True).start()
        return len(ids)

    def _report_reexamine(self, ids: list[int], timeout: float = 3600) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stop_event.is_set():
            # only these messages count: mail arriving meanwhile does not blur the figure
            statuses = self.store.message_statuses(ids)
            if "received" not in statuses.values():
                changed = sum(1 for s in statuses.values() if s != "unmatched")
                self.store.set_kv("last_reexamine", {"at": dt.datetime.now(dt.timezone.utc).isoformat(),
                                                     "examined": len(ids), "changed": changed})
                log.info("re-examination done: %d of %d unmatched message(s) changed status", changed, len(ids))
                return
            time.sleep(0.5)
        log.warning("re-examination of %d message(s): not all had an outcome after %.0f s; no count recorded",
                    len(ids), timeout)

    def _smtp_accepted(self) -> int:
        """Mails SMTP has accepted since the start."""
        return int(self.smtp.stats.get("accepted", 0)) if self.smtp is not None else 0

    def health(self) -> dict[str, Any]:
        """What is up and what is down."""
        parts: dict[str, Any] = {"store": self.store.ping()}
        if self.settings.smtp.enabled:
            parts["smtp"] = bool(self.smtp and self.smtp.running)
        threads_ok = all(t.is_alive() for t in self.threads) if self.threads else False
        parts["workers"] = threads_ok and (self.workers is None or self.workers.alive())
        return parts

    # -- start / stop ------------------------------------------------------------------

    def start(self, *, web: bool = True, smtp: bool = True) -> None:
        """Recover, then start workers, SMTP, exports, watchers, pollers and the web server."""
        self.started_at = dt.datetime.now(dt.timezone.utc)
        self.eventlog = EventLog(self.store, "serve").start()
        rec = self.spool.recover()
        freed = self.store.release_stale_claims()
        pending = len(self.store.message_ids(status="received"))
        if freed or pending or rec["tmp_removed"]:
            log.info("recovery: %d message(s) waiting, %d stale claim(s) released, %d partial file(s) removed",
                     pending, freed, rec["tmp_removed"])
        self.load_rules()
        if self.workers is not None:
            self.workers.start()
        else:
            for i in range(max(1, self.settings.limits.workers)):
                self._thread(f"worker-{i}", self.pipeline.worker, self.stop_event)
        self._thread("exports", self.exports.immediate_loop, self.stop_event)
        self._thread("claims", self._check_claims, self.stop_event)
        if self.settings.ocr.enabled:
            from gateway.ocr.queue import OcrWorker

            self.ocr = OcrWorker(self.settings, self.store, on_done=[lambda _doc, _ok: self.exports.wake.set()])
            self.ocr.start()
        for target in self.settings.exports:
            if target.enabled and target.schedule is not None and target.schedule.every is not None:
                self.scheduler.add(Job(f"export:{target.name}", target.schedule, self._export_job(target)))
        self.scheduler.add(Job("recheck-senders", Schedule(every=60), self._recheck_senders))
        if self.settings.notify.urls:
            self.scheduler.add(Job("notify", Schedule(every=self.settings.notify.check_every), self.notifier.check))
        self._start_rules_watcher()
        self._start_mailboxes()
        self._start_folders()
        self.scheduler.start()
        if smtp and self.settings.smtp.enabled:
            from gateway.sources.smtp import SMTPSource

            self.smtp = SMTPSource(self.settings.smtp, self.spool)
            self.smtp.start()
        if web and self.settings.web.enabled:
            from web.server import WebServer

            self.web = WebServer(self)
            self.web.start()

    def _check_claims(self, stop: threading.Event) -> None:
        """Release claims whose holder died, while running (not only at start).

        At a restart right after a ``kill -9``, the killed workers may still
        be dying and hold their claims during recovery; they are released
        here a moment later, not at the next start.
        """
        while not stop.wait(CLAIM_CHECK_INTERVAL):
            try:
                freed = self.store.release_stale_claims()
            except Exception:
                log.exception("could not check the claims")
                continue
            if freed:
                log.warning("released %d claim(s) of a process that is gone", freed)
                self.pipeline.wake.set()
                self.exports.wake.set()

    def _thread(self, name: str, target: Any, *args: Any) -> threading.Thread:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        t.start()
        self.threads.append(t)
        return t

    def _recheck_senders(self, now: dt.datetime) -> list[int]:
        """Scheduler job: held mail whose sender check failed on DNS is checked again when due."""
        ids = recheck_held(self.store, now)
        if ids:
            self.pipeline.wake.set()
        return ids

    def _export_job(self, target: ExportConfig) -> Callable[[dt.datetime], Any]:
        """The scheduler job that runs one export target."""
        def run(now: dt.datetime) -> Any:
            return self.exports.run_target(target, now)
        return run

    def _start_rules_watcher(self) -> None:
        from gateway.rules import RulesWatcher

        self.settings.rules_dir.mkdir(parents=True, exist_ok=True)
        current = self.rules.ruleset
        self.rules_watcher = RulesWatcher(self.settings.rules_dir, self._apply_rules, mode=self.settings.rules_watch,
                                          initial_digest=current.digest if current is not None else None)
        self.rules_watcher.start()

    def _start_mailboxes(self) -> None:
        if not self.settings.mailboxes:
            return
        from gateway.sources.imap import start_pollers

        self.pollers = start_pollers(self)

    def _start_folders(self) -> None:
        if not self.settings.folders:
            return
        from gateway.sources.folder import start_folder_watchers

        self.folder_watchers = start_folder_watchers(self)

    def stop(self) -> None:
        """Stop accepting, let workers finish their message, close everything."""
        log.info("stopping")
        if self.smtp is not None:
            self.smtp.stop()
        self.stop_event.set()
        self.pipeline.wake.set()
        self.exports.wake.set()
        self.scheduler.stop()
        if self.rules_watcher is not None:
            self.rules_watcher.stop()
        for p in list(self.pollers.values()):
            p.stop()
        for w in self.folder_watchers:
            w.stop()
        if self.ocr is not None:
            self.ocr.stop()
        if self.web is not None:
            self.web.stop()
        for t in self.threads:
            t.join(timeout=10)
        if self.workers is not None:
            self.workers.stop()
        self.spool.stop()
        if self.eventlog is not None:
            self.eventlog.close()
