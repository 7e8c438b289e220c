"""The URL fetcher for weasyprint that fetches nothing (its own module: importing
weasyprint takes a second or more, so only rendering pays for it)."""

from __future__ import annotations

import logging
from typing import Any

from weasyprint.urls import URLFetcher

log = logging.getLogger("gateway.einvoice.render")


class RefusingFetcher(URLFetcher):  # type: ignore[misc]
    """A weasyprint URL fetcher that fetches nothing: every URL is refused."""

    def __init__(self) -> None:
        super().__init__(allowed_protocols=(), allow_redirects=False)

    def fetch(self, url: str, headers: Any = None) -> Any:
        """Refuse ``url``; weasyprint then leaves the resource out."""
        log.warning("refused to fetch %.200s while rendering an e-invoice", url)
        raise ValueError(f"fetching is disabled: {url[:200]}")
