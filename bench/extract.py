"""Benchmark gateway.fields: per-field accuracy and text reading time per page.

Accuracy on two sets: the hybrid e-invoices of the corpus with their embedded
XML removed (the XML is the truth), and invoices of our own in six languages
and two layouts (tests/fieldsamples.py, weasyprint). Time: reading the text
with boxes (pypdfium2, ``gateway.fields.text.read_pdf``) per page, beside a
baseline measured in the same run on the same PDFs: pypdf's plain
``extract_text`` (what the pipeline used for IBANs and invoice words), and the
whole field reading (text + readers) per document.

With ``--ocr``, per kind as well: each of those PDFs (the corpus hybrids,
one generated invoice per language and layout, the held-out layouts) is made
a **scan** (every page, at most ``--ocr-pages``: rasterised at 200 dpi, turned
1 degree one way or the other, salt-and-pepper noise, a grey JPEG) and a
**photo** (the page on a table, in perspective, turned 2 degrees, lit from one
side, blurred, a colour JPEG; tests/ocr_samples.py), both as PDFs of page
images; each is read as the OCR worker reads it (``gateway.ocr.runner`` with
the default ``ocr:`` settings, one document at a time, then
``read_document(..., ocr=True)``; ``--thresholding`` sets ``ocr.thresholding``)
and its fields are compared with the same
truth. Printed per kind (born-digital, scan, photo) and per language, with
OCR seconds per page (median over the documents), and the peak RSS while a
``--rss-pages``-page scan is read (the OCR processes, summed, and this
process reading the fields from its text layer).

Run from the repository root:

    .venv/bin/python bench/extract.py [--corpus ../shared/corpus] [--per-layout 3] [--rounds 5] [--ocr]

Figures are medians; nothing here asserts anything.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))


def accuracy(items: list[tuple[str, bytes, dict[str, str]]], *, ocr: bool = False,
             ) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """Per field and per group: [right, total]."""
    from test_fields_corpus import normal

    from gateway.fields import read_document

    per_field: dict[str, list[int]] = {}
    per_group: dict[str, list[int]] = {}
    for group, pdf, truth in items:
        got = read_document(pdf, "pdf", ocr=ocr)
        for key, want in truth.items():
            if not want:
                continue
            right = normal(key, getattr(got, key)) == normal(key, want)
            for table, name in ((per_field, key), (per_group, group)):
                table.setdefault(name, [0, 0])[0] += right
                table[name][1] += 1
    return per_field, per_group


def pages_of(pdf: bytes) -> int:
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(pdf)
    try:
        return min(len(doc), 5)
    finally:
        doc.close()


def timing(pdfs: list[bytes], rounds: int) -> dict[str, float]:
    """Median ms per page: pypdfium2 text with boxes, pypdf plain text, and whole field reading."""
    import pypdf

    from gateway.fields import read_document
    from gateway.fields.text import read_pdf

    def plain(pdf: bytes) -> None:
        reader = pypdf.PdfReader(io.BytesIO(pdf), strict=False)
        for page in reader.pages[:5]:
            page.extract_text()

    out: dict[str, list[float]] = {"boxes": [], "pypdf": [], "fields": []}
    for _ in range(rounds):
        for pdf in pdfs:
            n = pages_of(pdf)
            for name, fn in (("pypdf", plain), ("boxes", read_pdf), ("fields", lambda d: read_document(d, "pdf"))):
                t = time.perf_counter()
                fn(pdf)
                out[name].append((time.perf_counter() - t) * 1000 / n)
    return {k: statistics.median(v) for k, v in out.items()}


LANGUAGE_OF_COUNTRY = {"DE": "de", "AT": "de", "CH": "de", "FR": "fr", "BE": "fr", "LU": "fr", "NL": "nl",
                       "IT": "it", "ES": "es", "GB": "en", "IE": "en", "US": "en"}


def language_of(truth: dict[str, str]) -> str:
    """A corpus invoice's language, by its seller's VAT ID or IBAN country ("?" when neither says)."""
    for key in ("seller_vat_id", "iban"):
        country = (truth.get(key) or "")[:2].upper()
        if country in LANGUAGE_OF_COUNTRY:
            return LANGUAGE_OF_COUNTRY[country]
    return "?"


def images_pdf(pdf: bytes, kind: str, pages: int, seed: int) -> bytes:
    """A scan or a photo of a PDF's first ``pages`` pages, as a PDF of page images (img2pdf)."""
    import img2pdf
    import pypdfium2 as pdfium
    from ocr_samples import page_photo, scan_jpeg

    doc = pdfium.PdfDocument(pdf)
    n = min(len(doc), pages)
    doc.close()
    if kind == "scan":
        images = [scan_jpeg(pdf, page=i, angle=1.0 if (seed + i) % 2 else -1.0, seed=seed + i) for i in range(n)]
        return bytes(img2pdf.convert(images, layout_fun=img2pdf.get_fixed_dpi_layout_fun((200, 200))))
    return bytes(img2pdf.convert([page_photo(pdf, page=i, seed=seed + i) for i in range(n)]))


def read_by_ocr(items: list[tuple[str, bytes, dict[str, str]]], kind: str, pages: int, seconds: list[float],
                kept: list[int], config: Any) -> list[tuple[str, bytes, dict[str, str]]]:
    """The items made scans or photos and read by OCR (their PDFs with the text layer); OCR s/page into ``seconds``.

    ``kept`` gets [right on the scan or photo, right on the born-digital PDF] over the fields the
    born-digital reading gets right: what OCR loses, apart from what the readers miss anyway.
    """
    from test_fields_corpus import normal

    from gateway.fields import read_document

    from gateway.ocr import runner

    out = []
    for n, (group, pdf, truth) in enumerate(items):
        result = runner.run(images_pdf(pdf, kind, pages, seed=n), config)
        if result.data is None:
            print(f"  OCR failed on a {kind}: {result.error}")
            continue
        seconds.append(result.seconds / max(1, result.pages))
        out.append((group, result.data, truth))
        born, read = read_document(pdf, "pdf"), read_document(result.data, "pdf", ocr=True)
        for key, want in truth.items():
            if want and normal(key, getattr(born, key)) == normal(key, want):
                kept[0] += normal(key, getattr(read, key)) == normal(key, want)
                kept[1] += 1
    return out


def report(title: str, per_field: dict[str, list[int]], per_group: dict[str, list[int]], n: int) -> float:
    """Print one set's accuracy; returns the share right."""
    right = sum(a for a, _ in per_field.values())
    total = sum(b for _, b in per_field.values())
    print(f"{title}: {n} PDFs, {right}/{total} fields right ({100 * right / max(1, total):.1f} %)")
    print("  per field: " + ", ".join(f"{k} {a}/{b}" for k, (a, b) in per_field.items()))
    if len(per_group) > 1:
        print("  per group: " + ", ".join(f"{k} {a}/{b} ({100 * a / max(1, b):.0f} %)"
                                          for k, (a, b) in sorted(per_group.items())))
    return right / max(1, total)


def merge(tables: list[dict[str, list[int]]]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for table in tables:
        for k, (a, b) in table.items():
            out.setdefault(k, [0, 0])
            out[k][0] += a
            out[k][1] += b
    return out


def by_kind(sets: dict[str, list[tuple[str, bytes, dict[str, str]]]], pages: int, config: Any) -> None:
    """Accuracy per kind (born-digital, scan, photo) and per language, and OCR seconds per page."""
    seconds: dict[str, list[float]] = {"scan": [], "photo": []}
    for kind in ("born-digital", "scan", "photo"):
        fields, languages = [], []
        kept = [0, 0]
        for title, items in sets.items():
            read = items if kind == "born-digital" else read_by_ocr(items, kind, pages, seconds[kind], kept, config)
            per_field, per_group = accuracy(read, ocr=kind != "born-digital")
            report(f"{kind}, {title}", per_field, per_group, len(read))
            fields.append(per_field)
            languages.append(per_group)
        share = report(f"== {kind}, all sets", merge(fields), merge(languages), sum(map(len, sets.values())))
        if kind != "born-digital":
            print(f"   OCR median {statistics.median(seconds[kind]):.2f} s/page over {len(seconds[kind])} documents "
                  f"(max {max(seconds[kind]):.2f}); {100 * share:.1f} % of fields right; of the {kept[1]} fields "
                  f"the born-digital PDFs give right, {kept[0]} ({100 * kept[0] / max(1, kept[1]):.1f} %)")


def big_scan(pages: int, config: Any) -> None:
    """OCR seconds per page and peak RSS while a ``pages``-page scan is read, fields included."""
    import resource

    from ocr import PeakRSS
    from ocr_samples import scan_pdf

    from gateway.fields import read_document
    from gateway.ocr import runner

    scan = scan_pdf(pages)
    with PeakRSS() as rss:
        result = runner.run(scan, config)
    assert result.data is not None, result.error
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    got = read_document(result.data, "pdf", ocr=True)
    took = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{pages}-page scan: OCR {result.seconds:.1f} s ({result.seconds / result.pages:.2f} s/page), peak RSS of "
          f"the OCR processes {rss.peak / 1024**2:.0f} MB; fields from its text layer in {took * 1000:.0f} ms "
          f"(first 5 pages), this process's peak RSS {after / 1024:.0f} MB (+{(after - before) / 1024:.0f} MB); "
          f"read {got.invoice_number} {got.grand_total}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus")
    parser.add_argument("--per-layout", type=int, default=3, help="generated invoices per language and layout")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ocr", action="store_true", help="also scans and photos read by OCR (minutes)")
    parser.add_argument("--ocr-pages", type=int, default=2, help="pages of each document scanned or photographed")
    parser.add_argument("--rss-pages", type=int, default=20, help="pages of the scan whose reading's RSS is measured")
    parser.add_argument("--thresholding", default="auto", help="ocr.thresholding (auto, otsu, adaptive-otsu, sauvola)")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    from test_fields_corpus import strip_xml

    from fieldsamples import heldout, samples
    from gateway import einvoice

    corpus: list[tuple[str, bytes, dict[str, str]]] = []
    for path in sorted((args.corpus / "einvoices").rglob("*.pdf")):
        inv = einvoice.examine(path.read_bytes()).einvoice
        if inv is None:
            continue
        truth = {k: (v or "") for k, v in inv.fields().items()}
        truth["document_type"] = inv.default_document_type
        from gateway.fields import FIELD_NAMES

        corpus.append(("corpus", strip_xml(path.read_bytes()), {k: truth.get(k, "") for k in FIELD_NAMES}))
    generated = [(s.language, s.pdf, s.truth) for s in samples(args.per_layout)]
    later = [(s.layout, s.pdf, s.truth) for s in heldout()]
    for title, items in (("corpus hybrids without XML", corpus), ("generated (six languages, two layouts)", generated),
                         ("layouts written after the readers", later)):
        per_field, per_group = accuracy(items)
        report(title, per_field, per_group, len(items))
    pdfs = [pdf for _, pdf, _ in corpus] + [pdf for _, pdf, _ in generated] + [pdf for _, pdf, _ in later]
    t = timing(pdfs, args.rounds)
    print(f"median ms per page over {len(pdfs)} PDFs x {args.rounds} rounds: text with boxes (pypdfium2) "
          f"{t['boxes']:.2f}, plain text (pypdf extract_text, baseline) {t['pypdf']:.2f} "
          f"(ratio {t['boxes'] / t['pypdf']:.2f}); whole field reading {t['fields']:.2f}")
    if args.ocr:
        print(f"\ncpus {os.cpu_count()}, load {os.getloadavg()[0]:.2f}; by kind, per language (corpus: by the seller's "
              f"country), scans and photos of at most {args.ocr_pages} pages")
        by_language = [(language_of(truth), pdf, truth) for _, pdf, truth in corpus]
        one_each = [(s.language, s.pdf, s.truth) for s in samples(1)]
        from gateway.config import OcrConfig

        config = OcrConfig(thresholding=args.thresholding)
        by_kind({"corpus": by_language, "generated": one_each,
                 "held out": [(s.language, s.pdf, s.truth) for s in heldout()]}, args.ocr_pages, config)
        big_scan(args.rss_pages, config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
