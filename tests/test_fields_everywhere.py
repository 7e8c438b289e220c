"""The fields read from every document, used everywhere: naming, the sidecar and e-mail subjects."""

from __future__ import annotations

import json


def test_naming_and_mail_subjects_use_the_fields_and_leave_guesses_out() -> None:
    from gateway.exporters.base import naming_values
    from gateway.exporters.email import render_subject
    from gateway.naming import render_pattern

    fields = {"fields": {"seller": "Acme GmbH", "invoice_number": "A-7", "issue_date": "2026-03-31",
                         "due_date": "2026-04-30", "currency": "EUR", "grand_total": "1190.00", "net_total": "1000.00",
                         "amount_due": "1190.00", "seller_vat_id": "DE136695976", "document_type": "invoice"},
              "field_sources": {"seller": {"source": "text", "confidence": 0.9},
                                "issue_date": {"source": "text", "confidence": 0.9},
                                "due_date": {"source": "text", "confidence": 0.9}}}
    doc = {"id": 3, "filename": "scan.pdf", "fields": json.dumps(fields), "created": "2026-04-01T10:00:00+00:00"}
    values = naming_values(doc, {"received": "2026-04-01T10:00:00+00:00", "sender": "x@acme.example"})
    assert render_pattern("{issue_date:%Y-%m}/{seller}_{invoice_number}_{total}{currency}_{document_type}",
                          values, "pdf") == "2026-03/Acme GmbH_A-7_1190.00EUR_invoice.pdf"
    assert render_pattern("{net_total}_{amount_due}_{seller_vat_id}_{company}", values, "pdf") == \
        "1000.00_1190.00_DE136695976_Acme GmbH.pdf"
    assert render_subject("Rechnung {seller} {invoice_number} über {total:,.2f} {currency}, fällig {due_date:%d.%m.%Y}",
                          values, "scan.pdf") == "Rechnung Acme GmbH A-7 über 1,190.00 EUR, fällig 30.04.2026"
    # the sender's display name and a letterhead guess never name a file
    fields["field_sources"]["seller"] = {"source": "mail", "confidence": 0.3}
    guessed = naming_values(dict(doc, fields=json.dumps(fields)), {})
    assert render_pattern("{seller}_{company}", guessed, "pdf") == "unknown_unknown.pdf"
