"""The corpus hybrids with their XML removed: the fields read from the visible PDF against the XML's."""

from __future__ import annotations

import io
import re
from decimal import Decimal
from pathlib import Path

import pytest

from conftest import CORPUS, Gateway, make_mail, wait_for
from gateway import einvoice
from gateway.fields import FIELD_NAMES, Layout, read_document, read_pdf
from gateway.fields.values import find_amounts, find_dates

pytestmark = pytest.mark.corpus
# Measured 2026-12-07: 212 of 241 fields right (88 %); of the 220 fields whose XML value the visible
# page shows at all, 212 (96 %; the target is 95 %). The other 21: test PDFs that show another invoice
# than their XML (number, dates), totals the page does not print (809.34 = 804.35 + 4.99), and XML
# VAT IDs and IBANs with wrong check digits, which the reader refuses on purpose. The misses among the
# shown ones: sellers and buyers of layouts unlike any other, an IBAN broken over two lines.
THRESHOLD = 0.87
VISIBLE_THRESHOLD = 0.96


def strip_xml(data: bytes) -> bytes:
    """The PDF without its embedded files (the e-invoice XML) and their associated-file links."""
    import pypdf

    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(io.BytesIO(data)))
    for key in ("/Names", "/AF"):
        writer._root_object.pop(key, None)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def normal(key: str, value: str | None) -> str | None:
    """Values compared as a person would: names by case and spaces, identifiers without spaces."""
    if value is None:
        return None
    if key in ("seller", "buyer"):
        return " ".join(value.casefold().split())
    if key in ("iban", "seller_vat_id", "invoice_number"):
        return value.replace(" ", "").upper()
    return value


def shown(key: str, want: str, layout: Layout) -> bool:
    """Whether the visible PDF shows the XML's value at all (some test PDFs show another invoice than their XML),
    in a form the rules accept (a VAT ID or IBAN with wrong check digits is refused on purpose)."""
    from stdnum.eu import vat

    from gateway.payment_guard import iban_valid

    squash = re.sub(r"[\s\-./]", "", layout.text).upper()
    if key in ("invoice_number", "seller_vat_id", "iban"):
        value = re.sub(r"[\s\-./]", "", want).upper()
        valid = {"seller_vat_id": vat.is_valid, "iban": iban_valid}.get(key, lambda _: True)
        return value in squash and bool(valid(value))
    if key in ("seller", "buyer"):
        return " ".join(want.casefold().split()) in " ".join(layout.text.casefold().split())
    lines = [line.text for line in layout.lines]
    if key.endswith("_date"):
        return any(d.isoformat() == want for text in lines for d, _, _ in find_dates(text))
    if key.endswith("_total") or key == "amount_due":
        return any(a.value == Decimal(want) for text in lines for a in find_amounts(text))
    return True


def hybrids() -> list[tuple[Path, einvoice.EInvoice]]:
    out = []
    for path in sorted((CORPUS / "einvoices").rglob("*.pdf")):
        inv = einvoice.examine(path.read_bytes()).einvoice
        if inv is not None:
            out.append((path, inv))
    return out


def test_fields_of_the_corpus_hybrids_without_their_xml() -> None:
    found = hybrids()
    assert len(found) >= 15, f"expected the corpus hybrids in {CORPUS}"
    per: dict[str, list[int]] = {}
    visible = [0, 0]
    wrong = []
    for path, inv in found:
        stripped = strip_xml(path.read_bytes())
        assert einvoice.examine(stripped).einvoice is None, f"{path.name}: the XML is still there"
        layout = read_pdf(stripped)
        got = read_document(stripped, "pdf", layout=layout)
        truth = {k: (v or None) for k, v in inv.fields().items()}
        truth["document_type"] = inv.default_document_type
        for key in FIELD_NAMES:
            want = truth.get(key)
            if not want:
                continue
            right = normal(key, getattr(got, key)) == normal(key, want)
            per.setdefault(key, [0, 0])[0] += right
            per[key][1] += 1
            if shown(key, want, layout):
                visible[0] += right
                visible[1] += 1
            if not right:
                wrong.append(f"{path.name} {key}: {getattr(got, key)!r}, XML {want!r}")
    right = sum(a for a, _ in per.values())
    total = sum(b for _, b in per.values())
    print(f"corpus hybrids without XML: {len(found)} PDFs, {right}/{total} fields right ({right / total:.0%}); "
          f"of the {visible[1]} fields whose XML value the page shows (and check digits allow), "
          f"{visible[0]} right ({visible[0] / visible[1]:.0%})")
    print("per field:", {k: f"{a}/{b}" for k, (a, b) in per.items()})
    assert right / total >= THRESHOLD, "\n".join(wrong)
    assert visible[0] / visible[1] >= VISIBLE_THRESHOLD, "\n".join(wrong)


def test_hybrids_whose_page_disagrees_with_their_xml_are_warned_and_only_they() -> None:
    warned = {}
    for path, inv in hybrids():
        got = read_document(path.read_bytes(), "pdf", einvoice=inv)
        if got.warnings:
            warned[path.name] = got.warnings
        assert got.invoice_number == inv.invoice_number  # the XML's values stand
    print("warned:", warned)
    # these show another total (963,12 against 963.11) or another invoice's number than their XML;
    # the other 15 hybrids show what their XML says
    assert set(warned) == {"MustangBeispiel20221026.pdf", "validXRechnung.pdf",
                           "MustangGnuaccountingBeispielRE-20201121_508_withBOM.pdf",
                           "factur-x-invalid-xml-encoding-attribute.pdf"}
    assert "963.12" in warned["MustangBeispiel20221026.pdf"][0]


def test_the_disagreement_is_a_warning_on_the_document_through_the_gateway(gateway: Gateway) -> None:
    path = CORPUS / "einvoices/mustangproject/validator/src/test/resources/validXRechnung.pdf"
    gateway.send(make_mail(subject="Rechnung", attachments=[(path.name, path.read_bytes(), "application/pdf")]))
    [doc] = wait_for(lambda: gateway.api("/api/documents").json()["items"], timeout=20)
    assert doc["invoice_number"] == "RE-20190610/507" and doc["field_sources"]["invoice_number"]["source"] == "einvoice"
    assert any("RE-20200620/508" in w and "RE-20190610/507" in w for w in doc["warnings"]), doc["warnings"]
