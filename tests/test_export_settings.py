"""Target settings end to end through the gateway: filter, since, approval, archive, schedule, CLI."""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT, Gateway, make_mail, run_cli, unique_pdf, wait_for, write_config
from gateway.store import utcnow

UBL = ROOT / "tests" / "data" / "einvoice" / "ubl-invoice.xml"  # IssueDate 2024-03-15


def folder(workdir: Path, name: str, **kw: Any) -> dict[str, Any]:
    (workdir / name).mkdir(exist_ok=True)
    return {"name": name, "type": "folder", "path": str(workdir / name), "filename": "{stem}", **kw}


def files(workdir: Path, name: str) -> list[str]:
    return sorted(p.name for p in (workdir / name).rglob("*") if p.is_file() and not p.name.startswith("."))


def settled(gw: Gateway, documents: int) -> None:
    """Wait until every message is processed and no export that can run is waiting."""
    def done() -> bool:
        if gw.store.status_counts().get("received") or gw.store.document_count() < documents:
            return False
        rows = gw.store.list_exports(limit=1000)
        return not any(r["state"] in ("running",) for r in rows)
    wait_for(done, timeout=20)
    time.sleep(1.5)  # one more turn of the export loop


def doc_id(gw: Gateway, filename: str) -> int:
    docs, _ = gw.store.list_documents(limit=100, archived=None)
    return int(next(d["id"] for d in docs if d["filename"] == filename))


def test_filter_by_tags_companies_types_and_sources(workdir: Path, gateway_factory: Callable[..., Gateway]) -> None:
    (workdir / "rules" / "acme.yaml").write_text(
        "name: Acme\nwhen: {from: '@acme.example'}\nassign: {company: Acme GmbH, document_type: invoice}\n")
    gw = gateway_factory(exports=[
        folder(workdir, "forwarded", filter={"tags": ["Forwarded"]}),
        folder(workdir, "acme", filter={"companies": ["acme*"]}),
        folder(workdir, "invoices", filter={"document_types": ["invoice"], "sources": ["smtp"]}),
        folder(workdir, "scans", filter={"sources": ["folder"]}),
        folder(workdir, "all"),
    ])
    gw.send(make_mail(attachments=[("acme.pdf", unique_pdf("acme"), "application/pdf")]))
    gw.send(make_mail(sender="Shop <orders@shop.example>", to="invoices+private@localhost",
                      attachments=[("shop.pdf", unique_pdf("shop"), "application/pdf")]),
            rcpt=["invoices+private@localhost"], sender="orders@shop.example")
    wait_for(lambda: len(files(workdir, "all")) == 2)
    settled(gw, 2)
    assert files(workdir, "forwarded") == ["shop.pdf"]  # the plus-address assigns the tag
    assert files(workdir, "acme") == ["acme.pdf"]
    assert files(workdir, "invoices") == ["acme.pdf"]
    assert files(workdir, "scans") == []
    assert {r["target"] for r in gw.store.exports_of(doc_id(gw, "shop.pdf"))} == {"forwarded", "all"}


def test_since_skips_older_documents(workdir: Path, gateway_factory: Callable[..., Gateway]) -> None:
    gw = gateway_factory(exports=[folder(workdir, "new", since="2025-01-01"), folder(workdir, "all")])
    gw.send(make_mail(attachments=[("old.xml", UBL.read_bytes(), "application/xml"),
                                   ("new.pdf", unique_pdf("new"), "application/pdf")]))
    wait_for(lambda: "new.pdf" in files(workdir, "all") and "old.xml" in files(workdir, "all"))
    settled(gw, 2)
    assert "old.xml" in files(workdir, "all")
    assert files(workdir, "new") == ["new.pdf"]


def test_require_approval_waits_until_approved(workdir: Path, gateway_factory: Callable[..., Gateway]) -> None:
    gw = gateway_factory(exports=[folder(workdir, "checked", require_approval=True), folder(workdir, "all")])
    gw.send(make_mail(attachments=[("wait.pdf", unique_pdf("wait"), "application/pdf")]))
    wait_for(lambda: files(workdir, "all") == ["wait.pdf"])
    settled(gw, 1)
    assert files(workdir, "checked") == []
    (row,) = [r for r in gw.store.list_exports(target="checked")]
    assert row["state"] == "pending" and row["attempts"] == 0
    out = run_cli("--config", str(write_config(workdir, gw.cfg)), "approve", str(row["document_id"]))
    assert out.returncode == 0, out.stderr
    assert f"document {row['document_id']} approved".encode() in out.stdout
    wait_for(lambda: files(workdir, "checked") == ["wait.pdf"])


def test_archive_after_export_once_every_target_delivered(workdir: Path,
                                                          gateway_factory: Callable[..., Gateway]) -> None:
    gw = gateway_factory(exports=[folder(workdir, "nas", archive_after_export=True),
                                  folder(workdir, "review", require_approval=True)])
    gw.send(make_mail(attachments=[("arch.pdf", unique_pdf("arch"), "application/pdf")]))
    wait_for(lambda: files(workdir, "nas") == ["arch.pdf"])
    settled(gw, 1)
    did = doc_id(gw, "arch.pdf")
    assert gw.store.document(did)["archived_at"] is None  # "review" has not delivered it yet
    gw.store.update_document(did, approved_at=utcnow().isoformat())
    gw.service.exports.wake.set()
    wait_for(lambda: gw.store.document(did)["archived_at"])
    assert files(workdir, "review") == ["arch.pdf"]


def test_schedule_every_and_window_and_the_export_command(workdir: Path,
                                                          gateway_factory: Callable[..., Gateway]) -> None:
    today = dt.datetime.now().astimezone()
    other_days = [d for i, d in enumerate(("mon", "tue", "wed", "thu", "fri", "sat", "sun")) if i != today.weekday()]
    gw = gateway_factory(exports=[
        folder(workdir, "hourly", schedule={"every": "1h"}),
        folder(workdir, "not_today", schedule={"days": other_days}),
        folder(workdir, "now"),
    ])
    time.sleep(1.5)  # the hourly job ran once at start, with nothing to do
    gw.send(make_mail(attachments=[("sched.pdf", unique_pdf("sched"), "application/pdf")]))
    wait_for(lambda: files(workdir, "now") == ["sched.pdf"])
    settled(gw, 1)
    assert files(workdir, "hourly") == [] and files(workdir, "not_today") == []
    # an hour later the scheduler runs the hourly target
    started = gw.service.scheduler.tick(utcnow() + dt.timedelta(hours=1, seconds=1))
    assert "export:hourly" in started
    wait_for(lambda: files(workdir, "hourly") == ["sched.pdf"])
    assert files(workdir, "not_today") == []
    # `export` delivers now, outside the window, with progress
    out = run_cli("--config", str(write_config(workdir, gw.cfg)), "export", "not_today")
    assert out.returncode == 0, out.stderr
    assert b"not_today: document" in out.stdout and b"delivered" in out.stdout
    assert b"not_today: 1 delivered, 0 to retry, 0 failed" in out.stdout
    assert files(workdir, "not_today") == ["sched.pdf"]
    out = run_cli("--config", str(write_config(workdir, gw.cfg)), "export", "no-such-target")
    assert out.returncode == 2 and b"no export target named 'no-such-target'" in out.stderr


def test_failed_exports_back_off_doubling_up_to_six_hours(workdir: Path,
                                                          gateway_factory: Callable[..., Gateway]) -> None:
    (workdir / "not-a-folder").write_text("a file where the target wants a folder\n")
    gw = gateway_factory(exports=[{"name": "broken", "type": "folder", "path": str(workdir / "not-a-folder" / "x"),
                                   "schedule": {"every": "1h"}}])
    time.sleep(1.5)  # the hourly job ran once at start, with nothing to do
    gw.send(make_mail(attachments=[("retry.pdf", unique_pdf("backoff"), "application/pdf")]))
    wait_for(lambda: gw.store.list_exports(target="broken"))
    now = utcnow()
    waits = []
    for attempt in range(1, 14):
        assert gw.service.exports.run(["broken"], now=now)["broken"] == {"delivered": 0, "failed": 1, "error": 0}
        (row,) = gw.store.list_exports(target="broken")
        assert row["state"] == "failed" and row["attempts"] == attempt and "Not a directory" in row["last_error"]
        due = dt.datetime.fromisoformat(row["next_attempt"])
        waits.append(round((due - now).total_seconds()))
        # not before it is due
        assert gw.service.exports.run(["broken"], now=due - dt.timedelta(seconds=1))["broken"]["failed"] == 0
        now = due
    assert waits == [30, 60, 120, 240, 480, 960, 1920, 3840, 7680, 15360, 21600, 21600, 21600]


def hourly_target_with_queue(workdir: Path, gateway_factory: Callable[..., Gateway], prefix: str, n: int) -> Gateway:
    """A gateway with an hourly folder target ``nas`` and ``n`` documents queued for it."""
    gw = gateway_factory(exports=[folder(workdir, "nas", schedule={"every": "1h"})])
    time.sleep(1.5)  # the hourly job ran once at start, with nothing to do
    gw.send(make_mail(attachments=[(f"{prefix}{i}.pdf", unique_pdf(f"{prefix}-{i}"), "application/pdf")
                                   for i in range(n)]))
    wait_for(lambda: len(gw.store.list_exports(target="nas")) == n)
    return gw


def test_a_run_stopped_midway_has_recorded_every_document_it_delivered(
        workdir: Path, gateway_factory: Callable[..., Gateway]) -> None:
    gw = hourly_target_with_queue(workdir, gateway_factory, "s", 5)
    stop = threading.Event()
    seen: list[int] = []

    def progress(name: str, row: dict[str, Any]) -> None:
        seen.append(int(row["document_id"]))
        if len(seen) == 2:
            stop.set()

    runner = gw.service.exports
    counts = runner.run_target(gw.settings.export("nas"), progress=progress, stop=stop)
    assert counts == {"delivered": 2, "failed": 0, "error": 0}
    states = {r["document_id"]: r["state"] for r in gw.store.list_exports(target="nas")}
    assert sorted(d for d, s in states.items() if s == "delivered") == sorted(seen)
    assert sorted(states.values()) == ["delivered", "delivered", "pending", "pending", "pending"]
    assert len(files(workdir, "nas")) == 2


def test_a_failed_record_gives_the_deliveries_back_to_the_queue(
        workdir: Path, gateway_factory: Callable[..., Gateway]) -> None:
    """Delivered but not recorded (the database refused): pending again, then found already there."""
    gw = hourly_target_with_queue(workdir, gateway_factory, "r", 3)
    store = gw.store
    real = store.finish_exports_delivered

    def locked(items: Any) -> None:
        raise sqlite3.OperationalError("database is locked")

    store.finish_exports_delivered = locked  # type: ignore[method-assign]
    try:
        with pytest.raises(sqlite3.OperationalError):
            gw.service.exports.run_target(gw.settings.export("nas"))
    finally:
        store.finish_exports_delivered = real  # type: ignore[method-assign]
    rows = store.list_exports(target="nas")
    assert [r["state"] for r in rows] == ["pending"] * 3
    assert all(r["claimed_by"] is None and "recording it failed" in r["last_error"] for r in rows)
    assert sorted(files(workdir, "nas")) == ["r0.pdf", "r1.pdf", "r2.pdf"]

    counts = gw.service.exports.run_target(gw.settings.export("nas"))
    assert counts == {"delivered": 3, "failed": 0, "error": 0}
    assert [r["state"] for r in store.list_exports(target="nas")] == ["delivered"] * 3
    assert sorted(files(workdir, "nas")) == ["r0.pdf", "r1.pdf", "r2.pdf"]  # found there, not written twice
