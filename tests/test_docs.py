"""Documentation keeps up: every command, config key and rule key is documented."""

from __future__ import annotations

import re
from typing import Any

import click
from pydantic import BaseModel

from conftest import ROOT
from gateway.cli import main
from gateway.config import Settings


def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    out = []
    for name, cmd in group.commands.items():
        full = f"{prefix}{name}"
        if isinstance(cmd, click.Group):
            out += _commands(cmd, full + " ")
        else:
            out.append((full, cmd))
    return out


def _docs_text() -> str:
    parts = [(ROOT / "README.md").read_text(), (ROOT / "gateway.example.yaml").read_text()]
    parts += [p.read_text() for p in sorted((ROOT / "docs").glob("*.md"))]
    return "\n".join(parts)


def test_every_command_has_help_with_an_example_and_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    for name, cmd in _commands(main):
        assert cmd.help and "Example:" in cmd.help, f"`{name}` needs help text with an Example:"
        assert f"invoice-gateway {name}" in readme, f"README.md does not show `invoice-gateway {name}`"


def _keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        key = field.alias or name
        keys.append(prefix + key)
        for sub in _submodels(field.annotation):
            keys += _keys(sub, prefix + key + ".")
    return keys


def _submodels(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for a in getattr(annotation, "__args__", ()) for m in _submodels(a)]


def test_every_config_key_is_documented() -> None:
    text = _docs_text()
    missing = [k for k in _keys(Settings) if not re.search(rf"\b{re.escape(k.rsplit('.', 1)[-1])}\b", text)]
    assert not missing, f"config keys not documented in README.md, gateway.example.yaml or docs/: {missing}"


def test_every_rule_key_is_documented() -> None:
    from gateway.rules import rules_schema

    rules_readme = (ROOT / "rules" / "README.md").read_text()
    schema = rules_schema()
    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.get("properties", {}).items():
                names.add(k)
                walk(v)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(schema)
    missing = sorted(n for n in names if f"`{n}`" not in rules_readme and f"{n}:" not in rules_readme)
    assert not missing, f"rule keys not documented in rules/README.md: {missing}"
