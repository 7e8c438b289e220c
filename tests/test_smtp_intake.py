"""The spine over a real socket: SMTP in, byte-identical PDF out in the export folder."""

from __future__ import annotations

import smtplib
import subprocess
import time

import pytest

from conftest import Gateway, make_mail, unique_pdf, wait_for


def test_pdf_to_import_address_and_plus_address_is_exported_byte_identical(gateway: Gateway) -> None:
    pdf_a, pdf_b = unique_pdf("a"), unique_pdf("b")
    gateway.send(make_mail(attachments=[("invoice-a.pdf", pdf_a, "application/pdf")]), rcpt=["invoices@localhost"])
    gateway.send(make_mail(attachments=[("invoice-b.pdf", pdf_b, "application/pdf")]),
                 rcpt=["Invoices+ACME@localhost"])
    files = wait_for(lambda: len(gateway.exported_files()) == 2 and gateway.exported_files(), timeout=10)
    contents = {f.name: f.read_bytes() for f in files}
    assert contents == {"invoice-a.pdf": pdf_a, "invoice-b.pdf": pdf_b}
    rows, _ = gateway.store.list_messages()
    by_subject = {r["import_address"]: r for r in rows}
    assert by_subject["invoices+*@localhost"]["tag"] == "acme"
    assert by_subject["invoices@localhost"]["tag"] is None
    plus_doc = gateway.store.documents_of(by_subject["invoices+*@localhost"]["id"])[0]
    assert "forwarded" in plus_doc["tags"]  # the address's assign reaches its documents


def test_other_recipients_are_refused_and_nothing_is_stored(gateway: Gateway) -> None:
    for rcpt in ("someone@gmail.com", "invoices@evil.example", "invoices@localhost.evil.example",
                 "xinvoices@localhost", "postmaster@localhost"):
        with smtplib.SMTP("127.0.0.1", gateway.smtp_port) as s:
            s.ehlo()
            s.mail("spammer@evil.example")
            code, reply = s.rcpt(rcpt)
            assert code == 550 and b"5.1.1" in reply, (rcpt, code, reply)
            code, _ = s.docmd("DATA")
            assert code == 503  # no valid recipient: DATA is refused too
    assert gateway.store.status_counts() == {}
    assert not list((gateway.settings.data_dir / "mail").glob("*/*.eml"))


def test_mail_over_max_message_size_gets_552_and_nothing_stored(gateway: Gateway) -> None:
    big = make_mail(attachments=[("big.pdf", unique_pdf("x") + b"0" * 1_200_000, "application/pdf")])
    with pytest.raises(smtplib.SMTPException) as info:
        gateway.send(big)
    assert "552" in str(info.value)
    assert gateway.store.status_counts() == {}


def test_size_is_advertised(gateway: Gateway) -> None:
    with smtplib.SMTP("127.0.0.1", gateway.smtp_port) as s:
        s.ehlo()
        assert s.has_extn("size") and int(s.esmtp_features["size"]) == 1024 * 1024
        assert s.has_extn("8bitmime") and s.has_extn("smtputf8")


def test_swaks_with_8bit_headers_and_smtputf8_sender(gateway: Gateway, tmp_path: pytest.TempPathFactory) -> None:
    pdf = unique_pdf("swaks")
    att = tmp_path / "Rechnung-März.pdf"  # type: ignore[operator]
    att.write_bytes(pdf)
    result = subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{gateway.smtp_port}", "--to", "invoices@home.example",
         "--from", "büro@müller.example", "--header", "Subject: Rechnung für März",
         "--header", "From: Müller GmbH <büro@müller.example>",
         "--attach-type", "application/pdf", "--attach-name", "Rechnung-März.pdf", "--attach", f"@{att}"],
        capture_output=True, text=True, timeout=60,
    )
    assert "250 2.0.0 OK" in result.stdout, result.stdout + result.stderr
    files = wait_for(gateway.exported_files, timeout=10)
    assert [f.read_bytes() for f in files] == [pdf]
    rows, _ = gateway.store.list_messages()
    assert rows[0]["mail_from"] == "büro@müller.example"
    assert rows[0]["subject"] == "Rechnung für März"
    assert "Müller GmbH" in rows[0]["sender"]


@pytest.mark.parametrize("step", ["write_file", "record"])
def test_internal_failure_answers_451_and_keeps_the_session_usable(gateway: Gateway, step: str) -> None:
    """The disk fails writing the file, or the database recording it: 451, and the next mail goes through."""
    def broken(*a: object, **k: object) -> int:
        raise OSError("disk on fire")

    spool = gateway.service.spool
    setattr(spool, step, broken)
    try:
        with smtplib.SMTP("127.0.0.1", gateway.smtp_port) as s:
            with pytest.raises(smtplib.SMTPDataError) as info:
                s.send_message(make_mail(), to_addrs=["invoices@localhost"])
            assert info.value.smtp_code == 451
    finally:
        delattr(spool, step)
    assert gateway.store.status_counts() == {}
    gateway.send(make_mail(attachments=[("ok.pdf", unique_pdf("ok"), "application/pdf")]))
    wait_for(gateway.exported_files, timeout=10)


def test_too_many_recipients_get_452(gateway: Gateway) -> None:
    with smtplib.SMTP("127.0.0.1", gateway.smtp_port) as s:
        s.ehlo()
        s.mail("a@example.org")
        codes = [s.rcpt(f"invoices+t{i}@localhost")[0] for i in range(105)]
    assert codes[:100] == [250] * 100 and set(codes[100:]) == {452}


def test_stop_under_a_stream_of_connections_leaves_no_socket_open(gateway_factory) -> None:  # type: ignore[no-untyped-def]
    """Stopping while clients keep connecting (port checks, senders) closes every
    connection the server accepted: none is left for the garbage collector to find open."""
    import gc
    import socket
    import sys
    import threading
    import warnings

    unclosed: list[str] = []
    stop = threading.Event()

    def probe(port: int) -> None:
        while not stop.is_set():
            try:
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
            except OSError:
                time.sleep(0.01)

    saved = sys.unraisablehook
    sys.unraisablehook = lambda u: unclosed.append(repr(u.exc_value))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", ResourceWarning)
            for _ in range(5):
                gw = gateway_factory()
                probes = [threading.Thread(target=probe, args=(gw.smtp_port,)) for _ in range(6)]
                for t in probes:
                    t.start()
                time.sleep(0.3)
                gw.stop()
                stop.set()
                for t in probes:
                    t.join()
                stop.clear()
                gc.collect()
    finally:
        sys.unraisablehook = saved
    assert unclosed == []
