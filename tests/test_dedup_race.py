"""Two copies of one mail that arrive together: exactly one is imported, however they race."""

from __future__ import annotations

import hashlib
import smtplib
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from conftest import Gateway, make_mail, wait_for

from gateway.store import Row

ROUNDS = 30


def _copies(tag: str, *, same_bytes: bool) -> tuple[bytes, bytes]:
    """Two copies of one body-only mail (rendered to a PDF): the same bytes, or the same
    Message-ID and body with the headers a second route adds."""
    raw = make_mail(subject=f"Receipt {tag}", body=f"Your receipt {tag}: 12.50 EUR. Thank you.",
                    message_id=f"<{tag}.{time.monotonic_ns()}@shop.example>").as_bytes()
    if same_bytes:
        return raw, raw
    return raw, b"Received: from imap.example by gateway.test; Mon, 7 Dec 2026 10:00:00 +0000\r\n" + raw


def _outcomes(gw: Gateway) -> dict[str, list[Row]]:
    """Finished messages by Message-ID."""
    by_id: dict[str, list[Row]] = {}
    rows, _ = gw.store.list_messages(limit=10000)
    for row in rows:
        by_id.setdefault(row["message_id"], []).append(row)
    return by_id


def _check_pairs(gw: Gateway, pairs: int) -> None:
    def finished() -> bool:
        counts = gw.store.status_counts()
        return sum(counts.values()) == 2 * pairs and not counts.get("received")

    wait_for(finished, timeout=180, interval=0.2)
    wait_for(lambda: len(gw.exported_files()) >= pairs, timeout=60)
    time.sleep(1)  # a second export of any pair would show now
    by_id = _outcomes(gw)
    assert len(by_id) == pairs
    doubled = []
    for header_id, rows in by_id.items():
        statuses = sorted(r["status"] for r in rows)
        if statuses != ["duplicate", "imported"]:
            doubled.append((header_id, statuses))
            continue
        first = next(r for r in rows if r["status"] == "imported")
        dup = next(r for r in rows if r["status"] == "duplicate")
        assert dup["duplicate_of"] == first["id"]
        assert dup["reason"].startswith(f"same message as #{first['id']} (")
        assert len(gw.store.documents_of(first["id"])) == 1 and gw.store.documents_of(dup["id"]) == []
    assert not doubled, f"{len(doubled)} of {pairs} pairs not deduplicated: {doubled[:3]}"
    files = gw.exported_files()
    assert len(files) == pairs, [f.name for f in files]
    assert not [f for f in files if " (2)" in f.name]
    assert max(Counter(hashlib.sha256(f.read_bytes()).digest() for f in files).values()) == 1


def test_copies_sent_back_to_back_over_smtp_are_imported_once(gateway_factory: Callable[..., Gateway]) -> None:
    gw = gateway_factory(limits={"worker_processes": True, "workers": 2})
    with smtplib.SMTP("127.0.0.1", gw.smtp_port, timeout=30) as s:
        for i in range(ROUNDS):
            first, second = _copies(f"smtp-{i}", same_bytes=i % 2 == 0)
            s.sendmail("billing@shop.example", ["invoices@localhost"], first)
            s.sendmail("billing@shop.example", ["invoices@localhost"], second)
    _check_pairs(gw, ROUNDS)


def test_import_beside_serve_of_the_copies_serve_receives_imports_each_once(
        gateway_factory: Callable[..., Gateway], workdir: Path) -> None:
    gw = gateway_factory(limits={"worker_processes": True, "workers": 2})
    pairs = 12
    copies = [_copies(f"beside-{i}", same_bytes=i % 2 == 0) for i in range(pairs)]
    files = []
    for i, (_, second) in enumerate(copies):
        files.append(workdir / f"copy{i}.eml")
        files[-1].write_bytes(second)
    config = workdir / "gateway.yaml"
    import yaml

    config.write_text(yaml.safe_dump(gw.cfg), encoding="utf-8")
    # the import process spools and processes its copies while serve's workers process theirs
    importer = subprocess.Popen([sys.executable, "-m", "gateway", "--config", str(config), "-q", "import",
                                 *map(str, files)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    with smtplib.SMTP("127.0.0.1", gw.smtp_port, timeout=30) as s:
        for first, _ in copies:
            s.sendmail("billing@shop.example", ["invoices@localhost"], first)
    _, err = importer.communicate(timeout=120)
    assert importer.returncode == 0, err.decode()
    _check_pairs(gw, pairs)


def test_copies_by_smtp_and_imap_at_the_same_moment_are_imported_once(
        gateway_factory: Callable[..., Gateway]) -> None:
    from dovecot import Dovecot, dovecot_available

    assert dovecot_available(), "dovecot is missing: `make test` installs dovecot-imapd"
    pairs = 10
    with Dovecot() as dc:
        user = dc.add_user()
        # imap: import, so the body-only copies are downloaded (recognize would skip them)
        gw = gateway_factory(limits={"worker_processes": True, "workers": 2},
                             unmatched={"smtp": "import", "imap": "import"}, mailboxes=[{
            "name": "home", "host": "127.0.0.1", "port": dc.port, "security": "none", "username": user,
            "password": dc.users[user], "timeout": "10s"}])
        poller = gw.service.pollers["home"]
        wait_for(lambda: "INBOX" in poller.status()["idle"], 30)
        # the supplier's mail reaches both the import address and the watched mailbox
        copies = [_copies(f"both-{i}", same_bytes=False) for i in range(pairs)]
        with smtplib.SMTP("127.0.0.1", gw.smtp_port, timeout=30) as s:
            for i, (smtp_copy, imap_copy) in enumerate(copies):
                dc.append(user, "INBOX", [imap_copy])  # IDLE: the poller downloads it at once
                time.sleep(0.03 * (i % 4))  # so that the SMTP copy comes before, with or after it
                s.sendmail("billing@shop.example", ["invoices@localhost"], smtp_copy)
        _check_pairs(gw, pairs)
        sources = Counter(r["source"].split(":")[0] for rows in _outcomes(gw).values() for r in rows)
        assert sources == {"smtp": pairs, "imap": pairs}
