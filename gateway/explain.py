"""``rules test`` and ``POST /api/rules/test``: which rule decides a raw mail, and why."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gateway import mime
from gateway.config import Settings
from gateway.pipeline import mail_view, readings_of


def explain_decision(raw: bytes, ruleset: Any, *, source: str = "smtp", settings: Settings | None = None,
                     rcpt_tos: tuple[str, ...] = (), stored: Mapping[str, Any] | None = None,
                     authenticated: bool | None = None, learned: Any = None, named: Any = None) -> dict[str, Any]:
    """The decision of ``ruleset`` for a raw message, as the JSON the CLI and API print.

    ``learned`` (the store's ``learned_for``) reads the documents' fields with
    what corrections taught, and ``named`` (``Suppliers.name``) names their
    sellers by their suppliers, as the gateway does.

    ``settings``' trust.require_authenticated_sender applies as in the
    gateway: a `from` holds only for an authenticated sender. A ``stored``
    message brings its own sender authentication (and release); for a file
    the caller says whether its sender is ``authenticated`` (else not known).
    """
    parsed = mime.parse(raw)
    readings, inv = readings_of(parsed, learned, named)
    row: dict[str, Any] = {"source": source, "rcpt_tos": list(rcpt_tos),
                           "auth": json.dumps({"authenticated": authenticated}) if authenticated is not None else None}
    if stored is not None:
        row.update(auth=stored.get("auth"), released_at=stored.get("released_at"))
    view = mail_view(parsed, row, inv.fields() if inv else None, readings)
    from gateway.models import Decision

    require = settings.trust.require_authenticated_sender if settings is not None else False
    decision = (ruleset.decide(view, trace_all=True, require_authenticated_sender=require) if ruleset is not None
                else Decision(rule=None, action="unmatched"))
    out: dict[str, Any] = {
        "rule": decision.rule,
        "action": decision.action,
        # an ignore imports nothing: no import mode, no attachment globs ("ignore (attachments)" was nonsense)
        "import": decision.import_mode if decision.action == "import" else None,
        "attachments": list(decision.attachment_globs) if decision.action == "import" else [],
        "assign": dict(decision.assign),
        "explain": [{"rule": t.rule, "file": t.file, "matched": t.matched, "reason": t.reason}
                    for t in decision.explain],
        "mail": {"from": str(parsed.sender) if parsed.sender else None, "subject": parsed.subject,
                 "attachments": [a.filename for a in parsed.attachments],
                 "einvoice": inv.fields() if inv else None,
                 # what conditions on fields saw (read only when a rule asked, or here)
                 "documents": [dict(d) for d in readings]},
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
    if problems:
        # a broken folder decides nothing: the same as the admin page's tester, in the same words
        return {"rule": None, "action": None, "explain": [], "problems": [str(p) for p in problems],
                "broken": broken_rules(problems, rules_dir)}
    out = explain_decision(raw, ruleset, source=source, settings=settings, authenticated=authenticated)
    out["problems"] = []
    return out


def stored_explanation(decision: Mapping[str, Any], message: Mapping[str, Any], *, raw_path: Path | None,
                       data_dir: Path | None, current: Any = None, learned: Any = None,
                       named: Any = None) -> dict[str, Any]:
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
    view, problem = _view_of(raw_path, message, trace, learned, named)
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


def _view_of(raw_path: Path | None, message: Mapping[str, Any], trace: Mapping[str, Any],
             learned: Any = None, named: Any = None) -> tuple[Any, str]:
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
        readings, inv = readings_of(parsed, learned, named)
        view = mail_view(parsed, message, inv.fields() if inv else None, readings)
    except Exception as exc:  # a mail that was decided once is read again; say so rather than fail the page
        logging.getLogger(__name__).warning("message %s: reading it again for its explanation failed: %s",
                                            message.get("id"), exc)
        return None, f"The mail cannot be read again ({type(exc).__name__})"
    auth = trace.get("auth")
    return dataclasses.replace(view, authenticated=auth if isinstance(auth, bool) else None), ""


def broken_rules(problems: Sequence[Any], folder: Path | str) -> str:
    """What the rule tester says (page, API and ``rules test`` alike) while the rules folder is broken."""
    files = sorted({str(getattr(p, "file", "") or "") for p in problems} - {""})
    where = f" in {', '.join(files)}" if files else ""
    return (f"The rules folder {folder} is broken: {len(problems)} problem(s){where}. No rule is tested until it "
            "is fixed (`invoice-gateway rules check` passes); meanwhile a running gateway keeps deciding with the "
            "last good rule set, if it had one.")


_SAVE_AS = re.compile(r"Save it as rules/([\w.+-]+(?:/[\w.+-]+)*\.ya?ml)")
DRAFT_FILE = "draft.yaml"


def draft_file_of(draft: str, given: str | None = None) -> str:
    """Where a draft would be saved, relative to rules_dir: ``given``, else the file its comment names, else draft.yaml."""
    name = (given or "").strip().replace("\\", "/")
    if not name:
        m = _SAVE_AS.search(draft)
        name = m.group(1) if m else DRAFT_FILE
    name = name.removeprefix("rules/").lstrip("/")
    parts = name.split("/")
    if not name or any(p in ("", ".", "..") or p.startswith(".") for p in parts) or \
            not name.lower().endswith((".yaml", ".yml")) or len(name) > 200:
        raise ValueError(f"{given!r}: a rule file name inside the rules folder, such as acme.yaml")
    return name


@dataclasses.dataclass(frozen=True)
class DraftSet:
    """The rules in force with a draft put in the place it would take when saved.

    Attributes:
        ruleset: the combined rule set, or None when the draft has problems.
        problems: what is wrong with the draft (as the loader would say on saving it).
        file: the rule file the draft is tested as part of (relative to rules_dir).
        names: the names of the draft's rules.
        replaces: names of rules in force that the draft replaces (same name, same file).
    """

    ruleset: Any
    problems: tuple[str, ...]
    file: str
    names: tuple[str, ...]
    replaces: tuple[str, ...] = ()


def with_draft(ruleset: Any, draft: str, file: str) -> DraftSet:
    """The rules in force plus ``draft``, as if appended to ``file`` (a rule of the same name there is replaced).

    Rules are tried by priority, then file path, then place in the file: the
    draft takes the place it would have after saving, so a rule in force that
    comes first still decides first.
    """
    from gateway.rules import RuleSet, load_rules_text

    draft_set, draft_problems = load_rules_text(draft, file)
    if draft_set is None:
        return DraftSet(None, tuple(str(p) for p in draft_problems), file, ())
    current = tuple(ruleset.rules) if ruleset is not None else ()
    by_name = {r.name.casefold(): r for r in current}
    problems, replaces, added = [], [], []
    after = max((r.position for r in current if r.file == file), default=-1) + 1
    for rule in draft_set.rules:
        old = by_name.get(rule.name.casefold())
        if old is not None and old.file != file:
            problems.append(f"{file}:{rule.line}: name: {rule.name!r} is already the name of the rule at "
                            f"{old.file}:{old.line}; names must be unique across all files")
            continue
        if old is not None:
            replaces.append(old.name)
            added.append(dataclasses.replace(rule, position=old.position, line=old.line))
        else:
            added.append(dataclasses.replace(rule, position=after + rule.position))
    if problems:
        return DraftSet(None, tuple(problems), file, ())
    gone = {n.casefold() for n in replaces}
    kept = [r for r in current if r.name.casefold() not in gone]
    files = dict(ruleset.files) if ruleset is not None else {}
    files[file] = tuple(dict.fromkeys((*files.get(file, ()), *(r.name for r in added))))
    combined = RuleSet(rules=(*kept, *added), files=files, digest="draft")
    return DraftSet(combined, (), file, tuple(r.name for r in added), tuple(replaces))
