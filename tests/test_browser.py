"""The admin page in a real browser (Debian's Chromium through Playwright), at 375 px and 1280 px.

One gateway and one browser for the module; every page's screenshot goes to
test-artifacts/screenshots/NAME-375.png and NAME-1280.png.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT, Gateway, make_mail, wait_for
from test_notify import SECRET, Receivers
from test_web_pages import PASSWORD, FakePoller, invoice_pdf, seed, settle, site_config

import playwright.sync_api as playwright  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
SHOTS = ROOT / "test-artifacts" / "screenshots"
WIDTHS = (375, 1280)

SUPPLIERS = """\
# Utilities, phone and hosting: the company is the sender's name
name: Suppliers
when:
  from: ["@stadtwerke.example", "@tel.example", "@host.example"]
assign:
  company: "{sender_name}"
  document_type: invoice
"""

assert Path(CHROMIUM).exists(), "Debian's chromium is missing: `make test` installs it"


@pytest.fixture(scope="module")
def receivers() -> Iterator[Receivers]:
    """A real HTTP endpoint for the notifications (json://)."""
    r = Receivers().start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, receivers: Receivers) -> Iterator[tuple[Gateway, dict[str, int]]]:
    workdir = tmp_path_factory.mktemp("browser")
    for d in ("data", "rules", "exports"):
        (workdir / d).mkdir()
    cfg = site_config(workdir)
    cfg["notify"] = {"urls": [{"url": receivers.json}], "check_every": "1h"}
    (workdir / "rules" / "suppliers.yaml").write_text(SUPPLIERS, encoding="utf-8")
    cfg["mailboxes"] = [
        {"name": "gmail", "provider": "gmail", "host": "127.0.0.1", "port": 1, "username": "john@example.test",
         "password": "x", "folders": ["INBOX", "Invoices"], "schedule": {"every": "1h", "between": "08:00-18:00"}},
        {"name": "office", "host": "127.0.0.1", "port": 1, "username": "jane@example.test", "password": "x"}]
    gw = Gateway(workdir, cfg)
    svc = gw.service
    svc._start_mailboxes = lambda: svc.pollers.update(  # type: ignore[method-assign]
        {"gmail": FakePoller(svc.store, "gmail")})
    svc.store.set_mailbox_status("office", last_poll="2026-01-01T10:00:00+00:00", last_error=(
        "Login to imap.office.example failed: the server refused the password"), error_kind="auth",
        hint="Microsoft 365 needs an app password, or OAuth2, when security defaults are on.",
        failures=3, next_attempt="2026-01-01T11:00:00+00:00", stats={"errors": 3})
    gw.start()
    try:
        ids = seed(gw)
        for i, (company, domain) in enumerate((("Stadtwerke", "stadtwerke.example"), ("Telecom", "tel.example"),
                                               ("Telecom", "tel.example"), ("Hosting GmbH", "host.example"))):
            gw.send(make_mail(sender=f"{company} <billing@{domain}>", subject=f"Rechnung {i + 100}",
                              attachments=[(f"rechnung-{i + 100}.pdf", invoice_pdf(company), "application/pdf")]),
                    sender=f"billing@{domain}")
        xml = (ROOT / "tests" / "data" / "einvoice" / "cii-xrechnung.xml").read_bytes()
        gw.send(make_mail(sender="Muster GmbH <rechnung@muster.example>", subject="Rechnung IG-2024-0042",
                          attachments=[("IG-2024-0042.xml", xml, "application/xml")]), sender="rechnung@muster.example")
        settle(gw, 9)
        yield gw, ids
    finally:
        gw.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


class Page:
    """A browser page on the gateway that records dialogs and console errors, and takes screenshots."""

    def __init__(self, context: Any, base: str) -> None:
        self.base = base
        self.page = context.new_page()
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.page.on("dialog", self._dialog)
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.accept()

    def goto(self, path: str) -> Any:
        return self.page.goto(self.base + path)

    def images_drawn(self, selector: str) -> None:
        """Wait until every image matching ``selector`` has loaded (polled here: the CSP forbids eval)."""
        script = "els => els.every(i => i.complete && i.naturalWidth > 0)"
        wait_for(lambda: self.page.locator(selector).evaluate_all(script), timeout=20)

    def shoot(self, name: str) -> None:
        """Screenshots at both widths; the page must not scroll sideways at either."""
        SHOTS.mkdir(parents=True, exist_ok=True)
        for width in WIDTHS:
            self.page.set_viewport_size({"width": width, "height": 860})
            self.page.mouse.wheel(0, 20000)  # lazy images load before the full-page picture
            self.images_drawn("img")
            self.page.mouse.wheel(0, -20000)
            overflow = self.page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 1, f"{name} scrolls sideways at {width} px by {overflow} px"
            self.page.screenshot(path=str(SHOTS / f"{name}-{width}.png"), full_page=True)
        self.page.set_viewport_size({"width": 1280, "height": 860})


@pytest.fixture(scope="module")
def context(browser: Any, site: tuple[Gateway, dict[str, int]]) -> Iterator[Any]:
    """A logged-in browser context (logged in through the form)."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 860})
    p = Page(ctx, f"http://127.0.0.1:{site[0].web_port}")
    p.goto("/login")
    p.page.fill("input[name=password]", PASSWORD)
    p.page.click("button[type=submit]")
    p.page.wait_for_url(p.base + "/")
    p.page.close()
    yield ctx
    ctx.close()


@pytest.fixture
def page(context: Any, site: tuple[Gateway, dict[str, int]]) -> Iterator[Page]:
    p = Page(context, f"http://127.0.0.1:{site[0].web_port}")
    yield p
    assert p.errors == [], p.errors  # no script errors, no blocked (foreign or inline) resources
    assert p.dialogs == [] or all("?" in d for d in p.dialogs), p.dialogs  # only our confirmations
    p.page.close()


def test_log_in(browser: Any, site: tuple[Gateway, dict[str, int]]) -> None:
    ctx = browser.new_context()
    p = Page(ctx, f"http://127.0.0.1:{site[0].web_port}")
    p.goto("/messages")
    assert p.page.url.startswith(p.base + "/login?next=/messages")
    p.shoot("login")
    p.page.fill("input[name=password]", "wrong")
    p.page.click("button[type=submit]")
    assert p.page.locator(".flash-error").inner_text() == "Wrong password."
    assert p.errors == ["Failed to load resource: the server responded with a status of 401 (UNAUTHORIZED)"]
    p.errors.clear()
    p.page.fill("input[name=password]", PASSWORD)
    p.page.click("button[type=submit]")
    p.page.wait_for_url(p.base + "/messages")
    cookie = next(c for c in ctx.cookies() if c["name"] == "gateway_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    p.page.click("text=Log out")
    p.page.wait_for_url(p.base + "/login")
    assert p.errors == []
    ctx.close()


def test_dashboard_and_its_chart(page: Page, site: tuple[Gateway, dict[str, int]]) -> None:
    page.goto("/")
    chart = page.page.locator("#chart-months svg")
    assert chart.is_visible() and chart.locator("rect.bar").count() == 12
    assert chart.bounding_box()["width"] > 250
    companies = page.page.locator("#chart-companies svg")
    assert "Telecom" in companies.inner_html() and companies.locator("rect.bar").count() >= 4
    assert page.page.locator(".stat").count() == 7
    assert page.page.locator(".stat", has_text="suspicious").is_visible()
    assert "4 rule(s) in force" in page.page.inner_text("main")
    assert page.page.locator(".stat .num").first.inner_text() == "9"  # received today
    page.shoot("dashboard")
    page.page.set_viewport_size({"width": 375, "height": 860})
    assert page.page.locator("#chart-months svg").bounding_box()["width"] > 250  # readable on a phone too
    for tile in page.page.locator(".stat").all():  # every count on the screen, none cut off
        box = tile.bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 375


def test_message_and_its_explanation(page: Page, site: tuple[Gateway, dict[str, int]]) -> None:
    gw, ids = site
    page.goto("/messages")
    page.shoot("messages")
    page.page.click("text=Invoice 1001 for March")
    page.page.wait_for_url(f"{page.base}/messages/{ids['acme']}")
    explain = page.page.locator("ol.explain li.match")
    assert "Acme invoices" in explain.inner_text() and "@acme.example" in explain.inner_text()
    assert "from: billing@acme.example" in page.page.inner_text("#rule-yaml")
    page.shoot("message")
    # the hostile mail: its script is text on the page, and nothing runs
    page.goto(f"/messages/{ids['hostile']}")
    assert "<script>alert(1)</script>" in page.page.inner_text("h1")
    assert page.dialogs == []
    page.shoot("message-hostile")
    page.goto(f"/messages/{ids['unmatched']}")
    page.shoot("message-unmatched")
    page.goto("/messages?status=unmatched")
    assert page.page.locator("table.stack tbody tr").count() == 1


def test_rule_tester_with_an_uploaded_eml(page: Page, site: tuple[Gateway, dict[str, int]]) -> None:
    page.goto("/rules")
    page.shoot("rules")
    page.goto("/rules/file/acme.yaml")
    page.shoot("rule-file")
    page.goto("/rules/test")
    eml = make_mail(sender="Billing <billing@acme.example>", subject="Invoice 2002").as_bytes()
    page.page.set_input_files("input[name=eml]", files=[
        {"name": "invoice-2002.eml", "mimeType": "message/rfc822", "buffer": eml}])
    page.page.click("form.tester button[type=submit]")
    result = page.page.locator("#result")
    result.wait_for()
    assert "Acme invoices decides" in " ".join(result.inner_text().split())
    assert "uploaded file invoice-2002.eml" in result.inner_text()
    page.shoot("rules-test")


def test_approve_a_document(page: Page, site: tuple[Gateway, dict[str, int]]) -> None:
    gw, ids = site
    doc = gw.store.documents_of(ids["acme"])[0]
    page.goto("/documents?view=cards")
    page.images_drawn(".doc-card img")  # pypdfium2 renders each on its first request
    page.shoot("documents")
    page.page.click("text=acme-1001.pdf")
    page.page.wait_for_url(f"{page.base}/documents/{doc['id']}")
    assert "waiting for approval" in page.page.inner_text("main")
    page.images_drawn(".preview-img")
    page.page.click("button:has-text('Approve')")  # script: POST /api/documents/<id>/approve with the CSRF header
    page.page.locator("text=Withdraw approval").wait_for()
    assert gw.store.document(doc["id"])["approved_at"] is not None
    page.shoot("document")


def test_an_einvoice_document(page: Page, site: tuple[Gateway, dict[str, int]]) -> None:
    gw, _ = site
    docs, _ = gw.store.list_documents(limit=50)
    rendered = next(d for d in docs if d["origin"] == "einvoice-render")
    xml = next(d for d in docs if d["kind"] == "xml")
    page.goto(f"/documents/{rendered['id']}")
    page.images_drawn(".preview-img")
    text = page.page.inner_text("main")
    assert "Muster Bürobedarf GmbH" in text and "238.00 EUR" in text and "IG-2024-0042" in text
    page.shoot("document-einvoice")
    page.goto(f"/documents/{xml['id']}")
    page.images_drawn(".preview-img")  # the XML placeholder
    assert "E-invoice" in page.page.inner_text("main")


def test_the_suppliers_page(page: Page, site: tuple[Gateway, dict[str, int]]) -> None:
    page.goto("/suppliers")
    page.page.click("table.suppliers a:has-text('Muster Bürobedarf GmbH')")
    page.page.wait_for_url(page.base + "/suppliers/*")
    text = page.page.inner_text("main")
    assert "Muster Bürobedarf GmbH" in page.page.inner_text("h1") and "DE123456789" in text and "238.00 EUR" in text
    page.shoot("supplier")
    page.goto("/suppliers")
    page.shoot("suppliers")


def test_run_an_export(page: Page, site: tuple[Gateway, dict[str, int]]) -> None:
    gw, ids = site
    doc = gw.store.documents_of(ids["acme"])[0]
    if gw.store.document(doc["id"])["approved_at"] is None:  # when run alone
        gw.store.update_document(doc["id"], approved_at="2026-01-01T00:00:00+00:00")
    wait_for(lambda: gw.store.export_counts().get("broken", {}).get("failed"), timeout=15)
    page.goto("/exports")
    page.shoot("exports")
    page.goto("/exports/accounting")
    assert not list((gw.workdir / "approved").rglob("*.pdf"))
    page.page.click("button:has-text('Run now')")  # script: POST /api/exports/accounting/run, waits, reloads
    wait_for(lambda: list((gw.workdir / "approved").rglob("*.pdf")), timeout=15)
    page.page.locator("text=Last run now").wait_for(timeout=15000)
    assert "1 delivered" in page.page.inner_text("main")
    page.shoot("export")
    page.goto("/exports/broken?state=failed")
    page.shoot("export-failed")


def test_mailboxes_and_fetch_now(page: Page, site: tuple[Gateway, dict[str, int]]) -> None:
    gw, _ = site
    page.goto("/mailboxes")
    assert "app password" in page.page.inner_text("main")
    page.page.locator("section.card", has_text="gmail").locator("button:has-text('Fetch now')").click()
    wait_for(lambda: gw.service.pollers["gmail"].calls >= 1)
    page.page.locator("section.card", has_text="gmail").locator("text=ok").wait_for()
    page.shoot("mailboxes")
    page.goto("/mailboxes/office")
    page.shoot("mailbox")


def test_health_banner_on_every_page(page: Page, site: tuple[Gateway, dict[str, int]]) -> None:
    # the "office" mailbox failed three polls in a row (seeded): every page says so, with a link
    for path in ("/", "/documents", "/rules"):
        page.goto(path)
        banner = page.page.locator("#health-banner")
        assert banner.is_visible() and "Mailbox office keeps failing" in banner.inner_text()
        assert "app password" in banner.inner_text()  # the hint, not only the error
    page.goto("/")
    assert page.page.locator(".pill.ok").count() == 0  # not "All parts running" while something needs you
    assert "need you" in page.page.locator(".page-head .pill").inner_text()
    page.shoot("banner")
    page.page.click("#health-banner a:has-text('Mailbox office')")
    page.page.wait_for_url(page.base + "/mailboxes/office")


def test_notification_test_button(page: Page, site: tuple[Gateway, dict[str, int]], receivers: Receivers) -> None:
    page.goto("/notifications")
    text = page.page.inner_text("main")
    assert "json://hook:" in text and SECRET not in page.page.content()  # the URL without its password
    before = len(receivers.posts)
    page.page.click("#notify-test")
    page.page.wait_for_url(page.base + "/notifications")
    assert "sent" in page.page.locator(".flash-ok").inner_text()
    assert len(receivers.posts) == before + 1 and "test notification" in receivers.posts[-1]["title"]
    page.shoot("notifications")


# -- issue 15: the mail itself, the e-invoice pair, bulk approve -----------------------------------------


def test_message_body_view_runs_and_loads_nothing(page: Page, site: tuple[Gateway, dict[str, int]]) -> None:
    from test_web_pages import REMOTE_HTML

    gw, _ = site
    before = sum(gw.store.status_counts().values())
    gw.send(make_mail(sender="Shop <news@shop2.example>", subject="Your order INV-77",
                      body="Your invoice INV-77 is attached. " + "A long line without spaces: " + "x" * 300,
                      html=REMOTE_HTML), sender="news@shop2.example")
    settle(gw, before + 1)
    mid = gw.store.list_messages(limit=1)[0][0]["id"]
    requests: list[str] = []
    page.page.on("request", lambda r: requests.append(r.url))
    page.goto(f"/messages/{mid}")
    view = page.page.locator("#mail-html")
    assert "Your invoice INV-77 is attached." in view.inner_text() and "Total 99.00 EUR" in view.inner_text()
    assert view.locator("img, script, iframe, svg, a, link, style").count() == 0
    assert page.page.locator("#ignore-yaml").is_visible()  # not an invoice: "make an ignore rule" beside the import rule
    page.page.click("#mail-text summary")
    assert "A long line without spaces" in page.page.inner_text("#mail-text")
    page.shoot("message-body")
    page.page.set_viewport_size({"width": 375, "height": 860})
    for box in ("#rule-yaml", "#ignore-yaml", "#mail-html", "#mail-text pre"):  # inside the screen on a phone
        b = page.page.locator(box).bounding_box()
        assert b and b["x"] >= 0 and b["x"] + b["width"] <= 375, box
    foreign = [u for u in requests if not u.startswith(page.base + "/")]
    assert foreign == [] and page.dialogs == []  # nothing loaded from outside, nothing ran


def test_an_einvoice_and_its_readable_pdf_are_one_document_pair(page: Page,
                                                               site: tuple[Gateway, dict[str, int]]) -> None:
    gw, _ = site
    docs, _ = gw.store.list_documents(limit=100)
    rendered = next(d for d in docs if d["origin"] == "einvoice-render")
    xml = next(d for d in docs if d["kind"] == "xml")
    page.goto("/documents?view=cards")
    card = page.page.locator(f"li.doc-card[data-id='{rendered['id']}']")
    assert card.locator(".einvoice-mark").inner_text().lower() == "e-invoice"
    assert card.locator(f"a[href='/documents/{xml['id']}/file']").inner_text() == xml["filename"]
    assert page.page.locator(f"li.doc-card[data-id='{xml['id']}']").count() == 0  # one card for the pair
    mark = card.locator(".einvoice-mark").evaluate("e => getComputedStyle(e).backgroundColor")
    assert mark != page.page.locator(".tag").first.evaluate("e => getComputedStyle(e).backgroundColor")
    card.scroll_into_view_if_needed()
    page.shoot("documents-pair")
    page.goto(f"/documents/{xml['id']}")  # the XML's page previews the readable PDF and offers both files
    pair = page.page.locator("#einvoice-pair")
    assert pair.is_visible() and pair.locator("a[download]").count() == 2
    assert page.page.locator(".preview-img").get_attribute("src") == f"/documents/{rendered['id']}/preview.png"
    page.images_drawn(".preview-img")
    page.shoot("document-pair")


def test_the_documents_list_sorts_when_a_header_is_clicked(page: Page) -> None:
    page.goto("/documents")
    suppliers = page.page.locator("#doc-list tbody td.supplier a")
    assert suppliers.count() >= 5

    def names() -> list[str]:
        return [n for n in suppliers.all_inner_texts() if n != "(no supplier)"]

    page.page.click("#doc-list th a[data-sort=supplier]")
    page.page.wait_for_url("**sort=supplier&order=asc")
    assert page.page.get_attribute("#doc-list th[aria-sort]", "aria-sort") == "ascending"
    assert names() == sorted(names(), key=str.lower) and len(set(names())) >= 4
    page.page.click("#doc-list th a[data-sort=supplier]")  # the other way round
    page.page.wait_for_url("**sort=supplier&order=desc")
    assert names() == sorted(names(), key=str.lower, reverse=True)
    page.shoot("documents-list")


def test_bulk_approve_from_the_list(page: Page, site: tuple[Gateway, dict[str, int]]) -> None:
    gw, _ = site
    before = sum(gw.store.status_counts().values())
    for n in (501, 502):
        gw.send(make_mail(subject=f"Invoice {n}", attachments=[
            (f"acme-{n}.pdf", invoice_pdf(f"ACME {n}"), "application/pdf")]))
    settle(gw, before + 2)
    new = [d for d in gw.store.list_documents(limit=2)[0]]
    assert sorted(d["filename"] for d in new) == ["acme-501.pdf", "acme-502.pdf"]
    wait_for(lambda: all(any(e["target"] == "accounting" for e in gw.store.exports_of(d["id"])) for d in new))
    page.goto("/documents?view=cards")
    assert "waiting for approval" in page.page.inner_text("main")
    for d in new:
        page.page.check(f"li.doc-card[data-id='{d['id']}'] input[name=ids]")
    page.shoot("documents-bulk")
    page.page.click("#approve-selected")
    page.page.locator(".flash-ok").wait_for()
    assert "Approved 2 document(s)" in page.page.inner_text(".flash-ok")
    assert all(gw.store.document(d["id"])["approved_at"] for d in new)
    assert page.page.locator(f"li.doc-card[data-id='{new[0]['id']}'] input[name=ids]").count() == 0


def test_a_draft_rule_in_its_place_among_the_rules_in_force(page: Page, site: tuple[Gateway, dict[str, int]]) -> None:
    _, ids = site
    page.goto(f"/rules/test?message={ids['acme']}")
    page.page.click("summary:has-text('Try a draft rule')")
    page.page.fill("textarea[name=draft]", "name: All of Acme\nwhen:\n  from: \"@acme.example\"\naction: ignore\n")
    page.page.fill("input[name=draft_file]", "zz-later.yaml")
    page.page.click("form.tester button[type=submit]")
    verdict = page.page.locator("#verdict")
    verdict.wait_for()
    assert " ".join(verdict.inner_text().split()) == "The rule in force Acme invoices decides: import (the attachments)"
    assert "The draft was not reached" in page.page.inner_text("#draft-place")
    page.shoot("rules-test-draft")



def test_pick_the_invoice_number_on_the_preview(page: Page, site: tuple[Gateway, dict[str, int]]) -> None:
    from test_preview import LINES, NUMBER, born_digital_invoice

    gw, _ = site
    before = sum(gw.store.status_counts().values())
    # its number by a label the generic reader does not know: the person picks it on the preview
    lines = tuple((x, y, size, "Beleg-Kennung:" if text == "Rechnungsnummer:" else text) for x, y, size, text in LINES)
    gw.send(make_mail(subject="Invoice from Brunnen", attachments=[
        ("brunnen.pdf", born_digital_invoice(lines), "application/pdf")]))
    settle(gw, before + 1)
    doc = next(d for d in gw.store.list_documents(limit=5)[0] if d["filename"] == "brunnen.pdf")
    assert gw.api(f"/api/documents/{doc['id']}").json()["fields"]["invoice_number"] is None
    page.goto(f"/documents/{doc['id']}")
    page.images_drawn(".preview-img")
    date = page.page.locator("svg.highlights rect[data-field='issue_date'] title")
    assert date.text_content() == "Issue date: text · Rechnungsdatum"  # the fields found are boxed
    word = page.page.locator("#page-view .word", has_text=NUMBER)
    word.wait_for(state="attached")
    page.page.focus("#field-invoice_number")
    word.click()
    assert page.page.input_value("#field-invoice_number") == NUMBER
    page.shoot("document-pick")
    page.page.click(".fields-form button[type=submit]")
    page.page.locator(".flash-ok").wait_for()
    api = gw.api(f"/api/documents/{doc['id']}").json()
    assert api["invoice_number"] == NUMBER and api["fields"]["invoice_number"] == NUMBER
    assert api["field_sources"]["invoice_number"]["source"] == "person"
