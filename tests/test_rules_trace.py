"""The explanation is stored as a compact trace and put into words when read: small, fast, and the same words."""

from __future__ import annotations

import base64
import json
import shutil
import sqlite3
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import Gateway, make_mail, run_cli, unique_pdf, wait_for
from gateway.explain import stored_explanation
from gateway.models import Address, MailView
from gateway.rules import RuleSet, load_rules_text
from gateway.rules.matcher import MATCHED
from gateway.rules.trace import ARCHIVE_DIR, compact, decode_failed, encode_failed, keep_rules, stored, words
from gateway.store import decision_of, pack_decision
from test_web_pages import Browserless

OTHERS = 1000


def _many(count: int = OTHERS) -> str:
    """``count`` rules for other suppliers, then the ACME rule (the decision lists every one)."""
    return "".join(f"name: Supplier {i}\nwhen: {{from: billing@supplier{i}.example, subject: Invoice}}\n---\n"
                   for i in range(count)) + (
        "name: Newsletters\nwhen: {subject: '*newsletter*', has_attachment: false}\naction: ignore\n---\n"
        "name: ACME invoices\nwhen: {from: billing@acme.example, contains: invoice}\nassign: {company: ACME}\n")


def _view(sender: str = "billing@acme.example", subject: str = "Invoice 42", authenticated: bool | None = None) -> MailView:
    return MailView(sender=Address("Billing", sender), to=(Address("", "invoices@home.example"),), subject=subject,
                    body="Please find the invoice attached.", attachments=("inv-42.pdf",), headers={},
                    source="smtp", authenticated=authenticated)


def _rules(text: str) -> RuleSet:
    rs, problems = load_rules_text(text, "suppliers.yaml")
    assert rs is not None, [str(p) for p in problems]
    return rs


@given(st.dictionaries(st.integers(0, 3000), st.integers(MATCHED, 12), max_size=60))
@settings(max_examples=200, deadline=None)
def test_failed_codes_round_trip(failed: dict[int, int]) -> None:
    assert decode_failed(encode_failed(failed)) == failed


def test_a_thousand_rules_store_under_1_kib_and_read_back_as_every_rule_in_words() -> None:
    rs = _rules(_many())
    for view in (_view(), _view(sender="eve@stranger.example", subject="Hello")):
        decision = rs.decide(view)
        row = json.dumps(pack_decision({"rule": decision.rule, "action": decision.action, **stored(decision.explain)}))
        assert len(row.encode()) <= 1024, len(row)
        full = rs.decide(view, trace_all=True).explain
        assert len(full) >= OTHERS + 1
        assert words(json.loads(row)["trace"], rs, view) == (list(full), 0)


def test_the_words_use_the_authentication_the_rules_saw() -> None:
    """A release after the decision changes the message, not what the rules saw when they decided."""
    rs = _rules("name: Known\nwhen: {from: billing@acme.example}\n")
    view = _view(authenticated=None)
    decision = rs.decide(view, require_authenticated_sender=True)
    trace = compact(decision.explain)
    assert trace is not None and trace["auth"] is None and trace["require"] is True
    later = _view(authenticated=True)  # e.g. released: mail_view now says authenticated
    (back,), differ = words(trace, rs, later)
    assert differ == 1  # read with today's view the rule would match: the reader is told
    assert words(trace, rs, view)[0] == list(rs.decide(view, trace_all=True, require_authenticated_sender=True).explain)


def _stored_message(tmp_path: Path, rs: RuleSet, view_raw: bytes) -> tuple[dict[str, Any], dict[str, Any], Path]:
    from gateway import mime
    from gateway.pipeline import mail_view

    raw = tmp_path / "m.eml"
    raw.write_bytes(view_raw)
    msg = {"id": 1, "source": "smtp", "rcpt_tos": "[]", "import_address": None, "tag": None, "auth": None}
    view = mail_view(mime.parse(view_raw), msg, None)
    decision = rs.decide(view)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    row = {"rule": decision.rule, "action": decision.action, **stored(decision.explain, data_dir)}
    full = [{"rule": t.rule, "file": t.file, "matched": t.matched, "reason": t.reason}
            for t in rs.decide(view, trace_all=True).explain]
    return decision_of(json.dumps(pack_decision(row))) or {}, {"msg": msg, "full": full}, raw


def test_a_trace_reads_the_same_after_the_rules_change_and_says_so(tmp_path: Path) -> None:
    rs = _rules(_many(20))
    eml = make_mail(attachments=[("inv-42.pdf", unique_pdf("t"), "application/pdf")]).as_bytes()
    decision, ctx, raw = _stored_message(tmp_path, rs, eml)
    data_dir = tmp_path / "data"
    assert (data_dir / ARCHIVE_DIR / f"{rs.digest}.json").is_file()

    same = stored_explanation(decision, ctx["msg"], raw_path=raw, data_dir=data_dir, current=rs)
    assert same["explain"] == ctx["full"] and "explain_note" not in same and "trace" not in same

    changed = _rules(_many(20).replace("name: Supplier 3\n", "name: Supplier three\n"))
    later = stored_explanation(decision, ctx["msg"], raw_path=raw, data_dir=data_dir, current=changed)
    assert later["explain"] == ctx["full"]  # the words of the rules the mail was decided by
    assert later["explain_note"].startswith("The rules have changed since this mail was decided; shown as they were then")

    gone = stored_explanation(decision, ctx["msg"], raw_path=None, data_dir=data_dir, current=changed)
    assert [(t["rule"], t["matched"]) for t in gone["explain"]] == [(t["rule"], t["matched"]) for t in ctx["full"]]
    assert gone["explain"][0]["reason"] == "from: did not hold (the mail's raw file is gone, so the details cannot be shown)"
    assert "raw file is gone" in gone["explain_note"]

    shutil.rmtree(data_dir / ARCHIVE_DIR)
    from gateway.rules import trace as trace_module
    trace_module._archived.cache_clear()
    lost = stored_explanation(decision, ctx["msg"], raw_path=raw, data_dir=data_dir, current=changed)
    assert lost["explain"] == [] and "are no longer kept: 22 rule(s) were tried" in lost["explain_note"]


def test_explanations_stored_in_words_before_still_read(tmp_path: Path) -> None:
    words_ = [{"rule": f"R{i}", "file": "r.yaml", "matched": False, "reason": f'from: "x{i}@y" did not match "a@b"'}
              for i in range(200)]
    plain = {"rule": None, "action": "unmatched", "explain": words_[:2]}
    deflated = {"rule": None, "action": "unmatched", "explain_z": base64.b64encode(
        zlib.compress(json.dumps(words_).encode(), 1)).decode()}
    for old, want in ((plain, words_[:2]), (deflated, words_)):
        back = stored_explanation(decision_of(json.dumps(old)) or {}, {}, raw_path=None, data_dir=tmp_path)
        assert back["explain"] == want and "explain_note" not in back


@pytest.mark.parametrize("processes", [False, True], ids=["threads", "worker-processes"])
def test_gateway_stores_a_trace_and_the_api_page_and_show_read_the_words(gateway_factory, processes: bool) -> None:  # type: ignore[no-untyped-def]
    """With worker processes the trace and the kept rule files are written by a child process, read by serve."""
    gw: Gateway = gateway_factory(unmatched={"smtp": "keep"}, limits={"worker_processes": processes})
    rules_file = gw.settings.rules_dir / "suppliers.yaml"
    rules_file.write_text(_many())
    wait_for(lambda: gw.service.rules.ruleset is not None and len(gw.service.rules.ruleset.rules) == OTHERS + 2,
             timeout=20)
    gw.send(make_mail(subject="Invoice 42", attachments=[("inv-42.pdf", unique_pdf("trace"), "application/pdf")]))
    mid = wait_for(lambda: gw.store.message_ids(status="imported"), timeout=60)[0]
    with sqlite3.connect(gw.settings.data_dir / "gateway.db") as conn:
        column = conn.execute("SELECT decision FROM messages WHERE id = ?", (mid,)).fetchone()[0]
    assert len(column.encode()) <= 1024, len(column)
    assert "did not match" not in column and json.loads(column)["trace"]["tried"] == OTHERS + 2

    start = time.monotonic()
    api = gw.api(f"/api/messages/{mid}").json()["decision"]
    print(f"GET /api/messages/{mid} with {OTHERS + 2} rules in words: {time.monotonic() - start:.2f} s")
    tester = gw.api(f"/api/rules/test?message={mid}", "POST").json()
    assert api["rule"] == "ACME invoices" and api["explain"] == tester["explain"] and len(api["explain"]) == OTHERS + 2
    assert "trace" not in api and "explain_note" not in api

    client = Browserless(gw)
    try:
        assert client.login().status_code == 302
        page = client.get(f"/messages/{mid}").text
        assert page.count('class="nomatch"') == OTHERS + 1 and page.count('class="match"') == 1
        assert "from: &#34;billing@supplier7.example&#34; did not match" in page

        rules_file.write_text(_many().replace("name: Supplier 7\n", "name: Supplier seven\n"))
        wait_for(lambda: gw.service.rules.ruleset.get("Supplier seven") is not None, timeout=20)
        after = gw.api(f"/api/messages/{mid}").json()["decision"]
        assert after["explain"] == api["explain"] and "The rules have changed since" in after["explain_note"]
        assert "The rules have changed since" in client.get(f"/messages/{mid}").text
    finally:
        client.close()

    config = gw.workdir / "gateway.yaml"
    config.write_text(json.dumps({**gw.cfg, "smtp": {"enabled": False}, "web": {"enabled": False}}))
    shown = run_cli("-q", "-c", str(config), "show", str(mid))
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout.decode()
    assert f"rules tried ({OTHERS + 2}):" in out and "note:      The rules have changed since" in out
    assert 'no    Supplier 7: from: "billing@supplier7.example" did not match "Billing <billing@acme.example>"' in out
