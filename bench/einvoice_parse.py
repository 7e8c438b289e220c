"""Benchmark gateway.einvoice: XML e-invoices parsed per second, and what looking for an
embedded XML adds to the pipeline's processing of a plain PDF (one without e-invoice).

The added cost is measured where it is paid: the pipeline's work on a mail with one plain
PDF (decide: rules, policy, e-invoice lookup; then the IBAN read from the PDF's text, which
opens the PDF again with pypdf whatever the lookup did), once as it is and once with the
e-invoice lookup replaced by a stub, in alternating rounds; and the whole ``process()`` of
such mails (parse, decide, store) the same way. A fresh pypdf open is not subtracted: the
pipeline does not share its PdfReader, so the lookup's own open is part of its cost.

Run from the repository root:

    .venv/bin/python bench/einvoice_parse.py [--corpus /work/shared/corpus] [--seconds 0.5]

Figures are medians of several timed rounds; nothing here asserts anything.
"""

from __future__ import annotations

import argparse
import contextlib
import email
import email.policy
import functools
import hashlib
import importlib.metadata
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway import mime  # noqa: E402
from gateway import pipeline as pipeline_module  # noqa: E402
from gateway.config import parse_settings  # noqa: E402
from gateway.einvoice import Examination, detect  # noqa: E402
from gateway.models import Envelope  # noqa: E402
from gateway.pipeline import Pipeline  # noqa: E402
from gateway.spool import Spool  # noqa: E402
from gateway.store import Store  # noqa: E402


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


@contextlib.contextmanager
def lookup_off() -> Iterator[None]:
    """The pipeline without the e-invoice lookup: every attachment examined as "no e-invoice"."""
    real = pipeline_module._einvoice_examine
    pipeline_module._einvoice_examine = lambda att: Examination(None, "not looked for")
    try:
        yield
    finally:
        pipeline_module._einvoice_examine = real


def paired(fn: Callable[[], object], seconds: float, pairs: int = 15) -> tuple[list[float], list[float]]:
    """Seconds per call of fn with the lookup and without it, in pairs of adjacent rounds (which goes first alternates)."""
    fn()
    with lookup_off():
        fn()
    started = time.perf_counter()
    fn()
    per_round = max(1, int(seconds / pairs / 2 / max(time.perf_counter() - started, 1e-7)))
    on: list[float] = []
    off: list[float] = []

    def one_round(lookup: bool) -> None:
        with contextlib.nullcontext() if lookup else lookup_off():
            t0 = time.perf_counter()
            for _ in range(per_round):
                fn()
            (on if lookup else off).append((time.perf_counter() - t0) / per_round)

    for i in range(pairs):
        for lookup in ((True, False) if i % 2 == 0 else (False, True)):
            one_round(lookup)
    return on, off


def mail(name: str, data: bytes, n: int = 0) -> bytes:
    """A mail carrying one PDF; ``n`` makes its body (and so its content hash) unique."""
    m = EmailMessage()
    m["From"] = "Billing <billing@supplier.example>"
    m["To"] = "invoices@localhost"
    m["Subject"] = "Your documents"
    m["Message-ID"] = f"<bench-{n}-{hashlib.sha256(data).hexdigest()[:12]}@bench.example>"
    m.set_content(f"Attached. ({n})")
    m.add_attachment(data, maintype="application", subtype="pdf", filename=name.rsplit(":", 1)[-1] or "doc.pdf")
    return m.as_bytes()


def pipeline_overhead(corpus: Path, seconds: float) -> None:
    pdfs = plain_pdfs(corpus)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        settings = parse_settings({"data_dir": str(base / "data"), "rules_dir": str(base / "rules"),
                                   "trust": {"check_senders": False}, "exports": []}, base=base)
        store = Store(settings.data_dir)
        pipe = Pipeline(settings, store)
        row: dict[str, Any] = {"id": 1, "source": "smtp", "rcpt_tos": "[]", "received": "2026-11-22T00:00:00"}
        print()
        print("Plain PDFs (no e-invoice), the pipeline's work per mail (decide + IBAN read from the text),")
        print("with the e-invoice lookup and with it stubbed out; detect() alone for comparison:")
        print(f"  {'file':<44}{'KiB':>8}{'detect ms':>11}{'without ms':>12}{'with ms':>10}{'added ms':>10}{'added %':>9}")
        print("  (without/with: medians; added: median of the paired differences)")
        added_all, shares, withouts, alones = [], [], [], []
        for name, data in pdfs:
            parsed = mime.parse(mail(name, data))
            if [a.kind for a in parsed.attachments] != ["pdf"]:
                continue

            def work(parsed: Any = parsed) -> None:
                out = pipe.decide(parsed, row)
                for d in out.documents:
                    pipe.payment_guard.ibans_of(d.kind, d.data, d.einvoice)

            on, off = paired(work, seconds)
            with_ms, without_ms = statistics.median(on) * 1000, statistics.median(off) * 1000
            alone = statistics.median(rounds(functools.partial(detect, data), seconds / 4)) * 1000
            # the median of the pairs' differences: the machine's drift hits both rounds of a pair alike
            added = statistics.median(a - b for a, b in zip(on, off)) * 1000
            added_all.append(added)
            shares.append(added / without_ms)
            withouts.append(without_ms)
            alones.append(alone)
            print(f"  {name[:43]:<44}{len(data) / 1024:>8.1f}{alone:>11.3f}{without_ms:>12.3f}{with_ms:>10.3f}"
                  f"{added:>10.3f}{added / without_ms * 100:>8.1f}%")
        if added_all:
            print(f"  median over {len(added_all)} PDFs: the lookup adds {statistics.median(added_all):.3f} ms "
                  f"({statistics.median(shares) * 100:.1f} %) to the pipeline's work on a plain PDF")
            print(f"  all {len(added_all)} PDFs once: the pipeline's work {sum(withouts):.1f} ms without the lookup; "
                  f"paired differences sum to {sum(added_all):+.1f} ms, detect() alone to {sum(alones):.1f} ms "
                  f"({sum(alones) / sum(withouts) * 100:.1f} %)")

        # The whole process() of a mail (parse, decide, store, record), lookup on and off alternating.
        spool = Spool(store)
        timings: dict[bool, list[float]] = {True: [], False: []}
        n = 0
        for rep in range(5):
            for name, data in pdfs:
                for lookup in ((True, False) if rep % 2 == 0 else (False, True)):
                    n += 1
                    spool.accept(mail(name, data, n), Envelope(source="smtp"))
                    claimed = store.claim_message()
                    assert claimed is not None
                    with contextlib.nullcontext() if lookup else lookup_off():
                        t0 = time.perf_counter()
                        pipe.process(claimed)
                        timings[lookup].append(time.perf_counter() - t0)
        spool.stop()
        on_ms, off_ms = statistics.median(timings[True]) * 1000, statistics.median(timings[False]) * 1000
        diffs = [(a - b) * 1000 for a, b in zip(timings[True], timings[False])]
        print(f"  whole process() of such a mail (parse, decide, store), {len(diffs)} pairs of mails: median "
              f"{off_ms:.2f} ms without the lookup, {on_ms:.2f} ms with it; median paired difference "
              f"{statistics.median(diffs):+.2f} ms")


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
    pipeline_overhead(args.corpus, args.seconds)
    hybrid_pdfs(args.corpus, args.seconds)


if __name__ == "__main__":
    main()
