"""WebSocket transport: drives the sans-I/O codec for one upgraded connection.

The connection is an ``asyncio.Protocol`` (no task while idle). Bytes from the socket go to
:class:`~squall.protocol.websocket.WebSocketProtocol`; complete text messages go to the
session; control replies the codec queues (pongs, close echoes) go out through the same
bounded :class:`~squall.core.writer.Writer` as everything else, so order is kept.

Closing (RFC 6455 §7.1.1, §7.1.2): when the server disconnects a client it sends a close frame
with the disconnect's code and reason, then waits for the client's close frame (at most
``close_timeout`` seconds) before closing TCP, so the client reads the code instead of a reset.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, cast

from squall.core.session import Session
from squall.core.writer import Writer
from squall.errors import Disconnect
from squall.protocol import websocket as ws

if TYPE_CHECKING:
    from squall.core.node import Node
    from squall.server.routes import OpenTransports

__all__ = ["TEXT_FRAMING", "TextFraming", "WebSocketConnection"]

logger = logging.getLogger("squall.websocket")


class TextFraming:
    """One protocol payload -> one unmasked WebSocket text frame (RFC 6455 §5.6)."""

    __slots__ = ()

    def frame(self, payload: bytes) -> bytes:
        return ws.encode_frame(ws.Opcode.TEXT, payload)


TEXT_FRAMING = TextFraming()


class WebSocketConnection(asyncio.Protocol):
    """One client over WebSocket; implements :class:`squall.core.transport.Transport`."""

    name = "websocket"
    unidirectional = False
    emulation = False
    framing = TEXT_FRAMING

    def __init__(
        self,
        node: Node,
        *,
        headers: Mapping[str, str],
        remote_addr: str,
        max_message_size: int,
        write_timeout: float = 1.0,
        close_timeout: float = 3.0,
        registry: OpenTransports | None = None,
    ) -> None:
        self._registry = registry
        self._node = node
        self._headers = headers
        self._remote_addr = remote_addr
        self._codec = ws.WebSocketProtocol(max_message_size=max_message_size)
        self._close_timeout = close_timeout
        self._write_timeout = write_timeout
        self._write_handle: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None
        self._close_handle: asyncio.TimerHandle | None = None
        self._closing = False
        self.writer: Writer | None = None
        self.session: Session | None = None

    # asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        if self._registry is not None:
            self._registry.add(self)
        self.writer = Writer(
            transport.write, transport.writelines, self._node.settings.client.queue_max_size
        )
        self.session = Session(
            self._node,
            self,
            self.writer,
            client_id=self._node.new_client_id(),
            headers=self._headers,
            remote_addr=self._remote_addr,
        )

    def data_received(self, data: bytes) -> None:
        codec = self._codec
        codec.receive_data(data)
        self._flush_codec()
        session = self.session
        assert session is not None
        for event in codec.events_received():
            if isinstance(event, ws.Message):
                if event.text:
                    session.receive_frame(event.data)
                else:
                    # Squall's client protocol here is JSON: binary frames are a client bug.
                    logger.info("! client %s sent a binary frame", session.client_id)
                    session.disconnect(Disconnect.bad_request())
            elif isinstance(event, ws.CloseReceived):
                # The peer closed (or answered our close): our echo is queued; end now.
                self._flush_codec()
                self._finish()
                session.connection_lost(None)
            elif isinstance(event, ws.Failure):
                logger.info(
                    "! client %s broke the WebSocket protocol: %s (%d)",
                    session.client_id,
                    event.reason,
                    event.code,
                )
                self._flush_codec()
                self._finish()
                session.connection_lost(None)
            # Ping: the codec queued the pong. Pong: nothing to do.

    def eof_received(self) -> bool | None:
        self._codec.receive_eof()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._registry is not None:
            self._registry.discard(self)
        if self._write_handle is not None:
            self._write_handle.cancel()
            self._write_handle = None
        if self._close_handle is not None:
            self._close_handle.cancel()
            self._close_handle = None
        if self.writer is not None:
            self.writer.close()
        if self.session is not None:
            self.session.connection_lost(None)

    def pause_writing(self) -> None:
        """The socket stopped draining: queue in the writer, and give the client
        ``websocket.write_timeout`` to read before disconnecting it (3009 write error)."""
        if self.writer is not None:
            self.writer.pause()
        if self._write_handle is None and not self._closing:
            self._write_handle = asyncio.get_running_loop().call_later(
                self._write_timeout, self._write_timed_out
            )

    def resume_writing(self) -> None:
        if self._write_handle is not None:
            self._write_handle.cancel()
            self._write_handle = None
        if self.writer is not None:
            self.writer.resume()

    # Transport (core) --------------------------------------------------------------------

    def write(self, data: bytes) -> bool:
        return self.writer.offer(data) if self.writer is not None else True

    def close(self, disconnect: Disconnect) -> None:
        """Flush the queue, send a close frame with the disconnect, wait for the echo."""
        if self._closing or self._transport is None:
            return
        self._closing = True
        self._node.metrics.disconnected(disconnect.code)
        self._codec.send_close(disconnect.code, disconnect.reason)
        if self.writer is not None:
            # Hand the queue to the transport, then write the close frame after it directly:
            # a paused writer would otherwise keep (and drop) it.
            self.writer.flush()
            self.writer.close()
        self._flush_codec()
        self._close_handle = asyncio.get_running_loop().call_later(
            self._close_timeout, self._close_timed_out
        )

    def abort(self) -> None:
        """Close TCP at once, without flushing (a shutdown that ran out of time)."""
        if self._transport is not None:
            self._transport.abort()

    # Internals ---------------------------------------------------------------------------

    def _write_timed_out(self) -> None:
        self._write_handle = None
        if self.session is not None:
            self.session.disconnect(Disconnect.write_error())

    def _close_timed_out(self) -> None:
        """The client did not answer our close frame in time: drop the connection without
        waiting for its buffer to drain (a client that stopped reading never drains it)."""
        self._close_handle = None
        self.abort()

    def _flush_codec(self) -> None:
        transport = self._transport
        if transport is None:
            return
        for data in self._codec.data_to_send():
            # Control frames bypass the queue limit: they are tiny and must not be dropped.
            if self.writer is not None and not self.writer.closed:
                self.writer.offer(data)
            else:
                transport.write(data)

    def _finish(self) -> None:
        if self._close_handle is not None:
            self._close_handle.cancel()
            self._close_handle = None
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()
