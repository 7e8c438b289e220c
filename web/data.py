"""What the pages and the JSON API show: rows of the store turned into plain data.

Both the HTML pages and ``/api`` build their answers here, so a page never
shows something the API cannot give.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from gateway import mimeheaders
from gateway.store import EXPORT_STATES, MESSAGE_STATUSES, decision_of, iso

PROBLEM_STATUSES = ("unmatched", "quarantined", "suspicious")


def loads(value: Any, default: Any) -> Any:
    """A JSON column as data (``default`` when empty or broken)."""
    if value is None:
        return default
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return default
    return value


def timezone(settings: Any) -> dt.tzinfo:
    """The zone dates are shown and counted in (``timezone`` setting, else the system's)."""
    if settings.timezone:
        try:
            return ZoneInfo(settings.timezone)
        except (ValueError, KeyError, OSError):
            pass
    tz = dt.datetime.now().astimezone().tzinfo
    return tz or dt.timezone.utc


def parse_time(value: str | dt.datetime | None) -> dt.datetime | None:
    """An ISO timestamp from the store (or a datetime) as an aware datetime."""
    if not value:
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    try:
        t = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


# -- documents and messages --------------------------------------------------------


def export_json(e: dict[str, Any]) -> dict[str, Any]:
    """An export row as the API shows it."""
    out = {"id": e["id"], "document_id": e["document_id"], "target": e["target"], "state": e["state"],
           "attempts": e["attempts"], "location": e["location"], "error": e["last_error"],
           "next_attempt": e["next_attempt"], "created": e["created"], "delivered_at": e["delivered_at"]}
    if "filename" in e:
        out["filename"] = e["filename"]
    return out


def document_fields(doc: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A document's ``fields`` and ``field_sources``; a document stored before fields were read has its XML's, if any."""
    from gateway.fields import FIELD_NAMES

    stored = loads(doc.get("fields"), None)
    if isinstance(stored, dict):
        values = stored.get("fields") or {}
        return {k: values.get(k) for k in FIELD_NAMES}, dict(stored.get("field_sources") or {})
    inv = loads(doc.get("einvoice"), None) or {}
    values = {k: (inv.get(k) or None) for k in FIELD_NAMES}
    if inv:
        values["document_type"] = "credit_note" if inv.get("document_type") == "credit_note" else "invoice"
    return values, {k: {"source": "einvoice", "confidence": 1.0} for k, v in values.items() if v}


def document_json(service: Any, doc: dict[str, Any]) -> dict[str, Any]:
    """A document as the API shows it, with its export state and fields."""
    fields, sources = document_fields(doc)
    return {
        "id": doc["id"],
        "message_id": doc["message_id"],
        "filename": doc["filename"],
        "content_type": doc["content_type"],
        "kind": doc["kind"],
        "origin": doc["origin"],
        "size": doc["size"],
        "sha256": doc["sha256"],
        "created": doc["created"],
        "date": doc["doc_date"],
        "company": doc["company"],
        "document_type": doc["document_type"],
        "invoice_number": doc["invoice_number"],
        "supplier_id": doc.get("supplier_id"),
        "tags": loads(doc["tags"], []),
        "note": doc["note"],
        "einvoice": loads(doc["einvoice"], None),
        "fields": fields,
        "field_sources": sources,
        "warnings": loads(doc["warnings"], []),
        # OCR of a scan or photo: pending or running (its exports wait), done, failed; None: not needed
        "ocr": doc.get("ocr"),
        "payment_details_changed": loads(doc["payment_details_changed"], None),
        "approved": doc["approved_at"] is not None,
        "approved_at": doc["approved_at"],
        # no imported mail links it any more (its mail was re-decided); the message's reason says more
        "orphaned": service.store.is_orphaned(doc["id"]),
        "archived": doc["archived_at"] is not None,
        "exports": [
            {"id": e["id"], "target": e["target"], "state": e["state"], "attempts": e["attempts"],
             "location": e["location"], "error": e["last_error"], "next_attempt": e["next_attempt"],
             "delivered_at": e["delivered_at"]}
            for e in service.store.exports_of(doc["id"])
        ],
        "file": f"/api/documents/{doc['id']}/file",
        "thumbnail": f"/api/documents/{doc['id']}/thumbnail",
    }


def message_json(service: Any, msg: dict[str, Any], *, full: bool = False) -> dict[str, Any]:
    """A message as the API shows it (``full``: with the whole decision)."""
    out: dict[str, Any] = {
        "id": msg["id"],
        "received": msg["received"],
        "source": msg["source"],
        "sender": msg["sender"],
        "mail_from": msg["mail_from"],
        "recipients": loads(msg["rcpt_tos"], []),
        "import_address": msg["import_address"],
        "tag": msg["tag"],
        "subject": msg["subject"],
        "message_id": msg["message_id"],
        "size": msg["size"],
        "sha256": msg["sha256"],
        "status": msg["status"],
        "reason": msg["reason"],
        "duplicate_of": msg["duplicate_of"],
        "processed_at": msg.get("processed_at"),
        "documents": [document_json(service, d) for d in service.store.documents_of(msg["id"])],
    }
    decision = decision_json(service, msg) if full else loads(msg["decision"], None)
    if not isinstance(decision, dict):
        decision = None
    out["decision"] = decision if full else (
        {"rule": decision.get("rule"), "action": decision.get("action")} if decision else None)
    if msg.get("auth"):
        out["authentication"] = loads(msg["auth"], None)
    if full:
        out["raw"] = f"/api/messages/{msg['id']}/raw"
        out["headers"] = [[name, value] for name, value in headers_of(raw_path(service, msg))]
    return out


def decision_json(service: Any, msg: dict[str, Any]) -> dict[str, Any] | None:
    """A message's stored decision with its explanation in words (gateway.explain.stored_explanation)."""
    from gateway.explain import stored_explanation

    decision = decision_of(msg["decision"])
    if decision is None:
        return None
    current = getattr(getattr(service, "rules", None), "ruleset", None)
    return stored_explanation(decision, msg, raw_path=raw_path(service, msg),
                              data_dir=Path(service.settings.data_dir), current=current,
                              learned=service.store.learned_for, named=supplier_names(service))


EINVOICE_LABELS = (
    ("seller", "Seller"), ("seller_vat_id", "Seller VAT ID"), ("buyer", "Buyer"),
    ("buyer_reference", "Buyer reference"), ("invoice_number", "Invoice number"), ("document_type", "Type"),
    ("issue_date", "Issued"), ("due_date", "Due"), ("net_total", "Net"), ("tax_total", "Tax"),
    ("grand_total", "Total"), ("amount_due", "Amount due"), ("iban", "IBAN"), ("syntax", "Syntax"),
    ("profile", "Profile"),
)
_MONEY = ("net_total", "tax_total", "grand_total", "amount_due")


def einvoice_rows(fields: dict[str, Any] | None) -> list[tuple[str, str]]:
    """An e-invoice's fields as (label, text), the important ones first; amounts with their currency."""
    if not fields:
        return []
    currency = str(fields.get("currency") or "")
    known = dict(EINVOICE_LABELS)
    order = [k for k, _ in EINVOICE_LABELS if fields.get(k) not in (None, "")]
    order += sorted(k for k in fields if k not in known and k != "currency" and fields[k] not in (None, ""))
    rows = []
    for key in order:
        value = str(fields[key])
        if key in _MONEY and currency:
            value = f"{value} {currency}"
        rows.append((known.get(key, key.replace("_", " ").capitalize()), value))
    return rows


def raw_path(service: Any, msg: dict[str, Any]) -> Path | None:
    """The stored .eml of a message, if it is there (and inside data_dir)."""
    root = Path(service.settings.data_dir).resolve()
    path = (root / str(msg["raw_path"])).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        return None
    return path


def headers_of(path: Path | None, limit: int = 300) -> list[tuple[str, str]]:
    """The decoded header lines of a stored message (empty when unreadable).

    Read as the pipeline reads them (gateway.mimeheaders): every field is
    bounded, so a hostile header costs this process no more than it cost a worker.
    """
    if path is None:
        return []
    try:
        with path.open("rb") as fh:
            head = fh.read(mimeheaders.HEAD_READ)
    except OSError:
        return []
    return [(name, value[:2000]) for name, value in mimeheaders.read_headers(head, limit)]


# -- mailboxes, targets, rules -------------------------------------------------------


def schedule_json(s: Any) -> dict[str, Any] | None:
    """A schedule as data."""
    if s is None:
        return None
    return {"every": s.every, "days": list(s.days), "between": s.between}


def mailbox_json(service: Any, cfg: Any) -> dict[str, Any]:
    """A configured mailbox with its recorded state (no secrets)."""
    state = service.store.mailbox_status(cfg.name) or {}
    state = dict(state)
    state.pop("name", None)
    state["stats"] = loads(state.get("stats"), {})
    poller = service.pollers.get(cfg.name)
    return {
        "name": cfg.name, "provider": cfg.provider, "host": cfg.host, "port": cfg.port,
        "security": cfg.security, "username": cfg.username, "folders": list(cfg.folders),
        "since": cfg.since.isoformat() if cfg.since else None, "schedule": schedule_json(cfg.schedule),
        "idle": cfg.idle, "after_import": cfg.after_import, "oauth2": cfg.oauth2 is not None,
        "poller_running": poller is not None,
        "state": {k: state.get(k) for k in ("last_poll", "last_success", "last_error", "error_kind", "hint",
                                            "failures", "next_attempt", "stats")},
        "ok": bool(state) and not state.get("last_error") if state else None,
        "poll_errors": service.store.poll_errors().get(cfg.name, {}),
        "folder_states": [folder_state_json(f) for f in service.store.imap_folders(cfg.name)],
    }


def folder_state_json(row: dict[str, Any]) -> dict[str, Any]:
    """One IMAP folder's last poll: when, what it found, its error, and where the next poll starts."""
    stats = loads(row.get("stats"), {})
    return {
        "folder": row["folder"], "last_poll": row.get("last_poll"), "last_success": row.get("last_success"),
        "last_error": row.get("last_error"), "error_kind": row.get("error_kind"),
        "counts": {k: int(stats.get(k, 0)) for k in ("scanned", "downloaded", "skipped", "known")}
        if isinstance(stats, dict) else {},
        "uidvalidity": row.get("uidvalidity"), "last_uid": row.get("last_uid"),
    }


def target_destination(cfg: Any) -> str:
    """Where a target delivers to, for people (no credentials)."""
    if cfg.type == "folder":
        return str(cfg.path)
    if cfg.type == "webdav":
        return str(cfg.url)
    return f"mail to {cfg.to}"


def target_json(service: Any, cfg: Any, counts: dict[str, dict[str, int]] | None = None,
                health: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """A configured export target with its queue counts and last success and error."""
    counts = service.store.export_counts() if counts is None else counts
    health = service.store.export_health() if health is None else health
    c = {s: counts.get(cfg.name, {}).get(s, 0) for s in EXPORT_STATES}
    h = health.get(cfg.name, {})
    f = cfg.filter
    return {
        "name": cfg.name, "type": cfg.type, "destination": target_destination(cfg), "enabled": cfg.enabled,
        "schedule": schedule_json(cfg.schedule), "require_approval": cfg.require_approval,
        "archive_after_export": cfg.archive_after_export, "filename": cfg.filename,
        "filter": {"document_types": list(f.document_types), "tags": list(f.tags),
                   "companies": list(f.companies), "sources": list(f.sources)},
        "counts": c, "last_delivered": h.get("last_delivered"), "last_error": h.get("last_error"),
        "last_error_document": h.get("last_error_document"), "last_error_state": h.get("last_error_state"),
        "last_error_permanent": h.get("last_error_permanent"), "last_error_attempts": h.get("last_error_attempts"),
        "last_error_next_attempt": h.get("last_error_next_attempt"),
        "ok": not (c["failed"] or c["error"]),
    }


def problem_json(p: Any) -> dict[str, Any]:
    """A rules load problem as data."""
    return {"file": getattr(p, "file", None), "line": getattr(p, "line", None), "key": getattr(p, "key", None),
            "message": getattr(p, "message", str(p)), "text": str(p)}


def rule_json(rule: Any) -> dict[str, Any]:
    """A loaded rule, as far as people need to see it."""
    return {"name": rule.name, "file": rule.file, "line": getattr(rule, "line", None),
            "priority": getattr(rule, "priority", None), "action": getattr(rule, "action", None),
            "import": getattr(rule, "import_mode", None),
            "attachments": list(getattr(rule, "attachment_globs", ()) or ())}


def rules_json(service: Any) -> dict[str, Any]:
    """The rule set in force, by file, with the load problems."""
    state = service.rules
    ruleset = state.ruleset
    rules = [rule_json(r) for r in ruleset.rules] if ruleset is not None else []
    files: dict[str, list[str]] = {}
    if ruleset is not None:
        files = {f: list(names) for f, names in sorted(ruleset.files.items())}
    return {
        "dir": str(service.settings.rules_dir),
        "in_force": ruleset is not None,
        "loaded_at": iso(state.loaded_at) if state.loaded_at else None,
        "count": len(rules),
        "files": files,
        "rules": rules,
        "problems": [problem_json(p) for p in state.problems],
        "last_reexamine": service.store.get_kv("last_reexamine"),
        "policy": {"smtp": service.settings.unmatched.smtp, "imap": service.settings.unmatched.imap,
                   "folder": service.settings.unmatched.folder, "import": service.settings.unmatched.import_},
    }


# -- the dashboard -------------------------------------------------------------------


def _month_start(t: dt.datetime, back: int) -> dt.date:
    y, m = t.year, t.month - back
    while m <= 0:
        y, m = y - 1, m + 12
    return dt.date(y, m, 1)


def counts(service: Any, now: dt.datetime | None = None) -> dict[str, int]:
    """The dashboard's numbers."""
    store = service.store
    tz = timezone(service.settings)
    local = (now or dt.datetime.now(dt.timezone.utc)).astimezone(tz)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    first = midnight.replace(day=1)
    by_status = store.status_counts()
    exports = store.export_counts()
    return {
        "received_today": store.list_messages(limit=1, since=iso(midnight))[1],
        "received_month": store.list_messages(limit=1, since=iso(first))[1],
        "messages": sum(by_status.values()),
        **{s: by_status.get(s, 0) for s in MESSAGE_STATUSES},
        "problems": sum(by_status.get(s, 0) for s in PROBLEM_STATUSES),
        "documents": store.document_count(),
        "export_failures": sum(v.get("failed", 0) + v.get("error", 0) for v in exports.values()),
        "export_pending": sum(v.get("pending", 0) for v in exports.values()),
        "awaiting_approval": store.list_documents(limit=1, approved=False, export_state="pending")[1],
        "orphaned": store.list_documents(limit=1, orphaned=True, archived=None)[1],
    }


def months(service: Any, now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Documents per month over the last 12 months, oldest first."""
    t = (now or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc)
    starts = [_month_start(t, back) for back in range(11, -1, -1)]
    per = service.store.document_months(starts[0].isoformat())
    return [{"month": d.strftime("%Y-%m"), "documents": per.get(d.strftime("%Y-%m"), 0)} for d in starts]


def companies(service: Any, limit: int = 10) -> list[dict[str, Any]]:
    """The companies with the most documents."""
    return [{"company": c, "documents": n} for c, n in service.store.document_companies(limit)]


def spend(service: Any, now: dt.datetime | None = None) -> dict[str, Any]:
    """Spend over the last 12 months by issue date: per currency per month, and per supplier.

    The sum of the documents' grand totals (invoices, receipts and documents of
    unknown type; a credit note subtracts), in each currency on its own: amounts
    in different currencies are never added up. Totals are decimal strings.
    """
    from web import documents_query as dq

    t = (now or dt.datetime.now(dt.timezone.utc)).astimezone(timezone(service.settings))
    starts = [_month_start(t, back) for back in range(11, -1, -1)]
    until = (starts[-1] + dt.timedelta(days=32)).replace(day=1)
    found = dq.spend(service.store._conn(), starts[0], until)
    per = found.months
    ordered = sorted(per, key=lambda c: (-sum(abs(v) for v in per[c].values()), c))
    keys = [d.strftime("%Y-%m") for d in starts]
    zero = Decimal("0.00")
    return {
        "since": starts[0].isoformat(),
        "currencies": [{"currency": c, "total": str(sum(per[c].values(), zero)),
                        "months": [{"month": m, "total": str(per[c].get(m, zero))} for m in keys]}
                       for c in ordered],
        "suppliers": [dict(s, total=str(s["total"])) for c in ordered for s in found.suppliers if s["currency"] == c],
    }


def dashboard(service: Any, now: dt.datetime | None = None) -> dict[str, Any]:
    """Everything the dashboard shows."""
    store = service.store
    rows, _ = store.list_messages(limit=8)
    recent_exports = store.list_exports(limit=6)
    export_counts = store.export_counts()
    health = store.export_health()
    parts = service.health()
    return {
        "counts": counts(service, now),
        "months": months(service, now),
        "companies": companies(service),
        "spend": spend(service, now),
        "recent_messages": [
            {k: r[k] for k in ("id", "received", "source", "sender", "subject", "status", "reason")} for r in rows],
        "recent_exports": [export_json(e) for e in recent_exports],
        "mailboxes": [mailbox_json(service, m) for m in service.settings.mailboxes],
        "targets": [target_json(service, t, export_counts, health) for t in service.settings.exports],
        "rules": {k: v for k, v in rules_json(service).items() if k not in ("rules", "files")},
        "health": {"parts": parts, "down": [k for k, ok in parts.items() if not ok]},
        "smtp": dict(service.smtp.stats) if service.smtp is not None else None,
    }


# -- suppliers ---------------------------------------------------------------------


def supplier_names(service: Any) -> Any:
    """``Suppliers.name`` of the running gateway, or over the store alone (``show`` in the CLI)."""
    pipeline = getattr(service, "pipeline", None)
    if pipeline is not None:
        return pipeline.suppliers.name
    from gateway.fields.suppliers import Suppliers

    return Suppliers(service.store, {a.address.rpartition("@")[2] for a in service.settings.smtp.addresses}).name


def suppliers_json(service: Any) -> list[dict[str, Any]]:
    """Every supplier as the API lists it: id, name, number of documents, totals per currency."""
    return [{"id": s["id"], "name": s["name"], "documents": s["documents"], "totals": s["totals"],
             "created": s["created"], "updated": s["updated"]}
            for s in service.pipeline.suppliers.list()]


def supplier_json(service: Any, supplier_id: int) -> dict[str, Any] | None:
    """One supplier with its keys (IBANs masked), documents, totals per month and the rules naming it."""
    from gateway.fields.suppliers import rules_naming

    s: dict[str, Any] | None = service.pipeline.suppliers.get(supplier_id)
    if s is None:
        return None
    ruleset = service.rules.ruleset
    s["rules"] = rules_naming(ruleset, s) if ruleset is not None else []
    return s
