"""What needs a person: the conditions behind the admin page's banner and the notifications.

One place looks at the store, the rules and the disk and says what is wrong,
as :class:`Attention` items. The admin page shows the current ones on every
page; :mod:`gateway.notify` sends each one once. An item's ``key`` is stable
while the condition lasts (a broken rules folder keeps its key until the
files change or are fixed), so "once" survives restarts.

    items = attention(settings, store, rules_problems, now=now)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway.config import Settings
from gateway.store import Store

# a mailbox whose last this-many polls failed gets the banner (one failure may be a blip)
MAILBOX_BANNER_FAILURES = 3


@dataclass(frozen=True)
class Attention:
    """Something a person should look at.

    Attributes:
        event: the notification event it belongs to (``rules_broken``, ``mailbox_failing``, ...).
        key: stable while the condition lasts; a notification is sent once per key.
        title: one line for a person.
        detail: what is wrong and what to do, a few lines.
        link: the admin page's path that shows it (``/rules``, ``/messages/12``).
        banner: shown in the banner on every admin page (conditions, not single mails).
        notify: sent as a notification (a banner line may summarise what is notified item by item).
    """

    event: str
    key: str
    title: str
    detail: str
    link: str
    banner: bool = True
    notify: bool = True


def parse_time(value: Any) -> dt.datetime | None:
    """A stored ISO time as an aware datetime, or None."""
    if not value:
        return None
    t = dt.datetime.fromisoformat(str(value))
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def rules_broken(problems: Sequence[Any]) -> list[Attention]:
    """The rules folder has errors: the last good rules stay in force."""
    if not problems:
        return []
    text = "\n".join(str(p) for p in problems)
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    first = str(problems[0])
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return [Attention("rules_broken", f"rules:{digest}", f"Rules are broken: {first}{more}",
                      "The last good rules stay in force until the files are fixed.\n" + text[:2000], "/rules")]


def failing_mailboxes(settings: Settings, store: Store, now: dt.datetime, *,
                      first_seen: dict[str, str] | None = None) -> list[Attention]:
    """Mailboxes whose polls keep failing: on the banner after a few failures, notified after a day.

    ``first_seen`` maps a mailbox that never succeeded to when its failing was
    first seen (kept by the notifier); without it such a mailbox counts from now.
    """
    out: list[Attention] = []
    for mb in settings.mailboxes:
        state = store.mailbox_status(mb.name) or {}
        failures = int(state.get("failures") or 0)
        if failures <= 0 or not state.get("last_error"):
            continue
        since = parse_time(state.get("last_success")) or parse_time((first_seen or {}).get(mb.name)) or now
        hint = f" {state['hint']}" if state.get("hint") else ""
        detail = f"{failures} poll(s) in a row failed: {state['last_error']}.{hint}"
        episode = state.get("last_success") or (first_seen or {}).get(mb.name) or "never"
        if failures >= MAILBOX_BANNER_FAILURES:
            out.append(Attention("mailbox_failing", f"mailbox-banner:{mb.name}:{episode}",
                                 f"Mailbox {mb.name} keeps failing", detail, f"/mailboxes/{mb.name}",
                                 notify=False))
        if now - since >= dt.timedelta(seconds=settings.notify.mailbox_failing_after):
            hours = (now - since).total_seconds() / 3600
            out.append(Attention("mailbox_failing", f"mailbox:{mb.name}:{episode}",
                                 f"Mailbox {mb.name} has not been read for {hours:.0f} h", detail,
                                 f"/mailboxes/{mb.name}", banner=False))
    return out


def failed_exports(store: Store) -> list[Attention]:
    """Exports that failed permanently: no retry helps until a person acts.

    The banner has one line per target; a notification goes out per export.
    """
    out: list[Attention] = []
    per_target: dict[str, list[dict[str, Any]]] = {}
    for e in store.list_exports(state="error", limit=200):
        per_target.setdefault(e["target"], []).append(e)
        out.append(Attention("export_failed", f"export:{e['id']}:{e.get('attempts')}",
                             f"Export of {e.get('filename') or 'document ' + str(e['document_id'])} to "
                             f"{e['target']} failed",
                             f"{e.get('last_error') or 'no error recorded'} (no retry can help: fix it, then "
                             f"retry it on the exports page)", f"/exports?target={e['target']}", banner=False))
    for target, rows in per_target.items():
        out.insert(0, Attention("export_failed", f"export-banner:{target}",
                                f"Exports to {target} failed: {len(rows)} document(s) wait for you",
                                str(rows[0].get("last_error") or ""), f"/exports?target={target}", notify=False))
    return out


def suspicious_mail(store: Store) -> list[Attention]:
    """Mail held as suspicious: a rule demanded an authenticated sender and it was not."""
    return [Attention("suspicious", f"suspicious:{m['id']}",
                      f"Mail held as suspicious: {m.get('subject') or '(no subject)'}",
                      f"From {m.get('sender') or '?'}: {m.get('reason') or ''} Release it on its page once you "
                      f"checked the sender.", f"/messages/{m['id']}", banner=False)
            for m in store.messages_with_status("suspicious", limit=200)]


def changed_bank_accounts(store: Store) -> list[Attention]:
    """Documents whose bank account differs from the one known for their seller."""
    return [Attention("bank_account_changed", f"iban:{d['id']}",
                      f"Changed bank account on {d.get('company') or d['filename']}",
                      f"Document {d['id']} ({d['filename']}) names a bank account this seller has not used "
                      f"before. Confirm it with the seller by phone before paying.", f"/documents/{d['id']}",
                      banner=False)
            for d in store.payment_flagged_documents(limit=200)]


def approval_digest(settings: Settings, store: Store, now_local: dt.datetime) -> list[Attention]:
    """Once a day at ``notify.digest_at``: the documents waiting for approval, if any."""
    targets = [t.name for t in settings.exports if t.require_approval]
    waiting = store.awaiting_approval(targets)
    if not waiting or now_local.strftime("%H:%M") < settings.notify.digest_at:
        return []
    names = ", ".join(d.get("company") or d["filename"] for d in waiting[:10])
    more = f" and {len(waiting) - 10} more" if len(waiting) > 10 else ""
    return [Attention("approval_digest", f"digest:{now_local.date().isoformat()}",
                      f"{len(waiting)} document(s) wait for your approval", f"{names}{more}.",
                      "/documents?approved=false", banner=False)]


def disk_nearly_full(settings: Settings) -> list[Attention]:
    """Free space under data_dir below ``limits.disk_free_min``."""
    try:
        usage = shutil.disk_usage(settings.data_dir)
    except OSError:
        return []
    if usage.free >= settings.limits.disk_free_min:
        return []
    free_mb = usage.free / 1024**2
    return [Attention("disk_full", "disk", f"Disk nearly full: {free_mb:,.0f} MB free under {settings.data_dir}",
                      f"Below limits.disk_free_min ({settings.limits.disk_free_min / 1024**2:,.0f} MB). When the "
                      f"disk is full, SMTP answers 451 and senders retry later; free space or move data_dir.", "/")]


def attention(settings: Settings, store: Store, rules_problems: Sequence[Any], *, now: dt.datetime,
              now_local: dt.datetime | None = None, first_seen: dict[str, str] | None = None) -> list[Attention]:
    """Everything that needs a person now, banner conditions first."""
    items = [*rules_broken(rules_problems), *failing_mailboxes(settings, store, now, first_seen=first_seen),
             *failed_exports(store), *disk_nearly_full(settings), *suspicious_mail(store),
             *changed_bank_accounts(store), *approval_digest(settings, store, now_local or now)]
    return items


def banner(settings: Settings, store: Store, rules_problems: Sequence[Any], *, now: dt.datetime) -> list[Attention]:
    """The conditions the admin page shows on every page."""
    return [a for a in (*rules_broken(rules_problems), *failing_mailboxes(settings, store, now),
                        *failed_exports(store), *disk_nearly_full(settings)) if a.banner]
