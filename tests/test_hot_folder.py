"""Hot folders: files a scanner drops become documents, once, whole."""

from __future__ import annotations

import email
import email.policy
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import PDF_BYTES, Gateway, unique_pdf, wait_for
from gateway.sources.folder import build_message, start_folder_watchers, wanted


def folder_messages(gw: Gateway, name: str = "scanner") -> list[int]:
    return [m for m in gw.store.message_ids() if gw.store.message(m)["source"] == f"folder:{name}"]


def documents(gw: Gateway) -> list[dict[str, Any]]:
    docs, _ = gw.store.list_documents(limit=100, archived=None)
    return docs


def test_a_slowly_written_pdf_is_imported_once_and_whole(workdir: Path,
                                                         gateway_factory: Callable[..., Gateway]) -> None:
    hot = workdir / "scans"
    gw = gateway_factory(folders=[{"name": "scanner", "path": str(hot), "assign": {"tags": ["scan"]}}])
    data = unique_pdf("slow") + b"%" + os.urandom(200_000).hex().encode() + b"\n%%EOF\n"
    chunks = [data[i:i + len(data) // 10 + 1] for i in range(0, len(data), len(data) // 10 + 1)]
    with open(hot / "Scan 2026-03-01.pdf", "wb") as fh:
        for chunk in chunks:  # ~2 s, with pauses shorter than the settle time
            fh.write(chunk)
            fh.flush()
            time.sleep(0.2)
            assert folder_messages(gw) == []  # nothing taken while it grows
    wait_for(lambda: documents(gw), timeout=15)
    (doc,) = documents(gw)
    assert (gw.settings.data_dir / doc["path"]).read_bytes() == data
    assert doc["filename"] == "Scan 2026-03-01.pdf" and "scan" in doc["tags"]
    (mid,) = folder_messages(gw)
    msg = gw.store.message(mid)
    assert msg["subject"] == "Scan 2026-03-01.pdf" and msg["status"] == "imported"
    assert wait_for(lambda: (hot / "done" / "Scan 2026-03-01.pdf").exists())
    assert not (hot / "Scan 2026-03-01.pdf").exists()
    wait_for(lambda: gw.exported_files())  # and on to the export targets like any mail
    time.sleep(1.5)
    assert len(folder_messages(gw)) == 1


def test_the_same_file_dropped_twice_is_one_document(workdir: Path,
                                                     gateway_factory: Callable[..., Gateway]) -> None:
    hot = workdir / "scans"
    gw = gateway_factory(folders=[{"name": "scanner", "path": str(hot)}])
    hot.mkdir(exist_ok=True)
    data = unique_pdf("twice")
    (hot / "a.pdf").write_bytes(data)
    wait_for(lambda: (hot / "done" / "a.pdf").exists())
    (hot / "copy of a.pdf").write_bytes(data)
    (hot / "a.pdf").write_bytes(data)
    wait_for(lambda: (hot / "done" / "copy of a.pdf").exists() and (hot / "done" / "a (2).pdf").exists())
    wait_for(lambda: documents(gw))
    time.sleep(0.5)
    assert len(folder_messages(gw)) == 1 and len(documents(gw)) == 1


def test_leave_in_place_polls_and_ignores_other_files(workdir: Path,
                                                      gateway_factory: Callable[..., Gateway]) -> None:
    hot = workdir / "inbox"
    hot.mkdir()
    ignored = [".hidden.pdf", "~$draft.pdf", "notes.txt", "scan.pdf.part", "scan.pdf~"]
    for name in ignored:
        (hot / name).write_bytes(PDF_BYTES)
    (hot / "invoice.xml").write_bytes(b"<?xml version='1.0'?>\n<Invoice>incomplete")  # still being written
    (hot / "kept.pdf").write_bytes(unique_pdf("kept"))
    gw = gateway_factory(folders=[{"name": "nas", "path": str(hot), "after_import": "leave", "watch": "poll"}])
    wait_for(lambda: len(folder_messages(gw, "nas")) == 1, timeout=15)
    with open(hot / "invoice.xml", "ab") as fh:
        fh.write(b"</Invoice>\n")
    wait_for(lambda: len(folder_messages(gw, "nas")) == 2, timeout=15)
    time.sleep(3)  # more polls: files left in place are not taken again
    assert len(folder_messages(gw, "nas")) == 2
    assert sorted(p.name for p in hot.iterdir()) == sorted([*ignored, "invoice.xml", "kept.pdf"])
    subjects = sorted(gw.store.message(m)["subject"] for m in folder_messages(gw, "nas"))
    assert subjects == ["invoice.xml", "kept.pdf"]


def test_files_present_before_the_start_are_taken_and_a_restart_takes_nothing_twice(
        workdir: Path, gateway_factory: Callable[..., Gateway]) -> None:
    hot = workdir / "scans"
    hot.mkdir()
    (hot / "early.pdf").write_bytes(unique_pdf("early"))
    cfg = [{"name": "scanner", "path": str(hot), "after_import": "leave"}]
    first = gateway_factory(folders=cfg)
    wait_for(lambda: len(folder_messages(first)) == 1)
    first.service.folder_watchers[0].stop()
    second_watchers = start_folder_watchers(first.service)  # as after a restart
    try:
        time.sleep(2)  # the hash is remembered in the store: nothing taken again
        assert len(folder_messages(first)) == 1
    finally:
        for w in second_watchers:
            w.stop()


def test_the_generated_message() -> None:
    raw = build_message("Office Scanner", "Rechnung März.pdf", PDF_BYTES, "ab" * 32, 1_700_000_000)
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["From"].addresses[0].display_name == "Office Scanner"
    assert msg["Subject"] == "Rechnung März.pdf" and msg["Message-ID"] == f"<{'ab' * 32}@hot-folder.invalid>"
    (part,) = list(msg.iter_attachments())
    assert part.get_filename() == "Rechnung März.pdf" and part.get_content() == PDF_BYTES
    assert part.get_content_type() == "application/pdf"
    assert [wanted(n) for n in ("a.PDF", "b.xml", ".c.pdf", "~$d.pdf", "e.pdf.tmp", "f.txt")] == \
        [True, True, False, False, False, False]
