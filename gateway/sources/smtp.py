"""The SMTP source: aiosmtpd in its own thread, feeding only the spool.

RCPT is accepted only for the configured import addresses (never a relay);
DATA is answered ``250`` only after the spool made the bytes durable and
recorded them, ``451`` on anything unexpected. No parsing happens here, and
no sender authentication either (the pipeline does that, off this path).
This module holds the only asyncio in the program.

Hardening (docs/security.md):

- STARTTLS with ``smtp.tls``; ``tls.required`` refuses MAIL before it. An
  optional second listener speaks TLS from the first byte
  (``tls.implicit_listen``).
- AUTH PLAIN and LOGIN, offered only over TLS (``smtp.auth``);
  ``auth.required`` refuses MAIL from clients that did not log in. Failed
  AUTH slows down and then locks out the one client address
  (gateway.sources.smtp_auth).
- Per-client limits (``smtp.limits``): concurrent connections (``421`` at
  connect) and transactions per minute (``450`` at MAIL).
- DATA is read in bulk (gateway/sources/smtpdata.py), not line by line:
  only ``<CRLF>.<CRLF>`` ends it, so a bare ``<LF>.<LF>`` is message content
  and SMTP smuggling cannot start a second message. Bare LF line endings are
  otherwise accepted as real clients send them: a line is what ends in LF,
  for the length limit and for undoing the dot-stuffing that such clients
  (Python's smtplib among them) apply. A mail over ``SPILL_AT`` is written to
  the spool's tmp folder as it arrives, so memory stays bounded; one over
  ``max_message_size`` is dropped as it arrives and answered ``552``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fnmatch
import ipaddress
import logging
import ssl
import threading
import weakref
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope as SMTPEnvelope, Session

from gateway.config import AddressConfig, SMTPConfig, SMTPLimits
from gateway.models import Envelope
from gateway.sources.smtp_auth import AuthThrottle, authenticator, peer_ip
from gateway.sources.smtpdata import READ_LIMIT, DataState, MessageSink, SpilledMessage, line_run, read_data
from gateway.spool import Spool
from gateway.store import utcnow

log = logging.getLogger(__name__)


class _QuietLoginData(logging.Filter):
    """aiosmtpd 1.4 logs a deprecation warning of its own on every successful AUTH; drop it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "login_data is deprecated" not in record.getMessage()


logging.getLogger("mail.log").addFilter(_QuietLoginData())

# The longest line a message may have, in bytes, a line being what ends in LF
# (so a client that ends lines with bare LF does not send one giant line).
# RFC 5322 allows 998, but real senders exceed it and refusing loses invoices.
# Measured on ../shared/corpus/emails (299 real messages): 5 have lines over
# 998 bytes, 2 over 8 KiB, the longest is 24,340 bytes (an inline image in
# base64 without line breaks, php-mime-mail-parser issue115; next is 11,677
# bytes of raw binary in an Outlook mail). Unwrapped base64 grows with the
# file it carries, so such a mailer sending a 750 KB invoice PDF writes a 1 MB
# line. The limit is no memory bound (aiosmtpd holds the whole message, and
# smtp.max_message_size bounds that); it refuses what is not mail at all.
LINE_LENGTH_LIMIT = 1024 * 1024
# Command lines (and AUTH continuation lines) keep aiosmtpd's RFC 5321 limit.
COMMAND_LINE_LIMIT = 1001

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


def longest_line_exceeds(data: bytes, limit: int) -> bool:
    """Whether a line of ``data`` (ending in LF) has more than ``limit`` bytes before its LF."""
    return line_run(data, 0, limit) is None


class ClientGate:
    """Per-IP connection counts and transaction rates, shared by every listener (thread-safe)."""

    def __init__(self, limits: SMTPLimits, clock: Any = time.monotonic) -> None:
        self.limits = limits
        self.clock = clock
        self.exempt = [ipaddress.ip_network(n, strict=False) for n in limits.exempt]
        self.connections: collections.Counter[str] = collections.Counter()
        self.starts: dict[str, collections.deque[float]] = {}
        self.lock = threading.Lock()

    def _exempt(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in self.exempt)

    def connect(self, ip: str) -> str | None:
        """Count a new connection; a ``421`` reply when the client has too many open."""
        limit = self.limits.connections_per_ip
        with self.lock:
            if limit and self.connections[ip] >= limit and not self._exempt(ip):
                return f"421 4.7.0 Too many connections from {ip}; try again later"
            self.connections[ip] += 1
        return None

    def disconnect(self, ip: str) -> None:
        """A connection counted by ``connect`` ended."""
        with self.lock:
            self.connections[ip] -= 1
            if self.connections[ip] <= 0:
                del self.connections[ip]

    def transaction(self, ip: str) -> str | None:
        """Count a MAIL command; a ``450`` reply when the client sent too many this minute."""
        limit = self.limits.messages_per_minute_per_ip
        if not limit or self._exempt(ip):
            return None
        now = self.clock()
        with self.lock:
            starts = self.starts.setdefault(ip, collections.deque())
            while starts and starts[0] <= now - 60:
                starts.popleft()
            if len(starts) >= limit:
                return f"450 4.7.1 Too many messages from {ip} (limit {limit} a minute); try again later"
            starts.append(now)
            if len(self.starts) > 10000:  # forget idle clients so the table stays small
                for key in [k for k, v in self.starts.items() if not v or v[-1] <= now - 60]:
                    del self.starts[key]
        return None


class IntakeHandler:
    """aiosmtpd handler: limits at MAIL, RCPT against the address book, DATA into the spool."""

    def __init__(self, config: SMTPConfig, spool: Spool, stats: dict[str, int] | None = None) -> None:
        self.config = config
        self.book = AddressBook(config.addresses)
        self.spool = spool
        self.gate = ClientGate(config.limits)
        # not "auth_...": aiosmtpd offers every handler attribute so named as an AUTH mechanism
        self.login_throttle = AuthThrottle(config.limits)
        self.executor = ThreadPoolExecutor(max_workers=16, thread_name_prefix="smtp-intake")
        self.stats = stats if stats is not None else {}
        self._matches: dict[int, list[AddressMatch]] = {}

    def _count(self, key: str) -> None:
        self.stats[key] = self.stats.get(key, 0) + 1

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: SMTPEnvelope, address: str,
                          mail_options: list[str]) -> str:
        refusal = self.gate.transaction(peer_ip(session.peer))
        if refusal is not None:
            self._count("rate_limited")
            log.warning("refused MAIL from %s: %s", session.peer, refusal)
            return refusal
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: SMTPEnvelope, address: str,
                          rcpt_options: list[str]) -> str:
        match = self.book.match(address)
        if match is None:
            self._count("refused_rcpt")
            log.info("refused RCPT %r from %s: not an import address", address, session.peer,
                     extra={"event": "refused"})
            return f"550 5.1.1 <{address}>: not an import address of this gateway (relaying denied)"
        if len(envelope.rcpt_tos) >= self.config.max_recipients:
            return "452 4.5.3 Too many recipients"
        envelope.rcpt_tos.append(address)
        self._matches.setdefault(id(envelope), []).append(match)
        return "250 2.1.5 OK"

    async def handle_RSET(self, server: SMTP, session: Session, envelope: SMTPEnvelope) -> str:
        self._matches.pop(id(envelope), None)
        return "250 OK"

    async def _spool(self, message: bytes | SpilledMessage, env: Envelope) -> int:
        """Hand the message to the spool's batch writer; its id once durable and recorded."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int] = loop.create_future()

        def settle(mid: int | None, exc: BaseException | None) -> None:
            if fut.done():  # the session went away while the writer worked
                return
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(int(mid or 0))

        def done(mid: int | None, exc: BaseException | None) -> None:  # in the writer thread
            with contextlib.suppress(RuntimeError):  # the loop closed: the session is gone
                loop.call_soon_threadsafe(settle, mid, exc)

        if isinstance(message, SpilledMessage):
            self.spool.submit_file(message.path, message.size, message.sha256, env, done)
        else:
            self.spool.submit(message, env, done)
        return await fut

    async def handle_DATA(self, server: SMTP, session: Session, envelope: SMTPEnvelope) -> str:
        """The message, already read, checked and un-dot-stuffed by ``_GatewaySMTP.smtp_DATA``, into the spool."""
        matches = self._matches.pop(id(envelope), [])
        try:
            message: bytes | SpilledMessage
            spilled = envelope.spilled if isinstance(envelope, GatewayEnvelope) else None
            if spilled is not None:
                message = spilled
            else:
                raw = envelope.original_content
                message = raw if raw is not None else envelope.content if isinstance(envelope.content, bytes) else b""
            if not matches:  # cannot happen after a 250 RCPT, but never guess
                return "554 5.5.1 No valid recipients"
            env = Envelope(
                source="smtp",
                mail_from=envelope.mail_from or "",
                rcpt_tos=tuple(envelope.rcpt_tos),
                received=utcnow(),
                peer=peer_ip(session.peer),
                import_address=matches[0].address,
                tag=next((m.tag for m in matches if m.tag), None),
                assign=merge_assign(matches),
            )
            message_id = await self._spool(message, env)
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


# MAIL/RCPT arguments already parsed, per local_part_limit (see _GatewaySMTP._getaddr);
# shared by the listeners' event loops (a dict operation is atomic; a lost entry costs one
# parse), cleared when full so it stays small.
_ADDRESS_CACHE: dict[int, dict[str, tuple[str | None, str | None]]] = {}
_ADDRESS_CACHE_SIZE = 1024


class GatewayEnvelope(SMTPEnvelope):
    """aiosmtpd's envelope, plus the spool tmp file of a message too large to keep in memory."""

    def __init__(self) -> None:
        super().__init__()
        self.spilled: SpilledMessage | None = None


class _GatewaySMTP(SMTP):
    """aiosmtpd's SMTP with the per-IP gate, LF-based line limits and implicit TLS."""

    line_length_limit = COMMAND_LINE_LIMIT

    def __init__(self, handler: IntakeHandler, *, implicit_tls: bool = False, counted: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.gate = handler.gate
        self.counted = counted
        if implicit_tls:
            # The transport is TLS from the first byte; aiosmtpd only knows of STARTTLS.
            self._auth_require_tls = False

    async def _handle_client(self) -> None:
        assert self.session is not None
        if self.counted:
            self.event_handler._count("sessions")
        ip = peer_ip(self.session.peer)
        refusal = self.gate.connect(ip)
        if refusal is not None:
            log.warning("refused a connection from %s: %s", ip, refusal)
            await self.push(refusal)
            assert self.transport is not None
            self.transport.close()
            return
        try:
            await super()._handle_client()
        finally:
            self.gate.disconnect(ip)

    async def smtp_AUTH(self, arg: str) -> None:
        # A client with recent failures waits before its attempt is read (in this session or
        # another); the sleep holds up no other client, as a wait in the authenticator would.
        assert self.session is not None
        wait = self.event_handler.login_throttle.wait(peer_ip(self.session.peer)) if arg else 0.0
        if wait:
            await asyncio.sleep(wait)
        await super().smtp_AUTH(arg)

    def _create_envelope(self) -> GatewayEnvelope:
        return GatewayEnvelope()

    # aiosmtpd parses the address of every MAIL and RCPT with the email package's
    # header parser and defines a class on each call: a fifth of serve's Python
    # time per 2 KB mail. The result depends only on the argument (and the
    # server's local_part_limit), and senders repeat themselves: keep recent ones.
    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        cache = _ADDRESS_CACHE.setdefault(self.local_part_limit, {})
        hit = cache.get(arg)
        if hit is None:
            hit = super()._getaddr(arg)
            if len(cache) >= _ADDRESS_CACHE_SIZE:
                cache.clear()
            cache[arg] = hit
        return hit

    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd's DATA with the bulk reader of smtpdata.py; the same replies and handler contract."""
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        envelope = self.envelope
        assert isinstance(envelope, GatewayEnvelope)
        if not envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        handler: IntakeHandler = self.event_handler
        sink = MessageSink(handler.spool.new_tmp, handler.executor)
        reader = self._reader
        # StreamReader pauses the connection at twice its limit; the command
        # limit (1001 bytes) would pause and resume it for every packet of DATA.
        saved = reader._limit  # type: ignore[attr-defined]
        reader._limit = READ_LIMIT  # type: ignore[attr-defined]
        try:
            state = await read_data(reader, sink, size_limit=self.data_size_limit, line_limit=LINE_LENGTH_LIMIT)
        except asyncio.CancelledError:
            sink.discard()
            log.info("%r connection lost during DATA", self.session and self.session.peer)
            self._writer.close()
            raise
        except BaseException:
            sink.discard()
            raise
        finally:
            reader._limit = saved  # type: ignore[attr-defined]
        if state is not DataState.OK:
            self.envelope = self._create_envelope()  # aiosmtpd's _set_post_data_state (untyped)
            if state is DataState.TOO_BIG:
                handler._count("too_big")
                await self.push(f"552 5.3.4 Message too big: this gateway takes at most {self.data_size_limit} bytes")
            elif state is DataState.LINE_TOO_LONG:
                handler._count("line_too_long")
                await self.push(f"552 5.3.4 Message refused: a line is longer than {LINE_LENGTH_LIMIT} bytes")
            else:
                handler._count("errors")
                log.error("could not write a message from %s to the spool: %s; answered 451",
                          self.session and self.session.peer, sink.failure)
                await self.push("451 4.3.0 Temporary failure storing the message; please try again later")
            return
        message = sink.done()
        if isinstance(message, SpilledMessage):
            envelope.spilled = message
        else:
            envelope.content = envelope.original_content = message
        try:
            status = await self._call_handler_hook("DATA")
        finally:
            if isinstance(message, SpilledMessage):  # still there unless the spool took it over
                with contextlib.suppress(FileNotFoundError):
                    message.path.unlink()
        self.envelope = self._create_envelope()  # aiosmtpd's _set_post_data_state (untyped)
        await self.push(status)


class _GatewayController(Controller):
    def __init__(self, handler: IntakeHandler, *, implicit_tls: bool = False, **kwargs: Any) -> None:
        self.implicit_tls = implicit_tls
        self.sessions: weakref.WeakSet[SMTP] = weakref.WeakSet()
        # start() connects once to see that the server answers (aiosmtpd's _trigger_server)
        # and waits for that connection: it is no session of a client
        self._self_check = True
        super().__init__(handler, **kwargs)

    def factory(self) -> SMTP:
        smtp = _GatewaySMTP(self.handler, implicit_tls=self.implicit_tls, counted=not self._self_check,
                            **self.SMTP_kwargs)
        self._self_check = False
        self.sessions.add(smtp)
        return smtp

    def cancel_tasks(self, stop_loop: bool = True) -> None:
        """aiosmtpd's ``stop()`` calls this in the loop; the shutdown runs as a task there."""
        self.loop.create_task(self._shut_down(stop_loop))

    async def _shut_down(self, stop_loop: bool) -> None:
        # 1. Stop accepting, then let the connections accepted meanwhile become
        #    sessions: cancelled before that, or with the server closed under
        #    them (Server._attach asserts), asyncio drops their sockets unclosed.
        #    All of this runs in the loop, however busy it is: no timeout to lose.
        server = self.server
        for sock in getattr(server, "sockets", None) or ():
            self.loop.remove_reader(sock.fileno())
        await asyncio.sleep(0.05)
        # 2. Close every session (abort, not close: a half-closed client never
        #    takes the rest of a reply) and cancel what is left.
        for smtp in list(self.sessions):
            transport = smtp.transport
            if isinstance(transport, asyncio.Transport):
                transport.abort()
        me = asyncio.current_task()
        for task in asyncio.all_tasks(self.loop):
            if task is not me:
                task.cancel()
        # 3. Give the loop a moment to run what that schedules (closing the
        #    sockets) before it stops; aiosmtpd then closes the server.
        if stop_loop:
            self.loop.call_later(0.1, self.loop.stop)


def _tls_context(config: SMTPConfig) -> ssl.SSLContext | None:
    if config.tls is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(config.tls.cert), str(config.tls.key))
    return ctx


class SMTPSource:
    """Starts and stops the SMTP server threads (the main listener and, optionally, implicit TLS)."""

    def __init__(self, config: SMTPConfig, spool: Spool) -> None:
        self.config = config
        self.stats: dict[str, int] = {}
        self.handler = IntakeHandler(config, spool, self.stats)
        host, port = config.host_port
        common: dict[str, Any] = dict(
            server_hostname=config.hostname,
            data_size_limit=config.max_message_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            timeout=config.timeout,
            command_call_limit=config.max_commands,
            ident="invoice-gateway ESMTP",
        )
        if config.auth is not None and config.auth.users:
            common.update(authenticator=authenticator(config.auth.users, self.handler.login_throttle),
                          auth_required=config.auth.required,
                          auth_require_tls=True)
        elif config.auth is not None and config.auth.required:
            common.update(auth_required=True, auth_require_tls=True)
        tls = _tls_context(config)
        main = dict(common)
        if tls is not None:
            main.update(tls_context=tls, require_starttls=bool(config.tls and config.tls.required))
        self.controller = _GatewayController(self.handler, hostname=host, port=port, **main)
        self.implicit: _GatewayController | None = None
        implicit = config.tls.implicit_host_port if config.tls is not None else None
        if implicit is not None and tls is not None:
            self.implicit = _GatewayController(self.handler, implicit_tls=True, hostname=implicit[0],
                                               port=implicit[1], ssl_context=tls, **common)
        self.running = False

    @staticmethod
    def _bound(controller: Controller) -> int:
        sockets = getattr(controller.server, "sockets", None)  # an asyncio.Server once bound
        if sockets:
            return int(sockets[0].getsockname()[1])
        return int(controller.port)

    @property
    def port(self) -> int:
        """The bound port (useful when the config said port 0)."""
        return self._bound(self.controller)

    @property
    def implicit_port(self) -> int | None:
        """The implicit-TLS listener's bound port, or None without one."""
        return self._bound(self.implicit) if self.implicit is not None else None

    def start(self) -> None:
        """Bind and serve in threads."""
        self.controller.start()
        if self.implicit is not None:
            try:
                self.implicit.start()
            except BaseException:
                self.controller.stop()
                raise
        self.running = True
        log.info("SMTP listening on %s:%d%s%s for %s", self.controller.hostname, self.port,
                 " (STARTTLS)" if self.config.tls else "",
                 f", implicit TLS on {self.implicit.hostname}:{self.implicit_port}" if self.implicit else "",
                 ", ".join(a.address for a in self.config.addresses))

    def stop(self) -> None:
        """Stop accepting; sessions in progress are closed."""
        if self.running:
            self.controller.stop()
            if self.implicit is not None:
                self.implicit.stop()
            self.running = False
            self.handler.executor.shutdown(wait=True)
