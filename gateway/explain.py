"""``rules test`` and ``POST /api/rules/test``: which rule decides a raw mail, and why."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway import mime
from gateway.config import Settings
from gateway.pipeline import _einvoice_detect, is_document, mail_view


def explain_decision(raw: bytes, ruleset: Any, *, source: str = "smtp", settings: Settings | None = None,
                     rcpt_tos: tuple[str, ...] = (), stored: Mapping[str, Any] | None = None,
                     authenticated: bool | None = None) -> dict[str, Any]:
    """The decision of ``ruleset`` for a raw message, as the JSON the CLI and API print.

    ``settings``' trust.require_authenticated_sender applies as in the
    gateway: a `from` holds only for an authenticated sender. A ``stored``
    message brings its own sender authentication (and release); for a file
    the caller says whether its sender is ``authenticated`` (else not known).
    """
    parsed = mime.parse(raw)
    inv = next((i for i in (_einvoice_detect(a) for a in parsed.attachments if is_document(a)) if i is not None), None)
    row: dict[str, Any] = {"source": source, "rcpt_tos": list(rcpt_tos),
                           "auth": json.dumps({"authenticated": authenticated}) if authenticated is not None else None}
    if stored is not None:
        row.update(auth=stored.get("auth"), released_at=stored.get("released_at"))
    view = mail_view(parsed, row, inv.fields() if inv else None)
    from gateway.models import Decision

    require = settings.trust.require_authenticated_sender if settings is not None else False
    decision = (ruleset.decide(view, trace_all=True, require_authenticated_sender=require) if ruleset is not None
                else Decision(rule=None, action="unmatched"))
    out: dict[str, Any] = {
        "rule": decision.rule,
        "action": decision.action,
        "import": decision.import_mode,
        "attachments": list(decision.attachment_globs),
        "assign": dict(decision.assign),
        "explain": [{"rule": t.rule, "file": t.file, "matched": t.matched, "reason": t.reason}
                    for t in decision.explain],
        "mail": {"from": str(parsed.sender) if parsed.sender else None, "subject": parsed.subject,
                 "attachments": [a.filename for a in parsed.attachments],
                 "einvoice": inv.fields() if inv else None},
    }
    if require:
        out["require_authenticated_sender"] = True
        out["authenticated"] = view.authenticated
    if stored is not None and stored.get("released_at"):
        out["released"] = {"at": stored["released_at"], "by": stored.get("released_by")}
    if decision.rule is None and settings is not None:
        out["policy"] = settings.unmatched.for_source(source)
    return out


def explain_raw(raw: bytes, rules_dir: Path, *, source: str = "smtp", settings: Settings | None = None,
                authenticated: bool | None = None) -> dict[str, Any]:
    """Load ``rules_dir`` and explain the decision for a raw message, applying ``settings``' trust section."""
    from gateway.rules import load_rules

    ruleset, problems = load_rules(rules_dir)
    out = explain_decision(raw, ruleset, source=source, settings=settings, authenticated=authenticated)
    out["problems"] = [str(p) for p in problems]
    return out
