"""The IBAN guard: warn when an invoice asks to pay into a different account than before.

Invoice fraud ("your supplier has a new bank account") works by changing the
IBAN and nothing else. For every new document the guard takes the IBANs it
carries (the e-invoice's payment account, or IBANs printed in a PDF's text,
checked with ISO 13616 mod-97) and compares them with the IBANs last seen
for the same seller, known by VAT ID, by name, or by the sender's domain.
A difference flags the document (``payment_details_changed``, with the
IBANs masked, and a warning); nothing is held or refused.

The guard learns a seller's account only from mail whose sender is
authenticated for that seller (the authenticated From domain is one the
seller is known to write from, and no freemail domain) or from a person
(``confirm-account``, or releasing a held mail). Until an account is
confirmed, the first one seen for the seller is what new ones are compared
with: an attacker's second invoice with the same new IBAN is flagged again.
"""

from __future__ import annotations

import email.utils
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.store import Store

if TYPE_CHECKING:
    from gateway.fields.suppliers import Suppliers

# ISO 13616 lengths of the IBAN per country (SWIFT registry).
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29,
    "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}
_START = re.compile(r"(?<![A-Z0-9])([A-Z]{2})[ \u00a0]?(\d{2})")
_SEP = " \u00a0-"
# Mail services many unrelated sellers send from: their domain says nothing about the seller.
FREEMAIL = frozenset({
    "gmail.com", "googlemail.com", "outlook.com", "hotmail.com", "live.com", "msn.com", "yahoo.com", "icloud.com",
    "me.com", "aol.com", "gmx.de", "gmx.net", "web.de", "t-online.de", "mailbox.org", "posteo.de", "proton.me",
    "protonmail.com", "fastmail.com", "zoho.com",
})


def iban_valid(iban: str) -> bool:
    """Whether ``iban`` (no spaces) has its country's length and passes the mod-97 check."""
    if len(iban) < 15 or IBAN_LENGTHS.get(iban[:2]) not in (None, len(iban)) or not iban.isalnum():
        return False
    digits = "".join(str(int(c, 36)) for c in iban[4:] + iban[:4])
    return int(digits) % 97 == 1


def normalize_iban(text: str) -> str:
    """An IBAN without spaces or dashes, upper case."""
    return re.sub(r"[\s\-]", "", text).upper()


def format_iban(iban: str) -> str:
    """An IBAN in groups of four, as printed (``DE89 3704 0044 0532 0130 00``)."""
    return " ".join(iban[i:i + 4] for i in range(0, len(iban), 4))


def mask_iban(iban: str) -> str:
    """An IBAN with its country, check digits and last four characters shown (``DE89 **** **** **** **30 00``).

    The check digits depend on the whole IBAN, so two different accounts
    almost never look alike masked, while the account number stays out of
    exports and logs.
    """
    return format_iban(iban[:4] + "*" * max(0, len(iban) - 8) + iban[4:][-4:])


def find_ibans(text: str) -> list[str]:
    """The valid IBANs printed in ``text``, in order, each once."""
    found: list[str] = []
    upper = text.upper()
    for m in _START.finditer(upper):
        country = m.group(1)
        length = IBAN_LENGTHS.get(country)
        if length is None:
            continue
        chars, pos = [country, m.group(2)], m.end()
        need = length - 4
        while need and pos < len(upper):
            c = upper[pos]
            if c.isascii() and c.isalnum():
                chars.append(c)
                need -= 1
            elif c not in _SEP or (pos + 1 < len(upper) and upper[pos + 1] in _SEP):
                break  # one separator between groups, no more
            pos += 1
        if need or (pos < len(upper) and upper[pos].isascii() and upper[pos].isalnum()):
            continue
        iban = "".join(chars)
        if iban_valid(iban) and iban not in found:
            found.append(iban)
    return found


def seller_keys(einvoice: Mapping[str, str] | None, sender_domain: str, own_domains: Iterable[str] = ()) -> list[str]:
    """How a document's seller is known, most specific first: VAT ID, name, sender domain."""
    from gateway.senderauth.dmarc import org_domain

    keys = []
    inv = einvoice or {}
    vat = re.sub(r"[\s.\-]", "", inv.get("seller_vat_id") or "").upper()
    if vat:
        keys.append(f"vat:{vat}")
    name = " ".join((inv.get("seller") or "").casefold().split())
    if name:
        keys.append(f"name:{name}")
    domain = org_domain(sender_domain) if sender_domain else ""
    if domain and domain not in FREEMAIL and domain not in {org_domain(d) for d in own_domains}:
        keys.append(f"domain:{domain}")
    return keys


def _domain_of(text: str) -> str:
    """The domain of a stored sender domain or From ("Name <a@b.example>" -> "b.example")."""
    if "@" not in text:
        return text
    return email.utils.parseaddr(text)[1].rpartition("@")[2].strip().rstrip(".>").lower()


def vouched_by(row: Mapping[str, Any]) -> str | None:
    """Who vouches for a stored message's sender: a person who released it, or its authentication; else None."""
    if row.get("released_at"):
        return f"released by {row.get('released_by') or 'a person'}"
    auth = row.get("auth")
    try:
        result = json.loads(auth) if isinstance(auth, str) else auth
    except ValueError:
        return None
    return "authenticated sender" if isinstance(result, dict) and result.get("authenticated") is True else None


class PaymentGuard:
    """Compares the IBANs of new documents with the account known for their seller, and learns only from proof."""

    def __init__(self, store: Store, text_of: Callable[[bytes], str], own_domains: Iterable[str] = (),
                 suppliers: Suppliers | None = None) -> None:
        from gateway.fields.suppliers import Suppliers

        self.store = store
        self.text_of = text_of
        self.own_domains = tuple(own_domains)
        self.suppliers = suppliers or Suppliers(store, self.own_domains)

    def ibans_of(self, kind: str, data: bytes, einvoice: Any) -> list[str]:
        """The IBANs a document carries: the e-invoice's, else those printed in a PDF."""
        iban = getattr(einvoice, "iban", None) if einvoice is not None else None
        if iban:
            return [normalize_iban(str(iban))]
        if kind == "pdf":
            return find_ibans(self.text_of(data))
        return []

    def vouched(self, key: str, message_id: int, sender_domain: str, authenticated: bool) -> bool:
        """Whether an authenticated sender speaks for the seller ``key``: its domain is the seller's.

        A seller never seen before takes the authenticated domain as its own.
        """
        from gateway.senderauth.dmarc import org_domain

        domain = org_domain(sender_domain) if sender_domain else ""
        if not authenticated or not domain or domain in FREEMAIL or domain in {org_domain(d) for d in self.own_domains}:
            return False  # anyone can authenticate as somebody at a freemail domain
        known = self.store.seller_domains(key, before_message=message_id)
        return known is None or domain in {org_domain(_domain_of(d)) for d in known}

    def review(self, message_id: int, docs: Sequence[tuple[dict[str, Any], list[str]]],
               sender_domain: str, vouched_by: str | None = None) -> list[tuple[str, str, str | None]]:
        """Flag ``docs`` ((document row, its IBANs) pairs) whose IBAN is not the one known for their seller.

        ``vouched_by`` says who vouches for the sender ("authenticated", "released by anna"), None
        for nobody. Returns the (seller key, IBAN, confirmed by or None) to record once the documents
        are stored: confirmed only where the sender is vouched for as that seller (``vouched``).
        """
        records: list[tuple[str, str, str | None]] = []
        for doc, ibans in docs:
            if not ibans:
                continue
            keys = seller_keys(doc.get("einvoice"), sender_domain, self.own_domains)
            for k in keys:
                by = vouched_by if self.vouched(k, message_id, sender_domain, vouched_by is not None) else None
                records += [(k, i, by) for i in ibans]
            known = self.store.known_ibans(keys, before_message=message_id) if keys else None
            supplier = (self.suppliers.known_ibans(int(doc["supplier_id"]), before_message=message_id)
                        if doc.get("supplier_id") is not None and (known is None or not known[3]) else None)
            if supplier is not None:  # the document's own keys know no confirmed account; its supplier does
                known = (f"supplier:{supplier[0]}", supplier[1], supplier[2], True)
            if known is None:
                continue
            key, before, seen_in, confirmed = known
            new = [i for i in ibans if i not in before]
            if new:
                previous = sorted(before)
                seen = self.store.message(seen_in)
                doc["payment_details_changed"] = {
                    "iban": mask_iban(new[0]),
                    "previous_ibans": [mask_iban(i) for i in previous],
                    "seller": key.replace(":", " ", 1),
                    "previous_message_id": seen_in,
                    "previous_seen_at": seen["received"] if seen is not None else None,
                }
                was = (" or " if supplier is not None else ", ").join(mask_iban(i) for i in previous)
                where = (f"last confirmed for {key.replace(':', ' ', 1)} in message #{seen_in}" if confirmed else
                         f"first seen for {key.replace(':', ' ', 1)} in message #{seen_in}; no account of this "
                         "seller is confirmed yet")
                doc["warnings"] = [*doc.get("warnings", []),
                                   f"payment details changed: IBAN {mask_iban(new[0])} was {was} ({where}); "
                                   "confirm the new account with the seller by phone before paying "
                                   "(then: invoice-gateway confirm-account DOCUMENT_ID)"]
        return list(dict.fromkeys(records))

    def record(self, message_id: int, records: Sequence[tuple[str, str, str | None]], sender_domain: str) -> None:
        """Remember what ``review`` returned, once the message's documents are stored."""
        from gateway.senderauth.dmarc import org_domain

        self.store.record_ibans(message_id, records, org_domain(sender_domain) if sender_domain else "")

    def confirm(self, document_id: int, by: str, data_dir: Path) -> list[str]:
        """A person confirmed a document's bank account(s) with the seller: remember them; returns them masked.

        Raises StoreError when the document does not exist or carries no IBAN of a known seller.
        """
        from gateway.errors import StoreError

        doc = self.store.document(document_id)
        if doc is None:
            raise StoreError(f"no document {document_id}")
        inv = json.loads(doc["einvoice"]) if isinstance(doc.get("einvoice"), str) else doc.get("einvoice")
        if inv and inv.get("iban"):
            ibans = [normalize_iban(str(inv["iban"]))]
        elif doc.get("kind") == "pdf":
            try:
                ibans = find_ibans(self.text_of((data_dir / doc["path"]).read_bytes()))
            except OSError as exc:
                raise StoreError(f"document {document_id}: its file cannot be read: {exc.strerror}") from exc
        else:
            ibans = []
        # a second confirmation changes nothing and is fine; a document whose seller is not known
        # (no VAT ID, name or own domain) has nothing the guard remembers
        self.store.confirm_ibans(document_id, ibans, f"confirmed by {by or 'a person'}")
        of_supplier = self.suppliers.confirm_ibans(document_id, ibans, by)  # keyed on its supplier too
        if not ibans or not (self.store.ibans_recorded(document_id, ibans) or of_supplier):
            raise StoreError(f"document {document_id} carries no IBAN of a known seller: nothing to confirm")
        return [mask_iban(i) for i in ibans]
