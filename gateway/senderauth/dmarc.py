"""DMARC (RFC 7489): the From domain's policy and whether SPF or DKIM align with it.

The organizational domain comes from the Public Suffix List bundled with
the publicsuffixlist package (updated with each release); nothing is
downloaded at run time.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway.senderauth.dns import DNSTempError, Resolver


@functools.lru_cache(maxsize=1)
def _psl() -> Any:
    from publicsuffixlist import PublicSuffixList

    return PublicSuffixList()


def org_domain(domain: str) -> str:
    """The organizational domain (``mail.acme.co.uk`` -> ``acme.co.uk``); the name itself when unknown."""
    domain = domain.strip().rstrip(".").lower()
    if not domain:
        return ""
    try:
        found = _psl().privatesuffix(domain)
    except Exception:
        found = None
    return str(found) if found else domain


def aligned(a: str, b: str, mode: str = "r") -> bool:
    """Whether two domains align: ``s`` the same name, ``r`` the same organizational domain."""
    a, b = a.strip().rstrip(".").lower(), b.strip().rstrip(".").lower()
    if not a or not b:
        return False
    return a == b if mode == "s" else org_domain(a) == org_domain(b)


@dataclass(frozen=True)
class DMARCRecord:
    """A parsed ``v=DMARC1`` record.

    Attributes:
        domain: where it was found (the From domain or its organizational domain).
        policy: p= (none, quarantine, reject), or sp= when found at the organizational domain.
        adkim: DKIM alignment, ``r`` (relaxed) or ``s`` (strict).
        aspf: SPF alignment, ``r`` or ``s``.
    """

    domain: str
    policy: str
    adkim: str = "r"
    aspf: str = "r"


@dataclass(frozen=True)
class DMARCResult:
    """The DMARC verdict for one message.

    Attributes:
        result: pass, fail, none (no record), temperror or permerror.
        domain: the From domain ("" when the mail has no usable From).
        policy: the policy that applies ("" without a record).
        reason: in words, what aligned or why nothing did.
    """

    result: str
    domain: str
    policy: str
    reason: str

    def json(self) -> dict[str, str]:
        """The result as stored in messages.auth."""
        return {"result": self.result, "domain": self.domain, "policy": self.policy, "reason": self.reason}


def _parse(text: str, domain: str, at_org: bool) -> DMARCRecord | None:
    tags: dict[str, str] = {}
    for part in text.split(";"):
        key, eq, value = part.partition("=")
        if eq:
            tags.setdefault(key.strip().lower(), value.strip().lower())
    if tags.get("v") != "dmarc1":
        return None
    policy = tags.get("p", "")
    if at_org and tags.get("sp"):
        policy = tags["sp"]
    if policy not in ("none", "quarantine", "reject"):
        raise ValueError(f"p={policy!r} is not none, quarantine or reject")
    return DMARCRecord(domain, policy, "s" if tags.get("adkim") == "s" else "r",
                       "s" if tags.get("aspf") == "s" else "r")


def find_record(resolver: Resolver, from_domain: str) -> DMARCRecord | None:
    """The DMARC record for ``from_domain`` (RFC 7489 6.6.3); None when there is none.

    Raises DNSTempError when DNS failed and ValueError for a broken record.
    """
    org = org_domain(from_domain)
    for name, at_org in ((from_domain, False), (org, True)):
        if at_org and org == from_domain:
            break
        texts = [b"".join(r).decode("utf-8", "replace") for r in resolver.lookup(f"_dmarc.{name}", "TXT")]
        records = [t for t in texts if t.strip().lower().startswith("v=dmarc1")]
        if len(records) > 1:
            raise ValueError(f"_dmarc.{name} has {len(records)} DMARC records (one is allowed)")
        if records:
            return _parse(records[0], name, at_org and name != from_domain)
    return None


def check_dmarc(resolver: Resolver, from_domain: str, spf_result: str, spf_domain: str,
                dkim: Sequence[tuple[str, str]]) -> DMARCResult:
    """DMARC for a message from ``from_domain``; ``dkim`` holds (result, signing domain) pairs."""
    if not from_domain:
        return DMARCResult("permerror", "", "", "the mail has no single From address with a domain")
    try:
        record = find_record(resolver, from_domain)
    except DNSTempError as exc:
        return DMARCResult("temperror", from_domain, "", f"DMARC record lookup failed: {exc}")
    except ValueError as exc:
        return DMARCResult("permerror", from_domain, "", f"broken DMARC record: {exc}")
    if record is None:
        return DMARCResult("none", from_domain, "", f"{from_domain} publishes no DMARC record")
    for result, domain in dkim:
        if result == "pass" and aligned(domain, from_domain, record.adkim):
            return DMARCResult("pass", from_domain, record.policy, f"DKIM signature of {domain} aligns with From")
    if spf_result == "pass" and aligned(spf_domain, from_domain, record.aspf):
        return DMARCResult("pass", from_domain, record.policy, f"SPF pass for {spf_domain} aligns with From")
    if any(r == "temperror" for r, _ in dkim) or spf_result == "temperror":
        return DMARCResult("temperror", from_domain, record.policy, "a DKIM or SPF check failed temporarily")
    return DMARCResult("fail", from_domain, record.policy,
                       "neither an aligned DKIM signature nor aligned SPF passed")
