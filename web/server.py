"""Serves the Flask app in-process with waitress, in a thread."""

from __future__ import annotations

import logging
import threading
from typing import Any

from waitress.server import create_server

from web.app import create_app

log = logging.getLogger(__name__)


class WebServer:
    """The admin page and API on ``web.listen``."""

    def __init__(self, service: Any) -> None:
        host, port = service.settings.web.host_port
        self.app = create_app(service)
        self.server: Any = create_server(self.app, host=host, port=port, threads=4, ident="invoice-gateway")
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self.server.effective_port)

    def start(self) -> None:
        """Serve in a thread."""
        self._thread = threading.Thread(target=self.server.run, name="web", daemon=True)
        self._thread.start()
        log.info("admin page and API on http://%s:%d/", self.server.effective_host, self.port)

    def stop(self) -> None:
        """Close the listening socket and the connections."""
        self.server.close()
