"""The OCR worker of ``serve``: documents waiting for OCR are read one at a time, then exported.

The pipeline decides and stores a mail at once; a scan's or photo's
document is stored as it came (an image already made a PDF) with ``ocr:
pending``, and its exports wait. This worker claims such a document, reads it
with OCRmyPDF (``runner``: nice 19, bounded), reads the document's fields
from the new text layer (``gateway.fields.read_after_ocr``: source ``ocr``,
with page and box; the document's company, number and date follow from them
as for a born-digital PDF), and replaces the document's file with the one
that has a text layer; then its exports go, named with those fields. A failure
leaves the file as it was, with a warning, and lets the exports go too. The
store holds the queue, so a document claimed when the gateway stopped is
read again at the next start.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from gateway.config import Settings
from gateway.fields import columns, read_after_ocr
from gateway.fields.suppliers import Suppliers, sender_domain, with_supplier
from gateway.ocr import runner
from gateway.store import Row, Store

log = logging.getLogger(__name__)

IDLE_POLL = 1.0  # worker processes store documents too: the queue is looked at this often when idle


class OcrWorker:
    """Reads the documents waiting for OCR; ``ocr.workers`` threads, each with one child process at a time."""

    def __init__(self, settings: Settings, store: Store, *,
                 on_done: list[Callable[[int, bool], None]] | None = None) -> None:
        from gateway.pipeline import DocumentFiles

        self.settings = settings
        self.config = settings.ocr
        self.store = store
        self.files = DocumentFiles(settings.data_dir)
        self.on_done: list[Callable[[int, bool], None]] = list(on_done or [])
        self.wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.busy = 0
        self.stats: dict[str, float] = {"read": 0, "failed": 0, "seconds": 0.0, "pages": 0}
        self._lock = threading.Lock()

    def start(self) -> None:
        """Free the claims of an earlier run and start the worker threads."""
        freed = self.store.release_ocr_claims()
        if freed:
            log.info("OCR: %d document(s) whose reading was cut short wait again", freed)
        missing = runner.available()
        if missing:
            log.warning("OCR is on but cannot run: %s; scans are stored without a text layer", missing)
        for i in range(self.config.workers):
            t = threading.Thread(target=self._loop, name=f"ocr-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        """Stop: a child process reading now is killed (its document is read again at the next start)."""
        self._stop.set()
        self.wake.set()
        for t in self._threads:
            t.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                worked = self.step()
            except Exception:  # the worker keeps going; the document stays claimed until restart
                log.exception("OCR: a step failed")
                worked = False
            if not worked:
                self.wake.wait(IDLE_POLL)
                self.wake.clear()

    def step(self) -> bool:
        """Read one waiting document, if any; True when one was read (or failed)."""
        doc = self.store.claim_ocr()
        if doc is None:
            return False
        with self._lock:
            self.busy += 1
        try:
            self._read(doc)
        except Exception as exc:  # a bug or a broken store: the exports must not wait for ever
            log.exception("OCR of document %s failed unexpectedly", doc["id"])
            self._finish(int(doc["id"]), False, f"OCR failed, the document has no text layer: {type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self.busy -= 1
        return True

    def _read(self, doc: Row) -> None:
        doc_id = int(doc["id"])
        try:
            data = (self.settings.data_dir / doc["path"]).read_bytes()
        except OSError as exc:
            self._finish(doc_id, False, f"OCR: the document's file cannot be read ({exc.strerror})")
            return
        result = runner.run(data, self.config, cancel=self._stop)
        if self._stop.is_set() and result.data is None:
            return  # cut short by the stop: still claimed, read again at the next start
        self.stats["seconds"] += result.seconds
        if result.data is None:
            self.stats["failed"] += 1
            log.warning("OCR of document %d (%s) failed: %s; it is kept without a text layer",
                        doc_id, doc["filename"], result.error)
            self._finish(doc_id, False, f"OCR failed, the document has no text layer: {result.error}")
            return
        sha = hashlib.sha256(result.data).hexdigest()
        rel = self.files.path_for(sha, doc["filename"])
        self.files.write(rel, result.data)
        self._read_fields(doc, result.data)
        if not self.store.finish_ocr(doc_id, state="done", sha256=sha, path=rel, size=len(result.data)):
            self._notify(doc_id, False)
            return
        if rel != doc["path"]:  # the bytes as they came stay in the raw mail
            try:
                (self.settings.data_dir / doc["path"]).unlink()
            except OSError:
                pass
        self.stats["read"] += 1
        self.stats["pages"] += result.pages
        log.info("OCR of document %d (%s): %d page(s) read in %.1f s", doc_id, doc["filename"], result.pages,
                 result.seconds)
        self._notify(doc_id, True)

    def _read_fields(self, doc: Row, data: bytes) -> None:
        """Store the fields the new text layer gives; the exports still wait (``ocr`` is running)."""
        stored = doc.get("fields")
        try:
            before = json.loads(stored) if isinstance(stored, str) else stored
        except ValueError:  # unreadable: read as if nothing were known
            before = None
        msg = self.store.message(int(doc["message_id"])) if doc.get("message_id") is not None else None
        domain = sender_domain(msg)
        read = read_after_ocr(data, before if isinstance(before, dict) else None, learned=self.store.learned_for,
                              sender_domain=domain)
        match = Suppliers(self.store).match(read, domain, [read.iban] if read.iban else [])
        read = with_supplier(read, match)
        # a person's corrections stay on top, of the fields and of the columns they name
        self.store.set_read_fields(int(doc["id"]), read.to_json(), **columns(read, received=doc.get("doc_date")),
                                   **({"supplier_id": match.supplier_id} if match is not None else {}))

    def _finish(self, doc_id: int, ok: bool, warning: str) -> None:
        self.store.finish_ocr(doc_id, state="done" if ok else "failed", warning=warning)
        self._notify(doc_id, ok)

    def _notify(self, doc_id: int, ok: bool) -> None:
        for hook in self.on_done:  # the exports wake; field readers may read the new text layer
            try:
                hook(doc_id, ok)
            except Exception:
                log.exception("OCR: a hook after document %d failed", doc_id)

    def status(self) -> dict[str, Any]:
        """What the admin page and /metrics may show."""
        return {"enabled": self.config.enabled, "workers": self.config.workers, "busy": self.busy,
                "waiting": self.store.ocr_waiting(), **self.stats}
