"""Suppliers: who sends the invoices, learned from e-invoices and from documents a person confirmed.

A supplier has a name, aliases, the sender domains it writes from, its VAT
IDs, IBANs and tax numbers (table ``suppliers`` and its keys in
``supplier_keys``, indexed by kind and value). A later document is matched
to a supplier by VAT ID, then IBAN, then sender domain, then its name
(normalised: case, accents, punctuation and legal-form suffixes such as
GmbH, AG, B.V., SAS, S.r.l., Ltd, Inc.); its ``seller`` field then becomes
the supplier's name, source ``supplier``, labelled by the key that matched
("VAT ID DE123456789").

Decisions:

- Learned in the transaction that records a message's documents
  (``Store.finish_processed``'s ``learn``), from documents whose seller the
  e-invoice XML or a person gives; never from text read in a PDF, so a
  stranger's letterhead does not become a supplier.
- What binds a supplier to a mail address, its sender domains, and its bank
  accounts is learned only from proof, as the IBAN guard learns: an
  authenticated sender (not at a freemail or own domain) that is the
  supplier's (or a supplier not bound to any domain yet), or a person
  (``confirm-account``, approving a document). A VAT ID, name or alias from
  any e-invoice only helps to name documents.
- A candidate whose VAT IDs do not include the document's VAT ID is not its
  supplier, whatever the domain or name says.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sqlite3
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.fields.model import DocumentFields, FieldSource
from gateway.store import Row, Store, iso, utcnow

# Legal-form words left out of a name's key when they end it ("Muster Bürobedarf GmbH & Co. KG" -> "muster
# burobedarf"), after case, accents and punctuation are dropped ("S.r.l." -> "srl", "A/S" -> "as").
LEGAL_FORMS = frozenset("""
    gmbh mbh ag kg ohg ug haftungsbeschrankt ek ev eg se kgaa co cokg und
    bv nv vof cv bvba sprl
    sa sas sasu sarl eurl sca snc sci
    srl srls spa sapa snc sas ss
    sl slu sau scp
    ltd limited llc llp lp plc inc incorporated corp corporation company pty
    oy oyj ab as asa aps
    sp z oo zoo sro kft rt zrt nyrt doo dd
""".split())
_KINDS = ("vat", "iban", "domain", "name", "alias", "tax")
#: How sure a match by each key makes the seller.
CONFIDENCE = {"vat": 0.95, "iban": 0.9, "domain": 0.7, "name": 0.6}
#: Each invoice once: the readable PDF made from a bare XML e-invoice is its pair, not another invoice.
_ONCE = "origin != 'einvoice-render'"
#: The newest documents a supplier's page lists (its totals count them all).
DOCUMENTS_SHOWN = 200
_LABEL = {"vat": "VAT ID", "iban": "IBAN", "domain": "sender domain", "name": "name"}


def name_key(name: str | None) -> str:
    """A name as matched: no case, accents, punctuation or legal-form ending ("ACME, Inc." -> "acme")."""
    words = _words(name)
    while len(words) > 1 and words[-1] in LEGAL_FORMS:
        words.pop()
    return " ".join(words)


def _words(name: str | None) -> list[str]:
    """A name's words without case, accents and punctuation."""
    text = unicodedata.normalize("NFKD", (name or "").casefold().replace("&", " "))
    text = "".join(c for c in text if not unicodedata.combining(c))
    return re.sub(r"[^\w\s]", "", text).split()


def vat_key(vat: str | None) -> str:
    """A VAT ID without spaces, dots or dashes, upper case."""
    return re.sub(r"[\s.\-]", "", vat or "").upper()


@dataclass(frozen=True)
class Match:
    """A document's supplier and the key it was known by.

    Attributes:
        supplier_id, name: the supplier.
        kind: ``vat``, ``iban``, ``domain`` or ``name``.
        value: the key's value as shown (an IBAN masked).
    """

    supplier_id: int
    name: str
    kind: str
    value: str

    @property
    def label(self) -> str:
        """What matched, for the field's source ("VAT ID DE123456789")."""
        return f"{_LABEL[self.kind]} {self.value}"


def with_supplier(fields: DocumentFields, match: Match | None) -> DocumentFields:
    """``fields`` with the seller named by its supplier, unless a person, a rule or the XML names it."""
    if match is None:
        return fields
    current = fields.sources.get("seller")
    if fields.seller and current is not None and current.source in ("person", "rule", "einvoice"):
        return fields
    if current is not None and current.source == "supplier" and fields.seller == match.name:
        return fields  # named so before (the reading the rules saw): its key stays the one that matched
    source = FieldSource("supplier", CONFIDENCE[match.kind], label=match.label)
    return dataclasses.replace(fields, seller=match.name, sources={**fields.sources, "seller": source})


class Suppliers:
    """The suppliers table: matching documents, learning from them, and what the admin page lists."""

    def __init__(self, store: Store, own_domains: Iterable[str] = ()) -> None:
        self.store = store
        self.own_domains = tuple(own_domains)

    def _conn(self) -> sqlite3.Connection:
        return self.store._conn()

    def sender_key(self, sender_domain: str) -> str:
        """The organisational domain a supplier is known by, or "" (freemail, own domains, none)."""
        from gateway.payment_guard import FREEMAIL
        from gateway.senderauth.dmarc import org_domain

        domain = org_domain(sender_domain.lower()) if sender_domain else ""
        if not domain or domain in FREEMAIL or domain in {org_domain(d) for d in self.own_domains}:
            return ""
        return domain

    # -- matching ------------------------------------------------------------------

    def match(self, fields: DocumentFields, sender_domain: str = "", ibans: Sequence[str] = ()) -> Match | None:
        """The supplier of a document: by VAT ID, IBAN, sender domain, then name; None when none fits."""
        from gateway.payment_guard import mask_iban, normalize_iban

        vat = vat_key(fields.seller_vat_id)
        candidates: list[tuple[str, str, str]] = []
        if vat:
            candidates.append(("vat", vat, vat))
        for iban in dict.fromkeys([*ibans, *([fields.iban] if fields.iban else [])]):
            candidates.append(("iban", normalize_iban(iban), mask_iban(normalize_iban(iban))))
        domain = self.sender_key(sender_domain)
        if domain:
            candidates.append(("domain", domain, domain))
        name = name_key(fields.seller)
        if name:
            candidates.append(("name", name, fields.seller or name))
        conn = self._conn()
        for kind, value, shown in candidates:
            where = "AND k.confirmed_by IS NOT NULL" if kind == "iban" else ""
            rows = conn.execute("SELECT s.id, s.name FROM supplier_keys k JOIN suppliers s ON s.id = k.supplier_id "
                                f"WHERE k.kind = ? AND k.value = ? {where} ORDER BY s.id", (kind, value)).fetchall()
            for row in rows:
                if vat and kind != "vat" and self._other_vat(conn, int(row["id"]), vat):
                    continue  # another company's VAT ID: not this supplier
                return Match(int(row["id"]), str(row["name"]), kind, shown)
        return None

    def name(self, fields: DocumentFields, sender_domain: str = "") -> DocumentFields:
        """``fields`` with the seller named by its supplier (``match`` without IBANs, ``with_supplier``)."""
        return with_supplier(fields, self.match(fields, sender_domain))

    @staticmethod
    def _other_vat(conn: sqlite3.Connection, supplier_id: int, vat: str) -> bool:
        vats = {r[0] for r in conn.execute("SELECT value FROM supplier_keys WHERE supplier_id = ? AND kind = 'vat'",
                                           (supplier_id,))}
        return bool(vats) and vat not in vats

    # -- learning --------------------------------------------------------------------

    def learner(self, message_id: int, sender_domain: str, vouched_by: str | None
                ) -> Callable[[sqlite3.Connection, int, Row], None]:
        """What ``Store.finish_processed`` calls for each new document of a message, in its transaction."""
        domain = self.sender_key(sender_domain)

        def learn(conn: sqlite3.Connection, document_id: int, doc: Row) -> None:
            stored = doc.get("fields") or {}
            values, sources = stored.get("fields") or {}, stored.get("field_sources") or {}
            einvoice = doc.get("einvoice") or {}
            if einvoice.get("seller"):  # the XML's seller, whatever a rule named the document
                self._learn(conn, document_id, message_id, einvoice, domain, vouched_by, None)
            elif (sources.get("seller") or {}).get("source") == "person" and values.get("seller"):
                self._learn(conn, document_id, message_id, dict(values, iban=None), domain, vouched_by,
                            "confirmed by a person")

        return learn

    def learn_confirmed(self, document_id: int, by: str) -> int | None:
        """A person approved a document or corrected its seller: learn the seller as a supplier.

        Returns the supplier's id (None: the document has no seller). The supplier takes the name the
        person confirmed; the document is linked to it.
        """
        doc = self.store.document(document_id)
        if doc is None:
            return None
        stored = json.loads(doc["fields"]) if isinstance(doc.get("fields"), str) else (doc.get("fields") or {})
        values = dict(stored.get("fields") or {})
        values["seller"] = values.get("seller") or doc.get("company")
        if not values["seller"]:
            return None
        message = self.store.message(int(doc["message_id"]))
        from gateway.payment_guard import vouched_by
        from gateway.senderauth.dmarc import org_domain

        domain = self.sender_key(org_domain(sender_domain(message))) if message else ""
        auth = vouched_by(message) if message else None
        values["iban"] = None  # approving a document is not confirming its bank account (confirm-account is)
        with self.store.write() as conn:
            return self._learn(conn, document_id, int(doc["message_id"]), values, domain, auth,
                               f"approved by {by or 'a person'}")

    def confirm_ibans(self, document_id: int, ibans: Sequence[str], by: str) -> bool:
        """A person confirmed a document's bank account(s): they are its supplier's; False when it has none."""
        doc = self.store.document(document_id)
        if doc is None or doc.get("supplier_id") is None or not ibans:
            return False
        with self.store.write() as conn:
            for iban in ibans:
                self._add(conn, int(doc["supplier_id"]), "iban", iban, int(doc["message_id"]), document_id,
                          f"confirmed by {by or 'a person'}")
        return True

    def _learn(self, conn: sqlite3.Connection, document_id: int, message_id: int, values: Mapping[str, Any],
               domain: str, auth: str | None, person: str | None) -> int:
        """Find or create the supplier of ``values`` (seller, seller_vat_id, iban) and learn what is safe.

        ``domain`` is the sender's (``sender_key``), ``auth`` who vouches for the sender (authenticated,
        released) or None, ``person`` who confirmed the seller or None. The domain and the IBAN are learned
        when an authenticated sender speaks for the supplier: its domain is the supplier's, or the supplier
        has none yet; a person who confirms the seller of authenticated mail adds its domain too.
        """
        from gateway.payment_guard import normalize_iban

        name, vat = str(values["seller"]).strip(), vat_key(values.get("seller_vat_id"))
        sid = self._find(conn, vat, name)
        now = iso(utcnow())
        if sid is None:
            cur = conn.execute("INSERT INTO suppliers (name, created, updated, learned_from) VALUES (?, ?, ?, ?)",
                               (name, now, now, f"document {document_id}"))
            sid = int(cur.lastrowid or 0)
        domains = {r[0] for r in conn.execute(
            "SELECT value FROM supplier_keys WHERE supplier_id = ? AND kind = 'domain'", (sid,))}
        speaks = auth is not None and bool(domain) and (not domains or domain in domains)
        if vat:
            self._add(conn, sid, "vat", vat, message_id, document_id)
        self._add(conn, sid, "name", name_key(name), message_id, document_id)
        self._add(conn, sid, "alias", name, message_id, document_id)
        if domain and (speaks or (person and auth is not None)):
            self._add(conn, sid, "domain", domain, message_id, document_id, auth)
        if speaks and values.get("iban"):
            self._add(conn, sid, "iban", normalize_iban(str(values["iban"])), message_id, document_id, auth)
        if person:
            conn.execute("UPDATE suppliers SET name = ? WHERE id = ?", (name, sid))
        conn.execute("UPDATE suppliers SET updated = ? WHERE id = ?", (now, sid))
        # a person's word links the document anew; what was read keeps the supplier it was matched to
        conn.execute(f"UPDATE documents SET supplier_id = ? WHERE id = ? {'' if person else 'AND supplier_id IS NULL'}",
                     (sid, document_id))
        return sid

    @staticmethod
    def _find(conn: sqlite3.Connection, vat: str, name: str) -> int | None:
        if vat:
            row = conn.execute("SELECT supplier_id FROM supplier_keys WHERE kind = 'vat' AND value = ? "
                               "ORDER BY supplier_id LIMIT 1", (vat,)).fetchone()
            if row is not None:
                return int(row[0])
        for row in conn.execute("SELECT supplier_id FROM supplier_keys WHERE kind = 'name' AND value = ? "
                                "ORDER BY supplier_id", (name_key(name),)):
            if not (vat and Suppliers._other_vat(conn, int(row[0]), vat)):
                return int(row[0])
        return None

    @staticmethod
    def _add(conn: sqlite3.Connection, supplier_id: int, kind: str, value: str, message_id: int | None,
             document_id: int | None, confirmed_by: str | None = None) -> None:
        if not value:
            return
        conn.execute(
            "INSERT INTO supplier_keys (supplier_id, kind, value, message_id, document_id, confirmed_by, seen_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (supplier_id, kind, value) DO UPDATE SET "
            "confirmed_by = coalesce(supplier_keys.confirmed_by, excluded.confirmed_by), "
            "message_id = CASE WHEN supplier_keys.confirmed_by IS NULL AND excluded.confirmed_by IS NOT NULL "
            "THEN excluded.message_id ELSE supplier_keys.message_id END",
            (supplier_id, kind, value, message_id, document_id, confirmed_by, iso(utcnow())))

    # -- the IBAN guard --------------------------------------------------------------

    def known_ibans(self, supplier_id: int, *, before_message: int) -> tuple[str, set[str], int] | None:
        """A supplier's confirmed accounts learned before ``before_message``: (name, IBANs, newest message)."""
        conn = self._conn()
        rows = conn.execute("SELECT value, message_id FROM supplier_keys WHERE supplier_id = ? AND kind = 'iban' "
                            "AND confirmed_by IS NOT NULL AND message_id < ?", (supplier_id, before_message)).fetchall()
        name = conn.execute("SELECT name FROM suppliers WHERE id = ?", (supplier_id,)).fetchone()
        if not rows or name is None:
            return None
        return str(name[0]), {str(r[0]) for r in rows}, max(int(r[1]) for r in rows)

    # -- what the admin page and the API show -------------------------------------------

    def list(self) -> list[Row]:
        """Every supplier with its number of documents and totals per currency, by name."""
        conn = self._conn()
        out = []
        for row in conn.execute(f"SELECT s.*, (SELECT count(*) FROM documents d WHERE d.supplier_id = s.id "
                                f"AND {_ONCE}) AS documents FROM suppliers s ORDER BY s.name COLLATE NOCASE, s.id"):
            item = dict(row)
            item["totals"] = self._totals(conn, int(row["id"]))
            out.append(item)
        return out

    def get(self, supplier_id: int) -> Row | None:
        """One supplier with its keys (IBANs masked), documents, totals and totals per month; None when unknown."""
        from gateway.payment_guard import mask_iban

        conn = self._conn()
        row = conn.execute("SELECT * FROM suppliers WHERE id = ?", (supplier_id,)).fetchone()
        if row is None:
            return None
        out = dict(row)
        keys: dict[str, list[Row]] = {k: [] for k in _KINDS}
        for k in conn.execute("SELECT * FROM supplier_keys WHERE supplier_id = ? ORDER BY seen_at, value",
                              (supplier_id,)):
            value = mask_iban(k["value"]) if k["kind"] == "iban" else k["value"]
            keys[k["kind"]].append({"value": value, "confirmed_by": k["confirmed_by"], "message_id": k["message_id"],
                                    "document_id": k["document_id"], "seen_at": k["seen_at"]})
        out.update(aliases=[k["value"] for k in keys["alias"]], vat_ids=[k["value"] for k in keys["vat"]],
                   sender_domains=keys["domain"], ibans=[k for k in keys["iban"] if k["confirmed_by"]],
                   tax_numbers=[k["value"] for k in keys["tax"]])
        docs = [dict(d) for d in conn.execute(
            "SELECT id, filename, doc_date, invoice_number, document_type, fields FROM documents "
            f"WHERE supplier_id = ? AND {_ONCE} ORDER BY coalesce(doc_date, created) DESC, id DESC", (supplier_id,))]
        months: dict[tuple[str, str], Any] = {}
        for d in docs:
            total, currency = _total(d.pop("fields"))
            d.update(total=_money(total) if total is not None else None, currency=currency)
            if total is not None:
                key = ((d["doc_date"] or "")[:7] or "unknown", currency or "")
                months[key] = months.get(key, 0) + total
        out["documents"], out["documents_total"] = docs[:DOCUMENTS_SHOWN], len(docs)
        out["totals"] = self._totals(conn, supplier_id)
        out["months"] = [{"month": m, "currency": c, "total": _money(v)} for (m, c), v in sorted(months.items(),
                                                                                                 reverse=True)]
        return out

    @staticmethod
    def _totals(conn: sqlite3.Connection, supplier_id: int) -> dict[str, str]:
        sums: dict[str, Any] = {}
        for (stored,) in conn.execute(f"SELECT fields FROM documents WHERE supplier_id = ? AND {_ONCE}",
                                      (supplier_id,)):
            total, currency = _total(stored)
            if total is not None:
                sums[currency or ""] = sums.get(currency or "", 0) + total
        return {c: _money(v) for c, v in sorted(sums.items())}


def _total(stored: Any) -> tuple[Any, str | None]:
    """A stored document's total (grand total, else amount due) as a Decimal and its currency."""
    from decimal import Decimal, InvalidOperation

    try:
        values = (json.loads(stored) if isinstance(stored, str) else (stored or {})).get("fields") or {}
        text = values.get("grand_total") or values.get("amount_due")
        return (Decimal(text) if text else None), values.get("currency")
    except (ValueError, InvalidOperation, AttributeError):
        return None, None


def _money(value: Any) -> str:
    return f"{value:.2f}"


def sender_domain(msg: Mapping[str, Any] | None) -> str:
    """The domain of a message's From (else its envelope sender), lower case; "" when none."""
    import email.utils

    if not msg:
        return ""
    addr = email.utils.parseaddr(str(msg.get("sender") or msg.get("mail_from") or ""))[1]
    return addr.rpartition("@")[2].strip().lower() if "@" in addr else ""


def rules_naming(ruleset: Any, supplier: Mapping[str, Any]) -> list[str]:
    """The rules that mention a supplier: its name or an alias in a ``company``/``supplier`` condition or assign.

    A textual match over the loaded rule files (``RuleSet.sources``), by ``names_supplier``.
    """
    import yaml

    names = [str(n) for n in [supplier.get("name"), *(supplier.get("aliases") or [])] if n]
    found: list[str] = []
    for _path, content in getattr(ruleset, "sources", ()) or ():
        try:
            docs = list(yaml.safe_load_all(content))
        except yaml.YAMLError:
            continue
        for doc in docs:
            rules = doc.get("rules") if isinstance(doc, dict) and "rules" in doc else [doc]
            for rule in rules if isinstance(rules, list) else []:
                if not isinstance(rule, dict):
                    continue
                texts = _company_texts({"when": rule.get("when"), "assign": rule.get("assign")})
                if any(names_supplier(t, names) for t in texts) and str(rule.get("name")) not in found:
                    found.append(str(rule.get("name")))
    return found


def names_supplier(value: str, names: Sequence[str]) -> bool:
    """Whether a rule's ``company``/``supplier`` value names one of ``names``.

    ``re:`` a regular expression found in the name; a glob (``*``, ``?``) matching it; else text
    found in the name as whole words ("Muster"), or text holding the name's key as whole words
    ("Muster Bürobedarf, Berlin"); the text's key has three characters at least.
    """
    import fnmatch

    if value.startswith("re:"):
        try:
            pattern = re.compile(value[3:], re.I)
        except re.error:
            return False
        return any(pattern.search(n) for n in names)
    if "*" in value or "?" in value:
        return any(fnmatch.fnmatchcase(n.casefold(), value.casefold()) for n in names)
    key, text = name_key(value), " ".join(_words(value))
    if len(key) < 3:
        return False
    for n in names:  # the rule's text in the name ("Muster"), or the name in the rule's text
        if f" {text} " in f" {' '.join(_words(n))} " or (len(name_key(n)) >= 3 and f" {name_key(n)} " in f" {key} "):
            return True
    return False


def _company_texts(part: Any) -> list[str]:
    """The values under ``company``/``supplier`` keys anywhere in a rule's parsed parts."""
    out: list[str] = []
    if isinstance(part, Mapping):
        for k, v in part.items():
            if str(k) in ("company", "supplier", "seller"):
                out.extend(_strings(v))
            else:
                out.extend(_company_texts(v))
    elif isinstance(part, (list, tuple)):
        for item in part:
            out.extend(_company_texts(item))
    return out


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, (list, tuple, set, frozenset)):
        return [s for v in value for s in _strings(v)]
    return [str(value)] if value is not None and not isinstance(value, bool) else []
