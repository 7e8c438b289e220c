"""The ``invoice-gateway`` command; the only place that turns errors into exit codes.

Exit codes: 0 success, 1 a check found problems (``rules check``) or an
operation failed, 2 the configuration (or the command line) is invalid.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click

from gateway.config import Settings, default_config_path, load_settings
from gateway.errors import ConfigError, GatewayError
from gateway.logs import quiet_libraries

log = logging.getLogger("gateway")


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose < 0 else (logging.INFO if verbose == 0 else logging.DEBUG)
    logging.basicConfig(stream=sys.stderr, level=level,  # stdout is for output (--json)
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    if verbose < 2:
        quiet_libraries()


class _Ctx:
    def __init__(self, config: Path | None, verbose: int) -> None:
        self.config_path = config
        self.verbose = verbose
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            try:
                self._settings = load_settings(self.config_path)
            except ConfigError as exc:
                click.echo(f"error: {exc}", err=True)
                sys.exit(2)
        return self._settings


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


pass_ctx = click.make_pass_decorator(_Ctx)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "-c", type=click.Path(path_type=Path), default=None,
              help="gateway.yaml to use (default: $GATEWAY_CONFIG, then ./gateway.yaml; "
                   "without one the embedded defaults apply).")
@click.option("-v", "--verbose", count=True, help="More logging: -v info for every step, -vv debug.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.version_option(package_name="invoice-gateway")
@click.pass_context
def main(ctx: click.Context, config: Path | None, verbose: int, quiet: bool) -> None:
    """invoice-gateway: collects supplier invoices from e-mail.

    \b
    Example:
        invoice-gateway serve
        invoice-gateway --config /etc/gateway.yaml status --json
    """
    _setup_logging(-1 if quiet else verbose)
    ctx.obj = _Ctx(config, -1 if quiet else verbose)


# -- serve ---------------------------------------------------------------------------


@main.command()
@pass_ctx
def serve(c: _Ctx) -> None:
    """Run SMTP, mailbox pollers, the scheduler, the rules watcher and the admin page.

    Stops cleanly on SIGTERM or Ctrl-C; mail that got 250 is never lost.
    Only one serve may use a data_dir: a second one exits with status 1,
    naming the process that holds it (import, export and the others may run beside).

    \b
    Example:
        invoice-gateway serve
    """
    from gateway.service import Service

    settings = c.settings
    if c.verbose >= 0:  # serve logs at log_level (default info) unless -q; -v / -vv add more
        level = {0: settings.log_level.upper(), 1: "INFO"}.get(c.verbose, "DEBUG")
        logging.getLogger().setLevel(level)
    if settings.source_path is None:
        log.info("no gateway.yaml found (looked for %s): running on the embedded defaults; "
                 "copy gateway.example.yaml to gateway.yaml to change them", default_config_path())
    else:
        log.info("configuration: %s", settings.source_path)
    from gateway.claims import ServeLock
    from gateway.errors import DataDirInUse

    try:
        lock = ServeLock(settings.data_dir)  # one serve per data_dir, before anything is touched
    except DataDirInUse as exc:
        _fail(str(exc), 1)
    except OSError as exc:
        _fail(f"cannot lock the data_dir {settings.data_dir}: {exc.strerror or exc}", 1)
    service = Service(settings)
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        service.start()
    except OSError as exc:
        _fail(f"cannot start: {exc}", 1)
    except GatewayError as exc:
        _fail(str(exc), 1)
    log.info("data in %s, rules in %s, exports: %s", settings.data_dir, settings.rules_dir,
             ", ".join(f"{t.name} ({t.type})" for t in settings.exports) or "none")
    _log_how_to_reach(settings)
    stop.wait()
    stopped = threading.Event()
    threading.Thread(target=_bound_shutdown, args=(stopped, STOP_GRACE), name="stop-watch", daemon=True).start()
    service.stop()
    lock.release()
    stopped.set()
    log.info("stopped: every mail that got 250 is on disk and is processed at the next start")


# A stop that takes longer than this ends the process: a container manager kills it
# soon after anyway (Docker after 10 s unless stop_grace_period says more), and the
# spool and the claims make a hard end as safe as a clean one.
STOP_GRACE = 25.0


def _bound_shutdown(stopped: threading.Event, grace: float) -> None:
    """End the process if stopping has not finished within ``grace`` seconds, saying what was busy."""
    if stopped.wait(grace):
        return
    busy = sorted(t.name for t in threading.enumerate()
                  if t.is_alive() and t is not threading.current_thread() and t is not threading.main_thread())
    log.warning("stopping took longer than %g s; ending now (busy: %s); their stacks follow on stderr",
                grace, ", ".join(busy) or "nothing")
    import faulthandler

    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    log.info("stopped: every mail that got 250 is on disk and is processed at the next start")
    logging.shutdown()
    os._exit(0)


def _log_how_to_reach(settings: Settings) -> None:
    """Say how to reach the gateway from elsewhere and how to call the command line."""
    local = [name for name, (host, _) in (("smtp.listen", settings.smtp.host_port),
                                          ("web.listen", settings.web.host_port))
             if host in ("127.0.0.1", "localhost", "::1")]
    if local:
        log.info("%s: this machine only; to accept connections from the network, set %s in "
                 "gateway.yaml", " and ".join(local),
                 " and ".join(f"{key}: 0.0.0.0:{port}" for key, port in
                              (("smtp.listen", settings.smtp.host_port[1]), ("web.listen", settings.web.host_port[1]))
                              if key in local))
    exe = Path(sys.argv[0])
    if exe.name == "invoice-gateway" and exe.exists():
        shown = os.path.relpath(exe) if not os.path.relpath(exe).startswith("..") else str(exe)
        shown = shown if "/" in shown else f"./{shown}"
        log.info("the command line, from another terminal: %s status (and %s --help)", shown, shown)


# -- import --------------------------------------------------------------------------


@main.command("import")
@click.argument("files", nargs=-1, required=True)
@click.option("--source", default="import", show_default=True,
              help="Source recorded on the messages (import, or smtp to treat them like SMTP mail).")
@click.option("--no-process", is_flag=True, help="Only spool; a running serve processes them.")
@click.option("--json", "as_json", is_flag=True, help="One JSON line per message.")
@pass_ctx
def import_(c: _Ctx, files: tuple[str, ...], source: str, no_process: bool, as_json: bool) -> None:
    """Feed mail from .eml files, or from standard input with "-".

    Each message takes the same durable path as SMTP mail, then is processed
    (unless --no-process). Safe beside a running serve.

    \b
    Example:
        invoice-gateway import invoice.eml other.eml
        procmail/fetchmail: ... | invoice-gateway import -
    """
    from gateway.models import Envelope
    from gateway.pipeline import Pipeline
    from gateway.spool import Spool
    from gateway.store import Store

    settings = c.settings
    store = Store(settings.data_dir)
    spool = Spool(store)
    pipeline = Pipeline(settings, store, _rules_state(settings))
    ids: list[tuple[str, int]] = []
    for name in files:
        try:
            raw = sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()
        except OSError as exc:
            _fail(f"{name}: {exc.strerror}")
        ids.append((name, spool.accept(raw, Envelope(source=source, origin=None if name == "-" else str(name)))))
    if not no_process:
        pipeline.run_pending()
    failed = 0
    for name, mid in ids:
        row = store.message(mid) or {}
        if as_json:
            click.echo(json.dumps({"file": name, "id": mid, "status": row.get("status"), "reason": row.get("reason")}))
        else:
            click.echo(f"{name}: #{mid} {row.get('status')}: {row.get('reason') or ''}")
        failed += row.get("status") == "quarantined"
    if failed and not as_json:
        click.echo(f"{failed} message(s) quarantined; see `invoice-gateway status`", err=True)


def _rules_state(settings: Settings) -> Any:
    from gateway.pipeline import RulesState

    from gateway.rules import load_rules

    state = RulesState()
    ruleset, problems = load_rules(settings.rules_dir)
    if problems:
        for p in problems:
            click.echo(f"warning: rules: {p}", err=True)
    state.ruleset = ruleset
    state.problems = problems
    return state


# -- export / approve ---------------------------------------------------------------------


@main.command()
@click.argument("targets", nargs=-1)
@click.option("--backfill", "backfill_target", metavar="TARGET",
              help="First give TARGET the documents that already exist (those its filter takes), then deliver.")
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d"]),
              help="With --backfill: only documents dated on or after this day (default: all).")
@pass_ctx
def export(c: _Ctx, targets: tuple[str, ...], backfill_target: str | None, since: dt.datetime | None) -> None:
    """Deliver now what is waiting for the named targets (default: all).

    Ignores the targets' intervals but not approval or retry back-off. Safe
    beside a running serve: each document still reaches each target once.
    A new target starts empty; --backfill gives it the existing documents.

    \b
    Example:
        invoice-gateway export
        invoice-gateway export nas nextcloud
        invoice-gateway export --backfill nextcloud --since 2026-01-01
    """
    from gateway.exporters.backfill import backfill
    from gateway.exporters.runner import ExportRunner
    from gateway.store import Store

    settings = c.settings
    store = Store(settings.data_dir)
    runner = ExportRunner(settings, store)
    if since is not None and backfill_target is None:
        _fail("--since goes with --backfill TARGET", 2)
    try:
        if backfill_target is not None:
            done = backfill(settings, store, backfill_target, since=since.date() if since else None)
            click.echo(f"{done.target}: {done.queued} existing document(s) queued"
                       f" ({done.left_out} left out by its filter, {done.already} it already had)")
            targets = targets or (backfill_target,)
        names = [t.name for t in runner.targets(targets)]
    except ConfigError as exc:
        _fail(str(exc), 2)
    failed = 0
    for name in names:
        def progress(target: str, row: dict[str, Any]) -> None:
            line = f"  {target}: document {row['document_id']} {row['state']}"
            if row["state"] != "delivered":  # say why, and whether it will be retried
                done = next((e for e in store.exports_of(int(row["document_id"])) if e["target"] == target), None)
                if done and done["last_error"]:
                    line += f": {done['last_error']}"
                    if done["next_attempt"]:
                        line += f" (next attempt {done['next_attempt'][:19]} UTC)"
            click.echo(line)

        counts = runner.run_target(settings.export(name), progress=progress)
        click.echo(f"{name}: {counts['delivered']} delivered, {counts['failed']} to retry, {counts['error']} failed")
        failed += counts["failed"] + counts["error"]
    if failed:
        sys.exit(1)


def _person(by: str | None = None) -> str:
    """Who acts at the command line: ``--by``, else the login name ("a person" for a container's nameless user)."""
    if by:
        return by
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "a person"


@main.command()
@click.argument("document_ids", nargs=-1, type=int, required=True)
@pass_ctx
def approve(c: _Ctx, document_ids: tuple[int, ...]) -> None:
    """Approve documents for targets with require_approval.

    \b
    Example:
        invoice-gateway approve 12 13
    """
    from gateway.fields.suppliers import Suppliers
    from gateway.store import Store, iso, utcnow

    store = Store(c.settings.data_dir)
    suppliers = Suppliers(store, {a.address.rpartition("@")[2] for a in c.settings.smtp.addresses})
    who = _person()
    for d in document_ids:
        if store.document(d) is None:
            _fail(f"no document {d}")
        store.update_document(d, approved_at=iso(utcnow()))
        suppliers.learn_confirmed(d, who)  # a person confirmed its seller
        click.echo(f"document {d} approved")


@main.command("confirm-account")
@click.argument("document_ids", nargs=-1, type=int, required=True)
@click.option("--by", default=None, help="Who confirmed the account with the seller (recorded; default: the login name).")
@pass_ctx
def confirm_account(c: _Ctx, document_ids: tuple[int, ...], by: str | None) -> None:
    """Confirm the bank account (IBAN) of documents: you checked it with the seller.

    The IBAN guard learns a seller's account only from mail authenticated for
    the seller or from a person; until then it flags every invoice with
    another account. After this, the account is the seller's: invoices with it
    are not flagged, invoices with another one are.

    
    Example:
        invoice-gateway confirm-account 17
        invoice-gateway confirm-account 17 18 --by anna
    """
    from gateway.errors import StoreError
    from gateway.payment_guard import PaymentGuard
    from gateway.pipeline import pdf_text
    from gateway.store import Store

    settings = c.settings
    store = Store(settings.data_dir)
    guard = PaymentGuard(store, pdf_text, {a.address.rpartition("@")[2] for a in settings.smtp.addresses})
    who = _person(by)
    for d in document_ids:
        try:
            ibans = guard.confirm(d, who, settings.data_dir)
        except StoreError as exc:
            _fail(str(exc))
        click.echo(f"document {d}: {', '.join(ibans)} confirmed by {who}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON line per supplier.")
@pass_ctx
def suppliers(c: _Ctx, as_json: bool) -> None:
    """List the suppliers learned from e-invoices and approved documents, with documents and totals.

    \b
    Example:
        invoice-gateway suppliers
        invoice-gateway suppliers --json
    """
    import json

    from gateway.fields.suppliers import Suppliers
    from gateway.store import Store

    for s in Suppliers(Store(c.settings.data_dir)).list():
        totals = ", ".join(f"{v} {k}".strip() for k, v in s["totals"].items()) or "-"
        if as_json:
            click.echo(json.dumps({"id": s["id"], "name": s["name"], "documents": s["documents"],
                                   "totals": s["totals"]}, ensure_ascii=False))
        else:
            click.echo(f"{s['id']:>5}  {s['name']}  ({s['documents']} documents; {totals})")


@main.command()
@click.argument("message_ids", nargs=-1, type=int, required=True)
@click.option("--by", default=None, help="Who vouches for the sender (recorded; default: the login name).")
@click.option("--no-process", is_flag=True, help="Only release; a running serve processes the messages.")
@pass_ctx
def release(c: _Ctx, message_ids: tuple[int, ...], by: str | None, no_process: bool) -> None:
    """Release suspicious messages: you vouch for the sender; they are imported and exported.

    A message is suspicious when it claims the sender of a rule that demands
    an authenticated sender, and authentication failed. Check the sender
    first (the message's authentication results show why it failed).

    \b
    Example:
        invoice-gateway release 42
        invoice-gateway release 42 43 --by anna
    """
    from gateway.errors import StoreError
    from gateway.pipeline import Pipeline
    from gateway.store import Store

    settings = c.settings
    store = Store(settings.data_dir)
    who = _person(by)
    for mid in message_ids:
        try:
            store.release_message(mid, by=who)
        except StoreError as exc:
            _fail(str(exc))
    if not no_process:
        Pipeline(settings, store, _rules_state(settings)).run_pending()
    for mid in message_ids:
        row = store.message(mid) or {}
        click.echo(f"#{mid} released by {who}: {row.get('status')}: {row.get('reason') or ''}")


# -- status / reprocess ------------------------------------------------------------------


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def status(c: _Ctx, as_json: bool) -> None:
    """Messages by status, exports by target, rules and mailboxes.

    \b
    Example:
        invoice-gateway status
        invoice-gateway status --json | jq .messages
    """
    from gateway.store import Store

    settings = c.settings
    store = Store(settings.data_dir)
    _, problems = _load_rules_quiet(settings)
    data = {
        "config": str(settings.source_path) if settings.source_path else None,
        "data_dir": str(settings.data_dir),
        "messages": store.status_counts(),
        "documents": store.document_count(),
        "exports": store.export_counts(),
        "export_errors": [
            {"target": e["target"], "document_id": e["document_id"], "state": e["state"], "error": e["last_error"],
             "attempts": e["attempts"], "next_attempt": e["next_attempt"]}
            for e in store.list_exports(state="failed") + store.list_exports(state="error")
        ][:20],
        "rules": {"dir": str(settings.rules_dir), "problems": [str(p) for p in problems]},
        "mailboxes": {m.name: store.mailbox_status(m.name) for m in settings.mailboxes},
        "last_reexamine": store.get_kv("last_reexamine"),
    }
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    click.echo(f"config:    {data['config'] or '(embedded defaults)'}")
    click.echo(f"data:      {data['data_dir']}")
    counts = data["messages"]
    click.echo("messages:  " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"))
    click.echo(f"documents: {data['documents']}")
    for target, states in sorted(data["exports"].items()):
        click.echo(f"export {target}: " + ", ".join(f"{k} {v}" for k, v in sorted(states.items())))
    for e in data["export_errors"]:
        when = f", next attempt {e['next_attempt'][:19]}" if e["state"] == "failed" and e["next_attempt"] else ""
        kind = "will retry" if e["state"] == "failed" else "failed permanently"
        click.echo(f"  {e['target']} document {e['document_id']}: {kind} after {e['attempts']} attempt(s){when}: {e['error']}")
    click.echo(f"rules:     {data['rules']['dir']}" + (f" ({len(problems)} problem(s))" if problems else " (ok)"))
    for p in problems:
        click.echo(f"  {p}")
    for name, st in data["mailboxes"].items():
        st = st or {}
        line = f"mailbox {name}: last success {st.get('last_success') or 'never'}"
        if st.get("last_error"):
            line += f"; last error: {st['last_error']}" + (f" ({st['hint']})" if st.get("hint") else "")
        click.echo(line)


@main.command()
@click.argument("message_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="The same JSON as GET /api/messages/ID.")
@pass_ctx
def show(c: _Ctx, message_id: int, as_json: bool) -> None:
    """Show a stored message: its status, the deciding rule, what was imported, and why, rule by rule.

    Exit 1 when there is no such message.

    \b
    Example:
        invoice-gateway show 42
        invoice-gateway show 42 --json | jq .decision.explain
    """
    from types import SimpleNamespace

    from gateway.store import Store
    from web.data import message_json

    settings = c.settings
    store = Store(settings.data_dir)
    row = store.message(message_id)
    if row is None:
        _fail(f"no message #{message_id} in {settings.data_dir}")
        return
    current, _ = _load_rules_quiet(settings)  # to say whether the rules changed since the mail was decided
    data = message_json(SimpleNamespace(store=store, settings=settings, rules=SimpleNamespace(ruleset=current)),
                        row, full=True)
    if as_json:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))
        return
    click.echo(f"message #{data['id']}: {data['status']}")
    click.echo(f"received:  {data['received']} via {data['source']}")
    click.echo(f"from:      {data['sender'] or ''}")
    click.echo(f"subject:   {data['subject'] or ''}")
    click.echo(f"reason:    {data['reason'] or ''}")
    decision = data.get("decision") or {}
    if decision.get("rule"):
        click.echo(f"rule:      {decision['rule']!r}: {decision.get('action')} ({decision.get('import')})")
    elif decision:
        claimed = f"; held, it claims rule {decision['claimed_rule']!r}" if decision.get("claimed_rule") else ""
        policy = f"; the {data['source'].split(':')[0]} policy {decision['policy']!r} decided" if decision.get("policy") else ""
        click.echo(f"rule:      none matched{policy}{claimed}")
    if decision.get("assign"):
        click.echo(f"assign:    {json.dumps(decision['assign'], ensure_ascii=False)}")
    for d in data["documents"]:
        meta = ", ".join(f"{k} {d[k]}" for k in ("company", "document_type", "invoice_number") if d.get(k))
        tags = f", tags {', '.join(d['tags'])}" if d.get("tags") else ""
        click.echo(f"imported:  document #{d['id']} {d['filename']} ({d['origin']}{', ' + meta if meta else ''}{tags})")
    explain = decision.get("explain") or []
    if decision.get("explain_note"):
        click.echo(f"note:      {decision['explain_note']}")
    if explain:
        click.echo(f"rules tried ({len(explain)}):")
    for t in explain:
        click.echo(f"  {'MATCH' if t['matched'] else 'no   '} {t['rule']}: {t['reason']}")


def _load_rules_quiet(settings: Settings) -> tuple[Any, list[Any]]:
    from gateway.rules import load_rules

    return load_rules(settings.rules_dir)


@main.command()
@click.option("--status", "status_", default="unmatched", show_default=True,
              help="Which messages: unmatched, quarantined, imported, ignored, ... or all.")
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d"]), default=None, help="Received on or after DATE.")
@click.option("--id", "ids", type=int, multiple=True, help="Only these message ids.")
@pass_ctx
def reprocess(c: _Ctx, status_: str, since: dt.datetime | None, ids: tuple[int, ...]) -> None:
    """Run the rules again on stored mail and print what changed.

    \b
    Example:
        invoice-gateway reprocess                      # every unmatched mail
        invoice-gateway reprocess --status quarantined --since 2026-01-01
    """
    from gateway.pipeline import Pipeline
    from gateway.store import Store

    settings = c.settings
    store = Store(settings.data_dir)
    pipeline = Pipeline(settings, store, _rules_state(settings))
    if ids:
        chosen = list(ids)
    else:
        chosen = store.message_ids(status=None if status_ == "all" else status_,
                                   since=since.date().isoformat() if since else None)
    before = {i: (store.message(i) or {}).get("status") for i in chosen}
    store.reset_for_reprocess(chosen)
    pipeline.run_pending()
    changed = 0
    for i in chosen:
        row = store.message(i) or {}
        if row.get("status") != before[i]:
            changed += 1
            click.echo(f"#{i}: {before[i]} -> {row.get('status')}: {row.get('reason')}")
    click.echo(f"{len(chosen)} message(s) examined, {changed} changed status")


# -- config --------------------------------------------------------------------------------


@main.group()
def config() -> None:
    """Check the configuration."""


@config.command("check")
@pass_ctx
def config_check(c: _Ctx) -> None:
    """Validate gateway.yaml; exit 2 with the key path of the first error.

    \b
    Example:
        invoice-gateway --config gateway.yaml config check
    """
    s = c.settings
    click.echo(f"{s.source_path or '(embedded defaults)'}: ok")
    click.echo(f"  data_dir {s.data_dir}, rules_dir {s.rules_dir}")
    click.echo(f"  smtp {s.smtp.listen}: " + ", ".join(a.address for a in s.smtp.addresses))
    click.echo(f"  mailboxes: {', '.join(m.name for m in s.mailboxes) or 'none'}")
    click.echo(f"  exports: {', '.join(f'{t.name} ({t.type})' for t in s.exports) or 'none'}")
    from gateway.naming import check_pattern

    for i, t in enumerate(s.exports):
        err = check_pattern(t.filename)
        if err:
            _fail(f"exports[{i}].filename: {err}", 2)


# -- rules -------------------------------------------------------------------------------


@main.group()
def rules() -> None:
    """Check, test and describe import rules."""


@rules.command("check")
@click.argument("directory", required=False, type=click.Path(path_type=Path))
@pass_ctx
def rules_check(c: _Ctx, directory: Path | None) -> None:
    """Validate a rules folder; exit 1 on any error, naming file, line and key.

    Made for a git pre-commit hook and the CI of a rules repository. Warnings
    (exit 0) name a `from` that can never hold because it names no domain
    where an authenticated sender is demanded.

    \b
    Example:
        invoice-gateway rules check rules/
    """
    from gateway.rules import load_rules

    d = directory or c.settings.rules_dir
    if not d.is_dir():
        _fail(f"{d}: not a folder", 1)
    ruleset, problems = load_rules(d)
    for p in problems:
        click.echo(str(p))
    if problems or ruleset is None:
        click.echo(f"{len(problems)} problem(s) in {d}", err=True)
        sys.exit(1)
    require = c.settings.trust.require_authenticated_sender
    warnings = [f"{d / rule.file}:{rule.line}: warning: rule {rule.name!r}: {w}"
                for rule in ruleset.rules for w in rule.sender_warnings(require)]
    for w in warnings:
        click.echo(w)
    more = f"; {len(warnings)} warning(s)" if warnings else ""
    click.echo(f"{d}: {len(ruleset.rules)} rule(s) in {len(ruleset.files)} file(s), all valid{more}")


_FIELDS_SHOWN = ("seller", "document_type", "invoice_number", "issue_date", "grand_total", "amount_due", "currency")


@rules.command("test")
@click.argument("message", type=click.Path(path_type=Path, exists=True, dir_okay=False, allow_dash=True))
@click.option("--rules", "rules_dir", type=click.Path(path_type=Path), default=None,
              help="Rules folder (default: rules_dir of gateway.yaml).")
@click.option("--source", default="smtp", show_default=True, help="Source to pretend the mail came from.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@click.option("--authenticated", is_flag=True,
              help="Treat the sender as authenticated (passed SPF/DKIM/DMARC); matters only with "
                   "trust.require_authenticated_sender, which this command applies like the gateway.")
@pass_ctx
def rules_test(c: _Ctx, message: Path, rules_dir: Path | None, source: str, as_json: bool, authenticated: bool) -> None:
    """Show which rule decides a message, and why, rule by rule.

    Exit 1, naming every broken file, when the rules folder has errors.
    With trust.require_authenticated_sender in gateway.yaml, a `from` holds
    only with --authenticated (a file's sender is not known to be).

    \b
    Example:
        invoice-gateway rules test mail.eml
        invoice-gateway rules test mail.eml --rules ./rules --json
    """
    from gateway.explain import explain_raw

    raw = sys.stdin.buffer.read() if str(message) == "-" else message.read_bytes()
    settings = c.settings
    folder = rules_dir or settings.rules_dir
    try:
        result = explain_raw(raw, folder, source=source, settings=settings,
                             authenticated=True if authenticated else None)
    except GatewayError as exc:
        _fail(str(exc))
    if result.get("problems"):
        for p in result["problems"]:
            click.echo(p)
        click.echo(result["broken"], err=True)  # the same words as the admin page's rule tester
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(result, indent=2, ensure_ascii=False))
        return
    for doc in result["mail"].get("documents") or []:  # what conditions on fields saw
        shown = "; ".join(f"{k} {doc[k]}" for k in _FIELDS_SHOWN if doc.get(k)) or "no fields read"
        click.echo(f"fields of {doc.get('filename')}: {shown}")
    for t in result["explain"]:
        click.echo(f"{'MATCH' if t['matched'] else 'no   '} {t['rule']}: {t['reason']}")
    if result["rule"]:
        mode = f" ({result['import']})" if result["action"] == "import" and result.get("import") else ""
        click.echo(f"-> rule {result['rule']!r} decides: {result['action']}{mode}")
    else:
        click.echo(f"-> no rule matched; the {source} policy {result.get('policy')!r} decides")
    if result.get("assign"):
        click.echo(f"   assign: {json.dumps(result['assign'], ensure_ascii=False)}")


@rules.command("schema")
def rules_schema_cmd() -> None:
    """Print the JSON Schema of a rule file (for editors' YAML language servers).

    \b
    Example:
        invoice-gateway rules schema > rules/.schema.json
    """
    from gateway.rules import rules_schema

    click.echo(json.dumps(rules_schema(), indent=2))


# -- fetch -------------------------------------------------------------------------------


@main.command()
@click.argument("mailboxes", nargs=-1)
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
              help="Look at mail from DATE on (default: the mailbox's since, then what is new).")
@pass_ctx
def fetch(c: _Ctx, mailboxes: tuple[str, ...], since: dt.datetime | None) -> None:
    """Poll mailboxes now, whatever their schedule, with progress and a summary.

    Downloads only mail that can hold a document, processes it, then runs the
    mailbox's after_import action on what was imported. Default: every
    mailbox. Exit 1 when any mailbox failed (the error and a hint are shown).

    \b
    Example:
        invoice-gateway fetch
        invoice-gateway fetch gmail --since 2026-01-01
    """
    from gateway.sources.imap import fetch_command

    code = fetch_command(c.settings, list(mailboxes), since.date() if since else None, echo=click.echo)
    sys.exit(code)


@main.command()
@click.argument("mailbox")
@click.option("--port", default=0, show_default=True, type=int,
              help="Loopback port for the redirect (0: any free port).")
@click.option("--no-browser", is_flag=True, help="Only print the URL (open it on this machine yourself).")
@pass_ctx
def oauth(c: _Ctx, mailbox: str, port: int, no_browser: bool) -> None:
    """Authorize a mailbox for OAuth2 (Gmail, Microsoft 365) and store its refresh token.

    Prints the provider's consent URL, waits on 127.0.0.1 for the redirect,
    trades the code for tokens and keeps the refresh token in
    data_dir/oauth/MAILBOX.json (mode 0600). Needs oauth2.client_id (and
    client_secret) on the mailbox; provider gmail or outlook fills the URLs.

    \b
    Example:
        invoice-gateway oauth gmail
        ssh -L 8765:127.0.0.1:8765 nas   # then on the NAS:
        invoice-gateway oauth office --port 8765 --no-browser
    """
    from gateway.oauth import oauth_command

    sys.exit(oauth_command(c.settings, mailbox, port=port, browser=not no_browser, echo=click.echo))


if __name__ == "__main__":  # pragma: no cover
    main()
