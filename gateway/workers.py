"""Processing in worker processes, beside the SMTP listener.

Parsing, sender authentication and rules cost milliseconds of CPU per mail;
in threads of the serve process they compete with the SMTP event loop for
the GIL. In their own processes they use the other cores, and a crash in a C
library while parsing hostile mail cannot take the SMTP listener down.

Workers share nothing but the store: they claim messages in SQLite (claim,
work, acknowledge), as the threads do. The serve process passes each worker
its settings on standard input, then wakes it with a line per new message
and tells it to reload the rules with ``rules <digest>`` (the worker loads
the same folder and keeps its last good set when the files are broken).
A worker that dies is started again; its claims are released, and a mail
that keeps killing workers is quarantined after MAX_ATTEMPTS.

    python -m gateway.workers      # reads one JSON line of settings, then commands
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from typing import IO, Any

from gateway.config import Settings
from gateway.eventlog import EventLog
from gateway.logs import quiet_libraries
from gateway.store import Store

log = logging.getLogger(__name__)

RESTART_BACKOFF = (1, 2, 5, 10, 30)
WORKER_NICENESS = 10


class WorkerProcesses:
    """N ``python -m gateway.workers`` children, kept running while serve runs."""

    def __init__(self, settings: Settings, store: Store, count: int) -> None:
        self.settings = settings
        self.store = store
        self.count = max(1, count)
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * self.count
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None
        self._restarts = [0] * self.count
        self.rules_digest: str | None = None
        self.on_exports: Any = None  # called when a worker stored documents (wakes the export loop)

    def _spawn(self, i: int) -> subprocess.Popen[bytes]:
        # stdin: settings, then commands; stdout: the worker's notes to serve; its log goes to stderr
        proc = subprocess.Popen([sys.executable, "-m", "gateway.workers"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=None, start_new_session=False)
        assert proc.stdin is not None and proc.stdout is not None
        threading.Thread(target=self._listen, args=(proc.stdout,), name=f"worker-{i}-notes", daemon=True).start()
        # the settings (with secrets already read) go through the pipe, never the command line
        payload = self.settings.model_dump(mode="json", by_alias=True, exclude={"source_path"})
        proc.stdin.write((json.dumps({"settings": payload, "name": f"worker-{i}",
                                      "log_level": logging.getLogger().level}) + "\n").encode())
        proc.stdin.flush()
        log.debug("started processing worker %d (pid %d)", i, proc.pid)
        return proc

    def _listen(self, stream: IO[bytes]) -> None:
        for line in stream:
            if line.strip() == b"exports" and self.on_exports is not None:
                self.on_exports()
        stream.close()

    def start(self) -> None:
        """Start the workers and a thread that restarts them when they die."""
        with self._lock:
            for i in range(self.count):
                self.procs[i] = self._spawn(i)
        self._monitor = threading.Thread(target=self._watch, name="workers", daemon=True)
        self._monitor.start()

    def _send(self, line: str) -> None:
        with self._lock:
            for proc in self.procs:
                if proc is None or proc.poll() is not None or proc.stdin is None:
                    continue
                try:
                    proc.stdin.write(line.encode() + b"\n")
                    proc.stdin.flush()
                except (BrokenPipeError, OSError):
                    pass  # the monitor restarts it

    def wake(self) -> None:
        """New mail (or mail put back to received): let the workers look now."""
        self._send("wake")

    def reload_rules(self, digest: str | None) -> None:
        """The rules in force changed: the workers load the folder again."""
        self.rules_digest = digest
        self._send(f"rules {digest or ''}")

    def alive(self) -> bool:
        """Whether every worker runs."""
        return all(p is not None and p.poll() is None for p in self.procs)

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            for i, proc in enumerate(list(self.procs)):
                if proc is None or proc.poll() is None or self._stop.is_set():
                    continue
                code = proc.returncode
                why = f"signal {-code}" if code < 0 else f"exit status {code}"
                delay = RESTART_BACKOFF[min(self._restarts[i], len(RESTART_BACKOFF) - 1)]
                log.error("processing worker %d died (%s); restarting it in %d s", i, why, delay)
                self._restarts[i] += 1
                if self._stop.wait(delay):
                    return
                try:
                    freed = self.store.release_stale_claims()
                    if freed:
                        log.warning("released %d message(s) the dead worker had claimed", freed)
                except Exception:
                    log.exception("could not release the dead worker's claims")
                with self._lock:
                    self.procs[i] = self._spawn(i)
                if self.rules_digest:
                    self.reload_rules(self.rules_digest)

    def stop(self) -> None:
        """Ask every worker to finish its message and stop; kill what does not."""
        self._stop.set()
        self._send("quit")
        deadline = time.monotonic() + 15
        for proc in self.procs:
            if proc is None:
                continue
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdin is not None:
                try:
                    proc.stdin.close()
                except OSError:
                    pass
        if self._monitor is not None:
            self._monitor.join(timeout=5)


def _commands(stream: IO[bytes], wake: threading.Event, stop: threading.Event, rules: list[str]) -> None:
    for raw in stream:
        line = raw.decode("utf-8", "replace").strip()
        if line == "quit":
            break
        if line.startswith("rules"):
            rules.append(line[5:].strip())
        wake.set()
    stop.set()  # quit, or the serve process is gone (end of the pipe)
    wake.set()


def _warm_up() -> None:
    """Load what the first mail would otherwise wait for (the public suffix list,
    the e-invoice reader), so it is processed as fast as the next one."""
    try:
        from gateway import einvoice  # noqa: F401
        from gateway.senderauth.dmarc import org_domain

        org_domain("mail.example.co.uk")
    except Exception:  # only a head start; the first mail loads what is missing
        log.debug("warm-up failed", exc_info=True)


def main() -> None:
    """A worker process: settings from stdin, then process until told to quit."""
    first = sys.stdin.buffer.readline()
    job: dict[str, Any] = json.loads(first)
    notes = sys.stdout
    sys.stdout = sys.stderr  # stdout is the channel to serve; nothing else may write there
    logging.basicConfig(stream=sys.stderr, level=int(job.get("log_level") or logging.INFO),
                        format=f"%(asctime)s %(levelname)-7s %(name)s[{job.get('name')}]: %(message)s")
    quiet_libraries()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # serve stops us through the pipe
    # taking mail comes first: a burst of mail is answered at full speed and
    # processed right after (the wait is milliseconds; nothing waits on it but exports)
    try:
        os.nice(WORKER_NICENESS)
    except OSError:
        pass
    settings = Settings.model_validate(job["settings"])
    from gateway.pipeline import Pipeline, RulesState
    from gateway.rules import load_rules

    store = Store(settings.data_dir)
    EventLog(store, str(job.get("name") or "worker")).start()  # warnings reach the admin page's log

    def load() -> None:
        ruleset, problems = load_rules(settings.rules_dir)
        if ruleset is not None and not problems:
            state.ruleset = ruleset
        # with problems the last good set stays in force; serve logs them

    reloads: list[str] = []

    class ChildRules(RulesState):
        """Reloads before a decision when serve said the rules changed (re-examined mail needs the new set)."""

        def decide(self, *args: Any, **kwargs: Any) -> Any:
            if reloads:
                reloads.clear()
                load()
            return super().decide(*args, **kwargs)

    state = ChildRules()
    load()
    pipeline = Pipeline(settings, store, state)
    note_lock = threading.Lock()

    def exports_ready() -> None:
        with note_lock:
            try:
                notes.write("exports\n")
                notes.flush()
            except (BrokenPipeError, OSError):
                pass

    pipeline.on_exports = exports_ready
    _warm_up()
    stop = threading.Event()
    threading.Thread(target=_commands, args=(sys.stdin.buffer, pipeline.wake, stop, reloads),
                     daemon=True).start()
    pipeline.worker(stop)  # ChildRules reloads the rules before a decision when serve said so
    store.close()
    try:
        from gateway import render

        render.shutdown()
    except Exception:
        pass
    os._exit(0)


if __name__ == "__main__":
    main()
