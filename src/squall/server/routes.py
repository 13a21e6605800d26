"""HTTP routing: which handler serves each path (DESIGN.md §2).

| Path | What |
|---|---|
| ``GET /connection/websocket`` | Centrifugo client protocol (JSON) over WebSocket |
| ``POST /api/<method>`` | Server API (needs ``http_api.key``) |
| ``GET /health`` | liveness: 200 ``{}`` |
| ``GET /metrics`` | Prometheus text format (``prometheus.enabled``) |
| ``GET /`` and ``GET /dev/token`` | demo page and its token endpoint (``development`` only) |
| ``<prefix>/...`` | SockJS applications mounted with ``App.sockjs(prefix)`` |
| ``/connection/sockjs/...`` | Centrifugo protocol over SockJS, see server/centrifuge_sockjs.py |
| ``/connection/{http_stream,sse,uni_*}``, ``/emulation`` | see server/stream_routes.py |
"""

from __future__ import annotations

import asyncio
import logging
import time
from importlib import resources
from typing import TYPE_CHECKING, Protocol

import msgspec

from squall import tokens
from squall.core.api import ServerAPI
from squall.core.metrics import CONTENT_TYPE_LATEST
from squall.errors import Disconnect
from squall.protocol import handshake
from squall.server.api import handle_api
from squall.server.centrifuge_sockjs import CentrifugeSockJS
from squall.server.http import HttpConnection
from squall.server.http_types import Request, Response
from squall.server.origin import OriginChecker
from squall.server.sockjs import SockJSServer
from squall.server.stream_routes import StreamRoutes
from squall.server.websocket import WebSocketConnection, check_upgrade

if TYPE_CHECKING:
    from squall.core.node import Node
    from squall.core.session import Session

__all__ = ["OpenTransports", "Router"]

logger = logging.getLogger("squall.http")

_JSON = "application/json"


class _OpenTransport(Protocol):
    """What shutdown needs from an open connection (WebSocket, streams)."""

    @property
    def session(self) -> Session | None: ...

    def abort(self) -> None: ...


class OpenTransports:
    """The upgraded (non-HTTP) connections still open, so shutdown can wait for them."""

    def __init__(self) -> None:
        self._open: set[_OpenTransport] = set()
        self._empty: asyncio.Event | None = None

    def disconnect_all(self, disconnect: Disconnect) -> None:
        """Send every open connection ``disconnect``, connected or still connecting."""
        for transport in list(self._open):
            if transport.session is not None:
                transport.session.disconnect(disconnect)

    def abort_all(self) -> None:
        """Drop every remaining connection now (the end of a shutdown timeout)."""
        for transport in list(self._open):
            transport.abort()

    def add(self, transport: _OpenTransport) -> None:
        self._open.add(transport)

    def discard(self, transport: _OpenTransport) -> None:
        self._open.discard(transport)
        if not self._open and self._empty is not None:
            self._empty.set()

    def __len__(self) -> int:
        return len(self._open)

    async def wait_empty(self) -> None:
        while self._open:
            self._empty = asyncio.Event()
            await self._empty.wait()
        self._empty = None


class Router:
    """The server's one HTTP handler: dispatches by path."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.transports = OpenTransports()
        self.settings = node.settings
        self.api = ServerAPI(node)
        self.origins = OriginChecker(self.settings.client.allowed_origins)
        self._demo_page: bytes | None = None
        self.streams = StreamRoutes(node, self.origins, self.transports)
        self.sockjs: list[SockJSServer] = []
        """Mounted SockJS applications, matched by path prefix in order."""
        self.centrifuge_sockjs = CentrifugeSockJS(node, self.transports)
        """``/connection/sockjs``: the Centrifugo client protocol over SockJS."""

    async def __call__(self, request: Request, conn: HttpConnection) -> Response | None:
        path = request.path
        if path == "/connection/websocket":
            return self.websocket(request, conn)
        if path in self.streams.paths:
            return await self.streams.handle(request, conn)
        if path == "/api" or path.startswith("/api/"):
            return await handle_api(
                request,
                self.api,
                key=self.settings.http_api.key,
                insecure=self.settings.http_api.insecure,
            )
        if path == "/health" and self.settings.health.enabled:
            return Response(200, b"{}", _JSON)
        if path == "/metrics" and self.settings.prometheus.enabled:
            self.node.metrics.set_subscriptions(self.node.hub.num_subscriptions)
            return Response(200, self.node.metrics.render(), CONTENT_TYPE_LATEST)
        if self.settings.development:
            if path == "/" or path == "/index.html":
                return Response(200, self.demo_page(), "text/html; charset=utf-8")
            if path == "/dev/token":
                return self.dev_token(request)
        if self.centrifuge_sockjs.matches(path):
            return await self.centrifuge_sockjs.handle(request, conn)
        for mount in self.sockjs:
            if mount.matches(path):
                return await mount.handle(request, conn)
        return Response(404, b"not found")

    # WebSocket ---------------------------------------------------------------------------

    def websocket(self, request: Request, conn: HttpConnection) -> Response | None:
        """Validate the opening handshake (RFC 6455 §4.2.1) and hand the socket over."""
        key = check_upgrade(request, self.origins, "WebSocket")
        if isinstance(key, Response):
            return key
        remote = request.remote[0] if request.remote else ""
        protocol = WebSocketConnection(
            self.node,
            headers=request.headers.as_dict(),
            remote_addr=remote,
            max_message_size=self.settings.websocket.message_size_limit,
            write_timeout=self.settings.websocket.write_timeout,
            registry=self.transports,
        )
        conn.upgrade(handshake.build_response(key), protocol)
        return None

    # Development mode --------------------------------------------------------------------

    def demo_page(self) -> bytes:
        if self._demo_page is None:
            self._demo_page = (
                resources.files("squall.server").joinpath("static/index.html").read_bytes()
            )
        return self._demo_page

    def dev_token(self, request: Request) -> Response:
        """Development only: a connection token for ``?user=`` (one hour)."""
        user = (request.query().get("user") or [""])[0].strip()[:64]
        if not user:
            return Response(400, b"user query parameter required")
        secret = self.settings.client.token.hmac_secret_key
        if not secret:
            return Response(500, b"client.token.hmac_secret_key is not set")
        token = tokens.make_connection_token(secret, user, ttl=3600, now=time.time())
        return Response(
            200,
            msgspec.json.encode({"token": token}),
            _JSON,
            headers=[("Cache-Control", "no-store")],
        )
