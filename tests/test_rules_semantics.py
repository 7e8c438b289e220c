"""What rules mean: a table of (rules, mail, expected decision), plus explanations and the sender index."""

from __future__ import annotations

import email
import email.policy
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.models import Address, MailView
from gateway.rules import RuleFiles, RuleSet, load_rule_files, load_rules_text
from gateway.rules.trace import compact, words


def mail(headers: str = "From: Someone <someone@elsewhere.example>\nSubject: hello", body: str = "", *,
         attachments: tuple[str, ...] = (), source: str = "smtp", import_address: str | None = None,
         tag: str | None = None, einvoice: Mapping[str, str] | None = None, authenticated: bool | None = None,
         envelope_to: tuple[str, ...] = (), fields: Mapping[str, str] | None = None) -> MailView:
    """A MailView as the pipeline builds it: headers decoded by the email package (RFC 2047 included)."""
    msg = email.message_from_string(headers.strip() + "\n\n" + body, policy=email.policy.default)
    sender = None
    if msg["From"] is not None:
        a = msg["From"].addresses[0]
        sender = Address(a.display_name, a.addr_spec)
    to = [Address(a.display_name, a.addr_spec) for name in ("To", "Cc") if msg[name] is not None
          for a in msg[name].addresses]
    to += [Address("", rcpt) for rcpt in envelope_to]
    hdrs: dict[str, tuple[str, ...]] = {}
    for k, v in msg.items():
        hdrs[k.lower()] = (*hdrs.get(k.lower(), ()), str(v))
    return MailView(sender=sender, to=tuple(to), subject=str(msg["Subject"] or ""), body=body,
                    attachments=attachments, headers=hdrs, source=source, import_address=import_address, tag=tag,
                    einvoice=einvoice, authenticated=authenticated, fields=fields or {})


def rules(files: str | Mapping[str, str]) -> RuleSet:
    """A RuleSet from YAML text (one file) or {file name: text}, failing the test on any problem."""
    if isinstance(files, str):
        files = {"rules.yaml": files}
    ruleset, problems = load_rule_files(
        RuleFiles(Path("rules"), tuple(sorted((n, t.encode()) for n, t in files.items()))))
    assert not problems, [str(p) for p in problems]
    assert ruleset is not None
    return ruleset


def one(when: str, **extra: str) -> str:
    """A one-rule file named "R" with the given `when` (flow YAML)."""
    lines = [f"name: R\nwhen: {when}"] + [f"{k}: {v}" for k, v in extra.items()]
    return "\n".join(lines)


ACME = "From: Acme Billing <billing@acme.example>\nSubject: Ihre Rechnung 2024-17"
LOAD_ERROR = "load error"


@dataclass
class Case:
    """One row: rules, a mail, the deciding rule (None: unmatched) and other Decision fields."""

    id: str
    rules: str | Mapping[str, str]
    mail: MailView
    rule: str | None
    extra: dict[str, Any] = field(default_factory=dict)


def _from(value: str) -> str:
    return one(f'{{from: "{value}"}}')


CASES = [
    # from: whole addresses and their look-alikes
    Case("addr-exact", _from("billing@acme.example"), mail(ACME), "R"),
    Case("addr-case", _from("Billing@ACME.example"), mail("From: BILLING@Acme.Example"), "R"),
    Case("addr-lookalike-suffix", _from("billing@acme.example"), mail("From: Eve <billing@acme.example.evil.test>"), None),
    Case("addr-lookalike-prefix", _from("billing@acme.example"), mail("From: xbilling@acme.example"), None),
    Case("addr-in-display-name", _from("billing@acme.example"),
         mail('From: "billing@acme.example" <eve@evil.test>'), None),
    Case("addr-glob", _from("invoice-*@acme.example"), mail("From: invoice-2024@acme.example"), "R"),
    Case("addr-glob-other-domain", _from("invoice-*@acme.example"), mail("From: invoice-1@acme.example.evil.test"), None),
    # from: domains and subdomains
    Case("domain", _from("@acme.example"), mail("From: anyone@acme.example"), "R"),
    Case("domain-case", _from("@ACME.example"), mail("From: anyone@Acme.EXAMPLE"), "R"),
    Case("domain-not-subdomain", _from("@acme.example"), mail("From: x@mail.acme.example"), None),
    Case("domain-lookalike", _from("@acme.example"), mail("From: x@evilacme.example"), None),
    Case("domain-lookalike-suffix", _from("@acme.example"), mail("From: x@acme.example.evil.test"), None),
    Case("subdomain-glob", _from("@*.acme.example"), mail("From: x@mail.eu.acme.example"), "R"),
    Case("subdomain-glob-not-domain", _from("@*.acme.example"), mail("From: x@acme.example"), None),
    Case("subdomain-glob-lookalike", _from("@*.acme.example"), mail("From: x@mail.evilacme.example"), None),
    # from: display names and parts
    Case("name-part", _from("Acme Billing"), mail("From: ACME BILLING Team <noreply@mailer.example>"), "R"),
    Case("name-part-in-address", _from("acme"), mail("From: noreply@acme.example"), "R"),
    Case("name-part-miss", _from("Acme"), mail("From: Bob <bob@other.example>"), None),
    Case("no-sender", _from("@acme.example"), mail("Subject: no from"), None),
    Case("from-list", one('{from: [a@one.example, "@acme.example"]}'), mail(ACME), "R"),
    # to: To, Cc, envelope, plus-addresses
    Case("to-plus", one("{to: invoices+acme@home.example}"), mail(ACME + "\nTo: invoices+acme@home.example"), "R"),
    Case("to-plain-not-plus", one("{to: invoices@home.example}"),
         mail(ACME + "\nTo: invoices+acme@home.example"), None),
    Case("to-plus-glob", one('{to: "invoices+*@home.example"}'), mail(ACME + "\nTo: invoices+acme@home.example"), "R"),
    Case("to-cc", one("{to: books@home.example}"), mail(ACME + "\nTo: a@x.example\nCc: Books <books@home.example>"), "R"),
    Case("to-envelope", one("{to: invoices@home.example}"), mail(ACME, envelope_to=("invoices@home.example",)), "R"),
    # order: priority, then file, then position
    Case("priority-beats-file", {"a.yaml": "name: A\nwhen: {}", "b.yaml": "name: B\nwhen: {}\npriority: 10"},
         mail(ACME), "B"),
    Case("file-order", {"b.yaml": "name: B\nwhen: {}", "a.yaml": "name: A\nwhen: {}"}, mail(ACME), "A"),
    Case("position-in-file", "name: First\nwhen: {}\n---\nname: Second\nwhen: {}", mail(ACME), "First"),
    Case("list-form-order", "rules:\n  - {name: One, when: {subject: nomatch}}\n  - {name: Two, when: {}}",
         mail(ACME), "Two"),
    Case("indexed-and-generic-order",
         "name: Generic\nwhen: {subject: Rechnung}\n---\nname: Acme\nwhen: {from: billing@acme.example}",
         mail(ACME), "Generic"),
    # not / any / all
    Case("not-holds", one("{not: {from: '@acme.example'}}"), mail("From: x@other.example"), "R"),
    Case("not-fails", one("{not: {from: '@acme.example'}}"), mail(ACME), None),
    Case("any", one("{any: [{subject: nomatch}, {from: '@acme.example'}]}"), mail(ACME), "R"),
    Case("any-none", one("{any: [{subject: nomatch}, {from: '@other.example'}]}"), mail(ACME), None),
    Case("all-fails", one("{all: [{subject: Rechnung}, {from: '@other.example'}]}"), mail(ACME), None),
    Case("all-holds", one("{all: [{subject: Rechnung}, {from: '@acme.example'}]}"), mail(ACME), "R"),
    Case("all-any-not-nested", one("{all: [{any: [{subject: nomatch}, {from: '@acme.example'}]}, "
                                   "{not: {subject: Mahnung}}]}"), mail(ACME), "R"),
    Case("keys-and", one("{from: '@acme.example', contains: Gutschrift}"), mail(ACME), None),
    # decoded subjects and case
    Case("rfc2047-utf8", one("{subject: Rechnung für März}"),
         mail("From: a@b.example\nSubject: =?utf-8?q?Ihre_Rechnung_f=C3=BCr_M=C3=A4rz?="), "R"),
    Case("rfc2047-latin1", one("{subject: GRÜSSE}"),
         mail("From: a@b.example\nSubject: =?iso-8859-1?q?Gr=FC=DFe_und_Rechnung?="), "R"),
    Case("rfc2047-regex", one('{subject: "re:f(ü|ue)r m(ä|ae)rz"}'),
         mail("From: a@b.example\nSubject: =?utf-8?b?UmVjaG51bmcgZsO8ciBNw6Ryeg==?="), "R"),
    Case("subject-case", one("{subject: RECHNUNG}"), mail(ACME), "R"),
    # text forms: substring, glob, regex, lists
    Case("glob-substring-form", one('{subject: "*newsletter*"}'), mail("From: a@b.example\nSubject: Our Newsletter #5"), "R"),
    Case("glob-is-whole-value", one('{subject: "Invoice*"}'), mail("From: a@b.example\nSubject: Re: Invoice 5"), None),
    Case("glob-question-mark", one('{subject: "Invoice ?"}'), mail("From: a@b.example\nSubject: invoice 5"), "R"),
    Case("regex-search", one(r'{subject: "re:invoice #\\d+$"}'), mail("From: a@b.example\nSubject: Your Invoice #123"), "R"),
    Case("regex-miss", one(r'{subject: "re:^invoice #\\d+$"}'), mail("From: a@b.example\nSubject: Your Invoice #123"), None),
    Case("subject-list", one("{subject: [Rechnung, Invoice]}"), mail("From: a@b.example\nSubject: Invoice 5"), "R"),
    Case("body", one("{body: Rechnungsbetrag}"), mail(ACME, "Der RECHNUNGSBETRAG ist fällig."), "R"),
    Case("contains-body", one("{contains: Kundennummer}"), mail(ACME, "Ihre Kundennummer: 42"), "R"),
    Case("contains-subject", one("{contains: rechnung}"), mail(ACME, "nothing here"), "R"),
    Case("contains-miss", one("{contains: Mahnung}"), mail(ACME, "nothing here"), None),
    # header
    Case("header-glob", one('{header: {X-Mailer: "*SAP*"}}'), mail(ACME + "\nX-Mailer: SAP NetWeaver 7.5"), "R"),
    Case("header-name-case", one("{header: {list-id: news}}"), mail(ACME + "\nList-Id: <news.shop.example>"), "R"),
    Case("header-absent", one('{header: {X-Mailer: "*"}}'), mail(ACME), None),
    # source
    Case("source-smtp", one("{source: smtp}"), mail(ACME, source="smtp"), "R"),
    Case("source-other", one("{source: smtp}"), mail(ACME, source="imap:gmail"), None),
    Case("source-any-imap", one("{source: imap}"), mail(ACME, source="imap:gmail"), "R"),
    Case("source-mailbox", one("{source: 'imap:GMail'}"), mail(ACME, source="imap:gmail"), "R"),
    Case("source-import-address", one("{source: invoices+acme@home.example}"),
         mail(ACME, import_address="invoices+acme@home.example"), "R"),
    Case("source-import-address-miss", one("{source: invoices@home.example}"),
         mail(ACME, import_address="invoices+acme@home.example"), None),
    # attachments
    Case("attachment-glob", one('{attachment: "*.pdf"}'), mail(ACME, attachments=("logo.png", "Invoice.PDF")), "R"),
    Case("attachment-glob-miss", one('{attachment: "*.pdf"}'), mail(ACME, attachments=("invoice.pdf.exe",)), None),
    Case("attachment-part", one("{attachment: rechnung}"), mail(ACME, attachments=("2024_Rechnung_17.pdf",)), "R"),
    Case("has-attachment-false", one("{has_attachment: false}"), mail(ACME), "R"),
    Case("has-attachment-true", one("{has_attachment: true}"), mail(ACME), None),
    # e-invoice
    Case("einvoice-true", one("{einvoice: true}"), mail(ACME, einvoice={"seller": "Acme GmbH"}), "R"),
    Case("einvoice-true-none", one("{einvoice: true}"), mail(ACME), None),
    Case("einvoice-false", one("{einvoice: false}"), mail(ACME, einvoice={"seller": "Acme GmbH"}), None),
    Case("einvoice-field", one("{einvoice: {seller_vat_id: de123456789}}"),
         mail(ACME, einvoice={"seller_vat_id": "DE123456789"}), "R"),
    Case("einvoice-field-miss", one("{einvoice: {seller_vat_id: DE123456789}}"),
         mail(ACME, einvoice={"seller_vat_id": "DE999"}), None),
    Case("einvoice-field-absent", one("{einvoice: {seller: Acme}}"), mail(ACME, einvoice={"grand_total": "1.00"}), None),
    Case("einvoice-field-empty-is-absent", one('{einvoice: {seller: "*"}}'), mail(ACME, einvoice={"seller": ""}), None),
    Case("einvoice-amount", one('{einvoice: {grand_total: "238.00", currency: [EUR, CHF]}}'),
         mail(ACME, einvoice={"grand_total": "238.00", "currency": "EUR"}), "R"),
    # authenticated
    Case("auth-true", one("{authenticated: true}"), mail(ACME, authenticated=True), "R"),
    Case("auth-unknown-not-true", one("{authenticated: true}"), mail(ACME, authenticated=None), None),
    Case("auth-unknown-not-false", one("{authenticated: false}"), mail(ACME, authenticated=None), None),
    Case("auth-false", one("{authenticated: false}"), mail(ACME, authenticated=False), "R"),
    Case("auth-not-true", one("{not: {authenticated: true}}"), mail(ACME, authenticated=None), "R"),
    # actions, import modes and assign
    Case("ignore", one("{from: '@acme.example'}", action="ignore"), mail(ACME), "R", {"action": "ignore", "assign": {}}),
    Case("import-body", one("{from: '@acme.example'}", **{"import": "body"}), mail(ACME), "R",
         {"action": "import", "import_mode": "body"}),
    Case("attachment-globs", one("{}", attachments='["*.pdf", "*.xml"]'), mail(ACME), "R",
         {"attachment_globs": ("*.pdf", "*.xml")}),
    Case("assign-placeholders",
         one("{}", assign='{company: "{einvoice.seller}", document_type: invoice, '
                          'tags: [acme, "{tag}", "{sender_domain}"], note: "Re: {subject}"}'),
         mail(ACME, tag="books", einvoice={"seller": "Acme GmbH"}), "R",
         {"assign": {"company": "Acme GmbH", "document_type": "invoice", "tags": ("acme", "books", "acme.example"),
                     "note": "Re: Ihre Rechnung 2024-17"}}),
    Case("assign-missing-placeholder", one("{}", assign='{company: "{einvoice.seller}", tags: ["{tag}", x]}'),
         mail(ACME), "R", {"assign": {"company": "", "tags": ("x",)}}),
    Case("assign-fields-first", one("{}", assign='{company: "{einvoice.seller} ({date})"}'),
         mail(ACME, fields={"einvoice.seller": "From fields", "date": "2024-05-01"}), "R",
         {"assign": {"company": "From fields (2024-05-01)"}}),
    Case("empty-when-matches-all", one("{}"), mail("Subject: anything"), "R"),
    # load errors
    Case("bad-regex", one('{subject: "re:(unclosed"}'), mail(ACME), LOAD_ERROR),
    Case("unknown-placeholder", one("{}", assign='{company: "{seller}"}'), mail(ACME), LOAD_ERROR),
    Case("unknown-condition", one("{form: billing@acme.example}"), mail(ACME), LOAD_ERROR),
]


def test_table_is_big_enough() -> None:
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_decision(case: Case) -> None:
    if case.rule == LOAD_ERROR:
        files = {"rules.yaml": case.rules} if isinstance(case.rules, str) else case.rules
        ruleset, problems = load_rule_files(RuleFiles(Path("rules"), tuple((n, t.encode()) for n, t in files.items())))
        assert ruleset is None and problems
        assert all(p.line is not None and p.key for p in problems)
        return
    ruleset = rules(case.rules)
    decision = ruleset.decide(case.mail)
    assert decision.rule == case.rule, decision.explain
    assert decision.action == ("unmatched" if case.rule is None else case.extra.get("action", "import"))
    for attr, want in case.extra.items():
        assert getattr(decision, attr) == want
    full = ruleset.decide(case.mail, trace_all=True)
    assert (full.rule, full.action, full.assign) == (decision.rule, decision.action, decision.assign)


# --- explanations -------------------------------------------------------------


def test_miss_explains_the_first_failed_condition() -> None:
    rs = rules('name: Acme\nwhen: {subject: Rechnung, from: "billing@acme.de"}')
    d = rs.decide(mail("From: Eve <billing@acme.de.evil.test>\nSubject: Hello"), trace_all=True)
    assert d.rule is None and d.action == "unmatched"
    (trace,) = d.explain
    assert (trace.rule, trace.file, trace.matched) == ("Acme", "rules.yaml", False)
    assert trace.reason == 'from: "billing@acme.de" did not match "Eve <billing@acme.de.evil.test>"'


def test_every_rule_tried_is_explained_without_trace_all() -> None:
    rs = rules("name: Acme\nwhen: {from: billing@acme.example}\n---\nname: Other\nwhen: {from: a@other.example}")
    d = rs.decide(mail("From: Acme <invoices@acme.example>"))
    assert [(t.rule, t.matched, t.reason) for t in d.explain] == [
        ("Acme", False, 'from: "billing@acme.example" did not match "Acme <invoices@acme.example>"'),
        ("Other", False, 'from: "a@other.example" did not match "Acme <invoices@acme.example>"')]


def test_match_explains_what_matched() -> None:
    rs = rules("name: Acme\nwhen: {from: '@acme.example', contains: rechnung}")
    (trace,) = rs.decide(mail(ACME)).explain
    assert trace.matched
    assert trace.reason == ('from: "@acme.example" matched "Acme Billing <billing@acme.example>"; '
                            'contains: "rechnung" matched subject "Ihre Rechnung 2024-17"')


def test_trace_all_lists_every_rule_tried_in_order_up_to_the_deciding_one() -> None:
    rs = rules("name: A\nwhen: {subject: nope}\n---\nname: B\nwhen: {has_attachment: true}\n---\n"
               "name: C\nwhen: {contains: rechnung}\n---\nname: D\nwhen: {}")
    d = rs.decide(mail(ACME), trace_all=True)
    assert [(t.rule, t.matched) for t in d.explain] == [("A", False), ("B", False), ("C", True)]
    assert d.explain[0].reason == 'subject: "nope" did not match "Ihre Rechnung 2024-17"'
    assert d.explain[1].reason == "has_attachment: true; the mail has 0 attachments"
    assert tuple(rs.decide(mail(ACME)).explain) == d.explain


def test_explain_lists_every_rule_tried_up_to_the_deciding_one() -> None:
    rs = rules("name: Acme credit notes\nwhen: {from: '@acme.example', subject: Gutschrift}\n---\n"
               "name: Newsletters\nwhen: {subject: '*newsletter*'}\naction: ignore\n---\n"
               "name: Other supplier\nwhen: {from: billing@other.example}\n---\n"
               "name: Acme billing\nwhen: {from: noreply@acme.example}\n---\n"
               "name: Subdomains\nwhen: {from: '@*.example', contains: Rechnung}\n---\n"
               "name: Anything with Rechnung\nwhen: {contains: Rechnung}")
    d = rs.decide(mail(ACME))
    assert d.rule == "Subdomains"
    assert [(t.rule, t.matched) for t in d.explain] == [
        ("Acme credit notes", False), ("Newsletters", False), ("Other supplier", False), ("Acme billing", False),
        ("Subdomains", True)]
    assert d.explain[0].reason == 'subject: "Gutschrift" did not match "Ihre Rechnung 2024-17"'
    assert d.explain[1].reason == 'subject: "*newsletter*" did not match "Ihre Rechnung 2024-17"'
    assert d.explain[2].reason == ('from: "billing@other.example" did not match '
                                   '"Acme Billing <billing@acme.example>"')
    assert d.explain[3].reason == ('from: "noreply@acme.example" did not match '
                                   '"Acme Billing <billing@acme.example>"')
    assert tuple(d.explain) == rs.decide(mail(ACME), trace_all=True).explain


def test_explain_of_nested_conditions() -> None:
    rs = rules("name: N\nwhen: {any: [{subject: x}, {not: {from: '@acme.example'}}]}")
    (trace,) = rs.decide(mail(ACME)).explain
    assert (trace,) == rs.decide(mail(ACME), trace_all=True).explain
    assert not trace.matched
    assert trace.reason.startswith('any: none held: (subject: "x" did not match')
    assert 'not: (from: "@acme.example" matched "Acme Billing <billing@acme.example>")' in trace.reason


def test_rules_pinned_to_other_senders_are_explained_by_their_from() -> None:
    rs = rules("name: Other\nwhen: {from: '@other.example', subject: x}\n---\n"
               "name: Acme\nwhen: {from: billing@acme.example}")
    for d in (rs.decide(mail(ACME)), rs.decide(mail(ACME), trace_all=True)):
        assert [(t.rule, t.matched) for t in d.explain] == [("Other", False), ("Acme", True)]
        assert d.explain[0].reason == 'from: "@other.example" did not match "Acme Billing <billing@acme.example>"'


def test_load_text_reports_regex_problem_with_line_and_key() -> None:
    ruleset, problems = load_rules_text("name: R\nwhen:\n  subject:\n    - ok\n    - 're:[a-'\n", "bad.yaml")
    assert ruleset is None
    (p,) = problems
    assert (p.file, p.line, p.key) == ("bad.yaml", 5, "when.subject[1]")
    assert "invalid regular expression" in p.message


# --- the fast path never changes a decision -----------------------------------

_DOMAINS = ["acme.example", "mail.acme.example", "acme.example.evil.test", "other.example"]
_LOCALS = ["billing", "xbilling", "invoice-1"]
_FROMS = ["billing@acme.example", "@acme.example", "@*.acme.example", "invoice-*@acme.example",
          "*@other.example", "acme", "@other.example", "billing@*", "re:^bill"]
_WORDS = ["rechnung", "*voice*", "re:inv(oice)?", "nope"]

_leaf = st.one_of(
    st.builds(lambda v: {"from": v}, st.lists(st.sampled_from(_FROMS), min_size=1, max_size=2)),
    st.builds(lambda v: {"to": v}, st.sampled_from(["invoices@home.example", "invoices+*@home.example", "x@y.example"])),
    st.builds(lambda k, v: {k: v}, st.sampled_from(["subject", "body", "contains"]), st.sampled_from(_WORDS)),
    st.builds(lambda v: {"attachment": v}, st.sampled_from(["*.pdf", "rechnung", "re:\\.xml$"])),
    st.builds(lambda v: {"has_attachment": v}, st.booleans()),
    st.builds(lambda v: {"header": {"List-Id": v}}, st.sampled_from(["news", "*", "other"])),
    st.builds(lambda v: {"source": v}, st.sampled_from(["smtp", "imap", "imap:gmail", "invoices@home.example"])),
    st.builds(lambda v: {"einvoice": v}, st.sampled_from([True, False, {"seller": "acme"}, {"seller_vat_id": "DE1*"}])),
    st.builds(lambda v: {"authenticated": v}, st.booleans()),
)
_when = st.recursive(
    st.lists(_leaf, max_size=3).map(lambda parts: {k: v for p in parts for k, v in p.items()}),
    lambda inner: st.one_of(
        st.builds(lambda a, b: {"any": [a, b]}, inner, inner),
        st.builds(lambda a, b: {"all": [a, b]}, inner, inner),
        st.builds(lambda a: {"not": a}, inner),
        st.builds(lambda a, b: {**a, **b}, st.lists(_leaf, max_size=2).map(
            lambda parts: {k: v for p in parts for k, v in p.items()}), inner),
    ),
    max_leaves=6,
)
_mails = st.builds(
    lambda local, domain, subject, body, atts, list_id, source, inv, auth: mail(
        f"From: Sender <{local}@{domain}>\nTo: invoices+acme@home.example\nSubject: {subject}"
        + (f"\nList-Id: {list_id}" if list_id else ""), body, attachments=atts, source=source,
        import_address="invoices@home.example" if source == "smtp" else None, einvoice=inv, authenticated=auth),
    st.sampled_from(_LOCALS), st.sampled_from(_DOMAINS), st.sampled_from(["Rechnung 5", "Invoice", "Hi"]),
    st.sampled_from(["", "your invoice", "RECHNUNG"]), st.sampled_from([(), ("a.pdf",), ("Rechnung.xml",)]),
    st.sampled_from([None, "<news.example>"]), st.sampled_from(["smtp", "imap:gmail", "folder:scans"]),
    st.sampled_from([None, {"seller": "ACME GmbH", "seller_vat_id": "DE123"}]), st.sampled_from([None, True, False]),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(whens=st.lists(st.tuples(_when, st.sampled_from([50, 100])), min_size=1, max_size=6), m=_mails)
def test_fast_path_gives_the_same_decision_as_trying_every_rule(
        whens: list[tuple[dict[str, Any], int]], m: MailView) -> None:
    docs = [{"name": f"r{i}", "when": when, "priority": prio} for i, (when, prio) in enumerate(whens)]
    rs = rules("\n---\n".join(json.dumps(d) for d in docs))
    fast, full = rs.decide(m), rs.decide(m, trace_all=True)
    assert (fast.rule, fast.action) == (full.rule, full.action)
    # what the gateway stores is a compact trace: read back, its words are a full trace of every rule
    stored = json.loads(json.dumps(compact(fast.explain)))
    assert words(stored, rs, m) == (list(full.explain), 0)
    assert tuple(fast.explain) == full.explain
    held = rs.decide(m, require_authenticated_sender=True)
    held_stored = json.loads(json.dumps(compact(held.explain)))
    full_held = rs.decide(m, trace_all=True, require_authenticated_sender=True).explain
    assert words(held_stored, rs, m) == (list(full_held), 0)
    assert tuple(held.explain) == full_held
    for rule in rs.rules:
        assert rule.matches(m) == rule.judge(m).matched
