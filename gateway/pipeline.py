"""Spool item -> parse -> rules -> documents -> store -> export queue.

A worker claims a ``received`` message, works, and records the outcome in
one transaction (claim, then acknowledge). Processing is idempotent:
documents are content-addressed by SHA-256 and export rows are unique per
(document, target), so running a message twice after a crash doubles nothing.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import hashlib
import io
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway import mime
from gateway.config import ExportConfig, Settings
from gateway.errors import GatewayError, ParseError, RenderError
from gateway.docfields import Readings, invoice_signs
from gateway.fields import apply_assign
from gateway.fields import columns as field_columns
from gateway.fields import read_document as read_fields
from gateway.fields.suppliers import Suppliers, with_supplier
from gateway.forwarded import forwarded_sender
from gateway.models import Attachment, Decision, MailView, ParsedMessage
from gateway.ocr.images import image_type
from gateway.payment_guard import PaymentGuard, vouched_by
from gateway.rules.trace import stored as stored_explanation
from gateway.senderauth import SenderAuth, from_domain
from gateway.senderauth.hold import claimed_rule, hold_reason
from gateway.store import DedupKey, Row, Store

log = logging.getLogger(__name__)

# The invoice words of the `recognize` policy (README lists them): whole words
# with their plurals ("bill" is not "billing", "Beleg" not "Belegschaft" or
# "belegt", "Rechnung" not "Rechnungsadresse"), where letters delimit words, so
# "Invoice_42.pdf" and "rechnung-2026.pdf" count. The German words may end a
# compound: a Stromrechnung or a Kassenbeleg is an invoice.
_L = "a-zà-öø-ÿß"
_INVOICE_RE = re.compile(
    rf"(?<![{_L}])(?:invoices?|factures?|factuur|facturen|fattur[ae]|facturas?|receipts?|credit ?notes?|"
    rf"fakturas?|nota fiscal|bills?)(?![{_L}])"
    rf"|(?:rechnung(?:en)?|quittung(?:en)?|beleg(?:e|s|en)?|gutschrift(?:en)?)(?![{_L}])", re.I)
MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class NewDocument:
    """A document the pipeline is about to store.

    Attributes:
        filename: the safe file name.
        content_type: the MIME type.
        kind: pdf, xml or other.
        origin: attachment, body (the mail rendered), einvoice-render or image (a photo or scan made a PDF).
        data: the bytes.
        einvoice: the e-invoice read from it, or None.
        warnings: findings about the file itself (hostile XML refused, say),
            shown beside the e-invoice's own warnings.
    """

    filename: str
    content_type: str
    kind: str
    origin: str
    data: bytes
    einvoice: Any = None
    warnings: tuple[str, ...] = ()

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the bytes."""
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class Outcome:
    """What processing one message decided (mutable while it is built)."""

    status: str = "unmatched"
    reason: str = ""
    documents: list[NewDocument] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    decision: dict[str, Any] = field(default_factory=dict)
    assign: dict[str, Any] = field(default_factory=dict)
    sender_domain: str = ""
    sender_name: str = ""
    readings: Readings | None = None
    iban_records: list[tuple[str, str, str | None]] = field(default_factory=list)


class RulesState:
    """The rule set in force (swapped whole by the rules watcher) and its load problems."""

    def __init__(self) -> None:
        self.ruleset: Any = None
        self.problems: list[Any] = []
        self.loaded_at: dt.datetime | None = None
        self.lock = threading.Lock()

    def decide(self, view: MailView, require_authenticated_sender: bool = False) -> Decision:
        """The decision of the current rule set (no rules: unmatched).

        Its explanation lists every rule tried before the deciding one, each
        with the first condition that failed (see ``RuleSet.decide``).
        """
        ruleset = self.ruleset
        if ruleset is None:
            return Decision(rule=None, action="unmatched")
        result: Decision = ruleset.decide(view, require_authenticated_sender=require_authenticated_sender)
        return result


def duplicate_reason(first: Row, sha256: str) -> str:
    """The reason of a ``duplicate``: which copy came first, how they are the same, and its route."""
    how = "the same bytes" if first["sha256"] == sha256 else "the same Message-ID and body"
    return f"same message as #{first['id']} ({how}, via {first['source']})"


def _einvoice_examine(att: Attachment) -> Any:
    """The e-invoice examination of an attachment (``einvoice.Examination``)."""
    from gateway import einvoice

    return einvoice.examine(att.data, att.filename, att.content_type)


def _einvoice_detect(att: Attachment) -> Any:
    """The e-invoice in an attachment, or None."""
    return _einvoice_examine(att).einvoice


def is_document(att: Attachment) -> bool:
    """Whether an attachment can be a document: a real PDF or XML file."""
    return att.kind in ("pdf", "xml") and len(att.data) > 0


def declared_pdf(att: Attachment) -> bool:
    """Whether the mail calls the part a PDF (by type or name)."""
    return att.content_type == "application/pdf" or att.filename.lower().endswith(".pdf")


def pdf_text(data: bytes, pages: int = 2, limit: int = 20000) -> str:
    """The text of a PDF's first pages ("" when it cannot be read)."""
    try:
        import pypdf

        reader = pypdf.PdfReader(io.BytesIO(data), strict=False)
        out = []
        for page in reader.pages[:pages]:
            out.append(page.extract_text() or "")
            if sum(map(len, out)) > limit:
                break
        return "\n".join(out)[:limit]
    except Exception:
        return ""


def invoice_hint(att: Attachment, parsed: ParsedMessage) -> str | None:
    """Why a PDF looks like an invoice (a word in subject, name or text), or None."""
    for where, text in (("file name", att.filename), ("subject", parsed.subject)):
        m = _INVOICE_RE.search(text)
        if m:
            return f"{where} contains {m.group(0)!r}"
    if att.kind == "pdf":
        m = _INVOICE_RE.search(pdf_text(att.data))
        if m:
            return f"PDF text contains {m.group(0)!r}"
    return None


def readings_of(parsed: ParsedMessage, learned: Any = None, named: Any = None) -> tuple[Readings, Any]:
    """The documents' fields of a parsed mail as the pipeline reads them (``Readings``), and its first e-invoice.

    ``learned``: the store's ``learned_for``, so that a supplier's learned layout counts as in the gateway;
    ``named``: ``Suppliers.name``, so that a seller is named by its supplier as in the gateway.
    """
    candidates = [a for a in parsed.attachments if is_document(a)]
    einvoices = {id(a): _einvoice_detect(a) for a in candidates}
    first = next((inv for inv in einvoices.values() if inv is not None), None)
    name = parsed.sender.name if parsed.sender else ""
    return Readings(candidates, einvoices, name, from_domain(parsed), learned=learned, named=named), first


def read_invoice_hint(readings: Readings | None, att: Attachment) -> str | None:
    """Why a PDF's fields make it an invoice (``invoice_signs``), as ``invoice_hint`` says it, or None."""
    if readings is None:
        return None
    signs = invoice_signs(readings.of(att))
    return f"its fields read as one: {signs}" if signs else None


def bulk_reason(parsed: ParsedMessage) -> str | None:
    """Why a mail is mailing-list or bulk mail (a newsletter, an automatic notice), or None.

    RFC 2369 (List-*), RFC 2919 (List-Id), RFC 3834 (Auto-Submitted) and the
    de-facto Precedence header. Suppliers' invoices carry none of them as a rule;
    newsletters and shop notices carry at least one.
    """
    for name in ("List-Id", "List-Unsubscribe", "List-Post"):
        if parsed.header(name):
            return f"mailing-list mail ({name})"
    for value in parsed.header("Precedence"):
        if value.strip().lower() in ("bulk", "list", "junk"):
            return f"bulk mail (Precedence: {value.strip().lower()})"
    for value in parsed.header("Auto-Submitted"):
        if value.strip().lower().split(";")[0] not in ("", "no"):
            return f"automatic mail (Auto-Submitted: {value.strip()[:40]})"
    return None


_TAG_RE = re.compile(r"<[^>]{0,2000}>")


def body_invoice_hint(parsed: ParsedMessage) -> str | None:
    """Why a mail's body looks like an invoice or receipt (an invoice word), or None."""
    html_text = _TAG_RE.sub(" ", (parsed.html or "")[:200_000])
    for where, text in (("subject", parsed.subject), ("text", parsed.text[:200_000]), ("HTML", html_text)):
        m = _INVOICE_RE.search(text)
        if m:
            return f"{where} contains {m.group(0)!r}"
    return None


def earlier_note(earlier: Sequence[Mapping[str, Any]], status: str) -> str:
    """What a message's outcome change means for the documents it imported before."""
    parts = []
    for d in earlier:
        where = f"delivered to {d['delivered']}, where it stays" if d.get("delivered") else "not delivered; its exports are withdrawn"
        parts.append(f"document {d['id']} ({d['filename']}): {where}")
    return (f"this mail was imported before and is {status} now; " + "; ".join(parts) +
            " (listed under Documents, orphaned: delete a delivered copy by hand if it should not be there)")


def mail_view(parsed: ParsedMessage, row: Mapping[str, Any], einvoice_fields: Mapping[str, str] | None,
              documents: Sequence[Mapping[str, str]] = ()) -> MailView:
    """What rules see of a parsed message and its stored envelope (``documents``: their fields, see Readings)."""
    from gateway.models import Address

    rcpts = json.loads(row.get("rcpt_tos") or "[]") if isinstance(row.get("rcpt_tos"), str) else list(row.get("rcpt_tos") or [])
    to = parsed.to + tuple(Address("", r) for r in rcpts)
    headers: dict[str, tuple[str, ...]] = {}
    for k, v in parsed.headers:
        headers[k.lower()] = headers.get(k.lower(), ()) + (v,)
    body = parsed.text
    if parsed.html:
        body = (body + "\n\n" + mime.html_to_text(parsed.html)).strip()
    sender = parsed.sender
    fields: dict[str, str] = {
        "subject": parsed.subject,
        "sender": sender.addr if sender else "",
        "sender_name": sender.name if sender else "",
        "sender_domain": sender.addr.rpartition("@")[2].lower() if sender else "",
        "tag": row.get("tag") or "",
        "source": row.get("source") or "",
        "import_address": row.get("import_address") or "",
        "date": parsed.date.date().isoformat() if parsed.date else "",
    }
    forwarded = forwarded_sender(parsed)
    fields["forwarded_from"] = forwarded.addr if forwarded else ""
    fields["forwarded_from_name"] = forwarded.name if forwarded else ""
    for k, v in (einvoice_fields or {}).items():
        fields[f"einvoice.{k}"] = v
    auth = row.get("auth")
    authenticated = None
    if auth:
        try:
            authenticated = json.loads(auth).get("authenticated")
        except (ValueError, AttributeError):
            authenticated = None
    if row.get("released_at"):
        authenticated = True  # a person released the mail: they vouch for its sender
    assign = row.get("assign")
    try:
        assigned = json.loads(assign) if isinstance(assign, str) else (assign or {})
    except ValueError:
        assigned = {}
    company = assigned.get("company") if isinstance(assigned, dict) else None
    return MailView(
        sender=sender, to=to, subject=parsed.subject, body=body,
        attachments=tuple(a.filename for a in parsed.attachments if not a.inline or a.kind != "other"),
        headers=headers, source=row.get("source") or "", import_address=row.get("import_address"),
        tag=row.get("tag"), einvoice=dict(einvoice_fields) if einvoice_fields else None,
        authenticated=authenticated, fields=fields, forwarded_from=forwarded, documents=documents,
        company=str(company) if company else None,
    )


def target_accepts(target: ExportConfig, doc: Mapping[str, Any], source: str) -> bool:
    """Whether a target's filter and ``since`` take a document (values compare case-insensitively)."""
    if not target.enabled:
        return False
    f = target.filter
    tags = doc.get("tags") or []
    if isinstance(tags, str):
        tags = json.loads(tags)
    if f.document_types and (doc.get("document_type") or "").lower() not in {t.lower() for t in f.document_types}:
        return False
    if f.tags and not {t.lower() for t in f.tags} & {str(t).lower() for t in tags}:
        return False
    if f.companies and not any(fnmatch.fnmatch((doc.get("company") or "").lower(), c.lower()) for c in f.companies):
        return False
    if f.sources and not any(source == s or source.startswith(s + ":") for s in f.sources):
        return False
    if target.since is not None:
        date = doc.get("doc_date") or (doc.get("created") or "")[:10]
        if date and date < target.since.isoformat():
            return False
    return True


class DocumentFiles:
    """Content-addressed document files under data_dir/documents."""

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / "documents"
        self.root.mkdir(parents=True, exist_ok=True)

    def path_for(self, sha256: str, filename: str) -> str:
        """The relative path a document's bytes live at."""
        ext = filename.rpartition(".")[2].lower() if "." in filename else "bin"
        ext = re.sub(r"[^a-z0-9]", "", ext)[:10] or "bin"
        return f"documents/{sha256[:2]}/{sha256}.{ext}"

    def write(self, rel: str, data: bytes) -> None:
        """Write bytes durably (tmp, fsync, rename); an existing file is kept."""
        final = self.root.parent / rel
        if final.exists() and final.stat().st_size == len(data):
            return
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)


class Pipeline:
    """Turns received messages into documents and export rows."""

    def __init__(self, settings: Settings, store: Store, rules: RulesState | None = None,
                 renderer: Callable[[ParsedMessage], bytes] | None = None,
                 xml_renderer: Callable[[Any], bytes] | None = None) -> None:
        self.settings = settings
        self.store = store
        self.rules = rules or RulesState()
        self.files = DocumentFiles(settings.data_dir)
        self.renderer = renderer or self._render_body
        self.xml_renderer = xml_renderer or self._render_xml
        self.sender_auth = SenderAuth(settings)
        own = {a.address.rpartition("@")[2] for a in settings.smtp.addresses}
        self.suppliers = Suppliers(store, own)
        self.payment_guard = PaymentGuard(store, pdf_text, own, self.suppliers)
        self.wake = threading.Event()
        self.stats = {"processed": 0, "errors": 0, "seconds": 0.0}
        self.on_exports: Callable[[], None] | None = None
        # worker processes: told each claim (None: nothing left), so serve can time each mail
        self.on_claim: Callable[[Row | None], None] | None = None
        # worker processes: their memory ceiling in bytes (0: none), named when a mail exceeds it
        self.memory_ceiling = 0
        # tests only (gateway.testhooks): runs before a claimed message is processed
        self.test_hook: Callable[[Row], None] | None = None

    # -- rendering (worker process with limits) -------------------------------------

    def _limits(self) -> dict[str, Any]:
        limits = self.settings.limits
        # a render worker needs about 110 MB at rest plus room to work
        return {"timeout": float(limits.render_timeout), "memory_mb": max(200, limits.render_memory // (1024 * 1024))}

    def _render_body(self, parsed: ParsedMessage) -> bytes:
        from gateway import render

        return render.render_message(parsed, **self._limits())

    def _render_xml(self, inv: Any) -> bytes:
        """The readable PDF of a bare XML invoice, in the render worker (its data is untrusted too)."""
        from gateway import einvoice, render

        return render.render_document(einvoice.render_html(inv), title=f"Invoice {inv.invoice_number or ''}".strip(),
                                      **self._limits())

    # -- one message ---------------------------------------------------------------

    def process(self, row: Row) -> str:
        """Process one claimed message row; returns its new status."""
        import time

        started = time.monotonic()
        mid = int(row["id"])
        fields: dict[str, Any] = {}
        try:
            raw = (self.settings.data_dir / row["raw_path"]).read_bytes()
        except OSError as exc:
            return self._finish(mid, "quarantined", f"the raw message file is missing: {exc.strerror}", fields)
        fields["content_hash"] = mime.content_hash(raw)
        try:
            limits = self.settings.limits
            parsed = mime.parse(raw, max_parts=limits.max_parts, max_depth=limits.max_depth,
                                max_headers=limits.max_headers, max_decoded=limits.max_decoded)
        except ParseError as exc:
            return self._finish(mid, "quarantined", f"cannot be parsed: {exc}", fields)
        except MemoryError:
            raise  # the worker's memory ceiling: not this mail's verdict yet (see run_pending)
        except Exception as exc:  # the parser is defensive; this is the last line
            log.exception("message %d: parser crashed", mid)
            return self._finish(mid, "quarantined", f"parser error: {type(exc).__name__}: {exc}", fields)
        fields.update(mime.summary(parsed))
        key = DedupKey(row["sha256"], parsed.message_id, fields["content_hash"])
        # a copy that already has its outcome saves the work; one that is being
        # processed right now is caught when the outcome is recorded (_finish)
        dup = self.store.find_duplicate(mid, key.message_id, key.sha256, key.content_hash)
        if dup is not None:
            fields["duplicate_of"] = dup["id"]
            return self._finish(mid, "duplicate", duplicate_reason(dup, key.sha256), fields)
        try:
            auth = self.sender_auth.for_message(raw, parsed, row)
        except MemoryError:
            raise
        except Exception:  # sender authentication is advisory: its failure must not lose the mail
            log.exception("message %d: sender authentication failed", mid)
            auth = None
        if auth is not None:
            fields["auth"] = auth
            row = dict(row, auth=json.dumps(auth))
        try:
            outcome = self.decide(parsed, row)
        except RenderError as exc:
            return self._finish(mid, "quarantined", f"rendering the mail body failed: {exc}", fields, dedup=key)
        except GatewayError as exc:
            return self._finish(mid, "quarantined", str(exc), fields, dedup=key)
        except MemoryError:
            raise
        except Exception as exc:
            log.exception("message %d: processing failed", mid)
            return self._finish(mid, "quarantined", f"processing failed: {type(exc).__name__}: {exc}", fields,
                                dedup=key)
        fields["decision"] = outcome.decision
        cut = mime.limit_defects(parsed)
        if cut:  # say what a limit left unread: a document may be missing for that reason
            outcome.reason += f" [limits: {'; '.join(cut)}]"
        self.stats["seconds"] += time.monotonic() - started
        return self._finish(mid, outcome.status, outcome.reason, fields, outcome, row, dedup=key)

    def _finish(self, mid: int, status: str, reason: str, fields: dict[str, Any],
                outcome: Outcome | None = None, row: Row | None = None, *, dedup: DedupKey | None = None) -> str:
        docs: list[Row] = []
        if outcome is not None and row is not None:
            docs = self._store_documents(outcome, row)
        source = row["source"] if row is not None else ""

        def targets_for(doc: Row) -> list[str]:
            return [t.name for t in self.settings.exports if target_accepts(t, doc, source)]

        earlier = self.store.earlier_documents(mid) if status != "imported" else []
        if earlier:  # re-decided after it was imported: say what became of its documents
            reason += " [" + earlier_note(earlier, status) + "]"
        known = self.store.known_documents([d["sha256"] for d in docs])
        done = self.store.finish_processed(
            mid, status=status, reason=reason, fields=fields, documents=docs, targets_for=targets_for, dedup=dedup,
            duplicate_reason=lambda first: duplicate_reason(first, dedup.sha256 if dedup else ""),
            learn=(self.suppliers.learner(mid, outcome.sender_domain, vouched_by(row))
                   if outcome is not None and row is not None else None))
        if done.duplicate_of is not None:  # another copy got its outcome while this one was processed
            status, reason, docs = done.status, done.reason, []
        else:
            for d in docs:
                if d["sha256"] in known:
                    log.info("message %d: %s is already known as document %d; linked, not stored or exported "
                             "again", mid, d["filename"], known[d["sha256"]], extra={"event": "known"})
            if outcome is not None and outcome.iban_records:
                self.payment_guard.record(mid, outcome.iban_records, outcome.sender_domain)
        if earlier:
            withdrawn = self.store.withdraw_exports([int(d["id"]) for d in earlier])
            log.warning("message %d was imported before and is now %s: %d document(s) listed as orphaned, "
                        "%d export(s) not yet delivered withdrawn", mid, status, len(earlier), withdrawn)
        self.stats["processed"] += 1
        if status == "quarantined":
            log.warning("message %d quarantined: %s", mid, reason)
        else:  # a duplicate is worth seeing on the log page: the mail came twice
            log.info("message %d %s: %s", mid, status, reason,
                     extra={"event": "duplicate"} if status == "duplicate" else None)
        if docs and self.on_exports:
            self.on_exports()
        return status

    def _store_documents(self, outcome: Outcome, row: Row) -> list[Row]:
        docs = []
        payees: list[tuple[dict[str, Any], list[str]]] = []
        received = (row.get("received") or "")[:10]
        for d in outcome.documents:
            sha = d.sha256
            rel = self.files.path_for(sha, d.filename)
            self.files.write(rel, d.data)
            meta = dict(outcome.assign)
            inv = d.einvoice
            # missing values are null in the store and the API, not ""
            inv_fields: dict[str, Any] = {k: (v or None) for k, v in inv.fields().items()} if inv is not None else {}
            tags = list(meta.get("tags") or [])
            # read before the rules decided (the same reading, once); a supplier's layout learned from a
            # person's corrections comes before the generic reading
            if outcome.readings is not None:
                read = apply_assign(outcome.readings.fields_for(d.data, d.kind, inv), meta)
            else:
                read = read_fields(d.data, d.kind, einvoice=inv, assign=meta, sender_name=outcome.sender_name,
                                   sender_domain=outcome.sender_domain, learned=self.store.learned_for)
            ibans = self.payment_guard.ibans_of(d.kind, d.data, inv)
            supplier = self.suppliers.match(read, outcome.sender_domain, ibans)
            read = with_supplier(read, supplier)
            doc = {
                "sha256": sha, "filename": d.filename, "content_type": d.content_type, "kind": d.kind,
                "origin": d.origin, "size": len(d.data), "path": rel,
                # company, invoice_number, doc_date: rule > XML > text read with confidence (a scan's: after OCR)
                **field_columns(read, assign=meta, einvoice=inv_fields, received=received),
                "document_type": meta.get("document_type") or getattr(inv, "default_document_type", None),
                "tags": tags, "note": meta.get("note"),
                "einvoice": inv_fields or None,
                "fields": read.to_json(),
                "warnings": [*(getattr(inv, "warnings", ()) or ()), *d.warnings, *read.warnings],
                "ocr": self._ocr_plan(d),
                "supplier_id": supplier.supplier_id if supplier is not None else None,
            }
            docs.append(doc)
            payees.append((doc, ibans))
        outcome.iban_records = self.payment_guard.review(int(row["id"]), payees, outcome.sender_domain, vouched_by(row))
        return docs

    def _ocr_plan(self, d: NewDocument) -> str | None:
        """``pending`` when a document is read by OCR before it is exported (a photo, a scan), else None."""
        if not self.settings.ocr.enabled or d.kind != "pdf" or d.einvoice is not None:
            return None
        if d.origin == "image":
            return "pending"
        from gateway.ocr import needs_ocr

        return "pending" if d.origin == "attachment" and needs_ocr(d.data, self.settings.ocr) else None

    # -- the decision ------------------------------------------------------------------

    def decide(self, parsed: ParsedMessage, row: Row) -> Outcome:
        """Apply the rules (or the unmatched policy) and collect the documents."""
        out = Outcome()
        candidates = [a for a in parsed.attachments if is_document(a)]
        exams = {id(a): _einvoice_examine(a) for a in candidates}
        einvoices = {key: exam.einvoice for key, exam in exams.items()}
        first_inv = next((inv for inv in einvoices.values() if inv is not None), None)
        inv_fields = first_inv.fields() if first_inv is not None else None
        out.sender_domain = from_domain(parsed)
        out.sender_name = parsed.sender.name if parsed.sender else ""
        # the documents' fields, read when a condition on fields or `recognize` first asks, kept for the store
        out.readings = Readings(candidates, einvoices, out.sender_name, out.sender_domain,
                                learned=self.store.learned_for, named=self.suppliers.name)
        view = mail_view(parsed, row, inv_fields, out.readings)
        require = self.settings.trust.require_authenticated_sender
        if row.get("released_at"):  # mail_view counts the sender as authenticated
            out.notes.append(f"released by {row.get('released_by') or 'a person'} at {str(row['released_at'])[:19]}")
        decision = self.rules.decide(view, require)
        claimed = claimed_rule(self.rules.ruleset, view, decision, require)
        if claimed is not None:
            auth = json.loads(row["auth"]) if isinstance(row.get("auth"), str) else row.get("auth")
            out.status = "suspicious"
            out.reason = hold_reason(claimed, view, auth, require, int(row["id"]))
            out.decision = {"rule": None, "action": "hold", "claimed_rule": claimed.name,
                            **stored_explanation(decision.explain, self.settings.data_dir)}
            return out
        assign = dict(json.loads(row["assign"]) if isinstance(row.get("assign"), str) else (row.get("assign") or {}))
        for k, v in decision.assign.items():
            if k == "tags":
                assign["tags"] = list(dict.fromkeys([*(assign.get("tags") or []), *v]))
            elif v not in (None, ""):
                assign[k] = v
        out.assign = assign
        out.decision = {
            "rule": decision.rule, "action": decision.action, "import": decision.import_mode,
            "assign": dict(decision.assign),
            **stored_explanation(decision.explain, self.settings.data_dir),  # a compact trace (gateway.rules.trace)
        }
        skipped = [f"{a.filename}: declared a PDF but its bytes are not a PDF ({len(a.data)} bytes)"
                   for a in parsed.attachments if declared_pdf(a) and a.kind != "pdf"]
        if row.get("import_requested_at"):  # "import it": a person's word comes before rules and policy
            who = f"{row.get('import_requested_by') or 'a person'} at {str(row['import_requested_at'])[:19]}"
            if candidates:
                self._add_attachments(out, candidates, exams)
            elif parsed.text.strip() or (parsed.html or "").strip():
                self._add_body(out, parsed)
            names = [d.filename for d in out.documents]
            out.decision.update(rule=None, action="import", requested_by=who)
            out.decision["imported"] = names
            if names:
                out.status = "imported"
                out.reason = f"imported at the request of {who}: {len(names)} document(s): {', '.join(names)}"
            else:
                out.status = "unmatched"
                out.reason = f"import requested by {who}, but the mail has no document and no body to render"
            if skipped:
                out.reason += f" [{'; '.join(skipped)}]"
            return out
        if decision.action == "ignore":
            out.status, out.reason = "ignored", f"rule {decision.rule!r}: action ignore"
            return out
        # photos and scans sent as images are documents from a hot folder, or when a rule says so
        images = decision.import_mode == "images" or str(row.get("source") or "").startswith("folder:")
        if images:
            candidates = candidates + [a for a in parsed.attachments if a.kind == "other" and image_type(a.data)]
        if decision.action == "import":
            chosen = candidates
            if decision.attachment_globs:
                from gateway.rules.attachments import choose

                chosen, refused = choose(parsed.attachments, decision.attachment_globs, images=images)
                out.notes.extend(refused)
            why = f"rule {decision.rule!r}"
            mode = decision.import_mode
            if mode in ("attachments", "both", "images"):
                self._add_attachments(out, chosen, exams)
            if mode in ("body", "both"):
                self._add_body(out, parsed)
            policy = None
        else:
            policy = self.settings.unmatched.for_source(row["source"])
            why = f"no rule matched; the {row['source'].split(':')[0]} policy is {policy!r}"
            out.decision["policy"] = policy
            bulk = bulk_reason(parsed) if policy in ("import", "attachments") else None
            if bulk:  # a newsletter's PDF is a brochure unless it looks like an invoice
                out.notes.append(f"{bulk}: only documents that look like invoices are imported")
            if policy in ("import", "attachments") and not bulk:
                if candidates:
                    self._add_attachments(out, candidates, exams)
                elif policy == "import" and (parsed.text.strip() or (parsed.html or "").strip()):
                    hint = body_invoice_hint(parsed)
                    if hint:
                        out.notes.append(f"the mail body looks like an invoice ({hint})")
                        self._add_body(out, parsed)
                    else:
                        out.notes.append("the mail body has no sign of an invoice (no invoice word in subject "
                                         "or text), so it was not rendered; a rule with `import: body` imports it")
            elif policy == "recognize" or bulk:
                picked = []
                for a in candidates:
                    if einvoices.get(id(a)) is not None:
                        picked.append(a)
                        out.notes.append(f"{a.filename}: an e-invoice")
                    elif a.kind == "pdf":
                        hint = invoice_hint(a, parsed) or read_invoice_hint(out.readings, a)
                        if hint:
                            picked.append(a)
                            out.notes.append(f"{a.filename}: looks like an invoice ({hint})")
                        else:
                            out.notes.append(f"{a.filename}: not recognised as an invoice (no invoice word in subject, "
                                             "name or text; no invoice number, total and date read)")
                self._add_attachments(out, picked, exams)
                if bulk and not candidates and (parsed.text.strip() or (parsed.html or "").strip()):
                    out.notes.append("the mail body was not rendered: a rule with `import: body` imports it")
        names = [d.filename for d in out.documents]
        detail = "; ".join(out.notes + skipped)
        if out.documents:
            out.status = "imported"
            out.reason = f"{why}: imported {len(names)} document(s): {', '.join(names)}"
        else:
            out.status = "unmatched"
            if policy == "keep":
                out.reason = f"{why}: nothing imported; waiting for a rule"
            elif decision.action == "import":
                out.reason = f"{why} matched, but the mail has no document to import"
            elif not parsed.attachments and policy == "recognize":
                out.reason = f"{why}: the mail has no attachment"
            elif not candidates and policy == "import" and (parsed.text.strip() or (parsed.html or "").strip()):
                out.reason = f"{why}: nothing imported"
            else:
                out.reason = f"{why}: no document attachment found" + (f" ({len(parsed.attachments)} other part(s))" if parsed.attachments else "")
        if detail:
            out.reason += f" [{detail}]"
        out.decision["imported"] = names
        return out

    def _add_attachments(self, out: Outcome, atts: Sequence[Attachment], exams: Mapping[int, Any]) -> None:
        seen = {d.sha256 for d in out.documents}
        for a in atts:
            if a.kind == "other" and image_type(a.data):
                self._add_image(out, a, seen)
                continue
            exam = exams.get(id(a)) if id(a) in exams else (_einvoice_examine(a) if is_document(a) else None)
            inv = exam.einvoice if exam is not None else None
            doc = NewDocument(a.filename, a.content_type if a.kind == "other" else f"application/{a.kind}",
                              a.kind, "attachment", a.data, inv,
                              (exam.warning,) if exam is not None and exam.warning else ())
            if doc.sha256 in seen:
                continue
            seen.add(doc.sha256)
            out.documents.append(doc)
            if inv is not None and a.kind == "xml":
                try:
                    pdf = self.xml_renderer(inv)
                except Exception as exc:  # the XML is the document; its rendering is a courtesy
                    out.notes.append(f"{a.filename}: readable PDF could not be made ({exc})")
                else:
                    stem = a.filename.rpartition(".")[0] or a.filename
                    out.documents.append(NewDocument(f"{stem}.pdf", "application/pdf", "pdf", "einvoice-render", pdf, inv))

    def _add_image(self, out: Outcome, a: Attachment, seen: set[str]) -> None:
        """A photo or scan becomes a PDF document (read by OCR later); a logo or icon is left out."""
        from gateway.ocr import judge_image, to_pdf

        verdict = judge_image(a.data, self.settings.ocr)
        if not verdict.document:
            out.notes.append(f"{a.filename}: not imported: {verdict.reason}")
            return
        try:
            pdf = to_pdf(a.data, self.settings.ocr)
        except ValueError as exc:
            out.notes.append(f"{a.filename}: not imported: {exc}")
            return
        stem = a.filename.rpartition(".")[0] or a.filename
        doc = NewDocument(f"{stem}.pdf", "application/pdf", "pdf", "image", pdf)
        if doc.sha256 not in seen:
            seen.add(doc.sha256)
            out.documents.append(doc)
            out.notes.append(f"{a.filename}: a {verdict.kind.upper() if verdict.kind else ''} image, made a PDF"
                             + (" to be read by OCR" if self.settings.ocr.enabled else " (OCR is off: no text layer)"))

    def _add_body(self, out: Outcome, parsed: ParsedMessage) -> None:
        pdf = self.renderer(parsed)
        from gateway.naming import sanitize_filename

        name = sanitize_filename(parsed.subject or "mail", fallback="mail", ext="pdf")
        out.documents.append(NewDocument(name, "application/pdf", "pdf", "body", pdf))

    # -- the worker loop -------------------------------------------------------------------

    def run_pending(self, stop: threading.Event | None = None, limit: int | None = None) -> int:
        """Process received messages until none is left; returns how many."""
        n = 0
        while (stop is None or not stop.is_set()) and (limit is None or n < limit):
            row = self.store.claim_message()
            if self.on_claim is not None:
                self.on_claim(row)
            if row is None:
                break
            if int(row.get("attempts") or 0) > MAX_ATTEMPTS:
                # claimed that often without an outcome: it stopped (crashed, killed) a worker each time
                cause = row.get("claim_error") or "the worker crashed or was killed while processing this mail"
                self.store.finish_message(int(row["id"]), status="quarantined", fields={}, reason=(
                    f"processing was interrupted {int(row['attempts']) - 1} times: {cause}; "
                    "reprocess it once the cause is fixed"))
                n += 1
                continue
            try:
                if self.test_hook is not None:
                    self.test_hook(row)
                self.process(row)
            except Exception as exc:
                self.stats["errors"] += 1
                if isinstance(exc, MemoryError):
                    log.error("message %s: %s", row["id"], self._out_of_memory())
                else:
                    log.exception("message %s: the outcome could not be recorded", row["id"])
                self._record_failure(row, exc)
                raise
            n += 1
        return n

    def _out_of_memory(self) -> str:
        if self.memory_ceiling:
            return f"the worker ran out of memory (limits.worker_memory: {self.memory_ceiling // 1024**2} MB)"
        return "the process ran out of memory"

    def _record_failure(self, row: Row, exc: Exception) -> None:
        """Quarantine a message whose outcome cannot be stored; else leave it queued.

        A passing failure (database busy, disk full) is retried; the same failure
        on the third attempt is a bug or bad data, and the mail is quarantined
        with the reason rather than retried for ever.
        """
        mid = int(row["id"])
        what = self._out_of_memory() if isinstance(exc, MemoryError) else f"{type(exc).__name__}: {exc}"
        try:
            if int(row.get("attempts") or 0) >= MAX_ATTEMPTS:
                self.store.finish_message(mid, status="quarantined", fields={},
                                          reason=f"processing failed {MAX_ATTEMPTS} times: {what}")
            else:
                self.store.reset_for_reprocess([mid], keep_attempts=True)
        except Exception:
            log.exception("message %s: cannot record the failure either; its claim ends with this process", mid)

    def worker(self, stop: threading.Event) -> None:
        """A worker thread's loop: process, then wait for new mail."""
        while not stop.is_set():
            try:
                self.run_pending(stop)
            except Exception:
                stop.wait(5)
            self.wake.wait(1.0)
            self.wake.clear()
