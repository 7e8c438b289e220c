"""OCR: scans and photos become PDF documents with a text layer, off the SMTP path, held from export until read."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import Gateway, make_mail, need, wait_for
from ocr_samples import (INVOICE_NUMBER, RECEIPT_NUMBER, holiday_photo, invoice_pdf, logo_png, receipt_photo,
                         scan_pdf)

from gateway.config import OcrConfig
from gateway.ocr import judge_image, needs_ocr, to_pdf

HAVE_OCR = all(shutil.which(p) for p in ("ocrmypdf", "tesseract", "pdftotext"))
OCR = {"enabled": True}  # conftest's gateways have it off; this one reads with all six languages
FAST = {"enabled": True, "languages": ["eng"]}  # one language reads fastest


def pdf_text(path: Path) -> str:
    return subprocess.run(["pdftotext", "-raw", str(path), "-"], capture_output=True, text=True,
                          check=True).stdout


def fold(text: str) -> str:
    """Without accents nor case: from run to run Tesseract reads the ü of a noisy 200 dpi scan as ü, ú or u,
    and the C of the photo's "Café" as C or c."""
    import unicodedata

    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)).casefold()


def documents(gw: Gateway) -> list[dict[str, Any]]:
    docs, _ = gw.store.list_documents(limit=100, archived=None)
    return sorted(docs, key=lambda d: d["id"])


def read(gw: Gateway, n: int, timeout: float = 60) -> list[dict[str, Any]]:
    """The documents once ``n`` of them are no longer waiting for OCR."""
    return list(wait_for(lambda: (lambda d: d if len(d) >= n and all(x["ocr"] not in ("pending", "running")
                                                                          for x in d) else None)(documents(gw)),
                         timeout=timeout))


# -- units ---------------------------------------------------------------------------------------


def test_small_images_are_never_documents_and_photos_are() -> None:
    cfg = OcrConfig()
    logo = judge_image(logo_png(), cfg)
    assert not logo.document and "logo" in logo.reason and "min_image_size" in logo.reason
    # large in bytes but narrow: a banner is not a page either
    banner = judge_image(holiday_photo(), cfg.model_copy(update={"min_image_size": 0, "min_image_pixels": 700}))
    assert not banner.document and "900×600" in banner.reason
    photo = judge_image(receipt_photo(), cfg)
    assert photo.document and photo.kind == "jpeg" and photo.reason == ""
    assert not judge_image(b"%PDF-1.7 not an image", cfg).document


def test_an_image_becomes_a_pdf_losslessly() -> None:
    photo = receipt_photo()
    pdf = to_pdf(photo, OcrConfig())
    assert pdf.startswith(b"%PDF") and photo in pdf  # img2pdf embeds the JPEG as it is


def test_a_heic_photo_becomes_a_pdf(tmp_path: Path) -> None:
    need(bool(shutil.which("heif-enc") and shutil.which("heif-convert")),
         "heif-enc and heif-convert are needed (libheif-examples, deps/debian-runtime.txt)")
    (tmp_path / "r.jpg").write_bytes(receipt_photo())
    subprocess.run(["heif-enc", str(tmp_path / "r.jpg"), "-o", str(tmp_path / "r.heic")], check=True,
                   capture_output=True)
    heic = (tmp_path / "r.heic").read_bytes()
    assert judge_image(heic, OcrConfig()).kind == "heic"
    pdf = to_pdf(heic, OcrConfig())
    assert pdf.startswith(b"%PDF") and b"/Image" in pdf


def test_a_scan_is_told_from_a_born_digital_pdf() -> None:
    cfg = OcrConfig()
    assert needs_ocr(scan_pdf(1, dpi=100), cfg) is not None
    assert needs_ocr(invoice_pdf(), cfg) is None
    from conftest import PDF_BYTES

    assert needs_ocr(PDF_BYTES, cfg) is None  # no page image: not a scan, whatever its text


def test_exports_of_a_document_wait_for_its_ocr(tmp_path: Path) -> None:
    import datetime as dt

    from gateway.store import Store

    store = Store(tmp_path)
    (mid,) = store.insert_messages([{"received": "2026-12-07T10:00:00", "source": "smtp", "raw_path": "x",
                                     "size": 1, "sha256": "m"}])
    doc = {"sha256": "a" * 64, "filename": "scan.pdf", "content_type": "application/pdf", "kind": "pdf",
           "size": 1, "path": "documents/aa/x.pdf", "ocr": "pending"}
    (doc_id,) = store.finish_message(mid, status="imported", reason="", fields={}, documents=[doc],
                                     targets_for=lambda _d: ["nas"])
    now = dt.datetime.now(dt.timezone.utc)
    assert store.claim_export("nas", now=now, require_approval=False) is None
    assert store.claim_ocr()["id"] == doc_id and store.claim_ocr() is None
    assert store.release_ocr_claims() == 1  # at start: a reading cut short by a stop or a crash waits again
    assert store.claim_ocr()["id"] == doc_id
    assert store.claim_export("nas", now=now, require_approval=False) is None  # running: still held
    assert store.finish_ocr(doc_id, state="done", sha256="b" * 64, path="documents/bb/y.pdf", size=2)
    row = store.claim_export("nas", now=now, require_approval=False)
    assert row is not None and row["document_id"] == doc_id
    # the scan as it came is still known: the same bytes again are this document
    assert store.known_documents(["a" * 64]) == {"a" * 64: doc_id}
    store.close()


def test_words_on_slanted_lines_stay_on_their_line() -> None:
    from gateway.fields.text import Segment, group_slanted

    # a photo turned 3 degrees: over the width of the page each line drifts more than its spacing
    words = [Segment(f"{name}{i}", 1, (x, y + 0.05 * x, x + 40, y + 10 + 0.05 * x))
             for name, y in (("a", 100.0), ("b", 114.0)) for i, x in enumerate(range(0, 432, 48))]
    lines = group_slanted(words, 842.0)
    assert [line.text for line in lines] == [" ".join(f"{n}{i}" for i in range(9)) for n in "ab"]
    assert len(lines[0].segments) == 1  # words close together are one run, as a born-digital PDF's


def test_fields_read_after_ocr_keep_a_rules_assign_and_the_senders_name_as_last_resort() -> None:
    from gateway.fields import columns, read_after_ocr

    stored = {"fields": {"seller": "Rule Supplier AG", "document_type": "receipt"},
              "field_sources": {"seller": {"source": "rule", "confidence": 1.0},
                                "document_type": {"source": "rule", "confidence": 1.0}}}
    read = read_after_ocr(invoice_pdf(), stored)  # the text layer as OCR would give it
    assert (read.seller, read.sources["seller"].source) == ("Rule Supplier AG", "rule")
    assert read.document_type == "receipt"
    assert (read.invoice_number, read.sources["invoice_number"].source) == (INVOICE_NUMBER, "ocr")
    assert read.grand_total == "196.23" and read.sources["grand_total"].page == 1
    assert columns(read, received="2026-12-08") == {"company": "Rule Supplier AG", "invoice_number": INVOICE_NUMBER,
                                                    "doc_date": "2026-12-07"}
    # the sender's display name stays the seller only when the page names none
    mail = {"fields": {"seller": "Anna"}, "field_sources": {"seller": {"source": "mail", "confidence": 0.3,
                                                                        "label": "sender"}}}
    assert read_after_ocr(invoice_pdf(), mail).seller == "Muster Bürobedarf GmbH"
    blank = read_after_ocr(b"%PDF-1.4 nothing", mail)
    assert (blank.seller, blank.sources["seller"].source) == ("Anna", "mail")
    assert columns(blank, received="2026-12-08") == {"company": None, "invoice_number": None,
                                                     "doc_date": "2026-12-08"}


def test_a_hot_folder_takes_images_only_when_they_are_whole(tmp_path: Path) -> None:
    from gateway.sources.folder import looks_complete, wanted

    assert all(wanted(n) for n in ("IMG_0042.JPG", "scan.jpeg", "a.png", "b.tif", "c.TIFF", "d.heic"))
    assert not wanted("notes.txt") and not wanted(".IMG_0042.jpg")
    photo = receipt_photo()
    (tmp_path / "half.jpg").write_bytes(photo[: len(photo) // 2])
    (tmp_path / "whole.jpg").write_bytes(photo)
    assert not looks_complete(tmp_path / "half.jpg", ".jpg") and looks_complete(tmp_path / "whole.jpg", ".jpg")
    logo = logo_png()
    (tmp_path / "half.png").write_bytes(logo[:-20])
    (tmp_path / "whole.png").write_bytes(logo)
    assert not looks_complete(tmp_path / "half.png", ".png") and looks_complete(tmp_path / "whole.png", ".png")


def test_a_linked_mailbox_downloads_photos_when_a_rule_imports_images() -> None:
    from gateway.rules.loader import load_rules_text
    from gateway.sources.imap.scan import MailMeta, Part, download_policy

    photo = MailMeta(uid=1, size=900_000, message_id="x", sender="me@example.com", subject="receipt",
                     parts=(Part("text/plain", None, None), Part("image/jpeg", "IMG_0042.JPG", "attachment")))
    assert not download_policy(None, "recognize").reason(photo)
    rules, problems = load_rules_text("name: phone\nwhen: {from: me@example.com}\nimport: images\n")
    assert rules is not None, problems
    assert download_policy(rules, "recognize").reason(photo)


def test_reading_is_bounded_in_pages_and_time() -> None:
    need(HAVE_OCR, "ocrmypdf and tesseract are needed (deps/debian-runtime.txt)")
    import io

    import psutil
    import pypdf

    from gateway.ocr import runner

    scan = scan_pdf(3, dpi=150)
    cfg = OcrConfig(languages=("eng",), max_pages=2, rotate_pages=False)
    result = runner.run(scan, cfg)
    assert result.data is not None and result.pages == 2, result.error
    texts = [p.extract_text() for p in pypdf.PdfReader(io.BytesIO(result.data)).pages]
    assert INVOICE_NUMBER in texts[0] and INVOICE_NUMBER in texts[1] and texts[2].strip() == ""
    before = {p.pid for p in psutil.Process().children(recursive=True)}  # e.g. the renderer of earlier tests
    started = time.monotonic()
    slow = runner.run(scan, cfg.model_copy(update={"timeout": 1}))
    assert slow.data is None and "ocr.timeout (1 s)" in slow.error
    assert time.monotonic() - started < 5
    left = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    assert not left, left  # the OCR's whole process group was killed
    small = runner.run(scan, cfg.model_copy(update={"memory": 60 * 1024**2}))
    assert small.data is None and "more memory than ocr.memory (60 MB)" in small.error, small.error


# -- through the gateway --------------------------------------------------------------------------


def test_a_scan_and_a_photo_in_a_hot_folder_become_pdfs_with_a_text_layer_and_their_fields(
        workdir: Path, gateway_factory: Callable[..., Gateway]) -> None:
    need(HAVE_OCR, "ocrmypdf, tesseract and pdftotext are needed (deps/debian-runtime.txt, debian-test.txt)")
    hot = workdir / "scans"
    gw = gateway_factory(ocr=OCR, folders=[{"name": "scanner", "path": str(hot)}], exports=[
        {"name": "nas", "type": "folder", "path": str(workdir / "exports"), "filename": "{company}_{invoice_number}"}])
    (hot / "scan-0815.pdf").write_bytes(scan_pdf(1))
    (hot / "receipt.jpg").write_bytes(receipt_photo())
    scan, photo = sorted(read(gw, 2), key=lambda d: d["filename"], reverse=True)
    assert (scan["filename"], photo["filename"]) == ("scan-0815.pdf", "receipt.pdf")
    for doc in (scan, photo):
        assert doc["ocr"] == "done" and doc["content_type"] == "application/pdf", doc
        assert doc["ocr_source_sha256"] and doc["ocr_source_sha256"] != doc["sha256"]
    assert INVOICE_NUMBER in pdf_text(gw.settings.data_dir / scan["path"])
    assert RECEIPT_NUMBER in pdf_text(gw.settings.data_dir / photo["path"])
    shown = gw.api(f"/api/documents/{scan['id']}").json()
    assert shown["ocr"] == "done" and shown["sha256"] == scan["sha256"]
    # the fields are read from the text layer OCR added, with where on the page each was found
    want = {scan["id"]: {"seller": "Muster Bürobedarf GmbH", "invoice_number": INVOICE_NUMBER,
                         "issue_date": "2026-12-07", "due_date": "2026-12-21", "grand_total": "196.23",
                         "currency": "EUR", "seller_vat_id": "DE136695976", "iban": "DE89370400440532013000",
                         "document_type": "invoice"},
            photo["id"]: {"seller": "Café Central S.L.", "invoice_number": RECEIPT_NUMBER,
                          "issue_date": "2026-12-07", "grand_total": "11.50", "currency": "EUR",
                          "document_type": "receipt"}}
    for doc_id, fields in want.items():
        shown = gw.api(f"/api/documents/{doc_id}").json()
        got = {k: shown["fields"][k] for k in fields}
        assert fold(got["seller"]) == fold(fields["seller"]) and dict(got, seller=fields["seller"]) == fields, got
        for name in fields:
            where = shown["field_sources"][name]
            assert where["source"] == "ocr" and where["page"] == 1 and len(where["box"]) == 4, (name, where)
        assert (shown["company"], shown["invoice_number"], shown["date"]) == (
            got["seller"], fields["invoice_number"], "2026-12-07")
    # exported once, named by those fields, and what was exported is the document with its text layer
    files = wait_for(lambda: (lambda f: f if len(f) == 2 else None)(gw.exported_files()), timeout=15)
    assert sorted(fold(f.name) for f in files) == ["cafe central s.l._bon-77341.pdf",
                                                   "muster burobedarf gmbh_re-2026-0815.pdf"]
    assert sorted(f.read_bytes() for f in files) == sorted(
        (gw.settings.data_dir / d["path"]).read_bytes() for d in (scan, photo))
    time.sleep(0.5)
    assert len(gw.exported_files()) == 2


def test_a_logo_in_a_mail_is_not_a_document_but_a_photo_with_import_images_is(
        workdir: Path, gateway_factory: Callable[..., Gateway]) -> None:
    need(HAVE_OCR, "ocrmypdf and tesseract are needed (deps/debian-runtime.txt)")
    (workdir / "rules" / "receipts.yaml").write_text(
        "name: Shop receipts\nwhen: {from: '@shop.example'}\nimport: images\n---\n"
        "name: Cafe photos\nwhen: {from: '@cafe.example'}\nattachments: ['*.jpg']\n", encoding="utf-8")
    gw = gateway_factory(ocr=FAST, smtp={**_smtp(workdir), "max_message_size": "5MB"})
    photo, logo = receipt_photo(), logo_png()
    # no rule: a logo and a holiday photo are not documents
    gw.send(make_mail(sender="Anna <anna@friends.example>", subject="Hello from Spain", body="Greetings!",
                      attachments=[("logo.png", logo, "image/png"), ("beach.jpg", holiday_photo(), "image/jpeg")]),
            sender="anna@friends.example")
    # import: images: the receipt photo is a document, the logo beside it is not
    gw.send(make_mail(sender="Shop <receipts@shop.example>", subject="Your receipt",
                      attachments=[("logo.png", logo, "image/png"), ("IMG_0042.jpg", photo, "image/jpeg")]),
            sender="receipts@shop.example")
    wait_for(lambda: len(gw.store.message_ids(status="received")) == 0 and len(gw.store.message_ids()) == 2)
    hello, shop = (gw.store.message(m) for m in sorted(gw.store.message_ids()))
    assert hello["status"] == "unmatched" and gw.store.documents_of(hello["id"]) == [], hello["reason"]
    assert shop["status"] == "imported", shop["reason"]
    assert "logo.png: not imported" in shop["reason"] and "logo or icon" in shop["reason"]
    (doc,) = read(gw, 1)
    assert doc["filename"] == "IMG_0042.pdf" and doc["origin"] == "image" and doc["ocr"] == "done"
    assert RECEIPT_NUMBER in pdf_text(gw.settings.data_dir / doc["path"])
    # attachments naming the type counts too; the same photo again is the same document, not read twice
    gw.send(make_mail(sender="Cafe <bon@cafe.example>", subject="Bon",
                      attachments=[("bon.jpg", photo, "image/jpeg")]), sender="bon@cafe.example")
    wait_for(lambda: len(gw.store.message_ids(status="imported")) == 2)
    (cafe,) = [gw.store.message(m) for m in gw.store.message_ids(status="imported") if m != shop["id"]]
    assert [d["id"] for d in gw.store.documents_of(cafe["id"])] == [doc["id"]]
    assert len(documents(gw)) == 1


def test_a_failed_ocr_leaves_the_document_as_it_was_with_a_warning(
        workdir: Path, gateway_factory: Callable[..., Gateway]) -> None:
    need(HAVE_OCR, "ocrmypdf and tesseract are needed (deps/debian-runtime.txt)")
    gw = gateway_factory(ocr={"enabled": True, "languages": ["xyz"]}, smtp={**_smtp(workdir), "max_message_size": "5MB"})
    scan = scan_pdf(1, dpi=100)
    gw.send(make_mail(subject="Rechnung", attachments=[("scan.pdf", scan, "application/pdf")]))
    (doc,) = read(gw, 1, timeout=30)
    assert doc["ocr"] == "failed" and (gw.settings.data_dir / doc["path"]).read_bytes() == scan
    assert any("OCR failed" in w and "tesseract-ocr-xyz" in w for w in json.loads(doc["warnings"])), doc["warnings"]
    (exported,) = wait_for(lambda: gw.exported_files(), timeout=15)  # and it goes on to the targets
    assert exported.read_bytes() == scan


def test_a_20_page_scan_being_read_does_not_delay_a_plain_pdf_mail(
        workdir: Path, gateway_factory: Callable[..., Gateway]) -> None:
    need(HAVE_OCR, "ocrmypdf and tesseract are needed (deps/debian-runtime.txt)")
    import psutil
    # as `serve` runs: the mail processed in worker processes, OCR in the serve process's worker
    gw = gateway_factory(ocr=OCR, smtp={**_smtp(workdir), "max_message_size": "30MB"},
                         limits={"worker_processes": True, "workers": 2})

    def latency(n: int) -> float:
        """Seconds from the 250 to the mail's status ``imported``."""
        before = set(gw.store.message_ids())
        gw.send(make_mail(subject=f"Invoice {n}", attachments=[(f"invoice-{n}.pdf", invoice_pdf(f"P-{n}"),
                                                                 "application/pdf")]))
        t0 = time.monotonic()
        (mid,) = wait_for(lambda: set(gw.store.message_ids()) - before)
        wait_for(lambda: gw.store.message(mid)["status"] == "imported", interval=0.01)
        return time.monotonic() - t0

    baseline = max(latency(i) for i in range(3))
    gw.send(make_mail(subject="Scan 20 pages", attachments=[("scan20.pdf", scan_pdf(20), "application/pdf")]))
    wait_for(lambda: gw.service.ocr.busy == 1, timeout=20)
    me = psutil.Process()

    def readers() -> list[Any]:
        return [p for p in me.children(recursive=True) if p.name() in ("tesseract", "gs", "ocrmypdf")]

    wait_for(readers, timeout=20)
    assert all(p.nice() == 19 for p in readers())
    during = [latency(i) for i in range(10, 13)]
    (scan,) = [d for d in documents(gw) if d["filename"] == "scan20.pdf"]
    assert scan["ocr"] == "running"  # the plain mails were measured while the scan was read
    print(f"plain mail, 250 -> imported: {baseline:.3f} s alone (max of 3), {max(during):.3f} s while the scan is read")
    assert max(during) <= baseline + 1.0, (baseline, during)
    assert all(e["state"] == "pending" for e in gw.store.exports_of(scan["id"]))  # held until read
    assert "\ngateway_ocr_waiting 1.0\n" in gw.api("/metrics").text


def _smtp(workdir: Path) -> dict[str, Any]:
    from conftest import base_config

    return dict(base_config(workdir)["smtp"])
