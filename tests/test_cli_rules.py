"""The rules commands as a user runs them: show, rules test, rules schema, reprocess."""

from __future__ import annotations

import datetime as dt
import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

from conftest import make_mail, run_cli, unique_pdf

ROOT = Path(__file__).resolve().parent.parent
RULES = """\
name: Other supplier
when: {from: billing@other.example, subject: Invoice}
---
name: Newsletters
when: {subject: "*newsletter*"}
action: ignore
---
name: ACME invoices
when: {from: billing@acme.example, contains: invoice}
assign: {company: ACME, tags: [acme]}
"""


def _setup(tmp_path: Path, rules: str | None = RULES, **extra: Any) -> Path:
    (tmp_path / "rules").mkdir()
    if rules is not None:
        (tmp_path / "rules" / "suppliers.yaml").write_text(rules)
    cfg = {"data_dir": str(tmp_path / "data"), "rules_dir": str(tmp_path / "rules"),
           "smtp": {"enabled": False}, "web": {"enabled": False}, "unmatched": {"import": "keep", "smtp": "keep"},
           **extra}
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _eml(tmp_path: Path, name: str = "acme.eml", **kw: Any) -> Path:
    kw.setdefault("attachments", [("inv-42.pdf", unique_pdf(name), "application/pdf")])
    path = tmp_path / name
    path.write_bytes(make_mail(**kw).as_bytes())
    return path


def _cli(config: Path, *args: str) -> Any:
    return run_cli("-q", "-c", str(config), *args)


# --- show --------------------------------------------------------------------------


def test_show_prints_the_stored_decision_with_every_rule_tried(tmp_path: Path) -> None:
    config = _setup(tmp_path)
    imported = _cli(config, "import", "--json", str(_eml(tmp_path)))
    assert imported.returncode == 0, imported.stderr
    mid = json.loads(imported.stdout)["id"]

    r = _cli(config, "show", str(mid))
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert f"message #{mid}: imported" in out
    assert "rule:      'ACME invoices': import (attachments)" in out
    assert "inv-42.pdf" in out and "company ACME" in out and "tags acme" in out
    assert "rules tried (3):" in out
    assert ('no    Other supplier: from: "billing@other.example" did not match '
            '"Billing <billing@acme.example>"') in out
    assert 'no    Newsletters: subject: "*newsletter*" did not match "Invoice 42"' in out
    assert "MATCH ACME invoices: " in out

    data = json.loads(_cli(config, "show", str(mid), "--json").stdout)
    assert data["id"] == mid and data["status"] == "imported" and data["subject"] == "Invoice 42"
    assert data["decision"]["rule"] == "ACME invoices" and data["decision"]["imported"] == ["inv-42.pdf"]
    assert [(t["rule"], t["matched"]) for t in data["decision"]["explain"]] == [
        ("Other supplier", False), ("Newsletters", False), ("ACME invoices", True)]
    assert data["documents"][0]["company"] == "ACME" and data["documents"][0]["tags"] == ["acme"]

    missing = _cli(config, "show", "999")
    assert missing.returncode == 1 and b"no message #999" in missing.stderr


def test_json_output_is_not_mixed_with_the_log(tmp_path: Path) -> None:
    """`import --json | jq` works: the log (INFO by default) goes to stderr."""
    config = _setup(tmp_path)
    r = run_cli("-c", str(config), "import", "--json", str(_eml(tmp_path)))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.decode().splitlines()
    assert lines and all(isinstance(json.loads(line), dict) for line in lines)
    assert json.loads(lines[0])["status"] == "imported"
    assert b"INFO" in r.stderr


def test_show_of_an_unmatched_mail_names_the_policy(tmp_path: Path) -> None:
    config = _setup(tmp_path)
    eml = _eml(tmp_path, sender="Shop <shop@stranger.example>", subject="Hello", attachments=[])
    mid = json.loads(_cli(config, "import", "--json", str(eml)).stdout)["id"]
    out = _cli(config, "show", str(mid)).stdout.decode()
    assert f"message #{mid}: unmatched" in out
    assert "rule:      none matched; the import policy 'keep' decided" in out
    assert "rules tried (3):" in out and "MATCH" not in out


def test_a_long_explanation_is_stored_whole_and_small(tmp_path: Path) -> None:
    """400 rules for other suppliers: every one is in the explanation, stored deflated."""
    many = "".join(f"name: Supplier {i}\nwhen: {{from: billing@supplier{i}.example, subject: Invoice}}\n---\n"
                   for i in range(400))
    config = _setup(tmp_path, many + RULES)
    mid = json.loads(_cli(config, "import", "--json", str(_eml(tmp_path))).stdout)["id"]
    data = json.loads(_cli(config, "show", str(mid), "--json").stdout)
    explain = data["decision"]["explain"]
    assert len(explain) == 403 and explain[-1]["rule"] == "ACME invoices" and explain[-1]["matched"] is True
    assert explain[123] == {"rule": "Supplier 123", "file": "suppliers.yaml", "matched": False,
                            "reason": 'from: "billing@supplier123.example" did not match '
                                      '"Billing <billing@acme.example>"'}
    words = len(json.dumps(explain))
    with sqlite3.connect(tmp_path / "data" / "gateway.db") as conn:
        stored = conn.execute("SELECT length(decision) FROM messages WHERE id = ?", (mid,)).fetchone()[0]
    assert words > 40_000 and stored < words / 4


# --- rules test ----------------------------------------------------------------------


def test_rules_test_json_has_the_decision_and_every_rule_tried(tmp_path: Path) -> None:
    config = _setup(tmp_path)
    r = _cli(config, "rules", "test", "--json", str(_eml(tmp_path)))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["rule"] == "ACME invoices" and out["action"] == "import" and out["import"] == "attachments"
    assert out["assign"] == {"company": "ACME", "tags": ["acme"]}
    assert [{k: t[k] for k in ("rule", "matched")} for t in out["explain"]] == [
        {"rule": "Other supplier", "matched": False}, {"rule": "Newsletters", "matched": False},
        {"rule": "ACME invoices", "matched": True}]
    assert all(isinstance(t["reason"], str) and t["reason"] for t in out["explain"])
    assert out["explain"][1]["reason"] == 'subject: "*newsletter*" did not match "Invoice 42"'


def test_rules_test_against_a_folder_with_errors_exits_1_naming_each_file(tmp_path: Path) -> None:
    config = _setup(tmp_path)
    (tmp_path / "rules" / "broken.yaml").write_text("name: broken\nwhen: {from: [unclosed\n")
    (tmp_path / "rules" / "typo.yaml").write_text("name: typo\nwhen: {form: x@y.example}\n")
    for args in ((), ("--json",)):
        r = _cli(config, "rules", "test", *args, str(_eml(tmp_path)))
        assert r.returncode == 1
        out = r.stdout.decode()
        assert "broken.yaml:" in out and "typo.yaml:" in out and "when.form" in out
        assert "no rule matched" not in out
        assert b"2 problem(s)" in r.stderr


def test_rules_test_applies_require_authenticated_sender(tmp_path: Path) -> None:
    config = _setup(tmp_path, trust={"require_authenticated_sender": True})
    eml = str(_eml(tmp_path))
    plain = json.loads(_cli(config, "rules", "test", "--json", eml).stdout)
    assert plain["rule"] is None and plain["require_authenticated_sender"] is True
    assert "trust.require_authenticated_sender" in plain["explain"][2]["reason"]
    vouched = json.loads(_cli(config, "rules", "test", "--json", "--authenticated", eml).stdout)
    assert vouched["rule"] == "ACME invoices"


# --- rules schema --------------------------------------------------------------------


def test_rules_schema_is_a_json_schema_that_accepts_the_examples_and_rejects_mistakes() -> None:
    r = run_cli("rules", "schema")
    assert r.returncode == 0, r.stderr
    schema = json.loads(r.stdout)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)  # what an editor's YAML language server reads
    validator = Draft202012Validator(schema)
    docs = [d for f in sorted((ROOT / "rules").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    assert len(docs) >= 3
    for doc in docs:
        assert validator.is_valid(doc), list(validator.iter_errors(doc))
    assert validator.is_valid({"rules": [{"name": "a", "when": {"from": "@a.example"}}]})
    for wrong in ({"name": "a", "when": {"form": "x@y.example"}}, {"name": "a", "when": {}, "action": "delete"},
                  {"when": {"from": "x@y.example"}}, {"name": "", "when": {}}):
        assert not validator.is_valid(wrong), wrong


# --- reprocess -----------------------------------------------------------------------


def test_reprocess_unmatched_since_a_date_applies_a_new_rule_and_counts_the_changes(tmp_path: Path) -> None:
    config = _setup(tmp_path, rules=None)
    eml = _eml(tmp_path, sender="Beta <billing@beta.example>", subject="Invoice 7")
    mid = json.loads(_cli(config, "import", "--json", str(eml)).stdout)["id"]
    assert json.loads(_cli(config, "show", str(mid), "--json").stdout)["status"] == "unmatched"
    (tmp_path / "rules" / "beta.yaml").write_text("name: Beta\nwhen: {from: '@beta.example'}\n")

    later = _cli(config, "reprocess", "--status", "unmatched", "--since", "2099-01-01")
    assert later.returncode == 0 and "0 message(s) examined, 0 changed status" in later.stdout.decode()
    today = dt.date.today().isoformat()
    r = _cli(config, "reprocess", "--status", "unmatched", "--since", today)
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert re.search(rf"#{mid}: unmatched -> imported: rule 'Beta'", out), out
    assert "1 message(s) examined, 1 changed status" in out
    assert json.loads(_cli(config, "show", str(mid), "--json").stdout)["decision"]["rule"] == "Beta"
