"""DNS for sender authentication: one small interface, dnspython behind it, a stub for tests.

Every check (SPF, DKIM, DMARC) asks a ``Resolver``. A failure that may pass
(timeout, SERVFAIL, no server reachable) raises ``DNSTempError`` and becomes
the result ``temperror``, never a refusal; a name that does not exist is an
empty answer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

RDTYPES = ("TXT", "A", "AAAA", "MX", "PTR")


class DNSTempError(Exception):
    """A DNS lookup failed in a way that may pass (timeout, SERVFAIL, no server)."""


class Resolver(Protocol):
    """Answers DNS questions for the sender checks.

    ``lookup`` returns, per record: TXT a tuple of byte strings, A and AAAA
    the address text, MX ``(preference, exchange)``, PTR the name. No such
    name or no such record: ``[]``. A failure that may pass: DNSTempError.
    """

    def lookup(self, name: str, rdtype: str) -> list[Any]:
        """The records of type ``rdtype`` at ``name``."""
        ...


def _name(name: str) -> str:
    return name.strip().rstrip(".").lower()


class DnsPythonResolver:
    """The real resolver: dnspython with a timeout per question.

    After three timeouts in a row it answers DNSTempError at once for 15
    seconds, so that an unreachable DNS server costs seconds, not minutes,
    while mail keeps coming (the checks then say ``temperror``).
    """

    BACKOFF_AFTER = 3
    BACKOFF_SECONDS = 15.0

    def __init__(self, servers: Iterable[str] = (), timeout: float = 3.0) -> None:
        self.servers = tuple(servers)
        self.timeout = timeout
        self._resolver: Any = None
        self._lock = threading.Lock()
        self._timeouts = 0
        self._down_until = 0.0

    def _get(self) -> Any:
        import dns.resolver

        with self._lock:
            if self._resolver is None:
                try:
                    resolver = dns.resolver.Resolver(configure=not self.servers)
                except dns.resolver.NoResolverConfiguration as exc:
                    raise DNSTempError("no DNS server is configured (/etc/resolv.conf; or set trust.dns_servers)") from exc
                if self.servers:
                    resolver.nameservers = list(self.servers)
                resolver.timeout = self.timeout
                resolver.lifetime = self.timeout
                # suppliers write again and again: answers (NXDOMAIN too) are kept for
                # their TTL, so a busy day costs a few queries per domain, not per mail
                resolver.cache = dns.resolver.LRUCache(4096)
                self._resolver = resolver
            return self._resolver

    def lookup(self, name: str, rdtype: str) -> list[Any]:
        """The records of type ``rdtype`` at ``name`` (see Resolver)."""
        import dns.exception
        import dns.resolver

        if time.monotonic() < self._down_until:
            raise DNSTempError("DNS did not answer recently; not asking again yet")
        resolver = self._get()
        try:
            answer = resolver.resolve(_name(name) + ".", rdtype, search=False, raise_on_no_answer=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            self._timeouts = 0
            return []
        except (dns.exception.Timeout, dns.resolver.LifetimeTimeout) as exc:
            self._timeouts += 1
            if self._timeouts >= self.BACKOFF_AFTER:
                self._down_until = time.monotonic() + self.BACKOFF_SECONDS
            raise DNSTempError(f"{rdtype} {name}: no answer within {self.timeout:g} s") from exc
        except dns.resolver.NoNameservers as exc:
            raise DNSTempError(f"{rdtype} {name}: the DNS servers failed (SERVFAIL)") from exc
        except dns.resolver.NoResolverConfiguration as exc:
            raise DNSTempError("no DNS server is configured") from exc
        except dns.exception.DNSException:
            return []  # a malformed name (label too long, ...): it cannot exist
        self._timeouts = 0
        return [_convert(rdtype, r) for r in (answer.rrset or ())]


def _convert(rdtype: str, rdata: Any) -> Any:
    if rdtype == "TXT":
        return tuple(rdata.strings)
    if rdtype in ("A", "AAAA"):
        return str(rdata.address)
    if rdtype == "MX":
        return int(rdata.preference), rdata.exchange.to_text(omit_final_dot=True)
    return rdata.target.to_text(omit_final_dot=True)


class StubResolver:
    """A resolver that answers from a table: the fake for tests and offline runs.

    ``records`` maps ``(name, rdtype)`` to answers: TXT as text (one record)
    or a list of texts, the rest as the lists Resolver describes. Names in
    ``failing`` raise DNSTempError; everything else is an empty answer.
    ``queries`` records every question asked.
    """

    def __init__(self, records: Mapping[tuple[str, str], Any] | None = None,
                 failing: Iterable[str] = ()) -> None:
        self.records: dict[tuple[str, str], list[Any]] = {}
        self.failing = {_name(n) for n in failing}
        self.queries: list[tuple[str, str]] = []
        for (name, rdtype), value in (records or {}).items():
            self.add(name, rdtype, value)

    def add(self, name: str, rdtype: str, value: Any) -> None:
        """Add answers for ``name``."""
        rdtype = rdtype.upper()
        values = value if isinstance(value, list) else [value]
        if rdtype == "TXT":
            # long TXT values are several strings of at most 255 bytes, as in DNS
            values = [tuple(v.encode()[i:i + 255] for i in range(0, max(1, len(v.encode())), 255))
                      if isinstance(v, str) else tuple(v) for v in values]
        self.records.setdefault((_name(name), rdtype), []).extend(values)

    def lookup(self, name: str, rdtype: str) -> list[Any]:
        """The records of type ``rdtype`` at ``name`` (see Resolver)."""
        key = (_name(name), rdtype.upper())
        self.queries.append(key)
        if key[0] in self.failing:
            raise DNSTempError(f"{rdtype} {name}: timed out (stub)")
        return list(self.records.get(key, []))
