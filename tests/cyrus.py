"""A real Cyrus IMAP server on loopback, in a temporary folder, for tests.

Usage::

    with Cyrus() as cy:
        user = cy.add_user()                    # creates user/<name> as the admin
        cy.append(user, "Invoices", raw_bytes)  # the folder is created when missing
        client = cy.client(user)                # a logged-in IMAPClient

Debian's Cyrus 3.6 (``master`` from cyrus-common, ``imapd`` unpacked from
cyrus-imapd by ``deps/cyrus-imapd.sh``, as that package and dovecot-imapd
cannot be installed together), started by ``master`` in the foreground with a
private configuration: folders in the alternate namespace (``Invoices``, not
``INBOX/Invoices``), ``/`` as separator, IDLE polling the folder every second
(``imapidlepoll``), and SASL's ``alwaystrue`` check: every password is
accepted (a test server on loopback only). Run as root, ``master`` runs its
services as the ``cyrus`` user, so the folder belongs to it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dovecot import free_port

CYRUS_BIN = Path("/usr/lib/cyrus/bin")  # master (Debian's cyrus-common)
# imapd: unpacked by deps/cyrus-imapd.sh (`make test`), since the cyrus-imapd package conflicts with dovecot-imapd
IMAPD_PLACES = (Path(__file__).resolve().parent.parent / ".venv" / "cyrus" / "usr/lib/cyrus/bin/imapd",
                CYRUS_BIN / "imapd")
ADMIN = "cyrus"


def imapd() -> Path | None:
    """Cyrus's imapd: unpacked beside the virtualenv, else installed; None when neither."""
    return next((p for p in IMAPD_PLACES if p.exists()), None)


def cyrus_available() -> bool:
    """Whether Cyrus's master and imapd are there."""
    return (CYRUS_BIN / "master").exists() and imapd() is not None


class Cyrus:
    """One Cyrus instance with IMAP on a free loopback port.

    Attributes:
        root: the instance's folder (removed on exit).
        port: the IMAP port (plain text).
    """

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="cyrus-"))
        os.chmod(self.root, 0o755)
        self.port = free_port()
        self.users: dict[str, str] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        for d in ("config", "spool", "run/proc", "run/lock", "run/socket"):
            (self.root / d).mkdir(parents=True)
        self.conf = self.root / "imapd.conf"
        d = self.root
        # services run as the cyrus user, who may not reach a clone in a private folder (a home
        # directory, `mktemp -d`: mode 0700): imapd is run from the instance's own folder
        found = imapd()
        served = self.root / "imapd"
        if found is not None:
            shutil.copy2(found, served)
        self.conf.write_text(f"""configdirectory: {d}/config
proc_path: {d}/run/proc
mboxname_lockpath: {d}/run/lock
defaultpartition: default
partition-default: {d}/spool
admins: {ADMIN}
allowplaintext: yes
sasl_pwcheck_method: alwaystrue
sasl_mech_list: PLAIN LOGIN
unixhierarchysep: yes
altnamespace: yes
lmtpsocket: {d}/run/socket/lmtp
idlesocket: {d}/run/socket/idle
notifysocket: {d}/run/socket/notify
imapidlepoll: 1
syslog_prefix: cyrus-test
""")
        (self.root / "cyrus.conf").write_text(f"""START {{
  recover cmd="ctl_cyrusdb -r -C {self.conf}"
}}
SERVICES {{
  imap cmd="{served} -C {self.conf}" listen="127.0.0.1:{self.port}" prefork=0
}}
EVENTS {{
}}
DAEMON {{
}}
""")
        if os.geteuid() == 0:
            uid, gid = pwd.getpwnam("cyrus").pw_uid, pwd.getpwnam("cyrus").pw_gid
            for dirpath, _, files in os.walk(self.root):
                os.chown(dirpath, uid, gid)
                for f in files:
                    os.chown(os.path.join(dirpath, f), uid, gid)

    def start(self, timeout: float = 15) -> Cyrus:
        """Start ``master`` in the foreground and wait until IMAP answers."""
        log = open(self.root / "master.log", "ab")  # noqa: SIM115 - kept open by the child
        self._proc = subprocess.Popen(
            [str(CYRUS_BIN / "master"), "-C", str(self.conf), "-M", str(self.root / "cyrus.conf"),
             "-p", str(self.root / "run" / "master.pid"), "-D"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.root)
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(100).startswith(b"* OK"):
                        return self
            except OSError:
                pass
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()  # nothing left running behind the failure
                raise RuntimeError(f"cyrus did not start: {(self.root / 'master.log').read_text(errors='replace')[-2000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop ``master`` (it ends its services)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        self._proc = None

    def __enter__(self) -> Cyrus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def client(self, user: str, password: str = "secret", *, timeout: float = 30) -> Any:
        """A logged-in IMAPClient over plain text on loopback."""
        from imapclient import IMAPClient

        c = IMAPClient("127.0.0.1", port=self.port, ssl=False, timeout=timeout)
        c.login(user, password)
        return c

    def add_user(self, name: str | None = None, password: str = "secret") -> str:
        """Create a user's mailbox (as the admin); returns the name."""
        name = name or f"u{uuid.uuid4().hex[:10]}"
        admin = self.client(ADMIN)
        try:
            admin.create_folder(f"user/{name}")
        finally:
            with contextlib.suppress(Exception):
                admin.logout()
        self.users[name] = password
        return name

    def append(self, user: str, folder: str, messages: bytes | Sequence[bytes]) -> None:
        """APPEND messages to a folder (created when missing)."""
        c = self.client(user)
        try:
            if not c.folder_exists(folder):
                c.create_folder(folder)
            for m in [messages] if isinstance(messages, bytes) else messages:
                c.append(folder, m)
        finally:
            with contextlib.suppress(Exception):
                c.logout()
