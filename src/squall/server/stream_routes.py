"""The HTTP face of the emulation and unidirectional transports: one object the router asks
for the paths below (DESIGN.md §2).

| Path | What |
|---|---|
| ``POST /connection/http_stream`` | bidirectional emulation, newline-delimited JSON down |
| ``GET /connection/sse`` | bidirectional emulation, Server-Sent Events down |
| ``POST /emulation`` | the commands of both, routed by ``{session, node}`` |
| ``GET|POST /connection/uni_sse`` | unidirectional, Server-Sent Events |
| ``POST /connection/uni_http_stream`` | unidirectional, newline-delimited JSON |
| ``GET /connection/uni_websocket`` | unidirectional, WebSocket |

Every one answers CORS preflights for ``client.allowed_origins`` (server/origin.py) and
refuses other browser origins with 403, counts its connections under its transport name, is
bounded by ``websocket.message_size_limit`` and ``client.queue_max_size``, and is in the
router's open transports, so graceful shutdown disconnects and waits for it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from squall.protocol import handshake
from squall.server.emulation import EmulationSessions, handle_emulation
from squall.server.http_types import Request, Response
from squall.server.streams import (
    HTTP_STREAM,
    SSE,
    UNI_HTTP_STREAM,
    UNI_SSE,
    StreamKind,
    connect_command,
    serve_stream,
)
from squall.server.uni_websocket import UniWebSocketConnection
from squall.server.websocket import check_upgrade

if TYPE_CHECKING:
    from squall.core.node import Node
    from squall.server.http import HttpConnection
    from squall.server.origin import OriginChecker
    from squall.server.routes import OpenTransports

__all__ = ["StreamRoutes"]

logger = logging.getLogger("squall.http")

_STREAMS: dict[str, StreamKind] = {
    "/connection/http_stream": HTTP_STREAM,
    "/connection/sse": SSE,
    "/connection/uni_http_stream": UNI_HTTP_STREAM,
    "/connection/uni_sse": UNI_SSE,
}


class StreamRoutes:
    """Serves the paths in the module docstring."""

    paths = frozenset((*_STREAMS, "/emulation", "/connection/uni_websocket"))

    def __init__(self, node: Node, origins: OriginChecker, transports: OpenTransports) -> None:
        self.node = node
        self.origins = origins
        self.transports = transports
        self.emulation = EmulationSessions()

    async def handle(self, request: Request, conn: HttpConnection) -> Response | None:
        path = request.path
        if path == "/emulation":
            return await handle_emulation(request, self.node, self.emulation, self.origins)
        if path == "/connection/uni_websocket":
            return self.uni_websocket(request, conn)
        kind = _STREAMS[path]
        return await serve_stream(
            request,
            conn,
            self.node,
            kind,
            origins=self.origins,
            registry=self.transports,
            on_connected=self.emulation.add if kind.emulation else None,
            on_gone=self.emulation.discard if kind.emulation else None,
        )

    def uni_websocket(self, request: Request, conn: HttpConnection) -> Response | None:
        key = check_upgrade(request, self.origins, "uni_websocket")
        if isinstance(key, Response):
            return key
        settings = self.node.settings
        protocol = UniWebSocketConnection(
            self.node,
            headers=request.headers.as_dict(),
            remote_addr=request.remote[0] if request.remote else "",
            max_message_size=settings.websocket.message_size_limit,
            write_timeout=settings.websocket.write_timeout,
            registry=self.transports,
            connect_data=connect_command(request, query=True, body=False),
        )
        conn.upgrade(handshake.build_response(key), protocol)
        return None
