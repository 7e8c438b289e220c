"""SPF (RFC 7208) of the connecting IP against the envelope sender, with pyspf.

pyspf asks DNS through its module function ``spf.DNSLookup`` (pyspf itself
sets it to its dnspython or pydns driver); it is pointed once at a function
that asks the Resolver of the check in progress (a context variable), so
each check uses the resolver it was given and tests need no network.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import Any

import spf as pyspf

from gateway.senderauth.dns import DNSTempError, Resolver

_resolver: contextvars.ContextVar[Resolver | None] = contextvars.ContextVar("spf_resolver", default=None)
_original_lookup = pyspf.DNSLookup
# The whole SPF evaluation may take this long (RFC 7208 4.6.4 suggests at least 20 s).
SPF_TIME_LIMIT = 20.0


def _lookup(name: str, qtype: str, strict: Any = True, timeout: Any = None) -> list[tuple[tuple[str, str], Any]]:
    resolver = _resolver.get()
    if resolver is None:  # someone else in the process uses pyspf: leave it alone
        return list(_original_lookup(name, qtype, strict, timeout))
    try:
        records = resolver.lookup(name, qtype)
    except DNSTempError as exc:
        raise pyspf.TempError(f"DNS {exc}") from exc
    return [((name, qtype), r) for r in records]


pyspf.DNSLookup = _lookup


@dataclass(frozen=True)
class SPFResult:
    """The SPF verdict for one message.

    Attributes:
        result: pass, fail, softfail, neutral, none, temperror or permerror.
        domain: the domain checked (of the envelope sender), "" when there is none.
        ip: the connecting client's IP, "" when unknown.
        reason: pyspf's explanation, or why nothing was checked.
    """

    result: str
    domain: str
    ip: str
    reason: str

    def json(self) -> dict[str, str]:
        """The result as stored in messages.auth."""
        return {"result": self.result, "domain": self.domain, "ip": self.ip, "reason": self.reason}


def check_spf(resolver: Resolver, ip: str | None, mail_from: str, helo: str | None = None,
              time_limit: float = SPF_TIME_LIMIT) -> SPFResult:
    """Whether ``ip`` may send for the domain of ``mail_from`` (RFC 7208)."""
    sender = mail_from.strip().strip("<>")
    domain = sender.rpartition("@")[2].lower() if "@" in sender else ""
    if not ip:
        return SPFResult("none", domain, "", "no client IP is known for this message")
    if not domain:
        return SPFResult("none", "", ip, "null envelope sender (a bounce); nothing to check")
    token = _resolver.set(resolver)
    try:
        query = pyspf.query(i=ip, s=sender, h=helo or domain, querytime=time_limit)
        result, _code, explanation = query.check()
    except Exception as exc:  # pyspf is defensive, but a bug there must not stop the mail
        return SPFResult("temperror", domain, ip, f"SPF check failed: {type(exc).__name__}: {exc}")
    finally:
        _resolver.reset(token)
    return SPFResult(str(result), domain, ip, str(explanation))
