"""Connecting to an IMAP server: TLS, login (password or XOAUTH2), and errors a person can act on.

Every foreign exception (socket, ssl, imaplib) is turned into a
``MailboxError`` with a ``kind`` and a ``hint`` here, at the boundary:

    auth            the server refused the login (provider hints: app passwords, OAuth2)
    certificate     the server's certificate is not trusted (tls.ca_file)
    tls             TLS could not be set up (wrong port or security)
    unreachable     name not found, connection refused, no route
    timeout         no answer within ``timeout``
    connection      the connection broke during the session
    folder_missing  a configured folder does not exist
    oauth, oauth_expired   the token endpoint refused (gateway.oauth)
    imap            the server answered NO/BAD to something else
"""

from __future__ import annotations

import contextlib
import errno
import imaplib
import logging
import socket
import ssl
from collections.abc import Callable, Iterator
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import CapabilityError, LoginError

from gateway.config import MailboxConfig
from gateway.errors import GatewayError, MailboxError

log = logging.getLogger(__name__)

AUTH_HINTS = {
    "gmail": "Gmail needs an app password when 2-step verification is on (Google account > Security > "
             "App passwords), or OAuth2 (oauth2: with `invoice-gateway oauth NAME`); IMAP must be on in Gmail's settings",
    "icloud": "iCloud Mail needs an app-specific password (account.apple.com > Sign-In and Security > "
              "App-Specific Passwords, with two-factor authentication on); the user name is the full address",
    "yahoo": "Yahoo Mail needs an app password (Account security > Generate app password) with 2-step verification on",
    "aol": "AOL Mail needs an app password (Account security > Generate app password) with 2-step verification on",
    "outlook": "Microsoft 365 and Outlook.com refuse passwords over IMAP: configure oauth2 (client_id of an app "
               "registration with IMAP.AccessAsUser.All) and run `invoice-gateway oauth NAME`",
    "gmx": "turn on 'POP3/IMAP access' in the GMX settings, then use the account password",
    "webde": "turn on 'POP3/IMAP access' in the WEB.DE settings, then use the account password",
    "fastmail": "Fastmail needs an app password (Settings > Privacy & Security > App passwords)",
    "zoho": "Zoho needs IMAP access on (Settings > Mail accounts) and an app password when 2FA is on",
}
DEFAULT_AUTH_HINT = ("check username (often the full address) and password; a password_file must hold only the "
                     "password. Many providers want an app password when 2-step verification is on")
OAUTH_AUTH_HINT = ("the server refused the OAuth2 access token: check that username is the account that "
                   "authorized, and the scope (Gmail: https://mail.google.com/, Microsoft: "
                   "IMAP.AccessAsUser.All); authorize again with `invoice-gateway oauth NAME`")
CERT_HINT = ("if the server uses a self-signed or private-CA certificate, set tls.ca_file to that certificate "
             "(PEM); tls.verify: false turns the check off (only on a network you trust)")


def ssl_context(mb: MailboxConfig) -> ssl.SSLContext:
    """The TLS context: verification on (system CAs, or only ``tls.ca_file``) unless ``tls.verify`` is false."""
    if not mb.tls.verify:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    try:
        return ssl.create_default_context(cafile=str(mb.tls.ca_file) if mb.tls.ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise MailboxError(f"mailbox {mb.name!r}: cannot read tls.ca_file {mb.tls.ca_file}: {exc}",
                           kind="certificate", hint="tls.ca_file must be a PEM certificate file") from exc


def _where(mb: MailboxConfig) -> str:
    return f"{mb.host}:{mb.port}"


def translate(exc: BaseException, mb: MailboxConfig, doing: str) -> MailboxError:
    """A foreign exception as a MailboxError a person can act on."""
    if isinstance(exc, MailboxError):
        return exc
    where = _where(mb)
    timeout = float(mb.timeout)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return MailboxError(f"the certificate of {where} is not trusted ({exc.verify_message or exc.reason})",
                            kind="certificate", hint=CERT_HINT)
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return MailboxError(f"{where} did not answer within {timeout:.0f} s while {doing}", kind="timeout",
                            hint="the server is slow or a firewall drops the packets; check host, port and "
                                 "security (ssl for port 993, starttls for 143), or raise timeout")
    if isinstance(exc, ssl.SSLError):
        return MailboxError(f"TLS with {where} failed while {doing}: {exc.reason or exc}", kind="tls",
                            hint="check security: ssl goes with port 993, starttls with port 143")
    if isinstance(exc, socket.gaierror):
        return MailboxError(f"cannot find the IMAP server {mb.host!r}: {exc.strerror}", kind="unreachable",
                            hint="check host (or provider) and the DNS of this machine")
    if isinstance(exc, ConnectionRefusedError):
        return MailboxError(f"{where} refused the connection", kind="unreachable",
                            hint="check host and port (993 for ssl, 143 for starttls) and that the server runs")
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError, imaplib.IMAP4.abort, EOFError)):
        return MailboxError(f"the connection to {where} broke while {doing}: {exc}", kind="connection",
                            hint="the server closed the connection or restarted; the next poll resumes where "
                                 "this one stopped")
    if isinstance(exc, OSError):
        if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL):
            return MailboxError(f"{where} is unreachable: {exc.strerror}", kind="unreachable",
                                hint="check the network of this machine and host")
        return MailboxError(f"{where}: {exc.strerror or exc} while {doing}", kind="connection",
                            hint="check the network; the next poll tries again")
    if isinstance(exc, imaplib.IMAP4.error):
        text = str(exc)
        return MailboxError(f"{where} refused {doing}: {text}", kind="imap",
                            hint="the server said no; see its message")
    if isinstance(exc, GatewayError):
        return MailboxError(f"{doing}: {exc}", kind="store", hint="a problem of this machine (disk, database)")
    return MailboxError(f"{doing} failed: {type(exc).__name__}: {exc}", kind="error", hint=None)


@contextlib.contextmanager
def translated(mb: MailboxConfig, doing: str) -> Iterator[None]:
    """Turn foreign exceptions inside the block into MailboxError (``raise ... from``)."""
    try:
        yield
    except (MailboxError, LoginError, CapabilityError):
        raise  # the caller knows better what these mean
    except (OSError, EOFError, imaplib.IMAP4.error, ssl.SSLError, GatewayError) as exc:
        raise translate(exc, mb, doing) from exc


def auth_error(mb: MailboxConfig, server_text: str) -> MailboxError:
    """The error for a refused login, with the provider's hint."""
    detail = server_text.strip()
    for prefix in ("b'", 'b"'):
        if detail.startswith(prefix) and detail.endswith(detail[1]):
            detail = detail[2:-1]
    hint = OAUTH_AUTH_HINT if mb.oauth2 is not None else AUTH_HINTS.get(mb.provider or "", DEFAULT_AUTH_HINT)
    return MailboxError(f"login to {mb.host} as {mb.username} failed: authentication failed"
                        + (f" ({detail})" if detail else ""), kind="auth", hint=hint.replace("NAME", mb.name))


def connect(mb: MailboxConfig, *, token: Callable[[], str] | None = None,
            invalidate: Callable[[], None] | None = None) -> IMAPClient:
    """A logged-in IMAPClient (TLS as configured), or a MailboxError."""
    assert mb.host is not None and mb.port is not None
    timeout = float(mb.timeout)
    ctx = ssl_context(mb) if mb.security in ("ssl", "starttls") else None
    with translated(mb, "connecting"):
        client = IMAPClient(mb.host, port=mb.port, ssl=mb.security == "ssl", ssl_context=ctx, timeout=timeout)
    try:
        if mb.security == "starttls":
            try:
                with translated(mb, "starting TLS"):
                    client.starttls(ctx)
            except CapabilityError as exc:
                raise MailboxError(f"{_where(mb)} does not offer STARTTLS", kind="tls",
                                   hint="use security: ssl (port 993); security: none only on a network you "
                                        "trust") from exc
        _login(client, mb, token, invalidate)
    except BaseException:
        with contextlib.suppress(Exception):
            client.shutdown()
        raise
    return client


def _login(client: IMAPClient, mb: MailboxConfig, token: Callable[[], str] | None,
           invalidate: Callable[[], None] | None) -> None:
    if mb.oauth2 is not None and token is not None:
        for attempt in (1, 2):
            access = token()
            try:
                with translated(mb, "logging in"):
                    client.oauth2_login(mb.username, access)
                return
            except LoginError as exc:
                # a cached token the server no longer takes: fetch a fresh one once
                if attempt == 1 and invalidate is not None:
                    invalidate()
                    continue
                raise auth_error(mb, str(exc)) from exc
        return
    try:
        with translated(mb, "logging in"):
            client.login(mb.username, mb.password or "")
    except LoginError as exc:
        raise auth_error(mb, str(exc)) from exc


def close(client: Any) -> None:
    """Log out politely (waiting at most 5 s for the answer); drop the socket if that fails."""
    try:
        with contextlib.suppress(Exception):
            client.socket().settimeout(min(5.0, client.socket().gettimeout() or 5.0))
        client.logout()
    except Exception:
        with contextlib.suppress(Exception):
            client.shutdown()
