"""Safe file names, and naming patterns such as ``{date:%Y}/{company}_{invoice_number}``.

Only what is unsafe goes: path separators, control characters, Unicode
format characters (bidi controls such as U+202E, which make
``invoice\u202efdp.exe`` show as "invoiceexe.pdf", zero-width characters),
the characters SMB shares refuse (``<>:"/\\|?*``), leading dots, trailing
dots and spaces; Windows' reserved device names get a leading ``_``. Spaces
and non-ASCII letters stay: people read these names.
"""

from __future__ import annotations

import datetime as dt
import re
import string
import unicodedata
from collections.abc import Mapping
from typing import Any

_UNSAFE = re.compile(r'[\x00-\x1f\x7f<>:"/\\|?*]')
# Windows reserves these names with any extension; it reads the superscript digits ¹²³ as digits
_RESERVED = re.compile(r"^(con|prn|aux|nul|conin\$|conout\$|com[0-9\u00b9\u00b2\u00b3]|lpt[0-9\u00b9\u00b2\u00b3])"
                       r" *(\..*)?$", re.I)
MAX_NAME_BYTES = 200  # well below the 255 bytes of ext4/btrfs/SMB, leaving room for " (2)" and ".json"

DEFAULT_PATTERN = "{received:%Y/%m}/{stem}"
FIELDS = (
    "date", "received", "company", "document_type", "invoice_number", "sender", "sender_domain",
    "subject", "stem", "id", "seller", "total", "currency", "tag", "source",
    "issue_date", "due_date", "seller_vat_id", "buyer", "net_total", "tax_total", "amount_due",
)


def sanitize_part(name: str, fallback: str = "unknown", max_bytes: int = MAX_NAME_BYTES) -> str:
    """One safe path component: never empty, never ``.``/``..``, never a path."""
    name = unicodedata.normalize("NFC", name)
    # format characters (category Cf: bidi controls, zero-width characters) are invisible or
    # reorder what a person sees: a name must read as what it is
    name = "".join(c for c in name if unicodedata.category(c) != "Cf")
    name = _UNSAFE.sub("_", name.replace("\r", " ").replace("\n", " ").replace("\t", " "))
    name = re.sub(r"\s+", " ", name).strip()
    name = name.lstrip(".").rstrip(". ")
    if _RESERVED.match(name):
        name = "_" + name
    name = _truncate(name, max_bytes).rstrip(". ")
    return name or fallback


def sanitize_filename(name: str | None, fallback: str = "document", ext: str | None = None) -> str:
    """A safe file name that keeps (or gets) its extension and fits the byte limit."""
    raw = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    safe = sanitize_part(raw, fallback="")
    stem, dot, suffix = safe.rpartition(".")
    if not dot or not stem or len(suffix) > 10 or not suffix.isalnum():
        stem, suffix = safe, ""
    stem = stem or fallback
    if ext and suffix.lower() != ext.lower():
        # the bytes decide the type: "scan.bin" holding a PDF becomes "scan.bin.pdf"
        stem, suffix = (f"{stem}.{suffix}" if suffix else stem), ext
    suffix_part = f".{suffix}" if suffix else ""
    stem = _truncate(stem, MAX_NAME_BYTES - len(suffix_part.encode())).rstrip(". ") or fallback
    return sanitize_part(stem + suffix_part, fallback=fallback)


def split_ext(filename: str) -> tuple[str, str]:
    """``a.b.pdf`` -> (``a.b``, ``pdf``); no extension -> (name, "")."""
    stem, dot, suffix = filename.rpartition(".")
    if not dot or not stem:
        return filename, ""
    return stem, suffix


def _truncate(s: str, max_bytes: int) -> str:
    data = s.encode("utf-8")
    if len(data) <= max_bytes:
        return s
    return data[:max_bytes].decode("utf-8", errors="ignore")


def check_pattern(pattern: str) -> str | None:
    """An error message when ``pattern`` names an unknown field, else None."""
    try:
        names = [f for _, f, _, _ in string.Formatter().parse(pattern) if f is not None]
    except ValueError as exc:
        return f"not a valid pattern: {exc}"
    unknown = [n for n in names if n.split(".")[0] not in FIELDS]
    if unknown:
        return f"unknown field {{{unknown[0]}}}; allowed: {', '.join(FIELDS)}"
    return None


def _field_text(value: Any, spec: str) -> tuple[str, bool]:
    """A field's text, and whether its "/" are meant as folder levels (dates)."""
    if isinstance(value, (dt.date, dt.datetime)):
        return (value.strftime(spec) if spec else value.strftime("%Y-%m-%d")), True
    if value is None or value == "":
        return "unknown", False
    try:
        return format(value, spec), False
    except (ValueError, TypeError):
        return str(value), False


def render_pattern(pattern: str, values: Mapping[str, Any], ext: str) -> str:
    """A relative path from a pattern: each level sanitised, the extension added.

    A "/" in the pattern (or made by a date format such as ``%Y/%m``) starts a
    folder level; a "/" inside a value (a subject, a company) never does.
    """
    parts = [""]
    for literal, name, spec, _ in string.Formatter().parse(pattern):
        first, *rest = literal.split("/")
        parts[-1] += first
        parts.extend(rest)
        if name is None:
            continue
        text, levels = _field_text(values.get(name), spec or "")
        if levels:
            first, *rest = text.split("/")
            parts[-1] += first
            parts.extend(rest)
        else:
            parts[-1] += text.replace("/", "_").replace("\\", "_")
    safe = [sanitize_part(p) for p in parts if p.strip()] or ["unknown"]
    suffix = f".{ext}" if ext else ""
    safe[-1] = sanitize_part(_truncate(safe[-1], MAX_NAME_BYTES - len(suffix.encode())) + suffix)
    return "/".join(safe)


def with_counter(relpath: str, n: int) -> str:
    """``a/b.pdf`` -> ``a/b (2).pdf`` for n=2."""
    head, _, name = relpath.rpartition("/")
    stem, ext = split_ext(name)
    new = f"{stem} ({n}).{ext}" if ext else f"{name} ({n})"
    return f"{head}/{new}" if head else new
