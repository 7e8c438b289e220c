"""The SMTP DATA phase in bulk: read the message in chunks up to ``<CRLF>.<CRLF>``.

aiosmtpd reads DATA one ``readuntil(b"\\r\\n")`` per line (about 1,300 calls
for a 100 KB mail) and joins the lines afterwards; at 100 KB that loop was
84 % of the serve process's Python time (docs/benchmarks.md). Here every
read takes what the connection has buffered, and each chunk is searched,
un-dot-stuffed and measured with bytes operations, which run in C.

The protections are aiosmtpd's, made explicit:

- Only ``<CRLF>.<CRLF>`` ends the data (or ``.<CRLF>`` as the very first
  line). A bare LF or CR before or after the dot is message content, so SMTP
  smuggling (CVE-2024-27305) cannot start a second message.
- A line is what ends in LF; the first dot of every line is removed (RFC
  5321 4.5.2 for CRLF lines, and the same for bare-LF lines, which clients
  such as Python's smtplib dot-stuff too).
- The size limit counts the bytes as sent, like aiosmtpd. Past it nothing
  more is kept; the rest is read and dropped up to the end marker, then
  ``552`` (RFC 5321 4.2.5: the reply comes after the data).
- A line longer than ``line_limit`` likewise ends keeping; the reply is
  ``552 5.3.4``.

Bytes that follow the end marker in the same read (a pipelining client's
next command) are given back to the stream for the command loop.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import os
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

END = b"\r\n.\r\n"
# Bytes of one message kept in memory before the rest goes to a file in the
# spool's tmp folder; smaller mails are written and fsync'd in one go by the spool.
SPILL_AT = 1024 * 1024
# StreamReader's limit while DATA is read: the connection is paused when
# twice this much is waiting, so a fast sender cannot make the buffer grow.
READ_LIMIT = 128 * 1024
# read() returns at most what is buffered; ask for more than can be buffered,
# so the buffer is empty after each read (see _give_back).
_READ_ALL = 1 << 30


class DataState(enum.Enum):
    """How the DATA phase ended."""

    OK = "ok"
    TOO_BIG = "too big"
    LINE_TOO_LONG = "line too long"
    FAILED = "failed"  # the spill file could not be written: 451


@dataclass(frozen=True)
class SpilledMessage:
    """A message written to the spool's tmp folder as it arrived (not yet durable).

    Attributes:
        path: the file in the spool's tmp folder.
        size: bytes (un-dot-stuffed, as stored).
        sha256: hex digest of those bytes.
    """

    path: Path
    size: int
    sha256: str


def line_run(data: bytes, run: int, limit: int) -> int | None:
    """Measure the lines of ``data`` following a line already ``run`` bytes long.

    Returns the length of the unfinished last line, or None when a line (its
    bytes before the LF) is longer than ``limit``. Jumps from the last LF
    inside each window of ``limit`` bytes to the next, so a chunk of short
    lines costs a few steps per ``limit`` bytes.
    """
    first = data.find(b"\n")
    if first < 0:
        run += len(data)
        return None if run > limit else run
    if run + first > limit:
        return None
    pos, size = first + 1, len(data)
    while size - pos > limit:
        nl = data.rfind(b"\n", pos, pos + limit + 1)
        if nl < 0:
            return None
        pos = nl + 1
    return size - 1 - data.rfind(b"\n")


class MessageSink:
    """Collects the un-dot-stuffed message: in memory, then in a spool tmp file past ``SPILL_AT``."""

    def __init__(self, new_tmp: Callable[[], Path], executor: Executor) -> None:
        self._new_tmp = new_tmp
        self._executor = executor
        self._parts: list[bytes] = []
        self._size = 0
        self._file: IO[bytes] | None = None
        self._path: Path | None = None
        self._hash: hashlib._Hash | None = None
        self.failure: OSError | None = None

    @property
    def size(self) -> int:
        """Bytes collected so far."""
        return self._size

    def _append(self, parts: list[bytes]) -> None:  # in an executor thread
        assert self._file is not None and self._hash is not None
        for part in parts:
            self._file.write(part)
            self._hash.update(part)

    async def add(self, part: bytes) -> None:
        """Keep ``part``; spill to disk (in a thread) once the message outgrows memory."""
        if not part:
            return
        self._size += len(part)
        if self._file is None and self._size <= SPILL_AT:
            self._parts.append(part)
            return
        loop = asyncio.get_running_loop()
        if self._file is None:
            self._path = self._new_tmp()
            self._file = open(self._path, "wb")  # noqa: SIM115 - closed in done() or discard()
            self._hash = hashlib.sha256()
            pending, self._parts = self._parts + [part], []
            await loop.run_in_executor(self._executor, self._append, pending)
        else:
            await loop.run_in_executor(self._executor, self._append, [part])

    def done(self) -> bytes | SpilledMessage:
        """The whole message: bytes, or the spilled file (closed; the spool's to make durable)."""
        if self._file is None:
            raw = b"".join(self._parts)
            self._parts = []
            return raw
        assert self._path is not None and self._hash is not None
        self._file.close()
        self._file = None
        return SpilledMessage(self._path, self._size, self._hash.hexdigest())

    def discard(self) -> None:
        """Drop what was collected (and the tmp file, if any)."""
        self._parts = []
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._path is not None:
            try:
                os.unlink(self._path)
            except FileNotFoundError:
                pass
            self._path = None


def _give_back(reader: asyncio.StreamReader, rest: bytes) -> None:
    """Return bytes read past the end marker to the (empty) stream buffer, in order.

    The read that returned them emptied the buffer (``_READ_ALL``) and nothing
    awaited since, so no newer bytes can be ahead of them. After EOF the
    session is being cancelled anyway: they are dropped.
    """
    if rest and not reader.at_eof():
        reader.feed_data(rest)


async def read_data(reader: asyncio.StreamReader, sink: MessageSink, *, size_limit: int | None,
                    line_limit: int) -> DataState:
    """Read DATA up to its end marker into ``sink``; how it ended.

    Raises whatever the stream raises when the connection goes away (the
    caller discards the sink).
    """
    state = DataState.OK
    pending = b"\r\n"  # the end marker may be the very first line: as if a CRLF came before
    virtual = 2  # bytes of ``pending`` that are not the client's
    wire = 0  # bytes as sent, for the size limit
    at_line_start = True
    run = 0  # length of the unfinished line
    while True:
        chunk = await reader.read(_READ_ALL)
        if not chunk:  # EOF; aiosmtpd cancels the session on it, but never loop on nothing
            raise ConnectionResetError("connection closed during DATA")
        buf = pending + chunk
        end = buf.find(END)
        if end >= 0:
            part = buf[virtual:end + 2]
            _give_back(reader, buf[end + 5:])  # before any await: see _give_back
        else:
            cut = len(buf) - 4  # an end marker may start in the last four bytes
            if cut <= virtual:
                pending = buf
                continue
            part, pending, virtual = buf[virtual:cut], buf[cut:], 0
        if part:
            wire += len(part)
            ends_line = part.endswith(b"\n")
            if state is DataState.OK:
                if size_limit and wire > size_limit:
                    state = DataState.TOO_BIG
                    sink.discard()
                else:
                    if at_line_start and part.startswith(b"."):
                        part = part[1:]
                    part = part.replace(b"\n.", b"\n")
                    measured = line_run(part, run, line_limit)
                    if measured is None:
                        state = DataState.LINE_TOO_LONG
                        sink.discard()
                    else:
                        run = measured
                        try:
                            await sink.add(part)
                        except OSError as exc:  # the client is still sending: answer 451 after the end
                            sink.failure = exc
                            state = DataState.FAILED
                            sink.discard()
            at_line_start = ends_line
        if end >= 0:
            return state
