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


def stored_explanation(decision: Mapping[str, Any], message: Mapping[str, Any], *, raw_path: Path | None,
                       data_dir: Path | None, current: Any = None) -> dict[str, Any]:
    """A stored decision as a person reads it: a stored trace put into words as ``explain``.

    The words are the same as the gateway would have written when it decided
    (gateway.rules.trace): the rules tried are judged again on the mail, by
    the rule set of the trace (``current`` if it is that one, else the one
    kept under data_dir). ``explain_note`` says when the rules have changed
    since (the words are still those of the rules then), when the words
    cannot be made (the rule set or the raw mail is gone), or when rules
    judge the mail differently now. An explanation stored in words (older
    mail) is returned as it is.
    """
    from gateway.rules.trace import rules_for, words

    out = dict(decision)
    trace = out.pop("trace", None)
    if not isinstance(trace, dict):
        return out
    digest = str(trace.get("rules") or "")
    ruleset = rules_for(digest, data_dir, current)
    if ruleset is None:
        out["explain"] = []
        out["explain_note"] = (f"The rules this mail was decided by ({digest[:12]}) are no longer kept: "
                               f"{trace.get('tried')} rule(s) were tried, but they cannot be put into words.")
        return out
    notes = []
    if current is not None and current.digest != digest:
        notes.append(f"The rules have changed since this mail was decided; shown as they were then ({digest[:12]}).")
    view, problem = _view_of(raw_path, message, trace)
    if view is None:
        notes.append(f"{problem}: each rule tried is named with the condition it failed at.")
    traces, differ = words(trace, ruleset, view)
    if differ:
        notes.append(f"Read again now, {differ} rule(s) judge this mail differently than when it was decided "
                     "(a regular expression that ran out of time, or a change in how mail is read); "
                     "the words are as read now.")
    out["explain"] = [{"rule": t.rule, "file": t.file, "matched": t.matched, "reason": t.reason} for t in traces]
    if notes:
        out["explain_note"] = " ".join(notes)
    return out


def _view_of(raw_path: Path | None, message: Mapping[str, Any], trace: Mapping[str, Any]) -> tuple[Any, str]:
    """The MailView the rules saw (authentication as the trace recorded it), or None and why not."""
    import dataclasses
    import logging

    if raw_path is None:
        return None, "The mail's raw file is gone"
    try:
        raw = raw_path.read_bytes()
    except OSError as exc:
        return None, f"The mail's raw file cannot be read ({exc.strerror or exc})"
    try:
        parsed = mime.parse(raw)
        inv = next((i for i in (_einvoice_detect(a) for a in parsed.attachments if is_document(a)) if i is not None),
                   None)
        view = mail_view(parsed, message, inv.fields() if inv else None)
    except Exception as exc:  # a mail that was decided once is read again; say so rather than fail the page
        logging.getLogger(__name__).warning("message %s: reading it again for its explanation failed: %s",
                                            message.get("id"), exc)
        return None, f"The mail cannot be read again ({type(exc).__name__})"
    auth = trace.get("auth")
    return dataclasses.replace(view, authenticated=auth if isinstance(auth, bool) else None), ""
