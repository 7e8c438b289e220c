"""The rule files as people see them: paths relative to rules_dir, text read safely."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from werkzeug.exceptions import NotFound

MAX_SHOWN = 200_000


def relative_rule_file(svc: Any, file: str | None) -> str | None:
    """A problem's or rule's file relative to rules_dir, if it lies inside."""
    if not file:
        return None
    root = Path(svc.settings.rules_dir).resolve()
    path = Path(file)
    path = (path if path.is_absolute() else (root / path)).resolve()
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return None


def rules_file_text(svc: Any, file: str) -> tuple[str, str]:
    """(relative path, text) of a rule file inside rules_dir; 404 for anything else."""
    rel = relative_rule_file(svc, file)
    path = (Path(svc.settings.rules_dir) / rel).resolve() if rel else None
    if rel is None or path is None or not path.is_file() or path.suffix not in (".yaml", ".yml"):
        raise NotFound(f"there is no rule file {file!r} in the rules folder")
    return rel, path.read_bytes()[:MAX_SHOWN].decode("utf-8", "replace")
