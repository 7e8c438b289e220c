"""Logging set-up shared by the CLI and the worker processes."""

from __future__ import annotations

import logging

# Libraries that log every step at INFO (weasyprint's progress, waitress, fontTools):
# useful while debugging (-vv), noise in a gateway's log.
NOISY = ("mail.log", "waitress", "fontTools", "weasyprint", "watchdog", "httpx", "httpcore", "apprise")


def quiet_libraries() -> None:
    """Show only warnings and errors from the libraries in NOISY."""
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)
