"""``rules test`` and ``POST /api/rules/test``: which rule decides a raw mail, and why."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gateway import mime
from gateway.config import Settings
from gateway.pipeline import _einvoice_detect, is_document, mail_view


def explain_decision(raw: bytes, ruleset: Any, *, source: str = "smtp", settings: Settings | None = None,
                     rcpt_tos: tuple[str, ...] = (), require_authenticated_sender: bool = False,
                     authenticated: bool | None = None) -> dict[str, Any]:
    """The decision of ``ruleset`` for a raw message, as the JSON the CLI and API print.

    ``require_authenticated_sender`` (trust.require_authenticated_sender)
    applies as in the gateway: a `from` holds only when ``authenticated`` is
    True (a file's sender is not known to be unless the caller says so).
    """
    parsed = mime.parse(raw)
    inv = next((i for i in (_einvoice_detect(a) for a in parsed.attachments if is_document(a)) if i is not None), None)
    row = {"source": source, "rcpt_tos": list(rcpt_tos),
           "auth": json.dumps({"authenticated": authenticated}) if authenticated is not None else None}
    view = mail_view(parsed, row, inv.fields() if inv else None)
    from gateway.models import Decision

    require = require_authenticated_sender
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
        out["authenticated"] = authenticated
    if decision.rule is None and settings is not None:
        out["policy"] = settings.unmatched.for_source(source)
    return out


def explain_raw(raw: bytes, rules_dir: Path, *, source: str = "smtp", settings: Settings | None = None,
                authenticated: bool | None = None) -> dict[str, Any]:
    """Load ``rules_dir`` and explain the decision for a raw message, applying ``settings``' trust section."""
    from gateway.rules import load_rules

    ruleset, problems = load_rules(rules_dir)
    require = settings.trust.require_authenticated_sender if settings is not None else False
    out = explain_decision(raw, ruleset, source=source, settings=settings, require_authenticated_sender=require,
                           authenticated=authenticated)
    out["problems"] = [str(p) for p in problems]
    return out
