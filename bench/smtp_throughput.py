"""SMTP intake benchmark: the gateway beside Postfix and a bare aiosmtpd server, same run, same load.

Prints, for 2 KB and 100 KB mails over 10 concurrent connections:
  - mails/s accepted (250) by the gateway, by a private Postfix instance (its
    queue file fsync'd before 250, as Postfix does; delivery to a maildir) and
    by a bare aiosmtpd server that only fsyncs each message to a file; each
    round runs all three one after the other, the order alternating between
    rounds, and the script prints the median of the per-round ratios
    gateway / Postfix and gateway / bare (the machine is shared: compare ratios);
  - intake first: the gateway's rate with its worker processes parsing the mail
    meanwhile, against the same with them stopped (SIGSTOP) during the load; and,
    with them running, how many mails were processed while the load ran and how
    many seconds after it every mail had an outcome;
then the latency from 250 to the file in the export folder for 100 mails sent
one after another (median, p95), and the peak RSS of `serve` and of `serve`
with its worker processes while it receives 4 concurrent 20 MB mails.

Load generator: Postfix's smtp-source (Debian package postfix, listed in
deps/debian-bench.txt), else a Python one (threads with smtplib; then no
Postfix comparison). Postfix runs as root under a temporary config folder,
listening only on 127.0.0.1 on a free port; the script starts and stops it.

    .venv/bin/python bench/smtp_throughput.py [--mails 2000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import shutil
import signal
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
SMTP_SOURCE = shutil.which("smtp-source") or ("/usr/sbin/smtp-source" if Path("/usr/sbin/smtp-source").exists() else None)
POSTFIX = shutil.which("postfix") or ("/usr/sbin/postfix" if Path("/usr/sbin/postfix").exists() else None)

BARE_SERVER = r'''
import os, sys, uuid, time, threading
from aiosmtpd.controller import Controller
root = sys.argv[1]; port = int(sys.argv[2])
class H:
    async def handle_DATA(self, server, session, envelope):
        name = os.path.join(root, uuid.uuid4().hex)
        with open(name + ".tmp", "wb") as fh:
            fh.write(envelope.original_content or envelope.content)
            fh.flush(); os.fsync(fh.fileno())
        os.rename(name + ".tmp", name + ".eml")
        fd = os.open(root, os.O_RDONLY); os.fsync(fd); os.close(fd)
        return "250 OK"
c = Controller(H(), hostname="127.0.0.1", port=port, data_size_limit=60 * 1024 * 1024)
c.start()
print("ready", flush=True)
threading.Event().wait()
'''


class PrivatePostfix:
    """A Postfix instance of its own under ``work``: 127.0.0.1 on a free port, mail for
    invoices@localhost delivered to a maildir; started and stopped by this script (as root)."""

    def __init__(self, work: Path) -> None:
        import pwd

        assert POSTFIX
        self.work = work
        self.conf = work / "conf"
        self.port = free_port()
        self.maildir = work / "maildir"
        pw = pwd.getpwnam("postfix")
        for d in (work, self.conf, work / "queue"):
            d.mkdir(parents=True, exist_ok=True)
        for d in (self.maildir, work / "data"):
            d.mkdir(exist_ok=True)
            os.chown(d, pw.pw_uid, pw.pw_gid)
        # the postfix user must reach the queue and the maildir
        for d in [work, *work.parents]:
            if d == Path("/tmp") or d == Path("/"):
                break
            os.chmod(d, os.stat(d).st_mode | 0o755)
        (self.conf / "main.cf").write_text(f"""\
compatibility_level = 3.6
queue_directory = {work}/queue
data_directory = {work}/data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = bench.localhost
mydestination =
relay_domains =
mynetworks = 127.0.0.0/8
smtpd_recipient_restrictions = permit_mynetworks, reject
alias_maps =
alias_database =
local_recipient_maps =
virtual_mailbox_domains = localhost
virtual_mailbox_base = {self.maildir}
virtual_mailbox_maps = static:invoices/
virtual_uid_maps = static:{pw.pw_uid}
virtual_gid_maps = static:{pw.pw_gid}
virtual_minimum_uid = 1
virtual_mailbox_limit = 0
message_size_limit = 62914560
smtputf8_enable = yes
biff = no
maillog_file_prefixes = {work}
maillog_file = {work}/maillog
""")
        # Debian's master.cf with the SMTP listener on our port and nothing chrooted
        lines = []
        for line in Path("/etc/postfix/master.cf").read_text().splitlines():
            f = line.split()
            if line.startswith(("#", " ", "\t")) or len(f) < 8:
                lines.append(line)
                continue
            if f[:2] == ["smtp", "inet"]:
                f[0] = str(self.port)
            f[4] = "n"
            lines.append("  ".join(f))
        (self.conf / "master.cf").write_text("\n".join(lines) + "\n")

    def _postfix(self, *args: str) -> subprocess.CompletedProcess[str]:
        assert POSTFIX
        return subprocess.run([POSTFIX, "-c", str(self.conf), *args], capture_output=True, text=True,
                              env=dict(os.environ, MAIL_CONFIG=str(self.conf)))

    def start(self) -> int:
        r = self._postfix("start")
        if r.returncode != 0:
            log = (self.work / "maillog").read_text() if (self.work / "maillog").exists() else ""
            raise RuntimeError(f"postfix start failed: {r.stderr} {log[-2000:]}")
        wait_port(self.port)
        return self.port

    def stop(self) -> None:
        self._postfix("stop")
        pid = self.work / "queue" / "pid" / "master.pid"
        deadline = time.monotonic() + 20
        while pid.exists() and time.monotonic() < deadline:
            time.sleep(0.1)


def postfix_usable() -> bool:
    return bool(POSTFIX and SMTP_SOURCE and os.geteuid() == 0 and Path("/etc/postfix/master.cf").exists())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def make_message(size: int, i: int) -> bytes:
    """A mail of about ``size`` bytes carrying a small PDF attachment (unique per i)."""
    import base64

    pdf = b"%PDF-1.4\n% bench " + str(i).encode() + b"\n" + b"0" * max(0, int(size * 0.73) - 400) + b"\n%%EOF\n"
    body = base64.encodebytes(pdf).replace(b"\n", b"\r\n")
    head = (f"From: bench@load.example\r\nTo: invoices@localhost\r\nSubject: Invoice {i}\r\n"
            f"Message-ID: <{i}.{time.monotonic_ns()}@load.example>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\n"
            "invoice attached\r\n--B\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
            f"Content-Disposition: attachment; filename=inv-{i}.pdf\r\n\r\n").encode()
    return head + body + b"--B--\r\n"


def python_load(port: int, mails: int, size: int, sessions: int) -> float:
    """Send ``mails`` over ``sessions`` connections; returns seconds."""
    per = [mails // sessions + (1 if k < mails % sessions else 0) for k in range(sessions)]
    msgs = [[make_message(size, k * 100000 + j) for j in range(n)] for k, n in enumerate(per)]
    errors: list[Exception] = []

    def run(n: int, k: int) -> None:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=120) as s:
                for j in range(n):
                    s.sendmail("bench@load.example", ["invoices@localhost"], msgs[k][j])
        except Exception as exc:
            errors.append(exc)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=run, args=(n, k)) for k, n in enumerate(per)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - t0


def smtp_source_load(port: int, mails: int, size: int, sessions: int) -> float:
    assert SMTP_SOURCE
    t0 = time.perf_counter()
    r = subprocess.run([SMTP_SOURCE, "-s", str(sessions), "-m", str(mails), "-l", str(size), "-d",
                        "-f", "bench@load.example", "-t", "invoices@localhost", f"127.0.0.1:{port}"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if r.returncode != 0:
        raise LoadFailed(r.stderr.decode(errors="replace").strip()[-300:])
    return time.perf_counter() - t0


class LoadFailed(Exception):
    """The load generator gave up (a server too slow for its timeouts on a busy machine)."""


def retried(side: Any, *args: Any) -> None:
    """Run one side of a round; once more when the load generator gave up."""
    try:
        side(*args)
    except LoadFailed as exc:
        print(f"      ({side.__name__}: smtp-source failed: {exc}; run again)")
        side(*args)


def start_gateway(work: Path, unmatched: str = "import") -> tuple[subprocess.Popen[bytes], int, Path]:
    port = free_port()
    cfg = {
        "data_dir": str(work / "data"), "rules_dir": str(work / "rules"), "rules_watch": "poll",
        "smtp": {"listen": f"127.0.0.1:{port}", "max_message_size": "60MB",
                 "addresses": [{"address": "invoices@localhost"}]},
        "exports": [{"name": "nas", "type": "folder", "path": str(work / "exports"), "filename": "{id}-{stem}"}],
        "web": {"enabled": False},
        "unmatched": {"smtp": unmatched},
    }
    (work / "rules").mkdir(parents=True, exist_ok=True)
    config = work / "gateway.yaml"
    config.write_text(yaml.safe_dump(cfg))
    log = open(work / "serve.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "-q", "--config", str(config), "serve"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    wait_port(port)
    return proc, port, work / "exports"


def start_bare(work: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    (work / "bare").mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", BARE_SERVER, str(work / "bare"), str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    assert proc.stdout is not None
    proc.stdout.readline()
    wait_port(port)
    return proc, port


def stop(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def count_files(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def throughput(size: int, mails: int, repeat: int, sessions: int) -> None:
    """Gateway, Postfix and the bare server under the same load, one after the other in
    each round; the order alternates between rounds so a slow spell of the shared
    machine does not always hit the same server. Ratios are taken per round."""
    load = smtp_source_load if SMTP_SOURCE else python_load
    rates: dict[str, list[float]] = {"gateway": [], "postfix": [], "bare": []}
    exp_rates: list[float] = []

    def run_bare(work: Path) -> None:
        bare, bport = start_bare(work)
        try:
            rates["bare"].append(mails / load(bport, mails, size, sessions))
        finally:
            stop(bare)

    def run_postfix(work: Path) -> None:
        pf = PrivatePostfix(work / "postfix")
        port = pf.start()
        try:
            rates["postfix"].append(mails / load(port, mails, size, sessions))
        finally:
            pf.stop()

    def run_gateway(work: Path) -> None:
        proc, port, exports = start_gateway(work / "gw", unmatched="attachments" if SMTP_SOURCE is None else "keep")
        try:
            t0 = time.perf_counter()
            rates["gateway"].append(mails / load(port, mails, size, sessions))
            if SMTP_SOURCE is None:  # smtp-source mails carry no attachment: nothing to export
                deadline = time.monotonic() + 600
                while count_files(exports) < mails and time.monotonic() < deadline:
                    time.sleep(0.1)
                exp_rates.append(count_files(exports) / (time.perf_counter() - t0))
        finally:
            stop(proc)

    sides = [run_gateway, run_bare] + ([run_postfix] if postfix_usable() else [])
    if not postfix_usable():
        print("      (no Postfix comparison: it needs root, /usr/sbin/postfix and smtp-source; `make deb-bench`)")
    for r in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            for side in (sides if r % 2 == 0 else sides[::-1]):
                retried(side, Path(tmp))
    print(f"{size // 1024:>4} KB x {mails} mails, {sessions} sessions, {repeat} rounds, load: "
          f"{'smtp-source' if SMTP_SOURCE else 'python smtplib'}")
    for name, xs in rates.items():
        if xs:
            print(f"      accepted/s  {name:8} median {statistics.median(xs):6.0f}   rounds {[round(x) for x in xs]}")
    for base in ("postfix", "bare"):
        if rates[base]:
            pairs = [g / b for g, b in zip(rates["gateway"], rates[base], strict=True)]
            print(f"      gateway / {base:8} median of paired rounds {statistics.median(pairs):.2f}   "
                  f"rounds {[round(x, 2) for x in pairs]}")
    if exp_rates:
        print(f"      exported/s  gateway {statistics.median(exp_rates):8.0f}  (accepted, parsed, stored and copied to the folder)")


def intake_first(size: int, mails: int, repeat: int, sessions: int, worker_nice: int | None = None) -> None:
    """The gateway's SMTP rate with its worker processes parsing meanwhile, against the
    same with the workers stopped (SIGSTOP) during the load; pairs, order alternating.
    ``worker_nice`` renices the workers first (to measure another niceness than theirs)."""
    import psutil  # type: ignore[import-untyped]

    load = smtp_source_load if SMTP_SOURCE else python_load
    busy: list[float] = []
    idle: list[float] = []
    during: list[int] = []  # mails with an outcome when the load ended (workers running)
    drains: list[float] = []  # seconds from the end of the load until every mail had one

    def run(work: Path, stopped: bool) -> None:
        proc, port, _ = start_gateway(work, unmatched="attachments")
        try:
            time.sleep(2)  # the workers are up
            workers = psutil.Process(proc.pid).children(recursive=True)
            if worker_nice is not None:
                for w in workers:
                    w.nice(worker_nice)
            if stopped:
                for w in workers:
                    w.suspend()
            try:
                (idle if stopped else busy).append(mails / load(port, mails, size, sessions))
            finally:
                for w in workers:
                    with contextlib.suppress(psutil.Error):
                        w.resume()
            if not stopped:
                done, drain = catch_up(work / "data" / "gateway.db", mails)
                during.append(done)
                drains.append(drain)
        finally:
            stop(proc)

    for r in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            order = (False, True) if r % 2 == 0 else (True, False)
            for k, stopped in enumerate(order):
                retried(run, Path(tmp) / f"gw{k}", stopped)
    pairs = [b / i for b, i in zip(busy, idle, strict=True)]
    nice = f" at nice {worker_nice}" if worker_nice is not None else ""
    print(f"intake first, {size // 1024} KB x {mails} mails: accepted/s with workers{nice} parsing "
          f"{statistics.median(busy):.0f}, workers stopped {statistics.median(idle):.0f}; "
          f"median of paired ratios {statistics.median(pairs):.2f} (goal >= 0.90), rounds {[round(x, 2) for x in pairs]}")
    print(f"      with the workers running: processed while the load ran {during} of {mails} mails; every mail "
          f"had an outcome {[round(x, 1) for x in drains]} s after the load ended")


def catch_up(db: Path, mails: int, timeout: float = 600) -> tuple[int, float]:
    """Mails with an outcome now, and seconds until all ``mails`` have one."""
    import sqlite3

    conn = sqlite3.connect(db, timeout=30)
    try:
        def done() -> int:
            return int(conn.execute("SELECT count(*) FROM messages WHERE status != 'received'").fetchone()[0])
        now, t0 = done(), time.perf_counter()
        while done() < mails and time.perf_counter() - t0 < timeout:
            time.sleep(0.1)
        return now, time.perf_counter() - t0
    finally:
        conn.close()


def exported_throughput(size: int, mails: int, sessions: int) -> None:
    """Accepted-and-exported rate with attachments (python load: smtp-source sends no MIME)."""
    with tempfile.TemporaryDirectory() as tmp:
        proc, port, exports = start_gateway(Path(tmp) / "gw", unmatched="attachments")
        try:
            t0 = time.perf_counter()
            secs = python_load(port, mails, size, sessions)
            deadline = time.monotonic() + 600
            while count_files(exports) < mails and time.monotonic() < deadline:
                time.sleep(0.1)
            total = time.perf_counter() - t0
            print(f"{size // 1024:>4} KB x {mails} mails with a PDF: accepted/s {mails / secs:7.0f}, "
                  f"exported/s {count_files(exports) / total:7.0f} ({count_files(exports)} files)")
        finally:
            stop(proc)


def latency(n: int = 100) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        proc, port, exports = start_gateway(Path(tmp) / "gw", unmatched="attachments")
        lat = []
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
                for i in range(n):
                    raw = make_message(2048, i)
                    s.sendmail("bench@load.example", ["invoices@localhost"], raw)
                    t0 = time.perf_counter()
                    while count_files(exports) < i + 1:
                        time.sleep(0.002)
                    lat.append((time.perf_counter() - t0) * 1000)
        finally:
            stop(proc)
    lat.sort()
    print(f"latency 250 -> file in export folder, {n} mails one after another: "
          f"median {statistics.median(lat):.0f} ms, p95 {lat[int(0.95 * n) - 1]:.0f} ms, max {lat[-1]:.0f} ms")


def peak_rss() -> None:
    import psutil  # type: ignore[import-untyped]

    with tempfile.TemporaryDirectory() as tmp:
        proc, port, exports = start_gateway(Path(tmp) / "gw", unmatched="attachments")
        time.sleep(2)  # the workers are up
        p = psutil.Process(proc.pid)

        def rss() -> tuple[int, int]:
            own = p.memory_info().rss
            total = own
            for c in p.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    total += c.memory_info().rss
            return own, total

        base, base_total = rss()
        peak, peak_total = base, base_total
        done = threading.Event()

        def watch() -> None:
            nonlocal peak, peak_total
            while not done.is_set():
                try:
                    own, total = rss()
                except psutil.Error:
                    return
                peak, peak_total = max(peak, own), max(peak_total, total)
                time.sleep(0.02)

        w = threading.Thread(target=watch)
        w.start()
        try:
            bigs = [make_message(20 * 1024 * 1024, k) for k in range(4)]
            big = bigs[0]

            def send(k: int) -> None:
                with smtplib.SMTP("127.0.0.1", port, timeout=300) as s:
                    s.sendmail("bench@load.example", ["invoices@localhost"], bigs[k])
            threads = [threading.Thread(target=send, args=(k,)) for k in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            deadline = time.monotonic() + 300
            while count_files(exports) < 4 and time.monotonic() < deadline:
                time.sleep(0.1)
            exported = count_files(exports)
        finally:
            done.set()
            w.join()
            stop(proc)
    print(f"peak RSS, 4 concurrent {len(big) / 1e6:.0f} MB mails: serve {peak / 1e6:.0f} MB (idle {base / 1e6:.0f} MB); "
          f"serve and its workers {peak_total / 1e6:.0f} MB (idle {base_total / 1e6:.0f} MB); "
          f"{exported} of 4 exported")


print = functools.partial(print, flush=True)  # noqa: A001 - figures appear as they are measured


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mails", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sessions", type=int, default=10)
    ap.add_argument("--worker-nice", type=int, default=None,
                    help="for the intake-first figure: renice the worker processes to this first")
    ap.add_argument("--skip", default="", help="comma list of: throughput,intake,exported,latency,rss")
    args = ap.parse_args()
    skip = set(args.skip.split(","))
    print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}")
    if "throughput" not in skip:
        throughput(2048, args.mails, args.repeat, args.sessions)
        throughput(100 * 1024, args.mails, args.repeat, args.sessions)
    if "intake" not in skip:
        intake_first(2048, args.mails, args.repeat, args.sessions, args.worker_nice)
    if "exported" not in skip:
        exported_throughput(2048, min(args.mails, 1000), args.sessions)
    if "latency" not in skip:
        latency()
    if "rss" not in skip:
        peak_rss()


if __name__ == "__main__":
    main()
