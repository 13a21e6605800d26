"""The Transport Protocol: what a session needs from a connection, whatever carries it.

Sessions never know their transport (STYLE.md convention 6): they read the flags below and
call :meth:`Transport.write` and :meth:`Transport.close`. WebSocket, SockJS, SSE and HTTP
streaming each implement this once in ``server/``; tests use a recording implementation.
"""

from __future__ import annotations

from typing import Protocol

from squall.errors import Disconnect

__all__ = ["Framing", "Transport"]


class Framing(Protocol):
    """How one wire variant wraps a protocol payload into the bytes a connection writes.

    Instances are hashable and shared by every connection of the same variant, so a broadcast
    frames a publication once per variant and writes the same bytes to each subscriber.
    """

    def frame(self, payload: bytes) -> bytes:
        """Wrap ``payload`` (one or more newline-joined protocol messages)."""
        ...


class Transport(Protocol):
    """One client connection as the session sees it.

    Contract:

    * :meth:`write` queues already-framed bytes (see :attr:`framing`); it never blocks and never
      raises. Over ``client.queue_max_size`` the writer disconnects the client with
      ``Disconnect.slow()`` (3008), counted in metrics.
    * :meth:`close` flushes what is queued, sends the disconnect in the transport's own way
      (a WebSocket close frame with the code and reason, a disconnect push on streams) and
      closes. Calling it again does nothing.
    * ``unidirectional`` transports only receive pushes (no commands, no pongs);
      ``emulation`` transports receive commands out of band (``/emulation``).
    """

    name: str
    unidirectional: bool
    emulation: bool

    @property
    def framing(self) -> Framing:
        """This transport's wire variant; shared by all connections of the same kind."""
        ...

    def write(self, data: bytes) -> bool:
        """Queue framed bytes; False when this overflowed the queue (the caller must then
        disconnect the session with ``Disconnect.slow()``)."""
        ...

    def close(self, disconnect: Disconnect) -> None: ...
