"""The exporter interface, the item it delivers, and the lookup by ``type:``."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Protocol

from gateway.config import ExportConfig
from gateway.naming import render_pattern, split_ext


@dataclass(frozen=True)
class ExportItem:
    """One document on its way to one target.

    Attributes:
        export_id: the row in ``exports``.
        document_id: the document's id.
        path: where the document's bytes are (content-addressed store).
        relpath: the name the target should give it (pattern applied, safe, with extension).
        content_type: the document's MIME type.
        filename: the document's own (safe) file name.
        sha256: hex digest of the bytes.
        metadata: what a sidecar or a mail body says about it.
        values: the naming fields (``naming_values``), for patterns such as a mail subject.
    """

    export_id: int
    document_id: int
    path: Path
    relpath: str
    content_type: str
    filename: str
    sha256: str
    metadata: Mapping[str, Any]
    values: Mapping[str, Any] = field(default_factory=dict)

    def read(self) -> bytes:
        """The document's bytes."""
        return self.path.read_bytes()

    def sidecar(self) -> bytes:
        """The JSON sidecar (``sidecar: json``)."""
        return json.dumps(self.metadata, indent=2, ensure_ascii=False, default=str).encode("utf-8") + b"\n"


class Exporter(Protocol):
    """Delivers one document; raises ExportError saying whether a retry can help.

    Two optional attributes the runner looks for: ``batch()``, a context in which a
    thread's deliveries share a connection (webdav), and ``recognises_redelivery = True``
    when a document delivered a second time is found, not doubled (folder, webdav; not
    email): then the runner records the deliveries of a run in batched durable commits.
    """

    def deliver(self, item: ExportItem) -> str:
        """Deliver ``item``; return where it went (a path, a URL, a Message-ID)."""
        ...


def _dt(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        d = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return d


# how sure a field read from the text must be to name a file (as for the document's company and date:
# "unknown" beats a wrong name); the sender's display name (source "mail") never names one
_SURE = {"issue_date": 0.8}
_AMOUNTS = ("net_total", "tax_total", "grand_total", "amount_due")


def stored_fields(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A document's stored ``fields`` JSON: ``{"fields": {...}, "field_sources": {...}}`` (empty when none)."""
    raw = doc.get("fields")
    try:
        got = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        return {}
    return got if isinstance(got, dict) else {}


def sure_fields(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The document's fields that may name a file: dates as dates, amounts as decimals; guesses left out."""
    stored = stored_fields(doc)
    values = stored.get("fields") or {}
    sources = stored.get("field_sources") or {}
    out: dict[str, Any] = {}
    for name, value in values.items() if isinstance(values, dict) else ():
        src = sources.get(name) or {}
        if value in (None, "") or src.get("source") == "mail" or float(src.get("confidence", 1)) < _SURE.get(name, 0.5):
            continue
        if name in ("issue_date", "due_date"):
            try:
                out[name] = dt.date.fromisoformat(str(value)[:10])
            except ValueError:
                continue
        elif name in _AMOUNTS:
            try:
                out[name] = Decimal(str(value))
            except InvalidOperation:
                continue
        else:
            out[name] = str(value)
    return out


def naming_values(doc: Mapping[str, Any], msg: Mapping[str, Any]) -> dict[str, Any]:
    """The fields a naming pattern (and a mail subject) may use: the mail's, and the document's fields."""
    received = _dt(msg.get("received")) or _dt(doc.get("created"))
    doc_date = None
    if doc.get("doc_date"):
        try:
            doc_date = dt.datetime.fromisoformat(str(doc["doc_date"])[:10])
        except ValueError:
            doc_date = None
    einv = doc.get("einvoice")
    if isinstance(einv, str):
        einv = json.loads(einv)
    einv = einv or {}
    sender = msg.get("sender") or msg.get("mail_from") or ""
    addr = sender.rpartition("<")[2].rstrip(">").strip() if "<" in sender else sender.strip()
    stem, _ = split_ext(str(doc.get("filename") or "document"))
    f = sure_fields(doc)
    return {
        "date": doc_date or received,
        "received": received,
        "company": doc.get("company") or f.get("seller"),
        "document_type": doc.get("document_type") or f.get("document_type"),
        "invoice_number": doc.get("invoice_number") or einv.get("invoice_number") or f.get("invoice_number"),
        "sender": addr,
        "sender_domain": addr.rpartition("@")[2] if "@" in addr else None,
        "subject": msg.get("subject"),
        "stem": stem,
        "id": doc.get("id"),
        "seller": f.get("seller") or einv.get("seller"),
        "seller_vat_id": f.get("seller_vat_id"),
        "buyer": f.get("buyer"),
        "issue_date": f.get("issue_date"),
        "due_date": f.get("due_date"),
        "total": f.get("grand_total") or f.get("amount_due") or einv.get("grand_total"),
        "net_total": f.get("net_total"),
        "tax_total": f.get("tax_total"),
        "amount_due": f.get("amount_due"),
        "currency": f.get("currency") or einv.get("currency"),
        "tag": msg.get("tag"),
        "source": msg.get("source"),
    }


def _masked(fields: Mapping[str, Any]) -> dict[str, Any]:
    """A document's fields with its IBAN masked (``DE89 **** ... 3000``)."""
    out = dict(fields)
    if out.get("iban"):
        from gateway.payment_guard import mask_iban

        out["iban"] = mask_iban(str(out["iban"]))
    return out


def build_item(export_row: Mapping[str, Any], doc: Mapping[str, Any], msg: Mapping[str, Any],
               target: ExportConfig, data_dir: Path) -> ExportItem:
    """The ExportItem for an export row, with its name from the target's pattern."""
    values = naming_values(doc, msg)
    _, ext = split_ext(str(doc["filename"]))
    relpath = render_pattern(target.filename, values, ext.lower())
    tags = doc.get("tags") or "[]"
    einv = doc.get("einvoice")
    metadata = {
        "document_id": doc["id"],
        "filename": doc["filename"],
        "sha256": doc["sha256"],
        "sender": msg.get("sender"),
        "subject": msg.get("subject"),
        "received": msg.get("received"),
        "source": msg.get("source"),
        "company": doc.get("company"),
        "document_type": doc.get("document_type"),
        "invoice_number": values["invoice_number"],
        "date": doc.get("doc_date"),
        "tags": json.loads(tags) if isinstance(tags, str) else tags,
        "note": target.note or doc.get("note"),
        "einvoice": json.loads(einv) if isinstance(einv, str) else einv,
        "warnings": json.loads(doc.get("warnings") or "[]"),
        "payment_details_changed": json.loads(doc.get("payment_details_changed") or "null"),
        # every field read (or corrected, or assigned), with where each came from; the IBAN masked,
        # as everywhere in exports: the account number stays out of them
        "fields": _masked(stored_fields(doc).get("fields") or {}),
        "field_sources": stored_fields(doc).get("field_sources") or {},
    }
    return ExportItem(
        export_id=int(export_row["id"]), document_id=int(doc["id"]), path=data_dir / str(doc["path"]),
        relpath=relpath, content_type=str(doc["content_type"]), filename=str(doc["filename"]),
        sha256=str(doc["sha256"]), metadata=metadata, values=values,
    )


def make_exporter(target: ExportConfig) -> Exporter:
    """The exporter for a target's ``type:``."""
    if target.type == "folder":
        from gateway.exporters.folder import FolderExporter

        return FolderExporter(target)
    if target.type == "webdav":
        from gateway.exporters.webdav import WebDAVExporter

        return WebDAVExporter(target)
    if target.type == "email":
        from gateway.exporters.email import EmailExporter

        return EmailExporter(target)
    raise ValueError(f"unknown export type {target.type!r}")
