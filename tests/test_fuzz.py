"""Property tests and a short fuzz run of what reads untrusted input: MIME to documents
(gateway.mime.parse + Pipeline.decide), the rule loader and the e-invoice parser.

The properties: nothing raises but the documented errors, and nothing takes long.
bench/fuzz_long.py runs the same targets for minutes (figures in docs/security.md).
"""

from __future__ import annotations

import base64
import os
import quopri
import random
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from gateway import einvoice, mime
from gateway.errors import ParseError
from gateway.rules import load_rules_text

from conftest import CORPUS

HERE = Path(__file__).parent
# The short run: a few seconds per target; FUZZ_EXAMPLES raises it (bench/fuzz_long.py does).
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
SLOW = 5.0  # seconds one input may take before it counts as a finding
PDF = b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# -- targets (also used by bench/fuzz_long.py) ------------------------------------------------

class Target:
    """Runs MIME parsing and the pipeline's decision on raw mail, with no servers and no network."""

    def __init__(self, data_dir: Path) -> None:
        from gateway.config import parse_settings
        from gateway.pipeline import Pipeline, RulesState
        from gateway.senderauth import StubResolver
        from gateway.store import Store

        self.settings = parse_settings({"data_dir": str(data_dir), "exports": []})
        rules = RulesState()
        rules.ruleset, problems = load_rules_text(RULES)
        assert not problems, problems
        self.pipeline = Pipeline(self.settings, Store(data_dir), rules, renderer=lambda parsed: PDF,
                                 xml_renderer=lambda inv: PDF)
        self.pipeline.sender_auth.resolver = StubResolver()

    def mail(self, raw: bytes) -> None:
        """Parse and decide one mail; only ParseError may come out."""
        try:
            parsed = mime.parse(raw)
        except ParseError:
            return
        row = {"id": 1, "source": "smtp", "assign": "{}", "rcpt_tos": '["invoices@localhost"]',
               "import_address": "invoices@localhost", "tag": None, "peer": "192.0.2.1", "mail_from": ""}
        auth = self.pipeline.sender_auth.for_message(raw, parsed, row)
        outcome = self.pipeline.decide(parsed, {**row, "auth": None if auth is None else __import__("json").dumps(auth)})
        assert outcome.status in ("imported", "ignored", "unmatched", "suspicious")
        mime.summary(parsed)
        mime.content_hash(raw)


def check_rules(text: str) -> None:
    """Load a rule file's text: a RuleSet or problems, never an exception."""
    ruleset, problems = load_rules_text(text)
    assert (ruleset is None) == bool(problems)
    for p in problems:
        str(p)


def check_einvoice(data: bytes) -> None:
    """detect() never raises, whatever the bytes."""
    inv = einvoice.detect(data, "x.xml", "application/xml")
    if inv is not None:
        inv.fields()


RULES = """\
name: Known supplier
when: {from: billing@supplier.example, authenticated: true}
assign: {company: "{einvoice.seller}", tags: ["{tag}", supplier], note: "{subject}"}
---
name: Newsletters
when: {any: [{header: {List-Id: "*"}}, {subject: "re:(?i)newsletter"}]}
action: ignore
---
name: Receipts
when: {contains: [receipt, Rechnung], has_attachment: false}
import: body
---
name: E-invoices
when: {einvoice: {seller_vat_id: "re:^DE"}}
"""


# -- strategies ------------------------------------------------------------------------------

HEADER_NAMES = ["From", "To", "Cc", "Subject", "Date", "Message-ID", "Content-Type", "Content-Transfer-Encoding",
                "Content-Disposition", "MIME-Version", "DKIM-Signature", "Authentication-Results", "Received",
                "List-Id", "X-Weird"]
text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60)
header_values = st.one_of(
    text,
    st.sampled_from(["=?utf-8?b?w6TDtsO8?=", "=?iso-8859-1?q?R=E9cu?=", "=?bogus?x?zz?=", "<a@b>", "a@b, c@d",
                     '"x@y" <evil@example>', "multipart/mixed; boundary=\"b\"", "text/plain; charset=x-mac-cyrillic",
                     "attachment; filename*=utf-8''R%C3%A9chnung.pdf", "base64", "quoted-printable", "8bit",
                     "v=1; a=rsa-sha256; d=supplier.example; s=s1; h=from; bh=AAAA; b=AAAA", "Mon, 32 Foo 2024",
                     "mx.google.com; dkim=pass header.d=supplier.example; dmarc=pass header.from=supplier.example",
                     "x" * 3000, "=?utf-8?q?a?= " * 2000, '"' * 5000, "(" * 5000, "." * 5000,
                     "p@example.com, " * 2000]),
)
LEAF_TYPES = ["text/plain", "text/html", "application/pdf", "application/xml", "application/octet-stream",
              "message/rfc822", "image/png", "text/calendar"]
payloads = st.one_of(st.binary(max_size=400), st.sampled_from([PDF, b"<?xml version='1.0'?><Invoice/>",
                                                               b"begin 644 a.pdf\n#)51&\n`\nend\n", b"", b"\x00" * 50]))


@st.composite
def leaf(draw: Any) -> bytes:
    ctype = draw(st.sampled_from(LEAF_TYPES))
    data = draw(payloads)
    cte = draw(st.sampled_from(["", "base64", "quoted-printable", "8bit", "x-uuencode", "bogus"]))
    if cte == "base64" and draw(st.booleans()):
        data = base64.encodebytes(data)
    elif cte == "quoted-printable" and draw(st.booleans()):
        data = quopri.encodestring(data)
    name = draw(st.one_of(st.none(), text, st.sampled_from(["../../etc/passwd", "invoice.pdf", "a\x00b.pdf", "CON"])))
    head = f"Content-Type: {ctype}" + (f'; name="{name}"' if name is not None else "") + "\r\n"
    if cte:
        head += f"Content-Transfer-Encoding: {cte}\r\n"
    if draw(st.booleans()):
        head += "Content-Disposition: attachment\r\n"
    return head.encode("utf-8", "surrogateescape") + b"\r\n" + data


def multipart(children: Any) -> Any:
    @st.composite
    def build(draw: Any) -> bytes:
        parts = draw(st.lists(children, max_size=4))
        boundary = draw(st.sampled_from(["b", "==x==", "a" * 70, ""]))
        sub = draw(st.sampled_from(["mixed", "alternative", "related", "signed", "digest"]))
        body = b"".join(b"--" + boundary.encode() + b"\r\n" + p + b"\r\n" for p in parts)
        if draw(st.booleans()):
            body += b"--" + boundary.encode() + b"--\r\n"
        return f'Content-Type: multipart/{sub}; boundary="{boundary}"\r\n\r\n'.encode() + body
    return build()


bodies = st.recursive(leaf(), multipart, max_leaves=12)


@st.composite
def mails(draw: Any) -> bytes:
    headers = draw(st.lists(st.tuples(st.sampled_from(HEADER_NAMES), header_values), max_size=12))
    head = b"".join(f"{k}: {v}\r\n".encode("utf-8", "surrogateescape") for k, v in headers)
    raw = head + draw(bodies)
    if draw(st.booleans()):
        raw = raw.replace(b"\r\n", b"\n")
    return raw


def mutate(data: bytes, rnd: random.Random, n: int = 8) -> bytes:
    """``data`` with a few random byte-level changes (flip, insert, delete, duplicate, truncate)."""
    b = bytearray(data)
    for _ in range(rnd.randint(1, n)):
        if not b:
            b += bytes([rnd.randrange(256)])
            continue
        op, i = rnd.randrange(6), rnd.randrange(len(b))
        if op == 0:
            b[i] = rnd.randrange(256)
        elif op == 1:
            b[i:i] = rnd.choice([b"\r\n", b"\n", b"--", b"=?", b"<", b"\x00", b";", b"\"", b"begin 644 x\n"])
        elif op == 2:
            del b[i:i + rnd.randint(1, 64)]
        elif op == 3:
            j = rnd.randrange(len(b))
            b[i:i] = b[j:j + rnd.randint(1, 256)]
        elif op == 4:
            del b[i:]
        else:
            b[i:i] = rnd.choice([b"Content-Type: multipart/mixed; boundary=z\r\n", b"\r\n--z\r\n", b"--z--\r\n"])
    return bytes(b)


def timed(fn: Any, *args: Any) -> None:
    t0 = time.monotonic()
    fn(*args)
    elapsed = time.monotonic() - t0
    assert elapsed < SLOW, f"{fn.__name__} took {elapsed:.1f} s on one input"


# -- the short run ---------------------------------------------------------------------------

_TARGET: Target | None = None


def target(tmp_path_factory: Any = None) -> Target:
    global _TARGET
    if _TARGET is None:
        import tempfile

        _TARGET = Target(Path(tempfile.mkdtemp(prefix="fuzz-")))
    return _TARGET


@FUZZ
@given(mails())
def test_generated_mail_never_breaks_parse_and_decide(raw: bytes) -> None:
    timed(target().mail, raw)


@pytest.mark.corpus
@FUZZ
@given(st.sampled_from(sorted(p for p in (CORPUS / "emails").rglob("*") if p.is_file())) if (CORPUS / "emails").is_dir()
       else st.just(None), st.integers(0, 2**32))
def test_mutated_corpus_mail_never_breaks_parse_and_decide(path: Path | None, seed: int) -> None:
    raw = path.read_bytes() if path is not None else b"From: a@b\r\n\r\nhi"
    timed(target().mail, mutate(raw, random.Random(seed)))


def test_hostile_shapes_stay_bounded() -> None:
    deep = b"".join(b'Content-Type: multipart/mixed; boundary="%d"\r\n\r\n--%d\r\n' % (i, i) for i in range(2000))
    many = b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n' + b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n" * 5000
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(100_000)) + b"\r\nbody"
    for raw in (deep, many, headers):
        timed(target().mail, b"From: a@b.example\r\n" + raw)
    parsed = mime.parse(b"From: a@b.example\r\n" + headers)
    assert len(parsed.headers) == mime.MAX_HEADERS and any("header fields" in d for d in parsed.defects)
    assert any("MIME parts" in d for d in mime.parse(b"From: a@b\r\n" + many).defects)


def header_bombs(size: int = 1024 * 1024) -> dict[str, bytes]:
    """Mails whose headers are hostile at scale (``size`` bytes each), by name.

    Python's header parser with policy.default is quadratic in encoded words
    and in quotes, dots and comments of an address field; its parameter
    reader is quadratic in parameters. gateway.mimeheaders bounds them all.
    """
    def folded(unit: bytes, per_line: int = 60) -> bytes:
        line = unit * per_line
        return b"\r\n ".join([line] * (size // len(line) + 1))

    def mail(head: bytes, body: bytes = b"hi\r\n") -> bytes:
        return b"From: a@b.example\r\nTo: invoices@localhost\r\n" + head + b"\r\n\r\n" + body

    count = size // 20  # addresses of about 20 bytes: 50,000 in 1 MB
    def pdf_part(params: bytes) -> bytes:
        return b'Content-Type: application/pdf\r\nContent-Disposition: attachment; filename="x.pdf"' + params \
            + b"\r\n\r\n" + PDF

    return {
        "encoded words": mail(b"X-Note: " + folded(b"=?utf-8?q?a?= ")),
        "encoded words in Subject": mail(b"Subject: " + folded(b"=?utf-8?b?w6Q=?= ")),
        "encoded display names": mail(b"Cc: " + folded(b"=?utf-8?q?M=C3=BCller?= <m@x.example>, ", 20)),
        "quotes in To": mail(b"To: " + folded(b'"', 500)),
        "dots in To": mail(b"To: " + folded(b".", 500)),
        "comments in From": mail(b"Reply-To: " + folded(b"(", 500)),
        "unclosed encoded words": mail(b"To: " + folded(b"=?utf-8?q?a ", 50)),
        "addresses": mail(b"Bcc: " + b",\r\n ".join(b"p%d@example.com" % i for i in range(count))),
        "1 MB Message-ID": mail(b"Message-ID: <" + b"x" * size + b"@example.com>"),
        "parameters": mail(b'Content-Type: multipart/mixed; boundary="b"\r\n',
                           b"--b\r\n" + pdf_part(b"; a=b" * (size // 5)) + b"\r\n--b--\r\n"),
        "encoded file name": mail(b'Content-Type: multipart/mixed; boundary="b"\r\n',
                                  b"--b\r\n" + pdf_part(b'; name="' + folded(b"=?utf-8?q?a?= ") + b'"')
                                  + b"\r\n--b--\r\n"),
    }


def test_header_and_address_bombs_stay_bounded() -> None:
    """Each 1 MB header bomb: under SLOW seconds through parse and decide, and under 64 MB at its peak."""
    import tracemalloc

    for name, raw in header_bombs().items():
        tracemalloc.start()
        try:
            timed(target().mail, raw)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 64 * 1024 * 1024, f"{name}: {peak / 2**20:.0f} MB"
        assert mime.limit_defects(mime.parse(raw)), name  # the cut is stated


YAML_BITS = ["name: ", "when:", " from: ", "{", "}", "[", "]", "- ", "---\n", "\n", "  ", "re:(", "re:.*", "*", "@",
             "assign:", " company: ", "{einvoice.seller}", "{nope}", "action: ignore", "import: body", "priority: ",
             "authenticated: ", "true", "no", "0123", "any:", "not:", "header: {X: y}", "einvoice: {iban: DE}",
             "&a ", "*a", "!!python/object:os.system", "rules:", ": ", '"', "'", "\t", "\\", "%"]


@FUZZ
@given(st.lists(st.one_of(st.sampled_from(YAML_BITS), text), max_size=40).map("".join))
def test_rule_loader_never_raises(text_: str) -> None:
    timed(check_rules, text_)


@FUZZ
@given(st.sampled_from(sorted((HERE / "data" / "einvoice").glob("*.xml"))), st.integers(0, 2**32))
def test_einvoice_parser_never_raises_on_mutated_invoices(path: Path, seed: int) -> None:
    timed(check_einvoice, mutate(path.read_bytes(), random.Random(seed), 20))


def test_findings_of_the_long_run_stay_fixed() -> None:
    """Inputs bench/fuzz_long.py found that made gateway.mime raise (now defects)."""
    cases = [
        b"From: a@b.example\r\nTo: " + b"x:" * 1500 + b"\r\n\r\nhi",  # the stdlib recurses per group
        b"From: a@b.example\r\nContent-Type: text/plain; charset=\"utf\x008\"\r\n\r\nhi",  # NUL in a charset
        b"From: a@b.example\r\nDate: Mon, 1 Jan 99999999999999999999 00:00:00 +0000\r\n\r\nhi",  # year overflow
        b"From: a@b.example\r\nContent-Type: text/plain\r\n\r\nbegin 644 x.pdf\r\n}}}}\r\nend\r\n",  # bad uuencode
    ]
    for raw in cases:
        parsed = mime.parse(raw)
        assert parsed.sender is not None
        timed(target().mail, raw)
