"""Prometheus metrics of one node, in a registry of its own (so tests can run many nodes).

Hot paths count in bulk: a broadcast adds its recipient count once, never once per recipient.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


class Metrics:
    """The node's counters and gauges (names prefixed ``squall_``)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self._connections = Gauge(
            "squall_connections",
            "Open client connections, by transport.",
            ["transport"],
            registry=r,
        )
        self._connections_total = Counter(
            "squall_connections_accepted",
            "Client connections accepted (connect succeeded).",
            ["transport"],
            registry=r,
        )
        self._subscriptions = Gauge(
            "squall_subscriptions", "Channel subscriptions held on this node.", registry=r
        )
        self._messages_sent = Counter(
            "squall_messages_sent",
            "Pushes written to clients (publications, join, leave).",
            registry=r,
        )
        self._frames_received = Counter(
            "squall_frames_received", "Frames received from clients.", registry=r
        )
        self._bytes_received = Counter(
            "squall_bytes_received", "Bytes of frames received from clients.", registry=r
        )
        self._published = Counter(
            "squall_publications", "Publications made through this node.", registry=r
        )
        self._slow = Counter(
            "squall_slow_disconnects",
            "Clients disconnected because their outgoing queue overflowed (code 3008).",
            registry=r,
        )
        self._disconnects = Counter(
            "squall_disconnects",
            "Connections closed by the server, by code.",
            ["code"],
            registry=r,
        )
        self._commands = Histogram(
            "squall_command_duration_seconds",
            "Client command latency, by method.",
            ["method"],
            registry=r,
            buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0),
        )
        self._command_errors = Counter(
            "squall_command_errors",
            "Client commands answered with an error, by method and code.",
            ["method", "code"],
            registry=r,
        )
        self._command_children: dict[str, Histogram] = {}  # labels() is slow: cache children
        self._api = Histogram(
            "squall_api_duration_seconds",
            "Server API call latency, by method.",
            ["method"],
            registry=r,
            buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0),
        )

    def connection_opened(self, transport: str) -> None:
        self._connections.labels(transport).inc()
        self._connections_total.labels(transport).inc()

    def connection_closed(self, transport: str) -> None:
        self._connections.labels(transport).dec()

    def set_subscriptions(self, n: int) -> None:
        self._subscriptions.set(n)

    def messages_sent(self, n: int) -> None:
        if n:
            self._messages_sent.inc(n)

    def frames_received(self, size: int) -> None:
        self._frames_received.inc()
        self._bytes_received.inc(size)

    def published(self) -> None:
        self._published.inc()

    def slow_disconnect(self) -> None:
        self._slow.inc()

    def disconnected(self, code: int) -> None:
        self._disconnects.labels(str(code)).inc()

    def command_error(self, method: str, code: int) -> None:
        self._command_errors.labels(method, str(code)).inc()

    @contextmanager
    def command(self, method: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            child = self._command_children.get(method)
            if child is None:
                child = self._command_children[method] = self._commands.labels(method)
            child.observe(time.perf_counter() - started)

    @contextmanager
    def api_call(self, method: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self._api.labels(method).observe(time.perf_counter() - started)

    def render(self) -> bytes:
        """The Prometheus text exposition of this registry."""
        return generate_latest(self.registry)
