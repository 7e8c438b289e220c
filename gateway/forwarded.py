"""The original sender of a forwarded mail, for the ``forwarded_from`` rule condition.

A person forwards a supplier's invoice to the import address: the mail's From
is the person, the supplier is inside. Mail clients put it there in one of
two ways: the supplier's mail attached whole (message/rfc822; the parser
records its From), or a header block quoted in the body, after a marker line
("---------- Forwarded message ---------", "-----Original Message-----",
"Begin forwarded message:", "Von: ..." in German clients, ...).

    forwarded_sender(parsed)  # Address("ACME Billing", "billing@acme.example") or None

Anyone can write such a block into a mail: it is a hint about content, never
proof of who sent it (``from`` and ``authenticated`` are about the sender).
"""

from __future__ import annotations

import re

from gateway.models import Address, ParsedMessage

SCAN_CHARS = 20_000  # forwarded blocks sit near the top; a bound on hostile bodies
LINES_AFTER_MARKER = 12

_MARKER = re.compile(
    r"^[\s>*\-_=]*("
    r"-+\s*forwarded message\s*-+|begin forwarded message:?|-+\s*original message\s*-+|"
    r"-+\s*weitergeleitete nachricht\s*-+|anfang der weitergeleiteten nachricht:?|-+\s*urspr(ü|ue)ngliche nachricht\s*-+|"
    r"-+\s*message transf(é|e)r(é|e)\s*-+|d(é|e)but du message r(é|e)exp(é|e)di(é|e)\s*:?|-+\s*message d'origine\s*-+|"
    r"-+\s*doorgestuurd bericht\s*-+|-+\s*oorspronkelijk bericht\s*-+|"
    r"-+\s*messaggio inoltrato\s*-+|-+\s*messaggio originale\s*-+|"
    r"-+\s*mensaje reenviado\s*-+|-+\s*mensaje original\s*-+|"
    r"_{10,})\s*$", re.I | re.M)
_FROM_LINE = re.compile(r"^[\s>*]*(?:from|von|de|da|van|från|fra|od)\s*:\s*\**\s*(.+?)\s*$", re.I)
_ADDR = re.compile(r"[^\s<>\[\]()\"',;:]+@[^\s<>\[\]()\"',;:]+\.[^\s<>\[\]()\"',;:]+")


def sender_in_text(text: str) -> Address | None:
    """The From of the first forwarded header block in ``text``, or None."""
    head = text[:SCAN_CHARS]
    for marker in _MARKER.finditer(head):
        lines = head[marker.end():].splitlines()[:LINES_AFTER_MARKER + 1]
        for line in lines:
            m = _FROM_LINE.match(line)
            if m is None:
                continue
            value = m.group(1)
            addr = _ADDR.search(value)
            if addr is None:
                continue
            name = value[:addr.start()].replace("mailto:", "").strip(" \t\"'<[(*")
            return Address(name.strip(), addr.group(0).rstrip(".").strip("*"))
    return None


def forwarded_sender(parsed: ParsedMessage) -> Address | None:
    """The original sender of a forwarded mail: the attached message's From, else the body's block."""
    if parsed.forwarded_from is not None:
        return parsed.forwarded_from
    found = sender_in_text(parsed.text)
    if found is None and parsed.html:
        from gateway.mime import html_to_text

        found = sender_in_text(html_to_text(parsed.html[:200_000]))
    return found
