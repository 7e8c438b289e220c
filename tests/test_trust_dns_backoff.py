"""A sender whose DNS never answers backs off only its own zone: a correctly signed supplier
mail right after it is authenticated (issue 14.5). A real DNS server on 127.0.0.1 answers."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from conftest import Gateway, make_mail, unique_pdf
from gateway.senderauth.dns import DnsPythonResolver, DNSTempError, backoff_key, split_server
from test_trust_hold import RULES, SUPPLIER, invoice, settled
from test_trust_senderauth import key, signed  # noqa: F401  (key is a fixture)

GOOD = "known-supplier.example"
SILENT = "silent.example"


class DnsServer:
    """A UDP DNS server on 127.0.0.1: answers TXT records from a table, NXDOMAIN for other names,
    and never answers any name under ``silent`` (as a domain whose DNS servers are gone)."""

    def __init__(self, records: dict[str, list[str]], silent: str) -> None:
        self.records = {n.lower().rstrip("."): v for n, v in records.items()}
        self.silent = silent
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.asked: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            query = dns.message.from_wire(data)
            question = query.question[0]
            name = question.name.to_text(omit_final_dot=True).lower()
            self.asked.append(name)
            if name == self.silent or name.endswith("." + self.silent):
                continue  # never answered
            response = dns.message.make_response(query)
            response.flags |= dns.flags.AA
            texts = self.records.get(name)
            if texts is None:
                response.set_rcode(dns.rcode.NXDOMAIN)
            elif question.rdtype == dns.rdatatype.TXT:
                quoted = []
                for t in texts:  # TXT strings of at most 255 bytes
                    chunks = [t[i:i + 255] for i in range(0, len(t), 255)]
                    quoted.append(" ".join(f'"{c}"' for c in chunks))
                response.answer.append(dns.rrset.from_text(question.name, 60, "IN", "TXT", *quoted))
            self.sock.sendto(response.to_wire(), peer)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def dns_server(key: tuple[bytes, str]) -> Iterator[DnsServer]:  # noqa: F811
    server = DnsServer({
        GOOD: ["v=spf1 ip4:192.0.2.0/24 -all"],  # not the test's 127.0.0.1: DKIM carries it
        f"s1._domainkey.{GOOD}": [f"v=DKIM1; k=rsa; p={key[1]}"],
        f"_dmarc.{GOOD}": ["v=DMARC1; p=reject"],
    }, SILENT)
    yield server
    server.close()


def test_silent_domain_does_not_hold_up_a_supplier(gateway_factory: Callable[..., Gateway], workdir: Path,
                                                   key: tuple[bytes, str], dns_server: DnsServer) -> None:  # noqa: F811
    (workdir / "rules" / "suppliers.yaml").write_text(RULES)
    gw = gateway_factory(trust={"dns_servers": [f"127.0.0.1:{dns_server.port}"], "dns_timeout": 0.4})
    started = time.monotonic()
    for i in range(4):
        sender = f"billing@{SILENT}"
        gw.send(make_mail(sender=sender, subject=f"Silent {i}",
                          attachments=[(f"silent-{i}.pdf", unique_pdf(f"silent-{i}"), "application/pdf")]),
                sender=sender)
    silent = settled(gw, 4)
    assert all(r["status"] == "imported" for r in silent)  # "Everything else" takes them
    auths = [gw.api(f"/api/messages/{r['id']}").json()["authentication"] for r in silent]
    assert all(a["authenticated"] is None and a["temporary"] for a in auths)
    assert any("did not answer recently" in a["spf"]["reason"] or "did not answer recently" in a["dmarc"]["reason"]
               for a in auths)  # the silent zone did back off
    assert time.monotonic() - started < 10

    gw.send(signed(key, invoice("after-silence"), domain=GOOD), sender=SUPPLIER)
    rows = settled(gw, 5)
    good = rows[-1]
    auth = gw.api(f"/api/messages/{good['id']}").json()["authentication"]
    assert auth["authenticated"] is True, auth["reason"]
    assert auth["dkim"][0]["result"] == "pass" and auth["dmarc"]["result"] == "pass"
    assert good["status"] == "imported" and "Known supplier" in good["reason"]
    assert f"s1._domainkey.{GOOD}" in dns_server.asked


def test_backoff_is_per_zone(dns_server: DnsServer) -> None:
    resolver = DnsPythonResolver([f"127.0.0.1:{dns_server.port}"], timeout=0.2)
    for name in (SILENT, f"_dmarc.{SILENT}", f"s1._domainkey.{SILENT}"):
        with pytest.raises(DNSTempError, match="no answer within"):
            resolver.lookup(name, "TXT")
    asked = len(dns_server.asked)
    with pytest.raises(DNSTempError, match=f"the DNS of {SILENT} did not answer recently"):
        resolver.lookup(f"mail.{SILENT}", "TXT")
    assert len(dns_server.asked) == asked  # not asked at all
    assert resolver.backing_off(f"_dmarc.{SILENT}") and not resolver.backing_off(GOOD)
    assert resolver.lookup(f"_dmarc.{GOOD}", "TXT") == [(b"v=DMARC1; p=reject",)]
    assert resolver.lookup(f"nothing.{GOOD}", "TXT") == []


def test_backoff_keys_and_server_syntax() -> None:
    assert backoff_key("_dmarc.mail.supplier.example") == "supplier.example"
    assert backoff_key("s1._domainkey.supplier.co.uk") == "supplier.co.uk"
    assert split_server("192.0.2.53") == ("192.0.2.53", 53)
    assert split_server("192.0.2.53:5353") == ("192.0.2.53", 5353)
    assert split_server("2001:db8::53") == ("2001:db8::53", 53)
    assert split_server("[2001:db8::53]:5353") == ("2001:db8::53", 5353)
    for bad in ("dns.example", "192.0.2.53:x", "[::1]x", "192.0.2.53:70000"):
        with pytest.raises(ValueError):
            split_server(bad)
