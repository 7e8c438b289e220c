"""Durable intake: raw bytes -> tmp -> fsync -> rename -> fsync dir -> row.

Every source (SMTP, IMAP, hot folder, ``import``) hands a message here and
nothing else. When ``accept`` returns, the raw message is on disk unchanged
and recorded with status ``received``; the pipeline takes it from there.
Concurrent SMTP sessions share the work (group commit): each message's file
is written and fsync'd at once in a pool thread, in parallel with the others;
the batch writer then fsyncs the directory once for everything waiting and
records it all in one transaction.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import queue
import re
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.errors import SpoolError, StoreError
from gateway.models import Envelope
from gateway.store import Store, iso

log = logging.getLogger(__name__)

# Threads that write and fsync message files at the same time.
FSYNC_THREADS = 16
# Recovery leaves younger files alone: another process (import, fetch) may be recording them.
RECOVER_AFTER = 120
# A temp file is named <writer's claim token>~<name>: recovery removes the partial files of
# writers that are gone at once, and never those of a writer that still runs.
_WRITER_SEP = "~"


def _token_part(token: str) -> str:
    return re.sub(r"[^A-Za-z0-9._:-]", "_", token)


@dataclass(frozen=True)
class Spooled:
    """A message file that is durable on disk but not yet recorded.

    Attributes:
        path: the final path of the raw message.
        rel: the path relative to data_dir (stored in the row).
        size: bytes.
        sha256: hex digest of the raw bytes.
        envelope: how it arrived.
    """

    path: Path
    rel: str
    size: int
    sha256: str
    envelope: Envelope


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """Writes raw messages durably under ``data_dir/mail`` and records them."""

    def __init__(self, store: Store, on_new: Callable[[], None] | None = None) -> None:
        self.store = store
        self.root = store.data_dir / "mail"
        self.tmp = self.root / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.on_new = on_new
        self._queue: queue.Queue[tuple[Spooled, Callable[[int | None, BaseException | None], None]] | None] = (
            queue.Queue())
        self._writer: threading.Thread | None = None
        self._lock = threading.Lock()
        self._dirs_synced: set[str] = set()  # months whose folder exists, durably
        self._fsyncers: ThreadPoolExecutor | None = None

    # -- the two steps ------------------------------------------------------------

    def _month_dir(self, envelope: Envelope) -> tuple[str, Path]:
        month = envelope.received.strftime("%Y-%m")
        final_dir = self.root / month
        if month not in self._dirs_synced:  # a str: hashing a Path costs more than the rest of this
            final_dir.mkdir(exist_ok=True)
            _fsync_dir(self.root)
            self._dirs_synced.add(month)
        return month, final_dir

    def write_file(self, raw: bytes, envelope: Envelope) -> Spooled:
        """Write ``raw`` to its final name, fsync'd (file and directory entry)."""
        name = uuid.uuid4().hex
        tmp = self.tmp / self._tmp_name(name)
        try:
            month, final_dir = self._month_dir(envelope)
            with open(tmp, "wb") as fh:
                fh.write(raw)
                fh.flush()
                os.fsync(fh.fileno())
            final = final_dir / f"{name}.eml"
            os.rename(tmp, final)
        except OSError as exc:
            # a disk that filled up keeps the partial file until the next start: free it now
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise SpoolError(f"cannot write the message to {self.root}: {exc.strerror or exc}") from exc
        return Spooled(final, f"mail/{month}/{name}.eml", len(raw), hashlib.sha256(raw).hexdigest(), envelope)

    def new_tmp(self) -> Path:
        """A fresh name in the spool's tmp folder for a message written as it arrives.

        Whoever writes there deletes the file when the message is not handed over
        with ``submit_file``; a crash leaves it to ``recover``, which deletes it.
        """
        return self.tmp / self._tmp_name(uuid.uuid4().hex)

    def _tmp_name(self, name: str) -> str:
        """``<writer>~<name>``: the writer's claim token tells recovery whether the writer still runs."""
        return f"{_token_part(self.store.claims.token())}{_WRITER_SEP}{name}"

    def adopt_file(self, tmp: Path, size: int, sha256: str, envelope: Envelope) -> Spooled:
        """fsync a message already written to ``tmp`` (from ``new_tmp``) and move it to its final name."""
        try:
            month, final_dir = self._month_dir(envelope)
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            name = tmp.name.rpartition(_WRITER_SEP)[2]
            final = final_dir / f"{name}.eml"
            os.rename(tmp, final)
        except OSError as exc:
            raise SpoolError(f"cannot write the message to {self.root}: {exc.strerror or exc}") from exc
        return Spooled(final, f"mail/{month}/{name}.eml", size, sha256, envelope)

    def record(self, items: list[Spooled]) -> list[int]:
        """fsync the directories, then insert the rows in one transaction."""
        try:
            for d in {i.path.parent for i in items}:
                _fsync_dir(d)
            ids = self.store.insert_messages([_row(i) for i in items])
        except (OSError, StoreError) as exc:
            raise SpoolError(f"cannot record the message: {exc}") from exc
        if self.on_new:
            self.on_new()
        return ids

    # -- blocking API for IMAP, folders, the CLI ------------------------------------

    def accept(self, raw: bytes, envelope: Envelope) -> int:
        """Make one message durable and recorded; returns its id."""
        return self.record([self.write_file(raw, envelope)])[0]

    # -- group commit for SMTP -------------------------------------------------------

    def submit(self, raw: bytes, envelope: Envelope,
               done: Callable[[int | None, BaseException | None], None]) -> None:
        """Make a message durable and recorded in the background; ``done(id, None)`` once it
        is, ``done(None, error)`` when it could not be (the caller answers 451).

        Two stages, so neither waits for the other: the file is written and
        fsync'd at once in a pool thread (concurrent fsyncs share the file
        system's journal commits), then the batch writer fsyncs the directories
        of everything waiting once and records it all in one transaction.
        """
        with self._lock:
            self._start()
            assert self._fsyncers is not None
            self._fsyncers.submit(self._write_one, functools.partial(self.write_file, raw, envelope), done)

    def submit_file(self, tmp: Path, size: int, sha256: str, envelope: Envelope,
                    done: Callable[[int | None, BaseException | None], None]) -> None:
        """``submit`` for a message already written to ``tmp`` (see ``new_tmp``): the spool
        takes the file over, fsyncs it, gives it its final name and records it."""
        with self._lock:
            self._start()
            assert self._fsyncers is not None
            self._fsyncers.submit(self._write_one, functools.partial(self.adopt_file, tmp, size, sha256, envelope),
                                  done)

    def _start(self) -> None:
        if self._fsyncers is None:
            self._fsyncers = ThreadPoolExecutor(max_workers=FSYNC_THREADS, thread_name_prefix="spool-fsync")
        if self._writer is None or not self._writer.is_alive():
            self._writer = threading.Thread(target=self._write_loop, name="spool-writer", daemon=True)
            self._writer.start()

    def _write_one(self, write: Callable[[], Spooled],
                   done: Callable[[int | None, BaseException | None], None]) -> None:
        try:
            spooled = write()
        except Exception as exc:  # this session gets 451; the others go on
            done(None, exc)
        else:
            self._queue.put((spooled, done))

    def _write_loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < 256:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                batch.append(nxt)
            try:
                ids = self.record([spooled for spooled, _ in batch])
            except Exception as exc:  # every waiting session must get an answer (451)
                for _, done in batch:
                    done(None, exc)
            else:
                for (_, done), mid in zip(batch, ids, strict=True):
                    done(mid, None)

    def stop(self) -> None:
        """Stop after the messages handed over so far are written and recorded."""
        with self._lock:
            fsyncers, self._fsyncers = self._fsyncers, None
        if fsyncers is not None:
            fsyncers.shutdown(wait=True)
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join(timeout=10)

    # -- recovery ------------------------------------------------------------------

    def recover(self, *, now: float | None = None) -> dict[str, int]:
        """At start: drop partial temp files, set aside files that were never recorded.

        A temp file never got a 250 (the client retries); a final file without a
        row was answered 451 too. Neither is deleted outright: unrecorded files
        go to ``data_dir/orphaned`` for a person to look at. Files younger than
        RECOVER_AFTER seconds are left alone: an ``import`` or ``fetch``
        running beside a starting serve may be between writing one and
        recording it (the next start looks at them again).
        """
        counts = {"tmp_removed": 0, "orphaned": 0}
        cutoff = (time.time() if now is None else now) - RECOVER_AFTER

        def settled(f: Path) -> bool:
            try:
                return f.stat().st_mtime < cutoff
            except FileNotFoundError:
                return False

        for f in self.tmp.iterdir():
            writer, sep, _ = f.name.partition(_WRITER_SEP)
            # a partial file of a process that is gone (a killed serve) goes at once; one whose
            # writer still runs (an import beside) stays; one of unknown writer when it is old
            gone = bool(sep) and not self.store.claims.alive(writer)
            if gone or (not sep and settled(f)):
                f.unlink(missing_ok=True)
                counts["tmp_removed"] += 1
        known = {r[0] for r in self.store._conn().execute("SELECT raw_path FROM messages WHERE received >= date('now', '-62 days')")}
        months = sorted(p for p in self.root.iterdir() if p.is_dir() and p.name != "tmp")[-2:]
        orphan_dir = self.store.data_dir / "orphaned"
        for month in months:
            for f in month.glob("*.eml"):
                rel = f"mail/{month.name}/{f.name}"
                if rel not in known and settled(f):
                    orphan_dir.mkdir(exist_ok=True)
                    os.rename(f, orphan_dir / f.name)
                    counts["orphaned"] += 1
        if counts["orphaned"]:
            log.warning("spool recovery: %d message files were never recorded (answered 451); kept in %s",
                        counts["orphaned"], orphan_dir)
        return counts

    def read(self, rel: str) -> bytes:
        """The raw bytes of a stored message."""
        return (self.store.data_dir / rel).read_bytes()


def _row(item: Spooled) -> dict[str, Any]:
    env = item.envelope
    return {
        "received": iso(env.received),
        "source": env.source,
        "origin": env.origin,
        "peer": env.peer,
        "mail_from": env.mail_from,
        "rcpt_tos": list(env.rcpt_tos),
        "import_address": env.import_address,
        "tag": env.tag,
        "assign": dict(env.assign),
        "raw_path": item.rel,
        "size": item.size,
        "sha256": item.sha256,
    }
