"""SMTP hardening over real sockets: STARTTLS, implicit TLS, AUTH only over TLS, per-IP limits,
bare LF without SMTP smuggling, and the line-length limit."""

from __future__ import annotations

import smtplib
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import Gateway, free_port, make_mail, unique_pdf, wait_for, wait_port
from gateway.sources.smtp import LINE_LENGTH_LIMIT, longest_line_exceeds

PASSWORD = "scan-secret-1"


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for gateway.test and 127.0.0.1."""
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem"), "-subj", "/CN=gateway.test",
                    "-addext", "subjectAltName=DNS:gateway.test,IP:127.0.0.1"], check=True, capture_output=True)
    return d / "cert.pem", d / "key.pem"


def smtp_cfg(cert: tuple[Path, Path], **extra: Any) -> dict[str, Any]:
    from conftest import base_config

    cfg = base_config(Path("/nonexistent"))["smtp"]
    tls = {"cert": str(cert[0]), "key": str(cert[1]), **extra.pop("tls", {})}
    return {**cfg, "tls": tls, "auth": {"users": {"scanner": PASSWORD}, **extra.pop("auth", {})}, **extra}


def client_ctx(cert: tuple[Path, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert[0]))


def exported_one(gw: Gateway) -> None:
    wait_for(lambda: len(gw.exported_files()) >= 1, timeout=10)


def test_starttls_then_auth_with_smtplib(gateway_factory: Callable[..., Gateway], cert: tuple[Path, Path]) -> None:
    gw = gateway_factory(smtp=smtp_cfg(cert))
    with smtplib.SMTP("127.0.0.1", gw.smtp_port, timeout=10) as s:
        s.ehlo("client.test")
        assert s.has_extn("starttls") and not s.has_extn("auth")  # no AUTH in the clear
        code, reply = s.docmd("AUTH", "PLAIN " + "AHNjYW5uZXIAc2Nhbi1zZWNyZXQtMQ==")
        assert code == 538 and b"Encryption required" in reply
        s.starttls(context=client_ctx(cert))
        s.ehlo("client.test")
        assert s.has_extn("auth") and set(s.esmtp_features["auth"].split()) == {"LOGIN", "PLAIN"}
        assert not s.has_extn("starttls")
        with pytest.raises(smtplib.SMTPAuthenticationError):
            s.login("scanner", "wrong")
        s.login("scanner", PASSWORD)
        s.send_message(make_mail(attachments=[("tls.pdf", unique_pdf("tls"), "application/pdf")]),
                       to_addrs=["invoices@localhost"])
    exported_one(gw)


def test_starttls_and_auth_login_with_swaks(gateway_factory: Callable[..., Gateway], cert: tuple[Path, Path],
                                             tmp_path: Path) -> None:
    gw = gateway_factory(smtp=smtp_cfg(cert, auth={"required": True}))
    att = tmp_path / "swaks.pdf"
    att.write_bytes(unique_pdf("swaks-tls"))
    result = subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{gw.smtp_port}", "--tls", "--auth", "LOGIN", "--auth-user", "scanner",
         "--auth-password", PASSWORD, "--to", "invoices@localhost", "--from", "scanner@home.example",
         "--attach-type", "application/pdf", "--attach-name", "swaks.pdf", "--attach", f"@{att}"],
        capture_output=True, text=True, timeout=60)
    out = result.stdout + result.stderr
    assert "TLS started" in out and "235" in out and "250 2.0.0 OK" in out, out
    exported_one(gw)
    # without AUTH, swaks is refused at MAIL even over TLS
    refused = subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{gw.smtp_port}", "--tls", "--to", "invoices@localhost",
         "--from", "somebody@elsewhere.example"], capture_output=True, text=True, timeout=60)
    assert "530 5.7.0 Authentication required" in refused.stdout, refused.stdout


def test_tls_required_refuses_mail_before_starttls(gateway_factory: Callable[..., Gateway],
                                                   cert: tuple[Path, Path]) -> None:
    gw = gateway_factory(smtp=smtp_cfg(cert, tls={"required": True}))
    with smtplib.SMTP("127.0.0.1", gw.smtp_port, timeout=10) as s:
        s.ehlo("client.test")
        code, reply = s.mail("billing@acme.example")
        assert code == 530 and b"STARTTLS" in reply
        s.starttls(context=client_ctx(cert))
        s.ehlo("client.test")
        assert s.mail("billing@acme.example")[0] == 250


def test_auth_required_refuses_unauthenticated_senders(gateway_factory: Callable[..., Gateway],
                                                        cert: tuple[Path, Path]) -> None:
    gw = gateway_factory(smtp=smtp_cfg(cert, auth={"required": True}))
    with smtplib.SMTP("127.0.0.1", gw.smtp_port, timeout=10) as s:
        s.ehlo("client.test")
        assert s.mail("billing@acme.example")[0] == 530  # in the clear
        s.starttls(context=client_ctx(cert))
        s.ehlo("client.test")
        code, reply = s.mail("billing@acme.example")
        assert code == 530 and b"Authentication required" in reply  # TLS alone is not enough
        s.login("scanner", PASSWORD)
        assert s.mail("billing@acme.example")[0] == 250
    assert gw.store.status_counts() == {}


def test_implicit_tls_listener(gateway_factory: Callable[..., Gateway], cert: tuple[Path, Path]) -> None:
    port = free_port()
    gw = gateway_factory(smtp=smtp_cfg(cert, tls={"implicit_listen": f"127.0.0.1:{port}"}, auth={"required": True}))
    wait_port(port)
    with smtplib.SMTP_SSL("127.0.0.1", port, timeout=10, context=client_ctx(cert)) as s:
        s.ehlo("client.test")
        assert s.has_extn("auth") and not s.has_extn("starttls")
        s.login("scanner", PASSWORD)
        s.send_message(make_mail(attachments=[("smtps.pdf", unique_pdf("smtps"), "application/pdf")]),
                       to_addrs=["invoices@localhost"])
    exported_one(gw)


def test_auth_without_tls_is_a_config_error() -> None:
    from gateway.config import parse_settings
    from gateway.errors import ConfigError

    with pytest.raises(ConfigError, match=r"smtp.auth: needs smtp.tls"):
        parse_settings({"smtp": {"auth": {"users": {"a": "b"}}}})


def banner(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(1024)
        if not chunk:
            break
        data += chunk
    return data


def test_connections_per_ip_get_421(gateway_factory: Callable[..., Gateway]) -> None:
    from conftest import base_config

    smtp = {**base_config(Path("/x"))["smtp"], "limits": {"connections_per_ip": 2, "exempt": []}}
    gw = gateway_factory(smtp=smtp)
    time.sleep(0.2)  # the controller's own start-up probe has gone
    held = [socket.create_connection(("127.0.0.1", gw.smtp_port)) for _ in range(2)]
    try:
        assert all(banner(s).startswith(b"220") for s in held)
        with socket.create_connection(("127.0.0.1", gw.smtp_port)) as third:
            assert banner(third).startswith(b"421 4.7.0 Too many connections")
    finally:
        for s in held:
            s.close()
    wait_for(lambda: _connects(gw.smtp_port), timeout=5)  # a slot is free again


def _connects(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port)) as s:
        return banner(s).startswith(b"220")


def test_messages_per_minute_per_ip_get_450(gateway_factory: Callable[..., Gateway]) -> None:
    from conftest import base_config

    smtp = {**base_config(Path("/x"))["smtp"], "limits": {"messages_per_minute_per_ip": 3, "exempt": []}}
    gw = gateway_factory(smtp=smtp)
    with smtplib.SMTP("127.0.0.1", gw.smtp_port, timeout=10) as s:
        s.ehlo("client.test")
        codes = []
        for _ in range(4):
            codes.append(s.mail("billing@acme.example")[0])
            s.rset()
    assert codes == [250, 250, 250, 450]


def test_loopback_is_exempt_by_default(gateway: Gateway) -> None:
    with smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=10) as s:
        s.ehlo("client.test")
        assert all(s.mail("a@acme.example")[0] == 250 and s.rset()[0] == 250 for _ in range(5))


def session(port: int, data: bytes) -> list[bytes]:
    """One SMTP transaction on a raw socket; ``data`` is sent as is after DATA; returns the replies."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        f = s.makefile("rb")
        replies = [f.readline()]
        for cmd in (b"EHLO client.test\r\n", b"MAIL FROM:<billing@acme.example>\r\n",
                    b"RCPT TO:<invoices@localhost>\r\n", b"DATA\r\n"):
            s.sendall(cmd)
            line = f.readline()
            while line[3:4] == b"-":
                line = f.readline()
            replies.append(line)
        s.sendall(data)
        replies.append(f.readline())
        s.sendall(b"QUIT\r\n")
        replies += f.readlines()
    return replies


@pytest.mark.parametrize("dot", [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n"])
def test_smuggled_second_message_stays_content(gateway: Gateway, dot: bytes) -> None:
    smuggled = (b"Subject: first\r\n\r\nhello" + dot +
                b"MAIL FROM:<ceo@acme.example>\r\nRCPT TO:<invoices@localhost>\r\nDATA\r\n"
                b"Subject: smuggled\r\n\r\npay now\r\n.\r\n")
    replies = session(gateway.smtp_port, smuggled)
    assert [r for r in replies if r.startswith(b"250 2.0.0 OK: queued as")] == [replies[-2]]
    assert replies[-1].startswith(b"221") and sum(r.startswith(b"354") for r in replies) == 1
    rows = wait_for(lambda: [r for r in gateway.store.list_messages()[0] if r["status"] != "received"], timeout=10)
    assert len(rows) == 1 and rows[0]["subject"] == "first"
    raw = (gateway.settings.data_dir / rows[0]["raw_path"]).read_bytes()
    assert b"Subject: smuggled" in raw  # the "second message" is the first one's body


def ignore_all(workdir: Path) -> None:
    """A rule that ignores every mail: these tests look at intake, not at rendering bodies."""
    (workdir / "rules" / "ignore.yaml").write_text("name: Ignore all\nwhen: {}\naction: ignore\n")


def test_bare_lf_mail_from_smtplib_is_stored_as_sent(gateway_factory: Callable[..., Gateway], workdir: Path) -> None:
    ignore_all(workdir)
    gateway = gateway_factory()
    body = b"".join(b"line %d of an invoice\n" % i for i in range(8000))  # 180 KB with bare LF only
    raw = (b"From: Billing <billing@acme.example>\nTo: invoices@localhost\nSubject: LF only\n\n"
           b".starts with a dot\n" + body + b"..two dots\n")
    gateway.send(raw)  # smtplib sends bytes as they are and doubles dots after every LF
    rows = wait_for(lambda: [r for r in gateway.store.list_messages()[0] if r["status"] != "received"], timeout=10)
    stored = (gateway.settings.data_dir / rows[0]["raw_path"]).read_bytes()
    assert stored.rstrip(b"\r\n") == raw.rstrip(b"\n")
    assert rows[0]["subject"] == "LF only"


def test_long_lines_are_accepted_up_to_the_limit(gateway_factory: Callable[..., Gateway], workdir: Path) -> None:
    from conftest import base_config

    ignore_all(workdir)
    gw = gateway_factory(smtp={**base_config(Path("/x"))["smtp"], "max_message_size": "3MB"})
    ok = b"Subject: long line\r\n\r\n" + b"A" * 300_000 + b"\r\n"  # beyond the former 64 KiB
    gw.send(ok)
    too_long = b"Subject: too long\r\n\r\n" + b"B" * (LINE_LENGTH_LIMIT + 1) + b"\r\n"
    with pytest.raises(smtplib.SMTPDataError) as info:
        gw.send(too_long)
    assert info.value.smtp_code == 552 and b"line is longer" in info.value.smtp_error
    rows = wait_for(lambda: [r for r in gw.store.list_messages()[0] if r["status"] != "received"], timeout=10)
    assert [r["subject"] for r in rows] == ["long line"]


def test_longest_line_exceeds() -> None:
    assert not longest_line_exceeds(b"", 4)
    assert not longest_line_exceeds(b"abcd\nabcd\r\nab", 5)
    assert longest_line_exceeds(b"abcd\nabcdef\nab", 5)
    assert longest_line_exceeds(b"abcdef", 5)
    assert not longest_line_exceeds(b"abcd\n" * 10000, 4)

