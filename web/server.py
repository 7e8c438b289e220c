"""Serves the Flask app in-process with waitress, in a thread."""

from __future__ import annotations

import logging
import threading
from typing import Any

from waitress import wasyncore
from waitress.server import create_server

from web.app import create_app

log = logging.getLogger(__name__)


class WebServer:
    """The admin page and API on ``web.listen``."""

    def __init__(self, service: Any) -> None:
        web = service.settings.web
        host, port = web.host_port
        self.app = create_app(service)
        proxy: dict[str, Any] = {}
        if web.trusted_proxy:
            # from that address only: request.is_secure (Secure cookies) and
            # remote_addr (the login rate limit) follow the proxy's headers;
            # from any other the headers are removed before the app sees them
            proxy = {"trusted_proxy": web.trusted_proxy, "trusted_proxy_count": 1,
                     "trusted_proxy_headers": {"x-forwarded-proto", "x-forwarded-for"},
                     "clear_untrusted_proxy_headers": True}
        self.server: Any = create_server(self.app, host=host, port=port, threads=8, ident="invoice-gateway",
                                         **proxy)
        self._thread: threading.Thread | None = None
        self._stopping = False

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self.server.effective_port)

    def start(self) -> None:
        """Serve in a thread."""
        self._thread = threading.Thread(target=self._run, name="web", daemon=True)
        self._thread.start()
        log.info("admin page and API on http://%s:%d/", self.server.effective_host, self.port)

    def _run(self) -> None:
        try:
            self.server.run()
        except OSError:
            # while stopping, the loop may wait on a socket that was just closed (EBADF)
            if not self._stopping:
                raise

    def stop(self) -> None:
        """Stop listening, let requests in progress finish (up to 5 s), then close every connection.

        Sockets are closed in the server's own thread (through its trigger):
        closing them from here while it waits on them makes it fail.
        """
        server = self.server
        self._stopping = True
        if self._thread is None or not self._thread.is_alive():
            server.close()
            return
        trigger = server.trigger
        try:
            trigger.pull_trigger(lambda: wasyncore.dispatcher.close(server))
        except OSError:  # the loop already ended and closed its trigger
            self._thread.join(timeout=5)
            return
        server.task_dispatcher.shutdown(cancel_pending=True, timeout=5)

        def close_all() -> None:
            for channel in list(server._map.values()):
                if channel is not trigger:
                    channel.handle_close()
            trigger.close()  # the loop ends when nothing is left to watch

        try:
            trigger.pull_trigger(close_all)
        except OSError:
            pass  # the loop ended on its own meanwhile
        self._thread.join(timeout=5)
