"""The explanation as the gateway stores it: a compact trace, put back into words when it is read.

Putting every rule tried into words costs about 5 ms and 150 KiB per mail
with 1,000 rules. What the words are made of is the rule set, the mail and
which rules failed where, so the gateway stores only the last (as ``trace``
in the message's ``decision``) and makes the words when a person reads them:

    {"v": 1, "rules": <the rule set's digest>, "tried": 876,
     "failed": "40:2,113-114:1,875:m", "auth": true, "require": false}

``tried``: the first ``tried`` rules of the set, in its order, were tried.
``failed``: the condition (index of a top-level part of the rule's `when`)
each tried rule failed at where it is not part 0, consecutive rules with
the same code as a range; ``m`` marks the rule that matched. ``auth`` and
``require``: the sender's authentication and trust.require_authenticated_sender
as the rules saw them (a release or a recheck may change the message since).

The rule files of each digest are kept under ``<data_dir>/rules-archive``,
so a trace reads the same after the rules change; the reader says that the
rules have changed since.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gateway.models import MailView, RuleTrace
from gateway.rules.matcher import MATCHED, Explanation, RuleSet, _Mail

log = logging.getLogger(__name__)

TRACE_VERSION = 1
ARCHIVE_DIR = "rules-archive"
_kept: set[tuple[str, str]] = set()
# the words of a rule the trace names when the mail's raw file is gone
_GONE = "the mail's raw file is gone, so the details cannot be shown"


def encode_failed(failed: Mapping[int, int]) -> str:
    """``{rule: part}`` as ``"i:k,i-j:k"`` (``m`` for MATCHED), rules in order, runs of one code as ranges."""
    out: list[str] = []
    start = prev = code = -2
    for i in sorted(failed):
        k = failed[i]
        if i == prev + 1 and k == code:
            prev = i
            continue
        if start >= 0:
            out.append(_run(start, prev, code))
        start = prev = i
        code = k
    if start >= 0:
        out.append(_run(start, prev, code))
    return ",".join(out)


def _run(start: int, end: int, code: int) -> str:
    rules = str(start) if start == end else f"{start}-{end}"
    return f"{rules}:{'m' if code == MATCHED else code}"


def decode_failed(text: str) -> dict[int, int]:
    """The inverse of encode_failed; ValueError when ``text`` is not one."""
    out: dict[int, int] = {}
    for item in filter(None, text.split(",")):
        rules, _, code = item.partition(":")
        first, _, last = rules.partition("-")
        k = MATCHED if code == "m" else int(code)
        if k < MATCHED:
            raise ValueError(f"bad code {code!r}")
        for i in range(int(first), int(last or first) + 1):
            out[i] = k
    return out


def compact(explain: Sequence[RuleTrace]) -> dict[str, Any] | None:
    """The trace to store for a decision's explanation; None when it is not one RuleSet.decide made."""
    if not isinstance(explain, Explanation):
        return None
    ruleset = explain.ruleset
    failed = dict(explain.failed)
    near = explain._near
    for i, k in ruleset._skip.items():  # an indexed rule the index skipped failed at its `from`
        if i < explain.tried and i not in failed and i not in near:
            failed[i] = k
    return {"v": TRACE_VERSION, "rules": explain.digest, "tried": explain.tried, "failed": encode_failed(failed),
            "auth": explain.authenticated, "require": explain.require_authenticated_sender}


def stored(explain: Sequence[RuleTrace], data_dir: Path | None = None) -> dict[str, Any]:
    """What the gateway stores of an explanation: ``{"trace": ...}`` (its rule files kept in ``data_dir``),
    or ``{"explain": [...]}`` in words when it is not a trace of a rule set."""
    trace = compact(explain)
    if trace is None:
        return {"explain": [{"rule": t.rule, "file": t.file, "matched": t.matched, "reason": t.reason}
                            for t in explain]}
    if data_dir is not None:
        assert isinstance(explain, Explanation)
        keep_rules(data_dir, explain.ruleset)
    return {"trace": trace}


# --- the rule sets traces name -----------------------------------------------------


def keep_rules(data_dir: Path, ruleset: RuleSet) -> None:
    """Keep the rule files of ``ruleset`` under its digest (once; a failure is logged, not raised)."""
    key = (str(data_dir), ruleset.digest)
    if key in _kept or not ruleset.sources:
        return
    folder = Path(data_dir) / ARCHIVE_DIR
    path = folder / f"{ruleset.digest}.json"
    try:
        if not path.exists():
            folder.mkdir(exist_ok=True)
            files = [[rel, data.decode("utf-8", "surrogateescape")] for rel, data in ruleset.sources]
            tmp = folder / f".{ruleset.digest}.{os.getpid()}.tmp"
            tmp.write_text(json.dumps({"digest": ruleset.digest, "files": files}), encoding="utf-8")
            os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot keep the rule files under %s (explanations of older mail will not read "
                    "after the rules change): %s", folder, exc)
        return
    _kept.add(key)


@functools.lru_cache(maxsize=4)
def _archived(data_dir: str, digest: str) -> RuleSet | None:
    from gateway.rules.loader import RuleFiles, load_rule_files

    try:
        doc = json.loads((Path(data_dir) / ARCHIVE_DIR / f"{digest}.json").read_text(encoding="utf-8"))
        files = tuple((str(rel), str(text).encode("utf-8", "surrogateescape")) for rel, text in doc["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    ruleset, _ = load_rule_files(RuleFiles(Path("rules"), files))
    return ruleset if ruleset is not None and ruleset.digest == digest else None


def rules_for(digest: str, data_dir: Path | None, current: RuleSet | None) -> RuleSet | None:
    """The rule set a trace names: ``current`` when it is that one, else the kept one, else None."""
    if current is not None and current.digest == digest:
        return current
    if data_dir is None or not digest.isalnum():
        return None
    return _archived(str(data_dir), digest)


# --- words -------------------------------------------------------------------------


def part_key(part: Any) -> str:
    """The condition key of a compiled top-level part (``from``, ``header List-Id``, ``any`` ...)."""
    kind = type(part).__name__
    if kind == "_Header":
        return f"header {part.name}"
    if kind == "_EInvoiceField":
        return f"einvoice.{part.name}"
    named = {"_Attachment": "attachment", "_HasAttachment": "has_attachment", "_Source": "source",
             "_EInvoicePresent": "einvoice", "_Authenticated": "authenticated", "_Any": "any", "_Not": "not"}
    if kind in named:
        return named[kind]
    return str(getattr(part, "key", None) or getattr(part, "label", None) or "all")


def words(trace: Mapping[str, Any], ruleset: RuleSet, view: MailView | None) -> tuple[list[RuleTrace], int]:
    """The explanation of ``trace`` in words, and how many rules judge ``view`` differently now.

    With the mail (``view``), each rule tried is judged again: the same words
    as a full trace of every rule at decision time. Without it (the raw file
    is gone), each rule is named with the condition it failed at.
    """
    failed = decode_failed(str(trace.get("failed") or ""))
    tried = min(int(trace["tried"]), len(ruleset.rules))
    out: list[RuleTrace] = []
    differ = 0
    if view is None:
        for i, rule in enumerate(ruleset.rules[:tried]):
            code = failed.get(i, 0)
            if code == MATCHED:
                out.append(RuleTrace(rule.name, rule.file, True, f"matched ({_GONE})"))
            else:
                parts = rule.when.parts
                key = part_key(parts[code]) if code < len(parts) else "when"
                out.append(RuleTrace(rule.name, rule.file, False, f"{key}: did not hold ({_GONE})"))
        return out, 0
    m = _Mail(view, bool(trace.get("require")))
    for i, rule in enumerate(ruleset.rules[:tried]):
        ok, why = rule.when.judge(m)
        out.append(RuleTrace(rule.name, rule.file, ok, why))
        if rule.when.first_failed(m) != failed.get(i, 0):
            differ += 1
    return out, differ
