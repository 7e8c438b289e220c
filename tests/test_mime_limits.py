"""Bounds on one message (nesting depth, decoded size) hold through the pipeline, with the reason;
archives are never unpacked and never become documents."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import lzma
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import PDF_BYTES, make_mail, unique_pdf
from gateway import mime
from gateway.config import parse_settings
from gateway.models import Envelope
from gateway.pipeline import Pipeline
from gateway.spool import Spool
from gateway.store import Store

BODY_PDF = PDF_BYTES + b"% the rendered body\n"


@pytest.fixture
def run(tmp_path: Path) -> Callable[..., tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Process one raw mail with the given limits; returns (message row, its documents)."""
    def go(raw: bytes, *, unmatched: str = "import", **limits: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        data = tmp_path / f"data-{len(list(tmp_path.iterdir()))}"
        settings = parse_settings({"data_dir": str(data), "exports": [], "trust": {"check_senders": False},
                                   "unmatched": {"smtp": unmatched},
                                   "limits": {"worker_processes": False, **limits}})
        store = Store(settings.data_dir)
        pipe = Pipeline(settings, store, renderer=lambda parsed: BODY_PDF)
        mid = Spool(store).accept(raw, Envelope(source="smtp", mail_from="a@b.example", rcpt_tos=("invoices@localhost",)))
        pipe.run_pending()
        row = store.message(mid)
        assert row is not None
        return dict(row), [dict(d) for d in store.documents_of(mid)]
    return go


def _b64(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


def pdf_part(name: str, data: bytes) -> bytes:
    return (f"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
            f"Content-Disposition: attachment; filename={name}\r\n\r\n").encode() + _b64(data)


def multipart(boundary: str, parts: list[bytes]) -> bytes:
    return (f"Content-Type: multipart/mixed; boundary={boundary}\r\n\r\n".encode()
            + b"".join(f"--{boundary}\r\n".encode() + p + b"\r\n" for p in parts) + f"--{boundary}--\r\n".encode())


def mail(body: bytes) -> bytes:
    return b"From: billing@acme.example\r\nTo: invoices@localhost\r\nSubject: Invoice\r\nMIME-Version: 1.0\r\n" + body


def nested(depth: int, innermost: bytes) -> bytes:
    """multipart/mixed parts nested ``depth`` levels deep around ``innermost``."""
    part = innermost
    for level in range(depth):
        part = multipart(f"L{level}", [b"Content-Type: text/plain\r\n\r\nlevel", part])
    return part


def test_mime_nesting_deeper_than_the_bound_is_not_read_and_the_reason_says_so(run: Callable[..., Any]) -> None:
    shallow, deep = unique_pdf("shallow"), unique_pdf("deep")
    raw = mail(multipart("TOP", [pdf_part("shallow.pdf", shallow), nested(12, pdf_part("deep.pdf", deep))]))
    row, docs = run(raw, max_depth=8)
    assert row["status"] == "imported"
    assert [d["filename"] for d in docs] == ["shallow.pdf"]  # the deep one was never read
    assert "[limits: MIME nesting deeper than 8; deeper parts were not read]" in row["reason"]
    # within the bound the same mail imports both
    row, docs = run(raw, max_depth=20)
    assert sorted(d["filename"] for d in docs) == ["deep.pdf", "shallow.pdf"] and "limits" not in row["reason"]


def test_hostile_nesting_at_the_default_bound_is_processed(run: Callable[..., Any]) -> None:
    raw = mail(nested(300, pdf_part("deep.pdf", unique_pdf("very-deep"))))  # far past the default of 20
    parsed = mime.parse(raw)
    assert parsed.attachments == () and "MIME nesting deeper than 20; deeper parts were not read" in parsed.defects
    row, docs = run(raw, unmatched="attachments")
    assert row["status"] == "unmatched" and docs == []
    assert "MIME nesting deeper than 20" in row["reason"]


def test_decoded_size_beyond_the_bound_is_not_read_and_the_reason_says_so(run: Callable[..., Any]) -> None:
    big_a = unique_pdf("a") + b"%" + b"a" * 150_000 + b"\n"
    big_b = unique_pdf("b") + b"%" + b"b" * 150_000 + b"\n"
    raw = mail(multipart("TOP", [b"Content-Type: text/plain\r\n\r\nTwo invoices.",
                                 pdf_part("a.pdf", big_a), pdf_part("b.pdf", big_b)]))
    parsed = mime.parse(raw, max_decoded=200_000)
    assert [a.filename for a in parsed.attachments] == ["a.pdf"]
    assert sum(len(a.data) for a in parsed.attachments) <= 200_000
    row, docs = run(raw, max_decoded="200KB")
    assert row["status"] == "imported"
    assert [(d["filename"], d["size"]) for d in docs] == [("a.pdf", len(big_a))]
    assert "[limits: more than 204800 decoded bytes; the rest was not read]" in row["reason"]
    # the raw mail is kept whole: nothing is lost, a person can raise the limit and reprocess
    assert row["size"] >= len(big_a) + len(big_b)
    row, docs = run(raw)
    assert len(docs) == 2 and "limits" not in row["reason"]


def test_uuencoded_files_count_against_the_decoded_size(run: Callable[..., Any]) -> None:
    import binascii

    data = unique_pdf("uu") + b"%" + b"u" * 60_000 + b"\n"
    lines = b"".join(binascii.b2a_uu(data[i:i + 45]) for i in range(0, len(data), 45))
    text = b"See attached.\r\nbegin 644 old.pdf\r\n" + lines.replace(b"\n", b"\r\n") + b"`\r\nend\r\n"
    raw = mail(b"Content-Type: text/plain\r\n\r\n" + text)
    assert [a.filename for a in mime.parse(raw).attachments] == ["old.pdf"]
    parsed = mime.parse(raw, max_decoded=len(text) + 1000)  # the text fits, the decoded file does not
    assert parsed.attachments == () and any(d.startswith("more than") for d in parsed.defects)


# -- archives -------------------------------------------------------------------------------


def zip_of_pdf(pdf: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("invoice.pdf", pdf)
    return out.getvalue()


def targz_of_pdf(pdf: bytes) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as t:
        info = tarfile.TarInfo("invoice.pdf")
        info.size = len(pdf)
        t.addfile(info, io.BytesIO(pdf))
    return out.getvalue()


def sevenzip_like(pdf: bytes) -> bytes:
    # no 7-Zip tool on the test machine: the 7z signature header, then the LZMA-compressed member
    return b"7z\xbc\xaf\x27\x1c\x00\x04" + b"\x00" * 24 + lzma.compress(pdf, format=lzma.FORMAT_ALONE)


def rar_like(pdf: bytes) -> bytes:
    # no RAR tool either: the RAR 5 signature and a file header naming the member, then compressed data
    return b"Rar!\x1a\x07\x01\x00" + b"\x33\x92\xb5\xe5\x0a\x01\x05\x06\x00\x05\x01\x01\x80\x80\x00" \
        + b"invoice.pdf" + zlib.compress(pdf)


ARCHIVES = [
    ("invoices.zip", "application/zip", zip_of_pdf),
    ("invoices.tar.gz", "application/gzip", targz_of_pdf),
    ("invoices.7z", "application/x-7z-compressed", sevenzip_like),
    ("invoices.rar", "application/vnd.rar", rar_like),
]


@pytest.mark.parametrize(("name", "ctype", "pack"), ARCHIVES, ids=[a[0] for a in ARCHIVES])
def test_archives_are_never_unpacked_and_never_documents(run: Callable[..., Any], name: str, ctype: str,
                                                         pack: Callable[[bytes], bytes]) -> None:
    pdf = unique_pdf(f"inside {name}")
    archive = pack(pdf)
    assert pdf not in archive  # compressed: the PDF is only there if something unpacks it
    raw = make_mail(subject="Invoice 5 attached", attachments=[(name, archive, ctype)]).as_bytes()

    [att] = mime.parse(raw).attachments
    assert att.kind == "other" and att.data == archive  # kept as the bytes that came, not unpacked

    row, docs = run(raw, unmatched="attachments")
    assert row["status"] == "unmatched" and docs == []
    assert "no document attachment found (1 other part(s))" in row["reason"]
    # the import policy renders the mail body; the archive still is no document
    row, docs = run(raw)
    assert row["status"] == "imported"
    assert [(d["origin"], d["kind"]) for d in docs] == [("body", "pdf")]
    assert docs[0]["sha256"] == hashlib.sha256(BODY_PDF).hexdigest()  # the rendered body, not the member
    assert json.loads(row["decision"])["imported"] == [docs[0]["filename"]]
