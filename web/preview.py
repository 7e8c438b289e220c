"""The document page's preview: where each field was found, and the page's words to pick a value from.

Boxes are in PDF points from the page's top-left corner (gateway.fields.text);
the page shows them over the rendered page as an SVG whose viewBox is the page
size in points, so no script is needed to see them. The words come from the
same text layer: a run of text is cut at its spaces, each word's share of the
run's width estimated from its letters (the text layer gives boxes per run).
A document's text is read once and kept for the next few requests.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from gateway.fields.text import Layout, Segment, read_pdf

MAX_PAGE = 20  # the preview renders at most this many pages of a document
_CACHED = 8
_cache: OrderedDict[str, Layout] = OrderedDict()
_cache_lock = threading.Lock()

# Rough widths of letters relative to the font size, to place a word inside its run.
_NARROW = set("iljtfrI.,:;'!|()[]- ")
_WIDE = set("mwMW@%")


def layout_of(service: Any, doc: dict[str, Any]) -> Layout | None:
    """The document's text with positions (a PDF's), or None; the last few documents' are kept."""
    if doc.get("kind") != "pdf":
        return None
    root = Path(service.settings.data_dir).resolve()
    path = (root / str(doc["path"])).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        return None
    stat = path.stat()
    key = f"{path}:{stat.st_mtime_ns}:{stat.st_size}"  # a file given a text layer later is read again
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    layout = read_pdf(path.read_bytes())
    with _cache_lock:
        _cache[key] = layout
        while len(_cache) > _CACHED:
            _cache.popitem(last=False)
    return layout


def page_size(layout: Layout | None, page: int) -> tuple[float, float] | None:
    """(width, height) in points of a page that was read, or None."""
    if layout is None or not 1 <= page <= len(layout.page_sizes):
        return None
    return layout.page_sizes[page - 1]


def _weight(char: str) -> float:
    if char in _NARROW:
        return 0.3
    if char in _WIDE:
        return 0.85
    return 0.65 if char.isupper() else 0.55


def split_words(segment: Segment) -> list[dict[str, Any]]:
    """A run's words, each with its estimated box."""
    text = segment.text
    x0, y0, x1, y1 = segment.box
    total = sum(_weight(c) for c in text) or 1.0
    scale = (x1 - x0) / total
    out, at = [], x0
    for part in text.split(" "):
        width = sum(_weight(c) for c in part) * scale
        if part:
            out.append({"text": part, "box": [round(at, 1), round(y0, 1), round(at + width, 1), round(y1, 1)]})
        at += width + _weight(" ") * scale
    return out


def words(layout: Layout | None, page: int) -> list[dict[str, Any]]:
    """The words of a page, top to bottom and left to right, each ``{"text", "box"}``."""
    if layout is None:
        return []
    return [w for line in layout.lines if line.page == page for s in line.segments for w in split_words(s)]


def _squash(text: str) -> str:
    return "".join(text.split()).casefold()


def _digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


def _numbers(text: str) -> list[int]:
    """The numbers in ``text``, sorted: 2026-03-12 and 12.03.2026 have the same."""
    return sorted(int(n) for n in re.findall(r"\d+", text))


def with_value(box: tuple[float, float, float, float], value: str, layout: Layout | None,
               page: int) -> tuple[float, float, float, float]:
    """``box`` (around a label) widened to the run right of it on its line that prints ``value``."""
    if layout is None or not value:
        return box
    x0, y0, x1, y1 = box
    for line in layout.lines:
        if line.page != page or line.box[3] < y0 or line.box[1] > y1:
            continue
        for seg in line.segments:
            if seg.box[0] < x1 - 1 or seg.box[0] - x1 > 300:
                continue
            text = _squash(seg.text)
            if _squash(value) in text or (_digits(value) and _digits(value) == _digits(text)) or (
                    re.fullmatch(r"\d{4}-\d\d-\d\d", value) and _numbers(value) == _numbers(text)):
                return (x0, min(y0, seg.box[1]), max(x1, seg.box[2]), max(y1, seg.box[3]))
    return box


def boxed(doc: dict[str, Any], page: int) -> bool:
    """Whether any of the document's fields was found on ``page`` with a box."""
    return any(isinstance(src, dict) and src.get("page") == page and src.get("box")
               for src in (doc.get("field_sources") or {}).values())


def highlights(doc: dict[str, Any], page: int, labels: dict[str, str],
               layout: Layout | None = None) -> list[dict[str, Any]]:
    """The fields found on ``page`` with a box: name, label, where from, and x/y/width/height in points.

    A box around a label takes in the value printed right of it (from ``layout``).
    """
    out = []
    values = doc.get("fields") or {}
    for name, src in (doc.get("field_sources") or {}).items():
        if not isinstance(src, dict):
            continue
        box = src.get("box")
        if src.get("page") != page or not isinstance(box, list) or len(box) != 4:
            continue
        x0, y0, x1, y1 = with_value((float(box[0]), float(box[1]), float(box[2]), float(box[3])),
                                    str(values.get(name) or ""), layout, page)
        how = src.get("source", "")
        if src.get("label"):
            how += f" · {src['label']}"
        out.append({"name": name, "label": labels.get(name, name), "how": how, "source": src.get("source", ""),
                    "x": round(x0, 1), "y": round(y0, 1), "width": round(max(x1 - x0, 1.0), 1),
                    "height": round(max(y1 - y0, 1.0), 1)})
    return out
