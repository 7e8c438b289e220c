"""Mail held only because DNS failed during sender authentication is checked again automatically,
with backoff: a pass then goes through the rules, a definite fail stays suspicious with its reason."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import Gateway, wait_for
from gateway.senderauth import StubResolver
from gateway.senderauth.recheck import next_recheck, recheck_held
from test_trust_hold import SUPPLIER, invoice, settled, start
from test_trust_senderauth import key, signed  # noqa: F401  (key is a fixture)

DNS_DOWN = ["known-supplier.example", "s1._domainkey.known-supplier.example", "_dmarc.known-supplier.example"]


def held_by_dns(gw: Gateway, raw: bytes) -> tuple[dict[str, Any], dict[str, Any], dt.datetime]:
    working = gw.service.pipeline.sender_auth.resolver
    gw.service.pipeline.sender_auth.resolver = StubResolver(failing=DNS_DOWN)
    gw.send(raw, sender=SUPPLIER)
    [msg] = settled(gw, 1)
    gw.service.pipeline.sender_auth.resolver = working  # DNS answers again from now on
    auth = json.loads(msg["auth"])
    return msg, auth, dt.datetime.fromisoformat(auth["checked_at"])


def test_dns_failure_is_checked_again_after_5_minutes_and_a_pass_is_exported(
        gateway_factory: Callable[..., Gateway], workdir: Path, key: tuple[bytes, str]) -> None:  # noqa: F811
    gw = start(gateway_factory, workdir, key)
    msg, auth, checked = held_by_dns(gw, signed(key, invoice("dns-late"), domain="known-supplier.example"))
    assert msg["status"] == "suspicious" and auth["temporary"] is True and auth["authenticated"] is None
    assert "checked again automatically at" in msg["reason"]
    assert auth["first_checked_at"] == auth["checked_at"]

    assert recheck_held(gw.store, checked + dt.timedelta(minutes=4)) == []  # not yet
    assert gw.store.message(msg["id"])["status"] == "suspicious"
    assert recheck_held(gw.store, checked + dt.timedelta(minutes=5)) == [msg["id"]]
    gw.service.pipeline.wake.set()
    row = wait_for(lambda: (r := gw.store.message(msg["id"]))["status"] != "received" and r,
                   timeout=15)
    assert row["status"] == "imported" and "Known supplier" in row["reason"]
    after = json.loads(row["auth"])
    assert after["authenticated"] is True and after["temporary"] is False
    files = wait_for(gw.exported_files, timeout=15)
    assert [f.name for f in files] == ["invoice-dns-late.pdf"]
    assert recheck_held(gw.store, checked + dt.timedelta(days=2)) == []  # nothing is held any more


def test_a_definite_fail_on_the_recheck_stays_suspicious_and_is_not_checked_again(
        gateway_factory: Callable[..., Gateway], workdir: Path, key: tuple[bytes, str]) -> None:  # noqa: F811
    gw = start(gateway_factory, workdir, key)
    msg, _, checked = held_by_dns(gw, invoice("dns-forged"))  # unsigned, from an IP SPF does not allow
    assert recheck_held(gw.store, checked + dt.timedelta(minutes=6)) == [msg["id"]]
    gw.service.pipeline.wake.set()
    row = wait_for(lambda: (r := gw.store.message(msg["id"]))["status"] != "received" and r,
                   timeout=15)
    assert row["status"] == "suspicious"
    assert "SPF fail" in row["reason"] and "temporarily" not in row["reason"]
    assert json.loads(row["auth"])["temporary"] is False
    assert recheck_held(gw.store, checked + dt.timedelta(days=2)) == []
    assert gw.store.documents_of(msg["id"]) == [] and gw.exported_files() == []


def test_dns_still_failing_stays_held_and_keeps_its_first_check(
        gateway_factory: Callable[..., Gateway], workdir: Path, key: tuple[bytes, str]) -> None:  # noqa: F811
    gw = start(gateway_factory, workdir, key)
    msg, auth, checked = held_by_dns(gw, signed(key, invoice("dns-long"), domain="known-supplier.example"))
    gw.service.pipeline.sender_auth.resolver = StubResolver(failing=DNS_DOWN)  # DNS stays down
    for _ in range(5):  # more re-checks than a worker's attempts: a re-check is no interruption
        assert recheck_held(gw.store, checked + dt.timedelta(minutes=5)) == [msg["id"]]
        gw.service.pipeline.wake.set()
        row = wait_for(lambda: (r := gw.store.message(msg["id"]))["status"] != "received" and r, timeout=15)
        assert row["status"] == "suspicious" and "temporarily" in row["reason"]
        again = json.loads(row["auth"])
        assert again["temporary"] is True and again["first_checked_at"] == auth["checked_at"]
    assert gw.exported_files() == []


def test_the_backoff_runs_from_the_first_check_up_to_a_day() -> None:
    first = dt.datetime(2026, 11, 22, 8, 0, tzinfo=dt.timezone.utc)

    def auth(last: dt.datetime, temporary: bool = True) -> dict[str, Any]:
        return {"temporary": temporary, "first_checked_at": first.isoformat(), "checked_at": last.isoformat()}

    minutes = dt.timedelta(minutes=1)
    assert next_recheck(auth(first)) == first + 5 * minutes
    assert next_recheck(auth(first + 5 * minutes)) == first + 15 * minutes
    assert next_recheck(auth(first + 16 * minutes)) == first + 60 * minutes
    assert next_recheck(auth(first + 13 * 60 * minutes)) == first + 24 * 60 * minutes
    assert next_recheck(auth(first + 24 * 60 * minutes)) is None  # a day is over: a person decides
    assert next_recheck(auth(first, temporary=False)) is None
    # a result stored before re-checks existed counts from its own check
    assert next_recheck({"temporary": True, "checked_at": first.isoformat()}) == first + 5 * minutes
