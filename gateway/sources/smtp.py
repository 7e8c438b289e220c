"""The SMTP source: aiosmtpd in its own thread, feeding only the spool.

RCPT is accepted only for the configured import addresses (never a relay);
DATA is answered ``250`` only after the spool made the bytes durable and
recorded them, ``451`` on anything unexpected. No parsing happens here.
This module holds the only asyncio in the program.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import ssl
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope as SMTPEnvelope, LoginPassword, Session

from gateway.config import AddressConfig, SMTPConfig
from gateway.models import Envelope
from gateway.spool import Spool
from gateway.store import utcnow

log = logging.getLogger(__name__)

# RFC 5321 allows 998 octets per line, but real senders exceed it (some of
# ../shared/corpus has lines of several thousand); refusing them loses invoices.
LINE_LENGTH_LIMIT = 64 * 1024


@dataclass(frozen=True)
class AddressMatch:
    """Which import address a recipient matched.

    Attributes:
        address: the configured address (``invoices+*@home.example``).
        tag: the plus tag (``acme``) or None.
        assign: what the address assigns to its messages.
    """

    address: str
    tag: str | None
    assign: Mapping[str, Any]


class AddressBook:
    """The import addresses, matched case-insensitively."""

    def __init__(self, addresses: tuple[AddressConfig, ...]) -> None:
        self.exact: dict[str, AddressConfig] = {}
        self.plus: list[tuple[str, str, AddressConfig]] = []
        self.globs: list[AddressConfig] = []
        for a in addresses:
            local, _, domain = a.address.rpartition("@")
            if local.endswith("+*") and "*" not in local[:-2] and "*" not in domain:
                self.plus.append((local[:-2], domain, a))
            elif "*" in a.address or "?" in a.address:
                self.globs.append(a)
            else:
                self.exact[a.address] = a

    def match(self, address: str) -> AddressMatch | None:
        """The import address ``address`` is for, or None (refuse it)."""
        addr = address.strip().strip("<>").lower()
        if addr.count("@") != 1:
            return None
        if addr in self.exact:
            return AddressMatch(addr, None, self.exact[addr].assign)
        local, _, domain = addr.rpartition("@")
        base, plus, tag = local.partition("+")
        if plus and tag:
            for p_local, p_domain, cfg in self.plus:
                if base == p_local and domain == p_domain:
                    return AddressMatch(cfg.address, tag, cfg.assign)
        for cfg in self.globs:
            if fnmatch.fnmatchcase(addr, cfg.address):
                return AddressMatch(cfg.address, tag or None, cfg.assign)
        return None


def merge_assign(matches: list[AddressMatch]) -> dict[str, Any]:
    """The assignments of every matched address; tags are combined."""
    out: dict[str, Any] = {}
    tags: list[str] = []
    for m in matches:
        for k, v in m.assign.items():
            if k == "tags":
                tags += [t for t in (v if isinstance(v, list) else [v]) if t not in tags]
            else:
                out.setdefault(k, v)
    if tags:
        out["tags"] = tags
    return out


class IntakeHandler:
    """aiosmtpd handler: RCPT against the address book, DATA into the spool."""

    def __init__(self, config: SMTPConfig, spool: Spool, stats: dict[str, int] | None = None) -> None:
        self.config = config
        self.book = AddressBook(config.addresses)
        self.spool = spool
        self.executor = ThreadPoolExecutor(max_workers=16, thread_name_prefix="smtp-intake")
        self.stats = stats if stats is not None else {}
        self._matches: dict[int, list[AddressMatch]] = {}

    def _count(self, key: str) -> None:
        self.stats[key] = self.stats.get(key, 0) + 1

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: SMTPEnvelope, address: str,
                          rcpt_options: list[str]) -> str:
        match = self.book.match(address)
        if match is None:
            self._count("refused_rcpt")
            log.info("refused RCPT %r from %s: not an import address", address, session.peer)
            return f"550 5.1.1 <{address}>: not an import address of this gateway (relaying denied)"
        if len(envelope.rcpt_tos) >= self.config.max_recipients:
            return "452 4.5.3 Too many recipients"
        envelope.rcpt_tos.append(address)
        self._matches.setdefault(id(envelope), []).append(match)
        return "250 2.1.5 OK"

    async def handle_RSET(self, server: SMTP, session: Session, envelope: SMTPEnvelope) -> str:
        self._matches.pop(id(envelope), None)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: SMTPEnvelope) -> str:
        matches = self._matches.pop(id(envelope), [])
        try:
            raw = envelope.original_content
            if raw is None:
                raw = envelope.content if isinstance(envelope.content, bytes) else b""
            if not matches:  # cannot happen after a 250 RCPT, but never guess
                return "554 5.5.1 No valid recipients"
            peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
            env = Envelope(
                source="smtp",
                mail_from=envelope.mail_from or "",
                rcpt_tos=tuple(envelope.rcpt_tos),
                received=utcnow(),
                peer=peer,
                import_address=matches[0].address,
                tag=next((m.tag for m in matches if m.tag), None),
                assign=merge_assign(matches),
            )
            loop = asyncio.get_running_loop()
            message_id = await loop.run_in_executor(self.executor, self.spool.accept_batched, raw, env)
        except Exception:
            self._count("errors")
            log.exception("could not spool a message from %s; answered 451", session.peer)
            return "451 4.3.0 Temporary failure storing the message; please try again later"
        self._count("accepted")
        return f"250 2.0.0 OK: queued as {message_id}"

    async def handle_exception(self, error: Exception) -> str:
        self._count("errors")
        log.error("SMTP session error: %s: %s", type(error).__name__, error)
        return "451 4.3.0 Temporary server error"


class _GatewaySMTP(SMTP):
    line_length_limit = LINE_LENGTH_LIMIT


class _GatewayController(Controller):
    def factory(self) -> SMTP:
        return _GatewaySMTP(self.handler, **self.SMTP_kwargs)


def _tls_context(config: SMTPConfig) -> ssl.SSLContext | None:
    if config.tls is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(config.tls.cert), str(config.tls.key))
    return ctx


class SMTPSource:
    """Starts and stops the SMTP server thread."""

    def __init__(self, config: SMTPConfig, spool: Spool) -> None:
        self.config = config
        self.stats: dict[str, int] = {}
        self.handler = IntakeHandler(config, spool, self.stats)
        host, port = config.host_port
        kwargs: dict[str, Any] = dict(
            hostname=host,
            port=port,
            server_hostname=config.hostname,
            data_size_limit=config.max_message_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            timeout=config.timeout,
            command_call_limit=config.max_commands,
            ident="invoice-gateway ESMTP",
        )
        tls = _tls_context(config)
        if tls is not None:
            kwargs.update(tls_context=tls, require_starttls=bool(config.tls and config.tls.required))
        if config.auth is not None and config.auth.users:
            users = dict(config.auth.users)

            def authenticator(server: SMTP, session: Session, envelope: SMTPEnvelope, mechanism: str,
                              auth_data: Any) -> AuthResult:
                if isinstance(auth_data, LoginPassword):
                    user = auth_data.login.decode("utf-8", "replace")
                    ok = users.get(user) == auth_data.password.decode("utf-8", "replace")
                    return AuthResult(success=ok, handled=False, auth_data=user if ok else None)
                return AuthResult(success=False, handled=False)

            kwargs.update(authenticator=authenticator, auth_required=config.auth.required, auth_require_tls=True)
        self.controller = _GatewayController(self.handler, **kwargs)
        self._lock = threading.Lock()
        self.running = False

    @property
    def port(self) -> int:
        """The bound port (useful when the config said port 0)."""
        server = self.controller.server
        if server is not None and server.sockets:
            return int(server.sockets[0].getsockname()[1])
        return int(self.controller.port)

    def start(self) -> None:
        """Bind and serve in a thread."""
        self.controller.start()
        self.running = True
        log.info("SMTP listening on %s:%d for %s", self.controller.hostname, self.port,
                 ", ".join(a.address for a in self.config.addresses))

    def stop(self) -> None:
        """Stop accepting; sessions in progress are closed."""
        if self.running:
            self.controller.stop()
            self.running = False
            self.handler.executor.shutdown(wait=True)
