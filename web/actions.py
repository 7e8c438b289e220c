"""What a person can do from the admin page or the API; each raises an HTTP error a person can act on."""

from __future__ import annotations

import inspect
import logging
import re
import threading
from collections.abc import Callable, Sequence
from typing import Any

from werkzeug.exceptions import BadRequest, Conflict, NotFound

from gateway.store import iso, utcnow

# The largest id a row can have (SQLite's INTEGER is 64-bit signed): a larger one is no row (404), not a 500.
MAX_ID = 2**63 - 1

log = logging.getLogger(__name__)

MAX_FIELD = 200
MAX_NOTE = 2000
FETCH_TIMEOUT = 900.0


class Jobs:
    """Background runs (fetch now, run now), one at a time per name."""

    def __init__(self) -> None:
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self.last: dict[str, dict[str, Any]] = {}

    def running(self, key: str) -> bool:
        """Whether a run of ``key`` is in progress."""
        t = self._threads.get(key)
        return t is not None and t.is_alive()

    def start(self, key: str, work: Callable[[], Any]) -> bool:
        """Start ``work`` in a thread unless ``key`` is running; returns whether it started."""
        with self._lock:
            if self.running(key):
                return False

            def run() -> None:
                started = iso(utcnow())
                try:
                    result = work()
                except Exception as exc:
                    log.exception("%s failed", key)
                    self.last[key] = {"started": started, "finished": iso(utcnow()), "error": f"{type(exc).__name__}: {exc}"}
                else:
                    self.last[key] = {"started": started, "finished": iso(utcnow()), "result": result}

            t = threading.Thread(target=run, name=f"web-{key}", daemon=True)
            self._threads[key] = t
            t.start()
            return True


# -- messages --------------------------------------------------------------------------


def message_or_404(service: Any, message_id: int) -> dict[str, Any]:
    """The message row, or 404."""
    row = service.store.message(message_id) if 0 < message_id <= MAX_ID else None
    if row is None:
        raise NotFound(f"there is no message {message_id}")
    return dict(row)


def reprocess(service: Any, message_id: int) -> None:
    """Run the rules on one stored message again."""
    message_or_404(service, message_id)
    service.store.reset_for_reprocess([message_id])
    service.pipeline.wake.set()


def _person_requeues(service: Any, message_id: int, store_call: Any, by: str) -> None:
    """A person's word about a message (store_call records it and requeues it); 409 when it does not apply."""
    from gateway.errors import StoreError

    message_or_404(service, message_id)
    try:
        store_call(message_id, by=by)
    except StoreError as exc:
        raise Conflict(str(exc)) from exc
    service.pipeline.wake.set()


def release(service: Any, message_id: int, by: str = "admin") -> None:
    """Release a suspicious message: the person vouches for its sender; it is imported and exported."""
    _person_requeues(service, message_id, service.store.release_message, by)


def import_anyway(service: Any, message_id: int, by: str = "admin") -> None:
    """Import an unmatched or ignored message at a person's request, whatever the rules say."""
    _person_requeues(service, message_id, service.store.request_import, by)


def confirm_account(service: Any, document_id: int, by: str = "admin") -> list[str]:
    """A person confirmed a document's bank account with the seller; returns the IBANs, masked."""
    from gateway.errors import StoreError

    document_or_404(service, document_id)
    try:
        return list(service.pipeline.payment_guard.confirm(document_id, by, service.settings.data_dir))
    except StoreError as exc:
        raise Conflict(str(exc)) from exc


def reexamine(service: Any) -> int:
    """Run every unmatched message through the rules again; returns how many."""
    return int(service.reexamine())


# -- documents ------------------------------------------------------------------------


def document_or_404(service: Any, document_id: int) -> dict[str, Any]:
    """The document row, or 404."""
    row = service.store.document(document_id) if 0 < document_id <= MAX_ID else None
    if row is None:
        raise NotFound(f"there is no document {document_id}")
    return dict(row)


def approve(service: Any, document_id: int, approved: bool = True) -> None:
    """Approve a document for targets that require approval (or withdraw it)."""
    doc = document_or_404(service, document_id)
    if approved and doc["approved_at"] is None:
        service.store.update_document(document_id, approved_at=iso(utcnow()))
        service.pipeline.suppliers.learn_confirmed(document_id, "a person")  # a person confirmed its seller
    elif not approved and doc["approved_at"] is not None:
        service.store.update_document(document_id, approved_at=None)
    service.exports.wake.set()


MAX_BULK = 500  # documents approved by one request


def approve_many(service: Any, ids: Any) -> tuple[list[int], list[int]]:
    """Approve several documents at once (all or none): (the ids asked for, those not approved before)."""
    if not isinstance(ids, list) or not ids:
        raise BadRequest("ids: a list of document ids, e.g. {\"ids\": [12, 13]}")
    if len(ids) > MAX_BULK:
        raise BadRequest(f"ids: at most {MAX_BULK} documents at once")
    wanted: list[int] = []
    for value in ids:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise BadRequest(f"ids: {value!r} is not a document id")
        try:
            number = int(value)
        except ValueError:
            raise BadRequest(f"ids: {value!r} is not a document id") from None
        if number not in wanted:
            wanted.append(number)
    rows = [document_or_404(service, number) for number in wanted]  # every one exists before any changes
    now = iso(utcnow())
    done = []
    for row in rows:
        if row["approved_at"] is None:
            service.store.update_document(int(row["id"]), approved_at=now)
            service.pipeline.suppliers.learn_confirmed(int(row["id"]), "a person")
            done.append(int(row["id"]))
    service.exports.wake.set()
    return wanted, done


def _text(value: Any, key: str, limit: int = MAX_FIELD) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{key}: must be text")
    value = value.strip()
    if len(value) > limit:
        raise BadRequest(f"{key}: at most {limit} characters")
    if any(ord(c) < 32 and c not in "\n\t" for c in value):
        raise BadRequest(f"{key}: must not contain control characters")
    return value or None


def parse_tags(value: Any) -> list[str]:
    """Tags from a list or from text separated by commas."""
    if value is None:
        return []
    items = value if isinstance(value, list) else re.split(r"[,\n]", str(value))
    tags: list[str] = []
    for item in items:
        tag = _text(item, "tags", 60)
        if tag and tag not in tags:
            tags.append(tag)
    return tags


def edit_document(service: Any, document_id: int, fields: dict[str, Any], by: str = "api") -> dict[str, Any]:
    """Change company, document type, invoice number, tags or note (only the keys given), and correct
    the document's ``fields`` (web.corrections); returns what the corrections changed and taught."""
    document_or_404(service, document_id)
    allowed = {"company", "document_type", "invoice_number", "tags", "note", "fields"}
    unknown = set(fields) - allowed
    if unknown:
        raise BadRequest(f"{', '.join(sorted(unknown))}: cannot be changed; allowed: {', '.join(sorted(allowed))}")
    update: dict[str, Any] = {}
    for key, value in fields.items():
        if key == "fields":
            continue
        if key == "tags":
            update["tags"] = parse_tags(value)
        elif key == "note":
            update["note"] = _text(value, key, MAX_NOTE)
        else:
            update[key] = _text(value, key)
    out: dict[str, Any] = {}
    if "fields" in fields:
        from web.corrections import check_all_or_400, correct

        check_all_or_400(fields["fields"])  # a wrong correction changes nothing, the other keys neither
        changed, taught = correct(service, document_id, fields["fields"], by)
        out = {"corrected": {k: {"before": b, "now": n} for k, (b, n) in changed.items()}, "learned": taught}
    service.store.update_document(document_id, **update)
    return out


def target_or_404(service: Any, name: str) -> Any:
    """The export target's settings, or 404."""
    for t in service.settings.exports:
        if t.name == name:
            return t
    known = ", ".join(t.name for t in service.settings.exports) or "none"
    raise NotFound(f"there is no export target {name!r}; known: {known}")


def export_again(service: Any, document_id: int, targets: Sequence[str]) -> list[str]:
    """Queue a document for targets again, even where it was delivered."""
    document_or_404(service, document_id)
    if not targets:
        raise BadRequest("target: name the export target")
    names = [target_or_404(service, name).name for name in targets]
    for name in names:
        service.store.requeue_export(document_id, name)
    service.exports.wake.set()
    return names


# -- mailboxes and exports ----------------------------------------------------------------


def fetch_now(service: Any, jobs: Jobs, name: str) -> bool:
    """Poll a mailbox now, in the background; False when a fetch is already running."""
    if name not in {m.name for m in service.settings.mailboxes}:
        known = ", ".join(m.name for m in service.settings.mailboxes) or "none"
        raise NotFound(f"there is no mailbox {name!r}; known: {known}")
    poller = service.pollers.get(name)
    if poller is None:
        raise Conflict(f"mailbox {name!r} has no running poller (is the gateway serving?)")

    def work() -> Any:
        # wait for the poll when the poller can, so the page shows "fetching" until it is done
        waits = "wait" in inspect.signature(poller.fetch_now).parameters
        result = poller.fetch_now(wait=True, timeout=FETCH_TIMEOUT) if waits else poller.fetch_now()
        return result.as_dict() if hasattr(result, "as_dict") else None

    return jobs.start(f"fetch:{name}", work)


def run_export(service: Any, jobs: Jobs, name: str) -> bool:
    """Deliver what is due for one target now, in the background; False when it is already running."""
    target = target_or_404(service, name)
    if not target.enabled:
        raise Conflict(f"export target {name!r} is disabled (enabled: false)")
    return jobs.start(f"export:{name}", lambda: service.exports.run_target(target))


def backfill_export(service: Any, name: str, since: str | None) -> Any:
    """Give a target the existing documents it takes (dated ``since`` or later), and wake the exports."""
    import datetime as dt

    from gateway.exporters.backfill import backfill

    target_or_404(service, name)
    try:
        day = dt.date.fromisoformat(since) if since else None
    except ValueError:
        raise BadRequest("since: a date like 2026-01-01") from None
    done = backfill(service.settings, service.store, name, since=day)
    service.exports.wake.set()
    return done


def retry_exports(service: Any, name: str, ids: Sequence[int] | None = None) -> int:
    """Make failed exports of a target due now (the given ids, or all); returns how many."""
    target_or_404(service, name)
    store = service.store
    if ids is None:
        rows = store.list_exports(target=name, state="failed", limit=10000) + \
            store.list_exports(target=name, state="error", limit=10000)
        ids = [int(r["id"]) for r in rows]
    done = 0
    for export_id in ids:
        row = store.export_row(int(export_id)) if 0 < int(export_id) <= MAX_ID else None
        if row is None or row["target"] != name:
            raise NotFound(f"export {export_id} is not an export to {name!r}")
        if row["state"] in ("failed", "error"):
            store.retry_export(int(export_id))
            done += 1
    service.exports.wake.set()
    return done


# -- rules -----------------------------------------------------------------------------


def explain_mail(service: Any, raw: bytes, *, source: str = "smtp", draft: str | None = None,
                 message: dict[str, Any] | None = None, draft_file: str | None = None) -> dict[str, Any]:
    """Which rule decides a raw mail, and why, per rule: with the rules in force, and a draft in its place.

    A draft is tested together with the rules in force, as if saved in
    ``draft_file`` (by default the file its comment names, else draft.yaml):
    a rule in force that is tried first still decides. While the rules
    folder is broken nothing is tested, as with ``invoice-gateway rules test``.
    trust.require_authenticated_sender applies as in the gateway: a stored
    ``message`` brings its sender authentication; an upload's is not known.
    """
    from gateway.explain import broken_rules, draft_file_of, explain_decision, with_draft

    if not raw.strip():
        raise BadRequest("no message: send the raw message (.eml) as the request body")
    if not re.fullmatch(r"[a-z]+(:[\w.@+-]+)?", source or ""):
        raise BadRequest("source: smtp, import, imap:<mailbox> or folder:<name>")
    has_draft = draft is not None and bool(draft.strip())
    problems = list(service.rules.problems)
    if problems:
        return {"rule": None, "action": None, "explain": [], "problems": [str(p) for p in problems],
                "broken": broken_rules(problems, service.settings.rules_dir),
                "broken_files": sorted({str(p.file) for p in problems if getattr(p, "file", None)}),
                "draft": has_draft, "source": source}
    ruleset = service.rules.ruleset
    extra: dict[str, Any] = {}
    if has_draft:
        assert draft is not None
        try:
            file = draft_file_of(draft, draft_file)
        except ValueError as exc:
            raise BadRequest(f"draft_file: {exc}") from None
        combined = with_draft(ruleset, draft, file)
        if combined.ruleset is None:
            return {"rule": None, "action": None, "explain": [], "problems": list(combined.problems), "draft": True,
                    "draft_file": file, "source": source}
        ruleset = combined.ruleset
        extra = {"draft": True, "draft_file": file, "draft_rules": list(combined.names),
                 "draft_replaces": list(combined.replaces)}
    from web.data import supplier_names

    try:
        out = explain_decision(raw, ruleset, source=source, settings=service.settings, stored=message,
                               learned=service.store.learned_for, named=supplier_names(service))
    except Exception as exc:  # an unparseable upload is the user's to fix, not a server error
        raise BadRequest(f"the message cannot be read: {type(exc).__name__}: {exc}") from exc
    out["problems"] = []
    out["source"] = source
    if extra:
        names = set(extra["draft_rules"])
        for t in out["explain"]:
            t["draft"] = t["rule"] in names
        extra["decided_by_draft"] = out["rule"] in names
        extra["draft_tried"] = any(t["draft"] for t in out["explain"])
        if ruleset is not None:
            order = [r.name for r in ruleset.rules]
            extra["draft_place"] = [{"rule": n, "place": i + 1, "of": len(order)} for i, n in enumerate(order) if n in names]
        out.update(extra)
    return out
