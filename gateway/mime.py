"""Raw bytes -> ParsedMessage: bodies, attachments, headers. Pure and defensive.

Real mail is broken in every way (see ../shared/corpus): headers that raise
when read, multiparts without boundaries, unknown charsets and transfer
encodings. Nothing here raises for bad input except ParseError for input
that is not a mail at all; every oddity becomes a defect string instead.
"""

from __future__ import annotations

import binascii
import datetime as dt
import email
import email.utils
import hashlib
import itertools
import mimetypes
import re
from email.message import Message
from typing import Any

from gateway import mimeheaders
from gateway.errors import ParseError
from gateway.mimeheaders import decode_words, printable
from gateway.models import Address, Attachment, ParsedMessage
from gateway.naming import sanitize_filename

MAX_PARTS = 500
MAX_DEPTH = 20
# Header fields read per message and per part: reading them is quadratic in the
# number of distinct names, and real mail has fewer than 200 (Received chains included).
MAX_HEADERS = 1000
# Decoded bytes of all parts together; base64 only shrinks, but uuencoded files in
# text bodies are decoded a second time. Nothing is ever decompressed or unpacked.
MAX_DECODED = 100 * 1024 * 1024
# Containers the stdlib parser opens, at most: it recurses per level and raises RecursionError
# at about a thousand; a larger limits.max_depth is read as this.
MAX_PARSED_DEPTH = 200
_UU_BEGIN = re.compile(rb"^begin [0-7]{3,4} (.+?)\r?$", re.M)


def clean(value: str) -> str:
    """Undo the surrogate escapes that raw 8-bit bytes in headers leave behind.

    Such bytes are UTF-8 from SMTPUTF8 clients, or a legacy charset; the
    result is always a string that can be stored and shown.
    """
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        data = value.encode("utf-8", "surrogateescape")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data.decode("cp1252", errors="replace")


def _header_str(msg: Message, name: str, defects: list[str]) -> str | None:
    """A header's decoded value, falling back to the raw value when parsing raises."""
    try:
        value = msg.get(name)
        return None if value is None else clean(str(value))
    except Exception as exc:  # policy.default parses lazily; broken headers raise here
        defects.append(f"header {name}: {type(exc).__name__}")
        for k, v in msg.raw_items():
            if k.lower() == name.lower():
                return printable(decode_words(mimeheaders.unfold(str(v))))
        return None


def _addresses(msg: Message, name: str) -> list[Address]:
    """The addresses of the first ``name`` field (bounded and decoded by gateway.mimeheaders)."""
    raw = next((str(v) for k, v in msg.raw_items() if k.lower() == name.lower()), None)
    return [] if raw is None else [Address(n, a) for n, a in mimeheaders.addresses(raw)]


def _charset(part: Message) -> str:
    # an unknown name (or one with a NUL, found by tests/test_fuzz.py) reads as UTF-8
    return mimeheaders.codec(part.get_content_charset()) or "utf-8"


def _payload(part: Message) -> bytes:
    try:
        data = part.get_payload(decode=True)
    except Exception:
        data = None
    if isinstance(data, bytes):
        return data
    raw = part.get_payload()
    if isinstance(raw, str):
        return raw.encode("utf-8", "surrogateescape")
    return b""


def _text(part: Message, defects: list[str]) -> str:
    data = _payload(part)
    cs = _charset(part)
    try:
        return data.decode(cs)
    except (UnicodeDecodeError, LookupError):
        defects.append(f"charset {cs} did not decode; used replacement characters")
        return data.decode(cs if cs != "ascii" else "utf-8", errors="replace")


#: How archives start (zip, rar, 7z, gzip, bzip2, xz, zstd, cab, ar, cpio). An archive that
#: stores a PDF uncompressed shows ``%PDF-`` in its first KB, but it is no PDF.
ARCHIVE_MAGIC: tuple[bytes, ...] = (
    b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08", b"Rar!\x1a\x07", b"7z\xbc\xaf\x27\x1c", b"\x1f\x8b",
    b"BZh", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd", b"MSCF", b"!<arch>\n", b"070701", b"070702", b"070707",
)
_UTF16 = ((b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"), (b"<\x00", "utf-16-le"), (b"\x00<", "utf-16-be"))


def is_archive(data: bytes) -> bool:
    """Whether the bytes start like an archive (or a tar file, by its ``ustar`` mark)."""
    return data.startswith(ARCHIVE_MAGIC) or data[257:262] == b"ustar"


def looks_like_pdf(data: bytes) -> bool:
    """A PDF header in the first KB (readers allow junk before it), in a file that is no archive."""
    return b"%PDF-" in data[:1024] and not is_archive(data)


def _xml_head(data: bytes) -> bytes:
    """The first characters of a possible XML file as ASCII bytes: UTF-8 or UTF-16, BOM and white space gone."""
    for mark, codec in _UTF16:
        if data.startswith(mark):
            head = data[:512].decode(codec, "replace").lstrip("\ufeff")
            return head.encode("ascii", "replace").lstrip(b" \t\r\n")
    return data[:512].lstrip(b"\xef\xbb\xbf \t\r\n")


def detect_kind(data: bytes, content_type: str = "", filename: str = "") -> str:
    """``pdf`` or ``xml`` judged by the bytes (the label only breaks ties), else ``other``."""
    if looks_like_pdf(data):
        return "pdf"
    stripped = _xml_head(data)
    if stripped.startswith(b"<?xml") or (
        stripped.startswith(b"<") and (content_type.endswith("xml") or filename.lower().endswith(".xml"))
    ):
        return "xml"
    return "other"


def _extension(kind: str, content_type: str) -> str | None:
    if kind in ("pdf", "xml"):
        return kind
    return None


def _filename(part: Message, defects: list[str]) -> str | None:
    try:
        name = part.get_filename()
    except Exception as exc:
        defects.append(f"file name: {type(exc).__name__}")
        name = None
    if name is None:
        try:
            name = part.get_param("name", header="content-type")  # type: ignore[assignment]
            if isinstance(name, tuple):
                name = email.utils.collapse_rfc2231_value(name)
        except Exception:
            name = None
    if name is None:
        return None
    return printable(clean(decode_words(str(name)))).strip() or None


def _uudecode(text: bytes) -> list[tuple[str, bytes]]:
    """Files uuencoded inside a text body (old Outlook Express)."""
    files = []
    for m in _UU_BEGIN.finditer(text):
        out = bytearray()
        for line in text[m.end():].splitlines()[1:]:
            if line.strip() in (b"end", b"`"):
                if line.strip() == b"end":
                    break
                continue
            if not line.strip():
                continue
            try:
                out += binascii.a2b_uu(line)
            except binascii.Error:
                # some encoders write wrong padding; use the declared length
                n = (line[0] - 32) & 63
                try:
                    out += binascii.a2b_uu(line[: (n * 4 + 5) // 3 + 1] if n else b" ")
                except binascii.Error:
                    continue  # not uuencoded after all (found by tests/test_fuzz.py)
        files.append((m.group(1).decode("latin-1").strip(), bytes(out)))
    return files


class _Walker:
    """Collects bodies and attachments from a message tree, within limits."""

    def __init__(self, max_parts: int, max_depth: int, max_headers: int = MAX_HEADERS,
                 max_decoded: int = MAX_DECODED) -> None:
        self.text: list[str] = []
        self.html: list[str] = []
        self.attachments: list[Attachment] = []
        self.defects: list[str] = []
        self.parts = 0
        self.max_parts = max_parts
        self.max_depth = max_depth
        self.max_headers = max_headers
        self.max_decoded = max_decoded
        self.decoded = 0
        self.forwarded_from: list[Address] = []

    def _over_budget(self, part: Message, depth: int) -> bool:
        """Count a leaf's decoded size; True (with a defect) once the budget is spent."""
        if depth and len(part) > self.max_headers:  # the message's own header is capped in parse()
            self.defects.append(f"a MIME part has more than {self.max_headers} header fields; it was not read")
            return True
        return self.decoded > self.max_decoded

    def _keep(self, size: int) -> bool:
        """Count ``size`` decoded bytes against the budget; False (with a defect) when it is spent."""
        self.decoded += size
        if self.decoded > self.max_decoded:
            self.defects.append(f"more than {self.max_decoded} decoded bytes; the rest was not read")
            return False
        return True

    def walk(self, part: Message, depth: int = 0, forwarded: bool = False) -> None:
        self.parts += 1
        if self.parts > self.max_parts:
            if self.parts == self.max_parts + 1:
                self.defects.append(f"more than {self.max_parts} MIME parts; the rest were not read")
            return
        if depth > self.max_depth:
            self.defects.append(f"MIME nesting deeper than {self.max_depth}; deeper parts were not read")
            return
        for d in getattr(part, "defects", ()):
            self.defects.append(type(d).__name__)
        ctype = part.get_content_type()
        if part.is_multipart():
            payload = part.get_payload()
            if isinstance(payload, list):
                nested = ctype in ("message/rfc822", "message/global")
                if nested and not self.forwarded_from:  # the original sender of a forwarded mail
                    inner = next((sub for sub in payload if isinstance(sub, Message)), None)
                    self.forwarded_from = _addresses(inner, "From")[:1] if inner is not None else []
                for sub in payload:
                    if isinstance(sub, Message):
                        self.walk(sub, depth + 1, forwarded or nested)
            return
        if ctype.startswith("multipart/"):
            # a multipart whose boundary is missing: its body is all we have
            self.defects.append(f"{ctype} without readable parts; body kept as text")
            self.text.append(_text(part, self.defects))
            return
        if self._over_budget(part, depth):
            return
        self.leaf(part, ctype, forwarded)

    def leaf(self, part: Message, ctype: str, forwarded: bool) -> None:
        try:
            disposition = part.get_content_disposition()
        except Exception:
            disposition = None
        filename = _filename(part, self.defects)
        is_body_text = ctype in ("text/plain", "text/html") and filename is None and disposition != "attachment"
        if is_body_text and not forwarded:
            body = _text(part, self.defects)
            if not self._keep(len(body)):
                return
            (self.text if ctype == "text/plain" else self.html).append(body)
            if ctype == "text/plain" and b"\nbegin " in b"\n" + _payload(part):
                for name, data in _uudecode(_payload(part)):
                    if not self._keep(len(data)):
                        break
                    self.add(name, "application/octet-stream", data, False, None, forwarded)
            return
        if is_body_text and forwarded:
            # the forwarded mail's text is part of what the user sent: keep it for rules
            text = _text(part, self.defects)
            if self._keep(len(text)):
                self.text.append(text)
            return
        data = _payload(part)
        if not self._keep(len(data)):
            return
        cid = part.get("Content-ID")
        cid_s = str(cid).strip().strip("<>") if cid else None
        self.add(filename, ctype, data, disposition == "inline", cid_s, forwarded)

    def add(self, name: str | None, ctype: str, data: bytes, inline: bool, cid: str | None, forwarded: bool) -> None:
        kind = detect_kind(data, ctype, name or "")
        ext = _extension(kind, ctype)
        if ext is None and not name:
            guessed = mimetypes.guess_extension(ctype) or ".bin"
            ext = guessed.lstrip(".")
        fallback = f"attachment-{len(self.attachments) + 1}"
        safe = sanitize_filename(name, fallback=fallback, ext=ext)
        self.attachments.append(Attachment(
            filename=safe, original_filename=name, content_type=ctype, data=data, kind=kind,
            inline=inline, content_id=cid, forwarded=forwarded,
        ))


def parse(raw: bytes, *, max_parts: int = MAX_PARTS, max_depth: int = MAX_DEPTH, max_headers: int = MAX_HEADERS,
          max_decoded: int = MAX_DECODED) -> ParsedMessage:
    """Parse a raw message; never raises for broken mail, only for non-mail input."""
    if not raw.strip():
        raise ParseError("the message is empty")
    if raw.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        raise ParseError("this is an Outlook .msg file, not an e-mail in MIME format; "
                         "save or forward it as .eml instead")
    # deep trees first: the boundaries of what lies too deep must not count against the parts
    depth = min(max_depth, MAX_PARSED_DEPTH)
    shallow = _nesting_cut(raw, depth)
    readable = raw if shallow is None else shallow
    cut = _boundary_cut(readable, 2 * max_parts + 10)
    if cut is not None:
        readable = readable[:cut]
    cuts: list[str] = []
    try:
        msg = email.message_from_bytes(readable, policy=mimeheaders.policy(raw, cuts))
    except Exception as exc:  # the stdlib parser is lenient; this is a last resort
        raise ParseError(f"the MIME parser failed: {type(exc).__name__}: {exc}") from exc
    if not msg.keys() and b":" not in raw[:1000]:
        raise ParseError("no mail headers found: this does not look like an e-mail")
    defects: list[str] = []
    if cut is not None:
        defects.append(f"more than {max_parts} MIME parts; the rest was not read")
    if shallow is not None:
        defects.append(f"MIME nesting deeper than {depth}; deeper parts were not read")
    defects += cuts
    headers: list[tuple[str, str]] = []
    if len(msg) > max_headers:
        defects.append(f"more than {max_headers} header fields; only the first {max_headers} were read")
    # one pass in order (get_all per name would be quadratic in the number of names)
    for name, raw_value in itertools.islice(msg.raw_items(), max_headers):
        try:
            value = str(msg.policy.header_fetch_parse(name, raw_value))
        except Exception as exc:
            defects.append(f"header {printable(name)[:60]}: {type(exc).__name__}")
            value = decode_words(mimeheaders.unfold(str(raw_value)))
        headers.append((printable(clean(name)), printable(clean(value))))
    walker = _Walker(max_parts, max_depth, max_headers, max_decoded)
    walker.walk(msg)
    senders = _addresses(msg, "From")
    to = _addresses(msg, "To") + _addresses(msg, "Cc")
    msgid = _header_str(msg, "Message-ID", defects)
    return ParsedMessage(
        message_id=msgid.strip().strip("<>").strip() or None if msgid else None,
        subject=(_header_str(msg, "Subject", defects) or "").strip(),
        sender=senders[0] if senders else None,
        to=tuple(to),
        date=_date(msg, defects),
        headers=tuple(headers),
        text="\n\n".join(t for t in walker.text if t.strip()),
        html=walker.html[0] if walker.html else None,
        attachments=tuple(walker.attachments),
        defects=tuple(dict.fromkeys(defects + walker.defects)),
        forwarded_from=walker.forwarded_from[0] if walker.forwarded_from else None,
    )


_CONTAINER = re.compile(rb"content-type:[ \t]*(?:multipart|message)/", re.I)
_HEADER_LINE = re.compile(rb"^(?:From |[\041-\071\073-\176]*:|[\t ])")
_CONTENT_TYPE = re.compile(rb"content-type:", re.I)
_BOUNDARY = re.compile(r"(?:^|;)\s*boundary\s*=\s*(\"(?:[^\"\\]|\\.)*\"?|[^;\s]*)", re.I)


def _entity(header: list[bytes], digest: bool) -> tuple[str, bytes | None]:
    """What a header block opens, as the stdlib parser sees it: ("multipart", boundary), ("message", None) or ("", None)."""
    value = None
    for i, line in enumerate(header):
        if _CONTENT_TYPE.match(line):
            more = itertools.takewhile(lambda l: l[:1] in (b" ", b"\t"), header[i + 1:])
            value = (line[13:] + b"".join(more)).decode("latin-1")
            break
    if value is None:
        return ("message", None) if digest else ("", None)
    ctype = re.sub(r"\s+", "", value.split(";", 1)[0]).lower()
    if ctype.startswith("message/") and ctype != "message/delivery-status":
        return "message", None
    if ctype.startswith("multipart/"):
        m = _BOUNDARY.search(value)
        if m and m.group(1).strip('"'):
            return ctype, m.group(1).strip('"').rstrip().encode("latin-1")
    return "", None


def _boundary_hit(bare: bytes, stack: list[tuple[bytes | None, bool]]) -> tuple[int, bool] | None:
    """The innermost open multipart whose boundary line ``bare`` is, and whether it closes it."""
    for level in range(len(stack) - 1, -1, -1):
        boundary = stack[level][0]
        if boundary is not None and bare.startswith(b"--" + boundary):
            rest = bare[len(boundary) + 2:]
            if rest in (b"", b"--"):
                return level, rest == b"--"
    return None


def _nesting_cut(raw: bytes, max_depth: int) -> bytes | None:
    """``raw`` without the bodies of containers nested deeper than ``max_depth``; None when none is.

    The stdlib parser recurses once per nested multipart or message/rfc822
    and raises RecursionError at about a thousand levels, which would lose the
    whole mail. This scan follows the nesting as that parser does (one line
    at a time, boundaries of all enclosing multiparts end a part) and leaves
    out what lies deeper, up to the next boundary of a level it kept, so
    parts beside a hostile tree are still read.
    """
    found = itertools.islice(_CONTAINER.finditer(raw), max_depth + 1)
    if sum(1 for _ in found) <= max_depth:
        return None  # too few containers to nest that deep: the common case costs one scan
    out: list[bytes] = []
    stack: list[tuple[bytes | None, bool]] = []  # (boundary, is a digest) per open container; None: message/*
    header: list[bytes] = []
    in_header, skipping, cut = True, False, False
    for line in raw.splitlines(keepends=True):  # CR, LF or CRLF, as the stdlib parser splits
        if stack and line.startswith(b"--"):
            bare = line.rstrip(b"\r\n").rstrip(b" \t")
            hit = _boundary_hit(bare, stack)
            if hit is not None:
                level, closing = hit
                del stack[level + (0 if closing else 1):]
                in_header, skipping, header = not closing, False, []
                out.append(line)
                continue
        if skipping:
            continue
        out.append(line)
        if not in_header:
            continue
        if line.strip(b"\r\n") and _HEADER_LINE.match(line):
            header.append(line)
            continue
        digest = bool(stack) and stack[-1][1]
        kind, boundary = _entity(header, digest)
        header, in_header = [], False
        if not kind:
            continue
        if len(stack) >= max_depth + 1:
            skipping = cut = True  # this container is already too deep to be read: so is all inside it
        elif kind == "message":
            stack.append((None, False))
            in_header = True
        elif boundary is not None:
            stack.append((boundary, kind == "multipart/digest"))
    return b"".join(out) if cut else None


def _boundary_cut(raw: bytes, lines: int) -> int | None:
    """Where the ``lines``-th line that starts with ``--`` begins, or None when there are fewer.

    The stdlib parser spends about a millisecond on each MIME part (it parses
    Content-Type several times per part), so a message of many tiny parts
    could keep a worker busy for minutes; parts past max_parts are never
    read anyway, so the message is cut before their boundaries.
    """
    if raw.count(b"\n--") < lines:
        return None
    pos = -1
    for _ in range(lines):
        pos = raw.find(b"\n--", pos + 1)
    return pos + 1


def _date(msg: Message, defects: list[str]) -> dt.datetime | None:
    raw = _header_str(msg, "Date", defects)
    if not raw:
        return None
    try:
        d = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError, OverflowError):
        defects.append("Date: unreadable")
        return None
    return d if d.tzinfo else d.replace(tzinfo=dt.timezone.utc)


def content_hash(raw: bytes) -> str:
    """A hash of the message body, the same whether the mail came by SMTP or IMAP.

    Servers add and rewrite headers (Received, Authentication-Results) and may
    change line endings; the body after the header block stays the same.
    """
    sep = re.search(rb"\r?\n\r?\n", raw)
    body = raw[sep.end():] if sep else b""
    body = body.replace(b"\r\n", b"\n").rstrip()
    return hashlib.sha256(body).hexdigest()


def html_to_text(html: str) -> str:
    """The readable text of an HTML body (scripts and styles dropped)."""
    try:
        import lxml.html

        doc = lxml.html.document_fromstring(html)
        for bad in doc.xpath("//script|//style|//head"):
            bad.drop_tree()
        for br in doc.xpath("//br|//p|//div|//tr|//li|//h1|//h2|//h3"):
            br.tail = "\n" + (br.tail or "")
        text = str(doc.text_content())
    except Exception:
        text = re.sub(r"<[^>]+>", " ", html)
    return re.sub(r"[ \t\r\f\v]+", " ", re.sub(r"\n\s*\n+", "\n\n", text)).strip()


_LIMIT_DEFECTS = ("more than ", "MIME nesting deeper than ", "a MIME part has more than ")


def limit_defects(parsed: ParsedMessage) -> list[str]:
    """The defects that say a bound (parts, depth, header fields, decoded size) cut the mail short."""
    return [d for d in parsed.defects if d.startswith(_LIMIT_DEFECTS)]


def summary(parsed: ParsedMessage) -> dict[str, Any]:
    """The message columns the store keeps for lists and searches."""
    return {
        "message_id": parsed.message_id,
        "subject": parsed.subject[:998],
        "sender": str(parsed.sender) if parsed.sender else None,
        "date": parsed.date.isoformat() if parsed.date else None,
    }
