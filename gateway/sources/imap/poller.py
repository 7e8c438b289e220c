"""One linked mailbox: polls (scheduled, on demand, woken by IDLE), after-import actions and status.

A poll, per folder: EXAMINE (read-only); compare UIDVALIDITY with the store;
UID SEARCH above the last UID handled (and SINCE the mailbox's ``since``);
fetch RFC822.SIZE, BODYSTRUCTURE and ENVELOPE in chunks; download whole
(``BODY.PEEK[]``, never setting \\Seen) only the mails that can yield a
document (``scan.DownloadPolicy``); hand each to ``Spool.accept``. Every UID
handled is recorded (``imap_seen``: spooled, done, skipped, known) and the
last UID advances per chunk, so an interrupted poll resumes without gaps or
doubles. A changed UIDVALIDITY starts the folder over; mail already stored
from this mailbox (same Message-ID and size) is not downloaded again, and the
pipeline's own dedupe catches the rest. The size compared is the RFC822.SIZE
the server reported when it sent the mail (kept beside the message), never the
bytes received: Exchange reports a stored size that differs from them. Then the spooled mail is processed
(``process``), and only then the after-import action runs on the UIDs whose
message was imported, in a read-write SELECT.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from gateway.config import MailboxConfig, Settings
from gateway.errors import GatewayError, MailboxError
from gateway.models import Envelope
from gateway.sources.imap import connect as conn
from gateway.sources.imap.actions import after_import_action
from gateway.sources.imap.folders import resolve_folders
from gateway.sources.imap.result import PollResult, Progress
from gateway.sources.imap.scan import META_ITEMS, DownloadPolicy, MailMeta, download_policy, parse_meta
from gateway.sources.imap.schedule import backoff, next_window_start
from gateway.spool import Spool
from gateway.store import Store, utcnow

log = logging.getLogger(__name__)

META_CHUNK = 250  # UIDs per metadata FETCH
DOWNLOAD_BATCH_BYTES = 8 * 1024**2  # per BODY.PEEK[] FETCH
DOWNLOAD_BATCH_COUNT = 25
PROCESS_WAIT = 30.0  # how long a poll waits for the pipeline before the after-import step
MAX_IDLE_FOLDERS = 5  # providers limit connections (Gmail: 15 per account)
def _chunks(items: Sequence[int], n: int) -> Iterator[list[int]]:
    for i in range(0, len(items), n):
        yield list(items[i:i + n])


@dataclass
class _Request:
    since: dt.date | None
    future: concurrent.futures.Future[PollResult]


class MailboxPoller:
    """Polls one mailbox into the spool; ``start``/``stop`` run it in threads, ``poll`` runs it once."""

    def __init__(self, mailbox: MailboxConfig, *, store: Store, spool: Spool, settings: Settings,
                 rules: Any = None, process: Callable[[list[int]], object] | None = None,
                 clock: Callable[[], dt.datetime] = utcnow, idle_renew: float | None = None,
                 tokens: Any = None) -> None:
        self.mb = mailbox
        self.name = mailbox.name
        self.source = f"imap:{mailbox.name}"
        self.store = store
        self.spool = spool
        self.settings = settings
        self.rules = rules
        self.process = process
        self.clock = clock
        self.tz = ZoneInfo(settings.timezone) if settings.timezone else None
        self.idle_renew = float(mailbox.idle_recheck) if idle_renew is None else idle_renew
        self.action = after_import_action(mailbox.after_import)
        if tokens is None and mailbox.oauth2 is not None:
            from gateway.oauth import AccessTokens

            tokens = AccessTokens(mailbox, settings.data_dir)
        self.tokens = tokens
        status = store.mailbox_status(self.name) or {}
        self.failures = int(status.get("failures") or 0)
        self.next_attempt: dt.datetime | None = None  # None: due at once (inside the window)
        self.capabilities: frozenset[str] = frozenset()
        self.idle_folders: list[str] = []
        self._lock = threading.Lock()  # one poll at a time
        self._logged: tuple[str, str] | None = None
        self._spooled_now: set[tuple[str, int]] = set()
        self._full_poll = True
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._requests: list[_Request] = []
        self._triggered: set[str] = set()
        self._req_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.watchers: dict[str, Any] = {}

    # -- connection -----------------------------------------------------------------------

    def connect(self) -> Any:
        """A logged-in IMAPClient for this mailbox (password or XOAUTH2)."""
        if self.tokens is not None:
            return conn.connect(self.mb, token=self.tokens.get, invalidate=self.tokens.invalidate)
        return conn.connect(self.mb)

    @contextmanager
    def session(self) -> Iterator[Any]:
        """A logged-in connection, logged out afterwards."""
        client = self.connect()
        try:
            yield client
        finally:
            conn.close(client)

    # -- schedule -----------------------------------------------------------------------------

    def local(self, now: dt.datetime) -> dt.datetime:
        """``now`` in the gateway's time zone (settings.timezone, else the machine's)."""
        return now.astimezone(self.tz) if self.tz else now.astimezone()

    def window_open(self, now: dt.datetime | None = None) -> bool:
        """Whether the schedule's days and hours allow polling at ``now``."""
        return self.mb.schedule.allows(self.local(now or self.clock()))

    def due(self, now: dt.datetime) -> bool:
        """Whether a scheduled poll should run at ``now``: inside the window and its time has come."""
        if not self.window_open(now):
            return False
        return self.next_attempt is None or now >= self.next_attempt

    def tick(self, now: dt.datetime) -> PollResult | None:
        """Run a scheduled poll if one is due at ``now``; None when not."""
        if not self.due(now):
            return None
        return self.poll(now)

    def _next_scheduled(self, now: dt.datetime) -> dt.datetime:
        every = float(self.mb.schedule.every or 3600)
        nxt = now + dt.timedelta(seconds=every)
        return next_window_start(self.mb.schedule, self.local(nxt)).astimezone(dt.timezone.utc)

    # -- one poll ---------------------------------------------------------------------------------

    def poll(self, now: dt.datetime | None = None, *, since: dt.date | None = None,
             folders: Sequence[str] | None = None, progress: Progress | None = None) -> PollResult:
        """Poll now, whatever the schedule; records the mailbox status. Never raises MailboxError."""
        now = now or self.clock()
        with self._lock:
            result = PollResult(self.name, started=utcnow())
            try:
                self._poll(result, since=since, only=folders, progress=progress)
            except MailboxError as exc:
                result.errors.insert(0, exc)
            except GatewayError as exc:  # the spool or the store: a problem of this machine
                result.errors.insert(0, MailboxError(f"cannot store mail: {exc}", kind="store",
                                                     hint="check free disk space and the permissions of data_dir"))
            except Exception as exc:  # a bug must not stop the poller thread; it is shown like any error
                log.exception("mailbox %s: poll failed", self.name)
                result.errors.insert(0, MailboxError(f"internal error: {type(exc).__name__}: {exc}", kind="error"))
            result.finished = utcnow()
            self._record(result, now)
            return result

    def _poll(self, result: PollResult, *, since: dt.date | None, only: Sequence[str] | None,
              progress: Progress | None) -> None:
        self._spooled_now = set()
        self._full_poll = only is None
        policy = download_policy(getattr(self.rules, "ruleset", None), self.settings.unmatched.for_source(self.source))
        key = f"imap:{self.name}:download_policy"
        stored = self.store.get_kv(key)
        revisit = stored is not None and stored != policy.fingerprint
        with self.session() as client:
            self.capabilities = frozenset(c.decode() if isinstance(c, bytes) else str(c)
                                          for c in client.capabilities())
            names = self._resolve_folders(client, result)
            if only is not None:
                names = [f for f in names if f in only]
            for err in result.errors:  # folders that do not exist: shown beside the others
                if err.folder:
                    self._record_folder(result, err.folder, {}, err)
            for folder in names:
                result.folders.append(folder)
                before = result.counts()
                try:
                    self._poll_folder(client, folder, result, since=since, policy=policy, revisit=revisit,
                                      progress=progress)
                except MailboxError as exc:
                    self._record_folder(result, folder, before, exc)
                    if exc.kind != "folder_missing":
                        raise
                    result.errors.append(exc)
                else:
                    self._record_folder(result, folder, before, None)
            if only is None and stored != policy.fingerprint and (not result.errors or stored is None):
                if revisit:
                    log.info("mailbox %s: the rules changed what is downloaded; skipped mail was looked at again",
                             self.name)
                self.store.set_kv(key, policy.fingerprint)
            self._process(result)
            self._after_import(client, result)

    def _record_folder(self, result: PollResult, folder: str, before: dict[str, int],
                       err: MailboxError | None) -> None:
        counts = {k: v - before.get(k, 0) for k, v in result.counts().items()} if before else {}
        result.per_folder[folder] = {**counts, "error": str(err) if err else None,
                                     "error_kind": err.kind if err else None}
        self.store.record_folder_poll(self.name, folder, at=utcnow(), stats=counts,
                                      error=str(err) if err else None, error_kind=err.kind if err else None)

    def _resolve_folders(self, client: Any, result: PollResult) -> list[str]:
        with conn.translated(self.mb, "listing folders"):
            listing = client.list_folders()
        move_target = self.mb.after_import[5:] if self.mb.after_import.startswith("move:") else None
        names, missing = resolve_folders(listing, self.mb.folders, exclude=move_target)
        for wanted, known in missing:
            result.errors.append(MailboxError(
                f"folder {wanted!r} does not exist in the mailbox of {self.mb.username}", kind="folder_missing",
                hint=f"check folders: in gateway.yaml; the server has: {known}", folder=wanted))
        return names

    def _poll_folder(self, client: Any, folder: str, result: PollResult, *, since: dt.date | None,
                     policy: DownloadPolicy, revisit: bool, progress: Progress | None) -> None:
        mb = self.mb
        state = self.store.imap_folder(self.name, folder)
        if state is not None and state["uidvalidity"] is None:
            state = None  # only a failed poll was recorded: the folder was never read
        with conn.translated(mb, f"reading folder {folder!r}"):
            if state is not None and since is None and not revisit:
                # STATUS answers "anything new?" without opening the folder
                st = client.folder_status(folder, [b"UIDNEXT", b"UIDVALIDITY"])
                if (st.get(b"UIDVALIDITY") == state["uidvalidity"] and st.get(b"UIDNEXT") is not None
                        and int(st[b"UIDNEXT"]) - 1 <= int(state["last_uid"])):
                    return
            info = client.select_folder(folder, readonly=True)
        uidvalidity = int(info[b"UIDVALIDITY"])
        uidnext = info.get(b"UIDNEXT")
        fresh = state is None or int(state["uidvalidity"] or 0) != uidvalidity
        if state is not None and fresh:
            log.warning("mailbox %s, folder %s: UIDVALIDITY changed (%s -> %s): looking at every mail again; "
                        "mail already imported is recognised and not imported twice",
                        self.name, folder, state["uidvalidity"], uidvalidity)
            self.store.forget_imap_generations(self.name, folder, keep=uidvalidity)
        last_uid = 0 if fresh or state is None else int(state["last_uid"])
        recorded = None if fresh else last_uid
        with conn.translated(mb, f"searching folder {folder!r}"):
            if since is not None:
                found = list(client.search(["SINCE", since]))
                handled = self.store.imap_seen_uids(self.name, folder, uidvalidity)
            else:
                criteria: list[Any] = ["UID", f"{last_uid + 1}:*"]
                if mb.since is not None:
                    criteria += ["SINCE", mb.since]
                found = [u for u in client.search(criteria) if u > last_uid]
                handled = self.store.imap_seen_above(self.name, folder, uidvalidity, last_uid) if found else set()
        candidates = {u for u in found if u not in handled}
        if candidates:
            # spooled by a poll that stopped before it recorded them: their messages name them (origin)
            spooled = {u: m for u, m in self.store.imap_spooled_origins(self.source, folder, uidvalidity).items()
                       if u in candidates}
            if spooled:
                state_ = "done" if self.action is None else "spooled"
                self.store.mark_imap_spooled(self.name, folder, uidvalidity, sorted(spooled.items()), state=state_)
                candidates -= set(spooled)
        if revisit:
            candidates.update(self.store.imap_uids_in_state(self.name, folder, uidvalidity, "skipped"))
        todo = sorted(candidates)
        done = 0
        if progress:
            progress(folder, 0, len(todo), result)
        for chunk in _chunks(todo, META_CHUNK):
            self._import_chunk(client, folder, uidvalidity, chunk, result, policy, progress, (done, len(todo)))
            done += len(chunk)
            last_uid = max(last_uid, chunk[-1])
            self.store.set_imap_folder(self.name, folder, uidvalidity=uidvalidity, last_uid=last_uid)
            recorded = last_uid
            if progress:
                progress(folder, done, len(todo), result)
        # every UID below UIDNEXT (as the folder was opened) has been looked at
        top = max(last_uid, int(uidnext) - 1 if uidnext else max(found, default=last_uid))
        if top != recorded:
            self.store.set_imap_folder(self.name, folder, uidvalidity=uidvalidity, last_uid=top)

    def _import_chunk(self, client: Any, folder: str, uidvalidity: int, uids: list[int], result: PollResult,
                      policy: DownloadPolicy, progress: Progress | None, place: tuple[int, int]) -> None:
        with conn.translated(self.mb, f"reading mail in {folder!r}"):
            fetched = client.fetch(uids, META_ITEMS)
        metas = [parse_meta(u, fetched[u]) for u in uids if u in fetched]
        result.scanned += len(metas)
        want: list[MailMeta] = []
        skip: list[MailMeta] = []
        for m in metas:
            (want if policy.reason(m) else skip).append(m)
        known_ids = self.store.imap_known_messages(self.source, [m.message_id for m in want if m.message_id])
        known = [m for m in want if m.message_id and (m.size in known_ids.get(m.message_id, ())
                                                      or (m.message_id, m.size) in self._spooled_now)]
        known_uids = {m.uid for m in known}
        want = [m for m in want if m.uid not in known_uids]
        for state, group in (("skipped", skip), ("known", known)):
            if group:
                self.store.mark_imap_seen(self.name, folder, uidvalidity, [m.uid for m in group], state=state)
        result.skipped += len(skip)
        result.known += len(known)
        result.bytes_skipped += sum(m.size for m in skip) + sum(m.size for m in known)
        final = "done" if self.action is None else "spooled"
        for batch in self._batches(want):
            with conn.translated(self.mb, f"downloading mail from {folder!r}"):
                data = client.fetch([m.uid for m in batch], ["BODY.PEEK[]"])
            spooled: list[tuple[int, int]] = []
            reported: dict[int, int] = {}
            try:
                for m in batch:
                    raw = data.get(m.uid, {}).get(b"BODY[]")
                    if raw is None:  # expunged meanwhile
                        continue
                    envelope = Envelope(source=self.source, origin=f"{folder}/{uidvalidity}/{m.uid}",
                                        assign=dict(self.mb.assign))
                    mid = self.spool.accept(bytes(raw), envelope)
                    spooled.append((m.uid, mid))
                    reported[mid] = m.size
                    if m.message_id:
                        self._spooled_now.add((m.message_id, m.size))
                    result.downloaded += 1
                    result.bytes_downloaded += len(raw)
                    result.message_ids.append(mid)
                    if progress:
                        progress(folder, place[0], place[1], result)
            finally:
                # one transaction per batch; a crash before it is repaired from the messages' origin
                if spooled:
                    self.store.mark_imap_spooled(self.name, folder, uidvalidity, spooled, state=final,
                                                 reported_sizes=reported)

    @staticmethod
    def _batches(metas: list[MailMeta]) -> Iterator[list[MailMeta]]:
        batch: list[MailMeta] = []
        size = 0
        for m in metas:
            if batch and (size + m.size > DOWNLOAD_BATCH_BYTES or len(batch) >= DOWNLOAD_BATCH_COUNT):
                yield batch
                batch, size = [], 0
            batch.append(m)
            size += m.size
        if batch:
            yield batch

    # -- processing and the after-import action ---------------------------------------------------

    def _process(self, result: PollResult) -> None:
        ids = result.message_ids
        if self.process is not None:
            self.process(list(ids))
        elif ids:  # the service's workers process the spool; wait for them a while
            deadline = time.monotonic() + PROCESS_WAIT
            while time.monotonic() < deadline and not self._stop.is_set():
                if "received" not in self.store.message_statuses(ids).values():
                    break
                time.sleep(0.05)
        counts: dict[str, int] = {}
        for status in self.store.message_statuses(ids).values():
            counts[status] = counts.get(status, 0) + 1
        result.statuses = counts

    def _after_import(self, client: Any, result: PollResult) -> None:
        """Act on imported mail (only; only once processed); others are marked kept."""
        if self.action is None:
            return
        groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for row in self.store.imap_pending_actions(self.name):
            groups.setdefault((row["folder"], int(row["uidvalidity"])), []).append(row)
        for (folder, uidvalidity), rows in groups.items():
            imported = [int(r["uid"]) for r in rows if r["status"] == "imported"]
            others = [int(r["uid"]) for r in rows if r["status"] != "imported"]
            if imported:
                try:
                    with conn.translated(self.mb, f"opening {folder!r} for after_import"):
                        info = client.select_folder(folder, readonly=False)
                except MailboxError as exc:
                    log.warning("mailbox %s: after_import in %s: %s", self.name, folder, exc)
                    continue
                if int(info[b"UIDVALIDITY"]) != uidvalidity:
                    self.store.set_imap_state(self.name, folder, uidvalidity, imported + others, "stale")
                    continue
                with conn.translated(self.mb, f"after_import {self.mb.after_import} in {folder!r}"):
                    for part in _chunks(imported, 500):
                        self.action.apply(client, part)
                result.acted += len(imported)
                self.store.set_imap_state(self.name, folder, uidvalidity, imported, "done")
            if others:
                self.store.set_imap_state(self.name, folder, uidvalidity, others, "kept")

    # -- status --------------------------------------------------------------------------------------

    def _record(self, result: PollResult, now: dt.datetime) -> None:
        err = result.error
        if err is None:
            self.failures = 0
            self.next_attempt = self._next_scheduled(now)
            self.store.set_mailbox_status(
                self.name, last_poll=result.finished, last_success=result.finished, last_error=None,
                error_kind=None, hint=None, failures=0, next_attempt=self.next_attempt, stats=result.as_dict())
            if self._logged is not None:
                log.info("mailbox %s: works again", self.name)
                self._logged = None
            log.info("mailbox %s: %d looked at, %d downloaded, %d skipped, %d imported", self.name,
                     result.scanned, result.downloaded, result.skipped, result.imported)
            if self._full_poll:
                self._sync_watchers(result.folders)
            return
        self.failures += 1
        self.store.count_poll_error(self.name, err.kind)
        retry = now + dt.timedelta(seconds=backoff(self.failures))
        self.next_attempt = next_window_start(self.mb.schedule, self.local(retry)).astimezone(dt.timezone.utc)
        self.store.set_mailbox_status(
            self.name, last_poll=result.finished, last_error=str(err), error_kind=err.kind, hint=err.hint,
            failures=self.failures, next_attempt=self.next_attempt, stats=result.as_dict())
        key = (err.kind, str(err))
        if key != self._logged:
            log.warning("mailbox %s: %s%s", self.name, err, f" (hint: {err.hint})" if err.hint else "")
            self._logged = key
        else:
            log.debug("mailbox %s: still failing (%d in a row): %s", self.name, self.failures, err)

    def status(self) -> dict[str, Any]:
        """The recorded status plus what the running poller knows."""
        row = dict(self.store.mailbox_status(self.name) or {"name": self.name})
        row["idle"] = sorted(f for f, w in self.watchers.items() if w.connected.is_set())
        row["window_open"] = self.window_open()
        return row

    # -- threads ----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Run scheduled polls (and IDLE watchers) in threads."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=f"imap:{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the threads; a poll in progress ends at its next step."""
        self._stop.set()
        self._wake.set()
        for w in list(self.watchers.values()):
            w.stop()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for w in list(self.watchers.values()):
            w.join(timeout=5)
        with self._req_lock:
            for req in self._requests:
                req.future.cancel()
            self._requests.clear()

    @property
    def running(self) -> bool:
        """Whether the poller thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def fetch_now(self, *, wait: bool = False, since: dt.date | None = None,
                  timeout: float | None = None) -> PollResult | None:
        """Poll at once, whatever the schedule; with ``wait`` return the result, else None at once."""
        if not self.running:
            return self.poll(since=since)
        req = _Request(since, concurrent.futures.Future())
        with self._req_lock:
            self._requests.append(req)
        self._wake.set()
        return req.future.result(timeout=timeout) if wait else None

    def trigger(self, folder: str) -> None:
        """New mail in ``folder`` (an IDLE watcher saw it): poll that folder soon, inside the window."""
        with self._req_lock:
            self._triggered.add(folder)
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            now = self.clock()
            with self._req_lock:
                req = self._requests.pop(0) if self._requests else None
                triggered, self._triggered = self._triggered, set()
            if req is not None:
                if req.future.set_running_or_notify_cancel():
                    req.future.set_result(self.poll(now, since=req.since))
                continue
            if self.due(now):
                self.poll(now)
            elif triggered and self.window_open(now):
                self.poll(now, folders=sorted(triggered))
            wait = 30.0
            if self.next_attempt is not None:
                wait = max(0.05, min(wait, (self.next_attempt - self.clock()).total_seconds()))
            self._wake.wait(wait)

    def _sync_watchers(self, folders: Sequence[str]) -> None:
        """Keep one IDLE watcher per polled folder while the thread runs and the server offers IDLE."""
        if not self.running or self._stop.is_set() or not self.mb.idle:
            return
        if "IDLE" not in self.capabilities:
            if not self.idle_folders:
                log.info("mailbox %s: the server does not offer IDLE; polling every %s s only",
                         self.name, self.mb.schedule.every)
            return
        from gateway.sources.imap.idle import FolderWatcher

        wanted = list(folders)[:MAX_IDLE_FOLDERS]
        for folder in wanted:
            if folder not in self.watchers:
                w = FolderWatcher(self, folder, renew=self.idle_renew)
                self.watchers[folder] = w
                w.start()
        self.idle_folders = wanted
