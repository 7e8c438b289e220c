"""Notifications through Apprise: each thing that needs a person is told once.

Apprise (well kept, 100+ services: e-mail, ntfy, Gotify, Matrix, Telegram,
webhooks) turns one URL into a delivery; ``notify.urls`` in gateway.yaml
lists URLs and the events each wants. A scheduler job (``check``) asks
:func:`gateway.health.attention` what needs a person, and sends what was not
sent yet, grouped per event, with links to the admin page. What was sent is
kept in the store per URL, so a restart does not repeat it; a condition that
clears and comes back is told again. URLs carry secrets: they appear in the
log only in Apprise's privacy form (``json://h...t:8080/``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import apprise

from gateway.config import NotifyURL, Settings
from gateway.health import Attention, attention
from gateway.store import Store

log = logging.getLogger(__name__)

SENT_KEY = "notify.sent"
FAILING_SINCE_KEY = "notify.failing_since"
MAX_LISTED = 10  # items listed in one notification; the rest are counted

TITLES = {
    "mailbox_failing": "Mailbox not read", "export_failed": "Export failed permanently",
    "suspicious": "Mail held as suspicious", "bank_account_changed": "Changed bank account",
    "rules_broken": "Rules are broken", "approval_digest": "Documents wait for approval",
    "disk_full": "Disk nearly full",
}


@dataclass(frozen=True)
class Delivery:
    """The outcome of one notification to one URL.

    Attributes:
        url: the URL in privacy form (no secrets).
        event: the event sent (or ``test``).
        ok: Apprise delivered it.
        error: why not, when it was not.
    """

    url: str
    event: str
    ok: bool
    error: str = ""


def private(url: str) -> str:
    """A notification URL as it may be shown or logged: without its secrets."""
    plugin = apprise.Apprise.instantiate(url, suppress_exceptions=True)
    if plugin:
        return str(plugin.url(privacy=True))  # type: ignore[no-untyped-call]
    return url.split("://", 1)[0] + "://..."


def _send(url: str, title: str, body: str, event: str) -> Delivery:
    shown = private(url)
    sender = apprise.Apprise()
    if not sender.add(url):
        return Delivery(shown, event, False, "Apprise does not understand this URL (see its wiki for the format)")
    with apprise.LogCapture(level=logging.WARNING) as captured:  # type: ignore[no-untyped-call]
        ok = bool(sender.notify(title=title, body=body))
    error = "" if ok else (captured.getvalue().strip().splitlines() or ["no detail from Apprise"])[-1]
    return Delivery(shown, event, ok, error.replace(url, shown))


class Notifier:
    """Sends each :class:`Attention` once to every URL that wants its event."""

    def __init__(self, settings: Settings, store: Store, rules_problems: Callable[[], Sequence[Any]]) -> None:
        self.settings = settings
        self.store = store
        self.rules_problems = rules_problems
        self.tz = ZoneInfo(settings.timezone) if settings.timezone else None

    def admin_url(self) -> str:
        """The admin page's address as a person reaches it, without a trailing slash."""
        if self.settings.notify.admin_url:
            return self.settings.notify.admin_url.rstrip("/")
        host, port = self.settings.web.host_port
        if host in ("0.0.0.0", "::", ""):
            host = socket.getfqdn()
        return f"http://{host}:{port}"

    def _failing_since(self, now: dt.datetime) -> dict[str, str]:
        """When each mailbox that never succeeded was first seen failing (kept across restarts)."""
        known: dict[str, str] = dict(self.store.get_kv(FAILING_SINCE_KEY, {}))
        current: dict[str, str] = {}
        for mb in self.settings.mailboxes:
            state = self.store.mailbox_status(mb.name) or {}
            if int(state.get("failures") or 0) > 0 and not state.get("last_success"):
                current[mb.name] = known.get(mb.name, now.isoformat())
        if current != known:
            self.store.set_kv(FAILING_SINCE_KEY, current)
        return current

    def pending(self, now: dt.datetime) -> list[Attention]:
        """What needs a person now and is notified (banner-only conditions left out)."""
        local = now.astimezone(self.tz) if self.tz else now.astimezone()
        items = attention(self.settings, self.store, self.rules_problems(), now=now, now_local=local,
                          first_seen=self._failing_since(now))
        return [a for a in items if a.notify]

    def check(self, now: dt.datetime) -> list[Delivery]:
        """Send what was not sent yet; forget what no longer holds. The scheduler's job."""
        if not self.settings.notify.urls:
            return []
        items = self.pending(now)
        sent: dict[str, str] = dict(self.store.get_kv(SENT_KEY, {}))
        keys_now = {a.key for a in items}
        out: list[Delivery] = []
        for target in self.settings.notify.urls:
            tag = hashlib.sha256(target.url.encode()).hexdigest()[:10]
            by_event: dict[str, list[Attention]] = {}
            for a in items:
                if a.event in target.events and f"{tag}|{a.key}" not in sent:
                    by_event.setdefault(a.event, []).append(a)
            for event, group in by_event.items():
                title, body = self.compose(event, group)
                d = _send(target.url, title, body, event)
                out.append(d)
                if d.ok:
                    for a in group:
                        sent[f"{tag}|{a.key}"] = now.isoformat()
                    log.info("notified %s: %s", d.url, title)
                else:
                    log.warning("notification to %s failed (tried again in %d s): %s", d.url,
                                self.settings.notify.check_every, d.error)
        # a condition that cleared may be told again when it comes back
        kept = {k: v for k, v in sent.items() if k.split("|", 1)[1] in keys_now}
        self.store.set_kv(SENT_KEY, kept)
        return out

    def compose(self, event: str, group: Sequence[Attention]) -> tuple[str, str]:
        """Title and body of one notification about ``group`` (items of one event)."""
        base = self.admin_url()
        if len(group) == 1:
            a = group[0]
            return f"invoice-gateway: {a.title}", f"{a.detail}\n\n{base}{a.link}"
        lines = [f"- {a.title}: {base}{a.link}" for a in group[:MAX_LISTED]]
        if len(group) > MAX_LISTED:
            lines.append(f"- and {len(group) - MAX_LISTED} more: {base}/")
        return f"invoice-gateway: {TITLES.get(event, event)} ({len(group)})", "\n".join(lines)

    def test(self) -> list[Delivery]:
        """Send a test notification to every configured URL (the admin page's button)."""
        out = []
        for target in self.settings.notify.urls:
            d = _send(target.url, "invoice-gateway: test notification",
                      f"Notifications work. Events sent here: {', '.join(target.events)}.\n\n{self.admin_url()}/",
                      "test")
            log.info("test notification to %s: %s", d.url, "sent" if d.ok else f"failed: {d.error}")
            out.append(d)
        return out


def configured(urls: Sequence[NotifyURL]) -> list[dict[str, Any]]:
    """The configured URLs as the admin page and API show them: privacy form and events."""
    return [{"url": private(u.url), "events": list(u.events)} for u in urls]
