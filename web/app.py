"""The Flask application factory."""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify


def create_app(service: Any) -> Flask:
    """The app for a running (or CLI-built) Service."""
    app = Flask(__name__)
    app.config["SERVICE"] = service
    app.config["JSON_SORT_KEYS"] = False

    from web.api import bp as api_bp

    app.register_blueprint(api_bp)

    @app.get("/healthz")
    def healthz() -> Any:
        parts = service.health()
        down = [k for k, ok in parts.items() if not ok]
        body = {"status": "ok" if not down else "down", "parts": parts, "down": down}
        return jsonify(body), (200 if not down else 503)

    return app
