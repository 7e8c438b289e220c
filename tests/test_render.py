"""Tests of gateway.render: mail body -> PDF, offline, in a limited worker process."""

from __future__ import annotations

import base64
import datetime as dt
import http.server
import io
import shutil
import struct
import subprocess
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pypdf
import pytest
import weasyprint

from gateway import mime, render
from gateway.errors import ParseError, RenderError, RenderLimitError
from gateway.models import Address, Attachment, ParsedMessage

from conftest import CORPUS  # noqa: E402  (../shared/corpus beside the clone)
POPPLER = shutil.which("pdftotext") and shutil.which("pdfimages")
assert POPPLER, "poppler-utils (pdftotext, pdfimages) is missing: `make test` installs it"


def needs_poppler(test: Any) -> Any:
    """Marks tests that use pdftotext or pdfimages (installed by `make test`)."""
    return test


# -- helpers ---------------------------------------------------------------


def make_png(width: int, height: int, rgb: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    """A solid-colour RGB PNG, built with zlib and struct only."""
    row = b"\x00" + bytes(rgb) * width
    packer = zlib.compressobj(1)
    body = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def message(
    *,
    html: str | None = None,
    text: str = "",
    subject: str = "Invoice 2024-001",
    attachments: tuple[Attachment, ...] = (),
) -> ParsedMessage:
    """A ParsedMessage with a fixed sender, recipient and date."""
    return ParsedMessage(
        message_id="test@example.com",
        subject=subject,
        sender=Address("Billing Dept", "billing@supplier.example"),
        to=(Address("", "invoices@home.example"),),
        date=dt.datetime(2024, 5, 14, 9, 30, tzinfo=dt.timezone.utc),
        headers=(),
        text=text,
        html=html,
        attachments=attachments,
    )


def inline_image(cid: str, data: bytes, content_type: str = "image/png") -> Attachment:
    """An inline attachment with a Content-ID."""
    return Attachment("image.png", "image.png", content_type, data, "other", True, cid)


def pdf_text(pdf: bytes, tmp_path: Path) -> str:
    """The text pdftotext finds in ``pdf``."""
    path = tmp_path / "out.pdf"
    path.write_bytes(pdf)
    done = subprocess.run(["pdftotext", "-enc", "UTF-8", str(path), "-"], capture_output=True, check=True)
    return done.stdout.decode("utf-8")


def pdf_images(pdf: bytes, tmp_path: Path) -> list[tuple[int, int]]:
    """(width, height) of every image in ``pdf``, from ``pdfimages -list``."""
    path = tmp_path / "images.pdf"
    path.write_bytes(pdf)
    done = subprocess.run(["pdfimages", "-list", str(path)], capture_output=True, check=True, text=True)
    sizes = []
    for line in done.stdout.splitlines()[2:]:
        fields = line.split()
        if fields[2] == "image":
            sizes.append((int(fields[3]), int(fields[4])))
    return sizes


@pytest.fixture(scope="module", autouse=True)
def _stop_workers() -> Iterator[None]:
    yield
    render.shutdown()


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Records every request and answers with something that would show."""

    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.seen.append(self.path)
        if self.path.endswith(".css"):
            body, kind = b'body::before { content: "REMOTE-CSS-LOADED"; }', "text/css"
        else:
            body, kind = make_png(13, 11, (0, 0, 255)), "image/png"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture()
def web_server() -> Iterator[tuple[str, list[str]]]:
    """A real HTTP server on loopback; yields its base URL and the requested paths."""
    seen: list[str] = []
    handler = type("Handler", (_Recorder,), {"seen": seen})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# -- 1. nothing is loaded but cid: and data: -------------------------------


def hostile_html(base: str, host: str, local: Path) -> str:
    """An HTML mail that tries every way to load something from outside."""
    data_png = base64.b64encode(make_png(29, 19, (0, 160, 0))).decode()
    return f"""<!DOCTYPE html>
<html><head>
<base href="{base}/base/">
<link rel="stylesheet" href="{base}/link.css">
<link rel="stylesheet" href="file://{local}/leak.css">
<link rel="icon" href="{base}/favicon.png">
<link rel="preload" as="image" href="{base}/preload.png">
<link rel="attachment" href="{base}/attachment.pdf">
<meta http-equiv="refresh" content="0; url={base}/refresh">
<script src="{base}/script.js"></script>
<style>
@import url("{base}/import.css");
@import "file://{local}/leak.css";
@font-face {{ font-family: Remote; src: url("{base}/font.woff"); }}
body {{ background: url("{base}/body-bg.png"); font-family: Remote, sans-serif; }}
.box {{ background-image: url("file://{local}/local.png"); }}
li {{ list-style-image: url("{base}/bullet.png"); }}
h1::after {{ content: url("{base}/after.png"); }}
</style>
</head>
<body background="{base}/body-attr.png">
<h1>Hostile invoice mail</h1>
<p>Invoice total 123.45 EUR, due in 14 days.</p>
<img src="{base}/remote.png" alt="remote image">
<img src="https://{host}/tls.png">
<img src="//{host}/protocol-relative.png">
<img src="relative.png">
<img src="/etc/passwd">
<img src="file:///etc/passwd">
<img src="file://{local}/local.png">
<img src="ftp://{host}/ftp.png">
<img srcset="{base}/srcset.png 2x" src="{base}/src.png">
<img src="cid:logo%40supplier.example" alt="logo">
<img src="data:image/png;base64,{data_png}">
<input type="image" src="{base}/input.png">
<video poster="{base}/poster.png" src="{base}/video.mp4"></video>
<div class="box" style="background: url('{base}/inline-style.png')">box</div>
<table background="{base}/table-bg.png"><tr><td background="{base}/td-bg.png">cell</td></tr></table>
<ul><li>item</li></ul>
<iframe src="{base}/frame.html"></iframe>
<object data="{base}/object.png" type="image/png">object fallback</object>
<embed src="{base}/embed.png" type="image/png">
<svg width="20" height="20"><image href="{base}/svg.png" width="20" height="20"/></svg>
<a href="{base}/link" rel="attachment">a link</a>
<script>document.write("SCRIPT-RAN")</script>
</body></html>"""


@needs_poppler
def test_hostile_mail_loads_nothing_but_cid_and_data(
    web_server: tuple[str, list[str]], tmp_path: Path
) -> None:
    base, seen = web_server
    host = base.removeprefix("http://")
    (tmp_path / "leak.css").write_text('body::after { content: "LOCAL-FILE-LOADED"; }')
    (tmp_path / "local.png").write_bytes(make_png(41, 17, (0, 0, 0)))
    logo = inline_image("logo@supplier.example", make_png(37, 23))
    msg = message(
        html=hostile_html(base, host, tmp_path), subject="Hostile invoice 4711", attachments=(logo,)
    )

    pdf = render.render_message(msg)

    assert seen == []
    assert pdf.startswith(b"%PDF-")
    text = pdf_text(pdf, tmp_path)
    assert "Invoice total 123.45 EUR" in text
    assert "Hostile invoice 4711" in text  # the header block
    assert "billing@supplier.example" in text
    for leak in ("REMOTE-CSS-LOADED", "LOCAL-FILE-LOADED", "SCRIPT-RAN", "root:"):
        assert leak not in text
    images = pdf_images(pdf, tmp_path)
    assert (37, 23) in images  # the cid: part
    assert (29, 19) in images  # the data: URL
    assert (41, 17) not in images  # a local file
    assert (13, 11) not in images  # anything remote


def test_the_in_process_primitive_is_just_as_closed(
    web_server: tuple[str, list[str]], tmp_path: Path
) -> None:
    base, seen = web_server
    html = hostile_html(base, base.removeprefix("http://"), tmp_path)
    pdf = render.render_html_to_pdf(html, {"logo@supplier.example": ("image/png", make_png(37, 23))})
    assert pdf.startswith(b"%PDF-")
    assert seen == []


def test_the_fetcher_alone_is_a_barrier(web_server: tuple[str, list[str]], tmp_path: Path) -> None:
    # Without the clean-up of the markup, weasyprint still loads nothing.
    base, seen = web_server
    html = hostile_html(base, base.removeprefix("http://"), tmp_path)
    fetcher = render.safe_url_fetcher({})
    weasyprint.HTML(string=html, base_url=base, url_fetcher=fetcher).write_pdf(presentational_hints=True)
    assert seen == []


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x.png",
        "https://example.com/x.css",
        "HTTP://EXAMPLE.COM/x.png",
        "file:///etc/passwd",
        "FILE:///etc/passwd",
        "ftp://example.com/x",
        "//example.com/x.png",
        "relative/x.png",
        "/etc/passwd",
        "javascript:alert(1)",
        "cid:missing@example",
    ],
)
def test_fetcher_refuses(url: str) -> None:
    fetcher = render.safe_url_fetcher({"logo@x": ("image/png", b"png")})
    with pytest.raises(ValueError):
        fetcher(url)


def test_fetcher_serves_cid_and_data() -> None:
    fetcher = render.safe_url_fetcher({"<Logo@Example>": ("IMAGE/PNG", b"\x89PNG")})
    for url in ("cid:Logo@Example", "cid:Logo%40Example", "cid:logo@example"):
        response = fetcher(url)
        assert response.read() == b"\x89PNG"
        assert response.content_type == "image/png"
    response = fetcher("data:text/css;charset=utf-8;base64," + base64.b64encode(b"p{}").decode())
    assert (response.read(), response.content_type, response.charset) == (b"p{}", "text/css", "utf-8")
    assert fetcher("data:,a%20b").read() == b"a b"


# -- the header block and text bodies -------------------------------------


@needs_poppler
def test_header_block_is_text_not_markup(tmp_path: Path) -> None:
    subject = "<script>alert(1)</script> <b>Rechnung</b> & Co"
    pdf = render.render_message(message(html="<p>body</p>", subject=subject))
    text = pdf_text(pdf, tmp_path)
    assert "<script>alert(1)</script> <b>Rechnung</b> & Co" in text
    assert "Billing Dept <billing@supplier.example>" in text
    assert "invoices@home.example" in text
    assert "14 May 2024" in text


def _has_cjk_font() -> bool:
    found = subprocess.run(["fc-list", ":lang=zh"], capture_output=True, text=True, check=False)
    return bool(found.stdout.strip())


@needs_poppler
def test_plain_text_mail_with_umlauts_and_long_lines(tmp_path: Path) -> None:
    cjk = "請求書 合計 ¥12,000" if _has_cjk_font() else ""
    long_word = "x" * 400
    text = f"Sehr geehrte Damen und Herren,\n\nGrüße aus Köln – Übergröße, Maß: 5 €.\n{cjk}\n{long_word}\n"
    pdf = render.render_message(message(text=text, subject="Rechnung für März"))
    out = pdf_text(pdf, tmp_path)
    assert "Grüße aus Köln – Übergröße, Maß: 5 €." in out
    assert "Rechnung für März" in out
    if cjk:
        assert "請求書" in out
    # The long line is wrapped, not cut off: every x is there.
    assert out.count("x") >= 400
    assert max(len(line) for line in out.splitlines()) < 200


@needs_poppler
def test_text_is_escaped_and_kept_as_written(tmp_path: Path) -> None:
    text = "<b>not bold</b> &amp; <script>x</script>\n    indented line"
    out = pdf_text(render.render_message(message(text=text)), tmp_path)
    assert "<b>not bold</b> &amp; <script>x</script>" in out
    assert "indented line" in out


@needs_poppler
def test_deeply_nested_mail_renders(tmp_path: Path) -> None:
    html = "<table><tr><td>" * 60 + "<div>" * 800 + "deep text" + "</div>" * 800 + "</td></tr></table>" * 60
    assert "deep text" in pdf_text(render.render_message(message(html=html)), tmp_path)


def test_empty_mail_still_renders() -> None:
    assert render.render_message(message(text="", html=None)).startswith(b"%PDF-")


def test_base_css_replaces_the_default() -> None:
    pdf = render.render_html_to_pdf("<p>x</p>", base_css="@page { size: A6 }")
    box = pypdf.PdfReader(io.BytesIO(pdf)).pages[0].mediabox
    assert (round(float(box.width)), round(float(box.height))) == (298, 420)  # A6 in pt


@needs_poppler
def test_a_wide_mail_is_shrunk_to_fit_the_page(tmp_path: Path) -> None:
    html = '<table width="1100"><tr><td width="1000">left</td><td>RIGHTEDGE</td></tr></table>'
    pdf = render.render_message(message(html=html))
    box = pypdf.PdfReader(io.BytesIO(pdf)).pages[0].mediabox
    assert (round(float(box.width)), round(float(box.height))) == (595, 842)  # still A4
    assert "RIGHTEDGE" in pdf_text(pdf, tmp_path)  # pdftotext drops what is off the page


# -- 2. and 3. limits -------------------------------------------------------


def test_time_limit_stops_a_slow_mail_and_the_next_mail_renders() -> None:
    cells = "<td>x</td>" * 20
    huge = "<table>" + f"<tr>{cells}</tr>" * 10_000 + "</table>"  # 200,000 cells
    started = time.monotonic()
    with pytest.raises(RenderLimitError, match="time limit of 3 s"):
        render.render_message(message(html=huge), timeout=3)
    assert time.monotonic() - started < 10  # a new worker may start first
    assert render.render_message(message(html="<p>next mail</p>")).startswith(b"%PDF-")


def test_memory_limit_stops_a_memory_hungry_mail() -> None:
    # 8000 x 8000 pixels compress to a few hundred kB; decoded they need 192 MB and more.
    bomb = inline_image("bomb@x", make_png(8000, 8000))
    msg = message(html="<p>big</p><img src='cid:bomb@x'>", attachments=(bomb,))
    with pytest.raises(RenderError, match="memory limit of 256 MB"):
        render.render_message(msg, memory_mb=256, timeout=30)
    assert render.render_message(message(html="<p>next mail</p>")).startswith(b"%PDF-")


def test_warm_up_starts_a_worker_ahead() -> None:
    render.warm_up()
    started = time.monotonic()
    assert render.render_message(message(html="<p>warm</p>")).startswith(b"%PDF-")
    assert time.monotonic() - started < 5


def test_a_memory_limit_below_the_renderers_own_size_is_named() -> None:
    with pytest.raises(RenderError, match="memory limit of 64 MB is too small"):
        render.render_message(message(html="<p>x</p>"), memory_mb=64)


def test_several_threads_at_once() -> None:
    results: dict[int, bytes | BaseException] = {}

    def work(n: int) -> None:
        try:
            results[n] = render.render_message(message(html=f"<p>mail {n}</p>"))
        except BaseException as exc:  # reported below
            results[n] = exc

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(isinstance(r, bytes) and r.startswith(b"%PDF-") for r in results.values()), results
    assert len(results) == 6


# -- 5. the corpus ------------------------------------------------------------


def _corpus_html_mails() -> list[str]:
    features = CORPUS / "emails_FEATURES.tsv"
    if not features.exists():
        return []
    names = []
    for line in features.read_text().splitlines()[1:]:
        path, _, tags = line.partition("\t")
        if {"html-only", "cid-inline-image"} & set(tags.split(";")):
            names.append(path)
    return names


@pytest.mark.corpus
@pytest.mark.parametrize("name", _corpus_html_mails())
def test_corpus_html_mails_render(name: str) -> None:
    try:
        msg = mime.parse((CORPUS / name).read_bytes())
    except ParseError as exc:  # not a mail (an Outlook .msg): quarantined with this reason, never rendered
        assert str(exc) and "\n" not in str(exc)
        return
    try:
        pdf = render.render_message(msg, timeout=15)
    except RenderError as exc:
        reason = str(exc)
        assert reason and "\n" not in reason and len(reason) < 500, reason
        if not isinstance(exc, RenderLimitError):  # a very busy machine may hit the limit
            pytest.fail(f"{name}: {reason}")  # none of these fails today
    else:
        assert pdf.startswith(b"%PDF-")


@pytest.mark.corpus
@needs_poppler
@pytest.mark.parametrize(
    "name", ["emails/jhillyerd-enmime/mail/html-only-inline.raw", "emails/php-mime-mail-parser/m0129"]
)
def test_corpus_cid_images_are_in_the_pdf(name: str, tmp_path: Path) -> None:
    path = CORPUS / name
    assert path.exists(), f"the corpus file {path} is missing"
    pdf = render.render_message(mime.parse(path.read_bytes()))
    assert pdf_images(pdf, tmp_path)
