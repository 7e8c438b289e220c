"""Scans and photos for the OCR tests and bench/ocr.py, made here: weasyprint -> pypdfium2 -> Pillow.

An invoice is rendered to PDF, rasterised at 200 dpi, turned a little and
sprinkled with noise, as a flatbed scanner makes it; a receipt is rendered,
rasterised, laid on a grey table, seen in perspective, turned and saved as a
phone's JPEG.
"""

from __future__ import annotations

import functools
import io
import random

INVOICE_NUMBER = "RE-2026-0815"
RECEIPT_NUMBER = "BON-77341"

_INVOICE_HTML = """<html><body style="font-family: DejaVu Sans; font-size: 11pt; margin: 1.5cm">
<h1>Muster Bürobedarf GmbH</h1><p>Hauptstraße 5, 10115 Berlin &middot; USt-IdNr. DE136695976</p>
<h2>Rechnung</h2><p>Rechnungsnummer: {number}<br>Rechnungsdatum: 07.12.2026<br>Fällig am: 21.12.2026</p>
<table border="1" cellpadding="4" style="border-collapse: collapse">
<tr><th>Artikel</th><th>Menge</th><th>Preis</th></tr>
<tr><td>Kopierpapier A4</td><td>10</td><td>45,90 EUR</td></tr>
<tr><td>Toner schwarz</td><td>2</td><td>119,00 EUR</td></tr></table>
<p>Nettobetrag: 164,90 EUR<br>USt. 19 %: 31,33 EUR<br><b>Gesamtbetrag: 196,23 EUR</b></p>
<p>IBAN DE89 3704 0044 0532 0130 00 &middot; Seite {page}</p></body></html>"""

_RECEIPT_HTML = """<html><head><style>@page {{ size: 80mm 140mm; margin: 5mm }}</style></head>
<body style="font-family: DejaVu Sans Mono; font-size: 10pt">
<h3 style="text-align: center">Café Central S.L.</h3><p style="text-align: center">Calle Mayor 1, Madrid</p>
<p>Receipt No. {number}<br>Date: 07/12/2026 12:41</p>
<pre style="font-family: DejaVu Sans Mono; font-size: 10pt">
2 Café con leche    4,80
1 Tostada           3,20
1 Zumo naranja      3,50

<b>TOTAL EUR          11,50</b>
IVA 10% incl.       1,05</pre><p>Gracias por su visita</p>
</body></html>"""


def invoice_pdf(number: str = INVOICE_NUMBER, page: int = 1) -> bytes:
    """A born-digital invoice (one A4 page)."""
    import weasyprint

    return bytes(weasyprint.HTML(string=_INVOICE_HTML.format(number=number, page=page)).write_pdf())


def _raster(pdf: bytes, dpi: int, page: int = 0) -> object:
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(pdf)
    try:
        return doc[page].render(scale=dpi / 72).to_pil()
    finally:
        doc.close()


def scan_jpeg(pdf: bytes, *, dpi: int = 200, angle: float = 1.5, seed: int = 1, quality: int = 80,
              page: int = 0) -> bytes:
    """A flatbed scan of a PDF's page (the first): grey, turned ``angle`` degrees, with salt-and-pepper noise."""
    from PIL import Image

    img = _raster(pdf, dpi, page).convert("L")  # type: ignore[attr-defined]
    img = img.rotate(angle, expand=True, fillcolor=255, resample=Image.BICUBIC)
    rnd = random.Random(seed)
    px = img.load()
    w, h = img.size
    for _ in range(w * h // 150):
        px[rnd.randrange(w), rnd.randrange(h)] = rnd.choice((0, 90, 255))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=quality)
    return out.getvalue()


def scan_pdf(pages: int = 1, *, dpi: int = 200, number: str = INVOICE_NUMBER) -> bytes:
    """A scanned invoice as a PDF of page images (no text layer), ``pages`` pages."""
    import img2pdf

    page = scan_jpeg(invoice_pdf(number), dpi=dpi)
    return bytes(img2pdf.convert([page] * pages, layout_fun=img2pdf.get_fixed_dpi_layout_fun((dpi, dpi))))


@functools.lru_cache(maxsize=4)
def receipt_photo(number: str = RECEIPT_NUMBER, *, seed: int = 2) -> bytes:
    """A phone photo of a receipt: on a grey table, in perspective, turned 3 degrees, as JPEG."""
    import weasyprint
    from PIL import Image, ImageFilter

    pdf = weasyprint.HTML(string=_RECEIPT_HTML.format(number=number)).write_pdf()
    paper = _raster(bytes(pdf), 220).convert("RGB")  # type: ignore[attr-defined]
    w, h = paper.size
    table = Image.new("RGB", (int(w * 1.5), int(h * 1.25)), (118, 112, 104))
    rnd = random.Random(seed)
    tpx = table.load()
    for _ in range(table.size[0] * table.size[1] // 40):  # the table's grain
        x, y = rnd.randrange(table.size[0]), rnd.randrange(table.size[1])
        g = rnd.randrange(90, 140)
        tpx[x, y] = (g, g - 4, g - 10)
    table.paste(paper, ((table.size[0] - w) // 2, (table.size[1] - h) // 2))
    W, H = table.size
    # seen from below and a little to the left: the top of the receipt is narrower
    d = W * 0.06
    coeffs = _perspective([(0, 0), (W, 0), (W, H), (0, H)], [(d, 0), (W - d * 0.6, d * 0.3), (W, H), (0, H - d * 0.2)])
    photo = table.transform((W, H), Image.PERSPECTIVE, coeffs, Image.BICUBIC, fillcolor=(118, 112, 104))
    photo = photo.rotate(3, expand=False, resample=Image.BICUBIC, fillcolor=(118, 112, 104))
    photo = photo.filter(ImageFilter.GaussianBlur(0.6))
    out = io.BytesIO()
    photo.save(out, "JPEG", quality=85)
    return out.getvalue()


def page_photo(pdf: bytes, *, page: int = 0, seed: int = 3, dpi: int = 200) -> bytes:
    """A phone photo of a PDF's page: on a grey table, in perspective, turned 2 degrees, lit from one side,
    a little blurred, as JPEG (the general form of ``receipt_photo``, for bench/extract.py)."""
    from PIL import Image, ImageFilter

    paper = _raster(pdf, dpi, page).convert("RGB")  # type: ignore[attr-defined]
    w, h = paper.size
    table = Image.new("RGB", (int(w * 1.25), int(h * 1.15)), (118, 112, 104))
    table.paste(paper, ((table.size[0] - w) // 2, (table.size[1] - h) // 2))
    W, H = table.size
    rnd = random.Random(seed)
    d = W * (0.04 + rnd.random() * 0.03)
    coeffs = _perspective([(0, 0), (W, 0), (W, H), (0, H)], [(d, 0), (W - d * 0.6, d * 0.3), (W, H), (0, H - d * 0.2)])
    photo = table.transform((W, H), Image.PERSPECTIVE, coeffs, Image.BICUBIC, fillcolor=(118, 112, 104))
    photo = photo.rotate(rnd.choice((-2, 2)), expand=False, resample=Image.BICUBIC, fillcolor=(118, 112, 104))
    # lit from the top left: the far corner is a third darker
    ramp = Image.linear_gradient("L")
    shade = Image.blend(ramp.resize((W, H)), ramp.rotate(90).resize((W, H)), 0.5).point(lambda v: 255 - v // 3)
    photo = Image.composite(photo, Image.new("RGB", (W, H), (0, 0, 0)), shade)
    photo = photo.filter(ImageFilter.GaussianBlur(0.7))
    out = io.BytesIO()
    photo.save(out, "JPEG", quality=82)
    return out.getvalue()


def _perspective(dst: list[tuple[float, float]], src: list[tuple[float, float]]) -> list[float]:
    """Pillow's PERSPECTIVE coefficients mapping output points ``dst`` to input points ``src``."""
    rows: list[list[float]] = []
    rhs: list[float] = []
    for (x, y), (u, v) in zip(dst, src):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rhs.append(u)
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs.append(v)
    return _solve(rows, rhs)


def _solve(a: list[list[float]], b: list[float]) -> list[float]:
    """Gaussian elimination for the 8x8 system above."""
    n = len(b)
    m = [row[:] + [b[i]] for i, row in enumerate(a)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(m[r][col]))
        m[col], m[pivot] = m[pivot], m[col]
        for r in range(n):
            if r != col:
                f = m[r][col] / m[col][col]
                m[r] = [x - f * y for x, y in zip(m[r], m[col])]
    return [m[i][n] / m[i][i] for i in range(n)]


def logo_png() -> bytes:
    """A shop's logo: 180×60 px, a few KB."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (180, 60), (255, 255, 255))
    ImageDraw.Draw(img).rectangle((5, 5, 175, 55), outline=(200, 30, 30), width=4)
    ImageDraw.Draw(img).text((20, 22), "SHOP LOGO", fill=(200, 30, 30))
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def holiday_photo() -> bytes:
    """A holiday photo: large, colourful, no text."""
    from PIL import Image

    rnd = random.Random(5)
    img = Image.new("RGB", (900, 600), (40, 120, 200))
    px = img.load()
    for y in range(300, 600):
        for x in range(0, 900, 3):
            px[x, y] = (210, 190 + rnd.randrange(30), 140)
    out = io.BytesIO()
    img.save(out, "JPEG", quality=90)
    return out.getvalue()
