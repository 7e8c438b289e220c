"""Read a rules folder into a RuleSet, all or nothing, naming every problem by file, line and key."""

from __future__ import annotations

import copy
import difflib
import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from gateway.errors import RuleError
from gateway.rules.matcher import CompileError, Rule, RuleSet, compile_rule
from gateway.rules.model import ASSIGN_KEYS, RULE_KEYS, RuleModel

KeyPath = tuple[str | int, ...]
RULE_SUFFIXES = (".yaml", ".yml")
# The order keys are listed in messages: as the docs introduce them.
_CONDITIONS_SHOWN = ("from", "to", "subject", "body", "contains", "attachment", "has_attachment", "header",
                     "forwarded_from", "source", "einvoice", "authenticated", "supplier", "company", "document_type",
                     "currency", "invoice_number", "total", "amount_due", "all", "any", "not")
_TYPE_MESSAGES = {
    "string_type": "must be text",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "bool_type": "must be true or false",
    "list_type": "must be a list",
    "model_type": "must be a mapping (key: value)",
    "model_attributes_type": "must be a mapping (key: value)",
    "dict_type": "must be a mapping (key: value)",
    "too_short": "must not be empty",
    "string_too_short": "must not be empty",
    "missing": "is required",
}


@dataclass(frozen=True)
class LoadProblem:
    """One thing wrong with the rules folder.

    Attributes:
        file: the file, as rules_dir joined with its relative path (``rules/acme.yaml``).
        line: the line (1-based), or None when the problem has no place in a file.
        key: the key path (``when.from``, ``rules[2].when.form``), or None.
        message: what is wrong and, where it helps, what is allowed.
    """

    file: str
    line: int | None
    key: str | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


@dataclass(frozen=True)
class RuleFiles:
    """The rule files of a folder as read at one moment.

    Attributes:
        root: the rules folder as given.
        files: (relative path with ``/``, content) for each rule file, sorted by path.
        problems: files that could not be read.
    """

    root: Path
    files: tuple[tuple[str, bytes], ...]
    problems: tuple[LoadProblem, ...] = ()

    @property
    def digest(self) -> str:
        """A hash of every rule file's path and content (and of unreadable files' problems)."""
        h = hashlib.sha256()
        for rel, data in self.files:
            h.update(f"{rel}\0{len(data)}\0".encode())
            h.update(data)
        for p in self.problems:
            h.update(f"!{p}\0".encode())
        return h.hexdigest()


def is_rule_file(rel: str) -> bool:
    """Whether a path relative to rules_dir names a rule file (not hidden, .yaml or .yml)."""
    parts = rel.replace(os.sep, "/").split("/")
    if any(p.startswith(".") for p in parts):
        return False
    return parts[-1].lower().endswith(RULE_SUFFIXES)


def read_rule_files(rules_dir: Path) -> RuleFiles:
    """Read every rule file under ``rules_dir`` (recursively, skipping hidden files and folders)."""
    files: list[tuple[str, bytes]] = []
    problems: list[LoadProblem] = []
    if not rules_dir.is_dir():
        what = "is not a folder" if rules_dir.exists() else "does not exist"
        return RuleFiles(rules_dir, (), (LoadProblem(str(rules_dir), None, None, f"the rules folder {what}"),))
    for dirpath, dirnames, filenames in os.walk(rules_dir, onerror=None):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(rules_dir).as_posix()
            if not is_rule_file(rel):
                continue
            try:
                files.append((rel, path.read_bytes()))
            except FileNotFoundError:
                continue  # removed while we looked; the next change event reloads
            except OSError as exc:
                problems.append(LoadProblem(str(path), None, None, f"cannot read: {exc.strerror or exc}"))
    files.sort()
    return RuleFiles(rules_dir, tuple(files), tuple(problems))


def load_rules(rules_dir: Path) -> tuple[RuleSet | None, list[LoadProblem]]:
    """Load every rule file under ``rules_dir``: a RuleSet and no problems, or None and every problem."""
    return load_rule_files(read_rule_files(rules_dir))


def load_rules_or_raise(rules_dir: Path) -> RuleSet:
    """Like load_rules, but raise RuleError listing every problem."""
    ruleset, problems = load_rules(rules_dir)
    if ruleset is None:
        raise RuleError("\n".join(str(p) for p in problems))
    return ruleset


def load_rules_text(text: str, file: str = "rules.yaml") -> tuple[RuleSet | None, list[LoadProblem]]:
    """Load rules from one file's text (for tests and for trying a draft rule)."""
    return load_rule_files(RuleFiles(Path("."), ((file, text.encode()),)))


def load_rule_files(rule_files: RuleFiles) -> tuple[RuleSet | None, list[LoadProblem]]:
    """Parse, validate and compile rule files that were already read."""
    problems = list(rule_files.problems)
    rules: list[Rule] = []
    names: list[tuple[str, str, int, str]] = []
    files: dict[str, tuple[str, ...]] = {}
    for rel, data in rule_files.files:
        shown = str(rule_files.root / rel)
        found, found_names, file_problems = _load_file(rel, shown, data)
        rules.extend(found)
        names.extend((shown, *n) for n in found_names)
        problems.extend(file_problems)
        files[rel] = tuple(r.name for r in found)
    problems.extend(_duplicate_names(names))
    if problems:
        problems.sort(key=lambda p: (p.file, p.line or 0))
        return None, problems
    return RuleSet(rules=tuple(rules), files=files, digest=rule_files.digest, sources=rule_files.files), []


def _duplicate_names(names: Sequence[tuple[str, str, int, str]]) -> list[LoadProblem]:
    """Names given twice (compared without case), reported where they appear again."""
    seen: dict[str, tuple[str, int]] = {}
    out = []
    for shown, name, line, key in names:
        first = seen.setdefault(name.casefold(), (shown, line))
        if first != (shown, line):
            out.append(LoadProblem(shown, line, key, f"{name!r} is already the name of the rule at "
                                                     f"{first[0]}:{first[1]}; names must be unique across all files"))
    return out


# --- one file ---------------------------------------------------------------


class _FileLoader:
    """Collects the rules and the problems of one file."""

    def __init__(self, rel: str, shown: str) -> None:
        self.rel = rel
        self.shown = shown
        self.rules: list[Rule] = []
        self.problems: list[LoadProblem] = []
        self.lines: dict[KeyPath, int] = {}
        self.count = 0
        self.names: list[tuple[str, int, str]] = []  # every rule's name, line and key path, valid or not

    def problem(self, path: KeyPath, message: str) -> None:
        line = next((self.lines[path[:n]] for n in range(len(path), -1, -1) if path[:n] in self.lines), None)
        self.problems.append(LoadProblem(self.shown, line, _format_path(path) or None, message))

    def document(self, node: yaml.Node, data: Any) -> None:
        if data is None:
            return  # an empty document: only comments, or a trailing ---
        self.lines = {}
        self._map_lines(node, ())
        _drop_nulls(data, (), self.problem)
        if not isinstance(data, dict):
            self.problem((), "a rule file holds a rule (a mapping with name: and when:), "
                             "several rules separated by ---, or a list of rules under rules:")
        elif "rules" in data:
            for key in data:
                if key != "rules":
                    self.problem((key,), "unknown key beside rules:; a document with rules: holds only that list")
            items = data["rules"]
            if not isinstance(items, list):
                self.problem(("rules",), "must be a list of rules")
                return
            for i, item in enumerate(items):
                self.rule(item, ("rules", i))
        else:
            self.rule(data, ())

    def rule(self, data: Any, base: KeyPath) -> None:
        position = self.count
        self.count += 1
        if isinstance(data, dict) and isinstance(data.get("name"), str):
            self.names.append((data["name"].strip(), self.lines.get((*base, "name"), 1), _format_path((*base, "name"))))
        try:
            spec = RuleModel.model_validate(data)
        except ValidationError as exc:
            for err in exc.errors():
                path = (*base, *err["loc"], *(err.get("ctx") or {}).get("path", ()))
                self.problem(path, _message(err, path[len(base):]))
            # Check what is left, so that one run names the other problems too.
            rest = _partial(data, exc)
            if rest is not None:
                _, errors = compile_rule(rest, file=self.rel, line=0, position=position)
                for e in errors:
                    self.problem((*base, *e.path), e.message)
            return
        line = self.lines.get(base, 1)
        rule, errors = compile_rule(spec, file=self.rel, line=line, position=position)
        for e in errors:
            self.problem((*base, *e.path), e.message)
        if rule is not None:
            self.rules.append(rule)

    def _map_lines(self, node: yaml.Node, path: KeyPath) -> None:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, value_node in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
                if key == "<<":
                    continue
                here = (*path, key)
                line = key_node.start_mark.line + 1
                if key in seen:
                    self.lines.setdefault(here, line)
                    self.problems.append(LoadProblem(
                        self.shown, line, _format_path(here),
                        f"given twice (also on line {seen[key]}); YAML would keep only the last"))
                    continue
                seen[key] = line
                self.lines[here] = line
                self._map_lines(value_node, here)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._map_lines(item, (*path, i))


def _load_file(rel: str, shown: str, data: bytes) -> tuple[list[Rule], list[tuple[str, int, str]], list[LoadProblem]]:
    fl = _FileLoader(rel, shown)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return [], [], [LoadProblem(shown, line, None, "is not UTF-8 text; save the file as UTF-8")]
    try:
        for node, value in _documents(text):
            fl.document(node, value)
    except yaml.MarkedYAMLError as exc:
        mark, context = exc.problem_mark or exc.context_mark, exc.context_mark
        detail = exc.problem or "invalid YAML"
        if mark is not None:
            detail += f" (column {mark.column + 1})"
        if exc.context:
            different = context is not None and mark is not None and context.line != mark.line
            started = f" on line {context.line + 1}" if different and context is not None else ""
            detail += f", {exc.context}{started}"
        fl.problems.append(LoadProblem(shown, mark.line + 1 if mark else None, None, f"YAML: {detail}"))
    except yaml.YAMLError as exc:
        fl.problems.append(LoadProblem(shown, None, None, f"YAML: {exc}"))
    return fl.rules, fl.names, fl.problems


# libyaml's loader is about ten times faster and marks lines just the same.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _documents(text: str) -> Iterator[tuple[yaml.Node, Any]]:
    """Each YAML document as (node tree with line marks, plain Python value)."""
    loader = _Loader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            yield node, loader.construct_document(node)
    finally:
        loader.dispose()


def _partial(data: Any, exc: ValidationError) -> RuleModel | None:
    """The rule with every failing part removed, or None when that is not valid either."""
    data = copy.deepcopy(data)
    if not isinstance(data, dict):
        return None
    for err in exc.errors():
        *parents, last = err["loc"]
        parent: Any = data
        for part in parents:
            try:
                parent = parent[part]
            except (KeyError, IndexError, TypeError):
                break
        else:
            if isinstance(parent, dict):
                parent.pop(last, None)
            elif isinstance(parent, list) and isinstance(last, int) and last < len(parent):
                parent[last] = {}
    if not isinstance(data.get("name"), str):
        data["name"] = "?"
    if not isinstance(data.get("when"), dict):
        data["when"] = {}
    try:
        return RuleModel.model_validate(data)
    except ValidationError:
        return None


def _drop_nulls(data: Any, path: KeyPath, report: Callable[[KeyPath, str], None]) -> None:
    """Report and remove empty values, so that validation talks about the rest."""
    if isinstance(data, dict):
        for key in list(data):
            if data[key] is None:
                report((*path, key), "has no value")
                del data[key]
            else:
                _drop_nulls(data[key], (*path, key), report)
    elif isinstance(data, list):
        for i in range(len(data) - 1, -1, -1):
            if data[i] is None:
                report((*path, i), "is an empty list item")
                del data[i]
        for i, item in enumerate(data):
            _drop_nulls(item, (*path, i), report)


def _format_path(path: KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _message(err: Any, rel_path: KeyPath) -> str:
    """A pydantic error in words; ``rel_path`` is relative to the rule."""
    kind = err["type"]
    if kind == "extra_forbidden":
        return _unknown_key(rel_path)
    if kind == "literal_error":
        return f"must be {err['ctx']['expected']}, not {err['input']!r}"
    if kind in _TYPE_MESSAGES:
        return _TYPE_MESSAGES[kind]
    msg: str = err["msg"]
    return msg.removeprefix("Value error, ")


def _unknown_key(path: KeyPath) -> str:
    key, parent = str(path[-1]), path[:-1]
    if not parent:
        what, allowed = "unknown key", RULE_KEYS
    elif parent[-1] in ("when", "not") or (isinstance(parent[-1], int) and parent[-2:-1] in (("all",), ("any",))):
        what, allowed = "unknown condition", _CONDITIONS_SHOWN
    elif parent[-1] == "assign":
        what, allowed = "unknown key", ASSIGN_KEYS
    else:
        what, allowed = "unknown key", ()
    msg = what + ("; allowed: " + ", ".join(allowed) if allowed else "")
    close = difflib.get_close_matches(key, allowed, n=1)
    return msg + (f"; did you mean {close[0]}?" if close else "")


__all__ = ["LoadProblem", "RuleFiles", "is_rule_file", "load_rule_files", "load_rules",
           "load_rules_or_raise", "load_rules_text", "read_rule_files"]
