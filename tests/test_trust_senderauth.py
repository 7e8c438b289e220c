"""Sender authentication with a stub resolver: DKIM signatures made here, SPF, DMARC alignment,
DNS failures, and the provider's Authentication-Results for IMAP mail."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path
from typing import Any

import dkim
import pytest

from gateway import mime
from gateway.config import parse_settings
from gateway.senderauth import SenderAuth, StubResolver, authres, org_domain
from gateway.senderauth.dkim import check_dkim
from gateway.senderauth.spf import check_spf

SUPPLIER_NET = "192.0.2.0/24"


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, str]:
    """A 2048-bit RSA key (PKCS#1 PEM) and its public half as a DKIM p= value."""
    path = tmp_path_factory.mktemp("dkim") / "key.pem"
    subprocess.run(["openssl", "genrsa", "-traditional", "-out", str(path), "2048"], check=True,
                   capture_output=True)
    der = subprocess.run(["openssl", "rsa", "-in", str(path), "-pubout", "-outform", "DER"], check=True,
                         capture_output=True).stdout
    return path.read_bytes(), base64.b64encode(der).decode()


def mail(sender: str = "Billing <billing@supplier.example>", body: str = "Invoice attached.\r\n") -> bytes:
    return (f"From: {sender}\r\nTo: invoices@home.example\r\nSubject: Invoice 7\r\n"
            f"Message-ID: <7@supplier.example>\r\n\r\n{body}").encode()


def signed(key: tuple[bytes, str], raw: bytes, domain: str = "supplier.example", selector: str = "s1") -> bytes:
    sig = dkim.sign(raw, selector.encode(), domain.encode(), key[0],
                    include_headers=[b"from", b"to", b"subject", b"message-id"])
    return sig + raw


def dns(key: tuple[bytes, str], extra: dict[tuple[str, str], Any] | None = None) -> StubResolver:
    """DNS for supplier.example: SPF for its network, a DKIM key, DMARC p=reject."""
    r = StubResolver({
        ("supplier.example", "TXT"): f"v=spf1 ip4:{SUPPLIER_NET} -all",
        ("s1._domainkey.supplier.example", "TXT"): f"v=DKIM1; k=rsa; p={key[1]}",
        ("_dmarc.supplier.example", "TXT"): "v=DMARC1; p=reject; rua=mailto:dmarc@supplier.example",
    })
    for (name, rdtype), value in (extra or {}).items():
        r.add(name, rdtype, value)
    return r


def auth(resolver: StubResolver, raw: bytes, *, peer: str = "203.0.113.9",
         mail_from: str = "billing@supplier.example", **cfg: Any) -> dict[str, Any]:
    settings = parse_settings({"smtp": {"hostname": "gateway.test"}, **cfg})
    return SenderAuth(settings, resolver).check(raw, mime.parse(raw), peer=peer, mail_from=mail_from)


def test_valid_signature_passes_and_authenticates(key: tuple[bytes, str]) -> None:
    r = dns(key)
    result = auth(r, signed(key, mail()))  # from an IP SPF does not allow: DKIM alone carries it
    assert result["dkim"] == [{"result": "pass", "domain": "supplier.example", "selector": "s1",
                               "aligned": True, "reason": ""}]
    assert result["spf"]["result"] == "fail"
    assert result["dmarc"]["result"] == "pass" and result["dmarc"]["policy"] == "reject"
    assert result["authenticated"] is True and result["temporary"] is False
    assert result["header"].startswith("gateway.test; spf=fail smtp.mailfrom=billing@supplier.example; "
                                       "dkim=pass header.d=supplier.example header.s=s1; dmarc=pass")


def test_altered_body_fails(key: tuple[bytes, str]) -> None:
    raw = signed(key, mail()).replace(b"Invoice attached.", b"Pay to DE02 1203 0000 0000 2020 51")
    result = auth(dns(key), raw)
    assert result["dkim"][0]["result"] == "fail" and "body" in result["dkim"][0]["reason"]
    assert result["dmarc"]["result"] == "fail"
    assert result["authenticated"] is False
    assert "DMARC fail (p=reject)" in result["reason"]


def test_altered_signed_header_fails(key: tuple[bytes, str]) -> None:
    raw = signed(key, mail()).replace(b"Subject: Invoice 7", b"Subject: Invoice 8")
    assert auth(dns(key), raw)["dkim"][0]["result"] == "fail"


def test_missing_signature_is_none(key: tuple[bytes, str]) -> None:
    result = auth(dns(key), mail())
    assert result["dkim"] == []
    assert "dkim=none" in result["header"]
    assert result["authenticated"] is False


def test_missing_key_is_permerror(key: tuple[bytes, str]) -> None:
    raw = signed(key, mail(), selector="gone")
    assert check_dkim(dns(key), raw)[0].result == "permerror"


def test_spf_pass_and_fail_with_the_stub(key: tuple[bytes, str]) -> None:
    r = dns(key)
    assert check_spf(r, "192.0.2.25", "billing@supplier.example").result == "pass"
    assert check_spf(r, "203.0.113.9", "billing@supplier.example").result == "fail"
    assert check_spf(r, "203.0.113.9", "").result == "none"  # a bounce
    assert check_spf(r, None, "billing@supplier.example").result == "none"  # no client IP
    r.add("other.example", "TXT", "v=spf1 include:_spf.supplier.example mx ~all")
    r.add("_spf.supplier.example", "TXT", "v=spf1 ip6:2001:db8::/32 -all")
    r.add("other.example", "MX", [(10, "mx.other.example")])
    r.add("mx.other.example", "A", ["198.51.100.7"])
    assert check_spf(r, "2001:db8::1", "x@other.example").result == "pass"
    assert check_spf(r, "198.51.100.7", "x@other.example").result == "pass"
    assert check_spf(r, "198.51.100.8", "x@other.example").result == "softfail"


def test_spf_pass_aligned_with_from_is_a_dmarc_pass(key: tuple[bytes, str]) -> None:
    result = auth(dns(key), mail(), peer="192.0.2.25")
    assert result["spf"]["result"] == "pass" and result["dkim"] == []
    assert result["dmarc"]["result"] == "pass" and result["authenticated"] is True


def test_spf_pass_for_another_domain_does_not_align(key: tuple[bytes, str]) -> None:
    r = dns(key, {("bounces.esp.example", "TXT"): "v=spf1 ip4:198.51.100.0/24 -all"})
    result = auth(r, mail(), peer="198.51.100.3", mail_from="bounce-77@bounces.esp.example")
    assert result["spf"]["result"] == "pass"
    assert result["dmarc"]["result"] == "fail" and result["authenticated"] is False


def test_dkim_of_a_third_party_does_not_align(key: tuple[bytes, str]) -> None:
    r = dns(key, {("s1._domainkey.esp.example", "TXT"): f"v=DKIM1; k=rsa; p={key[1]}"})
    result = auth(r, signed(key, mail(), domain="esp.example"))
    assert result["dkim"][0]["result"] == "pass" and result["dkim"][0]["aligned"] is False
    assert result["dmarc"]["result"] == "fail" and result["authenticated"] is False


def test_relaxed_alignment_takes_a_subdomain_and_strict_does_not(key: tuple[bytes, str]) -> None:
    sub = {("s1._domainkey.mail.supplier.example", "TXT"): f"v=DKIM1; k=rsa; p={key[1]}"}
    raw = signed(key, mail(), domain="mail.supplier.example")
    relaxed = auth(dns(key, sub), raw)
    assert relaxed["dkim"][0]["aligned"] is True and relaxed["dmarc"]["result"] == "pass"
    strict = StubResolver({**{k: v for k, v in sub.items()},
                           ("_dmarc.supplier.example", "TXT"): "v=DMARC1; p=quarantine; adkim=s; aspf=s"})
    result = auth(strict, raw)
    assert result["dmarc"]["result"] == "fail" and result["dmarc"]["policy"] == "quarantine"
    # but an aligned DKIM pass (relaxed) still authenticates the sender for rules
    assert result["authenticated"] is True


def test_dmarc_record_of_the_organizational_domain_applies_to_subdomains(key: tuple[bytes, str]) -> None:
    r = StubResolver({("_dmarc.supplier.example", "TXT"): "v=DMARC1; p=reject; sp=quarantine",
                      ("billing.supplier.example", "TXT"): "v=spf1 ip4:192.0.2.0/24 -all"})
    result = auth(r, mail(sender="billing@billing.supplier.example"), peer="192.0.2.9",
                  mail_from="bounce@billing.supplier.example")
    assert result["dmarc"] == {"result": "pass", "domain": "billing.supplier.example", "policy": "quarantine",
                               "reason": "SPF pass for billing.supplier.example aligns with From"}
    assert org_domain("billing.supplier.co.uk") == "supplier.co.uk"


def test_no_dmarc_record_is_none(key: tuple[bytes, str]) -> None:
    r = StubResolver({("supplier.example", "TXT"): f"v=spf1 ip4:{SUPPLIER_NET} -all"})
    result = auth(r, mail(), peer="192.0.2.1")
    assert result["dmarc"]["result"] == "none" and result["authenticated"] is False


def test_dns_failure_is_temperror_never_a_failure(key: tuple[bytes, str]) -> None:
    r = StubResolver(failing=["supplier.example", "s1._domainkey.supplier.example", "_dmarc.supplier.example"])
    result = auth(r, signed(key, mail()))
    assert result["spf"]["result"] == "temperror"
    assert result["dkim"][0]["result"] == "temperror"
    assert result["dmarc"]["result"] == "temperror"
    assert result["authenticated"] is None and result["temporary"] is True


def test_a_stored_result_is_kept_unless_it_was_temporary(key: tuple[bytes, str]) -> None:
    import json

    settings = parse_settings({})
    checker = SenderAuth(settings, dns(key))
    raw = signed(key, mail())
    row = {"source": "smtp", "peer": "203.0.113.9", "mail_from": "billing@supplier.example"}
    first = checker.for_message(raw, mime.parse(raw), row)
    assert first is not None and first["authenticated"] is True
    assert checker.for_message(raw, mime.parse(raw), {**row, "auth": json.dumps(first)}) is None
    temp = {**first, "temporary": True}
    assert checker.for_message(raw, mime.parse(raw), {**row, "auth": json.dumps(temp)}) is not None
    assert checker.for_message(raw, mime.parse(raw), {**row, "source": "import"}) is None


GMAIL_AR = ("mx.google.com;\r\n       dkim=pass header.i=@supplier.example header.s=s1 header.b=abc;\r\n"
            "       spf=pass (google.com: domain of billing@supplier.example designates 192.0.2.1 as permitted "
            "sender) smtp.mailfrom=billing@supplier.example;\r\n       dmarc=pass (p=REJECT sp=REJECT dis=NONE) "
            "header.from=supplier.example")
OUTLOOK_AR = ("spf=pass (sender IP is 192.0.2.1) smtp.mailfrom=supplier.example; dkim=pass (signature was "
              "verified) header.d=supplier.example;dmarc=pass action=none header.from=supplier.example;"
              "compauth=pass reason=100")


def imap_mail(*ars: str, sender: str = "billing@supplier.example") -> bytes:
    head = "".join(f"Authentication-Results: {a}\r\n" for a in ars)
    return (head + f"Received: from x\r\nFrom: {sender}\r\nTo: me@gmail.com\r\nSubject: Invoice\r\n\r\nhi\r\n").encode()


def provider(raw: bytes, **mailbox: Any) -> dict[str, Any]:
    box = {"name": "box", "provider": "gmail", "username": "me@gmail.com", "password": "x", **mailbox}
    settings = parse_settings({"mailboxes": [box]})
    return SenderAuth(settings, StubResolver()).for_message(raw, mime.parse(raw), {"source": "imap:box"}) or {}


def test_imap_reads_the_topmost_header_of_a_trusted_server() -> None:
    result = provider(imap_mail(GMAIL_AR))
    assert result["authenticated"] is True and result["dmarc"]["result"] == "pass"
    assert result["dkim"][0] == {"result": "pass", "domain": "supplier.example", "selector": "s1",
                                 "aligned": True, "reason": ""}
    assert "mx.google.com" in result["reason"]


def test_imap_ignores_headers_below_an_untrusted_one() -> None:
    forged = "mx.google.com; dkim=pass header.d=supplier.example; dmarc=pass header.from=supplier.example"
    # the provider's own (topmost) header says fail; the sender's forged header sits below it
    real = "mx.google.com; dkim=none; spf=fail smtp.mailfrom=x@evil.example; dmarc=fail header.from=supplier.example"
    assert provider(imap_mail(real, forged))["authenticated"] is False
    # a topmost header from somebody else: nothing below it is believed
    result = provider(imap_mail("evil.example; dmarc=pass header.from=supplier.example", forged))
    assert result["authenticated"] is None and "not from a trusted server" in result["reason"]


def test_imap_never_combines_methods_across_headers_of_the_trusted_server() -> None:
    # the audit's bypass: the real header on top says fail and reports no DKIM; below it the sender
    # wrote a header with the provider's own authserv-id and a DKIM pass aligned with From
    real = "mx.google.com; spf=fail smtp.mailfrom=x@evil.example; dmarc=fail header.from=supplier.example"
    forged = "mx.google.com; dkim=pass header.d=supplier.example header.s=s1"
    result = provider(imap_mail(real, forged))
    assert result["authenticated"] is False
    assert result["dkim"] == []  # the forged DKIM pass is not read at all
    assert result["dmarc"]["result"] == "fail" and result["spf"]["result"] == "fail"
    assert "DKIM not reported" in result["reason"] and result["header"].startswith("mx.google.com; spf=fail")
    # nor the other way round: a topmost header with only SPF, a forged DMARC pass below
    spf_only = "mx.google.com; spf=softfail smtp.mailfrom=x@evil.example"
    below = "mx.google.com; dmarc=pass header.from=supplier.example"
    assert provider(imap_mail(spf_only, below))["authenticated"] is False
    assert authres.topmost_trusted([real, forged], ["mx.google.com"]) == authres.parse(real)
    assert authres.topmost_trusted([forged], ["mx.microsoft.com"]) is None
    assert authres.topmost_trusted([], ["mx.google.com"]) is None


def test_imap_dmarc_pass_for_another_from_domain_does_not_count() -> None:
    result = provider(imap_mail(GMAIL_AR.replace("header.from=supplier.example", "header.from=evil.example")
                                .replace("header.i=@supplier.example", "header.i=@evil.example")))
    assert result["authenticated"] is False


def test_imap_outlook_header_without_authserv_id_and_configured_ids() -> None:
    assert provider(imap_mail(OUTLOOK_AR), provider="outlook", username="me@outlook.com")["authenticated"] is True
    assert provider(imap_mail(OUTLOOK_AR))["authenticated"] is None  # gmail does not trust it
    # a mailbox on the user's own server: they name its authserv-id
    own = "mail.home.example; dmarc=pass header.from=supplier.example"
    assert provider(imap_mail(own), provider=None, host="mail.home.example",
                    trusted_authserv_ids=["mail.home.example"])["authenticated"] is True
    assert provider(imap_mail(own), provider=None, host="mail.home.example")["authenticated"] is None


def test_authentication_results_parser_is_lenient() -> None:
    parsed = authres.parse(GMAIL_AR)
    assert parsed.authserv_id == "mx.google.com"
    assert [(r.method, r.result) for r in parsed.results] == [("dkim", "pass"), ("spf", "pass"), ("dmarc", "pass")]
    assert parsed.results[1].props["smtp.mailfrom"] == "billing@supplier.example"
    ms = authres.parse(OUTLOOK_AR)
    assert ms.authserv_id == "" and [r.method for r in ms.results] == ["spf", "dkim", "dmarc", "compauth"]
    assert authres.parse("garbage ((( ;;; =").results == ()


def test_trusted_ids_accept_globs(tmp_path: Path) -> None:
    assert authres.trusted("mx3.messagingengine.com", ["*.messagingengine.com"])
    assert not authres.trusted("messagingengine.com.evil.example", ["*.messagingengine.com"])
    assert authres.trusted("", [""]) and not authres.trusted("", ["mx.google.com"])
