"""Failed attempts per client address in a sliding window (SMTP AUTH, the admin login).

A client is an address; an IPv6 client is its /64, since one host (or one
home behind one router) has a whole /64 to pick addresses from. Limits are
per client only, never global: a stranger's failures must not lock out the
real client, and a client's lockout ends when its oldest failure in the
window is ``window`` seconds old, so it is bounded by ``window``.
"""

from __future__ import annotations

import collections
import ipaddress
import threading
import time
from collections.abc import Callable

# forget clients whose failures are all older than the window once the table is this large
_PRUNE_AT = 10_000


def client_key(address: str) -> str:
    """The client an address counts as: IPv4 (and IPv4-mapped IPv6) as is, IPv6 by its /64."""
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class FailureLimiter:
    """Failures per client in the last ``window`` seconds; ``limit`` of them (0: none) lock the client out.

    Thread-safe; ``clock`` (monotonic seconds) is a parameter so tests need no clock patching.
    """

    def __init__(self, limit: int, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self._fails: dict[str, collections.deque[float]] = {}
        self._lock = threading.Lock()
        # without a limit the count only sets the delay: keep a bounded number of failures per client
        self._keep = limit if limit else 64

    def _recent(self, client: str, now: float) -> collections.deque[float]:
        q = self._fails.get(client_key(client))
        if q is None:
            return collections.deque()
        while q and q[0] <= now - self.window:
            q.popleft()
        return q

    def failures(self, client: str) -> int:
        """How many failures ``client`` had in the window."""
        with self._lock:
            return len(self._recent(client, self.clock()))

    def last_failure(self, client: str) -> float | None:
        """When (clock time) ``client`` last failed within the window, or None."""
        with self._lock:
            q = self._recent(client, self.clock())
            return q[-1] if q else None

    def retry_after(self, client: str) -> float:
        """Seconds until ``client`` may try again (0: now)."""
        if not self.limit:
            return 0.0
        with self._lock:
            now = self.clock()
            q = self._recent(client, now)
            return max(0.0, q[0] + self.window - now) if len(q) >= self.limit else 0.0

    def failed(self, client: str) -> int:
        """Record a failure; the client's failures in the window, this one included."""
        with self._lock:
            now = self.clock()
            key = client_key(client)
            q = self._recent(client, now)
            if key not in self._fails:
                if len(self._fails) >= _PRUNE_AT:
                    for k in [k for k, v in self._fails.items() if not v or v[-1] <= now - self.window]:
                        del self._fails[k]
                q = self._fails[key] = collections.deque(maxlen=self._keep)
            q.append(now)
            return len(q)

    def forget(self, client: str) -> None:
        """Drop a client's failures (it proved who it is)."""
        with self._lock:
            self._fails.pop(client_key(client), None)
