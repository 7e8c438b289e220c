"""The central promise: a mail that got 250 is exported exactly once, even after kill -9."""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import signal
import smtplib
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from conftest import base_config, make_mail, need, unique_pdf, wait_for, wait_port, write_config

from gateway.store import Store


def _serve(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:  # the child keeps its own descriptor
        return subprocess.Popen([sys.executable, "-m", "gateway", "--config", str(config), "serve"],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


KILL_ROUNDS = 8
PR_SET_CHILD_SUBREAPER = 36


@contextlib.contextmanager
def _orphans_stay_unreaped() -> Iterator[None]:
    """Orphaned grandchildren (the workers of a killed serve) become this process's
    children and stay zombies until the end: "dead but not yet reaped", as under an
    init that reaps late. A claim must not outlive its holder even then."""
    libc = ctypes.CDLL(None, use_errno=True)
    need(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0, "cannot become a child subreaper (prctl)")
    try:
        yield
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass


def test_kill_9_while_four_clients_send_loses_and_doubles_nothing(workdir: Path) -> None:
    """Round after round: kill -9 of serve and its worker processes while mail is in flight,
    restart at once; in the end every acknowledged mail is exported exactly once."""
    cfg = base_config(workdir)
    cfg["web"]["enabled"] = False
    cfg["limits"] = {}  # the default: processing in worker processes
    config = write_config(workdir, cfg)
    port = int(cfg["smtp"]["listen"].rsplit(":", 1)[1])
    log = workdir / "serve.log"
    exports = workdir / "exports"

    acked: list[str] = []  # sha256 of the PDF of every mail that got 250
    lock = threading.Lock()
    stop = threading.Event()

    def client(n: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            pdf = unique_pdf(f"client{n}-mail{i}-" + "x" * (i % 7) * 300)
            msg = make_mail(subject=f"Invoice {n}-{i}", attachments=[(f"inv-{n}-{i}.pdf", pdf, "application/pdf")])
            try:
                with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
                    s.send_message(msg, to_addrs=["invoices@localhost"])
            except (OSError, smtplib.SMTPException):
                time.sleep(0.05)  # the server is gone: this mail was not acknowledged
                continue
            with lock:
                acked.append(hashlib.sha256(pdf).hexdigest())
            time.sleep(0.05)  # a steady flow, so that each kill finds the workers busy

    def exported() -> Counter[str]:
        return Counter(hashlib.sha256(p.read_bytes()).hexdigest()
                       for p in exports.rglob("*.pdf") if not p.name.startswith("."))

    in_flight: list[int] = []
    with _orphans_stay_unreaped():
        proc = _serve(config, log)
        wait_port(port, timeout=30)
        threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        try:
            for _ in range(KILL_ROUNDS):
                start, done = len(acked), sum(exported().values())
                # kill while the workers are busy: mail is being taken, processed and exported
                wait_for(lambda: len(acked) >= start + 20 and sum(exported().values()) >= done + 10,
                         timeout=60, interval=0.02)
                with lock:
                    waiting = set(acked) - set(exported())  # acknowledged, not yet exported
                os.killpg(proc.pid, signal.SIGKILL)  # serve and its workers; no goodbye, no cleanup
                old, proc = proc, _serve(config, log)  # at once: the killed workers may not even be reaped
                old.wait()
                in_flight.append(len(waiting))
        finally:
            stop.set()
            for t in threads:
                t.join()
        try:
            wait_port(port, timeout=30)
            wait_for(lambda: set(acked) <= set(exported()), timeout=60, interval=0.3)
            time.sleep(1.5)  # anything still in flight would show up as a second copy now
            counts = exported()
            missing = [h for h in acked if counts[h] == 0]
            doubled = {h: c for h, c in counts.items() if c > 1}
            store = Store(workdir / "data")
            statuses = store.status_counts()
            print(f"{KILL_ROUNDS} kills, in flight at each {in_flight}; acknowledged {len(acked)}, exported "
                  f"{sum(counts.values())} files, missing {len(missing)}, doubled {len(doubled)}; {statuses}")
            assert all(n > 0 for n in in_flight), in_flight
            assert not missing
            assert not doubled
            assert not [p for p in exports.rglob("*") if p.name.endswith(".partial") or " (2)" in p.name]
            # every recorded mail (acknowledged, or recorded just before a kill) ended imported, none claimed
            assert set(statuses) == {"imported"}, statuses
            assert store.claimed_messages() == []
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


def test_export_command_beside_a_running_serve_delivers_each_document_once(workdir: Path) -> None:
    from conftest import run_cli

    cfg = base_config(workdir)
    cfg["web"]["enabled"] = False
    config = write_config(workdir, cfg)
    port = int(cfg["smtp"]["listen"].rsplit(":", 1)[1])
    raws = [make_mail(subject=f"Invoice {i}", attachments=[(f"i{i}.pdf", unique_pdf(f"beside-{i}"), "application/pdf")])
            for i in range(40)]
    files = []
    for i, raw in enumerate(raws):
        files.append(workdir / f"mail{i}.eml")
        files[-1].write_bytes(raw.as_bytes())
    # spooled and processed, not exported: serve is not running yet
    assert run_cli("--config", str(config), "-q", "import", *map(str, files)).returncode == 0
    proc = _serve(config, workdir / "serve.log")
    try:
        wait_port(port)
        clis = [subprocess.Popen([sys.executable, "-m", "gateway", "--config", str(config), "-q", "export"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(2)]
        for c in clis:
            c.wait(timeout=120)

        def exported() -> Counter[str]:
            return Counter(hashlib.sha256(p.read_bytes()).hexdigest()
                           for p in (workdir / "exports").rglob("*.pdf"))

        wait_for(lambda: sum(exported().values()) >= 40, timeout=60)
        time.sleep(1)
        counts = exported()
        assert len(counts) == 40 and set(counts.values()) == {1}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
