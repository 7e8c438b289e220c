"""Every real-world mail of ../shared/corpus goes through `import`: no crash, every one accounted for."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from conftest import CORPUS, base_config, run_cli, write_config

pytestmark = pytest.mark.corpus

EMAILS = sorted(p for p in (CORPUS / "emails").rglob("*") if p.is_file())


def _features() -> dict[str, str]:
    lines = (CORPUS / "emails_FEATURES.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return {line.split("\t")[0]: line.split("\t")[1] for line in lines if "\t" in line}


def test_corpus_is_there() -> None:
    assert len(EMAILS) == 299, f"expected the 299 corpus mails in {CORPUS}"


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, object]]]:
    work = tmp_path_factory.mktemp("corpus")
    for d in ("data", "rules", "exports"):
        (work / d).mkdir()
    # attachments only: turning 250 mails without attachments into PDFs is the renderer's test
    cfg = base_config(work, unmatched={"import": "attachments"})
    config = write_config(work, cfg)
    result = run_cli("--config", str(config), "-q", "import", "--json", *map(str, EMAILS), timeout=600)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    rows = [json.loads(line) for line in result.stdout.decode().splitlines() if line.startswith("{")]
    return work, {r["file"]: r for r in rows}


def test_every_corpus_mail_ends_with_a_status_and_a_reason(imported: tuple[Path, dict[str, dict[str, object]]]) -> None:
    _, rows = imported
    assert set(rows) == {str(p) for p in EMAILS}
    counts = Counter(str(r["status"]) for r in rows.values())
    print("corpus by status:", dict(sorted(counts.items())))
    assert set(counts) <= {"imported", "unmatched", "quarantined", "duplicate"}
    for name, r in rows.items():
        assert r["reason"], f"{name} has no reason"
    assert counts["imported"] >= 14
    # the only mail that is not a MIME message at all is an Outlook .msg file
    quarantined = [n for n, r in rows.items() if r["status"] == "quarantined"]
    assert len(quarantined) <= 3, quarantined


def test_pdf_attachments_of_the_corpus_are_found(imported: tuple[Path, dict[str, dict[str, object]]]) -> None:
    work, rows = imported
    from gateway.store import Store

    store = Store(work / "data")
    features = _features()
    with_pdf = [k for k, v in features.items() if "pdf-attachment" in v]
    assert len(with_pdf) == 18
    found = 0
    for rel in with_pdf:
        row = rows[str(CORPUS / rel)]
        mid = int(row["id"])  # type: ignore[arg-type]
        if row["status"] == "duplicate":  # the LF and CRLF copies of one mail are one message
            mid = int(store.message(mid)["duplicate_of"])
            row = next(r for r in rows.values() if r["id"] == mid)
        docs = store.documents_of(mid)
        pdfs = [d for d in docs if d["kind"] == "pdf"]
        if pdfs:
            found += 1
            for d in pdfs:
                assert (work / "data" / d["path"]).read_bytes()[:1024].find(b"%PDF-") >= 0
        else:
            # a truncated fixture: the mail says PDF but carries no PDF bytes; the reason says so
            assert "declared a PDF but its bytes are not a PDF" in str(row["reason"]), (rel, row)
    print(f"{found} of {len(with_pdf)} corpus mails with PDF attachments yielded PDF documents")
    assert found >= 15


def test_outlook_msg_file_is_quarantined_with_a_helpful_reason(imported: tuple[Path, dict[str, dict[str, object]]]) -> None:
    _, rows = imported
    row = rows[str(CORPUS / "emails/spamscope-mail-parser/mail_outlook_1")]
    assert row["status"] == "quarantined"
    assert "Outlook" in str(row["reason"])
