"""Loading a rules folder: all or nothing, every problem with file, line and key; file forms; the schema."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.errors import RuleError
from gateway.rules import (
    LoadProblem,
    RuleSet,
    load_rules,
    load_rules_or_raise,
    load_rules_text,
    read_rule_files,
    rules_schema,
)

REPO_RULES = Path(__file__).resolve().parent.parent / "rules"
VALID = "name: Valid\nwhen:\n  from: billing@acme.example\n"


def write(folder: Path, files: dict[str, str]) -> Path:
    """Write {relative path: text} under ``folder``."""
    for rel, text in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return folder


def problems_of(text: str) -> list[LoadProblem]:
    ruleset, problems = load_rules_text(text, "r.yaml")
    assert ruleset is None
    return problems


def test_four_kinds_of_error_give_four_problems_and_no_ruleset(tmp_path: Path) -> None:
    write(tmp_path, {
        "a-valid.yaml": VALID,
        "broken.yaml": "name: Broken\nwhen:\n  from: x@y.example\n  subject: [unclosed\n",
        "unknown.yaml": "name: Unknown key\nwhen:\n  from: billing@acme.example\n  form: typo@acme.example\n",
        "regex.yaml": "name: Bad regex\nwhen:\n  subject: 're:(rechnung'\n",
        "dup-one.yaml": "name: Acme\nwhen: {from: '@acme.example'}\n",
        "dup-two.yaml": "# the same name again\nname: ACME\nwhen: {from: '@acme.example'}\n",
    })
    ruleset, problems = load_rules(tmp_path)
    assert ruleset is None  # the valid files do not make a rule set on their own
    assert len(problems) == 4, [str(p) for p in problems]
    by_file = {Path(p.file).name: p for p in problems}
    assert set(by_file) == {"broken.yaml", "unknown.yaml", "regex.yaml", "dup-two.yaml"}
    assert all(p.file == str(tmp_path / Path(p.file).name) for p in problems)

    broken = by_file["broken.yaml"]
    assert broken.line == 5 and broken.key is None and broken.message.startswith("YAML: ")

    unknown = by_file["unknown.yaml"]
    assert (unknown.line, unknown.key) == (4, "when.form")
    assert unknown.message.startswith("unknown condition; allowed: from, to, subject, body, contains")
    assert str(unknown) == f"{tmp_path / 'unknown.yaml'}:4: when.form: {unknown.message}"
    assert unknown.message.endswith("did you mean from?")

    regex = by_file["regex.yaml"]
    assert (regex.line, regex.key) == (3, "when.subject")
    assert "invalid regular expression" in regex.message and "missing )" in regex.message

    dup = by_file["dup-two.yaml"]
    assert (dup.line, dup.key) == (2, "name")
    assert f"{tmp_path / 'dup-one.yaml'}:1" in dup.message


def test_problems_are_collected_within_a_file_too() -> None:
    problems = problems_of(
        "name: One\n"
        "when:\n"
        "  form: x\n"
        "  subject: 're:['\n"
        "action: imprt\n"
        "assign: {company: '{sellr}'}\n"
        "---\n"
        "rules:\n"
        "  - name: Two\n"
        "    when: {header: {X-A: [ok, yes]}, einvoice: {seler: x}}\n"
        "    priority: high\n"
        "  - name: one\n"
        "    when: {}\n")
    got = [(p.line, p.key) for p in problems]
    assert got == [(3, "when.form"), (4, "when.subject"), (5, "action"), (6, "assign.company"),
                   (10, "rules[0].when.einvoice.seler"), (10, "rules[0].when.header.X-A[1]"),
                   (11, "rules[0].priority"), (12, "rules[1].name")]
    messages = {p.key: p.message for p in problems}
    assert messages["action"] == "must be 'import' or 'ignore', not 'imprt'"
    assert messages["assign.company"].startswith("unknown placeholder {sellr}; allowed: subject, sender")
    assert messages["rules[0].when.header.X-A[1]"].startswith("must be text, not true/false")
    assert messages["rules[0].when.einvoice.seler"].startswith("unknown e-invoice field; allowed: invoice_number")
    assert messages["rules[0].when.einvoice.seler"].endswith("did you mean seller?")
    assert messages["rules[0].priority"] == "must be a whole number"
    assert "already the name of the rule at r.yaml:1" in messages["rules[1].name"]


@pytest.mark.parametrize(("text", "line", "key", "message"), [
    ("name: X\nwhen:\n  from:\n", 3, "when.from", "has no value"),
    ("name: X\n", 1, "when", "is required"),
    ("when: {}\n", 1, "name", "is required"),
    ("name: X\nwhen: {}\nnme: typo\n", 3, "nme", "unknown key; allowed: name, when, action, import"),
    ("name: X\nwhen: {}\nassign: {company: A, tag: x}\n", 3, "assign.tag",
     "unknown key; allowed: company, document_type, tags, note; did you mean tags?"),
    ("name: X\nwhen:\n  from: a@x.example\n  from: b@x.example\n", 4, "when.from", "given twice (also on line 3)"),
    ("name: X\nwhen: {any: [{subjct: x}]}\n", 2, "when.any[0].subjct", "unknown condition"),
    ("name: X\nwhen: {not: {frm: x}}\n", 2, "when.not.frm", "unknown condition"),
    ("name: X\nwhen: {from: 'Acme <billing@acme.example>'}\n", 2, "when.from", "is not an address"),
    ("name: X\nwhen: {source: smpt}\n", 2, "when.source", "is not a source"),
    ("name: X\nwhen: {subject: ''}\n", 2, "when.subject", "must not be empty"),
    ("name: X\nwhen: {has_attachment: 'yes'}\n", 2, "when.has_attachment", "must be true or false"),
    ("name: X\nwhen: {}\naction: ignore\nassign: {company: A}\n", 4, "assign", "has no effect with action: ignore"),
    ("name: X\nwhen: {}\nimport: body\nattachments: '*.pdf'\n", 4, "attachments", "has no effect with import: body"),
    ("name: X\nwhen: {}\nassign: {note: '{subject'}\n", 3, "assign.note", "expected '}'"),
    ("- name: X\n  when: {}\n", 1, None, "a rule file holds a rule"),
    ("rules: {name: X}\n", 1, "rules", "must be a list of rules"),
    ("rules: []\nname: X\n", 2, "name", "unknown key beside rules:"),
    ("name: X\nwhen: !!python/object:os.system {}\n", 2, None, "YAML: could not determine a constructor"),
])
def test_problem_messages(text: str, line: int, key: str | None, message: str) -> None:
    problems = problems_of(text)
    assert [(p.line, p.key) for p in problems][:1] == [(line, key)], [str(p) for p in problems]
    assert message in problems[0].message


def test_not_utf8_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "latin1.yaml").write_bytes("name: Gebühr\nwhen: {}\n".encode("latin-1"))
    ruleset, problems = load_rules(tmp_path)
    assert ruleset is None
    assert [(p.line, p.message) for p in problems] == [(1, "is not UTF-8 text; save the file as UTF-8")]


def test_missing_folder_is_a_problem_and_an_empty_one_is_an_empty_ruleset(tmp_path: Path) -> None:
    ruleset, problems = load_rules(tmp_path / "nope")
    assert ruleset is None and problems[0].message == "the rules folder does not exist"
    ruleset, problems = load_rules(tmp_path)
    assert problems == [] and ruleset is not None and ruleset.rules == () and dict(ruleset.files) == {}


def test_multi_document_and_list_forms_and_order(tmp_path: Path) -> None:
    write(tmp_path, {
        "b-docs.yaml": "# leading comment\n---\nname: B1\nwhen: {}\n---\nname: B2\nwhen: {}\npriority: 5\n---\n",
        "a-list.yml": "rules:\n  - name: A1\n    when: {}\n  - name: A2\n    when: {}\n",
        "sub/c.yaml": "name: C\nwhen: {}\npriority: 100\n",
        "empty.yaml": "# nothing yet\n",
    })
    ruleset, problems = load_rules(tmp_path)
    assert problems == [] and ruleset is not None
    assert [r.name for r in ruleset.rules] == ["B2", "A1", "A2", "B1", "C"]
    assert dict(ruleset.files) == {"a-list.yml": ("A1", "A2"), "b-docs.yaml": ("B1", "B2"), "empty.yaml": (),
                                   "sub/c.yaml": ("C",)}
    b1 = ruleset.get("B1")
    assert b1 is not None and (b1.file, b1.line, b1.position, b1.priority) == ("b-docs.yaml", 3, 0, 100)
    a2 = ruleset.get("A2")
    assert a2 is not None and (a2.line, a2.position) == (4, 1)


def test_only_visible_yaml_files_are_rules(tmp_path: Path) -> None:
    bad = "this is: [not valid"
    write(tmp_path, {
        "ok.yaml": VALID,
        "README.md": bad, "notes.txt": bad, ".hidden.yaml": bad, ".git/config.yaml": bad,
        ".ok.yaml.swp": bad, "ok.yaml~": bad, ".#ok.yaml": bad, "4913": bad, "ok.yaml.tmp": bad,
        "schema.json": "{}",
    })
    ruleset, problems = load_rules(tmp_path)
    assert problems == [] and ruleset is not None
    assert list(ruleset.files) == ["ok.yaml"]


def test_digest_follows_content(tmp_path: Path) -> None:
    write(tmp_path, {"a.yaml": VALID})
    first = read_rule_files(tmp_path).digest
    assert read_rule_files(tmp_path).digest == first
    ruleset, _ = load_rules(tmp_path)
    assert ruleset is not None and ruleset.digest == first
    write(tmp_path, {"notes.txt": "not a rule"})
    assert read_rule_files(tmp_path).digest == first
    write(tmp_path, {"a.yaml": VALID + "# a comment\n"})
    assert read_rule_files(tmp_path).digest != first


def test_load_rules_or_raise(tmp_path: Path) -> None:
    write(tmp_path, {"bad.yaml": "name: X\nwhen: {form: x}\n"})
    with pytest.raises(RuleError, match=r"bad\.yaml:2: when\.form: unknown condition"):
        load_rules_or_raise(tmp_path)
    write(tmp_path, {"bad.yaml": VALID})
    assert isinstance(load_rules_or_raise(tmp_path), RuleSet)


def test_einvoice_fields_are_those_the_einvoice_reader_gives() -> None:
    from gateway.einvoice import FIELD_KEYS
    from gateway.rules.model import EINVOICE_FIELDS

    assert EINVOICE_FIELDS == FIELD_KEYS


def test_repository_examples_load() -> None:
    ruleset, problems = load_rules(REPO_RULES)
    assert problems == [], [str(p) for p in problems]
    assert ruleset is not None and len(ruleset.rules) >= 3
    assert not (REPO_RULES / "README.md").name in ruleset.files
    example_domains = re.compile(r"@\*?\.?([\w.-]+)")
    for rel in ruleset.files:
        for domain in example_domains.findall((REPO_RULES / rel).read_text(encoding="utf-8")):
            assert domain.endswith(".example"), (rel, domain)


# --- the JSON Schema ------------------------------------------------------------


def _documents() -> list[Any]:
    docs: list[Any] = []
    for path in sorted(REPO_RULES.glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None)
    return docs


_INVALID_DOCS: list[Any] = [
    {"name": "x", "when": {"form": "a"}},
    {"name": "x", "when": {}, "action": "nope"},
    {"name": "x"},
    {"when": {}},
    {"name": "x", "when": {"has_attachment": "yes"}},
    {"name": "x", "when": {"einvoice": {"sellr": "x"}}},
    {"name": "x", "when": {"from": []}},
    {"name": "x", "when": {}, "priority": "high"},
    {"rules": [{"name": "x", "when": {}, "extra": 1}]},
]


def _validate(schema: dict[str, Any], node: dict[str, Any], value: Any) -> list[str]:
    """The few JSON Schema keywords the rule schema uses, checked by hand (for want of jsonschema)."""
    if "$ref" in node:
        name = node["$ref"].removeprefix("#/$defs/")
        return _validate(schema, schema["$defs"][name], value)
    if "anyOf" in node:
        results = [_validate(schema, sub, value) for sub in node["anyOf"]]
        return [] if any(not r for r in results) else [f"no branch of anyOf fits {value!r}"]
    errors: list[str] = []
    types = node.get("type")
    if types is not None:
        kinds = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "array": list,
                 "object": dict}
        wanted = [types] if isinstance(types, str) else types
        ok = any(isinstance(value, kinds[t]) and not (t == "integer" and isinstance(value, bool)) for t in wanted)
        if not ok:
            return [f"{value!r} is not {types}"]
    if "enum" in node and value not in node["enum"]:
        errors.append(f"{value!r} not in {node['enum']}")
    if isinstance(value, str) and len(value) < node.get("minLength", 0):
        errors.append("too short")
    if isinstance(value, list):
        if len(value) < node.get("minItems", 0):
            errors.append("too few items")
        for item in value:
            errors += _validate(schema, node.get("items", {}), item)
    if isinstance(value, dict):
        if len(value) < node.get("minProperties", 0):
            errors.append("too few properties")
        errors += [f"missing {k}" for k in node.get("required", []) if k not in value]
        props = node.get("properties", {})
        extra = node.get("additionalProperties", True)
        for key, item in value.items():
            if key in props:
                errors += _validate(schema, props[key], item)
            elif extra is False:
                errors.append(f"unknown key {key}")
            elif isinstance(extra, dict):
                errors += _validate(schema, extra, item)
    return errors


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if "$ref" in node else []
        return own + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_schema_is_json_and_describes_rule_files() -> None:
    schema = rules_schema()
    assert json.loads(json.dumps(schema)) == schema
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    defs = schema["$defs"]
    assert all(ref.removeprefix("#/$defs/") in defs for ref in _refs(schema))
    rule = defs["RuleModel"]
    assert rule["additionalProperties"] is False and sorted(rule["required"]) == ["name", "when"]
    assert set(rule["properties"]) == {"name", "when", "action", "import", "attachments", "assign", "priority"}
    when = defs["WhenModel"]
    assert when["additionalProperties"] is False
    assert set(when["properties"]) == {"from", "to", "subject", "body", "contains", "attachment", "has_attachment",
                                       "header", "forwarded_from", "source", "einvoice", "authenticated", "all", "any",
                                       "not", "supplier", "company", "document_type", "currency", "invoice_number",
                                       "total", "amount_due"}
    assert all(p.get("description") for p in when["properties"].values())
    assert "null" not in json.dumps(schema)  # YAML null is never valid in a rule file
    docs = _documents()
    assert len(docs) >= 4
    if importlib.util.find_spec("jsonschema") is not None:
        import jsonschema

        jsonschema.Draft202012Validator.check_schema(schema)
        validator = jsonschema.Draft202012Validator(schema)
        for doc in docs:
            validator.validate(doc)
        for doc in _INVALID_DOCS:
            assert not validator.is_valid(doc), doc
    for doc in docs:
        assert _validate(schema, schema, doc) == [], doc
    for doc in _INVALID_DOCS:
        assert _validate(schema, schema, doc), doc
        assert problems_of(json.dumps(doc)), doc
