"""Render a mail body (HTML or plain text) to PDF with weasyprint, network-free.

``render_message`` lays out untrusted mail in a warm worker process with a
wall-time and a memory limit; ``render_html_to_pdf`` is the in-process
primitive it (and the e-invoice renderer) uses. The URL fetcher is the
barrier: weasyprint (70 or later) routes every URL through it (images,
``<link>``, ``@import``, CSS ``url()``, fonts, SVG), and it serves only
``cid:`` parts of the same mail and ``data:`` URLs. Everything else (http,
https, file, ftp, relative paths, ``//host``) is refused, so rendering reads
nothing from the network or the file system.
"""

from __future__ import annotations

import atexit
import base64
import binascii
import email.utils
import functools
import html as html_lib
import logging
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources as package_files
from multiprocessing.connection import Connection
from typing import Any

import weasyprint
from weasyprint.urls import URLFetcher, URLFetcherResponse

from gateway.errors import RenderError, RenderLimitError
from gateway.models import ParsedMessage

__all__ = [
    "Renderer",
    "render_html_to_pdf",
    "render_message",
    "safe_url_fetcher",
    "shutdown",
    "warm_up",
]

Resources = Mapping[str, tuple[str, bytes]]

# Relative URLs resolve against this; no fetcher serves it (urljoin leaves a
# relative URL as it is under a scheme it does not know, and the fetcher then
# refuses it), so a relative path never becomes a file path.
_BASE_URL = "x-invoice-gateway-mail:"

# Elements that load something or run something; a mail client drops them too.
_DROP = frozenset({"script", "iframe", "frame", "frameset", "object", "embed", "applet", "base"})
_MIME_TYPE = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+")
_TOKEN = re.compile(r"[A-Za-z0-9!#$&^_.+-]+")
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_MAX_TITLE = 300
_MAX_DEPTH = 512  # element nesting kept as it is (Chromium's HTML parser stops at 512 too)
_TEXT_BLOCK = 40  # lines per block of a text body
_TEXT_PIECE = 2000  # characters per piece of a giant line


class _WorkerDied(RenderError):
    """The worker process ended while it had a job."""


class _BlockedURLError(ValueError):
    """A URL that the renderer never loads (weasyprint logs it and goes on)."""


class _SafeURLFetcher(URLFetcher):  # type: ignore[misc]
    """A weasyprint URL fetcher that serves only ``cid:`` parts and ``data:`` URLs."""

    def __init__(self, resources: Resources) -> None:
        super().__init__(
            timeout=1,
            allowed_protocols=frozenset({"cid", "data"}),
            allow_redirects=False,
            fail_on_errors=False,
        )
        self._resources = {cid.strip().strip("<>"): value for cid, value in resources.items()}
        self._folded = {cid.lower(): value for cid, value in self._resources.items()}

    def fetch(self, url: str, headers: Any = None) -> URLFetcherResponse:
        """Return the resource for a ``cid:`` or ``data:`` URL; refuse every other URL."""
        scheme, colon, rest = url.partition(":")
        scheme = scheme.lower() if colon else ""
        if scheme == "data":
            content_type, data = _decode_data_url(rest)
        elif scheme == "cid":
            content_type, data = self._cid(rest)
        else:
            raise _BlockedURLError(f"not loaded (a mail is rendered offline): {url[:200]}")
        return URLFetcherResponse(url, body=data, headers={"Content-Type": content_type})

    def _cid(self, rest: str) -> tuple[str, bytes]:
        key = urllib.parse.unquote(rest.partition("#")[0]).strip().strip("<>")
        found = self._resources.get(key) or self._folded.get(key.lower())
        if found is None:
            raise _BlockedURLError(f"the mail has no part with Content-ID <{key[:200]}>")
        content_type, data = found
        content_type = content_type.strip().lower()
        if not _MIME_TYPE.fullmatch(content_type):
            content_type = "application/octet-stream"
        return content_type, data


def safe_url_fetcher(resources: Resources | None = None) -> Callable[[str], Any]:
    """A weasyprint url_fetcher serving ``cid:`` from ``resources`` and ``data:`` URLs only."""
    return _SafeURLFetcher(resources or {})


def _decode_data_url(rest: str) -> tuple[str, bytes]:
    """Content type and bytes of a ``data:`` URL (given without the ``data:``)."""
    meta, comma, payload = rest.partition(",")
    if not comma:
        raise _BlockedURLError("malformed data: URL (no comma)")
    params = [p.strip() for p in meta.split(";")]
    is_base64 = len(params) > 1 and params[-1].lower() == "base64"
    if is_base64:
        params.pop()
    content_type = params[0].lower() or "text/plain"
    if not _MIME_TYPE.fullmatch(content_type):
        content_type = "application/octet-stream"
    for param in params[1:]:
        name, _, value = param.partition("=")
        value = value.strip().strip('"')
        if name.strip().lower() == "charset" and _TOKEN.fullmatch(value):
            content_type += f"; charset={value}"
    data = urllib.parse.unquote_to_bytes(payload)
    if is_base64:
        data = b"".join(data.split())
        try:
            data = base64.b64decode(data + b"=" * (-len(data) % 4))
        except binascii.Error as exc:
            raise _BlockedURLError("malformed base64 in a data: URL") from exc
    return content_type, data


def _clean(text: str) -> str:
    """``text`` without control characters or lone surrogates, which the layout cannot take."""
    text = text.encode("utf-8", "replace").decode("utf-8")
    return _CONTROL.sub("\ufffd", text)


def _local(tag: Any) -> str | None:
    """The lower-case local name of an element tag; None for comments and the like."""
    return tag.rpartition("}")[2].lower() if isinstance(tag, str) else None


def _drops(element: ET.Element) -> bool:
    """Whether ``element`` is something a mail cannot load and must lose."""
    name = _local(element.tag)
    if name in _DROP:
        return True
    if name == "link":
        # A stylesheet from a part of the same mail may stay; any other link goes.
        href = element.get("href", "").strip().lower()
        return not href.startswith(("cid:", "data:"))
    if name == "meta":
        return element.get("http-equiv", "").strip().lower() == "refresh"
    return False


def _neutralise(root: ET.Element) -> None:
    """Remove what a mail cannot load or run, in place, keeping the text around it."""
    stack = [(root, 0)]
    while stack:
        parent, depth = stack.pop()
        if depth == _MAX_DEPTH and len(parent):
            # Like a browser's parser, hang what lies deeper side by side at
            # this depth: layout recurses per level and would run out of stack.
            descendants = list(parent.iter())[1:]
            for element in descendants:
                del element[:]
            parent[:] = descendants
        previous: ET.Element | None = None
        for child in list(parent):
            if _drops(child):
                if child.tail:
                    if previous is None:
                        parent.text = (parent.text or "") + child.tail
                    else:
                        previous.tail = (previous.tail or "") + child.tail
                parent.remove(child)
                continue
            previous = child
            for attribute in [a for a in child.attrib if a.lower().startswith("on")]:
                del child.attrib[attribute]
            rel = child.get("rel")
            if rel is not None and "attachment" in rel.lower().split():
                # rel=attachment would embed the target as a file in the PDF.
                child.set("rel", " ".join(t for t in rel.split() if t.lower() != "attachment"))
            stack.append((child, depth + 1))


def _child(parent: ET.Element, name: str, *, first: bool = False) -> ET.Element:
    """The first ``name`` child of ``parent``, created when there is none."""
    for element in parent:
        if _local(element.tag) == name:
            return element
    element = ET.Element(name)
    if first:
        parent.insert(0, element)
    else:
        parent.append(element)
    return element


def _set_title(root: ET.Element, title: str | None) -> None:
    """Make ``title`` the document title (the PDF's), or shorten the mail's own one."""
    head = _child(root, "head", first=True)
    element = _child(head, "title")
    if title is not None:
        for sub in list(element):
            element.remove(sub)
        element.text = title[:_MAX_TITLE]
    elif element.text and len(element.text) > _MAX_TITLE:
        element.text = element.text[:_MAX_TITLE]


def _insert_header(root: ET.Element, rows: tuple[tuple[str, str], ...]) -> None:
    """Put the header block (From, To, Date, Subject) above the body, as text."""
    # Plain blocks, not a table: weasyprint's table layout costs tens of ms.
    block = ET.Element("div", {"id": "ig-header"})
    for label, value in rows:
        row = ET.SubElement(block, "div", {"class": "ig-row"})
        ET.SubElement(row, "span", {"class": "ig-label"}).text = f"{label}:"
        ET.SubElement(row, "span", {"class": "ig-value"}).text = value
    body = _child(root, "body")
    body.insert(0, block)
    block.tail, body.text = body.text, None


@functools.lru_cache(maxsize=1)
def _default_css_text() -> str:
    """The base stylesheet shipped with the package."""
    return package_files.files("gateway").joinpath("templates/mail.css").read_text("utf-8")


@functools.lru_cache(maxsize=1)
def _default_css() -> Any:
    """The base stylesheet, parsed once per process."""
    return weasyprint.CSS(string=_default_css_text(), base_url=_BASE_URL, url_fetcher=_SafeURLFetcher({}))


def _render(
    html: str,
    resources: Resources | None,
    base_css: str | None,
    *,
    header: tuple[tuple[str, str], ...] | None = None,
    title: str | None = None,
    fit: bool = False,
) -> bytes:
    """Lay out ``html`` with the safe fetcher and return the PDF bytes (shrunk to fit if ``fit``)."""
    fetcher = _SafeURLFetcher(resources or {})
    try:
        document = weasyprint.HTML(
            string=_clean(html), base_url=_BASE_URL, url_fetcher=fetcher, media_type="screen"
        )
        root = document.etree_element
        _neutralise(root)
        _set_title(root, title)
        if header is not None:
            _insert_header(root, header)
        # weasyprint honoured any <base href> while parsing; undo that.
        document.base_url = _BASE_URL
        # Re-wrap the tree we changed, so no view of the old tree is cached.
        document.wrapper_element = type(document.wrapper_element).from_html_root(root)
        if base_css is None:
            stylesheet = _default_css()
        else:
            stylesheet = weasyprint.CSS(string=base_css, base_url=_BASE_URL, url_fetcher=fetcher)
        laid_out = document.render(stylesheets=[stylesheet], presentational_hints=True)
        scale = _overflow(laid_out) if fit else 1.0
        if scale > 1.0:
            # Lay it out again on a page that many times larger, then scale the
            # PDF down to A4: a mail as wide as a mail client's window fits.
            wide_page = _WIDE_PAGE.format(w=210 * scale, h=297 * scale, m=10 * scale)
            wider = weasyprint.CSS(string=wide_page, base_url=_BASE_URL, url_fetcher=fetcher)
            laid_out = document.render(stylesheets=[stylesheet, wider], presentational_hints=True)
        pdf = laid_out.write_pdf(zoom=1 / scale)
    except MemoryError:
        raise
    except RecursionError as exc:
        raise RenderError("the HTML is nested too deeply to lay out") from exc
    except Exception as exc:
        raise RenderError(f"weasyprint could not render it: {type(exc).__name__}: {exc}") from exc
    if not isinstance(pdf, bytes):
        raise RenderError("weasyprint returned no PDF")
    return pdf


_WIDE_PAGE = "@page {{ size: {w:.2f}mm {h:.2f}mm !important; margin: {m:.2f}mm !important; }}"
_MAX_SHRINK = 2.0  # wider than this is cut off rather than shrunk to unreadable text


def _overflow(document: Any) -> float:
    """How many times wider than the page's content area the widest page's content is (1.0: fits)."""
    try:
        widest = 1.0
        for page in document.pages:
            # weasyprint has no public view of the layout; Page._page_box is it.
            page_box = page._page_box
            left = page_box.content_box_x()
            right = left + page_box.width
            stack = list(page_box.children)
            while stack:
                box = stack.pop()
                if getattr(box, "position_x", None) is not None and hasattr(box, "margin_width"):
                    right = max(right, box.position_x + box.margin_width())
                clipped = getattr(box, "style", None) and box.style["overflow"] != "visible"
                if not clipped:
                    stack.extend(getattr(box, "children", ()))
            widest = max(widest, (right - left) / page_box.width)
    except Exception:  # a weasyprint without these internals: no fitting
        return 1.0
    return min(widest, _MAX_SHRINK) if widest > 1.02 else 1.0


def render_html_to_pdf(
    html: str, resources: Resources | None = None, *, base_css: str | None = None
) -> bytes:
    """Render ``html`` to PDF in this process; ``resources`` maps cid -> (content type, data)."""
    return _render(html, resources, base_css)


@dataclass(frozen=True)
class _Job:
    """What a worker needs to render one mail.

    Attributes:
        header: the header block rows, (label, value), as text.
        title: the PDF title (the subject).
        html: the HTML body, or None.
        text: the plain-text body.
        resources: the mail's parts with a Content-ID: cid -> (content type, data).
        standalone: the HTML is a whole document with its own styles (an
            e-invoice's readable PDF): no header block, no mail stylesheet.
    """

    header: tuple[tuple[str, str], ...]
    title: str
    html: str | None
    text: str
    resources: dict[str, tuple[str, bytes]]
    standalone: bool = False


def _job_for(msg: ParsedMessage) -> _Job:
    """The render job for ``msg``: header rows, body and ``cid:`` parts only."""
    rows = [
        ("From", str(msg.sender) if msg.sender else ""),
        ("To", ", ".join(str(a) for a in msg.to)),
        ("Date", email.utils.format_datetime(msg.date) if msg.date else ""),
        ("Subject", msg.subject),
    ]
    header = tuple((label, _clean(value)) for label, value in rows if value)
    resources = {a.content_id: (a.content_type, a.data) for a in msg.attachments if a.content_id}
    return _Job(header, _clean(msg.subject), msg.html, msg.text, resources)


def _text_document(text: str) -> str:
    """An HTML document that shows ``text`` as it is, wrapped."""
    # weasyprint breaks lines in time quadratic in the length of one text
    # node, so the text goes into blocks of a few lines each (stacked, they
    # look like one); a giant line is cut into pieces.
    lines = [
        line[i : i + _TEXT_PIECE]
        for line in text.splitlines()
        for i in range(0, max(len(line), 1), _TEXT_PIECE)
    ]
    blocks = (
        # The newline after <pre> is eaten by the HTML parser; a block's own first one stays.
        '<pre class="ig-text">\n' + html_lib.escape("\n".join(lines[i : i + _TEXT_BLOCK])) + "</pre>"
        for i in range(0, len(lines), _TEXT_BLOCK)
    )
    return (
        '<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>'
        + "".join(blocks)
        + "</body></html>"
    )


def _shows_something(html: str) -> bool:
    """Whether an HTML body shows anything once remote content is gone: text, or an image of the mail itself.

    A newsletter-style body of remote images only would render as an empty
    page (nothing is fetched), while its text/plain alternative holds the words.
    """
    try:
        import lxml.html

        doc = lxml.html.document_fromstring(html)
    except Exception:  # unparsable here: let the renderer try it as before
        return True
    for element in list(doc.iter("script", "style", "head", "title", "noscript", "template")):
        element.drop_tree()
    if str(doc.text_content()).strip():
        return True
    return any(str(img.get("src", "")).strip().lower().startswith(("cid:", "data:"))
               for img in doc.iter("img", "image", "input")) or next(doc.iter("svg"), None) is not None


def _render_job(job: _Job) -> bytes:
    """Render one mail (header block and body) in this process."""
    if job.standalone:
        return _render(job.html or "", job.resources, "", title=job.title or None)
    if job.html is not None and job.html.strip() and (not job.text.strip() or _shows_something(job.html)):
        body = job.html
    else:
        body = _text_document(job.text)
    return _render(body, job.resources, None, header=job.header, title=job.title or None, fit=True)


_WORKER_RECURSION_LIMIT = 20_000
_HEADROOM_MB = 64  # address space a worker needs beyond its size at rest
_WARM_UP = _Job((("Subject", "warm-up"),), "warm-up", "<p>warm-up <b>bold</b></p>", "", {})


def _address_space_mb() -> int:
    """This process's address space (VmSize) in MB; 0 where /proc cannot tell."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _serve(fd: int, memory_mb: int) -> None:
    """Serve render jobs on the socket ``fd`` until it closes; the worker process's main."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us, not a Ctrl-C
    # Layout recurses a few frames per element level: nested tables of mail
    # layouts pass the default limit of 1000 at about 50 levels.
    sys.setrecursionlimit(_WORKER_RECURSION_LIMIT)
    # Refused URLs are expected; the parent reports what matters.
    logging.getLogger("weasyprint").setLevel(logging.CRITICAL)
    conn = Connection(fd)
    try:
        # Render once before the memory limit: fontconfig loads its setup and
        # caches now, and under a tight limit it fails half-way and can write
        # an empty font cache that spoils every later render on the machine.
        _render_job(_WARM_UP)
        at_rest = _address_space_mb()
        if memory_mb < at_rest + _HEADROOM_MB:
            reason = (
                f"a memory limit of {memory_mb} MB is too small: the renderer takes "
                f"{at_rest} MB at rest and needs {_HEADROOM_MB} MB more at least"
            )
            conn.send(("error", reason, _peak_kb()))
            return
        _limit(resource.RLIMIT_AS, memory_mb * 1024 * 1024)
        conn.send(("ready", None, _peak_kb()))
        while True:
            reply: tuple[str, Any]
            try:
                job, timeout = conn.recv()
            except EOFError:
                return
            except MemoryError:
                conn.send(("memory", None, _peak_kb()))
                return
            # Should the parent die mid-job, the CPU limit still ends this process.
            used = resource.getrusage(resource.RUSAGE_SELF)
            _limit(resource.RLIMIT_CPU, int(used.ru_utime + used.ru_stime + 2 * timeout + 10))
            try:
                reply = ("ok", _render_job(job))
            except MemoryError:
                reply = ("memory", None)
            except RenderError as exc:
                reply = ("error", str(exc))
            except Exception as exc:
                reply = ("error", f"{type(exc).__name__}: {exc}")
            del job
            try:
                conn.send((reply[0], reply[1], _peak_kb()))
            except MemoryError:
                reply = ("memory", None)
                conn.send(("memory", None, _peak_kb()))
            if reply[0] == "memory":
                return
    except OSError:  # the parent went away
        return
    finally:
        conn.close()


def _peak_kb() -> int:
    """The peak resident set size of this process, in KiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _limit(which: int, value: int) -> None:
    """Set the soft limit ``which`` of this process to ``value`` (never above the hard limit)."""
    _, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(which, (value, hard))


# The worker runs in isolated mode (no current directory or PYTHON* variables
# on its path) with exactly our import path, and imports only this module,
# not the program's __main__.
_WORKER_CODE = (
    "import sys; sys.path[:0] = sys.argv[3:]; "
    "from gateway.render import _serve; _serve(int(sys.argv[1]), int(sys.argv[2]))"
)


def _worker_command(fd: int, memory_mb: int) -> list[str]:
    """The command line of a worker serving on socket ``fd``."""
    path = [os.path.abspath(entry or os.curdir) for entry in sys.path]
    return [sys.executable, "-I", "-c", _WORKER_CODE, str(fd), str(memory_mb), *path]


def _worker_env() -> dict[str, str]:
    """The worker's environment: ours, with a single malloc arena."""
    env = dict(os.environ)
    # Each extra arena reserves 64 MB of address space, which the memory
    # limit (RLIMIT_AS) would count although it is never used.
    env.setdefault("MALLOC_ARENA_MAX", "1")
    return env


class _Worker:
    """One render worker process and the parent's end of its socket."""

    def __init__(self, memory_mb: int, start_timeout: float) -> None:
        self.memory_mb = memory_mb
        self.jobs = 0
        ours, theirs = socket.socketpair()
        try:
            self.process = subprocess.Popen(
                _worker_command(theirs.fileno(), memory_mb),
                stdin=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                env=_worker_env(),
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.conn = Connection(ours.detach())
        try:
            if not self.conn.poll(start_timeout):
                raise RenderError(f"the render worker did not start within {start_timeout:g} s")
            status, detail, _ = self.conn.recv()
            if status != "ready":
                raise RenderError(f"could not start a render worker: {detail}")
        except (EOFError, OSError) as exc:
            self.stop(kill=True)
            raise RenderError(f"the render worker {self.death()} while starting") from exc
        except BaseException:
            self.stop(kill=True)
            raise

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.process.poll() is None

    def death(self) -> str:
        """How the process ended, for an error message."""
        try:
            code = self.process.wait(5)
        except subprocess.TimeoutExpired:
            return "stopped answering"
        if code < 0:
            try:
                return f"died ({signal.Signals(-code).name})"
            except ValueError:
                return f"died (signal {-code})"
        return f"exited with status {code}"

    def stop(self, *, kill: bool = False) -> None:
        """End the process (at once if ``kill``, else when it has read the end of its socket)."""
        self.conn.close()
        if not kill:
            try:
                self.process.wait(2)
            except subprocess.TimeoutExpired:
                pass
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


class Renderer:
    """A pool of warm render worker processes; each job has a wall-time and a memory limit."""

    def __init__(
        self, *, max_workers: int = 2, max_jobs_per_worker: int = 200, start_timeout: float = 60.0
    ) -> None:
        self._max_workers = max_workers
        self._max_jobs = max_jobs_per_worker
        self._start_timeout = start_timeout
        self._slots = threading.BoundedSemaphore(max_workers)
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []
        self._closed = False
        self.workers_started = 0
        self.peak_worker_rss_kb = 0

    def render(self, msg: ParsedMessage, *, timeout: float = 30.0, memory_mb: int = 512) -> bytes:
        """PDF bytes of ``msg`` (header block and body), rendered in a worker."""
        return self._run(_job_for(msg), timeout, memory_mb)

    def render_document(self, html: str, *, title: str = "", timeout: float = 30.0, memory_mb: int = 512) -> bytes:
        """PDF bytes of a whole HTML document with its own styles, rendered in a worker."""
        return self._run(_Job((), _clean(title), html, "", {}, standalone=True), timeout, memory_mb)

    def _run(self, job: _Job, timeout: float, memory_mb: int) -> bytes:
        # A worker that dies under a job (a signal from a C library) gets one more
        # try in a fresh worker: a passing failure must not quarantine a mail,
        # while a mail that kills two workers is reported.
        for attempt in (1, 2):
            with self._slots:
                worker = self._take(memory_mb)
                try:
                    status, payload = self._exchange(worker, job, timeout)
                except _WorkerDied:
                    if attempt == 2:
                        raise
                    continue
            break
        if status == "ok":
            return bytes(payload)
        if status == "memory":
            raise RenderLimitError(f"rendering needed more than the memory limit of {memory_mb} MB")
        raise RenderError(f"could not render the mail: {payload}")

    def warm(self, *, memory_mb: int = 512) -> None:
        """Start a worker now, so that the first mail does not wait for one."""
        with self._slots:
            self._give_back(self._take(memory_mb), 0, "ok")

    def _take(self, memory_mb: int) -> _Worker:
        """An idle worker with this memory limit, or a new one."""
        stale: list[_Worker] = []
        found: _Worker | None = None
        with self._lock:
            if self._closed:
                raise RenderError("the renderer has been shut down")
            for worker in list(self._idle):
                if not worker.alive():
                    self._idle.remove(worker)
                    stale.append(worker)
                elif found is None and worker.memory_mb == memory_mb:
                    self._idle.remove(worker)
                    found = worker
        for worker in stale:
            worker.stop(kill=True)
        if found is not None:
            return found
        try:
            worker = _Worker(memory_mb, self._start_timeout)
        except OSError as exc:
            raise RenderError(f"could not start a render worker: {exc}") from exc
        with self._lock:
            self.workers_started += 1
        return worker

    def _exchange(self, worker: _Worker, job: _Job, timeout: float) -> tuple[str, Any]:
        """Send ``job`` to ``worker`` and wait for the answer, at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        try:
            worker.conn.send((job, timeout))
            if not worker.conn.poll(max(0.0, deadline - time.monotonic())):
                worker.stop(kill=True)
                raise RenderLimitError(f"rendering took longer than the time limit of {timeout:g} s")
            status, payload, peak_kb = worker.conn.recv()
        except RenderLimitError:
            raise
        except (EOFError, OSError) as exc:
            reason = worker.death()
            worker.stop(kill=True)
            raise _WorkerDied(
                f"the render worker {reason}; a mail that needs more than the memory "
                f"limit of {worker.memory_mb} MB can cause that"
            ) from exc
        except BaseException:
            worker.stop(kill=True)
            raise
        worker.jobs += 1
        with self._lock:
            self.peak_worker_rss_kb = max(self.peak_worker_rss_kb, int(peak_kb))
        self._give_back(worker, int(peak_kb), str(status))
        return str(status), payload

    def _give_back(self, worker: _Worker, peak_kb: int, status: str) -> None:
        """Keep ``worker`` warm, or retire it when it is worn (jobs, memory) or surplus."""
        worn = (
            status == "memory"
            or worker.jobs >= self._max_jobs
            # A worker that once grew large keeps its heap; start afresh.
            or peak_kb * 1024 > worker.memory_mb * 1024 * 1024 // 2
        )
        with self._lock:
            if not worn and not self._closed and len(self._idle) < self._max_workers:
                self._idle.append(worker)
                return
        worker.stop()

    def close(self) -> None:
        """Stop the idle workers; later renders raise RenderError."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.stop()


_default: Renderer | None = None
_default_lock = threading.Lock()


def _default_renderer() -> Renderer:
    """The process-wide renderer, created on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Renderer()
            atexit.register(_default.close)
        return _default


def render_message(msg: ParsedMessage, *, timeout: float = 30.0, memory_mb: int = 512) -> bytes:
    """PDF of ``msg`` rendered in a worker process; RenderLimitError past the time or memory limit."""
    return _default_renderer().render(msg, timeout=timeout, memory_mb=memory_mb)


def render_document(html: str, *, title: str = "", timeout: float = 30.0, memory_mb: int = 512) -> bytes:
    """A whole HTML document (its own styles) to PDF in a worker, with the same limits and fetcher."""
    return _default_renderer().render_document(html, title=title, timeout=timeout, memory_mb=memory_mb)


def warm_up(*, memory_mb: int = 512) -> None:
    """Start a render worker of the process-wide renderer now (at service start)."""
    _default_renderer().warm(memory_mb=memory_mb)


def shutdown() -> None:
    """Stop the process-wide renderer's workers (a later render starts new ones)."""
    global _default
    with _default_lock:
        renderer, _default = _default, None
    if renderer is not None:
        renderer.close()
        atexit.unregister(renderer.close)
