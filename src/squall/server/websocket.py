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

from squall.core.session import NO_HEADERS, Session
from squall.core.writer import Writer
from squall.errors import Disconnect
from squall.protocol import handshake
from squall.protocol import websocket as ws
from squall.server.http_types import Request, Response
from squall.server.origin import OriginChecker

if TYPE_CHECKING:
    from squall.core.node import Node
    from squall.server.routes import OpenTransports

__all__ = [
    "TEXT_FRAMING",
    "TextFraming",
    "WebSocketConnection",
    "WebSocketDriver",
    "check_upgrade",
]

logger = logging.getLogger("squall.websocket")


class TextFraming:
    """One protocol payload -> one unmasked WebSocket text frame (RFC 6455 §5.6)."""

    __slots__ = ()

    def frame(self, payload: bytes) -> bytes:
        return ws.encode_frame(ws.Opcode.TEXT, payload)


TEXT_FRAMING = TextFraming()


def check_upgrade(request: Request, origins: OriginChecker, what: str) -> str | Response:
    """The opening handshake's key, or the response that refuses it: RFC 6455 §4.2.1's checks
    (426 with the supported version for a wrong one), then ``client.allowed_origins`` (403).
    ``what`` names the endpoint in the log."""
    try:
        key = handshake.check_request(request.method, request.headers.as_dict())
    except handshake.HandshakeError as exc:
        headers = [("Sec-WebSocket-Version", "13")] if exc.status == 426 else []
        return Response(exc.status, exc.message.encode(), headers=headers)
    origin = request.headers.get("origin")
    if not origins.allowed(origin, request.headers.get("host")):
        logger.info("! refused %s from origin %r (client.allowed_origins)", what, origin)
        return Response(403, b"origin not allowed")
    return key


class WebSocketDriver(asyncio.Protocol):
    """An upgraded connection driving the sans-I/O codec; subclasses say what messages mean.

    Writes go through a bounded :class:`~squall.core.writer.Writer`. Hooks: :meth:`message`
    (a text message), :meth:`binary` (a binary one), :meth:`peer_closed` (the peer closed or
    broke the protocol; TCP is closing), :meth:`lost` (TCP is gone, always called once) and
    :meth:`write_timed_out` (the socket stayed blocked for ``write_timeout`` seconds).
    """

    __slots__ = (
        "_close_handle",
        "_close_timeout",
        "_closing",
        "_queue_max_size",
        "_write_handle",
        "_write_timeout",
        "codec",
        "transport",
        "writer",
    )

    def __init__(
        self,
        *,
        max_message_size: int | None,
        queue_max_size: int,
        close_timeout: float = 3.0,
        write_timeout: float | None = None,
    ) -> None:
        self.codec = ws.WebSocketProtocol(max_message_size=max_message_size)
        self.transport: asyncio.Transport | None = None
        self.writer: Writer | None = None
        self._queue_max_size = queue_max_size
        self._close_timeout = close_timeout
        self._write_timeout = write_timeout
        self._close_handle: asyncio.TimerHandle | None = None
        self._write_handle: asyncio.TimerHandle | None = None
        self._closing = False

    # Hooks -------------------------------------------------------------------------------

    def message(self, data: bytes) -> None:
        raise NotImplementedError

    def binary(self, data: bytes) -> None:
        self.abort()

    def peer_closed(self, event: ws.CloseReceived | ws.Failure) -> None:
        return None

    def lost(self) -> None:
        return None

    def write_timed_out(self) -> None:
        self.abort()

    # asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.writer = Writer(self.transport.write, None, self._queue_max_size, join=True)

    def data_received(self, data: bytes) -> None:
        codec = self.codec
        codec.receive_data(data)
        self.flush_codec()
        for event in codec.events_received():
            if isinstance(event, ws.Message):
                if event.text:
                    self.message(event.data)
                else:
                    self.binary(event.data)
            elif isinstance(event, ws.CloseReceived | ws.Failure):
                # The peer closed (or answered our close), or broke the protocol: our close
                # frame is queued; end now.
                self.flush_codec()
                self.finish_tcp()
                self.peer_closed(event)
                return
            # Ping: the codec queued the pong. Pong: nothing to do.

    def eof_received(self) -> bool | None:
        self.codec.receive_eof()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        for handle in (self._write_handle, self._close_handle):
            if handle is not None:
                handle.cancel()
        self._write_handle = self._close_handle = None
        if self.writer is not None:
            self.writer.close()
        self.lost()

    def pause_writing(self) -> None:
        """The socket stopped draining: queue in the writer, and give the client
        ``write_timeout`` to read before :meth:`write_timed_out`."""
        if self.writer is not None:
            self.writer.pause()
        if self._write_timeout is not None and self._write_handle is None and not self._closing:
            self._write_handle = asyncio.get_running_loop().call_later(
                self._write_timeout, self._on_write_timeout
            )

    def resume_writing(self) -> None:
        if self._write_handle is not None:
            self._write_handle.cancel()
            self._write_handle = None
        if self.writer is not None:
            self.writer.resume()

    # Output ------------------------------------------------------------------------------

    def write_frame(self, frame: bytes) -> bool:
        """Queue an encoded frame; False when the queue overflowed."""
        return self.writer.offer(frame) if self.writer is not None else True

    def send_close(self, code: int, reason: str) -> bool:
        """Start the closing handshake (RFC 6455 §7.1.2): flush the queue, send a close frame
        after it, and wait up to ``close_timeout`` for the echo before dropping TCP. False if
        it had already started."""
        if self._closing or self.transport is None:
            return False
        self._closing = True
        self.codec.send_close(code, reason)
        if self.writer is not None:
            # Hand the queue to the transport, then write the close frame after it directly:
            # a paused writer would otherwise keep (and drop) it.
            self.writer.flush()
            self.writer.close()
        self.flush_codec()
        self._close_handle = asyncio.get_running_loop().call_later(
            self._close_timeout, self._close_timed_out
        )
        return True

    def flush_codec(self) -> None:
        """Write what the codec queued (pongs, close frames) in order with everything else."""
        transport = self.transport
        if transport is None:
            return
        for data in self.codec.data_to_send():
            # Control frames bypass the queue limit: they are tiny and must not be dropped.
            if self.writer is not None and not self.writer.closed:
                self.writer.offer(data)
            else:
                transport.write(data)

    def finish_tcp(self) -> None:
        """The handshake is over: flush and close TCP."""
        if self._close_handle is not None:
            self._close_handle.cancel()
            self._close_handle = None
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        """Drop TCP at once, without flushing (broken input, a timeout, end of shutdown)."""
        if self.transport is not None:
            self.transport.abort()

    def _on_write_timeout(self) -> None:
        self._write_handle = None
        self.write_timed_out()

    def _close_timed_out(self) -> None:
        """The client did not answer our close frame in time: drop the connection without
        waiting for its buffer to drain (a client that stopped reading never drains it)."""
        self._close_handle = None
        self.abort()


class WebSocketConnection(WebSocketDriver):
    """One client over WebSocket; implements :class:`squall.core.transport.Transport`."""

    __slots__ = ("_headers", "_node", "_registry", "_remote_addr", "session")

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
        super().__init__(
            max_message_size=max_message_size,
            queue_max_size=node.settings.client.queue_max_size,
            close_timeout=close_timeout,
            write_timeout=write_timeout,
        )
        self._registry = registry
        self._node = node
        self._headers = headers
        self._remote_addr = remote_addr
        self.session: Session | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.writer is not None
        if self._registry is not None:
            self._registry.add(self)
        self.session = Session(
            self._node,
            self,
            self.writer,
            client_id=self._node.new_client_id(),
            headers=self._headers,
            remote_addr=self._remote_addr,
        )
        self._headers = NO_HEADERS  # the session has them now

    def message(self, data: bytes) -> None:
        if self.session is not None:
            self.session.receive_frame(data)

    def binary(self, data: bytes) -> None:
        # Squall's client protocol here is JSON: binary frames are a client bug.
        if self.session is not None:
            logger.info("! client %s sent a binary frame", self.session.client_id)
            self.session.disconnect(Disconnect.bad_request())

    def peer_closed(self, event: ws.CloseReceived | ws.Failure) -> None:
        if self.session is None:
            return
        if isinstance(event, ws.Failure):
            logger.info(
                "! client %s broke the WebSocket protocol: %s (%d)",
                self.session.client_id,
                event.reason,
                event.code,
            )
        self.session.connection_lost(None)

    def lost(self) -> None:
        if self._registry is not None:
            self._registry.discard(self)
        if self.session is not None:
            self.session.connection_lost(None)

    def write_timed_out(self) -> None:
        if self.session is not None:
            self.session.disconnect(Disconnect.write_error())

    # Transport (core) --------------------------------------------------------------------

    def write(self, data: bytes) -> bool:
        return self.write_frame(data)

    def close(self, disconnect: Disconnect) -> None:
        """Flush the queue, send a close frame with the disconnect, wait for the echo."""
        if not self._closing and self.transport is not None:
            self._node.metrics.disconnected(disconnect.code)
        self.send_close(disconnect.code, disconnect.reason)
