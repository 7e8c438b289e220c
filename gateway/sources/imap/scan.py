"""Looking before downloading: a mail's BODYSTRUCTURE, size and ENVELOPE, and whether to fetch it whole.

A mail is downloaded whole (``BODY.PEEK[]``) when it can yield a document:

1. a part can hold one: ``application/pdf`` (and any other type that says
   pdf), ``application/octet-stream``, XML (``application/xml``,
   ``text/xml``, ``*+xml``), ``message/rfc822`` (a forwarded mail), a file
   named ``*.pdf`` or ``*.xml`` whatever its type, or any other part with a
   file name except pictures, sound and video (a photo attached, a
   newsletter's images: documents are PDF or XML files by their bytes), and
   every named part when a rule picks attachments by name (``attachments:``
   globs);
2. or the IMAP ``unmatched`` policy is ``import``, which renders a mail without
   attachment to PDF: then every mail matters;
3. or a rule with ``import: body`` (or ``both``) could match the sender: its
   ``from`` names the sender's domain, or it has no ``from`` (then every mail
   is downloaded: the rule may match on subject or body text).

Anything else cannot become a document under the rules in force; its UID is
recorded as ``skipped`` and looked at again when the rules change what gets
downloaded (the policy's ``fingerprint`` changes).
"""

from __future__ import annotations

import hashlib
import json
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from gateway.mimeheaders import cut, printable
from gateway.mimeheaders import decode_words as mime_decode_words

DOCUMENT_TYPES = frozenset({"application/pdf", "application/x-pdf", "application/octet-stream",
                            "application/xml", "text/xml", "message/rfc822"})
DOCUMENT_SUFFIXES = (".pdf", ".xml")
MEDIA_TYPES = frozenset({"image", "audio", "video"})
META_ITEMS = ["RFC822.SIZE", "BODYSTRUCTURE", "ENVELOPE"]


@dataclass(frozen=True)
class Part:
    """One leaf of a BODYSTRUCTURE.

    Attributes:
        content_type: ``type/subtype``, lower case.
        filename: the decoded file name (Content-Disposition, else Content-Type name), or None.
        disposition: ``attachment``, ``inline`` or None.
    """

    content_type: str
    filename: str | None
    disposition: str | None


@dataclass(frozen=True)
class MailMeta:
    """What the server tells about a mail without sending it.

    Attributes:
        uid: the UID in its folder.
        size: RFC822.SIZE in bytes.
        message_id: the Message-ID without angle brackets, or None.
        sender: the From address, lower case, or None.
        subject: the decoded subject ("" when absent).
        parts: the leaf parts of its structure.
    """

    uid: int
    size: int
    message_id: str | None
    sender: str | None
    subject: str
    parts: tuple[Part, ...]


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value)


def decode_words(value: Any) -> str:
    """RFC 2047 encoded words (``=?utf-8?q?...?=``) decoded as gateway.mime decodes them, in linear time.

    The envelope comes from the server but its text from the sender: the
    stdlib's decode_header took 20 s on a 1 MB subject of encoded words.
    """
    text = cut(_text(value))
    return printable(mime_decode_words(text)) if "=?" in text else text


def _params(raw: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    if isinstance(raw, (tuple, list)):
        items = list(raw)
        for k, v in zip(items[0::2], items[1::2], strict=False):
            out[_text(k).lower()] = _text(v)
    return out


def _filename(params: dict[str, str]) -> str | None:
    for key in ("filename", "name"):
        if params.get(key):
            return decode_words(params[key])
        starred = params.get(key + "*")
        if starred:  # RFC 2231: charset'language'percent-encoded
            charset, _, rest = starred.partition("'")
            _, _, encoded = rest.partition("'")
            try:
                return urllib.parse.unquote(encoded or starred, encoding=charset or "utf-8", errors="replace")
            except LookupError:
                return urllib.parse.unquote(encoded or starred)
        continued = [v for k, v in sorted(params.items()) if k.startswith(key + "*") and k[len(key) + 1:].rstrip("*").isdigit()]
        if continued:
            return urllib.parse.unquote("".join(continued))
    return None


def walk(node: Any) -> list[Part]:
    """The leaf parts of an IMAP BODYSTRUCTURE (as imapclient parses it)."""
    if not isinstance(node, (tuple, list)) or not node:
        return []
    if isinstance(node[0], (tuple, list)):  # multipart: the children, then the subtype
        parts: list[Part] = []
        if isinstance(node[0], list):  # imapclient nests the children in a list
            children = node[0]
        else:  # a raw structure: the children are the leading tuples
            children = []
            for child in node:
                if not isinstance(child, (tuple, list)):
                    break
                children.append(child)
        for child in children:
            parts.extend(walk(child))
        return parts
    ctype = f"{_text(node[0]).lower()}/{_text(node[1]).lower()}" if len(node) > 1 else _text(node[0]).lower()
    params = _params(node[2] if len(node) > 2 else None)
    # the extension fields start after the basic ones: text has a line count, message/rfc822 three more
    ext = 8 if ctype.startswith("text/") else (10 if ctype == "message/rfc822" else 7)
    disposition = node[ext + 1] if len(node) > ext + 1 else None
    disp_type: str | None = None
    if isinstance(disposition, (tuple, list)) and disposition:
        disp_type = _text(disposition[0]).lower()
        params = {**params, **_params(disposition[1] if len(disposition) > 1 else None)}
    return [Part(ctype, _filename(params), disp_type)]


def parse_meta(uid: int, data: dict[bytes, Any]) -> MailMeta:
    """A MailMeta from one FETCH response (RFC822.SIZE, BODYSTRUCTURE, ENVELOPE)."""
    env = data.get(b"ENVELOPE")
    msgid = sender = None
    subject = ""
    if env is not None:
        raw_id = _text(getattr(env, "message_id", None)).strip()
        msgid = raw_id.strip("<>").strip() or None
        subject = decode_words(getattr(env, "subject", None))
        froms = getattr(env, "from_", None) or ()
        for a in froms:
            if getattr(a, "mailbox", None) and getattr(a, "host", None):
                sender = f"{_text(a.mailbox)}@{_text(a.host)}".lower()
                break
    try:
        parts = tuple(walk(data.get(b"BODYSTRUCTURE")))
    except (IndexError, TypeError, ValueError):
        # an odd structure: assume it may hold anything
        parts = (Part("application/octet-stream", None, None),)
    return MailMeta(uid=uid, size=int(data.get(b"RFC822.SIZE") or 0), message_id=msgid, sender=sender,
                    subject=subject, parts=parts)


def can_hold_document(part: Part, *, any_named: bool) -> bool:
    """Whether a part may become a document under the rules (see the module docstring)."""
    ct = part.content_type
    major, _, subtype = ct.partition("/")
    if ct in DOCUMENT_TYPES or ct.endswith("+xml") or "pdf" in subtype:
        return True
    if part.filename:
        if part.filename.lower().endswith(DOCUMENT_SUFFIXES) or any_named:
            return True
        # A document is a PDF or XML file by its bytes; a part the sender calls a
        # picture, a sound or a film, and names so, is one (a photo, a logo).
        return major not in MEDIA_TYPES
    return False


def _domain_keys(domain: str) -> Iterable[tuple[str, str]]:
    yield ("domain", domain)
    rest = domain
    while "." in rest:
        rest = rest.partition(".")[2]
        yield ("parent", rest)


@dataclass(frozen=True)
class DownloadPolicy:
    """What makes a mail worth downloading, from the rules in force and the unmatched policy.

    Attributes:
        everything: download every mail (policy ``import``, or a body rule with no ``from``).
        body_senders: sender-domain keys of rules that import the body (``("domain", d)``,
            ``("parent", d)``), as the rule set indexes them.
        any_named: every part with a file name counts (a rule picks attachments by name).
    """

    everything: bool = False
    body_senders: frozenset[tuple[str, str]] = frozenset()
    any_named: bool = False

    @property
    def fingerprint(self) -> str:
        """Changes when the policy could download more or fewer mails."""
        blob = json.dumps([self.everything, sorted(self.body_senders), self.any_named])
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def reason(self, meta: MailMeta) -> str | None:
        """Why ``meta`` must be downloaded, or None when it cannot yield anything."""
        if self.everything:
            return "every mail may be imported"
        for part in meta.parts:
            if can_hold_document(part, any_named=self.any_named):
                return f"{part.content_type} part" + (f" {part.filename!r}" if part.filename else "")
        if self.body_senders and meta.sender:
            domain = meta.sender.rpartition("@")[2]
            if any(k in self.body_senders for k in _domain_keys(domain)):
                return "a rule imports the body of mail from this sender"
        return None


def download_policy(ruleset: Any, unmatched: str) -> DownloadPolicy:
    """The policy for a rule set (``gateway.rules.RuleSet`` or None) and the IMAP unmatched policy."""
    everything = unmatched == "import"
    senders: set[tuple[str, str]] = set()
    any_named = False
    for rule in getattr(ruleset, "rules", ()) or ():
        if getattr(rule, "action", "import") != "import":
            continue
        if getattr(rule, "attachment_globs", ()) or getattr(rule, "import_mode", "") == "images":
            any_named = True  # a photo sent as an image counts too
        if getattr(rule, "import_mode", "attachments") in ("body", "both"):
            # Rule.senders: the sender domains its `from` limits it to (() = any sender)
            keys = tuple(getattr(rule, "senders", None) or getattr(rule, "index_keys", None) or ())
            if not keys:
                everything = True
            senders.update(keys)
    return DownloadPolicy(everything=everything, body_senders=frozenset(senders), any_named=any_named)


def size_text(n: float) -> str:
    """Bytes for people: 1.2 MB."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"

