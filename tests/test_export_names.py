"""Hostile attachment names end as safe, distinct files inside the export folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import Gateway, unique_pdf, wait_for
from gateway.naming import render_pattern, sanitize_filename, sanitize_part

HOSTILE = [
    "../../etc/passwd",
    "..\\..\\windows\\system32\\evil.pdf",
    "CON",
    "con.pdf",
    "LPT1.pdf",
    ".bashrc",
    "x" * 1000 + ".pdf",
    "line\nbreak\r\nname.pdf",
    "tab\tand\x00nul\x07bell.pdf",
    'what<>:"|?*.pdf',
    "trailing dots... ",
    "/absolute/path.pdf",
    "Rechnung März – Müller & Söhne.pdf",
    "same.pdf",
    "same.pdf",
]


def _mail_with_names(names: list[str]) -> bytes:
    """A raw mail whose attachments carry the names as RFC 2231 parameters (any byte allowed)."""
    import base64
    from urllib.parse import quote

    parts = [b"From: billing@acme.example\r\nTo: invoices@localhost\r\nSubject: hostile names\r\n"
             b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XYZ\r\n\r\n"
             b"--XYZ\r\nContent-Type: text/plain\r\n\r\nsee attachments\r\n"]
    for i, name in enumerate(names):
        encoded = quote(name, safe="").encode()
        parts.append(b"--XYZ\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
                     b"Content-Disposition: attachment; filename*=utf-8''" + encoded + b"\r\n\r\n"
                     + base64.encodebytes(unique_pdf(f"hostile-{i}")).replace(b"\n", b"\r\n"))
    parts.append(b"--XYZ--\r\n")
    return b"".join(parts)


def test_hostile_names_stay_inside_the_export_folder_and_distinct(gateway: Gateway) -> None:
    gateway.send(_mail_with_names(HOSTILE))
    files = wait_for(lambda: len(gateway.exported_files()) == len(HOSTILE) and gateway.exported_files(), timeout=15)
    root = gateway.exports.resolve()
    names = set()
    for f in files:
        assert root in f.resolve().parents
        rel = f.relative_to(root)
        assert len(rel.parts) == 3  # {received:%Y/%m}/{stem}: nothing added a level
        name = rel.parts[-1]
        names.add(name)
        assert not name.startswith(".")
        assert not any(c in name for c in '<>:"/\\|?*\n\r\t\x00\x07')
        assert len(name.encode()) <= 255
        assert name.split(".")[0].upper() not in ("CON", "LPT1")
    assert len(names) == len(HOSTILE)  # two different files named same.pdf both arrive
    contents = sorted(f.read_bytes() for f in files)
    assert contents == sorted(unique_pdf(f"hostile-{i}") for i in range(len(HOSTILE)))
    assert "Rechnung März – Müller & Söhne.pdf" in names  # people read these names: letters stay
    assert {"same.pdf", "same (2).pdf"} <= names


@pytest.mark.parametrize("name", HOSTILE)
def test_sanitize_filename_never_escapes(name: str, tmp_path: Path) -> None:
    safe = sanitize_filename(name, ext="pdf")
    assert safe and safe not in (".", "..")
    assert (tmp_path / safe).resolve().parent == tmp_path.resolve()
    assert safe.endswith(".pdf")


def test_pattern_values_never_add_levels() -> None:
    values = {"company": "../../etc", "invoice_number": "a/b\\c", "date": None, "received": None}
    path = render_pattern("{company}/{invoice_number}", values, "pdf")
    assert path == "_.._etc/a_b_c.pdf"
    assert render_pattern("{date:%Y}/{company}", {"company": None}, "pdf") == "unknown/unknown.pdf"


def test_sanitize_part_keeps_what_people_read() -> None:
    assert sanitize_part("Telekom Deutschland GmbH") == "Telekom Deutschland GmbH"
    assert sanitize_part("Ærø Café 東京") == "Ærø Café 東京"
    assert sanitize_part("  ..hidden. ") == "hidden"
    assert sanitize_part("") == "unknown"


INVISIBLE = ["\u202e", "\u202a", "\u202b", "\u202c", "\u202d", "\u2066", "\u2067", "\u2068", "\u2069",
             "\u200e", "\u200f", "\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u061c", "\u00ad"]


@pytest.mark.parametrize("mark", INVISIBLE)
def test_format_characters_are_removed(mark: str) -> None:
    assert sanitize_part(f"invoice{mark}fdp.exe") == "invoicefdp.exe"
    assert sanitize_filename(f"in{mark}voice.pdf", ext="pdf") == "invoice.pdf"
    assert render_pattern("{company}", {"company": f"Acme{mark} GmbH"}, "pdf") == "Acme GmbH.pdf"


def test_bidi_override_cannot_disguise_an_extension() -> None:
    # shown as "invoiceexe.pdf" with the override; the bytes are a PDF, so .pdf is added
    assert sanitize_filename("invoice\u202efdp.exe", ext="pdf") == "invoicefdp.exe.pdf"


@pytest.mark.parametrize("name", ["COM\u00b9", "com\u00b2.pdf", "LPT\u00b3", "lpt\u00b9.txt", "CONIN$", "conout$.pdf",
                                  "COM0", "nul .pdf", "CON"])
def test_windows_reserved_names_get_a_prefix(name: str) -> None:
    assert sanitize_part(name) == "_" + name
    assert render_pattern("{company}", {"company": name}, "").startswith("_")


def test_names_like_reserved_ones_stay() -> None:
    for name in ("COM10.pdf", "CONSOLE.pdf", "lpt.pdf", "conin.pdf", "COM\u2074.pdf", "company.pdf"):
        assert sanitize_part(name) == name


def test_invisible_and_reserved_names_export_as_plain_names(gateway: Gateway) -> None:
    names = ["invoice\u202efdp.exe", "bill\u2066ing\u2069\u200e.pdf", "zero\u200bwidth\u200d.pdf", "COM\u00b9.pdf",
             "CONIN$.pdf"]
    gateway.send(_mail_with_names(names))
    files = wait_for(lambda: len(gateway.exported_files()) == len(names) and gateway.exported_files(), timeout=15)
    assert sorted(f.name for f in files) == sorted(
        ["invoicefdp.exe.pdf", "billing.pdf", "zerowidth.pdf", "_COM\u00b9.pdf", "_CONIN$.pdf"])
