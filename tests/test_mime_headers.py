"""Headers read as mail clients read them, in bounded time and memory; deep trees keep what is beside them.

The bombs go through a running gateway: `serve` with its worker processes,
SMTP in, the API, the message page and the rule tester out, and the peak
memory of the worker and of serve is measured (VmHWM, reset before each
measurement), not only the outcome.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil

from conftest import API_TOKEN, Gateway, base_config, unique_pdf, wait_for, wait_port, write_config
from gateway import mime, mimeheaders
from test_export_email import Inbox, smtp_server  # noqa: F401  (a fixture: the real aiosmtpd receiver)
from test_render import pdf_text

MB = 1024 * 1024
#: What one hostile mail may add to the peak memory of a worker or of serve.
MEMORY_BOUND = 100 * MB


def header_bomb(size: int = MB) -> bytes:
    """A mail whose X-Note header is ``size`` bytes of RFC 2047 encoded words (quadratic for policy.default)."""
    line = b" ".join([b"=?utf-8?q?a?="] * 70)
    lines = [line] * (size // (len(line) + 3) + 1)
    return (b"From: Billing <billing@acme.example>\r\nTo: invoices@localhost\r\nSubject: header bomb\r\n"
            b"X-Note: " + b"\r\n ".join(lines) + b"\r\n\r\nSee the note.\r\n")


def address_bomb(count: int = 20_000) -> bytes:
    """A mail to ``count`` addresses in one To field (379 KB for 20,000)."""
    to = b",\r\n ".join(b"Person %d <person%d@example.com>" % (i, i) for i in range(count))
    return (b"From: Billing <billing@acme.example>\r\nTo: invoices@localhost,\r\n " + to
            + b"\r\nSubject: address bomb\r\n\r\nMany readers.\r\n")


def pdf_part(name: str, data: bytes) -> bytes:
    return (f"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
            f"Content-Disposition: attachment; filename={name}\r\n\r\n").encode() + base64.encodebytes(data)


def deep_rfc822(levels: int) -> bytes:
    """message/rfc822 parts nested ``levels`` deep."""
    return (b"Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n" * levels
            + b"Content-Type: text/plain\r\n\r\ninnermost\r\n")


def deep_multipart(levels: int) -> bytes:
    """multipart/mixed parts nested ``levels`` deep (3,000 boundaries)."""
    return b"".join(b'Content-Type: multipart/mixed; boundary="L%d"\r\n\r\n--L%d\r\n' % (i, i)
                    for i in range(levels)) + b"Content-Type: text/plain\r\n\r\ninnermost\r\n"


def beside(bomb: bytes, pdf: bytes) -> bytes:
    """A mail with a legitimate PDF and ``bomb`` side by side at the top level."""
    return (b"From: billing@acme.example\r\nTo: invoices@localhost\r\nSubject: Invoice 77\r\n"
            b"Content-Type: multipart/mixed; boundary=TOP\r\n\r\n--TOP\r\n" + bomb + b"\r\n--TOP\r\n"
            + pdf_part("invoice-77.pdf", pdf) + b"--TOP--\r\n")


# -- parsing: bounds, depth, decoding -------------------------------------------------------------


def test_a_header_bomb_is_cut_in_linear_time_and_the_cut_is_a_limit() -> None:
    import tracemalloc

    for raw in (header_bomb(), address_bomb()):
        tracemalloc.start()
        started = time.monotonic()
        parsed = mime.parse(raw)
        elapsed = time.monotonic() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert elapsed < 2.0 and peak < 40 * MB, (elapsed, peak)
        assert mime.limit_defects(parsed)
    parsed = mime.parse(header_bomb())
    assert "more than 65536 characters in a X-Note header; the rest was not read" in parsed.defects
    note = dict(parsed.headers)["X-Note"]
    assert set(note) == {"a"} and len(note) <= mimeheaders.MAX_HEADER_CHARS  # decoded, words joined
    parsed = mime.parse(address_bomb())
    assert len(parsed.to) == mimeheaders.MAX_ADDRESSES
    assert parsed.to[1].name == "Person 0" and parsed.to[1].addr == "person0@example.com"
    assert "more than 1000 addresses in To; only the first 1000 were read" in parsed.defects


def test_nesting_deeper_than_the_bound_keeps_the_pdf_beside_it() -> None:
    pdf = unique_pdf("beside the deep tree")
    for bomb in (deep_rfc822(3000), deep_multipart(3000)):
        parsed = mime.parse(beside(bomb, pdf))
        assert [(a.filename, a.data) for a in parsed.attachments] == [("invoice-77.pdf", pdf)]
        assert "MIME nesting deeper than 20; deeper parts were not read" in mime.limit_defects(parsed)
    # a higher limit is honoured up to what the parser can open
    parsed = mime.parse(beside(deep_rfc822(3000), pdf), max_depth=100_000)
    assert [a.filename for a in parsed.attachments] == ["invoice-77.pdf"]
    assert f"MIME nesting deeper than {mime.MAX_PARSED_DEPTH}; deeper parts were not read" in parsed.defects


def test_an_unquoted_boundary_with_equals_signs_is_read_whole() -> None:
    parsed = mime.parse(outlook_mail())
    assert parsed.text.strip() == "The invoice text, not MIME."
    assert parsed.html is not None and "The invoice in HTML" in parsed.html


def test_adjacent_encoded_words_join_and_raw_8bit_headers_decode_like_mail_clients() -> None:
    raw = ("From: =?utf-8?Q?J=C3=B6rg_?= =?utf-8?Q?M=C3=BCller?= <joerg@supplier.example>\r\n"
           "To: =?utf-8?q?M=C3=BCller=2C_J=C3=B6rg?= <a@b.example>, =?utf-8?b?5byg?= =?utf-8?b?5LiJ?= <z@b.example>\r\n"
           "Subject: =?utf-8?q?Rechnung_f=C3=BC?= =?utf-8?q?r_M=C3=A4rz?=\r\n\r\nhi").encode()
    parsed = mime.parse(raw)
    assert str(parsed.sender) == "Jörg Müller <joerg@supplier.example>"
    assert [(a.name, a.addr) for a in parsed.to] == [("Müller, Jörg", "a@b.example"), ("张三", "z@b.example")]
    assert parsed.subject == "Rechnung für März"
    # raw 8-bit: UTF-8 when valid, else the charset the message declares, else cp1252; the same in every header
    gb = "发票 张三".encode("gb2312")
    declared = (b"From: " + gb + b" <z@b.example>\r\nSubject: " + gb + b"\r\nX-Note: " + gb
                + b"\r\nContent-Type: text/plain; charset=gb2312\r\n\r\n" + gb)
    parsed = mime.parse(declared)
    assert parsed.subject == "发票 张三" and parsed.sender is not None and parsed.sender.name == "发票 张三"
    assert dict(parsed.headers)["X-Note"] == "发票 张三" and parsed.text == "发票 张三"
    big5 = "發票".encode("big5")
    parsed = mime.parse(b"Subject: " + big5 + b"\r\nContent-Type: text/plain; charset=big5\r\n\r\nx")
    assert parsed.subject == "發票"
    parsed = mime.parse("Subject: Grüße €\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\nx".encode())
    assert parsed.subject == "Grüße €"  # valid UTF-8 wins over the declared charset
    parsed = mime.parse("From: Jörg <j@b.example>\r\nSubject: Grüße €\r\n\r\nx".encode("cp1252"))
    assert parsed.subject == "Grüße €" and parsed.sender is not None and parsed.sender.name == "Jörg"


def test_no_control_characters_come_out_of_a_header() -> None:
    raw = (b"From: =?utf-8?q?Evil=0D=0ABcc:_x@evil.example?= <e@evil.example>\r\n"
           b"Subject: =?utf-8?q?Invoice=0D=0ABcc:_victim@example.com=00?=\r\n\r\nhi")
    parsed = mime.parse(raw)
    assert parsed.subject == "Invoice  Bcc: victim@example.com"
    assert parsed.sender is not None and parsed.sender.name == "Evil Bcc: x@evil.example"
    assert all(not re.search(r"[\x00-\x1f]", v) for _, v in parsed.headers)


def test_imap_envelope_subjects_decode_the_same_way_in_linear_time() -> None:
    """The IMAP scan reads the server's envelope before downloading: a 1 MB subject took the stdlib 20 s."""
    from gateway.sources.imap.scan import decode_words

    started = time.monotonic()
    subject = decode_words(" ".join(["=?utf-8?q?a?="] * 75_000).encode())
    assert time.monotonic() - started < 1.0 and set(subject) == {"a"}
    assert decode_words("=?utf-8?Q?J=C3=B6rg_?= =?utf-8?Q?M=C3=BCller?=") == "Jörg Müller"
    assert decode_words("=?utf-8?q?Invoice=0D=0ABcc:_x?=") == "Invoice  Bcc: x"


def outlook_mail() -> bytes:
    """Outlook Express's unquoted boundary with '=' in it, around a text and an HTML part."""
    b = "----=_NextPart_000_0003_3D3227F9.133740DF"
    return (f"From: billing@acme.example\r\nTo: invoices@localhost\r\nSubject: Invoice 12\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: multipart/alternative; boundary={b}\r\n\r\nThis is a multi-part message in MIME format.\r\n"
            f"--{b}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + base64.encodebytes(b"The invoice text, not MIME.\r\n").decode()
            + f"--{b}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + base64.encodebytes(b"<p>The invoice in HTML: 42.00 EUR</p>").decode() + f"--{b}--\r\n").encode()


def remote_images_mail() -> bytes:
    """An HTML part of remote images only, beside a text part that holds the content."""
    html = '<html><body><a href="https://shop.example/"><img src="https://shop.example/banner.png" alt=""></a>' \
           '<img src="https://shop.example/invoice.png" width="600"></body></html>'
    return ("From: billing@acme.example\r\nTo: invoices@localhost\r\nSubject: Your receipt\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/alternative; boundary=ALT\r\n\r\n--ALT\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            "Receipt 5531: total 19.99 EUR, paid by card.\r\n--ALT\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
            f"{html}\r\n--ALT--\r\n").encode()


# -- through a running gateway ----------------------------------------------------------------------


def test_rules_and_the_api_read_decoded_headers(gateway_factory: Callable[..., Gateway], workdir: Path) -> None:
    (workdir / "rules" / "suppliers.yaml").write_text(
        'name: Joerg\nwhen: {from: "Jörg Müller"}\nassign: {company: Müller}\n---\n'
        "name: Chinese invoices\nwhen: {subject: 发票}\nassign: {company: Zhang}\n", encoding="utf-8")
    gw = gateway_factory(trust={"check_senders": False})
    pdf, pdf2 = unique_pdf("joerg"), unique_pdf("zhang")
    snail = (b"From: =?utf-8?Q?J=C3=B6rg_?= =?utf-8?Q?M=C3=BCller?= <joerg@supplier.example>\r\n"
             b"To: invoices@localhost\r\nSubject: Rechnung\r\nMIME-Version: 1.0\r\n"
             b"Content-Type: multipart/mixed; boundary=S\r\n\r\n--S\r\n" + pdf_part("r.pdf", pdf) + b"--S--\r\n")
    gb = "发票 3".encode("gb2312")
    chinese = (b"From: " + "张三".encode("gb2312") + b" <zhang@supplier.example>\r\nTo: invoices@localhost\r\n"
               b"Subject: " + gb + b"\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=S\r\n\r\n"
               b"--S\r\nContent-Type: text/plain; charset=gb2312\r\n\r\n" + gb + b"\r\n--S\r\n"
               + pdf_part("f.pdf", pdf2) + b"--S--\r\n")
    gw.send(snail, sender="joerg@supplier.example")
    gw.send(chinese, sender="zhang@supplier.example")
    rows = wait_for(lambda: [r for r in gw.store.list_messages(limit=10)[0] if r["status"] != "received"] or None
                    if len(gw.store.list_messages(limit=10, status="imported")[0]) == 2 else None, timeout=30)
    by_subject = {r["subject"]: r for r in rows}
    assert set(by_subject) == {"Rechnung", "发票 3"}
    assert json.loads(by_subject["Rechnung"]["decision"])["rule"] == "Joerg"
    assert by_subject["Rechnung"]["sender"] == "Jörg Müller <joerg@supplier.example>"
    assert json.loads(by_subject["发票 3"]["decision"])["rule"] == "Chinese invoices"
    api = gw.api(f"/api/messages/{by_subject['发票 3']['id']}").json()
    headers = dict(api["headers"])
    assert headers["Subject"] == "发票 3" and headers["From"] == "张三 <zhang@supplier.example>"
    assert api["subject"] == "发票 3"


def test_a_deep_tree_beside_a_pdf_imports_the_pdf_with_the_warning(gateway_factory: Callable[..., Gateway]) -> None:
    gw = gateway_factory(trust={"check_senders": False})
    pdfs = [unique_pdf("beside rfc822"), unique_pdf("beside multipart")]
    for pdf, bomb in zip(pdfs, (deep_rfc822(3000), deep_multipart(3000))):
        gw.send(beside(bomb, pdf))
    wait_for(lambda: len(gw.exported_files()) == 2, timeout=30)
    assert sorted(p.read_bytes() for p in gw.exported_files()) == sorted(pdfs)
    rows = gw.store.list_messages(limit=10)[0]
    assert [r["status"] for r in rows] == ["imported", "imported"]
    for r in rows:
        assert "[limits: MIME nesting deeper than 20; deeper parts were not read]" in r["reason"]


def test_bodies_render_the_text_a_mail_client_shows(gateway_factory: Callable[..., Gateway], workdir: Path,
                                                     tmp_path: Path) -> None:
    gw = gateway_factory(trust={"check_senders": False})
    gw.send(outlook_mail())
    gw.send(remote_images_mail())
    wait_for(lambda: len(gw.exported_files()) == 2, timeout=60)
    texts = {p.name: pdf_text(p.read_bytes(), tmp_path) for p in gw.exported_files()}
    outlook = next(t for t in texts.values() if "Invoice 12" in t)
    # the boundary was read whole: the HTML part is rendered, and no raw MIME or base64 shows
    assert "The invoice in HTML: 42.00 EUR" in outlook
    assert "NextPart" not in outlook and "Content-Transfer-Encoding" not in outlook
    receipt = next(t for t in texts.values() if "Your receipt" in t)
    assert "Receipt 5531: total 19.99 EUR, paid by card." in receipt  # the text part, as the HTML shows nothing


def test_a_subject_with_line_breaks_adds_no_line_to_the_exported_mail(
        gateway_factory: Callable[..., Gateway], smtp_server: tuple[Inbox, int]) -> None:  # noqa: F811
    inbox, port = smtp_server
    gw = gateway_factory(trust={"check_senders": False}, exports=[{
        "name": "accounting", "type": "email", "to": "inbox@accounting.example", "sender": "gateway@home.example",
        "subject": "Beleg {subject}",
        "smtp": {"host": "127.0.0.1", "port": port, "security": "none"}}])
    pdf = unique_pdf("crlf")
    raw = (b"From: billing@acme.example\r\nTo: invoices@localhost\r\n"
           b"Subject: =?utf-8?q?Invoice_5=0D=0ABcc:_thief@evil.example=0D=0A=0D=0Asee_below?=\r\n"
           b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=S\r\n\r\n--S\r\n"
           + pdf_part("i.pdf", pdf) + b"--S--\r\n")
    gw.send(raw)
    wait_for(lambda: inbox.mails, timeout=30)
    env, msg = inbox.mails[0]
    assert env.rcpt_tos == ["inbox@accounting.example"] and msg["Bcc"] is None
    assert "\n" not in str(msg["Subject"]) and str(msg["Subject"]).startswith("Beleg Invoice 5")
    body = msg.get_body(("plain",)).get_content()
    assert not any(line.startswith("Bcc:") for line in body.splitlines()), body
    [line] = [line for line in body.splitlines() if line.startswith("Subject:")]
    assert line.split() == ["Subject:", "Invoice", "5", "Bcc:", "thief@evil.example", "see", "below"]


def test_the_exported_text_part_is_safe_for_subjects_stored_before() -> None:
    """A subject stored with line breaks (before they were removed at parsing) is still flattened."""
    from gateway.exporters.email import EmailExporter

    body = EmailExporter.body(_Item(), {"subject": "Invoice\r\nBcc: x@evil.example", "note": "a\nb"}, {})
    assert "Subject: Invoice  Bcc: x@evil.example" in body.splitlines() and "a b" in body.splitlines()


class _Item:
    filename = "i.pdf"
    sha256 = "0" * 64


# -- the bombs against `serve` with its worker processes -----------------------------------------


def _status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"{key} not in /proc/{pid}/status")


class Peak:
    """Peak memory of one process over a stretch: VmHWM reset at the start (clear_refs 5), VmRSS before."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        self.before = _status(pid, "VmRSS")

    def added(self) -> int:
        return _status(self.pid, "VmHWM") - self.before


def _login(base: str) -> httpx.Client:
    client = httpx.Client(base_url=base, timeout=60)
    m = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text)
    assert m
    r = client.post("/login", data={"csrf_token": m.group(1), "password": "admin-secret", "next": "/"})
    assert r.status_code in (302, 303), r.text
    return client


def test_header_and_address_bombs_cost_the_worker_and_serve_little(workdir: Path) -> None:
    cfg = base_config(workdir, limits={"worker_processes": True, "workers": 1}, trust={"check_senders": False},
                      unmatched={"smtp": "keep"})
    cfg["smtp"]["max_message_size"] = "4MB"
    config = write_config(workdir, cfg)
    port = int(cfg["smtp"]["listen"].rsplit(":", 1)[1])
    web = f"http://127.0.0.1:{cfg['web']['listen'].rsplit(':', 1)[1]}"
    with open(workdir / "serve.log", "ab") as log:
        serve = subprocess.Popen([sys.executable, "-m", "gateway", "--config", str(config), "serve"],
                                 stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    clients: list[httpx.Client] = []
    try:
        wait_port(port)
        wait_port(int(cfg["web"]["listen"].rsplit(":", 1)[1]))
        api = httpx.Client(base_url=web, headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=60)
        page = _login(web)
        clients.extend((api, page))

        def send(raw: bytes) -> int:
            import smtplib

            before = {m["id"] for m in api.get("/api/messages").json()["items"]}
            with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
                s.sendmail("billing@acme.example", ["invoices@localhost"], raw)
            return int(wait_for(lambda: next((m["id"] for m in api.get("/api/messages").json()["items"]
                                              if m["id"] not in before), None), timeout=30))

        def processed(mid: int) -> dict[str, Any]:
            return dict(wait_for(lambda: (m := api.get(f"/api/messages/{mid}").json())["status"] != "received"
                                 and m, timeout=60, interval=0.1))

        def read_everywhere(mid: int) -> float:
            """Seconds for the API, the message page and the rule tester on one message."""
            started = time.monotonic()
            assert api.get(f"/api/messages/{mid}").status_code == 200
            assert page.get(f"/messages/{mid}").status_code == 200
            assert api.post(f"/api/rules/test?message={mid}").status_code == 200
            return time.monotonic() - started

        warm = send(header_bomb(4096))  # a small one: imports, templates and caches are loaded
        processed(warm)
        read_everywhere(warm)
        worker = next(p for p in psutil.Process(serve.pid).children()
                      if any("gateway.workers" in part for part in p.cmdline()))
        for raw, cut in ((header_bomb(), "more than 65536 characters in a X-Note header"),
                         (address_bomb(), "more than 1000 addresses in To; only the first 1000 were read")):
            in_worker = Peak(worker.pid)
            started = time.monotonic()
            mid = send(raw)
            row = processed(mid)
            took = time.monotonic() - started
            worker_added = in_worker.added()
            in_serve = Peak(serve.pid)
            reading = read_everywhere(mid)
            serve_added = in_serve.added()
            print(f"{cut[:40]}: processed in {took:.2f} s, worker +{worker_added / MB:.1f} MB; "
                  f"API + page + rule tester in {reading:.2f} s, serve +{serve_added / MB:.1f} MB")
            assert row["status"] == "unmatched" and cut in row["reason"], row
            assert worker_added < MEMORY_BOUND and serve_added < MEMORY_BOUND
            assert took < 10 and reading < 10
    finally:
        for client in clients:
            client.close()
        os.killpg(serve.pid, signal.SIGKILL)  # its own process group: serve and its workers, nothing else
        serve.wait()
