"""WebDAV export speed: 1,000 small documents to WsgiDAV, beside a bare loop of httpx PUTs in the same run.

Run: .venv/bin/python bench/webdav_export.py [--documents 1000] [--size 20000]

Starts WsgiDAV (cheroot, basic auth) on loopback, stores the documents
through the spool and the pipeline (not timed), then times the export runner
delivering them (claim, MKCOL once per folder, PUT to a temporary name, MOVE
with Overwrite: F, record), and a bare loop of PUTs of the same bytes with one
persistent httpx client to the same server, same names and folders; then a
bare loop of PUT to a temporary name + MOVE (the exporter's protocol without
its claims and records). Prints documents per second for each and the ratios.
The server runs in this process: its work shares the interpreter with the client.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from email.message import EmailMessage
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
from cheroot import wsgi  # noqa: E402
from wsgidav.wsgidav_app import WsgiDAVApp  # noqa: E402

from gateway.config import parse_settings  # noqa: E402
from gateway.exporters.runner import ExportRunner  # noqa: E402
from gateway.models import Envelope  # noqa: E402
from gateway.pipeline import Pipeline  # noqa: E402
from gateway.spool import Spool  # noqa: E402
from gateway.store import Store  # noqa: E402

USER, PASSWORD = "bench", "bench-password"


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_dav(root: Path, port: int) -> wsgi.Server:
    """WsgiDAV serving ``root`` with one basic-auth user, in a thread."""
    app = WsgiDAVApp({
        "host": "127.0.0.1", "port": port, "provider_mapping": {"/": str(root)},
        "simple_dc": {"user_mapping": {"*": {USER: {"password": PASSWORD}}}},
        "http_authenticator": {"accept_basic": True, "accept_digest": False, "default_to_digest": False},
        "verbose": 0, "logging": {"enable": False}, "dir_browser": {"enable": False},
    })
    server = wsgi.Server(("127.0.0.1", port), app, numthreads=10)
    server.prepare()
    threading.Thread(target=server.serve, daemon=True).start()
    return server


def pdf(i: int, size: int) -> bytes:
    """A small PDF-looking document, different for each ``i``."""
    body = f"%PDF-1.4\n% bench document {i}\n".encode()
    return body + os.urandom(max(0, size - len(body) - 7)) + b"\n%%EOF\n"


def make_folders(client: httpx.Client, base: str, paths: Iterable[str]) -> None:
    """MKCOL every folder the relative ``paths`` lie in, level by level (not timed)."""
    for folder in sorted({str(Path(rel).parent) for rel in paths}):
        parts = Path(folder).parts
        for n in range(1, len(parts) + 1):
            client.request("MKCOL", base + "/".join(parts[:n]) + "/")


def main() -> None:
    """Run the benchmark and print the figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--documents", type=int, default=1000)
    ap.add_argument("--size", type=int, default=20_000, help="bytes per document")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("wsgidav").setLevel(logging.ERROR)

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        (base / "dav" / "Invoices").mkdir(parents=True)
        (base / "dav" / "bare").mkdir()
        port = free_port()
        server = start_dav(base / "dav", port)
        settings = parse_settings({
            "data_dir": str(base / "data"), "rules_dir": str(base / "rules"),
            "exports": [{"name": "dav", "type": "webdav", "url": f"http://127.0.0.1:{port}/Invoices",
                         "username": USER, "password": PASSWORD,
                         "filename": "{received:%Y/%m}/{sender_domain}/{stem}"}],
        }, base=base)
        store = Store(settings.data_dir)
        spool = Spool(store)
        pipeline = Pipeline(settings, store)
        docs = [pdf(i, args.size) for i in range(args.documents)]

        t0 = time.perf_counter()
        for i, data in enumerate(docs):
            m = EmailMessage()
            m["From"] = f"billing@supplier{i % 20}.example"
            m["To"] = "invoices@localhost"
            m["Subject"] = f"Invoice {i}"
            m["Message-ID"] = f"<bench-{i}@bench.example>"
            m.set_content("Invoice attached.")
            m.add_attachment(data, maintype="application", subtype="pdf", filename=f"invoice-{i:04d}.pdf")
            spool.accept(m.as_bytes(), Envelope(source="import"))
        pipeline.run_pending()
        spool.stop()
        queued = sum(store.export_counts().get("dav", {}).values())
        print(f"setup: {args.documents} documents of {args.size} bytes stored and queued ({queued}) "
              f"in {time.perf_counter() - t0:.1f} s")

        runner = ExportRunner(settings, store)
        t0 = time.perf_counter()
        counts = runner.run(["dav"])["dav"]
        export_s = time.perf_counter() - t0
        files = [p for p in (base / "dav" / "Invoices").rglob("*") if p.is_file()]
        assert counts["delivered"] == args.documents, counts
        assert len(files) == args.documents and not any(p.name.startswith(".") for p in files)
        sample = next(p for p in files if p.name == "invoice-0007.pdf")
        assert hashlib.sha256(sample.read_bytes()).digest() == hashlib.sha256(docs[7]).digest()

        # the bare loop writes the same names into the same folder layout (folders made beforehand, not timed)
        names = {p.name: str(p.relative_to(base / "dav" / "Invoices")) for p in files}
        bare = f"http://127.0.0.1:{port}/bare/"
        with httpx.Client(auth=(USER, PASSWORD), timeout=60) as client:
            make_folders(client, bare, names.values())
            t0 = time.perf_counter()
            for i, data in enumerate(docs):
                r = client.put(bare + names[f"invoice-{i:04d}.pdf"], content=data)
                r.raise_for_status()
            bare_s = time.perf_counter() - t0
            # the same protocol as the exporter without its bookkeeping: PUT to a temporary name, MOVE
            moved = f"http://127.0.0.1:{port}/moved/"
            client.request("MKCOL", moved).raise_for_status()
            make_folders(client, moved, names.values())
            t0 = time.perf_counter()
            for i, data in enumerate(docs):
                rel = names[f"invoice-{i:04d}.pdf"]
                tmp = str(Path(rel).parent / f".tmp-{i}")
                client.put(moved + tmp, content=data).raise_for_status()
                client.request("MOVE", moved + tmp, headers={"Destination": moved + rel, "Overwrite": "F"}
                               ).raise_for_status()
            move_s = time.perf_counter() - t0
        server.stop()

        export_rate = args.documents / export_s
        bare_rate = args.documents / bare_s
        move_rate = args.documents / move_s
        print(f"export runner (webdav): {export_rate:8.1f} documents/s  ({export_s:.2f} s for {args.documents})")
        print(f"bare httpx PUT loop:    {bare_rate:8.1f} documents/s  ({bare_s:.2f} s for {args.documents})")
        print(f"bare PUT + MOVE loop:   {move_rate:8.1f} documents/s  ({move_s:.2f} s for {args.documents})")
        print(f"ratio export / bare:    {export_rate / bare_rate:8.2f}")
        print(f"ratio export / PUT+MOVE:{export_rate / move_rate:8.2f}")


if __name__ == "__main__":
    main()
