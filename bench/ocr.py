"""Benchmark gateway.ocr: seconds per page of OCR beside plain Tesseract, and peak RSS on a 20-page scan.

Makes a scanned invoice here (tests/ocr_samples.py: weasyprint -> 200 dpi ->
turned 1.5 degrees -> noise -> JPEG) and a phone photo of a receipt, then
measures, in the same run:

* the baseline: ``tesseract PAGE.jpg - -l LANGS`` on the same page image
  (the plain CLI, one thread), seconds per page, median of ``--rounds``;
* ``gateway.ocr.runner.run`` as the OCR worker runs it (OCRmyPDF at nice 19,
  ``--rotate-pages``, one Tesseract thread) on a 1-page scan and on the photo,
  seconds per page, median;
* the same on a ``--pages``-page scan (default 20): seconds per page, and the
  peak RSS of the OCR process tree, sampled every 50 ms with psutil;

with the six default languages and with ``eng`` alone, and the ratios to the
baseline. The machine is shared: compare the ratios and medians.

Run: ``.venv/bin/python bench/ocr.py [--rounds N] [--pages N]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from gateway.config import OcrConfig  # noqa: E402
from gateway.ocr import runner, to_pdf  # noqa: E402
from ocr_samples import invoice_pdf, receipt_photo, scan_jpeg, scan_pdf  # noqa: E402


def tesseract_page(jpeg: Path, langs: str) -> float:
    """Seconds plain tesseract takes on one page image."""
    t0 = time.monotonic()
    subprocess.run(["tesseract", str(jpeg), "-", "-l", langs], capture_output=True, check=True,
                   env=dict(os.environ, OMP_THREAD_LIMIT="1"))
    return time.monotonic() - t0


class PeakRSS:
    """The peak summed RSS of this process's children (the OCR tree), sampled every 50 ms."""

    def __init__(self) -> None:
        import psutil

        self.me = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            total = 0
            for p in self.me.children(recursive=True):
                try:
                    total += p.memory_info().rss
                except Exception:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(0.05)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pages", type=int, default=20)
    args = ap.parse_args()
    missing = runner.available()
    if missing:
        print(missing)
        return 1
    page = scan_jpeg(invoice_pdf())
    one = scan_pdf(1)
    photo = to_pdf(receipt_photo(), OcrConfig())
    many = scan_pdf(args.pages)
    print(f"cpus {os.cpu_count()}, load {os.getloadavg()[0]:.2f}; a page: 200 dpi grey JPEG "
          f"{len(page) // 1024} KB; {args.rounds} rounds")
    with tempfile.TemporaryDirectory() as tmp:
        jpeg = Path(tmp) / "page.jpg"
        jpeg.write_bytes(page)
        for langs in ("+".join(OcrConfig().languages), "eng"):
            cfg = OcrConfig(languages=tuple(langs.split("+")))
            base = statistics.median(tesseract_page(jpeg, langs) for _ in range(args.rounds))
            scans, photos = [], []
            for _ in range(args.rounds):
                r = runner.run(one, cfg)
                assert r.data is not None, r.error
                scans.append(r.seconds)
                r = runner.run(photo, cfg)
                assert r.data is not None, r.error
                photos.append(r.seconds)
            with PeakRSS() as rss:
                r = runner.run(many, cfg)
            assert r.data is not None, r.error
            per_page = r.seconds / r.pages
            print(f"\nlanguages {langs}")
            print(f"  baseline tesseract CLI, one page    {base:6.2f} s/page")
            print(f"  OCRmyPDF, 1-page scan (median)      {statistics.median(scans):6.2f} s/page  "
                  f"x{statistics.median(scans) / base:.2f}")
            print(f"  OCRmyPDF, receipt photo (median)    {statistics.median(photos):6.2f} s/page  "
                  f"x{statistics.median(photos) / base:.2f}")
            print(f"  OCRmyPDF, {r.pages}-page scan              {per_page:6.2f} s/page  x{per_page / base:.2f}"
                  f"  ({r.seconds:.1f} s), peak RSS of the OCR processes {rss.peak / 1024**2:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
