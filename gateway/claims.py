"""Claims that cannot outlive their holder, and one ``serve`` per data_dir.

A process that claims work in the store (a message to process, an export to
deliver) first takes its own claim token and holds an exclusive ``flock`` on
``data_dir/claims/<token>.lock`` for as long as it lives; every row it claims
names the token. The kernel drops a process's locks the moment it dies,
however it dies (``kill -9``, the OOM killer, a crash in a C library), so
whoever can take the lock of a token knows its holder is gone and may release
its claims. Unlike a PID, a lock cannot be held by a process that is dying or
not yet reaped, nor by an unrelated process that was given the same PID.

``serve`` holds ``data_dir/serve.lock`` the same way, with its PID written in
the file: a second ``serve`` on the same data_dir (on other ports, say) is
refused with the first one's PID, instead of running a second recovery and a
second set of workers on the same database.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import re
import socket
import threading
import time
import uuid
import weakref
from pathlib import Path

from gateway.errors import DataDirInUse

CLAIMS_DIR = "claims"
SERVE_LOCK = "serve.lock"

_counter = itertools.count(1)


def _lock_name(token: str) -> str:
    return re.sub(r"[^A-Za-z0-9._:-]", "_", token) + ".lock"


class ClaimLock:
    """This process's claim token in one data_dir and the flock that keeps it alive.

    The token is made (and its lock file created, already locked) on first
    use, so processes that never claim anything leave no file.
    """

    def __init__(self, data_dir: Path) -> None:
        self.dir = Path(data_dir) / CLAIMS_DIR
        self._guard = threading.Lock()
        self._token: str | None = None
        self._fd: int | None = None
        self._pid = 0

    def token(self) -> str:
        """The token to claim with; its lock is held from before this returns until the process ends."""
        with self._guard:
            if self._token is None or self._pid != os.getpid():
                self._take()
            assert self._token is not None
            return self._token

    def _take(self) -> None:
        token = f"{socket.gethostname()}:{os.getpid()}:{int(time.time() * 1000)}:{next(_counter)}"
        self.dir.mkdir(parents=True, exist_ok=True)
        # Created under a temporary name and locked before it is renamed into
        # place: a checker never sees the final name unlocked, so it cannot
        # take a living holder for dead.
        tmp = self.dir / f".{uuid.uuid4().hex}.tmp"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(fd, f"{os.getpid()}\n".encode())
            os.rename(tmp, self.dir / _lock_name(token))
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        self._token, self._fd, self._pid = token, fd, os.getpid()
        # the lock lives as long as this object (a Store) or the process, whichever ends first
        weakref.finalize(self, _close_quietly, fd)

    def held(self, token: str) -> bool:
        """Whether ``token`` is this object's own token."""
        return token == self._token and self._pid == os.getpid()

    def alive(self, token: str) -> bool:
        """Whether the holder of ``token`` still runs (its lock cannot be taken).

        A dead holder's lock file is removed on the way: nothing can hold it again.
        """
        if self.held(token):
            return True
        path = self.dir / _lock_name(token)
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return False  # never made (a token of an earlier version) or already found dead
        except OSError:
            return True  # cannot tell: keep the claim rather than run the work twice
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return True  # held (EWOULDBLOCK), or cannot tell: the claim stays
            path.unlink(missing_ok=True)
            return False
        finally:
            os.close(fd)

    def sweep(self, keep: set[str]) -> int:
        """Remove the lock files of dead holders that no claim names any more; returns how many."""
        removed = 0
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return 0
        keep_names = {_lock_name(t) for t in keep}
        for name in names:
            if name.endswith(".lock") and name not in keep_names:
                token = name[: -len(".lock")]
                if not self.held(token) and not self.alive(token):
                    removed += 1
            elif name.startswith(".") and name.endswith(".tmp"):
                # a holder that died between creating and renaming its file
                try:
                    if time.time() - os.stat(self.dir / name).st_mtime > 3600:
                        os.unlink(self.dir / name)
                except OSError:
                    pass
        return removed


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


class ServeLock:
    """``data_dir/serve.lock``, held by the one ``serve`` that uses the data_dir."""

    def __init__(self, data_dir: Path, *, wait: float = 2.0) -> None:
        """Take the lock, or raise DataDirInUse naming the process that holds it.

        ``wait`` covers a serve that was just killed: its lock goes with its
        last breath, which may come a moment after a restart began.
        """
        self.path = Path(data_dir) / SERVE_LOCK
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _read_pid(fd)
                    os.close(fd)
                    who = f"pid {holder}" if holder else "another process"
                    raise DataDirInUse(
                        f"another invoice-gateway serve ({who}) is already using the data_dir "
                        f"{self.path.parent}: stop it first, or give this one its own data_dir "
                        f"(the lock is {self.path})") from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd: int | None = fd

    def release(self) -> None:
        """Let another serve use the data_dir."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None
