"""Safe XML parsing and recognition of e-invoice syntaxes by their root element.

The parser loads no DTD, substitutes no entities, touches no network and
refuses huge trees; a document with a DOCTYPE is refused outright, since no
e-invoice syntax has one. XML over ``MAX_XML_BYTES`` is not read.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

from lxml import etree

#: Largest XML read, in bytes. XRechnungen with embedded attachments run to a few MB.
MAX_XML_BYTES = 16 * 1024 * 1024

CII_NS = "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100"
UBL_INVOICE_NS = "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"
UBL_CREDIT_NOTE_NS = "urn:oasis:names:specification:ubl:schema:xsd:CreditNote-2"
ZF1_NS = "urn:ferd:CrossIndustryDocument:invoice:1p0"
# The ZUGFeRD 1.0 release candidate (2013/14): CII D13B "CBFBUY" with unqualified children.
ZF1_RC_NS = "urn:un:unece:uncefact:data:standard:CBFBUY:5"

#: (namespace, local name) of the root element -> syntax.
ROOTS: dict[tuple[str, str], str] = {
    (CII_NS, "CrossIndustryInvoice"): "CII",
    (UBL_INVOICE_NS, "Invoice"): "UBL",
    (UBL_CREDIT_NOTE_NS, "CreditNote"): "UBL",
    (ZF1_NS, "CrossIndustryDocument"): "ZUGFeRD1",
    (ZF1_RC_NS, "Invoice"): "ZUGFeRD1",
}
_ROOT_NAMES = frozenset(name for _, name in ROOTS)

_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")
# Prolog (declaration, comments, PIs, a DOCTYPE) and the root's local name, for
# ASCII-compatible encodings: lets a foreign XML be turned away without parsing it.
_PROLOG_ROOT = re.compile(
    rb"(?:\s|<\?.*?\?>|<!--.*?-->)*(?:(?P<doctype><!DOCTYPE)|<(?:[\w.-]+:)?(?P<root>[\w.-]+))",
    re.DOTALL,
)
_DECLARATION = re.compile(rb"\A(\xef\xbb\xbf)?\s*<\?xml\b[^>]*?\?>")
_ENCODING = re.compile(rb"encoding\s*=\s*[\"']?([^\"'?\s]*)")
_local = threading.local()


@dataclass(frozen=True)
class ParsedXml:
    """An XML document recognised as an e-invoice syntax.

    Attributes:
        root: the parsed root element.
        syntax: ``CII``, ``UBL`` or ``ZUGFeRD1``.
        warnings: what was odd about the XML itself (a bad declaration, say).
    """

    root: etree._Element
    syntax: str
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Refusal:
    """Why bytes are not read as an e-invoice XML (shown to people, logged).

    Attributes:
        reason: the reason, one sentence.
        warn: True when the XML was refused as hostile or unreadable (a DOCTYPE,
            not well-formed, too big), which a person should hear about; False
            when it is simply some other kind of XML (a foreign root element).
    """

    reason: str
    warn: bool = False


def looks_like_xml(data: bytes) -> bool:
    """Whether the bytes start (after a BOM and white space) like an XML document."""
    head = data[:1024]
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return True
    return head.removeprefix(_BOMS[0]).lstrip().startswith(b"<")


def _parser() -> etree.XMLParser:
    # lxml parsers must not be shared between threads.
    parser: etree.XMLParser | None = getattr(_local, "parser", None)
    if parser is None:
        parser = etree.XMLParser(
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            dtd_validation=False,
            huge_tree=False,
            remove_comments=True,
            remove_pis=True,
        )
        _local.parser = parser
    return parser


def _prefilter(data: bytes) -> Refusal | None:
    """Turn away foreign roots and DOCTYPEs without parsing, when the prolog is plain ASCII."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return None  # UTF-16: leave it to the parser
    match = _PROLOG_ROOT.match(data.removeprefix(_BOMS[0]), 0, 65536)
    if match is None:
        return None
    if match.group("doctype"):
        return Refusal("XML with a DOCTYPE is refused: no e-invoice syntax has one", warn=True)
    if match.group("root").decode("ascii", "replace") not in _ROOT_NAMES:
        return Refusal(f"XML root element <{match.group('root').decode('ascii', 'replace')}> is not an e-invoice")
    return None


def parse(data: bytes) -> ParsedXml | Refusal:
    """Parse bytes as an e-invoice XML safely; a Refusal says why they are not one. Never raises."""
    if len(data) > MAX_XML_BYTES:
        return Refusal(f"XML of {len(data)} bytes is over the limit of {MAX_XML_BYTES} bytes", warn=True)
    refusal = _prefilter(data)
    if refusal is not None:
        return refusal
    warnings: list[str] = []
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        retry = _without_declaration(data)
        if retry is None:
            return Refusal(f"XML is not well-formed: {exc}", warn=True)
        problem, stripped = retry
        try:
            root = etree.fromstring(stripped, _parser())
        except etree.XMLSyntaxError:
            return Refusal(f"XML is not well-formed: {exc}", warn=True)
        warnings.append(f"{problem}; the XML was read as UTF-8")
    except (ValueError, MemoryError) as exc:
        return Refusal(f"XML could not be parsed: {exc}", warn=True)
    docinfo = root.getroottree().docinfo
    if getattr(docinfo, "doctype", "") or docinfo.internalDTD is not None:
        return Refusal("XML with a DOCTYPE is refused: no e-invoice syntax has one", warn=True)
    qname = etree.QName(root)
    syntax = ROOTS.get((qname.namespace or "", qname.localname))
    if syntax is None:
        ns = f" in namespace {qname.namespace}" if qname.namespace else ""
        return Refusal(f"XML root element <{qname.localname}>{ns} is not an e-invoice")
    if qname.namespace == ZF1_RC_NS:
        warnings.append("ZUGFeRD 1.0 release-candidate format (CBFBUY), not the final ZUGFeRD 1.0 schema")
    return ParsedXml(root=root, syntax=syntax, warnings=tuple(warnings))


def _without_declaration(data: bytes) -> tuple[str, bytes] | None:
    """The XML with a broken declaration removed, and what was wrong with it; None without one."""
    match = _DECLARATION.match(data)
    if match is None:
        return None
    body = data[match.end():]
    if data.removeprefix(_BOMS[0])[:1].isspace():
        problem = "the XML declaration is not at the start of the file"
    else:
        enc = _ENCODING.search(match.group(0))
        named = f" (encoding {enc.group(1).decode('ascii', 'replace')!r})" if enc else ""
        problem = f"the XML declaration is invalid{named}"
    return problem, _BOMS[0] + body
