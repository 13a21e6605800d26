"""``/connection/uni_websocket``: Centrifugo's unidirectional WebSocket transport.

The client sends its ``ConnectRequest`` (a bare JSON object, not a command) as the first text
message, or in the ``cf_connect`` query parameter of the handshake
(docs/transports/uni_websocket.md). From then on the server only pushes bare ``Push``
objects, one per text frame (``{}`` is the application ping; WebSocket pings are answered by
the codec as usual); later client messages are ignored. A refused connect closes with 3501
(bad request) after a disconnect push, as every unidirectional transport does.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Mapping
from typing import TYPE_CHECKING

import msgspec

from squall.core.commands import execute
from squall.errors import Disconnect
from squall.protocol import client as proto
from squall.protocol import websocket as ws
from squall.server.streams import disconnect_push, refuse_if_not_connected, to_uni
from squall.server.websocket import WebSocketConnection

if TYPE_CHECKING:
    from squall.core.node import Node
    from squall.server.routes import OpenTransports

__all__ = ["UNI_WEBSOCKET_FRAMING", "UniWebSocketConnection", "UniWebSocketFraming"]

logger = logging.getLogger("squall.websocket")


class UniWebSocketFraming:
    """Unidirectional pushes, one text frame each."""

    __slots__ = ()

    def frame(self, payload: bytes) -> bytes:
        converted = to_uni(payload)
        if not converted:
            return b""
        return b"".join(ws.encode_frame(ws.Opcode.TEXT, line) for line in converted.split(b"\n"))


UNI_WEBSOCKET_FRAMING = UniWebSocketFraming()


class UniWebSocketConnection(WebSocketConnection):
    """One unidirectional WebSocket client (see the module docstring)."""

    __slots__ = ("_connect_data", "_connect_started")

    name = "uni_websocket"
    unidirectional = True
    emulation = False
    framing = UNI_WEBSOCKET_FRAMING  # type: ignore[assignment]

    def __init__(
        self,
        node: Node,
        *,
        headers: Mapping[str, str],
        remote_addr: str,
        max_message_size: int,
        write_timeout: float = 1.0,
        registry: OpenTransports | None = None,
        connect_data: bytes | None = None,
    ) -> None:
        super().__init__(
            node,
            headers=headers,
            remote_addr=remote_addr,
            max_message_size=max_message_size,
            write_timeout=write_timeout,
            registry=registry,
        )
        self._connect_data = connect_data
        self._connect_started = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.session is not None:
            self.session.session_id = secrets.token_urlsafe(18)
        if self._connect_data is not None:
            self._start_connect(self._connect_data)

    def message(self, data: bytes) -> None:
        if not self._connect_started:
            self._start_connect(data)
        # Later messages: the protocol is unidirectional; ignored.

    def binary(self, data: bytes) -> None:
        self.message(data)

    def close(self, disconnect: Disconnect) -> None:
        """Disconnect push first (uni_websocket.disable_disconnect_push is off), then the
        close frame."""
        if not self._closing and self.writer is not None and not self.writer.closed:
            self.writer.offer(self.framing.frame(disconnect_push(disconnect)))
        super().close(disconnect)

    def _start_connect(self, data: bytes) -> None:
        self._connect_started = True
        session = self.session
        assert session is not None
        try:
            request = msgspec.json.decode(data, type=proto.ConnectRequest)
        except (msgspec.DecodeError, msgspec.ValidationError):
            logger.info("! client %s: malformed uni_websocket connect", session.client_id)
            session.disconnect(Disconnect.bad_request())
            return
        command = proto.Command(id=1, connect=request)

        async def connect() -> None:
            refuse_if_not_connected(session, await execute(session, command))

        self._node.spawn(connect())
