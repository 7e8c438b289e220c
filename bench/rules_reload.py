"""Rules reload: atomic save to new rules in force (500 files), and re-examining 10,000 unmatched mails.

Run: .venv/bin/python bench/rules_reload.py [--files 500] [--saves 7] [--mails 10000]

(a) Saves one rule file of a folder of ``--files`` (write a temp file, then
os.replace) and measures the milliseconds until the real RulesWatcher (its
default mode and debounce) reports the new rule set: the median over
``--saves`` saves, beside the median time to load the folder once in the same
run (the rest is the debounce and the watcher's wait for quiet).

(b) Starts the gateway's Service (worker processes, no SMTP or web), spools
``--mails`` mails from the CLI import source whose unmatched policy is keep, waits
until all are unmatched (the first processing is the baseline), then saves a
rule that ignores half of them and measures the time from the save to the end
of the re-examination (every re-examined mail has an outcome), in mails per
second, with the count of changed mails the gateway recorded.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.config import parse_settings  # noqa: E402
from gateway.models import Envelope  # noqa: E402
from gateway.rules import RulesWatcher, load_rules  # noqa: E402


def rule_text(i: int, version: int = 0) -> str:
    """One rule file: supplier ``i``'s address plus a word (the classic case)."""
    return (f"name: supplier {i} v{version}\nwhen:\n  from: billing@supplier{i}.example\n  contains: Rechnung\n"
            f"assign: {{company: Supplier {i}, tags: [bench]}}\n")


def atomic_save(path: Path, text: str) -> None:
    """Save as editors and git do: a temp file beside it, then a rename over it."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def bench_save(files: int, saves: int) -> None:
    """(a): milliseconds from an atomic save to the new rule set, beside the load time."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for i in range(files):
            (folder / f"supplier-{i:03d}.yaml").write_text(rule_text(i), encoding="utf-8")
        loads = []
        for _ in range(saves):
            t0 = time.perf_counter()
            ruleset, problems = load_rules(folder)
            loads.append(time.perf_counter() - t0)
            assert ruleset is not None and len(ruleset.rules) == files, problems
        seen: list[tuple[float, Any]] = []
        arrived = threading.Condition()

        def on_change(ruleset: Any, problems: list[Any]) -> None:
            with arrived:
                seen.append((time.perf_counter(), ruleset))
                arrived.notify_all()

        watcher = RulesWatcher(folder, on_change, initial_digest=ruleset.digest)
        watcher.start()
        delays = []
        try:
            time.sleep(1.0)  # let the observer settle
            for version in range(1, saves + 1):
                i = (version * 37) % files
                want = f"supplier {i} v{version}"
                t0 = time.perf_counter()
                atomic_save(folder / f"supplier-{i:03d}.yaml", rule_text(i, version))
                with arrived:
                    ok = arrived.wait_for(lambda: any(r is not None and r.get(want) for _, r in seen), timeout=30)
                assert ok, f"the watcher did not report {want!r} within 30 s"
                at = next(t for t, r in seen if r is not None and r.get(want))
                delays.append(at - t0)
                seen.clear()
        finally:
            watcher.stop()
    print(f"(a) {files} rule files, watcher mode {watcher.mode!r}, debounce {watcher.debounce:.1f} s, {saves} saves")
    print(f"    save -> new rules in force: median {statistics.median(delays) * 1000:7.0f} ms "
          f"(min {min(delays) * 1000:.0f}, max {max(delays) * 1000:.0f})")
    print(f"    baseline, loading the {files} files: median {statistics.median(loads) * 1000:7.0f} ms "
          f"(the rest, {max(0.0, statistics.median(delays) - statistics.median(loads)) * 1000:.0f} ms, is the "
          "debounce: the watcher waits for quiet)")


def mail(n: int) -> bytes:
    """Mail ``n``: even ones from a supplier that the new rule ignores, odd ones from strangers."""
    sender = "billing@acme.example" if n % 2 == 0 else f"user{n}@stranger.example"
    return (f"From: Sender {n} <{sender}>\r\nTo: invoices@home.example\r\nSubject: Statement {n}\r\n"
            f"Message-ID: <{n}.{time.time_ns()}@bench.example>\r\nDate: Sun, 22 Nov 2026 03:00:00 +0000\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\n" + "Your statement is ready.\r\n" * 20).encode()


def wait_until(pred: Any, timeout: float, what: str) -> float:
    """Poll ``pred`` every 20 ms; returns the perf_counter when it held."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if pred():
            return time.perf_counter()
        time.sleep(0.02)
    raise SystemExit(f"timed out waiting for {what}")


def bench_reexamine(count: int) -> None:
    """(b): re-examining ``count`` unmatched mails through the Service, mails per second."""
    from gateway.service import Service

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        settings = parse_settings({
            "data_dir": str(base / "data"), "rules_dir": str(base / "rules"),
            "smtp": {"enabled": False}, "web": {"enabled": False},
            "unmatched": {"import": "keep"},
        }, base=base)
        service = Service(settings)
        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            spooled = list(pool.map(lambda n: service.spool.write_file(mail(n), Envelope(source="import")),
                                    range(count)))
        for k in range(0, count, 500):
            service.spool.record(spooled[k:k + 500])
        seed_s = time.perf_counter() - t0
        store = service.store
        t0 = time.perf_counter()
        service.start(web=False, smtp=False)
        try:
            t1 = wait_until(lambda: store.status_counts().get("unmatched", 0) == count, 1800, "the first processing")
            first_rate = count / (t1 - t0)
            t0 = time.perf_counter()
            atomic_save(settings.rules_dir / "acme.yaml",
                        "name: ACME statements\nwhen: {from: billing@acme.example}\naction: ignore\n")
            t_start = wait_until(lambda: store.status_counts().get("received", 0) > 0, 60, "the re-examination")
            t_end = wait_until(lambda: store.status_counts().get("received", 0) == 0, 1800, "the re-examination's end")
            last = wait_until(lambda: store.get_kv("last_reexamine"), 60, "the recorded count") and \
                store.get_kv("last_reexamine")
        finally:
            service.stop()
    rate = count / (t_end - t_start)
    workers = f"{settings.limits.workers} worker processes" if settings.limits.worker_processes else "threads"
    print(f"(b) {count} unmatched mails ({workers}); spooling them took {seed_s:.1f} s")
    print(f"    re-examination: {t_end - t_start:6.1f} s = {rate:8,.0f} mails/s "
          f"(save -> start {t_start - t0:.1f} s; recorded: examined {last['examined']}, changed {last['changed']})")
    print(f"    baseline, their first processing: {count / first_rate:6.1f} s = {first_rate:8,.0f} mails/s "
          f"(ratio {rate / first_rate:.2f})")


def main() -> None:
    """Run both measurements and print the figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=500)
    ap.add_argument("--saves", type=int, default=7)
    ap.add_argument("--mails", type=int, default=10000)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    bench_save(args.files, args.saves)
    bench_reexamine(args.mails)


if __name__ == "__main__":
    main()
