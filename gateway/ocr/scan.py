"""Whether a PDF is a scan: page images with no text layer, or almost none, on its first pages."""

from __future__ import annotations

import io
from typing import Any

from gateway.config import OcrConfig

PAGES_LOOKED_AT = 5


def _has_image(page: Any) -> bool:
    """Whether a page draws an image of its own (an image XObject among its resources)."""
    resources = page.get("/Resources")
    resources = resources.get_object() if resources is not None else None
    xobjects = resources.get("/XObject") if resources is not None else None
    if xobjects is None:
        return False
    for ref in xobjects.get_object().values():
        if ref.get_object().get("/Subtype") == "/Image":
            return True
    return False


def needs_ocr(data: bytes, config: OcrConfig) -> str | None:
    """Why a PDF needs OCR, or None when it has text, draws no image, or cannot be read.

    A scan is page images with almost no text: fewer than ``ocr.min_text_chars``
    characters a page on its first pages. A PDF with little text and no image
    (a blank form, a tiny test file) is not one. pypdf, not pypdfium2: PDFium
    may not be called from two threads at once, and the pipeline's workers
    may be threads.
    """
    import pypdf

    try:
        reader = pypdf.PdfReader(io.BytesIO(data), strict=False)
        pages = min(len(reader.pages), PAGES_LOOKED_AT)
        if pages == 0:
            return None
        looked = [reader.pages[i] for i in range(pages)]
        if not any(_has_image(p) for p in looked):
            return None
        chars = sum(len((p.extract_text() or "").strip()) for p in looked)
    except Exception:  # not readable here: the document is stored as it came
        return None
    if chars / pages < config.min_text_chars:
        return (f"a scan: page images with {chars} character(s) of text on the first {pages} page(s), under "
                f"ocr.min_text_chars ({config.min_text_chars}) a page")
    return None
