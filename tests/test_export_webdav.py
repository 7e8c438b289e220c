"""The webdav target against a real WsgiDAV server (cheroot, basic auth) on loopback."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cheroot import wsgi
from wsgidav.wsgidav_app import WsgiDAVApp

from conftest import Gateway, base_config, free_port, make_mail, run_cli, unique_pdf, wait_for, write_config
from gateway.config import ExportConfig
from gateway.errors import ExportError
from gateway.exporters.base import ExportItem
from gateway.exporters.webdav import WebDAVExporter
from gateway.store import utcnow

USER, PASSWORD = "john", "app-password-123"


class DavServer:
    """WsgiDAV over cheroot in a thread, serving ``root`` with one basic-auth user.

    ``requests`` records (method, path, Content-Length, Transfer-Encoding) of every request;
    ``refuse`` maps a method to a status it is answered with instead.
    """

    def __init__(self, root: Path, port: int | None = None, tls: tuple[Path, Path] | None = None) -> None:
        self.root = root
        self.port = port or free_port()
        self.tls = tls
        self.requests: list[tuple[str, str, str | None, str | None]] = []
        self.refuse: dict[str, str] = {}
        self.peers: list[tuple[str, str | None]] = []  # (method, the client's port): which connection
        self.app = WsgiDAVApp({
            "host": "127.0.0.1", "port": self.port, "provider_mapping": {"/": str(root)},
            "simple_dc": {"user_mapping": {"*": {USER: {"password": PASSWORD}}}},
            "http_authenticator": {"accept_basic": True, "accept_digest": False, "default_to_digest": False},
            "verbose": 1, "logging": {"enable": False}, "dir_browser": {"enable": False},
        })
        self.server: Any = None
        self.thread: threading.Thread | None = None

    def _wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        method = environ["REQUEST_METHOD"]
        self.requests.append((method, environ["PATH_INFO"], environ.get("CONTENT_LENGTH"),
                              environ.get("HTTP_TRANSFER_ENCODING")))
        self.peers.append((method, environ.get("REMOTE_PORT")))
        if method in self.refuse:
            start_response(self.refuse[method], [("Content-Length", "0")])
            return [b""]
        return self.app(environ, start_response)

    def start(self) -> DavServer:
        self.server = wsgi.Server(("127.0.0.1", self.port), self._wsgi, numthreads=4)
        if self.tls:
            from cheroot.ssl.builtin import BuiltinSSLAdapter

            self.server.ssl_adapter = BuiltinSSLAdapter(str(self.tls[0]), str(self.tls[1]))
        self.server.prepare()
        self.thread = threading.Thread(target=self.server.serve, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            if self.thread is not None:
                self.thread.join(timeout=10)
            self.server = None

    def url(self, folder: str = "Invoices", scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}/{folder}"

    def files(self, folder: str = "Invoices") -> list[str]:
        base = self.root / folder
        return sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file())


@pytest.fixture
def dav(tmp_path: Path) -> Iterator[DavServer]:
    root = tmp_path / "dav"
    (root / "Invoices").mkdir(parents=True)
    server = DavServer(root).start()
    yield server
    server.stop()


def target(url: str, **kw: Any) -> dict[str, Any]:
    return {"name": "cloud", "type": "webdav", "url": url, "username": USER, "password": PASSWORD, **kw}


def item(tmp_path: Path, data: bytes, relpath: str, export_id: int = 1) -> ExportItem:
    sha = hashlib.sha256(data).hexdigest()
    path = tmp_path / "store" / f"{sha}.pdf"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    return ExportItem(export_id=export_id, document_id=export_id, path=path, relpath=relpath,
                      content_type="application/pdf", filename=relpath.rpartition("/")[2], sha256=sha,
                      metadata={"document_id": export_id})


def exporter(url: str, **kw: Any) -> WebDAVExporter:
    return WebDAVExporter(ExportConfig.model_validate(target(url, **kw)))


def delivered(gw: Gateway, n: int, name: str = "cloud") -> Callable[[], list[dict[str, Any]]]:
    def check() -> list[dict[str, Any]]:
        rows = [r for r in gw.store.list_exports(target=name) if r["state"] == "delivered"]
        return rows if len(rows) >= n else []
    return check


def test_documents_arrive_in_nested_folders_with_sidecar(gateway_factory: Callable[..., Gateway],
                                                         dav: DavServer) -> None:
    gw = gateway_factory(exports=[target(dav.url(), filename="{received:%Y}/{sender_domain}/{stem}",
                                         sidecar="json")])
    pdfs = {f"invoice-{i}.pdf": unique_pdf(f"dav-{i}") for i in range(2)}
    for name, data in pdfs.items():
        gw.send(make_mail(attachments=[(name, data, "application/pdf")]))
    rows = wait_for(delivered(gw, 2), timeout=20)
    year = dt.date.today().year
    assert dav.files() == sorted([f"{year}/acme.example/invoice-{i}.pdf{s}" for i in range(2) for s in ("", ".json")])
    for name, data in pdfs.items():
        assert (dav.root / "Invoices" / str(year) / "acme.example" / name).read_bytes() == data
    side = json.loads((dav.root / "Invoices" / str(year) / "acme.example" / "invoice-0.pdf.json").read_text())
    assert side["filename"] == "invoice-0.pdf" and side["sha256"] == hashlib.sha256(pdfs["invoice-0.pdf"]).hexdigest()
    assert {r["location"] for r in rows} == {f"{dav.url()}/{year}/acme.example/invoice-{i}.pdf" for i in range(2)}
    puts = [r for r in dav.requests if r[0] == "PUT"]
    assert puts and all(cl is not None and int(cl) > 0 and te is None for _, _, cl, te in puts)  # never chunked
    assert all("/." in path for _, path, _, _ in puts)  # always uploaded under a temporary name, then MOVEd
    assert sum(1 for r in dav.requests if r[0] == "MKCOL") == 2  # each folder level once, then remembered


def test_a_run_keeps_one_connection_for_all_its_documents(tmp_path: Path, gateway_factory: Callable[..., Gateway],
                                                          dav: DavServer) -> None:
    gw = gateway_factory(exports=[target(dav.url(), schedule={"every": "1h"})])
    time.sleep(1.5)  # the hourly job ran once at start, with nothing to do
    for i in range(3):
        gw.send(make_mail(attachments=[(f"k{i}.pdf", unique_pdf(f"keep-alive-{i}"), "application/pdf")]))
    wait_for(lambda: len(gw.store.list_exports(target="cloud")) == 3)
    dav.peers.clear()
    assert gw.service.exports.run(["cloud"])["cloud"] == {"delivered": 3, "failed": 0, "error": 0}
    assert len(dav.files()) == 3
    assert [m for m, _ in dav.peers].count("PUT") == 3 and [m for m, _ in dav.peers].count("MOVE") == 3
    assert len({port for _, port in dav.peers}) == 1  # one kept-alive connection for the run
    # outside a run each delivery has its own connection, closed after it
    dav.peers.clear()
    ex = exporter(dav.url())
    ex.deliver(item(tmp_path, unique_pdf("own-1"), "own-1.pdf", export_id=11))
    ex.deliver(item(tmp_path, unique_pdf("own-2"), "own-2.pdf", export_id=12))
    assert len({port for _, port in dav.peers}) == 2


def test_wrong_password_is_a_permanent_error(workdir: Path, gateway_factory: Callable[..., Gateway],
                                            dav: DavServer) -> None:
    gw = gateway_factory(exports=[target(dav.url(), password="wrong-secret", schedule={"every": "1h"})])
    gw.send(make_mail(attachments=[("a.pdf", unique_pdf("auth"), "application/pdf")]))
    wait_for(lambda: gw.store.list_exports(target="cloud"))
    out = run_cli("--config", str(write_config(workdir, gw.cfg)), "export", "cloud")
    assert out.returncode == 1
    assert b"cloud: document 1 error: authentication failed for" in out.stdout
    assert b"cloud: 0 delivered, 0 to retry, 1 failed" in out.stdout
    (row,) = gw.store.list_exports(target="cloud")
    assert row["state"] == "error"
    assert row["last_error"].startswith(f"authentication failed for {dav.url()}/: check username and app password")
    assert "wrong-secret" not in row["last_error"] and b"wrong-secret" not in out.stdout + out.stderr
    assert dav.files() == []
    # GET /api/exports says that no retry can help
    cloud = next(t for t in gw.api("/api/exports").json()["items"] if t["name"] == "cloud")
    assert cloud["last_error"] == row["last_error"] and cloud["last_error_document"] == row["document_id"]
    assert cloud["last_error_permanent"] is True and cloud["last_error_state"] == "error"
    assert cloud["last_error_attempts"] == 1 and cloud["last_error_next_attempt"] is None
    # not retried: a later run leaves it alone
    gw.service.exports.run(["cloud"], now=utcnow() + dt.timedelta(days=1))
    assert gw.store.list_exports(target="cloud")[0]["attempts"] == 1


def test_credentials_in_the_url_are_used_but_never_shown(tmp_path: Path, dav: DavServer) -> None:
    url = dav.url().replace("http://", f"http://{USER}:{PASSWORD}@")
    ex = WebDAVExporter(ExportConfig.model_validate({"name": "cloud", "type": "webdav", "url": url}))
    location = ex.deliver(item(tmp_path, unique_pdf("url"), "u.pdf"))
    assert location == f"{dav.url()}/u.pdf" and PASSWORD not in location
    assert dav.files() == ["u.pdf"]


def test_missing_base_folder_is_permanent(tmp_path: Path, dav: DavServer) -> None:
    with pytest.raises(ExportError) as err:
        exporter(dav.url("NoSuchFolder")).deliver(item(tmp_path, unique_pdf("x"), "2026/a.pdf"))
    assert not err.value.retryable and "does not exist" in str(err.value)


def test_server_down_is_retried_and_delivered_when_back(workdir: Path,
                                                        gateway_factory: Callable[..., Gateway]) -> None:
    root = workdir / "dav"
    (root / "Invoices").mkdir(parents=True)
    server = DavServer(root)  # not started yet: connections are refused
    gw = gateway_factory(exports=[target(server.url())])
    data = unique_pdf("down")
    gw.send(make_mail(attachments=[("late.pdf", data, "application/pdf")]))
    row = wait_for(lambda: next((r for r in gw.store.list_exports(target="cloud") if r["state"] == "failed"), None))
    assert "cannot connect" in row["last_error"] and row["next_attempt"] > row["created"]
    out = run_cli("--config", str(write_config(workdir, gw.cfg)), "status")
    assert b"cloud document" in out.stdout and b"will retry after 1 attempt(s), next attempt" in out.stdout
    assert b": cannot connect" in out.stdout
    cloud = next(t for t in gw.api("/api/exports").json()["items"] if t["name"] == "cloud")
    assert "cannot connect" in cloud["last_error"] and cloud["last_error_permanent"] is False
    assert cloud["last_error_state"] == "failed" and cloud["last_error_attempts"] == 1
    assert cloud["last_error_next_attempt"] == row["next_attempt"]
    server.start()
    try:
        # the back-off has not passed yet: nothing happens
        assert gw.service.exports.run(["cloud"])["cloud"] == {"delivered": 0, "failed": 0, "error": 0}
        counts = gw.service.exports.run(["cloud"], now=utcnow() + dt.timedelta(hours=1))
        assert counts["cloud"]["delivered"] == 1
        row = gw.store.list_exports(target="cloud")[0]
        assert row["state"] == "delivered" and row["attempts"] == 2
        cloud = next(t for t in gw.api("/api/exports").json()["items"] if t["name"] == "cloud")
        assert cloud["last_error"] is None and cloud["last_error_permanent"] is None and cloud["ok"]
        assert [f for f in server.files()] == [f"{dt.date.today():%Y/%m}/late.pdf"]
    finally:
        server.stop()


def test_large_upload_is_never_visible_half_written(tmp_path: Path, dav: DavServer) -> None:
    data = os.urandom(30 * 1024 * 1024)
    it = item(tmp_path, data, "big/scan.pdf")
    final = dav.root / "Invoices" / "big" / "scan.pdf"
    seen_final: list[int] = []
    seen_tmp: list[int] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            try:
                seen_final.append(final.stat().st_size)
            except FileNotFoundError:
                pass
            if final.parent.exists():
                for p in final.parent.iterdir():
                    if p.name.startswith("."):
                        try:
                            seen_tmp.append(p.stat().st_size)
                        except FileNotFoundError:
                            pass

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        location = exporter(dav.url()).deliver(it)
    finally:
        time.sleep(0.05)
        done.set()
        watcher.join()
    assert location == f"{dav.url()}/big/scan.pdf"
    assert seen_tmp, "the watcher never saw the upload in progress"
    assert seen_final and set(seen_final) == {len(data)}  # whenever the final name existed, it was whole
    assert final.read_bytes() == data
    assert [p.name for p in final.parent.iterdir()] == ["scan.pdf"]


def test_same_name_gets_a_counter_and_same_content_counts_as_delivered(tmp_path: Path, dav: DavServer) -> None:
    ex = exporter(dav.url())
    a = item(tmp_path, unique_pdf("a"), "2026/03/invoice.pdf", export_id=1)
    b = item(tmp_path, unique_pdf("b"), "2026/03/invoice.pdf", export_id=2)
    assert ex.deliver(a).endswith("/2026/03/invoice.pdf")
    assert ex.deliver(b).endswith("/2026/03/invoice%20%282%29.pdf")
    # delivered again (a crash between upload and record): recognised, nothing new appears
    assert ex.deliver(a).endswith("/2026/03/invoice.pdf")
    assert ex.deliver(b).endswith("/2026/03/invoice%20%282%29.pdf")
    assert dav.files() == ["2026/03/invoice (2).pdf", "2026/03/invoice.pdf"]
    assert (dav.root / "Invoices/2026/03/invoice.pdf").read_bytes() == unique_pdf("a")
    assert (dav.root / "Invoices/2026/03/invoice (2).pdf").read_bytes() == unique_pdf("b")


def test_without_move_it_puts_with_if_none_match(tmp_path: Path, dav: DavServer) -> None:
    dav.refuse["MOVE"] = "405 Method Not Allowed"
    ex = exporter(dav.url())
    a = item(tmp_path, unique_pdf("a"), "x/invoice.pdf", export_id=1)
    b = item(tmp_path, unique_pdf("b"), "x/invoice.pdf", export_id=2)
    ex.deliver(a)
    assert ex.deliver(b).endswith("/x/invoice%20%282%29.pdf")
    assert dav.files() == ["x/invoice (2).pdf", "x/invoice.pdf"]  # no temporary file left behind
    assert sum(1 for r in dav.requests if r[0] == "MOVE") == 1  # asked once, then remembered


def test_server_errors_are_retryable(tmp_path: Path, dav: DavServer) -> None:
    dav.refuse["PUT"] = "503 Service Unavailable"
    with pytest.raises(ExportError) as err:
        exporter(dav.url()).deliver(item(tmp_path, unique_pdf("x"), "a.pdf"))
    assert err.value.retryable and "503" in str(err.value)


def test_a_crash_after_upload_does_not_deliver_twice(workdir: Path, gateway_factory: Callable[..., Gateway],
                                                     dav: DavServer) -> None:
    cfg = base_config(workdir, exports=[target(dav.url(), filename="{stem}")])
    first = Gateway(workdir, cfg).start()
    try:
        first.send(make_mail(attachments=[("once.pdf", unique_pdf("once"), "application/pdf")]))
        row = wait_for(delivered(first, 1))[0]
    finally:
        first.stop()
    # as if the process died after the MOVE but before recording it
    with first.store.write() as conn:
        conn.execute("UPDATE exports SET state = 'running', claimed_by = 'host:999999999:0', location = NULL "
                     "WHERE id = ?", (row["id"],))
    second = gateway_factory(exports=cfg["exports"])
    row = wait_for(delivered(second, 1))[0]
    assert row["location"] == f"{dav.url()}/once.pdf" and row["attempts"] == 2
    assert dav.files() == ["once.pdf"]


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], check=True, capture_output=True)
    return cert, key


def test_https_with_ca_file(tmp_path: Path, certificate: tuple[Path, Path]) -> None:
    root = tmp_path / "dav"
    (root / "Invoices").mkdir(parents=True)
    server = DavServer(root, tls=certificate).start()
    try:
        it = item(tmp_path, unique_pdf("tls"), "tls.pdf")
        with pytest.raises(ExportError) as err:
            exporter(server.url(scheme="https")).deliver(it)
        assert not err.value.retryable and "ca_file" in str(err.value)
        assert exporter(server.url(scheme="https"), ca_file=str(certificate[0])).deliver(it).endswith("/tls.pdf")
        assert server.files() == ["tls.pdf"]
    finally:
        server.stop()
