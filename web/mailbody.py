"""The mail itself for the message page: its text part, and its HTML part made safe to show.

The HTML is cut down server-side to a strict allowlist (Ammonia, through nh3):
structure and text only, no attribute at all, so nothing in it can run or
load (no ``src``, ``href``, ``style`` or ``url()`` survives) and nothing
trips the page's Content-Security-Policy. An iframe would not do here: the
admin page's CSP has ``frame-src 'none'`` and ``style-src 'self'``, which a
``srcdoc`` frame inherits, so a mail's inline styles and images would be
refused one by one, each a console error, and the frame's height cannot
follow its content without script.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import nh3

from gateway import mime
from gateway.errors import GatewayError

MAX_TEXT = 200_000  # characters of the text part shown; the .eml has the rest
MAX_HTML = 1_000_000  # characters of the HTML part sanitised and shown
MAX_RAW = 64 * 1024 * 1024  # a stored mail larger than this is not parsed for the page

# Structure and text only. No <a> (its text stays), no <img> (counted and said),
# no form controls, no attribute but table spans.
ALLOWED_TAGS = frozenset({
    "p", "br", "div", "span", "b", "strong", "i", "em", "u", "s", "small", "sub", "sup", "mark",
    "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "li", "dl", "dt", "dd", "blockquote", "pre", "code",
    "hr", "table", "thead", "tbody", "tfoot", "tr", "td", "th", "caption", "center", "font",
})
# Elements whose content is no text for a reader: dropped with everything inside.
DROPPED_WITH_CONTENT = frozenset({"script", "style", "title", "head", "template", "noscript", "textarea",
                                  "select", "option", "object", "iframe", "svg", "math"})
_IMG = re.compile(r"<img\b", re.I)


@dataclass(frozen=True)
class MailBody:
    """What the message page shows of a mail's body.

    Attributes:
        text: the text part ("" when there is none), cut at MAX_TEXT characters.
        html: the HTML part, sanitised to the allowlist (None when there is none).
        images: how many images the HTML part asked for (none is shown or loaded).
        cut: whether the text or the HTML was cut to fit the page.
        error: why the body could not be read, or None.
    """

    text: str
    html: str | None
    images: int = 0
    cut: bool = False
    error: str | None = None


def sanitise_html(html: str) -> str:
    """``html`` reduced to the allowlist: structure and text, no attribute, nothing to run or load."""
    return nh3.clean(html, tags=set(ALLOWED_TAGS), clean_content_tags=set(DROPPED_WITH_CONTENT),
                     attributes={"td": {"colspan", "rowspan"}, "th": {"colspan", "rowspan"}},
                     url_schemes=set(), strip_comments=True, link_rel=None)


def mail_body(path: Path | None) -> MailBody:
    """The text and the sanitised HTML of the stored mail at ``path``."""
    if path is None:
        return MailBody("", None, error="the stored mail is missing from the data folder")
    try:
        if path.stat().st_size > MAX_RAW:
            return MailBody("", None, error=f"the mail is larger than {MAX_RAW // (1024 * 1024)} MB: "
                                            "download the .eml to read it")
        parsed = mime.parse(path.read_bytes())
    except OSError as exc:
        return MailBody("", None, error=f"the stored mail cannot be read: {exc.strerror or exc}")
    except GatewayError as exc:
        return MailBody("", None, error=f"the mail cannot be read: {exc}")
    text, html = parsed.text or "", parsed.html
    cut = len(text) > MAX_TEXT or (html is not None and len(html) > MAX_HTML)
    safe = None
    images = 0
    if html is not None and html.strip():
        html = html[:MAX_HTML]
        images = len(_IMG.findall(html))
        safe = sanitise_html(html).strip() or None
    return MailBody(text[:MAX_TEXT], safe, images, cut)
