"""E-invoice detection, field reading, light validation, safe parsing and the readable PDF."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import http.server
import io
import json
import resource
import shutil
import subprocess
import threading
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import conftest
import pytest
import weasyprint
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree
from pypdf import PdfWriter
from pypdf.generic import (
    ArrayObject,
    DecodedStreamObject,
    DictionaryObject,
    NameObject,
    TextStringObject,
)

from gateway.einvoice import (
    FIELD_KEYS,
    MAX_XML_BYTES,
    EInvoice,
    InvoiceLine,
    RefusingFetcher,
    detect,
    examine,
    render_html,
    render_pdf,
    xmlread,
)

CORPUS = conftest.CORPUS / "einvoices"
DATA = Path(__file__).parent / "data" / "einvoice"
BOM = b"\xef\xbb\xbf"

def needs_corpus(test: Any) -> Any:
    """Marks tests that read ../shared/corpus/einvoices (not run without it, see conftest)."""
    return pytest.mark.corpus(test)


def sample(name: str) -> bytes:
    return (DATA / name).read_bytes()


# --------------------------------------------------------------------------------------------
# The corpus: expected values read from the files by hand and with namespace-qualified XPaths
# (/rsm:CrossIndustryInvoice/rsm:ExchangedDocument/ram:ID, /inv:Invoice/cbc:ID, ...), written
# down here as literals. Columns: path, syntax, profile (BT-24), container, embedded file name,
# invoice number (BT-1), issue date (BT-2), seller (BT-27), grand total (BT-112).
# --------------------------------------------------------------------------------------------
EN16931 = "urn:cen.eu:en16931:2017"
XR30 = "urn:cen.eu:en16931:2017#compliant#urn:xeinkauf.de:kosit:xrechnung_3.0"
XR30_EXT = XR30 + "#conformant#urn:xeinkauf.de:kosit:extension:xrechnung_3.0"
XR30_CVD = XR30 + "#compliant#urn:xeinkauf.de:kosit:xrechnung:cvd_0.9"
XR12 = "urn:cen.eu:en16931:2017#compliant#urn:xoev-de:kosit:standard:xrechnung_1.2"
FX_EXT = "urn:cen.eu:en16931:2017#conformant#urn:factur-x.eu:1p0:extended"
ZF1_EXT = "urn:ferd:CrossIndustryDocument:invoice:1p0:extended"
ZF1_BASIC = "urn:ferd:CrossIndustryDocument:invoice:1p0:basic"
MUSTANG_FX = "urn:cen.eu:en16931:2017:compliant:factur-x.eu:1p0:"
AK = "akretion-factur-x"
ML = "mustangproject/library/src/test/resources"
MV = "mustangproject/validator/src/test/resources"
XS = "xrechnung-testsuite/business-cases/standard"
XE = "xrechnung-testsuite/business-cases/extension"
XT = "xrechnung-testsuite/technical-cases"
ZC = "zugferd-corpus"
GMBH = "Bei Spiel GmbH"
SELLER = "[Seller name]"

EXPECTED: list[tuple[str, str, str | None, str, str | None, str, str | None, str, str]] = [
    (f"{AK}/pdf/invoice_EN16931.pdf", "CII", EN16931, "pdf", "factur-x.xml",
     "F20260023", "2026-01-31", "LE FOURNISSEUR", "104.90"),
    (f"{AK}/xml/factur-x-basic.xml", "CII", "urn:cen.eu:en16931:2017#compliant#urn:factur-x.eu:1p0:basic", "xml",
     None, "F20260023", "2026-01-31", "LE FOURNISSEUR", "104.90"),
    (f"{AK}/xml/factur-x-basicwl.xml", "CII", "urn:factur-x.eu:1p0:basicwl", "xml", None,
     "F20260023", "2026-01-31", "LE FOURNISSEUR", "104.90"),
    (f"{AK}/xml/factur-x-extended.xml", "CII", FX_EXT, "xml", None,
     "F20260023", "2026-01-31", "LE FOURNISSEUR", "104.90"),
    (f"{AK}/xml/factur-x-minimum.xml", "CII", "urn:factur-x.eu:1p0:minimum", "xml", None,
     "F20260023", "2026-01-31", "LE FOURNISSEUR", "104.90"),
    (f"{AK}/xml/ubl-21-en16931.xml", "UBL", EN16931, "xml", None, "F124212", "2026-06-17", "Au bon moulin", "308.03"),
    (f"{AK}/xml/ubl-21-extended-ctc-fr.xml", "UBL",
     "urn:cen.eu:en16931:2017#conformant#urn.cpro.gouv.fr:1p0:extended-ctc-fr", "xml", None,
     "F124212", "2026-06-17", "Au bon moulin", "308.03"),
    (f"{AK}/xml/zugferd-basic.xml", "ZUGFeRD1", ZF1_BASIC, "xml", None,
     "471102", "2013-03-05", "Lieferant GmbH", "235.62"),
    (f"{ML}/EXTENDED_Fremdwaehrung_wdis_fx-pdfa4.pdf", "CII", FX_EXT, "pdf", "factur-x.xml",
     "47110815", "2025-12-01", "Rohstoff AG Salzgitter", "1021.91"),
    (f"{ML}/MustangBeispiel20221026.pdf", "CII", EN16931, "pdf", "factur-x.xml",
     "RE1001", "2022-10-26", "weclapp.com", "963.11"),
    (f"{ML}/MustangGnuaccountingBeispielRE-20170509_505.pdf", "ZUGFeRD1", ZF1_BASIC, "pdf", "ZUGFeRD-invoice.xml",
     "RE-20170509/505", "2017-05-09", GMBH, "571.04"),
    (f"{ML}/ZTESTZUGFERD_1_INVDSS_012015738820PDF-1.pdf", "CII",
     "urn:cen.eu:en16931:2017#conformant#urn:zugferd.de:2p0:extended", "pdf", "zugferd-invoice.xml",
     "2015738820", "2024-11-01", "Alphabet Fuhrparkmanagement GmbH", "447.88"),
    (f"{ML}/cii/facturFrMinimum.xml", "CII", "urn:factur-x.eu:1p0:minimum", "xml", None,
     "FA-2017-0010", "2017-11-13", "Au bon moulin", "671.15"),
    (f"{ML}/ubl/UBL-CreditNote-2.1-Example.ubl.xml", "UBL", None, "xml", None,
     "TOSL108", "2009-12-15", "The Sellercompany Incorporated", "1729.00"),
    (f"{MV}/103767-Invoice-2026-03-24-1.pdf", "CII", EN16931, "pdf", "factur-x.xml",
     "103767", "2026-02-17", "CRONUS DE", "681.87"),
    (f"{MV}/Facture_F20180027.pdf", "CII", EN16931, "pdf", "factur-x.xml",
     "F20180027", "2018-12-31", "LE FOURNISSEUR", "110.00"),
    (f"{MV}/XMLinvalidV2PDF.pdf", "CII", MUSTANG_FX + "extended", "pdf", "factur-x.xml",
     "RE-20171118/506", "2017-11-18", GMBH, "571.04"),
    (f"{MV}/invalidXMP-ParseError.pdf", "CII", MUSTANG_FX + "en16931", "pdf", "factur-x.xml",
     "RE-20171118/506", "2017-11-18", GMBH, "571.04"),
    (f"{MV}/invalidXMP.pdf", "CII", MUSTANG_FX + "en16931", "pdf", "factur-x.xml",
     "RE-20171118/506", "2017-11-18", GMBH, "571.04"),
    (f"{MV}/validV1.xml", "ZUGFeRD1", ZF1_EXT, "xml", None, "RE-20171118/506", "2017-11-18", GMBH, "571.04"),
    (f"{MV}/validV2PDF.pdf", "CII", MUSTANG_FX + "en16931", "pdf", "factur-x.xml",
     "RE-20171118/506", "2017-11-18", GMBH, "571.04"),
    (f"{MV}/validXRV30.xml", "CII", XR30, "xml", None, "123456XX", "2016-04-04", SELLER, "336.90"),
    (f"{MV}/validXRechnung.pdf", "CII", XR12, "pdf", "factur-x.xml", "RE-20190610/507", "2019-06-10", GMBH, "571.04"),
    (f"{XE}/04.03a-INVOICE_ubl.xml", "UBL", XR30_EXT, "xml", None,
     "12345", "2019-05-15", "M. Meier Handwerk GbR", "24108422.99"),
    (f"{XE}/04.05a-INVOICE_uncefact.xml", "CII", XR30_EXT, "xml", None, "2020-1", "2020-01-03", "Rechnungssteller",
     "119.00"),
    (f"{XE}/05.01a-INVOICE_ubl.xml", "UBL", XR30_EXT, "xml", None, "123456XX", "2016-04-04", SELLER, "336.90"),
    (f"{XS}/01.01a-INVOICE_ubl.xml", "UBL", XR30, "xml", None, "123456XX", "2016-04-04", SELLER, "336.90"),
    (f"{XS}/01.01a-INVOICE_uncefact.xml", "CII", XR30, "xml", None, "123456XX", "2016-04-04", SELLER, "336.90"),
    (f"{XS}/01.04a-INVOICE_ubl.xml", "UBL", XR30, "xml", None, "1234/78/901", "2016-06-16", SELLER, "120.00"),
    (f"{XS}/01.04a-INVOICE_uncefact.xml", "CII", XR30, "xml", None, "1234/78/901", "2016-06-16", SELLER, "120.00"),
    (f"{XS}/01.13a-INVOICE_ubl.xml", "UBL", XR30, "xml", None, "Rechnungsnummer", "2015-01-09", SELLER, "6342.70"),
    (f"{XS}/01.13a-INVOICE_uncefact.xml", "CII", XR30, "xml", None, "Rechnungsnummer", "2015-01-09", SELLER,
     "6342.70"),
    (f"{XS}/01.15a-INVOICE_ubl.xml", "UBL", XR30, "xml", None, "0000123456", "2017-12-11", SELLER, "10686.20"),
    (f"{XS}/01.15a-INVOICE_uncefact.xml", "CII", XR30, "xml", None, "0000123456", "2017-12-11", SELLER, "10686.20"),
    (f"{XS}/01.18a-INVOICE_ubl.xml", "UBL", XR30, "xml", None, "PRG1502112", "2015-04-24", SELLER, "10555.30"),
    (f"{XS}/01.18a-INVOICE_uncefact.xml", "CII", XR30, "xml", None, "PRG1502112", "2015-04-24", SELLER, "10555.30"),
    (f"{XS}/01.20a-INVOICE_ubl.xml", "UBL", XR30, "xml", None, "1234567890", "2021-01-25", "Betriebsstätte", "357.00"),
    (f"{XS}/01.20a-INVOICE_uncefact.xml", "CII", XR30, "xml", None, "1234567890", "2021-01-25", "Betriebsstätte",
     "357.00"),
    (f"{XS}/02.01a-INVOICE_ubl.xml", "UBL", XR30, "xml", None, "1234567", "2018-04-13", SELLER, "12829.69"),
    (f"{XS}/02.01a-INVOICE_uncefact.xml", "CII", XR30, "xml", None, "1234567", "2018-04-13", SELLER, "12829.69"),
    (f"{XS}/03.03a-INVOICE_ubl.xml", "UBL", XR30, "xml", None, "0000123456", "2017-12-11", SELLER, "10686.20"),
    (f"{XS}/03.03a-INVOICE_uncefact.xml", "CII", XR30, "xml", None, "0000123456", "2017-12-11", SELLER, "10686.20"),
    (f"{XT}/cius/01.05_minimal_test_ubl.xml", "UBL", XR30, "xml", None, "1234567", "2018-04-13", SELLER, "4743.75"),
    (f"{XT}/cius/01.05_minimal_test_uncefact.xml", "CII", XR30, "xml", None, "1234567", "2018-04-13", SELLER,
     "4743.75"),
    (f"{XT}/cvd/02.01a-cvd_INVOICE_ubl.xml", "UBL", XR30_CVD, "xml", None, "1234567", "2018-04-13", SELLER,
     "12829687.50"),
    (f"{XT}/cvd/02.01a-cvd_INVOICE_uncefact.xml", "CII", XR30_CVD, "xml", None, "1234567", "2018-04-13", SELLER,
     "12829687.50"),
    # The ZUGFeRD 1.0 release candidate ("CBFBUY", unqualified elements), shipped as a ZF1 PDF.
    (f"{ZC}/ZUGFeRDv1/correct/Mustangproject/MustangGnuaccountingBeispielRE-20140519_499.pdf", "ZUGFeRD1",
     "urn:ferd:invoice:rc:comfort", "pdf", "ZUGFeRD-invoice.xml",
     "RE-20140519/499", "2014-05-19", "usegroup Inh. Jochen Stärk", "559.84"),
    # Issue date <DateTimeString format="1020">20141008</...>: an invalid format code, the date read with a warning.
    (f"{ZC}/ZUGFeRDv1/fail/Mustangproject/fail1.pdf", "ZUGFeRD1", "urn:ferd:CrossIndustryDocument:invoice:1p0:komfort",
     "pdf", "ZUGFeRD-invoice.xml", "RE-20151008/504", "2014-10-08", GMBH, "571.04"),
    (f"{ZC}/ZUGFeRDv2/correct/Mustangproject/MustangGnuaccountingBeispielRE-20190610_507.pdf", "CII", EN16931,
     "pdf", "zugferd-invoice.xml", "RE-20190610/507", "2019-06-10", GMBH, "571.04"),
    (f"{ZC}/ZUGFeRDv2/correct/Mustangproject/MustangGnuaccountingBeispielRE-20201121_508_withBOM.pdf", "CII",
     EN16931, "pdf", "factur-x.xml", "RE-20201121/508", "2020-11-21", GMBH, "571.04"),
    (f"{ZC}/ZUGFeRDv2/correct/Mustangproject/testout-XR.xml", "CII", XR12, "xml", None,
     "123", "2020-12-22", "Test company", "1.00"),
    (f"{ZC}/ZUGFeRDv2/correct/Mustangproject/testout-ZF2PushCreditNote.xml", "CII", EN16931, "xml", None,
     "123", "2020-12-22", "Test company", "3.57"),
    (f"{ZC}/ZUGFeRDv2/fail/MustangRE-20171118_506_ZUGFeRD1and2.pdf", "CII", MUSTANG_FX + "extended", "pdf",
     "factur-x.xml", "RE-20171118/506", "2017-11-18", GMBH, "571.04"),
    (f"{ZC}/ZUGFeRDv2/fail/Mustangproject/factur-x-invalid-xml-encoding-attribute.pdf", "CII", EN16931, "pdf",
     "factur-x.xml", "RE-20201121/508", "2020-11-21", GMBH, "571.04"),
    (f"{ZC}/ZUGFeRDv2/fail/python-factur-x/python-factur-x.pdf", "CII", MUSTANG_FX + "basic", "pdf",
     "factur-x.xml", "RE-20171118/506", "2017-11-18", GMBH, "571.04"),
]

NEGATIVE = [
    f"{ML}/MustangGnuaccountingBeispielRE-20170509_505PDF14.pdf",  # plain PDF 1.4, no XML
    f"{ML}/MustangGnuaccountingBeispielRE-20201121_508blanko.pdf",  # plain PDF/A-1, no XML
    f"{MV}/corruptedV2PDF.pdf",  # XMP claims Factur-X; /Names points at the wrong object
    "mustangproject/Mustang-CLI/src/test/resources/corrupt-factur-x-waytoosmall.pdf",  # 15 bytes
    f"{MV}/invalidV2Root.xml",  # root <myinvoice> in the CII namespace
]


@needs_corpus
def test_expected_table_covers_every_corpus_file() -> None:
    listed = {row[0] for row in EXPECTED} | set(NEGATIVE)
    present = {str(p.relative_to(CORPUS)) for p in CORPUS.rglob("*") if p.suffix in (".pdf", ".xml")}
    assert present == listed
    assert len(EXPECTED) == 55 and len(present) == 60


@needs_corpus
@pytest.mark.parametrize("row", EXPECTED, ids=[Path(r[0]).name for r in EXPECTED])
def test_corpus_einvoice_is_read(row: tuple[str, str, str | None, str, str | None, str, str | None, str, str]) -> None:
    path, syntax, profile, container, xml_name, number, issued, seller, grand = row
    inv = detect((CORPUS / path).read_bytes(), filename=Path(path).name)
    assert inv is not None, examine((CORPUS / path).read_bytes()).reason
    assert (inv.syntax, inv.profile, inv.container, inv.xml_filename) == (syntax, profile, container, xml_name)
    assert inv.invoice_number == number
    assert inv.issue_date == (dt.date.fromisoformat(issued) if issued else None)
    assert inv.seller == seller
    assert inv.grand_total == Decimal(grand)
    fields = inv.fields()
    assert fields["grand_total"] == grand
    assert fields["issue_date"] == (issued or "")
    assert json.loads(json.dumps(fields)) == fields
    assert etree.fromstring(inv.xml.removeprefix(BOM).replace(b"UTF-8-W/O-BOM", b"UTF-8")) is not None


@needs_corpus
@pytest.mark.parametrize("path", NEGATIVE, ids=[Path(p).name for p in NEGATIVE])
def test_corpus_negative_is_not_an_einvoice(path: str) -> None:
    result = examine((CORPUS / path).read_bytes(), filename=Path(path).name)
    assert result.einvoice is None
    assert result.reason


@needs_corpus
def test_pdf_with_zugferd1_and_factur_x_prefers_factur_x() -> None:
    inv = detect((CORPUS / MV / "validV2PDF.pdf").read_bytes())
    assert inv is not None and inv.xml_filename == "factur-x.xml" and inv.syntax == "CII"
    assert any("ZUGFeRD-invoice.xml" in w for w in inv.warnings)


@needs_corpus
def test_bad_encoding_declaration_is_read_as_utf8_with_a_warning() -> None:
    path = CORPUS / ZC / "ZUGFeRDv2/fail/Mustangproject/factur-x-invalid-xml-encoding-attribute.pdf"
    inv = detect(path.read_bytes())
    assert inv is not None and inv.seller == GMBH
    assert any("UTF-8-W/O-BOM" in w for w in inv.warnings)


@needs_corpus
def test_corpus_type_codes_and_credit_notes() -> None:
    by_name = {Path(r[0]).name: detect((CORPUS / r[0]).read_bytes()) for r in EXPECTED if "INVOICE" in r[0]}
    corrected = by_name["01.18a-INVOICE_uncefact.xml"]
    assert corrected is not None and (corrected.type_code, corrected.document_type) == ("384", "corrective")
    assert corrected.default_document_type == "invoice"  # booked as an invoice (README, E-invoices)
    self_billed = by_name["01.20a-INVOICE_ubl.xml"]
    assert self_billed is not None and (self_billed.type_code, self_billed.document_type) == ("389", "invoice")
    credit = detect((CORPUS / ML / "ubl/UBL-CreditNote-2.1-Example.ubl.xml").read_bytes())
    assert credit is not None and credit.document_type == credit.default_document_type == "credit_note"
    push = detect((CORPUS / ZC / "ZUGFeRDv2/correct/Mustangproject/testout-ZF2PushCreditNote.xml").read_bytes())
    assert push is not None and (push.type_code, push.document_type) == ("381", "credit_note")


# The XRechnung test suite writes each business case in both syntaxes. Where the two files
# themselves differ, the difference is listed here (read from the files): 01.05's CII has no
# TaxTotalAmount (BT-110), its UBL states TaxAmount 0.
PAIR_DIFFERENCES = {"01.05_minimal_test": {"tax_total": ("0.00", "")}}
PAIRS = sorted(str(p.relative_to(CORPUS))[:-len("_ubl.xml")] for p in (CORPUS / "xrechnung-testsuite").rglob("*_ubl.xml")
               if p.with_name(p.name.replace("_ubl.xml", "_uncefact.xml")).exists())


@needs_corpus
def test_xrechnung_pairs_are_there() -> None:
    assert len(PAIRS) == 10


@needs_corpus
@pytest.mark.parametrize("stem", PAIRS, ids=[Path(p).name for p in PAIRS])
def test_ubl_and_cii_of_the_same_invoice_give_the_same_fields(stem: str) -> None:
    ubl = detect((CORPUS / f"{stem}_ubl.xml").read_bytes())
    cii = detect((CORPUS / f"{stem}_uncefact.xml").read_bytes())
    assert ubl is not None and cii is not None and (ubl.syntax, cii.syntax) == ("UBL", "CII")
    u, c = ubl.fields(), cii.fields()
    differing = {k: (u[k], c[k]) for k in FIELD_KEYS if k != "syntax" and u[k] != c[k]}
    assert differing == PAIR_DIFFERENCES.get(Path(stem).name, {})
    assert (ubl.lines, ubl.taxes, ubl.notes) == (cii.lines, cii.taxes, cii.notes)


@needs_corpus
def test_ubl_tax_number_is_not_taken_for_the_vat_id() -> None:
    # 01.04a: the seller has only a tax number (BT-32: UBL TaxScheme "???", CII schemeID "FC"), no VAT ID.
    for suffix in ("ubl", "uncefact"):
        inv = detect((CORPUS / XS / f"01.04a-INVOICE_{suffix}.xml").read_bytes())
        assert inv is not None and inv.seller_vat_id is None
    inv = detect((CORPUS / XS / "01.01a-INVOICE_ubl.xml").read_bytes())
    assert inv is not None and inv.seller_vat_id == "DE 123456789"


@needs_corpus
def test_tax_total_is_taken_in_the_invoice_currency() -> None:
    # BT-110 appears twice (EUR and the VAT accounting currency GBP); BT-5 is EUR.
    inv = detect((CORPUS / XS / "02.01a-INVOICE_uncefact.xml").read_bytes())
    assert inv is not None and inv.currency == "EUR" and inv.tax_total == Decimal("2048.44")


# --------------------------------------------------------------------------------------------
# Detection of our own samples, by root element, with BOMs and in PDFs.
# --------------------------------------------------------------------------------------------
SAMPLES = {
    "cii-xrechnung.xml": ("CII", "urn:cen.eu:en16931:2017#compliant#urn:xeinkauf.de:kosit:xrechnung_3.0"),
    "ubl-invoice.xml": ("UBL", "urn:cen.eu:en16931:2017#compliant#urn:xeinkauf.de:kosit:xrechnung_3.0"),
    "ubl-creditnote.xml": ("UBL", "urn:cen.eu:en16931:2017"),
    "zugferd1-comfort.xml": ("ZUGFeRD1", "urn:ferd:CrossIndustryDocument:invoice:1p0:comfort"),
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
@pytest.mark.parametrize("prefix", [b"", BOM, BOM + b"\n  "], ids=["plain", "bom", "bom-space"])
def test_xml_detected_by_root_element(name: str, prefix: bytes) -> None:
    data = prefix + sample(name)
    inv = detect(data, filename="whatever.bin", content_type="application/octet-stream")
    assert inv is not None
    assert (inv.syntax, inv.profile, inv.container, inv.xml_filename) == (*SAMPLES[name], "xml", None)
    assert inv.xml == data
    if prefix.endswith(b" "):  # white space before <?xml is not well-formed; read anyway
        assert inv.warnings == ("the XML declaration is not at the start of the file; the XML was read as UTF-8",)
    else:
        assert inv.warnings == ()


def test_xml_mentioning_pdf_is_still_xml() -> None:
    data = sample("ubl-invoice.xml").replace(b"<!-- Made", b"<!-- %PDF-1.7 Made")
    inv = detect(data)
    assert inv is not None and inv.container == "xml"


def test_utf16_xml_is_detected() -> None:
    text = sample("cii-xrechnung.xml").decode("utf-8").replace('encoding="UTF-8"', 'encoding="UTF-16"')
    inv = detect(text.encode("utf-16"))
    assert inv is not None and inv.seller == "Muster Bürobedarf GmbH"


def test_fields_of_the_cii_sample() -> None:
    inv = detect(sample("cii-xrechnung.xml"))
    assert inv is not None
    assert inv.fields() == {
        "invoice_number": "IG-2024-0042", "type_code": "380", "document_type": "invoice",
        "issue_date": "2024-03-15", "due_date": "2024-03-29", "seller": "Muster Bürobedarf GmbH",
        "seller_vat_id": "DE123456789", "buyer": "Stadtverwaltung Beispielstadt",
        "buyer_reference": "04011000-12345-34", "currency": "EUR", "net_total": "200.00", "tax_total": "38.00",
        "grand_total": "238.00", "amount_due": "238.00", "iban": "DE02120300000000202051", "syntax": "CII",
        "profile": "urn:cen.eu:en16931:2017#compliant#urn:xeinkauf.de:kosit:xrechnung_3.0",
    }
    assert tuple(inv.fields()) == FIELD_KEYS
    assert [(li.id, li.name, li.quantity, li.unit, li.net_amount, li.tax_rate) for li in inv.lines] == [
        ("1", "Consulting", Decimal("1.5"), "HUR", Decimal("120.00"), Decimal("19")),
        ("2", "Printer paper A4, 500 sheets", Decimal("16"), "C62", Decimal("80.00"), Decimal("19")),
    ]


def test_ubl_and_cii_samples_agree() -> None:
    cii, ubl = detect(sample("cii-xrechnung.xml")), detect(sample("ubl-invoice.xml"))
    assert cii is not None and ubl is not None
    differing = {k for k in FIELD_KEYS if cii.fields()[k] != ubl.fields()[k]}
    assert differing == {"syntax"}
    assert cii.lines == ubl.lines


def test_credit_note_sample() -> None:
    inv = detect(sample("ubl-creditnote.xml"))
    assert inv is not None
    assert (inv.document_type, inv.type_code, inv.due_date) == ("credit_note", "381", dt.date(2024, 4, 16))
    assert inv.lines[0].quantity == Decimal("16")


def test_fields_are_strings_and_amounts_have_two_decimals() -> None:
    inv = EInvoice(syntax="UBL", profile=None, container="xml", xml_filename=None, xml=b"",
                   grand_total=Decimal("238"), net_total=Decimal("1E+2"), tax_total=Decimal("-0"),
                   amount_due=Decimal("12.3456"))
    fields = inv.fields()
    assert all(isinstance(v, str) for v in fields.values())
    assert (fields["grand_total"], fields["net_total"], fields["tax_total"], fields["amount_due"]) == (
        "238.00", "100.00", "0.00", "12.3456")
    assert fields["issue_date"] == "" and fields["profile"] == ""


def pdf_with_attachments(files: dict[str, bytes]) -> bytes:
    writer = PdfWriter()
    writer.add_blank_page(595, 842)
    for name, data in files.items():
        writer.add_attachment(name, data)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


@pytest.mark.parametrize("name", ["factur-x.xml", "zugferd-invoice.xml", "ZUGFeRD-invoice.xml", "xrechnung.xml"])
def test_pdf_with_standard_attachment_name(name: str) -> None:
    xml = sample("zugferd1-comfort.xml") if name == "ZUGFeRD-invoice.xml" else sample("cii-xrechnung.xml")
    inv = detect(pdf_with_attachments({"notes.txt": b"hello", name: BOM + xml}), filename="invoice.pdf")
    assert inv is not None
    assert (inv.container, inv.xml_filename, inv.xml) == ("pdf", name, BOM + xml)
    assert inv.syntax == ("ZUGFeRD1" if name == "ZUGFeRD-invoice.xml" else "CII")
    assert inv.warnings == ()


def test_pdf_with_ubl_xrechnung() -> None:
    inv = detect(pdf_with_attachments({"xrechnung.xml": sample("ubl-invoice.xml")}))
    assert inv is not None and inv.syntax == "UBL" and inv.grand_total == Decimal("238.00")


def test_archive_holding_a_facturx_pdf_is_not_read() -> None:
    pdf = pdf_with_attachments({"factur-x.xml": sample("cii-xrechnung.xml")})
    stored = io.BytesIO()
    with zipfile.ZipFile(stored, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr("invoice.pdf", pdf)
    assert b"%PDF-" in stored.getvalue()[:1024] and detect(pdf) is not None
    result = examine(stored.getvalue())
    assert result.einvoice is None and result.reason == "neither a PDF nor XML"


def test_pdf_with_unusual_xml_name_is_read_with_a_warning() -> None:
    inv = detect(pdf_with_attachments({"Rechnung_4711.xml": sample("cii-xrechnung.xml")}))
    assert inv is not None and inv.xml_filename == "Rechnung_4711.xml"
    assert any("not a standard" in w for w in inv.warnings)


def test_pdf_with_foreign_xml_only_is_not_an_einvoice() -> None:
    result = examine(pdf_with_attachments({"factur-x.xml": b"<order><id>1</id></order>", "a.txt": b"x"}))
    assert result.einvoice is None and "order" in (result.reason or "")


def test_pdf_name_tree_with_kids_and_a_loop() -> None:
    writer = PdfWriter()
    writer.add_blank_page(595, 842)
    stream = DecodedStreamObject()
    stream.set_data(sample("cii-xrechnung.xml"))
    stream[NameObject("/Type")] = NameObject("/EmbeddedFile")
    spec = DictionaryObject({
        NameObject("/Type"): NameObject("/Filespec"),
        NameObject("/F"): TextStringObject("factur-x.xml"),
        NameObject("/EF"): DictionaryObject({NameObject("/F"): writer._add_object(stream)}),
    })
    leaf = DictionaryObject({NameObject("/Names"): ArrayObject([TextStringObject("factur-x.xml"),
                                                                writer._add_object(spec)])})
    leaf_ref = writer._add_object(leaf)
    middle = DictionaryObject()
    middle_ref = writer._add_object(middle)
    top = DictionaryObject({NameObject("/Kids"): ArrayObject([middle_ref])})
    top_ref = writer._add_object(top)
    middle[NameObject("/Kids")] = ArrayObject([leaf_ref, top_ref, middle_ref])  # loops back up
    writer._root_object[NameObject("/Names")] = DictionaryObject({NameObject("/EmbeddedFiles"): top_ref})
    out = io.BytesIO()
    writer.write(out)
    inv = detect(out.getvalue())
    assert inv is not None and inv.invoice_number == "IG-2024-0042"


@pytest.mark.parametrize("data", [
    b"", b"%PDF-", b"%PDF-1.7\n%%EOF", b"<", b"<?xml version='1.0'?>", b"\x00" * 100, b"hello world",
    b"<html><body>Invoice</body></html>", b"<Invoice>not UBL: no namespace</Invoice>",
    b'<Invoice xmlns="urn:example:other">x</Invoice>',
    b'<CrossIndustryInvoice xmlns="urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100">',
    b"\xff\xfe<\x00x\x00", b"\xef\xbb\xbf",
], ids=lambda d: repr(d[:24]))
def test_garbage_is_not_an_einvoice(data: bytes) -> None:
    result = examine(data)
    assert result.einvoice is None and result.reason


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_detect_never_raises_on_random_bytes(data: bytes) -> None:
    detect(data)
    detect(b"%PDF-1.4\n" + data)
    detect(b"<?xml version='1.0'?>" + data)


@settings(max_examples=120, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(cut=st.integers(min_value=0, max_value=8000), junk=st.binary(min_size=1, max_size=16),
       which=st.sampled_from(sorted(SAMPLES)))
def test_detect_never_raises_on_damaged_invoices(cut: int, junk: bytes, which: str) -> None:
    xml = sample(which)
    cut %= len(xml)
    detect(xml[:cut])
    result = detect(xml[:cut] + junk + xml[cut + len(junk):])
    assert result is None or isinstance(result, EInvoice)


def test_damaged_pdfs_never_raise() -> None:
    pdf = pdf_with_attachments({"factur-x.xml": sample("cii-xrechnung.xml")})
    for cut in range(0, len(pdf), max(1, len(pdf) // 60)):
        detect(pdf[:cut])
        detect(pdf[:cut] + b"\x00garbage\xff" + pdf[cut + 12:])


# --------------------------------------------------------------------------------------------
# Safe parsing: no DTD, no entities, no network, no file reads, bounded size and memory.
# --------------------------------------------------------------------------------------------
CII_HEAD = (b'<rsm:CrossIndustryInvoice xmlns:rsm="urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100"'
            b' xmlns:ram="urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100">')


def hostile(doctype: bytes, ref: bytes) -> bytes:
    """A CII invoice whose number and seller are entity references, under the given DOCTYPE."""
    return (b'<?xml version="1.0"?>\n' + doctype + b"\n" + CII_HEAD
            + b"<rsm:ExchangedDocument><ram:ID>" + ref + b"</ram:ID></rsm:ExchangedDocument>"
            + b"<rsm:SupplyChainTradeTransaction><ram:ApplicableHeaderTradeAgreement><ram:SellerTradeParty>"
            + b"<ram:Name>" + ref + b"</ram:Name></ram:SellerTradeParty></ram:ApplicableHeaderTradeAgreement>"
            + b"</rsm:SupplyChainTradeTransaction></rsm:CrossIndustryInvoice>")


def billion_laughs() -> bytes:
    entities = b'<!ENTITY lol0 "lol">' + b"".join(
        b'<!ENTITY lol%d "%s">' % (i, b"&lol%d;" % (i - 1) * 10) for i in range(1, 10))
    return hostile(b"<!DOCTYPE rsm:CrossIndustryInvoice [" + entities + b"]>", b"&lol9;")


@pytest.fixture()
def secret_file(tmp_path: Path) -> tuple[Path, str]:
    secret = "S3CRET-" + "7f3a9c"
    path = tmp_path / "secret.txt"
    path.write_text(secret)
    return path, secret


class CountingHandler(http.server.BaseHTTPRequestHandler):
    hits: list[str]

    def do_GET(self) -> None:
        self.hits.append(self.path)
        body = b'<!ENTITY secret "FROM-NETWORK">' if self.path.endswith(".dtd") else b"x"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture()
def loopback() -> Iterator[tuple[str, list[str]]]:
    """A real HTTP server on 127.0.0.1 that records every request path."""
    hits: list[str] = []
    handler = type("Handler", (CountingHandler,), {"hits": hits})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # ignore any http_proxy
    with direct.open(base + "/probe") as response:  # the server works: hits can be trusted
        response.read()
    assert hits == ["/probe"]
    hits.clear()
    try:
        yield base, hits
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def all_text(inv: EInvoice | None) -> str:
    return "" if inv is None else repr(dataclasses.replace(inv, xml=b"")) + json.dumps(inv.fields())


def test_billion_laughs_is_refused_fast_and_small() -> None:
    data = billion_laughs()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    for variant in (data, BOM + data, data.decode().encode("utf-16")):
        result = examine(variant)
        assert result.einvoice is None and result.reason
    assert time.perf_counter() - started < 2
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KiB


def test_billion_laughs_is_not_expanded_by_the_parser_itself() -> None:
    # Below detect()'s DOCTYPE refusal, the parser alone must not expand either.
    try:
        root = etree.fromstring(billion_laughs(), xmlread._parser())
    except etree.XMLSyntaxError:
        return  # libxml2 refused the amplification outright
    assert "lollol" not in etree.tostring(root).decode()


def test_external_file_entity_is_never_read(secret_file: tuple[Path, str]) -> None:
    path, secret = secret_file
    for data in (
        hostile(b'<!DOCTYPE x [<!ENTITY xxe SYSTEM "' + path.as_uri().encode() + b'">]>', b"&xxe;"),
        hostile(b'<!DOCTYPE x [<!ENTITY xxe SYSTEM "' + str(path).encode() + b'">]>', b"&xxe;"),
        hostile(b'<!DOCTYPE x [<!ENTITY % p SYSTEM "' + path.as_uri().encode() + b'"> %p;]>', b"x"),
    ):
        for variant in (data, data.decode().encode("utf-16"),
                        pdf_with_attachments({"factur-x.xml": data})):
            result = examine(variant)
            assert result.einvoice is None
            assert secret not in all_text(result.einvoice) + (result.reason or "")
        root = etree.fromstring(data, xmlread._parser())  # the parser alone: references stay unresolved
        assert secret not in etree.tostring(root).decode()
        assert secret not in "".join(str(t) for t in root.itertext())


def test_refused_hostile_or_broken_xml_carries_a_warning_and_foreign_xml_none(secret_file: tuple[Path, str]) -> None:
    path, _ = secret_file
    xxe = hostile(b'<!DOCTYPE x [<!ENTITY xxe SYSTEM "' + path.as_uri().encode() + b'">]>', b"&xxe;")
    for data in (billion_laughs(), xxe, xxe.decode().encode("utf-16"), pdf_with_attachments({"factur-x.xml": xxe})):
        result = examine(data)
        assert result.einvoice is None and result.warning and "DOCTYPE" in result.warning
    broken = examine(sample("cii-xrechnung.xml")[:-40])
    assert broken.einvoice is None and broken.warning and "not well-formed" in broken.warning
    for plain in (b"<?xml version='1.0'?><order xmlns='urn:x'/>", pdf_with_attachments({"notes.txt": b"x"})):
        result = examine(plain)
        assert result.einvoice is None and result.reason and result.warning is None


def test_xinclude_is_not_processed(secret_file: tuple[Path, str]) -> None:
    path, secret = secret_file
    include = (b'<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="' + path.as_uri().encode()
               + b'" parse="text"/>')
    data = sample("cii-xrechnung.xml").replace(b"<ram:Name>Muster B\xc3\xbcrobedarf GmbH</ram:Name>",
                                               b"<ram:Name>" + include + b"</ram:Name>")
    inv = detect(data)
    assert inv is not None and secret not in all_text(inv)


def test_no_network_for_external_dtd_or_entities(loopback: tuple[str, list[str]]) -> None:
    base, hits = loopback
    url = base.encode()
    for data in (
        hostile(b'<!DOCTYPE x SYSTEM "' + url + b'/evil.dtd">', b"&secret;"),
        hostile(b'<!DOCTYPE x [<!ENTITY e SYSTEM "' + url + b'/entity">]>', b"&e;"),
        hostile(b'<!DOCTYPE x [<!ENTITY % p SYSTEM "' + url + b'/param.dtd"> %p;]>', b"x"),
    ):
        assert detect(data) is None
        assert detect(data.decode().encode("utf-16")) is None
        with contextlib.suppress(etree.XMLSyntaxError):
            etree.fromstring(data, xmlread._parser())
    assert hits == []


def test_size_cap() -> None:
    head = sample("cii-xrechnung.xml")
    big = head.replace(b"<rsm:ExchangedDocument>", b"<!--" + b" " * (MAX_XML_BYTES + 1) + b"--><rsm:ExchangedDocument>")
    result = examine(big)
    assert result.einvoice is None and "limit" in (result.reason or "")
    assert result.warning and "over the limit" in result.warning  # shown on the document


def test_huge_text_node_is_refused() -> None:
    # lxml's huge_tree=False refuses text nodes over 10 MB even below the size cap.
    data = sample("cii-xrechnung.xml").replace(b"Thank you for your order.", b"x" * (11 * 1024 * 1024))
    assert detect(data) is None


def test_long_fields_are_cut_with_a_warning() -> None:
    data = sample("cii-xrechnung.xml").replace(b"IG-2024-0042", b"N" * 5000)
    inv = detect(data)
    assert inv is not None and inv.invoice_number is not None and len(inv.invoice_number) == 500
    assert any("invoice number" in w for w in inv.warnings)


# --------------------------------------------------------------------------------------------
# Light validation: warnings, never exceptions.
# --------------------------------------------------------------------------------------------
def test_line_sum_mismatch_is_a_warning() -> None:
    data = sample("cii-xrechnung.xml").replace(b"<ram:LineTotalAmount>80.00</ram:LineTotalAmount>",
                                               b"<ram:LineTotalAmount>81.00</ram:LineTotalAmount>")
    inv = detect(data)
    assert inv is not None
    assert inv.warnings == ("the line net amounts add up to 201.00, not to the line total (BT-106) 200.00",)


def test_line_sum_is_checked_against_net_total_without_line_total() -> None:
    data = (sample("ubl-invoice.xml")
            .replace(b'<cbc:LineExtensionAmount currencyID="EUR">200.00</cbc:LineExtensionAmount>', b"")
            .replace(b'<cbc:LineExtensionAmount currencyID="EUR">120.00</cbc:LineExtensionAmount>',
                     b'<cbc:LineExtensionAmount currencyID="EUR">100.00</cbc:LineExtensionAmount>'))
    inv = detect(data)
    assert inv is not None and inv.line_total is None
    assert any("net total (BT-109) 200.00" in w and "180.00" in w for w in inv.warnings)


def test_net_plus_tax_not_grand_total_is_a_warning() -> None:
    data = sample("ubl-invoice.xml").replace(b">238.00</cbc:TaxInclusiveAmount>", b">239.00</cbc:TaxInclusiveAmount>")
    inv = detect(data)
    assert inv is not None and inv.grand_total == Decimal("239.00")
    assert any("grand total (BT-112) 239.00" in w and "238.00" in w for w in inv.warnings)


def test_missing_mandatory_fields_are_warnings() -> None:
    data = (sample("cii-xrechnung.xml")
            .replace(b"<ram:ID>IG-2024-0042</ram:ID>", b"")
            .replace(b"<ram:Name>Muster B\xc3\xbcrobedarf GmbH</ram:Name>", b"")
            .replace(b"<ram:InvoiceCurrencyCode>EUR</ram:InvoiceCurrencyCode>", b"")
            .replace(b"<ram:GrandTotalAmount>238.00</ram:GrandTotalAmount>", b"")
            .replace(b'<udt:DateTimeString format="102">20240315</udt:DateTimeString>', b""))
    inv = detect(data)
    assert inv is not None
    assert set(inv.warnings) >= {"missing invoice number (BT-1)", "missing issue date (BT-2)",
                                 "missing seller name (BT-27)", "missing currency (BT-5)",
                                 "missing grand total (BT-112)"}
    assert inv.fields()["invoice_number"] == "" and inv.fields()["grand_total"] == ""


def test_eight_digit_date_with_a_wrong_format_code_is_read_with_a_warning() -> None:
    base = sample("cii-xrechnung.xml")
    inv = detect(base.replace(b'format="102">20240315<', b'format="1020">20240315<'))
    assert inv is not None and inv.issue_date == dt.date(2024, 3, 15)
    assert any("'20240315' has the date format code '1020'" in w for w in inv.warnings)
    month_only = detect(base.replace(b'format="102">20240315<', b'format="610">202403<'))
    assert month_only is not None and month_only.issue_date is None
    assert any("'202403' has date format '610'" in w for w in month_only.warnings)


def test_unreadable_values_are_warnings() -> None:
    data = (sample("cii-xrechnung.xml")
            .replace(b">238.00</ram:GrandTotalAmount>", b">238,00</ram:GrandTotalAmount>")
            .replace(b">20240329<", b">20240231<")
            .replace(b"<ram:TaxTotalAmount currencyID=\"EUR\">38.00", b"<ram:TaxTotalAmount currencyID=\"EUR\">NaN"))
    inv = detect(data)
    assert inv is not None and inv.grand_total is None and inv.due_date is None and inv.tax_total is None
    text = " | ".join(inv.warnings)
    assert "'238,00' is not a decimal number" in text and "'20240231' is not a date" in text and "'NaN'" in text


def test_minimum_profile_without_prepaid_is_not_flagged() -> None:
    # Factur-X MINIMUM has no BT-113: a lower amount due is an unstated prepayment, not an error.
    data = sample("cii-xrechnung.xml").replace(b"<ram:DuePayableAmount>238.00", b"<ram:DuePayableAmount>38.00")
    inv = detect(data)
    assert inv is not None and inv.warnings == ()
    worse = sample("cii-xrechnung.xml").replace(b"<ram:DuePayableAmount>238.00", b"<ram:DuePayableAmount>338.00")
    inv = detect(worse)
    assert inv is not None and any("amount due (BT-115) 338.00" in w for w in inv.warnings)


@needs_corpus
def test_failing_corpus_file_gives_warnings_not_errors() -> None:
    inv = detect((CORPUS / ZC / "ZUGFeRDv1/fail/Mustangproject/fail1.pdf").read_bytes())
    assert inv is not None
    text = " | ".join(inv.warnings)
    assert "the issue date (BT-2) '20141008' has the date format code '1020', not 102" in text
    assert "missing issue date (BT-2)" not in text
    assert "missing currency (BT-5)" in text and "'19.00e'" in text


# --------------------------------------------------------------------------------------------
# The readable PDF.
# --------------------------------------------------------------------------------------------
class RecordingFetcher(RefusingFetcher):
    """Records every URL weasyprint asks for, then refuses it."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def fetch(self, url: str, headers: Any = None) -> Any:
        self.calls.append(url)
        return super().fetch(url, headers)


def pdftotext(pdf: bytes) -> str:
    assert shutil.which("pdftotext"), "pdftotext (poppler-utils) is missing: `make test` installs it"
    done = subprocess.run(["pdftotext", "-layout", "-", "-"], input=pdf, capture_output=True, check=True, timeout=60)
    return done.stdout.decode("utf-8")


@needs_corpus
@pytest.mark.parametrize("name", ["01.01a-INVOICE_ubl.xml", "01.01a-INVOICE_uncefact.xml"])
def test_render_xrechnung(name: str) -> None:
    inv = detect((CORPUS / XS / name).read_bytes())
    assert inv is not None
    fetcher = RecordingFetcher()
    pdf = render_pdf(inv, url_fetcher=fetcher)
    assert pdf.startswith(b"%PDF-")
    text = pdftotext(pdf)
    for expected in ("[Seller name]", "123456XX", "314.86", "22.04", "336.90", "DE 123456789", "2016-04-04"):
        assert expected in text, expected
    assert fetcher.calls == []
    assert detect(pdf) is None  # the readable PDF carries no XML of its own


def test_render_sample_shows_lines_and_totals() -> None:
    inv = detect(sample("cii-xrechnung.xml"))
    assert inv is not None
    text = pdftotext(render_pdf(inv))
    for expected in ("Invoice IG-2024-0042", "Muster Bürobedarf GmbH", "Printer paper A4, 500 sheets",
                     "200.00", "38.00", "238.00", "DE02120300000000202051", "2024-03-29"):
        assert expected in text, expected


def test_render_fetches_nothing_even_for_hostile_values(loopback: tuple[str, list[str]],
                                                        secret_file: tuple[Path, str]) -> None:
    base, hits = loopback
    path, secret = secret_file
    inv = detect(sample("ubl-invoice.xml"))
    assert inv is not None
    evil = dataclasses.replace(
        inv,
        seller=f'<img src="{base}/seller.png">',
        buyer=f'<link rel="stylesheet" href="{base}/buyer.css">',
        notes=(f"<style>@import url({base}/note.css); body {{ background: url({path.as_uri()}) }}</style>",
               f'<object data="{path.as_uri()}"></object><iframe src="{base}/frame"></iframe>'),
        payment_terms=f'<svg><image href="{base}/svg.png"/></svg>',
    )
    fetcher = RecordingFetcher()
    text = pdftotext(render_pdf(evil, url_fetcher=fetcher))
    assert fetcher.calls == [] and hits == []
    assert "seller.png" in text  # shown as text, not loaded
    assert secret not in text


def test_refusing_fetcher_stops_weasyprint_fetching(loopback: tuple[str, list[str]],
                                                    secret_file: tuple[Path, str]) -> None:
    # The default fetcher of render_pdf, given HTML that does ask for URLs: nothing is fetched.
    base, hits = loopback
    path, secret = secret_file
    html = (f'<link rel="stylesheet" href="{base}/a.css"><img src="{base}/b.png">'
            f'<img src="{path.as_uri()}"><p style="background: url({base}/c.png)">x</p>')
    fetcher = RecordingFetcher()
    pdf = weasyprint.HTML(string=html, base_url=None, url_fetcher=fetcher).write_pdf()
    assert hits == []
    assert len(fetcher.calls) >= 3 and all(c.startswith(("http://127.0.0.1", "file:")) for c in fetcher.calls)
    assert secret not in pdftotext(pdf)


def test_render_bare_minimum_invoice() -> None:
    inv = EInvoice(syntax="CII", profile=None, container="xml", xml_filename=None, xml=b"<x/>")
    assert "(no number)" in pdftotext(render_pdf(inv))


def test_render_caps_the_number_of_lines() -> None:
    inv = detect(sample("cii-xrechnung.xml"))
    assert inv is not None
    many = dataclasses.replace(inv, lines=tuple(InvoiceLine(id=str(i), name=f"item {i}") for i in range(600)))
    html = render_html(many)
    assert "item 499" in html and "item 500" not in html and "100 more lines" in html
