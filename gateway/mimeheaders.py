"""Reading mail headers in bounded time and memory, decoded as mail clients decode them.

Python's ``email`` package with ``policy.default`` parses every header it
hands out with its structured parser, whose cost grows with the square of
the number of RFC 2047 encoded words in one header (8,000 words in a
109 KB mail took 450 MB; 1 MB of them exhausted 24 GB), and with the number
of addresses in one field, and its address parser takes minutes on 64 KB
of quotes or dots. ``BoundedPolicy`` replaces it: each header field is cut
to MAX_HEADER_CHARS characters and an address field to MAX_ADDRESSES
addresses when it is read from the source, raw 8-bit bytes are decoded
once, and encoded words and address fields are read here, each in one
linear pass. The stdlib's own string functions still take parameters apart
(Content-Type, Content-Disposition). Every cut is recorded
(``BoundedPolicy.cuts``) so the message's reason can say what was not read.

The decoding follows what mail clients do:

- raw 8-bit bytes in a header are UTF-8 when they are valid UTF-8, else the
  charset the message declares for its text (its first ``charset=``), else
  cp1252 (a superset of Latin-1 that decodes every byte);
- adjacent encoded words separated only by white space are joined without
  it (RFC 2047 6.2), and their bytes are decoded together, so a character
  split across two words survives;
- CR, LF and other control characters never come out of a decoded value:
  header text goes into PDFs, exported mail and file names.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import email.policy
import re
from collections.abc import Iterator
from email.message import Message
from typing import Any

#: Characters of one header field that are read; the rest is cut (a real To: with 1,000 addresses is ~40 KB).
MAX_HEADER_CHARS = 64 * 1024
#: Addresses read per address field (To, Cc, ...).
MAX_ADDRESSES = 1000
#: Bytes of a stored message that the admin page and the API read to show its header.
HEAD_READ = 4 * 1024 * 1024
#: Bytes at the start of a message searched for the charset that raw 8-bit header bytes are decoded with.
CHARSET_SCAN = 1024 * 1024

ADDRESS_HEADERS = frozenset({
    "from", "to", "cc", "bcc", "sender", "reply-to", "resent-from", "resent-to", "resent-cc", "resent-bcc",
    "resent-sender",
})
# Header fields whose value is structured text that the parser's own functions read (parameters,
# identifiers, dates): they are unfolded but their encoded words stay as they are, like the
# stdlib does (a file name is decoded after its parameter is taken apart).
RAW_HEADERS = frozenset({
    "content-type", "content-disposition", "content-transfer-encoding", "content-id", "message-id",
    "in-reply-to", "references", "date", "mime-version",
})
CHARSET_ALIASES = {"charset": "utf-8", "us-ascii": "ascii", "unknown-8bit": "latin-1", "x-unknown": "latin-1",
                   "ks_c_5601-1987": "cp949", "iso-8859-8-i": "iso-8859-8", "gb2312": "gb18030", "gbk": "gb18030",
                   "x-gbk": "gb18030", "big5": "big5hkscs"}

_WORD = r"=\?([^?\s*]+)(?:\*[^?\s]*)?\?([bBqQ])\?([^?\s]*)\?="
_WORD_RE = re.compile(_WORD)
_RUN_RE = re.compile(rf"{_WORD}(?:[ \t\r\n]+{_WORD})*")
_FOLD_RE = re.compile(r"\r?\n(?=[ \t])|\r(?=[ \t])")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")
_LINE_RE = re.compile(r"[\t\r\n\u0085\u2028\u2029]")
_SPECIALS_RE = re.compile(r'[,;:<>()"@\[\]\\]')
_SURROGATE_RE = re.compile("[\udc80-\udcff]")
_NON_ASCII_RE = re.compile("[^\x00-\x7f]")
_CHARSET_RE = re.compile(rb"charset\s*=\s*\"?([A-Za-z0-9_.:+-]{1,40})", re.I)
# One token of an address field: a quoted string, a comment, an angle address, a comma, a run of
# encoded words, other text. Unterminated quotes, comments and brackets run to the end.
_ADDR_TOKEN_RE = re.compile(
    rf'(?P<q>"(?:[^"\\]|\\.)*"?)|(?P<c>\((?:[^()\\]|\\.)*\)?)|(?P<a><[^>]*>?)|(?P<comma>,)'
    rf'|(?P<run>{_WORD}(?:[ \t\r\n]+{_WORD})*)|(?P<t>[^"(<,=]+|.)', re.S)


def codec(name: str | None) -> str | None:
    """The Python codec for a charset label, or None when Python has none."""
    if not name:
        return None
    label = name.strip().strip('"').lower()
    label = CHARSET_ALIASES.get(label, label)
    try:
        return codecs.lookup(label).name
    except (LookupError, ValueError):  # ValueError: a NUL in the name
        return None


def declared_charset(raw: bytes) -> str | None:
    """The first charset a message declares for its text (within CHARSET_SCAN bytes), if Python knows it."""
    for m in _CHARSET_RE.finditer(raw, 0, CHARSET_SCAN):
        cs = codec(m.group(1).decode("ascii"))
        if cs is not None and cs not in ("ascii", "utf-8"):
            return cs
    return None


def decode_8bit(data: bytes, charset: str | None) -> str:
    """Raw header bytes as text: UTF-8 when valid, else ``charset``, else cp1252.

    UTF-8 with a character cut in two (a client cut the line) is still
    UTF-8: legacy charsets make invalid UTF-8 of nearly every non-ASCII run,
    so a few errors among many valid multi-byte characters mean UTF-8.
    """
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="replace")
        errors = text.count("\ufffd")
        if len(_NON_ASCII_RE.findall(text)) - errors >= 10 * errors:
            return text
    if charset:
        try:
            return data.decode(charset)
        except (UnicodeDecodeError, LookupError):
            pass
    return data.decode("cp1252", errors="replace")


def printable(text: str) -> str:
    """``text`` on one line: tabs and line breaks become spaces, other control characters go."""
    return _CONTROL_RE.sub("", _LINE_RE.sub(" ", text))


def unfold(value: str) -> str:
    """A header value without its folding line breaks (RFC 5322 2.2.3)."""
    return _FOLD_RE.sub("", value)


def _word_bytes(enc: str, text: str) -> bytes | None:
    if enc in "qQ":
        return binascii.a2b_qp(text.encode("ascii", "replace"), header=True)
    data = text.encode("ascii", "replace")
    try:
        return base64.b64decode(data + b"=" * (-len(data) % 4))
    except (binascii.Error, ValueError):
        return None


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _decode_run(run: str) -> str:
    """One run of adjacent encoded words as text; the white space between them is dropped."""
    out: list[str] = []
    pending = b""
    pending_cs: str | None = None
    for m in _WORD_RE.finditer(run):
        # an unknown charset ("=?NONE?B?...") is read as raw bytes are
        cs = codec(m.group(1)) or "unknown"
        data = _word_bytes(m.group(2), m.group(3))
        if data is not None and cs == "unknown":
            cs = "utf-8" if _is_utf8(data) else "cp1252"
        if data is None:  # broken base64: shown as it came
            if pending:
                out.append(pending.decode(pending_cs or "utf-8", errors="replace"))
                pending, pending_cs = b"", None
            out.append(m.group(0))
            continue
        if pending and cs != pending_cs:
            out.append(pending.decode(pending_cs or "utf-8", errors="replace"))
            pending = b""
        # bytes of adjacent words in one charset are decoded together: encoders split characters
        pending += data
        pending_cs = cs
    if pending:
        out.append(pending.decode(pending_cs or "utf-8", errors="replace"))
    return "".join(out)


def decode_words(value: str) -> str:
    """``value`` with its RFC 2047 encoded words decoded, in time linear in its length."""
    if "=?" not in value:
        return value
    return _RUN_RE.sub(lambda m: _decode_run(m.group(0)), value)


def cut(value: str) -> str:
    """``value`` within MAX_HEADER_CHARS, cut at white space near the bound so no encoded word is cut in two."""
    if len(value) <= MAX_HEADER_CHARS:
        return value
    space = max(value.rfind(ch, MAX_HEADER_CHARS - 1024, MAX_HEADER_CHARS) for ch in " \t\n")
    return value[:space if space > 0 else MAX_HEADER_CHARS].rstrip()


def _quoted(text: str, specials: str) -> str:
    for ch in "\\" + specials:
        text = text.replace(ch, "\\" + ch)
    return text


def _tokens(value: str) -> Iterator[tuple[str, str]]:
    for m in _ADDR_TOKEN_RE.finditer(value):
        yield m.lastgroup or "t", m.group(0)


def _address_field(value: str) -> tuple[str, int, bool]:
    """An address field within the bounds, as it came (encoded words are decoded when it is read).

    It ends before the comma after MAX_ADDRESSES addresses, or before the
    last comma within MAX_HEADER_CHARS, so no address is cut in two. Returns
    the new value, how many addresses it had (MAX_ADDRESSES + 1: more were
    cut), and whether it is whole.
    """
    commas = 0
    seen = False  # whether the current address has any text
    kept = 0  # where the last comma is
    for m in _ADDR_TOKEN_RE.finditer(value):
        if m.end() > MAX_HEADER_CHARS:
            return value[:kept or MAX_HEADER_CHARS], commas, False
        if m.lastgroup == "comma":
            if seen:
                commas += 1
                seen = False
            if commas >= MAX_ADDRESSES:
                return value[:m.start()], MAX_ADDRESSES + 1, False
            kept = m.start()
        elif m.group(0).strip():
            seen = True
    return value, commas + (1 if seen else 0), True


def _unquote(token: str) -> str:
    inner = token[1:-1] if len(token) > 1 and token.endswith('"') else token[1:]
    return re.sub(r"\\(.)", r"\1", decode_words(inner), flags=re.S)


def _one_address(tokens: list[tuple[str, str]]) -> tuple[str, str] | None:
    """(display name, address) of one comma-separated item of an address field."""
    # a group's name ("Suppliers: a@x, b@y;") is no part of its first address
    for i, (kind, text) in enumerate(tokens):
        if kind == "a":
            break
        if kind == "t" and ":" in text:
            tokens = [("t", text.split(":", 1)[1]), *tokens[i + 1:]]
            break
    tokens = [(k, t.replace(";", "") if k == "t" else t) for k, t in tokens]
    at = next((i for i, (k, _) in enumerate(tokens) if k == "a"), None)
    if at is not None:
        addr = tokens[at][1][1:].rstrip(">").strip()
        if addr.startswith("@") and ":" in addr:  # an obsolete route (<@a,@b:x@y>)
            addr = addr.rsplit(":", 1)[1].strip()
        # the name is what stands before the address (after it only when nothing does)
        before = [(k, t) for k, t in tokens[:at] if k in ("q", "run", "t")]
        words = [_text_of(k, t) for k, t in (before or [(k, t) for k, t in tokens[at + 1:] if k in ("q", "run")])]
        name = " ".join("".join(words).split())
    else:
        addr = "".join("".join(_text_of(k, t) for k, t in tokens if k in ("q", "t", "run")).split())
        comment = next((t for k, t in tokens if k == "c"), "")
        name = " ".join(decode_words(comment[1:].rstrip(")")).split())
        if not addr:  # a comment alone ("unlisted-recipients:; (no To-header on input)") is no address
            return None
    if not addr and not name:
        return None
    return printable(name), printable(addr)


def _text_of(kind: str, text: str) -> str:
    """A token's text: quoted strings unquoted, encoded words decoded."""
    if kind == "q":
        return _unquote(text)
    if kind == "run":
        return _decode_run(text)
    return text


def addresses(value: str) -> list[tuple[str, str]]:
    """The (display name, address) pairs of an address field, read in one linear pass.

    Lenient as mail clients are: display names decoded (adjacent encoded
    words joined), comments as the name of a bare address, groups opened.
    """
    out: list[tuple[str, str]] = []
    item: list[tuple[str, str]] = []
    for kind, text in _tokens(unfold(value)):
        if kind == "comma":
            pair = _one_address(item)
            if pair is not None:
                out.append(pair)
            item = []
        elif kind == "run" and item and item[-1][0] == "run":
            item[-1] = ("run", item[-1][1] + text)
        else:
            item.append((kind, text))
    pair = _one_address(item)
    if pair is not None:
        out.append(pair)
    return out[:MAX_ADDRESSES]


def format_addresses(pairs: list[tuple[str, str]]) -> str:
    """Address pairs as one line: ``Name <addr>, "Last, First" <addr>, addr``."""
    def one(name: str, addr: str) -> str:
        if not name:
            return addr
        if _SPECIALS_RE.search(name):
            name = '"' + _quoted(name, '"') + '"'
        return f"{name} <{addr}>"
    return ", ".join(one(n, a) for n, a in pairs)


class BoundedPolicy(email.policy.EmailPolicy):
    """``policy.default`` with every header field bounded, decoded once, and read without the structured parser.

    ``cuts`` (a list, shared by the policy's clones) collects what a bound cut, in words;
    ``charset`` is the fallback for raw 8-bit header bytes.
    """

    cuts: list[str] | None = None
    charset: str | None = None

    def __init__(self, *, cuts: list[str] | None = None, charset: str | None = None) -> None:
        settings: dict[str, Any] = {"cuts": cuts, "charset": charset}
        super().__init__(**settings)

    def _cut(self, text: str) -> None:
        if self.cuts is not None and text not in self.cuts:
            self.cuts.append(text)

    def header_source_parse(self, sourcelines: list[str]) -> tuple[str, str]:
        """Name and value of one header field as read from the source, within the bounds."""
        name, value = super().header_source_parse(sourcelines)
        # no work on what is cut anyway: four bytes make at least one character
        value = value[:4 * MAX_HEADER_CHARS]
        if _SURROGATE_RE.search(value):  # raw 8-bit bytes, surrogate-escaped by the parser
            value = decode_8bit(value.encode("ascii", "surrogateescape"), self.charset)
        if name.strip().lower() in ADDRESS_HEADERS:
            value, count, whole = _address_field(value)
            if count > MAX_ADDRESSES:
                self._cut(f"more than {MAX_ADDRESSES} addresses in {_label(name)}; only the first "
                          f"{MAX_ADDRESSES} were read")
            elif not whole:
                self._cut(f"more than {MAX_HEADER_CHARS} characters in {_label(name)}; only the addresses "
                          "before that were read")
        if len(value) > MAX_HEADER_CHARS:
            self._cut(f"more than {MAX_HEADER_CHARS} characters in a {_label(name)} header; the rest was not read")
            value = cut(value)
        return name, value

    def header_fetch_parse(self, name: str, value: str) -> Any:
        """Any header field as decoded text on one line (address fields as ``Name <addr>, addr``)."""
        if hasattr(value, "name"):
            return value
        key = name.strip().lower()
        if key in ADDRESS_HEADERS:
            # a group without members ("undisclosed-recipients:;") is shown as written
            return format_addresses(addresses(value)) or printable(decode_words(unfold(value)))
        if key in RAW_HEADERS:
            return printable(unfold(value))
        return printable(decode_words(unfold(value)))


def _label(name: str) -> str:
    """A header name fit for a reason text (a hostile name is cut and cleaned)."""
    return printable(name.strip())[:60] or "nameless"


def policy(raw: bytes | None = None, cuts: list[str] | None = None) -> BoundedPolicy:
    """A bounded policy for one message: the fallback charset from ``raw``, cuts recorded in ``cuts``."""
    return BoundedPolicy(cuts=cuts, charset=declared_charset(raw) if raw is not None else None)


def display(msg: Message, name: str, value: Any) -> str:
    """One header field as a person reads it: decoded, on one line (addresses as the parser wrote them)."""
    try:
        text = str(msg.policy.header_fetch_parse(name, value))
    except Exception:  # a broken address field is shown with its words decoded
        text = decode_words(unfold(str(value)))
    return printable(text)


def fields(msg: Message, limit: int) -> Iterator[tuple[str, str]]:
    """The first ``limit`` header fields of ``msg`` in order, as (name, displayed value)."""
    for i, (name, value) in enumerate(msg.raw_items()):
        if i >= limit:
            return
        yield printable(str(name)), display(msg, name, value)


def read_headers(raw: bytes, limit: int) -> list[tuple[str, str]]:
    """The first ``limit`` header fields of a raw message (or its start), bounded and decoded as parse() does."""
    import email.parser

    msg = email.parser.BytesHeaderParser(policy=policy(raw)).parsebytes(raw)
    return list(fields(msg, limit))
