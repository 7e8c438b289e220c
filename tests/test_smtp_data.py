"""The bulk DATA path (gateway/sources/smtpdata.py): the end marker, dot-stuffing, SMTP
smuggling, size and line limits as data arrives, bounded memory, and clients that go away.

Malformed DATA goes over raw sockets; well-formed mail through smtplib. The memory tests
run `serve` as a subprocess and watch its RSS (the worker processes are separate)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import smtplib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import Gateway, base_config, wait_for, wait_port, write_config
from gateway.sources.smtpdata import DataState, MessageSink, SpilledMessage, read_data

END = b"\r\n.\r\n"


# -- the reader against aiosmtpd's line-by-line semantics --------------------------------------

def reference(wire: bytes) -> tuple[bytes, bytes] | None:
    """What aiosmtpd 1.4.6 plus the gateway's former bare-LF handling made of ``wire``:
    (message, bytes after the end marker), or None when the data never ends."""
    pieces, pos = [], 0
    while True:
        nl = wire.find(b"\r\n", pos)
        if nl < 0:
            return None
        piece = wire[pos:nl + 2]
        pos = nl + 2
        if piece == b".\r\n":
            break
        pieces.append(piece[1:] if piece.startswith(b".") else piece)
    return re.sub(rb"(?<!\r)\n\.", b"\n", b"".join(pieces)), wire[pos:]


def run_reader(chunks: list[bytes], *, size_limit: int | None = None, line_limit: int = 1 << 20,
               tmp: Path | None = None) -> tuple[DataState, bytes | SpilledMessage | None, bytes]:
    """Feed ``chunks`` to a real StreamReader one by one, as a connection would; read DATA from it."""
    from concurrent.futures import ThreadPoolExecutor

    async def main() -> tuple[DataState, bytes | SpilledMessage | None, bytes]:
        reader = asyncio.StreamReader(limit=1001)
        counter = iter(range(1 << 30))
        sink = MessageSink(lambda: (tmp or Path("/nonexistent")) / f"m{next(counter)}", pool)

        async def feed() -> None:
            for c in chunks:
                reader.feed_data(c)
                await asyncio.sleep(0)
            reader.feed_eof()

        feeder = asyncio.create_task(feed())
        state = await read_data(reader, sink, size_limit=size_limit, line_limit=line_limit)
        message = sink.done() if state is DataState.OK else None
        await feeder
        rest = await reader.read()
        return state, message, rest

    with ThreadPoolExecutor(2) as pool:
        return asyncio.run(main())


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:]) if b > a]


ALPHABET = [b"\r\n", b"\n", b"\r", b".", b"..", b"a", b"\r\n.\n", b"\n.\r\n", b"\r.\r\n", b"\n.\n"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(ALPHABET), max_size=40), st.lists(st.integers(0, 400), max_size=8),
       st.sampled_from([b"", b"QUIT\r\n", b"MAIL FROM:<x@y>\r\n"]))
def test_reader_matches_aiosmtpd_for_any_data_cut_anywhere(parts: list[bytes], cuts: list[int], after: bytes) -> None:
    """Same message, same end, same bytes left for the command loop, however the data arrives."""
    wire = b"".join(parts) + END + after
    expected = reference(wire)
    assert expected is not None
    state, message, rest = run_reader(split(wire, cuts))
    assert state is DataState.OK
    assert (message, rest) == expected


@pytest.mark.parametrize("wire, message", [
    (b".\r\n", b""),  # an empty message: the end marker is the first line
    (b"..\r\n.\r\n", b".\r\n"),  # a mail that is only a dot line
    (b"\r\n.\r\n", b"\r\n"),
    (b"..\r\n..\r\n.\r\n", b".\r\n.\r\n"),
    (b"a\r\n...b\r\n.c\r\n.\r\n", b"a\r\n..b\r\nc\r\n"),
    (b"a\n..b\n.\r\n.\r\n", b"a\n.b\n\r\n"),  # bare-LF lines are un-stuffed too (smtplib stuffs them)
])
def test_dot_stuffing_examples(wire: bytes, message: bytes) -> None:
    for cut in range(len(wire) + 1):
        assert run_reader([wire[:cut], wire[cut:]]) == (DataState.OK, message, b"")


def test_reader_spills_large_messages_to_a_file(tmp_path: Path) -> None:
    body = b"".join(b".line %d\r\n" % i for i in range(200_000))  # 2.5 MB, every line dot-stuffed
    wire = b"." + body + b"\r\n.\r\n"
    state, message, _ = run_reader(split(wire, list(range(0, len(wire), 70_001))), tmp=tmp_path)
    expected = reference(wire)
    assert expected is not None and isinstance(message, SpilledMessage) and state is DataState.OK
    assert message.path.read_bytes() == expected[0]
    assert message.size == len(expected[0]) and message.sha256 == hashlib.sha256(expected[0]).hexdigest()


def test_size_and_line_limits_end_keeping_but_read_to_the_end(tmp_path: Path) -> None:
    big = b"x" * 70 + b"\r\n"
    wire = big * 40_000 + END + b"QUIT\r\n"  # 2.9 MB over a 1 MB limit: spilled, then dropped
    state, message, rest = run_reader(split(wire, list(range(0, len(wire), 65_536))), size_limit=1_000_000,
                                      tmp=tmp_path)
    assert (state, message, rest) == (DataState.TOO_BIG, None, b"QUIT\r\n")
    assert list(tmp_path.iterdir()) == []  # the spill file went as soon as the limit was passed
    long_line = b"ok\r\n" + b"y" * 101 + b"\r\n.\r\n"
    # a line is its bytes before the LF: 101 "y" and the CR
    assert run_reader([long_line], line_limit=101)[0] is DataState.LINE_TOO_LONG
    assert run_reader([long_line], line_limit=102)[:2] == (DataState.OK, long_line[:-3])
    assert run_reader([b"a" * 60, b"a" * 40, b"\r\n.\r\n"], line_limit=100)[0] is DataState.LINE_TOO_LONG
    assert run_reader([b"a" * 60, b"a" * 39, b"\r\n.\r\n"], line_limit=100)[0] is DataState.OK


# -- over real sockets -----------------------------------------------------------------------

def dialog(port: int, chunks: list[bytes], *, pause: float = 0.05) -> list[bytes]:
    """EHLO, MAIL, RCPT, DATA on a raw socket, then ``chunks`` sent separately; all replies until close."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        f = s.makefile("rb")
        replies = [f.readline()]
        for cmd in (b"EHLO client.test\r\n", b"MAIL FROM:<billing@acme.example>\r\n",
                    b"RCPT TO:<invoices@localhost>\r\n", b"DATA\r\n"):
            s.sendall(cmd)
            line = f.readline()
            while line[3:4] == b"-":
                line = f.readline()
            replies.append(line)
        assert replies[-1].startswith(b"354"), replies
        for c in chunks:
            s.sendall(c)
            time.sleep(pause)
        replies += f.readlines()
    return replies


def stored(gw: Gateway, n: int) -> list[bytes]:
    rows = wait_for(lambda: len(gw.store.list_messages()[0]) >= n and gw.store.list_messages()[0], timeout=10)
    time.sleep(0.3)  # nothing more arrives
    rows = gw.store.list_messages()[0]
    return [(gw.settings.data_dir / r["raw_path"]).read_bytes() for r in rows]


def ignore_all(workdir: Path) -> None:
    (workdir / "rules" / "ignore.yaml").write_text("name: Ignore all\nwhen: {}\naction: ignore\n")


@pytest.mark.parametrize("dot", [b"\n.\n", b"\r\n.\n", b"\n.\r\n", b"\r.\r\n"])
def test_smuggling_split_across_packets_stays_one_message(gateway_factory: Callable[..., Gateway], workdir: Path,
                                                          dot: bytes) -> None:
    """Each smuggling variant, sent whole and cut at every byte of the would-be end marker."""
    ignore_all(workdir)
    gw = gateway_factory()
    data = (b"Subject: first\r\n\r\nhello" + dot + b"MAIL FROM:<ceo@acme.example>\r\nRCPT TO:<invoices@localhost>\r\n"
            b"DATA\r\nSubject: smuggled\r\n\r\npay now\r\n.\r\nQUIT\r\n")
    at = data.index(dot)
    cuts = [[data]] + [[data[:at + k], data[at + k:]] for k in range(len(dot) + 1)]
    for chunks in cuts:
        replies = dialog(gw.smtp_port, chunks)
        assert [r[:3] for r in replies[5:]] == [b"250", b"221"], replies
    raws = stored(gw, len(cuts))
    assert len(raws) == len(cuts)
    expected = reference(data)
    assert expected is not None
    assert all(raw == expected[0] and b"Subject: smuggled" in raw for raw in raws)


def test_end_marker_cut_at_every_byte_and_pipelined_commands(gateway_factory: Callable[..., Gateway],
                                                            workdir: Path) -> None:
    ignore_all(workdir)
    gw = gateway_factory()
    data = b"Subject: cut\r\n\r\n..dots\r\nend\r\n.\r\nQUIT\r\n"
    at = data.index(END)
    for k in range(1, len(END) + 2):
        replies = dialog(gw.smtp_port, [data[:at + k], data[at + k:]])
        assert [r[:3] for r in replies[5:]] == [b"250", b"221"], replies
    assert stored(gw, len(END) + 1) == [b"Subject: cut\r\n\r\n.dots\r\nend\r\n"] * (len(END) + 1)


def test_dot_lines_round_trip_through_smtplib(gateway_factory: Callable[..., Gateway], workdir: Path) -> None:
    ignore_all(workdir)
    gw = gateway_factory(smtp={**base_config(workdir)["smtp"], "max_message_size": "5MB"})
    only_dot = b".\r\n"
    dotted = b"Subject: dots\r\n\r\n.\r\n..\r\n...x\r\n. \r\n" + b"".join(b".%d\r\n" % i for i in range(150_000))
    for raw in (only_dot, dotted):  # the second is 1.3 MB: spilled to the spool's tmp folder
        gw.send(raw)
    assert sorted(stored(gw, 2), key=len) == [only_dot, dotted]
    assert list((gw.settings.data_dir / "mail" / "tmp").iterdir()) == []


def test_8bitmime_and_smtputf8_bytes_are_stored_as_sent(gateway_factory: Callable[..., Gateway],
                                                        workdir: Path) -> None:
    ignore_all(workdir)
    gw = gateway_factory()
    raw = ("From: Müller <büro@müller.example>\r\nSubject: Rechnung für März\r\n\r\n".encode()
           + "Grüße, 請求書\r\n".encode() + b"latin-1: \xe4\xf6\xfc\r\n.\xff\r\n")
    with smtplib.SMTP("127.0.0.1", gw.smtp_port, timeout=30) as s:
        s.ehlo()
        assert s.has_extn("8bitmime") and s.has_extn("smtputf8")
        s.sendmail("büro@müller.example", ["invoices@localhost"], raw, mail_options=["BODY=8BITMIME", "SMTPUTF8"])
    assert stored(gw, 1) == [raw]
    assert gw.store.list_messages()[0][0]["mail_from"] == "büro@müller.example"


@pytest.mark.parametrize("size", [20_000, 3_000_000])
def test_client_that_stops_mid_data_leaves_nothing(gateway_factory: Callable[..., Gateway], workdir: Path,
                                                   size: int) -> None:
    """In memory and spilled to a tmp file: the connection is cut before the end marker."""
    gw = gateway_factory(smtp={**base_config(workdir)["smtp"], "max_message_size": "5MB"})
    mail_dir = gw.settings.data_dir / "mail"
    with socket.create_connection(("127.0.0.1", gw.smtp_port), timeout=30) as s:
        f = s.makefile("rb")
        f.readline()
        for cmd in (b"EHLO c\r\n", b"MAIL FROM:<a@acme.example>\r\n", b"RCPT TO:<invoices@localhost>\r\n",
                    b"DATA\r\n"):
            s.sendall(cmd)
            line = f.readline()
            while line[3:4] == b"-":
                line = f.readline()
        assert line.startswith(b"354")
        s.sendall(b"Subject: cut\r\n\r\n" + b"z" * 70 + b"\r\n" + (b"z" * 72 + b"\r\n") * (size // 74))
        if size > 1_100_000:  # the tmp file exists while the mail comes in
            wait_for(lambda: list((mail_dir / "tmp").iterdir()), timeout=10)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
        f.close()  # the file object keeps the socket open otherwise
    wait_for(lambda: not list((mail_dir / "tmp").iterdir()), timeout=10)
    time.sleep(0.3)
    assert gw.store.status_counts() == {}
    assert [p for p in mail_dir.rglob("*") if p.is_file()] == []
    gw.send(b"Subject: after\r\n\r\nok\r\n")  # the server goes on
    assert stored(gw, 1) == [b"Subject: after\r\n\r\nok\r\n"]


# -- memory, with `serve` in its own process ---------------------------------------------------

class Serve:
    """`invoice-gateway serve` as a subprocess, with its RSS sampled while a test runs."""

    def __init__(self, workdir: Path, max_size: str) -> None:
        import psutil

        cfg = base_config(workdir, web={"enabled": False}, limits={"worker_processes": True})
        cfg["smtp"]["max_message_size"] = max_size
        ignore_all(workdir)
        config = write_config(workdir, cfg)
        self.port = int(cfg["smtp"]["listen"].rsplit(":", 1)[1])
        self.data_dir = workdir / "data"
        self.proc = subprocess.Popen([sys.executable, "-m", "gateway", "-q", "--config", str(config), "serve"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_port(self.port, timeout=30)
        self.ps = psutil.Process(self.proc.pid)
        self.peak = 0
        self._stop = threading.Event()
        self._watch: threading.Thread | None = None

    def rss(self) -> int:
        return int(self.ps.memory_info().rss)

    def __enter__(self) -> Serve:
        time.sleep(0.5)  # settle after start
        self.base = self.peak = self.rss()

        def watch() -> None:
            while not self._stop.is_set():
                self.peak = max(self.peak, self.rss())
                time.sleep(0.005)

        self._watch = threading.Thread(target=watch, daemon=True)
        self._watch.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        assert self._watch is not None
        self._watch.join()

    def stop(self) -> None:
        """Gone at once with its workers (a graceful stop would wait for a 50 MB mail to be parsed)."""
        import signal

        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)


@pytest.fixture
def serve_factory(workdir: Path) -> Iterator[Callable[[str], Serve]]:
    started: list[Serve] = []

    def factory(max_size: str) -> Serve:
        s = Serve(workdir, max_size)
        started.append(s)
        return s

    yield factory
    for s in started:
        s.stop()


def send_stream(port: int, lines: Iterator[bytes]) -> bytes:
    """A mail sent as it is generated (the test process never holds it); the reply to DATA's end."""
    with socket.create_connection(("127.0.0.1", port), timeout=120) as s:
        f = s.makefile("rb")
        f.readline()
        for cmd in (b"EHLO c\r\n", b"MAIL FROM:<a@acme.example>\r\n", b"RCPT TO:<invoices@localhost>\r\n",
                    b"DATA\r\n"):
            s.sendall(cmd)
            line = f.readline()
            while line[3:4] == b"-":
                line = f.readline()
        assert line.startswith(b"354")
        batch: list[bytes] = []
        for ln in lines:
            batch.append(ln)
            if len(batch) >= 1000:
                s.sendall(b"".join(batch))
                batch = []
        s.sendall(b"".join(batch) + b".\r\n")
        reply = f.readline()
        s.sendall(b"QUIT\r\n")
        return reply


def base64_lines(total: int, digest: Any = None) -> Iterator[bytes]:
    yield b"Subject: big\r\nContent-Type: application/octet-stream\r\n\r\n"
    line = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0\r\n"
    for i in range(total // len(line)):
        out = line if i % 1000 else b"." + line  # some dot-stuffed lines too
        if digest is not None:
            digest.update(out[1:] if out.startswith(b".") else out)
        yield out


def test_oversize_mail_gets_552_without_being_held_in_memory(serve_factory: Callable[[str], Serve]) -> None:
    serve = serve_factory("10MB")
    with serve:
        reply = send_stream(serve.port, base64_lines(60 * 1024 * 1024))
    assert reply.startswith(b"552"), reply
    growth = serve.peak - serve.base
    assert growth < 8 * 1024 * 1024, f"serve grew by {growth / 1e6:.1f} MB for a refused 60 MB mail"
    assert [p for p in (serve.data_dir / "mail").rglob("*") if p.is_file()] == []


def test_50mb_mail_streams_to_the_spool_with_bounded_memory(serve_factory: Callable[[str], Serve]) -> None:
    serve = serve_factory("60MB")
    digest = hashlib.sha256(b"Subject: big\r\nContent-Type: application/octet-stream\r\n\r\n")
    with serve:
        reply = send_stream(serve.port, base64_lines(50 * 1024 * 1024, digest))
    assert reply.startswith(b"250 2.0.0 OK"), reply
    growth = serve.peak - serve.base
    assert growth < 12 * 1024 * 1024, f"serve grew by {growth / 1e6:.1f} MB for a 50 MB mail"
    files = [p for p in (serve.data_dir / "mail").rglob("*.eml")]
    assert len(files) == 1 and files[0].stat().st_size > 50_000_000
    with open(files[0], "rb") as fh:
        assert hashlib.file_digest(fh, "sha256").hexdigest() == digest.hexdigest()
    assert os.listdir(serve.data_dir / "mail" / "tmp") == []


def test_kill_9_while_large_mails_stream_in_keeps_each_acknowledged_mail_once(workdir: Path) -> None:
    """Mails over SPILL_AT go through the spool's tmp folder: after kill -9 mid-DATA and a
    restart, every mail that got 250 is recorded exactly once and no tmp file is left."""
    import signal

    from gateway.store import Store

    cfg = base_config(workdir, web={"enabled": False}, limits={"worker_processes": True})
    cfg["smtp"]["max_message_size"] = "5MB"
    ignore_all(workdir)
    config = write_config(workdir, cfg)
    port = int(cfg["smtp"]["listen"].rsplit(":", 1)[1])

    def serve() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "gateway", "-q", "--config", str(config), "serve"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    proc = serve()
    wait_port(port, timeout=30)
    acked: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(n: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            raw = (b"Subject: big %d-%d\r\n\r\n" % (n, i)) + ((b"%d-%d " % (n, i)).ljust(70, b"x") + b"\r\n") * 18_000
            try:
                with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
                    s.sendmail("billing@acme.example", ["invoices@localhost"], raw)
            except (OSError, smtplib.SMTPException):
                time.sleep(0.05)  # the server is gone: not acknowledged
                continue
            with lock:
                acked.append(hashlib.sha256(raw).hexdigest())

    threads = [threading.Thread(target=client, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    wait_for(lambda: len(acked) >= 12, timeout=90)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    stop.set()
    for t in threads:
        t.join()
    proc = serve()
    try:
        wait_port(port, timeout=30)
        data_dir = workdir / "data"
        assert os.listdir(data_dir / "mail" / "tmp") == []  # partial mails are gone
        rows, _ = Store(data_dir).list_messages(limit=10_000)
        recorded = [r["sha256"] for r in rows]
        assert all(recorded.count(h) == 1 for h in acked), "an acknowledged mail is missing or doubled"
        for r in rows:  # every record has its whole file
            raw = (data_dir / r["raw_path"]).read_bytes()
            assert hashlib.sha256(raw).hexdigest() == r["sha256"] and len(raw) > 1_100_000
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def test_address_parsing_is_aiosmtpds_with_a_cache() -> None:
    """MAIL/RCPT addresses are parsed as aiosmtpd does, remembered or not."""
    from aiosmtpd.smtp import SMTP

    from gateway.sources.smtp import _GatewaySMTP

    args = ["<a@b.example>", "<a@b.example> SIZE=100 BODY=8BITMIME", " <a@b.example>", "a@b.example",
            "<büro@müller.example> SMTPUTF8", "<>", "", "<a@b", "<@relay:a@b.example>", '<"x y"@b.example>',
            "<" + "l" * 70 + "@b.example>", "garbage <", "<a@b.example>>"]

    class Plain(SMTP):
        def __init__(self, limit: int) -> None:  # only what _getaddr reads
            self.local_part_limit = limit

    class Cached(_GatewaySMTP):
        def __init__(self, limit: int) -> None:
            self.local_part_limit = limit

    for limit in (0, 64):
        plain, cached = Plain(limit), Cached(limit)
        for arg in args * 2:  # the second time from the cache
            assert cached._getaddr(arg) == plain._getaddr(arg), (limit, arg)
