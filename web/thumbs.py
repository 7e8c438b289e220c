"""Thumbnails and previews of documents' pages (the first unless asked), cached in data_dir/thumbs.

pypdfium2 renders in a child process (web/thumbrender.py) with a time and
memory limit; a PDF that cannot be rendered is remembered as such and shown
as a placeholder instead of being tried again on every page view.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SIZES = {"thumb": 240, "preview": 1000}
RENDERER = Path(__file__).with_name("thumbrender.py")


class Thumbnails:
    """Renders and caches PNGs of documents' first pages."""

    def __init__(self, data_dir: Path, *, timeout: float = 20.0, memory: int = 1024**3, parallel: int = 2) -> None:
        self.data_dir = data_dir
        self.root = data_dir / "thumbs"
        self.timeout = timeout
        self.memory = memory
        self._slots = threading.BoundedSemaphore(parallel)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    def _lock(self, key: str) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(key, threading.Lock())

    def info(self, doc: dict[str, Any]) -> dict[str, Any]:
        """What is known of a rendered document (``pages``), or {}."""
        try:
            return dict(json.loads((self.root / f"{doc['sha256']}.json").read_text(encoding="utf-8")))
        except (OSError, ValueError):
            return {}

    def get(self, doc: dict[str, Any], size: str, page: int = 1) -> Path | None:
        """The PNG of a document's ``page`` at ``size`` (thumb or preview); None: show a placeholder."""
        width = SIZES[size]
        if doc.get("kind") != "pdf":
            return None
        sha = str(doc["sha256"])
        name = f"{sha}-{width}" if page == 1 else f"{sha}-{width}-p{page}"
        png = self.root / sha[:2] / f"{name}.png"
        if png.exists():
            return png
        failed = self.root / sha[:2] / f"{name}.failed"
        if failed.exists():
            return None
        src = (self.data_dir / str(doc["path"])).resolve()
        if not src.is_relative_to(self.data_dir.resolve()) or not src.exists():
            return None
        with self._lock(name), self._slots:
            if png.exists():
                return png
            png.parent.mkdir(parents=True, exist_ok=True)
            reason = self._render(src, png, width, doc, page)
            if reason is None:
                return png
            if "ModuleNotFoundError" in reason or "cannot start" in reason:
                log.warning("document previews are unavailable: %s", reason)
                return None  # the gateway's install is at fault, not the PDF: try again next time
            failed.write_text(reason + "\n", encoding="utf-8")
            log.info("document %s: no preview (%s)", doc.get("id"), reason)
            return None

    def _render(self, src: Path, png: Path, width: int, doc: dict[str, Any], page: int = 1) -> str | None:
        """Render in the child process; the reason it failed, or None."""
        cmd = [sys.executable, "-I", str(RENDERER), str(src), str(png), str(width), str(self.memory), str(page)]
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=self.timeout, check=False)
        except subprocess.TimeoutExpired:
            return f"rendering took longer than {self.timeout:g} s"
        except OSError as exc:
            return f"cannot start the renderer: {exc.strerror}"
        try:
            pages = json.loads(proc.stdout.decode().strip().splitlines()[-1])["pages"]
        except (ValueError, IndexError, KeyError):
            pages = None
        if pages is not None:
            (self.root / f"{doc['sha256']}.json").write_text(json.dumps({"pages": pages}), encoding="utf-8")
        if proc.returncode == 0 and png.exists():
            return None
        if pages == 0:
            return "the PDF has no pages"
        if proc.returncode == 4:
            return f"the PDF has no page {page}"
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        return f"the PDF cannot be rendered ({err[-1][:200] if err else f'exit {proc.returncode}'})"
