"""gateway.yaml and the environment -> frozen, validated settings.

Loaded once at start. ``${NAME}`` reads the environment; every ``password``
may instead be ``password_file``. Every error names the key path and what is
allowed (``exports[1].url: must start with http:// or https://``).
"""

from __future__ import annotations

import datetime as dt
import difflib
import ipaddress
import os
import re
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from gateway.errors import ConfigError

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]?i?b?)?\s*$", re.I)
_DURATION_RE = re.compile(r"^\s*(\d+)\s*(s|m|h|d)\s*$", re.I)
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def parse_size(value: Any) -> int:
    """``50MB`` / ``512k`` / 1024 -> bytes."""
    if isinstance(value, int):
        return value
    m = _SIZE_RE.match(str(value))
    if not m:
        raise ValueError(f"not a size: {value!r} (use e.g. 50MB, 512KB, 1048576)")
    unit = (m.group(2) or "").lower().rstrip("b").rstrip("i")
    factor = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit]
    return int(float(m.group(1)) * factor)


def parse_duration(value: Any) -> int:
    """``15m`` / ``1h`` / ``30s`` / 60 -> seconds."""
    if isinstance(value, int):
        return value
    m = _DURATION_RE.match(str(value))
    if not m:
        raise ValueError(f"not a duration: {value!r} (use e.g. 30s, 15m, 1h, 1d)")
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2).lower()]


def parse_seconds(value: Any) -> float:
    """``1.5`` / ``2s`` / ``1m`` -> seconds (fractions allowed, unlike a Duration)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    try:
        return float(str(value))
    except ValueError:
        return float(parse_duration(value))


Size = Annotated[int, BeforeValidator(parse_size)]
Duration = Annotated[int, BeforeValidator(parse_duration)]
Seconds = Annotated[float, BeforeValidator(parse_seconds)]


_HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$", re.I)


def _split_listen(value: str, default_port: int) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``, a bare host or IPv6 address, ``:port`` for every address) -> (host, port).

    Raises ValueError naming what is wrong: asyncio and waitress take a port
    over 65535 modulo 65536 or as "any free port", so it must never get that far.
    """
    text = value.strip()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"{value!r} is not an address; write an IPv6 address as [::1]:{default_port}")
        port_text: str | None = rest[1:] if rest else None
    elif text.count(":") > 1:  # a bare IPv6 address: no port can be told apart from it
        host, port_text = text, None
    else:
        host, colon, port_text = text.rpartition(":")
        if not colon:
            host, port_text = text, None
    host = host or "0.0.0.0"
    _check_host(host, value)
    if port_text is None:
        return host, default_port
    if not port_text.isdigit():
        raise ValueError(f"port {port_text!r} in {value!r} is not a number; a port is 1-65535 (e.g. 0.0.0.0:{default_port})")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} in {value!r} is out of range; a port is 1-65535 (e.g. 0.0.0.0:{default_port})")
    return host, port


def _check_host(host: str, value: str) -> None:
    """An IP address or a host name (``localhost``), else ValueError."""
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    if ":" in host or not _HOSTNAME_RE.match(host):
        raise ValueError(f"{host!r} in {value!r} is neither an IP address nor a host name "
                         "(e.g. 0.0.0.0 for every address, 127.0.0.1 for this machine only)")


def _listen_address(default_port: int) -> Any:
    """A field validator that checks a listen address (``host:port``)."""

    def check(v: Any) -> Any:
        if isinstance(v, int) or (isinstance(v, str) and v.strip().isdigit()):
            raise ValueError(f"{v!r} is a port alone; write host:port, e.g. 0.0.0.0:{v} (every address) "
                             f"or 127.0.0.1:{v} (this machine only)")
        if isinstance(v, str):
            _split_listen(v, default_port)
        return v

    return check


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _WithPassword(_Model):
    """A model whose ``password`` may be given as ``password_file``."""

    @model_validator(mode="before")
    @classmethod
    def _read_password_file(cls, data: Any) -> Any:
        return _resolve_password(data)


def _resolve_password(data: Any) -> Any:
    """Turn ``password_file`` into ``password`` (reads the file)."""
    if isinstance(data, dict) and data.get("password_file") is not None:
        path = Path(str(data["password_file"]))
        try:
            secret = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"password_file: cannot read {path}: {exc.strerror}") from exc
        data = dict(data)
        data["password"] = secret
    return data


class Schedule(_Model):
    """When a job may run: every N, on some days, between some hours."""

    every: Duration | None = None
    days: tuple[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"], ...] = DAYS  # type: ignore[assignment]
    between: str | None = None

    @field_validator("between")
    @classmethod
    def _check_between(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"\d{1,2}:\d{2}-\d{1,2}:\d{2}", v.strip()):
            raise ValueError('must look like "08:00-18:00"')
        return v

    def window(self) -> tuple[dt.time, dt.time] | None:
        """The allowed hours as (start, end), or None for all day."""
        if not self.between:
            return None
        a, b = self.between.split("-")
        return dt.time.fromisoformat(a.strip().zfill(5)), dt.time.fromisoformat(b.strip().zfill(5))

    def allows(self, now: dt.datetime) -> bool:
        """True when ``now`` (local time) lies inside the days and hours."""
        if DAYS[now.weekday()] not in self.days:
            return False
        w = self.window()
        if w is None:
            return True
        t = now.time()
        start, end = w
        return start <= t < end if start <= end else (t >= start or t < end)


class AddressConfig(_Model):
    """One import address; ``local+*@domain`` allows plus-addressing."""

    address: str
    assign: dict[str, Any] = Field(default_factory=dict)

    @field_validator("address")
    @classmethod
    def _check(cls, v: str) -> str:
        if v.count("@") != 1 or v.startswith("@") or v.endswith("@"):
            raise ValueError(f"not an address: {v!r} (use local@domain or local+*@domain)")
        return v.lower()


def default_addresses() -> tuple[AddressConfig, ...]:
    """``invoices@`` and ``invoices+*@`` at localhost and at this machine's names."""
    import socket

    hosts = ["localhost"]
    for name in (socket.gethostname(), socket.getfqdn()):
        name = name.lower().strip(".")
        if name and "@" not in name:
            hosts.append(name)
    return tuple(AddressConfig(address=f"invoices{plus}@{h}") for h in dict.fromkeys(hosts) for plus in ("", "+*"))


class TLSConfig(_Model):
    """Certificate and key for STARTTLS, and an optional implicit-TLS listener."""

    cert: Path
    key: Path
    required: bool = False
    # a second port that speaks TLS from the first byte (what port 465 does), e.g. "0.0.0.0:4650"
    implicit_listen: str | None = None

    _check_implicit_listen = field_validator("implicit_listen", mode="before")(_listen_address(4650))

    @property
    def implicit_host_port(self) -> tuple[str, int] | None:
        """The implicit-TLS listen address split into host and port, or None."""
        return _split_listen(self.implicit_listen, 4650) if self.implicit_listen else None


class AuthConfig(_Model):
    """SMTP AUTH users (name -> password); offered only over TLS."""

    users: dict[str, str] = Field(default_factory=dict)
    required: bool = False


class SMTPLimits(_Model):
    """Per-client bounds on the SMTP server (answered 421 / 450, never silently)."""

    connections_per_ip: Annotated[int, Field(ge=0)] = 20  # 0: no limit
    messages_per_minute_per_ip: Annotated[int, Field(ge=0)] = 300  # MAIL commands; 0: no limit
    # clients the limits above do not apply to (this host; add a trusted relay here)
    exempt: tuple[str, ...] = ("127.0.0.0/8", "::1")
    # Failed AUTH per client address (IPv6: per /64), for every client (exempt or not): each
    # failure makes the client's next AUTH wait auth_delay longer (at most 30 s); after
    # auth_failures_per_ip of them within auth_failure_window, AUTH from that address gets 454
    # until the oldest is auth_failure_window old. 0: no limit.
    auth_failures_per_ip: Annotated[int, Field(ge=0)] = 10
    auth_failure_window: Annotated[Duration, Field(gt=0, le=86400)] = 900
    auth_delay: Annotated[Seconds, Field(ge=0, le=30)] = 1.0

    @field_validator("exempt")
    @classmethod
    def _check_networks(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        import ipaddress

        for net in v:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError as exc:
                raise ValueError(f"not an IP address or network: {net!r}") from exc
        return v


class SMTPConfig(_Model):
    """The SMTP source."""

    enabled: bool = True
    listen: str = "127.0.0.1:2525"  # loopback: opening it to the network is a choice (a NAS: 0.0.0.0)
    hostname: str = "localhost"
    max_message_size: Size = 50 * 1024**2
    max_recipients: int = 100
    max_commands: int = 1000  # per command verb and session (aiosmtpd command_call_limit)
    timeout: Duration = 300
    addresses: tuple[AddressConfig, ...] = Field(default_factory=lambda: default_addresses())
    tls: TLSConfig | None = None
    auth: AuthConfig | None = None
    limits: SMTPLimits = SMTPLimits()

    _check_listen = field_validator("listen", mode="before")(_listen_address(2525))

    @property
    def host_port(self) -> tuple[str, int]:
        """The listen address split into host and port."""
        return _split_listen(self.listen, 2525)

    @model_validator(mode="after")
    def _auth_needs_tls(self) -> SMTPConfig:
        # AUTH is only ever offered over TLS: users without a certificate could never log in
        if self.auth is not None and (self.auth.users or self.auth.required) and self.tls is None:
            raise ValueError("auth: needs smtp.tls (cert and key): AUTH is only offered over TLS")
        if self.auth is not None and self.auth.required and not self.auth.users:
            raise ValueError("auth.required: no auth.users are configured, so nobody could send")
        return self


class MailboxTLS(_Model):
    """Certificate checks for an IMAP server."""

    verify: bool = True
    ca_file: Path | None = None


class OAuth2Config(_Model):
    """XOAUTH2 settings for a mailbox; a provider preset fills the URLs and the scope."""

    client_id: str
    client_secret: str | None = None
    token_url: str | None = None
    auth_url: str | None = None
    refresh_token: str | None = None
    refresh_token_file: Path | None = None
    scope: str | None = None


# Provider presets: what `provider:` fills in (keys the user gives win).
IMAP_PROVIDERS: dict[str, dict[str, Any]] = {
    "gmail": {"host": "imap.gmail.com", "oauth2": {
        "auth_url": "https://accounts.google.com/o/oauth2/v2/auth",
        "token_url": "https://oauth2.googleapis.com/token", "scope": "https://mail.google.com/"}},
    "icloud": {"host": "imap.mail.me.com"},
    "outlook": {"host": "outlook.office365.com", "oauth2": {
        "auth_url": "https://login.microsoftonline.com/common/oauth2/v2.0/authorize",
        "token_url": "https://login.microsoftonline.com/common/oauth2/v2.0/token",
        "scope": "https://outlook.office.com/IMAP.AccessAsUser.All offline_access"}},
    "fastmail": {"host": "imap.fastmail.com"},
    "gmx": {"host": "imap.gmx.net"},
    "webde": {"host": "imap.web.de"},
    "yahoo": {"host": "imap.mail.yahoo.com"},
    "aol": {"host": "imap.aol.com"},
    "zoho": {"host": "imap.zoho.com"},
    "ionos": {"host": "imap.ionos.de"},
    "mailbox.org": {"host": "imap.mailbox.org"},
    "posteo": {"host": "posteo.de"},
    "t-online": {"host": "secureimap.t-online.de"},
}
IMAP_PROVIDER_ALIASES = {"google": "gmail", "googlemail": "gmail", "office365": "outlook", "microsoft365": "outlook",
                         "m365": "outlook", "hotmail": "outlook", "outlook.com": "outlook", "web.de": "webde",
                         "me.com": "icloud", "mailboxorg": "mailbox.org", "tonline": "t-online"}


class MailboxConfig(_WithPassword):
    """A linked IMAP mailbox."""

    name: str
    provider: str | None = None
    host: str | None = None
    port: int | None = None
    security: Literal["ssl", "starttls", "none"] | None = None
    username: str
    password: str | None = None
    password_file: Path | None = None
    oauth2: OAuth2Config | None = None
    folders: tuple[str, ...] = ("INBOX",)
    since: dt.date | None = None
    schedule: Schedule = Schedule(every=3600)
    idle: bool = True
    # how often an IDLE watcher re-opens its folder (finds a folder deleted and created again
    # when the server says nothing); RFC 2177: re-issue IDLE within 29 minutes
    idle_recheck: Duration = 300
    after_import: str = "none"
    tls: MailboxTLS = MailboxTLS()
    timeout: Duration = 60
    assign: dict[str, Any] = Field(default_factory=dict)
    # whose Authentication-Results header to believe (globs; "" = a header without authserv-id);
    # None: the provider's default (gateway.senderauth.PROVIDER_AUTHSERV_IDS), else none
    trusted_authserv_ids: tuple[str, ...] | None = None

    @field_validator("idle_recheck")
    @classmethod
    def _check_recheck(cls, v: int) -> int:
        if not 1 <= v <= 29 * 60:
            raise ValueError(f"must be between 1s and 29m (RFC 2177: IDLE is re-issued within 29 minutes), not {v} s")
        return v

    @field_validator("after_import")
    @classmethod
    def _check_after(cls, v: str) -> str:
        if v in ("none", "seen", "flag") or (v.startswith("move:") and len(v) > 5):
            return v
        raise ValueError("must be none, seen, flag or move:Folder")

    @model_validator(mode="before")
    @classmethod
    def _apply_provider(cls, data: Any) -> Any:
        """Fill host, port, security and OAuth2 URLs from ``provider``."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if isinstance(data.get("folders"), str):
            data["folders"] = [data["folders"]]
        provider = data.get("provider")
        if provider is not None:
            key = IMAP_PROVIDER_ALIASES.get(str(provider).lower(), str(provider).lower())
            if key not in IMAP_PROVIDERS:
                known = ", ".join([*IMAP_PROVIDERS, *IMAP_PROVIDER_ALIASES])
                raise ValueError(f"provider: unknown provider {provider!r}; known: {known} (or give host, port, security)")
            data["provider"] = key
            preset = IMAP_PROVIDERS[key]
            data.setdefault("host", preset["host"])
            if "port" not in data and "security" not in data:
                data["port"], data["security"] = 993, "ssl"
            if isinstance(data.get("oauth2"), dict) and "oauth2" in preset:
                data["oauth2"] = {**preset["oauth2"], **data["oauth2"]}
        elif not data.get("host"):
            raise ValueError("host: required (or name a provider: " + ", ".join(IMAP_PROVIDERS) + ")")
        # TLS from the first byte unless the port is the STARTTLS one: a wrong guess fails fast, not in a timeout
        security = data.get("security") or ("starttls" if str(data.get("port")) == "143" else "ssl")
        data["security"] = security
        data.setdefault("port", 993 if security == "ssl" else 143)
        if isinstance(data.get("schedule"), dict) and data["schedule"].get("every") is None:
            data["schedule"] = {**data["schedule"], "every": 3600}  # a window alone keeps the hourly default
        return data

    @model_validator(mode="after")
    def _check_credentials(self) -> MailboxConfig:
        # an oauth2 mailbox without refresh_token gets one from `invoice-gateway oauth NAME`
        if self.oauth2 is not None and not self.oauth2.token_url:
            raise ValueError("oauth2.token_url: required (no provider preset gives it)")
        if self.oauth2 is None and self.password is None:
            raise ValueError("password: required (or password_file, or oauth2)")
        return self


class Filter(_Model):
    """Which documents a target takes (empty: all)."""

    document_types: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    companies: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()


class ExportSMTP(_WithPassword):
    """The SMTP server an e-mail target sends through."""

    host: str
    port: int = 587
    security: Literal["ssl", "starttls", "none"] = "starttls"
    username: str | None = None
    password: str | None = None
    password_file: Path | None = None
    ca_file: Path | None = None
    timeout: Duration = 60


class ExportConfig(_WithPassword):
    """A sync target: folder, webdav or email."""

    name: str
    type: Literal["folder", "webdav", "email"]
    # folder
    path: Path | None = None
    # webdav
    url: str | None = None
    username: str | None = None
    password: str | None = None
    password_file: Path | None = None
    ca_file: Path | None = None
    # email
    to: str | None = None
    sender: str | None = None
    subject: str = "Invoice {company} {invoice_number}"
    smtp: ExportSMTP | None = None
    # common
    filename: str = "{received:%Y/%m}/{stem}"
    schedule: Schedule | None = None
    filter: Filter = Filter()
    since: dt.date | None = None
    require_approval: bool = False
    archive_after_export: bool = False
    sidecar: Literal["json"] | None = None
    note: str | None = None
    enabled: bool = True

    @model_validator(mode="after")
    def _check_type(self) -> ExportConfig:
        if self.type == "folder" and self.path is None:
            raise ValueError("path: required for a folder target")
        if self.type == "webdav":
            if not self.url:
                raise ValueError("url: required for a webdav target")
            if not self.url.startswith(("http://", "https://")):
                raise ValueError("url: must start with http:// or https://")
        if self.type == "email" and (not self.to or self.smtp is None):
            raise ValueError("to and smtp: required for an email target")
        return self


class HotFolderConfig(_Model):
    """A folder that a scanner or a script drops files into."""

    name: str
    path: Path
    assign: dict[str, Any] = Field(default_factory=dict)
    after_import: Literal["move", "leave"] = "move"
    # auto: native events plus a slow poll; poll: for NAS and bind mounts where events never come
    watch: Literal["auto", "inotify", "poll"] = "auto"


class WebConfig(_WithPassword):
    """The admin page and JSON API."""

    enabled: bool = True
    listen: str = "127.0.0.1:8080"  # loopback, as the SMTP default
    password: str | None = None
    password_file: Path | None = None
    api_token: str | None = None
    secure_cookies: bool = False
    # the reverse proxy (its address as the gateway sees it, or "*") whose
    # X-Forwarded-Proto and X-Forwarded-For are believed
    trusted_proxy: str | None = None

    @field_validator("trusted_proxy")
    @classmethod
    def _proxy_address(cls, v: str | None) -> str | None:
        if v is None or v == "*":
            return v
        try:
            return str(ipaddress.ip_address(v.strip()))
        except ValueError:
            raise ValueError(f"{v!r} is not an IP address; give the proxy's address as the gateway sees it "
                             "(127.0.0.1 for a proxy on the same machine), or \"*\" for any") from None

    @field_validator("password", "api_token")
    @classmethod
    def _empty_is_unset(cls, v: str | None) -> str | None:
        # ``${ADMIN_PASSWORD:-}`` in a container: an empty value means "not set"
        return v or None

    _check_listen = field_validator("listen", mode="before")(_listen_address(8080))

    @property
    def host_port(self) -> tuple[str, int]:
        """The listen address split into host and port."""
        return _split_listen(self.listen, 8080)


Policy = Literal["import", "attachments", "recognize", "keep"]


class UnmatchedConfig(_Model):
    """What to do with mail no rule matched, per source kind."""

    smtp: Policy = "import"
    imap: Policy = "recognize"
    folder: Policy = "import"
    # mail fed with `invoice-gateway import` is treated like SMTP mail
    import_: Policy = Field("import", alias="import")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def for_source(self, source: str) -> str:
        """The policy for a message's source (``imap:gmail`` -> imap)."""
        kind = source.split(":", 1)[0]
        return str(getattr(self, "import_" if kind == "import" else kind, self.smtp))


class Limits(_Model):
    """Bounds on what one message may cost."""

    render_timeout: Duration = 30
    render_memory: Size = 512 * 1024**2
    max_parts: int = 500
    max_depth: int = 20
    max_headers: int = 1000  # header fields per message and per part
    max_decoded: Size = 100 * 1024**2  # decoded bytes of all parts of one message
    workers: int = 2
    # processing in worker processes (true) or threads of the serve process (false)
    worker_processes: bool = True
    # free space under data_dir below which the admin page warns and `disk_full` is notified
    disk_free_min: Size = 1024**3
    # each worker process's memory ceiling (RLIMIT_DATA): one mail can only cost its own worker
    worker_memory: Annotated[int, BeforeValidator(parse_size), Field(ge=256 * 1024**2)] = 1024**3
    # a worker that holds one mail longer is stopped (the mail counts an attempt)
    mail_timeout: Annotated[int, BeforeValidator(parse_duration), Field(ge=1)] = 120

    @model_validator(mode="after")
    def _mail_outlasts_its_render(self) -> Limits:
        # a body that renders within render_timeout must not have its worker killed first
        if self.mail_timeout <= self.render_timeout:
            raise ValueError(f"mail_timeout ({self.mail_timeout} s) must be longer than render_timeout "
                             f"({self.render_timeout} s): rendering is part of processing one mail")
        return self


OCR_LANGUAGES = ("deu", "eng", "fra", "nld", "ita", "spa")


class OcrConfig(_Model):
    """OCR of scanned PDFs and of photos and scans sent as images (OCRmyPDF and Tesseract)."""

    # false: scans are stored as they came, images still become PDFs, without a text layer
    enabled: bool = True
    # Tesseract's language codes (Debian's tesseract-ocr-LANG packages); fewer read faster
    languages: tuple[str, ...] = OCR_LANGUAGES
    # documents read at once, each by one child process at nice 19
    workers: Annotated[int, Field(ge=1, le=16)] = 1
    # the first pages that are read; the others stay without text
    max_pages: Annotated[int, Field(ge=1, le=1000)] = 20
    # one document's reading, and its memory (address space of each child process)
    timeout: Duration = 600
    memory: Size = 1536 * 1024**2
    # straighten skewed pages (about 1 s more per page) and turn pages lying on their side
    deskew: bool = False
    rotate_pages: bool = True
    # how Tesseract tells ink from paper: auto (Tesseract's default, one threshold a page: best on
    # scans), sauvola (local: photos lit from one side read better), otsu, adaptive-otsu
    thresholding: Literal["auto", "otsu", "adaptive-otsu", "sauvola"] = "auto"
    # a PDF with fewer characters of text per page (on average, first pages) is a scan
    min_text_chars: Annotated[int, Field(ge=0)] = 40
    # an image smaller than this, or narrower than min_image_pixels on a side, is a logo or icon:
    # never a document
    min_image_size: Size = 50 * 1024
    min_image_pixels: Annotated[int, Field(ge=0)] = 300
    # larger images are refused (a decompression bomb)
    max_image_pixels: Annotated[int, Field(ge=1)] = 80_000_000

    @field_validator("languages")
    @classmethod
    def _check_languages(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("name at least one language (deu, eng, fra, nld, ita, spa, ...)")
        for lang in v:
            if not re.fullmatch(r"[a-z]{3}(?:_[a-z]+)?", lang):
                raise ValueError(f"{lang!r} is not a Tesseract language code such as deu, eng or chi_sim")
        return v


class TrustConfig(_Model):
    """Sender authentication (SPF, DKIM, DMARC) and what rules demand of it."""

    # every `from` condition of every rule also demands an authenticated sender
    require_authenticated_sender: bool = False
    # check SPF, DKIM and DMARC for mail received by SMTP (false: `authenticated` stays unknown)
    check_senders: bool = True
    # the authserv-id of the Authentication-Results the gateway records (default: smtp.hostname)
    authserv_id: str | None = None
    # DNS for the checks: servers (default: /etc/resolv.conf) and seconds per query
    dns_servers: tuple[str, ...] = ()
    dns_timeout: Annotated[float, Field(gt=0, le=30)] = 3.0

    @field_validator("dns_servers")
    @classmethod
    def _check_dns_servers(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        from gateway.senderauth.dns import split_server

        for server in v:
            try:
                split_server(server)
            except ValueError as exc:
                raise ValueError(f"{exc}; give an IP address, optionally with :port (192.0.2.53:5353)") from exc
        return v


NotifyEvent = Literal["mailbox_failing", "export_failed", "suspicious", "bank_account_changed",
                      "rules_broken", "approval_digest", "disk_full"]
NOTIFY_EVENTS: tuple[str, ...] = ("mailbox_failing", "export_failed", "suspicious", "bank_account_changed",
                                  "rules_broken", "approval_digest", "disk_full")


class NotifyURL(_Model):
    """One Apprise URL (mailto://, ntfy://, gotify://, json://, ...) and the events it wants."""

    url: str
    events: tuple[NotifyEvent, ...] = NOTIFY_EVENTS  # type: ignore[assignment]

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        if "://" not in v:
            raise ValueError("must be an Apprise URL such as mailto://..., ntfy://..., json://... "
                             "(https://github.com/caronc/apprise/wiki lists them)")
        return v


class NotifyConfig(_Model):
    """Notifications: who hears of what needs a person, through Apprise."""

    urls: tuple[NotifyURL, ...] = ()
    # the admin page as the person reaches it (links in notifications); default: from web.listen
    admin_url: str | None = None
    # documents waiting for approval: one digest a day, at this local time
    digest_at: str = "08:00"
    # a mailbox whose polls have failed for this long (no success since) is reported
    mailbox_failing_after: Duration = 86400
    # how often the conditions are looked at
    check_every: Duration = 60

    @field_validator("digest_at")
    @classmethod
    def _check_digest_at(cls, v: str) -> str:
        if not re.fullmatch(r"\d{1,2}:\d{2}", v.strip()):
            raise ValueError('must look like "08:00"')
        return v.strip().zfill(5)


class Settings(_Model):
    """The whole, validated gateway.yaml."""

    data_dir: Path = Path("./data")
    rules_dir: Path = Path("./rules")
    rules_watch: Literal["auto", "inotify", "poll"] = "auto"
    smtp: SMTPConfig = SMTPConfig()
    mailboxes: tuple[MailboxConfig, ...] = ()
    unmatched: UnmatchedConfig = UnmatchedConfig.model_validate({})
    exports: tuple[ExportConfig, ...] = (ExportConfig(name="folder", type="folder", path=Path("./exports")),)
    folders: tuple[HotFolderConfig, ...] = ()
    web: WebConfig = WebConfig()
    limits: Limits = Limits()
    trust: TrustConfig = TrustConfig()
    ocr: OcrConfig = OcrConfig()
    notify: NotifyConfig = NotifyConfig()
    timezone: str | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    source_path: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _unique_names(self) -> Settings:
        named: tuple[tuple[str, list[str]], ...] = (
            ("mailboxes", [m.name for m in self.mailboxes]), ("exports", [e.name for e in self.exports]),
            ("folders", [f.name for f in self.folders]))
        for key, names in named:
            seen: set[str] = set()
            for i, name in enumerate(names):
                if name in seen:
                    raise ValueError(f"{key}[{i}].name: {name!r} is used twice; names must be unique")
                seen.add(name)
        return self

    def export(self, name: str) -> ExportConfig:
        """The export target called ``name``."""
        for e in self.exports:
            if e.name == name:
                return e
        raise ConfigError(f"no export target named {name!r}; known: {', '.join(e.name for e in self.exports) or 'none'}")

    def mailbox(self, name: str) -> MailboxConfig:
        """The mailbox called ``name``."""
        for m in self.mailboxes:
            if m.name == name:
                return m
        raise ConfigError(f"no mailbox named {name!r}; known: {', '.join(m.name for m in self.mailboxes) or 'none'}")


def _substitute(node: Any, path: str, env: dict[str, str]) -> Any:
    """Replace ``${NAME}`` (and ``${NAME:-default}``) in every string."""
    if isinstance(node, dict):
        return {k: _substitute(v, f"{path}.{k}" if path else str(k), env) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, f"{path}[{i}]", env) for i, v in enumerate(node)]
    if isinstance(node, str):

        def repl(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise ConfigError(f"{path}: environment variable {name} is not set")

        return _ENV_RE.sub(repl, node)
    return node


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The settings model that holds the last key of ``loc`` (None where it is no model)."""
    model: type[BaseModel] = Settings
    for part in loc[:-1]:
        if isinstance(part, int) or str(part).startswith(("function-", "json-or-python")):
            continue
        field = next((f for name, f in model.model_fields.items() if (f.alias or name) == part), None)
        if field is None:
            return None
        inner = _inner_model(field.annotation)
        if inner is None:
            return None
        model = inner
    return model


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    """The model inside ``X``, ``X | None``, ``tuple[X, ...]``, ``Annotated[X, ...]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def _unknown_key(loc: tuple[Any, ...]) -> str:
    """``unknown key; did you mean 'listen'? allowed: ...`` (as the rules checker says it)."""
    model = _model_at(loc)
    if model is None:
        return "unknown key"
    allowed = [f.alias or name for name, f in model.model_fields.items() if not f.exclude]
    close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ";"
    return f"unknown key{hint} allowed: {', '.join(allowed)}"


def _format_error(err: Any) -> str:
    loc = ""
    for part in err["loc"]:
        if isinstance(part, int):
            loc += f"[{part}]"
        elif part in ("function-after[_check_type()]",) or str(part).startswith(("function-", "json-or-python")):
            continue
        else:
            loc += f".{part}" if loc else str(part)
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = _unknown_key(err["loc"])
    elif err["type"] == "literal_error":
        msg = f"must be one of {err['ctx']['expected']}" if "ctx" in err else msg
    # a validator that names its own key (``url: ...``) extends the path
    m = re.match(r"^([a-z_\[\]0-9.]+): (.*)$", msg)
    if m and not m.group(1).startswith(loc.split(".")[0] + "["):
        loc, msg = (f"{loc}.{m.group(1)}" if loc else m.group(1)), m.group(2)
    elif m:
        loc, msg = m.group(1), m.group(2)
    return f"{loc}: {msg}" if loc else msg


_FILE_KEYS = ("password_file", "refresh_token_file", "ca_file", "cert", "key")


def _absolute_files(node: Any, base: Path) -> Any:
    """Make the file paths of secrets and certificates relative to gateway.yaml, before they are read."""
    if isinstance(node, dict):
        return {k: (str(base / v) if k in _FILE_KEYS and isinstance(v, str) and v and not Path(v).is_absolute()
                    else _absolute_files(v, base)) for k, v in node.items()}
    if isinstance(node, list):
        return [_absolute_files(v, base) for v in node]
    return node


def parse_settings(data: dict[str, Any] | None, *, env: dict[str, str] | None = None, base: Path | None = None) -> Settings:
    """Validate a gateway.yaml mapping; relative paths are taken from ``base``."""
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError("gateway.yaml: the top level must be a mapping of keys")
    data = _substitute(data, "", dict(os.environ) if env is None else env)
    if base is not None:
        data = _absolute_files(data, base)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        errs = [_format_error(e) for e in exc.errors()]
        raise ConfigError(errs[0] + (f" (and {len(errs) - 1} more: {'; '.join(errs[1:])})" if len(errs) > 1 else "")) from exc
    if base is not None:
        settings = _absolutise(settings, base)
    return settings


def _absolutise(s: Settings, base: Path) -> Settings:
    def fix(p: Path) -> Path:
        return p if p.is_absolute() else (base / p).resolve()

    exports = tuple(e.model_copy(update={"path": fix(e.path)}) if e.path else e for e in s.exports)
    folders = tuple(f.model_copy(update={"path": fix(f.path)}) for f in s.folders)
    return s.model_copy(update={"data_dir": fix(s.data_dir), "rules_dir": fix(s.rules_dir), "exports": exports, "folders": folders})


def default_config_path() -> Path:
    """``$GATEWAY_CONFIG``, else ./gateway.yaml."""
    return Path(os.environ.get("GATEWAY_CONFIG") or "gateway.yaml")


def load_settings(path: Path | None = None, *, env: dict[str, str] | None = None) -> Settings:
    """Read and validate gateway.yaml; a missing file gives the embedded defaults."""
    path = path or default_config_path()
    if not path.exists():
        if path == default_config_path() and "GATEWAY_CONFIG" not in os.environ:
            settings = parse_settings({}, env=env, base=Path.cwd())
            return settings.model_copy(update={"source_path": None})
        raise ConfigError(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    settings = parse_settings(data, env=env, base=path.resolve().parent)
    return settings.model_copy(update={"source_path": path.resolve()})
