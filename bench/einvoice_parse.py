"""Benchmark gateway.einvoice: XML e-invoices parsed per second, and the cost of looking for
an embedded XML in a plain PDF (one without e-invoice) beside just opening it with pypdf.

Run from the repository root:

    .venv/bin/python bench/einvoice_parse.py [--corpus /work/shared/corpus] [--seconds 0.5]

Figures are medians of several timed rounds; nothing here asserts anything.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import functools
import hashlib
import importlib.metadata
import io
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pypdf import PdfReader

from gateway.einvoice import detect


def open_pdf(data: bytes) -> PdfReader:
    """The baseline: what any PDF handling costs at least, pypdf reading the trailer and xref."""
    return PdfReader(io.BytesIO(data), strict=False)


def rounds(fn: Callable[[], object], seconds: float, min_rounds: int = 5) -> list[float]:
    """Seconds per call, one figure per round; each round repeats fn enough to last ~seconds/5."""
    fn()  # warm up (imports, caches)
    started = time.perf_counter()
    fn()
    once = max(time.perf_counter() - started, 1e-7)
    per_round = max(1, int(seconds / min_rounds / once))
    results = []
    for _ in range(min_rounds):
        t0 = time.perf_counter()
        for _ in range(per_round):
            fn()
        results.append((time.perf_counter() - t0) / per_round)
    return results


def xml_throughput(corpus: Path, seconds: float) -> None:
    groups: dict[str, list[bytes]] = {}
    for path in sorted((corpus / "einvoices").rglob("*.xml")):
        data = path.read_bytes()
        inv = detect(data)
        if inv is not None:
            groups.setdefault(inv.syntax, []).append(data)
    print("XML e-invoices parsed per second (detect + fields + checks), corpus XMLs:")
    print(f"  {'syntax':<10}{'files':>6}{'KiB':>9}{'median ms/file':>16}{'invoices/s':>12}")
    for syntax in ("CII", "UBL", "ZUGFeRD1"):
        files = groups.get(syntax, [])
        if not files:
            continue

        def parse_all(files: list[bytes] = files) -> None:
            for data in files:
                detect(data)

        per_pass = statistics.median(rounds(parse_all, seconds))
        per_file = per_pass / len(files)
        size = sum(map(len, files)) / 1024
        print(f"  {syntax:<10}{len(files):>6}{size:>9.0f}{per_file * 1000:>16.3f}{1 / per_file:>12.0f}")


def plain_pdfs(corpus: Path) -> list[tuple[str, bytes]]:
    """PDFs without an e-invoice: the corpus negatives and PDF attachments of the mail corpus."""
    found: dict[str, tuple[str, bytes]] = {}
    for path in sorted((corpus / "einvoices").rglob("*.pdf")):
        data = path.read_bytes()
        if detect(data) is None and len(data) > 1024:
            found[hashlib.sha256(data).hexdigest()] = (path.name, data)
    for path in sorted((corpus / "emails").rglob("*")):
        if not path.is_file():
            continue
        try:
            msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            for part in msg.walk():
                payload = part.get_payload(decode=True)
                if isinstance(payload, bytes) and b"%PDF-" in payload[:1024] and detect(payload) is None:
                    found[hashlib.sha256(payload).hexdigest()] = (f"{path.name}:{part.get_filename()}", payload)
        except Exception:  # the mail corpus is full of broken mails; skip what the stdlib can't read
            continue
    return sorted(found.values(), key=lambda item: len(item[1]))


def pdf_overhead(corpus: Path, seconds: float) -> None:
    pdfs = plain_pdfs(corpus)
    print()
    print("Plain PDFs (no e-invoice): pypdf open vs. detect() (open + look for embedded XML):")
    print(f"  {'file':<48}{'KiB':>8}{'open ms':>10}{'detect ms':>11}{'added ms':>10}{'ratio':>7}")
    added_all, ratios, unreadable = [], [], []
    for name, data in pdfs:
        try:
            open_pdf(data)
        except Exception:
            unreadable.append(statistics.median(rounds(functools.partial(detect, data), seconds)))
            continue
        opened = statistics.median(rounds(functools.partial(open_pdf, data), seconds))
        detected = statistics.median(rounds(functools.partial(detect, data), seconds))
        added = detected - opened
        added_all.append(added)
        ratios.append(detected / opened)
        print(f"  {name[:47]:<48}{len(data) / 1024:>8.1f}{opened * 1000:>10.3f}{detected * 1000:>11.3f}"
              f"{added * 1000:>10.3f}{detected / opened:>7.2f}")
    if unreadable:
        print(f"  ({len(unreadable)} more PDFs pypdf cannot open at all: detect() gives up after a median "
              f"{statistics.median(unreadable) * 1000:.3f} ms)")
    if added_all:
        print(f"  median over {len(added_all)} PDFs: added {statistics.median(added_all) * 1000:.3f} ms per PDF, "
              f"detect/open ratio {statistics.median(ratios):.2f}")


def hybrid_pdfs(corpus: Path, seconds: float) -> None:
    times, sizes = [], []
    for path in sorted((corpus / "einvoices").rglob("*.pdf")):
        data = path.read_bytes()
        if detect(data) is not None:
            times.append(statistics.median(rounds(functools.partial(detect, data), seconds / 4)))
            sizes.append(len(data))
    if times:
        print()
        print(f"Hybrid PDFs (e-invoice found), {len(times)} files, median {statistics.median(sizes) / 1024:.0f} KiB: "
              f"median {statistics.median(times) * 1000:.2f} ms, max {max(times) * 1000:.2f} ms per PDF")


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=Path("/work/shared/corpus"))
    parser.add_argument("--seconds", type=float, default=0.5, help="time budget per measurement (default 0.5)")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # pypdf's complaints about damaged PDFs would drown the table
    versions = ", ".join(f"{name} {importlib.metadata.version(name)}" for name in ("lxml", "pypdf"))
    print(f"Python {platform.python_version()}, {versions}, {platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}")
    xml_throughput(args.corpus, args.seconds)
    pdf_overhead(args.corpus, args.seconds)
    hybrid_pdfs(args.corpus, args.seconds)


if __name__ == "__main__":
    main()
