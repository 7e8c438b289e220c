"""Benchmark gateway.fields: per-field accuracy and text reading time per page.

Accuracy on two sets: the hybrid e-invoices of the corpus with their embedded
XML removed (the XML is the truth), and invoices of our own in six languages
and two layouts (tests/fieldsamples.py, weasyprint). Time: reading the text
with boxes (pypdfium2, ``gateway.fields.text.read_pdf``) per page, beside a
baseline measured in the same run on the same PDFs: pypdf's plain
``extract_text`` (what the pipeline used for IBANs and invoice words), and the
whole field reading (text + readers) per document.

Run from the repository root:

    .venv/bin/python bench/extract.py [--corpus ../shared/corpus] [--per-layout 3] [--rounds 5]

Figures are medians; nothing here asserts anything.
"""

from __future__ import annotations

import argparse
import io
import logging
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def accuracy(items: list[tuple[str, bytes, dict[str, str]]]) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """Per field and per group: [right, total]."""
    from test_fields_corpus import normal

    from gateway.fields import read_document

    per_field: dict[str, list[int]] = {}
    per_group: dict[str, list[int]] = {}
    for group, pdf, truth in items:
        got = read_document(pdf, "pdf")
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus")
    parser.add_argument("--per-layout", type=int, default=3, help="generated invoices per language and layout")
    parser.add_argument("--rounds", type=int, default=5)
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
        right = sum(a for a, _ in per_field.values())
        total = sum(b for _, b in per_field.values())
        print(f"{title}: {len(items)} PDFs, {right}/{total} fields right ({100 * right / max(1, total):.1f} %)")
        print("  per field: " + ", ".join(f"{k} {a}/{b}" for k, (a, b) in per_field.items()))
        if len(per_group) > 1:
            print("  per group: " + ", ".join(f"{k} {a}/{b}" for k, (a, b) in per_group.items()))
    pdfs = [pdf for _, pdf, _ in corpus] + [pdf for _, pdf, _ in generated] + [pdf for _, pdf, _ in later]
    t = timing(pdfs, args.rounds)
    print(f"median ms per page over {len(pdfs)} PDFs x {args.rounds} rounds: text with boxes (pypdfium2) "
          f"{t['boxes']:.2f}, plain text (pypdf extract_text, baseline) {t['pypdf']:.2f} "
          f"(ratio {t['boxes'] / t['pypdf']:.2f}); whole field reading {t['fields']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
