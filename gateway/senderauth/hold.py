"""Hold mail that claims a rule's sender without proof: the ``suspicious`` status."""

from __future__ import annotations

import dataclasses
from typing import Any

from gateway.models import Decision, MailView


def claimed_rule(ruleset: Any, view: MailView, decision: Decision, require_authenticated_sender: bool) -> Any:
    """The rule a mail claims without proof, or None.

    That is the rule that would decide had the sender been authenticated,
    when it names a sender (`from`) and comes before the rule that did
    decide (or no rule decided): without the hold, a forged mail would fall
    through to a later, more general rule or to the unmatched policy.
    """
    if ruleset is None or view.authenticated is True:
        return None
    trial = ruleset.decide(dataclasses.replace(view, authenticated=True),
                           require_authenticated_sender=require_authenticated_sender)
    if trial.rule is None or trial.rule == decision.rule:
        return None
    rule = ruleset.get(trial.rule)
    if rule is None or not rule.claims_sender():
        return None
    if decision.rule is not None:
        order = {r.name: i for i, r in enumerate(ruleset.rules)}
        if order.get(decision.rule, len(order)) < order.get(trial.rule, len(order)):
            return None
    return rule


def hold_reason(rule: Any, view: MailView, auth: dict[str, Any] | None, require_authenticated_sender: bool,
                message_id: int) -> str:
    """Why a mail is held, in words a person can act on."""
    sender = view.sender.addr if view.sender is not None else "(no sender)"
    why = (auth or {}).get("reason") or "the sender could not be authenticated (no authentication result)"
    demand = "trust.require_authenticated_sender" if require_authenticated_sender else "authenticated: true"
    return (f"claims to be from {sender}, the sender of rule {rule.name!r} ({demand}), but {why}. "
            f"Nothing is exported until a person releases it (invoice-gateway release {message_id}).")
