"""Benchmark: the IMAP poller against a real Dovecot (prints figures).

A folder of N mails (default 10,000), a share of them (default 20 %) with a
PDF attachment and a few (default 3 %) with a phone photo, the rest plain text
and HTML mails, written straight into the maildir. Measured in one run:

1. baseline: imapclient downloads every mail whole (UID FETCH BODY.PEEK[] in
   batches of 25), as a poller that does not look first would;
2. the gateway's first import (MailboxPoller.poll: metadata, then only the
   mails that can hold a document, each spooled durably with fsync);
3. incremental polls with nothing new (after the disk settled and three
   warm-up polls): median and 95th percentile. Each is a whole poll: connect,
   login, LIST, STATUS per folder, record the status, logout.

Bytes are counted twice: the payload each side received, and what Dovecot
itself reports it sent (``out=`` of its logout lines), so metadata and
protocol overhead are included. The mail mix is printed with the figures;
the byte ratio follows from it (see --help).

    .venv/bin/python bench/imap_poll.py               # 10,000 mails, ~3 minutes
    .venv/bin/python bench/imap_poll.py --mails 2000  # quicker
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from email import policy
from email.message import EmailMessage
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from dovecot import Dovecot  # noqa: E402

WORDS = ("order delivery account team update offer week news price product service support customer "
         "report meeting project thanks please regards information welcome newsletter sale").split()


def _text(rng: random.Random, size: int) -> str:
    out: list[str] = []
    n = 0
    while n < size:
        w = rng.choice(WORDS)
        out.append(w)
        n += len(w) + 1
    return " ".join(out)


def _pdf(rng: random.Random, size: int) -> bytes:
    # compressed streams look random: so does this body
    return b"%PDF-1.5\n" + rng.randbytes(size) + b"\n%%EOF\n"


def make_mix(n: int, pdf_share: float, seed: int, pdf_size: tuple[int, int] = (20_000, 120_000),
             photo_share: float = 0.0) -> tuple[list[bytes], dict[str, tuple[int, int]]]:
    """The mails, and per kind (count, bytes)."""
    rng = random.Random(seed)
    mails: list[bytes] = []
    kinds: dict[str, list[int]] = {}
    n_pdf = round(n * pdf_share)
    n_photo = round(n * photo_share)
    order = ["pdf"] * n_pdf + ["photo"] * n_photo + ["other"] * (n - n_pdf - n_photo)
    rng.shuffle(order)
    for i, kind in enumerate(order):
        m = EmailMessage()
        m["From"] = f"Sender {i % 97} <s{i % 97}@shop{i % 13}.example>"
        m["To"] = "me@example.test"
        m["Message-ID"] = f"<bench-{i}@example.test>"
        m["Date"] = "Mon, 02 Mar 2026 10:00:00 +0100"
        if kind == "pdf":
            m["Subject"] = f"Rechnung {i}"
            m.set_content("Sehr geehrte Damen und Herren,\n\nanbei Ihre Rechnung.\n\n" + _text(rng, rng.randint(300, 1500)))
            m.add_attachment(_pdf(rng, rng.randint(*pdf_size)), maintype="application", subtype="pdf",
                             filename=f"Rechnung_{i}.pdf")
        elif kind == "photo":
            kind = "photo attached (jpeg)"
            m["Subject"] = f"Fotos vom {rng.choice(WORDS)} {i}"
            m.set_content(_text(rng, rng.randint(100, 800)))
            m.add_attachment(b"\xff\xd8\xff\xe0" + rng.randbytes(rng.randint(200_000, 2_000_000)), maintype="image",
                             subtype="jpeg", filename=f"IMG_{i:04d}.jpg")
        else:
            r = rng.random()
            if r < 0.45:
                kind = "text"
                m["Subject"] = f"Re: {rng.choice(WORDS)} {i}"
                m.set_content(_text(rng, rng.randint(500, 5000)))
            elif r < 0.80:
                kind = "html newsletter"
                m["Subject"] = f"{rng.choice(WORDS).title()} news {i}"
                body = _text(rng, rng.randint(3000, 12000))
                m.set_content(body)
                m.add_alternative("<html><body>" + "".join(
                    f"<p style='font-family:Arial;color:#333;margin:0 0 12px'>{body[j:j + 400]}</p>"
                    for j in range(0, len(body), 400)) + "</body></html>" + " " * rng.randint(5000, 30000),
                    subtype="html")
            else:
                kind = "html with inline pictures"
                m["Subject"] = f"{rng.choice(WORDS).title()} deals {i}"
                m.set_content(_text(rng, 2000))
                m.add_alternative("<html><body><img src='cid:p0'><p>" + _text(rng, 3000) + "</p></body></html>",
                                  subtype="html")
                html = m.get_payload()[1]
                for k in range(rng.randint(1, 2)):
                    html.add_related(rng.randbytes(rng.randint(10_000, 50_000)), maintype="image", subtype="jpeg",
                                     cid=f"<p{k}>", filename=f"picture{k}.jpg", disposition="inline")
        raw = m.as_bytes(policy=policy.SMTP)
        mails.append(raw)
        kinds.setdefault(kind, []).append(len(raw))
    return mails, {k: (len(v), sum(v)) for k, v in kinds.items()}


def baseline(dc: Dovecot, user: str) -> tuple[float, int]:
    """Download every mail whole; (seconds, payload bytes)."""
    started = time.perf_counter()
    c = dc.client(user, timeout=300)
    c.select_folder("INBOX", readonly=True)
    uids = c.search(["ALL"])
    got = 0
    for i in range(0, len(uids), 25):
        for data in c.fetch(uids[i:i + 25], ["BODY.PEEK[]"]).values():
            got += len(data[b"BODY[]"])
    c.logout()
    return time.perf_counter() - started, got


def wire(dc: Dovecot, user: str, sessions_before: int, sent_before: int) -> int:
    deadline = time.monotonic() + 10
    while dc.logins(user) <= sessions_before and time.monotonic() < deadline:
        time.sleep(0.02)
    return dc.bytes_sent(user) - sent_before


def mb(n: float) -> str:
    return f"{n / 1024**2:,.1f} MB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mails", type=int, default=10_000, help="mails in the folder (default 10000)")
    ap.add_argument("--pdf-share", type=float, default=0.2, help="share with a PDF attachment (default 0.2)")
    ap.add_argument("--polls", type=int, default=50, help="incremental polls to time (default 50)")
    ap.add_argument("--pdf-size", default="20000:120000",
                    help="PDF size range in bytes before base64, MIN:MAX (default 20000:120000)")
    ap.add_argument("--photo-share", type=float, default=0.03,
                    help="share with a photo attached, 0.2-2 MB, which the gateway need not fetch (default 0.03; "
                         "0 for a mailbox of text, HTML and PDF mails only)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    from gateway.config import parse_settings
    from gateway.sources.imap import MailboxPoller
    from gateway.spool import Spool
    from gateway.store import Store

    print(f"building {args.mails:,} mails ({args.pdf_share:.0%} with a PDF, {args.photo_share:.0%} with a photo) ...",
          flush=True)
    lo, _, hi = args.pdf_size.partition(":")
    mails, kinds = make_mix(args.mails, args.pdf_share, args.seed, (int(lo), int(hi or lo)), args.photo_share)
    total = sum(b for _, b in kinds.values())
    with Dovecot() as dc, tempfile.TemporaryDirectory(prefix="bench-imap-") as tmp:
        user = dc.add_user("bench@example.test")
        dc.write_maildir(user, "INBOX", mails)
        del mails
        warm = dc.client(user, timeout=300)  # let Dovecot index the maildir before anything is timed
        warm.select_folder("INBOX", readonly=True)
        assert len(warm.search(["ALL"])) == args.mails
        warm.logout()

        print("mail mix:")
        for kind, (count, size) in sorted(kinds.items()):
            print(f"  {kind:28} {count:6,}  {mb(size):>10}  avg {size / count / 1024:6.1f} KB")
        print(f"  {'all':28} {args.mails:6,}  {mb(total):>10}")

        s0, b0 = dc.logins(user), dc.bytes_sent(user)
        base_t, base_payload = baseline(dc, user)
        base_wire = wire(dc, user, s0, b0)

        settings = parse_settings({"data_dir": str(Path(tmp) / "data"), "exports": [], "mailboxes": [{
            "name": "bench", "host": "127.0.0.1", "port": dc.port, "security": "none", "username": user,
            "password": dc.users[user], "timeout": "300s", "idle": False}]}, env={})
        store = Store(settings.data_dir)
        poller = MailboxPoller(settings.mailboxes[0], store=store, spool=Spool(store), settings=settings,
                               process=lambda ids: None)
        s0, b0 = dc.logins(user), dc.bytes_sent(user)
        t0 = time.perf_counter()
        result = poller.poll()
        gw_t = time.perf_counter() - t0
        assert result.error is None, result.error
        gw_wire = wire(dc, user, s0, b0)

        # an incremental poll comes minutes or hours after the import: let the disk write back first
        os.sync()
        time.sleep(1)
        for _ in range(3):
            poller.poll()
        times = []
        for _ in range(args.polls):
            t0 = time.perf_counter()
            r = poller.poll()
            times.append((time.perf_counter() - t0) * 1000)
            assert r.error is None and r.scanned == 0
        times.sort()

    print()
    print(f"baseline (every mail whole)   {base_t:7.1f} s   payload {mb(base_payload):>10}   wire {mb(base_wire):>10}")
    print(f"gateway first import          {gw_t:7.1f} s   payload {mb(result.bytes_downloaded):>10}   "
          f"wire {mb(gw_wire):>10}")
    print(f"  looked at {result.scanned:,}, downloaded and spooled {result.downloaded:,}, "
          f"skipped {result.skipped:,} ({mb(result.bytes_skipped)} not fetched)")
    floor = kinds.get("pdf", (0, 0))[1] / total
    print(f"  bytes ratio (wire)    gateway / baseline = {gw_wire / base_wire:.3f}   (target <= 0.3)")
    print(f"  floor: the mails with a PDF are {floor:.3f} of all bytes; a poller that keeps the raw mail "
          "must fetch them whole")
    print(f"  bytes ratio (payload) gateway / baseline = {result.bytes_downloaded / base_payload:.3f}")
    print(f"  time ratio            gateway / baseline = {gw_t / base_t:.3f}   "
          "(the gateway also fsyncs every mail into the spool)")
    print(f"  metadata overhead: {(gw_wire - result.bytes_downloaded) / result.scanned:,.0f} bytes per mail")
    print(f"incremental poll, nothing new ({args.polls} polls): median {statistics.median(times):.1f} ms, "
          f"p95 {times[int(len(times) * 0.95) - 1]:.1f} ms, max {times[-1]:.1f} ms   (target < 50 ms)")


if __name__ == "__main__":
    main()
