"""DNS for sender authentication: one small interface, dnspython behind it, a stub for tests.

Every check (SPF, DKIM, DMARC) asks a ``Resolver``. A failure that may pass
(timeout, SERVFAIL, no server reachable) raises ``DNSTempError`` and becomes
the result ``temperror``, never a refusal; a name that does not exist is an
empty answer.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
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


def split_server(server: str) -> tuple[str, int]:
    """``"192.0.2.53"``, ``"192.0.2.53:5353"``, ``"2001:db8::53"`` or ``"[2001:db8::53]:5353"`` -> (address, port).

    Raises ValueError for anything that is not an IP address with an optional port.
    """
    import ipaddress

    text = server.strip()
    host, port = text, 53
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":") or not rest[1:].isdigit():
                raise ValueError(f"{server!r}: write [address]:port")
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, _, p = text.partition(":")
        if not p.isdigit():
            raise ValueError(f"{server!r}: the port must be a number")
        port = int(p)
    ipaddress.ip_address(host)  # raises ValueError: a DNS server is given by its IP address
    if not 0 < port < 65536:
        raise ValueError(f"{server!r}: port {port} is out of range")
    return host, port


def backoff_key(name: str) -> str:
    """The zone a DNS name backs off with: its organizational domain (``_dmarc.x.example`` -> ``x.example``)."""
    from gateway.senderauth.dmarc import org_domain  # dmarc imports this module

    return org_domain(_name(name).lstrip("_")) or _name(name)


class DnsPythonResolver:
    """The real resolver: dnspython with a timeout per question.

    Backs off per zone (the organizational domain of the name asked): after
    three timeouts in a row for names of one zone it answers DNSTempError at
    once for that zone for 15 seconds. A sender whose DNS never answers thus
    costs seconds, not minutes, and never holds up the checks of any other
    sender. Up to ``MAX_ZONES`` zones are remembered (the oldest are dropped).
    """

    BACKOFF_AFTER = 3
    BACKOFF_SECONDS = 15.0
    MAX_ZONES = 4096

    def __init__(self, servers: Iterable[str] = (), timeout: float = 3.0) -> None:
        self.servers = tuple(servers)
        self.timeout = timeout
        self._resolver: Any = None
        self._lock = threading.Lock()
        # zone -> (timeouts in a row, monotonic time until which it is not asked)
        self._zones: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def _get(self) -> Any:
        import dns.nameserver
        import dns.resolver

        with self._lock:
            if self._resolver is None:
                try:
                    resolver = dns.resolver.Resolver(configure=not self.servers)
                except dns.resolver.NoResolverConfiguration as exc:
                    raise DNSTempError("no DNS server is configured (/etc/resolv.conf; or set trust.dns_servers)") from exc
                if self.servers:
                    resolver.nameservers = [dns.nameserver.Do53Nameserver(*split_server(s)) for s in self.servers]
                resolver.timeout = self.timeout
                resolver.lifetime = self.timeout
                # suppliers write again and again: answers (NXDOMAIN too) are kept for
                # their TTL, so a busy day costs a few queries per domain, not per mail
                resolver.cache = dns.resolver.LRUCache(4096)
                self._resolver = resolver
            return self._resolver

    def backing_off(self, name: str) -> bool:
        """Whether lookups for ``name``'s zone are answered with DNSTempError at once, now."""
        with self._lock:
            state = self._zones.get(backoff_key(name))
        return state is not None and time.monotonic() < state[1]

    def _answered(self, zone: str) -> None:
        with self._lock:
            self._zones.pop(zone, None)

    def _timed_out(self, zone: str) -> None:
        with self._lock:
            count, _ = self._zones.pop(zone, (0, 0.0))
            count += 1
            until = time.monotonic() + self.BACKOFF_SECONDS if count >= self.BACKOFF_AFTER else 0.0
            self._zones[zone] = (count, until)
            while len(self._zones) > self.MAX_ZONES:
                self._zones.popitem(last=False)

    def lookup(self, name: str, rdtype: str) -> list[Any]:
        """The records of type ``rdtype`` at ``name`` (see Resolver)."""
        import dns.exception
        import dns.resolver

        zone = backoff_key(name)
        with self._lock:
            state = self._zones.get(zone)
        if state is not None and time.monotonic() < state[1]:
            raise DNSTempError(f"{rdtype} {name}: the DNS of {zone} did not answer recently; not asking again yet")
        resolver = self._get()
        try:
            answer = resolver.resolve(_name(name) + ".", rdtype, search=False, raise_on_no_answer=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            self._answered(zone)
            return []
        except (dns.exception.Timeout, dns.resolver.LifetimeTimeout) as exc:
            self._timed_out(zone)
            raise DNSTempError(f"{rdtype} {name}: no answer within {self.timeout:g} s") from exc
        except dns.resolver.NoNameservers as exc:
            raise DNSTempError(f"{rdtype} {name}: the DNS servers failed (SERVFAIL)") from exc
        except dns.resolver.NoResolverConfiguration as exc:
            raise DNSTempError("no DNS server is configured") from exc
        except dns.exception.DNSException:
            return []  # a malformed name (label too long, ...): it cannot exist
        self._answered(zone)
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
