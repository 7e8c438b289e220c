"""Rule evaluation speed: 1,000 rules against 10,000 mails, beside baselines in the same run.

Run: .venv/bin/python bench/rules_eval.py [--rules 1000] [--mails 10000]

Prints mails per second for RuleSet.decide (the sender index on), for decide
plus the explanation as the gateway stores it with each message (a compact
trace, gateway.rules.trace, in the decision's JSON: the work the gateway
really does), for the naive loop that tries every rule in order and writes
every one in words (decide(trace_all=True)), for reading a stored trace back
into words, and for a set of one rule; the bytes stored per mail; checks that
the index and the naive loop decide alike and that the words read back from
the stored trace are the naive loop's explanation.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.models import Address, Decision, MailView  # noqa: E402
from gateway.rules import RuleSet, load_rules, load_rules_text  # noqa: E402
from gateway.rules.trace import stored as stored_explanation  # noqa: E402
from gateway.rules.trace import words  # noqa: E402
from gateway.store import pack_decision  # noqa: E402

WORDS = ["Rechnung", "Invoice", "Receipt", "Gutschrift", "Beleg", "Facture", "Quittung"]


def supplier(i: int) -> str:
    """The domain of supplier ``i``."""
    return f"supplier{i}.example"


def word(i: int) -> str:
    """The word that supplier ``i``'s rule looks for."""
    return WORDS[i % len(WORDS)]


def write_rules(folder: Path, count: int, rng: random.Random) -> None:
    """Write ``count`` rules, in files of 20, in both file forms; 5% not limited to a sender domain."""
    docs: list[str] = []
    for i in range(count):
        kind = i % 20
        w = word(i)
        if kind == 0:  # generic rules, tried for every mail
            docs.append(rng.choice([
                f'name: generic {i}\nwhen: {{any: [{{header: {{List-Id: "*news{i}*"}}}}, {{subject: "*newsletter {i}*"}}]}}\n'
                "action: ignore",
                f'name: generic {i}\nwhen: {{subject: "re:^(invoice|rechnung) #{i}-\\\\d+$", has_attachment: true}}',
                f"name: generic {i}\nwhen: {{einvoice: {{seller_vat_id: DE{100000000 + i}}}}}\n"
                'assign: {company: "{einvoice.seller}"}',
                f'name: generic {i}\nwhen: {{attachment: "statement-{i}-*.pdf", source: imap}}',
            ]))
        elif kind < 14:  # one address plus a word: the classic case
            docs.append(f"name: supplier {i}\nwhen:\n  from: billing@{supplier(i)}\n  contains: {w}\n"
                        f"assign: {{company: Supplier {i}, tags: [bench]}}")
        elif kind < 18:  # a whole domain, the body is the invoice
            docs.append(f'name: supplier {i}\nwhen: {{from: "@{supplier(i)}", subject: "re:{w.lower()} #\\\\d+"}}\n'
                        "import: body")
        else:  # the subdomains of a domain
            docs.append(f'name: supplier {i}\nwhen: {{from: "@*.{supplier(i)}"}}\npriority: {rng.choice([50, 100, 150])}')
    for n in range(0, len(docs), 20):
        chunk = docs[n:n + 20]
        if (n // 20) % 2:
            text = "\n---\n".join(chunk)
        else:
            text = "rules:\n" + "\n".join("  - " + d.replace("\n", "\n    ") for d in chunk)
        (folder / f"rules-{n // 20:03d}.yaml").write_text(text, encoding="utf-8")


def make_mails(count: int, rules: int, rng: random.Random) -> list[MailView]:
    """Mails: most from known suppliers (matching or near misses), the rest from strangers."""
    mails = []
    for _ in range(count):
        i = rng.randrange(rules)
        roll = rng.random()
        if roll < 0.55:
            local, domain = rng.choice(["billing", "billing", "noreply"]), supplier(i)
        elif roll < 0.65:
            local, domain = "billing", f"mail.{supplier(i)}"
        else:
            local, domain = f"user{rng.randrange(10**6)}", rng.choice(["gmail.example", "shop.example", "news.example"])
        w = word(i) if rng.random() < 0.8 else rng.choice(WORDS)
        subject = rng.choice([f"{w} #{rng.randrange(10**5)}", f"Your {w.lower()} for May",
                              f"Newsletter {rng.randrange(1000)}", "Hello"])
        body = f"Dear customer,\n\nplease find attached your {w.lower()}.\n" * rng.randint(1, 20)
        attachments = tuple(rng.sample(["invoice.pdf", "logo.png", f"statement-{i}-5.pdf", "terms.pdf"],
                                       rng.randint(0, 2)))
        einvoice = {"seller": f"Supplier {i} GmbH", "seller_vat_id": f"DE{100000000 + i}"} if rng.random() < 0.2 else None
        mails.append(MailView(
            sender=Address(f"Supplier {i}", f"{local}@{domain}"),
            to=(Address("", "invoices@home.example"),), subject=subject, body=body, attachments=attachments,
            headers={"list-id": (f"<news{i}.example>",)} if "Newsletter" in subject else {},
            source=rng.choice(["smtp", "imap:gmail"]), import_address="invoices@home.example",
            einvoice=einvoice, fields={"subject": subject},
        ))
    return mails


def stored(decision: Decision) -> str:
    """The decision as the gateway stores it with a message (JSON; the explanation a compact trace)."""
    return json.dumps(pack_decision({"rule": decision.rule, "action": decision.action, "import": decision.import_mode,
                                     "assign": dict(decision.assign), **stored_explanation(decision.explain)}),
                      default=str)


def rate(ruleset: RuleSet, mails: list[MailView], *, trace_all: bool = False, store: bool = False,
         repeat: int = 3) -> tuple[float, list[Decision]]:
    """Mails per second (the best of ``repeat`` runs), and the decisions; ``store``: also the stored JSON."""
    best = float("inf")
    decisions: list[Decision] = []
    for _ in range(repeat):
        start = time.perf_counter()
        decisions = [ruleset.decide(m, trace_all=trace_all) for m in mails]
        if store:
            for d in decisions:
                stored(d)
        best = min(best, time.perf_counter() - start)
    return len(mails) / best, decisions


def main() -> None:
    """Run the benchmark and print the figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rules", type=int, default=1000)
    ap.add_argument("--mails", type=int, default=10000)
    ap.add_argument("--naive-mails", type=int, default=1000, help="mails for the naive loop (it is slow)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)

    with tempfile.TemporaryDirectory() as tmp:
        write_rules(Path(tmp), args.rules, rng)
        start = time.perf_counter()
        ruleset, problems = load_rules(Path(tmp))
        load_s = time.perf_counter() - start
    assert ruleset is not None, [str(p) for p in problems]
    mails = make_mails(args.mails, args.rules, rng)
    one, _ = load_rules_text("name: only\nwhen: {from: '@supplier1.example', contains: Rechnung}")
    assert one is not None

    indexed, decisions = rate(ruleset, mails)
    with_json, _ = rate(ruleset, mails, store=True)
    naive_mails = mails[: args.naive_mails]
    naive, naive_decisions = rate(ruleset, naive_mails, trace_all=True, repeat=1)
    single, _ = rate(one, mails)
    traces = [json.loads(stored(d))["trace"] for d in decisions[: len(naive_mails)]]
    start = time.perf_counter()
    read = [words(t, ruleset, m) for t, m in zip(traces, naive_mails)]
    reading = len(read) / (time.perf_counter() - start)
    for fast, full, (back, differ) in zip(decisions, naive_decisions, read):
        assert (fast.rule, fast.action, fast.assign) == (full.rule, full.action, full.assign)
        assert back == list(full.explain) and differ == 0

    outcome = Counter(d.action for d in decisions)
    listed = sum(len(d.explain) for d in decisions) / len(decisions)
    sizes = [len(stored(d).encode()) for d in decisions]
    in_words = [len(json.dumps([dataclasses.asdict(t) for t in full.explain],
                               ensure_ascii=False).encode()) for full in naive_decisions[:200]]
    print(f"rules: {len(ruleset.rules)} in {len(ruleset.files)} files, loaded in {load_s * 1000:.0f} ms")
    print(f"mails: {len(mails)}; decisions: " + ", ".join(f"{k} {v}" for k, v in sorted(outcome.items()))
          + f"; rules tried per mail: {listed:.1f} (of {len(ruleset.rules)})")
    print(f"decision stored per mail:  {sum(sizes) / len(sizes):10,.0f} bytes mean, {max(sizes):,} max "
          f"(JSON with the compact trace; in words it would be {sum(in_words) / len(in_words) / 1024:,.0f} KiB)")
    print(f"decide (index + tests):    {indexed:10,.0f} mails/s  (best of 3)")
    print(f"decide + stored explanation:{with_json:9,.0f} mails/s  (what the gateway does; target >= 5,000; best of 3)")
    print(f"naive loop (trace_all):    {naive:10,.0f} mails/s  ({len(naive_mails)} mails; same decisions, every rule in words)")
    print(f"reading: trace -> words:   {reading:10,.0f} mails/s  ({len(read)} mails; equal to the naive loop's words)")
    print(f"one rule:                  {single:10,.0f} mails/s  (best of 3)")
    print(f"decide / naive:            {indexed / naive:10.1f} x")
    print(f"decide+stored / naive:     {with_json / naive:10.1f} x")
    print(f"decide / one rule:         {indexed / single:10.2f} x")


if __name__ == "__main__":
    main()
