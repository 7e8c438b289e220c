"""Import standards: YAML rule files that decide what happens to each mail.

model (pydantic, JSON Schema) -> loader (files -> RuleSet, LoadProblem) ->
matcher (RuleSet.decide: MailView -> Decision) ; watcher (reload on change).
"""

from __future__ import annotations

from gateway.rules.loader import (
    LoadProblem,
    RuleFiles,
    load_rule_files,
    load_rules,
    load_rules_or_raise,
    load_rules_text,
    read_rule_files,
)
from gateway.rules.matcher import Rule, RuleSet, select_attachments
from gateway.rules.model import rules_schema
from gateway.rules.watcher import RulesWatcher

__all__ = [
    "LoadProblem",
    "Rule",
    "RuleFiles",
    "RuleSet",
    "RulesWatcher",
    "load_rule_files",
    "load_rules",
    "load_rules_or_raise",
    "load_rules_text",
    "read_rule_files",
    "rules_schema",
    "select_attachments",
]
