"""``invoice-gateway fetch``: poll mailboxes in the foreground, process what came, print a summary.

On a terminal each folder gets a progress bar (mails looked at, downloaded,
bytes); otherwise plain lines. Exit code 1 when any mailbox failed.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Callable
from typing import Any

import click

from gateway.config import Settings
from gateway.errors import ConfigError
from gateway.sources.imap.poller import MailboxPoller
from gateway.sources.imap.result import PollResult
from gateway.sources.imap.scan import size_text


def _rules_state(settings: Settings, echo: Callable[[str], object]) -> Any:
    from gateway.pipeline import RulesState

    state = RulesState()
    try:
        from gateway.rules import load_rules
    except ImportError:  # pragma: no cover - the rules package ships with the gateway
        return state
    ruleset, problems = load_rules(settings.rules_dir)
    for p in problems:
        echo(f"warning: rules: {p}")
    state.ruleset = ruleset
    state.problems = list(problems)
    return state


class _Progress:
    """A progress bar per folder on a terminal; a line per folder (and per 1000 mails) otherwise."""

    def __init__(self, mailbox: str, echo: Callable[[str], object], tty: bool) -> None:
        self.mailbox = mailbox
        self.echo = echo
        self.tty = tty
        self.folder: str | None = None
        self.bar: Any = None
        self.pos = 0
        self.total = 0
        self.last_line = 0

    def __call__(self, folder: str, done: int, total: int, result: PollResult) -> None:
        if folder != self.folder:
            self.close()
            self.folder, self.pos, self.total, self.last_line = folder, 0, total, 0
            if self.tty and total:
                self.bar = click.progressbar(
                    length=total, label=f"{self.mailbox} {folder}", show_pos=True, show_eta=False,
                    item_show_func=lambda _: (f"{result.downloaded} downloaded ({size_text(result.bytes_downloaded)}), "
                                              f"{result.skipped} skipped ({size_text(result.bytes_skipped)} not fetched)"))
                self.bar.__enter__()
        if self.bar is not None and done > self.pos:
            self.bar.update(done - self.pos, folder)
            self.pos = done
        elif self.bar is not None:
            self.bar.render_progress()
        elif not self.tty and total and (done == total or done - self.last_line >= 1000):
            # the last call of a folder has done == total (once: downloads report the chunk's start)
            self.last_line = done
            self.echo(f"  {self.mailbox} {folder}: {done}/{total} looked at, {result.downloaded} downloaded")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def summary_line(result: PollResult) -> str:
    """One line per mailbox: looked at, downloaded, skipped, imported."""
    parts = [f"{result.scanned} looked at",
             f"{result.downloaded} downloaded ({size_text(result.bytes_downloaded)})",
             f"{result.skipped + result.known} not downloaded ({size_text(result.bytes_skipped)} saved"
             + (f"; {result.known} already imported" if result.known else "") + ")",
             f"{result.imported} imported"]
    others = {k: v for k, v in result.statuses.items() if k != "imported"}
    if others:
        parts.append(", ".join(f"{v} {k}" for k, v in sorted(others.items())))
    if result.acted:
        parts.append(f"after_import on {result.acted}")
    return f"{result.mailbox}: " + ", ".join(parts)


def fetch_command(settings: Settings, names: list[str], since: dt.date | None,
                  echo: Callable[[str], object] = click.echo, *, tty: bool | None = None) -> int:
    """Poll the named mailboxes (default: all) now and process the mail; returns the exit code."""
    from gateway.pipeline import Pipeline
    from gateway.spool import Spool
    from gateway.store import Store

    if not settings.mailboxes:
        echo("error: no mailboxes in the configuration (add them under mailboxes: in gateway.yaml)")
        return 2
    try:
        chosen = [settings.mailbox(n) for n in names] if names else list(settings.mailboxes)
    except ConfigError as exc:
        echo(f"error: {exc}")
        return 2
    tty = sys.stdout.isatty() if tty is None else tty
    store = Store(settings.data_dir)
    spool = Spool(store)
    rules = _rules_state(settings, echo)
    pipeline = Pipeline(settings, store, rules)
    failed: list[PollResult] = []
    results: list[PollResult] = []
    for mb in chosen:
        poller = MailboxPoller(mb, store=store, spool=spool, settings=settings, rules=rules,
                               process=lambda ids: pipeline.run_pending())
        progress = _Progress(mb.name, echo, tty)
        try:
            result = poller.poll(since=since, progress=progress)
        finally:
            progress.close()
        results.append(result)
        echo(summary_line(result))
        for err in result.errors:
            echo(f"  error ({err.kind}): {err}")
            if err.hint:
                echo(f"  hint: {err.hint}")
        if result.errors:
            failed.append(result)
    pipeline.run_pending()  # what a failed poll spooled before it broke
    if len(results) > 1:
        echo(f"total: {sum(r.downloaded for r in results)} downloaded "
             f"({size_text(sum(r.bytes_downloaded for r in results))}), "
             f"{sum(r.skipped + r.known for r in results)} not downloaded "
             f"({size_text(sum(r.bytes_skipped for r in results))} saved), "
             f"{sum(r.imported for r in results)} imported; "
             f"{len(failed)} of {len(results)} mailbox(es) failed")
    return 1 if failed else 0
