"""Attachments become documents however the mail labels them."""

from __future__ import annotations

import base64
import binascii
import gzip
import io
import tarfile
import zipfile
from email.message import EmailMessage
from pathlib import Path

from conftest import Gateway, make_mail, unique_pdf, wait_for
from gateway import mime


def _raw(parts: list[bytes], subject: str = "x") -> bytes:
    head = (f"From: a@b.example\r\nTo: invoices@localhost\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=BB\r\n\r\n").encode()
    return head + b"".join(b"--BB\r\n" + p + b"\r\n" for p in parts) + b"--BB--\r\n"


def _b64(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


def test_pdf_recognised_by_its_bytes_not_its_label() -> None:
    pdf1, pdf2, pdf3 = unique_pdf("1"), unique_pdf("2"), unique_pdf("3")
    raw = _raw([
        b"Content-Type: text/plain\r\n\r\nhello",
        b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
        b"Content-Disposition: attachment; filename=scan.bin\r\n\r\n" + _b64(pdf1),
        b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n" + _b64(pdf2),
        b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
        b"Content-Disposition: inline\r\n\r\n" + _b64(pdf3),
    ])
    parsed = mime.parse(raw)
    pdfs = [a for a in parsed.attachments if a.kind == "pdf"]
    assert [a.data for a in pdfs] == [pdf1, pdf2, pdf3]
    assert [a.filename for a in pdfs] == ["scan.bin.pdf", "attachment-2.pdf", "attachment-3.pdf"]
    assert pdfs[2].inline


def test_attachments_of_forwarded_mails_are_found() -> None:
    inner = make_mail(subject="Invoice 9", attachments=[("inner.pdf", unique_pdf("inner"), "application/pdf")])
    outer = EmailMessage()
    outer["From"] = "me@home.example"
    outer["To"] = "invoices@localhost"
    outer["Subject"] = "Fwd: Invoice 9"
    outer.set_content("forwarding")
    outer.add_attachment(inner)
    parsed = mime.parse(outer.as_bytes())
    pdfs = [a for a in parsed.attachments if a.kind == "pdf"]
    assert len(pdfs) == 1 and pdfs[0].forwarded and pdfs[0].filename == "inner.pdf"
    assert "Please find the invoice attached." in parsed.text  # the forwarded text is there for rules


def test_rfc2231_and_rfc2047_names_are_decoded() -> None:
    raw = _raw([
        b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
        b"Content-Disposition: attachment; filename*=iso-8859-1''Rechnung%20M%E4rz.pdf\r\n\r\n" + _b64(unique_pdf("a")),
        b"Content-Type: application/pdf; name=\"=?utf-8?B?RmFrdHVyYSBOwrogMS5wZGY=?=\"\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + _b64(unique_pdf("b")),
    ])
    names = [a.filename for a in mime.parse(raw).attachments]
    assert names == ["Rechnung März.pdf", "Faktura Nº 1.pdf"]


def test_uuencoded_attachment_in_a_text_body() -> None:
    pdf = unique_pdf("uu")
    lines = [b"begin 644 old-invoice.pdf"]
    for i in range(0, len(pdf), 45):
        lines.append(binascii.b2a_uu(pdf[i:i + 45]).rstrip(b"\n"))
    lines += [b"`", b"end"]
    raw = b"From: a@b.example\r\nSubject: old\r\n\r\nSee attached.\r\n\r\n" + b"\r\n".join(lines) + b"\r\n"
    parsed = mime.parse(raw)
    assert [(a.filename, a.data) for a in parsed.attachments] == [("old-invoice.pdf", pdf)]


def test_xml_attachment_is_a_document_candidate() -> None:
    xml = b"\xef\xbb\xbf<?xml version='1.0'?><Invoice xmlns='urn:oasis:names:specification:ubl:schema:xsd:Invoice-2'/>"
    raw = _raw([b"Content-Type: text/xml\r\nContent-Disposition: attachment; filename=x.xml\r\n\r\n" + xml])
    assert [a.kind for a in mime.parse(raw).attachments] == ["xml"]


def test_broken_mail_never_raises_and_reports_defects() -> None:
    raw = b"From: a@b\r\nContent-Type: multipart/mixed\r\n\r\nno boundary at all\r\n"
    parsed = mime.parse(raw)
    assert parsed.defects and "no boundary" in parsed.text


def test_content_hash_ignores_headers_and_line_endings() -> None:
    a = b"Received: from x\r\nSubject: s\r\n\r\nbody line\r\nsecond\r\n"
    b = b"Subject: s\nX-Added: by imap\n\nbody line\nsecond\n"
    assert mime.content_hash(a) == mime.content_hash(b)


CII = (Path(__file__).parent / "data" / "einvoice" / "cii-xrechnung.xml").read_text(encoding="utf-8")


def test_utf16_xml_is_xml_with_or_without_byte_order_mark() -> None:
    text = CII.replace('encoding="UTF-8"', 'encoding="UTF-16"')
    for data in (text.encode("utf-16"), text.encode("utf-16-be"), text.encode("utf-16-le"),
                 "\ufeff".encode("utf-16-be") + text.encode("utf-16-be")):
        raw = _raw([b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
                    b"Content-Disposition: attachment; filename=rechnung\r\n\r\n" + _b64(data)])
        atts = mime.parse(raw).attachments
        assert [(a.kind, a.filename, a.data) for a in atts] == [("xml", "rechnung.xml", data)]
    # a UTF-16 text that is not XML stays other
    assert mime.detect_kind("hello, world".encode("utf-16")) == "other"


def stored_zip(name: str, data: bytes) -> bytes:
    """A zip archive holding ``data`` uncompressed, as the first member."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr(name, data)
    return out.getvalue()


def stored_tar(name: str, data: bytes) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as t:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_archives_holding_a_pdf_are_not_pdfs() -> None:
    pdf = unique_pdf("in-archive")
    archives = {
        "inv.zip": stored_zip("inv.pdf", pdf),
        "inv.tar": stored_tar("inv.pdf", pdf),
        "inv.pdf.gz": gzip.compress(pdf, compresslevel=0),
        "inv.rar": b"Rar!\x1a\x07\x01\x00" + b"\x00" * 40 + pdf,
        "inv.7z": b"7z\xbc\xaf\x27\x1c\x00\x04" + b"\x00" * 24 + pdf,
    }
    for name, data in archives.items():
        assert b"%PDF-" in data[:1024], name  # the trap: the PDF header is in the first KB
        assert mime.detect_kind(data, "application/pdf", "inv.pdf") == "other", name
    raw = _raw([b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
                b"Content-Disposition: attachment; filename=" + name.encode() + b"\r\n\r\n" + _b64(data)
                for name, data in archives.items()])
    atts = mime.parse(raw).attachments
    assert [(a.filename, a.kind) for a in atts] == [(name, "other") for name in archives]
    # junk before the header is still allowed in a real PDF
    assert mime.detect_kind(b"\r\n\x00junk from a mail program\n" + pdf) == "pdf"


def test_an_archive_never_becomes_a_document(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    gw: Gateway = gateway_factory(unmatched={"smtp": "attachments"})
    pdf = unique_pdf("zipped")
    gw.send(make_mail(subject="Invoice in a zip", attachments=[("inv.zip", stored_zip("inv.pdf", pdf), "application/zip")]))
    gw.send(make_mail(subject="Invoice", attachments=[("inv.pdf", pdf, "application/pdf")]))
    messages = wait_for(lambda: (items := gw.api("/api/messages").json()["items"]) and len(items) == 2
                        and all(m["status"] != "received" for m in items) and items, timeout=20)
    by_subject = {m["subject"]: m for m in messages}
    assert by_subject["Invoice in a zip"]["status"] == "unmatched"
    assert by_subject["Invoice"]["status"] == "imported"
    docs = gw.api("/api/documents").json()["items"]
    assert [(d["filename"], d["kind"]) for d in docs] == [("inv.pdf", "pdf")]
    files = wait_for(gw.exported_files, timeout=20)
    assert [f.name for f in files] == ["inv.pdf"] and files[0].read_bytes() == pdf
