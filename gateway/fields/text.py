"""Text with positions from PDFs' text layers (pypdfium2): born-digital, or added by OCR.

The text layer's runs ("rects") become segments with a box; segments whose
vertical extents overlap on a page become one line, left to right. A text
layer added by OCR (``read_pdf(..., ocr=True)``) is read character by
character instead: its words lie on slanted lines (a scan turned a little, a
photo seen in perspective), where a run's box takes in the lines above and
below; words follow their line's slope into lines, and words close together
on a line become one segment, as a born-digital PDF's runs are. Bounded:
the first ``MAX_PAGES`` pages, ``MAX_CHARS`` characters and ``BUDGET``
seconds (checked between runs); a PDF that cannot be read gives no lines
and a warning, never an exception. PDFium is not thread-safe, so every use
in this process goes through one lock.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

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


# what OCR makes of a page's specks and gaps: a lone mark between a label and its value
# ("Rechnungsnummer: . 2015738820"), a dash before the currency sign ("75,04-€", which would read
# as a trailing minus), quotes around a word ("‘NL-2026-0100"), the letters O, o, l and I among digits ("1O5,00")
_OCR_NOISE = ((re.compile(r"(?<!\S)[.,:;'‘’“”\"|_~+—–-]+(?!\S)"), ""), (re.compile(r"(?<=\d)[-~](?=[€$£])"), " "),
              (re.compile(r"(?<!\S)[‘’'“”\"]+|[‘’'“”\"]+(?!\S)"), ""),
              (re.compile(r"(?<=[\d.,])[Oo](?=[\d.,])|(?<=\d)[Oo](?=\b)"), "0"),
              (re.compile(r"(?<=\d)[lI](?=[\d.,])"), "1"))


def ocr_cleaned(layout: Layout) -> Layout:
    """The layout for looking up labels and values in OCR's text: letters without their accents (``Fállig``
    -> ``Fallig``), lone specks gone, ``O``/``l`` among digits read as ``0``/``1``; boxes as they are."""
    import unicodedata

    def fold(text: str) -> str:
        text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
        for pattern, instead in _OCR_NOISE:
            text = pattern.sub(instead, text)
        return " ".join(text.split())

    lines = []
    for line in layout.lines:
        segments = tuple(replace(s, text=text) for s in line.segments for text in [fold(s.text)] if text)
        if segments:
            lines.append(replace(line, segments=segments))
    return replace(layout, lines=tuple(lines))


_POSTCODE_TOWN = re.compile(r"\b\d{4,5}\s+[^\W\d_]{2,}")
# a bullet as OCR reads it: a lone e, o or è, or a few marks (°, ©, +, quotes, dots)
_BULLET = re.compile(r"(?<!\S)(?=\S)[^\w\s]{0,3}[eoè]?[^\w\s]{0,3}(?!\S)")


def ocr_bullets(layout: Layout) -> Layout:
    """OCR reads the bullets of a return address ("Bei Spiel GmbH ● Ecke 12 ● 12345 Stadt") as ``e``, ``o``,
    ``©`` or quotes: on a line with a postcode and two of them (or one with a mark), they become ``·`` again."""
    lines = []
    for line in layout.lines:
        bullets = _BULLET.findall(line.text)
        if _POSTCODE_TOWN.search(line.text) and (len(bullets) >= 2 or any(b not in ("e", "o") for b in bullets)):
            line = replace(line, segments=tuple(replace(s, text=_BULLET.sub("·", s.text)) for s in line.segments))
        lines.append(line)
    return replace(layout, lines=tuple(lines))


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


def _word_segments(textpage: Any, page: int, height: float) -> list[Segment]:
    """An OCR text layer's words, one segment each, from its characters and their boxes."""
    import pypdfium2.raw as pdfium_c

    words: list[Segment] = []
    text: list[str] = []
    box: list[float] = []

    def flush() -> None:
        if text:
            words.append(Segment("".join(text), page, (box[0], height - box[3], box[2], height - box[1])))
        text.clear()
        box.clear()

    for i in range(textpage.count_chars()):
        char = pdfium_c.FPDFText_GetUnicode(textpage.raw, i)
        if char in (0, 0xFFFE, 0xFFFF) or chr(char).isspace():
            if box and not pdfium_c.FPDFText_IsGenerated(textpage.raw, i):
                # OCRmyPDF writes a word with its space: the space's end is where the word's box ends
                left, bottom, right, top = textpage.get_charbox(i)
                if left >= box[2] - 1 and right - left < (box[3] - box[1]) * 1.5:
                    box[2] = max(box[2], right)
            flush()
            continue
        left, bottom, right, top = textpage.get_charbox(i, loose=True)
        if box and (left < box[0] - 1 or left - box[2] > max(top - bottom, box[3] - box[1]) * 0.6):
            flush()  # a jump back or a gap: the text layer has no space there, a new word starts
        text.append(chr(char))
        box[:] = [left, bottom, right, top] if not box else [min(box[0], left), min(box[1], bottom),
                                                             max(box[2], right), max(box[3], top)]
    flush()
    return words


_SPECK = re.compile(r"[.,;'‘’“”\"|_~]{1,2}")


def group_slanted(words: list[Segment], page_height: float) -> list[Line]:
    """Words of one page grouped into lines that may slant; neighbours close on a line joined into runs."""
    lines: list[list[Segment]] = []

    def expected(line: list[Segment], x: float) -> float:
        """Where the line's middle is at ``x``, following its slope (at most 1 in 8)."""
        first, last = line[0], line[-1]
        mid = (last.box[1] + last.box[3]) / 2
        span = last.box[0] - first.box[0]
        slope = ((mid - (first.box[1] + first.box[3]) / 2) / span) if span > 30 else 0.0
        return mid + max(-0.125, min(0.125, slope)) * (x - last.box[0])

    # specks OCR read as marks ("." "'" "|") would bridge the gap between two columns
    words = [w for w in words if not _SPECK.fullmatch(w.text)]
    for word in sorted(words, key=lambda w: w.box[0]):
        mid, h = (word.box[1] + word.box[3]) / 2, word.box[3] - word.box[1]
        best, distance = None, 0.0
        for line in lines:
            last = line[-1]
            off = abs(expected(line, word.box[0]) - mid)
            if off < min(h, last.box[3] - last.box[1]) * 0.5 and word.box[0] > last.box[0] and (
                    best is None or off < distance):
                best, distance = line, off
        if best is None:
            lines.append([word])
        else:
            best.append(word)
    out = []
    above: list[float] = []  # where the runs of the line above start: a table's column headers
    for line in sorted(lines, key=lambda ln: ((ln[0].box[1] + ln[0].box[3]) / 2, ln[0].box[0])):
        runs: list[Segment] = []
        for word in line:
            prev = runs[-1] if runs else None
            # a word's space is in its box: a wider gap is a column's; a label ends at its colon; a
            # value starts its own run under a column header
            if prev is not None and word.box[0] - prev.box[2] < max(prev.box[3] - prev.box[1], 6.0) * 1.2 and \
                    not prev.text.endswith(":") and not any(abs(word.box[0] - x) < 4 for x in above):
                runs[-1] = Segment(f"{prev.text} {word.text}", prev.page, (
                    prev.box[0], min(prev.box[1], word.box[1]), word.box[2], max(prev.box[3], word.box[3])))
            else:
                runs.append(word)
        out.append(Line(runs[0].page, tuple(runs), page_height))
        above = [run.box[0] for run in runs[1:]]
    return out


def read_pdf(data: bytes, *, max_pages: int = MAX_PAGES, max_chars: int = MAX_CHARS,
             budget: float = BUDGET, ocr: bool = False) -> Layout:
    """The lines of a PDF's first pages with their boxes (``ocr``: a text layer added by OCR); never raises."""
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
                        segments: list[Segment] = _word_segments(textpage, index + 1, height) if ocr else []
                        chars += sum(len(s.text) for s in segments)
                        for i in range(0 if ocr else textpage.count_rects()):
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
                out.extend(group_slanted(segments, height) if ocr else group_lines(segments, height))
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
