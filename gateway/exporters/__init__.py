"""Sync targets: one small interface, looked up by the ``type:`` the user wrote."""

from __future__ import annotations

from gateway.exporters.base import ExportItem, Exporter, make_exporter

__all__ = ["ExportItem", "Exporter", "make_exporter"]
