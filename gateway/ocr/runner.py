"""One document read by OCRmyPDF in a child process: nice 19, bounded in pages, time and memory.

OCRmyPDF (Debian's ``ocrmypdf``, which runs Tesseract) puts an invisible text
layer, word by word at the words' positions, over each page image; with
``--rotate-pages`` it turns pages lying on their side, with ``--deskew`` it
straightens skewed ones; with ``--tesseract-thresholding sauvola``
(``ocr.thresholding``) it tells ink from paper locally, so a photo's shaded
corner stays readable. It runs as
``prlimit --as=MEMORY nice -n 19 ocrmypdf ...`` in a session of its own: the
memory bound holds for it and for the Tesseract and Ghostscript processes it
starts, and on a timeout or a stop the whole group is killed.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from gateway.config import OcrConfig

OCRMYPDF = "ocrmypdf"
# OCRmyPDF's exit codes (ocrmypdf.ExitCode) a person can act on
_EXIT_REASONS = {
    2: "the file is not a PDF OCRmyPDF can read",
    3: "a program OCRmyPDF needs is missing (Tesseract or Ghostscript; install deps/debian-runtime.txt)",
    6: "the PDF already has text",
    8: "the PDF is encrypted",
}
# what OCRmyPDF, Ghostscript, Tesseract and the dynamic loader say when the address space runs out
_OUT_OF_MEMORY = ("MemoryError", "Cannot allocate memory", "failed to map segment", "std::bad_alloc",
                  "VMerror", "out of memory")


@dataclass(frozen=True)
class OcrResult:
    """What reading one document gave.

    Attributes:
        data: the PDF with its text layer, or None when reading failed.
        error: why it failed ("" on success), in words a person can act on.
        seconds: how long the child process ran.
        pages: the pages read (the first ``ocr.max_pages``).
    """

    data: bytes | None
    error: str
    seconds: float
    pages: int


def available() -> str:
    """Why OCR cannot run here ("" when ocrmypdf and tesseract are installed)."""
    missing = [p for p in (OCRMYPDF, "tesseract", "prlimit", "nice") if shutil.which(p) is None]
    if missing:
        return (f"{', '.join(missing)} not installed: install the Debian packages in deps/debian-runtime.txt "
                "(ocrmypdf, tesseract-ocr and its languages) or set ocr.enabled: false")
    return ""


def page_count(data: bytes) -> int:
    """How many pages a PDF has (0 when it cannot be read)."""
    import pypdf

    try:
        return len(pypdf.PdfReader(io.BytesIO(data), strict=False).pages)
    except Exception:
        return 0


def command(src: Path, dst: Path, config: OcrConfig, pages: int) -> list[str]:
    """The command line that reads ``src`` into ``dst``."""
    per_page = max(10, min(300, config.timeout // max(1, min(pages, config.max_pages))))
    argv = ["prlimit", f"--as={config.memory}", "nice", "-n", "19",
            OCRMYPDF, "--force-ocr", "--output-type", "pdf", "--optimize", "0", "--jobs", "1",
            "--tesseract-timeout", str(per_page), "-l", "+".join(config.languages)]
    if pages > config.max_pages:
        argv += ["--pages", f"1-{config.max_pages}"]
    if config.rotate_pages:
        argv.append("--rotate-pages")
    if config.deskew:
        argv.append("--deskew")
    if config.thresholding != "auto":
        argv += ["--tesseract-thresholding", config.thresholding]
    return [*argv, "--", str(src), str(dst)]


def run(data: bytes, config: OcrConfig, *, cancel: threading.Event | None = None) -> OcrResult:
    """Read a PDF with OCRmyPDF; never raises for what the document or the child does."""
    started = time.monotonic()
    missing = available()
    if missing:
        return OcrResult(None, missing, 0.0, 0)
    pages = page_count(data)
    if pages == 0:
        return OcrResult(None, "the PDF cannot be read (no pages)", 0.0, 0)
    with tempfile.TemporaryDirectory(prefix="gateway-ocr-") as tmp:
        src, dst = Path(tmp) / "in.pdf", Path(tmp) / "out.pdf"
        src.write_bytes(data)
        # one Tesseract thread: the bound is one CPU per document (ocr.workers of them)
        env = dict(os.environ, OMP_THREAD_LIMIT="1", TMPDIR=tmp)
        try:
            proc = subprocess.Popen(command(src, dst, config, pages), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                                    start_new_session=True)
        except OSError as exc:
            return OcrResult(None, f"OCRmyPDF could not be started: {exc}", 0.0, 0)
        # stderr is read by a thread so that a chatty child never blocks on a full pipe
        chunks: list[bytes] = []
        reader = threading.Thread(target=lambda: chunks.append(proc.stderr.read() if proc.stderr else b""),
                                  daemon=True)
        reader.start()
        deadline = started + config.timeout
        error = ""
        while True:
            try:
                proc.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                if cancel is not None and cancel.is_set():
                    error = "stopped: the gateway is shutting down; the document is read again at the next start"
                elif time.monotonic() > deadline:
                    error = f"reading took longer than ocr.timeout ({config.timeout} s)"
                else:
                    continue
                _kill(proc)
                break
        reader.join(timeout=5)
        if proc.stderr is not None:
            proc.stderr.close()
        seconds = time.monotonic() - started
        read = min(pages, config.max_pages)
        if error:
            return OcrResult(None, error, seconds, read)
        if proc.returncode != 0 or not dst.exists():
            return OcrResult(None, _reason(proc.returncode, b"".join(chunks), config), seconds, read)
        return OcrResult(dst.read_bytes(), "", seconds, read)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """Kill the child and every process it started (its session)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    proc.wait()


def _reason(code: int, stderr: bytes, config: OcrConfig) -> str:
    """Why OCRmyPDF failed, from its exit code and the last line it wrote."""
    text = stderr.decode("utf-8", "replace").strip()
    last = text.splitlines()[-1][:300] if text else ""
    if any(m in text for m in _OUT_OF_MEMORY) or code == -signal.SIGKILL:
        return f"reading needed more memory than ocr.memory ({config.memory // 1024**2} MB)"
    if code < 0:
        return f"OCRmyPDF was ended by signal {-code}"
    reason = _EXIT_REASONS.get(code, f"OCRmyPDF failed (exit code {code})")
    if "language" in text.lower() and "not" in text.lower():
        return (f"Tesseract lacks a language of ocr.languages ({', '.join(config.languages)}): install its "
                f"Debian package ({', '.join('tesseract-ocr-' + lang.replace('_', '-') for lang in config.languages)})"
                " or remove it from ocr.languages")
    return f"{reason}: {last}" if last else reason
