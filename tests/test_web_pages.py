"""The admin pages over a real socket: content, hostile mail shown as text, no foreign URLs, form actions."""

from __future__ import annotations

import datetime as dt
import email.policy
import html
import html.parser
import io
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import markupsafe
import pytest
import yaml

from conftest import Gateway, base_config, make_mail, unique_pdf, wait_for
from test_trust_hold import SUPPLIER
from test_trust_hold import invoice as trust_invoice
from test_trust_hold import start as start_trust
from test_trust_senderauth import key  # noqa: F401  (a fixture)

PASSWORD = "admin-secret"
XSS = '<script>alert(1)</script><img src=x onerror=alert(1)>'
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"

RULES = """\
name: Acme invoices
when:
  from: "@acme.example"
assign:
  company: ACME Corp
  document_type: invoice
  tags: [business]
---
name: Newsletters are never invoices
when: {subject: "*newsletter*"}
action: ignore
"""
HOSTILE_RULES = """\
name: "<script>alert('rule')</script>"
when:
  from: "@evil.example"
assign:
  company: "<img src=x onerror=alert(2)>"
  tags: ["<b>bold</b>"]
"""


# -- helpers shared by the web tests -------------------------------------------------------


def invoice_pdf(title: str, lines: tuple[str, ...] = ("Total: 119.00 EUR",)) -> bytes:
    """A one-page PDF with real content (drawn with Pillow), so previews have something to show."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", (595, 842), "white")
    draw = ImageDraw.Draw(img)
    big, small = ImageFont.truetype(FONT, 34), ImageFont.truetype(FONT, 16)
    draw.rectangle((0, 0, 595, 90), fill=(36, 87, 197))
    draw.text((40, 26), title, fill="white", font=big)
    for i, line in enumerate(("Invoice", *lines)):
        draw.text((40, 140 + 30 * i), line, fill="black", font=small)
    for i in range(8):
        draw.line((40, 300 + 40 * i, 555, 300 + 40 * i), fill=(200, 205, 215), width=2)
    out = io.BytesIO()
    img.save(out, format="PDF", resolution=72.0)
    return out.getvalue()


class Browserless:
    """An httpx client that logs in like a browser: cookies, CSRF token from the page."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.base = f"http://127.0.0.1:{gw.web_port}"
        self.http = httpx.Client(base_url=self.base, timeout=30, follow_redirects=False)

    def csrf(self, path: str = "/") -> str:
        page = self.http.get(path).text
        m = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert m, f"no CSRF token on {path}"
        return m.group(1)

    def login(self, password: str = PASSWORD) -> httpx.Response:
        token = self.csrf("/login")
        return self.http.post("/login", data={"csrf_token": token, "password": password, "next": "/"})

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.get(path, **kw)

    def post(self, path: str, data: dict[str, Any] | None = None, *, token: bool = True, **kw: Any) -> httpx.Response:
        form = dict(data or {})
        if token:
            form["csrf_token"] = self.csrf()
        return self.http.post(path, data=form, **kw)

    def api_post(self, path: str, **kw: Any) -> httpx.Response:
        headers = {"X-CSRF-Token": self.csrf(), **kw.pop("headers", {})}
        return self.http.post(path, headers=headers, **kw)

    def close(self) -> None:
        self.http.close()


def settle(gw: Gateway, messages: int, timeout: float = 30) -> None:
    """Wait until ``messages`` messages are stored and none waits for processing."""
    def done() -> bool:
        counts = gw.store.status_counts()
        return sum(counts.values()) >= messages and not counts.get("received")

    wait_for(done, timeout=timeout)


def site_config(workdir: Path, **overrides: Any) -> dict[str, Any]:
    """A gateway with three targets (at once; approval + daily; broken) and the Acme rules."""
    (workdir / "rules" / "acme.yaml").write_text(RULES, encoding="utf-8")
    (workdir / "rules" / "hostile.yaml").write_text(HOSTILE_RULES, encoding="utf-8")
    (workdir / "not-a-folder").write_text("a file where the broken target wants a folder\n", encoding="utf-8")
    for d in ("exports", "approved"):
        (workdir / d).mkdir(exist_ok=True)
    cfg = base_config(workdir, **overrides)
    cfg["exports"] = [
        {"name": "nas", "type": "folder", "path": str(workdir / "exports")},
        {"name": "accounting", "type": "folder", "path": str(workdir / "approved"), "require_approval": True,
         "schedule": {"every": "1d"}, "filter": {"document_types": ["invoice"]}},
        {"name": "broken", "type": "folder", "path": str(workdir / "not-a-folder" / "sub"),
         "filter": {"companies": ["ACME*"]}},
    ]
    cfg["unmatched"] = {"smtp": "recognize", "imap": "recognize"}
    return cfg


def hostile_mail() -> bytes:
    """A mail whose sender name, subject, body and file name carry HTML and script."""
    msg = make_mail(sender=f'"{XSS}" <bad@evil.example>', subject=f"Invoice 7 {XSS}",
                    body=f"Body {XSS} <a href=\"javascript:alert(3)\">click</a>",
                    html=f"<p>{XSS}</p>",
                    attachments=[(f"{XSS} & 'Q1'.pdf", unique_pdf("hostile"), "application/pdf")])
    return msg.as_bytes(policy=email.policy.SMTP)


def seed(gw: Gateway) -> dict[str, int]:
    """The mails of the site: an Acme invoice, a hostile one, an unmatched one, a newsletter."""
    gw.send(make_mail(subject="Invoice 1001 for March", attachments=[
        ("acme-1001.pdf", invoice_pdf("ACME Corp"), "application/pdf")]))
    gw.send(hostile_mail(), sender="bad@evil.example")
    gw.send(make_mail(sender="Someone <someone@other.example>", subject="Hello there", body="no invoice here"),
            sender="someone@other.example")
    gw.send(make_mail(sender="news@shop.example", subject="Our newsletter", body="sale"), sender="news@shop.example")
    settle(gw, 4)
    rows, _ = gw.store.list_messages(limit=10)
    by = {r["subject"]: r["id"] for r in rows}
    return {"acme": by["Invoice 1001 for March"], "hostile": next(v for k, v in by.items() if k.startswith("Invoice 7")),
            "unmatched": by["Hello there"], "newsletter": by["Our newsletter"]}


# -- the site: one gateway for the read-mostly tests of this module -----------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, dict[str, int]]]:
    workdir = tmp_path_factory.mktemp("site")
    for d in ("data", "rules", "exports"):
        (workdir / d).mkdir()
    cfg = site_config(workdir)
    cfg["mailboxes"] = [{"name": "evil", "host": "127.0.0.1", "port": 1, "username": "x@example.test",
                         "password": "x", "folders": ["INBOX", f"{XSS} & 'Q1'"]}]
    gw = Gateway(workdir, cfg)
    svc = gw.service
    svc._start_mailboxes = lambda: None  # type: ignore[method-assign]  # its state is written below, not polled
    svc.store.set_mailbox_status("evil", last_poll="2026-01-01T10:00:00+00:00", last_error=f"LOGIN said {XSS}",
                                 error_kind="auth", hint=f"hint {XSS}", failures=1, stats={})
    svc.store.record_folder_poll("evil", f"{XSS} & 'Q1'", at=dt.datetime(2026, 1, 1, 10, tzinfo=dt.timezone.utc),
                                 stats={}, error=f"folder said {XSS}", error_kind="folder_missing")
    svc.store.count_poll_error("evil", "auth")
    gw.start()
    try:
        ids = seed(gw)
        yield gw, ids
    finally:
        gw.stop()


@pytest.fixture
def client(site: tuple[Gateway, dict[str, int]]) -> Iterator[Browserless]:
    c = Browserless(site[0])
    assert c.login().status_code == 302
    yield c
    c.close()


def page_paths(gw: Gateway, ids: dict[str, int]) -> list[str]:
    """Every page of the admin, with details of the seeded messages and their documents."""
    docs = [d["id"] for i in ids.values() for d in gw.store.documents_of(i)]
    suppliers = [s["id"] for s in gw.service.pipeline.suppliers.list()]
    return ["/", "/messages", "/messages?status=unmatched&q=Hello", "/documents", "/documents?company=ACME",
            "/suppliers", *(f"/suppliers/{s}" for s in suppliers),
            "/mailboxes", "/rules", "/rules/test", "/exports", "/exports/nas", "/exports/broken?state=failed",
            "/rules/file/acme.yaml", "/rules/file/hostile.yaml",
            *(f"/messages/{i}" for i in ids.values()), *(f"/rules/test?message={i}" for i in ids.values()),
            *(f"/documents/{d}" for d in docs), *(f"/mailboxes/{m.name}" for m in gw.settings.mailboxes)]


class _Scan(html.parser.HTMLParser):
    """Collects script tags, event-handler attributes and every URL-bearing attribute."""

    URL_ATTRS = {"src", "href", "action", "formaction", "srcset", "poster", "data", "background", "xlink:href"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.scripts: list[dict[str, str | None]] = []
        self.handlers: list[tuple[str, str]] = []
        self.urls: list[str] = []
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "script":
            self.scripts.append(a)
        if tag == "style":
            self._in_style = True
        for name, value in attrs:
            if name.startswith("on"):
                self.handlers.append((tag, name))
            if name in self.URL_ATTRS and value is not None:
                self.urls.extend(u.strip().split(" ")[0] for u in value.split(",")) if name == "srcset" \
                    else self.urls.append(value)
            if name == "style" and value:
                self.styles.append(value)

    def handle_endtag(self, tag: str) -> None:
        if tag == "style":
            self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.styles.append(data)


def scan(text: str) -> _Scan:
    s = _Scan()
    s.feed(text)
    return s


# -- tests --------------------------------------------------------------------------------------


def test_hostile_mail_is_shown_as_text_on_every_page(site: tuple[Gateway, dict[str, int]], client: Browserless) -> None:
    gw, ids = site
    hostile_doc = gw.store.documents_of(ids["hostile"])[0]
    assert hostile_doc["company"] == "<img src=x onerror=alert(2)>"  # the rule assigned it, unescaped in the store
    # the pipeline keeps & and ' in a file name (it replaces < > " with _)
    assert hostile_doc["filename"].endswith(" & 'Q1'.pdf") and "<" not in hostile_doc["filename"]

    def every_page(name: str) -> int:
        """Check every page; how many show the document's name ``name``, escaped."""
        escaped_name = str(markupsafe.escape(name))
        seen_escaped = shown = 0
        for path in page_paths(gw, ids):
            r = client.get(path)
            assert r.status_code == 200, (path, r.status_code)
            text = r.text
            assert "<script>alert" not in text and "<img src=x" not in text and "<b>bold" not in text, path
            assert "javascript:" not in text.replace("javascript:alert(3)", ""), path
            assert "& 'Q1'" not in text, path  # file name and folder name: never raw
            s = scan(text)
            assert s.handlers == [], (path, s.handlers)
            assert all(sc.get("src", "").startswith("/static/") for sc in s.scripts), (path, s.scripts)
            assert not any(u.lower().startswith("javascript:") for u in s.urls), path
            seen_escaped += "&lt;script&gt;alert(1)&lt;/script&gt;" in text
            shown += escaped_name in text
        assert seen_escaped >= 6
        return shown

    doc_pages = {f"/messages/{ids['hostile']}", f"/documents/{hostile_doc['id']}", "/documents"}
    assert every_page(hostile_doc["filename"]) >= len(doc_pages)
    for path in doc_pages:
        assert "_ &amp; &#39;Q1&#39;.pdf" in client.get(path).text, path
    # a name with raw markup in the store (older versions, a future import path): escaped all the same
    raw_name = f"{XSS} & \"Q1\".pdf"
    with gw.store.write() as conn:
        conn.execute("UPDATE documents SET filename = ? WHERE id = ?", (raw_name, hostile_doc["id"]))
    try:
        assert every_page(raw_name) >= len(doc_pages)
        for path in doc_pages:
            assert "&lt;img src=x onerror=alert(1)&gt; &amp; &#34;Q1&#34;.pdf" in client.get(path).text, path
    finally:
        with gw.store.write() as conn:
            conn.execute("UPDATE documents SET filename = ? WHERE id = ?", (hostile_doc["filename"], hostile_doc["id"]))
    # a mailbox whose error, hint and folder carry markup
    box = client.get("/mailboxes/evil").text
    assert "LOGIN said &lt;script&gt;alert(1)&lt;/script&gt;" in box and "hint &lt;script&gt;" in box
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt; &amp; &#39;Q1&#39;" in box
    assert "folder said &lt;script&gt;" in box
    assert "LOGIN said &lt;script&gt;" in client.get("/mailboxes").text
    # the hostile subject, sender, file name and rule are there, as text
    detail = client.get(f"/messages/{ids['hostile']}").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in detail
    assert "&lt;script&gt;alert(&#39;rule&#39;)&lt;/script&gt;" in detail
    assert str(markupsafe.escape(hostile_doc["filename"])) in detail
    assert "&lt;img src=x onerror=alert(2)&gt;" in client.get(f"/documents/{hostile_doc['id']}").text
    # the JSON API returns the text as data; JSON is never rendered as HTML
    r = client.get(f"/api/messages/{ids['hostile']}")
    assert r.headers["content-type"] == "application/json" and r.json()["subject"].endswith(XSS)
    # the dashboard's chart escapes the company name inside its SVG (label and tooltip)
    chart = re.search(r'id="chart-companies">(.*?)</div>', client.get("/").text, re.S)
    assert chart and "<title>&lt;img src=x onerror=alert(2)&gt;: 1</title>" in chart.group(1)


def test_pages_load_nothing_from_another_host(site: tuple[Gateway, dict[str, int]], client: Browserless) -> None:
    gw, ids = site
    base = client.base
    origin = urlsplit(base).netloc
    css_urls: list[str] = []
    checked = 0
    pages = [*page_paths(gw, ids), "/login"]
    stylesheets: set[str] = set()
    for path in pages:
        r = client.get(path) if path != "/login" else httpx.get(base + path)
        assert r.status_code == 200, path
        csp = r.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp
        s = scan(r.text)
        for url in s.urls:
            full = urlsplit(urljoin(base + path, url))
            assert full.scheme in ("http", "") and full.netloc == origin, (path, url)
            checked += 1
            if full.path.endswith(".css"):
                stylesheets.add(full.path + ("?" + full.query if full.query else ""))
        css_urls += [u for style in s.styles for u in re.findall(r"url\(([^)]*)\)", style)]
        assert not re.search(r"@import|https?://(?!www\.w3\.org/2000/svg)", " ".join(s.styles)), path
    assert stylesheets, "no stylesheet found"
    for sheet in stylesheets:
        r = client.get(sheet)
        assert r.status_code == 200 and "text/css" in r.headers["content-type"]
        assert "@import" not in r.text and not re.search(r"https?://|//[a-z]", r.text)
        css_urls += re.findall(r"url\(([^)]*)\)", r.text)
    js = client.get("/static/app.js").text
    assert not re.search(r"https?://", js)
    for u in css_urls:
        u = u.strip("'\" ")
        assert u.startswith(("data:", "/")) and not u.startswith("//"), u
    assert checked > 100


def test_dashboard_counts_chart_activity_and_health(site: tuple[Gateway, dict[str, int]], client: Browserless) -> None:
    gw, _ = site
    r = client.get("/")
    assert r.status_code == 200
    text = r.text
    # received today / this month / imported / unmatched / quarantined / export failures
    stats = dict((lbl, int(num)) for num, lbl in re.findall(
        r'<span class="num">(\d+)</span><span class="lbl">([^<]+)</span>', text))
    counts = gw.store.status_counts()
    assert stats["received today"] == 4 and stats["received this month"] == 4
    assert stats["imported"] == counts["imported"] and stats["unmatched"] == 1
    assert stats["quarantined"] == 0
    wait_for(lambda: gw.store.export_counts().get("broken", {}).get("failed"), timeout=15)
    stats = dict((lbl, int(num)) for num, lbl in re.findall(
        r'<span class="num">(\d+)</span><span class="lbl">([^<]+)</span>', client.get("/").text))
    assert stats["export failures"] >= 1
    # two charts drawn by the server: 12 months, top companies
    months = re.search(r'id="chart-months">(.*?)</div>', text, re.S)
    assert months and months.group(1).count('class="bar"') == 12
    assert ">2<" in months.group(1) or ">3<" in months.group(1)  # this month's bar is labelled with its count
    companies = re.search(r'id="chart-companies">(.*?)</div>', text, re.S)
    assert companies and "ACME Corp" in companies.group(1)
    # recent activity and health of targets and rules
    assert "Invoice 1001 for March" in text and "Hello there" in text
    for target in ("nas", "accounting", "broken"):
        assert f'href="/exports/{target}"' in text
    assert "2 rule(s) in force" not in text and "3 rule(s) in force" in text
    status = client.get("/api/status").json()
    assert status["counts"]["received_today"] == 4 and len(status["months"]) == 12
    assert status["companies"][0]["company"] in ("ACME Corp", "<img src=x onerror=alert(2)>")
    assert {t["name"] for t in status["targets"]} == {"nas", "accounting", "broken"}


def test_message_list_filters_and_detail_with_explanation(site: tuple[Gateway, dict[str, int]],
                                                          client: Browserless) -> None:
    gw, ids = site
    listing = client.get("/messages?status=unmatched").text
    assert "Hello there" in listing and "Invoice 1001" not in listing
    assert "Invoice 1001" in client.get("/messages?sender=acme.example").text
    assert "Hello there" not in client.get("/messages?sender=acme.example").text
    assert "Our newsletter" in client.get("/messages?q=newsletter").text
    assert "Invoice 1001" in client.get("/messages?source=smtp").text
    assert "No messages" in client.get("/messages?since=2999-01-01").text
    assert "Invoice 1001" in client.get("/messages?until=2999-01-01").text
    assert client.get("/messages?since=yesterday").status_code == 400
    detail = client.get(f"/messages/{ids['acme']}").text
    assert "by rule <strong>Acme invoices</strong>" in detail
    assert 'class="match"' in detail and "acme-1001.pdf" in detail
    assert f'href="/messages/{ids["acme"]}/raw"' in detail
    assert "Message-ID" in detail and "billing@acme.example" in detail
    ignored = client.get(f"/messages/{ids['newsletter']}").text
    assert "Newsletters are never invoices" in ignored and "ignored" in ignored
    unmatched = client.get(f"/messages/{ids['unmatched']}").text
    assert "policy <strong>recognize</strong>" in unmatched
    # the rules tried are listed as misses (how many the engine lists is its business)
    assert 'class="nomatch"' in unmatched or "No rule is listed" in unmatched
    raw = client.get(f"/messages/{ids['acme']}/raw")
    assert raw.status_code == 200 and b"Subject: Invoice 1001 for March" in raw.content
    assert raw.headers["content-disposition"].startswith("attachment")
    assert client.get("/messages/99999").status_code == 404


def test_rule_snippet_from_a_mail_loads_and_matches_it(site: tuple[Gateway, dict[str, int]],
                                                       client: Browserless) -> None:
    from gateway.explain import explain_decision
    from gateway.rules import load_rules_text

    gw, ids = site
    for key in ("unmatched", "hostile", "acme"):
        r = client.get(f"/api/messages/{ids[key]}/rule")
        snippet = r.json()["yaml"]
        ruleset, problems = load_rules_text(snippet)
        assert problems == [] and ruleset is not None, snippet
        msg = gw.store.message(ids[key])
        raw = (gw.settings.data_dir / msg["raw_path"]).read_bytes()
        out = explain_decision(raw, ruleset, source="smtp")
        assert out["rule"] == ruleset.rules[0].name and out["action"] == "import", snippet
    snippet = client.get(f"/api/messages/{ids['unmatched']}/rule").json()["yaml"]
    assert yaml.safe_load(snippet)["when"] == {"from": "someone@other.example", "subject": "Hello there"}
    page = client.get(f"/messages/{ids['unmatched']}").text
    assert "from: someone@other.example" in page and 'data-copy="rule-yaml"' in page
    # "try it on this mail": the tester runs the draft
    r = client.post("/rules/test", {"message": str(ids["unmatched"]), "draft": snippet})
    assert r.status_code == 200 and "with the draft rule" in r.text
    assert "Mail from someone@other.example</strong> decides" in r.text


def test_rules_page_and_tester_with_upload(site: tuple[Gateway, dict[str, int]], client: Browserless) -> None:
    text = client.get("/rules").text
    assert "3 rule(s) in force" in text and 'href="/rules/file/acme.yaml"' in text
    assert "Newsletters are never invoices" in text
    f = client.get("/rules/file/acme.yaml").text
    assert 'id="L1"' in f and "Acme invoices" in f
    assert client.get("/rules/file/..%2f..%2fetc%2fpasswd").status_code == 404
    assert client.get("/rules/file/../gateway.yaml").status_code == 404
    eml = make_mail(sender="billing@acme.example", subject="Invoice 5").as_bytes()
    r = client.post("/rules/test", {"source": "smtp"}, files={"eml": ("mail.eml", eml, "message/rfc822")})
    assert r.status_code == 200 and "Acme invoices</strong> decides" in r.text
    assert "uploaded file mail.eml" in r.text
    r = client.post("/rules/test", {"source": "smtp"})
    assert r.status_code == 400 and "choose an .eml file" in r.text
    # the API: raw message in, the explanation out
    r = httpx.post(f"{client.base}/api/rules/test?source=smtp", content=eml,
                   headers={"Authorization": "Bearer test-token-0123456789", "Content-Type": "message/rfc822"})
    body = r.json()
    assert r.status_code == 200 and body["rule"] == "Acme invoices" and body["explain"][0]["matched"] is True
    assert {"rule", "file", "matched", "reason"} <= set(body["explain"][0])
    rules = client.get("/api/rules").json()
    assert rules["in_force"] and rules["count"] == 3 and set(rules["files"]) == {"acme.yaml", "hostile.yaml"}


def test_documents_list_thumbnails_and_filters(site: tuple[Gateway, dict[str, int]], client: Browserless) -> None:
    gw, ids = site
    doc = gw.store.documents_of(ids["acme"])[0]
    listing = client.get("/documents?view=cards").text  # the list is the default view; the cards have thumbnails
    assert f'src="/documents/{doc["id"]}/thumb.png"' in listing and "acme-1001.pdf" in listing
    assert f'href="/documents/{doc["id"]}"' in client.get("/documents").text
    assert "acme-1001.pdf" in client.get("/documents?company=ACME").text
    assert "acme-1001.pdf" not in client.get("/documents?company=nobody").text
    assert "acme-1001.pdf" in client.get("/documents?tag=business").text
    assert "acme-1001.pdf" in client.get("/documents?document_type=invoice&approved=no").text
    assert "acme-1001.pdf" in client.get("/documents?export_state=delivered").text
    thumb = client.get(f"/documents/{doc['id']}/thumb.png")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/png"
    assert thumb.content.startswith(b"\x89PNG")
    assert list((gw.settings.data_dir / "thumbs").rglob(f"{doc['sha256']}-240.png"))
    preview = client.get(f"/documents/{doc['id']}/preview.png")
    assert preview.content.startswith(b"\x89PNG")
    from PIL import Image

    assert Image.open(io.BytesIO(preview.content)).size[0] == 1000
    assert "Page 1 of 1" in client.get(f"/documents/{doc['id']}").text
    # a PDF with no pages gets the placeholder, and is not tried again
    hostile = gw.store.documents_of(ids["hostile"])[0]
    r = client.get(f"/documents/{hostile['id']}/thumb.png")
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml")
    assert list((gw.settings.data_dir / "thumbs").rglob(f"{hostile['sha256']}-240.failed"))
    api = client.get(f"/api/documents/{doc['id']}/thumbnail")
    assert api.content.startswith(b"\x89PNG")


def test_document_actions_approve_edit_export_again(site: tuple[Gateway, dict[str, int]],
                                                    client: Browserless) -> None:
    gw, ids = site
    doc = gw.store.documents_of(ids["acme"])[0]
    path = f"/documents/{doc['id']}"
    page = client.get(path).text
    assert "accounting will deliver this document once it is approved" in page
    assert "waiting for approval" in page and "awaiting approval" not in page
    r = client.post(f"{path}/approve")
    assert r.status_code == 302 and r.headers["location"] == path
    assert gw.store.document(doc["id"])["approved_at"]
    assert "Approved" in client.get(path).text  # the flash message
    r = client.post(f"{path}/edit", {"company": "ACME Corporation", "document_type": "invoice",
                                    "invoice_number": "1001", "tags": "business, tax, business", "note": "paid"})
    assert r.status_code == 302
    row = gw.store.document(doc["id"])
    assert row["company"] == "ACME Corporation" and row["invoice_number"] == "1001" and row["note"] == "paid"
    assert '"tax"' in row["tags"] and row["tags"].count("business") == 1
    wait_for(lambda: any(e["state"] == "delivered" and e["target"] == "nas" for e in gw.store.exports_of(doc["id"])))
    def nas() -> dict[str, Any]:
        return next(e for e in gw.store.exports_of(doc["id"]) if e["target"] == "nas")

    before = nas()["delivered_at"]
    assert client.post(f"{path}/export", {"target": "nas"}).status_code == 302
    wait_for(lambda: nas()["state"] == "delivered" and nas()["delivered_at"] != before)
    r = client.post(f"{path}/export", {"target": "nowhere"}, follow_redirects=True)
    assert "there is no export target" in r.text
    client.post(f"{path}/unapprove")
    assert gw.store.document(doc["id"])["approved_at"] is None
    assert client.get(f"{path}/file").content == (gw.settings.data_dir / doc["path"]).read_bytes()


def test_exports_pages_run_now_and_retry(site: tuple[Gateway, dict[str, int]], client: Browserless) -> None:
    gw, ids = site
    wait_for(lambda: gw.store.export_counts().get("broken", {}).get("failed"), timeout=15)
    page = client.get("/exports").text
    assert "Failed exports" in page and "cannot write to" in page
    detail = client.get("/exports/broken?state=failed").text
    assert "Retry" in detail and "cannot write to" in detail
    failed = gw.store.list_exports(target="broken", state="failed")
    r = client.post("/exports/broken/retry", {"export_id": str(failed[0]["id"])})
    assert r.status_code == 302
    assert gw.store.export_row(failed[0]["id"])["state"] in ("pending", "running", "failed")
    # accounting runs daily and needs approval: approve, then "run now"
    doc = gw.store.documents_of(ids["acme"])[0]
    gw.store.update_document(doc["id"], approved_at="2026-01-01T00:00:00+00:00")
    assert not list((gw.workdir / "approved").rglob("*.pdf"))
    r = client.post("/exports/accounting/run")
    assert r.status_code == 302
    wait_for(lambda: list((gw.workdir / "approved").rglob("*.pdf")), timeout=15)
    wait_for(lambda: "Last run now" in client.get("/exports/accounting").text)
    r = client.post("/exports/nowhere/run", follow_redirects=True)
    assert r.status_code == 200 and "there is no export target &#39;nowhere&#39;" in r.text
    assert client.get("/exports/nowhere").status_code == 404


def test_messages_paging(gateway_factory: Any) -> None:
    gw = gateway_factory(unmatched={"smtp": "keep"})
    for i in range(27):
        gw.send(make_mail(subject=f"note {i:02d}", body="text"))
    settle(gw, 27)
    c = Browserless(gw)
    c.login()
    first = c.get("/messages").text
    assert "1–25 of 27" in first and "note 26" in first and "note 01" not in first
    assert 'href="/messages?offset=25"' in first
    second = c.get("/messages?offset=25").text
    assert "26–27 of 27" in second and "note 01" in second and "note 00" in second
    filtered = c.get("/messages?status=unmatched&offset=25").text
    assert 'href="/messages?status=unmatched"' in filtered  # "newer" keeps the filter
    r = c.post("/messages/reexamine")
    assert r.status_code == 302
    c.close()


def test_reprocess_from_the_message_page(gateway_factory: Any) -> None:
    gw = gateway_factory(unmatched={"smtp": "keep"})
    gw.send(make_mail(sender="Shop <orders@shop.example>", subject="Order 77",
                      attachments=[("order.pdf", unique_pdf("order"), "application/pdf")]))
    settle(gw, 1)
    mid = gw.store.list_messages()[0][0]["id"]
    assert gw.store.message(mid)["status"] == "unmatched"
    c = Browserless(gw)
    c.login()
    snippet = c.get(f"/api/messages/{mid}/rule").json()["yaml"]
    (gw.workdir / "rules" / "shop.yaml").write_text(snippet, encoding="utf-8")
    gw.service.load_rules()
    r = c.post(f"/messages/{mid}/reprocess")
    assert r.status_code == 302
    wait_for(lambda: gw.store.message(mid)["status"] == "imported", timeout=20)
    assert "Mail from orders@shop.example" in c.get(f"/messages/{mid}").text
    c.close()


def test_rule_problems_show_file_line_and_key(gateway_factory: Any, workdir: Path) -> None:
    (workdir / "rules" / "bad.yaml").write_text("name: Bad\nwhen:\n  form: x@example.com\n", encoding="utf-8")
    gw = gateway_factory()
    c = Browserless(gw)
    c.login()
    text = c.get("/rules").text
    assert "Problems in the rules folder" in text and 'href="/rules/file/bad.yaml#L3"' in text
    assert "when.form" in text and "No rules are in force" in text
    problems = c.get("/api/rules").json()["problems"]
    assert problems[0]["line"] == 3 and problems[0]["key"] == "when.form" and problems[0]["file"].endswith("bad.yaml")
    assert "bad-line" in c.get("/rules/file/bad.yaml").text
    assert "problem(s) in the rules folder" in c.get("/").text
    c.close()


class FakePoller:
    """Stands in for an IMAP poller: fetch_now records a successful poll, as the real one would."""

    def __init__(self, store: Any, name: str) -> None:
        self.store, self.name, self.calls = store, name, 0

    def fetch_now(self) -> None:
        self.calls += 1
        time.sleep(0.3)
        now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
        self.store.set_mailbox_status(self.name, last_poll=now, last_success=now, last_error=None, failures=0,
                                      stats={"fetched": self.calls, "errors": 0})

    def stop(self) -> None:
        pass


def mailbox_gateway(workdir: Path) -> Gateway:
    """A gateway with two configured mailboxes served by FakePollers (no IMAP server needed)."""
    cfg = base_config(workdir, mailboxes=[
        {"name": "gmail", "provider": "gmail", "host": "127.0.0.1", "port": 1, "username": "john@example.test",
         "password": "x", "folders": ["INBOX", "Invoices"]},
        {"name": "office", "host": "127.0.0.1", "port": 1, "username": "jane@example.test", "password": "x"}])
    gw = Gateway(workdir, cfg)
    svc = gw.service
    svc._start_mailboxes = lambda: svc.pollers.update(  # type: ignore[method-assign]
        {"gmail": FakePoller(svc.store, "gmail")})
    svc.store.set_mailbox_status("office", last_poll="2026-01-01T10:00:00+00:00", last_error="LOGIN failed",
                                 error_kind="auth", hint="Use an app password <b>not</b> your account password",
                                 failures=3, next_attempt="2026-01-01T11:00:00+00:00", stats={})
    for _ in range(3):
        svc.store.count_poll_error("office", "auth")
    return gw.start()


def test_mailboxes_state_and_fetch_now(workdir: Path) -> None:
    gw = mailbox_gateway(workdir)
    try:
        c = Browserless(gw)
        c.login()
        page = c.get("/mailboxes").text
        assert "gmail" in page and "not polled yet" in page
        assert "LOGIN failed" in page and "Use an app password &lt;b&gt;not&lt;/b&gt;" in page
        assert "3 in a row" in page
        r = c.post("/mailboxes/gmail/fetch")
        assert r.status_code == 302
        poller = gw.service.pollers["gmail"]
        wait_for(lambda: poller.calls == 1)
        wait_for(lambda: (gw.store.mailbox_status("gmail") or {}).get("last_success"))
        assert "fetched" in c.get("/mailboxes/gmail").text
        r = c.api_post("/api/mailboxes/gmail/fetch")
        assert r.status_code == 202 and r.json()["mailbox"] == "gmail"
        wait_for(lambda: poller.calls == 2)
        r = c.api_post("/api/mailboxes/office/fetch")
        assert r.status_code == 409 and "no running poller" in r.json()["error"]
        assert c.api_post("/api/mailboxes/nope/fetch").status_code == 404
        boxes = c.get("/api/mailboxes").json()["items"]
        office = next(b for b in boxes if b["name"] == "office")
        assert office["state"]["error_kind"] == "auth" and office["state"]["failures"] == 3
        assert "password" not in office
        c.close()
    finally:
        gw.stop()


def test_suspicious_mail_is_shown_prominently_on_the_dashboard(
        gateway_factory: Any, workdir: Path, key: tuple[bytes, str]) -> None:  # noqa: F811
    gw = start_trust(gateway_factory, workdir, key)
    c = Browserless(gw)
    c.login()

    def tiles(text: str) -> dict[str, int]:
        return {lbl: int(num) for num, lbl in re.findall(r'<span class="num">(\d+)</span><span class="lbl">([^<]+)</span>',
                                                         text)}

    page = c.get("/").text
    assert tiles(page)["suspicious"] == 0 and "held as suspicious" not in page
    gw.send(trust_invoice("forged"), sender=SUPPLIER)  # claims a rule's sender, SPF fails
    wait_for(lambda: gw.store.status_counts().get("suspicious") == 1, timeout=15)
    page = c.get("/").text
    assert tiles(page)["suspicious"] == 1
    assert re.search(r'<a class="stat bad" href="/messages\?status=suspicious">', page)
    alert = re.search(r'<p class="flash flash-error" role="alert">(.*?)</p>', page, re.S)
    assert alert and '<a href="/messages?status=suspicious">1 mail(s) held as suspicious</a>' in alert.group(1)
    assert "Invoice forged" in c.get("/messages?status=suspicious").text
    counts = c.get("/api/status").json()["counts"]
    assert counts["suspicious"] == 1 and counts["problems"] == 1
    c.close()


def test_a_rules_messages_and_the_document_filters_through_the_api(site: tuple[Gateway, dict[str, int]],
                                                                    client: Browserless) -> None:
    gw, ids = site
    acme = gw.api("/api/messages?rule=Acme+invoices").json()
    assert acme["total"] == 1 and [m["id"] for m in acme["items"]] == [ids["acme"]]
    hostile = gw.api("/api/messages", params={"rule": "<script>alert('rule')</script>"}).json()
    assert [m["id"] for m in hostile["items"]] == [ids["hostile"]]
    assert gw.api("/api/messages?rule=No+such+rule").json()["total"] == 0
    # the rule's file page links to all its messages; that list shows the same as the API
    assert 'href="/messages?rule=Acme%20invoices"' in client.get("/rules/file/acme.yaml").text
    page = client.get("/messages?rule=Acme%20invoices").text
    assert "Decided by the rule <strong>Acme invoices</strong>" in page
    assert f'href="/messages/{ids["acme"]}"' in page and f'href="/messages/{ids["hostile"]}"' not in page
    # facets: the values the documents page offers as filters
    facets = gw.api("/api/documents/facets").json()
    docs = gw.api("/api/documents?archived=any&limit=500").json()["items"]  # (other tests here edit documents)
    assert facets == {"companies": sorted({d["company"] for d in docs if d["company"]}),
                      "document_types": sorted({d["document_type"] for d in docs if d["document_type"]}),
                      "tags": sorted({t for d in docs for t in d["tags"]})}
    assert "<img src=x onerror=alert(2)>" in facets["companies"] and "invoice" in facets["document_types"]
    assert {"<b>bold</b>", "business"} <= set(facets["tags"])
    docs_page = client.get("/documents").text
    for tag in facets["tags"]:
        assert f"<option>{markupsafe.escape(tag)}</option>" in docs_page


# -- issue 15: the mail itself, reasons and zones, ignore rules, document pairs, bulk approve, the tester ------


REMOTE_HTML = ('<html><head><style>body { background: url(http://198.51.100.7/bg.png) }</style>'
               '<link rel="stylesheet" href="http://198.51.100.7/x.css"></head><body>'
               '<p style="background:url(http://198.51.100.7/p.png)" onclick="alert(5)">Your invoice <b>INV-77</b> '
               'is attached.</p><script>alert(1)</script><img src="http://198.51.100.7/track.gif" onerror="alert(2)">'
               '<a href="javascript:alert(3)">pay here</a><iframe src="http://198.51.100.7/"></iframe>'
               '<table><tr><td colspan="2" background="http://198.51.100.7/td.png">Total 99.00 EUR</td></tr></table>'
               '<svg><image href="http://198.51.100.7/svg.png"/></svg></body></html>')


def test_mail_body_keeps_text_and_structure_and_nothing_that_runs_or_loads(tmp_path: Path) -> None:
    from web.mailbody import mail_body

    path = tmp_path / "m.eml"
    path.write_bytes(make_mail(subject="Invoice INV-77", body="Plain part <script>x</script>",
                               html=REMOTE_HTML).as_bytes(policy=email.policy.SMTP))
    body = mail_body(path)
    assert body.text.startswith("Plain part <script>x</script>")  # the page escapes it (autoescape)
    assert body.html is not None and "Your invoice <b>INV-77</b>" in body.html and "Total 99.00 EUR" in body.html
    for bad in ("<script", "alert", "onerror", "onclick", "http:", "url(", "style", "<img", "<link", "<iframe",
                "<svg", "href", "background", "javascript"):
        assert bad not in body.html.lower(), bad
    assert body.images == 1 and '<td colspan="2">' in body.html
    assert mail_body(None).error and mail_body(tmp_path / "gone.eml").error


def test_message_page_shows_the_mail_the_reason_column_and_the_zone(site: tuple[Gateway, dict[str, int]],
                                                                    client: Browserless) -> None:
    gw, ids = site
    page = client.get(f"/messages/{ids['unmatched']}").text
    assert 'id="mail-body"' in page and "no invoice here" in page  # the text part, not only the .eml
    hostile = client.get(f"/messages/{ids['hostile']}").text
    html_view = hostile.split('id="mail-html">', 1)[1].split("</div>", 1)[0]
    assert "<script" not in html_view and "onerror" not in html_view and "&lt;script&gt;" not in html_view
    assert "Body &lt;script&gt;alert(1)&lt;/script&gt;" in hostile  # the text part, escaped
    zone = dt.datetime.now(gw.service.settings.timezone and __import__("zoneinfo").ZoneInfo(
        gw.service.settings.timezone) or dt.datetime.now().astimezone().tzinfo).strftime("%Z")
    assert re.search(rf"<time [^>]*>\d{{4}}-\d\d-\d\d \d\d:\d\d {zone}</time>", page)  # Received with its zone
    listing = client.get("/messages").text
    assert f"Received <span class=\"zone\">({zone})</span>" in listing and "<th>Why</th>" in listing
    row = listing.split(f'href="/messages/{ids["acme"]}"', 1)[1].split("</tr>", 1)[0]
    why = html.unescape(row.split('class="why-cell', 1)[1].split("</td>", 1)[0])
    assert "Acme invoices" in why and "imported 1 document(s)" in why  # an imported mail says which rule took it
    row = listing.split(f'href="/messages/{ids["unmatched"]}"', 1)[1].split("</tr>", 1)[0]
    assert 'class="why-cell' in row and gw.store.message(ids["unmatched"])["reason"][:20] in html.unescape(row)


def test_an_ignore_rule_from_a_mail_that_is_no_invoice(site: tuple[Gateway, dict[str, int]],
                                                       client: Browserless) -> None:
    from gateway.rules import load_rules_text

    gw, ids = site
    page = client.get(f"/messages/{ids['unmatched']}").text
    snippet = html.unescape(page.split('id="ignore-yaml">', 1)[1].split("</pre>", 1)[0])
    ruleset, problems = load_rules_text(snippet, "ignore-other-example.yaml")
    assert problems == [] and ruleset is not None
    rule = ruleset.rules[0]
    assert rule.action == "ignore" and rule.name == "Ignore mail from someone@other.example"
    assert "rules/ignore-other-example.yaml" in snippet
    r = client.post("/rules/test", {"message": str(ids["unmatched"]), "draft": snippet})
    verdict = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", r.text.split('id="verdict"', 1)[1].split("</p>")[0])).split())
    assert "The draft rule Ignore mail from someone@other.example decides: ignore" in verdict
    assert "(" not in verdict  # no import mode for an ignore ("ignore (attachments)" was nonsense)
    assert "ignore-other-example.yaml" in r.text  # tested as part of the file its comment names
    acme = client.get(f"/messages/{ids['acme']}").text
    assert 'id="ignore-yaml"' not in acme  # an imported invoice gets only the import rule


def test_a_draft_is_tested_in_its_place_among_the_rules_in_force(site: tuple[Gateway, dict[str, int]],
                                                                 client: Browserless) -> None:
    _, ids = site
    draft = "name: Everything from Acme\nwhen:\n  from: \"@acme.example\"\naction: ignore\n"

    def test(text: str, file: str = "") -> tuple[str, str]:
        r = client.post("/rules/test", {"message": str(ids["acme"]), "draft": text, "draft_file": file})
        assert r.status_code == 200, r.text
        words = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", r.text.split('id="result"', 1)[1])).split())
        return words, r.text

    words, _ = test(draft, "zz-more.yaml")  # after acme.yaml, same priority: the rule in force decides first
    assert "The rule in force Acme invoices decides: import" in words
    assert "The draft was not reached: Acme invoices comes before it and decides" in words
    words, _ = test("priority: 50\n" + draft, "zz-more.yaml")  # a lower priority: the draft is tried first
    assert "The draft rule Everything from Acme decides: ignore" in words and "is tried 1 of" in words
    words, page = test(draft, "aa-first.yaml")  # a file that sorts before acme.yaml: tried first too
    assert "The draft rule Everything from Acme decides: ignore" in words
    assert 'badge s-received">draft</span>' in page
    words, _ = test("name: Acme invoices\nwhen: {from: nobody@acme.example}\n", "acme.yaml")  # replaces it
    assert "replacing the rule Acme invoices" in words and "decides: import" not in words
    words, _ = test("name: acme INVOICES\nwhen: {from: x@y.example}\n", "other.yaml")
    assert "is already the name of the rule at acme.yaml" in words
    r = client.post("/rules/test", {"message": str(ids["acme"]), "draft": draft, "draft_file": "../escape.yaml"})
    assert r.status_code == 400 and "a rule file name inside the rules folder" in html.unescape(r.text)
    api = client.api_post("/api/rules/test", json={"message": ids["acme"], "draft": draft,
                                                   "draft_file": "zz-more.yaml"}).json()
    assert api["rule"] == "Acme invoices" and api["decided_by_draft"] is False and api["draft_rules"] == [
        "Everything from Acme"]


def test_broken_rules_the_tester_page_and_the_cli_say_the_same(workdir: Path) -> None:
    (workdir / "rules" / "good.yaml").write_text("name: Good\nwhen: {from: \"@acme.example\"}\n", encoding="utf-8")
    cfg = base_config(workdir)
    gw = Gateway(workdir, cfg).start()
    c = Browserless(gw)
    try:
        gw.send(make_mail(subject="Invoice 5"))
        settle(gw, 1)
        (workdir / "rules" / "bad.yaml").write_text("name: Bad\nwhen:\n  form: x@example.com\n", encoding="utf-8")
        wait_for(lambda: gw.service.rules.problems, timeout=20)
        c.login()
        mid = gw.store.list_messages(limit=1)[0][0]["id"]
        page = c.post("/rules/test", {"message": str(mid)}).text
        said = " ".join(html.unescape(page.split('id="rules-broken"', 1)[1].split("<strong>", 1)[1].split("</strong>", 1)[0]).split())
        assert "is broken: 1 problem(s) in" in said and "bad.yaml" in said and "last good rule set" in said
        assert 'id="verdict"' not in page and "No rule was tested" in page
        api = c.api_post("/api/rules/test", json={"message": mid}).json()
        assert api["rule"] is None and api["broken"] == said
        config = workdir / "gateway.yaml"
        config.write_text(yaml.safe_dump(cfg), encoding="utf-8")
        eml = workdir / "mail.eml"
        eml.write_bytes(make_mail(subject="Invoice 5").as_bytes())
        from conftest import run_cli

        cli = run_cli("-q", "-c", str(config), "rules", "test", str(eml))
        assert cli.returncode == 1 and "bad.yaml:3" in cli.stdout.decode()
        assert cli.stderr.decode().strip() == api["broken"]  # the same words as the page
    finally:
        c.close()
        gw.stop()


def test_bulk_approve_needs_login_and_csrf_and_approves_all_or_none(site: tuple[Gateway, dict[str, int]],
                                                                     client: Browserless) -> None:
    gw, ids = site
    before = sum(gw.store.status_counts().values())
    gw.send(make_mail(subject="Invoice 3003", attachments=[("acme-3003.pdf", unique_pdf("3003"), "application/pdf")]))
    settle(gw, before + 1)
    doc = gw.store.list_documents(limit=1)[0][0]
    assert doc["filename"] == "acme-3003.pdf"
    wait_for(lambda: any(e["target"] == "accounting" for e in gw.store.exports_of(doc["id"])))
    hostile = gw.store.documents_of(ids["hostile"])[0]
    listing = client.get("/documents").text
    assert f'name="ids" value="{doc["id"]}"' in listing and 'id="approve-selected"' in listing
    assert f'name="ids" value="{hostile["id"]}"' not in listing  # no target waits for its approval
    detail = client.get(f"/documents/{hostile['id']}").text
    assert "/approve" not in detail.split("<main", 1)[1].split('class="doc-detail"', 1)[0]  # no Approve button
    assert client.http.post("/documents/approve", data={"ids": str(doc["id"])}).status_code in (400, 403)
    assert gw.store.document(doc["id"])["approved_at"] is None  # no CSRF token: nothing approved
    anon = httpx.post(f"{client.base}/api/documents/approve", json={"ids": [doc["id"]]})
    assert anon.status_code == 401
    r = client.api_post("/api/documents/approve", json={"ids": [doc["id"], 999999]})
    assert r.status_code == 404 and gw.store.document(doc["id"])["approved_at"] is None  # all or none
    assert client.api_post("/api/documents/approve", json={"ids": "1"}).status_code == 400
    assert client.api_post("/api/documents/approve", json={"ids": [True]}).status_code == 400
    r = client.post("/documents/approve", {"ids": f"{doc['id']},{hostile['id']}"})
    assert r.status_code == 302 and gw.store.document(doc["id"])["approved_at"]
    assert "Approved 2 document(s)" in client.get("/documents").text
    r = client.api_post("/api/documents/approve", json={"ids": [doc["id"]]}).json()
    assert r == {"approved": [], "already_approved": [doc["id"]]}
    gw.store.update_document(hostile["id"], approved_at=None)


def test_document_type_from_a_list_and_one_name_for_waiting(site: tuple[Gateway, dict[str, int]],
                                                             client: Browserless) -> None:
    gw, ids = site
    doc = gw.store.documents_of(ids["acme"])[0]
    page = client.get(f"/documents/{doc['id']}").text
    # (in the Fields panel: the one place to correct the type)
    select = page.split('<select id="field-document_type" name="document_type">', 1)[1].split("</select>", 1)[0]
    for label in ("invoice", "credit note", "receipt", "reminder", "order confirmation", "statement",
                  "delivery note", "other"):
        assert f">{label}</option>" in select
    assert 'value="credit_note"' in select
    for path in ("/documents", f"/documents/{doc['id']}", "/exports", "/exports/accounting", "/"):
        text = client.get(path).text
        assert "awaiting approval" not in text and "queued" not in text, path


def test_run_now_with_nothing_to_do_says_so(site: tuple[Gateway, dict[str, int]], client: Browserless) -> None:
    gw, _ = site
    wait_for(lambda: not gw.store.export_counts().get("nas", {}).get("pending"), timeout=15)
    assert client.api_post("/api/exports/nas/run").status_code in (200, 202)
    wait_for(lambda: "run-nothing" in client.get("/exports/nas").text, timeout=15)
    assert "nothing to deliver for nas" in client.get("/exports/nas").text


def test_an_ignore_rule_needs_a_sender_or_a_subject_and_gets_a_free_name() -> None:
    from gateway.rules import load_rules_text
    from web.rulegen import ignore_rule_from_message

    msg = {"id": 7, "sender": "Shop <News@Shop.example>", "mail_from": "", "subject": "Sale 2026-12 -50%",
           "status": "unmatched"}
    text = ignore_rule_from_message(msg, {"ignore mail from news@shop.example"})
    assert text is not None
    ruleset, problems = load_rules_text(text)
    assert problems == [] and ruleset is not None
    rule = ruleset.rules[0]
    assert rule.name == "Ignore mail from news@shop.example (2)"  # rule names compare without case
    assert rule.action == "ignore" and "subject: Sale *" in text and "from: news@shop.example" in text
    assert ignore_rule_from_message({"id": 8, "sender": "", "mail_from": "", "subject": "", "status": "unmatched"}) \
        is None  # nothing to narrow it down: such a rule would ignore every mail
