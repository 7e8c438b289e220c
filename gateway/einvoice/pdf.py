"""Find the XML files embedded in a PDF (ZUGFeRD, Factur-X, XRechnung hybrids).

Looks in the catalog's ``/Names /EmbeddedFiles`` name tree, with bounds on
depth, node count and sizes, so a hostile PDF costs little. Only files named
``*.xml`` (or typed as XML) are returned, the standard e-invoice names first.

The name tree is the PDF's list of embedded files (ISO 32000-1, 7.11.4), the
one viewers, pypdf and the factur-x library read. A file reachable only from
the catalog's ``/AF`` array (PDF/A-3 associated files) is not looked for: such
a PDF is broken (Mustang's validator rejects ``corruptedV2PDF.pdf``, whose
``/Names`` points at the wrong object), and is treated as a plain PDF.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import Any

from pypdf import PdfReader
from pypdf.generic import ArrayObject, DictionaryObject, IndirectObject, NullObject, StreamObject

from gateway.mime import looks_like_pdf

from .xmlread import MAX_XML_BYTES

log = logging.getLogger(__name__)

#: Standard embedded file names, lower case, in order of preference (ZUGFeRD 1 used
#: ``ZUGFeRD-invoice.xml``, 2.0 ``zugferd-invoice.xml``, 2.1 and Factur-X ``factur-x.xml``).
STANDARD_NAMES: tuple[str, ...] = ("factur-x.xml", "xrechnung.xml", "zugferd-invoice.xml")
#: Most XML files taken from one PDF.
MAX_CANDIDATES = 8
_MAX_TREE_NODES = 10_000
_MAX_TREE_DEPTH = 32


@dataclass(frozen=True)
class EmbeddedXml:
    """An XML file embedded in a PDF.

    Attributes:
        name: its file name (``/UF``, ``/F`` or the name tree key).
        data: its decoded bytes.
    """

    name: str
    data: bytes


def is_pdf(data: bytes) -> bool:
    """Whether the bytes carry a PDF header (readers allow junk before it, within 1 KB) and are no archive."""
    return looks_like_pdf(data)


def _resolve(obj: Any) -> Any:
    return obj.get_object() if isinstance(obj, IndirectObject) else obj


def _text(obj: Any) -> str | None:
    obj = _resolve(obj)
    if isinstance(obj, bytes):
        return obj.decode("latin-1")
    return str(obj) if isinstance(obj, str) else None


def _name_tree(root: Any) -> list[tuple[str | None, Any]]:
    """(key, value) pairs of a name tree, following /Kids without loops or blow-up."""
    pairs: list[tuple[str | None, Any]] = []
    seen: set[tuple[int, int]] = set()
    stack: list[tuple[Any, int]] = [(root, 0)]
    visited = 0
    while stack and visited < _MAX_TREE_NODES:
        node, depth = stack.pop()
        if isinstance(node, IndirectObject):
            ref = (node.idnum, node.generation)
            if ref in seen:
                continue
            seen.add(ref)
        node = _resolve(node)
        visited += 1
        if not isinstance(node, DictionaryObject) or depth > _MAX_TREE_DEPTH:
            continue
        names = _resolve(node.get("/Names"))
        if isinstance(names, ArrayObject):
            pairs.extend((_text(names[i]), names[i + 1]) for i in range(0, len(names) - 1, 2))
            if len(pairs) >= _MAX_TREE_NODES:
                break
        kids = _resolve(node.get("/Kids"))
        if isinstance(kids, ArrayObject):
            stack.extend((kid, depth + 1) for kid in reversed(kids[:_MAX_TREE_NODES]))
    return pairs


def _read_spec(key: str | None, spec: Any) -> EmbeddedXml | None:
    """The XML file of a file specification, if it is one and is small enough."""
    spec = _resolve(spec)
    if not isinstance(spec, DictionaryObject):
        return None
    name = _text(spec.get("/UF")) or _text(spec.get("/F")) or key or ""
    ef = _resolve(spec.get("/EF"))
    if not isinstance(ef, DictionaryObject):
        return None
    stream = _resolve(ef.get("/UF"))
    if not isinstance(stream, StreamObject):
        stream = _resolve(ef.get("/F"))
    if not isinstance(stream, StreamObject):
        return None
    subtype = str(_resolve(stream.get("/Subtype")) or "").lower()
    if not name.lower().endswith(".xml") and "xml" not in subtype:
        return None
    params = _resolve(stream.get("/Params"))
    declared = _resolve(params.get("/Size")) if isinstance(params, DictionaryObject) else None
    length = _resolve(stream.get("/Length"))
    if any(isinstance(v, int) and v > MAX_XML_BYTES for v in (declared, length)):
        log.warning("embedded %s is larger than %d bytes; not read", name, MAX_XML_BYTES)
        return None
    data = stream.get_data()
    if len(data) > MAX_XML_BYTES:
        return None
    return EmbeddedXml(name=name, data=data)


def _rank(item: EmbeddedXml) -> int:
    low = item.name.rsplit("/", 1)[-1].lower()
    return STANDARD_NAMES.index(low) if low in STANDARD_NAMES else len(STANDARD_NAMES)


def embedded_xml(data: bytes) -> list[EmbeddedXml] | str:
    """The XML files embedded in a PDF, standard names first; or why none could be read.

    Never raises: a damaged or encrypted PDF gives a reason string.
    """
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            return "the PDF is encrypted"
        catalog = _resolve(reader.trailer.get("/Root"))
        if not isinstance(catalog, DictionaryObject):
            return "the PDF has no document catalog"
        names = _resolve(catalog.get("/Names"))
        specs: list[tuple[str | None, Any]] = []
        if isinstance(names, DictionaryObject) and not isinstance(names.get("/EmbeddedFiles"), NullObject):
            specs.extend(_name_tree(names.get("/EmbeddedFiles")))
        found: dict[str, EmbeddedXml] = {}
        for key, spec in specs:
            item = _read_spec(key, spec)
            if item is not None and item.name not in found:
                found[item.name] = item
                if len(found) == MAX_CANDIDATES:
                    break
    except Exception as exc:  # pypdf raises many kinds on damaged input; all mean "unreadable"
        return f"the PDF could not be read ({type(exc).__name__}: {str(exc)[:200]})"
    if not found:
        return "the PDF carries no embedded XML"
    return sorted(found.values(), key=_rank)
