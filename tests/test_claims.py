"""A claim cannot outlive the process that holds it, and only one serve uses a data_dir."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import yaml
from conftest import base_config, make_mail, run_cli, unique_pdf, wait_for, wait_port, write_config

from gateway.spool import Spool
from gateway.store import Store

_HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from gateway.store import Store
    store = Store(Path(sys.argv[1]))
    row = store.claim_message()
    print(row["id"], flush=True)
    time.sleep(600)
""")


def _record(store: Store, n: int) -> list[int]:
    return store.insert_messages([{"received": "2026-01-01T00:00:00+00:00", "source": "import",
                                   "raw_path": f"mail/x{i}.eml", "size": 1, "sha256": f"{i:064x}"}
                                  for i in range(n)])


def test_the_claim_of_a_killed_process_is_released_even_before_it_is_reaped(tmp_path: Path) -> None:
    store = Store(tmp_path)
    first, _ = _record(store, 2)
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None
        assert int(holder.stdout.readline()) == first
        assert store.release_stale_claims() == 0  # alive: its claim stays
        assert [r["id"] for r in store.claimed_messages()] == [first]
        os.kill(holder.pid, signal.SIGKILL)
        # not reaped: a zombie keeps its PID (the old check judged it alive), but its lock is gone
        wait_for(lambda: Path(f"/proc/{holder.pid}/stat").read_text().split(") ")[1][0] == "Z", timeout=10)
        assert store.release_stale_claims() == 1
        assert store.claimed_messages() == []
        assert not list((tmp_path / "claims").glob("*.lock")), "a dead holder's lock file is swept"
        again = store.claim_message()  # the mail is claimed again, counting the interrupted attempt
        assert again is not None and again["id"] == first and again["attempts"] == 2
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


def test_claims_of_this_process_and_of_other_stores_stay(tmp_path: Path) -> None:
    store, other = Store(tmp_path), Store(tmp_path)
    _record(store, 2)
    mine, theirs = store.claim_message(), other.claim_message()
    assert mine is not None and theirs is not None and mine["claimed_by"] != theirs["claimed_by"]
    assert store.release_stale_claims() == 0 and other.release_stale_claims() == 0
    assert len(store.claimed_messages()) == 2
    del other  # its lock goes with it: what it held is released
    import gc

    gc.collect()
    assert store.release_stale_claims() == 1
    assert [r["id"] for r in store.claimed_messages()] == [mine["id"]]


def _serve(config: Path, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "gateway", "--config", str(config), "serve"],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env=dict(os.environ, **(env or {})))


def test_a_second_serve_on_the_same_data_dir_is_refused_naming_the_first(workdir: Path) -> None:
    cfg = base_config(workdir)
    cfg["web"]["enabled"] = False
    config = write_config(workdir, cfg)
    port = int(cfg["smtp"]["listen"].rsplit(":", 1)[1])
    first = _serve(config, workdir / "serve.log")
    try:
        wait_port(port)
        other = base_config(workdir)  # same data_dir, other ports
        other["web"]["enabled"] = False
        other_config = workdir / "other.yaml"
        other_config.write_text(yaml.safe_dump(other), encoding="utf-8")
        started = time.monotonic()
        second = run_cli("--config", str(other_config), "serve", timeout=60)
        err = second.stderr.decode()
        assert second.returncode == 1, err
        assert f"pid {first.pid}" in err and "already using the data_dir" in err and str(workdir / "data") in err
        assert time.monotonic() - started < 30
        assert first.poll() is None  # the first one goes on
        # `import` beside serve stays allowed: it spools (and processes) through the store
        eml = workdir / "beside.eml"
        pdf = unique_pdf("beside serve")
        eml.write_bytes(make_mail(attachments=[("beside.pdf", pdf, "application/pdf")]).as_bytes())
        done = run_cli("--config", str(config), "import", str(eml))
        assert done.returncode == 0, done.stderr.decode()
        assert b"imported" in done.stdout
        wait_for(lambda: [p for p in (workdir / "exports").rglob("*.pdf") if p.read_bytes() == pdf], timeout=30)
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=30)
    # once the first has stopped, a serve may start on the data_dir again
    again = _serve(config, workdir / "serve.log")
    try:
        wait_port(port)
        assert again.poll() is None
    finally:
        again.send_signal(signal.SIGTERM)
        again.wait(timeout=30)


def test_recovery_at_start_leaves_the_files_another_process_is_recording(tmp_path: Path) -> None:
    """`import` beside a serve that starts: a message file written but not yet recorded
    (milliseconds, in the importing process) is not taken for a 451 leftover."""
    from gateway.models import Envelope
    from gateway.spool import RECOVER_AFTER, Spool

    store = Store(tmp_path)
    spool = Spool(store)
    importing = spool.write_file(b"Subject: being imported\r\n\r\nbody\r\n", Envelope(source="import"))
    partial = spool.tmp / "partial"
    partial.write_bytes(b"half a mail")
    counts = Spool(store).recover()  # serve starts now
    assert counts == {"tmp_removed": 0, "orphaned": 0}
    assert importing.path.exists() and partial.exists()
    [mid] = spool.record([importing])  # the import records it: nothing was lost
    assert store.message(mid) is not None and importing.path.exists()
    # a later start: what is still unrecorded then was answered 451 (or never got a 250)
    stray = spool.write_file(b"Subject: answered 451\r\n\r\nbody\r\n", Envelope(source="smtp"))
    later = time.time() + RECOVER_AFTER + 1
    counts = Spool(store).recover(now=later)
    assert counts == {"tmp_removed": 1, "orphaned": 1}
    assert not partial.exists() and not stray.path.exists() and (tmp_path / "orphaned" / stray.path.name).exists()
    assert importing.path.exists()


def test_recovery_removes_the_partial_files_of_a_writer_that_is_gone_at_once(tmp_path: Path) -> None:
    """A partial file in the spool's tmp folder names its writer: kept while the writer runs
    (an import beside a starting serve), removed at once when it is gone (a killed serve)."""
    data = tmp_path / "data"
    writer = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from gateway.store import Store; "
         "from gateway.spool import Spool; spool = Spool(Store(Path(sys.argv[1]))); p = spool.new_tmp(); "
         "p.write_bytes(b'half a mail'); print(p, flush=True); time.sleep(120)", str(data)],
        stdout=subprocess.PIPE)
    try:
        assert writer.stdout is not None
        partial = Path(writer.stdout.readline().decode().strip())
        spool = Spool(Store(data))
        assert spool.recover()["tmp_removed"] == 0 and partial.exists()  # its writer still runs
    finally:
        writer.kill()
        writer.wait()
        if writer.stdout is not None:
            writer.stdout.close()
    assert spool.recover()["tmp_removed"] == 1 and not partial.exists()  # gone: no 2-minute wait


_STUCK_STOP = textwrap.dedent("""
    import logging, threading, time
    from gateway import cli
    logging.basicConfig(level=logging.INFO)
    threading.Thread(target=time.sleep, args=(600,), name="stuck-exporter").start()  # not a daemon
    stopped = threading.Event()
    threading.Thread(target=cli._bound_shutdown, args=(stopped, 0.5), daemon=True).start()
    time.sleep(600)  # a stop that never finishes
""")


def test_a_stop_that_hangs_ends_the_process_and_names_what_was_busy() -> None:
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", _STUCK_STOP], capture_output=True, text=True, timeout=30)
    assert time.monotonic() - start < 15
    assert done.returncode == 0
    assert "stopping took longer than 0.5 s" in done.stderr and "stuck-exporter" in done.stderr
    assert "stopped: every mail that got 250 is on disk" in done.stderr.strip().splitlines()[-1]
