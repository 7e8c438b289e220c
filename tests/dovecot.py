"""A real Dovecot IMAP server on loopback, in a temporary folder, for tests and benchmarks.

Usage::

    with Dovecot(tls=True) as dc:
        dc.add_user("alice@example.test", "secret")
        dc.append("alice@example.test", "INBOX", raw_bytes)
        client = dc.client("alice@example.test")          # a logged-in IMAPClient
        ... dc.port (plain/STARTTLS), dc.ssl_port (implicit TLS), dc.cert (PEM) ...
        dc.stop(); dc.start()                              # same mail, same UIDVALIDITY

The recipe is /work/shared/notes/dovecot.md: Debian's dovecot runs its helper
processes as its own users, so the folder must be traversable by the
``dovecot`` user and the mail folders owned by it. Run as another user than
root, the server runs as that user instead. ``dovecot`` daemonizes and keeps
the standard streams it inherited, so it is started with them on /dev/null.

``ImapRelay`` stands in front of it to play servers that behave otherwise:
Exchange (sizes reported inexactly) and Cyrus (silent when a selected folder
is deleted).
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
DOVEADM = shutil.which("doveadm") or "/usr/bin/doveadm"


def dovecot_available() -> bool:
    """Whether a dovecot binary is installed."""
    return Path(DOVECOT).exists()


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_self_signed(directory: Path, *, cn: str = "localhost") -> tuple[Path, Path]:
    """A self-signed certificate (for localhost and 127.0.0.1) and its key, made with openssl."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", f"/CN={cn}", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60,
    )
    return cert, key


class Dovecot:
    """One Dovecot instance: IMAP on a free loopback port, optional implicit TLS and STARTTLS.

    Attributes:
        root: the instance's folder (removed by ``cleanup``).
        port: the IMAP port (plain text; STARTTLS too when ``tls``).
        ssl_port: the implicit-TLS port when ``tls``, else None.
        cert: the self-signed certificate (PEM) when ``tls``, else None.
    """

    def __init__(self, *, tls: bool = False, oauth2_introspection_url: str | None = None,
                 base: Path | None = None, idle_check_interval: int = 1) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="dovecot-", dir=base))
        os.chmod(self.root, 0o755)
        self._check_traversable(self.root)
        self.tls = tls
        self.oauth2_url = oauth2_introspection_url
        self.port = free_port()
        self.ssl_port = free_port() if tls else None
        self.cert: Path | None = None
        self.key: Path | None = None
        self.users: dict[str, str] = {}
        self.idle_check_interval = idle_check_interval
        self._started = False
        self._as_root = os.geteuid() == 0
        if self._as_root:
            self._uid, self._gid = pwd.getpwnam("dovecot").pw_uid, grp.getgrnam("dovecot").gr_gid
        else:
            self._uid, self._gid = os.getuid(), os.getgid()
        for d in ("run", "state", "mail", "home"):
            (self.root / d).mkdir()
        for d in ("mail", "home"):
            os.chown(self.root / d, self._uid, self._gid)
        if tls:
            self.cert, self.key = make_self_signed(self.root)
            os.chmod(self.key, 0o644)  # read by the login process (a test key, thrown away)
        (self.root / "users").mkdir()
        self.conf = self.root / "dovecot.conf"
        self.conf.write_text(self._config())

    # -- configuration -----------------------------------------------------------------

    @staticmethod
    def _check_traversable(path: Path) -> None:
        for parent in path.parents:
            if os.stat(parent).st_mode & 0o001 == 0:
                raise RuntimeError(f"{parent} is not traversable by other users (chmod o+x); "
                                   "the dovecot user must reach the test folder")

    def _config(self) -> str:
        d = self.root
        user = pwd.getpwuid(os.getuid()).pw_name
        internal = "default_internal_user = dovecot\ndefault_login_user = dovenull\n" if self._as_root else (
            f"default_internal_user = {user}\ndefault_login_user = {user}\n")
        ssl = (f"ssl = yes\nssl_cert = <{self.cert}\nssl_key = <{self.key}\n" if self.tls else "ssl = no\n")
        mechanisms = "plain login"
        passdb = f"""passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/users/%u
}}
"""
        if self.oauth2_url:
            mechanisms = "xoauth2 oauthbearer"
            (d / "oauth2.conf.ext").write_text(
                f"introspection_mode = post\nintrospection_url = {self.oauth2_url}\n"
                "username_attribute = username\nactive_attribute = active\nactive_value = true\n"
                "tokeninfo_url = \n"
            )
            passdb = f"""passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {d}/oauth2.conf.ext
}}
"""
        imaps = f"    port = {self.ssl_port}\n    address = 127.0.0.1\n" if self.ssl_port else "    port = 0\n"
        return f"""protocols = imap
listen = 127.0.0.1
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
info_log_path = {d}/dovecot.log
{ssl}disable_plaintext_auth = no
auth_mechanisms = {mechanisms}
mail_location = maildir:{d}/mail/%u
{internal}first_valid_uid = 1
first_valid_gid = 1
mailbox_idle_check_interval = {self.idle_check_interval} secs
auth_failure_delay = 0
imap_logout_format = in=%i out=%o
protocol imap {{
  mail_max_userip_connections = 200
}}
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Trash {{
    special_use = \\Trash
    auto = create
  }}
  mailbox Junk {{
    special_use = \\Junk
    auto = create
  }}
  mailbox Drafts {{
    special_use = \\Drafts
    auto = create
  }}
  mailbox Sent {{
    special_use = \\Sent
    auto = create
  }}
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
{imaps}  }}
}}
service anvil {{
  chroot =
  # a failed login delays every later login from the same IP by seconds (auth penalty): off here
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
{passdb}userdb {{
  driver = static
  args = uid={self._uid} gid={self._gid} home={d}/home/%u
}}
"""

    # -- users and mail ---------------------------------------------------------------------

    def add_user(self, name: str | None = None, password: str = "secret") -> str:
        """Add a user; returns the name.

        One passwd-file per user: Dovecot reads a changed passwd-file at most
        once a second, but a file it has not seen yet at once.
        """
        name = name or f"u{uuid.uuid4().hex[:10]}@example.test"
        if "/" in name:
            raise ValueError("a user name must not contain /")
        self.users[name] = password
        (self.root / "users" / name).write_text(f"{name}:{{PLAIN}}{password}\n")
        return name

    def client(self, user: str, password: str | None = None, *, timeout: float = 30) -> Any:
        """A logged-in IMAPClient over plain text on loopback."""
        from imapclient import IMAPClient

        c = IMAPClient("127.0.0.1", port=self.port, ssl=False, timeout=timeout)
        c.login(user, password if password is not None else self.users[user])
        return c

    def append(self, user: str, folder: str, messages: bytes | Sequence[bytes], *,
               flags: Iterable[bytes] = ()) -> None:
        """APPEND messages to a folder (created when missing)."""
        msgs = [messages] if isinstance(messages, bytes) else list(messages)
        with contextlib.closing(_Closing(self.client(user))) as c:
            if not c.client.folder_exists(folder):
                c.client.create_folder(folder)
            for m in msgs:
                c.client.append(folder, m, flags=tuple(flags))

    def write_maildir(self, user: str, folder: str, messages: Iterable[bytes]) -> int:
        """Write messages straight into the maildir (fast bulk fill); Dovecot indexes them on access."""
        base = self.root / "mail" / user
        box = base if folder == "INBOX" else base / f".{folder.replace('/', '.')}"
        for sub in ("cur", "new", "tmp"):
            (box / sub).mkdir(parents=True, exist_ok=True)
        host = socket.gethostname()
        n = 0
        stamp = int(time.time())
        for n, raw in enumerate(messages, 1):
            name = f"{stamp}.M{n}P{os.getpid()}.{host},S={len(raw)}:2,"
            (box / "cur" / name).write_bytes(raw)
        if self._as_root:
            for dirpath, _, files in os.walk(base):
                os.chown(dirpath, self._uid, self._gid)
                for f in files:
                    os.chown(os.path.join(dirpath, f), self._uid, self._gid)
        return n

    def doveadm(self, *args: str, input: bytes | None = None) -> str:
        """Run ``doveadm -c <this config> ARGS``; returns its output."""
        res = subprocess.run([DOVEADM, "-c", str(self.conf), *args], input=input, capture_output=True, timeout=120)
        if res.returncode != 0:
            raise RuntimeError(f"doveadm {' '.join(args)} failed: {res.stderr.decode(errors='replace')}")
        return res.stdout.decode(errors="replace")

    # -- process ---------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The master process id while running."""
        try:
            return int((self.root / "run" / "master.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    @property
    def running(self) -> bool:
        """Whether the master process is alive."""
        pid = self.pid
        if pid is None:
            return False
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        return state != "Z"

    def start(self, timeout: float = 15) -> Dovecot:
        """Start the server and wait until it accepts connections.

        The first start takes other free ports when one was taken meanwhile
        (other test runs share the machine); a restart keeps its ports.
        """
        for attempt in range(5):
            mark = len(self.log())
            res = subprocess.run([DOVECOT, "-c", str(self.conf)], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
            if res.returncode == 0:
                break
            in_use = "Address already in use" in self.log()[mark:]
            if not in_use or self._started or attempt == 4:
                raise RuntimeError(f"dovecot did not start (exit {res.returncode}); log:\n{self.log()[mark:][-3000:]}")
            self.port = free_port()
            self.ssl_port = free_port() if self.tls else None
            self.conf.write_text(self._config())
        self._started = True
        deadline = time.monotonic() + timeout
        ports = [self.port] + ([self.ssl_port] if self.ssl_port else [])
        for port in ports:
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"dovecot did not listen on {port}; log:\n{self.log()[-3000:]}") from None
                    time.sleep(0.02)
        return self

    def _children(self, pid: int) -> list[int]:
        out = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # the fields after the command name (which may hold spaces) start with state, ppid
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
        return out

    def stop(self, timeout: float = 15) -> None:
        """Stop the master and its children: every connection drops at once.

        The master alone leaves running imap processes serving their clients a
        while (seen with 2.3.19), so its children are killed by their ids.
        """
        pid = self.pid
        if pid is None:
            return
        children = self._children(pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while self.running and time.monotonic() < deadline:
            time.sleep(0.02)
        # children that still hold a port would make a restart fail
        for port in [self.port] + ([self.ssl_port] if self.ssl_port else []):
            while time.monotonic() < deadline:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                        pass
                except OSError:
                    break
                time.sleep(0.02)

    def cleanup(self) -> None:
        """Stop and remove the folder."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Dovecot:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    # -- what happened -------------------------------------------------------------------------

    def log(self) -> str:
        """The server's log so far."""
        try:
            return (self.root / "dovecot.log").read_text(errors="replace")
        except OSError:
            return ""

    def logins(self, user: str) -> int:
        """How many IMAP sessions of ``user`` have ended so far (from the log)."""
        return len(re.findall(rf"imap\({re.escape(user)}\).*Disconnected", self.log()))

    def bytes_sent(self, user: str) -> int:
        """Bytes the server sent to ``user`` over all ended sessions (``out=`` of the logout lines)."""
        return sum(int(m) for m in re.findall(rf"imap\({re.escape(user)}\).*?out=(\d+)", self.log()))


class _Closing:
    def __init__(self, client: Any) -> None:
        self.client = client

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.logout()


class ImapRelay:
    """An IMAP server on loopback that relays to another one and behaves like Exchange or Cyrus.

    Every connection is relayed to ``upstream_port`` byte for byte, except in
    the server's answers (outside literals, so mail bodies pass unchanged):

    - ``size_offset``: every ``RFC822.SIZE n`` becomes ``n + size_offset``, as
      Exchange reports a stored size that differs from the real one;
    - ``silent``: untagged ``NO`` and ``BYE`` are dropped, as Cyrus says nothing
      when a selected folder is deleted and created again.

    Usage::

        with ImapRelay(dc.port, size_offset=57) as relay:
            ... connect to 127.0.0.1:relay.port ...

    Attributes:
        port: the port it listens on.
        rewritten: how many sizes were rewritten.
        dropped: the untagged lines dropped.
    """

    def __init__(self, upstream_port: int, *, size_offset: int = 0, silent: bool = False) -> None:
        self.upstream_port = upstream_port
        self.size_offset = size_offset
        self.silent = silent
        self.rewritten = 0
        self.dropped: list[bytes] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, name="imap-relay", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                down, _ = self._listener.accept()
            except OSError:
                return
            try:
                up = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=10)
            except OSError:
                down.close()
                continue
            up.settimeout(None)
            with self._lock:
                if self._closed:
                    down.close()
                    up.close()
                    return
                self._sockets += [down, up]
            threading.Thread(target=self._client_to_server, args=(down, up), daemon=True).start()
            threading.Thread(target=self._server_to_client, args=(up, down), daemon=True).start()

    @staticmethod
    def _client_to_server(down: socket.socket, up: socket.socket) -> None:
        try:
            while data := down.recv(65536):
                up.sendall(data)
        except OSError:
            pass
        finally:
            for s in (down, up):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def _server_to_client(self, up: socket.socket, down: socket.socket) -> None:
        reader = up.makefile("rb")
        try:
            while line := reader.readline():
                if self.silent and re.match(rb"\* (NO|BYE)\b", line):
                    self.dropped.append(line)
                    continue
                line, n = re.subn(rb"RFC822\.SIZE (\d+)",
                                  lambda m: b"RFC822.SIZE %d" % (int(m.group(1)) + self.size_offset), line)
                self.rewritten += n if self.size_offset else 0
                down.sendall(line)
                literal = re.search(rb"\{(\d+)\}\r\n$", line)
                if literal:  # the next n bytes are data (a mail): passed unchanged
                    down.sendall(reader.read(int(literal.group(1))))
        except (OSError, ValueError):
            pass
        finally:
            if not self.silent:  # a silent server keeps the client's connection open
                with contextlib.suppress(OSError):
                    down.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Stop listening and drop every relayed connection."""
        with self._lock:
            self._closed = True
            sockets, self._sockets = self._sockets, []
        self._listener.close()
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def __enter__(self) -> ImapRelay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
