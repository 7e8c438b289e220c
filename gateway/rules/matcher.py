"""Compiled rules and the rule set that decides what happens to a mail."""

from __future__ import annotations

import re
import string
from decimal import Decimal, InvalidOperation
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

import regex

from gateway.models import Decision, MailView, RuleTrace
from gateway.rules.model import CONDITION_KEYS, EINVOICE_FIELDS, PLACEHOLDERS, RuleModel, WhenModel

Path = tuple[str | int, ...]
SOURCE_KINDS = ("smtp", "import", "imap", "folder")
_HEADER_NAME = re.compile(r"[!-9;-~]+")
_SHOW = 80
_ESCAPE = re.compile(r'["\\\n\r\t]')
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
# A re: condition runs on text a stranger wrote: a pattern that backtracks
# catastrophically (re:^(a+)+$) stops after this long and counts as no match.
REGEX_TIMEOUT = 0.1


class CompileError(Exception):
    """A rule that passed the model but cannot be compiled; ``path`` is the key path."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


def _q(text: str) -> str:
    """Quote a value for an explanation, shortened, as JSON would."""
    if len(text) > _SHOW:
        text = text[: _SHOW - 1] + "…"
    if _ESCAPE.search(text):
        text = _ESCAPE.sub(lambda mo: _ESCAPES[mo.group()], text)
    return '"' + text + '"'


def _qs(values: Sequence[str]) -> str:
    return " or ".join(_q(v) for v in values)


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A glob where only * and ? are special, as a case-insensitive whole-value regex."""
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


def _is_glob(text: str) -> bool:
    return "*" in text or "?" in text


def _norm_addr(addr: str) -> str:
    return addr.strip().strip("<>").casefold()


class _Mail:
    """A MailView with the case-folded values that matching needs, computed once."""

    def __init__(self, mail: MailView, require_authenticated_sender: bool = False) -> None:
        self.mail = mail
        self.require = require_authenticated_sender
        # trust.require_authenticated_sender: a `from` holds only for an authenticated sender,
        # and only by a value that names the domain that authenticated
        self.sender_unproven = require_authenticated_sender and mail.authenticated is not True
        self.require_authenticated = require_authenticated_sender
        sender = mail.sender
        if sender is None:
            self.addr: str | None = None
            self.domain = ""
            self.name = ""
        else:
            self.addr = _norm_addr(sender.addr)
            self.domain = self.addr.rpartition("@")[2]
            self.name = sender.name.casefold()
        self.subject = mail.subject.casefold()
        self.source = mail.source.casefold()
        self._body: str | None = None
        self._to: list[tuple[str, str, str]] | None = None
        self._shown_sender: str | None = None
        self.doc_values: dict[str, list[tuple[str, str]]] = {}  # field conditions' values, by key (_doc_values)

    @property
    def body(self) -> str:
        """The body, case-folded."""
        if self._body is None:
            self._body = self.mail.body.casefold()
        return self._body

    @property
    def to(self) -> list[tuple[str, str, str]]:
        """(address, domain, display name), case-folded, for every recipient."""
        if self._to is None:
            self._to = []
            for a in self.mail.to:
                addr = _norm_addr(a.addr)
                self._to.append((addr, addr.rpartition("@")[2], a.name.casefold()))
        return self._to

    @property
    def forwarded(self) -> list[tuple[str, str, str]]:
        """(address, domain, display name) of a forwarded mail's original sender, case-folded."""
        fwd = self.mail.forwarded_from
        if fwd is None:
            return []
        addr = _norm_addr(fwd.addr)
        return [(addr, addr.rpartition("@")[2], fwd.name.casefold())]

    @property
    def shown_sender(self) -> str:
        """The sender as explanations show it."""
        if self._shown_sender is None:
            sender = self.mail.sender
            self._shown_sender = _q(str(sender)) if sender is not None else "(no sender)"
        return self._shown_sender


# --- values -----------------------------------------------------------------

# (original text, case-folded text) -> matched; None: a re: timed out (counts as no match)
TextTest = Callable[[str, str], bool | None]
AddrTest = Callable[[str, str, str], bool]  # (address, domain, display name), case-folded
SourceTest = Callable[[str, str | None], bool]  # (source, import address), case-folded


def text_pattern(raw: str, path: Path) -> TextTest:
    """Compile a text value: plain = substring, * or ? = whole-value glob, re: = regex search."""
    if not raw:
        raise CompileError(path, "must not be empty")
    if raw.startswith("re:"):
        return _timed(_regex(raw[3:], path))
    if _is_glob(raw):
        gx = glob_regex(raw.casefold())
        return lambda text, low: gx.fullmatch(low) is not None
    needle = raw.casefold()
    return lambda text, low: needle in low


def _regex(src: str, path: Path) -> regex.Pattern[str]:
    """Compile a re: value with the ``regex`` engine (Python re syntax: VERSION0), which can time out."""
    if not src:
        raise CompileError(path, "re: needs a regular expression after it")
    try:
        return regex.compile(src, regex.IGNORECASE | regex.VERSION0)
    except regex.error as exc:
        where = f" at position {exc.pos}" if exc.pos is not None else ""
        raise CompileError(path, f"invalid regular expression {_q(src)}: {exc.msg}{where}") from exc


def _search(rx: regex.Pattern[str], text: str) -> bool | None:
    """Whether ``rx`` is found in ``text``; None when it ran longer than REGEX_TIMEOUT."""
    try:
        return rx.search(text, timeout=REGEX_TIMEOUT) is not None
    except TimeoutError:
        return None


def _timed(rx: regex.Pattern[str]) -> TextTest:
    return lambda text, low: _search(rx, text)


def timed_out(where: list[str]) -> str:
    """The warning an explanation carries when a re: ran out of time on ``where`` ("" if it never did)."""
    if not where:
        return ""
    return f"; regex timed out after {REGEX_TIMEOUT:g} s on " + " and ".join(dict.fromkeys(where))


@dataclass(frozen=True)
class AddressPattern:
    """A compiled from/to value; ``key`` is its sender-index key when it limits the domain.

    ``names_domain``: the value names the address's domain (an address, ``@domain``,
    a domain glob), so it binds to the domain that authenticated; a display name does not.
    """

    raw: str
    test: AddrTest
    key: tuple[str, str] | None
    names_domain: bool = False


def address_pattern(raw: str, path: Path) -> AddressPattern:
    """Compile a from/to value: address, @domain, @*.domain, glob, part of name or address, or re:."""
    if not raw.strip():
        raise CompileError(path, "must not be empty")
    if raw.startswith("re:"):
        rx = _regex(raw[3:], path)
        return AddressPattern(raw, lambda a, d, n: bool(_search(rx, a) or _search(rx, n)), None)
    low = raw.strip().casefold()
    if "@" not in low:
        if _is_glob(low):
            gx = glob_regex(low)
            return AddressPattern(raw, lambda a, d, n: gx.fullmatch(a) is not None or gx.fullmatch(n) is not None, None)
        return AddressPattern(raw, lambda a, d, n: low in a or low in n, None)
    if any(c in low for c in " <>,;\"") or low.count("@") > 1:
        raise CompileError(path, f"{_q(raw)} is not an address; write only the address (billing@acme.example), "
                                 "@domain, or a part of the display name without @")
    local, _, domain = low.rpartition("@")
    if not domain:
        raise CompileError(path, f"{_q(raw)} has no domain after @")
    named = bool(domain.strip("*?."))  # "@*" names no domain
    if not local:
        if not _is_glob(domain):
            return AddressPattern(raw, lambda a, d, n: d == domain, ("domain", domain), named)
        parent = domain[2:]
        if domain.startswith("*.") and parent and not _is_glob(parent):
            suffix = "." + parent
            return AddressPattern(raw, lambda a, d, n: d.endswith(suffix), ("parent", parent), named)
        gx = glob_regex(domain)
        return AddressPattern(raw, lambda a, d, n: gx.fullmatch(d) is not None, None, named)
    # Addresses are indexed by their domain, so that rules for other
    # addresses of the sender's domain are tried and explain near misses.
    key = None if _is_glob(domain) else ("domain", domain)
    if not _is_glob(low):
        return AddressPattern(raw, lambda a, d, n: a == low, key, named)
    gx = glob_regex(low)
    return AddressPattern(raw, lambda a, d, n: gx.fullmatch(a) is not None, key, named)


def source_test(raw: str, path: Path) -> SourceTest:
    """Compile a source value: smtp, import, imap[:<mailbox>], folder[:<name>], an import address, glob or re:."""
    if raw.startswith("re:"):
        rx = _regex(raw[3:], path)
        return lambda src, addr: bool(_search(rx, src))
    if "@" in raw:
        pat = address_pattern(raw, path)
        return lambda src, addr: addr is not None and pat.test(addr, addr.rpartition("@")[2], "")
    low = raw.strip().casefold()
    if _is_glob(low):
        gx = glob_regex(low)
        return lambda src, addr: gx.fullmatch(src) is not None
    kind, colon, rest = low.partition(":")
    if kind not in SOURCE_KINDS or (colon and not rest) or (rest and kind in ("smtp", "import")):
        raise CompileError(path, f"{_q(raw)} is not a source; allowed: smtp, import, imap, imap:<mailbox>, "
                                 "folder, folder:<name>, or an import address (invoices@home.example)")
    if colon:
        return lambda src, addr: src == low
    prefix = low + ":"
    return lambda src, addr: src == low or src.startswith(prefix)


# --- conditions -------------------------------------------------------------


class Condition(Protocol):
    """A compiled condition: ``test`` says whether it holds, ``judge`` also says why, in words."""

    def test(self, m: _Mail) -> bool:
        """Whether the condition holds (fast: no words)."""
        ...

    def judge(self, m: _Mail) -> tuple[bool, str]:
        """(held, reason): the reason says what matched, or what did not."""
        ...


class _Address:
    """from (the sender) or to (any recipient).

    A ``from`` under ``authenticated: true`` (``bound``) or
    trust.require_authenticated_sender holds only by a value that names a
    domain: authentication proves the From domain, never a display name.
    """

    def __init__(self, key: str, pats: list[AddressPattern], bound: bool = False) -> None:
        self.key = key
        self.bound = bound and key == "from"
        self.tests = [p.test for p in pats]
        self.domain_tests = [p.test for p in pats if p.names_domain]
        self.pairs = [(p.raw, p.test) for p in pats]
        self.named = {p.raw for p in pats if p.names_domain}
        self.values = _qs([p.raw for p in pats])

    def miss(self, m: _Mail) -> str:
        """The reason when no value matched the sender (``from`` only)."""
        return f"from: {self.values} did not match {m.shown_sender}"

    def _people(self, m: _Mail) -> list[tuple[str, str, str]]:
        if self.key == "to":
            return m.to
        if self.key == "forwarded_from":
            return m.forwarded
        return [] if m.addr is None else [(m.addr, m.domain, m.name)]

    def test(self, m: _Mail) -> bool:
        tests = self.tests
        if self.key == "from":
            if m.sender_unproven:
                return False
            if self.bound or m.require_authenticated:
                tests = self.domain_tests
        for a, d, n in self._people(m):
            for t in tests:
                if t(a, d, n):
                    return True
        return False

    def judge(self, m: _Mail) -> tuple[bool, str]:
        bound = self.key == "from" and (self.bound or m.require_authenticated)
        by_name = ""
        for i, (a, d, n) in enumerate(self._people(m)):
            for raw, t in self.pairs:
                if t(a, d, n):
                    shown = (m.shown_sender if self.key == "from" else _q(str(m.mail.forwarded_from))
                             if self.key == "forwarded_from" else _q(str(m.mail.to[i])))
                    if bound and raw not in self.named:
                        by_name = by_name or raw
                        continue
                    if self.key == "from" and m.sender_unproven:
                        state = "is not known to be authenticated" if m.mail.authenticated is None else "failed authentication"
                        return False, (f"from: {_q(raw)} matched {shown}, but the sender {state} "
                                       "(trust.require_authenticated_sender)")
                    return True, f"{self.key}: {_q(raw)} matched {shown}"
        if by_name:
            demand = "authenticated: true" if self.bound else "trust.require_authenticated_sender"
            return False, (f"from: {_q(by_name)} matched {m.shown_sender}, but names no domain: with {demand} "
                           f"only an address or @domain binds to the domain that authenticated ({m.domain or '?'})")
        if self.key == "from":
            return False, self.miss(m)
        if self.key == "forwarded_from":
            fwd = m.mail.forwarded_from
            return False, (f"forwarded_from: {self.values} did not match {_q(str(fwd))}" if fwd is not None
                           else f"forwarded_from: {self.values}: the mail is not a forwarded one")
        shown = ", ".join(_q(str(a)) for a in m.mail.to[:5]) or "(no recipients)"
        return False, f"to: {self.values} did not match {shown}"


class _Text:
    """subject, body, or contains (subject or body)."""

    def __init__(self, key: str, raws: tuple[str, ...], tests: list[TextTest]) -> None:
        self.key = key
        self.tests = tests
        self.pairs = list(zip(raws, tests))
        self.values = _qs(raws)

    def test(self, m: _Mail) -> bool:
        if self.key != "body":
            text, low = m.mail.subject, m.subject
            for t in self.tests:
                if t(text, low):
                    return True
        if self.key != "subject":
            text, low = m.mail.body, m.body
            for t in self.tests:
                if t(text, low):
                    return True
        return False

    def judge(self, m: _Mail) -> tuple[bool, str]:
        mail = m.mail
        late: list[str] = []
        if self.key != "body":
            for raw, t in self.pairs:
                got = t(mail.subject, m.subject)
                if got:
                    return True, f"{self.key}: {_q(raw)} matched subject {_q(mail.subject)}"
                if got is None:
                    late.append("the subject")
        if self.key != "subject":
            for raw, t in self.pairs:
                got = t(mail.body, m.body)
                if got:
                    return True, f"{self.key}: {_q(raw)} found in the body"
                if got is None:
                    late.append("the body")
        if self.key == "subject":
            return False, f"subject: {self.values} did not match {_q(mail.subject)}{timed_out(late)}"
        if self.key == "body":
            return False, f"body: {self.values} not found in the body ({len(mail.body)} characters){timed_out(late)}"
        return False, f"contains: {self.values} found neither in subject {_q(mail.subject)} nor in the body{timed_out(late)}"


class _Attachment:
    def __init__(self, raws: tuple[str, ...], tests: list[TextTest]) -> None:
        self.tests = tests
        self.pairs = list(zip(raws, tests))
        self.values = _qs(raws)

    def test(self, m: _Mail) -> bool:
        for name in m.mail.attachments:
            low = name.casefold()
            for t in self.tests:
                if t(name, low):
                    return True
        return False

    def judge(self, m: _Mail) -> tuple[bool, str]:
        names = m.mail.attachments
        late: list[str] = []
        for name in names:
            low = name.casefold()
            for raw, t in self.pairs:
                got = t(name, low)
                if got:
                    return True, f"attachment: {_q(raw)} matched {_q(name)}"
                if got is None:
                    late.append(f"the file name {_q(name)}")
        shown = ", ".join(_q(n) for n in names[:5]) if names else "(no attachments)"
        return False, f"attachment: {self.values} did not match {shown}{timed_out(late)}"


class _HasAttachment:
    def __init__(self, want: bool) -> None:
        self.want = want

    def test(self, m: _Mail) -> bool:
        return bool(m.mail.attachments) is self.want

    def judge(self, m: _Mail) -> tuple[bool, str]:
        count = len(m.mail.attachments)
        got = f"the mail has {count} attachment{'' if count == 1 else 's'}"
        return self.test(m), f"has_attachment: {str(self.want).lower()}; {got}"


class _Header:
    def __init__(self, name: str, raws: tuple[str, ...], tests: list[TextTest]) -> None:
        self.name = name
        self.low = name.lower()  # MailView.headers is keyed by lower-case name
        self.tests = tests
        self.pairs = list(zip(raws, tests))
        self.values = _qs(raws)

    def test(self, m: _Mail) -> bool:
        for value in m.mail.headers.get(self.low, ()):
            low = value.casefold()
            for t in self.tests:
                if t(value, low):
                    return True
        return False

    def judge(self, m: _Mail) -> tuple[bool, str]:
        found = m.mail.headers.get(self.low, ())
        late: list[str] = []
        for value in found:
            low = value.casefold()
            for raw, t in self.pairs:
                got = t(value, low)
                if got:
                    return True, f"header {self.name}: {_q(raw)} matched {_q(value)}"
                if got is None:
                    late.append(f"the {self.name} header")
        if not found:
            return False, f"header {self.name}: the mail has no such header"
        return False, f"header {self.name}: {self.values} did not match {_q(found[0])}{timed_out(late)}"


class _Source:
    def __init__(self, raws: tuple[str, ...], tests: list[SourceTest]) -> None:
        self.tests = tests
        self.pairs = list(zip(raws, tests))
        self.values = _qs(raws)

    def test(self, m: _Mail) -> bool:
        addr = _norm_addr(m.mail.import_address) if m.mail.import_address else None
        for t in self.tests:
            if t(m.source, addr):
                return True
        return False

    def judge(self, m: _Mail) -> tuple[bool, str]:
        mail = m.mail
        addr = _norm_addr(mail.import_address) if mail.import_address else None
        shown = _q(mail.source + (f" via {mail.import_address}" if mail.import_address else ""))
        for raw, t in self.pairs:
            if t(m.source, addr):
                return True, f"source: {_q(raw)} matched {shown}"
        return False, f"source: {self.values} did not match {shown}"


class _EInvoicePresent:
    def __init__(self, want: bool) -> None:
        self.want = want

    def test(self, m: _Mail) -> bool:
        return (m.mail.einvoice is not None) is self.want

    def judge(self, m: _Mail) -> tuple[bool, str]:
        got = "carries an e-invoice" if m.mail.einvoice is not None else "carries no e-invoice"
        return self.test(m), f"einvoice: {str(self.want).lower()}; the mail {got}"


class _EInvoiceField:
    def __init__(self, name: str, raws: tuple[str, ...], tests: list[TextTest]) -> None:
        self.name = name
        self.tests = tests
        self.pairs = list(zip(raws, tests))
        self.values = _qs(raws)

    def test(self, m: _Mail) -> bool:
        inv = m.mail.einvoice
        value = inv.get(self.name) if inv is not None else None
        if not value:
            return False
        low = value.casefold()
        for t in self.tests:
            if t(value, low):
                return True
        return False

    def judge(self, m: _Mail) -> tuple[bool, str]:
        inv = m.mail.einvoice
        if inv is None:
            return False, f"einvoice.{self.name}: the mail carries no e-invoice"
        value = inv.get(self.name)
        if not value:  # the e-invoice reader gives "" for a field it did not find
            return False, f"einvoice.{self.name}: the e-invoice has no {self.name}"
        low = value.casefold()
        late: list[str] = []
        for raw, t in self.pairs:
            got = t(value, low)
            if got:
                return True, f"einvoice.{self.name}: {_q(raw)} matched {_q(value)}"
            if got is None:
                late.append(f"the e-invoice's {self.name}")
        return False, f"einvoice.{self.name}: {self.values} did not match {_q(value)}{timed_out(late)}"


class _Authenticated:
    def __init__(self, want: bool) -> None:
        self.want = want

    def test(self, m: _Mail) -> bool:
        return m.mail.authenticated is self.want

    def judge(self, m: _Mail) -> tuple[bool, str]:
        got = m.mail.authenticated
        state = "authenticated" if got else "not known to be authenticated" if got is None else "failed authentication"
        return self.test(m), f"authenticated: {str(self.want).lower()}; the sender {state}"


# --- conditions on the documents' fields --------------------------------------

_FIELD_OF = {"supplier": "seller", "company": "seller", "invoice_number": "invoice_number",
             "document_type": "document_type", "currency": "currency", "amount_due": "amount_due"}


_ASSIGNED = "assigned by the import address or mailbox"


def _in(filename: str) -> str:
    return f" ({filename})" if filename else ""


def _no_value(key: str, field: str, m: _Mail) -> str:
    """The reason when no document of the mail has ``field``."""
    if not m.mail.documents:
        return f"{key}: the mail has no PDF or XML document to read a {field.replace('_', ' ')} from"
    return f"{key}: no {field.replace('_', ' ')} was read from the mail's documents"


def _doc_values(m: _Mail, key: str) -> list[tuple[str, str]]:
    """(value, file name) of a field condition's field in every document of the mail (computed once per mail)."""
    cached = m.doc_values.get(key)
    if cached is not None:
        return cached
    out = []
    for doc in m.mail.documents:
        value = doc.get("grand_total") or doc.get("amount_due") if key == "total" else doc.get(_FIELD_OF[key])
        if value:
            out.append((str(value), str(doc.get("filename") or "")))
    if key in ("supplier", "company") and m.mail.company:
        out.append((m.mail.company, _ASSIGNED))
    m.doc_values[key] = out
    return out


class _FieldText:
    """supplier or company (the seller), invoice_number: text, glob or re: against any document's field."""

    def __init__(self, key: str, raws: tuple[str, ...], tests: list[TextTest]) -> None:
        self.key = key
        self.field = _FIELD_OF[key]
        self.tests = tests
        self.pairs = list(zip(raws, tests))
        self.values = _qs(raws)

    def test(self, m: _Mail) -> bool:
        for value, _ in _doc_values(m, self.key):
            low = value.casefold()
            for t in self.tests:
                if t(value, low):
                    return True
        return False

    def judge(self, m: _Mail) -> tuple[bool, str]:
        found = _doc_values(m, self.key)
        if not found:
            return False, _no_value(self.key, self.field, m)
        late: list[str] = []
        for value, where in found:
            low = value.casefold()
            for raw, t in self.pairs:
                got = t(value, low)
                if got:
                    what = "company" if where == _ASSIGNED else self.field
                    return True, f"{self.key}: {_q(raw)} matched {what} {_q(value)}{_in(where)}"
                if got is None:
                    late.append(f"the {self.field} {_q(value)}")
        shown = ", ".join(f"{_q(v)}{_in(w)}" for v, w in found[:5])
        return False, f"{self.key}: {self.values} did not match {self.field} {shown}{timed_out(late)}"


class _FieldChoice:
    """document_type or currency: one of the values given (compared case-insensitively)."""

    def __init__(self, key: str, choices: tuple[str, ...]) -> None:
        self.key = key
        self.choices = frozenset(c.casefold() for c in choices)
        self.values = " or ".join(choices)

    def test(self, m: _Mail) -> bool:
        return any(value.casefold() in self.choices for value, _ in _doc_values(m, self.key))

    def judge(self, m: _Mail) -> tuple[bool, str]:
        found = _doc_values(m, self.key)
        if not found:
            return False, _no_value(self.key, self.key, m)
        for value, where in found:
            if value.casefold() in self.choices:
                return True, f"{self.key}: {self.values} matched {value}{_in(where)}"
        shown = ", ".join(f"{v}{_in(w)}" for v, w in found[:5])
        return False, f"{self.key}: {self.values} did not match {shown}"


def _decimal(text: str) -> Decimal | None:
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


class _FieldRange:
    """total (grand total, else amount due) or amount_due within {min, max}, both included."""

    def __init__(self, key: str, low: Decimal | None, high: Decimal | None) -> None:
        self.key = key
        self.low = low
        self.high = high

    def _holds(self, value: Decimal) -> bool:
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)

    def test(self, m: _Mail) -> bool:
        for text, _ in _doc_values(m, self.key):
            value = _decimal(text)
            if value is not None and self._holds(value):
                return True
        return False

    def judge(self, m: _Mail) -> tuple[bool, str]:
        name = self.key.replace("_", " ")
        found = [(text, where, value) for text, where in _doc_values(m, self.key)
                 if (value := _decimal(text)) is not None]
        if not found:
            return False, _no_value(self.key, "total" if self.key == "total" else self.key, m)
        misses = []
        for text, where, value in found:
            if self._holds(value):
                if self.low is not None and self.high is not None:
                    within = f"is within {self.low}..{self.high}"
                else:
                    within = f"is at least {self.low}" if self.low is not None else f"is at most {self.high}"
                return True, f"{name} {text} {within}{_in(where)}"
            side = f"below min {self.low}" if self.low is not None and value < self.low else f"above max {self.high}"
            misses.append(f"{name} {text} is {side}{_in(where)}")
        return False, "; ".join(misses[:5])


class AllOf:
    """Conditions that must all hold, checked in order; the top level of every rule."""

    def __init__(self, parts: list[Condition], label: str | None) -> None:
        self.parts = parts
        self.label = label

    def test(self, m: _Mail) -> bool:
        """Whether every part holds."""
        for part in self.parts:
            if not part.test(m):
                return False
        return True

    def first_failed(self, m: _Mail) -> int:
        """The index of the first part that does not hold, -1 when every part holds (as fast as ``test``)."""
        for k, part in enumerate(self.parts):
            if not part.test(m):
                return k
        return -1

    def judge(self, m: _Mail) -> tuple[bool, str]:
        """(held, reason): the first failed part's reason, or what every part matched."""
        reasons = []
        for part in self.parts:
            ok, why = part.judge(m)
            if not ok:
                return False, f"{self.label}: {why}" if self.label else why
            reasons.append(why)
        joined = "; ".join(reasons) if reasons else "no conditions (matches every mail)"
        return True, f"{self.label}: ({joined})" if self.label else joined


class _Any:
    def __init__(self, parts: list[Condition]) -> None:
        self.parts = parts

    def test(self, m: _Mail) -> bool:
        for part in self.parts:
            if part.test(m):
                return True
        return False

    def judge(self, m: _Mail) -> tuple[bool, str]:
        misses = []
        for part in self.parts:
            ok, why = part.judge(m)
            if ok:
                return True, f"any: {why}"
            misses.append(f"({why})")
        return False, "any: none held: " + " ".join(misses)


class _Not:
    def __init__(self, part: Condition) -> None:
        self.part = part

    def test(self, m: _Mail) -> bool:
        return not self.part.test(m)

    def judge(self, m: _Mail) -> tuple[bool, str]:
        ok, why = self.part.judge(m)
        return not ok, f"not: ({why})"


def compile_when(spec: WhenModel, path: Path, errors: list[CompileError], label: str | None = None,
                 bound: bool = False) -> AllOf:
    """Compile a `when` mapping, its keys in CONDITION_KEYS order; problems go to ``errors``.

    ``bound``: an enclosing mapping says ``authenticated: true``, so its `from`
    conditions bind to the authenticated domain (not through ``not:``).
    """
    fields = WhenModel.model_fields
    given = {fields[f].alias or f for f in spec.model_fields_set if getattr(spec, f) is not None}
    bound = bound or spec.authenticated is True
    parts: list[Condition] = []
    for key in CONDITION_KEYS:
        if key in given:
            try:
                parts.extend(_compile_key(spec, key, (*path, key), errors, bound))
            except CompileError as exc:
                errors.append(exc)
    return AllOf(parts, label)


def _values(raws: tuple[str, ...], here: Path, make: Callable[[str, Path], Any]) -> list[Any]:
    return [make(raw, (*here, i) if len(raws) > 1 else here) for i, raw in enumerate(raws)]


def _compile_key(spec: WhenModel, key: str, here: Path, errors: list[CompileError],
                 bound: bool = False) -> list[Condition]:
    if key in ("from", "to", "forwarded_from"):
        raws = {"from": spec.from_, "to": spec.to, "forwarded_from": spec.forwarded_from}[key]
        assert raws is not None
        return [_Address(key, _values(raws, here, address_pattern), bound)]
    if key in ("subject", "body", "contains", "attachment"):
        raws = getattr(spec, key)
        tests = _values(raws, here, text_pattern)
        return [_Attachment(raws, tests) if key == "attachment" else _Text(key, raws, tests)]
    if key == "source":
        assert spec.source is not None
        return [_Source(spec.source, _values(spec.source, here, source_test))]
    if key == "has_attachment":
        return [_HasAttachment(bool(spec.has_attachment))]
    if key == "authenticated":
        return [_Authenticated(bool(spec.authenticated))]
    if key == "header":
        assert spec.header is not None
        out: list[Condition] = []
        for name, raws in spec.header.items():
            if not _HEADER_NAME.fullmatch(name):
                raise CompileError((*here, name), f"{_q(name)} is not a header name")
            out.append(_Header(name, raws, _values(raws, (*here, name), text_pattern)))
        return out
    if key == "einvoice":
        if isinstance(spec.einvoice, bool):
            return [_EInvoicePresent(spec.einvoice)]
        assert spec.einvoice is not None
        return [_EInvoiceField(name, raws, _values(raws, (*here, name), text_pattern))
                for name, raws in spec.einvoice.items()]
    if key in ("supplier", "company", "invoice_number"):
        raws = getattr(spec, key)
        return [_FieldText(key, raws, _values(raws, here, text_pattern))]
    if key in ("document_type", "currency"):
        return [_FieldChoice(key, getattr(spec, key))]
    if key in ("total", "amount_due"):
        low, high = getattr(spec, key)
        return [_FieldRange(key, low, high)]
    if key in ("all", "any"):
        subs = spec.all_ if key == "all" else spec.any_
        assert subs is not None
        compiled = [_bare(compile_when(s, (*here, i), errors, bound=bound)) for i, s in enumerate(subs)]
        return [AllOf(compiled, "all") if key == "all" else _Any(compiled)]
    assert key == "not" and spec.not_ is not None
    return [_Not(_bare(compile_when(spec.not_, here, errors)))]


def _bare(cond: AllOf) -> Condition:
    """A one-part condition without its AllOf wrapper (same words, one call less)."""
    return cond.parts[0] if len(cond.parts) == 1 else cond


# --- placeholders -----------------------------------------------------------


Template = tuple[tuple[str, str | None], ...]  # (literal, placeholder or None)


def compile_template(text: str, path: Path) -> Template:
    """Split ``text`` into literals and known {placeholders}; {{ and }} are literal braces."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise CompileError(path, f"{exc}; write {{{{ and }}}} for literal braces") from exc
    out: list[tuple[str, str | None]] = []
    for literal, name, spec, conv in parsed:
        if name is not None and (spec or conv):
            raise CompileError(path, f"{{{name}}}: placeholders take no format (: or !)")
        if name is not None and name not in PLACEHOLDERS:
            plain = ", ".join(p for p in PLACEHOLDERS if not p.startswith("einvoice."))
            raise CompileError(path, f"unknown placeholder {{{name}}}; allowed: {plain}, "
                                     f"einvoice.<field> with <field> one of: {', '.join(EINVOICE_FIELDS)}")
        out.append((literal, name))
    return tuple(out)


def placeholder_value(mail: MailView, name: str) -> str:
    """The value of a {placeholder} for ``mail``: MailView.fields first, else derived; "" when missing."""
    value = mail.fields.get(name)
    if value is not None:
        return str(value)
    sender = mail.sender
    if name == "subject":
        return mail.subject
    if name == "sender":
        return sender.addr if sender else ""
    if name == "sender_name":
        return sender.name if sender else ""
    if name == "sender_domain":
        return sender.addr.rpartition("@")[2].lower() if sender else ""
    if name == "tag":
        return mail.tag or ""
    if name == "import_address":
        return mail.import_address or ""
    if name == "source":
        return mail.source
    if name.startswith("einvoice.") and mail.einvoice is not None:
        return mail.einvoice.get(name[9:], "")
    return ""


def fill(template: Template, mail: MailView) -> str:
    """``template`` with its placeholders filled from ``mail``."""
    return "".join(lit + (placeholder_value(mail, name) if name else "") for lit, name in template)


# --- rules ------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One compiled import rule.

    Attributes:
        name: unique across the rule set.
        file: the rule file, relative to rules_dir (``/`` separated).
        line: the line of the rule in its file (1-based).
        position: the rule's place in its file (0-based, across documents).
        priority: lower is tried first (default 100).
        action: ``import`` or ``ignore``.
        import_mode: ``attachments``, ``body``, ``both`` or ``images`` (attachments, photos and scans too).
        attachment_globs: globs narrowing which attachments are imported.
        when: the compiled conditions.
        assign: company, document_type and note as templates with {placeholders}.
        tags: the tags to assign, as templates.
        senders: the sender domains that the rule's ``from`` limits it to:
            ``("domain", d)`` for d itself, ``("parent", d)`` for its
            subdomains; () when there is no ``from`` or it allows any domain.
        name_only_froms: the key paths of ``from`` conditions that name no
            domain (only display names), each with whether the rule's
            ``authenticated: true`` applies to it (see ``sender_warnings``).
    """

    name: str
    file: str
    line: int
    position: int
    priority: int
    action: str
    import_mode: str
    attachment_globs: tuple[str, ...]
    when: AllOf
    assign: Mapping[str, Template] = field(default_factory=dict)
    tags: tuple[Template, ...] = ()
    senders: tuple[tuple[str, str], ...] = ()
    name_only_froms: tuple[tuple[str, bool], ...] = ()

    def sender_warnings(self, require_authenticated_sender: bool = False) -> list[str]:
        """Why a `from` of this rule can never hold for an authenticated sender, in words ([] when none)."""
        demand = "trust.require_authenticated_sender"
        return [f"{path}: names no domain, so with {'authenticated: true' if bound else demand} it never holds: "
                "authentication proves the sender's domain, not a display name; name the address or "
                "@domain (from: billing@supplier.example)"
                for path, bound in self.name_only_froms if bound or require_authenticated_sender]

    def matches(self, mail: MailView) -> bool:
        """Whether every condition holds for ``mail``."""
        return self.when.test(_Mail(mail))

    def claims_sender(self) -> bool:
        """Whether the rule names a sender: a `from` condition at its top level."""
        return any(isinstance(part, _Address) and part.key == "from" for part in self.when.parts)

    def judge(self, mail: MailView) -> RuleTrace:
        """How this rule judges ``mail``, in words."""
        ok, why = self.when.judge(_Mail(mail))
        return RuleTrace(self.name, self.file, ok, why)

    def decision(self, mail: MailView, explain: Sequence[RuleTrace]) -> Decision:
        """The decision this rule makes for a mail it matched."""
        if self.action == "ignore":
            return Decision(rule=self.name, action="ignore", explain=explain)
        assign: dict[str, Any] = {key: fill(tpl, mail) for key, tpl in self.assign.items()}
        if self.tags:
            # a tag whose placeholder is empty is dropped rather than stored as ""
            tags = (fill(t, mail).strip() for t in self.tags)
            assign["tags"] = tuple(dict.fromkeys(t for t in tags if t))
        return Decision(rule=self.name, action="import", import_mode=self.import_mode,
                        attachment_globs=self.attachment_globs, assign=assign, explain=explain)


def compile_rule(spec: RuleModel, *, file: str, line: int, position: int) -> tuple[Rule | None, list[CompileError]]:
    """Compile a validated rule; the errors carry key paths relative to the rule."""
    errors: list[CompileError] = []
    when = compile_when(spec.when, ("when",), errors)
    assign: dict[str, Template] = {}
    tags: tuple[Template, ...] = ()
    if spec.assign is not None:
        for key, value in spec.assign.model_dump(exclude_none=True).items():
            try:
                if key == "tags":
                    tags = tuple(_values(value, ("assign", "tags"), compile_template))
                else:
                    assign[key] = compile_template(value, ("assign", key))
            except CompileError as exc:
                errors.append(exc)
    if spec.action == "ignore":
        for attr, key in (("import_", "import"), ("attachments", "attachments"), ("assign", "assign")):
            if attr in spec.model_fields_set:
                errors.append(CompileError((key,), "has no effect with action: ignore; remove it"))
    globs = spec.attachments or ()
    if globs and spec.import_ == "body":
        errors.append(CompileError(("attachments",), "has no effect with import: body; use import: both"))
    for i, g in enumerate(globs):
        if not g.strip():
            errors.append(CompileError(("attachments", i) if len(globs) > 1 else ("attachments",), "must not be empty"))
    if errors:
        return None, errors
    rule = Rule(name=spec.name, file=file, line=line, position=position, priority=spec.priority,
                action=spec.action, import_mode=spec.import_, attachment_globs=tuple(globs), when=when,
                assign=MappingProxyType(assign), tags=tags, senders=_senders(spec.when),
                name_only_froms=tuple(_name_only_froms(spec.when, "when", False)))
    return rule, []


def _name_only_froms(when: WhenModel, path: str, bound: bool) -> list[tuple[str, bool]]:
    """The `from` conditions (outside ``not:``) without a value that names a domain: (key path, bound)."""
    bound = bound or when.authenticated is True
    out = []
    if when.from_ and not any(address_pattern(raw, ()).names_domain for raw in when.from_):
        out.append((f"{path}.from", bound))
    for key, subs in (("all", when.all_), ("any", when.any_)):
        for i, sub in enumerate(subs or ()):
            out += _name_only_froms(sub, f"{path}.{key}[{i}]", bound)
    return out


def _senders(when: WhenModel) -> tuple[tuple[str, str], ...]:
    if not when.from_:
        return ()
    keys = [address_pattern(raw, ()).key for raw in when.from_]
    if not all(keys):
        return ()
    return tuple(dict.fromkeys(k for k in keys if k is not None))


def select_attachments(names: Iterable[str], globs: Sequence[str]) -> list[str]:
    """The names that a rule's ``attachments`` globs allow (all when there are none)."""
    if not globs:
        return list(names)
    rxs = [glob_regex(g) for g in globs]
    return [n for n in names if any(rx.fullmatch(n) for rx in rxs)]


# --- the rule set -----------------------------------------------------------


def _sort_key(rule: Rule) -> tuple[int, str, int]:
    return rule.priority, rule.file, rule.position


@dataclass(frozen=True)
class RuleSet:
    """An immutable, loaded set of rules; ``decide`` applies them to a mail.

    Attributes:
        rules: in the order they are tried (priority, then file path, then position).
        files: each rule file (relative to rules_dir) with the names of its rules.
        digest: a hash of the rule files' contents, to tell whether anything changed.
        sources: (relative path, content) of each rule file it was loaded from,
            so that an explanation stored with ``digest`` can be read after the rules change.
    """

    rules: tuple[Rule, ...]
    files: Mapping[str, tuple[str, ...]]
    digest: str
    sources: tuple[tuple[str, bytes], ...] = field(default=(), repr=False, compare=False)
    _open: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _index: Mapping[tuple[str, str], tuple[int, ...]] = field(init=False, repr=False, compare=False)
    _from: tuple[_Address | None, ...] = field(init=False, repr=False, compare=False)
    _skip: Mapping[int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        rules = tuple(sorted(self.rules, key=_sort_key))
        index: dict[tuple[str, str], list[int]] = {}
        open_ = []
        for i, rule in enumerate(rules):
            if not rule.senders:
                open_.append(i)
            for key in rule.senders:
                index.setdefault(key, []).append(i)
        object.__setattr__(self, "rules", rules)
        object.__setattr__(self, "files", MappingProxyType(dict(self.files)))
        object.__setattr__(self, "_open", tuple(open_))
        # the top-level `from` of each indexed rule: its reason when the index skips it
        object.__setattr__(self, "_from", tuple(
            next((p for p in r.when.parts if isinstance(p, _Address) and p.key == "from"), None) if r.senders else None
            for r in rules))
        object.__setattr__(self, "_index", MappingProxyType({k: tuple(v) for k, v in index.items()}))
        # the part an indexed rule fails at when the index skips it (its `from`), where that is not part 0
        object.__setattr__(self, "_skip", MappingProxyType({
            i: k for i, (r, part) in enumerate(zip(rules, self._from))
            if part is not None and (k := r.when.parts.index(part)) != 0}))

    def __len__(self) -> int:
        return len(self.rules)

    def get(self, name: str) -> Rule | None:
        """The rule called ``name``, or None."""
        return next((r for r in self.rules if r.name == name), None)

    def _for_sender(self, m: _Mail) -> set[int]:
        """The rules whose ``from`` names the sender's domain or one of its parents."""
        if m.addr is None:
            return set()
        index = self._index
        found = set(index.get(("domain", m.domain), ()))
        rest = m.domain
        while "." in rest:
            rest = rest.partition(".")[2]
            found.update(index.get(("parent", rest), ()))
        return found

    def decide(self, mail: MailView, *, trace_all: bool = False, require_authenticated_sender: bool = False) -> Decision:
        """Apply the rules in order; the first that matches decides.

        The explanation lists every rule tried, in order up to the deciding
        one, each with the first condition that failed (or, for the deciding
        rule, what matched). To keep deciding fast, a rule whose ``from``
        names only other domains than the sender's is skipped by the sender
        index, and the other rules are tested without words; the words of
        those misses are filled in when the explanation is first read (the
        skipped rules' first failed condition is their ``from``). So the
        explanation is the same as with ``trace_all``, which judges every rule
        in words at once. ``require_authenticated_sender`` makes every `from`
        condition hold only for an authenticated sender
        (trust.require_authenticated_sender).
        """
        m = _Mail(mail, require_authenticated_sender)
        rules = self.rules
        if trace_all:
            traces = []
            for rule in rules:
                ok, why = rule.when.judge(m)
                traces.append(RuleTrace(rule.name, rule.file, ok, why))
                if ok:
                    return rule.decision(mail, tuple(traces))
            return Decision(rule=None, action="unmatched", explain=tuple(traces))
        near = self._for_sender(m)
        order = sorted(near.union(self._open)) if near else self._open
        failed: dict[int, int] = {}  # rule -> the part it failed at, where that is not part 0
        for i in order:
            k = rules[i].when.first_failed(m)
            if k < 0:
                failed[i] = MATCHED
                return rules[i].decision(mail, Explanation(self, m, i + 1, failed, near))
            if k:
                failed[i] = k
        return Decision(rule=None, action="unmatched", explain=Explanation(self, m, len(rules), failed, near))

    def failed_part(self, i: int) -> int:
        """The part rule ``i`` fails at when the sender index skips it (its `from`)."""
        return self._skip.get(i, 0)


# the code of the deciding rule in Explanation.failed (a part index otherwise)
MATCHED = -1


class Explanation(Sequence[RuleTrace]):
    """The traces of the first ``tried`` rules of a set for one mail, put into words on first read.

    ``RuleSet.decide`` only tests; this holds what the words need: every rule
    tried failed at part 0 of its conditions unless ``failed`` says another
    part (or MATCHED, for the deciding rule). A rule the sender index skipped
    failed by its ``from``; the rules for the sender's domain (``near``) and
    the rules the index does not cover are judged in words here. ``digest``,
    ``tried`` and ``failed`` are what the gateway stores (gateway.rules.trace).
    """

    def __init__(self, ruleset: RuleSet, m: _Mail, tried: int, failed: Mapping[int, int],
                 near: set[int] | frozenset[int] = frozenset()) -> None:
        self.ruleset = ruleset
        self.digest = ruleset.digest
        self.tried = tried
        self.failed = failed
        self.authenticated = m.mail.authenticated
        self.require_authenticated_sender = m.require
        self._mail: _Mail | None = m
        self._near = near
        self._traces: tuple[RuleTrace, ...] | None = None

    def _all(self) -> tuple[RuleTrace, ...]:
        if self._traces is None:
            m, near = self._mail, self._near
            assert m is not None
            rules, froms = self.ruleset.rules, self.ruleset._from
            traces = []
            for i in range(self.tried):
                rule = rules[i]
                part = froms[i]
                if part is not None and i not in near:
                    trace = RuleTrace(rule.name, rule.file, False, part.miss(m))
                else:
                    ok, why = rule.when.judge(m)
                    trace = RuleTrace(rule.name, rule.file, ok, why)
                traces.append(trace)
            self._traces = tuple(traces)
            self._mail = None
        return self._traces

    def __len__(self) -> int:
        return self.tried if self._traces is None else len(self._traces)

    def __getitem__(self, index: Any) -> Any:
        return self._all()[index]

    def __iter__(self) -> Iterator[RuleTrace]:
        return iter(self._all())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Explanation):
            return self._all() == other._all()
        if isinstance(other, tuple):
            return self._all() == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Explanation({self._all()!r})"
