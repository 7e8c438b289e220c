"""Authentication-Results headers (RFC 8601): read a provider's, and write the gateway's own.

The reader is lenient where providers are not RFC-exact: Microsoft writes
no authserv-id (``spf=pass ...; dkim=pass ...``); comments in parentheses
are dropped; unknown methods and properties are kept as read.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

_COMMENT = re.compile(r"\([^()]*\)")
_RESINFO_START = re.compile(r"^\s*[A-Za-z0-9_-]+(?:/[0-9]+)?\s*=")


@dataclass(frozen=True)
class ResInfo:
    """One ``method=result prop=value ...`` of an Authentication-Results header.

    Attributes:
        method: spf, dkim, dmarc, arc, ... (lower case).
        result: pass, fail, none, ... (lower case).
        props: ``smtp.mailfrom``, ``header.d``, ``header.from``, ... -> value.
    """

    method: str
    result: str
    props: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AuthResults:
    """A parsed Authentication-Results header.

    Attributes:
        authserv_id: who wrote it ("" when the header names nobody).
        results: its results in order.
    """

    authserv_id: str
    results: tuple[ResInfo, ...]


def _strip_comments(text: str) -> str:
    previous = None
    while previous != text:  # nested comments: innermost first
        previous, text = text, _COMMENT.sub(" ", text)
    return text


def parse(value: str) -> AuthResults:
    """Parse a header value; never raises (what cannot be read is left out)."""
    text = _strip_comments(value.replace("\r", " ").replace("\n", " "))
    parts = [p.strip() for p in text.split(";")]
    authserv_id = ""
    if parts and not _RESINFO_START.match(parts[0]):
        authserv_id = parts[0].split()[0].lower() if parts[0].split() else ""
        parts = parts[1:]
    results = []
    for part in parts:
        tokens = part.split()
        if not tokens or "=" not in tokens[0]:
            continue
        method, _, result = tokens[0].partition("=")
        if not method or not result:
            continue
        props: dict[str, str] = {}
        for tok in tokens[1:]:
            key, eq, val = tok.partition("=")
            if eq and "." in key:
                props.setdefault(key.lower(), val.strip('"'))
        results.append(ResInfo(method.split("/")[0].lower(), result.lower(), props))
    return AuthResults(authserv_id, tuple(results))


def trusted(authserv_id: str, patterns: Iterable[str]) -> bool:
    """Whether ``authserv_id`` matches one of ``patterns`` (globs; "" matches a header without one)."""
    return any(authserv_id == p.lower() if not p or "*" not in p else fnmatch.fnmatchcase(authserv_id, p.lower())
               for p in patterns)


def topmost_trusted(values: Sequence[str], patterns: Sequence[str]) -> AuthResults | None:
    """The topmost header, if it comes from a trusted authserv-id; else None.

    Servers prepend: the provider's own header is the topmost, and every
    header below it may have been written by the sender, even one naming the
    provider's authserv-id. So only the topmost header counts, and its
    methods are never combined with those of any other header.
    """
    if not values:
        return None
    parsed = parse(values[0])
    return parsed if trusted(parsed.authserv_id, patterns) else None


def _quote(value: str) -> str:
    return value if value and re.fullmatch(r"[!#-'*+\-./0-9=?A-Z^-~@]+", value) else '"' + value.replace('"', "") + '"'


def format_header(authserv_id: str, results: Iterable[ResInfo]) -> str:
    """An Authentication-Results value: ``id; spf=pass smtp.mailfrom=...; dkim=...``."""
    items = [authserv_id]
    for r in results:
        props = " ".join(f"{k}={_quote(v)}" for k, v in r.props.items() if v)
        items.append(f"{r.method}={r.result}" + (f" {props}" if props else ""))
    return "; ".join(items) if len(items) > 1 else f"{authserv_id}; none"
