"""Worker processes under a running serve: deaths, the memory ceiling and the per-mail deadline.

A test-only hook (gateway.testhooks, on with GATEWAY_TEST_HOOKS=1) lets a
mail stall, kill or inflate the worker that claims it; everything else is
the real serve with its real workers, fed over SMTP.
"""

from __future__ import annotations

import os
import signal
import smtplib
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import base_config, make_mail, unique_pdf, wait_for, wait_port, write_config

from gateway.pipeline import MAX_ATTEMPTS
from gateway.store import Row, Store

MAIL_TIMEOUT = 3
WORKER_MEMORY_MB = 256


@dataclass
class Serve:
    """A running ``serve`` with hooks on, its store and its folders."""

    proc: subprocess.Popen[bytes]
    port: int
    store: Store
    data: Path
    exports: Path
    log: Path

    def send(self, msg: Any) -> None:
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as s:
            s.send_message(msg, to_addrs=["invoices@localhost"])

    def by_message_id(self, header_id: str) -> Row | None:
        # by the raw mail: one quarantined when it was claimed was never parsed
        for mid in self.store.message_ids():
            row = self.store.message(mid)
            if row is not None and header_id.encode() in (self.data / row["raw_path"]).read_bytes():
                return row
        return None

    def final(self, header_id: str, timeout: float = 60) -> Row:
        def done() -> Row | None:
            row = self.by_message_id(header_id)
            return row if row is not None and row["status"] != "received" else None
        row: Row = wait_for(done, timeout=timeout, interval=0.1)
        return row


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    workdir = tmp_path_factory.mktemp("workers")
    for d in ("data", "rules", "exports"):
        (workdir / d).mkdir()
    cfg = base_config(workdir)
    cfg["web"]["enabled"] = False
    cfg["limits"] = {"mail_timeout": f"{MAIL_TIMEOUT}s", "render_timeout": "2s",
                     "worker_memory": f"{WORKER_MEMORY_MB}MB"}
    config = write_config(workdir, cfg)
    port = int(cfg["smtp"]["listen"].rsplit(":", 1)[1])
    log = workdir / "serve.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gateway", "--config", str(config), "serve"],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env=dict(os.environ, GATEWAY_TEST_HOOKS="1"))
    try:
        wait_port(port, timeout=30)
        yield Serve(proc, port, Store(workdir / "data"), workdir / "data", workdir / "exports", log)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def _mail(tag: str, hook: str | None = None) -> tuple[Any, str, bytes]:
    pdf = unique_pdf(tag)
    msg = make_mail(subject=f"Invoice {tag}", attachments=[(f"{tag}.pdf", pdf, "application/pdf")],
                    message_id=f"<{tag}.{time.monotonic_ns()}@test.example>")
    if hook:
        msg["X-Gateway-Test-Hook"] = hook
    return msg, str(msg["Message-ID"]), pdf


def _exported(serve: Serve, pdf: bytes) -> list[Path]:
    return [p for p in serve.exports.rglob("*.pdf") if p.read_bytes() == pdf]


def _worker_pids(serve: Serve) -> set[int]:
    """The processing workers of serve (its children running gateway.workers)."""
    pids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(") ", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == serve.proc.pid and b"gateway.workers" in cmdline:
            pids.add(int(stat.parent.name))
    return pids


def test_a_worker_killed_mid_mail_is_restarted_and_the_mail_processed(serve: Serve) -> None:
    workers = wait_for(lambda: len(_worker_pids(serve)) == 2 and _worker_pids(serve), timeout=30)
    msg, header_id, pdf = _mail("killed-once", "sleep-once")
    hooks = serve.data / "test-hooks"
    before = set(hooks.glob("*.pid")) if hooks.exists() else set()
    serve.send(msg)
    pidfile = wait_for(lambda: hooks.exists() and next(iter(set(hooks.glob("*-1.pid")) - before), None), timeout=30)
    pid = int(pidfile.read_text())
    assert pid in workers
    mid = int(pidfile.name.split("-")[0])
    claimed = serve.store.claimed_messages()
    assert [r["id"] for r in claimed] == [mid]
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    # released at once (not at the next start), and processed by a worker
    wait_for(lambda: (serve.store.message(mid) or {}).get("claimed_by") != claimed[0]["claimed_by"], timeout=10)
    released_after = time.monotonic() - killed
    row = serve.final(header_id)
    assert row["status"] == "imported", row["reason"]
    assert row["attempts"] == 2
    assert wait_for(lambda: _exported(serve, pdf), timeout=30)
    # the killed worker was started again: two workers, one of them new
    now = wait_for(lambda: len(_worker_pids(serve)) == 2 and _worker_pids(serve), timeout=30)
    assert pid not in now
    assert released_after < 3.0, released_after  # the watch looks every 0.25 s; margin for a busy machine
    assert serve.store.claimed_messages() == []


def test_a_mail_that_keeps_killing_workers_is_quarantined_and_others_go_on(serve: Serve) -> None:
    msg, header_id, _ = _mail("poison", "die")
    serve.send(msg)
    ok, ok_id, ok_pdf = _mail("after-poison")
    serve.send(ok)
    row = serve.final(header_id, timeout=90)
    assert row["status"] == "quarantined"
    assert f"processing was interrupted {MAX_ATTEMPTS} times" in row["reason"]
    assert "the worker died (SIGKILL)" in row["reason"]
    assert serve.final(ok_id)["status"] == "imported"
    assert wait_for(lambda: _exported(serve, ok_pdf), timeout=30)
    assert serve.proc.poll() is None


def test_a_mail_past_the_deadline_is_stopped_and_quarantined_after_its_attempts(serve: Serve) -> None:
    msg, header_id, _ = _mail("stalls", "sleep")
    sent = time.monotonic()
    serve.send(msg)
    ok, ok_id, ok_pdf = _mail("after-stall")
    serve.send(ok)
    assert serve.final(ok_id)["status"] == "imported"  # the other worker goes on meanwhile
    row = serve.final(header_id, timeout=120)
    took = time.monotonic() - sent
    assert row["status"] == "quarantined"
    assert f"processing exceeded {MAIL_TIMEOUT} s (limits.mail_timeout)" in row["reason"]
    assert f"interrupted {MAX_ATTEMPTS} times" in row["reason"]
    # each attempt was stopped at the deadline: three of them, each at least the deadline long,
    # and all within what the deadline, the watch and a worker's restart take (margin for a busy machine)
    stalls = sorted((serve.data / "test-hooks").glob(f"{row['id']}-*.pid"))
    assert len(stalls) == MAX_ATTEMPTS
    began = sorted(p.stat().st_mtime for p in stalls)
    assert all(b - a >= MAIL_TIMEOUT for a, b in zip(began, began[1:])), began  # never stopped early
    assert MAX_ATTEMPTS * MAIL_TIMEOUT <= took < MAX_ATTEMPTS * (MAIL_TIMEOUT + 8) + 10, took
    assert _exported(serve, ok_pdf)


def test_a_mail_past_the_memory_ceiling_costs_only_its_worker(serve: Serve) -> None:
    serve_rss_before = _rss_mb(serve.proc.pid)
    msg, header_id, _ = _mail("inflates", "allocate")
    serve.send(msg)
    row = serve.final(header_id, timeout=90)
    assert row["status"] == "quarantined"
    assert f"the worker ran out of memory (limits.worker_memory: {WORKER_MEMORY_MB} MB)" in row["reason"]
    # the ceiling held: each attempt got less than the ceiling, and serve did not grow
    got = [int(p.read_text()) for p in (serve.data / "test-hooks").glob(f"{row['id']}-*.allocated")]
    assert len(got) == MAX_ATTEMPTS
    assert all(64 * 1024**2 <= g < WORKER_MEMORY_MB * 1024**2 for g in got), got
    assert _rss_mb(serve.proc.pid) < serve_rss_before + 20
    ok, ok_id, ok_pdf = _mail("after-inflate")
    serve.send(ok)
    assert serve.final(ok_id)["status"] == "imported"
    assert wait_for(lambda: _exported(serve, ok_pdf), timeout=30)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_the_worker_bounds_are_checked_with_the_configuration(tmp_path: Path) -> None:
    from gateway.config import parse_settings
    from gateway.errors import ConfigError

    limits = parse_settings({}, base=tmp_path).limits
    assert limits.worker_memory == 1024**3 and limits.mail_timeout == 120
    assert parse_settings({"limits": {"worker_memory": "2GB", "mail_timeout": "5m"}}, base=tmp_path).limits.mail_timeout == 300
    with pytest.raises(ConfigError, match="limits.worker_memory"):
        parse_settings({"limits": {"worker_memory": "100MB"}}, base=tmp_path)
    with pytest.raises(ConfigError, match=r"limits.*mail_timeout \(20 s\) must be longer than render_timeout \(30 s\)"):
        parse_settings({"limits": {"mail_timeout": "20s"}}, base=tmp_path)


def test_the_workers_hold_while_smtp_takes_a_burst_and_go_on_after_it(tmp_path: Path) -> None:
    from gateway.config import parse_settings
    from gateway.workers import BUSY_MAILS, CALM_AFTER, WorkerProcesses

    workers = WorkerProcesses(parse_settings({}, base=tmp_path), Store(tmp_path / "data"), 2)
    said: list[str] = []
    workers._send = said.append  # type: ignore[method-assign]
    accepted = [0]
    workers.intake = lambda: accepted[0]
    workers.pace(0.0)
    accepted[0] += BUSY_MAILS - 1  # a trickle: processing goes on beside it
    workers.pace(0.25)
    assert said == [] and not workers.holding
    accepted[0] += BUSY_MAILS  # a burst
    workers.pace(0.5)
    assert said == ["hold"]
    workers.pace(0.5 + CALM_AFTER - 0.1)  # a pause in the burst is no end of it
    assert said == ["hold"]
    workers.pace(0.5 + CALM_AFTER + 0.1)
    assert said == ["hold", "go"] and not workers.holding


def test_a_held_worker_takes_one_mail_per_turn_and_goes_on_at_once_when_told() -> None:
    import threading

    from gateway.workers import Pace

    pace, stop = Pace(turn=0.3), threading.Event()
    t0 = time.monotonic()
    pace.wait_turn(stop)
    pace.wait_turn(stop)
    assert time.monotonic() - t0 < 0.2  # not held: one mail after the other
    pace.hold(True)
    pace.wait_turn(stop)
    assert time.monotonic() - t0 >= 0.3  # held: the next turn a turn after the last
    released = threading.Event()
    waiter = threading.Thread(target=lambda: (pace.wait_turn(stop), released.set()))
    waiter.start()
    time.sleep(0.05)
    assert not released.is_set()
    pace.hold(False)  # "go": the waiting worker takes its mail now, not at its turn
    assert released.wait(0.2)
    waiter.join()
    pace.hold(True)  # held and stopping (serve said quit): no waiting for the turn
    stopped = threading.Thread(target=pace.wait_turn, args=(stop,))
    stopped.start()
    stop.set()
    pace.wake()
    stopped.join(0.2)
    assert not stopped.is_alive()
