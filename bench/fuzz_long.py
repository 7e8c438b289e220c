"""The long fuzz run: the targets of tests/test_fuzz.py for minutes instead of seconds.

Run: .venv/bin/python bench/fuzz_long.py [--minutes 10] [--seed 1]

Three targets share the time: MIME to documents (gateway.mime.parse, sender
authentication against a stub resolver, Pipeline.decide) on mutated corpus
mails and on mails built from random MIME trees, and on mutated header bombs (1 MB of
encoded words, quotes, comments, addresses, parameters); the rule loader
(load_rules_text) on random YAML; the e-invoice parser (einvoice.detect) on
mutated corpus and sample e-invoices. A finding is an exception other than
the documented ParseError, or one input taking longer than 5 s. Prints
inputs per target, inputs per second, the slowest input, peak RSS and every
finding (the input is saved under --out).
"""

from __future__ import annotations

import argparse
import hashlib
import random
import resource
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

import test_fuzz  # noqa: E402
from test_fuzz import (  # noqa: E402
    YAML_BITS, Target, check_einvoice, check_rules, header_bombs, mails, mutate, text,
)

CORPUS = ROOT.parent / "shared" / "corpus"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "fuzz-findings")
    args = ap.parse_args()
    rnd = random.Random(args.seed)
    target = Target(Path(tempfile.mkdtemp(prefix="fuzz-long-")))
    emails = [p.read_bytes() for p in sorted((CORPUS / "emails").rglob("*")) if p.is_file()]
    invoices = [p.read_bytes() for p in sorted((CORPUS / "einvoices").rglob("*")) if p.is_file()]
    invoices += [p.read_bytes() for p in sorted((ROOT / "tests" / "data" / "einvoice").glob("*"))]
    rules = [p.read_text() for p in sorted((ROOT / "rules").glob("*.yaml"))]
    bombs = list(header_bombs().values())
    stats = {name: {"inputs": 0, "seconds": 0.0, "slowest": 0.0, "findings": 0}
             for name in ("mail-mutated", "mail-generated", "mail-bombs", "rules", "einvoice")}
    findings: list[str] = []
    args.out.mkdir(parents=True, exist_ok=True)

    def run(name: str, fn: object, data: object) -> None:
        t0 = time.monotonic()
        try:
            fn(data)  # type: ignore[operator]
            err = None
        except Exception:
            err = traceback.format_exc(limit=4)
        elapsed = time.monotonic() - t0
        s = stats[name]
        s["inputs"] += 1
        s["seconds"] += elapsed
        s["slowest"] = max(s["slowest"], elapsed)
        if err is None and elapsed > test_fuzz.SLOW:
            err = f"slow: {elapsed:.1f} s"
        if err is not None:
            s["findings"] += 1
            blob = data if isinstance(data, bytes) else str(data).encode()
            path = args.out / f"{name}-{hashlib.sha256(blob).hexdigest()[:12]}"
            path.write_bytes(blob)
            findings.append(f"{name}: {path}: {err.strip().splitlines()[-1]}")

    # random MIME trees and YAML come from hypothesis' generators, drawn one by one
    gen_mail = mails()
    gen_yaml = st.lists(st.one_of(st.sampled_from(YAML_BITS), text), max_size=60).map("".join)

    @settings(max_examples=10**9, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def generated(data: st.DataObject) -> None:
        run("mail-generated", target.mail, data.draw(gen_mail))
        run("rules", check_rules, data.draw(gen_yaml))
        if time.monotonic() > stop_generated:
            raise _Done

    class _Done(Exception):
        pass

    start = time.monotonic()
    deadline = start + args.minutes * 60
    stop_generated = start + args.minutes * 60 / 3  # a third of the time for generated inputs
    try:
        generated()
    except _Done:
        pass
    except Exception:
        findings.append("generator: " + traceback.format_exc(limit=3).strip().splitlines()[-1])
    while time.monotonic() < deadline:
        run("mail-mutated", target.mail, mutate(rnd.choice(emails), rnd))
        run("einvoice", check_einvoice, mutate(rnd.choice(invoices), rnd, 30))
        if rnd.random() < 0.05:  # a bomb takes about 0.2 s: one in twenty rounds
            run("mail-bombs", target.mail, mutate(rnd.choice(bombs), rnd))
        if rules and rnd.random() < 0.5:
            run("rules", check_rules, mutate(rnd.choice(rules).encode(), rnd).decode("utf-8", "replace"))
    total = time.monotonic() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"fuzz_long: {total / 60:.1f} min, seed {args.seed}, peak RSS {rss:.0f} MiB")
    print(f"{'target':16} {'inputs':>9} {'per s':>8} {'slowest s':>10} {'findings':>9}")
    for name, s in stats.items():
        rate = s["inputs"] / s["seconds"] if s["seconds"] else 0.0
        print(f"{name:16} {s['inputs']:>9} {rate:>8.0f} {s['slowest']:>10.2f} {s['findings']:>9}")
    for f in findings[:50]:
        print("FINDING", f)
    sys.exit(1 if findings else 0)


if __name__ == "__main__":
    main()
