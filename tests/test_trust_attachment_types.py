"""A rule's attachments globs import documents (PDF, XML), other types only when a glob names
them, and never programs (issue 14.10)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import Gateway, make_mail, unique_pdf, wait_for
from gateway.models import Attachment
from gateway.rules.attachments import choose, executable, names_type
from test_trust_hold import settled

RULES = """\
name: Everything
when: {subject: "All *"}
attachments: ["*"]
---
name: Word files
when: {subject: "Word *"}
attachments: ["*.docx"]
"""
PE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\x00" * 200
DOCX = b"PK\x03\x04\x14\x00\x06\x00" + b"word/document.xml" + b"\x00" * 100


def test_star_imports_the_pdf_and_says_why_the_exe_was_skipped(gateway_factory: Callable[..., Gateway],
                                                                workdir: Path) -> None:
    (workdir / "rules" / "types.yaml").write_text(RULES)
    gw = gateway_factory()
    gw.send(make_mail(subject="All 1", attachments=[
        ("invoice.pdf", unique_pdf("star"), "application/pdf"),
        ("invoice.exe", PE, "application/octet-stream"),
        ("terms.docx", DOCX, "application/vnd.openxmlformats-officedocument.wordprocessingml.document")]))
    gw.send(make_mail(subject="Word 2", attachments=[
        ("offer.docx", DOCX, "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
        ("setup.docx", PE, "application/octet-stream")]))
    star, word = settled(gw, 2)

    assert star["status"] == "imported" and [d["filename"] for d in gw.store.documents_of(star["id"])] == ["invoice.pdf"]
    assert "invoice.exe: not imported: a Windows program (MZ); executables are never imported" in star["reason"]
    assert 'terms.docx: not imported: not a PDF or XML file, and attachments: * does not name its type ' \
           '(write "*.docx" to import it)' in star["reason"]

    assert word["status"] == "imported"
    assert [d["filename"] for d in gw.store.documents_of(word["id"])] == ["offer.docx"]
    assert "setup.docx: not imported: a Windows program (MZ)" in word["reason"]
    files = wait_for(lambda: len(gw.exported_files()) == 2 and gw.exported_files(), timeout=15)
    assert sorted(f.name for f in files) == ["invoice.pdf", "offer.docx"]
    assert sorted(f.read_bytes() for f in files) == sorted([unique_pdf("star"), DOCX])


def att(name: str, data: bytes, kind: str = "other") -> Attachment:
    return Attachment(filename=name, original_filename=name, content_type="application/octet-stream", data=data,
                      kind=kind)


@pytest.mark.parametrize(("name", "data", "what"), [
    ("a.exe", b"hello", "a program or script (.exe)"),
    ("notes.txt", b"#!/bin/sh\nrm -rf ~\n", "a script (#!)"),
    ("tool", b"\x7fELF\x02\x01\x01", "a Linux program (ELF)"),
    ("app.dat", b"\xcf\xfa\xed\xfe\x07\x00", "a macOS program (Mach-O)"),
    ("run.ps1", b"Write-Host hi", "a program or script (.ps1)"),
    ("invoice.pdf.js", b"x", "a program or script (.js)"),
])
def test_executables_by_extension_or_magic(name: str, data: bytes, what: str) -> None:
    assert executable(att(name, data)) == what
    assert choose([att(name, data)], ["*", f"*.{name.rpartition('.')[2]}"])[0] == []


def test_which_globs_name_a_type() -> None:
    assert names_type("*.docx", "a.docx") and names_type("offer.DOCX", "offer.docx")
    for glob in ("*", "*.*", "*.doc?", "invoice*", "*.docx"):
        assert not names_type(glob, "a.odt")
    assert executable(att("a.docx", DOCX)) == "" and executable(att("i.pdf", unique_pdf("x"), "pdf")) == ""
    xml = att("e.xml", b"<?xml version='1.0'?><Invoice/>", "xml")
    assert choose([xml, att("logo.png", b"\x89PNG")], ["*"])[0] == [xml]
