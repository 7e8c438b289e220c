"""Watch the rules folder and report a new rule set when its content changes."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from gateway.errors import RuleError
from gateway.rules.loader import LoadProblem, is_rule_file, load_rule_files, read_rule_files
from gateway.rules.matcher import RuleSet

log = logging.getLogger(__name__)

OnChange = Callable[[RuleSet | None, list[LoadProblem]], None]
MODES = ("auto", "inotify", "poll")
_EVENTS = frozenset({"created", "modified", "deleted", "moved", "closed"})


class _Handler(FileSystemEventHandler):
    """Turns file events that concern rule files into a nudge for the watcher."""

    def __init__(self, watcher: RulesWatcher) -> None:
        self.watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        """Nudge the watcher when a rule file (or a folder that may hold some) changed."""
        if event.event_type not in _EVENTS or (event.is_directory and event.event_type == "modified"):
            return
        paths = [event.src_path, event.dest_path] if event.dest_path else [event.src_path]
        if any(self.watcher.concerns(os.fsdecode(p), event.is_directory) for p in paths):
            self.watcher.nudge(time.monotonic())


class RulesWatcher:
    """Reloads ``rules_dir`` after it changes and calls ``on_change(ruleset or None, problems)``.

    ``mode``: ``inotify`` uses the native watchdog observer only; ``auto``
    adds a content-hash check every ``poll_interval`` seconds as a safety net,
    since inotify sees nothing on many NAS and Docker bind mounts; ``poll``
    uses watchdog's polling observer (a stat of every file each second) and
    the same content check. Changes are debounced (``debounce`` seconds of
    quiet, at most ``max_delay``), and ``on_change`` is called only when the
    content of the rule files differs from the last report.
    """

    def __init__(self, rules_dir: Path, on_change: OnChange, mode: str = "auto", debounce: float = 1.0,
                 poll_interval: float = 10.0, *, initial_digest: str | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        self.rules_dir = Path(rules_dir)
        self.on_change = on_change
        self.mode = mode
        self.debounce = debounce
        self.poll_interval = poll_interval
        self.max_delay = max(5.0, 5 * debounce)  # a burst that never pauses still reloads
        self._digest = initial_digest
        self._cond = threading.Condition()
        self._scan_lock = threading.Lock()
        self._pending = False
        self._first_event = 0.0
        self._last_event = 0.0
        self._next_poll = 0.0
        self._dirty = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._observer: BaseObserver | None = None
        self._root = os.path.abspath(self.rules_dir)

    @property
    def digest(self) -> str | None:
        """The digest of the content last reported (or taken as the baseline)."""
        return self._digest

    def start(self) -> None:
        """Start watching; a content differing from ``initial_digest`` is reported after the debounce."""
        now = time.monotonic()
        current = read_rule_files(self.rules_dir).digest
        if self._digest is None:
            self._digest = current
        elif self._digest != current:
            self.nudge(now)
        self._next_poll = now + self.poll_interval
        self._observer = self._start_observer()
        self._thread = threading.Thread(target=self._run, name="rules-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching and wait for the threads to end."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)  # first: the thread may start an observer
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)

    def concerns(self, path: str, is_directory: bool) -> bool:
        """Whether a change at ``path`` can change the rule set (not .git/, swap or temp files)."""
        rel = os.path.relpath(os.path.abspath(path), self._root)
        if rel == "." or rel.startswith(".." + os.sep) or rel == "..":
            return False
        if is_directory:
            return not any(part.startswith(".") for part in rel.split(os.sep))
        return is_rule_file(rel)

    def nudge(self, now: float) -> None:
        """Note a change at ``now``; the folder is read once ``debounce`` seconds pass quietly."""
        with self._cond:
            if not self._pending:
                self._pending = True
                self._first_event = now
            self._last_event = now
            self._dirty = True
            self._cond.notify_all()

    def rescan(self) -> bool:
        """Read the folder now and report it if its content changed; True when it did."""
        with self._scan_lock:
            files = read_rule_files(self.rules_dir)
            if files.digest == self._digest:
                return False
            self._digest = files.digest
            ruleset, problems = load_rule_files(files)
        # the on_change callback reports the outcome (the service logs it once)
        log.debug("rules folder changed: %s", "loaded" if ruleset is not None else f"{len(problems)} problem(s)")
        try:
            self.on_change(ruleset, problems)
        except Exception:  # a failing callback must not end the watching
            log.exception("the rules on_change callback failed")
        return True

    def step(self, now: float) -> float:
        """Do whatever is due at ``now``; return the seconds until something is due next."""
        with self._cond:
            quiet = now - self._last_event >= self.debounce
            reload = self._pending and (quiet or now - self._first_event >= self.max_delay)
            if reload:
                self._pending = False
        if reload:
            self.rescan()
        if self._polls and now >= self._next_poll:
            self._next_poll = now + self.poll_interval
            if self._thread is not None and self._observer is None and self.rules_dir.is_dir():
                self._observer = self._start_observer()  # the folder has appeared
            with self._cond:
                pending = self._pending
            # A change found by polling is debounced too (a checkout may be half
            # done), but must not extend a quiet period that is already running.
            if not pending and read_rule_files(self.rules_dir).digest != self._digest:
                self.nudge(now)
        with self._cond:
            due = [self._next_poll] if self._polls else []
            if self._pending:
                due.append(min(self._last_event + self.debounce, self._first_event + self.max_delay))
        return max(0.01, min(due) - now) if due else 3600.0

    @property
    def _polls(self) -> bool:
        return self.mode != "inotify"

    def _run(self) -> None:
        while True:
            try:
                wait = self.step(time.monotonic())
            except Exception:  # keep watching; the next step retries
                log.exception("rules watcher step failed")
                wait = self.debounce
            with self._cond:
                if self._stopping:
                    return
                if not self._dirty:
                    self._cond.wait(timeout=wait)
                self._dirty = False
                if self._stopping:
                    return

    def _start_observer(self) -> BaseObserver | None:
        """The observer for the mode; None when none can watch (the content poll still runs)."""
        polling = lambda: PollingObserver(timeout=min(1.0, self.poll_interval))  # noqa: E731
        kinds: list[Callable[[], BaseObserver]] = (
            [polling] if self.mode == "poll" else [Observer] if self.mode == "inotify" else [Observer, polling])
        problem: OSError | None = None
        for make in kinds:
            observer = make()
            try:
                observer.schedule(_Handler(self), str(self.rules_dir), recursive=True)
                observer.start()
                return observer
            except OSError as exc:
                problem = exc
                log.warning("cannot watch %s with %s: %s", self.rules_dir, type(observer).__name__, exc)
        if self.mode == "inotify":
            raise RuleError(f"cannot watch {self.rules_dir} for changes ({problem}); "
                            "the poll mode works on network shares and bind mounts") from problem
        log.warning("checking %s for changes every %gs only", self.rules_dir, self.poll_interval)
        return None
