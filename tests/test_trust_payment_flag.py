"""A changed bank account is a field of the document, not only a warning: in the API, on the
document page (prominent) and in the export sidecar, with the IBANs masked."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import Gateway, make_mail, wait_for
from gateway.payment_guard import format_iban
from test_trust_iban import NEW, OLD, text_pdf
from test_web_pages import Browserless, settle

SENDER = "Muster <rechnung@muster-buero.example>"
NEW_MASKED, OLD_MASKED = "DE89 **** **** **** **30 00", "DE02 **** **** **** **20 51"


def send_invoice(gw: Gateway, n: int, iban: str) -> None:
    pdf = text_pdf(f"Invoice {n} - IBAN {format_iban(iban)}")
    gw.send(make_mail(sender=SENDER, subject=f"Invoice {n}", attachments=[(f"invoice-{n}.pdf", pdf, "application/pdf")]))


def test_changed_iban_in_api_page_and_sidecar(gateway_factory: Callable[..., Gateway], workdir: Path) -> None:
    gw = gateway_factory(exports=[{"name": "nas", "type": "folder", "path": str(workdir / "exports"),
                                   "sidecar": "json"}])
    send_invoice(gw, 1, OLD)
    settle(gw, 1)
    send_invoice(gw, 2, NEW)
    settle(gw, 2)
    sidecars = wait_for(lambda: (s := sorted((workdir / "exports").rglob("*.json"))) and len(s) == 2 and s, timeout=15)

    listing = gw.api("/api/documents").json()["items"]
    by_name = {d["filename"]: d for d in listing}
    first, second = by_name["invoice-1.pdf"], by_name["invoice-2.pdf"]
    assert first["payment_details_changed"] is None
    flag = second["payment_details_changed"]
    assert flag["iban"] == NEW_MASKED and flag["previous_ibans"] == [OLD_MASKED]
    assert flag["seller"] == "domain muster-buero.example"
    assert flag["previous_message_id"] == first["message_id"] and flag["previous_seen_at"]
    assert gw.api(f"/api/documents/{second['id']}").json()["payment_details_changed"] == flag

    sides = {p.name: json.loads(p.read_text()) for p in sidecars}
    assert sides["invoice-1.pdf.json"]["payment_details_changed"] is None
    assert sides["invoice-2.pdf.json"]["payment_details_changed"] == flag
    exported = "".join(p.read_text() for p in sidecars)
    assert NEW not in exported.replace(" ", "") and OLD not in exported.replace(" ", "")

    client = Browserless(gw)
    try:
        assert client.login().status_code == 302
        page = client.get(f"/documents/{second['id']}").text
        banner = page[page.index('id="payment-details-changed"'):]
        banner = banner[:banner.index("</p>")]
        assert "Payment details changed" in banner and NEW_MASKED in banner and OLD_MASKED in banner
        assert "domain muster-buero.example" in banner and f"/messages/{first['message_id']}" in banner
        # above the preview and the details: seen first
        assert page.index('id="payment-details-changed"') < page.index("<h2>Preview</h2>")
        other: Any = client.get(f"/documents/{first['id']}").text
        assert "payment-details-changed" not in other
    finally:
        client.close()
