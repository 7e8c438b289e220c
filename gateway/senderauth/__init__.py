"""Sender authentication: is the mail really from the domain in its From?

Runs in the pipeline, never on the SMTP path. For mail received by SMTP the
gateway checks SPF (the client's IP against the envelope sender), every DKIM
signature, and DMARC alignment of the From domain. For mail fetched by IMAP
it believes the provider's own Authentication-Results header: only the
topmost one, and only from an authserv-id trusted for that mailbox. Other
sources (hot folders, ``import``) carry no proof.

The outcome is stored as messages.auth (JSON)::

    {"spf": {...}, "dkim": [{...}], "dmarc": {...}, "authenticated": true|false|null,
     "reason": "...", "header": "gateway.example; spf=pass ...", "temporary": false}

``authenticated`` is True on DMARC pass or a DKIM pass aligned with From;
None when it cannot be known (a DNS failure: ``temperror``, or no trusted
header); False otherwise. A DNS failure is never a refusal.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from gateway.config import Settings
from gateway.models import ParsedMessage
from gateway.senderauth import authres, recheck
from gateway.senderauth.dkim import DKIMResult, check_dkim
from gateway.senderauth.dmarc import DMARCResult, aligned, check_dmarc, org_domain
from gateway.senderauth.dns import DnsPythonResolver, DNSTempError, Resolver, StubResolver
from gateway.senderauth.spf import SPFResult, check_spf
from gateway.store import iso, utcnow

__all__ = [
    "PROVIDER_AUTHSERV_IDS", "DNSTempError", "DnsPythonResolver", "Resolver", "SenderAuth", "StubResolver",
    "aligned", "authres", "check_dkim", "check_dmarc", "check_spf", "from_domain", "org_domain",
]

log = logging.getLogger(__name__)

# Whose Authentication-Results to believe, by mailbox provider (globs; "": no authserv-id).
PROVIDER_AUTHSERV_IDS: dict[str, tuple[str, ...]] = {
    "gmail": ("mx.google.com",),
    # Microsoft 365 and Outlook.com write their header without an authserv-id
    "outlook": ("", "mx.microsoft.com"),
    "fastmail": ("*.messagingengine.com",),
    "icloud": ("*.icloud.com", "icloud.com", "*.me.com"),
    "yahoo": ("*.yahoo.com",),
    "aol": ("*.aol.com", "*.yahoo.com"),
}


def from_domain(parsed: ParsedMessage) -> str:
    """The domain of the single From address ("" when there is none, or several)."""
    froms = [v for k, v in parsed.headers if k.lower() == "from"]
    if len(froms) != 1 or parsed.sender is None or "@" not in parsed.sender.addr:
        return ""
    return parsed.sender.addr.rpartition("@")[2].strip().rstrip(".>").lower()


class SenderAuth:
    """Checks or reads sender authentication for a message (see the module docstring)."""

    def __init__(self, settings: Settings, resolver: Resolver | None = None) -> None:
        trust = settings.trust
        self.enabled = trust.check_senders
        self.authserv_id = trust.authserv_id or settings.smtp.hostname
        self.timeout = trust.dns_timeout
        self.resolver: Resolver = resolver or DnsPythonResolver(trust.dns_servers, trust.dns_timeout)
        self.mailboxes = {m.name: m for m in settings.mailboxes}

    def for_message(self, raw: bytes, parsed: ParsedMessage, row: Mapping[str, Any]) -> dict[str, Any] | None:
        """The result to store for a message, or None to keep what is stored (or nothing).

        A stored result is kept (DKIM keys rotate: checking again later could
        fail a mail that passed), unless it was temporary (a DNS failure).
        """
        stored = row.get("auth")
        before: dict[str, Any] = {}
        if stored:
            try:
                before = json.loads(stored)
                if not before.get("temporary"):
                    return None
            except (ValueError, AttributeError):
                before = {}
        source = str(row.get("source") or "")
        if source == "smtp" and self.enabled:
            result = self.check(raw, parsed, peer=row.get("peer"), mail_from=str(row.get("mail_from") or ""))
            if result["temporary"]:
                # the backoff of automatic re-checks counts from the first check
                result["first_checked_at"] = before.get("first_checked_at") or before.get("checked_at") \
                    or result["checked_at"]
                result["reason"] += "; " + recheck.describe(result)
            return result
        if source.startswith("imap:"):
            return self.from_provider(parsed, source.partition(":")[2])
        return None

    # -- SMTP: check it ourselves -------------------------------------------------------

    def check(self, raw: bytes, parsed: ParsedMessage, *, peer: str | None, mail_from: str) -> dict[str, Any]:
        """SPF, DKIM and DMARC for a message received by SMTP."""
        domain = from_domain(parsed)
        spf = check_spf(self.resolver, peer, mail_from)
        try:
            dkim = check_dkim(self.resolver, raw, self.timeout)
        except Exception as exc:  # never let a verifier bug stop the mail
            log.exception("DKIM verification crashed")
            dkim = [DKIMResult("temperror", "", "", f"DKIM check failed: {type(exc).__name__}")]
        dmarc = check_dmarc(self.resolver, domain, spf.result, spf.domain, [(d.result, d.domain) for d in dkim])
        return self._outcome(spf, dkim, dmarc, domain, mail_from)

    def _outcome(self, spf: SPFResult, dkim: list[DKIMResult], dmarc: DMARCResult, domain: str,
                 mail_from: str) -> dict[str, Any]:
        aligned_pass = [d for d in dkim if d.result == "pass" and domain and aligned(d.domain, domain)]
        temporary = dmarc.result == "temperror" or (
            dmarc.result != "pass" and not aligned_pass
            and (spf.result == "temperror" or any(d.result == "temperror" for d in dkim)))
        authenticated: bool | None
        if dmarc.result == "pass":
            authenticated, reason = True, f"DMARC pass for {domain}: {dmarc.reason}"
        elif aligned_pass:
            authenticated, reason = True, f"DKIM pass for {aligned_pass[0].domain}, aligned with From {domain}"
        elif temporary:
            authenticated, reason = None, "not known: a DNS lookup failed temporarily (temperror)"
        else:
            authenticated = False
            words = [f"SPF {spf.result}" + (f" ({spf.ip} for {spf.domain})" if spf.domain and spf.ip else ""),
                     "DKIM " + (", ".join(f"{d.result} ({d.domain or '?'})" + (f": {d.reason}" if d.result == "policy" else "")
                                           for d in dkim) or "none"),
                     f"DMARC {dmarc.result}" + (f" (p={dmarc.policy})" if dmarc.policy else "")]
            reason = "not authenticated: " + "; ".join(words)
        results = [authres.ResInfo("spf", spf.result, {"smtp.mailfrom": mail_from.strip("<>") or spf.domain})]
        results += [authres.ResInfo("dkim", d.result, {"header.d": d.domain, "header.s": d.selector}) for d in dkim] or [
            authres.ResInfo("dkim", "none")]
        results.append(authres.ResInfo("dmarc", dmarc.result, {"header.from": domain}))
        return {
            "source": "smtp",
            "spf": spf.json(),
            "dkim": [d.json(d in aligned_pass) for d in dkim],
            "dmarc": dmarc.json(),
            "authenticated": authenticated,
            "reason": reason,
            "header": authres.format_header(self.authserv_id, results),
            "temporary": temporary,
            "checked_at": iso(utcnow()),
        }

    # -- IMAP: believe the provider -------------------------------------------------------

    def trusted_ids(self, mailbox: str) -> tuple[str, ...]:
        """The authserv-ids trusted for a mailbox (its setting, else its provider's default)."""
        cfg = self.mailboxes.get(mailbox)
        if cfg is None:
            return ()
        if cfg.trusted_authserv_ids is not None:
            return cfg.trusted_authserv_ids
        return PROVIDER_AUTHSERV_IDS.get(cfg.provider or "", ())

    def from_provider(self, parsed: ParsedMessage, mailbox: str) -> dict[str, Any]:
        """What the mailbox provider's Authentication-Results header says (the topmost one, if trusted)."""
        patterns = self.trusted_ids(mailbox)
        values = [v for k, v in parsed.headers if k.lower() == "authentication-results"]
        top = authres.topmost_trusted(values, patterns) if patterns else None
        domain = from_domain(parsed)
        base: dict[str, Any] = {"source": f"imap:{mailbox}", "temporary": False, "checked_at": iso(utcnow())}
        if top is None:
            why = ("no trusted authserv-id is configured for this mailbox (mailboxes[].trusted_authserv_ids)"
                   if not patterns else
                   f"the topmost Authentication-Results header is not from a trusted server ({', '.join(p or '(none)' for p in patterns)})"
                   if values else "the mail has no Authentication-Results header")
            return {**base, "spf": None, "dkim": [], "dmarc": None, "authenticated": None,
                    "reason": f"not known: {why}", "header": values[0] if values else ""}
        # only the topmost header: a method it does not report is not reported (headers below may be forged)
        first: dict[str, authres.ResInfo] = {}
        for r in top.results:
            first.setdefault(r.method, r)
        dkims = [r for r in top.results if r.method == "dkim"]
        spf, dmarc = first.get("spf"), first.get("dmarc")
        dkim_json: list[dict[str, Any]] = []
        aligned_pass = None
        for d in dkims:
            d_domain = (d.props.get("header.d") or d.props.get("header.i", "").rpartition("@")[2]).lower()
            ok = d.result == "pass" and bool(domain) and aligned(d_domain, domain)
            aligned_pass = aligned_pass or (d_domain if ok else None)
            dkim_json.append({"result": d.result, "domain": d_domain, "selector": d.props.get("header.s", ""),
                              "aligned": ok, "reason": ""})
        dmarc_from = (dmarc.props.get("header.from", "") if dmarc else "").lower()
        authenticated: bool | None
        if dmarc is not None and dmarc.result == "pass" and domain and (not dmarc_from or dmarc_from == domain):
            authenticated, reason = True, f"DMARC pass for {domain}, says {top.authserv_id or 'the provider'}"
        elif aligned_pass:
            authenticated, reason = True, f"DKIM pass for {aligned_pass}, aligned with From {domain}, says {top.authserv_id or 'the provider'}"
        elif dmarc is not None and dmarc.result == "temperror":
            authenticated, reason = None, "not known: the provider's DMARC check failed temporarily"
        else:
            authenticated = False
            reason = (f"not authenticated according to {top.authserv_id or 'the provider'}: "
                      f"SPF {spf.result if spf else 'not reported'}; "
                      f"DKIM {', '.join(d['result'] for d in dkim_json) or 'not reported'}; "
                      f"DMARC {dmarc.result if dmarc else 'not reported'}")
        return {**base,
                "spf": {"result": spf.result, "domain": spf.props.get("smtp.mailfrom", "").rpartition("@")[2],
                        "ip": "", "reason": ""} if spf else None,
                "dkim": dkim_json,
                "dmarc": {"result": dmarc.result, "domain": dmarc_from or domain, "policy": "", "reason": ""}
                if dmarc else None,
                "authenticated": authenticated, "reason": reason, "header": values[0]}
