"""The webdav target against the servers people run: nginx, Apache, rclone and SabreDAV.

Each is a real private instance on loopback (tests/davservers.py). The first test pins
down where they differ, since the exporter relies on it: nginx refuses MOVE, nginx and
rclone ignore ``If-None-Match: *``, SabreDAV on a full disk answers 201 and keeps
0 bytes, rclone answers 405 to a PUT on a full disk.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from conftest import Gateway, make_mail, unique_pdf, wait_for
from davservers import PASSWORD, USER, Apache, DavServer, Nginx, Rclone, Sabre
from gateway.config import ExportConfig
from gateway.errors import ExportError
from gateway.exporters.base import ExportItem
from gateway.exporters.webdav import WebDAVExporter, _content_length
from gateway.store import utcnow

for _binary, _package in (("nginx", "nginx"), ("apache2", "apache2"), ("rclone", "rclone"), ("php", "php-cli")):
    assert shutil.which(_binary) or Path(f"/usr/sbin/{_binary}").exists(), \
        f"{_binary} is missing: `make test` installs {_package} (deps/debian-test.txt)"
assert Path("/usr/share/php/Sabre/autoload.php").exists(), "SabreDAV is missing: `make test` installs php-sabre-dav"
assert Path("/usr/lib/nginx/modules/ngx_http_dav_ext_module.so").exists(), \
    "nginx's dav-ext module is missing: `make test` installs libnginx-mod-http-dav-ext"

KINDS: dict[str, type[DavServer]] = {"nginx": Nginx, "apache": Apache, "rclone": Rclone, "sabre": Sabre}


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, DavServer]]:
    """One instance of each server for the module; each test writes into folders of its own."""
    started: dict[str, DavServer] = {}
    try:
        for name, kind in KINDS.items():
            started[name] = kind().start()
        yield started
    finally:
        for server in started.values():
            server.stop()


def exporter(url: str, password: str = PASSWORD) -> WebDAVExporter:
    return WebDAVExporter(ExportConfig.model_validate(
        {"name": "cloud", "type": "webdav", "url": url, "username": USER, "password": password}))


def item(tmp_path: Path, data: bytes, relpath: str, export_id: int = 1) -> ExportItem:
    sha = hashlib.sha256(data).hexdigest()
    path = tmp_path / f"{sha}.pdf"
    path.write_bytes(data)
    return ExportItem(export_id=export_id, document_id=export_id, path=path, relpath=relpath,
                      content_type="application/pdf", filename=relpath.rpartition("/")[2], sha256=sha,
                      metadata={"document_id": export_id})


@pytest.mark.parametrize("name", KINDS)
def test_where_the_servers_differ(servers: dict[str, DavServer], name: str) -> None:
    """What each server does with MOVE without overwrite, If-None-Match: * and PROPFIND (docs/exports.md)."""
    server = servers[name]
    url = server.url() + "/differ"
    # (MOVE onto a file with Overwrite: F, PUT with If-None-Match: * onto a file, what the file then holds)
    expected = {"nginx": (405, 204, b"second"), "apache": (412, 412, b"first"),
                "rclone": (412, 201, b"second"), "sabre": (412, 412, b"first")}[name]
    with httpx.Client(auth=(USER, PASSWORD)) as client:
        assert client.request("MKCOL", url + "/").status_code == 201
        assert client.put(url + "/a.pdf", content=b"first").status_code == 201
        assert client.put(url + "/b.pdf", content=b"other").status_code == 201
        move = client.request("MOVE", url + "/b.pdf", headers={"Destination": url + "/a.pdf", "Overwrite": "F"})
        put = client.put(url + "/a.pdf", content=b"second", headers={"If-None-Match": "*"})
        propfind = client.request("PROPFIND", url + "/a.pdf", headers={"Depth": "0"})
    kept = (server.root / "Invoices/differ/a.pdf").read_bytes()
    assert (move.status_code, put.status_code, kept) == expected
    assert propfind.status_code == 207 and _content_length(propfind.content) == len(kept)


@pytest.mark.parametrize("name", KINDS)
def test_a_second_document_of_the_same_name_never_overwrites_the_first(
        servers: dict[str, DavServer], tmp_path: Path, name: str) -> None:
    server = servers[name]
    ex = exporter(server.url())
    first, second = unique_pdf(f"first-{name}"), unique_pdf(f"second-{name}")
    a = item(tmp_path, first, "same/invoice.pdf", export_id=1)
    b = item(tmp_path, second, "same/invoice.pdf", export_id=2)
    assert ex.deliver(a) == f"{server.url()}/same/invoice.pdf"
    assert ex.deliver(b) == f"{server.url()}/same/invoice%20%282%29.pdf"
    # delivered again (a crash before the record): recognised, nothing new, nothing replaced
    assert ex.deliver(a) == f"{server.url()}/same/invoice.pdf"
    assert ex.deliver(b) == f"{server.url()}/same/invoice%20%282%29.pdf"
    assert server.files("Invoices/same") == ["invoice (2).pdf", "invoice.pdf"]
    assert (server.root / "Invoices/same/invoice.pdf").read_bytes() == first
    assert (server.root / "Invoices/same/invoice (2).pdf").read_bytes() == second


@pytest.mark.parametrize("name", KINDS)
def test_an_upload_the_full_server_did_not_keep_is_retried_not_delivered(tmp_path: Path, name: str) -> None:
    """Each server fails differently on a full disk: all are retried, none leaves a short file under the final name.

    SabreDAV answers 201 and keeps 0 bytes (only the size check finds out), rclone 405,
    Apache 507, nginx 500.
    """
    data = unique_pdf(f"full-{name}") + b"%" * 20_000
    it = item(tmp_path, data, "2026/full.pdf")
    tmp = f"2026/.invoice-gateway-1-{it.sha256[:16]}.tmp"
    said = {"sabre": f"kept 0 of the {len(data)} bytes of {tmp} (is its disk full?); the file was removed",
            "rclone": f"405 Method Not Allowed for PUT /Invoices/{tmp} while uploading 2026/full.pdf (as "
                      f"{tmp[5:]}), although the server takes uploads: it may be out of space",
            "apache": "is out of space (507 Insufficient Storage while uploading 2026/full.pdf",
            "nginx": "uploading 2026/full.pdf (as .invoice-gateway-1-"}[name]
    with KINDS[name](full_disk=True) as server:
        ex = exporter(server.url())
        with pytest.raises(ExportError) as err:
            ex.deliver(it)
        assert err.value.retryable and said in str(err.value), str(err.value)
        if name == "nginx":
            assert str(err.value).endswith("failed: 500 Internal Server Error")
        # Nothing under the final name. What the servers leave is theirs and hidden: rclone
        # keeps the empty temporary file although it answers 204 to its DELETE (the next
        # attempt reuses the name), nginx an empty copy of it beside (<name>.0000000002).
        left = server.files()
        assert "2026/full.pdf" not in left
        assert all(f == tmp or (name == "nginx" and f.startswith(tmp + ".")) for f in left), left
        assert all((server.root / "Invoices" / f).stat().st_size == 0 for f in left)
        if name in ("sabre", "apache"):
            assert left == []
        server.make_room()
        assert ex.deliver(it) == f"{server.url()}/2026/full.pdf"
        assert "2026/full.pdf" in server.files() and tmp not in server.files()
        assert (server.root / "Invoices/2026/full.pdf").read_bytes() == data


def test_a_full_rclone_share_is_retried_by_the_gateway(gateway_factory: Callable[..., Gateway]) -> None:
    """The export stays ``failed`` with a back-off (it was ``error`` for good), and is delivered once there is room."""
    with Rclone(full_disk=True) as server:
        gw = gateway_factory(exports=[{"name": "cloud", "type": "webdav", "url": server.url(), "username": USER,
                                       "password": PASSWORD, "filename": "{stem}", "schedule": {"every": "1h"}}])
        data = unique_pdf("gateway-full") + b"%" * 20_000
        gw.send(make_mail(attachments=[("full.pdf", data, "application/pdf")]))
        wait_for(lambda: gw.store.list_exports(target="cloud"))
        assert gw.service.exports.run(["cloud"])["cloud"] == {"delivered": 0, "failed": 1, "error": 0}
        (row,) = gw.store.list_exports(target="cloud")
        assert row["state"] == "failed" and row["next_attempt"] is not None
        assert "it may be out of space" in row["last_error"]
        server.make_room()
        counts = gw.service.exports.run(["cloud"], now=utcnow() + dt.timedelta(hours=1))
        assert counts["cloud"] == {"delivered": 1, "failed": 0, "error": 0}
        assert server.files() == ["full.pdf"] and (server.root / "Invoices/full.pdf").read_bytes() == data


def test_a_403_for_one_file_is_not_blamed_on_the_password(servers: dict[str, DavServer], tmp_path: Path) -> None:
    """Apache's read-only folder (``Require method``) refuses the PUT; reading the folder tells why."""
    server = servers["apache"]
    it = item(tmp_path, unique_pdf("readonly"), "ro.pdf")
    with pytest.raises(ExportError) as err:
        exporter(server.url("readonly")).deliver(it)
    assert not err.value.retryable
    message = str(err.value)
    assert message.startswith("403 Forbidden for PUT /readonly/.invoice-gateway-1-")
    assert ("while uploading ro.pdf (as .invoice-gateway-1-" in message
            and message.endswith(": the server refused this file (a read-only share, a forbidden file name, "
                                 "or an antivirus block); the login itself was accepted"))
    # the same 403 with a wrong password: the folder cannot be read either, so it is the login
    with pytest.raises(ExportError) as err:
        exporter(server.url("readonly"), password="wrong-secret").deliver(it)
    assert not err.value.retryable
    assert str(err.value).startswith(f"authentication failed for {server.url('readonly')}/: check username and "
                                     "app password, and that the account may write there (403 Forbidden for PUT")
    assert "wrong-secret" not in str(err.value)
    assert server.files("readonly") == []


def test_a_redirect_to_https_says_which_url_to_use(servers: dict[str, DavServer], tmp_path: Path) -> None:
    server = servers["apache"]
    with pytest.raises(ExportError) as err:
        exporter(server.url("moved")).deliver(item(tmp_path, unique_pdf("moved"), "2026/moved.pdf"))
    assert not err.value.retryable
    assert str(err.value) == (f"the server redirects to https://127.0.0.1:{server.port}/Invoices: use that URL as "
                              "url (301 Moved Permanently for MKCOL /moved/2026/)")


def test_a_server_that_takes_no_uploads_is_a_permanent_405(servers: dict[str, DavServer], tmp_path: Path) -> None:
    """nginx without ``dav_methods PUT``: 405 to every PUT, so no retry can help (unlike rclone's full disk)."""
    server = servers["nginx"]
    with pytest.raises(ExportError) as err:
        exporter(server.url("readonly")).deliver(item(tmp_path, unique_pdf("no-put"), "no-put.pdf"))
    assert not err.value.retryable
    assert str(err.value).startswith(f"{server.url('readonly')}/ does not take uploads (405 Not Allowed for PUT "
                                     "/readonly/.invoice-gateway-1-")
    assert str(err.value).endswith("a read-only share, or WebDAV without PUT; allow uploads or use another url")
    assert server.files("readonly") == []
