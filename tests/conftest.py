"""Shared fixtures: a gateway on loopback with its own data, rules and export folders."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
# The real-world corpus (mails and e-invoices from other projects' test suites) is not part of
# the repository: CI has it at ../shared/corpus beside the clone; elsewhere set GATEWAY_CORPUS.
# Without it the tests marked `corpus` do not run (the summary says how many), except in CI,
# where they fail: there a missing corpus is a broken machine, not a fresh clone.
CORPUS = Path(os.environ.get("GATEWAY_CORPUS") or ROOT.parent / "shared" / "corpus")
HAVE_CORPUS = (CORPUS / "emails").is_dir() and (CORPUS / "einvoices").is_dir()

API_TOKEN = "test-token-0123456789"
PDF_BYTES = (
    b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
    b"2 0 obj\n<< /Type /Pages /Kids [] /Count 0 >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"
)


ON_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(condition: bool, reason: str) -> None:
    """Skip a test whose precondition does not hold here, but fail it in CI (where everything is present)."""
    if condition:
        return
    if ON_CI:
        pytest.fail(f"{reason}; CI must provide it (CI is set)")
    pytest.skip(reason)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "corpus: reads the real-world corpus (../shared/corpus or $GATEWAY_CORPUS)")


_NO_CORPUS = (f"the corpus is not at {CORPUS}; set GATEWAY_CORPUS=/path/to/corpus "
              "(the folder with emails/ and einvoices/) to run the corpus tests")


@pytest.hookimpl(tryfirst=True)  # before the skip of an empty parametrization (no corpus files listed)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if HAVE_CORPUS or item.get_closest_marker("corpus") is None:
        return
    need(False, _NO_CORPUS)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    # counted from the skip reports, so that it also holds when pytest-xdist runs the tests elsewhere
    not_run = sum(1 for r in terminalreporter.stats.get("skipped", ())
                  if isinstance(r.longrepr, tuple) and _NO_CORPUS in str(r.longrepr[-1]))
    if not_run and not ON_CI:
        terminalreporter.write_line(f"{not_run} corpus test{'s' if not_run > 1 else ''} not run: {_NO_CORPUS}",
                                    yellow=True, bold=True)


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll until ``predicate`` returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def wait_port(port: int, timeout: float = 15.0) -> None:
    """Wait until something listens on 127.0.0.1:port."""
    def up() -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
        return False

    wait_for(up, timeout)


def make_mail(*, sender: str = "Billing <billing@acme.example>", to: str = "invoices@localhost",
              subject: str = "Invoice 42", body: str = "Please find the invoice attached.",
              attachments: list[tuple[str, bytes, str]] | None = None, html: str | None = None,
              message_id: str | None = None) -> EmailMessage:
    """A mail with attachments given as (file name, bytes, MIME type)."""
    m = EmailMessage()
    m["From"] = sender
    m["To"] = to
    m["Subject"] = subject
    m["Message-ID"] = message_id or f"<{time.monotonic_ns()}.{os.getpid()}@test.example>"
    m.set_content(body)
    if html:
        m.add_alternative(html, subtype="html")
    for name, data, ctype in attachments or []:
        maintype, _, subtype = ctype.partition("/")
        m.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return m


def text_layer_pdf(lines: Sequence[tuple[int, int, int, str]], media: tuple[int, int] = (595, 842)) -> bytes:
    """A one-page PDF with a text layer (Helvetica): each line is (x, y from the bottom, font size, text)."""
    content = b"\n".join(b"BT /F1 %d Tf %d %d Td (%s) Tj ET" % (size, x, y, text.encode("latin-1"))
                         for x, y, size, text in lines)
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %d %d] /Contents 4 0 R " % media
            + b"/Resources << /Font << /F1 5 0 R >> >> >>",
            b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"]
    out, offsets = b"%PDF-1.4\n", []
    for i, obj in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1) + b"".join(b"%010d 00000 n \n" % o for o in offsets)
    return out + b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)


def unique_pdf(tag: str) -> bytes:
    """A small valid-looking PDF whose bytes differ per tag."""
    return PDF_BYTES + f"% {tag}\n".encode()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A folder with data/, rules/ and exports/ for one gateway."""
    for d in ("data", "rules", "exports"):
        (tmp_path / d).mkdir()
    return tmp_path


def base_config(workdir: Path, **overrides: Any) -> dict[str, Any]:
    """A gateway.yaml mapping on free loopback ports."""
    cfg: dict[str, Any] = {
        "data_dir": str(workdir / "data"),
        "rules_dir": str(workdir / "rules"),
        "rules_watch": "poll",
        "smtp": {
            "listen": f"127.0.0.1:{free_port()}",
            "hostname": "gateway.test",
            "max_message_size": "1MB",
            "addresses": [
                {"address": "invoices@localhost"},
                {"address": "invoices+*@localhost", "assign": {"tags": ["forwarded"]}},
                {"address": "invoices@home.example"},
                {"address": "invoices+*@home.example"},
            ],
        },
        "exports": [{"name": "nas", "type": "folder", "path": str(workdir / "exports")}],
        "web": {"listen": f"127.0.0.1:{free_port()}", "api_token": API_TOKEN, "password": "admin-secret"},
        # in-process gateways process in threads, so tests can hand the pipeline stubs (a DNS
        # resolver); `serve` (the subprocess tests) and the tests that say so use worker processes
        "limits": {"worker_processes": False},
        # OCR reads PDFs of page images (as some tests draw theirs with Pillow) and replaces their
        # files: the tests of OCR (test_ocr*.py) turn it on
        "ocr": {"enabled": False},
    }
    for k, v in overrides.items():
        cfg[k] = v
    return cfg


def write_config(workdir: Path, cfg: dict[str, Any]) -> Path:
    """Write gateway.yaml into ``workdir``."""
    path = workdir / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


class Gateway:
    """An in-process gateway (Service) for a test."""

    def __init__(self, workdir: Path, cfg: dict[str, Any]) -> None:
        from gateway.config import parse_settings
        from gateway.service import Service

        self.workdir = workdir
        self.cfg = cfg
        self.settings = parse_settings(cfg, base=workdir)
        self.service = Service(self.settings)
        self.smtp_port = self.settings.smtp.host_port[1]
        self.web_port = self.settings.web.host_port[1]
        self.exports = workdir / "exports"

    def start(self) -> Gateway:
        self.service.start()
        wait_port(self.smtp_port)
        wait_port(self.web_port)
        return self

    def stop(self) -> None:
        self.service.stop()

    @property
    def store(self) -> Any:
        return self.service.store

    def send(self, msg: EmailMessage | bytes, *, rcpt: list[str] | None = None, sender: str = "billing@acme.example") -> Any:
        import smtplib

        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=30) as s:
            if isinstance(msg, bytes):
                return s.sendmail(sender, rcpt or ["invoices@localhost"], msg)
            return s.send_message(msg, from_addr=sender, to_addrs=rcpt)

    def exported_files(self) -> list[Path]:
        return sorted(p for p in self.exports.rglob("*") if p.is_file() and not p.name.startswith("."))

    def api(self, path: str, method: str = "GET", **kw: Any) -> Any:
        import httpx

        headers = {"Authorization": f"Bearer {API_TOKEN}", **kw.pop("headers", {})}
        return httpx.request(method, f"http://127.0.0.1:{self.web_port}{path}", headers=headers, timeout=30, **kw)


@pytest.fixture
def gateway_factory(workdir: Path) -> Iterator[Callable[..., Gateway]]:
    """Start gateways with config overrides; all are stopped after the test."""
    started: list[Gateway] = []

    def factory(**overrides: Any) -> Gateway:
        gw = Gateway(workdir, base_config(workdir, **overrides)).start()
        started.append(gw)
        return gw

    yield factory
    for gw in started:
        gw.stop()


@pytest.fixture
def gateway(gateway_factory: Callable[..., Gateway]) -> Gateway:
    """A running gateway with default test settings."""
    return gateway_factory()


def settled_by_subject(gw: Gateway, n: int, timeout: float = 30) -> dict[str, dict[str, Any]]:
    """Wait until ``n`` messages are stored and none waits for processing; they by subject."""
    rows = wait_for(lambda: (r := gw.store.list_messages()[0]) and len(r) >= n
                    and all(m["status"] != "received" for m in r) and r, timeout=timeout)
    return {m["subject"]: m for m in rows}


def run_cli(*args: str, cwd: Path | None = None, input: bytes | None = None,
            env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m gateway ARGS`` as a user would."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "gateway", *args], cwd=cwd, input=input, capture_output=True,
                          env=full_env, timeout=timeout)
