"""Real WebDAV servers on loopback, each a private instance in a temporary folder, for tests.

Usage::

    with Nginx() as dav:                      # or Apache(), Rclone(), Sabre()
        dav.url("Invoices")                   # http://127.0.0.1:<port>/Invoices
        dav.files("Invoices")                 # what is on its disk, below that folder

All run as an unprivileged user: as root, they are started as ``nobody`` (their
folder is handed to that user); otherwise as the user running the tests. Basic
auth with ``USER`` / ``PASSWORD`` everywhere.

- ``Nginx``: nginx with ``dav_methods PUT DELETE MKCOL`` (no MOVE, as the issue
  found it) and libnginx-mod-http-dav-ext for PROPFIND; ``/readonly/`` has no
  PUT at all.
- ``Apache``: apache2 with mod_dav and mod_dav_fs; ``/readonly/`` allows only
  reading (``Require method``), ``/moved`` redirects to https.
- ``Rclone``: ``rclone serve webdav`` over a local folder.
- ``Sabre``: SabreDAV (php-sabre-dav) with a filesystem collection, served by ``php -S``.

``full_disk=True`` puts the served root on a full 64 KiB tmpfs (as root), or, where
mounting is not allowed, gives rclone and SabreDAV a file size limit of 0 bytes, so
their writes fail as on a full disk (nginx and Apache cannot start so: skipped);
``make_room()`` ends either.
"""

from __future__ import annotations

import base64
import contextlib
import grp
import hashlib
import os
import pwd
import resource
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from conftest import free_port, need, wait_port

USER, PASSWORD = "john", "app-password-123"
AS_ROOT = os.geteuid() == 0
RUN_AS = {"user": "nobody", "group": "nogroup"} if AS_ROOT else {}

SERVER_PHP = """<?php
// SabreDAV on the folder DAV_ROOT, one basic-auth user (DAV_USER, DAV_PASSWORD).
require_once 'Sabre/autoload.php';

class GatewayTestAuth extends \\Sabre\\DAV\\Auth\\Backend\\AbstractBasic {
    protected function validateUserPass($username, $password) {
        return $username === getenv('DAV_USER') && $password === getenv('DAV_PASSWORD');
    }
}

$server = new \\Sabre\\DAV\\Server(new \\Sabre\\DAV\\FS\\Directory(getenv('DAV_ROOT')));
$server->setBaseUri('/');
$server->addPlugin(new \\Sabre\\DAV\\Auth\\Plugin(new GatewayTestAuth(), 'dav'));
$server->exec();
"""


def _no_file_size() -> None:
    """In the child before exec: a file size limit of 0 bytes (lowering one's own limit needs no privilege)."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))


class DavServer:
    """A WebDAV server process serving ``root`` on a free port; subclasses say how to run it."""

    name = "webdav"
    limit_works = True  # a file size limit of 0 stands in for a full disk (nginx and Apache cannot start so)

    def __init__(self, *, full_disk: bool = False, folders: tuple[str, ...] = ("Invoices", "readonly")) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"dav-{self.name}-"))
        self.root = self.dir / "root"
        self.root.mkdir()
        self.port = free_port()
        self.full_disk = full_disk
        self.folders = folders
        self.mounted = False
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self._command: list[str] = []

    # -- what a subclass provides ----------------------------------------------------------

    def configure(self) -> list[str]:
        """Write the server's files into ``self.dir``; return its command line."""
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        """Extra environment variables of the server process."""
        return {}

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> DavServer:
        """Start the server and wait until it listens."""
        if self.full_disk and AS_ROOT:
            self.mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs",
                                           str(self.root)], capture_output=True).returncode == 0
        if self.full_disk and not self.mounted and not self.limit_works:
            self.stop()
            need(False, f"a full disk for {self.name} needs a tmpfs mount (root with CAP_SYS_ADMIN)")
        for folder in self.folders:
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        (self.dir / "htpasswd").write_text(
            f"{USER}:{{SHA}}{base64.b64encode(hashlib.sha1(PASSWORD.encode()).digest()).decode()}\n")
        command = self.configure()
        (self.dir / "server.log").touch()
        if AS_ROOT:
            uid, gid = pwd.getpwnam(RUN_AS["user"]).pw_uid, grp.getgrnam(RUN_AS["group"]).gr_gid
            for path in [self.dir, *self.dir.rglob("*")]:
                os.chown(path, uid, gid)
        if self.mounted:
            self._fill()
        self._command = command
        self._spawn(limited=self.full_disk and not self.mounted)
        return self

    def _spawn(self, limited: bool) -> None:
        """Run the server process; ``limited``: with a file size limit of 0 (a full disk without a mount)."""
        self._log = subprocess.DEVNULL if limited else open(self.dir / "server.log", "ab")
        self.proc = subprocess.Popen(
            self._command, cwd=self.dir, **RUN_AS,  # type: ignore[call-overload]
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.dir), **self.environment()},
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
            # every write past 0 bytes fails as on a full disk; SIGXFSZ stays ignored (as in
            # Python, with restore_signals off) so the write fails instead of killing the server
            restore_signals=not limited, preexec_fn=_no_file_size if limited else None)
        try:
            wait_port(self.port, timeout=20)
        except AssertionError:
            log = self.log()
            self.stop()
            raise AssertionError(f"{self.name} did not start: {log}") from None

    def _fill(self) -> None:
        """Fill the tmpfs to the last byte."""
        with contextlib.suppress(OSError), open(self.root / "filler", "wb", buffering=0) as fh:
            while True:
                fh.write(b"\0" * 4096)

    def make_room(self) -> None:
        """End the full disk: grow the tmpfs, or restart the server without its file size limit."""
        if self.mounted:
            subprocess.run(["mount", "-o", "remount,size=4m", str(self.root)], check=True)
        else:  # raising another user's limit needs CAP_SYS_RESOURCE, which a container may lack
            self._end_process()
            self._spawn(limited=False)

    def stop(self) -> None:
        """Stop the server and remove its folder."""
        self._end_process()
        if self.mounted:
            subprocess.run(["umount", str(self.root)], check=False)
            self.mounted = False
        shutil.rmtree(self.dir, ignore_errors=True)

    def _end_process(self) -> None:
        """Stop the server process (its whole process group)."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            self.proc = None
        if self._log not in (None, subprocess.DEVNULL):
            self._log.close()
        self._log = None

    def __enter__(self) -> DavServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- for assertions --------------------------------------------------------------------

    def url(self, folder: str = "Invoices") -> str:
        """The URL of a folder on the server (no credentials)."""
        return f"http://127.0.0.1:{self.port}/{folder}"

    def files(self, folder: str = "Invoices") -> list[str]:
        """The files below a folder on the server's disk, sorted, relative to it."""
        base = self.root / folder
        return sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file())

    def log(self) -> str:
        """The server's own log (the last 2,000 characters)."""
        with contextlib.suppress(OSError):
            return (self.dir / "server.log").read_text(errors="replace")[-2000:]
        return ""


class Nginx(DavServer):
    """nginx without MOVE (``dav_methods PUT DELETE MKCOL``), PROPFIND from dav-ext."""

    name = "nginx"
    limit_works = False

    def configure(self) -> list[str]:
        d = self.dir
        temp = " ".join(f"{kind}_temp_path {d}/temp;" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        (d / "temp").mkdir()
        (d / "nginx.conf").write_text(f"""
load_module /usr/lib/nginx/modules/ngx_http_dav_ext_module.so;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/server.log;
events {{ worker_connections 64; }}
http {{
  access_log off;
  {temp}
  server {{
    listen 127.0.0.1:{self.port};
    root {self.root};
    client_max_body_size 0;
    auth_basic dav;
    auth_basic_user_file {d}/htpasswd;
    location / {{
      dav_methods PUT DELETE MKCOL;
      dav_ext_methods PROPFIND OPTIONS;
    }}
    location /readonly/ {{
      dav_ext_methods PROPFIND OPTIONS;
    }}
  }}
}}
""")
        return ["nginx", "-e", f"{d}/server.log", "-p", f"{d}/", "-c", f"{d}/nginx.conf", "-g", "daemon off;"]


class Apache(DavServer):
    """apache2 with mod_dav_fs; ``/readonly/`` may only be read, ``/moved`` redirects to https."""

    name = "apache"
    limit_works = False

    def configure(self) -> list[str]:
        d, mods = self.dir, "/usr/lib/apache2/modules"
        modules = "\n".join(f"LoadModule {m}_module {mods}/mod_{m}.so" for m in (
            "mpm_event", "authz_core", "authn_core", "authn_file", "auth_basic", "authz_user", "alias", "dav",
            "dav_fs"))
        (d / "lock").mkdir()
        (d / "httpd.conf").write_text(f"""
ServerRoot {d}
DefaultRuntimeDir {d}
PidFile {d}/httpd.pid
ErrorLog {d}/server.log
Listen 127.0.0.1:{self.port}
ServerName 127.0.0.1
{modules}
StartServers 1
ServerLimit 1
ThreadsPerChild 16
MaxRequestWorkers 16
MinSpareThreads 1
MaxSpareThreads 16
DavLockDB {d}/lock/davlock
DocumentRoot {self.root}
Redirect permanent /moved https://127.0.0.1:{self.port}/Invoices
<Directory {self.root}>
  Dav On
  AuthType Basic
  AuthName dav
  AuthUserFile {d}/htpasswd
  Require valid-user
</Directory>
<Directory {self.root}/readonly>
  <RequireAll>
    Require valid-user
    Require method GET HEAD OPTIONS PROPFIND
  </RequireAll>
</Directory>
""")
        return ["apache2", "-d", str(d), "-f", f"{d}/httpd.conf", "-D", "FOREGROUND"]


class Rclone(DavServer):
    """``rclone serve webdav`` over a local folder."""

    name = "rclone"

    def configure(self) -> list[str]:
        (self.dir / "rclone.conf").write_text("")
        return ["rclone", "serve", "webdav", str(self.root), "--addr", f"127.0.0.1:{self.port}",
                "--user", USER, "--pass", PASSWORD, "--config", f"{self.dir}/rclone.conf",
                "--cache-dir", f"{self.dir}/cache"]


class Sabre(DavServer):
    """SabreDAV 1.8 (Debian's php-sabre-dav) with a filesystem collection, under ``php -S``."""

    name = "sabre"

    def configure(self) -> list[str]:
        (self.dir / "server.php").write_text(SERVER_PHP)
        # Debian's SabreDAV predates PHP 8: its deprecation notices would end up in the answers
        return ["php", "-d", "error_reporting=E_ALL & ~E_DEPRECATED", "-d", "display_errors=stderr",
                "-S", f"127.0.0.1:{self.port}", "server.php"]

    def environment(self) -> dict[str, str]:
        return {"DAV_ROOT": str(self.root), "DAV_USER": USER, "DAV_PASSWORD": PASSWORD}
