"""A re: condition runs on a stranger's text with a time limit: catastrophic backtracking costs 0.1 s, not forever."""

from __future__ import annotations

import time

from conftest import Gateway, make_mail, wait_for
from gateway.models import Address, MailView
from gateway.rules import load_rules_text
from gateway.rules.matcher import REGEX_TIMEOUT

CATASTROPHIC = "name: Only a's\nwhen: {body: 're:^(a+)+$'}\n"
HOSTILE_BODY = "a" * 50_000 + "!"


def _view(body: str, subject: str = "Hello") -> MailView:
    return MailView(sender=Address("Eve", "eve@attacker.example"), to=(), subject=subject, body=body,
                    attachments=(), headers={}, source="smtp")


def test_a_catastrophic_regex_times_out_and_says_so() -> None:
    rs, problems = load_rules_text(CATASTROPHIC)
    assert rs is not None, problems
    start = time.monotonic()
    decision = rs.decide(_view(HOSTILE_BODY))
    (trace,) = decision.explain  # the words are made here: the regex runs again, and times out again
    took = time.monotonic() - start
    assert decision.rule is None and not trace.matched
    assert trace.reason == (f'body: "re:^(a+)+$" not found in the body ({len(HOSTILE_BODY)} characters)'
                            f"; regex timed out after {REGEX_TIMEOUT:g} s on the body")
    assert took < 4 * REGEX_TIMEOUT + 0.5, took


def test_normal_regexes_match_as_python_re_does() -> None:
    rs, problems = load_rules_text(
        "name: R\nwhen: {subject: 're:^(?P<kind>invoice|rechnung)\\s+#\\d{3,}$', body: 're:(?i)total:\\s*\\d+'}\n")
    assert rs is not None, problems
    hit = rs.decide(_view("Total: 12", subject="Rechnung #1234"))
    assert hit.rule == "R" and "timed out" not in hit.explain[0].reason
    assert rs.decide(_view("Total: 12", subject="Rechnung #12")).rule is None
    bad, problems = load_rules_text("name: R\nwhen: {subject: 're:(?P<x>a'}\n")
    assert bad is None and "invalid regular expression" in problems[0].message


def test_a_hostile_body_through_the_gateway_is_decided_within_2_s(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    gw: Gateway = gateway_factory(unmatched={"smtp": "keep"})
    (gw.settings.rules_dir / "rules.yaml").write_text(CATASTROPHIC)
    wait_for(lambda: gw.service.rules.ruleset is not None and len(gw.service.rules.ruleset.rules) == 1, timeout=10)
    start = time.monotonic()
    gw.send(make_mail(sender="Eve <eve@attacker.example>", subject="aaaa", body=HOSTILE_BODY),
            sender="eve@attacker.example")
    mid = wait_for(lambda: gw.store.message_ids(status="unmatched"), timeout=10)[0]
    took = time.monotonic() - start
    print(f"sent and decided in {took:.2f} s")
    assert took < 2.0, took
    (trace,) = gw.api(f"/api/messages/{mid}").json()["decision"]["explain"]
    assert trace["rule"] == "Only a's" and trace["matched"] is False
    assert trace["reason"].endswith(f"; regex timed out after {REGEX_TIMEOUT:g} s on the body")
