"""A new target can be given the documents that already exist: `export --backfill`, the API and the
button on its page; its filter applies and nothing is sent twice."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from conftest import Gateway, base_config, make_mail, run_cli, unique_pdf, wait_for, write_config
from test_web_pages import Browserless


def test_backfill_a_new_target_by_cli_api_and_page(gateway_factory: Callable[..., Gateway], workdir: Path) -> None:
    first = gateway_factory()
    for i, rcpt in enumerate(("invoices@localhost", "invoices@localhost", "invoices+biz@localhost")):
        first.send(make_mail(subject=f"Invoice {i}", to=rcpt,
                             attachments=[(f"invoice-{i}.pdf", unique_pdf(f"backfill-{i}"), "application/pdf")]),
                   rcpt=[rcpt])
    wait_for(lambda: len(first.exported_files()) == 3, timeout=30)
    first.stop()

    # two targets added later: one takes only forwarded mail, one takes everything
    for d in ("tagged", "all"):
        (workdir / d).mkdir()
    exports = [{"name": "nas", "type": "folder", "path": str(workdir / "exports")},
               {"name": "tagged", "type": "folder", "path": str(workdir / "tagged"), "filter": {"tags": ["forwarded"]}},
               {"name": "all", "type": "folder", "path": str(workdir / "all"), "schedule": {"every": "1d"}}]
    gw = gateway_factory(exports=exports)
    assert not list((workdir / "tagged").rglob("*.pdf"))  # a new target starts empty

    config = write_config(workdir, base_config(workdir, exports=exports))
    r = run_cli("--config", str(config), "export", "--backfill", "tagged")
    assert r.returncode == 0, r.stderr.decode()
    assert "tagged: 1 existing document(s) queued (2 left out by its filter, 0 it already had)" in r.stdout.decode()
    assert [p.name for p in (workdir / "tagged").rglob("*.pdf")] == ["invoice-2.pdf"]
    again = run_cli("--config", str(config), "export", "--backfill", "tagged")
    assert "0 existing document(s) queued (2 left out by its filter, 1 it already had)" in again.stdout.decode()
    assert len(list((workdir / "tagged").rglob("*.pdf"))) == 1  # nothing twice
    future = run_cli("--config", str(config), "export", "--backfill", "all", "--since", "2999-01-01")
    assert "all: 0 existing document(s) queued" in future.stdout.decode()
    bad = run_cli("--config", str(config), "export", "--backfill", "nope")
    assert bad.returncode == 2 and "no export target named 'nope'" in bad.stderr.decode()

    # the API queues; the scheduled target delivers on its schedule, "export" delivers now
    body = gw.api("/api/exports/all/backfill", method="POST", json={"since": "2000-01-01"}).json()
    assert body == {"target": "all", "queued": 3, "left_out": 0, "already": 0}
    assert gw.api("/api/exports/all/backfill", method="POST", json={"since": "yesterday"}).status_code == 400
    assert gw.api("/api/exports/nope/backfill", method="POST").status_code == 404
    run_cli("--config", str(config), "export", "all")
    assert sorted(p.name for p in (workdir / "all").rglob("*.pdf")) == ["invoice-0.pdf", "invoice-1.pdf", "invoice-2.pdf"]

    # the button on the target's page: login and CSRF token needed, says what it did
    browser = Browserless(gw)
    browser.login()
    assert browser.post("/exports/all/backfill", token=False).status_code == 403
    page = browser.post("/exports/all/backfill", {"since": ""}, follow_redirects=True).text
    browser.close()
    assert "0 existing document(s) queued for all (0 left out by its filter, 3 it already had)" in page
