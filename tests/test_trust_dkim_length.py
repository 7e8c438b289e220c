"""A DKIM signature with a body length limit (l=) vouches only for the signed bytes: a part
appended after them must not make the mail authenticated (issue 14.4)."""

from __future__ import annotations

import base64
import email.policy
from collections.abc import Callable
from pathlib import Path

import dkim

from conftest import Gateway, make_mail, unique_pdf
from gateway import mime
from gateway.senderauth.dkim import check_dkim
from test_trust_hold import SUPPLIER, settled, start
from test_trust_senderauth import dns, key, mail  # noqa: F401  (key is a fixture)

DOMAIN = "known-supplier.example"


def signed_with_length(key: tuple[bytes, str], raw: bytes, domain: str = DOMAIN) -> bytes:  # noqa: F811
    """``raw`` signed with l= (the body length), Content-Type not among the signed headers."""
    sig = dkim.sign(raw, b"s1", domain.encode(), key[0], length=True,
                    include_headers=[b"from", b"to", b"subject", b"message-id"])
    assert b" l=" in sig or b";l=" in sig.replace(b" ", b"")
    return sig + raw


def append_pdf(raw: bytes, pdf: bytes) -> bytes:
    """The attack: make the (unsigned) Content-Type multipart, so that the signed text becomes the
    preamble, and append a PDF part after the signed length."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    kept, skip = [], False
    for line in lines:  # drop Content-Type and its continuation lines
        if line[:1] in (b" ", b"\t") and skip:
            continue
        skip = line.lower().startswith(b"content-type:") or line.lower().startswith(b"content-transfer-encoding:")
        if not skip:
            kept.append(line)
    kept.append(b'Content-Type: multipart/mixed; boundary="ATTACK"')
    extra = (b"\r\n--ATTACK\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
             b'Content-Disposition: attachment; filename="invoice-attacker.pdf"\r\n\r\n'
             + base64.encodebytes(pdf).replace(b"\n", b"\r\n") + b"--ATTACK--\r\n")
    return b"\r\n".join(kept) + sep + body + extra


def supplier_mail(tag: str) -> bytes:
    return make_mail(sender=f"Known Supplier <{SUPPLIER}>", subject=f"Invoice {tag}",
                     body=f"Dear customer, your invoice {tag} follows by post.").as_bytes(policy=email.policy.SMTP)


def test_signature_covering_part_of_the_body_is_not_a_pass(key: tuple[bytes, str]) -> None:  # noqa: F811
    raw = mail(body="Invoice attached.\r\n")
    sig = dkim.sign(raw, b"s1", b"supplier.example", key[0], length=True,
                    include_headers=[b"from", b"to", b"subject", b"message-id"])
    whole = check_dkim(dns(key), sig + raw)
    assert [d.result for d in whole] == ["pass"]  # l= that covers the whole body is fine
    [part] = check_dkim(dns(key), sig + raw + b"Pay to another account.\r\n")
    assert part.result == "policy" and part.domain == "supplier.example"
    assert "covers only the first 19 of 44 bytes of the body (l=)" in part.reason


def test_appended_pdf_is_not_authenticated_through_the_gateway(
        gateway_factory: Callable[..., Gateway], workdir: Path, key: tuple[bytes, str]) -> None:  # noqa: F811
    gw = start(gateway_factory, workdir, key)
    genuine = signed_with_length(key, supplier_mail("L1"))
    attack = append_pdf(signed_with_length(key, supplier_mail("L2")), unique_pdf("appended"))
    assert [a.filename for a in mime.parse(attack).attachments] == ["invoice-attacker.pdf"]
    gw.send(genuine, sender=SUPPLIER)
    gw.send(attack, sender=SUPPLIER)
    first, second = settled(gw, 2)

    good = gw.api(f"/api/messages/{first['id']}").json()["authentication"]
    assert good["authenticated"] is True and good["dkim"][0]["result"] == "pass"

    assert second["status"] == "suspicious"  # held: it claims rule 'Known supplier' without proof
    assert "covers only the first" in second["reason"] and "(l=)" in second["reason"]
    auth = gw.api(f"/api/messages/{second['id']}").json()["authentication"]
    assert auth["authenticated"] is False
    assert auth["dkim"][0]["result"] == "policy" and auth["dmarc"]["result"] == "fail"
    assert "dkim=policy header.d=known-supplier.example" in auth["header"]
    assert gw.store.documents_of(second["id"]) == []
    assert gw.exported_files() == []
