""""Make a rule from this mail": a YAML rule from a message's sender and subject, ready to paste."""

from __future__ import annotations

import email.utils
import re
from typing import Any

import yaml

_PREFIX = re.compile(r"^\s*((re|fwd?|aw|wg|tr|sv|vs|antw)\s*(\[\d+\])?\s*:\s*)+", re.I)
_NUMBERS = re.compile(r"[#№]?\d[\d./\-_]*")
_GLOB_RUN = re.compile(r"(\*\s*)+\*|\*(\s*\*)+")
_SLUG = re.compile(r"[^a-z0-9]+")


def subject_pattern(subject: str) -> str | None:
    """A subject value that matches this mail and its siblings: numbers become ``*``.

    "Re: Invoice 2024-0042 for March" -> "Invoice * for March". Without a number
    the plain subject is kept (a plain value matches as a substring).
    """
    text = _PREFIX.sub("", subject or "").strip()
    text = re.sub(r"\s+", " ", text)
    if not text:
        return None
    pattern = _NUMBERS.sub("*", text)
    pattern = _GLOB_RUN.sub("*", pattern)
    if pattern.strip("* ") == "":
        return None
    if pattern.startswith("re:"):  # would read as a regular expression
        pattern = "*" + pattern[2:]
    if "?" in pattern and "*" not in pattern:
        pattern = pattern.replace("?", "*")  # a lone ? would turn the value into a one-character glob
    return pattern[:120].rstrip() if "*" not in pattern[120:] else pattern


def _split_sender(sender: str) -> tuple[str, str]:
    """(display name, address) of a stored sender such as ``Name <addr@example.com>``."""
    m = re.search(r"<([^<>\s]+@[^<>\s]+)>\s*$", sender)
    if m:
        return sender[: m.start()].strip().strip('"'), m.group(1)
    name, addr = email.utils.parseaddr(sender)
    return name, addr


def _company_guess(display_name: str, domain: str, documents: list[dict[str, Any]]) -> str | None:
    for d in documents:
        if d.get("company"):
            return str(d["company"])
    name = re.sub(r"\b(billing|invoices?|rechnung(en)?|accounts?|noreply|no-reply|buchhaltung)\b", "",
                  display_name or "", flags=re.I).strip(" -,.|")
    if name:
        return name[:80]
    parts = [p for p in domain.split(".") if p not in ("mail", "billing", "email", "invoices", "rechnung")]
    if len(parts) >= 2:
        return parts[-2].capitalize()
    return None


def _sender_of(msg: dict[str, Any], sender_addr: str, sender_name: str) -> tuple[str, str]:
    """(display name, address) of a message's sender; the address only when it is a plain address."""
    if not sender_addr and msg.get("sender"):
        sender_name, sender_addr = _split_sender(str(msg["sender"]))
    for candidate in (sender_addr, msg.get("mail_from") or ""):
        candidate = candidate.strip().lower()
        if candidate.count("@") == 1 and not any(c.isspace() or c in "<>\"'" for c in candidate):
            return sender_name, candidate
    return sender_name, ""


def _unique(base: str, existing: set[str] | None) -> str:
    """``base``, or ``base (2)``, ``base (3)``... when a rule of that name exists (names compare without case)."""
    taken = {n.casefold() for n in existing or ()}
    name, n = base, 2
    while name.casefold() in taken:
        name, n = f"{base} ({n})", n + 1
    return name


def _when(addr: str, pattern: str | None, fallback: dict[str, Any]) -> dict[str, Any]:
    when: dict[str, Any] = {}
    if addr:
        when["from"] = addr
    if pattern:
        when["subject"] = pattern
    return when or fallback


def _yaml(rule: dict[str, Any], comments: list[str]) -> str:
    body: str = yaml.safe_dump(rule, sort_keys=False, allow_unicode=True, default_flow_style=False, width=1000)
    return "\n".join(c.replace("\n", " ") for c in comments) + "\n" + body


def ignore_rule_from_message(msg: dict[str, Any], existing: set[str] | None = None,
                             *, sender_addr: str = "", sender_name: str = "") -> str | None:
    """The YAML text of an ``action: ignore`` rule for mail like ``msg``: same sender, subject like it.

    None when the mail has neither a sender address nor a subject: such a
    rule would ignore far more than this mail.
    """
    sender_name, addr = _sender_of(msg, sender_addr, sender_name)
    domain = addr.rpartition("@")[2] if "@" in addr else ""
    pattern = subject_pattern(msg.get("subject") or "")
    if not addr and not pattern:
        return None
    when = _when(addr, pattern, {})
    base = f"Ignore mail from {addr}" if addr else f"Ignore subject {pattern}" if pattern else \
        f"Ignore message {msg.get('id')}"
    rule: dict[str, Any] = {"name": _unique(base, existing), "when": when, "action": "ignore"}
    slug = _SLUG.sub("-", (domain or "mail").lower()).strip("-") or "mail"
    comments = [
        f"# Ignores mail like message {int(msg.get('id') or 0)}: kept and listed as ignored, never exported.",
        f"# Save it as rules/ignore-{slug}.yaml,",
        "# or add it to an existing rule file after a line with three dashes (---).",
    ]
    if domain and addr:
        comments.append(f"# To ignore every sender of the domain, write  from: \"@{domain}\"")
    if pattern and "*" in pattern:
        comments.append("# In subject, * stands for any text (here: the numbers that change).")
    return _yaml(rule, comments)


def rule_from_message(msg: dict[str, Any], documents: list[dict[str, Any]], existing: set[str] | None = None,
                      *, sender_addr: str = "", sender_name: str = "") -> str:
    """The YAML text of a rule that matches ``msg`` (a store row) by its sender and subject."""
    sender_name, addr = _sender_of(msg, sender_addr, sender_name)
    domain = addr.rpartition("@")[2] if "@" in addr else ""
    pattern = subject_pattern(msg.get("subject") or "")
    when = _when(addr, pattern, {"contains": "invoice"})
    base = f"Mail from {addr}" if addr else f"Subject {pattern}" if pattern else f"Message {msg.get('id')}"
    rule: dict[str, Any] = {"name": _unique(base, existing), "when": when}
    company = _company_guess(sender_name, domain, documents)
    assign: dict[str, Any] = {"document_type": "invoice"}
    if company:
        # assign values are templates: a brace in a name is written doubled
        assign = {"company": company.replace("{", "{{").replace("}", "}}"), **assign}
    if not documents and msg.get("status") in ("unmatched", "ignored"):
        rule["import"] = "both"  # nothing was imported: the invoice may be the mail itself
    rule["assign"] = assign
    slug = _SLUG.sub("-", (domain or "mail").lower()).strip("-") or "mail"
    comments = [
        f"# A rule made from message {int(msg.get('id') or 0)}. Save it as rules/{slug}.yaml,",
        "# or add it to an existing rule file after a line with three dashes (---).",
    ]
    if domain and addr:
        comments.append(f"# To take every sender of the domain, write  from: \"@{domain}\"")
    if pattern and "*" in pattern:
        comments.append("# In subject, * stands for any text (here: the numbers that change).")
    return _yaml(rule, comments)
