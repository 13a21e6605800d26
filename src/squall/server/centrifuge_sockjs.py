"""The Centrifugo client protocol over SockJS: ``/connection/sockjs`` (DESIGN.md §2).

What centrifuge-js's ``sockjs`` transport does (``src/transport_sockjs.ts``): it opens
``new SockJS(endpoint, null, sockjsOptions)`` with the sockjs-client the application passes as
the ``sockjs`` option, sends each batch of commands (newline-joined JSON, as over WebSocket) as
one SockJS message, and hands each SockJS message it receives to the same frame decoder as
WebSocket: one message holds one or more newline-joined replies and pushes. A server close
``c[code,"reason"]`` reaches it as the close event's code and reason, so the disconnect codes
keep their meaning (3000-3499 and 4000-4499 reconnect).

Theory of operation
-------------------
The SockJS side is the regular :class:`~squall.server.sockjs.SockJSServer` (every transport,
heartbeats, session expiry) serving one bridge class; each SockJS session that opens becomes a
core :class:`~squall.core.session.Session` whose transport is a :class:`SockJSTransport`
(name ``sockjs``). The session never knows it runs over SockJS.

Encode once per wire variant: a SockJS session keeps one transport for its whole life, so its
:class:`SockJSFraming` is fixed when it opens and the hub groups subscribers by it. A
publication's payload is JSON-escaped into a SockJS message once (a one-entry cache shared by
all variants: :meth:`Hub.broadcast <squall.core.hub.Hub.broadcast>` frames the same payload
object for each variant in a row), then wrapped once per variant:

| SockJS transport | Framing | Bytes per publication |
|---|---|---|
| ``websocket`` | ``WEBSOCKET`` | one WebSocket text frame holding ``a["..."]`` |
| ``xhr_streaming`` | ``XHR_STREAMING`` | ``a["..."]\\n`` |
| ``eventsource`` | ``EVENTSOURCE`` | ``data: a["..."]\\r\\n\\r\\n`` |
| ``htmlfile`` | ``HTMLFILE`` | ``<script>p("a[...]")</script>`` |
| ``xhr``, ``jsonp`` | ``POLLING`` | the escaped message ``"..."`` alone: a poll answers with one
  ``a[...]`` frame of everything queued (jsonp's callback name differs per client) |

Each subscriber then costs one append to its writer's pending frames, handed on once per loop
turn (core/writer.py, through ``writelines``): while a streaming receiver is attached the
turn's wrapped frames go straight to it, joined into one chunk; while none is (between
polls, or while a stream that reached ``response_limit`` reconnects) the session's core
:class:`~squall.core.writer.Writer` is paused and queues them, bounded by
``client.queue_max_size`` (over it: 3008 "slow", counted). A streaming receiver whose socket
stops draining has its own bounded queue; when that overflows the client is disconnected as
slow too.

Limits: a WebSocket message over ``websocket.message_size_limit`` closes the socket (1009);
an HTTP body over ``http_server.max_body_size`` gets 413; a SockJS message over
``websocket.message_size_limit`` inside an accepted body disconnects with 3501 "bad request".
Origins: requests with an ``Origin`` header must pass ``client.allowed_origins`` (403
otherwise), on every SockJS transport, not only WebSocket.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, ClassVar, cast

from squall.core.session import Session
from squall.core.sockjs import ConnectionInfo, SessionHandle, SockJSConnection
from squall.core.writer import Writer
from squall.errors import Disconnect
from squall.protocol import sockjs as proto
from squall.protocol import websocket as ws
from squall.server.http import HttpConnection
from squall.server.http_types import Request, Response
from squall.server.origin import OriginChecker
from squall.server.sockjs import DEFAULT_SOCKJS_URL, SockJSOptions, SockJSServer, _Session

if TYPE_CHECKING:
    from squall.core.node import Node
    from squall.server.routes import OpenTransports

__all__ = [
    "EVENTSOURCE",
    "HTMLFILE",
    "POLLING",
    "PREFIX",
    "WEBSOCKET",
    "XHR_STREAMING",
    "CentrifugeSockJS",
    "SockJSFraming",
    "SockJSTransport",
]

logger = logging.getLogger("squall.sockjs")

PREFIX = "/connection/sockjs"

_TEXT = "text/plain; charset=UTF-8"


class _Escaped:
    """The last payload JSON-escaped into a SockJS message, kept by identity: the hub frames
    one payload object for every variant in a row, so the escaping runs once per publication.
    Holding the payload keeps its id from being reused while cached."""

    __slots__ = ("encoded", "payload")

    def __init__(self) -> None:
        self.payload: bytes | None = None
        self.encoded = b""

    def __call__(self, payload: bytes) -> bytes:
        if payload is not self.payload:
            # sockjs-protocol "JSON Unicode Encoding": escapes what browsers mangle.
            self.encoded = proto.encode_json(payload.decode("utf-8")).encode("utf-8")
            self.payload = payload
        return self.encoded


_escaped = _Escaped()


class SockJSFraming:
    """One Centrifugo payload (newline-joined replies or pushes) -> the bytes one SockJS wire
    variant writes; see the module docstring. Module-level instances, one per variant."""

    __slots__ = ("_wrap", "variant")

    def __init__(self, variant: str, wrap: Callable[[bytes], bytes] | None) -> None:
        self.variant = variant
        self._wrap = wrap

    @property
    def polling(self) -> bool:
        """Polling variants frame only the escaped message; the poll builds ``a[...]``."""
        return self._wrap is None

    def frame(self, payload: bytes) -> bytes:
        encoded = _escaped(payload)
        if self._wrap is None:
            return encoded
        return self._wrap(b"a[" + encoded + b"]")

    def __repr__(self) -> str:
        return f"SockJSFraming({self.variant!r})"


def _websocket_frame(frame: bytes) -> bytes:
    return ws.encode_frame(ws.Opcode.TEXT, frame)


WEBSOCKET = SockJSFraming("websocket", _websocket_frame)
XHR_STREAMING = SockJSFraming("xhr_streaming", proto.xhr_frame)
EVENTSOURCE = SockJSFraming("eventsource", proto.eventsource_frame)
HTMLFILE = SockJSFraming("htmlfile", proto.htmlfile_frame)
POLLING = SockJSFraming("polling", None)

_FRAMINGS = {
    "websocket": WEBSOCKET,
    "xhr_streaming": XHR_STREAMING,
    "eventsource": EVENTSOURCE,
    "htmlfile": HTMLFILE,
    "xhr": POLLING,
    "jsonp": POLLING,
}


class SockJSTransport:
    """One Centrifugo client over one SockJS session; implements
    :class:`squall.core.transport.Transport` (see the module docstring)."""

    name = "sockjs"
    unidirectional = False
    emulation = False

    def __init__(self, endpoint: CentrifugeSockJS, handle: _Session, info: ConnectionInfo) -> None:
        node = endpoint.node
        self._endpoint = endpoint
        self._handle = handle
        self._variant = handle.transport  # the receivers' variant (_Receiver.variant)
        self.framing = _FRAMINGS[handle.transport]
        self._closing = False
        self._dropping = False
        self.writer = Writer(self._write_one, self._write_many, node.settings.client.queue_max_size)
        # Nothing may go out before a receiver can take it: paused until one attaches.
        self.writer.pause()
        handle.on_receiver = self._receiver_changed
        headers = info.headers.as_dict() if info.headers is not None else {}
        self.session: Session | None = Session(
            node,
            self,
            self.writer,
            client_id=node.new_client_id(),
            headers=headers,
            remote_addr=info.ip,
        )
        endpoint.transports.add(self)

    # Transport (core) --------------------------------------------------------------------

    def write(self, data: bytes) -> bool:
        return self.writer.offer(data)

    def close(self, disconnect: Disconnect) -> None:
        """Hand what is queued to SockJS, then close the session with ``c[code,"reason"]``."""
        if self._closing:
            return
        self._closing = True
        self._endpoint.node.metrics.disconnected(disconnect.code)
        self.writer.flush()
        self.writer.close()
        self._handle.close(disconnect.code, disconnect.reason)

    def abort(self) -> None:
        """Drop the receiving connection now (a shutdown that ran out of time)."""
        self.writer.close()
        receiver = self._handle.receiver
        if receiver is not None:
            self._handle.receiver = None
            receiver.abort()
        self._handle._shutdown()
        self.lost()

    # Called by the bridge ----------------------------------------------------------------

    def received(self, message: str) -> None:
        session = self.session
        if session is None:
            return
        data = message.encode("utf-8", "surrogatepass")
        if len(data) > self._endpoint.node.settings.websocket.message_size_limit:
            logger.info("! client %s: SockJS message over the size limit", session.client_id)
            session.disconnect(Disconnect.bad_request())
            return
        session.receive_frame(data)

    def lost(self) -> None:
        """The SockJS session ended (closed, interrupted or expired)."""
        self._endpoint.transports.discard(self)
        self.writer.close()
        session, self.session = self.session, None
        if session is not None:
            session.connection_lost(None)

    # Writing -----------------------------------------------------------------------------

    def _receiver_changed(self, attached: bool) -> None:
        if attached:
            self.writer.resume()
        else:
            self.writer.pause()

    def _write_one(self, data: bytes) -> None:
        self._write_many((data,))

    def _write_many(self, chunks: Iterable[bytes]) -> None:
        if self._dropping:
            return
        if self.framing.polling:
            # One a[...] frame for everything: a[m1,m2] holds comma-separated messages.
            self._handle.send_encoded(b",".join(chunks).decode("utf-8"))
            return
        items = list(chunks)
        if len(items) > 1:
            # Streaming frames are self-delimiting: a turn's frames go to the receiver as one
            # write (one HTTP chunk, one send), not one per message.
            items = [b"".join(items)]
        for i, data in enumerate(items):
            written = self._handle.write_wrapped(self._variant, data)
            if written is None:
                # The receiver ended (response_limit) or none is attached: keep the rest
                # for the next one, in order, within the queue bound.
                if self._handle.is_closed:
                    return
                self.writer.pause()
                for rest in items[i:]:
                    if not self.writer.offer(rest):
                        self._drop_slow()
                        return
                return
            if written is False:
                self._drop_slow()
                return

    def _drop_slow(self) -> None:
        """The client does not read fast enough. Called from inside writes (possibly a
        broadcast loop), so the disconnect runs on the next loop turn."""
        if self._dropping:
            return
        self._dropping = True
        if self.session is not None:
            asyncio.get_running_loop().call_soon(self._disconnect_slow)

    def _disconnect_slow(self) -> None:
        session = self.session
        if session is not None and not session.closed:  # the hub may have done it already
            session.disconnect_slow()


class _Bridge(SockJSConnection):
    """A SockJS session as a Centrifugo client: each message is a frame of commands."""

    endpoint: ClassVar[CentrifugeSockJS]

    def __init__(self, session: SessionHandle) -> None:
        super().__init__(session)
        self.transport: SockJSTransport | None = None

    def on_open(self, info: ConnectionInfo) -> None:
        self.transport = SockJSTransport(self.endpoint, cast(_Session, self.session), info)

    def on_message(self, message: str) -> None:
        if self.transport is not None:
            self.transport.received(message)

    def on_close(self) -> None:
        if self.transport is not None:
            self.transport.lost()


class CentrifugeSockJS:
    """``/connection/sockjs``: the Centrifugo client protocol over every SockJS transport.

    `options` default from the settings: ``client.allowed_origins`` (empty: same origin
    only), ``websocket.message_size_limit`` and ``client.queue_max_size``. `sockjs_url` is the
    sockjs-client script the iframe page loads (iframe-based transports only).
    """

    def __init__(
        self,
        node: Node,
        transports: OpenTransports,
        *,
        sockjs_url: str = DEFAULT_SOCKJS_URL,
        prefix: str = PREFIX,
    ) -> None:
        self.node = node
        self.transports = transports
        settings = node.settings
        self.origins = OriginChecker(settings.client.allowed_origins)
        options = SockJSOptions(
            sockjs_url=sockjs_url,
            allowed_origins=tuple(settings.client.allowed_origins),
            max_message_size=settings.websocket.message_size_limit,
            queue_max_size=settings.client.queue_max_size,
        )
        bridge = cast(type[_Bridge], type("Bridge", (_Bridge,), {"endpoint": self}))
        # Connections are counted once connected, as "sockjs", by the core.
        self.mount = SockJSServer(bridge, prefix, options)

    def matches(self, path: str) -> bool:
        return self.mount.matches(path)

    async def handle(self, request: Request, conn: HttpConnection) -> Response | None:
        if request.path == self.mount.prefix + "/websocket":
            # The raw endpoint carries no SockJS framing; centrifuge-js never uses it here
            # (/connection/websocket is the real thing).
            return Response(404, b"Not found.", _TEXT)
        origin = request.headers.get("origin")
        if not self.origins.allowed(origin, request.headers.get("host")):
            logger.info("! refused SockJS request from origin %r (client.allowed_origins)", origin)
            return Response(403, b"Origin not allowed.", _TEXT)
        return await self.mount.handle(request, conn)

    def close_all(self, code: int = 3001, reason: str = "shutdown") -> None:
        """Close SockJS sessions that never became a client (shutdown; clients get their
        disconnect through :class:`~squall.server.routes.OpenTransports`)."""
        self.mount.close_all(code, reason)

    def abort_all(self) -> None:
        self.mount.abort_all()
