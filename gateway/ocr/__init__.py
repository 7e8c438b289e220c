"""OCR: scanned PDFs get a text layer, photos and scans sent as images become PDFs.

- ``images``: which images are photos or scans of a document (JPEG, PNG,
  TIFF, HEIC), and their lossless conversion to PDF (img2pdf).
- ``scan``: whether a PDF is a scan (no text layer, or almost none).
- ``runner``: one document read by OCRmyPDF (Tesseract) in a child process at
  nice 19, bounded in pages, time and memory.
- ``queue``: the OCR worker of ``serve``: it reads the documents waiting for
  OCR one at a time (``ocr.workers``), off the SMTP path, and replaces each
  document's file with the one that has a text layer. Until then the
  document's exports wait (``documents.ocr`` is ``pending`` or ``running``).
"""

from __future__ import annotations

from gateway.ocr.images import ImageVerdict, image_type, judge_image, to_pdf
from gateway.ocr.scan import needs_ocr

__all__ = ["ImageVerdict", "image_type", "judge_image", "needs_ocr", "to_pdf"]
