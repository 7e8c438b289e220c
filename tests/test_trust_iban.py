"""The IBAN guard: a document whose IBAN differs from the seller's last one gets a warning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import PDF_BYTES, make_mail, text_layer_pdf
from gateway.config import parse_settings
from gateway.models import Envelope
from gateway.payment_guard import find_ibans, format_iban, iban_valid, mask_iban, seller_keys
from gateway.pipeline import Pipeline
from gateway.spool import Spool
from gateway.store import Store

CII = (Path(__file__).parent / "data" / "einvoice" / "cii-xrechnung.xml").read_bytes()
OLD, NEW = "DE02120300000000202051", "DE89370400440532013000"


def text_pdf(text: str) -> bytes:
    """A one-page PDF whose text layer says ``text``."""
    return text_layer_pdf([(72, 720, 12, text)], media=(612, 792))


@pytest.fixture
def pipeline(tmp_path: Path) -> tuple[Pipeline, Spool, Store]:
    settings = parse_settings({"data_dir": str(tmp_path / "data"), "trust": {"check_senders": False},
                               "exports": []})
    store = Store(settings.data_dir)
    pipe = Pipeline(settings, store, renderer=lambda parsed: PDF_BYTES,
                    xml_renderer=lambda inv: PDF_BYTES + inv.invoice_number.encode())
    return pipe, Spool(store), store


def feed(p: tuple[Pipeline, Spool, Store], name: str, data: bytes, ctype: str,
         sender: str = "Muster <rechnung@muster-buero.example>") -> list[list[str]]:
    pipe, spool, store = p
    raw = make_mail(sender=sender, attachments=[(name, data, ctype)]).as_bytes()
    mid = spool.accept(raw, Envelope(source="smtp", mail_from="x@y.example", rcpt_tos=("invoices@localhost",)))
    pipe.run_pending()
    row = store.message(mid)
    assert row is not None and row["status"] == "imported", row
    return [json.loads(d["warnings"]) for d in store.documents_of(mid)]


def changed(warnings: list[list[str]]) -> list[str]:
    return [w for ws in warnings for w in ws if w.startswith("payment details changed")]


def test_einvoice_with_a_new_iban_for_the_same_vat_id_is_flagged(pipeline: tuple[Pipeline, Spool, Store]) -> None:
    assert changed(feed(pipeline, "first.xml", CII, "application/xml")) == []
    second = CII.replace(OLD.encode(), NEW.encode()).replace(b"IG-2024-0042", b"IG-2024-0043")
    warnings = changed(feed(pipeline, "second.xml", second, "application/xml"))
    assert warnings and all(w.startswith(f"payment details changed: IBAN {mask_iban(NEW)} was {mask_iban(OLD)}")
                            for w in warnings)
    assert "vat DE123456789" in warnings[0]
    assert NEW not in "".join(warnings).replace(" ", "") and format_iban(NEW) not in warnings[0]
    # the new account again: still flagged, unauthenticated mail never teaches the guard (issue 14.7);
    # test_trust_bank_memory shows who does (an authenticated supplier, a person)
    third = second.replace(b"IG-2024-0043", b"IG-2024-0044")
    assert changed(feed(pipeline, "third.xml", third, "application/xml"))


def test_pdf_text_iban_is_compared_by_sender_domain(pipeline: tuple[Pipeline, Spool, Store]) -> None:
    assert changed(feed(pipeline, "a.pdf", text_pdf(f"Invoice 1 - IBAN {format_iban(OLD)}"), "application/pdf")) == []
    [warning] = changed(feed(pipeline, "b.pdf", text_pdf(f"Invoice 2 - IBAN: {format_iban(NEW)}"), "application/pdf"))
    assert f"IBAN {mask_iban(NEW)} was {mask_iban(OLD)}" in warning and "domain muster-buero.example" in warning
    # another seller's PDF with the same IBAN text: a different key, nothing to compare with
    assert changed(feed(pipeline, "c.pdf", text_pdf(f"IBAN {format_iban(OLD)}"), "application/pdf",
                        sender="shop@other.example")) == []


def test_reprocessing_does_not_flag_a_message_against_itself(pipeline: tuple[Pipeline, Spool, Store]) -> None:
    pipe, _, store = pipeline
    feed(pipeline, "a.pdf", text_pdf(f"IBAN {OLD}"), "application/pdf")
    store.reset_for_reprocess(store.message_ids())
    pipe.run_pending()
    assert store.status_counts() == {"imported": 1}


def test_masked_ibans_show_country_check_digits_and_the_last_four() -> None:
    assert mask_iban(NEW) == "DE89 **** **** **** **30 00"
    assert mask_iban(OLD) == "DE02 **** **** **** **20 51"
    assert mask_iban("NO9386011117947") == "NO93 **** ***7 947"


def test_find_ibans() -> None:
    text = ("Bankverbindung: Sparkasse, IBAN: DE89 3704 0044 0532 0130 00 BIC COBADEFFXXX\n"
            "UK: GB82WEST12345698765432; wrong: DE89 3704 0044 0532 0130 01; "
            "too short: DE89 3704; glued: DE89370400440532013000X")
    assert find_ibans(text) == [NEW, "GB82WEST12345698765432"]
    assert find_ibans("iban de89\u00a03704\u00a00044\u00a00532\u00a00130\u00a000") == [NEW]
    assert iban_valid(OLD) and not iban_valid(OLD[:-1] + "2") and not iban_valid("DE89")


def test_seller_keys() -> None:
    inv = {"seller_vat_id": "DE 123 456 789", "seller": "Muster  Bürobedarf GmbH"}
    assert seller_keys(inv, "billing.muster.example") == [
        "vat:DE123456789", "name:muster bürobedarf gmbh", "domain:muster.example"]
    assert seller_keys(None, "gmail.com") == []  # a freemail domain says nothing about the seller
    assert seller_keys(None, "home.example", ["invoices@home.example".rpartition("@")[2]]) == []
