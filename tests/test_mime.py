"""Attachments become documents however the mail labels them."""

from __future__ import annotations

import base64
import binascii
from email.message import EmailMessage

from conftest import make_mail, unique_pdf
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
