"""Benchmark gateway.render: ms per mail in the worker against in-process rendering.

Renders the HTML mails of the corpus (emails_FEATURES.tsv tags html-only and
cid-inline-image) plus a few receipt-like mails written here, several rounds,
and prints median and p95 ms per mail for

* ``Renderer.render`` (what ``render_message`` does: a warm worker process),
* the same job in this process (header block, body, fit to width), and
* ``render_html_to_pdf`` on the body alone (the in-process primitive),

the worker overhead as a ratio, the cold start of a worker, and the peak RSS
of the render workers.

Run: ``.venv/bin/python bench/render.py [--rounds N] [--corpus DIR]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import struct
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway import mime, render  # noqa: E402
from gateway.errors import ParseError, RenderError  # noqa: E402
from gateway.models import Address, Attachment, ParsedMessage  # noqa: E402


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A solid-colour PNG."""
    raw = (b"\x00" + bytes(rgb) * width) * height

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    head = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def mail(subject: str, *, html: str | None = None, text: str = "", attachments: tuple[Attachment, ...] = ()) -> ParsedMessage:
    """A receipt-like ParsedMessage."""
    return ParsedMessage(
        message_id=None,
        subject=subject,
        sender=Address("Shop Billing", "billing@shop.example"),
        to=(Address("", "invoices@home.example"),),
        date=dt.datetime(2024, 5, 14, 9, 30, tzinfo=dt.timezone.utc),
        headers=(),
        text=text,
        html=html,
        attachments=attachments,
    )


def receipts() -> list[tuple[str, ParsedMessage]]:
    """A few mails whose body is the invoice, as suppliers send them."""
    logo = Attachment("logo.png", "logo.png", "image/png", png(160, 48, (20, 90, 160)), "other", True, "logo@shop")
    items = "".join(
        f"<tr><td>Item {i} – Büroartikel</td><td align=right>{i}</td><td align=right>{i * 3.5:.2f} €</td></tr>"
        for i in range(1, 11)
    )
    simple = f"""<html><body style="font-family: Arial, sans-serif">
<img src="cid:logo@shop" alt="Shop"><h2>Receipt #48213</h2>
<p>Thank you for your order. Order date 14 May 2024.</p>
<table width="100%" cellpadding="4" style="border-collapse:collapse" border="1">
<tr><th align=left>Item</th><th>Qty</th><th>Price</th></tr>{items}
<tr><td colspan=2 align=right><b>Total</b></td><td align=right><b>192.50 €</b></td></tr></table>
<p>VAT 19% included. Shop GmbH, Musterstraße 1, 10115 Berlin, USt-IdNr. DE123456789</p></body></html>"""
    newsletter = f"""<!DOCTYPE html><html><head><style>
.wrap {{ width: 640px; margin: 0 auto; background: #fff; }}
.hero {{ background: #1f4e79; color: #fff; padding: 24px; font-size: 22px; }}
td.k {{ color: #666; }} .btn {{ background:#f60; color:#fff; padding:10px 18px; border-radius:4px; }}
@media (max-width: 600px) {{ .wrap {{ width: 100% }} }}
</style></head><body bgcolor="#eeeeee"><table class="wrap" cellspacing=0 cellpadding=0><tr><td>
<div class="hero">Your invoice from CloudHost is ready</div>
<table width="100%" cellpadding="8"><tr><td class=k>Invoice</td><td>INV-2024-0042</td></tr>
<tr><td class=k>Period</td><td>1 Apr 2024 – 30 Apr 2024</td></tr>
<tr><td class=k>Amount</td><td><b>$ 24.00</b></td></tr></table>
<p style="padding:8px"><a class=btn href="https://cloudhost.example/invoices/42">View invoice</a></p>
<img src="https://tracker.example/open.gif" width=1 height=1>
<p style="font-size:11px;color:#888;padding:8px">CloudHost Inc., 1 Market St, San Francisco. You get this mail because you have an account.</p>
</td></tr></table></body></html>"""
    lines = "".join(
        f"<tr><td>{i:04d}</td><td>Position {i}: Dienstleistung laut Vertrag, Stunde</td><td align=right>1,00</td>"
        f"<td align=right>{80 + i % 7:.2f} €</td></tr>"
        for i in range(1, 201)
    )
    long_invoice = f"<html><body><h1>Rechnung 2024-117</h1><table width=100% border=1 cellspacing=0>{lines}</table></body></html>"
    text = "\n".join(
        ["Rechnung Nr. 2024-0815", "", "Sehr geehrte Damen und Herren,", "", "für März berechnen wir:", ""]
        + [f"  {i:2d}  Wartung Heizungsanlage, Pos. {i:<30} {i * 12.5:>10.2f} EUR" for i in range(1, 31)]
        + ["", "Summe netto 5812,50 EUR, zzgl. 19 % USt.", "", "Mit freundlichen Grüßen", "Installateur Müller"]
    )
    return [
        ("receipt-simple", mail("Receipt #48213", html=simple, attachments=(logo,))),
        ("receipt-newsletter", mail("Your CloudHost invoice", html=newsletter)),
        ("invoice-200-lines", mail("Rechnung 2024-117", html=long_invoice)),
        ("invoice-text", mail("Rechnung 2024-0815", text=text)),
    ]


def corpus(root: Path) -> list[tuple[str, ParsedMessage]]:
    """The corpus mails tagged html-only or cid-inline-image."""
    features = root / "emails_FEATURES.tsv"
    if not features.exists():
        return []
    mails = []
    for line in features.read_text().splitlines()[1:]:
        path, _, tags = line.partition("\t")
        if {"html-only", "cid-inline-image"} & set(tags.split(";")):
            try:
                mails.append((path.removeprefix("emails/"), mime.parse((root / path).read_bytes())))
            except ParseError:  # not a mail (an Outlook .msg): the pipeline quarantines it
                continue
    return mails


def timed(fn: Callable[[], object]) -> float:
    """Milliseconds ``fn`` takes."""
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


def summary(samples: list[float]) -> str:
    """Median and p95 of ``samples``."""
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"median {statistics.median(ordered):7.1f} ms   p95 {p95:7.1f} ms   (n={len(ordered)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="renders of each mail per path (default 3)")
    parser.add_argument("--corpus", type=Path, default=Path("/work/shared/corpus"))
    args = parser.parse_args()

    mails = corpus(args.corpus) + receipts()
    html_mails = [(name, m) for name, m in mails if m.html]
    renderer = render.Renderer(max_workers=1)
    try:
        cold = timed(lambda: renderer.render(mails[-1][1]))
        worker: list[float] = []
        in_process: list[float] = []
        primitive: list[float] = []
        per_mail: dict[str, list[float]] = {}
        failures: dict[str, str] = {}
        tiny = mail("Tiny", html="<p>Thanks for your payment of 5.00 EUR.</p>")
        tiny_job = render._job_for(tiny)
        tiny_worker = [timed(lambda: renderer.render(tiny)) for _ in range(20)]
        tiny_in_process = [timed(lambda: render._render_job(tiny_job)) for _ in range(20)]
        for _ in range(args.rounds):
            for name, msg in mails:
                job = render._job_for(msg)
                try:
                    ms = timed(lambda: renderer.render(msg))
                    in_process.append(timed(lambda: render._render_job(job)))
                except RenderError as exc:
                    failures[name] = str(exc)
                    continue
                worker.append(ms)
                per_mail.setdefault(name, []).append(ms)
            for name, msg in html_mails:
                resources = {a.content_id: (a.content_type, a.data) for a in msg.attachments if a.content_id}
                html = msg.html or ""
                try:
                    primitive.append(timed(lambda: render.render_html_to_pdf(html, resources)))
                except RenderError:
                    pass
    finally:
        renderer.close()

    print(f"mails: {len(mails)} ({len(mails) - 4} from the corpus, 4 receipts), {args.rounds} rounds")
    print(f"worker (render_message path)    {summary(worker)}")
    print(f"same job in-process             {summary(in_process)}")
    print(f"render_html_to_pdf (HTML only)  {summary(primitive)}")
    ratio_median = statistics.median(worker) / statistics.median(in_process)
    ratio_total = sum(worker) / sum(in_process)
    print(f"worker / in-process: median {ratio_median:.2f}x, total time {ratio_total:.2f}x")
    overhead = statistics.median(tiny_worker) - statistics.median(tiny_in_process)
    print(f"a tiny mail: worker {summary(tiny_worker)}; in-process {summary(tiny_in_process)}")
    print(f"fixed cost of the worker per mail (tiny mail, median difference): {overhead:.1f} ms")
    print(f"cold start (new worker + first mail): {cold:.0f} ms")
    print(f"workers started: {renderer.workers_started}; peak worker RSS: {renderer.peak_worker_rss_kb / 1024:.0f} MiB")
    slowest = sorted(per_mail.items(), key=lambda item: -statistics.median(item[1]))[:5]
    print("slowest mails (median ms in the worker):")
    for name, samples in slowest:
        print(f"  {statistics.median(samples):8.1f}  {name}")
    for name, reason in failures.items():
        print(f"FAILED {name}: {reason}")


if __name__ == "__main__":
    main()
