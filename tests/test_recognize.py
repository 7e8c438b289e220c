"""The `recognize` policy: which PDFs look like invoices (by subject, file name or text), seen through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from conftest import make_mail, run_cli


def text_pdf(text: str) -> bytes:
    """A one-page PDF whose text layer says ``text`` (Helvetica, ASCII)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for n, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def _import(tmp_path: Path, mails: dict[str, tuple[str, str, bytes]]) -> dict[str, dict[str, str]]:
    """Import mails (name -> subject, file name, PDF) with the recognize policy; name -> {status, reason}."""
    (tmp_path / "rules").mkdir()
    cfg = {"data_dir": str(tmp_path / "data"), "rules_dir": str(tmp_path / "rules"),
           "smtp": {"enabled": False}, "web": {"enabled": False}, "unmatched": {"import": "recognize"}}
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(cfg))
    files = []
    for name, (subject, filename, pdf) in mails.items():
        path = tmp_path / f"{name}.eml"
        path.write_bytes(make_mail(sender="Office <office@firm.example>", subject=subject, body="Anbei.",
                                   attachments=[(filename, pdf, "application/pdf")]).as_bytes())
        files.append(str(path))
    r = run_cli("-q", "-c", str(config), "import", "--json", *files)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.decode().splitlines()]
    return {Path(row["file"]).stem: row for row in rows}


def test_recognize_imports_a_pdf_by_its_text_and_keeps_one_that_is_no_invoice(tmp_path: Path) -> None:
    got = _import(tmp_path, {
        "by-text": ("Dokument", "scan_0042.pdf", text_pdf("Rechnung Nr. 42, Gesamtbetrag 119,00 EUR")),
        "minutes": ("Dokument", "scan_0043.pdf", text_pdf("Protokoll der Versammlung der Belegschaft")),
        "terms": ("Our billing terms", "billing-terms.pdf", text_pdf("Terms and conditions of delivery")),
        "compound": ("Scan", "Kassenbeleg_0815.pdf", text_pdf("Danke fuer Ihren Einkauf")),
        "plural": ("Your bills for May", "may.pdf", text_pdf("Overview")),
    })
    assert got["by-text"]["status"] == "imported"
    assert "scan_0042.pdf: looks like an invoice (PDF text contains 'Rechnung')" in got["by-text"]["reason"]
    # "Belegschaft" is not "Beleg", and "billing" is not "bill"
    for name in ("minutes", "terms"):
        assert got[name]["status"] == "unmatched", got[name]
        assert "not recognised as an invoice" in got[name]["reason"]
    assert got["compound"]["status"] == "imported"
    assert "Kassenbeleg_0815.pdf: looks like an invoice (file name contains 'beleg')" in got["compound"]["reason"]
    assert got["plural"]["status"] == "imported" and "subject contains 'bills'" in got["plural"]["reason"]
