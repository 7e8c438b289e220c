"""Hot folders: PDF and XML files, photos and scans a scanner (or a script) drops become messages in the spool.

A file is taken only when it is complete: its size and modification time
have stayed the same for ``settle`` seconds (and a PDF ends with ``%%EOF``,
an XML file with ``>``, a JPEG with its end marker, a PNG with its ``IEND``
chunk, or has been still for a long while). Images (JPEG, PNG, TIFF, HEIC)
become PDF documents read by OCR, as scanned PDFs do (``gateway.ocr``). It enters the
spool like any mail, as a generated RFC 5322 message with the file attached
(From: the hot folder's name, Subject: the file name), with source
``folder:<name>``. Then it is moved to ``done/`` inside the folder, or left
where it is. Files are deduplicated by SHA-256: the same file dropped twice
(under any name) is imported once; its hash is remembered in the store.

Watching is the rules folder's: ``auto`` uses native file events plus a slow
poll, ``poll`` only polls (NAS and Docker bind mounts, where events never
come), ``inotify`` only events. Only files directly in the folder are taken;
hidden and temporary files (``.name``, ``~name``) and other types are ignored.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from gateway.config import HotFolderConfig
from gateway.errors import GatewayError, SourceError
from gateway.models import Envelope
from gateway.naming import with_counter
from gateway.spool import Spool
from gateway.store import Store, iso, utcnow

log = logging.getLogger(__name__)

TYPES = {".pdf": ("application", "pdf"), ".xml": ("application", "xml"),
         ".jpg": ("image", "jpeg"), ".jpeg": ("image", "jpeg"), ".png": ("image", "png"),
         ".tif": ("image", "tiff"), ".tiff": ("image", "tiff"), ".heic": ("image", "heic"), ".heif": ("image", "heif")}
DONE = "done"
SETTLE = 1.0          # seconds a file's size and mtime must stay the same
CHECK = 0.25          # how often a file that is still settling is looked at
UNFINISHED_GRACE = 30.0  # a PDF without %%EOF is taken once it has been still this long
POLL = {"auto": 10.0, "poll": 2.0}


def wanted(name: str) -> bool:
    """Whether a file name is one to import (PDF, XML or an image; not hidden, not temporary)."""
    if name.startswith((".", "~")) or name.endswith("~"):
        return False
    return os.path.splitext(name)[1].lower() in TYPES


def looks_complete(path: Path, kind: str) -> bool:
    """Whether the end of the file looks like the end of a PDF, XML, JPEG or PNG file (TIFF and HEIC: no end mark)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, path.stat().st_size - 2048))
            tail = fh.read()
    except OSError:
        return False
    if kind == ".pdf":
        return b"%%EOF" in tail
    if kind in (".jpg", ".jpeg"):
        return tail.rstrip(b"\0").endswith(b"\xff\xd9")
    if kind == ".png":
        return b"IEND" in tail[-16:]
    if kind == ".xml":
        return tail.rstrip().endswith(b">")
    return True


def build_message(folder: str, filename: str, data: bytes, sha256: str, mtime: float) -> bytes:
    """The RFC 5322 message that carries one dropped file."""
    local = re.sub(r"[^a-z0-9._-]+", "-", folder.lower()).strip(".-") or "folder"
    msg = EmailMessage()
    msg["From"] = Address(display_name=folder, username=local, domain="hot-folder.invalid")
    msg["Subject"] = filename
    msg["Date"] = formatdate(mtime, localtime=True)
    msg["Message-ID"] = f"<{sha256}@hot-folder.invalid>"
    msg.set_content(f"{filename} was dropped into the hot folder {folder}.\n")
    maintype, subtype = TYPES.get(os.path.splitext(filename)[1].lower(), ("application", "octet-stream"))
    msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes(policy=SMTP)


@dataclass
class _Seen:
    """What a file looked like when last checked, and since when it has looked so."""

    size: int
    mtime_ns: int
    since: float


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: HotFolderWatcher) -> None:
        self.watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        """Any change in the folder: look at it soon."""
        if event.event_type != "opened":
            self.watcher.nudge()


class HotFolderWatcher:
    """Imports complete files from one hot folder; a thread with start / step / stop."""

    def __init__(self, config: HotFolderConfig, spool: Spool, store: Store, *,
                 settle: float = SETTLE, poll_interval: float | None = None) -> None:
        self.config = config
        self.spool = spool
        self.store = store
        self.root = Path(config.path)
        self.done = self.root / DONE
        self.settle = settle
        self.mode = config.watch
        self.poll_interval = poll_interval or POLL.get(self.mode, 10.0)
        self._pending: dict[str, _Seen] = {}
        self._handled: dict[str, tuple[int, int]] = {}  # left in place (or failed to move): size, mtime
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._observer: BaseObserver | None = None
        self._next_poll = 0.0
        self.imported = 0

    # -- start / stop ---------------------------------------------------------------------

    def start(self) -> None:
        """Create the folder if needed, start watching, and take what is already there."""
        self.root.mkdir(parents=True, exist_ok=True)
        if self.config.after_import == "move":
            self.done.mkdir(exist_ok=True)
        if self.mode != "poll":
            try:
                self._observer = Observer()
                self._observer.schedule(_Handler(self), str(self.root), recursive=False)
                self._observer.start()
            except OSError as exc:
                if self.mode == "inotify":
                    raise SourceError(f"hot folder {self.config.name}: cannot watch {self.root} ({exc}); "
                                      "use watch: poll on network and bind-mounted folders") from exc
                log.warning("hot folder %s: cannot watch %s natively (%s); polling it instead",
                            self.config.name, self.root, exc)
                self._observer = None
                self.poll_interval = POLL["poll"]
        self._thread = threading.Thread(target=self._run, name=f"hot-folder-{self.config.name}", daemon=True)
        self._thread.start()
        log.info("hot folder %s: watching %s (%s)", self.config.name, self.root, self.mode)

    def stop(self) -> None:
        """Stop watching; a file being imported is finished first."""
        self._stopping.set()
        self._wake.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def nudge(self) -> None:
        """Something changed in the folder: look now."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                wait = self.step(time.monotonic())
            except Exception:  # keep watching; the next step retries
                log.exception("hot folder %s: step failed", self.config.name)
                wait = 1.0
            self._wake.wait(wait)
            self._wake.clear()

    # -- the work -------------------------------------------------------------------------

    def step(self, now: float) -> float:
        """Look at the folder; import the files that are complete. Returns seconds until the next look."""
        if now >= self._next_poll:
            self._next_poll = now + self.poll_interval
        for path in self._scan(now):
            if self._stopping.is_set():
                break
            self._take(path)
        if self._pending:
            return CHECK
        return max(0.05, self._next_poll - now) if self.mode != "inotify" else 3600.0

    def _scan(self, now: float) -> list[Path]:
        """Update what is settling; return the files that are complete now."""
        ready: list[Path] = []
        present: set[str] = set()
        try:
            entries = list(os.scandir(self.root))
        except OSError as exc:
            log.warning("hot folder %s: cannot read %s: %s", self.config.name, self.root, exc.strerror)
            return []
        for entry in entries:
            if not wanted(entry.name):
                continue
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            present.add(entry.name)
            if self._handled.get(entry.name) == (st.st_size, st.st_mtime_ns):
                continue
            seen = self._pending.get(entry.name)
            if seen is None or (seen.size, seen.mtime_ns) != (st.st_size, st.st_mtime_ns):
                self._pending[entry.name] = _Seen(st.st_size, st.st_mtime_ns, now)
                continue
            still = now - seen.since
            if st.st_size == 0 or still < self.settle:
                continue
            path = Path(entry.path)
            if still < UNFINISHED_GRACE and not looks_complete(path, os.path.splitext(entry.name)[1].lower()):
                continue  # a writer that pauses (a scanner on a slow share): wait for the end
            ready.append(path)
        for gone in set(self._pending) - present:
            del self._pending[gone]
        for gone in set(self._handled) - present:
            del self._handled[gone]
        return sorted(ready)

    def _take(self, path: Path) -> None:
        """Import one complete file (unless its content was imported before), then move or remember it."""
        name = path.name
        try:
            st = path.stat()
            data = path.read_bytes()
        except OSError as exc:
            log.warning("hot folder %s: cannot read %s: %s", self.config.name, name, exc.strerror)
            return
        if len(data) != st.st_size:
            return  # changed while reading: settle again
        sha = hashlib.sha256(data).hexdigest()
        key = f"hot-folder:{self.config.name}:{sha}"
        if self.store.get_kv(key) is not None:
            log.info("hot folder %s: %s was imported before (same content); not again", self.config.name, name)
        else:
            raw = build_message(self.config.name, name, data, sha, st.st_mtime)
            envelope = Envelope(source=f"folder:{self.config.name}", assign=dict(self.config.assign), origin=name)
            try:
                message_id = self.spool.accept(raw, envelope)
            except GatewayError as exc:
                log.error("hot folder %s: cannot take %s, will try again: %s", self.config.name, name, exc)
                self._pending.pop(name, None)
                return
            self.store.set_kv(key, {"file": name, "message": message_id, "at": iso(utcnow())})
            self.imported += 1
            log.info("hot folder %s: imported %s as message %d", self.config.name, name, message_id)
        self._pending.pop(name, None)
        if self.config.after_import == "move" and self._move_done(path):
            return
        self._handled[name] = (st.st_size, st.st_mtime_ns)

    def _move_done(self, path: Path) -> bool:
        """Move an imported file into done/ (a counter keeps earlier files of that name)."""
        try:
            self.done.mkdir(exist_ok=True)
            for n in range(1, 1000):
                target = self.done / (path.name if n == 1 else with_counter(path.name, n))
                if target.exists():
                    continue
                os.rename(path, target)
                return True
        except OSError as exc:
            log.error("hot folder %s: imported %s but cannot move it to %s: %s", self.config.name, path.name,
                      self.done, exc.strerror)
        return False

    def status(self) -> dict[str, Any]:
        """What the admin page may show."""
        return {"name": self.config.name, "path": str(self.root), "mode": self.mode, "imported": self.imported,
                "waiting": sorted(self._pending)}


def start_folder_watchers(service: Any) -> list[HotFolderWatcher]:
    """Start one watcher per configured hot folder; returns them (each has ``stop()``)."""
    watchers = []
    for cfg in service.settings.folders:
        w = HotFolderWatcher(cfg, service.spool, service.store)
        try:
            w.start()
        except GatewayError as exc:
            log.error("%s", exc)
            continue
        watchers.append(w)
    return watchers
