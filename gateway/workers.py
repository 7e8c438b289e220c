"""Processing in worker processes, beside the SMTP listener.

Parsing, sender authentication and rules cost milliseconds of CPU per mail;
in threads of the serve process they compete with the SMTP event loop for
the GIL. In their own processes they use the other cores, and a crash in a C
library while parsing hostile mail cannot take the SMTP listener down.

Workers share nothing but the store: they claim messages in SQLite (claim,
work, acknowledge), as the threads do, under a claim lock that dies with
them (gateway.claims). The serve process passes each worker its settings on
standard input, then wakes it with a line per new message and tells it to
reload the rules with ``rules <digest>`` (the worker loads the same folder
and keeps its last good set when the files are broken). While SMTP takes a
burst of mail, serve says ``hold`` and later ``go``: a held worker takes one
mail per HOLD_TURN seconds instead of one after the other, so taking mail
keeps the CPU and the database (intake first; the backlog is processed at
full speed once the burst is over). A worker tells serve
on its standard output which mail it holds (``claim <id>``, ``idle``) and
when it stored documents (``exports``).

Bounds: each worker caps its own memory (``limits.worker_memory``, RLIMIT_DATA)
and exits after a MemoryError; serve kills a worker that holds one mail
longer than ``limits.mail_timeout``. A worker that dies, however, is started
again; its claims are released at once with the cause noted on its mail, and
a mail that keeps stopping workers is quarantined after MAX_ATTEMPTS with
that cause as the reason.

    python -m gateway.workers      # reads one JSON line of settings, then commands
"""

from __future__ import annotations

import json
import logging
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import IO, Any

from gateway.config import Settings
from gateway.eventlog import EventLog
from gateway.logs import quiet_libraries
from gateway.store import Row, Store

log = logging.getLogger(__name__)

RESTART_BACKOFF = (1, 2, 5, 10, 30)
# a worker that ran this long before it died starts the back-off afresh
STABLE_AFTER = 60
WORKER_NICENESS = 10
# how a worker says it stopped because a mail took more memory than limits.worker_memory allows
EXIT_OUT_OF_MEMORY = 3
WATCH_INTERVAL = 0.25
# Intake is busy (the workers hold) from this many mails accepted by SMTP within one
# WATCH_INTERVAL (100 a second: a burst; well below what serve takes at full speed)...
BUSY_MAILS = 25
# ...until it has been quieter than that for this long (seconds)
CALM_AFTER = 1.0
# a held worker still takes one mail this often (seconds): processing never stops
HOLD_TURN = 2.0


@dataclass
class _Slot:
    """One worker's place: its process, the mail it holds and since when (serve's clock)."""

    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    mail: int | None = None
    mail_since: float = 0.0
    kill_cause: str | None = None  # why serve stopped it, when it did
    restart_at: float | None = None
    restarts: int = 0


class WorkerProcesses:
    """N ``python -m gateway.workers`` children, kept running while serve runs.

    Each holds at most one mail at a time and says so (``claim <id>`` /
    ``idle`` on its stdout); a worker that holds one mail longer than
    ``limits.mail_timeout`` is killed. When a worker dies, its claims are
    released at once (the lock that keeps them alive died with it) with the
    cause noted on the mail it held, and it is started again.
    """

    def __init__(self, settings: Settings, store: Store, count: int) -> None:
        self.settings = settings
        self.store = store
        self.count = max(1, count)
        self.slots = [_Slot() for _ in range(self.count)]
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None
        self.rules_digest: str | None = None
        self.on_exports: Any = None  # called when a worker stored documents (wakes the export loop)
        self.deaths = 0
        self.intake: Any = None  # () -> mails accepted by SMTP so far (the workers hold during bursts)
        self.holding = False
        self._intake_seen = 0
        self._busy_until = 0.0

    @property
    def procs(self) -> list[subprocess.Popen[bytes] | None]:
        """The worker processes (None where one is waiting to be started again)."""
        return [slot.proc for slot in self.slots]

    def _spawn(self, i: int) -> None:
        # stdin: settings, then commands; stdout: the worker's notes to serve; its log goes to stderr
        proc = subprocess.Popen([sys.executable, "-m", "gateway.workers"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=None, start_new_session=False)
        assert proc.stdin is not None and proc.stdout is not None
        slot = self.slots[i]
        slot.proc, slot.started, slot.mail, slot.kill_cause, slot.restart_at = proc, time.monotonic(), None, None, None
        threading.Thread(target=self._listen, args=(i, proc, proc.stdout), name=f"worker-{i}-notes",
                         daemon=True).start()
        # the settings (with secrets already read) go through the pipe, never the command line
        payload = self.settings.model_dump(mode="json", by_alias=True, exclude={"source_path"})
        proc.stdin.write((json.dumps({"settings": payload, "name": f"worker-{i}",
                                      "log_level": logging.getLogger().level}) + "\n").encode())
        if self.rules_digest:
            proc.stdin.write(f"rules {self.rules_digest}\n".encode())
        if self.holding:
            proc.stdin.write(b"hold\n")
        proc.stdin.flush()
        log.debug("started processing worker %d (pid %d)", i, proc.pid)

    def _listen(self, i: int, proc: subprocess.Popen[bytes], stream: IO[bytes]) -> None:
        for raw in stream:
            line = raw.strip()
            if line == b"exports":
                if self.on_exports is not None:
                    self.on_exports()
                continue
            with self._lock:
                slot = self.slots[i]
                if slot.proc is not proc:
                    continue  # a note of a worker that has been replaced
                if line.startswith(b"claim ") and line[6:].isdigit():
                    slot.mail, slot.mail_since = int(line[6:]), time.monotonic()
                elif line == b"idle":
                    slot.mail = None
        stream.close()

    def start(self) -> None:
        """Start the workers and a thread that times their mail and restarts them when they die."""
        with self._lock:
            for i in range(self.count):
                self._spawn(i)
        self._monitor = threading.Thread(target=self._watch, name="workers", daemon=True)
        self._monitor.start()

    def _send(self, line: str) -> None:
        with self._lock:
            for slot in self.slots:
                proc = slot.proc
                if proc is None or proc.poll() is not None or proc.stdin is None:
                    continue
                try:
                    proc.stdin.write(line.encode() + b"\n")
                    proc.stdin.flush()
                except (BrokenPipeError, OSError):
                    pass  # the monitor restarts it

    def wake(self) -> None:
        """New mail (or mail put back to received): let the workers look now.

        Not while they hold: a held worker looks at its next turn, and at ``go``.
        """
        if not self.holding:
            self._send("wake")

    def reload_rules(self, digest: str | None) -> None:
        """The rules in force changed: the workers load the folder again."""
        self.rules_digest = digest
        self._send(f"rules {digest or ''}")

    def alive(self) -> bool:
        """Whether every worker runs."""
        return all(p is not None and p.poll() is None for p in self.procs)

    def pace(self, now: float) -> None:
        """Tell the workers to hold while SMTP takes a burst of mail, and to go on after it.

        Called every WATCH_INTERVAL: BUSY_MAILS accepted since the last call make
        intake busy, CALM_AFTER seconds without that make it calm again.
        """
        if self.intake is None:
            return
        seen = int(self.intake())
        if seen - self._intake_seen >= BUSY_MAILS:
            self._busy_until = now + CALM_AFTER
        self._intake_seen = seen
        busy = now < self._busy_until
        if busy != self.holding:
            self.holding = busy
            log.debug("SMTP intake is %s: processing %s", "busy" if busy else "calm",
                      f"takes one mail per {HOLD_TURN:g} s and worker" if busy else "takes every mail at once")
            self._send("hold" if busy else "go")

    def _watch(self) -> None:
        while not self._stop.wait(WATCH_INTERVAL):
            try:
                self.pace(time.monotonic())
            except Exception:  # the watch must go on
                log.exception("could not check how busy SMTP intake is")
            for i in range(self.count):
                try:
                    self._check(i, time.monotonic())
                except Exception:  # the watch must go on
                    log.exception("processing worker %d: could not check it", i)

    def _check(self, i: int, now: float) -> None:
        timeout = self.settings.limits.mail_timeout
        with self._lock:
            if self._stop.is_set():
                return
            slot = self.slots[i]
            proc = slot.proc
            if proc is None:
                if slot.restart_at is not None and now >= slot.restart_at:
                    self._spawn(i)
                return
            if proc.poll() is None:
                if slot.mail is not None and slot.kill_cause is None and now - slot.mail_since > timeout:
                    slot.kill_cause = f"processing exceeded {timeout} s (limits.mail_timeout)"
                    log.error("processing worker %d held message %d longer than %d s (limits.mail_timeout): "
                              "stopping it", i, slot.mail, timeout)
                    proc.kill()
                return
            # dead (and reaped: its claim lock is gone with it)
            code = proc.returncode
            if slot.kill_cause:
                cause = slot.kill_cause
            elif code == EXIT_OUT_OF_MEMORY:
                cause = (f"the worker ran out of memory (limits.worker_memory: "
                         f"{self.settings.limits.worker_memory // 1024**2} MB)")
            elif code < 0:
                cause = f"the worker died ({_signal_name(-code)})"
            else:
                cause = f"the worker exited with status {code}"
            # stopped for one mail's sake (the deadline, the memory ceiling): no back-off, the
            # back-off is for a worker that cannot run at all
            mail, deliberate = slot.mail, slot.kill_cause is not None or code == EXIT_OUT_OF_MEMORY
            if now - slot.started >= STABLE_AFTER:
                slot.restarts = 0
            delay = 0 if deliberate else RESTART_BACKOFF[min(slot.restarts, len(RESTART_BACKOFF) - 1)]
            if not deliberate:
                slot.restarts += 1
            slot.proc, slot.mail, slot.restart_at = None, None, now + delay
            self.deaths += 1
        if proc.stdin is not None:
            try:
                proc.stdin.close()
            except OSError:
                pass
        held = f" while processing message {mail}" if mail is not None else ""
        log.error("processing worker %d stopped%s: %s; starting it again%s", i, held, cause,
                  f" in {delay} s" if delay else "")
        try:
            freed = self.store.release_stale_claims({mail: cause} if mail is not None else None)
        except Exception:
            log.exception("could not release the claims of processing worker %d; the next check will", i)
            return
        if freed:
            log.warning("released %d claim(s) the stopped worker held", freed)
            self.wake()

    def stop(self) -> None:
        """Ask every worker to finish its message and stop; kill what does not."""
        self._stop.set()
        self._send("quit")
        if self._monitor is not None:
            self._monitor.join(timeout=5)
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


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class Pace:
    """When a worker may claim its next mail: at once, or while serve says intake is busy
    (``hold``), one mail per HOLD_TURN seconds."""

    def __init__(self, turn: float = HOLD_TURN) -> None:
        self.turn = turn
        self.held = False
        self.last = float("-inf")  # when the last turn began (monotonic)
        self._changed = threading.Event()

    def hold(self, held: bool) -> None:
        """serve said ``hold`` (True) or ``go`` (False)."""
        self.held = held
        self._changed.set()

    def wait_turn(self, stop: threading.Event) -> None:
        """Return when this worker may claim a mail (or ``stop`` is set)."""
        while self.held and not stop.is_set():
            left = self.last + self.turn - time.monotonic()
            if left <= 0:
                break
            self._changed.wait(left)
            self._changed.clear()
        self.last = time.monotonic()

    def wake(self) -> None:
        """Let a waiting ``wait_turn`` look again (at a stop)."""
        self._changed.set()


def _commands(stream: IO[bytes], wake: threading.Event, stop: threading.Event, rules: list[str],
              pace: Pace) -> None:
    for raw in stream:
        line = raw.decode("utf-8", "replace").strip()
        if line == "quit":
            break
        if line.startswith("rules"):
            rules.append(line[5:].strip())
        elif line in ("hold", "go"):
            pace.hold(line == "hold")
        wake.set()
    stop.set()  # quit, or the serve process is gone (end of the pipe)
    wake.set()
    pace.wake()


def _warm_up() -> None:
    """Load what the first mail would otherwise wait for (the public suffix list,
    the e-invoice reader), so it is processed as fast as the next one."""
    try:
        from gateway import einvoice  # noqa: F401
        from gateway.senderauth.dmarc import org_domain

        org_domain("mail.example.co.uk")
    except Exception:  # only a head start; the first mail loads what is missing
        log.debug("warm-up failed", exc_info=True)


def set_memory_ceiling(limit: int) -> None:
    """Cap this process's data (heap and anonymous mappings, RLIMIT_DATA) at ``limit`` bytes.

    An allocation past it fails (MemoryError) instead of growing until the
    machine runs out: one mail can only cost the worker that processes it.
    The soft limit only, so the render workers this one starts may set their own.
    """
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))


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
    set_memory_ceiling(settings.limits.worker_memory)
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
    pipeline.memory_ceiling = settings.limits.worker_memory
    note_lock = threading.Lock()

    def note(line: str) -> None:
        with note_lock:
            try:
                notes.write(line + "\n")
                notes.flush()
            except (BrokenPipeError, OSError):
                pass

    def claimed(row: Row | None) -> None:
        note(f"claim {row['id']}" if row is not None else "idle")  # serve times each mail

    pipeline.on_exports = lambda: note("exports")
    pipeline.on_claim = claimed
    from gateway import testhooks

    if testhooks.enabled():
        pipeline.test_hook = testhooks.hook(settings.data_dir)
    _warm_up()
    stop = threading.Event()
    pace = Pace()
    threading.Thread(target=_commands, args=(sys.stdin.buffer, pipeline.wake, stop, reloads, pace),
                     daemon=True).start()
    code = 0
    while not stop.is_set():  # Pipeline.worker, but a MemoryError ends the process, and one mail per turn
        try:
            while not stop.is_set():
                if pace.held:
                    claimed(None)  # serve times the mail a worker holds: none while it waits its turn
                pace.wait_turn(stop)
                if not pipeline.run_pending(stop, limit=1):
                    break
        except MemoryError:
            # the mail's failure is recorded (run_pending); a fresh process leaves nothing of it behind
            code = EXIT_OUT_OF_MEMORY
            break
        except Exception:
            stop.wait(5)
        pipeline.wake.wait(1.0)
        pipeline.wake.clear()
    store.close()
    try:
        from gateway import render

        render.shutdown()
    except Exception:
        pass
    os._exit(code)


if __name__ == "__main__":
    main()
