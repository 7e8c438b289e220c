"""``/metrics``: Prometheus text, read from the store and the running parts at scrape time."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.registry import Collector

from gateway.errors import MAILBOX_ERROR_KINDS
from gateway.store import EXPORT_STATES, MESSAGE_STATUSES
from web.data import loads, parse_time


def _ts(value: str | None) -> float | None:
    t = parse_time(value)
    return t.timestamp() if t else None


class GatewayCollector(Collector):
    """Collects the gateway's numbers on each scrape (nothing is kept between scrapes)."""

    def __init__(self, service: Any) -> None:
        self.service = service

    def collect(self) -> Iterator[Any]:
        """Yield every metric family."""
        svc = self.service
        store = svc.store
        yield from self._messages(store)
        yield from self._exports(svc)
        yield from self._mailboxes(svc)
        yield from self._smtp(svc)
        yield from self._rules(svc)
        up = GaugeMetricFamily("gateway_up", "1 when the part works, 0 when it is down", labels=["part"])
        for part, ok in svc.health().items():
            up.add_metric([part], 1.0 if ok else 0.0)
        yield up

    def _messages(self, store: Any) -> Iterator[Any]:
        by_status = store.status_counts()
        m = GaugeMetricFamily("gateway_messages", "Messages stored, by status", labels=["status"])
        for status in sorted(set(MESSAGE_STATUSES) | set(by_status)):
            m.add_metric([status], float(by_status.get(status, 0)))
        yield m
        yield GaugeMetricFamily("gateway_documents", "Documents stored", value=float(store.document_count()))
        yield GaugeMetricFamily("gateway_ocr_waiting", "Documents waiting for OCR or being read (their exports wait)",
                                value=float(store.ocr_waiting()))
        count, seconds = store.processing_latency()
        yield SummaryMetricFamily("gateway_processing_latency_seconds",
                                  "Time from receipt of a message to its recorded outcome",
                                  count_value=count, sum_value=seconds)
        oldest = _ts(store.oldest_waiting())
        age = max(0.0, dt.datetime.now(dt.timezone.utc).timestamp() - oldest) if oldest else 0.0
        yield GaugeMetricFamily("gateway_oldest_waiting_message_age_seconds",
                                "Age of the oldest message not yet processed (0: none waits)", value=age)
        stats = getattr(self.service.pipeline, "stats", {})
        yield CounterMetricFamily("gateway_pipeline_processed", "Messages processed since start",
                                  value=float(stats.get("processed", 0)))
        yield CounterMetricFamily("gateway_pipeline_errors", "Processing failures since start",
                                  value=float(stats.get("errors", 0)))
        yield CounterMetricFamily("gateway_pipeline_busy_seconds", "Seconds spent processing since start",
                                  value=float(stats.get("seconds", 0.0)))

    def _exports(self, svc: Any) -> Iterator[Any]:
        counts = svc.store.export_counts()
        health = svc.store.export_health()
        e = GaugeMetricFamily("gateway_exports", "Export rows by target and state", labels=["target", "state"])
        last = GaugeMetricFamily("gateway_export_last_success_timestamp_seconds",
                                 "When a target last delivered a document", labels=["target"])
        targets = [t.name for t in svc.settings.exports]
        for name in sorted(set(targets) | set(counts)):
            for state in sorted(set(EXPORT_STATES) | set(counts.get(name, {}))):
                e.add_metric([name, state], float(counts.get(name, {}).get(state, 0)))
            ts = _ts(health.get(name, {}).get("last_delivered"))
            if ts:
                last.add_metric([name], ts)
        yield e
        yield last

    def _mailboxes(self, svc: Any) -> Iterator[Any]:
        up = GaugeMetricFamily("gateway_mailbox_up", "1 when the last poll of a mailbox succeeded", labels=["mailbox"])
        fails = GaugeMetricFamily("gateway_mailbox_consecutive_failures", "Polls failed in a row",
                                  labels=["mailbox"])
        last_ok = GaugeMetricFamily("gateway_mailbox_last_success_timestamp_seconds",
                                    "When a poll of a mailbox last succeeded", labels=["mailbox"])
        errors = CounterMetricFamily("gateway_mailbox_poll_errors",
                                     "Failed polls of a mailbox, by the kind of their error (never reset)",
                                     labels=["mailbox", "kind"])
        counted = svc.store.poll_errors()
        stat = GaugeMetricFamily("gateway_mailbox_stat", "A mailbox's poll statistics as the poller reports them",
                                 labels=["mailbox", "stat"])
        for cfg in svc.settings.mailboxes:
            st = svc.store.mailbox_status(cfg.name) or {}
            up.add_metric([cfg.name], 0.0 if st.get("last_error") or not st.get("last_success") else 1.0)
            fails.add_metric([cfg.name], float(st.get("failures") or 0))
            ts = _ts(st.get("last_success"))
            if ts:
                last_ok.add_metric([cfg.name], ts)
            stats = loads(st.get("stats"), {})
            if not isinstance(stats, dict):
                stats = {}
            by_kind = counted.get(cfg.name, {})
            for kind in sorted(set(MAILBOX_ERROR_KINDS) | set(by_kind)):
                errors.add_metric([cfg.name, kind], float(by_kind.get(kind, 0)))
            for key, value in sorted(stats.items()):
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    stat.add_metric([cfg.name, re.sub(r"[^a-zA-Z0-9_]", "_", str(key))], float(value))
        yield from (up, fails, last_ok, errors, stat)

    def _smtp(self, svc: Any) -> Iterator[Any]:
        smtp = svc.smtp
        stats: dict[str, int] = dict(smtp.stats) if smtp is not None else {}
        events = CounterMetricFamily("gateway_smtp_events",
                                     "SMTP events since start (accepted, refused_rcpt, errors, sessions, ...)",
                                     labels=["event"])
        for key in sorted(set(stats) | {"accepted", "refused_rcpt", "errors", "sessions"}):
            events.add_metric([key], float(stats.get(key, 0)))
        yield events
        refused = sum(v for k, v in stats.items() if k.startswith("refused"))
        yield CounterMetricFamily("gateway_smtp_refusals", "Recipients and messages refused by the SMTP server",
                                  value=float(refused))
        yield CounterMetricFamily("gateway_smtp_sessions", "SMTP sessions since start",
                                  value=float(stats.get("sessions", 0)))

    def _rules(self, svc: Any) -> Iterator[Any]:
        state = svc.rules
        ruleset = state.ruleset
        yield GaugeMetricFamily("gateway_rules", "Rules in force", value=float(len(ruleset.rules) if ruleset else 0))
        yield GaugeMetricFamily("gateway_rules_problems", "Problems of the last load of the rules folder",
                                value=float(len(state.problems)))
        if state.loaded_at is not None:
            yield GaugeMetricFamily("gateway_rules_loaded_timestamp_seconds", "When the rules in force were loaded",
                                    value=state.loaded_at.timestamp())


def registry_for(service: Any) -> CollectorRegistry:
    """A registry of the gateway's collector (one per app, so tests with several apps don't clash)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(GatewayCollector(service))
    return reg


def render(registry: CollectorRegistry) -> bytes:
    """The Prometheus text exposition."""
    return generate_latest(registry)
