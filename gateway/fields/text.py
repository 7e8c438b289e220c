"""Text with positions from born-digital PDFs (pypdfium2's text layer).

The text layer's runs ("rects") become segments with a box; segments whose
vertical extents overlap on a page become one line, left to right. Bounded:
the first ``MAX_PAGES`` pages, ``MAX_CHARS`` characters and ``BUDGET``
seconds (checked between runs); a PDF that cannot be read gives no lines
and a warning, never an exception. PDFium is not thread-safe, so every use
in this process goes through one lock.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)

MAX_PAGES = 5
MAX_CHARS = 200_000
BUDGET = 3.0  # seconds for one document's text
_PDFIUM = threading.Lock()


@dataclass(frozen=True)
class Segment:
    """A run of text on one line.

    Attributes:
        text: the run's text (spaces normalised).
        page: the page, 1-based.
        box: [x0, y0, x1, y1] in PDF points from the page's top-left corner.
    """

    text: str
    page: int
    box: tuple[float, float, float, float]


@dataclass(frozen=True)
class Line:
    """One line of a page: its segments left to right.

    Attributes:
        page: the page, 1-based.
        segments: the runs, left to right.
        page_height: the page's height in points (to tell the top from the footer).
    """

    page: int
    segments: tuple[Segment, ...]
    page_height: float

    @property
    def text(self) -> str:
        """The segments' text joined by single spaces."""
        return " ".join(s.text for s in self.segments)

    @property
    def box(self) -> tuple[float, float, float, float]:
        """The box around every segment."""
        return (min(s.box[0] for s in self.segments), min(s.box[1] for s in self.segments),
                max(s.box[2] for s in self.segments), max(s.box[3] for s in self.segments))


@dataclass(frozen=True)
class Layout:
    """A document's text: its lines in reading order (page, top to bottom).

    Attributes:
        lines: the lines.
        pages: how many pages were read.
        warnings: why text is missing or cut (unreadable PDF, a bound reached).
        seconds: how long reading took.
        page_sizes: (width, height) in points of each page read, first page first.
    """

    lines: tuple[Line, ...] = ()
    pages: int = 0
    warnings: tuple[str, ...] = ()
    seconds: float = 0.0
    page_sizes: tuple[tuple[float, float], ...] = ()

    @property
    def text(self) -> str:
        """The whole text, a line per line."""
        return "\n".join(line.text for line in self.lines)


def _clean(text: str) -> str:
    return " ".join(text.replace("\u00a0", " ").replace("\x00", "").split())


def group_lines(segments: list[Segment], page_height: float) -> list[Line]:
    """Segments of one page grouped into lines (vertical overlap of more than half the smaller height)."""
    lines: list[list[Segment]] = []
    for seg in sorted(segments, key=lambda s: ((s.box[1] + s.box[3]) / 2, s.box[0])):
        mid = (seg.box[1] + seg.box[3]) / 2
        for line in reversed(lines[-3:]):
            top, bottom = min(s.box[1] for s in line), max(s.box[3] for s in line)
            height = min(bottom - top, seg.box[3] - seg.box[1]) or 1.0
            if min(bottom, seg.box[3]) - max(top, seg.box[1]) > height / 2 or top <= mid <= bottom:
                line.append(seg)
                break
        else:
            lines.append([seg])
    return [Line(segments[0].page, tuple(sorted(line, key=lambda s: s.box[0])), page_height)
            for segments in lines for line in [segments]]


def read_pdf(data: bytes, *, max_pages: int = MAX_PAGES, max_chars: int = MAX_CHARS,
             budget: float = BUDGET) -> Layout:
    """The lines of a PDF's first pages with their boxes; never raises."""
    started = time.monotonic()
    warnings: list[str] = []
    out: list[Line] = []
    sizes: list[tuple[float, float]] = []
    pages_read = 0
    try:
        import pypdfium2 as pdfium
    except ImportError:  # pragma: no cover - a dependency
        return Layout(warnings=("pypdfium2 is not installed: no text read",))
    with _PDFIUM:
        try:
            pdf = pdfium.PdfDocument(data)
        except Exception as exc:
            return Layout(warnings=(f"the PDF's text could not be read ({type(exc).__name__}: {exc})",),
                          seconds=time.monotonic() - started)
        try:
            total = len(pdf)
            chars = 0
            for index in range(min(total, max_pages)):
                if time.monotonic() - started > budget:
                    warnings.append(f"text reading stopped after {budget:g} s at page {index + 1}")
                    break
                page = pdf[index]
                try:
                    width, height = float(page.get_width()), float(page.get_height())
                    textpage = page.get_textpage()
                    try:
                        segments: list[Segment] = []
                        for i in range(textpage.count_rects()):
                            left, bottom, right, top = textpage.get_rect(i)
                            text = _clean(textpage.get_text_bounded(left, bottom, right, top))
                            if not text:
                                continue
                            chars += len(text)
                            segments.append(Segment(text, index + 1, (left, height - top, right, height - bottom)))
                            if chars > max_chars or (i % 64 == 0 and time.monotonic() - started > budget):
                                break
                    finally:
                        textpage.close()
                finally:
                    page.close()
                out.extend(group_lines(segments, height))
                sizes.append((width, height))
                pages_read += 1
                if chars > max_chars:
                    warnings.append(f"text reading stopped at {max_chars:,} characters")
                    break
            if total > max_pages and pages_read == max_pages:
                warnings.append(f"only the first {max_pages} of {total} pages were read for fields")
        except Exception as exc:  # a broken page: what was read stays
            log.debug("PDF text reading failed", exc_info=True)
            warnings.append(f"the PDF's text could not be read past page {pages_read} ({type(exc).__name__})")
        finally:
            pdf.close()
    return Layout(tuple(out), pages_read, tuple(warnings), time.monotonic() - started, tuple(sizes))
