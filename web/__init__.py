"""The Flask admin page and JSON API of invoice-gateway."""

from __future__ import annotations

from web.app import create_app

__all__ = ["create_app"]
