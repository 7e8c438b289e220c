"""SMTP intake benchmark: the gateway beside a bare aiosmtpd server, same run, same load.

Prints, for 2 KB and 100 KB mails over 10 concurrent connections:
  - mails/s accepted (250) by the gateway and by a bare aiosmtpd server that only
    fsyncs each message to a file, and their ratio;
  - mails/s exported (accepted and delivered into the export folder);
then the latency from 250 to the file in the export folder for 100 mails sent
one after another (median, p95), and the peak RSS of `serve` while it receives
4 concurrent 20 MB mails.

Load generator: Postfix's smtp-source when installed (Debian package postfix),
else a Python one (threads with smtplib).

    .venv/bin/python bench/smtp_throughput.py [--mails 2000] [--repeat 3]
"""

from __future__ import annotations

import argparse
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

import yaml

ROOT = Path(__file__).resolve().parent.parent
SMTP_SOURCE = shutil.which("smtp-source") or ("/usr/sbin/smtp-source" if Path("/usr/sbin/smtp-source").exists() else None)

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
    subprocess.run([SMTP_SOURCE, "-s", str(sessions), "-m", str(mails), "-l", str(size), "-d",
                    "-f", "bench@load.example", "-t", "invoices@localhost", f"127.0.0.1:{port}"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


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
    """Gateway and bare server under the same load, in pairs; the order alternates between
    runs so a slow spell of the shared machine does not always hit the same side."""
    load = smtp_source_load if SMTP_SOURCE else python_load
    gw_rates, bare_rates, exp_rates = [], [], []

    def run_bare(work: Path) -> None:
        bare, bport = start_bare(work)
        try:
            bare_rates.append(mails / load(bport, mails, size, sessions))
        finally:
            stop(bare)

    def run_gateway(work: Path) -> None:
        proc, port, exports = start_gateway(work / "gw", unmatched="attachments" if SMTP_SOURCE is None else "keep")
        try:
            t0 = time.perf_counter()
            gw_rates.append(mails / load(port, mails, size, sessions))
            if SMTP_SOURCE is None:  # smtp-source mails carry no attachment: nothing to export
                deadline = time.monotonic() + 600
                while count_files(exports) < mails and time.monotonic() < deadline:
                    time.sleep(0.1)
                exp_rates.append(count_files(exports) / (time.perf_counter() - t0))
        finally:
            stop(proc)

    for r in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            for side in ((run_bare, run_gateway) if r % 2 == 0 else (run_gateway, run_bare)):
                side(Path(tmp))
    g, b = statistics.median(gw_rates), statistics.median(bare_rates)
    pairs = statistics.median(x / y for x, y in zip(gw_rates, bare_rates, strict=True))
    print(f"{size // 1024:>4} KB x {mails} mails, {sessions} sessions, {repeat} runs, load: "
          f"{'smtp-source' if SMTP_SOURCE else 'python smtplib'}")
    print(f"      accepted/s  gateway {g:8.0f}   bare aiosmtpd+fsync {b:8.0f}   ratio {g / b:.2f}"
          f"   median of paired ratios {pairs:.2f}")
    print(f"      runs: gateway {[round(x) for x in gw_rates]}, bare {[round(x) for x in bare_rates]}")
    if exp_rates:
        print(f"      exported/s  gateway {statistics.median(exp_rates):8.0f}  (accepted, parsed, stored and copied to the folder)")


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
        p = psutil.Process(proc.pid)
        base = p.memory_info().rss
        peak = base
        done = threading.Event()

        def watch() -> None:
            nonlocal peak
            while not done.is_set():
                try:
                    peak = max(peak, p.memory_info().rss)
                except psutil.Error:
                    return
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
            deadline = time.monotonic() + 120
            while count_files(exports) < 4 and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            done.set()
            w.join()
            stop(proc)
    print(f"peak RSS of serve, 4 concurrent {len(big) / 1e6:.0f} MB mails: {peak / 1e6:.0f} MB (idle {base / 1e6:.0f} MB)")


print = functools.partial(print, flush=True)  # noqa: A001 - figures appear as they are measured


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mails", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sessions", type=int, default=10)
    ap.add_argument("--skip", default="", help="comma list of: throughput,exported,latency,rss")
    args = ap.parse_args()
    skip = set(args.skip.split(","))
    print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}")
    if "throughput" not in skip:
        throughput(2048, args.mails, args.repeat, args.sessions)
        throughput(100 * 1024, args.mails, args.repeat, args.sessions)
    if "exported" not in skip:
        exported_throughput(2048, min(args.mails, 1000), args.sessions)
    if "latency" not in skip:
        latency()
    if "rss" not in skip:
        peak_rss()


if __name__ == "__main__":
    main()
