"""Soak: `serve` for N minutes under mixed load; nothing acknowledged may go missing.

Run: .venv/bin/python bench/soak.py [--minutes 10] [--clients 4]

Starts `python -m gateway serve` (a subprocess) with an SMTP listener, a
WebDAV target (WsgiDAV on loopback that answers 503 to about one request in
ten) and, when Dovecot is installed (tests/dovecot.py), a linked IMAP
mailbox polled every 20 s that a thread keeps appending invoices to. The
load: SMTP clients sending invoices as fast as they are answered, slow
clients that trickle DATA over seconds, clients that drop the connection in
the middle of DATA (those mails were never acknowledged and must not
appear), and a rule file rewritten every minute (a reload each time).

In the middle (``--kill-at``, default half the run) the whole process
group of serve (serve, its worker processes, their render workers) is
killed with SIGKILL and serve is started again at once. SMTP clients do what
a sending MTA does: a mail that got no 250 is sent again, the same bytes,
until it gets one; a copy that was stored just before the kill but never
acknowledged then ends ``duplicate`` of the first, as may a mail the
restarted poller downloads again.

At the end the load stops, the WebDAV server stops failing, and the run
waits for the exports to drain. It samples RSS and open file descriptors of
the serve process and of all its children (worker processes, render
workers; psutil, recursive) every 15 s and reports the total and each
process. Checks, each printed, all needed for the final VERDICT line (exit
status 1 otherwise):

- acknowledged (SMTP 250 plus IMAP appends) = messages stored (other than
  ``duplicate``) = documents = files on the WebDAV share = exported, and the
  stored and exported documents are exactly the acknowledged ones (0 lost,
  0 never sent): each acknowledged mail exported exactly once, kill or not;
- no content duplicate: no two files on the share with the same bytes, no
  message stored twice (only second copies sent again after the kill may be
  ``duplicate``, each naming a message that was imported);
- RSS growth after warm-up under 10 %: the total RSS at the end (after the
  drain) against the total at ``--warmup`` minutes (default 2), the maximum
  after warm-up printed beside it;
- no traceback in serve's log.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import smtplib
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import psutil  # noqa: E402
import yaml  # noqa: E402
from cheroot import wsgi  # noqa: E402
from wsgidav.wsgidav_app import WsgiDAVApp  # noqa: E402

PDF = b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"
DAV_USER, DAV_PASSWORD = "soak", "soak-password"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def invoice(tag: str, sender: str = "billing@supplier.example", size: int = 0) -> tuple[bytes, str]:
    """A mail with one unique PDF; returns (raw, sha256 of the PDF)."""
    pdf = PDF + f"% {tag}\n".encode() + b"0" * size
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = f"Supplier <{sender}>", "invoices@localhost", f"Invoice {tag}"
    m["Message-ID"] = f"<{tag}@soak.example>"
    m.set_content("Please find the invoice attached.")
    m.add_attachment(pdf, maintype="application", subtype="pdf", filename=f"invoice-{tag}.pdf")
    return m.as_bytes(), hashlib.sha256(pdf).hexdigest()


class Flaky:
    """WSGI middleware: answers 503 to a share of PUT and MOVE requests while ``failing``."""

    def __init__(self, app: Any, rate: float) -> None:
        self.app, self.rate, self.failing, self.failed = app, rate, True, 0
        self.rnd = random.Random(7)

    def __call__(self, environ: dict[str, Any], start: Any) -> Any:
        if self.failing and environ["REQUEST_METHOD"] in ("PUT", "MOVE") and self.rnd.random() < self.rate:
            self.failed += 1
            start("503 Service Unavailable", [("Content-Type", "text/plain"), ("Retry-After", "1")])
            return [b"try again later"]
        return self.app(environ, start)


def start_dav(root: Path, rate: float) -> tuple[wsgi.Server, Flaky, int]:
    (root / "invoices").mkdir(parents=True, exist_ok=True)  # the target's folder exists, as on a real share
    app = WsgiDAVApp({
        "provider_mapping": {"/": str(root)},
        "simple_dc": {"user_mapping": {"*": {DAV_USER: {"password": DAV_PASSWORD}}}},
        "http_authenticator": {"domain_controller": None, "accept_basic": True, "accept_digest": False,
                               "default_to_digest": False},
        "verbose": 0, "logging": {"enable": False}, "lock_storage": True,
    })
    flaky = Flaky(app, rate)
    port = free_port()
    server = wsgi.Server(("127.0.0.1", port), flaky, numthreads=8)
    server.prepare()
    threading.Thread(target=server.serve, daemon=True).start()
    return server, flaky, port


class Load:
    """The SMTP and IMAP load and what it was told."""

    def __init__(self, smtp_port: int, stop: threading.Event) -> None:
        self.port, self.stop = smtp_port, stop
        self.acked: list[str] = []
        self.dropped = 0
        self.refused = 0
        self.imap_appended: list[str] = []
        self.lock = threading.Lock()
        self.n = 0

    def tag(self, kind: str) -> str:
        with self.lock:
            self.n += 1
            return f"{kind}-{self.n}"

    def fast(self) -> None:
        while not self.stop.is_set():
            raw, sha = invoice(self.tag("fast"), size=random.randint(0, 30000))
            give_up = None
            while True:  # as an MTA does: the same mail again until it gets a 250
                try:
                    with smtplib.SMTP("127.0.0.1", self.port, timeout=60) as s:
                        s.sendmail("billing@supplier.example", ["invoices@localhost"], raw)
                    break
                except (OSError, smtplib.SMTPException):
                    with self.lock:
                        self.refused += 1
                    give_up = give_up or time.monotonic() + 120
                    if time.monotonic() > give_up:
                        return
                    time.sleep(0.5)
            with self.lock:
                self.acked.append(sha)
            time.sleep(random.uniform(0.05, 0.4))

    def _session(self, raw: bytes, chunk_pause: float, drop: bool) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=120) as s:
            f = s.makefile("rb")

            def reply() -> bytes:
                line = f.readline()
                while line[3:4] == b"-":
                    line = f.readline()
                return line

            reply()
            for cmd in (b"EHLO slow.test", b"MAIL FROM:<billing@supplier.example>", b"RCPT TO:<invoices@localhost>",
                        b"DATA"):
                s.sendall(cmd + b"\r\n")
                reply()
            data = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            data = b"\r\n".join(b"." + line if line.startswith(b".") else line for line in data.split(b"\r\n"))
            chunks = [data[i:i + 2048] for i in range(0, len(data), 2048)]
            for i, chunk in enumerate(chunks):
                if drop and i >= len(chunks) // 2:
                    return False  # hang up in the middle of DATA
                s.sendall(chunk)
                time.sleep(chunk_pause)
            s.sendall(b"\r\n.\r\n")
            ok = reply().startswith(b"250")
            s.sendall(b"QUIT\r\n")
            return ok

    def slow(self) -> None:
        while not self.stop.is_set():
            raw, sha = invoice(self.tag("slow"), size=20000)
            give_up = time.monotonic() + 300
            while time.monotonic() < give_up:  # sent again until it gets a 250
                try:
                    if self._session(raw, chunk_pause=0.3, drop=False):
                        with self.lock:
                            self.acked.append(sha)
                        break
                except OSError:
                    pass
                with self.lock:
                    self.refused += 1
                time.sleep(0.5)

    def dropper(self) -> None:
        while not self.stop.is_set():
            raw, _ = invoice(self.tag("dropped"), size=20000)
            try:
                self._session(raw, chunk_pause=0.05, drop=True)
                with self.lock:
                    self.dropped += 1
            except OSError:
                pass
            time.sleep(1)

    def imap(self, dc: Any, user: str) -> None:
        while not self.stop.is_set():
            raw, sha = invoice(self.tag("imap"), sender="billing@imap-supplier.example")
            dc.append(user, "INBOX", raw)
            with self.lock:
                self.imap_appended.append(sha)
            self.stop.wait(3)


def sample_tree(ps: psutil.Process) -> dict[int, tuple[str, float, int]]:
    """pid -> (role, RSS MiB, open fds) of serve and every process below it."""
    out: dict[int, tuple[str, float, int]] = {}
    try:
        procs = [ps, *ps.children(recursive=True)]
    except psutil.NoSuchProcess:
        return out
    for p in procs:
        try:
            with p.oneshot():
                role = "serve" if p.pid == ps.pid else _role(p)
                out[p.pid] = (role, p.memory_info().rss / 2**20, p.num_fds())
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue  # ended between the listing and the reading (a render worker)
    return out


def _role(p: psutil.Process) -> str:
    try:
        cmd = " ".join(p.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "?"
    if "gateway.workers" in cmd:
        return "worker"
    if "gateway.render" in cmd:
        return "render"
    return p.name()


class Tree:
    """RSS and fds of serve and its children over time: totals and per process."""

    def __init__(self) -> None:
        self.totals: list[tuple[float, float, int, int]] = []  # (minute, RSS MiB, fds, processes)
        self.procs: dict[int, dict[str, Any]] = {}

    def add(self, minute: float, sample: dict[int, tuple[str, float, int]]) -> tuple[float, int, int]:
        rss = sum(v[1] for v in sample.values())
        fds = sum(v[2] for v in sample.values())
        self.totals.append((minute, rss, fds, len(sample)))
        for pid, (role, r, f) in sample.items():
            p = self.procs.setdefault(pid, {"role": role, "first_min": minute, "rss_first": r, "fds_first": f,
                                            "rss_max": r, "fds_max": f})
            p.update(last_min=minute, rss_last=r, fds_last=f, rss_max=max(p["rss_max"], r),
                     fds_max=max(p["fds_max"], f))
        return rss, fds, len(sample)

    def growth(self, warmup: float) -> dict[str, Any]:
        """Total RSS at warm-up, at the end, the maximum after warm-up, and the growth in per cent."""
        after = [t for t in self.totals if t[0] >= warmup] or self.totals[-1:]
        base, end = after[0], self.totals[-1]
        peak = max(t[1] for t in after)
        return {"warmup_minute": round(base[0], 2), "at_warmup_mib": round(base[1], 1), "end_mib": round(end[1], 1),
                "max_after_warmup_mib": round(peak, 1),
                "growth_pct": round(100 * (end[1] - base[1]) / base[1], 1),
                "max_growth_pct": round(100 * (peak - base[1]) / base[1], 1)}


def share_files(root: Path) -> tuple[int, int, set[str]]:
    """Files on the WebDAV share (not sidecars or partial uploads): count, content duplicates, hashes."""
    hashes: list[str] = []
    for f in root.rglob("*"):
        if f.is_file() and not f.name.startswith(".") and not f.name.endswith((".json", ".part", ".tmp")):
            hashes.append(hashlib.sha256(f.read_bytes()).hexdigest())
    return len(hashes), len(hashes) - len(set(hashes)), set(hashes)


def rule_text(n: int) -> str:
    return (f"# revision {n}\nname: Supplier invoices\nwhen: {{subject: \"Invoice *\"}}\n"
            f"assign: {{tags: [soak, rev{n % 3}]}}\n")


def db_counts(db: Path) -> dict[str, Any]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        statuses = dict(conn.execute("SELECT status, count(*) FROM messages GROUP BY status").fetchall())
        exports = dict(conn.execute("SELECT state, count(*) FROM exports GROUP BY state").fetchall())
        docs = conn.execute("SELECT count(*) FROM documents").fetchone()[0]
        shas = {r[0] for r in conn.execute("SELECT sha256 FROM documents")}
        delivered = {r[0] for r in conn.execute(
            "SELECT d.sha256 FROM exports e JOIN documents d ON d.id = e.document_id WHERE e.state = 'delivered'")}
        # second copies whose first copy is not an imported message (none may be)
        stray_duplicates = conn.execute(
            "SELECT count(*) FROM messages m LEFT JOIN messages f ON f.id = m.duplicate_of "
            "WHERE m.status = 'duplicate' AND (f.id IS NULL OR f.status != 'imported')").fetchone()[0]
        claimed = conn.execute("SELECT count(*) FROM messages WHERE claimed_by IS NOT NULL").fetchone()[0]
    finally:
        conn.close()
    return {"messages": statuses, "exports": exports, "documents": docs, "shas": shas, "delivered": delivered,
            "stray_duplicates": stray_duplicates, "claimed": claimed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--clients", type=int, default=4, help="fast SMTP clients (plus 2 slow, 1 dropping)")
    ap.add_argument("--fail-rate", type=float, default=0.1, help="share of WebDAV PUT/MOVE answered 503")
    ap.add_argument("--drain", type=float, default=8.0, help="minutes to wait for exports at the end")
    ap.add_argument("--warmup", type=float, default=2.0,
                    help="minutes of warm-up: RSS growth is measured from here (default 2; half the run if shorter)")
    ap.add_argument("--rss-bound", type=float, default=10.0, help="allowed RSS growth after warm-up, per cent")
    ap.add_argument("--kill-at", type=float, default=None,
                    help="minute at which serve's whole process group gets SIGKILL and serve starts again "
                         "(default: half the run; a negative value: no kill)")
    args = ap.parse_args()
    kill_at = args.minutes / 2 if args.kill_at is None else args.kill_at
    warmup = args.warmup if args.warmup < args.minutes else args.minutes / 2
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    (work / "rules").mkdir()
    (work / "rules" / "suppliers.yaml").write_text(rule_text(0))
    dav_server, flaky, dav_port = start_dav(work / "dav", args.fail_rate)
    dc, user = None, ""
    try:
        from dovecot import Dovecot, dovecot_available

        if dovecot_available():
            dc = Dovecot()
            dc.start()
            user = dc.add_user("soak@example.test", "secret")
    except Exception as exc:  # the soak still runs, without IMAP
        print(f"no Dovecot: {exc}")
        dc = None
    smtp_port = free_port()
    cfg: dict[str, Any] = {
        "data_dir": str(work / "data"), "rules_dir": str(work / "rules"), "rules_watch": "poll",
        "smtp": {"listen": f"127.0.0.1:{smtp_port}", "hostname": "soak.test", "max_message_size": "5MB",
                 "addresses": [{"address": "invoices@localhost"}]},
        "exports": [{"name": "dav", "type": "webdav", "url": f"http://127.0.0.1:{dav_port}/invoices",
                     "username": DAV_USER, "password": DAV_PASSWORD, "filename": "{id}-{stem}"}],
        "web": {"enabled": False},
        "trust": {"dns_servers": ["127.0.0.1"], "dns_timeout": 0.5},  # no network here: fail fast
    }
    if dc is not None:
        cfg["mailboxes"] = [{"name": "dovecot", "host": "127.0.0.1", "port": dc.port, "security": "none",
                             "username": user, "password": "secret", "schedule": {"every": "20s"},
                             "idle": False, "since": "2020-01-01"}]
        cfg["unmatched"] = {"imap": "import"}
    (work / "gateway.yaml").write_text(yaml.safe_dump(cfg))
    log = open(work / "serve.log", "ab")

    def start_serve() -> subprocess.Popen[bytes]:
        # its own process group: the kill takes serve, its workers and their render workers at once
        return subprocess.Popen([sys.executable, "-m", "gateway", "--config", str(work / "gateway.yaml"), "serve"],
                                stdout=log, stderr=subprocess.STDOUT, cwd=work, start_new_session=True)

    proc = start_serve()
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", smtp_port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit("serve did not start; see " + str(work / "serve.log")) from None
            time.sleep(0.2)
    ps = psutil.Process(proc.pid)
    stop = threading.Event()
    load = Load(smtp_port, stop)
    threads = [threading.Thread(target=load.fast) for _ in range(args.clients)]
    threads += [threading.Thread(target=load.slow) for _ in range(2)] + [threading.Thread(target=load.dropper)]
    if dc is not None:
        threads.append(threading.Thread(target=load.imap, args=(dc, user)))
    for t in threads:
        t.start()
    start = time.monotonic()
    tree = Tree()
    reloads = 0
    kill: dict[str, Any] = {}
    print(f"soak: {args.minutes:g} min in {work}; IMAP {'on' if dc else 'off'}; WebDAV fails {args.fail_rate:.0%}; "
          f"RSS growth measured from minute {warmup:g}; "
          + (f"kill -9 of serve's process group at minute {kill_at:g}" if kill_at >= 0 else "no kill"))
    print(f"{'min':>5} {'RSS MiB':>8} {'fds':>5} {'procs':>5} {'acked':>6} {'stored':>6} {'delivered':>9}   "
          "(RSS and fds: serve and its children)")
    try:
        while time.monotonic() - start < args.minutes * 60:
            if not kill and kill_at >= 0 and time.monotonic() - start + 15 > kill_at * 60:
                time.sleep(max(0.0, kill_at * 60 - (time.monotonic() - start)))
                before = db_counts(work / "data" / "gateway.db")
                with load.lock:
                    acked_now = set(load.acked) | set(load.imap_appended)
                os.killpg(proc.pid, signal.SIGKILL)  # no goodbye: no flush, no cleanup
                proc = start_serve()  # at once
                ps = psutil.Process(proc.pid)
                kill = {"minute": round((time.monotonic() - start) / 60, 2),
                        "acknowledged_not_exported": len(acked_now - before["delivered"]),
                        "claimed": before["claimed"]}
                print(f"{kill['minute']:>5.1f} kill -9 of serve's process group with {kill['acknowledged_not_exported']} "
                      f"acknowledged mail(s) not yet exported ({kill['claimed']} claimed); serve started again",
                      flush=True)
                continue
            time.sleep(15)
            elapsed = time.monotonic() - start
            if int(elapsed // 60) > reloads:
                reloads += 1
                (work / "rules" / "suppliers.yaml").write_text(rule_text(reloads))
            rss, fds, nprocs = tree.add(elapsed / 60, sample_tree(ps))
            counts = db_counts(work / "data" / "gateway.db")
            print(f"{elapsed / 60:>5.1f} {rss:>8.1f} {fds:>5} {nprocs:>5} "
                  f"{len(load.acked) + len(load.imap_appended):>6} "
                  f"{sum(counts['messages'].values()):>6} {counts['exports'].get('delivered', 0):>9}", flush=True)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=180)
    flaky.failing = False
    acked = set(load.acked) | set(load.imap_appended)
    drain_end = time.monotonic() + args.drain * 60
    while time.monotonic() < drain_end:
        counts = db_counts(work / "data" / "gateway.db")
        if acked <= counts["delivered"] and counts["messages"].get("received", 0) == 0 and not counts["claimed"]:
            break
        time.sleep(5)
    counts = db_counts(work / "data" / "gateway.db")
    end_min = (time.monotonic() - start) / 60
    tree.add(end_min, sample_tree(ps))  # the end: after the drain, before stopping
    proc.terminate()
    proc.wait(timeout=60)
    log.close()
    dav_server.stop()
    if dc is not None:
        dc.stop()
        dc.cleanup()
    text = (work / "serve.log").read_text(errors="replace")
    tracebacks = text.count("Traceback (most recent call last)")
    errors = sum(1 for line in text.splitlines() if " ERROR " in line)
    duplicates = counts["messages"].get("duplicate", 0)
    stored_messages = sum(v for k, v in counts["messages"].items() if k != "duplicate")
    on_share, share_dups, share_shas = share_files(work / "dav" / "invoices")
    missing_stored = acked - counts["shas"]
    missing_exported = acked - counts["delivered"]
    missing_on_share = acked - share_shas
    extra = (counts["shas"] | share_shas) - acked
    growth = tree.growth(warmup)
    processes = [{"pid": pid, "role": p["role"], "minutes": f"{p['first_min']:.1f}-{p['last_min']:.1f}",
                  "rss_mib": [round(p["rss_first"], 1), round(p["rss_last"], 1), round(p["rss_max"], 1)],
                  "fds": [p["fds_first"], p["fds_last"], p["fds_max"]]}
                 for pid, p in sorted(tree.procs.items(), key=lambda kv: kv[1]["first_min"])]
    result = {
        "minutes": args.minutes, "smtp_acknowledged": len(load.acked), "imap_appended": len(load.imap_appended),
        "acknowledged": len(acked), "messages_stored": stored_messages, "message_statuses": counts["messages"],
        "documents": counts["documents"], "exported": len(counts["delivered"] & acked),
        "files_on_share": on_share, "content_duplicates_on_share": share_dups,
        "export_states": counts["exports"], "webdav_503_answers": flaky.failed, "dropped_mid_data": load.dropped,
        "smtp_client_errors": load.refused, "rule_reloads": reloads,
        "missing_stored": len(missing_stored), "missing_exported": len(missing_exported),
        "missing_on_share": len(missing_on_share), "never_acknowledged": len(extra),
        "serve_tracebacks": tracebacks, "serve_error_lines": errors, "kill": kill or None,
        "duplicates_after_kill": duplicates, "claimed_at_end": counts["claimed"],
        "rss_total": growth,
        "fds_total": {"first": tree.totals[0][2], "last": tree.totals[-1][2], "max": max(t[2] for t in tree.totals)},
        "processes (rss_mib and fds: first, last, max)": processes,
        "workdir": str(work),
    }
    print(json.dumps(result, indent=2))

    n = len(acked)
    checks = [
        ("counts equal", f"acknowledged {n} = messages stored {stored_messages} = documents {counts['documents']} = "
         f"files on share {on_share} = exported {len(counts['delivered'] & acked)}",
         n == stored_messages == counts["documents"] == on_share == len(counts["delivered"] & acked)),
        ("0 lost", f"0 lost: {len(missing_stored)} not stored, {len(missing_exported)} not exported, "
         f"{len(missing_on_share)} not on the share", not (missing_stored or missing_exported or missing_on_share)),
        ("0 duplicates", f"0 duplicates: {share_dups} content duplicate(s) on the share, "
         f"{len(extra)} never acknowledged, {duplicates} second cop(ies) sent again after the kill ended "
         f"duplicate ({counts['stray_duplicates']} not of an imported message)",
         share_dups == 0 and not extra and not counts["stray_duplicates"] and (kill or not duplicates)),
        ("nothing stuck", f"nothing left received or claimed ({counts['messages'].get('received', 0)} received, "
         f"{counts['claimed']} claimed)", not counts["messages"].get("received") and not counts["claimed"]),
        ("RSS growth", f"RSS growth after warm-up {growth['growth_pct']:+.1f} % (total {growth['at_warmup_mib']} MiB at minute "
         f"{growth['warmup_minute']:g} -> {growth['end_mib']} MiB at the end; max {growth['max_after_warmup_mib']} MiB, "
         f"{growth['max_growth_pct']:+.1f} %) under the {args.rss_bound:g} % bound",
         growth["growth_pct"] < args.rss_bound),
        ("no tracebacks", f"no tracebacks in serve's log ({tracebacks})", tracebacks == 0),
    ]
    print("\nper process (RSS MiB first/last/max, fds first/last/max):")
    for p in processes:
        print(f"  {p['pid']:>7} {p['role']:<10} min {p['minutes']:<10} RSS {p['rss_mib'][0]:>6} {p['rss_mib'][1]:>6} "
              f"{p['rss_mib'][2]:>6}   fds {p['fds'][0]:>3} {p['fds'][1]:>3} {p['fds'][2]:>3}")
    print()
    for _, text_, ok_ in checks:
        print(f"{'ok  ' if ok_ else 'FAIL'} {text_}")
    failed = [name for name, _, ok_ in checks if not ok_]
    ok = not failed
    print(f"VERDICT: {'PASS' if ok else 'FAIL'}: {args.minutes:g} min"
          + (f", kill -9 at minute {kill['minute']:g}" if kill else "") + f", {n} acknowledged, "
          f"{len(missing_stored | missing_exported | missing_on_share)} lost, "
          f"{share_dups + counts['stray_duplicates'] + len(extra)} duplicates, "
          f"RSS {growth['growth_pct']:+.1f} % after warm-up (bound {args.rss_bound:g} %), {tracebacks} tracebacks"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    sys.exit(0 if ok else 1)

if __name__ == "__main__":
    main()
