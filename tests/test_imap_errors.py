"""Errors a person can act on: certificates (implicit TLS and STARTTLS), unreachable, timeout, login; config; the CLI."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from email import policy
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import base_config, free_port, make_mail, run_cli, unique_pdf
from dovecot import Dovecot, dovecot_available

assert dovecot_available(), "dovecot is missing: `make test` installs dovecot-imapd"


@pytest.fixture(scope="module")
def tls_dovecot() -> Iterator[Dovecot]:
    """A server with a self-signed certificate: implicit TLS on ssl_port, STARTTLS on port."""
    with Dovecot(tls=True) as dc:
        yield dc


def invoice(n: int | str) -> bytes:
    return make_mail(subject=f"Rechnung {n}", message_id=f"<err-{n}@acme.example>",
                     attachments=[(f"Rechnung_{n}.pdf", unique_pdf(f"err-{n}"), "application/pdf")]
                     ).as_bytes(policy=policy.SMTP)


def poll(workdir: Path, **mailbox: Any) -> Any:
    """Poll one mailbox once; the PollResult."""
    from gateway.config import parse_settings
    from gateway.pipeline import Pipeline
    from gateway.sources.imap import MailboxPoller
    from gateway.spool import Spool
    from gateway.store import Store

    mb = {"name": "box", "host": "127.0.0.1", "username": "nobody@example.test", "password": "x", "timeout": "5s"}
    mb.update(mailbox)
    settings = parse_settings(base_config(workdir, mailboxes=[mb]), base=workdir)
    store = Store(settings.data_dir)
    pipeline = Pipeline(settings, store)
    poller = MailboxPoller(settings.mailboxes[0], store=store, spool=Spool(store), settings=settings,
                           process=lambda ids: pipeline.run_pending())
    return poller.poll()


@pytest.mark.parametrize("security", ["ssl", "starttls"])
def test_a_self_signed_certificate_is_refused_by_default_and_accepted_with_ca_file(
        tls_dovecot: Dovecot, workdir: Path, security: str) -> None:
    user = tls_dovecot.add_user()
    tls_dovecot.append(user, "INBOX", [invoice(security)])
    port = tls_dovecot.ssl_port if security == "ssl" else tls_dovecot.port
    box = {"port": port, "security": security, "username": user, "password": "secret"}

    refused = poll(workdir, **box)
    err = refused.error
    assert err is not None and err.kind == "certificate", err
    assert f"the certificate of 127.0.0.1:{port} is not trusted" in str(err)
    assert "self-signed" in str(err) or "self signed" in str(err)
    assert "tls.ca_file" in (err.hint or "")
    assert refused.downloaded == 0

    accepted = poll(workdir, **box, tls={"ca_file": str(tls_dovecot.cert)})
    assert accepted.error is None and accepted.downloaded == 1 and accepted.imported == 1


def test_tls_to_a_plain_port_and_starttls_without_offer_say_what_to_change(workdir: Path) -> None:
    with Dovecot() as plain:
        wrong_port = poll(workdir, port=plain.port, security="ssl").error
        assert wrong_port is not None and wrong_port.kind == "tls"
        assert "port 993" in (wrong_port.hint or "")
        no_starttls = poll(workdir, port=plain.port, security="starttls").error
        assert no_starttls is not None and no_starttls.kind == "tls"
        assert "does not offer STARTTLS" in str(no_starttls)


def test_unreachable_unknown_host_and_timeout(workdir: Path) -> None:
    refused = poll(workdir, port=free_port(), security="none").error
    assert refused is not None and refused.kind == "unreachable" and "refused the connection" in str(refused)
    unknown = poll(workdir, host="imap.nonexistent.invalid", port=993, security="ssl").error
    assert unknown is not None and unknown.kind == "unreachable" and "cannot find" in str(unknown)

    # a server that accepts and never says a word
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(5)
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.append(silent.accept()[0]), daemon=True).start()
    try:
        slow = poll(workdir, port=silent.getsockname()[1], security="none", timeout="1s").error
    finally:
        silent.close()
        for s in held:
            s.close()
    assert slow is not None and slow.kind == "timeout" and "did not answer within 1 s" in str(slow)


def test_a_wrong_password_without_provider_gets_the_general_hint(tls_dovecot: Dovecot, workdir: Path) -> None:
    user = tls_dovecot.add_user()
    err = poll(workdir, port=tls_dovecot.port, security="starttls", tls={"ca_file": str(tls_dovecot.cert)},
               username=user, password="wrong").error
    assert err is not None and err.kind == "auth"
    assert f"login to 127.0.0.1 as {user} failed: authentication failed" in str(err)
    assert "app password" in (err.hint or "")


def test_provider_presets_and_config_errors() -> None:
    from gateway.config import parse_settings
    from gateway.errors import ConfigError

    def box(**kw: Any) -> Any:
        return parse_settings({"mailboxes": [{"name": "m", "username": "u@x.example", **kw}]}, env={}).mailboxes[0]

    gmail = box(provider="gmail", password="app-password")
    assert (gmail.host, gmail.port, gmail.security) == ("imap.gmail.com", 993, "ssl")
    assert gmail.folders == ("INBOX",) and gmail.after_import == "none" and gmail.idle is True
    assert gmail.schedule.every == 3600 and gmail.tls.verify is True
    office = box(provider="office365", oauth2={"client_id": "abc"})
    assert office.provider == "outlook" and office.host == "outlook.office365.com"
    assert office.oauth2 is not None and "IMAP.AccessAsUser.All" in (office.oauth2.scope or "")
    assert office.oauth2.token_url and office.oauth2.auth_url
    for name, host in (("icloud", "imap.mail.me.com"), ("fastmail", "imap.fastmail.com"), ("gmx", "imap.gmx.net"),
                       ("webde", "imap.web.de"), ("yahoo", "imap.mail.yahoo.com")):
        assert box(provider=name, password="p").host == host
    own = box(host="mail.example", port=143, password="p", folders="*", schedule={"days": ["mon"]})
    assert (own.security, own.folders, own.schedule.every) == ("starttls", ("*",), 3600)
    assert box(host="mail.example", password="p").port == 993

    for kw, message in (
        ({"provider": "aolx", "password": "p"}, "mailboxes[0].provider: unknown provider 'aolx'"),
        ({"password": "p"}, "mailboxes[0].host: required"),
        ({"host": "h"}, "mailboxes[0].password: required (or password_file, or oauth2)"),
        ({"host": "h", "password": "p", "after_import": "delete"}, "mailboxes[0].after_import: must be none, seen"),
        ({"host": "h", "oauth2": {"client_id": "c"}}, "mailboxes[0].oauth2.token_url: required"),
    ):
        with pytest.raises(ConfigError, match=re.escape(message)):
            box(**kw)


def test_fetch_command_prints_a_summary_and_exits_1_when_a_mailbox_failed(tls_dovecot: Dovecot, workdir: Path) -> None:
    user = tls_dovecot.add_user()
    tls_dovecot.append(user, "INBOX", [invoice("cli-1"), invoice("cli-2")])
    secret = workdir / "imap-password"
    secret.write_text("secret\n")
    good = {"name": "home", "host": "127.0.0.1", "port": tls_dovecot.ssl_port, "username": user,
            "password_file": str(secret), "tls": {"ca_file": str(tls_dovecot.cert)}}
    bad = {"name": "icloud", "provider": "icloud", "host": "127.0.0.1", "port": tls_dovecot.ssl_port,
           "security": "ssl", "username": user, "password": "wrong", "tls": {"ca_file": str(tls_dovecot.cert)}}
    config = workdir / "gateway.yaml"
    config.write_text(yaml.safe_dump(base_config(workdir, mailboxes=[good, bad])))

    res = run_cli("--config", str(config), "fetch")
    out = res.stdout.decode()
    assert res.returncode == 1, out + res.stderr.decode()
    assert "home: 2 looked at, 2 downloaded" in out and "2 imported" in out
    assert "icloud: 0 looked at" in out and "error (auth)" in out and "app-specific password" in out
    assert "1 of 2 mailbox(es) failed" in out

    again = run_cli("--config", str(config), "fetch", "home", "--since", "2020-01-01")
    assert again.returncode == 0, again.stdout.decode() + again.stderr.decode()
    assert "home: 0 looked at" in again.stdout.decode()  # --since looks again, but both were handled

    unknown = run_cli("--config", str(config), "fetch", "nope")
    assert unknown.returncode == 2 and "no mailbox named 'nope'" in unknown.stdout.decode()
    helptext = run_cli("oauth", "--help").stdout.decode()
    assert "Example:" in helptext and "refresh token" in helptext
